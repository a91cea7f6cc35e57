"""A record an aggregation refuses (its ``add`` raised) is added to no aggregation of any of
its windows: the windows' results are those of a run without the record, and no window is
opened by it. Plugins are the aggregations whose ``add`` may raise; they are installed here
as entry points of the ``shardline.aggregations`` group, as a distribution would."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stream.plugins
from processors.aggregations import AGGREGATION_GROUP, build_aggregation
from processors.chain import Chain, Step
from processors.errors import ProcessorError
from processors.fold import compile_fold
from processors.session import SessionWindow
from processors.window import Window
from stream.exceptions import RecordError
from stream.records import Record


class Refused(ProcessorError, RecordError):
    """What the test plugins raise for a record they refuse."""


class Picky:
    """The values, in order; refuses the value ``"bad"`` (before changing anything)."""

    def __init__(self, field: str | None) -> None:
        self.field = field

    def create(self) -> list[Any]:
        return []

    def add(self, acc: list[Any], value: Any, at: float) -> list[Any]:
        if value == "bad":
            raise Refused("picky: no bad values")
        acc.append(value)
        return acc

    def merge(self, a: list[Any], b: list[Any]) -> list[Any]:
        return a + b

    def result(self, acc: list[Any]) -> list[Any]:
        return acc


class Capped(Picky):
    """The values, at most three: a fourth is refused (depends on the accumulator, so a
    record may fit one of its hopping windows and not another). Changes ``acc`` in place,
    merges into ``a`` in place: what an undo has to survive."""

    def add(self, acc: list[Any], value: Any, at: float) -> list[Any]:
        if len(acc) >= 3:
            raise Refused("capped: three values at most")
        acc.append(value)
        return acc

    def merge(self, a: list[Any], b: list[Any]) -> list[Any]:
        a.extend(b)
        return a


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """``picky`` and ``capped`` installed as aggregation plugins for one test."""
    members = {"picky": "Picky", "capped": "Capped"}
    group = {k: EntryPoint(k, f"{__name__}:{v}", AGGREGATION_GROUP) for k, v in members.items()}
    monkeypatch.setattr(stream.plugins, "_group", lambda name: group if name == AGGREGATION_GROUP
                        else {})  # fmt: skip


#: count and sum before the plugins: the old fold had added the record to them already
AGGREGATE = {"n": "count", "total": {"sum": "x"}, "tags": {"picky": "tag"},
             "few": {"capped": "tag"}, "top": {"max": "x"}}  # fmt: skip
T0 = 1_767_225_600


def _records(docs: list[dict[str, Any]]) -> list[Record]:
    return [Record(orjson.dumps(d), d["k"], str(100 + i), shard_id="s0", index=i)
            for i, d in enumerate(docs)]  # fmt: skip


def _step(kind: str) -> Window | SessionWindow:
    common = {"key": "k", "field": "ts", "aggregate": AGGREGATE, "state": "memory",
              "allowed_lateness_s": 30}  # fmt: skip
    if kind == "session":
        return SessionWindow(gap_s=30, **common)
    return Window(size_s=60, slide_s=20 if kind == "hopping" else None, **common)


def _run(kind: str, docs: list[dict[str, Any]], batch: int) -> tuple[list[Any], list[int]]:
    """The results of the docs in batches of ``batch`` (then a record far later, closing
    every window), and the indexes of the records refused."""
    chain = Chain([Step.of("processors[0].window", _step(kind))])
    docs = [*docs, {"k": "end", "ts": T0 + 10_000, "x": 0, "tag": "a"}]
    records = _records(docs)
    results: list[Any] = []
    refused: list[int] = []
    for first in range(0, len(records), batch):
        out = chain.run(records[first : first + batch])
        results += [r.as_dict() for r in out.records]
        for failure in out.failures:
            assert isinstance(failure.error, Refused), failure.error
            refused.append(failure.record.index)
    return results, sorted(refused)


DOCS = st.lists(
    st.fixed_dictionaries({
        "k": st.sampled_from(["a", "b"]),
        "ts": st.integers(T0, T0 + 200),
        "x": st.integers(0, 9),
        "tag": st.sampled_from(["p", "q", "bad"]),
    }),
    max_size=25,
)  # fmt: skip


@pytest.mark.parametrize("kind", ["tumbling", "hopping", "session"])
@settings(
    deadline=None, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(docs=DOCS, batch=st.integers(1, 30))
def test_a_refused_record_leaves_the_results_of_a_run_without_it(
    plugins: None, kind: str, docs: list[dict[str, Any]], batch: int
) -> None:
    results, refused = _run(kind, docs, batch)
    without = [d for i, d in enumerate(docs) if i not in refused]
    again, none = _run(kind, without, batch)
    assert none == []
    assert results == again
    assert all(r["n"] > 0 and len(r["tags"]) == r["n"] for r in results)  # nothing half-added


@pytest.mark.parametrize("kind", ["tumbling", "hopping", "session"])
def test_a_record_refused_by_a_later_aggregation_opens_no_window_and_counts_nowhere(
    plugins: None, kind: str
) -> None:
    docs = [{"k": "a", "ts": T0 + 5, "x": 1, "tag": "p"},
            {"k": "b", "ts": T0 + 6, "x": 7, "tag": "bad"},  # b's only record: refused
            {"k": "a", "ts": T0 + 7, "x": 2, "tag": "bad"}]  # fmt: skip
    results, refused = _run(kind, docs, 10)
    assert refused == [1, 2]
    mine = [r for r in results if r["key"] != "end"]
    assert {r["key"] for r in mine} == {"a"}
    assert {(r["n"], r["total"], r["top"], tuple(r["tags"])) for r in mine} == {(1, 1, 1, ("p",))}


def test_hopping_windows_take_a_record_all_or_none(plugins: None) -> None:
    """The last record's windows start at T0-40 (one record in it), T0-20 (full: three)
    and T0: the second refuses it, so the first gives it back and the third is not opened."""
    docs = [{"k": "a", "ts": T0 - 30, "x": 1, "tag": "p"}]
    docs += [{"k": "a", "ts": T0 + 20 + i, "x": 1, "tag": "p"} for i in range(3)]
    docs.append({"k": "a", "ts": T0 + 1, "x": 5, "tag": "p"})
    results, refused = _run("hopping", docs, 10)
    assert refused == [4]
    mine = {r["window_start"][11:19]: r["n"] for r in results if r["key"] == "a"}
    assert mine == {"23:58:40": 1, "23:59:00": 1, "23:59:20": 1, "23:59:40": 3,
                    "00:00:00": 3, "00:00:20": 3}  # fmt: skip
    assert all(r["top"] == 1 for r in results if r["key"] == "a")


def test_the_fold_undoes_the_adds_before_a_raising_one() -> None:
    aggs = [
        build_aggregation("count", None),
        Capped("t"),
        Picky("t"),
        build_aggregation("sum", "x"),
    ]
    fold = compile_fold(aggs)
    accs = fold.create()
    fold.fold(accs, fold.read({"t": "p", "x": 2}.get), 0.0)
    with pytest.raises(Refused):
        fold.fold(accs, fold.read({"t": "bad", "x": 3}.get), 1.0)
    assert accs == [1, ["p"], ["p"], 2]
    assert fold.guarded


def test_built_ins_alone_are_not_guarded() -> None:
    kinds = ("count", "sum", "min", "max", "avg", "distinct", "first", "last")
    fold = compile_fold([build_aggregation(k, None if k == "count" else "x") for k in kinds])
    assert not fold.guarded
    assert "try:" not in fold.source
    assert "deepcopy" not in fold.source
