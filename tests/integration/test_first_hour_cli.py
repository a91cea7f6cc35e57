"""Issue 20, item 5, against the session moto server: ``status`` shows "never run" whole at
the terminal's width, and summaries say "1 call", not "1 calls"."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner

from deploy.cli import main

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}  # fmt: skip


@pytest.mark.parametrize("columns", ["200", "60"])
def test_status_shows_never_run_whole_at_the_terminal_width(
    moto_endpoint: str, tmp_path: Path, aws: Any, unique: str, columns: str
) -> None:
    name = f"st{unique[:8]}"
    aws("kinesis").create_stream(StreamName=f"{name}-events", ShardCount=1)
    path = tmp_path / "p.yaml"
    path.write_text(
        f"name: {name}\nstream: {{name: {name}-events}}\n"
        "sinks: {out: {type: stdout}}\nfunctions: {f: {route: [out]}}\n"
    )

    result = CliRunner(env={**CREDENTIALS, "COLUMNS": columns}).invoke(
        main, ["status", str(path), "--endpoint-url", moto_endpoint]
    )

    assert result.exit_code == 0, result.output
    rows = [line.split("│") for line in result.stdout.splitlines() if line.startswith("│")]
    checkpoint = " ".join(cells[4].strip() for cells in rows if len(cells) > 4)
    assert " ".join(checkpoint.split()) == "never run (no lease table)", result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= int(columns)


def test_produce_says_1_record_and_1_call(
    moto_endpoint: str, tmp_path: Path, aws: Any, unique: str
) -> None:
    stream = f"pl{unique[:8]}"
    aws("kinesis").create_stream(StreamName=stream, ShardCount=1)
    aws("kinesis").get_waiter("stream_exists").wait(StreamName=stream)
    (tmp_path / "one.jsonl").write_text(json.dumps({"a": 1}) + "\n")

    result = CliRunner(env=CREDENTIALS).invoke(
        main,
        ["produce", stream, "--file", str(tmp_path / "one.jsonl"), "--endpoint-url",
         moto_endpoint],
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert "1 record written (" in result.stderr, result.stderr
    said = " ".join(result.stderr.split())
    assert "in 1 Kinesis record and 1 call, 0 retries, 0 failed, 0 malformed lines" in said


def test_run_of_a_plan_whose_step_fails_at_init_says_which_and_exits_1(
    moto_endpoint: str, tmp_path: Path, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compiled plan is not validated again: the init failure is on screen, with the step."""
    from deploy.pipeline.config import load_plan_from_file  # noqa: PLC0415

    monkeypatch.chdir(tmp_path)
    name = f"in{unique[:8]}"
    (tmp_path / "p.yaml").write_text(
        f"name: {name}\nstream: {{name: {name}-events}}\nsinks: {{out: {{type: stdout}}}}\n"
        "functions:\n  f:\n    processors:\n"
        "      - use: tests.deploy.first_hour_plugins:F2C\n        with: {field: t}\n"
        "    route: [out]\n"
    )
    plan = load_plan_from_file(tmp_path / "p.yaml")
    plan["functions"]["f"]["processors"][0]["with"] = {"feild": "t"}  # edited by hand
    (tmp_path / "plan.json").write_text(json.dumps(plan))

    result = CliRunner(env=CREDENTIALS).invoke(
        main,
        ["run", "plan.json", "--in-process", "--duration", "1", "--endpoint-url", moto_endpoint],
    )

    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: TypeError: ")
    assert "unexpected keyword argument 'feild'" in result.stderr
    assert "(while building processors[0] (tests.deploy.first_hour_plugins:F2C))" in (result.stderr)


def test_run_in_lambda_runtimes_stops_at_a_runtime_init_failure_says_why_and_exits_1(
    moto_endpoint: str, tmp_path: Path, aws: Any, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plan compiled before its plugin changed: the runtime posts /init/error, and run stops
    at once with the runtime's reason and where it was raised, instead of retrying forever."""
    from deploy.pipeline.config import load_plan_from_file  # noqa: PLC0415

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)  # restored after the test
    name = f"ri{unique[:8]}"
    stream = f"{name}-events"
    plugin = tmp_path / "strict.py"
    plugin.write_text(
        "class Strict:\n    def __init__(self, field):\n        self.field = field\n"
        "    def __call__(self, record):\n        return record\n"
    )
    (tmp_path / "p.yaml").write_text(
        f"name: {name}\nstream: {{name: {stream}}}\nsinks: {{out: {{type: discard}}}}\n"
        "functions:\n  f:\n    batch: {starting_position: trim_horizon}\n    processors:\n"
        "      - use: strict:Strict\n        with: {field: t}\n    route: [out]\n"
    )
    (tmp_path / "plan.json").write_text(json.dumps(load_plan_from_file(tmp_path / "p.yaml")))
    plugin.write_text(  # the plugin changed after the plan was compiled
        "class Strict:\n    def __init__(self, field):\n"
        "        raise ValueError(f'strict.field: {field!r} is no longer accepted')\n"
    )
    kinesis = aws("kinesis")
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName=stream)
    kinesis.put_record(StreamName=stream, Data=b'{"t": 1}', PartitionKey="k")

    started = time.monotonic()
    result = CliRunner(env=CREDENTIALS).invoke(
        main, ["run", "plan.json", "--settings", "plan", "--duration", "60"]
    )

    assert result.exit_code == 1, result.output
    assert time.monotonic() - started < 45, "run kept going after the init failure"
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: function 'f' failed its init in the Lambda runtime"), error
    assert "ValueError: strict.field: 't' is no longer accepted" in error
    assert 'strict.py", line 3, in __init__' in error
