"""The aggregations of the ``window`` step: built-ins and the plugin contract.

An aggregation folds the values of one field over the records of one key and window. It is
an object with four methods, the same for built-ins and plugins (entry-point group
``shardline.aggregations``; the entry point names a class taking the field, or ``None``):

* ``create() -> acc``: the empty accumulator;
* ``add(acc, value, at) -> acc``: one record's value (never ``None``: records without the
  field are skipped, except by ``count``) and its event time ``at`` (epoch seconds);
* ``merge(a, b) -> acc``: two accumulators of disjoint records of the same window, ``a``'s
  records before ``b``'s (the DynamoDB store merges a batch's partial into the stored one);
* ``result(acc) -> JSON value``: what the window's result record holds under its name.

Accumulators are JSON values (lists, numbers, strings) or sets: what a durable state store
can keep. ``add`` may mutate and return ``acc``, and must raise, if it does, before it
changes anything: a :class:`~stream.exceptions.RecordError` to refuse the record, which is
then dead-lettered and added to no aggregation of any of its windows (the window steps
call the adds that can raise first and give the others back what they had,
:mod:`processors.fold`; a window the record would have opened is not opened).

>>> avg = Avg("amount")
>>> acc = avg.add(avg.add(avg.create(), 2, 0.0), 4, 1.0)
>>> avg.result(acc), avg.result(avg.merge(acc, avg.add(avg.create(), 6, 2.0)))
(3.0, 4.0)
>>> first = build_aggregation("first", "page")
>>> late, early = first.add(first.create(), "/b", 5.0), first.add(first.create(), "/a", 1.0)
>>> first.result(first.merge(late, early))
'/a'
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Protocol

from processors.errors import ProcessorError
from stream.exceptions import RecordError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "AGGREGATION_GROUP",
    "BUILTIN_AGGREGATIONS",
    "DISTINCT_LIMIT",
    "STATE_BUDGET",
    "Aggregation",
    "AggregationError",
    "NotANumber",
    "ValueTooLarge",
    "aggregation_names",
    "build_aggregation",
    "encoded_size",
    "over_budget",
    "share_budget",
]

#: The entry-point group of aggregation plugins.
AGGREGATION_GROUP = "shardline.aggregations"

#: How many distinct values ``distinct`` keeps per key and window: its count is exact up to
#: here (and while the values fit its byte budget). Past it, new values are no longer kept
#: and the result is ``{"at_least": N}``.
DISTINCT_LIMIT = 10_000

#: The bytes of JSON text that the accumulators of one key and window may take. DynamoDB
#: refuses an item over 400 KB, and a window's item holds its accumulators twice (``acc``
#: and ``prev``, the state before the batch that wrote it: :mod:`processors.window_items`),
#: plus its key and a few small attributes: 2 x 170 KB leaves room for those.
STATE_BUDGET = 170_000


class AggregationError(ProcessorError, ValueError):
    """An aggregation that does not exist, or is configured wrong (a field missing...)."""


class NotANumber(ProcessorError, RecordError):
    """A numeric aggregation met a value that is not a number: the record is dead-lettered."""


class ValueTooLarge(ProcessorError, RecordError):
    """A ``first``/``last`` value too large for the window's state item (its share of
    :data:`STATE_BUDGET`): the record is dead-lettered, the window goes on without it."""


class Aggregation(Protocol):
    """What the window step calls; see the module docstring."""

    #: the record field it reads, or ``None`` (``count``: every record)
    field: str | None

    def create(self) -> Any: ...
    def add(self, acc: Any, value: Any, at: float) -> Any: ...
    def merge(self, a: Any, b: Any) -> Any: ...
    def result(self, acc: Any) -> Any: ...


def _number(field: str | None, value: Any) -> float | int:
    if type(value) is int or type(value) is float:
        return value
    msg = f"field {field!r} is {value!r}, not a number: this window sums or compares it"
    raise NotANumber(msg)


class Count:
    """How many records (``field`` given: how many have it)."""

    __slots__ = ("field",)

    def __init__(self, field: str | None = None) -> None:
        self.field = field

    def create(self) -> int:
        return 0

    def add(self, acc: int, value: Any, at: float) -> int:
        return acc + 1

    def merge(self, a: int, b: int) -> int:
        return a + b

    def result(self, acc: int) -> int:
        return acc


class _Field:
    __slots__ = ("field",)

    def __init__(self, field: str | None = None) -> None:
        if not field:
            msg = f"{type(self).__name__.lower()} needs a field, e.g. {{sum: amount}}"
            raise AggregationError(msg)
        self.field = field


class Sum(_Field):
    """The sum of the field's numbers (0 without any)."""

    __slots__ = ()

    def create(self) -> int | float:
        return 0

    def add(self, acc: float, value: Any, at: float) -> float:
        return acc + _number(self.field, value)

    def merge(self, a: float, b: float) -> float:
        return a + b

    def result(self, acc: float) -> float:
        return acc


class Min(_Field):
    """The least number (``None`` without any)."""

    __slots__ = ()

    def create(self) -> float | None:
        return None

    def add(self, acc: float | None, value: Any, at: float) -> float:
        value = _number(self.field, value)
        return value if acc is None or value < acc else acc

    def merge(self, a: float | None, b: float | None) -> float | None:
        return b if a is None else a if b is None else min(a, b)

    def result(self, acc: float | None) -> float | None:
        return acc


class Max(_Field):
    """The greatest number (``None`` without any)."""

    __slots__ = ()

    def create(self) -> float | None:
        return None

    def add(self, acc: float | None, value: Any, at: float) -> float:
        value = _number(self.field, value)
        return value if acc is None or value > acc else acc

    def merge(self, a: float | None, b: float | None) -> float | None:
        return b if a is None else a if b is None else max(a, b)

    def result(self, acc: float | None) -> float | None:
        return acc


class Avg(_Field):
    """The mean of the numbers (``None`` without any); the accumulator is [sum, count]."""

    __slots__ = ()

    def create(self) -> list[float]:
        return [0, 0]

    def add(self, acc: list[float], value: Any, at: float) -> list[float]:
        acc[0] += _number(self.field, value)
        acc[1] += 1
        return acc

    def merge(self, a: list[float], b: list[float]) -> list[float]:
        return [a[0] + b[0], a[1] + b[1]]

    def result(self, acc: list[float]) -> float | None:
        return acc[0] / acc[1] if acc[1] else None


def encoded_size(value: Any) -> int:
    """The bytes of ``value`` in the state's JSON text (ASCII: non-ASCII is escaped).

    >>> encoded_size("abc"), encoded_size({"a": [1, 2]}), encoded_size("é")
    (5, 11, 8)
    """
    if (
        type(value) is str
        and value.isascii()
        and value.isprintable()
        and '"' not in value
        and "\\" not in value
    ):
        return len(value) + 2  # nothing to escape: the text and its quotes
    return len(json.dumps(value, separators=(",", ":")))


def over_budget(value: Any, budget: int) -> bool:
    """Whether ``value``'s JSON text takes more than ``budget`` bytes (numbers and short
    strings without encoding them: a character takes at most 6 bytes escaped).

    >>> over_budget("x" * 10, 12), over_budget("x" * 11, 12), over_budget(10**30, 12)
    (False, True, False)
    """
    kind = type(value)
    if kind is int or kind is float or kind is bool:
        return False
    if kind is str and 6 * len(value) + 2 <= budget:
        return False
    return encoded_size(value) > budget


def share_budget(aggs: Sequence[Any]) -> None:
    """Divide :data:`STATE_BUDGET` among the aggregations whose accumulator grows with the
    values (those with a ``budget`` attribute: ``distinct``, ``first``, ``last``), so that
    a window's item with all of them full stays under DynamoDB's 400 KB.

    >>> aggs = [Count(), Distinct("a"), Last("b")]
    >>> share_budget(aggs)
    >>> aggs[1].budget, aggs[2].budget
    (85000, 85000)
    """
    bounded = [agg for agg in aggs if hasattr(agg, "budget")]
    for agg in bounded:
        agg.budget = STATE_BUDGET // len(bounded)


def _hashable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)):
        return value
    import orjson  # noqa: PLC0415  # objects and lists only

    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _kept_bytes(values: set[Any]) -> int:
    return sum(encoded_size(v) + 1 for v in values)


class Distinct(_Field):
    """How many distinct values: exact while it keeps at most :data:`DISTINCT_LIMIT` values
    per key and window and their JSON text fits its ``budget`` (bytes: its share of
    :data:`STATE_BUDGET`, set by the step through :func:`share_budget`); past either, new
    values are no longer kept and the result is ``{"at_least": N}`` (N the values kept).
    Values compare as Python does (1 and 1.0 are one value); objects and lists by their
    JSON text with sorted keys. The accumulator is ``[values, overflowed, bytes]``; state
    stored before the byte budget (``[values, overflowed]``) gets its bytes counted when
    next added to.

    >>> d = Distinct("id")
    >>> d.budget = 20
    >>> acc = d.create()
    >>> for v in ["aaaa", "bbbb", "aaaa", "cccc", "dddd"]:
    ...     acc = d.add(acc, v, 0.0)
    >>> d.result(acc), acc[2]
    ({'at_least': 2}, 14)
    """

    __slots__ = ("budget",)

    def __init__(self, field: str | None = None) -> None:
        super().__init__(field)
        #: the bytes its kept values may take in a window's state
        self.budget = STATE_BUDGET

    def create(self) -> list[Any]:
        return [set(), False, 0]

    def add(self, acc: list[Any], value: Any, at: float) -> list[Any]:
        seen: set[Any] = acc[0]
        value = _hashable(value)
        if value in seen:
            return acc
        if len(acc) < 3:  # stored before the byte budget
            acc.append(_kept_bytes(seen))
        size = encoded_size(value) + 1  # and its comma
        if len(seen) < DISTINCT_LIMIT and acc[2] + size <= self.budget:
            seen.add(value)
            acc[2] += size
        else:
            acc[1] = True
        return acc

    def merge(self, a: list[Any], b: list[Any]) -> list[Any]:
        out = [set(a[0]), a[1] or b[1], a[2] if len(a) > 2 else _kept_bytes(a[0])]
        for value in b[0]:
            self.add(out, value, 0.0)
        return out

    def result(self, acc: list[Any]) -> int | dict[str, int]:
        return {"at_least": len(acc[0])} if acc[1] else len(acc[0])


class First(_Field):
    """The value of the record with the earliest event time (the earlier in shard order on a
    tie); the accumulator is ``[at, value]`` or ``None``. A value whose JSON text is over
    ``budget`` bytes is refused by the step (:class:`ValueTooLarge`)."""

    __slots__ = ("budget",)

    def __init__(self, field: str | None = None) -> None:
        super().__init__(field)
        self.budget = STATE_BUDGET

    def create(self) -> list[Any] | None:
        return None

    def add(self, acc: list[Any] | None, value: Any, at: float) -> list[Any]:
        return [at, value] if acc is None or at < acc[0] else acc

    def merge(self, a: list[Any] | None, b: list[Any] | None) -> list[Any] | None:
        return b if a is None else a if b is None or a[0] <= b[0] else b

    def result(self, acc: list[Any] | None) -> Any:
        return None if acc is None else acc[1]


class Last(_Field):
    """The value of the record with the latest event time (the later in shard order on a
    tie); the accumulator is ``[at, value]`` or ``None``. A value whose JSON text is over
    ``budget`` bytes is refused by the step (:class:`ValueTooLarge`)."""

    __slots__ = ("budget",)

    def __init__(self, field: str | None = None) -> None:
        super().__init__(field)
        self.budget = STATE_BUDGET

    def create(self) -> list[Any] | None:
        return None

    def add(self, acc: list[Any] | None, value: Any, at: float) -> list[Any]:
        return [at, value] if acc is None or at >= acc[0] else acc

    def merge(self, a: list[Any] | None, b: list[Any] | None) -> list[Any] | None:
        return b if a is None else a if b is None or a[0] > b[0] else b

    def result(self, acc: list[Any] | None) -> Any:
        return None if acc is None else acc[1]


#: The built-in aggregations by name.
BUILTIN_AGGREGATIONS: Mapping[str, type[Any]] = {
    "count": Count,
    "sum": Sum,
    "min": Min,
    "max": Max,
    "avg": Avg,
    "distinct": Distinct,
    "first": First,
    "last": Last,
}


def aggregation_names() -> set[str]:
    """Every aggregation a window may use: the built-ins and installed plugins."""
    from stream.plugins import entry_point_names  # noqa: PLC0415  # reads metadata: only here

    return set(BUILTIN_AGGREGATIONS) | entry_point_names(AGGREGATION_GROUP)


def build_aggregation(kind: str, field: str | None) -> Aggregation:
    """The aggregation ``kind`` over ``field`` (``None``: no field, e.g. ``count``).

    Raises:
        AggregationError: no such aggregation, or it needs a field.
        PluginError: the plugin does not load.
    """
    cls = BUILTIN_AGGREGATIONS.get(kind)
    if cls is None:
        from stream.plugins import entry_point_names, load_entry_point  # noqa: PLC0415

        if kind not in entry_point_names(AGGREGATION_GROUP):
            known = ", ".join(BUILTIN_AGGREGATIONS)
            msg = (
                f"unknown aggregation {kind!r} (built-ins: {known}; plugins register under "
                f"the entry-point group {AGGREGATION_GROUP!r})"
            )
            raise AggregationError(msg)
        cls = load_entry_point(AGGREGATION_GROUP, kind)
    agg: Aggregation = cls(field)
    return agg
