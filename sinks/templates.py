"""Render the brace templates of sink settings (``index``, ``prefix``, ``partition``).

The syntax is CONFIG.md's (``{field}``, ``{field.sub}``, ``{arrival:FMT}``, ``{now:FMT}``)
and ``shardline validate`` has already checked it; this is the runtime half, which must not
import ``deploy/``. A template is compiled once, at sink construction, into literal parts
and small getters, so rendering per record is a join. Formatted times are cached per whole
second, because records of one batch share their arrival second far more often than not.

>>> t = Template("events-{arrival:%Y.%m.%d}-{user.country}")
>>> t.fields
('user.country',)
>>> from stream.records import Record
>>> t.render(Record(b'{"user": {"country": "fr"}}', "k", "1", arrival=1767225600.0))
'events-2026.01.01-fr'
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sinks.base import SinkError

if TYPE_CHECKING:
    from collections.abc import Callable

    from stream.records import Record

__all__ = ["Template", "TemplateError"]


class TemplateError(SinkError, ValueError):
    """A record lacks a field its template needs; the record cannot be placed."""


class _TimePart:
    """``{arrival:FMT}`` or ``{now:FMT}``, formatted in UTC, cached per second."""

    __slots__ = ("_fmt", "_last", "_last_second", "source")

    def __init__(self, source: str, fmt: str) -> None:
        self.source = source
        self._fmt = fmt
        self._last_second = -1
        self._last = ""

    def __call__(self, epoch: float) -> str:
        second = int(epoch)
        if second != self._last_second:
            self._last = datetime.fromtimestamp(second, UTC).strftime(self._fmt)
            self._last_second = second
        return self._last


def _field_getter(path: str) -> Callable[[Any], Any]:
    keys = path.split(".")

    def get(doc: Any) -> Any:
        for key in keys:
            if type(doc) is not dict or key not in doc:
                msg = (
                    f"the record has no field {path!r}, which the template needs; "
                    "add it in an enrich step or change the template"
                )
                raise TemplateError(msg)
            doc = doc[key]
        if type(doc) is dict or type(doc) is list or doc is None:
            msg = f"field {path!r} is {type(doc).__name__}; a template needs a string or number"
            raise TemplateError(msg)
        return doc

    return get


class Template:
    """A compiled brace template.

    Args:
        text: the template as written in the pipeline file.
        now: the clock for ``{now:FMT}``, injectable for tests.
    """

    __slots__ = ("_now", "_parts", "constant", "fields", "text")

    def __init__(self, text: str, now: Callable[[], float] = time.time) -> None:
        self.text = text
        self._now = now
        parts: list[str | _TimePart | Callable[[Any], Any]] = []
        fields: list[str] = []
        i = 0
        while i < len(text):
            start = text.find("{", i)
            if start < 0:
                parts.append(text[i:])
                break
            end = text.find("}", start)
            if end < 0:
                msg = f"unclosed '{{' in template {text!r}"
                raise ValueError(msg)
            if start > i:
                parts.append(text[i:start])
            name, _, fmt = text[start + 1 : end].partition(":")
            if name in ("arrival", "now") and fmt:
                parts.append(_TimePart(name, fmt))
            else:
                parts.append(_field_getter(name))
                fields.append(name)
            i = end + 1
        self._parts = tuple(parts)
        self.fields = tuple(fields)
        self.constant = all(type(p) is str for p in parts)

    def render(self, record: Record) -> str:
        """The template for one record.

        Raises:
            TemplateError: a field is missing or not a scalar.
            DecodeError: the template needs a field and the record is not JSON.
        """
        if self.constant:
            return self.text
        doc = record.json if self.fields else None
        out: list[str] = []
        for part in self._parts:
            if type(part) is str:
                out.append(part)
            elif type(part) is _TimePart:
                out.append(part(record.arrival if part.source == "arrival" else self._now()))
            else:
                out.append(str(part(doc)))  # type: ignore[operator,arg-type]  # a field getter
        return "".join(out)
