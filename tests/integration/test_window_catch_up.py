"""Lanes mode's catch-up (issue 16, slice S4b; design ``parallel-windows.md`` §5.1 step 2)
on the session's moto server: a process whose cached state is at commit m and finds the
shard item at n > m reads the logs m+1..n (one ``Query`` of their ``#log#`` range) and
applies them to its cache instead of reading the partition again; what it gets is
exactly what a cold read gets.

Two window steps on two ``DynamoDBStore`` instances stand for two processes (two Lambda
instances) on one table. Interleavings run one step's batch inside a call of the other's
(its commit), in one thread: the order is exact, no sleeps."""

from __future__ import annotations

import random
import sys
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from processors.chain import Chain, Step
from processors.window import Window
from processors.window_store import DynamoDBStore, ShardState
from stream.records import Record

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.integration

SIZE = 60


class Counting:
    """The real client; it records each call as (operation, what): for a ``Query``,
    ``log`` (a ``#log#`` range), ``outbox`` (``~o#`` entries) or ``partition``; for a
    ``GetItem``, the sort key. ``before_commit``, when set, runs once before the next
    commit (an ``UpdateItem`` of ``#shard`` that adds to ``pending``)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: list[tuple[str, str]] = []
        self.threads: list[int] = []  # the thread of each call
        self.before_commit: Callable[[], Any] | None = None

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._client, name)

        def counted(**request: Any) -> Any:
            what = ""
            if name == "query":
                low = request["ExpressionAttributeValues"].get(":l", {}).get("S", "")
                what = "log" if low.startswith("#log#") else "outbox" if low else "partition"
            elif name == "get_item":
                what = request["Key"]["window"]["S"]
            elif name == "update_item" and "ADD #p" in request.get("UpdateExpression", ""):
                what = "commit"
                hook, self.before_commit = self.before_commit, None
                if hook is not None:
                    hook()
            self.calls.append((name, what))
            self.threads.append(threading.get_ident())
            return call(**request)

        return counted


def process(aws: Callable[[str], Any], table: str, prefix: str) -> tuple[Window, Counting]:
    """A lanes-mode window step (``parallelization`` 2) on its own store and client."""
    client = Counting(aws("dynamodb"))
    store = DynamoDBStore(table, prefix, 0, SIZE, client=client, now=lambda: 10_000.0,
                          high_water=True)  # fmt: skip
    step = Window(key="user", size_s=SIZE, field="ts", aggregate={"n": "count", "s": {"sum": "v"}},
                  function="f", store=store, quiet_s=None, parallelization=2)  # fmt: skip
    return step, client


def run(step: Window, records: list[tuple[int, dict[str, Any]]]) -> list[tuple[Any, Any]]:
    """``(sequence number, document)`` records of shard s0 through the step: its results
    as (window_id, n); a failure fails the test."""
    recs = [Record(orjson.dumps(d), d["user"], str(seq), shard_id="s0", index=i)
            for i, (seq, d) in enumerate(records)]  # fmt: skip
    out = Chain([Step.of("processors[0].window", step)]).run(recs)
    assert not out.failures, out.failures
    return [(r.get("window_id"), r.get("n")) for r in out.records]


def doc(user: str, ts: float, v: int = 1) -> dict[str, Any]:
    return {"user": user, "ts": ts, "v": v}


def view(state: ShardState) -> dict[str, Any]:
    """What a state decides by: its windows (in the order they close), their high-water,
    the watermark's time and the position applied (a heap's list order aside: two heaps of
    the same ends may differ). Not the outbox: a process keeps its own batch's outcomes
    there after its commit (final, and in the table's entries too), a cold read has none."""
    return {
        "windows": state.windows,
        "by_end": state.by_end,
        "ends": sorted(state.ends),
        "hw": state.hw,
        "max_time": state.max_time,
        "applied": state.applied,
        "rest": (state.ancestors, state.inherited, state.foreign, state.waiting),
    }


def warm(step: Window) -> ShardState:
    """The step's store's state of s0 as its next batch would get it (a catch-up, when
    another process committed since), handed back at once (a commit of nothing: the
    store checks the commit number and keeps the state warm)."""
    store = step.store
    state = store.shard("s0")
    store.commit("s0", state, set())
    return state


def head(aws: Callable[[str], Any], table: str, prefix: str) -> dict[str, Any]:
    return aws("dynamodb").get_item(TableName=table, ConsistentRead=True,
                                    Key={"shard": {"S": f"{prefix}s0"},
                                         "window": {"S": "#shard"}})["Item"]  # fmt: skip


def cold(aws: Callable[[str], Any], table: str, prefix: str) -> ShardState:
    """The state a new process reads (the partition, pending logs laid over)."""
    return DynamoDBStore(table, prefix, 0, SIZE, client=aws("dynamodb"),
                         high_water=True).shard("s0")  # fmt: skip


class TestTwoProcessesAlternating:
    def test_a_batch_reads_the_other_s_log_not_the_partition(self, aws, window_table):
        """B's batch after A's commit: the shard item, then one ``Query`` of the log
        range; before S4b, a ``Query`` of the whole partition."""
        prefix = f"t{uuid.uuid4().hex[:8]}:"
        a, a_calls = process(aws, window_table, prefix)
        b, b_calls = process(aws, window_table, prefix)
        run(a, [(1, doc("x", 0.0))])
        run(b, [(2, doc("y", 1.0))])  # cold: the partition
        run(a, [(3, doc("x", 2.0))])  # warm at 1, the shard at 2: B's log
        calls = len(b_calls.calls)
        run(b, [(4, doc("y", 3.0))])  # warm at 2, the shard at 3: A's log
        reads = [c for c in b_calls.calls[calls:] if c[0] in {"query", "get_item"}]
        assert reads == [("get_item", "#shard"), ("query", "log")]
        assert ("query", "partition") not in a_calls.calls[1:]
        assert [c for c in a_calls.calls if c[0] == "query"] == [
            ("query", "partition"),
            ("query", "log"),
        ]

    def test_results_are_those_of_one_process(self, aws, window_table):
        """Batches of two lanes alternate over two processes; the windows that close
        yield each key's whole count once."""
        prefix = f"t{uuid.uuid4().hex[:8]}:"
        a, _ = process(aws, window_table, prefix)
        b, _ = process(aws, window_table, prefix)
        out = []
        out += run(a, [(1, doc("x", 0.0)), (2, doc("x", 5.0))])
        out += run(b, [(3, doc("y", 6.0)), (4, doc("y", 7.0)), (5, doc("y", 8.0))])
        out += run(a, [(6, doc("x", 9.0))])
        out += run(b, [(7, doc("y", 61.0))])  # closes both windows of [0, 60)
        assert sorted(out) == [("f/x/1970-01-01T00:00:00Z", 3), ("f/y/1970-01-01T00:00:00Z", 3)]
        assert view(warm(a)) == view(cold(aws, window_table, prefix))


class TestALostCommit:
    def test_the_retry_catches_up_from_the_log(self, aws, window_table):
        """A reads at n = 1; B commits n = 2 inside A's commit; A's commit is lost; its
        retry rebuilds its state from its cache's items and B's log, with no read of the
        partition, and both batches count."""
        prefix = f"t{uuid.uuid4().hex[:8]}:"
        a, a_calls = process(aws, window_table, prefix)
        b, _ = process(aws, window_table, prefix)
        run(a, [(1, doc("x", 0.0))])
        run(b, [(2, doc("y", 1.0))])
        run(a, [(3, doc("x", 2.0))])  # A warm at 3
        a_calls.before_commit = lambda: run(b, [(5, doc("y", 4.0))])
        calls = len(a_calls.calls)
        run(a, [(4, doc("x", 3.0))])
        mine = a_calls.calls[calls:]
        assert [c for c in mine if c[1] == "commit"] == [("update_item", "commit")] * 2
        assert ("query", "partition") not in mine
        assert ("query", "log") in mine
        out = run(b, [(6, doc("y", 61.0))])
        assert sorted(out) == [("f/x/1970-01-01T00:00:00Z", 3), ("f/y/1970-01-01T00:00:00Z", 2)]
        assert view(warm(a)) == view(cold(aws, window_table, prefix))


@pytest.mark.parametrize("seed", [0, 1, 3, 4])
def test_a_caught_up_cache_equals_a_cold_read(aws, window_table, seed):
    """Random batches of two lanes (keys by lane, times with disorder, windows closing)
    over two processes, some commits lost to the other's (its batch inside the commit),
    some batches delivered twice: after each batch, each process's warm state (a
    catch-up whenever the other committed) equals a cold read of the table."""
    rnd = random.Random(seed)
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    steps = [process(aws, window_table, prefix) for _ in range(2)]
    lanes: list[list[tuple[int, dict[str, Any]]]] = [[], []]
    t = 0.0
    for seq in range(1, 61):
        user = rnd.choice("abcd")
        t += rnd.uniform(0, 8)
        lanes["abcd".index(user) % 2].append((seq, doc(user, t - rnd.uniform(0, 20), seq)))
    batches = []
    for records in lanes:
        at = 0
        while at < len(records):
            size = rnd.randint(1, 5)
            batches.append(records[at : at + size])
            at += size
    order = []  # each lane's batches in its order, the lanes interleaved at random
    heads = [[b for b in batches if b[0] in lane] for lane in lanes]
    while any(heads):
        lane = rnd.choice([h for h in heads if h])
        order.append(lane.pop(0))
    lane_of = {id(b): int(b[0] in lanes[1]) for b in batches}
    done: list[list[tuple[int, dict[str, Any]]]] = []
    expected = None
    while order:
        batch = order.pop(0)
        me, other = rnd.sample(steps, 2)
        if order and lane_of[id(order[0])] != lane_of[id(batch)] and rnd.random() < 0.5:
            inside = order.pop(0)  # the other lane's next batch, committed inside mine
            me[1].before_commit = lambda s=other[0], r=inside: run(s, r)
            done.append(inside)
        run(me[0], batch)
        me[1].before_commit = None
        done.append(batch)
        if rnd.random() < 0.2:  # a batch delivered again (nothing to commit)
            run(rnd.choice(steps)[0], rnd.choice(done))
        expected = view(cold(aws, window_table, prefix))
        for step, _ in steps:
            assert view(warm(step)) == expected
    assert expected is not None
    assert expected["max_time"] is not None
    caught = sum(c == ("query", "log") for _, calls in steps for c in calls.calls)
    commits = sum(calls.calls.count(("update_item", "commit")) for _, calls in steps)
    assert caught >= 5  # the catch-up was exercised, not only full reads
    held = int(head(aws, window_table, prefix)["n"]["N"])
    assert commits > held, (commits, held)  # and commits were lost (rebuilt after one)


class TestLanesOfOneProcess:
    def test_apply_one_at_a_time(self, aws, window_table):
        """Two lanes of one shard in two threads of one process (``shardline run
        --in-process``) share its step and store: the second waits for the first's commit
        (the per-shard lock), and both batches count with no commit lost. Without the lock
        the second applied on the state the first was applying (the store's cache of the
        shard is one object), and one of the two commits was lost (a conflict within one
        process: the lock's mutant fails here, 5 commit calls for 4 commits)."""
        prefix = f"t{uuid.uuid4().hex[:8]}:"
        step, calls = process(aws, window_table, prefix)
        run(step, [(1, doc("x", 0.0))])
        out: list[Any] = []
        second = threading.Thread(target=lambda: out.extend(run(step, [(3, doc("y", 2.0))])))

        def inside_first_commit() -> None:
            """The second lane starts; the first goes on once the second is either
            blocked before its batch (the lock) or is committing a batch of its own."""
            second.start()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                frame = sys._current_frames().get(second.ident or 0)
                held = step._locks("s0").locked()  # by the first lane
                if held and frame is not None and frame.f_code.co_name == "prepare":
                    return  # waiting for the shard's lock, in Window.prepare
                mine = [c for c, t in zip(calls.calls, calls.threads, strict=True)
                        if t == second.ident]  # fmt: skip
                if ("update_item", "commit") in mine:
                    return  # no lock: it applied on what the first one is applying
                time.sleep(0.001)  # poll (bounded by the deadline)
            pytest.fail("the second lane neither waited nor called")

        calls.before_commit = inside_first_commit
        out += run(step, [(2, doc("x", 1.0))])
        second.join(timeout=30)
        assert not second.is_alive()
        out += run(step, [(4, doc("x", 61.0))])
        assert sorted(out) == [("f/x/1970-01-01T00:00:00Z", 2), ("f/y/1970-01-01T00:00:00Z", 1)]
        commits = calls.calls.count(("update_item", "commit"))
        assert commits == int(head(aws, window_table, prefix)["n"]["N"])  # none lost: no conflict
