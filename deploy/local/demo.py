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
"""

from __future__ import annotations

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
    from stream.plan import FunctionPlan, Plan, SinkSpec

__all__ = ["EXAMPLE", "DemoReport", "Traffic", "account", "run_demo", "synthetic_traffic"]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "clickstream"
USERS = 300
KNOWN_USERS = 240  # the lookup finds these; the others are kept without a user (on_miss)


@dataclass
class Traffic:
    """Synthetic records, in the order they are put: ``(data, partition key, aggregated)``."""

    records: list[tuple[bytes, str, bool]] = field(default_factory=list)
    corrupt_aggregates: list[tuple[bytes, str]] = field(default_factory=list)

    @property
    def produced(self) -> int:
        """Records as a function sees them: user records, and a corrupt aggregate as one."""
        return len(self.records) + len(self.corrupt_aggregates)


def synthetic_traffic(n: int, seed: int = 7) -> Traffic:
    """``n`` events of the clickstream example: about 2% text that is not JSON, 10% sent
    KPL-aggregated, and one corrupt aggregate per 5,000 events (at least one)."""
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
        if kind == "purchase":
            doc["order_id"] = f"o{i}"
            doc["amount"] = 0 if rng.random() < 0.1 else doc["amount"]  # free: filtered out
        traffic.records.append((orjson.dumps(doc), user, rng.random() < 0.1))
    for j in range(max(1, n // 5000)):
        good = encode_aggregate([(f"bad{j}", b'{"event_type": "click"}')] * 3)
        traffic.corrupt_aggregates.append((good[:-1] + bytes([good[-1] ^ 0xFF]), f"bad{j}"))
    return traffic


def _put(traffic: Traffic, stream: str, client: Callable[[str], Any]) -> Callable[..., int]:
    """A producing target for :func:`deploy.local.dev.run_dev`: plain records through one
    producer, aggregated ones through an aggregating one, corrupt aggregates as they are."""

    def target(progress: Callable[[int], None]) -> int:
        from stream.producer import Producer  # noqa: PLC0415

        kinesis = client("kinesis")
        with (
            Producer(stream, kinesis) as plain,
            Producer(stream, kinesis, aggregate=True) as aggregating,
        ):
            for i, (data, key, aggregated) in enumerate(traffic.records, start=1):
                (aggregating if aggregated else plain).put(data, key)
                progress(len(data))
                if i % 2000 == 0:
                    _flush(plain, aggregating)
            for data, key in traffic.corrupt_aggregates:
                plain.put(data, key)
            _flush(plain, aggregating)
        return traffic.produced

    return target


def _flush(*producers: Any) -> None:
    for producer in producers:
        result = producer.flush()
        if result.failed:
            msg = f"{len(result.failed)} records could not be put: {result.failed[0].reason}"
            raise RuntimeError(msg)


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
    traffic = synthetic_traffic(events)
    log_dir = Path(LOG_DIR)
    before = {p.name: p.stat().st_size for p in log_dir.glob("*.log")} if log_dir.is_dir() else {}
    dev = run_dev(
        plan,
        client,
        source=_put(traffic, plan["stream"]["name"], client),
        prepare=lambda: _seed_users(plan, client),
        until_idle=2.0,
        log=log,
        on_tick=on_tick,
    )
    report = account(plan, dev, traffic.produced, log_dir, before)
    _read_back(plan, client, report)
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
    the first ``skip[file name]`` bytes (what earlier runs appended)."""
    filtered = {}
    for function in functions:
        total = 0
        path = log_dir / f"{function}.log"
        data = path.read_bytes()[skip.get(path.name, 0) :] if path.exists() else b""
        for line in data.splitlines():
            if line.startswith(b'{"_aws"'):
                doc = orjson.loads(line)
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


def _reconcile(
    plan: Plan, report: DemoReport, *, exact_sinks_only: bool = False
) -> None:
    """Per function: produced = filtered + filtered by pushdown + delivered + dead-lettered
    (see the docstring); the pushdown term only for a function with FilterCriteria."""
    stored = report.dev.stored.per_sink if report.dev.stored else {}
    for function, spec in plan["functions"].items():
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
