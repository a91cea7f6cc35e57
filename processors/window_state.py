"""The window step's state in the process, and what every store promises.

A shard's windows (:class:`ShardState`), what a record yielded (:class:`Outcome`), where an
inherited window's item lives (:class:`Inherited`), positions and their high-water marks
(:data:`Position`, :data:`Mark`), the store protocol (:class:`WindowStore`) and the errors
the stores raise. The stores: :mod:`processors.window_memory` (in the process) and
:mod:`processors.window_dynamodb` (a table); :mod:`processors.window_store` maps them.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from processors.errors import ProcessorError
from stream.exceptions import RecordError, RetryableError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence, Set

    from processors.window_tick import Emission

    #: Two parts' accumulators merged (a window two parents of a merge both held).
    Merge = Callable[[list[Any], list[Any]], list[Any]]
    #: A shard id -> its parents (the window step's lineage, bound to the stream).
    ParentsOf = Callable[[str], tuple[str, ...]]

__all__ = [
    "HW_MAX_PKS",
    "HW_UNBOUNDED",
    "ClaimLost",
    "CommitLost",
    "Inherited",
    "LanesMet",
    "Mark",
    "Outcome",
    "Position",
    "ShardState",
    "StateTooLarge",
    "TickIncomplete",
    "TickTooLarge",
    "TooManyPartitionKeys",
    "UnreadLost",
    "WindowKey",
    "WindowRecordError",
    "WindowStateError",
    "WindowStore",
    "position_mark",
]

#: The most partition keys a window's stored high-water names (``hw``; the design's
#: ``MAX_PKS``, issue 16). A window key that is not the partition key (one site, a user per
#: partition key) gathers a key per user: unbounded, it made the item pass DynamoDB's
#: 400 KB limit (the batch failed at every retry) and cost a write unit per KB on every
#: write. Past the bound the window keeps :data:`HW_UNBOUNDED` instead, in the item and in
#: the process (:attr:`WindowStore.hw_bound`; the memory store keeps every key).
HW_MAX_PKS = 16
#: The partition key of the one entry of a high-water past :data:`HW_MAX_PKS`: Kinesis
#: partition keys are 1 to 256 characters, so no record has it.
HW_UNBOUNDED = ""
_NO_MARK: Mark = (0, "", 0, ())


class WindowStateError(ProcessorError, RetryableError):
    """The window state could not be read or written: the batch is delivered again."""


class TickIncomplete(WindowStateError):
    """A scheduled flush's tick could not read or write some shard's state. It carries what
    the tick has (the pending emissions and the closes it committed), so that the flush sends
    those on before it fails: one shard failing at every tick must not hold back the results
    of every other shard (issue 16; review 13)."""

    def __init__(self, cause: Exception, emissions: list[Emission]) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.emissions = emissions


class WindowRecordError(ProcessorError, RecordError):
    """A record the window cannot place (no key, no time): it is dead-lettered."""


class TooManyPartitionKeys(WindowRecordError):
    """With ``parallelization`` above 1, a record whose partition key would be one too many
    for a window's high-water (more than :data:`HW_MAX_PKS` partition keys): it is
    dead-lettered, not applied (issue 16; design ``parallel-windows.md`` §0, §5.3). Past the
    bound a window keeps no per-partition-key high-water (its item would grow with every
    key) and decides redeliveries by the shard's applied position, which with lanes skips a
    lagging lane's new record as applied: loss without a word. A dead letter says it.

    Here rather than in :mod:`processors.window` (which re-exports it) so that an outbox
    read back from the table (:mod:`processors.window_outbox`) gives a redelivered refusal
    its class again, and its dead letter the same ``error`` name as the first one."""

    def __init__(self, function: str, window: str, pk: str) -> None:
        super().__init__(
            f"window {function!r}: {window} already holds records of {HW_MAX_PKS} partition "
            f"keys, and this record's partition key {pk!r} is another; with "
            f"parallelization > 1 a window's records must come from at most {HW_MAX_PKS} "
            "partition keys: partition records by the window key (the producer's partition "
            "key = the window key), or set batch.parallelization: 1 on a window table "
            "lanes never wrote (lanes mode, and this bound, stay on a table they wrote)"
        )

    @classmethod
    def from_message(cls, message: str) -> TooManyPartitionKeys:
        """The refusal an outbox kept (its message, which names the window and the key)."""
        error = cls.__new__(cls)
        WindowRecordError.__init__(error, message)
        return error


class StateTooLarge(WindowStateError):
    """Windows whose item would be over DynamoDB's 400 KB with this batch (an accumulator
    past its budget: a plugin aggregation's): nothing was written. The window step applies
    the batch again without those windows' records, which it dead-letters.

    Attributes:
        windows: the (key, start) windows too large.
    """

    def __init__(self, message: str, windows: frozenset[WindowKey]) -> None:
        super().__init__(message)
        self.windows = windows


class ClaimLost(WindowStateError):
    """Another shard claimed a parent's window (or a parent changed) since this batch read
    it: the window step reads the state again and applies the batch again."""


class UnreadLost(ClaimLost):
    """With one lane, a shard read by the starts its item lists
    (:mod:`processors.window_starts`): a window write lost its condition, on an item the
    read did not cover (a failed attempt's, at a start no open window had) or on one
    another attempt wrote since. As a lost claim: the window step reads the state again,
    the whole partition this time, and applies the batch again."""


class TickTooLarge(WindowStateError):
    """A flush's tick of a reshard's child closes more of its parents' windows at once
    than one commit can write with one lane (a transaction's 100 items): the tick keeps
    them, as before the flush, and closes the child's own windows only; the child's next
    record closes them (or a later tick once lanes mode holds the shard)."""


class CommitLost(WindowStateError):
    """Another lane (or another invocation of the same batch) committed the shard since
    this batch read it (its commit number ``n`` moved): the window step reads the state
    again and applies the batch again (design: issue 16, slice S2; the DynamoDB store's in
    lanes mode since slice S4a: its commit's condition on ``n``, or a batch that wrote
    nothing finding the revision moved)."""


class LanesMet(CommitLost):
    """A store running the one-lane protocol met a shard lanes mode wrote and turned lanes
    mode on (:meth:`DynamoDBStore._turn_lanes`): like a lost commit, the window step reads
    the state again and applies the batch again, now in lanes mode; the batch does not
    fail (``parallelization`` lowered from above 1 to 1: the way back)."""


#: A record's place in its shard: sequence number, sub-sequence number, fan-out part.
Position = tuple[int, int, tuple[int, ...]]
#: A window of a key: (key, start).
WindowKey = tuple[Any, int]
#: A position as the redelivery check compares it without parsing the sequence number:
#: (its length, its decimal text, sub-sequence number, fan-out part). Kinesis writes sequence
#: numbers in decimal without leading zeros, so (length, text) orders them as numbers do.
Mark = tuple[int, str, int, tuple[int, ...]]


def position_mark(position: Position) -> Mark:
    """The :data:`Mark` of a :data:`Position`.

    >>> position_mark((99, 0, ())) < position_mark((100, 0, ()))
    True
    """
    seq, sub, part = position
    text = str(seq)
    return len(text), text, sub, part


@dataclass(frozen=True, slots=True)
class Inherited:
    """Where the item of a window a shard inherited from an ancestor lives.

    Attributes:
        holder: the ancestor shard whose item holds the window (its accumulators).
        via: the shards between the holder and the heir: each may have claimed it without
            committing it, so their claim does not bar the heir's.
        window: the window's key in the holder's partition when the heir holds it under
            another: a session the heir joined with a session of its other parent
            (:mod:`processors.session`) starts at the earlier of their starts; ``None``:
            the same key.
    """

    holder: str
    via: tuple[str, ...] = ()
    window: tuple[Any, Any] | None = None  # (a session's start is a float)

    def at(self, wkey: WindowKey) -> WindowKey:
        """The window's key in the holder's partition, for the heir's ``wkey``."""
        return wkey if self.window is None else self.window


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a record yielded the first time, replayed on redelivery.

    Attributes:
        results: the result documents of the windows it closed.
        late: it was late.
        error: it could not be placed (dead-lettered again on redelivery).
    """

    results: tuple[dict[str, Any], ...] = ()
    late: bool = False
    error: Exception | None = None


@dataclass(slots=True)
class ShardState:
    """One shard's windows.

    Attributes:
        max_time: the greatest event time seen (``None``: no record yet).
        applied: the position of the last record applied (inclusive), or ``None``.
        windows: (key, start) -> the accumulators, one per aggregation, of open windows.
        ends: a heap of the ends of open windows, with ``by_end`` the windows of each end
            in the order they opened (so results come out by end, then by opening).
        outbox: position -> what the record yielded, for records that yielded something.
        ancestors: after a reshard, the shards whose open windows this one inherited (kept
            while some of them are neither claimed nor past this shard's watermark).
        inherited: the windows of ``windows`` taken from ancestors and not claimed yet:
            before this shard adds to one or closes it, its commit claims the ancestor's
            item (README, "Windows": reshards); one entry per ancestor holding a part.
        foreign: ancestors' windows another shard claimed: closed for this one.
        waiting: end -> inherited windows behind this shard's watermark that wait for the
            other heirs' (in the process only: read back, they are open windows again).
        hw: the high-water of each window with records: (key, start) -> partition key ->
            the :data:`Mark` of the last record of that partition key decided on it
            (added, or refused by its state). Why per partition key and not one applied
            position: with ``parallelization`` > 1 a shard's lanes commit in any order, so
            a lagging lane's new record may lie before the shard's greatest applied
            position (design: issue 16). A record at or below its window's mark was
            decided already (Lambda keeps a partition key's order). Open windows', and
            in the memory store closed ones' too (kept as long as the store: its runs are
            short); the DynamoDB store drops a closed window's at commit (its item is
            where slice S3 will read it).
        n: the shard's commit number this state is at (the memory store's: its commit
            holds only if no other commit came between; :class:`CommitLost`).
        key_hw: session windows in lanes mode (:attr:`WindowStore.high_water`): key ->
            partition key -> the :data:`Mark` of the last record of that partition key
            decided on the key outside its open sessions (in sessions that closed since,
            or late, or refused), the design's ``h#KEY``. Why not the sessions' own: a
            redelivered record cannot name a closed session (its start moved with
            merges), and a late record lies inside no session, so a key's high-water is
            the greatest of its open sessions' ``hw`` and this (issue 16, slice S6).
        raised: the keys whose ``key_hw`` the batch raised: the DynamoDB store writes
            their ``h#KEY`` items with its commit (and commits for them alone: a lagging
            lane's late record changes no session, but must be decided durably).
        lift: at most how far ``max_time`` lies past the greatest event time seen: what
            loads under a raised ``allowed_lateness_s`` added to it so that the watermark
            stays (:func:`processors.window_items.max_time_of`), and that a load under a
            lowered one takes back first (else the watermark would run ahead of the event
            times seen, and in-order records would come out late: review 21). A record
            past ``max_time`` sets it to 0 (``max_time`` is event time again), so a
            lowering long after a raise moves the watermark on at once (review 22).
    """

    max_time: float | None = None
    applied: Position | None = None
    windows: dict[tuple[Any, int], list[Any]] = field(default_factory=dict)
    ends: list[int] = field(default_factory=list)
    by_end: dict[int, list[tuple[Any, int]]] = field(default_factory=dict)
    outbox: dict[Position, Outcome] = field(default_factory=dict)
    ancestors: tuple[str, ...] = ()
    inherited: dict[WindowKey, tuple[Inherited, ...]] = field(default_factory=dict)
    foreign: set[WindowKey] = field(default_factory=set)
    waiting: dict[int, list[WindowKey]] = field(default_factory=dict)
    hw: dict[WindowKey, dict[str, Mark]] = field(default_factory=dict)
    n: int = 0
    key_hw: dict[Any, dict[str, Mark]] = field(default_factory=dict)
    raised: set[Any] = field(default_factory=set)
    lift: float = 0.0

    def claims(self, changed: Set[WindowKey]) -> dict[WindowKey, tuple[Inherited, ...]]:
        """The inherited windows a batch added to or closed: what its commit must claim."""
        windows = self.windows
        return {w: h for w, h in self.inherited.items() if w in changed or w not in windows}

    def claimed(self, claims: Mapping[WindowKey, object]) -> None:
        """After the claims held: the windows are this shard's own, and ancestors are
        dropped once nothing of theirs is left."""
        for wkey in claims:
            del self.inherited[wkey]
        if not self.inherited and not self.foreign:
            self.ancestors = ()

    def forget_foreign(self, size: int, lateness: int) -> None:
        """A foreign window at or behind the watermark is closed here anyway."""
        if self.foreign and self.max_time is not None:
            watermark = self.max_time - lateness
            self.foreign = {w for w in self.foreign if w[1] + size > watermark}
            if not self.foreign and not self.inherited:
                self.ancestors = ()

    def seed(
        self,
        ancestors: tuple[str, ...],
        max_time: float | None,
        parts: list[tuple[int, int, WindowKey, list[Any], tuple[Inherited, ...]]],
        foreign: set[WindowKey],
        merge: Merge,
    ) -> None:
        """Start a new shard from its ancestors' open windows: ``parts`` are (end, rank,
        window, accumulators, where its item is); a window two ancestors hold (a key on
        both parents of a merge) is merged into one; the watermark starts at the greatest
        of theirs."""
        self.ancestors = ancestors
        if max_time is not None and (self.max_time is None or max_time > self.max_time):
            self.max_time = max_time
        windows, inherited = self.windows, self.inherited
        for end, _, wkey, accs, origins in sorted(parts, key=lambda p: (p[0], p[1])):
            if wkey in windows:
                windows[wkey] = merge(windows[wkey], accs)
                inherited[wkey] = (*inherited[wkey], *origins)
                continue
            windows[wkey] = accs
            inherited[wkey] = origins
            opened = self.by_end.get(end)
            if opened is None:
                self.by_end[end] = [wkey]
                heapq.heappush(self.ends, end)
            else:
                opened.append(wkey)
        if foreign:
            self.drop(foreign)
        if not self.inherited and not self.foreign:
            self.ancestors = ()

    def drop(self, wkeys: set[WindowKey]) -> None:
        """Windows another shard claimed meanwhile: out of the open ones, closed here."""
        for wkey in wkeys:
            self.windows.pop(wkey, None)
            self.inherited.pop(wkey, None)
            self.hw.pop(wkey, None)
            self.foreign.add(wkey)
        for end in list(self.waiting):
            self.waiting[end] = [w for w in self.waiting[end] if w not in wkeys]
            if not self.waiting[end]:
                del self.waiting[end]
        for end in list(self.by_end):
            kept = [w for w in self.by_end[end] if w not in wkeys]
            if kept:
                self.by_end[end] = kept
            else:
                del self.by_end[end]
        self.ends = sorted(self.by_end)  # a sorted list is a heap


class WindowStore(Protocol):
    """Where the windows' state lives between batches.

    Attributes:
        high_water: whether the step may decide "applied already" by the windows'
            high-water (:attr:`ShardState.hw`, closed windows' included), so that a
            record before the shard's greatest applied position can still be new (a
            lagging lane). ``False``: every record at or before ``applied`` was decided
            (true with one lane). Read per attempt, after :meth:`shard`: the DynamoDB
            store of one lane turns it on for good when it meets a shard lanes mode
            wrote (:meth:`DynamoDBStore._turn_lanes`).
        hw_bound: the most partition keys the step keeps in a window's high-water in the
            process (past it, :data:`HW_UNBOUNDED`: decided as with one lane); ``None``:
            all of them.
    """

    hw_bound: int | None

    @property
    def high_water(self) -> bool: ...

    def shard(self, shard_id: str) -> ShardState:
        """The shard's state as of the last commit (a new one for a shard never seen)."""

    def commit(
        self,
        shard_id: str,
        state: ShardState,
        changed: Set[tuple[Any, int]],
        quiet: Mapping[str, ShardState] | None = None,
    ) -> None:
        """Make a batch's changes durable: ``changed`` are the (key, start) windows the
        batch added to or closed, each written once; ``quiet`` the states of other shards
        whose windows the batch closed (:meth:`quiet`), committed with this shard's."""

    def quiet(self, shard_id: str, cutoff: float) -> dict[str, ShardState]:
        """The other shards of the step with no batch since ``cutoff`` (epoch seconds by
        the function's clock) and a window to close by it: ``{shard_id: state}``."""

    def tick_shards(self) -> list[str]:
        """A scheduled flush's tick (issue 16): every shard of the step, read once (their
        items, for :meth:`pending_ticks` and :meth:`tick_state`); none without a table."""

    def pending_ticks(self) -> list[Emission]:
        """The emissions earlier ticks committed and nobody acked yet (the shard items
        :meth:`tick_shards` read name them)."""

    def tick_state(self, shard_id: str, cutoff: float) -> ShardState | None:
        """The shard's state read now if it is quiet by ``cutoff`` with a window due
        (the rule of :meth:`quiet`), else ``None``."""

    def tick_commit(
        self,
        shard_id: str,
        state: ShardState,
        results: Sequence[dict[str, Any]],
        closed: Set[WindowKey] = frozenset(),
    ) -> Emission | None:
        """Commit the tick's close of the shard (``state`` from :meth:`tick_state`, its
        due windows closed) with ``results`` as its new pending emission, on the
        condition that the shard did not change since; ``None``: it did (skipped), or
        another shard claimed first one of ``closed``, the windows it inherited and
        closed (claimed from their parents before the commit)."""

    def ack_tick(self, emission: Emission) -> None:
        """Every record of ``emission`` is written or dead-lettered: forget it."""

    def outcomes(self, shard_id: str, first: Position, last: Position) -> dict[Position, Outcome]:
        """What the records from ``first`` to ``last`` (inclusive) yielded when they were
        applied, beyond the state's ``outbox`` (the DynamoDB store's outbox entries): read
        once per batch, at its first record found applied already."""

    def decided(
        self, shard_id: str, wkeys: Sequence[WindowKey]
    ) -> dict[WindowKey, dict[str, Mark]]:
        """The high-water of windows not in the state's ``hw`` (closed ones, whose item
        keeps it): a window with an item but no known high-water (an item written by an
        earlier version, or past :data:`HW_MAX_PKS`) holds :data:`HW_UNBOUNDED`; a window
        with no item is absent."""

    def progress(self, shard_ids: list[str]) -> dict[str, tuple[float | None, float | None]]:
        """Of the shards with state: (greatest event time, the clock at their last batch,
        ``None`` where unknown), for a reshard's heirs."""

    def bind(self, merge: Merge) -> None:
        """The step's way of merging two parts of one window (a key on both parents of
        a merge), for states read back later."""

    def inherit(
        self,
        shard_id: str,
        state: ShardState,
        parents: tuple[str, ...],
        parents_of: ParentsOf,
        merge: Merge,
    ) -> None:
        """Start ``state`` (a shard with nothing committed, made by a reshard) from its
        ``parents``' open windows (:meth:`ShardState.seed`); a parent that never had a
        batch is skipped for its own parents (``parents_of``). ``commit`` then claims
        each inherited window the batch touches, or raises :class:`ClaimLost`."""
