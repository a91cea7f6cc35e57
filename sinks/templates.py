"""Render the brace templates of sink settings (``index``, ``prefix``, ``partition``).

The syntax is CONFIG.md's: ``{field}`` or ``{field.sub}`` from the record's JSON,
``{arrival:FMT}`` (the record's approximate arrival time) and ``{now:FMT}``, where FMT is a
strftime format. There is no escape for literal braces: S3 keys and index names have no use
for them, and a stray brace is far more often a typo.

:func:`parse_template` is the one parser of that syntax: ``shardline validate`` reports its
:class:`TemplateSyntaxError` (``deploy.pipeline.braces``), and :class:`Template` compiles
what it returns, so what validates is what runs. This module must not import ``deploy/``.
A template is compiled once, at sink construction, into literal parts and small getters, so
rendering per record is a join. Formatted times are cached per whole second, because records
of one batch share their arrival second far more often than not.

>>> t = Template("events-{arrival:%Y.%m.%d}-{user.country}")
>>> t.fields
('user.country',)
>>> from stream.records import Record
>>> t.render(Record(b'{"user": {"country": "fr"}}', "k", "1", arrival=1767225600.0))
'events-2026.01.01-fr'
>>> parse_template("dt={arrival:%Y-%m-%d}/{user.country}")
('dt=', Placeholder(name='arrival', fmt='%Y-%m-%d'), '/', Placeholder(name='user.country', fmt=''))
>>> parse_template("events-{arrival:%Y.%m.%d")
Traceback (most recent call last):
    ...
sinks.templates.TemplateSyntaxError: unclosed '{' in 'events-{arrival:%Y.%m.%d' (placeholders: ...)
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sinks.base import SinkError

if TYPE_CHECKING:
    from collections.abc import Callable

    from stream.records import Record

__all__ = [
    "TIME_SOURCES",
    "Placeholder",
    "Template",
    "TemplateError",
    "TemplateSyntaxError",
    "parse_template",
]

#: The placeholders that take a strftime format instead of naming a record field.
TIME_SOURCES = ("arrival", "now")
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z_][A-Za-z0-9_-]*)*")
_HINT = "(placeholders: {field}, {field.sub}, {arrival:FMT}, {now:FMT})"


class TemplateError(SinkError, ValueError):
    """A record lacks a field its template needs; the record cannot be placed."""


class TemplateSyntaxError(SinkError, ValueError):
    """A template is malformed; the message shows it and what placeholders may be."""


@dataclass(frozen=True, slots=True)
class Placeholder:
    """One ``{...}`` of a template: a record field (``fmt`` empty), or a time source of
    :data:`TIME_SOURCES` with its strftime format."""

    name: str
    fmt: str = ""


def parse_template(text: str) -> tuple[str | Placeholder, ...]:
    """``text`` as literal parts and placeholders, in order.

    Raises:
        TemplateSyntaxError: the first problem in ``text`` (one is enough to fix): a stray
            ``}``, an unclosed ``{``, an empty ``{}``, a time source without a format, a
            format on a field, or a field name that is not letters, digits, ``_`` and ``-``
            with dots for nested fields.
    """
    parts: list[str | Placeholder] = []
    i = 0
    while i < len(text):
        start = text.find("{", i)
        stray = text.find("}", i, len(text) if start < 0 else start)
        if stray >= 0:
            msg = f"unmatched '}}' in {text!r} {_HINT}"
            raise TemplateSyntaxError(msg)
        if start < 0:
            parts.append(text[i:])
            break
        end = text.find("}", start + 1)
        if end < 0 or "{" in text[start + 1 : end]:
            msg = f"unclosed '{{' in {text!r} {_HINT}"
            raise TemplateSyntaxError(msg)
        if start > i:
            parts.append(text[i:start])
        parts.append(_placeholder(text[start + 1 : end]))
        i = end + 1
    return tuple(parts)


def _placeholder(body: str) -> Placeholder:
    name, has_format, fmt = body.partition(":")
    shown = "{" + body + "}"
    if not body:
        msg = f"empty placeholder '{{}}' {_HINT}"
    elif name in TIME_SOURCES and not fmt:
        msg = f"{shown!r} needs a strftime format, e.g. {{{name}:%Y-%m-%d}}"
    elif has_format and name not in TIME_SOURCES:
        msg = f"{shown!r}: only arrival and now take a format {_HINT}"
    elif not has_format and not _FIELD.fullmatch(name):
        msg = (
            f"{shown!r} is not a record field (letters, digits, '_' and '-', "
            f"dots for nested fields) {_HINT}"
        )
    else:
        return Placeholder(name, fmt)
    raise TemplateSyntaxError(msg)


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

    Raises:
        TemplateSyntaxError: ``text`` is malformed (see :func:`parse_template`).
    """

    __slots__ = ("_now", "_parts", "constant", "fields", "text")

    def __init__(self, text: str, now: Callable[[], float] = time.time) -> None:
        self.text = text
        self._now = now
        parts: list[str | _TimePart | Callable[[Any], Any]] = []
        fields: list[str] = []
        for part in parse_template(text):
            if isinstance(part, str):
                parts.append(part)
            elif part.fmt:
                parts.append(_TimePart(part.name, part.fmt))
            else:
                parts.append(_field_getter(part.name))
                fields.append(part.name)
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
