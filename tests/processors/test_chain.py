"""The chain runner: step by step over the batch, failures captured per record."""

from __future__ import annotations

from processors.chain import EVENT_STEP, Chain, Step
from stream.exceptions import DecodeError, RetryableError
from stream.records import Record


def batch(n: int) -> list[Record]:
    return [Record(f'{{"i":{i}}}'.encode(), f"k{i}", str(i), index=i) for i in range(n)]


class TestChain:
    def test_a_step_that_returns_none_drops_and_is_counted(self):
        chain = Chain([Step.of("processors[0].f", lambda r: r if r.json["i"] % 2 else None)])
        result = chain.run(batch(4))
        assert [r.json["i"] for r in result.records] == [1, 3]
        assert result.dropped == {"processors[0].f": 2}

    def test_fan_out_keeps_the_source_index(self):
        chain = Chain([Step.of("fan", lambda r: [r.derive({"c": 1}), r.derive({"c": 2})])])
        result = chain.run(batch(2))
        assert [(r.index, r.json["c"]) for r in result.records] == [(0, 1), (0, 2), (1, 1), (1, 2)]

    def test_an_exception_fails_only_its_record_permanently(self):
        def boom(r: Record) -> Record:
            if r.json["i"] == 1:
                raise KeyError("user_id")
            return r

        result = Chain([Step.of("processors[3].x", boom)]).run(batch(3))
        assert len(result.records) == 2
        (failure,) = result.failures
        assert (failure.record.index, failure.step, failure.retryable) == (
            1,
            "processors[3].x",
            False,
        )

    def test_a_retryable_error_is_marked_retryable(self):
        def throttled(r: Record) -> Record:
            raise RetryableError("throttled")

        result = Chain([Step.of("s", throttled)]).run(batch(1))
        assert result.failures[0].retryable is True

    def test_a_wrong_return_value_names_the_step_and_the_fix(self):
        result = Chain([Step.of("processors[1].bad", lambda r: {"not": "a record"})]).run(batch(1))
        message = str(result.failures[0].error)
        assert "processors[1].bad" in message
        assert "returned dict, expected Record" in message

    def test_prepare_sees_exactly_the_records_that_reach_the_step(self):
        seen: list[list[int]] = []

        class Lookup:
            def prepare(self, records):
                seen.append([r.index for r in records])

            def __call__(self, r):
                return r

        chain = Chain([Step.of("f", lambda r: r if r.index != 1 else None), Step.of("l", Lookup())])
        chain.run(batch(3))
        assert seen == [[0, 2]]

    def test_undecodable_records_fail_at_the_event_step_before_any_processor(self):
        bad = Record(b"x", "k", "1", error="KPL aggregate checksum (MD5) mismatch")
        result = Chain([]).run([bad, *batch(1)])
        (failure,) = result.failures
        assert failure.step == EVENT_STEP
        assert isinstance(failure.error, DecodeError)
        assert len(result.records) == 1
