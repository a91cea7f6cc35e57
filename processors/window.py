"""The ``window`` step: keyed aggregation over tumbling or hopping windows of event time.

The rules (DESIGN.md, "Windows"; the property test states them against a plain-dict
reference):

* **Windows.** Tumbling windows of ``size_s`` seconds start at multiples of ``size_s`` since
  the epoch; hopping windows (``slide_s`` dividing ``size_s``) start at multiples of
  ``slide_s`` and last ``size_s``, so a record is in ``size_s / slide_s`` of them. A window is
  ``[start, end)``. Session windows (``gap_s``): :mod:`processors.session`.
* **Time.** ``time: event`` reads the record field ``field``: an ISO-8601 string (without an
  offset: UTC) or epoch seconds or milliseconds, told apart by size: a number of at least
  10^11 is milliseconds (10^11 seconds is the year 5138; 10^11 ms is March 1973).
  ``time: arrival`` uses the record's approximate arrival time.
* **Watermark.** Per shard, the greatest event time seen minus ``allowed_lateness_s``,
  advanced record by record in shard order. After a record is applied, every window whose
  end is at or before the watermark closes and yields one result record.
* **Quiet shards.** With ``state: dynamodb``, a shard with no batch for ``quiet_s`` has its
  windows closed by the next batch of another shard (the one applying a record that is not
  late nor bad), as if a record of time now - ``quiet_s`` had reached it; the results go out
  with that record (README, "Windows", states the bound).
* **Reshards.** A shard with no state yet asks its parents (:mod:`processors.lineage`) and
  starts from their open windows and the greatest of their event times; a window it adds
  to or closes is claimed from its parent by the store's commit, so that exactly one child
  owns it; a window another child claimed is closed here. An inherited window this shard
  did not add to closes only when the other heirs' watermarks are past its end too (read
  once per batch, :meth:`Window._heirs_floor`), so no heir's record for it is late
  (README, "Windows", states the rule; the reshard property test holds it against a plain
  reference).
* **Late records.** A record is added to each of its windows that is still open; a record
  none of whose windows is open is late: it goes on (alone, the original record) with its
  route set to the ``late`` sink, or is dropped and counted (:attr:`Window.late`).
* **Results.** ``{"window_id", "key", "window_start", "window_end", <aggregates>}``, times as
  ISO-8601 UTC, ``window_id`` = ``FUNCTION/KEY/START`` (stable across redelivery; KEY the
  key's text, :mod:`processors.window_keys`, which also keys the state). A result
  is a record derived from the record that closed its window (its position, so a failed
  write is reported by that record and redelivered), and flows on through the chain.
* **Redelivery.** Each shard's state remembers the position of the last record it applied
  ("applied" means *at* that record, inclusive). A record at or before it was applied
  already: it changes nothing, and yields again exactly what it yielded the first time
  (its results, or its late routing, or its error), kept per position in the state's
  *outbox*. The outbox forgets positions before the first record of a batch (index 0):
  Lambda never delivers again what lies before a batch it delivers. A batch's records of a
  shard come in shard order (Lambda's, the local mapping's and a redrive's batches), so
  only a prefix can be at or before it: once a record is past it, the rest are applied
  without comparing their positions (the per-record loop reads no sequence number).
  With a store that keeps the windows' high-water (:attr:`WindowStore.high_water`: the
  memory store, and the window step's DynamoDB store with ``parallelization`` above 1;
  with one lane it keeps the applied position alone), a record at or before ``applied``
  counts as applied already only if one of its windows' high-water for its partition key
  is at or past it (:attr:`ShardState.hw`; when none of its windows is open, the closed
  ones' from the store: :meth:`WindowStore.decided`), else it is applied (or late) now:
  with ``parallelization`` > 1 (issue 16) a lagging lane's new records lie before another
  lane's applied ones. What a record applied already yielded comes from the outbox, else
  from the store's entries of the batch's positions (:meth:`WindowStore.outcomes`, read
  once per batch): the outbox no longer holds what lies before a lagging lane's batch. A
  window whose high-water is unknown (an item of an earlier version; more than
  ``HW_MAX_PKS`` partition keys) falls back to "at or before ``applied``: applied
  already" (``processors/window_reads.py``, "Redeliveries", also for a step before the
  window that moves a redelivered record to other windows).
* **Partition keys per window, with lanes.** That fallback is exact with one lane only:
  with ``parallelization`` above 1 it would skip a lagging lane's new record as applied.
  So with lanes a record whose partition key would be one more than ``HW_MAX_PKS`` in the
  high-water of a window it goes into (counting this batch's new keys; a hopping record's
  windows all) is dead-lettered, :class:`TooManyPartitionKeys`, and goes into none; it
  raises no high-water, so its redelivery is refused again: by the window, still full,
  while it is open, from the outbox once it closed (not "late"). A window an old item's
  mark stands for (``HW_UNBOUNDED`` with ``legacy_applied``, conversion) has one place
  less; one past the bound already (no mark) takes no new key. With one lane nothing is
  refused. Session windows: the same per key (:meth:`processors.session.SessionWindow._admit`).
* **Refusals by the state, lost commits.** A record refused by its
  window's state (a plugin's add raised, a window too large) raises that window's
  high-water too, so that it yields its error again rather than being tried again. A
  commit another process of the memory store passed since the batch read the state
  (:class:`~processors.window_store.CommitLost`) is lost: the batch is applied again from
  the state committed, in the process, up to ``_COMMIT_ATTEMPTS`` times.
* **Refused records.** A record an aggregation refuses (a plugin's ``add`` raised a
  ``RecordError``) is dead-lettered and added to none of its windows: the generated fold
  is all or nothing per window (:mod:`processors.fold`), a window is opened only once the
  record is in, and with hopping windows whose adds may raise the windows it went into
  before get their accumulators back (:meth:`Window._place_all`).

All of a batch's work happens in :meth:`Window.prepare` (the chain calls it with the
records that reach the step), so that a state store writes once per distinct key and window
per batch (:meth:`WindowStore.commit`); ``__call__`` hands each record its outcome.

The state store: ``state: dynamodb`` (the default; :class:`~processors.window_store.DynamoDBStore`,
whose docstring holds the table's design) keeps it in a table per function, so a cold start, a
restart or another instance goes on where the last batch committed. ``state: memory``
(:class:`~processors.window_store.MemoryStore`) keeps it in the process: a warm Lambda keeps it,
a cold start loses it; for ``shardline test`` and tests.
"""

from __future__ import annotations

import copy
import heapq
import threading
import time
from datetime import UTC, datetime
from functools import lru_cache, partial
from itertools import groupby
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from processors.aggregations import (
    BUILTIN_AGGREGATIONS,
    AggregationError,
    First,
    Last,
    ValueTooLarge,
    build_aggregation,
    over_budget,
    share_budget,
)
from processors.errors import ProcessorError
from processors.fold import NUMERIC, compile_fold
from processors.lineage import KinesisLineage, LineageError, StaticLineage
from processors.window_items import bound_hw
from processors.window_keys import MARKER, key_json, key_text, key_value
from processors.window_state import TickTooLarge, TooManyPartitionKeys, position_mark
from processors.window_store import (
    DEFAULT_MAX_RECORD_AGE_S,
    HW_MAX_PKS,
    HW_UNBOUNDED,
    ClaimLost,
    CommitLost,
    DynamoDBStore,
    Mark,
    MemoryStore,
    Outcome,
    Position,
    ShardState,
    StateTooLarge,
    TickIncomplete,
    WindowRecordError,
    WindowStateError,
    WindowStore,
)
from stream.exceptions import RecordError

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Container, Mapping, Sequence

    from processors.aggregations import Aggregation
    from processors.lineage import Lineage
    from processors.window_tick import Emission
    from stream.records import Record

__all__ = [
    "DEFAULT_FLUSH_S",
    "MAX_FLUSH_S",
    "MS_THRESHOLD",
    "MemoryStore",
    "ShardState",
    "TooManyPartitionKeys",
    "Window",
    "WindowConfigError",
    "WindowRecordError",
    "WindowStore",
    "event_seconds",
    "iso",
    "window_starts",
]

#: An epoch number at least this large is milliseconds, below it seconds.
MS_THRESHOLD = 100_000_000_000
_TIMES = ("event", "arrival")
_STATES = ("memory", "dynamodb")
#: Times a batch is applied again in the process when a parent's window it touched was
#: claimed by another shard meanwhile (then the batch is delivered again).
_CLAIM_ATTEMPTS = 3
#: ``flush_s`` with ``state: dynamodb`` when none is given: a scheduled flush a minute.
DEFAULT_FLUSH_S = 60
#: The longest ``flush_s``: a day (a rarer flush bounds nothing useful).
MAX_FLUSH_S = 86_400
#: Times a batch is applied again in the process when another lane (or another invocation
#: of it) committed the shard since it read it (:class:`CommitLost`), then it is delivered
#: again.
_COMMIT_ATTEMPTS = 8


class WindowConfigError(ProcessorError, ValueError):
    """A window step configured wrong: the message says which setting and the fix."""


def crowded(names: Collection[str], pk: str, held: Mapping[str, Mark] | None = None) -> bool:
    """Whether deciding partition key ``pk`` on a window would make its high-water name more
    than :data:`HW_MAX_PKS` partition keys. ``names``: the keys it names, committed
    (``held``, its high-water) and decided on it by this batch so far (counted too: two new
    keys in one batch are two). A key among them is no new one. The bound counts
    :data:`HW_UNBOUNDED`'s entry as the store does (:func:`bound_hw`: a converted item's
    mark takes a place), so the window never turns unbounded; one that already is (no mark:
    its partition keys are unknown, past the bound before this guard) takes no new key.

    >>> crowded({f"u{i}" for i in range(16)}, "u16"), crowded({"u0", "u1"}, "u1")
    (True, False)
    >>> old = {HW_UNBOUNDED: (1, "5", 0, ())}  # conversion: keys up to 5 decided, a place
    >>> crowded({*old, *(f"u{i}" for i in range(15))}, "x")
    True
    >>> gone = {HW_UNBOUNDED: (0, "", 0, ())}  # past the bound already
    >>> crowded(set(gone), "x", gone)
    True
    """
    if pk in names:
        return False
    if len(names) >= HW_MAX_PKS:
        return True
    unknown = held.get(HW_UNBOUNDED) if held else None
    return unknown is not None and not unknown[0]


def _no_time(value: float, field: str) -> WindowRecordError:
    """A time that is no point in time: the record's fault, dead-lettered alone (it failed
    the whole batch as a ValueError of ``int()``; found in review)."""
    msg = f"time field {field!r} is {value!r}: a time must be a finite number or ISO-8601"
    return WindowRecordError(msg)


def event_seconds(value: Any, field: str) -> float:
    """Epoch seconds of a time field: ISO-8601 (UTC without an offset) or epoch s or ms.

    >>> event_seconds("2026-01-01T00:01:00Z", "ts"), event_seconds(1767225660000, "ts")
    (1767225660.0, 1767225660.0)
    >>> event_seconds(1767225660.5, "ts")
    1767225660.5

    Raises:
        WindowRecordError: neither (a bool, an object, a string that is not ISO-8601).
    """
    kind = type(value)
    if kind is int or kind is float:
        if value - value != 0:  # NaN or infinite (a step before set it)
            raise _no_time(value, field)
        return value / 1000.0 if abs(value) >= MS_THRESHOLD else float(value)
    if kind is str:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return parsed.timestamp()
    if value is None:
        msg = f"no time field {field!r}: a window with time: event needs it in every record"
    else:
        msg = (
            f"time field {field!r} is {value!r}: expected an ISO-8601 string or epoch "
            "seconds or milliseconds"
        )
    raise WindowRecordError(msg)


def window_starts(t: float, size: int, slide: int) -> range:
    """The starts of the windows holding time ``t``, ascending.

    >>> list(window_starts(125.0, 60, 60)), list(window_starts(125.0, 60, 20))
    ([120], [80, 100, 120])
    """
    last = int(t // slide) * slide
    return range(last - size + slide, last + 1, slide)


def iso(seconds: float) -> str:
    """ISO-8601 UTC with a ``Z``; milliseconds only when there are some.

    >>> iso(0), iso(1.5)
    ('1970-01-01T00:00:00Z', '1970-01-01T00:00:01.500Z')
    """
    moment = datetime.fromtimestamp(seconds, UTC)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


_NOTHING = Outcome()
_LATE = Outcome(late=True)
_INF = float("inf")
_MS_LOW = -MS_THRESHOLD
_SHARD_OF = attrgetter("shard_id")


class _ShardLocks:
    """One lock per shard, per process: a step's batches of one shard apply and commit one
    at a time (:meth:`Window.prepare`). ``shardline run --in-process`` (and ``dev``) call
    one handler from a thread per invocation, and with ``parallelization`` above 1 a
    shard's lanes are invocations at once; they share the store's cached state of the shard
    (one object the batch changes in place), so without it a lane's read replaced the
    state another lane was applying, whose commit then failed. With it, lanes of one
    process never conflict: conflicts (:class:`~processors.window_store.CommitLost`) are
    between processes only (design ``parallel-windows.md`` §4). On Lambda an instance runs
    one invocation at a time: the lock is never contended."""

    __slots__ = ("_guard", "_locks")

    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def __call__(self, shard_id: str) -> threading.Lock:
        """The shard's lock (made on first use)."""
        lock = self._locks.get(shard_id)
        if lock is None:
            with self._guard:
                lock = self._locks.setdefault(shard_id, threading.Lock())
        return lock


class _Batch(threading.local):
    """A window step's batch, per thread (a local run calls one runner from a thread per
    shard): the records' outcomes (``pending``, by ``id``) and the heirs' floors
    (``floors``). Both exist from a thread's first look, so the per-record ``__call__``
    reads an attribute, not ``getattr`` with a default."""

    def __init__(self) -> None:
        self.pending: dict[int, Outcome] = {}
        self.floors: dict[str, float] = {}


def _send_with(
    closer: Record, mine: ShardState, results: list[dict[str, Any]], pending: dict[int, Outcome]
) -> None:
    """Quiet shards' results go out with ``closer`` (both window steps): added to its
    outcome and kept in its outbox entry, so that a redelivery yields them again."""
    position = _position(closer)
    before = mine.outbox.get(position, _NOTHING)
    outcome = Outcome((*before.results, *results))
    mine.outbox[position] = outcome
    pending[id(closer)] = outcome


def _position(record: Record) -> Position:
    part = tuple(int(p) for p in record.part.split(".")) if record.part else ()
    return int(record.sequence_number), record.sub_sequence_number, part


def _mark(record: Record) -> Mark:
    """The record's position as the redelivery check compares it: the sequence number as
    (length, text), not parsed (:data:`~processors.window_store.Mark`)."""
    seq, part = record.sequence_number, record.part
    return (len(seq), seq, record.sub_sequence_number,
            tuple(int(p) for p in part.split(".")) if part else ())  # fmt: skip


def _seen(hw: Mapping[Any, dict[str, Mark]], key: Any, starts: Sequence[Any], pk: str,
          mark: Mark) -> bool:  # fmt: skip
    """Whether the record at ``mark`` (of partition key ``pk``, in ``key``'s windows
    ``starts``) was decided already: one of its windows' high-water for ``pk`` is at or
    past it (a later record of ``pk`` was decided there, so this one was: Lambda keeps a
    partition key's order). Only windows with a high-water are compared; closed ones are
    among them (:attr:`ShardState.hw`). Else it is new (a lagging lane's), applied now or
    late. A window whose high-water is unknown (:data:`HW_UNBOUNDED`) holds a mark there:
    an item the one-lane protocol wrote (before lanes mode took over the table) has every
    partition key decided up to the position that protocol had applied then
    (``legacy_applied``), and a record after it is new (a lagging lane's); one with more
    than ``HW_MAX_PKS`` partition keys (or whose old mark is not known) has none
    (:data:`~processors.window_store.Mark` of length 0) and falls back to the one-lane
    rule: the record, at or before the shard's ``applied`` (the only records checked), was
    decided already."""
    for start in starts:
        held = hw.get((key, start))
        if held is not None:
            top = held.get(pk)
            if top is not None and top >= mark:
                return True
            unknown = held.get(HW_UNBOUNDED)
            if unknown is not None and (not unknown[0] or unknown >= mark):
                return True  # decided up to the old mark, or (none) as with one lane
    return False


def _know(known: dict[Any, set[str]], hw: Mapping[Any, Mapping[str, Mark]], wkey: Any) -> set[str]:
    """The partition keys window ``wkey``'s high-water names in this batch (``known``),
    from its committed high-water (``hw``) the first time it is asked."""
    names = known.get(wkey)
    if names is None:
        names = known[wkey] = set(hw.get(wkey) or ())
    return names


#: A batch's changed windows -> the last record added to each whose partition key is the
#: window's key (``None``: none such, or only closed): a dict rather than a set, so the hot
#: loop's one store per window also keeps what the window's high-water needs.
_Changed = dict[tuple[Any, int], "Record | None"]
#: (window, partition key) -> the last record of that partition key decided on the window,
#: for partition keys other than the window's key (and records refused by its state).
_Others = dict[tuple[tuple[Any, int], str], "Record"]
#: A batch's reads of closed windows' high-water (:meth:`Window._decided`): window -> its
#: item's high-water, ``None`` where there is no item.
_ClosedHw = dict[tuple[Any, int], "dict[str, Mark] | None"]


def _raise_hw(state: ShardState, changed: _Changed, others: _Others, bound: int | None) -> None:
    """Set each window's high-water from the last record of each partition key the batch
    decided on it (:attr:`ShardState.hw`): one position per (window, partition key), not
    per record.
    ``bound``: the most partition keys a window keeps (:func:`bound_hw`; ``None`` for a
    store that decides by them)."""
    hw = state.hw
    for wkey, rec in changed.items():
        if rec is not None:
            _raise_one(hw, wkey, rec.partition_key, _mark(rec), bound)
    for (wkey, pk), rec in others.items():
        _raise_one(hw, wkey, pk, _mark(rec), bound)


def _raise_one(
    hw: dict[Any, dict[str, Mark]],
    wkey: Any,
    pk: str,
    mark: Mark,
    bound: int | None,
) -> None:
    """Raise ``wkey``'s high-water for ``pk`` to ``mark`` (never lower it); a partition key
    past ``bound`` turns the window's into :func:`bound_hw`'s one entry."""
    held = hw.get(wkey)
    if held is None:
        hw[wkey] = {pk: mark}
        return
    top = held.get(pk)
    if top is None:
        full = bound_hw(held, pk, bound)
        if full is not None:
            hw[wkey] = full
            return
        held[pk] = mark
    elif mark > top:
        held[pk] = mark


class Window:
    """Aggregate records per key over windows; emit one result per closed window.

    Args:
        key: the record field whose value names the key's window series.
        aggregate: result name -> ``KIND`` (``count``) or ``{KIND: field}``.
        size_s: the window's length in seconds.
        slide_s: for hopping windows, the step between starts (must divide ``size_s``).
        gap_s: refused: session windows are :class:`processors.session.SessionWindow`.
        time: ``event`` (the ``field`` of the record) or ``arrival``.
        field: the time field, with ``time: event``.
        allowed_lateness_s: how far behind the greatest event time a record may be and
            still count; at most ``size_s``.
        late: the sink late records go to; else they are dropped and counted.
        state: ``dynamodb`` (a table, see :mod:`processors.window_store`) or ``memory``
            (the process; tests and ``shardline test``).
        function: the function's name, the first part of each ``window_id`` (the plan
            fills it in).
        table: with ``state: dynamodb``, the table (the plan fills it in).
        table_prefix: what goes before the shard id in the table's partition key (the plan
            fills in the step's place, so two window steps of a function share the table).
        store: the state store, overriding ``state``; for tests.
        quiet_s: with ``state: dynamodb``, a shard with no batch for this long is quiet: the
            next batch of another shard of the function closes its windows whose end plus
            the lateness is this long past, by the clock (``None``: never).
        now: the clock (epoch seconds), for ``quiet_s``.
        flush_s: with ``state: dynamodb``, how often (seconds, whole minutes) a scheduled
            flush closes quiet shards' windows when no other shard has a batch (0: never;
            ``None``: :data:`DEFAULT_FLUSH_S` with a DynamoDB store, 0 with the memory store,
            which has no table a flush could read). The deploy schedules it
            (:func:`flush_problem` says what is allowed).
        lineage: the shards' parents and children (:class:`~processors.lineage.Lineage`),
            asked for a shard with no state yet and while a shard holds inherited windows;
            default ``ListShards`` with ``state: dynamodb``
            (:class:`~processors.lineage.KinesisLineage`), none with ``state: memory``.
        max_record_age_s: the function's (the plan fills it in): no record older is
            delivered again, so the DynamoDB state keeps what a redelivery reads in lanes
            mode (outbox entries, closed windows' high-water) that long plus an hour.
        parallelization: the function's lanes per shard (the plan fills it in). Above 1
            (lanes mode) a window takes records of at most ``HW_MAX_PKS`` partition keys
            (the record of one more is dead-lettered: :func:`crowded`), and the DynamoDB
            state decides redeliveries by the windows' high-water
            (:attr:`~processors.window_store.DynamoDBStore.high_water`); at 1 it keeps the
            single-position protocol (``applied`` and the shard item's outbox): the
            high-water buys one lane nothing and costs it (a round trip more per closing
            batch, three calls for a redelivery, results written twice; a record that a
            step before moves to other windows on redelivery counted twice), until it
            meets a shard lanes mode wrote (``parallelization`` lowered from above 1):
            then lanes mode for good, the store's mode read per attempt (``exact``).

    Raises:
        WindowConfigError: a setting is missing or wrong (the message says which).
        AggregationError: an unknown aggregation, or one without its field.
    """

    #: its state remembers the last position applied: the chain gives it no record after
    #: an earlier retryable failure of the shard (:func:`processors.chain._hold_back`)
    in_order = True

    __slots__ = (
        "_aggs",
        "_batch",
        "_field",
        "_fold",
        "_function",
        "_hot",
        "_lanes",
        "_late_routes",
        "_lineage",
        "_locks",
        "_now",
        "_sized",
        "_slide",
        "_time_event",
        "aggregate",
        "allowed_lateness_s",
        "flush_s",
        "key",
        "late",
        "late_sink",
        "names",
        "quiet_s",
        "size_s",
        "store",
    )

    def __init__(  # noqa: PLR0917  # the file's keys, as keywords, each checked
        self,
        key: str,
        aggregate: Mapping[str, Any],
        size_s: int | None = None,
        slide_s: int | None = None,
        gap_s: int | None = None,
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
        max_record_age_s: int = DEFAULT_MAX_RECORD_AGE_S,
        parallelization: int = 1,
        flush_s: int | None = None,
    ) -> None:
        if gap_s is not None:
            msg = "gap_s: session windows are processors.session.SessionWindow (the registry's)"
            raise WindowConfigError(msg)
        problem = settings_problem(
            state, store is not None, table, window_problem(size_s, slide_s, allowed_lateness_s),
            time, field, key, aggregate,
        )  # fmt: skip
        if problem is not None:
            raise WindowConfigError(problem)
        self.key = key
        self.size_s: int = size_s  # type: ignore[assignment]  # window_problem: not None
        self._slide: int = slide_s or self.size_s
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
        #: what :meth:`_prepare_shard` reads per record
        self._hot = (
            key,
            self._field if self._time_event else None,
            self._fold.read,
            self._fold.create,
            self._fold.fold,
            self.size_s,
            self._slide,
            allowed_lateness_s,
        )
        if store is None:
            store = (
                MemoryStore(table_prefix, self.size_s, sized=unbounded(self._aggs))
                if state == "memory"
                else DynamoDBStore(
                    table or "",
                    table_prefix,
                    allowed_lateness_s,
                    self.size_s,
                    now=now,
                    high_water=parallelization > 1,
                    max_record_age_s=max_record_age_s,
                )
            )
        elif parallelization > 1 and not store.high_water:
            msg = (
                f"parallelization {parallelization} with a store that decides redeliveries "
                "by the applied position alone: a lagging lane's records would be skipped"
            )
            raise WindowConfigError(msg)
        self.store: WindowStore = store
        #: lanes (``parallelization`` above 1): a window takes records of at most
        #: ``HW_MAX_PKS`` partition keys (:func:`crowded`); one lane is exact past it, but
        #: a DynamoDB store in lanes mode with one lane bounds it too (``_apply``)
        self._lanes = parallelization > 1
        if self._lanes and isinstance(store, MemoryStore):
            store.keeps_outcomes = True  # a refused record's error, found again once closed
        memory = isinstance(store, MemoryStore)
        problem = quiet_problem(quiet_s) or flush_problem(flush_s, memory=memory)
        if problem is not None:
            raise WindowConfigError(problem)
        self.quiet_s = quiet_s
        #: seconds between scheduled flushes (0: none): what the deploy schedules
        self.flush_s = flush_every(flush_s, memory=memory)
        self._now = now
        self._lineage: Lineage = lineage or (
            StaticLineage() if isinstance(store, MemoryStore) else KinesisLineage()
        )
        store.bind(self._merge)
        #: late records dropped (no ``late`` sink), since this step was built
        self.late = 0
        #: the batch's outcomes (``pending``) and heirs' floors (``floors``), per thread: a
        #: local run calls one runner from a thread per shard
        self._batch = _Batch()
        self._locks = _ShardLocks()

    # -- per batch ------------------------------------------------------------------------

    def prepare(self, records: Sequence[Record]) -> None:
        """Apply the batch, in shard order; commit once per shard; keep each outcome."""
        pending: dict[int, Outcome] = {}
        self._batch.pending = pending
        for shard_id, group in groupby(records, _SHARD_OF):  # the runs of one shard, in C
            with self._locks(shard_id):  # one batch of a shard at a time in this process
                self._prepare_run(list(group), pending)

    def _prepare_run(self, run: list[Record], pending: dict[int, Outcome]) -> None:
        """One shard's records of the batch, applied until a commit holds (a lost claim or
        commit: read again, apply again; a window too large: without its records)."""
        refused: frozenset[tuple[Any, int]] = frozenset()
        attempt = lost = 0
        while True:
            try:
                self._prepare_shard(run, pending, refused)
                break
            except StateTooLarge as exc:  # without those windows' records
                if exc.windows <= refused:
                    raise
                refused |= exc.windows
            except ClaimLost:  # the store reads the state again: apply it again
                attempt += 1
                if attempt == _CLAIM_ATTEMPTS:
                    raise
            except CommitLost:  # another lane committed: read again, apply again
                lost += 1
                if lost == _COMMIT_ATTEMPTS:
                    raise
            for rec in run:
                pending.pop(id(rec), None)

    def _prepare_shard(  # noqa: PLR0915  # the per-record hot path, in one frame
        self,
        records: Sequence[Record],
        pending: dict[int, Outcome],
        refused: frozenset[tuple[Any, int]] = frozenset(),
    ) -> None:
        """One shard's records of the batch: apply, then commit (claims included).
        ``refused``: windows whose item this batch would make too large for DynamoDB
        (:class:`StateTooLarge`); the records for them are dead-lettered."""
        store = self.store
        head = records[0]
        shard_id = head.shard_id
        state = self._shard_state(head)
        if state.outbox:  # what positions before this batch's first applied record yielded
            since = _position(head)
            state.outbox = {p: o for p, o in state.outbox.items() if p >= since}
        changed: _Changed = {}
        closer: Record | None = None  # the last record applied now that yields no error
        last: Record | None = None  # the last record applied: its position is ``applied``
        outbox = state.outbox
        applied = state.applied
        # a record at or before ``top`` may have been applied already; past it, none is
        top = None if applied is None else position_mark(applied)
        exact = store.high_water  # decided by the windows' high-water, else by ``applied``
        others: _Others = {}  # with ``changed``: the windows' new high-water
        looked = False  # whether the store's outbox entries of the batch were read
        closed_hw: _ClosedHw = {}  # closed windows' high-water read for this batch
        # the partition keys' bound (:func:`crowded`): with lanes, and in lanes mode with one
        # lane (``parallelization`` lowered on a table lanes wrote, sticky) on a store that
        # bounds the high-water: a window past the bound there would keep no high-water, and
        # once ``parallelization`` is raised again a lagging lane's record of it would be
        # skipped as applied; a record refused with lanes would be counted on redelivery
        # (review 11). As the session step, whose bound follows the mode (``exact``).
        lanes = self._lanes or (exact and store.hw_bound is not None)
        #: with lanes: the partition keys a window's high-water names (committed or decided
        #: in this batch) for the windows the batch touched, so that a known key costs
        #: the hot loop a lookup, not a call (:meth:`_admit` fills it)
        known: dict[tuple[Any, int], set[str]] = {}
        new: list[tuple[Any, int]] = []  # the record's windows its partition key is new to

        def replay(rec: Record) -> bool:
            """A record applied already yields what it yielded (its outcome): from the
            shard's outbox, else from the store's entries of the batch's positions,
            read once per batch (:meth:`WindowStore.outcomes`), else nothing. Whether
            there was an outcome."""
            nonlocal looked
            position = _position(rec)
            outcome = outbox.get(position)
            if outcome is None and not looked:
                looked = True
                for at, kept in store.outcomes(shard_id, _position(head),
                                               _position(records[-1])).items():  # fmt: skip
                    outbox.setdefault(at, kept)
                outcome = outbox.get(position)
            if outcome is not None:
                pending[id(rec)] = outcome
                return True
            return False

        # The per-record work inline, its names bound once per batch (a call per record
        # and the loads it repeats were a fifth of the step's instructions).
        key_field, time_field, read, create, fold, size, slide, lateness = self._hot
        sized = self._sized
        guarded = slide != size and self._fold.guarded  # several windows, adds that may raise
        windows, by_end, ends, waiting = state.windows, state.by_end, state.ends, state.waiting
        foreign = state.foreign
        max_time = state.max_time  # written back to the state below, whatever happens
        # Kept across records, updated where they change: the watermark (-inf before any
        # record), and ``due``, the earliest end a window may close at (the heap's head;
        # -inf while an inherited window waits for the other heirs: every record asks).
        watermark = -_INF if max_time is None else max_time - lateness
        due = -_INF if waiting else ends[0] if ends else _INF
        low, high = 0, 0  # the last tumbling window a record's time fell in: [low, high)
        tumbling: tuple[int, ...] = ()
        starts: Sequence[int]
        try:
            for rec in records:
                check: Mark | None = None  # its mark, while it may have been applied already
                if top is not None:  # a redelivery, or (lanes) a lagging lane's batch
                    mark = _mark(rec)
                    if mark > top:
                        top = None  # the rest of the batch comes after it (shard order)
                    elif exact:
                        check = mark  # its windows' high-water decides, once they are known
                    else:  # one lane: at or before ``applied`` is applied already
                        outcome = outbox.get(_position(rec))
                        if outcome is not None:
                            pending[id(rec)] = outcome
                        continue
                last = rec
                pk = rec.partition_key
                placing = False  # its windows known: a refusal raises their high-water
                try:  # apply the record (DESIGN.md, "Windows"; the module docstring)
                    doc = rec._doc  # decoded already, as a step before needed it
                    if type(doc) is not dict:  # else (not yet, or not an object):
                        doc = rec.as_dict()  # decodes, or raises its DecodeError
                    get = doc.get
                    key = get(key_field)
                    if type(key) is not str or key[:1] == MARKER:  # else its own text
                        key = _key_text(key, key_field)
                    if len(key) > _SHORT_KEY and _too_long(key):
                        raise _long_key(key, key_field)
                    if time_field is None:
                        t = rec.arrival
                    else:  # event_seconds, its common case inline
                        raw: Any = get(time_field)
                        kind = type(raw)
                        if kind is int or kind is float:  # no call: ``float(raw)``, exactly
                            if _MS_LOW < raw < MS_THRESHOLD:
                                t = raw * 1.0
                            elif raw - raw == 0:  # finite: milliseconds
                                t = raw / 1000.0
                            else:  # NaN or infinite (a step before set it): no time
                                raise _no_time(raw, time_field)
                        else:
                            t = event_seconds(raw, time_field)
                    if slide != size:
                        starts = window_starts(t, size, slide)
                    elif not low <= t < high:  # else the last record's (times come mostly in
                        low = int(t // size) * size  # order)
                        high = low + size
                        starts = tumbling = (low,)
                    else:
                        starts = tumbling
                    if check is not None and _seen(state.hw, key, starts, pk, check):
                        replay(rec)  # applied already: its values are not read again
                        continue
                    values = read(get)  # checked before anything changes
                    if sized:
                        _refuse_large(sized, get)
                    if lanes:  # refused whole (all its windows) before it changes any
                        if slide == size:  # tumbling: one window, no loop
                            if pk not in known.get((key, low), ()):
                                new = self._admit(state, known, key, starts, pk, watermark)
                        else:
                            for start in starts:
                                if pk not in known.get((key, start), ()):
                                    new = self._admit(state, known, key, starts, pk,
                                                      watermark)  # fmt: skip
                                    break
                    placing = True
                    own = pk == key  # the recommended setup: partition by the window key
                    if refused:
                        _refuse_windows(refused, key, starts)
                    if guarded:
                        placed = self._place_all(state, key, starts, watermark=watermark,
                                                 values=values, t=t, changed=changed,
                                                 others=others, rec=rec)  # fmt: skip
                        due = -_INF if waiting else ends[0] if ends else _INF
                    else:
                        placed = False
                        for start in starts:
                            end = start + size
                            if end <= watermark:
                                continue  # closed
                            wkey = (key, start)
                            accs = windows.get(wkey)
                            if accs is None:
                                if foreign and wkey in foreign:
                                    continue  # a parent's window another child claimed: closed
                                accs = create()
                                fold(accs, values, t)  # first: a refused record opens no window
                                windows[wkey] = accs
                                opened = by_end.get(end)
                                if opened is None:
                                    by_end[end] = [wkey]
                                    heapq.heappush(ends, end)
                                    due = min(due, end)
                                else:
                                    opened.append(wkey)
                            else:
                                fold(accs, values, t)
                            placed = True
                            if own:
                                changed[wkey] = rec
                            else:
                                others[wkey, pk] = rec
                                changed.setdefault(wkey, None)
                    if new:
                        for wkey in new:  # placed: its partition key is in their hw now
                            known[wkey].add(pk)
                        new = []
                    if not placed:
                        if check is not None:
                            if self._decided(state, shard_id, key, starts, pk, check,
                                             closed_hw, records):  # fmt: skip
                                replay(rec)  # applied to windows that closed since
                                continue
                            if lanes and replay(rec):  # refused (too many partition keys)
                                continue  # before its windows closed: refused again
                        outcome = _LATE
                    else:
                        if max_time is None or t > max_time:
                            max_time = t
                            watermark = t - lateness
                        if due > watermark:
                            closer = rec
                            continue
                        outcome = self._close_due(state, watermark, changed)
                        due = -_INF if waiting else ends[0] if ends else _INF
                except RecordError as exc:
                    outcome = Outcome(error=exc)
                    due = -_INF if waiting else ends[0] if ends else _INF
                    if placing:  # refused by a window's state: decided on it
                        for start in starts:
                            wkey = (key, start)
                            if wkey in windows:
                                others[wkey, pk] = rec
                                if exact:  # its high-water changed: committed with it
                                    changed.setdefault(wkey, None)
                                if lanes:
                                    _know(known, state.hw, wkey).add(pk)
                        new = []
                if outcome is _NOTHING:
                    closer = rec
                    continue
                outbox[_position(rec)] = outcome
                pending[id(rec)] = outcome
                if outcome.error is None and not outcome.late:
                    closer = rec
        finally:
            if state.lift and max_time != state.max_time:  # raised by a record's time:
                state.lift = 0.0  # event time again (:attr:`ShardState.lift`, review 22)
            state.max_time = max_time
            if changed or others:
                _raise_hw(state, changed, others, store.hw_bound if exact else HW_MAX_PKS)
            if last is not None:  # the greatest position, also should a source ever
                position = _position(last)  # hand a shard's records out of order
                if state.applied is None or position > state.applied:
                    state.applied = position
        state.forget_foreign(self.size_s, self.allowed_lateness_s)
        store.commit(shard_id, state, changed.keys(), self._close_quiet(shard_id, state, closer))

    def _admit(  # noqa: PLR0917  # the record's place, as the hot loop has it
        self,
        state: ShardState,
        known: dict[tuple[Any, int], set[str]],
        key: Any,
        starts: Sequence[int],
        pk: str,
        watermark: float,
    ) -> list[tuple[Any, int]]:
        """With lanes: the open windows of the record (those it is about to go into) to
        which its partition key ``pk`` is new, or :class:`TooManyPartitionKeys` if one of
        them would then name more than :data:`HW_MAX_PKS` (:func:`crowded`; a hopping
        record is refused whole). Deterministic on redelivery: an open window's high-water
        only grows, so a window full now is full then, and the refused record's key is in
        none of them (no high-water rises for it); once the window closed, the refusal
        comes back from the outbox (``replay``), not as "late"."""
        size, windows, foreign, hw = self.size_s, state.windows, state.foreign, state.hw
        out = []
        for start in starts:
            end = start + size
            wkey = (key, start)
            if end <= watermark or (foreign and wkey not in windows and wkey in foreign):
                continue  # closed: the record does not go into it
            names = _know(known, hw, wkey)
            if pk in names:
                continue
            if crowded(names, pk, hw.get(wkey)):
                span = f"window key {key!r} [{iso(start)}..{iso(end)})"
                raise TooManyPartitionKeys(self._function, span, pk)
            out.append(wkey)
        return out

    def _decided(  # noqa: PLR0917  # the record's place, as the hot loop has it
        self,
        state: ShardState,
        shard_id: str,
        key: Any,
        starts: Sequence[int],
        pk: str,
        mark: Mark,
        closed_hw: _ClosedHw,
        records: Sequence[Record],
    ) -> bool:
        """Whether a record that looks late (none of its windows open) and may have been
        applied already (at or before the shard's ``applied``) was: a window of it that
        closed since says so in its item (:meth:`WindowStore.decided`; the state's ``hw``
        was asked first). Without it, a redelivered record whose window closed after it
        was applied went to the late sink. A window with no item took no record (late
        again); one whose high-water is unknown falls back to the one-lane rule
        (:func:`_seen`).

        Read once per batch: at the first such record, the closed windows of every record
        of the batch that may have been applied already (``records``' prefix at or before
        ``applied``), in one call (``closed_hw`` keeps them, ``None``: no item). One call
        per record was 500 ``BatchGetItem`` for a batch of 500 redelivered after a restart
        whose windows had closed since."""
        unread = [(key, start) for start in starts if (key, start) not in state.hw]
        if not unread:
            return False
        if any(wkey not in closed_hw for wkey in unread):
            wanted = self._windows_of(records, state) | set(unread)
            wanted.difference_update(closed_hw)
            found = self.store.decided(shard_id, list(wanted))
            for wkey in wanted:
                closed_hw[wkey] = found.get(wkey)
        known = {w: held for w in unread if (held := closed_hw[w]) is not None}
        return _seen(known, key, starts, pk, mark)

    def _windows_of(self, records: Sequence[Record], state: ShardState) -> set[tuple[Any, int]]:
        """The windows, not in the state's ``hw``, of the batch's records at or before the
        shard's ``applied`` (a prefix: shard order); a record with no key or time has none
        (it is decided again as a record fault)."""
        key_field, time_field, _, _, _, size, slide, _ = self._hot
        top = position_mark(state.applied) if state.applied is not None else None
        out: set[tuple[Any, int]] = set()
        for rec in records:
            if top is None or _mark(rec) > top:
                break
            try:
                get = rec.as_dict().get
                key = get(key_field)
                if type(key) is not str or key[:1] == MARKER:
                    key = _key_text(key, key_field)
                t = (
                    rec.arrival
                    if time_field is None
                    else event_seconds(get(time_field), time_field)
                )
            except RecordError:
                continue
            out.update((key, s) for s in window_starts(t, size, slide) if (key, s) not in state.hw)
        return out

    def _shard_state(self, head: Record) -> ShardState:
        """The state of ``head``'s shard for its batch (session windows' too): a shard
        with nothing committed yet (a reshard's child) starts from its parents' windows
        (:meth:`WindowStore.inherit`); while it holds inherited ones, the other heirs'
        watermarks are read once for the batch (``floors``, :meth:`_closable`)."""
        shard_id, arn = head.shard_id, head.event_source_arn
        state = self.store.shard(shard_id)
        if state.applied is None:
            parents = self._lineage.parents(arn, shard_id)
            if parents:
                parents_of = partial(self._lineage.parents, arn)
                self.store.inherit(shard_id, state, parents, parents_of, self._merge)
        self._batch.floors = self._heirs_floor(arn, shard_id, state) if state.inherited else {}
        return state

    def _heirs_floor(
        self, arn: str, shard_id: str, state: ShardState, now: float | None = None
    ) -> dict[str, float]:
        """For each ancestor this shard inherited from: the lowest watermark of the other
        shards that may still add to its windows (its children, or theirs once they are
        parents too). An inherited window nobody claimed closes only when that and this
        shard's watermark are past its end: no heir's records for it are late. ``now``:
        the clock a quiet heir is judged by (a flush's tick: its own; default the step's)."""
        holders = {o.holder for held in state.inherited.values() for o in held}
        heirs = {h: [s for s in self._frontier(arn, h) if s != shard_id] for h in holders}
        every = sorted({s for shards in heirs.values() for s in shards} | holders)
        progress = self.store.progress(every)
        if now is None:
            now = self._now()
        cutoff = None if self.quiet_s is None else now - self.quiet_s
        lateness = self.allowed_lateness_s
        floors = {}
        for holder, shards in heirs.items():
            floor = float("inf")
            since = progress.get(holder, (None, None))[1]  # the holder drained by then
            for heir in shards:
                max_time, clock = progress.get(heir, (None, since))
                mark = -float("inf") if max_time is None else max_time - lateness
                if cutoff is not None and clock is not None and clock < cutoff:
                    mark = max(mark, cutoff - lateness)  # quiet: as a record at the cutoff
                floor = min(floor, mark)
            floors[holder] = floor
        return floors

    def _frontier(self, arn: str, shard_id: str) -> list[str]:
        out = []
        for child in self._lineage.children(arn, shard_id):
            grand = self._frontier(arn, child)
            out += grand or [child]
        return out

    def _closable(
        self, wkey: tuple[Any, int], end: int, state: ShardState, changed: Container[Any]
    ) -> bool:
        """Own windows close by this shard's watermark; inherited ones (not added to in
        this batch, which claims them) wait for the other heirs' too."""
        held = state.inherited.get(wkey)
        if held is None or wkey in changed:
            return True
        floors: dict[str, float] = self._batch.floors
        return all(end <= floors.get(o.holder, float("inf")) for o in held)

    def _merge(self, a: list[Any], b: list[Any]) -> list[Any]:
        return [agg.merge(x, y) for agg, x, y in zip(self._aggs, a, b, strict=True)]

    def _close_quiet(
        self, shard_id: str, mine: ShardState, closer: Record | None
    ) -> dict[str, ShardState]:
        """Close the windows of the function's quiet shards (no batch for ``quiet_s``) whose
        end + lateness is ``quiet_s`` past by the clock: as if a record of time now -
        ``quiet_s`` had reached each of them. Their results go out with ``closer`` (kept
        in its outbox entry, so a redelivery yields them again); returns the shards'
        states, which the store commits with this shard's."""
        if closer is None or self.quiet_s is None:
            return {}
        cutoff = self._now() - self.quiet_s
        quiet = self.store.quiet(shard_id, cutoff)
        results = []
        closed: dict[str, ShardState] = {}
        for other, state in quiet.items():
            if other in mine.ancestors:  # inherited by this batch: its windows go on here
                continue
            found = self._due_results(other, state, cutoff)
            if found:
                closed[other] = state
                results += found
        if results:
            _send_with(closer, mine, results, self._batch.pending)
        return closed

    def _due_results(self, shard_id: str, state: ShardState, cutoff: float) -> list[dict[str, Any]]:
        """The quiet rule on one shard (another shard's batch and a flush's tick share it):
        with no record since ``cutoff`` (now - ``quiet_s``), as if one of that time had
        reached it, pop the windows whose end + lateness is at or before it and return
        their results (``state.max_time`` raised to the cutoff when some close). An
        inherited window stays ("held"): only the shard's own next record closes it."""
        watermark = cutoff - self.allowed_lateness_s
        ends, windows = state.ends, state.windows
        if (state.max_time is not None and state.max_time >= cutoff) or not (
            ends and ends[0] <= watermark
        ):
            return []
        found = []
        held = []  # inherited windows: closed by the shard's own next record only
        while ends and ends[0] <= watermark:
            end = heapq.heappop(ends)
            kept = []
            for wkey in state.by_end.pop(end):
                if wkey in state.inherited:
                    kept.append(wkey)
                else:
                    found.append(self._result(wkey, end, windows.pop(wkey)))
            if kept:
                held.append((end, kept))
        for end, kept in held:
            state.by_end[end] = kept
            heapq.heappush(ends, end)
        if found:
            state.max_time = cutoff
        return found

    # -- a scheduled flush (issue 16) -----------------------------------------------------

    def tick(
        self,
        now: float | None = None,
        *,
        stop: Callable[[], bool] | None = None,
        arn: str | None = None,
    ) -> list[Emission]:
        """Every pending emission (re-emitted as stored), then the new closes: each quiet shard
        of the function (any shard, none excluded) whose due windows the quiet rule would
        close, closed by one conditional commit of that shard alone with its new pending
        entry. `now` defaults to the step's clock; `stop()` true means stop taking new
        shards (the invocation's time is running out). `arn`, the stream's ARN (the
        lineage's key): a reshard's quiet child also closes the windows it inherited once
        every other heir is past them (:meth:`_tick_inherited`); without it they wait for
        the child's next record, as before the flush. Raises TickIncomplete (a
        WindowStateError: retried) when the state table cannot be read or written for some
        shard, or a child's parents cannot be listed (its inherited windows kept), after
        committing what it could: it carries the emissions, to be sent on.
        With `state: memory` returns [] (no table)."""
        if self.quiet_s is None:
            return []
        store = self.store
        now = self._now() if now is None else now
        cutoff = now - self.quiet_s
        shards = store.tick_shards()
        out = store.pending_ticks()
        failed: WindowStateError | LineageError | None = None
        for shard_id in shards:
            if stop is not None and stop():
                break
            try:
                with self._locks(shard_id):  # not while a batch of this process holds it
                    emission = None
                    state = store.tick_state(shard_id, cutoff)
                    if state is None:
                        continue
                    closed: set[Any] = set()  # inherited windows closed: claimed, then written
                    found = None
                    if arn and state.inherited:
                        try:
                            found = self._tick_inherited(arn, shard_id, state, now, closed)
                        except LineageError as exc:  # its parents unknown: kept, as before
                            failed = failed or exc
                    if found is None:
                        found = self._due_results(shard_id, state, cutoff)
                    if found:
                        try:
                            emission = store.tick_commit(shard_id, state, found, closed)
                        except TickTooLarge:  # one lane: its own windows only, read again
                            again = store.tick_state(shard_id, cutoff)
                            if again is not None and (
                                own := self._due_results(shard_id, again, cutoff)
                            ):
                                emission = store.tick_commit(shard_id, again, own)
            except WindowStateError as exc:  # the others' closes go on: each its own commit
                failed = failed or exc
                continue
            if emission is not None:
                out.append(emission)
        if failed is not None:
            raise TickIncomplete(failed, out) from failed
        return out

    def _tick_inherited(
        self, arn: str, shard_id: str, state: ShardState, now: float, closed: set[Any]
    ) -> list[dict[str, Any]]:
        """The quiet rule on a reshard's child that still holds windows of its parents (a
        flush's tick, design §5 b/c): as if a record of time now - ``quiet_s`` had reached
        it, its own windows behind that close, and so do the inherited ones every other
        heir is past too (:meth:`_closable`, the floors at the tick's clock: a quiet heir
        as a record at the cutoff, one that never had a batch as of its parent's drain).
        Without this, a split or merge whose children all went quiet kept its parents'
        windows open until a child's next record. ``closed`` gets the inherited windows
        closed: the store claims them from their parents and writes them closed here."""
        cutoff = now - self.quiet_s if self.quiet_s is not None else now
        if state.max_time is not None and state.max_time >= cutoff:
            return []
        inherited = set(state.inherited)
        self._batch.floors = self._heirs_floor(arn, shard_id, state, now)
        changed: _Changed = {}
        found = list(self._close_due(state, cutoff - self.allowed_lateness_s, changed).results)
        closed.update(w for w in changed if w in inherited)
        if found:
            state.max_time = cutoff
        return found

    def ack(self, emission: Emission) -> None:
        """Every record of `emission` is written or dead-lettered: drop the pending entry
        (no condition; idempotent; acking twice or after another tick acked is fine)."""
        self.store.ack_tick(emission)

    def __call__(self, record: Record) -> Record | list[Record] | None:
        outcome = self._batch.pending.get(id(record))
        if outcome is None:
            return None
        if outcome.error is not None:
            raise outcome.error
        if outcome.late:
            if self._late_routes is None:
                self.late += 1
                return None
            record.routes = self._late_routes
            return record
        results = outcome.results
        # each result is the only record there will be with its window_id (FinalRecord)
        if len(results) == 1:
            return record.final(dict(results[0]), "window_id")
        return [record.final(dict(doc), "window_id") for doc in results]

    # -- per record -----------------------------------------------------------------------

    def _place_all(
        self,
        state: ShardState,
        key: Any,
        starts: Sequence[int],
        *,
        watermark: float,
        values: Any,
        t: float,
        changed: _Changed,
        others: _Others,
        rec: Record,
    ) -> bool:
        """Add a record to each of its open windows, all or none (hopping windows whose
        aggregations' adds may raise: :attr:`processors.fold.Fold.guarded`): new windows
        are opened only once every add took it, and the windows it went into before an add
        raised get back a copy of their accumulators taken before. Whether it was placed."""
        fold, create, size = self._fold.fold, self._fold.create, self.size_s
        windows, foreign = state.windows, state.foreign
        targets: list[tuple[tuple[Any, int], int, list[Any] | None]] = []
        for start in starts:
            end = start + size
            wkey = (key, start)
            accs = windows.get(wkey)
            if end <= watermark or (accs is None and foreign and wkey in foreign):
                continue  # closed
            targets.append((wkey, end, accs))
        opened: list[tuple[tuple[Any, int], int, list[Any]]] = []
        saved: list[tuple[list[Any], list[Any]]] = []
        try:
            for i, (wkey, end, held) in enumerate(targets):
                accs = create() if held is None else held
                if held is None:
                    opened.append((wkey, end, accs))
                elif i < len(targets) - 1:  # the last one's fold undoes itself
                    saved.append((accs, copy.deepcopy(accs)))
                fold(accs, values, t)
        except Exception:
            for accs, before in saved:
                accs[:] = before
            raise
        by_end, ends = state.by_end, state.ends
        for wkey, end, accs in opened:
            windows[wkey] = accs
            of_end = by_end.get(end)
            if of_end is None:
                by_end[end] = [wkey]
                heapq.heappush(ends, end)
            else:
                of_end.append(wkey)
        pk = rec.partition_key
        for wkey, _, _ in targets:
            if pk == key:
                changed[wkey] = rec
            else:
                others[wkey, pk] = rec
                changed.setdefault(wkey, None)
        return bool(targets)

    def _close_due(self, state: ShardState, watermark: float, changed: _Changed) -> Outcome:
        """Close the windows whose end is at or before the watermark (inherited ones when
        the other heirs are past it too, :meth:`_closable`): their results."""
        windows, ends, waiting = state.windows, state.ends, state.waiting
        results = []
        while ends and ends[0] <= watermark:
            end = heapq.heappop(ends)
            for wkey in state.by_end.pop(end):
                if state.inherited and not self._closable(wkey, end, state, changed):
                    waiting.setdefault(end, []).append(wkey)  # another heir may add to it
                    continue
                changed.setdefault(wkey, None)
                results.append(self._result(wkey, end, windows.pop(wkey)))
        if waiting:
            for end in sorted(waiting):
                kept = []
                for wkey in waiting.pop(end):
                    if self._closable(wkey, end, state, changed):
                        changed.setdefault(wkey, None)
                        results.append(self._result(wkey, end, windows.pop(wkey)))
                    else:
                        kept.append(wkey)
                if kept:
                    waiting[end] = kept
        return Outcome(tuple(results)) if results else _NOTHING

    def _result(self, wkey: tuple[Any, int], end: int, accs: list[Any]) -> dict[str, Any]:
        key, start = wkey  # the key's text (processors.window_keys)
        start_iso = _iso_of(start)
        window_id = f"{self._function}/{key}/{start_iso}"
        value = key if key[:1] != MARKER else key_value(key)
        return self._fold.result(window_id, value, start_iso, _iso_of(end), accs)


_KEY_TYPES = (str, int, float, bool)


_iso_of = lru_cache(maxsize=4096)(iso)  # window bounds repeat across keys
_NUMERIC = NUMERIC


def _bad_key(key: Any, key_field: str) -> WindowRecordError:
    what = "no" if key is None else f"a {type(key).__name__} in its"
    msg = f"record has {what} key field {key_field!r}: a window needs a string or number there"
    return WindowRecordError(msg)


def _key_text(key: Any, key_field: str) -> str:
    """The text of a key that is not a plain string (:func:`processors.window_keys.key_text`):
    what names its windows in the state and in ``window_id``.

    Raises:
        WindowRecordError: no key, or one that is not a string, a finite number or a boolean.
    """
    if key is None or type(key) not in _KEY_TYPES:
        raise _bad_key(key, key_field)
    try:
        return key_text(key)
    except ValueError as exc:
        msg = f"key field {key_field!r} is {key!r}: a window needs a string or finite number"
        raise WindowRecordError(msg) from exc


#: The longest key text (JSON, ASCII) a window's state item can name: DynamoDB's sort key
#: is at most 1,024 bytes, and it holds ``w#START#`` before the key.
MAX_KEY_BYTES = 960
#: Keys up to this many characters always fit: JSON writes a character in at most 12 bytes
#: (a character outside the BMP, as two escaped surrogates); longer ones are measured.
_SHORT_KEY = MAX_KEY_BYTES // 12


def _too_long(key: str) -> bool:
    return _key_bytes(key) > MAX_KEY_BYTES


def _key_bytes(key: str) -> int:
    """The key's length as the state item's sort key holds it (JSON, ASCII)."""
    return len(key_json(key))


def _long_key(key: str, key_field: str) -> WindowRecordError:
    """A key too long to name a window's state item: the record's fault, dead-lettered
    (retrying could never store it)."""
    msg = (
        f"key field {key_field!r} is too long for a window: {_key_bytes(key)} bytes as "
        f"JSON, at most {MAX_KEY_BYTES} (DynamoDB's sort key limit of 1,024 bytes)"
    )
    return WindowRecordError(msg)


def unbounded(aggs: Sequence[Aggregation]) -> bool:
    """Whether a window's item may outgrow DynamoDB's limit: a plugin's accumulator may;
    the built-ins' stay within their byte budgets (:mod:`processors.aggregations`)."""
    return any(type(agg) not in _BUILT_INS for agg in aggs)


_BUILT_INS = frozenset(BUILTIN_AGGREGATIONS.values())


def _refuse_windows(refused: frozenset[tuple[Any, int]], key: Any, starts: Sequence[int]) -> None:
    """A record for a window whose item this batch made too large for DynamoDB (a plugin
    aggregation's accumulator past 400 KB) is dead-lettered; the window keeps what it had."""
    for start in starts:
        if (key, start) in refused:
            msg = (
                f"the window of key {key!r} starting {iso(start)} is too large to store with "
                f"this record (its state would be over DynamoDB's 400 KB item limit): the "
                f"record is not aggregated"
            )
            raise ValueTooLarge(msg)


def _budgeted(aggs: Sequence[Aggregation]) -> tuple[tuple[int, str | None, int], ...]:
    """Share the state's byte budget among ``aggs`` (:func:`share_budget`), so that a
    window's item stays under DynamoDB's 400 KB; returns the ``first``/``last`` ones as
    (index, field, budget), whose values :func:`_refuse_large` checks."""
    share_budget(aggs)
    sized: list[tuple[int, str | None, int]] = []
    for i, agg in enumerate(aggs):
        if isinstance(agg, (First, Last)):
            sized.append((i, agg.field, agg.budget))
    return tuple(sized)


def _refuse_large(
    sized: tuple[tuple[int, str | None, int], ...], get: Callable[[Any], Any]
) -> None:
    """A ``first``/``last`` value over its aggregation's byte budget is the record's fault
    (it could never be stored): :class:`ValueTooLarge`, raised before anything changes;
    ``get``: the document's."""
    for _, name, budget in sized:
        value = get(name) if name else None
        if value is not None and over_budget(value, budget):
            msg = (
                f"field {name!r} is too large to aggregate: over {budget} bytes as JSON, the "
                f"share of this window's state (DynamoDB items are at most 400 KB) that its "
                f"first/last aggregation may keep"
            )
            raise ValueTooLarge(msg)


def settings_problem(  # noqa: PLR0917  # the settings the two window steps share
    state: str,
    has_store: bool,  # a store given (tests): no table needed
    table: str | None,
    sizes: str | None,
    time: str,
    field: str | None,
    key: str,
    aggregate: Mapping[str, Any],
) -> str | None:
    """What is wrong with the settings tumbling, hopping and session windows share, or
    ``None``: the first problem in the order :class:`Window` has always reported them
    (``sizes``: what :func:`window_problem` or the session's check says of the sizes,
    reported after the state), so one pipeline file gets one first error whichever step.

    >>> settings_problem("memory", False, None, None, "event", None, "", {})
    'time: event needs field: the record field holding the event time'
    """
    if state not in _STATES:
        return f"state {state!r}: expected one of {', '.join(_STATES)}"
    if state == "dynamodb" and not has_store and not table:
        return (
            "state: dynamodb needs table: the window state table (the plan fills it in); "
            "or state: memory (kept in the process, lost on a cold start)"
        )
    if sizes is not None:
        return sizes
    if time not in _TIMES:
        return f"time {time!r}: expected event (a field of the record) or arrival"
    if time == "event" and not field:
        return "time: event needs field: the record field holding the event time"
    if not key:
        return "key: the record field whose value names the key"
    if not aggregate:
        return "aggregate: name at least one result, e.g. {purchases: count}"
    return None


def quiet_problem(quiet_s: Any) -> str | None:
    """What is wrong with ``quiet_s`` (shared by the two window steps), or ``None``.

    >>> quiet_problem(300) is None, quiet_problem(0)
    (True, 'quiet_s must be a whole number of seconds of at least 1, got 0')
    """
    if quiet_s is not None and (type(quiet_s) is not int or quiet_s < 1):
        return f"quiet_s must be a whole number of seconds of at least 1, got {quiet_s!r}"
    return None


def flush_problem(flush_s: Any, *, memory: bool = False) -> str | None:
    """What is wrong with ``flush_s`` (shared by the two window steps and ``validate``), or
    ``None``. An EventBridge schedule runs the flush, and its rates are whole minutes; the
    memory store has no table that a flush invocation could read, so only 0 (or ``None``,
    the default) goes with it.

    >>> flush_problem(300) is None, flush_problem(None, memory=True) is None
    (True, True)
    >>> flush_problem(90)
    'flush_s must be 0 (off) or a multiple of 60 (EventBridge schedules whole minutes), got 90'
    """
    if flush_s is None:
        return None
    if type(flush_s) is not int or flush_s < 0:
        return f"flush_s must be a whole number of seconds, 0 (off) or more, got {flush_s!r}"
    if flush_s % 60:
        return (
            "flush_s must be 0 (off) or a multiple of 60 (EventBridge schedules whole "
            f"minutes), got {flush_s}"
        )
    if flush_s > MAX_FLUSH_S:
        return f"flush_s must be at most {MAX_FLUSH_S} (a day), got {flush_s}"
    if memory and flush_s:
        return (
            f"flush_s ({flush_s}) needs state: dynamodb: state: memory has no table for a "
            "scheduled flush to read (leave flush_s out, or set 0)"
        )
    return None


def flush_every(flush_s: int | None, *, memory: bool = False) -> int:
    """The seconds between scheduled flushes for a valid ``flush_s`` (0: none): ``None``
    is the default, :data:`DEFAULT_FLUSH_S`, silently off with the memory store.

    >>> flush_every(None), flush_every(None, memory=True), flush_every(300)
    (60, 0, 300)
    """
    if flush_s is None:
        return 0 if memory else DEFAULT_FLUSH_S
    return flush_s


def window_problem(size_s: Any, slide_s: Any, allowed_lateness_s: Any) -> str | None:
    """What is wrong with a window's sizes, or ``None`` (shared with ``validate``).

    >>> window_problem(3600, 600, 60) is None, window_problem(3600, 700, 0)
    (True, 'slide_s (700) must divide size_s (3600): e.g. 600 or 720')
    """
    if size_s is None:
        return "needs size_s (tumbling, or hopping with slide_s) or gap_s (session windows)"
    for name, value in (("size_s", size_s), ("slide_s", slide_s)):
        if value is not None and (type(value) is not int or value < 1):
            return f"{name} must be a whole number of seconds of at least 1, got {value!r}"
    if type(allowed_lateness_s) is not int or allowed_lateness_s < 0:
        return f"allowed_lateness_s must be a whole number >= 0, got {allowed_lateness_s!r}"
    if slide_s is not None:
        if slide_s > size_s:
            return f"slide_s ({slide_s}) must not exceed size_s ({size_s})"
        if size_s % slide_s:
            divisors = [d for d in range(slide_s, 0, -1) if size_s % d == 0][:1]
            divisors += [d for d in range(slide_s, size_s + 1) if size_s % d == 0][:1]
            shown = " or ".join(str(d) for d in divisors)
            return f"slide_s ({slide_s}) must divide size_s ({size_s}): e.g. {shown}"
    if allowed_lateness_s > size_s:
        return (
            f"allowed_lateness_s ({allowed_lateness_s}) must not exceed size_s ({size_s}): "
            "windows would stay open for more than their own length"
        )
    return None


def _aggregation(name: str, spec: Any) -> Aggregation:
    if isinstance(spec, str):
        return build_aggregation(spec, None)
    if isinstance(spec, dict) and len(spec) == 1:
        ((kind, field_name),) = spec.items()
        if not isinstance(field_name, str):
            msg = f"aggregate.{name}: {{{kind}: FIELD}} takes a field name, got {field_name!r}"
            raise AggregationError(msg)
        return build_aggregation(kind, field_name)
    msg = f"aggregate.{name}: expected KIND (count) or {{KIND: field}}, got {spec!r}"
    raise AggregationError(msg)
