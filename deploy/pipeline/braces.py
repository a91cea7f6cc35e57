"""Brace templates in sink settings (``index``, ``prefix``, ``partition``), as validation
sees them.

The syntax and its one parser are the runtime's, :func:`sinks.templates.parse_template`, so
that a template that validates is one the sinks can compile; this module only turns the
parser's :class:`~sinks.templates.TemplateSyntaxError` into a validation message.

>>> template_problem("dt={arrival:%Y-%m-%d}/hour={arrival:%H}/{user.country}") is None
True
>>> template_problem("events-{arrival:%Y.%m.%d").split(" (placeholders")[0]
"unclosed '{' in 'events-{arrival:%Y.%m.%d'"
"""

from __future__ import annotations

from sinks.templates import TemplateSyntaxError, parse_template


def template_problem(text: str) -> str | None:
    """Why ``text`` is not a valid template, or None; the first problem is enough to fix."""
    try:
        parse_template(text)
    except TemplateSyntaxError as exc:
        return str(exc)
    return None
