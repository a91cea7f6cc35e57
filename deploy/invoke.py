"""``shardline invoke``: run one function's handler path on a saved event, locally.

It compiles the pipeline file (or reads a compiled plan), builds the function's runner
exactly as the Lambda handler does, runs the event through it and prints the response.
``--sinks stdout`` replaces every sink with a labelled stdout sink, so a pipeline can be
tried before its real sinks exist: each line is ``SINK<TAB>JSON``.

A function with ``filter_pushdown: true`` has FilterCriteria on its mapping in AWS, which
drop records before the function is invoked (those that are not JSON among them, silently).
The event's records go through the same criteria first (:mod:`stream.esm_filter`), and the
summary counts what they dropped as filtered by pushdown, apart from the function's filters.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sinks.base import Sink
    from stream.batch import BatchResult

__all__ = ["Invocation", "load_any_plan", "run_invoke", "summary_rows"]


@dataclass(frozen=True, slots=True)
class Invocation:
    """What ``invoke`` did with an event.

    Attributes:
        result: what the function made of the records that reached it.
        pushed_down: event records the function's FilterCriteria dropped before it was
            invoked, as AWS does (none without ``filter_pushdown``).
    """

    result: BatchResult
    pushed_down: int = 0


def load_any_plan(file: str) -> dict[str, Any]:
    """A compiled plan from a ``.json`` plan or a pipeline file (validated, compiled)."""
    if file.endswith(".json"):
        from stream.runtime import load_plan  # noqa: PLC0415

        return load_plan(file)
    from deploy.cli import load_or_exit  # noqa: PLC0415  # prints problems, exits 2
    from deploy.config import compile_plan  # noqa: PLC0415

    return compile_plan(load_or_exit(file))


def run_invoke(
    plan: Mapping[str, Any], function: str | None, event_file: str, stdout_sinks: bool
) -> Invocation:
    """Run the event through the function's FilterCriteria (if any), then the function;
    sinks write as they would in Lambda."""
    from stream.esm_filter import RecordFilter  # noqa: PLC0415
    from stream.runtime import build_runner  # noqa: PLC0415

    factory = None
    if stdout_sinks:
        from sinks.stdout import StdoutSink  # noqa: PLC0415

        def factory(name: str, spec: Mapping[str, Any]) -> Sink:
            return StdoutSink(name, label=True)

    runner = build_runner(plan, function, factory)
    event = orjson.loads(Path(event_file).read_bytes())
    entries = event.get("Records") if isinstance(event, dict) else None
    pushed_down = 0
    if isinstance(entries, list):
        keep = RecordFilter(plan["functions"][runner.function].get("filter_criteria") or ())
        kept = keep.keep_entries(entries)
        pushed_down = len(entries) - len(kept)
        event = {**event, "Records": kept}
    try:
        return Invocation(runner.handle(event), pushed_down)
    finally:
        for sink in runner.sinks.values():
            sink.close()


def summary_rows(invocation: Invocation) -> list[tuple[str, str]]:
    """What happened to the event, as (what, count) rows for a table."""
    result = invocation.result
    rows = []
    if invocation.pushed_down:
        rows.append(("filtered by pushdown (FilterCriteria, before the function)",
                     str(invocation.pushed_down)))  # fmt: skip
    rows.append(("records in", str(result.records_in)))
    rows += [(f"dropped by {step}", str(n)) for step, n in result.dropped.items()]
    if result.unrouted:
        rows.append(("unrouted", str(result.unrouted)))
    rows += [(f"written to {sink}", str(n)) for sink, n in result.written.items()]
    reasons = Counter(
        f"dead-lettered at {letter.step} ({letter.error})" for letter in result.dead_letters
    )
    rows += [(what, str(n)) for what, n in sorted(reasons.items())]
    rows.append(("reported in batchItemFailures", str(len(result.response["batchItemFailures"]))))
    return rows
