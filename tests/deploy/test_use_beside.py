"""``use: "module:Class"`` with the module beside the pipeline file: found by validate,
test, invoke and package with no PYTHONPATH, never shadowing shardline's own packages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from deploy.pipeline import runtime_checks
from tests.integration.conftest import aws, moto_endpoint  # noqa: F401  # fixtures

SHARDLINE = str(Path(sys.executable).with_name("shardline"))  # the console script, as users run it

PIPELINE = """\
name: beside
stream: {name: beside-events}
sinks:
  out: {type: stdout}
functions:
  shout:
    processors:
      - use: "shout:Shout"
        with: {field: word}
    route: [out]
"""
MODULE = """\
class Shout:
    def __init__(self, field):
        self.field = field

    def __call__(self, record):
        record.as_dict()[self.field] = record.get(self.field, "").upper()
        return record
"""
TESTS = """\
tests:
  - name: the word is shouted
    input:
      - json: {word: hi}
    expect:
      sinks:
        out: [{word: HI}]
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "pipeline.yaml").write_text(PIPELINE)
    (folder / "pipeline.test.yaml").write_text(TESTS)
    (folder / "shout.py").write_text(MODULE)
    return folder


def shardline(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it: from another folder, no PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [SHARDLINE, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        check=False,
        timeout=300,
    )


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process calls add the folder to sys.path and PYTHONPATH: undo it after the test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    monkeypatch.setattr(runtime_checks, "_LOCAL_FOLDERS", [])


def test_validate_test_and_invoke_find_the_module_beside_the_file(
    project: Path, tmp_path: Path
) -> None:
    """No PYTHONPATH and another working folder: the module is found all the same."""
    pipeline = str(project / "pipeline.yaml")
    validated = shardline("validate", pipeline, cwd=tmp_path)
    assert validated.returncode == 0, validated.stderr
    tested = shardline("test", pipeline, cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "1 passed, 0 failed" in tested.stdout
    (tmp_path / "words.jsonl").write_text('{"word": "hey"}\n')
    assert shardline("event", "words.jsonl", "-o", "event.json", cwd=tmp_path).returncode == 0
    invoked = shardline(
        "invoke", pipeline, "--event", "event.json", "--sinks", "stdout", cwd=tmp_path
    )
    assert invoked.returncode == 0, invoked.stderr
    assert 'out\t{"word":"HEY"}' in invoked.stdout


def test_package_ships_the_module_beside_the_file(
    project: Path, tmp_path: Path, isolated: None
) -> None:
    """The Lambda zip holds shout.py at its root, where the runtime imports it from."""
    from deploy.aws.package import build_package, native_architecture  # noqa: PLC0415
    from deploy.pipeline.config import compile_plan, load_config  # noqa: PLC0415

    plan = compile_plan(load_config(project / "pipeline.yaml"))
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    result = build_package(
        plan, tmp_path / "fn.zip", architecture=native_architecture(), python_version=python,
        requirements=[], cache_dir=tmp_path / "cache",
    )  # fmt: skip
    with zipfile.ZipFile(result.path) as zf:
        assert zf.read("shout.py").decode() == MODULE
        assert json.loads(zf.read("stream/pipeline.json"))["functions"]["shout"]
    assert any("shout.py (beside the pipeline file)" in note for note in result.notes)


def test_a_module_not_beside_the_file_still_cannot_be_packaged(
    project: Path, tmp_path: Path, isolated: None
) -> None:
    """Only what the validated file's folder holds is shipped."""
    from deploy.aws.package import PackageError, build_package  # noqa: PLC0415
    from deploy.pipeline.config import compile_plan, load_config  # noqa: PLC0415

    plan = compile_plan(load_config(project / "pipeline.yaml"))
    runtime_checks._LOCAL_FOLDERS.clear()  # as if the module's folder had not been validated
    with pytest.raises(PackageError, match="belongs to no installed distribution"):
        build_package(plan, tmp_path / "fn.zip", requirements=[], cache_dir=tmp_path / "c")


@pytest.mark.parametrize(
    ("layout", "use", "message"),
    [
        ({"sinks/__init__.py": "", "sinks/mine.py": MODULE}, "sinks.mine:Shout",
         "has the name of shardline's own package 'sinks': rename it"),
        ({"shout.py": MODULE, "stream.py": ""}, "shout:Shout",
         "which has the name of shardline's own package 'stream'"),
    ],
)  # fmt: skip
def test_a_module_named_like_ours_is_refused_with_the_fix(
    tmp_path: Path, layout: dict[str, str], use: str, message: str
) -> None:
    """A user's sinks/ or stream.py beside the file would replace ours: validate says so."""
    for name, text in layout.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "pipeline.yaml").write_text(PIPELINE.replace("shout:Shout", use))
    result = shardline("validate", "pipeline.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert "pipeline.yaml:8: functions.shout.processors[0].use: " in result.stderr
    assert message in result.stderr


@pytest.mark.integration
def test_run_starts_lambda_runtimes_that_import_the_module(
    project: Path,
    tmp_path: Path,
    aws: Any,  # noqa: F811  # the fixture
    moto_endpoint: str,  # noqa: F811
) -> None:
    """`run` without --in-process: the runtimes it starts import shout.py too."""
    kinesis = aws("kinesis")
    kinesis.create_stream(StreamName="beside-events", ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName="beside-events")
    kinesis.put_record(StreamName="beside-events", Data=b'{"word": "hey"}', PartitionKey="k")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env |= {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    done = subprocess.run(
        [SHARDLINE, "run", str(project / "pipeline.yaml"), "--endpoint-url", moto_endpoint,
         "--until-idle", "2", "--duration", "120", "--settings", "plan", "--json"],
        capture_output=True, text=True, cwd=tmp_path, env=env, check=False, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)["functions"]["shout"]  # with --json: the one document
    assert (stats["records_in"], stats["batches_ok"], stats["batches_failed"]) == (1, 1, 0)
    assert '{"word":"HEY"}' in done.stderr.splitlines()  # the runtime's stdout sink, moved
