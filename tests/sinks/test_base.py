"""The sink base class: chunking, one outcome per item, per-key order within bulk calls."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import pytest

from sinks.base import OK, DeadLetter, Ordering, Outcome, Sink, Status, permanent, retryable
from sinks.memory import MemorySink
from sinks.stdout import StdoutSink
from stream.records import Record

if TYPE_CHECKING:
    from collections.abc import Sequence


def records(keys: str) -> list[Record]:
    return [
        Record(f'{{"i":{i}}}'.encode(), key, str(100 + i), index=i, shard_id="s")
        for i, key in enumerate(keys)
    ]


class Recording(Sink):
    """Records every backend call; fails the items whose index is in ``fail``."""

    def __init__(self, fail: set[int] = frozenset(), max_batch: int = 500, safe: bool = False):
        super().__init__("rec")
        self.max_batch = max_batch  # type: ignore[misc]
        self.per_key_safe = safe  # type: ignore[misc]
        self.fail = fail
        self.calls: list[list[int]] = []

    def _write(self, items: Sequence[Record]) -> list[Outcome]:
        self.calls.append([r.index for r in items])
        return [retryable("boom") if r.index in self.fail else OK for r in items]


class TestChunking:
    def test_each_backend_call_holds_at_most_one_record_per_key(self):
        sink = Recording()
        sink.write_batch(records("aabab"))
        assert sink.calls == [[0], [1, 2], [3, 4]]

    def test_a_per_key_safe_sink_takes_the_whole_batch_in_one_call(self):
        sink = Recording(safe=True)
        sink.write_batch(records("aabab"))
        assert sink.calls == [[0, 1, 2, 3, 4]]

    def test_calls_never_exceed_max_batch(self):
        sink = Recording(max_batch=2, safe=True)
        sink.write_batch(records("abcde"))
        assert sink.calls == [[0, 1], [2, 3], [4]]

    def test_a_sink_that_returns_the_wrong_number_of_outcomes_is_a_bug_named_as_such(self):
        class Broken(Sink):
            def _write(self, items):
                return []

        with pytest.raises(RuntimeError, match="returned 0 outcomes for 2 items"):
            Broken("b").write_batch(records("ab"))


class TestOrdering:
    def test_per_key_holds_back_the_rest_of_a_failed_key_only(self):
        sink = Recording(fail={0})
        out = sink.write_batch(records("abab"), Ordering.PER_KEY)
        assert [o.status for o in out] == [
            Status.RETRYABLE,
            Status.OK,
            Status.RETRYABLE,
            Status.OK,
        ]
        assert out[2].error == "HeldBack"
        assert [i for call in sink.calls for i in call] == [0, 1, 3]

    def test_strict_holds_back_everything_after_the_first_failed_call(self):
        sink = Recording(fail={0})
        out = sink.write_batch(records("aab"), Ordering.STRICT)
        assert [o.status for o in out] == [Status.RETRYABLE] * 3
        assert sink.calls == [[0]]

    def test_none_sends_everything(self):
        sink = Recording(fail={0})
        out = sink.write_batch(records("aa"), Ordering.NONE)
        assert [o.status for o in out] == [Status.RETRYABLE, Status.OK]
        assert sink.calls == [[0, 1]]


class TestOutage:
    def test_after_a_whole_call_failed_the_rest_is_held_back_without_calls(self):
        """A backend down: one call's retries are spent, not one per call of the batch."""
        sink = Recording(fail=set(range(6)), max_batch=2, safe=True)
        out = sink.write_batch(records("abcdef"), Ordering.NONE)
        assert sink.calls == [[0, 1]]
        assert [o.error for o in out[2:]] == ["HeldBack"] * 4
        assert all("failed entirely (boom)" in o.reason for o in out[2:])

    def test_a_call_failing_in_part_does_not_stop_the_others(self):
        sink = Recording(fail={0}, max_batch=2, safe=True)
        out = sink.write_batch(records("abcd"), Ordering.PER_KEY)
        assert sink.calls == [[0, 1], [2, 3]]
        assert [o.status for o in out] == [Status.RETRYABLE] + [Status.OK] * 3

    def test_one_record_failing_alone_in_its_call_is_no_outage(self):
        sink = Recording(fail={0})
        out = sink.write_batch(records("aab"), Ordering.PER_KEY)
        assert sink.calls == [[0], [2]]  # b is still sent; the rest of a waits
        assert [o.status for o in out] == [Status.RETRYABLE, Status.RETRYABLE, Status.OK]


class TestMemorySink:
    def test_latest_keeps_the_newest_position_per_key_whatever_the_order(self):
        sink = MemorySink("m", max_batch=10)
        rs = records("aa")
        sink.write_batch([rs[1]], Ordering.NONE)
        sink.write_batch([rs[0]], Ordering.NONE)
        assert sink.latest["a"][1] == rs[1].data


class TestStdoutSink:
    def test_writes_one_json_line_per_record_labelled_with_the_sink(self):
        out = io.BytesIO()
        sink = StdoutSink("orders", label=True, out=out)
        assert sink.write_batch(records("ab")) == [OK, OK]
        assert out.getvalue() == b'orders\t{"i":0}\norders\t{"i":1}\n'

    def test_every_record_is_one_line_whatever_its_data(self):
        """Binary data is base64 in a JSON object, text over several lines is a JSON string,
        JSON over several lines is re-encoded: one line per record, each valid UTF-8."""
        datas = [
            b"\xff\x00\n\xfe",  # binary, with a newline byte inside
            b"GET /\nHost: x",  # text over two lines, not JSON
            b'{\n  "a": 1\n}',  # pretty-printed JSON
            "caf\u00e9".encode(),  # one line of UTF-8: as it is
            b'{"i":0}\n',  # a trailing newline is not a second line
        ]
        rs = [Record(d, "k", str(100 + i), index=i) for i, d in enumerate(datas)]
        out = io.BytesIO()
        assert StdoutSink("s", out=out).write_batch(rs) == [OK] * len(rs)
        lines = out.getvalue().decode("utf-8").split("\n")
        assert lines == [
            '{"_data_base64":"/wAK/g=="}',
            '{"_text":"GET /\\nHost: x"}',
            '{"a":1}',
            "caf\u00e9",
            '{"i":0}',
            "",
        ]


class TestDeadLetter:
    def test_envelope_carries_the_record_the_reason_and_the_position(self):
        rec = Record(
            b"\xff",
            "k",
            "123",
            sub_sequence_number=2,
            shard_id="shardId-1",
            event_id="shardId-1:123",
            index=4,
        )
        letter = DeadLetter(rec, "not JSON", "DecodeError", "processors[0].filter", "f", "p", 5.0)
        doc = letter.document()
        assert doc["data_base64"] == "/w=="
        assert (doc["sequence_number"], doc["sub_sequence_number"], doc["shard_id"]) == (
            "123",
            2,
            "shardId-1",
        )
        assert (doc["step"], doc["error"], doc["reason"], doc["failed_at"]) == (
            "processors[0].filter",
            "DecodeError",
            "not JSON",
            5.0,
        )
        as_record = letter.as_record()
        assert (as_record.sequence_number, as_record.index) == ("123", 4)


def test_an_outcome_matches_positionally_and_copies_with_changes() -> None:
    """Sink plugins may match an outcome as they did when it was a dataclass."""
    import copy  # noqa: PLC0415

    match permanent("bad", "ValueError"):
        case Outcome(Status.PERMANENT, reason, error):
            assert (reason, error) == ("bad", "ValueError")
        case _:
            pytest.fail("no match")
    replace = getattr(copy, "replace", None)  # Python 3.13
    changed = (replace or (lambda o, **c: o.__replace__(**c)))(OK, reason="x")
    assert (changed.status, changed.reason) == (Status.OK, "x")
