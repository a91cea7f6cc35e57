"""The ``stdout`` sink, for development: each record's JSON document on one line.

With ``label: true`` (what ``shardline invoke --sinks stdout`` uses) each line starts with the
sink's name and a tab, so the output of several sinks can be told apart.

One record is always one line. Data that is already one line of UTF-8 is written as it is
(a JSON document as the chain left it, or text). Anything else is written as one JSON
document instead of raw: JSON spread over several lines re-encoded compactly; text that is
not JSON but spans lines as ``{"_text": "..."}``; data that is not UTF-8 (binary) as
``{"_data_base64": "..."}`` (standard base64 of the exact bytes), the forms ``shardline test``
shows such records in. Raw binary would break the one-document-per-line contract: a newline
byte inside it starts a false record, and invalid UTF-8 breaks every line-reading tool.
"""

from __future__ import annotations

import sys
from binascii import b2a_base64  # not base64, which loads struct: cold start

import orjson

from sinks.base import OK, Outcome, Sink, permanent
from stream.exceptions import DecodeError

TYPE_CHECKING = False  # not typing's: the handler's import never loads typing (ARCHITECTURE.md)
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import IO, ClassVar

    from stream.records import Record

__all__ = ["StdoutSink", "line_of"]


def line_of(record: Record) -> bytes:
    """The record as one line, without its newline (see the module docstring).

    >>> from stream.records import Record
    >>> line_of(Record(b'{"a": 1}', "k", "1")), line_of(Record(b"\\xff\\n", "k", "2"))
    (b'{"a": 1}', b'{"_data_base64":"/wo="}')
    """
    data = record.data.rstrip(b"\n")
    if b"\n" not in data and b"\r" not in data:
        if data.isascii():
            return data
        try:
            data.decode()
        except UnicodeDecodeError:
            return orjson.dumps({"_data_base64": b2a_base64(record.data, newline=False).decode()})
        return data
    try:
        return orjson.dumps(record.json)
    except DecodeError:
        pass
    try:
        return orjson.dumps({"_text": record.data.decode()})
    except UnicodeDecodeError:
        return orjson.dumps({"_data_base64": b2a_base64(record.data, newline=False).decode()})


class StdoutSink(Sink):
    """Writes records as JSON lines to a stream (standard output by default), one per line."""

    shares_records: ClassVar[bool] = True  # never edits a record: no copies (sinks.base)
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
                lines.append(prefix + line_of(item) + b"\n")
            except (TypeError, ValueError) as exc:  # a document orjson cannot write
                outcomes.append(permanent(f"cannot encode the document: {exc}", "EncodeError"))
            else:
                outcomes.append(OK)
        out.write(b"".join(lines))
        out.flush()
        return outcomes
