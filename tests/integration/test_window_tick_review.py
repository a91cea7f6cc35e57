"""Review 13 of a scheduled flush's store side (issue 16): faults nobody designed for, on
the session's moto server. Each test runs with one lane and in lanes mode.

* Two ticks at once (EventBridge delivers at least once; a slow flush overlaps the next;
  ``shardline flush`` by hand beside the schedule) read the same ``tick_n`` and pick the
  same T: the loser's entry parts used the winner's sort keys, so the loser overwrote the
  winner's committed entry and then deleted it. The next tick found the name without
  parts, took it for an acked entry and dropped it: the results were never emitted.
* A synthetic position reused for other results: T counted from the shard item's
  ``tick_n``, which a ``Put`` that does not know it (an older version's one-lane
  cross-shard close during a deploy or after a rollback) drops while the shard stays
  quiet (same applied sequence number). The next close took T = 1 again: the same
  position, hence the same S3 object name (the digest is of positions), OpenSearch
  ``_id`` and SQS deduplication id, for other windows: an archived result overwritten.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from processors.lineage import StaticLineage
from processors.window import Window
from processors.window_store import DynamoDBStore
from tests.integration.test_window_state import DOCS, Before
from tests.integration.test_window_tick import (
    CLOSED,
    KINDS,
    LANES,
    ids,
    on,
    shard_item,
    step,
    tick_parts,
)

pytestmark = pytest.mark.integration

START = 10_000.0


class TestTwoTicksAtOnce:
    @LANES
    @KINDS
    def test_a_losing_tick_leaves_the_winner_s_pending_entry(self, aws, window_table, lanes, kind):
        """Tick B reads s0, then tick A closes it (its emission is not acked: a sink was
        down, or A died after its commit); B writes its entry's parts and loses its
        condition. A's entry must still be pending, whole, as A committed it."""
        prefix, client, clock = uuid.uuid4().hex, aws("dynamodb"), [START]
        new = lambda c=client: step(window_table, prefix, c, clock, lanes=lanes, kind=kind)  # noqa: E731
        on(new(), "s0", DOCS, 1)
        clock[0] += 301
        won: list[Any] = []
        loser = new(Before(client, lambda: won.extend(new().tick())))
        assert loser.tick() == []  # B lost its condition: nothing of its own
        assert [e.shard_id for e in won] == ["s0"]
        clock[0] += 60
        assert new().tick() == won  # A's entry, as A committed it
        new().ack(won[0])
        assert new().tick() == []
        assert tick_parts(aws, window_table, prefix) == []

    @LANES
    def test_a_losing_tick_that_decided_more_does_not_replace_the_winner_s_results(
        self, aws, window_table, lanes
    ):
        """B reads s0 later than A (a later cutoff, so it decides to close one window
        more), A commits first: the pending entry holds A's results, never B's (whose
        close never committed: that window is still open and closes once, later)."""
        prefix, client, clock = uuid.uuid4().hex, aws("dynamodb"), [0.0]
        new = lambda c=client, lateness=60: _lateness_step(  # noqa: E731
            window_table, prefix, c, clock, lanes=lanes, lateness=lateness
        )
        on(new(), "s0", [{"user": "a", "ts": 5}, {"user": "a", "ts": 100}], 1)
        clock[0] = 430.0  # cutoff 130: [0, 60) is due, [60, 120) is not
        won: list[Any] = []

        def a_first() -> None:
            clock[0] = 430.0
            won.extend(new().tick())
            clock[0] = 490.0

        clock[0] = 490.0  # B's cutoff 190: both are due for it
        assert new(Before(client, a_first)).tick() == []
        assert [ids(e.results) for e in won] == [[("f/a/1970-01-01T00:00:00Z", 1)]]
        after = new().tick()  # B's decision never committed: [60, 120) closes now, once
        assert after[0] == won[0]
        assert [ids(e.results) for e in after[1:]] == [[("f/a/1970-01-01T00:01:00Z", 1)]]


class TestTickNumbers:
    def test_a_lost_tick_counter_never_reuses_a_position(self, aws, window_table):
        """s0 stays quiet (one applied sequence number) while two ticks close two of its
        windows; between them a ``Put`` of its shard item that does not know ``ticks`` and
        ``tick_n`` (an older version's cross-shard close during a deploy) drops them. The
        two emissions are other results, so they must be at other positions."""
        prefix, client, clock = uuid.uuid4().hex, aws("dynamodb"), [0.0]
        new = lambda: _lateness_step(window_table, prefix, client, clock, lanes=False, lateness=60)  # noqa: E731
        on(new(), "s0", [{"user": "a", "ts": 5}, {"user": "a", "ts": 100}], 1)
        clock[0] = 430.0  # cutoff 130: [0, 60) closes
        first = new().tick()
        assert [ids(e.results) for e in first] == [[("f/a/1970-01-01T00:00:00Z", 1)]]
        new().ack(first[0])
        # what an older version's one-lane ``Put`` of the item writes: all but them
        item = shard_item(aws, window_table, prefix, "s0")
        item.pop("ticks", None)
        item.pop("tick_n")
        item["rev"] = {"S": uuid.uuid4().hex}
        client.put_item(TableName=window_table, Item=item)
        clock[0] = 490.0  # cutoff 190: [60, 120) closes
        second = new().tick()
        assert [ids(e.results) for e in second] == [[("f/a/1970-01-01T00:01:00Z", 1)]]
        assert first[0].sequence_number == second[0].sequence_number  # the shard was quiet
        assert first[0].sub_sequence_number != second[0].sub_sequence_number


def _lateness_step(
    table_name: str,
    prefix: str,
    client: Any,
    clock: list[float],
    *,
    lanes: bool,
    lateness: int,
) -> Window:
    """As :func:`tests.integration.test_window_tick.step`, with ``allowed_lateness_s``: a
    quiet shard then holds windows that come due at different cutoffs."""
    now = lambda: clock[0]  # noqa: E731
    par = 2 if lanes else 1
    store = DynamoDBStore(table_name, prefix, lateness, 60, client=client, now=now,
                          high_water=lanes)  # fmt: skip
    return Window(key="user", size_s=60, field="ts", aggregate={"n": "count"}, function="f",
                  store=store, quiet_s=300, now=now, allowed_lateness_s=lateness,
                  parallelization=par)  # fmt: skip


class TickAnswerLost:
    """The real client; the next tick commit (one lane: the shard item's ``PutItem``
    naming ``ticks``; lanes: the ``UpdateItem`` setting ``tick_n``) is applied, then sent
    once more, as an SDK with retries does after a timeout: the second answer is the
    lost condition (nothing is faked as done)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.armed = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def put_item(self, **request: Any) -> Any:
        item = request["Item"]
        if self.armed and item["window"]["S"] == "#shard" and "tick_n" in item:
            self.armed = False
            self.client.put_item(**request)
        return self.client.put_item(**request)

    def update_item(self, **request: Any) -> Any:
        if self.armed and "tick_n" in request.get("ExpressionAttributeNames", {}).values():
            self.armed = False
            self.client.update_item(**request)
        return self.client.update_item(**request)


class TestTickCommitAnswerLost:
    @LANES
    @KINDS
    def test_a_tick_commit_applied_whose_answer_is_lost_stays_pending(
        self, aws, window_table, lanes, kind
    ):
        """The tick's commit is applied and its resend loses its condition to itself
        (review 8's fault, for the tick): the windows are closed by that commit, so its
        entry must stay pending whole (its parts kept) and come out."""
        prefix, client, clock = uuid.uuid4().hex, aws("dynamodb"), [START]
        new = lambda c=client: step(window_table, prefix, c, clock, lanes=lanes, kind=kind)  # noqa: E731
        on(new(), "s0", DOCS, 1)
        clock[0] += 301
        faulty = TickAnswerLost(client)
        first = new(faulty).tick()
        assert not faulty.armed  # the commit was sent twice
        again = new().tick()
        assert [e.shard_id for e in again] == ["s0"]
        assert sorted(ids(again[0].results)) == sorted(CLOSED[kind])
        assert first in ([], again)


class TestParity:
    @LANES
    @KINDS
    def test_a_window_closed_by_a_tick_equals_one_closed_by_its_shard_s_record(
        self, aws, window_table, lanes, kind
    ):
        """The same records: closed by a tick, and by a later record of the shard itself
        (its watermark): equal result documents, ``window_id`` included."""
        client, clock = aws("dynamodb"), [START]
        by_record, by_tick = uuid.uuid4().hex, uuid.uuid4().hex
        for prefix in (by_record, by_tick):
            on(step(window_table, prefix, client, clock, lanes=lanes, kind=kind), "s0", DOCS, 1)
        later = {"user": "z", "ts": 20_000}
        closing = on(step(window_table, by_record, client, clock, lanes=lanes, kind=kind), "s0",
                     [later], 4)  # fmt: skip
        clock[0] += 301
        ticked = step(window_table, by_tick, client, clock, lanes=lanes, kind=kind).tick()
        assert sorted(ids(closing)) == sorted(CLOSED[kind])
        assert [sorted(e.results, key=lambda r: r["window_id"]) for e in ticked] == [
            sorted(closing, key=lambda r: r["window_id"])
        ]


class TestReshards:
    @LANES
    def test_a_parent_s_pending_entry_survives_its_child_s_first_batch(
        self, aws, window_table, lanes
    ):
        """A drained parent closed by a tick, not acked; its child's first batch marks it
        (one lane: ``UpdateItem`` of its ``rev``; lanes: ``ADD children``): the entry is
        still pending, the same; the child inherits none of the closed windows."""
        prefix, client, clock = uuid.uuid4().hex, aws("dynamodb"), [START]
        lineage = StaticLineage({"c1": ("p",), "c2": ("p",)})

        def new() -> Window:
            now = lambda: clock[0]  # noqa: E731
            store = DynamoDBStore(window_table, prefix, 0, 60, client=client, now=now,
                                  high_water=lanes)  # fmt: skip
            return Window(key="user", size_s=60, field="ts", aggregate={"n": "count"},
                          function="f", store=store, quiet_s=300, now=now, lineage=lineage,
                          parallelization=2 if lanes else 1)  # fmt: skip

        on(new(), "p", DOCS, 1)
        clock[0] += 301
        pending = new().tick()
        assert [(e.shard_id, sorted(ids(e.results))) for e in pending] == [
            ("p", sorted(CLOSED["window"]))
        ]
        child = new()
        assert on(child, "c1", [{"user": "a", "ts": 50}, {"user": "c", "ts": 10_050}], 100) == []
        assert child.late == 1  # a's window was closed by the tick
        assert "children" in shard_item(aws, window_table, prefix, "p")
        assert new().tick() == pending
        new().ack(pending[0])
        clock[0] += 400
        after = new().tick()  # c1's own window closes; p's never again
        assert [(e.shard_id, ids(e.results)) for e in after] == [
            ("c1", [("f/c/1970-01-01T02:47:00Z", 1)])
        ]


class TestPendingTTL:
    @LANES
    def test_a_pending_entry_s_parts_outlive_their_first_ttl(self, aws, window_table, lanes):
        """A sink down for longer than the parts' TTL (a week): DynamoDB deletes an item at
        its TTL whether or not it is named, and parts that are gone read as acked. Every
        tick that re-emits the entry keeps its TTL ahead, so the entry is never expired
        while named (moto does not run TTL: the ``expires`` attribute is checked)."""
        prefix, client, clock = uuid.uuid4().hex, aws("dynamodb"), [START]
        new = lambda: step(window_table, prefix, client, clock, lanes=lanes)  # noqa: E731
        on(new(), "s0", DOCS, 1)
        clock[0] += 301
        pending = new().tick()
        for _ in range(3):  # three re-emits, each 5 days later: 15 days pending
            clock[0] += 5 * 86_400
            assert new().tick() == pending
            parts = _parts(aws, window_table, prefix)
            assert parts
            assert all(int(p["expires"]["N"]) > clock[0] + 86_400 for p in parts)
        new().ack(pending[0])
        assert _parts(aws, window_table, prefix) == []


def _parts(aws: Any, table_name: str, prefix: str) -> list[dict[str, Any]]:
    from deploy.local.readback import table_items  # noqa: PLC0415

    found = table_items(aws("dynamodb"), table_name)
    mine = [i for i in found if i["shard"]["S"].startswith(prefix)]
    return [i for i in mine if i["window"]["S"].startswith("~t#")]


class TestTheWayBack:
    def test_a_one_lane_tick_over_a_table_lanes_mode_wrote_closes_it_in_that_tick(
        self, aws, window_table
    ):
        """``parallelization`` lowered to 1 on a table lanes mode wrote: a cold process's
        tick meets a shard lanes mode wrote. The store turns lanes mode on for good (as a
        batch does), and the tick closes the shard then, instead of failing the flush
        (every cold container's first tick, an Errors alarm each) and leaving the shard
        to the next tick of a warm one."""
        prefix, client, clock = uuid.uuid4().hex, aws("dynamodb"), [START]
        on(step(window_table, prefix, client, clock, lanes=True), "s0", DOCS, 1)
        clock[0] += 301
        one_lane = step(window_table, prefix, client, clock, lanes=False)
        closed = one_lane.tick()
        assert [(e.shard_id, sorted(ids(e.results))) for e in closed] == [
            ("s0", sorted(CLOSED["window"]))
        ]
        assert one_lane.store.high_water  # lanes mode from now on
