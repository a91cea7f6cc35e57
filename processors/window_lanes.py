"""The DynamoDB window store's commit in lanes mode: a redo log, then one ``UpdateItem``.

The commit in lanes mode (issue 16, slice S4a; :mod:`processors.window_log` holds the
log's encoding, requests and overlay): no ``v``/``prev``, no token, no fence, no outbox in
the shard item. A batch that changes something writes its redo log (``#log#N#ID#I``
parts, unconditional: the full new content of every window item it changes, with ``n`` =
its commit number, and of its outbox entries), then commits with ONE ``UpdateItem`` of
the shard item on the ``n`` (and ``rev``) it read: ``n`` + 1, a new ``rev``, ``applied``,
``max_time``, ``next_end``, ``clock``, ``logs`` (N -> ``ID/PARTS``: the last
:data:`~processors.window_log.KEEP_LOGS` and every pending one), ``ADD pending`` N. A lost
condition raises :class:`CommitLost` (the log's parts are deleted, best effort): the step
applies the batch again on the state caught up (slice S4b, :meth:`DynamoDBStore._catch_up`).
Catch-up: a process whose cache is at commit m and reads the shard item at n > m (a lost
condition, or another process's commit seen by its next batch's read) reads the logs
m+1..n in one ``Query`` of their ``#log#`` range (only the ids ``logs`` names count) and
applies their entries to its image of the items (:attr:`_Cached.items`), then sets the
windows they changed from it as a cold read would (all of them after a lost condition,
whose attempt changed the state in place); a commit between with no log named (more than
:data:`~processors.window_log.KEEP_LOGS` behind, a quiet shard's close), a log part gone,
a reshard's child still inheriting or session windows read the partition instead. The
warm read of the shard item gets what a catch-up needs (``applied``, ``max_time``,
``clock``, ``ancestors``; never main's outbox). Lanes of one shard in threads of one
process (``shardline run --in-process``, ``dev``) take the step's per-shard lock
(:class:`processors.window._ShardLocks`): they never conflict with each other. The
outcomes are final at the commit: then the log's items are
written at once (each only over an older ``n``: a lost condition is a newer commit's
write) and one ``UpdateItem`` deletes N from ``pending``; a failure there does not fail
the batch. Readers (the cold start's ``Query``, a child's view of its parents,
:meth:`DynamoDBStore.outcomes`, :meth:`DynamoDBStore.decided`) lay the pending logs over
the items (an entry wins when its commit is newer). A log stays pending until its
writer's next commit rolls it forward, or a batch of any process that read it two
commits old (design §5.1 step 8). A batch that writes nothing (a pure redelivery) reads
the shard item's commit number again before it answers (design §9.2), else
:class:`CommitLost`.

Quiet shards and reshards in lanes mode (slice S5) decide on ``n`` too. A quiet shard's
close (:meth:`DynamoDBStore._quiet_log`) is a commit of that shard like any other: a log
of the windows it closes, then, in one ``TransactWriteItems`` with the closer's commit,
an ``UpdateItem`` of its shard item on the ``n`` read (``logs``, ``pending``) and on no
``children``; then both logs are rolled forward. A lane of the quiet shard that commits
meanwhile makes the transaction fail (the closer reads again and finds it awake), or
loses its own condition and catches up from the close's log (its records for the closed
windows are late). A child marks its parents (``ADD children``) on the ``n`` it read
them at; the mark moves nothing (two children of one split mark at once), and the
quiet-shard close's condition on no ``children`` keeps the two apart (a parent the
one-lane protocol wrote, no ``n`` yet, is marked on its ``rev``, which the mark moves, as
the one-lane mark does: an old one-lane invocation's close decides on ``rev`` alone; and
a quiet close of such a shard keeps its outbox's parts named in ``parts_rev``). A child rolls its
parents' pending logs forward when it reads them (:meth:`DynamoDBStore._roll_logs`): a
claim is conditional on the parent's item existing, which an item so far only in a
pending log did not, for ever once the parent drained. A claim (``owner``) is no part of
the parent's commits: a roll-forward that finds one updates the item's content and keeps
it (:func:`~processors.window_log.roll_owned`), and a reader's overlay keeps it too.
``rev`` is decided on only by the first lanes commit over a shard item the one-lane
protocol wrote (it has no ``n``), but every lanes commit still writes a new one: the
one-lane protocol's writes are conditional on it, and a one-lane invocation still running
while a ``parallelization`` change turns lanes on must lose its condition rather than
replace the shard item (its ``n``, ``logs`` and ``pending`` with it).

Conversion (``parallelization`` raised from 1 on a table the one-lane protocol wrote: a
shard item with ``applied`` and its outbox, no ``n``; window items with ``v``/``prev``
and no ``hw``). The shard's first lanes commit (:meth:`DynamoDBStore._converted`) sets
``legacy_applied`` (``if_not_exists``: the one-lane ``applied`` it read, ``""`` for a shard
with none) and from then on: an old item's ``v`` is judged against it, never against
lanes mode's ``applied``, which keeps growing (an old write that never committed would
read as committed once ``applied`` passed its ``v``); an old item's unknown high-water
(no ``hw``) means "every partition key decided up to ``legacy_applied``" (the
:data:`HW_UNBOUNDED` entry holds that mark, and partition keys decided since go beside
it), so a lagging lane's new record in an old window is applied, not skipped by the
one-lane fallback; the shard item's outbox (and its parts) goes to outbox entries in
that commit's log and leaves the shard item, so a lagging lane's redelivered old closer
yields its results (the step keeps only its batch's outbox). Until that commit,
:meth:`DynamoDBStore.outcomes` also reads the one-lane outbox, whole, as last read.
Back (``parallelization`` lowered to 1; issue 16, slice S7a): lanes mode is sticky per
store. The one-lane store that meets a shard whose item has ``n`` or ``legacy_applied``
(at a batch's read, a quiet shard's, a reshard's parent's) cannot read it nor write it
(a PutItem of the shard item would drop the pending logs), so it turns lanes mode on for
the rest of its life (:meth:`DynamoDBStore._turn_lanes`) and the step applies the batch
again in lanes mode, in the process (:class:`LanesMet`, a :class:`CommitLost`): no
failure, no one-lane write. Lanes mode is correct with one lane; it costs about three
writes a batch more, which is why a table that never saw lanes keeps the one-lane
protocol. The mode of an attempt is decided once, at its start (:meth:`DynamoDBStore.shard`,
per thread): a store that serves several shards from threads (a local run) switches
under another shard's running attempt, which finishes in the one-lane protocol (its
shard's item is a one-lane one; a lanes commit since moved its ``rev``, on which that
commit is conditional); a shard cached in one mode is read again in the other. The
window where a one-lane write can still land on a lanes shard is the same as raising
``parallelization`` has: a one-lane attempt that read a shard before another process's
first lanes commit of it, whose window items (on their ``token``/``v``) may pass before
its shard item's condition on ``rev`` fails; they read as never committed (``v`` past
``legacy_applied``).

Rollback (from lanes mode) to a version before slice S4a cannot read a table lanes mode
wrote since (window items have no ``v``, the shard item no outbox: its batches fail and
are retried; the README says so). To the
version before S3, from S3's lanes mode (what follows held then): it reads the shard item as
before (its outbox has the same format and holds what the records since the latest batch's
first yielded, its rule), ignores the outbox entries (its cold starts read them until they
expire: read units) and rewrites window items without ``hw``; rolled forward again, those
read as unknown (the fallback above) until they close. Its closed items keep a day, not the
age bound: with a ``max_record_age_s`` over 23 hours a redelivery may find no item (late).
"""

from __future__ import annotations

import uuid
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

from processors.window_items import (
    _KEY_SK,
    _TOKEN_LEN,
    OUTBOX_MARGIN_S,
    _forget_closed_hw,
    _head_sets,
    _state_too_large,
    _too_large,
    hw_stored,
    window_item,
)
from processors.window_keys import key_json
from processors.window_log import (
    commit_request,
    encode_log,
    kept_logs,
    log_id_parts,
    log_puts,
    read_head,
)
from processors.window_reads import _Reads
from processors.window_state import (
    CommitLost,
    ShardState,
    WindowKey,
)
from stream.overlap import run_all

if TYPE_CHECKING:
    from collections.abc import Mapping, Set

    from processors.window_cache import _Cached


__all__: list[str] = []


class _QuietLog(NamedTuple):
    """A quiet shard's close in a batch's commit (:meth:`DynamoDBStore._quiet_log`)."""

    pk: str
    named: tuple[int, str, int]  # (its commit number, the log's id, its parts)
    items: list[dict[str, Any]]
    puts: list[dict[str, Any]]
    commit: dict[str, Any]


class _LanesCommit(_Reads):
    """The store with lanes mode's commit (:attr:`high_water`)."""

    __slots__ = ()

    def _validate(self, shard_id: str, cached: _Cached) -> None:
        """Lanes mode, a batch that writes nothing (a pure redelivery): no commit checks
        what it read, so it reads the shard item's commit number again before it answers. A
        sibling's commit between its reads (say a window item already rolled forward with
        the record's high-water, its outbox entry not yet) could have made it answer
        "applied already, nothing to replay" (design §9.2, found by the model).

        Raises:
            CommitLost: the shard moved on since the batch read it: the step reads again.
        """
        item = self._head_item(self.prefix + shard_id)
        if self._moved(cached, item):
            cached.spoiled = True  # its state may hold outcomes read: rebuilt on catch-up
            msg = f"shard {shard_id!r}: another commit since this batch read it (read-only)"
            raise CommitLost(msg)
        _, _, cached.pending = read_head(item)

    def _commit_log(  # noqa: PLR0915  # the protocol's steps in order, in one frame
        self,
        shard_id: str,
        cached: _Cached,
        changed: Set[tuple[Any, int]],
        applied: str | None,
        quiet: Mapping[str, ShardState],
    ) -> None:
        """Lanes mode's commit (:mod:`processors.window_log`): the claims, the log's parts,
        the one conditional ``UpdateItem`` of the shard item (with the quiet shards', one
        transaction), then the roll-forward. The outcomes are final at the commit: what
        fails after it does not fail the batch (readers lay the pending log over the
        items, and the next commit of this process, or any batch that finds the log
        pending two commits later, rolls it forward).

        Raises:
            CommitLost: the shard's commit number (or revision) moved since the read: the
                log's parts are deleted (best effort) and the step reads again.
        """
        state = cached.state
        self._claim_all(shard_id, cached, changed)
        pk = {"S": self.prefix + shard_id}
        n = cached.n + 1
        log, updates = self._log_items(shard_id, cached, changed | cached.flushed, n)
        log += self._key_items(pk, state, n)
        entries = self._outbox_puts(pk, cached, state.outbox, int(self.now()))
        converting = cached.legacy is None  # the shard's first lanes commit (_convert)
        if converting:
            old = {p: o for p, o in cached.outbox.items() if p not in entries}
            entries |= self._outbox_puts(pk, cached, old, int(self.now()))
        log += [put["Item"] for parts in entries.values() for put in parts]
        self._list_shard(shard_id, cached)
        log_id = uuid.uuid4().hex[:_TOKEN_LEN]
        chunks = encode_log(log)
        parts = log_puts(self.table, pk, n, log_id, chunks)
        theirs = [self._quiet_log(other, other_state) for other, other_state in quiet.items()]
        self._put_all(parts + [put for log_parts in theirs for put in log_parts.puts])
        logs = kept_logs(cached.logs, cached.pending, n, f"{log_id}/{len(chunks)}")
        rev = uuid.uuid4().hex
        sets, removes = _head_sets(state, applied or "", self.now(), self.lateness)
        once = None
        if converting:
            once = {"legacy_applied": {"S": cached.applied or ""}}
            removes += ["outbox", "outbox_parts", "parts_rev"]
        mine = commit_request(self.table, pk, cached.n, cached.rev, rev, sets, logs, removes,
                              once=once)  # fmt: skip
        try:
            if not quiet:
                self._call("UpdateItem", self.client.update_item, lost=CommitLost, **mine)
            else:  # one transaction: both shards' commits or neither
                self._call("TransactWriteItems", self.client.transact_write_items,
                           lost=CommitLost, TransactItems=[{"Update": mine}] + [
                               {"Update": log_parts.commit} for log_parts in theirs])  # fmt: skip
        except CommitLost:
            mine_after_all = self._committed_as(pk["S"], n, logs[n])
            if not mine_after_all:
                if mine_after_all is False:  # unsure (None): the parts stay, as garbage
                    self._drop_logs(pk, [(n, log_id, len(chunks))])
                    for log_parts in theirs:
                        self._drop_logs({"S": log_parts.pk}, [log_parts.named])
                raise
        # -- committed: the outcomes are final ------------------------------------------
        help_ = {m for m in cached.pending if m < cached.n - 1} | cached.unrolled
        dropped = [(m, *log_id_parts(v)) for m, v in cached.logs.items() if m not in logs]
        cached.n, cached.rev, cached.logs = n, rev, logs
        cached.pending.add(n)
        cached.decoded[n] = log
        cached.items.update(updates)
        cached.flushed = set()
        _forget_closed_hw(state, updates)
        state.raised.clear()  # its keys' h#KEY items are in the log
        cached.rolled.update(entries)
        cached.rolled.intersection_update(state.outbox)
        if converting:
            self._converted(pk, cached)
        self._roll_forward(pk, cached, sorted(help_ | {n}), dropped)
        for log_parts in theirs:  # a failure leaves it pending: its readers lay it over
            self._roll_logs(log_parts.pk, {log_parts.named[0]: log_parts.items})

    def _log_items(
        self, shard_id: str, cached: _Cached, wkeys: Set[WindowKey], n: int
    ) -> tuple[list[dict[str, Any]], dict[WindowKey, tuple[Any, ...]]]:
        """Commit ``n``'s log entries of the windows ``wkeys`` of ``cached``'s state (its
        full new content: open ones with their accumulators, the others closed) and what
        the cache's image of the items becomes.

        Raises:
            StateTooLarge: an item would be over DynamoDB's limit.
        """
        state = cached.state
        pk = {"S": self.prefix + shard_id}
        ranks: dict[Any, dict[tuple[Any, Any], int]] = {}
        closed_ttl = self._closed_ttl()
        legacy = self._legacy
        log: list[dict[str, Any]] = []
        updates = {}
        too_large: set[WindowKey] = set()
        for wkey in wkeys:
            rank = cached.items.get(wkey, (None, None, None, 0, None))[3]
            end, acc, rank, expires = self._item_content(state, wkey, rank, ranks, closed_ttl)
            stored = legacy.get((pk["S"], *wkey)) if legacy else None
            held = state.hw.get(wkey)
            hw = hw_stored(held) if held else None
            item = window_item(pk, wkey, end, "", None, acc, rank, expires, stored, hw=hw)
            del item["v"], item["token"]
            item["n"] = {"N": str(n)}
            if acc is not None and _too_large(item, acc):
                too_large.add(wkey)
            log.append(item)
            updates[wkey] = (None, None, acc, rank, hw)
        if too_large:
            raise _state_too_large(shard_id, too_large)
        return log, updates

    def _key_items(self, pk: dict[str, str], state: ShardState, n: int) -> list[dict[str, Any]]:
        """Session windows in lanes mode: commit ``n``'s ``h#KEY`` log entries, one per key
        whose high-water the batch raised (:attr:`ShardState.raised`), the full new
        content as every log entry: ``hw`` (within :data:`HW_MAX_PKS`, as window items),
        ``expires`` as an outbox entry's (no record older than the age bound comes again)."""
        if not state.raised:
            return []
        expires = {"N": str(int(self.now()) + self.max_record_age_s + OUTBOX_MARGIN_S)}
        out = []
        for key in state.raised:
            held = state.key_hw.get(key)
            if held:
                text = key_json(key)
                out.append({"shard": pk, "window": {"S": _KEY_SK + text}, "key": {"S": text},
                            "hw": {"S": hw_stored(held)}, "n": {"N": str(n)},
                            "expires": expires})  # fmt: skip
        return out

    def _quiet_log(
        self,
        other: str,
        state: ShardState,
        was: _Cached | None = None,
        more: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> _QuietLog:
        """A quiet shard's close as a commit like any other (slice S5): the log of the
        windows this batch closed (the open items its state no longer holds, and those
        an earlier close left open: ``flushed``) and the ``UpdateItem`` of its shard item
        on the commit number read, with ``logs`` and ``pending`` as its own commits
        write them, so its next batch catches up from the log instead of reading its
        partition again (before S5 this commit carried no log), and a lane of it that
        committed meanwhile makes the transaction fail (the closer reads again). Not
        once a reshard's child marked it (``children``: the child goes on with its
        windows). ``was``: the shard as read (default: as :meth:`quiet` read it); ``more``:
        other attributes to set (a scheduled flush's tick: its ``ticks`` and ``tick_n``)."""
        if was is None:
            was = self._local.quiet[other]
        pk = self.prefix + other
        n = was.n + 1
        closed = {w for w, entry in was.items.items()
                  if entry[2] is not None and w not in state.windows}  # fmt: skip
        log, _ = self._log_items(other, was, closed | was.flushed, n)
        log += self._key_items({"S": pk}, state, n)  # its closed sessions' high-water
        log_id = uuid.uuid4().hex[:_TOKEN_LEN]
        chunks = encode_log(log)
        logs = kept_logs(was.logs, was.pending, n, f"{log_id}/{len(chunks)}")
        sets, removes = _head_sets(state, was.applied or "", was.clock, self.lateness)
        sets.update((attribute, dict(value)) for attribute, value in (more or {}).items())
        # not converted yet (review 9): the one-lane outbox stays in the shard item until
        # the shard's own first lanes commit, and its parts keep the name of the ``rev``
        # that wrote them, which this commit moves (as a fence or a one-lane mark does)
        once = {"parts_rev": {"S": was.rev}} if was.legacy is None and was.rev else None
        commit = commit_request(self.table, {"S": pk}, was.n, was.rev, uuid.uuid4().hex,
                                sets, logs, removes, once=once, childless=True)  # fmt: skip
        puts = log_puts(self.table, {"S": pk}, n, log_id, chunks)
        return _QuietLog(pk, (n, log_id, len(chunks)), log, puts, commit)

    def _converted(self, pk: dict[str, str], cached: _Cached) -> None:
        """After the commit that converted a shard to lanes mode (issue 16): the shard item
        holds ``legacy_applied`` (the one-lane ``applied`` then, which old window items'
        ``v`` are judged against from now on: :func:`_judged_at`) and no outbox any more;
        its outcomes went to outbox entries in the commit's log (so a lagging lane's
        redelivered old closer still yields its results: :meth:`outcomes`, whose entries
        keep them the age bound). The old outbox's parts are deleted, best effort (a
        later full read deletes what is left: :meth:`_drop_garbage`)."""
        cached.legacy = cached.applied or ""
        cached.outbox = {}
        if cached.parts:
            run_all([partial(self._quietly, "DeleteItem", self.client.delete_item,
                             {"TableName": self.table, "Key": {"shard": pk, "window": {"S": sk}}})
                     for sk in sorted(cached.parts)])  # fmt: skip
            cached.parts = set()
