"""``shardline report``: what the functions of a ``shardline dev`` run did, from their logs.

Reads the EMF lines of ``.shardline/logs/*.log`` (or the folders and files given) with
:mod:`deploy.insights.report`, prints a summary per function (records in and written, their rates,
filtered, dead-lettered, retryable, lag p50/p99, the measured time per record) and a hint
line with that time for ``shardline cost --per-record-ms``. ``--json`` prints the summary
and the series as data; ``-o report.png`` draws the series in three panels over time:
throughput, lag and failures.

matplotlib is in the ``cli`` extra only, imported when ``-o`` is given, and draws with the
Agg backend on a figure of its own (never pyplot's global state), so the command works on a
machine without a display. Without matplotlib, ``-o`` is one line naming the fix.

It is a plain ``click.Command``; ``deploy.cli.main`` adds it to the ``shardline`` group.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any, NoReturn

import click

if TYPE_CHECKING:
    from deploy.insights.report import Report

__all__ = ["draw_chart", "report", "write_chart"]

EXIT_INPUT = 2
EXIT_MISSING = 1
MISSING_MATPLOTLIB = (
    "error: -o draws with matplotlib, which is not installed: pip install 'shardline[cli]'"
)


def _fail(message: str, status: int = EXIT_INPUT) -> NoReturn:
    click.echo(message, err=True)
    raise SystemExit(status)


def _bucket(_ctx: click.Context, _param: click.Parameter, value: str) -> float | str:
    """``--bucket``: seconds, or ``auto``."""
    from deploy.insights.report import AUTO  # noqa: PLC0415

    if value.strip().lower() == AUTO:
        return AUTO
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0.001 <= seconds < math.inf:  # also NaN
        msg = f"{value!r}: expected seconds (at least 0.001) or {AUTO!r}"
        raise click.BadParameter(msg)
    return seconds


def _since(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    """``--since``: an ISO time or a duration before now, as epoch ms."""
    import time  # noqa: PLC0415

    from deploy.insights.report import ReportError, parse_since  # noqa: PLC0415

    if value is None:
        return None
    try:
        return parse_since(value, time.time())
    except ReportError as exc:
        raise click.BadParameter(str(exc)) from None


def _window(result: Report) -> str:
    """Which part of the logs the report covers, and how to see the rest."""
    import datetime as dt  # noqa: PLC0415

    from deploy.cli.common import plural  # noqa: PLC0415

    runs = plural(result.runs, "run")
    if result.since_ms is None:
        return f"every run in the logs ({runs})"
    since = dt.datetime.fromtimestamp(result.since_ms / 1000, tz=dt.UTC)
    left = (
        f"; {plural(result.earlier, 'metric document')} before it left out (--all: every run)"
        if result.earlier
        else ""
    )
    return f"from {since:%Y-%m-%d %H:%M:%S} UTC ({runs} in the logs{left})"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _print(result: Report) -> None:
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    from deploy.cli.common import plural  # noqa: PLC0415

    console = Console(width=120)
    table = Table(
        title=f"{plural(len(result.functions), 'function')}, "
        f"{plural(result.documents, 'metric document')}",
        caption=(
            "rates over each function's active period; dead: dead-lettered; retry: reported "
            "in batchItemFailures; lag: OldestRecordAge, ms; ms/rec: measured handler time"
        ),
    )
    table.add_column("function", no_wrap=True)
    for column in (
        "invoked", "in", "in/s", "written", "wr/s", "filtered", "dead", "retry", "lag p50",
        "lag p99", "ms/rec",
    ):  # fmt: skip
        table.add_column(column, justify="right")
    for s in result.functions.values():
        table.add_row(
            s.function, f"{s.invocations:,}", f"{s.records_in:,}", f"{s.records_in_per_s:,.0f}",
            f"{s.written:,}", f"{s.written_per_s:,.0f}", f"{s.filtered:,}",
            f"{s.dead_lettered:,}", f"{s.retryable:,}", _ms(s.lag_p50_ms), _ms(s.lag_p99_ms),
            "-" if s.per_record_ms is None else f"{s.per_record_ms:.3g}",
        )  # fmt: skip
    console.print(table)
    for s in result.functions.values():
        sinks = ", ".join(f"{sink} {n:,}" for sink, n in s.written_by_sink.items()) or "none"
        line = f"{s.function}: written by sink: {sinks}"
        if s.dead_lettered_by_reason:
            reasons = ", ".join(f"{r} {n:,}" for r, n in s.dead_lettered_by_reason.items())
            line += f"; dead-lettered by reason: {reasons}"
        line += f"; active {s.active_seconds:,.1f} s"
        if s.per_record_ms is not None:
            line += f"; {s.per_record_ms:.3g} ms/record from {s.per_record_basis}"
        console.print(line, highlight=False, markup=False)
    console.print(
        f"read {plural(result.lines, 'line')} from {plural(len(result.files), 'file')}: "
        f"{plural(result.documents, 'metric document')}, "
        f"{plural(result.skipped, 'other line')} skipped (JSON logs, other output); "
        f"buckets of {result.bucket_seconds:g} s",
        highlight=False,
        markup=False,
    )
    console.print(f"report: {_window(result)}", highlight=False, markup=False)
    hint = result.per_record_hint()
    if hint is not None and hint.per_record_ms is not None:
        console.print(
            "hint: shardline cost FILE --rate R --record-bytes B --per-record-ms "
            f"{hint.per_record_ms:.3g}",
            highlight=False,
            markup=False,
        )
        console.print(
            f"  ({hint.function}, the slowest function: {hint.per_record_basis} per record "
            "in, measured against this run's stores, without Lambda's per-invocation overhead)",
            highlight=False,
            markup=False,
        )


def _matplotlib() -> Any:
    """matplotlib's Figure and Agg canvas classes; without matplotlib, exit naming the fix."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
        from matplotlib.figure import Figure  # noqa: PLC0415
    except ImportError:
        _fail(MISSING_MATPLOTLIB, EXIT_MISSING)
    return Figure, FigureCanvasAgg


def write_chart(result: Report, path: str) -> None:
    """Draw ``result`` as a PNG at ``path``: throughput, lag and failures over time.

    Raises:
        SystemExit: matplotlib is not installed (the message names the fix).
    """
    draw_chart(result).savefig(path, format="png")


def draw_chart(result: Report) -> Any:
    """``result``'s chart: a matplotlib Figure of three panels (see :func:`write_chart`).

    The failures panel counts records, so its ticks are whole numbers; with no failure at
    all it reads 0 to 1 and says "no failures" rather than showing fractional ticks of
    nothing.

    Raises:
        SystemExit: matplotlib is not installed (the message names the fix).
    """
    import datetime as dt  # noqa: PLC0415

    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    figure_class, canvas_class = _matplotlib()
    fig = figure_class(figsize=(11, 8.5), dpi=100, layout="constrained")
    canvas_class(fig)
    throughput, lag, failures = fig.subplots(3, 1, sharex=True)
    times = result.times()
    nan = float("nan")
    colors = [f"C{i % 10}" for i in range(len(result.series))]
    for color, (name, series) in zip(colors, result.series.items(), strict=True):
        throughput.plot(times, series.per_second(series.records_in), color=color,
                        label=f"{name}: in")  # fmt: skip
        throughput.plot(times, series.per_second(series.written), color=color,
                        linestyle="--", label=f"{name}: written")  # fmt: skip
        lags = [nan if v is None else v for v in series.lag_ms]
        lag.plot(times, lags, color=color, marker=".", markersize=3, label=name)
        failures.plot(times, series.dead_lettered, color=color,
                      label=f"{name}: dead-lettered")  # fmt: skip
        failures.plot(times, series.retryable, color=color, linestyle=":",
                      label=f"{name}: retryable")  # fmt: skip
    start = dt.datetime.fromtimestamp(result.start_ms / 1000, tz=dt.UTC)
    pipelines = sorted({p for s in result.functions.values() for p in s.pipelines})
    fig.suptitle(f"shardline report: {', '.join(pipelines)} from {start:%Y-%m-%d %H:%M:%S} UTC")
    throughput.set_title("throughput", loc="left")
    throughput.set_ylabel("records / s")
    lag.set_title("lag: oldest record's age at processing (max per bucket)", loc="left")
    lag.set_ylabel("ms")
    failures.set_title(f"failures per {result.bucket_seconds:g} s", loc="left")
    failures.set_ylabel("records")
    failures.set_xlabel(f"seconds from {start:%H:%M:%S} UTC")
    for axes in (throughput, lag, failures):
        axes.grid(visible=True, alpha=0.3)
        axes.set_ylim(bottom=0)
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    failures.yaxis.set_major_locator(MaxNLocator(integer=True))
    if not any(any(s.dead_lettered) or any(s.retryable) for s in result.series.values()):
        failures.set_ylim(0, 1)
        failures.text(0.5, 0.5, "no failures", transform=failures.transAxes,
                      ha="center", va="center", color="0.4")  # fmt: skip
    return fig


@click.command("report")
@click.argument("paths", nargs=-1, type=click.Path(exists=True), metavar="[LOG_DIR_OR_FILES]...")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write a PNG chart of throughput, lag and failures over time.")  # fmt: skip
@click.option("--bucket", default="1", show_default=True, metavar="SECONDS|auto", callback=_bucket,
              help="Seconds per point; auto: a round width giving at most 300 points.")  # fmt: skip
@click.option("--since", metavar="WHEN", callback=_since,
              help="Only from WHEN: an ISO time (UTC unless it has an offset) or a duration "
              "before now (90s, 15m, 2h, 1d). Default: the last run.")  # fmt: skip
@click.option("--all", "every", is_flag=True, help="Every run in the logs, not only the last.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary and series as JSON.")
def report(
    paths: tuple[str, ...],
    *,
    output: str | None,
    bucket: float | str,
    since: int | None,
    every: bool,
    as_json: bool,
) -> None:
    """Summarise the functions' metrics in LOG_DIR_OR_FILES (default .shardline/logs).

        Reads the EMF lines that `shardline dev` wrote per function and prints, per function,
        the records in and written and their rates, filtered, dead-lettered and retryable
        counts, the lag (OldestRecordAge) p50 and p99, and the handler's measured time per
        record, the figure `shardline cost --per-record-ms` takes. Other lines are skipped.

        `shardline dev` appends to the logs, so they hold every past run; by default only the
    last run is reported. The logs mark no run's start, so a run starts after a pause of
        more than 60 s in which no function was invoked (a running pipeline's functions are
        invoked while records flow). So a run that received no records for over 60 s is
        reported from its last burst only, and a run started less than 60 s after the
        previous one's last invocation is reported with it: give --since, or --all.
        --since overrides the last-run rule.
    """
    from deploy.insights.report import ReportError, load_report  # noqa: PLC0415
    from deploy.local.dev import LOG_DIR  # noqa: PLC0415

    if output is not None:
        _matplotlib()  # before the work, so a missing dependency fails at once
    try:
        result = load_report(paths or (LOG_DIR,), bucket, since_ms=since, last_run=not every)
    except ReportError as exc:
        _fail(f"error: {exc}")
    if output is not None:
        write_chart(result, output)
    if as_json:
        click.echo(json.dumps(result.to_dict()))
    else:
        _print(result)
    if output is not None:
        click.echo(f"chart: {output}", err=as_json)
