"""The built-in processors: filter, enrich, route, and the registry that builds them."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from processors.enrich import Enrich
from processors.filter import Filter
from processors.registry import build_processor, processor_names
from processors.route import Route
from stream.exceptions import DecodeError, PluginError
from stream.records import Record


def rec(doc: bytes) -> Record:
    return Record(doc, "k", "1")


class TestFilter:
    def test_match_and_expr_must_both_hold(self):
        f = Filter(match={"t": ["a"]}, expr="n > `1`")
        assert f(rec(b'{"t":"a","n":2}')) is not None
        assert f(rec(b'{"t":"a","n":1}')) is None
        assert f(rec(b'{"t":"b","n":2}')) is None

    def test_needs_match_or_expr(self):
        with pytest.raises(ValueError, match="needs `match`"):
            Filter()

    def test_a_record_that_is_not_json_raises_for_the_dead_letter_sink(self):
        with pytest.raises(DecodeError):
            Filter(match={"t": ["a"]})(rec(b"nope"))


class TestEnrich:
    def test_set_adds_fields_and_marks_the_record_changed(self):
        r = Enrich(set={"p": "x", "meta": {"v": 1}})(rec(b'{"a":1}'))
        assert r.json == {"a": 1, "p": "x", "meta": {"v": 1}}
        assert r.data == b'{"a":1,"p":"x","meta":{"v":1}}'

    def test_nested_values_are_not_shared_between_records(self):
        e = Enrich(set={"meta": {"v": 1}})
        a, b = e(rec(b"{}")), e(rec(b"{}"))
        a.json["meta"]["v"] = 2
        assert b.json["meta"]["v"] == 1

    def test_timestamp_is_taken_once_per_batch_from_the_injected_clock(self):
        e = Enrich(timestamp="at", now=lambda: 1767225600.25)
        e.prepare([])
        assert e(rec(b"{}")).json["at"] == "2026-01-01T00:00:00.250Z"

    def test_a_record_that_is_not_an_object_cannot_be_enriched(self):
        with pytest.raises(DecodeError, match="not an object"):
            Enrich(set={"a": 1})(rec(b"[1]"))


class TestRoute:
    rules: ClassVar[list[dict[str, Any]]] = [
        {"when": {"t": ["buy"]}, "to": ["orders", "search"]},
        {"when": "n > `10`", "to": ["big"]},
        {"default": ["archive"]},
    ]

    def test_first_mode_takes_the_first_matching_rule(self):
        r = Route(self.rules)(rec(b'{"t":"buy","n":50}'))
        assert r.routes == ("orders", "search")

    def test_all_mode_fans_out_to_every_matching_rule(self):
        r = Route(self.rules, mode="all")(rec(b'{"t":"buy","n":50}'))
        assert r.routes == ("orders", "search", "big")

    def test_default_applies_when_nothing_matches(self):
        assert Route(self.rules)(rec(b'{"t":"view"}')).routes == ("archive",)

    def test_no_match_and_no_default_leaves_the_record_unrouted(self):
        assert Route([{"when": {"t": ["x"]}, "to": ["a"]}])(rec(b"{}")).routes == ()

    def test_a_default_only_route_does_not_decode_the_record(self):
        r = Route([{"default": ["a"]}])(rec(b"not json at all"))
        assert r.routes == ("a",)

    def test_unknown_sinks_are_named_with_the_known_ones(self):
        with pytest.raises(ValueError, match=r"unknown sink 'order' \(known: orders, search\)"):
            Route([{"when": {"t": ["x"]}, "to": ["order"]}], sinks=["orders", "search"])

    def test_map_form_carries_the_mode(self):
        route = Route.from_config({"mode": "all", "rules": self.rules})
        assert route(rec(b'{"t":"buy","n":50}')).routes == ("orders", "search", "big")


class TestRegistry:
    def test_builtins_are_known_names(self):
        assert {"filter", "enrich", "route"} <= processor_names()

    def test_steps_are_named_by_their_place_in_the_file(self):
        step = build_processor(2, {"filter": {"expr": "a"}})
        assert step.name == "processors[2].filter"
        assert step.prepare is None

    def test_batch_aware_processors_get_their_prepare_hook(self):
        step = build_processor(0, {"enrich": {"timestamp": "t"}})
        assert step.prepare is not None

    def test_use_loads_a_class_by_import_path_with_its_arguments(self):
        step = build_processor(0, {"use": "processors.filter:Filter", "with": {"expr": "a"}})
        assert isinstance(step.processor, Filter)
        assert step.name == "processors[0].use(processors.filter:Filter)"

    def test_an_unknown_plugin_says_what_to_install(self):
        with pytest.raises(PluginError, match="install the package"):
            build_processor(0, {"no_such_plugin": {}})

    def test_a_bad_import_path_says_what_is_wrong(self):
        with pytest.raises(PluginError, match="no attribute 'Nope'"):
            build_processor(0, {"use": "processors.filter:Nope"})
