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
* **Ids.** ``window_id`` = ``FUNCTION/KEY/START``, START the session's first event time
  (ISO-8601, milliseconds when there are some). A session's start moves while it is open
  (an out-of-order record before it, or a merge), never after it closed, and the records
  of a shard are applied in order from the committed state, so a session gets the same id
  on any redelivery and across any batch boundaries; a merged session takes the earlier
  start.
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
from typing import TYPE_CHECKING, Any

from processors.aggregations import ValueTooLarge
from processors.fold import compile_fold
from processors.window import (
    _KEY_TYPES,
    _SHORT_KEY,
    MS_THRESHOLD,
    Window,
    WindowConfigError,
    _aggregation,
    _Batch,
    _budgeted,
    _long_key,
    _position,
    _refuse_large,
    _too_long,
    event_seconds,
    iso,
)
from processors.window_store import (
    DynamoDBStore,
    MemoryStore,
    Outcome,
    ShardState,
    StateTooLarge,
    WindowRecordError,
    WindowStore,
)
from stream.exceptions import RecordError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from processors.aggregations import Aggregation
    from stream.records import Record

__all__ = ["SessionWindow", "session_end_of", "session_problem"]

_TIMES = ("event", "arrival")
_STATES = ("memory", "dynamodb")
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

    Raises:
        WindowConfigError: a setting is missing or wrong (the message says which).
        AggregationError: an unknown aggregation, or one without its field.
    """

    #: its state remembers the last position applied: the chain gives it no record after
    #: an earlier retryable failure of the shard (:func:`processors.chain._hold_back`)
    in_order = True

    __slots__ = ("_aggs", "_batch", "_field", "_fold", "_function", "_index", "_late_routes",
                 "_now", "_sized", "_time_event", "aggregate",
                 "allowed_lateness_s", "gap_s", "key", "late", "late_sink", "names", "quiet_s",
                 "store")  # fmt: skip

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
    ) -> None:
        problem = session_problem(gap_s, size_s, slide_s, allowed_lateness_s)
        if problem is not None:
            raise WindowConfigError(problem)
        if state not in _STATES:
            msg = f"state {state!r}: expected one of {', '.join(_STATES)}"
            raise WindowConfigError(msg)
        if state == "dynamodb" and store is None and not table:
            msg = (
                "state: dynamodb needs table: the window state table (the plan fills it in); "
                "or state: memory (kept in the process, lost on a cold start)"
            )
            raise WindowConfigError(msg)
        if time not in _TIMES:
            msg = f"time {time!r}: expected event (a field of the record) or arrival"
            raise WindowConfigError(msg)
        if time == "event" and not field:
            msg = "time: event needs field: the record field holding the event time"
            raise WindowConfigError(msg)
        if not key:
            raise WindowConfigError("key: the record field whose value names the key")
        if not aggregate:
            msg = "aggregate: name at least one result, e.g. {purchases: count}"
            raise WindowConfigError(msg)
        if quiet_s is not None and (type(quiet_s) is not int or quiet_s < 1):
            msg = f"quiet_s must be a whole number of seconds of at least 1, got {quiet_s!r}"
            raise WindowConfigError(msg)
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
                MemoryStore()
                if state == "memory"
                else DynamoDBStore(
                    table or "",
                    table_prefix,
                    allowed_lateness_s,
                    self.gap_s,
                    now=now,
                    end_of=session_end_of(self.gap_s),
                )
            )
        self.store: WindowStore = store
        self.quiet_s = quiet_s
        self._now = now
        #: late records dropped (no ``late`` sink), since this step was built
        self.late = 0
        #: per thread, the batch's outcomes by record (``pending``): a local run calls one
        #: step from a thread per shard (as :class:`processors.window.Window` does)
        self._batch = _Batch()
        #: shard id -> (the state indexed, key -> the starts of its open sessions)
        self._index: dict[str, tuple[ShardState, dict[Any, list[float]]]] = {}

    # -- per batch ------------------------------------------------------------------------

    def prepare(self, records: Sequence[Record]) -> None:
        """Apply the batch, in shard order; commit once per shard; keep each outcome
        (the window step's batch discipline, :meth:`processors.window.Window.prepare`)."""
        pending: dict[int, Outcome] = {}
        self._batch.pending = pending
        first = 0
        for i in range(1, len(records) + 1):
            if i == len(records) or records[i].shard_id != records[first].shard_id:
                run = records[first:i]
                refused: frozenset[Any] = frozenset()
                while True:
                    try:
                        self._prepare_shard(run, pending, refused)
                        break
                    except StateTooLarge as exc:  # without those keys' records: again
                        keys = frozenset(key for key, _ in exc.windows)
                        if keys <= refused:
                            raise
                        refused |= keys
                        for rec in run:
                            pending.pop(id(rec), None)
                first = i

    def _prepare_shard(
        self, records: Sequence[Record], pending: dict[int, Outcome], refused: frozenset[Any]
    ) -> None:
        """One shard's records: apply, then commit. ``refused``: keys whose session item
        this batch would make too large for DynamoDB; their records are dead-lettered."""
        shard_id = records[0].shard_id
        state = self.store.shard(shard_id)
        index = self._index_of(shard_id, state)
        if state.outbox:  # what positions before this batch's first applied record yielded
            start = _position(records[0])
            state.outbox = {p: o for p, o in state.outbox.items() if p >= start}
        changed: set[tuple[Any, Any]] = set()
        closer: Record | None = None  # the last record applied now that yields no error
        apply = self._apply
        for rec in records:
            part = rec.part  # _position(rec), inline
            position = (
                int(rec.sequence_number),
                rec.sub_sequence_number,
                tuple(int(p) for p in part.split(".")) if part else (),
            )
            applied = state.applied
            if applied is not None and position <= applied:
                outcome = state.outbox.get(position)
                if outcome is not None:
                    pending[id(rec)] = outcome
                continue
            state.applied = position
            try:
                if refused:
                    key = rec.as_dict().get(self.key)
                    if type(key) in _KEY_TYPES and key in refused:  # (a list is not hashable)
                        _refuse_key(key)
                outcome = apply(rec, state, index, changed)
            except RecordError as exc:
                outcome = Outcome(error=exc)
            if outcome is _NOTHING:
                closer = rec
                continue
            state.outbox[position] = outcome
            pending[id(rec)] = outcome
            if outcome.error is None and not outcome.late:
                closer = rec
        self._commit(shard_id, state, changed, closer)

    def _commit(
        self, shard_id: str, state: ShardState, changed: set[tuple[Any, Any]], closer: Record | None
    ) -> None:
        """Close quiet shards' sessions, then commit: the heap's head first made true (a
        grown session leaves its old end behind), since the store keeps it as the shard's
        next end, by which other shards' batches find it quiet."""
        _drop_stale(state)
        self.store.commit(shard_id, state, changed, self._close_quiet(shard_id, state, closer))

    def _index_of(self, shard_id: str, state: ShardState) -> dict[Any, list[float]]:
        """The starts of each key's open sessions in ``state``: kept while the store hands
        back the same state object (a warm shard), rebuilt from its windows otherwise."""
        known = self._index.get(shard_id)
        if known is not None and known[0] is state:
            return known[1]
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
        watermark = cutoff - self.allowed_lateness_s
        for other, state in quiet.items():
            _drop_stale(state)
            if (state.max_time is not None and state.max_time >= cutoff) or not (
                state.ends and state.ends[0] <= watermark
            ):
                continue
            state.max_time = cutoff
            closed[other] = state
            self._index.pop(other, None)
            results += self._close(state, watermark, None, None)
        if not results:
            return {}
        position = _position(closer)
        before = mine.outbox.get(position, _NOTHING)
        outcome = Outcome((*before.results, *results))
        mine.outbox[position] = outcome
        self._batch.pending[id(closer)] = outcome
        return closed

    #: what a record's outcome becomes: the window step's own (the same ``_batch``,
    #: ``_late_routes`` and ``late``), one piece of code for both on the per-record path
    __call__ = Window.__call__

    # -- per record -----------------------------------------------------------------------

    def _apply(
        self,
        rec: Record,
        state: ShardState,
        index: dict[Any, list[float]],
        changed: set[tuple[Any, Any]],
    ) -> Outcome:
        doc = rec.json
        if type(doc) is not dict:
            doc = rec.as_dict()  # raises its DecodeError
        get = doc.get
        key = get(self.key)
        if key is None or type(key) not in _KEY_TYPES:
            what = "no" if key is None else f"a {type(key).__name__} in its"
            msg = (
                f"record has {what} key field {self.key!r}: a window needs a string or number there"
            )
            raise WindowRecordError(msg)
        if type(key) is str and len(key) > _SHORT_KEY and _too_long(key):
            raise _long_key(key, self.key)
        if self._time_event:  # event_seconds, its common case inline
            raw: Any = get(self._field)
            kind = type(raw)
            if kind is int or kind is float:
                t = raw / 1000.0 if abs(raw) >= MS_THRESHOLD else float(raw)
            else:
                t = event_seconds(raw, self._field)
        else:
            t = rec.arrival
        fold = self._fold
        values = fold.read(get)  # checked before anything changes
        if self._sized:
            _refuse_large(self._sized, get)
        max_time = state.max_time
        if max_time is not None and t < max_time - self.allowed_lateness_s:
            return _LATE
        self._join(key, float(t), state, index, changed, values=values, at=t)
        if max_time is None or t > max_time:
            state.max_time = max_time = t
        watermark = max_time - self.allowed_lateness_s
        if not state.ends or state.ends[0] > watermark:
            return _NOTHING
        results = self._close(state, watermark, index, changed)
        return Outcome(tuple(results)) if results else _NOTHING

    def _join(
        self,
        key: Any,
        t: float,
        state: ShardState,
        index: dict[Any, list[float]],
        changed: set[tuple[Any, Any]],
        *,
        values: Any,
        at: float,
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
            return accs
        touching.sort()
        if not touching:
            accs = self._fold.create()
            accs.append(t)
            fold(accs, values, at)
            self._open(state, (key, t), accs, starts)
            changed.add((key, t))
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
        return accs

    def _merged(self, windows: dict[Any, list[Any]], key: Any, touching: list[Any]) -> list[Any]:
        """The accumulators of the sessions of ``key`` starting at ``touching`` as one, the
        sessions left as they are: a plugin's merge may change its arguments, so while the
        record may yet be refused (an add that can raise) they are merged from copies."""
        guard = copy.deepcopy if self._fold.guarded and len(touching) > 1 else _same
        accs = guard(windows[key, touching[0]])
        for start in touching[1:]:  # later sessions, their records after ``accs``'s
            other = guard(windows[key, start])
            last = max(accs[-1], other[-1])
            accs = [agg.merge(a, b) for agg, a, b in zip(self._aggs, accs, other, strict=False)]
            accs.append(last)
        return accs

    def _open(self, state: ShardState, wkey: Wkey, accs: list[Any], starts: list[float]) -> None:
        windows, ends, by_end = _views(state)
        windows[wkey] = accs
        starts.append(wkey[1])
        end = accs[-1] + self.gap_s
        of_end = by_end.get(end)
        if of_end is None:
            by_end[end] = [wkey]
            heapq.heappush(ends, end)
        else:
            of_end.append(wkey)

    def _remove(
        self, state: ShardState, wkey: Wkey, starts: list[float], changed: set[tuple[Any, Any]]
    ) -> list[Any]:
        """Take an open session out of the state (its heap entry stays, stale: skipped)."""
        windows, _, by_end = _views(state)
        accs: list[Any] = windows.pop(wkey)
        starts.remove(wkey[1])
        end = accs[-1] + self.gap_s
        of_end = by_end[end]
        of_end.remove(wkey)
        if not of_end:
            del by_end[end]
        changed.add(wkey)
        return accs

    def _close(
        self,
        state: ShardState,
        watermark: float,
        index: dict[Any, list[float]] | None,
        changed: set[tuple[Any, Any]] | None,
    ) -> list[dict[str, Any]]:
        """Close every session whose end is at or before ``watermark``: by end, then in the
        order they took that end. Returns their results."""
        windows, ends, by_end = _views(state)
        results = []
        while ends and ends[0] <= watermark:
            end = heapq.heappop(ends)
            for wkey in by_end.pop(end, ()):
                accs = windows.pop(wkey)
                if index is not None:
                    index[wkey[0]].remove(wkey[1])
                if changed is not None:
                    changed.add(wkey)
                results.append(self._result(wkey, accs))
        _drop_stale(state)
        return results

    def _result(self, wkey: tuple[Any, Any], accs: list[Any]) -> dict[str, Any]:
        key, start = wkey
        start_iso = iso(start)
        window_id = f"{self._function}/{key}/{start_iso}"
        return self._fold.result(window_id, key, start_iso, iso(accs[-1] + self.gap_s), accs)


def _same(accs: list[Any]) -> list[Any]:
    return accs


def _views(state: ShardState) -> tuple[dict[Any, list[Any]], list[Any], dict[Any, list[Any]]]:
    """The state's open windows, heap of ends and windows by end, typed for sessions: their
    starts and ends are event times (floats), where tumbling windows' are whole seconds."""
    return state.windows, state.ends, state.by_end


def _drop_stale(state: ShardState) -> None:
    """Pop the heap's ends that no session has any more (a session's end moves on as it
    grows), so that its head, which the store keeps as the shard's next end, is true."""
    ends, by_end = state.ends, state.by_end
    while ends and ends[0] not in by_end:
        heapq.heappop(ends)


def _refuse_key(key: Any) -> None:
    msg = (
        f"the session of key {key!r} is too large to store with this record (its state would "
        f"be over DynamoDB's 400 KB item limit): the record is not aggregated"
    )
    raise ValueTooLarge(msg)
