"""The event source mapping's rules, as pure functions: settings, response, retry, on-failure.

What Lambda does with a Kinesis batch after invoking the function, point by point from the
AWS documentation (``ReportBatchItemFailures``, ``BisectBatchOnFunctionError``,
``MaximumRetryAttempts``, ``MaximumRecordAgeInSeconds``, on-failure destinations). Nothing
here does I/O or reads a clock: :mod:`stream.esm.mapping` feeds it records, results and the time,
so every rule has a test of its own and the stateful test can check the engine against it.

The response (``ReportBatchItemFailures`` on, as our deploy always sets it):

* **success**: ``None``, ``{}``, ``{"batchItemFailures": []}`` or ``{"batchItemFailures":
  null}``; the checkpoint moves to the batch's last record.
* **partial**: ``{"batchItemFailures": [{"itemIdentifier": "<seq>"}, ...]}``; the records
  before the lowest listed sequence number are done, the rest is delivered again.
* **invalid**, a failure of the whole batch (as if its first record were listed): an empty
  or null ``itemIdentifier``, an entry without that exact key (a bad key name), a list that
  is not a list, a payload that is neither an object nor null, or an identifier that is not
  a sequence number of the batch. AWS does not document the last case and emulators
  disagree; we fail the batch because ignoring a foreign identifier could checkpoint past a
  record the function never finished, while failing it only costs a redelivery. Integer
  identifiers are read as their decimal string (a JSON number is what a handler that
  forgot ``str()`` returns; AWS's parser reads it as a string too).

The retry policy, per delivered batch:

* A function error or a timeout retries the same records. With ``bisect_on_error`` a batch
  of two or more records is split in two halves instead, delivered one after the other;
  splitting is not a retry, so the halves keep the batch's retry count.
* A partial failure (or an invalid response) also follows the retry policy: the rest of
  the batch, from the lowest failed record, is delivered again as a retry. With
  ``bisect_on_error`` and a failure after the first record, the batch is split at the
  failed record instead (the records before it are done) and only the rest is delivered
  again, not counted as a retry. A failure at the first record cannot split anything and
  counts, so a handler that always fails its first record still reaches the limit.
* A retry waits :func:`retry_delay` before it is delivered: 2 s before the first, doubling,
  at most 60 s (splits are delivered at once). Lambda documents no figure, but it does not
  hammer a failing function; without a wait, a sink outage of a few seconds exhausted the
  default three retries in about 2.5 s and sent the batch to the on-failure destination,
  where waiting 2 + 4 + 8 s rides out a sink down for tens of seconds together with the
  sinks' own retries within each invocation.
* ``max_retries`` retries at most (``-1``: no limit); when a batch that has used them all
  fails again, its records that are not done go to the on-failure destination with
  condition ``RetryAttemptsExhausted`` and the shard moves on.
* ``max_record_age_s`` (``-1``: no limit) is checked before every invocation: a batch whose
  oldest record is older is not invoked; it goes to the on-failure destination with
  condition ``RecordAgeExceeded``. The engine forms new batches of expired records apart
  from the younger records behind them, so the destination gets only what is too old.

The retry count belongs to the records delivered together and survives splits and partial
progress (a remainder inherits it): resetting it on progress would let a handler that
advances one record per invocation hold a shard for ``max_retries`` times its batch size.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, TypedDict

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from stream.event import KinesisEventRecord
    from stream.plan import FunctionPlan

__all__ = [
    "AGE_EXCEEDED",
    "MAX_PAYLOAD_BYTES",
    "RETRIES_EXHAUSTED",
    "SHARD_READS_PER_S",
    "SHARD_READ_BYTES_PER_S",
    "Batch",
    "BatchInfo",
    "Decision",
    "InvocationStatus",
    "MappingSettings",
    "OnFailureMessage",
    "OnFailureRecord",
    "RequestContext",
    "ResponseContext",
    "ShardRecord",
    "Verdict",
    "classify_response",
    "decide",
    "expired",
    "iso_time",
    "lane_of",
    "next_read_at",
    "on_failure_message",
    "retry_delay",
    "with_payload",
]

#: Lambda's limit on a synchronous invocation's payload: a batch never exceeds it.
MAX_PAYLOAD_BYTES: Final = 6 * 1024 * 1024
#: ``requestContext.condition`` values of the on-failure message.
RETRIES_EXHAUSTED: Final = "RetryAttemptsExhausted"
AGE_EXCEEDED: Final = "RecordAgeExceeded"

#: A shard's shared read throughput (Kinesis): 5 GetRecords calls and 2 MB per second, for
#: all the shared-throughput consumers of the stream together. An enhanced fan-out consumer
#: has 2 MB/s per shard of its own.
SHARD_READS_PER_S: Final = 5
SHARD_READ_BYTES_PER_S: Final = 2 * 1024 * 1024

_POSITIONS: Final = ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP")
_EVENT_OVERHEAD: Final = len('{"Records":[]}')


@dataclass(frozen=True)
class MappingSettings:
    """One function's event source mapping, as the compiled plan's ``batch`` section says.

    Defaults are AWS's (batch of 100, no window, no bisect, unlimited retries and age); the
    plan sets them all explicitly.

    Attributes:
        size: ``BatchSize``, 1 to 10,000 records.
        window_s: ``MaximumBatchingWindowInSeconds``, 0 to 300.
        starting_position: ``TRIM_HORIZON``, ``LATEST`` or ``AT_TIMESTAMP`` (any case).
        starting_timestamp: epoch seconds, for ``AT_TIMESTAMP`` only.
        parallelization: ``ParallelizationFactor``, 1 to 10 batches of a shard at once.
        bisect_on_error: ``BisectBatchOnFunctionError``.
        max_retries: ``MaximumRetryAttempts``, -1 (no limit) to 10,000.
        max_record_age_s: ``MaximumRecordAgeInSeconds``, -1 (no limit) or 60 to 604,800.
        filter_criteria: Lambda filter patterns on the Kinesis record (``{"data": ...}``),
            ORed; empty keeps every record.
        timeout_s: the function's timeout.
        report_batch_item_failures: ``FunctionResponseTypes`` holds
            ``ReportBatchItemFailures``; when off, the response is ignored.
        consumer: ``shared`` (the stream's shared throughput) or ``efo`` (an enhanced
            fan-out consumer: the mapping's ``EventSourceArn`` is the consumer's).
    """

    size: int = 100
    window_s: float = 0.0
    starting_position: str = "TRIM_HORIZON"
    starting_timestamp: float | None = None
    parallelization: int = 1
    bisect_on_error: bool = False
    max_retries: int = -1
    max_record_age_s: float = -1
    filter_criteria: tuple[Mapping[str, Any], ...] = ()
    timeout_s: float = 3.0
    report_batch_item_failures: bool = True
    consumer: str = "shared"

    def __post_init__(self) -> None:
        position = str(self.starting_position).upper()
        object.__setattr__(self, "starting_position", position)
        object.__setattr__(self, "filter_criteria", tuple(self.filter_criteria))
        problems = [
            *_range("size", self.size, 1, 10_000),
            *_range("window_s", self.window_s, 0, 300),
            *_range("parallelization", self.parallelization, 1, 10),
            *_range("max_retries", self.max_retries, -1, 10_000),
            *_range("timeout_s", self.timeout_s, 0.001, 900),
        ]
        age = self.max_record_age_s
        if age != -1 and not (60 <= age <= 604_800):
            problems.append(f"max_record_age_s: {age!r} is not -1 (no limit) or 60 to 604800")
        if position not in _POSITIONS:
            problems.append(
                f"starting_position: {self.starting_position!r} is not one of "
                "trim_horizon, latest, at_timestamp"
            )
        if self.consumer not in ("shared", "efo"):
            problems.append(f"consumer: {self.consumer!r} is not one of shared, efo")
        if position == "AT_TIMESTAMP" and self.starting_timestamp is None:
            problems.append("starting_timestamp: required with starting_position at_timestamp")
        if problems:
            msg = "invalid event source mapping settings: " + "; ".join(problems)
            raise ValueError(msg)

    @classmethod
    def from_plan(cls, function: FunctionPlan) -> MappingSettings:
        """The settings of one function of a compiled plan (``plan["functions"][name]``).

        Reads ``batch`` (size, window_s, starting_position, starting_timestamp,
        parallelization, bisect_on_error, max_retries, max_record_age_s, consumer),
        ``timeout_s`` and
        ``filter_criteria`` (a list of patterns). ``starting_timestamp`` may be epoch
        seconds or an ISO 8601 string (UTC when it names no zone); a null limit is -1.

        >>> MappingSettings.from_plan({"timeout_s": 60, "batch": {"size": 10}}).size
        10
        """
        batch: Mapping[str, Any] = function.get("batch") or {}
        stamp = batch.get("starting_timestamp")
        retries = batch.get("max_retries")
        age = batch.get("max_record_age_s")
        return cls(
            size=int(batch.get("size", 100)),
            window_s=float(batch.get("window_s") or 0),
            starting_position=str(batch.get("starting_position") or "TRIM_HORIZON"),
            starting_timestamp=None if stamp is None else _epoch(stamp),
            parallelization=int(batch.get("parallelization") or 1),
            bisect_on_error=bool(batch.get("bisect_on_error", False)),
            max_retries=-1 if retries is None else int(retries),
            max_record_age_s=-1 if age is None else float(age),
            filter_criteria=tuple(function.get("filter_criteria") or ()),
            timeout_s=float(function.get("timeout_s") or 3),
            consumer=str(batch.get("consumer") or "shared"),
        )

    @classmethod
    def from_lambda(cls, mapping: Mapping[str, Any], timeout_s: float) -> MappingSettings:
        """The settings of a deployed mapping, as ``ListEventSourceMappings`` returns one
        (boto3's shape: a datetime for ``StartingPositionTimestamp``, filter patterns as
        JSON text), with the function's timeout from ``GetFunctionConfiguration``.

        >>> MappingSettings.from_lambda({"BatchSize": 200, "StartingPosition": "LATEST"}, 60).size
        200
        """
        import json  # noqa: PLC0415

        stamp = mapping.get("StartingPositionTimestamp")
        filters = (mapping.get("FilterCriteria") or {}).get("Filters") or ()
        return cls(
            size=int(mapping.get("BatchSize", 100)),
            window_s=float(mapping.get("MaximumBatchingWindowInSeconds") or 0),
            starting_position=str(mapping.get("StartingPosition") or "TRIM_HORIZON"),
            starting_timestamp=None if stamp is None else _epoch(stamp),
            parallelization=int(mapping.get("ParallelizationFactor") or 1),
            bisect_on_error=bool(mapping.get("BisectBatchOnFunctionError", False)),
            max_retries=int(mapping.get("MaximumRetryAttempts", -1)),
            max_record_age_s=float(mapping.get("MaximumRecordAgeInSeconds", -1)),
            filter_criteria=tuple(json.loads(f["Pattern"]) for f in filters),
            timeout_s=float(timeout_s),
            report_batch_item_failures="ReportBatchItemFailures"
            in (mapping.get("FunctionResponseTypes") or ()),
            consumer="efo" if "/consumer/" in str(mapping.get("EventSourceArn", "")) else "shared",
        )


def _range(name: str, value: float, low: float, high: float) -> list[str]:
    if isinstance(value, bool) or not low <= value <= high:
        return [f"{name}: {value!r} is outside {low:g} to {high:g}"]
    return []


def _epoch(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dt.datetime):
        moment = value
    else:
        try:
            moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            msg = (
                f"starting_timestamp: {value!r} is not epoch seconds or an ISO 8601 time "
                "such as 2026-01-01T00:00:00Z"
            )
            raise ValueError(msg) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


class ShardRecord:
    """One Kinesis record as the mapping holds it between GetRecords and the checkpoint.

    Attributes:
        shard_id: the shard it was read from.
        sequence_number: its sequence number (decimal string).
        position: the sequence number as an integer, for comparisons.
        partition_key: its partition key.
        arrival: ``approximateArrivalTimestamp``, epoch seconds.
        entry: its entry of the Lambda event, built once when read.
        size: bytes the entry adds to the event's JSON.
        lane: which of the shard's ``parallelization`` lanes it belongs to.
    """

    __slots__ = (
        "arrival",
        "entry",
        "lane",
        "partition_key",
        "position",
        "sequence_number",
        "shard_id",
        "size",
    )

    def __init__(self, entry: KinesisEventRecord, shard_id: str, size: int, lane: int) -> None:
        kinesis = entry["kinesis"]
        self.entry = entry
        self.shard_id = shard_id
        self.sequence_number = kinesis["sequenceNumber"]
        self.position = int(self.sequence_number)
        self.partition_key = kinesis["partitionKey"]
        self.arrival = kinesis["approximateArrivalTimestamp"]
        self.size = size
        self.lane = lane

    def __repr__(self) -> str:
        return f"ShardRecord({self.shard_id}:{self.sequence_number}, key={self.partition_key!r})"


@dataclass(frozen=True)
class Batch:
    """Records of one shard (and one lane) delivered together, and what they went through.

    Attributes:
        shard_id: the shard.
        lane: the lane (0 when ``parallelization`` is 1).
        records: in sequence order, at least one.
        retries: retries used so far (splits are not retries).
        invocations: invocations that held these records, this batch's ancestors included
            (``approximateInvokeCount``).
        last_error: the last invocation's function error type (``Unhandled``), if any.
        last_request_id: the last invocation's request id, if any.
    """

    shard_id: str
    lane: int
    records: tuple[ShardRecord, ...]
    retries: int = 0
    invocations: int = 0
    last_error: str | None = None
    last_request_id: str | None = None

    @property
    def sequence_numbers(self) -> list[str]:
        """The batch's sequence numbers, in order."""
        return [r.sequence_number for r in self.records]

    def event(self) -> dict[str, Any]:
        """The Lambda event for this batch: ``{"Records": [...]}``."""
        return {"Records": [r.entry for r in self.records]}

    @property
    def payload_size(self) -> int:
        """The event's size as JSON, in bytes."""
        return _EVENT_OVERHEAD + sum(r.size for r in self.records)


def lane_of(partition_key: str, lanes: int) -> int:
    """The lane of a partition key: a stable hash (CRC-32), the same in every process.

    >>> lane_of("user-1", 1), lane_of("user-1", 4) == lane_of("user-1", 4)
    (0, True)
    """
    if lanes == 1:
        return 0
    return zlib.crc32(partition_key.encode()) % lanes


#: The wait before a batch's first retry, doubled for each further retry, up to the cap.
RETRY_BASE_DELAY_S: Final = 2.0
RETRY_MAX_DELAY_S: Final = 60.0


def next_read_at(reads: Sequence[tuple[float, int]], share: int = 1) -> float:
    """When a consumer may next read a shard, after its own ``reads`` of it.

    The shard's 5 reads/s and 2 MB/s are split evenly among the ``share`` consumers that
    read it with shared throughput (the stream's functions without ``consumer: efo``), so
    each has ``5/share`` reads and ``2/share`` MB per second; an enhanced fan-out consumer
    has a budget of its own (``share=1``). Two rules, both per consumer:

    * **reads**: at most 5 in any ``share`` seconds (for one consumer, Kinesis's own
      5 per rolling second; for five, one a second: the delivery AWS documents for five);
    * **bytes**: once the reads since some read ``i`` brought 2 MiB or more, the next waits
      until those bytes are paid at ``2/share`` MiB/s from read ``i``'s time. So small reads
      go at once, a backlog drains at ``2/share`` MiB/s, and one 10 MB read holds the next
      back ``5 * share`` seconds, as Kinesis throttles after a large GetRecords.

    Edge case it avoids: a read window that stayed one second for any ``share`` would let
    each of five consumers make five reads a second, 25 on a shard that allows 5, and
    adding functions would slow nothing.

    Args:
        reads: ``(time, bytes)`` of the consumer's reads of the shard, oldest first; only
            the last five count.
        share: how many consumers split the shard's throughput (at least 1).

    Returns:
        The earliest time of the next read (``-inf`` when there was none).

    >>> next_read_at([])
    -inf
    >>> next_read_at([(10.0, 100)])  # small reads go at once
    10.0
    >>> next_read_at([(10.0, 0)] * 5), next_read_at([(10.0, 0)] * 5, share=3)
    (11.0, 13.0)
    >>> mib = 1024 * 1024
    >>> next_read_at([(10.0, mib), (10.5, mib)], share=2)  # 2 MiB at 1 MiB/s from 10.0
    12.0
    >>> next_read_at([(10.0, 10 * mib)])  # Kinesis: 10 MB, then 5 s of throttling
    15.0
    """
    if not reads:
        return -math.inf
    share = max(1, share)
    recent = list(reads)[-SHARD_READS_PER_S:]
    at = recent[-1][0]
    if len(recent) >= SHARD_READS_PER_S:
        at = max(at, recent[0][0] + share)
    since = 0
    for read_at, size in reversed(recent):
        since += size
        if since >= SHARD_READ_BYTES_PER_S:
            at = max(at, read_at + since * share / SHARD_READ_BYTES_PER_S)
    return at


def retry_delay(retries: int) -> float:
    """Seconds to wait before delivering a batch that has now used ``retries`` retries.

    >>> [retry_delay(n) for n in (1, 2, 3, 4, 6, 10)]
    [2.0, 4.0, 8.0, 16.0, 60.0, 60.0]
    """
    doublings = max(0, min(retries, 32) - 1)
    return min(RETRY_MAX_DELAY_S, RETRY_BASE_DELAY_S * float(2**doublings))


def expired(batch: Batch, max_record_age_s: float, now: float) -> bool:
    """Whether the batch's oldest record is past ``MaximumRecordAgeInSeconds``."""
    if max_record_age_s < 0:
        return False
    return now - min(r.arrival for r in batch.records) > max_record_age_s


@dataclass(frozen=True)
class Verdict:
    """How Lambda reads one response.

    Attributes:
        kind: ``success``, ``partial`` or ``invalid`` (a failure of the whole batch).
        index: for ``partial``, the batch index of the lowest failed record; else 0 for
            ``invalid`` and the batch size for ``success``.
        reason: for logs and tests: what was wrong.
    """

    kind: Literal["success", "partial", "invalid"]
    index: int
    reason: str = ""


def classify_response(payload: Any, sequence_numbers: Sequence[str]) -> Verdict:
    """Read a function's response as ``ReportBatchItemFailures`` does (see the module doc).

    >>> classify_response({"batchItemFailures": [{"itemIdentifier": "7"}]}, ["5", "7", "9"])
    Verdict(kind='partial', index=1, reason='')
    >>> classify_response({"batchItemFailures": [{"itemIdentifier": ""}]}, ["5"]).kind
    'invalid'
    """
    success = Verdict("success", len(sequence_numbers))
    if payload is None:
        return success
    if not isinstance(payload, dict):
        return Verdict(
            "invalid",
            0,
            f"the response is a {type(payload).__name__}, not an object with batchItemFailures",
        )
    failures = payload.get("batchItemFailures")
    if failures is None:
        return success
    if not isinstance(failures, list):
        return Verdict("invalid", 0, "batchItemFailures is not a list")
    if not failures:
        return success
    index_of = {seq: i for i, seq in enumerate(sequence_numbers)}
    lowest = len(sequence_numbers)
    for item in failures:
        if not isinstance(item, dict) or "itemIdentifier" not in item:
            return Verdict("invalid", 0, f"entry {item!r} has no 'itemIdentifier' key")
        ident = item["itemIdentifier"]
        if isinstance(ident, int) and not isinstance(ident, bool):
            ident = str(ident)
        if ident is None or ident == "":
            return Verdict("invalid", 0, f"itemIdentifier is {ident!r}: empty or null")
        if not isinstance(ident, str):
            return Verdict("invalid", 0, f"itemIdentifier {ident!r} is not a string")
        index = index_of.get(ident)
        if index is None:
            return Verdict(
                "invalid", 0, f"itemIdentifier {ident!r} is not a sequence number of this batch"
            )
        lowest = min(lowest, index)
    return Verdict("partial", lowest)


class InvocationStatus(enum.Enum):
    """How an invocation ended, for the counters (a sink's per-record result is
    :class:`sinks.base.Outcome`)."""

    OK = "ok"
    PARTIAL = "partial"
    FAILED = "failed"  # function error, timeout or invalid response


@dataclass(frozen=True)
class Decision:
    """What to do after one invocation of a batch.

    Attributes:
        outcome: ok, partial or failed.
        done: records that are finished (acknowledged), in order.
        retry: batches to deliver next, in order, before anything else of the lane.
        exhausted: records whose retries ended: they go to the on-failure destination.
        counted: whether ``retry`` is a retry (it counts toward ``max_retries``).
        split: whether ``retry`` came from a split (bisect), which is not a retry.
        reason: what happened, for logs.
    """

    outcome: InvocationStatus
    done: tuple[ShardRecord, ...] = ()
    retry: tuple[Batch, ...] = ()
    exhausted: Batch | None = None
    counted: bool = False
    split: bool = False
    reason: str = ""


def decide(
    batch: Batch,
    *,
    payload: Any,
    error: Mapping[str, Any] | None,
    timed_out: bool,
    request_id: str,
    settings: MappingSettings,
) -> Decision:
    """Apply one invocation's result to ``batch`` by the rules in the module doc.

    ``batch.invocations`` counts invocations before this one; the batches returned carry
    this one too.
    """
    failed_fn = error is not None or timed_out
    invoked = batch.invocations + 1
    base = Batch(
        batch.shard_id,
        batch.lane,
        batch.records,
        batch.retries,
        invoked,
        "Unhandled" if failed_fn else None,
        request_id,
    )
    records = batch.records
    if failed_fn:
        reason = "timed out" if timed_out else f"function error {_error_type(error)}"
        if settings.bisect_on_error and len(records) > 1:
            half = (len(records) + 1) // 2
            halves = (_with(base, records[:half]), _with(base, records[half:]))
            return Decision(InvocationStatus.FAILED, retry=halves, split=True, reason=reason)
        return _retry_or_exhaust(
            InvocationStatus.FAILED,
            batch=base,
            done=(),
            rest=records,
            settings=settings,
            reason=reason,
        )
    if not settings.report_batch_item_failures:
        return Decision(InvocationStatus.OK, done=records)
    verdict = classify_response(payload, base.sequence_numbers)
    if verdict.kind == "success":
        return Decision(InvocationStatus.OK, done=records)
    index = verdict.index
    done, rest = records[:index], records[index:]
    if verdict.kind == "invalid":
        return _retry_or_exhaust(
            InvocationStatus.FAILED,
            batch=base,
            done=(),
            rest=records,
            settings=settings,
            reason=verdict.reason,
        )
    reason = f"batchItemFailures from {rest[0].sequence_number}"
    if settings.bisect_on_error and index > 0:
        return Decision(
            InvocationStatus.PARTIAL,
            done=done,
            retry=(_with(base, rest),),
            split=True,
            reason=reason,
        )
    return _retry_or_exhaust(
        InvocationStatus.PARTIAL, batch=base, done=done, rest=rest, settings=settings, reason=reason
    )


def _error_type(error: Mapping[str, Any] | None) -> str:
    return str((error or {}).get("errorType") or "Unhandled")


def _with(batch: Batch, records: tuple[ShardRecord, ...], retries: int | None = None) -> Batch:
    return Batch(
        batch.shard_id,
        batch.lane,
        records,
        batch.retries if retries is None else retries,
        batch.invocations,
        batch.last_error,
        batch.last_request_id,
    )


def _retry_or_exhaust(
    outcome: InvocationStatus,
    *,
    batch: Batch,
    done: tuple[ShardRecord, ...],
    rest: tuple[ShardRecord, ...],
    settings: MappingSettings,
    reason: str,
) -> Decision:
    limit = settings.max_retries
    if 0 <= limit <= batch.retries:
        return Decision(outcome, done=done, exhausted=_with(batch, rest), reason=reason)
    again = _with(batch, rest, batch.retries + 1)
    return Decision(outcome, done=done, retry=(again,), counted=True, reason=reason)


class RequestContext(TypedDict):
    """``requestContext`` of an on-failure message."""

    requestId: str
    functionArn: str
    condition: str
    approximateInvokeCount: int


class ResponseContext(TypedDict):
    """``responseContext`` of an on-failure message."""

    statusCode: int
    executedVersion: str
    functionError: str | None


class BatchInfo(TypedDict):
    """``KinesisBatchInfo`` of an on-failure message: where to re-read the records."""

    shardId: str
    startSequenceNumber: str
    endSequenceNumber: str
    approximateArrivalOfFirstRecord: str
    approximateArrivalOfLastRecord: str
    batchSize: int
    streamArn: str


class OnFailureMessage(TypedDict):
    """The message an on-failure destination receives (SQS and SNS: metadata only)."""

    requestContext: RequestContext
    responseContext: ResponseContext
    version: str
    timestamp: str
    KinesisBatchInfo: BatchInfo


class OnFailureRecord(OnFailureMessage, total=False):
    """What an S3 destination receives: the message plus ``payload``, the batch's whole
    Lambda event as a JSON string, so the records survive the stream's retention."""

    payload: str


def with_payload(message: OnFailureMessage, event: Mapping[str, Any]) -> OnFailureRecord:
    """The invocation record Lambda writes to an S3 destination: the metadata message with
    the whole event under ``payload`` (AWS: ``"payload": "<Whole Event>"``, a string).

    >>> record = with_payload({"version": "1.0"}, {"Records": []})  # type: ignore[typeddict-item]
    >>> record["payload"]
    '{"Records":[]}'
    """
    record: OnFailureRecord = {**message}  # type: ignore[typeddict-item]
    record["payload"] = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    return record


def iso_time(epoch: float) -> str:
    """Epoch seconds as AWS writes times in on-failure messages (UTC, milliseconds, ``Z``).

    >>> iso_time(1573691886.021)
    '2019-11-14T00:38:06.021Z'
    """
    moment = dt.datetime.fromtimestamp(math.floor(epoch * 1000) / 1000, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def on_failure_message(
    batch: Batch,
    *,
    condition: str,
    function_arn: str,
    stream_arn: str,
    request_id: str,
    now: float,
) -> OnFailureMessage:
    """The message Lambda sends to an on-failure destination for a batch it gives up on.

    Metadata only, as SQS and SNS destinations get it: the records stay in the stream, and
    ``KinesisBatchInfo`` says where to read them again before the retention period ends.
    ``request_id`` is the last invocation's (a fresh one when the batch was never invoked).
    """
    first, last = batch.records[0], batch.records[-1]
    return {
        "requestContext": {
            "requestId": batch.last_request_id or request_id,
            "functionArn": function_arn,
            "condition": condition,
            "approximateInvokeCount": batch.invocations,
        },
        "responseContext": {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": batch.last_error,
        },
        "version": "1.0",
        "timestamp": iso_time(now),
        "KinesisBatchInfo": {
            "shardId": batch.shard_id,
            "startSequenceNumber": first.sequence_number,
            "endSequenceNumber": last.sequence_number,
            "approximateArrivalOfFirstRecord": iso_time(first.arrival),
            "approximateArrivalOfLastRecord": iso_time(last.arrival),
            "batchSize": len(batch.records),
            "streamArn": stream_arn,
        },
    }
