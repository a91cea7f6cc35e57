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
  record has no such field, except ``count`` without a field), in order, in place.

It is transparent: the same accumulators and the same errors as calling each
aggregation's ``create``/``add``. An exact built-in is written inline as its method does
it; ``distinct``, subclasses and plugins are called through their own methods. The source
is kept on :attr:`Fold.source` for debugging.

>>> from processors.aggregations import build_aggregation
>>> fold = compile_fold([build_aggregation("count", None), build_aggregation("sum", "amount"),
...                      build_aggregation("max", "amount")])
>>> accs = fold.create()
>>> for doc in ({"amount": 3}, {"amount": 5}, {}):
...     fold.fold(accs, fold.read(doc.get), 0.0)
>>> accs
[3, 8, 5]
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from processors.aggregations import Avg, Count, First, Last, Max, Min, NotANumber, Sum

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
        source: the generated Python source.
    """

    __slots__ = ("create", "fold", "read", "source")

    def __init__(self, source: str, namespace: dict[str, Any]) -> None:
        self.source = source
        exec(_compiled(source), namespace)
        self.read: Callable[[Callable[[str], Any]], Any] = namespace["read"]
        self.create: Callable[[], list[Any]] = namespace["create"]
        self.fold: Callable[[list[Any], Any, float], None] = namespace["fold"]


@lru_cache(maxsize=64)
def _compiled(source: str) -> CodeType:
    """Compiled once per distinct source: a bench or a test builds many steps alike."""
    return compile(source, "<window fold>", "exec")


def _not_a_number(field: str, value: Any) -> None:
    msg = f"field {field!r} is {value!r}, not a number: this window sums or compares it"
    raise NotANumber(msg)


def compile_fold(aggs: Sequence[Aggregation]) -> Fold:
    """Write and compile the ``read``/``create``/``fold`` of ``aggs`` (in their order)."""
    namespace: dict[str, Any] = {"_not_a_number": _not_a_number}
    fields: dict[str, str] = {}  # field -> its variable, in the order first read
    for agg in aggs:
        if agg.field and agg.field not in fields:
            fields[agg.field] = f"v{len(fields)}"
    for i, name in enumerate(fields):
        namespace[f"F{i}"] = name
    read = ["def read(get):"]
    read += [f"    {var} = get(F{i})" for i, var in enumerate(fields.values())]
    checked: set[str] = set()
    for agg in aggs:
        field = agg.field
        if field and isinstance(agg, NUMERIC) and field not in checked:
            checked.add(field)
            var = fields[field]
            read += [
                f"    if {var} is not None and type({var}) is not int "
                f"and type({var}) is not float:",
                f"        _not_a_number(F{list(fields).index(field)}, {var})",
            ]
    names = list(fields.values())
    returned = "None" if not names else names[0] if len(names) == 1 else ", ".join(names)
    read.append(f"    return {returned}")
    create_items = []
    fold = [f"def fold(accs, {'_' if not names else returned if len(names) == 1 else 'vs'}, t):"]
    if len(names) > 1:
        fold.append(f"    {', '.join(names)} = vs")
    for i, agg in enumerate(aggs):
        kind = type(agg)
        if kind in _CREATE:
            create_items.append(_CREATE[kind])
        else:
            namespace[f"create{i}"] = agg.create
            create_items.append(f"create{i}()")
        var = fields[agg.field] if agg.field else None
        if kind in _ADD:
            lines = [line.format(i=i, v=var) for line in _ADD[kind]]
        else:
            namespace[f"add{i}"] = agg.add
            lines = [f"accs[{i}] = add{i}(accs[{i}], {var or 'True'}, t)"]
        if var is None:
            fold += [f"    {line}" for line in lines]
        else:
            fold.append(f"    if {var} is not None:")
            fold += [f"        {line}" for line in lines]
    fold.append("    return None")
    create = ["def create():", f"    return [{', '.join(create_items)}]"]
    return Fold("\n".join([*read, "", *create, "", *fold, ""]), namespace)
