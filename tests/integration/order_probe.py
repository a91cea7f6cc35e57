"""A processor that writes down what it is given, so that the order in which a run processes
records can be read back from another process (a ``shardline run`` killed with SIGKILL).

Loaded by a pipeline like any processor given by import path::

    processors:
      - use: "tests.integration.order_probe:Probe"
        with: {path: /tmp/probe.tsv}

Each record becomes one line ``partition_key<TAB>n<TAB>shard<TAB>sequence`` (``n`` is the
record's ``field``, ``-`` when absent). A batch's lines are appended in one ``write`` on a file
opened with ``O_APPEND`` when the chain hands the batch to the step (``prepare``), before any
sink writes, so lines reach the file in delivery order, batches of several processes never
interleave inside a line, and a process killed at any time leaves at most a torn last line
(:func:`read_probe` skips it). Redeliveries are written again: the file is the delivery log.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from stream.records import Record

__all__ = ["Probe", "ProbeLine", "read_probe"]


@dataclass(frozen=True, slots=True)
class ProbeLine:
    """One delivery of one record, as the probe wrote it."""

    partition_key: str
    n: str
    shard_id: str
    sequence_number: str


class Probe:
    """Keeps every record; logs each batch it sees to ``path``.

    Args:
        path: the log file (created when missing, appended to).
        field: the JSON field written as ``n`` (the producer's per-record counter).
    """

    def __init__(self, path: str, field: str = "n") -> None:
        self.path = path
        self.field = field

    def prepare(self, records: Sequence[Record]) -> None:
        """Append the batch's lines in one write: the batch is logged whole or not at all
        (bar a torn last line when the process dies mid-write)."""
        lines = "".join(
            f"{r.partition_key}\t{self._n(r)}\t{r.shard_id}\t{r.sequence_number}\n" for r in records
        ).encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(lines)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)

    def __call__(self, record: Record) -> Record:
        return record

    def _n(self, record: Record) -> str:
        doc = record.json
        value = doc.get(self.field, "-") if isinstance(doc, dict) else "-"
        return str(value)


def read_probe(path: Path) -> list[ProbeLine]:
    """Every complete line of a probe log, in file order (a torn last line is left out)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines(keepends=True):
        parts = line.rstrip("\n").split("\t")
        if line.endswith("\n") and len(parts) == 4:
            out.append(ProbeLine(*parts))
    return out
