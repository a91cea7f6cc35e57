"""A window step's aggregations compiled into generated functions, once per step.

Why: the window steps (:mod:`processors.window`, :mod:`processors.session`) fold each
record into its window's accumulators. Called aggregation by aggregation, that is a list of
the values, a numeric check per aggregation, and one ``add`` call each, per record and
window: measured with cachegrind, most of the step's cost over a hand-written dict loop
(``python -m bench window``). The aggregations are configuration, so when the step is built
:func:`compile_fold` writes three functions for its set:

* ``read(get) -> values``: each distinct field read once from the document's ``get``, each
  field a numeric aggregation (``sum``, ``min``, ``max``, ``avg``) reads checked to be a
  number (else :class:`~processors.aggregations.NotANumber`, with the message ``add``
  would give), before anything changes; ``values`` is ``None`` (no field), the one field's
  value, or a tuple of them;
* ``create() -> accs``: the empty accumulators, a list literal for the built-ins;
* ``fold(accs, values, t)``: every aggregation's ``add`` of its value (skipped when the
  record has no such field, except ``count`` without a field), in place, all or nothing:
  the adds that can raise (plugins' and subclasses', called through their methods) go
  first, and when one raises, those before it get their accumulators back (deep copies
  taken before them, only when there are two or more such adds), so the window is as it
  was; then the built-ins' inline adds, which cannot raise on the values ``read`` let
  through, each field's under one ``is not None`` test;
* ``result(window_id, key, start, end, accs) -> dict``: a closed window's result document
  (``window_id``, ``key``, ``window_start``, ``window_end``, then each aggregation's
  ``result`` under its name, in order) as one dict display.

It is transparent: the same accumulators and the same errors as calling each
aggregation's ``create``/``add`` (each add touches its own accumulator, so their order
does not change the result), except that a raising add leaves no other add done. An exact
built-in is written inline as its method does it; ``distinct``, subclasses and plugins are
called through their own methods. The source is kept on :attr:`Fold.source` for debugging.

>>> from processors.aggregations import build_aggregation
>>> fold = compile_fold([build_aggregation("count", None), build_aggregation("sum", "amount"),
...                      build_aggregation("max", "amount")])
>>> accs = fold.create()
>>> for doc in ({"amount": 3}, {"amount": 5}, {}):
...     fold.fold(accs, fold.read(doc.get), 0.0)
>>> accs
[3, 8, 5]
>>> fold.result("f/u1/T0", "u1", "T0", "T1", accs)["max"]
5
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from processors.aggregations import (
    Avg,
    Count,
    Distinct,
    First,
    Last,
    Max,
    Min,
    NotANumber,
    Sum,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import CodeType

    from processors.aggregations import Aggregation

__all__ = ["NUMERIC", "Fold", "compile_fold"]

#: Aggregations whose field must hold numbers (subclasses too: they inherit ``add``).
NUMERIC = (Sum, Min, Max, Avg)

# An exact built-in's ``add`` inline: ``a`` is accs[i] (loaded when the line uses it), ``v``
# the value; the lines run only when the value is not None (count without a field: always).
_ADD: dict[type[Any], tuple[str, ...]] = {
    Count: ("accs[{i}] += 1",),
    Sum: ("accs[{i}] += {v}",),
    Min: ("a = accs[{i}]", "if a is None or {v} < a:", "    accs[{i}] = {v}"),
    Max: ("a = accs[{i}]", "if a is None or {v} > a:", "    accs[{i}] = {v}"),
    Avg: ("a = accs[{i}]", "a[0] += {v}", "a[1] += 1"),
    First: ("a = accs[{i}]", "if a is None or t < a[0]:", "    accs[{i}] = [t, {v}]"),
    Last: ("a = accs[{i}]", "if a is None or t >= a[0]:", "    accs[{i}] = [t, {v}]"),
}
#: The exact built-ins whose ``add`` does not raise on what ``read`` lets through.
_SAFE = frozenset({*_ADD, Distinct})
# An exact built-in's ``result(acc)`` as an expression of accs[i] (the condition of a
# conditional expression is evaluated first, so it binds ``a``).
_RESULT: dict[type[Any], str] = {
    Count: "accs[{i}]",
    Sum: "accs[{i}]",
    Min: "accs[{i}]",
    Max: "accs[{i}]",
    Avg: "(a[0] / a[1] if (a := accs[{i}])[1] else None)",
    First: "(None if (a := accs[{i}]) is None else a[1])",
    Last: "(None if (a := accs[{i}]) is None else a[1])",
}
# An exact built-in's ``create()`` as a literal (a new list each call: ``[0, 0]`` is).
_CREATE: dict[type[Any], str] = {
    Count: "0", Sum: "0", Min: "None", Max: "None", Avg: "[0, 0]", First: "None", Last: "None",
}  # fmt: skip


class Fold:
    """The generated ``read``, ``create`` and ``fold`` of one set of aggregations.

    Attributes:
        read: ``read(get) -> values`` (see the module docstring).
        create: ``create() -> accs``.
        fold: ``fold(accs, values, t)``.
        result: ``result(window_id, key, start, end, accs) -> dict``.
        source: the generated Python source.
        guarded: whether an ``add`` can raise (a plugin's or a subclass's): ``fold`` is then
            atomic for one window only, and a step adding a record to several windows
            (hopping) must undo the earlier ones itself when a later one raises.
    """

    __slots__ = ("create", "fold", "guarded", "read", "result", "source")

    def __init__(self, source: str, namespace: dict[str, Any], guarded: bool = False) -> None:
        self.source = source
        self.guarded = guarded
        exec(_compiled(source), namespace)
        self.read: Callable[[Callable[[str], Any]], Any] = namespace["read"]
        self.create: Callable[[], list[Any]] = namespace["create"]
        self.fold: Callable[[list[Any], Any, float], None] = namespace["fold"]
        self.result: Callable[[str, Any, str, str, list[Any]], dict[str, Any]]
        self.result = namespace["result"]


@lru_cache(maxsize=64)
def _compiled(source: str) -> CodeType:
    """Compiled once per distinct source: a bench or a test builds many steps alike."""
    return compile(source, "<window fold>", "exec")


def _not_a_number(field: str, value: Any) -> None:
    msg = f"field {field!r} is {value!r}, not a number: this window sums or compares it"
    raise NotANumber(msg)


def compile_fold(aggs: Sequence[Aggregation], names: Sequence[str] | None = None) -> Fold:
    """Write and compile the functions of ``aggs`` (in their order); ``names``: the result
    name of each (default ``count``, ``sum``...: the kinds, for tests)."""
    if names is None:
        names = [type(agg).__name__.lower() for agg in aggs]
    namespace: dict[str, Any] = {"_not_a_number": _not_a_number}
    fields: dict[str, str] = {}  # field -> its variable, in the order first read
    for agg in aggs:
        if agg.field and agg.field not in fields:
            namespace[f"F{len(fields)}"] = agg.field
            fields[agg.field] = f"v{len(fields)}"
    variables = ", ".join(fields.values()) or "None"
    source = [
        *_read(aggs, fields, variables),
        "",
        *_create(aggs, namespace),
        "",
        *_fold(aggs, fields, variables, namespace),
        "",
        *_result(aggs, names, namespace),
        "",
    ]
    return Fold("\n".join(source), namespace, any(map(_fallible, aggs)))


def _fallible(agg: Aggregation) -> bool:
    """Whether ``agg.add`` may raise on a value ``read`` let through: not for the exact
    built-ins (inline, or ``distinct``, which takes any JSON value)."""
    return type(agg) not in _SAFE


def _read(aggs: Sequence[Aggregation], fields: dict[str, str], variables: str) -> list[str]:
    lines = ["def read(get):"]
    lines += [f"    {var} = get(F{i})" for i, var in enumerate(fields.values())]
    checked: set[str] = set()
    for agg in aggs:
        field = agg.field
        if field and isinstance(agg, NUMERIC) and field not in checked:
            checked.add(field)
            var = fields[field]
            lines += [
                f"    if {var} is not None and type({var}) is not int "
                f"and type({var}) is not float:",
                f"        _not_a_number(F{var[1:]}, {var})",
            ]
    lines.append(f"    return {variables}")
    return lines


def _create(aggs: Sequence[Aggregation], namespace: dict[str, Any]) -> list[str]:
    items = []
    for i, agg in enumerate(aggs):
        literal = _CREATE.get(type(agg))
        if literal is None:
            namespace[f"create{i}"] = agg.create
            literal = f"create{i}()"
        items.append(literal)
    return ["def create():", f"    return [{', '.join(items)}]"]


def _fold(
    aggs: Sequence[Aggregation], fields: dict[str, str], variables: str, namespace: dict[str, Any]
) -> list[str]:
    several = len(fields) > 1
    lines = [f"def fold(accs, {'vs' if several else variables.replace('None', '_')}, t):"]
    if several:
        lines.append(f"    {variables} = vs")
    risky = [i for i, agg in enumerate(aggs) if _fallible(agg)]
    lines += _risky_adds(aggs, risky, fields, namespace)
    groups: dict[str | None, list[str]] = {}  # variable (None: always) -> its adds' lines
    for i, agg in enumerate(aggs):
        if i in risky:
            continue
        var = fields[agg.field] if agg.field else None
        inline = _ADD.get(type(agg))
        if inline is not None:
            body = [line.format(i=i, v=var) for line in inline]
        else:  # distinct: its method, which does not raise
            namespace[f"add{i}"] = agg.add
            body = [f"accs[{i}] = add{i}(accs[{i}], {var or 'True'}, t)"]
        groups.setdefault(var, []).extend(body)
    for var, body in groups.items():
        if var is None:
            lines += [f"    {line}" for line in body]
        else:
            lines.append(f"    if {var} is not None:")
            lines += [f"        {line}" for line in body]
    lines.append("    return None")
    return lines


def _risky_adds(
    aggs: Sequence[Aggregation], risky: list[int], fields: dict[str, str], namespace: dict[str, Any]
) -> list[str]:
    """The adds that can raise, first and all or nothing: the ones before the last are
    called on accumulators saved beforehand (``deepcopy``: an add may change its
    accumulator in place), put back when a later one raises. A single one needs nothing
    saved: an add that raises changes nothing (the aggregation contract)."""
    calls = []
    for i in risky:
        field = aggs[i].field
        var = fields[field] if field else None
        namespace[f"add{i}"] = aggs[i].add
        call = f"accs[{i}] = add{i}(accs[{i}], {var or 'True'}, t)"
        calls.append(call if var is None else f"if {var} is not None: {call}")
    if len(calls) < 2:
        return [f"    {call}" for call in calls]
    namespace["_deepcopy"] = copy.deepcopy
    saved = risky[:-1]
    lines = [f"    s{i} = _deepcopy(accs[{i}])" for i in saved]
    lines.append("    try:")
    lines += [f"        {call}" for call in calls]
    lines.append("    except Exception:")
    lines += [f"        accs[{i}] = s{i}" for i in saved]
    lines.append("        raise")
    return lines


def _result(
    aggs: Sequence[Aggregation], names: Sequence[str], namespace: dict[str, Any]
) -> list[str]:
    lines = [
        "def result(window_id, key, start, end, accs):",
        '    return {"window_id": window_id, "key": key, "window_start": start,',
        '            "window_end": end,',
    ]
    for i, (agg, name) in enumerate(zip(aggs, names, strict=True)):
        namespace[f"N{i}"] = name
        value = _RESULT.get(type(agg))
        if value is None:
            namespace[f"result{i}"] = agg.result
            value = f"result{i}(accs[{i}])"
        lines.append(f"            N{i}: {value.format(i=i)},")
    lines.append("    }")
    return lines
