"""The producer with a contract (``Producer(schema=...)``) against a moto server: records
that follow it are put, records that break it are returned failed with the reason and never
sent, and an Avro contract sends what the function's ``schema: {avro: ...}`` step decodes."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from processors.schema import Schema
from stream.event import records_from_event
from stream.producer import CONTRACT_ERROR, Producer, UndeliveredRecordsError
from tests.integration.test_producer import lambda_event, make_stream, no_sleep, read_shard

pytestmark = pytest.mark.integration

SCHEMAS = Path(__file__).resolve().parents[2] / "examples" / "contracts" / "schemas"
ORDER: dict[str, Any] = {
    "order_id": "o-1",
    "customer_id": "c-1",
    "currency": "EUR",
    "items": [{"sku": "a", "qty": 2, "price": 1.5}],
    "total": 3.0,
}


def order(n: int, **changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(ORDER)
    doc["order_id"] = f"o-{n}"
    doc.update(changes)
    return doc


def stream_records(kinesis: Any, stream: str) -> list[Any]:
    out = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        shard_id = shard["ShardId"]
        event = lambda_event(stream, shard_id, read_shard(kinesis, stream, shard_id))
        out += records_from_event(event)
    return out


class TestJsonSchemaContract:
    def test_conforming_records_are_put_and_breaking_ones_refused_with_pointer_and_keyword(
        self, aws: Any, unique: str
    ):
        kinesis = aws("kinesis")
        stream = make_stream(kinesis, f"json-{unique}")
        producer = Producer(stream, kinesis, schema=SCHEMAS / "order.json", sleep=no_sleep)
        bad_qty = order(2)
        bad_qty["items"][0]["qty"] = 0
        producer.put(order(1), "k")
        producer.put(orjson.dumps(bad_qty), "k")  # bytes are checked as their JSON
        producer.put(b"not json", "k")
        producer.put(orjson.dumps(order(4)), "k")
        result = producer.flush()
        assert [r.ok for r in result.results] == [True, False, False, True]
        qty, not_json = result.failed
        assert qty.error == CONTRACT_ERROR
        assert qty.permanent
        assert qty.attempts == 0
        assert "at /items/0/qty, keyword minimum" in qty.reason
        assert "record 1 (partition key 'k')" in qty.reason
        assert orjson.loads(qty.data) == bad_qty  # the data to fix and put again
        assert "not JSON" in not_json.reason
        assert result.stats.records == 4
        assert result.stats.failures == 2
        sent = [r.as_dict()["order_id"] for r in stream_records(kinesis, stream)]
        assert sent == ["o-1", "o-4"]  # a refused record holds back nothing of its key

    def test_the_context_manager_raises_for_refused_records(self, aws: Any, unique: str):
        kinesis = aws("kinesis")
        stream = make_stream(kinesis, f"jsonctx-{unique}")
        schema = Schema.from_file(SCHEMAS / "order.json")
        with pytest.raises(UndeliveredRecordsError), Producer(stream, kinesis, schema=schema) as p:
            p.put(order(1, total=-1), "k")
        assert stream_records(kinesis, stream) == []


class TestAvroContract:
    def test_records_are_sent_as_avro_that_the_functions_step_decodes(self, aws: Any, unique: str):
        kinesis = aws("kinesis")
        stream = make_stream(kinesis, f"avro-{unique}")
        producer = Producer(stream, kinesis, schema=str(SCHEMAS / "order.avsc"), sleep=no_sleep)
        producer.put(order(1), "k")
        producer.put(orjson.dumps(order(2, coupon="SAVE")), "k")
        producer.put(order(3, currency="XXX"), "k")
        result = producer.flush()
        assert [r.ok for r in result.results] == [True, True, False]
        (refused,) = result.failed
        assert refused.error == CONTRACT_ERROR
        assert "com.example.Order.currency: 'XXX'" in refused.reason
        records = stream_records(kinesis, stream)
        assert records[0].data[:1] != b"{"  # Avro binary on the stream, not JSON
        step = Schema(avro=orjson.loads((SCHEMAS / "order.avsc").read_bytes()))
        decoded = [step(r).as_dict() for r in records]
        assert decoded == [{**order(1), "coupon": None}, order(2, coupon="SAVE")]


class TestSchemaArgument:
    def test_a_file_that_is_no_contract_is_refused_when_the_producer_is_made(self, tmp_path: Path):
        (tmp_path / "order.yaml").write_text("type: object")
        with pytest.raises(ValueError, match=r"\.json \(JSON Schema\) or \.avsc"):
            Producer("s", object(), schema=tmp_path / "order.yaml")
        (tmp_path / "broken.json").write_text("{")
        with pytest.raises(ValueError, match="is not JSON"):
            Producer("s", object(), schema=tmp_path / "broken.json")
