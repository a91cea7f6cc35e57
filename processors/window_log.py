"""The window state's redo log in lanes mode (issue 16, slice S4a; design
``parallel-windows.md`` §4, §5.1): its items, its encoding, the commit that makes it
count, and the roll-forward that copies it into the items.

Why a log: with ``parallelization`` above 1 several lanes (and, on a bad day, a zombie
invocation or a twin of one batch) write one shard's items. Conditional writes per item
(main's ``v``/``prev``) cannot order them: the design's model loses records with them,
even with one lane when two invocations overlap (§9.3). So a batch that changes
something writes the *full new content* of every item it changes (window items and its
outbox entries) in a log first (unconditional ``PutItem`` of its parts, ``#log#N#ID#I``),
then commits with ONE ``UpdateItem`` of the shard item conditional on the commit number
``n`` it read (``n`` = seen + 1, the log named in ``logs`` and added to ``pending``). Only
then are the items written (rolled forward), each on the condition that its ``n`` is older
(a newer commit's roll-forward is never undone), and the log leaves ``pending``. Readers
lay the pending logs over the items (:func:`overlay`): what a commit says is visible from
its commit on, whatever happened to its roll-forward.

This module holds what is pure (sort keys, parts, the requests, the overlay); the store
(:class:`processors.window_store.DynamoDBStore`) sends them.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "KEEP_LOGS",
    "LOG_PART",
    "LOG_SK",
    "commit_request",
    "decode_log",
    "encode_log",
    "kept_logs",
    "log_id_parts",
    "log_prefix",
    "log_puts",
    "overlay",
    "read_head",
    "roll_owned",
    "roll_requests",
]

#: The sort keys of log parts: ``#log#N#ID#I`` (N zero-padded: they sort by commit).
#: ``#log#`` sorts before ``#shard`` and the window items, so a cold start's ``Query`` of
#: the partition reads them with the shard item, in one go.
LOG_SK = "#log#"
#: The logs a shard item keeps named (``logs``) beyond the pending ones: the last K
#: commits', for catching up (slice S4b: a process at most K commits behind reads the
#: logs between instead of the partition; :meth:`DynamoDBStore._catch_up`).
KEEP_LOGS = 8
#: The text of one log part (DynamoDB: at most 400 KB an item; the keys take the rest).
LOG_PART = 350_000
_N_WIDTH = 20  # digits of N in a log part's sort key


def log_prefix(n: int, log_id: str) -> str:
    """The sort key prefix of the parts of commit ``n``'s log ``log_id``.

    >>> log_prefix(42, "ab")
    '#log#00000000000000000042#ab#'
    """
    return f"{LOG_SK}{n:0{_N_WIDTH}d}#{log_id}#"


def log_id_parts(named: str) -> tuple[str, int]:
    """A ``logs`` entry's value (``ID/PARTS``) as (id, number of parts).

    >>> log_id_parts("ab/2")
    ('ab', 2)
    """
    log_id, _, parts = named.rpartition("/")
    return log_id, int(parts)


def encode_log(items: Iterable[Mapping[str, Any]]) -> list[str]:
    """The log's JSON text (the items as DynamoDB's wire format gives them), cut in parts
    of :data:`LOG_PART` characters."""
    text = json.dumps(list(items), separators=(",", ":"))
    return [text[i : i + LOG_PART] for i in range(0, len(text), LOG_PART)] or ["[]"]


def decode_log(parts: Mapping[int, str], count: int) -> list[dict[str, Any]]:
    """The items back from a log's parts (``KeyError``: a part is missing)."""
    items: list[dict[str, Any]] = json.loads("".join(parts[i] for i in range(count)))
    return items


def log_puts(
    table: str, pk: Mapping[str, str], n: int, log_id: str, chunks: list[str]
) -> list[dict[str, Any]]:
    """The ``PutItem`` requests of a log's parts: unconditional (the id is new per attempt,
    so nothing else ever writes these keys), no TTL (a pending log must outlive any pause
    of the shard; a log no ``logs`` entry names any more is deleted by the commit that
    dropped it, or by the attempt that wrote it when its commit lost)."""
    prefix = log_prefix(n, log_id)
    return [
        {
            "TableName": table,
            "Item": {"shard": dict(pk), "window": {"S": f"{prefix}{i:03d}"}, "log": {"S": chunk}},
        }
        for i, chunk in enumerate(chunks)
    ]


def read_head(item: Mapping[str, Any] | None) -> tuple[int, dict[int, str], set[int]]:
    """A shard item's commit number, ``logs`` (N -> ``ID/PARTS``) and ``pending``; a shard
    item with no ``n`` (none, or one main's protocol wrote) is at 0."""
    if item is None or "n" not in item:
        return 0, {}, set()
    logs = {int(k): v["S"] for k, v in item.get("logs", {}).get("M", {}).items()}
    pending = {int(p) for p in item.get("pending", {}).get("NS", ())}
    return int(item["n"]["N"]), logs, pending


def kept_logs(
    logs: Mapping[int, str], pending: Iterable[int], n: int, named: str
) -> dict[int, str]:
    """The ``logs`` map commit ``n`` writes: its own log (``named``), the last
    :data:`KEEP_LOGS` commits' and every one still pending.

    >>> kept_logs({1: "a/1", 5: "b/1", 9: "c/1"}, {1}, 10, "d/1")
    {1: 'a/1', 5: 'b/1', 9: 'c/1', 10: 'd/1'}
    >>> sorted(kept_logs({1: "a/1", 2: "b/1"}, (), 10, "d/1"))
    [10]
    """
    still = set(pending)
    out = {m: v for m, v in logs.items() if m > n - KEEP_LOGS or m in still}
    out[n] = named
    return out


def commit_request(  # noqa: PLR0917  # the shard item's parts, each its own attribute
    table: str,
    pk: Mapping[str, str],
    seen: int,
    rev: str | None,
    new_rev: str,
    sets: Mapping[str, Mapping[str, Any]],
    logs: Mapping[int, str] | None,
    removes: Iterable[str] = (),
    *,
    once: Mapping[str, Mapping[str, Any]] | None = None,
    childless: bool = False,
) -> dict[str, Any]:
    """The commit: one ``UpdateItem`` of the shard item on the commit number read
    (``seen``; 0: none yet). ``sets`` are the other attributes (``applied``,
    ``max_time``, ...); ``logs`` the whole map (:func:`kept_logs`), safe to set whole
    since only a commit changes it, and this one holds only at ``seen``; ``None``: a
    commit with no log. ``pending`` grows by ``ADD`` and shrinks by ``DELETE`` (set
    operations commute with the roll-forwards of other commits). ``childless``: a quiet
    shard's close by another shard's batch, which must not pass once a reshard's child
    marked the shard (``children``; the mark is conditional on ``n`` and moves nothing,
    so the two exclude each other: slice S5). ``once``: attributes set only where the
    item has none yet (``if_not_exists``: a conversion's ``legacy_applied``, which no
    later commit may move).

    Nothing is decided on ``rev`` past the first lanes commit (``seen`` > 0), but every
    commit still writes a new one (``new_rev``): the one-lane protocol's writes are
    conditional on it, and a one-lane invocation still running while the mapping turns
    lanes on (a ``parallelization`` change) must lose its condition rather than
    overwrite the shard item. The first lanes commit over a shard item the one-lane
    protocol wrote (``seen`` 0, ``rev`` given) is conditional on that ``rev`` for the
    same reason the other way round: such an item has no ``n`` to decide on."""
    n = seen + 1
    names = {"#n": "n", "#r": "rev"}
    values: dict[str, Any] = {":n": {"N": str(n)}, ":r": {"S": new_rev}}
    assign = ["#n = :n", "#r = :r"]
    for i, (attribute, value) in enumerate(sorted(sets.items())):
        names[f"#a{i}"] = attribute
        values[f":a{i}"] = dict(value)
        assign.append(f"#a{i} = :a{i}")
    for i, (attribute, value) in enumerate(sorted((once or {}).items())):
        names[f"#o{i}"] = attribute
        values[f":o{i}"] = dict(value)
        assign.append(f"#o{i} = if_not_exists(#o{i}, :o{i})")
    expression = "SET " + ", ".join(assign)
    if logs is not None:
        names["#l"] = "logs"
        names["#p"] = "pending"
        values[":l"] = {"M": {str(m): {"S": v} for m, v in logs.items()}}
        values[":p"] = {"NS": [str(n)]}
        expression = expression.replace("SET ", "SET #l = :l, ", 1) + " ADD #p :p"
    gone = sorted(set(removes))
    if gone:
        for i, attribute in enumerate(gone):
            names[f"#x{i}"] = attribute
        expression += " REMOVE " + ", ".join(f"#x{i}" for i in range(len(gone)))
    if rev is None:
        condition = "attribute_not_exists(#w)"
        names["#w"] = "window"
    elif seen == 0:
        condition = "attribute_not_exists(#n) AND #r = :seenr"
        values[":seenr"] = {"S": rev}
    else:
        condition = "#n = :seen"
        values[":seen"] = {"N": str(seen)}
    if childless:
        condition += " AND attribute_not_exists(#c)"
        names["#c"] = "children"
    return {
        "TableName": table,
        "Key": {"shard": dict(pk), "window": {"S": "#shard"}},
        "UpdateExpression": expression,
        "ConditionExpression": condition,
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }


def roll_requests(table: str, n: int, items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The roll-forward of commit ``n``'s log: a ``PutItem`` of each item. A window item
    only if the one in the table is older (``attribute_not_exists(n) OR n < :n``: a lost
    condition is a newer commit's write, which must stay); an outbox entry (``~o#``, whose
    ``n`` counts its parts) as it is: a position's outcome is written by the one commit
    that applied it, so every write of it holds the same content.

    A window item that a reshard's child claimed (``owner``) is not this ``PutItem``'s to
    replace: the claim is no part of the commit's content, and a put dropped it (another
    child then claimed the window too: counted twice; slice S5). Such an item loses the
    put's condition and gets :func:`roll_owned` instead."""
    out = []
    for item in items:
        request: dict[str, Any] = {"TableName": table, "Item": dict(item)}
        if not item["window"]["S"].startswith("~"):
            request["ConditionExpression"] = (
                "(attribute_not_exists(#n) OR #n < :n) AND attribute_not_exists(#o)"
            )
            request["ExpressionAttributeNames"] = {"#n": "n", "#o": "owner"}
            request["ExpressionAttributeValues"] = {":n": {"N": str(n)}}
        out.append(request)
    return out


#: A window item's attributes that a log entry may lack where the item has them (a close
#: drops ``acc``): the roll-forward of a claimed item removes them as a put would.
_CONTENT = ("acc", "closed", "hw")


def roll_owned(request: Mapping[str, Any]) -> dict[str, Any]:
    """The roll-forward of a window item (a :func:`roll_requests` put) as an
    ``UpdateItem`` that keeps what a reshard's child set on it (``owner``, and the TTL of
    its claim when the entry has none), on the same condition on ``n``.

    >>> put = roll_requests("t", 5, [{"shard": {"S": "p"}, "window": {"S": "w#0#a"},
    ...                               "n": {"N": "5"}, "acc": {"S": "[1]"}}])[0]
    >>> roll_owned(put)["UpdateExpression"]
    'SET #a0 = :a0, #n = :a1 REMOVE #x0, #x1'
    """
    item = request["Item"]
    names = {"#n": "n"}
    values: dict[str, Any] = {":n": request["ExpressionAttributeValues"][":n"]}
    sets = [a for a in sorted(item) if a not in {"shard", "window"}]
    assign = []
    for i, attribute in enumerate(sets):
        name = "#n" if attribute == "n" else f"#a{i}"
        names[name] = attribute
        values[f":a{i}"] = item[attribute]
        assign.append(f"{name} = :a{i}")
    expression = "SET " + ", ".join(assign)
    gone = [a for a in _CONTENT if a not in item]
    for i, attribute in enumerate(gone):
        names[f"#x{i}"] = attribute
    if gone:
        expression += " REMOVE " + ", ".join(f"#x{i}" for i in range(len(gone)))
    return {
        "TableName": request["TableName"],
        "Key": {"shard": item["shard"], "window": item["window"]},
        "UpdateExpression": expression,
        "ConditionExpression": "attribute_not_exists(#n) OR #n < :n",
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }


def overlay(
    items: Mapping[str, dict[str, Any]], logs: Iterable[tuple[int, list[dict[str, Any]]]]
) -> dict[str, dict[str, Any]]:
    """The items (by sort key) as the commits read see them: each pending log's entry laid
    over the table's item when its commit is newer than the item's ``n`` (an item with no
    ``n``: older than any log), keeping the item's ``owner`` (a reshard's child's claim:
    no part of a commit, as :func:`roll_owned` keeps it). ``logs``: (N, its items), any
    order.

    >>> old = {"w#1": {"window": {"S": "w#1"}, "n": {"N": "3"}, "acc": {"S": "old"}}}
    >>> new = {"window": {"S": "w#1"}, "n": {"N": "4"}, "acc": {"S": "new"}}
    >>> overlay(old, [(4, [new])])["w#1"]["acc"]["S"]
    'new'
    >>> overlay({"w#1": new}, [(3, [old["w#1"]])])["w#1"]["acc"]["S"]
    'new'
    """
    out = dict(items)
    for n, entries in sorted(logs, key=lambda log: log[0]):
        for entry in entries:
            sk = entry["window"]["S"]
            held = out.get(sk)
            if held is None or _item_n(held) < n:
                out[sk] = (
                    entry
                    if held is None or "owner" not in held
                    else (entry | {"owner": held["owner"]})
                )
    return out


def _item_n(item: Mapping[str, Any]) -> int:
    """The commit that wrote a window item (0: main's protocol, or none); an outbox
    entry's ``n`` counts its parts, and a log never holds an older entry of a position."""
    if item["window"]["S"].startswith("~"):
        return 0
    return int(item["n"]["N"]) if "n" in item else 0
