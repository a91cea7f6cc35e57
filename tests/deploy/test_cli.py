"""The `shardline` command group: validate and compile."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click
import pytest
from click.testing import CliRunner

from deploy.cli import main
from deploy.pipeline.config import load_plan_from_file
from tests.deploy.test_config import CLICKSTREAM, ENV

if TYPE_CHECKING:
    from pathlib import Path

BROKEN = """\
name: click stream
stream:
  name: clickstream-events
  mode: provisioned
sinks:
  out:
    type: stdout
functions:
  main:
    processors: []
    route: [out]
"""


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env=ENV)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in a temporary directory, so file names print as the user typed them."""
    (tmp_path / "pipeline.yaml").write_text(CLICKSTREAM, encoding="utf-8")
    (tmp_path / "broken.yaml").write_text(BROKEN, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


class TestGroup:
    def test_main_is_a_plain_click_group_with_the_config_commands(self, runner: CliRunner) -> None:
        """Other modules add commands to the same group."""
        assert isinstance(main, click.Group)
        result = runner.invoke(main, ["--help"])
        assert result.exit_code == 0
        assert "validate" in result.output
        assert "compile" in result.output


class TestValidate:
    def test_valid_file_prints_ok_and_exits_0(self, runner: CliRunner, workdir: Path) -> None:
        """Success is one line naming the file and what it defines."""
        (workdir / "plain.yaml").write_text(
            CLICKSTREAM.replace("    filter_pushdown: true", "    filter_pushdown: false"),
            encoding="utf-8",
        )
        result = runner.invoke(main, ["validate", "plain.yaml"])
        assert result.exit_code == 0, result.output
        assert result.stdout == "plain.yaml: ok (2 functions, 4 sinks)\n"
        archive = CLICKSTREAM.splitlines().index("  archive-all:") + 1
        assert result.stderr == (  # a note, not a problem: which function replay reads
            f"plain.yaml:{archive}: functions.archive-all: note: the pipeline's archive "
            "(`shardline replay` reads s3://clickstream-archive/raw/)\n"
        )

    def test_filter_pushdown_gets_a_note_not_an_error(
        self, runner: CliRunner, workdir: Path
    ) -> None:
        """Opting in to pushdown is valid, and validate says what AWS then does to records
        that are not JSON, at the line of the setting (exit 0)."""
        result = runner.invoke(main, ["validate", "pipeline.yaml"])
        assert result.exit_code == 0, result.output
        assert result.stdout == "pipeline.yaml: ok (2 functions, 4 sinks)\n"
        lines = CLICKSTREAM.splitlines()
        line = next(i for i, x in enumerate(lines, 1) if "filter_pushdown: true" in x)
        assert result.stderr == (
            f"pipeline.yaml:{line}: functions.enrich-and-route.filter_pushdown: note: leading "
            "match filters also become the mapping's FilterCriteria: AWS drops records whose "
            "data is not JSON before invoking the function, silently (no dead letter); `run`, "
            "`invoke` and `test` drop and count them the same way\n"
            f"pipeline.yaml:{lines.index('  archive-all:') + 1}: functions.archive-all: note: "
            "the pipeline's archive (`shardline replay` reads s3://clickstream-archive/raw/)\n"
        )

    def test_invalid_file_prints_every_problem_on_stderr_and_exits_2(
        self, runner: CliRunner, workdir: Path
    ) -> None:
        """Each problem is one FILE:LINE: path: message line; nothing goes to stdout."""
        result = runner.invoke(main, ["validate", "broken.yaml"])
        assert result.exit_code == 2
        assert result.stdout == ""
        assert result.stderr.splitlines() == [
            "broken.yaml:1: name: invalid name 'click stream': use letters, digits and hyphens, "
            "starting with a letter (it names the CloudFormation stack)",
            "broken.yaml:2: stream.shards: required when mode is provisioned "
            "(a number of shards, >= 1)",
        ]

    def test_unset_variable_is_a_problem_not_a_crash(self, workdir: Path) -> None:
        """Without OPENSEARCH_URL the example is invalid, with the line and the variable."""
        result = CliRunner(env={"OPENSEARCH_URL": None}).invoke(main, ["validate", "pipeline.yaml"])
        assert result.exit_code == 2
        assert result.stderr.startswith(
            "pipeline.yaml:19: sinks.search.endpoint: environment variable 'OPENSEARCH_URL' "
            "is not set"
        )

    def test_missing_file_exits_2(self, runner: CliRunner, workdir: Path) -> None:
        """A file that cannot be read is reported like any other problem."""
        result = runner.invoke(main, ["validate", "nope.yaml"])
        assert result.exit_code == 2
        assert result.stderr == "nope.yaml:1: (file): cannot read: No such file or directory\n"


class TestCompile:
    def test_output_option_writes_the_json_plan(self, runner: CliRunner, workdir: Path) -> None:
        """-o writes the plan pretty-printed with a 2-space indent."""
        result = runner.invoke(main, ["compile", "pipeline.yaml", "-o", "plan.json"])
        assert result.exit_code == 0, result.output
        assert result.stdout == ""
        text = (workdir / "plan.json").read_text(encoding="utf-8")
        plan = json.loads(text)
        assert plan == load_plan_from_file(workdir / "pipeline.yaml", env=ENV)
        assert text.startswith('{\n  "version": 1,\n  "name": "clickstream",\n')
        assert "plan.json" in result.stderr

    def test_without_output_the_plan_is_all_of_stdout(
        self, runner: CliRunner, workdir: Path
    ) -> None:
        """Stdout holds the JSON and nothing else, so it can be piped."""
        result = runner.invoke(main, ["compile", "pipeline.yaml"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["functions"]["archive-all"]["route"] == ["archive"]

    def test_invalid_file_exits_2_and_writes_nothing(
        self, runner: CliRunner, workdir: Path
    ) -> None:
        """A broken file never produces a plan."""
        result = runner.invoke(main, ["compile", "broken.yaml", "-o", "plan.json"])
        assert result.exit_code == 2
        assert len(result.stderr.splitlines()) == 2
        assert not (workdir / "plan.json").exists()
