"""FilterCriteria push-down: which leading match filters become Lambda filter patterns."""

from __future__ import annotations

from typing import Any

import pytest

from deploy.pipeline.pushdown import filter_criteria, pushable


def function(*matches: Any, pushdown: bool = True, then: Any = None) -> dict[str, Any]:
    steps: list[Any] = [{"filter": {"match": m}} for m in matches]
    if then is not None:
        steps.append(then)
    return {"filter_pushdown": pushdown, "processors": steps}


class TestFilterCriteria:
    def test_a_leading_match_filter_is_wrapped_under_data(self):
        assert filter_criteria(function({"kind": ["click"]})) == [{"data": {"kind": ["click"]}}]

    def test_nothing_is_pushed_when_pushdown_is_off(self):
        assert filter_criteria(function({"kind": ["click"]}, pushdown=False)) == []

    def test_leading_filters_on_different_fields_are_anded_into_one_pattern(self):
        got = filter_criteria(
            function({"kind": ["click"]}, {"user": {"tier": ["gold"]}}, {"user": {"n": [1]}})
        )
        assert got == [{"data": {"kind": ["click"], "user": {"tier": ["gold"], "n": [1]}}}]

    def test_a_filter_on_a_field_already_matched_stops_the_merge(self):
        got = filter_criteria(function({"kind": ["click"]}, {"kind": ["view"]}, {"b": [1]}))
        assert got == [{"data": {"kind": ["click"]}}]

    def test_only_filters_before_the_first_other_step_are_pushed(self):
        f = function({"a": [1]}, then={"enrich": {"set": {"x": 1}}})
        f["processors"].append({"filter": {"match": {"b": [2]}}})
        assert filter_criteria(f) == [{"data": {"a": [1]}}]

    def test_a_function_starting_with_another_step_pushes_nothing(self):
        f = {"filter_pushdown": True, "processors": [{"filter": {"expr": "a"}}]}
        assert filter_criteria(f) == []


class TestPushable:
    @pytest.mark.parametrize(
        "pattern",
        [
            {"a": [{"wildcard": "x*"}]},
            {"a": [{"cidr": "10.0.0.0/8"}]},
            {"a": [{"anything-but": {"prefix": "x"}}]},
            {"a": [{"anything-but": {"suffix": "x"}}]},
            {"a": [{"anything-but": {"equals-ignore-case": "x"}}]},
            {"a": {"b": [{"anything-but": {"wildcard": "*x"}}]}},
        ],
    )
    def test_operators_lambda_cannot_filter_are_not_pushed(self, pattern):
        assert not pushable(pattern)
        assert filter_criteria(function(pattern)) == []

    @pytest.mark.parametrize(
        "pattern",
        [
            {"a": ["x", 1, None]},
            {"a": [{"prefix": "x"}], "b": [{"suffix": ".png"}]},
            {"a": [{"prefix": {"equals-ignore-case": "x"}}]},
            {"a": [{"anything-but": ["x", "y"]}], "n": [{"numeric": [">", 0, "<=", 5]}]},
            {"a": [{"exists": False}], "b": [{"equals-ignore-case": "x"}]},
            {"$or": [{"a": ["x"]}, {"b": [1]}]},
        ],
    )
    def test_operators_lambda_supports_are_pushed(self, pattern):
        assert pushable(pattern)
        assert filter_criteria(function(pattern)) == [{"data": pattern}]


def test_a_field_named_through_a_dotted_key_counts_as_the_same_field() -> None:
    """AWS joins 'a.b' and a: {b}; merging them would name one field twice in one pattern."""
    function = {
        "filter_pushdown": True,
        "processors": [
            {"filter": {"match": {"a.b": ["x"]}}},
            {"filter": {"match": {"a": {"b": ["y"]}}}},
        ],
    }
    assert filter_criteria(function) == [{"data": {"a": {"b": ["x"]}}}]
