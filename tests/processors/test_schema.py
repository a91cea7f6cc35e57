"""The ``schema`` step: JSON Schema checks and Avro decoding, and their dead letters."""

from __future__ import annotations

import io
import json
from pathlib import Path

import fastavro
import orjson
import pytest

from processors.chain import Chain
from processors.registry import build_processor
from processors.schema import ContractError, Schema
from stream.exceptions import RecordError
from stream.records import Record

ROOT = Path(__file__).resolve().parent.parent.parent
SCHEMAS = ROOT / "examples" / "contracts" / "schemas"
ORDER = json.loads((SCHEMAS / "order.json").read_text())
AVRO = json.loads((SCHEMAS / "order.avsc").read_text())
GOOD = {
    "order_id": "o-1",
    "customer_id": "c1",
    "currency": "EUR",
    "items": [{"sku": "s1", "qty": 2, "price": 4.5}],
    "total": 9,
}


def _record(doc: object, seq: int = 1) -> Record:
    data = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    return Record(data, "k", str(seq), shard_id="shardId-0", index=seq)


def _avro(doc: dict[str, object]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(AVRO), doc)
    return out.getvalue()


class TestJsonSchema:
    def test_a_conforming_record_passes_unchanged(self) -> None:
        rec = _record(GOOD)
        assert Schema(json_schema=ORDER, source="order.json")(rec) is rec

    @pytest.mark.parametrize(
        ("change", "pointer", "keyword"),
        [
            ({"items": [{"sku": "s1", "qty": 0, "price": 1}]}, "/items/0/qty", "minimum"),
            ({"currency": "CHF"}, "/currency", "enum"),
            ({"order_id": "x-1"}, "/order_id", "pattern"),
            ({"note": "x"}, "", "additionalProperties"),
            ({"coupon": "SPRING"}, "", "dependentRequired"),  # a 2020-12 keyword
        ],
    )
    def test_a_record_that_breaks_it_fails_with_its_pointer_and_keyword(
        self, change: dict[str, object], pointer: str, keyword: str
    ) -> None:
        with pytest.raises(ContractError) as caught:
            Schema(json_schema=ORDER, source="order.json")(_record({**GOOD, **change}))
        assert (caught.value.pointer, caught.value.keyword) == (pointer, keyword)
        assert "order.json" in str(caught.value)
        assert f"keyword {keyword}" in str(caught.value)
        assert isinstance(caught.value, RecordError)  # dead-lettered, never retried

    def test_a_missing_field_names_the_required_keyword(self) -> None:
        doc = {k: v for k, v in GOOD.items() if k != "total"}
        with pytest.raises(ContractError, match=r"keyword required: \"total\""):
            Schema(json_schema=ORDER)(_record(doc))

    def test_a_schema_given_as_a_file_name_asks_for_a_compiled_plan(self) -> None:
        with pytest.raises(ValueError, match="shardline compile"):
            Schema(json_schema="schemas/order.json")

    def test_a_broken_schema_fails_at_build(self) -> None:
        with pytest.raises(ValueError, match=r"anyOf|type"):
            Schema(json_schema={"type": "nope"})

    def test_exactly_one_schema_is_required(self) -> None:
        with pytest.raises(ValueError, match="exactly one"):
            Schema()


class TestAvro:
    def test_a_record_continues_as_its_json_document(self) -> None:
        doc = {**GOOD, "total": 9.0, "coupon": None}
        rec = Schema(avro=AVRO, source="order.avsc")(_record(_avro(doc)))
        assert rec.json == doc
        assert orjson.loads(rec.data) == doc  # the sinks get JSON

    @pytest.mark.parametrize(
        ("cut", "reason"),
        [(slice(0, 10), "EOFError"), (slice(0, None), "bytes left after the record")],
    )
    def test_bytes_that_are_not_the_record_fail_with_the_avro_error(
        self, cut: slice, reason: str
    ) -> None:
        data = _avro({**GOOD, "total": 9.0, "coupon": None})
        data = data[cut] if cut.stop else data + b"\x00"
        with pytest.raises(ContractError, match=f"not Avro of order.avsc: .*{reason}"):
            Schema(avro=AVRO, source="order.avsc")(_record(data))


class TestInTheChain:
    @pytest.mark.parametrize("fuse", [True, False])
    def test_failures_carry_the_step_and_reason_fused_or_not(self, fuse: bool) -> None:
        steps = [
            build_processor(0, {"schema": {"json_schema": ORDER, "source": "order.json"}}),
            build_processor(1, {"filter": {"match": {"currency": ["EUR"]}}}),
        ]
        batch = [
            _record(GOOD, 1),
            _record({**GOOD, "currency": "CHF"}, 2),
            _record(b"not json", 3),
        ]
        result = Chain(steps, fuse=fuse).run(batch)
        assert [r.sequence_number for r in result.records] == ["1"]
        reasons = [(f.step, str(f.error)) for f in result.failures]
        assert reasons[0][0] == reasons[1][0] == "processors[0].schema"
        assert "at /currency, keyword enum" in reasons[0][1]
        assert "is not JSON" in reasons[1][1]
        assert not any(f.retryable for f in result.failures)
