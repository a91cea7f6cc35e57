"""Review 10 of session windows in lanes mode (issue 16, slice S6): faults the branch did
not try, on the memory store (lanes rules with ``parallelization`` above 1 only: with one
lane, ``shardline test`` and ``invoke`` run main's)."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from typing import Any

import pytest

import stream.plugins
from processors.aggregations import AGGREGATION_GROUP
from processors.window_store import MemoryStore
from tests.processors.test_session_lanes import SHARD, _apply, _late, _rec, _results, _session
from tests.processors.test_window_atomic import Refused


def test_the_memory_store_s_kept_outcomes_stay_bounded_over_a_long_one_lane_run() -> None:
    """A long one-lane run (``shardline test``, ``invoke`` on the memory store): what the
    store keeps to hand outcomes back to redeliveries must not grow per record (on lanes8
    it kept 2,000 after 2,000 batches). Each batch here is one late record (an outcome the
    store keeps with lanes) after a record that keeps the watermark up. With one lane the
    step runs main's rules and the store keeps no outcomes; with lanes it keeps one per
    record that yields something (``MemoryStore.keeps_outcomes``), as the DynamoDB store's
    outbox entries, but for the store's life: tests' and ``shardline test``'s short runs."""
    for lanes, most in ((1, 0), (2, 2_000)):
        store = MemoryStore(sized=False)
        step = _session(store, parallelization=lanes)
        seq = 0
        for i in range(2_000):
            seq += 2
            batch = [_rec("a", seq - 1, 10_000 + i * 10), _rec("b", seq, 10_000 + i * 10 - 50)]
            assert _late(_apply(step, batch)) == [False, True]
        kept = len(store._entries.get(SHARD, {}))  # what the store holds
        assert kept == most, f"{lanes} lanes: the memory store keeps {kept} outcomes"


@pytest.fixture
def capped(monkeypatch: pytest.MonkeyPatch) -> None:
    group = {"capped": EntryPoint("capped", "tests.processors.test_window_atomic:Capped",
                                  AGGREGATION_GROUP)}  # fmt: skip
    monkeypatch.setattr(stream.plugins, "_group", lambda name: group if name == AGGREGATION_GROUP
                        else {})  # fmt: skip


@pytest.mark.usefixtures("capped")
def test_a_record_a_plugin_refused_is_refused_again_on_another_process() -> None:
    """Lanes: key ``a`` (partition key ``a``) has three values; its fourth (position 5) is
    refused by ``capped`` (state-dependent). Lane B commits meanwhile on another process;
    lane A's batch (5, 7) is delivered again there: position 5 yields its error again
    (from the outcome the commit kept), 7 nothing new, and the session's result holds
    the three values only."""
    store = MemoryStore(sized=False)
    options = {"aggregate": {"n": "count", "few": {"capped": "amount"}}}
    one, two = _session(store.process(), **options), _session(store.process(), **options)
    first = _outcomes(one, [_rec("a", 1, 1000, 1), _rec("a", 2, 1001, 2), _rec("a", 3, 1002, 3)])
    assert first == [None, None, None]
    refused = _outcomes(one, [_rec("a", 5, 1003, 4), _rec("a", 7, 1010, 5)])
    assert isinstance(refused[0], Refused)
    assert isinstance(refused[1], Refused)  # capped: still three
    assert _outcomes(two, [_rec("b", 6, 1005, 9)]) == [None]
    again = _outcomes(two, [_rec("a", 5, 1003, 4), _rec("a", 7, 1010, 5)])
    assert [type(o) for o in again] == [Refused, Refused]
    closer = _outcomes(one, [_rec("b", 8, 1400, 1)])
    got = {w: r for w, r in _results_full(closer).items() if "/a/" in w}
    assert got == {"fn/a/1970-01-01T00:16:40Z": (3, [1, 2, 3])}


def _outcomes(step: Any, batch: list[Any]) -> list[Any]:
    """As ``_apply``, a record's error (what the chain dead-letters) as its outcome."""
    step.prepare(batch)
    out: list[Any] = []
    for rec in batch:
        try:
            out.append(step(rec))
        except Refused as exc:
            out.append(exc)
    return out


def _results_full(outcomes: list[Any]) -> dict[str, tuple[Any, Any]]:
    out: dict[str, tuple[Any, Any]] = {}
    for got in outcomes:
        for rec in got if isinstance(got, list) else [got] if got is not None else []:
            if hasattr(rec, "get") and rec.get("window_id") is not None:
                out[rec.get("window_id")] = (rec.get("n"), rec.get("few"))
    return out


def test_a_merge_of_two_lanes_sessions_redelivered_on_a_cold_process() -> None:
    """Key ``u`` arrives under two partition keys (lanes A: ``p1``, B: ``p2``): A opens a
    session at 1000, B one at 1150; A's record at 1080 merges them. Both lanes' batches
    are delivered again on a process that has seen none of them: every record is decided
    (none added twice, none late), and the merged session's result counts each once."""
    store = MemoryStore(sized=False)
    one, two = (_session(store.process(), allowed_lateness_s=100) for _ in range(2))

    def rec(pk: str, seq: int, ts: float, amount: int) -> Any:
        r = _rec("u", seq, ts, amount)
        r.partition_key = pk
        return r

    lane_a = [rec("p1", 2, 1000, 1), rec("p1", 4, 1080, 10)]
    lane_b = [rec("p2", 1, 1150, 100)]
    assert _apply(one, lane_a[:1]) == [None]
    assert _apply(two, lane_b) == [None]
    assert _apply(one, lane_a[1:]) == [None]  # the merge
    three = _session(store.process(), allowed_lateness_s=100)
    assert _late(_apply(three, lane_b)) == [False]
    assert _apply(three, lane_a) == [None, None]
    closer = _apply(three, [_rec("z", 9, 3000, 0)])
    assert _results(closer)["fn/u/1970-01-01T00:16:40Z"] == (3, 111)
