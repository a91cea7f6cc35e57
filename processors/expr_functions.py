"""Compiled JMESPath function calls for :mod:`processors.expr`.

Why this exists: ``jmespath.functions.Functions.call_function`` looks the function
up by name, checks arity and then type-checks every argument (and every element
of array arguments) on each call, which costs a few microseconds. For the
functions that filters actually use (``length``, ``contains``, ``starts_with``,
...) we check the exact JSON types of the arguments inline and compute the result
directly. Whenever that happy-path check fails, or arity is wrong, or the name is
unknown, we hand the already-evaluated arguments to ``call_function`` itself, so
errors (``JMESPathTypeError``, ``ArityError``, ``UnknownFunctionError``) are raised
by jmespath with its own messages and at the same moment jmespath would raise them:
at evaluation time, not at compile time.

Arguments are always evaluated eagerly and left to right before the function
body runs, exactly like ``TreeInterpreter.visit_function_expression``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from jmespath import functions

__all__ = ["BOOLEAN_FUNCTIONS", "compile_function"]

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    Fn = Callable[[Any], Any]

_FUNCTIONS = functions.Functions()
_call_function = _FUNCTIONS.call_function

# Exact Python type -> JMESPath type name, for the ``type()`` fast path.
_TYPE_NAMES: dict[type, str] = {
    str: "string",
    bool: "boolean",
    list: "array",
    dict: "object",
    int: "number",
    float: "number",
    type(None): "null",
}


def _is_num(value: Any) -> bool:
    """Return True for the exact types jmespath's type checker calls ``number``."""
    t = type(value)
    return t is int or t is float


def _all_numbers(values: list[Any]) -> bool:
    return all(type(v) is int or type(v) is float for v in values)


def _homogeneous(values: list[Any]) -> bool:
    """Mirror the ``array-number``/``array-string`` dynamic check for a non-empty list."""
    if type(values[0]) is str:
        return all(type(v) is str for v in values)
    return _all_numbers(values)


def _length(x: Any) -> Any:
    t = type(x)
    if t is str or t is list or t is dict:
        return len(x)
    return _call_function("length", [x])


def _contains(subject: Any, search: Any) -> Any:
    t = type(subject)
    if t is list or t is str:
        # Same operator as jmespath, so `contains('abc', `1`)` raises the same TypeError.
        return search in subject
    return _call_function("contains", [subject, search])


def _starts_with(s: Any, prefix: Any) -> Any:
    if type(s) is str and type(prefix) is str:
        return s.startswith(prefix)
    return _call_function("starts_with", [s, prefix])


def _ends_with(s: Any, suffix: Any) -> Any:
    if type(s) is str and type(suffix) is str:
        return s.endswith(suffix)
    return _call_function("ends_with", [s, suffix])


def _type(x: Any) -> Any:
    name = _TYPE_NAMES.get(type(x))
    return name if name is not None else _call_function("type", [x])


def _to_string(x: Any) -> Any:
    return x if type(x) is str else _call_function("to_string", [x])


def _to_number(x: Any) -> Any:
    return x if _is_num(x) else _call_function("to_number", [x])


def _keys(x: Any) -> Any:
    return list(x) if type(x) is dict else _call_function("keys", [x])


def _values(x: Any) -> Any:
    return list(x.values()) if type(x) is dict else _call_function("values", [x])


def _abs(x: Any) -> Any:
    return abs(x) if _is_num(x) else _call_function("abs", [x])


def _ceil(x: Any) -> Any:
    return math.ceil(x) if _is_num(x) else _call_function("ceil", [x])


def _floor(x: Any) -> Any:
    return math.floor(x) if _is_num(x) else _call_function("floor", [x])


def _max(x: Any) -> Any:
    if type(x) is list and (not x or _homogeneous(x)):
        return max(x) if x else None
    return _call_function("max", [x])


def _min(x: Any) -> Any:
    if type(x) is list and (not x or _homogeneous(x)):
        return min(x) if x else None
    return _call_function("min", [x])


def _sum(x: Any) -> Any:
    if type(x) is list and _all_numbers(x):
        return sum(x)
    return _call_function("sum", [x])


def _avg(x: Any) -> Any:
    if type(x) is list and _all_numbers(x):
        return sum(x) / len(x) if x else None
    return _call_function("avg", [x])


def _join(glue: Any, items: Any) -> Any:
    if type(glue) is str and type(items) is list and all(type(v) is str for v in items):
        return glue.join(items)
    return _call_function("join", [glue, items])


_UNARY: dict[str, Callable[[Any], Any]] = {
    "length": _length,
    "type": _type,
    "to_string": _to_string,
    "to_number": _to_number,
    "keys": _keys,
    "values": _values,
    "abs": _abs,
    "ceil": _ceil,
    "floor": _floor,
    "max": _max,
    "min": _min,
    "sum": _sum,
    "avg": _avg,
}

_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "contains": _contains,
    "starts_with": _starts_with,
    "ends_with": _ends_with,
    "join": _join,
}

#: Functions whose result is always True or False (or which raise).
BOOLEAN_FUNCTIONS = frozenset({"contains", "starts_with", "ends_with"})


def compile_function(name: str, args: Sequence[Fn]) -> Fn:
    """Build a closure that evaluates ``name(args...)`` like jmespath does.

    Args:
        name: Function name as written in the expression (may be unknown; jmespath
            only rejects unknown names when the call is evaluated, and so do we).
        args: Compiled argument closures, evaluated left to right on each call.

    Returns:
        A one-argument closure taking the current value.
    """
    if len(args) == 1 and name in _UNARY:
        impl1 = _UNARY[name]
        (a,) = args
        return lambda value: impl1(a(value))
    if len(args) == 2 and name in _BINARY:
        impl2 = _BINARY[name]
        a, b = args
        return lambda value: impl2(a(value), b(value))
    if name == "not_null" and args:
        arg_fns = tuple(args)

        def not_null(value: Any) -> Any:
            # jmespath evaluates every argument first (errors included), then picks.
            resolved = [f(value) for f in arg_fns]
            for item in resolved:
                if item is not None:
                    return item
            return None

        return not_null

    arg_fns = tuple(args)
    return lambda value: _call_function(name, [f(value) for f in arg_fns])
