"""The ``sqs`` sink: the dead-letter queue, and a queue for ordinary records if routed to.

Dead letters (``write_dead_letters``) are sent as the JSON envelope of
:meth:`~sinks.base.DeadLetter.document`: the record's data (base64), partition key, shard,
sequence and sub-sequence number, event id, event source ARN, the pipeline, the function,
the failing step, the error class and message, and when it failed. So that operators can
filter in the console without parsing bodies, each message also has the String attributes
``reason``, ``error``, ``step``, ``function``, ``pipeline`` and ``shard`` (cut to 256
characters; empty ones are left out because SQS rejects empty attribute values), and
``redrives`` for a letter that ``shardline dlq redrive`` put back and that failed again.
Their names are constants here (``REASON_ATTRIBUTE``...), which ``shardline dlq`` reads.

Ordinary records (``write_batch``) are sent with the record's data as the body: as text
when it is UTF-8 made only of characters SQS accepts, else base64 with the attribute
``encoding: base64``; attributes ``shard``, ``sequence``, ``sub_sequence`` and
``partition_key`` give the source position.

Size. SQS counts the body plus attribute names, types and values against the queue's
``MaximumMessageSize``. SQS now allows up to 1 MiB, but many queues still have the old
256 KiB limit, so ``max_message_bytes`` defaults to 262144: set it to the queue's
``MaximumMessageSize`` when that is larger. A ``SendMessageBatch`` call carries at most 10
messages and SQS caps the sum of their sizes at the same limit as one message, so calls are
cut by both. A dead letter too large for one message is written to S3 when
``overflow_bucket`` is set (normally the pipeline's archive bucket): the object, under a key
made from the stream, shard, sequence and sub-sequence number (plus a digest of function and
step, so that two letters of one record never overwrite each other), holds the full
envelope, and a retry overwrites the same object; the message carries the envelope without
``data_base64`` and an ``overflow`` field with the bucket, key and URI. Without an overflow
bucket such a letter is a *permanent* failure whose reason says to configure one: the batch
fold (``stream.batch``) then reports the record in ``batchItemFailures``, Lambda retries
the batch within ``max_retries`` and finally hands it to its own on-failure destination,
which for a Kinesis source receives the shard and sequence range (not the data: re-read it
from the stream while it is retained).

Duplicates. On a FIFO queue (name ending in ``.fifo``) ``MessageGroupId`` is the partition
key (or its SHA-256 when SQS would not accept it) and ``MessageDeduplicationId`` a SHA-256
of the stream, shard, sequence and sub-sequence number (and, for a dead letter, the
function and step): a redelivered batch within SQS's 5-minute window adds no message. A
standard queue is at-least-once: a redelivery can duplicate a message, and consumers
de-duplicate by (shard, sequence, sub-sequence number), which every message carries.

Calls. The ``SendMessageBatch`` calls of a batch go at once, in waves
(:mod:`stream.overlap`): records through the base class's chunks (a wave's calls share no
partition key), dead letters by :func:`stream.overlap.waves` (on a FIFO queue a wave's
calls share no message group, whose order SQS keeps as it receives them).

Failures. Only the entries a call failed are sent again, with exponential backoff and full
jitter, within ``max_attempts``; when a whole call still fails after them (unreachable,
throttled, 5xx), the later waves of the batch are not sent and their messages are
retryable too, so that a failing queue costs one call's retries of the Lambda's time, not
one per ten messages. Throttling, 5xx, connection errors and entry failures
with ``SenderFault: false`` are retryable; invalid message contents and entry failures
with ``SenderFault: true`` are permanent, with the reason. A queue (or overflow bucket)
that does not exist, access denied, missing credentials are not the messages' fault
(:mod:`stream.faults`): retryable at once, without the attempts, and no further call is
made for the batch; as the dead-letter sink, its letters' records are then reported for
retry and never lost. A
call that SQS rejects as a whole for one bad message is resent message by message, so the
bad one does not fail its neighbours. boto3 is imported when the first client is made;
clients and the queue URL (one ``GetQueueUrl``) are reused while the Lambda is warm.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from base64 import b64encode
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from sinks.base import (
    BASE_DELAY_S,
    MAX_ATTEMPTS,
    OK,
    Outcome,
    Sink,
    Status,
    backoff_delay,
    permanent,
    retryable,
)
from stream.aws import RETRYABLE_CODES, Kind, classify, is_retryable_code, lazy_client
from stream.faults import is_infrastructure
from stream.overlap import run_all, waves

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from sinks.base import DeadLetter
    from stream.records import Record

__all__ = [
    "ERROR_ATTRIBUTE",
    "FUNCTION_ATTRIBUTE",
    "MAX_BATCH_ENTRIES",
    "MAX_MESSAGE_BYTES",
    "OVERFLOW_ATTRIBUTE",
    "OVERFLOW_FIELD",
    "PIPELINE_ATTRIBUTE",
    "REASON_ATTRIBUTE",
    "REDRIVES_ATTRIBUTE",
    "SHARD_ATTRIBUTE",
    "STEP_ATTRIBUTE",
    "SQSSink",
    "deduplication_id",
    "message_group_id",
    "overflow_key",
    "record_body",
]

#: Most entries in one ``SendMessageBatch`` call.
MAX_BATCH_ENTRIES = 10
#: Default message size limit: 256 KiB, the limit many queues still have.
MAX_MESSAGE_BYTES = 262_144
#: The String attributes of a dead-letter message, written here and read by ``shardline dlq``
#: (``deploy.ops.dead_letters``): name them from here on both sides.
REASON_ATTRIBUTE = "reason"
ERROR_ATTRIBUTE = "error"
STEP_ATTRIBUTE = "step"
FUNCTION_ATTRIBUTE = "function"
PIPELINE_ATTRIBUTE = "pipeline"
SHARD_ATTRIBUTE = "shard"
#: the S3 URI of an oversize letter's full envelope
OVERFLOW_ATTRIBUTE = "overflow"
#: times the letter's record was redriven before it failed again (absent: never)
REDRIVES_ATTRIBUTE = "redrives"
#: the field of an oversize letter's body that points to its envelope in S3: an object
#: with ``bucket``, ``key``, ``uri`` and ``bytes``
OVERFLOW_FIELD = "overflow"
_SQS_MESSAGE_RANGE = (1024, 1_048_576)  # what MaximumMessageSize may be set to
_ATTRIBUTE_CHARS = 256
_POINTER_REASON_CHARS = 4096
# The characters SQS rejects in bodies and attribute values: the complement of the XML 1.0
# set (#x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD #x10000-#x10FFFF). Written as the complement
# because the positive class costs ~10 ms to compile at import, this one ~1 ms.
_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_GROUP_ID = re.compile(r"[!-~]{1,128}")  # alphanumerics and punctuation, no space
_MISSING_QUEUE = frozenset(
    {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NonExistentQueue"}
)
_MISSING_BUCKET = frozenset({"NoSuchBucket"})
# Whole-call rejections that one bad message can cause: resend one by one to isolate it.
_PER_MESSAGE_CODES = frozenset(
    {
        "InvalidMessageContents",
        "AWS.SimpleQueueService.InvalidMessageContents",
        "InvalidParameterValue",
        "InvalidAttributeValue",
        "MissingParameter",
        "BatchRequestTooLong",
        "AWS.SimpleQueueService.BatchRequestTooLong",
        "ParamValidationError",
    }
)


def record_body(data: bytes) -> tuple[str, bool]:
    """A message body for record data, and whether it is base64.

    Text when the data is UTF-8 made of characters SQS accepts, else base64 (SQS rejects
    bodies with NUL and most control characters even when they are valid UTF-8).

    >>> record_body(b'{"id": 1}')
    ('{"id": 1}', False)
    >>> record_body(b"\\xff\\x00")
    ('/wA=', True)
    >>> record_body(b"a\\x00b")
    ('YQBi', True)
    """
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return b64encode(data).decode(), True
    if _FORBIDDEN.search(text):
        return b64encode(data).decode(), True
    return text, False


def message_group_id(partition_key: str) -> str:
    """The FIFO ``MessageGroupId`` for a partition key: the key itself when SQS accepts it
    (1-128 ASCII letters, digits and punctuation), else ``sha256-`` and its digest, so
    the key still maps to one group.

    >>> message_group_id("user-42")
    'user-42'
    >>> message_group_id("a key with spaces")
    'sha256-...'
    """
    if _GROUP_ID.fullmatch(partition_key):
        return partition_key
    return "sha256-" + hashlib.sha256(partition_key.encode("utf-8", "surrogatepass")).hexdigest()


def deduplication_id(*parts: str | int) -> str:
    """A FIFO ``MessageDeduplicationId``: the SHA-256 (64 hex digits) of the parts.

    A cryptographic hash, not ``zlib.crc32``: a collision would make SQS drop a different
    message as a duplicate.

    >>> deduplication_id("shardId-000000000000", "4959", 0) == deduplication_id(
    ...     "shardId-000000000000", "4959", 0)
    True
    >>> len(deduplication_id("x"))
    64
    """
    joined = "\x1f".join(str(part) for part in parts)
    return hashlib.sha256(joined.encode("utf-8", "surrogatepass")).hexdigest()


def overflow_key(letter: DeadLetter, prefix: str = "dead-letters/") -> str:
    """The S3 key of an oversize dead letter: the same for every retry of the same letter.

    ``<prefix><stream>/<shard>/<sequence>-<sub-sequence>-<digest>.json``, where the digest
    of function and step keeps two letters of one record (fan-out to two failing sinks,
    two functions on one stream) in two objects.

    >>> from sinks.base import DeadLetter
    >>> from stream.records import Record
    >>> rec = Record(b"x", "k", "4959", 2, shard_id="shardId-000000000001",
    ...              event_source_arn="arn:aws:kinesis:us-east-1:1:stream/clicks")
    >>> overflow_key(DeadLetter(rec, "too big", "E", "sink:orders", "fn"))
    'dead-letters/clicks/shardId-000000000001/4959-2-....json'
    """
    rec = letter.record
    stream = rec.event_source_arn.rsplit("/", 1)[-1] or "_"
    tag = deduplication_id(letter.function, letter.step, rec.part)[:16]
    shard = rec.shard_id or "_"
    return f"{prefix}{stream}/{shard}/{rec.sequence_number}-{rec.sub_sequence_number}-{tag}.json"


def _json_text(doc: dict[str, Any]) -> str:
    """JSON that SQS accepts: orjson, or ASCII-escaped JSON when the text holds characters
    SQS rejects (U+FFFE, U+FFFF) or that UTF-8 cannot encode (lone surrogates)."""
    try:
        text = orjson.dumps(doc).decode()
    except orjson.JSONEncodeError:
        return json.dumps(doc, ensure_ascii=True)
    if _FORBIDDEN.search(text):
        return json.dumps(doc, ensure_ascii=True)
    return text


def _attributes(values: dict[str, str]) -> dict[str, str]:
    """String attribute values SQS accepts: non-empty, cut, forbidden characters replaced."""
    return {
        name: _FORBIDDEN.sub("\ufffd", value[:_ATTRIBUTE_CHARS])
        for name, value in values.items()
        if value
    }


def _size(body: str, attributes: dict[str, str]) -> int:
    """The size SQS counts: body plus each attribute's name, type (``String``) and value."""
    return len(body.encode()) + sum(
        len(name) + 6 + len(value.encode()) for name, value in attributes.items()
    )


class _Message:
    """One message ready to send; ``index`` is its item's position in the caller's list.

    A plain slotted class: a dataclass would cost several milliseconds at import.
    """

    __slots__ = ("attributes", "body", "dedup_id", "group_id", "index", "size")

    def __init__(  # noqa: PLR0917  # private, built in two places
        self,
        index: int,
        body: str,
        attributes: dict[str, str],
        size: int,
        group_id: str | None = None,
        dedup_id: str | None = None,
    ) -> None:
        self.index = index
        self.body = body
        self.attributes = attributes
        self.size = size
        self.group_id = group_id
        self.dedup_id = dedup_id

    def entry(self, entry_id: str) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "Id": entry_id,
            "MessageBody": self.body,
            "MessageAttributes": {
                name: {"DataType": "String", "StringValue": value}
                for name, value in self.attributes.items()
            },
        }
        if self.group_id is not None:
            entry["MessageGroupId"] = self.group_id
            entry["MessageDeduplicationId"] = self.dedup_id
        return entry


def _groups(chunk: list[_Message]) -> set[str]:
    """The FIFO message groups a call holds: two calls of one group never go at once (SQS
    orders a group's messages as it receives them); none on a standard queue."""
    return {m.group_id for m in chunk if m.group_id is not None}


def _chunks(messages: Sequence[_Message], max_bytes: int) -> list[list[_Message]]:
    """Messages in order, cut into calls of at most 10 entries and ``max_bytes`` in all."""
    chunks: list[list[_Message]] = []
    chunk: list[_Message] = []
    total = 0
    for message in messages:
        if chunk and (len(chunk) == MAX_BATCH_ENTRIES or total + message.size > max_bytes):
            chunks.append(chunk)
            chunk, total = [], 0
        chunk.append(message)
        total += message.size
    if chunk:
        chunks.append(chunk)
    return chunks


class SQSSink(Sink):
    """Send dead letters (or records) to an SQS queue. See the module docstring.

    Args:
        name: the sink's name in the pipeline file.
        queue: the queue name as written in the file, or its URL (``https://...``).
        client: a boto3 SQS client; by default one is created on first use and reused
            while the Lambda is warm.
        s3_client: a boto3 S3 client for oversize letters; same default.
        overflow_bucket: where a dead letter too large for a message is stored, or
            ``None`` (then such a letter is a permanent failure).
        overflow_prefix: key prefix of those objects.
        max_message_bytes: the queue's ``MaximumMessageSize`` (1024 to 1048576).
        max_attempts: attempts of a call (failed entries only, after the first) before
            the messages are reported retryable.
        base_delay: first backoff delay in seconds; doubles per attempt up to ``MAX_DELAY_S``
            (2 s), full jitter (:func:`stream.aws.backoff_delay`).
        sleep: injectable for tests.

    Raises:
        ValueError: an empty queue, or a size or attempt count out of range.
    """

    shares_records: ClassVar[bool] = True  # never edits a record: no copies (sinks.base)
    max_batch: ClassVar[int] = MAX_BATCH_ENTRIES
    per_key_safe: ClassVar[bool] = False  # a failed entry may be followed by a sent one
    concurrent_calls: ClassVar[bool] = True  # _write keeps nothing per call (the queue URL
    # found by two calls at once is the same)

    def __init__(
        self,
        name: str,
        *,
        queue: str,
        client: Any = None,
        s3_client: Any = None,
        overflow_bucket: str | None = None,
        overflow_prefix: str = "dead-letters/",
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        max_attempts: int = MAX_ATTEMPTS,
        base_delay: float = BASE_DELAY_S,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(name)
        low, high = _SQS_MESSAGE_RANGE
        if not queue:
            msg = f"sqs sink {name!r}: `queue` is empty; name the queue (or give its URL)"
            raise ValueError(msg)
        if not low <= max_message_bytes <= high:
            msg = (
                f"sqs sink {name!r}: max_message_bytes {max_message_bytes} is outside "
                f"{low}..{high}; use the queue's MaximumMessageSize"
            )
            raise ValueError(msg)
        if max_attempts < 1:
            msg = f"sqs sink {name!r}: max_attempts {max_attempts}, expected at least 1"
            raise ValueError(msg)
        self.queue = queue
        self.fifo = queue.rstrip("/").endswith(".fifo")
        self.overflow_bucket = overflow_bucket or None
        self.overflow_prefix = overflow_prefix
        self.max_message_bytes = max_message_bytes
        self._queue_url: str | None = queue if queue.startswith(("https://", "http://")) else None
        self._client = client
        self._s3_client = s3_client
        self._max_attempts = max_attempts
        self._base_delay = base_delay
        self._sleep = sleep

    client = lazy_client("sqs")
    """The SQS client, created on first use (boto3 is imported only then)."""
    s3_client = lazy_client("s3", "_s3_client")
    """The S3 client for oversize letters, created on first use."""

    def write_dead_letters(self, letters: Sequence[DeadLetter]) -> list[Outcome]:
        """Send each letter's envelope as one message (or to S3, with a pointer message)."""
        return self._send_built([self._letter_message(i, x) for i, x in enumerate(letters)])

    def _write(self, items: Sequence[Record]) -> list[Outcome]:
        return self._send_built([self._record_message(i, x) for i, x in enumerate(items)])

    def _send_built(self, built: list[_Message | Outcome]) -> list[Outcome]:
        """Send the messages; an item that could not become one keeps its outcome."""
        out: list[Outcome] = [b if isinstance(b, Outcome) else OK for b in built]
        self._send([b for b in built if not isinstance(b, Outcome)], out)
        return out

    # -- building messages --------------------------------------------------------------

    def _letter_message(self, index: int, letter: DeadLetter) -> _Message | Outcome:
        rec = letter.record
        try:
            doc = letter.document()
        except (TypeError, ValueError) as exc:  # a document a plugin made unencodable
            return permanent(
                f"dead letter of record {rec.sequence_number}/{rec.sub_sequence_number} "
                f"cannot be encoded as JSON for queue {self.queue!r}: {exc}",
                type(exc).__name__,
            )
        attributes = _attributes(
            {
                REASON_ATTRIBUTE: letter.reason,
                ERROR_ATTRIBUTE: letter.error,
                STEP_ATTRIBUTE: letter.step,
                FUNCTION_ATTRIBUTE: letter.function,
                PIPELINE_ATTRIBUTE: letter.pipeline,
                SHARD_ATTRIBUTE: rec.shard_id,
                REDRIVES_ATTRIBUTE: str(letter.redrives) if letter.redrives else "",
            }
        )
        body = _json_text(doc)
        size = _size(body, attributes)
        if size > self.max_message_bytes:
            moved = self._overflow(letter, doc, body, size)
            if isinstance(moved, Outcome):
                return moved
            body, attributes[OVERFLOW_ATTRIBUTE] = moved
            size = _size(body, attributes)
            if size > self.max_message_bytes:
                return permanent(
                    f"even the S3 pointer message ({size} bytes) exceeds max_message_bytes "
                    f"{self.max_message_bytes} of sqs sink {self.name!r}: raise it",
                    "MessageTooLarge",
                )
        group, dedup = self._fifo_ids(rec, letter.function, letter.step)
        return _Message(index, body, attributes, size, group, dedup)

    def _record_message(self, index: int, record: Record) -> _Message | Outcome:
        where = f"record {record.sequence_number}/{record.sub_sequence_number}"
        try:
            data = record.data
        except (TypeError, ValueError) as exc:
            return permanent(f"{where} cannot be encoded for queue {self.queue!r}: {exc}")
        if not data:
            return permanent(
                f"{where} has empty data and SQS needs a non-empty body: filter empty "
                f"records out before routing them to sink {self.name!r}",
                "EmptyMessage",
            )
        body, is_base64 = record_body(data)
        attributes = _attributes(
            {
                "shard": record.shard_id,
                "sequence": record.sequence_number,
                "sub_sequence": str(record.sub_sequence_number),
                "partition_key": record.partition_key,
                "encoding": "base64" if is_base64 else "",
            }
        )
        size = _size(body, attributes)
        if size > self.max_message_bytes:
            return permanent(
                f"{where} makes a message of {size} bytes, over max_message_bytes "
                f"{self.max_message_bytes} of sqs sink {self.name!r}: route large records "
                "to an s3 sink, or raise max_message_bytes if the queue allows more",
                "MessageTooLarge",
            )
        group, dedup = self._fifo_ids(record)
        return _Message(index, body, attributes, size, group, dedup)

    def _fifo_ids(self, record: Record, *extra: str) -> tuple[str | None, str | None]:
        if not self.fifo:
            return None, None
        dedup = deduplication_id(
            record.event_source_arn,
            record.shard_id,
            record.sequence_number,
            record.sub_sequence_number,
            record.part,
            *extra,
        )
        return message_group_id(record.partition_key), dedup

    def _overflow(
        self, letter: DeadLetter, doc: dict[str, Any], body: str, size: int
    ) -> tuple[str, str] | Outcome:
        """Store the full envelope in S3; the pointer body and the object's URI."""
        bucket = self.overflow_bucket
        if bucket is None:
            return permanent(
                f"dead letter of {size} bytes is over max_message_bytes "
                f"{self.max_message_bytes} of sqs sink {self.name!r} (queue {self.queue!r}): "
                "set its overflow_bucket (e.g. the bucket of the pipeline's s3 sink) so "
                "large letters go to S3 with a pointer in the message, or raise "
                "max_message_bytes if the queue's MaximumMessageSize allows more",
                "MessageTooLarge",
            )
        key = overflow_key(letter, self.overflow_prefix)
        uri = f"s3://{bucket}/{key}"
        payload = body.encode()
        put = partial(
            self.s3_client.put_object,
            Bucket=bucket,
            Key=key,
            Body=payload,
            ContentType="application/json",
        )
        outcome, _ = self._retrying(put, f"bucket {bucket!r}")
        if not outcome.ok:
            return Outcome(
                outcome.status,
                f"dead letter of {size} bytes is too large for queue {self.queue!r} and "
                f"writing it to {uri} failed: {outcome.reason}",
                outcome.error,
            )
        pointer = {k: v for k, v in doc.items() if k != "data_base64"}
        reason = pointer["reason"]
        if len(reason) > _POINTER_REASON_CHARS:
            pointer["reason"] = reason[:_POINTER_REASON_CHARS] + "... (in full in the object)"
        pointer[OVERFLOW_FIELD] = {"bucket": bucket, "key": key, "uri": uri, "bytes": len(payload)}
        return _json_text(pointer), uri

    # -- sending ------------------------------------------------------------------------

    def _send(self, messages: list[_Message], out: list[Outcome]) -> None:
        if not messages:
            return
        url = self._url()
        if isinstance(url, Outcome):
            for message in messages:
                out[message.index] = url
            return
        down: Outcome | None = None
        for wave in waves(_chunks(messages, self.max_message_bytes), keys=_groups):
            if down is None:
                downs = run_all([partial(self._send_chunk, url, chunk, out) for chunk in wave])
                down = next(filter(None, downs), None)
                continue
            for message in (m for chunk in wave for m in chunk):  # the queue failed a whole
                out[message.index] = down  # call every attempt: stop

    def _url(self) -> str | Outcome:
        """The queue URL: given, or from one ``GetQueueUrl``, cached only once it worked."""
        if self._queue_url is None:
            get = partial(self.client.get_queue_url, QueueName=self.queue)
            outcome, response = self._retrying(get, f"queue {self.queue!r}")
            if not outcome.ok:
                return outcome
            self._queue_url = str(response["QueueUrl"])
        return self._queue_url

    def _send_chunk(self, url: str, chunk: list[_Message], out: list[Outcome]) -> Outcome | None:
        """One ``SendMessageBatch``; then only the entries that failed, until attempts run out.

        Entry ids are the message's index in the chunk: unique, and the same on a retry.
        Returns the outcome for the messages of later calls when the last attempt failed as
        a whole call (unreachable, throttled, 5xx): each further call would spend its own
        ``max_attempts`` of timeouts and backoff on the same queue, inside the Lambda's
        time budget, so they are not made.
        """
        pending = {str(n): message for n, message in enumerate(chunk)}
        call_failed: Outcome | None = None
        for attempt in range(self._max_attempts):
            if attempt:
                self._backoff(attempt)
            entries = [message.entry(entry_id) for entry_id, message in pending.items()]
            send = partial(self.client.send_message_batch, QueueUrl=url, Entries=entries)
            outcome, response = self._attempt(send, f"queue {self.queue!r}")
            if outcome.status is Status.PERMANENT:
                if len(pending) > 1 and outcome.error in _PER_MESSAGE_CODES:
                    for message in pending.values():  # find the message it is about
                        self._send_chunk(url, [message], out)
                    return None
                for message in pending.values():
                    out[message.index] = outcome
                return None
            if outcome.status is Status.RETRYABLE:
                call_failed = outcome
                for message in pending.values():
                    out[message.index] = outcome
                if is_infrastructure(outcome.error):  # retrying cannot help: stop the batch
                    return retryable(
                        f"not sent to queue {self.queue!r}: an earlier call failed "
                        f"({outcome.reason})",
                        "HeldBack",
                    )
                continue
            call_failed = None
            pending = self._settle(response, pending, out)
            if not pending:
                return None
        for message in pending.values():
            last = out[message.index]
            out[message.index] = retryable(
                f"{last.reason} (gave up after {self._max_attempts} attempts)", last.error
            )
        if call_failed is None:
            return None
        return retryable(
            f"not sent to queue {self.queue!r}: an earlier call failed "
            f"{self._max_attempts} times ({call_failed.reason})",
            "HeldBack",
        )

    def _settle(
        self, response: dict[str, Any], pending: dict[str, _Message], out: list[Outcome]
    ) -> dict[str, _Message]:
        """Record the entries' fates; return the entries to send again."""
        for entry in response.get("Successful", ()):
            message = pending.pop(entry.get("Id", ""), None)
            if message is not None:
                out[message.index] = OK
        again: dict[str, _Message] = {}
        for entry in response.get("Failed", ()):
            entry_id = entry.get("Id", "")
            message = pending.pop(entry_id, None)
            if message is None:
                continue
            code = entry.get("Code", "")
            reason = f"SQS {code} for a message to queue {self.queue!r}: {entry.get('Message')}"
            if entry.get("SenderFault") and code not in RETRYABLE_CODES["sqs"]:
                out[message.index] = permanent(reason, code)
            else:
                out[message.index] = retryable(reason, code)
                again[entry_id] = message
        for entry_id, message in pending.items():  # in neither list: not known to be sent
            out[message.index] = retryable(
                f"SQS returned no result for a message to queue {self.queue!r}", "NoResult"
            )
            again[entry_id] = message
        return again

    def _backoff(self, attempt: int) -> None:
        self._sleep(backoff_delay(attempt, self._base_delay))

    def _retrying(
        self, fn: Callable[[], dict[str, Any]], target: str
    ) -> tuple[Outcome, dict[str, Any]]:
        """Call until it works, fails permanently, or attempts run out."""
        outcome: Outcome = OK
        response: dict[str, Any] = {}
        for attempt in range(self._max_attempts):
            if attempt:
                self._backoff(attempt)
            outcome, response = self._attempt(fn, target)
            if outcome.status is not Status.RETRYABLE or is_infrastructure(outcome.error):
                break  # done, or retrying cannot help (a missing queue, access denied)
        return outcome, response

    def _attempt(
        self, fn: Callable[[], dict[str, Any]], target: str
    ) -> tuple[Outcome, dict[str, Any]]:
        """One call, its errors translated into an outcome."""
        try:
            return OK, fn()
        except Exception as exc:  # classified; anything not botocore's is re-raised
            failure = classify(exc, "sqs")
            if failure.kind is Kind.OTHER:
                raise
            if failure.answered:
                return self._classify(getattr(exc, "response", {}), target), {}
            if failure.kind is Kind.INVALID:
                return permanent(f"invalid request to {target}: {exc}", failure.code), {}
            return retryable(f"{target} unreachable: {exc}", failure.code), {}

    def _classify(self, response: dict[str, Any], target: str) -> Outcome:
        error = response.get("Error", {})
        code = str(error.get("Code", ""))
        message = error.get("Message", "")
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _MISSING_QUEUE:
            reason = (
                f"SQS queue {self.queue!r} does not exist ({code}): create it (`shardline "
                f"deploy` creates the queues a pipeline names) or fix `queue` of sink "
                f"{self.name!r}"
            )
        elif code in _MISSING_BUCKET:
            reason = (
                f"overflow bucket {self.overflow_bucket!r} does not exist: create it or fix "
                f"overflow_bucket of sink {self.name!r}"
            )
        else:
            reason = f"{code or status} on {target}: {message}"
        if is_infrastructure(code):  # not the messages' fault: never dead-lettered
            return retryable(reason, code)
        if is_retryable_code("sqs", code, status):
            return retryable(reason, code)
        return permanent(reason, code)
