"""Reading records back from the stream for a second pass: a sequence range of a shard
(``AT_SEQUENCE_NUMBER``, for Lambda's on-failure ranges) or a time window of every shard
(``AT_TIMESTAMP``, for ``replay --source stream``).

Records come back as the runtime's :class:`stream.records.Record` through the very decoder
Lambda events go through (:func:`stream.event.records_from_event`), so KPL aggregates are
expanded and positions, event ids and arrival times are exactly what the function saw.
"""

from __future__ import annotations

from base64 import b64encode
from typing import TYPE_CHECKING, Any

from stream.event import records_from_event

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from stream.records import Record

__all__ = ["list_shard_ids", "read_range", "stream_name", "to_records", "window_pages"]

_LIMIT = 10_000  # most records one GetRecords returns
_EMPTY_PAGES = 3  # an open shard answers empty pages while caught up: stop after a few


def stream_name(arn_or_name: str) -> str:
    """The stream's name from its ARN, an enhanced fan-out consumer's ARN (a
    ``consumer: efo`` mapping's source), or the name itself.

    >>> stream_name("arn:aws:kinesis:us-east-1:123456789012:stream/shop-events")
    'shop-events'
    >>> stream_name("arn:aws:kinesis:us-east-1:1:stream/shop-events/consumer/shop-d:1700000000")
    'shop-events'
    """
    if ":stream/" not in arn_or_name:
        return arn_or_name
    return arn_or_name.partition(":stream/")[2].split("/consumer/", 1)[0]


def list_shard_ids(kinesis: Any, stream: str) -> list[str]:
    """Every shard of the stream that still holds records (open and closed), by id."""
    ids: list[str] = []
    kwargs: dict[str, Any] = {"StreamName": stream}
    while True:
        page = kinesis.list_shards(**kwargs)
        ids += [s["ShardId"] for s in page["Shards"]]
        token = page.get("NextToken")
        if not token:
            return sorted(ids)
        kwargs = {"NextToken": token}


def to_records(
    raws: Sequence[Mapping[str, Any]], shard_id: str, stream_arn: str = "", aggregated: bool = False
) -> list[Record]:
    """GetRecords' records of one shard as the runtime's records (aggregates expanded),
    positions read at once: they are held for a whole replay or redrive, and a record that
    kept its event entry would hold a second (base64) copy of its data."""
    entries = []
    for raw in raws:
        stamp = raw["ApproximateArrivalTimestamp"]
        arrival = round(stamp if isinstance(stamp, int | float) else stamp.timestamp(), 3)
        entries.append({
            "kinesis": {
                "data": b64encode(raw["Data"]).decode(),
                "partitionKey": raw["PartitionKey"],
                "sequenceNumber": raw["SequenceNumber"],
                "approximateArrivalTimestamp": arrival,
            },
            "eventID": f"{shard_id}:{raw['SequenceNumber']}",
            "eventSourceARN": stream_arn,
        })  # fmt: skip
    return records_from_event({"Records": entries}, aggregated=aggregated, lazy=False)


def _pages(
    kinesis: Any, stream: str, shard_id: str, start: Mapping[str, Any], *, limit: int = _LIMIT
) -> Iterator[list[dict[str, Any]]]:
    """Pages of GetRecords (``limit`` records at most) from ``start`` until the shard is read
    up to its latest record (or its end, for a closed shard)."""
    iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard_id, **start)[
        "ShardIterator"
    ]
    empty = 0
    while iterator and empty < _EMPTY_PAGES:
        page = kinesis.get_records(ShardIterator=iterator, Limit=limit)
        records = page.get("Records", [])
        if records:
            empty = 0
            yield records
        elif page.get("MillisBehindLatest", 0) == 0:
            empty += 1
        iterator = page.get("NextShardIterator")


def read_range(
    kinesis: Any, stream: str, shard_id: str, start: str, end: str
) -> list[dict[str, Any]]:
    """The shard's records from sequence number ``start`` to ``end``, both included
    (``AT_SEQUENCE_NUMBER``). Empty, or not starting at ``start``, when the stream no
    longer holds them; the caller checks.

    Raises:
        botocore.exceptions.ClientError: the stream or shard is gone, or the sequence number
            is not one of the shard's.
    """
    found: list[dict[str, Any]] = []
    last = int(end)
    request = {"ShardIteratorType": "AT_SEQUENCE_NUMBER", "StartingSequenceNumber": start}
    for page in _pages(kinesis, stream, shard_id, request):
        for raw in page:
            if int(raw["SequenceNumber"]) > last:
                return found
            found.append(raw)
    return found


def window_pages(
    kinesis: Any,
    stream: str,
    shard_id: str,
    since: float,
    until: float,
    *,
    limit: int = _LIMIT,
) -> Iterator[list[dict[str, Any]]]:
    """The shard's records that arrived in ``[since, until)`` (``AT_TIMESTAMP``), page by
    page in shard order, lazily: a caller holds one page (at most ``limit`` records) at a
    time, never the whole shard's window. Pages with nothing in the window are left out."""
    request = {"ShardIteratorType": "AT_TIMESTAMP", "Timestamp": since}
    for page in _pages(kinesis, stream, shard_id, request, limit=limit):
        kept: list[dict[str, Any]] = []
        for raw in page:
            stamp = raw["ApproximateArrivalTimestamp"]
            arrival = stamp if isinstance(stamp, int | float) else stamp.timestamp()
            if arrival >= until:
                if kept:
                    yield kept
                return
            if arrival >= since:
                kept.append(raw)
        if kept:
            yield kept
