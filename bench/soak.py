"""``python -m bench soak``: the reliability figures, and the example under steady load.

Two parts, both on the local stack, and ``RELIABILITY.md`` at the project root written from
what they measured (``make soak`` runs the defaults):

* **Scenarios**: the end-to-end fault scenarios (``tests/e2e/test_faults.py``) and the
  stateful test (``tests/e2e/test_stateful_path.py``) run by pytest with
  ``SHARDLINE_E2E_SCALE=--scale`` (bigger than in CI); each test appends its reconciliation
  (records produced, delivered, dead-lettered, duplicates seen and removed, order
  violations, read back from the stores) to a report file, which becomes the table.
* **Load**: the bundled example (``examples/clickstream/pipeline.yaml``), deployed to the
  local AWS and fed at a steady ``--rate`` for ``--minutes`` with the demo's synthetic
  traffic, run by two ``shardline run`` workers sharing the lease tables, through a pause
  past the lease (SIGSTOP for three lease durations) and a steal (a third worker started
  mid-load, then stopped), then until every shard is caught up (:mod:`bench.soak_load`).
  Reported: the rate held, the time to drain after the last record, latency from stream
  arrival to the DynamoDB write (p50/p99), what the faults did to the leases, the
  per-record reconciliation of each function read back from the stream and every store
  (:mod:`bench.soak_reconcile`: produced = filtered + delivered + dead-lettered, lost,
  duplicate effects, per-key order), and memory growth after warm-up (the first quarter of
  the load, at least 10 s) of each worker, its Lambda runtimes and the producer: the median
  of the last three samples against the median of the first three after warm-up; flat
  means under 10%. ``--no-scenarios`` keeps the scenario section of the file written before.

The exit status is 1 when a scenario failed, a reconciliation does not hold, or memory grew
10% or more; RELIABILITY.md is written either way.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from bench.soak_load import GROWTH_LIMIT, LoadReport, read_rss_kib, run_load, runtime_workers

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "LoadReport",
    "main",
    "read_rss_kib",
    "run_load",
    "run_scenarios",
    "runtime_workers",
    "write_reliability",
]

ROOT = Path(__file__).resolve().parent.parent
RELIABILITY = ROOT / "RELIABILITY.md"
SCENARIO_FILES = ("tests/e2e/test_faults.py", "tests/e2e/test_stateful_path.py")


# -- scenarios -----------------------------------------------------------------------------


@dataclass
class ScenarioRun:
    """The pytest run of the e2e files: its rows and how it ended."""

    rows: list[dict[str, Any]]
    exit_code: int
    seconds: float
    scale: float
    output_tail: str = ""


def run_scenarios(scale: float, files: Sequence[str] = SCENARIO_FILES) -> ScenarioRun:
    """Run the e2e scenario files with pytest at ``scale``; their figures, one row each."""
    with tempfile.TemporaryDirectory(prefix="shardline-soak-") as folder:
        report = Path(folder) / "figures.jsonl"
        env = dict(os.environ, SHARDLINE_E2E_SCALE=str(scale), SHARDLINE_E2E_REPORT=str(report))
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "e2e",
             "--durations=0", *files],
            cwd=ROOT, env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        seconds = time.monotonic() - started
        rows = []
        if report.exists():
            rows = [orjson.loads(line) for line in report.read_bytes().splitlines() if line]
    tail = "\n".join(done.stdout.splitlines()[-15:])
    return ScenarioRun(rows, done.returncode, seconds, scale, tail)


# -- RELIABILITY.md ------------------------------------------------------------------------


def _table(rows: list[dict[str, Any]]) -> list[str]:
    head = ("| Scenario | Injected | Produced | Delivered | Dead-lettered | Duplicates seen / "
            "removed | Order violations | Lost | Problems | Seconds |")  # fmt: skip
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(
            f"| {row['scenario']} | {row['injected']} | {row['produced']:,} | "
            f"{row['delivered']:,} | {row['dead_lettered']:,} | {row['duplicates_seen']} / "
            f"{row['duplicates_removed']} | {row['order_violations']} | {row['lost']} | "
            f"{len(row['problems'])} | {row['seconds']:g} |"
        )
    return lines


def write_reliability(
    path: Path, scenarios: ScenarioRun | None, load: LoadReport | None, command: str
) -> str:
    """Write RELIABILITY.md from what was measured; returns the text."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()}"
    out = [
        "# Reliability",
        "",
        f"Measured by `{command}`",
        f"on {now} ({machine}); `make soak` writes this file again.",
        "Every figure is read back from the stores (DynamoDB, OpenSearch, S3, SQS), never from",
        "the runner's counters. Expected: nothing lost, no duplicate that de-duplication by",
        "(shard, sequence, sub-sequence) does not remove, no order violation.",
        "",
    ]
    if scenarios is not None:
        verdict = (
            "all passed" if scenarios.exit_code == 0 else f"FAILED (exit {scenarios.exit_code})"
        )
        out += [
            "## Fault scenarios",
            "",
            f"`tests/e2e/test_faults.py` and `tests/e2e/test_stateful_path.py` at "
            f"`SHARDLINE_E2E_SCALE={scenarios.scale:g}` ({scenarios.seconds:.0f} s, {verdict}).",
            "Each run: producer → Kinesis (moto) → local event source mapping → handler → a",
            "DynamoDB `latest` and `append` table, an OpenSearch index and an S3 archive, with",
            "an SQS dead-letter queue; a few records are poison (the `expr` filter raises on",
            "them). HTTP faults are injected between the sinks and the servers by",
            "`tests/faultproxy.py`.",
            "",
            *_table(scenarios.rows),
            "",
            "- *Delivered*: in all four sinks. *Dead-lettered*: a dead letter with its reason, or",
            "  inside the range of an on-failure message (retries exhausted) with its condition.",
            "- *Duplicates seen / removed*: extra copies found in the archive and the dead-letter",
            "  queue (S3 is at-least-once across different batch boundaries; SQS standard",
            "  queues too), and removed by position; any in OpenSearch or DynamoDB would be a",
            "  problem. In the producer rows (o) the stream itself holds records twice, at two",
            "  positions (a call sent again after its answer was lost): there every store's",
            "  copies are removed by the record's id instead.",
            "- *Dead-lettered* inside an on-failure range counts only the records of the batch's",
            "  lane (parallelization), never every record the range spans.",
            "- *Order violations*: per key, a later record first delivered before an earlier",
            "  one, or a `latest` item older than the newest record delivered for its key.",
            "",
        ]
    elif (kept := _kept_scenarios(path)) is not None:
        out += kept
    if load is not None:
        out += _load_section(load)
    text = "\n".join(out).rstrip() + "\n"
    path.write_text(text)
    return text


def _kept_scenarios(path: Path) -> list[str] | None:
    """The scenario section of the file written before (a run without the scenarios keeps
    it), with the date it was measured; None when there is none."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    start = text.find("## Fault scenarios")
    if start < 0:
        return None
    end = text.find("\n## ", start + 1)
    section = text[start : end if end >= 0 else len(text)].rstrip().splitlines()
    measured = re.search(r"^on (\d{4}-\d\d-\d\d \d\d:\d\d UTC)", text, re.MULTILINE)
    when = measured.group(1) if measured else "an earlier run"
    note = f"Kept from the run of {when} (this run measured the load only)."
    return [section[0], "", note, *section[1:], ""]


def _load_section(load: LoadReport) -> list[str]:
    workers = "in-process handlers" if load.in_process else "Lambda runtime workers"
    out = [
        "## Load: the example at a steady rate, two workers, a pause and a steal",
        "",
        "`examples/clickstream/pipeline.yaml` deployed to the local AWS (its stream four",
        "shards wide, as an on-demand stream starts in AWS) and run by two `shardline run`",
        f"workers sharing its lease tables ({workers}, deployed settings, lease",
        f"{load.lease_s:g} s), fed at a steady rate of {load.rate:g} records/s for "
        f"{load.minutes:g} minute(s)" + (" (a short run: `make soak` runs 10)"
                                         if load.minutes < 10 else ""),
        "with the demo's synthetic traffic (clicks, views, purchases; 10% KPL-aggregated; 2%",
        "not JSON; corrupt aggregates). At a quarter of the load one worker is stopped",
        "(SIGSTOP) for three lease durations, then resumed; at half a third worker starts and",
        "steals leases by the fair-share rule, and is stopped at three quarters; then all run",
        "until every shard is caught up.",
        "",
        "| Figure | Value |",
        "|---|---|",
        f"| records produced | {load.produced:,} |",
        f"| rate held | {load.rate_held:.1f} records/s (target {load.rate:g}) |",
        f"| drained after the last record | {load.drain_seconds:.1f} s |",
    ]  # fmt: skip
    if load.latency_ms:
        p50, p99 = load.latency_ms
        out.append(f"| stream arrival → DynamoDB write | p50 {p50:.0f} ms, p99 {p99:.0f} ms |")
    faults = load.faults
    if faults is not None:
        out += [
            f"| pause past the lease | soak-a stopped {faults.paused_s:.1f} s holding "
            f"{faults.paused_held} leases; {faults.taken_from_paused} taken by the other "
            "worker meanwhile |",
            f"| steal | soak-c held its first lease {faults.steal_s:.1f} s after it started "
            f"({faults.free_at_steal} leases free then); {faults.stolen} taken in all, "
            + ", ".join(f"{n} from {owner}" for owner, n in sorted(faults.stolen_from.items()))
            + "; released at its clean stop |",
            "| fault timeline | " + "; ".join(f"{t:g} s: {what}" for t, what in faults.events)
            + " |",
        ]  # fmt: skip
    figures = load.figures
    if figures is not None:
        for function, f in figures.functions.items():
            g = f.figures
            out.append(
                f"| {function}: produced = filtered + delivered + dead-lettered | "
                f"{g.produced:,} = {f.filtered:,} + {g.delivered:,} + {g.dead_lettered:,}: "
                f"{'yes' if g.produced == f.filtered + g.delivered + g.dead_lettered else 'NO'} |"
            )
        for function, f in figures.functions.items():
            text = ", ".join(f"{reason} x{n}" for reason, n in sorted(f.dead_letters.items()))
            out.append(f"| dead letters of {function} | {text or 'none'} |")
    for problem in load.problems:
        out.append(f"| PROBLEM | {problem} |")
    if figures is not None:
        out += [
            "",
            "Per function, every record read back from the stream and the stores (see",
            "`bench/soak_reconcile.py`): *filtered* by the function's chain run offline over",
            "the produced records; *delivered* in every sink its route names; *dead-lettered*",
            "with a letter at its position or inside an on-failure range of its lane. A",
            "function with a `window` step is left out (its rows name windows, not records;",
            "`shardline demo` checks them against a reference), and so is one routing to a",
            "store whose entries do not name their record (a queue, `stdout`).",
            "",
            "| Function | Produced | Filtered | Delivered | Dead-lettered | Duplicates seen / "
            "removed | Order violations | Lost | Problems |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for function, f in figures.functions.items():
            g = f.figures
            out.append(
                f"| {function} | {g.produced:,} | {f.filtered:,} | {g.delivered:,} | "
                f"{g.dead_lettered:,} | {g.duplicates_seen} / {g.duplicates_removed} | "
                f"{g.order_violations} | {g.lost} | {len(g.problems)} |"
            )
        for problem in figures.stream_problems:
            out.append(f"| stream | {problem} | | | | | | | |")
        shown = [p for f in figures.functions.values() for p in f.figures.problems][:10]
        out += ["", *(f"- problem: {p}" for p in shown)] if shown else []
    out += [
        "",
        f"Resident memory after warm-up ({load.warm_up_s:.0f} s), median of the first and",
        "last three samples (flat: growth under 10%):",
        "",
        "| Process | After warm-up | At the end | Growth |",
        "|---|---:|---:|---:|",
    ]
    for label, (start, end, growth) in sorted(load.memory.growth(load.warm_up_s).items()):
        flag = "" if growth < GROWTH_LIMIT else " (NOT flat)"
        out.append(f"| {label} | {start / 1024:.1f} MiB | {end / 1024:.1f} MiB | "
                   f"{growth * 100:+.1f}%{flag} |")  # fmt: skip
    out.append("")
    return out


# -- the command ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run both parts (or the one asked for), print the summary, write RELIABILITY.md."""
    parser = argparse.ArgumentParser(
        prog="python -m bench soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="load duration")
    parser.add_argument("--rate", type=float, default=100.0, help="records/s of the load")
    parser.add_argument("--scale", type=float, default=2.0, help="SHARDLINE_E2E_SCALE")
    parser.add_argument("--sample-s", type=float, default=5.0, help="RSS sampling interval")
    parser.add_argument(
        "--lease-s", type=float, default=5.0, help="the workers' --lease-duration in the load"
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="the load's workers run handlers in-process, not in runtimes",
    )
    parser.add_argument(
        "--no-scenarios",
        action="store_true",
        help="the load part only (the file keeps its scenario section)",
    )
    parser.add_argument("--no-load", action="store_true", help="the scenarios only")
    parser.add_argument("--output", type=Path, default=RELIABILITY, help="where to write")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    command = "python -m bench soak " + " ".join(argv if argv is not None else sys.argv[1:])

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    scenarios = None if args.no_scenarios else run_scenarios(args.scale)
    if scenarios is not None:
        log(f"scenarios: {len(scenarios.rows)} rows, pytest exit {scenarios.exit_code}, "
            f"{scenarios.seconds:.0f} s\n{scenarios.output_tail}")  # fmt: skip
    load = None if args.no_load else run_load(
        args.minutes, args.rate, args.sample_s, log, lease_s=args.lease_s,
        in_process=args.in_process,
    )  # fmt: skip
    text = write_reliability(args.output, scenarios, load, command.strip())
    if args.json:
        print(json.dumps(_summary(scenarios, load), indent=2))
    else:
        print(text)
    failed = (scenarios is not None and scenarios.exit_code != 0) or (
        load is not None and not (load.reconciled and load.flat)
    )
    return 1 if failed else 0


def _summary(scenarios: ScenarioRun | None, load: LoadReport | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if scenarios is not None:
        out["scenarios"] = {"exit_code": scenarios.exit_code, "rows": scenarios.rows}
    if load is not None:
        figures = load.figures
        out["load"] = {
            "produced": load.produced,
            "rate_target": load.rate,
            "rate_held": round(load.rate_held, 1),
            "drain_seconds": round(load.drain_seconds, 1),
            "latency_ms": list(load.latency_ms) if load.latency_ms else None,
            "reconciled": load.reconciled,
            "functions": {
                name: {"filtered": f.filtered, **f.figures.as_dict()}
                for name, f in (figures.functions.items() if figures else ())
            },
            "stream_problems": list(figures.stream_problems) if figures else [],
            "faults": dataclasses.asdict(load.faults) if load.faults else None,
            "problems": load.problems,
            "memory": {k: list(v) for k, v in load.memory.growth(load.warm_up_s).items()},
            "flat": load.flat,
        }
    return out
