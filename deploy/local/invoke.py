"""``shardline invoke``: run one function's handler path on a saved event, locally.

It compiles the pipeline file (or reads a compiled plan), builds the function's runner
exactly as the Lambda handler does, runs the event through it and prints the response.
``--sinks stdout`` replaces every sink with a labelled stdout sink, so a pipeline can be
tried before its real sinks exist: each line is ``SINK<TAB>JSON``.

A function with ``filter_pushdown: true`` has FilterCriteria on its mapping in AWS, which
drop records before the function is invoked (those that are not JSON among them, silently).
The event's records go through the same criteria first (:mod:`stream.esm.filter`), and the
summary counts what they dropped as filtered by pushdown, apart from the function's filters.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from deploy.errors import DeployError

if TYPE_CHECKING:

    from sinks.base import Sink
    from stream.batch import BatchResult
    from stream.plan import Plan, SinkSpec
    from stream.records import Record

__all__ = [
    "EventError",
    "Invocation",
    "record_lines",
    "run_invoke",
    "summary_rows",
]


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
    function: str = ""
    #: the records that reached the function, by their index in the batch
    records: tuple[Record, ...] = ()


class EventError(DeployError, ValueError):
    """The saved event cannot be read or is not a Lambda Kinesis event; the message starts
    with the event file's name (the pipeline file is not at fault)."""


def run_invoke(
    plan: Plan, function: str | None, event_file: str, stdout_sinks: bool
) -> Invocation:
    """Run the event through the function's FilterCriteria (if any), then the function;
    sinks write as they would in Lambda."""
    from stream.esm.filter import RecordFilter  # noqa: PLC0415
    from stream.runtime import build_runner  # noqa: PLC0415

    factory = None
    if stdout_sinks:
        from sinks.stdout import StdoutSink  # noqa: PLC0415

        def factory(name: str, spec: SinkSpec) -> Sink:
            return StdoutSink(name, label=True)

    from stream.event import records_from_event  # noqa: PLC0415

    event = read_event(event_file)
    runner = build_runner(plan, function, factory)
    entries = event["Records"]
    keep = RecordFilter(plan["functions"][runner.function].get("filter_criteria") or ())
    kept = keep.keep_entries(entries)
    event = {**event, "Records": kept}
    try:
        records = records_from_event(event, aggregated=runner.aggregated)
    except (KeyError, TypeError, ValueError) as exc:
        msg = f"{event_file}: not a Lambda Kinesis event: {type(exc).__name__}: {exc}"
        raise EventError(msg) from None
    try:
        result = runner.handle(event)
    finally:
        for sink in runner.sinks.values():
            sink.close()
    return Invocation(result, len(entries) - len(kept), runner.function, tuple(records))


def read_event(event_file: str) -> dict[str, Any]:
    """The saved event, checked for the shape Lambda sends.

    Raises:
        EventError: unreadable, not JSON, or without a ``Records`` list.
    """
    try:
        event = orjson.loads(Path(event_file).read_bytes())
    except OSError as exc:
        msg = f"{event_file}: cannot read: {exc.strerror}"
        raise EventError(msg) from None
    except orjson.JSONDecodeError as exc:
        msg = f"{event_file}: not JSON ({exc}); save the event Lambda received, as JSON"
        raise EventError(msg) from None
    if not isinstance(event, dict) or not isinstance(event.get("Records"), list):
        msg = (
            f"{event_file}: not a Lambda Kinesis event: expected an object with a 'Records' "
            "list (`python -m stream.testing` and stream.testing.EventFactory make one)"
        )
        raise EventError(msg)
    return event


def record_lines(invocation: Invocation) -> list[str]:
    """Per record that did not simply pass: why it was dead-lettered or reported for retry
    (in ``batchItemFailures``), with its position, in batch order."""
    result = invocation.result
    by_index = {r.index: r for r in invocation.records}
    lines: list[tuple[int, str]] = []

    def where(index: int) -> str:
        record = by_index.get(index)
        if record is None:
            return f"record {index}"
        sub = f"/{record.sub_sequence_number}" if record.sub_sequence_number else ""
        return (
            f"record {index} (key {record.partition_key!r}, sequence {record.sequence_number}{sub})"
        )

    for letter in result.dead_letters:
        index = letter.record.index
        lines.append(
            (index, f"{where(index)}: dead-lettered at {letter.step}: {letter.error}: "
             f"{letter.reason}")
        )  # fmt: skip
    for index, why in sorted(result.failed.items()):
        lines.append((index, f"{where(index)}: reported for retry (batchItemFailures): {why}"))
    return [line for _, line in sorted(lines, key=lambda pair: pair[0])]


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
