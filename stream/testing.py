"""Factories for Lambda Kinesis events, plain and KPL-aggregated, for your tests and ours.

    >>> from stream.testing import EventFactory
    >>> f = EventFactory()
    >>> event = f.event([f.record({"id": 1}, "k1"), f.aggregate([("k2", b"x"), ("k3", b"y")])])
    >>> len(event["Records"])
    2
    >>> from stream.event import records_from_event
    >>> [(r.partition_key, r.sub_sequence_number) for r in records_from_event(event)]
    [('k1', 0), ('k2', 0), ('k3', 1)]

The events have exactly the shape Lambda sends (``eventID`` is ``shardId-…:<seq>``,
``approximateArrivalTimestamp`` is epoch seconds, data is base64), with sequence numbers of
the real 56-digit form that grow in the order records are made. ``shardline event
FILE.jsonl`` makes such an event from JSON lines, for ``shardline invoke``; the README's
"Producing from Python" shows the factory at work.
"""

from __future__ import annotations

import base64
import hashlib
from typing import TYPE_CHECKING, Any

import orjson

from stream.event import KPL_MAGIC, KinesisEvent, KinesisEventRecord

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = ["EventFactory", "encode_aggregate", "read_shard_event"]

Payload = bytes | str | dict[str, Any] | list[Any] | int | float | bool | None


def _to_bytes(data: Payload) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode()
    encoded: bytes = orjson.dumps(data)
    return encoded


def encode_aggregate(items: Sequence[tuple[str, bytes]]) -> bytes:
    """Encode user records as one KPL aggregate (magic, protobuf, MD5), as the KPL does."""
    from stream.kpl import aggregated_record_type  # noqa: PLC0415  # protobuf only when needed

    message = aggregated_record_type()()
    keys: dict[str, int] = {}
    for key, data in items:
        index = keys.setdefault(key, len(keys))
        user = message.records.add()
        user.partition_key_index = index
        user.data = data
    message.partition_key_table.extend(keys)
    body: bytes = message.SerializeToString()
    return KPL_MAGIC + body + hashlib.md5(body).digest()  # the format's checksum


class EventFactory:
    """Makes event records of one shard with growing sequence numbers.

    Args:
        stream: stream name, used in the ARN.
        shard_id: the shard every record comes from.
        region: region in the ARN and ``awsRegion``.
        start_sequence: the first sequence number.
        arrival: arrival time of the first record (epoch seconds); each next record is
            10 ms later.
    """

    def __init__(
        self,
        stream: str = "test-stream",
        shard_id: str = "shardId-000000000000",
        region: str = "us-east-1",
        start_sequence: int = 49590338271490256608559692538361571095921575989136588898,
        arrival: float = 1_767_225_600.0,
    ) -> None:
        self.stream = stream
        self.shard_id = shard_id
        self.region = region
        self.arn = f"arn:aws:kinesis:{region}:123456789012:stream/{stream}"
        self._next = start_sequence
        self._arrival = arrival

    def next_sequence(self) -> str:
        """The next sequence number (as Kinesis gives them: increasing, sparse)."""
        seq = self._next
        self._next += 1_000_000_007
        return str(seq)

    def record(self, data: Payload, partition_key: str = "key") -> KinesisEventRecord:
        """One plain event record. Dicts, lists and numbers are JSON-encoded."""
        return self._entry(_to_bytes(data), partition_key)

    def raw(self, data: bytes, partition_key: str = "key") -> KinesisEventRecord:
        """One event record with these exact bytes (for bad input: not JSON, not UTF-8)."""
        return self._entry(data, partition_key)

    def aggregate(
        self, items: Iterable[tuple[str, Payload]], partition_key: str | None = None
    ) -> KinesisEventRecord:
        """One KPL-aggregated event record holding these (partition key, data) user records."""
        pairs = [(key, _to_bytes(data)) for key, data in items]
        blob = encode_aggregate(pairs)
        return self._entry(blob, partition_key or (pairs[0][0] if pairs else "agg"))

    def _entry(self, data: bytes, partition_key: str) -> KinesisEventRecord:
        seq = self.next_sequence()
        arrival = self._arrival
        self._arrival += 0.01
        return {
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": partition_key,
                "sequenceNumber": seq,
                "data": base64.b64encode(data).decode(),
                "approximateArrivalTimestamp": round(arrival, 3),
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": f"{self.shard_id}:{seq}",
            "eventName": "aws:kinesis:record",
            "invokeIdentityArn": "arn:aws:iam::123456789012:role/lambda-role",
            "awsRegion": self.region,
            "eventSourceARN": self.arn,
        }

    def event(self, records: Iterable[KinesisEventRecord]) -> KinesisEvent:
        """Wrap event records as the event Lambda passes to the handler."""
        return {"Records": list(records)}

    def batch(self, payloads: Iterable[tuple[str, Payload]]) -> KinesisEvent:
        """An event of plain records from (partition key, data) pairs."""
        return self.event(self.record(data, key) for key, data in payloads)


def read_shard_event(kinesis: Any, stream: str, shard_id: str) -> KinesisEvent:
    """Every record of a shard, read from the start with GetRecords, as the one Lambda event
    a function would receive for them (for checks that read back what producers wrote).

    Args:
        kinesis: a boto3 Kinesis client.
        stream: the stream name.
        shard_id: the shard, e.g. ``shardId-000000000000``.
    """
    description = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]
    arn = description["StreamARN"]
    region = arn.split(":")[3]
    iterator = kinesis.get_shard_iterator(
        StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    entries: list[KinesisEventRecord] = []
    while iterator:
        page = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
        if not page["Records"]:
            break
        for r in page["Records"]:
            seq = r["SequenceNumber"]
            entries.append({
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": r["PartitionKey"],
                    "sequenceNumber": seq,
                    "data": base64.b64encode(r["Data"]).decode(),
                    "approximateArrivalTimestamp": r["ApproximateArrivalTimestamp"].timestamp(),
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"{shard_id}:{seq}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/lambda-role",
                "awsRegion": region,
                "eventSourceARN": arn,
            })  # fmt: skip
        iterator = page.get("NextShardIterator")
    return {"Records": entries}
