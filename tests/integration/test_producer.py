"""The producer against a real moto server: placement, per-key order, limits, aggregation.

What the server cannot do (throttle, fail entries) is covered with a stand-in client in
tests/stream/test_producer_unit.py; a lost acknowledgement (the call applied, its answer
dropped) by tests/faultproxy.py between the producer and the server.
"""

from __future__ import annotations

import base64
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from stream.event import KPL_MAGIC, records_from_event
from stream.producer import Producer, RecordTooLargeError, hash_key
from tests.faultproxy import LOST_ACK, FaultProxy
from tests.integration.fault_fixtures import aws_client

if TYPE_CHECKING:
    from collections.abc import Iterator

    from stream.event import KinesisEvent

pytestmark = pytest.mark.integration


def no_sleep(_: float) -> None:
    """Backoff is not waited for: moto does not throttle."""


def make_stream(kinesis: Any, name: str, shards: int = 2) -> str:
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    kinesis.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    return name


def shard_ranges(kinesis: Any, stream: str) -> dict[str, tuple[int, int]]:
    shards = kinesis.list_shards(StreamName=stream)["Shards"]
    return {
        s["ShardId"]: (
            int(s["HashKeyRange"]["StartingHashKey"]),
            int(s["HashKeyRange"]["EndingHashKey"]),
        )
        for s in shards
    }


def read_shard(kinesis: Any, stream: str, shard_id: str) -> list[dict[str, Any]]:
    """Every record of a shard, oldest first (GetRecords until a page comes back empty)."""
    iterator = kinesis.get_shard_iterator(
        StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records: list[dict[str, Any]] = []
    while True:
        page = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
        if not page["Records"]:
            return records
        records += page["Records"]
        iterator = page["NextShardIterator"]


def lambda_event(stream: str, shard_id: str, records: list[dict[str, Any]]) -> KinesisEvent:
    """The event Lambda would deliver for these GetRecords records of one shard."""
    arn = f"arn:aws:kinesis:us-east-1:123456789012:stream/{stream}"
    return {
        "Records": [
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": r["PartitionKey"],
                    "sequenceNumber": r["SequenceNumber"],
                    "data": base64.b64encode(r["Data"]).decode(),
                    "approximateArrivalTimestamp": r["ApproximateArrivalTimestamp"].timestamp(),
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"{shard_id}:{r['SequenceNumber']}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/lambda-role",
                "awsRegion": "us-east-1",
                "eventSourceARN": arn,
            }
            for r in records
        ]
    }


def put_all(producer: Producer, keys: list[str], pad: int = 0) -> None:
    seen: Counter[str] = Counter()
    for key in keys:
        producer.put({"k": key, "n": seen[key], "pad": "x" * pad}, key)
        seen[key] += 1


def count_calls(kinesis: Any) -> list[tuple[int, int]]:
    """(entries, bytes with partition keys) of every PutRecords call the client makes."""
    calls: list[tuple[int, int]] = []

    def observe(params: dict[str, Any], **_: Any) -> None:
        records = params["Records"]
        size = sum(len(r["Data"]) + len(r["PartitionKey"].encode()) for r in records)
        calls.append((len(records), size))

    kinesis.meta.events.register("provide-client-params.kinesis.PutRecords", observe)
    return calls


@pytest.fixture
def kinesis(aws: Any) -> Any:
    return aws("kinesis")


class TestPlacementAndOrder:
    def test_1200_records_over_2_shards_land_in_order_with_their_positions(self, kinesis, unique):
        stream = make_stream(kinesis, f"orders-{unique}")
        calls = count_calls(kinesis)
        producer = Producer(stream, kinesis, sleep=no_sleep)
        keys = [f"user-{i % 40}" for i in range(1200)]
        put_all(producer, keys)
        result = producer.flush()

        assert result.ok
        assert len(result.results) == 1200
        assert len(calls) == 30  # ordered: one record of each of the 40 keys per call
        ranges = shard_ranges(kinesis, stream)
        position: dict[tuple[str, int], tuple[str, str]] = {}
        for shard_id, (lo, hi) in ranges.items():
            by_key: dict[str, list[int]] = defaultdict(list)
            for record in read_shard(kinesis, stream, shard_id):
                doc = orjson.loads(record["Data"])
                assert record["PartitionKey"] == doc["k"]
                assert lo <= hash_key(record["PartitionKey"]) <= hi
                by_key[doc["k"]].append(doc["n"])
                position[doc["k"], doc["n"]] = (shard_id, record["SequenceNumber"])
            assert by_key  # both shards got keys
            assert all(ns == list(range(30)) for ns in by_key.values())
        assert len(position) == 1200
        for r in result.results:
            assert r.sequence_number
            assert position[r.partition_key, orjson.loads(r.data)["n"]] == (
                r.shard_id,
                r.sequence_number,
            )


class TestLimits:
    def test_a_record_over_1_mib_is_refused_before_any_call(self, kinesis, unique):
        stream = make_stream(kinesis, f"big-{unique}", shards=1)
        calls = count_calls(kinesis)
        producer = Producer(stream, kinesis)
        with pytest.raises(RecordTooLargeError, match=r"record 0 \(partition key 'huge'\)"):
            producer.put(b"x" * (1024 * 1024), "huge")
        assert producer.flush().results == []
        assert calls == []
        assert read_shard(kinesis, stream, "shardId-000000000000") == []

    def test_calls_are_split_to_stay_within_5_mib(self, kinesis, unique):
        stream = make_stream(kinesis, f"wide-{unique}")
        calls = count_calls(kinesis)
        producer = Producer(stream, kinesis, sleep=no_sleep)
        put_all(producer, [f"key-{i:02d}" for i in range(30)], pad=400 * 1024)
        result = producer.flush()
        assert result.ok  # moto refuses a call over 5 MiB as a whole
        assert [entries for entries, _ in calls] == [12, 12, 6]
        assert all(size <= 5 * 1024 * 1024 for _, size in calls)
        stored = sum(len(read_shard(kinesis, stream, s)) for s in shard_ranges(kinesis, stream))
        assert stored == 30


def user_records(kinesis: Any, stream: str, shard_id: str) -> list[Any]:
    """The shard's records as the consumer sees them: Lambda event -> de-aggregated."""
    return records_from_event(lambda_event(stream, shard_id, read_shard(kinesis, stream, shard_id)))


class TestAggregation:
    def test_aggregated_records_come_back_from_the_consumer_in_order(self, kinesis, unique):
        stream = make_stream(kinesis, f"agg-{unique}")
        producer = Producer(stream, kinesis, aggregate=True, sleep=no_sleep)
        put_all(producer, [f"user-{i % 50}" for i in range(1000)], pad=100)
        result = producer.flush()

        assert result.ok
        # ordered: one record of each key per call, so 20 calls of one aggregate per shard
        assert (result.stats.calls, result.stats.kinesis_records) == (20, 40)
        # moto numbers each shard from 1: a position is (shard, sequence, sub-sequence)
        by_position = {
            (r.shard_id, r.sequence_number, r.sub_sequence_number): r for r in result.results
        }
        seen: Counter[str] = Counter()
        for shard_id, (lo, hi) in shard_ranges(kinesis, stream).items():
            raw = read_shard(kinesis, stream, shard_id)
            assert all(r["Data"].startswith(KPL_MAGIC) for r in raw)
            for record in user_records(kinesis, stream, shard_id):
                assert record.error is None
                doc = orjson.loads(record.data)
                assert record.partition_key == doc["k"]
                assert lo <= hash_key(record.partition_key) <= hi
                assert doc["n"] == seen[doc["k"]]  # per-key order, nothing missing
                seen[doc["k"]] += 1
                sent = by_position[shard_id, record.sequence_number, record.sub_sequence_number]
                assert (sent.partition_key, sent.data) == (record.partition_key, record.data)
        assert sum(seen.values()) == 1000

    def test_several_aggregates_per_shard_keep_per_key_order(self, kinesis, unique):
        stream = make_stream(kinesis, f"aggs-{unique}")
        calls = count_calls(kinesis)
        producer = Producer(stream, kinesis, aggregate=True, max_record_bytes=4096, sleep=no_sleep)
        put_all(producer, [f"k{i % 8}" for i in range(600)], pad=60)
        result = producer.flush()

        assert result.ok
        assert result.stats.kinesis_records >= 10  # ~55 KB in aggregates of at most 4 KiB
        assert all(entries <= 2 for entries, _ in calls)  # 8 small records a call: 1 per shard
        seen: Counter[str] = Counter()
        for shard_id in shard_ranges(kinesis, stream):
            for record in user_records(kinesis, stream, shard_id):
                doc = orjson.loads(record.data)
                assert (record.partition_key, doc["n"]) == (doc["k"], seen[doc["k"]])
                seen[doc["k"]] += 1
        assert sum(seen.values()) == 600

    def test_without_order_aggregates_of_one_shard_share_calls(self, kinesis, unique):
        stream = make_stream(kinesis, f"aggu-{unique}", shards=1)
        calls = count_calls(kinesis)
        producer = Producer(
            stream, kinesis, aggregate=True, ordered=False, max_record_bytes=4096, sleep=no_sleep
        )
        put_all(producer, [f"k{i % 8}" for i in range(600)], pad=60)
        assert producer.flush().ok
        assert len(calls) == 1
        records = user_records(kinesis, stream, "shardId-000000000000")
        assert len(records) == 600
        assert all(r.error is None for r in records)


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    with FaultProxy(moto_endpoint, seed=0) as p:
        yield p


class TestLostAcknowledgements:
    """A PutRecords call that Kinesis applied but whose answer was lost is sent again whole:
    its records are in the stream twice. Kinesis cannot prevent that; ``ordered=True`` must
    still keep every key's records in order, duplicates included."""

    @pytest.mark.parametrize("aggregate", [False, True], ids=["plain", "aggregated"])
    def test_resent_calls_never_put_an_older_record_of_a_key_after_a_newer_one(
        self, kinesis, proxy, unique, aggregate
    ):
        stream = make_stream(kinesis, f"acks-{unique}")
        proxy.inject(LOST_ACK, times=2, target="PutRecords")  # the first two calls
        proxy.inject(LOST_ACK, probability=0.3, target="PutRecords")  # then some more
        client = aws_client(proxy.url, "kinesis")  # one attempt per call: ours are seen
        producer = Producer(stream, client, aggregate=aggregate, max_attempts=20, sleep=no_sleep)
        put_all(producer, [f"user-{i % 20}" for i in range(600)], pad=50)
        result = producer.flush()

        assert result.ok
        assert proxy.injected["lost_ack"] >= 2
        every: dict[str, list[int]] = defaultdict(list)  # per key, n of every copy read
        for shard_id in shard_ranges(kinesis, stream):
            for record in user_records(kinesis, stream, shard_id):
                doc = orjson.loads(record.data)
                every[doc["k"]].append(doc["n"])
        assert sum(map(len, every.values())) > 600  # the lost calls were applied: duplicates
        for ns in every.values():
            first_seen = list(dict.fromkeys(ns))
            assert first_seen == list(range(30))  # every record, first copies in put order
            # and no copy of an older record after a newer one (duplicates are adjacent)
            assert ns == sorted(ns)

    @pytest.mark.parametrize("aggregate", [False, True], ids=["plain", "aggregated"])
    def test_with_a_record_id_the_consumer_drops_the_copies(
        self, kinesis, proxy, unique, aggregate
    ):
        stream = make_stream(kinesis, f"rids-{unique}")
        proxy.inject(LOST_ACK, times=2, target="PutRecords")
        client = aws_client(proxy.url, "kinesis")
        producer = Producer(
            stream, client, aggregate=aggregate, record_id="rid", max_attempts=20, sleep=no_sleep
        )
        put_all(producer, [f"user-{i % 20}" for i in range(200)])
        result = producer.flush()

        assert result.ok
        read = [
            record
            for shard_id in shard_ranges(kinesis, stream)
            for record in user_records(kinesis, stream, shard_id)
        ]
        assert len(read) > 200  # copies at other positions: position ids cannot tell
        assert len({r.document_id for r in read}) == len(read)
        kept: dict[str, Any] = {}
        for record in read:  # a consumer keeps the first record of each id
            kept.setdefault(record.record_id("rid"), record)
        assert sorted(kept) == sorted(r.record_id for r in result.results)
        by_id = {r.record_id: r for r in result.results}
        for rid, record in kept.items():
            sent = by_id[rid]
            assert (record.partition_key, record.data) == (sent.partition_key, sent.data)
