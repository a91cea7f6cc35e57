"""The ``s3`` sink: an archive of JSON lines, one object per partition per batch.

Keys. Each batch is grouped by the rendered ``prefix`` and ``partition`` templates (and the
shard), and each group becomes one object::

    {prefix}/{partition}/{shardId}/{first}-{last}-{digest}.jsonl.gz   (.jsonl with compression none)

The exact joining rule: prefix, partition, shard id and file name are each split on ``/``,
empty segments are dropped, and the rest is joined with ``/``. So ``raw`` and ``raw/`` give
the same keys (the prefix is a folder, never a file-name stem), no key starts with ``/`` or
contains ``//``, and an empty prefix or a ``None`` partition simply leaves its level out.
``first`` and ``last`` are the positions of the group's first and last records, in shard
order: the sequence number, followed by ``.{sub-sequence number}`` for a record from a KPL
aggregate (all user records of an aggregate share its sequence number, and an object may
start or end inside one because routing or partitioning split the aggregate). ``digest`` is
16 hex digits of the SHA-256 of every position the object holds (:func:`positions_digest`),
so the name says exactly which records are inside: two objects with one name hold the same
records.

Lines. Each line is orjson: a JSON object record's fields plus the bookkeeping fields
``_shard``, ``_sequence`` (a decimal string, never a float), ``_sub_sequence``,
``_partition_key`` and ``_arrival`` (epoch seconds). Nothing is ever lost: a record whose
JSON is not an object, or whose object already uses a bookkeeping name, is kept whole under
``_data``; a record that is not JSON at all is kept as ``_data_base64``.

Idempotency. The same records give the same bytes (orjson keeps field order, gzip is
written with mtime 0 and a fixed level), so a redelivered identical batch overwrites each
object with identical bytes and an identical ETag. A redelivery of another set of records,
even with the same first and last ones (a record held back by a retryable failure of
another sink, a late copy of a batch from a worker that lost its lease, a sandbox that
outlived its runner), has another digest and so another name: it can never replace an
object that holds more records, and no archived record is ever overwritten away. Readers
de-duplicate by ``(_shard, _sequence, _sub_sequence)`` (DESIGN.md: the archive is
at-least-once). Templates using ``{now:...}`` or fields an enricher stamps with the time
put one record under two prefixes on redelivery and should not be used for the archive.

Order and ``per_key_safe``. A PutObject stores all of its lines or none, so records of one
key inside one object are never applied out of order, and the sink takes a whole batch in
one ``_write``. Objects are written in the order of their first records, in waves
(:func:`stream.overlap.waves`): the objects of a wave share no partition key and are put at
once; an object holding a key that an earlier object of the wave holds starts the next
wave, so a key's objects are stored one after the other. After an object fails retryably,
the later waves are not sent (their records are reported retryable, ``HeldBack``); the
objects in flight beside it share no key with it. S3 failures are bucket-wide (throttling,
network) far more often than not, and this keeps a failing batch from spending
``max_attempts`` per partition. This is exact for partitions that are contiguous ranges of
the shard (time partitions); with field partitions that interleave, a key spread over two
of them may have a later line archived before an earlier one is retried, which the
position on every line makes harmless.

Dead letters go under ``{prefix}/dead-letters/{partition}/...``, as their JSON envelopes
(``DeadLetter.document()``) plus the bookkeeping fields, so that a sink that is both archive
and ``on_failure`` never lets an envelope overwrite the archived data of the same position.
The templates are rendered against the envelope, whose arrival time is the record's; a
template that names record fields is left out for dead letters (the envelope has no user
fields, and a dead letter must always have a place).

Errors: ``NoSuchBucket``, ``AccessDenied``, ``InvalidRequest`` and other 4xx are permanent,
with the bucket and the fix, and so is a request botocore refuses before sending it (an
invalid bucket name); ``SlowDown``, throttling, 5xx, ``RequestTimeout`` and connection
errors are retried with full-jitter backoff, then reported retryable. boto3 is imported
when the first client is made, not when this module is. To read an archive back (demo,
tests), ``deploy.local.readback.archive_lines`` lists a prefix and decodes every line.
"""

from __future__ import annotations

import gzip
import hashlib
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
from sinks.templates import Template, TemplateError
from stream.aws import Kind, classify, is_retryable_code, lazy_client
from stream.exceptions import DecodeError
from stream.overlap import run_all, waves

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from sinks.base import DeadLetter
    from stream.records import Record

__all__ = [
    "BOOKKEEPING",
    "S3Sink",
    "archive_line",
    "object_body",
    "object_key",
    "positions_digest",
]

#: The fields every line gets; a record's own field of one of these names is never
#: overwritten (the record is then kept whole under ``_data``).
BOOKKEEPING = ("_shard", "_sequence", "_sub_sequence", "_partition_key", "_arrival")
DEAD_LETTERS = "dead-letters"
CONTENT_TYPE = "application/x-ndjson"
GZIP_LEVEL = 6  # measured: a third of level 9's time on 2 MB of lines, 1.5% larger
_SSE = ("AES256", "aws:kms", "aws:kms:dsse", "none")
_dumps = orjson.dumps


def archive_line(record: Record) -> bytes:
    """One record as a JSON line (without the newline); the same record gives the same bytes.

    Raises:
        orjson.JSONEncodeError: a step put something JSON cannot hold into the document.

    >>> from stream.records import Record
    >>> archive_line(Record(b'{"a": 1}', "k", "7", shard_id="s", arrival=1.5))
    b'{"a":1,"_shard":"s","_sequence":"7","_sub_sequence":0,"_partition_key":"k","_arrival":1.5}'
    >>> archive_line(Record(b"\\xff", "k", "7", shard_id="s"))[:24]
    b'{"_data_base64":"/w==","'
    """
    try:
        doc = record.json
    except DecodeError:
        line: dict[str, Any] = {"_data_base64": b64encode(record.data).decode()}
    else:
        if type(doc) is dict and not (
            "_shard" in doc
            or "_sequence" in doc
            or "_sub_sequence" in doc
            or "_partition_key" in doc
            or "_arrival" in doc
        ):  # BOOKKEEPING spelled out: a third faster than any() over it, per record
            line = doc.copy()  # other sinks may share the document: never add to it
        else:
            line = {"_data": doc}
    line["_shard"] = record.shard_id
    line["_sequence"] = record.sequence_number
    line["_sub_sequence"] = record.sub_sequence_number
    line["_partition_key"] = record.partition_key
    line["_arrival"] = record.arrival
    if record.part:  # one of several records a step made from one: readers keep each part
        line["_part"] = record.part
    return _dumps(line)


def object_body(lines: Sequence[bytes], compression: str = "gzip") -> bytes:
    """The object's bytes: newline-terminated lines, gzipped with mtime 0 so that the same
    lines give the same bytes at any time (for one Python and zlib build)."""
    body = b"\n".join(lines) + b"\n"
    if compression == "gzip":
        return gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
    return body


def _label(record: Record) -> str:
    if record.aggregated:
        return f"{record.sequence_number}.{record.sub_sequence_number}"
    return record.sequence_number


def positions_digest(records: Iterable[Record]) -> str:
    """16 hex digits naming the set of positions an object holds: shard, sequence,
    sub-sequence number and fan-out part of each record, in order.

    >>> from stream.records import Record
    >>> a, b = Record(b"", "k", "10", shard_id="s"), Record(b"", "k", "12", shard_id="s")
    >>> positions_digest([a, b])
    '2035d1f90d6996b4'
    >>> positions_digest([a, b]) != positions_digest([a, a, b])
    True
    """
    digest = hashlib.sha256()
    for record in records:
        digest.update(
            f"{record.shard_id}/{record.sequence_number}/{record.sub_sequence_number}/"
            f"{record.part}\n".encode()
        )
    return digest.hexdigest()[:16]


def object_key(
    prefix: str,
    partition: str,
    members: Sequence[Record],
    compression: str = "gzip",
) -> str:
    """The key of the object holding ``members``, records of one shard in shard order
    (module docstring).

    >>> from stream.records import Record
    >>> a, b = Record(b"", "k", "10", shard_id="s"), Record(b"", "k", "12", shard_id="s")
    >>> object_key("raw/", "dt=2026-01-01", [a, b])
    'raw/dt=2026-01-01/s/10-12-2035d1f90d6996b4.jsonl.gz'
    >>> object_key("", "", [a], "none")
    's/10-10-64e36d42c8fb8f83.jsonl'
    """
    first, last = members[0], members[-1]
    name = f"{_label(first)}-{_label(last)}-{positions_digest(members)}.jsonl"
    if compression == "gzip":
        name += ".gz"
    text = f"{prefix}/{partition}/{first.shard_id}/{name}"
    return "/".join(segment for segment in text.split("/") if segment)


class S3Sink(Sink):
    """Archive records to S3 as JSON lines; see the module docstring for keys and lines.

    Args:
        name: the sink's name in the pipeline file.
        bucket: the bucket, used as written.
        prefix: a brace template for the first key levels (a folder).
        partition: a brace template for the levels below the prefix, or ``None``.
        compression: ``gzip`` or ``none``.
        client: a boto3 S3 client; by default one is created on first use (botocore's
            retries off, 5 s connect and 30 s read timeouts) and reused while the Lambda is
            warm.
        sse: server-side encryption: ``AES256``, ``aws:kms``, ``aws:kms:dsse``, or ``none``
            to leave it to the bucket's default encryption.
        kms_key_id: the KMS key for ``aws:kms`` (default: the account's ``aws/s3`` key).
        max_attempts: attempts per object before its records are reported retryable.
        base_delay: first backoff delay in seconds; doubles per attempt up to ``MAX_DELAY_S``
            (2 s), full jitter (:func:`stream.aws.backoff_delay`).
        sleep: injectable for tests.
        now: the clock for ``{now:FMT}`` in templates.
    """

    shares_records: ClassVar[bool] = True  # never edits a record: no copies (sinks.base)
    max_batch: ClassVar[int] = 100_000  # a whole batch, KPL user records included
    per_key_safe: ClassVar[bool] = True  # one object is stored whole or not at all

    def __init__(
        self,
        name: str,
        *,
        bucket: str,
        prefix: str = "",
        partition: str | None = None,
        compression: str = "gzip",
        client: Any = None,
        sse: str = "AES256",
        kms_key_id: str | None = None,
        max_attempts: int = MAX_ATTEMPTS,
        base_delay: float = BASE_DELAY_S,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name)
        problem = _settings_problem(compression, sse, kms_key_id, max_attempts)
        if problem:
            msg = f"s3 sink {name!r}: {problem}"
            raise ValueError(msg)
        self.bucket = bucket
        self.compression = compression
        self._prefix = Template(prefix, now)
        self._partition = Template(partition or "", now)
        self._put_args: dict[str, Any] = {"Bucket": bucket, "ContentType": CONTENT_TYPE}
        if compression == "gzip":
            self._put_args["ContentEncoding"] = "gzip"
        if sse != "none":
            self._put_args["ServerSideEncryption"] = sse
        if kms_key_id:
            self._put_args["SSEKMSKeyId"] = kms_key_id
        self._client = client
        self._max_attempts = max_attempts
        self._base_delay = base_delay
        self._sleep = sleep

    client = lazy_client("s3")
    """The S3 client, created on first use (boto3 is imported only then)."""

    def write_dead_letters(self, letters: Sequence[DeadLetter]) -> list[Outcome]:
        """Archive dead-letter envelopes under ``dead-letters/`` (module docstring)."""
        records = [letter.as_record() for letter in letters]
        outcomes = self._archive(records, dead_letters=True)
        self._check(records, outcomes)
        return outcomes

    def _write(self, items: Sequence[Record]) -> list[Outcome]:
        return self._archive(items, dead_letters=False)

    def _archive(self, items: Sequence[Record], dead_letters: bool) -> list[Outcome]:
        outcomes, lines, groups = self._group(items, dead_letters)
        objects = [
            _Object(
                object_key(prefix, partition, [items[i] for i in members], self.compression),
                members,
                frozenset(items[i].partition_key for i in members),
            )
            for (prefix, partition, _), members in groups.items()
        ]
        held: Outcome | None = None
        for wave in waves(objects, keys=_keys_of):
            if held is None:
                answers = run_all([partial(self._put_object, o, lines) for o in wave])
            else:
                answers = [held] * len(wave)
            for obj, outcome in zip(wave, answers, strict=True):
                for i in obj.members:
                    outcomes[i] = outcome
                if held is None and outcome.status is Status.RETRYABLE:
                    held = retryable(
                        f"not sent to sink {self.name!r}: an earlier object of the batch "
                        f"failed ({outcome.reason})",
                        "HeldBack",
                    )
        return outcomes

    def _group(
        self, items: Sequence[Record], dead_letters: bool
    ) -> tuple[list[Outcome], list[bytes], dict[tuple[str, str, str], list[int]]]:
        """Each record's line, and the records of each object in shard order, keyed by
        (rendered prefix, rendered partition, shard); records that cannot be placed fail."""
        outcomes: list[Outcome] = [OK] * len(items)
        lines: list[bytes] = [b""] * len(items)
        groups: dict[tuple[str, str, str], list[int]] = {}
        prefix, partition = self._prefix, self._partition
        below = f"{DEAD_LETTERS}/" if dead_letters else ""
        for i, record in enumerate(items):
            try:
                where = (
                    _render(prefix, record, dead_letters),
                    below + _render(partition, record, dead_letters),
                    record.shard_id,
                )
                lines[i] = archive_line(record)
            except (TemplateError, DecodeError) as exc:
                reason = f"sink {self.name!r} cannot place the record in bucket {self.bucket!r}"
                outcomes[i] = permanent(f"{reason}: {exc}", type(exc).__name__)
                continue
            except orjson.JSONEncodeError as exc:
                outcomes[i] = permanent(
                    f"sink {self.name!r} cannot write the record as JSON ({exc}): a step put "
                    "a value JSON cannot hold into the document; fix that step",
                    "JSONEncodeError",
                )
                continue
            groups.setdefault(where, []).append(i)
        return outcomes, lines, groups

    def _put_object(self, obj: _Object, lines: list[bytes]) -> Outcome:
        """Build the object's body and put it (on the call pool: gzip lets go of the GIL,
        so a wave's bodies are compressed at once too)."""
        return self._put(obj.key, object_body([lines[i] for i in obj.members], self.compression))

    def _put(self, key: str, body: bytes) -> Outcome:
        """PutObject with retries of throttles, 5xx and connection errors."""
        outcome: Outcome = OK
        for attempt in range(self._max_attempts):
            if attempt:
                self._sleep(backoff_delay(attempt, self._base_delay))
            try:
                self.client.put_object(Key=key, Body=body, **self._put_args)
            except Exception as exc:  # classified; anything not botocore's is re-raised
                failure = classify(exc, "s3")
                if failure.kind is Kind.OTHER:
                    raise
                if failure.answered:
                    outcome = _classify(getattr(exc, "response", {}), self.bucket, key)
                    if outcome.status is Status.PERMANENT:
                        return outcome
                elif failure.kind is Kind.INVALID:  # refused before sending: no retry helps
                    return permanent(
                        f"invalid request for s3://{self.bucket}/{key}: {exc}; fix `bucket` (or "
                        f"the prefix and partition templates) of sink {self.name!r}",
                        "ParamValidationError",
                    )
                else:
                    outcome = retryable(
                        f"S3 unreachable writing s3://{self.bucket}/{key}: {exc}", failure.code
                    )
            else:
                return OK
        return retryable(f"{outcome.reason} (after {self._max_attempts} attempts)", outcome.error)


class _Object:
    """One object to put: its key, the records (indexes) it holds and their partition keys."""

    __slots__ = ("key", "keys", "members")

    def __init__(self, key: str, members: list[int], keys: frozenset[str]) -> None:
        self.key = key
        self.members = members
        self.keys = keys


def _keys_of(obj: _Object) -> frozenset[str]:
    return obj.keys


def _render(template: Template, record: Record, dead_letter: bool) -> str:
    if dead_letter and template.fields:
        return ""  # an envelope has no user fields; a dead letter must always have a place
    return template.render(record)


def _settings_problem(compression: str, sse: str, kms_key_id: str | None, max_attempts: int) -> str:
    if compression not in ("gzip", "none"):
        return f"compression {compression!r}, expected 'gzip' or 'none'"
    if sse not in _SSE:
        return f"sse {sse!r}, expected one of {', '.join(map(repr, _SSE))}"
    if kms_key_id and not sse.startswith("aws:kms"):
        return f"kms_key_id needs sse 'aws:kms' or 'aws:kms:dsse' (got sse {sse!r})"
    if max_attempts < 1:
        return f"max_attempts {max_attempts}, expected at least 1"
    return ""


def _classify(response: dict[str, Any], bucket: str, key: str) -> Outcome:
    """The outcome of a PutObject that S3 refused, from botocore's parsed error response,
    with the fix for the errors a user can make (:func:`stream.aws.is_retryable_code` says
    which are worth a retry)."""
    error = response.get("Error", {})
    code = str(error.get("Code", ""))
    message = error.get("Message", "")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    where = f"s3://{bucket}/{key}"
    if is_retryable_code("s3", code, status):
        return retryable(f"S3 {code or status} writing {where}: {message}", code)
    if code == "NoSuchBucket":
        fix = "create it (`shardline deploy` creates the buckets a pipeline names) or fix `bucket`"
        return permanent(f"S3 bucket {bucket!r} does not exist: {fix}", code)
    if code == "AccessDenied":
        fix = (
            f"grant the function's role s3:PutObject on arn:aws:s3:::{bucket}/* (and "
            "kms:GenerateDataKey on the key when sse is aws:kms)"
        )
        return permanent(f"access denied writing {where}: {fix}", code)
    if code in ("InvalidRequest", "InvalidArgument") or code.startswith("KMS."):
        fix = "check the sink's sse and kms_key_id against the bucket's encryption settings"
        return permanent(f"S3 rejected {where} ({code}: {message}): {fix}", code)
    return permanent(f"S3 {code or status} writing {where}: {message}", code)
