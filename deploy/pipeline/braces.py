"""Brace templates in sink settings (``index``, ``prefix``, ``partition``).

A template is text with placeholders: ``{field}`` or ``{field.sub}`` from the record's JSON,
``{arrival:FMT}`` (the record's approximate arrival time) and ``{now:FMT}``, where FMT is a
strftime format. There is no escape for literal braces: S3 keys and index names have no use
for them, and a stray brace is far more often a typo.

>>> template_problem("dt={arrival:%Y-%m-%d}/hour={arrival:%H}/{user.country}") is None
True
>>> template_problem("events-{arrival:%Y.%m.%d").split(" (placeholders")[0]
"unclosed '{' in 'events-{arrival:%Y.%m.%d'"
"""

from __future__ import annotations

import re

TIME_SOURCES = ("arrival", "now")
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z_][A-Za-z0-9_-]*)*")
_HINT = "(placeholders: {field}, {field.sub}, {arrival:FMT}, {now:FMT})"


def template_problem(text: str) -> str | None:
    """Why ``text`` is not a valid template, or None; the first problem is enough to fix."""
    i = 0
    while i < len(text):
        if text[i] == "}":
            return f"unmatched '}}' in {text!r} {_HINT}"
        if text[i] != "{":
            i += 1
            continue
        end = text.find("}", i + 1)
        if end < 0 or "{" in text[i + 1 : end]:
            return f"unclosed '{{' in {text!r} {_HINT}"
        problem = _placeholder_problem(text[i + 1 : end])
        if problem is not None:
            return problem
        i = end + 1
    return None


def _placeholder_problem(body: str) -> str | None:
    name, has_format, fmt = body.partition(":")
    shown = "{" + body + "}"
    if not body:
        return f"empty placeholder '{{}}' {_HINT}"
    if name in TIME_SOURCES and not fmt:
        return f"{shown!r} needs a strftime format, e.g. {{{name}:%Y-%m-%d}}"
    if has_format and name not in TIME_SOURCES:
        return f"{shown!r}: only arrival and now take a format {_HINT}"
    if not has_format and not _FIELD.fullmatch(name):
        return (
            f"{shown!r} is not a record field (letters, digits, '_' and '-', "
            f"dots for nested fields) {_HINT}"
        )
    return None
