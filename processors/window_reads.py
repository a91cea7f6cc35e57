"""The DynamoDB window store's reads: a batch's shard, quiet shards, redeliveries.

Redeliveries with one lane (``high_water`` off): a record at or before the shard's
``applied`` was applied already, and yields what the shard item's outbox holds for it
(what the records since the latest batch's first yielded), else nothing. One read for a
redelivery (the shard item, when warm), and a record that a step before the window moves
to other windows on redelivery is not counted again.

Redeliveries in lanes mode (:attr:`DynamoDBStore.high_water`: the window step's with
``parallelization`` above 1, and a store that met a shard lanes wrote). A record at or
before the shard's ``applied`` may have been applied already (a redelivery) or be new (with
``parallelization`` > 1, a lagging lane's). It was applied if a window of it says so for its
partition key (``hw[pk]`` at or past it): an open window's in the state, or, when none of
its windows is open (it looks late), its closed windows' items (:meth:`DynamoDBStore.decided`,
one strongly consistent ``BatchGetItem``). It then yields its outcome: from the shard item's
outbox, else from the outbox entries of the batch's positions (:meth:`DynamoDBStore.outcomes`,
one ``Query`` at the batch's first such record), else nothing. Otherwise it is applied, or
late: a late record is late again (the watermark only grows, a window never reopens), a
record fault (no key, no time) is decided again. The cases where the high-water is not
known fall back to the rule of one lane, "at or before ``applied``: applied already": a
window item with no ``hw`` (written by an earlier version, or by one after a rollback) or
with :data:`HW_UNBOUNDED` (more than :data:`HW_MAX_PKS` partition keys): exact with one
lane; with lanes it would skip a lagging lane's record of that window, so in lanes mode
the step dead-letters the record that would pass :data:`HW_MAX_PKS`
(:class:`processors.window.TooManyPartitionKeys`). The rule assumes a redelivered record falls
in the same windows: a step before the window that is not deterministic (a ``lookup`` whose
table changed between deliveries, a key or time computed from the clock) can move it to
other windows, where no high-water knows it: it is applied again there (counted in both
windows) or late if they closed. The rule of one lane skips it instead, which is why one
lane keeps that rule: the high-water buys one lane nothing.

Quiet shards (:meth:`DynamoDBStore.quiet`): a batch reads the list of shards and their items
(``BatchGetItem``; with its own revision: :mod:`processors.window_dynamodb`); a shard whose
``clock`` is older than the cutoff and whose ``next_end`` (plus the lateness) is before it
gets its state read (its partition: at the revision of the item read, or it is left to a
later batch), its windows closed by the window step (its greatest event time raised to the
cutoff), and its shard item written in one ``TransactWriteItems`` with this batch's shard
item, whose outbox holds the results: both or neither. A quiet shard that wakes meanwhile
changes its ``rev``, the transaction fails and the batch is retried. The closed windows' own
items are marked closed by the quiet shard's next batch (its load finds them behind its
watermark), or deleted after it, with one lane when it lists its starts
(:func:`processors.window_starts.dead`).
"""

from __future__ import annotations

import heapq
from functools import partial
from typing import TYPE_CHECKING, Any

from processors import window_starts
from processors.window_cache import _Cached
from processors.window_items import (
    _KEY_SK,
    _REGISTRY,
    _SHARD_SK,
    _effective,
    _fenced_only,
    _head_projection,
    _laid,
    _lanes_wrote,
    _n,
    _number,
    _pos,
    _read_hw,
    _size,
    _window_sk,
    decode,
    hw_marks,
    max_time_and_lift,
    ticks_of,
    watermark_of,
)
from processors.window_keys import key_json, key_of_json
from processors.window_log import (
    KEEP_LOGS,
    decode_log,
    log_id_parts,
    log_prefix,
    overlay,
    read_head,
)
from processors.window_outbox import (
    _PART,
    _outbox,
    _outbox_of,
    _outcomes,
    outbox_sk,
)
from processors.window_state import (
    _NO_MARK,
    HW_UNBOUNDED,
    LanesMet,
    Mark,
    Outcome,
    Position,
    ShardState,
    WindowKey,
    WindowStateError,
)
from stream.overlap import run_all

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence, Set


from processors.window_reshards import _Reshards

__all__: list[str] = []

_MAX_QUIET = 99  # quiet shards closed per batch: a transaction holds at most 100 items
#: The quiet shards' items a batch may rewrite with its own (at most about 400 KB), in bytes:
#: a transaction is at most 4 MB. Past it, the next batch closes the rest.
_QUIET_BYTES = 3_500_000


class _Listed:
    """What a batch read for the quiet-shard rule (:meth:`DynamoDBStore._head`): the list
    of the step's shards, the shards whose items it asked for, and those items by shard."""

    __slots__ = ("asked", "items", "shard", "shards")

    def __init__(
        self,
        shard: str,
        shards: frozenset[str],
        asked: frozenset[str],
        items: dict[str, dict[str, Any]],
    ) -> None:
        self.shard = shard  # the batch's own shard
        self.shards = shards
        self.asked = asked
        self.items = items


class _Reads(_Reshards):
    """The store with its reads: the shard's state (warm, caught up or cold), the quiet
    shards, and what a redelivered record was decided as."""

    __slots__ = ()

    def shard(self, shard_id: str) -> ShardState:
        """The shard's committed state: the cached one if the shard item is still at the
        commit this process last wrote or read (lanes mode: its ``n``; with one lane its
        ``rev``), else caught up from the logs between (lanes mode) or read again."""
        pk = self.prefix + shard_id
        lanes = self._local.lanes = self._lanes  # this attempt's mode, whatever others do
        cached = self._cache.get(shard_id)
        if cached is not None and cached.lanes != lanes:
            cached = None  # read in the one-lane protocol before the store turned lanes on
        self._local.registry = None
        if cached is not None and (cached.clean or cached.spoiled):
            if self._asks_quiet:
                item, self._local.registry = self._head(pk, shard_id)
            else:
                item = self._head_item(pk)
            if not self._moved(cached, item) and cached.clean:
                if self.high_water:  # its pending logs: some may have been rolled forward
                    _, _, cached.pending = read_head(item)
                else:  # a flush's ack removes an entry without moving ``rev``
                    cached.ticks = ticks_of(item)
                cached.clean = False
                return cached.state
            if self.high_water and self._catch_up(pk, cached, item):
                cached.clean = False
                return cached.state
        try:
            fresh = self._read(pk)
        except LanesMet:  # the way back: read in lanes mode (nothing applied yet)
            self._local.lanes = True
            fresh = self._read(pk)
        # read whole for this batch: other reads of the shard (a quiet close's, a tick's)
        # keep to the mark until then (review 17: they took it, and the batch's retry
        # read by the starts again)
        self._whole.discard(pk)
        if cached is not None and cached.unrolled:  # its own logs it has to roll forward
            fresh.unrolled = cached.unrolled & fresh.pending
        fresh.clean = False
        self._cache[shard_id] = fresh
        return fresh.state

    def _catch_up(self, pk: str, cached: _Cached, item: dict[str, Any] | None) -> bool:
        """Lanes mode: bring the cached state from its commit ``m`` to the shard item's
        ``n`` with the logs of the commits between (design §5.1 step 2) instead of reading
        the partition again: one ``Query`` of the ``#log#`` range m+1..n (none when every
        log is known), only the parts of the ids ``logs`` names counting (an orphan of a
        lost attempt in the range is read and skipped). Each log entry is the full new
        content of an item (window items and outbox entries), so the cache's image of the
        items (:attr:`_Cached.items`) takes them as they are, and the state's windows are
        set from that image as :meth:`_load` sets them from the table: the ones the logs
        changed, or all of them when an attempt of this process left the state changed
        (:attr:`_Cached.spoiled`, after a lost commit). ``False``: a full read is needed:
        a commit between has no log named (more than the kept logs behind), a part is
        gone (a newer commit dropped the log), or the shard is a reshard's child still
        inheriting, holds windows another shard's close left open (``flushed``: an
        older version's close, which wrote no log), or holds sessions (their ``h#KEY``
        items are read by a full read; a catch-up of sessions is not written yet)."""
        state = cached.state
        if (
            item is None
            or "ancestors" in item
            or state.ancestors
            or state.inherited
            or state.foreign
            or state.waiting
            or cached.unmarked
            or cached.flushed
            or self.end_of is not None
        ):
            return False
        n, logs, pending = read_head(item)
        m = cached.n
        if n < m or n - m > KEEP_LOGS or any(k not in logs for k in range(m + 1, n + 1)):
            return False
        found = self._read_logs(pk, cached, m, n, logs)
        if found is None:
            return False
        touched: set[WindowKey] = set()
        try:
            for k in range(m + 1, n + 1):
                for entry in found[k]:
                    if entry["window"]["S"].startswith("w#"):
                        wkey, raw_v, acc, closed, _, rank, hw = _effective(entry, None)
                        self._note_legacy(entry, wkey)
                        cached.items[wkey] = (raw_v, None, None if closed else acc, rank, hw)
                        touched.add(wkey)
        except (KeyError, TypeError, ValueError):
            return False  # an unreadable entry: the full read says what it is
        applied = item["applied"]["S"] if "applied" in item else None
        cached.applied = applied
        cached.rev = item["rev"]["S"]
        cached.clock = float(item["clock"]["N"]) if "clock" in item else None
        cached.n, cached.logs, cached.pending = n, logs, pending
        if "legacy_applied" in item and cached.legacy is None:  # another process converted
            cached.legacy = item["legacy_applied"]["S"]
            cached.outbox = {}  # now in outbox entries (its commit's log)
        cached.decoded = {k: v for k, v in (cached.decoded | found).items() if k in pending}
        cached.unrolled &= pending
        max_time, lift = max_time_and_lift(item, self.lateness)
        if cached.spoiled:
            state = cached.state = ShardState()
            touched = set(cached.items)
        state.max_time, state.lift = max_time, lift
        state.applied = _pos(applied) if applied else None
        state.outbox = dict(cached.outbox)  # the shard item's (main's, before a conversion)
        self._set_windows(cached, touched)
        cached.spoiled = False
        return True

    def _read_logs(
        self, pk: str, cached: _Cached, m: int, n: int, logs: Mapping[int, str]
    ) -> dict[int, list[dict[str, Any]]] | None:
        """The items of the logs of commits m+1..n: those this process holds
        (:attr:`_Cached.decoded`), the others from one ``Query`` of their range; ``None``:
        a named part is missing (a later commit dropped the log)."""
        out = {k: cached.decoded[k] for k in range(m + 1, n + 1) if k in cached.decoded}
        if len(out) == n - m:
            return out
        texts = {i["window"]["S"]: i["log"]["S"]
                 for i in self._query(pk, log_prefix(m + 1, ""), log_prefix(n, "~"))}  # fmt: skip
        try:
            for k in range(m + 1, n + 1):
                if k not in out:
                    log_id, count = log_id_parts(logs[k])
                    prefix = log_prefix(k, log_id)
                    out[k] = decode_log({i: texts[f"{prefix}{i:03d}"] for i in range(count)},
                                        count)  # fmt: skip
        except (KeyError, ValueError):
            return None
        return out

    def _set_windows(self, cached: _Cached, wkeys: Set[WindowKey]) -> None:
        """The state's windows ``wkeys`` as the cache's image of their items holds them,
        exactly as :meth:`_load` reads them from the table: an open item's accumulators
        and high-water, in the windows of its end by rank (then sort key, as the table
        orders them), or in ``flushed`` if the watermark passed its end; a closed item
        (or none) leaves the state. Tumbling and hopping windows only (the end is the
        start plus the size)."""
        state, items, size = cached.state, cached.items, self.size
        watermark = None if state.max_time is None else state.max_time - self.lateness
        by_end, windows, hw = state.by_end, state.windows, state.hw
        legacy_mark = cached.legacy_mark()
        ends: set[Any] = set()
        for wkey in wkeys:
            end = wkey[1] + size
            hw.pop(wkey, None)
            if windows.pop(wkey, None) is not None:
                by_end[end].remove(wkey)
                ends.add(end)
            entry = items.get(wkey)
            if entry is None or entry[2] is None:
                continue
            if (held := _read_hw(entry[4], True, legacy_mark)) is not None:
                hw[wkey] = held
            if watermark is not None and end <= watermark:  # as _load: closed elsewhere
                cached.flushed.add(wkey)
                continue
            windows[wkey] = decode(entry[2])
            by_end.setdefault(end, []).append(wkey)
            ends.add(end)
        for end in ends:
            if by_end.get(end):
                by_end[end].sort(key=lambda w: (items[w][3], _window_sk(w)))
            else:
                by_end.pop(end, None)
        if ends:
            state.ends = sorted(by_end)  # a sorted list is a heap

    def _head(self, pk: str, shard_id: str) -> tuple[dict[str, Any] | None, _Listed]:
        """A warm batch's one round trip: the shard item's revision and the list of the
        step's shards (one ``BatchGetItem``), and at the same time the shard items of the
        other shards the list named last time in this process (another), all strongly
        consistent; :meth:`quiet` takes the list and the items. Returns the shard item's
        head (:meth:`_head_item`; ``None``: no shard item) and what was read for
        :meth:`quiet`."""
        others = sorted(self._listed - {shard_id})
        reads: list[Callable[[], Any]] = [partial(self._rev_and_list, pk)]
        if others:
            reads.append(partial(self._shard_items, others))
        done = run_all(reads)
        rev, shards = done[0]
        self._listed = shards
        items = {i["shard"]["S"][len(self.prefix) :]: i for i in done[1]} if others else {}
        return rev, _Listed(shard_id, shards, frozenset(others), items)

    def _rev_and_list(self, pk: str) -> tuple[dict[str, Any] | None, frozenset[str]]:
        keys = [{"shard": {"S": pk}, "window": {"S": _SHARD_SK}},
                {"shard": {"S": self.prefix + _REGISTRY}, "window": {"S": _REGISTRY}}]  # fmt: skip
        names = {"#w": "window", "#r": "rev", "#s": "shards", "#t": "ticks"}
        projection = "#w, #r, #s, #t"  # ``ticks``: what the one-lane ``Put`` carries
        if self.high_water:  # the revision among the head's attributes
            projected = _head_projection(lanes=True)
            names = {"#w": "window", "#s": "shards"} | projected["ExpressionAttributeNames"]
            projection = "#w, #s, " + projected["ProjectionExpression"]
        request: dict[str, Any] = {self.table: {
            "Keys": keys,
            "ConsistentRead": True,
            "ProjectionExpression": projection,
            "ExpressionAttributeNames": names,
        }}  # fmt: skip
        head: dict[str, Any] | None = None
        shards: frozenset[str] = frozenset()
        for page in self._batch_get(request):
            for item in page.get("Responses", {}).get(self.table, []):
                if item["window"]["S"] == _SHARD_SK:
                    head = item
                elif "shards" in item:
                    shards = frozenset(item["shards"]["SS"])
        return head, shards

    def quiet(self, shard_id: str, cutoff: float) -> dict[str, ShardState]:
        """The other shards with no batch since ``cutoff`` and a window that ends (plus
        the lateness) by then, at most 99 and :data:`_QUIET_BYTES` of items (one
        transaction, at most 100 items and 4 MB, commits them with this shard).

        The list of shards and their items are those this batch read with its revision
        (:meth:`_head`), or read now (a cold start; a shard listed since). Each quiet
        shard's partition is then read, and a shard whose revision is no longer the one
        its item had is left alone: it changed since (a batch of its own, a child's mark,
        another shard's close), so the rule is decided on exactly the state that the
        transaction is conditional on."""
        self._asks_quiet = True  # from now on, a warm batch reads the list with its rev
        listed: _Listed | None = getattr(self._local, "registry", None)
        self._local.registry = None
        if listed is None or listed.shard != shard_id:  # a cold start: read it now
            registry = self._call(
                "GetItem",
                self.client.get_item,
                TableName=self.table,
                Key={"shard": {"S": self.prefix + _REGISTRY}, "window": {"S": _REGISTRY}},
                ConsistentRead=True,
            ).get("Item")
            shards = frozenset(registry["shards"]["SS"]) if registry else frozenset()
            listed = _Listed(shard_id, shards, frozenset(), {})
            self._listed = shards
        others = sorted(listed.shards - {shard_id})
        items = dict(listed.items)
        for fresh in self._shard_items([o for o in others if o not in listed.asked]):
            items[fresh["shard"]["S"][len(self.prefix) :]] = fresh
        self._local.quiet = found = {}
        out: dict[str, ShardState] = {}
        room = _QUIET_BYTES
        for other in others:
            item = items.get(other)
            if item is None:  # no shard item (yet)
                continue
            next_end = _number(item["next_end"]["N"]) if "next_end" in item else None
            if (
                "clock" in item
                and "children" not in item  # a reshard's parent: its children close
                and float(item["clock"]["N"]) < cutoff
                and next_end is not None
                and next_end + self.lateness <= cutoff
                and len(out) < _MAX_QUIET
                and _size(item) <= room
            ):
                if not self.high_water and _lanes_wrote(item):  # the way back: its batch
                    self._turn_lanes(item["shard"]["S"])  # is applied again in lanes mode
                cached = self._read(item["shard"]["S"], item)
                if self._moved(cached, item):
                    continue  # changed since its item was read: not decided on that
                room -= _size(item)
                found[other] = cached
                out[other] = cached.state
        return out

    def outcomes(self, shard_id: str, first: Position, last: Position) -> dict[Position, Outcome]:
        """The outbox entries (``~o#POS`` items) of the positions from ``first`` to
        ``last``: one strongly consistent ``Query`` (pages aside), made by the step at a
        batch's first record applied already that the shard item's outbox does not name.
        Only records that yielded results or a state-dependent error have one; a late
        record is late again (the watermark only grows, a window never reopens), except
        a session's (:attr:`keeps_late`)."""
        if not self.high_water:
            return {}
        pk = self.prefix + shard_id
        # An entry's parts (``POS~I``) sort after the entries of the positions whose part
        # tuple extends its own (``~`` after ``.`` and digits): the parts of (s, sub, ())
        # come after (s, sub, (1,)). So the range reads up to the last parts of ``last``'s
        # (s, sub), and what lies outside ``first``..``last`` is dropped (review 6).
        low, high = outbox_sk(first), outbox_sk((last[0], last[1], ())) + "~~"
        try:
            found = self._query(pk, low, high)
            cached = self._cache.get(shard_id)
            if cached is not None and cached.pending:  # committed, maybe not rolled forward
                kept = {i["window"]["S"]: i for i in found}
                logs = [(m, [e for e in log if low <= e["window"]["S"] <= high])
                        for m, log in self._pending_logs(pk, cached)]  # fmt: skip
                found = list(overlay(kept, logs).values())
            out = {at: outcome for at, outcome in _outcomes(found).items() if first <= at <= last}
        except (KeyError, TypeError, ValueError) as exc:  # retried, never dead-lettered
            msg = f"window state: an outbox entry of {pk!r} in {self.table!r} is unreadable: {exc}"
            raise WindowStateError(msg) from exc
        cached = self._cache.get(shard_id)
        if cached is not None:
            cached.rolled.update(out)
            if cached.legacy is None:  # not converted: the one-lane outbox, whole (the
                for at, outcome in cached.outbox.items():  # step's copy is trimmed)
                    if first <= at <= last:
                        out.setdefault(at, outcome)
        return out

    def decided(
        self, shard_id: str, wkeys: Sequence[WindowKey]
    ) -> dict[WindowKey, dict[str, Mark]]:
        """The high-water of windows the state does not hold (closed ones: their items
        keep it), from their items: one ``BatchGetItem``, strongly consistent, for a
        record whose every window is behind the watermark (it looks late) and that may
        have been applied already (at or before the shard's ``applied``). An item with
        no ``hw`` (written by an earlier version, or after a rollback to one) or with
        :data:`HW_UNBOUNDED` reads as :data:`HW_UNBOUNDED`: unknown. A window with no
        item is absent (no record went into it: the record is late), except in a shard
        the one-lane protocol wrote (not converted yet, or ``legacy_applied``), which
        deletes its closed windows' items: there it is decided up to the position that
        protocol had applied (:meth:`_Cached.legacy_mark`), as an item with no ``hw``."""
        if not wkeys:
            return {}
        cached = self._cache.get(shard_id)
        judged = cached.judged_at() if cached is not None else None
        applied = _pos(judged) if judged else None  # old items' ``v``: :func:`_judged_at`
        legacy_mark = cached.legacy_mark() if cached is not None else _NO_MARK
        pk = self.prefix + shard_id
        legacy = self._legacy
        keys = []
        for key, start in wkeys:
            stored = legacy.get((pk, key, start)) if legacy else None
            sk = f"w#{_n(start)}#{key_json(key) if stored is None else stored}"
            keys.append({"shard": {"S": pk}, "window": {"S": sk}})
        got: dict[str, dict[str, Any]] = {}
        for first in range(0, len(keys), 100):
            request: dict[str, Any] = {self.table: {"Keys": keys[first : first + 100],
                                                    "ConsistentRead": True}}  # fmt: skip
            for page in self._batch_get(request):
                for item in page.get("Responses", {}).get(self.table, []):
                    got[item["window"]["S"]] = item
        if cached is not None and cached.pending:  # lanes: committed, maybe not rolled forward
            asked = {k["window"]["S"] for k in keys}
            try:
                logs = self._pending_logs(pk, cached)
            except (KeyError, TypeError, ValueError) as exc:  # retried, never dead-lettered
                msg = f"window state: a pending log of {pk!r} in {self.table!r}: {exc!r}"
                raise WindowStateError(msg) from exc
            got = overlay(got, [(m, [e for e in log if e["window"]["S"] in asked])
                                for m, log in logs])  # fmt: skip
        out: dict[WindowKey, dict[str, Mark]] = {}
        if cached is not None and judged and cached.one_lane_wrote():
            # the one-lane protocol wrote the shard: it deletes the items of the windows it
            # closed (:func:`processors.window_starts.dead`), and it decided every record up
            # to the position it had applied, whatever its windows' items say: a window
            # with no item is decided up to there, as one with an item of its own that
            # has no high-water (issue 17: such a redelivered record came out late)
            for key, start in wkeys:
                out[key, start] = {HW_UNBOUNDED: legacy_mark}
        for item in got.values():
            try:
                wkey, _, acc, closed, _, _, hw = _effective(item, applied)
            except (KeyError, TypeError, ValueError) as exc:
                msg = f"window state: an item of {pk!r} in {self.table!r}: {exc!r}"
                raise WindowStateError(msg) from exc
            if acc is None and not closed:
                continue  # a window a batch that never committed opened
            out[wkey] = hw_marks(hw) if hw is not None else {HW_UNBOUNDED: legacy_mark}
        return out

    def _read(self, pk: str, seen: dict[str, Any] | None = None) -> _Cached:
        """The shard's state from the table (``seen``: its shard item as just read, whose
        starts the read takes at once with the rest: :meth:`_partition`)."""
        try:
            return self._load(pk, seen)
        except (KeyError, TypeError, ValueError) as exc:  # retried, never dead-lettered
            msg = f"window state: an item of {pk!r} in table {self.table!r} is unreadable: {exc!r}"
            raise WindowStateError(msg) from exc

    def _load(  # noqa: PLR0915  # one pass over the partition
        self, pk: str, seen: dict[str, Any] | None = None
    ) -> _Cached:
        found, loaded = self._partition(pk, seen)
        items, decoded = _laid(found)
        shard_item = next((i for i in items if i["window"]["S"] == _SHARD_SK), None)
        if shard_item is not None and not self.high_water and _lanes_wrote(shard_item):
            self._turn_lanes(pk)
        self._drop_garbage(pk, found)
        state = ShardState()
        applied_text = shard_item["applied"]["S"] if shard_item else None
        applied = _pos(applied_text) if applied_text else None
        legacy = shard_item.get("legacy_applied", {}).get("S") if shard_item else None
        judged = legacy if legacy is not None else applied_text  # old items' v: _judged_at
        judged_at = _pos(judged) if judged else None
        watermark = None
        if shard_item is not None:
            state.applied = applied
            state.max_time, state.lift = max_time_and_lift(shard_item, self.lateness)
            watermark = watermark_of(shard_item, self.lateness)
            state.outbox = _outbox(_outbox_of(shard_item, items))
        rev = shard_item["rev"]["S"] if shard_item else None
        cached = _Cached(state, applied_text, rev, lanes=self.high_water)
        cached.parts = {i["window"]["S"] for i in items if i["window"]["S"].startswith(_PART)}
        if shard_item is not None and "clock" in shard_item:
            cached.clock = float(shard_item["clock"]["N"])
        if shard_item is not None and _fenced_only(shard_item):
            cached.unlisted = True
        cached.n, cached.logs, cached.pending = read_head(shard_item)
        cached.ticks = ticks_of(shard_item)
        cached.starts, cached.loaded = window_starts.listed(shard_item), loaded
        cached.dead = window_starts.deleting(shard_item)  # a commit buries them (any process)
        if shard_item is not None and "tick_n" in shard_item:  # a scheduled flush's last T
            cached.tick_n = int(shard_item["tick_n"]["N"])
        cached.decoded = decoded
        cached.legacy = legacy
        legacy_mark = cached.legacy_mark()
        opened: list[tuple[Any, int, tuple[Any, Any]]] = []  # ends: int, or float (sessions)
        settled: set[WindowKey] = set()  # windows with an item of their own here
        for item in items:
            if not item["window"]["S"].startswith("w#"):  # the shard item, outbox parts
                if item["window"]["S"].startswith(_KEY_SK):  # a key's high-water (sessions)
                    state.key_hw[key_of_json(item["key"]["S"])] = hw_marks(item["hw"]["S"])
                continue
            wkey, raw_v, acc, closed, end, rank, hw = _effective(item, judged_at, self.end_of)
            self._note_legacy(item, wkey)
            token = item["token"]["S"] if "token" in item else None
            cached.items[wkey] = (raw_v, token, None if closed else acc, rank, hw)
            if acc is None and not closed:
                continue
            settled.add(wkey)
            if acc is None or closed:
                continue
            accs = decode(acc)
            if (held := _read_hw(hw, self.high_water, legacy_mark)) is not None:
                state.hw[wkey] = held
            if watermark is not None and end <= watermark:  # closed by another shard's batch
                cached.flushed.add(wkey)
                continue
            state.windows[wkey] = accs
            opened.append((end, rank, wkey))
        for end, _, wkey in sorted(opened, key=lambda o: (o[0], o[1])):
            by_end = state.by_end.get(end)
            if by_end is None:
                state.by_end[end] = [wkey]
                heapq.heappush(state.ends, end)
            else:
                by_end.append(wkey)
        if shard_item is not None and "ancestors" in shard_item:  # still inheriting
            ancestors = tuple(sorted(shard_item["ancestors"]["SS"]))
            view = self._view(pk[len(self.prefix) :], ancestors, None, ())
            # no watermark here: an inherited window stays open until a claim (this
            # shard's watermark may start past it, and only an applied record closes it)
            parts = [p for p in view.parts if p[2] not in settled]
            state.seed(ancestors, None, parts, view.foreign - settled, self._merger())
        return cached
