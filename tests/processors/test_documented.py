"""Three behaviours users asked about, as the README's "Semantics" section states them.

Each test pins a sentence of the README: a change here is a change to documented behaviour.
They run the built-in steps as Lambda does (:class:`Chain`, :class:`BatchRunner`) on
records from :mod:`stream.testing`.
"""

from __future__ import annotations

from typing import Any

from processors.chain import Chain
from processors.registry import build_processor
from sinks.base import Ordering
from sinks.memory import MemorySink
from stream.batch import BatchRunner
from stream.testing import EventFactory

SINKS = ["a", "b", "fallback", "dlq"]


def runner(*steps: dict[str, Any]) -> BatchRunner:
    """``steps`` in order; unrouted records to ``a``; dead letters to ``dlq``."""
    sinks = {name: MemorySink(name) for name in SINKS}
    chain = Chain([build_processor(i, step, SINKS) for i, step in enumerate(steps)])
    return BatchRunner(
        chain, sinks, default_route=["a"], on_failure="dlq", ordering=Ordering("none"),
        function="f", pipeline="p",
    )  # fmt: skip


def handle(run: BatchRunner, *docs: Any) -> Any:
    f = EventFactory()
    return run.handle(
        f.event(
            f.raw(d, f"k{i}") if isinstance(d, bytes) else f.record(d, f"k{i}")
            for i, d in enumerate(docs)
        )
    )


ROUTE_ALL = {
    "route": {
        "mode": "all",
        "rules": [
            {"when": {"kind": ["click"]}, "to": ["a"]},
            {"when": {"country": ["fr"]}, "to": ["b"]},
            {"default": ["fallback"]},
        ],
    }
}


class TestRouteAllWithDefault:
    def test_the_default_applies_only_when_no_rule_matched(self):
        """mode all: every matching rule adds its sinks; the default never adds to them."""
        result = handle(
            runner(ROUTE_ALL),
            {"kind": "click", "country": "fr"},  # both rules: a and b, not fallback
            {"kind": "click", "country": "de"},  # one rule: a only
            {"kind": "view", "country": "de"},  # no rule: the default
        )
        assert result.written == {"a": 2, "b": 1, "fallback": 1}
        assert result.unrouted == 0


class TestMissingFields:
    def test_a_function_on_a_missing_field_dead_letters_the_record(self):
        """starts_with(null, ...) is a type error in JMESPath: the record is dead-lettered."""
        run = runner({"filter": {"expr": "starts_with(device_id, 'x')"}})
        result = handle(run, {"device_id": "x1"}, {"other": 1})
        assert result.written == {"a": 1}
        [letter] = result.dead_letters
        assert letter.step == "processors[0].filter"
        assert letter.error == "JMESPathTypeError"
        assert 'received: "null"' in letter.reason

    def test_a_comparison_with_a_missing_field_is_false_and_filters(self):
        """== against null is false, and an ordering comparison with null is null (falsy)."""
        for expr in ("device_id == 'x1'", "level > `3`"):
            run = runner({"filter": {"expr": expr}})
            result = handle(run, {"device_id": "x1", "level": 5}, {"other": 1})
            assert result.written == {"a": 1}, expr
            assert sum(result.dropped.values()) == 1, expr
            assert result.dead_letters == [], expr

    def test_guarding_the_function_filters_a_missing_field(self):
        """device_id && starts_with(device_id, 'x'): null is falsy, the call never runs."""
        run = runner({"filter": {"expr": "device_id && starts_with(device_id, 'x')"}})
        result = handle(run, {"device_id": "x1"}, {"other": 1}, {"device_id": "y"})
        assert result.written == {"a": 1}
        assert sum(result.dropped.values()) == 2
        assert result.dead_letters == []


class TestNotJson:
    def test_a_record_that_is_not_json_is_one_decode_error_whose_reason_says_why(self):
        """error names the class, DecodeError; reason is the message: "... is not JSON (...)"."""
        run = runner({"filter": {"expr": "kind == 'click'"}})
        result = handle(run, {"kind": "click"}, b"\xffnot json")
        [letter] = result.dead_letters
        assert letter.error == "DecodeError"
        assert " is not JSON (" in letter.reason
        assert "fix the producer or filter it out" in letter.reason
        assert letter.document()["error"] == "DecodeError"
