"""The ``enrich`` processor: add static fields and a processing timestamp.

``set`` adds fields (overwriting); ``timestamp`` names a field that receives the time the
batch was processed, ISO-8601 UTC with milliseconds. The timestamp is taken once per batch
in ``prepare`` (all records of one invocation are processed at one time, and formatting a
date per record would cost more than the rest of the step). The DynamoDB ``lookup`` comes
with the sinks.
"""

from __future__ import annotations

import copy
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from stream.records import Record

__all__ = ["Enrich", "iso_timestamp"]


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
        lookup: reserved for the DynamoDB lookup (not in this version).
        now: the clock, injectable for tests.
    """

    __slots__ = ("_mutable", "_now", "_scalars", "_stamp", "timestamp")

    def __init__(
        self,
        set: Mapping[str, Any] | None = None,  # the pipeline file's word
        timestamp: str | None = None,
        lookup: Mapping[str, Any] | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        if lookup is not None:
            msg = "enrich.lookup is not available in this version of shardline"
            raise ValueError(msg)
        if not set and not timestamp:
            msg = "enrich needs `set` (fields to add) or `timestamp` (a field name)"
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
