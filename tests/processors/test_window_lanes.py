"""Windows with lanes (``parallelization`` > 1, issue 16, slices S1 and S2): a shard's lanes
hand the step batches of disjoint partition keys whose positions interleave, so a lagging
lane's new records lie before positions another lane applied already. The memory store
decides "applied already" by each window's per-partition-key high-water, not by the shard's
one applied position, and commits on the shard's commit number (a commit another process
passed is lost: the step applies its batch again). Two lanes are simulated by batches with
disjoint partition keys and interleaved sequence numbers, handed to the step directly
(``prepare``, then each record); two processes by two stores of one memory store."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.lineage import StaticLineage
from processors.window import MemoryStore, Window
from processors.window_store import CommitLost
from stream.records import Record
from tests.processors.test_window import AGGREGATE, _reference
from tests.processors.test_window_atomic import Refused, plugins  # noqa: F401  # a fixture

if TYPE_CHECKING:
    from collections.abc import Callable

SHARD = "shardId-0"


def _rec(user: str, seq: int, ts: float, amount: int = 1) -> Record:
    doc = {"user": user, "ts": ts, "amount": amount, "tag": "t"}
    return Record(orjson.dumps(doc), user, str(seq), shard_id=SHARD)  # partition key = user


def _window(**options: Any) -> Window:
    args = {"key": "user", "size_s": 60, "field": "ts", "allowed_lateness_s": 5,
            "aggregate": {"n": "count", "total": {"sum": "amount"}}, "state": "memory",
            "late": "late", "function": "fn", **options}  # fmt: skip
    return Window(**args)


def _apply(window: Window, batch: list[Record]) -> list[Any]:
    """The step as the chain runs it: ``prepare``, then each record's outcome."""
    window.prepare(batch)
    return [window(rec) for rec in batch]


def _counts(window: Window) -> dict[tuple[Any, int], int]:
    state = window.store.shard(SHARD)  # type: ignore[attr-defined]
    return {wkey: accs[0] for wkey, accs in state.windows.items()}


def _results(outcomes: list[Any]) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for got in outcomes:
        for rec in got if isinstance(got, list) else [got] if got is not None else []:
            if rec.get("window_id") is not None:
                out[rec.get("window_id")] = (rec.get("n"), rec.get("total"))
    return out


def _lane_a() -> list[Record]:
    return [_rec("a", 2, 1, 10), _rec("a", 4, 2, 20), _rec("a", 6, 3, 30)]


def _lane_b() -> list[Record]:
    return [_rec("b", 1, 4, 1), _rec("b", 3, 5, 2), _rec("b", 5, 6, 3)]


def test_a_lagging_lane_s_batch_after_a_later_lane_s_is_applied_not_skipped() -> None:
    window = _window()
    assert _apply(window, _lane_a()) == [None, None, None]
    assert _apply(window, _lane_b()) == [None, None, None]  # positions 1-5, all before 6
    assert _counts(window) == {("a", 0): 3, ("b", 0): 3}
    closer = _apply(window, [_rec("a", 8, 200)])
    assert _results(closer) == {
        "fn/a/1970-01-01T00:00:00Z": (3, 60),
        "fn/b/1970-01-01T00:00:00Z": (3, 6),
    }


def test_each_lane_s_redelivery_changes_nothing_and_yields_what_it_yielded() -> None:
    window = _window()
    _apply(window, _lane_a())
    _apply(window, _lane_b())
    assert _apply(window, _lane_a()) == [None, None, None]  # redeliveries, in either order
    assert _apply(window, _lane_b()) == [None, None, None]
    assert _counts(window) == {("a", 0): 3, ("b", 0): 3}
    first = _results(_apply(window, [_rec("a", 8, 200)]))
    assert _results(_apply(window, [_rec("a", 8, 200)])) == first  # the closer again
    assert len(first) == 2
    # the windows are closed now: the lanes' records were applied before, not late
    assert _apply(window, _lane_b()) == [None, None, None]
    assert _apply(window, _lane_a()) == [None, None, None]
    assert window.late == 0
    assert _counts(window) == {("a", 180): 1}


def test_a_lagging_lane_s_new_record_for_a_closed_window_is_late() -> None:
    window = _window()
    _apply(window, [_rec("a", 2, 1), _rec("a", 4, 200)])  # watermark 195
    late = [_rec("b", 1, 20), _rec("b", 3, 30)]  # before position 4, new, behind it
    assert _apply(window, late) == late
    assert [rec.routes for rec in late] == [("late",), ("late",)]
    assert ("b", 0) not in _counts(window)


def test_a_lagging_lane_s_batch_with_an_applied_prefix_applies_the_rest() -> None:
    window = _window()
    _apply(window, [_rec("b", 1, 4), _rec("b", 3, 5)])
    _apply(window, _lane_a())  # applied position 6
    again = [_rec("b", 1, 4), _rec("b", 3, 5), _rec("b", 5, 6), _rec("b", 7, 7)]
    assert _apply(window, again) == [None, None, None, None]
    assert _counts(window) == {("a", 0): 3, ("b", 0): 4}


def test_hopping_windows_keep_a_high_water_per_window() -> None:
    window = _window(slide_s=30)
    _apply(window, [_rec("a", 2, 40), _rec("a", 4, 45)])  # in [0, 60) and [30, 90)
    _apply(window, [_rec("b", 1, 41), _rec("b", 3, 42)])  # a lagging lane: applied
    _apply(window, [_rec("b", 1, 41), _rec("b", 3, 42)])  # again: changes nothing
    assert _counts(window) == {("a", 0): 2, ("a", 30): 2, ("b", 0): 2, ("b", 30): 2}


def test_the_memory_store_keeps_the_high_water_of_closed_windows() -> None:
    store = MemoryStore(sized=False)
    window = _window(store=store)
    _apply(window, _lane_a())
    state = store.shard(SHARD)
    assert state.hw == {("a", 0): {"a": (1, "6", 0, ())}}  # the last record of a in it
    _apply(window, [_rec("b", 9, 200)])  # closes [0, 60) of a
    assert ("a", 0) not in store.shard(SHARD).windows
    assert store.shard(SHARD).hw[("a", 0)] == {"a": (1, "6", 0, ())}


@pytest.mark.usefixtures("plugins")
def test_a_record_its_window_refused_is_refused_again_after_the_window_closed() -> None:
    """A record refused by its window's state (``capped``: three values at most) raises
    the window's high-water, so that its redelivery, after the window closed, is decided
    (its error again), not taken for a new record of a lagging lane and sent late."""
    window = _window(aggregate={"n": "count", "few": {"capped": "tag"}})
    lane_a = [_rec("a", 2, 1), _rec("a", 4, 2), _rec("a", 6, 3), _rec("a", 8, 4)]
    window.prepare(lane_a)
    assert [_error(window, rec) for rec in lane_a] == [None, None, None, Refused]
    closer = _apply(window, [_rec("b", 1, 200)])  # a lagging lane's record closes [0, 60)
    assert _results(closer) == {"fn/a/1970-01-01T00:00:00Z": (3, None)}
    window.prepare(lane_a)  # redelivered: all decided already
    assert [_error(window, rec) for rec in lane_a] == [None, None, None, Refused]
    assert window.late == 0
    assert all(rec.routes != ("late",) for rec in lane_a)


def _error(window: Window, rec: Record) -> type[Exception] | None:
    try:
        window(rec)
    except Exception as exc:  # the record's failure, as the chain sees it
        return type(exc)
    return None


class Interleaved:
    """A process's store (:meth:`MemoryStore.process`) whose next commit first runs the
    attempts queued in ``before`` (another process's batch, or the same batch invoked
    twice at once): they commit between this batch's read and its commit."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.before: list[Callable[[], None]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def commit(self, *args: Any, **kwargs: Any) -> None:
        while self.before:
            self.before.pop(0)()
        self.store.commit(*args, **kwargs)


def test_a_commit_after_another_process_s_is_lost_and_the_step_applies_its_batch_again() -> None:
    """Two processes of one memory store (two Lambda instances on one table): a commit
    holds only at the commit number its batch read; the window step applies a batch whose
    commit was lost again from the state the other process committed."""
    store = MemoryStore(sized=False)
    mine, theirs = store.process(), store.process()
    state = mine.shard(SHARD)
    theirs.commit(SHARD, theirs.shard(SHARD), set())
    with pytest.raises(CommitLost):
        mine.commit(SHARD, state, set())
    interleaved = Interleaved(store.process())
    first = _window(store=interleaved, lineage=StaticLineage())
    other = _window(store=store.process(), lineage=StaticLineage())
    interleaved.before.append(partial(_apply, other, _lane_b()))  # commits before lane a's
    assert _apply(first, _lane_a()) == [None, None, None]
    assert not interleaved.before
    fresh = store.process().shard(SHARD)
    assert {w: accs[0] for w, accs in fresh.windows.items()} == {("a", 0): 3, ("b", 0): 3}
    assert fresh.n == 3  # the empty commit, lane b's, then lane a's applied again


# -- the property: lanes in any interleaving, restarts, twins; equal to one pass -------------


@st.composite
def _lanes_scenario(draw: st.DrawFn) -> dict[str, Any]:
    """One shard's records (partition key = window key, event times out of order, some
    beyond the lateness), each key in one of 1-3 lanes, and a schedule: which lane hands
    its next batch to which of two processes and how long it is, with restarts (every
    lane goes back to the shard's checkpoint: the lowest record not delivered yet), twins
    (a batch delivered twice, one after the other or at once) and overlaps (another
    lane's batch commits between this one's read and its commit)."""
    size = draw(st.sampled_from([10, 30]))
    slide = draw(st.sampled_from([size, size // 2, size // 5]))
    lateness = draw(st.integers(0, size))
    keys = [f"k{i}" for i in range(draw(st.integers(1, 5)))]
    lanes = draw(st.integers(1, 3))
    lane_of = {key: draw(st.integers(0, lanes - 1)) for key in keys}
    clock = 0
    docs = []
    for _ in range(draw(st.integers(0, 40))):
        clock += draw(st.integers(0, 8))
        docs.append({
            "user": draw(st.sampled_from(keys)),
            "ts": max(0, clock - draw(st.integers(0, lateness + 10))),  # some beyond lateness
            "amount": draw(st.integers(-5, 50)),
            "product": draw(st.sampled_from("pqr")),
            "page": draw(st.sampled_from(["/a", "/b", "/c"])),
        })  # fmt: skip
    # (lane, batch length, process, what: 0 a restart first, 1 a twin after it, 2 a twin at
    # once, 3 another lane's batch at once, else a plain batch)
    step = st.tuples(st.integers(0, lanes - 1), st.integers(1, 6), st.integers(0, 1),
                     st.integers(0, 9))  # fmt: skip
    steps = draw(st.lists(step, max_size=60))
    return {"size": size, "slide": slide, "lateness": lateness, "docs": docs,
            "lane_of": lane_of, "lanes": lanes, "steps": steps}  # fmt: skip


@settings(deadline=None, max_examples=200)
@given(_lanes_scenario())
def test_lanes_in_any_interleaving_yield_what_one_pass_over_the_commits_does(
    scenario: dict[str, Any],
) -> None:
    """The witness of the design (issue 16, §3.4) with the memory store: the records as
    first applied, in the order their batches committed (the order the steps returned:
    a batch that lost its commit to another applies again after it), through a plain
    one-pass reference, give exactly the results emitted (each window_id once, again
    identically on a redelivery or a twin) and the late records; a record late once is late
    on every redelivery, and one applied is never late after. With tumbling windows and no
    record late, the results are those of the records in shard order (one lane): each
    window holds all its key's records, in the key's order."""
    docs, lanes = scenario["docs"], scenario["lanes"]
    store = MemoryStore(sized=False)
    stores = [Interleaved(store.process()), Interleaved(store.process())]
    steps = [_window(key="user", size_s=scenario["size"], slide_s=scenario["slide"],
                     allowed_lateness_s=scenario["lateness"], aggregate=AGGREGATE,
                     store=process, lineage=StaticLineage())
             for process in stores]  # fmt: skip
    of_lane = [[i for i, d in enumerate(docs) if scenario["lane_of"][d["user"]] == lane]
               for lane in range(lanes)]  # fmt: skip
    cursors = [0] * lanes
    first: list[int] = []  # each record's first delivery, in commit order
    verdicts: dict[int, set[bool]] = {}  # record -> was it late, per delivery
    emitted: dict[str, dict[str, Any]] = {}

    def run(process: int, chosen: list[int]) -> None:
        """The records ``chosen`` as one batch on ``process``; what each yields noted."""
        batch = [Record(orjson.dumps(docs[i]), docs[i]["user"], str(1000 + i),
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
    expected, late = _reference({SHARD: witness}, scenario["size"], scenario["slide"],
                                scenario["lateness"], "fn")  # fmt: skip
    assert emitted == expected
    assert {i for i, v in verdicts.items() if True in v} == {first[p] for _, p in late}
    # and, tumbling with no record late, whatever the lanes and their order: what one lane
    # gives (hopping: a record that is not late may still miss its earliest windows)
    size = scenario["size"]
    if scenario["slide"] == size and not late:
        in_order, late_in_order = _reference({SHARD: docs}, size, size, scenario["lateness"], "fn")
        if not late_in_order:
            assert emitted == in_order
