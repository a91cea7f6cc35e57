"""The aggregations' byte budget: what keeps a window's DynamoDB item under 400 KB
(``distinct`` exact while its values fit, ``first``/``last`` values refused past it)."""

from __future__ import annotations

import json
import uuid

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.aggregations import (
    DISTINCT_LIMIT,
    STATE_BUDGET,
    Distinct,
    ValueTooLarge,
    build_aggregation,
    encoded_size,
    over_budget,
    share_budget,
)
from processors.chain import Chain, Step
from processors.window import Window
from processors.window_store import decode, encode
from stream.records import Record

UUID_BYTES = 39  # "…36 characters…" and its comma


def distinct(budget: int) -> Distinct:
    agg = Distinct("id")
    agg.budget = budget
    return agg


class TestDistinctBudget:
    def test_10000_uuids_stay_within_the_budget_and_say_at_least(self) -> None:
        agg = build_aggregation("distinct", "id")
        acc = agg.create()
        for _ in range(DISTINCT_LIMIT):
            acc = agg.add(acc, str(uuid.uuid4()), 0.0)
        kept = STATE_BUDGET // UUID_BYTES
        assert agg.result(acc) == {"at_least": kept}
        assert len(encode(acc)) <= STATE_BUDGET + 100  # the list around them

    def test_the_count_of_bytes_is_the_encoded_text_s(self) -> None:
        agg = distinct(10**6)
        acc = agg.create()
        for value in ["a", "é", 3, 2.5, {"b": [1, None]}, "a", True]:
            acc = agg.add(acc, value, 0.0)
        text = encode(acc[0])  # {"$set":[...]}
        assert acc[2] == len(text) - len('{"$set":[]}') + 1

    def test_a_value_over_the_budget_makes_it_at_least_and_smaller_ones_still_count(self) -> None:
        agg = distinct(100)
        acc = agg.create()
        acc = agg.add(acc, "x" * 200, 0.0)
        acc = agg.add(acc, "y", 0.0)
        assert agg.result(acc) == {"at_least": 1}

    def test_an_accumulator_stored_before_the_budget_is_read_and_counted(self) -> None:
        """State written by the previous version: ``[values, overflowed]``."""
        agg = distinct(50)
        old = decode(encode([{"aaaa", "bbbb"}, False]))
        acc = agg.add(old, "cccc", 0.0)
        assert (agg.result(acc), acc[2]) == (3, 21)
        acc = agg.add(acc, "d" * 40, 0.0)
        assert agg.result(acc) == {"at_least": 3}
        merged = agg.merge(decode(encode([{"x"}, False])), decode(encode([{"y"}, True])))
        assert agg.result(merged) == {"at_least": 2}

    @settings(deadline=None)
    @given(
        budget=st.integers(1, 400),
        left=st.lists(st.text(max_size=12) | st.integers(), max_size=30),
        right=st.lists(st.text(max_size=12) | st.integers(), max_size=30),
    )
    def test_merged_or_not_the_kept_values_never_pass_the_budget(
        self, budget: int, left: list[object], right: list[object]
    ) -> None:
        agg = distinct(budget)
        a, b = agg.create(), agg.create()
        for v in left:
            a = agg.add(a, v, 0.0)
        for v in right:
            b = agg.add(b, v, 0.0)
        for acc in (a, b, agg.merge(a, b)):
            assert acc[2] == sum(encoded_size(v) + 1 for v in acc[0]) <= budget
            exact = len({*left, *right}) if acc is not a and acc is not b else None
            if exact is not None and not acc[1]:
                assert agg.result(acc) == exact


class TestShareBudget:
    def test_the_budget_is_divided_among_the_aggregations_that_keep_values(self) -> None:
        aggs = [build_aggregation(k, "v") for k in ("sum", "distinct", "distinct", "first")]
        share_budget(aggs)
        assert [getattr(a, "budget", None) for a in aggs] == [None, *[STATE_BUDGET // 3] * 3]

    def test_a_window_step_shares_it_when_built(self) -> None:
        step = Window(key="u", size_s=60, field="ts", state="memory",
                      aggregate={"a": {"distinct": "x"}, "b": {"last": "y"}})  # fmt: skip
        assert [a.budget for a in step._aggs] == [STATE_BUDGET // 2] * 2  # type: ignore[attr-defined]

    def test_over_budget_measures_the_json_text(self) -> None:
        assert not over_budget("é" * 10, len(json.dumps("é" * 10)))
        assert over_budget("é" * 10, len(json.dumps("é" * 10)) - 1)
        assert over_budget({"k": "v" * 20}, 20)
        assert not over_budget(1.5, 1)


class TestLargeValues:
    def test_a_first_value_over_its_share_is_dead_lettered_before_any_change(self) -> None:
        step = Window(key="u", size_s=60, field="ts", state="memory",
                      aggregate={"n": "count", "p": {"first": "p"}})  # fmt: skip
        docs = [{"u": "a", "ts": 1, "p": "x" * STATE_BUDGET}, {"u": "a", "ts": 2, "p": "/"},
                {"u": "b", "ts": 61, "p": "/"}]  # fmt: skip
        recs = [Record(orjson.dumps(d), d["u"], str(i + 1), shard_id="s0", index=i)
                for i, d in enumerate(docs)]  # fmt: skip
        result = Chain([Step.of("w", step)]).run(recs)
        assert [type(f.error) for f in result.failures] == [ValueTooLarge]
        assert [(r.get("n"), r.get("p")) for r in result.records] == [(1, "/")]


@pytest.mark.parametrize("kind", ["distinct", "first", "last"])
def test_the_budgeted_aggregations_build_with_the_whole_budget(kind: str) -> None:
    assert build_aggregation(kind, "v").budget == STATE_BUDGET  # type: ignore[attr-defined]
