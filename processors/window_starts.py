"""The open windows' starts in the shard item: a cold read of a shard reads its open windows only.

A window's item used to stay in its shard's partition after the window closed (written
closed, with a TTL of a day and more: :data:`~processors.window_items.CLOSED_TTL_S`), and
DynamoDB deletes expired items only days after they expire. A read of the whole partition
(a cold start, a batch after a lost condition, a quiet shard's read, a flush's tick)
therefore read every window the shard closed in the last days: a shard that closes a
hundred windows a minute holds over 140,000 of them, a few hundred ``Query`` pages of 1 MB
read one after another and decoded in the function's memory before its first record. The
state it needs is the open windows only.

So, with one lane and for tumbling and hopping windows, every commit of a batch writes in
its shard item ``starts``: the sort key prefixes (``w#START#``) of the windows open at its
``applied``, at most :data:`STARTS_MAX` of them. A read of a shard whose item lists them
reads the items below ``w#`` (the shard item, the outbox's parts) and the items of each
listed start (one ``Query`` each, at once), not the rest of the partition.

The invariant: **every window open at the shard item's** ``applied`` **has its start
listed** (a superset is allowed). Why it holds:

* only a batch's commit makes a window open, and its item lists the starts of every window
  open in its state after the batch: the state it read (all open windows, by the
  invariant, or the whole partition) with the batch applied. A window another shard's
  batch or a flush closed stays open in its own items until the shard's next commit marks
  it closed (``flushed``), so those closes carry the list they read, as do the fence
  (an ``UpdateItem``) and a flush's tick;
* an item a failed attempt wrote (``v`` past ``applied``) is not open at ``applied``
  unless it was before (``prev``), and then its start is listed. Such an item at a start
  not listed is not read, and a commit's write over it (as new: no token read) loses its
  condition; so does a write over an item another attempt wrote since the read. With a
  read by the starts, either makes the commit fail with
  :class:`~processors.window_state.UnreadLost`, and the window step reads the shard whole
  (the cache dropped, the partition in :attr:`_TableStore._whole`) and applies the batch
  again, in the process: from there on, each write's condition and the fence of
  :mod:`processors.window_one_lane` see every item, as after a read of the partition. A
  batch that opens windows pays no read for it; a failed attempt's leftovers cost one
  more application of the batch;
* a commit that lists its starts does not write the windows it closed at a start it no
  longer lists (:func:`dead`: no reader needs them); it buries their items once it
  committed: ``BatchWriteItem`` puts a small tombstone over each, closed, with a closed
  item's TTL (:meth:`_OneLaneCommit._bury_dead`; a tombstone, not a delete, so that a
  stale attempt's write of the window as new loses its condition: review 25). Its shard
  item lists them (``deleting``: :class:`Deleting`), with the ones earlier burials left,
  so a failed burial, or a process that died before it, leaves them to the shard's next
  commit in any process (a load reads the list back; quiet closes and ticks carry it);
  past the list's caps the windows are written closed, with their TTL, as before. A
  window the batch opened and closed has no item known, but a failed attempt may have
  left one at its start (read by the starts: not read), or a stale one may write it
  later: it is buried too, a write unit whether or not the item is there. A commit that
  lists no starts writes closed windows closed, as before, so a shard read whole stays
  read whole;
* what does not list its starts is read whole, as before: a shard item an earlier
  version or lanes mode wrote (lanes mode keeps its own reads: its logs, catch-up and
  closed windows' high-water need the partition), a shard still inheriting from its
  parents (``ancestors``: its closed items say which parents' windows it settled), items
  written under an earlier key JSON (``_legacy``), session windows (a start per session),
  a shard with more than :data:`STARTS_MAX` starts open, and a shard whose commit failed
  in this process (:attr:`_TableStore._whole`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from processors.window_items import _SHARD_SK, _n, _number, _window_sk
from processors.window_keys import key_of_json

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Set

    from processors.window_state import ShardState, WindowKey

__all__ = ["DELETING_BYTES", "DELETING_MAX", "STARTS_MAX"]

#: The most starts a shard item lists (each a ``Query`` of a cold read); past it, none.
STARTS_MAX = 64
#: The most sort keys of closed windows' items still to bury a shard item lists
#: (``deleting``), and their most bytes: beside an inline outbox of up to 300 KB, the
#: item stays under DynamoDB's 400 KB. Past either, a commit writes the windows it
#: closed closed, with their TTL, as before the burials (:class:`Deleting`).
DELETING_MAX = 400
DELETING_BYTES = 32_000
_ATTRIBUTE = "starts"
_DELETING = "deleting"
_WINDOWS = "w#"  # the window items' sort key prefix: what sorts below it is read always


def start_prefix(start: Any) -> str:
    """The sort key prefix of a window start's items, as
    :func:`~processors.window_items._window_sk` writes them: ``w#START#`` (the ``#`` after
    the number sorts below every character a number is written with, so the prefixes sort
    as their items do). A commit lists each start once, without the key's JSON.

    >>> start_prefix(120), start_prefix(61.5), start_prefix(100.0)
    ('w#120#', 'w#61.5#', 'w#100#')
    """
    return f"{_WINDOWS}{_n(start)}#"


def listed(shard_item: Mapping[str, Any] | None) -> frozenset[str] | None:
    """The starts a shard item lists; ``None``: it lists none (read the partition)."""
    if shard_item is None or _ATTRIBUTE not in shard_item:
        return None
    return frozenset(shard_item[_ATTRIBUTE]["SS"]) - {_WINDOWS}


def attribute(starts: frozenset[str] | None) -> dict[str, Any]:
    """The shard item's ``starts`` attribute (none for ``None``; DynamoDB refuses an empty
    set, so no open window is the one prefix ``w#``, which no item has: nothing to read)."""
    if starts is None:
        return {}
    return {_ATTRIBUTE: {"SS": sorted(starts) or [_WINDOWS]}}


def open_starts(state: ShardState, whole: bool) -> frozenset[str] | None:
    """The starts a commit lists for ``state`` after its batch: its open windows'
    (``None``: not listed: ``whole``, for items of an earlier key JSON or session windows;
    a shard inheriting; too many)."""
    if whole or state.ancestors or state.inherited or state.foreign or state.waiting:
        return None
    starts = frozenset(map(start_prefix, {start for _, start in state.windows}))
    return starts if len(starts) <= STARTS_MAX else None


def dead(wkey: WindowKey, starts: frozenset[str] | None) -> bool:
    """Whether a window a commit closed needs no item: the commit lists its starts
    (``starts``, not ``None``) and not this window's. Its item is buried after the commit
    (a tombstone) instead of written closed (:meth:`_OneLaneCommit._bury_dead`). Why
    nothing can need it: with one lane, tumbling or hopping windows and no reshard
    inheritance (else the commit lists nothing), a window is closed exactly when its end is
    at or behind the shard's watermark (``max_time`` less the lateness), which only grows,
    also when a redeploy raises the lateness (:func:`~processors.window_items.max_time_of`);
    every reader (a load, a child's view of its parent) takes an open-looking item behind the
    watermark for a window closed elsewhere and never emits it, and a read by the starts
    does not even read it: no record reopens it (a record for it is late). All windows of
    one start end together, so an unlisted start holds no open window at all."""
    return starts is not None and start_prefix(wkey[1]) not in starts


class Deleting:
    """The windows whose items a commit lists to bury after it (``deleting``): those
    still listed (earlier commits' burials that failed, or were never tried: the process
    died) and, while the caps allow (:data:`DELETING_MAX`, :data:`DELETING_BYTES`), those
    this commit closed at a start it does not list (:func:`dead`)."""

    __slots__ = ("_bytes", "added", "listed")

    def __init__(self, listed: Set[WindowKey]) -> None:
        self.listed = listed
        self.added: set[WindowKey] = set()
        self._bytes = sum(len(_window_sk(wkey)) for wkey in listed)

    def take(self, wkey: WindowKey) -> bool:
        """Add ``wkey`` if the caps allow (``False``: write the window closed instead)."""
        if wkey in self.listed or wkey in self.added:
            return True
        size = len(_window_sk(wkey))
        if len(self.listed) + len(self.added) >= DELETING_MAX or (
            self._bytes + size > DELETING_BYTES
        ):
            return False
        self.added.add(wkey)
        self._bytes += size
        return True

    def all(self) -> set[WindowKey]:
        """Every window the commit lists to bury: those still listed and those added."""
        return set(self.listed) | self.added


def deleting(shard_item: Mapping[str, Any] | None) -> set[WindowKey]:
    """The windows whose items the shard item lists as still to bury (none listed: an
    earlier version, or nothing left)."""
    if shard_item is None or _DELETING not in shard_item:
        return set()
    out = set()
    for sk in shard_item[_DELETING]["SS"]:
        _, start, key = sk.split("#", 2)  # w#START#KEY, as _window_sk writes it
        out.add((key_of_json(key), _number(start)))
    return out


def deleting_attribute(wkeys: Set[WindowKey]) -> dict[str, Any]:
    """The shard item's ``deleting`` attribute (none for no window: DynamoDB refuses an
    empty set)."""
    if not wkeys:
        return {}
    return {_DELETING: {"SS": sorted(map(_window_sk, wkeys))}}


def usable(shard_item: Mapping[str, Any] | None) -> frozenset[str] | None:
    """The starts a read of the shard may keep to, or ``None`` (read the partition):
    none listed, or the shard inherits or lanes mode wrote it."""
    starts = listed(shard_item)
    if starts is None or shard_item is None:
        return None
    if "ancestors" in shard_item or "n" in shard_item or "legacy_applied" in shard_item:
        return None
    return starts


def head_bound() -> str:
    """A cold read's first ``Query`` takes the sort keys below this: the shard item, the
    outbox's and logs' parts, the keys' high-water items; not the windows."""
    return _WINDOWS


def start_range(prefix: str) -> tuple[str, str]:
    """The inclusive sort key range of one start's items (``w#S#`` to ``w#S$``: ``$``
    follows ``#``, and no sort key is ``w#S$``)."""
    return prefix, prefix[:-1] + "$"


def shard_item_of(items: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """The shard item among a read's items."""
    return next((i for i in items if i["window"]["S"] == _SHARD_SK), None)
