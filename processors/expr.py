"""Compile JMESPath expressions into nested Python closures.

Why: a filter processor evaluates one JMESPath expression on every record of a Lambda
batch (~10,000 records). ``jmespath.compile(src).search(doc)`` builds an interpreter and
walks the AST with a generic visitor on every call (several µs each). We parse once with
jmespath's own parser and turn the AST into closures once, so an evaluation is a few
plain Python calls with direct ``dict.get`` access (a fraction of a µs).

The contract is ``compile_expr(src)(doc) == jmespath.search(src, doc)`` for every
document, *including jmespath 1.1.0's quirks*, reproduced rather than "fixed": ordering
operators compare numbers and also strings (number-vs-string raises ``TypeError``, any
other operand gives null); ``==`` keeps a bool apart from 0/1 only at the top level
(``[true] == [1]`` is true); field access on a non-object gives null. Node types and
functions not compiled here are delegated to jmespath's ``TreeInterpreter`` for that
sub-tree, so every valid expression works.
"""

from __future__ import annotations

import operator
from numbers import Number
from typing import TYPE_CHECKING, Any, Final

from jmespath import exceptions, parser, visitor

from processors.errors import ProcessorError
from processors.expr_functions import BOOLEAN_FUNCTIONS, compile_function

if TYPE_CHECKING:
    from collections.abc import Callable

    Fn = Callable[[Any], Any]
    Node = dict[str, Any]

__all__ = ["ExprError", "compile_expr", "compile_predicate", "is_truthy"]

_INTERPRETER = visitor.TreeInterpreter()
_ORDERING = {"lt": operator.lt, "lte": operator.le, "gt": operator.gt, "gte": operator.ge}
_COMPARABLE = frozenset({int, float, str})


class ExprError(ProcessorError, ValueError):
    """Raised for an expression that does not parse.

    The message names the expression, the 0-based position and what was expected, with
    a caret under the column: expressions come from YAML config, read by a person.

    Attributes:
        expression: The source text that failed to parse.
        position: 0-based character offset of the problem.
        reason: What was expected or found, in words.
    """

    def __init__(self, expression: str, position: int, reason: str) -> None:
        self.expression = expression
        self.position = position
        self.reason = reason
        super().__init__(
            f"invalid JMESPath expression {expression!r} at position {position}: {reason}\n"
            f"    {expression}\n    {' ' * position}^"
        )


def is_truthy(value: Any) -> bool:
    """Return JMESPath truthiness of ``value``.

    Why not ``bool()``: in JMESPath ``0`` and ``0.0`` are *true*; only ``false``,
    ``null`` and empty strings, arrays and objects are false. Exact JSON types take a
    fast path; anything else uses jmespath's own equality-based test.
    """
    t = type(value)
    if t is bool:
        return value is True
    if value is None:
        return False
    if t is str or t is list or t is dict:
        return len(value) > 0
    if t is int or t is float:
        return True
    return not (value in ("", [], {}) or value is False)


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, Number)


def _comparable(value: Any) -> bool:
    """Mirror ``jmespath.visitor._is_comparable``: non-bool numbers and strings."""
    return type(value) in _COMPARABLE or _is_number(value) or isinstance(value, str)


def _equals(x: Any, y: Any) -> bool:
    """Mirror ``jmespath.visitor._equals``: a bool never equals the number 0 or 1."""
    if type(x) is bool:
        if type(y) is bool:
            return x is y
        return not _is_number(y) and bool(x == y)
    if type(y) is bool:
        return not _is_number(x) and bool(x == y)
    return bool(x == y)


def _get_other(value: Any, name: str) -> Any:
    """Field access on a non-dict: jmespath calls ``.get`` and maps AttributeError to null."""
    if value is None:
        return None
    try:
        return value.get(name)
    except AttributeError:
        return None


def _not(value: Any) -> bool:
    """Mirror ``visit_not_expression``: ``!0`` is false, otherwise Python ``not``."""
    t = type(value)
    if t is int or t is float or _is_number(value):
        return False
    return not value


def _is_boolish(node: Node) -> bool:
    """True when the compiled node can only return True, False or None.

    For such values Python's ``and``/``or``/truth test agree with JMESPath's, so the
    compiler can use them directly instead of calling :func:`is_truthy`.
    """
    kind = node["type"]
    if kind in ("comparator", "not_expression"):
        return True
    if kind in ("and_expression", "or_expression"):
        return all(_is_boolish(child) for child in _operands(node, frozenset({kind})))
    if kind == "literal":
        return node["value"] is None or type(node["value"]) is bool
    return kind == "function_expression" and node["value"] in BOOLEAN_FUNCTIONS


def _is_identity(node: Node) -> bool:
    return node["type"] in ("identity", "current")


def _fallback(node: Node) -> Fn:
    """Evaluate ``node`` with jmespath's own interpreter (exact, just slower)."""
    visit = _INTERPRETER.visit
    return lambda value: visit(node, value)


def _field(name: str) -> Fn:
    def field(value: Any) -> Any:
        return value.get(name) if type(value) is dict else _get_other(value, name)

    return field


def _field_chain(names: list[str]) -> Fn:
    """``a.b``, ``a.b.c``...: one closure, no intermediate calls."""
    if len(names) == 2:
        a, b = names

        def chain2(v: Any) -> Any:
            v = v.get(a) if type(v) is dict else _get_other(v, a)
            return v.get(b) if type(v) is dict else _get_other(v, b)

        return chain2
    path = tuple(names)

    def chain(v: Any) -> Any:
        for name in path:
            v = v.get(name) if type(v) is dict else _get_other(v, name)
        return v

    return chain


#: Node types that feed each result into the next; nested in any way, they are one chain.
_COMPOSE: Final = frozenset({"subexpression", "index_expression", "pipe"})


def _operands(node: Node, kinds: frozenset[str]) -> list[Node]:
    """The operands of a chain of ``kinds`` nodes, left to right, however it is nested.

    Why: jmespath's parser nests ``a | b | c`` and ``a || b || c`` one level per operator,
    and a closure per level recursed once per operator, both when compiling and when a record
    was evaluated: 49 fields in a pipe or 40 ``||`` were enough to come near Python's
    recursion limit. The operations are associative (composition; first truthy/falsy value
    left to right), so one flat list evaluated in a loop gives the same results in the same
    order. Iterative, so the depth of the input does not matter.
    """
    out: list[Node] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if current["type"] in kinds:
            stack.extend(reversed(current["children"]))
        else:
            out.append(current)
    return out


def _sequence(children: list[Node]) -> Fn:
    """subexpression / index_expression / pipe: feed each result into the next."""
    children = [op for child in children for op in _operands(child, _COMPOSE)]
    if all(child["type"] == "field" for child in children):
        return _field_chain([child["value"] for child in children])
    fns = tuple(_compile(child) for child in children)
    if len(fns) == 2:
        first, second = fns
        return lambda v: second(first(v))

    def sequence(v: Any) -> Any:
        for fn in fns:
            v = fn(v)
        return v

    return sequence


def _index(i: int) -> Fn:
    def index(value: Any) -> Any:
        return value[i] if isinstance(value, list) and -len(value) <= i < len(value) else None

    return index


def _slice(start: int | None, stop: int | None, step: int | None) -> Fn:
    s = slice(start, stop, step)  # a zero step raises ValueError on use, as in jmespath
    return lambda value: value[s] if isinstance(value, list) else None


def _collect(right: Node) -> Callable[[Any], list[Any]]:
    """Apply the right-hand side of a projection to each element, dropping nulls."""
    if _is_identity(right):
        return lambda items: [e for e in items if e is not None]
    if right["type"] == "field":
        name = right["value"]
        return lambda items: [
            r
            for e in items
            if (r := e.get(name) if type(e) is dict else _get_other(e, name)) is not None
        ]
    rhs = _compile(right)
    return lambda items: [r for e in items if (r := rhs(e)) is not None]


def _projection(node: Node) -> Fn:
    """``a[*].b`` (over a list) and ``a.*.b`` (over an object's values)."""
    left, right = node["children"]
    base, collect = _compile(left), _collect(right)
    if node["type"] == "projection":
        return lambda v: collect(items) if isinstance(items := base(v), list) else None

    def value_projection(value: Any) -> Any:
        items = base(value)
        try:
            items = items.values()
        except AttributeError:
            return None
        return collect(items)

    return value_projection


def _flatten(node: Node) -> Fn:
    base = _compile(node["children"][0])

    def flatten(value: Any) -> Any:
        items = base(value)
        if not isinstance(items, list):
            return None
        merged: list[Any] = []
        for e in items:
            if isinstance(e, list):
                merged.extend(e)
            else:
                merged.append(e)
        return merged

    return flatten


def _filter_projection(node: Node) -> Fn:
    """``a[?cond].b``: test and project element by element.

    Interleaved exactly like jmespath (not "filter all, then project") so that when two
    elements would raise different errors, the first one raised is the same.
    """
    left, right, condition = node["children"]
    base = _compile(left)
    cond = _compile_bool(condition) if _is_boolish(condition) else _truth(_compile(condition))
    rhs = None if _is_identity(right) else _compile(right)

    def filter_projection(value: Any) -> Any:
        items = base(value)
        if not isinstance(items, list):
            return None
        if rhs is None:
            return [e for e in items if cond(e) and e is not None]
        return [r for e in items if cond(e) and (r := rhs(e)) is not None]

    return filter_projection


def _truth(fn: Fn) -> Callable[[Any], bool]:
    return lambda v: is_truthy(fn(v))


def _literal(node: Node) -> Fn:
    constant = node["value"]
    return lambda _value: constant


def _eq_literal(name: str, constant: Any, negate: bool) -> Fn:
    """``field == literal``: one closure; plain ``==`` unless bool-vs-0/1 can occur."""
    plain = type(constant) in (str, dict, list, type(None)) or (
        _is_number(constant) and constant not in (0, 1)
    )
    if plain and not negate:
        return lambda v: (v.get(name) if type(v) is dict else _get_other(v, name)) == constant
    if plain:
        return lambda v: (v.get(name) if type(v) is dict else _get_other(v, name)) != constant

    def eq(v: Any) -> bool:
        x = v.get(name) if type(v) is dict else _get_other(v, name)
        return _equals(x, constant) is not negate

    return eq


def _order_literal(name: str, constant: Any, op: Callable[[Any, Any], Any], null: Any) -> Fn:
    """``field > literal``: one closure; a non-comparable literal means always null."""
    if not _comparable(constant):
        return lambda _v: null

    def order(v: Any) -> Any:
        x = v.get(name) if type(v) is dict else _get_other(v, name)
        if type(x) in _COMPARABLE or _comparable(x):
            return op(x, constant)
        return null

    return order


def _comparator(node: Node, null: Any = None) -> Fn:
    """Compile ``==``, ``<``, ...; ``null`` is what a non-comparable ordering yields."""
    kind = node["value"]
    left, right = node["children"]
    if left["type"] == "field" and right["type"] == "literal":
        if kind in ("eq", "ne"):
            return _eq_literal(left["value"], right["value"], kind == "ne")
        return _order_literal(left["value"], right["value"], _ORDERING[kind], null)
    lhs, rhs = _compile(left), _compile(right)
    if kind == "eq":
        return lambda v: _equals(lhs(v), rhs(v))
    if kind == "ne":
        return lambda v: not _equals(lhs(v), rhs(v))
    op = _ORDERING[kind]

    def order(v: Any) -> Any:
        x, y = lhs(v), rhs(v)
        return op(x, y) if _comparable(x) and _comparable(y) else null

    return order


def _and_or(node: Node) -> Fn:
    is_or = node["type"] == "or_expression"
    operands = _operands(node, frozenset({node["type"]}))
    if len(operands) > 2:  # a flat loop: no recursion per operator
        return _and_or_chain(operands, is_or=is_or)
    left, right = operands
    lhs, rhs = _compile(left), _compile(right)
    if _is_boolish(left):
        # lhs yields True/False/None, where Python truth == JMESPath truth.
        if is_or:
            return lambda v: lhs(v) or rhs(v)
        return lambda v: lhs(v) and rhs(v)
    if is_or:
        return lambda v: r if is_truthy(r := lhs(v)) else rhs(v)
    return lambda v: rhs(v) if is_truthy(r := lhs(v)) else r


def _and_or_chain(operands: list[Node], *, is_or: bool) -> Fn:
    """``a || b || c ...``: the first truthy (``&&``: falsy) value, else the last one."""
    *firsts, last_node = operands
    heads = tuple(_compile(op) for op in firsts)
    last = _compile(last_node)

    def chain(v: Any) -> Any:
        for fn in heads:
            r = fn(v)
            if is_truthy(r) is is_or:
                return r
        return last(v)

    return chain


def _compile_bool(node: Node) -> Callable[[Any], bool]:
    """Compile a node for which :func:`_is_boolish` holds so it returns True or False.

    Used by :func:`compile_predicate`: null (the only falsy non-bool such a node can
    yield) becomes False at the leaves, so the filter hot path needs no wrapper call.
    """
    kind = node["type"]
    if kind == "comparator":
        return _comparator(node, null=False)
    if kind in ("and_expression", "or_expression"):
        fns = tuple(_compile_bool(child) for child in _operands(node, frozenset({kind})))
        if len(fns) > 2:
            test = any if kind == "or_expression" else all
            return lambda v: test(fn(v) for fn in fns)
        lhs, rhs = fns
        if kind == "or_expression":
            return lambda v: lhs(v) or rhs(v)
        return lambda v: lhs(v) and rhs(v)
    if kind == "literal":
        constant = node["value"] is True
        return lambda _v: constant
    return _compile(node)  # `!` and contains/starts_with/ends_with already return bool


def _not_expression(node: Node) -> Fn:
    inner = _compile(node["children"][0])
    return lambda v: _not(inner(v))


def _multi_select_list(node: Node) -> Fn:
    fns = tuple(_compile(child) for child in node["children"])
    return lambda v: None if v is None else [fn(v) for fn in fns]


def _multi_select_dict(node: Node) -> Fn:
    pairs = tuple((child["value"], _compile(child)) for child in node["children"])
    return lambda v: None if v is None else {key: fn(v) for key, fn in pairs}


def _function(node: Node) -> Fn:
    args = node["children"]
    if any(arg["type"] == "expref" for arg in args):
        # sort_by/min_by/max_by/map: jmespath calls back into its own visitor.
        return _fallback(node)
    return compile_function(node["value"], [_compile(arg) for arg in args])


_COMPILERS: dict[str, Callable[[Node], Fn]] = {
    "field": lambda node: _field(node["value"]),
    "subexpression": lambda node: _sequence(node["children"]),
    "index_expression": lambda node: _sequence(node["children"]),
    "pipe": lambda node: _sequence(node["children"]),
    "index": lambda node: _index(node["value"]),
    "slice": lambda node: _slice(*node["children"]),
    "projection": _projection,
    "value_projection": _projection,
    "flatten": _flatten,
    "filter_projection": _filter_projection,
    "literal": _literal,
    "current": lambda _node: lambda v: v,
    "identity": lambda _node: lambda v: v,
    "comparator": _comparator,
    "and_expression": _and_or,
    "or_expression": _and_or,
    "not_expression": _not_expression,
    "multi_select_list": _multi_select_list,
    "multi_select_dict": _multi_select_dict,
    "key_val_pair": lambda node: _compile(node["children"][0]),
    "function_expression": _function,
}


def _compile(node: Node) -> Fn:
    compiler = _COMPILERS.get(node["type"])
    return compiler(node) if compiler is not None else _fallback(node)


def _parse(source: str) -> Node:
    """Parse with jmespath's parser, turning its errors into :class:`ExprError`."""
    try:
        parsed: Node = parser.Parser().parse(source).parsed
    except RecursionError as exc:  # jmespath's parser recurses per prefix operator or '('
        raise ExprError(source, 0, "nested too deeply to parse") from exc
    except exceptions.EmptyExpressionError as exc:
        raise ExprError(source, 0, "expression is empty") from exc
    except exceptions.IncompleteExpressionError as exc:
        reason = "unexpected end of expression, expected more input"
        raise ExprError(source, len(source), reason) from exc
    except exceptions.LexerError as exc:
        raise ExprError(source, exc.lexer_position, exc.message) from exc
    except exceptions.ParseError as exc:
        got = f"got {exc.token_value!r} ({exc.token_type.lower()})"
        msg: str = exc.msg
        if msg.startswith("Expecting: "):
            expected = msg.removeprefix("Expecting: ").split(", got:")[0]
            expected = expected.strip("[]").replace("'", "")
            one_of = "one of " if "," in expected else ""
            reason = f"expected {one_of}{expected}, {got}"
        elif msg.startswith("Unexpected token"):
            reason = f"expected an operator or end of expression, {got}"
        else:
            reason = f"{msg.rstrip('.')}, {got}"
        raise ExprError(source, exc.lex_position, reason) from exc
    return parsed


def compile_expr(source: str) -> Callable[[Any], Any]:
    """Compile a JMESPath expression into a fast evaluator.

    Args:
        source: The JMESPath expression text.

    Returns:
        ``f(doc)`` equal to ``jmespath.search(source, doc)`` for every ``doc``,
        raising the same exception classes at evaluation time (e.g.
        ``JMESPathTypeError`` for bad function arguments, ``UnknownFunctionError``).

    Raises:
        ExprError: If ``source`` does not parse.
    """
    try:
        return _compile(_parse(source))
    except RecursionError as exc:  # the parser and compiler recurse per level of nesting
        raise ExprError(source, 0, "nested too deeply to compile") from exc


def compile_predicate(source: str) -> Callable[[Any], bool]:
    """Compile a JMESPath expression used as a record filter.

    Args:
        source: The JMESPath expression text.

    Returns:
        ``f(doc) -> bool`` applying JMESPath truthiness to the result, so ``0`` keeps
        a record while ``null``, ``false`` and empty strings/arrays/objects drop it.

    Raises:
        ExprError: If ``source`` does not parse.
    """
    node = _parse(source)
    try:
        return _compile_bool(node) if _is_boolish(node) else _truth(_compile(node))
    except RecursionError as exc:  # as compile_expr: validation and the runtime agree
        raise ExprError(source, 0, "nested too deeply to compile") from exc
