"""What the functions did over time, read back from their EMF lines: ``shardline report``.

``shardline dev`` writes each function's Lambda output to ``.shardline/logs/FUNCTION.log``,
as CloudWatch Logs would get it: the handler's JSON log lines and, once per invocation, its
EMF documents (:mod:`stream.metrics`). This module reads the documents back, ignores every
other line (counting it as skipped), and adds them up per function, over time buckets and
in total. It is pure parsing and arithmetic (no matplotlib, no rich) so that tests can hold
its figures exactly; :mod:`deploy.cli.report` prints and draws them.

Each document is read through its directives, not by guessing from its keys: a directive's
dimension set says whether its metrics are the function's totals (``[Pipeline, Function]``)
or one step's, sink's or reason's, and only directives of the ``shardline`` namespace
count, so a plugin's own EMF metrics in the same log are left alone. Document 0 of an
invocation (the one with ``RecordsIn``) counts as one invocation; every document counts in
the bucket of its ``_aws.Timestamp``, which is the same for all of an invocation's.

Figures, per function:

* per bucket: invocations, records in, written (in all and per sink), filtered,
  dead-lettered (in all and per reason), retryable failures, and the lag: the largest
  ``OldestRecordAge`` (ms from the oldest record's arrival in the stream to processing);
* in total: the same counts; the rates of records in and written over the *active period*;
  p50 and p99 of ``OldestRecordAge`` over the invocations; and the handler's measured time
  per record in, from ``StepTime`` (decoding and steps) and ``SinkTime`` (sink writes, dead
  letters included). That time excludes the handler's fixed per-invocation work and
  Lambda's own, so it is a lower bound of what Lambda bills per record: the figure
  ``shardline cost --per-record-ms`` asks for.

The active period is the time the function was seen working: one second for its first
invocation (Kinesis's event source mapping polls a shard once a second, so a batch holds
about a second of the stream), plus the time from each invocation to the next, except that
a pause longer than :data:`IDLE_GAP_S` (a log appended to by several runs) counts as one
second again. Percentiles are nearest-rank, as in ``shardline demo``.

Runs. ``shardline dev`` appends to the logs, so they hold every past run. Nothing in them
marks a run's start (the runtimes print no INIT line, and a run that reuses the local
stack continues its sequence numbers), but a run's functions are invoked about once a
second per shard while records flow. So a run starts at the first document and at every
document more than :data:`RUN_GAP_S` after the previous one of *any* function:
:func:`run_starts`. A run idle for longer than that (no records produced) is cut there,
and a run started within it of the previous run's last invocation joins that run;
``since_ms`` (``--since``) or ``last_run=False`` (``--all``) says otherwise.

>>> line = (
...     '{"_aws":{"Timestamp":1767225600000,"CloudWatchMetrics":[{"Namespace":"shardline",'
...     '"Dimensions":[["Pipeline","Function"]],"Metrics":[{"Name":"RecordsIn","Unit":"Count"},'
...     '{"Name":"RecordsWritten","Unit":"Count"}]}]},"Pipeline":"p","Function":"f",'
...     '"RecordsIn":10,"RecordsWritten":9}'
... )
>>> report = build_report([line, "not a metric"])
>>> s = report.functions["f"]
>>> (s.invocations, s.records_in, s.written, report.skipped)
(1, 10, 9, 1)
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from deploy.errors import DeployError
from stream.metrics import NAMESPACE

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = [
    "AUTO",
    "DEFAULT_BUCKET_S",
    "IDLE_GAP_S",
    "MAX_BUCKETS",
    "MAX_POINTS",
    "POLL_S",
    "RUN_GAP_S",
    "Document",
    "FunctionSeries",
    "FunctionSummary",
    "Report",
    "ReportError",
    "auto_bucket",
    "build_report",
    "load_report",
    "log_files",
    "parse_document",
    "parse_since",
    "run_starts",
]

#: ``bucket="auto"``: the smallest round bucket that gives a chart at most MAX_POINTS points.
AUTO = "auto"
DEFAULT_BUCKET_S = 1.0
#: The most points per series ``auto`` allows: a chart a few inches wide shows no more.
MAX_POINTS = 300
#: The most buckets a report holds, whatever was asked (a week at 1 s is 604,800).
MAX_BUCKETS = 100_000
#: A pause between invocations longer than this is not part of the active period.
IDLE_GAP_S = 60.0
#: A pause longer than this between two invocations (of any function) starts a new run.
RUN_GAP_S = IDLE_GAP_S
#: The time one invocation stands for: the event source mapping polls a shard once a second.
POLL_S = 1.0
_NICE_BUCKETS_S = (
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
)  # fmt: skip
_BASE_DIMENSIONS = frozenset({"Pipeline", "Function"})
# The function-level metrics that are counts, and the field each adds to.
_TOTALS = {
    "RecordsIn": "records_in",
    "BatchSize": "batch_size",
    "RecordsFiltered": "filtered",
    "RecordsUnrouted": "unrouted",
    "RecordsWritten": "written",
    "RecordsDeadLettered": "dead_lettered",
    "RetryableFailures": "retryable",
}


class ReportError(DeployError, ValueError):
    """Nothing to report on: no log files, or no shardline metrics in them. The message
    names the fix."""


@dataclass(frozen=True, slots=True)
class Document:
    """One shardline EMF document: a function's metrics at one instant.

    Attributes:
        function: the ``Function`` dimension.
        pipeline: the ``Pipeline`` dimension.
        timestamp_ms: ``_aws.Timestamp``, epoch milliseconds.
        totals: the function-level metrics (dimensions ``[Pipeline, Function]``) by name;
            only document 0 of an invocation has them.
        parts: ``(dimension key, dimension value, metric, value)`` for every metric with
            one more dimension (``Step``, ``Sink``, ``Reason``).
    """

    function: str
    pipeline: str
    timestamp_ms: int
    totals: dict[str, float]
    parts: tuple[tuple[str, str, str, float], ...] = ()


def parse_document(line: str | bytes) -> Document | None:
    """The shardline EMF document on ``line``, or None for any other line.

    Never raises: a log holds JSON log lines, a runtime's own output and, when a process
    was killed mid-write, half lines; all of them are simply not documents.

    >>> parse_document('{"level":"INFO","message":"batch processed"}') is None
    True
    """
    # The usual line is not a metric: skip it without parsing it.
    if isinstance(line, bytes):
        if b'"_aws"' not in line:
            return None
    elif '"_aws"' not in line:
        return None
    try:
        doc = orjson.loads(line)
        meta = doc["_aws"]
        function, pipeline = doc["Function"], doc["Pipeline"]
        timestamp = meta["Timestamp"]
        directives = meta["CloudWatchMetrics"]
        if not (isinstance(function, str) and isinstance(pipeline, str)):
            return None
        if not isinstance(timestamp, int) or isinstance(timestamp, bool):
            return None
        totals: dict[str, float] = {}
        parts: list[tuple[str, str, str, float]] = []
        for directive in directives:
            if directive.get("Namespace") != NAMESPACE:
                continue
            for dimension_set in directive["Dimensions"]:
                extra = [key for key in dimension_set if key not in _BASE_DIMENSIONS]
                if len(extra) > 1:
                    continue
                for metric in directive["Metrics"]:
                    name = metric["Name"]
                    value = doc[name]
                    if not isinstance(value, int | float) or isinstance(value, bool):
                        continue
                    if extra:
                        parts.append((extra[0], str(doc[extra[0]]), name, float(value)))
                    else:
                        totals[name] = float(value)
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return None
    if not totals and not parts:
        return None
    return Document(function, pipeline, timestamp, totals, tuple(parts))


@dataclass(frozen=True, slots=True)
class FunctionSeries:
    """A function's figures per time bucket; every list has one entry per bucket.

    Counts are per bucket; :meth:`per_second` turns one into a rate.

    Attributes:
        invocations: invocations (documents 0) in the bucket.
        records_in: ``RecordsIn``.
        written: ``RecordsWritten``, every sink.
        written_by_sink: ``Written`` by sink.
        filtered: ``RecordsFiltered``.
        dead_lettered: ``RecordsDeadLettered``.
        dead_lettered_by_reason: ``DeadLettered`` by reason (the error class).
        retryable: ``RetryableFailures``.
        lag_ms: the largest ``OldestRecordAge`` in the bucket; None without one.
    """

    invocations: list[int]
    records_in: list[int]
    written: list[int]
    written_by_sink: dict[str, list[int]]
    filtered: list[int]
    dead_lettered: list[int]
    dead_lettered_by_reason: dict[str, list[int]]
    retryable: list[int]
    lag_ms: list[float | None]
    bucket_seconds: float

    def per_second(self, counts: Sequence[int]) -> list[float]:
        """Counts per bucket as rates per second.

        >>> FunctionSeries([], [], [], {}, [], [], {}, [], [], 2.0).per_second([4, 0, 1])
        [2.0, 0.0, 0.5]
        """
        return [n / self.bucket_seconds for n in counts]


@dataclass(frozen=True, slots=True)
class FunctionSummary:
    """A function's totals over the whole log (see the module docstring for each figure).

    Attributes:
        function: the function's name.
        pipelines: the ``Pipeline`` values seen (one, unless logs of several were given).
        invocations: invocations seen.
        records_in: user records in (after KPL de-aggregation).
        batch_size: Kinesis records in (``BatchSize``, summed).
        filtered: records the steps dropped.
        unrouted: records no route took.
        written: sink writes that succeeded (one per record and sink).
        written_by_sink: the same, by sink.
        dead_lettered: records written to the dead-letter sink.
        dead_lettered_by_reason: the same, by reason.
        retryable: records reported for retry.
        first_ms: the first invocation, epoch ms.
        last_ms: the last invocation, epoch ms.
        active_seconds: the active period.
        lag_p50_ms: median ``OldestRecordAge`` over the invocations (None without any).
        lag_p99_ms: its 99th percentile.
        lag_max_ms: its largest value.
        step_ms: ``StepTime`` summed: decoding the events and running the steps.
        sink_ms: ``SinkTime`` summed: the sinks' writes, dead letters included.
        per_record_ms: measured handler time per record in, or None if not derivable.
        per_record_basis: what ``per_record_ms`` is made of (``"StepTime + SinkTime"``,
            or one of them when the other was never reported); empty when None.
    """

    function: str
    pipelines: tuple[str, ...]
    invocations: int
    records_in: int
    batch_size: int
    filtered: int
    unrouted: int
    written: int
    written_by_sink: dict[str, int]
    dead_lettered: int
    dead_lettered_by_reason: dict[str, int]
    retryable: int
    first_ms: int
    last_ms: int
    active_seconds: float
    lag_p50_ms: float | None
    lag_p99_ms: float | None
    lag_max_ms: float | None
    step_ms: float
    sink_ms: float
    per_record_ms: float | None
    per_record_basis: str

    @property
    def records_in_per_s(self) -> float:
        """Records in per second over the active period."""
        return self.records_in / self.active_seconds if self.active_seconds else 0.0

    @property
    def written_per_s(self) -> float:
        """Sink writes per second over the active period."""
        return self.written / self.active_seconds if self.active_seconds else 0.0


@dataclass(frozen=True, slots=True)
class Report:
    """Every function's summary and series, over buckets that start at ``start_ms``.

    Attributes:
        bucket_seconds: the width of a bucket.
        start_ms: the first bucket's start, epoch ms (a multiple of the bucket width).
        buckets: how many buckets each series has.
        functions: the summaries, by function name, sorted.
        series: the series, by function name.
        files: the files read, in order.
        lines: lines read.
        documents: shardline EMF documents among them.
        skipped: the other lines (JSON logs, other output, broken lines).
        runs: the runs found in the logs (see :func:`run_starts`).
        since_ms: where the report starts, epoch ms: the last run's first invocation,
            or the ``since_ms`` asked for; None when every run is reported.
        earlier: documents before ``since_ms``, left out.
    """

    bucket_seconds: float
    start_ms: int
    buckets: int
    functions: dict[str, FunctionSummary]
    series: dict[str, FunctionSeries]
    files: tuple[str, ...] = ()
    lines: int = 0
    documents: int = 0
    skipped: int = 0
    runs: int = 1
    since_ms: int | None = None
    earlier: int = 0

    def times(self) -> list[float]:
        """Each bucket's start, in seconds from the first (the charts' x axis).

        >>> Report(2.0, 0, 3, {}, {}).times()
        [0.0, 2.0, 4.0]
        """
        return [i * self.bucket_seconds for i in range(self.buckets)]

    def per_record_hint(self) -> FunctionSummary | None:
        """The function with the largest measured time per record, or None if none has one.

        ``shardline cost --per-record-ms`` takes one figure for every function; the slowest
        function's is the pessimistic one.
        """
        measured = [s for s in self.functions.values() if s.per_record_ms is not None]
        return max(measured, key=lambda s: s.per_record_ms or 0.0, default=None)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data: the summaries (with their rates) and the series."""
        functions = {}
        for name, summary in self.functions.items():
            data = asdict(summary)
            data["pipelines"] = list(summary.pipelines)
            data["records_in_per_s"] = summary.records_in_per_s
            data["written_per_s"] = summary.written_per_s
            series = asdict(self.series[name])
            del series["bucket_seconds"]
            data["series"] = series
            functions[name] = data
        hint = self.per_record_hint()
        return {
            "files": list(self.files),
            "lines": self.lines,
            "documents": self.documents,
            "skipped": self.skipped,
            "runs": self.runs,
            "since_ms": self.since_ms,
            "earlier": self.earlier,
            "bucket_seconds": self.bucket_seconds,
            "start_ms": self.start_ms,
            "buckets": self.buckets,
            "per_record_ms": None if hint is None else hint.per_record_ms,
            "functions": functions,
        }


@dataclass(slots=True)
class _Sums:
    """One function's running totals while the documents are read."""

    pipelines: set[str] = field(default_factory=set)
    invocations: list[int] = field(default_factory=list)  # their timestamps, ms
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_TOTALS.values(), 0))
    by_sink: dict[str, int] = field(default_factory=dict)
    by_reason: dict[str, int] = field(default_factory=dict)
    lags: list[float] = field(default_factory=list)
    step_ms: float | None = None
    sink_ms: float | None = None


def log_files(paths: Sequence[str | Path]) -> list[Path]:
    """The files to read: each file given, and the ``*.log`` files of each folder given.

    Raises:
        ReportError: a path does not exist, or the paths hold no log file.
    """
    files: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            files += sorted(path.glob("*.log"))
        elif path.exists():
            files.append(path)
        else:
            msg = f"{path}: no such file or folder (`shardline dev FILE` writes {path.name})"
            raise ReportError(msg)
    if not files:
        where = ", ".join(str(p) for p in paths)
        msg = f"no .log files in {where}: run `shardline dev FILE` first, or give the log files"
        raise ReportError(msg)
    return files


def auto_bucket(span_ms: int, max_points: int = MAX_POINTS) -> float:
    """The smallest round bucket, in seconds, that covers ``span_ms`` in ``max_points``.

    >>> auto_bucket(120_000), auto_bucket(3_600_000), auto_bucket(10**10)
    (1.0, 15.0, 43200.0)
    """
    for seconds in _NICE_BUCKETS_S:
        if span_ms // (seconds * 1000) + 2 <= max_points:  # +2: alignment and the last
            return float(seconds)
    return float(math.ceil(span_ms / 1000 / (max_points - 2)))


def load_report(
    paths: Sequence[str | Path],
    bucket: float | str = DEFAULT_BUCKET_S,
    *,
    since_ms: int | None = None,
    last_run: bool = False,
) -> Report:
    """Read the log files (or the ``*.log`` of folders) and build their report.

    ``since_ms`` and ``last_run`` are :func:`build_report`'s.

    Raises:
        ReportError: no log files, no shardline metrics in them (since ``since_ms``), or
            too many buckets.
    """
    files = log_files(paths)
    return build_report(
        _lines(files), bucket, files=tuple(str(f) for f in files), since_ms=since_ms,
        last_run=last_run,
    )  # fmt: skip


def run_starts(stamps: Iterable[int], gap_ms: int = round(RUN_GAP_S * 1000)) -> list[int]:
    """The start of each run among invocation times ``stamps`` (epoch ms, any order).

    A run starts at the first invocation and at each one more than ``gap_ms`` after the
    previous one: the functions of a running pipeline are invoked while records flow.
    Invocations of every function count together, so one function idle while another
    works does not cut a run.

    >>> run_starts([5_000, 1_000, 2_000, 200_000, 201_000])
    [1000, 200000]
    >>> run_starts([])
    []
    """
    ordered = sorted(stamps)
    return [after for i, after in enumerate(ordered) if i == 0 or after - ordered[i - 1] > gap_ms]


_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float) -> int:
    """``--since``: an ISO time (UTC unless it says otherwise) or a duration before ``now``
    (epoch seconds), such as ``90s``, ``15m``, ``2h`` or ``1d``; epoch ms.

    >>> parse_since("15m", now=1_000_000.0)
    999100000
    >>> parse_since("2026-01-01T00:00:00", now=0.0)
    1767225600000
    >>> parse_since("2026-01-01T01:00:00+01:00", now=0.0)
    1767225600000

    Raises:
        ReportError: neither form; the message shows both.
    """
    value = text.strip()
    unit = _UNITS_S.get(value[-1:].lower())
    if unit is not None:
        try:
            amount = float(value[:-1])
        except ValueError:
            amount = -1.0
        if 0 <= amount < math.inf:
            return round((now - amount * unit) * 1000)
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        msg = (
            f"{text!r}: expected an ISO time (2026-01-01T09:30, UTC unless it has an offset) "
            "or a duration before now (90s, 15m, 2h, 1d)"
        )
        raise ReportError(msg) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return round(when.timestamp() * 1000)


def _lines(files: Sequence[Path]) -> Iterable[bytes]:
    for path in files:
        with path.open("rb") as fh:
            yield from fh


def build_report(
    lines: Iterable[str | bytes],
    bucket: float | str = DEFAULT_BUCKET_S,
    *,
    files: tuple[str, ...] = (),
    since_ms: int | None = None,
    last_run: bool = False,
) -> Report:
    """Add up the shardline EMF documents among ``lines`` per function and per bucket.

    Args:
        lines: log lines, in any order; only shardline EMF documents count.
        bucket: the bucket width in seconds (at least a millisecond), or ``"auto"``.
        files: the names of the files the lines came from, for the report.
        since_ms: only documents from this time on (epoch ms) count.
        last_run: without ``since_ms``, only the last run counts (:func:`run_starts`);
            otherwise every run in the lines does.

    Raises:
        ReportError: no shardline metrics among the lines (or since ``since_ms``), or
            more than :data:`MAX_BUCKETS` buckets of the width asked for.
    """
    documents: list[Document] = []
    read = 0
    for line in lines:
        read += 1
        doc = parse_document(line)
        if doc is not None:
            documents.append(doc)
    if not documents:
        msg = (
            f"no shardline metrics in {read} lines: were metrics on? (the pipeline's "
            "`metrics: true`, or SHARDLINE_METRICS=1; `shardline dev` turns them on)"
        )
        raise ReportError(msg)
    starts = run_starts(d.timestamp_ms for d in documents if "RecordsIn" in d.totals)
    if since_ms is None and last_run and starts:
        since_ms = starts[-1]
    found = len(documents)
    if since_ms is not None:
        documents = [d for d in documents if d.timestamp_ms >= since_ms]
    if not documents:
        end = dt.datetime.fromtimestamp(max(starts, default=0) / 1000, tz=dt.UTC)
        asked = dt.datetime.fromtimestamp((since_ms or 0) / 1000, tz=dt.UTC)
        msg = (
            f"no shardline metrics since {asked:%Y-%m-%d %H:%M:%S} UTC: the last run in "
            f"these logs started at {end:%Y-%m-%d %H:%M:%S} UTC; give an earlier --since"
        )
        raise ReportError(msg)
    first = min(d.timestamp_ms for d in documents)
    last = max(d.timestamp_ms for d in documents)
    seconds = auto_bucket(last - first) if bucket == AUTO else float(bucket)
    width = round(seconds * 1000)
    if width < 1:
        msg = f"bucket of {bucket!r} seconds: give at least 0.001, or {AUTO!r}"
        raise ReportError(msg)
    start = first // width * width
    count = (last - start) // width + 1
    if count > MAX_BUCKETS:
        msg = (
            f"{count:,} buckets of {seconds:g} s: the logs span {(last - first) / 3.6e6:,.1f} "
            f"hours; use --bucket {AUTO} or a wider bucket (at most {MAX_BUCKETS:,} buckets)"
        )
        raise ReportError(msg)

    sums: dict[str, _Sums] = {}
    series: dict[str, FunctionSeries] = {}
    for doc in documents:
        name = doc.function
        if name not in sums:
            sums[name] = _Sums()
            series[name] = _empty_series(count, width / 1000)
        acc, ser = sums[name], series[name]
        acc.pipelines.add(doc.pipeline)
        i = (doc.timestamp_ms - start) // width
        _add_totals(doc, i, acc, ser)
        _add_parts(doc, i, acc, ser)

    functions = {name: _summary(name, sums[name]) for name in sorted(sums)}
    return Report(
        bucket_seconds=width / 1000,
        start_ms=start,
        buckets=count,
        functions=functions,
        series={name: _sorted(series[name]) for name in functions},
        files=files,
        lines=read,
        documents=len(documents),
        skipped=read - found,
        runs=max(1, len(starts)),
        since_ms=since_ms,
        earlier=found - len(documents),
    )


def _empty_series(count: int, bucket_seconds: float) -> FunctionSeries:
    zeros = [0] * count
    return FunctionSeries(
        invocations=zeros.copy(), records_in=zeros.copy(), written=zeros.copy(),
        written_by_sink=defaultdict(zeros.copy), filtered=zeros.copy(),
        dead_lettered=zeros.copy(), dead_lettered_by_reason=defaultdict(zeros.copy),
        retryable=zeros.copy(), lag_ms=[None] * count, bucket_seconds=bucket_seconds,
    )  # fmt: skip


def _sorted(series: FunctionSeries) -> FunctionSeries:
    """The series with its per-sink and per-reason columns in plain dicts, sorted by name."""
    return replace(
        series,
        written_by_sink=dict(sorted(series.written_by_sink.items())),
        dead_lettered_by_reason=dict(sorted(series.dead_lettered_by_reason.items())),
    )


def _add_totals(doc: Document, i: int, acc: _Sums, ser: FunctionSeries) -> None:
    totals = doc.totals
    if "RecordsIn" in totals:  # document 0: one invocation
        acc.invocations.append(doc.timestamp_ms)
        ser.invocations[i] += 1
    for metric, key in _TOTALS.items():
        if metric in totals:
            n = round(totals[metric])
            acc.counts[key] += n
            column: list[int] | None = getattr(ser, key, None)
            if column is not None:
                column[i] += n
    age = totals.get("OldestRecordAge")
    if age is not None:
        acc.lags.append(age)
        lag = ser.lag_ms[i]
        ser.lag_ms[i] = age if lag is None else max(lag, age)


def _add_parts(doc: Document, i: int, acc: _Sums, ser: FunctionSeries) -> None:
    for _key, value, metric, number in doc.parts:
        if metric == "Written":
            n = round(number)
            acc.by_sink[value] = acc.by_sink.get(value, 0) + n
            ser.written_by_sink[value][i] += n
        elif metric == "DeadLettered":
            n = round(number)
            acc.by_reason[value] = acc.by_reason.get(value, 0) + n
            ser.dead_lettered_by_reason[value][i] += n
        elif metric == "StepTime":
            acc.step_ms = (acc.step_ms or 0.0) + number
        elif metric == "SinkTime":
            acc.sink_ms = (acc.sink_ms or 0.0) + number


def _summary(name: str, acc: _Sums) -> FunctionSummary:
    counts = acc.counts
    stamps = sorted(acc.invocations)
    lags = sorted(acc.lags)
    basis = " + ".join(
        label for label, ms in (("StepTime", acc.step_ms), ("SinkTime", acc.sink_ms)) if ms
    )
    measured_ms = (acc.step_ms or 0.0) + (acc.sink_ms or 0.0)
    per_record = measured_ms / counts["records_in"] if basis and counts["records_in"] else None
    return FunctionSummary(
        function=name,
        pipelines=tuple(sorted(acc.pipelines)),
        invocations=len(stamps),
        written_by_sink=dict(sorted(acc.by_sink.items())),
        dead_lettered_by_reason=dict(sorted(acc.by_reason.items())),
        first_ms=stamps[0] if stamps else 0,
        last_ms=stamps[-1] if stamps else 0,
        active_seconds=_active_seconds(stamps),
        lag_p50_ms=_percentile(lags, 0.5),
        lag_p99_ms=_percentile(lags, 0.99),
        lag_max_ms=lags[-1] if lags else None,
        step_ms=acc.step_ms or 0.0,
        sink_ms=acc.sink_ms or 0.0,
        per_record_ms=per_record,
        per_record_basis=basis if per_record is not None else "",
        **counts,
    )


def _active_seconds(stamps: Sequence[int]) -> float:
    """The active period of invocations at ``stamps`` (sorted, ms), in seconds."""
    if not stamps:
        return 0.0
    total = POLL_S
    for before, after in itertools.pairwise(stamps):
        gap = (after - before) / 1000
        total += gap if gap <= IDLE_GAP_S else POLL_S
    return round(total, 3)


def _percentile(ordered: Sequence[float], q: float) -> float | None:
    """Nearest rank: the value below which a fraction ``q`` of ``ordered`` lies."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
