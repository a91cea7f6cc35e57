"""A scheduled window flush: close the windows of quiet shards when no batch comes to close them.

A windowed function's EventBridge rule (``shardline run``'s ticker locally) invokes the
function itself every ``flush_s`` with :func:`flush_event`; :func:`stream.lambda_handler.handler`
tells it from a Kinesis batch by its ``shardline`` key and runs :meth:`FlushRunner.flush`
(issue 16, ``/work/notes/flush-design.md`` §3). For the chain's last window step (see
"Several window steps" below):

1. ``step.tick(stop=...)`` closes the due windows of every quiet shard, each shard by a
   commit of its own that keeps the results as a pending *emission*
   (:class:`processors.window_tick.Emission`), and returns those with every emission still
   pending from earlier flushes. ``stop`` turns true when the invocation has less than
   :data:`RESERVE_MS` (or half its time at the start, if less) left: the rest is for
   sending the results on.
2. Each emission's results become records at a synthetic position of the quiet shard
   (:func:`emission_records`), run through the steps after the window step and the sinks by
   the same fold as a batch (:meth:`stream.batch.BatchRunner.tail`): routes, dead letters to
   ``on_failure``, retryable failures.
3. An emission none of whose records failed retryably (each written, dead-lettered, dropped
   by a filter or unrouted) is acked: the step drops it. The others stay pending and the
   next flush sends them again at the same position with the same ``window_id``: keyed sinks
   keep one item per window. Unless ``ordering: none``, a shard's emissions after one
   that failed stay pending too, as Lambda redelivers a shard's records after a failed one:
   the next flush writes them again after it, so a sink sees a shard's results in order.

Several window steps: only the last one is ticked; the windows of an earlier one close as
before (by its own records, or a batch of another shard), without the bound. Why: an earlier
step's flushed results are records of a later window step at the synthetic position, and
a later step keeps what such a record yielded only in its outbox, which the next batch of
the same shard moves past (Lambda holds no shard back for a pending flush): an emission
sent again after that yields nothing there, and a result of the later step that failed
its write the first time was lost (tests/integration/test_flush_handler.py shows it with
every step ticked). ``validate`` refuses a non-zero ``flush_s`` on such a step, and its
default there is 0.

Why the synthetic position is ``aggregated``: its sub-sequence number
(``TICK_SUB_BASE + T``) must reach every id a sink derives, and
:attr:`stream.records.Record.document_id` adds the sub-sequence number only for a record
from an aggregate: without it, a flushed result would take the ``_id`` of the result the
shard's last record closed (the same event id) and overwrite it.

Why ``event_source_arn`` is the plan's stream, built from the invoked function's ARN (its
partition, region and account; Lambda functions and their stream are in one account and
region): an emission names no stream, and a later window step asks the stream for the
shard's parents (:mod:`processors.lineage`), an SQS FIFO sink puts it in its deduplication
id, and a dead letter records it; all must be the same at every flush. Without a context
(a test calling the runner) it is ``""``.

The flush raises (the invocation fails, the function's Errors alarm counts it) when the
event is not for this function (:class:`~stream.exceptions.FlushEventError`) or a window
step cannot read or write its state table; what it committed before stays pending. A tick
that failed on some shards only still hands over the other shards' emissions, which are
sent on and acked before the flush raises: one shard failing at every flush does not hold
back the others.

This module is imported on the first flush only: a Kinesis batch never loads it.
"""

from __future__ import annotations

from sinks.base import Ordering
from stream.exceptions import FlushEventError
from stream.records import Record

TYPE_CHECKING = False  # not typing's: the handler's import never loads typing (ARCHITECTURE.md)
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any, Protocol, TypeGuard

    from processors.window_tick import Emission
    from stream.batch import BatchResult, BatchRunner
    from stream.shapes import FlushEvent, FlushResponse

    class Ticking(Protocol):
        """A window step's flush surface (``processors.window.Window``, ``SessionWindow``)."""

        def tick(
            self,
            now: float | None = None,
            *,
            stop: Callable[[], bool] | None = None,
            arn: str | None = None,
        ) -> list[Emission]: ...

        def ack(self, emission: Emission) -> None: ...


__all__ = [
    "FLUSH_VERSION",
    "RESERVE_MS",
    "FlushRunner",
    "check_flush_event",
    "emission_records",
    "flush_event",
    "is_flush",
    "stream_arn",
]

#: The version of the flush event this runtime runs.
FLUSH_VERSION = 1
#: Time kept, at most, for sending the results on once the ticks stop taking shards.
RESERVE_MS = 10_000


def flush_event(function: str) -> FlushEvent:
    """The event a schedule sends to flush ``function``'s windows.

    >>> flush_event("sessions")
    {'shardline': 'flush', 'version': 1, 'function': 'sessions'}
    """
    return {"shardline": "flush", "version": FLUSH_VERSION, "function": function}


def is_flush(event: Mapping[str, Any]) -> bool:
    """Whether an event is a flush (a Kinesis event has no ``shardline`` key).

    >>> is_flush(flush_event("f")), is_flush({"Records": []})
    (True, False)
    """
    return event.get("shardline") == "flush"


def check_flush_event(event: Mapping[str, Any], function: str, pipeline: str = "") -> None:
    """Refuse a flush event this runtime or this function must not run.

    The function is named as the plan names it (``sessions``) or as deploy names the Lambda
    function (``PIPELINE-sessions``): either tells a rule pointed at the wrong function.

    >>> check_flush_event(flush_event("f"), "f")
    >>> check_flush_event(flush_event("p-f"), "f", "p")
    >>> check_flush_event(flush_event("g"), "f")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    stream.exceptions.FlushEventError: flush event for function 'g' reached function 'f': ...

    Raises:
        FlushEventError: another version, or another function.
    """
    version = event.get("version")
    if version != FLUSH_VERSION:
        msg = (
            f"flush event of version {version!r}: this runtime runs version {FLUSH_VERSION}; "
            "deploy the pipeline again so that its schedule and its code agree"
        )
        raise FlushEventError(msg)
    named = event.get("function")
    if named != function and not (pipeline and named == f"{pipeline}-{function}"):
        msg = (
            f"flush event for function {named!r} reached function {function!r}: point the "
            f"schedule's input at this function (or this schedule at function {named!r})"
        )
        raise FlushEventError(msg)


def stream_arn(function_arn: str, stream: str) -> str:
    """The ARN of the plan's stream, in the invoked function's partition, region and account.

    >>> stream_arn("arn:aws:lambda:eu-west-1:123456789012:function:p-f", "clicks")
    'arn:aws:kinesis:eu-west-1:123456789012:stream/clicks'
    >>> stream_arn("", "clicks")
    ''
    """
    parts = function_arn.split(":")
    if len(parts) < 6 or not stream:  # arn:PARTITION:lambda:REGION:ACCOUNT:...
        return ""
    return f"arn:{parts[1]}:kinesis:{parts[3]}:{parts[4]}:stream/{stream}"


def emission_records(
    emission: Emission, *, event_source_arn: str, arrival: float, index: int
) -> list[Record]:
    """An emission's results as the records a window step would hand on: derived from a
    record at the synthetic position (the quiet shard, its last applied sequence number,
    ``TICK_SUB_BASE + T``), one per result in order, each its own fan-out part when there
    are several (as the chain numbers a step's list), indexes from ``index`` on.

    >>> from processors.window_tick import Emission
    >>> e = Emission("shardId-1", 2, "49", 10**11 + 2, ({"window_id": "a"}, {"window_id": "b"}))
    >>> for r in emission_records(e, event_source_arn="", arrival=0.0, index=3):
    ...     print(r.sub_sequence_number, r.part, r.index, r.document_id)
    100000000002 0 3 shardId-1:49:100000000002#0
    100000000002 1 4 shardId-1:49:100000000002#1
    """
    source = Record(
        b"",
        emission.shard_id,  # one key per shard: a failure holds back only its shard's results
        emission.sequence_number,
        emission.sub_sequence_number,
        True,  # aggregated: the sub-sequence number reaches document ids (module docstring)
        emission.shard_id,
        arrival,
        f"{emission.shard_id}:{emission.sequence_number}",
        event_source_arn,
    )
    fan_out = len(emission.results) > 1
    out = []
    for j, doc in enumerate(emission.results):
        rec = source.final(dict(doc), "window_id")  # as the window step's (FinalRecord)
        rec.index = index + j
        if fan_out:
            rec.part = str(j)
        out.append(rec)
    return out


class FlushRunner:
    """Runs flushes for one function's :class:`~stream.batch.BatchRunner`. Holds no
    per-flush state: the tails are built once (on the first flush of a cold start) and
    reused while warm, as the runner is.

    Args:
        runner: the function's runner; its window steps are the chain's steps whose
            processor has ``tick`` and ``ack``, of which the last is ticked.
    """

    def __init__(self, runner: BatchRunner) -> None:
        self.runner = runner
        ticking: list[tuple[int, Ticking]] = [
            (i, step.processor)
            for i, step in enumerate(runner.chain.steps)
            if _ticks(step.processor)
        ]
        #: the window steps a flush ticks, with their chain index: the last one only
        #: (module docstring, "Several window steps"). Also when its ``flush_s`` is 0: that
        #: turns the schedule off, not a flush sent by hand (``shardline flush``), which is
        #: how emissions left pending when the schedule was turned off still go out
        self.windows = ticking[-1:]
        self._tails: dict[int, BatchRunner] = {}

    def flush(self, event: Mapping[str, Any], context: Any = None) -> FlushResponse:
        """Check the event, tick the last window step and send what it emits on.

        Raises:
            FlushEventError: the event is of another version or function.
            Exception: what a step's ``tick`` or ``ack`` raised (``WindowStateError`` when
                its table cannot be read or written), after logging it.
        """
        runner = self.runner
        check_flush_event(event, runner.function, runner.pipeline)
        stop = _stopper(context)
        arn = stream_arn(str(getattr(context, "invoked_function_arn", "") or ""), runner.stream)
        windows = emitted = pending = 0
        results: list[BatchResult] = []
        try:
            for i, window in self.windows:
                incomplete: Exception | None = None
                try:
                    emissions = window.tick(stop=stop, arn=arn or None)  # arn: reshards' lineage
                except Exception as exc:
                    # a tick that failed on some shard hands over what it has
                    # (processors.window_state.TickIncomplete): sent on, then raised
                    carried = getattr(exc, "emissions", None)
                    if carried is None:
                        raise
                    emissions, incomplete = list(carried), exc
                if not emissions:
                    if incomplete is not None:
                        raise incomplete
                    continue
                emissions = sorted(emissions, key=_shard_order)  # a shard's, in tick order
                result, failed = self._send(i, emissions, arn)
                results.append(result)
                for emission, lost in zip(emissions, failed, strict=True):
                    windows += len(emission.results)
                    emitted += 1
                    if lost:
                        pending += 1
                    else:
                        window.ack(emission)
                if incomplete is not None:
                    raise incomplete
        except Exception:
            runner.log.failed(event, context)
            raise
        response: FlushResponse = {
            "shardline": "flush",
            "function": runner.function,
            "windows": windows,
            "emitted": emitted,
            "pending": pending,
        }
        if runner.metrics is not None:
            try:
                runner.metrics.emit_flush(windows, pending, results)
            except Exception:  # the flush is done: telemetry must not fail it
                runner.log.logger.exception("metrics not written")
        runner.log.flushed(response, results, context)
        return response

    def _send(
        self, i: int, emissions: Sequence[Emission], arn: str
    ) -> tuple[BatchResult, list[bool]]:
        """Run the emissions of window step ``i`` through the steps after it and the sinks;
        per emission, whether a record of it failed retryably (then it stays pending)."""
        tail = self._tails.get(i)
        if tail is None:
            tail = self._tails[i] = self.runner.tail(i + 1)
        now = self.runner.now()
        records: list[Record] = []
        spans = []
        for emission in emissions:
            made = emission_records(emission, event_source_arn=arn, arrival=now, index=len(records))
            spans.append(range(len(records), len(records) + len(made)))
            records += made
        result = tail.run(records)
        failed = result.failed
        lost = [any(k in failed for k in span) for span in spans]
        if self.runner.ordering is not Ordering.NONE:
            # A batch's failure makes Lambda redeliver the rest of its shard after it, so a
            # later record is written again after the failed one; a later emission of the
            # shard stays pending for the same reason (sorted by shard, then tick).
            behind = ""
            for k, emission in enumerate(emissions):
                if emission.shard_id == behind:
                    lost[k] = True
                elif lost[k]:
                    behind = emission.shard_id
        return result, lost


def _ticks(processor: object) -> TypeGuard[Ticking]:
    return callable(getattr(processor, "tick", None)) and callable(getattr(processor, "ack", None))


def _shard_order(emission: Emission) -> tuple[str, int]:
    return emission.shard_id, emission.tick


def _stopper(context: Any) -> Callable[[], bool] | None:
    """``stop`` for the ticks: true once less than the reserve is left of the invocation
    (:data:`RESERVE_MS`, or half the time left at the start when that is less)."""
    remaining: Callable[[], int] | None = getattr(context, "get_remaining_time_in_millis", None)
    if not callable(remaining):
        return None
    reserve = min(RESERVE_MS, remaining() // 2)

    def stop() -> bool:
        return remaining() < reserve

    return stop
