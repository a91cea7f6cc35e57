"""``shardline report``: the EMF lines of the functions' logs, added up per bucket and in total.

The log lines are written by the real emitter: a :class:`BatchRunner` with metrics on and
memory sinks, invoked at known times (its injected clock is the documents' timestamp and
the start of processing), with the JSON log lines it writes in between, as ``shardline
dev`` leaves them in ``.shardline/logs/FUNCTION.log``.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy.cli.report import MISSING_MATPLOTLIB, draw_chart, report
from deploy.insights.report import (
    AUTO,
    MAX_POINTS,
    ReportError,
    auto_bucket,
    build_report,
    load_report,
    parse_document,
    parse_since,
    run_starts,
)
from processors.chain import Chain
from processors.registry import build_processor
from sinks.base import Ordering
from sinks.memory import MemorySink
from stream.batch import BatchRunner
from stream.logs import configure
from stream.testing import EventFactory

if TYPE_CHECKING:
    from stream.records import Record

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a multiple of every bucket used here


def throttled(record: Record, attempt: int) -> str | None:
    """The ``out`` sink fails a record whose document says ``throttle``, retryably."""
    return "retryable" if record.json.get("throttle") else None


class Clock:
    """The runner's clock, set before each invocation."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def make_runner(function: str, clock: Clock) -> BatchRunner:
    """match filter (keep) -> every record to ``out``; poison records to ``dlq``."""
    sinks = {"out": MemorySink("out", fail=throttled), "dlq": MemorySink("dlq")}
    steps = [build_processor(0, {"filter": {"match": {"keep": [True]}}}, list(sinks))]
    return BatchRunner(
        Chain(steps), sinks, default_route=["out"], on_failure="dlq",
        ordering=Ordering("none"), function=function, pipeline="shop", now=clock,
        metrics=True,
    )  # fmt: skip


def invoke(runner: BatchRunner, clock: Clock, at: float, arrival: float, docs: list[Any]) -> str:
    """Invoke ``runner`` at ``T0 + at`` on ``docs`` (bytes: raw, not JSON) first arrived at
    ``T0 + arrival``; what it printed (EMF and JSON log lines)."""
    f = EventFactory(arrival=T0 + arrival)
    event = f.event(
        f.raw(d, f"k{i}") if isinstance(d, bytes) else f.record(d, f"k{i}")
        for i, d in enumerate(docs)
    )
    clock.now = T0 + at
    out = io.StringIO()
    configure("INFO")  # its handler writes to sys.stdout as it is at each line
    with contextlib.redirect_stdout(out):
        runner.invoke(event)
    return out.getvalue()


KEEP = {"keep": True}
DROP = {"keep": False}
THROTTLE = {"keep": True, "throttle": True}


def scenario() -> dict[str, str]:
    """Two functions' logs, by function.

    f at 10.2 s: 2 written, 1 filtered, 1 poison (dead-lettered), first arrival 10.0 s;
    f at 10.7 s: 2 written, 1 throttled (retryable), first arrival 10.1 s;
    f at 12.5 s: 2 written, first arrival 12.0 s;
    g at 11.0 s: 2 written, first arrival 9.0 s.
    """
    fc, gc = Clock(), Clock()
    f, g = make_runner("f", fc), make_runner("g", gc)
    return {
        "f": invoke(f, fc, 10.2, 10.0, [KEEP, KEEP, DROP, b"not json"])
        + invoke(f, fc, 10.7, 10.1, [KEEP, THROTTLE, KEEP])
        + invoke(f, fc, 12.5, 12.0, [KEEP, KEEP]),
        "g": invoke(g, gc, 11.0, 9.0, [KEEP, KEEP]),
    }


@pytest.fixture(scope="module")
def logs() -> dict[str, str]:
    return scenario()


def lines(logs: dict[str, str]) -> list[str]:
    return [line for text in logs.values() for line in text.splitlines()]


def emf_docs(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if '"_aws"' in line]


def write_logs(folder: Path, logs: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in logs.items():
        (folder / f"{name}.log").write_text(text, encoding="utf-8")
    return folder


class TestParse:
    def test_the_emitted_lines_are_read_as_documents_and_log_lines_are_not(self, logs):
        """Every EMF line is a document; the JSON log lines between them are not."""
        text = logs["f"]
        parsed = [parse_document(line) for line in text.splitlines()]
        assert sum(d is not None for d in parsed) == len(emf_docs(text)) > 0
        assert any(
            d is None and line.startswith("{")
            for d, line in zip(parsed, text.splitlines(), strict=True)
        )

    def test_document_zero_holds_the_totals_and_the_others_the_parts(self, logs):
        """The first document of an invocation has RecordsIn; the sink's Written is a part."""
        first = parse_document(logs["g"].splitlines()[0])
        assert first is not None
        assert (first.function, first.pipeline) == ("g", "shop")
        assert first.timestamp_ms == int((T0 + 11.0) * 1000)
        assert first.totals["RecordsIn"] == 2
        assert ("Sink", "out", "Written", 2.0) in first.parts

    def test_other_namespaces_and_broken_lines_are_not_documents(self):
        """A plugin's own EMF metrics, half a line, bad JSON and bytes are all skipped."""
        foreign = {
            "_aws": {"Timestamp": 1, "CloudWatchMetrics": [
                {"Namespace": "other", "Dimensions": [["Pipeline", "Function"]],
                 "Metrics": [{"Name": "RecordsIn"}]}]},
            "Pipeline": "p", "Function": "f", "RecordsIn": 3,
        }  # fmt: skip
        assert parse_document(json.dumps(foreign)) is None
        assert parse_document('{"_aws":{"Timestamp":1,"CloudWatch') is None
        assert parse_document('{"_aws": []}') is None
        assert parse_document(b'\xff\xfe"_aws"\x00') is None
        assert parse_document("") is None


class TestAggregation:
    def test_the_series_per_one_second_bucket(self, logs):
        """f: 7 in, 4 written, 1 filtered, 1 dead letter, 1 retry in second 10; 2 in second 12."""
        result = build_report(lines(logs))
        assert result.bucket_seconds == 1.0
        assert result.start_ms == int((T0 + 10) * 1000)
        assert result.buckets == 3
        assert result.times() == [0.0, 1.0, 2.0]
        f = result.series["f"]
        assert f.invocations == [2, 0, 1]
        assert f.records_in == [7, 0, 2]
        assert f.written == [4, 0, 2]
        assert f.written_by_sink == {"out": [4, 0, 2]}
        assert f.filtered == [1, 0, 0]
        assert f.dead_lettered == [1, 0, 0]
        assert f.dead_lettered_by_reason == {"DecodeError": [1, 0, 0]}
        assert f.retryable == [1, 0, 0]
        assert f.lag_ms == pytest.approx([600.0, None, 500.0])  # max(200, 600) in second 10
        assert f.per_second(f.records_in) == [7.0, 0.0, 2.0]
        g = result.series["g"]
        assert g.invocations == [0, 1, 0]
        assert g.records_in == [0, 2, 0]
        assert g.written_by_sink == {"out": [0, 2, 0]}
        assert g.lag_ms == pytest.approx([None, 2000.0, None])

    def test_the_summary_per_function(self, logs):
        """Totals, the active period (1 s + 0.5 s + 1.8 s), rates and lag percentiles."""
        s = build_report(lines(logs)).functions["f"]
        assert (s.invocations, s.records_in, s.batch_size) == (3, 9, 9)
        assert (s.filtered, s.unrouted, s.written, s.dead_lettered, s.retryable) == (1, 0, 6, 1, 1)
        assert s.written_by_sink == {"out": 6}
        assert s.dead_lettered_by_reason == {"DecodeError": 1}
        assert s.pipelines == ("shop",)
        assert s.first_ms == int((T0 + 10.2) * 1000)
        assert s.last_ms == int((T0 + 12.5) * 1000)
        assert s.active_seconds == pytest.approx(3.3)
        assert s.records_in_per_s == pytest.approx(9 / 3.3)
        assert s.written_per_s == pytest.approx(6 / 3.3)
        # ages 200, 600, 500 ms: nearest rank p50 is the 2nd, p99 the 3rd
        assert s.lag_p50_ms == pytest.approx(500.0)
        assert s.lag_p99_ms == pytest.approx(600.0)
        assert s.lag_max_ms == pytest.approx(600.0)

    def test_the_per_record_time_is_step_and_sink_time_over_records_in(self, logs):
        """Every StepTime and SinkTime of the function, summed, per record in."""
        docs = emf_docs(logs["f"])
        step = sum(d.get("StepTime", 0.0) for d in docs)
        sink = sum(d.get("SinkTime", 0.0) for d in docs)
        s = build_report(lines(logs)).functions["f"]
        assert s.step_ms == pytest.approx(step)
        assert s.sink_ms == pytest.approx(sink)
        assert s.per_record_ms == pytest.approx((step + sink) / 9)
        assert s.per_record_basis == "StepTime + SinkTime"

    def test_the_hint_is_the_slowest_functions_time(self, logs):
        """shardline cost takes one figure for every function: the largest is used."""
        result = build_report(lines(logs))
        slowest = max(result.functions.values(), key=lambda s: s.per_record_ms or 0.0)
        assert result.per_record_hint() is slowest
        assert result.to_dict()["per_record_ms"] == slowest.per_record_ms

    def test_without_timings_there_is_no_per_record_time(self):
        """Documents with only the totals give no per-record time, and say so."""
        line = json.dumps({
            "_aws": {"Timestamp": 1_767_225_600_000, "CloudWatchMetrics": [
                {"Namespace": "shardline", "Dimensions": [["Pipeline", "Function"]],
                 "Metrics": [{"Name": "RecordsIn", "Unit": "Count"}]}]},
            "Pipeline": "p", "Function": "f", "RecordsIn": 5,
        })  # fmt: skip
        result = build_report([line])
        s = result.functions["f"]
        assert (s.records_in, s.per_record_ms, s.per_record_basis) == (5, None, "")
        assert result.per_record_hint() is None

    def test_wider_buckets_start_on_a_multiple_of_their_width(self, logs):
        """2 s buckets from second 10: [10, 12) and [12, 14)."""
        result = build_report(lines(logs), 2.0)
        assert (result.start_ms, result.buckets) == (int((T0 + 10) * 1000), 2)
        assert result.series["f"].records_in == [7, 2]
        assert result.series["f"].per_second([7, 2]) == [3.5, 1.0]
        assert result.series["g"].records_in == [2, 0]

    def test_a_long_pause_is_not_part_of_the_active_period(self):
        """Invocations 200 s apart (two runs appended to one log) count one second each."""
        clock = Clock()
        runner = make_runner("f", clock)
        text = invoke(runner, clock, 10.0, 9.5, [KEEP]) + invoke(
            runner, clock, 210.0, 209.5, [KEEP]
        )
        s = build_report(text.splitlines()).functions["f"]
        assert s.active_seconds == pytest.approx(2.0)
        assert s.records_in_per_s == pytest.approx(1.0)

    def test_auto_buckets_keep_a_chart_under_the_point_limit(self):
        """An hour of invocations gives 15 s buckets, at most MAX_POINTS of them."""
        clock = Clock()
        runner = make_runner("f", clock)
        text = "".join(invoke(runner, clock, at, at - 1, [KEEP]) for at in (0.5, 1800.0, 3600.0))
        result = build_report(text.splitlines(), AUTO)
        assert result.bucket_seconds == 15.0
        assert result.buckets <= MAX_POINTS
        assert sum(result.series["f"].records_in) == 3
        assert auto_bucket(0) == 1.0

    def test_no_metrics_is_an_error_that_names_the_fix(self):
        with pytest.raises(ReportError, match="SHARDLINE_METRICS=1"):
            build_report(['{"level":"INFO","message":"batch processed"}', "garbage"])

    def test_too_many_buckets_is_an_error_that_names_the_fix(self):
        """A week of logs at 1 ms buckets would be 604,800,000 points: refused."""
        clock = Clock()
        runner = make_runner("f", clock)
        text = invoke(runner, clock, 1.0, 0.5, [KEEP]) + invoke(runner, clock, 7 * 86400, 0, [KEEP])
        with pytest.raises(ReportError, match="--bucket auto"):
            build_report(text.splitlines(), 0.001)

    @settings(max_examples=30)
    @given(
        invocations=st.lists(
            st.tuples(
                st.floats(0, 120, allow_nan=False),
                st.lists(st.sampled_from(["keep", "drop", "poison", "throttle"]), max_size=6),
            ),
            min_size=1,
            max_size=6,
        ),
        bucket=st.sampled_from([0.25, 1.0, 3.0, 7.5, AUTO]),
    )
    def test_every_bucket_width_keeps_the_totals(self, invocations, bucket):
        """However the time is cut, the buckets add up to the totals and to the documents."""
        clock = Clock()
        runner = make_runner("f", clock)
        kinds = {"keep": KEEP, "drop": DROP, "poison": b"\xff", "throttle": THROTTLE}
        text = "".join(
            invoke(runner, clock, at, max(0.0, at - 1), [kinds[k] for k in batch])
            for at, batch in invocations
        )
        result = build_report(text.splitlines(), bucket)
        s, f = result.functions["f"], result.series["f"]
        docs = emf_docs(text)
        assert sum(f.invocations) == s.invocations == len(invocations)
        assert sum(f.records_in) == s.records_in == sum(len(b) for _, b in invocations)
        assert sum(f.records_in) == sum(d.get("RecordsIn", 0) for d in docs)
        assert sum(f.written) == s.written == sum(d.get("RecordsWritten", 0) for d in docs)
        assert sum(f.filtered) == s.filtered == sum(b.count("drop") for _, b in invocations)
        assert (
            sum(f.dead_lettered)
            == s.dead_lettered
            == sum(b.count("poison") for _, b in invocations)
        )
        assert sum(f.retryable) == s.retryable == sum(b.count("throttle") for _, b in invocations)
        lags = [v for v in f.lag_ms if v is not None]
        assert max(lags, default=None) == s.lag_max_ms
        assert len(f.records_in) == result.buckets


class TestFiles:
    def test_garbage_and_log_lines_are_skipped_and_counted(self, tmp_path, logs):
        """Mixed in with bad bytes, half lines and blank lines, the figures do not change."""
        clean = build_report(lines(logs))
        garbage = [
            "not json at all", "{broken", "", '{"_aws":{"Timestamp":1,"CloudWatchMet',
            "\x00\x01binary", '{"level":"INFO","message":"hello"}', "[1, 2, 3]",
        ]  # fmt: skip
        folder = tmp_path / "logs"
        write_logs(folder, logs)
        with (folder / "f.log").open("a", encoding="utf-8") as fh:
            fh.write("\n".join(garbage) + "\n")
        (folder / "f.log").write_bytes(
            b"\xff\xfe\x00 raw bytes\n" + (folder / "f.log").read_bytes()
        )
        (folder / "notes.txt").write_text("not a .log file: not read\n")
        result = load_report([folder])
        assert result.files == (str(folder / "f.log"), str(folder / "g.log"))
        assert result.functions == clean.functions
        assert result.series == clean.series
        assert result.documents == clean.documents
        assert result.skipped == clean.skipped + len(garbage) + 1
        assert result.lines == clean.lines + len(garbage) + 1
        log_lines = sum('"_aws"' not in line for line in lines(logs))
        assert clean.skipped == log_lines > 0  # the JSON log lines of the poison and retry

    def test_files_may_be_given_one_by_one(self, tmp_path, logs):
        write_logs(tmp_path, logs)
        result = load_report([tmp_path / "g.log"])
        assert list(result.functions) == ["g"]

    def test_a_folder_without_logs_is_an_error_that_names_the_fix(self, tmp_path):
        with pytest.raises(ReportError, match="shardline dev"):
            load_report([tmp_path])


class TestCommand:
    def test_the_summary_names_each_function_with_its_figures(self, tmp_path, logs, monkeypatch):
        """Run with no argument, it reads .shardline/logs and prints the table and the hint."""
        write_logs(tmp_path / ".shardline" / "logs", logs)
        monkeypatch.chdir(tmp_path)
        result = CliRunner().invoke(report, [])
        assert result.exit_code == 0, result.output
        out = result.output
        row = next(line for line in out.splitlines() if line.startswith("│ f "))
        cells = [c.strip() for c in row.strip("│").split("│")]
        assert cells[:9] == ["f", "3", "9", "3", "6", "2", "1", "1", "1"]
        assert cells[9:11] == ["500", "600"]
        assert "f: written by sink: out 6; dead-lettered by reason: DecodeError 1" in out
        expected = load_report([tmp_path / ".shardline" / "logs"])
        skipped = f"{expected.skipped:,} other lines skipped"
        assert skipped in out
        hint = expected.per_record_hint()
        assert hint is not None
        assert hint.per_record_ms is not None
        assert f"--per-record-ms {hint.per_record_ms:.3g}" in out

    def test_json_is_the_report_as_data(self, tmp_path, logs):
        folder = write_logs(tmp_path / "logs", logs)
        result = CliRunner().invoke(report, [str(folder), "--json", "--bucket", "2"])
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert data["bucket_seconds"] == 2.0
        assert data["functions"]["f"]["records_in"] == 9
        assert data["functions"]["f"]["series"]["records_in"] == [7, 2]
        assert data["functions"]["f"]["series"]["lag_ms"] == pytest.approx([600.0, 500.0])
        assert data["functions"]["g"]["written_by_sink"] == {"out": 2}
        assert data["functions"]["f"]["records_in_per_s"] == pytest.approx(9 / 3.3)
        expected = load_report([folder], 2.0, last_run=True).to_dict()
        assert data == json.loads(json.dumps(expected))

    def test_no_logs_exits_2_with_the_fix(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        result = CliRunner().invoke(report, [])
        assert result.exit_code == 2
        assert "shardline dev" in result.stderr

    def test_a_bad_bucket_is_a_usage_error(self, tmp_path, logs):
        folder = write_logs(tmp_path / "logs", logs)
        for bad in ("0", "-1", "nan", "inf", "soon"):
            result = CliRunner().invoke(report, [str(folder), "--bucket", bad])
            assert result.exit_code == 2, bad
            assert "--bucket" in result.stderr

    def test_without_matplotlib_the_chart_is_one_line_naming_the_fix(
        self, tmp_path, logs, monkeypatch
    ):
        """Whether or not matplotlib is installed here, its absence is one clear line."""
        for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
            monkeypatch.setitem(sys.modules, name, None)
        folder = write_logs(tmp_path / "logs", logs)
        png = tmp_path / "r.png"
        result = CliRunner().invoke(report, [str(folder), "-o", str(png)])
        assert result.exit_code == 1
        assert result.stderr.strip() == MISSING_MATPLOTLIB
        assert "pip install 'shardline[cli]'" in result.stderr
        assert not png.exists()

    def test_the_chart_is_a_png(self, tmp_path, logs):
        pytest.importorskip("matplotlib")
        folder = write_logs(tmp_path / "logs", logs)
        png = tmp_path / "r.png"
        result = CliRunner().invoke(report, [str(folder), "-o", str(png), "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["functions"]["f"]["records_in"] == 9
        assert f"chart: {png}" in result.stderr
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(data) > 20_000

    def test_matplotlib_is_not_imported_by_the_report_modules(self):
        """Importing the command and the model leaves matplotlib alone (shardline --help)."""
        import subprocess  # noqa: PLC0415

        code = (
            "import sys, deploy.insights.report, deploy.cli.report; "
            "print('matplotlib' in sys.modules)"
        )
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=root,
            timeout=300,
        )
        assert out.stdout.strip() == "False"


def two_runs() -> str:
    """One log appended to by two runs: f at 10-11 s and 12 s, then 300 s later at 310 s."""
    clock = Clock()
    runner = make_runner("f", clock)
    return (
        invoke(runner, clock, 10.0, 9.5, [KEEP])
        + invoke(runner, clock, 11.0, 10.5, [KEEP, KEEP])
        + invoke(runner, clock, 12.0, 11.5, [KEEP])
        + invoke(runner, clock, 310.0, 309.5, [KEEP, KEEP, KEEP])
    )


class TestRuns:
    def test_a_run_starts_after_a_pause_longer_than_the_gap(self):
        """Invocations of any function count together: only a pause of all of them cuts."""
        assert run_starts([1_000, 50_000, 100_000]) == [1_000]
        assert run_starts([1_000, 62_000]) == [1_000, 62_000]
        assert run_starts([]) == []

    def test_the_last_run_only_when_asked(self):
        """last_run: the 3 records of the run at 310 s; by default every run, 7 records."""
        text = two_runs().splitlines()
        every = build_report(text)
        assert (every.runs, every.since_ms, every.earlier) == (2, None, 0)
        assert every.functions["f"].records_in == 7
        last = build_report(text, last_run=True)
        assert last.runs == 2
        assert last.since_ms == int((T0 + 310) * 1000)
        assert last.start_ms == last.since_ms
        assert last.functions["f"].records_in == 3
        assert last.functions["f"].invocations == 1
        assert last.earlier == every.documents - last.documents > 0
        assert last.skipped == every.skipped

    def test_since_keeps_the_documents_from_then_on(self):
        text = two_runs().splitlines()
        since = build_report(text, since_ms=int((T0 + 11) * 1000), last_run=True)
        assert since.functions["f"].records_in == 6
        assert since.since_ms == int((T0 + 11) * 1000)

    def test_since_after_the_last_document_is_an_error_that_names_the_fix(self):
        with pytest.raises(ReportError, match="earlier --since"):
            build_report(two_runs().splitlines(), since_ms=int((T0 + 400) * 1000))

    def test_since_takes_an_iso_time_or_a_duration(self):
        now = T0 + 3600
        assert parse_since("15m", now) == round((now - 900) * 1000)
        assert parse_since("2h", now) == round((now - 7200) * 1000)
        assert parse_since("90s", now) == round((now - 90) * 1000)
        assert parse_since("2026-01-01T00:00:00", now) == int(T0 * 1000)
        assert parse_since("2026-01-01T00:00:00Z", now) == int(T0 * 1000)
        assert parse_since("2026-01-01T02:00:00+02:00", now) == int(T0 * 1000)
        for bad in ("soon", "-5m", "m", "15x", ""):
            with pytest.raises(ReportError, match="ISO time"):
                parse_since(bad, now)

    def test_the_command_reports_the_last_run_by_default(self, tmp_path):
        """Two runs appended to f.log: the table is the last one's, and the line says so."""
        folder = tmp_path / "logs"
        write_logs(folder, {"f": two_runs()})
        last = CliRunner().invoke(report, [str(folder), "--json"])
        assert last.exit_code == 0, last.output
        data = json.loads(last.stdout)
        assert data["functions"]["f"]["records_in"] == 3
        assert (data["runs"], data["since_ms"]) == (2, int((T0 + 310) * 1000))
        every = CliRunner().invoke(report, [str(folder), "--json", "--all"])
        assert json.loads(every.stdout)["functions"]["f"]["records_in"] == 7
        text = CliRunner().invoke(report, [str(folder)])
        assert "report: from 2026-01-01 00:05:10 UTC (2 runs in the logs; " in text.output
        assert "--all: every run" in text.output
        since = CliRunner().invoke(report, [str(folder), "--json", "--since", "2026-01-01T00:00"])
        assert json.loads(since.stdout)["functions"]["f"]["records_in"] == 7
        bad = CliRunner().invoke(report, [str(folder), "--since", "yesterday"])
        assert bad.exit_code == 2
        assert "--since" in bad.stderr
        assert "15m" in bad.stderr


class TestChart:
    def failures_axis(self, logs: dict[str, str]) -> Any:
        pytest.importorskip("matplotlib")
        fig = draw_chart(build_report(lines(logs)))
        axes = fig.axes[2]
        fig.canvas.draw()  # ticks and limits as drawn
        assert axes.get_title(loc="left").startswith("failures")
        return axes

    def test_no_failures_is_an_axis_from_0_to_1_that_says_so(self):
        """No dead letter and no retry: whole ticks 0..1 and a note, not 0.00..0.05."""
        clock = Clock()
        runner = make_runner("f", clock)
        axes = self.failures_axis({"f": invoke(runner, clock, 10.0, 9.5, [KEEP, DROP])})
        assert axes.get_ylim() == (0.0, 1.0)
        ticks = [t for t in axes.get_yticks() if 0 <= t <= 1]
        assert ticks == [0.0, 1.0]
        assert [t.get_text() for t in axes.texts] == ["no failures"]

    def test_failures_are_counted_on_whole_ticks(self, logs):
        """One dead letter and one retry in a bucket: whole ticks, and no note."""
        axes = self.failures_axis(logs)
        bottom, top = axes.get_ylim()
        assert bottom == 0.0
        assert top >= 1.0
        assert all(float(t).is_integer() for t in axes.get_yticks())
        assert len(axes.texts) == 0
