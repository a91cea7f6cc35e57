"""The ``window`` step's state in DynamoDB (``state: dynamodb``, the default).

The table's items: :mod:`processors.window_items`; the store's layers:
:mod:`processors.window_table`.

Round trips of a warm batch (each waits for the one before; issue 17):

1. the reads, at once, strongly consistent (:meth:`DynamoDBStore._head`): one
   ``BatchGetItem`` of the shard item's ``rev`` and, once the step has asked for quiet
   shards, the list of shards (``#shards``); and one of the other shards' items, those the
   list named when this process last read it (none with one shard). Before: a ``GetItem``
   of the ``rev``, then, once the batch was applied, a ``GetItem`` of the list, then a
   ``BatchGetItem`` of the other shards' items, one after the other;
2. (quiet shards only) their partitions (one ``Query`` each; :meth:`DynamoDBStore.quiet`),
   and the items of shards listed since the process last read the list;
3. the changed window items, all at once (in waves as wide as the ``latest`` sink's, 128:
   :func:`stream.overlap.wave_width`; in turn when the overlap is off). They share the
   shard's partition key, whose limit is a rate (1,000 write units a second), which a
   batch's writes meet whether sent at once or one by one;
4. the shard item (with the quiet shards', one transaction), once every window item is
   written.

Why reading the list and the other shards' items before the batch is applied is as safe as
reading them just before the commit. The list only grows (``ADD``) and only says where to
look. The quiet-shard rule (``clock``, ``next_end``, ``children``) is decided on a shard's
item, and then its partition is read in step 2, after the batch is applied, as before: a
shard whose partition's ``rev`` is not the one of the item read is left alone for this
batch (it changed since: a batch of its own, a child's mark, another shard's close), so the
rule holds of exactly the state that the transaction is conditional on (before, a change
between the two reads went unseen). A shard missing from the list read was listed by its
first commit, during this batch: its ``clock`` is then, so it is quiet for this batch's
cutoff only if this batch ran longer than ``quiet_s``, and the next batch closes it (a close
waits, at most, for a batch of another shard that starts after the shard went quiet:
README, "Windows"). The revision check is the same strongly consistent read of the same
item. The window items are distinct items, each written on the condition of its own token,
so their order among themselves never mattered (more than two went at once before too);
what matters is that the shard item is written only once all of them succeeded, as step 4
does: a batch that fails half-way leaves the shard item, and so the committed state, as it
was.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from processors.window_items import _pos_text
from processors.window_state import CommitLost, WindowStateError
from processors.window_tick_store import _TickCommit

if TYPE_CHECKING:
    from collections.abc import Mapping, Set

    from processors.window_state import ShardState

__all__ = ["DynamoDBStore"]


class DynamoDBStore(_TickCommit):
    """Window state in a DynamoDB table (see the module docstring).

    Args:
        table: the table's name (the plan holds it: ``PIPELINE-FUNCTION-windows``).
        prefix: what goes before the shard id in the partition key (the step's place in the
            chain, so that two window steps of one function share the table).
        lateness: the step's ``allowed_lateness_s`` (for the TTL of closed windows).
        size: the step's ``size_s`` (a window's end is its start plus this).
        client: a DynamoDB client; default the process's shared one (:mod:`stream.aws`).
        now: the clock, for the TTL and the shard item's ``clock``.
        end_of: a window's end from its ``(key, start)`` and accumulators (``None``: closed;
            then a lower bound will do, it only sets the TTL); default start plus ``size``.
            Session windows (:mod:`processors.session`) end at their last event time plus
            the gap.
        sleep: the wait before asking again for keys a ``BatchGetItem`` left unprocessed.
        high_water: whether the step decides redeliveries by the windows' high-water
            (:class:`WindowStore`): the ``window`` step's with ``parallelization`` above 1
            (issue 16, slices S3 to S7), and for life once the store met a shard lanes wrote
            (:meth:`_turn_lanes`); then window items
            carry it (``hw``, ``hw_prev``), outcomes go to outbox entry items (``~o#POS``)
            and closed windows' items are read for records that look late; session
            windows (an ``end_of``) also keep a late record's outcome in an outbox entry
            and a key's high-water outside its open sessions in an ``h#KEY`` item (slice
            S6, :attr:`keeps_late`). ``False`` (one lane): by the shard item's ``applied``
            alone, and none of that is written: with one lane every record at or before
            ``applied`` was decided, so the high-water would buy nothing and cost a round
            trip per closing batch, write units, and a redelivery's reads (review 6).
        max_record_age_s: the function's (the plan's ``batch``): no record older than this
            is delivered again, so an outbox entry and a closed window's item are kept that
            long plus :data:`OUTBOX_MARGIN_S`.
    """

    __slots__ = ()

    def commit(
        self,
        shard_id: str,
        state: ShardState,
        changed: Set[tuple[Any, int]],
        quiet: Mapping[str, ShardState] | None = None,
    ) -> None:
        """Write each changed window once, then the shard item (with the items of the
        ``quiet`` shards whose windows this batch closed, in one transaction), each on its
        condition.

        Raises:
            WindowStateError: a write failed or lost its condition (the cached state is
                dropped; the batch is delivered again and reads the table).
        """
        try:
            self._commit_attempt(shard_id, state, changed, quiet)
        finally:
            self._local.lanes = None  # the attempt is over: the store's mode from now on

    def _commit_attempt(
        self,
        shard_id: str,
        state: ShardState,
        changed: Set[tuple[Any, int]],
        quiet: Mapping[str, ShardState] | None,
    ) -> None:
        cached = self._cache.get(shard_id)
        if cached is None or cached.state is not state:
            msg = f"commit of shard {shard_id!r} without its state read first"
            raise WindowStateError(msg)
        applied = _pos_text(state.applied) if state.applied is not None else None
        if applied == cached.applied and not changed and not quiet and not state.raised:
            if self.high_water:  # nothing validated its reads yet (design §9.2)
                self._validate(shard_id, cached)
            cached.clean = True  # a redelivery: nothing applied, nothing to write
            return
        try:
            if self.high_water:
                self._commit_log(shard_id, cached, changed, applied, quiet or {})
            else:
                self._commit(shard_id, cached, changed, applied, quiet or {})
        except CommitLost:  # lanes mode: its items still hold the commit read (catch-up)
            cached.spoiled = True
            raise
        except Exception:
            del self._cache[shard_id]
            self._whole.add(self.prefix + shard_id)
            raise
        finally:
            self._local.quiet = {}
        cached.applied = applied
        cached.clean = True
