"""The DynamoDB window table's items (``state: dynamodb``, the default), as text.

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
  issue 16, slice S3): :mod:`processors.window_reads`, "Redeliveries". With one lane the
  store writes none and keeps main's single-position protocol. Why per shard and not per (key,
  window): the watermark that closes a window is the shard's, so a window's state belongs to
  one shard's sequence of records; a batch then reads its shard's items with one
  strongly consistent ``Query`` on a cold start, and every item is written by one shard's
  batches only, one at a time (Lambda runs one batch per shard at a time with
  ``parallelization: 1``; lanes mode, :mod:`processors.window_lanes`, for more);
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

Sizes: DynamoDB refuses an item over 400 KB. The aggregations keep a window's accumulators
under :data:`~processors.aggregations.STATE_BUDGET` (an item holds them twice: ``acc`` and
``prev``); a window item that would still be too large (a plugin's accumulator) is found
before any write and raised as :class:`StateTooLarge`, and the step applies the batch again
with that window's records dead-lettered. The memory store applies the same rule to the same
item (:func:`window_item`; :class:`MemoryStore`), so ``shardline test`` refuses it too.

Closed items leave by TTL (``expires``: a day after the window closed, or after its end plus
the lateness, or, with :attr:`DynamoDBStore.high_water`, ``max_record_age_s`` plus
:data:`OUTBOX_MARGIN_S` after it closed, whichever is latest); open ones have none.

Here: the window items (:func:`window_item`, read back by :func:`_effective`), the
accumulators' JSON (:func:`encode`), positions and high-water marks as text, the shard
item's parts and the pending logs laid over a partition (:func:`_laid`); the outbox's
encoding is :mod:`processors.window_outbox`'s.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from processors.window_keys import key_json, key_of_json
from processors.window_log import (
    LOG_SK,
    decode_log,
    log_id_parts,
    log_prefix,
    overlay,
    read_head,
)
from processors.window_state import (
    _NO_MARK,
    HW_MAX_PKS,
    HW_UNBOUNDED,
    Mark,
    Position,
    ShardState,
    StateTooLarge,
    WindowKey,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "CLOSED_TTL_S",
    "DEFAULT_MAX_RECORD_AGE_S",
    "OUTBOX_MARGIN_S",
    "bound_hw",
    "decode",
    "encode",
    "hw_marks",
    "hw_stored",
    "hw_text",
    "tombstone",
    "window_item",
]

#: How long a closed window's item stays (at least) after it closed, then TTL deletes it.
CLOSED_TTL_S = 86_400
_SHARD_SK = "#shard"
#: the sort key prefix of a key's high-water item (session windows in lanes mode): ``h#KEY``
_KEY_SK = "h#"
#: How long an outbox entry and a closed window's item outlive the age bound (a margin for
#: clock skew between the function and Lambda's record age): the design's "+ 1 h".
OUTBOX_MARGIN_S = 3600
#: Lambda's default ``max_record_age_s`` (also shardline's: a day), when the plan gives none.
DEFAULT_MAX_RECORD_AGE_S = 86_400
_TOKEN_LEN = 16  # a window item write's token (hex): unique per write, with 64 random bits
_ITEM_LIMIT = 400_000  # a window item's bytes (DynamoDB's limit is 409,600): under it
_REGISTRY = "#shards"  # the item listing the step's shards (partition and sort key)


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


def tombstone(
    pk: dict[str, str], wkey: WindowKey, end: Any, v: str, *, expires: int, token: str
) -> dict[str, Any]:
    """A dead window's tombstone (:meth:`_OneLaneCommit._bury_dead`): its item closed at
    ``v`` (a committed position: the commit's that buries it), without accumulators,
    ``prev`` or high-water, with a closed item's TTL ``expires``; read as any closed item.
    Written unconditionally over the item, or where none is known: it stands where the
    window was, so a stale attempt's write of the window as new loses its condition.
    ``tombstone`` says so to whoever reads the table (an operator, a test); no reader of
    the store looks at it."""
    item = window_item(pk, wkey, end, v, None, None, 0, expires, None, token)
    item["tombstone"] = {"BOOL": True}
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


def max_time_of(shard_item: Mapping[str, Any], lateness: int) -> float | None:
    """A shard item's ``max_time`` as a store whose step has ``lateness`` takes it
    (:func:`max_time_and_lift`)."""
    return max_time_and_lift(shard_item, lateness)[0]


def max_time_and_lift(shard_item: Mapping[str, Any], lateness: int) -> tuple[float | None, float]:
    """A shard item's ``max_time`` as a store whose step has ``lateness`` takes it, and
    its lift (:attr:`ShardState.lift`). Why: a window behind the watermark is closed for
    good (emitted; with one lane its item may be deleted: :func:`processors.
    window_starts.dead`), and a redeploy that raises ``allowed_lateness_s`` must not move
    the watermark (``max_time`` less the lateness) back and open it again (a second,
    partial result for its ``window_id``, review 18). So ``max_time`` is raised by what the
    lateness grew since the commit that wrote it (its ``lateness``): the watermark stays
    where that commit left it and moves on only as event time passes it. What was added
    is kept (``lift``, an upper bound; a record past the raised ``max_time`` makes that
    event time again and the lift 0, review 22), and a lateness lowered later takes it
    back first, up to what it lowers: the watermark then
    moves on only past the event times seen, never back (review 21: taken as event time,
    a lift made in-order records late). An item with no ``lateness`` (an earlier version
    wrote it) is taken as it is.

    >>> item = {"max_time": {"N": "62"}, "lateness": {"N": "0"}}
    >>> max_time_and_lift(item, 60)
    (122.0, 60.0)
    >>> raised = {"max_time": {"N": "122"}, "lateness": {"N": "60"}, "lift": {"N": "60"}}
    >>> max_time_and_lift(raised, 0), max_time_and_lift(raised, 30)
    ((62.0, 0.0), (92.0, 30.0))
    """
    if "max_time" not in shard_item:
        return None, 0.0
    max_time = float(shard_item["max_time"]["N"])
    lift = float(shard_item["lift"]["N"]) if "lift" in shard_item else 0.0
    if "lateness" in shard_item:
        grown: float = lateness - int(shard_item["lateness"]["N"])
        if grown < 0:
            grown = -min(lift, -grown)  # a lowered lateness takes the lift back first
        max_time += grown
        lift += grown
    return max_time, lift


def watermark_of(shard_item: Mapping[str, Any], lateness: int) -> float | None:
    """The watermark the commit that wrote the shard item left: its ``max_time`` less the
    lateness it ran with (its ``lateness``; none stored: the step's). A load takes an
    open-looking item behind it for a window another shard's batch closed (``flushed``);
    one between it and a lowered lateness's watermark is open at the commit, and the
    next batch closes it (emits it), as a record that moved the watermark would."""
    if "max_time" not in shard_item:
        return None
    ran = int(shard_item["lateness"]["N"]) if "lateness" in shard_item else lateness
    return float(shard_item["max_time"]["N"]) - ran


def max_time_attributes(state: ShardState, lateness: int) -> dict[str, dict[str, str]]:
    """The shard item's ``max_time``, the ``lateness`` it is to be read with and its
    ``lift`` (:func:`max_time_and_lift`); every write of ``max_time`` writes them all."""
    if state.max_time is None:
        return {}
    written = {"max_time": {"N": _n(state.max_time)}, "lateness": {"N": str(lateness)}}
    if state.lift:
        written["lift"] = {"N": _n(state.lift)}
    return written


def _head_sets(
    state: ShardState, applied: str, clock: float | None, lateness: int
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """A lanes-mode commit's shard item attributes besides the commit's own (``n``,
    ``rev``, ``logs``, ``pending``): what to set, what to remove."""
    sets: dict[str, dict[str, Any]] = {"applied": {"S": applied}}
    removes = []
    if clock is not None:
        sets["clock"] = {"N": _n(float(clock))}
    sets.update(max_time_attributes(state, lateness))
    if state.max_time is not None and not state.lift:
        removes.append("lift")  # taken back whole (max_time_and_lift)
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
_HEAD_ATTRIBUTES = ("rev", "n", "logs", "pending", "applied", "max_time", "lateness",
                    "lift", "clock", "ancestors", "legacy_applied")  # fmt: skip


def _head_projection(lanes: bool) -> dict[str, Any]:
    """The attributes a warm batch reads of its shard item: the revision (and with one
    lane the scheduled flush's pending ``ticks``, which its commit's ``Put`` carries:
    :func:`ticks_of`), and in lanes mode :data:`_HEAD_ATTRIBUTES`."""
    if not lanes:
        return {"ProjectionExpression": "#r, #t",
                "ExpressionAttributeNames": {"#r": "rev", "#t": "ticks"}}  # fmt: skip
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


def ticks_of(shard_item: Mapping[str, Any] | None) -> dict[int, str]:
    """A shard item's pending flush emissions (``ticks``: T -> ``PARTS/SEQ``;
    :mod:`processors.window_tick_store`), ``{}`` if none."""
    if not shard_item or "ticks" not in shard_item:
        return {}
    return {int(t): v["S"] for t, v in shard_item["ticks"]["M"].items()}


def tick_attributes(ticks: Mapping[int, str], tick_n: int) -> dict[str, dict[str, Any]]:
    """The shard item's attributes that name a scheduled flush's pending emissions and
    its last tick number: written by the tick's commit, and carried by every later
    one-lane ``Put`` of the item (:meth:`DynamoDBStore._shard_item`), else a pending
    emission is lost (design risk 7.4)."""
    out: dict[str, dict[str, Any]] = {}
    if ticks:
        out["ticks"] = {"M": {str(t): {"S": v} for t, v in sorted(ticks.items())}}
    if tick_n:
        out["tick_n"] = {"N": str(tick_n)}
    return out
