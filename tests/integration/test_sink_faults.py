"""Sinks through the fault proxy: throttles, 5xx, dropped connections and timeouts are
retried by the sink itself (botocore and opensearch-py make one attempt), end retryable when
they outlast the attempts, and never leave a table, bucket, queue or index other than a
clean run would (beyond what DESIGN.md allows: duplicates on a standard queue)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import pytest

from deploy.local.readback import table_items
from sinks.base import Ordering, Status
from sinks.dynamodb import DynamoDBSink
from sinks.kinesis import KinesisSink
from sinks.opensearch import OpenSearchSink
from sinks.s3 import S3Sink
from sinks.sqs import SQSSink
from stream.overlap import ITEM_WAVE_WIDTH, overlapping
from stream.testing import EventFactory
from tests.faultproxy import (
    DROP,
    LOST_ACK,
    OPENSEARCH_REJECTED,
    S3_SLOWDOWN,
    THROTTLE,
    THROTTLING,
    UNAVAILABLE,
    Fault,
    FaultProxy,
    slow,
)
from tests.integration.fault_fixtures import aws_client, no_sleep
from tests.integration.test_dynamodb_sink import batch, make_table

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sinks.base import Outcome
    from stream.records import Record

pytestmark = pytest.mark.integration

DDB_WRITES = ("BatchWriteItem", "PutItem")
STALL = slow(30, forward=False)  # no answer until the proxy stops: a read timeout
LATE_DROP = Fault("drop", delay=0.3, drop=True)
"""A drop that the proxy takes its time to make, as its thread does on a loaded machine."""
CONNECTION_FAULTS = pytest.mark.parametrize(
    "fault", [DROP, LATE_DROP, STALL], ids=["drop", "late-drop", "stall"]
)
BOTOCORE_ERROR = {"drop": "ConnectionClosedError", "slow": "ReadTimeoutError"}
"""What botocore raises, by fault name; the sinks name it as the outcome's error."""
READ_TIMEOUT_S = {"drop": 10.0, "slow": 0.1}
"""The client's read timeout, by fault name: short only where the timeout is the fault. A
drop is made by the proxy's thread in this process; on a loaded machine it may come after
0.1 s, and a client that short would report a timeout instead of the dropped connection."""


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    with FaultProxy(moto_endpoint, seed=3) as p:
        yield p


@pytest.fixture
def ddb(aws: Any) -> Any:
    """A client straight to moto, for setup and reading back."""
    return aws("dynamodb")


def inject_writes(proxy: FaultProxy, fault: Fault, probability: float = 1.0) -> None:
    for operation in DDB_WRITES:
        proxy.inject(fault, probability=probability, target=operation)


def orders(n: int, keys: int, version: str = "v1", later: bool = False) -> list[Record]:
    """``n`` records over ``keys`` keys; ``later`` ones come after the others in the shard."""
    factory = EventFactory()
    if later:
        factory = EventFactory(start_sequence=int(factory.next_sequence()) + 10**15)
    return batch([{"order_id": f"o{i % keys}", "i": i, "v": version} for i in range(n)], factory)


class TestDynamoDB:
    @staticmethod
    def sink(client: Any, table: str, mode: str, attempts: int) -> DynamoDBSink:
        return DynamoDBSink(
            "orders",
            table=table,
            key="order_id",
            mode=mode,
            client=client,
            max_attempts=attempts,
            sleep=no_sleep,
            now=lambda: 1.0,
        )

    def clean_run(self, ddb: Any, unique: str, mode: str, records: list[Record]) -> list[Any]:
        table = make_table(ddb, f"clean-{unique}", append=mode == "append")
        assert all(o.ok for o in self.sink(ddb, table, mode, 1).write_batch(records))
        return sorted_items(ddb, table)

    @pytest.mark.parametrize("mode", ["latest", "append"])
    @pytest.mark.parametrize("fault", [THROTTLE, LOST_ACK], ids=lambda f: f.name)
    def test_thirty_percent_faults_on_writes_end_ok_and_equal_a_clean_run(
        self, proxy, ddb, unique, mode, fault
    ):
        records = orders(60, keys=15)
        expected = self.clean_run(ddb, unique, mode, records)
        table = make_table(ddb, f"faulty-{unique}", append=mode == "append")
        inject_writes(proxy, fault, probability=0.3)
        sink = self.sink(aws_client(proxy.url, "dynamodb"), table, mode, attempts=12)

        outcomes = sink.write_batch(records)

        assert [o.status for o in outcomes] == [Status.OK] * len(records)
        assert proxy.injected[fault.name] > 0
        assert sorted_items(ddb, table) == expected

    @pytest.mark.parametrize("mode", ["latest", "append"])
    def test_a_persistent_503_makes_every_record_retryable_and_changes_nothing(
        self, proxy, ddb, unique, mode
    ):
        table = make_table(ddb, f"orders-{unique}", append=mode == "append")
        self.sink(ddb, table, mode, 1).write_batch(orders(6, keys=3))
        before = sorted_items(ddb, table)
        inject_writes(proxy, UNAVAILABLE)
        sink = self.sink(aws_client(proxy.url, "dynamodb"), table, mode, attempts=3)

        records = orders(30, keys=3, version="v2", later=True)
        with overlapping(False):  # calls in turn: at once, a wave's calls are all made
            outcomes = sink.write_batch(records)

        assert all(o.status is Status.RETRYABLE for o in outcomes)
        assert "ServiceUnavailable" in outcomes[0].reason
        if mode == "latest":  # one conditional put per key: the first key's 3 attempts only
            first = [o for o, r in zip(outcomes, records, strict=True) if r.partition_key == "o0"]
            assert {o.error for o in first} == {"ServiceUnavailable"}
            assert {o.error for o in outcomes} == {"ServiceUnavailable", "HeldBack"}
            assert proxy.injected["unavailable"] == 1 * 3
        else:  # 30 items in calls of 25: the first fails entirely, the second is not made
            assert [o.error for o in outcomes] == ["ServiceUnavailable"] * 25 + ["HeldBack"] * 5
            assert "an earlier call failed" in outcomes[-1].reason
            assert proxy.injected["unavailable"] == 1 * 3
        assert sorted_items(ddb, table) == before

    @pytest.mark.parametrize("mode", ["latest", "append"])
    @CONNECTION_FAULTS
    def test_connection_faults_are_retryable_and_change_nothing(
        self, proxy, ddb, unique, mode, fault
    ):
        table = make_table(ddb, f"orders-{unique}", append=mode == "append")
        inject_writes(proxy, fault)
        client = aws_client(proxy.url, "dynamodb", read_timeout=READ_TIMEOUT_S[fault.name])
        sink = self.sink(client, table, mode, attempts=2)

        outcomes = sink.write_batch(orders(2, keys=1))

        assert {(o.status, o.error) for o in outcomes} == {
            (Status.RETRYABLE, BOTOCORE_ERROR[fault.name])
        }
        assert proxy.forwarded == 0  # only the writes go through the proxy here
        assert table_items(ddb, table) == []

    @pytest.mark.parametrize(
        "fault", [UNAVAILABLE, DROP, STALL], ids=["503", "drop", "stall"]
    )
    @pytest.mark.parametrize("at_once", [False, True], ids=["in-turn", "overlapped"])
    def test_an_outage_costs_a_latest_batch_one_key_s_attempts_not_one_per_key(
        self, proxy, ddb, unique, fault, at_once
    ):
        # More keys than a wave holds, one conditional put each: before, each key spent its
        # own attempts (and backoff) on a service that was down, keys x 8 attempts of the
        # Lambda's time. Overlapped, the keys of the first wave try at once (one key's
        # time), and no later wave is sent.
        keys = ITEM_WAVE_WIDTH + 20
        table = make_table(ddb, f"orders-{unique}", append=False)
        inject_writes(proxy, fault)
        client = aws_client(proxy.url, "dynamodb", read_timeout=0.1)
        attempts: list[str] = []
        client.meta.events.register("before-call.dynamodb", lambda model, **_: attempts.append(1))
        sink = self.sink(client, table, "latest", attempts=3)

        with overlapping(at_once):
            outcomes = sink.write_batch(orders(keys, keys=keys))

        tried = ITEM_WAVE_WIDTH if at_once else 1
        assert {o.status for o in outcomes} == {Status.RETRYABLE}
        assert len(attempts) == tried * 3  # the first wave's keys, then nothing more is sent
        assert [o.error for o in outcomes[tried:]] == ["HeldBack"] * (keys - tried)
        assert "failed" in outcomes[-1].reason
        assert table_items(ddb, table) == []

    def test_a_throttled_key_holds_back_no_other_key(self, proxy, ddb, unique):
        # A throttle can be one hot partition's: the other keys are still tried.
        table = make_table(ddb, f"orders-{unique}", append=False)
        inject_writes(proxy, THROTTLE)
        sink = self.sink(aws_client(proxy.url, "dynamodb"), table, "latest", attempts=2)

        outcomes = sink.write_batch(orders(5, keys=5))

        assert [o.error for o in outcomes] == ["ProvisionedThroughputExceededException"] * 5
        assert proxy.injected["throttle"] == 5 * 2

    @pytest.mark.parametrize("mode", ["latest", "append"])
    def test_a_slow_response_past_the_read_timeout_is_retryable_and_redelivery_converges(
        self, proxy, ddb, unique, mode
    ):
        records = orders(3, keys=1)
        expected = self.clean_run(ddb, unique, mode, records)
        table = make_table(ddb, f"faulty-{unique}", append=mode == "append")
        inject_writes(proxy, slow(30))  # the write lands; the answer comes too late
        impatient = aws_client(proxy.url, "dynamodb", read_timeout=0.1)

        outcomes = self.sink(impatient, table, mode, attempts=2).write_batch(records)

        assert {(o.status, o.error) for o in outcomes} == {(Status.RETRYABLE, "ReadTimeoutError")}
        applied = eventually(lambda: sorted_items(ddb, table), expected)
        assert applied == expected  # applied, though never acknowledged
        proxy.clear()  # Lambda delivers the batch again, to a healthy service
        again = self.sink(aws_client(proxy.url, "dynamodb"), table, mode, 2).write_batch(records)
        assert all(o.ok for o in again)
        assert sorted_items(ddb, table) == expected


def eventually(read: Callable[[], Any], expected: Any, within: float = 30.0) -> Any:
    """What ``read`` returns once it equals ``expected``, or at the deadline: for effects
    that land in another thread (a held request was forwarded, its answer is not back)."""
    deadline = time.monotonic() + within
    while (got := read()) != expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return got


def sorted_items(client: Any, table: str) -> list[Any]:
    items = table_items(client, table)
    return sorted(items, key=lambda i: (i["order_id"]["S"], i["_position"]["S"]))


class TestS3:
    @staticmethod
    def sink(client: Any, bucket: str, attempts: int) -> S3Sink:
        return S3Sink(
            "archive",
            bucket=bucket,
            prefix="raw/",
            partition="kind={kind}",
            client=client,
            max_attempts=attempts,
            sleep=no_sleep,
        )

    @staticmethod
    def records() -> list[Record]:
        return batch([{"order_id": f"o{i % 5}", "kind": i % 5, "i": i} for i in range(30)])

    @pytest.fixture
    def s3(self, aws: Any) -> Any:
        return aws("s3")

    def bucket(self, s3: Any, name: str) -> str:
        s3.create_bucket(Bucket=name)
        return name

    @pytest.mark.parametrize("at_once", [False, True], ids=["in-turn", "overlapped"])
    @pytest.mark.parametrize("fault", [S3_SLOWDOWN, LOST_ACK], ids=lambda f: f.name)
    def test_thirty_percent_faults_on_puts_end_ok_and_equal_a_clean_run(
        self, proxy, s3, unique, fault, at_once
    ):
        clean = self.bucket(s3, f"clean-{unique}")
        assert all(o.ok for o in self.sink(s3, clean, 1).write_batch(self.records()))
        faulty = self.bucket(s3, f"faulty-{unique}")
        proxy.inject(fault, probability=0.3, method="PUT")
        sink = self.sink(aws_client(proxy.url, "s3"), faulty, attempts=12)

        with overlapping(at_once):  # five objects of distinct keys: one wave, at once
            outcomes = sink.write_batch(self.records())

        assert [o.status for o in outcomes] == [Status.OK] * 30
        assert proxy.injected[fault.name] > 0
        assert objects(s3, faulty) == objects(s3, clean)
        assert len(objects(s3, clean)) == 5

    @pytest.mark.parametrize("at_once", [False, True], ids=["in-turn", "overlapped"])
    def test_a_persistent_slowdown_makes_every_record_retryable_and_writes_nothing(
        self, proxy, s3, unique, at_once
    ):
        bucket = self.bucket(s3, f"archive-{unique}")
        proxy.inject(S3_SLOWDOWN)
        # five objects of distinct keys (kind = key), then five more that share their keys
        records = self.records()[:5] + batch(
            [{"order_id": f"o{i}", "kind": i + 5, "i": i} for i in range(5)]
        )
        with overlapping(at_once):
            outcomes = self.sink(aws_client(proxy.url, "s3"), bucket, 3).write_batch(records)

        tried = 5 if at_once else 1  # the first wave's objects: five at once, or one
        assert {o.status for o in outcomes} == {Status.RETRYABLE}
        assert [o.error for o in outcomes] == ["SlowDown"] * tried + ["HeldBack"] * (10 - tried)
        assert proxy.injected["s3_slowdown"] == 3 * tried  # later objects were not attempted
        assert objects(s3, bucket) == {}

    @CONNECTION_FAULTS
    def test_connection_faults_are_retryable_and_write_nothing(self, proxy, s3, unique, fault):
        bucket = self.bucket(s3, f"archive-{unique}")
        proxy.inject(fault)
        client = aws_client(proxy.url, "s3", read_timeout=READ_TIMEOUT_S[fault.name])
        outcomes = self.sink(client, bucket, 2).write_batch(self.records()[:3])

        assert {o.status for o in outcomes} == {Status.RETRYABLE}
        assert outcomes[0].error == BOTOCORE_ERROR[fault.name]  # the rest are held back
        assert objects(s3, bucket) == {}


class TestSQS:
    @staticmethod
    def sink(client: Any, url: str, attempts: int) -> SQSSink:
        return SQSSink("queue", queue=url, client=client, max_attempts=attempts, sleep=no_sleep)

    @staticmethod
    def records() -> list[Record]:
        return batch([{"order_id": f"o{i % 4}", "i": i} for i in range(20)])

    @staticmethod
    def wide() -> list[Record]:
        """Forty records of twenty keys: waves of two calls of ten (one record per key)."""
        return batch([{"order_id": f"o{i % 20}", "i": i} for i in range(40)])

    @pytest.fixture
    def sqs(self, aws: Any) -> Any:
        return aws("sqs")

    def queue(self, proxy: FaultProxy, name: str) -> str:
        """The queue, made through the proxy: its URL names the proxy, like the sink's."""
        attributes = {"FifoQueue": "true"} if name.endswith(".fifo") else {}
        response = aws_client(proxy.url, "sqs").create_queue(QueueName=name, Attributes=attributes)
        return str(response["QueueUrl"])

    @pytest.mark.parametrize("at_once", [False, True], ids=["in-turn", "overlapped"])
    def test_thirty_percent_throttles_end_ok_and_each_record_arrives_once(
        self, proxy, sqs, unique, at_once
    ):
        url = self.queue(proxy, f"q-{unique}")
        proxy.inject(THROTTLING, probability=0.3, target="SendMessageBatch")
        sink = self.sink(aws_client(proxy.url, "sqs"), url, attempts=12)

        with overlapping(at_once):
            outcomes = sink.write_batch(self.wide(), Ordering.PER_KEY)

        assert [o.status for o in outcomes] == [Status.OK] * 40
        assert proxy.injected["throttling"] > 0
        assert sorted(received(sqs, url)) == sorted(r.data.decode() for r in self.wide())

    @pytest.mark.parametrize("at_once", [False, True], ids=["in-turn", "overlapped"])
    @pytest.mark.parametrize("fifo", [False, True], ids=["standard", "fifo"])
    def test_lost_acks_end_ok_with_duplicates_only_on_a_standard_queue(
        self, proxy, sqs, unique, fifo, at_once
    ):
        url = self.queue(proxy, f"q-{unique}" + (".fifo" if fifo else ""))
        proxy.inject(LOST_ACK, probability=0.3, target="SendMessageBatch")
        sink = self.sink(aws_client(proxy.url, "sqs"), url, attempts=12)

        with overlapping(at_once):
            outcomes = sink.write_batch(self.wide(), Ordering.PER_KEY)

        assert [o.status for o in outcomes] == [Status.OK] * 40
        assert proxy.injected["lost_ack"] > 0
        bodies = received(sqs, url)
        assert set(bodies) == {r.data.decode() for r in self.wide()}
        if fifo:
            assert len(bodies) == 40  # the deduplication id made each resend a no-op
            for key in {r.partition_key for r in self.wide()}:  # a group's order is the key's
                mine = [json.loads(b)["i"] for b in bodies if json.loads(b)["order_id"] == key]
                assert mine == sorted(mine)
        else:
            assert len(bodies) > 40  # at-least-once: consumers de-duplicate by position

    def test_a_persistent_503_makes_every_record_retryable_and_sends_nothing(
        self, proxy, sqs, unique
    ):
        url = self.queue(proxy, f"q-{unique}")
        proxy.inject(UNAVAILABLE, target="SendMessageBatch")
        sink = self.sink(aws_client(proxy.url, "sqs"), url, attempts=3)

        outcomes = sink.write_batch(self.records(), Ordering.NONE)

        # 20 messages in calls of 10: the first call fails all 3 attempts, and the second
        # is not made (the queue is down: it would spend the same retries), only held back
        assert [(o.status, o.error) for o in outcomes] == [
            (Status.RETRYABLE, "ServiceUnavailable")
        ] * 10 + [(Status.RETRYABLE, "HeldBack")] * 10
        assert "failed entirely" in outcomes[-1].reason
        assert proxy.injected["unavailable"] == 3
        assert received(sqs, url) == []

    @CONNECTION_FAULTS
    def test_connection_faults_are_retryable_and_send_nothing(self, proxy, sqs, unique, fault):
        url = self.queue(proxy, f"q-{unique}")
        proxy.inject(fault, target="SendMessageBatch")
        client = aws_client(proxy.url, "sqs", read_timeout=READ_TIMEOUT_S[fault.name])

        outcomes = self.sink(client, url, 2).write_batch(self.records()[:4], Ordering.NONE)

        assert {(o.status, o.error) for o in outcomes} == {
            (Status.RETRYABLE, BOTOCORE_ERROR[fault.name])
        }
        assert received(sqs, url) == []


class TestOpenSearch:
    @pytest.fixture
    def proxy(self, opensearch_endpoint: str) -> Iterator[FaultProxy]:
        with FaultProxy(opensearch_endpoint, seed=3) as p:
            yield p

    @staticmethod
    def sink(endpoint: str, index: str, id_field: str | None, **options: Any) -> OpenSearchSink:
        return OpenSearchSink(
            "search",
            endpoint=endpoint,
            index=index,
            id=id_field,
            auth="none",
            sleep=no_sleep,
            **options,
        )

    @staticmethod
    def records() -> list[Record]:
        return batch([{"order_id": f"o{i % 12}", "i": i} for i in range(60)])

    @pytest.mark.parametrize("at_once", [False, True], ids=["in-turn", "overlapped"])
    @pytest.mark.parametrize("id_field", [None, "order_id"], ids=["event_id", "field"])
    @pytest.mark.parametrize("fault", [OPENSEARCH_REJECTED, LOST_ACK], ids=lambda f: f.name)
    def test_thirty_percent_faults_on_bulk_end_ok_and_equal_a_clean_run(
        self, proxy, opensearch, opensearch_endpoint, unique, fault, id_field, at_once
    ):
        clean = self.sink(opensearch_endpoint, f"clean-{unique}", id_field)
        assert all(o.ok for o in clean.write_batch(self.records()))
        proxy.inject(fault, probability=0.3, path="/_bulk")
        sink = self.sink(proxy.url, f"faulty-{unique}", id_field, max_items=10, max_attempts=12)

        with overlapping(at_once):  # six calls of distinct documents: one wave, at once
            outcomes = sink.write_batch(self.records())

        assert [o.status for o in outcomes] == [Status.OK] * 60
        assert proxy.injected[fault.name] > 0
        expected = sources(opensearch, f"clean-{unique}")
        assert sources(opensearch, f"faulty-{unique}") == expected
        assert len(expected) == (60 if id_field is None else 12)

    @pytest.mark.parametrize("at_once", [False, True], ids=["in-turn", "overlapped"])
    def test_a_persistent_429_makes_every_record_retryable_and_writes_nothing(
        self, proxy, opensearch, unique, at_once
    ):
        opensearch.indices.create(index=f"events-{unique}")
        proxy.inject(OPENSEARCH_REJECTED, path="/_bulk")
        sink = self.sink(proxy.url, f"events-{unique}", None, max_items=20, max_attempts=3)

        with overlapping(at_once):
            outcomes = sink.write_batch(self.records())

        assert {(o.status, o.error) for o in outcomes} == {
            (Status.RETRYABLE, "es_rejected_execution_exception")
        }
        # per round, one call (in turn: the rest wait) or the wave's three (at once)
        assert proxy.injected["opensearch_rejected"] == 3 * (3 if at_once else 1)
        assert sources(opensearch, f"events-{unique}") == {}

    @CONNECTION_FAULTS
    def test_connection_faults_are_retryable_and_write_nothing(
        self, proxy, opensearch, unique, fault
    ):
        opensearch.indices.create(index=f"events-{unique}")
        proxy.inject(fault, path="/_bulk")
        timeout = READ_TIMEOUT_S[fault.name]
        sink = self.sink(proxy.url, f"events-{unique}", None, max_attempts=2, timeout=timeout)

        outcomes = sink.write_batch(self.records()[:4])

        expected = {"drop": "ConnectionError", "slow": "ConnectionTimeout"}[fault.name]
        assert {(o.status, o.error) for o in outcomes} == {(Status.RETRYABLE, expected)}
        assert sources(opensearch, f"events-{unique}") == {}


class TestKinesis:
    @staticmethod
    def sink(client: Any, stream: str, attempts: int) -> KinesisSink:
        return KinesisSink(
            "next",
            stream=stream,
            partition_key="order_id",
            client=client,
            max_attempts=attempts,
            sleep=no_sleep,
        )

    @staticmethod
    def records() -> list[Record]:
        return batch([{"order_id": f"o{i % 6}", "i": i} for i in range(60)])

    @pytest.fixture
    def kinesis(self, aws: Any) -> Any:
        return aws("kinesis")

    def write(self, sink: KinesisSink) -> list[Outcome]:
        """The records as six Lambda batches of ten: six PutRecords calls, and their retries."""
        records = self.records()
        return [o for n in range(0, 60, 10) for o in sink.write_batch(records[n : n + 10])]

    def stream(self, kinesis: Any, name: str) -> str:
        kinesis.create_stream(StreamName=name, ShardCount=1)
        kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 1})
        return name

    def test_thirty_percent_throttles_end_ok_with_each_record_once_in_key_order(
        self, proxy, kinesis, unique
    ):
        stream = self.stream(kinesis, f"next-{unique}")
        proxy.inject(THROTTLE, probability=0.3, target="PutRecords")
        sink = self.sink(aws_client(proxy.url, "kinesis"), stream, attempts=12)

        outcomes = self.write(sink)

        assert [o.status for o in outcomes] == [Status.OK] * 60
        assert proxy.injected["throttle"] > 0
        assert published(kinesis, stream) == [(r.partition_key, r.data) for r in self.records()]

    @pytest.mark.parametrize("at_once", [False, True], ids=["in-turn", "overlapped"])
    def test_thirty_percent_throttles_on_a_wide_batch_keep_each_key_s_order(
        self, proxy, kinesis, unique, at_once
    ):
        # 600 keys, two records each: waves of a 500-entry and a 100-entry call
        stream = self.stream(kinesis, f"next-{unique}")
        records = batch([{"order_id": f"o{i % 600}", "i": i} for i in range(1200)])
        proxy.inject(THROTTLE, probability=0.3, target="PutRecords")
        sink = self.sink(aws_client(proxy.url, "kinesis"), stream, attempts=12)

        with overlapping(at_once):
            outcomes = sink.write_batch(records)

        assert [o.status for o in outcomes] == [Status.OK] * 1200
        assert proxy.injected["throttle"] > 0
        out = published(kinesis, stream)
        assert sorted(out) == sorted((r.partition_key, r.data) for r in records)
        by_key: dict[str, list[int]] = {}
        for key, data in out:
            by_key.setdefault(key, []).append(json.loads(data)["i"])
        assert all(seen == sorted(seen) for seen in by_key.values())  # each key in order

    def test_lost_acks_end_ok_and_publish_every_record_at_least_once(self, proxy, kinesis, unique):
        stream = self.stream(kinesis, f"next-{unique}")
        proxy.inject(LOST_ACK, probability=0.3, target="PutRecords")
        sink = self.sink(aws_client(proxy.url, "kinesis"), stream, attempts=12)

        outcomes = self.write(sink)

        assert [o.status for o in outcomes] == [Status.OK] * 60
        assert proxy.injected["lost_ack"] > 0
        out = published(kinesis, stream)
        assert set(out) == {(r.partition_key, r.data) for r in self.records()}
        assert len(out) > 60  # Kinesis has no idempotent put: consumers de-duplicate

    def test_a_persistent_503_makes_every_record_retryable_and_publishes_nothing(
        self, proxy, kinesis, unique
    ):
        stream = self.stream(kinesis, f"next-{unique}")
        proxy.inject(UNAVAILABLE, target="PutRecords")
        sink = self.sink(aws_client(proxy.url, "kinesis"), stream, attempts=3)

        outcomes = sink.write_batch(self.records()[:10])

        assert {o.status for o in outcomes} == {Status.RETRYABLE}
        # The first record of each of the six keys was tried; the others waited behind it.
        assert [o.error for o in outcomes] == ["ServiceUnavailable"] * 6 + ["HeldBack"] * 4
        assert proxy.injected["unavailable"] == 3
        assert published(kinesis, stream) == []

    @CONNECTION_FAULTS
    def test_connection_faults_are_retryable_and_publish_nothing(
        self, proxy, kinesis, unique, fault
    ):
        stream = self.stream(kinesis, f"next-{unique}")
        proxy.inject(fault, target="PutRecords")
        client = aws_client(proxy.url, "kinesis", read_timeout=READ_TIMEOUT_S[fault.name])
        sink = self.sink(client, stream, attempts=2)

        outcomes = sink.write_batch(self.records()[:10])

        assert {o.status for o in outcomes} == {Status.RETRYABLE}
        assert [o.error for o in outcomes] == [BOTOCORE_ERROR[fault.name]] * 6 + ["HeldBack"] * 4
        assert published(kinesis, stream) == []


def published(kinesis: Any, stream: str) -> list[tuple[str, bytes]]:
    """(partition key, data) of every record of the stream's one shard, oldest first."""
    (shard,) = kinesis.list_shards(StreamName=stream)["Shards"]
    iterator = kinesis.get_shard_iterator(
        StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    out: list[tuple[str, bytes]] = []
    while True:
        page = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
        if not page["Records"]:
            return out
        out += [(r["PartitionKey"], r["Data"]) for r in page["Records"]]
        iterator = page["NextShardIterator"]


def objects(s3: Any, bucket: str) -> dict[str, bytes]:
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def received(sqs: Any, url: str) -> list[str]:
    """Every message body in the queue, received and deleted until a receive comes back
    empty (moto answers at once; deleting lets a FIFO queue hand out a group's next ones)."""
    bodies: list[str] = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            return bodies
        bodies += [m["Body"] for m in got]
        entries = [{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(got)]
        sqs.delete_message_batch(QueueUrl=url, Entries=entries)


def sources(client: Any, index: str) -> dict[str, Any]:
    client.indices.refresh(index=index)
    found = client.search(index=index, body={"size": 10_000})
    return {h["_id"]: h["_source"] for h in found["hits"]["hits"]}
