"""A window table written with one lane meets lanes mode, and back (issue 16, slice S4b:
``parallelization`` raised from 1 to 2 on a function with windows, then lowered again:
the one-lane store turns lanes mode on, slice S7a),
on the session's moto server.

The old state is written in each test by the one-lane store (``high_water=False``, the
protocol ``parallelization: 1`` keeps): a shard item with ``applied``, ``rev`` and its
outbox, window items with ``v``/``prev``/``token`` and no ``hw``. Then lanes mode goes on
(``DynamoDBStore(high_water=True)``, a step with ``parallelization`` 2). Each step stands
for one process (a Lambda instance); a new one reads the table cold. The records are what
Lambda would deliver: a batch that failed comes again, and a lagging lane's batch comes
after a later lane's commit (positions below the shard's ``applied``)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from processors.chain import Chain, Step
from processors.window import Window
from processors.window_store import DynamoDBStore
from stream.records import Record
from tests.integration.test_window_state import ShardItemFails

if TYPE_CHECKING:
    from collections.abc import Callable

    from processors.chain import ChainResult

pytestmark = pytest.mark.integration

SIZE = 60
START0 = "1970-01-01T00:00:00Z"


def step(aws: Callable[[str], Any], table: str, prefix: str, *, lanes: bool,
         client: Any = None) -> Window:  # fmt: skip
    """A window step on its own store (a process): lanes mode (``parallelization`` 2) or
    the one-lane protocol."""
    store = DynamoDBStore(table, prefix, 0, SIZE, client=client or aws("dynamodb"),
                          now=lambda: 10_000.0, high_water=lanes)  # fmt: skip
    return Window(key="user", size_s=SIZE, field="ts", aggregate={"n": "count"},
                  function="f", store=store, quiet_s=None,
                  parallelization=2 if lanes else 1)  # fmt: skip


def deliver(window: Window, records: list[tuple[int, str, float]]) -> ChainResult:
    """``(sequence number, user, time)`` records of shard s0 (partition key: the user)."""
    recs = [Record(orjson.dumps({"user": u, "ts": ts}), u, str(seq), shard_id="s0", index=i)
            for i, (seq, u, ts) in enumerate(records)]  # fmt: skip
    return Chain([Step.of("w", window)]).run(recs)


def run(window: Window, records: list[tuple[int, str, float]]) -> list[tuple[str, int]]:
    """The batch's results as (key, window start, n); a failure fails the test."""
    out = deliver(window, records)
    assert not out.failures, [f.error for f in out.failures]
    return [(r.get("key"), r.get("window_start"), r.get("n")) for r in out.records]


def shard_item(aws: Callable[[str], Any], table: str, prefix: str) -> dict[str, Any]:
    return aws("dynamodb").get_item(TableName=table, ConsistentRead=True,
                                    Key={"shard": {"S": f"{prefix}s0"},
                                         "window": {"S": "#shard"}})["Item"]  # fmt: skip


@pytest.fixture
def prefix() -> str:
    return f"c{uuid.uuid4().hex[:8]}:"


def test_records_across_the_switch_are_applied_once_and_each_result_comes_once(
    aws, window_table, prefix
):
    """One lane applies 1-4 (window 0 of x and y; x's closer at 4 never came), the switch
    redelivers 3-4 with new records, in two lanes, one lagging; every window's count is
    its records', once."""
    one = step(aws, window_table, prefix, lanes=False)
    assert run(one, [(1, "x", 1.0), (2, "y", 2.0)]) == []
    assert run(one, [(3, "x", 3.0), (4, "y", 4.0)]) == []
    old = shard_item(aws, window_table, prefix)
    assert "n" not in old
    assert old["applied"]["S"] == '["4",0,[]]'
    lane_b = step(aws, window_table, prefix, lanes=True)  # y's lane: redelivered 4, new 6
    assert run(lane_b, [(4, "y", 4.0), (6, "y", 6.0)]) == []
    converted = shard_item(aws, window_table, prefix)
    assert converted["legacy_applied"]["S"] == '["4",0,[]]'
    assert converted["applied"]["S"] == '["6",0,[]]'
    assert "outbox" not in converted
    lane_a = step(aws, window_table, prefix, lanes=True)  # x's lane, lagging: 3 again, new 5
    assert run(lane_a, [(3, "x", 3.0), (5, "x", 5.0)]) == []
    results = run(lane_b, [(7, "y", 100.0)]) + run(lane_a, [(3, "x", 3.0), (5, "x", 5.0)])
    assert sorted(results) == [("x", START0, 3), ("y", START0, 3)]


def test_an_old_half_written_batch_reads_as_never_run_after_lanes_moved_applied_past_it(
    aws, window_table, prefix
):
    """The one-lane batch at 5 wrote x's item (``v`` 5, ``prev`` one record) and failed
    before its shard item. Lanes mode commits past 5 (y at 10); the batch at 5 comes
    again, cold: x's item must read as ``prev`` (judged against ``legacy_applied``, 1),
    not as committed (``v`` 5 is before the new ``applied``, 10), or x counts it twice."""
    run(step(aws, window_table, prefix, lanes=False), [(1, "x", 1.0)])
    torn = step(aws, window_table, prefix, lanes=False, client=ShardItemFails(aws("dynamodb")))
    failed = deliver(torn, [(5, "x", 2.0)])
    assert [f.retryable for f in failed.failures] == [True]
    assert shard_item(aws, window_table, prefix)["applied"]["S"] == '["1",0,[]]'
    assert run(step(aws, window_table, prefix, lanes=True), [(10, "y", 3.0)]) == []
    assert shard_item(aws, window_table, prefix)["legacy_applied"]["S"] == '["1",0,[]]'
    again = step(aws, window_table, prefix, lanes=True)  # the retry of 5, cold
    assert run(again, [(5, "x", 2.0)]) == []
    closing = step(aws, window_table, prefix, lanes=True)
    assert sorted(run(closing, [(11, "y", 100.0)])) == [("x", START0, 2), ("y", START0, 1)]


def test_an_old_closer_redelivered_after_the_switch_yields_its_results_again(
    aws, window_table, prefix
):
    """One lane: z at 3 closed x's and y's window 0 (their results in the shard item's
    outbox). After the conversion (a lanes commit of w at 4, whose step kept only its
    batch's outbox), a lagging lane redelivers 3: its results come again, warm and cold."""
    one = step(aws, window_table, prefix, lanes=False)
    run(one, [(1, "x", 1.0), (2, "y", 50.0)])
    assert run(one, [(3, "z", 200.0)]) == [("x", START0, 1), ("y", START0, 1)]
    lanes = step(aws, window_table, prefix, lanes=True)
    assert run(lanes, [(4, "w", 201.0)]) == []
    assert "outbox" not in shard_item(aws, window_table, prefix)
    assert run(lanes, [(3, "z", 200.0)]) == [("x", START0, 1), ("y", START0, 1)]
    cold = step(aws, window_table, prefix, lanes=True)
    assert run(cold, [(3, "z", 200.0)]) == [("x", START0, 1), ("y", START0, 1)]


def test_an_old_closer_redelivered_before_the_conversion_yields_its_results(
    aws, window_table, prefix
):
    """Lanes mode's first batch is a pure redelivery (4: nothing to commit, so nothing
    converted), and its step keeps only that batch's outbox; a lagging lane's
    redelivered closer (3) then finds its result in the shard item's outbox still."""
    one = step(aws, window_table, prefix, lanes=False)
    run(one, [(1, "x", 1.0)])
    assert run(one, [(3, "z", 200.0), (4, "w", 201.0)]) == [("x", START0, 1)]
    lanes = step(aws, window_table, prefix, lanes=True)
    assert run(lanes, [(4, "w", 201.0)]) == []
    assert "legacy_applied" not in shard_item(aws, window_table, prefix)
    assert run(lanes, [(3, "z", 200.0)]) == [("x", START0, 1)]


def test_a_lagging_lane_s_new_record_in_an_old_window_is_applied(aws, window_table, prefix):
    """x's window 0 has an old item (no high-water). After the switch, y's lane commits 3;
    x's lane, lagging, delivers 2 (before ``applied``, 3, after ``legacy_applied``, 1): the
    old item's unknown high-water means "decided up to 1", so 2 is new and applied; its
    redelivery is not applied again."""
    run(step(aws, window_table, prefix, lanes=False), [(1, "x", 1.0)])
    lane_b = step(aws, window_table, prefix, lanes=True)
    assert run(lane_b, [(3, "y", 5.0)]) == []
    lane_a = step(aws, window_table, prefix, lanes=True)
    assert run(lane_a, [(2, "x", 2.0)]) == []
    assert run(step(aws, window_table, prefix, lanes=True), [(1, "x", 1.0), (2, "x", 2.0)]) == []
    results = run(step(aws, window_table, prefix, lanes=True), [(4, "y", 100.0)])
    assert sorted(results) == [("x", START0, 2), ("y", START0, 1)]


def test_one_lane_meeting_a_shard_lanes_mode_wrote_turns_lanes_mode_on(aws, window_table, prefix):
    """The way back (``parallelization`` lowered to 1): the one-lane store cannot read a
    lanes-mode shard, nor write it (its shard item PutItem would drop ``n``, ``logs`` and
    ``pending``). It turns lanes mode on and applies the batch in it, in the process: no
    failure, a lanes commit (``n`` moves, ``legacy_applied`` stays); more in
    ``test_window_lanes_lowered.py``."""
    run(step(aws, window_table, prefix, lanes=False), [(1, "x", 1.0)])
    run(step(aws, window_table, prefix, lanes=True), [(2, "x", 2.0)])
    before = shard_item(aws, window_table, prefix)
    lowered = step(aws, window_table, prefix, lanes=False)
    assert run(lowered, [(3, "x", 3.0)]) == []
    after = shard_item(aws, window_table, prefix)
    assert int(after["n"]["N"]) == int(before["n"]["N"]) + 1
    assert after["legacy_applied"] == before["legacy_applied"]
    results = run(step(aws, window_table, prefix, lanes=True), [(3, "x", 3.0), (4, "y", 100.0)])
    assert results == [("x", START0, 3)]
