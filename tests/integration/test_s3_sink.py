"""The S3 sink against a real moto server: keys, lines, idempotent replays, classification."""

from __future__ import annotations

import base64
import time
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from deploy.local.readback import archive_lines as read_lines
from sinks.base import DeadLetter, Status
from sinks.s3 import S3Sink, positions_digest
from stream.event import records_from_event
from stream.testing import EventFactory

if TYPE_CHECKING:
    from stream.records import Record

pytestmark = pytest.mark.integration

MIDNIGHT = 1_767_225_600.0  # 2026-01-01T00:00:00Z
HOURLY = "dt={arrival:%Y-%m-%d}/hour={arrival:%H}"
SHARD = "shardId-000000000000"


@pytest.fixture
def s3(aws: Any) -> Any:
    return aws("s3")


@pytest.fixture
def bucket(s3: Any, unique: str) -> str:
    name = f"archive-{unique}"
    s3.create_bucket(Bucket=name)
    return name


def across_the_hour(count: int = 20) -> list[Record]:
    """Records 10 ms apart, the first five in hour 00 and the rest in hour 01."""
    factory = EventFactory(arrival=MIDNIGHT + 3600 - 0.05)
    return records_from_event(factory.batch((f"k{i % 3}", {"i": i}) for i in range(count)))


def objects(s3: Any, bucket: str, prefix: str = "") -> dict[str, bytes]:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def etags(s3: Any, bucket: str) -> dict[str, str]:
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: o["ETag"] for o in listed}


def expected_line(record: Record) -> dict[str, Any]:
    return {
        **record.json,
        "_shard": record.shard_id,
        "_sequence": record.sequence_number,
        "_sub_sequence": record.sub_sequence_number,
        "_partition_key": record.partition_key,
        "_arrival": record.arrival,
    }


def digest(records: list[Record]) -> str:
    return positions_digest(records)


def positions(lines: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    return [(line["_shard"], line["_sequence"], line["_sub_sequence"]) for line in lines]


class TestKeysAndLines:
    def test_a_batch_across_two_hours_makes_one_object_per_hour(self, s3, bucket):
        records = across_the_hour()
        sink = S3Sink("archive", bucket=bucket, prefix="raw/", partition=HOURLY, client=s3)
        assert all(o.ok for o in sink.write_batch(records))
        seqs = [r.sequence_number for r in records]
        assert sorted(objects(s3, bucket)) == [
            f"raw/dt=2026-01-01/hour=00/{SHARD}/{seqs[0]}-{seqs[4]}-{digest(records[:5])}.jsonl.gz",
            f"raw/dt=2026-01-01/hour=01/{SHARD}/{seqs[5]}-{seqs[-1]}-{digest(records[5:])}.jsonl.gz",
        ]
        assert read_lines(s3, bucket, "raw/") == [expected_line(r) for r in records]

    def test_objects_carry_type_encoding_and_server_side_encryption(self, s3, bucket):
        sink = S3Sink("archive", bucket=bucket, client=s3)
        sink.write_batch(across_the_hour(3))
        (key,) = objects(s3, bucket)
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head["ServerSideEncryption"] == "AES256"
        assert head["ContentType"] == "application/x-ndjson"
        assert head["ContentEncoding"] == "gzip"

    def test_without_compression_objects_are_plain_json_lines(self, s3, bucket):
        records = across_the_hour(3)
        sink = S3Sink("archive", bucket=bucket, compression="none", client=s3)
        sink.write_batch(records)
        ((key, body),) = objects(s3, bucket).items()
        first, last = records[0].sequence_number, records[-1].sequence_number
        assert key == f"{SHARD}/{first}-{last}-{digest(records)}.jsonl"
        assert [orjson.loads(line) for line in body.splitlines()] == [
            expected_line(r) for r in records
        ]
        assert "ContentEncoding" not in s3.head_object(Bucket=bucket, Key=key)

    def test_a_field_partition_makes_one_object_per_value_and_a_missing_field_is_permanent(
        self, s3, bucket
    ):
        docs = [{"kind": "a"}, {"kind": "b"}, {"other": 1}, {"kind": "a"}]
        records = records_from_event(EventFactory().batch(("k", d) for d in docs))
        sink = S3Sink("archive", bucket=bucket, partition="kind={kind}", client=s3)
        outcomes = sink.write_batch(records)
        assert [o.status for o in outcomes] == [Status.OK, Status.OK, Status.PERMANENT, Status.OK]
        assert "'kind'" in outcomes[2].reason
        assert sorted(k.split("/")[0] for k in objects(s3, bucket)) == ["kind=a", "kind=b"]
        assert [line["kind"] for line in read_lines(s3, bucket, "kind=a/")] == ["a", "a"]

    def test_aggregated_records_carry_their_sub_sequence_numbers(self, s3, bucket):
        factory = EventFactory()
        event = factory.event(
            [factory.record({"n": 0}), factory.aggregate([("a", {"n": 1}), ("b", {"n": 2})])]
        )
        records = records_from_event(event)
        sink = S3Sink("archive", bucket=bucket, client=s3)
        assert all(o.ok for o in sink.write_batch(records))
        lines = read_lines(s3, bucket)
        assert [(line["n"], line["_sub_sequence"]) for line in lines] == [(0, 0), (1, 0), (2, 1)]
        assert lines[1]["_sequence"] == lines[2]["_sequence"] != lines[0]["_sequence"]
        (key,) = objects(s3, bucket)
        assert key.endswith(
            f"/{records[0].sequence_number}-{records[2].sequence_number}.1-{digest(records)}"
            ".jsonl.gz"
        )

    def test_data_that_is_not_a_json_object_is_archived_whole(self, s3, bucket):
        factory = EventFactory()
        event = factory.event(
            [factory.raw(b"\xff\x00 not json"), factory.raw(b'"text"'), factory.record([1, 2])]
        )
        sink = S3Sink("archive", bucket=bucket, client=s3)
        assert all(o.ok for o in sink.write_batch(records_from_event(event)))
        raw, text, array = read_lines(s3, bucket)
        assert base64.b64decode(raw["_data_base64"]) == b"\xff\x00 not json"
        assert text["_data"] == "text"
        assert array["_data"] == [1, 2]


class TestReplays:
    def test_replaying_the_same_batch_rewrites_identical_objects(self, s3, bucket):
        event = EventFactory(arrival=MIDNIGHT + 3600 - 0.05).batch(
            (f"k{i}", {"i": i}) for i in range(20)
        )
        S3Sink("archive", bucket=bucket, partition=HOURLY, client=s3).write_batch(
            records_from_event(event)
        )
        before, tags = objects(s3, bucket), etags(s3, bucket)
        again = S3Sink("archive", bucket=bucket, partition=HOURLY, client=s3)  # a new invocation
        assert all(o.ok for o in again.write_batch(records_from_event(event)))
        assert objects(s3, bucket) == before
        assert etags(s3, bucket) == tags
        assert len(tags) == 2

    def test_an_overlapping_replay_adds_an_object_that_readers_de_duplicate(self, s3, bucket):
        records = across_the_hour()
        sink = S3Sink("archive", bucket=bucket, partition=HOURLY, client=s3)
        sink.write_batch(records)
        assert all(o.ok for o in sink.write_batch(records[3:]))  # resumed from record 3
        keys = sorted(objects(s3, bucket))
        seqs = [r.sequence_number for r in records]
        assert keys == [
            f"dt=2026-01-01/hour=00/{SHARD}/{seqs[0]}-{seqs[4]}-{digest(records[:5])}.jsonl.gz",
            f"dt=2026-01-01/hour=00/{SHARD}/{seqs[3]}-{seqs[4]}-{digest(records[3:5])}.jsonl.gz",
            f"dt=2026-01-01/hour=01/{SHARD}/{seqs[5]}-{seqs[-1]}-{digest(records[5:])}.jsonl.gz",
        ]
        found = positions(read_lines(s3, bucket))
        assert len(found) == 22  # records 3 and 4 twice
        assert set(found) == {(SHARD, r.sequence_number, 0) for r in records}


    def test_a_late_partial_copy_of_a_batch_never_replaces_the_full_one(self, s3, bucket):
        """Issue 19, item 1: the full batch is archived and checkpointed; then a late copy of
        it (a worker paused past its lease, an orphaned sandbox, a retry after a throttled
        lookup) writes again without one key's records, which were held back. The full copy
        must survive: every record of the batch stays in the archive."""
        docs = [(f"user-{n % 10}", {"n": n}) for n in range(100)]
        records = records_from_event(EventFactory().batch(docs))
        sink = S3Sink("archive", bucket=bucket, client=s3)
        assert all(o.ok for o in sink.write_batch(records))
        late = [r for r in records if r.partition_key != "user-3"]
        assert late[0] is records[0]  # the same first and last record: the same old name
        assert late[-1] is records[-1]
        assert all(o.ok for o in sink.write_batch(late))
        found = set(positions(read_lines(s3, bucket)))
        assert found == {(r.shard_id, r.sequence_number, 0) for r in records}
        assert len(objects(s3, bucket)) == 2


class TestDeadLetters:
    def test_dead_letters_are_archived_apart_from_the_data(self, s3, bucket):
        records = across_the_hour(3)
        sink = S3Sink("archive", bucket=bucket, prefix="raw", partition="{kind}", client=s3)
        letters = [
            DeadLetter(r, "bad", "ValueError", "sink:orders", "fn", "p", 5.0) for r in records
        ]
        assert all(o.ok for o in sink.write_dead_letters(letters))
        (key,) = objects(s3, bucket)
        assert key.startswith(f"raw/dead-letters/{SHARD}/")
        lines = read_lines(s3, bucket, dead_letters=True)
        assert [line["data_base64"] for line in lines] == [
            base64.b64encode(r.data).decode() for r in records
        ]
        assert positions(lines) == [(SHARD, r.sequence_number, 0) for r in records]
        assert {line["step"] for line in lines} == {"sink:orders"}


class TestClassification:
    def test_a_missing_bucket_is_permanent_and_says_which(self, s3, unique):
        sink = S3Sink("archive", bucket=f"nope-{unique}", client=s3, sleep=lambda _: None)
        outcomes = sink.write_batch(across_the_hour(2))
        assert [o.status for o in outcomes] == [Status.PERMANENT] * 2
        assert outcomes[0].error == "NoSuchBucket"
        assert f"nope-{unique}" in outcomes[0].reason

    def test_a_bucket_name_botocore_refuses_is_permanent_and_not_retried(self, s3):
        sleeps: list[float] = []
        sink = S3Sink("archive", bucket="not a bucket!", client=s3, sleep=sleeps.append)
        (outcome,) = sink.write_batch(across_the_hour(1))
        assert outcome.status is Status.PERMANENT
        assert outcome.error == "ParamValidationError"
        assert "fix `bucket`" in outcome.reason
        assert sleeps == []

    def test_an_unreachable_endpoint_is_retryable_within_bounded_attempts(self):
        import boto3  # noqa: PLC0415
        from botocore.config import Config  # noqa: PLC0415

        dead = boto3.client(
            "s3",
            endpoint_url="http://127.0.0.1:9",
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
            config=Config(retries={"max_attempts": 1}, connect_timeout=1),
        )
        sleeps: list[float] = []
        sink = S3Sink(
            "archive",
            bucket="b-unreachable",
            partition=HOURLY,
            client=dead,
            max_attempts=3,
            base_delay=0.05,
            sleep=sleeps.append,
        )
        started = time.monotonic()
        outcomes = sink.write_batch(across_the_hour())
        assert time.monotonic() - started < 10
        assert {o.status for o in outcomes} == {Status.RETRYABLE}
        assert len(sleeps) == 2  # one object tried three times; the later one held back
        assert all(0 <= s <= 0.05 * 2**2 for s in sleeps)
        assert outcomes[0].error == "EndpointConnectionError"
        assert outcomes[-1].error == "HeldBack"


def test_importing_the_sink_module_imports_no_client_library():
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    code = "import sys, sinks.s3; print('boto3' in sys.modules, 'botocore' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert out.stdout.split() == ["False", "False"]
