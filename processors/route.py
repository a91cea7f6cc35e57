"""The ``route`` processor: name the sinks each record goes to.

Rules are tried in order. In ``first`` mode (the default, like Vector's
``exclusive_route``) the first rule whose ``when`` matches decides; in ``all`` mode every
matching rule adds its sinks (fan-out). ``default`` applies when no rule matched. A record
that no rule and no default takes is *unrouted*: it is counted and goes nowhere.

A route does not write: it sets ``record.routes``; ``stream.batch`` writes after the chain.
``when`` is a content pattern (a mapping) or a JMESPath expression (a string).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from processors.match import compile_pattern

if TYPE_CHECKING:
    from stream.records import Record

__all__ = ["Route"]

Rule = tuple[Callable[[Any], bool], tuple[str, ...]]


class Route:
    """Route records to sinks by rules.

    Args:
        rules: ``[{"when": pattern-or-expr, "to": [sinks]}, ..., {"default": [sinks]}]``.
        mode: ``first`` or ``all``.
        sinks: the known sink names, to catch typos at init (optional).

    Raises:
        ValueError: a malformed rule, an unknown mode, or an unknown sink.
    """

    __slots__ = ("_default", "_first", "_rules", "_whens")

    def __init__(
        self,
        rules: Sequence[Mapping[str, Any]],
        mode: str = "first",
        sinks: Collection[str] | None = None,
    ) -> None:
        if mode not in ("first", "all"):
            msg = f"route mode {mode!r}: expected 'first' or 'all'"
            raise ValueError(msg)
        self._first = mode == "first"
        self._rules: list[Rule] = []
        self._default: tuple[str, ...] = ()
        self._whens: list[Any] = []
        for i, rule in enumerate(rules):
            if "default" in rule:
                self._default = _names(rule["default"], sinks, f"rules[{i}].default")
                continue
            when = rule.get("when")
            test = _expr_test(when) if isinstance(when, str) else compile_pattern(when or {})
            self._rules.append((test, _names(rule.get("to", ()), sinks, f"rules[{i}].to")))
            self._whens.append(when)

    @classmethod
    def from_config(cls, args: Any, sinks: Collection[str] | None = None) -> Route:
        """Build from the file's form: a list of rules, or ``{mode, rules}``."""
        if isinstance(args, Mapping):
            return cls(args.get("rules", ()), args.get("mode", "first"), sinks)
        return cls(args, "first", sinks)

    @property
    def mode(self) -> str:
        """``first`` or ``all``."""
        return "first" if self._first else "all"

    @property
    def default(self) -> tuple[str, ...]:
        """The sinks of records that no rule takes (empty: unrouted)."""
        return self._default

    @property
    def conditions(self) -> tuple[tuple[Any, tuple[str, ...]], ...]:
        """Each rule's ``when`` as configured (a pattern or an expression) and its sinks."""
        return tuple((when, to) for when, (_, to) in zip(self._whens, self._rules, strict=True))

    def __call__(self, record: Record) -> Record:
        if not self._rules:
            record.routes = self._default
            return record
        doc = record.json
        if self._first:
            for test, to in self._rules:
                if test(doc):
                    record.routes = to
                    return record
            record.routes = self._default
            return record
        chosen: list[str] = []
        for test, to in self._rules:
            if test(doc):
                chosen.extend(s for s in to if s not in chosen)
        record.routes = tuple(chosen) if chosen else self._default
        return record


def _names(value: Any, sinks: Collection[str] | None, where: str) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else tuple(value)
    if sinks is not None:
        for name in names:
            if name not in sinks:
                known = ", ".join(sinks)
                msg = f"{where}: unknown sink {name!r} (known: {known})"
                raise ValueError(msg)
    return names


def _expr_test(source: str) -> Callable[[Any], bool]:
    # Imported only when a rule is an expression: pattern-only routes never load jmespath.
    from processors.expr import compile_predicate  # noqa: PLC0415

    return compile_predicate(source)
