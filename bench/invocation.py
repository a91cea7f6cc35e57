"""``python -m bench invocation``: one invocation's wall time, as Lambda bills it.

The clickstream example's functions (``examples/clickstream``) each handle one batch of
``--records`` user records against the embedded local AWS (moto and osmem-server, started
here), through a proxy that adds ``--latency-ms`` to every request (:mod:`bench.delayproxy`,
in its own process), as in-region AWS calls take about 10 ms. Per function:

* **shardline**, with the overlap of calls switched off (``before``: every call in turn, as
  before issue 17) and on (``after``: sinks at once, bulk calls in waves;
  :mod:`stream.overlap`), the same runner, warm (built once, as at Lambda init; the lookup's
  cache is warm too, as in a warm Lambda);
* **powertools**: a ``BatchProcessor`` record handler written as its users do, per record:
  ``enrich-and-route``, one ``get_item`` for the user (cached per container), one
  ``put_item`` per purchase, one index call; ``archive-all``, one ``put_object``;
  ``purchases-per-minute``, per purchase a running total of its user's minute (an
  ``update_item`` that adds, a conditional one for the maximum; by arrival, not by
  ``ts``: no lateness, no closing, no result).
  It cannot read KPL aggregates, so those records fail (less work);
* **floor**: the calls on the critical path (:func:`critical_path`: the calls that must
  wait for each other: the lookup, the window's state read and commit, the dead letters the
  chain made, the slowest sink counted as its sequential calls, the dead letters the sinks
  made) times the latency, plus the CPU time the ``after`` run measured
  (``time.process_time`` of this process; the proxies and the servers run in others). The
  invocation as AWS would serve it: a wave's calls at once, each inside the latency;
* **local floor**: the floor plus the local servers' own time on the calls of the critical
  path (per step, its longest branch), each call's time as its proxy measured it in the
  ``before`` run (from sending it on to reading its answer back, every call alone at its
  server), added up: a local server serves a wave's calls one after another (moto is one
  Python process), which AWS does inside each call's latency. Like the floor it adds the
  CPU time to the waiting, though the client's work on one call can go on while a server
  works on another: a run can come in under it.

Columns of a shardline row (all medians over ``--repeat`` runs, CPU the least):

* **wall ms**, **cpu ms** at ``--latency-ms``; **GB-s/M**: Lambda GB-seconds per million
  records (the function's ``memory_mb``; duration rounded up to the ms, as billed), which
  ``shardline cost --per-record-ms`` can take;
* **at 0 ms**: the wall time with no latency added;
* **trips**: the least-squares slope of wall time over latency, fitted on every run at 0,
  ``--latency-ms`` and twice that: the wall time each ms of latency adds, that is how many
  round trips were sequential as the wall time sees it. Where the local servers' queue is
  longer than the latency, the latency hides in it and the slope reads low (or is noise);
* **depth**: the longest chain of calls of the invocation each of which reached its proxy
  after the one before it was answered (:func:`bench.timeline.depth`): the sequential
  round trips as the proxies saw them, whatever the servers' speed. It counts what the
  invocation did: a call that went after another only because the client was slow to send
  it counts too;
* **servers**: the larger of the two servers' busy wall time per invocation (the time
  during which at least one request was inside moto, or inside osmem-server).

Then, per function: the ratios of ``after`` to both floors (target at most 1.25x), of
Powertools to ``after`` (target at least 10x), and trips and depth (target at most 4).
``--json`` adds the service time per operation, the wall time per latency and, with
``--timeline``, the last overlapped run's calls with their times.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from contextlib import ExitStack
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.timeline import Call, depth, service_ms, slope

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

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


#: One step of an invocation's critical path: the branches that run at once in it (the
#: step waits for the slowest), each branch the operations of calls made one after another.
Step = list[tuple[str, ...]]


def critical_path(
    calls: dict[str, int], letter_phases: int, *, window: bool | None = None
) -> list[Step]:
    """The calls of one invocation that must wait for each other, from the calls it made
    by operation: the steps in turn, each step the branches that may go at once.

    The steps: the lookup's ``BatchGetItem`` (its chunks can go at once), the window step's
    state (read, committed with ``TransactWriteItems`` or ``PutItem`` before the batch's
    records go on), the dead letters of the chain (before the sinks: the ordering policy
    decides what they hold back from their fate), the sinks (at once; DynamoDB's keys and
    chunks and S3's objects each in one wave, OpenSearch reading positions with ``_mget``
    before it writes with ``_bulk``), the dead letters of the sinks. A window function
    writes its state table with ``PutItem`` too, so ``PutItem`` counts as the window's
    commit: with one lane its window items, then its shard item (two ``PutItem`` in turn
    when it made more than one: the shard item waits for the windows it commits).

    ``window``: whether the function has a window step with its state in DynamoDB
    (``None``: when it made a ``GetItem``). A warm batch reads that state with one
    ``BatchGetItem`` (the shard item's revision and the list of shards), which is then
    not the lookup's; a first batch reads the list with a ``GetItem``.

    >>> critical_path({"BatchGetItem": 2, "PutItem": 30, "_mget": 1, "_bulk": 1}, 1)
    [[('BatchGetItem',)], [('SendMessageBatch',)], [('PutItem',), ('_mget', '_bulk')]]
    >>> critical_path({"GetItem": 1, "PutItem": 1}, 0)
    [[('GetItem', 'PutItem')]]
    >>> critical_path({"BatchGetItem": 1, "PutItem": 2}, 1, window=True)
    [[('BatchGetItem', 'PutItem', 'PutItem')], [('SendMessageBatch',)]]
    """
    steps: list[Step] = []
    if window is None:
        window = bool(calls.get("GetItem"))
    read = "GetItem" if calls.get("GetItem") else "BatchGetItem"
    if calls.get("BatchGetItem", 0) > (window and read == "BatchGetItem"):
        steps.append([("BatchGetItem",)])
    if window:
        # the windows' items, then the shard item (with a quiet close: in a transaction)
        moved = bool(calls.get("TransactWriteItems"))
        puts = min(calls.get("PutItem", 0), 1 if moved else 2)
        commit = ("PutItem",) * puts + ("TransactWriteItems",) * moved
        steps.append([(read, *commit)])
    if letter_phases:
        steps.append([("SendMessageBatch",)])
    branches: Step = []
    if calls.get("BatchWriteItem") or (calls.get("PutItem") and not window):
        branches.append(("BatchWriteItem" if calls.get("BatchWriteItem") else "PutItem",))
    search = tuple(op for op in ("_mget", "_bulk") if calls.get(op))
    if search:
        branches.append(search)
    if calls.get("PUT object"):
        branches.append(("PUT object",))
    if branches:
        steps.append(branches)
    if letter_phases > 1:
        steps.append([("SendMessageBatch",)])
    return steps


@functools.cache
def _event_maker() -> Callable[..., dict[str, Any]]:
    """The example's ``make_event.make``, loaded once (a batch per timed run asks for it)."""
    spec = importlib.util.spec_from_file_location("clickstream_event", EXAMPLE / "make_event.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    make: Callable[..., dict[str, Any]] = module.make
    return make


def _example_event(records: int, day: int = 0) -> dict[str, Any]:
    """The clickstream example's event of ``records`` records, its event times ``day``
    days after the example's (the same documents otherwise)."""
    on = date(2026, 3, 1) + timedelta(days=day)
    return _event_maker()(records, day=on.isoformat())


class _Proxy:
    """A :mod:`bench.delayproxy` child process in front of one server (``name``)."""

    def __init__(self, upstream: str, latency_ms: float, name: str) -> None:
        self.name = name
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

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as answer:
            return json.loads(answer.read() or b"null")

    def log(self) -> list[Call]:
        """The calls since the last look, in arrival order (and forget them)."""
        from bench.delayproxy import LOG_PATH  # noqa: PLC0415

        return [tuple(c) for c in self._get(LOG_PATH)]  # type: ignore[misc]

    def server_ms(self) -> float:
        """The server's busy wall time since the last look, in ms (and reset it)."""
        from bench.delayproxy import SERVER_PATH  # noqa: PLC0415

        busy: float = self._get(SERVER_PATH)["busy_ms"]
        return busy

    def latency(self, ms: float) -> None:
        """Set the delay added to each request from now on."""
        from bench.delayproxy import LATENCY_PATH  # noqa: PLC0415

        self._get(f"{LATENCY_PATH}{ms:g}")

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


def _per_minute(ddb: Any, table: str) -> Callable[[Any], None]:
    """The windowed function as its users write it: a running total per user and minute,
    updated per record (no lateness, no closing)."""

    def purchases_per_minute(record: Any) -> None:
        doc = record.kinesis.data_as_json()
        if doc.get("event_type") != "purchase":
            return
        arrival = datetime.fromtimestamp(record.kinesis.approximate_arrival_timestamp, UTC)
        ts = datetime.fromisoformat(doc["ts"]) if isinstance(doc.get("ts"), str) else arrival
        minute = ts.replace(second=0, microsecond=0)
        window_id = f"purchases-per-minute/{doc['user_id']}/{minute:%Y-%m-%dT%H:%M:%SZ}"
        key = {"window_id": {"S": window_id}}
        amount = {"N": str(doc.get("amount", 0))}
        ddb.update_item(
            TableName=table,
            Key=key,
            UpdateExpression="ADD purchases :one, revenue :amount",
            ExpressionAttributeValues={":one": {"N": "1"}, ":amount": amount},
        )
        with contextlib.suppress(ddb.exceptions.ConditionalCheckFailedException):
            ddb.update_item(  # a bigger one may be there
                TableName=table,
                Key=key,
                UpdateExpression="SET biggest = :amount",
                ConditionExpression="attribute_not_exists(biggest) OR biggest < :amount",
                ExpressionAttributeValues={":amount": amount},
            )

    return purchases_per_minute


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

    per_minute = _per_minute(ddb, sinks["per-minute"]["table"])
    handlers = {"enrich-and-route": enrich_and_route, "purchases-per-minute": per_minute}
    handler = handlers.get(function, archive_all)

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
    rather than find them written (a replay costs less: conditional puts fail early). The
    shift is past the event's span of positions (a clickstream event of 501 records spans
    about 4 * 10**11), else a run's records fell among the previous run's and a window
    step took most of them for redeliveries (it skipped them: the window measured little)."""
    seqs = [int(entry["kinesis"]["sequenceNumber"]) for entry in event["Records"]]
    span = 10 ** len(str(max(seqs) - min(seqs) + 1))
    shift = (run + 1_000) * span
    records = []
    for entry in event["Records"]:
        kinesis = {
            **entry["kinesis"],
            "sequenceNumber": str(int(entry["kinesis"]["sequenceNumber"]) + shift),
        }
        records.append({**entry, "kinesis": kinesis})
    return {**event, "Records": records}


def _measure(
    fn: Callable[[Any], Any],
    events: Iterator[dict[str, Any]],
    proxies: Sequence[_Proxy],
    repeat: int,
) -> list[tuple[float, float, Any, list[Call]]]:
    """``repeat`` timed invocations of ``fn``, each on the next of ``events``: wall and CPU
    seconds, what ``fn`` returned, and the calls the proxies saw of it (in arrival order)."""
    runs = []
    for _ in range(repeat):
        wall, cpu, out = _timed_once(fn, next(events))
        calls = sorted((c for proxy in proxies for c in proxy.log()), key=lambda c: c[1])
        runs.append((wall, cpu, out, calls))
    return runs


def _mode(
    runner: Any,
    events: Iterator[dict[str, Any]],
    proxies: Sequence[_Proxy],
    latencies: Sequence[float],
    repeat: int,
) -> dict[str, Any]:
    """One shardline row: ``repeat`` runs at each of ``latencies`` (the first is the one the
    row is about: its wall, CPU, calls, depth, service and busy times)."""
    by_latency: dict[float, list[tuple[float, float, Any, list[Call]]]] = {}
    busy: dict[str, float] = {}
    for latency in latencies:
        for proxy in proxies:
            proxy.latency(latency)
            proxy.log(), proxy.server_ms()  # what came before is not this row's
        by_latency[latency] = _measure(runner.handle, events, proxies, repeat)
        if latency == latencies[0]:
            busy = {p.name: p.server_ms() / repeat for p in proxies}
    for proxy in proxies:
        proxy.latency(latencies[0])
    runs = by_latency[latencies[0]]
    result = runs[-1][2]
    calls: Counter[str] = Counter(c[0] for run in runs for c in run[3])
    services = [service_ms(run[3]) for run in runs]
    points = [(lat, r[0] * 1000) for lat, rs in by_latency.items() for r in rs]
    return {
        "wall_ms": statistics.median(r[0] for r in runs) * 1000,
        "cpu_ms": min(r[1] for r in runs) * 1000,
        "calls": {k: v // repeat for k, v in sorted(calls.items())},
        "letter_phases": len({d.step.startswith("sink:") for d in result.dead_letters}),
        "wall_ms_by_latency": {
            f"{lat:g}": statistics.median(r[0] for r in rs) * 1000
            for lat, rs in sorted(by_latency.items())
        },
        # the slope of wall time over latency, fitted on every run at every latency: how
        # many round trips were sequential, as the wall time sees it
        "sequential_round_trips": slope(points),
        # the longest chain of calls each sent after the one before was answered, as the
        # proxies saw them (median over the runs at the row's latency)
        "observed_depth": statistics.median(depth(run[3]) for run in runs),
        # the server's time on the calls of each operation, added up (median over the runs)
        "service_ms": {
            op: statistics.median(s.get(op, 0.0) for s in services)
            for op in sorted({op for s in services for op in s})
        },
        # the local servers' own time (moto, osmem-server), per invocation: on AWS that
        # work is inside each call's latency, here it is on top of it
        "server_busy_ms": busy,
        "timeline": [
            [c[0], *(round((t - runs[-1][3][0][1]) * 1000, 2) for t in c[1:])] for c in runs[-1][3]
        ],
    }


def run(  # noqa: PLR0917  # the command's options
    records: int,
    latency_ms: float,
    repeat: int,
    powertools_repeat: int,
    timeline: bool = False,
    functions: Sequence[str] = (),
) -> dict[str, Any]:
    """Every function's figures: ``before``, ``after``, ``powertools``, ``floor`` and
    ``local_floor`` (with ``timeline``, ``after`` has the calls of its last run at the
    row's latency, in ms from the first call's arrival)."""
    from deploy.local.servers import LocalAWS  # noqa: PLC0415
    from stream.aws import reset_clients  # noqa: PLC0415
    from stream.event import records_from_event  # noqa: PLC0415
    from stream.overlap import overlapping  # noqa: PLC0415
    from stream.runtime import build_runner  # noqa: PLC0415

    event = _example_event(records)
    user_records = len(records_from_event(event))
    latencies = [latency_ms, 0.0, 2 * latency_ms] if latency_ms else [0.0]
    report: dict[str, Any] = {
        "latency_ms": latency_ms,
        "latencies_ms": latencies,
        "records": user_records,
        "functions": {},
    }
    with ExitStack() as stack_of:
        stack = stack_of.enter_context(LocalAWS())
        stack_of.enter_context(stack.activated())
        aws = _Proxy(stack.endpoint, latency_ms, "aws")
        stack_of.callback(aws.close)
        search = _Proxy(stack.opensearch_url, latency_ms, "search")
        stack_of.callback(search.close)
        proxies = (aws, search)
        plan = _setup(stack, search.url)
        os.environ["AWS_ENDPOINT_URL"] = aws.url  # every client of the runtime: via the proxy
        stack_of.callback(reset_clients)
        reset_clients()
        # every batch at new positions, its event times a day after the batch before: new
        # windows for the window step, which closes the last batch's (the same records
        # again at the same times were all late: the window step measured next to nothing)
        later = (_fresh(_example_event(records, n + 1), n) for n in itertools.count())
        for function, spec in plan["functions"].items():
            if functions and function not in functions:
                continue
            runner = build_runner(plan, function, metrics=False)
            figures: dict[str, Any] = {"memory_mb": spec["memory_mb"], "window": any(
                p.get("window", {}).get("state") == "dynamodb" for p in spec["processors"]
            )}  # fmt: skip
            for mode, enabled in (("before", False), ("after", True)):
                with overlapping(enabled):
                    runner.handle(next(later))  # warm: clients, cache
                    figures[mode] = _mode(runner, later, proxies, latencies, repeat)
                if not timeline or not enabled:
                    del figures[mode]["timeline"]
            handler = _powertools(plan, function, search.url)
            handler(event)  # warm: clients, the user cache
            for proxy in proxies:
                proxy.log()
            earlier = (_fresh(event, -n) for n in itertools.count(1))
            runs = _measure(handler, earlier, proxies, powertools_repeat)
            calls: Counter[str] = Counter(c[0] for r in runs for c in r[3])
            figures["powertools"] = {
                "wall_ms": statistics.median(r[0] for r in runs) * 1000,
                "cpu_ms": min(r[1] for r in runs) * 1000,
                "calls": {k: v // powertools_repeat for k, v in sorted(calls.items())},
            }
            figures.update(floors(figures, latency_ms))
            for row in ("before", "after", "powertools", "floor", "local_floor"):
                wall_s = figures[row]["wall_ms"] / 1000
                figures[row]["gb_s_per_million"] = gb_seconds_per_million(
                    wall_s, spec["memory_mb"], user_records
                )
            report["functions"][function] = figures
    return report


def floors(figures: dict[str, Any], latency_ms: float) -> dict[str, dict[str, Any]]:
    """The ``floor`` and ``local_floor`` rows, from a function's ``before`` and ``after``.

    ``floor``: the calls on the critical path (:func:`critical_path`, from the ``after``
    calls; per step, its longest branch) times the latency, plus the ``after`` CPU time:
    the invocation on AWS, where a wave's calls are served at once inside the latency.
    ``local_floor``: the floor plus, per step, the local server's time on every call of the
    step's longest branch (by this measure), as the ``before`` run measured it (every call
    in turn, so each alone at its server), added up: a local server serves a wave's calls
    one after another (moto is one Python process), so their service times add up on top
    of the latency. Like the floor, it adds the CPU time to the waiting (the client's work
    on one call can go on while a server works on another: a run can come in under it).

    >>> before = {"service_ms": {"PutItem": 4.0, "SendMessageBatch": 2.0, "_mget": 1.0}}
    >>> after = {"calls": {"PutItem": 9, "SendMessageBatch": 1, "_mget": 1, "_bulk": 1},
    ...          "letter_phases": 1, "cpu_ms": 5.0}
    >>> rows = floors({"before": before, "after": after}, 10)
    >>> rows["floor"]["wall_ms"], rows["local_floor"]["wall_ms"]
    (35.0, 38.0)
    """
    after, service = figures["after"], figures["before"]["service_ms"]
    steps = critical_path(after["calls"], after["letter_phases"], window=figures.get("window"))
    calls = sum(max(len(branch) for branch in step) for step in steps)
    served = [
        max(sum(latency_ms + service.get(op, 0.0) for op in branch) for branch in step)
        - latency_ms * max(len(branch) for branch in step)
        for step in steps
    ]
    floor = calls * latency_ms + after["cpu_ms"]
    return {
        "floor": {
            "critical_path_calls": calls,
            "steps": [[list(branch) for branch in step] for step in steps],
            "wall_ms": floor,
            "cpu_ms": after["cpu_ms"],
        },
        "local_floor": {
            "critical_path_calls": calls,
            "service_ms": [round(ms, 3) for ms in served],
            "wall_ms": floor + sum(served),
            "cpu_ms": after["cpu_ms"],
        },
    }


def _table(report: dict[str, Any]) -> str:  # one table, one frame
    lat = report["latency_ms"]
    others = [f"{x:g}" for x in report["latencies_ms"][1:]]
    lines = [
        f"{report['records']} user records per batch, {lat:g} ms per request added "
        f"(also run at {' and '.join(others) or 'no other'} ms for the trips; waves of up to "
        f"{report.get('item_wave_width', '?')} one-item calls; python {sys.version.split()[0]})"
    ]
    for function, f in report["functions"].items():
        lines += ["", f"{function} ({f['memory_mb']} MB)"]
        lines.append(
            f"  {'':<26} {'wall ms':>8} {'cpu ms':>7} {'GB-s/M':>7} {'at 0 ms':>8} "
            f"{'trips':>5} {'depth':>5} {'servers':>7}  calls"
        )
        deep = f["floor"]["critical_path_calls"]
        labels = {
            "before": "shardline, in turn",
            "after": "shardline, overlapped",
            "powertools": "powertools",
            "floor": f"floor ({deep} calls deep)",
            "local_floor": "local floor (+ service)",
        }
        for row, label in labels.items():
            r = f[row]
            calls = ", ".join(f"{k} {v}" for k, v in r.get("calls", {}).items())
            if row == "local_floor":
                calls = "service ms per step: " + ", ".join(f"{ms:.1f}" for ms in r["service_ms"])
            if row == "floor":
                calls = " -> ".join(" | ".join("+".join(b) for b in step) for step in r["steps"])
            by = r.get("wall_ms_by_latency", {})
            at_0 = f"{by['0']:8.1f}" if "0" in by else " " * 8
            trips = f"{r['sequential_round_trips']:5.1f}" if "sequential_round_trips" in r else ""
            seen = f"{r['observed_depth']:5.0f}" if "observed_depth" in r else ""
            busy = r.get("server_busy_ms")
            servers = f"{max(busy.values()):7.1f}" if busy else ""
            lines.append(
                f"  {label:<26} {r['wall_ms']:>8.1f} {r['cpu_ms']:>7.1f} "
                f"{r['gb_s_per_million']:>7.1f} {at_0} {trips:>5} {seen:>5} {servers:>7}  "
                f"{calls}"
            )
        before, after = f["before"]["wall_ms"], f["after"]["wall_ms"]
        floor, local = f["floor"]["wall_ms"], f["local_floor"]["wall_ms"]
        a = f["after"]
        lines.append(
            f"  after/floor {after / floor:.2f}x, after/local floor {after / local:.2f}x "
            f"(target <= 1.25x); powertools/after {f['powertools']['wall_ms'] / after:.1f}x "
            f"(target >= 10x); trips {a['sequential_round_trips']:.1f}, depth "
            f"{a['observed_depth']:.0f} (target <= 4); before/after {before / after:.2f}x"
        )
        busy = a["server_busy_ms"]
        lines.append(
            f"  overlapped at {lat:g} ms, the local servers were busy {busy['aws']:.0f} ms "
            f"(moto) and {busy['search']:.0f} ms (osmem-server) of the {after:.0f} ms"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run and print the table (or JSON)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench invocation",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--records", type=int, default=500, help="user records per batch")
    parser.add_argument("--latency-ms", type=float, default=10.0, help="added per request")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of shardline")
    parser.add_argument("--powertools-repeat", type=int, default=1)
    parser.add_argument(
        "--timeline", action="store_true", help="with --json: the last overlapped run's calls"
    )
    parser.add_argument(
        "--function", action="append", default=[], help="only this function (repeatable)"
    )
    parser.add_argument(
        "--item-wave-width",
        type=int,
        help="calls of one item in a wave (DynamoDB latest's keys; default "
        "stream.overlap.ITEM_WAVE_WIDTH, at most that: the call pool's size)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from stream import overlap  # noqa: PLC0415

    width = overlap.ITEM_WAVE_WIDTH
    if args.item_wave_width is not None:
        overlap.ITEM_WAVE_WIDTH = max(1, min(args.item_wave_width, width))
    used = overlap.ITEM_WAVE_WIDTH
    try:
        report = run(
            args.records,
            args.latency_ms,
            args.repeat,
            args.powertools_repeat,
            args.timeline,
            args.function,
        )
    finally:
        overlap.ITEM_WAVE_WIDTH = width
    report["item_wave_width"] = used
    print(json.dumps(report, indent=2) if args.json else _table(report))
    return 0
