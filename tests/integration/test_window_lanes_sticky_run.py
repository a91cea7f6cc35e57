"""Issue 16, S7: the sticky lanes mode under ``shardline run``'s threads. A local run of a
tumbling-window function at ``parallelization: 2`` (lanes mode writes both shards' state)
is stopped in the middle of the stream; the file is changed to ``parallelization: 1`` and
run again on the same local state (checkpoints, window table). The one-lane store of the
second run meets shards lanes mode wrote, in a thread per shard, and turns lanes mode on
for good (``LanesMet``: each attempt in the mode read at its start, per thread); records
after the first run's checkpoints are delivered again.

Checked, from the stores: the ``latest`` table holds exactly the reference's windows with
its aggregates, every emitted result (the archive) equals the reference's, no record is
late, no batch of either run failed or was partial (the runs' reports), the dead-letter
queue is empty. The reference and the records: :mod:`tests.integration.test_window_lanes_run`
(the window key is the partition key, disorder within the lateness)."""

from __future__ import annotations

import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from deploy.local.readback import table_items
from deploy.local.run import LocalRun
from deploy.local.servers import provision
from deploy.pipeline.config import compile_plan, parse_config
from stream.aws import reset_clients
from tests.faultproxy import FaultProxy, latched, slow
from tests.integration import test_window_lanes_run as lanes_run
from tests.integration.test_window_lanes_run import FUNCTION, Lanes
from tests.integration.test_window_lanes_run import local_env as local_env  # noqa: PLC0414
from tests.processors.test_window import _reference

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from deploy.local.run import FunctionRun

pytestmark = pytest.mark.integration

#: fewer records than the run test's (the machine is shared): 96 s of event time, windows
#: closing in three bursts (at 30, 60 and 90 s)
RECORDS = 2_400
PIPELINE = lanes_run.PIPELINE.replace(
    "  late: {{type: s3,", "  dlq: {{type: sqs, queue: {name}-dlq}}\n  late: {{type: s3,"
).replace("  main:\n", "  main:\n    on_failure: dlq\n")


def plan_of(name: str, lanes: int) -> dict[str, Any]:
    """The compiled plan of the file with ``parallelization: lanes``."""
    text = PIPELINE.format(name=name, size=lanes_run.SIZE_S, lateness=lanes_run.LATENESS_S,
                           batch=lanes_run.BATCH, lanes=lanes)  # fmt: skip
    plan: dict[str, Any] = dict(compile_plan(parse_config(text, source="p.yaml", env={})))
    (step,) = plan["functions"][FUNCTION]["processors"]
    assert step["window"]["parallelization"] == lanes
    assert plan["functions"][FUNCTION]["on_failure"] == "dlq"
    return plan


def run(plan: dict[str, Any], aws: Callable[[str], Any], folder: Path,
        until: Callable[[], bool] | None = None, timeout: float = 120) -> Any:  # fmt: skip
    """``LocalRun`` in process (a thread per shard, one window step) until idle, or until
    ``until`` holds; its report. ``aws``: the mapping's clients (stream, leases)."""
    local = LocalRun(plan, worker_id="w1", in_process=True, client=aws,
                     state_dir=folder / ".shardline", lease_duration_s=1.5)  # fmt: skip
    stop = threading.Event()
    timer = threading.Timer(timeout, stop.set)
    timer.daemon = True
    timer.start()

    def tick(_: list[FunctionRun]) -> None:
        if until is not None and until():
            stop.set()

    started = time.monotonic()
    try:
        (done,) = local.run(stop, until_idle_s=None if until else 1.0, on_tick=tick)
    finally:
        timer.cancel()
    assert time.monotonic() - started < timeout, f"the run did not end within {timeout} s"
    return done.stats or done.mapping.stats


def test_parallelization_lowered_to_one_between_two_runs_on_the_same_state(
    aws: Callable[[str], Any],
    local_env: None,
    moto_endpoint: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first run is stopped once the first windows are out (its handlers' commits
    slowed by a proxy, so the stop lands in the middle of the stream); the second, at
    ``parallelization: 1``, runs until idle."""
    name = f"sticky{uuid.uuid4().hex[:8]}"
    two, one = plan_of(name, 2), plan_of(name, 1)
    provision(two, aws, shards=2)
    aws("kinesis").get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 50}
    )
    monkeypatch.setattr(lanes_run, "RECORDS", RECORDS)
    shards = lanes_run.produce(aws, name, seed=17)
    expected, late = _reference(shards, lanes_run.SIZE_S, lanes_run.SIZE_S,
                                lanes_run.LATENESS_S, FUNCTION)  # fmt: skip
    assert late == set()
    check = Lanes(name, two, tmp_path / "unused.json", expected)

    ddb = aws("dynamodb")

    @latched
    def halfway() -> bool:
        return len(table_items(ddb, check.table)) > 0

    with FaultProxy(moto_endpoint) as proxy:  # the handlers' commits held 0.15 s each
        proxy.inject(slow(0.15), target="UpdateItem")
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        reset_clients()
        first = run(two, aws, tmp_path, until=halfway)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    reset_clients()
    at_stop = len(check.rows(aws))
    assert 0 < at_stop < len(expected), "stopped in the middle of the stream"
    second = run(one, aws, tmp_path)
    for report in (first, second):
        assert (report.batches_failed, report.batches_partial) == (0, 0), report
    assert first.records_in + second.records_in >= RECORDS
    check.check(aws)  # the reference's rows and emissions, nothing late
    queue = aws("sqs").get_queue_url(QueueName=f"{name}-dlq")["QueueUrl"]
    letters = aws("sqs").receive_message(QueueUrl=queue, MaxNumberOfMessages=10)
    assert letters.get("Messages", []) == [], [orjson.loads(m["Body"]) for m in letters["Messages"]]
    state = f"{name}-{FUNCTION}-windows"
    shard_items = [i for i in table_items(aws("dynamodb"), state) if i["window"]["S"] == "#shard"]
    assert len(shard_items) == 2
    assert all("n" in i for i in shard_items), "both shards' state stayed in lanes mode"
