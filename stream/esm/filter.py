"""FilterCriteria as the event source mapping applies them: before the function is invoked.

Lambda matches each Kinesis record against the mapping's filter patterns (ORed) and drops
the records that match none; they count as processed, so the checkpoint moves past them.
The patterns use the EventBridge syntax of :mod:`processors.match` on the record with its
``data`` decoded from JSON. Data that is not JSON (not UTF-8, not parseable) never matches a
pattern that names ``data``: AWS drops such records.

The document a pattern sees is ``{"data": <decoded JSON>, "partitionKey", "sequenceNumber",
"approximateArrivalTimestamp", "kinesisSchemaVersion"}``. AWS documents filtering on
``data`` only for Kinesis; the metadata keys are accepted here so that a pattern on them
behaves as it reads, and the plan compiler emits ``data`` patterns only.

KPL aggregated records: on a shared-throughput consumer (which this is, and which our
deploy creates) Lambda sees the aggregate, whose data is the binary KPL format, not JSON,
so a ``data`` pattern drops it with every user record inside. We reproduce that rather than
hide it, count such records apart (``aggregated_dropped``) so the run's summary shows them,
and validation refuses ``filter_pushdown`` on streams marked ``aggregated``.

Patterns exist only for a function whose file says ``filter_pushdown: true``: the local
mapping, ``shardline invoke`` and ``shardline test`` all drop through this class, so a record
AWS would drop before the function never reaches it locally either, and is counted as
filtered by pushdown, apart from what the function's own filters drop.
"""

from __future__ import annotations

from binascii import Error as BinasciiError
from binascii import a2b_base64
from typing import TYPE_CHECKING, Any

import orjson

from processors.match import compile_pattern
from stream.event import KPL_MAGIC

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from stream.event import KinesisEventRecord

__all__ = ["RecordFilter"]

_NOT_JSON: Any = object()


def _names_data(pattern: Mapping[str, Any]) -> bool:
    """Whether a pattern looks at ``data``, at its top level or inside a top-level ``$or``."""
    if "data" in pattern:
        return True
    alternatives = pattern.get("$or")
    if isinstance(alternatives, list):
        return any(isinstance(alt, dict) and _names_data(alt) for alt in alternatives)
    return False


class RecordFilter:
    """The mapping's filter patterns, compiled once.

    Args:
        patterns: Lambda filter patterns, e.g. ``[{"data": {"type": ["click"]}}]``; an
            empty list keeps every record.

    Raises:
        processors.match.PatternError: a pattern is invalid (the path says where).

    >>> keep = RecordFilter([{"data": {"type": ["click"]}}])
    >>> keep.matches(b'{"type": "click"}', "k", "1", 0.0), keep.matches(b"not json", "k", "2", 0.0)
    (True, False)
    """

    def __init__(self, patterns: Iterable[Mapping[str, Any]]) -> None:
        compiled: list[tuple[Callable[[Any], bool], bool]] = []
        for pattern in patterns:
            compiled.append((compile_pattern(pattern), _names_data(pattern)))
        self._patterns = tuple(compiled)

    @property
    def active(self) -> bool:
        """Whether there is any pattern (else every record is kept)."""
        return bool(self._patterns)

    def keep_entries(self, entries: Sequence[KinesisEventRecord]) -> list[KinesisEventRecord]:
        """The entries of a Lambda event that pass, in order (what AWS would invoke with).

        >>> keep = RecordFilter([{"data": {"type": ["click"]}}])
        >>> entry = {"kinesis": {"data": "bm90IGpzb24=", "partitionKey": "k",
        ...          "sequenceNumber": "1", "approximateArrivalTimestamp": 0.0}}
        >>> keep.keep_entries([entry])
        []
        """
        if not self._patterns:
            return list(entries)
        kept = []
        for entry in entries:
            kinesis = entry["kinesis"]
            try:
                data = a2b_base64(kinesis["data"], strict_mode=True)
            except (BinasciiError, TypeError, ValueError):
                data = b""  # not base64: nothing AWS could decode as JSON either
            key, seq = kinesis.get("partitionKey", ""), kinesis.get("sequenceNumber", "")
            if self.matches(data, key, seq, kinesis.get("approximateArrivalTimestamp") or 0.0):
                kept.append(entry)
        return kept

    @staticmethod
    def aggregated(data: bytes) -> bool:
        """Whether ``data`` is a KPL aggregate (which a ``data`` pattern never matches)."""
        return data.startswith(KPL_MAGIC)

    def matches(
        self, data: bytes, partition_key: str, sequence_number: str, arrival: float
    ) -> bool:
        """Whether a record passes: it matches at least one pattern (or there is none)."""
        if not self._patterns:
            return True
        try:
            decoded = orjson.loads(data)
        except orjson.JSONDecodeError:
            decoded = _NOT_JSON
        doc: dict[str, Any] = {
            "partitionKey": partition_key,
            "sequenceNumber": sequence_number,
            "approximateArrivalTimestamp": arrival,
            "kinesisSchemaVersion": "1.0",
        }
        if decoded is not _NOT_JSON:
            doc["data"] = decoded
        for match, names_data in self._patterns:
            if names_data and decoded is _NOT_JSON:
                continue
            if match(doc):
                return True
        return False
