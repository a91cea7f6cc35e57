"""The ``lookup`` enricher: put a DynamoDB item into each record, found by a field of the record.

Why batch-aware: a Kinesis batch holds hundreds of records but usually far fewer distinct
keys, so ``prepare`` collects the batch's distinct keys, answers what it can from a cache,
and fetches the rest with ``BatchGetItem`` (100 keys per call, string and number keys in
separate calls); ``__call__`` then only reads the answer for its record's key.

Why a cache that outlives the batch: the processor lives as long as the Lambda execution
environment, so warm invocations reuse what earlier ones fetched. Items are kept ``ttl_s``
seconds (300 by default); misses are kept too, so that a hot key without an item does not
cost a call per batch, but for a shorter time, ``min(ttl_s, 60)`` by default: a missing
item is often one that is about to be written (a user who just signed up), and should show
up soon. At most ``max_entries`` keys are kept; the least recently used go first.

What each record gets:

* an item: ``into`` receives it as plain JSON (numbers as int or float, sets as sorted
  lists, binary as base64 strings), a fresh copy per record;
* no item, or no usable key (the field is absent or null, not a string or number, an empty
  string...): ``on_miss`` decides: ``keep`` (the record passes unchanged), ``drop``
  (filtered out) or ``dead_letter`` (:class:`LookupMiss`, a permanent failure naming the
  table, the field and the value). A record without a key can match no item, so it is a
  miss, not a different kind of error;
* the key could not be fetched: throttled past the retry budget, a 5xx, an unreachable
  endpoint: :class:`LookupUnavailable` (retryable) for the records of the keys concerned
  only; the rest of the batch goes on;
* the table cannot be used at all: it does not exist, the function may not read it, no
  credentials: :class:`LookupUnavailable` with the error code and the fix, for every record
  that needs it, and no further calls for the batch. That is not the records' fault
  (:mod:`stream.faults`): they are reported for retry, never dead-lettered, so one
  mistyped table name stops the shard (Lambda's retries, the iterator-age alarm and the
  on-failure destination take over) instead of sending all traffic to the dead-letter queue;
* the table refuses the keys: they do not fit its key schema (``ValidationException``, e.g.
  a number where the table's key is a string): :class:`LookupFailed` (permanent) for the
  records of those keys, with the fix.

Failures are never cached: the next batch asks again.

The table's partition key is ``table_key`` (by default the same name as the record field
``key``); the table must have no sort key. boto3 is imported when the first client is made.
"""

from __future__ import annotations

import time
from base64 import b64encode
from collections import OrderedDict
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import TYPE_CHECKING, Any, TypeAlias

import orjson

from processors.errors import ProcessorError
from stream.aws import (
    FIRST_DELAY_S,
    MAX_ATTEMPTS,
    MAX_DELAY_S,
    Kind,
    backoff_delay,
    classify,
    lazy_client,
)
from stream.exceptions import DecodeError, RecordError, RetryableError
from stream.overlap import run_all, wave_width

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from stream.records import Record

__all__ = [
    "DEFAULT_TTL_S",
    "MAX_KEYS_PER_CALL",
    "ON_MISS",
    "DynamoDBFetch",
    "Fetch",
    "Fetched",
    "KeyValue",
    "Lookup",
    "LookupFailed",
    "LookupMiss",
    "LookupUnavailable",
    "TTLCache",
    "plain_value",
]

#: BatchGetItem's limit of keys per call.
MAX_KEYS_PER_CALL = 100
DEFAULT_TTL_S = 300.0
DEFAULT_MISS_TTL_S = 60.0
DEFAULT_MAX_ENTRIES = 10_000
ON_MISS = ("keep", "drop", "dead_letter")
_MAX_KEY_BYTES = 2048  # DynamoDB's limit for a partition key value
_INT_RANGE = (-(2**63), 2**64 - 1)  # what orjson can write back as an integer
_FIXES = {
    "ResourceNotFoundException": "create the table, or fix lookup.table (it is looked up in "
    "the function's region)",
    "AccessDeniedException": "grant dynamodb:BatchGetItem on the table to the function's role",
    "ValidationException": "the table's partition key must be named like lookup.table_key "
    "(default: lookup.key), be of the records' key type (string or number), and the table "
    "must have no sort key",
}

#: A key as the lookup handles it: a string, or a number as an exact Decimal (so that 1 and
#: 1.0 are one key, as in DynamoDB, and "1" is another).
KeyValue: TypeAlias = "str | Decimal"


class LookupMiss(RecordError, ProcessorError):
    """No item for the record's key (or no usable key), and ``on_miss`` is ``dead_letter``."""


class LookupFailed(RecordError, ProcessorError):
    """The table refuses these keys (they do not fit its key schema), and retrying will not
    change that.

    Attributes:
        code: the DynamoDB error code, e.g. ``ResourceNotFoundException``.
        table_wide: whether every key of the table fails alike (then the batch makes no
            further calls).
    """

    def __init__(self, reason: str, code: str = "", *, table_wide: bool = False) -> None:
        super().__init__(reason)
        self.code = code
        self.table_wide = table_wide


class LookupUnavailable(RetryableError, ProcessorError):
    """The keys could not be fetched now (throttled, 5xx, unreachable), or the table cannot
    be used at all (missing, access denied, no credentials): deliver again.

    Attributes:
        code: the DynamoDB error code or botocore exception name.
        table_wide: whether the endpoint or the table itself fails (then the batch makes no
            further calls: each would fail, or wait for the same timeouts, alike).
    """

    def __init__(self, reason: str, code: str = "", *, table_wide: bool = False) -> None:
        super().__init__(reason)
        self.code = code
        self.table_wide = table_wide


@dataclass(frozen=True, slots=True)
class Fetched:
    """What one fetch found.

    Attributes:
        items: the items found, as plain JSON, by requested key. A requested key that is
            neither here nor in ``unprocessed`` has no item (a miss).
        unprocessed: keys the table did not answer for within the retry budget.
    """

    items: dict[KeyValue, dict[str, Any]]
    unprocessed: tuple[KeyValue, ...] = ()


#: fetch(keys) -> Fetched: at most 100 distinct keys, all strings or all numbers. Raises
#: LookupFailed or LookupUnavailable when the whole call fails.
Fetch: TypeAlias = "Callable[[Sequence[KeyValue]], Fetched]"


class TTLCache:
    """Values that expire, at most ``max_entries`` of them, least recently used evicted first.

    Times are passed in (one instant per batch), so the cache holds no clock.
    """

    __slots__ = ("_data", "max_entries")

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[Any, tuple[float, Any]] = OrderedDict()

    def get(self, key: Any, now: float) -> Any:
        """The live value of ``key``, or ``None``; a hit becomes the most recently used."""
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return entry[1]

    def put(self, key: Any, value: Any, expires: float) -> None:
        """Keep ``value`` until ``expires``, evicting the least recently used if full."""
        data = self._data
        data[key] = (expires, value)
        data.move_to_end(key)
        while len(data) > self.max_entries:
            data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data


class _Unresolved:
    """A key's answer other than an item."""

    __slots__ = ()


class _Miss(_Unresolved):
    """Why a record has no item: no item, no key field, or a value that cannot be a key."""

    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def reason(self, lookup: Lookup, value: Any) -> str:
        table = f"DynamoDB table {lookup.table!r}"
        if self.kind == "absent":
            return f"lookup: the record has no field {lookup.key!r} to look up in {table}"
        if self.kind == "unusable":
            return (
                f"lookup: record field {lookup.key!r} is {value!r}, which cannot be a key of "
                f"{table} (a non-empty string of at most {_MAX_KEY_BYTES} bytes, or a number "
                "of at most 38 digits)"
            )
        return (
            f"lookup: no item with {lookup.table_key}={value!r} in {table} "
            f"(from record field {lookup.key!r})"
        )


class _Failure(_Unresolved):
    """A key that could not be fetched: raised per record, with the record's value."""

    __slots__ = ("error",)

    def __init__(self, error: LookupFailed | LookupUnavailable) -> None:
        self.error = error

    def raise_for(self, lookup: Lookup, value: Any) -> None:
        error = self.error
        raise type(error)(
            f"{error} (record field {lookup.key!r} = {value!r})", error.code
        ) from None


_NO_ITEM = _Miss("no_item")
_ABSENT = _Miss("absent")
_UNUSABLE = _Miss("unusable")
# A found item is held as a function returning a fresh copy: one per record, so that a
# later step changing one record's item changes neither another record nor the cache.
_Entry: TypeAlias = "Callable[[], dict[str, Any]] | _Unresolved"


class Lookup:
    """Add the DynamoDB item keyed by a record field to each record.

    Args:
        table: the table name, used as written.
        key: the record field (top-level) holding the key value.
        into: the field that receives the item.
        on_miss: ``keep``, ``drop`` or ``dead_letter`` (see the module docstring).
        ttl_s: seconds an item is cached; ``None`` for the default (300); 0 caches nothing.
        table_key: the table's partition key attribute, when it is not named like ``key``.
        miss_ttl_s: seconds a miss is cached; by default ``min(ttl_s, 60)``; at most
            ``ttl_s``.
        max_entries: most keys cached (items and misses together).
        client: a boto3 DynamoDB client; by default one is created on first use and reused
            while the Lambda is warm.
        fetch: replaces the DynamoDB fetch (tests, other stores); see :data:`Fetch`.
        batch_size: most keys per fetch (BatchGetItem takes 100).
        max_attempts: attempts per BatchGetItem call before its keys are reported retryable
            (by default the budget of every sink, :data:`stream.aws.MAX_ATTEMPTS`).
        sleep: the backoff's sleep, injectable for tests.
        now: the cache's clock (monotonic seconds), injectable for tests.
        number_keys: ``number`` (a number key is asked for as a DynamoDB number) or
            ``text`` (as its decimal text: the table is one of the pipeline's ``dynamodb``
            sinks, which write it so; the plan says which: ``compile_plan``).

    Raises:
        ValueError: a wrong option (the message names it).
    """

    __slots__ = (
        "_cache",
        "_fetch",
        "_now",
        "_resolved",
        "batch_size",
        "into",
        "key",
        "miss_ttl_s",
        "on_miss",
        "table",
        "table_key",
        "ttl_s",
    )

    def __init__(
        self,
        table: str,
        key: str,
        into: str,
        on_miss: str = "keep",
        ttl_s: float | None = None,
        *,
        table_key: str | None = None,
        miss_ttl_s: float | None = None,
        max_entries: int | None = None,
        client: Any = None,
        fetch: Fetch | None = None,
        batch_size: int = MAX_KEYS_PER_CALL,
        max_attempts: int = MAX_ATTEMPTS,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], float] = time.monotonic,
        number_keys: str = "number",
    ) -> None:
        if number_keys not in {"number", "text"}:
            msg = f"lookup.number_keys: expected number or text, got {number_keys!r}"
            raise ValueError(msg)
        for name, text in (("table", table), ("key", key), ("into", into)):
            if not isinstance(text, str) or not text:
                msg = f"lookup.{name}: expected a non-empty string, got {text!r}"
                raise ValueError(msg)
        if on_miss not in ON_MISS:
            msg = f"lookup.on_miss: expected one of {', '.join(ON_MISS)}, got {on_miss!r}"
            raise ValueError(msg)
        ttl = DEFAULT_TTL_S if ttl_s is None else float(ttl_s)
        miss_ttl = min(ttl, DEFAULT_MISS_TTL_S) if miss_ttl_s is None else float(miss_ttl_s)
        if ttl < 0 or not 0 <= miss_ttl <= ttl:
            msg = f"lookup: need 0 <= miss_ttl_s <= ttl_s, got ttl_s={ttl}, miss_ttl_s={miss_ttl}"
            raise ValueError(msg)
        entries = DEFAULT_MAX_ENTRIES if max_entries is None else max_entries
        if entries < 1 or not 1 <= batch_size <= MAX_KEYS_PER_CALL:
            msg = (
                f"lookup: max_entries must be at least 1 (got {entries}) and batch_size "
                f"between 1 and {MAX_KEYS_PER_CALL} (got {batch_size})"
            )
            raise ValueError(msg)
        self.table = table
        self.key = key
        self.into = into
        self.on_miss = on_miss
        self.table_key = table_key or key
        self.ttl_s = ttl
        self.miss_ttl_s = miss_ttl
        self.batch_size = batch_size
        self._fetch: Fetch = fetch or DynamoDBFetch(
            table, self.table_key, client=client, max_attempts=max_attempts, sleep=sleep,
            number_keys=number_keys,
        )  # fmt: skip
        self._cache = TTLCache(entries)
        self._now = now
        self._resolved: dict[KeyValue, _Entry] = {}

    @property
    def cache(self) -> TTLCache:
        """The cache, kept across batches (and warm invocations)."""
        return self._cache

    def prepare(self, records: Sequence[Record]) -> None:
        """Resolve every distinct key of the batch: from the cache, else in bulk calls.

        Never raises for a record's sake: a record that is not a JSON object is skipped here
        and fails in ``__call__`` with its DecodeError.
        """
        key = self.key
        keys: dict[KeyValue, None] = {}
        for rec in records:
            try:
                doc = rec.json
            except DecodeError:
                continue
            if type(doc) is not dict:
                continue
            value = doc.get(key)
            k = value if type(value) is str else _number_key(value)
            if k is not None:
                keys[k] = None
        self._resolved = self._resolve(keys)

    def __call__(self, record: Record) -> Record | None:
        doc = record.json
        if type(doc) is not dict:
            doc = record.as_dict()  # raises DecodeError with the record's position
        value = doc.get(self.key)
        k = value if type(value) is str else _number_key(value)
        entry = self._resolved.get(k) if k is not None else None
        if entry is None:
            entry = self._resolve_late(doc, value)
        if isinstance(entry, _Unresolved):
            return self._unresolved(record, value, entry)
        doc[self.into] = entry()
        record.set_json(doc)
        return record

    def _unresolved(self, record: Record, value: Any, entry: _Unresolved) -> Record | None:
        if isinstance(entry, _Failure):
            entry.raise_for(self, value)
        if self.on_miss == "keep":
            return record
        if self.on_miss == "drop":
            return None
        reason = entry.reason(self, value) if isinstance(entry, _Miss) else str(entry)
        msg = f"{reason}; on_miss is dead_letter (keep or drop let such records through)"
        raise LookupMiss(msg)

    def _resolve_late(self, doc: dict[str, Any], value: Any) -> _Entry:
        """A key that ``prepare`` did not see (no key, or the step was called directly)."""
        if value is None:
            return _UNUSABLE if self.key in doc else _ABSENT
        k = value if type(value) is str else _number_key(value)
        if k is None:
            return _UNUSABLE
        entry = self._resolve([k]).get(k, _UNUSABLE)  # not found back: NaN is no key
        self._resolved[k] = entry
        return entry

    def _resolve(self, keys: Iterable[KeyValue]) -> dict[KeyValue, _Entry]:
        now = self._now()
        cache = self._cache
        resolved: dict[KeyValue, _Entry] = {}
        strings: list[KeyValue] = []
        numbers: list[KeyValue] = []
        for k in keys:
            hit = cache.get(k, now)
            if hit is not None:
                resolved[k] = hit
            elif not _usable(k):
                resolved[k] = _UNUSABLE
            else:
                (strings if type(k) is str else numbers).append(k)
        size = self.batch_size
        chunks = [g[i : i + size] for g in (strings, numbers) for i in range(0, len(g), size)]
        stop: _Failure | None = None  # a table-wide failure: no further calls this batch
        width = wave_width()  # chunks of distinct keys: a wave's calls go at once
        for start in range(0, len(chunks), width):
            wave = chunks[start : start + width]
            if stop is not None:
                for chunk in wave:
                    resolved.update(dict.fromkeys(chunk, stop))
                continue
            answers = run_all([partial(self._fetch_or_fail, chunk) for chunk in wave])
            for chunk, fetched in zip(wave, answers, strict=True):  # in order, as in turn
                if isinstance(fetched, LookupFailed | LookupUnavailable):
                    failure = _Failure(fetched)
                    resolved.update(dict.fromkeys(chunk, failure))
                    if fetched.table_wide:
                        stop = stop or failure
                    continue
                self._store(chunk, fetched, resolved, now)
        return resolved

    def _fetch_or_fail(
        self, chunk: Sequence[KeyValue]
    ) -> Fetched | LookupFailed | LookupUnavailable:
        try:
            return self._fetch(chunk)
        except (LookupFailed, LookupUnavailable) as exc:
            return exc

    def _store(
        self,
        chunk: Sequence[KeyValue],
        fetched: Fetched,
        resolved: dict[KeyValue, _Entry],
        now: float,
    ) -> None:
        items = fetched.items
        left = set(fetched.unprocessed)
        unprocessed = _Failure(
            LookupUnavailable(
                f"lookup: DynamoDB table {self.table!r} did not answer for the key within "
                "the retry budget (throttled, or over 16 MB per call); delivered again",
                "UnprocessedKeys",
            )
        )
        cache = self._cache
        hit_until = now + self.ttl_s
        miss_until = now + self.miss_ttl_s
        for k in chunk:
            if k in left:
                resolved[k] = unprocessed
                continue
            item = items.get(k)
            entry = _NO_ITEM if item is None else _copier(item)
            resolved[k] = entry
            if item is not None and self.ttl_s > 0:
                cache.put(k, entry, hit_until)
            elif item is None and self.miss_ttl_s > 0:
                cache.put(k, entry, miss_until)


class DynamoDBFetch:
    """One ``BatchGetItem`` call's worth of keys, with ``UnprocessedKeys`` retried.

    Args:
        table: the table name.
        key: the table's partition key attribute.
        client: a boto3 DynamoDB client; by default created on first use, then reused.
        max_attempts: calls per fetch (the first and the retries of unprocessed keys,
            throttles, 5xx and connection errors) before giving up; by default the budget
            of every sink (:data:`stream.aws.MAX_ATTEMPTS`).
        base_delay: bound of the backoff before the second call, doubled per call, with
            full jitter; by default the sinks' waits (:func:`stream.aws.backoff_delay`).
        max_delay: cap of one backoff: a lookup must not eat the Lambda's timeout.
        sleep: injectable for tests.
        consistent_read: strongly consistent reads (twice the read capacity).
        number_keys: ``text`` asks for a number key as its decimal text (a table a
            ``dynamodb`` sink writes: :func:`sinks.dynamodb.key_text`), ``number`` as a number.
    """

    __slots__ = (
        "_base_delay",
        "_client",
        "_max_delay",
        "_sleep",
        "consistent_read",
        "key",
        "max_attempts",
        "number_keys",
        "table",
    )

    def __init__(
        self,
        table: str,
        key: str,
        *,
        client: Any = None,
        max_attempts: int = MAX_ATTEMPTS,
        base_delay: float = FIRST_DELAY_S,
        max_delay: float = MAX_DELAY_S,
        sleep: Callable[[float], None] = time.sleep,
        consistent_read: bool = False,
        number_keys: str = "number",
    ) -> None:
        if max_attempts < 1:
            msg = f"lookup: max_attempts must be at least 1, got {max_attempts}"
            raise ValueError(msg)
        self.table = table
        self.key = key
        self.max_attempts = max_attempts
        self.consistent_read = consistent_read
        self.number_keys = number_keys
        self._client = client
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._sleep = sleep

    client = lazy_client("dynamodb", validated=False)
    """The DynamoDB client, created on first use (boto3 is imported only then): the one the
    DynamoDB sinks use (no parameter validation: the keys are built here, typed), so that a
    function with both makes one client, not two."""

    def backoff(self, attempt: int) -> float:
        """The sleep before call ``attempt`` (1-based retries): full jitter, capped."""
        return backoff_delay(attempt - 1, self._base_delay, self._max_delay)

    def __call__(self, keys: Sequence[KeyValue]) -> Fetched:
        """Fetch the items of these keys (at most 100, distinct, one type).

        Raises:
            LookupFailed: the keys do not fit the table's key schema.
            LookupUnavailable: no call succeeded within the budget, or the table cannot be
                used (missing, access denied: not retried within the budget).
        """
        client = self.client
        pending: list[dict[str, Any]] = [{self.key: _attribute(k)} for k in keys]
        asked: dict[KeyValue | None, KeyValue] = {}  # a number's text -> the number asked
        if self.number_keys == "text":
            from sinks.dynamodb import key_text  # noqa: PLC0415  # the sink's own rule

            for k, request in zip(keys, pending, strict=True):
                if type(k) is not str:
                    request[self.key] = {"S": key_text(str(k))}
                    asked[request[self.key]["S"]] = k
        items: dict[KeyValue, dict[str, Any]] = {}
        error: LookupUnavailable | None = None
        for attempt in range(self.max_attempts):
            if attempt:
                self._sleep(self.backoff(attempt))
            request = {"Keys": pending, "ConsistentRead": self.consistent_read}
            try:
                response = client.batch_get_item(RequestItems={self.table: request})
            except Exception as exc:  # botocore's errors are classified, others re-raised
                error = self._classify(exc)
                continue
            error = None
            for item in response.get("Responses", {}).get(self.table, ()):
                got = _key_of(item.get(self.key))
                got = asked.get(got, got) if asked else got
                if got is not None:
                    items[got] = {name: plain_value(v) for name, v in item.items()}
            pending = response.get("UnprocessedKeys", {}).get(self.table, {}).get("Keys", [])
            if not pending:
                return Fetched(items)
        if error is not None and not items:
            raise error
        left = (asked.get(k, k) for k in (_key_of(k.get(self.key)) for k in pending))
        return Fetched(items, tuple(k for k in left if k is not None))

    def _classify(self, exc: Exception) -> LookupUnavailable:
        failure = classify(exc, "dynamodb")
        if failure.kind is Kind.OTHER:
            raise exc
        if not failure.answered:  # any botocore error: unreachable, for every key alike
            reason = f"lookup: DynamoDB unreachable for table {self.table!r}: {exc}"
            return LookupUnavailable(reason, failure.code, table_wide=True)
        code = failure.code
        reason = f"lookup: DynamoDB {code} on table {self.table!r}: {failure.message}"
        if failure.kind is Kind.RETRYABLE:
            return LookupUnavailable(reason, code)
        fix = _FIXES.get(code)
        if failure.kind is Kind.INFRASTRUCTURE:  # no record's fault, the same for every key
            raise LookupUnavailable(
                f"{reason}: {fix}" if fix else reason, code, table_wide=True
            ) from exc
        raise LookupFailed(
            f"{reason}: {fix}" if fix else reason, code, table_wide=code != "ValidationException"
        ) from exc


def plain_value(attribute: Mapping[str, Any]) -> Any:
    """A DynamoDB AttributeValue as plain JSON: what ``into`` receives.

    >>> plain_value({"M": {"n": {"N": "1.50"}, "s": {"NS": ["10", "2"]}, "b": {"B": b"hi"}}})
    {'n': 1.5, 's': [2, 10], 'b': 'aGk='}
    """
    ((kind, value),) = attribute.items()
    if kind in {"S", "BOOL"}:
        return value
    if kind == "N":
        return _number(value)
    if kind == "M":
        return {k: plain_value(v) for k, v in value.items()}
    if kind == "L":
        return [plain_value(v) for v in value]
    if kind == "NULL":
        return None
    if kind == "SS":
        return sorted(value)
    if kind == "NS":
        return sorted(_number(v) for v in value)
    if kind == "B":
        return _base64(value)
    if kind == "BS":
        return sorted(_base64(v) for v in value)
    msg = f"unknown DynamoDB attribute type {kind!r}"
    raise TypeError(msg)


def _number(text: str) -> int | float:
    """A DynamoDB number as int when integral and in orjson's range, else float."""
    try:
        n = int(text)
    except ValueError:
        exact = Decimal(text)
        if exact != exact.to_integral_value():
            return float(exact)
        n = int(exact)
    return n if _INT_RANGE[0] <= n <= _INT_RANGE[1] else float(n)


def _base64(value: bytes | str) -> str:
    return value if isinstance(value, str) else b64encode(value).decode()


def _number_key(value: Any) -> Decimal | None:
    """A JSON number as an exact Decimal key; ``None`` for anything else (bools included)."""
    kind = type(value)
    if kind is int:
        return Decimal(value)
    if kind is float:
        return Decimal(repr(value))
    return None


def _usable(k: KeyValue) -> bool:
    """Whether DynamoDB accepts the value as a key (else the whole call would fail)."""
    if isinstance(k, str):
        return k != "" and (len(k) * 4 <= _MAX_KEY_BYTES or len(k.encode()) <= _MAX_KEY_BYTES)
    if not k.is_finite():
        return False
    if not k:
        return True
    return len(k.normalize().as_tuple().digits) <= 38 and -130 <= k.adjusted() <= 125


def _attribute(k: KeyValue) -> dict[str, str]:
    if type(k) is str:
        return {"S": k}
    return {"N": format(Decimal(k).normalize(), "f")}  # plain digits, e.g. 100, not 1E+2


def _key_of(attribute: Mapping[str, Any] | None) -> KeyValue | None:
    """The key value of a returned key attribute, comparable with what was requested."""
    if not attribute:
        return None
    if "S" in attribute:
        return str(attribute["S"])
    try:
        return Decimal(attribute["N"]) if "N" in attribute else None
    except InvalidOperation:
        return None


def _copier(item: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    """How to make a fresh copy of an item per record, as cheaply as its shape allows."""
    if any(isinstance(v, dict | list) for v in item.values()):
        return partial(orjson.loads, orjson.dumps(item))
    return item.copy
