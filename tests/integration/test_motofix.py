"""The local stack's moto refuses a PutObject whose body does not match its checksum, as S3
does (:mod:`deploy.local.motofix`), against the session moto server over HTTP.

The case it is for: a PutObject whose body was cut off on its way but arrived as a shorter
complete request, carrying botocore's CRC32 of the whole body. Plain moto stored it, and
every read of the object then failed botocore's checksum validation.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import zlib
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from deploy.local import motofix

pytestmark = pytest.mark.integration

BODY = b'{"a":1}\n' * 100


def crc32(body: bytes) -> str:
    return base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()


def sha256(body: bytes) -> str:
    return base64.b64encode(hashlib.sha256(body).digest()).decode()


@pytest.fixture
def bucket(aws: Any, unique: str) -> str:
    aws("s3").create_bucket(Bucket=f"motofix-{unique}")
    return f"motofix-{unique}"


def refused(s3: Any, bucket: str, key: str, **put: Any) -> dict[str, Any]:
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        s3.put_object(Bucket=bucket, Key=key, **put)
    with pytest.raises(botocore.exceptions.ClientError) as missing:
        s3.head_object(Bucket=bucket, Key=key)
    assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404  # not stored
    return caught.value.response


@pytest.mark.parametrize("sent", [b"", BODY[:10]], ids=["empty", "cut"])
def test_a_body_cut_short_under_the_whole_bodys_crc32_is_refused_and_not_stored(aws, bucket, sent):
    """The shape of the killed sandbox's PutObject as it reached moto: the CRC32 of the
    whole body, and none or part of the body."""
    response = refused(aws("s3"), bucket, "cut", Body=sent, ChecksumCRC32=crc32(BODY))

    assert response["Error"]["Code"] == "BadDigest"
    assert (
        response["Error"]["Message"]
        == "The CRC32 you specified did not match the calculated checksum."
    )
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_a_sha256_that_does_not_match_is_refused(aws, bucket):
    response = refused(aws("s3"), bucket, "sha", Body=BODY[:10], ChecksumSHA256=sha256(BODY))

    assert response["Error"]["Code"] == "BadDigest"
    assert "SHA256" in response["Error"]["Message"]


@pytest.mark.parametrize("checksum", ["ChecksumCRC32", "ChecksumSHA256", None])
def test_a_body_that_matches_its_checksum_is_stored_and_reads_back_verified(aws, bucket, checksum):
    """Matching checksums (given, or botocore's own CRC32 by default) are stored as before,
    and a read with checksum validation gets the whole body."""
    s3 = aws("s3")
    given = {"ChecksumCRC32": crc32(BODY), "ChecksumSHA256": sha256(BODY)}
    put = {checksum: given[checksum]} if checksum else {}

    s3.put_object(Bucket=bucket, Key="ok", Body=BODY, **put)

    got = s3.get_object(Bucket=bucket, Key="ok", ChecksumMode="ENABLED")
    assert got["Body"].read() == BODY


def test_patching_again_changes_nothing():
    """``patch_moto`` runs in every fixture and ``LocalAWS`` start of a process: each patch
    wraps moto's method once."""
    from moto.dynamodb.responses import DynamoHandler  # noqa: PLC0415
    from moto.kinesis.models import Shard  # noqa: PLC0415
    from moto.s3.responses import S3Response  # noqa: PLC0415

    motofix.patch_moto()
    put_object, put_record = S3Response.put_object, Shard.put_record
    dynamodb_call = DynamoHandler.call_action

    motofix.patch_moto()

    assert (S3Response.put_object, Shard.put_record) == (put_object, put_record)
    assert DynamoHandler.call_action == dynamodb_call
    assert getattr(dynamodb_call, "_shardline_serialized", False)
    assert getattr(put_object, "_shardline_checksums_checked", False)


def test_reads_of_a_shard_while_records_are_put_on_it_never_fail(
    aws: Any, moto_endpoint: str, unique: str
) -> None:
    # moto's GetRecords walked the shard's records in Python while a put added one: an
    # "OrderedDict mutated during iteration", answered as HTTP 500 (make demo: 4 to 7 a run)
    kinesis = aws("kinesis")
    name = f"motofix-{unique}"
    kinesis.create_stream(StreamName=name, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName=name)
    for _ in range(10):  # a long shard: each read walks all of it
        kinesis.put_records(
            StreamName=name,
            Records=[{"Data": b"x", "PartitionKey": str(i)} for i in range(500)],
        )
    shard = kinesis.list_shards(StreamName=name)["Shards"][0]["ShardId"]
    stop = threading.Event()
    failures: list[BaseException] = []

    def put(writer: Any) -> None:
        while not stop.is_set():
            writer.put_record(StreamName=name, Data=b"y", PartitionKey="p")

    # a read answered 500 is an error here, not retried away (botocore retries a 500)
    reader = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    ).client(
        "kinesis", endpoint_url=moto_endpoint, config=Config(retries={"total_max_attempts": 1})
    )

    def read() -> None:
        try:
            for _ in range(15):
                iterator = reader.get_shard_iterator(
                    StreamName=name, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]
                reader.get_records(ShardIterator=iterator, Limit=10000)
        except botocore.exceptions.ClientError as exc:
            failures.append(exc)

    writers = [threading.Thread(target=put, args=(aws("kinesis"),), daemon=True) for _ in range(2)]
    for writer in writers:
        writer.start()
    try:
        read()
    finally:
        stop.set()
        for writer in writers:
            writer.join(60)
    assert failures == []


def test_conditional_updates_at_once_never_both_pass(aws: Any, unique: str) -> None:
    """Two threads race to move a counter with ``UpdateItem`` on ``n = seen`` (a long
    update expression, as the window state's commit has): on DynamoDB a condition is
    checked and the write applied atomically, so the counter ends at the number of
    updates that succeeded. Plain moto checked the condition, then parsed the update, then
    applied it: about 58 of 210 successes were a second pass on an ``n`` already moved
    (the lanes-mode window state lost records that way: two commits on one ``n``)."""
    dynamodb = aws("dynamodb")
    table = f"motofix-{unique}"
    dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    key = {"k": {"S": "x"}}
    dynamodb.put_item(TableName=table, Item={**key, "n": {"N": "0"}})
    sets = ", ".join(f"#a{i} = :v" for i in range(30))
    names = {f"#a{i}": f"a{i}" for i in range(30)} | {"#n": "n", "#p": "p"}
    won = [0, 0]

    def race(lane: int) -> None:
        client = aws("dynamodb")
        for _ in range(100):
            seen = client.get_item(TableName=table, Key=key, ConsistentRead=True)["Item"]["n"]["N"]
            try:
                client.update_item(
                    TableName=table,
                    Key=key,
                    UpdateExpression=f"SET #n = :m, {sets} ADD #p :p",
                    ConditionExpression="#n = :s",
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues={
                        ":m": {"N": str(int(seen) + 1)},
                        ":s": {"N": seen},
                        ":v": {"S": "x" * 50},
                        ":p": {"NS": [seen]},
                    },
                )
            except client.exceptions.ConditionalCheckFailedException:
                continue
            won[lane] += 1

    threads = [threading.Thread(target=race, args=(lane,)) for lane in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    final = dynamodb.get_item(TableName=table, Key=key, ConsistentRead=True)["Item"]
    assert min(won) > 0  # they did race
    assert int(final["n"]["N"]) == sum(won)
    assert len(final["p"]["NS"]) == sum(won)
