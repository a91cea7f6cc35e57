"""The DynamoDB window store's ground layer: its settings, its mode and its calls.

The store (:class:`processors.window_dynamodb.DynamoDBStore`) is built in layers, each a
class on the one before: this one; the roll-forward of lanes mode's logs
(:mod:`processors.window_roll`); reshards (:mod:`processors.window_reshards`); the reads
(:mod:`processors.window_reads`); then the two commit protocols, one lane
(:mod:`processors.window_one_lane`) and lanes mode (:mod:`processors.window_lanes`).

Every failure of DynamoDB (throttling, a lost condition, a missing table) raises
:class:`WindowStateError`, a :class:`~stream.exceptions.RetryableError`: the whole batch is
reported and delivered again, and nothing is dead-lettered. The state cached in the process
for warm invocations is checked against the shard item's ``rev`` at every batch and
dropped on any failure.
"""

from __future__ import annotations

import contextlib
import threading
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from processors import window_starts
from processors.window_items import (
    _REGISTRY,
    _SHARD_SK,
    CLOSED_TTL_S,
    DEFAULT_MAX_RECORD_AGE_S,
    OUTBOX_MARGIN_S,
    _head_projection,
    _pos_text,
    encode,
)
from processors.window_keys import key_json
from processors.window_log import (
    read_head,
)
from processors.window_outbox import (
    _OUTBOX_PART,
    _outbox_entry,
    outbox_sk,
)
from processors.window_state import (
    HW_MAX_PKS,
    LanesMet,
    Outcome,
    Position,
    ShardState,
    WindowKey,
    WindowStateError,
)
from stream.overlap import behind, run_all, wave_width

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from processors.window_cache import _Cached
    from processors.window_state import Merge

__all__: list[str] = []

#: the calls counted as writes (:attr:`_TableStore.writes`), the others as reads but
#: ``BatchWriteItem`` (its tombstones counted by item, :attr:`_TableStore.buried`)
_WRITES = frozenset({"DeleteItem", "PutItem", "TransactWriteItems", "UpdateItem"})


class _TableStore:
    """The settings, mode and DynamoDB calls every layer of the store uses (the arguments:
    :class:`~processors.window_dynamodb.DynamoDBStore`)."""

    __slots__ = ("_asks_quiet", "_cache", "_client", "_lanes", "_legacy", "_listed", "_local",
                 "_merge", "_persist", "_sleep", "_whole", "buried", "end_of", "hw_bound",
                 "lateness", "max_record_age_s", "now", "prefix", "reads", "size", "table",
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
        #: partitions read whole, not by their listed starts, until the shard's batch
        #: reads it next: a commit of the shard failed in this process
        #: (:mod:`processors.window_starts`)
        self._whole: set[str] = set()
        #: calls made, for the bench and tests: reads (GetItem, Query pages), writes (PutItem,
        #: UpdateItem, ...); ``buried``: the dead windows' items ``BatchWriteItem``
        #: replaced by a tombstone (:meth:`_put_tombstones`), its calls counted in neither
        self.reads = 0
        self.writes = 0
        self.buried = 0

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

    def _put_tombstones(self, stones: Sequence[dict[str, Any]]) -> Callable[[], set[str]]:
        """Write the tombstones ``stones`` (:func:`~processors.window_items.tombstone`, each
        over a dead window's item, or where a failed attempt may have left one):
        ``BatchWriteItem`` calls of 25 ``PutRequest`` each (DynamoDB's most), at once, each
        asking again for its ``UnprocessedItems`` after a backoff, as :meth:`_batch_get`
        does. In an invocation the calls run beside what follows
        (:func:`stream.overlap.behind`). Best effort: the function returned gives the sort
        keys written (a call that failed, or whose items were still unprocessed after the
        budget, leaves its keys out), waiting for the calls; it never raises."""
        chunks = [stones[i : i + 25] for i in range(0, len(stones), 25)]
        wait = behind([partial(self._tombstone_chunk, chunk) for chunk in chunks])
        return lambda: {sk for chunk in wait() for sk in chunk}

    def _tombstone_chunk(self, stones: Sequence[dict[str, Any]]) -> list[str]:
        """One chunk of :meth:`_put_tombstones`: the sort keys it wrote (in a pool thread:
        counted by the caller, :attr:`buried`)."""
        from stream.aws import MAX_ATTEMPTS, backoff_delay  # noqa: PLC0415

        request: dict[str, Any] = {self.table: [{"PutRequest": {"Item": s}} for s in stones]}
        for attempt in range(MAX_ATTEMPTS):
            if attempt:
                self._sleep(backoff_delay(attempt))
            try:
                page = self._call("BatchWriteItem", self.client.batch_write_item,
                                  RequestItems=request)  # fmt: skip
            except WindowStateError:
                break
            request = page.get("UnprocessedItems") or {}
            if not request:
                break
        left = {r["PutRequest"]["Item"]["window"]["S"] for r in request.get(self.table, [])}
        return [s["window"]["S"] for s in stones if s["window"]["S"] not in left]

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

    def _partition(
        self, pk: str, seen: Mapping[str, Any] | None = None
    ) -> tuple[list[dict[str, Any]], frozenset[str] | None]:
        """What a read of a shard reads of its partition (a batch's shard, a quiet shard,
        a reshard's parent), and the starts it kept to (``None``: all of it). With one
        lane, tumbling and hopping windows: the items below ``w#``, then the items of the
        starts the shard item lists, at once (:mod:`processors.window_starts`); else, or
        when it lists none, the partition. ``seen``: the shard item as the caller just
        read it (a quiet shard's, a tick's), whose starts are read at once with the items
        below ``w#``: one round trip; the caller leaves the shard alone if the shard item
        read with them is another (it moved since, :meth:`_moved`)."""
        if self.high_water or self.end_of is not None or pk in self._whole:
            return self._query(pk), None
        below = partial(self._query, pk, high=window_starts.head_bound())
        starts = window_starts.usable(seen)
        if starts is None:
            head = below()
            starts = window_starts.usable(window_starts.shard_item_of(head))
            if starts is None:
                return head + self._query(pk, window_starts.head_bound(), "~"), None
            ahead = []
        else:
            ahead = [below]
        pages = run_all(ahead + [partial(self._query, pk, *window_starts.start_range(p))
                                 for p in sorted(starts)])  # fmt: skip
        head = pages.pop(0) if ahead else head
        return head + [item for page in pages for item in page], starts

    def _merger(self) -> Merge:
        if self._merge is None:
            msg = "window state: a reshard's windows read back before the step bound its merge"
            raise WindowStateError(msg)
        return self._merge

    def bind(self, merge: Merge) -> None:
        self._merge = merge

    def _closed_ttl(self) -> int:
        """The least TTL of a window item closed now: a day, and with ``high_water`` the
        age bound plus :data:`OUTBOX_MARGIN_S` (its high-water is read until no record of
        it can be delivered again: :meth:`decided`)."""
        now = int(self.now())
        if self.high_water:
            return now + max(CLOSED_TTL_S, self.max_record_age_s + OUTBOX_MARGIN_S)
        return now + CLOSED_TTL_S

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

    def _closed_expires(self, end: Any, closed_ttl: int) -> int:
        """The TTL of a window's item closed now (:meth:`_closed_ttl`'s ``closed_ttl``):
        a day after the window could still take a record, if that is later."""
        return max(closed_ttl, int(end) + self.lateness + CLOSED_TTL_S)

    def _item_content(
        self,
        state: ShardState,
        wkey: WindowKey,
        rank: int,
        ranks: dict[Any, dict[tuple[Any, Any], int]],
        closed_ttl: int,
    ) -> tuple[Any, str | None, int, int | None]:
        """What a changed window's item holds after the batch, in either protocol's
        commit: (its end, its accumulators' JSON or ``None``: closed, its rank among the
        windows of its end, its TTL ``expires`` if closed). ``rank`` is the item's as
        read (a closed item keeps it); ``ranks`` caches each end's ranks for the batch."""
        accs = state.windows.get(wkey)
        end: Any = wkey[1] + self.size if self.end_of is None else self.end_of(wkey, accs)
        if accs is None:
            return end, None, rank, self._closed_expires(end, closed_ttl)
        of_end = ranks.get(end)
        if of_end is None:
            of_end = ranks[end] = {w: i for i, w in enumerate(state.by_end[end])}
        return end, encode(accs), of_end[wkey], None

    def _list_shard(self, shard_id: str, cached: _Cached) -> None:
        """A new shard's first commit, either protocol's: it joins the list of the step's
        shards (``#shards``), where other shards' batches find it (quiet shards)."""
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

    def _quietly(self, operation: str, method: Callable[..., Any], request: dict[str, Any]) -> bool:
        """A call whose failure only leaves garbage (a dropped log's part): ``True``."""
        with contextlib.suppress(WindowStateError):
            self._call(operation, method, **request)
        return True

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

        if operation in _WRITES:
            self.writes += 1
        elif operation != "BatchWriteItem":
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
