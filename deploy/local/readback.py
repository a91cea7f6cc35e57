"""Read what landed back from the stores: the demo's and the end-to-end tests' ground truth.

Counts come from the services themselves (a DynamoDB scan, an OpenSearch count, the S3
objects' lines, the queue's messages), never from the runner's counters, so a sink that
reports ok without writing shows up as a mismatch.
"""

from __future__ import annotations

import gzip
import re
from typing import Any

import orjson

__all__ = ["archive_lines", "dead_letters", "index_pattern", "search_count", "table_items"]


def table_items(ddb: Any, table: str) -> list[dict[str, Any]]:
    """Every item of a DynamoDB table (AttributeValue form), all pages."""
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": table}
    while True:
        page = ddb.scan(**kwargs)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def index_pattern(template: str) -> str:
    """The index pattern covering every index a name template can make.

    >>> index_pattern("events-{arrival:%Y.%m.%d}")
    'events-*'
    """
    return re.sub(r"\{[^}]*\}", "*", template)


def search_count(url: str, template: str, query: dict[str, Any] | None = None) -> int:
    """Documents in every index the sink's ``index`` template can name (refreshed first),
    all of them or those matching ``query`` (OpenSearch query DSL)."""
    from opensearchpy import OpenSearch  # noqa: PLC0415

    client = OpenSearch(hosts=[url], timeout=30)
    pattern = index_pattern(template)
    try:
        client.indices.refresh(index=pattern)
        body = {"query": query} if query else None
        return int(client.count(index=pattern, body=body)["count"])
    finally:
        client.close()


def archive_lines(
    s3: Any, bucket: str, prefix: str = "", *, dead_letters: bool = False
) -> list[dict[str, Any]]:
    """Every JSON line of every archive object under ``prefix`` (gzip or plain), in key order.

    ``prefix`` may be the sink's template: the listing starts at its constant part. Objects
    under ``dead-letters/`` (where an S3 ``on_failure`` sink puts envelopes) are left out,
    or are the only ones read with ``dead_letters=True``.
    """
    listed = prefix.split("{", 1)[0].lstrip("/")
    lines: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=listed):
        for obj in page.get("Contents", []):
            if ("dead-letters/" in obj["Key"]) is not dead_letters:
                continue
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            if body[:2] == b"\x1f\x8b":
                body = gzip.decompress(body)
            lines += [orjson.loads(line) for line in body.splitlines() if line]
    return lines


def dead_letters(sqs: Any, queue: str, s3: Any = None) -> list[dict[str, Any]]:
    """Every message of a dead-letter queue, decoded (received, not deleted).

    Each message is hidden while the queue is read, so that none is counted twice, and made
    visible again at the end, so that the next reader (an operator, another count) sees
    them all. A message that points to an S3 object (an oversize dead letter) is replaced
    by the object's envelope when an S3 client is given.
    """
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    out: list[dict[str, Any]] = []
    handles: list[str] = []
    while True:
        page = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=900, WaitTimeSeconds=0
        )
        messages = page.get("Messages", [])
        if not messages:
            for i in range(0, len(handles), 10):
                sqs.change_message_visibility_batch(
                    QueueUrl=url,
                    Entries=[
                        {"Id": str(n), "ReceiptHandle": h, "VisibilityTimeout": 0}
                        for n, h in enumerate(handles[i : i + 10])
                    ],
                )
            return out
        for message in messages:
            handles.append(message["ReceiptHandle"])
            body = orjson.loads(message["Body"])
            pointer = body.get("overflow") if isinstance(body, dict) else None
            if s3 is not None and isinstance(pointer, dict) and "bucket" in pointer:
                obj = s3.get_object(Bucket=pointer["bucket"], Key=pointer["key"])
                body = orjson.loads(obj["Body"].read())
            out.append(body)
