"""The scheduled flush's runner (stream/flush.py) against a stand-in window step: which
emissions are acked, what the records look like, what the response, metrics and logs say.
The window steps' own ``tick`` (and the end-to-end flush on moto) are tested elsewhere
(tests/integration/test_window_tick.py, tests/stream/test_flush_handler.py)."""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any, ClassVar

import orjson
import pytest

import stream.lambda_handler as lh
from processors.chain import Chain
from processors.step import Step
from processors.window_tick import TICK_SUB_BASE, Emission
from sinks.base import OK, DeadLetter, Ordering, Outcome, Sink, permanent, retryable
from stream.batch import BatchRunner
from stream.exceptions import FlushEventError, ShardlineError
from stream.flush import FlushRunner, emission_records, flush_event
from stream.metrics import Metrics
from stream.records import FinalRecord, Record
from stream.testing import EventFactory

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

FN_ARN = "arn:aws:lambda:eu-west-1:111122223333:function:p-f"


class StandInWindow:
    """A window step's flush surface: ``tick`` re-emits what is pending, then what the
    test queued as newly closed; ``ack`` drops an emission."""

    def __init__(self) -> None:
        self.pending: dict[tuple[str, int], Emission] = {}
        self.closing: list[Emission] = []
        self.stops: list[Callable[[], bool] | None] = []
        self.arns: list[str | None] = []  # what each tick was given as the stream's ARN
        self.acked: list[Emission] = []

    def close(self, shard: str, tick: int, *ids: str, seq: str = "49") -> Emission:
        results = tuple({"window_id": i, "count": 1} for i in ids)
        emission = Emission(shard, tick, seq, TICK_SUB_BASE + tick, results)
        self.closing.append(emission)
        return emission

    def tick(
        self,
        now: float | None = None,
        *,
        stop: Callable[[], bool] | None = None,
        arn: str | None = None,
    ):
        self.stops.append(stop)
        self.arns.append(arn)
        for e in self.closing:
            self.pending[e.shard_id, e.tick] = e
        self.closing = []
        return list(self.pending.values())

    def ack(self, emission: Emission) -> None:
        self.acked.append(emission)
        self.pending.pop((emission.shard_id, emission.tick), None)

    def __call__(self, record: Record) -> Record:
        return record


class Rows(Sink):
    """A keyed sink by ``window_id`` whose outcome per record and attempt a test decides."""

    per_key_safe: ClassVar[bool] = True
    max_batch: ClassVar[int] = 10_000

    def __init__(self, name: str, decide: Callable[[Record, int], Outcome] | None = None) -> None:
        super().__init__(name)
        self.decide = decide
        self.rows: dict[str, dict[str, Any]] = {}
        self.writes: list[Record] = []
        self.attempts: dict[str, int] = {}

    def _write(self, items: Sequence[Record]) -> list[Outcome]:
        out = []
        for item in items:
            wid = item.get("window_id")
            attempt = self.attempts.get(wid, 0)
            self.attempts[wid] = attempt + 1
            outcome = self.decide(item, attempt) if self.decide else OK
            if outcome is OK:
                self.rows[wid] = item.as_dict()
                self.writes.append(item)
            out.append(outcome)
        return out


def _runner(
    window: StandInWindow,
    sink: Sink,
    *,
    after: Sequence[Callable[[Record], Any]] = (),
    before: Sequence[Callable[[Record], Any]] = (),
    metrics: Metrics | None = None,
) -> BatchRunner:
    steps = [Step.of(f"processors[{i}].use", s) for i, s in enumerate(before)]
    steps.append(Step.of(f"processors[{len(steps)}].window", window))
    steps += [Step.of(f"processors[{len(steps) + i}].use", s) for i, s in enumerate(after)]
    runner = BatchRunner(
        Chain(steps),
        {"rows": sink, "dlq": Rows("dlq")},
        default_route=["rows"],
        on_failure="dlq",
        ordering=Ordering.PER_KEY,
        function="f",
        pipeline="p",
        stream="clicks",
        now=lambda: 1_700_000_000.0,
    )
    runner.metrics = metrics
    return runner


class Context:
    aws_request_id = "req-1"
    invoked_function_arn = FN_ARN

    def __init__(self, remaining_ms: int = 60_000) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


class TestAcks:
    def test_a_flush_writes_each_window_once_and_acks_its_emissions(self):
        window, sink = StandInWindow(), Rows("rows")
        window.close("shardId-0", 1, "f/a/0", "f/b/0")
        window.close("shardId-1", 1, "f/c/0")
        runner = _runner(window, sink)
        response = runner.flush(flush_event("f"), Context())
        assert response == {
            "shardline": "flush", "function": "f", "windows": 3, "emitted": 2, "pending": 0
        }  # fmt: skip
        assert sorted(sink.rows) == ["f/a/0", "f/b/0", "f/c/0"]
        assert not window.pending
        assert runner.flush(flush_event("f"), Context())["emitted"] == 0
        assert len(sink.writes) == 3

    def test_a_retryable_failure_leaves_its_emission_pending_until_a_flush_writes_it(self):
        down = {"on": True}
        window = StandInWindow()
        sink = Rows(
            "rows", lambda rec, n: retryable("throttled", "Throttled") if down["on"] else OK
        )
        window.close("shardId-0", 1, "f/a/0")
        runner = _runner(window, sink)
        assert runner.flush(flush_event("f"), Context())["pending"] == 1
        assert list(window.pending) == [("shardId-0", 1)]
        assert not window.acked
        down["on"] = False
        assert runner.flush(flush_event("f"), Context()) == {
            "shardline": "flush", "function": "f", "windows": 1, "emitted": 1, "pending": 0
        }  # fmt: skip
        assert list(sink.rows) == ["f/a/0"]
        assert not window.pending

    def test_only_the_emission_with_a_failed_record_stays_pending(self):
        """Each shard's results carry its own partition key: a failure on one shard holds
        back no other shard's emission under per-key ordering."""
        window = StandInWindow()
        sink = Rows(
            "rows", lambda rec, n: retryable("x", "T") if rec.get("window_id") == "f/b/0" else OK
        )
        window.close("shardId-0", 1, "f/a/0", "f/b/0")
        window.close("shardId-1", 1, "f/c/0")
        runner = _runner(window, sink)
        assert runner.flush(flush_event("f"), Context())["pending"] == 1
        assert list(window.pending) == [("shardId-0", 1)]
        assert [e.shard_id for e in window.acked] == ["shardId-1"]

    def test_a_shards_later_emission_waits_for_its_earlier_one_in_order(self):
        """Per-key order over flushes, as a batch keeps it: a shard's emission of tick 2
        stays pending while its tick-1 emission failed (Lambda redelivers a batch from the
        first failed record: what came after it in the shard is written again after it), so
        the next flush writes it again after tick 1's."""
        window = StandInWindow()
        sink = Rows(
            "rows",
            lambda rec, n: (
                retryable("x", "T") if rec.get("window_id") == "f/a/0" and n == 0 else OK
            ),
        )
        window.close("shardId-0", 2, "f/b/0")  # queued first: the runner orders by tick
        window.close("shardId-0", 1, "f/a/0")
        runner = _runner(window, sink)
        assert runner.flush(flush_event("f"), Context())["pending"] == 2
        assert not window.acked
        assert runner.flush(flush_event("f"), Context())["pending"] == 0
        assert [r.get("window_id") for r in sink.writes][-2:] == ["f/a/0", "f/b/0"]
        assert [e.tick for e in window.acked] == [1, 2]

    def test_a_tick_that_failed_on_one_shard_still_sends_the_others_then_raises(self):
        """Review 13: a shard whose state cannot be read at every flush must not hold back
        every other shard's results; the flush still fails (the errors alarm counts it)."""
        from processors.window_state import TickIncomplete, WindowStateError  # noqa: PLC0415

        class FailingOnOneShard(StandInWindow):
            def tick(self, now=None, *, stop=None, arn=None):
                out = super().tick(now, stop=stop, arn=arn)
                raise TickIncomplete(WindowStateError("shardId-1: throttled"), out)

        window = FailingOnOneShard()
        window.close("shardId-0", 1, "f/a/0")
        sink = Rows("rows")
        runner = _runner(window, sink)
        with pytest.raises(WindowStateError, match="shardId-1: throttled"):
            runner.flush(flush_event("f"), Context())
        assert set(sink.rows) == {"f/a/0"}
        assert [(e.shard_id, e.tick) for e in window.acked] == [("shardId-0", 1)]

    def test_a_permanently_refused_result_is_dead_lettered_and_its_emission_acked(self):
        window = StandInWindow()
        sink = Rows("rows", lambda rec, n: permanent("too big", "ValidationException"))
        window.close("shardId-0", 1, "f/a/0")
        runner = _runner(window, sink)
        assert runner.flush(flush_event("f"), Context())["pending"] == 0
        assert not window.pending
        letters = runner.sinks["dlq"]
        assert isinstance(letters, Rows)  # dead letters are records of the envelope
        assert len(letters.writes) == 1

    def test_the_steps_after_the_window_run_on_the_results_and_those_before_do_not(self):
        def tag(rec: Record) -> Record:
            rec.as_dict()["tagged"] = True
            return rec

        def refuse(rec: Record) -> Record:
            raise AssertionError("a step before the window saw a result")

        window, sink = StandInWindow(), Rows("rows")
        window.close("shardId-0", 1, "f/a/0")
        runner = _runner(window, sink, before=[refuse], after=[tag])
        runner.flush(flush_event("f"), Context())
        assert sink.rows["f/a/0"]["tagged"] is True


class TestRecords:
    def test_the_synthetic_position_is_the_quiet_shards_with_the_tick_sub_sequence(self):
        window, sink = StandInWindow(), Rows("rows")
        window.close("shardId-7", 3, "f/a/0", seq="4242")
        _runner(window, sink).flush(flush_event("f"), Context())
        (rec,) = sink.writes
        assert (rec.shard_id, rec.sequence_number, rec.sub_sequence_number, rec.part) == (
            "shardId-7", "4242", TICK_SUB_BASE + 3, ""
        )  # fmt: skip
        assert rec.event_source_arn == "arn:aws:kinesis:eu-west-1:111122223333:stream/clicks"
        assert rec.arrival == 1_700_000_000.0

    def test_the_tick_gets_the_stream_s_arn_for_a_reshard_s_lineage_or_none(self):
        """A quiet child's inherited windows need the shard's parents, by the stream's
        ARN; without a context there is none (the windows wait for a record)."""
        window = StandInWindow()
        _runner(window, Rows("rows")).flush(flush_event("f"), Context())
        _runner(window, Rows("rows")).flush(flush_event("f"))
        assert window.arns == ["arn:aws:kinesis:eu-west-1:111122223333:stream/clicks", None]

    def test_a_flushed_result_never_takes_the_document_id_of_the_last_records_result(self):
        """The last record closed a window too: its one result has the id ``shard:seq``;
        the flush's must differ (the sub-sequence number is in it)."""
        last = Record(b"{}", "k", "4242", shard_id="s", event_id="s:4242").derive({"w": 1})
        e = Emission("s", 1, "4242", TICK_SUB_BASE + 1, ({"w": 2},))
        (flushed,) = emission_records(e, event_source_arn="", arrival=0.0, index=0)
        assert last.document_id == "s:4242"
        assert flushed.document_id == f"s:4242:{TICK_SUB_BASE + 1}"

    def test_a_flushed_results_dead_letter_keeps_its_reason_and_its_document_id(self):
        """A result a sink refused is dead-lettered with the sink's reason; ``dlq redrive``
        reads the letter back (``DeadLetter.from_document``) and writes the record again:
        it must keep the flushed result's ``document_id`` (with the tick's sub-sequence
        number), or it would land on the ``_id`` of the result the shard's last record
        made (``s:4242``) and overwrite that window's document."""
        window = StandInWindow()
        sink = Rows("rows", lambda rec, n: permanent("too big", "ValidationException"))
        window.close("shardId-0", 1, "f/a/0", seq="4242")
        runner = _runner(window, sink)
        runner.flush(flush_event("f"), Context())
        (letter,) = runner.sinks["dlq"].writes
        envelope = letter.as_dict()
        assert (envelope["reason"], envelope["error"], envelope["step"]) == (
            "too big", "ValidationException", "sink:rows"
        )  # fmt: skip
        again = DeadLetter.from_document(envelope).record
        assert again.document_id == f"shardId-0:4242:{TICK_SUB_BASE + 1}"
        assert again.position == (4242, TICK_SUB_BASE + 1)

    def test_a_flushed_result_is_final_by_its_window_id_as_the_steps_are(self):
        e = Emission("s", 1, "9", TICK_SUB_BASE + 1, ({"window_id": "f/a/0"}, {"w": 2}))
        final, plain = emission_records(e, event_source_arn="", arrival=0.0, index=0)
        assert isinstance(final, FinalRecord)
        assert final.is_final_in("window_id")
        assert type(plain) is Record  # no window_id (a stand-in's): not final

    def test_a_re_emission_is_at_the_same_position_with_the_same_ids(self):
        e = Emission("s", 1, "9", TICK_SUB_BASE + 1, ({"w": 1}, {"w": 2}))
        a = emission_records(e, event_source_arn="arn", arrival=1.0, index=0)
        b = emission_records(e, event_source_arn="arn", arrival=2.0, index=5)
        assert [(r.position, r.part, r.document_id) for r in a] == [
            (r.position, r.part, r.document_id) for r in b
        ]


class TestEvent:
    def test_another_function_is_refused(self):
        runner = _runner(StandInWindow(), Rows("rows"))
        with pytest.raises(FlushEventError, match="'g' reached function 'f'"):
            runner.flush(flush_event("g"), Context())
        assert issubclass(FlushEventError, ShardlineError)

    def test_the_deployed_name_of_the_function_is_accepted(self):
        runner = _runner(StandInWindow(), Rows("rows"))
        assert runner.flush(flush_event("p-f"), Context())["function"] == "f"

    def test_another_version_is_refused(self):
        runner = _runner(StandInWindow(), Rows("rows"))
        with pytest.raises(FlushEventError, match="version 2"):
            runner.flush({**flush_event("f"), "version": 2}, Context())

    def test_the_ticks_stop_when_the_invocation_runs_short_of_time(self):
        window = StandInWindow()
        runner = _runner(window, Rows("rows"))
        context = Context(remaining_ms=60_000)
        runner.flush(flush_event("f"), context)
        (stop,) = window.stops
        assert stop is not None
        assert not stop()
        context.remaining_ms = 9_000
        assert stop()

    def test_without_a_context_the_ticks_are_not_stopped(self):
        window = StandInWindow()
        _runner(window, Rows("rows")).flush(flush_event("f"))
        assert window.stops == [None]


class TestTelemetry:
    def test_the_metrics_say_windows_flushed_and_pending(self):
        out = io.StringIO()
        window = StandInWindow()
        window.close("shardId-0", 1, "f/a/0", "f/b/0")
        sink = Rows(
            "rows", lambda rec, n: retryable("x", "T") if rec.get("window_id") == "f/b/0" else OK
        )
        runner = _runner(window, sink, metrics=Metrics("p", "f", stream=out, now=lambda: 1.0))
        runner.flush(flush_event("f"), Context())
        (doc,) = [json.loads(line) for line in out.getvalue().splitlines()]
        assert (doc["WindowsFlushed"], doc["WindowFlushPending"], doc["RecordsWritten"]) == (
            2, 1, 1
        )  # fmt: skip
        (directive,) = doc["_aws"]["CloudWatchMetrics"]
        assert directive["Dimensions"] == [["Pipeline", "Function"]]
        assert {m["Name"] for m in directive["Metrics"]} >= {"WindowsFlushed", "WindowFlushPending"}

    def test_a_flush_logs_one_line_with_its_counts(self, caplog):
        window = StandInWindow()
        window.close("shardId-0", 1, "f/a/0")
        runner = _runner(window, Rows("rows"))
        runner.log.logger.propagate = True
        try:
            with caplog.at_level("INFO", logger="shardline"):
                runner.flush(flush_event("f"), Context())
        finally:
            runner.log.logger.propagate = False
        # by identity: after a test that ran the Lambda handler in this process, the same
        # record can reach caplog's handler twice (its own and the root's), not two lines
        (line,) = {id(r): r for r in caplog.records if r.getMessage() == "window flush"}.values()
        assert line.fields["windows"] == 1
        assert line.fields["pending"] == 0
        assert line.fields["request_id"] == "req-1"


PLAN = {
    "version": 1,
    "name": "t",
    "stream": {"name": "clicks"},
    "sinks": {"out": {"type": "discard"}},
    "functions": {"f": {"ordering": "per_key", "on_failure": None, "route": ["out"],
                        "processors": [{"filter": {"match": {"keep": [True]}}}]}},
}  # fmt: skip


@pytest.fixture
def plan_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from stream.plan_version import PLAN_VERSION  # noqa: PLC0415

    path = tmp_path / "pipeline.json"
    path.write_bytes(orjson.dumps({**PLAN, "version": PLAN_VERSION}))
    monkeypatch.setenv("SHARDLINE_PIPELINE", str(path))
    monkeypatch.delenv("SHARDLINE_FUNCTION", raising=False)
    monkeypatch.setattr(lh, "_runner", None)
    return path


class TestHandler:
    def test_the_handler_runs_a_flush_event_as_a_flush(self, plan_file):
        assert lh.handler(flush_event("f"), Context()) == {
            "shardline": "flush", "function": "f", "windows": 0, "emitted": 0, "pending": 0
        }  # fmt: skip

    def test_the_handler_refuses_a_flush_for_another_function(self, plan_file):
        with pytest.raises(FlushEventError):
            lh.handler(flush_event("other"), Context())

    def test_a_kinesis_batch_still_runs_as_a_batch(self, plan_file):
        f = EventFactory()
        assert lh.handler(f.batch([("a", {"keep": True})])) == {"batchItemFailures": []}

    def test_the_flush_runner_is_made_once_per_runner(self, plan_file):
        lh.handler(flush_event("f"), Context())
        first = lh.runner()._flusher
        lh.handler(flush_event("f"), Context())
        assert isinstance(first, FlushRunner)
        assert lh.runner()._flusher is first


class TestSeveralWindowSteps:
    def test_only_the_last_window_step_is_ticked(self):
        first, last, sink = StandInWindow(), StandInWindow(), Rows("rows")
        first.close("shardId-0", 1, "f/a/0")
        last.close("shardId-0", 1, "g/a/0")
        runner = BatchRunner(
            Chain([Step.of("processors[0].window", first), Step.of("processors[1].window", last)]),
            {"rows": sink},
            default_route=["rows"],
            function="f",
        )
        assert runner.flush(flush_event("f"))["windows"] == 1
        assert first.stops == []
        assert list(sink.rows) == ["g/a/0"]

    def test_a_flush_by_hand_ticks_a_last_window_step_whose_schedule_is_off(self):
        """flush_s: 0 removes the schedule; an emission left pending when it was turned off
        still goes out by `shardline flush` (review 13: stranded otherwise)."""
        window = StandInWindow()
        window.flush_s = 0  # type: ignore[attr-defined]  # the pipeline's flush_s: 0
        window.close("shardId-0", 1, "f/a/0")
        runner = _runner(window, Rows("rows"))
        assert runner.flush(flush_event("f"))["emitted"] == 1
        assert [e.tick for e in window.acked] == [1]


class TestFailures:
    def test_a_window_step_that_cannot_reach_its_table_fails_the_flush_after_logging(self, caplog):
        from processors.window_state import WindowStateError  # noqa: PLC0415

        class Broken(StandInWindow):
            def tick(self, now=None, *, stop=None, arn=None):
                raise WindowStateError("window table unreachable")

        runner = _runner(Broken(), Rows("rows"))
        runner.log.logger.propagate = True
        try:
            with caplog.at_level("ERROR", logger="shardline"), pytest.raises(WindowStateError):
                runner.flush(flush_event("f"), Context())
        finally:
            runner.log.logger.propagate = False
        assert {r.getMessage() for r in caplog.records} == {"batch failed"}
