"""Reading dead letters back (deploy.ops.dead_letters), without servers: what the SQS sink
writes, oversize letters in S3, and the filters."""

from __future__ import annotations

import orjson
import pytest

from deploy.ops.dead_letters import (
    Fate,
    Kind,
    Message,
    Scan,
    Selection,
    _position,
    parse_message,
    redrive,
)
from deploy.ops.ranges import Resolution
from sinks.base import DeadLetter
from sinks.sqs import OVERFLOW_FIELD, REDRIVES_ATTRIBUTE
from stream.records import Record


def _letter(step: str = "sink:orders", redrives: int = 0) -> DeadLetter:
    rec = Record(b'{"id": 1}', "k", "4959", 3, shard_id="shardId-000000000001", arrival=5.0)
    rec.part = "1"
    return DeadLetter(rec, "no", "ValueError", step, "fn", "shop", 10.0, redrives)


class TestParseMessage:
    def test_a_letter_comes_back_at_its_original_position(self) -> None:
        """Shard, sequence, sub-sequence number, part, key and arrival survive the trip."""
        body = orjson.dumps(_letter(redrives=2).document()).decode()
        letter = parse_message("q", "1", "h", body).letter
        assert letter is not None
        rec = letter.record
        assert (rec.shard_id, rec.sequence_number, rec.sub_sequence_number, rec.part) == (
            "shardId-000000000001", "4959", 3, "1",
        )  # fmt: skip
        assert (rec.partition_key, rec.arrival, letter.redrives) == ("k", 5.0, 2)

    def test_an_oversize_letter_is_read_from_its_envelope_in_s3(self) -> None:
        """The message without data points to the object; the object has the record."""
        full = _letter().document()
        pointer = {k: v for k, v in full.items() if k != "data_base64"}
        pointer[OVERFLOW_FIELD] = {"bucket": "b", "key": "dead-letters/x.json", "uri": "s3://b/x"}
        objects = {("b", "dead-letters/x.json"): orjson.dumps(full)}
        m = parse_message(
            "q", "1", "h", orjson.dumps(pointer).decode(), fetch=lambda b, k: objects[(b, k)]
        )
        assert m.kind is Kind.LETTER
        assert not m.problem
        assert m.letter is not None
        assert m.letter.record.data == b'{"id": 1}'

    def test_an_oversize_letter_whose_object_is_gone_is_listed_with_the_problem(self) -> None:
        pointer = {k: v for k, v in _letter().document().items() if k != "data_base64"}
        pointer[OVERFLOW_FIELD] = {"bucket": "b", "key": "gone", "uri": "s3://b/gone"}

        def missing(bucket: str, key: str) -> bytes:
            raise KeyError(key)

        m = parse_message("q", "1", "h", orjson.dumps(pointer).decode(), fetch=missing)
        assert m.kind is Kind.LETTER
        assert "s3://b/gone cannot be read" in m.problem

    def test_the_redrive_count_is_read_from_the_attribute_when_the_body_lacks_it(self) -> None:
        body = orjson.dumps(_letter().document()).decode()
        m = parse_message("q", "1", "h", body, attributes={REDRIVES_ATTRIBUTE: "2"})
        assert m.letter is not None
        assert m.letter.redrives == 2

    @pytest.mark.parametrize(
        "body", ["", "[1]", '{"reason": "x"}', '{"partition_key": "k", "sequence_number": "x"}']
    )
    def test_anything_else_is_foreign_with_the_reason(self, body: str) -> None:
        m = parse_message("q", "1", "h", body)
        assert m.kind is Kind.FOREIGN
        assert m.problem
        assert m.letter is None


class TestSelection:
    def test_step_matches_exactly_or_as_a_prefix_up_to_a_separator(self) -> None:
        m = parse_message("q", "1", "h", orjson.dumps(_letter("sink:orders").document()).decode())
        assert Selection(step="sink").matches(m)
        assert Selection(step="sink:orders").matches(m)
        assert not Selection(step="sin").matches(m)
        assert not Selection(function="other").matches(m)
        assert Selection(since=10.0).matches(m)
        assert not Selection(since=10.5).matches(m)

    def test_only_letters_are_ever_selected(self) -> None:
        assert not Selection().matches(parse_message("q", "1", "h", "hello"))


class TestRedriveOrder:
    def test_the_parts_of_a_fan_out_go_back_in_the_order_the_chain_made_them(self) -> None:
        """Part 10 of a record comes after part 9 (not after part 1, as text sorts it), and
        a letter of an earlier sequence number before both."""
        letters = []
        for seq, part in (("4959", "10"), ("4959", "9"), ("4959", "1.10"), ("4959", "1.2"),
                          ("4958", "2"), ("4959", "")):  # fmt: skip
            rec = Record(b"{}", "k", seq, 0, shard_id="shardId-000000000001")
            rec.part = part
            letter = DeadLetter(rec, "no", "ValueError", "sink:orders", "fn", "shop", 10.0)
            letters.append(Message("q", part, "h", Kind.LETTER, 0.0, "", letter))
        ordered = [(m.letter.record.sequence_number, m.letter.record.part)  # type: ignore[union-attr]
                   for m in sorted(letters, key=_position)]  # fmt: skip
        assert ordered == [("4958", "2"), ("4959", ""), ("4959", "1.2"), ("4959", "1.10"),
                           ("4959", "9"), ("4959", "10")]  # fmt: skip


#: A function with a session window (a ``window`` step with ``gap_s``) after a filter.
WINDOWED = {"name": "shop", "sinks": {}, "functions": {"fn": {"processors": [
    {"filter": {"match": {"kind": ["buy"]}}},
    {"window": {"key": "user", "gap_s": 30, "field": "ts", "aggregate": {"n": "count"}}},
]}}}  # fmt: skip


class TestWindowedFunctions:
    @pytest.mark.parametrize("dry_run", [True, False])
    def test_what_the_window_would_take_for_a_redelivery_is_refused_with_the_fix(
        self, dry_run: bool
    ) -> None:
        """A letter of a step before the window (or of decoding) and an on-failure range's
        records are behind the window's applied position: refused (left), never run."""
        early = Message("q", "1", "h", Kind.LETTER, 0.0, "", _letter("processors[0].filter"))
        event = Message("q", "2", "h", Kind.LETTER, 0.0, "", _letter("event"))
        rng = Message("q", "3", "h", Kind.RANGE, 0.0, "{}")
        found = Resolution("fn", [Record(b"{}", "k", "1", shard_id="s")], "stream")
        done = redrive(WINDOWED, Scan(), [early, event, rng], dry_run=dry_run,
                       resolve=lambda _: found)  # fmt: skip
        assert sorted((r.message.id, r.fate) for r in done) == [
            ("1", Fate.REFUSED), ("2", Fate.REFUSED), ("3", Fate.REFUSED)
        ]  # fmt: skip
        for r in done:
            assert "processors[1]" in r.detail
            assert "dlq discard" in r.detail
