"""Filter conditions as Python expression source: the namespace, and content patterns.

Why: ``processors.match`` and ``processors.expr`` compile to nested closures, which cost a
Python call (~500 instructions) per node and record. :mod:`processors.fused` inlines the
conditions of consecutive steps into one generated loop instead; this module and
:mod:`processors.codegen_expr` (JMESPath) write them. Each returns the source of one Python
*expression* over a variable that holds the document, or ``None`` for a construct it does
not write, in which case the caller keeps the closure. Constants (sets, regexes, helpers)
go into a :class:`Namespace`; intermediate values are bound with ``:=`` to temporaries, so
every sub-expression is evaluated once and in the closure's order.

The semantics are exactly :func:`processors.match.compile_pattern`'s: all fields ANDed, a
field's list ORed; numbers by value (``5`` matches ``5.0``), bools apart from 1/0, ``null``
a present null; arrays match when an element does (nested patterns: an object element);
prefix, suffix, equals-ignore-case, wildcard, numeric, exists, anything-but, ``$or``, dotted
keys joined in the pattern and in the document. The
exact JSON types (str, int, float, bool, None) take inline branches; anything else
(arrays, objects, a missing field, subclasses) calls a helper here that repeats the
closure's logic. ``cidr`` is not written. ``tests/processors/test_fused.py`` holds the
sources and the closures to the same answers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from functools import partial

from processors.match import (
    _DECIMALS,
    _LIMIT,
    _anything_but_ignore_case,
    _child,
    _leaves,
    _objects,
    ignore_case,
    join_dotted_keys,
)

TYPE_CHECKING = False  # not typing's: the handler's import never loads typing (ARCHITECTURE.md)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Final


__all__ = ["MISSING", "Namespace", "NotWritten", "compiles", "pattern_source"]

MISSING: Final = object()
_NUMERIC_OPS: Final = {"=": "==", ">": ">", ">=": ">=", "<": "<", "<=": "<="}


#: Parentheses the fused loop may put around a condition (``if not (a and b):``, a route's
#: test); a source must still compile with this many more.
_MARGIN: Final = 8
#: A source at most this long, with at most :data:`_SHALLOW_BRACKETS` brackets, is too
#: shallow for CPython's depth limits: its expression nests at most one level per character
#: (the compiler allows over a thousand, the parser 6,000 rules deep, about 20 per bracket)
#: and its brackets at most as deep as there are of them (the tokenizer allows 200).
_SHALLOW_CHARS: Final = 500
_SHALLOW_BRACKETS: Final = 100


def compiles(var: str, source: str) -> bool:
    """Whether ``source`` compiles as an expression over ``var``, even nested a little deeper.

    Why: CPython refuses more than 200 nested parentheses (``SyntaxError: too many nested
    parentheses``) and very deep expressions (``RecursionError`` while compiling). The
    generators keep their output flat where they can; a source that still does not compile
    is not used, and its step keeps the closure, so building a chain never fails for it.
    A short source with few brackets is taken without compiling it: it is too shallow for
    either limit, and the compile was a third of a million instructions per condition of
    every cold start (the fused loop compiles it again anyway, and should a generator ever
    write a syntax error, that run falls back to its steps unfused).

    >>> compiles("d", "d.get('a') == 1"), compiles("d", "(" * 195 + "d" + ")" * 195)
    (True, False)
    """
    if len(source) <= _SHALLOW_CHARS and (
        source.count("(") + source.count("[") + source.count("{") <= _SHALLOW_BRACKETS
    ):
        return True
    text = f"lambda {var}: {'(' * _MARGIN}{source}{')' * _MARGIN}"
    try:
        compile(text, "<condition>", "eval")
    except (SyntaxError, RecursionError, MemoryError):
        return False
    return True


class NotWritten(Exception):  # not an error: a signal inside the generators
    """A construct the code generators do not write: the caller keeps the closure."""


class Namespace:
    """The globals of generated code: constants, helpers and fresh temporary names.

    Attributes:
        values: what the generated source refers to by name (pass it to ``exec``/``eval``).
    """

    def __init__(self) -> None:
        self.values: dict[str, Any] = {
            "_MISSING": MISSING,
            "_startswith": str.startswith,
            "_endswith": str.endswith,
        }
        self._count = 0

    def const(self, value: Any) -> str:
        """A name bound to ``value`` in the namespace."""
        self._count += 1
        name = f"_k{self._count}"
        self.values[name] = value
        return name

    def temp(self) -> str:
        """A fresh local name for ``:=``."""
        self._count += 1
        return f"_t{self._count}"

    def literal(self, value: Any) -> str:
        """Source for a constant: its repr when that reads back exactly, else a name."""
        kind = type(value)
        if value is None or kind is bool or kind is str:
            return repr(value)
        if (kind is int and abs(value) < 2**63) or (kind is float and math.isfinite(value)):
            return f"({value!r})"
        return self.const(value)

    def function(self, var: str, source: str) -> Callable[[Any], Any]:
        """Compile ``source`` into ``lambda var: source`` over this namespace."""
        fn: Callable[[Any], Any] = eval(f"lambda {var}: {source}", self.values)
        return fn


# --- runtime helpers: processors.match's logic for the uncommon types ---------------------


def _is_pattern_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _scalar_leaf(values: frozenset[Any], bools: frozenset[bool], null: bool, x: Any) -> bool:
    if isinstance(x, bool):
        return x in bools
    if isinstance(x, str | int | float):
        return x in values
    return null and x is None


def _scalar_value(values: frozenset[Any], bools: frozenset[bool], null: bool, value: Any) -> bool:
    if type(value) is not list:
        return _scalar_leaf(values, bools, null, value)
    return any(_scalar_leaf(values, bools, null, x) for x in _leaves(value))


def _any_leaf(
    pred: Callable[[Any], bool] | None, exists: bool, absent: bool, value: list[Any]
) -> bool:
    leaves = tuple(_leaves(value))
    if not leaves:
        return absent
    if exists:
        return True
    return pred is not None and any(pred(x) for x in leaves)


def _any_object(sub: Callable[[Any], bool], if_absent: bool, value: list[Any]) -> bool:
    seen = False
    for obj in _objects(value):
        if sub(obj):
            return True
        seen = True
    return False if seen else if_absent


# --- content-filter patterns ---------------------------------------------------------------


def pattern_source(
    pattern: Mapping[str, Any], var: str, ns: Namespace, is_dict: str | None = None
) -> str | None:
    """Source of ``compile_pattern(pattern)(var)``, or ``None`` if a construct is not written.

    ``is_dict`` names a local that is true when ``type(var) is dict`` (or is ``"True"`` when
    that is known), to save the type test per condition.

    >>> ns = Namespace()
    >>> src = pattern_source({"kind": ["a", "b"]}, "doc", ns)
    >>> ns.function("doc", src)({"kind": "b"}), ns.function("doc", src)({"kind": ["x", "a"]})
    (True, True)
    """
    from processors.match import validate_pattern  # noqa: PLC0415  # loaded by the step

    if validate_pattern(pattern):
        return None
    try:
        body = _Pattern(ns).mapping(pattern, var)
    except (NotWritten, SyntaxError, RecursionError, MemoryError):  # too deep: not written
        return None
    if is_dict == "True":
        return body if compiles(var, body) else None
    test = (
        f"isinstance({var}, dict)" if is_dict is None else f"({is_dict} or isinstance({var}, dict))"
    )
    source = f"({test} and {body})"
    return source if compiles(var, source) else None


class _Pattern:
    def __init__(self, ns: Namespace) -> None:
        self.ns = ns

    def mapping(self, pattern: Mapping[str, Any], node: str) -> str:
        parts = []
        pattern, _ = join_dotted_keys(pattern)  # validated: no clashes
        for key, spec in pattern.items():
            if key == "$or":
                parts.append("(" + " or ".join(self.mapping(alt, node) for alt in spec) + ")")
            elif isinstance(spec, Mapping):
                parts.append(self.nested(key, spec, node))
            else:
                parts.append(self.field(key, spec, node))
        return parts[0] if len(parts) == 1 else "(" + " and ".join(parts) + ")"

    def nested(self, key: str, spec: Mapping[str, Any], node: str) -> str:
        ns, v = self.ns, self.ns.temp()
        sub = self.mapping(spec, v)
        sub_fn = ns.function(v, sub)
        if_absent = bool(sub_fn({}))
        objects = ns.const(partial(_any_object, sub_fn, if_absent))
        child = ns.const(_child)  # a document's "a.b" keys, unless "a" is a real object
        return (
            f"({sub} if type(({v} := {node}.get({key!r}, _MISSING))) is dict "
            f"or isinstance(({v} := {child}({node}, {key!r})), dict) "
            f"else {objects}({v}) if isinstance({v}, list) else {if_absent})"
        )

    def field(self, key: str, items: list[Any], node: str) -> str:
        ns = self.ns
        values: dict[Any, None] = {}  # a set in the pattern's order
        bools: set[bool] = set()
        exists: set[bool] = set()
        preds: list[Callable[[str], str]] = []
        null = False
        for item in items:
            if item is None:
                null = True
            elif isinstance(item, bool):
                bools.add(item)
            elif isinstance(item, str | int | float):
                values.setdefault(item)
            elif list(item) == ["exists"]:
                exists.add(item["exists"])
            else:
                preds.append(self.matcher(item))
        get = f"{node}.get({key!r}, _MISSING)"
        v = ns.temp()
        if values or bools or null:
            scalar = self.scalar(tuple(values), frozenset(bools), null)
            if not preds and not exists:
                return scalar(f"({v} := {get})", v)
            preds.insert(0, lambda x: scalar(x, x))
        exist, absent = True in exists, False in exists

        def leaf(x: str) -> str:
            return "(" + " or ".join(pred(x) for pred in preds) + ")" if preds else "False"

        pred_fn = ns.function("_x", leaf("_x")) if preds and not exist else None
        many = ns.const(partial(_any_leaf, pred_fn, exist, absent))
        one = "True" if exist else leaf(v)
        return (
            f"({absent} if ({v} := {get}) is _MISSING or isinstance({v}, dict) "
            f"else {many}({v}) if isinstance({v}, list) else {one})"
        )

    def scalar(
        self, ordered: tuple[Any, ...], bools: frozenset[bool], null: bool
    ) -> Callable[[str, str], str]:
        """``[values..., bools..., null]`` on exact str/int/float/bool/None, inline."""
        ns, values = self.ns, frozenset(ordered)
        # A few values: ``==`` each (a fresh string is not hashed); more: one set lookup.
        few = " or ".join(f"{{x}} == {ns.literal(v)}" for v in ordered) if len(values) <= 4 else ""
        member = f"{{x}} in {ns.const(values)}" if len(values) > 4 else f"({few})" if few else ""
        on_bool = {frozenset(): "False", frozenset({True}): "{x} is True"}.get(
            bools, "{x} is False" if bools == {False} else "True"
        )
        rest = ns.const(partial(_scalar_value, values, bools, null))

        def source(first: str, x: str) -> str:
            """``first`` evaluates the value (binding ``x``) or is ``x`` itself."""
            t = ns.temp()
            hit = member.format(x=x) if member else "False"
            return (
                f"({hit} if ({t} := type({first})) is str or {t} is int or {t} is float "
                f"else {on_bool.format(x=x)} if {t} is bool "
                f"else {null} if {x} is None else False if {x} is _MISSING else {rest}({x}))"
            )

        return source

    def matcher(self, item: Mapping[str, Any]) -> Callable[[str], str]:
        ((name, arg),) = item.items()
        ns = self.ns
        if name in ("prefix", "suffix"):
            test = "_startswith" if name == "prefix" else "_endswith"
            if isinstance(arg, Mapping):  # {equals-ignore-case: text}: event-ruler's rules
                pred = ns.const(ignore_case(arg["equals-ignore-case"], name))
                return lambda x: f"{pred}({x})"
            text = ns.literal(arg)
            return lambda x: f"(isinstance({x}, str) and {test}({x}, {text}))"
        if name == "equals-ignore-case":
            pred = ns.const(ignore_case(arg, "equals"))
            return lambda x: f"{pred}({x})"
        if name == "wildcard":
            regex = ns.const(_wildcard_regex(arg).fullmatch)
            return lambda x: f"(isinstance({x}, str) and {regex}({x}) is not None)"
        if name == "numeric":
            return self.numeric(arg)
        if name == "anything-but":
            return self.anything_but(arg)
        raise NotWritten(name)  # cidr: the closure keeps it

    def numeric(self, arg: list[Any]) -> Callable[[str], str]:
        ns = self.ns
        if len(arg) == 2:
            low, a, high, b = _NUMERIC_OPS[arg[0]], ns.literal(arg[1]), "<=", ns.literal(_LIMIT)
        else:
            low, a, high, b = (_NUMERIC_OPS[arg[0]], ns.literal(arg[1]), _NUMERIC_OPS[arg[2]],
                               ns.literal(arg[3]))  # fmt: skip
        number = ns.const(_is_pattern_number)
        limit = ns.literal(_LIMIT)

        def source(x: str) -> str:
            t = ns.temp()
            return (
                f"((({t} := type({x})) is int or {t} is float or {number}({x})) "
                f"and -{limit} <= {x} <= {limit} "
                f"and ({t} is int or isinstance({x}, int) or round({x}, {_DECIMALS}) == {x}) "
                f"and {x} {low} {a} and {x} {high} {b})"
            )

        return source

    def anything_but(self, arg: Any) -> Callable[[str], str]:
        ns = self.ns
        if not isinstance(arg, Mapping):
            excluded = ns.const(frozenset(arg if isinstance(arg, list) else [arg]))
            return lambda x: f"(isinstance({x}, bool) or {x} not in {excluded})"
        ((form, inner),) = arg.items()
        texts = inner if isinstance(inner, list) else [inner]
        if form == "equals-ignore-case":
            pred = ns.const(_anything_but_ignore_case(texts))
            return lambda x: f"{pred}({x})"
        if form == "wildcard":
            regexes = [ns.const(_wildcard_regex(t).fullmatch) for t in texts]

            def wild(x: str) -> str:
                hits = " or ".join(f"{r}({x}) is not None" for r in regexes)
                return f"(not (isinstance({x}, str) and ({hits})))"

            return wild
        test = "_startswith" if form == "prefix" else "_endswith"
        affixes = ns.const(tuple(texts))
        return lambda x: f"(not (isinstance({x}, str) and {test}({x}, {affixes})))"


def _wildcard_regex(text: str) -> re.Pattern[str]:
    """processors.match's translation (the pattern is already validated)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "\\":
            out.append(re.escape(text[i + 1]))
            i += 2
        else:
            out.append(".*" if text[i] == "*" else re.escape(text[i]))
            i += 1
    return re.compile("".join(out), re.DOTALL)
