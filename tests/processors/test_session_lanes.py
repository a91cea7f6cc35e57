"""Session windows with lanes (``parallelization`` > 1, issue 16, slice S6), on the memory
store (which keeps the high-water): a key's high-water per partition key is the greatest of
its open sessions' ``hw`` and the key's own (closed sessions, late and refused records,
:attr:`~processors.window_store.ShardState.key_hw`); a record at or below it was decided
already and yields the outcome the store kept for it (late included), or nothing. Lanes are
batches of disjoint partition keys with interleaved sequence numbers; processes are
:meth:`MemoryStore.process` stores of one memory store (as in ``test_window_lanes``)."""

from __future__ import annotations

from functools import partial
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.lineage import StaticLineage
from processors.session import SessionWindow
from processors.window_store import MemoryStore
from stream.records import Record
from tests.processors.test_session import _reference
from tests.processors.test_window import AGGREGATE
from tests.processors.test_window_lanes import Interleaved

SHARD = "shardId-0"


def _rec(user: str, seq: int, ts: float, amount: int = 1) -> Record:
    doc = {"user": user, "ts": ts, "amount": amount, "product": "p", "page": "/a"}
    return Record(orjson.dumps(doc), user, str(seq), shard_id=SHARD)  # partition key = user


def _session(store: Any, **options: Any) -> SessionWindow:
    args = {"key": "user", "gap_s": 100, "field": "ts", "allowed_lateness_s": 10,
            "aggregate": {"n": "count", "total": {"sum": "amount"}}, "late": "late",
            "function": "fn", "store": store, "lineage": StaticLineage(), "parallelization": 2,
            **options}  # fmt: skip
    return SessionWindow(**args)


def _apply(step: SessionWindow, batch: list[Record]) -> list[Any]:
    """The step as the chain runs it: ``prepare``, then each record's outcome."""
    step.prepare(batch)
    return [step(rec) for rec in batch]


def _late(outcomes: list[Any]) -> list[bool]:
    return [isinstance(o, Record) and o.routes == ("late",) for o in outcomes]


def _results(outcomes: list[Any]) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for got in outcomes:
        for rec in got if isinstance(got, list) else [got] if got is not None else []:
            if rec.get("window_id") is not None:
                out[rec.get("window_id")] = (rec.get("n"), rec.get("total"))
    return out


def test_a_late_record_inside_a_session_a_later_record_extended_is_late_again_once() -> None:
    """The trap of the design (§5.1 step 3): lane A's session of ``a`` opens at 1000; lane
    B's record moves the watermark to 1040; A's record at 1020 (position 3) is late, though
    inside the session, which A's next record (position 4) extends. The late record's sink
    write fails: Lambda delivers A's batch again from it (3, 4), after lane B committed a
    batch on another process (so no process's batch outbox holds position 3 any more). The
    key's high-water (position 4, the open session's) says 3 was decided: it must be late
    again, from the outcome the commit kept (not "applied already, nothing"), and never
    added to the session."""
    store = MemoryStore(sized=False)
    one, two = _session(store.process()), _session(store.process())
    assert _apply(one, [_rec("a", 1, 1000, 1)]) == [None]
    assert _apply(two, [_rec("b", 2, 1050, 10)]) == [None]  # watermark 1040
    first = _apply(one, [_rec("a", 3, 1020, 100), _rec("a", 4, 1080, 1000)])
    assert _late(first) == [True, False]
    assert _apply(two, [_rec("b", 5, 1075, 20)]) == [None]  # lane B goes on meanwhile
    again = _apply(two, [_rec("a", 3, 1020, 100), _rec("a", 4, 1080, 1000)])  # redelivered
    assert _late(again) == [True, False]
    again = _apply(one, [_rec("a", 3, 1020, 100), _rec("a", 4, 1080, 1000)])  # and on one
    assert _late(again) == [True, False]
    closer = _apply(two, [_rec("b", 6, 1400, 40)])  # closes both keys' sessions
    assert _results(closer) == {
        "fn/a/1970-01-01T00:16:40Z": (2, 1001),  # 1 and 4: the late record in neither
        "fn/b/1970-01-01T00:17:30Z": (2, 30),
    }


def test_a_lagging_lane_s_records_before_another_lane_s_are_applied_not_skipped() -> None:
    """Positions 1, 3, 5 (lane B) after 2, 4, 6 (lane A) committed: new, not redeliveries
    (the one-lane rule, at or before ``applied``, skipped them)."""
    step = _session(MemoryStore(sized=False))
    _apply(step, [_rec("a", 2, 1000), _rec("a", 4, 1001), _rec("a", 6, 1002)])
    _apply(step, [_rec("b", 1, 1000), _rec("b", 3, 1001), _rec("b", 5, 1002)])
    _apply(step, [_rec("b", 1, 1000), _rec("b", 3, 1001)])  # redelivered: nothing again
    closer = _apply(step, [_rec("a", 8, 2000)])
    assert _results(closer) == {
        "fn/a/1970-01-01T00:16:40Z": (3, 3),
        "fn/b/1970-01-01T00:16:40Z": (3, 3),
    }


def test_a_record_of_a_session_that_closed_since_is_decided_not_late() -> None:
    """A record applied to a session that closed after it yields nothing on redelivery
    (the closed session's high-water went to its key's): without it the record, behind
    the watermark, was sent late."""
    step = _session(MemoryStore(sized=False))
    _apply(step, [_rec("a", 2, 1000), _rec("a", 4, 1001)])
    closer = _apply(step, [_rec("b", 5, 2000)])
    assert _results(closer) == {"fn/a/1970-01-01T00:16:40Z": (2, 2)}
    assert _late(_apply(step, [_rec("a", 2, 1000), _rec("a", 4, 1001)])) == [False, False]
    assert step.late == 0


def test_a_merged_session_keeps_each_partition_key_s_high_water() -> None:
    """Key ``a`` comes with two partition keys (two lanes): ``a.p``'s record opens a
    session at 1000, ``a.q``'s one at 1105; ``a.q``'s next (1099) bridges them. The merged
    session's high-water keeps ``a.p``'s mark beside ``a.q``'s: ``a.p``'s record delivered
    again is decided, not counted twice."""
    step = _session(MemoryStore(sized=False))

    def rec(pk: str, seq: int, ts: float) -> Record:
        doc = {"user": "a", "ts": ts, "amount": 1, "product": "p", "page": "/a"}
        return Record(orjson.dumps(doc), pk, str(seq), shard_id=SHARD)

    _apply(step, [rec("a.p", 1, 1000)])
    _apply(step, [rec("a.q", 2, 1105), rec("a.q", 3, 1099)])  # bridges: one session
    assert _late(_apply(step, [rec("a.p", 1, 1000)])) == [False]  # redelivered
    closer = _apply(step, [_rec("b", 4, 2000)])
    assert _results(closer) == {"fn/a/1970-01-01T00:16:40Z": (3, 3)}


# -- the property: lanes in any interleaving, restarts, twins; equal to one pass -------------


@st.composite
def _lanes_scenario(draw: st.DrawFn) -> dict[str, Any]:
    """One shard's records (partition key = session key, event times out of order, some
    beyond the lateness, sessions that merge), each key in one of 1-3 lanes, and a
    schedule as ``test_window_lanes``' (restarts, twins after or at once, another lane's
    batch committing between this one's read and its commit)."""
    gap = draw(st.sampled_from([5, 10, 20]))
    lateness = draw(st.integers(0, gap))
    keys = [f"k{i}" for i in range(draw(st.integers(1, 5)))]
    lanes = draw(st.integers(1, 3))
    # a key comes with one or two partition keys (each in its lane): a merged session's
    # high-water is then the greatest of its parts' per partition key
    pks = [f"{key}.{i}" for key in keys for i in range(draw(st.integers(1, 2)))]
    lane_of = {pk: draw(st.integers(0, lanes - 1)) for pk in pks}
    clock = 0
    docs = []
    for _ in range(draw(st.integers(0, 40))):
        clock += draw(st.one_of(st.integers(0, 3), st.integers(0, 3 * gap)))
        pk = draw(st.sampled_from(pks))
        docs.append({
            "pk": pk,
            "user": pk.split(".")[0],
            "ts": max(0, clock - draw(st.integers(0, lateness + gap))),  # some beyond lateness
            "amount": draw(st.integers(-5, 50)),
            "product": draw(st.sampled_from("pqr")),
            "page": draw(st.sampled_from(["/a", "/b", "/c"])),
        })  # fmt: skip
    step = st.tuples(st.integers(0, lanes - 1), st.integers(1, 6), st.integers(0, 1),
                     st.integers(0, 9))  # fmt: skip
    steps = draw(st.lists(step, max_size=60))
    return {"gap": gap, "lateness": lateness, "docs": docs, "lane_of": lane_of,
            "lanes": lanes, "steps": steps}  # fmt: skip


@settings(deadline=None, max_examples=200)
@given(_lanes_scenario())
def test_session_lanes_in_any_interleaving_yield_what_one_pass_over_the_commits_does(
    scenario: dict[str, Any],
) -> None:
    """The witness of the design (§3.4) for sessions: the records in the order they were
    first decided (their batches' commit order), through the plain one-pass session
    reference, give exactly the results emitted (each window_id once, identically again on
    a redelivery or a twin) and the late records; a record late once is late on every
    delivery, and one applied is never late after."""
    docs, lanes = scenario["docs"], scenario["lanes"]
    store = MemoryStore(sized=False)
    store.keeps_outcomes = True  # what a step with lanes sets (a wrapper hides it from them)
    stores = [Interleaved(store.process()), Interleaved(store.process())]
    steps = [SessionWindow(key="user", gap_s=scenario["gap"], field="ts",
                           allowed_lateness_s=scenario["lateness"], aggregate=AGGREGATE,
                           late="late", function="fn", store=process,
                           lineage=StaticLineage(), parallelization=2)
             for process in stores]  # fmt: skip
    of_lane = [[i for i, d in enumerate(docs) if scenario["lane_of"][d["pk"]] == lane]
               for lane in range(lanes)]  # fmt: skip
    cursors = [0] * lanes
    first: list[int] = []  # each record's first delivery, in commit order
    verdicts: dict[int, set[bool]] = {}  # record -> was it late, per delivery
    emitted: dict[str, dict[str, Any]] = {}

    def run(process: int, chosen: list[int]) -> None:
        batch = [Record(orjson.dumps(docs[i]), docs[i]["pk"], str(1000 + i),
                        shard_id=SHARD) for i in chosen]  # fmt: skip
        for i, rec in zip(chosen, _apply(steps[process], batch), strict=True):
            if i not in verdicts:
                first.append(i)
            is_late = isinstance(rec, Record) and rec.routes == ("late",)
            verdicts.setdefault(i, set()).add(is_late)
            for got in rec if isinstance(rec, list) else [rec]:
                if got is not None and got.routes != ("late",):
                    doc = got.json
                    assert emitted.setdefault(doc["window_id"], doc) == doc

    def deliver(lane: int, length: int, process: int, what: int = 9) -> None:
        start = cursors[lane]
        chosen = of_lane[lane][start : start + length]
        if not chosen:
            return
        if what == 2:  # the same batch, invoked again at once on the other process
            stores[process].before.append(partial(run, 1 - process, chosen))
        elif what == 3:  # another lane's next batch commits first
            other = (lane + 1) % lanes
            stores[process].before.append(partial(deliver, other, length, 1 - process))
        run(process, chosen)
        cursors[lane] = max(cursors[lane], start + len(chosen))
        if what == 1:  # the same batch again, after it
            run(1 - process, chosen)

    for lane, length, process, what in scenario["steps"]:
        if what == 0:  # a restart: each lane from the first record not delivered yet
            low = min((of_lane[x][cursors[x]] for x in range(lanes)
                       if cursors[x] < len(of_lane[x])), default=len(docs))  # fmt: skip
            cursors = [sum(1 for i in of_lane[x] if i < low) for x in range(lanes)]
        deliver(lane, length, process, what)
    while any(cursors[x] < len(of_lane[x]) for x in range(lanes)):  # drain
        for lane in range(lanes):
            deliver(lane, 4, lane % 2)
    assert sorted(first) == list(range(len(docs)))
    assert all(len(v) == 1 for v in verdicts.values()), verdicts  # late or not, every time
    witness = [docs[i] for i in first]
    expected, late = _reference({SHARD: witness}, scenario["gap"], scenario["lateness"], "fn")
    assert emitted == expected
    assert {i for i, v in verdicts.items() if True in v} == {first[p] for _, p in late}
