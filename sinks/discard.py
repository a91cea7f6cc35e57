"""The ``discard`` sink: accepts everything and writes nothing (Vector's ``blackhole``).

For benchmarks and for dry runs of a chain: it measures the chain and the batch fold alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from sinks.base import OK, Outcome, Sink

if TYPE_CHECKING:
    from collections.abc import Sequence

    from stream.records import Record

__all__ = ["DiscardSink"]


class DiscardSink(Sink):
    """Counts the records it is given and drops them."""

    shares_records: ClassVar[bool] = True  # never edits a record: no copies (sinks.base)
    max_batch: ClassVar[int] = 1_000_000
    per_key_safe: ClassVar[bool] = True  # applies nothing, so nothing can be out of order

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.count = 0

    def _write(self, items: Sequence[Record]) -> list[Outcome]:
        self.count += len(items)
        return [OK] * len(items)
