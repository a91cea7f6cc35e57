"""The chain runner: a plain loop over steps, one step over the whole batch at a time.

Running step by step (not record by record) lets batch-aware steps see exactly the records
that reach them, and keeps the inner loop to one call and one identity check per record.
The chain has no side effects outside the records; sinks are written by ``stream.batch``
after the chain, which is what makes the ordering policies enforceable before anything is
applied.
"""

from __future__ import annotations

from time import perf_counter

from processors.errors import ProcessorError
from processors.step import EVENT_STEP, Step, StepFailure
from stream.exceptions import DecodeError, RetryableError
from stream.records import Record
from stream.values import Value

TYPE_CHECKING = False  # not typing's: the handler's import never loads typing (ARCHITECTURE.md)
if TYPE_CHECKING:
    from collections.abc import Sequence

    from processors.fused import FusedRun

__all__ = ["EVENT_STEP", "Chain", "ChainResult", "Step", "StepFailure"]


class ChainResult(Value):
    """What the chain made of a batch.

    Attributes:
        records: the surviving records, in shard order (fan-out results in place).
        failures: records that failed, with where and why.
        dropped: per step name, how many records it dropped.
    """

    __slots__ = ("dropped", "failures", "records")

    def __init__(
        self,
        records: list[Record],
        failures: list[StepFailure] | None = None,
        dropped: dict[str, int] | None = None,
    ) -> None:
        self.records = records
        self.failures = [] if failures is None else failures
        self.dropped = {} if dropped is None else dropped


class Chain:
    """Runs steps over a batch. Stateless between batches: safe to reuse while warm.

    Args:
        steps: the configured steps, in order.
        fuse: run each maximal run of built-in steps as one generated loop
            (:mod:`processors.fused`): the same result for about a third of the steps'
            per-record cost. ``False`` runs every step through the plain loop (what the
            fused path is tested against).
    """

    __slots__ = ("_segments", "decodes_data", "segment_names", "steps")

    def __init__(self, steps: Sequence[Step], *, fuse: bool = True) -> None:
        self.steps = tuple(steps)
        self._segments: tuple[Step | FusedRun, ...] = self.steps
        if fuse:
            from processors.fused import fuse as fuse_runs  # noqa: PLC0415  # only when fusing

            self._segments = fuse_runs(self.steps)
        #: What the chain times, in order: a step's name, or ``first..last`` for the steps
        #: of a fused run, which run as one loop and cannot be timed apart.
        self.segment_names: tuple[str, ...] = tuple(map(_segment_name, self._segments))
        #: Whether the first thing the chain does is a fused run reading every record's
        #: document, which decodes and checks base64 itself (:attr:`FusedRun.decodes_data`):
        #: then the handler leaves the base64 to it (``records_from_event(decode=False)``),
        #: and a batch never holds all its records' bytes at once.
        first = self._segments[0] if self._segments else None
        self.decodes_data: bool = bool(getattr(first, "decodes_data", False))

    def run(
        self, records: Sequence[Record], timings: dict[str, float] | None = None
    ) -> ChainResult:
        """Run every step over the records; never raises for a record's sake.

        Args:
            records: the batch, in shard order.
            timings: when given, each segment's wall time in milliseconds is added to it
                under its :attr:`segment_names` entry (two clock reads per segment and
                batch; none at all without it).
        """
        failures: list[StepFailure] = []
        current = [r for r in records if r.error is None]
        if len(current) != len(records):
            failures.extend(
                StepFailure(r, EVENT_STEP, DecodeError(r.error), retryable=False)
                for r in records
                if r.error is not None
            )
        dropped: dict[str, int] = {}
        for i, step in enumerate(self._segments):
            if not current:
                break
            started = 0.0 if timings is None else perf_counter()
            current = _run_segment(step, current, failures, dropped)
            if timings is not None:
                name = self.segment_names[i]
                timings[name] = timings.get(name, 0.0) + (perf_counter() - started) * 1000.0
        return ChainResult(current, failures, dropped)


def _segment_name(segment: Step | FusedRun) -> str:
    if isinstance(segment, Step) or len(segment.steps) == 1:
        return segment.name
    return f"{segment.steps[0].name}..{segment.steps[-1].name}"


def _run_segment(
    step: Step | FusedRun,
    records: list[Record],
    failures: list[StepFailure],
    dropped: dict[str, int],
) -> list[Record]:
    """One step or fused run over the records; its survivors (none if its hook failed)."""
    if failures and isinstance(step, Step) and getattr(step.processor, "in_order", False):
        records = _hold_back(step, records, failures)
        if not records:
            return []
    if step.prepare is not None:
        try:
            step.prepare(records)
        except Exception as exc:  # a failing hook fails its records
            retry = isinstance(exc, RetryableError)
            failures.extend(StepFailure(r, step.name, exc, retry) for r in records)
            return []
    if isinstance(step, Step):
        survivors, n_dropped = _run_step(step, records, failures)
        if n_dropped:
            dropped[step.name] = n_dropped
        return survivors
    return step.run(records, failures, dropped)


class HeldBack(ProcessorError, RetryableError):
    """A record not given to an in-order step because an earlier record of its shard failed
    retryably: Lambda delivers both again, in order (see :func:`_hold_back`)."""


def _hold_back(step: Step, records: list[Record], failures: list[StepFailure]) -> list[Record]:
    """The records an in-order step (``in_order``: a ``window``, whose state remembers the
    last position it applied) may take: those before the earliest retryable failure of
    their shard so far. The batch is delivered again from that failure, with everything
    after it; a step that had applied the later records would take the failed one, then
    behind its applied position, for a redelivery and never apply it. The others fail
    retryably (:class:`HeldBack`), which moves no reported position: they come after it."""
    earliest: dict[str, tuple[int, int]] = {}
    for failure in failures:
        if failure.retryable:
            rec = failure.record
            at = (int(rec.sequence_number), rec.sub_sequence_number)
            known = earliest.get(rec.shard_id)
            if known is None or at < known:
                earliest[rec.shard_id] = at
    if not earliest:
        return records
    kept: list[Record] = []
    for rec in records:
        limit = earliest.get(rec.shard_id)
        if limit is not None and (int(rec.sequence_number), rec.sub_sequence_number) >= limit:
            why = (
                f"held back: an earlier record of shard {rec.shard_id} failed retryably, and "
                f"{step.name} applies its shard's records in order"
            )
            failures.append(StepFailure(rec, step.name, HeldBack(why), retryable=True))
        else:
            kept.append(rec)
    return kept


class ProcessorContractError(ProcessorError, TypeError):
    """A processor returned something other than a record, a list of records or None."""


def _run_step(
    step: Step, records: list[Record], failures: list[StepFailure]
) -> tuple[list[Record], int]:
    fn = step.run
    out: list[Record] = []
    append = out.append
    dropped = 0
    touch = not step.tracked  # an untracked step may have edited a document in place
    for rec in records:
        try:
            res = fn(rec)
        except RetryableError as exc:
            failures.append(StepFailure(rec, step.name, exc, retryable=True))
            continue
        except Exception as exc:  # a bad record never fails its batch
            failures.append(StepFailure(rec, step.name, exc, retryable=False))
            continue
        if res is rec:
            if touch:
                rec.touch()
            append(rec)
        elif res is None:
            dropped += 1
        elif type(res) is list:
            if not res:
                dropped += 1
            fan_out = len(res) > 1
            for j, item in enumerate(res):
                if isinstance(item, Record):
                    if touch and item is not rec:
                        _at_source(item, rec)
                    item.index = rec.index
                    if fan_out:  # each part its own id and position in keyed sinks
                        item.part = f"{rec.part}.{j}" if rec.part else str(j)
                    if touch:
                        item.touch()
                    append(item)
                else:
                    failures.append(StepFailure(rec, step.name, _contract(step, item), False))
        elif isinstance(res, Record):
            if touch:
                if res is not rec:
                    _at_source(res, rec)
                res.touch()
            res.index = rec.index
            append(res)
        else:
            failures.append(StepFailure(rec, step.name, _contract(step, res), retryable=False))
    return out, dropped


def _at_source(item: Record, rec: Record) -> None:
    """Give a record a plugin returned for ``rec`` what it needs to stand where ``rec`` stood:
    the source position of ``rec`` when it has none of its own, and the sinks a route step
    chose for ``rec`` when no route step chose any for it.

    A record a plugin built with ``Record(...)`` has no shard or event id: the keyed sinks
    name documents, objects and items by them (every user record of a KPL aggregate would
    become one ``_id``, the later ones taken for redeliveries of the first and never
    written), dead letters could not say where it came from, and a retryable failure would
    report a sequence number the batch does not hold. A record with a position of its own
    (``rec.derive(doc)``, or another record of the batch that a step moved) keeps it: moved
    records rewritten in place had two records share one id (found in review). And a record
    returned after a ``route`` step goes where ``rec`` was routed (neither ``Record(...)``
    nor ``derive`` carries routes: it was counted unrouted and written nowhere)."""
    if not item.shard_id and not item.event_id:
        item.partition_key = rec.partition_key
        item.sequence_number = rec.sequence_number
        item.sub_sequence_number = rec.sub_sequence_number
        item.aggregated = rec.aggregated
        item.shard_id = rec.shard_id
        item.arrival = rec.arrival
        item.event_id = rec.event_id
        item.event_source_arn = rec.event_source_arn
        item.part = rec.part
    if item.routes is None:
        item.routes = rec.routes


def _contract(step: Step, value: object) -> ProcessorContractError:
    return ProcessorContractError(
        f"processor {step.name!r} returned {type(value).__name__}, expected Record, "
        "list of Record, or None: return the record (or record.derive(doc)) to keep it"
    )
