"""The Glue Schema Registry's pure parts: the wire header, references, versions and what a
version's contract is; the cache's memory of unknown ids. (Fetching from a registry, the
step in a handler and the producer: tests/integration/test_glue_registry.py.)"""

from __future__ import annotations

import json
import re
import uuid
import zlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.glue_registry import (
    COMPRESSION_NONE,
    COMPRESSION_ZLIB,
    UNKNOWN_TTL_S,
    RegistryRecordError,
    RegistrySchema,
    SchemaVersion,
    VersionCache,
    encode_header,
    split_header,
)
from processors.schema import ContractError, Schema, _version_contract
from stream.records import Record

AVRO = {"type": "record", "name": "Order", "fields": [{"name": "id", "type": "string"}]}


def version(**changes: Any) -> SchemaVersion:
    fields = {
        "version_id": "6f1b0c2e-9a43-4a5e-8d3b-0123456789ab",
        "registry": "shop",
        "schema": "orders",
        "version_number": 1,
        "data_format": "AVRO",
        "definition": json.dumps(AVRO),
        "status": "AVAILABLE",
    }
    return SchemaVersion(**{**fields, **changes})


class TestHeader:
    @given(st.uuids(), st.sampled_from([COMPRESSION_NONE, COMPRESSION_ZLIB]), st.binary())
    def test_a_payload_comes_back_as_it_was_written(self, vid, compression, payload):
        body = zlib.compress(payload) if compression == COMPRESSION_ZLIB else payload
        header, out = split_header(encode_header(vid, compression) + body)
        assert (header.version_id, header.compression, out) == (str(vid), compression, payload)

    def test_the_header_is_version_compression_and_the_ids_sixteen_bytes(self):
        vid = uuid.uuid4()
        assert encode_header(vid) == b"\x03\x00" + vid.bytes

    @pytest.mark.parametrize(
        ("data", "reason"),
        [
            (b"", "no Glue Schema Registry header: the record is empty"),
            (b'{"a": 1}', "no Glue Schema Registry header: byte 0 is 123 ('{'), expected 3"),
            (b"\x03\x00\x01", "header is cut short: 3 bytes, a header is 18"),
            (b"\x03\x07" + bytes(16), "names compression 7; known: 0 (none), 5 (zlib)"),
            (b"\x03\x05" + bytes(16) + b"plain", "does not inflate (header says zlib)"),
        ],
    )
    def test_a_bad_header_is_the_records_fault_with_the_reason(self, data, reason):
        with pytest.raises(RegistryRecordError, match=re.escape(reason)):
            split_header(data)

    def test_an_unknown_compression_is_not_written(self):
        with pytest.raises(ValueError, match="compression 1"):
            encode_header(uuid.uuid4(), 1)


class TestReference:
    def test_the_spelling_names_registry_schema_and_version(self):
        assert RegistrySchema.parse("registry:shop/orders@3", "zlib") == RegistrySchema(
            "orders", "shop", 3, "zlib"
        )
        assert str(RegistrySchema.parse("registry:shop/orders")) == "registry:shop/orders"

    @pytest.mark.parametrize("text", ["shop/orders", "registry:shop/orders@x", "registry:shop/"])
    def test_a_bad_spelling_is_refused(self, text):
        with pytest.raises(ValueError, match=r"registry|version after @|a schema name"):
            RegistrySchema.parse(text)

    def test_only_none_and_zlib_compress(self):
        with pytest.raises(ValueError, match="expected none or zlib"):
            RegistrySchema("orders", compression="gzip")


class TestVersionContract:
    def test_an_avro_version_decodes_and_a_json_version_checks(self):
        avro = _version_contract(version())
        assert isinstance(avro, Schema)
        assert avro.kind == "avro"
        assert avro.document(b"\x02a") == {"id": "a"}
        schema = {"type": "object", "required": ["id"]}
        checked = _version_contract(version(data_format="JSON", definition=json.dumps(schema)))
        assert isinstance(checked, Schema)
        assert checked.document(b'{"id": 1}') == {"id": 1}
        with pytest.raises(ContractError, match="keyword required"):
            checked.document(b"{}")

    @pytest.mark.parametrize(
        ("changes", "reason"),
        [
            ({"data_format": "PROTOBUF"}, "is PROTOBUF: the schema step reads AVRO and JSON"),
            ({"status": "DELETING"}, "is DELETING, not AVAILABLE"),
            ({"definition": "{"}, "is not a usable AVRO schema"),
        ],
    )
    def test_a_version_that_cannot_be_a_contract_says_why(self, changes, reason):
        refused = _version_contract(version(**changes))
        assert isinstance(refused, str)
        assert reason in refused
        assert "shop/orders version 1" in refused

    def test_to_wire_writes_the_header_and_the_avro_binary(self):
        header = encode_header(version().version_id, COMPRESSION_ZLIB)
        contract = _version_contract(version(), header)
        assert isinstance(contract, Schema)
        wire = contract.to_wire({"id": "a"})
        assert wire[:18] == header
        assert zlib.decompress(wire[18:]) == b"\x02a"
        with pytest.raises(ContractError, match=re.escape("at Order.id: 1 is not a string")):
            contract.to_wire({"id": 1})

    def test_a_file_contract_has_no_wire_form(self):
        with pytest.raises(ValueError, match="not a registered schema"):
            Schema(avro=AVRO).to_wire({"id": "a"})


class TestRegistryStep:
    def test_the_step_needs_a_schema_name(self):
        with pytest.raises(ValueError, match=re.escape("needs {name: SCHEMA, registry: REGISTRY}")):
            Schema(registry={"registry": "shop"})
        assert Schema(registry={"name": "orders"}).source == "registry default-registry/orders"

    def test_a_record_without_a_header_is_refused_before_any_call(self):
        step = Schema(registry={"name": "orders"}, client=object())  # never asked
        with pytest.raises(ContractError, match="no Glue Schema Registry header") as caught:
            step(Record(b'{"id": "a"}', "k", "1"))
        assert caught.value.keyword == "registry"


class _Unknown:
    """A Glue client that knows no version (botocore's own ClientError, as Glue sends it)."""

    def __init__(self) -> None:
        self.calls = 0

    def get_schema_version(self, **_: Any) -> Any:
        from botocore.exceptions import ClientError  # noqa: PLC0415

        self.calls += 1
        error = {"Error": {"Code": "EntityNotFoundException", "Message": "not found"}}
        raise ClientError(error, "GetSchemaVersion")


class TestVersionCache:
    def test_an_unknown_id_is_asked_again_only_after_its_ttl(self):
        clock = [0.0]
        cache = VersionCache(now=lambda: clock[0], sleep=lambda _: None)
        client = _Unknown()
        for _ in range(3):
            with pytest.raises(RegistryRecordError, match="EntityNotFoundException"):
                cache.get(bytes(16), lambda: client, lambda v: v)
        assert client.calls == 1
        clock[0] = UNKNOWN_TTL_S + 1
        with pytest.raises(RegistryRecordError):
            cache.get(bytes(16), lambda: client, lambda v: v)
        assert client.calls == 2
