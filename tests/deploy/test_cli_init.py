"""``shardline --version``, ``shardline init`` and ``validate`` of several files, driven as
a user drives them."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from click.testing import CliRunner

from deploy.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_version_prints_the_installed_distributions_version() -> None:
    """`shardline --version` answers with the version pip installed."""
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"shardline, version {version('shardline')}\n"


class TestValidateSeveralFiles:
    def test_every_file_is_checked_and_any_problem_exits_2(self, tmp_path: Path) -> None:
        """Good files say ok, a bad one prints its problems, and the others still run."""
        runner = CliRunner()
        assert runner.invoke(main, ["init", str(tmp_path / "a")]).exit_code == 0
        assert runner.invoke(main, ["init", str(tmp_path / "b")]).exit_code == 0
        good_a, good_b = tmp_path / "a" / "pipeline.yaml", tmp_path / "b" / "pipeline.yaml"
        bad = tmp_path / "bad.yaml"
        bad.write_text(good_a.read_text().replace("mode: latest", "mode: lastest"))
        both = runner.invoke(main, ["validate", str(good_a), str(good_b)])
        assert both.exit_code == 0, both.output
        assert both.stdout.splitlines() == [
            f"{good_a}: ok (1 function, 2 sinks)",
            f"{good_b}: ok (1 function, 2 sinks)",
        ]
        mixed = runner.invoke(main, ["validate", str(bad), str(good_b)])
        assert mixed.exit_code == 2
        assert f"{bad}:13: sinks.store.mode:" in mixed.stderr
        assert mixed.stdout == f"{good_b}: ok (1 function, 2 sinks)\n"

    def test_no_file_is_a_usage_error(self) -> None:
        assert CliRunner().invoke(main, ["validate"]).exit_code == 2


class TestInit:
    def test_the_scaffold_validates_and_its_tests_pass(self, tmp_path: Path) -> None:
        """init DIR writes a pipeline whose pipeline.test.yaml passes `shardline test`."""
        runner = CliRunner()
        made = runner.invoke(main, ["init", str(tmp_path / "My Shop")])
        assert made.exit_code == 0, made.output
        folder = tmp_path / "My Shop"
        assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == [
            "pipeline.test.yaml",
            "pipeline.yaml",
            "plugin/my_shop_processors/__init__.py",
            "plugin/pyproject.toml",
        ]
        assert "name: my-shop\n" in (folder / "pipeline.yaml").read_text()
        assert runner.invoke(main, ["validate", str(folder / "pipeline.yaml")]).exit_code == 0
        tested = runner.invoke(main, ["test", str(folder / "pipeline.yaml")])
        assert tested.exit_code == 0, tested.output
        assert "3 passed, 0 failed" in tested.stdout

    def test_it_never_overwrites_a_file(self, tmp_path: Path) -> None:
        """A second init into the same folder writes nothing and exits 1 naming the files."""
        runner = CliRunner()
        assert runner.invoke(main, ["init", str(tmp_path), "--name", "shop"]).exit_code == 0
        (tmp_path / "pipeline.yaml").write_text("# mine\n")
        again = runner.invoke(main, ["init", str(tmp_path), "--name", "shop"])
        assert again.exit_code == 1
        assert f"{tmp_path / 'pipeline.yaml'}" in again.stderr
        assert "exists already" in again.stderr
        assert (tmp_path / "pipeline.yaml").read_text() == "# mine\n"

    def test_the_plugin_skeleton_installs_and_runs_once_uncommented(self, tmp_path: Path) -> None:
        """pip install ./plugin, uncomment the tag step: validate and the tests see it."""
        runner = CliRunner()
        assert runner.invoke(main, ["init", str(tmp_path), "--name", "shop"]).exit_code == 0
        site = tmp_path / "site"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
             str(site), str(tmp_path / "plugin")],
            check=True, timeout=300,
        )  # fmt: skip
        pipeline = tmp_path / "pipeline.yaml"
        text = pipeline.read_text()
        assert "      # - tag: {field: source, value: shardline}\n" in text
        pipeline.write_text(text.replace("      # - tag:", "      - tag:"))
        tests = tmp_path / "pipeline.test.yaml"
        tests.write_text(tests.read_text().replace("pipeline: shop}", "pipeline: shop, "
                                                   "source: shardline}"))  # fmt: skip
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]))
        done = subprocess.run(
            [sys.executable, "-m", "deploy.cli", "test", str(pipeline)],
            capture_output=True, text=True, env=env, check=False, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert "3 passed, 0 failed" in done.stdout
