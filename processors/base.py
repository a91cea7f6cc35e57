"""The processor contract.

A processor is a callable that takes a record and returns:

* the record itself (kept, possibly with its document changed in place: the chain marks
  every record a step that is not a tracked built-in returns as changed, so its bytes are
  re-encoded from the document when a sink needs them, ``record.touch()`` or not),
* another record (a replacement: make it with ``record.derive(doc)``; what a plugin
  returns for a record stands at that record's source position, so the chain gives a
  record built with ``Record(...)`` that position too: keyed sinks name items by it),
* a list of records (fan-out; an empty list drops),
* or ``None`` (dropped, e.g. by a filter).

It raises :class:`~stream.exceptions.RetryableError` for a transient failure (the record is
delivered again) and :class:`~stream.exceptions.RecordError` when the record is bad (it is
dead-lettered with the error). Anything else is dead-lettered too, unless it is not the
record's fault (:mod:`stream.faults`): an AWS infrastructure error, or the same exception
type raised for every record of the batch that reached the step (a broken step), which
are reported for retry instead.

Batch-aware processors may also define ``prepare(records)``: the chain calls it once per
batch with exactly the records that reach the step, before calling the step on each, so a
lookup can fetch every distinct key of the batch in one call.

Configurable processors are classes whose ``__init__`` validates and precompiles (once,
at Lambda init) and whose ``__call__`` stays tiny.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, TypeAlias, runtime_checkable

if TYPE_CHECKING:
    from stream.records import Record

__all__ = ["BatchAware", "Processor", "ProcessorResult"]

ProcessorResult: TypeAlias = "Record | list[Record] | None"
Processor: TypeAlias = Callable[["Record"], ProcessorResult]


@runtime_checkable
class BatchAware(Protocol):
    """A processor that wants to see the whole batch first."""

    def prepare(self, records: Sequence[Record]) -> None:
        """Called once per batch with the records that reach this step, in shard order."""
