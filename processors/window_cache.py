"""What a process of the DynamoDB store knows of a shard between its batches."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from processors.window_items import _pos
from processors.window_state import _NO_MARK, position_mark

if TYPE_CHECKING:
    from collections.abc import Callable

    from processors.window_state import Mark, Outcome, Position, ShardState

__all__: list[str] = []


class _Cached:
    """A shard's state as this process last committed it, and what it knows of the items."""

    __slots__ = ("applied", "burying", "clean", "clock", "dead", "decoded", "flushed", "items",
                 "lanes",
                 "legacy", "loaded", "logs", "n", "outbox", "parts", "pending", "rev",
                 "rolled", "spoiled", "starts", "state", "tick_n", "ticks", "unlisted",
                 "unmarked", "unrolled")  # fmt: skip

    def __init__(
        self, state: ShardState, applied: str | None, rev: str | None, *, lanes: bool
    ) -> None:
        self.state = state
        #: the mode it was read in (:attr:`DynamoDBStore.high_water`): an attempt in the
        #: other mode reads the shard again (the one-lane protocol keys it by ``rev`` and
        #: keeps no high-water, lanes mode by ``n`` with the logs' images)
        self.lanes = lanes
        self.clock: float | None = None  # the shard item's: when its last batch committed
        self.applied = applied  # the shard item's ``applied`` text, None: no item
        self.rev = rev  # the shard item's revision, new at each write; None: no item
        self.clean = True  # False while a batch holds the state (not committed yet)
        #: lanes mode: an attempt lost its commit (:class:`CommitLost`) after it changed
        #: ``state``; ``items`` still hold the commit ``n``, from which the next read
        #: rebuilds it (:meth:`DynamoDBStore._catch_up`)
        self.spoiled = False
        #: no commit yet (no shard item, or a fence's only): the commit lists the shard
        self.unlisted = rev is None
        #: (key, start) -> (the item's raw ``v`` or None: no item, its write ``token`` or
        #: None: an item of an earlier version, its effective acc JSON, its rank among the
        #: windows of its end, its effective high-water JSON or None)
        self.items: dict[
            tuple[Any, int], tuple[str | None, str | None, str | None, int, str | None]
        ] = {}
        #: windows another shard's batch closed (quiet): marked closed at the next commit
        #: (one lane, the commit listing its starts: buried after it, as ``dead``)
        self.flushed: set[tuple[Any, int]] = set()
        #: one lane: windows a committed batch closed at a start its shard item no longer
        #: lists, whose items are still to bury (replace by a tombstone,
        #: :meth:`_OneLaneCommit._bury_dead`): as the shard item lists them (``deleting``),
        #: less those this process buried since
        self.dead: set[tuple[Any, int]] = set()
        #: the burials of ``dead`` this process started and has not settled yet: they run
        #: beside the batch's sinks (:func:`stream.overlap.behind`), and the shard's next
        #: commit settles them first (:meth:`_OneLaneCommit._settle_burials`)
        self.burying: Callable[[], None] | None = None
        #: a new child's ancestors -> the revision read: marked at its first commit
        self.unmarked: dict[str, str] = {}
        #: the sort keys of outbox parts in the table (the shard item's, and any left by
        #: a batch that never committed): deleted once a commit no longer needs them
        self.parts: set[str] = set()
        #: the outbox the shard item holds (its last commit's, carried over by the next)
        self.outbox: dict[Position, Outcome] = dict(state.outbox)
        #: positions whose outcome is in an outbox entry item (``~o#POS``) already: written
        #: by this process, or read back (:meth:`DynamoDBStore.outcomes`); in lanes mode,
        #: in an entry or a committed log
        self.rolled: set[Position] = set()
        #: lanes mode (:mod:`processors.window_log`): the shard item's commit number, its
        #: ``logs`` (N -> ``ID/PARTS``) and ``pending`` as last read or written, the
        #: pending logs' items this process knows (N -> items), and its own committed
        #: logs whose roll-forward failed (rolled forward after its next commit)
        self.n = 0
        self.logs: dict[int, str] = {}
        self.pending: set[int] = set()
        self.decoded: dict[int, list[dict[str, Any]]] = {}
        self.unrolled: set[int] = set()
        #: lanes mode: the shard item's ``legacy_applied`` (:func:`_judged_at`), ``None``
        #: while no lanes commit converted it (then ``outbox`` is the one-lane outbox the
        #: shard item still holds, which the converting commit moves to outbox entries)
        self.legacy: str | None = None
        #: a scheduled flush's pending emissions the shard item names (``ticks``: T ->
        #: ``PARTS/SEQ``, :mod:`processors.window_tick_store`) and its last tick number
        #: (``tick_n``): the one-lane protocol's every ``Put`` of the shard item carries
        #: them (design risk 7.4), so a warm batch takes ``ticks`` from its head read
        #: (an ack removes an entry without moving ``rev``)
        self.ticks: dict[int, str] = {}
        self.tick_n = 0
        #: one lane: the shard item's ``starts`` as read or last written (the sort key
        #: prefixes ``w#START#`` of every window open at its ``applied``; ``None``: not
        #: listed), which a ``Put`` of it by a close that opens no window carries; and the
        #: prefixes the load read (``None``: the whole partition), outside of which an item
        #: may exist that ``items`` does not know (:mod:`processors.window_starts`)
        self.starts: frozenset[str] | None = None
        self.loaded: frozenset[str] | None = None

    def judged_at(self) -> str | None:
        """The position text old window items (``v``/``prev``) are judged against."""
        return self.legacy if self.legacy is not None else self.applied

    def one_lane_wrote(self) -> bool:
        """Whether the one-lane protocol wrote the shard (lanes mode reads it): converted
        (``legacy_applied``), not yet (no commit number ``n``), or its item lists starts
        (only one-lane commits list them, and lanes commits, updates, keep the list). Such
        a shard may have buried its closed windows' items under tombstones
        (:func:`processors.window_starts.dead`)."""
        return self.legacy is not None or self.n == 0 or self.starts is not None

    def legacy_mark(self) -> Mark:
        """What an old window item's unknown high-water means in lanes mode: every
        partition key decided up to the position the one-lane protocol had applied
        (:func:`_read_hw`); :data:`_NO_MARK` (unknown, the one-lane rule) if none."""
        judged = self.judged_at()
        return position_mark(_pos(judged)) if judged else _NO_MARK
