"""``shardline invoke``: run one function's handler path on a saved event, locally.

It compiles the pipeline file (or reads a compiled plan), builds the function's runner
exactly as the Lambda handler does, runs the event through it and prints the response.
``--sinks stdout`` replaces every sink with a labelled stdout sink, so a pipeline can be
tried before its real sinks exist: each line is ``SINK<TAB>JSON``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sinks.base import Sink
    from stream.batch import BatchResult

__all__ = ["load_any_plan", "run_invoke", "summary_rows"]


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
) -> BatchResult:
    """Run the event through the function; sinks write as they would in Lambda."""
    from stream.runtime import build_runner  # noqa: PLC0415

    factory = None
    if stdout_sinks:
        from sinks.stdout import StdoutSink  # noqa: PLC0415

        def factory(name: str, spec: Mapping[str, Any]) -> Sink:
            return StdoutSink(name, label=True)

    runner = build_runner(plan, function, factory)
    event = orjson.loads(Path(event_file).read_bytes())
    try:
        return runner.handle(event)
    finally:
        for sink in runner.sinks.values():
            sink.close()


def summary_rows(result: BatchResult) -> list[tuple[str, str]]:
    """What happened to the batch, as (what, count) rows for a table."""
    rows = [("records in", str(result.records_in))]
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
