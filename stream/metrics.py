"""CloudWatch metrics of a function, in Embedded Metric Format (EMF), once per invocation.

Lambda sends every line a function prints to CloudWatch Logs, and CloudWatch turns a line
that is an EMF document into metrics: no API call, no client, no added latency. The handler
prints one small set of documents per invocation (never per record) from the counts the
batch fold keeps anyway (:class:`stream.batch.BatchResult`) and a few timings taken per
step and per sink (:class:`Measurements`, filled only when metrics are on: with metrics
off there is no clock read and nothing allocated beyond what the fold does itself).

Metrics, namespace ``shardline``, every one with the dimensions ``Pipeline`` and
``Function``:

========================  =============  ===================================================
metric                    extra dim      what
========================  =============  ===================================================
``RecordsIn``                            user records in the batch (after de-aggregation)
``BatchSize``                            Kinesis records in the event
``RecordsFiltered``                      records the chain's steps dropped
``RecordsUnrouted``                      records no route took
``RecordsWritten``                       sink writes that succeeded (one per record and sink)
``RecordsDeadLettered``                  records written to the dead-letter sink
``RetryableFailures``                    records reported in ``batchItemFailures``: failed
                                         retryably, or held back behind such a failure
``InfrastructureErrors``                 errors in the batch that were not a record's fault
                                         (:mod:`stream.faults`), one per step or sink
``OldestRecordAge``                      ms from the first record's arrival in the stream to
                                         the start of processing (a shard is read in order,
                                         so the first record is the oldest)
``Filtered``              ``Step``       records this step dropped
``StepTime``              ``Step``       ms in this step (``event``: decoding the event; a
                                         fused run of steps is one ``first..last`` step,
                                         and the first one also times the base64 it
                                         decodes: ``Chain.decodes_data``)
``Routed``                ``Sink``       records handed to this sink
``Written``               ``Sink``       records this sink wrote
``SinkTime``              ``Sink``       ms in this sink's writes (dead letters included)
``DeadLettered``          ``Reason``     records dead-lettered for this reason (error class)
``WindowsFlushed``                       (a flush) windows a scheduled flush sent on
``WindowFlushPending``                   (a flush) emissions left pending: a sink failed
                                         retryably, the next flush sends them again
========================  =============  ===================================================

A scheduled window flush (:mod:`stream.flush`) prints one document instead, with the
function's dimensions: ``WindowsFlushed``, ``WindowFlushPending``, and the
``RecordsWritten``, ``RecordsDeadLettered`` and ``InfrastructureErrors`` of what it sent on
(so the function's dead-letter alarm sees a flush's dead letters too).

For a function whose routes send each record to one sink and whose steps do not fan out,
every record has exactly one fate, so ``RecordsIn = RecordsFiltered + RecordsUnrouted +
RecordsWritten + RecordsDeadLettered + RetryableFailures`` (a record a filter dropped that
the ordering policy also reports, held back behind a failure, counts as filtered only).

Layout. An EMF directive has one list of dimension sets, and a document one value per
dimension key, so the values of ``Step``, ``Sink`` and ``Reason`` cannot share a
document. Rather than one document per value, the documents are *zipped*: document ``i``
carries the ``i``-th step, the ``i``-th sink and the ``i``-th reason, each with its own
directive (``[Pipeline, Function, Step]``...), and the first document also carries the
function's totals under ``[Pipeline, Function]``. Every metric name is distinct, so each
directive reads its own top-level members: valid EMF, and ``max(1, steps, sinks,
reasons)`` lines per invocation instead of ``1 + steps + sinks + reasons``. Each metric
(name and dimension values) is declared exactly once per invocation.

Per-step, per-sink and per-reason metrics appear only in invocations where they counted
something (each series is a billed custom metric: a step that never drops costs nothing);
the function's totals are always present, zeros included, so alarms see every invocation.
"""

from __future__ import annotations

import sys
import time
from collections import Counter

import orjson

from stream.values import Value

TYPE_CHECKING = False  # not typing's: the handler's import never loads typing (ARCHITECTURE.md)
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any, TextIO

    from stream.batch import BatchResult

__all__ = [
    "METRICS_ENV",
    "NAMESPACE",
    "UNITS",
    "Measurements",
    "Metrics",
    "metrics_enabled",
]

#: The environment variable that turns metrics on (``1``) or off (``0``), over the plan.
METRICS_ENV = "SHARDLINE_METRICS"
#: The CloudWatch namespace of every metric.
NAMESPACE = "shardline"

_COUNT = "Count"
_MS = "Milliseconds"
#: Every metric's unit, by name.
UNITS: dict[str, str] = {
    "RecordsIn": _COUNT,
    "BatchSize": _COUNT,
    "RecordsFiltered": _COUNT,
    "RecordsUnrouted": _COUNT,
    "RecordsWritten": _COUNT,
    "RecordsDeadLettered": _COUNT,
    "RetryableFailures": _COUNT,
    "InfrastructureErrors": _COUNT,
    "OldestRecordAge": _MS,
    "Filtered": _COUNT,
    "StepTime": _MS,
    "Routed": _COUNT,
    "Written": _COUNT,
    "SinkTime": _MS,
    "DeadLettered": _COUNT,
    "WindowsFlushed": _COUNT,
    "WindowFlushPending": _COUNT,
}
_BASE_DIMENSIONS = ("Pipeline", "Function")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def metrics_enabled(setting: object, environ: Mapping[str, str]) -> bool:
    """Whether a function emits metrics: ``SHARDLINE_METRICS``, else the plan, else Lambda.

    The environment variable wins, so metrics can be switched on or off without a new
    plan; then the plan's ``metrics`` setting; a plan without one emits them only when
    running in Lambda (``AWS_LAMBDA_FUNCTION_NAME`` is set).

    >>> metrics_enabled(None, {"AWS_LAMBDA_FUNCTION_NAME": "f"})
    True
    >>> metrics_enabled(True, {"SHARDLINE_METRICS": "0"})
    False
    >>> metrics_enabled(None, {})
    False

    Raises:
        ValueError: ``SHARDLINE_METRICS`` is set to something other than 0/1 (or
            true/false, yes/no, on/off).
    """
    value = environ.get(METRICS_ENV)
    if value is not None and value.strip():
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        msg = f"{METRICS_ENV}={value!r}: expected 1 (metrics on) or 0 (metrics off)"
        raise ValueError(msg)
    if isinstance(setting, bool):
        return setting
    return bool(environ.get("AWS_LAMBDA_FUNCTION_NAME"))


class Measurements(Value):
    """What the batch runner measures when metrics are on, beyond the fold's counts.

    Attributes:
        started: when the batch started, epoch seconds (the runner's clock).
        oldest_arrival: arrival time of the batch's first record, epoch seconds (0: none).
        step_ms: per step (see :attr:`processors.chain.Chain.segment_names`), milliseconds.
        sink_ms: per sink, milliseconds in its writes.
        routed: per sink, records handed to it.
        filtered_held: records a filter dropped that the ordering policy also reported
            (held back behind a failure); the metrics count them as filtered only.
    """

    __slots__ = ("filtered_held", "oldest_arrival", "routed", "sink_ms", "started", "step_ms")

    def __init__(  # noqa: PLR0917  # the dataclass's positional order, kept
        self,
        started: float,
        oldest_arrival: float = 0.0,
        step_ms: dict[str, float] | None = None,
        sink_ms: dict[str, float] | None = None,
        routed: dict[str, int] | None = None,
        filtered_held: int = 0,
    ) -> None:
        self.started = started
        self.oldest_arrival = oldest_arrival
        self.step_ms = {} if step_ms is None else step_ms
        self.sink_ms = {} if sink_ms is None else sink_ms
        self.routed = {} if routed is None else routed
        self.filtered_held = filtered_held


_Group = tuple[str, str, dict[str, float | int]]  # (dimension key, value, metrics)


class Metrics:
    """Writes a function's EMF documents. Holds no per-invocation state.

    Args:
        pipeline: the ``Pipeline`` dimension's value.
        function: the ``Function`` dimension's value.
        namespace: the CloudWatch namespace.
        stream: where the lines go; ``None`` is ``sys.stdout`` at the time of writing,
            which is what Lambda sends to CloudWatch Logs.
        now: the clock for ``_aws.Timestamp``.
    """

    def __init__(
        self,
        pipeline: str,
        function: str,
        *,
        namespace: str = NAMESPACE,
        stream: TextIO | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        # CloudWatch refuses empty dimension values; a hand-built runner may have no names.
        self.pipeline = pipeline or "-"
        self.function = function or "-"
        self.namespace = namespace
        self._stream = stream
        self._now = now

    def documents(self, result: BatchResult, batch_size: int) -> list[dict[str, Any]]:
        """The invocation's EMF documents (see the module docstring for the layout)."""
        m = result.measurements
        held = m.filtered_held if m is not None else 0
        totals: dict[str, float | int] = {
            "RecordsIn": result.records_in,
            "BatchSize": batch_size,
            "RecordsFiltered": sum(result.dropped.values()),
            "RecordsUnrouted": result.unrouted,
            "RecordsWritten": sum(result.written.values()),
            "RecordsDeadLettered": len(result.dead_letters),
            "RetryableFailures": len(result.failed) - held,
            "InfrastructureErrors": len(result.infrastructure),
        }
        steps: dict[str, dict[str, float | int]] = {}
        for name, n in result.dropped.items():
            if n:
                steps[name] = {"Filtered": n}
        sinks: dict[str, dict[str, float | int]] = {}
        for name, n in result.written.items():
            if n:
                sinks[name] = {"Written": n}
        if m is not None:
            if m.oldest_arrival > 0:
                totals["OldestRecordAge"] = _ms(max(0.0, m.started - m.oldest_arrival) * 1000)
            for name, ms in m.step_ms.items():
                steps.setdefault(name, {})["StepTime"] = _ms(ms)
            for name, n in m.routed.items():
                if n:
                    sinks.setdefault(name, {})["Routed"] = n
            for name, ms in m.sink_ms.items():
                sinks.setdefault(name, {})["SinkTime"] = _ms(ms)
        reasons = Counter(letter.error or "unknown" for letter in result.dead_letters)
        columns: list[list[_Group]] = [
            [("Step", name, values) for name, values in steps.items()],
            [("Sink", name, values) for name, values in sinks.items()],
            [("Reason", name, {"DeadLettered": n}) for name, n in reasons.items()],
        ]
        timestamp = int(self._now() * 1000)
        docs = []
        for i in range(max(1, *map(len, columns))):
            groups = [column[i] for column in columns if i < len(column)]
            if i == 0:
                groups.insert(0, ("", "", totals))
            docs.append(self._document(timestamp, groups))
        return docs

    def emit(self, result: BatchResult, batch_size: int) -> None:
        """Print the invocation's documents, one JSON line each, and flush.

        Flushed so the lines reach CloudWatch Logs before Lambda freezes the process.
        """
        option = orjson.OPT_APPEND_NEWLINE
        text = b"".join(orjson.dumps(d, option=option) for d in self.documents(result, batch_size))
        out = self._stream if self._stream is not None else sys.stdout
        out.write(text.decode())
        out.flush()

    def flush_document(
        self, windows: int, pending: int, results: Sequence[BatchResult]
    ) -> dict[str, Any]:
        """A flush's one document (:mod:`stream.flush`): its windows and pending emissions,
        and the totals of what it sent on, under the function's dimensions."""
        totals: dict[str, float | int] = {
            "WindowsFlushed": windows,
            "WindowFlushPending": pending,
            "RecordsWritten": sum(sum(r.written.values()) for r in results),
            "RecordsDeadLettered": sum(len(r.dead_letters) for r in results),
            "InfrastructureErrors": sum(len(r.infrastructure) for r in results),
        }
        return self._document(int(self._now() * 1000), [("", "", totals)])

    def emit_flush(self, windows: int, pending: int, results: Sequence[BatchResult]) -> None:
        """Print a flush's document (:meth:`flush_document`) and flush the stream."""
        text = orjson.dumps(
            self.flush_document(windows, pending, results), option=orjson.OPT_APPEND_NEWLINE
        )
        out = self._stream if self._stream is not None else sys.stdout
        out.write(text.decode())
        out.flush()

    def _document(self, timestamp: int, groups: list[_Group]) -> dict[str, Any]:
        directives: list[dict[str, Any]] = []
        doc: dict[str, Any] = {
            "_aws": {"Timestamp": timestamp, "CloudWatchMetrics": directives},
            "Pipeline": self.pipeline,
            "Function": self.function,
        }
        for key, value, values in groups:
            dimensions = [*_BASE_DIMENSIONS, key] if key else list(_BASE_DIMENSIONS)
            if key:
                doc[key] = value
            doc.update(values)
            directives.append({
                "Namespace": self.namespace,
                "Dimensions": [dimensions],
                "Metrics": [{"Name": name, "Unit": UNITS[name]} for name in values],
            })  # fmt: skip
        return doc


def _ms(value: float) -> float:
    return round(value, 3)
