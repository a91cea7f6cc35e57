"""A step that makes several records from one: each part is its own document, item and
archive line, and a redelivery rewrites the same ones (no part is lost to a shared id)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from deploy.local.readback import archive_lines, search_count, table_items
from processors.chain import Chain, Step
from sinks.base import Status
from sinks.dynamodb import DynamoDBSink
from sinks.opensearch import OpenSearchSink
from sinks.s3 import S3Sink
from stream.event import records_from_event
from stream.testing import EventFactory
from tests.integration.test_dynamodb_sink import make_table

if TYPE_CHECKING:
    from stream.records import Record

pytestmark = pytest.mark.integration


def explode(record: Record) -> list[Record]:
    """One record per item of the order, as an 'unnest' plugin would."""
    doc = record.as_dict()
    return [record.derive({"order_id": doc["order_id"], "sku": sku}) for sku in doc["skus"]]


def delivery() -> list[Record]:
    f = EventFactory()
    event = f.batch([("o1", {"order_id": "o1", "skus": ["a", "b", "c"]}),
                     ("o2", {"order_id": "o2", "skus": ["d"]})])  # fmt: skip
    return Chain([Step.of("processors[0].explode", explode)]).run(records_from_event(event)).records


def test_the_parts_of_one_record_are_distinct_in_every_keyed_sink(
    aws: Any, opensearch_endpoint: str, unique: str
):
    ddb, s3 = aws("dynamodb"), aws("s3")
    table = make_table(ddb, f"items-{unique}", append=True)
    s3.create_bucket(Bucket=f"arch-{unique}")
    sinks = [
        DynamoDBSink("items", table=table, key="order_id", mode="append", client=ddb),
        OpenSearchSink(
            "search", endpoint=opensearch_endpoint, index=f"items-{unique}", auth="none"
        ),
        S3Sink("archive", bucket=f"arch-{unique}", client=s3),
    ]
    for _ in range(2):  # the second delivery is Lambda's redelivery of the same batch
        records = delivery()
        assert [r.part for r in records] == ["0", "1", "2", ""]
        for sink in sinks:
            assert {o.status for o in sink.write_batch(records)} == {Status.OK}
    assert sorted(i["sku"]["S"] for i in table_items(ddb, table)) == ["a", "b", "c", "d"]
    assert search_count(opensearch_endpoint, f"items-{unique}") == 4
    lines = archive_lines(s3, f"arch-{unique}")
    assert sorted((line["sku"], line.get("_part", "")) for line in lines) == [
        ("a", "0"), ("b", "1"), ("c", "2"), ("d", ""),
    ]  # fmt: skip
