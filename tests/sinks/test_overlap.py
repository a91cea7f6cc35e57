"""Calls sent at once (stream.overlap): outcomes stay with their records, per-key order holds,
whichever call ends first.

The sink doubles here are our own :class:`Sink` subclasses whose calls wait on events, so a
slow earlier call ends after a fast later one without any sleep."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, ClassVar

import pytest

from processors.chain import Chain
from sinks.base import OK, Ordering, Outcome, Sink, Status, permanent, retryable
from stream.batch import BatchRunner
from stream.overlap import WAVE_WIDTH, overlapping, waves
from stream.records import Record

if TYPE_CHECKING:
    from collections.abc import Sequence

DEADLINE_S = 10.0


def _records(keys: Sequence[str]) -> list[Record]:
    return [
        Record(b'{"n": %d}' % i, key, str(1000 + i), shard_id="s", index=i)
        for i, key in enumerate(keys)
    ]


class GatedSink(Sink):
    """Two records a call; the call holding ``slow`` waits until every other call of its
    wave has ended, then fails ``fail`` retryably and ``poison`` permanently."""

    max_batch: ClassVar[int] = 2
    concurrent_calls: ClassVar[bool] = True

    def __init__(self, name: str, *, slow: int, others: int, fail=(), poison=()) -> None:
        super().__init__(name)
        self.slow, self.fail, self.poison = slow, set(fail), set(poison)
        self.others_done = threading.Semaphore(0)
        self.others = others
        self.ended: list[list[int]] = []  # calls, in the order they ended
        self.applied: list[int] = []
        self._lock = threading.Lock()

    def _write(self, items: Sequence[Record]) -> list[Outcome]:
        indexes = [r.index for r in items]
        if self.slow in indexes:
            for _ in range(self.others):  # the later calls end first
                assert self.others_done.acquire(timeout=DEADLINE_S), "calls were not concurrent"
        out: list[Outcome] = []
        with self._lock:
            for i in indexes:
                if i in self.fail:
                    out.append(retryable("injected throttle", "Throttled"))
                elif i in self.poison:
                    out.append(permanent("injected validation error", "ValidationError"))
                else:
                    self.applied.append(i)
                    out.append(OK)
            self.ended.append(indexes)
        if self.slow not in indexes:
            self.others_done.release()
        return out


def test_a_slow_call_ending_after_later_ones_keeps_outcomes_with_their_records():
    # keys a..f, distinct: three calls of two records in one wave; the first ends last
    items = _records("abcdef")
    sink = GatedSink("g", slow=0, others=2, fail={1}, poison={4})
    with overlapping(True):
        outcomes = sink.write_batch(items, Ordering.PER_KEY)
    assert sink.ended[-1] == [0, 1], "the first call did not end last"
    assert [o.status for o in outcomes] == [
        Status.OK,
        Status.RETRYABLE,
        Status.OK,
        Status.OK,
        Status.PERMANENT,
        Status.OK,
    ]
    assert outcomes[1].reason == "injected throttle"
    assert outcomes[4].error == "ValidationError"


@pytest.mark.parametrize("enabled", [True, False])
def test_a_key_in_flight_waits_for_its_call_and_its_fate(enabled):
    # b fails in the first call; a later b must not be sent (per_key), a later a must be
    # sent only after the call holding the first a has ended
    items = _records(["a", "b", "c", "d", "a", "b", "e"])
    others = 1 if enabled else 0  # switched off, every call goes alone
    sink = GatedSink("g", slow=0, others=others, fail={1})
    with overlapping(enabled):
        outcomes = sink.write_batch(items, Ordering.PER_KEY)
    assert outcomes[5].status is Status.RETRYABLE
    assert outcomes[5].error == "HeldBack"
    assert 5 not in sink.applied
    assert sink.applied.index(0) < sink.applied.index(4)
    assert [o.ok for o in outcomes] == [True, False, True, True, True, False, True]


def test_strict_sends_one_call_at_a_time():
    items = _records("abcdef")
    sink = GatedSink("g", slow=-1, others=0, fail={1})
    with overlapping(True):
        outcomes = sink.write_batch(items, Ordering.STRICT)
    assert sink.ended == [[0, 1]]  # nothing after the first failure is written
    assert [o.status for o in outcomes[2:]] == [Status.RETRYABLE] * 4


class DownSink(Sink):
    """Every call of two or more records fails entirely; counts calls."""

    max_batch: ClassVar[int] = 2
    concurrent_calls: ClassVar[bool] = True

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.calls = 0
        self._lock = threading.Lock()

    def _write(self, items: Sequence[Record]) -> list[Outcome]:
        with self._lock:
            self.calls += 1
        return [retryable("endpoint down", "ServiceUnavailable")] * len(items)


@pytest.mark.parametrize(("enabled", "calls"), [(True, WAVE_WIDTH), (False, 1)])
def test_a_call_failing_entirely_holds_back_the_waves_after_it(enabled, calls):
    items = _records([f"k{i}" for i in range(4 * WAVE_WIDTH)])  # calls of distinct keys
    sink = DownSink("d")
    with overlapping(enabled):
        outcomes = sink.write_batch(items, Ordering.PER_KEY)
    assert sink.calls == calls  # the first wave, in flight together, then nothing
    assert all(o.status is Status.RETRYABLE for o in outcomes)
    assert outcomes[-1].error == "HeldBack"


def test_sinks_written_at_once_each_keep_their_own_outcomes():
    slow = GatedSink("slow", slow=0, others=1, fail={2})
    fast = GatedSink("fast", slow=-1, others=0, poison={1})
    slow.others_done = fast.others_done  # the slow sink's first call waits for the fast one
    runner = BatchRunner(
        Chain([]), {"slow": slow, "fast": fast}, default_route=["slow", "fast"], function="f"
    )
    records = _records("abc")
    with overlapping(True):
        result = runner.run(records)
    assert result.written == {"slow": 2, "fast": 2}
    assert "injected throttle" in result.failed[2]  # the slow sink's retryable record
    assert "injected validation error" in result.failed[1]  # the fast sink's, no on_failure
    assert set(result.failed) == {1, 2}
    assert slow.applied == [0, 1]
    assert fast.applied == [0, 2]


def test_calls_made_inside_a_call_of_a_wave_go_in_turn():
    """A task of the call pool never waits on others of it (no deadlock when it is full)."""
    import threading  # noqa: PLC0415

    from stream.overlap import run_all  # noqa: PLC0415

    def inner() -> list[str]:
        return run_all([lambda: threading.current_thread().name] * 3)

    with overlapping(True):
        names = run_all([inner] * (WAVE_WIDTH + 2))
    for inside in names[1:]:  # those ran on the pool: their own calls in the same thread
        assert len(set(inside)) == 1
        assert inside[0].startswith("shardline-call")


class TestWaves:
    def test_a_wave_holds_at_most_the_width_and_keeps_the_calls_order(self):
        calls = list(range(2 * WAVE_WIDTH + 3))
        with overlapping(True):
            cut = waves(calls)
        assert [len(w) for w in cut] == [WAVE_WIDTH, WAVE_WIDTH, 3]
        assert [c for w in cut for c in w] == calls

    def test_a_call_sharing_a_key_with_its_wave_starts_the_next_one(self):
        calls = [{"a", "b"}, {"c"}, {"b", "d"}, {"e"}, {"a"}]
        with overlapping(True):
            cut = waves(calls, keys=lambda keys: keys)
        assert cut == [[{"a", "b"}, {"c"}], [{"b", "d"}, {"e"}, {"a"}]]
        for wave in cut:  # no key twice in a wave
            held = [key for call in wave for key in call]
            assert len(held) == len(set(held))

    def test_switched_off_every_call_is_a_wave_of_its_own(self):
        with overlapping(False):
            assert waves(["a", "b", "c"]) == [["a"], ["b"], ["c"]]
