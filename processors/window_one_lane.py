"""The DynamoDB window store's commit with one lane: ``v``/``prev``, a fence, the outbox.

A batch (:meth:`DynamoDBStore.commit`) writes each changed (key, window) once, then the shard
item last; a window it closed at a start its shard item no longer lists is not written but
buried once the shard item is (its item replaced by a tombstone:
:func:`processors.window_starts.dead`, :meth:`_OneLaneCommit._bury_dead`), never before: a
commit that then failed would have lost the window's committed state. The shard item lists
such items until a commit saw them buried (``deleting``), so a burial that failed is done
by the next commit of any process. Every write is
conditional on what the batch read: a window item on the write ``token`` it had (new at
each write; an item of an earlier version, with none, on its ``v``), the shard item on its
``rev``. A batch that finds its shard item already past its
records (a redelivery) applies nothing and writes nothing.

A batch that fails half-way (some window items written, the shard item not) must change
nothing either: each window item also carries ``v``, the shard position after the batch that
wrote it, and ``prev``, its accumulators before that batch. A reader whose shard item says
applied < ``v`` uses ``prev`` (absent: the window did not exist). Records are applied
deterministically from the committed state, so the batch that later passes ``v`` writes the
item again with the same records.

Two attempts of one shard that overlap (a zombie: a worker paused past its lease in
``shardline run``; a rare duplicate delivery on AWS) need one more rule, a fence. Without
it: batch B (records 28-30) writes window item X (``v`` = 30) and has not committed; batch
Z (record 28 alone) reads applied = 27 and X's ``prev``; B commits (applied = 30); Z writes
X on what it read (``v`` = 30, still there) with ``v`` = 28, and its shard item then fails:
X reads as committed (28 <= 30) without record 29. The harm needs an attempt to write over
an item holding ANOTHER attempt's pending write (read with ``v`` past the applied it read
and other than its own new ``v``) while that attempt can still commit. So such a batch
first moves the shard item's ``rev`` (:meth:`DynamoDBStore._fence`: ``UpdateItem`` on the
``rev`` it read; lost: another attempt committed or fenced, the batch is read again), then
writes its items, then its shard item on the new ``rev``. Why that is enough:

* the other attempt's commit (on the old ``rev``, alone or in a quiet-shard transaction)
  now fails, so its pending writes never become committed; its later item writes lose
  their condition where the fencer (or anyone) wrote since its read, and elsewhere stay
  pending (``v`` past the applied one: read as ``prev``), or, at or before the fencer's
  new applied, hold what that position's records make of them (the determinism above).
  That needs the condition on the write ``token`` (random, new at each write), not on
  ``v``: ``v`` comes back. Attempt A (18-20) dies leaving item X pending at ``v`` = 20;
  B (19-21) reads it and fences; Z (19-20) reads after that fence and writes X at ``v``
  = 20 (its own: no fence); B then writes X on ``v`` = 20, which still holds, and Z
  commits: X reads as B's ``prev``, without 19 and 20. On the token, B's write fails;
* an item pending at the batch's own new ``v`` needs no fence: its content at ``v`` is
  the same function of the shard's records up to ``v`` (twins, a batch delivered twice,
  make no extra call; nor does a normal batch, whose items are never pending);
* an attempt based on an older ``rev`` loses the fence's condition, as it lost its commit's;
  quiet-shard closes and a child's mark of its parent are conditional on ``rev`` too, and
  so are retried, and the warm state of other processes is read again (its ``rev`` moved);
* the outbox's parts are named by the revision that wrote them: the fence keeps that one
  in ``parts_rev``, which the next commit's item drops;
* two fencers can undo each other's commit (each batch is then delivered again); each
  needs the other's pending items between its read and its commit, which a retry need
  not meet again.

Checked in the design study's model (``parallel-windows.md`` §9.3, mutant ``today`` with
these rules; one lane, crashes, twins, zombies, restarts): 10,000 runs pass; with the
conditions on ``v`` instead of the token, 19 of them lose records.

A shard with no shard item yet (before its first commit) is fenced by creating one with
nothing applied (``applied`` empty) and no ``clock`` (:func:`_fenced_only`): a cold start
reads it as a shard with nothing committed (a reshard's child inherits again), a child of
it reads through it to its parents, the quiet-shard rule and the heirs' progress skip it,
and the first real commit lists the shard (``#shards``).
"""

from __future__ import annotations

import uuid
from functools import partial
from typing import TYPE_CHECKING, Any

from processors import window_starts
from processors.window_items import (
    _SHARD_SK,
    _TOKEN_LEN,
    _forget_closed_hw,
    _n,
    _pos,
    _put,
    _put_window,
    _state_too_large,
    _too_large,
    _window_sk,
    hw_stored,
    max_time_attributes,
    tick_attributes,
    tombstone,
    window_item,
)
from processors.window_outbox import (
    _OUTBOX_INLINE,
    _OUTBOX_PART,
    _PART,
    _outbox_text,
)
from processors.window_reads import _Reads
from processors.window_state import (
    ShardState,
    UnreadLost,
    WindowKey,
    WindowStateError,
)
from stream.overlap import deferred

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Set

    from processors.window_cache import _Cached


__all__: list[str] = []


class _OneLaneCommit(_Reads):
    """The store with the one-lane protocol's commit (:attr:`high_water` off)."""

    __slots__ = ()

    def _commit(
        self,
        shard_id: str,
        cached: _Cached,
        changed: Set[tuple[Any, int]],
        applied: str | None,
        quiet: Mapping[str, ShardState],
    ) -> None:
        self._settle_burials(cached)  # the last commit's, which ran beside its sinks
        state = cached.state
        self._claim_all(shard_id, cached, changed)
        pk = {"S": self.prefix + shard_id}
        v = applied or ""
        ranks: dict[Any, dict[tuple[Any, Any], int]] = {}  # ends: ints, floats for sessions
        closed_ttl = self._closed_ttl()
        legacy = self._legacy
        puts = []
        updates = {}
        too_large: set[WindowKey] = set()
        read = _pos(cached.applied) if cached.applied else None
        legacy_here = bool(legacy) and any(k[0] == pk["S"] for k in legacy)
        starts = window_starts.open_starts(state, legacy_here or self.end_of is not None)
        # closed at a start the commit does not list: buried after it, and listed in its
        # shard item until then (the earlier commits' still to bury with them)
        dead = window_starts.Deleting(cached.dead)
        fence = False  # an item holds another attempt's pending write (the module docstring)
        touched = changed | cached.flushed
        for wkey in touched:
            raw_v, token, saved, rank, saved_hw = cached.items.get(
                wkey, (None, None, None, 0, None)
            )
            end, acc, rank, expires = self._item_content(state, wkey, rank, ranks, closed_ttl)
            # closed at a start the commit does not list: not written, buried after the
            # commit; also with no item known, since a failed attempt may have left one (at
            # a start this process did not read, or since it read; review 18, 2), or a
            # stale attempt may write one later (review 25: the tombstone refuses it)
            if acc is None and window_starts.dead(wkey, starts) and dead.take(wkey):
                continue
            if raw_v is not None and raw_v != v and (read is None or _pos(raw_v) > read):
                fence = True
            stored = legacy.get((pk["S"], *wkey)) if legacy else None
            mine = uuid.uuid4().hex[:_TOKEN_LEN]
            held = state.hw.get(wkey) if self.persist_high_water else None
            hw = hw_stored(held) if held else None
            item = window_item(pk, wkey, end, v, saved, acc, rank, expires, stored, mine,
                               hw=hw, saved_hw=saved_hw)  # fmt: skip
            if acc is not None and _too_large(item, acc):
                too_large.add(wkey)
            puts.append(_put_window(self.table, item, raw_v, token))
            updates[wkey] = (v, mine, acc, rank, hw)
        if too_large:
            raise _state_too_large(shard_id, too_large)
        if fence:
            self._fence(pk, cached)
        # read by its listed starts, the shard may hold an item the read did not cover
        # (a failed attempt's, at a start no open window had): a write over it loses its
        # condition, and the step reads the shard whole and applies the batch again
        lost = WindowStateError if cached.loaded is None else UnreadLost
        self._send_all("PutItem", self.client.put_item, puts + self._carry_outbox(pk, cached),
                       lost)  # fmt: skip
        cached.items.update(updates)
        cached.flushed = set()
        _forget_closed_hw(state, updates)
        deleting = dead.all()  # listed in the shard item, buried after the commit
        for wkey in deleting & touched:
            state.hw.pop(wkey, None)
        cached.starts = starts
        self._list_shard(shard_id, cached)
        self._write_shard_items(shard_id, cached, v, quiet, deleting)
        # committed: only now are the closed windows' items dead (before, a failed commit
        # would have left the shard reading them as its open windows, destroyed)
        cached.dead = deleting
        self._roll_outbox(pk, cached)
        self._bury_dead(pk, cached, v, closed_ttl)

    def _bury_dead(self, pk: dict[str, str], cached: _Cached, v: str, closed_ttl: int) -> None:
        """After a commit: replace the items of the windows its shard item lists as
        still to bury (``deleting``: those it closed and did not write,
        :func:`processors.window_starts.dead`, and those earlier commits' burials left)
        with tombstones (:func:`~processors.window_items.tombstone`: the window closed,
        without its accumulators, with a closed item's TTL), ``BatchWriteItem`` of 25 a
        call, the calls at once. A failure does not fail the batch (it committed): the
        keys stay listed, so the next commit of the shard, in this process or any other (a
        load reads them back), buries them; the ones buried leave the list at that commit
        (until then, a load buries them again: a write unit each). Never before the
        commit: a commit that then failed would have lost the windows' committed state.

        A tombstone, not a delete (review 25): a delete empties the key, and a stale
        attempt (a zombie: a worker paused past its lease) that read no item there writes
        its window as new (``attribute_not_exists``) after it, an open-looking item no
        listed start reads, no commit buries and no TTL removes. A tombstone makes that
        write lose its condition, as the closed item written before issue 17 did, for as
        long as it stands (a day and more), for the same write unit as a delete (DynamoDB
        bills the larger of the two items, or one unit where there was none).

        In an invocation the burials run beside what follows, the batch's dead letters and
        sinks (:func:`stream.overlap.behind`: nothing waits for them but the invocation's
        end, one round trip fewer before the sinks); the next commit of the shard in this
        process settles them first (:meth:`_settle_burials`). Elsewhere (a test, a bench)
        they are done, and settled, when this returns."""
        self._settle_burials(cached)
        if not cached.dead:
            return
        by_sk: dict[str, WindowKey] = {}
        stones = []
        for wkey in sorted(cached.dead, key=_window_sk):
            end = wkey[1] + self.size  # tumbling or hopping: sessions list no starts (dead)
            stone = tombstone(pk, wkey, end, v, expires=self._closed_expires(end, closed_ttl),
                              token=uuid.uuid4().hex[:_TOKEN_LEN])  # fmt: skip
            by_sk[stone["window"]["S"]] = wkey
            stones.append(stone)
        cached.burying = partial(self._buried, cached, by_sk, self._put_tombstones(stones))
        if not deferred():
            self._settle_burials(cached)

    def _settle_burials(self, cached: _Cached) -> None:
        """Take what the burials :meth:`_bury_dead` started for ``cached`` did (waiting
        for them if they still run): the keys buried leave ``dead`` and the items known."""
        settle, cached.burying = cached.burying, None
        if settle is not None:
            settle()

    def _buried(
        self, cached: _Cached, by_sk: dict[str, WindowKey], wait: Callable[[], set[str]]
    ) -> None:
        done = wait()
        self.buried += len(done)  # here, not in the pool's threads
        for sk in done:
            cached.dead.discard(by_sk[sk])
            cached.items.pop(by_sk[sk], None)

    def _carry_outbox(self, pk: dict[str, str], cached: _Cached) -> list[dict[str, Any]]:
        """Before a commit, with its window items: the outbox entry items of the outcomes
        the shard item holds (committed) that have none yet (their write after that
        commit failed, or this process read them cold), as the commit's shard item may
        drop them. A failure fails the batch (the cached state is dropped)."""
        if not self.high_water:
            return []
        puts = self._outbox_puts(pk, cached, cached.outbox, int(self.now()))
        cached.rolled.update(puts)
        return [put for parts in puts.values() for put in parts]

    def _roll_outbox(self, pk: dict[str, str], cached: _Cached) -> None:
        """After a commit: its outcomes as outbox entry items, so that they outlive the
        shard item's outbox (which holds the last commit's, from its batch's first
        record). A failure does not fail the batch (it committed): the shard item holds
        them, and the next commit writes them before it drops them
        (:meth:`_outbox_puts` of the outbox it read, with the window items)."""
        if not self.high_water:
            return
        outbox = cached.state.outbox
        puts = self._outbox_puts(pk, cached, outbox, int(self.now()))
        try:
            self._put_all([put for parts in puts.values() for put in parts])
        except WindowStateError:
            pass
        else:
            cached.rolled.update(puts)
        cached.outbox = dict(outbox)
        cached.rolled.intersection_update(outbox)

    def _fence(self, pk: dict[str, str], cached: _Cached) -> None:
        """Before writing over another attempt's pending window items: the shard item gets
        a new revision, on the one this batch read, so that attempt's commit (on the old
        one) fails and its pending writes never become committed (the module docstring).
        The outbox's parts keep the name of the revision that wrote them (``parts_rev``).
        A shard with no shard item yet gets one with nothing applied (``applied`` empty)
        and no ``clock``: :func:`_fenced_only`.

        Raises:
            WindowStateError: the revision changed since the read (another attempt
                committed or fenced): the batch reads the state again.
        """
        rev = uuid.uuid4().hex
        if cached.rev is None:
            item = {"shard": pk, "window": {"S": _SHARD_SK}, "applied": {"S": ""},
                    "rev": {"S": rev}}  # fmt: skip
            self._call("PutItem", self.client.put_item, **_put(self.table, item, "rev", None))
            cached.rev, cached.applied = rev, ""
            return
        self._call(
            "UpdateItem",
            self.client.update_item,
            TableName=self.table,
            Key={"shard": pk, "window": {"S": _SHARD_SK}},
            UpdateExpression="SET rev = :new, parts_rev = if_not_exists(parts_rev, :read)",
            ConditionExpression="rev = :read",
            ExpressionAttributeValues={":new": {"S": rev}, ":read": {"S": cached.rev}},
        )
        cached.rev = rev

    def _write_shard_items(
        self,
        shard_id: str,
        cached: _Cached,
        v: str,
        quiet: Mapping[str, ShardState],
        dead: Set[WindowKey],
    ) -> None:
        """The batch's last write: the shard item (with the quiet shards' in one
        transaction), after its outbox's parts if it has some; ``dead``: the windows whose
        items it lists to delete after it."""
        pk = {"S": self.prefix + shard_id}
        rev = uuid.uuid4().hex
        item, parts = self._shard_item(pk, cached.state, v, rev, self.now(), cached, dead=dead)
        mine = _put(self.table, item, "rev", cached.rev)
        kept = {shard_id: {p["Item"]["window"]["S"] for p in parts}}
        if not quiet:
            self._put_all(parts)  # an outbox's parts first: the shard item names them
            self._put_all([mine])
        else:
            writes = [{"Put": mine}]
            for other, other_state in quiet.items():
                was = self._local.quiet[other]
                item, more = self._shard_item(
                    {"S": self.prefix + other}, other_state, was.applied or "", uuid.uuid4().hex,
                    was.clock, was,
                )  # fmt: skip
                writes.append({"Put": _put(self.table, item, "rev", was.rev)})
                parts += more
                kept[other] = {p["Item"]["window"]["S"] for p in more}
            self._put_all(parts)
            self._call("TransactWriteItems", self.client.transact_write_items,
                       TransactItems=writes)  # fmt: skip
            for other in quiet:
                self._drop_parts(other, self._local.quiet[other], kept[other])
        cached.rev = rev
        self._drop_parts(shard_id, cached, kept[shard_id])

    def _drop_parts(self, shard_id: str, cached: _Cached, kept: set[str]) -> None:
        """After a commit: delete the outbox parts its shard item no longer names (the
        previous revision's, or a failed batch's). A failure leaves them for the next
        commit (a load lists every part of the partition)."""
        stale = cached.parts - kept
        cached.parts = kept | stale
        if not stale:
            return
        pk = {"S": self.prefix + shard_id}
        requests = [{"TableName": self.table, "Key": {"shard": pk, "window": {"S": sk}}}
                    for sk in sorted(stale)]  # fmt: skip
        try:
            self._send_all("DeleteItem", self.client.delete_item, requests)
        except WindowStateError:
            return  # the batch committed: the parts are only garbage now
        cached.parts = kept

    def _shard_item(  # noqa: PLR0917  # the item's parts
        self,
        pk: dict[str, str],
        state: ShardState,
        applied: str,
        rev: str,
        clock: float | None,
        read: _Cached,
        ticks: tuple[dict[int, str], int] | None = None,
        dead: Set[WindowKey] | None = None,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """A shard's item, and the puts of its outbox's parts (none, unless the outbox is
        over :data:`_OUTBOX_INLINE`: a batch that closed many windows with large
        results); a quiet shard whose windows another shard's batch closed keeps its
        ``clock`` (it stays quiet). The item carries the scheduled flush's pending
        emissions (``ticks``, ``tick_n``) as ``read`` holds them (a tick's commit:
        ``ticks``, with its own entry), since a ``Put`` replaces the whole item
        (design risk 7.4), and so its listed ``starts`` and the closed windows' items
        still to bury (``deleting``: ``read``'s, or the batch's commit's ``dead``).

        The parts are keyed by the revision (``#outbox#REV#I``), so a batch that writes
        them and then fails leaves the committed revision's parts as they were."""
        text = _outbox_text(state.outbox)
        item: dict[str, Any] = {
            "shard": pk,
            "window": {"S": _SHARD_SK},
            "applied": {"S": applied},
            "rev": {"S": rev},
        }
        parts = []
        if len(text) <= _OUTBOX_INLINE:
            item["outbox"] = {"S": text}
        else:
            for i, first in enumerate(range(0, len(text), _OUTBOX_PART)):
                parts.append({"TableName": self.table, "Item": {
                    "shard": pk,
                    "window": {"S": f"{_PART}{rev}#{i}"},
                    "part": {"S": text[first : first + _OUTBOX_PART]},
                }})  # fmt: skip
            item["outbox_parts"] = {"N": str(len(parts))}
        if clock is not None:
            item["clock"] = {"N": _n(float(clock))}
        item.update(max_time_attributes(state, self.lateness))
        if state.ends:
            item["next_end"] = {"N": _n(state.ends[0])}
        if state.ancestors:
            item["ancestors"] = {"SS": list(state.ancestors)}
        item.update(tick_attributes(*(ticks or (read.ticks, read.tick_n))))
        item.update(window_starts.attribute(read.starts))
        item.update(window_starts.deleting_attribute(read.dead if dead is None else dead))
        return item, parts
