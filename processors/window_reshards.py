"""The DynamoDB window store's reshards: what a child inherits, its marks and claims.

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
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from processors.window_items import (
    _SHARD_SK,
    CLOSED_TTL_S,
    _effective,
    _fenced_only,
    _judged_at,
    _laid,
    _lanes_wrote,
    _n,
    decode,
    max_time_and_lift,
    max_time_of,
    watermark_of,
)
from processors.window_keys import key_json
from processors.window_log import (
    read_head,
)
from processors.window_roll import _RollForward
from processors.window_state import (
    ClaimLost,
    Inherited,
    ShardState,
    WindowKey,
    WindowStateError,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Set

    from processors.window_cache import _Cached
    from processors.window_state import Merge, ParentsOf

__all__: list[str] = []

#: lanes mode: what a child read of an ancestor the one-lane protocol wrote (no ``n``),
#: before its ``rev`` (:meth:`DynamoDBStore._mark_on_n`)
_ONE_LANE_SEEN = "rev:"


class _View:
    """What a shard inherits from its ancestors (:meth:`DynamoDBStore._view`)."""

    __slots__ = ("foreign", "heads", "lift", "max_time", "parts")

    def __init__(self) -> None:
        self.max_time: float | None = None
        #: the greatest of the ancestors' lifts (:attr:`ShardState.lift`: an upper bound)
        self.lift = 0.0
        self.parts: list[tuple[int, int, WindowKey, list[Any], tuple[Inherited, ...]]] = []
        self.foreign: set[WindowKey] = set()
        #: the ancestors read (with a shard item) -> their revision and whether marked
        self.heads: dict[str, tuple[str, bool]] = {}

    def later(self, t: float | None) -> None:
        if t is not None and (self.max_time is None or t > self.max_time):
            self.max_time = t


class _Reshards(_RollForward):
    """The store with a child's view of its parents, its marks and its claims."""

    __slots__ = ()

    def progress(self, shard_ids: list[str]) -> dict[str, tuple[float | None, float | None]]:
        """The shards' items (``BatchGetItem``, strongly consistent)."""
        return {
            item["shard"]["S"][len(self.prefix) :]: (
                max_time_of(item, self.lateness),
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
        """Read the parents' partitions (their open windows: :meth:`_partition`; a parent
        that never had a batch: its own parents'), seed ``state``; the commit marks them
        and claims."""
        self._merge = merge
        cached = self._cache.get(shard_id)
        if cached is None or cached.state is not state:
            msg = f"inherit of shard {shard_id!r} without its state read first"
            raise WindowStateError(msg)
        view = self._view(shard_id, parents, parents_of, ())
        ancestors = tuple(view.heads)
        state.seed(ancestors, view.max_time, view.parts, view.foreign, merge)
        state.lift = max(state.lift, view.lift)
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
            items, pending = _laid(self._partition(self.prefix + parent)[0])
            if pending:  # claims need its items in the table (slice S5)
                self._roll_logs(self.prefix + parent, pending)
            head = next((i for i in items if i["window"]["S"] == _SHARD_SK), None)
            if head is not None and not self.high_water and _lanes_wrote(head):
                self._turn_lanes(self.prefix + parent)  # a parent lanes mode wrote
            if head is None or _fenced_only(head):  # no batch committed: what it inherits
                if parents_of is not None:  # and what it claimed without committing (review)
                    sub = self._view(me, parents_of(parent), parents_of, (*via, parent))
                    view.later(sub.max_time)
                    view.lift = max(view.lift, sub.lift)  # its raised max_time's lift too
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
            max_time, lift = max_time_and_lift(head, self.lateness)
            view.later(max_time)
            view.lift = max(view.lift, lift)
            watermark = watermark_of(head, self.lateness)
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
