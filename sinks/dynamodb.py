"""The ``dynamodb`` sink: one item per key (``latest``) or one item per record (``append``).

Items are the record's top-level JSON fields (numbers as DynamoDB numbers through
``Decimal``, objects as maps, lists as lists) plus bookkeeping attributes starting with
``_``: ``_position`` (the zero-padded sequence and sub-sequence number, which sorts like the
numbers), ``_shard``, and ``_written_at`` (``latest``: the time of the write) or
``_arrival`` (``append``: the record's arrival in the stream, epoch seconds, as in the S3
archive).

Idempotency and order, the two ways:

* ``latest``: the batch is collapsed to the newest record of each key, then each is written
  with ``PutItem`` on the condition that the stored ``_position`` is older. A
  ``ConditionalCheckFailedException`` means an equal or newer record is already there: ok.
  Replays and out-of-order redeliveries therefore never move an item backwards. When
  DynamoDB refuses the newest record (a number beyond its range), that record alone is
  permanent and the next newer-most record of the key is written in its place. A key whose
  one record in the batch is a window's result in a table keyed by its ``window_id``
  (:class:`~stream.records.FinalRecord`: the only record that key will ever have) needs no
  condition, since it has no older record (with each key on one shard, as a window needs;
  a key on several shards gives one ``window_id`` a part from each, and the table keeps
  the part written last: README; and with no other function of the plan writing the
  table, whose records could share a ``window_id``: ``takes_final``): those keys go in
  ``BatchWriteItem`` calls of 25,
  as ``append``'s (a window function's results were one conditional ``PutItem`` each, 72
  of its 156 calls a batch in ``python -m bench invocation``).
* ``append``: the table's sort key is ``_position``, so each record has its own item, and
  every attribute of the item comes from the record: a replay, or a late copy of a batch
  (a worker paused past its lease finishing after the new owner), puts the very same item
  again and changes nothing, not even a time (DynamoDB Streams records nothing for a put
  that changes nothing). That is why an ``append`` item has no ``_written_at``: the time of
  the write would move on every copy, and ``BatchWriteItem`` cannot be made conditional
  (``attribute_not_exists`` per item would cost one ``PutItem`` or a transaction per
  record). ``BatchWriteItem`` in calls of 25, never two items with the same primary key in
  one call (DynamoDB rejects that); ``UnprocessedItems`` are retried with exponential
  backoff and full jitter within a bounded number of attempts, then reported retryable.

Keys: the key field holds a string or a number; a number is written as its plain decimal
text (:func:`key_text`), since the tables deploy creates are keyed by strings.

Numbers: orjson decodes integers beyond 64 bits as floats. When one shows up (an integral
float of 2**63 or more), the item is built from the record's bytes with the standard
library's exact decoder instead, so such integers round-trip as long as no earlier step
re-encoded the record (a step that changes a record re-encodes it with orjson, which keeps
integers to 64 bits).

Throttling, 5xx and connection errors are retryable (when DynamoDB cannot be reached at all
after the attempts, or answers 5xx to every one, the keys and chunks not yet tried are not
tried either: each would cost the same timeouts of the Lambda's budget; they are
retryable, ``HeldBack``; one key's throttles hold back nothing, a hot partition is not
the table). A table that
cannot be used at all (missing, access denied, no credentials: :mod:`stream.faults`) is
not the records' fault: retryable at once, without the attempts, and nothing further is
tried. Validation errors (an item over 400 KB, an empty key) are permanent, with the reason.
DynamoDB refuses a whole ``BatchWriteItem`` for one invalid item (a number out of range,
nesting past 32 levels, a key of the wrong type in a table made elsewhere), so a call
refused that way is made again item by item: only the bad item is permanent, not its 24
neighbours. Keys (``latest``) and
calls (``append``) go at once in waves (:mod:`stream.overlap`; keys up to
``ITEM_WAVE_WIDTH`` a wave, chunks up to ``WAVE_WIDTH``): each is an item of its own, and a
table found down stops the waves after it. boto3 is imported
when the first client is made, not when this module is.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

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
from stream.aws import Kind, classify, lazy_client
from stream.overlap import run_all, wave_width
from stream.records import FinalRecord, record_position

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from stream.records import Record

__all__ = ["MAX_ITEM_BYTES", "DynamoDBSink", "key_text", "to_attribute"]

MAX_ITEM_BYTES = 400 * 1024
_INEXACT = float(2**63)
_UNREACHABLE = "DynamoDB unreachable"
_UNUSABLE = "DynamoDB table unusable"
_FAILING = "DynamoDB failing"
POSITION = "_position"


class _InexactNumber(ValueError):
    """A float that stands for an integer orjson could not hold (beyond 64 bits)."""


def to_attribute(value: Any) -> dict[str, Any]:
    """A JSON value as a DynamoDB AttributeValue; floats go through ``repr`` to Decimal so
    that 0.1 is stored as 0.1, and integers and Decimals of any size stay exact.

    Raises:
        _InexactNumber: an integral float of 2**63 or more, which is how orjson decodes an
            integer beyond 64 bits: the caller decodes the record's bytes exactly instead.
    """
    kind = type(value)
    if kind is str:
        return {"S": value}
    if kind is bool:
        return {"BOOL": value}
    if kind is int:
        return {"N": str(value)}
    if kind is float:
        if abs(value) >= _INEXACT and value.is_integer():
            raise _InexactNumber(repr(value))
        return {"N": str(Decimal(repr(value)))}
    if kind is Decimal:
        return {"N": str(value)}
    if value is None:
        return {"NULL": True}
    if kind is dict:
        return {"M": {k: to_attribute(v) for k, v in value.items()}}
    if kind is list:
        return {"L": [to_attribute(v) for v in value]}
    msg = f"cannot store a {kind.__name__} in DynamoDB"
    raise TypeError(msg)


def key_text(number: str) -> str:
    """A number in the key field as the item's key: its plain decimal text, one per number
    as DynamoDB counts numbers (``1`` and ``1.0`` are one key).

    Every table shardline creates for a sink is keyed by a string (``deploy``, ``dev``), and
    a key field of numbers (``order_id: 1042``) is as common as one of strings: written as a
    DynamoDB number, each such item would be refused (a key of the wrong type) and its record
    dead-lettered, every one of them.

    >>> key_text("1042"), key_text("1.0"), key_text("2.50"), key_text("1E+3")
    ('1042', '1', '2.5', '1000')
    >>> key_text("-0"), key_text("-0.0"), key_text("0E+3")
    ('0', '0', '0')
    """
    value = Decimal(number)
    return "0" if value.is_zero() else format(value.normalize(), "f")  # -0 is 0, as DynamoDB counts


def _size(attribute: dict[str, Any]) -> int:
    """DynamoDB's item-size rule, approximately: names and values in UTF-8, numbers ~21 B."""
    ((kind, value),) = attribute.items()
    if kind == "S":
        return len(value.encode())
    if kind == "N":
        return len(value) // 2 + 2
    if kind == "M":
        return 3 + sum(len(k.encode()) + _size(v) + 1 for k, v in value.items())
    if kind == "L":
        return 3 + sum(_size(v) + 1 for v in value)
    return 1


class DynamoDBSink(Sink):
    """Write records to a DynamoDB table.

    Args:
        name: the sink's name in the pipeline file.
        table: the table name, used as written.
        key: the record field that is the table's partition key.
        mode: ``latest`` or ``append``.
        client: a boto3 DynamoDB client; by default one is created on first use and reused
            while the Lambda is warm.
        max_attempts: attempts for a call (throttled items included) before the items are
            reported retryable.
        base_delay: first backoff delay in seconds; doubles per attempt up to ``MAX_DELAY_S``
            (2 s), full jitter (:func:`stream.aws.backoff_delay`).
        sleep: injectable for tests.
        now: the clock for ``_written_at`` (``latest`` only).
    """

    shares_records: ClassVar[bool] = True  # never edits a record: no copies (sinks.base)
    max_batch: ClassVar[int] = 10_000  # chunking to 25 is done here, by primary key
    per_key_safe: ClassVar[bool] = True  # conditional on position, or one item per record
    #: ``latest``: write a :class:`~stream.records.FinalRecord` keyed by its final field
    #: without the condition. :func:`stream.runtime.build_runner` turns it off for a table
    #: that another function of the plan also writes: that function's records may share a
    #: ``window_id``, and a result written again would overwrite a newer one (review 24).
    takes_final: bool = True

    def __init__(
        self,
        name: str,
        *,
        table: str,
        key: str,
        mode: str = "latest",
        client: Any = None,
        max_attempts: int = MAX_ATTEMPTS,
        base_delay: float = BASE_DELAY_S,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name)
        if mode not in ("latest", "append"):
            msg = f"dynamodb sink {name!r}: mode {mode!r}, expected 'latest' or 'append'"
            raise ValueError(msg)
        self.table = table
        self.key = key
        self.mode = mode
        self._client = client
        self._max_attempts = max_attempts
        self._base_delay = base_delay
        self._sleep = sleep
        self._now = now

    client = lazy_client("dynamodb", validated=False)
    """The DynamoDB client, created on first use (boto3 is imported only then): the shared
    one without botocore's parameter validation (:func:`stream.aws.aws_client`), since every
    request here is built by :func:`to_attribute` and the table name is checked by
    ``validate``; the check was about 5% of each ``PutItem``'s CPU time."""

    def _write(self, items: Sequence[Record]) -> list[Outcome]:
        outcomes: list[Outcome] = [OK] * len(items)
        built: list[tuple[int, dict[str, Any]]] = []
        final: set[int] = set()  # latest: records that are their key's only one ever
        stamp = str(Decimal(repr(round(self._now(), 3))))
        for i, record in enumerate(items):
            item_or_reason = self._item(record, stamp)
            if isinstance(item_or_reason, str):
                outcomes[i] = permanent(item_or_reason, "ValidationError")
            else:
                built.append((i, item_or_reason))
                if (
                    self.takes_final
                    and type(record) is FinalRecord
                    and record.is_final_in(self.key)
                ):
                    final.add(i)
        if self.mode == "latest":
            self._put_latest(built, outcomes, final)
        else:
            self._put_append(built, outcomes)
        return outcomes

    def _item(self, record: Record, stamp: str) -> dict[str, Any] | str:
        try:
            doc = record.as_dict()
        except Exception as exc:  # the reason goes to the dead letter
            return str(exc)
        value = doc.get(self.key)
        if value is None or value == "" or isinstance(value, dict | list | bool):
            return (
                f"record has no usable key field {self.key!r} (got {value!r}); the table "
                f"{self.table!r} needs a non-empty string or number there"
            )
        try:
            try:
                item = {k: to_attribute(v) for k, v in doc.items() if not k.startswith("_")}
            except _InexactNumber:
                exact = json.loads(record.data, parse_float=Decimal)
                item = {k: to_attribute(v) for k, v in exact.items() if not k.startswith("_")}
        except (TypeError, ValueError) as exc:
            return str(exc)
        except RecursionError:  # orjson reads 1024 levels; Python recurses ~1000 deep
            return (
                f"record is nested deeper than DynamoDB's 32 levels (table {self.table!r}): "
                "flatten it in a step, or route it to another sink"
            )
        if type(value) is not str:  # a number: the table's key is a string (deploy's)
            item[self.key] = {"S": key_text(item[self.key]["N"])}
        item[POSITION] = {"S": record_position(record)}
        item["_shard"] = {"S": record.shard_id}
        if self.mode == "latest":  # conditional: an equal position is never rewritten
            item["_written_at"] = {"N": stamp}
        else:  # the record's own: a copy written again is byte-identical
            item["_arrival"] = {"N": str(Decimal(repr(record.arrival)))}
        size = sum(len(k.encode()) + _size(v) for k, v in item.items())
        if size > MAX_ITEM_BYTES:
            return (
                f"item of about {size} bytes exceeds DynamoDB's 400 KB limit for table "
                f"{self.table!r}: store large payloads in S3 and keep a pointer"
            )
        return item

    def _put_latest(
        self, built: list[tuple[int, dict[str, Any]]], out: list[Outcome], final: set[int]
    ) -> None:
        """Write each key's newest record, on the condition that the stored one is older.
        A key whose one record in the batch is final (``final``: a window's result, the
        only record there will ever be with that key, :class:`~stream.records.FinalRecord`)
        has no older record to be protected from: such keys go without a condition in
        ``BatchWriteItem`` calls of 25 (as ``append``'s), in the first wave, beside the
        conditional ``PutItem`` of the others."""
        members: dict[Any, list[int]] = {}  # key value -> indexes into built, in shard order
        for n, (_, item) in enumerate(built):
            key = str(item[self.key])  # {"S": "1"} and {"N": "1"} are different keys
            members.setdefault(key, []).append(n)
        once = [built[c[0]] for c in members.values() if len(c) == 1 and built[c[0]][0] in final]
        keys = [c for c in members.values() if len(c) > 1 or built[c[0]][0] not in final]
        chunks = [once[i : i + 25] for i in range(0, len(once), 25)]
        down: Outcome | None = None  # the endpoint is unreachable: write no further keys
        # keys are items of their own: a wave's keys go at once, as wide as one item a call
        width = wave_width(one_item=True)
        for start in range(0, max(len(keys), 1), width):
            wave = keys[start : start + width]
            bulk = chunks if start == 0 else []
            if down is not None:
                for n in (n for candidates in wave for n in candidates):
                    out[built[n][0]] = down
                continue
            calls = [partial(self._batch_write, chunk, out) for chunk in bulk]
            downs = run_all(calls + [partial(self._put_newest, built, c, out) for c in wave])
            downs += [self._held_back(out[i]) for chunk in bulk for i, _ in chunk]
            down = next(filter(None, downs), None)

    def _put_newest(
        self, built: list[tuple[int, dict[str, Any]]], candidates: list[int], out: list[Outcome]
    ) -> Outcome | None:
        """Write the newest of one key's records that DynamoDB accepts; the older records
        share its fate. A record DynamoDB refuses (a number beyond its range, nesting past
        32 levels) is permanent alone, and the next newer-most record stands for the key
        instead: the item must not stay stale, nor its valid records be dead-lettered, for
        one bad record. Returns what :meth:`_held_back` says of the last call."""
        for rank in range(len(candidates) - 1, -1, -1):
            i, item = built[candidates[rank]]
            put = partial(
                self.client.put_item,
                TableName=self.table,
                Item=item,
                ConditionExpression="attribute_not_exists(#p) OR #p < :p",
                ExpressionAttributeNames={"#p": POSITION},
                ExpressionAttributeValues={":p": item[POSITION]},
            )
            outcome, _ = self._call(put, ok_codes=frozenset({"ConditionalCheckFailedException"}))
            if outcome.status is Status.PERMANENT:
                out[i] = outcome  # this record alone: try the next older one of the key
                continue
            for n in candidates[: rank + 1]:
                out[built[n][0]] = outcome  # older records of the key share its fate
            return self._held_back(outcome)
        return None

    def _put_append(self, built: list[tuple[int, dict[str, Any]]], out: list[Outcome]) -> None:
        chunks: list[list[tuple[int, dict[str, Any]]]] = [[]]
        seen: set[tuple[str, str]] = set()
        for i, item in built:
            primary = (str(item[self.key]), item[POSITION]["S"])
            if len(chunks[-1]) == 25 or primary in seen:
                chunks.append([])
                seen.clear()
            chunks[-1].append((i, item))
            seen.add(primary)
        down: Outcome | None = None  # the endpoint is unreachable: send no further chunks
        width = wave_width()  # one item per record: a wave's chunks go at once, unless two
        waves: list[list[list[tuple[int, dict[str, Any]]]]] = []  # write the same item
        taken: set[tuple[str, str]] = set()
        for chunk in chunks:
            primaries = {_primary(item, self.key) for _, item in chunk}
            if not waves or len(waves[-1]) >= width or not taken.isdisjoint(primaries):
                waves.append([])
                taken = set()
            waves[-1].append(chunk)
            taken |= primaries
        for wave in waves:
            if down is not None:
                for i, _ in (one for chunk in wave for one in chunk):
                    out[i] = down
                continue
            run_all([partial(self._batch_write, chunk, out) for chunk in wave if chunk])
            for chunk in wave:  # read as if sent in turn: the first that stops the batch
                if down is not None or not chunk:
                    continue
                down = next(filter(None, (self._held_back(out[i]) for i, _ in chunk)), None)
                failed = [out[i] for i, _ in chunk if out[i].status is Status.RETRYABLE]
                if down is None and 1 < len(chunk) == len(failed):
                    # as Sink._write_in_chunks: a whole call failed after its retries, the
                    # table is down or throttling everything; later chunks would each spend
                    # the same retries of the Lambda's time
                    down = retryable(
                        f"not written to table {self.table!r}: an earlier call failed "
                        f"entirely ({failed[0].reason})",
                        "HeldBack",
                    )

    def _held_back(self, outcome: Outcome) -> Outcome | None:
        """The outcome of the items not yet tried when ``outcome`` says that DynamoDB is
        down, after the attempts: not reached at all (connection refused, reset, timed out),
        the table unusable (missing, access denied), or a 5xx for every attempt. Every
        further call would spend the same timeouts and backoff of the Lambda's time budget
        on the same endpoint: in ``latest`` mode, a batch of 100 keys would otherwise cost
        100 keys' attempts. One key's throttle is not enough: it can be one hot partition's,
        and the other keys live elsewhere. What is held back is reported retryable and
        delivered again; every write here is idempotent."""
        if outcome.status is not Status.RETRYABLE or not outcome.reason.startswith(
            (_UNREACHABLE, _UNUSABLE, _FAILING)
        ):
            return None
        return retryable(
            f"not written to table {self.table!r}: an earlier call failed ({outcome.reason})",
            "HeldBack",
        )

    def _batch_write(self, chunk: list[tuple[int, dict[str, Any]]], out: list[Outcome]) -> None:
        pending = chunk
        for attempt in range(self._max_attempts):
            if attempt:
                self._sleep(backoff_delay(attempt, self._base_delay))
            requests = [{"PutRequest": {"Item": item}} for _, item in pending]
            write = partial(self.client.batch_write_item, RequestItems={self.table: requests})
            outcome, response = self._call(write, retries=1)
            if outcome is not OK:
                if (
                    outcome.status is Status.PERMANENT
                    and outcome.error == "ValidationException"
                    and len(pending) > 1
                ):  # one bad item (key type, number range, nesting) refuses the whole call
                    for one in pending:
                        self._batch_write([one], out)
                    return
                last = attempt == self._max_attempts - 1 or outcome.reason.startswith(_UNUSABLE)
                if outcome.status is Status.PERMANENT or last:
                    for i, _ in pending:
                        out[i] = outcome
                    return
                continue
            unprocessed = response.get("UnprocessedItems", {}).get(self.table, [])
            if not unprocessed:
                return
            left = {_primary(r["PutRequest"]["Item"], self.key) for r in unprocessed}
            pending = [(i, item) for i, item in pending if _primary(item, self.key) in left]
        for i, _ in pending:
            out[i] = retryable(
                f"DynamoDB left {len(pending)} items unprocessed after {self._max_attempts} "
                f"attempts (throttled) on table {self.table!r}",
                "UnprocessedItems",
            )

    def _call(
        self,
        fn: Callable[[], dict[str, Any]],
        ok_codes: frozenset[str] = frozenset(),
        retries: int | None = None,
    ) -> tuple[Outcome, dict[str, Any]]:
        """Call with retries of throttles and 5xx; the outcome and the last response."""
        attempts = retries or self._max_attempts
        outcome: Outcome = OK
        for attempt in range(attempts):
            if attempt:
                self._sleep(backoff_delay(attempt, self._base_delay))
            try:
                response = fn()
            except Exception as exc:  # classified; anything not botocore's is re-raised
                failure = classify(exc, "dynamodb")
                if failure.kind is Kind.OTHER:
                    raise
                if failure.answered:
                    if failure.code in ok_codes:
                        return OK, {}
                    what = f"{failure.code} on table {self.table!r}: {failure.message}"
                    reason = f"DynamoDB {what}"
                    if failure.kind is Kind.INFRASTRUCTURE:  # the table, not the item:
                        return retryable(f"{_UNUSABLE}: {reason}", failure.code), {}  # no retry
                    if failure.kind is Kind.RETRYABLE:
                        if failure.http_status >= 500:  # the service, not a hot partition
                            reason = f"{_FAILING} (HTTP {failure.http_status}): {what}"
                        outcome = retryable(reason, failure.code)
                        continue
                    return permanent(reason, failure.code), {}
                if failure.kind is Kind.INFRASTRUCTURE:  # no credentials, no region...
                    return retryable(f"{_UNUSABLE}: {exc}", failure.code), {}
                outcome = retryable(f"{_UNREACHABLE}: {exc}", failure.code)
                continue
            return OK, response
        return outcome, {}


def _primary(item: dict[str, Any], key: str) -> tuple[str, str]:
    return str(item[key]), item[POSITION]["S"]
