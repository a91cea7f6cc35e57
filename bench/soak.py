"""``python -m bench soak``: the reliability figures, and the example under steady load.

Two parts, both on the local stack, and ``RELIABILITY.md`` at the project root written from
what they measured (``make soak`` runs the defaults):

* **Scenarios**: the end-to-end fault scenarios (``tests/e2e/test_faults.py``) and the
  stateful test (``tests/e2e/test_stateful_path.py``) run by pytest with
  ``SHARDLINE_E2E_SCALE=--scale`` (bigger than in CI); each test appends its reconciliation
  (records produced, delivered, dead-lettered, duplicates seen and removed, order
  violations, read back from the stores) to a report file, which becomes the table.
* **Load**: the bundled example (``examples/clickstream/pipeline.yaml``), deployed to the
  local AWS and run from its deployed mappings in Lambda runtime workers, exactly as
  ``shardline demo`` runs it (:func:`deploy.local.dev.run_dev`), but fed at a steady ``--rate``
  for ``--minutes`` with the demo's synthetic traffic, then run until idle. Every
  ``--sample-s`` the resident memory (``VmRSS`` of ``/proc/PID/status``) of this process,
  which is the runner (the mappings and the producer; moto and OpenSearch run in their own
  processes), and of every Lambda runtime worker is sampled. Reported: the rate held, the
  time to drain after the last record, latency from stream arrival to the DynamoDB write
  (p50/p99, over the example's order items), the demo's reconciliation (per function,
  produced = filtered + delivered + dead-lettered, read back from the stores), and memory
  growth after warm-up (the first quarter of the load, at least 10 s): the median of the
  last three samples against the median of the first three after warm-up; flat means under
  10%. A worker replaced during the run (after a timeout) is measured over its own life.

The exit status is 1 when a scenario failed, a reconciliation does not hold, or memory grew
10% or more; RELIABILITY.md is written either way.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from deploy.local.demo import DemoReport

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
GROWTH_LIMIT = 0.10
_TICK_S = 0.1
#: Caught up this long counts as drained: longer than the mapping's idle poll (1 s), so a
#: read made after the last put found nothing left.
_IDLE_S = 1.5


# -- memory --------------------------------------------------------------------------------


def read_rss_kib(pid: int) -> int | None:
    """A process's resident set size in KiB (``VmRSS``), or None when it is gone.

    >>> read_rss_kib(os.getpid()) > 0
    True
    """
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def runtime_workers(parent: int | None = None) -> list[int]:
    """Pids of the Lambda runtime workers (awslambdaric) whose parent is ``parent`` (this
    process by default)."""
    me = os.getpid() if parent is None else parent
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
            if int(fields[1]) != me:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                if b"awslambdaric" in cmdline.read():
                    found.append(int(entry))
        except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
            continue
    return found


@dataclass
class Memory:
    """RSS samples: per process label, (seconds since start, KiB)."""

    samples: dict[str, list[tuple[float, int]]] = field(default_factory=dict)

    def sample(self, elapsed: float) -> None:
        workers = ((f"worker {p}", p) for p in runtime_workers())
        for label, pid in [("runner", os.getpid()), *workers]:
            rss = read_rss_kib(pid)
            if rss is not None:
                self.samples.setdefault(label, []).append((elapsed, rss))

    def growth(self, warm_up_s: float) -> dict[str, tuple[int, int, float]]:
        """Per process alive past warm-up with six samples or more after it: (KiB after
        warm-up, KiB at the end, growth as a fraction)."""
        out = {}
        for label, samples in self.samples.items():
            after = [kib for t, kib in samples if t >= warm_up_s]
            if len(after) < 6:
                continue
            start, end = statistics.median(after[:3]), statistics.median(after[-3:])
            out[label] = (int(start), int(end), end / start - 1.0)
        return out


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


# -- load ----------------------------------------------------------------------------------


@dataclass
class LoadReport:
    """What the load part measured."""

    minutes: float
    rate: float
    produced: int = 0
    produce_seconds: float = 0.0
    produced_at: float = 0.0  # monotonic time of the last put
    drain_seconds: float = 0.0  # from the last put until every mapping stayed caught up
    demo: DemoReport | None = None
    memory: Memory = field(default_factory=Memory)
    warm_up_s: float = 0.0

    @property
    def rate_held(self) -> float:
        """Records per second the producer put, over the producing time."""
        return self.produced / self.produce_seconds if self.produce_seconds else 0.0

    @property
    def reconciled(self) -> bool:
        return self.demo is not None and self.demo.reconciled

    @property
    def flat(self) -> bool:
        growth = self.memory.growth(self.warm_up_s)
        return bool(growth) and all(g < GROWTH_LIMIT for _, _, g in growth.values())


def _steady_source(
    *,
    records: list[tuple[bytes, str, bool]],
    corrupt: list[tuple[bytes, str]],
    stream: str,
    client: Callable[[str], Any],
    rate: float,
    seconds: float,
    load: LoadReport,
) -> Callable[[Callable[[int], None]], int]:
    """A producing target for ``run_dev``: ``records`` at ``rate`` per second for
    ``seconds`` (the KPL-aggregated ones through an aggregating producer), the corrupt
    aggregates spread over the run; returns how many were put."""

    def target(progress: Callable[[int], None]) -> int:
        from stream.producer import Producer  # noqa: PLC0415

        kinesis = client("kinesis")
        every = max(1, len(records) // (len(corrupt) + 1))
        sent = put = 0
        started = time.monotonic()
        with (
            Producer(stream, kinesis) as plain,
            Producer(stream, kinesis, aggregate=True) as aggregating,
        ):
            while sent < len(records):
                elapsed = time.monotonic() - started
                due = min(len(records), int(elapsed * rate) + 1)
                while sent < due:
                    data, key, aggregated = records[sent]
                    (aggregating if aggregated else plain).put(data, key)
                    progress(len(data))
                    sent += 1
                    put += 1
                    if sent % every == 0 and corrupt:
                        bad, bad_key = corrupt.pop()
                        plain.put(bad, bad_key)
                        put += 1
                for producer in (plain, aggregating):
                    result = producer.flush()
                    if result.failed:
                        msg = f"{len(result.failed)} records not put: {result.failed[0].reason}"
                        raise RuntimeError(msg)
                if elapsed < seconds:
                    time.sleep(_TICK_S)  # a steady rate: put what is due, ten times a second
            for bad, bad_key in corrupt:
                plain.put(bad, bad_key)
                put += 1
            if plain.flush().failed:
                raise RuntimeError("corrupt aggregates not put")
        load.produced_at = time.monotonic()
        load.produce_seconds = load.produced_at - started
        load.produced = put
        return put

    return target


def run_load(
    minutes: float, rate: float, sample_s: float, log: Callable[[str], None]
) -> LoadReport:
    """The example at ``rate`` records/s for ``minutes`` on a fresh local stack."""
    from deploy.local import demo  # noqa: PLC0415
    from deploy.local.dev import LOG_DIR, run_dev  # noqa: PLC0415
    from deploy.local.servers import LocalAWS  # noqa: PLC0415
    from deploy.pipeline.config import load_plan_from_file  # noqa: PLC0415
    from stream.aws import reset_clients  # noqa: PLC0415

    seconds = minutes * 60.0
    load = LoadReport(minutes, rate, warm_up_s=max(10.0, seconds / 4))
    traffic = demo.synthetic_traffic(max(1, int(rate * seconds)))
    logs = Path(LOG_DIR)
    before = {p.name: p.stat().st_size for p in logs.glob("*.log")} if logs.is_dir() else {}
    stack = LocalAWS().start()
    try:
        with stack.activated():
            reset_clients()
            client = stack.client
            plan = load_plan_from_file(demo.EXAMPLE / "pipeline.yaml")  # ${OPENSEARCH_URL}
            source = _steady_source(
                records=list(traffic.records), corrupt=list(traffic.corrupt_aggregates),
                stream=plan["stream"]["name"], client=client, rate=rate, seconds=seconds,
                load=load,
            )  # fmt: skip
            started = time.monotonic()
            next_sample, idle_since = [0.0], [0.0]

            def tick(local: Any, producer: Any) -> None:
                now = time.monotonic()
                if now - started >= next_sample[0]:
                    next_sample[0] = now - started + sample_s
                    load.memory.sample(now - started)
                done = producer is not None and not producer.is_alive() and load.produced_at
                if not (done and all(run.mapping.caught_up for run in local.runs)):
                    idle_since[0] = 0.0
                elif not idle_since[0]:
                    idle_since[0] = now
                elif now - idle_since[0] >= _IDLE_S and not load.drain_seconds:
                    load.drain_seconds = max(0.001, idle_since[0] - load.produced_at)

            dev = run_dev(
                plan, client, source=source, prepare=lambda: demo._seed_users(plan, client),
                until_idle=2.0, log=log, on_tick=tick,
            )  # fmt: skip
            report = demo.DemoReport(dev=dev, produced=traffic.produced)
            report.filtered = demo._filtered_from_metrics(logs, list(plan["functions"]), before)
            demo._read_back(plan, client, report)
            demo._reconcile(plan, report)
            report.seconds = dev.seconds
            load.demo = report
    finally:
        stack.stop()
        reset_clients()
    return load


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
    if load is not None:
        out += _load_section(load)
    text = "\n".join(out).rstrip() + "\n"
    path.write_text(text)
    return text


def _load_section(load: LoadReport) -> list[str]:
    report = load.demo
    out = [
        "## Load: the example at a steady rate",
        "",
        "`examples/clickstream/pipeline.yaml` deployed to the local AWS and run from its",
        "deployed mappings in Lambda runtime workers (as `shardline demo`), fed at a steady",
        f"rate of {load.rate:g} records/s for {load.minutes:g} minute(s)"
        + (" (a short run: `make soak` runs 10)" if load.minutes < 10 else "")
        + " with the demo's",
        "synthetic traffic (clicks, views, purchases; 10% KPL-aggregated; 2% not JSON;",
        "corrupt aggregates), then run until idle.",
        "",
        "| Figure | Value |",
        "|---|---|",
        f"| records produced | {load.produced:,} |",
        f"| rate held | {load.rate_held:.1f} records/s (target {load.rate:g}) |",
        f"| drained after the last record | {load.drain_seconds:.1f} s |",
    ]
    if report is not None and report.latency_ms:
        p50, p99 = report.latency_ms
        out.append(f"| stream arrival → DynamoDB write | p50 {p50:.0f} ms, p99 {p99:.0f} ms |")
    if report is not None:
        for what, left, right in report.checks:
            out.append(f"| {what} | {left:,} = {right:,}: {'yes' if left == right else 'NO'} |")
        for function, reasons in sorted(report.dead_by_function.items()):
            text = ", ".join(f"{reason} x{n}" for reason, n in sorted(reasons.items()))
            out.append(f"| dead letters of {function} | {text} |")
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
    parser.add_argument("--no-scenarios", action="store_true", help="the load part only")
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
    load = None if args.no_load else run_load(args.minutes, args.rate, args.sample_s, log)
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
        report = load.demo
        out["load"] = {
            "produced": load.produced,
            "rate_target": load.rate,
            "rate_held": round(load.rate_held, 1),
            "drain_seconds": round(load.drain_seconds, 1),
            "latency_ms": list(report.latency_ms) if report and report.latency_ms else None,
            "reconciled": load.reconciled,
            "memory": {k: list(v) for k, v in load.memory.growth(load.warm_up_s).items()},
            "flat": load.flat,
        }
    return out
