"""``shardline demo``: the clickstream example on the embedded local AWS, checked end to end.

It starts the local servers (:mod:`deploy.local`), creates the pipeline's stream, tables,
bucket and queue, seeds the user table the lookup reads, runs every function of the example
on the bundled Kinesis event with its real sinks, then reads back from the stores what
landed where. It reconciles per function: records in = filtered out + delivered +
dead-lettered, where delivered and dead-lettered are counted in the stores (documents in
OpenSearch, lines in the S3 archive, messages in the queue), not by the runner.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from collections.abc import Mapping

    from deploy.local import LocalAWS
    from stream.batch import BatchResult

__all__ = ["EXAMPLE", "DemoReport", "run_demo"]

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "clickstream"


@dataclass
class DemoReport:
    """What the demo saw: per function the runner's result and the stores' counts."""

    results: dict[str, BatchResult] = field(default_factory=dict)
    stored: dict[str, int] = field(default_factory=dict)
    enriched: dict[str, int] = field(default_factory=dict)
    dead_by_function: dict[str, Counter[str]] = field(default_factory=dict)
    checks: list[tuple[str, int, int]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def reconciled(self) -> bool:
        """Whether every check's two sides are equal."""
        return all(left == right for _, left, right in self.checks)


def _seed_users(stack: LocalAWS, plan: Mapping[str, Any]) -> int:
    """Put the example's users into every lookup table; 30 of the 40 users exist."""
    ddb = stack.client("dynamodb")
    seeded = 0
    for function in plan["functions"].values():
        for entry in function.get("processors", ()):
            lookup = (entry.get("enrich") or {}).get("lookup")
            if not lookup:
                continue
            key = lookup.get("table_key") or lookup["key"]
            for n in range(30):
                item = {
                    key: {"S": f"u{n:03d}"},
                    "tier": {"S": ("gold", "silver", "bronze")[n % 3]},
                    "country": {"S": ("fr", "de", "us", "jp")[n % 4]},
                }
                ddb.put_item(TableName=lookup["table"], Item=item)
                seeded += 1
    return seeded


def run_demo(stack: LocalAWS, example: Path = EXAMPLE) -> DemoReport:
    """Run the example against ``stack`` (started, its environment active)."""
    from deploy.config import load_plan_from_file  # noqa: PLC0415
    from deploy.local import provision  # noqa: PLC0415
    from deploy.readback import (  # noqa: PLC0415
        archive_lines,
        dead_letters,
        search_count,
        table_items,
    )
    from stream.runtime import build_runner  # noqa: PLC0415

    started = time.perf_counter()
    plan = load_plan_from_file(example / "pipeline.yaml")
    provision(plan, stack.client)
    _seed_users(stack, plan)
    event = orjson.loads((example / "event.json").read_bytes())
    report = DemoReport()
    for function in plan["functions"]:
        runner = build_runner(plan, function)
        try:
            report.results[function] = runner.handle(event)
        finally:
            for sink in runner.sinks.values():
                sink.close()

    s3, sqs = stack.client("s3"), stack.client("sqs")
    for name, spec in plan["sinks"].items():
        kind = spec["type"]
        if kind == "dynamodb":
            report.stored[name] = len(table_items(stack.client("dynamodb"), spec["table"]))
        elif kind == "opensearch":
            report.stored[name] = search_count(spec["endpoint"], spec["index"])
            found = {"exists": {"field": "user.tier"}}
            report.enriched[name] = search_count(spec["endpoint"], spec["index"], found)
        elif kind == "s3":
            report.stored[name] = len(archive_lines(s3, spec["bucket"], spec["prefix"]))
        elif kind == "sqs":
            letters = dead_letters(sqs, spec["queue"], s3)
            report.stored[name] = len(letters)
            for letter in letters:
                per = report.dead_by_function.setdefault(letter.get("function", "?"), Counter())
                per[f"{letter.get('step')}: {letter.get('error')}"] += 1
    _reconcile(plan, report)
    report.seconds = time.perf_counter() - started
    return report


def _reconcile(plan: Mapping[str, Any], report: DemoReport) -> None:
    """records in = filtered + delivered + dead-lettered, per function, from the stores.

    A function's delivered count is read from the store that receives every routed record:
    the only sink of its default route (``search`` for enrich-and-route, ``archive`` for
    archive-all in the example), which its other sinks only duplicate.
    """
    for function, result in report.results.items():
        spec = plan["functions"][function]
        sink = _catch_all_sink(spec)
        if sink is None:
            continue
        filtered = sum(result.dropped.values())
        dead = sum(report.dead_by_function.get(function, Counter()).values())
        delivered = report.stored.get(sink, 0) if _sole_user(plan, sink, function) else 0
        report.checks.append(
            (f"{function}: in = filtered + {sink} + dead", result.records_in,
             filtered + delivered + dead)
        )  # fmt: skip


def _catch_all_sink(function: Mapping[str, Any]) -> str | None:
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


def _sole_user(plan: Mapping[str, Any], sink: str, function: str) -> bool:
    """Whether only ``function`` writes to ``sink`` (else the store mixes functions)."""
    from stream.runtime import used_sinks  # noqa: PLC0415

    users = [
        name
        for name, spec in plan["functions"].items()
        if sink in used_sinks({**spec, "on_failure": None})
    ]
    return users == [function]
