"""The ``filter`` processor: keep the records that match, drop the rest.

``match`` is a Lambda/EventBridge content pattern (the same one AWS applies as
FilterCriteria); ``expr`` is a JMESPath expression, kept when truthy. Both are compiled once
into closures (processors.match, processors.expr), so a record costs one call each.
"""

from __future__ import annotations

from processors.match import compile_pattern

TYPE_CHECKING = False  # not typing's: the handler's import never loads typing (ARCHITECTURE.md)
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from stream.records import Record

__all__ = ["Filter"]


class Filter:
    """Keep a record when its JSON document matches ``match`` and ``expr`` (both, if given).

    Args:
        match: a content-filter pattern, e.g. ``{"event_type": ["click", "purchase"]}``.
        expr: a JMESPath expression, e.g. ``"amount > `0`"``.

    Raises:
        ValueError: neither is given, or one does not compile (the message says which).
    """

    __slots__ = ("_test", "expr", "match")

    def __init__(self, match: Mapping[str, Any] | None = None, expr: str | None = None) -> None:
        if match is None and expr is None:
            msg = "filter needs `match` (a pattern) or `expr` (a JMESPath expression)"
            raise ValueError(msg)
        self.match = match
        self.expr = expr
        tests: list[Callable[[Any], bool]] = []
        if match is not None:
            tests.append(compile_pattern(match))
        if expr is not None:
            # Imported only when used: a match-only pipeline never loads jmespath.
            from processors.expr import compile_predicate  # noqa: PLC0415

            tests.append(compile_predicate(expr))
        if len(tests) == 1:
            self._test = tests[0]
        else:
            first, second = tests
            self._test = lambda doc: first(doc) and second(doc)

    def __call__(self, record: Record) -> Record | None:
        return record if self._test(record.json) else None
