"""``shardline local up | down | status``, and commands finding the stack it started."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from deploy.cli import main
from deploy.local.servers import STATE_DIR, local_down

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.integration

PIPELINE = """\
name: local-cli
stream: {name: local-cli-events}
sinks:
  keep: {type: dynamodb, table: local-cli-items, key: id}
functions:
  store:
    processors: []
    route: [keep]
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return waited != pid


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_KINESIS", "OPENSEARCH_URL"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    saved = dict(os.environ)  # the commands point os.environ at the local stack
    yield tmp_path
    local_down()  # whatever a failed test left running
    os.environ.clear()
    os.environ.update(saved)


def test_up_status_use_down(workdir: Path, pytestconfig: pytest.Config) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["local", "status"]).exit_code == 1

    up = runner.invoke(main, ["local", "up"])
    assert up.exit_code == 0, up.output
    assert "local stack started" in up.output
    state = json.loads((workdir / STATE_DIR / "state.json").read_text())
    assert all(alive(pid) for pid in state["pids"].values())
    assert "already running" in runner.invoke(main, ["local", "up"]).output
    status = runner.invoke(main, ["local", "status"])
    assert status.exit_code == 0
    assert state["endpoint"] in status.output

    cache_plugin = getattr(pytestconfig, "cache", None)  # absent with -p no:cacheprovider
    cache = cache_plugin.mkdir("shardline-package") if cache_plugin is not None else None
    deployed = runner.invoke(
        main, ["deploy", "pipeline.yaml", *(["--cache-dir", str(cache)] if cache else [])]
    )
    assert deployed.exit_code == 0, deployed.output
    assert f"using the local stack at {state['endpoint']}" in deployed.output
    assert "stack local-cli: created" in deployed.output
    (workdir / "events.jsonl").write_text('{"id": "a"}\n{"id": "b"}\n')
    produced = runner.invoke(main, ["produce", "local-cli-events", "--file", "events.jsonl"])
    assert produced.exit_code == 0, produced.output
    assert "2 records written" in produced.output

    down = runner.invoke(main, ["local", "down"])
    assert down.exit_code == 0
    assert "local stack stopped" in down.output
    assert not any(alive(pid) for pid in state["pids"].values())
    assert runner.invoke(main, ["local", "status"]).exit_code == 1
    assert "no local stack recorded" in runner.invoke(main, ["local", "down"]).output


def test_status_json_and_env_give_scripts_the_endpoint(workdir: Path) -> None:
    """`local status --json` and `eval "$(shardline local env)"` point a script at the stack."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    runner = CliRunner()
    none = runner.invoke(main, ["local", "status", "--json"])
    assert none.exit_code == 1
    assert json.loads(none.stdout) == {"running": False}
    no_env = runner.invoke(main, ["local", "env"])
    assert no_env.exit_code == 1
    assert no_env.stdout == ""

    assert runner.invoke(main, ["local", "up"]).exit_code == 0
    state = json.loads((workdir / STATE_DIR / "state.json").read_text())
    status = runner.invoke(main, ["local", "status", "--json"])
    assert status.exit_code == 0
    assert json.loads(status.stdout) == {
        "running": True,
        "endpoint": state["endpoint"],
        "opensearch_url": state["opensearch_url"],
    }
    env = runner.invoke(main, ["local", "env"])
    assert env.exit_code == 0
    assert f"export AWS_ENDPOINT_URL={state['endpoint']}" in env.stdout.splitlines()

    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OPENSEARCH"))}
    script = (
        f'eval "$({sys.executable} -m deploy.cli local env)" && {sys.executable} -c '
        "\"import boto3; boto3.client('kinesis').create_stream(StreamName='from-env', "
        "ShardCount=1); print(boto3.client('kinesis').list_streams()['StreamNames'])\""
    )
    root = str(Path(__file__).resolve().parents[2])
    done = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, cwd=workdir, check=False,
        env={**clean, "PYTHONPATH": root}, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "from-env" in done.stdout


def test_produce_at_once_into_the_stack_local_up_started_keeps_every_record(
    workdir: Path,
) -> None:
    """``produce`` sends its PutRecords calls at once by default; the moto that ``local up``
    starts numbers a shard's records safely under them (:mod:`deploy.local.motofix`): with
    plain ``moto.server`` 8 to 16 of these 4,000 records were lost while ``produce`` said
    4,000 sent (found in review)."""
    import boto3  # noqa: PLC0415

    runner = CliRunner()
    assert runner.invoke(main, ["local", "up"]).exit_code == 0
    state = json.loads((workdir / STATE_DIR / "state.json").read_text())
    endpoint = state["endpoint"]
    kinesis = boto3.client(
        "kinesis", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip
    kinesis.create_stream(StreamName="s", ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName="s")
    n = 4000
    lines = [json.dumps({"k": f"k{i}", "i": i, "pad": "x" * 150}) for i in range(n)]
    (workdir / "f.jsonl").write_text("\n".join(lines) + "\n")
    credentials = {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
                   "AWS_SECRET_ACCESS_KEY": "testing"}  # fmt: skip
    result = runner.invoke(main, ["produce", "s", "--file", "f.jsonl", "--key", "k",
                                  "--endpoint-url", endpoint], env=credentials)  # fmt: skip
    assert result.exit_code == 0, result.output
    shard = kinesis.list_shards(StreamName="s")["Shards"][0]["ShardId"]
    iterator = kinesis.get_shard_iterator(
        StreamName="s", ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    seen: set[int] = set()
    while True:
        got = kinesis.get_records(ShardIterator=iterator, Limit=10000)
        seen.update(json.loads(r["Data"])["i"] for r in got["Records"])
        if not got["Records"]:
            break
        iterator = got["NextShardIterator"]
    assert len(seen) == n
    assert runner.invoke(main, ["local", "down"]).exit_code == 0
    assert not alive(state["pids"]["moto"])
