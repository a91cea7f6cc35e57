"""A scheduled flush's tick across reshards on the session moto server (issue 16, slice S4
of ``flush-design.md``, §5 (b) and (c)): when a split's or merge's children go quiet, the
windows they inherited from their drained parents close by a tick, each exactly once, and
equal what one unresharded shard makes of the same records. Each test runs with one lane
and in lanes mode, for tumbling and session windows.

The parent a child marked is skipped by the tick (``children``); a child that never had a
batch has no shard item, so no tick reads it. The child that committed closes the
parent's windows nobody claimed, with the other heirs' floors at the tick's clock (a heir
that never had a batch counts as of the parent's drain), claiming each from its parent
before its commit: a sibling that reads the parent later finds them claimed (closed).
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.chain import Chain, Step
from processors.lineage import LineageError, StaticLineage
from processors.session import SessionWindow, session_end_of
from processors.window import Window
from processors.window_store import DynamoDBStore, TickIncomplete
from stream.records import Record

if TYPE_CHECKING:
    from collections.abc import Callable

    from processors.window_tick import Emission

pytestmark = pytest.mark.integration

LANES = pytest.mark.parametrize("lanes", [False, True], ids=["one-lane", "lanes"])
KINDS = pytest.mark.parametrize("kind", ["window", "session"])
START = 10_000.0  # the clock at the first batch
ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/s"
#: a key's window open on the parent (a and b), then a record of a on c1 (claims a's)
PARENT = [{"user": "a", "ts": 5}, {"user": "b", "ts": 6}, {"user": "a", "ts": 8}]
CHILD = [{"user": "a", "ts": 20}, {"user": "c", "ts": 25}]


class Setup:
    """Steps (each a cold start) on one test's partitions, one clock, one lineage."""

    def __init__(self, aws: Any, table: str, lineage: dict[str, tuple[str, ...]], *,
                 lanes: bool, kind: str, slide_s: int | None = None) -> None:  # fmt: skip
        self.table, self.lanes, self.kind, self.slide_s = table, lanes, kind, slide_s
        self.prefix, self.client, self.clock = uuid.uuid4().hex, aws("dynamodb"), [START]
        self.lineage = StaticLineage(lineage)

    def step(self, client: Any = None) -> Window | SessionWindow:
        """A new step on the table (through ``client``, default the test's), ``quiet_s``
        300, late records to the ``late`` route."""
        now = lambda: self.clock[0]  # noqa: E731
        client = client or self.client
        par = 2 if self.lanes else 1
        if self.kind == "session":
            store = DynamoDBStore(self.table, self.prefix, 0, 30, client=client, now=now,
                                  end_of=session_end_of(30), high_water=self.lanes)  # fmt: skip
            return SessionWindow(key="user", gap_s=30, field="ts", aggregate={"n": "count"},
                                 function="f", store=store, quiet_s=300, now=now,
                                 lineage=self.lineage, late="late",
                                 parallelization=par)  # fmt: skip
        store = DynamoDBStore(self.table, self.prefix, 0, 60, client=client, now=now,
                              high_water=self.lanes)  # fmt: skip
        return Window(key="user", size_s=60, slide_s=self.slide_s, field="ts",
                      aggregate={"n": "count"}, function="f", store=store, quiet_s=300,
                      now=now, lineage=self.lineage, late="late",
                      parallelization=par)  # fmt: skip

    def on(self, shard: str, docs: list[dict[str, Any]], first_seq: int) -> list[Any]:
        """A batch of ``docs`` on ``shard``: its results, a late record as ("late", user)."""
        batch = [Record(orjson.dumps(d), d["user"], str(first_seq + i), shard_id=shard,
                        index=i, event_source_arn=ARN)
                 for i, d in enumerate(docs)]  # fmt: skip
        out = Chain([Step.of("w", self.step())]).run(batch)
        assert not out.failures, out.failures
        return [("late", r.json["user"]) if r.routes == ("late",) else r.as_dict()
                for r in out.records]  # fmt: skip

    def ticks(self, count: int = 3, client: Any = None) -> list[Emission]:
        """``count`` ticks (each a cold start) at the clock, each acking what it emitted:
        every emission, in order."""
        out: list[Emission] = []
        for _ in range(count):
            ticker = self.step(client)
            emitted = ticker.tick(arn=ARN)
            for emission in emitted:
                ticker.ack(emission)
            out += emitted
        return out


class BeforeClaim:
    """The real client; before its first claim of a parent's window (``owner`` set),
    ``hook`` runs (another invocation)."""

    def __init__(self, client: Any, hook: Callable[[], Any]) -> None:
        self.client = client
        self.hook: Callable[[], Any] | None = hook

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def update_item(self, **request: Any) -> Any:
        if self.hook is not None and "#o = :o0" in request.get("UpdateExpression", ""):
            hook, self.hook = self.hook, None
            hook()
        return self.client.update_item(**request)


def reference(
    aws: Any, table: str, kind: str, lanes: bool, docs: list[dict[str, Any]]
) -> list[tuple[str, int]]:
    """What one unresharded shard makes of ``docs`` (one batch), closed by a tick."""
    ref = Setup(aws, table, {}, lanes=lanes, kind=kind)
    assert ref.on("r", docs, 1) == []
    ref.clock[0] += 301
    return sorted(closed(ref.ticks()))


def closed(emissions: list[Emission]) -> list[tuple[str, int]]:
    return [(r["window_id"], r["n"]) for e in emissions for r in e.results]


def once(found: list[tuple[str, int]]) -> None:
    counts = Counter(window_id for window_id, _ in found)
    assert all(n == 1 for n in counts.values()), counts


class TestQuietChildren:
    @LANES
    @KINDS
    def test_a_split_whose_child_had_a_batch_closes_the_parent_s_windows(
        self, aws, window_table, lanes, kind
    ):
        """p holds a and b; p splits into c1 and c2; c1 adds to a (claims it) and opens
        c; c2 never has a batch. 301 s after c1's batch a tick closes a, b (p's, nobody
        claimed it) and c once, equal to the reference; p is skipped (marked). A later
        record for b on c1 is late, and on c2's first batch too (tumbling windows)."""
        setup = Setup(aws, window_table, {"c1": ("p",), "c2": ("p",)}, lanes=lanes, kind=kind)
        assert setup.on("p", PARENT, 1) == []
        setup.clock[0] += 10
        assert setup.on("c1", CHILD, 100) == []
        setup.clock[0] += 299
        assert setup.ticks() == []  # c1 is not quiet yet
        setup.clock[0] += 2
        emitted = setup.ticks()
        assert {e.shard_id for e in emitted} == {"c1"}
        found = closed(emitted)
        once(found)
        assert sorted(found) == reference(aws, window_table, kind, lanes, PARENT + CHILD)
        setup.clock[0] += 600
        assert setup.ticks() == []
        assert setup.on("c1", [{"user": "b", "ts": 9}], 102) == [("late", "b")]
        # c2's first batch finds b claimed by c1: closed for it (a tumbling window). A
        # session has no fixed key: c2's watermark is its parent's drain, so ts 10 opens a
        # new session there, as after a batch of c1 closed b (not a flush's doing)
        late = [("late", "b")] if kind == "window" else []
        assert setup.on("c2", [{"user": "b", "ts": 10}], 200) == late

    @LANES
    @KINDS
    def test_a_split_no_child_of_which_had_a_batch_closes_by_the_parent(
        self, aws, window_table, lanes, kind
    ):
        """p holds a and b and splits; no child has a batch. A tick after quiet_s closes
        them on p (not marked: today's rule), once; a child's later record is late."""
        setup = Setup(aws, window_table, {"c1": ("p",), "c2": ("p",)}, lanes=lanes, kind=kind)
        assert setup.on("p", PARENT, 1) == []
        setup.clock[0] += 301
        emitted = setup.ticks()
        assert {e.shard_id for e in emitted} == {"p"}
        found = closed(emitted)
        once(found)
        assert sorted(found) == reference(aws, window_table, kind, lanes, PARENT)
        assert setup.on("c2", [{"user": "a", "ts": 9}], 200) == [("late", "a")]
        setup.clock[0] += 600
        assert setup.ticks() == []

    @LANES
    @KINDS
    def test_a_merge_whose_child_went_quiet_closes_both_parents_windows(
        self, aws, window_table, lanes, kind
    ):
        """p1 and p2 both hold a (one window across the merge) and p2 holds b; they merge
        into c, which opens c and goes quiet. A tick closes a (both parents' records), b
        and c once, equal to the reference."""
        setup = Setup(aws, window_table, {"c": ("p1", "p2")}, lanes=lanes, kind=kind)
        first, second = PARENT[:1], PARENT[1:]
        assert setup.on("p1", first, 1) == []
        assert setup.on("p2", second, 1) == []
        setup.clock[0] += 10
        assert setup.on("c", CHILD[1:], 100) == []
        setup.clock[0] += 301
        emitted = setup.ticks()
        assert {e.shard_id for e in emitted} == {"c"}
        found = closed(emitted)
        once(found)
        assert sorted(found) == reference(aws, window_table, kind, lanes, PARENT + CHILD[1:])
        assert setup.on("c", [{"user": "a", "ts": 9}], 102) == [("late", "a")]

    @LANES
    @KINDS
    def test_both_children_of_a_split_quiet_close_each_window_once(
        self, aws, window_table, lanes, kind
    ):
        """p holds a and b; both children had a batch (c1 adds to a, c2 opens d), so both
        hold b, which nobody claimed. Ticks close every window once: the first child's
        tick claims b, the other finds it claimed."""
        setup = Setup(aws, window_table, {"c1": ("p",), "c2": ("p",)}, lanes=lanes, kind=kind)
        assert setup.on("p", PARENT, 1) == []
        setup.clock[0] += 10
        assert setup.on("c1", CHILD[:1], 100) == []
        assert setup.on("c2", [{"user": "d", "ts": 30}], 200) == []
        setup.clock[0] += 301
        emitted = setup.ticks()
        found = closed(emitted)
        once(found)
        docs = [*PARENT, *CHILD[:1], {"user": "d", "ts": 30}]
        assert sorted(found) == reference(aws, window_table, kind, lanes, docs)
        setup.clock[0] += 600
        assert setup.ticks() == []

    @LANES
    @KINDS
    def test_an_inherited_window_waits_for_a_sibling_that_is_not_quiet(
        self, aws, window_table, lanes, kind
    ):
        """c1 is quiet; c2 had a batch 10 s before the tick, its watermark (35) before
        b's end: b (p's, both hold it) may still take c2's records, so the tick keeps it
        (c1's own windows close: c2's batch closed them already, today's rule). Once c2
        is quiet too, a tick closes b, once; all equal the reference."""
        setup = Setup(aws, window_table, {"c1": ("p",), "c2": ("p",)}, lanes=lanes, kind=kind)
        assert setup.on("p", PARENT, 1) == []
        setup.clock[0] += 10
        assert setup.on("c1", CHILD[:1], 100) == []
        assert setup.on("c2", [{"user": "d", "ts": 30}], 200) == []
        setup.clock[0] += 291
        found = [(r["window_id"], r["n"]) for r in setup.on("c2", [{"user": "d", "ts": 35}], 201)]
        setup.clock[0] += 10
        held = closed(setup.ticks())
        assert not [w for w, _ in held if "/b/" in w]  # c2 may still add to b
        setup.clock[0] += 300
        later = closed(setup.ticks())
        assert [w for w, _ in later if "/b/" in w]
        found += held + later
        once(found)
        docs = [*PARENT, *CHILD[:1], {"user": "d", "ts": 30}, {"user": "d", "ts": 35}]
        assert sorted(found) == reference(aws, window_table, kind, lanes, docs)


class Unlisted(StaticLineage):
    """A lineage whose shard list cannot be read (``ListShards`` failing)."""

    def children(self, arn: str, shard_id: str) -> tuple[str, ...]:
        raise LineageError("ListShards failed (injected)")


class TestALineageFailure:
    @LANES
    def test_the_tick_keeps_the_child_s_windows_and_closes_the_other_shards(
        self, aws, window_table, lanes
    ):
        """c1's parents cannot be listed: the tick still closes c1's own windows and s9's,
        then raises TickIncomplete (LineageError its cause; the flush sends what it closed,
        then fails: its errors alarm); the next tick, with the list back, closes p's window b
        on c1: each once, equal to the reference."""
        setup = Setup(aws, window_table, {"c1": ("p",), "c2": ("p",)}, lanes=lanes, kind="window")
        assert setup.on("p", PARENT, 1) == []
        setup.clock[0] += 10
        assert setup.on("c1", CHILD, 100) == []
        assert setup.on("s9", [{"user": "z", "ts": 1}], 1) == []
        setup.clock[0] += 301
        lineage, setup.lineage = setup.lineage, Unlisted({"c1": ("p",), "c2": ("p",)})
        ticker = setup.step()
        with pytest.raises(TickIncomplete, match="injected") as raised:
            ticker.tick(arn=ARN)
        assert isinstance(raised.value.cause, LineageError)
        # what it closed rides on the error, for the flush to send before it fails
        assert {e.shard_id for e in raised.value.emissions} == {"c1", "s9"}
        setup.lineage = lineage
        setup.clock[0] += 60  # c1's watermark is at the last cutoff now: a later one
        emitted = setup.ticks()
        found = closed(emitted)
        once(found)
        assert {e.shard_id for e in emitted} == {"c1", "s9"}
        docs = [*PARENT, *CHILD, {"user": "z", "ts": 1}]
        assert sorted(found) == reference(aws, window_table, "window", lanes, docs)


class TestManyInherited:
    @LANES
    def test_a_child_inheriting_more_than_one_transaction_holds(self, aws, window_table, lanes):
        """p holds 120 keys' windows; c1 had a batch (key c). With one lane a tick can write
        99 closed windows with the child's item, so it closes c1's own window and keeps
        p's (as before the flush: c1's next record closes them), once each; in lanes mode
        (its log) it closes all 121 at once."""
        setup = Setup(aws, window_table, {"c1": ("p",), "c2": ("p",)}, lanes=lanes, kind="window")
        assert setup.on("p", [{"user": f"k{i}", "ts": 5} for i in range(120)], 1) == []
        setup.clock[0] += 10
        assert setup.on("c1", CHILD[1:], 1000) == []
        setup.clock[0] += 301
        found = closed(setup.ticks())
        once(found)
        if lanes:
            assert len(found) == 121
            return
        assert found == [("f/c/1970-01-01T00:00:00Z", 1)]
        out = setup.on("c1", [{"user": "c", "ts": 10_000}], 1001)  # closes them
        found += [(r["window_id"], r["n"]) for r in out]
        once(found)
        assert len(found) == 121


class TestAChildStillInheriting:
    @LANES
    def test_a_window_a_tick_closed_is_not_inherited_again_by_a_cold_start(
        self, aws, window_table, lanes
    ):
        """Hopping windows (60 s, sliding 30 s): p's record of b opens [10020, 10080) and
        [10050, 10110); c1 has a batch and goes quiet. A tick whose cutoff is 10090 closes
        the first (claimed from p) while c1 still inherits the second, so its shard item
        keeps its ancestors and every cold start reads p again: there the first is c1's
        own claim, and only the closed item in c1's partition says it is done. Ticks at
        that clock close it once; a later cutoff closes the second; both equal the
        reference."""
        records = [{"user": "b", "ts": 10_050}]
        own = [{"user": "c", "ts": 10_051}]
        found: list[tuple[str, int]] = []
        ref = Setup(aws, window_table, {}, lanes=lanes, kind="window", slide_s=30)
        setup = Setup(aws, window_table, {"c1": ("p",), "c2": ("p",)}, lanes=lanes, kind="window",
                      slide_s=30)  # fmt: skip
        assert ref.on("r", records + own, 1) == []
        assert setup.on("p", records, 1) == []
        setup.clock[0] += 10
        ref.clock[0] += 10
        assert setup.on("c1", own, 100) == []
        expected: list[tuple[str, int]] = []
        for clock in (10_390.0, 10_390.0, 10_420.0, 10_420.0):
            setup.clock[0] = ref.clock[0] = clock
            emitted = setup.ticks(1)
            assert {e.shard_id for e in emitted} <= {"c1"}
            found += closed(emitted)
            expected += closed(ref.ticks(1))
        once(found)
        assert ("f/b/1970-01-01T02:47:00Z", 1) in found  # [10020, 10080), the first tick's
        assert sorted(found) == sorted(expected)
        assert len(found) == 4  # b's two windows, c's two


class Queries:
    """The real client, counting each ``Query`` by the partition it reads (the test's
    prefix cut off)."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client, self.prefix, self.by_shard = client, prefix, Counter[str]()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def query(self, **request: Any) -> Any:
        pk = request["ExpressionAttributeValues"][":s"]["S"]
        self.by_shard[pk.removeprefix(self.prefix)] += 1
        return self.client.query(**request)


class TestTheCostOfAChildStillInheriting:
    @pytest.mark.xfail(
        strict=True,
        reason="review 15: a quiet child whose shard item keeps ``ancestors`` while nothing "
        "of its parents is left to it (all claimed by a sibling) and nothing of its own is "
        "due is read, with its parent, at every tick while it stays quiet: a tick commits "
        "only a close, and only a commit drops ``ancestors``",
    )
    @LANES
    def test_a_quiet_child_left_with_its_sibling_s_claims_only_is_not_read_at_every_tick(
        self, aws, window_table, lanes
    ):
        """p holds a and b and splits; c1 adds to a, c2 to b (claims it: foreign to c1,
        whose item still names p). Once c1 is quiet, c2's next batch closes c1's a (the
        cross-shard rule). c1 then has no window and nothing to inherit, yet its item keeps
        ``ancestors``, which makes every tick read c1's partition and p's (one ``Query``
        each) and close nothing: without end while c1 stays quiet."""
        setup = Setup(aws, window_table, {"c1": ("p",), "c2": ("p",)}, lanes=lanes, kind="window")
        assert setup.on("p", PARENT, 1) == []
        setup.clock[0] += 10
        assert setup.on("c1", [{"user": "a", "ts": 20}], 100) == []
        assert setup.on("c2", [{"user": "b", "ts": 31}], 200) == []
        setup.clock[0] += 301
        out = setup.on("c2", [{"user": "d", "ts": 400}], 201)  # closes b (c2's) and c1's a
        assert sorted((r["window_id"], r["n"]) for r in out) == [
            ("f/a/1970-01-01T00:00:00Z", 3), ("f/b/1970-01-01T00:00:00Z", 2)]  # fmt: skip
        setup.clock[0] += 290  # c2 is not quiet yet: no tick closes anything
        counting = Queries(setup.client, setup.prefix)
        assert setup.ticks(3, client=counting) == []
        assert counting.by_shard["p"] <= 1, counting.by_shard


class TestRaces:
    @LANES
    @KINDS
    def test_a_sibling_s_claim_inside_the_tick_makes_the_child_skip_once(
        self, aws, window_table, lanes, kind
    ):
        """c1 and c2 both hold b (p's). c1's tick has read c1 and closes b; before its
        claim, a batch of c2 adds to b (claims it). c1's claim loses: c1 is skipped, and
        the next tick reads it again (b another's). Every window once, equal to the
        reference; b with c2's record."""
        setup = Setup(aws, window_table, {"c1": ("p",), "c2": ("p",)}, lanes=lanes, kind=kind)
        assert setup.on("p", PARENT, 1) == []
        setup.clock[0] += 10
        assert setup.on("c1", CHILD[:1], 100) == []
        assert setup.on("c2", [{"user": "d", "ts": 30}], 200) == []
        setup.clock[0] += 301
        sibling = [{"user": "b", "ts": 31}]  # past c2's watermark (30): not late
        raced: list[Any] = []  # c2's batch closes quiet c1's own windows (today's rule)
        racing = BeforeClaim(setup.client, lambda: raced.extend(setup.on("c2", sibling, 201)))
        first = setup.ticks(1, client=racing)
        assert racing.hook is None  # the race ran
        assert "c1" not in {e.shard_id for e in first}  # its claim lost
        setup.clock[0] += 301  # c2 had a batch: quiet again
        found = [(r["window_id"], r["n"]) for r in raced] + closed(first + setup.ticks())
        once(found)
        docs = [*PARENT, *CHILD[:1], {"user": "d", "ts": 30}, *sibling]
        assert sorted(found) == reference(aws, window_table, kind, lanes, docs)


#: who may hold which keys (each key on one shard of a generation, as the README asks;
#: a key on both parents of a merge: the directed test, and the known gap below)
_SPLIT = {"p": "abcd", "c1": "ac", "c2": "bd"}
_MERGE = {"p1": "ab", "p2": "cd", "c": "abcd"}


@st.composite
def _events(draw: Any) -> tuple[str, list[tuple[str, Any]]]:
    """A split or merge, records on the parents, then children's batches, ticks and clock
    steps interleaved (``("batch", (shard, docs))``, ``("tick", None)``, ``("wait", s)``)."""
    shape = draw(st.sampled_from(["split", "merge"]))
    keys = _SPLIT if shape == "split" else _MERGE
    parents = ["p"] if shape == "split" else ["p1", "p2"]
    children = ["c1", "c2"] if shape == "split" else ["c"]

    def batch(shard: str) -> Any:
        doc = st.fixed_dictionaries(
            {"user": st.sampled_from(keys[shard]), "ts": st.integers(0, 200)}
        )
        return st.lists(doc, min_size=1, max_size=4).map(lambda docs: (shard, docs))

    events: list[tuple[str, Any]] = [("batch", draw(batch(p))) for p in parents]
    steps = st.one_of(
        st.sampled_from(children).flatmap(batch).map(lambda b: ("batch", b)),
        st.just(("tick", None)),
        st.sampled_from([10, 150, 301]).map(lambda s: ("wait", s)),
    )
    events += draw(st.lists(steps, max_size=10))
    return shape, events


class TestProperty:
    @LANES
    @settings(deadline=None, max_examples=12)
    @given(scenario=_events())
    def test_every_record_counts_once_with_ticks_between_a_reshard_s_batches(
        self, aws, window_table, lanes, scenario
    ):
        """Any split or merge, with ticks between the children's batches and at the end
        (far later, every shard quiet): every window comes out once, and every record is
        either late or counted in exactly one result (tumbling windows of 60 s)."""
        shape, events = scenario
        lineage = {"c1": ("p",), "c2": ("p",)} if shape == "split" else {"c": ("p1", "p2")}
        setup = Setup(aws, window_table, lineage, lanes=lanes, kind="window")
        seqs: Counter[str] = Counter()
        found: list[tuple[str, int]] = []
        late = records = 0
        for kind, arg in [*events, ("wait", 10_000), ("tick", None), ("tick", None)]:
            if kind == "wait":
                setup.clock[0] += arg
            elif kind == "tick":
                found += closed(setup.ticks(1))
            else:
                shard, docs = arg
                out = setup.on(shard, docs, 1000 * (1 + len(seqs)) + seqs[shard])
                seqs[shard] += len(docs)
                records += len(docs)
                late += sum(1 for r in out if isinstance(r, tuple))
                found += [(r["window_id"], r["n"]) for r in out if isinstance(r, dict)]
        once(found)
        assert sum(n for _, n in found) + late == records


@pytest.mark.xfail(
    strict=True,
    reason="known gap, not the flush's alone: a merge whose child never had a batch leaves "
    "each parent unmarked, so each closes its part of a key's window on its own (a tick, "
    "as the cross-shard rule already does): one window_id twice, each with a part",
)
@LANES
def test_a_merge_no_child_of_which_had_a_batch_closes_a_shared_key_s_window_once(
    aws, window_table, lanes
):
    """p1 and p2 both hold a's window; c never has a batch. A tick closes it on each
    parent: the result should be one window with both records."""
    setup = Setup(aws, window_table, {"c": ("p1", "p2")}, lanes=lanes, kind="window")
    assert setup.on("p1", [{"user": "a", "ts": 0}], 1) == []
    assert setup.on("p2", [{"user": "a", "ts": 1}], 1) == []
    setup.clock[0] += 301
    assert closed(setup.ticks()) == [("f/a/1970-01-01T00:00:00Z", 2)]
