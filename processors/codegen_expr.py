"""JMESPath expressions as Python expression source (see :mod:`processors.codegen`).

The semantics are :func:`processors.expr.compile_expr`'s and ``compile_predicate``'s,
including jmespath 1.1.0's quirks that processors.expr reproduces: ``==`` keeps a bool
apart from 0/1 at the top level only, ordering compares numbers and also strings (number
against string raises ``TypeError``, anything else gives null), field access on a
non-object is null, ``||``/``&&`` return a value and filters use JMESPath truthiness
(``0`` is true). Written here: fields, sub-expressions and pipes, indexes, ``@``,
literals, comparators, ``&&``, ``||`` and ``!``; anything else (functions, projections,
slices, multi-selects) returns ``None`` and keeps the closure.
"""

from __future__ import annotations

import operator
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from processors.codegen import Namespace, NotWritten, compiles
from processors.expr import (
    _COMPOSE,
    _comparable,
    _equals,
    _get_other,
    _is_boolish,  # a function node is boolish there, but is never written here
    _is_number,
    _not,
    _operands,
    is_truthy,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    Node = dict[str, Any]

__all__ = ["expr_source", "predicate_source"]

_ORDER_OPS: Final = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
_ORDER_FNS: Final = {"lt": operator.lt, "lte": operator.le, "gt": operator.gt, "gte": operator.ge}


# --- runtime helpers: processors.expr's logic for the uncommon types ----------------------


def _order(op: Callable[[Any, Any], Any], null: Any, x: Any, y: Any) -> Any:
    return op(x, y) if _comparable(x) and _comparable(y) else null


# --- JMESPath ------------------------------------------------------------------------------


def expr_source(expression: str, var: str, ns: Namespace, is_dict: str | None = None) -> str | None:
    """Source of ``compile_expr(expression)(var)`` (the value), or ``None``; ``is_dict`` as
    for :func:`processors.codegen.pattern_source`.

    >>> ns = Namespace()
    >>> ns.function("doc", expr_source("a || b", "doc", ns))({"a": 0, "b": 1})
    0
    """
    node = _parse(expression)
    if node is None:
        return None
    try:
        source = _Expr(ns, var, is_dict).value(node, var, None)
    except (NotWritten, RecursionError):
        return None
    return source if compiles(var, source) else None


def predicate_source(
    expression: str, var: str, ns: Namespace, is_dict: str | None = None
) -> str | None:
    """Source of ``compile_predicate(expression)(var)``: a bool, by JMESPath truthiness;
    ``is_dict`` as for :func:`processors.codegen.pattern_source`.

    >>> ns = Namespace()
    >>> ns.function("doc", predicate_source("amount > `0` || kind == 'a'", "doc", ns))(
    ...     {"amount": 0, "kind": "a"})
    True
    """
    node = _parse(expression)
    if node is None:
        return None
    gen = _Expr(ns, var, is_dict)
    try:
        source = (
            gen.boolean(node, var) if _is_boolish(node) else gen.truth(gen.value(node, var, None))
        )
    except (NotWritten, RecursionError):
        return None
    return source if compiles(var, source) else None


def _parse(expression: str) -> Node | None:
    from jmespath import exceptions, parser  # noqa: PLC0415  # only pipelines with expressions

    try:
        node: Node = parser.Parser().parse(expression).parsed
    except exceptions.JMESPathError:
        return None
    return node


class _Expr:
    """Writes processors.expr's closures as expressions; ``null`` is what a non-comparable
    ordering yields (``None``, or ``False`` under a boolean predicate, like ``_compile_bool``)."""

    def __init__(self, ns: Namespace, top: str, is_dict: str | None) -> None:
        self.ns = ns
        self.top = top  # the document's variable, of which ``is_dict`` tells the type
        self.is_dict = is_dict

    def bind(self, source: str) -> tuple[str, str]:
        """(name, binding): ``binding`` evaluates ``source`` into ``name`` and is always true."""
        t = self.ns.temp()
        return t, f"(({t} := {source}) is {t})"

    def value(self, node: Node, var: str, null: str | None) -> str:
        kind = node["type"]
        if kind == "field":
            return self.field(var, node["value"])
        if kind in _COMPOSE:
            return self.sequence(_operands(node, _COMPOSE), var)
        if kind == "index":
            i = node["value"]
            return (
                f"({var}[{i}] if isinstance({var}, list) and -len({var}) <= {i} < len({var}) "
                "else None)"
            )
        if kind == "literal":
            return self.ns.literal(node["value"])
        if kind in ("current", "identity"):
            return var
        if kind == "comparator":
            return self.comparator(node, var, "None" if null is None else null)
        if kind in ("and_expression", "or_expression"):
            return self.and_or(node, var)
        if kind == "not_expression":
            (child,) = node["children"]
            inner = self.value(child, var, None)
            if _is_boolish(child):
                return f"(not {inner})"
            t, k = self.ns.temp(), self.ns.temp()
            return (
                f"(False if ({k} := type(({t} := {inner}))) is int or {k} is float "
                f"else (not {t}) if {k} is bool or {t} is None or {k} is str or {k} is list "
                f"or {k} is dict else {self.ns.const(_not)}({t}))"
            )
        raise NotWritten(kind)

    def field(self, var: str, name: str, source: str | None = None) -> str:
        """``var.name``; ``source`` (bound to ``var`` first) when the input is computed."""
        k = self.ns.temp()
        first = var if source is None else f"({var} := {source})"
        other = self.ns.const(_get_other)
        generic = (
            f"({var}.get({name!r}) if ({k} := type({first})) is dict else None "
            f"if {var} is None or {k} is str or {k} is list or {k} is int or {k} is float "
            f"or {k} is bool else {other}({var}, {name!r}))"
        )
        if source is not None or var != self.top or self.is_dict is None:
            return generic
        if self.is_dict == "True":
            return f"{var}.get({name!r})"
        return f"({var}.get({name!r}) if {self.is_dict} else {generic})"

    def sequence(self, children: list[Node], var: str) -> str:
        """Each step bound to a temporary in one flat ``and`` of bindings (always true),
        then the last step: the nesting stays the same for any number of steps (nesting
        each step in the next passed CPython's 200 parentheses at about 49 fields)."""
        source = self.value(children[0], var, None)
        bindings = []
        for child in children[1:]:
            t, binding = self.bind(source)
            bindings.append(binding)
            source = self.value(child, t, None)
        if not bindings:
            return source
        return f"({source} if {' and '.join(bindings)} else None)"

    def truth(self, source: str) -> str:
        """JMESPath truthiness of ``source``, as True or False."""
        t, k = self.ns.temp(), self.ns.temp()
        return self.truth_of(t, k, f"({t} := {source})")

    def truth_of(self, t: str, k: str, first: str) -> str:
        slow = self.ns.const(is_truthy)
        return (
            f"(True if ({k} := type({first})) is int or {k} is float "
            f"else (True if {t} else False) if {k} is bool or {t} is None or {k} is str "
            f"or {k} is list or {k} is dict else {slow}({t}))"
        )

    def boolean(self, node: Node, var: str) -> str:
        """processors.expr's ``_compile_bool``: for a boolish node, True or False."""
        kind = node["type"]
        if kind == "comparator":
            return self.comparator(node, var, "False")
        if kind in ("and_expression", "or_expression"):
            parts = [self.boolean(child, var) for child in _operands(node, frozenset({kind}))]
            return "(" + f" {'or' if kind == 'or_expression' else 'and'} ".join(parts) + ")"
        if kind == "literal":
            return repr(node["value"] is True)
        return self.value(node, var, None)  # `!` already returns a bool

    def and_or(self, node: Node, var: str) -> str:
        """``a || b || c``: the first truthy (``&&``: falsy) operand's value, else the last
        one's, as one flat conditional chain however many operands there are."""
        is_or = node["type"] == "or_expression"
        *firsts, last = _operands(node, frozenset({node["type"]}))
        if all(_is_boolish(op) for op in firsts):  # Python truth is JMESPath truth
            parts = [self.value(op, var, None) for op in [*firsts, last]]
            return "(" + f" {'or' if is_or else 'and'} ".join(parts) + ")"
        chain = []
        for op in firsts:
            t, k = self.ns.temp(), self.ns.temp()
            test = self.truth_of(t, k, f"({t} := {self.value(op, var, None)})")
            chain.append(f"{t} if {'' if is_or else 'not '}{test} else")
        return f"({' '.join(chain)} {self.value(last, var, None)})"

    def comparator(self, node: Node, var: str, null: str) -> str:
        kind = node["value"]
        left_node, right_node = node["children"]
        ns = self.ns
        if right_node["type"] == "literal" or left_node["type"] == "literal":
            literal_left = left_node["type"] == "literal" and right_node["type"] != "literal"
            lit_node, other = (left_node, right_node) if literal_left else (right_node, left_node)
            constant = lit_node["value"]
            if kind in ("eq", "ne"):
                return self.equals_literal(
                    other, constant, var, negate=kind == "ne", literal_left=literal_left
                )
            if not _comparable(constant):
                if left_node["type"] == "field" and right_node["type"] == "literal":
                    return null  # processors.expr does not even read the field
            else:
                return self.order_literal(
                    other, constant, var, kind, null=null, literal_left=literal_left
                )
        left, right = self.value(left_node, var, None), self.value(right_node, var, None)
        if kind in ("eq", "ne"):
            equals = f"{ns.const(_equals)}({left}, {right})"
            return equals if kind == "eq" else f"(not {equals})"
        order = ns.const(partial(_order, _ORDER_FNS[kind], None if null == "None" else False))
        return f"{order}({left}, {right})"

    def equals_literal(
        self, other: Node, constant: Any, var: str, *, negate: bool, literal_left: bool
    ) -> str:
        ns = self.ns
        x, c = self.value(other, var, None), ns.literal(constant)
        kind = type(constant)
        plain = kind in (str, dict, list, type(None)) or (
            _is_number(constant) and constant not in (0, 1)
        )
        op = "!=" if negate else "=="
        if plain:
            return f"({c} {op} {x})" if literal_left else f"({x} {op} {c})"
        t = ns.temp()
        pair = f"{c} == {t}" if literal_left else f"{t} == {c}"
        if kind is bool:
            equals = ns.const(_equals)
            args = f"{c}, {t}" if literal_left else f"{t}, {c}"
            if negate:
                return (
                    f"({t} is not {c} if type(({t} := {x})) is bool else True if {t} is None "
                    f"else not {equals}({args}))"
                )
            return (
                f"({t} is {c} if type(({t} := {x})) is bool else False if {t} is None "
                f"else {equals}({args}))"
            )
        if kind in (int, float):  # 0 or 1: a bool never equals them
            if negate:
                return f"(True if type(({t} := {x})) is bool else False if {pair} else True)"
            return f"(False if type(({t} := {x})) is bool else True if {pair} else False)"
        raise NotWritten(kind.__name__)

    def order_literal(
        self, other: Node, constant: Any, var: str, kind: str, *, null: str, literal_left: bool
    ) -> str:
        ns = self.ns
        x, c, op = self.value(other, var, None), ns.literal(constant), _ORDER_OPS[kind]
        t, k = ns.temp(), ns.temp()
        compare = f"{c} {op} {t}" if literal_left else f"{t} {op} {c}"
        comparable = ns.const(_comparable)
        return (
            f"({compare} if ({k} := type(({t} := {x}))) is int or {k} is float or {k} is str "
            f"else {null} if {t} is None or {k} is bool "
            f"else ({compare} if {comparable}({t}) else {null}))"
        )
