"""The way back (issue 16, slice S7a): ``parallelization`` lowered from 2 to 1 on a function
whose window table lanes mode wrote, on the session's moto server.

A DynamoDB window store of one lane (``high_water=False``, what ``parallelization: 1``
builds) that meets a shard lanes mode wrote (its shard item has ``n`` or
``legacy_applied``) turns lanes mode on for the rest of its life and applies the batch
again in it, in the process: no failure reaches Lambda, no one-lane write lands on the
lanes shard. Steps on their own ``DynamoDBStore`` stand for processes (a new one: a cold
start); records are what Lambda delivers (a redelivery is the same batch again)."""

from __future__ import annotations

import threading
import uuid
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from processors.chain import Chain, ChainResult, Step
from processors.lineage import StaticLineage
from processors.session import SessionWindow, session_end_of
from processors.window import Window
from processors.window_store import OUTBOX_MARGIN_S, DynamoDBStore
from stream.records import Record
from tests.integration.test_window_lanes_reshards import Client
from tests.processors.test_session import _reference

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.integration

SIZE = 60


@pytest.fixture
def prefix() -> str:
    return f"b{uuid.uuid4().hex[:8]}:"


def tumbling(aws: Callable[[str], Any], table: str, prefix: str, *, lanes: bool,
             clock: list[float] | None = None, client: Any = None,
             lineage: StaticLineage | None = None,
             max_record_age_s: int = 86_400) -> Window:  # fmt: skip
    """A tumbling window step on its own store (a process): ``parallelization`` 2 (lanes
    mode) or 1 (the one-lane protocol, until it meets a lanes shard); with ``clock``,
    quiet shards after 300 s."""
    now = (lambda: clock[0]) if clock is not None else (lambda: 10_000.0)
    store = DynamoDBStore(table, prefix, 0, SIZE, client=client or aws("dynamodb"), now=now,
                          high_water=lanes, max_record_age_s=max_record_age_s)  # fmt: skip
    return Window(key="user", size_s=SIZE, field="ts", aggregate={"n": "count"},
                  function="f", store=store, quiet_s=None if clock is None else 300, now=now,
                  lineage=lineage or StaticLineage(), late="late",
                  parallelization=2 if lanes else 1)  # fmt: skip


def run(step: Any, shard: str, records: list[tuple[int, str, float]]) -> list[Any]:
    """``(sequence number, user, time)`` records of ``shard`` (partition key: the user)
    through the step: results as (key, window start, n), late ones as ("late", user); a
    failure, retryable or not, fails the test (it would reach Lambda)."""
    out = deliver(step, shard, [(s, {"user": u, "ts": t}) for s, u, t in records])
    assert not out.failures, [f.error for f in out.failures]
    return [("late", r.json["user"]) if r.routes == ("late",) else
            (r.get("key"), r.get("window_start"), r.get("n")) for r in out.records]  # fmt: skip


def deliver(step: Any, shard: str, docs: list[tuple[int, dict[str, Any]]]) -> ChainResult:
    batch = [Record(orjson.dumps(d), d["user"], str(s), shard_id=shard, index=i)
             for i, (s, d) in enumerate(docs)]  # fmt: skip
    return Chain([Step.of("w", step)]).run(batch)


def shard_item(aws: Callable[[str], Any], table: str, pk: str) -> dict[str, Any]:
    return aws("dynamodb").get_item(TableName=table, ConsistentRead=True,
                                    Key={"shard": {"S": pk},
                                         "window": {"S": "#shard"}})["Item"]  # fmt: skip


def partition(aws: Callable[[str], Any], table: str, pk: str) -> dict[str, dict[str, Any]]:
    found = aws("dynamodb").query(TableName=table, KeyConditionExpression="#s = :s",
                                  ExpressionAttributeNames={"#s": "shard"},
                                  ExpressionAttributeValues={":s": {"S": pk}},
                                  ConsistentRead=True)["Items"]  # fmt: skip
    return {i["window"]["S"]: i for i in found}


def reference(records: list[tuple[int, str, float]]) -> list[tuple[str, str, int]]:
    """The one-pass computation (lateness 0, records in shard order, none late here):
    each window whose end the greatest time reached, with its count."""
    counts: dict[tuple[str, int], int] = {}
    for _, user, t in records:
        start = int(t // SIZE * SIZE)
        counts[user, start] = counts.get((user, start), 0) + 1
    top = max(t for _, _, t in records)
    return sorted((u, _iso(s), n) for (u, s), n in counts.items() if s + SIZE <= top)


def _iso(start: int) -> str:
    hours, rest = divmod(start, 3600)
    return f"1970-01-01T{hours:02d}:{rest // 60:02d}:{rest % 60:02d}Z"


class TestTumblingLowered:
    def test_a_one_lane_step_goes_on_from_lanes_state_exactly_once(self, aws, window_table, prefix):
        """Two lanes' batches (x and y in window 0, x's lane lagging), then the function
        at ``parallelization`` 1, cold: its batches go on (no failure), its store in lanes
        mode from its first read; the lanes shard item keeps ``n``, its logs, no outbox.
        Its first batch delivered again changes nothing; the closer's results are the
        one-pass reference's."""
        pk = prefix + "s0"
        lane_b = tumbling(aws, window_table, prefix, lanes=True)
        lane_a = tumbling(aws, window_table, prefix, lanes=True)
        assert run(lane_b, "s0", [(2, "y", 2.0), (4, "y", 4.0)]) == []
        assert run(lane_a, "s0", [(1, "x", 1.0), (3, "x", 3.0)]) == []  # lagging
        lanes_n = int(shard_item(aws, window_table, pk)["n"]["N"])
        one = tumbling(aws, window_table, prefix, lanes=False)
        assert one.store.high_water is False
        first = [(5, "x", 5.0), (6, "y", 6.0), (7, "z", 7.0)]
        assert run(one, "s0", first) == []
        assert one.store.high_water is True  # sticky: lanes mode for the store's life
        after_first = shard_item(aws, window_table, pk)
        assert int(after_first["n"]["N"]) == lanes_n + 1  # a lanes commit, not a PutItem
        assert "outbox" not in after_first
        assert run(one, "s0", first) == []  # redelivered, warm
        cold = tumbling(aws, window_table, prefix, lanes=False)
        assert run(cold, "s0", first) == []  # redelivered, cold: decided, not applied
        assert shard_item(aws, window_table, pk)["n"] == after_first["n"]  # nothing committed
        closer = [(8, "x", 61.0), (9, "w", 200.0)]
        results = run(one, "s0", closer)
        records = [(1, "x", 1.0), (2, "y", 2.0), (3, "x", 3.0), (4, "y", 4.0), *first, *closer]
        assert sorted(results) == reference(records)
        assert sorted(results) == [("x", _iso(0), 3), ("x", _iso(60), 1), ("y", _iso(0), 3),
                                   ("z", _iso(0), 1)]  # fmt: skip
        again = tumbling(aws, window_table, prefix, lanes=False)  # the closer again, cold
        assert sorted(run(again, "s0", closer)) == sorted(results)

    def test_a_one_lane_store_of_several_shards_switches_under_a_running_attempt(
        self, aws, window_table, prefix
    ):
        """One store serves s1 and s0 from two threads (a local run). s1's attempt (a
        one-lane shard) has started, in the one-lane protocol (its read of the shard
        item), when s0's batch meets its lanes shard item and turns the store to lanes
        mode. s1's attempt finishes in the mode it started in (a one-lane commit: no
        ``n``), s0's is lanes mode; s1's next batch converts s1 (``legacy_applied``) and
        every window counts each record once."""
        one_lane = tumbling(aws, window_table, prefix, lanes=False)
        assert run(one_lane, "s1", [(1, "a", 1.0)]) == []  # s1: a one-lane shard
        assert run(tumbling(aws, window_table, prefix, lanes=True), "s0", [(1, "x", 1.0)]) == []
        client = Client(aws("dynamodb"))
        shared = tumbling(aws, window_table, prefix, lanes=False, client=client)
        assert run(shared, "s1", [(2, "a", 2.0)]) == []  # warm, one lane
        seen: list[Any] = []

        def s0_batch() -> None:
            seen.append(run(shared, "s0", [(2, "x", 2.0)]))

        def meanwhile(**request: Any) -> Any:  # s1's attempt's first read, warm
            if request["Key"]["shard"]["S"] == prefix + "s1" and not seen:
                other = threading.Thread(target=s0_batch)
                other.start()
                other.join(timeout=60)
                assert seen == [[]], "s0's batch did not finish"
            return aws("dynamodb").get_item(**request)

        client.get_item = meanwhile  # type: ignore[method-assign]
        assert run(shared, "s1", [(3, "a", 3.0)]) == []
        assert shared.store.high_water is True
        s1 = shard_item(aws, window_table, prefix + "s1")
        assert "n" not in s1
        assert s1["applied"]["S"] == '["3",0,[]]'  # one-lane commit of its attempt
        assert run(shared, "s1", [(4, "a", 100.0)]) == [("a", _iso(0), 3)]
        assert shard_item(aws, window_table, prefix + "s1")["legacy_applied"]["S"] == '["3",0,[]]'
        assert run(shared, "s0", [(3, "x", 100.0)]) == [("x", _iso(0), 2)]

    def test_a_shard_the_store_read_before_the_switch_is_read_again(
        self, aws, window_table, prefix
    ):
        """The store holds s1 as the one-lane protocol read it cold (x's window from its
        item, no high-water: a one-lane read keeps none). It turns lanes mode on at a
        batch of s0, a lanes shard; then x at 1 is delivered again: lanes mode must not
        decide it on the one-lane image (x's window with no high-water: new, counted
        twice), but read s1 again (x's old item's unknown high-water: decided up to the
        one-lane ``applied``)."""
        assert run(tumbling(aws, window_table, prefix, lanes=True), "s0", [(1, "y", 1.0)]) == []
        assert run(tumbling(aws, window_table, prefix, lanes=False), "s1", [(1, "x", 1.0)]) == []
        one = tumbling(aws, window_table, prefix, lanes=False)
        assert run(one, "s1", [(2, "w", 2.0)]) == []  # s1 read cold, one lane
        assert run(one, "s0", [(2, "y", 2.0)]) == []  # turns lanes mode on
        assert one.store.high_water is True
        assert run(one, "s1", [(1, "x", 1.0)]) == []  # redelivered
        assert sorted(run(one, "s1", [(3, "z", 100.0)])) == [("w", _iso(0), 1),
                                                             ("x", _iso(0), 1)]  # fmt: skip


def session(aws: Callable[[str], Any], table: str, prefix: str, *, lanes: bool) -> SessionWindow:
    """A session window step on its own store (a process), gap 100 s, lateness 10 s."""
    store = DynamoDBStore(table, prefix, 10, 100, client=aws("dynamodb"),
                          end_of=session_end_of(100), high_water=lanes)  # fmt: skip
    return SessionWindow(key="user", gap_s=100, field="ts", allowed_lateness_s=10,
                         aggregate={"n": "count", "total": {"sum": "amount"}}, late="late",
                         function="fn", store=store,
                         lineage=StaticLineage(), parallelization=2 if lanes else 1)  # fmt: skip


def by_window(step: Any, records: list[tuple[int, str, float]]) -> dict[str, tuple[int, int]]:
    """The batch's results by window id: (n, total); a failure or a late record fails."""
    out = deliver(step, "s0", [(s, doc(s, u, t)) for s, u, t in records])
    assert not out.failures, [f.error for f in out.failures]
    assert all(r.get("window_id") for r in out.records), "a late record"
    return {r.get("window_id"): (r.get("n"), r.get("total")) for r in out.records}


def doc(seq: int, user: str, t: float) -> dict[str, Any]:
    return {"user": user, "ts": t, "amount": seq, "product": "p", "page": "/"}


class TestSessionsLowered:
    def test_a_one_lane_session_step_goes_on_from_lanes_state_exactly_once(
        self, aws, window_table, prefix
    ):
        """Sessions of a and b opened by two lanes; the function at ``parallelization``
        1 extends them (its store turns lanes mode on); that batch delivered again, warm
        and cold, changes nothing; a closer's results are the one-pass reference's."""
        lane_b = session(aws, window_table, prefix, lanes=True)
        lane_a = session(aws, window_table, prefix, lanes=True)
        assert by_window(lane_b, [(2, "b", 1010.0)]) == {}
        assert by_window(lane_a, [(1, "a", 1000.0)]) == {}  # lagging
        one = session(aws, window_table, prefix, lanes=False)
        first = [(3, "a", 1050.0), (4, "b", 1060.0), (5, "a", 1080.0)]
        assert by_window(one, first) == {}
        assert one.store.high_water is True
        assert "n" in shard_item(aws, window_table, prefix + "s0")
        assert by_window(one, first) == {}  # redelivered, warm
        assert by_window(session(aws, window_table, prefix, lanes=False), first) == {}  # cold
        closer = [(6, "c", 1400.0)]
        results = by_window(one, closer)
        records = [(1, "a", 1000.0), (2, "b", 1010.0), *first, *closer]
        docs = [doc(s, u, t) for s, u, t in records]
        expected, late = _reference({"s0": docs}, 100, 10, "fn")
        assert not late
        assert results == {w: (d["n"], d["revenue"]) for w, d in expected.items()}
        assert sorted(results.values()) == [(2, 6), (3, 9)]  # b: 2 + 4, a: 1 + 3 + 5


class TestQuietLanesShard:
    def test_a_one_lane_batch_closes_a_quiet_lanes_shard_and_does_not_fail(
        self, aws, window_table, prefix
    ):
        """s1, written in lanes mode, is quiet with window a open. A batch of s0 at
        ``parallelization`` 1 (a healthy shard) finds it quiet: the batch does not fail
        (the store turns lanes mode on and applies it again), a's result goes out with
        it, once, and s1's close is a lanes commit (``n`` moved, logs kept)."""
        clock = [10_000.0]
        s1 = tumbling(aws, window_table, prefix, lanes=True, clock=clock)
        assert run(s1, "s1", [(1, "a", 5.0)]) == []
        n_before = int(shard_item(aws, window_table, prefix + "s1")["n"]["N"])
        one = tumbling(aws, window_table, prefix, lanes=False, clock=clock)
        assert run(one, "s0", [(1, "z", 20_000.0)]) == []  # s1 not quiet yet
        clock[0] += 400
        results = run(one, "s0", [(2, "z", 20_001.0)])
        assert results == [("a", _iso(0), 1)]
        assert one.store.high_water is True
        assert int(shard_item(aws, window_table, prefix + "s1")["n"]["N"]) == n_before + 1
        assert run(one, "s0", [(2, "z", 20_001.0)]) == results  # its redelivery
        clock[0] += 400
        assert run(one, "s0", [(3, "z", 20_500.0)]) == [("z", _iso(19_980), 2)]  # a: once


class TestBothAtOnce:
    def test_old_lanes_and_new_one_lane_invocations_alternate_exactly_once(
        self, aws, window_table, prefix
    ):
        """The deploy that lowers ``parallelization``: an old lanes-mode process and a
        new one-lane one run batches of one shard by turns, each also delivering again
        what the other ran (Lambda retries on either). Every window counts each record
        once; each closer's results are the reference's, again on redelivery."""
        old = tumbling(aws, window_table, prefix, lanes=True)
        new = tumbling(aws, window_table, prefix, lanes=False)
        batches = [
            [(1, "x", 1.0), (2, "y", 2.0)],
            [(3, "x", 3.0), (4, "y", 4.0)],
            [(5, "y", 5.0), (6, "x", 61.0)],
            [(7, "y", 62.0), (8, "x", 63.0)],
            [(9, "x", 130.0), (10, "z", 131.0)],
        ]
        got: list[Any] = []
        for i, batch in enumerate(batches):
            first, other = (old, new) if i % 2 == 0 else (new, old)
            results = run(first, "s0", batch)
            assert sorted(run(other, "s0", batch)) == sorted(results)  # redelivered
            got += results
        assert new.store.high_water is True
        records = [r for batch in batches for r in batch]
        assert sorted(got) == reference(records)
        assert sorted(got) == [("x", _iso(0), 2), ("x", _iso(60), 2), ("y", _iso(0), 3),
                               ("y", _iso(60), 1)]  # fmt: skip


class TestClaimTtl:
    def test_a_child_s_claim_keeps_the_parent_s_item_for_the_age_bound(
        self, aws, window_table, prefix
    ):
        """Lanes mode: the claim of an inherited window (the parent's item gets
        ``owner``) sets its TTL to the age bound plus the margin, not a day: a
        redelivery reads that item's high-water (``decided``) until no record of it can
        come again (review 7)."""
        lineage = StaticLineage({"c": ("p",)})
        age = 3 * 86_400
        parent = tumbling(
            aws, window_table, prefix, lanes=True, lineage=lineage, max_record_age_s=age
        )
        assert run(parent, "p", [(1, "a", 5.0)]) == []
        child = tumbling(
            aws, window_table, prefix, lanes=True, lineage=lineage, max_record_age_s=age
        )
        assert run(child, "c", [(100, "a", 20.0)]) == []
        claimed = [i for sk, i in partition(aws, window_table, prefix + "p").items()
                   if sk.startswith("w#")]  # fmt: skip
        assert [i["owner"]["S"] for i in claimed] == ["c"]
        assert int(claimed[0]["expires"]["N"]) >= 10_000 + age + OUTBOX_MARGIN_S
        assert run(child, "c", [(101, "x", 100.0)]) == [("a", _iso(0), 2)]
