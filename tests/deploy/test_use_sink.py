"""A sink named by import path, ``use: "module:Class"`` with ``with: {...}``, as a processor
is: no package to build and install to try one. Its module beside the pipeline file is
found by validate, test, template, package and run, and its options are checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from deploy.pipeline import runtime_checks
from deploy.pipeline.jsonschema import pipeline_schema
from tests.integration.conftest import aws, moto_endpoint  # noqa: F401  # fixtures

ROOT = Path(__file__).resolve().parents[2]

PIPELINE = """\
name: hooked
stream: {{name: hooked-events}}
sinks:
  hook:
    use: "hooksink:LineSink"
    with: {{path: {out}, topic: orders}}
functions:
  main:
    processors:
      - enrich: {{set: {{seen: true}}}}
    route: [hook]
"""
MODULE = """\
import json

from sinks.base import OK, Sink


class LineSink(Sink):
    option_types = {"path": str, "topic": str}
    required_options = frozenset({"path"})

    def __init__(self, name, path, topic="all"):
        super().__init__(name)
        self.path, self.topic = path, topic

    @classmethod
    def iam_statements(cls, options):
        return [{"Action": "sns:Publish", "Resource": "arn:aws:sns:::" + options["topic"]}]

    def _write(self, records):
        with open(self.path, "a") as fh:
            for r in records:
                fh.write(json.dumps(r.as_dict()) + "\\n")
        return [OK] * len(records)
"""
TESTS = """\
tests:
  - name: the hook gets the record
    input:
      - json: {a: 1}
    expect:
      sinks:
        hook: [{a: 1, seen: true}]
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "pipeline.yaml").write_text(PIPELINE.format(out=tmp_path / "hook.jsonl"))
    (folder / "pipeline.test.yaml").write_text(TESTS)
    (folder / "hooksink.py").write_text(MODULE)
    return folder


def shardline(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The command from another folder: the module's folder is on no path."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "deploy.cli", *args],
        capture_output=True, text=True, cwd=cwd, env=env, check=False, timeout=300,
    )  # fmt: skip


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process calls add the folder to sys.path and PYTHONPATH: undo it after the test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    monkeypatch.setattr(runtime_checks, "_LOCAL_FOLDERS", [])


def test_validate_and_test_find_the_sink_beside_the_file(project: Path, tmp_path: Path) -> None:
    validated = shardline("validate", str(project / "pipeline.yaml"), cwd=tmp_path)
    assert validated.returncode == 0, validated.stderr
    tested = shardline("test", str(project / "pipeline.yaml"), cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "1 passed, 0 failed" in tested.stdout


def test_validate_checks_its_options_and_says_where_they_go(project: Path) -> None:
    bad = PIPELINE.format(out="/tmp/x").replace("{path: /tmp/x, topic: orders}", "{pth: /x}")
    bad = bad.replace(
        '    use: "hooksink:LineSink"\n', '    use: "hooksink:LineSink"\n    topic: 3\n'
    )
    (project / "bad.yaml").write_text(bad)
    result = shardline("validate", "bad.yaml", cwd=project)
    assert result.returncode == 2
    errors = result.stderr.splitlines()
    assert (
        "bad.yaml:6: sinks.hook.topic: unknown key 'topic': a use: sink takes its options "
        "under with: (with: {topic: ...}), as a processor's use: does"
    ) in errors
    unknown = "bad.yaml:7: sinks.hook.with.pth: unknown option for sink type 'hooksink:LineSink'"
    assert any(e.startswith(f"{unknown} (it takes: path, topic)") for e in errors)
    assert "bad.yaml:7: sinks.hook.with: sink type 'hooksink:LineSink' requires option 'path'" in (
        errors
    )
    (project / "typo.yaml").write_text(PIPELINE.format(out="/x").replace(":LineSink", ":Lines"))
    result = shardline("validate", "typo.yaml", cwd=project)
    assert "typo.yaml:5: sinks.hook.use: module 'hooksink' has no attribute 'Lines'" in (
        result.stderr
    )


def test_the_json_schema_takes_the_same_form() -> None:
    validator = Draft202012Validator(pipeline_schema())
    doc: dict[str, Any] = yaml.safe_load(PIPELINE.format(out="/x"))
    assert validator.is_valid(doc)
    doc["sinks"]["hook"]["type"] = "stdout"
    assert not validator.is_valid(doc)  # type or use, not both
    del doc["sinks"]["hook"]["type"]
    doc["sinks"]["hook"]["path"] = "/x"
    assert not validator.is_valid(doc)  # options go under with:


def test_template_grants_its_iam_statements(project: Path, tmp_path: Path) -> None:
    result = shardline("template", str(project / "pipeline.yaml"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    role = json.loads(result.stdout)["Resources"]["MainRole"]
    statements = [
        s for p in role["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]
    ]
    assert {"Sid": "SinkHookPlugin", "Effect": "Allow", "Action": ["sns:Publish"],
            "Resource": ["arn:aws:sns:::orders"]} in statements  # fmt: skip


def test_package_ships_the_module_beside_the_file(
    project: Path, tmp_path: Path, isolated: None
) -> None:
    from deploy.aws.package import build_package, native_architecture  # noqa: PLC0415
    from deploy.pipeline.config import compile_plan, load_config  # noqa: PLC0415

    plan = compile_plan(load_config(project / "pipeline.yaml"))
    assert plan["sinks"]["hook"] == {
        "type": "hooksink:LineSink", "use": "hooksink:LineSink",
        "path": str(tmp_path / "hook.jsonl"), "topic": "orders",
    }  # fmt: skip
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    result = build_package(
        plan, tmp_path / "fn.zip", architecture=native_architecture(), python_version=python,
        requirements=[], cache_dir=tmp_path / "cache",
    )  # fmt: skip
    with zipfile.ZipFile(result.path) as zf:
        assert zf.read("hooksink.py").decode() == MODULE


@pytest.mark.integration
def test_run_writes_through_it_in_the_lambda_runtimes(
    project: Path,
    tmp_path: Path,
    aws: Any,  # noqa: F811  # the fixture
    moto_endpoint: str,  # noqa: F811
) -> None:
    """`run` without --in-process: the runtimes it starts import hooksink.py too."""
    kinesis = aws("kinesis")
    kinesis.create_stream(StreamName="hooked-events", ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName="hooked-events")
    kinesis.put_record(StreamName="hooked-events", Data=b'{"a": 1}', PartitionKey="k")
    env = dict(os.environ, PYTHONPATH=str(ROOT), AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "run", str(project / "pipeline.yaml"),
         "--endpoint-url", moto_endpoint, "--until-idle", "2", "--duration", "120",
         "--settings", "plan", "--json"],
        capture_output=True, text=True, cwd=tmp_path, env=env, check=False, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)["functions"]["main"]
    assert (stats["records_in"], stats["batches_ok"], stats["batches_failed"]) == (1, 1, 0)
    lines = (tmp_path / "hook.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"a": 1, "seen": True}]
