"""The S3 sink's pure logic: keys, lines, byte-identical bodies, settings, classification."""

from __future__ import annotations

import base64
import gzip
import json

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sinks.s3 import (
    BOOKKEEPING,
    S3Sink,
    _classify,
    archive_line,
    object_body,
    object_key,
    positions_digest,
)
from stream.event import records_from_event
from stream.records import Record
from stream.testing import EventFactory

SEQ = "49590338271490256608559692538361571095921575989136588898"


def rec(data: bytes = b"{}", seq: str = SEQ, sub: int = 0, aggregated: bool = False) -> Record:
    return Record(data, "pk", seq, sub, aggregated, "shardId-000000000001", 1767225600.25)


class TestObjectKey:
    @pytest.mark.parametrize(
        ("prefix", "partition", "expected"),
        [
            ("raw/", "dt=2026-01-01/hour=00", "raw/dt=2026-01-01/hour=00/shardId-000000000001"),
            ("raw", "dt=2026-01-01", "raw/dt=2026-01-01/shardId-000000000001"),
            ("/raw//x/", "/p/", "raw/x/p/shardId-000000000001"),
            ("", "", "shardId-000000000001"),
            ("raw/", "", "raw/shardId-000000000001"),
        ],
    )
    def test_levels_are_joined_with_one_slash_and_empty_ones_are_left_out(
        self, prefix, partition, expected
    ):
        members = [rec(), rec(seq="99")]
        key = object_key(prefix, partition, members)
        assert key == f"{expected}/{SEQ}-99-{positions_digest(members)}.jsonl.gz"

    def test_without_compression_the_extension_is_jsonl(self):
        digest = positions_digest([rec()])
        assert object_key("raw/", "", [rec()]).endswith(f"/{SEQ}-{SEQ}-{digest}.jsonl.gz")
        assert object_key("raw/", "", [rec()], "none").endswith(f"/{SEQ}-{SEQ}-{digest}.jsonl")

    def test_records_from_an_aggregate_name_their_sub_sequence_number(self):
        first = rec(sub=0, aggregated=True)
        last = rec(seq="99", sub=4, aggregated=True)
        assert f"/{SEQ}.0-99.4-" in object_key("", "", [first, last])
        assert f"/{SEQ}.0-99-" in object_key("", "", [first, rec(seq="99")])

    def test_the_name_tells_apart_every_set_of_records_between_the_same_ends(self):
        """A copy of a batch missing a record in the middle (held back by a retryable failure)
        must never get the name of the full copy, or its write would replace the full one."""
        full = [rec(seq=str(n)) for n in range(10, 20)]
        names = {object_key("", "", full[:i] + full[i + 1 :]) for i in range(1, 9)}
        names.add(object_key("", "", full))
        assert len(names) == 9
        assert object_key("", "", full) == object_key("", "", list(full))


class TestArchiveLine:
    def test_an_object_keeps_its_fields_and_gets_the_bookkeeping_fields(self):
        line = orjson.loads(archive_line(rec(b'{"a": 1, "b": [true, null]}', sub=2)))
        assert line == {
            "a": 1,
            "b": [True, None],
            "_shard": "shardId-000000000001",
            "_sequence": SEQ,
            "_sub_sequence": 2,
            "_partition_key": "pk",
            "_arrival": 1767225600.25,
        }

    def test_the_record_document_is_not_changed(self):
        record = rec(b'{"a": 1}')
        archive_line(record)
        assert record.json == {"a": 1}

    @pytest.mark.parametrize("data", [b'"text"', b"[1, 2]", b"3.5", b"null", b"true"])
    def test_json_that_is_not_an_object_is_kept_under_data(self, data):
        line = orjson.loads(archive_line(rec(data)))
        assert line["_data"] == json.loads(data)
        assert line["_sequence"] == SEQ

    @pytest.mark.parametrize("data", [b"\xff\xfe binary", b"not json", b"", b'{"a": NaN}'])
    def test_data_that_is_not_json_is_kept_as_base64(self, data):
        line = orjson.loads(archive_line(rec(data)))
        assert set(line) == {"_data_base64", *BOOKKEEPING}
        assert base64.b64decode(line["_data_base64"]) == data

    def test_an_object_that_uses_a_bookkeeping_name_is_kept_whole_under_data(self):
        doc = {"_sequence": "mine", "x": 1}
        line = orjson.loads(archive_line(rec(orjson.dumps(doc))))
        assert line["_data"] == doc
        assert line["_sequence"] == SEQ

    def test_a_value_json_cannot_hold_raises_for_the_sink_to_report(self):
        record = rec()
        record.set_json({"big": 2**70})
        with pytest.raises(orjson.JSONEncodeError):
            archive_line(record)

    @given(
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers(-(2**63), 2**63 - 1)
            | st.floats(allow_nan=False, allow_infinity=False)
            | st.text(),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=5), inner, max_size=3)
            ),
            max_leaves=10,
        )
    )
    def test_any_json_document_comes_back_whole_and_gives_the_same_bytes_twice(self, doc):
        data = orjson.dumps(doc)
        line = orjson.loads(archive_line(rec(data)))
        bookkeeping = {name: line.pop(name) for name in BOOKKEEPING}
        assert bookkeeping["_sequence"] == SEQ
        plain = isinstance(doc, dict) and not any(name in doc for name in BOOKKEEPING)
        assert line == (doc if plain else {"_data": doc})
        assert archive_line(rec(data)) == archive_line(rec(data))


class TestObjectBody:
    def test_gzip_bodies_are_byte_identical_whenever_they_are_made(self, monkeypatch):
        lines = [archive_line(rec(b'{"i": %d}' % i)) for i in range(100)]
        first = object_body(lines)
        monkeypatch.setattr("time.time", lambda: 2_000_000_000.0)
        assert object_body(lines) == first
        assert first[4:8] == b"\0\0\0\0"  # the gzip header's mtime
        assert gzip.decompress(first) == b"\n".join(lines) + b"\n"

    def test_without_compression_the_body_is_the_lines(self):
        assert object_body([b"{}", b"[]"], "none") == b"{}\n[]\n"


class TestSettings:
    @pytest.mark.parametrize(
        ("options", "match"),
        [
            ({"compression": "zstd"}, "compression 'zstd'"),
            ({"sse": "aes"}, "sse 'aes'"),
            ({"kms_key_id": "alias/k"}, "kms_key_id needs sse 'aws:kms'"),
            ({"max_attempts": 0}, "max_attempts 0"),
        ],
    )
    def test_bad_settings_are_refused_with_the_sink_named(self, options, match):
        with pytest.raises(ValueError, match=match) as info:
            S3Sink("archive", bucket="b", **options)
        assert "'archive'" in str(info.value)

    def test_a_record_without_a_partition_field_is_permanent_before_any_call(self):
        # No client is needed: the record fails while it is being placed, and an empty
        # batch of objects makes no call (a client would be created on first use).
        sink = S3Sink("archive", bucket="b", partition="{country}")
        event = EventFactory().batch([("k", {"other": 1})])
        (outcome,) = sink.write_batch(records_from_event(event))
        assert outcome.error == "TemplateError"
        assert "'country'" in outcome.reason
        assert "'b'" in outcome.reason
        assert sink._client is None


def _error(code: str, status: int, message: str = "msg") -> dict[str, object]:
    return {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }


class TestClassify:
    @pytest.mark.parametrize(
        ("code", "status"),
        [
            ("SlowDown", 503),
            ("InternalError", 500),
            ("ServiceUnavailable", 503),
            ("RequestTimeout", 400),
            ("KMS.ThrottlingException", 400),
            ("", 502),
        ],
    )
    def test_throttling_and_server_errors_are_retryable(self, code, status):
        outcome = _classify(_error(code, status), "bkt", "k")
        assert outcome.status.value == "retryable"

    @pytest.mark.parametrize(
        ("code", "status", "fix"),
        [
            ("NoSuchBucket", 404, "does not exist"),
            ("AccessDenied", 403, "s3:PutObject on arn:aws:s3:::bkt/*"),
            ("InvalidRequest", 400, "sse and kms_key_id"),
            ("KMS.NotFoundException", 400, "sse and kms_key_id"),
            ("EntityTooLarge", 400, "EntityTooLarge"),
        ],
    )
    def test_client_errors_are_permanent_and_name_the_bucket_and_fix(self, code, status, fix):
        outcome = _classify(_error(code, status), "bkt", "k")
        assert outcome.status.value == "permanent"
        assert outcome.error == code
        assert "bkt" in outcome.reason
        assert fix in outcome.reason
