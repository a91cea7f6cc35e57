"""An in-memory sink with injectable failures: a model of a keyed store, for tests.

It keeps the latest document per key (like DynamoDB ``latest`` or OpenSearch with an id)
and a log of every application, so tests can check idempotency (state after replays equals
one clean pass) and per-key order (the log never applies record n+1 of a key before n).
A ``fail`` callback decides per record and attempt whether the write fails, retryably or
permanently, so hypothesis can explore failure patterns.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from sinks.base import OK, Outcome, Sink, permanent, retryable
from stream.records import Record

__all__ = ["MemorySink"]

#: fail(record, attempt) -> None to succeed, "retryable" or "permanent" to fail.
FailFn = Callable[[Record, int], str | None]


class MemorySink(Sink):
    """Applies records to a dict keyed by (partition key, position) or by partition key.

    Args:
        name: the sink's name.
        fail: decides failures; ``attempt`` counts earlier writes of the same position.
        max_batch: items per simulated backend call; items of one call fail independently,
            as in BatchWriteItem or a bulk request.
    """

    shares_records: ClassVar[bool] = True  # never edits a record: no copies (sinks.base)
    per_key_safe: ClassVar[bool] = False
    concurrent_calls: ClassVar[bool] = True  # one lock per sink: calls apply one at a time

    def __init__(self, name: str, fail: FailFn | None = None, max_batch: int = 25) -> None:
        super().__init__(name)
        self.max_batch = max_batch  # type: ignore[misc]  # per instance, for tests
        self._fail = fail
        self.attempts: dict[tuple[str, str, int, str], int] = {}
        self.log: list[tuple[str, tuple[int, int]]] = []
        self.latest: dict[str, tuple[tuple[int, int], Any]] = {}
        self.calls = 0
        self._lock = threading.Lock()

    def _write(self, items: Sequence[Record]) -> list[Outcome]:
        with self._lock:  # the calls of a wave run in several threads (stream.overlap)
            return self._apply(items)

    def _apply(self, items: Sequence[Record]) -> list[Outcome]:
        self.calls += 1
        out: list[Outcome] = []
        for item in items:
            where = (item.shard_id, item.sequence_number, item.sub_sequence_number, item.part)
            attempt = self.attempts.get(where, 0)
            self.attempts[where] = attempt + 1
            verdict = self._fail(item, attempt) if self._fail else None
            if verdict == "retryable":
                out.append(retryable("injected throttle", "Throttled"))
                continue
            if verdict == "permanent":
                out.append(permanent("injected validation error", "ValidationError"))
                continue
            try:
                data = item.data
            except (TypeError, ValueError) as exc:  # as the real sinks: cannot encode it
                out.append(permanent(f"cannot encode the document: {exc}", "EncodeError"))
                continue
            position = item.position
            self.log.append((item.partition_key, position))
            current = self.latest.get(item.partition_key)
            if current is None or current[0] <= position:
                self.latest[item.partition_key] = (position, data)
            out.append(OK)
        return out
