"""The ``window`` step's state in DynamoDB (``state: dynamodb``, the default).

One table per function (``PIPELINE-FUNCTION-windows``, created by ``deploy`` and by the local
stack), keyed by ``shard`` (partition key: the window step's place in the chain and the shard
id) and ``window`` (sort key). It holds:

* **one item per (shard, key, window)**, sort key ``w#START#KEY``: the accumulators as JSON
  text (``acc``; sets, which only ``distinct`` keeps, as ``{"$set": [...]}``), the window's
  end, its rank among the windows of that end (results come out in the order windows
  opened), ``closed`` once it has yielded its result, and ``hw``, its high-water
  (:attr:`ShardState.hw`: partition key -> the position of the last record of that key
  decided on it, as JSON; ``hw_prev`` before the batch that wrote the item, read as
  ``prev`` is; an item of an earlier version has none; a window of more than
  :data:`HW_MAX_PKS` partition keys holds one entry, :data:`HW_UNBOUNDED`, instead, which
  keeps the item small whatever the key). A closed item keeps it, and stays at least
  ``max_record_age_s`` plus :data:`OUTBOX_MARGIN_S` after it closed (its high-water is read
  until no record of it can come again). Only in lanes mode: the window step's store with
  ``parallelization`` above 1 decides redeliveries by it (:attr:`DynamoDBStore.high_water`;
  issue 16, slice S3): below. With one lane the store writes
  none and keeps main's single-position protocol. Why per shard and not per (key,
  window): the watermark that closes a window is the shard's, so a window's state belongs to
  one shard's sequence of records; a batch then reads its shard's items with one
  strongly consistent ``Query`` on a cold start, and every item is written by one shard's
  batches only, one at a time (Lambda runs one batch per shard at a time with
  ``parallelization: 1``; lanes mode, below, for more);
* **one item per shard**, sort key ``#shard``: the position last applied (inclusive), the
  greatest event time seen, the outbox (what each record of the last batches yielded, so
  that a redelivered record yields the same results with the same ``window_id``), ``rev``
  (new at each write), ``clock`` (the function's time at its last batch) and ``next_end``
  (the earliest end of its open windows);
* **the parts of an outbox too large for the shard item** (over 300 KB: a batch that closed
  many windows), sort key ``#outbox#REV#I``, written before the shard item that names them
  (``outbox_parts``, the count, under revision ``REV``), so a batch that fails before its
  shard item leaves the committed parts alone; the parts no shard item names are deleted
  after the next commit;
* **one item listing the shards** (``#shards``), so that a batch finds the quiet ones;
* in lanes mode, for session windows only, **one item per key with a high-water
  outside its open sessions**, sort key ``h#KEY`` (KEY as in a window item's): ``hw``, the
  position of the last record of each partition key decided on the key in a session
  that closed since, late, or refused (:attr:`ShardState.key_hw`), ``expires`` as an
  outbox entry's; written through the redo log like a window item (and by a quiet
  shard's close, for the sessions it closed), read by a full read (sessions never
  catch up from the logs). A session's late record also gets an outbox entry: a
  redelivered session record is decided by its key's high-water, the greatest of its
  open sessions' ``hw`` and this, and a late record may lie inside a session a later
  record of its partition key extended, so "late" must be read back, not recomputed
  (design ``parallel-windows.md`` §5.1 step 3; issue 16, slice S6);
* in lanes mode only, **one outbox entry per record that yielded results or a
  state-dependent error**, sort key
  ``~o#POS`` (:func:`outbox_sk`: the position zero-padded, so the entries sort by position;
  ``~`` so that they sort after the window items and a cold start's ``Query`` of the
  partition, ``window < "~"``, never reads them), ``expires`` = the commit's time +
  ``max_record_age_s`` + :data:`OUTBOX_MARGIN_S` (no record older is delivered again).
  Written after the shard item that committed them (the shard item holds them meanwhile;
  a commit that would drop one from the shard item's outbox writes it first, with its
  window items), so an entry only ever holds a committed outcome.

Redeliveries with one lane (``high_water`` off): a record at or before the shard's
``applied`` was applied already, and yields what the shard item's outbox holds for it
(what the records since the latest batch's first yielded), else nothing. One read for a
redelivery (the shard item, when warm), and a record that a step before the window moves
to other windows on redelivery is not counted again.

Redeliveries in lanes mode (:attr:`DynamoDBStore.high_water`: the window step's with
``parallelization`` above 1, which ``validate`` refuses until slice S7). A record at or
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
lane; with lanes it may skip a lagging lane's record of that window (slice S7 dead-letters
the record that would pass :data:`HW_MAX_PKS`). The rule assumes a redelivered record falls
in the same windows: a step before the window that is not deterministic (a ``lookup`` whose
table changed between deliveries, a key or time computed from the clock) can move it to
other windows, where no high-water knows it: it is applied again there (counted in both
windows) or late if they closed. The rule of one lane skips it instead, which is why one
lane keeps that rule: the high-water buys one lane nothing.

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
are retried); ``validate`` refuses lanes mode until slice S7, which must say so. To the
version before S3, from S3's lanes mode (what follows held then): it reads the shard item as
before (its outbox has the same format and holds what the records since the latest batch's
first yielded, its rule), ignores the outbox entries (its cold starts read them until they
expire: read units) and rewrites window items without ``hw``; rolled forward again, those
read as unknown (the fallback above) until they close. Its closed items keep a day, not the
age bound: with a ``max_record_age_s`` over 23 hours a redelivery may find no item (late).

Sizes: DynamoDB refuses an item over 400 KB. The aggregations keep a window's accumulators
under :data:`~processors.aggregations.STATE_BUDGET` (an item holds them twice: ``acc`` and
``prev``); a window item that would still be too large (a plugin's accumulator) is found
before any write and raised as :class:`StateTooLarge`, and the step applies the batch again
with that window's records dead-lettered. The memory store applies the same rule to the same
item (:func:`window_item`; :class:`MemoryStore`), so ``shardline test`` refuses it too.

A batch (:meth:`DynamoDBStore.commit`) writes each changed (key, window) once, then the shard
item last. Every write is conditional on what the batch read: a window item on the write
``token`` it had (new at each write; an item of an earlier version, with none, on its
``v``), the shard item on its ``rev``. A batch that finds its shard item already past its
records (a redelivery) applies nothing and writes nothing.

Quiet shards (:meth:`DynamoDBStore.quiet`): a batch reads the list of shards and their
items (``BatchGetItem``; with its own revision: below); a shard whose ``clock`` is older
than the cutoff and whose ``next_end`` (plus the lateness) is before it gets its state read
(its partition: at the revision of the item read, or it is left to a later batch), its
windows closed by the window step (its greatest event time raised to the cutoff), and its
shard item written in one ``TransactWriteItems`` with this batch's shard item, whose outbox
holds the results: both or neither. A quiet shard that wakes meanwhile changes its
``rev``, the transaction fails and the batch is retried. The closed windows' own items are
marked closed by the quiet shard's next batch (its load finds them behind its watermark).

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

Reshards (:meth:`DynamoDBStore.inherit`): a child shard with no item yet reads its parents'
partitions (one ``Query`` each; a parent that never had a batch is read through to its own
parents) and starts from their open windows and greatest event time; its shard item lists
them (``ancestors``) while some inherited window is neither claimed nor behind a foreign
claim, so a cold start reads them again. Its first commit marks each parent's shard item
(``children``, on the ``rev`` read: a quiet-shard close of the parent meanwhile loses the
race), and the quiet-shard rule skips a marked shard. Before a batch writes, each inherited
window it added to or closed is *claimed*: ``owner`` is set on the parent's window item on
the condition that no other shard owns it (a shard between, which claimed it without
committing, does not count). A lost condition raises :class:`ClaimLost`; the step reads the
state again, where the window is now *foreign* (closed for this shard), and applies the
batch again. A parent's item a child claimed keeps its accumulators, so a child whose
commit failed after the claim takes it again from there, and gets the TTL of a closed
window (the child's own item holds the window from then on).

Every failure of DynamoDB (throttling, a lost condition, a missing table) raises
:class:`WindowStateError`, a :class:`~stream.exceptions.RetryableError`: the whole batch is
reported and delivered again, and nothing is dead-lettered. The state cached in the process
for warm invocations is checked against the shard item's ``rev`` at every batch and
dropped on any failure.

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

Closed items leave by TTL (``expires``: a day after the window closed, or after its end plus
the lateness, or, with :attr:`DynamoDBStore.high_water`, ``max_record_age_s`` plus
:data:`OUTBOX_MARGIN_S` after it closed, whichever is latest); open ones have none.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from processors.aggregations import NotANumber, ValueTooLarge
from processors.errors import ProcessorError
from processors.window_keys import key_json, key_of_json
from processors.window_log import (
    KEEP_LOGS,
    LOG_SK,
    commit_request,
    decode_log,
    encode_log,
    kept_logs,
    log_id_parts,
    log_prefix,
    log_puts,
    overlay,
    read_head,
    roll_owned,
    roll_requests,
)
from stream.exceptions import RecordError, RetryableError
from stream.overlap import run_all, wave_width

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence, Set

    #: Two parts' accumulators merged (a window two parents of a merge both held).
    Merge = Callable[[list[Any], list[Any]], list[Any]]
    #: A shard id -> its parents (the window step's lineage, bound to the stream).
    ParentsOf = Callable[[str], tuple[str, ...]]

__all__ = [
    "CLOSED_TTL_S",
    "DEFAULT_MAX_RECORD_AGE_S",
    "HW_MAX_PKS",
    "HW_UNBOUNDED",
    "OUTBOX_MARGIN_S",
    "ClaimLost",
    "CommitLost",
    "DynamoDBStore",
    "Inherited",
    "LanesMet",
    "Mark",
    "MemoryStore",
    "Outcome",
    "Position",
    "ShardState",
    "StateTooLarge",
    "WindowKey",
    "WindowRecordError",
    "WindowStateError",
    "WindowStore",
    "decode",
    "encode",
]

#: How long a closed window's item stays (at least) after it closed, then TTL deletes it.
CLOSED_TTL_S = 86_400
_SHARD_SK = "#shard"
#: the sort key prefix of a key's high-water item (session windows in lanes mode): ``h#KEY``
_KEY_SK = "h#"
#: The outbox entries' sort keys: ``~o#POS`` (:func:`outbox_sk`). Why ``~o#`` and not the
#: design's ``o#``: ``o#`` sorts between the shard item and the window items (``w#``), so a
#: cold start's ``Query`` of the partition would read every entry of the last day; ``~``
#: sorts after ``w``, and the cold start reads ``window < "~"`` (:meth:`DynamoDBStore._query`).
_OUTBOX_SK = "~o#"
#: How long an outbox entry and a closed window's item outlive the age bound (a margin for
#: clock skew between the function and Lambda's record age): the design's "+ 1 h".
OUTBOX_MARGIN_S = 3600
#: Lambda's default ``max_record_age_s`` (also shardline's: a day), when the plan gives none.
DEFAULT_MAX_RECORD_AGE_S = 86_400
_PART = "#outbox#"  # the parts of an outbox too large for the shard item: #outbox#REV#I
#: Outbox JSON text (ASCII) kept in the shard item itself; a longer one goes in parts
_OUTBOX_INLINE = 300_000
#: lanes mode: what a child read of an ancestor the one-lane protocol wrote (no ``n``),
#: before its ``rev`` (:meth:`DynamoDBStore._mark_on_n`)
_ONE_LANE_SEEN = "rev:"
_OUTBOX_PART = 350_000  # the text of one part item (DynamoDB: at most 400 KB an item)
_TOKEN_LEN = 16  # a window item write's token (hex): unique per write, with 64 random bits
#: The most partition keys a window's stored high-water names (``hw``; the design's
#: ``MAX_PKS``, issue 16). A window key that is not the partition key (one site, a user per
#: partition key) gathers a key per user: unbounded, it made the item pass DynamoDB's
#: 400 KB limit (the batch failed at every retry) and cost a write unit per KB on every
#: write. Past the bound the window keeps :data:`HW_UNBOUNDED` instead, in the item and in
#: the process (:attr:`WindowStore.hw_bound`; the memory store keeps every key).
HW_MAX_PKS = 16
#: The partition key of the one entry of a high-water past :data:`HW_MAX_PKS`: Kinesis
#: partition keys are 1 to 256 characters, so no record has it.
HW_UNBOUNDED = ""
_NO_MARK: Mark = (0, "", 0, ())
_ITEM_LIMIT = 400_000  # a window item's bytes (DynamoDB's limit is 409,600): under it
_REGISTRY = "#shards"  # the item listing the step's shards (partition and sort key)
_MAX_QUIET = 99  # quiet shards closed per batch: a transaction holds at most 100 items
#: The quiet shards' items a batch may rewrite with its own (at most about 400 KB), in bytes:
#: a transaction is at most 4 MB. Past it, the next batch closes the rest.
_QUIET_BYTES = 3_500_000
#: Most of a batch's writes in flight at once: its window items share the shard's
#: partition key, whose partition takes about 1,000 writes a second.


class WindowStateError(ProcessorError, RetryableError):
    """The window state could not be read or written: the batch is delivered again."""


class WindowRecordError(ProcessorError, RecordError):
    """A record the window cannot place (no key, no time): it is dead-lettered."""


class StateTooLarge(WindowStateError):
    """Windows whose item would be over DynamoDB's 400 KB with this batch (an accumulator
    past its budget: a plugin aggregation's): nothing was written. The window step applies
    the batch again without those windows' records, which it dead-letters.

    Attributes:
        windows: the (key, start) windows too large.
    """

    def __init__(self, message: str, windows: frozenset[WindowKey]) -> None:
        super().__init__(message)
        self.windows = windows


class ClaimLost(WindowStateError):
    """Another shard claimed a parent's window (or a parent changed) since this batch read
    it: the window step reads the state again and applies the batch again."""


class CommitLost(WindowStateError):
    """Another lane (or another invocation of the same batch) committed the shard since
    this batch read it (its commit number ``n`` moved): the window step reads the state
    again and applies the batch again (design: issue 16, slice S2; the DynamoDB store's in
    lanes mode since slice S4a: its commit's condition on ``n``, or a batch that wrote
    nothing finding the revision moved)."""


class LanesMet(CommitLost):
    """A store running the one-lane protocol met a shard lanes mode wrote and turned lanes
    mode on (:meth:`DynamoDBStore._turn_lanes`): like a lost commit, the window step reads
    the state again and applies the batch again, now in lanes mode; the batch does not
    fail (``parallelization`` lowered from above 1 to 1: the way back)."""


#: A record's place in its shard: sequence number, sub-sequence number, fan-out part.
Position = tuple[int, int, tuple[int, ...]]
#: A window of a key: (key, start).
WindowKey = tuple[Any, int]
#: A position as the redelivery check compares it without parsing the sequence number:
#: (its length, its decimal text, sub-sequence number, fan-out part). Kinesis writes sequence
#: numbers in decimal without leading zeros, so (length, text) orders them as numbers do.
Mark = tuple[int, str, int, tuple[int, ...]]


def position_mark(position: Position) -> Mark:
    """The :data:`Mark` of a :data:`Position`.

    >>> position_mark((99, 0, ())) < position_mark((100, 0, ()))
    True
    """
    seq, sub, part = position
    text = str(seq)
    return len(text), text, sub, part


@dataclass(frozen=True, slots=True)
class Inherited:
    """Where the item of a window a shard inherited from an ancestor lives.

    Attributes:
        holder: the ancestor shard whose item holds the window (its accumulators).
        via: the shards between the holder and the heir: each may have claimed it without
            committing it, so their claim does not bar the heir's.
        window: the window's key in the holder's partition when the heir holds it under
            another: a session the heir joined with a session of its other parent
            (:mod:`processors.session`) starts at the earlier of their starts; ``None``:
            the same key.
    """

    holder: str
    via: tuple[str, ...] = ()
    window: tuple[Any, Any] | None = None  # (a session's start is a float)

    def at(self, wkey: WindowKey) -> WindowKey:
        """The window's key in the holder's partition, for the heir's ``wkey``."""
        return wkey if self.window is None else self.window


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a record yielded the first time, replayed on redelivery.

    Attributes:
        results: the result documents of the windows it closed.
        late: it was late.
        error: it could not be placed (dead-lettered again on redelivery).
    """

    results: tuple[dict[str, Any], ...] = ()
    late: bool = False
    error: Exception | None = None


@dataclass(slots=True)
class ShardState:
    """One shard's windows.

    Attributes:
        max_time: the greatest event time seen (``None``: no record yet).
        applied: the position of the last record applied (inclusive), or ``None``.
        windows: (key, start) -> the accumulators, one per aggregation, of open windows.
        ends: a heap of the ends of open windows, with ``by_end`` the windows of each end
            in the order they opened (so results come out by end, then by opening).
        outbox: position -> what the record yielded, for records that yielded something.
        ancestors: after a reshard, the shards whose open windows this one inherited (kept
            while some of them are neither claimed nor past this shard's watermark).
        inherited: the windows of ``windows`` taken from ancestors and not claimed yet:
            before this shard adds to one or closes it, its commit claims the ancestor's
            item (README, "Windows": reshards); one entry per ancestor holding a part.
        foreign: ancestors' windows another shard claimed: closed for this one.
        waiting: end -> inherited windows behind this shard's watermark that wait for the
            other heirs' (in the process only: read back, they are open windows again).
        hw: the high-water of each window with records: (key, start) -> partition key ->
            the :data:`Mark` of the last record of that partition key decided on it
            (added, or refused by its state). Why per partition key and not one applied
            position: with ``parallelization`` > 1 a shard's lanes commit in any order, so
            a lagging lane's new record may lie before the shard's greatest applied
            position (design: issue 16). A record at or below its window's mark was
            decided already (Lambda keeps a partition key's order). Open windows', and
            in the memory store closed ones' too (kept as long as the store: its runs are
            short); the DynamoDB store drops a closed window's at commit (its item is
            where slice S3 will read it).
        n: the shard's commit number this state is at (the memory store's: its commit
            holds only if no other commit came between; :class:`CommitLost`).
        key_hw: session windows in lanes mode (:attr:`WindowStore.high_water`): key ->
            partition key -> the :data:`Mark` of the last record of that partition key
            decided on the key outside its open sessions (in sessions that closed since,
            or late, or refused), the design's ``h#KEY``. Why not the sessions' own: a
            redelivered record cannot name a closed session (its start moved with
            merges), and a late record lies inside no session, so a key's high-water is
            the greatest of its open sessions' ``hw`` and this (issue 16, slice S6).
        raised: the keys whose ``key_hw`` the batch raised: the DynamoDB store writes
            their ``h#KEY`` items with its commit (and commits for them alone: a lagging
            lane's late record changes no session, but must be decided durably).
    """

    max_time: float | None = None
    applied: Position | None = None
    windows: dict[tuple[Any, int], list[Any]] = field(default_factory=dict)
    ends: list[int] = field(default_factory=list)
    by_end: dict[int, list[tuple[Any, int]]] = field(default_factory=dict)
    outbox: dict[Position, Outcome] = field(default_factory=dict)
    ancestors: tuple[str, ...] = ()
    inherited: dict[WindowKey, tuple[Inherited, ...]] = field(default_factory=dict)
    foreign: set[WindowKey] = field(default_factory=set)
    waiting: dict[int, list[WindowKey]] = field(default_factory=dict)
    hw: dict[WindowKey, dict[str, Mark]] = field(default_factory=dict)
    n: int = 0
    key_hw: dict[Any, dict[str, Mark]] = field(default_factory=dict)
    raised: set[Any] = field(default_factory=set)

    def claims(self, changed: Set[WindowKey]) -> dict[WindowKey, tuple[Inherited, ...]]:
        """The inherited windows a batch added to or closed: what its commit must claim."""
        windows = self.windows
        return {w: h for w, h in self.inherited.items() if w in changed or w not in windows}

    def claimed(self, claims: Mapping[WindowKey, object]) -> None:
        """After the claims held: the windows are this shard's own, and ancestors are
        dropped once nothing of theirs is left."""
        for wkey in claims:
            del self.inherited[wkey]
        if not self.inherited and not self.foreign:
            self.ancestors = ()

    def forget_foreign(self, size: int, lateness: int) -> None:
        """A foreign window at or behind the watermark is closed here anyway."""
        if self.foreign and self.max_time is not None:
            watermark = self.max_time - lateness
            self.foreign = {w for w in self.foreign if w[1] + size > watermark}
            if not self.foreign and not self.inherited:
                self.ancestors = ()

    def seed(
        self,
        ancestors: tuple[str, ...],
        max_time: float | None,
        parts: list[tuple[int, int, WindowKey, list[Any], tuple[Inherited, ...]]],
        foreign: set[WindowKey],
        merge: Merge,
    ) -> None:
        """Start a new shard from its ancestors' open windows: ``parts`` are (end, rank,
        window, accumulators, where its item is); a window two ancestors hold (a key on
        both parents of a merge) is merged into one; the watermark starts at the greatest
        of theirs."""
        self.ancestors = ancestors
        if max_time is not None and (self.max_time is None or max_time > self.max_time):
            self.max_time = max_time
        windows, inherited = self.windows, self.inherited
        for end, _, wkey, accs, origins in sorted(parts, key=lambda p: (p[0], p[1])):
            if wkey in windows:
                windows[wkey] = merge(windows[wkey], accs)
                inherited[wkey] = (*inherited[wkey], *origins)
                continue
            windows[wkey] = accs
            inherited[wkey] = origins
            opened = self.by_end.get(end)
            if opened is None:
                self.by_end[end] = [wkey]
                heapq.heappush(self.ends, end)
            else:
                opened.append(wkey)
        if foreign:
            self.drop(foreign)
        if not self.inherited and not self.foreign:
            self.ancestors = ()

    def drop(self, wkeys: set[WindowKey]) -> None:
        """Windows another shard claimed meanwhile: out of the open ones, closed here."""
        for wkey in wkeys:
            self.windows.pop(wkey, None)
            self.inherited.pop(wkey, None)
            self.hw.pop(wkey, None)
            self.foreign.add(wkey)
        for end in list(self.waiting):
            self.waiting[end] = [w for w in self.waiting[end] if w not in wkeys]
            if not self.waiting[end]:
                del self.waiting[end]
        for end in list(self.by_end):
            kept = [w for w in self.by_end[end] if w not in wkeys]
            if kept:
                self.by_end[end] = kept
            else:
                del self.by_end[end]
        self.ends = sorted(self.by_end)  # a sorted list is a heap


class WindowStore(Protocol):
    """Where the windows' state lives between batches.

    Attributes:
        high_water: whether the step may decide "applied already" by the windows'
            high-water (:attr:`ShardState.hw`, closed windows' included), so that a
            record before the shard's greatest applied position can still be new (a
            lagging lane). ``False``: every record at or before ``applied`` was decided
            (true with one lane). Read per attempt, after :meth:`shard`: the DynamoDB
            store of one lane turns it on for good when it meets a shard lanes mode
            wrote (:meth:`DynamoDBStore._turn_lanes`).
        hw_bound: the most partition keys the step keeps in a window's high-water in the
            process (past it, :data:`HW_UNBOUNDED`: decided as with one lane); ``None``:
            all of them.
    """

    hw_bound: int | None

    @property
    def high_water(self) -> bool: ...

    def shard(self, shard_id: str) -> ShardState:
        """The shard's state as of the last commit (a new one for a shard never seen)."""

    def commit(
        self,
        shard_id: str,
        state: ShardState,
        changed: Set[tuple[Any, int]],
        quiet: Mapping[str, ShardState] | None = None,
    ) -> None:
        """Make a batch's changes durable: ``changed`` are the (key, start) windows the
        batch added to or closed, each written once; ``quiet`` the states of other shards
        whose windows the batch closed (:meth:`quiet`), committed with this shard's."""

    def quiet(self, shard_id: str, cutoff: float) -> dict[str, ShardState]:
        """The other shards of the step with no batch since ``cutoff`` (epoch seconds by
        the function's clock) and a window to close by it: ``{shard_id: state}``."""

    def outcomes(self, shard_id: str, first: Position, last: Position) -> dict[Position, Outcome]:
        """What the records from ``first`` to ``last`` (inclusive) yielded when they were
        applied, beyond the state's ``outbox`` (the DynamoDB store's outbox entries): read
        once per batch, at its first record found applied already."""

    def decided(
        self, shard_id: str, wkeys: Sequence[WindowKey]
    ) -> dict[WindowKey, dict[str, Mark]]:
        """The high-water of windows not in the state's ``hw`` (closed ones, whose item
        keeps it): a window with an item but no known high-water (an item written by an
        earlier version, or past :data:`HW_MAX_PKS`) holds :data:`HW_UNBOUNDED`; a window
        with no item is absent."""

    def progress(self, shard_ids: list[str]) -> dict[str, tuple[float | None, float | None]]:
        """Of the shards with state: (greatest event time, the clock at their last batch,
        ``None`` where unknown), for a reshard's heirs."""

    def bind(self, merge: Merge) -> None:
        """The step's way of merging two parts of one window (a key on both parents of
        a merge), for states read back later."""

    def inherit(
        self,
        shard_id: str,
        state: ShardState,
        parents: tuple[str, ...],
        parents_of: ParentsOf,
        merge: Merge,
    ) -> None:
        """Start ``state`` (a shard with nothing committed, made by a reshard) from its
        ``parents``' open windows (:meth:`ShardState.seed`); a parent that never had a
        batch is skipped for its own parents (``parents_of``). ``commit`` then claims
        each inherited window the batch touches, or raises :class:`ClaimLost`."""


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


def encode(value: Any) -> str:
    """Accumulators as JSON text: sets become ``{"$set": [...]}``.

    >>> encode([3, [{"a", "b"}, False], [1.5, "x"], None])
    '[3,[{"$set":["a","b"]},false],[1.5,"x"],null]'
    """
    return json.dumps(value, default=_default, separators=(",", ":"))


def decode(text: str) -> Any:
    """The accumulators back from :func:`encode` (lists stay lists, sets are sets).

    >>> decode(encode([[{1, 2}, True], 7])) == [[{1, 2}, True], 7]
    True
    """
    return _sets(json.loads(text))


def _default(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return {"$set": sorted(value, key=lambda v: (type(v).__name__, v))}
    msg = f"a window accumulator holds a {type(value).__name__}, not a JSON value or a set"
    raise TypeError(msg)


def _sets(value: Any) -> Any:
    if isinstance(value, list):
        return [_sets(v) for v in value]
    if isinstance(value, dict):
        if len(value) == 1 and "$set" in value:
            return set(value["$set"])
        return {k: _sets(v) for k, v in value.items()}
    return value


def _pos_text(position: Position) -> str:
    seq, sub, part = position
    return json.dumps([str(seq), sub, list(part)], separators=(",", ":"))


def _pos(text: str) -> Position:
    seq, sub, part = json.loads(text)
    return int(seq), sub, tuple(part)


class _Cached:
    """A shard's state as this process last committed it, and what it knows of the items."""

    __slots__ = ("applied", "clean", "clock", "decoded", "flushed", "items", "lanes",
                 "legacy", "logs", "n", "outbox", "parts", "pending", "rev", "rolled",
                 "spoiled", "state", "unlisted", "unmarked", "unrolled")  # fmt: skip

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
        self.flushed: set[tuple[Any, int]] = set()
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

    def judged_at(self) -> str | None:
        """The position text old window items (``v``/``prev``) are judged against."""
        return self.legacy if self.legacy is not None else self.applied

    def legacy_mark(self) -> Mark:
        """What an old window item's unknown high-water means in lanes mode: every
        partition key decided up to the position the one-lane protocol had applied
        (:func:`_read_hw`); :data:`_NO_MARK` (unknown, the one-lane rule) if none."""
        judged = self.judged_at()
        return position_mark(_pos(judged)) if judged else _NO_MARK


class _View:
    """What a shard inherits from its ancestors (:meth:`DynamoDBStore._view`)."""

    __slots__ = ("foreign", "heads", "max_time", "parts")

    def __init__(self) -> None:
        self.max_time: float | None = None
        self.parts: list[tuple[int, int, WindowKey, list[Any], tuple[Inherited, ...]]] = []
        self.foreign: set[WindowKey] = set()
        #: the ancestors read (with a shard item) -> their revision and whether marked
        self.heads: dict[str, tuple[str, bool]] = {}

    def later(self, t: float | None) -> None:
        if t is not None and (self.max_time is None or t > self.max_time):
            self.max_time = t


class _QuietLog(NamedTuple):
    """A quiet shard's close in a batch's commit (:meth:`DynamoDBStore._quiet_log`)."""

    pk: str
    named: tuple[int, str, int]  # (its commit number, the log's id, its parts)
    items: list[dict[str, Any]]
    puts: list[dict[str, Any]]
    commit: dict[str, Any]


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


class DynamoDBStore:
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
            (issue 16, slice S3; ``validate`` refuses it until slice S7); then window items
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

    __slots__ = ("_asks_quiet", "_cache", "_client", "_lanes", "_legacy", "_listed", "_local",
                 "_merge", "_persist", "_sleep", "end_of", "hw_bound", "lateness",
                 "max_record_age_s", "now", "prefix", "reads", "size", "table",
                 "writes")  # fmt: skip

    def __init__(  # noqa: PLR0917  # the step's settings, as keywords
        self,
        table: str,
        prefix: str = "",
        lateness: int = 0,
        size: int = 0,
        client: Any = None,
        now: Callable[[], float] = time.time,
        end_of: Callable[[tuple[Any, Any], list[Any] | None], float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        *,
        high_water: bool = False,
        max_record_age_s: int = DEFAULT_MAX_RECORD_AGE_S,
    ) -> None:
        self.table = table
        self.end_of = end_of
        #: the store's mode (:attr:`high_water`): once on, on for the store's life (sticky:
        #: :meth:`_turn_lanes`); each attempt runs in the mode it read at its start
        self._lanes = high_water
        #: :attr:`persist_high_water` set apart from the mode (tests of the format)
        self._persist: bool | None = None
        self.max_record_age_s = max_record_age_s
        #: as the item (:func:`hw_stored`): past :data:`HW_MAX_PKS` partition keys a window
        #: is decided as with one lane, warm as cold. Unbounded, a window whose key is not
        #: the partition key kept every partition key of its records in the process (about
        #: 300 bytes each: an hourly window over random partition keys at a shard's
        #: 1,000 records/s held a GB), and a warm process decided otherwise than a cold one.
        self.hw_bound: int | None = HW_MAX_PKS
        self._sleep = sleep
        self.prefix = prefix
        self.lateness = lateness
        self.size = size
        self._client = client
        self.now = now
        self._cache: dict[str, _Cached] = {}
        #: per thread (a local run calls one step from a thread per shard): ``quiet``,
        #: the quiet shards' states this thread's batch read
        self._local = threading.local()
        self._merge: Merge | None = None
        #: whether the step has asked for quiet shards (:meth:`quiet`): then a warm batch
        #: reads the list of shards with its revision (:meth:`_head`); per thread, what
        #: this thread's batch read for the rule (``registry``: a :class:`_Listed`, or None)
        self._asks_quiet = False
        #: the list of shards as this process last read it: a warm batch reads those
        #: shards' items with its revision (the list only grows)
        self._listed: frozenset[str] = frozenset()
        #: (partition key, key text, start) -> the key's JSON in an item an earlier version
        #: wrote under another JSON than :func:`~processors.window_keys.key_json` gives
        #: (a whole float key: ``w#0#1.0``, now ``w#0#1``); writes and claims go to that item
        self._legacy: dict[tuple[str, Any, Any], str] = {}
        #: calls made, for the bench and tests: reads (GetItem, Query pages), writes (PutItem)
        self.reads = 0
        self.writes = 0

    @property
    def high_water(self) -> bool:
        """Lanes mode: the mode of this thread's attempt (what :meth:`shard` read at its
        start, until its :meth:`commit`), else the store's. Sticky: a store of the
        one-lane protocol that meets a shard lanes mode wrote turns lanes mode on for
        good (:meth:`_turn_lanes`)."""
        lanes: bool | None = getattr(self._local, "lanes", None)
        return self._lanes if lanes is None else lanes

    @property
    def keeps_late(self) -> bool:
        """Session windows (an ``end_of``) in lanes mode: a late record's outcome goes to
        an outbox entry too, and keys' high-water to ``h#KEY`` items. Why: a session's
        late record can lie inside a session a later record of its partition key
        extended, so its redelivery is decided by the key's high-water and must find
        "late" kept (design §5.1 step 3); a tumbling window's late record is late again."""
        return self.end_of is not None and self.high_water

    @property
    def persist_high_water(self) -> bool:
        """Whether window items carry their high-water (``hw``, ``hw_prev``): what the
        store decides by (with :attr:`high_water`); tests of the format set it alone."""
        return self.high_water if self._persist is None else self._persist

    @persist_high_water.setter
    def persist_high_water(self, value: bool) -> None:
        self._persist = value

    def _turn_lanes(self, pk: str) -> None:
        """The way back (``parallelization`` lowered to 1 on a table lanes mode wrote):
        this store, running the one-lane protocol, met a shard lanes mode wrote (its
        shard item has ``n`` or ``legacy_applied``), which that protocol cannot read (the
        outbox in entries, open windows in pending logs, old ``v`` judged against a moved
        ``applied``) nor write (a PutItem of the shard item drops ``n``, ``logs`` and
        ``pending``: committed logs lost). Lanes mode runs any table, with one lane too
        (about 3 writes a batch more), so the store turns it on for the rest of its life:
        one-way, so no lock is needed, and the attempts already running keep the mode
        they started in (:attr:`high_water` is per thread, read by :meth:`shard`; their
        shards' items are one-lane ones, and a lanes commit since moved their ``rev``,
        on which their one-lane commit is conditional). This attempt is applied again,
        in lanes mode, in the process (:class:`LanesMet`), nothing written.

        Raises:
            LanesMet: always.
        """
        self._lanes = True
        msg = (
            f"window state: shard {pk!r} of table {self.table!r} was written in lanes mode "
            "(parallelization above 1): this store runs lanes mode from now on"
        )
        raise LanesMet(msg)

    def _note_legacy(self, item: dict[str, Any], wkey: WindowKey) -> None:
        """Remember an item an earlier version wrote under other key JSON (``_legacy``)."""
        stored = item["key"]["S"]
        if stored != key_json(wkey[0]):
            self._legacy[item["shard"]["S"], *wkey] = stored

    @property
    def client(self) -> Any:
        if self._client is None:
            from stream.aws import aws_client  # noqa: PLC0415  # boto3 on first use

            self._client = aws_client("dynamodb", validated=False)  # built right: our own requests
        return self._client

    # -- reading ---------------------------------------------------------------------------

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
        if cached is not None and cached.unrolled:  # its own logs it has to roll forward
            fresh.unrolled = cached.unrolled & fresh.pending
        fresh.clean = False
        self._cache[shard_id] = fresh
        return fresh.state

    def _moved(self, cached: _Cached, item: dict[str, Any] | None) -> bool:
        """Whether the shard item read (``None``: none) was written since ``cached``: in
        lanes mode by its commit number (what every lanes commit moves and nothing else
        does; a one-lane item, at 0, by its ``rev``), else by its ``rev``."""
        rev = item["rev"]["S"] if item else None
        if not self.high_water:
            return rev != cached.rev
        n = read_head(item)[0]
        return n != cached.n or (n == 0 and rev != cached.rev)

    def _head_item(self, pk: str) -> dict[str, Any] | None:
        """The shard item's revision (strongly consistent ``GetItem``), and in lanes mode
        its commit number, ``logs`` and ``pending`` (small: no outbox, no accumulators)."""
        item: dict[str, Any] | None = self._call(
            "GetItem",
            self.client.get_item,
            TableName=self.table,
            Key={"shard": {"S": pk}, "window": {"S": _SHARD_SK}},
            ConsistentRead=True,
            **_head_projection(self.high_water),
        ).get("Item")
        return item

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
        max_time = float(item["max_time"]["N"]) if "max_time" in item else None
        if cached.spoiled:
            state = cached.state = ShardState()
            touched = set(cached.items)
        state.max_time = max_time
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
        names = {"#w": "window", "#r": "rev", "#s": "shards"}
        projection = "#w, #r, #s"
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

    def _batch_get(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The pages of a ``BatchGetItem``: its ``UnprocessedKeys`` (what DynamoDB leaves
        when the items' partition is throttled) asked again after a backoff, within the
        sinks' budget of calls, then :class:`WindowStateError` (the batch is retried).
        Asked again at once and without end, a throttled ``#shards`` item, which every
        batch of every shard reads, was hammered until the invocation timed out (found in
        review)."""
        from stream.aws import MAX_ATTEMPTS, backoff_delay  # noqa: PLC0415

        for attempt in range(MAX_ATTEMPTS):
            if attempt:
                self._sleep(backoff_delay(attempt))
            page = self._call("BatchGetItem", self.client.batch_get_item, RequestItems=request)
            yield page
            request = page.get("UnprocessedKeys") or {}
            if not request:
                return
        msg = (
            f"window state: DynamoDB BatchGetItem on table {self.table!r}: keys still "
            f"unprocessed after {MAX_ATTEMPTS} calls (the partition is throttled)"
        )
        raise WindowStateError(msg)

    def _shard_items(self, shard_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The shards' items (``BatchGetItem``, strongly consistent; a shard with none
        has no item in the list)."""
        out: list[dict[str, Any]] = []
        for first in range(0, len(shard_ids), 100):
            keys = [{"shard": {"S": self.prefix + s}, "window": {"S": _SHARD_SK}}
                    for s in shard_ids[first : first + 100]]  # fmt: skip
            request: dict[str, Any] = {self.table: {"Keys": keys, "ConsistentRead": True}}
            for page in self._batch_get(request):
                out += page.get("Responses", {}).get(self.table, [])
        return out

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
                cached = self._read(item["shard"]["S"])
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
        item is absent (no record went into it: the record is late)."""
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

    def _pending_logs(self, pk: str, cached: _Cached) -> list[tuple[int, list[dict[str, Any]]]]:
        """The shard's pending logs as last read (:attr:`_Cached.pending`), with their
        items: those this process read or wrote, and any other read now (one ``Query``
        of its parts each)."""
        out = []
        for m in sorted(cached.pending):
            log = cached.decoded.get(m)
            if log is None:
                log_id, count = log_id_parts(cached.logs[m])
                prefix = log_prefix(m, log_id)
                parts = {int(i["window"]["S"][len(prefix):]): i["log"]["S"]
                         for i in self._query(pk, prefix, prefix + "~")}  # fmt: skip
                log = cached.decoded[m] = decode_log(parts, count)
            out.append((m, log))
        return out

    def _read(self, pk: str) -> _Cached:
        try:
            return self._load(pk)
        except (KeyError, TypeError, ValueError) as exc:  # retried, never dead-lettered
            msg = f"window state: an item of {pk!r} in table {self.table!r} is unreadable: {exc!r}"
            raise WindowStateError(msg) from exc

    def _query(self, pk: str, low: str | None = None, high: str = "~") -> list[dict[str, Any]]:
        """The partition's items with a sort key below ``high`` (default: every item but
        the outbox entries, ``~o#POS``), or from ``low`` to ``high`` inclusive, strongly
        consistent, every page."""
        items: list[dict[str, Any]] = []
        start_key: dict[str, Any] | None = None
        if low is None:
            condition, values = "#s = :s AND #w < :h", {":s": {"S": pk}, ":h": {"S": high}}
        else:
            condition = "#s = :s AND #w BETWEEN :l AND :h"
            values = {":s": {"S": pk}, ":l": {"S": low}, ":h": {"S": high}}
        while True:
            more: dict[str, Any] = {"ExclusiveStartKey": start_key} if start_key else {}
            page = self._call(
                "Query",
                self.client.query,
                TableName=self.table,
                KeyConditionExpression=condition,
                ExpressionAttributeNames={"#s": "shard", "#w": "window"},
                ExpressionAttributeValues=values,
                ConsistentRead=True,
                **more,
            )
            items += page.get("Items", [])
            start_key = page.get("LastEvaluatedKey")
            if not start_key:
                return items

    def _load(self, pk: str) -> _Cached:  # noqa: PLR0915  # one pass over the partition
        found = self._query(pk)
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
            if "max_time" in shard_item:
                state.max_time = float(shard_item["max_time"]["N"])
                watermark = state.max_time - self.lateness
            state.outbox = _outbox(_outbox_of(shard_item, items))
        rev = shard_item["rev"]["S"] if shard_item else None
        cached = _Cached(state, applied_text, rev, lanes=self.high_water)
        cached.parts = {i["window"]["S"] for i in items if i["window"]["S"].startswith(_PART)}
        if shard_item is not None and "clock" in shard_item:
            cached.clock = float(shard_item["clock"]["N"])
        if shard_item is not None and _fenced_only(shard_item):
            cached.unlisted = True
        cached.n, cached.logs, cached.pending = read_head(shard_item)
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

    def _merger(self) -> Merge:
        if self._merge is None:
            msg = "window state: a reshard's windows read back before the step bound its merge"
            raise WindowStateError(msg)
        return self._merge

    # -- reshards --------------------------------------------------------------------------

    def bind(self, merge: Merge) -> None:
        self._merge = merge

    def progress(self, shard_ids: list[str]) -> dict[str, tuple[float | None, float | None]]:
        """The shards' items (``BatchGetItem``, strongly consistent)."""
        return {
            item["shard"]["S"][len(self.prefix) :]: (
                float(item["max_time"]["N"]) if "max_time" in item else None,
                float(item["clock"]["N"]) if "clock" in item else None,
            )
            for item in self._shard_items(shard_ids)
            if not _fenced_only(item)
        }

    def inherit(
        self,
        shard_id: str,
        state: ShardState,
        parents: tuple[str, ...],
        parents_of: ParentsOf,
        merge: Merge,
    ) -> None:
        """Read the parents' partitions (one ``Query`` each; a parent that never had a
        batch: its own parents'), seed ``state``; the commit marks them and claims."""
        self._merge = merge
        cached = self._cache.get(shard_id)
        if cached is None or cached.state is not state:
            msg = f"inherit of shard {shard_id!r} without its state read first"
            raise WindowStateError(msg)
        view = self._view(shard_id, parents, parents_of, ())
        ancestors = tuple(view.heads)
        state.seed(ancestors, view.max_time, view.parts, view.foreign, merge)
        cached.unmarked = {a: rev for a, (rev, marked) in view.heads.items() if not marked}

    def _view(
        self,
        me: str,
        parents: tuple[str, ...],
        parents_of: ParentsOf | None,
        via: tuple[str, ...],
    ) -> _View:
        """What ``me`` inherits from ``parents``: their open windows that no other shard
        claimed (an ancestor still inheriting passes on its own ancestors' windows, and
        those the shards in ``via`` claimed without committing them), the greatest event
        time; ``heads`` are the parents read (``parents_of`` given: the top level)."""
        view = _View()
        for parent in parents:
            items, pending = _laid(self._query(self.prefix + parent))
            if pending:  # claims need its items in the table (slice S5)
                self._roll_logs(self.prefix + parent, pending)
            head = next((i for i in items if i["window"]["S"] == _SHARD_SK), None)
            if head is not None and not self.high_water and _lanes_wrote(head):
                self._turn_lanes(self.prefix + parent)  # a parent lanes mode wrote
            if head is None or _fenced_only(head):  # no batch committed: what it inherits
                if parents_of is not None:  # and what it claimed without committing (review)
                    sub = self._view(me, parents_of(parent), parents_of, (*via, parent))
                    view.later(sub.max_time)
                    view.parts += sub.parts
                    view.foreign |= sub.foreign
                    view.heads.update(sub.heads)
                continue
            if parents_of is not None:
                marked = me in head.get("children", {}).get("SS", ())
                # what the mark is conditional on: lanes mode, the commit number, or
                # for an item the one-lane protocol wrote (no ``n``) its ``rev`` (review 9)
                seen = head["rev"]["S"]
                if self.high_water:
                    at = read_head(head)[0]
                    seen = str(at) if at else f"{_ONE_LANE_SEEN}{seen}"
                view.heads[parent] = (seen, marked)
            applied = _judged_at(head)
            max_time = float(head["max_time"]["N"]) if "max_time" in head else None
            view.later(max_time)
            watermark = None if max_time is None else max_time - self.lateness
            settled: set[WindowKey] = set()
            allowed = {me, *via}
            for item in items:
                if not item["window"]["S"].startswith("w#"):  # the shard item, outbox parts
                    continue
                wkey, _, acc, closed, end, rank, _ = _effective(item, applied, self.end_of)
                self._note_legacy(item, wkey)
                if acc is None and not closed:
                    continue
                settled.add(wkey)
                if acc is None or closed or (watermark is not None and end <= watermark):
                    continue
                owner = item.get("owner", {}).get("S")
                if owner is None or owner in allowed:
                    view.parts.append((end, rank, wkey, decode(acc), (Inherited(parent, via),)))
                else:
                    view.foreign.add(wkey)
            if "ancestors" in head:  # it was still inheriting: pass that on
                sub = self._view(me, tuple(sorted(head["ancestors"]["SS"])), None,
                                 (*via, parent))  # fmt: skip
                view.parts += [p for p in sub.parts if p[2] not in settled]
                view.foreign |= sub.foreign - settled
        return view

    def _mark(self, shard_id: str, unmarked: Mapping[str, str]) -> None:
        """A child's first commit: each ancestor's item names it among its ``children``
        (the quiet-shard rule leaves such a shard to them), on the revision the child
        read, so a quiet-shard close of the parent meanwhile makes the batch apply again."""
        if self.high_water:
            self._mark_on_n(shard_id, unmarked)
            return
        for ancestor, rev in unmarked.items():
            self._call(
                "UpdateItem",
                self.client.update_item,
                lost=ClaimLost,
                TableName=self.table,
                Key={"shard": {"S": self.prefix + ancestor}, "window": {"S": _SHARD_SK}},
                # the outbox's parts keep the name of the revision that wrote them, as a
                # fence's (an outbox in parts had become unreadable once marked)
                UpdateExpression="ADD children :c SET rev = :new, "
                "parts_rev = if_not_exists(parts_rev, :seen)",
                ConditionExpression="rev = :seen",
                ExpressionAttributeValues={
                    ":c": {"SS": [shard_id]},
                    ":new": {"S": uuid.uuid4().hex},
                    ":seen": {"S": rev},
                },
            )

    def _mark_on_n(self, shard_id: str, unmarked: Mapping[str, str]) -> None:
        """Lanes mode's mark (slice S5): ``ADD children`` on the condition that the
        ancestor's commit number is still the one read (a commit since, a quiet-shard
        close among them, changed what the child inherited: it reads again). On ``n`` it
        moves nothing: a quiet-shard close is conditional on ``children`` being absent
        (:func:`~processors.window_log.commit_request`), so the two exclude each other,
        and two children of one split, which mark the same parent at once, both pass.

        An ancestor the one-lane protocol wrote (no ``n``: ``seen`` is
        ``_ONE_LANE_SEEN`` + its ``rev``) is marked as the one-lane mark does it (review
        9): on its ``rev``, which the mark moves (the outbox's parts keep their name in
        ``parts_rev``). A one-lane invocation still running while a ``parallelization``
        change turns lanes on closes a quiet shard by a ``PutItem`` on its ``rev`` alone:
        a mark on "no ``n``" passed over such a close (the child went on with a window
        it had closed), and a mark that moved no ``rev`` let such a close replace the
        marked item (its ``children`` gone, the window closed twice)."""
        for ancestor, seen in unmarked.items():
            names = {"#n": "n"}
            values: dict[str, Any] = {":c": {"SS": [shard_id]}}
            update = "ADD children :c"
            if seen.startswith(_ONE_LANE_SEEN):
                names["#r"] = "rev"
                condition = "attribute_not_exists(#n) AND #r = :seenr"
                update += " SET #r = :new, parts_rev = if_not_exists(parts_rev, :seenr)"
                values[":seenr"] = {"S": seen[len(_ONE_LANE_SEEN) :]}
                values[":new"] = {"S": uuid.uuid4().hex}
            else:
                condition = "#n = :seen"
                values[":seen"] = {"N": seen}
            self._call(
                "UpdateItem",
                self.client.update_item,
                lost=ClaimLost,
                TableName=self.table,
                Key={"shard": {"S": self.prefix + ancestor}, "window": {"S": _SHARD_SK}},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )

    def _claim_all(self, shard_id: str, cached: _Cached, changed: Set[WindowKey]) -> None:
        """Before a batch's writes: a new child marks its ancestors; the inherited windows
        the batch touched are claimed.

        Raises:
            ClaimLost: another shard claimed one first, or an ancestor changed.
        """
        state = cached.state
        if cached.unmarked:  # a reshard's child, first commit
            self._mark(shard_id, cached.unmarked)
            cached.unmarked = {}
        claims = state.claims(changed) if state.inherited else {}
        if claims:
            self._claim(shard_id, claims)
            state.claimed(claims)

    def _claim(self, shard_id: str, claims: Mapping[WindowKey, tuple[Inherited, ...]]) -> None:
        """Each inherited window the batch touched becomes ``shard_id``'s: its ancestor's
        item gets ``owner``, on the condition that no other shard owns it, and the TTL of a
        closed window (the child's own item holds it from now on): in lanes mode
        :meth:`_closed_ttl`'s, the age bound and a margin, since :meth:`decided` reads an
        ancestor's item's high-water until no record of it can come again (a day was
        too short for a ``max_record_age_s`` past 23 hours: review 7)."""
        requests = []
        soon = self._closed_ttl()
        for wkey, origins in claims.items():
            for origin in origins:
                key, start = origin.at(wkey)
                expires = int(max(soon, start + self.size + self.lateness + CLOSED_TTL_S))
                ttl = {":x": {"N": str(expires)}}
                allowed = {f":o{i}": {"S": o} for i, o in enumerate((shard_id, *origin.via))}
                holder = self.prefix + origin.holder
                stored = self._legacy.get((holder, key, start)) or key_json(key)
                requests.append({
                    "TableName": self.table,
                    "Key": {"shard": {"S": holder},
                            "window": {"S": f"w#{_n(start)}#{stored}"}},
                    "UpdateExpression": "SET #o = :o0, expires = :x",
                    "ConditionExpression": (
                        f"attribute_exists(#w) AND (attribute_not_exists(#o) "
                        f"OR #o IN ({', '.join(allowed)}))"
                    ),
                    "ExpressionAttributeNames": {"#o": "owner", "#w": "window"},
                    "ExpressionAttributeValues": allowed | ttl,
                })  # fmt: skip
        self._send_all("UpdateItem", self.client.update_item, requests, ClaimLost)

    # -- writing ---------------------------------------------------------------------------

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
            raise
        finally:
            self._local.quiet = {}
        cached.applied = applied
        cached.clean = True

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
        if cached.unlisted:  # a new shard: where other shards' batches find it
            self._call(
                "UpdateItem",
                self.client.update_item,
                TableName=self.table,
                Key={"shard": {"S": self.prefix + _REGISTRY}, "window": {"S": _REGISTRY}},
                UpdateExpression="ADD shards :s",
                ExpressionAttributeValues={":s": {"SS": [shard_id]}},
            )
            cached.unlisted = False
        log_id = uuid.uuid4().hex[:_TOKEN_LEN]
        chunks = encode_log(log)
        parts = log_puts(self.table, pk, n, log_id, chunks)
        theirs = [self._quiet_log(other, other_state) for other, other_state in quiet.items()]
        self._put_all(parts + [put for log_parts in theirs for put in log_parts.puts])
        logs = kept_logs(cached.logs, cached.pending, n, f"{log_id}/{len(chunks)}")
        rev = uuid.uuid4().hex
        sets, removes = _head_sets(state, applied or "", self.now())
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
            accs = state.windows.get(wkey)
            end: Any = wkey[1] + self.size if self.end_of is None else self.end_of(wkey, accs)
            rank = cached.items.get(wkey, (None, None, None, 0, None))[3]
            if accs is None:
                acc = None
                expires = max(closed_ttl, int(end) + self.lateness + CLOSED_TTL_S)
            else:
                of_end = ranks.get(end)
                if of_end is None:
                    of_end = ranks[end] = {w: i for i, w in enumerate(state.by_end[end])}
                rank = of_end[wkey]
                acc = encode(accs)
                expires = None
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

    def _quiet_log(self, other: str, state: ShardState) -> _QuietLog:
        """A quiet shard's close as a commit like any other (slice S5): the log of the
        windows this batch closed (the open items its state no longer holds, and those
        an earlier close left open: ``flushed``) and the ``UpdateItem`` of its shard item
        on the commit number read, with ``logs`` and ``pending`` as its own commits
        write them, so its next batch catches up from the log instead of reading its
        partition again (before S5 this commit carried no log), and a lane of it that
        committed meanwhile makes the transaction fail (the closer reads again). Not
        once a reshard's child marked it (``children``: the child goes on with its
        windows)."""
        was: _Cached = self._local.quiet[other]
        pk = self.prefix + other
        n = was.n + 1
        closed = {w for w, entry in was.items.items()
                  if entry[2] is not None and w not in state.windows}  # fmt: skip
        log, _ = self._log_items(other, was, closed | was.flushed, n)
        log += self._key_items({"S": pk}, state, n)  # its closed sessions' high-water
        log_id = uuid.uuid4().hex[:_TOKEN_LEN]
        chunks = encode_log(log)
        logs = kept_logs(was.logs, was.pending, n, f"{log_id}/{len(chunks)}")
        sets, removes = _head_sets(state, was.applied or "", was.clock)
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

    def _committed_as(self, pk: str, n: int, named: str) -> bool | None:
        """Whether commit ``n`` holds this attempt's log (``named``) after all: a lost
        condition can be the commit's own, sent again after a lost answer (an SDK with
        retries), and dropping a committed log's parts would leave a pending log nobody
        can read (review 8). One consistent ``GetItem`` per lost condition; ``None``: the
        read failed, unsure (the caller keeps the parts: garbage at worst)."""
        try:
            item = self._call(
                "GetItem",
                self.client.get_item,
                TableName=self.table,
                Key={"shard": {"S": pk}, "window": {"S": _SHARD_SK}},
                ConsistentRead=True,
                ProjectionExpression="#l",
                ExpressionAttributeNames={"#l": "logs"},
            ).get("Item")
        except WindowStateError:
            return None
        return bool(item) and item.get("logs", {}).get("M", {}).get(str(n), {}).get("S") == named

    def _roll_forward(
        self,
        pk: dict[str, str],
        cached: _Cached,
        commits: list[int],
        dropped: list[tuple[int, str, int]],
    ) -> None:
        """After a commit: the items of the logs ``commits`` (its own, and pending ones it
        helps) written at once, each only over an older one; then one ``UpdateItem``
        takes them out of ``pending`` (no condition: set operations commute). The parts
        of logs the commit no longer names (``dropped``) are deleted in the same wave. A
        failure leaves the log pending: readers lay it over the items; this process rolls
        it forward after its next commit. Never raises (the batch committed)."""
        requests: list[dict[str, Any]] = []
        unread = []  # logs whose parts could not be read: never taken out of pending
        for m in commits:
            log = cached.decoded.get(m)
            if log is None:  # another's, not read yet
                try:
                    log = next(items for at, items in
                               self._pending_logs(pk["S"], cached) if at == m)  # fmt: skip
                except (StopIteration, KeyError, WindowStateError):
                    unread.append(m)
                    continue
            requests += roll_requests(self.table, m, log)
        if unread:  # review 8: a DELETE of them would lose their committed items for good
            cached.unrolled.update(unread)
            commits = [m for m in commits if m not in unread]
        deletes = [{"TableName": self.table,
                    "Key": {"shard": pk, "window": {"S": f"{log_prefix(m, i)}{p:03d}"}}}
                   for m, i, count in dropped for p in range(count)]  # fmt: skip
        calls = [partial(self._roll_one, request) for request in requests]
        calls += [partial(self._quietly, "DeleteItem", self.client.delete_item, request)
                  for request in deletes]  # fmt: skip
        width = wave_width(one_item=True)
        ok = True
        for first in range(0, len(calls), width):
            ok = all(run_all(calls[first : first + width])) and ok
        if not ok:
            cached.unrolled.update(commits)
            return
        if not commits:  # only old parts to delete: nothing leaves pending
            return
        try:
            self._call(
                "UpdateItem",
                self.client.update_item,
                TableName=self.table,
                Key={"shard": pk, "window": {"S": _SHARD_SK}},
                UpdateExpression="DELETE #p :p",
                ExpressionAttributeNames={"#p": "pending"},
                ExpressionAttributeValues={":p": {"NS": [str(m) for m in commits]}},
            )
        except WindowStateError:
            cached.unrolled.update(commits)
            return
        cached.unrolled.difference_update(commits)
        cached.pending.difference_update(commits)
        for m in commits:
            cached.decoded.pop(m, None)

    def _roll_logs(self, pk: str, logs: Mapping[int, list[dict[str, Any]]]) -> bool:
        """Another shard's committed logs (a parent's still pending, a quiet shard's this
        batch closed) rolled forward, then taken out of its ``pending``; best effort:
        ``False`` leaves them pending (readers lay them over the items). A child rolls
        its parents' pending logs forward before it claims: a claim is an ``UpdateItem``
        of the parent's item on ``attribute_exists``, which an item that so far exists
        only in a pending log (its writer died before its roll-forward, and a parent
        that drained never commits again to finish it) failed for ever."""
        calls = [
            partial(self._roll_one, request)
            for m, log in logs.items()
            for request in roll_requests(self.table, m, log)
        ]
        width = wave_width(one_item=True)
        ok = True
        for first in range(0, len(calls), width):
            ok = all(run_all(calls[first : first + width])) and ok
        if not ok:
            return False
        return self._quietly(
            "UpdateItem",
            self.client.update_item,
            {
                "TableName": self.table,
                "Key": {"shard": {"S": pk}, "window": {"S": _SHARD_SK}},
                "UpdateExpression": "DELETE #p :p",
                "ExpressionAttributeNames": {"#p": "pending"},
                "ExpressionAttributeValues": {":p": {"NS": [str(m) for m in logs]}},
            },
        )

    def _roll_one(self, request: dict[str, Any]) -> bool:
        """One roll-forward ``PutItem``: a lost condition is a newer commit's item (done),
        or, for a window item, a reshard's child's claim (:func:`roll_owned`: the same
        write that keeps the claim); another failure is ``False`` (the log stays
        pending)."""
        try:
            self._call("PutItem", self.client.put_item, lost=_Newer, **request)
        except _Newer:
            if "ConditionExpression" not in request:
                return True
            try:
                self._call("UpdateItem", self.client.update_item, lost=_Newer,
                           **roll_owned(request))  # fmt: skip
            except _Newer:
                return True
            except WindowStateError:
                return False
        except WindowStateError:
            return False
        return True

    def _quietly(self, operation: str, method: Callable[..., Any], request: dict[str, Any]) -> bool:
        """A call whose failure only leaves garbage (a dropped log's part): ``True``."""
        with contextlib.suppress(WindowStateError):
            self._call(operation, method, **request)
        return True

    def _drop_garbage(self, pk: str, found: list[dict[str, Any]]) -> None:
        """A full read's cleaning (design §4; review 8): the log parts no commit can name
        any more, deleted best effort. A part of commit N at or below the shard item's
        ``n`` whose id is not ``logs[N]``'s is an attempt that never committed (it died
        between its log and its commit, or lost its condition and its delete failed), or
        a log a commit dropped whose delete failed: no attempt can commit it any more (a
        commit N holds only at ``n`` = N - 1), and no reader reads it. Without this they
        stay for ever (no TTL) and every full read pays for them."""
        head = next((i for i in found if i["window"]["S"] == _SHARD_SK), None)
        n, logs, _ = read_head(head)
        if head is None or not n:
            return
        named = {log_prefix(m, log_id_parts(v)[0]) for m, v in logs.items()}
        calls = []
        if "legacy_applied" in head:  # converted: the one-lane outbox's parts are garbage
            for item in found:
                if item["window"]["S"].startswith(_PART):
                    request = {
                        "TableName": self.table,
                        "Key": {"shard": {"S": pk}, "window": item["window"]},
                    }
                    calls.append(partial(self._quietly, "DeleteItem", self.client.delete_item,
                                         request))  # fmt: skip
        for item in found:
            sk = item["window"]["S"]
            if not sk.startswith(LOG_SK):
                continue
            prefix = sk[: sk.rindex("#") + 1]
            if int(prefix[len(LOG_SK) :].split("#", 1)[0]) <= n and prefix not in named:
                request = {
                    "TableName": self.table,
                    "Key": {"shard": {"S": pk}, "window": {"S": sk}},
                }
                calls.append(partial(self._quietly, "DeleteItem", self.client.delete_item, request))
        if calls:
            run_all(calls)

    def _drop_logs(self, pk: dict[str, str], logs: list[tuple[int, str, int]]) -> None:
        """The parts of logs no commit names (an attempt that lost its commit), deleted
        best effort: what is left is garbage a later full read skips."""
        calls = [partial(self._quietly, "DeleteItem", self.client.delete_item,
                         {"TableName": self.table,
                          "Key": {"shard": pk, "window": {"S": f"{log_prefix(m, i)}{p:03d}"}}})
                 for m, i, count in logs for p in range(count)]  # fmt: skip
        run_all(calls)

    def _commit(
        self,
        shard_id: str,
        cached: _Cached,
        changed: Set[tuple[Any, int]],
        applied: str | None,
        quiet: Mapping[str, ShardState],
    ) -> None:
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
        fence = False  # an item holds another attempt's pending write (the module docstring)
        for wkey in changed | cached.flushed:
            start = wkey[1]
            accs = state.windows.get(wkey)
            end: Any = start + self.size if self.end_of is None else self.end_of(wkey, accs)
            raw_v, token, saved, rank, saved_hw = cached.items.get(
                wkey, (None, None, None, 0, None)
            )
            if raw_v is not None and raw_v != v and (read is None or _pos(raw_v) > read):
                fence = True
            if accs is None:
                acc = None
                expires = max(closed_ttl, int(end) + self.lateness + CLOSED_TTL_S)
            else:
                of_end = ranks.get(end)
                if of_end is None:
                    of_end = ranks[end] = {w: i for i, w in enumerate(state.by_end[end])}
                rank = of_end[wkey]
                acc = encode(accs)
                expires = None
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
        self._put_all(puts + self._carry_outbox(pk, cached))
        cached.items.update(updates)
        cached.flushed = set()
        _forget_closed_hw(state, updates)
        if cached.unlisted:  # a new shard: where other shards' batches find it
            self._call(
                "UpdateItem",
                self.client.update_item,
                TableName=self.table,
                Key={"shard": {"S": self.prefix + _REGISTRY}, "window": {"S": _REGISTRY}},
                UpdateExpression="ADD shards :s",
                ExpressionAttributeValues={":s": {"SS": [shard_id]}},
            )
            cached.unlisted = False
        self._write_shard_items(shard_id, cached, v, quiet)
        self._roll_outbox(pk, cached)

    def _closed_ttl(self) -> int:
        """The least TTL of a window item closed now: a day, and with ``high_water`` the
        age bound plus :data:`OUTBOX_MARGIN_S` (its high-water is read until no record of
        it can be delivered again: :meth:`decided`)."""
        now = int(self.now())
        if self.high_water:
            return now + max(CLOSED_TTL_S, self.max_record_age_s + OUTBOX_MARGIN_S)
        return now + CLOSED_TTL_S

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

    def _outbox_puts(
        self, pk: dict[str, str], cached: _Cached, outbox: Mapping[Position, Outcome], now: int
    ) -> dict[Position, list[dict[str, Any]]]:
        """The puts of the outbox entry items (``~o#POS``) of ``outbox``'s outcomes that
        have none yet: those with results or an error (a late record is late again).
        Their TTL: no record is delivered again past the age bound (``now``, the commit's
        time, is after the record's arrival: kept at least as long). An entry over
        :data:`_OUTBOX_PART` (a record that closed many windows) goes in parts
        ``~o#POS~I``, each naming the count (``n``): read back only whole."""
        expires = {"N": str(now + self.max_record_age_s + OUTBOX_MARGIN_S)}
        rolled = cached.rolled
        out: dict[Position, list[dict[str, Any]]] = {}
        for position, outcome in outbox.items():
            if position in rolled or not (
                outcome.results or outcome.error is not None or (outcome.late and self.keeps_late)
            ):
                continue
            text, sk, at = _outbox_entry(outcome), outbox_sk(position), _pos_text(position)
            chunks = [text[i : i + _OUTBOX_PART] for i in range(0, len(text), _OUTBOX_PART)]
            out[position] = [
                {
                    "TableName": self.table,
                    "Item": {
                        "shard": pk,
                        "window": {"S": sk if len(chunks) == 1 else f"{sk}~{i:03d}"},
                        "at": {"S": at},
                        "o": {"S": chunk},
                        "i": {"N": str(i)},
                        "n": {"N": str(len(chunks))},
                        "expires": expires,
                    },
                }
                for i, chunk in enumerate(chunks)
            ]
        return out

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
        self, shard_id: str, cached: _Cached, v: str, quiet: Mapping[str, ShardState]
    ) -> None:
        """The batch's last write: the shard item (with the quiet shards' in one
        transaction), after its outbox's parts if it has some."""
        pk = {"S": self.prefix + shard_id}
        rev = uuid.uuid4().hex
        item, parts = self._shard_item(pk, cached.state, v, rev, self.now())
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
                    was.clock,
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

    def _shard_item(
        self, pk: dict[str, str], state: ShardState, applied: str, rev: str, clock: float | None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """A shard's item, and the puts of its outbox's parts (none, unless the outbox is
        over :data:`_OUTBOX_INLINE`: a batch that closed many windows with large
        results); a quiet shard whose windows another shard's batch closed keeps its
        ``clock`` (it stays quiet).

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
        if state.max_time is not None:
            item["max_time"] = {"N": _n(state.max_time)}
        if state.ends:
            item["next_end"] = {"N": _n(state.ends[0])}
        if state.ancestors:
            item["ancestors"] = {"SS": list(state.ancestors)}
        return item, parts

    def _put_all(self, puts: list[dict[str, Any]]) -> None:
        self._send_all("PutItem", self.client.put_item, puts)

    def _send_all(
        self,
        operation: str,
        method: Callable[..., Any],
        requests: list[dict[str, Any]],
        lost: type[WindowStateError] = WindowStateError,
    ) -> None:
        """Independent writes (distinct items) at once, in waves as wide as the ``latest``
        sink's one-item calls (:func:`stream.overlap.wave_width`; :func:`~stream.overlap.run_all`:
        every wave ends before the next, or the caller gets the first failure, nothing left
        running): a batch's window items are one round trip, not one each (waves of 8 made
        a batch that changed 300 windows 38 round trips). With the overlap switched off, in
        turn."""
        if len(requests) == 1:
            self._call(operation, method, lost=lost, **requests[0])
            return
        width = wave_width(one_item=True)
        for first in range(0, len(requests), width):
            run_all([partial(self._call, operation, method, lost=lost, **request)
                     for request in requests[first : first + width]])  # fmt: skip

    def _call(
        self,
        operation: str,
        method: Callable[..., Any],
        *,
        lost: type[WindowStateError] = WindowStateError,
        **request: Any,
    ) -> Any:
        """One DynamoDB call, its failures as :class:`WindowStateError` (a lost condition
        as ``lost``)."""
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        if operation in {"DeleteItem", "PutItem", "UpdateItem", "TransactWriteItems"}:
            self.writes += 1
        else:
            self.reads += 1
        try:
            return method(**request)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code", "")
            if code in {"ConditionalCheckFailedException", "TransactionCanceledException"}:
                why = f"another invocation changed it since this batch read it ({code})"
                msg = f"window state: DynamoDB {operation} on table {self.table!r}: {why}"
                raise lost(msg) from exc
            why = f"{code}: {error.get('Message', '')}"
            msg = f"window state: DynamoDB {operation} on table {self.table!r}: {why}"
            raise WindowStateError(msg) from exc
        except BotoCoreError as exc:
            msg = f"window state: DynamoDB {operation} on table {self.table!r}: {exc}"
            raise WindowStateError(msg) from exc


def _n(value: float) -> str:
    """A window bound as DynamoDB gives a number back: without trailing zeroes, so that a
    session's start of 100.0 is ``"100"``. DynamoDB normalizes the numbers it stores (moto
    keeps the text as sent); a bound written ``"100.0"`` would come back as 100 and name
    another item (``w#100#...``) than the one written (``w#100.0#...``), and every later
    conditional write of the window would fail.

    >>> _n(100.0), _n(100), _n(61.5)
    ('100', '100', '61.5')
    """
    if type(value) is float:
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def _number(text: str) -> Any:
    """A DynamoDB number back: an int when it is written as one (tumbling windows' bounds),
    else a float (session windows' bounds are event times).

    >>> _number("120"), _number("61.5")
    (120, 61.5)
    """
    try:
        return int(text)
    except ValueError:
        return float(text)


def _effective(
    item: dict[str, Any],
    applied: Position | None,
    end_of: Callable[[tuple[Any, Any], list[Any] | None], float] | None = None,
) -> tuple[WindowKey, str | None, str | None, bool, Any, int, str | None]:
    """A window item as its shard's committed state sees it: (window, raw ``v``, the
    accumulators' JSON or None: no window, closed, end, rank, the high-water's JSON or
    None: none, or an item written before it existed). An item a batch wrote that never
    committed (``v`` past ``applied``) is what it was before (``prev``, ``hw_prev``). An
    item lanes mode wrote (no ``v``: raw ``v`` ``None``) holds a committed state as it is
    (the pending logs are laid over it first: :func:`_laid`).

    A session's end moves on as it grows (``end_of``, :mod:`processors.session`): the end
    of the accumulators read (``prev`` after a batch that never committed), not the
    item's, which that batch wrote."""
    key = key_of_json(item["key"]["S"])
    start = _number(item["start"]["N"])
    raw_v = item["v"]["S"] if "v" in item else None  # lanes mode's: its commit's ``n``
    if raw_v is not None and (applied is None or _pos(raw_v) > applied):  # never committed
        acc = item["prev"]["S"] if "prev" in item else None
        hw = item["hw_prev"]["S"] if "hw_prev" in item else None
        closed = False
    else:
        acc = item["acc"]["S"] if "acc" in item else None
        hw = item["hw"]["S"] if "hw" in item else None
        closed = "closed" in item
    rank = int(item["rank"]["N"]) if "rank" in item else 0
    end = _number(item["end"]["N"])
    if end_of is not None and acc is not None and not closed:
        end = end_of((key, start), decode(acc))
    return (key, start), raw_v, acc, closed, end, rank, hw


def _forget_closed_hw(state: ShardState, updates: Mapping[WindowKey, tuple[Any, ...]]) -> None:
    """A window the batch wrote closed (no accumulators) keeps its high-water in its item
    only, not in the process's state (slice S3 reads it there)."""
    if state.hw:
        for wkey, update in updates.items():
            if update[2] is None:
                state.hw.pop(wkey, None)


def _read_hw(hw: str | None, exact: bool, legacy: Mark = _NO_MARK) -> dict[str, Mark] | None:
    """A window item's high-water as the state holds it: an item of an earlier version
    (no ``hw``: the one-lane protocol's) has an unknown one (:data:`HW_UNBOUNDED`) for a
    store that decides by it (``exact``), none for one that does not. Its mark is
    ``legacy``, the position the one-lane protocol had applied when lanes mode took over
    (:meth:`_Cached.legacy_mark`): every partition key was decided up to there and no
    further, so a lagging lane's record after it is new (issue 16, conversion);
    :data:`_NO_MARK` where that is not known (decided as with one lane)."""
    if hw is not None:
        return hw_marks(hw)
    return {HW_UNBOUNDED: legacy} if exact else None


def hw_text(held: Mapping[str, Mark]) -> str:
    """A window's high-water as its item holds it (``hw``): JSON, partition key ->
    [sequence number, sub-sequence number, part].

    >>> hw_text({"k": (3, "123", 0, ())})
    '{"k":["123",0,[]]}'
    """
    return json.dumps({pk: [m[1], m[2], list(m[3])] for pk, m in sorted(held.items())},
                      separators=(",", ":"))  # fmt: skip


def hw_stored(held: Mapping[str, Mark]) -> str:
    """:func:`hw_text` within the bound: a high-water of more than :data:`HW_MAX_PKS`
    partition keys is stored as the one entry :data:`HW_UNBOUNDED` (what the memory store
    counts for the item's size too, though it keeps them all: it decides by them).

    >>> hw_stored({str(i): (1, "1", 0, ()) for i in range(17)})
    '{"":["",0,[]]}'
    """
    return hw_text(held if len(held) <= HW_MAX_PKS else {HW_UNBOUNDED: _NO_MARK})


def bound_hw(held: dict[str, Mark], pk: str, bound: int | None) -> dict[str, Mark] | None:
    """What a window's high-water becomes when partition key ``pk``, not in it yet, is
    decided on it: ``None``, add it; else the map to keep instead (:data:`HW_UNBOUNDED`)
    once ``bound`` keys are held (``None``: no bound, the store decides by them)."""
    unknown = held.get(HW_UNBOUNDED)
    if bound is not None and (len(held) >= bound or (unknown is not None and not unknown[0])):
        return {HW_UNBOUNDED: _NO_MARK}  # an old item's entry (a mark) takes keys beside it
    return None


def hw_marks(text: str) -> dict[str, Mark]:
    """The high-water back from :func:`hw_text`.

    >>> hw_marks(hw_text({"k": (3, "123", 0, (1,))}))
    {'k': (3, '123', 0, (1,))}
    """
    return {
        pk: (len(seq), seq, sub, tuple(part)) for pk, (seq, sub, part) in json.loads(text).items()
    }


def window_item(  # noqa: PLR0917  # the item's parts, each its own attribute
    pk: dict[str, str],
    wkey: WindowKey,
    end: Any,
    v: str,
    saved: str | None,
    acc: str | None,
    rank: int,
    expires: int | None = None,
    stored: str | None = None,
    token: str = "0" * _TOKEN_LEN,
    *,
    hw: str | None = None,
    saved_hw: str | None = None,
) -> dict[str, Any]:
    """A window's item as the DynamoDB store writes it (the module docstring): ``acc``
    ``None`` is a closed window (its TTL ``expires``); ``saved`` the accumulators before
    the batch (``prev``); ``stored`` the key's JSON in an item an earlier version wrote
    (default :func:`~processors.window_keys.key_json`); ``token`` the write's own
    (:data:`_TOKEN_LEN` characters: the memory store's stand-in has as many); ``hw`` the
    window's high-water after the batch (:func:`hw_text`; kept in a closed item too),
    ``saved_hw`` before it (``hw_prev``, read while the batch has not committed). The
    memory store builds it too, to apply the same size rule."""
    key, start = wkey
    if stored is None:
        stored = key_json(key)
    item: dict[str, Any] = {
        "shard": pk,
        "window": {"S": f"w#{_n(start)}#{stored}"},
        "key": {"S": stored},
        "start": {"N": _n(start)},
        "end": {"N": _n(end)},
        "v": {"S": v},
        "token": {"S": token},
    }
    if saved is not None:
        item["prev"] = {"S": saved}
    if hw is not None:
        item["hw"] = {"S": hw}
    if saved_hw is not None:
        item["hw_prev"] = {"S": saved_hw}
    if acc is None:
        item["closed"] = {"BOOL": True}
        item["expires"] = {"N": str(expires)}
    else:
        item["acc"] = {"S": acc}
    item["rank"] = {"N": str(rank)}  # closed too: read back if this batch never commits
    return item


def _state_too_large(shard_id: str, too_large: set[WindowKey]) -> StateTooLarge:
    msg = (
        f"window state: {len(too_large)} window(s) of shard {shard_id!r} would be over "
        f"DynamoDB's 400 KB item limit with this batch: {sorted(too_large, key=repr)[:3]}"
    )
    return StateTooLarge(msg, frozenset(too_large))


def _too_large(item: dict[str, Any], acc: str) -> bool:
    return len(acc) > _ITEM_LIMIT // 2 and _size(item) > _ITEM_LIMIT


def _size(item: dict[str, Any]) -> int:
    """About the bytes DynamoDB counts for a window item (names and values; its strings
    are ASCII JSON).

    >>> _size({"acc": {"S": "[1,2]"}, "closed": {"BOOL": True}})
    18
    """
    return sum(len(name) + len(str(next(iter(value.values()))))
               for name, value in item.items())  # fmt: skip


def _put(table: str, item: dict[str, Any], attribute: str, expected: str | None) -> dict[str, Any]:
    """A PutItem of ``item`` on the condition that ``attribute`` still is ``expected``
    (``None``: that there is no item)."""
    request: dict[str, Any] = {"TableName": table, "Item": item}
    if expected is None:
        request["ConditionExpression"] = "attribute_not_exists(#w)"
        request["ExpressionAttributeNames"] = {"#w": "window"}
    else:
        request["ConditionExpression"] = "#a = :a"
        request["ExpressionAttributeNames"] = {"#a": attribute}
        request["ExpressionAttributeValues"] = {":a": {"S": expected}}
    return request


def _fenced_only(shard_item: dict[str, Any]) -> bool:
    """A shard item that a fence made before the shard's first commit (no batch committed:
    nothing applied and no ``clock``); read as no shard item by reshards' children."""
    return not shard_item["applied"]["S"] and "clock" not in shard_item


def _judged_at(shard_item: Mapping[str, Any]) -> Position | None:
    """The position an old window item (one-lane protocol: ``v``/``prev``) is judged
    against: committed if its ``v`` is at or before it. The shard item's
    ``legacy_applied`` once a lanes-mode commit converted it (issue 16): the one-lane
    ``applied`` as it was then, kept for good, because lanes mode's ``applied`` keeps
    growing and an old write that never committed would read as committed once it
    passed its ``v``. Before the conversion (and with one lane), ``applied``."""
    legacy = shard_item.get("legacy_applied", {}).get("S")
    judged = legacy if legacy is not None else shard_item["applied"]["S"]
    return _pos(judged) if judged else None


def _lanes_wrote(shard_item: Mapping[str, Any]) -> bool:
    """Whether lanes mode wrote the shard (its item has a commit number ``n`` or
    ``legacy_applied``): the one-lane protocol can neither read nor write it
    (:meth:`DynamoDBStore._turn_lanes`)."""
    return "n" in shard_item or "legacy_applied" in shard_item


def _put_window(
    table: str, item: dict[str, Any], raw_v: str | None, token: str | None
) -> dict[str, Any]:
    """A window item's PutItem, on the condition that the item is still the one the batch
    read: by its write ``token`` (unique per write, where ``v`` can come back: two attempts
    whose batches end at one position write one ``v``); an item of an earlier version, with
    no token, by its ``v``; none read, that there is none."""
    if raw_v is None or token is None:
        request = _put(table, item, "v", raw_v)
        if raw_v is not None:
            request["ConditionExpression"] += " AND attribute_not_exists(#t)"
            request["ExpressionAttributeNames"]["#t"] = "token"
        return request
    return _put(table, item, "token", token)


def _outbox_of(shard_item: dict[str, Any], items: list[dict[str, Any]]) -> str | None:
    """The outbox's JSON text: in the shard item, or joined from its parts (``KeyError``:
    a part is missing, the state is unreadable)."""
    if "outbox_parts" not in shard_item:
        text: str | None = shard_item.get("outbox", {}).get("S")
        return text
    written = shard_item.get("parts_rev", shard_item["rev"])["S"]  # a fence moved ``rev``
    prefix = f"{_PART}{written}#"
    parts = {i["window"]["S"]: i["part"]["S"] for i in items if i["window"]["S"].startswith(prefix)}
    return "".join(parts[f"{prefix}{i}"] for i in range(int(shard_item["outbox_parts"]["N"])))


def _outbox_text(outbox: dict[Position, Outcome]) -> str:
    entries = []
    for position, outcome in outbox.items():
        entry: dict[str, Any] = {"at": _pos_text(position)}
        if outcome.results:
            entry["results"] = list(outcome.results)
        if outcome.late:
            entry["late"] = True
        if outcome.error is not None:
            entry["error"] = [type(outcome.error).__name__, str(outcome.error)]
        entries.append(entry)
    return json.dumps(entries, separators=(",", ":"))


def outbox_sk(position: Position) -> str:
    """The sort key of a position's outbox entry item: zero-padded, so that the items
    sort by position (Kinesis' sequence numbers have at most 129 digits: its API's
    pattern; they have 56 today).

    >>> outbox_sk((123, 4, (1, 2)))[:8], outbox_sk((123, 4, (1, 2)))[132:]
    ('~o#00000', '#0000000004#000001.000002')
    >>> outbox_sk((99, 0, ())) < outbox_sk((100, 0, ())) < outbox_sk((100, 0, (1,)))
    True
    """
    seq, sub, part = position
    return f"{_OUTBOX_SK}{seq:0129d}#{sub:010d}#{'.'.join(f'{p:06d}' for p in part)}"


def _outbox_entry(outcome: Outcome) -> str:
    """An outcome as an outbox entry item holds it (``o``: JSON, as in the shard item's)."""
    entry: dict[str, Any] = {}
    if outcome.results:
        entry["results"] = list(outcome.results)
    if outcome.late:
        entry["late"] = True
    if outcome.error is not None:
        entry["error"] = [type(outcome.error).__name__, str(outcome.error)]
    return json.dumps(entry, separators=(",", ":"))


def _outcomes(items: list[dict[str, Any]]) -> dict[Position, Outcome]:
    """Outbox entry items back as outcomes by position; an entry in parts only if every
    part is there (a write cut short is no entry: the shard item still holds it)."""
    parts: dict[str, dict[int, str]] = {}
    counts: dict[str, int] = {}
    for item in items:
        at = item["at"]["S"]
        parts.setdefault(at, {})[int(item.get("i", {"N": "0"})["N"])] = item["o"]["S"]
        counts[at] = int(item.get("n", {"N": "1"})["N"])
    return {
        _pos(at): _outcome("".join(held[i] for i in range(counts[at])))
        for at, held in parts.items()
        if len(held) == counts[at]
    }


def _outcome(text: str) -> Outcome:
    """An outbox entry item's outcome back (:func:`_outbox_entry`)."""
    entry = json.loads(text)
    error: Exception | None = None
    if "error" in entry:
        kind, message = entry["error"]
        error = _RECORD_ERRORS.get(kind, WindowRecordError)(message)
    return Outcome(tuple(entry.get("results", ())), bool(entry.get("late")), error)


#: the record errors an outbox keeps, by name (others come back as WindowRecordError)
_RECORD_ERRORS: dict[str, type[RecordError]] = {
    "NotANumber": NotANumber,
    "ValueTooLarge": ValueTooLarge,
}


def _outbox(text: str | None) -> dict[Position, Outcome]:
    out: dict[Position, Outcome] = {}
    for entry in json.loads(text) if text else ():
        error: Exception | None = None
        if "error" in entry:
            kind, message = entry["error"]
            error = _RECORD_ERRORS.get(kind, WindowRecordError)(message)
        out[_pos(entry["at"])] = Outcome(
            tuple(entry.get("results", ())), bool(entry.get("late")), error
        )
    return out


class _Newer(WindowStateError):
    """A roll-forward's lost condition: the item holds a newer commit's write."""


def _head_sets(
    state: ShardState, applied: str, clock: float | None
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """A lanes-mode commit's shard item attributes besides the commit's own (``n``,
    ``rev``, ``logs``, ``pending``): what to set, what to remove."""
    sets: dict[str, dict[str, Any]] = {"applied": {"S": applied}}
    removes = []
    if clock is not None:
        sets["clock"] = {"N": _n(float(clock))}
    if state.max_time is not None:
        sets["max_time"] = {"N": _n(state.max_time)}
    if state.ends:
        sets["next_end"] = {"N": _n(state.ends[0])}
    else:
        removes.append("next_end")
    if state.ancestors:
        sets["ancestors"] = {"SS": list(state.ancestors)}
    else:
        removes.append("ancestors")
    return sets, removes


#: What a warm batch reads of its shard item in lanes mode: the revision, the commit
#: number, ``logs`` and ``pending``, and what a catch-up takes from it
#: (:meth:`DynamoDBStore._catch_up`); not main's outbox (up to 300 KB, read cold only).
_HEAD_ATTRIBUTES = ("rev", "n", "logs", "pending", "applied", "max_time", "clock",
                    "ancestors", "legacy_applied")  # fmt: skip


def _head_projection(lanes: bool) -> dict[str, Any]:
    """The attributes a warm batch reads of its shard item: the revision, and in lanes mode
    :data:`_HEAD_ATTRIBUTES`."""
    if not lanes:
        return {"ProjectionExpression": "rev"}
    names = {f"#h{i}": a for i, a in enumerate(_HEAD_ATTRIBUTES)}
    return {"ProjectionExpression": ", ".join(names), "ExpressionAttributeNames": names}


def _window_sk(wkey: WindowKey) -> str:
    """A window item's sort key (the key's JSON as this version writes it): how a ``Query``
    orders items of one end and rank."""
    return f"w#{_n(wkey[1])}#{key_json(wkey[0])}"


def _laid(
    items: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], dict[int, list[dict[str, Any]]]]:
    """A partition's items (a ``Query``) as its shard item's commit sees them: the window
    items with the pending logs laid over (:func:`~processors.window_log.overlay`), the
    log parts left out; and the pending logs' items by commit. A partition with no pending
    log (main's protocol's, or every log rolled forward) is as read.

    Raises:
        KeyError: a pending log's part is missing (the state is unreadable: retried).
    """
    shard_item = next((i for i in items if i["window"]["S"] == _SHARD_SK), None)
    _, logs, pending = read_head(shard_item)
    if not pending:
        return [i for i in items if not i["window"]["S"].startswith(LOG_SK)], {}
    decoded: dict[int, list[dict[str, Any]]] = {}
    texts = {i["window"]["S"]: i["log"]["S"] for i in items if i["window"]["S"].startswith(LOG_SK)}
    for m in pending:
        log_id, count = log_id_parts(logs[m])
        prefix = log_prefix(m, log_id)
        decoded[m] = decode_log({i: texts[f"{prefix}{i:03d}"] for i in range(count)}, count)
    kept = {i["window"]["S"]: i for i in items if not i["window"]["S"].startswith(LOG_SK)}
    laid = overlay(kept, [(m, [e for e in log if e["window"]["S"].startswith(("w#", _KEY_SK))])
                          for m, log in decoded.items()])  # fmt: skip
    return list(laid.values()), decoded
