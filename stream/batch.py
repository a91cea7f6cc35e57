"""One shard batch through the chain and the sinks, folded into Lambda's response.

The fold, in order (why this order: nothing is applied to a sink before we know what the
ordering policy must hold back):

1. The chain runs over the whole batch (no side effects).
2. Records that failed permanently in the chain (or could not be decoded) are written to
   the ``on_failure`` sink first. If that write fails, or there is no such sink, they are
   *unhandled*: they count as failed, so nothing is lost. A failure that is not the
   record's fault (:mod:`stream.faults`: a missing table, a denied permission, no region,
   a step that failed every record alike) is never dead-lettered: it is unhandled too,
   and logged once per batch.
3. The ordering policy holds back records behind unhandled ones: ``strict`` everything
   after the first, ``per_key`` the later records of the same partition key, ``none``
   nothing.
4. Each sink gets the records routed to it, in shard order, and keeps per-key order within
   its own bulk calls (``sinks.base``).
5. Records a sink rejected permanently go to the ``on_failure`` sink, unless the error is
   about the sink itself (an infrastructure code of :mod:`stream.faults`, or a client that
   could not be made): then they are unhandled.
6. Every unhandled record (retryable failure, held back, dead-letter write failed) is
   reported in ``batchItemFailures`` by its Kinesis sequence number (the parent's, for a
   user record of a KPL aggregate). Lambda resumes from the lowest one, so sinks see those
   records again: they are idempotent. Every identifier is a sequence number of the batch.

With metrics on, the runner also times decoding, each chain step and each sink write
(:class:`stream.metrics.Measurements`): a few clock reads per batch, none per record, and
none at all with metrics off. :meth:`BatchRunner.invoke` is what the Lambda handler runs:
the batch, then its metrics (once) and its log lines (:mod:`stream.logs`).
"""

from __future__ import annotations

import gc
import time
from functools import partial
from operator import attrgetter
from time import perf_counter

from processors.chain import EVENT_STEP, Chain
from sinks.base import OK, DeadLetter, Ordering, Outcome, Sink, Status, retryable
from stream.event import Undeferred, records_from_event
from stream.faults import broken_steps, infrastructure_code, is_infrastructure
from stream.lazy import lazy_names
from stream.logs import BatchLog
from stream.metrics import Measurements, Metrics
from stream.overlap import SINK_WIDTH, deferring, new_pool, run_all
from stream.values import Value

TYPE_CHECKING = False  # not typing's: the handler's import never loads typing (ARCHITECTURE.md)
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from concurrent.futures import ThreadPoolExecutor
    from typing import Any

    from processors.chain import ChainResult, Step, StepFailure
    from stream.flush import FlushRunner
    from stream.records import Record
    from stream.shapes import BatchItemFailure, BatchResponse, FlushResponse

__all__ = ["BatchItemFailure", "BatchResponse", "BatchResult", "BatchRunner"]


_SHAPES = frozenset({"BatchItemFailure", "BatchResponse"})


# the TypedDict shapes need typing, which a cold start does not load: imported on first use
__getattr__ = lazy_names(__name__, dict.fromkeys(_SHAPES, "stream.shapes"))


class BatchResult(Value):
    """What happened to a batch: the response and the counts behind it.

    Attributes:
        response: what the handler returns to Lambda.
        records_in: user records in the batch (after de-aggregation).
        dropped: per step, records dropped (filters).
        unrouted: records that no route took.
        written: per sink, records written.
        dead_letters: records written to the dead-letter sink.
        failed: index in the batch -> reason, for every unhandled record.
        infrastructure: where (a step, ``sink:NAME``) -> reason, for each error that was
            not a record's fault (:mod:`stream.faults`): its records are in ``failed``,
            and it is logged once per batch, not per record.
        measurements: timings and the counts only metrics need; ``None`` with metrics off.
    """

    __slots__ = (
        "dead_letters",
        "dropped",
        "failed",
        "infrastructure",
        "measurements",
        "records_in",
        "response",
        "unrouted",
        "written",
    )

    def __init__(  # noqa: PLR0917  # the dataclass's positional order, kept
        self,
        response: BatchResponse,
        records_in: int = 0,
        dropped: dict[str, int] | None = None,
        unrouted: int = 0,
        written: dict[str, int] | None = None,
        dead_letters: list[DeadLetter] | None = None,
        failed: dict[int, str] | None = None,
        infrastructure: dict[str, str] | None = None,
        measurements: Measurements | None = None,
    ) -> None:
        self.response = response
        self.records_in = records_in
        self.dropped = {} if dropped is None else dropped
        self.unrouted = unrouted
        self.written = {} if written is None else written
        self.dead_letters = [] if dead_letters is None else dead_letters
        self.failed = {} if failed is None else failed
        self.infrastructure = {} if infrastructure is None else infrastructure
        self.measurements = measurements


class BatchRunner:
    """Runs batches of one function. Holds no per-batch state: safe to reuse while warm.

    Args:
        chain: the function's processors.
        sinks: every sink the function may write to, by name.
        default_route: sinks for records that no route step routed (the ``route:``
            shorthand), or ``None``.
        on_failure: the name of the dead-letter sink, or ``None`` (then poison records are
            reported as failures and Lambda's own retry limit and on-failure destination
            take over).
        ordering: what a failure holds back.
        function: the function's name, for dead letters, metrics and logs.
        pipeline: the pipeline's name, for dead letters, metrics and logs.
        now: the clock, injectable for tests.
        metrics: measure each batch and have :meth:`invoke` print its CloudWatch metrics
            (:mod:`stream.metrics`).
        log_payloads: whether :meth:`invoke` logs a poison record's data with its position
            (the pipeline file's ``log_payloads``).
        aggregated: the stream's ``aggregated`` setting: whether data with the KPL magic
            bytes that is not a valid aggregate is dead-lettered (true) or passed on as a
            plain record (false, as the KCL does; :func:`stream.event.records_from_event`).
        stream: the plan's stream name: a flush's records name it (:mod:`stream.flush`).
    """

    def __init__(
        self,
        chain: Chain,
        sinks: Mapping[str, Sink],
        *,
        default_route: Sequence[str] | None = None,
        on_failure: str | None = None,
        ordering: Ordering = Ordering.PER_KEY,
        function: str = "",
        pipeline: str = "",
        now: Callable[[], float] = time.time,
        metrics: bool = False,
        log_payloads: bool = False,
        aggregated: bool = False,
        stream: str = "",
    ) -> None:
        self.chain = chain
        self.aggregated = aggregated
        self.stream = stream
        self.log_payloads = log_payloads
        # base64 left to the chain's first step when it reads every document first
        self._decode = not chain.decodes_data
        self.sinks = dict(sinks)
        self.default_route = tuple(default_route or ())
        self.dead_letter_sink = self.sinks[on_failure] if on_failure else None
        self.dead_letter_name = on_failure or ""
        self.ordering = ordering
        self.function = function
        self.pipeline = pipeline
        self._now = now
        self.metrics = Metrics(pipeline, function, now=now) if metrics else None
        self.log = BatchLog(function, pipeline, log_payloads=log_payloads)
        # made once per runner, on its first batch with two sinks to write (not per batch)
        self._pool: ThreadPoolExecutor | None = None
        self._flusher: FlushRunner | None = None  # made on the first flush (stream.flush)

    def now(self) -> float:
        """The runner's clock (epoch seconds; injected in tests)."""
        return self._now()

    def flush(self, event: Mapping[str, Any], context: Any = None) -> FlushResponse:
        """What the Lambda handler runs for a scheduled flush event instead of a batch:
        :meth:`stream.flush.FlushRunner.flush` (imported on the first flush: a function
        that only ever runs batches never loads it).

        Raises:
            FlushEventError: the event is of another version or for another function.
            Exception: a window step's state table could not be read or written.
        """
        flusher = self._flusher
        if flusher is None:
            from stream.flush import FlushRunner  # noqa: PLC0415  # on the first flush only

            flusher = self._flusher = FlushRunner(self)
        return flusher.flush(event, context)

    def tail(self, from_index: int) -> BatchRunner:
        """A runner of this function's steps from chain index ``from_index`` on, with the
        same sinks (the same objects: no second client or pool), routes, dead-letter sink
        and ordering, metrics off: what a flush sends a window step's results through.

        The steps are this runner's own objects too: a later window step keeps one state
        cache per process for batches and flushes alike.
        """
        return BatchRunner(
            Chain(self.chain.steps[from_index:]),
            self.sinks,
            default_route=self.default_route,
            on_failure=self.dead_letter_name or None,
            ordering=self.ordering,
            function=self.function,
            pipeline=self.pipeline,
            now=self._now,
            log_payloads=self.log_payloads,
            aggregated=self.aggregated,
            stream=self.stream,
        )

    def invoke(self, event: Mapping[str, Any], context: Any = None) -> BatchResponse:
        """What the Lambda handler runs per invocation: :meth:`handle`, then the batch's
        metrics (one set of documents, with metrics on) and its log lines.

        Raises:
            Exception: whatever :meth:`handle` raised (a wrong event, a broken sink), after
                logging it: Lambda then retries the whole batch.
        """
        try:
            result = self.handle(event)
        except Exception:
            self.log.failed(event, context)
            raise
        if self.metrics is not None:
            try:
                self.metrics.emit(result, len(event["Records"]))
            except Exception:  # the batch is done: telemetry must not make Lambda retry it
                self.log.logger.exception("metrics not written")
        self.log.batch(result, event, context)
        return result.response

    def handle(self, event: Mapping[str, Any]) -> BatchResult:
        """Decode a Lambda Kinesis event and run it, with garbage collection paused (and,
        with metrics on, decoding timed as the step ``event``).

        A batch allocates a record and a document per Kinesis record and keeps them all
        alive until it ends, so the cyclic collector would run dozens of young and some
        full collections per batch and find nothing: records form no cycles. Pausing it
        for the batch defers that work to after it (``bench/`` measured about a fifth of
        the handler's time on 10,000 records).
        """
        paused = gc.isenabled()
        if paused:
            gc.disable()
        try:
            measured = None if self.metrics is None else Measurements(self._now())
            started = 0.0 if measured is None else perf_counter()
            records = records_from_event(event, aggregated=self.aggregated, decode=self._decode)
            if measured is not None:
                measured.step_ms[EVENT_STEP] = (perf_counter() - started) * 1000.0
            if self._decode:
                return self.run(records, measured)
            try:
                return self.run(records, measured)
            except Undeferred:  # KPL aggregates (or a strange entry): the chain has applied
                # nothing yet (it has no side effects), so parse the event for good and rerun
                records = records_from_event(event, aggregated=self.aggregated)
                return self.run(records, measured)
        finally:
            if paused:
                gc.enable()

    def run(self, records: list[Record], measured: Measurements | None = None) -> BatchResult:
        """Process one shard batch (records in shard order, ``index`` = position).

        Calls a step starts behind it (:func:`stream.overlap.behind`: a window's deletes of
        the windows it closed) run beside the dead letters and the sinks; this returns
        once they have ended too (:func:`stream.overlap.deferring`).

        Args:
            records: the batch.
            measured: where to add timings; with metrics on and none given, a new one.
        """
        with deferring():
            return self._run(records, measured)

    def _run(self, records: list[Record], measured: Measurements | None) -> BatchResult:
        if measured is None and self.metrics is not None:
            measured = Measurements(self._now())
        if measured is None:
            chained = self.chain.run(records)
        else:
            if records:
                measured.oldest_arrival = records[0].arrival
            chained = self.chain.run(records, measured.step_ms)
        result = BatchResult({"batchItemFailures": []}, len(records), chained.dropped)
        result.measurements = measured
        failed = result.failed
        poison = self._triage(chained, result) if chained.failures else []
        # Poison records behind a failure wait too, so a redelivery does not dead-letter twice.
        held = self._held_back(records, failed)
        letters = [self._letter(f) for f in poison if f.record.index not in held]
        for index, why in held.items():
            failed.setdefault(index, why)
        if letters:
            self._dead_letter(letters, result)
            held = self._held_back(records, failed)

        per_sink, sink_letters = self._group(chained.records, held, result)
        writes = [(name, items) for name, items in per_sink.items() if items]
        # the sinks are written at once (stream.overlap); their answers are read in order
        timed = measured is not None
        sends = [partial(self._send, name, items, timed) for name, items in writes]
        if len(sends) > 1 and self._pool is None:
            self._pool = new_pool(min(len(self.sinks), SINK_WIDTH), "shardline-sink")
        sent = run_all(sends, self._pool)
        for (name, items), answer in zip(writes, sent, strict=True):
            sink_letters += self._write(name, items, answer, result)
        self._dead_letter(sink_letters, result)

        if failed:
            seen: set[str] = set()
            items_out = result.response["batchItemFailures"]
            for index in sorted(failed):
                seq = records[index].sequence_number
                if seq not in seen:
                    seen.add(seq)
                    items_out.append({"itemIdentifier": seq})
            if measured is not None and chained.dropped:
                measured.filtered_held = _filtered_and_failed(chained, failed)
        return result

    def _triage(self, chained: ChainResult, result: BatchResult) -> list[StepFailure]:
        """Put the chain's failures that are not the record's fault into ``failed``
        (retryable ones, and rule (a) and (b) of :mod:`stream.faults`); return the rest:
        the poison records, for the dead-letter sink."""
        failed = result.failed
        steps = self.chain.steps
        plugins = {step.name for step in steps if not _builtin(step)}
        permanent = [
            (f.step, f.error) for f in chained.failures if not f.retryable and f.step in plugins
        ]
        broken = broken_steps(permanent, _passed(chained, steps)) if permanent else {}
        poison: list[StepFailure] = []
        for f in chained.failures:
            why = f"{f.step}: {type(f.error).__name__}: {f.error}"
            if f.retryable:
                failed[f.record.index] = why
                continue
            code = infrastructure_code(f.error)
            if code is not None:
                result.infrastructure.setdefault(f.step, f"{why} (not the record's fault)")
            elif f.step in broken:
                why = f"{f.step}: broken step: {broken[f.step]}"
                result.infrastructure.setdefault(f.step, why)
            else:
                poison.append(f)
                continue
            failed.setdefault(f.record.index, why)
        return poison

    def _group(
        self, records: list[Record], held: Mapping[int, str], result: BatchResult
    ) -> tuple[dict[str, list[Record]], list[DeadLetter]]:
        """Each sink's records, in shard order; records routed to no sink we have fail."""
        per_sink: dict[str, list[Record]] = {name: [] for name in self.sinks}
        letters: list[DeadLetter] = []
        default = self.default_route
        if not held and records:
            # The usual batch: nothing held back and every record on the same route (one
            # sink, or route rules that all lead to it), of known sinks, each named once
            # (else the loop below: letters, duplicates). Checked in C, in two passes.
            routes_of = list(map(_routes_of, records))
            routes = routes_of[0]
            if routes_of.count(routes) == len(records):
                routes = default if routes is None else routes
                if len(set(routes)) == len(routes) and all(name in per_sink for name in routes):
                    for name in routes:
                        per_sink[name].extend(records)
                    if not routes:
                        result.unrouted += len(records)
                    return per_sink, letters
        for rec in records:
            if held and rec.index in held:
                result.failed.setdefault(rec.index, held[rec.index])
                continue
            routes = rec.routes
            if routes is None:
                routes = default
            try:
                if len(routes) == 1:
                    per_sink[routes[0]].append(rec)
                elif routes:
                    for name in routes:
                        per_sink[name].append(rec)
                else:
                    result.unrouted += 1
            except KeyError as exc:  # a plugin step named a sink this function does not have
                reason = (
                    f"routed to unknown sink {exc.args[0]!r} (this function writes to: "
                    f"{', '.join(self.sinks)}): fix the step that set record.routes"
                )
                letters.append(self._dead(rec, reason, "UnknownSink", "route"))
        return per_sink, letters

    def _send(
        self, name: str, items: list[Record], timed: bool
    ) -> tuple[list[Outcome] | Exception, float]:
        """Write one sink's records (in a thread of the runner's pool): its outcomes, or the
        infrastructure error it raised, and how long it took in ms (0 unless ``timed``: no
        clock is read with metrics off). Any other exception is raised: a bug, the
        invocation fails and Lambda retries the batch."""
        started = perf_counter() if timed else 0.0
        try:
            outcomes: list[Outcome] | Exception = self.sinks[name].write_batch(items, self.ordering)
        except Exception as exc:  # e.g. no region for its client: not the records' fault
            if infrastructure_code(exc) is None:
                raise
            outcomes = exc
        return outcomes, (perf_counter() - started) * 1000.0 if timed else 0.0

    def _write(
        self,
        name: str,
        items: list[Record],
        answer: tuple[list[Outcome] | Exception, float],
        result: BatchResult,
    ) -> list[DeadLetter]:
        """Count one sink's written records; return its permanent failures as letters."""
        measured = result.measurements
        written, elapsed_ms = answer
        outcomes = None
        if isinstance(written, Exception):  # the sink's own fault, not its records'
            why = f"sink:{name}: {type(written).__name__}: {written}"
            result.infrastructure.setdefault(f"sink:{name}", why)
            for rec in items:
                result.failed.setdefault(rec.index, why)
        else:
            outcomes = written
        if measured is not None:
            _add(measured.sink_ms, name, elapsed_ms)
            measured.routed[name] = measured.routed.get(name, 0) + len(items)
        if outcomes is None:
            return []
        if outcomes.count(OK) == len(items):  # the usual case, counted in C
            result.written[name] = result.written.get(name, 0) + len(items)
            return []
        ok = 0
        letters: list[DeadLetter] = []
        for rec, outcome in zip(items, outcomes, strict=True):
            status = outcome.status
            if status is Status.OK:
                ok += 1
            elif status is Status.RETRYABLE or is_infrastructure(outcome.error):
                why = f"sink:{name}: {outcome.reason}"
                result.failed.setdefault(rec.index, why)
                if is_infrastructure(outcome.error):
                    result.infrastructure.setdefault(f"sink:{name}", why)
            else:
                letters.append(self._dead(rec, outcome.reason, outcome.error, f"sink:{name}"))
        result.written[name] = result.written.get(name, 0) + ok
        return letters

    def _dead(self, record: Record, reason: str, error: str, step: str) -> DeadLetter:
        return DeadLetter(record, reason, error, step, self.function, self.pipeline, self._now())

    def _letter(self, failure: StepFailure) -> DeadLetter:
        error = failure.error
        return self._dead(failure.record, str(error), type(error).__name__, failure.step)

    def _dead_letter(self, letters: list[DeadLetter], result: BatchResult) -> None:
        if not letters:
            return
        sink = self.dead_letter_sink
        if sink is None:
            for letter in letters:
                result.failed.setdefault(
                    letter.record.index,
                    f"{letter.step}: {letter.reason} (no on_failure sink: reported as failed)",
                )
            return
        letters.sort(key=lambda letter: letter.record.index)
        measured = result.measurements
        started = 0.0 if measured is None else perf_counter()
        where = f"sink:{self.dead_letter_name}"
        try:
            outcomes = sink.write_dead_letters(letters)
        except Exception as exc:  # never lose a letter: report its record for retry
            if infrastructure_code(exc) is None:
                raise  # a bug: the invocation fails and Lambda retries the batch
            failure = retryable(f"{type(exc).__name__}: {exc}", type(exc).__name__)
            result.infrastructure.setdefault(where, f"{where}: {failure.reason}")
            outcomes = [failure] * len(letters)
        if measured is not None:
            _add(measured.sink_ms, self.dead_letter_name, (perf_counter() - started) * 1000.0)
        for letter, outcome in zip(letters, outcomes, strict=True):
            if outcome.status is Status.OK:
                result.dead_letters.append(letter)
                continue
            result.failed.setdefault(
                letter.record.index,
                f"{letter.step}: {letter.reason}; dead-letter write failed: {outcome.reason}",
            )
            if is_infrastructure(outcome.error):
                result.infrastructure.setdefault(where, f"{where}: {outcome.reason}")

    def _held_back(self, records: Sequence[Record], failed: Mapping[int, str]) -> dict[int, str]:
        """Indexes the ordering policy holds back because of earlier unhandled records."""
        if not failed or self.ordering is Ordering.NONE:
            return {}
        if self.ordering is Ordering.STRICT:
            first = min(failed)
            why = f"held back: record {first} failed and ordering is strict"
            return {r.index: why for r in records[first + 1 :]}
        first_by_key: dict[str, int] = {}
        for index in sorted(failed):
            first_by_key.setdefault(records[index].partition_key, index)
        held: dict[int, str] = {}
        for rec in records:
            key_first = first_by_key.get(rec.partition_key)
            if key_first is not None and rec.index > key_first:
                held[rec.index] = (
                    f"held back: record {key_first} of key {rec.partition_key!r} failed"
                )
        return held


_routes_of = attrgetter("routes")


def _add(totals: dict[str, float], key: str, value: float) -> None:
    totals[key] = totals.get(key, 0.0) + value


def _builtin(step: Step) -> bool:
    """Whether a step is one of ours (``filter``, ``enrich``, ``lookup``...): what those raise
    for a record is about its data (a field of the wrong type for an ``expr``), so rule (b)
    of :mod:`stream.faults` is for plugin steps only."""
    return type(step.processor).__module__.startswith("processors.")


def _passed(chained: ChainResult, steps: Sequence[Step]) -> dict[str, int]:
    """Per step, how many records it let through or dropped: a record that reached a
    later step, or survived the chain, passed every earlier step."""
    failures: dict[str, int] = {}
    for f in chained.failures:
        failures[f.step] = failures.get(f.step, 0) + 1
    after = len(chained.records)
    passed: dict[str, int] = {}
    for step in reversed(steps):
        dropped = chained.dropped.get(step.name, 0)
        passed[step.name] = after + dropped
        after += dropped + failures.get(step.name, 0)
    return passed


def _filtered_and_failed(chained: ChainResult, failed: Mapping[int, str]) -> int:
    """How many reported records a step had dropped (held back behind a failure).

    Run only for batches with failures and drops, with metrics on: the one place the
    metrics look at records one by one.
    """
    reached = {rec.index for rec in chained.records}
    reached.update(f.record.index for f in chained.failures)
    return sum(1 for index in failed if index not in reached)
