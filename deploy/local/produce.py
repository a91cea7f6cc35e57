"""``shardline produce``: JSON lines from a file or stdin onto a stream, through the producer.

Each non-blank line must be a JSON document; it is sent as it is written (the bytes of the
line), so what a consumer decodes is exactly what the file holds. The partition key is a
field of the document (``--key``) or, without one, the line number, which spreads records
evenly over the shards. A line that is not JSON, or lacks the key field, is reported with
its line number and skipped; the exit status says so. ``--rate`` paces the records per
second, for load tests. With a contract (``--schema FILE``, the producer's ``schema=``) a
line that breaks it is refused, never sent, and reported with its line number and the
reason. Records that still fail after the producer's retries are counted and reported,
never silently dropped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from deploy.errors import DeployError
from stream.producer import CONTRACT_ERROR

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from stream.producer import Producer, ProducerStats

__all__ = ["PartitionKeyError", "ProduceReport", "produce_lines"]

#: Records between flushes: progress and pacing stay smooth, calls stay full (500 entries).
FLUSH_EVERY = 2000


class PartitionKeyError(DeployError, ValueError):
    """A line's document has no usable partition key field (the line is skipped)."""


@dataclass
class ProduceReport:
    """What a run did."""

    lines: int = 0
    malformed: list[tuple[int, str]] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)
    """Lines that break the producer's contract (``schema=``): never sent."""
    seconds: float = 0.0
    stats: ProducerStats | None = None

    @property
    def ok(self) -> bool:
        """Whether every line was valid and every record written."""
        return not self.malformed and not self.failed and not self.refused


def _partition_key(doc: Any, key: str | None, line_no: int) -> str:
    if key is None:
        return str(line_no)
    value = doc.get(key) if isinstance(doc, dict) else None
    if value is None or isinstance(value, dict | list | bool) or value == "":
        msg = f"no usable partition key field {key!r} (got {value!r})"
        raise PartitionKeyError(msg)
    return str(value)


def produce_lines(
    lines: Iterable[bytes],
    producer: Producer,
    *,
    key: str | None = None,
    rate: float | None = None,
    progress: Callable[[int], None] | None = None,
    now: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ProduceReport:
    """Put every valid line, flushing every ``FLUSH_EVERY`` records and at the end.

    Args:
        lines: the input, line by line (bytes, newline included or not).
        producer: where records go; the caller owns it.
        key: the document field holding the partition key.
        rate: records per second at most (``None``: as fast as the stream takes them).
        progress: called with the bytes consumed after each line.
        now: clock for pacing and the report.
        sleep: for pacing.
    """
    report = ProduceReport()
    started = now()
    index_to_line: dict[int, int] = {}
    sent = 0

    def flush() -> None:
        result = producer.flush()
        for r in result.failed:
            line_no = index_to_line.get(r.index, 0)
            if r.error == CONTRACT_ERROR:
                report.refused.append((line_no, r.reason))
            else:
                report.failed.append((line_no, f"{r.error}: {r.reason}"))
        index_to_line.clear()

    for line_no, raw in enumerate(lines, start=1):
        report.lines = line_no
        if progress is not None:
            progress(len(raw))
        data = raw.strip()
        if not data:
            continue
        try:
            doc = orjson.loads(data)
            pk = _partition_key(doc, key, line_no)
            index = producer.put(data, pk)
        except ValueError as exc:  # not JSON, no key, or refused by put() (too large...)
            report.malformed.append((line_no, str(exc)))
            continue
        index_to_line[index] = line_no
        sent += 1
        if rate:
            ahead = sent / rate - (now() - started)
            if ahead > 0:
                sleep(ahead)
        if sent % FLUSH_EVERY == 0 or (rate and sent % max(1, int(rate)) == 0):
            flush()
    flush()
    report.seconds = now() - started
    report.stats = producer.totals
    return report
