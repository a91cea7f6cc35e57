"""Lambda Kinesis event -> records.

The event is the exact shape Lambda's event source mapping delivers (one shard's batch, in
sequence order). Data is base64; a record whose data starts with the KPL magic bytes
``F3 89 9A C2`` is a KPL aggregate and is expanded into its user records, which keep the
parent's sequence number and get a sub-sequence number.

Why not ``aws_kinesis_agg.deaggregator``: on a protobuf error it prints to stderr and drops
the rest of the aggregate, losing data silently. We check the digest and parse with the
library's own protobuf message ourselves. What happens to data that starts with the magic
bytes but fails those checks depends on the stream (``stream.aggregated`` in the file, carried
by the plan to :class:`stream.batch.BatchRunner`):

* not aggregated (the default): it is a plain record that happens to start with those bytes,
  and is passed on as one, unchanged, as the KCL and ``aws_kinesis_agg`` do. Dead-lettering it
  would refuse valid plain data that a KCL consumer of the same stream accepts;
* aggregated: producers aggregate, so it is a corrupt aggregate, and becomes one record
  carrying the reason (``Record.error``), which the batch sends to the dead-letter sink.

The protobuf module is imported only when the magic bytes are seen, so plain pipelines never
load it.
"""

from __future__ import annotations

from binascii import Error as BinasciiError
from binascii import a2b_base64

from stream.exceptions import ShardlineError
from stream.lazy import lazy_names
from stream.records import _UNSET, EventRecord, Record

TYPE_CHECKING = False  # not typing's: the handler's import never loads typing (ARCHITECTURE.md)
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from stream.shapes import KinesisEvent, KinesisEventRecord, KinesisPayload

__all__ = [
    "KPL_MAGIC",
    "KinesisEvent",
    "KinesisEventRecord",
    "KinesisPayload",
    "Undeferred",
    "deaggregate",
    "records_from_event",
    "undecodable",
]

#: First four bytes of a KPL aggregated record.
KPL_MAGIC = b"\xf3\x89\x9a\xc2"
_DIGEST_SIZE = 16

_SHAPES = frozenset({"KinesisEvent", "KinesisEventRecord", "KinesisPayload"})


# the TypedDict shapes need typing, which a cold start does not load: imported on first use
__getattr__ = lazy_names(__name__, dict.fromkeys(_SHAPES, "stream.shapes"))


def records_from_event(
    event: Mapping[str, Any], *, aggregated: bool = False, lazy: bool = True, decode: bool = True
) -> list[Record]:
    """Turn a Lambda Kinesis event into records, in shard order, aggregates expanded.

    With ``lazy`` (the handler's way) a record keeps its event entry and reads its position
    from it on first use (:class:`stream.records.EventRecord`): cheap when the event is
    alive for the invocation anyway. ``lazy=False`` reads every position at once and keeps
    no entry: for records held long after their event (replay and redrive read whole
    shards: an entry holds a base64 copy of the data, so keeping it more than doubles what
    they hold).

    ``decode=False`` (with ``lazy``) does not even read the entries: each record's bytes
    stay in its entry as base64 text, decoded when first read
    (:attr:`stream.records.Record.data`), so that a batch does not hold every record's bytes
    at once on top of the documents decoded from them (that was most of the handler's peak
    memory above a plain loop's: ``python -m bench memory``), and the text is read once,
    where it is decoded (reading it here too cost the handler about 7% of its time). It is
    only for a caller whose first reader checks every record before anything else sees it
    (the handler, when its chain starts with a fused run that reads the document:
    :attr:`processors.chain.Chain.decodes_data`): that reader reports bad base64 as this
    function would, and raises :class:`Undeferred` for an entry that is not what this
    function reads without looking (no ``kinesis.data``) or that may be a KPL aggregate
    (bytes that are not JSON and start with the magic bytes): the caller then parses the
    event again with ``decode=True``.

    Never raises for bad record content: undecodable base64 gives a record with ``error``
    set, so the batch can dead-letter it with the reason; so does data with the KPL magic
    bytes that is not a valid aggregate when ``aggregated`` (the stream's setting) is true.
    When it is false, such data is a plain record, as the KCL reads it.

    Raises:
        ValueError: the event is not a Kinesis event at all (no ``Records`` list).
    """
    entries = event.get("Records")
    if not isinstance(entries, list):
        msg = "not a Kinesis event: expected a 'Records' list (the shape Lambda sends)"
        raise ValueError(msg)  # a wrong event is a wrong value for the caller
    out: list[Record] = []
    append = out.append
    unset = _UNSET
    index = 0
    defer = lazy and not decode
    # The hot path: per entry, base64 (unless deferred) and seven slot stores. The position
    # (key, sequence number, shard...) stays in the entry until something reads it.
    for entry in entries:
        record = EventRecord()
        if defer:  # the entry is not even read: its first reader decodes it (see above)
            record._data = None
            record.error = None
            record._doc = unset
            record._entry = entry
            record.index = index
            record.part = ""
            record.routes = None
            index += 1
            append(record)
            continue
        kinesis = entry["kinesis"]
        text = kinesis["data"]
        try:
            record._data = data = a2b_base64(text, strict_mode=True)
            record.error = None
        except (BinasciiError, TypeError, ValueError) as exc:
            record._data = data = undecodable(record, text, exc)
        record._doc = unset
        record._entry = entry
        record.index = index
        record.part = ""
        record.routes = None
        # the first byte, then the rest: a one-byte slice is a cached object, no allocation
        if data[:1] == b"\xf3" and data.startswith(KPL_MAGIC) and record.error is None:
            users = deaggregate(record)
            if record.error is not None and not aggregated:  # plain data, as the KCL says
                record.error = None
            for user in users:
                user.index = index
                index += 1
                append(user)
            continue
        index += 1
        append(record)
    if not lazy:
        _settle_all(out)
    return out


def _settle_all(records: list[Record]) -> None:
    """Read every position now and let go of the event entries (``lazy=False``)."""
    settle = EventRecord._settle
    for record in records:
        if type(record) is EventRecord:
            settle(record)
        record._entry = None


class Undeferred(ShardlineError):
    """The first reader of records parsed with ``records_from_event(decode=False)`` met one
    that parsing must see (an aggregate to expand, an entry without data): parse the event
    again with ``decode=True``. Not an error of the batch: nothing has been applied yet."""


def undecodable(record: Record, text: Any, exc: Exception) -> bytes:
    """Mark ``record``, whose event data ``text`` is not base64 (``exc`` said why), as
    undecodable (``error``, which the batch dead-letters); return the bytes it keeps: the
    text as it came."""
    record.error = f"data is not valid base64 ({exc})"
    return str(text).encode()


def deaggregate(parent: Record) -> list[Record]:
    """Expand a KPL aggregate into its user records, or one record with ``error`` set.

    Every user record keeps the parent's sequence number, shard, arrival time and event id,
    and gets its index in the aggregate as sub-sequence number.
    """
    data = parent.data
    body = data[len(KPL_MAGIC) : -_DIGEST_SIZE]
    if len(data) <= len(KPL_MAGIC) + _DIGEST_SIZE:
        return [_corrupt(parent, "KPL aggregate too short to hold a digest")]
    import hashlib  # noqa: PLC0415  # OpenSSL's load is milliseconds: aggregates only

    if hashlib.md5(body).digest() != data[-_DIGEST_SIZE:]:  # the format's checksum
        return [_corrupt(parent, "KPL aggregate checksum (MD5) mismatch: the record is corrupt")]
    from google.protobuf.message import DecodeError  # noqa: PLC0415  # only for aggregates

    from stream.kpl import aggregated_record_type  # noqa: PLC0415

    message = aggregated_record_type()()
    try:
        message.ParseFromString(body)
    except DecodeError as exc:
        return [_corrupt(parent, f"KPL aggregate is not a valid protobuf message ({exc})")]
    keys: Sequence[str] = message.partition_key_table
    out: list[Record] = []
    for sub, user in enumerate(message.records):
        if user.partition_key_index >= len(keys):
            reason = (
                f"KPL aggregate user record {sub} names partition key index "
                f"{user.partition_key_index}, but the table has {len(keys)} keys"
            )
            return [_corrupt(parent, reason)]
        out.append(
            Record(
                user.data,
                keys[user.partition_key_index],
                parent.sequence_number,
                sub_sequence_number=sub,
                aggregated=True,
                shard_id=parent.shard_id,
                arrival=parent.arrival,
                event_id=parent.event_id,
                event_source_arn=parent.event_source_arn,
            )
        )
    if not out:
        return [_corrupt(parent, "KPL aggregate holds no user records")]
    return out


def _corrupt(parent: Record, reason: str) -> Record:
    parent.error = reason
    return parent
