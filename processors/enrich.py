"""The ``enrich`` processor: add static fields, a processing timestamp, a DynamoDB item.

``set`` adds fields (overwriting); ``timestamp`` names a field that receives the time the
batch was processed, ISO-8601 UTC with milliseconds. The timestamp is taken once per batch
in ``prepare`` (all records of one invocation are processed at one time, and formatting a
date per record would cost more than the rest of the step).

``lookup`` (:mod:`processors.lookup`) adds the item of a DynamoDB table keyed by a record
field. ``Enrich(lookup=...)`` makes an :class:`EnrichLookup`, a subclass: the lookup runs
first, then ``set``, then ``timestamp``. Lookup first, because a record that ``on_miss``
drops or dead-letters should not be worked on, and reaches the dead-letter sink as it came
in; and because the file's own static values then have the last word: a ``set`` field
named like ``into`` overrides the looked-up item. The subclass keeps ``Enrich`` itself, the
``set``/``timestamp`` hot path, exactly as fast as before, and keeps steps with a lookup out
of :mod:`processors.fused` (which fuses only exact built-ins: it writes ``set`` and
``timestamp`` inline and knows nothing of lookups).
"""

from __future__ import annotations

import copy
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from processors.lookup import Lookup
    from stream.records import Record

__all__ = ["Enrich", "EnrichLookup", "iso_timestamp"]


def iso_timestamp(epoch: float) -> str:
    """ISO-8601 UTC with milliseconds, as CloudWatch and OpenSearch read it.

    >>> iso_timestamp(1767225600.5)
    '2026-01-01T00:00:00.500Z'
    """
    stamp = datetime.fromtimestamp(epoch, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


class Enrich:
    """Add fields to each record's JSON object.

    Args:
        set: fields to set (static values; nested objects and lists are copied per record
            so a later step changing one record cannot change another).
        timestamp: the name of a field to receive the processing time.
        lookup: the options of :class:`processors.lookup.Lookup` (or a ``Lookup``): makes
            an :class:`EnrichLookup` instead.
        now: the clock, injectable for tests.
    """

    __slots__ = ("_mutable", "_now", "_scalars", "_stamp", "timestamp")

    def __new__(
        cls,
        set: Mapping[str, Any] | None = None,  # the pipeline file's word
        timestamp: str | None = None,
        lookup: Mapping[str, Any] | Lookup | None = None,
        now: Callable[[], float] = time.time,
    ) -> Enrich:
        """An ``EnrichLookup`` when there is a lookup (as ``Path()`` makes a ``PosixPath``),
        so that the registry, which builds ``Enrich(**args)``, needs no special case."""
        return object.__new__(EnrichLookup if lookup is not None and cls is Enrich else cls)

    def __init__(
        self,
        set: Mapping[str, Any] | None = None,  # the pipeline file's word
        timestamp: str | None = None,
        lookup: Mapping[str, Any] | Lookup | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        if lookup is not None and not isinstance(self, EnrichLookup):
            msg = f"{type(self).__name__} takes no lookup: subclass EnrichLookup for that"
            raise ValueError(msg)
        if not set and not timestamp and lookup is None:
            msg = (
                "enrich needs `set` (fields to add), `timestamp` (a field name) or `lookup` "
                "(a DynamoDB table)"
            )
            raise ValueError(msg)
        fields = dict(set or {})
        self._scalars = {k: v for k, v in fields.items() if not isinstance(v, dict | list)}
        self._mutable = {k: v for k, v in fields.items() if isinstance(v, dict | list)}
        self.timestamp = timestamp
        self._now = now
        self._stamp = ""

    @property
    def fields(self) -> dict[str, Any]:
        """What ``set`` writes, in writing order (plain values, then copied objects/lists)."""
        return {**self._scalars, **self._mutable}

    def stamp(self) -> str:
        """The value ``timestamp`` receives: the batch's time once ``prepare`` has run."""
        return self._stamp or iso_timestamp(self._now())

    def prepare(self, records: Sequence[Record]) -> None:
        """Take the batch's processing time once."""
        if self.timestamp:
            self._stamp = iso_timestamp(self._now())

    def __call__(self, record: Record) -> Record:
        doc = record.json
        if type(doc) is not dict:
            doc = record.as_dict()  # raises DecodeError with the record's position
        doc.update(self._scalars)
        if self._mutable:
            for key, value in self._mutable.items():
                doc[key] = copy.deepcopy(value)
        if self.timestamp:
            doc[self.timestamp] = self._stamp or iso_timestamp(self._now())
        record.set_json(doc)
        return record


class EnrichLookup(Enrich):
    """``enrich`` with a ``lookup``: the lookup first, then ``set`` and ``timestamp``.

    Batch-aware through the lookup: ``prepare`` fetches the batch's distinct keys (and takes
    the timestamp). ``Enrich(lookup=...)`` returns one of these.

    Attributes:
        lookup: the lookup processor; its cache lives as long as this step (the warm
            Lambda environment).
    """

    __slots__ = ("_fields", "lookup")

    def __init__(
        self,
        set: Mapping[str, Any] | None = None,  # the pipeline file's word
        timestamp: str | None = None,
        lookup: Mapping[str, Any] | Lookup | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        from processors.lookup import Lookup  # noqa: PLC0415  # only pipelines with lookups

        if lookup is None:
            msg = "EnrichLookup needs `lookup` (a DynamoDB table); use Enrich without one"
            raise ValueError(msg)
        super().__init__(set, timestamp, lookup, now)
        self.lookup = lookup if isinstance(lookup, Lookup) else Lookup(**lookup)
        self._fields = bool(set) or bool(timestamp)

    def prepare(self, records: Sequence[Record]) -> None:
        """Fetch the batch's distinct keys, then take the batch's processing time."""
        self.lookup.prepare(records)
        super().prepare(records)

    def __call__(self, record: Record) -> Record | None:  # type: ignore[override]  # may drop
        kept = self.lookup(record)
        if kept is None or not self._fields:
            return kept
        return super().__call__(kept)
