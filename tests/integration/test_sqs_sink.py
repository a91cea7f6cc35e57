"""The SQS sink against a real moto server: envelopes, batching, overflow to S3, FIFO, errors."""

from __future__ import annotations

import base64
import time
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from sinks.base import DeadLetter, Ordering, Status
from sinks.sqs import SQSSink
from stream.event import records_from_event
from stream.testing import EventFactory

if TYPE_CHECKING:
    from stream.records import Record

pytestmark = pytest.mark.integration

NO_SLEEP = {"sleep": lambda _: None}


def make_queue(sqs: Any, name: str, **attributes: str) -> str:
    if name.endswith(".fifo"):
        attributes["FifoQueue"] = "true"
    return str(sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])


def drain(sqs: Any, url: str, expect: int, within: float = 30.0) -> list[dict[str, Any]]:
    """Receive and delete until ``expect`` messages came (or the deadline passed), then
    once more, so that a message beyond ``expect`` shows up in the result too."""
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + within
    while True:
        got = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        ).get("Messages", [])
        for message in got:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        messages += got
        if not got and (len(messages) >= expect or time.monotonic() > deadline):
            return messages


def records(payloads: list[Any], factory: EventFactory | None = None) -> list[Record]:
    f = factory or EventFactory()
    return records_from_event(f.batch((f"k{i % 3}", p) for i, p in enumerate(payloads)))


def letters(recs: list[Record], step: str = "processors[1].filter") -> list[DeadLetter]:
    return [
        DeadLetter(r, f"bad record {i}", "DecodeError", step, "enrich", "clicks", 1000.0 + i)
        for i, r in enumerate(recs)
    ]


def count_calls(client: Any, operation: str, sizes: list[int] | None = None) -> list[int]:
    """Observe (not alter) the calls a client makes: entries per call, 1 for single calls;
    with ``sizes``, also the bytes of each call's bodies and attributes."""
    seen: list[int] = []

    def before(params: dict[str, Any], **_: Any) -> None:
        entries = params.get("Entries", [{}])
        seen.append(len(entries))
        if sizes is not None:
            sizes.append(
                sum(
                    len(e["MessageBody"].encode())
                    + sum(
                        len(k) + 6 + len(v["StringValue"].encode())
                        for k, v in e["MessageAttributes"].items()
                    )
                    for e in entries
                )
            )

    client.meta.events.register(f"provide-client-params.{operation}", before)
    return seen


@pytest.fixture
def sqs(aws: Any) -> Any:
    return aws("sqs")


@pytest.fixture
def s3(aws: Any) -> Any:
    return aws("s3")


class TestDeadLetters:
    def test_each_letter_is_one_message_with_every_field_and_the_original_data(self, sqs, unique):
        url = make_queue(sqs, f"dlq-{unique}")
        f = EventFactory()
        event = f.event(
            [
                f.record({"id": 1}, "user-1"),
                f.raw(b"\xff\x00not utf-8", "user-2"),
                f.aggregate([("user-3", b"first"), ("user-4", b"second")]),
            ]
        )
        recs = records_from_event(event)
        sent = letters(recs)
        outcomes = SQSSink("dlq", queue=f"dlq-{unique}", client=sqs).write_dead_letters(sent)
        assert [o.status for o in outcomes] == [Status.OK] * 4
        messages = drain(sqs, url, expect=4)
        bodies = sorted(
            (orjson.loads(m["Body"]) for m in messages),
            key=lambda b: (int(b["sequence_number"]), b["sub_sequence_number"]),
        )
        assert len(bodies) == 4
        for body, letter in zip(bodies, sent, strict=True):
            rec = letter.record
            assert base64.b64decode(body["data_base64"]) == rec.data
            assert body["partition_key"] == rec.partition_key
            assert body["shard_id"] == rec.shard_id == "shardId-000000000000"
            assert body["sequence_number"] == rec.sequence_number
            assert body["sub_sequence_number"] == rec.sub_sequence_number
            assert body["event_source_arn"] == f.arn
            assert body["event_id"] == rec.event_id
            assert body["function"] == "enrich"
            assert body["pipeline"] == "clicks"
            assert body["step"] == "processors[1].filter"
            assert body["error"] == "DecodeError"
            assert body["reason"] == letter.reason
            assert body["failed_at"] == letter.failed_at
        assert [b["sub_sequence_number"] for b in bodies] == [0, 0, 0, 1]
        attributes = {
            k: v["StringValue"]
            for k, v in messages[0]["MessageAttributes"].items()
            if k in {"error", "step", "function", "pipeline"}
        }
        assert attributes == {
            "error": "DecodeError",
            "step": "processors[1].filter",
            "function": "enrich",
            "pipeline": "clicks",
        }
        assert messages[0]["MessageAttributes"]["reason"]["StringValue"].startswith("bad record")

    def test_25_letters_go_in_calls_of_10_10_and_5_and_all_arrive(self, sqs, unique):
        url = make_queue(sqs, f"dlq-{unique}")
        calls = count_calls(sqs, "sqs.SendMessageBatch")
        sent = letters(records([{"i": i} for i in range(25)]))
        outcomes = SQSSink("dlq", queue=url, client=sqs).write_dead_letters(sent)
        assert all(o.ok for o in outcomes)
        assert calls == [10, 10, 5]
        received = {orjson.loads(m["Body"])["sequence_number"] for m in drain(sqs, url, 25)}
        assert received == {letter.record.sequence_number for letter in sent}

    def test_calls_stay_under_the_payload_limit(self, sqs, unique):
        url = make_queue(sqs, f"dlq-{unique}")
        sizes: list[int] = []
        calls = count_calls(sqs, "sqs.SendMessageBatch", sizes)
        sent = letters(records(["x" * 1500 for _ in range(6)]))
        sink = SQSSink("dlq", queue=url, client=sqs, max_message_bytes=6000)
        assert all(o.ok for o in sink.write_dead_letters(sent))
        assert calls == [2, 2, 2]  # each message is about 2.7 KB with attributes
        assert all(5000 < size <= 6000 for size in sizes)
        assert len(drain(sqs, url, 6)) == 6

    def test_the_queue_url_is_looked_up_once_and_reused(self, sqs, unique):
        make_queue(sqs, f"dlq-{unique}")
        lookups = count_calls(sqs, "sqs.GetQueueUrl")
        sink = SQSSink("dlq", queue=f"dlq-{unique}", client=sqs)
        sink.write_dead_letters(letters(records([1])))
        sink.write_dead_letters(letters(records([2])))
        assert lookups == [1]


class TestOverflow:
    def test_an_oversize_letter_goes_to_s3_and_the_message_points_there(self, sqs, s3, unique):
        url = make_queue(sqs, f"dlq-{unique}", MaximumMessageSize="262144")
        s3.create_bucket(Bucket=f"archive-{unique}")
        sink = SQSSink(
            "dlq", queue=url, client=sqs, s3_client=s3, overflow_bucket=f"archive-{unique}"
        )
        big, small = letters(records([{"blob": "x" * 300_000}, {"id": 2}]))
        assert [o.status for o in sink.write_dead_letters([big, small])] == [Status.OK] * 2
        by_seq = {orjson.loads(m["Body"])["sequence_number"]: m for m in drain(sqs, url, expect=2)}
        pointer = orjson.loads(by_seq[big.record.sequence_number]["Body"])
        assert "data_base64" not in pointer
        assert pointer["reason"] == big.reason
        location = pointer["overflow"]
        assert location["bucket"] == f"archive-{unique}"
        assert location["key"].startswith("dead-letters/test-stream/shardId-000000000000/")
        assert location["uri"] == f"s3://archive-{unique}/{location['key']}"
        attribute = by_seq[big.record.sequence_number]["MessageAttributes"]["overflow"]
        assert attribute["StringValue"] == location["uri"]
        obj = s3.get_object(Bucket=location["bucket"], Key=location["key"])
        envelope = orjson.loads(obj["Body"].read())
        assert base64.b64decode(envelope["data_base64"]) == big.record.data
        assert envelope["sequence_number"] == big.record.sequence_number
        assert envelope["step"] == big.step
        assert "data_base64" in orjson.loads(by_seq[small.record.sequence_number]["Body"])

    def test_a_retried_oversize_letter_overwrites_the_same_object(self, sqs, s3, unique):
        url = make_queue(sqs, f"dlq-{unique}")
        s3.create_bucket(Bucket=f"archive-{unique}")
        sink = SQSSink(
            "dlq", queue=url, client=sqs, s3_client=s3, overflow_bucket=f"archive-{unique}"
        )
        recs = records([{"blob": "y" * 300_000}])
        sink.write_dead_letters(letters(recs))
        sink.write_dead_letters(letters(recs))
        listing = s3.list_objects_v2(Bucket=f"archive-{unique}", Prefix="dead-letters/")
        assert listing["KeyCount"] == 1
        keys = {orjson.loads(m["Body"])["overflow"]["key"] for m in drain(sqs, url, 2)}
        assert keys == {listing["Contents"][0]["Key"]}

    def test_an_oversize_letter_without_a_bucket_is_permanent_and_says_how_to_fix_it(
        self, sqs, unique
    ):
        url = make_queue(sqs, f"dlq-{unique}")
        big, small = letters(records([{"blob": "x" * 300_000}, {"id": 2}]))
        outcomes = SQSSink("dlq", queue=url, client=sqs).write_dead_letters([big, small])
        assert outcomes[0].status is Status.PERMANENT
        assert outcomes[0].error == "MessageTooLarge"
        assert "overflow_bucket" in outcomes[0].reason
        assert outcomes[1].ok
        assert [orjson.loads(m["Body"])["sequence_number"] for m in drain(sqs, url, 1)] == [
            small.record.sequence_number
        ]


class TestRecords:
    def test_records_are_sent_as_their_data_text_or_base64_with_their_position(self, sqs, unique):
        url = make_queue(sqs, f"out-{unique}")
        f = EventFactory()
        recs = records_from_event(
            f.event([f.record({"id": 1}, "a"), f.raw(b"\x00\xffbin", "b"), f.record("héllo")])
        )
        outcomes = SQSSink("out", queue=url, client=sqs).write_batch(recs)
        assert all(o.ok for o in outcomes)
        by_seq = {m["MessageAttributes"]["sequence"]["StringValue"]: m for m in drain(sqs, url, 3)}
        text, binary, unicode = (by_seq[r.sequence_number] for r in recs)
        assert orjson.loads(text["Body"]) == {"id": 1}
        assert "encoding" not in text["MessageAttributes"]
        assert text["MessageAttributes"]["shard"]["StringValue"] == "shardId-000000000000"
        assert text["MessageAttributes"]["partition_key"]["StringValue"] == "a"
        assert binary["MessageAttributes"]["encoding"]["StringValue"] == "base64"
        assert base64.b64decode(binary["Body"]) == b"\x00\xffbin"
        assert unicode["Body"] == "héllo"

    def test_an_empty_record_is_permanent_and_its_neighbours_are_sent(self, sqs, unique):
        url = make_queue(sqs, f"out-{unique}")
        f = EventFactory()
        recs = records_from_event(f.event([f.raw(b""), f.record({"id": 2})]))
        empty, fine = SQSSink("out", queue=url, client=sqs).write_batch(recs, Ordering.NONE)
        assert empty.status is Status.PERMANENT
        assert "empty" in empty.reason
        assert fine.ok
        assert len(drain(sqs, url, 1)) == 1


class TestFifo:
    def test_writing_the_same_letters_twice_delivers_each_once(self, sqs, unique):
        url = make_queue(sqs, f"dlq-{unique}.fifo")
        recs = records([{"i": i} for i in range(12)])
        sink = SQSSink("dlq", queue=f"dlq-{unique}.fifo", client=sqs)
        assert all(o.ok for o in sink.write_dead_letters(letters(recs)))
        redelivered = [  # a later attempt: same position, function and step, another time
            DeadLetter(r, "bad", "DecodeError", "processors[1].filter", "enrich", "clicks", 9.0)
            for r in recs
        ]
        assert all(o.ok for o in sink.write_dead_letters(redelivered))
        messages = drain(sqs, url, expect=12)
        assert len(messages) == 12
        groups = {m["Attributes"]["MessageGroupId"] for m in messages}
        assert groups == {"k0", "k1", "k2"}

    def test_letters_of_one_record_from_two_steps_are_both_kept(self, sqs, unique):
        url = make_queue(sqs, f"dlq-{unique}.fifo")
        (rec,) = records([{"i": 1}])
        sink = SQSSink("dlq", queue=url, client=sqs)
        two = [
            DeadLetter(rec, "rejected", "ValidationError", "sink:orders", "enrich"),
            DeadLetter(rec, "rejected", "ValidationError", "sink:search", "enrich"),
        ]
        assert all(o.ok for o in sink.write_dead_letters(two))
        steps = sorted(orjson.loads(m["Body"])["step"] for m in drain(sqs, url, 2))
        assert steps == ["sink:orders", "sink:search"]


class TestClassification:
    @pytest.mark.parametrize("as_url", [False, True], ids=["name", "url"])
    def test_a_queue_that_does_not_exist_is_retryable_at_once_and_the_fix_named(
        self, sqs, moto_endpoint, unique, as_url
    ):
        # Not the letters' fault (stream.faults): the records are reported for retry, never
        # lost, and retrying within the invocation cannot create the queue.
        queue = f"{moto_endpoint}/123456789012/nope-{unique}" if as_url else f"nope-{unique}"
        pauses: list[float] = []
        sink = SQSSink("dlq", queue=queue, client=sqs, sleep=pauses.append)
        outcomes = sink.write_dead_letters(letters(records(list(range(25)))))
        assert {o.status for o in outcomes} == {Status.RETRYABLE}
        assert pauses == []
        assert outcomes[0].error == "AWS.SimpleQueueService.NonExistentQueue"
        assert f"SQS queue {queue!r} does not exist" in outcomes[0].reason
        assert "fix `queue` of sink 'dlq'" in outcomes[0].reason

    def test_a_message_the_queue_rejects_does_not_fail_its_neighbours(self, sqs, unique):
        url = make_queue(sqs, f"dlq-{unique}", MaximumMessageSize="1024")
        sink = SQSSink("dlq", queue=url, client=sqs, **NO_SLEEP)  # max_message_bytes too high
        sent = letters(records([{"i": 1}, {"blob": "z" * 2000}, {"i": 3}]))
        outcomes = sink.write_dead_letters(sent)
        assert [o.status for o in outcomes] == [Status.OK, Status.PERMANENT, Status.OK]
        assert "InvalidParameterValue" in outcomes[1].reason
        assert len(drain(sqs, url, 2)) == 2

    def test_an_unreachable_endpoint_is_retryable_in_bounded_time(self):
        import boto3  # noqa: PLC0415
        from botocore.config import Config  # noqa: PLC0415

        dead = boto3.client(
            "sqs",
            endpoint_url="http://127.0.0.1:9",
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
            config=Config(retries={"total_max_attempts": 1}, connect_timeout=1),
        )
        pauses: list[float] = []
        sink = SQSSink("dlq", queue="dlq", client=dead, max_attempts=3, sleep=pauses.append)
        started = time.monotonic()
        outcomes = sink.write_dead_letters(letters(records([1, 2])))
        assert [o.status for o in outcomes] == [Status.RETRYABLE] * 2
        assert time.monotonic() - started < 10
        assert len(pauses) == 2
        assert all(0 <= p <= 0.05 * 2**n for n, p in enumerate(pauses, 1))


def test_importing_the_sink_module_imports_no_client_library():
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    code = "import sys, sinks.sqs; print('boto3' in sys.modules, 'botocore' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert out.stdout.split() == ["False", "False"]
