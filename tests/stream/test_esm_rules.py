"""The local event source mapping, rule by rule, without a server.

The mapping reads a small in-memory Kinesis (:class:`FakeKinesis`: the five calls it makes,
with Kinesis's end-of-shard behaviour), invokes a scripted invoker, keeps its checkpoints in
:class:`MemoryCheckpoints`, and runs on an injected clock, so nothing waits. Each test is
one documented behaviour (../shared/reference/lambda-kinesis-semantics.md, section 1); the
stateful test at the end checks the engine against a small model of the same rules.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import threading
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import TYPE_CHECKING, Any, ClassVar

import orjson
import pytest
from hypothesis import given as hypothesis_given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from processors.match import PatternError
from stream.esm.checkpoints import SHARD_END, LeaseLost, ShardInfo
from stream.esm.filter import RecordFilter
from stream.esm.invoke import InProcessInvoker, InvokeResult
from stream.esm.mapping import CLOCK_SKEW_TOLERANCE_S, GET_RECORDS_PER_SECOND, EventSourceMapping
from stream.esm.rules import (
    AGE_EXCEEDED,
    MAX_PAYLOAD_BYTES,
    RETRIES_EXHAUSTED,
    SHARD_READ_BYTES_PER_S,
    SHARD_READS_PER_S,
    Batch,
    InvocationStatus,
    MappingSettings,
    ShardRecord,
    classify_response,
    decide,
    expired,
    iso_time,
    lane_of,
    next_read_at,
    on_failure_message,
)
from stream.esm.store import MemoryCheckpoints
from stream.event import records_from_event
from stream.testing import encode_aggregate

if TYPE_CHECKING:
    from collections.abc import Callable

T0 = 1_767_225_600.0
STREAM = "clicks"
ARN = f"arn:aws:kinesis:us-east-1:123456789012:stream/{STREAM}"
SHARD = "shardId-000000000000"


class Clock:
    """Epoch seconds that move only when told (``sleep`` moves them)."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


class FakeKinesis:
    """An in-memory stream with the calls the mapping makes. Like Kinesis, GetRecords on a
    closed shard gives no next iterator once its last record has been returned."""

    def __init__(self, clock: Clock, shards: tuple[str, ...] = (SHARD,)) -> None:
        self.clock = clock
        self.infos: dict[str, dict[str, Any]] = {}
        self.records: dict[str, list[dict[str, Any]]] = {}
        self.calls: dict[str, list[float]] = defaultdict(list)
        self._seq = 49590338271490256608559692538361571095921575989136588898
        for shard_id in shards:
            self.add_shard(shard_id)

    def add_shard(self, shard_id: str, parents: tuple[str, ...] = ()) -> None:
        info: dict[str, Any] = {
            "ShardId": shard_id,
            "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": str(2**128 - 1)},
            "SequenceNumberRange": {"StartingSequenceNumber": str(self._seq)},
        }
        if parents:
            info["ParentShardId"] = parents[0]
        if len(parents) > 1:
            info["AdjacentParentShardId"] = parents[1]
        self.infos[shard_id] = info
        self.records[shard_id] = []

    def close(self, shard_id: str) -> None:
        last = self.records[shard_id][-1]["SequenceNumber"] if self.records[shard_id] else "0"
        self.infos[shard_id]["SequenceNumberRange"]["EndingSequenceNumber"] = last

    def put(self, key: str, data: Any, shard_id: str = SHARD, arrival: float | None = None) -> str:
        self._seq += 1_000_000_007
        seq = str(self._seq)
        raw = data if isinstance(data, bytes) else orjson.dumps(data)
        moment = dt.datetime.fromtimestamp(self.clock() if arrival is None else arrival, dt.UTC)
        self.records[shard_id].append(
            {
                "SequenceNumber": seq,
                "ApproximateArrivalTimestamp": moment,
                "Data": raw,
                "PartitionKey": key,
            }
        )
        return seq

    def describe_stream_summary(self, StreamName: str) -> dict[str, Any]:
        return {"StreamDescriptionSummary": {"StreamName": StreamName, "StreamARN": ARN}}

    def list_shards(self, **_: Any) -> dict[str, Any]:
        return {"Shards": [orjson.loads(orjson.dumps(i)) for i in self.infos.values()]}

    def get_shard_iterator(self, **kw: Any) -> dict[str, Any]:
        shard_id, kind = kw["ShardId"], kw["ShardIteratorType"]
        positions = [int(r["SequenceNumber"]) for r in self.records[shard_id]]
        if kind == "TRIM_HORIZON":
            index = 0
        elif kind == "LATEST":
            index = len(positions)
        elif kind == "AT_TIMESTAMP":
            stamps = [r["ApproximateArrivalTimestamp"].timestamp() for r in self.records[shard_id]]
            index = next((i for i, t in enumerate(stamps) if t >= kw["Timestamp"]), len(stamps))
        else:
            start = int(kw["StartingSequenceNumber"])
            after = kind == "AFTER_SEQUENCE_NUMBER"
            index = next(
                (i for i, p in enumerate(positions) if p > start or (not after and p == start)),
                len(positions),
            )
        return {"ShardIterator": f"{shard_id}|{index}"}

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:
        shard_id, _, index_text = ShardIterator.partition("|")
        self.calls[shard_id].append(self.clock())
        records = self.records[shard_id]
        index = int(index_text)
        page = records[index : index + Limit]
        end = index + len(page)
        response: dict[str, Any] = {
            "Records": page,
            "MillisBehindLatest": 0 if end >= len(records) else 1000,
        }
        closed = "EndingSequenceNumber" in self.infos[shard_id]["SequenceNumberRange"]
        if not (closed and end >= len(records)):
            response["NextShardIterator"] = f"{shard_id}|{end}"
        return response


def seqs(event: dict[str, Any]) -> list[str]:
    return [r["kinesis"]["sequenceNumber"] for r in event["Records"]]


def result(payload: Any = None, *, error: bool = False, timed_out: bool = False) -> InvokeResult:
    failure = None
    if error or timed_out:
        kind = "Sandbox.Timedout" if timed_out else "ValueError"
        failure = {"errorType": kind, "errorMessage": "boom"}
    return InvokeResult(payload, failure, timed_out, 0.01, str(uuid.uuid4()))


def ok(_: dict[str, Any]) -> InvokeResult:
    return result()


def fail_at(*indexes: int) -> Callable[[dict[str, Any]], InvokeResult]:
    def answer(event: dict[str, Any]) -> InvokeResult:
        ids = [{"itemIdentifier": seqs(event)[i]} for i in indexes]
        return result({"batchItemFailures": ids})

    return answer


def respond(payload: Any) -> Callable[[dict[str, Any]], InvokeResult]:
    return lambda _: result(payload)


def error(_: dict[str, Any]) -> InvokeResult:
    return result(error=True)


def timeout(_: dict[str, Any]) -> InvokeResult:
    return result(timed_out=True)


class Scripted:
    """An invoker that answers from a script (then succeeds) and keeps every event."""

    def __init__(self, *answers: Callable[[dict[str, Any]], InvokeResult]) -> None:
        self.answers = deque(answers)
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def invoke(self, event: dict[str, Any], *, timeout_s: float) -> InvokeResult:
        with self.lock:
            self.events.append(event)
            answer = self.answers.popleft() if self.answers else ok
        return answer(event)

    @property
    def delivered(self) -> list[list[str]]:
        return [seqs(e) for e in self.events]


@dataclass
class Rig:
    clock: Clock
    kinesis: FakeKinesis
    invoker: Scripted
    store: MemoryCheckpoints
    esm: EventSourceMapping
    failures: list[dict[str, Any]] = field(default_factory=list)

    waited: list[float] = field(default_factory=list)

    def steps(self, n: int = 1, advance: float = 0.0) -> None:
        """Step ``n`` times, moving the clock by ``advance`` after each step, and over a
        retry's wait (``retry_delay``) when one is what the mapping waits for: the jumps are
        kept in :attr:`waited`."""
        for _ in range(n):
            self.esm.step()
            self.clock.t += advance
            wake = self._retry_due()
            if wake is not None and wake > self.clock.t:
                self.waited.append(wake - self.clock.t)
                self.clock.t = wake

    def _retry_due(self) -> float | None:
        """When the earliest retry waiting in a lane may go (reads the mapping's lanes)."""
        due = [
            lane.not_before
            for shard in self.esm._shards.values()
            for lane in shard.lanes
            if lane.pending and not lane.busy and not lane.failures  # not an invoke error's
        ]
        return min(due, default=None)

    @property
    def checkpoint(self) -> str | None:
        return self.store.positions().get(SHARD)


class SkewedKinesis(FakeKinesis):
    """A stream whose clock is ``ahead`` seconds behind the worker's: its answers carry
    that time in their HTTP ``Date`` header (whole seconds, as every HTTP server sends)."""

    def __init__(self, clock: Clock, ahead: float) -> None:
        super().__init__(clock)
        self.ahead = ahead

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:
        response = super().get_records(ShardIterator, Limit)
        date = formatdate(self.clock() - self.ahead, usegmt=True)
        response["ResponseMetadata"] = {"HTTPHeaders": {"date": date}}
        return response


def rig(
    *answers: Callable[[dict[str, Any]], InvokeResult],
    shards: tuple[str, ...] = (SHARD,),
    store: MemoryCheckpoints | None = None,
    kinesis: FakeKinesis | None = None,
    clock: Clock | None = None,
    on_failure: Callable[[Any], None] | None = None,
    on_failure_payload: bool = False,
    share: int = 1,
    **settings: Any,
) -> Rig:
    clock = clock or Clock()
    kinesis = kinesis or FakeKinesis(clock, shards)
    invoker = Scripted(*answers)
    store = store or MemoryCheckpoints()
    failures: list[dict[str, Any]] = []
    esm = EventSourceMapping(
        STREAM,
        MappingSettings(**{"size": 10, **settings}),
        invoker,
        store,
        client=kinesis,
        on_failure=on_failure or failures.append,
        on_failure_payload=on_failure_payload,
        now=clock,
        sleep=clock.sleep,
        function_arn="arn:aws:lambda:us-east-1:123456789012:function:f",
        share=share,
    )
    return Rig(clock, kinesis, invoker, store, esm, failures)


def keys_in_lanes(lanes: int) -> list[str]:
    """One partition key per lane, found by the same stable hash the mapping uses."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < lanes:
        found.setdefault(lane_of(f"k{i}", lanes), f"k{i}")
        i += 1
    return [found[lane] for lane in range(lanes)]


given_reads = hypothesis_given(
    st.integers(1, 8), st.lists(st.integers(0, 10 * 1024 * 1024), min_size=1, max_size=40)
)


# -- settings ---------------------------------------------------------------------------


class TestMappingSettings:
    PLAN_FUNCTION: ClassVar[dict[str, Any]] = {  # as `shardline compile` writes it for the example
        "timeout_s": 60,
        "batch": {
            "size": 500,
            "window_s": 1,
            "starting_position": "trim_horizon",
            "starting_timestamp": None,
            "parallelization": 1,
            "bisect_on_error": True,
            "max_retries": 3,
            "max_record_age_s": 3600,
        },
        "filter_criteria": [{"data": {"event_type": ["click"]}}],
    }

    def test_reads_a_compiled_plan_function(self):
        s = MappingSettings.from_plan(self.PLAN_FUNCTION)
        assert (s.size, s.window_s, s.starting_position, s.parallelization) == (
            500,
            1.0,
            "TRIM_HORIZON",
            1,
        )
        assert (s.bisect_on_error, s.max_retries, s.max_record_age_s, s.timeout_s) == (
            True,
            3,
            3600.0,
            60.0,
        )
        assert s.filter_criteria == ({"data": {"event_type": ["click"]}},)

    def test_an_iso_starting_timestamp_is_read_as_utc_epoch_seconds(self):
        batch = {"starting_position": "at_timestamp", "starting_timestamp": "2026-01-01T00:00:00"}
        s = MappingSettings.from_plan({"batch": batch})
        assert s.starting_timestamp == T0

    @pytest.mark.parametrize(
        ("kwargs", "field_name"),
        [
            ({"size": 0}, "size"),
            ({"size": 10_001}, "size"),
            ({"window_s": 301}, "window_s"),
            ({"parallelization": 11}, "parallelization"),
            ({"max_retries": -2}, "max_retries"),
            ({"max_record_age_s": 59}, "max_record_age_s"),
            ({"starting_position": "oldest"}, "starting_position"),
            ({"starting_position": "at_timestamp"}, "starting_timestamp"),
        ],
    )
    def test_values_outside_aws_ranges_are_refused_naming_the_field(self, kwargs, field_name):
        with pytest.raises(ValueError, match=field_name):
            MappingSettings(**kwargs)


# -- the response -----------------------------------------------------------------------


BATCH = ["100", "200", "300"]


class TestClassifyResponse:
    @pytest.mark.parametrize(
        "payload", [None, {}, {"batchItemFailures": []}, {"batchItemFailures": None}]
    )
    def test_these_responses_are_full_success(self, payload):
        assert classify_response(payload, BATCH).kind == "success"

    @pytest.mark.parametrize("listed", [["300", "200"], ["200", "300"]])
    def test_the_lowest_listed_sequence_number_is_where_redelivery_starts(self, listed):
        payload = {"batchItemFailures": [{"itemIdentifier": seq} for seq in listed]}
        verdict = classify_response(payload, BATCH)
        assert (verdict.kind, verdict.index) == ("partial", 1)

    @pytest.mark.parametrize(
        "payload",
        [
            {"batchItemFailures": [{"itemIdentifier": ""}]},
            {"batchItemFailures": [{"itemIdentifier": None}]},
            {"batchItemFailures": [{"ItemIdentifier": "200"}]},
            {"batchItemFailures": ["200"]},
            {"batchItemFailures": "200"},
            {"batchItemFailures": [{"itemIdentifier": "200"}, {"itemIdentifier": ""}]},
            "OK",
            ["200"],
        ],
    )
    def test_an_empty_null_or_badly_named_identifier_or_bad_shape_fails_the_whole_batch(
        self, payload
    ):
        verdict = classify_response(payload, BATCH)
        assert (verdict.kind, verdict.index) == ("invalid", 0)
        assert verdict.reason

    def test_an_identifier_that_is_not_in_the_batch_fails_the_whole_batch(self):
        verdict = classify_response({"batchItemFailures": [{"itemIdentifier": "999"}]}, BATCH)
        assert verdict.kind == "invalid"
        assert "not a sequence number of this batch" in verdict.reason

    def test_an_integer_identifier_is_read_as_its_decimal_string(self):
        verdict = classify_response({"batchItemFailures": [{"itemIdentifier": 200}]}, BATCH)
        assert (verdict.kind, verdict.index) == ("partial", 1)


def records(n: int, arrival: float = T0, shard: str = SHARD) -> tuple[ShardRecord, ...]:
    out = []
    for i in range(n):
        entry: Any = {
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": f"k{i}",
                "sequenceNumber": str(1000 + i),
                "data": "e30=",
                "approximateArrivalTimestamp": arrival + i,
            }
        }
        out.append(ShardRecord(entry, shard, 100, 0))
    return tuple(out)


def decision_for(batch: Batch, answer: InvokeResult, **settings: Any):
    return decide(
        batch,
        payload=answer.payload,
        error=answer.error,
        timed_out=answer.timed_out,
        request_id=answer.request_id,
        settings=MappingSettings(**settings),
    )


class TestDecide:
    def test_a_function_error_retries_the_same_records_and_counts_a_retry(self):
        batch = Batch(SHARD, 0, records(4))
        d = decision_for(batch, result(error=True), max_retries=3)
        assert d.outcome is InvocationStatus.FAILED
        assert d.counted
        assert not d.split
        assert [b.records for b in d.retry] == [batch.records]
        assert (d.retry[0].retries, d.retry[0].invocations) == (1, 1)

    def test_a_timeout_is_handled_as_a_function_error(self):
        batch = Batch(SHARD, 0, records(4))
        d = decision_for(batch, result(timed_out=True), max_retries=3, bisect_on_error=True)
        assert d.split
        assert [len(b.records) for b in d.retry] == [2, 2]

    def test_bisect_splits_in_halves_that_keep_the_retry_count(self):
        batch = Batch(SHARD, 0, records(5), retries=2)
        d = decision_for(batch, result(error=True), bisect_on_error=True, max_retries=2)
        assert d.split
        assert not d.counted
        assert d.exhausted is None
        assert [len(b.records) for b in d.retry] == [3, 2]
        assert [b.retries for b in d.retry] == [2, 2]

    def test_a_single_record_cannot_split_so_its_error_counts(self):
        batch = Batch(SHARD, 0, records(1))
        d = decision_for(batch, result(error=True), bisect_on_error=True, max_retries=5)
        assert d.counted
        assert not d.split

    def test_max_retries_ends_retrying_with_the_records_not_done(self):
        batch = Batch(SHARD, 0, records(3), retries=2, invocations=2)
        d = decision_for(batch, result(error=True), max_retries=2)
        assert d.retry == ()
        assert d.exhausted is not None
        assert d.exhausted.records == batch.records
        assert d.exhausted.invocations == 3

    def test_minus_one_retries_never_exhausts(self):
        batch = Batch(SHARD, 0, records(1), retries=10_000)
        assert decision_for(batch, result(error=True), max_retries=-1).exhausted is None

    def test_a_partial_failure_is_done_before_it_and_retries_the_rest_as_a_retry(self):
        batch = Batch(SHARD, 0, records(5))
        d = decision_for(batch, fail_at(3)(batch.event()), max_retries=2)
        assert d.outcome is InvocationStatus.PARTIAL
        assert d.counted
        assert d.done == batch.records[:3]
        assert d.retry[0].records == batch.records[3:]

    def test_partial_failures_also_exhaust_retries(self):
        batch = Batch(SHARD, 0, records(5), retries=1)
        d = decision_for(batch, fail_at(2)(batch.event()), max_retries=1)
        assert d.done == batch.records[:2]
        assert d.exhausted is not None
        assert d.exhausted.records == batch.records[2:]

    def test_with_bisect_a_partial_failure_splits_at_the_failed_record_without_a_retry(self):
        batch = Batch(SHARD, 0, records(5), retries=1)
        d = decision_for(batch, fail_at(2)(batch.event()), bisect_on_error=True, max_retries=1)
        assert d.split
        assert not d.counted
        assert d.exhausted is None
        assert d.done == batch.records[:2]
        assert d.retry[0].records == batch.records[2:]
        assert d.retry[0].retries == 1

    def test_with_bisect_a_failure_at_the_first_record_counts(self):
        batch = Batch(SHARD, 0, records(5))
        d = decision_for(batch, fail_at(0)(batch.event()), bisect_on_error=True, max_retries=1)
        assert d.counted
        assert not d.split
        assert d.retry[0].records == batch.records

    def test_an_invalid_response_retries_the_whole_batch_as_a_retry(self):
        batch = Batch(SHARD, 0, records(3))
        bad = result({"batchItemFailures": [{"itemIdentifier": ""}]})
        d = decision_for(batch, bad, max_retries=3, bisect_on_error=True)
        assert d.outcome is InvocationStatus.FAILED
        assert d.counted
        assert not d.split
        assert d.done == ()
        assert d.retry[0].records == batch.records

    def test_without_report_batch_item_failures_the_response_is_ignored(self):
        batch = Batch(SHARD, 0, records(3))
        d = decision_for(batch, fail_at(0)(batch.event()), report_batch_item_failures=False)
        assert d.outcome is InvocationStatus.OK
        assert d.done == batch.records

    def test_record_age_is_measured_from_the_oldest_record(self):
        batch = Batch(SHARD, 0, records(3, arrival=T0))
        assert not expired(batch, 60, T0 + 60)
        assert expired(batch, 60, T0 + 60.5)
        assert not expired(batch, -1, T0 + 10**9)


class TestOnFailureMessage:
    def test_has_the_aws_shape(self):
        batch = Batch(
            SHARD,
            0,
            records(3),
            retries=2,
            invocations=3,
            last_error="Unhandled",
            last_request_id="req-1",
        )
        message = on_failure_message(
            batch,
            condition=RETRIES_EXHAUSTED,
            function_arn="arn:aws:lambda:us-east-1:123456789012:function:f",
            stream_arn=ARN,
            request_id="unused",
            now=T0 + 5,
        )
        assert message == {
            "requestContext": {
                "requestId": "req-1",
                "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:f",
                "condition": "RetryAttemptsExhausted",
                "approximateInvokeCount": 3,
            },
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            },
            "version": "1.0",
            "timestamp": "2026-01-01T00:00:05.000Z",
            "KinesisBatchInfo": {
                "shardId": SHARD,
                "startSequenceNumber": "1000",
                "endSequenceNumber": "1002",
                "approximateArrivalOfFirstRecord": "2026-01-01T00:00:00.000Z",
                "approximateArrivalOfLastRecord": "2026-01-01T00:00:02.000Z",
                "batchSize": 3,
                "streamArn": ARN,
            },
        }
        assert iso_time(T0 + 0.0209) == "2026-01-01T00:00:00.020Z"


# -- filter criteria ----------------------------------------------------------------------


class TestRecordFilter:
    def test_records_matching_one_of_the_patterns_pass(self):
        keep = RecordFilter(
            [{"data": {"type": ["click"]}}, {"data": {"amount": [{"numeric": [">", 5]}]}}]
        )
        passes = [
            keep.matches(orjson.dumps(d), "k", "1", T0)
            for d in ({"type": "click"}, {"amount": 9}, {"type": "view", "amount": 1})
        ]
        assert passes == [True, True, False]

    def test_data_that_is_not_json_never_matches_a_data_pattern(self):
        keep = RecordFilter([{"data": {"type": [{"exists": False}]}}])
        assert keep.matches(b"{}", "k", "1", T0)
        assert not keep.matches(b"\xff not json", "k", "1", T0)

    def test_a_pattern_on_the_partition_key_does_not_need_json(self):
        keep = RecordFilter([{"partitionKey": [{"prefix": "user-"}]}])
        assert keep.matches(b"\xff", "user-1", "1", T0)
        assert not keep.matches(b"{}", "order-1", "1", T0)

    def test_a_kpl_aggregate_never_matches_a_data_pattern(self):
        blob = encode_aggregate([("k", b'{"type": "click"}')])
        keep = RecordFilter([{"data": {"type": ["click"]}}])
        assert RecordFilter.aggregated(blob)
        assert not keep.matches(blob, "k", "1", T0)

    def test_an_invalid_pattern_is_refused_with_its_path(self):
        with pytest.raises(PatternError, match=r"data\.type"):
            RecordFilter([{"data": {"type": "click"}}])


# -- the in-process invoker -----------------------------------------------------------------


class TestInProcessInvoker:
    def test_returns_the_response_parsed_from_json(self):
        invoker = InProcessInvoker(lambda event, ctx: {"n": len(event["Records"])})
        got = invoker.invoke({"Records": [1, 2]}, timeout_s=3)
        assert (got.payload, got.error, got.timed_out) == ({"n": 2}, None, False)

    def test_an_exception_is_a_function_error_in_the_runtime_shape(self):
        def handler(event, context):
            raise KeyError("missing")

        got = InProcessInvoker(handler).invoke({"Records": []}, timeout_s=3)
        assert got.error is not None
        assert got.payload is None
        assert (got.error["errorType"], got.error["requestId"]) == ("KeyError", got.request_id)
        assert got.error["stackTrace"]

    def test_a_response_that_is_not_json_is_a_marshal_error(self):
        got = InProcessInvoker(lambda e, c: {1, 2}).invoke({"Records": []}, timeout_s=3)
        assert got.error is not None
        assert got.error["errorType"] == "Runtime.MarshalError"

    def test_running_past_the_timeout_is_a_timeout_and_its_response_is_dropped(self):
        clock = Clock(0.0)

        def slow(event, context):
            clock.t += 2.5
            return {"batchItemFailures": []}

        got = InProcessInvoker(slow, clock=clock).invoke({"Records": []}, timeout_s=2)
        assert got.timed_out
        assert got.payload is None
        assert got.error == {
            "errorType": "Sandbox.Timedout",
            "errorMessage": f"RequestId: {got.request_id} Error: Task timed out after 2.00 seconds",
        }

    def test_the_context_counts_down_and_the_handler_gets_its_own_event(self):
        clock = Clock(0.0)
        seen = {}

        def handler(event, context):
            clock.t += 1
            seen["left"] = context.get_remaining_time_in_millis()
            event["Records"].clear()

        event = {"Records": [{"a": 1}]}
        InProcessInvoker(handler, clock=clock).invoke(event, timeout_s=3)
        assert seen["left"] == 2000
        assert event == {"Records": [{"a": 1}]}


# -- the checkpoint store -----------------------------------------------------------------


class TestMemoryCheckpoints:
    def test_children_are_taken_only_after_their_parent_is_finished(self):
        store = MemoryCheckpoints()
        store.sync_shards(
            [ShardInfo("p", ending_sequence_number="9"), ShardInfo("c", parent_shard_id="p")],
            "trim_horizon",
        )
        (parent,) = store.take()
        assert parent.shard_id == "p"
        store.finish(parent)
        assert [lease.shard_id for lease in store.take()] == ["c"]

    def test_only_the_holder_checkpoints_and_never_backwards(self):
        store = MemoryCheckpoints("a")
        store.sync_shards([ShardInfo("s")], "trim_horizon")
        lease = store.checkpoint(store.take()[0], "50")
        with pytest.raises(ValueError, match="backwards"):
            store.checkpoint(lease, "40")
        store.release(lease)
        with pytest.raises(LeaseLost):
            store.checkpoint(lease, "60")


# -- the mapping ------------------------------------------------------------------------


class TestNextReadAt:
    """The pacing rule: the shard's 5 reads/s and 2 MiB/s split among ``share`` functions."""

    def test_the_first_read_goes_at_once(self):
        assert next_read_at([], share=4) == float("-inf")

    def test_one_function_has_five_reads_per_rolling_second(self):
        reads = [(10.0, 0), (10.2, 0), (10.4, 0), (10.6, 0), (10.8, 0)]
        assert next_read_at(reads) == 11.0
        assert next_read_at(reads[:4]) == 10.6

    def test_five_functions_have_one_read_a_second_each(self):
        reads = [(float(t), 0) for t in range(5)]
        assert next_read_at(reads, share=5) == 5.0

    def test_small_reads_do_not_wait_for_bytes(self):
        assert next_read_at([(3.0, 1000)], share=5) == 3.0

    def test_bytes_over_2_mib_are_paid_at_the_functions_share(self):
        mib = 1024 * 1024
        assert next_read_at([(0.0, 2 * mib)], share=1) == 1.0
        assert next_read_at([(0.0, 2 * mib)], share=4) == 4.0
        assert next_read_at([(0.0, mib), (0.5, mib)], share=1) == 1.0

    def test_an_efo_function_keeps_the_budget_of_a_function_alone(self):
        reads = [(0.0, 0)] * 5
        assert next_read_at(reads, share=1) == next_read_at(reads)

    @given_reads
    @hypothesis_settings(deadline=None)
    def test_a_greedy_reader_never_exceeds_its_share(self, share, sizes):
        """Reading as soon as allowed, a function makes at most 5 reads in any ``share``
        seconds and reads at most 2 MiB/share per second plus one 2 MiB burst and one read."""
        t, reads = 0.0, []
        for size in sizes:
            t = max(t, next_read_at(reads, share))
            reads.append((t, size))
        times = [at for at, _ in reads]
        for i in range(len(times) - SHARD_READS_PER_S):
            assert times[i + SHARD_READS_PER_S] - times[i] >= share - 1e-9
        elapsed = times[-1] - times[0]
        allowed = SHARD_READ_BYTES_PER_S * (elapsed / share + 1) + max(sizes)
        assert sum(sizes) <= allowed


class TestReading:
    def test_the_event_has_exactly_the_aws_shape(self):
        r = rig()
        seq = r.kinesis.put("user-1", {"id": 1}, arrival=T0 + 0.25)
        r.steps()
        assert r.invoker.events == [
            {
                "Records": [
                    {
                        "kinesis": {
                            "kinesisSchemaVersion": "1.0",
                            "partitionKey": "user-1",
                            "sequenceNumber": seq,
                            "data": base64.b64encode(b'{"id":1}').decode(),
                            "approximateArrivalTimestamp": T0 + 0.25,
                        },
                        "eventSource": "aws:kinesis",
                        "eventVersion": "1.0",
                        "eventID": f"{SHARD}:{seq}",
                        "eventName": "aws:kinesis:record",
                        "invokeIdentityArn": "arn:aws:iam::123456789012:role/lambda-role",
                        "awsRegion": "us-east-1",
                        "eventSourceARN": ARN,
                    }
                ]
            }
        ]
        (record,) = records_from_event(r.invoker.events[0])
        assert (record.shard_id, record.sequence_number, record.json) == (SHARD, seq, {"id": 1})
        assert (record.arrival, record.event_source_arn) == (T0 + 0.25, ARN)

    def test_every_shard_is_polled_and_each_batch_comes_from_one_shard(self):
        shards = ("shardId-000000000000", "shardId-000000000001")
        r = rig(shards=shards)
        for shard_id in shards:
            for i in range(3):
                r.kinesis.put(f"k{i}", {"i": i}, shard_id=shard_id)
        r.steps()
        assert len(r.invoker.events) == 2
        assert [
            {rec["eventID"].split(":")[0] for rec in e["Records"]} for e in r.invoker.events
        ] == [
            {shards[0]},
            {shards[1]},
        ]

    def test_at_most_five_get_records_calls_per_shard_per_second(self):
        r = rig(size=1)
        for i in range(20):
            r.kinesis.put("k", {"i": i})
        r.steps(10)  # the clock stands still
        assert len(r.kinesis.calls[SHARD]) == GET_RECORDS_PER_SECOND
        assert len(r.invoker.events) == 5
        r.clock.t += 1.0
        r.steps(10)
        assert len(r.kinesis.calls[SHARD]) == 2 * GET_RECORDS_PER_SECOND

    def test_three_shared_functions_each_read_a_shard_five_times_in_three_seconds(self):
        r = rig(size=1, share=3)
        for i in range(40):
            r.kinesis.put("k", {"i": i})
        r.steps(40, advance=0.1)  # four seconds
        calls = r.kinesis.calls[SHARD]
        assert all(later - earlier >= 3.0 for earlier, later in zip(calls, calls[5:], strict=False))
        assert len(calls) == 10  # 5 at once, 5 more three seconds later

    def test_a_backlog_of_large_records_drains_at_the_functions_share_of_2_mib(self):
        mib = 1024 * 1024
        r = rig(size=1, share=2)
        for _ in range(8):
            r.kinesis.put("k", b"x" * (mib // 2), arrival=r.clock.t)
        r.steps(400, advance=0.05)  # 20 s
        assert len(r.invoker.events) == 8
        reads = r.kinesis.calls[SHARD]
        # 4 MiB at 1 MiB/s (a half of 2 MiB/s): the last record is read about 2 s in at the
        # earliest (the first 2 MiB go at once), never sooner
        first_with_data = reads[0]
        assert reads[-1] - first_with_data >= 2.0

    def test_a_caught_up_shard_is_polled_once_per_idle_interval(self):
        r = rig()
        r.steps(5)
        assert len(r.kinesis.calls[SHARD]) == 1
        r.clock.t += 1.0
        r.steps(5)
        assert len(r.kinesis.calls[SHARD]) == 2
        assert r.esm.caught_up

    def test_a_failed_read_is_not_caught_up_until_a_read_finds_the_end(self):
        """A caught-up shard whose next read fails may have new records: `dev --until-idle`
        and `demo` must not stop on it (they did, with records unread, on a local server
        answering 500 under load)."""
        r = rig()
        r.steps(2)
        assert r.esm.caught_up
        r.kinesis.put("k", {"i": 1})
        read = r.kinesis.get_records

        def failing(**_: Any) -> dict[str, Any]:
            raise RuntimeError("500 Internal Server Error")

        r.kinesis.get_records = failing  # type: ignore[method-assign]
        r.clock.t += 1.0
        r.steps(1)
        assert not r.esm.caught_up
        r.kinesis.get_records = read  # type: ignore[method-assign]
        r.clock.t += 2.0
        r.steps(3)
        assert len(r.invoker.events) == 1
        assert r.esm.caught_up

    def test_poll_once_reads_without_invoking(self):
        r = rig()
        for i in range(3):
            r.kinesis.put("k", {"i": i})
        assert r.esm.poll_once() == 3
        assert r.invoker.events == []

    def test_starts_at_latest_when_asked(self):
        clock = Clock()
        kinesis = FakeKinesis(clock)
        kinesis.put("k", {"old": True})
        r = rig(kinesis=kinesis, clock=clock, starting_position="latest")
        r.steps()
        new = kinesis.put("k", {"new": True})
        r.steps(advance=1.0)
        r.steps()
        assert r.invoker.delivered == [[new]]

    def test_starts_at_a_timestamp(self):
        clock = Clock(T0 + 100)
        kinesis = FakeKinesis(clock)
        kinesis.put("k", {"i": 0}, arrival=T0)
        later = kinesis.put("k", {"i": 1}, arrival=T0 + 50)
        r = rig(
            kinesis=kinesis,
            clock=clock,
            starting_position="at_timestamp",
            starting_timestamp=T0 + 10,
        )
        r.steps()
        assert r.invoker.delivered == [[later]]

    def test_a_starting_timestamp_in_the_future_is_refused(self):
        with pytest.raises(ValueError, match="future"):
            rig(starting_position="at_timestamp", starting_timestamp=T0 + 60)


class TestBatching:
    def test_batches_hold_at_most_size_records_in_sequence_order(self):
        r = rig(size=3)
        put = [r.kinesis.put(f"k{i % 2}", {"i": i}) for i in range(7)]
        r.steps(3)
        assert r.invoker.delivered == [put[0:3], put[3:6], put[6:7]]

    def test_the_batching_window_waits_for_more_records_until_it_ends(self):
        r = rig(size=10, window_s=5)
        first = [r.kinesis.put("k", {"i": i}) for i in range(3)]
        r.steps()
        r.clock.t += 4.9
        r.steps()
        assert r.invoker.events == []
        r.clock.t += 0.2
        r.steps()
        assert r.invoker.delivered == [first]

    def test_a_full_batch_does_not_wait_for_the_window(self):
        r = rig(size=4, window_s=300)
        put = [r.kinesis.put("k", {"i": i}) for i in range(4)]
        r.steps()
        assert r.invoker.delivered == [put]

    def test_a_batch_stays_under_the_6_mb_payload_limit(self):
        r = rig(size=100)
        put = [r.kinesis.put("k", b"x" * 1_000_000) for _ in range(5)]
        r.steps(2)
        assert r.invoker.delivered == [put[:4], put[4:]]
        assert all(len(orjson.dumps(e)) <= MAX_PAYLOAD_BYTES for e in r.invoker.events)


class TestFilterCriteria:
    def test_records_matching_no_pattern_are_dropped_and_the_checkpoint_moves_past_them(self):
        r = rig(filter_criteria=[{"data": {"type": ["click"]}}])
        click1 = r.kinesis.put("k", {"type": "click"})
        r.kinesis.put("k", {"type": "view"})
        r.kinesis.put("k", b"not json")
        click2 = r.kinesis.put("k", {"type": "click"})
        last = r.kinesis.put("k", {"type": "view"})
        r.steps()
        assert r.invoker.delivered == [[click1, click2]]
        assert r.checkpoint == last
        assert (r.esm.stats.records_in, r.esm.stats.records_filtered) == (5, 3)

    def test_a_batch_of_only_filtered_records_invokes_nothing_and_checkpoints(self):
        r = rig(filter_criteria=[{"data": {"type": ["click"]}}])
        last = [r.kinesis.put("k", {"type": "view"}) for _ in range(3)][-1]
        r.steps()
        assert r.invoker.events == []
        assert r.checkpoint == last

    def test_aggregated_records_are_dropped_by_a_data_filter_and_counted(self):
        r = rig(filter_criteria=[{"data": {"type": ["click"]}}])
        r.kinesis.put("k", encode_aggregate([("k", b'{"type": "click"}')]))
        r.steps()
        assert r.invoker.events == []
        assert r.esm.stats.aggregated_dropped == 1

    def test_without_filter_criteria_aggregates_are_delivered_whole(self):
        r = rig()
        blob = encode_aggregate([("a", b'{"i": 1}'), ("b", b'{"i": 2}')])
        r.kinesis.put("a", blob)
        r.steps()
        assert [x.partition_key for x in records_from_event(r.invoker.events[0])] == ["a", "b"]


class TestResponses:
    @pytest.mark.parametrize(
        "payload", [None, {}, {"batchItemFailures": []}, {"batchItemFailures": None}]
    )
    def test_full_success_checkpoints_the_last_record_and_redelivers_nothing(self, payload):
        r = rig(respond(payload))
        put = [r.kinesis.put("k", {"i": i}) for i in range(3)]
        r.steps(3, advance=1.0)
        assert r.invoker.delivered == [put]
        assert r.checkpoint == put[-1]
        assert r.esm.stats.batches_ok == 1

    def test_batch_item_failures_redeliver_from_the_lowest_failed_record(self):
        r = rig(fail_at(3, 1), max_retries=5)
        put = [r.kinesis.put("k", {"i": i}) for i in range(5)]
        r.steps()
        assert r.checkpoint == put[0]
        r.steps()
        assert r.invoker.delivered == [put, put[1:]]
        assert r.checkpoint == put[-1]
        assert (r.esm.stats.batches_partial, r.esm.stats.retries) == (1, 1)

    @pytest.mark.parametrize(
        "payload",
        [
            {"batchItemFailures": [{"itemIdentifier": ""}]},
            {"batchItemFailures": [{"itemIdentifier": None}]},
            {"batchItemFailures": [{"id": "1"}]},
            {"batchItemFailures": [{"itemIdentifier": "12345"}]},
            {"batchItemFailures": {}},
        ],
    )
    def test_an_invalid_response_redelivers_the_whole_batch(self, payload):
        r = rig(respond(payload), max_retries=5)
        put = [r.kinesis.put("k", {"i": i}) for i in range(3)]
        r.steps(2)
        assert r.invoker.delivered == [put, put]
        assert r.esm.stats.batches_failed == 1
        assert r.checkpoint == put[-1]

    def test_a_function_error_retries_then_the_on_failure_message_and_the_shard_moves_on(self):
        r = rig(error, error, error, max_retries=2)
        put = [r.kinesis.put("k", {"i": i}) for i in range(3)]
        r.steps(3)
        assert r.invoker.delivered == [put, put, put]
        assert r.waited == [2.0, 4.0]  # each retry waited retry_delay(n)
        (message,) = r.failures
        assert message["requestContext"]["condition"] == RETRIES_EXHAUSTED
        assert message["requestContext"]["approximateInvokeCount"] == 3
        assert message["responseContext"]["functionError"] == "Unhandled"
        info = message["KinesisBatchInfo"]
        assert (info["startSequenceNumber"], info["endSequenceNumber"]) == (put[0], put[-1])
        assert (info["batchSize"], info["shardId"], info["streamArn"]) == (3, SHARD, ARN)
        assert r.checkpoint == put[-1]
        after = r.kinesis.put("k", {"i": 3})
        r.steps(advance=1.0)
        r.steps()
        assert r.invoker.delivered[-1] == [after]
        stats = r.esm.stats
        assert (stats.retries, stats.batches_on_failure, stats.records_on_failure) == (2, 1, 3)

    def test_a_timeout_is_retried_like_a_function_error(self):
        r = rig(timeout, max_retries=1)
        put = [r.kinesis.put("k", {"i": i}) for i in range(2)]
        r.steps(2)
        assert r.invoker.delivered == [put, put]
        assert r.checkpoint == put[-1]
        assert r.failures == []

    def test_bisect_isolates_a_bad_record_and_splits_never_count_as_retries(self):
        bad: list[str] = []

        def answer(event: dict[str, Any]) -> InvokeResult:
            return error(event) if bad[0] in seqs(event) else ok(event)

        r = rig(*([answer] * 20), max_retries=1, bisect_on_error=True)
        put = [r.kinesis.put("k", {"i": i}) for i in range(4)]
        bad.append(put[2])
        invoker = r.invoker
        r.steps(8)
        assert invoker.delivered == [put, put[:2], put[2:], put[2:3], put[2:3], put[3:]]
        stats = r.esm.stats
        assert (stats.splits, stats.retries) == (2, 1)
        (message,) = r.failures
        info = message["KinesisBatchInfo"]
        assert (info["startSequenceNumber"], info["batchSize"]) == (put[2], 1)
        assert message["requestContext"]["approximateInvokeCount"] == 4
        assert r.checkpoint == put[-1]

    def test_with_bisect_a_partial_failure_retries_only_the_rest_without_a_retry(self):
        r = rig(fail_at(3), max_retries=0, bisect_on_error=True)
        put = [r.kinesis.put("k", {"i": i}) for i in range(5)]
        r.steps(2)
        assert r.invoker.delivered == [put, put[3:]]
        assert (r.esm.stats.splits, r.esm.stats.retries, r.failures) == (1, 0, [])

    def test_partial_failures_follow_the_retry_policy(self):
        r = rig(fail_at(1), fail_at(0), max_retries=1)
        put = [r.kinesis.put("k", {"i": i}) for i in range(3)]
        r.steps(3)
        assert r.invoker.delivered == [put, put[1:]]
        (message,) = r.failures
        assert message["requestContext"]["condition"] == RETRIES_EXHAUSTED
        assert message["responseContext"]["functionError"] is None
        assert message["KinesisBatchInfo"]["startSequenceNumber"] == put[1]
        assert r.checkpoint == put[-1]

    def test_records_older_than_the_maximum_age_go_to_on_failure_without_an_invocation(self):
        r = rig(max_record_age_s=60)
        put = [r.kinesis.put("k", {"i": i}, arrival=T0 - 61) for i in range(2)]
        r.steps()
        assert r.invoker.events == []
        (message,) = r.failures
        assert message["requestContext"]["condition"] == AGE_EXCEEDED
        assert message["requestContext"]["approximateInvokeCount"] == 0
        assert message["KinesisBatchInfo"]["batchSize"] == 2
        assert r.checkpoint == put[-1]

    def test_the_maximum_age_ends_retrying(self):
        r = rig(error, max_record_age_s=60, max_retries=-1)
        put = [r.kinesis.put("k", {"i": i}) for i in range(2)]
        r.steps()
        r.clock.t += 61
        r.steps()
        assert r.invoker.delivered == [put]
        (message,) = r.failures
        assert message["requestContext"]["condition"] == AGE_EXCEEDED
        assert message["requestContext"]["approximateInvokeCount"] == 1

    def test_expired_records_leave_a_new_batch_apart_from_younger_ones(self):
        r = rig(max_record_age_s=60)
        old = [r.kinesis.put("k", {"i": i}, arrival=T0 - 100) for i in range(2)]
        young = [r.kinesis.put("k", {"i": i}, arrival=T0 - 10) for i in range(2)]
        r.steps()
        assert r.invoker.delivered == [young]
        assert r.failures[0]["KinesisBatchInfo"]["endSequenceNumber"] == old[-1]

    @pytest.mark.parametrize("ahead", [7200.0, -7200.0], ids=["ahead", "behind"])
    def test_record_ages_are_on_the_streams_clock_when_the_workers_is_off(self, ahead):
        """The worker's clock two hours off Kinesis's (the answers' HTTP Date says so):
        a record put a moment ago is fresh, one an hour and a bit old is expired."""
        clock = Clock()
        kinesis = SkewedKinesis(clock, ahead)
        r = rig(kinesis=kinesis, clock=clock, max_record_age_s=3600)
        stream_now = clock() - ahead
        old = [kinesis.put("k", {"i": i}, arrival=stream_now - 3700) for i in range(2)]
        fresh = [kinesis.put("k", {"i": i}, arrival=stream_now - 5) for i in range(2)]
        r.steps()
        assert r.invoker.delivered == [fresh]
        (message,) = r.failures
        assert message["requestContext"]["condition"] == AGE_EXCEEDED
        assert message["KinesisBatchInfo"]["endSequenceNumber"] == old[-1]

    def test_a_clock_off_by_less_than_the_tolerance_is_trusted(self):
        clock = Clock()
        kinesis = SkewedKinesis(clock, CLOCK_SKEW_TOLERANCE_S - 1.0)
        r = rig(kinesis=kinesis, clock=clock, max_record_age_s=60)
        put = [kinesis.put("k", {"i": 0}, arrival=clock() - 60.5)]
        r.steps()  # 60.5 s old on the worker's clock, 59.5 s on the stream's Date
        assert r.invoker.events == []
        assert r.failures[0]["KinesisBatchInfo"]["endSequenceNumber"] == put[0]

    def test_an_invoker_that_raises_is_retried_without_counting_a_retry(self):
        def broken(_: dict[str, Any]) -> InvokeResult:
            raise ConnectionError("worker pool is down")

        r = rig(broken, error, max_retries=0)
        put = [r.kinesis.put("k", {"i": i}) for i in range(2)]
        r.steps()
        assert (r.esm.stats.invoke_errors, r.esm.stats.invocations) == (1, 0)
        r.steps()
        assert len(r.invoker.events) == 1  # backing off
        r.clock.t += 1.0
        r.steps()
        assert r.invoker.delivered == [put, put]  # the error then counts once: max 0 retries
        assert r.failures[0]["requestContext"]["approximateInvokeCount"] == 1

    def test_a_refusing_destination_keeps_the_records_and_is_tried_again(self):
        calls: list[dict[str, Any]] = []

        def destination(message: Any) -> None:
            calls.append(message)
            if len(calls) == 1:
                raise ConnectionError("queue unreachable")

        r = rig(error, max_retries=0, on_failure=destination)
        put = [r.kinesis.put("k", {"i": i}) for i in range(2)]
        r.steps()
        assert r.checkpoint == "TRIM_HORIZON"
        r.clock.t += 1.0
        r.steps()
        assert len(calls) == 2
        assert calls[0] == calls[1]
        assert r.invoker.delivered == [put]  # the function is not invoked again
        assert r.checkpoint == put[-1]


class TestOnFailureRecord:
    """An S3 destination gets the whole invocation record (metadata plus the event under
    ``payload``, a JSON string, as AWS writes it); SQS and SNS the metadata alone."""

    def test_a_bucket_gets_the_batch_event_under_payload(self):
        r = rig(error, max_retries=0, on_failure_payload=True)
        put = [r.kinesis.put("k", {"i": i}) for i in range(2)]
        r.steps()
        (record,) = r.failures
        assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
        assert record["KinesisBatchInfo"]["batchSize"] == 2
        event = json.loads(record["payload"])
        assert event == r.invoker.events[0]
        assert [e["kinesis"]["sequenceNumber"] for e in event["Records"]] == put
        datas = [json.loads(base64.b64decode(e["kinesis"]["data"])) for e in event["Records"]]
        assert datas == [{"i": 0}, {"i": 1}]

    def test_a_queue_gets_the_metadata_alone(self):
        r = rig(error, max_retries=0)
        r.kinesis.put("k", {"i": 0})
        r.steps()
        (message,) = r.failures
        assert "payload" not in message
        assert set(message) == {
            "requestContext", "responseContext", "version", "timestamp", "KinesisBatchInfo",
        }  # fmt: skip


class TestParallelization:
    def test_lanes_keep_per_key_order_and_the_checkpoint_waits_for_the_slowest_lane(self):
        a, b = keys_in_lanes(2)
        r = rig(max_retries=3, parallelization=2)
        put = [r.kinesis.put(key, {"i": i}) for i in range(3) for key in (a, b)]
        lane_a, lane_b = put[0::2], put[1::2]

        def answer(event: dict[str, Any]) -> InvokeResult:
            if seqs(event)[0] == lane_b[0]:
                return fail_at(1)(event)
            return ok(event)

        r.esm.invoker = invoker = Scripted(answer, answer)
        r.steps()
        assert invoker.delivered == [lane_a, lane_b]
        assert r.checkpoint == lane_a[1]  # b's second record (after a's second) is not done
        r.steps()
        assert invoker.delivered[-1] == lane_b[1:]
        assert r.checkpoint == put[-1]

    def test_up_to_n_batches_of_one_shard_run_at_once(self):
        keys = keys_in_lanes(3)
        clock = Clock()
        kinesis = FakeKinesis(clock)
        put = [kinesis.put(key, {"k": key}) for key in keys]
        barrier = threading.Barrier(3, timeout=5)
        stop = threading.Event()
        seen: list[str] = []

        def handler(event: dict[str, Any], context: Any) -> None:
            barrier.wait()  # breaks (an error) unless three invocations run together
            seen.extend(seqs(event))
            if len(seen) == 3:
                stop.set()

        esm = EventSourceMapping(
            STREAM,
            MappingSettings(size=10, parallelization=3),
            InProcessInvoker(handler),
            MemoryCheckpoints(),
            client=kinesis,
            now=clock,
            sleep=clock.sleep,
        )
        stats = esm.run(stop)
        assert sorted(seen) == sorted(put)
        assert (stats.invocations, stats.batches_ok) == (3, 3)


class TestResharding:
    def test_a_closed_parent_is_read_to_its_end_and_finished_before_its_children(self):
        clock = Clock()
        kinesis = FakeKinesis(clock, ("shardId-000000000000",))
        parent = [kinesis.put("k", {"i": i}) for i in range(3)]
        kinesis.close(SHARD)
        kinesis.add_shard("shardId-000000000001", parents=(SHARD,))
        kinesis.add_shard("shardId-000000000002", parents=(SHARD,))
        child = kinesis.put("k", {"i": 3}, shard_id="shardId-000000000001")
        r = rig(error, kinesis=kinesis, clock=clock, max_retries=3)
        r.steps()
        assert r.kinesis.calls.keys() == {SHARD}  # the children wait for their parent
        r.steps()
        assert r.store.positions()[SHARD] == SHARD_END
        r.steps()
        assert r.invoker.delivered == [parent, parent, [child]]
        assert r.esm.stats.shards_finished == 1


class TestLeases:
    def test_a_shard_whose_lease_is_lost_is_dropped_and_not_checkpointed(self):
        class Losing(MemoryCheckpoints):
            def checkpoint(self, lease, sequence_number, sub_sequence_number=0):
                raise LeaseLost("memory", lease.shard_id, "local", "other")

        r = rig(store=Losing())
        r.kinesis.put("k", {"i": 0})
        r.steps()
        assert r.esm.positions() == {}
        assert r.store.positions() == {SHARD: "TRIM_HORIZON"}

    def test_a_lease_checkpointed_elsewhere_meanwhile_is_read_again_after_that_checkpoint(self):
        r = rig()
        for i in range(2):
            r.kinesis.put("k", {"i": i})
        r.steps()
        put = [r.kinesis.put("k", {"i": i}) for i in range(2, 5)]
        lease = r.store.leases()[0]  # another worker took it, did two records, gave it back
        r.store._leases[SHARD] = dataclasses.replace(lease, checkpoint=put[1], counter=9)
        r.clock.t += 1.0
        r.steps()
        assert r.invoker.delivered[-1] == [put[2]]

    def test_a_checkpoint_moved_past_what_the_reader_did_makes_it_read_again_after_it(self):
        """The lease comes back from a round with a checkpoint another tenure wrote past
        what this reader has done (lost and taken back): its buffered records are stale,
        it reads again after that checkpoint. (Within what it has done, its own write
        whose answer was lost, it goes on: tests/integration/test_lease_faults.py.)"""
        moved_to, then = 7, slice(8, 10)
        r = rig(size=5)
        put = [r.kinesis.put("k", {"i": i}) for i in range(10)]
        r.steps()
        assert r.invoker.delivered == [put[:5]]
        with r.store._lock:  # another tenure's checkpoint, as the round will read it
            lease = r.store._leases[SHARD]
            r.store._leases[SHARD] = dataclasses.replace(
                lease, checkpoint=put[moved_to], counter=lease.counter + 1
            )
        r.clock.t += r.store.renew_interval_s
        r.steps(2)
        assert r.invoker.delivered == [put[:5], put[then]]

    def test_the_first_refresh_fails_loudly_when_the_stream_is_missing(self):
        class Missing(FakeKinesis):
            def describe_stream_summary(self, StreamName: str) -> dict[str, Any]:
                raise LookupError(f"stream {StreamName} not found")

        r = rig(kinesis=Missing(Clock()))
        with pytest.raises(LookupError, match="not found"):
            r.esm.step()

    def test_a_new_mapping_resumes_after_the_checkpoint(self):
        clock = Clock()
        kinesis = FakeKinesis(clock)
        store = MemoryCheckpoints()
        put = [kinesis.put("k", {"i": i}) for i in range(6)]
        first = rig(fail_at(2), kinesis=kinesis, clock=clock, store=store, size=4)
        first.steps()
        first.esm.release()
        second = rig(kinesis=kinesis, clock=clock, store=store, size=4)
        second.steps(2)
        assert first.invoker.delivered == [put[:4]]
        assert second.invoker.delivered == [put[2:6]]

    def test_stopping_completes_the_batch_in_flight_then_checkpoints_then_releases(self):
        clock = Clock()
        kinesis = FakeKinesis(clock)
        put = [kinesis.put("k", {"i": i}) for i in range(3)]
        stop = threading.Event()
        calls: list[list[str]] = []

        def handler(event: dict[str, Any], context: Any) -> None:
            calls.append(seqs(event))
            stop.set()  # asked to stop while this batch is in flight

        store = MemoryCheckpoints()
        esm = EventSourceMapping(
            STREAM,
            MappingSettings(size=10),
            InProcessInvoker(handler),
            store,
            client=kinesis,
            now=clock,
            sleep=clock.sleep,
        )
        esm.run(stop)
        assert calls == [put]
        (lease,) = store.leases()
        assert (lease.checkpoint, lease.owner) == (put[-1], None)


# -- the stateful model -------------------------------------------------------------------


@dataclass
class ModelBatch:
    records: list[str]
    retries: int = 0
    invocations: int = 0


@dataclass
class ModelLane:
    fresh: list[str] = field(default_factory=list)
    pending: deque[ModelBatch] = field(default_factory=deque)


OK_PAYLOADS = [None, {}, {"batchItemFailures": []}, {"batchItemFailures": None}]


class MappingMachine(RuleBasedStateMachine):
    """The engine against a model of the documented rules, one lane per model lane.

    The model predicts each lane's next delivery (a retry or split exactly; new records as
    the next ones in order, at most ``size``), applies each random response by the rules,
    and expects the on-failure messages; after every step the checkpoint must be the last
    record of the longest done prefix, and the retry and split counts must agree.
    """

    @initialize(
        size=st.integers(1, 4),
        lanes=st.integers(1, 3),
        bisect=st.booleans(),
        max_retries=st.integers(0, 3),
        max_age=st.sampled_from([-1, 60, 120]),
    )
    def setup(self, size, lanes, bisect, max_retries, max_age):
        self.clock = Clock()
        self.kinesis = FakeKinesis(self.clock)
        self.store = MemoryCheckpoints()
        self.settings = MappingSettings(
            size=size,
            parallelization=lanes,
            bisect_on_error=bisect,
            max_retries=max_retries,
            max_record_age_s=max_age,
        )
        self.lanes = [ModelLane() for _ in range(lanes)]
        self.key: dict[str, str] = {}
        self.arrival: dict[str, float] = {}
        self.order: list[str] = []
        self.done: set[str] = set()
        self.retries = self.splits = 0
        self.expected: deque[tuple[list[str], str, int, str | None]] = deque()
        self.highest = -1
        self.data: Any = None
        self.draining = False
        self.esm = EventSourceMapping(
            STREAM,
            self.settings,
            self,
            self.store,
            client=self.kinesis,
            on_failure=self.on_failure,
            now=self.clock,
            sleep=self.clock.sleep,
            idle_poll_s=0.25,
        )

    # the model's view of lanes and age
    def lane(self, seq: str) -> ModelLane:
        return self.lanes[lane_of(self.key[seq], self.settings.parallelization)]

    def old(self, seq: str) -> bool:
        age = self.settings.max_record_age_s
        return age >= 0 and self.clock() - self.arrival[seq] > age

    # the engine calls these two
    def invoke(self, event: dict[str, Any], *, timeout_s: float) -> InvokeResult:
        got = seqs(event)
        lane = self.lane(got[0])
        if lane.pending:
            batch = lane.pending.popleft()
            assert got == batch.records, "a retry or split must be delivered exactly"
        else:
            assert 1 <= len(got) <= self.settings.size
            assert got == lane.fresh[: len(got)], "new records come next, in order"
            del lane.fresh[: len(got)]
            batch = ModelBatch(got)
        assert not self.old(got[0]), "an expired batch was invoked"
        batch.invocations += 1
        if self.draining:
            kind = "ok"
        else:
            kind = self.data.draw(st.sampled_from(["ok", "partial", "error", "timeout", "invalid"]))
        if kind == "ok":
            self.done.update(got)
            return result(self.data.draw(st.sampled_from(OK_PAYLOADS)) if self.data else None)
        if kind in ("error", "timeout"):
            if self.settings.bisect_on_error and len(got) > 1:
                half = (len(got) + 1) // 2
                lane.pending.extendleft(
                    [
                        ModelBatch(got[half:], batch.retries, batch.invocations),
                        ModelBatch(got[:half], batch.retries, batch.invocations),
                    ]
                )
                self.splits += 1
            else:
                self.retry_or_exhaust(lane, batch, got, "Unhandled")
            return result(error=kind == "error", timed_out=kind == "timeout")
        if kind == "invalid":
            self.retry_or_exhaust(lane, batch, got, None)
            bad = self.data.draw(st.sampled_from(["", None, "1"]))
            return result({"batchItemFailures": [{"itemIdentifier": bad}]})
        failed = self.data.draw(st.sets(st.integers(0, len(got) - 1), min_size=1))
        low = min(failed)
        self.done.update(got[:low])
        rest = got[low:]
        if self.settings.bisect_on_error and low > 0:
            lane.pending.appendleft(ModelBatch(rest, batch.retries, batch.invocations))
            self.splits += 1
        else:
            self.retry_or_exhaust(lane, batch, rest, None)
        return result({"batchItemFailures": [{"itemIdentifier": got[i]} for i in sorted(failed)]})

    def retry_or_exhaust(
        self, lane: ModelLane, batch: ModelBatch, rest: list[str], error: str | None
    ) -> None:
        if batch.retries >= self.settings.max_retries:
            self.expected.append((rest, RETRIES_EXHAUSTED, batch.invocations, error))
            return
        lane.pending.appendleft(ModelBatch(rest, batch.retries + 1, batch.invocations))
        self.retries += 1

    def on_failure(self, message: dict[str, Any]) -> None:
        info = message["KinesisBatchInfo"]
        condition = message["requestContext"]["condition"]
        count = message["requestContext"]["approximateInvokeCount"]
        if condition == RETRIES_EXHAUSTED:
            rest, _, invocations, error = self.expected.popleft()
            assert (info["startSequenceNumber"], info["endSequenceNumber"]) == (rest[0], rest[-1])
            assert (info["batchSize"], count) == (len(rest), invocations)
            assert message["responseContext"]["functionError"] == error
            self.done.update(rest)
            return
        assert condition == AGE_EXCEEDED
        start = info["startSequenceNumber"]
        lane = self.lane(start)
        if lane.pending and lane.pending[0].records[0] == start:
            gone = lane.pending.popleft().records
        else:
            gone = lane.fresh[: info["batchSize"]]
            del lane.fresh[: info["batchSize"]]
            assert all(self.old(s) for s in gone), "only expired new records go together"
        assert (gone[0], gone[-1], len(gone)) == (
            start,
            info["endSequenceNumber"],
            info["batchSize"],
        )
        assert self.old(gone[0])
        self.done.update(gone)

    # rules
    @rule(keys=st.lists(st.sampled_from("abcdef"), min_size=1, max_size=6))
    def produce(self, keys):
        for key in keys:
            seq = self.kinesis.put(key, {"key": key})
            self.key[seq], self.arrival[seq] = key, self.clock()
            self.order.append(seq)
            self.lane(seq).fresh.append(seq)

    @rule(seconds=st.sampled_from([0.0, 1.0, 30.0, 61.0]))
    def advance(self, seconds):
        self.clock.t += seconds

    @rule(data=st.data(), steps=st.integers(1, 4))
    def step(self, data, steps):
        self.data = data
        for _ in range(steps):
            self.clock.t += 0.25  # within the 5 reads per second, past the idle poll
            self.esm.step()
        self.data = None

    @rule()
    def drain(self):
        self.draining = True
        for _ in range(400):
            self.clock.t += 1.0
            self.esm.step()
            if self.esm.caught_up and len(self.done) == len(self.order):
                break
        self.draining = False
        assert self.done == set(self.order), "every record is acknowledged or on-failure"
        if self.order:
            assert self.store.positions()[SHARD] == self.order[-1]

    @invariant()
    def checkpoint_is_the_done_prefix_and_never_moves_back(self):
        if not hasattr(self, "esm"):
            return
        assert not self.expected, "an exhausted batch did not reach the destination"
        stored = self.store.positions().get(SHARD, "TRIM_HORIZON")
        position = int(stored) if stored.isdigit() else -1
        assert position >= self.highest, "the checkpoint moved backwards"
        self.highest = position
        prefix = None
        for seq in self.order:
            if seq not in self.done:
                break
            prefix = seq
        assert stored == (prefix or "TRIM_HORIZON"), "checkpoint != last of the done prefix"
        stats = self.esm.stats
        assert (stats.retries, stats.splits) == (self.retries, self.splits)


MappingMachine.TestCase.settings = hypothesis_settings(
    max_examples=60, stateful_step_count=40, deadline=None
)
TestMappingMachine = MappingMachine.TestCase
