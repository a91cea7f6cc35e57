"""Whose fault: errors that are not a record's are reported for retry, never dead-lettered.

The rule is :mod:`stream.faults`; these tests run it through :class:`stream.batch.BatchRunner`
with in-memory sinks (the real-server side is tests/integration/test_infrastructure_errors.py).
"""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING, Any, ClassVar

import orjson
import pytest
from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError

from processors.chain import Chain, Step
from processors.filter import Filter
from sinks.base import OK, Ordering, Outcome, Sink, permanent, retryable
from sinks.memory import MemorySink
from stream.batch import BatchRunner
from stream.exceptions import DecodeError, RecordError
from stream.faults import (
    BROKEN_STEP_MIN_RECORDS,
    broken_steps,
    infrastructure_code,
    is_infrastructure,
)
from stream.logs import BatchLog, JsonFormatter, StdoutHandler
from stream.metrics import Metrics
from stream.testing import EventFactory

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from stream.records import Record


def client_error(code: str, status: int = 400) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": f"{code} message"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "PutItem")


def event(keys: Sequence[str], factory: EventFactory | None = None) -> dict[str, Any]:
    f = factory or EventFactory()
    return f.batch((key, {"k": key, "n": n}) for n, key in enumerate(keys))


def seqs(ev: dict[str, Any]) -> list[str]:
    return [r["kinesis"]["sequenceNumber"] for r in ev["Records"]]


def reported(response: Any) -> list[str]:
    return [item["itemIdentifier"] for item in response["batchItemFailures"]]


def runner(
    steps: Sequence[Callable[[Record], Any]] = (),
    *,
    sinks: dict[str, Sink] | None = None,
    ordering: Ordering = Ordering.PER_KEY,
) -> BatchRunner:
    chain = Chain([Step.of(f"processors[{i}].use", s) for i, s in enumerate(steps)])
    all_sinks: dict[str, Sink] = {"out": MemorySink("out"), "dlq": MemorySink("dlq")}
    all_sinks.update(sinks or {})
    return BatchRunner(chain, all_sinks, default_route=["out"], on_failure="dlq", ordering=ordering)


class Scripted(Sink):
    """A sink whose outcome per record comes from a function of the record."""

    per_key_safe: ClassVar[bool] = True
    max_batch: ClassVar[int] = 10_000

    def __init__(self, name: str, decide: Callable[[Record], Outcome]) -> None:
        super().__init__(name)
        self.decide = decide
        self.seen: list[int] = []

    def _write(self, items: Sequence[Record]) -> list[Outcome]:
        self.seen += [item.index for item in items]
        return [self.decide(item) for item in items]


class Raising(Sink):
    """A sink whose every write raises, as a client that cannot be made does."""

    def __init__(self, name: str, error: Exception) -> None:
        super().__init__(name)
        self.error = error

    def _write(self, items: Sequence[Record]) -> list[Outcome]:
        raise self.error


class TestInfrastructureCode:
    @pytest.mark.parametrize(
        "code",
        [
            "ResourceNotFoundException",
            "AccessDeniedException",
            "AccessDenied",
            "UnrecognizedClientException",
            "ExpiredTokenException",
            "InvalidSignatureException",
            "AWS.SimpleQueueService.NonExistentQueue",
            "NoSuchBucket",
        ],
    )
    def test_aws_errors_about_the_resource_or_the_identity_are_infrastructure(self, code):
        assert infrastructure_code(client_error(code)) == code

    @pytest.mark.parametrize(
        "code", ["ValidationException", "ConditionalCheckFailedException", "ThrottlingException"]
    )
    def test_errors_about_the_request_or_transient_ones_are_not(self, code):
        assert infrastructure_code(client_error(code)) is None

    def test_botocore_configuration_errors_are_infrastructure_by_class(self):
        assert infrastructure_code(NoRegionError()) == "NoRegionError"
        assert infrastructure_code(NoCredentialsError()) == "NoCredentialsError"

    def test_an_error_raised_from_one_is_infrastructure_through_its_cause(self):
        def lookup() -> None:
            try:
                raise client_error("AccessDeniedException")
            except ClientError as exc:
                msg = "lookup failed"
                raise RuntimeError(msg) from exc

        with pytest.raises(RuntimeError) as caught:
            lookup()
        assert infrastructure_code(caught.value) == "AccessDeniedException"

    def test_an_error_named_like_a_botocore_one_elsewhere_is_not(self):
        class NoRegionError(Exception):  # a plugin's own class of the same name
            pass

        assert infrastructure_code(NoRegionError()) is None

    def test_outcome_codes_and_class_names_are_both_recognised(self):
        assert is_infrastructure("ResourceNotFoundException")
        assert is_infrastructure("NoCredentialsError")
        assert not is_infrastructure("ValidationException")
        assert not is_infrastructure("")


class TestBrokenSteps:
    def test_the_threshold_is_two_records(self):
        assert BROKEN_STEP_MIN_RECORDS == 2

    def test_a_record_error_is_the_record_s_fault_however_many_fail(self):
        errors = [("p", DecodeError("not JSON")) for _ in range(10)]
        assert broken_steps(errors, {}) == {}

    def test_different_exception_types_are_not_one_broken_step(self):
        errors = [("p", KeyError("a")), ("p", TypeError("b"))]
        assert broken_steps(errors, {}) == {}


class TestBrokenStepThroughTheBatch:
    def test_a_step_raising_attribute_error_on_every_record_fails_the_batch_for_retry(self):
        def broken(record):
            return record.jsn  # a typo: AttributeError on every record

        ev = event(["a", "b", "c"])
        dlq = MemorySink("dlq")
        result = runner([broken], sinks={"dlq": dlq}).handle(ev)
        assert reported(result.response) == seqs(ev)
        assert result.dead_letters == []
        assert dlq.log == []
        (where,) = result.infrastructure
        assert where == "processors[0].use"
        assert "AttributeError on all 3 records" in result.infrastructure[where]

    def test_a_single_record_failing_is_dead_lettered_as_its_own_fault(self):
        def broken(record):
            return record.jsn

        result = runner([broken]).handle(event(["a"]))
        assert reported(result.response) == []
        assert [d.error for d in result.dead_letters] == ["AttributeError"]
        assert result.infrastructure == {}

    def test_a_step_that_passes_one_record_dead_letters_the_others(self):
        def picky(record):
            if record.json["n"] == 1:
                return record
            msg = f"bad n {record.json['n']}"
            raise ValueError(msg)

        result = runner([picky]).handle(event(["a", "b", "c"]))
        assert reported(result.response) == []
        assert len(result.dead_letters) == 2
        assert result.written == {"out": 1}

    def test_a_step_that_drops_one_record_is_not_broken(self):
        def drop_first(record):
            if record.json["n"] != 0:
                raise ValueError("bad")

        result = runner([drop_first]).handle(event(["a", "b", "c"]))
        assert reported(result.response) == []
        assert len(result.dead_letters) == 2

    def test_records_passing_a_broken_step_s_predecessor_do_not_clear_it(self):
        def ok(record):
            return record

        def broken(record):
            raise TypeError("unsupported operand")

        ev = event(["a", "b"])
        result = runner([ok, broken]).handle(ev)
        assert reported(result.response) == seqs(ev)
        assert list(result.infrastructure) == ["processors[1].use"]

    def test_a_later_step_failing_clears_an_earlier_one(self):
        def first(record):
            if record.json["n"] == 0:
                raise KeyError("x")
            return record

        def second(record):
            raise KeyError("y")

        # processors[0] passed record 1 and failed record 0 alone: record 0 is poison;
        # processors[1] failed every record that reached it, but only one: poison too.
        result = runner([first, second]).handle(event(["a", "b"]))
        assert reported(result.response) == []
        assert len(result.dead_letters) == 2

    def test_a_record_error_on_every_record_is_dead_lettered(self):
        def strict(record):
            raise RecordError("amount must be positive")

        result = runner([strict]).handle(event(["a", "b", "c"]))
        assert reported(result.response) == []
        assert len(result.dead_letters) == 3

    def test_records_that_are_not_json_are_poison_even_all_of_them(self):
        f = EventFactory()
        ev = f.event([f.raw(b"GET /", "a"), f.raw(b"POST /", "b")])

        def needs_json(record):
            return record.as_dict() and record

        result = runner([needs_json]).handle(ev)
        assert reported(result.response) == []
        assert {d.error for d in result.dead_letters} == {"DecodeError"}

    @pytest.mark.parametrize("fuse", [True, False])
    def test_a_built_in_step_failing_every_record_dead_letters_them(self, fuse):
        # What a built-in raises is about the record's data: an expr comparing a string.
        step = Step.of("processors[0].filter", Filter(expr="n > `0`"))
        dlq = MemorySink("dlq")
        r = BatchRunner(
            Chain([step], fuse=fuse), {"out": MemorySink("out"), "dlq": dlq},
            default_route=["out"], on_failure="dlq",
        )  # fmt: skip
        f = EventFactory()
        result = r.handle(f.batch([("a", {"n": "x"}), ("b", {"n": "y"}), ("c", {"n": "z"})]))
        assert reported(result.response) == []
        assert [d.error for d in result.dead_letters] == ["TypeError"] * 3
        assert result.infrastructure == {}

    def test_a_failing_prepare_hook_is_a_broken_step_for_two_records(self):
        class Hooked:
            def prepare(self, records):
                raise AttributeError("'NoneType' object has no attribute 'batch_get_item'")

            def __call__(self, record):
                return record

        ev = event(["a", "b"])
        result = runner([Hooked()]).handle(ev)
        assert reported(result.response) == seqs(ev)
        assert result.dead_letters == []


class TestInfrastructureThroughTheBatch:
    def test_a_step_raising_no_region_fails_even_a_single_record_for_retry(self):
        def lookup(record):
            raise NoRegionError

        ev = event(["a"])
        result = runner([lookup]).handle(ev)
        assert reported(result.response) == seqs(ev)
        assert result.dead_letters == []
        assert "NoRegionError" in result.infrastructure["processors[0].use"]

    def test_a_sink_returning_an_infrastructure_code_is_reported_not_dead_lettered(self):
        missing = permanent(
            "DynamoDB ResourceNotFoundException on table 'x'", "ResourceNotFoundException"
        )
        sink = Scripted("out", lambda _: missing)
        ev = event(["a", "b"])
        dlq = MemorySink("dlq")
        result = runner(sinks={"out": sink, "dlq": dlq}).handle(ev)
        assert reported(result.response) == seqs(ev)
        assert dlq.log == []
        assert list(result.infrastructure) == ["sink:out"]

    def test_a_sink_whose_client_cannot_be_made_is_reported_not_raised(self):
        ev = event(["a", "b"])
        result = runner(sinks={"out": Raising("out", NoRegionError())}).handle(ev)
        assert reported(result.response) == seqs(ev)
        assert "NoRegionError" in result.infrastructure["sink:out"]

    def test_a_sink_raising_a_bug_still_fails_the_invocation(self):
        r = runner(sinks={"out": Raising("out", ZeroDivisionError("oops"))})
        with pytest.raises(ZeroDivisionError):
            r.invoke(event(["a"]))

    def test_a_dead_letter_sink_that_cannot_write_never_loses_a_record(self):
        f = EventFactory()
        ev = f.event(
            [f.record({"k": "a"}, "a"), f.raw(b"not json", "b"), f.record({"k": "c"}, "c")]
        )

        def needs_json(record):
            return record.as_dict() and record

        dlq = Raising("dlq", NoCredentialsError())
        result = runner([needs_json], sinks={"dlq": dlq}, ordering=Ordering.NONE).handle(ev)
        assert reported(result.response) == [seqs(ev)[1]]
        assert result.dead_letters == []
        assert "NoCredentialsError" in result.infrastructure["sink:dlq"]

    def test_a_dead_letter_queue_that_is_missing_reports_its_records(self):
        f = EventFactory()
        ev = f.event([f.raw(b"not json", "a"), f.record({"k": "b"}, "b")])

        def needs_json(record):
            return record.as_dict() and record

        missing = retryable("queue does not exist", "AWS.SimpleQueueService.NonExistentQueue")
        dlq = Scripted("dlq", lambda _: missing)
        result = runner([needs_json], sinks={"dlq": dlq}, ordering=Ordering.NONE).handle(ev)
        assert reported(result.response) == [seqs(ev)[0]]
        assert list(result.infrastructure) == ["sink:dlq"]


class TestOrdering:
    """An infrastructure failure of some records holds back what the policy says, and is
    reported by the parent Kinesis sequence number."""

    @staticmethod
    def denied_for(key: str) -> Callable[[Record], Outcome]:
        denied = permanent("AccessDenied on prefix", "AccessDenied")
        return lambda rec: denied if rec.partition_key == key else OK

    @pytest.mark.parametrize(
        ("ordering", "expected"),
        [
            (Ordering.STRICT, [1, 3]),  # Lambda resumes at 1: 2 and 4 come again too
            (Ordering.PER_KEY, [1, 3]),
            (Ordering.NONE, [1, 3]),
        ],
    )
    def test_what_each_policy_reports(self, ordering, expected):
        keys = ["b", "a", "b", "a", "b"]
        ev = event(keys)
        sink = Scripted("out", self.denied_for("a"))
        result = runner(sinks={"out": sink}, ordering=ordering).handle(ev)
        assert reported(result.response) == [seqs(ev)[i] for i in expected]
        assert result.dead_letters == []

    def test_per_key_holds_back_the_rest_of_the_key_behind_a_step_infrastructure_error(self):
        def lookup(record):
            if record.partition_key == "a" and record.json["n"] == 0:
                raise client_error("ResourceNotFoundException")
            return record

        ev = event(["a", "b", "a"])
        out = Scripted("out", lambda _: OK)
        result = runner([lookup], sinks={"out": out}).handle(ev)
        assert reported(result.response) == [seqs(ev)[0], seqs(ev)[2]]
        assert out.seen == [1]  # record 2 (key a) held back, record 1 (key b) written

    def test_user_records_of_an_aggregate_are_reported_by_the_parent_sequence_number(self):
        f = EventFactory()
        agg = f.aggregate([("a", orjson.dumps({"k": "a"})), ("b", orjson.dumps({"k": "b"}))])
        ev = f.event([f.record({"k": "z"}, "z"), agg])
        sink = Scripted("out", self.denied_for("b"))
        result = runner(sinks={"out": sink}, ordering=Ordering.NONE).handle(ev)
        assert reported(result.response) == [seqs(ev)[1]]


class TestLogAndMetrics:
    def test_an_infrastructure_error_is_logged_once_per_batch_not_per_record(self):
        stream = io.StringIO()
        logger = logging.getLogger("shardline.test_faults")
        logger.handlers[:] = []
        handler = StdoutHandler(stream)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        missing = permanent("table missing", "ResourceNotFoundException")
        r = runner(sinks={"out": Scripted("out", lambda _: missing)})
        r.log = BatchLog("f", "p", logger=logger)
        r.invoke(event(["a", "b", "c", "d"]))
        lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
        errors = [line for line in lines if line["level"] == "ERROR"]
        assert len(errors) == 1
        assert errors[0]["message"] == "infrastructure error, batch reported for retry"
        assert errors[0]["errors"] == {"sink:out": "sink:out: table missing"}
        assert not any(line["message"] == "poison record dead-lettered" for line in lines)

    def test_the_metric_counts_each_place_once(self):
        missing = permanent("table missing", "ResourceNotFoundException")
        r = runner(sinks={"out": Scripted("out", lambda _: missing)})
        result = r.handle(event(["a", "b", "c"]))
        (doc, *_) = Metrics("p", "f", stream=io.StringIO()).documents(result, 3)
        assert doc["InfrastructureErrors"] == 1
        assert doc["RecordsDeadLettered"] == 0
        assert doc["RetryableFailures"] == 3

    def test_a_clean_batch_has_none(self):
        result = runner().handle(event(["a"]))
        (doc,) = Metrics("p", "f", stream=io.StringIO()).documents(result, 1)
        assert doc["InfrastructureErrors"] == 0
        assert result.infrastructure == {}
