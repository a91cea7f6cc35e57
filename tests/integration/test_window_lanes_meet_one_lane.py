"""Review 9: lanes mode's quiet shards and reshards (slice S5) meeting shards the one-lane
protocol wrote (slice S4b's conversion), on the session's moto server. Both were written
in parallel; these are their paths through each other: a quiet close (a logged commit) of
a shard no lanes commit converted yet, and a lanes child's mark of a one-lane parent
while an old one-lane invocation (still running during the ``parallelization`` change)
closes that parent as quiet.

Steps on their own ``DynamoDBStore`` stand for processes; interleavings run one step's
batch inside a call of another's, in one thread (exact order, no sleeps)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from processors.chain import Chain, ChainResult, Step
from processors.lineage import StaticLineage
from processors.window import Window
from processors.window_store import DynamoDBStore
from stream.records import Record
from tests.integration.test_window_lanes_reshards import WINDOW_A, Client

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.integration


def step(
    aws: Callable[[str], Any],
    table: str,
    prefix: str,
    clock: list[float],
    *,
    lanes: bool,
    lineage: StaticLineage | None = None,
    aggregate: dict[str, Any] | None = None,
) -> tuple[Window, Client]:
    """A window step on its own store and client (a process): lanes mode
    (``parallelization`` 2) or the one-lane protocol; quiet shards after 300 s."""
    client = Client(aws("dynamodb"))
    store = DynamoDBStore(table, prefix, 0, 60, client=client, now=lambda: clock[0],
                          high_water=lanes)  # fmt: skip
    window = Window(key="user", size_s=60, field="ts", aggregate=aggregate or {"n": "count"},
                    function="f", store=store, quiet_s=300, now=lambda: clock[0],
                    lineage=lineage or StaticLineage(), late="late",
                    parallelization=2 if lanes else 1)  # fmt: skip
    return window, client


def deliver(window: Window, shard: str, docs: list[dict[str, Any]], seq: int) -> ChainResult:
    batch = [Record(orjson.dumps(d), d["user"], str(seq + i), shard_id=shard, index=i)
             for i, d in enumerate(docs)]  # fmt: skip
    return Chain([Step.of("w", window)]).run(batch)


def on(window: Window, shard: str, docs: list[tuple[str, float]], seq: int) -> list[Any]:
    """Records (user, ts) through the step: results as (window_id, n, shard), late ones
    as ("late", user); a failure fails the test."""
    out = deliver(window, shard, [{"user": u, "ts": t} for u, t in docs], seq)
    assert not out.failures, [f.error for f in out.failures]
    return [("late", r.json["user"]) if r.routes == ("late",) else
            (r.get("window_id"), r.get("n"), r.shard_id) for r in out.records]  # fmt: skip


def shard_item(aws: Callable[[str], Any], table: str, pk: str) -> dict[str, Any]:
    return aws("dynamodb").get_item(TableName=table, ConsistentRead=True,
                                    Key={"shard": {"S": pk},
                                         "window": {"S": "#shard"}})["Item"]  # fmt: skip


@pytest.fixture
def prefix() -> str:
    return f"r{uuid.uuid4().hex[:8]}:"


class TestAQuietCloseOfAOneLaneShard:
    def test_its_first_own_commit_converts_at_the_one_lane_applied(self, aws, window_table, prefix):
        """s0 (one lane) holds window a (x at 5) and its outbox (none yet); lanes-mode
        s1 closes it as quiet: a commit of s0 on ``rev`` (no ``n`` yet) that must leave
        ``applied`` and the outbox alone and set no ``legacy_applied``. s0's first lanes
        commit then converts it at the one-lane ``applied`` (1), and a lagging lane's
        redelivery of 1 is decided, not applied again or late."""
        clock = [10_000.0]
        s0_one, _ = step(aws, window_table, prefix, clock, lanes=False)
        assert on(s0_one, "s0", [("a", 5.0)], 1) == []
        s1, _ = step(aws, window_table, prefix, clock, lanes=True)
        assert on(s1, "s1", [("z", 20_000.0)], 1) == []
        clock[0] += 400
        assert on(s1, "s1", [("z", 20_001.0)], 2) == [(WINDOW_A, 1, "s1")]
        closed = shard_item(aws, window_table, prefix + "s0")
        assert closed["n"]["N"] == "1"
        assert closed["applied"]["S"] == '["1",0,[]]'
        assert "legacy_applied" not in closed
        s0, _ = step(aws, window_table, prefix, clock, lanes=True)
        assert on(s0, "s0", [("b", 20_000.0)], 2) == []
        converted = shard_item(aws, window_table, prefix + "s0")
        assert converted["legacy_applied"]["S"] == '["1",0,[]]'
        lagging, _ = step(aws, window_table, prefix, clock, lanes=True)
        assert on(lagging, "s0", [("a", 5.0)], 1) == []  # decided: nothing, not late

    def test_an_outbox_in_parts_stays_readable(self, aws, window_table, prefix):
        """s0 (one lane) closed 14 windows at 15 (about 420 KB of results: its outbox in
        parts, named by its ``rev``) and holds y's window open. Lanes-mode s1 closes y's
        window as quiet: a commit that writes a new ``rev``. The parts must stay
        readable (the one-lane fence and mark keep their name in ``parts_rev``): a
        lagging lane of s0 redelivers the closer, cold, and gets the same results. On
        07339cd the parts were looked up under the new ``rev``: ``KeyError``, the shard
        unreadable (a ``WindowStateError`` on every batch of s0, for ever)."""
        clock = [10_000.0]
        aggregate = {"n": "count", "page": {"last": "page"}}
        s0_one, _ = step(aws, window_table, prefix, clock, lanes=False, aggregate=aggregate)
        docs = [{"user": f"u{i}", "ts": 5, "page": f"{i}" * 30_000} for i in range(14)]
        docs.append({"user": "y", "ts": 61, "page": "/"})  # closes the 14
        closing = deliver(s0_one, "s0", docs, 1)
        assert not closing.failures
        assert len(closing.records) == 14
        assert "outbox_parts" in shard_item(aws, window_table, prefix + "s0")
        s1, _ = step(aws, window_table, prefix, clock, lanes=True, aggregate=aggregate)
        assert deliver(s1, "s1", [{"user": "z", "ts": 20_000, "page": "/"}], 1).records == []
        clock[0] += 400
        quiet = deliver(s1, "s1", [{"user": "z", "ts": 20_001, "page": "/"}], 2)
        assert not quiet.failures
        assert [r.get("key") for r in quiet.records] == ["y"]  # s0's y closed by s1
        assert shard_item(aws, window_table, prefix + "s0")["n"]["N"] == "1"
        lagging, _ = step(aws, window_table, prefix, clock, lanes=True, aggregate=aggregate)
        again = deliver(lagging, "s0", docs, 1)
        assert not again.failures, [f.error for f in again.failures]
        assert [r.json for r in again.records] == [r.json for r in closing.records]


class TestALanesChildOfAOneLaneParent:
    def test_an_old_one_lane_close_between_its_read_and_its_mark(self, aws, window_table, prefix):
        """Parent p (one lane) holds window a. Lanes mode goes on; an old one-lane
        invocation of s1 still runs. Child c's first batch reads p (a open; p has no
        ``n``: seen 0) and, before c marks p, the one-lane s1 closes p's a as quiet (a
        ``PutItem`` of p's item on its ``rev``: still no ``n``). The mark must fail (p
        changed since c read it): c reads again, finds a closed, and its record of a is
        late. On 07339cd the mark was conditional only on p having no ``n``: it passed,
        c claimed the closed a and closed it again later (a came out twice)."""
        clock = [10_000.0]
        lineage = StaticLineage({"c": ("p",)})
        parent, _ = step(aws, window_table, prefix, clock, lanes=False, lineage=lineage)
        assert on(parent, "p", [("a", 5.0)], 1) == []
        s1_old, _ = step(aws, window_table, prefix, clock, lanes=False, lineage=lineage)
        assert on(s1_old, "s1", [("z", 20_000.0)], 1) == []
        clock[0] += 400
        child, child_client = step(aws, window_table, prefix, clock, lanes=True, lineage=lineage)
        closing: list[Any] = []
        child_client.before_mark = lambda: closing.extend(on(s1_old, "s1", [("z", 20_001.0)], 2))
        out = on(child, "c", [("a", 30.0)], 100)
        assert closing == [(WINDOW_A, 1, "s1")]
        out += on(child, "c", [("x", 20_000.0)], 101)
        assert out == [("late", "a")]

    def test_its_mark_inside_an_old_one_lane_close_of_the_parent(self, aws, window_table, prefix):
        """The other order: the old one-lane s1 reads p (no ``children``) and, inside
        its transaction, child c has its first batch (reads p, marks it, claims a). The
        one-lane close is conditional on p's ``rev`` only, so the mark must move it (as
        the one-lane mark does, and every lanes commit): s1's batch fails, is delivered
        again and leaves the marked p to c. a comes out once, from c. On 07339cd the
        mark moved nothing: s1's ``PutItem`` replaced p's item (its ``children`` gone)
        and closed a, which c closed again later."""
        clock = [10_000.0]
        lineage = StaticLineage({"c": ("p",)})
        parent, _ = step(aws, window_table, prefix, clock, lanes=False, lineage=lineage)
        assert on(parent, "p", [("a", 5.0)], 1) == []
        s1_old, s1_client = step(aws, window_table, prefix, clock, lanes=False, lineage=lineage)
        assert on(s1_old, "s1", [("z", 20_000.0)], 1) == []
        clock[0] += 400
        child, _ = step(aws, window_table, prefix, clock, lanes=True, lineage=lineage)
        inside: list[Any] = []
        s1_client.before_commit = lambda: inside.extend(on(child, "c", [("a", 30.0)], 100))
        first = deliver(s1_old, "s1", [{"user": "z", "ts": 20_001.0}], 2)
        assert inside == []
        out = [(r.get("window_id"), r.get("n"), r.shard_id) for r in first.records]
        if first.failures:  # the close lost its condition: delivered again
            assert [f.retryable for f in first.failures] == [True]
            out = on(s1_old, "s1", [("z", 20_001.0)], 2)
        assert "c" in shard_item(aws, window_table, prefix + "p").get("children", {}).get("SS", [])
        out += on(child, "c", [("x", 20_000.0)], 101)
        assert sorted(out) == [(WINDOW_A, 2, "c")]
