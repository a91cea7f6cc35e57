"""The ``kinesis`` sink: re-publish records to another stream, for multi-stage pipelines.

Each record's data (its bytes as the chain left them) is put with the partition key taken
from a record field, through :class:`stream.producer.Producer`: PutRecords calls of up to
500 entries and 5 MiB, only failed entries resent with backoff and full jitter within a
bounded number of attempts, optional KPL aggregation.

Outcomes: ok; retryable when an entry still fails after the bounded attempts (throttling,
internal failure, connection) or was held back behind an earlier failed record of its key;
permanent when retrying cannot help: the key field is missing or unusable, the record is
over the maximum record size, the stream does not exist (``ResourceNotFoundException``) or
access is denied.

Order: ``per_key_safe`` is ``True``. The producer never sends a record of a partition key
before every earlier record of that key has succeeded, so a whole batch can go in one
``_write`` and still fill 500-entry calls; the calls that share no key go at once, in waves
(``Producer(concurrent=True)``, :mod:`stream.overlap`). The order it keeps is that of the *target*
partition key, the one that orders records in the target stream and for its consumers.
Records of one source key that map to different target keys land in unrelated ordering
domains (Kinesis orders only within a key's shard), so no consumer can rely on their
relative order anyway.

Delivery: Kinesis has no idempotent put. A batch that Lambda delivers again (after a
retryable failure of this or another sink) is published again: at-least-once. Functions
that consume the target stream de-duplicate through their own idempotent sinks (DynamoDB
``latest``/``append``, OpenSearch ids), which is how exactly-once effect holds end to end.

boto3 and ``aws_kinesis_agg`` are imported when the first batch is written, not with this
module.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar

from sinks.base import OK, Outcome, Sink, permanent, retryable
from stream.aws import FIRST_DELAY_S, MAX_ATTEMPTS, MAX_DELAY_S
from stream.exceptions import RecordError
from stream.producer import MAX_RECORD_BYTES, InvalidRecordError, Producer

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from stream.records import Record

__all__ = ["KinesisSink"]


class KinesisSink(Sink):
    """Put records into a Kinesis stream, keyed by a record field.

    Args:
        name: the sink's name in the pipeline file.
        stream: the target stream's name (or ARN), used as written.
        partition_key: the top-level record field whose value (a non-empty string or a
            number) is the partition key.
        client: a boto3 Kinesis client; by default one is created on first use and reused
            while the Lambda is warm.
        aggregate: pack records into KPL aggregates per shard (the consumer must
            de-aggregate; shardline's does).
        max_attempts: times an entry is sent before its record is reported retryable (by
            default the budget of every sink, :data:`stream.aws.MAX_ATTEMPTS`).
        base_delay: first backoff bound in seconds; doubles per attempt, full jitter (by
            default the other sinks' waits, :func:`stream.aws.backoff_delay`).
        max_delay: the backoff bound's cap in seconds.
        max_record_bytes: the target stream's maximum record size.
        sleep: injectable for tests.
    """

    shares_records: ClassVar[bool] = True  # never edits a record: no copies (sinks.base)
    max_batch: ClassVar[int] = 10_000  # the producer makes the 500-entry calls
    per_key_safe: ClassVar[bool] = True  # the producer holds later records of a failed key

    def __init__(
        self,
        name: str,
        *,
        stream: str,
        partition_key: str,
        client: Any = None,
        aggregate: bool = False,
        max_attempts: int = MAX_ATTEMPTS,
        base_delay: float = FIRST_DELAY_S,
        max_delay: float = MAX_DELAY_S,
        max_record_bytes: int = MAX_RECORD_BYTES,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(name)
        if not partition_key:
            msg = f"kinesis sink {name!r}: partition_key must name a record field"
            raise ValueError(msg)
        self.stream = stream
        self.partition_key = partition_key
        self._producer = Producer(
            stream,
            client,
            aggregate=aggregate,
            ordered=True,
            max_attempts=max_attempts,
            base_delay=base_delay,
            max_delay=max_delay,
            max_record_bytes=max_record_bytes,
            buffer_records=self.max_batch,
            concurrent=True,  # the calls that share no key go at once (stream.overlap)
            sleep=sleep,
        )

    @property
    def client(self) -> Any:
        """The Kinesis client, created on first use (boto3 is imported only then)."""
        return self._producer.client

    def _write(self, items: Sequence[Record]) -> list[Outcome]:
        outcomes: list[Outcome] = [OK] * len(items)
        put = self._producer.put
        where: dict[int, int] = {}  # producer index -> item index
        for i, record in enumerate(items):
            key = self._key(record)
            if key.reason:
                outcomes[i] = permanent(key.reason, key.error)
                continue
            try:
                where[put(record.data, key.value)] = i
            except InvalidRecordError as exc:  # too large, or a key Kinesis refuses
                outcomes[i] = permanent(f"kinesis sink {self.name!r}: {exc}", type(exc).__name__)
            except TypeError as exc:  # the chain left a document orjson cannot encode
                reason = f"kinesis sink {self.name!r}: the record cannot be encoded ({exc})"
                outcomes[i] = permanent(reason, type(exc).__name__)
        for result in self._producer.flush().results:
            if result.ok:
                continue
            reason = f"kinesis sink {self.name!r}: {result.reason}"
            fate = permanent if result.permanent else retryable
            outcomes[where[result.index]] = fate(reason, result.error)
        return outcomes

    def _key(self, record: Record) -> _Key:
        try:
            value = record.as_dict().get(self.partition_key)
        except RecordError as exc:
            return _Key("", str(exc), type(exc).__name__)
        if isinstance(value, str) and value:
            return _Key(value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return _Key(str(value))
        reason = (
            f"record has no usable partition key field {self.partition_key!r} (got "
            f"{value!r}); kinesis sink {self.name!r} (stream {self.stream!r}) needs a "
            "non-empty string or a number there"
        )
        return _Key("", reason, "ValidationError")


class _Key:
    """A partition key, or why the record has none."""

    __slots__ = ("error", "reason", "value")

    def __init__(self, value: str, reason: str = "", error: str = "") -> None:
        self.value = value
        self.reason = reason
        self.error = error
