"""CloudWatch metrics in EMF: valid documents, declared once per invocation, counts that add up.

The EMF checks follow the CloudWatch Embedded Metric Format specification: a document has
``_aws.Timestamp`` (epoch milliseconds) and ``_aws.CloudWatchMetrics``, a list of
directives each with a ``Namespace``, ``Dimensions`` (a list of dimension sets, each a list
of keys that are top-level string members) and ``Metrics`` (``Name`` and ``Unit``), and
every declared metric is a top-level number.
"""

from __future__ import annotations

import io
import json
import time
import types
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import processors.chain
import stream.batch
import stream.lambda_handler as lh
from processors.chain import Chain, Step
from processors.registry import build_processor
from sinks.base import Ordering
from sinks.memory import MemorySink
from stream.batch import BatchRunner
from stream.exceptions import RetryableError
from stream.logs import configure
from stream.metrics import UNITS, Metrics, metrics_enabled
from stream.runtime import build_runner
from stream.testing import EventFactory

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from stream.records import Record

# The units CloudWatch accepts (PutMetricData's StandardUnit).
CLOUDWATCH_UNITS = {
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes",
    "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count",
    "Bytes/Second", "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second",
    "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second",
    "Gigabits/Second", "Terabits/Second", "Count/Second", "None",
}  # fmt: skip
TOTALS = (
    "RecordsIn", "BatchSize", "RecordsFiltered", "RecordsUnrouted", "RecordsWritten",
    "RecordsDeadLettered", "RetryableFailures", "InfrastructureErrors",
)  # fmt: skip


def plan(ordering: str = "per_key", on_failure: str | None = "dlq") -> dict[str, Any]:
    """A compiled plan: match filter (keep) -> set -> every record to ``out``."""
    return {
        "name": "shop",
        "sinks": {"out": {"type": "memory"}, "dlq": {"type": "memory"}},
        "functions": {
            "f": {
                "ordering": ordering,
                "on_failure": on_failure,
                "route": ["out"],
                "processors": [
                    {"filter": {"match": {"keep": [True]}}},
                    {"enrich": {"set": {"seen": True}}},
                ],
            }
        },
    }


def throttled(record: Record, attempt: int) -> str | None:
    """The ``out`` sink fails a record whose document says ``throttle``, retryably."""
    return "retryable" if record.json.get("throttle") else None


def stall(record: Record) -> Record:
    """A step that fails a record whose document says ``stall``, retryably."""
    if record.json.get("stall"):
        msg = "injected transient failure"
        raise RetryableError(msg)
    return record


def make_runner(
    ordering: str = "per_key",
    *,
    dead_letter_sink: bool = True,
    metrics: bool = True,
    now: Callable[[], float] = time.time,
) -> tuple[BatchRunner, dict[str, MemorySink]]:
    """match filter (keep) -> stall -> set -> out, with memory sinks ``out`` and ``dlq``."""
    sinks = {"out": MemorySink("out", fail=throttled), "dlq": MemorySink("dlq")}
    steps = [
        build_processor(0, {"filter": {"match": {"keep": [True]}}}, list(sinks)),
        Step.of("processors[1].stall", stall),
        build_processor(2, {"enrich": {"set": {"seen": True}}}, list(sinks)),
    ]
    runner = BatchRunner(
        Chain(steps), sinks, default_route=["out"],
        on_failure="dlq" if dead_letter_sink else None, ordering=Ordering(ordering),
        function="f", pipeline="shop", now=now, metrics=metrics,
    )  # fmt: skip
    return runner, sinks


def emf_lines(text: str) -> list[dict[str, Any]]:
    docs = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [d for d in docs if "_aws" in d]


def assert_valid_emf(doc: dict[str, Any]) -> None:
    """The specification's required keys and types, for one document."""
    meta = doc["_aws"]
    assert isinstance(meta["Timestamp"], int)
    assert meta["Timestamp"] > 1_600_000_000_000  # epoch milliseconds, not seconds
    directives = meta["CloudWatchMetrics"]
    assert isinstance(directives, list)
    assert directives
    for directive in directives:
        assert isinstance(directive["Namespace"], str)
        assert directive["Namespace"]
        assert isinstance(directive["Dimensions"], list)
        for dimension_set in directive["Dimensions"]:
            assert 1 <= len(dimension_set) <= 30
            for key in dimension_set:
                assert isinstance(doc[key], str)
                assert doc[key]
        assert 1 <= len(directive["Metrics"]) <= 100
        for metric in directive["Metrics"]:
            name = metric["Name"]
            assert isinstance(doc[name], int | float)
            assert not isinstance(doc[name], bool)
            assert metric["Unit"] in CLOUDWATCH_UNITS


def declarations(docs: list[dict[str, Any]]) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    """Every (metric name, dimension values) the documents declare."""
    out = []
    for doc in docs:
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            for dimension_set in directive["Dimensions"]:
                dims = tuple((key, doc[key]) for key in dimension_set)
                out += [(metric["Name"], dims) for metric in directive["Metrics"]]
    return out


def values(docs: list[dict[str, Any]], name: str, key: str | None = None) -> dict[str, Any]:
    """name's values by the value of dimension ``key`` (or under "" for the totals)."""
    out = {}
    for doc in docs:
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            if name in {m["Name"] for m in directive["Metrics"]}:
                (dims,) = directive["Dimensions"]
                extra = [d for d in dims if d not in ("Pipeline", "Function")]
                if (extra[0] if extra else None) == key:
                    out[doc[key] if key else ""] = doc[name]
    return out


def total(docs: list[dict[str, Any]], name: str) -> Any:
    return values(docs, name)[""]


def mixed_event(f: EventFactory) -> dict[str, Any]:
    """2 kept, 2 filtered, 1 not JSON (poison), 1 kept but throttled by the sink."""
    return dict(
        f.event([
            f.record({"keep": True, "n": 1}, "a"),
            f.record({"keep": False, "n": 2}, "b"),
            f.raw(b"not json", "c"),
            f.record({"keep": True, "n": 3}, "d"),
            f.record({"keep": False, "n": 4}, "e"),
            f.record({"keep": True, "throttle": True}, "f"),
        ])
    )  # fmt: skip


class TestDocuments:
    def test_every_document_has_the_required_emf_keys(self, capsys):
        """Each printed line is an EMF document the specification accepts."""
        runner, _ = make_runner()
        runner.invoke(mixed_event(EventFactory()))
        docs = emf_lines(capsys.readouterr().out)
        assert docs
        for doc in docs:
            assert_valid_emf(doc)
            assert doc["Pipeline"] == "shop"
            assert doc["Function"] == "f"

    def test_each_metric_is_declared_once_per_invocation(self, capsys):
        """No metric name with the same dimension values is declared twice."""
        runner, _ = make_runner()
        runner.invoke(mixed_event(EventFactory()))
        declared = declarations(emf_lines(capsys.readouterr().out))
        assert len(declared) == len(set(declared))
        totals = [name for name, dims in declared if len(dims) == 2]
        assert sorted(totals) == sorted([*TOTALS, "OldestRecordAge"])

    def test_every_declared_name_has_a_known_unit(self, capsys):
        """Counts are Count, times Milliseconds, as the table in the module says."""
        runner, _ = make_runner()
        runner.invoke(mixed_event(EventFactory()))
        for doc in emf_lines(capsys.readouterr().out):
            for directive in doc["_aws"]["CloudWatchMetrics"]:
                for metric in directive["Metrics"]:
                    assert metric["Unit"] == UNITS[metric["Name"]]

    def test_steps_sinks_and_reasons_share_documents(self):
        """Document i holds the i-th step, sink and reason: max of their counts, not the sum."""
        runner, _ = make_runner()
        event = mixed_event(EventFactory())
        result = runner.handle(event)
        assert runner.metrics is not None
        docs = runner.metrics.documents(result, len(event["Records"]))
        steps = {d["Step"] for d in docs if "Step" in d}
        sinks = {d["Sink"] for d in docs if "Sink" in d}
        reasons = {d["Reason"] for d in docs if "Reason" in d}
        assert len(docs) == max(1, len(steps), len(sinks), len(reasons))
        assert sinks == {"out", "dlq"}
        assert reasons == {"DecodeError"}

    def test_one_json_line_per_document_on_stdout(self, capsys):
        """The lines are what documents() returns, each one line of JSON."""
        runner, _ = make_runner()
        event = mixed_event(EventFactory())
        runner.invoke(event)
        out = capsys.readouterr().out
        docs = emf_lines(out)
        assert len(docs) == sum('"_aws"' in line for line in out.splitlines())
        assert len(docs) >= 1

    def test_an_empty_batch_still_reports_its_totals(self):
        """Alarms see every invocation: the totals are there, zeros included."""
        runner, _ = make_runner()
        result = runner.handle({"Records": []})
        assert runner.metrics is not None
        (doc,) = runner.metrics.documents(result, 0)
        assert_valid_emf(doc)
        assert {name: doc[name] for name in TOTALS} == dict.fromkeys(TOTALS, 0)


class TestCounts:
    def test_the_counts_match_what_the_sinks_received(self):
        """Filtered, written, dead-lettered and retryable are each what happened."""
        runner, sinks = make_runner("none")
        event = mixed_event(EventFactory())
        result = runner.handle(event)
        assert runner.metrics is not None
        docs = runner.metrics.documents(result, len(event["Records"]))
        assert total(docs, "RecordsIn") == 6
        assert total(docs, "BatchSize") == 6
        assert total(docs, "RecordsFiltered") == 2
        assert values(docs, "Filtered", "Step") == {"processors[0].filter": 2}
        assert total(docs, "RecordsWritten") == len(sinks["out"].log) == 2
        assert values(docs, "Written", "Sink") == {"out": 2}
        assert values(docs, "Routed", "Sink") == {"out": 3}
        assert total(docs, "RecordsDeadLettered") == len(sinks["dlq"].log) == 1
        assert values(docs, "DeadLettered", "Reason") == {"DecodeError": 1}
        assert total(docs, "RetryableFailures") == len(result.response["batchItemFailures"])
        assert total(docs, "RetryableFailures") == 1

    def test_times_are_reported_for_decoding_each_step_and_each_sink_written(self):
        """StepTime for the event and each step; SinkTime for out and dlq."""
        runner, _ = make_runner()
        event = mixed_event(EventFactory())
        result = runner.handle(event)
        assert runner.metrics is not None
        docs = runner.metrics.documents(result, len(event["Records"]))
        step_times = values(docs, "StepTime", "Step")
        assert set(step_times) == {
            "event", "processors[0].filter", "processors[1].stall", "processors[2].enrich",
        }  # fmt: skip
        assert set(values(docs, "SinkTime", "Sink")) == {"out", "dlq"}
        assert all(ms >= 0 for ms in step_times.values())

    def test_the_oldest_record_age_runs_from_its_arrival_to_processing(self):
        """With the clock 2.5 s after the first arrival, the age is 2500 ms."""
        f = EventFactory(arrival=1_767_225_600.0)
        event = dict(f.batch([("a", {"keep": True}), ("b", {"keep": True})]))
        runner, _ = make_runner(now=lambda: 1_767_225_602.5)
        result = runner.handle(event)
        assert runner.metrics is not None
        docs = runner.metrics.documents(result, 2)
        assert total(docs, "OldestRecordAge") == pytest.approx(2500.0)
        assert docs[0]["_aws"]["Timestamp"] == 1_767_225_602_500

    def test_a_filtered_record_held_back_by_a_failure_counts_as_filtered_only(self):
        """Under strict order a dropped record after a failure is reported too, and still
        counts once: RecordsIn is the sum of the fates."""
        f = EventFactory()
        event = dict(
            f.event([
                f.record({"keep": True, "stall": True}, "a"),
                f.record({"keep": False}, "b"),
                f.record({"keep": True}, "c"),
            ])
        )  # fmt: skip
        runner, _ = make_runner("strict")
        result = runner.handle(event)
        assert runner.metrics is not None
        docs = runner.metrics.documents(result, 3)
        reported = len(result.response["batchItemFailures"])
        assert reported == 3  # the dropped record is reported: Lambda resumes before it
        assert total(docs, "RecordsFiltered") == 1
        assert total(docs, "RetryableFailures") == 2
        assert sum(total(docs, name) for name in TOTALS[2:]) == total(docs, "RecordsIn") == 3

    @given(
        kinds=st.lists(
            st.tuples(
                st.sampled_from(["good", "good", "filtered", "poison", "throttled", "stalled"]),
                st.sampled_from(["k0", "k1", "k2"]),
            ),
            max_size=40,
        ),
        ordering=st.sampled_from(["strict", "per_key", "none"]),
        dead_letter_sink=st.booleans(),
    )
    @example(kinds=[("stalled", "k0"), ("filtered", "k0"), ("poison", "k0")], ordering="per_key",
             dead_letter_sink=True)  # fmt: skip
    def test_records_in_is_filtered_plus_written_plus_dead_lettered_plus_retryable(
        self, kinds, ordering, dead_letter_sink
    ):
        """For any batch of good, filtered, poison, throttled (by the sink) and stalled (by a
        step) records, each term is what the sinks and the response show, and the terms add
        up to the records in."""
        f = EventFactory()
        entries = []
        for i, (kind, key) in enumerate(kinds):
            if kind == "poison":
                entries.append(f.raw(b"\xffnot json %d" % i, key))
            else:
                doc = {
                    "i": i,
                    "keep": kind != "filtered",
                    "throttle": kind == "throttled",
                    "stall": kind == "stalled",
                }
                entries.append(f.record(doc, key))
        event = dict(f.event(entries))
        runner, sinks = make_runner(ordering, dead_letter_sink=dead_letter_sink)
        result = runner.handle(event)
        assert runner.metrics is not None
        docs = runner.metrics.documents(result, len(entries))
        for doc in docs:
            assert_valid_emf(doc)

        filtered_seqs = {
            e["kinesis"]["sequenceNumber"]
            for (kind, _), e in zip(kinds, entries, strict=True)
            if kind == "filtered"
        }
        reported = {item["itemIdentifier"] for item in result.response["batchItemFailures"]}
        assert total(docs, "RecordsIn") == len(kinds)
        assert total(docs, "RecordsFiltered") == len(filtered_seqs)
        assert total(docs, "RecordsWritten") == len(sinks["out"].log)
        dead = len(sinks["dlq"].log) if dead_letter_sink else 0
        assert total(docs, "RecordsDeadLettered") == dead
        assert total(docs, "RetryableFailures") == len(reported - filtered_seqs)
        assert total(docs, "RecordsUnrouted") == 0
        assert total(docs, "RecordsFiltered") + total(docs, "RecordsUnrouted") + total(
            docs, "RecordsWritten"
        ) + total(docs, "RecordsDeadLettered") + total(docs, "RetryableFailures") == total(
            docs, "RecordsIn"
        )
        declared = declarations(docs)
        assert len(declared) == len(set(declared))


class TestDisabled:
    def test_with_metrics_off_nothing_is_written(self, capsys):
        """No EMF line, and the result carries no measurements."""
        runner, _ = make_runner(metrics=False)
        assert runner.metrics is None
        runner.invoke(mixed_event(EventFactory()))
        assert emf_lines(capsys.readouterr().out) == []
        assert runner.handle(mixed_event(EventFactory())).measurements is None

    def test_with_metrics_off_no_clock_is_read(self, monkeypatch):
        """The timing hooks cost nothing when off: a batch never calls the clock."""
        calls = []

        def clock() -> float:
            calls.append(1)
            return 0.0

        monkeypatch.setattr(stream.batch, "perf_counter", clock)
        monkeypatch.setattr(processors.chain, "perf_counter", clock)
        off, _ = make_runner(metrics=False)
        off.handle(mixed_event(EventFactory()))
        assert calls == []
        on, _ = make_runner(metrics=True)
        on.handle(mixed_event(EventFactory()))
        assert calls  # the same hooks are live with metrics on


class TestBrokenOutput:
    def test_a_failing_write_of_the_metrics_does_not_fail_the_batch(self, capsys):
        """The batch is written: the response stands, and the failure is logged instead."""

        class Closed(io.StringIO):
            def write(self, text: str) -> int:
                msg = "stdout is closed"
                raise OSError(msg)

        runner, sinks = make_runner()
        runner.metrics = Metrics("shop", "f", stream=Closed())
        configure("INFO")
        response = runner.invoke(mixed_event(EventFactory()))
        assert response["batchItemFailures"]  # the throttled record, as without metrics
        assert len(sinks["out"].log) == 2
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        (error,) = [d for d in lines if d.get("message") == "metrics not written"]
        assert "stdout is closed" in error["exception"]


class TestEnabled:
    @pytest.mark.parametrize(
        ("setting", "environ", "expected"),
        [
            (True, {}, True),
            (False, {"AWS_LAMBDA_FUNCTION_NAME": "f"}, False),
            (None, {"AWS_LAMBDA_FUNCTION_NAME": "f"}, True),
            (None, {}, False),
            (True, {"SHARDLINE_METRICS": "0"}, False),
            (False, {"SHARDLINE_METRICS": "1"}, True),
            (None, {"SHARDLINE_METRICS": " true "}, True),
            (True, {"SHARDLINE_METRICS": ""}, True),
        ],
    )
    def test_the_environment_overrides_the_plan_which_overrides_the_default(
        self, setting, environ, expected
    ):
        """SHARDLINE_METRICS wins; then the plan; a plan without it: on in Lambda only."""
        assert metrics_enabled(setting, environ) is expected

    def test_a_bad_value_is_refused_with_the_fix(self):
        """A typo in the variable is an error at cold start, not a silent default."""
        with pytest.raises(ValueError, match=r"SHARDLINE_METRICS='maybe': expected 1 .* or 0"):
            metrics_enabled(True, {"SHARDLINE_METRICS": "maybe"})

    def test_build_runner_reads_the_plan_and_the_environment(self):
        """The plan's metrics setting, overridden by the environment given."""
        spec = dict(plan(), metrics=False)
        make = lambda name, _: MemorySink(name)  # noqa: E731
        assert build_runner(spec, "f", make, environ={}).metrics is None
        assert build_runner(spec, "f", make, environ={"SHARDLINE_METRICS": "1"}).metrics
        assert build_runner(dict(spec, metrics=True), "f", make, environ={}).metrics


HANDLER_PLAN = {
    "version": 1,
    "name": "t",
    "sinks": {"out": {"type": "discard"}, "dlq": {"type": "discard"}},
    "functions": {
        "f": {
            "ordering": "per_key",
            "on_failure": "dlq",
            "route": ["out"],
            "processors": [{"filter": {"match": {"keep": [True]}}}],
        }
    },
}


@pytest.fixture
def handler_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(HANDLER_PLAN))
    monkeypatch.setenv("SHARDLINE_PIPELINE", str(path))
    monkeypatch.delenv("SHARDLINE_FUNCTION", raising=False)
    monkeypatch.setattr(lh, "_runner", None)
    return path


class TestHandler:
    def test_the_handler_prints_one_set_of_documents_per_invocation(
        self, handler_plan, monkeypatch, capsys
    ):
        """Two invocations, two sets: each declares every total once, with its own counts."""
        monkeypatch.setenv("SHARDLINE_METRICS", "1")
        f = EventFactory()
        context = types.SimpleNamespace(aws_request_id="r1")
        lh.handler(dict(f.batch([("a", {"keep": True}), ("b", {"keep": False})])), context)
        first = emf_lines(capsys.readouterr().out)
        lh.handler(dict(f.batch([("a", {"keep": True})])), context)
        second = emf_lines(capsys.readouterr().out)
        for docs, n in ((first, 2), (second, 1)):
            declared = declarations(docs)
            assert len(declared) == len(set(declared))
            assert total(docs, "RecordsIn") == n
            assert total(docs, "RecordsWritten") == 1

    def test_shardline_metrics_0_silences_the_handler(self, handler_plan, monkeypatch, capsys):
        """The override turns metrics off even in Lambda."""
        monkeypatch.setenv("SHARDLINE_METRICS", "0")
        monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "f")
        lh.handler(dict(EventFactory().batch([("a", {"keep": True})])))
        assert emf_lines(capsys.readouterr().out) == []
