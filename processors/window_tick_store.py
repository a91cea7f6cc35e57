"""The DynamoDB window store's side of a scheduled flush (issue 16; design
``flush-design.md`` §1.5): a *tick* closes a quiet shard's due windows with no closer.

Why it looks as it does:

* **No closer, so the shard commits alone.** Today a quiet shard's close rides in another
  shard's batch, whose outbox keeps the results. A tick has no batch: each quiet shard's
  close is a commit of that shard alone, conditional on what the tick read of it, its
  ``rev`` with one lane (a ``PutItem`` of the whole shard item, as the cross-shard close
  writes it) or its commit number ``n`` in lanes mode (its redo log, then one
  ``UpdateItem``, as :meth:`DynamoDBStore._quiet_log` builds it, on no ``children``). One
  item: a single conditional write is atomic, so no ``TransactWriteItems`` (which would
  cost twice the write units). A lost condition (a batch of the shard committed since the
  read, another shard's cross-shard close, another tick) skips the shard: the first
  commit moved ``rev``/``n`` and raised ``max_time`` to the cutoff, so a window is never
  closed twice.
* **The results wait in the quiet shard's own partition** until every record made of them
  is written or dead-lettered: the pending entry ``~t#T#I`` (T the shard's tick number, I
  the part of at most 350 KB of JSON), put before the commit (unconditionally, as outbox
  parts are), and named by the commit itself: the shard item's ``ticks`` map (T ->
  ``PARTS/SEQ``, SEQ the applied sequence number the synthetic position is at) and
  ``tick_n`` (the last T committed). T comes from the partition's own counter item
  (``~tn``, one atomic ``ADD`` per attempt: :meth:`_TickCommit._next_tick`), so no two
  attempts share a T (their parts' sort keys) and no T is used twice for a position,
  even after a write that dropped ``tick_n`` (review 13). ``~t``
  sorts after every item a cold start reads (``window < "~"``) and after the outbox
  entries (``~o#``).
* **Found where the quiet rule looks anyway**: a tick reads the list of shards and every
  shard item, once, and takes both the pending entries and the quiet rule from them: no
  shared item that every tick would contend on.
* **The ack** (:meth:`ack_tick`) removes ``ticks.T`` with no condition and moves nothing,
  then deletes the parts, best effort. A one-lane batch that read the shard item before
  the ack may ``Put`` the entry back (its ``Put`` carries ``ticks``; a warm batch takes
  them from its head read, which the ack does not move): then an entry names parts that
  are gone, which can only be an acked one (the parts go after the pointer), and the
  next tick drops the pointer. Otherwise it is emitted once more, with the same ids and
  position: within the contract (a redelivery's).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from typing import TYPE_CHECKING, Any

from processors.window_items import (
    _REGISTRY,
    _SHARD_SK,
    _TOKEN_LEN,
    _lanes_wrote,
    _number,
    _pos,
    _put,
    _put_window,
    tick_attributes,
    ticks_of,
    window_item,
)
from processors.window_lanes import _LanesCommit
from processors.window_one_lane import _OneLaneCommit
from processors.window_outbox import _OUTBOX_PART
from processors.window_state import ClaimLost, TickTooLarge, WindowStateError
from processors.window_tick import TICK_SUB_BASE, Emission

if TYPE_CHECKING:
    from collections.abc import Sequence, Set

    from processors.window_cache import _Cached
    from processors.window_state import ShardState, WindowKey

__all__: list[str] = []

_TICK_SK = "~t#"
#: the partition's tick counter (:meth:`_TickCommit._next_tick`): after every ``~t#`` part
_TICK_COUNTER_SK = "~tn"
#: a pending entry's parts expire after a week: a backstop for garbage (a tick whose
#: commit failed after its parts were written), never for an entry still named (every
#: tick that reads a named entry moves its TTL on when half of it is gone)
TICK_TTL_S = 7 * 86_400
#: DynamoDB's items per ``TransactWriteItems``
_MAX_TRANSACT = 100


def tick_sk(tick: int, part: int) -> str:
    """The sort key of part ``part`` of the shard's pending entry ``tick``.

    >>> tick_sk(3, 0), tick_sk(3, 0) < tick_sk(3, 1) < tick_sk(10, 0)
    ('~t#0000000003#000', True)
    """
    return f"{_TICK_SK}{tick:010d}#{part:03d}"


class _TickLost(WindowStateError):
    """A tick's conditional write lost: the shard changed since the tick read it."""


class _TickCommit(_LanesCommit, _OneLaneCommit):
    """The store with a scheduled flush's tick (the module docstring)."""

    __slots__ = ()

    def tick_shards(self) -> list[str]:
        """Every shard of the step with a shard item (the list, then their items: one
        ``GetItem`` and a ``BatchGetItem`` per 100, strongly consistent), kept in this
        thread for :meth:`pending_ticks` and :meth:`tick_state`."""
        registry = self._call(
            "GetItem",
            self.client.get_item,
            TableName=self.table,
            Key={"shard": {"S": self.prefix + _REGISTRY}, "window": {"S": _REGISTRY}},
            ConsistentRead=True,
        ).get("Item")
        shards = sorted(registry["shards"]["SS"]) if registry else []
        self._local.lanes = None  # no batch attempt's mode: the store's (:attr:`high_water`)
        self._listed = frozenset(shards)
        items = {i["shard"]["S"][len(self.prefix) :]: i for i in self._shard_items(shards)}
        self._local.ticking = items
        self._local.ticked = {}
        return sorted(items)

    def pending_ticks(self) -> list[Emission]:
        """The pending entries the shard items read by :meth:`tick_shards` name, in shard
        and tick order (one ``Query`` each). An entry whose parts are gone was acked (a
        one-lane batch's ``Put`` brought its name back): its name is dropped."""
        out = []
        items: dict[str, dict[str, Any]] = getattr(self._local, "ticking", {})
        for shard_id, item in sorted(items.items()):
            for tick, entry in sorted(ticks_of(item).items()):
                emission = self._pending(shard_id, tick, entry)
                if emission is not None:
                    out.append(emission)
                else:
                    self._unname(shard_id, tick)
        return out

    def _pending(self, shard_id: str, tick: int, entry: str) -> Emission | None:
        count_text, seq = entry.split("/", 1)
        count = int(count_text)
        pk = self.prefix + shard_id
        found = self._query(pk, tick_sk(tick, 0), tick_sk(tick, count - 1))
        texts = {i["window"]["S"]: i["part"]["S"] for i in found if "part" in i}
        try:
            text = "".join(texts[tick_sk(tick, i)] for i in range(count))
        except KeyError:
            return None
        self._keep_pending(pk, found)
        try:
            results = tuple(json.loads(text))
        except ValueError as exc:  # retried, never dead-lettered
            msg = f"window state: the flush entry {tick} of {pk!r} in {self.table!r}: {exc}"
            raise WindowStateError(msg) from exc
        return Emission(shard_id, tick, seq, TICK_SUB_BASE + tick, results)

    def _keep_pending(self, pk: str, parts: list[dict[str, Any]]) -> None:
        """A named entry's parts whose TTL is less than half :data:`TICK_TTL_S` away get a
        new one (each only while it exists: an ack may be deleting it), best effort.

        Why (review 13): the TTL is a backstop for garbage (an attempt that died before
        its commit), but DynamoDB deletes an item at its TTL whether or not a shard item
        names it, and an entry whose parts are gone is taken for an acked one. A sink down
        (or refusing retryably) for longer than the TTL made the pending results vanish
        without a dead letter or an error. Only pending entries are read here: refreshed
        at most about twice a TTL each."""
        soon = int(self.now()) + TICK_TTL_S // 2
        later = {"N": str(int(self.now()) + TICK_TTL_S)}
        for part in parts:
            if int(part.get("expires", {}).get("N", "0")) >= soon:
                continue
            with contextlib.suppress(WindowStateError):
                self._call("UpdateItem", self.client.update_item, TableName=self.table,
                           Key={"shard": {"S": pk}, "window": part["window"]},
                           UpdateExpression="SET #x = :x",
                           ConditionExpression="attribute_exists(#p)",
                           ExpressionAttributeNames={"#x": "expires", "#p": "part"},
                           ExpressionAttributeValues={":x": later})  # fmt: skip

    def tick_state(self, shard_id: str, cutoff: float) -> ShardState | None:
        """The shard's state, read now, if its item (as :meth:`tick_shards` read it) meets
        the quiet rule for ``cutoff`` (:meth:`quiet`'s: a ``clock`` before it, no
        ``children``, ``next_end`` plus the lateness at or before it, or ``ancestors``: a
        child with inherited windows) and its partition is still at that item's
        revision; else ``None``."""
        item = getattr(self._local, "ticking", {}).get(shard_id)
        if item is None:
            return None
        next_end = _number(item["next_end"]["N"]) if "next_end" in item else None
        if not (
            "clock" in item
            and "children" not in item  # a reshard's parent: its children close
            and float(item["clock"]["N"]) < cutoff
            and (
                (next_end is not None and next_end + self.lateness <= cutoff)
                # a reshard's child still holding its parents' windows: those past its
                # watermark wait for the other heirs and are not in its ``next_end``
                or "ancestors" in item
            )
        ):
            return None
        if not self.high_water and _lanes_wrote(item):  # the way back, as :meth:`quiet`
            # turns it on, but goes on (review 13): a batch applies itself again on
            # :class:`LanesMet`; a tick raised it and failed its flush, every cold start
            self._lanes = True
        cached = self._read(item["shard"]["S"], item)
        if self._moved(cached, item):
            return None
        self._local.ticked[shard_id] = cached
        return cached.state

    def tick_commit(
        self,
        shard_id: str,
        state: ShardState,
        results: Sequence[dict[str, Any]],
        closed: Set[WindowKey] = frozenset(),
    ) -> Emission | None:
        """Commit the close of ``shard_id`` (its ``state`` as :meth:`tick_state` read it,
        the windows closed) with its new pending entry holding ``results``: the entry's
        parts, then the shard's own conditional commit naming it. ``None``: the
        condition was lost (the shard changed since: skipped, its parts deleted).

        ``closed``: the windows a reshard's child inherited and closed. They are claimed
        from their parents first (as a batch's claims: another shard that claimed one
        first makes the tick skip the shard; the next tick reads it again, the window
        foreign), and written closed in the child's partition with its commit (one
        transaction), so a cold start of a child that still inherits other windows does
        not take them from the parent again.

        Raises:
            TickTooLarge: with one lane, ``closed`` over 99 windows (one transaction with
                the shard item): nothing written.
            WindowStateError: a write failed otherwise (the entry is pending if the commit
                went through after all: the next tick emits it).
        """
        was: _Cached = self._local.ticked.pop(shard_id)
        if not was.applied:
            return None
        if not self.high_water and len(closed) >= _MAX_TRANSACT:  # before any write
            msg = (f"window state: a flush's tick of shard {shard_id!r} closes {len(closed)} "
                   f"inherited windows at once, over {_MAX_TRANSACT - 1} (one lane)")  # fmt: skip
            raise TickTooLarge(msg)
        claims = state.claims(closed) if state.inherited else {}
        if claims:
            try:
                self._claim(shard_id, claims)
            except ClaimLost:
                return None
            state.claimed(claims)
        state.forget_foreign(self.size, self.lateness)
        pk = {"S": self.prefix + shard_id}
        tick = self._next_tick(pk, was.tick_n)
        seq = str(_pos(was.applied)[0])
        text = json.dumps(list(results), separators=(",", ":"))
        expires = {"N": str(int(self.now()) + TICK_TTL_S)}
        parts: list[dict[str, Any]] = [{"TableName": self.table, "Item": {
            "shard": pk,
            "window": {"S": tick_sk(tick, i)},
            "part": {"S": text[first : first + _OUTBOX_PART]},
            "expires": expires,
        }} for i, first in enumerate(range(0, len(text), _OUTBOX_PART))]  # fmt: skip
        ticks = {**was.ticks, tick: f"{len(parts)}/{seq}"}
        try:
            if self.high_water:
                was.flushed |= closed  # its log writes them closed
                self._tick_on_n(shard_id, state, was, parts, ticks, tick)
            else:
                self._tick_on_rev(shard_id, state, was, parts, ticks, tick, closed)
        except _TickLost:
            self._drop_tick_parts(pk, [p["Item"]["window"]["S"] for p in parts])
            return None
        return Emission(shard_id, tick, seq, TICK_SUB_BASE + tick, tuple(results))

    def _next_tick(self, pk: dict[str, str], floor: int) -> int:
        """A tick number no attempt on this partition ever had: one atomic ``ADD`` to its
        counter item (``~tn``, below no range a reader or an ack queries), starting past
        ``floor`` (the shard item's ``tick_n``: an entry named before the counter existed).

        Why not ``tick_n + 1`` (review 13): two ticks that read the same ``tick_n`` (two
        flushes at once) put their entries' parts under the same sort keys, and the one
        whose commit lost deleted them: the winner's pending entry, named but with no
        parts, was taken for an acked one and dropped, its results never emitted. And
        ``tick_n`` lives in the shard item, which a ``Put`` that does not know it (an older
        version's one-lane commit during a deploy or after a rollback) drops while the
        shard stays quiet: the next close took T = 1 again at the same applied sequence
        number, the same synthetic position for other results (the same S3 object name,
        OpenSearch ``_id`` and SQS deduplication id: an archived result overwritten). No
        version's shard item write touches this item, and a number an attempt that lost
        took is only skipped."""
        answer = self._call(
            "UpdateItem",
            self.client.update_item,
            TableName=self.table,
            Key={"shard": pk, "window": {"S": _TICK_COUNTER_SK}},
            UpdateExpression="SET #t = if_not_exists(#t, :floor) + :one",
            ExpressionAttributeNames={"#t": "tick"},
            ExpressionAttributeValues={":floor": {"N": str(floor)}, ":one": {"N": "1"}},
            ReturnValues="UPDATED_NEW",
        )
        return int(answer["Attributes"]["tick"]["N"])

    def _tick_on_rev(  # noqa: PLR0917  # the commit's parts
        self,
        shard_id: str,
        state: ShardState,
        was: _Cached,
        parts: list[dict[str, Any]],
        ticks: dict[int, str],
        tick: int,
        closed: Set[WindowKey] = frozenset(),
    ) -> None:
        """One lane: the shard item as the cross-shard close writes it (its ``clock``
        kept: it stays quiet), with ``ticks``, on the ``rev`` read; with the items of
        the inherited windows it closed (``closed``), closed at its ``applied``, in one
        transaction."""
        pk = {"S": self.prefix + shard_id}
        item, more = self._shard_item(pk, state, was.applied or "", uuid.uuid4().hex,
                                      was.clock, was, (ticks, tick))  # fmt: skip
        self._put_all(parts + more)
        head = _put(self.table, item, "rev", was.rev)
        try:
            if not closed:
                self._call("PutItem", self.client.put_item, lost=_TickLost, **head)
            else:
                writes = [{"Put": head}] + [{"Put": put} for put in self._closed_puts(
                    pk, state, was, closed)]  # fmt: skip
                self._call("TransactWriteItems", self.client.transact_write_items,
                           lost=_TickLost, TransactItems=writes)  # fmt: skip
        except _TickLost:
            self._lost_to_another(pk, tick, ticks[tick])
        self._drop_parts(shard_id, was, {p["Item"]["window"]["S"] for p in more})

    def _closed_puts(
        self, pk: dict[str, str], state: ShardState, was: _Cached, closed: Set[WindowKey]
    ) -> list[dict[str, Any]]:
        """One lane: the conditional puts of ``closed`` windows' items in the shard's
        partition, closed at its ``applied`` (as a batch's commit writes a window it
        closed: read as committed, so settled, by a cold start).

        """
        v = was.applied or ""
        ranks: dict[Any, dict[tuple[Any, Any], int]] = {}
        closed_ttl = self._closed_ttl()
        puts = []
        for wkey in sorted(closed, key=repr):
            raw_v, token, saved, rank, saved_hw = was.items.get(wkey, (None, None, None, 0, None))
            end, acc, rank, expires = self._item_content(state, wkey, rank, ranks, closed_ttl)
            stored = self._legacy.get((pk["S"], *wkey)) if self._legacy else None
            mine = uuid.uuid4().hex[:_TOKEN_LEN]
            item = window_item(pk, wkey, end, v, saved, acc, rank, expires, stored, mine,
                               saved_hw=saved_hw)  # fmt: skip
            puts.append(_put_window(self.table, item, raw_v, token))
        return puts

    def _tick_on_n(  # noqa: PLR0917  # the commit's parts
        self,
        shard_id: str,
        state: ShardState,
        was: _Cached,
        parts: list[dict[str, Any]],
        ticks: dict[int, str],
        tick: int,
    ) -> None:
        """Lanes mode: a commit like the cross-shard close's (its log, then one
        ``UpdateItem`` on the ``n`` read and no ``children``), setting ``ticks`` whole
        (an ack between the read and the commit comes back named: the module docstring),
        then its log rolled forward."""
        quiet = self._quiet_log(shard_id, state, was, tick_attributes(ticks, tick))
        self._put_all(quiet.puts + parts)
        try:
            self._call("UpdateItem", self.client.update_item, lost=_TickLost, **quiet.commit)
        except _TickLost:
            try:
                self._lost_to_another({"S": quiet.pk}, tick, ticks[tick])
            except _TickLost:
                self._drop_logs({"S": quiet.pk}, [quiet.named])
                raise
        self._roll_logs(quiet.pk, {quiet.named[0]: quiet.items})

    def _lost_to_another(self, pk: dict[str, str], tick: int, named: str) -> None:
        """After a tick commit's lost condition: return if the commit is this attempt's
        own after all (sent again after a lost answer, by an SDK with retries: review 8's
        fault), which its unique T shows (the shard item names T as this attempt named
        it; only this attempt's commit can); else :class:`_TickLost`. Without this the
        attempt deleted the parts of its committed entry: the windows were closed and
        their results dropped as acked, never emitted (review 13).

        Raises:
            _TickLost: another write won (the caller deletes what the attempt wrote).
            WindowStateError: unsure (the read failed): the parts stay (garbage at worst).
        """
        item = self._call(
            "GetItem",
            self.client.get_item,
            TableName=self.table,
            Key={"shard": pk, "window": {"S": _SHARD_SK}},
            ConsistentRead=True,
            ProjectionExpression="#t",
            ExpressionAttributeNames={"#t": "ticks"},
        ).get("Item")
        if ticks_of(item).get(tick) != named:
            msg = f"window state: the flush's close of {pk['S']!r} lost its condition"
            raise _TickLost(msg)

    def ack_tick(self, emission: Emission) -> None:
        """Every record of ``emission`` is written or dead-lettered: its name leaves the
        shard item (no condition, nothing moved; acking twice is fine), then its parts
        are deleted, best effort (a week's TTL is the backstop)."""
        self._unname(emission.shard_id, emission.tick, quiet=False)
        pk = {"S": self.prefix + emission.shard_id}
        found = self._call(
            "Query",
            self.client.query,
            TableName=self.table,
            KeyConditionExpression="#s = :s AND #w BETWEEN :l AND :h",
            ExpressionAttributeNames={"#s": "shard", "#w": "window"},
            ExpressionAttributeValues={":s": pk, ":l": {"S": tick_sk(emission.tick, 0)},
                                       ":h": {"S": tick_sk(emission.tick, 999)}},
            ProjectionExpression="#w",
            ConsistentRead=True,
        ).get("Items", [])  # fmt: skip
        self._drop_tick_parts(pk, [i["window"]["S"] for i in found])

    def _unname(self, shard_id: str, tick: int, *, quiet: bool = True) -> None:
        """``REMOVE ticks.T`` of the shard item (only where it has a ``ticks`` map: a
        path into a missing map is refused). ``quiet``: a failure is let go (the next
        tick tries again)."""
        try:
            self._call(
                "UpdateItem",
                self.client.update_item,
                lost=_TickLost,
                TableName=self.table,
                Key={"shard": {"S": self.prefix + shard_id}, "window": {"S": _SHARD_SK}},
                UpdateExpression="REMOVE #k.#t",
                ConditionExpression="attribute_exists(#k)",
                ExpressionAttributeNames={"#k": "ticks", "#t": str(tick)},
            )
        except _TickLost:
            return  # no ``ticks`` at all: nothing is named
        except WindowStateError:
            if not quiet:
                raise

    def _drop_tick_parts(self, pk: dict[str, str], sks: list[str]) -> None:
        for sk in sks:
            with contextlib.suppress(WindowStateError):
                self._call("DeleteItem", self.client.delete_item, TableName=self.table,
                           Key={"shard": pk, "window": {"S": sk}})  # fmt: skip
