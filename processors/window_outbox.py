"""What records yielded, as the DynamoDB window table keeps it for their redelivery.

With one lane, the shard item's outbox (JSON, in parts ``#outbox#REV#I`` when too large);
in lanes mode, one outbox entry item per record that yielded results or a state-dependent
error (``~o#POS``: :func:`outbox_sk`). The table's layout: :mod:`processors.window_items`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from processors.aggregations import NotANumber, ValueTooLarge
from processors.window_items import _pos, _pos_text
from processors.window_state import Outcome, Position, TooManyPartitionKeys, WindowRecordError

if TYPE_CHECKING:
    from collections.abc import Callable

    from stream.exceptions import RecordError

__all__ = ["outbox_sk"]

#: The outbox entries' sort keys: ``~o#POS`` (:func:`outbox_sk`). Why ``~o#`` and not the
#: design's ``o#``: ``o#`` sorts between the shard item and the window items (``w#``), so a
#: cold start's ``Query`` of the partition would read every entry of the last day; ``~``
#: sorts after ``w``, and the cold start reads ``window < "~"`` (:meth:`DynamoDBStore._query`).
_OUTBOX_SK = "~o#"
_PART = "#outbox#"  # the parts of an outbox too large for the shard item: #outbox#REV#I
#: Outbox JSON text (ASCII) kept in the shard item itself; a longer one goes in parts
_OUTBOX_INLINE = 300_000
_OUTBOX_PART = 350_000  # the text of one part item (DynamoDB: at most 400 KB an item)


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
    entries = [
        {"at": _pos_text(position), **_entry(outcome)} for position, outcome in outbox.items()
    ]
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
    return json.dumps(_entry(outcome), separators=(",", ":"))


def _entry(outcome: Outcome) -> dict[str, Any]:
    """An outcome as JSON data, in the shard item's outbox and in an outbox entry item."""
    entry: dict[str, Any] = {}
    if outcome.results:
        entry["results"] = list(outcome.results)
    if outcome.late:
        entry["late"] = True
    if outcome.error is not None:
        entry["error"] = [type(outcome.error).__name__, str(outcome.error)]
    return entry


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


#: the record errors an outbox keeps, by name, each built back from its message (others
#: come back as WindowRecordError): a redelivered record's dead letter names the same error
_RECORD_ERRORS: dict[str, Callable[[str], RecordError]] = {
    "NotANumber": NotANumber,
    "ValueTooLarge": ValueTooLarge,
    "TooManyPartitionKeys": TooManyPartitionKeys.from_message,
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
