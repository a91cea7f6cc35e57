"""``shardline dev``: the CLI of :mod:`deploy.local.dev`, with a live display (rich)."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from deploy.local.dev import DevReport
    from deploy.local.run import FunctionRun, LocalRun
    from stream.plan import Plan

__all__ = ["dev_command"]

LAG_EVERY_S = 2.0  # a lag reading costs a GetRecords per shard
#: The width of dev's and demo's display whatever the output is: piped, rich would take 80
#: columns and cut the live table's headers and numbers to "re…" and "20…".
WIDTH = 120


def display_console(file: Any = None) -> Any:
    """The console dev and demo print to: stderr (stdout is for ``--json``), ``WIDTH``
    columns on a terminal or not. ``file`` replaces stderr (tests)."""
    from rich.console import Console  # noqa: PLC0415

    return Console(file=file, stderr=file is None, width=WIDTH)


class _MetricsTail:
    """What the functions' EMF lines say so far, read as they are appended to
    ``LOG_DIR/FUNCTION.log`` (lines written before this run are not counted)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.offsets: dict[Path, int] = {
            path: path.stat().st_size for path in log_dir.glob("*.log")
        } if log_dir.is_dir() else {}  # fmt: skip
        self.counts: dict[str, dict[str, float]] = {}  # function -> metric -> sum
        self.written: dict[str, dict[str, float]] = {}  # function -> sink -> Written

    def poll(self) -> None:
        from deploy.insights.report import parse_document  # noqa: PLC0415

        for path in sorted(self.log_dir.glob("*.log")) if self.log_dir.is_dir() else ():
            offset = self.offsets.get(path, 0)
            with path.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
            lines = chunk.split(b"\n")
            rest = lines.pop()  # a line still being written
            self.offsets[path] = offset + len(chunk) - len(rest)
            for line in lines:
                doc = parse_document(line)
                if doc is None:
                    continue
                sums = self.counts.setdefault(doc.function, {})
                for name, value in doc.totals.items():
                    sums[name] = sums.get(name, 0.0) + value
                sinks = self.written.setdefault(doc.function, {})
                for key, sink, metric, value in doc.parts:
                    if key == "Sink" and metric == "Written":
                        sinks[sink] = sinks.get(sink, 0.0) + value


class _Display:
    """Per function: user records in and their rate, filtered, written per sink and dead
    letters (from the functions' metrics), failed batches, retries, and per shard the
    records behind the newest (``-``: a closed shard read to its end, or not known yet).
    Without metrics (``--in-process``) records in are the mapping's Kinesis records.

    ``kept``: the stack outlives the command (``shardline local up``), so its checkpoints
    do too; the title says which. The final frame (``final=True``, also what a pipe or a
    log gets) shows each function's rate over the run, not over the last, idle, second."""

    def __init__(
        self, plan: Plan, client: Any, log_dir: Path, *, kept: bool = False
    ) -> None:
        self.plan, self.client, self.kept = plan, client, kept
        self.started = time.monotonic()
        self.first_tick: float | None = None  # the mappings run from here on
        self.lag: dict[str, str] = {}
        self.lag_at = 0.0
        self.previous: dict[str, tuple[float, float]] = {}
        self.rates: dict[str, float] = {}
        self.metrics = _MetricsTail(log_dir)

    def counts(self, run: FunctionRun) -> dict[str, Any]:
        """One function's row, as numbers: the table shows these, ``--json`` prints them.

        ``records_in`` is user records from the metrics (Kinesis records of the mapping
        without metrics); ``filtered_by_pushdown`` is what the mapping's FilterCriteria
        dropped, ``filtered_by_steps`` what the function's filters dropped (``None``:
        not known without metrics)."""
        s = run.mapping.stats
        sums = self.metrics.counts.get(run.name)
        return {
            "records_in": int(sums.get("RecordsIn", 0.0)) if sums else s.records_in,
            "filtered_by_pushdown": s.records_filtered,
            "filtered_by_steps": int(sums.get("RecordsFiltered", 0.0)) if sums else None,
            "written": {k: int(v) for k, v in self.metrics.written.get(run.name, {}).items()},
            "dead_lettered": int(sums.get("RecordsDeadLettered", 0.0)) if sums else None,
            "failed_batches": s.batches_partial + s.batches_failed,
            "retries": s.retries,
        }

    def table(self, local: LocalRun, producer: Any, *, final: bool = False) -> Any:
        from rich.table import Table  # noqa: PLC0415

        from deploy.local.run import mapping_status  # noqa: PLC0415

        now = time.monotonic()
        if self.first_tick is None:
            self.first_tick = now
        if now - self.lag_at >= LAG_EVERY_S:
            self.lag_at = now
            behind: dict[str, list[str]] = {}
            for row in mapping_status(self.plan, self.client, local.names):
                lag = "-" if row.behind is None else f"{row.behind}{'+' if row.behind_more else ''}"
                behind.setdefault(row.function, []).append(lag)
            self.lag = {name: " ".join(shards) for name, shards in behind.items()}
        self.metrics.poll()
        elapsed = now - self.started
        title = f"{self.plan['name']}: {elapsed:.0f} s"
        if producer is not None:
            state = "producing" if producer.is_alive() else "produced"
            title += f", {state} {producer.sent_bytes:,} bytes"
        if final:
            title += ", rec/s over the run"
        ending = (
            "checkpoints are kept" if self.kept else "checkpoints end with this command"
        )  # fmt: skip
        table = Table(title=f"{title} (Ctrl-C stops; {ending})")
        # "failed": batches that failed or partly failed; "behind": per shard, records;
        # "pushdown": dropped by the mapping's FilterCriteria, "filtered": by the steps
        columns = ("function", "in", "rec/s", "pushdown", "filtered", "written", "dead",
                   "failed", "retries", "behind")  # fmt: skip
        # whole headers and numbers: only "written" (one sink a line) and "behind" wrap
        for column in columns:
            left = column in {"function", "written"}
            wraps = column in {"written", "behind"}
            table.add_column(
                column, justify="left" if left else "right", no_wrap=not wraps,
                min_width=len(column),
            )  # fmt: skip
        for run in local.runs:
            counts = self.counts(run)
            records = counts["records_in"]
            then, count = self.previous.get(run.name, (self.started, 0.0))
            if final:
                ran = now - self.first_tick
                self.rates[run.name] = records / ran if ran > 0 else 0.0
            elif now - then >= 1.0:
                self.rates[run.name] = (records - count) / (now - then)
                self.previous[run.name] = (now, records)
            dead = counts["dead_lettered"]
            steps = counts["filtered_by_steps"]
            table.add_row(
                run.name, f"{records:,}", f"{self.rates.get(run.name, 0.0):,.0f}",
                f"{counts['filtered_by_pushdown']:,}", "-" if steps is None else f"{steps:,}",
                "\n".join(f"{k} {v:,}" for k, v in sorted(counts["written"].items())) or "-",
                "-" if dead is None else f"{dead:,}",
                str(counts["failed_batches"]), str(counts["retries"]),
                self.lag.get(run.name, "-"),
            )  # fmt: skip
        return table


def mapping_json(stats: Any) -> dict[str, Any]:
    """A mapping's counters for ``--json``: ``records_filtered`` is named for what it is,
    ``filtered_by_pushdown`` (the FilterCriteria's drops), as every command names it."""
    out = dataclasses.asdict(stats)
    out["filtered_by_pushdown"] = out.pop("records_filtered")
    return out


def _dev_json(report: DevReport, display: _Display, accounts: Any) -> dict[str, Any]:
    stored = report.stored
    produced = report.produced
    return {
        "stack": report.deployed.status if report.deployed else None,
        "functions": {
            r.name: {**display.counts(r), "mapping": mapping_json(r.mapping.stats)}
            for r in report.runs
        },
        "checks": [
            {"check": what, "left": left, "right": right, "ok": left == right}
            for what, left, right in (accounts.checks if accounts is not None else ())
        ],
        "reconciled": accounts.reconciled if accounts is not None and accounts.checks else None,
        "stores": stored.per_sink if stored else {},
        "dead_letters": dict(stored.dead_letters) if stored else {},
        "produced": dataclasses.asdict(produced.stats)
        if produced is not None and getattr(produced, "stats", None)
        else None,
        # a file the run stopped part way: how many of its records were put
        "produced_part": {"sent": produced.sent, "records": produced.records}
        if hasattr(produced, "sent")
        else None,
        "seconds": round(report.seconds, 3),
    }


def _summary(report: DevReport) -> Any:
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=f"read back from the stores after {report.seconds:.1f} s")
    table.add_column("sink / dead letters by reason")
    table.add_column("count", justify="right")
    stored = report.stored
    if stored is not None:
        for sink, count in stored.per_sink.items():
            table.add_row(sink, f"{count:,}")
        for reason, count in stored.dead_letters.most_common():
            table.add_row(f"  {reason}", f"{count:,}")
    return table


@click.command("dev")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--produce", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="JSON lines to put onto the stream while the functions run.")  # fmt: skip
@click.option("--key", help="The field of each line that is its partition key.")
@click.option("--rate", type=float, help="Records per second to produce at most.")
@click.option("--aggregate", is_flag=True, help="Produce KPL-aggregated records.")
@click.option("--duration", type=float, help="Stop after this many seconds.")
@click.option("--until-idle", type=float,
              help="Stop once produced and every shard idle this long (s).")  # fmt: skip
@click.option("--in-process", is_flag=True, help="Run handlers here, not in Lambda runtimes.")
@click.option("--flush-every", type=click.FloatRange(min=0.0, min_open=True), metavar="S",
              help="Flush windowed functions every S s instead of their flush_s.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def dev_command(
    file: str, *, produce: Path | None, key: str | None, rate: float | None, aggregate: bool,
    duration: float | None, until_idle: float | None, in_process: bool,
    flush_every: float | None, as_json: bool,
) -> None:  # fmt: skip
    """Deploy FILE to the embedded local AWS and run its functions, live.

    Starts a moto server and an osmem-server on loopback, deploys the file with the real
    deploy code, and feeds every function from the stream with its deployed event source
    mapping's settings, in Lambda runtime workers. Ctrl-C stops; the stores are then read
    back and counted.
    """
    import threading  # noqa: PLC0415

    from rich.live import Live  # noqa: PLC0415

    from deploy.cli.common import json_only_stdout, load_any_plan  # noqa: PLC0415
    from deploy.local.dev import LOG_DIR, aggregate_refusal, run_dev  # noqa: PLC0415
    from deploy.local.run import stop_on_signals  # noqa: PLC0415
    from stream.aws import reset_clients  # noqa: PLC0415

    console = display_console()
    accounts = None
    stack, kept = _stack(console)
    try:
        with stack.activated():
            reset_clients()
            plan = load_any_plan(file)  # after activation: ${OPENSEARCH_URL} is the local one
            refusal = aggregate_refusal(plan) if aggregate and produce is not None else None
            if refusal is not None:
                click.echo(f"{file}: {refusal}", err=True)
                raise SystemExit(2)
            _say_stack(console, stack, kept=kept, produce=produce)
            log_dir = Path(LOG_DIR)
            before = _log_sizes(log_dir)
            display = _Display(plan, stack.client, log_dir, kept=kept)
            stop = threading.Event()
            seen: list[LocalRun] = []
            with (
                Live(console=console, refresh_per_second=2, transient=False) as live,
                json_only_stdout(as_json),  # in-process handlers' logs and metrics: stderr
            ):

                def tick(local: LocalRun, producer: Any) -> None:
                    seen[:] = [local]
                    live.update(display.table(local, producer))

                with stop_on_signals(stop):
                    report = run_dev(
                        plan, stack.client, produce=produce, key=key, rate=rate,
                        aggregate=aggregate, duration=duration, until_idle=until_idle,
                        in_process=in_process, stop=stop, log=_log_line(console), on_tick=tick,
                        flush_every=flush_every,
                    )  # fmt: skip
                if seen:  # the final counts, which --json prints too
                    live.update(display.table(seen[0], None, final=True))
            _after_live(console)
            accounts = _dev_accounts(plan, report, log_dir, before, in_process=in_process)
            _print_dev(
                console, report, accounts, produced=produce is not None, in_process=in_process
            )
            if as_json:
                click.echo(json.dumps(_dev_json(report, display, accounts)))
    finally:
        with console.status("stopping the local AWS"):
            stack.stop()
        reset_clients()
    if accounts is not None and accounts.checks and not accounts.reconciled:
        console.print(
            "[bold red]not reconciled[/]: records produced are missing from the stores (see "
            "the checks above and the functions' logs)"
        )
        raise SystemExit(1)


def _stack(console: Any) -> tuple[Any, bool]:
    """The stack ``shardline local up`` started in this folder (kept: used, left running),
    or an embedded one started for this command (not kept)."""
    from deploy.local.servers import LocalAWS, running_local  # noqa: PLC0415

    stack = running_local()
    if stack is not None:
        return stack, True
    with console.status("starting the local AWS (moto, osmem)"):
        return LocalAWS().start(), False


def _say_stack(console: Any, stack: Any, *, kept: bool, produce: Path | None) -> None:
    """Where the stack is, and what outlives this command: with ``shardline local up`` the
    stack and its checkpoints stay, and a rerun resumes from them (but ``--produce`` puts
    its file again); without, everything ends with the command and a rerun starts anew."""
    where = f"at {stack.endpoint}, OpenSearch at {stack.opensearch_url}"
    if not kept:
        console.print(
            f"embedded local AWS {where}, for this command only: its stream, stores and "
            "checkpoints end with it, and running dev again starts from nothing. Start one "
            "with `shardline local up` in this folder to keep them, so a rerun resumes from "
            "the checkpoints."
        )
        return
    console.print(
        f"local AWS from `shardline local up` {where}: it keeps running after this command, "
        "with its checkpoints, and running dev again resumes from them."
    )
    if produce is not None:
        console.print(
            f"--produce puts {produce} from its first line again: records an earlier dev run "
            "put are put again, as new records at new positions (sinks that de-duplicate by "
            "shard and sequence number store them twice)."
        )


def _after_live(console: Any) -> None:
    """A blank line after the live table's last frame. Off a terminal rich prints that
    frame without its final newline (on one, stopping adds it), so the next title would
    start on the table's bottom border."""
    console.line(1 if console.is_terminal else 2)


def _log_line(console: Any) -> Any:
    """The deploy's log lines, never wrapped by us: an S3 key's digest stays one piece
    in a pipe or a log (a terminal wraps a long line itself)."""

    def log(line: str) -> None:
        console.print(line, soft_wrap=True, markup=False, highlight=False)

    return log


def _print_dev(
    console: Any, report: DevReport, accounts: Any, *, produced: bool, in_process: bool
) -> None:
    from deploy.local.dev import LOG_DIR, PartlyProduced  # noqa: PLC0415

    console.print(_summary(report))
    console.print()
    if accounts is not None and accounts.checks:
        _print_checks(console, accounts)
    elif accounts is not None:
        console.print(f"nothing to reconcile: {NOTHING_TO_RECONCILE}")
    elif produced:
        why = (
            "--in-process runs keep no metrics, so what the functions' filters dropped is "
            "not known" if in_process else "the run stopped before the whole file was produced"
        )  # fmt: skip
        console.print(f"not reconciled: {why}")
    console.print(f"the functions' logs and metrics: {LOG_DIR}/FUNCTION.log")
    if isinstance(report.produced, PartlyProduced):
        part = report.produced
        console.print(
            f"stopped producing: {part.sent:,} of the {part.records:,} records of {part.path} "
            "were put on the stream; running dev --produce again puts the file from its first "
            "line, these included"
        )
    elif report.produced is not None:
        p = report.produced
        from deploy.cli.common import plural  # noqa: PLC0415

        console.print(
            f"produced {plural(p.lines - len(p.malformed) - len(p.failed), 'record')}, "
            f"{plural(len(p.malformed), 'malformed line')} skipped, {len(p.failed)} failed"
        )


def _log_sizes(log_dir: Path) -> dict[str, int]:
    """Each log file's size now: what a run appends comes after it."""
    return {p.name: p.stat().st_size for p in log_dir.glob("*.log")} if log_dir.is_dir() else {}


#: Why a run produced to the end can have no check: ``dev`` counts a function only when
#: every record it keeps reaches one sink that holds one entry per record and that dev reads
#: back (:func:`deploy.local.demo.account`). Without one, no count can show a loss, and
#: none is claimed: the run is not failed for it.
NOTHING_TO_RECONCILE = (
    "no function sends every record it keeps to one sink that dev reads back and that holds "
    "one entry per record (an s3 archive, an sqs queue, a dynamodb append table, an "
    "opensearch index without id; plugin and stdout sinks are not read back): check those "
    "sinks' output yourself"
)


def _dev_accounts(
    plan: Plan, report: DevReport, log_dir: Path, before: dict[str, int], *,
    in_process: bool,
) -> Any:  # fmt: skip
    """The demo's reconciliation of a ``dev --produce`` run (None without a file produced
    to the end, or in-process: no metrics say what the filters dropped)."""
    from deploy.local.demo import account  # noqa: PLC0415

    produced = report.produced
    stats = getattr(produced, "stats", None)
    if stats is None or in_process:
        return None
    return account(
        plan, report, stats.records - stats.failures, log_dir, before, exact_sinks_only=True
    )


def _window_summary(check: Any) -> dict[str, Any]:
    """A windowed function's check as JSON (at most 5 ids of each kind of mismatch)."""
    ref = check.reference
    return {
        "sink": check.sink,
        "rows": len(check.rows),
        "closed": len(ref.closed),
        "matching": check.matching,
        "open": len(ref.open),
        "late": ref.late,
        "missing": check.missing[:5],
        "extra": check.extra[:5],
        "differing": check.differing[:5],
        "not_compared": list(check.unchecked),
        "samples": check.samples,
    }


def _print_windows(console: Any, report: Any) -> None:
    """Per windowed function: its rows read back against the reference, a few of them, and
    how the demo closed the final windows."""
    from rich.table import Table  # noqa: PLC0415

    for check in report.windows:
        ref = check.reference
        table = Table(title=f"windows of {check.function}, read back from {check.sink}")
        table.add_column("what")
        table.add_column("count", justify="right")
        table.add_row("rows (closed windows)", f"{len(check.rows):,}")
        table.add_row("  equal to the reference", f"{check.matching:,}")
        table.add_row("  missing, extra, different", ", ".join(
            f"{len(ids):,}" for ids in (check.missing, check.extra, check.differing)))  # fmt: skip
        table.add_row("still open at the end (reference; no row yet)", f"{len(ref.open):,}")
        table.add_row("late records, dropped (reference)", f"{ref.late:,}")
        console.print(table)
        if check.unchecked:
            console.print(
                f"Not compared (the reference does not compute them): "
                f"{', '.join(check.unchecked)}."
            )
        if check.samples:
            names = ("window_id", *check.compared)
            rows = Table(title="a few rows")
            for name in names:
                rows.add_column(name, justify="left" if name == "window_id" else "right")
            for row in check.samples:
                rows.add_row(*(_cell(row.get(name)) for name in names))
            console.print(rows)
    for function, why in report.windows_unchecked.items():
        console.print(f"The windows of {function} are not checked: {why}.")
    if report.windows and report.close_at is not None:
        from processors.window import iso  # noqa: PLC0415

        console.print(
            f"The final windows were closed by closing purchases put after the traffic, one "
            f"per shard ({report.closing}), at {iso(report.close_at)} (the last window's end "
            "plus the lateness): their own windows are the ones still open."
        )
    if report.windows:
        console.print()


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _print_checks(console: Any, report: Any) -> None:
    """The reconciliation table: per function, produced against where records went."""
    from rich.table import Table  # noqa: PLC0415

    checks = Table(title="reconciliation")
    for column in ("check", "left", "right", "ok"):
        checks.add_column(column, justify="left" if column == "check" else "right")
    for what, left, right in report.checks:
        checks.add_row(what, f"{left:,}", f"{right:,}", "yes" if left == right else "NO")
    console.print(checks)
    console.print()


@click.command("demo")
@click.option("--events", type=click.IntRange(min=100), default=20_000, show_default=True,
              help="How many synthetic events to produce.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def demo_command(*, events: int, as_json: bool) -> None:
    """Run the clickstream example end to end on the embedded local AWS.

    Deploys the example to a local moto server and osmem-server with the real deploy code,
    produces synthetic clicks, views and purchases (some aggregated, a few malformed) while
    every function runs from its deployed mapping in Lambda runtimes, then reads back what
    landed where. Exits 1 unless produced = filtered + delivered + dead-lettered, and the
    windowed function's rows equal a reference computed from what was produced.
    """
    from rich.live import Live  # noqa: PLC0415

    from deploy.local.demo import EXAMPLE, run_demo  # noqa: PLC0415
    from deploy.local.dev import LOG_DIR  # noqa: PLC0415
    from deploy.local.servers import LocalAWS  # noqa: PLC0415
    from stream.aws import reset_clients  # noqa: PLC0415

    console = display_console()
    with console.status("starting the local AWS (moto server, osmem-server)"):
        stack = LocalAWS().start()
    try:
        with stack.activated():
            reset_clients()
            from deploy.pipeline.config import load_plan_from_file  # noqa: PLC0415

            plan = load_plan_from_file(EXAMPLE / "pipeline.yaml")
            display = _Display(plan, stack.client, Path(LOG_DIR))
            seen: list[LocalRun] = []
            with Live(console=console, refresh_per_second=2) as live:

                def tick(local: LocalRun, producer: Any) -> None:
                    seen[:] = [local]
                    live.update(display.table(local, producer))

                report = run_demo(stack.client, events=events, on_tick=tick, log=_log_line(console))
                if seen:  # rates over the run, not over the last, idle, second
                    live.update(display.table(seen[0], None, final=True))
            _after_live(console)
    finally:
        with console.status("stopping the local AWS"):
            stack.stop()
        reset_clients()
    _print_demo(console, report, EXAMPLE)
    if as_json:
        stored = report.dev.stored
        click.echo(
            json.dumps(
                {
                    "produced": report.produced,
                    "filtered_by_steps": report.filtered,
                    "filtered_by_pushdown": report.pushed_down,
                    "stores": stored.per_sink if stored else {},
                    "dead_letters": {f: dict(c) for f, c in report.dead_by_function.items()},
                    "checks": [
                        {"check": what, "left": left, "right": right, "ok": left == right}
                        for what, left, right in report.checks
                    ],
                    "latency_ms": dict(zip(("p50", "p99"), report.latency_ms, strict=True))
                    if report.latency_ms
                    else None,
                    "windows": {c.function: _window_summary(c) for c in report.windows},
                    "windows_not_checked": report.windows_unchecked,
                    "closing_records": report.closing,
                    "seconds": round(report.seconds, 3),
                    "records_per_second": round(report.rate, 1),
                    "reconciled": report.reconciled,
                }
            )
        )
    if not report.reconciled:
        raise SystemExit(1)


def _print_demo(console: Any, report: Any, example: Path) -> None:
    from rich.table import Table  # noqa: PLC0415

    stores = Table(title="read back from the stores")
    stores.add_column("what")
    stores.add_column("count", justify="right")
    stores.add_row("produced", f"{report.produced:,}")
    for function, count in report.filtered.items():
        stores.add_row(f"filtered out by {function} (its metrics)", f"{count:,}")
    for function, count in report.pushed_down.items():
        if count:
            stores.add_row(f"filtered by pushdown before {function} (its mapping)", f"{count:,}")
    stored = report.dev.stored
    for sink, count in (stored.per_sink if stored else {}).items():
        stores.add_row(sink, f"{count:,}")
        if sink == "search":
            stores.add_row("  with a user from the lookup", f"{report.enriched:,}")
    for function, reasons in report.dead_by_function.items():
        for reason, count in sorted(reasons.items()):
            stores.add_row(f"  dead letter from {function}: {reason}", f"{count:,}")
    console.print(stores)
    console.print()
    _print_windows(console, report)
    _print_checks(console, report)
    latency = (
        f"p50 {report.latency_ms[0]:,.0f} ms, p99 {report.latency_ms[1]:,.0f} ms"
        if report.latency_ms
        else "n/a"
    )
    console.print(
        f"{report.produced:,} records in {report.seconds:.1f} s ({report.rate:,.0f} records/s "
        f"end to end, deploy included); latency, stream arrival to DynamoDB write: {latency}"
    )
    console.print(
        f"Next: edit {example / 'pipeline.yaml'}, check it with `shardline test` on it, and "
        "run it with `shardline dev`; the functions' logs and metrics are in .shardline/logs."
    )
