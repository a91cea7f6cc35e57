"""Session windows: the ``window`` step with ``gap_s`` instead of ``size_s``.

The rules (README, "Windows"; the property test states them against a reference that
recomputes the sessions from all the records accepted so far, sorted by time):

* **Sessions.** Per key, a session is a maximal run of records whose event times are less
  than ``gap_s`` apart: sorted by time, a gap of ``gap_s`` or more ends one. A session is
  ``[first, last + gap_s)``: ``window_start`` is its first event time, ``window_end`` its
  last event time plus ``gap_s``.
* **Merging.** A record joins every open session of its key it is less than ``gap_s`` from
  (``first < t + gap_s`` and ``t < last + gap_s``: its own ``[t, t + gap_s)`` overlaps the
  session's); when it touches two, it bridges them and they become one session, their
  accumulators joined with each aggregation's ``merge``. Every comparison is "a time is
  before an earlier time plus ``gap_s``", the same float sum whichever record came first.
* **Watermark and closing.** Per shard, the greatest event time seen minus
  ``allowed_lateness_s`` (at most ``gap_s``), advanced record by record in shard order; a
  session closes when the watermark reaches its end (last + ``gap_s``) and yields one result.
* **Late records.** A record whose time is behind the watermark is late (to the ``late``
  sink, or dropped and counted). That is exactly what keeps a result final: a record that
  would extend or bridge a session already emitted is within ``gap_s`` of its last record,
  so behind the watermark that closed it. (Tumbling windows also take a record behind the
  watermark when its window is still open; a session has no fixed window to be open.)
* **Ids.** ``window_id`` = ``FUNCTION/KEY/START``, KEY the key's text
  (:mod:`processors.window_keys`), START the session's first event time
  (ISO-8601, milliseconds when there are some). A session's start moves while it is open
  (an out-of-order record before it, or a merge), never after it closed, and the records
  of a shard are applied in order from the committed state, so a session gets the same id
  on any redelivery and across any batch boundaries; a merged session takes the earlier
  start.
* **Reshards.** The window step's rule and code (:meth:`processors.window.Window._shard_state`,
  the store's inheritance and claims, the heirs' floors): a child starts from its
  parents' open sessions and the greatest of their event times; a session it joins,
  extends, moves or merges is claimed first (its parent's item, under the parent's start,
  :attr:`processors.window_store.Inherited.window` when the child holds it under another),
  then is its own; one it never touched closes when every heir's watermark is past its
  end. After a merge of shards, a key's sessions from the two parents less than ``gap_s``
  apart are one session under the earlier start (:meth:`SessionWindow._join_inherited`).
  A session a sibling claimed is gone for this shard (records of its key here make
  sessions of their own), not late: a session has no fixed span to be late for.
* **Lanes** (the DynamoDB store's lanes mode: ``parallelization`` above 1, or a store of
  one lane that met a shard lanes mode wrote, for good; the memory store with
  ``parallelization`` above 1; otherwise main's rules): a record at
  or before the shard's ``applied`` may be a lagging lane's new one. It was decided
  already if its key's high-water for its partition key is at or past it: the greatest of
  the key's open sessions' ``hw`` (a merged session's is the per-partition-key maximum of
  its parts') and the key's own, :attr:`~processors.window_store.ShardState.key_hw` (the
  DynamoDB store's ``h#KEY``), which a closing session's ``hw``, a late record and a
  refused one raise. A decided record yields the outcome its commit kept (results, late,
  an error) or nothing, never a verdict made again: a late record can lie inside a session
  that a later record of its partition key extended (:meth:`SessionWindow._decided`). A
  key's high-water names at most ``HW_MAX_PKS`` partition keys: the record of one more,
  late or not, is dead-lettered and raises none (:meth:`SessionWindow._admit`, as the
  window step's :class:`~processors.window.TooManyPartitionKeys`).
* **Everything else** (time fields, the outbox and redelivery, one state write per changed
  (key, session) per batch, quiet shards, dead letters) is the window step's
  (:mod:`processors.window`), on the same state stores (:mod:`processors.window_store`):
  an open session is a window keyed ``(key, first event time)`` whose accumulators end with
  its last event time, and whose end is that plus ``gap_s``. A merge or a moved start
  writes the sessions that are gone as closed items (without a result).
"""

from __future__ import annotations

import copy
import heapq
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from processors.aggregations import ValueTooLarge
from processors.fold import compile_fold
from processors.lineage import KinesisLineage, StaticLineage
from processors.window import (
    _KEY_TYPES,
    _MS_LOW,
    _SHORT_KEY,
    MS_THRESHOLD,
    TooManyPartitionKeys,
    Window,
    WindowConfigError,
    _aggregation,
    _Batch,
    _budgeted,
    _key_text,
    _long_key,
    _mark,
    _position,
    _raise_one,
    _refuse_large,
    _seen,
    _send_with,
    _ShardLocks,
    _too_long,
    crowded,
    event_seconds,
    flush_every,
    flush_problem,
    iso,
    quiet_problem,
    settings_problem,
    unbounded,
)
from processors.window_keys import MARKER, key_text, key_value
from processors.window_state import position_mark
from processors.window_store import (
    DEFAULT_MAX_RECORD_AGE_S,
    DynamoDBStore,
    Inherited,
    Mark,
    MemoryStore,
    Outcome,
    ShardState,
    WindowStore,
)
from stream.exceptions import RecordError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from processors.aggregations import Aggregation
    from processors.lineage import Lineage
    from stream.records import Record

__all__ = ["SessionWindow", "session_end_of", "session_problem"]

_NOTHING = Outcome()
_LATE = Outcome(late=True)

#: An open session in :attr:`ShardState.windows`: (key, first event time) -> the
#: aggregations' accumulators, then the session's last event time.
Wkey = tuple[Any, float]


def session_problem(gap_s: Any, size_s: Any, slide_s: Any, allowed_lateness_s: Any) -> str | None:
    """What is wrong with a session window's settings, or ``None`` (shared with ``validate``).

    >>> session_problem(1800, None, None, 60) is None
    True
    >>> session_problem(1800, None, None, 3600)[:45]
    'allowed_lateness_s (3600) must not exceed gap'
    """
    if size_s is not None:
        return (
            "size_s and gap_s together: size_s makes tumbling or hopping windows, gap_s "
            "session windows; keep one"
        )
    if slide_s is not None:
        return "slide_s is for hopping windows (with size_s): session windows (gap_s) have none"
    if type(gap_s) is not int or gap_s < 1:
        return f"gap_s must be a whole number of seconds of at least 1, got {gap_s!r}"
    if type(allowed_lateness_s) is not int or allowed_lateness_s < 0:
        return f"allowed_lateness_s must be a whole number >= 0, got {allowed_lateness_s!r}"
    if allowed_lateness_s > gap_s:
        return (
            f"allowed_lateness_s ({allowed_lateness_s}) must not exceed gap_s ({gap_s}): "
            "sessions would stay open for longer than the gap that ends them"
        )
    return None


def session_end_of(gap_s: int) -> Callable[[tuple[Any, Any], list[Any] | None], float]:
    """What a state store calls for a session's end (its ``end_of``): the last event time,
    the last of the accumulators, plus ``gap_s``; for a closed one (``None``), its start
    plus ``gap_s``, a lower bound (the store only sets a closed item's TTL by it).

    >>> session_end_of(10)(("a", 100.0), [3, 115.0]), session_end_of(10)(("a", 100.0), None)
    (125.0, 110.0)
    """

    def end_of(wkey: tuple[Any, Any], accs: list[Any] | None) -> float:
        return float((wkey[1] if accs is None else accs[-1]) + gap_s)

    return end_of


class SessionWindow:
    """Aggregate records per key over sessions; emit one result per closed session.

    The registry builds it for a ``window`` step with ``gap_s`` (the pipeline file has one
    ``window`` step; its keys are those of :class:`~processors.window.Window`).

    Args:
        key: the record field whose value names the key's sessions.
        aggregate: result name -> ``KIND`` (``count``) or ``{KIND: field}``.
        gap_s: a gap of this many seconds or more between two records of a key ends a session.
        size_s: refused (tumbling or hopping windows are :class:`~processors.window.Window`).
        slide_s: refused.
        time: ``event`` (the ``field`` of the record) or ``arrival``.
        field: the time field, with ``time: event``.
        allowed_lateness_s: how far behind the greatest event time a record may be and
            still count; at most ``gap_s``.
        late: the sink late records go to; else they are dropped and counted.
        state: ``dynamodb`` or ``memory``, as for :class:`~processors.window.Window`.
        function: the function's name, the first part of each ``window_id``.
        table: with ``state: dynamodb``, the table (the plan fills it in).
        table_prefix: the step's place in the chain, before the shard id in the table.
        store: the state store, overriding ``state``; for tests.
        quiet_s: with ``state: dynamodb``, a shard with no batch for this long is quiet: the
            next batch of another shard closes its sessions whose end plus the lateness is
            this long past, by the clock (``None``: never).
        now: the clock (epoch seconds), for ``quiet_s``.
        flush_s: with ``state: dynamodb``, how often a scheduled flush closes quiet shards'
            sessions, as for :class:`~processors.window.Window` (``None``: its default).
        lineage: the shards' parents and children, as for
            :class:`~processors.window.Window` (reshards: the module docstring).
        max_record_age_s: the plan's (its ``batch``): how long outbox entries and keys'
            high-water items are kept in lanes mode (``None``: the default, a day).
        parallelization: the plan's; above 1 the DynamoDB store runs in lanes mode (issue
            16, slice S6: :meth:`_decided`; ``validate`` still refuses a window step with
            more than one lane).

    Raises:
        WindowConfigError: a setting is missing or wrong (the message says which).
        AggregationError: an unknown aggregation, or one without its field.
    """

    #: its state remembers the last position applied: the chain gives it no record after
    #: an earlier retryable failure of the shard (:func:`processors.chain._hold_back`)
    in_order = True

    __slots__ = ("_aggs", "_batch", "_field", "_fold", "_function", "_index", "_lanes",
                 "_late_routes", "_lineage", "_locks", "_now", "_sized", "_time_event",
                 "aggregate", "allowed_lateness_s", "flush_s", "gap_s", "key", "late",
                 "late_sink", "names", "quiet_s", "store")  # fmt: skip

    def __init__(  # noqa: PLR0917  # the file's keys, as keywords
        self,
        key: str,
        aggregate: Mapping[str, Any],
        gap_s: int | None = None,
        size_s: int | None = None,
        slide_s: int | None = None,
        time: str = "event",
        field: str | None = None,
        allowed_lateness_s: int = 0,
        late: str | None = None,
        state: str = "dynamodb",
        function: str = "",
        table: str | None = None,
        table_prefix: str = "",
        store: WindowStore | None = None,
        quiet_s: int | None = 300,
        now: Callable[[], float] = time.time,
        lineage: Lineage | None = None,
        max_record_age_s: int | None = None,
        parallelization: int = 1,
        flush_s: int | None = None,
    ) -> None:
        problem = (  # its sizes first, as it always reported them
            session_problem(gap_s, size_s, slide_s, allowed_lateness_s)
            or settings_problem(state, store is not None, table, None, time, field, key, aggregate)
            or quiet_problem(quiet_s)
        )
        if problem is not None:
            raise WindowConfigError(problem)
        self.key = key
        self.gap_s: int = gap_s  # type: ignore[assignment]  # session_problem: an int
        self._time_event = time == "event"
        self._field = field or ""
        self.allowed_lateness_s = allowed_lateness_s
        self.late_sink = late
        self._late_routes = (late,) if late else None
        self._function = function
        self.aggregate = dict(aggregate)
        self.names = tuple(self.aggregate)
        self._aggs: tuple[Aggregation, ...] = tuple(
            _aggregation(name, spec) for name, spec in self.aggregate.items()
        )
        self._sized = _budgeted(self._aggs)  # before the fold: it sets their budgets
        self._fold = compile_fold(self._aggs, self.names)
        if store is None:
            store = (
                MemoryStore(
                    table_prefix,
                    self.gap_s,
                    session_end_of(self.gap_s),
                    sized=unbounded(self._aggs),
                )
                if state == "memory"
                else DynamoDBStore(
                    table or "",
                    table_prefix,
                    allowed_lateness_s,
                    self.gap_s,
                    now=now,
                    end_of=session_end_of(self.gap_s),
                    high_water=parallelization > 1,  # lanes mode (issue 16, slice S6)
                    max_record_age_s=max_record_age_s or DEFAULT_MAX_RECORD_AGE_S,
                )
            )
        elif parallelization > 1 and not store.high_water:
            msg = (
                f"parallelization {parallelization} with a store that decides redeliveries "
                "by the applied position alone: a lagging lane's records would be skipped"
            )
            raise WindowConfigError(msg)
        #: whether the lanes rules (a record at or before ``applied`` may be a lagging
        #: lane's new one: :meth:`_decided`) may run: they run while the store's mode is
        #: lanes mode (:attr:`WindowStore.high_water`, read per attempt: a DynamoDB store
        #: of one lane turns it on for good when it meets a shard lanes mode wrote, the
        #: way back from ``parallelization`` above 1). The memory store, always in lanes
        #: mode, runs them with ``parallelization`` above 1 only: it would pay ~20% per
        #: record and keep every outcome for nothing (review 10: ``shardline test``,
        #: ``invoke``)
        self._lanes = parallelization > 1 or not isinstance(store, MemoryStore)
        if parallelization > 1 and isinstance(store, MemoryStore):
            store.keeps_outcomes = True
        self.store: WindowStore = store
        problem = flush_problem(flush_s, memory=isinstance(store, MemoryStore))
        if problem is not None:
            raise WindowConfigError(problem)
        self.quiet_s = quiet_s
        #: seconds between scheduled flushes (0: none): what the deploy schedules
        self.flush_s = flush_every(flush_s, memory=isinstance(store, MemoryStore))
        self._now = now
        self._lineage: Lineage = lineage or (
            StaticLineage() if isinstance(store, MemoryStore) else KinesisLineage()
        )
        store.bind(self._merge)
        #: late records dropped (no ``late`` sink), since this step was built
        self.late = 0
        #: per thread, the batch's outcomes by record (``pending``) and the heirs' floors
        #: (``floors``): a local run calls one step from a thread per shard (as
        #: :class:`processors.window.Window` does)
        self._batch = _Batch()
        self._locks = _ShardLocks()
        #: shard id -> (the state indexed, key -> the starts of its open sessions)
        self._index: dict[str, tuple[ShardState, dict[Any, list[float]]]] = {}

    # -- per batch ------------------------------------------------------------------------

    #: apply the batch in shard order, commit once per shard, keep each outcome; a state
    #: too large for an item or a lost claim applies the shard's records again: the
    #: window step's own (:meth:`processors.window.Window.prepare`)
    prepare = Window.prepare
    _prepare_run = Window._prepare_run

    def _prepare_shard(  # noqa: PLR0915  # the per-record hot path, in one frame
        self,
        records: Sequence[Record],
        pending: dict[int, Outcome],
        refused: frozenset[tuple[Any, Any]] = frozenset(),
    ) -> None:
        """One shard's records: apply, then commit. ``refused``: sessions whose item this
        batch would make too large for DynamoDB; their keys' records are dead-lettered."""
        shard_id = records[0].shard_id
        state = self._shard_state(records[0])  # type: ignore[misc]  # Window's, same slots
        index = self._index_of(shard_id, state)
        refused_keys = frozenset(key for key, _ in refused)
        if state.outbox:  # what positions before this batch's first applied record yielded
            start = _position(records[0])
            state.outbox = {p: o for p, o in state.outbox.items() if p >= start}
        changed: set[tuple[Any, Any]] = set()
        closer: Record | None = None  # the last record applied now that yields no error
        apply = self._apply
        # lanes mode (the store keeps the high-water): a record at or before ``top`` may
        # have been decided already, by its key's high-water (:meth:`_decided`); the
        # store's mode as this attempt read it (after the state: :meth:`_shard_state`)
        exact = self._lanes and self.store.high_water
        top = None if not exact or state.applied is None else position_mark(state.applied)
        looked: list[bool] = []  # whether the store's outcomes of the batch were read
        decided_at: tuple[str, Mark] | None = None
        for rec in records:
            part = rec.part  # _position(rec), inline
            position = (
                int(rec.sequence_number),
                rec.sub_sequence_number,
                tuple(int(p) for p in part.split(".")) if part else (),
            )
            applied = state.applied
            if exact:
                decided_at = (rec.partition_key, _mark(rec))
                if top is not None:
                    if decided_at[1] > top:
                        top = None  # the rest of the batch comes after it (shard order)
                    elif self._decided(rec, decided_at, state, index):
                        self._replay(rec, position, state, records, looked, pending)
                        continue
                if applied is None or position > applied:
                    state.applied = position
            elif applied is not None and position <= applied:
                outcome = state.outbox.get(position)
                if outcome is not None:
                    pending[id(rec)] = outcome
                continue
            else:
                state.applied = position
            try:
                if refused_keys:
                    key = rec.as_dict().get(self.key)
                    if type(key) in _KEY_TYPES and _text_or_none(key) in refused_keys:
                        _refuse_key(key)
                outcome = apply(rec, state, index, changed, decided_at)
            except RecordError as exc:
                outcome = Outcome(error=exc)
                # decided on its key: yields its error again; one too many partition keys
                # for it raises no high-water (it would pass the bound): refused again
                if decided_at is not None and not isinstance(exc, TooManyPartitionKeys):
                    self._raise_key_hw(rec, state, decided_at)
            if outcome is _NOTHING:
                closer = rec
                continue
            state.outbox[position] = outcome
            pending[id(rec)] = outcome
            if outcome.error is None and not outcome.late:
                closer = rec
        self._commit(shard_id, state, changed, closer)

    def _decided(
        self,
        rec: Record,
        at: tuple[str, Mark],
        state: ShardState,
        index: dict[Any, list[float]],
    ) -> bool:
        """Lanes mode: whether the record (partition key and mark ``at``) was decided
        already: its key's high-water for its partition key, the greatest of its open
        sessions' ``hw`` and the key's own (:attr:`ShardState.key_hw`: closed sessions,
        late and refused records), is at or past it (Lambda keeps a partition key's
        order). Unlike tumbling windows, "the open session around its time says so" is
        no proof it was applied: a late record can lie inside a session that a later
        record of its partition key extended; so a decided record yields what its
        outcome was (late included), never a verdict made again. A record whose key
        cannot be read is a record fault, decided again."""
        key = self._key_or_none(rec)
        if key is None:
            return False
        pk, mark = at
        starts = index.get(key)
        if starts and _seen(state.hw, key, starts, pk, mark):
            return True
        held = state.key_hw.get(key)
        return held is not None and _seen({(key, 0): held}, key, (0,), pk, mark)

    def _replay(  # noqa: PLR0917  # the batch's place, as the loop has it
        self,
        rec: Record,
        position: tuple[int, int, tuple[int, ...]],
        state: ShardState,
        records: Sequence[Record],
        looked: list[bool],
        pending: dict[int, Outcome],
    ) -> None:
        """A record decided already yields its outcome: from the shard's outbox, else from
        what the store kept of the batch's positions (read once per batch), else nothing."""
        outcome = state.outbox.get(position)
        if outcome is None and not looked:
            looked.append(True)
            kept = self.store.outcomes(records[0].shard_id, _position(records[0]),
                                       _position(records[-1]))  # fmt: skip
            for at, was in kept.items():
                state.outbox.setdefault(at, was)
            outcome = state.outbox.get(position)
        if outcome is not None:
            pending[id(rec)] = outcome

    def _key_or_none(self, rec: Record) -> Any:
        """The record's key's text, or ``None`` if it has none (a record fault)."""
        try:
            key = rec.as_dict().get(self.key)
            if type(key) is not str or key[:1] == MARKER:
                key = _key_text(key, self.key)
        except RecordError:
            return None
        return key

    def _raise_key_hw(self, rec: Record, state: ShardState, at: tuple[str, Mark]) -> None:
        """A record decided on its key outside any session (late, refused): the key's
        high-water for its partition key, so that a redelivery yields its outcome."""
        key = self._key_or_none(rec)
        if key is not None:
            _raise_one(state.key_hw, key, at[0], at[1], self.store.hw_bound)
            state.raised.add(key)

    def _commit(
        self, shard_id: str, state: ShardState, changed: set[tuple[Any, Any]], closer: Record | None
    ) -> None:
        """Close quiet shards' sessions, then commit: the heap's head first made true (a
        grown session leaves its old end behind), since the store keeps it as the shard's
        next end, by which other shards' batches find it quiet. A parent's session claimed
        under another start (joined at inheritance with the other parent's) is also
        written closed in this shard's partition, so a cold start does not inherit it
        again."""
        _drop_stale(state)
        if state.inherited:
            for origins in state.claims(changed).values():
                for origin in origins:
                    if origin.window is not None and origin.window not in state.windows:
                        changed.add(origin.window)
        state.forget_foreign(self.gap_s, self.allowed_lateness_s)  # start + gap: its least end
        self.store.commit(shard_id, state, changed, self._close_quiet(shard_id, state, closer))

    def _index_of(self, shard_id: str, state: ShardState) -> dict[Any, list[float]]:
        """The starts of each key's open sessions in ``state``: kept while the store hands
        back the same state object (a warm shard), rebuilt from its windows otherwise
        (after joining the inherited sessions that overlap, :meth:`_join_inherited`)."""
        known = self._index.get(shard_id)
        if known is not None and known[0] is state:
            return known[1]
        if state.inherited:
            self._join_inherited(state)
        index: dict[Any, list[float]] = {}
        for key, start in state.windows:
            index.setdefault(key, []).append(start)
        self._index[shard_id] = (state, index)
        return index

    def _close_quiet(
        self, shard_id: str, mine: ShardState, closer: Record | None
    ) -> dict[str, ShardState]:
        """Close the sessions of the function's quiet shards whose end + lateness is
        ``quiet_s`` past by the clock, as :meth:`processors.window.Window._close_quiet`
        does windows; the results go out with ``closer``."""
        if closer is None or self.quiet_s is None:
            return {}
        cutoff = self._now() - self.quiet_s
        quiet = self.store.quiet(shard_id, cutoff)
        results: list[dict[str, Any]] = []
        closed: dict[str, ShardState] = {}
        for other, state in quiet.items():
            if other in mine.ancestors:  # inherited by this batch: its sessions go on here
                continue
            found = self._due_results(other, state, cutoff)
            if found:
                closed[other] = state
                results += found
        if results:
            _send_with(closer, mine, results, self._batch.pending)
        return closed

    def _due_results(self, shard_id: str, state: ShardState, cutoff: float) -> list[dict[str, Any]]:
        """The quiet rule on one shard, as :meth:`processors.window.Window._due_results`
        (another shard's batch and a flush's tick share it): its sessions whose end +
        lateness is at or before ``cutoff`` close (inherited ones are held)."""
        _drop_stale(state)
        watermark = cutoff - self.allowed_lateness_s
        if (state.max_time is not None and state.max_time >= cutoff) or not (
            state.ends and state.ends[0] <= watermark
        ):
            return []
        found = self._close(state, watermark, None, None, held=True)
        if found:
            state.max_time = cutoff
            self._index.pop(shard_id, None)
        return found

    def _tick_inherited(
        self, arn: str, shard_id: str, state: ShardState, now: float, closed: set[Any]
    ) -> list[dict[str, Any]]:
        """The quiet rule on a reshard's child that still holds sessions of its parents
        (a flush's tick), as :meth:`processors.window.Window._tick_inherited`: after
        joining the inherited sessions that overlap, its own sessions behind now -
        ``quiet_s`` close, and the inherited ones every other heir is past too. ``closed``
        gets the inherited sessions closed, and a part claimed under another start (as
        :meth:`_commit` writes it closed here, so a cold start does not inherit it again)."""
        cutoff = now - self.quiet_s if self.quiet_s is not None else now
        _drop_stale(state)
        if state.max_time is not None and state.max_time >= cutoff:
            return []
        self._join_inherited(state)
        inherited = set(state.inherited)
        self._batch.floors = self._heirs_floor(arn, shard_id, state, now)  # type: ignore[misc]
        changed: set[tuple[Any, Any]] = set()
        found = self._close(state, cutoff - self.allowed_lateness_s, None, changed)
        closed.update(w for w in changed if w in inherited)
        for origins in state.claims(changed).values():
            for origin in origins:
                if origin.window is not None and origin.window not in state.windows:
                    closed.add(origin.window)
        if found:
            state.max_time = cutoff
            self._index.pop(shard_id, None)
        return found

    #: a scheduled flush (issue 16): the window step's, with this step's quiet rule
    tick = Window.tick
    ack = Window.ack

    #: what a record's outcome becomes: the window step's own (the same ``_batch``,
    #: ``_late_routes`` and ``late``), one piece of code for both on the per-record path
    __call__ = Window.__call__

    # -- reshards: the window step's (README, "Windows": reshards) ----------------------------

    #: a shard's state for its batch, inherited from its parents when it has none yet
    _shard_state = Window._shard_state
    #: the other heirs' watermarks, by which an inherited session no record added to closes
    _heirs_floor = Window._heirs_floor
    _frontier = Window._frontier
    _closable = Window._closable

    def _merge(self, a: list[Any], b: list[Any]) -> list[Any]:
        """Two sessions' accumulators joined (``a``'s records first, ties included), then
        the later of their last event times."""
        out = [agg.merge(x, y) for agg, x, y in zip(self._aggs, a, b, strict=False)]
        out.append(max(a[-1], b[-1]))
        return out

    def _join_inherited(self, state: ShardState) -> None:
        """After a merge of shards, a key's sessions from the two parents that are less
        than ``gap_s`` apart are one session, under the earlier start (as the records of
        both would have made on one shard); each part is claimed, when the session is, at
        its own parent under its own start (:attr:`Inherited.window`). Also puts an
        inherited session at its end where the store's seed joined two parts of one start
        under the first one's."""
        gap = self.gap_s
        windows, _, by_end = _views(state)
        inherited = _held(state)
        placed = {wkey: end for end, wkeys in by_end.items() for wkey in wkeys}
        of_key: dict[Any, list[Wkey]] = {}
        for wkey in inherited:
            if wkey in placed:  # (a session waiting for the other heirs is behind them all)
                of_key.setdefault(wkey[0], []).append(wkey)
        for wkeys in of_key.values():
            wkeys.sort(key=lambda w: w[1])
            head = wkeys[0]
            for wkey in wkeys[1:]:
                if wkey[1] >= windows[head][-1] + gap:
                    head = wkey
                    continue
                _unplace(state, wkey, placed.pop(wkey))
                windows[head] = self._merge(windows[head], windows.pop(wkey))
                parts = inherited.pop(wkey)
                inherited[head] = (
                    *inherited[head],
                    *(o if o.window is not None else replace(o, window=wkey) for o in parts),
                )
            for wkey in wkeys:
                end = placed.get(wkey)
                if end is not None and end != windows[wkey][-1] + gap:
                    _unplace(state, wkey, end)
                    _place(state, wkey, windows[wkey][-1] + gap)
        state.ends = sorted(by_end)  # a sorted list is a heap

    # -- per record -----------------------------------------------------------------------

    def _apply(
        self,
        rec: Record,
        state: ShardState,
        index: dict[Any, list[float]],
        changed: set[tuple[Any, Any]],
        at: tuple[str, Mark] | None = None,
    ) -> Outcome:
        """Apply one record; ``at`` (lanes mode): its partition key and mark, by which the
        sessions' and the key's high-water rise (:meth:`_decided`)."""
        doc = rec.json
        if type(doc) is not dict:
            doc = rec.as_dict()  # raises its DecodeError
        get = doc.get
        key = get(self.key)
        if type(key) is not str or key[:1] == MARKER:  # else its own text
            key = _key_text(key, self.key)
        if len(key) > _SHORT_KEY and _too_long(key):
            raise _long_key(key, self.key)
        if self._time_event:  # event_seconds, its common case inline
            raw: Any = get(self._field)
            kind = type(raw)
            if kind is int or kind is float:  # as the window step's loop: no calls
                if _MS_LOW < raw < MS_THRESHOLD:
                    t = raw * 1.0
                elif raw - raw == 0:  # finite: milliseconds
                    t = raw / 1000.0
                else:  # NaN or infinite (a step before set it): the record's error
                    t = event_seconds(raw, self._field)
            else:
                t = event_seconds(raw, self._field)
        else:
            t = rec.arrival
        fold = self._fold
        values = fold.read(get)  # checked before anything changes
        if self._sized:
            _refuse_large(self._sized, get)
        if at is not None:  # lanes: before it raises a high-water, late or not
            self._admit(key, at[0], state, index)
        max_time = state.max_time
        if max_time is not None and t < max_time - self.allowed_lateness_s:
            if at is not None:  # decided outside any session: the key's high-water
                _raise_one(state.key_hw, key, at[0], at[1], self.store.hw_bound)
                state.raised.add(key)
            return _LATE
        self._join(key, float(t), state, index, changed, values=values, at=t, mark=at)
        if max_time is None or t > max_time:
            state.max_time = max_time = t
            state.lift = 0.0  # event time again (:attr:`ShardState.lift`)
        watermark = max_time - self.allowed_lateness_s
        if (not state.ends or state.ends[0] > watermark) and not state.waiting:
            return _NOTHING
        results = self._close(state, watermark, index, changed)
        return Outcome(tuple(results)) if results else _NOTHING

    def _admit(self, key: Any, pk: str, state: ShardState, index: dict[Any, list[float]]) -> None:
        """Lanes: :class:`~processors.window.TooManyPartitionKeys` if the record's partition
        key ``pk`` would make its key's high-water (:meth:`_decided`: its open sessions'
        and the key's own, which a closed session's, a late record and a refused one
        raise) name more than ``HW_MAX_PKS`` partition keys (:func:`~processors.window.crowded`).
        Per key, not per session: a closing session's partition keys go to the key's own
        high-water, which the bound holds too. Deterministic on redelivery: the key's
        high-water only grows and the refused record raises none of it."""
        held = state.key_hw.get(key)
        if held is not None and pk in held:
            return
        starts = index.get(key)
        hw = _hw(state)
        parts = [part for s in starts if (part := hw.get((key, s)))] if starts else []
        if any(pk in part for part in parts):
            return
        if not parts:
            names = held
        else:
            names = dict(held) if held else {}
            for part in parts:
                names.update(part)
        if names is not None and crowded(names, pk, names):
            raise TooManyPartitionKeys(self._function, f"session key {key!r}", pk)

    def _join(  # noqa: PLR0915  # the per-record hot path, in one frame
        self,
        key: Any,
        t: float,
        state: ShardState,
        index: dict[Any, list[float]],
        changed: set[tuple[Any, Any]],
        *,
        values: Any,
        at: float,
        mark: tuple[str, Mark] | None = None,
    ) -> list[Any]:
        """Add the record (``values``, event time ``at``; ``t`` as a float) to the session
        of ``key`` that ``t`` belongs to, after it: a new one, an open one (its start moved
        back, its end on), or the merge of the open ones ``t`` bridges; its accumulators.
        The sessions that are gone leave the state and are marked changed (the store
        writes them closed). The record is folded in before anything changes, so a record
        an aggregation refuses (its ``add`` raised) leaves the sessions as they were."""
        fold = self._fold.fold
        gap = self.gap_s
        windows: dict[Any, list[Any]] = state.windows
        starts = index.get(key)
        if starts is None:
            starts = index[key] = []
        reach = t + gap  # both sides compare a time with an earlier one plus the gap, so
        # a pair of records is one session or two whatever the order they come in
        touching = []  # a loop, not a comprehension: no frame of its own, per record
        for s in starts:
            if s < reach and t < windows[key, s][-1] + gap:
                touching.append(s)
        if len(touching) == 1 and touching[0] <= t:  # the common case: one session, on
            wkey = (key, touching[0])
            accs = windows[wkey]
            fold(accs, values, at)
            last = accs[-1]
            if t > last:
                by_end: dict[Any, list[Any]] = state.by_end
                of_end = by_end[last + gap]
                of_end.remove(wkey)
                if not of_end:
                    del by_end[last + gap]
                accs[-1] = t
                end = t + gap
                to_end = by_end.get(end)
                if to_end is None:
                    by_end[end] = [wkey]
                    ends: list[Any] = state.ends
                    heapq.heappush(ends, end)
                else:
                    to_end.append(wkey)
            changed.add(wkey)
            if mark is not None:
                _raise_one(state.hw, wkey, mark[0], mark[1], self.store.hw_bound)
            return accs
        touching.sort()
        if not touching:
            accs = self._fold.create()
            accs.append(t)
            fold(accs, values, at)
            self._open(state, (key, t), accs, starts)
            changed.add((key, t))
            if mark is not None:
                _hw(state)[key, t] = {mark[0]: mark[1]}
            return accs
        first = touching[0]
        accs = self._merged(windows, key, touching)
        fold(accs, values, at)
        for start in touching:
            self._remove(state, (key, start), starts, changed)
        accs[-1] = max(accs[-1], t)
        wkey = (key, min(first, t))
        self._open(state, wkey, accs, starts)
        changed.add(wkey)
        if mark is not None:
            self._merge_hw(state, key, touching, wkey, mark)
        return accs

    def _merge_hw(
        self, state: ShardState, key: Any, touching: list[Any], wkey: Wkey, mark: tuple[str, Mark]
    ) -> None:
        """Lanes mode: a merged (or moved) session's high-water is the greatest of its
        parts', per partition key, and the record's (a part's partition key other than the
        record's keeps its own mark: design §5.2)."""
        bound = self.store.hw_bound
        parts = [state.hw.pop((key, start), None) for start in touching]
        for held in parts:
            for pk, top in (held or {}).items():
                _raise_one(state.hw, wkey, pk, top, bound)
        _raise_one(state.hw, wkey, mark[0], mark[1], bound)

    def _merged(self, windows: dict[Any, list[Any]], key: Any, touching: list[Any]) -> list[Any]:
        """The accumulators of the sessions of ``key`` starting at ``touching`` as one, the
        sessions left as they are: a plugin's merge may change its arguments, so while the
        record may yet be refused (an add that can raise) they are merged from copies."""
        guard = copy.deepcopy if self._fold.guarded and len(touching) > 1 else _same
        accs = guard(windows[key, touching[0]])
        for start in touching[1:]:  # later sessions, their records after ``accs``'s
            accs = self._merge(accs, guard(windows[key, start]))
        return accs

    def _open(self, state: ShardState, wkey: Wkey, accs: list[Any], starts: list[float]) -> None:
        _views(state)[0][wkey] = accs
        starts.append(wkey[1])
        _place(state, wkey, accs[-1] + self.gap_s)

    def _remove(
        self, state: ShardState, wkey: Wkey, starts: list[float], changed: set[tuple[Any, Any]]
    ) -> list[Any]:
        """Take an open session out of the state (its heap entry stays, stale: skipped)."""
        accs: list[Any] = _views(state)[0].pop(wkey)
        starts.remove(wkey[1])
        _unplace(state, wkey, accs[-1] + self.gap_s)
        changed.add(wkey)
        return accs

    def _close(
        self,
        state: ShardState,
        watermark: float,
        index: dict[Any, list[float]] | None,
        changed: set[tuple[Any, Any]] | None,
        *,
        held: bool = False,
    ) -> list[dict[str, Any]]:
        """Close every session whose end is at or before ``watermark``: by end, then in the
        order they took that end. Returns their results. An inherited session no record
        of this batch added to waits for the other heirs' watermarks too
        (:meth:`_closable`, in ``state.waiting``); ``held`` (a quiet shard closed by
        another's batch): inherited sessions stay, for the shard's own next record."""
        _, ends, by_end = _views(state)
        inherited, waiting = state.inherited, state.waiting
        results = []
        kept: list[tuple[Any, Wkey]] = []
        while ends and ends[0] <= watermark:
            end = heapq.heappop(ends)
            for wkey in by_end.pop(end, ()):
                if inherited and wkey in inherited:
                    if held:
                        kept.append((end, wkey))
                        continue
                    if not self._closable(wkey, end, state, changed):  # type: ignore[misc,arg-type]
                        waiting.setdefault(end, []).append(wkey)
                        continue
                results.append(self._end(state, wkey, index, changed))
        if waiting and not held:
            for end in sorted(waiting):
                wait = []
                for wkey in waiting.pop(end):
                    if self._closable(wkey, end, state, changed):  # type: ignore[misc,arg-type]
                        results.append(self._end(state, wkey, index, changed))
                    else:
                        wait.append(wkey)
                if wait:
                    waiting[end] = wait
        for end, wkey in kept:
            _place(state, wkey, end)
        _drop_stale(state)
        return results

    def _end(
        self,
        state: ShardState,
        wkey: Wkey,
        index: dict[Any, list[float]] | None,
        changed: set[tuple[Any, Any]] | None,
    ) -> dict[str, Any]:
        """A session out of the state, and its result; in lanes mode its high-water goes
        to its key's (a redelivery cannot name a closed session: :meth:`_decided`)."""
        accs = _views(state)[0].pop(wkey)
        if state.hw:
            held = _hw(state).pop(wkey, None)
            if held:
                bound = self.store.hw_bound
                for pk, top in held.items():
                    _raise_one(state.key_hw, wkey[0], pk, top, bound)
                state.raised.add(wkey[0])
        if index is not None:
            index[wkey[0]].remove(wkey[1])
        if changed is not None:
            changed.add(wkey)
        return self._result(wkey, accs)

    def _result(self, wkey: tuple[Any, Any], accs: list[Any]) -> dict[str, Any]:
        key, start = wkey  # the key's text (processors.window_keys)
        start_iso = iso(start)
        window_id = f"{self._function}/{key}/{start_iso}"
        value = key if key[:1] != MARKER else key_value(key)
        end_iso = iso(accs[-1] + self.gap_s)
        return self._fold.result(window_id, value, start_iso, end_iso, accs)


def _same(accs: list[Any]) -> list[Any]:
    return accs


def _views(state: ShardState) -> tuple[dict[Any, list[Any]], list[Any], dict[Any, list[Any]]]:
    """The state's open windows, heap of ends and windows by end, typed for sessions: their
    starts and ends are event times (floats), where tumbling windows' are whole seconds."""
    return state.windows, state.ends, state.by_end


def _hw(state: ShardState) -> dict[Any, dict[str, Mark]]:
    """The state's windows' high-water (lanes mode), typed for sessions (as :func:`_views`)."""
    return state.hw


def _held(state: ShardState) -> dict[Any, tuple[Inherited, ...]]:
    """The state's inherited sessions, typed for sessions (as :func:`_views`)."""
    return state.inherited


def _place(state: ShardState, wkey: Wkey, end: float) -> None:
    """A session at its end: last among those of that end."""
    _, ends, by_end = _views(state)
    of_end = by_end.get(end)
    if of_end is None:
        by_end[end] = [wkey]
        heapq.heappush(ends, end)
    else:
        of_end.append(wkey)


def _unplace(state: ShardState, wkey: Wkey, end: float) -> None:
    """A session away from its end (the heap entry stays, stale: :func:`_drop_stale`)."""
    _, _, by_end = _views(state)
    of_end = by_end[end]
    of_end.remove(wkey)
    if not of_end:
        del by_end[end]


def _drop_stale(state: ShardState) -> None:
    """Pop the heap's ends that no session has any more (a session's end moves on as it
    grows), so that its head, which the store keeps as the shard's next end, is true."""
    ends, by_end = state.ends, state.by_end
    while ends and ends[0] not in by_end:
        heapq.heappop(ends)


def _text_or_none(key: Any) -> str | None:
    """A key's text, ``None`` for a key that has none (its record is dead-lettered anyway)."""
    try:
        return key_text(key)
    except ValueError:
        return None


def _refuse_key(key: Any) -> None:
    msg = (
        f"the session of key {key!r} is too large to store with this record (its state would "
        f"be over DynamoDB's 400 KB item limit): the record is not aggregated"
    )
    raise ValueTooLarge(msg)
