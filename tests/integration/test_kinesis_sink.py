"""The Kinesis sink against a real moto server: re-publishing, keys, classification."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from sinks.base import Status
from sinks.kinesis import KinesisSink
from stream.event import records_from_event
from stream.testing import EventFactory
from tests.integration.test_producer import lambda_event, make_stream, read_shard, shard_ranges

if TYPE_CHECKING:
    from stream.records import Record

pytestmark = pytest.mark.integration


def no_sleep(_: float) -> None:
    """Backoff is not waited for: moto does not throttle."""


def batch(docs: list[Any], source_key: str = "source") -> list[Record]:
    return records_from_event(EventFactory().batch((source_key, d) for d in docs))


def published(kinesis: Any, stream: str) -> list[Record]:
    """Every record of the target stream as its consumer sees it, shard by shard."""
    out: list[Record] = []
    for shard_id in shard_ranges(kinesis, stream):
        out += records_from_event(
            lambda_event(stream, shard_id, read_shard(kinesis, stream, shard_id))
        )
    return out  # fmt: skip


@pytest.fixture
def kinesis(aws: Any) -> Any:
    return aws("kinesis")


class TestRepublish:
    @pytest.mark.parametrize("aggregate", [False, True])
    def test_records_are_republished_keyed_by_the_field_in_order(self, kinesis, unique, aggregate):
        stream = make_stream(kinesis, f"stage2-{unique}")
        sink = KinesisSink(
            "next", stream=stream, partition_key="user", client=kinesis, aggregate=aggregate,
            sleep=no_sleep,
        )  # fmt: skip
        records = batch([{"user": f"u{i % 7}", "v": i} for i in range(200)])
        outcomes = sink.write_batch(records)

        assert [o.status for o in outcomes] == [Status.OK] * 200
        out = published(kinesis, stream)
        assert sorted(r.data for r in out) == sorted(r.data for r in records)
        # ordered: a call holds one record per key, so a shard with one key is sent plain
        assert any(r.aggregated for r in out) is aggregate
        by_key: dict[str, list[int]] = defaultdict(list)
        for r in out:
            doc = orjson.loads(r.data)
            assert r.partition_key == doc["user"]
            by_key[r.partition_key].append(doc["v"])
        assert all(vs == sorted(vs) for vs in by_key.values())
        assert len(by_key) == 7

    def test_a_numeric_key_field_becomes_its_decimal_string(self, kinesis, unique):
        stream = make_stream(kinesis, f"num-{unique}", shards=1)
        sink = KinesisSink("next", stream=stream, partition_key="id", client=kinesis)
        assert sink.write_batch(batch([{"id": 42}]))[0].ok
        (record,) = published(kinesis, stream)
        assert record.partition_key == "42"

    def test_the_chain_s_changes_are_what_is_published(self, kinesis, unique):
        stream = make_stream(kinesis, f"chg-{unique}", shards=1)
        sink = KinesisSink("next", stream=stream, partition_key="user", client=kinesis)
        (record,) = batch([{"user": "u1"}])
        record.as_dict()["stage"] = 2
        record.touch()
        assert sink.write_batch([record])[0].ok
        (out,) = published(kinesis, stream)
        assert orjson.loads(out.data) == {"user": "u1", "stage": 2}


class TestClassification:
    def test_a_missing_stream_is_permanent_and_names_it(self, kinesis, unique):
        for aggregate in (False, True):
            sink = KinesisSink(
                "next", stream=f"nope-{unique}", partition_key="user", client=kinesis,
                aggregate=aggregate, sleep=no_sleep,
            )  # fmt: skip
            outcomes = sink.write_batch(batch([{"user": "u1"}, {"user": "u2"}]))
            assert [o.status for o in outcomes] == [Status.PERMANENT] * 2
            assert {o.error for o in outcomes} == {"ResourceNotFoundException"}
            assert f"nope-{unique}" in outcomes[0].reason

    def test_a_missing_key_field_is_permanent_and_its_neighbours_are_published(
        self, kinesis, unique
    ):
        stream = make_stream(kinesis, f"key-{unique}", shards=1)
        sink = KinesisSink("next", stream=stream, partition_key="user", client=kinesis)
        records = batch([{"user": "u1"}, {"other": 1}, {"user": ""}, {"user": "u2"}])
        ok1, missing, empty, ok2 = sink.write_batch(records)
        assert ok1.ok
        assert ok2.ok
        for outcome in (missing, empty):
            assert outcome.status is Status.PERMANENT
            assert "'user'" in outcome.reason
        assert [r.partition_key for r in published(kinesis, stream)] == ["u1", "u2"]

    def test_a_record_that_is_not_json_is_permanent(self, kinesis, unique):
        stream = make_stream(kinesis, f"raw-{unique}", shards=1)
        sink = KinesisSink("next", stream=stream, partition_key="user", client=kinesis)
        (outcome,) = sink.write_batch(batch([b"\xff not json"]))
        assert outcome.status is Status.PERMANENT
        assert "not JSON" in outcome.reason

    def test_a_record_over_1_mib_is_permanent_and_names_its_size(self, kinesis, unique):
        stream = make_stream(kinesis, f"huge-{unique}", shards=1)
        sink = KinesisSink("next", stream=stream, partition_key="user", client=kinesis)
        big, fine = sink.write_batch(
            batch([{"user": "u1", "blob": "x" * 1_100_000}, {"user": "u2"}])
        )
        assert big.status is Status.PERMANENT
        assert big.error == "RecordTooLargeError"
        assert "bytes" in big.reason
        assert fine.ok
        assert [r.partition_key for r in published(kinesis, stream)] == ["u2"]

    def test_an_unreachable_endpoint_is_retryable_within_bounded_time(self):
        import boto3  # noqa: PLC0415
        from botocore.config import Config  # noqa: PLC0415

        dead = boto3.client(
            "kinesis",
            endpoint_url="http://127.0.0.1:9",
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
            config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=1),
        )
        sleeps: list[float] = []
        sink = KinesisSink(
            "next", stream="s", partition_key="user", client=dead, max_attempts=3,
            sleep=sleeps.append,
        )  # fmt: skip
        started = time.monotonic()
        outcomes = sink.write_batch(batch([{"user": "u1"}, {"user": "u2"}]))
        assert time.monotonic() - started < 10
        assert [o.status for o in outcomes] == [Status.RETRYABLE] * 2
        assert outcomes[0].error == "EndpointConnectionError"
        assert len(sleeps) == 2  # three attempts, backoff between them


def test_importing_the_sink_module_imports_no_client_or_aggregation_library():
    code = (
        "import sys, sinks.kinesis; "
        "print(sorted(m for m in ('boto3', 'botocore', 'aws_kinesis_agg', 'google.protobuf') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert out.stdout.strip() == "[]"
