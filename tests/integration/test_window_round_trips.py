"""The round trips of a window step's warm batch to its DynamoDB state (issue 17), on the
session moto server: which calls it makes, and how many of them wait for one another.

The calls are seen through botocore's own event hooks on a client of the test's (no call is
patched): each call's start and end take a tick of one counter, so "A ended before B
started" is an order, not a time. A barrier holds calls that should go at once (a batch's
window items; its reads) until all of them are in flight: made in turn, the first one waits
for the next, the barrier breaks at its deadline, and the test fails.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from bench.timeline import depth
from processors.chain import Chain, Step
from processors.window import Window
from processors.window_store import DynamoDBStore, WindowStateError, outbox_sk
from stream.records import Record
from tests.integration.test_window_state import DOCS, Before

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.integration

BARRIER_S = 10  # how long a held call waits for the others, at most


class Calls:
    """The DynamoDB calls of one client, as ``(op, started, ended)`` ticks, with the sort
    key each wrote or the keys each read (``what``)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.ticks = itertools.count()
        self.lock = threading.Lock()
        self.calls: list[list[Any]] = []
        self.open: dict[int, list[Any]] = {}  # thread -> the call it is making
        self.barrier: threading.Barrier | None = None
        self.held: Callable[[str, Any], bool] = lambda op, what: False
        client.meta.events.register("before-parameter-build.dynamodb", self._start)
        client.meta.events.register("after-call.dynamodb", self._end)

    def _start(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        what = params.get("Item", {}).get("window", {}).get("S")
        if model.name == "BatchGetItem":
            what = sorted(k["window"]["S"] for t in params["RequestItems"].values()
                          for k in t["Keys"])  # fmt: skip
        elif model.name == "BatchWriteItem":  # a commit's tombstones of dead windows' items
            what = sorted(r["PutRequest"]["Item"]["window"]["S"]
                          for t in params["RequestItems"].values() for r in t)  # fmt: skip
        barrier = self.barrier
        if barrier is not None and self.held(model.name, what):
            barrier.wait()  # all the held calls in flight, or BrokenBarrierError
        with self.lock:
            call = [model.name, next(self.ticks), None, what]
            self.calls.append(call)
            self.open[threading.get_ident()] = call

    def _end(self, **_: Any) -> None:
        with self.lock:
            self.open.pop(threading.get_ident())[2] = next(self.ticks)

    def hold(self, n: int, held: Callable[[str, Any], bool]) -> None:
        """From now on, the calls ``held`` picks (by operation and ``what``) wait until
        ``n`` of them are in flight."""
        self.barrier = threading.Barrier(n, timeout=BARRIER_S)
        self.held = held

    def since(self, n: int) -> list[list[Any]]:
        return self.calls[n:]


def window_items(op: str, what: Any) -> bool:
    return op == "PutItem" and what.startswith("w#")


class Hooked:
    """The real client; before its first ``method`` call, ``hook`` runs (another
    invocation), and the other calls of ``method`` wait for it."""

    def __init__(self, client: Any, method: str) -> None:
        self.client = client
        self.method = method
        self.hook: Callable[[], Any] | None = None
        self.lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        call = getattr(self.client, name)
        if name != self.method:
            return call

        def hooked(**request: Any) -> Any:
            with self.lock:
                if self.hook is not None:
                    hook, self.hook = self.hook, None
                    hook()
            return call(**request)

        return hooked


def chain_depth(calls: list[list[Any]]) -> int:
    """The longest chain of calls each started after the one before it ended."""
    return depth([(op, start, start, end, end) for op, start, end, _ in calls])


def step_on(
    table: str, prefix: str, client: Any, clock: list[float] | None = None, *, lanes: bool = False
) -> Window:
    """A window step (``quiet_s`` 300, the default) on the table, its clock ``clock``; with
    ``lanes``, in lanes mode (``parallelization`` 2: issue 16's high-water and outbox
    entries), else with one lane (main's protocol)."""
    now: Callable[[], float] = (lambda: clock[0]) if clock else (lambda: 10_000.0)
    store = DynamoDBStore(table, prefix, 0, 60, client=client, now=now, high_water=lanes)
    return Window(key="user", size_s=60, field="ts", aggregate={"n": "count"}, function="f",
                  store=store, now=now, parallelization=2 if lanes else 1)  # fmt: skip


def batch_on(step: Window, shard: str, docs: list[dict[str, Any]], first_seq: int) -> list[Any]:
    records = [
        Record(orjson.dumps(d), d["user"], str(first_seq + i), shard_id=shard, index=i)
        for i, d in enumerate(docs)
    ]
    result = Chain([Step.of("processors[0].window", step)]).run(records)
    assert not result.failures, result.failures
    return [(r.get("window_id"), r.get("n"), r.shard_id) for r in result.records]


class TestAWarmBatch:
    def test_reads_its_shard_item_s_revision_and_the_list_of_shards_in_one_call(
        self, aws, window_table
    ):
        """One strongly consistent ``BatchGetItem`` (before: a ``GetItem`` of the revision,
        then another of the list, one after the other), then the window item, then the
        shard item: three round trips, each after the one before."""
        prefix, client = uuid.uuid4().hex, aws("dynamodb")
        calls = Calls(client)
        step = step_on(window_table, prefix, client)
        batch_on(step, "s0", [{"user": "a", "ts": 5}], 1)  # cold: the state read back
        reads, seen = step.store.reads, len(calls.calls)  # type: ignore[attr-defined]
        batch_on(step, "s0", [{"user": "a", "ts": 6}], 2)
        warm = calls.since(seen)
        assert [(op, what) for op, _, _, what in warm] == [
            ("BatchGetItem", ["#shard", "#shards"]),
            ("PutItem", 'w#0#"a"'),
            ("PutItem", "#shard"),
        ]
        assert step.store.reads - reads == 1  # type: ignore[attr-defined]
        assert chain_depth(warm) == 3

    def test_writes_its_window_items_at_once_then_the_shard_item(self, aws, window_table):
        """Two keys' windows: their items are written together (one round trip), and the
        shard item only once both are written, as a batch that fails half-way needs."""
        prefix, client = uuid.uuid4().hex, aws("dynamodb")
        calls = Calls(client)
        step = step_on(window_table, prefix, client)
        batch_on(step, "s0", [{"user": "a", "ts": 5}, {"user": "b", "ts": 5}], 1)
        seen = len(calls.calls)
        calls.hold(2, window_items)
        batch_on(step, "s0", [{"user": "a", "ts": 6}, {"user": "b", "ts": 7}], 3)
        warm = calls.since(seen)
        windows = [c for c in warm if c[0] == "PutItem" and c[3].startswith("w#")]
        shard = [c for c in warm if c[0] == "PutItem" and c[3] == "#shard"]
        assert sorted(c[3] for c in windows) == ['w#0#"a"', 'w#0#"b"']
        assert len(shard) == 1
        assert shard[0][1] > max(end for _, _, end, _ in windows)  # after both ended
        assert chain_depth(warm) == 3  # the read, the window items, the shard item

    def test_with_the_overlap_switched_off_writes_its_window_items_in_turn(self, aws, window_table):
        """``stream.overlap`` off (``bench invocation``'s ``before`` row): every call in
        turn, the same calls."""
        from stream.overlap import overlapping  # noqa: PLC0415

        prefix, client = uuid.uuid4().hex, aws("dynamodb")
        calls = Calls(client)
        step = step_on(window_table, prefix, client)
        batch_on(step, "s0", [{"user": "a", "ts": 5}, {"user": "b", "ts": 5}], 1)
        seen = len(calls.calls)
        with overlapping(False):
            batch_on(step, "s0", [{"user": "a", "ts": 6}, {"user": "b", "ts": 7}], 3)
        warm = calls.since(seen)
        assert [op for op, *_ in warm] == ["BatchGetItem", "PutItem", "PutItem", "PutItem"]
        assert chain_depth(warm) == 4


class TestOneLaneAsMain:
    """With one lane (``parallelization`` 1) the store keeps main's protocol: these are
    main's calls, and lanes mode's (issue 16, slice S3) are what it adds."""

    @pytest.mark.parametrize("lanes", [False, True], ids=["one-lane", "lanes"])
    def test_a_batch_that_closes_a_window(self, aws, window_table, lanes):
        """One lane: the read, the open window's item, the shard item, then the closed
        window's item deleted (``BatchWriteItem``: main wrote it closed, in the window
        items' round trip; depth 4, main's 3). Lanes
        mode (slice S4a's redo log): the read, the log, the commit (``UpdateItem``), the
        roll-forward of the window items and the closer's outbox entry at once, then the
        log out of ``pending``: depth 5."""
        prefix, client = uuid.uuid4().hex, aws("dynamodb")
        calls = Calls(client)
        step = step_on(window_table, prefix, client, lanes=lanes)
        batch_on(step, "s0", [{"user": "a", "ts": 5}], 1)
        seen = len(calls.calls)
        closing = batch_on(step, "s0", [{"user": "c", "ts": 61}], 2)
        assert closing == [("f/a/1970-01-01T00:00:00Z", 1, "s0")]
        warm = calls.since(seen)
        got = [(op, what) for op, _, _, what in warm]
        main = [("BatchGetItem", ["#shard", "#shards"]), ("PutItem", 'w#0#"a"'),
                ("PutItem", 'w#60#"c"'), ("PutItem", "#shard")]  # fmt: skip
        if not lanes:
            assert got == [main[0], main[2], main[3], ("BatchWriteItem", ['w#0#"a"'])]
            assert chain_depth(warm) == 4
            return
        assert got[0] == main[0]
        assert got[1][0] == "PutItem"
        assert got[1][1].startswith("#log#00000000000000000002#")
        assert got[2] == ("UpdateItem", None)  # the commit
        rolled = [*main[1:3], ("PutItem", outbox_sk((2, 0, ())))]
        assert sorted(got[3:6]) == sorted(rolled)
        assert got[6:] == [("UpdateItem", None)]  # DELETE pending
        assert chain_depth(warm) == 5

    @pytest.mark.parametrize("lanes", [False, True], ids=["one-lane", "lanes"])
    def test_a_redelivered_batch_whose_window_it_closed(self, aws, window_table, lanes):
        """The batch ``a@5, c@61`` opened and closed a's window; delivered again (a sink
        after the step failed), it yields the same result. One lane: one read, as main
        (both records at or before ``applied``; the outbox holds them). Lanes mode: the
        closed window's item (a@5 looks late), then the batch's outbox entries (a@5 was
        applied, its outcome is not in the state's outbox), then (nothing written) the
        shard item's revision again (slice S4a: design §9.2): four calls in turn."""
        prefix, client = uuid.uuid4().hex, aws("dynamodb")
        calls = Calls(client)
        step = step_on(window_table, prefix, client, lanes=lanes)
        docs = [{"user": "a", "ts": 5}, {"user": "c", "ts": 61}]
        first = batch_on(step, "s0", docs, 1)
        assert first == [("f/a/1970-01-01T00:00:00Z", 1, "s0")]
        seen = len(calls.calls)
        assert batch_on(step, "s0", docs, 1) == first
        again = calls.since(seen)
        main = [("BatchGetItem", ["#shard", "#shards"])]
        lanes_calls = [("BatchGetItem", ['w#0#"a"']), ("Query", None), ("GetItem", None)]
        assert [(op, what) for op, _, _, what in again] == main + (lanes_calls if lanes else [])
        assert chain_depth(again) == (4 if lanes else 1)


class TestOtherShards:
    """With other shards, a warm batch reads their shard items at the same time as its own
    revision and the list of shards (the shards the list named last time): the quiet-shard
    rule is decided on those items, and a quiet shard's partition is read after the batch is
    applied, on the revision of the item read; the transaction is conditional on it."""

    def test_their_items_are_read_at_once_with_the_revision_and_the_list(self, aws, window_table):
        prefix, client, clock = uuid.uuid4().hex, aws("dynamodb"), [10_000.0]
        batch_on(step_on(window_table, prefix, client, clock), "s0", DOCS, 1)  # opens a, b on s0
        calls = Calls(client)
        s1 = step_on(window_table, prefix, client, clock)
        z = [{"user": "z", "ts": 9_990 + n} for n in range(3)]
        assert batch_on(s1, "s1", z[:1], 1) == []  # cold: reads the list once it is applied
        seen = len(calls.calls)
        calls.hold(2, lambda op, what: op == "BatchGetItem")
        assert batch_on(s1, "s1", z[1:2], 2) == []  # warm; s0 is not quiet
        warm = calls.since(seen)
        assert sorted((op, what) for op, _, _, what in warm[:2]) == [
            ("BatchGetItem", ["#shard"]),  # s0's shard item
            ("BatchGetItem", ["#shard", "#shards"]),  # s1's revision and the list
        ]
        assert [(op, what) for op, _, _, what in warm[2:]] == [
            ("PutItem", 'w#9960#"z"'),
            ("PutItem", "#shard"),
        ]
        assert chain_depth(warm) == 3

    @pytest.mark.parametrize("lanes", [False, True], ids=["one-lane", "lanes"])
    def test_a_quiet_one_s_windows_close_once(self, aws, window_table, lanes):
        """With one lane, main's calls, s0's state read as two ``Query`` calls at once
        (below its windows, and its one listed start). In lanes mode (slice S4a) the log before
        the transaction (two ``UpdateItem`` on each shard's commit number), then the
        roll-forward (the window item and the closer's outbox entry) and the log out of
        ``pending``; since slice S5 the quiet shard's close is a commit with a log too,
        written with the closer's and rolled forward after it."""
        prefix, client, clock = uuid.uuid4().hex, aws("dynamodb"), [10_000.0]
        batch_on(step_on(window_table, prefix, client, clock, lanes=lanes), "s0", DOCS, 1)  # a, b
        calls = Calls(client)
        s1 = step_on(window_table, prefix, client, clock, lanes=lanes)
        z = [{"user": "z", "ts": 9_990 + n} for n in range(3)]
        assert batch_on(s1, "s1", z[:1], 1) == []  # cold
        clock[0] += 301  # s0 is quiet now
        seen = len(calls.calls)
        closing = batch_on(s1, "s1", z[1:2], 2)  # warm
        assert closing == [("f/a/1970-01-01T00:00:00Z", 2, "s1"),
                           ("f/b/1970-01-01T00:00:00Z", 1, "s1")]  # fmt: skip
        warm = calls.since(seen)
        assert sorted(op for op, *_ in warm[:2]) == ["BatchGetItem", "BatchGetItem"]
        main = [
            ("Query", None),  # s0's state
            ("PutItem", 'w#9960#"z"'),
            ("TransactWriteItems", None),  # s1's shard item and s0's
        ]
        got = [(op, what) for op, _, _, what in warm[2:]]
        if not lanes:
            # s0's state by the starts its item lists (read with the revision): below
            # ``w#`` and the start ``w#0#``, at once (processors/window_starts.py)
            assert got == [main[0], *main]
            assert chain_depth(warm[2:4]) == 1
        else:
            # slice S5: s0's close is a commit of s0 with a log too (its second)
            assert got[0] == main[0]
            assert sorted(what[:25] for _, what in got[1:3]) == [
                "#log#00000000000000000002",  # s1's
                "#log#00000000000000000002",  # s0's (one commit so far)
            ]
            assert got[3] == main[2]
            assert sorted(got[4:6]) == sorted([main[1], ("PutItem", outbox_sk((2, 0, ())))])
            assert got[6] == ("UpdateItem", None)  # s1's log out of pending
            assert sorted(got[7:9]) == [("PutItem", 'w#0#"a"'), ("PutItem", 'w#0#"b"')]
            assert got[9:] == [("UpdateItem", None)]  # s0's
        assert batch_on(s1, "s1", z[2:], 3) == []  # nothing closes twice

    def test_a_quiet_one_that_wakes_after_its_item_was_read_is_left_alone(self, aws, window_table):
        """s0 is quiet when s1's warm batch reads its item, then has a batch of its own
        (a record of an old time: its watermark stays behind the cutoff) before s1 reads
        its partition: s1 closes nothing of s0's, which is not quiet any more."""
        prefix, client, clock = uuid.uuid4().hex, aws("dynamodb"), [10_000.0]
        batch_on(step_on(window_table, prefix, client, clock), "s0", DOCS, 1)  # a, b; watermark 30
        s0 = step_on(window_table, prefix, client, clock)
        hooked = Hooked(client, "query")
        s1 = step_on(window_table, prefix, hooked, clock)
        z = [{"user": "z", "ts": 20_000 + n} for n in range(3)]
        batch_on(s1, "s1", z[:1], 1)
        clock[0] += 400  # s0 is quiet: s1's next batch reads its item so
        hooked.hook = lambda: batch_on(s0, "s0", [{"user": "a", "ts": 40}], 5)
        assert batch_on(s1, "s1", z[1:2], 2) == []  # s0's batch ran before its Query
        assert hooked.hook is None
        clock[0] += 299  # s0's batch was 299 s ago: not quiet
        assert batch_on(s1, "s1", z[2:3], 3) == []
        closer = {"user": "c", "ts": 61}
        closed = batch_on(s0, "s0", [closer], 6)  # its own records close them, once
        assert closed == [("f/a/1970-01-01T00:00:00Z", 3, "s0"),
                          ("f/b/1970-01-01T00:00:00Z", 1, "s0")]  # fmt: skip

    def test_a_quiet_shard_that_wakes_before_the_commit_makes_the_batch_retry(
        self, aws, window_table
    ):
        prefix, client, clock = uuid.uuid4().hex, aws("dynamodb"), [10_000.0]
        z = [{"user": "z", "ts": 20_000 + n} for n in range(4)]
        batch_on(step_on(window_table, prefix, client, clock), "s0", DOCS, 1)
        s0 = step_on(window_table, prefix, client, clock)
        woke = {"user": "a", "ts": 40}
        wakes = Before(client, lambda: None)  # not yet: s1's first batch
        s1 = step_on(window_table, prefix, wakes, clock)
        batch_on(s1, "s1", z[:1], 1)
        clock[0] += 400  # s0 is quiet: s1's next batch reads it so, and s0 wakes meanwhile
        wakes.hook = lambda: batch_on(s0, "s0", [woke], 5)
        batch = [Record(orjson.dumps(z[1]), "z", "2", shard_id="s1", index=0)]
        failed = Chain([Step.of("w", s1)]).run(batch)
        assert [type(f.error) for f in failed.failures] == [WindowStateError]
        # delivered again: s0 is not quiet any more (its batch just now), nothing closes
        assert batch_on(s1, "s1", z[1:2], 2) == []
        clock[0] += 301
        closing = batch_on(s1, "s1", z[2:3], 3)
        assert closing == [("f/a/1970-01-01T00:00:00Z", 3, "s1"),
                           ("f/b/1970-01-01T00:00:00Z", 1, "s1")]  # fmt: skip


class _Unprocessing:
    """The real client, but each ``BatchGetItem`` leaves the ``#shards`` key unprocessed, as
    DynamoDB answers for a throttled partition (the list every shard's batch reads)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.armed = False
        self.held = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def batch_get_item(self, **kwargs: Any) -> Any:
        response = self.client.batch_get_item(**kwargs)
        ((name, request),) = kwargs["RequestItems"].items()
        held = [k for k in request["Keys"] if k["window"]["S"] == "#shards"]
        if not self.armed or not held or self.held >= 50:  # 50: the old loop's end, in a test
            return response
        self.held += 1
        got = response["Responses"][name]
        response["Responses"][name] = [i for i in got if i["window"]["S"] != "#shards"]
        response["UnprocessedKeys"] = {name: {**request, "Keys": held}}
        return response


def test_keys_left_unprocessed_are_asked_again_after_a_backoff_within_a_budget(aws, window_table):
    """A throttled ``#shards`` item was asked for again at once and without end, until the
    invocation timed out (found in review): now each try waits a backoff, and after the
    sinks' budget of calls the batch fails retryably (the mapping delivers it again)."""
    from stream.aws import MAX_ATTEMPTS  # noqa: PLC0415

    prefix = uuid.uuid4().hex
    proxy = _Unprocessing(aws("dynamodb"))
    step = step_on(window_table, prefix, proxy)
    waits: list[float] = []
    step.store._sleep = waits.append  # type: ignore[attr-defined]  # no real waiting
    batch_on(step, "s0", [{"user": "a", "ts": 5}], 1)  # cold: asks for quiet shards
    batch_on(step, "s0", [{"user": "a", "ts": 6}], 2)  # warm: rev and list in one read
    proxy.armed = True
    records = [Record(orjson.dumps({"user": "a", "ts": 7}), "a", "3", shard_id="s0", index=0)]
    result = Chain([Step.of("processors[0].window", step)]).run(records)
    assert [f.retryable for f in result.failures] == [True]
    assert "unprocessed after" in str(result.failures[0].error)
    assert proxy.held == MAX_ATTEMPTS
    assert len(waits) == MAX_ATTEMPTS - 1
    assert all(w >= 0 for w in waits)
