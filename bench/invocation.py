"""``python -m bench invocation``: one invocation's wall time, as Lambda bills it.

The clickstream example's functions (``examples/clickstream``) each handle one batch of
``--records`` user records against the embedded local AWS (moto and osmem-server, started
here), through a proxy that adds ``--latency-ms`` to every request (:mod:`bench.delayproxy`,
in its own process), as in-region AWS calls take about 10 ms. Per function:

* **shardline**, with the overlap of calls switched off (``before``: every call in turn, as
  before issue 17) and on (``after``: sinks at once, bulk calls in waves;
  :mod:`stream.overlap`), the same runner, warm (built once, as at Lambda init; the lookup's
  cache is warm too, as in a warm Lambda);
* **powertools**: a ``BatchProcessor`` record handler written as its users do: per record
  one ``get_item`` for the user (cached per container), one ``put_item``, one index call,
  one ``put_object``. It cannot read KPL aggregates, so those records fail (less work);
* **floor**: the calls on the critical path (the longest chain of calls that must wait for
  each other: the lookup, the dead letters the chain made, the slowest sink counted as its
  sequential calls, the dead letters the sinks made) times the latency, plus the CPU time
  the ``after`` run measured (``time.process_time`` of this process; the proxy and the
  servers run in others).

Each shardline row is also run with the latency set to 0: the wall time it adds, divided by
the latency, is how many round trips were sequential ("trips"). Printed: median wall and CPU
ms, calls by operation, the ratios, and Lambda GB-seconds per
million records (the function's ``memory_mb``; duration rounded up to the ms, as billed),
which ``shardline cost --per-record-ms`` can take. Local servers are not AWS: their own
time per request is in the wall time but not in the floor. So each shardline row also
prints "servers": the larger of the two servers' busy wall time per invocation (the time
during which at least one request was inside moto, or inside osmem-server, as their delay
proxies see it). Moto is one Python process: the calls of a wave wait for each other there
(a conditional ``PutItem`` takes it several ms), while on AWS they are served at once
inside the latency.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from deploy.local.servers import LocalAWS

__all__ = ["critical_path", "gb_seconds_per_million", "main", "run"]

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "clickstream"
USERS = 40  # the example's users: u000..u039


def gb_seconds_per_million(wall_s: float, memory_mb: int, records: int) -> float:
    """Lambda GB-seconds per million records for invocations of ``wall_s`` on ``records``.

    >>> round(gb_seconds_per_million(0.1, 1024, 1000), 1)
    100.0
    """
    billed_s = math.ceil(wall_s * 1000) / 1000
    return billed_s * memory_mb / 1024 * 1_000_000 / max(records, 1)


def critical_path(calls: dict[str, int], letter_phases: int) -> int:
    """The calls that must wait for each other in one invocation of a function, from the
    calls it made by operation: a lookup (its chunks can go at once), the dead-letter
    writes (one per phase: before the sinks and after), and the slowest sink (DynamoDB keys
    and chunks and S3 objects can go at once; OpenSearch reads positions, then writes).

    >>> critical_path({"BatchGetItem": 2, "PutItem": 30, "_mget": 1, "_bulk": 1}, 1)
    4
    """
    lookup = 1 if calls.get("BatchGetItem") else 0
    dynamodb = 1 if calls.get("PutItem") or calls.get("BatchWriteItem") else 0
    search = (1 if calls.get("_mget") else 0) + (1 if calls.get("_bulk") else 0)
    archive = 1 if calls.get("PUT object") else 0
    return lookup + letter_phases + max(dynamodb, search, archive)


def _example_event(records: int) -> dict[str, Any]:
    spec = importlib.util.spec_from_file_location("clickstream_event", EXAMPLE / "make_event.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    event: dict[str, Any] = module.make(records)
    return event


class _Proxy:
    """A :mod:`bench.delayproxy` child process."""

    def __init__(self, upstream: str, latency_ms: float) -> None:
        self.process = subprocess.Popen(  # our own module, fixed arguments
            [sys.executable, "-m", "bench.delayproxy", upstream, str(latency_ms)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        if not self.url:
            msg = "the delay proxy did not start"
            raise SystemExit(msg)

    def calls(self) -> dict[str, int]:
        """The requests since the last look, by operation (and reset them)."""
        from bench.delayproxy import COUNTS_PATH  # noqa: PLC0415

        with urllib.request.urlopen(self.url + COUNTS_PATH, timeout=30) as answer:
            counts: dict[str, int] = json.loads(answer.read())
        return counts

    def server_ms(self) -> float:
        """The server's busy wall time since the last look, in ms (and reset it)."""
        from bench.delayproxy import SERVER_PATH  # noqa: PLC0415

        with urllib.request.urlopen(self.url + SERVER_PATH, timeout=30) as answer:
            busy: float = json.loads(answer.read())["busy_ms"]
        return busy

    def latency(self, ms: float) -> None:
        """Set the delay added to each request from now on."""
        from bench.delayproxy import LATENCY_PATH  # noqa: PLC0415

        with urllib.request.urlopen(f"{self.url}{LATENCY_PATH}{ms:g}", timeout=30) as answer:
            answer.read()

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


def _powertools(plan: dict[str, Any], function: str, search_url: str) -> Callable[..., Any]:
    """The function written by hand with Powertools' ``BatchProcessor``."""
    import boto3  # noqa: PLC0415
    from aws_lambda_powertools.utilities.batch import (  # noqa: PLC0415
        BatchProcessor,
        EventType,
        process_partial_response,
    )
    from opensearchpy import OpenSearch  # noqa: PLC0415

    from sinks.dynamodb import to_attribute  # noqa: PLC0415

    sinks = plan["sinks"]
    orders, archive = sinks["orders"]["table"], sinks["archive"]["bucket"]
    users_table = "clickstream-users"
    ddb, s3 = boto3.client("dynamodb"), boto3.client("s3")
    search = OpenSearch(hosts=[search_url], timeout=60)
    processor = BatchProcessor(event_type=EventType.KinesisDataStreams)
    users: dict[str, Any] = {}  # a warm container's cache, like the lookup's

    def enrich_and_route(record: Any) -> None:
        doc = record.kinesis.data_as_json()
        kind = doc.get("event_type")
        if kind not in ("click", "purchase") or not (doc.get("amount", 0) > 0 or kind == "click"):
            return
        doc["pipeline"] = "clickstream"
        doc["processed_at"] = datetime.now(UTC).isoformat()
        user_id = doc.get("user_id")
        if user_id not in users:
            got = ddb.get_item(TableName=users_table, Key={"user_id": {"S": user_id}})
            users[user_id] = got.get("Item")
        if users[user_id] is not None:
            doc["user"] = {k: next(iter(v.values())) for k, v in users[user_id].items()}
        if kind == "purchase":
            item = {k: to_attribute(v) for k, v in doc.items()}
            ddb.put_item(TableName=orders, Item=item)
        day = datetime.fromtimestamp(record.kinesis.approximate_arrival_timestamp, UTC)
        search.index(index=f"events-{day:%Y.%m.%d}", id=doc["event_id"], body=doc)

    def archive_all(record: Any) -> None:
        arrival = datetime.fromtimestamp(record.kinesis.approximate_arrival_timestamp, UTC)
        key = f"raw/dt={arrival:%Y-%m-%d}/hour={arrival:%H}/{record.kinesis.sequence_number}.json"
        s3.put_object(Bucket=archive, Key=key, Body=record.kinesis.data_as_bytes())

    handler = enrich_and_route if function == "enrich-and-route" else archive_all

    def run(event: dict[str, Any]) -> Any:
        return process_partial_response(
            event=event, record_handler=handler, processor=processor, context=None
        )

    return run


def _setup(stack: LocalAWS, search_url: str) -> dict[str, Any]:
    from deploy.local.servers import provision  # noqa: PLC0415
    from deploy.pipeline.config import load_plan_from_file  # noqa: PLC0415

    plan = load_plan_from_file(
        EXAMPLE / "pipeline.yaml", {**os.environ, "OPENSEARCH_URL": search_url}
    )
    provision(plan, stack.client)
    ddb = stack.client("dynamodb")
    for i in range(USERS):
        item = {"user_id": {"S": f"u{i:03d}"}, "tier": {"S": "gold" if i % 4 == 0 else "basic"}}
        ddb.put_item(TableName="clickstream-users", Item=item)
    return plan


def _timed_once(fn: Callable[[Any], Any], event: Any) -> tuple[float, float, Any]:
    """Wall and CPU seconds of ``fn(event)``, and what it returned."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(event)
    return time.perf_counter() - wall, time.process_time() - cpu, out


def _fresh(event: dict[str, Any], run: int) -> dict[str, Any]:
    """``event`` with later sequence numbers for each run (earlier, for ``run`` below 0, on
    fresh positions too): the same documents as a new batch, so the sinks write them again
    rather than find them written (a replay costs less: conditional puts fail early)."""
    shift = (run + 1_000) * 10**9
    records = []
    for entry in event["Records"]:
        kinesis = {
            **entry["kinesis"],
            "sequenceNumber": str(int(entry["kinesis"]["sequenceNumber"]) + shift),
        }
        records.append({**entry, "kinesis": kinesis})
    return {**event, "Records": records}


def run(records: int, latency_ms: float, repeat: int, powertools_repeat: int) -> dict[str, Any]:
    """Every function's figures: ``before``, ``after``, ``powertools`` and ``floor``."""
    from deploy.local.servers import LocalAWS  # noqa: PLC0415
    from stream.aws import reset_clients  # noqa: PLC0415
    from stream.event import records_from_event  # noqa: PLC0415
    from stream.overlap import overlapping  # noqa: PLC0415
    from stream.runtime import build_runner  # noqa: PLC0415

    event = _example_event(records)
    user_records = len(records_from_event(event))
    report: dict[str, Any] = {"latency_ms": latency_ms, "records": user_records, "functions": {}}
    with ExitStack() as stack_of:
        stack = stack_of.enter_context(LocalAWS())
        stack_of.enter_context(stack.activated())
        aws = _Proxy(stack.endpoint, latency_ms)
        stack_of.callback(aws.close)
        search = _Proxy(stack.opensearch_url, latency_ms)
        stack_of.callback(search.close)
        plan = _setup(stack, search.url)
        os.environ["AWS_ENDPOINT_URL"] = aws.url  # every client of the runtime: via the proxy
        stack_of.callback(reset_clients)
        reset_clients()
        for function, spec in plan["functions"].items():
            runner = build_runner(plan, function, metrics=False)
            figures: dict[str, Any] = {"memory_mb": spec["memory_mb"]}
            for mode, enabled in (("before", False), ("after", True)):
                with overlapping(enabled):
                    runner.handle(_fresh(event, 0 if enabled else -500))  # warm: clients, cache
                    aws.calls(), search.calls(), aws.server_ms(), search.server_ms()
                    runs = [
                        _timed_once(runner.handle, _fresh(event, n + 2 * enabled * repeat))
                        for n in range(1, repeat + 1)
                    ]
                    calls = {**aws.calls(), **search.calls()}
                    busy = {"aws": aws.server_ms() / repeat, "search": search.server_ms() / repeat}
                    for proxy in (aws, search):  # the same again without the latency
                        proxy.latency(0)
                    unlagged = [
                        _timed_once(runner.handle, _fresh(event, n + (2 * enabled + 1) * repeat))
                        for n in range(1, repeat + 1)
                    ]
                    for proxy in (aws, search):
                        proxy.latency(latency_ms)
                        proxy.calls()
                result = runs[-1][2]
                phases = len({d.step.startswith("sink:") for d in result.dead_letters})
                wall_ms = statistics.median(r[0] for r in runs) * 1000
                unlagged_ms = statistics.median(r[0] for r in unlagged) * 1000
                figures[mode] = {
                    "wall_ms": wall_ms,
                    "cpu_ms": min(r[1] for r in runs) * 1000,
                    "calls": {k: v // repeat for k, v in sorted(calls.items())},
                    "letter_phases": phases,
                    "wall_ms_without_latency": unlagged_ms,
                    # the local servers' own time (moto, osmem-server), per invocation: on
                    # AWS that work is inside each call's latency, here it is on top of it
                    "server_busy_ms": busy,
                    "sequential_round_trips": (wall_ms - unlagged_ms) / latency_ms
                    if latency_ms
                    else 0.0,
                }
            handler = _powertools(plan, function, search.url)
            handler(event)  # warm: clients, the user cache
            aws.calls(), search.calls()
            runs = [
                _timed_once(handler, _fresh(event, -n)) for n in range(1, powertools_repeat + 1)
            ]
            calls = {**aws.calls(), **search.calls()}
            figures["powertools"] = {
                "wall_ms": statistics.median(r[0] for r in runs) * 1000,
                "cpu_ms": min(r[1] for r in runs) * 1000,
                "calls": {k: v // powertools_repeat for k, v in sorted(calls.items())},
            }
            after = figures["after"]
            depth = critical_path(after["calls"], after["letter_phases"])
            figures["floor"] = {
                "critical_path_calls": depth,
                "wall_ms": depth * latency_ms + after["cpu_ms"],
                "cpu_ms": after["cpu_ms"],
            }
            for row in ("before", "after", "powertools", "floor"):
                wall_s = figures[row]["wall_ms"] / 1000
                figures[row]["gb_s_per_million"] = gb_seconds_per_million(
                    wall_s, spec["memory_mb"], user_records
                )
            report["functions"][function] = figures
    return report


def _table(report: dict[str, Any]) -> str:
    lines = [
        f"{report['records']} user records per batch, {report['latency_ms']:g} ms per request "
        f"added (python {sys.version.split()[0]})"
    ]
    for function, f in report["functions"].items():
        lines += ["", f"{function} ({f['memory_mb']} MB)"]
        lines.append(
            f"  {'':<22} {'wall ms':>9} {'cpu ms':>8} {'GB-s/M rec':>11} {'at 0 ms':>8} "
            f"{'trips':>6} {'servers':>8}  calls"
        )
        labels = {
            "before": "shardline, in turn",
            "after": "shardline, overlapped",
            "powertools": "powertools",
            "floor": f"floor ({f['floor']['critical_path_calls']} calls deep)",
        }
        for row, label in labels.items():
            r = f[row]
            calls = ", ".join(f"{k} {v}" for k, v in r.get("calls", {}).items())
            at_0 = (
                f"{r['wall_ms_without_latency']:8.1f}"
                if "wall_ms_without_latency" in r
                else " " * 8
            )
            trips = (
                f"{r['sequential_round_trips']:6.1f}" if "sequential_round_trips" in r else " " * 6
            )
            busy = r.get("server_busy_ms")
            servers = f"{max(busy.values()):8.1f}" if busy else " " * 8
            lines.append(
                f"  {label:<22} {r['wall_ms']:>9.1f} {r['cpu_ms']:>8.1f} "
                f"{r['gb_s_per_million']:>11.1f} {at_0} {trips} {servers}  {calls}"
            )
        before, after = f["before"]["wall_ms"], f["after"]["wall_ms"]
        lines.append(
            f"  before/after {before / after:.2f}x; after/floor "
            f"{after / f['floor']['wall_ms']:.2f}x (target <= 1.25x); powertools/after "
            f"{f['powertools']['wall_ms'] / after:.1f}x (target >= 10x); sequential round "
            f"trips (wall added by the latency / latency) "
            f"{f['after']['sequential_round_trips']:.1f} (target <= 4)"
        )
        busy = f["after"]["server_busy_ms"]
        lines.append(
            f"  overlapped, the local servers were busy {busy['aws']:.0f} ms (moto) and "
            f"{busy['search']:.0f} ms (osmem-server) of the {after:.0f} ms: work that AWS does "
            "inside each call's latency, and the floor leaves out"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run and print the table (or JSON)."""
    parser = argparse.ArgumentParser(prog="python -m bench invocation", description=__doc__)
    parser.add_argument("--records", type=int, default=500, help="user records per batch")
    parser.add_argument("--latency-ms", type=float, default=10.0, help="added per request")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of shardline")
    parser.add_argument("--powertools-repeat", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = run(args.records, args.latency_ms, args.repeat, args.powertools_repeat)
    print(json.dumps(report, indent=2) if args.json else _table(report))
    return 0
