"""The ``stdout`` sink, for development: each record's JSON document on one line.

With ``label: true`` (what ``shardline invoke --sinks stdout`` uses) each line starts with the
sink's name and a tab, so the output of several sinks can be told apart.
"""

from __future__ import annotations

import sys
from typing import IO, TYPE_CHECKING, ClassVar

from sinks.base import OK, Outcome, Sink, permanent

if TYPE_CHECKING:
    from collections.abc import Sequence

    from stream.records import Record

__all__ = ["StdoutSink"]


class StdoutSink(Sink):
    """Writes records as JSON lines to a stream (standard output by default)."""

    max_batch: ClassVar[int] = 10_000
    per_key_safe: ClassVar[bool] = True  # lines are written in order and cannot fail alone

    def __init__(self, name: str, *, label: bool = False, out: IO[bytes] | None = None) -> None:
        super().__init__(name)
        self._prefix = f"{name}\t".encode() if label else b""
        self._out = out

    def _write(self, items: Sequence[Record]) -> list[Outcome]:
        out = self._out or sys.stdout.buffer
        prefix = self._prefix
        lines: list[bytes] = []
        outcomes: list[Outcome] = []
        for item in items:
            try:
                lines.append(prefix + item.data.rstrip(b"\n") + b"\n")
            except (TypeError, ValueError) as exc:  # a document orjson cannot write
                outcomes.append(permanent(f"cannot encode the document: {exc}", "EncodeError"))
            else:
                outcomes.append(OK)
        out.write(b"".join(lines))
        out.flush()
        return outcomes
