"""Issue 16, slice S4: ``shardline run``'s flush ticker closes the windows of a stream whose
every shard went quiet, on the session's moto server.

Two shards; every record goes to the first (``ExplicitHashKey`` 0), the other never gets
one; then the producer stops. The shard's own watermark closes every window but its last
per key (no record comes after them), and no other shard has a batch to close them by the
cross-shard rule: only a scheduled flush can. ``quiet_s: 1`` and ``--flush-every 0.5``
(the ``flush_every`` of :class:`LocalRun`) make that quick; the test polls the sink table
with a deadline until it holds every window, each with its reference count.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from click.testing import CliRunner

from deploy.cli import main
from deploy.local.readback import table_items
from deploy.local.run import LocalRun
from tests.integration.flushing import provision_pipeline, use_endpoint

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

pytestmark = pytest.mark.integration

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z: every window's end is long past
USERS = ("ada", "bob", "cy")
SECONDS = 180  # three windows of 60 s per user, a record every 2 s

PIPELINE = """\
name: {name}
stream: {{name: {name}, mode: provisioned, shards: 2, encryption: none}}
sinks:
  results: {{type: dynamodb, table: {name}-results, key: window_id, mode: latest}}
functions:
  main:
    batch: {{size: 50, window_s: 0, starting_position: trim_horizon}}
    processors:
      - window:
          key: user
          size_s: 60
          field: ts
          quiet_s: 1
          aggregate: {{n: count}}
    route: [results]
"""


@pytest.fixture
def local_env(monkeypatch: pytest.MonkeyPatch, moto_endpoint: str) -> None:
    """In-process handlers: the sinks and the window state take the endpoint from the
    environment."""
    use_endpoint(monkeypatch, moto_endpoint)


def put_to_first_shard(aws: Callable[[str], Any], name: str) -> Counter[str]:
    """One record per user and second, all on the first shard; the reference's count per
    ``window_id``."""
    docs = [{"user": u, "ts": T0 + s} for s in range(0, SECONDS, 2) for u in USERS]
    answer = aws("kinesis").put_records(StreamName=name, Records=[
        {"Data": orjson.dumps(d), "PartitionKey": d["user"], "ExplicitHashKey": "0"} for d in docs
    ])  # fmt: skip
    assert answer.get("FailedRecordCount", 0) == 0
    assert {r["ShardId"] for r in answer["Records"]} == {"shardId-000000000000"}
    expected: Counter[str] = Counter()
    for d in docs:
        start = (d["ts"] - T0) // 60 * 60
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T0 + start))
        expected[f"main/{d['user']}/{stamp}"] += 1
    return expected


def rows(aws: Callable[[str], Any], table: str) -> dict[str, int]:
    out = {}
    for item in table_items(aws("dynamodb"), table):
        out[item["window_id"]["S"]] = int(Decimal(item["n"]["N"]))
    return out


@pytest.mark.parametrize("in_process", [True, False], ids=["in-process", "runtimes"])
def test_the_flush_ticker_closes_the_windows_of_a_stream_gone_quiet(
    aws: Callable[[str], Any], local_env: None, tmp_path: Path, in_process: bool
) -> None:
    """In process, or in Lambda runtime workers, where the flush event reaches
    ``stream.lambda_handler.handler`` as EventBridge's would."""
    name = f"flush{uuid.uuid4().hex[:8]}"
    plan = provision_pipeline(aws, PIPELINE.format(name=name), shards=2)
    expected = put_to_first_shard(aws, name)
    local = LocalRun(
        plan, worker_id="w1", in_process=in_process, client=aws, state_dir=tmp_path / ".shardline",
        lease_duration_s=1.5, flush_every=0.5,
    )  # fmt: skip
    stop = threading.Event()
    runner = threading.Thread(target=local.run, args=(stop,), daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 60
        seen: dict[str, int] = {}
        while seen != dict(expected):
            assert time.monotonic() < deadline, f"windows not closed in time: {seen}"
            assert runner.is_alive(), "the run ended"
            stop.wait(0.2)
            seen = rows(aws, f"{name}-results")
    finally:
        stop.set()
        runner.join(timeout=30)
    assert not runner.is_alive(), "the run and its ticker stop when told"
    ticker = local.tickers["main"]
    assert ticker.flushes >= 1
    assert ticker.failures == 0, ticker.last
    # the last window of each user closes only by a flush: no batch came after it
    last = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T0 + 120))
    assert {f"main/{u}/{last}" for u in USERS} <= set(seen)


def test_shardline_flush_sends_one_flush_by_hand(
    aws: Callable[[str], Any], local_env: None, tmp_path: Path, moto_endpoint: str
) -> None:
    """A run without flushes (its ticker an hour apart) leaves each user's last window
    open; ``shardline flush FILE FUNCTION --endpoint-url`` closes them, in this process."""
    name = f"flush{uuid.uuid4().hex[:8]}"
    plan = provision_pipeline(aws, PIPELINE.format(name=name), shards=2)
    expected = put_to_first_shard(aws, name)
    local = LocalRun(
        plan, worker_id="w1", in_process=True, client=aws, state_dir=tmp_path / ".shardline",
        lease_duration_s=1.5, flush_every=3600,
    )  # fmt: skip
    stop = threading.Event()
    timer = threading.Timer(60, stop.set)
    timer.start()
    try:
        local.run(stop, until_idle_s=1.0)
    finally:
        timer.cancel()
    assert local.tickers["main"].flushes == 0
    before = rows(aws, f"{name}-results")
    assert len(before) == 6, before  # each user's last window is still open
    plan_file = tmp_path / "plan.json"
    plan_file.write_bytes(orjson.dumps(plan))
    deadline = time.monotonic() + 30
    pause = threading.Event()
    while True:
        result = CliRunner().invoke(
            main, ["flush", str(plan_file), "main", "--endpoint-url", moto_endpoint]
        )
        assert result.exit_code == 0, result.output
        answer = orjson.loads(result.stdout.strip().splitlines()[-1])
        if answer["emitted"]:
            break
        assert time.monotonic() < deadline, answer
        pause.wait(0.2)
    assert answer == {
        "shardline": "flush", "function": "main", "windows": 3, "emitted": 1, "pending": 0
    }  # fmt: skip
    assert rows(aws, f"{name}-results") == dict(expected)
