"""The DynamoDB, OpenSearch, S3, SQS and Kinesis sinks send a wave's calls at once: a slow call that
ends after a faster later one keeps its outcome with its own records, a failure of the fast
one stays with the fast one's records, and what a wave holds back is held back.

The slow call is made slow over HTTP, by the fault proxy (:func:`tests.faultproxy.held_until`):
its request reaches the server at once, and its answer is held until another request of the
wave has been answered. A sink that sent its calls in turn would wait for that answer before
sending the next call, so the proxy would answer the held one first, at its deadline: the
order of :attr:`FaultProxy.answered` is what each test checks first.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING
from urllib.parse import unquote

import pytest

from sinks.base import DeadLetter, Ordering, Status
from sinks.dynamodb import DynamoDBSink
from sinks.kinesis import KinesisSink
from sinks.opensearch import OpenSearchSink
from sinks.s3 import S3Sink
from sinks.sqs import SQSSink
from stream.overlap import ITEM_WAVE_WIDTH, WAVE_WIDTH, overlapping
from tests.faultproxy import (
    OPENSEARCH_REJECTED,
    S3_SLOWDOWN,
    THROTTLE,
    THROTTLING,
    FaultProxy,
    Request,
    held_until,
)
from tests.integration.fault_fixtures import aws_client, no_sleep
from tests.integration.test_dynamodb_sink import batch, make_table
from tests.integration.test_sink_faults import objects, published, received, sources

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from stream.records import Record

pytestmark = pytest.mark.integration

DEADLINE_S = 5.0  # how long the proxy holds the slow answer when the other call never comes


@pytest.fixture(autouse=True)
def at_once() -> Iterator[None]:
    with overlapping(True):
        yield


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    with FaultProxy(moto_endpoint, seed=5) as p:
        yield p


def carries(marker: str) -> Callable[[Request], bool]:
    """A request whose body holds ``marker`` (a record's own text)."""
    needle = marker.encode()
    return lambda request: needle in request.body


def answered_before(proxy: FaultProxy, fast: Callable[[Request], bool], slow: str) -> bool:
    """Whether a request ``fast`` picks was answered before the held one (``slow`` in it)."""
    order = proxy.answered
    held = next(n for n, r in enumerate(order) if carries(slow)(r))
    return any(fast(r) for r in order[:held])


class TestS3:
    def test_a_slow_object_ending_after_a_faster_later_one_keeps_its_own_outcome(
        self, proxy, aws, unique
    ):
        s3 = aws("s3")
        bucket = f"archive-{unique}"
        s3.create_bucket(Bucket=bucket)
        # kind=a (keys o0, o1), kind=b (o2, o3): one wave; kind=c (o0) waits for kind=a
        docs = [
            {"order_id": "o0", "kind": "a"},
            {"order_id": "o2", "kind": "b"},
            {"order_id": "o1", "kind": "a"},
            {"order_id": "o3", "kind": "b"},
            {"order_id": "o0", "kind": "c"},
        ]
        proxy.inject(
            held_until(path_has("kind=b"), DEADLINE_S), method="PUT", where=path_has("kind=a")
        )
        proxy.inject(S3_SLOWDOWN, method="PUT", where=path_has("kind=b"))
        sink = S3Sink(
            "archive",
            bucket=bucket,
            prefix="raw/",
            partition="kind={kind}",
            client=aws_client(proxy.url, "s3"),
            max_attempts=1,
            sleep=no_sleep,
        )

        outcomes = sink.write_batch(batch(docs))

        order = [unquote(r.path) for r in proxy.answered if r.method == "PUT"]
        assert "kind=b" in order[0]
        assert "kind=a" in order[1]  # the first object's answer came after the later one's
        assert [o.status for o in outcomes[:4]] == [Status.OK, Status.RETRYABLE] * 2
        assert {outcomes[1].error, outcomes[3].error} == {"SlowDown"}
        assert outcomes[4].error == "HeldBack"  # the next wave: an object of the batch failed
        assert len(order) == 2
        stored = list(objects(s3, bucket))
        assert len(stored) == 1
        assert "kind=a" in stored[0]


def path_has(text: str) -> Callable[[Request], bool]:
    """A request whose path (decoded) holds ``text``."""
    return lambda request: text in unquote(request.path)


class TestSQS:
    @staticmethod
    def queue(proxy: FaultProxy, name: str) -> str:
        attributes = {"FifoQueue": "true"} if name.endswith(".fifo") else {}
        response = aws_client(proxy.url, "sqs").create_queue(QueueName=name, Attributes=attributes)
        return str(response["QueueUrl"])

    @staticmethod
    def records() -> list[Record]:
        # twenty keys: two calls of ten (one record per key each) in one wave
        return batch([{"order_id": f"o{i}", "tag": f"m{i}x"} for i in range(20)])

    def test_a_slow_call_ending_after_a_faster_later_one_keeps_its_own_outcomes(
        self, proxy, aws, unique
    ):
        url = self.queue(proxy, f"q-{unique}")
        proxy.inject(
            held_until(carries("m10x"), DEADLINE_S),
            target="SendMessageBatch",
            where=carries("m0x"),
        )
        proxy.inject(THROTTLING, target="SendMessageBatch", where=carries("m10x"))
        sink = SQSSink(
            "queue",
            queue=url,
            client=aws_client(proxy.url, "sqs"),
            max_attempts=1,
            sleep=no_sleep,
        )

        outcomes = sink.write_batch(self.records(), Ordering.PER_KEY)

        assert answered_before(proxy, carries("m10x"), "m0x")
        assert [o.status for o in outcomes] == [Status.OK] * 10 + [Status.RETRYABLE] * 10
        assert {o.error for o in outcomes[10:]} == {"ThrottlingException"}
        bodies = received(aws("sqs"), url)
        assert sorted(bodies) == sorted(r.data.decode() for r in self.records()[:10])

    @pytest.mark.parametrize("fifo", [False, True], ids=["standard", "fifo"])
    def test_dead_letters_go_in_waves_and_keep_their_outcomes(self, proxy, aws, unique, fifo):
        url = self.queue(proxy, f"q-{unique}" + (".fifo" if fifo else ""))
        letters = [
            DeadLetter(r, f"bad-m{n}x", "ValidationError", "sink:x")
            for n, r in enumerate(self.records())
        ]
        proxy.inject(
            held_until(carries("bad-m10x"), DEADLINE_S),
            target="SendMessageBatch",
            where=carries("bad-m0x"),
        )
        proxy.inject(THROTTLING, target="SendMessageBatch", where=carries("bad-m10x"))
        sink = SQSSink(
            "dlq", queue=url, client=aws_client(proxy.url, "sqs"), max_attempts=1, sleep=no_sleep
        )

        outcomes = sink.write_dead_letters(letters)

        # twenty letters of twenty keys (and FIFO groups): two calls of ten, one wave
        assert answered_before(proxy, carries("bad-m10x"), "bad-m0x")
        assert [o.status for o in outcomes] == [Status.OK] * 10 + [Status.RETRYABLE] * 10
        reasons = {json.loads(body)["reason"] for body in received(aws("sqs"), url)}
        assert reasons == {f"bad-m{n}x" for n in range(10)}


class TestDynamoDBLatest:
    def test_a_wave_of_keys_wider_than_a_bulk_wave_keeps_each_key_s_outcome(
        self, proxy, aws, unique
    ):
        # One conditional PutItem per key: more keys than WAVE_WIDTH still go in one wave.
        # The first key's answer is held until the last key's has come back (the last
        # key is throttled): sent in waves of WAVE_WIDTH, the last key would wait for the
        # first's answer, which would come only at the deadline.
        keys = WAVE_WIDTH + 8
        assert keys <= ITEM_WAVE_WIDTH
        table = make_table(aws("dynamodb"), f"orders-{unique}", append=False)
        records = batch([{"order_id": f"o{i}", "tag": f"m{i}x"} for i in range(keys)])
        last = f"m{keys - 1}x"
        proxy.inject(held_until(carries(last), DEADLINE_S), target="PutItem", where=carries("m0x"))
        proxy.inject(THROTTLE, target="PutItem", where=carries(last))
        sink = DynamoDBSink(
            "orders",
            table=table,
            key="order_id",
            mode="latest",
            client=aws_client(proxy.url, "dynamodb"),
            max_attempts=1,
            sleep=no_sleep,
        )

        outcomes = sink.write_batch(records)

        assert answered_before(proxy, carries(last), "m0x")
        assert [o.status for o in outcomes] == [Status.OK] * (keys - 1) + [Status.RETRYABLE]
        assert outcomes[-1].error == "ProvisionedThroughputExceededException"
        items = aws("dynamodb").scan(TableName=table, ConsistentRead=True)["Items"]
        assert sorted(item["tag"]["S"] for item in items) == sorted(
            f"m{i}x" for i in range(keys - 1)
        )


class TestOpenSearch:
    @pytest.fixture
    def proxy(self, opensearch_endpoint: str) -> Iterator[FaultProxy]:
        with FaultProxy(opensearch_endpoint, seed=5) as p:
            yield p

    @pytest.mark.parametrize("id_field", [None, "order_id"], ids=["event_id", "field"])
    def test_a_slow_bulk_call_ending_after_a_faster_later_one_keeps_its_own_outcomes(
        self, proxy, opensearch, unique, id_field
    ):
        index = f"events-{unique}"
        opensearch.indices.create(index=index)
        records = batch([{"order_id": f"o{i}", "tag": f"m{i}x"} for i in range(10)])
        # calls of five documents: one wave of two; the second is refused whole (429)
        proxy.inject(
            held_until(carries('"m5x"'), DEADLINE_S), path="/_bulk", where=carries('"m0x"')
        )
        proxy.inject(OPENSEARCH_REJECTED, path="/_bulk", where=carries('"m5x"'))
        sink = OpenSearchSink(
            "search",
            endpoint=proxy.url,
            index=index,
            id=id_field,
            auth="none",
            max_items=5,
            max_attempts=1,
            sleep=no_sleep,
        )

        outcomes = sink.write_batch(records)

        assert answered_before(proxy, carries('"m5x"'), '"m0x"')
        assert [o.status for o in outcomes] == [Status.OK] * 5 + [Status.RETRYABLE] * 5
        assert {o.error for o in outcomes[5:]} == {"es_rejected_execution_exception"}
        stored = sources(opensearch, index)
        assert sorted(s["tag"] for s in stored.values()) == [f"m{i}x" for i in range(5)]


class TestKinesis:
    def test_a_slow_put_records_call_ending_after_a_faster_later_one_keeps_its_outcomes(
        self, proxy, aws, unique
    ):
        kinesis = aws("kinesis")
        stream = f"next-{unique}"
        kinesis.create_stream(StreamName=stream, ShardCount=1)
        kinesis.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 1})
        # 600 keys: a call of 500 entries and one of 100, in one wave
        records = batch([{"order_id": f"o{i}", "i": i} for i in range(600)])
        first, second = entries_of(500), entries_of(100)
        proxy.inject(held_until(second, DEADLINE_S), target="PutRecords", where=first)
        proxy.inject(THROTTLE, target="PutRecords", where=second)
        sink = KinesisSink(
            "next",
            stream=stream,
            partition_key="order_id",
            client=aws_client(proxy.url, "kinesis"),
            max_attempts=1,
            sleep=no_sleep,
        )

        outcomes = sink.write_batch(records)

        calls = [r for r in proxy.answered if "PutRecords" in r.headers.get("x-amz-target", "")]
        assert [second(r) for r in calls] == [True, False]  # the later call answered first
        assert [o.status for o in outcomes] == [Status.OK] * 500 + [Status.RETRYABLE] * 100
        assert {o.error for o in outcomes[500:]} == {"ProvisionedThroughputExceededException"}
        out = published(kinesis, stream)
        assert sorted(out) == sorted((r.partition_key, r.data) for r in records[:500])


def entries_of(n: int) -> Callable[[Request], bool]:
    """A PutRecords request of ``n`` entries (JSON protocol)."""

    def match(request: Request) -> bool:
        try:
            return len(json.loads(request.body)["Records"]) == n
        except (ValueError, KeyError, TypeError):
            return False

    return match
