"""The sink contract: batch-first writes, one outcome per item, per-key order kept.

A sink receives the records routed to it, in shard order, and answers one :class:`Outcome`
per record: ok, retryable (throttle, 5xx, timeout: Lambda delivers it again) or permanent
(mapping error, validation: it goes to the dead-letter sink). An outcome whose ``error`` is
an infrastructure code of :mod:`stream.faults` (a missing table, queue, bucket or stream,
access denied) is not the record's fault: the batch fold reports it for retry whatever its
status, and so it does when a sink raises such an error (no region for its client).

The base class owns the common flow; a backend implements ``_write`` for one chunk and may
set two class attributes:

* ``max_batch``: most items per backend call (25 for BatchWriteItem, 500 for PutRecords...).
* ``per_key_safe``: ``True`` when several records of one partition key may share a call
  without risk that a later one is applied while an earlier one failed: the backend
  applies items one after another and stops at the first failure, or its writes are
  conditional on the record's position (DynamoDB ``latest``, OpenSearch external versions),
  or it applies nothing. Otherwise the base class puts at most one record of a key in each
  call, and after a record of key K fails, does not send the rest of K (policy ``per_key``)
  or the rest of the batch (policy ``strict``). That is how "no sink ever applies record
  n+1 of a key before record n" holds even though bulk APIs fail item by item.

A sink plugin is the same: a subclass of :class:`Sink` whose ``__init__(name, **options)``
takes the sink's settings from the pipeline file (everything but ``type``), implements
``_write``, and registers under the entry-point group ``shardline.sinks`` (or is named
by ``use: "module:Class"`` with its options under ``with:``). Two more class
hooks, for the operator's side (``shardline validate`` and ``shardline template``; neither
runs in Lambda):

* ``option_types``: the options it accepts, by name, with their type(s); ``validate`` then
  reports an unknown option, a wrong type or a missing ``required_options`` entry with the
  file's line, instead of the function failing at start in AWS. ``None`` (the default):
  not declared, the options reach ``__init__`` unchecked.
* :meth:`Sink.iam_statements`: the IAM policy statements the function's role needs to write
  to it, which ``shardline template`` adds to the role of every function that routes to it.

The records of a batch are shared: the route's other sinks and the dead-letter sink get the
very objects the chain returned, and the sinks are written at once, in threads. A sink
that edits a record in ``_write`` (``record.as_dict()[...] = ...``) would change what the
others write and what a dead letter keeps, depending on which thread came first. So a sink
gets its own copies (:func:`own_copies`: the same bytes and position, the document decoded
again on first read) unless its class sets ``shares_records = True``, which the built-ins
do: they never edit a record, and copying would cost them a decoding per record.
"""

from __future__ import annotations

import enum
import time
from abc import ABC, abstractmethod
from binascii import b2a_base64
from functools import partial

from stream.exceptions import ShardlineError
from stream.overlap import run_all, wave_width
from stream.values import FrozenValue

TYPE_CHECKING = False  # not typing's: the handler's import never loads typing (ARCHITECTURE.md)
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any, ClassVar

    # the attempt budget and the backoff every sink uses, re-exported for sink plugins
    # (from stream.aws on first use: see __getattr__ below)
    from stream.aws import BASE_DELAY_S, MAX_ATTEMPTS, MAX_DELAY_S, backoff_delay
    from stream.records import Record

__all__ = [
    "BASE_DELAY_S",
    "MAX_ATTEMPTS",
    "MAX_DELAY_S",
    "OK",
    "DeadLetter",
    "Ordering",
    "Outcome",
    "Sink",
    "SinkContractError",
    "SinkError",
    "Status",
    "backoff_delay",
    "own_copies",
    "permanent",
    "retryable",
]


_FROM_AWS = frozenset({"BASE_DELAY_S", "MAX_ATTEMPTS", "MAX_DELAY_S", "backoff_delay"})


def __getattr__(name: str) -> Any:
    """The retry budget and backoff of :mod:`stream.aws`, re-exported for sink plugins.

    Read from ``stream.aws`` on first use (PEP 562): that module (its enums, dataclass and
    error tables) is a millisecond of cold start that a function whose sinks make no AWS
    call (``stdout``, ``discard``) never needs; every AWS sink imports it anyway.
    """
    if name in _FROM_AWS:
        import stream.aws  # noqa: PLC0415

        return getattr(stream.aws, name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


class SinkError(ShardlineError):
    """Root of the errors of ``sinks/``.

    Hierarchy::

        ShardlineError                  (stream.exceptions)
        └── SinkError
            ├── SinkContractError       a backend's ``_write`` broke the contract (one
            │                           outcome per item); also a RuntimeError
            └── TemplateError           (sinks.templates) a record lacks a field its
                                        template needs; also a ValueError

    A failed write is not an exception: it is a retryable or permanent :class:`Outcome`.
    """


class SinkContractError(SinkError, RuntimeError):
    """A backend's ``_write`` returned other than one outcome per item: a bug in the sink."""


class Ordering(enum.Enum):
    """What a failure holds back, within one batch (DESIGN.md, "Per-key order")."""

    STRICT = "strict"
    """Stop at the first retryable failure: nothing after it is written in this batch."""
    PER_KEY = "per_key"
    """After a failure of key K, skip the rest of K in this batch; other keys go on."""
    NONE = "none"
    """Failures hold nothing back; per-key order is not kept."""


class Status(enum.Enum):
    """The three fates of an item."""

    OK = "ok"
    RETRYABLE = "retryable"
    PERMANENT = "permanent"


class Outcome(FrozenValue):
    """The result of writing one item.

    A :class:`~stream.values.FrozenValue`, not a frozen dataclass: the decorator's compiled
    methods were a third of this module's import, on every cold start.

    Attributes:
        status: ok, retryable or permanent.
        reason: human-readable cause, for dead letters and logs ("" when ok).
        error: the error class name, e.g. ``ProvisionedThroughputExceededException``.
    """

    __slots__ = ("error", "reason", "status")
    #: ``case Outcome(Status.PERMANENT, reason):`` matches as it did the dataclass
    __match_args__ = ("status", "reason", "error")

    status: Status
    reason: str
    error: str

    def __init__(self, status: Status, reason: str = "", error: str = "") -> None:
        setattr_ = object.__setattr__  # frozen (stream.values)
        setattr_(self, "status", status)
        setattr_(self, "reason", reason)
        setattr_(self, "error", error)

    @property
    def ok(self) -> bool:
        """Whether the item was written."""
        return self.status is Status.OK


#: The shared outcome of every successful item.
OK = Outcome(Status.OK)


def retryable(reason: str, error: str = "") -> Outcome:
    """A transient failure: the record will be delivered again."""
    return Outcome(Status.RETRYABLE, reason, error)


def permanent(reason: str, error: str = "") -> Outcome:
    """A failure that retrying cannot fix: the record goes to the dead-letter sink."""
    return Outcome(Status.PERMANENT, reason, error)


class DeadLetter(FrozenValue):
    """A record that cannot be processed, with why and where it failed.

    A :class:`~stream.values.FrozenValue`, not a frozen dataclass: the decorator compiled
    nine methods at import, two thirds of the instructions of importing this module, on
    every cold start (``python -m bench coldstart``). :meth:`replace` stands in for
    ``dataclasses.replace``.

    Attributes:
        record: the failed record (its data as it arrived, or as the chain left it).
        reason: what went wrong and, where we know it, how to fix it.
        error: the error class name.
        step: where it failed: ``event`` (decoding), ``processors[2].filter``, ``sink:orders``.
        function: the function (Lambda) that processed it.
        pipeline: the pipeline name.
        failed_at: epoch seconds.
        redrives: how many times ``shardline dlq redrive`` put the record back through its
            function before this failure (0 on the first pass; the envelope and the SQS
            message carry it only when it is not 0).
    """

    __slots__ = (
        "error",
        "failed_at",
        "function",
        "pipeline",
        "reason",
        "record",
        "redrives",
        "step",
    )
    __match_args__ = (  # positional patterns match as they did the dataclass
        "record", "reason", "error", "step", "function", "pipeline", "failed_at", "redrives",
    )  # fmt: skip

    record: Record
    reason: str
    error: str
    step: str
    function: str
    pipeline: str
    failed_at: float
    redrives: int

    def __init__(  # noqa: PLR0917  # the dataclass's fields, in its positional order
        self,
        record: Record,
        reason: str,
        error: str,
        step: str,
        function: str = "",
        pipeline: str = "",
        failed_at: float = 0.0,
        redrives: int = 0,
    ) -> None:
        setattr_ = object.__setattr__  # frozen (stream.values)
        setattr_(self, "record", record)
        setattr_(self, "reason", reason)
        setattr_(self, "error", error)
        setattr_(self, "step", step)
        setattr_(self, "function", function)
        setattr_(self, "pipeline", pipeline)
        setattr_(self, "failed_at", failed_at)
        setattr_(self, "redrives", redrives)

    def document(self) -> dict[str, Any]:
        """The JSON envelope written to the dead-letter sink: enough to replay the record."""
        rec = self.record
        try:
            data, data_error = rec.data, None
        except (TypeError, ValueError) as exc:  # e.g. nested deeper than orjson writes
            data, data_error = b"", f"the document cannot be encoded as JSON ({exc})"
        envelope = {
            "reason": self.reason,
            "error": self.error,
            "step": self.step,
            "function": self.function,
            "pipeline": self.pipeline,
            "failed_at": self.failed_at or time.time(),
            "shard_id": rec.shard_id,
            "sequence_number": rec.sequence_number,
            "sub_sequence_number": rec.sub_sequence_number,
            "part": rec.part,
            "partition_key": rec.partition_key,
            "event_id": rec.event_id,
            "event_source_arn": rec.event_source_arn,
            "arrival": rec.arrival,
            "data_base64": b2a_base64(data, newline=False).decode(),
        }
        if rec.aggregated:  # its document_id holds the sub-sequence number: a redrive keeps it
            envelope["aggregated"] = True
        if data_error is not None:
            envelope["data_error"] = data_error
        if self.redrives:
            envelope["redrives"] = self.redrives
        return envelope

    @classmethod
    def from_document(cls, doc: Mapping[str, Any], data: bytes | None = None) -> DeadLetter:
        """The letter an envelope of :meth:`document` describes, its record at the failed
        record's position: the inverse of :meth:`document`, so that what the writer puts
        and what ``shardline dlq`` reads cannot drift apart.

        Args:
            doc: the envelope.
            data: the record's data when the envelope does not hold it (an oversize
                letter's message points to the full envelope in S3); default: its
                ``data_base64``.

        Raises:
            KeyError, TypeError, ValueError: ``doc`` is not such an envelope.

        >>> from stream.records import Record
        >>> rec = Record(b'{"id": 1}', "k", "4959", 2, shard_id="shardId-000000000001")
        >>> letter = DeadLetter(rec, "boom", "ValueError", "processors[0]", "fn", "p", 1.5, 1)
        >>> again = DeadLetter.from_document(letter.document())
        >>> again.record.data, again.record.sub_sequence_number, again.redrives
        (b'{"id": 1}', 2, 1)
        """
        from base64 import b64decode  # noqa: PLC0415  # only the operator reads letters

        from stream.records import Record  # noqa: PLC0415

        if data is None:
            data = b64decode(doc["data_base64"], validate=True)
        record = Record(
            data,
            str(doc["partition_key"]),
            str(int(doc["sequence_number"])),  # a decimal string: anything else is not ours
            int(doc.get("sub_sequence_number") or 0),
            doc.get("aggregated") is True,
            shard_id=str(doc.get("shard_id") or ""),
            arrival=float(doc.get("arrival") or 0.0),
            event_id=str(doc.get("event_id") or ""),
            event_source_arn=str(doc.get("event_source_arn") or ""),
        )
        record.part = str(doc.get("part") or "")
        return cls(
            record,
            str(doc["reason"]),
            str(doc["error"]),
            str(doc["step"]),
            str(doc.get("function") or ""),
            str(doc.get("pipeline") or ""),
            float(doc.get("failed_at") or 0.0),
            int(doc.get("redrives") or 0),
        )

    def as_record(self) -> Record:
        """The envelope as a record at the failed record's position, for generic sinks."""
        return self.record.derive(self.document())


class Sink(ABC):
    """Base of every sink. Subclasses implement ``_write``; see the module docstring.

    Args:
        name: the sink's name in the pipeline file (used in outcomes and metrics).
    """

    max_batch: ClassVar[int] = 500
    per_key_safe: ClassVar[bool] = False
    #: Whether ``_write`` may run in several threads at once (it keeps no state per call):
    #: then the calls of a batch that share no partition key are sent together, in waves
    #: (:mod:`stream.overlap`). Off by default, for sink plugins that never promised it.
    concurrent_calls: ClassVar[bool] = False
    #: Accepted options by name, with the type or types of their values (``str``, ``int``,
    #: ``(int, float)``...); ``None``: not declared, not checked by ``validate``.
    option_types: ClassVar[Mapping[str, type | tuple[type, ...]] | None] = None
    #: Options of ``option_types`` that the pipeline file must give.
    required_options: ClassVar[frozenset[str]] = frozenset()
    #: Whether ``_write`` receives the chain's records themselves, shared with the route's
    #: other sinks and the dead letter (only for a sink that never edits a record: the
    #: built-ins), or its own copies (the default, so a plugin's edits stay its own).
    shares_records: ClassVar[bool] = False

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    def iam_statements(cls, options: Mapping[str, Any]) -> list[dict[str, Any]]:
        """IAM statements the function's role needs to write with these options.

        Each is a policy statement (``Action`` and ``Resource``; ``Effect`` defaults to
        ``Allow``, a ``Sid`` is made from the sink's name), whose values may use
        CloudFormation functions (``{"Fn::Sub": "arn:${AWS::Partition}:..."}``).
        ``shardline template`` grants them; the built-ins' grants live in the template.

        >>> Sink.iam_statements({})
        []
        """
        del options  # the default: a sink that calls no AWS API needs nothing
        return []

    def write_batch(
        self, items: Sequence[Record], ordering: Ordering = Ordering.PER_KEY
    ) -> list[Outcome]:
        """Write records in shard order; return one outcome per record, in the same order.

        A sink that does not set ``shares_records`` writes copies of them (:func:`own_copies`).
        """
        if not items:
            return []
        if not self.shares_records:
            items = own_copies(items)
        return self._write_batch(items, ordering)

    def _write_batch(self, items: Sequence[Record], ordering: Ordering) -> list[Outcome]:
        if self.per_key_safe and len(items) <= self.max_batch:
            outcomes = self._write(items)
            self._check(items, outcomes)
            return outcomes
        return self._write_in_chunks(items, ordering)

    def write_dead_letters(self, letters: Sequence[DeadLetter]) -> list[Outcome]:
        """Write dead letters; by default as their JSON envelopes through ``write_batch``."""
        if not letters:
            return []
        # records made for this write alone: nothing to copy
        return self._write_batch([letter.as_record() for letter in letters], Ordering.NONE)

    def close(self) -> None:  # noqa: B027  # a no-op by design: most sinks hold nothing
        """Release what the sink holds (connections, buffers). Idempotent."""

    @abstractmethod
    def _write(self, items: Sequence[Record]) -> list[Outcome]:
        """Write one chunk (at most ``max_batch`` items) and return one outcome per item."""

    def _write_in_chunks(self, items: Sequence[Record], ordering: Ordering) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(items)
        failed_keys: set[str] = set()
        stopped = False
        outage = ""  # why a whole call failed: the rest of the batch is not sent
        keep_order = ordering is not Ordering.NONE
        split_keys = keep_order and not self.per_key_safe
        # calls sent at once in a wave share no key; strict sends one call at a time
        concurrent = self.concurrent_calls and ordering is not Ordering.STRICT
        width = wave_width() if concurrent else 1
        wave: list[list[int]] = []  # the chunks of the wave not sent yet
        wave_keys: set[str] = set()
        chunk: list[int] = []
        chunk_keys: set[str] = set()

        def send() -> None:
            nonlocal stopped, outage
            batches = [[items[i] for i in c] for c in wave]
            answers = run_all([partial(self._write, batch) for batch in batches])
            for c, batch, results in zip(wave, batches, answers, strict=True):
                self._check(batch, results)
                for i, outcome in zip(c, results, strict=True):
                    outcomes[i] = outcome
                    if keep_order and outcome.status is Status.RETRYABLE:
                        failed_keys.add(items[i].partition_key)
                        stopped = stopped or ordering is Ordering.STRICT
                if len(results) > 1 and all(o.status is Status.RETRYABLE for o in results):
                    # a whole call of several records failed after its retries: the backend
                    # is down or throttling everything, and every further call would spend
                    # the same retries (seconds each, per invocation), so the rest waits for
                    # the batch's redelivery. One record failing says nothing about the
                    # others. The calls in flight beside it in its wave have ended already.
                    outage = outage or results[0].reason
                    stopped = True
            wave.clear()
            wave_keys.clear()

        def close() -> None:  # the chunk joins the wave; a full wave is sent
            wave.append(chunk[:])
            wave_keys.update(chunk_keys)
            chunk.clear()
            chunk_keys.clear()
            if len(wave) >= width:
                send()

        for i, item in enumerate(items):
            key = item.partition_key
            if chunk and (len(chunk) >= self.max_batch or (split_keys and key in chunk_keys)):
                close()
            if wave and key in wave_keys:
                # an earlier call of the wave holds this key: it must be applied first, and
                # its fate decides this record
                if chunk:
                    close()
                if wave:
                    send()
            if outage or stopped or key in failed_keys:
                outcomes[i] = self._held(key, outage, stopped)
                continue
            chunk.append(i)
            chunk_keys.add(key)
        if chunk:
            close()
        if wave:
            send()
        return outcomes  # type: ignore[return-value]  # every slot is filled above

    def _held(self, key: str, outage: str, stopped: bool) -> Outcome:
        """The outcome of a record :meth:`_write_in_chunks` does not send."""
        if outage:
            return retryable(
                f"not sent to sink {self.name!r}: an earlier call of the batch failed "
                f"entirely ({outage})",
                "HeldBack",
            )
        return retryable(
            f"not sent to sink {self.name!r}: an earlier record "
            + ("of the batch" if stopped else f"of partition key {key!r}")
            + " failed, and order is kept",
            "HeldBack",
        )

    def _check(self, items: Sequence[Record], outcomes: Sequence[Outcome]) -> None:
        if len(outcomes) != len(items):
            msg = (
                f"sink {self.name!r} ({type(self).__name__}._write) returned {len(outcomes)} "
                f"outcomes for {len(items)} items; it must return one per item"
            )
            raise SinkContractError(msg)


def own_copies(items: Sequence[Record]) -> list[Record]:
    """Records equal to ``items`` that share no mutable state with them: the same bytes
    (immutable), position, fan-out part and routes, the document decoded again from the
    bytes when read. What a sink plugin's ``_write`` gets, so that an edit it makes in
    place reaches neither the route's other sinks nor the dead letter.

    >>> from stream.records import Record
    >>> original = Record(b'{"card": "4111"}', "k", "7", event_id="e7")
    >>> (copy,) = own_copies([original])
    >>> copy.as_dict()["card"] = "****"
    >>> original.get("card"), copy.get("card"), copy.document_id
    ('4111', '****', 'e7')
    """
    from stream.records import Record  # noqa: PLC0415  # loaded already: the batch holds some

    copies = []
    for r in items:
        copy = Record(
            r.data, r.partition_key, r.sequence_number, r.sub_sequence_number, r.aggregated,
            r.shard_id, r.arrival, r.event_id, r.event_source_arn, r.index, r.error,
        )  # fmt: skip
        copy.part = r.part
        copy.routes = r.routes
        copies.append(copy)
    return copies
