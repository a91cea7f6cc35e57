"""Tests for processors.match: AWS Lambda / EventBridge content-filter patterns.

The documented examples come from the Lambda "Filter rule syntax" table and "Filtering
examples", and from the EventBridge pages on event patterns, content filtering, arrays and
null values. The property test checks the compiled closures against ``reference_match``, a
slow interpreter written straight from the semantics listed in the module docstring.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.match import PatternError, compile_pattern, validate_pattern


def matches(pattern: dict[str, Any], doc: Any) -> bool:
    return compile_pattern(pattern)(doc)


def errors(pattern: Any) -> list[str]:
    return [str(e) for e in validate_pattern(pattern)]


# --------------------------------------------------------------------------- documented table


class TestNull:
    def test_documented_example_userid_is_null_matches_a_present_null(self) -> None:
        assert matches({"UserID": [None]}, {"UserID": None})

    def test_null_does_not_match_a_missing_field(self) -> None:
        assert not matches({"UserID": [None]}, {})

    def test_null_does_not_match_an_empty_string(self) -> None:
        assert not matches({"UserID": [None]}, {"UserID": ""})

    def test_null_does_not_match_false_or_zero(self) -> None:
        assert not matches({"UserID": [None]}, {"UserID": False})
        assert not matches({"UserID": [None]}, {"UserID": 0})

    def test_eventbridge_example_response_elements_null_matches(self) -> None:
        event = {
            "source": "aws.autoscaling",
            "detail": {"eventVersion": "", "responseElements": None},
        }
        pattern = {"source": ["aws.autoscaling"], "detail": {"responseElements": [None]}}
        assert matches(pattern, event)


class TestEmpty:
    def test_documented_example_lastname_is_empty_matches_an_empty_string(self) -> None:
        assert matches({"LastName": [""]}, {"LastName": ""})

    def test_empty_string_does_not_match_null(self) -> None:
        assert not matches({"LastName": [""]}, {"LastName": None})

    def test_empty_string_does_not_match_a_missing_field(self) -> None:
        assert not matches({"LastName": [""]}, {})

    def test_empty_string_does_not_match_a_non_empty_string(self) -> None:
        assert not matches({"LastName": [""]}, {"LastName": "Doe"})


class TestEquals:
    def test_documented_example_name_is_alice_matches(self) -> None:
        assert matches({"Name": ["Alice"]}, {"Name": "Alice"})

    def test_string_equality_is_case_sensitive(self) -> None:
        assert not matches({"Name": ["Alice"]}, {"Name": "alice"})

    def test_string_equality_does_no_normalisation(self) -> None:
        assert not matches({"Name": ["Alice"]}, {"Name": "Alice "})

    def test_number_equals_number(self) -> None:
        assert matches({"risk": [80]}, {"risk": 80})

    def test_integer_pattern_matches_equal_float(self) -> None:
        assert matches({"price": [5]}, {"price": 5.0})
        assert matches({"price": [5.0]}, {"price": 5})

    def test_number_does_not_match_its_string_form(self) -> None:
        assert not matches({"price": [5]}, {"price": "5"})
        assert not matches({"price": ["5"]}, {"price": 5})

    def test_booleans_match_booleans(self) -> None:
        assert matches({"ok": [True]}, {"ok": True})
        assert not matches({"ok": [True]}, {"ok": False})

    def test_lambda_console_example_a_is_one_or_two(self) -> None:
        assert matches({"a": [1, 2]}, {"a": 2})
        assert not matches({"a": [1, 2]}, {"a": 3})

    def test_eventbridge_macie_example_matches_nested_numbers(self) -> None:
        event = {"source": "aws.macie", "detail": {"risk-score": 80, "trigger": {"risk": 8}}}
        pattern = {
            "source": ["aws.macie"],
            "detail": {"risk-score": [80], "trigger": {"risk": [8]}},
        }
        assert matches(pattern, event)

    def test_missing_field_never_equals_anything(self) -> None:
        assert not matches({"Name": ["Alice"]}, {"Other": "Alice"})


class TestBooleansAreNotNumbers:
    def test_one_does_not_match_true(self) -> None:
        assert not matches({"flag": [1]}, {"flag": True})

    def test_true_does_not_match_one(self) -> None:
        assert not matches({"flag": [True]}, {"flag": 1})

    def test_zero_does_not_match_false(self) -> None:
        assert not matches({"flag": [0]}, {"flag": False})
        assert not matches({"flag": [False]}, {"flag": 0.0})

    def test_true_and_one_in_one_list_each_match_only_their_type(self) -> None:
        pattern = {"flag": [1, False]}
        assert matches(pattern, {"flag": 1})
        assert matches(pattern, {"flag": False})
        assert not matches(pattern, {"flag": True})
        assert not matches(pattern, {"flag": 0})

    def test_numeric_never_matches_a_boolean(self) -> None:
        assert not matches({"n": [{"numeric": [">=", 1]}]}, {"n": True})

    def test_anything_but_a_number_matches_a_boolean(self) -> None:
        assert matches({"n": [{"anything-but": 1}]}, {"n": True})


class TestAnd:
    def test_documented_example_location_and_day_both_match(self) -> None:
        pattern = {"Location": ["New York"], "Day": ["Monday"]}
        assert matches(pattern, {"Location": "New York", "Day": "Monday"})

    def test_and_fails_when_one_field_differs(self) -> None:
        pattern = {"Location": ["New York"], "Day": ["Monday"]}
        assert not matches(pattern, {"Location": "New York", "Day": "Tuesday"})

    def test_and_fails_when_one_field_is_missing(self) -> None:
        assert not matches({"Location": ["New York"], "Day": ["Monday"]}, {"Location": "New York"})

    def test_three_fields_must_all_match(self) -> None:
        pattern = {"a": [1], "b": [{"prefix": "x"}], "c": [{"exists": False}]}
        assert matches(pattern, {"a": 1, "b": "xy"})
        assert not matches(pattern, {"a": 1, "b": "xy", "c": 0})
        assert not matches(pattern, {"a": 1, "b": "y"})
        assert not matches(pattern, {"a": 2, "b": "xy"})

    def test_fields_not_in_the_pattern_are_ignored(self) -> None:
        assert matches({"Day": ["Monday"]}, {"Day": "Monday", "Other": [1, {"x": None}]})

    def test_lambda_filtering_example_partition_key_and_kinesis_data(self) -> None:
        pattern = {"partitionKey": ["1"], "data": {"Location": ["Los Angeles"]}}
        assert matches(pattern, {"partitionKey": "1", "data": {"Location": "Los Angeles"}})
        assert not matches(pattern, {"partitionKey": "2", "data": {"Location": "Los Angeles"}})


class TestOr:
    def test_documented_example_payment_type_credit_or_debit(self) -> None:
        pattern = {"PaymentType": ["Credit", "Debit"]}
        assert matches(pattern, {"PaymentType": "Credit"})
        assert matches(pattern, {"PaymentType": "Debit"})
        assert not matches(pattern, {"PaymentType": "Cash"})

    def test_values_and_operators_mix_in_one_list(self) -> None:
        pattern = {"x": ["a", {"prefix": "zz"}, {"numeric": [">", 10]}]}
        assert matches(pattern, {"x": "a"})
        assert matches(pattern, {"x": "zzz"})
        assert matches(pattern, {"x": 11})
        assert not matches(pattern, {"x": 10})


class TestOrMultipleFields:
    def test_documented_dollar_or_matches_either_field(self) -> None:
        pattern = {"$or": [{"Location": ["New York"]}, {"Day": ["Monday"]}]}
        assert matches(pattern, {"Location": "New York", "Day": "Sunday"})
        assert matches(pattern, {"Location": "Paris", "Day": "Monday"})
        assert not matches(pattern, {"Location": "Paris", "Day": "Sunday"})

    def test_dollar_or_is_anded_with_its_siblings(self) -> None:
        pattern = {
            "source": ["aws.cloudwatch"],
            "$or": [{"metricName": ["CPUUtilization"]}, {"namespace": ["AWS/EC2"]}],
        }
        assert matches(pattern, {"source": "aws.cloudwatch", "namespace": "AWS/EC2"})
        assert not matches(pattern, {"source": "aws.s3", "namespace": "AWS/EC2"})

    def test_dollar_or_alternatives_can_hold_several_fields(self) -> None:
        pattern = {"$or": [{"a": [1], "b": [2]}, {"c": [3]}]}
        assert matches(pattern, {"a": 1, "b": 2})
        assert not matches(pattern, {"a": 1, "b": 3})
        assert matches(pattern, {"c": 3})

    def test_dollar_or_can_nest_inside_an_object_and_inside_another_or(self) -> None:
        pattern = {
            "detail": {
                "$or": [
                    {"state": ["running"]},
                    {"$or": [{"code": [{"numeric": [">=", 500]}]}, {"retry": [True]}]},
                ]
            }
        }
        assert matches(pattern, {"detail": {"state": "running"}})
        assert matches(pattern, {"detail": {"code": 503}})
        assert matches(pattern, {"detail": {"retry": True}})
        assert not matches(pattern, {"detail": {"code": 404}})


class TestAnythingBut:
    def test_documented_example_weather_anything_but_raining(self) -> None:
        pattern = {"Weather": [{"anything-but": ["Raining"]}]}
        assert matches(pattern, {"Weather": "Sunny"})
        assert not matches(pattern, {"Weather": "Raining"})

    def test_single_string_form(self) -> None:
        pattern = {"detail": {"state": [{"anything-but": "initializing"}]}}
        assert matches(pattern, {"detail": {"state": "running"}})
        assert not matches(pattern, {"detail": {"state": "initializing"}})

    def test_single_number_form_compares_numerically(self) -> None:
        pattern = {"x-limit": [{"anything-but": 123}]}
        assert matches(pattern, {"x-limit": 124})
        assert not matches(pattern, {"x-limit": 123.0})

    def test_list_of_strings_form(self) -> None:
        pattern = {"state": [{"anything-but": ["stopped", "overloaded"]}]}
        assert matches(pattern, {"state": "running"})
        assert not matches(pattern, {"state": "overloaded"})

    def test_list_of_numbers_form(self) -> None:
        pattern = {"x-limit": [{"anything-but": [100, 200, 300]}]}
        assert matches(pattern, {"x-limit": 150})
        assert not matches(pattern, {"x-limit": 200})

    def test_absent_field_does_not_match(self) -> None:
        assert not matches({"state": [{"anything-but": "x"}]}, {})

    def test_object_valued_field_does_not_match(self) -> None:
        assert not matches({"state": [{"anything-but": "x"}]}, {"state": {"a": 1}})

    def test_values_of_another_type_are_anything_but(self) -> None:
        pattern = {"state": [{"anything-but": "x"}]}
        assert matches(pattern, {"state": 5})
        assert matches(pattern, {"state": None})
        assert matches({"n": [{"anything-but": [1, 2]}]}, {"n": "1"})

    def test_prefix_form_excludes_strings_with_the_prefix(self) -> None:
        pattern = {"Region": [{"anything-but": {"prefix": "us-"}}]}
        assert matches(pattern, {"Region": "eu-west-1"})
        assert not matches(pattern, {"Region": "us-east-1"})
        assert matches(pattern, {"Region": 5})

    def test_suffix_form_excludes_strings_with_the_suffix(self) -> None:
        pattern = {"FileName": [{"anything-but": {"suffix": ".png"}}]}
        assert matches(pattern, {"FileName": "a.jpg"})
        assert not matches(pattern, {"FileName": "a.png"})

    def test_equals_ignore_case_form_excludes_every_casing(self) -> None:
        pattern = {"state": [{"anything-but": {"equals-ignore-case": "initializing"}}]}
        assert not matches(pattern, {"state": "INITIALIZING"})
        assert matches(pattern, {"state": "running"})

    def test_equals_ignore_case_form_takes_a_list(self) -> None:
        pattern = {"state": [{"anything-but": {"equals-ignore-case": ["a", "B"]}}]}
        assert not matches(pattern, {"state": "b"})
        assert matches(pattern, {"state": "c"})

    def test_wildcard_form_excludes_matching_paths(self) -> None:
        pattern = {"FilePath": [{"anything-but": {"wildcard": "*/lib/*"}}]}
        assert not matches(pattern, {"FilePath": "/usr/lib/x"})
        assert matches(pattern, {"FilePath": "/usr/bin/x"})

    def test_wildcard_form_takes_a_list(self) -> None:
        pattern = {"FilePath": [{"anything-but": {"wildcard": ["*/lib/*", "*/bin/*"]}}]}
        assert not matches(pattern, {"FilePath": "/usr/bin/x"})
        assert matches(pattern, {"FilePath": "/usr/share/x"})

    def test_on_an_array_any_element_outside_the_set_matches(self) -> None:
        pattern = {"tags": [{"anything-but": "a"}]}
        assert matches(pattern, {"tags": ["a", "b"]})
        assert not matches(pattern, {"tags": ["a", "a"]})


class TestNumeric:
    def test_documented_example_price_equals_100(self) -> None:
        pattern = {"Price": [{"numeric": ["=", 100]}]}
        assert matches(pattern, {"Price": 100})
        assert matches(pattern, {"Price": 100.0})
        assert not matches(pattern, {"Price": 101})

    def test_documented_example_price_above_10_up_to_20(self) -> None:
        pattern = {"Price": [{"numeric": [">", 10, "<=", 20]}]}
        assert not matches(pattern, {"Price": 10})
        assert matches(pattern, {"Price": 10.5})
        assert matches(pattern, {"Price": 20})
        assert not matches(pattern, {"Price": 20.01})

    def test_lambda_filtering_example_temperature_above_50_up_to_60(self) -> None:
        pattern = {"data": {"Temperature": [{"numeric": [">", 50, "<=", 60]}]}}
        assert matches(pattern, {"data": {"Temperature": 55}})
        assert not matches(pattern, {"data": {"Temperature": 61}})

    @pytest.mark.parametrize(
        ("op", "bound", "true_for", "false_for"),
        [("<", 10, 9.99, 10), ("<=", 10, 10, 10.01), (">", 0, 0.5, 0), (">=", 0, 0, -0.5)],
    )
    def test_each_single_comparison_holds_on_one_side_only(
        self, op: str, bound: float, true_for: float, false_for: float
    ) -> None:
        pattern = {"n": [{"numeric": [op, bound]}]}
        assert matches(pattern, {"n": true_for})
        assert not matches(pattern, {"n": false_for})

    def test_eventbridge_example_scientific_notation_bound(self) -> None:
        assert matches({"x-limit": [{"numeric": ["=", 3.018e2]}]}, {"x-limit": 301.8})

    def test_numeric_does_not_match_a_numeric_string(self) -> None:
        assert not matches({"n": [{"numeric": [">", 0]}]}, {"n": "5"})

    def test_numeric_does_not_match_null_or_a_missing_field(self) -> None:
        assert not matches({"n": [{"numeric": [">", 0]}]}, {"n": None})
        assert not matches({"n": [{"numeric": [">", 0]}]}, {})

    def test_values_beyond_five_hundred_billion_never_match(self) -> None:
        """Current event-ruler's range is [-5e11, 5e11] (it was [-5e9, 5e9])."""
        assert not matches({"n": [{"numeric": [">", 0]}]}, {"n": 6e11})
        assert matches({"n": [{"numeric": [">", 0]}]}, {"n": 5e11})
        assert matches({"n": [{"numeric": [">", 0]}]}, {"n": 6e9})

    def test_values_with_more_than_six_decimal_places_have_no_numeric_form(self) -> None:
        """event-ruler keeps six decimal places; a longer number is not numerically matched."""
        assert matches({"n": [{"numeric": [">", 0]}]}, {"n": 1.000001})
        assert not matches({"n": [{"numeric": [">", 0]}]}, {"n": 1.0000001})

    @pytest.mark.parametrize("bound", [5e11, -5e11, 0.000001, 12.5])
    def test_bounds_in_range_with_six_decimals_are_valid(self, bound: float) -> None:
        assert validate_pattern({"n": [{"numeric": [">=", bound]}]}) == []

    @pytest.mark.parametrize("bound", [5.1e11, -6e11, 0.0000001, 1.1234567])
    def test_bounds_out_of_range_or_too_precise_are_rejected(self, bound: float) -> None:
        (error,) = validate_pattern({"n": [{"numeric": [">=", bound]}]})
        assert "at most 6 decimal places" in error.message

    def test_numeric_on_an_array_matches_if_any_element_does(self) -> None:
        assert matches({"n": [{"numeric": [">", 10]}]}, {"n": [1, "x", 11]})


class TestExists:
    def test_documented_example_product_name_exists(self) -> None:
        assert matches({"ProductName": [{"exists": True}]}, {"ProductName": "pen"})
        assert not matches({"ProductName": [{"exists": True}]}, {})

    def test_documented_example_product_name_does_not_exist(self) -> None:
        assert matches({"ProductName": [{"exists": False}]}, {})
        assert not matches({"ProductName": [{"exists": False}]}, {"ProductName": "pen"})

    def test_exists_true_holds_for_null_and_empty_string(self) -> None:
        assert matches({"a": [{"exists": True}]}, {"a": None})
        assert matches({"a": [{"exists": True}]}, {"a": ""})

    def test_exists_only_sees_leaf_nodes(self) -> None:
        # EventBridge: "c-count" holding an object is not a leaf, so exists: false matches.
        event = {"detail": {"state": ["initializing", "running"], "c-count": {"c1": 100}}}
        assert matches({"detail": {"c-count": [{"exists": False}]}}, event)
        assert not matches({"detail": {"c-count": [{"exists": True}]}}, event)

    def test_eventbridge_example_detail_state_exists(self) -> None:
        pattern = {"detail": {"state": [{"exists": True}]}}
        assert matches(pattern, {"detail": {"instance-id": "i-1", "state": "pending"}})
        assert not matches(pattern, {"detail": {"c-count": {"c1": 100}}})

    def test_does_not_exist_holds_when_the_parent_is_missing(self) -> None:
        assert matches({"detail": {"c-count": [{"exists": False}]}}, {"source": "x"})

    def test_does_not_exist_holds_for_an_empty_array(self) -> None:
        assert matches({"a": [{"exists": False}]}, {"a": []})
        assert not matches({"a": [{"exists": True}]}, {"a": []})

    def test_exists_false_or_a_value_matches_either(self) -> None:
        pattern = {"a": [{"exists": False}, "x"]}
        assert matches(pattern, {})
        assert matches(pattern, {"a": "x"})
        assert not matches(pattern, {"a": "y"})


class TestPrefix:
    def test_documented_example_region_begins_with_us(self) -> None:
        pattern = {"Region": [{"prefix": "us-"}]}
        assert matches(pattern, {"Region": "us-east-1"})
        assert not matches(pattern, {"Region": "eu-west-1"})

    def test_eventbridge_example_time_prefix(self) -> None:
        assert matches({"time": [{"prefix": "2017-10-02"}]}, {"time": "2017-10-02T18:43:48Z"})

    def test_prefix_is_case_sensitive(self) -> None:
        assert not matches({"Region": [{"prefix": "us-"}]}, {"Region": "US-east-1"})

    def test_prefix_ignoring_case(self) -> None:
        pattern = {"service": [{"prefix": {"equals-ignore-case": "eventb"}}]}
        assert matches(pattern, {"service": "EventBridge"})
        assert matches(pattern, {"service": "EVENTBUS"})
        assert not matches(pattern, {"service": "SQS"})

    def test_prefix_only_works_on_strings(self) -> None:
        assert not matches({"n": [{"prefix": "1"}]}, {"n": 12})


class TestSuffix:
    def test_documented_example_file_name_ends_with_png(self) -> None:
        pattern = {"FileName": [{"suffix": ".png"}]}
        assert matches(pattern, {"FileName": "cat.png"})
        assert not matches(pattern, {"FileName": "cat.PNG"})

    def test_suffix_ignoring_case(self) -> None:
        pattern = {"service": [{"suffix": {"equals-ignore-case": "tbridge"}}]}
        assert matches(pattern, {"service": "EvenTBRIDGE"})
        assert not matches(pattern, {"service": "EventBus"})

    def test_suffix_only_works_on_strings(self) -> None:
        assert not matches({"n": [{"suffix": "2"}]}, {"n": 12})


class TestEqualsIgnoreCase:
    def test_documented_example_name_is_alice_in_any_case(self) -> None:
        pattern = {"Name": [{"equals-ignore-case": "alice"}]}
        assert matches(pattern, {"Name": "Alice"})
        assert matches(pattern, {"Name": "ALICE"})
        assert not matches(pattern, {"Name": "Alicia"})

    def test_equals_ignore_case_only_works_on_strings(self) -> None:
        assert not matches({"Name": [{"equals-ignore-case": "1"}]}, {"Name": 1})

    def test_each_pattern_character_stands_for_its_java_lower_or_upper_case(self) -> None:
        """event-ruler, not casefold: "STRASSE" does not match "straße"; "straße" does match
        "STRASSE" (Java's toUpperCase of ß is SS)."""
        assert not matches({"s": [{"equals-ignore-case": "STRASSE"}]}, {"s": "straße"})
        assert matches({"s": [{"equals-ignore-case": "straße"}]}, {"s": "STRASSE"})
        assert matches({"s": [{"equals-ignore-case": "straße"}]}, {"s": "Straße"})

    def test_a_non_ascii_lookalike_is_not_its_ascii_letter(self) -> None:
        """The Kelvin sign lower-cases to k in Python, but "k" stands for k or K only."""
        assert not matches({"s": [{"equals-ignore-case": "k"}]}, {"s": "\u212a"})
        assert not matches({"s": [{"equals-ignore-case": "I"}]}, {"s": "\u0131"})
        assert matches({"s": [{"equals-ignore-case": "\u0131"}]}, {"s": "I"})

    def test_prefix_and_suffix_ignore_case_follow_the_same_rule(self) -> None:
        assert matches({"s": [{"prefix": {"equals-ignore-case": "straße"}}]}, {"s": "STRASSE 1"})
        assert not matches({"s": [{"prefix": {"equals-ignore-case": "STRASSE"}}]}, {"s": "straße"})
        assert matches({"s": [{"suffix": {"equals-ignore-case": "ß"}}]}, {"s": "GROSS"})
        assert not matches({"s": [{"suffix": {"equals-ignore-case": "SS"}}]}, {"s": "groß"})
        assert not matches({"s": [{"anything-but": {"equals-ignore-case": "ß"}}]}, {"s": "SS"})
        assert matches({"s": [{"anything-but": {"equals-ignore-case": "SS"}}]}, {"s": "ß"})


class TestWildcard:
    def test_documented_example_matches_a_directory_pattern(self) -> None:
        pattern = {"EventBusArn": [{"wildcard": "arn:aws:events:us-east-1:*:event-bus/*"}]}
        assert matches(pattern, {"EventBusArn": "arn:aws:events:us-east-1:123:event-bus/default"})
        assert not matches(pattern, {"EventBusArn": "arn:aws:events:eu-west-1:1:event-bus/d"})

    def test_star_matches_the_empty_run(self) -> None:
        assert matches({"s": [{"wildcard": "Simple*Service"}]}, {"s": "SimpleService"})

    def test_the_whole_value_must_match(self) -> None:
        assert not matches({"s": [{"wildcard": "a*b"}]}, {"s": "xa-bx"})

    def test_escaped_star_is_a_literal_star(self) -> None:
        assert matches({"s": [{"wildcard": "a\\*b"}]}, {"s": "a*b"})
        assert not matches({"s": [{"wildcard": "a\\*b"}]}, {"s": "axb"})

    def test_escaped_backslash_is_a_literal_backslash(self) -> None:
        assert matches({"s": [{"wildcard": "a\\\\*"}]}, {"s": "a\\zz"})

    def test_regex_metacharacters_are_literal(self) -> None:
        assert matches({"s": [{"wildcard": "a.b?*"}]}, {"s": "a.b?c"})
        assert not matches({"s": [{"wildcard": "a.b?*"}]}, {"s": "axbc"})

    def test_wildcard_spans_newlines(self) -> None:
        assert matches({"s": [{"wildcard": "a*b"}]}, {"s": "a\nb"})

    @pytest.mark.parametrize(
        "wildcards",
        [["*:*:*:*:*:event-bus/*"], ["a*b*c*d*e*f"], ["*a*", "*b*", "*c*"]],
    )
    def test_wildcards_aws_finds_too_complex_are_rejected(self, wildcards: list[str]) -> None:
        (error,) = validate_pattern({"s": [{"wildcard": w} for w in wildcards]})
        assert error.path == "s"
        assert error.message.startswith("Rule is too complex - try using fewer wildcard characters")

    @pytest.mark.parametrize(
        "wildcards",
        [
            ["arn:aws:events:us-east-1:*:event-bus/*"],
            ["/Users/*/dir/dir/dir/dir/dir/doc.txt"],
            ["*/init/*", "*/dir/*"],
            ["Simple*Service"],
        ],
    )
    def test_wildcards_aws_accepts_are_valid(self, wildcards: list[str]) -> None:
        assert validate_pattern({"s": [{"wildcard": w} for w in wildcards]}) == []

    def test_anything_but_wildcards_count_with_the_field(self) -> None:
        pattern = {"s": [{"anything-but": {"wildcard": ["*:*:*:*:*:event-bus/*"]}}]}
        (error,) = validate_pattern(pattern)
        assert "too complex" in error.message


class TestCidr:
    def test_documented_example_ipv4_block(self) -> None:
        pattern = {"detail": {"sourceIPAddress": [{"cidr": "10.0.0.0/24"}]}}
        assert matches(pattern, {"detail": {"sourceIPAddress": "10.0.0.255"}})
        assert not matches(pattern, {"detail": {"sourceIPAddress": "10.0.1.0"}})

    def test_ipv6_block(self) -> None:
        pattern = {"ip": [{"cidr": "2001:db8::/32"}]}
        assert matches(pattern, {"ip": "2001:db8::1"})
        assert not matches(pattern, {"ip": "2001:db9::1"})

    @pytest.mark.parametrize(
        ("block", "fragment"),
        [
            ("10.0.0.1", "exactly one '/'"),
            ("10.0.0.0/24/8", "exactly one '/'"),
            ("10.0.0.0/x", "integer"),
            ("10.0.0.0/-1", "negative"),
            ("10.0.0.0/32", "below 32"),
            ("2001:db8::/128", "below 128"),
            ("256.0.0.0/8", "invalid IP address"),
            ("bad-filter", "exactly one '/'"),
        ],
    )
    def test_blocks_are_as_strict_as_event_ruler(self, block: str, fragment: str) -> None:
        (error,) = validate_pattern({"ip": [{"cidr": block}]})
        assert fragment in error.message

    def test_the_block_starts_at_the_address_as_written(self) -> None:
        """event-ruler does not mask the address: 10.0.0.5/24 is 10.0.0.5 to 10.0.0.255."""
        pattern = {"ip": [{"cidr": "10.0.0.5/24"}]}
        assert matches(pattern, {"ip": "10.0.0.5"})
        assert matches(pattern, {"ip": "10.0.0.255"})
        assert not matches(pattern, {"ip": "10.0.0.4"})

    def test_other_family_or_non_address_does_not_match(self) -> None:
        pattern = {"ip": [{"cidr": "10.0.0.0/8"}]}
        assert not matches(pattern, {"ip": "::ffff:10.0.0.1"})
        assert not matches(pattern, {"ip": "not an ip"})
        assert not matches(pattern, {"ip": 167772161})


class TestNestedObjects:
    def test_lambda_multi_level_example_dynamodb_keys(self) -> None:
        record = {"dynamodb": {"Keys": {"Id": {"N": "101"}}, "SequenceNumber": "111"}}
        assert matches({"dynamodb": {"Keys": {"Id": {"N": ["101"]}}}}, record)
        assert not matches({"dynamodb": {"Keys": {"Id": {"N": ["102"]}}}}, record)

    def test_nested_pattern_needs_an_object(self) -> None:
        assert not matches({"a": {"b": ["x"]}}, {"a": "x"})
        assert not matches({"a": {"b": ["x"]}}, {})

    def test_eventbridge_complex_example(self) -> None:
        pattern = {
            "time": [{"prefix": "2017-10-02"}],
            "detail": {
                "state": [{"anything-but": "initializing"}],
                "c-count": [{"numeric": [">", 0, "<=", 5]}],
                "d-count": [{"numeric": ["<", 10]}],
                "x-limit": [{"anything-but": [100, 200, 300]}],
                "source-ip": [{"cidr": "10.0.0.0/8"}],
            },
        }
        event: dict[str, Any] = {
            "time": "2017-10-02T16:24:49Z",
            "detail": {
                "c-count": 5,
                "d-count": 3,
                "x-limit": 301.8,
                "source-ip": "10.0.0.33",
                "state": "running",
            },
        }
        assert matches(pattern, event)
        assert not matches(pattern, {**event, "detail": {**event["detail"], "c-count": 6}})

    @pytest.mark.parametrize(
        "pattern",
        [{"state.status": ["running"]}, {"state": {"status": ["running"]}}],
    )
    @pytest.mark.parametrize(
        "event",
        [
            {"state": {"status": "running"}},
            {"state.status": "running"},
            {"state": [{"status": "running"}]},
        ],
    )
    def test_dotted_keys_are_joined_in_patterns_and_in_documents(
        self, pattern: dict[str, Any], event: dict[str, Any]
    ) -> None:
        """AWS (event-ruler) joins keys with '.', so each way of writing the field is the same."""
        assert matches({"detail": pattern}, {"detail": event})
        assert not matches({"detail": pattern}, {"detail": {"state.status": "stopped"}})

    def test_dotted_document_keys_make_up_a_missing_or_non_object_field(self) -> None:
        event = {"state.status": "running", "state.code": 1}
        assert matches({"state": {"code": [1], "status": ["running"]}}, event)
        assert matches({"state.status": ["running"], "state.code": [1]}, event)
        assert not matches({"state.status": [{"exists": False}]}, event)
        assert matches({"state.status": ["running"]}, {"state": "x", "state.status": "running"})
        listed = {"state": [{"code": 1}], "state.status": "running"}
        assert matches({"state": {"code": [1], "status": ["running"]}}, listed)

    def test_beside_a_real_object_a_dotted_sibling_is_not_read(self) -> None:
        """The one difference from event-ruler kept for speed (see processors.match)."""
        event = {"state": {"code": 1}, "state.status": "running"}
        assert not matches({"state.status": ["running"]}, event)

    def test_a_dotted_key_deeper_than_the_pattern_is_another_field(self) -> None:
        assert not matches({"state": ["running"]}, {"state.status": "running"})
        assert not matches({"a.b": {"c": ["x"]}}, {"a": {"b": "x"}})

    def test_a_field_named_twice_through_dots_is_rejected(self) -> None:
        (error,) = validate_pattern({"a.b": ["x"], "a": {"b": ["y"]}})
        assert "already names" in error.message
        assert error.path == "a"


class TestArrays:
    def test_eventbridge_example_arrays_intersect(self) -> None:
        pattern = {"resources": ["arn:1", "arn:2", "arn:3"]}
        assert matches(pattern, {"resources": ["arn:9", "arn:1"]})
        assert not matches(pattern, {"resources": ["arn:9"]})

    def test_nested_arrays_are_flattened(self) -> None:
        assert matches({"a": ["x"]}, {"a": [["y"], [["x"]]]})

    def test_an_empty_array_matches_no_value(self) -> None:
        assert not matches({"a": ["x"]}, {"a": []})

    def test_nested_pattern_looks_into_arrays_of_objects(self) -> None:
        doc = {
            "employees": [
                {"firstName": "John", "lastName": "Doe"},
                {"firstName": "Anna", "lastName": "Smith"},
            ]
        }
        assert matches({"employees": {"firstName": ["Anna"]}}, doc)

    def test_fields_must_match_within_one_array_element(self) -> None:
        doc = {
            "employees": [
                {"firstName": "Anna", "lastName": "Smith"},
                {"firstName": "Peter", "lastName": "Jones"},
            ]
        }
        assert not matches({"employees": {"firstName": ["Anna"], "lastName": ["Jones"]}}, doc)
        assert matches({"employees": {"firstName": ["Anna"], "lastName": ["Smith"]}}, doc)

    def test_scalar_pattern_ignores_objects_inside_arrays(self) -> None:
        assert not matches({"a": ["x"]}, {"a": [{"b": "x"}]})


class TestDocumentShapes:
    @pytest.mark.parametrize("doc", [[{"a": "x"}], "x", 5, None, True, b"{}"])
    def test_a_document_that_is_not_an_object_never_matches(self, doc: Any) -> None:
        assert not matches({"a": ["x"]}, doc)
        assert not matches({"a": [{"exists": False}]}, doc)

    @pytest.mark.parametrize(
        "pattern",
        [
            {"a": [{"numeric": [">", 0]}]},
            {"a": [{"prefix": "x"}, {"suffix": "x"}, {"equals-ignore-case": "x"}]},
            {"a": [{"wildcard": "x*"}, {"cidr": "10.0.0.0/8"}, {"anything-but": {"prefix": "x"}}]},
            {"a": {"b": [1]}},
        ],
    )
    @pytest.mark.parametrize("value", [None, True, 1, 1.5, "s", [], [None, {}], {}, {"b": [1]}])
    def test_type_mismatches_return_false_or_true_but_never_raise(
        self, pattern: dict[str, Any], value: Any
    ) -> None:
        assert isinstance(matches(pattern, {"a": value}), bool)

    def test_compiled_matcher_is_reusable(self) -> None:
        match = compile_pattern({"event_type": ["click", "purchase"]})
        assert [match({"event_type": t}) for t in ("click", "view", "purchase")] == [
            True,
            False,
            True,
        ]


# --------------------------------------------------------------------------- validation


class TestValidation:
    def test_valid_pattern_has_no_errors(self) -> None:
        assert validate_pattern({"a": [1, "x", None, True, {"numeric": [">", 0, "<", 5]}]}) == []

    def test_error_string_is_path_colon_message(self) -> None:
        (error,) = validate_pattern({"amount": [{"numeric": [">", "zero"]}]})
        assert error.path == "amount[0].numeric[1]"
        assert str(error) == f"{error.path}: {error.message}"
        assert "-5e11" in error.message

    def test_root_errors_have_an_empty_path(self) -> None:
        (error,) = validate_pattern([{"a": [1]}])
        assert error.path == ""
        assert str(error) == error.message

    def test_compile_raises_the_first_error_with_the_others_as_notes(self) -> None:
        with pytest.raises(PatternError, match=r"^a: expected a list") as info:
            compile_pattern({"a": 5, "b": []})
        assert info.value.__notes__ == [str(validate_pattern({"a": 5, "b": []})[1])]

    def test_pattern_error_is_a_value_error(self) -> None:
        assert issubclass(PatternError, ValueError)

    def test_every_problem_is_reported_at_once(self) -> None:
        pattern = {"a": "x", "b": {"c": [{"exists": "yes"}]}, "d": [{"numerc": [1]}]}
        assert [e.path for e in validate_pattern(pattern)] == ["a", "b.c[0].exists", "d[0].numerc"]

    def test_non_list_leaf_suggests_wrapping_in_a_list(self) -> None:
        assert errors({"event_type": "click"}) == [
            "event_type: expected a list, got str 'click'; wrap it: ['click']"
        ]

    def test_unknown_operator_lists_the_known_ones_and_a_suggestion(self) -> None:
        (message,) = errors({"x": [{"prefx": "a"}]})
        assert message.startswith("x[0].prefx: unknown operator 'prefx'; did you mean 'prefix'?")
        for name in ("anything-but", "cidr", "equals-ignore-case", "exists", "numeric", "wildcard"):
            assert name in message

    def test_empty_pattern_is_rejected(self) -> None:
        assert errors({}) == [validate_pattern({})[0].message]
        assert "empty objects are not allowed" in errors({})[0]

    def test_empty_nested_object_is_rejected(self) -> None:
        assert errors({"a": {}})[0].startswith("a: empty objects are not allowed")

    def test_empty_list_is_rejected(self) -> None:
        assert errors({"a": []})[0].startswith("a: empty lists are not allowed")

    def test_nested_list_is_rejected(self) -> None:
        assert errors({"a": [["x"]]})[0].startswith("a[0]: nested lists are not allowed")

    def test_unsupported_value_types_are_rejected(self) -> None:
        assert errors({"a": [datetime.date(2024, 1, 1)]})[0].startswith("a[0]: expected a string")
        assert errors({"a": [float("nan")]})[0].startswith("a[0]: expected a finite number")

    def test_non_string_field_name_is_rejected(self) -> None:
        assert errors({1: ["x"]}) == ["1: field names must be strings, got int 1; quote it"]

    def test_operator_object_with_two_keys_is_rejected(self) -> None:
        assert "exactly one key" in errors({"a": [{"prefix": "x", "suffix": "y"}]})[0]

    @pytest.mark.parametrize(
        ("numeric", "path", "fragment"),
        [
            ([">"], "a[0].numeric", "one or two comparisons"),
            ([">", 1, "<"], "a[0].numeric", "one or two comparisons"),
            ("> 1", "a[0].numeric", "one or two comparisons"),
            (["!=", 1], "a[0].numeric[0]", "use anything-but"),
            (["==", 1], "a[0].numeric[0]", "use =, >, >=, < or <="),
            (["<", 1, ">", 0], "a[0].numeric[2]", "lower then an upper bound"),
            (["=", 1, "<", 2], "a[0].numeric[2]", "lower then an upper bound"),
            ([">", 0, ">=", 2], "a[0].numeric[2]", "lower then an upper bound"),
            ([">", True], "a[0].numeric[1]", "expected a number"),
            ([">", 1e12], "a[0].numeric[1]", "[-5e11, 5e11]"),
            ([">", 5, "<", 5], "a[0].numeric", "must be below the upper bound"),
        ],
    )
    def test_bad_numeric_expressions_are_located(
        self, numeric: Any, path: str, fragment: str
    ) -> None:
        (error,) = validate_pattern({"a": [{"numeric": numeric}]})
        assert error.path == path
        assert fragment in error.message

    @pytest.mark.parametrize("value", [1, "true", None, [True]])
    def test_exists_takes_only_true_or_false(self, value: Any) -> None:
        (error,) = validate_pattern({"a": [{"exists": value}]})
        assert error.path == "a[0].exists"
        assert "expected true or false" in error.message

    @pytest.mark.parametrize(
        ("anything_but", "path"),
        [
            ([], "a[0].anything-but"),
            (["x", 1], "a[0].anything-but"),
            ([True], "a[0].anything-but"),
            (None, "a[0].anything-but"),
            ({"contains": "x"}, "a[0].anything-but"),
            ({"prefix": ""}, "a[0].anything-but.prefix"),
            ({"prefix": 1}, "a[0].anything-but.prefix"),
            ({"equals-ignore-case": []}, "a[0].anything-but.equals-ignore-case"),
            ({"wildcard": "a**"}, "a[0].anything-but.wildcard"),
        ],
    )
    def test_bad_anything_but_is_located(self, anything_but: Any, path: str) -> None:
        (error,) = validate_pattern({"a": [{"anything-but": anything_but}]})
        assert error.path == path

    @pytest.mark.parametrize(
        ("matcher", "path", "fragment"),
        [
            ({"prefix": 1}, "a[0].prefix", "expected a string"),
            ({"prefix": {"ignore-case": "x"}}, "a[0].prefix", "equals-ignore-case"),
            ({"suffix": {"equals-ignore-case": 1}}, "a[0].suffix.equals-ignore-case", "string"),
            ({"equals-ignore-case": ["a"]}, "a[0].equals-ignore-case", "expected a string"),
            ({"wildcard": "a**b"}, "a[0].wildcard", "consecutive '*'"),
            ({"wildcard": "a\\b"}, "a[0].wildcard", "backslash"),
            ({"wildcard": "a\\"}, "a[0].wildcard", "backslash"),
            ({"cidr": "10.0.0.0/33"}, "a[0].cidr", "10.0.0.0/24"),
            ({"cidr": 10}, "a[0].cidr", "expected a string"),
        ],
    )
    def test_bad_string_operators_are_located(self, matcher: Any, path: str, fragment: str) -> None:
        (error,) = validate_pattern({"a": [matcher]})
        assert error.path == path
        assert fragment in error.message

    @pytest.mark.parametrize("spec", [[{"a": [1]}], {"a": [1]}, [{"a": [1]}, "b"], []])
    def test_bad_dollar_or_is_located(self, spec: Any) -> None:
        paths = [e.path for e in validate_pattern({"$or": spec})]
        assert paths in (["$or"], ["$or[1]"])


# --------------------------------------------------------------------------- property

MISSING = object()


def reference_leaves(value: Any) -> list[Any]:
    if value is MISSING or isinstance(value, dict):
        return []
    if isinstance(value, list):
        return [leaf for item in value for leaf in reference_leaves(item)]
    return [value]


def reference_objects(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [obj for item in value for obj in reference_objects(item)]
    return []


def same_value(expected: Any, actual: Any) -> bool:
    def kind(v: Any) -> str:
        if v is None or isinstance(v, bool | str):
            return type(v).__name__
        return "number"

    return kind(expected) == kind(actual) and expected == actual


def reference_wildcard(pattern: str, text: str) -> bool:
    regex, i = "", 0
    while i < len(pattern):
        if pattern[i] == "\\":
            regex, i = regex + re.escape(pattern[i + 1]), i + 2
        else:
            regex, i = regex + (".*" if pattern[i] == "*" else re.escape(pattern[i])), i + 1
    return re.fullmatch(regex, text, re.DOTALL) is not None


def java_case_ends(pattern: str, x: str, start: int) -> set[int]:
    """Where a match of ``pattern`` starting at ``x[start]`` can end, each pattern character
    standing for its lower or upper case form (event-ruler's rule; non-BMP: itself)."""
    ends = {start}
    for c in pattern:
        forms = {c} if ord(c) > 0xFFFF else {c.lower(), c.upper()}
        ends = {e + len(f) for e in ends for f in forms if x.startswith(f, e)}
    return ends


def reference_ignore_case(mode: str, pattern: str, x: Any) -> bool:
    if not isinstance(x, str):
        return False
    if mode == "equals":
        return len(x) in java_case_ends(pattern, x, 0)
    if mode == "prefix":
        return bool(java_case_ends(pattern, x, 0))
    return any(len(x) in java_case_ends(pattern, x, s) for s in range(len(x) + 1))


def reference_block(block: str) -> tuple[int, int, int] | None:
    address, sep, mask = block.partition("/")
    if not sep or "/" in mask or not mask.isdigit():
        return None
    ip = ipaddress.ip_address(address)
    bits = ip.max_prefixlen
    if int(mask) >= bits:
        return None
    return ip.version, int(ip), int(ip) | ((1 << (bits - int(mask))) - 1)


def reference_operator(name: str, arg: Any, x: Any) -> bool:
    is_num = isinstance(x, int | float) and not isinstance(x, bool)
    if name in ("prefix", "suffix"):
        if not isinstance(x, str):
            return False
        if isinstance(arg, dict):
            return reference_ignore_case(name, arg["equals-ignore-case"], x)
        return bool(x.startswith(arg) if name == "prefix" else x.endswith(arg))
    if name == "equals-ignore-case":
        return reference_ignore_case("equals", str(arg), x)
    if name == "wildcard":
        return isinstance(x, str) and reference_wildcard(arg, x)
    if name == "cidr":
        block = reference_block(arg)
        if not isinstance(x, str) or block is None:  # ip_address() would accept an int
            return False
        try:
            ip = ipaddress.ip_address(x)
        except ValueError:
            return False
        return ip.version == block[0] and block[1] <= int(ip) <= block[2]
    if name == "numeric":
        if not is_num or abs(x) > 5e11 or round(x, 6) != x:
            return False
        ops = {
            "=": x == arg[1],
            ">": x > arg[1],
            ">=": x >= arg[1],
            "<": x < arg[1],
            "<=": x <= arg[1],
        }
        low_ok = bool(ops[arg[0]])
        if len(arg) == 2:
            return low_ok
        return low_ok and bool(x < arg[3] if arg[2] == "<" else x <= arg[3])
    assert name == "anything-but"
    if isinstance(arg, dict):
        ((form, texts),) = arg.items()
        texts = texts if isinstance(texts, list) else [texts]
        return not any(reference_operator(form, t, x) for t in texts)
    excluded = arg if isinstance(arg, list) else [arg]
    return not any(same_value(e, x) for e in excluded)


def reference_rule(rule: Any, leaves: list[Any]) -> bool:
    if isinstance(rule, dict) and "exists" in rule:
        return bool(leaves) is rule["exists"]
    if isinstance(rule, dict):
        ((name, arg),) = rule.items()
        return any(reference_operator(name, arg, x) for x in leaves)
    return any(same_value(rule, x) for x in leaves)


def reference_object(pattern: dict[str, Any], node: dict[str, Any]) -> bool:
    for key, spec in pattern.items():
        value = node.get(key, MISSING)
        if key == "$or":
            ok = any(reference_object(alt, node) for alt in spec)
        elif isinstance(spec, dict):
            objects = reference_objects(value)
            ok = (
                any(reference_object(spec, o) for o in objects)
                if objects
                else reference_object(spec, {})
            )
        else:
            ok = any(reference_rule(rule, reference_leaves(value)) for rule in spec)
        if not ok:
            return False
    return True


def reference_match(pattern: dict[str, Any], doc: Any) -> bool:
    return isinstance(doc, dict) and reference_object(pattern, doc)


KEYS = st.sampled_from(["a", "b", "c"])
WORDS = ["", "a", "ab", "AB", "abc", "b.png", "x*y", "a\\b", "10.0.0.7", "::1", "ß", "SS", "K"]
NUMBERS = [0, 1, 1.0, 2.5, -3, 5e9, 6e9, 5e11, 6e11, 10**12, 1.0000001]
SCALARS = st.sampled_from([*WORDS, *NUMBERS, True, False, None])
DOC_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=10,
)

TEXT = st.sampled_from(["a", "ab", "A", "png", ".png", "b"])
OPERATORS = st.one_of(
    st.builds(
        lambda name, t: {name: t}, st.sampled_from(["prefix", "suffix", "equals-ignore-case"]), TEXT
    ),
    st.builds(
        lambda name, t: {name: {"equals-ignore-case": t}},
        st.sampled_from(["prefix", "suffix"]),
        TEXT,
    ),
    st.sampled_from(
        [{"wildcard": w} for w in ("a*", "*b", "a*c", "*", "x\\*y", "a\\\\b", "*.png")]
    ),
    st.sampled_from([{"cidr": "10.0.0.0/24"}, {"cidr": "::/0"}, {"cidr": "10.0.0.7/30"}]),
    st.builds(
        lambda op, n: {"numeric": [op, n]},
        st.sampled_from(["=", "<", "<=", ">", ">="]),
        st.sampled_from([-3, 0, 1, 2.5, 5e9]),
    ),
    st.builds(
        lambda lo, low, hi, high: {"numeric": [lo, low, hi, high]},
        st.sampled_from([">", ">="]),
        st.sampled_from([-3, 0]),
        st.sampled_from(["<", "<="]),
        st.sampled_from([1, 2.5]),
    ),
    st.builds(lambda b: {"exists": b}, st.booleans()),
    st.builds(
        lambda v: {"anything-but": v},
        st.one_of(
            TEXT,
            st.sampled_from([0, 1, 2.5]),
            st.lists(TEXT, min_size=1, max_size=3),
            st.lists(st.sampled_from([0, 1, 2.5, -3]), min_size=1, max_size=3),
            st.builds(
                lambda f, t: {f: t},
                st.sampled_from(["prefix", "suffix", "equals-ignore-case"]),
                TEXT | st.lists(TEXT, min_size=1, max_size=2),
            ),
            st.sampled_from([{"wildcard": "a*"}, {"wildcard": ["*b", "x\\*y"]}]),
        ),
    ),
)
NUMERIC_OPERATORS = frozenset({"=", "<", "<=", ">", ">="})
MATCHERS = st.lists(st.one_of(SCALARS, OPERATORS, OPERATORS), min_size=1, max_size=2)


def patterns(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    """Small patterns (a few fields, flat ``$or``), so that generated documents match often."""
    flat = st.dictionaries(KEYS, MATCHERS, min_size=1, max_size=2)
    if depth == 0:
        return flat
    values = st.one_of(MATCHERS, MATCHERS, st.deferred(lambda: patterns(depth - 1)))
    fields = st.dictionaries(KEYS, values, min_size=1, max_size=3)
    with_or = st.builds(
        lambda base, alts: {**base, "$or": alts},
        st.dictionaries(KEYS, MATCHERS, max_size=2),
        st.lists(flat, min_size=2, max_size=3),
    )
    return st.one_of(fields, fields, fields, with_or)


def wildcard_instances(wildcard: str) -> list[str]:
    """Strings a wildcard matches: each unescaped ``*`` replaced by nothing, then by "zz"."""
    out = []
    for fill in ("", "zz"):
        text, i = "", 0
        while i < len(wildcard):
            if wildcard[i] == "\\":
                text, i = text + wildcard[i + 1], i + 2
            else:
                text, i = text + (fill if wildcard[i] == "*" else wildcard[i]), i + 1
        out.append(text)
    return out


def cidr_edges(block: str) -> list[str]:
    """The first and last address of a block and the addresses just outside it."""
    network = ipaddress.ip_network(block, strict=False)
    first = ipaddress.ip_address(block.split("/", maxsplit=1)[0])
    edges = [network.network_address, first, network.broadcast_address]
    if int(first) > 0:
        edges.append(first - 1)
    if int(network.broadcast_address) < (2**network.max_prefixlen) - 1:
        edges.append(network.broadcast_address + 1)
    return [str(address) for address in edges]


def pattern_atoms(value: Any, key: str = "") -> list[Any]:
    """Every scalar in a pattern, with the values that sit on its edges, to steer documents."""
    if isinstance(value, dict):
        return [atom for k, inner in value.items() for atom in pattern_atoms(inner, k)]
    if isinstance(value, list):
        return [atom for inner in value for atom in pattern_atoms(inner, key)]
    if value in NUMERIC_OPERATORS:
        return []
    if isinstance(value, str) and key == "wildcard":
        return [value, *wildcard_instances(value)]
    if isinstance(value, str) and key == "cidr":
        return cidr_edges(value)
    if isinstance(value, str):
        return [value, value.upper(), value + "z", "z" + value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [value, value - 0.5, value + 0.5, value == 1]  # both sides; and True vs 1
    return [value]


def shaped_like(pattern: dict[str, Any], leaf: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Objects with the pattern's fields (each optional), holding leaves, arrays or objects."""
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for key, spec in pattern.items():
        if key == "$or":
            continue
        if isinstance(spec, dict):
            inner = shaped_like(spec, leaf)
            fields[key] = st.one_of(inner, st.lists(st.one_of(inner, leaf), max_size=3), leaf)
        else:
            fields[key] = st.one_of(
                leaf,
                leaf,
                st.lists(leaf, max_size=3),
                st.lists(st.lists(leaf, max_size=2), max_size=2),
                st.dictionaries(KEYS, leaf, max_size=1),
            )
    parts = [st.fixed_dictionaries({}, optional=fields)]
    parts += [shaped_like(alt, leaf) for alt in pattern.get("$or", [])]
    return st.tuples(*parts).map(lambda ds: {k: v for d in ds for k, v in d.items()})


def documents_for(pattern: dict[str, Any]) -> st.SearchStrategy[list[Any]]:
    atoms = st.sampled_from([*pattern_atoms(pattern), True, False, None, "", 6e9, -6e9])
    leaf = st.one_of(atoms, atoms, atoms, SCALARS)
    anything = st.recursive(
        leaf,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
        max_leaves=10,
    )
    shaped = shaped_like(pattern, leaf)
    document = st.one_of(
        shaped, shaped, shaped, st.dictionaries(KEYS, anything, max_size=3), anything
    )
    return st.lists(document, min_size=4, max_size=12)


OPERATOR_SAMPLES: list[dict[str, Any]] = [
    *(
        {name: t}
        for name in ("prefix", "suffix", "equals-ignore-case")
        for t in ("a", "Ab", ".png")
    ),
    *({name: {"equals-ignore-case": t}} for name in ("prefix", "suffix") for t in ("a", "PnG")),
    *({"wildcard": w} for w in ("a*", "*b", "a*c", "*", "x\\*y", "a\\\\b", "*.png", "")),
    *({"cidr": c} for c in ("10.0.0.0/24", "10.0.0.7/30", "::/0", "2001:db8::/32", "0.0.0.0/0")),
    *({"numeric": [op, n]} for op in ("=", "<", "<=", ">", ">=") for n in (-3, 0, 1, 2.5, 5e9)),
    *(
        {"numeric": [lo, low, hi, high]}
        for lo in (">", ">=")
        for low in (-3, 0)
        for hi in ("<", "<=")
        for high in (1, 2.5)
    ),
    {"exists": True},
    {"exists": False},
    *({"anything-but": v} for v in ("a", 0, 1, 2.5, ["a", "ab"], [0, 1.0], [""])),
    *({"anything-but": {f: t}} for f in ("prefix", "suffix") for t in ("a", ["a", "b"])),
    *({"anything-but": {"equals-ignore-case": t}} for t in ("A", ["a", "PNG"])),
    *({"anything-but": {"wildcard": w}} for w in ("a*", ["*b", "x\\*y"])),
]
VALUE_UNIVERSE: list[Any] = [*WORDS, *NUMBERS, True, False, None, -6e9, 0.0, -0.0]
VALUE_UNIVERSE += pattern_atoms(OPERATOR_SAMPLES)


def test_every_operator_agrees_with_the_reference_on_every_sample_value() -> None:
    mismatches = []
    for operator_sample in OPERATOR_SAMPLES:
        for matchers in ([operator_sample], [operator_sample, "zzz"]):
            pattern = {"a": matchers}
            match = compile_pattern(pattern)
            for value in VALUE_UNIVERSE:
                for doc in ({"a": value}, {"a": [value]}, {"a": ["zzz", [value]]}):
                    if match(doc) != reference_match(pattern, doc):
                        mismatches.append((pattern, doc))
    assert mismatches == []


class TestAgainstReferenceInterpreter:
    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(pattern=patterns(2), data=st.data())
    def test_compiled_pattern_agrees_with_the_reference_interpreter(
        self, pattern: dict[str, Any], data: st.DataObject
    ) -> None:
        assert validate_pattern(pattern) == []
        match = compile_pattern(pattern)
        for doc in data.draw(documents_for(pattern)):
            assert match(doc) == reference_match(pattern, doc), doc

    @settings(max_examples=300, deadline=None)
    @given(matchers=MATCHERS, data=st.data())
    def test_single_field_patterns_agree_with_the_reference_interpreter(
        self, matchers: list[Any], data: st.DataObject
    ) -> None:
        pattern = {"a": matchers}
        match = compile_pattern(pattern)
        for doc in data.draw(documents_for(pattern)):
            assert match(doc) == reference_match(pattern, doc), doc

    @settings(max_examples=300, deadline=None)
    @given(values=st.lists(SCALARS, min_size=1, max_size=4), data=st.data())
    def test_fast_path_for_plain_values_agrees_with_the_reference_interpreter(
        self, values: list[Any], data: st.DataObject
    ) -> None:
        pattern = {"a": values}
        match = compile_pattern(pattern)
        for doc in data.draw(documents_for(pattern)):
            assert match(doc) == reference_match(pattern, doc), doc


def test_a_bad_neighbouring_field_does_not_hide_a_too_complex_wildcard() -> None:
    """Fields "a" and "ab": an error under "ab" must not skip the complexity check of "a"."""
    errors = validate_pattern(
        {"ab": [{"wildcard": "x**"}], "a": [{"wildcard": "*:*:*:*:*:event-bus/*"}]}
    )
    assert [e.path for e in errors] == ["ab[0].wildcard", "a"]
