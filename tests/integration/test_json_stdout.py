"""With ``--json``, stdout holds exactly one JSON document (issue 20, item 4).

Each command runs as a user runs it, in a subprocess against the session moto server, so
that what the Lambda runtime workers and in-process handlers write to file descriptor 1
(JSON log lines, EMF metrics, a ``stdout`` sink's records) would show up in stdout; one
``json.loads`` of the whole stdout must succeed. (``dev --json`` is checked in
tests/deploy/test_first_hour.py, ``demo``, ``cost`` and ``report`` in their own tests.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration

SHARDLINE = [sys.executable, "-c", "from deploy.cli import main; main(prog_name='shardline')"]

PIPELINE = """\
name: {name}
metrics: true
stream:
  name: {name}-events
sinks:
  out:
    type: stdout
functions:
  keep-readings:
    filter_pushdown: true
    processors:
      - filter:
          match: {{kind: [reading]}}
      - filter:
          expr: "temperature > `0`"
    route: [out]
"""


def _shardline(cwd: Path, endpoint: str, *args: str) -> Any:
    env = {
        **os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "PYTHONPATH": os.getcwd(),
    }  # fmt: skip
    done = subprocess.run(
        [*SHARDLINE, *args, "--endpoint-url", endpoint, "--json"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # the whole of stdout is one document


@pytest.mark.parametrize("in_process", [True, False], ids=["in-process", "lambda-runtimes"])
def test_produce_run_and_status_print_one_json_document(
    tmp_path: Path, moto_endpoint: str, aws: Any, unique: str, in_process: bool
) -> None:
    name = f"json{unique[:8]}{'p' if in_process else 'w'}"
    (tmp_path / "p.yaml").write_text(PIPELINE.format(name=name), encoding="utf-8")
    aws("kinesis").create_stream(StreamName=f"{name}-events", ShardCount=1)
    aws("kinesis").get_waiter("stream_exists").wait(StreamName=f"{name}-events")
    lines = [{"kind": "status" if i % 5 == 0 else "reading", "temperature": i % 7 - 2}
             for i in range(60)]  # fmt: skip
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(d) + "\n" for d in lines))

    produced = _shardline(tmp_path, moto_endpoint, "produce", f"{name}-events", "--file", "r.jsonl")
    assert produced["records"] == 60

    run_args = ["run", "p.yaml", "--until-idle", "1", "--duration", "120", "--settings", "plan"]
    summary = _shardline(tmp_path, moto_endpoint, *run_args, *(["--in-process"] * in_process))
    stats = summary["functions"]["keep-readings"]
    assert stats["records_in"] == 60
    assert stats["filtered_by_pushdown"] == 12  # the status lines, named for what they are
    assert "records_filtered" not in stats

    rows = _shardline(tmp_path, moto_endpoint, "status", "p.yaml")
    assert [row["function"] for row in rows] == ["keep-readings"]
