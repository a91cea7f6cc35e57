"""The local event source mapping against a real moto server: delivery, redelivery, resume.

Records are produced with :class:`stream.producer.Producer` into a two-shard stream and
consumed by :class:`EventSourceMapping` with the in-process invoker. The deterministic
tests drive it with ``step()`` on an injected clock; one runs the real loop (``run``) in a
thread and waits for the handler with a deadline.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

import pytest

from stream.esm.checkpoints import LeaseTable
from stream.esm.invoke import InProcessInvoker
from stream.esm.mapping import EventSourceMapping
from stream.esm.rules import RETRIES_EXHAUSTED, MappingSettings
from stream.esm.store import MemoryCheckpoints
from stream.event import records_from_event
from stream.producer import Producer
from tests.faultproxy import UNAVAILABLE, FaultProxy, aws_json_error
from tests.integration.fault_fixtures import aws_client

if TYPE_CHECKING:
    from collections.abc import Callable

    from stream.esm.store import CheckpointStore

pytestmark = pytest.mark.integration


class Clock:
    """Epoch seconds from now on, moved by hand: record ages stay real, waits do not."""

    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def kinesis(aws: Any) -> Any:
    return aws("kinesis")


@pytest.fixture
def stream(kinesis: Any, unique: str) -> str:
    name = f"esm-{unique}"
    kinesis.create_stream(StreamName=name, ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    return name


def produce(kinesis: Any, stream: str, docs: list[dict[str, Any]], **kw: Any) -> dict[int, str]:
    """Put the documents (partition key: their ``key``); their (shard, sequence) by ``n``."""
    with Producer(stream, kinesis, sleep=lambda _: None, **kw) as producer:
        for doc in docs:
            producer.put(doc, doc["key"])
        result = producer.flush()
    assert result.ok
    return {r.index: f"{r.shard_id}:{r.sequence_number}" for r in result.results}


class Recorder:
    """A handler that keeps what it saw, as (shard:sequence, document) per invocation."""

    def __init__(self, answer: Callable[[list[Any]], Any] | None = None) -> None:
        self.batches: list[list[tuple[str, dict[str, Any]]]] = []
        self.answer = answer
        self.responses: list[Any] = []
        self.lock = threading.Lock()

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        records = records_from_event(event)
        response = self.answer(records) if self.answer else None
        with self.lock:
            self.batches.append([(r.event_id, r.json) for r in records])
            self.responses.append(response)
        return response

    @property
    def seen(self) -> list[tuple[str, dict[str, Any]]]:
        return [item for batch in self.batches for item in batch]


def mapping(
    kinesis: Any,
    stream: str,
    handler: Any,
    store: CheckpointStore,
    clock: Clock | None = None,
    **settings: Any,
) -> EventSourceMapping:
    clock = clock or Clock()
    on_failure = settings.pop("on_failure", None)
    on_failure_payload = settings.pop("on_failure_payload", False)
    return EventSourceMapping(
        stream,
        MappingSettings(**{"size": 25, **settings}),
        InProcessInvoker(handler),
        store,
        client=kinesis,
        on_failure=on_failure,
        on_failure_payload=on_failure_payload,
        now=clock,
        sleep=clock.sleep,
        idle_poll_s=0.25,
    )


def drain(esm: EventSourceMapping, clock: Clock, max_steps: int = 400) -> None:
    """Step until every shard is read to its newest record and everything read is done."""
    for _ in range(max_steps):
        clock.t += 0.25  # within the 5 reads per shard per second
        esm.step()
        if esm.caught_up:
            return
    pytest.fail(f"not caught up after {max_steps} steps: {esm.stats}")


def last_per_shard(positions: dict[int, str]) -> dict[str, str]:
    last: dict[str, str] = {}
    for place in positions.values():
        shard, seq = place.split(":")
        if shard not in last or int(seq) > int(last[shard]):
            last[shard] = seq
    return last


def docs(n: int, keys: int = 10, start: int = 0) -> list[dict[str, Any]]:
    return [{"n": i, "key": f"user-{i % keys}"} for i in range(start, start + n)]


class TestDelivery:
    def test_every_record_is_delivered_exactly_once_in_key_order_by_the_run_loop(
        self, kinesis, stream
    ):
        produced = produce(kinesis, stream, docs(300))
        handler = Recorder()
        store = MemoryCheckpoints()
        esm = EventSourceMapping(
            stream,
            MappingSettings(size=40, parallelization=2),
            InProcessInvoker(handler),
            store,
            client=kinesis,
            idle_poll_s=0.05,
            tick_s=0.01,
        )
        stop = threading.Event()
        runner = threading.Thread(target=esm.run, args=(stop,))
        runner.start()
        deadline = time.monotonic() + 30  # a moto server on a loaded machine
        while len(handler.seen) < 300 and time.monotonic() < deadline:
            time.sleep(0.02)
        while store.positions() != last_per_shard(produced) and time.monotonic() < deadline:
            time.sleep(0.02)
        stop.set()
        runner.join(30)
        assert not runner.is_alive()
        counts = Counter(event_id for event_id, _ in handler.seen)
        assert set(counts) == set(produced.values())
        assert set(counts.values()) == {1}
        by_key: dict[str, list[int]] = defaultdict(list)
        for _, doc in handler.seen:
            by_key[doc["key"]].append(doc["n"])
        assert all(ns == sorted(ns) for ns in by_key.values())
        assert store.positions() == last_per_shard(produced)
        assert all(lease.owner is None for lease in store.leases())  # released on stop
        assert esm.stats.records_in == 300

    def test_partial_failures_are_redelivered_from_the_failed_record(self, kinesis, stream):
        produce(kinesis, stream, docs(40))
        failed_once: set[int] = set()

        def answer(records: list[Any]) -> Any:
            for record in records:
                n = record.json["n"]
                if n % 7 == 3 and n not in failed_once:
                    failed_once.add(n)
                    return {"batchItemFailures": [{"itemIdentifier": record.sequence_number}]}
            return None

        handler = Recorder(answer)
        clock = Clock()
        esm = mapping(kinesis, stream, handler, MemoryCheckpoints(), clock, max_retries=10)
        drain(esm, clock)
        assert esm.stats.batches_partial == len(failed_once) > 0
        by_shard: dict[str, list[tuple[list[str], Any]]] = defaultdict(list)
        for batch, response in zip(handler.batches, handler.responses, strict=True):
            ids = [event_id.split(":")[1] for event_id, _ in batch]
            by_shard[batch[0][0].split(":")[0]].append((ids, response))
        checked = 0
        for deliveries in by_shard.values():
            for (first, response), (second, _) in itertools.pairwise(deliveries):
                if response:  # the next delivery of the shard starts at the failed record
                    failed = response["batchItemFailures"][0]["itemIdentifier"]
                    rest = first[first.index(failed) :]
                    assert second[: len(rest)] == rest
                    checked += 1
        assert checked == len(failed_once)
        counts = Counter(doc["n"] for _, doc in handler.seen)
        assert set(counts) == set(range(40))

    def test_a_batch_that_reported_failures_is_retried_after_a_growing_wait(self, kinesis, stream):
        """Issue 19, item 3: retries wait 2, 4, 8 s (ESM clock), so a sink outage of tens of
        seconds does not exhaust the default three retries within a few seconds."""
        produce(kinesis, stream, docs(4, keys=1))  # one key: one shard, one batch
        clock = Clock()
        times: list[float] = []

        def always_fail(records: list[Any]) -> Any:
            times.append(clock.t)
            return {"batchItemFailures": [{"itemIdentifier": records[0].sequence_number}]}

        messages: list[dict[str, Any]] = []
        esm = mapping(
            kinesis,
            stream,
            Recorder(always_fail),
            MemoryCheckpoints(),
            clock,
            max_retries=3,
            on_failure=messages.append,
        )
        drain(esm, clock)
        assert len(times) == 4  # the first delivery and three retries
        waits = [later - earlier for earlier, later in itertools.pairwise(times)]
        assert [w >= expected for w, expected in zip(waits, (2, 4, 8), strict=True)] == [True] * 3
        assert [w < expected + 1 for w, expected in zip(waits, (2, 4, 8), strict=True)] == [
            True
        ] * 3
        (message,) = messages
        assert message["requestContext"]["condition"] == RETRIES_EXHAUSTED

    def test_the_on_failure_message_names_the_records_to_read_again(self, kinesis, stream):
        produce(kinesis, stream, docs(6, keys=1))
        messages: list[dict[str, Any]] = []

        def crash(event: dict[str, Any], context: Any) -> None:
            raise RuntimeError("poison")

        clock = Clock()
        esm = mapping(
            kinesis,
            stream,
            crash,
            MemoryCheckpoints(),
            clock,
            max_retries=1,
            on_failure=messages.append,
        )
        drain(esm, clock)
        (message,) = messages
        info = message["KinesisBatchInfo"]
        assert message["requestContext"]["condition"] == RETRIES_EXHAUSTED
        assert message["requestContext"]["approximateInvokeCount"] == 2
        assert info["streamArn"] == esm.stream_arn
        assert info["streamArn"].endswith(f":stream/{stream}")
        iterator = kinesis.get_shard_iterator(
            StreamName=stream,
            ShardId=info["shardId"],
            ShardIteratorType="AT_SEQUENCE_NUMBER",
            StartingSequenceNumber=info["startSequenceNumber"],
        )["ShardIterator"]
        again = kinesis.get_records(ShardIterator=iterator, Limit=info["batchSize"])["Records"]
        assert [r["SequenceNumber"] for r in again][-1] == info["endSequenceNumber"]
        assert len(again) == info["batchSize"] == 6
        assert esm.positions()[info["shardId"]] == info["endSequenceNumber"]  # moved on

    def test_an_s3_destination_gets_the_whole_invocation_record(self, kinesis, stream, aws, unique):
        """As AWS writes to a bucket: the metadata and the batch's event under ``payload``,
        at Lambda's key layout, so the records outlive the stream's retention."""
        import json  # noqa: PLC0415

        from deploy.local.run import keeps_payload, on_failure_destination  # noqa: PLC0415

        bucket = f"vault-{unique}"
        s3 = aws("s3")
        s3.create_bucket(Bucket=bucket)
        plan = {
            "name": "p",
            "sinks": {"vault": {"type": "s3", "bucket": bucket}},
            "functions": {"f": {"on_failure": "vault"}},
        }
        produce(kinesis, stream, docs(6, keys=1))

        def crash(event: dict[str, Any], context: Any) -> None:
            raise RuntimeError("poison")

        clock = Clock()
        esm = mapping(
            kinesis, stream, crash, MemoryCheckpoints(), clock, max_retries=0,
            on_failure=on_failure_destination(plan, "f", aws),
            on_failure_payload=keeps_payload(plan, "f"),
        )  # fmt: skip
        drain(esm, clock)
        (listed,) = s3.list_objects_v2(Bucket=bucket)["Contents"]
        assert listed["Key"].startswith("aws/lambda/")
        record = json.loads(s3.get_object(Bucket=bucket, Key=listed["Key"])["Body"].read())
        info = record["KinesisBatchInfo"]
        event = json.loads(record["payload"])
        sequences = [e["kinesis"]["sequenceNumber"] for e in event["Records"]]
        assert len(sequences) == info["batchSize"] == 6
        assert (sequences[0], sequences[-1]) == (
            info["startSequenceNumber"], info["endSequenceNumber"],
        )  # fmt: skip
        assert [r.json["n"] for r in records_from_event(event)] == list(range(6))

    def test_kpl_aggregates_reach_the_handler_whole_and_expand_to_every_user_record(
        self, kinesis, stream
    ):
        produce(kinesis, stream, docs(120, keys=12), aggregate=True)
        handler = Recorder()
        clock = Clock()
        esm = mapping(kinesis, stream, handler, MemoryCheckpoints(), clock)
        drain(esm, clock)
        assert sorted(doc["n"] for _, doc in handler.seen) == list(range(120))
        assert esm.stats.records_in < 120  # Kinesis records, each holding many user records


class TestResume:
    def test_a_new_mapping_resumes_after_the_checkpoint_and_delivers_nothing_twice(
        self, kinesis, stream
    ):
        produced = produce(kinesis, stream, docs(60))
        store = MemoryCheckpoints()
        clock = Clock()

        def fail_sixth(records: list[Any]) -> Any:
            return {"batchItemFailures": [{"itemIdentifier": records[5].sequence_number}]}

        first = Recorder(fail_sixth)
        esm = mapping(kinesis, stream, first, store, clock, size=10)
        clock.t += 0.25
        esm.step()  # one batch per shard, its first five records done
        esm.release()
        checkpoints = store.positions()
        assert len(first.seen) == 20
        second = Recorder()
        drain(mapping(kinesis, stream, second, store, clock, size=10), clock)
        after = sorted(
            place
            for place in produced.values()
            if int(place.split(":")[1]) > int(checkpoints[place.split(":")[0]])
        )
        seen_second = [event_id for event_id, _ in second.seen]
        assert sorted(seen_second) == after  # every record after the checkpoint, once
        assert len(after) == 50
        assert sorted(doc["n"] for _, doc in second.seen) == sorted(
            n for n, place in produced.items() if place in after
        )

    def test_checkpoints_in_the_lease_table_survive_a_restart(self, kinesis, stream, aws, unique):
        ddb = aws("dynamodb")
        produce(kinesis, stream, docs(30))
        clock = Clock()

        def table() -> LeaseTable:
            leases = LeaseTable(f"esm-leases-{unique}", "worker-1", client=ddb)
            leases.ensure_table()
            return leases

        first = Recorder()
        esm = mapping(kinesis, stream, first, table(), clock, size=8)
        clock.t += 0.25
        esm.step()
        esm.release()
        produce(kinesis, stream, docs(10, start=30))
        second = Recorder()
        drain(mapping(kinesis, stream, second, table(), clock, size=8), clock)
        seen = [event_id for event_id, _ in first.seen + second.seen]
        assert len(seen) == len(set(seen)) == 40
        assert len(first.seen) == 16
        stored = {lease.shard_id: lease.checkpoint for lease in table().leases()}
        assert stored == last_per_shard(dict(enumerate(seen)))

    def test_a_mapping_cut_off_from_its_lease_table_stops_after_the_lease_duration(
        self, kinesis, stream, aws, unique, moto_endpoint
    ):
        """Issue 19, item 2: with the lease table unreachable, the mapping keeps reading
        only while its leases are provably its own (renewed within the lease duration on its
        own clock); after that it invokes nothing, although no round could drop a lease."""
        monotonic = Clock()
        with FaultProxy(moto_endpoint, seed=3) as proxy:
            leases = LeaseTable(
                f"esm-leases-{unique}",
                "worker-1",
                client=aws_client(proxy.url, "dynamodb"),
                lease_duration_s=6.0,
                now=monotonic,
                sleep=lambda _: None,
            )
            leases.ensure_table()
            produce(kinesis, stream, docs(20))
            clock, seen = Clock(), Recorder()
            esm = mapping(kinesis, stream, seen, leases, clock, size=100)
            drain(esm, clock)
            assert len(seen.seen) == 20
            proxy.inject(UNAVAILABLE)  # every call to the lease table fails from now on
            produce(kinesis, stream, docs(20, start=20))
            monotonic.sleep(6.5)  # past the lease duration: another worker may take them
            for _ in range(8):
                clock.t += 2.5  # lease rounds are due: each one fails
                esm.step()
            assert len(seen.seen) == 20  # nothing of the new records was invoked
            assert esm.positions() == {}


EXPIRED = aws_json_error(
    "expired",
    400,
    "ExpiredIteratorException",
    "Iterator expired. The iterator was created 301s ago",
)


class TestCaughtUp:
    def test_an_expired_iterator_is_not_caught_up_until_a_read_finds_the_end(
        self, kinesis, stream, moto_endpoint
    ):
        """A caught-up shard whose next read finds its iterator expired (Kinesis's iterators
        live five minutes; a quiet shard's last one may be older) has not been read: records
        put since are behind it. ``dev --until-idle`` and ``demo`` stop on a caught-up
        mapping, and stopped here with the records unread."""
        with FaultProxy(moto_endpoint) as proxy:
            produce(kinesis, stream, docs(10))
            clock, seen = Clock(), Recorder()
            reader = aws_client(proxy.url, "kinesis")
            esm = mapping(reader, stream, seen, MemoryCheckpoints(), clock)
            drain(esm, clock)
            assert len(seen.seen) == 10
            produce(kinesis, stream, docs(10, start=10))
            expired = proxy.inject(EXPIRED, target="GetRecords")
            clock.t += 1.0  # past the idle poll interval: each shard is read again

            esm.step()

            assert expired.fired == 2  # both shards' reads failed, nothing was read
            assert len(seen.seen) == 10
            assert not esm.caught_up
            proxy.remove(expired)
            drain(esm, clock)
            assert sorted(doc["n"] for _, doc in seen.seen) == list(range(20))
