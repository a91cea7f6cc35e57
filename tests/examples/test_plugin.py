"""The example plugin package installs, registers its entry point, and runs in a pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PIPELINE = """\
name: masked
stream: {name: users}
sinks:
  out: {type: stdout}
functions:
  mask-emails:
    processors:
      - mask: {fields: [email], keep: 2}
    route: [out]
"""


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("plugin-site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(ROOT / "examples" / "plugin"),
        ],
        check=True,
        timeout=600,
    )
    return target


def run(args: list[str], plugin_path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(plugin_path))
    return subprocess.run(
        [sys.executable, "-m", "deploy.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        check=False,
        timeout=600,
    )


def test_an_installed_plugin_is_found_by_its_entry_point_and_runs(plugin_path, tmp_path):
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    event = {"Records": []}
    from stream.testing import EventFactory  # noqa: PLC0415

    f = EventFactory()
    event = f.batch([("u1", {"email": "ada@example.com"}), ("u2", {"email": "x"})])
    (tmp_path / "event.json").write_text(json.dumps(event))

    validated = run(["validate", "pipeline.yaml"], plugin_path, tmp_path)
    assert validated.returncode == 0, validated.stderr

    invoked = run(
        ["invoke", "pipeline.yaml", "--function", "mask-emails", "--event", "event.json"],
        plugin_path,
        tmp_path,
    )
    assert invoked.returncode == 0, invoked.stderr
    lines = [json.loads(line) for line in invoked.stdout.splitlines() if line.startswith('{"email')]
    assert lines == [{"email": "ad*************"}, {"email": "x"}]


def test_without_the_plugin_validate_names_the_unknown_processor(tmp_path):
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    result = run(["validate", "pipeline.yaml"], tmp_path, tmp_path)
    assert result.returncode == 2
    assert "pipeline.yaml:8: functions.mask-emails.processors[0]" in result.stderr
    assert "unknown processor 'mask'" in result.stderr
