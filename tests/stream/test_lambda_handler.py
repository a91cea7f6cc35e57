"""The Lambda handler: plan from the environment, built once, no state between invocations."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

import stream.lambda_handler as lh
from stream.testing import EventFactory

if TYPE_CHECKING:
    from pathlib import Path

PLAN = {
    "version": 1,
    "name": "t",
    "sinks": {"out": {"type": "discard"}, "dlq": {"type": "discard"}},
    "functions": {
        "f": {
            "ordering": "per_key",
            "on_failure": None,
            "route": ["out"],
            "processors": [{"filter": {"match": {"keep": [True]}}}],
        }
    },
}


@pytest.fixture
def plan_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(PLAN))
    monkeypatch.setenv("SHARDLINE_PIPELINE", str(path))
    monkeypatch.delenv("SHARDLINE_FUNCTION", raising=False)
    monkeypatch.setattr(lh, "_runner", None)
    return path


class TestHandler:
    def test_a_clean_batch_reports_no_failures(self, plan_file):
        f = EventFactory()
        assert lh.handler(f.batch([("a", {"keep": True}), ("b", {"keep": False})])) == {
            "batchItemFailures": []
        }

    def test_without_an_on_failure_sink_a_poison_record_is_reported_not_lost(self, plan_file):
        f = EventFactory()
        bad = f.raw(b"not json", "a")
        response = lh.handler(f.event([f.record({"keep": True}, "b"), bad]))
        assert response == {
            "batchItemFailures": [{"itemIdentifier": bad["kinesis"]["sequenceNumber"]}]
        }

    def test_the_runner_is_built_once_and_reused_while_warm(self, plan_file):
        f = EventFactory()
        lh.handler(f.batch([("a", {"keep": True})]))
        first = lh.runner()
        plan_file.write_text("this would fail to load")
        lh.handler(f.batch([("a", {"keep": True})]))
        assert lh.runner() is first

    def test_failures_of_one_invocation_do_not_leak_into_the_next(self, plan_file):
        f = EventFactory()
        assert lh.handler(f.event([f.raw(b"x", "a")]))["batchItemFailures"]
        assert lh.handler(f.batch([("a", {"keep": True})])) == {"batchItemFailures": []}

    def test_a_plan_with_several_functions_needs_shardline_function(self, plan_file, monkeypatch):
        plan = dict(PLAN, functions={"f": PLAN["functions"]["f"], "g": PLAN["functions"]["f"]})
        plan_file.write_text(json.dumps(plan))
        with pytest.raises(ValueError, match=r"2 functions \(f, g\): name one"):
            lh.runner()
        monkeypatch.setenv("SHARDLINE_FUNCTION", "g")
        assert lh.runner().function == "g"

    def test_an_unknown_function_lists_the_known_ones(self, plan_file, monkeypatch):
        monkeypatch.setenv("SHARDLINE_FUNCTION", "nope")
        with pytest.raises(KeyError, match=r"known: f"):
            lh.runner()


class TestLookalikeAggregates:
    """Data with the KPL magic bytes that is no valid aggregate: the plan's
    ``stream.aggregated`` decides, through the handler, what it is."""

    DATA = b"\xf3\x89\x9a\xc2 a plain record that starts with the magic bytes"

    @pytest.mark.parametrize("aggregated", [False, True])
    def test_plain_on_a_plain_stream_dead_lettered_on_an_aggregated_one(
        self, plan_file, aggregated
    ):
        function = {**PLAN["functions"]["f"], "processors": [], "on_failure": "dlq"}
        plan = dict(PLAN, stream={"aggregated": aggregated}, functions={"f": function})
        plan_file.write_text(json.dumps(plan))
        f = EventFactory()
        result = lh.runner().handle(f.event([f.raw(self.DATA, "k")]))
        assert result.response == {"batchItemFailures": []}
        if aggregated:
            assert result.written.get("out", 0) == 0
            (letter,) = result.dead_letters
            assert "checksum" in letter.reason
        else:
            assert result.written == {"out": 1}
            assert result.dead_letters == []


class TestUnknownRoute:
    def test_a_step_that_routes_to_an_unknown_sink_dead_letters_the_record(self):
        from processors.chain import Chain, Step  # noqa: PLC0415
        from sinks.memory import MemorySink  # noqa: PLC0415
        from stream.batch import BatchRunner  # noqa: PLC0415

        def misroute(record):
            record.routes = ("nowhere",)
            return record

        dlq = MemorySink("dlq")
        runner = BatchRunner(Chain([Step.of("p", misroute)]), {"dlq": dlq}, on_failure="dlq")
        result = runner.handle(EventFactory().batch([("k", {"a": 1})]))
        assert result.response == {"batchItemFailures": []}
        (letter,) = result.dead_letters
        assert letter.error == "UnknownSink"
        assert "unknown sink 'nowhere'" in letter.reason


class TestGrouping:
    """Each sink gets the records routed to it, in shard order, whatever the routes' mix
    (the batch fold has a shortcut for a batch whose records all share one route)."""

    @staticmethod
    def _run(routes_of, n=6, default=None):
        from processors.chain import Chain, Step  # noqa: PLC0415
        from sinks.discard import DiscardSink  # noqa: PLC0415
        from stream.batch import BatchRunner  # noqa: PLC0415

        class Recording(DiscardSink):
            def _write(self, items):
                self.seen.extend(item.json["i"] for item in items)
                return super()._write(items)

        sinks = {name: Recording(name) for name in ("a", "b")}
        for sink in sinks.values():
            sink.seen = []

        def route(record):
            routes = routes_of(record.json["i"])
            if routes is not None:
                record.routes = routes
            return record

        runner = BatchRunner(Chain([Step.of("p", route)]), sinks, default_route=default)
        result = runner.handle(EventFactory().batch([("k", {"i": i}) for i in range(n)]))
        assert result.response == {"batchItemFailures": []}
        return {name: sink.seen for name, sink in sinks.items()}, result

    def test_one_route_for_all_gives_each_of_its_sinks_the_whole_batch_in_order(self):
        seen, result = self._run(lambda i: ("b", "a"))
        assert seen == {"a": list(range(6)), "b": list(range(6))}
        assert result.written == {"a": 6, "b": 6}

    @pytest.mark.parametrize("first", [("a", "a"), ("a",)])
    def test_a_route_that_names_a_sink_twice_gives_it_the_record_twice_in_place(self, first):
        seen, _ = self._run(lambda i: ("a", "a") if i else first, n=3)
        assert seen["a"] == [0, 0, 1, 1, 2, 2][2 - len(first) :]

    def test_mixed_routes_keep_shard_order_within_each_sink(self):
        seen, result = self._run(lambda i: ("a",) if i % 3 else ("a", "b"))
        assert seen == {"a": list(range(6)), "b": [0, 3]}
        assert result.unrouted == 0

    def test_no_route_step_means_the_default_and_an_empty_route_means_unrouted(self):
        seen, _ = self._run(lambda i: None, default=("b",))
        assert seen == {"a": [], "b": list(range(6))}
        seen, result = self._run(lambda i: ())
        assert seen == {"a": [], "b": []}
        assert result.unrouted == 6
        seen, result = self._run(lambda i: () if i < 2 else None, default=("a",))
        assert (seen["a"], result.unrouted) == ([2, 3, 4, 5], 2)
