"""Brace templates in sink settings (``index``, ``prefix``, ``partition``), as validation
sees them.

The syntax and its one parser are the runtime's, :func:`sinks.templates.parse_template`, so
that a template that validates is one the sinks can compile; this module only turns the
parser's :class:`~sinks.templates.TemplateSyntaxError` into a validation message.

>>> template_problem("dt={arrival:%Y-%m-%d}/hour={arrival:%H}/{user.country}") is None
True
>>> template_problem("events-{arrival:%Y.%m.%d").split(" (placeholders")[0]
"unclosed '{' in 'events-{arrival:%Y.%m.%d'"
>>> clock_problem("events-{now:%Y.%m.%d}").split(": a record")[0]
"'{now:%Y.%m.%d}' renders the time of the write"
>>> clock_problem("events-{arrival:%Y.%m.%d}") is None
True
"""

from __future__ import annotations

from sinks.templates import TemplateSyntaxError, parse_template


def clock_problem(text: str) -> str | None:
    """Why ``text`` breaks a sink's idempotency, or None: a ``{now:FMT}`` placeholder renders
    the time of the write, so a redelivered record (Lambda's retry of a partial failure, a
    late batch of a worker that lost its lease) lands under another index, prefix or
    partition whenever the clock has moved on, beside its first copy instead of on it. The
    sinks promise that redelivery is harmless; ``{arrival:FMT}`` (the record's approximate
    arrival time, the same on every delivery) gives the same layout and keeps the promise.
    A malformed template is :func:`template_problem`'s to report."""
    try:
        parts = parse_template(text)
    except TemplateSyntaxError:
        return None
    for part in parts:
        if not isinstance(part, str) and part.name == "now" and part.fmt:
            return (
                f"'{{now:{part.fmt}}}' renders the time of the write: a record delivered again "
                "later (a retried batch) is written a second time under another name instead "
                f"of onto its first copy; use '{{arrival:{part.fmt}}}' (the record's arrival "
                "time, the same on every delivery)"
            )
    return None


def template_problem(text: str) -> str | None:
    """Why ``text`` is not a valid template, or None; the first problem is enough to fix."""
    try:
        parse_template(text)
    except TemplateSyntaxError as exc:
        return str(exc)
    return None
