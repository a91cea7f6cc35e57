"""The archive (S3) sink when a PutObject is applied but its answer is lost and the batch
is then delivered again, as the mapping does: whole, or from the first failed record on.

Against the session moto server through :class:`tests.faultproxy.FaultProxy`. What must
hold: no record is missing from the archive; a redelivered identical object overwrites
itself with the same bytes (one key, not two); a redelivery with another set of records
adds an object under another name, whose lines are byte-identical copies that readers
(and ``replay``) remove by position; nothing ever replaces a fuller object; a write cut off
mid-request (its sandbox killed) stores nothing, and its redelivery archives every record.
"""

from __future__ import annotations

import socket
from collections import Counter
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from deploy.local.readback import archive_lines
from sinks.base import Ordering, Status
from sinks.s3 import S3Sink
from tests.faultproxy import LOST_ACK, FaultProxy, Request
from tests.integration.fault_fixtures import aws_client, no_sleep
from tests.integration.test_dynamodb_sink import batch
from tests.integration.test_run import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator

    from stream.records import Record

pytestmark = pytest.mark.integration


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    with FaultProxy(moto_endpoint, seed=8) as p:
        yield p


def sink(client: Any, bucket: str) -> S3Sink:
    return S3Sink(
        "archive",
        bucket=bucket,
        prefix="raw/",
        partition="kind={kind}",
        compression="none",
        client=client,
        max_attempts=1,
        sleep=no_sleep,
    )


def records() -> list[Record]:
    """30 records of 5 keys in 3 partitions: every object holds every key."""
    return batch([{"order_id": f"o{i % 5}", "kind": i % 3, "i": i} for i in range(30)])


def objects(s3: Any, bucket: str) -> dict[str, bytes]:
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def kind_1(request: Request) -> bool:
    path = request.path.replace("%3D", "=")  # botocore quotes '=' in keys
    return request.method == "PUT" and "/kind=1/" in path


def position(line: dict[str, Any]) -> tuple[str, str, int]:
    return line["_shard"], line["_sequence"], line["_sub_sequence"]


@pytest.fixture
def clean(aws: Any, unique: str) -> dict[str, bytes]:
    s3 = aws("s3")
    s3.create_bucket(Bucket=f"clean-{unique}")
    outcomes = sink(s3, f"clean-{unique}").write_batch(records(), Ordering.PER_KEY)
    assert {o.status for o in outcomes} == {Status.OK}
    return objects(s3, f"clean-{unique}")


def test_a_lost_answer_then_the_same_batch_again_leaves_the_clean_archive(
    proxy, aws, unique, clean
):
    s3, bucket = aws("s3"), f"archive-{unique}"
    s3.create_bucket(Bucket=bucket)
    proxy.inject(LOST_ACK, times=1, where=kind_1)
    first = sink(aws_client(proxy.url, "s3"), bucket).write_batch(records(), Ordering.PER_KEY)
    assert proxy.injected["lost_ack"] == 1
    assert Status.RETRYABLE in {o.status for o in first}

    again = sink(aws_client(proxy.url, "s3"), bucket).write_batch(records(), Ordering.PER_KEY)

    assert {o.status for o in again} == {Status.OK}
    assert objects(s3, bucket) == clean  # the applied object was overwritten by itself


def test_a_redelivery_from_the_failed_record_adds_copies_readers_remove_by_position(
    proxy, aws, unique, clean
):
    """Lambda redelivers from the lowest failed sequence number on: the suffix of the
    batch. The kind=0 object of the suffix holds fewer records than the first one, so it
    gets another name beside it; kind=1 is the same set and overwrites itself."""
    s3, bucket = aws("s3"), f"archive-{unique}"
    s3.create_bucket(Bucket=bucket)
    proxy.inject(LOST_ACK, times=1, where=kind_1)
    batch_ = records()
    first = sink(aws_client(proxy.url, "s3"), bucket).write_batch(batch_, Ordering.STRICT)
    failed = min(i for i, o in enumerate(first) if o.status is not Status.OK)
    assert failed == 1  # the first record of kind=1

    again = sink(aws_client(proxy.url, "s3"), bucket).write_batch(batch_[failed:], Ordering.STRICT)

    assert {o.status for o in again} == {Status.OK}
    stored = objects(s3, bucket)
    assert set(clean) <= set(stored)  # every clean object, byte for byte
    assert all(stored[key] == body for key, body in clean.items())
    extra = set(stored) - set(clean)
    assert len(extra) == 1
    assert "/kind=0/" in next(iter(extra))
    lines = archive_lines(s3, bucket, "raw/")
    copies = Counter(position(line) for line in lines)
    assert len(copies) == 30  # every record, once by position
    assert sum(copies.values()) - 30 == 9  # kind=0 records after the first, twice
    by_position: dict[tuple[str, str, int], bytes] = {}
    for line in lines:  # a copy is the same line, not another version of the record
        encoded = orjson.dumps(line, option=orjson.OPT_SORT_KEYS)
        assert by_position.setdefault(position(line), encoded) == encoded


def cut_off_after_headers(proxy: FaultProxy, put: Request) -> None:
    """Send ``put`` as a process killed after PutObject's headers leaves it on the wire:
    the headers, the ``100 Continue`` botocore waits for before the body, then the socket
    closed without a byte of the body."""
    target = f"{put.path}?{put.query}" if put.query else put.path
    head = "".join(f"{name}: {value}\r\n" for name, value in put.headers.items())
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as client:
        client.sendall(f"PUT {target} HTTP/1.1\r\n{head}\r\n".encode())
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):
            interim += client.recv(1)
        assert interim.startswith(b"HTTP/1.1 100")


def test_a_write_cut_off_mid_request_stores_nothing_and_its_bisected_redelivery_archives_all(
    proxy, aws, unique
):
    """A Lambda sandbox killed past its timeout between a PutObject's headers and its body
    (the handler-timeout e2e scenario). The cut-off request must never become an object:
    an empty body kept under botocore's CRC32 of the whole body made every later read of
    the archive fail (``FlexibleChecksumError``), and a bisected redelivery writes other
    names, so it would have stayed for good. The requests are the sink's own, as botocore
    sent them (checksum and signature headers), captured from a first, whole write."""
    s3, bucket = aws("s3"), f"archive-{unique}"
    s3.create_bucket(Bucket=bucket)
    through = aws_client(proxy.url, "s3")
    batch_ = records()
    assert {o.status for o in sink(through, bucket).write_batch(batch_, Ordering.PER_KEY)} == {
        Status.OK
    }
    puts = [request for request in proxy.answered if request.method == "PUT"]
    assert len(puts) == 3  # one object per kind
    assert all("x-amz-checksum-crc32" in put.headers for put in puts)
    for key in objects(s3, bucket):
        s3.delete_object(Bucket=bucket, Key=key)

    for put in puts:
        cut_off_after_headers(proxy, put)
    wait_until(
        "the cut-off writes are over",
        lambda: proxy.cut_off == len(puts) or bool(objects(s3, bucket)),
        10,
    )
    assert objects(s3, bucket) == {}

    for half in (batch_[:15], batch_[15:]):  # redelivered, bisected: other object names
        outcomes = sink(through, bucket).write_batch(half, Ordering.PER_KEY)
        assert {o.status for o in outcomes} == {Status.OK}

    lines = archive_lines(s3, bucket, "raw/")  # botocore checks every object's checksum
    assert sorted(position(line) for line in lines) == sorted(
        (r.shard_id, r.sequence_number, r.sub_sequence_number) for r in batch_
    )
