"""Checkpoints and leases of the local event source mapping (ESM), in one DynamoDB table per
application, with the KCL's attribute names so that the table reads like a KCL lease table.

One item per shard::

    leaseKey                      S   the shard id (hash key)
    checkpoint                    S   a sequence number, or TRIM_HORIZON | LATEST | AT_TIMESTAMP
                                      (not read yet) or SHARD_END (read to its end)
    checkpointSubSequenceNumber   N   the user record inside a KPL aggregate
    leaseOwner                    S   the worker holding the lease; absent when nobody does
    leaseCounter                  N   bumped by every write: a worker can tell its lease moved
    ownerSwitchesSinceCheckpoint  N
    parentShardId                 SS  the shard's parent(s), after a split or merge

**A checkpoint means "after".** The stored checkpoint is the last record *fully processed*,
in extended sequence numbers (sequence number, sub-sequence number):

* ``checkpointSubSequenceNumber`` 0: the whole Kinesis record is done (a KPL aggregate
  included: the ESM delivers whole Kinesis records, as Lambda does); the reader resumes with
  ``AFTER_SEQUENCE_NUMBER``.
* ``checkpointSubSequenceNumber`` n > 0: a KPL aggregate checkpointed part-way, through its
  user record n; the reader asks for ``AT_SEQUENCE_NUMBER`` and skips that record's user
  records whose sub-sequence number is at most n. (Part-way after only user record 0 cannot
  be told from "whole record done": checkpoint the previous record instead.)
* ``TRIM_HORIZON``, ``LATEST``, ``AT_TIMESTAMP``: nothing processed yet, start there.

:meth:`Lease.iterator_request` turns a lease into those GetShardIterator arguments and
:attr:`Lease.skip_through` gives n.

**Coordination** (the KCL's lease taker and renewer, in one call): each worker calls
:meth:`LeaseTable.take` every :attr:`LeaseTable.renew_interval_s`. A round renews the leases
the worker holds (conditional on the counter it knows: a lost lease fails the condition and is
dropped), reads the table, and takes unowned or expired leases, or, when none are free and
the worker holds fewer than its fair share, steals from the busiest worker
(:func:`decide_leases`). A lease is *expired* when its counter has not changed for
``lease_duration_s`` as seen by this worker's own monotonic clock (:class:`ExpiryTracker`),
so no two machines' clocks are ever compared. Every write is conditional on the counter
observed, so of two workers racing for one lease exactly one wins.

**Resharding.** :meth:`LeaseTable.sync_shards` creates the children's leases with their
parents, but a lease is not taken until all its parents are at ``SHARD_END``
(:meth:`LeaseTable.finish`); a parent missing from the table (past retention) counts as
finished. Per-key order therefore holds across a split or merge.

**Lost answers.** DynamoDB calls are retried on throttles, 5xx and connection errors. When a
retried write fails its condition because its first attempt was applied after all (the answer
was lost), the item shows this very write, and that counts as success, not as a lost lease.
When the retries run out instead (a lost answer, then throttles), the write is remembered as
unsure; the next write to that lease that fails its condition on an item showing it goes on
from there (a checkpoint never moves back, the lease is not dropped and taken back, which
would deliver the shard's records again).

**Restart.** A worker that finds leases in its own name that it does not hold (it was
restarted with the same ``worker_id``) takes them back at once; any other worker waits for
them to expire. Worker ids must therefore be unique among the processes running at once.

Differences from the KCL, and why: children's leases are created with their parents (one
sync creates the whole tree) and wait for them, so leases waiting for parents count for
nobody's fair share; a finished lease (``SHARD_END``) keeps no owner and is never deleted
here. One Scan per round reads the whole table, which suits the tens of shards of one stream.

Only the lease owner writes a checkpoint: :meth:`LeaseTable.checkpoint` is conditional on
the owner and the counter, and raises :class:`LeaseLost` (without writing) otherwise.
boto3 is imported when the first client is made, not when this module is.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from stream.aws import Kind, backoff_delay, classify, lazy_client
from stream.exceptions import ShardlineError

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
    from datetime import datetime

__all__ = [
    "AT_TIMESTAMP",
    "INITIAL_POSITIONS",
    "LATEST",
    "SHARD_END",
    "TRIM_HORIZON",
    "ExpiryTracker",
    "Lease",
    "LeaseDecision",
    "LeaseLost",
    "LeaseTable",
    "LeaseTableError",
    "ShardInfo",
    "decide_leases",
    "leases_to_create",
    "shards_from_list_shards",
]

log = logging.getLogger(__name__)

TRIM_HORIZON = "TRIM_HORIZON"
LATEST = "LATEST"
AT_TIMESTAMP = "AT_TIMESTAMP"
SHARD_END = "SHARD_END"
INITIAL_POSITIONS = frozenset({TRIM_HORIZON, LATEST, AT_TIMESTAMP})

# KCL attribute names, and the placeholders the expressions below use for them.
_NAMES = {
    "#key": "leaseKey",
    "#cp": "checkpoint",
    "#sub": "checkpointSubSequenceNumber",
    "#owner": "leaseOwner",
    "#counter": "leaseCounter",
    "#switches": "ownerSwitchesSinceCheckpoint",
    "#parents": "parentShardId",
}
_OWNED_AT = "#owner = :me AND #counter = :known"


class LeaseLost(ShardlineError):
    """This worker no longer holds the lease: another worker took it (or it was released or
    finished). Stop reading the shard; its new owner resumes after the last checkpoint.

    Attributes:
        shard_id: the lease's shard.
        worker_id: this worker.
        owner: the lease's owner now, when the table said so.
    """

    def __init__(self, table: str, shard_id: str, worker_id: str, owner: str | None) -> None:
        self.shard_id = shard_id
        self.worker_id = worker_id
        self.owner = owner
        now = f"now held by {owner!r}" if owner else "not held by it any more"
        super().__init__(
            f"lease table {table!r}: the lease on {shard_id!r} is {now}, not by worker "
            f"{worker_id!r}; stop processing the shard (its owner resumes after the last "
            "checkpoint) and call take() again to get leases"
        )


class LeaseTableError(ShardlineError):
    """The lease table cannot be used: missing, wrong key schema, or DynamoDB still failing
    (throttled, unreachable) after the retries.

    Attributes:
        table: the table name.
        code: DynamoDB's error code, or the botocore exception's name.
        ambiguous: a write whose attempts included one that may have been applied (a 5xx,
            a lost connection): the item may show it although the call failed.
    """

    def __init__(self, message: str, table: str, code: str, *, ambiguous: bool = False) -> None:
        super().__init__(message)
        self.table = table
        self.code = code
        self.ambiguous = ambiguous


class _ConditionFailed(Exception):
    """A conditional write lost: the item changed first (internal). ``ambiguous``: an
    earlier attempt of the same call may have been applied (5xx, connection lost), so the
    change may be this worker's own; ``item`` is the item as it is now, when returned."""

    def __init__(self, item: Mapping[str, Any] | None, ambiguous: bool) -> None:
        super().__init__("condition failed")
        self.item = item
        self.ambiguous = ambiguous


@dataclass(frozen=True, slots=True)
class Lease:
    """One shard's lease as stored, at the moment it was read or written.

    Attributes:
        shard_id: ``leaseKey``.
        checkpoint: the last sequence number fully processed (resume *after* it), or
            ``TRIM_HORIZON`` / ``LATEST`` / ``AT_TIMESTAMP`` (start there), or ``SHARD_END``.
        sub_sequence_number: ``checkpointSubSequenceNumber``: the last user record processed
            inside the KPL aggregate at ``checkpoint``.
        owner: ``leaseOwner``, None when nobody holds the lease.
        counter: ``leaseCounter``.
        parent_shard_ids: ``parentShardId``: this shard is read after they are finished.
        owner_switches: ``ownerSwitchesSinceCheckpoint``.
    """

    shard_id: str
    checkpoint: str
    sub_sequence_number: int = 0
    owner: str | None = None
    counter: int = 0
    parent_shard_ids: tuple[str, ...] = ()
    owner_switches: int = 0

    @property
    def finished(self) -> bool:
        """The shard was read to its end (checkpoint ``SHARD_END``)."""
        return self.checkpoint == SHARD_END

    @property
    def sequence_number(self) -> str | None:
        """The checkpoint when it is a sequence number, else None (a sentinel).

        >>> Lease("shardId-0", "4959").sequence_number, Lease("shardId-0", LATEST).sequence_number
        ('4959', None)
        """
        return self.checkpoint if _is_sequence_number(self.checkpoint) else None

    @property
    def skip_through(self) -> int | None:
        """For a KPL aggregate checkpointed part-way: skip the user records of the record at
        ``checkpoint`` whose sub-sequence number is at most this. None otherwise."""
        if self.sub_sequence_number > 0 and self.sequence_number is not None:
            return self.sub_sequence_number
        return None

    def iterator_request(self, timestamp: float | datetime | None = None) -> dict[str, Any]:
        """GetShardIterator's arguments (besides the stream) that resume after the checkpoint.

        >>> request = Lease("shardId-0", "4959").iterator_request()
        >>> request["ShardIteratorType"], request["StartingSequenceNumber"]
        ('AFTER_SEQUENCE_NUMBER', '4959')
        >>> Lease("shardId-0", "4959", 3).iterator_request()["ShardIteratorType"]
        'AT_SEQUENCE_NUMBER'

        Args:
            timestamp: the function's starting timestamp, for ``AT_TIMESTAMP``.

        Raises:
            ValueError: the shard is finished, or ``AT_TIMESTAMP`` without a timestamp.
        """
        request: dict[str, Any] = {"ShardId": self.shard_id}
        if self.sequence_number is not None:
            kind = "AT_SEQUENCE_NUMBER" if self.skip_through else "AFTER_SEQUENCE_NUMBER"
            request.update(ShardIteratorType=kind, StartingSequenceNumber=self.sequence_number)
        elif self.checkpoint in (TRIM_HORIZON, LATEST):
            request["ShardIteratorType"] = self.checkpoint
        elif self.checkpoint == AT_TIMESTAMP and timestamp is not None:
            request.update(ShardIteratorType=AT_TIMESTAMP, Timestamp=timestamp)
        else:
            msg = (
                f"lease on {self.shard_id!r} at {self.checkpoint!r} has no iterator: a finished "
                "shard is not read again, and AT_TIMESTAMP needs the function's timestamp"
            )
            raise ValueError(msg)
        return request

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> Lease:
        """A lease from a DynamoDB item (low-level attribute values); other KCL attributes
        (``pendingCheckpoint``, hash keys, ...) are ignored.

        Raises:
            ValueError: the item has no ``leaseKey`` or ``checkpoint`` string.
        """
        key = item.get("leaseKey", {}).get("S")
        checkpoint = item.get("checkpoint", {}).get("S")
        if not key or not checkpoint:
            msg = (
                f"lease item {dict(item)!r} has no 'leaseKey' or 'checkpoint' string: the "
                "table is not a lease table; give the ESM a table of its own"
            )
            raise ValueError(msg)
        parents = item.get("parentShardId", {})
        return cls(
            shard_id=key,
            checkpoint=checkpoint,
            sub_sequence_number=_number(item, "checkpointSubSequenceNumber"),
            owner=item.get("leaseOwner", {}).get("S") or None,
            counter=_number(item, "leaseCounter"),
            parent_shard_ids=tuple(sorted(parents.get("SS") or filter(None, [parents.get("S")]))),
            owner_switches=_number(item, "ownerSwitchesSinceCheckpoint"),
        )


def _number(item: Mapping[str, Any], name: str) -> int:
    value = item.get(name, {}).get("N")
    return int(value) if value is not None else 0


def _is_sequence_number(value: str) -> bool:
    return value.isascii() and value.isdigit()


@dataclass(frozen=True, slots=True)
class ShardInfo:
    """A shard as ListShards describes it: enough to create its lease and order it after its
    parents.

    Attributes:
        shard_id: the shard id.
        parent_shard_id: the shard it was split from (or one of the two merged), if any.
        adjacent_parent_shard_id: the other shard of a merge, if any.
        starting_hash_key: first hash key of its range.
        ending_hash_key: last hash key of its range.
        starting_sequence_number: its first sequence number, when listed.
        ending_sequence_number: its last sequence number; None while the shard is open.
    """

    shard_id: str
    parent_shard_id: str | None = None
    adjacent_parent_shard_id: str | None = None
    starting_hash_key: int = 0
    ending_hash_key: int = 2**128 - 1
    starting_sequence_number: str | None = None
    ending_sequence_number: str | None = None

    @property
    def parents(self) -> tuple[str, ...]:
        """The parent shard ids (none, one after a split, two after a merge)."""
        return tuple(p for p in (self.parent_shard_id, self.adjacent_parent_shard_id) if p)

    @property
    def closed(self) -> bool:
        """The shard has an end: it was split or merged, and gets no new records."""
        return self.ending_sequence_number is not None


def shards_from_list_shards(response_shards: Iterable[Mapping[str, Any]]) -> list[ShardInfo]:
    """ListShards' ``Shards`` (all pages joined) as :class:`ShardInfo`, in the given order.

    >>> shards_from_list_shards([{"ShardId": "shardId-000000000002",
    ...     "ParentShardId": "shardId-000000000000",
    ...     "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": "99"},
    ...     "SequenceNumberRange": {"StartingSequenceNumber": "42"}}])[0].parents
    ('shardId-000000000000',)
    """
    shards = []
    for shard in response_shards:
        keys = shard.get("HashKeyRange", {})
        numbers = shard.get("SequenceNumberRange", {})
        shards.append(
            ShardInfo(
                shard_id=shard["ShardId"],
                parent_shard_id=shard.get("ParentShardId") or None,
                adjacent_parent_shard_id=shard.get("AdjacentParentShardId") or None,
                starting_hash_key=int(keys.get("StartingHashKey", 0)),
                ending_hash_key=int(keys.get("EndingHashKey", 2**128 - 1)),
                starting_sequence_number=numbers.get("StartingSequenceNumber"),
                ending_sequence_number=numbers.get("EndingSequenceNumber"),
            )
        )
    return shards


def _initial_position(position: str) -> str:
    upper = position.upper()
    if upper not in INITIAL_POSITIONS:
        msg = (
            f"initial position {position!r} is not one of trim_horizon, latest, at_timestamp "
            "(the function's batch.starting_position)"
        )
        raise ValueError(msg)
    return upper


def leases_to_create(
    shards: Sequence[ShardInfo], existing: Collection[str], initial_position: str
) -> list[Lease]:
    """The leases to create for ``shards`` not yet in the table, parents before children.

    A shard that descends from a shard already leased (a reshard while the application
    ran) starts at ``TRIM_HORIZON``: its parents are read to their end first, so nothing is
    skipped and per-key order holds. Every other shard starts at ``initial_position``
    (parents and children created together on a fresh table get the same start, as in the
    KCL), except that with ``LATEST`` closed shards get no lease: they hold nothing newer.

    >>> [(l.shard_id, l.checkpoint) for l in leases_to_create(
    ...     [ShardInfo("s1", parent_shard_id="s0")], existing={"s0"}, initial_position="latest")]
    [('s1', 'TRIM_HORIZON')]

    Raises:
        ValueError: ``initial_position`` is not trim_horizon, latest or at_timestamp.
    """
    position = _initial_position(initial_position)
    descends: dict[str, bool] = {}  # shard id -> descends from an existing lease
    created = []
    for shard in _parents_first(shards):
        if shard.shard_id in existing:
            continue
        descends[shard.shard_id] = any(p in existing or descends.get(p) for p in shard.parents)
        if descends[shard.shard_id]:
            checkpoint = TRIM_HORIZON
        elif position == LATEST and shard.closed:
            continue
        else:
            checkpoint = position
        created.append(Lease(shard.shard_id, checkpoint, parent_shard_ids=shard.parents))
    return created


def _parents_first(shards: Sequence[ShardInfo]) -> list[ShardInfo]:
    by_id = {s.shard_id: s for s in shards}
    depth: dict[str, int] = {}

    def depth_of(shard_id: str) -> int:
        if shard_id not in depth:
            depth[shard_id] = 0  # a (malformed) cycle stops here
            parents = [p for p in by_id[shard_id].parents if p in by_id]
            depth[shard_id] = 1 + max((depth_of(p) for p in parents), default=-1)
        return depth[shard_id]

    return sorted(shards, key=lambda s: (depth_of(s.shard_id), s.shard_id))


class ExpiryTracker:
    """Which leases have expired, by the KCL's rule: a lease is expired when its counter has
    not changed for ``lease_duration_s`` as seen by *this* worker's clock. A lease seen for
    the first time counts as renewed at that moment, so a worker that starts waits a full
    lease duration before taking a live worker's leases.

    >>> clock = iter([0.0, 5.0, 11.0]).__next__
    >>> tracker = ExpiryTracker(10.0, clock)
    >>> lease = Lease("shardId-0", "TRIM_HORIZON", owner="a", counter=7)
    >>> [sorted(tracker.observe([lease])) for _ in range(3)]
    [[], [], ['shardId-0']]
    """

    def __init__(self, lease_duration_s: float, now: Callable[[], float]) -> None:
        self._duration = lease_duration_s
        self._now = now
        self._seen: dict[str, tuple[int, float]] = {}  # shard -> (counter, first seen at)

    def observe(self, leases: Iterable[Lease]) -> frozenset[str]:
        """Record what a scan showed; return the shard ids of the expired owned leases."""
        now = self._now()
        seen: dict[str, tuple[int, float]] = {}
        expired = set()
        for lease in leases:
            previous = self._seen.get(lease.shard_id)
            since = previous[1] if previous and previous[0] == lease.counter else now
            seen[lease.shard_id] = (lease.counter, since)
            if lease.owner is not None and now - since > self._duration:
                expired.add(lease.shard_id)
        self._seen = seen  # leases gone from the table are forgotten
        return frozenset(expired)


@dataclass(frozen=True, slots=True)
class LeaseDecision:
    """What one worker takes in one round (:func:`decide_leases`).

    Attributes:
        target: the worker's fair share: ceil(eligible leases / live workers).
        adopt: leases in this worker's name that it does not hold (it restarted).
        take: unowned or expired leases.
        steal: leases of the busiest live worker.
    """

    target: int
    adopt: tuple[Lease, ...] = ()
    take: tuple[Lease, ...] = ()
    steal: tuple[Lease, ...] = ()

    @property
    def leases(self) -> tuple[Lease, ...]:
        """Everything to take, in the order to try."""
        return self.adopt + self.take + self.steal


def decide_leases(
    leases: Sequence[Lease],
    worker_id: str,
    *,
    held: Collection[str],
    expired: Collection[str],
    max_leases_to_steal: int = 1,
    rng: random.Random | None = None,
) -> LeaseDecision:
    """Decide which leases ``worker_id`` takes this round: the KCL's lease taker.

    Only *eligible* leases count: not finished, and every parent finished (or gone from the
    table). A child waiting for its parents counts for nobody's share: counting it would let
    a worker holding all the parents block the balance (4 parents, 4 waiting children and
    2 workers would give a share of 4 and stop stealing at 3/1).

    * Live workers are the owners of unexpired eligible leases, plus this one; the fair
      share is ceil(eligible / live workers).
    * Own leases not held (a restart under the same id) are taken back, whatever the share.
    * Below its share, a worker takes unowned and expired leases (at random, so workers do
      not all race for the same ones) up to its share.
    * Only when none are free does it steal, from the busiest worker, and only when that
      worker holds more than the share (or exactly the share while this one needs two or
      more), at most ``max_leases_to_steal`` per round. Loads end within one of each other.

    >>> free = [Lease(f"s{i}", TRIM_HORIZON) for i in range(4)]
    >>> decide_leases(free, "a", held=(), expired=()).target
    4
    >>> taken = [Lease(f"s{i}", TRIM_HORIZON, owner="a") for i in range(4)]
    >>> decision = decide_leases(taken, "b", held=(), expired=(), rng=random.Random(0))
    >>> decision.target, [lease.owner for lease in decision.steal]
    (2, ['a'])

    Args:
        leases: the whole table, as just read.
        worker_id: this worker.
        held: the shard ids this worker holds (renewed this round).
        expired: the shard ids whose leases expired (:class:`ExpiryTracker`).
        max_leases_to_steal: at most this many steals per round (0: never steal).
        rng: randomness for the choice among candidates.
    """
    rng = rng or random.Random()
    by_id = {lease.shard_id: lease for lease in leases}
    eligible = [
        lease
        for lease in leases
        if not lease.finished
        and all(p not in by_id or by_id[p].finished for p in lease.parent_shard_ids)
    ]
    if not eligible:
        return LeaseDecision(target=0)
    eligible.sort(key=lambda lease: lease.shard_id)  # rng draws reproducible from the seed
    mine = [lease for lease in eligible if lease.owner == worker_id]
    adopt = tuple(lease for lease in mine if lease.shard_id not in held)
    free = [
        lease
        for lease in eligible
        if lease.owner is None or (lease.owner != worker_id and lease.shard_id in expired)
    ]
    loads: Counter[str] = Counter()  # live workers' eligible leases
    for lease in eligible:
        if lease.owner is not None and lease.owner != worker_id and lease.shard_id not in expired:
            loads[lease.owner] += 1
    target = math.ceil(len(eligible) / (len(loads) + 1))
    needed = target - len(mine)
    if needed <= 0:
        return LeaseDecision(target, adopt)
    if free:
        rng.shuffle(free)
        return LeaseDecision(target, adopt, take=tuple(free[:needed]))
    if not loads:
        return LeaseDecision(target, adopt)
    busiest, most = max(loads.items(), key=lambda item: (item[1], item[0]))
    count = min(needed, most - target) if most >= target else 0
    if most >= target and needed > 1 and count == 0:
        count = 1
    count = min(count, max_leases_to_steal)
    if count <= 0:
        return LeaseDecision(target, adopt)
    candidates = [
        lease for lease in eligible if lease.owner == busiest and lease.shard_id not in expired
    ]
    rng.shuffle(candidates)
    return LeaseDecision(target, adopt, steal=tuple(candidates[:count]))


@dataclass(frozen=True, slots=True)
class _Change:
    """What one conditional UpdateItem of a lease writes besides the counter, which it always
    bumps from the lease's known value to the next: the request is built from this, and so is
    the check that an ambiguous failure was this very write applied after all.

    Attributes:
        sets: the attributes it sets, by placeholder of :data:`_NAMES` (``"#cp"``), to their
            AttributeValues.
        take: it makes this worker the owner (``SET #owner = :me``).
        release: it leaves the lease without owner (``REMOVE #owner``); otherwise the owner
            after the write is this worker.
    """

    sets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    take: bool = False
    release: bool = False

    def update_expression(self) -> str:
        """The UpdateExpression; each set value's placeholder is its name's with ``:``.

        >>> _Change({"#cp": {"S": "1"}}, release=True).update_expression()
        'SET #cp = :cp, #counter = :next REMOVE #owner'
        """
        assignments = [f"{name} = :{name[1:]}" for name in self.sets]
        if self.take:
            assignments.append("#owner = :me")
        assignments.append("#counter = :next")
        return "SET " + ", ".join(assignments) + (" REMOVE #owner" if self.release else "")

    def values(self) -> dict[str, Mapping[str, Any]]:
        """The set values by their placeholders."""
        return {f":{name[1:]}": value for name, value in self.sets.items()}

    def shows_in(self, item: Mapping[str, Any], lease: Lease, worker_id: str) -> bool:
        """Whether ``item`` is ``lease`` after exactly this write by ``worker_id``: the next
        counter, the owner the write leaves, and each value it sets."""
        now = Lease.from_item(item)
        owner = None if self.release else worker_id
        return (
            now.counter == lease.counter + 1
            and now.owner == owner
            and all(item.get(_NAMES[name]) == value for name, value in self.sets.items())
        )


_ZERO = {"N": "0"}
_RENEW = _Change()
_RELEASE = _Change(release=True)


@dataclass(slots=True)
class _Holding:
    """A lease this worker holds: the lease as last written, the counter at which it was
    taken (an older Lease object belongs to an earlier tenure), the time, on this worker's
    clock, of the last write that renewed it, and the writes since then that failed but
    may have been applied (``unsure``: an attempt's answer was lost, and the retries ran
    out). One of those showing in the item is this worker's own write, not a lost lease."""

    lease: Lease
    tenure: int
    renewed_at: float
    unsure: list[_Change] = field(default_factory=list)


class LeaseTable:
    """The lease and checkpoint table of one application, as seen by one worker.

    :meth:`take` is called by one coordinating thread; :meth:`checkpoint`, :meth:`finish`
    and :meth:`release` may be called from the shard readers' threads at the same time.

    Args:
        table: the DynamoDB table, one per application (used as written).
        worker_id: this worker, unique among the processes running at once; a restart that
            keeps the id takes its leases back at once instead of waiting for them to expire.
        client: a boto3 DynamoDB client; by default the process's shared one.
        lease_duration_s: a lease whose counter does not change for this long is expired.
        max_leases_to_steal: at most this many leases stolen per round (0: never steal).
        now: a monotonic clock (injected by tests).
        rng: randomness for the choice of leases and the backoff jitter.
        sleep: injectable for tests.
        max_attempts: attempts per DynamoDB call on throttling and 5xx before giving up.
        base_delay: first backoff delay in seconds; doubles per attempt, full jitter.
    """

    def __init__(
        self,
        table: str,
        worker_id: str,
        *,
        client: Any = None,
        lease_duration_s: float = 10.0,
        max_leases_to_steal: int = 1,
        now: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
        max_attempts: int = 5,
        base_delay: float = 0.05,
    ) -> None:
        if not worker_id:
            msg = f"lease table {table!r}: worker_id is empty; give each worker a unique id"
            raise ValueError(msg)
        if lease_duration_s <= 0 or max_leases_to_steal < 0 or max_attempts < 1:
            msg = (
                f"lease table {table!r}: lease_duration_s must be > 0 (got {lease_duration_s}),"
                f" max_leases_to_steal >= 0 (got {max_leases_to_steal}) and max_attempts >= 1"
                f" (got {max_attempts})"
            )
            raise ValueError(msg)
        self.table = table
        self.worker_id = worker_id
        self.lease_duration_s = lease_duration_s
        self.max_leases_to_steal = max_leases_to_steal
        self._client = client
        self._now = now
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._max_attempts = max_attempts
        self._base_delay = base_delay
        self._tracker = ExpiryTracker(lease_duration_s, now)
        self._held: dict[str, _Holding] = {}
        self._lock = threading.Lock()  # one write of a held lease at a time

    client = lazy_client("dynamodb")
    """The DynamoDB client, created on first use (boto3 is imported only then)."""

    @property
    def renew_interval_s(self) -> float:
        """How often to call :meth:`take`: a third of the lease duration, as in the KCL."""
        return self.lease_duration_s / 3

    def held(self) -> list[Lease]:
        """The leases this worker can prove it still holds, as last written, by shard id.

        A lease whose last successful write (take, renewal, checkpoint) is more than
        ``lease_duration_s`` ago on this worker's clock is dropped here, without asking the
        table: another worker may have taken it by now, and a worker cut off from the
        table must stop writing for that shard on its own.
        """
        with self._lock:
            self._expire_unrenewed()
            return sorted((h.lease for h in self._held.values()), key=lambda x: x.shard_id)

    def _expire_unrenewed(self) -> None:
        """Forget every holding not renewed within the lease duration (the caller holds the
        lock): its lease may have expired for the other workers."""
        now = self._now()
        for shard_id, holding in list(self._held.items()):
            if now - holding.renewed_at >= self.lease_duration_s:
                log.warning(
                    "lease on %s not renewed for %.1f s (lease duration %g s): dropping it",
                    shard_id,
                    now - holding.renewed_at,
                    self.lease_duration_s,
                )
                del self._held[shard_id]

    def ensure_table(self, timeout_s: float = 60.0) -> None:
        """Create the table if missing (on-demand capacity, hash key ``leaseKey``) and wait
        until it is ACTIVE.

        Raises:
            LeaseTableError: the table has another key schema, or is not ACTIVE in time.
        """
        deadline = self._now() + timeout_s
        try:
            described = self._call("DescribeTable", self._describe)
        except LeaseTableError as exc:
            if exc.code != "ResourceNotFoundException":
                raise
            create = partial(
                self.client.create_table,
                TableName=self.table,
                KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
            try:
                self._call("CreateTable", create)
            except LeaseTableError as exc2:
                if exc2.code != "ResourceInUseException":  # another worker created it
                    raise
            described = self._call("DescribeTable", self._describe)
        attempt = 0
        while True:
            table = described["Table"]
            if table.get("TableStatus") == "ACTIVE":
                self._check_schema(table.get("KeySchema", []))
                return
            if self._now() >= deadline:
                msg = (
                    f"lease table {self.table!r} is {table.get('TableStatus')} after "
                    f"{timeout_s:g} s, not ACTIVE; check the table in DynamoDB and retry"
                )
                raise LeaseTableError(msg, self.table, "TableNotActive")
            self._sleep(min(1.0, 0.05 * 2**attempt))
            attempt += 1
            described = self._call("DescribeTable", self._describe)

    def _describe(self) -> dict[str, Any]:
        response: dict[str, Any] = self.client.describe_table(TableName=self.table)
        return response

    def _check_schema(self, key_schema: list[dict[str, Any]]) -> None:
        if key_schema != [{"AttributeName": "leaseKey", "KeyType": "HASH"}]:
            msg = (
                f"table {self.table!r} exists with key schema {key_schema}, not a lease table "
                "(hash key leaseKey only): give the application a lease table of its own"
            )
            raise LeaseTableError(msg, self.table, "KeySchemaMismatch")

    def sync_shards(self, shards: Sequence[ShardInfo], initial_position: str) -> list[Lease]:
        """Create a lease for each shard not in the table yet (see :func:`leases_to_create`);
        each creation is conditional, so workers syncing at once create each lease once.

        Returns:
            The leases this call created.

        Raises:
            ValueError: ``initial_position`` is not trim_horizon, latest or at_timestamp.
            LeaseTableError: the table cannot be read or written.
        """
        position = _initial_position(initial_position)
        existing = {lease.shard_id for lease in self.leases()}
        created = []
        for lease in leases_to_create(shards, existing, position):
            item: dict[str, Any] = {
                "leaseKey": {"S": lease.shard_id},
                "checkpoint": {"S": lease.checkpoint},
                "checkpointSubSequenceNumber": {"N": "0"},
                "leaseCounter": {"N": "0"},
                "ownerSwitchesSinceCheckpoint": {"N": "0"},
            }
            if lease.parent_shard_ids:
                item["parentShardId"] = {"SS": list(lease.parent_shard_ids)}
            put = partial(
                self.client.put_item,
                TableName=self.table,
                Item=item,
                ConditionExpression="attribute_not_exists(#key)",
                ExpressionAttributeNames=_names("#key"),
            )
            try:
                self._call("PutItem", put)
            except _ConditionFailed:
                continue  # another worker created it first
            created.append(lease)
        return created

    def leases(self) -> list[Lease]:
        """Every lease in the table, by shard id (a consistent read)."""
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True}
        while True:
            page = self._call("Scan", partial(self.client.scan, **kwargs))
            items += page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return sorted((Lease.from_item(item) for item in items), key=lambda x: x.shard_id)

    def take(self) -> list[Lease]:
        """One coordination round: renew, read the table, take or steal (:func:`decide_leases`).

        Returns:
            The leases this worker holds after the round, by shard id. A shard reader whose
            lease is not among them must stop.

        Raises:
            LeaseTableError: the table cannot be read; the leases renewed before stay held
                until they expire on this worker's clock (:meth:`held` says which are
                left): call again next round.
        """
        with self._lock:
            self._expire_unrenewed()  # paused or cut off past the duration: not ours now
            renewing = list(self._held)
        for shard_id in renewing:
            self._renew(shard_id)
        leases = self.leases()
        expired = self._tracker.observe(leases)
        current = {lease.shard_id: lease for lease in leases}
        with self._lock:
            for shard_id in list(self._held):
                lease = current.get(shard_id)
                if lease is None or lease.owner != self.worker_id or lease.finished:
                    self._drop(shard_id, lease.owner if lease else None)
            held = set(self._held)
        decision = decide_leases(
            leases,
            self.worker_id,
            held=held,
            expired=expired,
            max_leases_to_steal=self.max_leases_to_steal,
            rng=self._rng,
        )
        for lease in decision.leases:
            self._acquire(lease)
        return self.held()

    def _renew(self, shard_id: str) -> None:
        sent = self._now()
        with self._lock:
            holding = self._held.get(shard_id)
            if holding is None:
                return
            try:
                lease = self._update_held(holding, _RENEW)
            except _ConditionFailed as failed:
                self._drop(shard_id, _owner_of(failed.item))
                return
            except LeaseTableError as exc:
                log.warning("lease on %s not renewed: %s", shard_id, exc)
                return
            holding.lease, holding.renewed_at = lease, sent

    def _acquire(self, lease: Lease) -> None:
        switched = lease.owner is not None and lease.owner != self.worker_id
        change = _Change({"#switches": {"N": str(lease.owner_switches + switched)}}, take=True)
        sent = self._now()
        with self._lock:
            try:
                taken = self._update(lease, change, "#counter = :known")
            except _ConditionFailed:
                log.debug("lease on %s: another worker was first", lease.shard_id)
                return
            except LeaseTableError as exc:
                log.warning("lease on %s not taken: %s", lease.shard_id, exc)
                return
            self._held[lease.shard_id] = _Holding(taken, taken.counter, sent)
        log.info(
            "worker %s took the lease on %s from %s", self.worker_id, lease.shard_id, lease.owner
        )

    def _drop(self, shard_id: str, owner: str | None) -> None:
        """Forget a held lease (the caller holds the lock)."""
        if self._held.pop(shard_id, None) is not None:
            log.info("worker %s lost the lease on %s to %s", self.worker_id, shard_id, owner)

    def checkpoint(self, lease: Lease, sequence_number: str, sub_sequence_number: int = 0) -> Lease:
        """Store that every record up to ``sequence_number`` (and, inside a KPL aggregate,
        up to ``sub_sequence_number``) is fully processed: a reader resumes *after* it.

        The write is conditional on this worker owning the lease at the counter it last
        wrote; it also renews the lease and resets ``ownerSwitchesSinceCheckpoint``.

        Returns:
            The lease as written (pass it to the next call).

        Raises:
            LeaseLost: the lease is not held by this worker, or ``lease`` is from an earlier
                tenure; nothing was written.
            ValueError: not a sequence number, or behind the stored checkpoint.
            LeaseTableError: DynamoDB kept failing; the checkpoint may not be stored.
        """
        if not _is_sequence_number(sequence_number) or sub_sequence_number < 0:
            msg = (
                f"checkpoint of {lease.shard_id!r}: {sequence_number!r}/{sub_sequence_number} "
                "is not a sequence number (decimal digits) and sub-sequence number >= 0; "
                "use finish() at the end of a shard"
            )
            raise ValueError(msg)
        change = _Change(
            {
                "#cp": {"S": sequence_number},
                "#sub": {"N": str(sub_sequence_number)},
                "#switches": _ZERO,
            }
        )
        with self._lock:
            current = self._holding(lease).lease
            stored = current.sequence_number
            new = (int(sequence_number), sub_sequence_number)
            if stored is not None and new < (int(stored), current.sub_sequence_number):
                msg = (
                    f"checkpoint of {lease.shard_id!r} would move backwards, from "
                    f"{stored}/{current.sub_sequence_number} to {sequence_number}/"
                    f"{sub_sequence_number}: checkpoint only records processed after it"
                )
                raise ValueError(msg)
            return self._write_held(lease, change)

    def finish(self, lease: Lease) -> Lease:
        """Checkpoint ``SHARD_END``: the shard was read to its end. The lease is left without
        owner and no longer held; its children become eligible.

        Raises:
            LeaseLost: as for :meth:`checkpoint`; nothing was written.
            LeaseTableError: DynamoDB kept failing.
        """
        change = _Change({"#cp": {"S": SHARD_END}, "#sub": _ZERO, "#switches": _ZERO}, release=True)
        with self._lock:
            self._holding(lease)
            done = self._write_held(lease, change)
            del self._held[lease.shard_id]
            return done

    def release(self, lease: Lease) -> None:
        """Give the lease up (clean shutdown): its owner is removed, so another worker takes
        it at its next round without waiting for it to expire. A lease already lost, or not
        held, needs no release.

        Raises:
            LeaseTableError: DynamoDB kept failing (the lease then expires instead).
        """
        with self._lock:
            holding = self._held.pop(lease.shard_id, None)
            if holding is None:
                return
            try:
                self._update_held(holding, _RELEASE)  # after an unsure write too
            except _ConditionFailed:
                return

    def release_all(self) -> None:
        """Release every held lease (clean shutdown)."""
        for lease in self.held():
            self.release(lease)

    def _holding(self, lease: Lease) -> _Holding:
        """The holding of ``lease``, or LeaseLost (the caller holds the lock)."""
        holding = self._held.get(lease.shard_id)
        if holding is None or lease.counter < holding.tenure:
            raise LeaseLost(self.table, lease.shard_id, self.worker_id, None)
        return holding

    def _write_held(self, lease: Lease, change: _Change) -> Lease:
        """A conditional write of a held lease; LeaseLost if the condition fails (the
        caller holds the lock and has checked the holding)."""
        holding = self._held[lease.shard_id]
        sent = self._now()
        try:
            written = self._update_held(holding, change)
        except _ConditionFailed as failed:
            owner = _owner_of(failed.item)
            self._drop(lease.shard_id, owner)
            raise LeaseLost(self.table, lease.shard_id, self.worker_id, owner) from None
        holding.lease, holding.renewed_at = written, sent
        return written

    def _update_held(self, holding: _Holding, change: _Change) -> Lease:
        """``change`` to a held lease, conditional on owner and counter (the caller holds
        the lock); the lease as written.

        A write that failed ambiguously (its retries ran out after an attempt that may have
        been applied) is remembered in ``holding.unsure``. When a later write then fails
        its condition and the item is the held lease after one of those writes, the item
        is this worker's own: the holding moves to it and the write is sent once more from
        there (a renewal must be written now: the earlier write renewed the lease for the
        other workers when it was applied, not now), unless it was this very release
        (``finish`` sent again), which left nothing to write. Otherwise a lost answer
        followed by a throttle would read as a lost lease, and the shard be dropped and its
        records delivered again.
        """
        for _ in range(2):
            try:
                written = self._update(holding.lease, change, _OWNED_AT)
            except _ConditionFailed as failed:
                item = failed.item
                applied = next(
                    (
                        earlier
                        for earlier in holding.unsure
                        if item is not None
                        and earlier.shows_in(item, holding.lease, self.worker_id)
                    ),
                    None,
                )
                if item is None or applied is None:
                    raise
                log.info(
                    "lease on %s: an earlier write whose answer was lost was applied after "
                    "all; going on from it",
                    holding.lease.shard_id,
                )
                holding.lease, holding.unsure = Lease.from_item(item), []
                if applied.release and applied == change:  # a finish, done: no lease to write
                    return holding.lease
                continue
            except LeaseTableError as exc:
                if exc.ambiguous:
                    holding.unsure.append(change)
                raise
            holding.unsure.clear()
            return written
        raise _ConditionFailed(None, ambiguous=False)  # pragma: no cover  # unsure was emptied

    def _update(self, lease: Lease, change: _Change, condition: str) -> Lease:
        """UpdateItem of ``change``, bumping the counter from ``lease.counter`` on
        ``condition``; the lease as written.

        When a retry fails its condition because an earlier attempt was applied after all
        (its answer was lost), the item shows this very write (:meth:`_Change.shows_in`).
        That is a success, not a lost lease.
        """
        update = change.update_expression()
        all_values = {
            ":known": {"N": str(lease.counter)},
            ":next": {"N": str(lease.counter + 1)},
            ":me": {"S": self.worker_id},
            **change.values(),
        }
        used = {k: v for k, v in all_values.items() if k in update or k in condition}
        call = partial(
            self.client.update_item,
            TableName=self.table,
            Key={"leaseKey": {"S": lease.shard_id}},
            UpdateExpression=update,
            ConditionExpression=condition,
            ExpressionAttributeNames=_names(update, condition),
            ExpressionAttributeValues=used,
            ReturnValues="ALL_NEW",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        try:
            return Lease.from_item(self._call("UpdateItem", call)["Attributes"])
        except _ConditionFailed as failed:
            item = failed.item
            if (
                failed.ambiguous
                and item is not None
                and change.shows_in(item, lease, self.worker_id)
            ):
                return Lease.from_item(item)
            raise

    def _call(self, operation: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Call with retries of throttles, 5xx and connection errors (full jitter).

        Raises:
            _ConditionFailed: a condition expression was false.
            LeaseTableError: a permanent error, or still failing after the attempts.
        """
        code, reason, cause, ambiguous = "", "", None, False
        for attempt in range(self._max_attempts):
            if attempt:
                self._sleep(backoff_delay(attempt, self._base_delay, math.inf, self._rng.uniform))
            try:
                return fn()
            except Exception as exc:  # classified; anything not botocore's is re-raised
                failure = classify(exc, "dynamodb")
                if failure.kind is Kind.OTHER:
                    raise
                code, cause = failure.code, exc
                if not failure.answered:
                    reason, ambiguous = f"DynamoDB unreachable: {exc}", True
                    continue
                if code == "ConditionalCheckFailedException":
                    raise _ConditionFailed(failure.item, ambiguous) from None
                ambiguous = ambiguous or failure.http_status >= 500
                reason = f"DynamoDB {code} on {operation}: {failure.message}"
                if failure.kind is Kind.RETRYABLE:
                    continue
                hint = (
                    "create it with LeaseTable.ensure_table() (shardline run does)"
                    if code == "ResourceNotFoundException"
                    else "check the table name, region and permissions"
                )
                msg = f"lease table {self.table!r}: {reason}; {hint}"
                raise LeaseTableError(msg, self.table, code, ambiguous=ambiguous) from exc
        msg = (
            f"lease table {self.table!r}: {reason} (still failing after {self._max_attempts} "
            "attempts); check the endpoint and the table's capacity"
        )
        raise LeaseTableError(msg, self.table, code, ambiguous=ambiguous) from cause


def _names(*expressions: str) -> dict[str, str]:
    """The attribute-name placeholders the expressions use (DynamoDB rejects unused ones)."""
    return {k: v for k, v in _NAMES.items() if any(k in e for e in expressions)}


def _owner_of(item: Mapping[str, Any] | None) -> str | None:
    owner: str | None = (item or {}).get("leaseOwner", {}).get("S")
    return owner
