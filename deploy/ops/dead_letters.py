"""Dead letters: read them from the pipeline's dead-letter sinks, group them, redrive them.

A *letter source* is one place a pipeline's failures end up. Sources are SQS queues
(:class:`SQSSource`): every ``sqs`` sink a function names as ``on_failure``, and the queue
``<name>-dlq`` that deploy creates for functions that name none (:func:`sqs_queues`); and
buckets (:class:`S3Source`): every ``s3`` sink named as ``on_failure`` (:func:`s3_sources`),
its envelopes and Lambda's on-failure objects, behind the same :class:`LetterSource`.

A source yields :class:`Message` values of three kinds (:class:`Kind`):

* ``letter``: a shardline dead letter, the envelope :meth:`sinks.base.DeadLetter.document`
  writes (read back with :meth:`~sinks.base.DeadLetter.from_document`; an oversize letter's
  message points to its envelope in S3, which is fetched). Only these are redriven or
  discarded.
* ``range``: Lambda's own on-failure message for a batch it gave up on (retries exhausted,
  record too old): a shard and a sequence range, no records. Listed; :func:`redrive` given
  a *resolver* (:class:`deploy.ops.ranges.RangeResolver`: the stream, else the archive)
  puts its records through the function like letters and deletes the message once all of
  them are handled; a range that cannot be resolved is left, with the reason.
* ``foreign``: anything else. Listed with why it is not a letter, never deleted.

Redrive (:func:`redrive`) puts each selected letter back through its function as the plan
defines it now (:func:`stream.runtime.build_runner`), as a record at its original position
(shard, sequence and sub-sequence number, partition key, arrival), into the function's
sinks: keyed sinks are idempotent by position and a ``latest`` item is never overwritten by
an older record. Letters run in shard order (shard, sequence, sub-sequence number), so the
records of one key keep their order, and the function's ordering policy holds back the
later records of a key whose earlier one failed. A message is deleted only once its letter
is *handled*: written, filtered out, or dead-lettered again (with ``redrives`` one higher
and the new reason). A rerun after an interruption therefore writes nothing twice.

A function with a ``window`` step (session windows too) is different: the window takes a
record at or before the position it has applied on its shard for a redelivery and, once
its outbox moved on, drops it without a failure. So a letter made after the window (a
sink's: a window result, or a late record; ``route``; a later step's) goes in *after* it
(:func:`stream.runtime.build_runner` ``from_step``), a sink's letter routed to that sink
again unless a later route step chooses; and a letter of the window step or before it (or
an on-failure range's records) is refused, in a dry run too, with the fix
(:func:`_behind_window`).

Two redrives at once never both handle a letter: every source leases what it reads (an SQS
visibility timeout, a claim on an S3 object: :mod:`deploy.ops.leases`), the leases are
renewed from the first receive until the redrive ends (:meth:`Scan.keep`: reading many
letters or resolving ranges may take longer than a hold), and a message is deleted only
while its lease holds. A letter the other redrive dead-lettered again meanwhile is left for the next
run (:func:`redriven_meanwhile`).
"""

from __future__ import annotations

import dataclasses
import enum
import gzip
import re
import threading
import time
import weakref
from abc import ABC, abstractmethod
from base64 import b64encode
from collections import defaultdict
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from deploy.aws.cloudformation import ON_FAILURE_PREFIX
from deploy.names import dead_letter_queue_name
from sinks.base import DeadLetter, Ordering, Sink
from sinks.s3 import DEAD_LETTERS, object_body
from sinks.sqs import OVERFLOW_FIELD, REDRIVES_ATTRIBUTE

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from deploy.ops.leases import LeaseKeeper
    from sinks.base import Outcome
    from stream.plan import FunctionPlan, Plan, SinkSpec
    from stream.records import Record
    from stream.runtime import SinkFactory

__all__ = [
    "DEFAULT_MAX_REDRIVES",
    "Fate",
    "Group",
    "Kind",
    "LetterSource",
    "Message",
    "Redriven",
    "S3Source",
    "SQSSource",
    "Scan",
    "Selection",
    "decoded_payload",
    "discard",
    "group",
    "letter_row",
    "parse_message",
    "parse_since",
    "read_sources",
    "redrive",
    "redriven_meanwhile",
    "s3_sources",
    "sqs_queues",
    "window_index",
]

#: Redrives of one letter after which ``redrive`` leaves it alone.
DEFAULT_MAX_REDRIVES = 3
_RECEIVE_BATCH = 10  # most messages one ReceiveMessage / DeleteMessageBatch handles
_EMPTY_ROUNDS = 2  # short polling may answer empty while messages remain: ask again once
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Kind(enum.Enum):
    """What a message in a dead-letter sink is."""

    LETTER = "letter"
    """A shardline dead letter: the record, its position and why it failed."""
    RANGE = "range"
    """Lambda's on-failure message: a shard and sequence range, without the records."""
    FOREIGN = "foreign"
    """Anything else: listed, never deleted."""


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a letter source.

    Attributes:
        source: the source's name (the queue).
        id: the message's id in the source.
        handle: what deleting it takes (an SQS receipt handle).
        kind: letter, range or foreign.
        sent_at: when the source received it (epoch seconds).
        body: the message as read.
        letter: the dead letter (kind ``letter``), else ``None``.
        problem: why a letter cannot be redriven as read (its envelope in S3 is
            missing), or why a foreign message is not a letter; "" otherwise.
    """

    source: str
    id: str
    handle: str
    kind: Kind
    sent_at: float
    body: str
    letter: DeadLetter | None = None
    problem: str = ""

    @property
    def failed_at(self) -> float:
        """When the letter's record failed, else when the message was sent."""
        return self.letter.failed_at if self.letter and self.letter.failed_at else self.sent_at


def parse_message(
    source: str,
    message_id: str,
    handle: str,
    body: str,
    *,
    attributes: Mapping[str, str] | None = None,
    sent_at: float = 0.0,
    fetch: Callable[[str, str], bytes] | None = None,
) -> Message:
    """Classify one message of a dead-letter queue and read its letter: the one parser of
    what :class:`sinks.sqs.SQSSink` writes.

    Args:
        source: the queue's name.
        message_id: its id.
        handle: its receipt handle.
        body: its body.
        attributes: its String message attributes by name (a letter's ``redrives`` is
            taken from them when the body does not say).
        sent_at: when SQS received it.
        fetch: ``fetch(bucket, key)`` reads an oversize letter's envelope from S3.

    >>> from sinks.base import DeadLetter
    >>> from stream.records import Record
    >>> rec = Record(b'{"id": 7}', "k", "4959", shard_id="shardId-000000000000")
    >>> doc = DeadLetter(rec, "boom", "ValueError", "processors[0]", "fn", "p").document()
    >>> m = parse_message("q", "1", "h", orjson.dumps(doc).decode())
    >>> m.kind.value, m.letter.function, m.letter.record.data
    ('letter', 'fn', b'{"id": 7}')
    >>> parse_message("q", "2", "h", "hello").kind.value
    'foreign'
    >>> parse_message("q", "3", "h", '{"KinesisBatchInfo": {"shardId": "s"}}').kind.value
    'range'
    """
    attributes = attributes or {}

    def other(kind: Kind, why: str = "") -> Message:
        return Message(source, message_id, handle, kind, sent_at, body, problem=why)

    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return other(Kind.FOREIGN, "not JSON")
    if not isinstance(doc, dict):
        return other(Kind.FOREIGN, "not a JSON object")
    if isinstance(doc.get("KinesisBatchInfo"), dict):
        return other(Kind.RANGE, "an on-failure range: the records are not in the message")
    problem = ""
    data: bytes | None = None
    pointer = doc.get(OVERFLOW_FIELD)
    if "data_base64" not in doc and isinstance(pointer, dict):
        if fetch is None:
            data, problem = b"", f"its envelope is in {pointer.get('uri')} (not read)"
        else:
            try:
                full = orjson.loads(fetch(str(pointer["bucket"]), str(pointer["key"])))
                doc = {**full, **{k: v for k, v in doc.items() if k == "redrives"}}
            except Exception as exc:  # any failure: say it, refuse to redrive
                data = b""
                problem = f"its envelope {pointer.get('uri')} cannot be read: {exc}"
    try:
        letter = DeadLetter.from_document(doc, data)
    except (KeyError, TypeError, ValueError) as exc:
        return other(Kind.FOREIGN, f"not a shardline dead letter ({type(exc).__name__}: {exc})")
    if not letter.redrives and attributes.get(REDRIVES_ATTRIBUTE, "").isdigit():
        letter = letter.replace(redrives=int(attributes[REDRIVES_ATTRIBUTE]))
    return Message(source, message_id, handle, Kind.LETTER, sent_at, body, letter, problem)


class LetterSource(ABC):
    """A place where a pipeline's failures are kept: a queue or a bucket.

    Reading with a hold (``hold_s`` > 0) leases what was read (:mod:`deploy.ops.leases`):
    it is hidden from other holders until :meth:`delete`, :meth:`release` or the end of the
    hold, which :meth:`renew` extends; :meth:`delete` removes only what is still held. So
    two operators never redrive one letter at once.
    """

    name: str
    hold_s: int = 0
    """Seconds a lease lasts without renewal; 0: this source leases nothing."""
    held_elsewhere: int = 0
    """What :meth:`read` skipped because another holder has it (S3 objects claimed)."""

    @abstractmethod
    def read(self) -> list[Message]:
        """Every message, classified (:func:`parse_message`), hidden from other readers."""

    @abstractmethod
    def delete(self, messages: Sequence[Message]) -> dict[str, str]:
        """Remove these messages; return why each that could not be removed was not, by id."""

    @abstractmethod
    def release(self, messages: Sequence[Message]) -> None:
        """Make these messages visible again, unchanged."""

    def renew(self) -> None:  # noqa: B027  # a source that leases nothing renews nothing
        """Extend the lease of everything held by ``hold_s`` (a lease found lost is
        dropped: :meth:`delete` then leaves its messages alone)."""


class SQSSource(LetterSource):
    """An SQS queue of dead letters.

    A message read is leased by its visibility timeout (``hold_s``): this source knows
    until when (its monotonic clock, from just before the receive), :meth:`renew` extends
    it, and :meth:`delete` first extends it once more and deletes only the messages whose
    lease had not run out and whose extension worked. A message whose lease ran out may have
    been received by another redrive meanwhile: it is not deleted (nor released) by this one.

    Args:
        queue: the queue's name (or URL).
        client: a boto3 SQS client.
        s3_client: a boto3 S3 client, for oversize letters' envelopes.
        hold_s: how long messages read stay hidden from other readers (the visibility
            timeout); messages not deleted are released before that.
        clock: a monotonic clock (injected for tests).
    """

    def __init__(
        self,
        queue: str,
        client: Any,
        s3_client: Any,
        hold_s: int = 300,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = queue
        self.hold_s = hold_s
        self._client = client
        self._s3 = s3_client
        self._clock = clock
        self._url: str | None = queue if queue.startswith(("https://", "http://")) else None
        self._leases: dict[str, tuple[str, float]] = {}  # message id: (handle, held until)
        self._lock = threading.RLock()  # the lease keeper renews from its own thread

    @property
    def url(self) -> str:
        """The queue URL (one ``GetQueueUrl``)."""
        if self._url is None:
            self._url = str(self._client.get_queue_url(QueueName=self.name)["QueueUrl"])
        return self._url

    def read(self) -> list[Message]:
        """Receive until the queue has nothing new left (twice in a row no message not
        received already).

        A message received again (its lease ran out: a read slower than ``hold_s`` with
        no renewal, or a duplicate delivery of a standard queue) keeps its first letter
        but takes the newest receipt handle and expiry: SQS deletes and extends a message
        only by the handle of its latest receipt. Such rounds do not count as new, so a
        read whose leases run out still ends."""
        out: list[Message] = []
        seen: set[str] = set()
        empty = 0
        while empty < _EMPTY_ROUNDS:
            asked = self._clock()
            response = self._client.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=_RECEIVE_BATCH,
                VisibilityTimeout=self.hold_s,
                WaitTimeSeconds=0,
                AttributeNames=["SentTimestamp"],
                MessageAttributeNames=["All"],
            )
            messages = response.get("Messages", [])
            empty = 0 if any(m["MessageId"] not in seen for m in messages) else empty + 1
            for m in messages:
                with self._lock:
                    self._leases[m["MessageId"]] = (m["ReceiptHandle"], asked + self.hold_s)
                if m["MessageId"] in seen:  # received again: only its handle is new
                    continue
                seen.add(m["MessageId"])
                attributes = {
                    name: str(value.get("StringValue", ""))
                    for name, value in m.get("MessageAttributes", {}).items()
                }
                sent = int(m.get("Attributes", {}).get("SentTimestamp", 0)) / 1000
                out.append(
                    parse_message(
                        self.name,
                        m["MessageId"],
                        m["ReceiptHandle"],
                        m.get("Body", ""),
                        attributes=attributes,
                        sent_at=sent,
                        fetch=self._fetch,
                    )
                )
        return out

    def _fetch(self, bucket: str, key: str) -> bytes:
        body: bytes = self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        return body

    def _extend(self, ids: Iterable[str]) -> dict[str, str]:
        """Extend the leases of these messages by ``hold_s``; why each that is lost, by id
        (it is forgotten: another reader may hold it now)."""
        lost: dict[str, str] = {}
        with self._lock:
            now = self._clock()
            held = []
            for message_id in ids:
                handle, until = self._leases.get(message_id, ("", 0.0))
                if not handle:
                    lost[message_id] = "not held by this redrive"
                elif until <= now:
                    lost[message_id] = "its lease (the visibility timeout) ran out"
                else:
                    held.append((message_id, handle))
            for start in range(0, len(held), _RECEIVE_BATCH):
                chunk = held[start : start + _RECEIVE_BATCH]
                response = self._client.change_message_visibility_batch(
                    QueueUrl=self.url,
                    Entries=[
                        {"Id": str(n), "ReceiptHandle": handle, "VisibilityTimeout": self.hold_s}
                        for n, (_, handle) in enumerate(chunk)
                    ],
                )
                failed = {int(e["Id"]): e for e in response.get("Failed", ())}
                for n, (message_id, handle) in enumerate(chunk):
                    if n in failed:
                        entry = failed[n]
                        why = f"its lease cannot be extended ({entry.get('Code')}: "
                        lost[message_id] = why + f"{entry.get('Message')})"
                    else:
                        self._leases[message_id] = (handle, now + self.hold_s)
            for message_id in lost:
                self._leases.pop(message_id, None)
        return lost

    def renew(self) -> None:
        with self._lock:
            self._extend(list(self._leases))

    def delete(self, messages: Sequence[Message]) -> dict[str, str]:
        failed: dict[str, str] = {}
        with self._lock:
            lost = self._extend(m.id for m in messages)
            held = [m for m in messages if m.id not in lost]
            failed |= {
                message_id: f"not deleted: {why}; another redrive may hold it now"
                for message_id, why in lost.items()
            }
            for start in range(0, len(held), _RECEIVE_BATCH):
                chunk = held[start : start + _RECEIVE_BATCH]
                response = self._client.delete_message_batch(
                    QueueUrl=self.url,
                    Entries=[  # the latest receipt's handle (see :meth:`read`)
                        {"Id": str(n), "ReceiptHandle": self._leases.get(m.id, (m.handle,))[0]}
                        for n, m in enumerate(chunk)
                    ],
                )
                for entry in response.get("Failed", ()):
                    message = chunk[int(entry["Id"])]
                    failed[message.id] = f"{entry.get('Code')}: {entry.get('Message')}"
                for m in chunk:
                    self._leases.pop(m.id, None)
        return failed

    def release(self, messages: Sequence[Message]) -> None:
        """Make the messages still held visible again (not those whose lease was lost:
        another reader may hold them)."""
        with self._lock:
            now = self._clock()
            leases = [(m.id, self._leases.pop(m.id, ("", 0.0))) for m in messages]
            held = [(i, handle) for i, (handle, until) in leases if handle and until > now]
        for start in range(0, len(held), _RECEIVE_BATCH):
            chunk = held[start : start + _RECEIVE_BATCH]
            self._client.change_message_visibility_batch(
                QueueUrl=self.url,
                Entries=[
                    {"Id": str(n), "ReceiptHandle": handle, "VisibilityTimeout": 0}
                    for n, (_, handle) in enumerate(chunk)
                ],
            )


class S3Source(LetterSource):
    """Dead letters in a bucket: the envelopes an ``s3`` ``on_failure`` sink writes (JSON
    lines under ``dead-letters/`` below its prefix, gzip or plain, several per object), and
    the on-failure objects Lambda (and the local mapping) write under ``aws/lambda/``
    (ranges, each a whole invocation record). One message per line, parsed by
    :func:`parse_message`; its id is ``KEY:LINE``.

    With a hold (``hold_s`` > 0: redrive, discard) each object is claimed before it is read
    (:class:`deploy.ops.leases.ObjectClaims`); one claimed by another operator is skipped
    (counted in ``held_elsewhere``), and a claim is given up once the object is done with
    or released (:meth:`release`). Without one (``ls``, ``show``) nothing is claimed.

    An object is deleted only once every line of it is deleted, and only while its claim
    holds; when some lines stay (a letter not handled, a range, a foreign line) it is
    rewritten with those lines only. Both are conditional on the ETag read: an object the
    sink wrote again since (a redriven letter that failed again lands at its old key, since
    keys name the positions they hold) is left alone.

    Args:
        bucket: the bucket.
        prefix: the sink's prefix (its literal part is listed), "" for the bucket's root.
        client: a boto3 S3 client.
        hold_s: how long a claim holds without renewal; 0: claim nothing.
    """

    def __init__(self, bucket: str, prefix: str, client: Any, hold_s: int = 0) -> None:
        from deploy.ops.leases import ObjectClaims  # noqa: PLC0415

        self.bucket = bucket
        self.prefix = prefix.split("{", 1)[0].lstrip("/")
        self.name = f"s3://{bucket}/{self.prefix}"
        self.hold_s = hold_s
        self.held_elsewhere = 0
        self._client = client
        self._claims = ObjectClaims(bucket, client, hold_s) if hold_s > 0 else None
        # by key: its ETag, whether gzipped, its lines (message id, line) as read
        self._read: dict[str, tuple[str, bool, list[tuple[str, bytes]]]] = {}

    def _keys(self) -> list[dict[str, Any]]:
        from deploy.ops.leases import CLAIMS_PREFIX  # noqa: PLC0415

        found: dict[str, dict[str, Any]] = {}
        for prefix in (self.prefix, ON_FAILURE_PREFIX):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if key.startswith(CLAIMS_PREFIX):
                        continue
                    if key.startswith(ON_FAILURE_PREFIX) or f"{DEAD_LETTERS}/" in key:
                        found[key] = obj
        return [found[key] for key in sorted(found)]

    def read(self) -> list[Message]:
        """Every line of every dead-letter and on-failure object (claimed first, with a
        hold), in key order."""
        out: list[Message] = []
        for obj in self._keys():
            key = obj["Key"]
            if self._claims is not None and not self._claims.claim(key):
                self.held_elsewhere += 1
                continue
            try:
                got = self._client.get_object(Bucket=self.bucket, Key=key)
            except Exception as exc:  # botocore's errors: gone since listed is no letter
                if _status(exc) != 404:
                    raise
                self._unclaim(key)
                continue
            body: bytes = got["Body"].read()
            zipped = body[:2] == b"\x1f\x8b"
            if zipped:
                body = gzip.decompress(body)
            sent = obj["LastModified"].timestamp()
            lines = []
            for n, line in enumerate(x for x in body.splitlines() if x.strip()):
                message_id = f"{key}:{n}"
                lines.append((message_id, line))
                text = line.decode(errors="replace")
                out.append(parse_message(self.name, message_id, key, text, sent_at=sent))
            self._read[key] = (str(got.get("ETag", "")), zipped, lines)
            if not lines:
                self._unclaim(key)  # nothing in it to hold
        return out

    def _unclaim(self, key: str) -> None:
        if self._claims is not None:
            self._claims.release(key)

    def renew(self) -> None:
        if self._claims is not None:
            for key in self._claims.held:
                self._claims.renew(key)

    def delete(self, messages: Sequence[Message]) -> dict[str, str]:
        failed: dict[str, str] = {}
        gone: dict[str, set[str]] = defaultdict(set)
        for m in messages:
            gone[m.handle].add(m.id)
        for key, ids in gone.items():
            lost = self._claims.renew(key) if self._claims is not None else ""
            if lost:
                failed |= dict.fromkeys(ids, f"not deleted: {lost}; another redrive holds it")
                continue
            etag, zipped, lines = self._read[key]
            left = [(i, line) for i, line in lines if i not in ids]
            try:
                if left:
                    body = object_body([line for _, line in left], "gzip" if zipped else "none")
                    put = self._client.put_object(
                        Bucket=self.bucket, Key=key, Body=body, IfMatch=etag
                    )
                    self._read[key] = (str(put.get("ETag", "")), zipped, left)
                    continue  # its claim goes with the lines left (release)
                self._client.delete_object(Bucket=self.bucket, Key=key, IfMatch=etag)
                del self._read[key]
            except Exception as exc:  # botocore's errors: say which
                if _status(exc) not in {404, 409, 412}:  # deleted, or written again since
                    failed |= dict.fromkeys(ids, f"{type(exc).__name__}: {exc}")
                    continue
            self._unclaim(key)
        return failed

    def release(self, messages: Sequence[Message]) -> None:
        """Give up the claims on the objects of these messages (nothing else hides them)."""
        for key in dict.fromkeys(m.handle for m in messages):
            self._unclaim(key)


def _status(exc: Exception) -> int:
    """The HTTP status of a botocore ``ClientError``, else 0."""
    response = getattr(exc, "response", None) or {}
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def s3_sources(plan: Plan) -> list[tuple[str, str]]:
    """The buckets (and sink prefixes) the plan's functions dead-letter to: every ``s3``
    sink named as ``on_failure``, in file order.

    >>> plan = {"sinks": {"vault": {"type": "s3", "bucket": "v", "prefix": "bad/"}},
    ...         "functions": {"a": {"on_failure": "vault"}, "b": {}}}
    >>> s3_sources(plan)
    [('v', 'bad/')]
    """
    out: list[tuple[str, str]] = []
    for spec in plan["functions"].values():
        sink = plan["sinks"].get(spec.get("on_failure") or "")
        if sink is not None and sink.get("type") == "s3":
            where = (str(sink["bucket"]), str(sink.get("prefix") or ""))
            if where not in out:
                out.append(where)
    return out


def sqs_queues(plan: Plan) -> list[str]:
    """The SQS queues the plan's functions dead-letter to, in file order: every ``sqs``
    sink named as ``on_failure``, and ``<name>-dlq`` when a function names none (deploy
    creates it for Lambda's on-failure messages).

    >>> plan = {"name": "shop", "sinks": {"dlq": {"type": "sqs", "queue": "shop-bad"}},
    ...         "functions": {"a": {"on_failure": "dlq"}, "b": {}}}
    >>> sqs_queues(plan)
    ['shop-bad', 'shop-dlq']
    """
    queues: list[str] = []
    for spec in plan["functions"].values():
        name = spec.get("on_failure")
        sink = plan["sinks"].get(name) if name else None
        if not name:
            queue = dead_letter_queue_name(plan)
        elif sink is not None and sink.get("type") == "sqs":
            queue = str(sink["queue"])
        else:
            continue  # an s3 on_failure sink: S3Source reads it
        if queue not in queues:
            queues.append(queue)
    return queues


@dataclass
class Scan:
    """What the sources held: their messages, and the sources that could not be read.

    A scan renews its leases in a background thread (:meth:`keep`) until it is closed:
    use it as a ``with`` block, or end it with :meth:`release` of everything, :meth:`finish`
    or :meth:`close` (what :func:`redrive` and :func:`discard` do, whatever they raise).
    The thread holds the scan only weakly, so a scan dropped without closing (a read only
    looked at) stops renewing once it is collected, and its leases run out by themselves.
    """

    messages: list[Message] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)  # source: why
    sources: dict[str, LetterSource] = field(default_factory=dict)
    keeper: LeaseKeeper | None = field(default=None, repr=False, compare=False)

    def of(self, kind: Kind) -> list[Message]:
        """The messages of one kind, in the order read."""
        return [m for m in self.messages if m.kind is kind]

    def __enter__(self) -> Scan:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def release(self, messages: Iterable[Message] | None = None) -> None:
        """Make messages (default: all, which also ends the scan: :meth:`close`, even when
        a release fails) visible again."""
        try:
            by_source: dict[str, list[Message]] = defaultdict(list)
            for m in self.messages if messages is None else messages:
                by_source[m.source].append(m)
            for name, chunk in by_source.items():
                self.sources[name].release(chunk)
        finally:
            if messages is None:
                self.close()

    def finish(self, deleted: Iterable[Message] = ()) -> None:
        """End the scan: every message but the ``deleted`` ones visible again, and the
        renewals stopped and joined, also when a release fails."""
        gone = {id(m) for m in deleted}
        try:
            self.release(m for m in self.messages if id(m) not in gone)
        finally:
            self.close()

    def renew(self) -> None:
        """Extend the lease of everything every source holds."""
        for source in self.sources.values():
            source.renew()

    @property
    def held_elsewhere(self) -> int:
        """What the sources skipped because another operator holds it."""
        return sum(source.held_elsewhere for source in self.sources.values())

    def _new_keeper(self) -> LeaseKeeper | None:
        """A keeper renewing every third of the shortest hold; None without a hold."""
        from deploy.ops.leases import LeaseKeeper  # noqa: PLC0415

        holds = [s.hold_s for s in self.sources.values() if s.hold_s > 0]
        return LeaseKeeper(_weak_renew(self), min(holds) / 3) if holds else None

    def keep(self) -> None:
        """Start renewing the leases in the background until :meth:`close`.

        :func:`read_sources` calls it before the first receive: the first letters read
        must not become visible again while later ones are read, ranges are resolved or
        other letters run, however long that takes (another operator would redrive them).
        """
        if self.keeper is None:
            keeper = self._new_keeper()
            if keeper is not None:
                keeper.__enter__()
                # dropped unclosed: the thread ends (it holds the scan only weakly)
                weakref.finalize(self, keeper.stop)
            self.keeper = keeper

    def close(self) -> None:
        """Stop renewing and join the renewal thread (the leases then run out by
        themselves); idempotent."""
        keeper, self.keeper = self.keeper, None
        if keeper is not None:
            keeper.__exit__(None, None, None)

    def kept(self) -> AbstractContextManager[object]:
        """A ``with`` block during which the leases are renewed every third of the shortest
        hold (:class:`deploy.ops.leases.LeaseKeeper`); nothing to renew without a hold, and
        nothing more to do when the scan keeps them already (:meth:`keep`)."""
        keeper = None if self.keeper is not None else self._new_keeper()
        return keeper if keeper is not None else nullcontext()


def _weak_renew(scan: Scan) -> Callable[[], None]:
    """``scan.renew`` for a lease keeper, holding the scan weakly: a bound method would keep
    a dropped scan alive, and its thread renewing, for the rest of the process."""
    ref = weakref.ref(scan)

    def renew() -> None:
        held = ref()
        if held is not None:
            held.renew()

    return renew


def read_sources(sources: Sequence[LetterSource]) -> Scan:
    """Read every source; a source that cannot be read (a queue not deployed) is noted.

    The leases are renewed from before the first receive on (:meth:`Scan.keep`) until the
    scan is released (:meth:`Scan.release` of everything, :meth:`Scan.finish`,
    :meth:`Scan.close` or the end of its ``with`` block; what :func:`redrive` and
    :func:`discard` do at their end). A read interrupted (``KeyboardInterrupt``) stops
    renewing before the interruption goes on.
    """
    scan = Scan(sources={s.name: s for s in sources})
    scan.keep()
    try:
        for source in sources:
            try:
                scan.messages += source.read()
            except Exception as exc:  # botocore's errors: say which source
                code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
                scan.unreadable[source.name] = f"{code or type(exc).__name__}: {exc}"
    except BaseException:  # ^C mid-read: no thread left renewing what nobody will run
        scan.close()
        raise
    return scan


def parse_since(text: str, now: float | None = None) -> float:
    """Epoch seconds from ``--since``: a duration back from now (``90s``, ``30m``, ``2h``,
    ``1d``, ``1h30m``) or an ISO 8601 time (UTC unless it says otherwise).

    >>> parse_since("2h", now=10_000.0)
    2800.0
    >>> parse_since("2026-01-01T00:00:00")
    1767225600.0

    Raises:
        ValueError: neither.
    """
    spec = text.strip().lower()
    parts = _DURATION.findall(spec)
    if parts and _DURATION.sub("", spec).strip() == "":
        seconds = sum(float(n) * _UNITS[unit] for n, unit in parts)
        return (time.time() if now is None else now) - seconds
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        msg = f"--since {text!r}: expected a duration (30m, 2h, 1d) or an ISO time"
        raise ValueError(msg) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@dataclass(frozen=True, slots=True)
class Selection:
    """The ``--function``, ``--step``, ``--error`` and ``--since`` filters; unset ones
    match everything. ``step`` and ``error`` match exactly or as a prefix ending in ``(``,
    ``.`` or ``:`` (``--step sink`` matches ``sink:orders``)."""

    function: str | None = None
    step: str | None = None
    error: str | None = None
    since: float | None = None

    def matches(self, message: Message) -> bool:
        """Whether a message is a letter these filters select."""
        letter = message.letter
        if letter is None:
            return False
        if self.function is not None and letter.function != self.function:
            return False
        if self.step is not None and not _prefix(letter.step, self.step):
            return False
        if self.error is not None and not _prefix(letter.error, self.error):
            return False
        return self.since is None or message.failed_at >= self.since

    def pick(self, messages: Iterable[Message]) -> list[Message]:
        """The selected letters, in the order given."""
        return [m for m in messages if self.matches(m)]


def _prefix(value: str, wanted: str) -> bool:
    return value == wanted or (value.startswith(wanted) and value[len(wanted)] in "(.:[")


@dataclass(frozen=True, slots=True)
class Group:
    """Letters of one function, step and error in one source."""

    source: str
    function: str
    step: str
    error: str
    count: int
    oldest: float
    newest: float
    sample_reason: str
    redrives: int  # the most any of them was redriven

    def as_dict(self) -> dict[str, Any]:
        """The group for ``--json``."""
        return {
            **dataclasses.asdict(self),
            "oldest": _iso(self.oldest),
            "newest": _iso(self.newest),
        }


def group(letters: Iterable[Message]) -> list[Group]:
    """Letters grouped by source, function, step and error; the largest groups first."""
    found: dict[tuple[str, str, str, str], list[Message]] = defaultdict(list)
    for m in letters:
        if m.letter is not None:
            found[(m.source, m.letter.function, m.letter.step, m.letter.error)].append(m)
    groups = [
        Group(
            *key,
            count=len(ms),
            oldest=min(m.failed_at for m in ms),
            newest=max(m.failed_at for m in ms),
            sample_reason=ms[0].letter.reason if ms[0].letter else "",
            redrives=max(m.letter.redrives if m.letter else 0 for m in ms),
        )
        for key, ms in found.items()
    ]
    return sorted(groups, key=lambda g: (-g.count, g.source, g.function, g.step, g.error))


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def decoded_payload(data: bytes) -> Any:
    """A letter's data for people: its JSON, else its text, else ``{"base64": ...}``.

    >>> decoded_payload(b'{"a": 1}'), decoded_payload(b"hi"), decoded_payload(b"\\xff")
    ({'a': 1}, 'hi', {'base64': '/w=='})
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    try:
        return data.decode()
    except UnicodeDecodeError:
        return {"base64": b64encode(data).decode()}


class Fate(enum.Enum):
    """What ``redrive`` did with a letter."""

    WRITTEN = "written"
    """Through the function into its sinks (or filtered out, or routed nowhere): deleted."""
    DEAD_AGAIN = "dead_again"
    """It failed again and was dead-lettered again, one redrive higher: deleted."""
    FAILED = "failed"
    """Not handled (a sink was unavailable, or held back behind such a record): left."""
    EXHAUSTED = "exhausted"
    """Redriven ``max_redrives`` times already: left alone."""
    REFUSED = "refused"
    """Its function is not in the file, it is another pipeline's, or its data is missing."""
    UNRECOVERABLE = "unrecoverable"
    """An on-failure range whose records neither the stream nor the archive holds: left."""
    PLANNED = "planned"
    """``--dry-run``: it would be redriven."""
    UNDELETED = "undeleted"
    """Handled, but deleting its message failed: a rerun redrives it again, harmlessly."""

    @property
    def handled(self) -> bool:
        """Whether the letter is done with (its message deleted)."""
        return self in {Fate.WRITTEN, Fate.DEAD_AGAIN}


@dataclass(frozen=True, slots=True)
class Redriven:
    """One selected letter and what became of it."""

    message: Message
    fate: Fate
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The letter's line of ``--json``."""
        return {**letter_row(self.message), "fate": self.fate.value, "detail": self.detail}


def letter_row(message: Message) -> dict[str, Any]:
    """Where a letter's message is and which record it holds, for output."""
    letter = message.letter
    rec = letter.record if letter else None
    return {
        "source": message.source,
        "id": message.id,
        "function": letter.function if letter else "",
        "partition_key": rec.partition_key if rec else "",
        "shard_id": rec.shard_id if rec else "",
        "sequence_number": rec.sequence_number if rec else "",
        "sub_sequence_number": rec.sub_sequence_number if rec else 0,
        "redrives": letter.redrives if letter else 0,
    }


class _Recounted(Sink):
    """The function's dead-letter sink, stamping each letter it writes with its record's
    redrive count plus one (by the record's index in the redriven batch)."""

    def __init__(self, inner: Sink, redrives: Mapping[int, int]) -> None:
        super().__init__(inner.name)
        self.inner = inner
        self.redrives = redrives

    def write_batch(
        self, items: Sequence[Record], ordering: Ordering = Ordering.PER_KEY
    ) -> list[Outcome]:
        return self.inner.write_batch(items, ordering)

    def write_dead_letters(self, letters: Sequence[DeadLetter]) -> list[Outcome]:
        stamped = [x.replace(redrives=self.redrives.get(x.record.index, 0) + 1) for x in letters]
        return self.inner.write_dead_letters(stamped)

    def close(self) -> None:
        self.inner.close()

    def _write(self, items: Sequence[Record]) -> list[Outcome]:
        return self.inner.write_batch(items)


def _position(m: Message) -> tuple[str, int, int, tuple[int, ...]]:
    """A letter's place in its shard: the parts of a fan-out by number, as the chain made
    them (``"1.10"`` after ``"1.9"``; as text it came first, and a window step that had
    applied the later part skipped the earlier one as redelivered)."""
    rec = m.letter.record if m.letter else None
    if rec is None:
        return "", 0, 0, ()
    part = tuple(int(p) for p in rec.part.split(".")) if rec.part else ()
    return rec.shard_id, int(rec.sequence_number), rec.sub_sequence_number, part


def redrive(
    plan: Plan,
    scan: Scan,
    selected: Sequence[Message],
    *,
    max_redrives: int = DEFAULT_MAX_REDRIVES,
    limit: int | None = None,
    dry_run: bool = False,
    sink_factory: SinkFactory | None = None,
    resolve: Callable[[Message], Any] | None = None,
) -> list[Redriven]:
    """Put the selected letters back through their functions; delete the handled ones.

    Every message of ``scan`` that is not deleted is released (visible again) at the end,
    so the caller need not. Letters are redriven in shard order (shard, sequence,
    sub-sequence number), one batch per function; ``limit`` takes the first that many
    redrivable letters in that order. See the module docstring for the rules.

    With ``resolve`` (:class:`deploy.ops.ranges.RangeResolver`: a range message's function
    and records, or why they cannot be had), selected on-failure ranges are resolved into
    records that go in with the letters (each as a letter of the range's message); the
    message's fate is that of its records: handled when all are, else failed.
    """
    from sinks.registry import build_sink  # noqa: PLC0415
    from stream.runtime import build_runner  # noqa: PLC0415

    out: list[Redriven] = []
    deleted: list[Message] = []
    try:  # from here on the scan ends however this ends (a resolver failing, ^C)
        ranges = [m for m in selected if m.kind is Kind.RANGE][:limit] if resolve else []
        letters = [m for m in selected if m.kind is not Kind.RANGE]
        letters += _resolve_ranges(plan, ranges, resolve, dry_run, out) if resolve else []
        todo = _triage(
            plan, letters, out, max_redrives=max_redrives, limit=limit, taken=len(ranges),
            dry_run=dry_run,
        )  # fmt: skip
        with scan.kept():  # the leases outlast however long the sinks take
            for function, messages in todo.items():
                make = sink_factory or build_sink
                done = _run_function(plan, function, messages, make, build_runner)
                done = _per_message(done, {m.id: m for m in ranges})
                out += _delete_handled(scan, done, deleted)
    finally:
        scan.finish(deleted)
    return out


def _triage(
    plan: Plan,
    letters: Sequence[Message],
    out: list[Redriven],
    *,
    max_redrives: int,
    limit: int | None,
    taken: int,
    dry_run: bool,
) -> dict[str, list[Message]]:
    """The letters to run, by function, in shard order; the fates of the others (refused,
    exhausted, planned in a dry run) added to ``out``. ``taken`` counts toward ``limit``
    what was taken already (the ranges)."""
    functions = plan["functions"]
    todo: dict[str, list[Message]] = defaultdict(list)
    for m in sorted(letters, key=_position):
        letter = m.letter
        if letter is None:
            continue
        why = ""
        if letter.pipeline and letter.pipeline != plan.get("name"):
            why = f"a dead letter of pipeline {letter.pipeline!r}, not {plan.get('name')!r}"
        elif letter.function not in functions:
            known = ", ".join(functions)
            why = f"function {letter.function!r} is not in the file (it has: {known})"
        elif m.problem:
            why = m.problem
        else:
            why = _behind_window(plan, letter.function, letter.step)
        if why:
            out.append(Redriven(m, Fate.REFUSED, why))
        elif letter.redrives >= max_redrives:
            out.append(Redriven(m, Fate.EXHAUSTED, f"redriven {letter.redrives} times already"))
        elif limit is not None and taken >= limit:
            continue
        else:
            taken += 1
            if dry_run:
                out.append(Redriven(m, Fate.PLANNED, f"through {letter.function}"))
            else:
                todo[letter.function].append(m)
    return todo


def _delete_handled(scan: Scan, done: list[Redriven], deleted: list[Message]) -> list[Redriven]:
    """Delete the messages of the handled letters (adding them to ``deleted``); the fates,
    a handled one whose message could not be deleted as ``undeleted``."""
    why_not = _delete(scan, [r.message for r in done if r.fate.handled])
    out = []
    for r in done:
        if r.message.id in why_not:
            out.append(Redriven(r.message, Fate.UNDELETED, why_not[r.message.id]))
        else:
            out.append(r)
            if r.fate.handled:
                deleted.append(r.message)
    return out


def redriven_meanwhile(message: Message, begun: float) -> bool:
    """Whether a letter was dead-lettered again (by another operator's redrive) after a
    redrive that began at ``begun`` (epoch seconds): that redrive leaves it for the next run,
    so one run of two operators at once redrives a record once, not twice.

    (``failed_at`` is the writer's clock: operators on machines whose clocks disagree by
    more than a redrive takes may still see such a letter.)

    >>> from stream.records import Record
    >>> def letter(redrives, at):
    ...     rec = Record(b"{}", "k", "1", shard_id="s")
    ...     return Message("q", "1", "h", Kind.LETTER, at, "",
    ...                    DeadLetter(rec, "r", "E", "s", failed_at=at, redrives=redrives))
    >>> redriven_meanwhile(letter(1, 105.0), 100.0), redriven_meanwhile(letter(1, 95.0), 100.0)
    (True, False)
    >>> redriven_meanwhile(letter(0, 105.0), 100.0)  # a first failure: redrive it
    False
    """
    letter = message.letter
    return letter is not None and letter.redrives > 0 and letter.failed_at >= begun


def _resolve_ranges(
    plan: Plan,
    ranges: Sequence[Message],
    resolve: Callable[[Message], Any],
    dry_run: bool,
    out: list[Redriven],
) -> list[Message]:
    """Each range's records as letters of its message (to run with the letters); the
    ranges that cannot be resolved (or, with ``dry_run``, all) go to ``out``."""
    letters: list[Message] = []
    pipeline = str(plan.get("name") or "")
    for m in ranges:
        found = resolve(m)
        behind = "" if found.why else _behind_window(plan, found.function, "")
        if found.why:
            out.append(Redriven(m, Fate.UNRECOVERABLE, found.why))
        elif behind:
            out.append(Redriven(m, Fate.REFUSED, behind))
        elif dry_run:
            out.append(Redriven(m, Fate.PLANNED, f"{len(found.records)} from {found.source}"))
        else:
            why = f"on-failure range, resolved from the {found.source}"
            letters += [
                dataclasses.replace(
                    m,
                    letter=DeadLetter(rec, why, "OnFailure", "", found.function, pipeline),
                    problem="",
                )
                for rec in found.records
            ]
    return letters


def _run_function(
    plan: Plan,
    function: str,
    messages: list[Message],
    make: SinkFactory,
    build_runner: Callable[..., Any],
) -> list[Redriven]:
    """One batch of a function's letters through its runner; each letter's fate."""
    records = []
    redrives: dict[int, int] = {}
    window = window_index(plan["functions"][function])
    for index, m in enumerate(messages):
        letter = m.letter
        if letter is None:  # selected letters only; for the type checker
            continue
        rec = letter.record
        rec.index = index
        if window is not None and letter.step.startswith(_SINK_STEP):
            rec.routes = (letter.step.removeprefix(_SINK_STEP),)  # a late record's too
        records.append(rec)
        redrives[index] = letter.redrives
    dead_sink = plan["functions"][function].get("on_failure")

    def factory(name: str, spec: SinkSpec) -> Sink:
        sink = make(name, spec)
        return _Recounted(sink, redrives) if name == dead_sink else sink

    after = 0 if window is None else window + 1  # what _triage let through is past it
    runner = build_runner(plan, function, factory, metrics=False, from_step=after)
    try:
        result = runner.run(records)
    finally:
        for sink in runner.sinks.values():
            sink.close()
    again = {x.record.index: x for x in result.dead_letters}
    done = []
    for index, m in enumerate(messages):
        if index in result.failed:
            done.append(Redriven(m, Fate.FAILED, result.failed[index]))
        elif index in again:
            letter = again[index]
            done.append(Redriven(m, Fate.DEAD_AGAIN, f"{letter.step}: {letter.reason}"))
        else:
            done.append(Redriven(m, Fate.WRITTEN))
    return done


_SINK_STEP = "sink:"
_PROCESSOR_STEP = re.compile(r"processors\[(\d+)\]")


def window_index(spec: FunctionPlan) -> int | None:
    """The index of the function's last ``window`` step (session windows too), else ``None``."""
    found = None
    for index, entry in enumerate(spec.get("processors", ())):
        if "window" in entry:
            found = index
    return found


def _behind_window(plan: Plan, function: str, step: str) -> str:
    """Why a letter of ``step`` cannot be redriven through its function's window step, or ""
    when it can.

    A window step takes a record at or before the position it has applied on its shard for
    a redelivery, and once its outbox has moved on it yields nothing for it: no result, no
    failure, and the letter would count as written and be deleted. A letter made after the
    window (a sink's, ``route``, a later step's) holds a record the window already made or
    let through: :func:`_run_function` puts it in after the window. One made at the window
    or before (``event``, an earlier step, the window's own, an on-failure range's record:
    step "") is behind the window's position for good: the records after it in its batch
    were applied.

    >>> plan = {"name": "p", "functions": {"f": {"processors": [
    ...     {"filter": {}}, {"window": {}}, {"enrich": {}}]}}}
    >>> [bool(_behind_window(plan, "f", s)) for s in
    ...  ("sink:rows", "route", "processors[2].enrich", "processors[1].window", "event")]
    [False, False, False, True, True]
    """
    spec = plan["functions"].get(function)
    window = None if spec is None else window_index(spec)
    if window is None or step.startswith(_SINK_STEP) or step == "route":
        return ""
    found = _PROCESSOR_STEP.match(step)
    if found and int(found.group(1)) > window:
        return ""
    return (
        f"function {function!r} has a window step (processors[{window}]) that has applied "
        f"this record's shard past its position ({step or 'the stream'}): redriven, the "
        "window would take it for a redelivery and drop it. Its windows' results stand "
        "without it (a window's result is final once emitted, and shardline does not run a "
        "window over its records again); the letter stays until you remove it with "
        "`shardline dlq discard`"
    )


def _per_message(done: list[Redriven], ranges: Mapping[str, Message]) -> list[Redriven]:
    """One fate per message: a range's records fold into their message, handled when all
    of them are, else failed with the first reason."""
    by_id: dict[str, list[Redriven]] = defaultdict(list)
    for r in done:
        by_id[r.message.id].append(r)
    out = []
    for rs in by_id.values():
        first = rs[0]
        message = ranges.get(first.message.id)
        if message is None:
            out += rs
            continue
        unhandled = [r for r in rs if not r.fate.handled]
        if unhandled:
            out.append(Redriven(message, Fate.FAILED, unhandled[0].detail))
        else:
            again = sum(r.fate is Fate.DEAD_AGAIN for r in rs)
            fate = Fate.DEAD_AGAIN if again else Fate.WRITTEN
            detail = f"{len(rs)} records" + (f", {again} dead-lettered again" if again else "")
            out.append(Redriven(message, fate, f"{detail} ({first.message.letter.reason})"
                                if first.message.letter else detail))  # fmt: skip
    return out


def _delete(scan: Scan, messages: Sequence[Message]) -> dict[str, str]:
    """Delete messages from their sources; why each that was not, by message id."""
    by_source: dict[str, list[Message]] = defaultdict(list)
    for m in messages:
        by_source[m.source].append(m)
    failed: dict[str, str] = {}
    for name, chunk in by_source.items():
        failed |= scan.sources[name].delete(chunk)
    return failed


def discard(scan: Scan, selected: Sequence[Message]) -> tuple[list[Message], dict[str, str]]:
    """Delete the selected letters (never a range or foreign message); release the rest.

    Returns the removed messages and why each that could not be removed was not.
    """
    letters = [m for m in selected if m.kind is Kind.LETTER]
    failed: dict[str, str] = {}
    try:
        failed = _delete(scan, letters)
    finally:
        removed = [m for m in letters if m.id not in failed]
        scan.finish(removed)
    return removed, failed
