"""processors.fold: the generated read/create/fold/result of a window step's aggregations
give what the aggregations' own methods give, record by record, errors included."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.aggregations import BUILTIN_AGGREGATIONS, NotANumber, Sum, build_aggregation
from processors.fold import compile_fold
from processors.session import SessionWindow
from processors.window import Window


class _Doubled(Sum):
    """A subclass: its own add, still checked as a number (it is a Sum)."""

    __slots__ = ()

    def add(self, acc: float, value: Any, at: float) -> float:
        return acc + 2 * value


class _Keys:
    """A plugin-like aggregation (no built-in base): the values as a sorted list."""

    def __init__(self, field: str | None) -> None:
        self.field = field

    def create(self) -> list[Any]:
        return []

    def add(self, acc: list[Any], value: Any, at: float) -> list[Any]:
        acc.append(repr(value))
        return acc

    def merge(self, a: list[Any], b: list[Any]) -> list[Any]:
        return a + b

    def result(self, acc: list[Any]) -> list[Any]:
        return sorted(acc)


_FIELDS = ("a", "b")
_NUMBERS = st.one_of(st.integers(-5, 5), st.floats(-5, 5, allow_nan=False))
_VALUES = st.one_of(  # mostly numbers: a record that is not one only checks the error
    _NUMBERS, _NUMBERS, _NUMBERS, st.none(), st.sampled_from(["x", "y"]), st.booleans()
)
_AGGS = st.one_of(
    st.tuples(st.sampled_from(sorted(BUILTIN_AGGREGATIONS)), st.sampled_from(_FIELDS)),
    st.tuples(st.sampled_from(["count", "keys"]), st.none()),
    st.tuples(st.sampled_from(["doubled", "keys"]), st.sampled_from(_FIELDS)),
)


def _build(kind: str, field: str | None) -> Any:
    if kind == "doubled":
        return _Doubled(field)
    if kind == "keys":
        return _Keys(field)
    return build_aggregation(kind, field)


def _by_methods(aggs: list[Any], accs: list[Any], doc: dict[str, Any], t: float) -> None:
    """The window step's fold before it was generated: values first, numeric check, adds."""
    values = [doc.get(agg.field) if agg.field else True for agg in aggs]
    for agg, value in zip(aggs, values, strict=True):
        numeric = isinstance(agg, (Sum, *(BUILTIN_AGGREGATIONS[k] for k in ("min", "max", "avg"))))
        if numeric and value is not None and type(value) not in {int, float}:
            msg = f"field {agg.field!r} is {value!r}, not a number: this window sums or compares it"
            raise NotANumber(msg)
    for i, (agg, value) in enumerate(zip(aggs, values, strict=True)):
        if value is not None:
            accs[i] = agg.add(accs[i], value, t)


@settings(deadline=None, max_examples=300)
@given(
    specs=st.lists(_AGGS, min_size=1, max_size=5),
    docs=st.lists(
        st.tuples(st.dictionaries(st.sampled_from(_FIELDS), _VALUES), st.floats(0, 100)),
        max_size=12,
    ),
)
def test_generated_fold_equals_the_aggregations_methods(
    specs: list[tuple[str, str | None]], docs: list[tuple[dict[str, Any], float]]
) -> None:
    aggs = [_build(kind, field) for kind, field in specs]
    names = [f"r{i}" for i in range(len(aggs))]
    fold = compile_fold(aggs, names)
    expected = [agg.create() for agg in aggs]
    got = fold.create()
    assert got == expected
    for doc, t in docs:
        error = None
        try:
            _by_methods(aggs, expected, doc, t)
        except NotANumber as exc:
            error = str(exc)
        if error is not None:  # the same error, and nothing changed
            with pytest.raises(NotANumber, match=f"^{re.escape(error)}$"):
                fold.read(doc.get)
            assert got == expected
            continue
        fold.fold(got, fold.read(doc.get), t)
        assert got == expected
    out = fold.result("f/k/s", "k", "s", "e", copy.deepcopy(got))
    assert list(out) == ["window_id", "key", "window_start", "window_end", *names]
    assert [out[name] for name in names] == [
        agg.result(acc) for agg, acc in zip(aggs, expected, strict=True)
    ]


def test_built_ins_are_inline_and_others_called() -> None:
    aggs = [build_aggregation(k, "a") for k in ("count", "sum", "min", "max", "avg")]
    aggs += [build_aggregation("first", "a"), build_aggregation("last", "a")]
    assert "add" not in compile_fold(aggs).source.replace("def ", "")
    assert "add0(" in compile_fold([_Keys("a")]).source
    assert "add0(" in compile_fold([_Doubled("a")]).source


def test_a_result_named_like_a_bookkeeping_field_keeps_its_place_and_takes_the_value() -> None:
    fold = compile_fold([build_aggregation("count", None)], ["key"])
    out = fold.result("f/k/s", "k", "s", "e", [3])
    assert list(out) == ["window_id", "key", "window_start", "window_end"]
    assert out["key"] == 3


@pytest.mark.parametrize("cls", [Window, SessionWindow])
def test_the_steps_compile_their_aggregate_set_once_each(cls: type[Any]) -> None:
    size = {"size_s": 60} if cls is Window else {"gap_s": 60}
    step = cls(key="k", field="ts", state="memory", aggregate={"n": "count",
               "total": {"sum": "x"}}, **size)  # fmt: skip
    assert "accs[1] += v0" in step._fold.source
