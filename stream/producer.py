"""The producer: PutRecords batching, retries of failed entries, per-key order, KPL aggregation.

Why not a loop over PutRecords: the call applies its entries independently. Resending the
whole call duplicates the successes; resending only the failed entries lets a later record
of a partition key overtake an earlier one. The producer resends only what failed, keeps
per-key order when asked, and returns what still fails instead of dropping it.

How buffered records become calls
    Records are queued in *lanes*: one per partition key (``ordered=True``), one per shard
    (``aggregate=True, ordered=False``), or a single lane (neither). Each call takes the next
    entry of the lane whose oldest record is the oldest (a heap), until it holds 500 entries
    or the next entry would pass 5 MiB (data plus partition keys). An entry is one Kinesis
    record: a user record, or a KPL aggregate of several.

Order (``ordered=True``)
    A user record is sent only when every earlier record of its partition key has been
    answered (succeeded), so a call holds at most one record per key, aggregated or not, and
    a key with n records needs n calls; many keys still fill 500-entry calls and large
    aggregates (the lane heap takes the next record of each key, oldest first). Why one per
    call and not one per entry: a call whose answer is lost (a timeout or a dropped
    connection after Kinesis acted) is sent again whole, so its records are in the stream
    twice; with two records of a key in it, the resend would write the older one after the
    newer one. With one, a key's copies are adjacent and its records stay in order. A record
    that finally fails holds back the later records of its key (they are returned failed,
    code ``HeldBack``, never sent); other keys go on. The held-back keys are forgotten when
    ``flush()`` returns the failures: what the caller puts after that is its new decision.
    A record refused by ``put()`` (too large, bad key) was never accepted and holds nothing.

Failures
    Failed entries (``ProvisionedThroughputExceededException``, ``InternalFailure``, KMS
    throttling, unknown codes) and failed calls (throttling, 5xx, connection errors) are
    sent again, at most ``max_attempts`` times per entry. Before a call that resends an
    entry the producer sleeps ``uniform(0, min(max_delay, base_delay * 2**(n - 1)))``, n the
    most attempts of an entry in that call (exponential backoff, full jitter). Errors that
    retrying cannot fix are final at once: a missing stream, denied access or disabled KMS key
    fails everything pending; a call-level validation error fails that call's entries. When
    Kinesis cannot be reached at all (connection errors) and a call's entries have used
    their attempts, everything still pending is returned failed (``HeldBack``, retryable)
    instead of being tried call after call: each would wait for the same timeouts, which a
    Lambda's time budget cannot afford.

Duplicates and record ids (``record_id=``)
    Kinesis has no idempotent put. A call whose answer is lost was perhaps applied, so it is
    sent again, and its records may be in the stream twice, at two positions; a record
    returned failed after such a call (a timeout, a dropped connection) may be in it too.
    Consumers' keyed sinks are idempotent per stream position, which does not remove these
    copies. With ``record_id="field"`` every record carries a stable id in that top-level
    JSON field: the caller's own if the field is there, else ``f"{producer_id}-{index}"``,
    added at ``put()`` and so the same in every resend and in ``RecordResult.data`` (put
    that again and the id stays). A consumer reads it with ``Record.record_id("field")``
    and keeps the first record of each id. Producers without ``record_id`` send their data
    untouched.

Aggregation (``aggregate=True``)
    The shards' hash-key ranges come from ListShards (open shards only, cached, listed again
    when a result names a shard other than the one planned, i.e. after a reshard). Each user
    record's hash key is the MD5 of its partition key as a 128-bit integer (or its explicit
    hash key), which names its shard. The user records of a call are packed per shard, in
    order, into aggregates up to the maximum record size (aggregate partition key included),
    with ``aws_kinesis_agg``'s ``AggRecord``: with ``ordered=True`` the next record of each
    key, without it a shard's records as they come. The aggregate is sent with
    ``ExplicitHashKey`` set to its first user record's own hash key: inside the shard's range
    by construction (so the aggregate lands on the shard every user record's key maps to, and
    a KCL consumer that checks sub-records against the shard's range keeps them all), and the
    choice that stays right for that record even if the shard is split meanwhile. An
    aggregate is atomic: all its user records succeed or fail together, and it is resent as
    it was. An entry of a single user record is sent plain (smaller, same shard).
    Aggregation pays when a shard gets many keys per call; a few hot keys with
    ``ordered=True`` gain little from it.

Contracts (``schema=``)
    With a contract (a :class:`processors.schema.Schema`, or the path of a ``.json`` JSON
    Schema or ``.avsc`` Avro schema, the file a pipeline's ``schema`` step names), ``put()``
    checks each record before it is queued. A JSON Schema record is sent as put; a record for
    an Avro contract is put as its JSON document and sent as Avro binary, which the step
    decodes. A record that breaks the contract is never sent and never raised: ``flush()``
    returns it failed, code ``ContractError``, ``permanent``, with the step's reason (the
    failing JSON pointer and keyword, or the Avro field and value) and its JSON data, so a
    producer fed in bulk learns every bad record, not the first. Like a record ``put()``
    refuses, it holds back nothing. The schema libraries are imported only with a contract.

Not thread-safe: use one producer per thread. boto3 and ``aws_kinesis_agg`` are imported
when first needed, not with this module.
"""

from __future__ import annotations

import enum
import hashlib
import importlib
import os
import sys
import time
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field
from heapq import heappop, heappush
from typing import TYPE_CHECKING, Any

import orjson

from stream.aws import Kind, backoff_delay, classify, lazy_client
from stream.exceptions import RecordError, ShardlineError
from stream.faults import INFRASTRUCTURE_CODES

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from os import PathLike
    from types import TracebackType
    from typing import Self

    from processors.schema import Schema

__all__ = [
    "CONTRACT_ERROR",
    "MAX_RECORDS_PER_CALL",
    "MAX_RECORD_BYTES",
    "MAX_REQUEST_BYTES",
    "FlushResult",
    "InvalidRecordError",
    "Producer",
    "ProducerStats",
    "RecordResult",
    "RecordTooLargeError",
    "ShardMap",
    "UndeliveredRecordsError",
    "hash_key",
]

#: Kinesis limits (PutRecords): entries per call, bytes per record and per call. Record and
#: call sizes count the data and the partition key (UTF-8), not the explicit hash key.
MAX_RECORDS_PER_CALL = 500
MAX_RECORD_BYTES = 1024 * 1024
MAX_REQUEST_BYTES = 5 * 1024 * 1024
_MAX_KEY_CHARS = 256
_HASH_SPACE = 2**128
_HELD_BACK = "HeldBack"
#: The error code of a record that breaks the producer's contract (``schema=``).
CONTRACT_ERROR = "ContractError"
_UNSET: Any = object()

#: Entry error codes that no retry can fix: the stream's infrastructure
#: (:mod:`stream.faults`) and a refused entry. Any other code (the documented ones are
#: ProvisionedThroughputExceededException and InternalFailure) is retried.
_PERMANENT_ENTRY_CODES = INFRASTRUCTURE_CODES | {"ValidationException", "InvalidArgumentException"}


class _Scope(enum.Enum):
    """How far the error of a failed call reaches."""

    RETRY = "retry"
    """A throttle or a fault: the call's entries are retried within their attempts."""
    DOWN = "down"
    """No answer from the endpoint: retried too, but once an entry is out of attempts the
    rest is returned at once, since every later call would wait for the same timeouts."""
    CALL = "call"
    """This call was refused: its entries fail permanently, the rest goes on."""
    STREAM = "stream"
    """Every later call would be refused too (:mod:`stream.faults`): everything pending
    fails at once, permanently."""


@dataclass(frozen=True, slots=True)
class _CallFailure:
    """A failed call (PutRecords, ListShards): the error code, the reason, how far it
    reaches."""

    error: str
    reason: str
    scope: _Scope

    @property
    def retried(self) -> bool:
        """Whether the call is worth another attempt."""
        return self.scope in (_Scope.RETRY, _Scope.DOWN)


class _NoShardMap(Exception):  # internal: never leaves the producer
    """ListShards failed, so records cannot be aggregated per shard: every pending record
    fails with ``failure`` (permanently when it is not worth a retry)."""

    def __init__(self, failure: _CallFailure) -> None:
        super().__init__(failure.reason)
        self.failure = failure


class InvalidRecordError(RecordError, ValueError):
    """A record that Kinesis would refuse, refused by ``put()`` before anything is sent.

    Attributes:
        index: the index ``put()`` gave the record (the counter moves on regardless).
        partition_key: its partition key.
    """

    def __init__(self, message: str, *, index: int, partition_key: object) -> None:
        super().__init__(message)
        self.index = index
        self.partition_key = partition_key


class RecordTooLargeError(InvalidRecordError):
    """A record over the stream's maximum record size (data plus partition key).

    Attributes:
        size: the record's size in bytes, partition key included.
        limit: the maximum record size in bytes.
    """

    def __init__(
        self, message: str, *, index: int, partition_key: str, size: int, limit: int
    ) -> None:
        super().__init__(message, index=index, partition_key=partition_key)
        self.size = size
        self.limit = limit


class UndeliveredRecordsError(ShardlineError):
    """Raised when leaving a ``with Producer(...)`` block with records that finally failed.

    Attributes:
        result: the final flush's result; ``result.failed`` holds the records and errors.
    """

    def __init__(self, result: FlushResult) -> None:
        failed = result.failed
        first = failed[0]
        super().__init__(
            f"{len(failed)} of {len(result.results)} records were not delivered (first: "
            f"record {first.index}, partition key {first.partition_key!r}: {first.error}: "
            f"{first.reason}); they are in this error's .result.failed: put them again"
        )
        self.result = result


@dataclass(frozen=True, slots=True)
class RecordResult:
    """The fate of one user record.

    Attributes:
        index: what ``put()`` returned for it.
        partition_key: its partition key.
        data: its bytes, so that a failed record can be put again.
        explicit_hash_key: the explicit hash key it was put with, if any.
        sequence_number: the Kinesis sequence number ("" when failed); for a user record in a
            KPL aggregate, the aggregate's.
        sub_sequence_number: its index inside the aggregate (0 for a plain record).
        shard_id: the shard it was written to ("" when failed).
        error: the error code of a record that finally failed, e.g.
            ``ProvisionedThroughputExceededException`` or ``HeldBack``; "" when written.
        reason: what went wrong, naming the stream.
        permanent: whether retrying cannot fix it (missing stream, denied access, validation).
        attempts: how many times it was sent (0 if held back).
        record_id: its producer record id (``Producer(record_id=...)``), "" without one.
    """

    index: int
    partition_key: str
    data: bytes = field(repr=False)
    explicit_hash_key: str | None = None
    sequence_number: str = ""
    sub_sequence_number: int = 0
    shard_id: str = ""
    error: str = ""
    reason: str = ""
    permanent: bool = False
    attempts: int = 0
    record_id: str = ""

    @property
    def ok(self) -> bool:
        """Whether the record was written."""
        return not self.error


@dataclass(slots=True)
class ProducerStats:
    """Counters of a flush (``FlushResult.stats``) or of a producer's life (``totals``).

    Attributes:
        records: user records resolved (written or failed).
        bytes: their data bytes (partition keys not counted).
        kinesis_records: Kinesis records written (an aggregate counts once).
        calls: PutRecords calls made.
        retries: entries sent again after a failure.
        failures: user records that finally failed (held-back ones included).
    """

    records: int = 0
    bytes: int = 0
    kinesis_records: int = 0
    calls: int = 0
    retries: int = 0
    failures: int = 0

    def add(self, other: ProducerStats) -> None:
        """Add another's counters to these."""
        self.records += other.records
        self.bytes += other.bytes
        self.kinesis_records += other.kinesis_records
        self.calls += other.calls
        self.retries += other.retries
        self.failures += other.failures


@dataclass(frozen=True, slots=True)
class FlushResult:
    """What ``flush()`` returns: one result per record put since the last flush, in put
    order, and the counters."""

    results: list[RecordResult]
    stats: ProducerStats

    @property
    def failed(self) -> list[RecordResult]:
        """The records that finally failed, in put order."""
        return [r for r in self.results if r.error]

    @property
    def ok(self) -> bool:
        """Whether every record was written."""
        return self.stats.failures == 0


def hash_key(partition_key: str) -> int:
    """The hash key Kinesis maps a partition key to: its MD5 as a 128-bit integer.

    >>> hash_key("a")
    16955237001963240173058271559858726497
    """
    digest = hashlib.md5(partition_key.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest, "big")


class ShardMap:
    """The open shards of a stream by the start of their hash-key range.

    >>> shards = ShardMap([("shardId-000000000000", 0), ("shardId-000000000001", 2**127)])
    >>> shards.shard_for(hash_key("a")), shards.shard_for(2**127)
    ('shardId-000000000000', 'shardId-000000000001')

    Args:
        shards: (shard id, starting hash key) of each open shard.
    """

    def __init__(self, shards: Iterable[tuple[str, int]]) -> None:
        pairs = sorted(shards, key=lambda pair: pair[1])
        if not pairs:
            msg = "a stream has at least one open shard; ListShards returned none"
            raise ValueError(msg)
        self._starts = [start for _, start in pairs]
        self._ids = [shard_id for shard_id, _ in pairs]

    @classmethod
    def from_list_shards(cls, shards: Iterable[Mapping[str, Any]]) -> ShardMap:
        """From ListShards' ``Shards``; closed shards (an ending sequence number) are left out."""
        return cls(
            (s["ShardId"], int(s["HashKeyRange"]["StartingHashKey"]))
            for s in shards
            if "EndingSequenceNumber" not in s.get("SequenceNumberRange", {})
        )

    @property
    def shard_ids(self) -> list[str]:
        """The open shards, by hash-key range."""
        return list(self._ids)

    def shard_for(self, key: int) -> str:
        """The shard whose hash-key range holds ``key``."""
        return self._ids[max(bisect_right(self._starts, key) - 1, 0)]


class _User:
    """A user record as put, waiting for its fate."""

    __slots__ = ("data", "ehk", "index", "key", "lane", "rid", "route", "shard")

    def __init__(  # noqa: PLR0917  # internal, one call site
        self, index: int, key: str, data: bytes, ehk: str | None, route: int, rid: str
    ) -> None:
        self.index = index
        self.key = key
        self.data = data
        self.ehk = ehk
        self.route = route  # the hash key that picks the shard (aggregation only)
        self.rid = rid  # the producer record id, "" without one
        self.lane = ""  # set by the schedule
        self.shard = ""  # set by the schedule when aggregating


class _Entry:
    """One Kinesis record of a call: a user record or an aggregate of several."""

    __slots__ = (
        "aggregated",
        "attempts",
        "data",
        "ehk",
        "key",
        "lane",
        "shard",
        "size",
        "users",
    )

    def __init__(
        self, key: str, data: bytes, ehk: str | None, users: list[_User], lane: str | None
    ) -> None:
        self.key = key
        self.data = data
        self.ehk = ehk
        self.users = users
        self.lane = lane  # None: its records come from several lanes (ordered aggregation)
        self.shard = users[0].shard  # the shard it was planned for ("" without aggregation)
        self.size = len(data) + len(key.encode())
        self.aggregated = len(users) > 1
        self.attempts = 0

    @classmethod
    def plain(cls, user: _User, lane: str | None) -> _Entry:
        return cls(user.key, user.data, user.ehk, [user], lane)

    def request(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"Data": self.data, "PartitionKey": self.key}
        if self.ehk is not None:
            entry["ExplicitHashKey"] = self.ehk
        return entry


class _Lane:
    __slots__ = ("name", "queue", "ready", "scheduled")

    def __init__(self, name: str) -> None:
        self.name = name
        self.ready: deque[_Entry] = deque()  # built, not yet sent: retries and leftovers
        self.queue: deque[_User] = deque()  # not yet in an entry
        self.scheduled = False

    def head(self) -> int:
        return self.ready[0].users[0].index if self.ready else self.queue[0].index

    def busy(self) -> bool:
        return bool(self.ready or self.queue)


class _CallSchedule:
    """Which entries go into the next call, and what became of every user record.

    Pure bookkeeping, no I/O: ``next_call`` plans a call, then the caller reports each entry
    with ``succeeded``, ``retry`` or ``failed`` and calls ``settled``.

    Three ways to fill a call: plain entries (lanes by key when ordered, else one lane);
    aggregates packed in order per shard lane (unordered aggregation); and, for ordered
    aggregation, the head record of each key lane packed into aggregates per shard for
    this call, so that a call never holds two records of one key.
    """

    def __init__(
        self,
        users: Sequence[_User],
        lane_of: Callable[[_User], str],
        *,
        ordered: bool,
        blocked: dict[str, str],
        pack: Callable[[_User], Any] | None,
        shard_of: Callable[[_User], str] | None = None,
        record_limit: int = MAX_RECORD_BYTES,
    ) -> None:
        self.ordered = ordered
        self.record_limit = record_limit  # an aggregate's size with its partition key
        self.blocked = blocked  # partition key -> why its later records are held back
        self.pack = pack  # a new aggregate sized for its first user record, or None
        self.results: list[RecordResult] = []
        self.lanes: dict[str, _Lane] = {}
        self.unresolved: dict[str, deque[int]] = {}  # per key, indices not yet settled
        self.retries: deque[_Entry] = deque()  # entries of several lanes to send again
        self.total = len(users)
        self._heap: list[tuple[int, str]] = []
        self._waiting: set[str] = set()
        for user in users:
            name = user.lane = lane_of(user)
            if shard_of is not None:
                user.shard = shard_of(user)
            lane = self.lanes.get(name)
            if lane is None:
                lane = self.lanes[name] = _Lane(name)
            lane.queue.append(user)
            if ordered:
                self.unresolved.setdefault(user.key, deque()).append(user.index)
        for lane in self.lanes.values():
            self._schedule(lane)

    @property
    def done(self) -> bool:
        return len(self.results) == self.total

    def next_call(self, max_entries: int, max_bytes: int) -> list[_Entry]:
        """The next call's entries: oldest lanes first, within both limits."""
        if self.pack is not None and self.ordered:
            return self._packed_call(self.pack, max_entries, max_bytes)
        call: list[_Entry] = []
        size = 0
        while self._heap and len(call) < max_entries:
            _, name = heappop(self._heap)
            lane = self.lanes[name]
            lane.scheduled = False
            entry = self._next_entry(lane)
            if entry is None:
                if lane.busy():
                    self._waiting.add(name)  # its head waits for an earlier record of its key
                continue
            if call and size + entry.size > max_bytes:
                lane.ready.appendleft(entry)
                self._schedule(lane)
                break
            call.append(entry)
            size += entry.size
            self._schedule(lane)
        return call

    def _packed_call(
        self, new: Callable[[_User], Any], max_entries: int, max_bytes: int
    ) -> list[_Entry]:
        """Ordered aggregation: entries to send again first, then the next record of each key
        (oldest first) packed into aggregates per shard, within both limits.

        One record per key per call, not per aggregate: a call whose answer is lost is sent
        again whole, and a key with two records in it would have its older record written
        again after its newer one.
        """
        call: list[_Entry] = []
        size = 0
        while self.retries and len(call) < max_entries:
            if call and size + self.retries[0].size > max_bytes:
                return call
            entry = self.retries.popleft()
            call.append(entry)
            size += entry.size
        packs: dict[str, _Pack] = {}
        while self._heap:
            _, name = heappop(self._heap)
            lane = self.lanes[name]
            lane.scheduled = False
            user = self._head(lane)
            if user is None:
                if lane.busy():
                    self._waiting.add(name)
                continue
            key_bytes = len(user.key.encode())
            cost = _packed_cost(user, key_bytes)
            alone = _AGG_FRAME + cost  # a new aggregate holding only this record
            pack = packs.get(user.shard)
            plain = alone > self.record_limit - key_bytes  # too big to aggregate
            fresh = plain or pack is None or pack.size() + cost > pack.limit
            grows = cost if not fresh else alone + key_bytes
            empty = not call and not packs
            if not empty and (
                (fresh and len(call) + len(packs) >= max_entries)
                or size + sum(p.entry_size() for p in packs.values()) + grows > max_bytes
            ):
                self._schedule(lane)  # not taken: it leads the next call
                break
            lane.queue.popleft()
            if lane.busy():
                self._waiting.add(name)  # its next record waits for this one's answer
            if plain:
                entry = _Entry.plain(user, None)
                call.append(entry)
                size += entry.size
                continue
            if pack is None or fresh:
                if pack is not None:
                    entry = pack.entry()
                    call.append(entry)
                    size += entry.size
                pack = packs[user.shard] = _Pack(new(user), key_bytes)
            pack.add(user)
        call += [p.entry() for p in packs.values()]
        return call

    def succeeded(self, entry: _Entry, sequence_number: str, shard_id: str) -> None:
        for sub, user in enumerate(entry.users):
            sub_sequence = sub if entry.aggregated else 0
            self._resolve(
                user, entry, sequence_number=sequence_number, sub=sub_sequence, shard_id=shard_id
            )

    def retry(self, entry: _Entry) -> None:
        # entries of a call are reported in call order, oldest first: keep that order
        ready = self.retries if entry.lane is None else self.lanes[entry.lane].ready
        at = 0
        first = entry.users[0].index
        while at < len(ready) and ready[at].users[0].index < first:
            at += 1
        ready.insert(at, entry)

    def failed(self, entry: _Entry, error: str, reason: str, permanent: bool) -> None:
        for user in entry.users:
            self._fail(user, entry, error, reason, permanent)

    def fail_all(self, error: str, reason: str, permanent: bool) -> None:
        """Fail everything not yet sent: an error that every later call would hit too."""
        while self.retries:
            self.failed(self.retries.popleft(), error, reason, permanent)
        for lane in self.lanes.values():
            while lane.ready:
                self.failed(lane.ready.popleft(), error, reason, permanent)
            while lane.queue:
                self._fail(lane.queue.popleft(), None, error, reason, permanent)

    def _fail(
        self, user: _User, entry: _Entry | None, error: str, reason: str, permanent: bool
    ) -> None:
        if self.ordered:
            self.blocked.setdefault(user.key, f"record {user.index} failed with {error}")
        self._resolve(user, entry, error=error, reason=reason, permanent=permanent)

    def settled(self, call: Sequence[_Entry]) -> None:
        """After a call's entries are reported: lanes that waited may go on."""
        names = self._waiting | {user.lane for entry in call for user in entry.users}
        self._waiting = set()
        for name in names:
            self._schedule(self.lanes[name])

    def _schedule(self, lane: _Lane) -> None:
        if not lane.scheduled and lane.busy():
            lane.scheduled = True
            heappush(self._heap, (lane.head(), lane.name))

    def _head(self, lane: _Lane) -> _User | None:
        """The lane's next record if it may be sent now (ordered); blocked ones are held."""
        queue = lane.queue
        while queue and queue[0].key in self.blocked:
            self._hold(queue.popleft())
        if not queue or not self._eligible(queue[0]):
            return None
        return queue[0]

    def _next_entry(self, lane: _Lane) -> _Entry | None:
        if lane.ready:
            return lane.ready.popleft()
        if self.pack is not None:
            return self._aggregate(lane, self.pack)
        if not self.ordered:
            return _Entry.plain(lane.queue.popleft(), lane.name) if lane.queue else None
        user = self._head(lane)
        return None if user is None else _Entry.plain(lane.queue.popleft(), lane.name)

    def _aggregate(self, lane: _Lane, pack: Callable[[_User], Any]) -> _Entry | None:
        """Pack the lane's next records, in order, into one aggregate (an ``AggRecord``);
        unordered aggregation only."""
        queue = lane.queue
        users: list[_User] = []
        record: Any = None
        while queue:
            user = queue[0]
            if record is None:
                record = pack(user)
            try:  # keys as bytes: AggRecord sizes str keys as new on every record
                ehk = user.ehk.encode() if user.ehk is not None else None
                fits = record.add_user_record(user.key.encode(), user.data, ehk)
            except ValueError:  # alone it is over the aggregate's limit
                fits = False
            if not fits:
                break
            users.append(queue.popleft())
        if not users:
            if record is None:
                return None
            # under the record limit, but too big to aggregate: send it plain
            return _Entry.plain(queue.popleft(), lane.name)
        if len(users) == 1:
            return _Entry.plain(users[0], lane.name)
        _, _, data = record.get_contents()
        return _Entry(users[0].key, data, str(users[0].route), users, lane.name)

    def _eligible(self, user: _User) -> bool:
        """Every earlier record of its key has been answered (succeeded)."""
        return self.unresolved[user.key][0] == user.index

    def _hold(self, user: _User) -> None:
        self._resolve(
            user,
            None,
            error=_HELD_BACK,
            reason=(
                f"not sent: {self.blocked[user.key]} earlier in partition key "
                f"{user.key!r}, and ordered=True holds back the later records of its key; "
                "put them again after it"
            ),
        )

    def _resolve(
        self,
        user: _User,
        entry: _Entry | None,
        *,
        sequence_number: str = "",
        sub: int = 0,
        shard_id: str = "",
        error: str = "",
        reason: str = "",
        permanent: bool = False,
    ) -> None:
        if self.ordered:
            pending = self.unresolved[user.key]
            if pending[0] == user.index:
                pending.popleft()
            else:  # a key routed to several shards by explicit hash keys
                pending.remove(user.index)
        self.results.append(
            RecordResult(
                user.index,
                user.key,
                user.data,
                user.ehk,
                sequence_number,
                sub,
                shard_id,
                error,
                reason,
                permanent,
                entry.attempts if entry else 0,
                user.rid,
            )
        )


#: An aggregate's bytes besides its user records: the magic number and the MD5 digest.
_AGG_FRAME = 4 + 16


def _packed_cost(user: _User, key_bytes: int) -> int:
    """At most what adding ``user`` adds to an aggregate: its data, its partition key and
    explicit hash key (if new to the aggregate's tables), and at most 36 bytes of protobuf
    tags and varints (six of each, varints of at most 5 bytes)."""
    ehk = len(user.ehk) if user.ehk is not None else 0
    return len(user.data) + key_bytes + ehk + 36


class _Pack:
    """An aggregate being filled for one shard in one call (ordered aggregation)."""

    __slots__ = ("key_bytes", "limit", "record", "users")

    def __init__(self, record: Any, key_bytes: int) -> None:
        self.record = record  # an empty AggRecord sized for its first user record's key
        self.limit: int = record.max_size
        self.key_bytes = key_bytes  # the first user record's key is the aggregate's
        self.users: list[_User] = []

    def size(self) -> int:
        return int(self.record.get_size_bytes())

    def entry_size(self) -> int:
        return self.size() + self.key_bytes

    def add(self, user: _User) -> None:
        ehk = user.ehk.encode() if user.ehk is not None else None
        if not self.record.add_user_record(user.key.encode(), user.data, ehk):
            msg = f"record {user.index} did not fit the aggregate it was sized for: a bug"
            raise RuntimeError(msg)
        self.users.append(user)

    def entry(self) -> _Entry:
        users = self.users
        if len(users) == 1:
            return _Entry.plain(users[0], None)
        _, _, data = self.record.get_contents()
        return _Entry(users[0].key, data, str(users[0].route), users, None)


class Producer:
    """Puts records into a Kinesis stream in PutRecords calls; see the module docstring.

    Records are buffered by ``put()`` and sent by ``flush()``, or earlier when the buffer
    holds ``buffer_records`` records or ``buffer_bytes`` bytes; ``flush()`` returns the fate
    of every record put since the last flush. As a context manager it flushes on exit and
    raises :class:`UndeliveredRecordsError` if records finally failed.

    Args:
        stream: the stream name, or its ARN.
        client: a boto3 Kinesis client; by default one is created on first use.
        aggregate: pack user records into KPL aggregates, per shard.
        ordered: keep per-key order (see the module docstring for what it costs).
        max_attempts: times an entry is sent before it is returned failed.
        base_delay: first backoff bound in seconds; doubles per attempt, full jitter.
        max_delay: the backoff bound's cap in seconds.
        max_record_bytes: the stream's maximum record size (1 MiB unless the stream was
            raised with UpdateMaxRecordSize), data plus partition key.
        max_request_bytes: bytes per call, partition keys included; by default 5 MiB, or the
            maximum record size if larger.
        max_call_records: entries per call (at most 500).
        buffer_records: buffered records that trigger sending from ``put()``.
        buffer_bytes: buffered bytes that trigger sending from ``put()``.
        record_id: a top-level JSON field that carries each record's producer record id,
            stable across resends, so that consumers can drop the copies a lost answer
            leaves in the stream (see the module docstring). Off by default: the data is
            sent as put.
        producer_id: the prefix of the ids this producer makes, ``f"{producer_id}-{index}"``;
            by default 16 random hex digits, so that two producers never make the same id.
            Give a stable one to let a producer that restarts put the same ids again.
        schema: a contract each record must follow before it is queued: a
            :class:`processors.schema.Schema` or the path of a ``.json`` or ``.avsc`` file
            (see the module docstring); an Avro contract sends Avro binary.
        sleep: injectable for tests.
    """

    def __init__(
        self,
        stream: str,
        client: Any = None,
        *,
        aggregate: bool = False,
        ordered: bool = True,
        max_attempts: int = 6,
        base_delay: float = 0.1,
        max_delay: float = 2.0,
        max_record_bytes: int = MAX_RECORD_BYTES,
        max_request_bytes: int | None = None,
        max_call_records: int = MAX_RECORDS_PER_CALL,
        buffer_records: int = 10_000,
        buffer_bytes: int = 32 * 1024 * 1024,
        record_id: str | None = None,
        producer_id: str | None = None,
        schema: Schema | str | PathLike[str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if record_id is not None and (not isinstance(record_id, str) or not record_id):
            msg = f"producer for stream {stream!r}: record_id must name a JSON field"
            raise ValueError(msg)
        request_bytes = max_request_bytes or max(MAX_REQUEST_BYTES, max_record_bytes)
        if max_attempts < 1 or max_record_bytes < 1 or base_delay < 0 or max_delay < 0:
            msg = (
                f"producer for stream {stream!r}: max_attempts and max_record_bytes must be "
                "at least 1 and delays not negative"
            )
            raise ValueError(msg)
        if request_bytes < max_record_bytes or not 1 <= max_call_records <= 500:
            msg = (
                f"producer for stream {stream!r}: max_request_bytes ({request_bytes}) must "
                f"hold one record of max_record_bytes ({max_record_bytes}), and "
                f"max_call_records ({max_call_records}) must be 1 to 500"
            )
            raise ValueError(msg)
        self.stream = stream
        self.aggregate = aggregate
        self.ordered = ordered
        self.record_id = record_id
        self.producer_id = producer_id or os.urandom(8).hex()
        """Prefix of the record ids this producer makes: 64 random bits unless given."""
        self._client = client
        self._target = {"StreamARN" if stream.startswith("arn:") else "StreamName": stream}
        self._max_attempts = max_attempts
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._max_record = max_record_bytes
        self._max_request = request_bytes
        self._max_entries = max_call_records
        self._buffer_records = buffer_records
        self._buffer_bytes = buffer_bytes
        self._sleep = sleep
        self._next_index = 0
        self._buffer: list[_User] = []
        self._buffered = 0
        self._results: list[RecordResult] = []
        self._stats = ProducerStats()
        self._blocked: dict[str, str] = {}
        self._shards: ShardMap | None = None
        self.totals = ProducerStats()
        """Counters over every flush so far."""
        self.schema: Schema | None = None
        """The contract records are checked against (``None``: none)."""
        if schema is not None:
            from processors.schema import Schema  # noqa: PLC0415  # only with a contract

            self.schema = schema if isinstance(schema, Schema) else Schema.from_file(schema)

    client = lazy_client("kinesis")
    """The Kinesis client, created on first use (boto3 is imported only then)."""

    @property
    def pending(self) -> int:
        """Records put and not yet sent."""
        return len(self._buffer)

    def put(self, data: Any, partition_key: str, explicit_hash_key: str | int | None = None) -> int:
        """Buffer one record; return its index, which its :class:`RecordResult` carries.

        Args:
            data: bytes, a str (sent as UTF-8), or anything else orjson can encode (sent as
                its JSON).
            partition_key: 1 to 256 characters; decides the shard and the ordering group.
            explicit_hash_key: a decimal integer below 2**128 that decides the shard instead.

        With ``record_id`` set, the data must be a JSON object (a dict, or bytes or str of
        one): an id already in the field is kept, else ``f"{producer_id}-{index}"`` is
        added (bytes are kept as they are, the field inserted first).

        Raises:
            RecordTooLargeError: data plus partition key over the maximum record size.
            InvalidRecordError: data that cannot be encoded, a bad partition or hash key, or
                with ``record_id``: data that is not a JSON object, or an id that is not a
                non-empty string or an integer.
        """
        index = self._next_index
        self._next_index += 1
        if not isinstance(partition_key, str) or not 1 <= len(partition_key) <= _MAX_KEY_CHARS:
            msg = (
                f"{self._where(index, partition_key)}: a partition key is a string of 1 to "
                f"{_MAX_KEY_CHARS} characters"
            )
            raise InvalidRecordError(msg, index=index, partition_key=partition_key)
        rid = ""
        if self.record_id is None:
            payload = _encode(data, self, index, partition_key)
        else:
            payload, rid = self._stamp(data, index, partition_key)
        ehk = None
        if explicit_hash_key is not None:
            ehk = _explicit_hash_key(explicit_hash_key, self, index, partition_key)
        if self.schema is not None:
            try:
                payload = self._contract(self.schema, data, payload)
            except RecordError as exc:  # refused: returned failed by flush(), never sent
                self._stats.records += 1
                self._stats.bytes += len(payload)
                reason = f"{self._where(index, partition_key)}: {exc}"
                self._results.append(
                    RecordResult(
                        index, partition_key, payload, ehk, error=CONTRACT_ERROR, reason=reason,
                        permanent=True, record_id=rid,
                    )
                )  # fmt: skip
                return index
        size = len(payload) + len(partition_key.encode())
        if size > self._max_record:
            msg = (
                f"{self._where(index, partition_key)} is {size} bytes with its partition key, "
                f"over the maximum record size of {self._max_record} bytes; nothing was sent. "
                "Split or compress it, or store the payload in S3 and send a pointer (or pass "
                "max_record_bytes if the stream's limit was raised)"
            )
            raise RecordTooLargeError(
                msg, index=index, partition_key=partition_key, size=size, limit=self._max_record
            )
        route = 0
        if self.aggregate:
            route = int(ehk) if ehk is not None else hash_key(partition_key)
        self._buffer.append(_User(index, partition_key, payload, ehk, route, rid))
        self._buffered += size
        if len(self._buffer) >= self._buffer_records or self._buffered >= self._buffer_bytes:
            self._drain()
        return index

    def _contract(self, schema: Schema, data: Any, payload: bytes) -> bytes:
        """The bytes to send: the record as put, or its Avro binary (see :meth:`put`).

        Raises:
            ContractError: the record is not JSON, or does not follow the contract.
        """
        from processors.schema import ContractError  # noqa: PLC0415  # loaded by __init__

        try:
            doc = data if type(data) is dict and self.record_id is None else orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            msg = f"record is not JSON, so it cannot follow {schema.source} ({exc})"
            raise ContractError(msg) from None
        if schema.kind == "avro":
            return schema.encode(doc)
        if not schema.is_valid(doc):
            raise schema.failure(doc)
        return payload

    def _where(self, index: int, partition_key: object) -> str:
        return f"record {index} (partition key {partition_key!r}) for stream {self.stream!r}"

    def _stamp(self, data: Any, index: int, partition_key: str) -> tuple[bytes, str]:
        """The record's bytes with its record id, and the id (see :meth:`put`)."""
        name = self.record_id
        if type(data) is dict:
            doc: Any = data
            payload = b""
        else:
            payload = _encode(data, self, index, partition_key)
            try:
                doc = orjson.loads(payload)
            except orjson.JSONDecodeError:
                doc = _UNSET
        if type(doc) is not dict:
            what = "not JSON" if doc is _UNSET else f"JSON {type(doc).__name__}"
            msg = (
                f"{self._where(index, partition_key)}: record_id={name!r} needs a JSON object "
                f"to carry the id, and this record is {what}; put a JSON object, or make the "
                "producer without record_id"
            )
            raise InvalidRecordError(msg, index=index, partition_key=partition_key)
        value = doc.get(name, _UNSET)
        if value is _UNSET:
            rid = f"{self.producer_id}-{index}"
            if payload:  # insert the field first: the caller's bytes stay as they are
                start = payload.index(b"{") + 1
                field = orjson.dumps(name) + b":" + orjson.dumps(rid) + (b"," if doc else b"")
                return payload[:start] + field + payload[start:], rid
            return _encode({name: rid, **doc}, self, index, partition_key), rid
        if (isinstance(value, str) and value) or (type(value) is int):
            return payload or _encode(doc, self, index, partition_key), str(value)
        msg = (
            f"{self._where(index, partition_key)}: field {name!r} holds {value!r}, not a "
            "record id (a non-empty string or an integer); fix the field, or leave it out "
            "and the producer adds one"
        )
        raise InvalidRecordError(msg, index=index, partition_key=partition_key)

    def flush(self) -> FlushResult:
        """Send everything buffered; return the fate of every record put since the last flush.

        Nothing is dropped: a record is either written (sequence number, shard) or returned
        with its error. Keys held back by a failure are released afterwards.
        """
        try:
            self._drain()
            results = sorted(self._results, key=lambda r: r.index)
            stats = self._stats
            stats.failures = sum(1 for r in results if r.error)
        finally:
            self._results = []
            self._stats = ProducerStats()
            self._blocked.clear()
        self.totals.add(stats)
        return FlushResult(results, stats)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        result = self.flush()
        if not result.failed:
            return
        error = UndeliveredRecordsError(result)
        if exc is None:
            raise error
        exc.add_note(str(error))  # do not hide the error that ended the block

    def _drain(self) -> None:
        users, self._buffer, self._buffered = self._buffer, [], 0
        if not users:
            return
        self._stats.records += len(users)
        self._stats.bytes += sum(len(u.data) for u in users)
        pack: Callable[[_User], Any] | None = None
        shard_of: Callable[[_User], str] | None = None
        if self.aggregate:
            try:
                shards = self._shard_map()
            except _NoShardMap as missing:
                schedule = _CallSchedule(
                    users, _one_lane, ordered=self.ordered, blocked=self._blocked, pack=None
                )
                failure = missing.failure
                schedule.fail_all(failure.error, failure.reason, permanent=not failure.retried)
                self._results += schedule.results
                return

            def shard_of(user: _User) -> str:
                return shards.shard_for(user.route)

            pack = self._new_aggregate
        lane_of = _by_key if self.ordered else shard_of or _one_lane
        schedule = _CallSchedule(
            users,
            lane_of,
            ordered=self.ordered,
            blocked=self._blocked,
            pack=pack,
            shard_of=shard_of,
            record_limit=self._max_record,
        )
        while not schedule.done:
            call = schedule.next_call(self._max_entries, self._max_request)
            if not call:
                if schedule.done:  # the last records were held back while planning
                    break
                msg = f"producer for stream {self.stream!r} planned an empty call: a bug"
                raise RuntimeError(msg)
            self._send(call, schedule)
            schedule.settled(call)
        self._results += schedule.results

    def _send(self, call: list[_Entry], schedule: _CallSchedule) -> None:
        again = max(entry.attempts for entry in call)
        if again:
            self._sleep(self._backoff(again))
            self._stats.retries += sum(1 for entry in call if entry.attempts)
        for entry in call:
            entry.attempts += 1
        self._stats.calls += 1
        try:
            response = self.client.put_records(
                Records=[entry.request() for entry in call], **self._target
            )
        except Exception as exc:  # classified below; nothing escapes unreported
            failure = _classify(exc, self.stream)
            error, reason = failure.error, failure.reason
            for entry in call:
                if failure.retried:
                    self._retry_or_fail(schedule, entry, error, reason)
                else:
                    schedule.failed(entry, error, reason, permanent=True)
            if failure.scope is _Scope.STREAM:
                schedule.fail_all(error, reason, permanent=True)
            elif failure.scope is _Scope.DOWN and any(
                e.attempts >= self._max_attempts for e in call
            ):
                # every later call would wait for the same timeouts: return the rest now
                reason = f"not sent: an earlier call failed {self._max_attempts} times ({reason})"
                schedule.fail_all(_HELD_BACK, reason, permanent=False)
            return
        answers = response.get("Records") or []
        if len(answers) != len(call):
            answers = [{"ErrorCode": "InternalFailure", "ErrorMessage": "malformed response"}]
            answers *= len(call)
        for entry, answer in zip(call, answers, strict=True):
            sequence_number = answer.get("SequenceNumber")
            if sequence_number and not answer.get("ErrorCode"):
                shard_id = answer.get("ShardId", "")
                schedule.succeeded(entry, sequence_number, shard_id)
                self._stats.kinesis_records += 1
                if self._shards is not None and shard_id != entry.shard:
                    self._shards = None  # resharded since ListShards: list again next time
                continue
            code = answer.get("ErrorCode") or "InternalFailure"
            reason = f"Kinesis {code} on stream {self.stream!r}: {answer.get('ErrorMessage', '')}"
            if code in _PERMANENT_ENTRY_CODES:
                schedule.failed(entry, code, reason, permanent=True)
            else:
                self._retry_or_fail(schedule, entry, code, reason)

    def _retry_or_fail(
        self, schedule: _CallSchedule, entry: _Entry, error: str, reason: str
    ) -> None:
        if entry.attempts < self._max_attempts:
            schedule.retry(entry)
        else:
            reason = f"{reason} (still failing after {entry.attempts} attempts)"
            schedule.failed(entry, error, reason, permanent=False)

    def _backoff(self, attempts: int) -> float:
        """Full jitter: uniform in [0, min(max_delay, base_delay * 2**(attempts - 1))]."""
        return backoff_delay(attempts - 1, self._base_delay, self._max_delay)

    def _shard_map(self) -> ShardMap:
        """The cached shard map, or ListShards with retries.

        Raises:
            _NoShardMap: ListShards kept failing, or failed in a way no retry fixes; its
                failure is that of every pending record.
        """
        if self._shards is not None:
            return self._shards
        failure: _CallFailure | None = None
        for attempt in range(self._max_attempts):
            if attempt:
                self._sleep(self._backoff(attempt))
            try:
                self._shards = ShardMap.from_list_shards(self._list_shards())
            except Exception as exc:  # classified: retried, or every record fails with it
                failure = _classify(exc, self.stream, "ListShards")
                if not failure.retried:
                    raise _NoShardMap(failure) from None
                continue
            return self._shards
        last = failure or _CallFailure("", "", _Scope.RETRY)
        reason = f"{last.reason} (still failing after {self._max_attempts} attempts)"
        raise _NoShardMap(_CallFailure(last.error, reason, _Scope.RETRY))

    def _list_shards(self) -> list[dict[str, Any]]:
        shards: list[dict[str, Any]] = []
        page = self.client.list_shards(**self._target)
        shards += page.get("Shards", [])
        while page.get("NextToken"):
            page = self.client.list_shards(NextToken=page["NextToken"])
            shards += page.get("Shards", [])
        return shards

    def _new_aggregate(self, first: _User) -> Any:
        """An empty aggregate that, with ``first``'s partition key, fits one record."""
        return _agg_record_type()(self._max_record - len(first.key.encode()))


def _by_key(user: _User) -> str:
    return user.key


def _one_lane(user: _User) -> str:
    return ""


def _encode(data: Any, producer: Producer, index: int, partition_key: str) -> bytes:
    if type(data) is bytes:
        return data
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    try:
        encoded: bytes = orjson.dumps(data)
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        where = producer._where(index, partition_key)
        msg = f"{where}: data must be bytes, str or JSON-serialisable by orjson ({exc})"
        raise InvalidRecordError(msg, index=index, partition_key=partition_key) from None
    return encoded


def _explicit_hash_key(value: str | int, producer: Producer, index: int, key: str) -> str:
    text = str(value)
    if (
        isinstance(value, bool)
        or not text.isascii()
        or not text.isdigit()
        or (len(text) > 1 and text[0] == "0")
        or int(text) >= _HASH_SPACE
    ):
        where = producer._where(index, key)
        msg = f"{where}: explicit hash key {value!r} is not a decimal integer from 0 to 2**128-1"
        raise InvalidRecordError(msg, index=index, partition_key=key)
    return text


def _classify(exc: Exception, stream: str, operation: str = "PutRecords") -> _CallFailure:
    """The error code, the reason, and how far a failed call's error reaches."""
    failure = classify(exc, "kinesis")
    name = failure.code
    if failure.answered:
        code = failure.code or "ClientError"
        reason = f"Kinesis {operation} {code} on stream {stream!r}: {failure.message}"
        if failure.kind is Kind.RETRYABLE:
            return _CallFailure(code, reason, _Scope.RETRY)
        if code == "ResourceNotFoundException":
            reason += " (create the stream or fix its name)"
        scope = _Scope.STREAM if failure.kind is Kind.INFRASTRUCTURE else _Scope.CALL
        return _CallFailure(code, reason, scope)
    if failure.kind is Kind.INVALID:
        reason = f"Kinesis {operation} to stream {stream!r} is invalid: {exc}"
        return _CallFailure(name, reason, _Scope.CALL)
    if failure.kind is Kind.NO_ANSWER:  # sent, never answered
        reason = (
            f"Kinesis {operation} to stream {stream!r} got no answer ({exc}); Kinesis may "
            "have applied it, so these records may be in the stream already (with record_id "
            "consumers can drop the copies)"
        )
        return _CallFailure(name, reason, _Scope.DOWN)
    if failure.kind is not Kind.OTHER:  # unreachable, no credentials...
        reason = f"Kinesis unreachable for stream {stream!r} ({operation}): {exc}"
        return _CallFailure(name, reason, _Scope.DOWN)
    reason = f"Kinesis {operation} to stream {stream!r} raised {name}: {exc}"
    return _CallFailure(name, reason, _Scope.RETRY)


def _agg_record_type() -> Any:
    """``aws_kinesis_agg.aggregator.AggRecord``, imported without its ``sys.path`` change.

    The library's modules insert their folder at the front of ``sys.path`` for the whole
    process; ``stream.kpl`` registers the protobuf module they need instead, and the path is
    put back as it was.
    """
    name = "aws_kinesis_agg.aggregator"
    module = sys.modules.get(name)
    if module is None:
        from stream.kpl import aggregated_record_type  # noqa: PLC0415  # protobuf on demand

        aggregated_record_type()
        saved = list(sys.path)
        try:
            module = importlib.import_module(name)
        finally:
            sys.path[:] = saved
    return module.AggRecord
