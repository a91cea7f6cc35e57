"""``shardline demo``: the clickstream example, end to end, on the embedded local AWS.

It is ``shardline dev`` on the bundled example with synthetic traffic: the example is
deployed to the local moto server with the real deploy code, the user table its lookup
reads is seeded, and a few tens of thousands of events (clicks, views and purchases of a
few hundred users; some KPL-aggregated; a few percent malformed: text that is not JSON, and
aggregates with a bad checksum) are produced while every function runs from its deployed
event source mapping in Lambda runtime workers.

The summary is read back from the stores, not from the runner's counters: items in
DynamoDB, documents in OpenSearch, lines in the S3 archive, dead letters in the queue by
reason. What a filter dropped leaves nothing in a store; it is read from the functions'
CloudWatch metrics (the EMF lines in ``.shardline/logs``), as one would in AWS; what a
function's FilterCriteria dropped (``filter_pushdown: true``) never reached it, and is
read from its event source mapping's counters (in AWS: the mapping's FilteredOutEvents
metric).
Per function, produced = filtered + filtered by pushdown + delivered + dead-lettered, where
delivered is the store that every routed record reaches; the demo exits 1 otherwise.
Latency is arrival in the stream to the write in DynamoDB: an order item's ``_written_at``
against its event's ``_arrival`` in the archive.

A windowed function (``purchases-per-minute``: purchases per user per minute of event time)
is checked apart (:mod:`deploy.local.windowcheck`): its rows, read back from its DynamoDB
table, must equal a reference computed from the records produced, replayed per shard in the
order ``PutRecords`` says they landed, for every window closed by the end; windows still
open (their shard's watermark has not passed them) are reported as open. The events carry
an event time (``ts``, epoch milliseconds) from the demo's start on, spread over
``SPAN_S``, a few seconds out of order and one purchase in a hundred 90 s late. So that the
final windows close, the traffic ends with one *closing* purchase per shard (a user of that
shard) at the end of the last window plus the lateness: its watermark then passes every
earlier window. The closing purchases' own windows stay open. For such a function,
produced = filtered + records that closed windows (per the reference; each goes on as the
results) + dead-lettered.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from deploy.local.dev import DevReport
    from deploy.local.windowcheck import Landed, WindowCheck
    from stream.plan import FunctionPlan, Plan, SinkSpec

__all__ = [
    "EXAMPLE",
    "DemoReport",
    "Traffic",
    "account",
    "closing_records",
    "run_demo",
    "synthetic_traffic",
]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "clickstream"
USERS = 300
KNOWN_USERS = 240  # the lookup finds these; the others are kept without a user (on_miss)
#: the event times of the traffic span this many seconds from its start
SPAN_S = 300
#: the start of the traffic's event time when none is given: 2026-01-01T00:00:00Z
START = 1_767_225_600
#: records put between two flushes: the most a shard's order can differ from the put order
#: (at 20,000 events, 500 records are 7.5 s of event time, less than the lateness)
FLUSH_EVERY = 500


@dataclass
class Traffic:
    """Synthetic records, in the order they are put: ``(data, partition key, aggregated)``."""

    records: list[tuple[bytes, str, bool]] = field(default_factory=list)
    corrupt_aggregates: list[tuple[bytes, str]] = field(default_factory=list)
    #: every record put, where it landed (from the producers' answers), in put order
    landed: list[Landed] = field(default_factory=list)
    #: the closing purchases (one per shard) put last, and their event time (epoch s)
    closing: int = 0
    close_at: float | None = None

    @property
    def produced(self) -> int:
        """Records as a function sees them: user records, and a corrupt aggregate as one."""
        return len(self.records) + len(self.corrupt_aggregates)


def synthetic_traffic(n: int, seed: int = 7, start: float = START) -> Traffic:
    """``n`` events of the clickstream example: about 2% text that is not JSON, 10% sent
    KPL-aggregated, and one corrupt aggregate per 5,000 events (at least one). Event times
    (``ts``, epoch ms) go from ``start`` over :data:`SPAN_S` seconds in put order, each up
    to 2 s early, and one purchase in a hundred 90 s early (late for its window)."""
    from stream.testing import encode_aggregate  # noqa: PLC0415

    rng = random.Random(seed)
    traffic = Traffic()
    for i in range(n):
        user = f"u{rng.randrange(USERS):03d}"
        if rng.random() < 0.02:
            traffic.records.append((f"GET /p/{i} HTTP/1.1".encode(), user, False))
            continue
        kind = rng.choices(["click", "view", "purchase"], weights=[5, 3, 2])[0]
        doc: dict[str, Any] = {"event_id": f"e{i}", "event_type": kind, "user_id": user}
        doc["amount"] = round(rng.uniform(1, 200), 2) if kind == "purchase" else 0
        at = start + SPAN_S * i / n - rng.uniform(0, 2)
        if kind == "purchase":
            doc["order_id"] = f"o{i}"
            doc["amount"] = 0 if rng.random() < 0.1 else doc["amount"]  # free: filtered out
            at -= 90 if rng.random() < 0.01 else 0  # sent late by an offline device
        doc["ts"] = int(at * 1000)
        traffic.records.append((orjson.dumps(doc), user, rng.random() < 0.1))
    for j in range(max(1, n // 5000)):
        good = encode_aggregate([(f"bad{j}", b'{"event_type": "click"}')] * 3)
        traffic.corrupt_aggregates.append((good[:-1] + bytes([good[-1] ^ 0xFF]), f"bad{j}"))
    return traffic


def _put(traffic: Traffic, plan: Plan, client: Callable[[str], Any]) -> Callable[..., int]:
    """A producing target for :func:`deploy.local.dev.run_dev`: plain records through one
    producer, aggregated ones through an aggregating one, corrupt aggregates as they are,
    then the closing purchases (:func:`closing_records`). Where each record landed goes to
    ``traffic.landed``."""
    stream = plan["stream"]["name"]

    def target(progress: Callable[[int], None]) -> int:
        from stream.producer import Producer, ShardMap  # noqa: PLC0415

        kinesis = client("kinesis")
        with (
            Producer(stream, kinesis) as plain,
            Producer(stream, kinesis, aggregate=True) as aggregating,
        ):
            for i, (data, key, aggregated) in enumerate(traffic.records, start=1):
                (aggregating if aggregated else plain).put(data, key)
                progress(len(data))
                if i % FLUSH_EVERY == 0:
                    _flush(traffic, plain, aggregating)
            for data, key in traffic.corrupt_aggregates:
                plain.put(data, key)
            _flush(traffic, plain, aggregating)
            shards = ShardMap.from_list_shards(kinesis.list_shards(StreamName=stream)["Shards"])
            closing = closing_records(traffic, plan, shards.shard_for)
            for data, key, _ in closing:
                plain.put(data, key)
                progress(len(data))
            traffic.records += closing
            traffic.closing = len(closing)
            _flush(traffic, plain)
        return traffic.produced

    return target


def _flush(traffic: Traffic, *producers: Any) -> None:
    """Flush; keep where each record landed (its position decides what is late)."""
    from deploy.local.windowcheck import Landed  # noqa: PLC0415

    for producer in producers:
        result = producer.flush()
        if result.failed:
            msg = f"{len(result.failed)} records could not be put: {result.failed[0].reason}"
            raise RuntimeError(msg)
        traffic.landed += [
            Landed(r.shard_id, (int(r.sequence_number), r.sub_sequence_number), r.data)
            for r in result.results
        ]


def closing_records(
    traffic: Traffic, plan: Plan, shard_of: Callable[[int], str]
) -> list[tuple[bytes, str, bool]]:
    """One purchase per shard (by a user whose key maps to it), timed at the end of the
    last window of the traffic plus the lateness, for each window step of ``plan``: a
    shard's watermark then passes every earlier window, so they all close. Sets
    ``traffic.close_at``; none without a window step."""
    from stream.producer import hash_key  # noqa: PLC0415

    windows = [
        step["window"]
        for function in plan["functions"].values()
        for step in function.get("processors") or ()
        if "window" in step
    ]
    times = [orjson.loads(data)["ts"] / 1000 for data, _, _ in traffic.records if data[:1] == b"{"]
    if not windows or not times:
        return []
    last = max(times)
    close_at = max(
        math.floor(last / (w.get("slide_s") or w["size_s"])) * (w.get("slide_s") or w["size_s"])
        + w["size_s"] + w.get("allowed_lateness_s", 0)
        for w in windows
    )  # fmt: skip
    traffic.close_at = close_at
    users: dict[str, str] = {}
    for n in range(USERS):
        users.setdefault(shard_of(hash_key(f"u{n:03d}")), f"u{n:03d}")
    out = []
    for j, (_, user) in enumerate(sorted(users.items())):
        doc = {"event_id": f"close{j}", "event_type": "purchase", "user_id": user,
               "amount": 1.0, "order_id": f"close{j}", "ts": int(close_at * 1000)}  # fmt: skip
        out.append((orjson.dumps(doc), user, False))
    return out


def _seed_users(plan: Plan, client: Callable[[str], Any]) -> None:
    """Put the known users into every lookup table of the plan."""
    ddb = client("dynamodb")
    for function in plan["functions"].values():
        for entry in function.get("processors", ()):
            lookup = (entry.get("enrich") or {}).get("lookup")
            if not lookup:
                continue
            key = lookup.get("table_key") or lookup["key"]
            for n in range(KNOWN_USERS):
                item = {
                    key: {"S": f"u{n:03d}"},
                    "tier": {"S": ("gold", "silver", "bronze")[n % 3]},
                    "country": {"S": ("fr", "de", "us", "jp")[n % 4]},
                }
                ddb.put_item(TableName=lookup["table"], Item=item)


@dataclass
class DemoReport:
    """What the demo read back, and the checks it made."""

    dev: DevReport
    produced: int
    filtered: dict[str, int] = field(default_factory=dict)
    pushed_down: dict[str, int] = field(default_factory=dict)
    enriched: int = 0
    dead_by_function: dict[str, Counter[str]] = field(default_factory=dict)
    latency_ms: tuple[float, float] | None = None  # p50, p99
    checks: list[tuple[str, int, int]] = field(default_factory=list)
    seconds: float = 0.0
    windows: list[WindowCheck] = field(default_factory=list)
    #: windowed functions the window check leaves out -> why (windowcheck.unchecked_functions)
    windows_unchecked: dict[str, str] = field(default_factory=dict)
    closing: int = 0  # closing purchases put last (one per shard)
    close_at: float | None = None  # their event time

    @property
    def reconciled(self) -> bool:
        """Whether every check's two sides are equal."""
        return bool(self.checks) and all(left == right for _, left, right in self.checks)

    @property
    def rate(self) -> float:
        """Records per second over the whole run, deploy included."""
        return self.produced / self.seconds if self.seconds else 0.0


def run_demo(
    client: Callable[[str], Any],
    *,
    events: int = 20_000,
    example: Path = EXAMPLE,
    on_tick: Callable[..., None] | None = None,
    log: Callable[[str], None] = lambda _line: None,
) -> DemoReport:
    """Run the example with ``events`` synthetic events; the environment must point at the
    local stack (:meth:`deploy.local.servers.LocalAWS.activated`)."""
    from deploy.local.dev import LOG_DIR, run_dev  # noqa: PLC0415
    from deploy.pipeline.config import load_plan_from_file  # noqa: PLC0415

    started = time.monotonic()
    plan = load_plan_from_file(example / "pipeline.yaml")
    traffic = synthetic_traffic(events, start=math.floor(time.time() / 60) * 60)
    log_dir = Path(LOG_DIR)
    before = {p.name: p.stat().st_size for p in log_dir.glob("*.log")} if log_dir.is_dir() else {}
    dev = run_dev(
        plan,
        client,
        source=_put(traffic, plan, client),
        prepare=lambda: _seed_users(plan, client),
        until_idle=2.0,
        log=log,
        on_tick=on_tick,
    )
    report = account(plan, dev, traffic.produced, log_dir, before)
    _read_back(plan, client, report)
    _check_windows(plan, client, report, traffic)
    report.seconds = time.monotonic() - started
    return report


def account(
    plan: Plan,
    dev: DevReport,
    produced: int,
    log_dir: Path,
    skip: Mapping[str, int],
    *,
    exact_sinks_only: bool = False,
) -> DemoReport:
    """Where the ``produced`` records went, per function, and the reconciliation checks
    (see the module docstring): ``shardline demo`` and ``shardline dev`` print the same.

    ``skip`` is the size of each log file before the run (what earlier runs appended).
    With ``exact_sinks_only`` (``dev``, on a user's pipeline) a function is checked only
    when its catch-all sink holds one entry per record (an archive, a queue, an ``append``
    table, an index without ``id``): a ``latest`` table or an index keyed by a field
    rightly holds fewer, which is no loss.
    """
    report = DemoReport(dev=dev, produced=produced)
    report.filtered = _filtered_from_metrics(log_dir, list(plan["functions"]), skip)
    report.pushed_down = {
        run.name: (run.stats or run.mapping.stats).records_filtered for run in dev.runs
    }
    for letter in dev.stored.letters if dev.stored else ():
        per = report.dead_by_function.setdefault(letter.get("function", "?"), Counter())
        per[f"{letter.get('step')}: {letter.get('error')}"] += 1
    _reconcile(plan, report, exact_sinks_only=exact_sinks_only)
    return report


def _one_per_record(spec: SinkSpec) -> bool:
    """Whether a sink's store holds one entry per record it was given."""
    kind = spec.get("type")
    if kind == "dynamodb":
        return spec.get("mode") == "append"
    if kind == "opensearch":
        return not spec.get("id")
    return kind in ("s3", "sqs")


def _filtered_from_metrics(
    log_dir: Path, functions: list[str], skip: Mapping[str, int]
) -> dict[str, int]:
    """Sum of ``RecordsFiltered`` in each function's EMF lines (one per invocation), after
    the first ``skip[file name]`` bytes (what earlier runs appended). An EMF document may
    follow other text on its line: a library's message written without a newline (urllib3's
    read timeout, under load) runs into the next line the worker prints."""
    filtered = {}
    for function in functions:
        total = 0
        path = log_dir / f"{function}.log"
        data = path.read_bytes()[skip.get(path.name, 0) :] if path.exists() else b""
        for line in data.splitlines():
            at = line.find(b'{"_aws"')
            if at >= 0:
                doc = orjson.loads(line[at:])
                total += int(doc.get("RecordsFiltered", 0))
        filtered[function] = total
    return filtered


def _read_back(plan: Plan, client: Callable[[str], Any], report: DemoReport) -> None:
    from deploy.local.readback import archive_lines, search_count, table_items  # noqa: PLC0415

    arrivals: dict[str, float] = {}
    for spec in plan["sinks"].values():
        if spec["type"] == "s3":
            for line in archive_lines(client("s3"), spec["bucket"], spec["prefix"]):
                if isinstance(line.get("event_id"), str):
                    arrivals[line["event_id"]] = float(line["_arrival"])
    latencies = []
    for spec in plan["sinks"].values():
        if spec["type"] == "dynamodb":
            for item in table_items(client("dynamodb"), spec["table"]):
                event = item.get("event_id", {}).get("S")
                if event in arrivals and "_written_at" in item:
                    latencies.append((float(item["_written_at"]["N"]) - arrivals[event]) * 1000)
        elif spec["type"] == "opensearch":
            report.enriched = search_count(
                spec["endpoint"], spec["index"], {"exists": {"field": "user.tier"}}
            )
    if latencies:
        latencies.sort()
        last = len(latencies) - 1
        report.latency_ms = (
            latencies[min(last, int(0.5 * len(latencies)))],
            latencies[min(last, int(0.99 * len(latencies)))],
        )


def _check_windows(
    plan: Plan, client: Callable[[str], Any], report: DemoReport, traffic: Traffic
) -> None:
    """Each windowed function's rows against the reference, and its records' fates (see the
    module docstring)."""
    from deploy.local.windowcheck import check_windows, unchecked_functions  # noqa: PLC0415

    report.windows = check_windows(plan, client, traffic.landed)
    report.windows_unchecked = unchecked_functions(plan)
    report.closing, report.close_at = traffic.closing, traffic.close_at
    for check in report.windows:
        function, ref = check.function, check.reference
        dead = sum(report.dead_by_function.get(function, Counter()).values())
        report.checks += [
            (f"{function}: produced = filtered + records that closed windows + dead-lettered",
             report.produced, report.filtered.get(function, 0) + ref.closers + dead),
            (f"{function}: {check.sink} rows = windows closed by the end (reference)",
             len(check.rows), len(ref.closed)),
            (f"{function}: rows equal to the reference ({', '.join(check.compared)})",
             check.matching, len(ref.closed)),
        ]  # fmt: skip


def _has_window(function: FunctionPlan) -> bool:
    return any("window" in step for step in function.get("processors") or ())


def _reconcile(
    plan: Plan, report: DemoReport, *, exact_sinks_only: bool = False
) -> None:
    """Per function: produced = filtered + filtered by pushdown + delivered + dead-lettered
    (see the docstring); the pushdown term only for a function with FilterCriteria. Not for
    a function with a window step: its sink holds one item per window, not per record
    (:func:`_check_windows` reconciles it)."""
    stored = report.dev.stored.per_sink if report.dev.stored else {}
    for function, spec in plan["functions"].items():
        if _has_window(spec):
            continue
        sink = _catch_all_sink(spec)
        if sink is None or sink not in stored:  # a store that is not counted (stdout)
            continue
        if exact_sinks_only and not (
            _one_per_record(plan["sinks"][sink]) and _sole_user(plan, sink, function)
        ):
            continue
        dead = sum(report.dead_by_function.get(function, Counter()).values())
        delivered = stored.get(sink, 0) if _sole_user(plan, sink, function) else 0
        filtered = report.filtered.get(function, 0)
        terms = "filtered"
        if spec.get("filter_criteria"):
            filtered += report.pushed_down.get(function, 0)
            terms = "filtered + filtered by pushdown"
        report.checks.append(
            (f"{function}: produced = {terms} + {sink} + dead-lettered", report.produced,
             filtered + delivered + dead)
        )  # fmt: skip


def _catch_all_sink(function: FunctionPlan) -> str | None:
    """The sink every record that survives the chain reaches, when there is one."""
    route = function.get("route")
    if route and len(route) == 1:
        return str(route[0])
    for entry in reversed(function.get("processors", ())):
        if "route" in entry:
            rules = entry["route"].get("rules", ())
            defaults = [r["default"] for r in rules if "default" in r]
            to = [set(r.get("to", ())) for r in rules if "to" in r]
            if defaults and len(defaults[0]) == 1 and all(defaults[0][0] in t for t in to):
                return str(defaults[0][0])
            return None
    return None


def _sole_user(plan: Plan, sink: str, function: str) -> bool:
    """Whether only ``function`` writes to ``sink`` (else the store mixes functions)."""
    from stream.runtime import used_sinks  # noqa: PLC0415

    users = [
        name
        for name, spec in plan["functions"].items()
        if sink in used_sinks({**spec, "on_failure": None})
    ]
    return users == [function]
