"""The window state in the process (``state: memory``): tests, local runs, a warm Lambda.

It applies the DynamoDB store's size rule to the same items
(:func:`~processors.window_items.window_item`) and, between "processes" of one store, its
commit-number rule (:class:`~processors.window_state.CommitLost`).
"""

from __future__ import annotations

import heapq
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from processors.window_items import (
    _pos_text,
    _state_too_large,
    _too_large,
    decode,
    encode,
    hw_stored,
    window_item,
)
from processors.window_state import (
    ClaimLost,
    CommitLost,
    Inherited,
    Mark,
    Outcome,
    Position,
    ShardState,
    WindowKey,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence, Set

    from processors.window_state import Merge, ParentsOf
    from processors.window_tick import Emission

__all__ = ["MemoryStore"]


class MemoryStore:
    """State in the process: kept while warm, lost on a cold start (tests, local runs).

    ``writes`` counts what a durable store would write: one per changed window per batch.
    Reshards work as with DynamoDB, within the process: ``owners`` holds the claims.

    Sizes: a commit refuses what the DynamoDB store would, by the same rule on the same
    item (:func:`window_item`, with the accumulators before the batch as ``prev``): a
    window whose item would be over 400 KB raises :class:`StateTooLarge`, and the shard
    starts again from its last commit (as DynamoDB reads it back), so ``shardline test``
    and ``invoke`` dead-letter the records the deployed function would. For that it keeps,
    per shard, what the table would hold (:class:`_Committed`).

    High-water (:attr:`ShardState.hw`): closed windows' stay in the state, so the step
    tells a redelivered record of a closed window (applied before it closed) from a late
    one without the single ``applied`` position (:attr:`high_water`). They are kept as long
    as the store: it holds tests' and ``shardline test``'s short runs (the DynamoDB design
    bounds them by the record age limit; issue 16, slice S3).

    Processes (:meth:`process`, for tests of lanes): several stores on one committed
    state, each with its own copy of each shard's state, as processes on one table. A
    commit holds only at the shard's commit number it read (``n``), else
    :class:`CommitLost`: the step reads the state again (the committed one, copied) and
    applies its batch again. One store alone uses its states in place and its commits
    always hold.

    Args:
        prefix, size, end_of: as :class:`DynamoDBStore`'s (they are in the item).
        sized: whether to apply the size rule; the window steps turn it off when all their
            aggregations are built-ins, whose byte budgets keep an item under the limit
            (the rule could never refuse it: encoding each changed window per batch would
            only cost time).
    """

    __slots__ = ("_committed", "_entries", "_n", "_table", "end_of", "keeps_outcomes",
                 "owners", "prefix", "shards", "size", "sized", "writes")  # fmt: skip

    #: the step decides redeliveries by the windows' high-water (:class:`WindowStore`)
    high_water = True
    #: every partition key: it keeps tests' and ``shardline test``'s short runs
    hw_bound: int | None = None

    def outcomes(self, shard_id: str, first: Position, last: Position) -> dict[Position, Outcome]:
        """What the commits kept of the records from ``first`` to ``last`` (every outcome a
        commit's outbox held, as the DynamoDB store's outbox entries): a batch's outbox
        forgets what lies before its first record, which with lanes is no bound on what a
        lagging lane delivers again (a session's late record decided already yields
        "late" from here: its key's high-water says decided, and nothing else says late)."""
        kept = self._entries.get(shard_id)
        if not kept:
            return {}
        return {at: outcome for at, outcome in kept.items() if first <= at <= last}

    def decided(
        self, shard_id: str, wkeys: Sequence[WindowKey]
    ) -> dict[WindowKey, dict[str, Mark]]:
        """Nothing beyond the state's ``hw``: it keeps closed windows' too."""
        del shard_id, wkeys
        return {}

    def __init__(
        self,
        prefix: str = "",
        size: int = 0,
        end_of: Callable[[tuple[Any, Any], list[Any] | None], float] | None = None,
        *,
        sized: bool = True,
    ) -> None:
        self.sized = sized
        self.shards: dict[str, ShardState] = {}
        self.writes = 0
        #: (holder shard, window) -> the shard that claimed it
        self.owners: dict[tuple[str, WindowKey], str] = {}
        self.prefix = prefix
        self.size = size
        self.end_of = end_of
        self._committed: dict[str, _Committed] = {}
        #: shard -> position -> the outcome a commit kept for it (shared by the processes;
        #: :meth:`outcomes`), kept only for a step with lanes (``keeps_outcomes``, which it
        #: sets): one entry per record that yields something, for the store's life
        self._entries: dict[str, dict[Position, Outcome]] = {}
        self.keeps_outcomes = False
        #: shard -> its commit number (shared by the processes)
        self._n: dict[str, int] = {}
        #: shard -> a copy of its committed state, once there are processes (shared)
        self._table: dict[str, ShardState] | None = None

    def process(self) -> MemoryStore:
        """Another process on this store's committed state (tests of lanes: two window
        steps on two processes of one store stand for two Lambda instances): claims,
        commit numbers and what the table would hold are shared, each shard's state is the
        process's own. From the first call, every commit also keeps a copy of the state
        it committed, which a process behind the shard's commit number starts from."""
        if self._table is None:
            self._table = {s: _copy(state) for s, state in self.shards.items()}
        other = MemoryStore(self.prefix, self.size, self.end_of, sized=self.sized)
        other.owners, other._committed = self.owners, self._committed
        other._entries, other.keeps_outcomes = self._entries, self.keeps_outcomes
        other._n, other._table = self._n, self._table
        return other

    def shard(self, shard_id: str) -> ShardState:
        """The shard's state; a copy before its first batch and while it holds inherited
        windows (a reshard's child), so that a batch whose claim is lost
        (:class:`ClaimLost`) leaves the committed state as it was and is applied again from
        it, as the DynamoDB store reads it again; :meth:`commit` keeps the copy; and a new
        object once windows a sibling claimed left it (session windows index the state
        object they were handed). Otherwise no claim can be lost, and the state is used in
        place."""
        state = self.shards.get(shard_id)
        table = self._table
        if table is not None and (state is None or state.n != self._n.get(shard_id, 0)):
            held = table.get(shard_id)  # another process committed since: start from that
            state = self.shards[shard_id] = ShardState() if held is None else _copy(held)
        if state is None:
            state = self.shards[shard_id] = ShardState()
        if state.inherited:  # a sibling may have claimed some since the last batch
            lost = {w for w, held in state.inherited.items()
                    if not all(self._free(o, w, shard_id) for o in held)}  # fmt: skip
            if lost:  # a new object: what a step built on the old one is stale
                state = self.shards[shard_id] = _copy(state)
                state.drop(lost)
        if state.inherited or state.applied is None:
            return _copy(state)
        return state

    def bind(self, merge: Merge) -> None:
        pass  # the states stay in the process: nothing is read back

    def progress(self, shard_ids: list[str]) -> dict[str, tuple[float | None, float | None]]:
        shards = self.shards if self._table is None else self._table
        return {s: (shards[s].max_time, None) for s in shard_ids
                if s in shards and shards[s].applied is not None}  # fmt: skip

    def _free(self, origin: Inherited, wkey: WindowKey, me: str) -> bool:
        owner = self.owners.get((origin.holder, origin.at(wkey)))
        return owner is None or owner == me or owner in origin.via

    def inherit(
        self,
        shard_id: str,
        state: ShardState,
        parents: tuple[str, ...],
        parents_of: ParentsOf,
        merge: Merge,
    ) -> None:
        parts: list[tuple[int, int, WindowKey, list[Any], tuple[Inherited, ...]]] = []
        foreign: set[WindowKey] = set()
        max_time = self._gather(shard_id, parents, parents_of, parts, foreign)
        state.seed(parents, max_time, parts, foreign, merge)

    def _gather(
        self,
        me: str,
        parents: tuple[str, ...],
        parents_of: ParentsOf,
        parts: list[tuple[int, int, WindowKey, list[Any], tuple[Inherited, ...]]],
        foreign: set[WindowKey],
    ) -> float | None:
        best: float | None = None
        states = self.shards if self._table is None else self._table
        for parent in parents:
            ps = states.get(parent)
            if ps is None or ps.applied is None:  # never had a batch: its parents hold all
                t = self._gather(me, parents_of(parent), parents_of, parts, foreign)
            else:
                t = ps.max_time
                for end in sorted(ps.by_end):
                    for rank, wkey in enumerate(ps.by_end[end]):
                        held = ps.inherited.get(wkey)
                        origins = (
                            tuple(replace(o, via=(*o.via, parent)) for o in held)
                            if held
                            else (Inherited(parent),)
                        )
                        if all(self._free(o, wkey, me) for o in origins):
                            parts.append((end, rank, wkey, decode(encode(ps.windows[wkey])),
                                          origins))  # fmt: skip
                        else:
                            foreign.add(wkey)
                foreign |= ps.foreign
            if t is not None and (best is None or t > best):
                best = t
        return best

    def commit(
        self,
        shard_id: str,
        state: ShardState,
        changed: Set[tuple[Any, int]],
        quiet: Mapping[str, ShardState] | None = None,
    ) -> None:
        n = self._n.get(shard_id, 0)
        if state.n != n:
            msg = f"shard {shard_id!r}: another commit ({n}) since this batch read it ({state.n})"
            raise CommitLost(msg)
        claims = state.claims(changed) if state.inherited else {}
        for wkey, origins in claims.items():
            if not all(self._free(o, wkey, shard_id) for o in origins):
                msg = f"window {wkey!r} of shard {origins[0].holder!r}: another shard claimed it"
                raise ClaimLost(msg)
        committed = self._committed.get(shard_id) or _Committed()
        items = self._items(shard_id, state, changed, committed) if self.sized else {}
        for wkey, origins in claims.items():
            for origin in origins:
                self.owners[origin.holder, origin.at(wkey)] = shard_id
        state.claimed(claims)
        state.n = self._n[shard_id] = n + 1
        self.shards[shard_id] = state  # the copy :meth:`shard` gave, now committed
        if self._table is not None:
            self._table[shard_id] = _copy(state)
        self.writes += len(changed)
        if state.outbox and self.keeps_outcomes:
            self._entries.setdefault(shard_id, {}).update(state.outbox)
        state.raised.clear()
        if self.sized:
            committed.update(state, items)
            self._committed[shard_id] = committed

    def _items(
        self,
        shard_id: str,
        state: ShardState,
        changed: Set[WindowKey],
        committed: _Committed,
    ) -> dict[WindowKey, tuple[str, Any, int] | None]:
        """The changed windows' items as the table would hold them after this batch (``None``:
        closed). Raises :class:`StateTooLarge` as the DynamoDB store does, the shard's state
        put back as last committed (a batch changed it in place)."""
        pk = {"S": self.prefix + shard_id}
        v = _pos_text(state.applied) if state.applied is not None else ""
        out: dict[WindowKey, tuple[str, Any, int] | None] = {}
        ranks: dict[Any, dict[WindowKey, int]] = {}
        too_large: set[WindowKey] = set()
        for wkey in changed:
            accs = state.windows.get(wkey)
            if accs is None:
                out[wkey] = None
                continue
            end: Any = wkey[1] + self.size if self.end_of is None else self.end_of(wkey, accs)
            of_end = ranks.get(end)
            if of_end is None:
                of_end = ranks[end] = {w: i for i, w in enumerate(state.by_end.get(end, ()))}
            rank = of_end.get(wkey, 0)
            acc = encode(accs)
            saved = committed.items.get(wkey)
            held = state.hw.get(wkey)
            was = committed.hw.get(wkey)
            item = window_item(pk, wkey, end, v, None if saved is None else saved[0], acc, rank,
                               hw=hw_stored(held) if held else None,
                               saved_hw=hw_stored(was) if was else None)  # fmt: skip
            if _too_large(item, acc):
                too_large.add(wkey)
            out[wkey] = (acc, end, rank)
        if too_large:
            if self.shards.get(shard_id) is state:  # changed in place: back to the commit
                self.shards[shard_id] = restored = committed.state(state)
                restored.n = state.n
            raise _state_too_large(shard_id, too_large)
        return out

    def quiet(self, shard_id: str, cutoff: float) -> dict[str, ShardState]:
        return {}  # one process: a quiet shard's windows wait for its next record

    # a scheduled flush has no table to keep its emissions in (``state: memory`` refuses
    # ``flush_s``): a tick finds no shard
    def tick_shards(self) -> list[str]:
        return []

    def pending_ticks(self) -> list[Emission]:
        return []

    def tick_state(self, shard_id: str, cutoff: float) -> ShardState | None:
        return None

    def tick_commit(
        self,
        shard_id: str,
        state: ShardState,
        results: Sequence[dict[str, Any]],
        closed: Set[WindowKey] = frozenset(),
    ) -> Emission | None:
        return None

    def ack_tick(self, emission: Emission) -> None:
        return None


class _Committed:
    """What a DynamoDB table would hold of a memory store's shard after its last commit:
    the shard item's position, time and outbox, and each open window's item (accumulators
    as JSON, end, rank), and the high-water of each window a commit changed (closed ones'
    too: the memory store keeps them)."""

    __slots__ = ("applied", "hw", "items", "key_hw", "max_time", "outbox")

    def __init__(self) -> None:
        self.applied: Position | None = None
        self.max_time: float | None = None
        self.outbox: dict[Position, Outcome] = {}
        self.items: dict[WindowKey, tuple[str, Any, int]] = {}
        self.hw: dict[WindowKey, dict[str, Mark]] = {}
        self.key_hw: dict[Any, dict[str, Mark]] = {}

    def update(
        self, state: ShardState, items: Mapping[WindowKey, tuple[str, Any, int] | None]
    ) -> None:
        self.applied, self.max_time, self.outbox = state.applied, state.max_time, dict(state.outbox)
        self.key_hw = {key: dict(held) for key, held in state.key_hw.items()}
        hw = state.hw
        for wkey, item in items.items():
            held = hw.get(wkey)
            if held is not None:
                self.hw[wkey] = dict(held)
            if item is None:
                self.items.pop(wkey, None)
            else:
                self.items[wkey] = item

    def state(self, spoiled: ShardState) -> ShardState:
        """The shard's state read back from these items, as :meth:`DynamoDBStore._load`
        does (windows by end, then rank); reshard bookkeeping from ``spoiled``, the state
        the refused batch changed (which holds no inherited window: :meth:`MemoryStore.shard`
        gives a copy then)."""
        state = ShardState(max_time=self.max_time, applied=self.applied, outbox=dict(self.outbox))
        state.ancestors, state.foreign = spoiled.ancestors, set(spoiled.foreign)
        state.hw = {wkey: dict(held) for wkey, held in self.hw.items()}
        state.key_hw = {key: dict(held) for key, held in self.key_hw.items()}
        for wkey, (acc, end, _) in sorted(self.items.items(), key=lambda i: (i[1][1], i[1][2])):
            state.windows[wkey] = decode(acc)
            of_end = state.by_end.get(end)
            if of_end is None:
                state.by_end[end] = [wkey]
                heapq.heappush(state.ends, end)
            else:
                of_end.append(wkey)
        return state


def _copy(state: ShardState) -> ShardState:
    """A copy a batch can change without touching ``state``: the containers and the
    accumulators are copied; outcomes, positions and keys are shared (never changed)."""
    from copy import deepcopy  # noqa: PLC0415  # a reshard's child in memory only

    return replace(
        state,
        windows=deepcopy(state.windows),
        ends=list(state.ends),
        by_end={end: list(keys) for end, keys in state.by_end.items()},
        outbox=dict(state.outbox),
        inherited=dict(state.inherited),
        foreign=set(state.foreign),
        waiting={end: list(keys) for end, keys in state.waiting.items()},
        hw={wkey: dict(held) for wkey, held in state.hw.items()},
        key_hw={key: dict(held) for key, held in state.key_hw.items()},
        raised=set(state.raised),
    )
