"""Lambda's on-failure ranges, resolved into the records they stand for.

When Lambda (or the local event source mapping, :mod:`stream.esm`) gives up on a batch
(retries exhausted, record too old) it sends the on-failure destination a message with a
shard and a sequence range, not the records (``KinesisBatchInfo``: shard, start and end
sequence number, batch size). :class:`RangeResolver` reads the records back:

1. from the stream while it holds them: ``AT_SEQUENCE_NUMBER`` at the start, read until the
   end sequence number; the range counts as retained when the first record read is the start
   and as many Kinesis records as the batch size were read;
2. else from the pipeline's archive (:mod:`deploy.ops.archive`) when it has one: the
   objects of that shard whose positions overlap the range, de-duplicated by position;
3. else the range is *unrecoverable*, with the reason.

Which function a range belongs to: the one the message's ``functionArn`` names
(``<pipeline>-<function>``, :func:`deploy.names.function_name`), else the only function
whose dead-letter queue the message was read from. The resolved records then go through
the redrive path exactly like letters (:func:`deploy.ops.dead_letters.redrive`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from deploy.names import dead_letter_queue_name, function_name
from deploy.ops.archive import Archive, find_archive, list_objects, read_object
from deploy.ops.shards import read_range, stream_name, to_records

if TYPE_CHECKING:

    from deploy.ops.dead_letters import Message, Selection
    from stream.plan import Plan
    from stream.records import Record

__all__ = ["Range", "RangeResolver", "Resolution", "parse_range"]


@dataclass(frozen=True, slots=True)
class Range:
    """What an on-failure message says of the batch Lambda gave up on."""

    shard_id: str
    start: str
    end: str
    size: int
    stream_arn: str = ""
    function_arn: str = ""
    condition: str = ""


def parse_range(body: str) -> Range | None:
    """The range of an on-failure message's body (SQS message or S3 object); ``None`` when
    it is not one.

    >>> r = parse_range('{"requestContext": {"condition": "RetriesExhausted"}, '
    ...     '"KinesisBatchInfo": {"shardId": "s", "startSequenceNumber": "10", '
    ...     '"endSequenceNumber": "12", "batchSize": 2}}')
    >>> r.shard_id, r.start, r.end, r.size, r.condition
    ('s', '10', '12', 2, 'RetriesExhausted')
    """
    try:
        doc = orjson.loads(body)
        info = doc["KinesisBatchInfo"]
        context = doc.get("requestContext") or {}
        return Range(
            str(info["shardId"]),
            str(int(info["startSequenceNumber"])),
            str(int(info["endSequenceNumber"])),
            int(info.get("batchSize") or 0),
            str(info.get("streamArn") or ""),
            str(context.get("functionArn") or ""),
            str(context.get("condition") or ""),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class Resolution:
    """A range resolved: its function and records, where they came from, or why not.

    Attributes:
        function: the function the range belongs to ("" when unknown).
        records: the user records, in shard order.
        source: ``stream`` or ``archive`` ("" when unrecoverable).
        why: why the records cannot be had ("" when resolved).
    """

    function: str
    records: list[Record] = field(default_factory=list)
    source: str = ""
    why: str = ""


class RangeResolver:
    """Resolve on-failure ranges of one plan: from the stream, else the archive.

    Args:
        plan: the compiled plan.
        kinesis: a boto3 Kinesis client.
        s3: a boto3 S3 client (the archive).
        archive: the archive to fall back on; default the plan's (:func:`find_archive`).
    """

    def __init__(
        self, plan: Plan, kinesis: Any, s3: Any, archive: Archive | None = None
    ) -> None:
        self.plan = plan
        self.kinesis = kinesis
        self.s3 = s3
        self.archive = archive if archive is not None else find_archive(plan)
        self.aggregated = (plan.get("stream") or {}).get("aggregated") is True

    def function_of(self, rng: Range, source: str) -> str:
        """The function a range belongs to (module docstring); "" when it cannot be told."""
        name = rng.function_arn.rpartition(":function:")[2].split(":")[0]
        for function in self.plan["functions"]:
            if name and name == function_name(self.plan, function):
                return str(function)
        owners = [f for f in self.plan["functions"] if source in self._queues(f)]
        return str(owners[0]) if len(owners) == 1 else ""

    def selected(self, selection: Selection, message: Message) -> bool:
        """Whether ``dlq`` filters select a range message: ``--function`` and ``--since``
        apply (the time is when the message was sent); ``--step`` and ``--error`` never
        match a range, which has neither."""
        if selection.step is not None or selection.error is not None:
            return False
        if selection.since is not None and message.sent_at < selection.since:
            return False
        if selection.function is None:
            return True
        rng = parse_range(message.body)
        return rng is not None and self.function_of(rng, message.source) == selection.function

    def _queues(self, function: str) -> set[str]:
        sink_name = self.plan["functions"][function].get("on_failure")
        if not sink_name:
            return {dead_letter_queue_name(self.plan)}
        sink = self.plan["sinks"].get(sink_name)
        if sink is None:
            return {sink_name}
        return {str(sink.get("queue") or sink.get("bucket") or sink_name)}

    def __call__(self, message: Message) -> Resolution:
        """The records of a range message (see the module docstring)."""
        rng = parse_range(message.body)
        if rng is None:
            return Resolution("", why="not an on-failure message")
        function = self.function_of(rng, message.source)
        if not function:
            return Resolution(
                "", why=f"its function {rng.function_arn!r} is not one of the file's, and "
                f"queue {message.source!r} is not one function's"
            )  # fmt: skip
        stream = stream_name(rng.stream_arn) or str(self.plan["stream"]["name"])
        retained, why_not = self._from_stream(rng, stream)
        if retained is not None:
            return Resolution(function, retained, "stream")
        if self.archive is None:
            return Resolution(function, why=f"{why_not}, and the pipeline has no archive")
        found, why_archive = self._from_archive(rng)
        if found is not None:
            return Resolution(function, found, "archive")
        return Resolution(function, why=f"{why_not}; {why_archive}")

    def _from_stream(self, rng: Range, stream: str) -> tuple[list[Record] | None, str]:
        try:
            raws = read_range(self.kinesis, stream, rng.shard_id, rng.start, rng.end)
        except Exception as exc:  # botocore's errors: the stream or shard is gone, or trimmed
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
            return None, f"the stream no longer holds it ({code or type(exc).__name__})"
        if not raws or raws[0]["SequenceNumber"] != rng.start:
            return None, "the stream no longer holds it (past its retention)"
        if rng.size and len(raws) < rng.size:
            return None, f"the stream holds {len(raws)} of its {rng.size} records"
        return to_records(raws, rng.shard_id, rng.stream_arn, self.aggregated), ""

    def _from_archive(self, rng: Range) -> tuple[list[Record] | None, str]:
        archive = self.archive
        if archive is None:
            return None, "no archive"
        low, high = (int(rng.start), 0), (int(rng.end), 1 << 62)
        seen: dict[tuple[int, int], Record] = {}
        for obj in list_objects(self.s3, archive):
            if obj.shard_id != rng.shard_id or obj.last < low or obj.first > high:
                continue
            for rec in read_object(self.s3, archive, obj.key):
                position = rec.position
                if low <= position <= high:
                    seen.setdefault(position, rec)
        sequences = {p[0] for p in seen}
        if not seen or (rng.size and len(sequences) < rng.size):
            where = f"s3://{archive.bucket}/{archive.listing_prefix}"
            return None, f"archive {where} holds {len(sequences)} of its {rng.size} records"
        return [seen[p] for p in sorted(seen)], ""
