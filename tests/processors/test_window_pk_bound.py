"""The partition keys' bound with lanes (issue 16, slice S7): with ``parallelization`` above
1 a window's high-water names at most ``HW_MAX_PKS`` partition keys; past that the store
would decide redeliveries by the shard's applied position, which skips a lagging lane's new
record as applied. So the record whose partition key would be one too many is
dead-lettered, saying why and what to change, and counted in no window; its redelivery is
refused again, also once its window closed. With one lane nothing is refused (the applied
position is exact there). On the memory store; the DynamoDB store's is
``tests/integration/test_window_pk_bound_dynamodb.py``."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.chain import Chain, Step
from processors.session import SessionWindow
from processors.window import TooManyPartitionKeys, Window, iso
from processors.window_store import HW_MAX_PKS, MemoryStore, WindowRecordError
from stream.records import Record

SHARD = "shardId-0"
#: one window key, a partition key per user: what the README advises against
USERS = [f"u{i:02d}" for i in range(HW_MAX_PKS + 1)]


def _rec(user: str, seq: int, ts: float, product: str = "p1") -> Record:
    doc = {"user": user, "product": product, "ts": ts, "amount": 1}
    return Record(orjson.dumps(doc), user, str(seq), shard_id=SHARD, index=seq)


def _window(parallelization: int = 2, **options: Any) -> Window:
    args = {"key": "product", "size_s": 60, "field": "ts", "aggregate": {"n": "count"},
            "state": "memory", "late": "late", "function": "fn",
            "parallelization": parallelization, **options}  # fmt: skip
    return Window(**args)


def _run(step: Window | SessionWindow, batch: list[Record]) -> tuple[dict[Any, Any], list[Any]]:
    """The step as the chain runs it: the results (window_id -> n) and the failures as
    (sequence number, error)."""
    out = Chain([Step.of("processors[0].window", step)]).run(batch)
    results = {r.get("window_id"): r.get("n") for r in out.records if r.get("window_id")}
    late = [r.sequence_number for r in out.records if r.routes == ("late",)]
    assert not late, f"late: {late}"
    return results, [(f.record.sequence_number, f.error) for f in out.failures]


def _one_each(first_seq: int = 1, ts: float = 5) -> list[Record]:
    return [_rec(user, first_seq + i, ts) for i, user in enumerate(USERS)]


def _closer(seq: int) -> Record:
    return _rec("u00", seq, 200, product="p9")


class TestTumbling:
    def test_the_record_of_a_17th_partition_key_is_dead_lettered_and_not_counted(self) -> None:
        step = _window()
        results, failed = _run(step, _one_each())
        assert results == {}
        assert [seq for seq, _ in failed] == [str(HW_MAX_PKS + 1)]
        error = failed[0][1]
        assert isinstance(error, WindowRecordError)
        text = str(error)
        assert "window 'fn': window key 'p1' [1970-01-01T00:00:00Z..1970-01-01T00:01:00Z)" in text
        assert f"already holds records of {HW_MAX_PKS} partition keys" in text
        assert "'u16'" in text
        assert "partition records by the window key" in text
        assert "batch.parallelization: 1" in text
        results, failed = _run(step, [_closer(100)])
        assert results == {"fn/p1/1970-01-01T00:00:00Z": HW_MAX_PKS}
        assert failed == []

    def test_a_redelivery_is_refused_again_before_and_after_the_window_closed(self) -> None:
        step = _window()
        _, first = _run(step, _one_each())
        _, again = _run(step, _one_each())  # window open: the same record, the same reason
        assert [(s, str(e)) for s, e in again] == [(s, str(e)) for s, e in first]
        results, _ = _run(step, [_closer(100)])
        assert results == {"fn/p1/1970-01-01T00:00:00Z": HW_MAX_PKS}
        _, late_again = _run(step, _one_each())  # closed since: not late, refused again
        assert [(s, str(e)) for s, e in late_again] == [(s, str(e)) for s, e in first]

    def test_keys_are_counted_across_batches_and_within_one(self) -> None:
        step = _window()
        records = _one_each()
        _, failed = _run(step, records[:10])
        assert failed == []
        _, failed = _run(step, records[10:])  # 6 new in this batch fit, the 7th does not
        assert [seq for seq, _ in failed] == [str(HW_MAX_PKS + 1)]
        # a later record of a key the window holds is taken; of the refused key, refused
        _, failed = _run(step, [_rec("u03", 30, 6), _rec("u16", 31, 6)])
        assert [seq for seq, _ in failed] == ["31"]
        results, _ = _run(step, [_closer(100)])
        assert results == {"fn/p1/1970-01-01T00:00:00Z": HW_MAX_PKS + 1}  # u03 twice

    def test_a_lagging_lane_s_record_of_an_extra_key_is_refused_too(self) -> None:
        """The lane that loses the race for the 16th place: its record lies before the
        shard's applied position (a lagging lane's), is new, and is refused, not skipped."""
        step = _window()
        lane_a = [_rec(user, 2 * i + 2, 5) for i, user in enumerate(USERS[:HW_MAX_PKS])]
        _, failed = _run(step, lane_a)
        assert failed == []
        _, failed = _run(step, [_rec(USERS[-1], 1, 5)])  # position 1: behind all of lane a
        assert [seq for seq, _ in failed] == ["1"]

    def test_with_one_lane_nothing_is_refused(self) -> None:
        step = _window(parallelization=1)
        _, failed = _run(step, _one_each())
        assert failed == []
        results, _ = _run(step, [_closer(100)])
        assert results == {"fn/p1/1970-01-01T00:00:00Z": HW_MAX_PKS + 1}

    def test_a_window_whose_key_is_the_partition_key_takes_any_number_of_keys(self) -> None:
        step = _window(key="user")
        _, failed = _run(step, _one_each())
        assert failed == []


class TestHopping:
    def test_a_record_one_of_whose_windows_is_full_is_refused_in_all(self) -> None:
        """[0, 60) holds 16 partition keys, [30, 90) one: a record at 40 of a 17th key is
        in both, and is counted in neither."""
        step = _window(slide_s=30)
        records = [_rec(user, i + 1, 5) for i, user in enumerate(USERS[:HW_MAX_PKS])]
        _, failed = _run(step, [*records, _rec("u00", 20, 40), _rec("u16", 21, 40)])
        assert [seq for seq, _ in failed] == ["21"]
        assert "[1970-01-01T00:00:00Z..1970-01-01T00:01:00Z)" in str(failed[0][1])
        results, _ = _run(step, [_closer(100)])
        assert results == {
            "fn/p1/1970-01-01T00:00:00Z": HW_MAX_PKS + 1,  # u00 twice
            "fn/p1/1970-01-01T00:00:30Z": 1,  # not u16's
        }


def _session(parallelization: int = 2) -> SessionWindow:
    return SessionWindow(key="product", gap_s=30, field="ts", aggregate={"n": "count"},
                         store=MemoryStore(sized=False), function="fn", late="late",
                         parallelization=parallelization)  # fmt: skip


class TestSessions:
    def test_a_key_s_17th_partition_key_is_dead_lettered(self) -> None:
        step = _session()
        _, failed = _run(step, _one_each())
        assert [seq for seq, _ in failed] == [str(HW_MAX_PKS + 1)]
        assert isinstance(failed[0][1], TooManyPartitionKeys)
        assert "session key 'p1'" in str(failed[0][1])
        _, again = _run(step, _one_each())  # redelivered: refused again
        assert [(s, str(e)) for s, e in again] == [(s, str(e)) for s, e in failed]
        results, _ = _run(step, [_closer(100)])
        assert results == {"fn/p1/1970-01-01T00:00:05Z": HW_MAX_PKS}
        # the refused record raised no high-water: the key's names its 16 partition keys
        assert set(step.store.shard(SHARD).key_hw["p1"]) == set(USERS[:HW_MAX_PKS])
        _, closed = _run(step, _one_each())  # its session closed: refused again
        assert [(s, str(e)) for s, e in closed] == [(s, str(e)) for s, e in failed]

    def test_keys_of_closed_sessions_count_since_the_key_s_high_water_keeps_them(self) -> None:
        """A key's high-water outside its open sessions (the store's ``h#KEY``) holds the
        partition keys of its closed ones: past the bound it would decide by the applied
        position too."""
        step = _session()
        records = _one_each()
        _, failed = _run(step, records[:HW_MAX_PKS])
        assert failed == []
        _run(step, [_closer(100)])  # the session closes
        _, failed = _run(step, [_rec(USERS[-1], 200, 150)])  # a new session, a 17th key
        assert [seq for seq, _ in failed] == ["200"]

    def test_a_late_record_of_a_17th_key_is_refused_not_late(self) -> None:
        """Late, it would raise the key's high-water past the bound all the same."""
        step = _session()
        _run(step, _one_each()[:HW_MAX_PKS])
        _run(step, [_closer(100)])
        _, failed = _run(step, [_rec(USERS[-1], 300, 6)])  # behind the watermark
        assert [seq for seq, _ in failed] == ["300"]

    @pytest.mark.parametrize("parallelization", [1])
    def test_with_one_lane_nothing_is_refused(self, parallelization: int) -> None:
        step = _session(parallelization)
        _, failed = _run(step, _one_each())
        assert failed == []


@st.composite
def _crowd(draw: st.DrawFn) -> tuple[list[list[Record]], list[int]]:
    """Records of up to 24 users (partition keys) into two products' windows, in batches
    of one shard in order; then the order of delivery: each batch, and now and then an
    earlier one again (a redelivery, after later batches changed the state or closed its
    windows)."""
    users = [f"u{i:02d}" for i in range(draw(st.integers(14, 24)))]
    records = []
    clock = 0
    for seq in range(1, draw(st.integers(1, 120)) + 1):
        clock += draw(st.integers(0, 2))  # windows of 60 s: of about 60 records each
        records.append(_rec(draw(st.sampled_from(users)), seq, clock,
                            product=draw(st.sampled_from(["p1", "p1", "p1", "p2"]))))  # fmt: skip
    cuts = sorted(draw(st.sets(st.integers(1, len(records)), max_size=8)) | {len(records)})
    batches = [records[a:b] for a, b in zip([0, *cuts], cuts, strict=False) if b > a]
    order = []
    for i in range(len(batches)):
        order.append(i)
        if draw(st.booleans()):
            order.append(draw(st.integers(0, i)))
    return batches, order


@settings(deadline=None, max_examples=150)
@given(_crowd())
def test_every_delivery_of_a_record_decides_it_the_same_and_windows_hold_at_most_16_keys(
    scenario: tuple[list[list[Record]], list[int]],
) -> None:
    """Against a reference: records in shard order, each window takes the records of its
    first 16 partition keys and refuses the others'; a redelivery yields the same verdict
    (refused, or not) and counts nothing again."""
    batches, order = scenario
    step = _window()  # no record is late: times only grow
    verdict: dict[str, bool] = {}  # sequence number -> refused
    results: dict[str, int] = {}
    for i in order:
        got, failed = _run(step, [copy.copy(rec) for rec in batches[i]])
        refused = {seq for seq, error in failed if "partition keys" in str(error)}
        assert len(refused) == len(failed), failed
        for rec in batches[i]:
            seq = rec.sequence_number
            assert verdict.setdefault(seq, seq in refused) == (seq in refused), seq
        for window_id, n in got.items():
            assert results.setdefault(window_id, n) == n  # a result again: the same
    got, _ = _run(step, [_rec("u00", 10_000, 10_000, product="p9")])
    results.update(got)
    keys: dict[tuple[str, int], list[str]] = {}
    expected: dict[str, int] = {}
    for rec in (rec for batch in batches for rec in batch):
        doc = rec.as_dict()
        start = int(doc["ts"] // 60) * 60
        held = keys.setdefault((doc["product"], start), [])
        if rec.partition_key not in held and len(held) >= HW_MAX_PKS:
            assert verdict[rec.sequence_number], rec.sequence_number
            continue
        assert not verdict[rec.sequence_number], rec.sequence_number
        if rec.partition_key not in held:
            held.append(rec.partition_key)
        window_id = f"fn/{doc['product']}/{iso(start)}"
        expected[window_id] = expected.get(window_id, 0) + 1
    assert results == expected
