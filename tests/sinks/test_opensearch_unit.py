"""The OpenSearch sink's pure logic: settings, ids, collapsing, chunking, the client's life.

What it writes and how failures are classified is tested against servers in
``tests/integration/test_opensearch_sink.py``.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from sinks.base import OK, Status
from sinks.opensearch import MAX_ID_BYTES, POSITION, OpenSearchSink, _Doc, _id_value
from sinks.templates import TemplateError
from stream.event import records_from_event
from stream.records import pad_sequence
from stream.testing import EventFactory


def sink(**options: Any) -> OpenSearchSink:
    options.setdefault("index", "events")
    options.setdefault("auth", "none")
    return OpenSearchSink("search", endpoint="http://127.0.0.1:9", **options)


def records(docs: list[Any]) -> list[Any]:
    f = EventFactory()
    return records_from_event(f.batch(("key", d) for d in docs))


def test_importing_the_sink_module_imports_no_client_library():
    code = (
        "import sys, sinks.opensearch; "
        "print(*(m in sys.modules for m in ('opensearchpy', 'boto3', 'botocore', 'requests')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert out.stdout.split() == ["False", "False", "False", "False"]


class TestSettings:
    def test_an_unknown_auth_is_refused_with_the_choices(self):
        with pytest.raises(ValueError, match="'sigv4' or 'none'"):
            sink(auth="iam")

    def test_a_limit_below_one_is_refused(self):
        with pytest.raises(ValueError, match="at least 1"):
            sink(max_bytes=0)

    def test_a_malformed_index_template_is_refused(self):
        with pytest.raises(ValueError, match="unclosed"):
            sink(index="events-{arrival")

    def test_an_empty_id_setting_means_the_event_id(self):
        assert sink(id="").id_field is None

    def test_the_region_comes_from_the_lambda_environment(self, monkeypatch):
        monkeypatch.delenv("AWS_REGION", raising=False)
        monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-south-1")
        assert sink().region == "ap-south-1"
        monkeypatch.setenv("AWS_REGION", "eu-north-1")
        assert sink().region == "eu-north-1"
        assert sink(region="us-west-2").region == "us-west-2"

    def test_sigv4_without_credentials_says_how_to_fix_it(self, monkeypatch, tmp_path):
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
        monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        s = sink(auth="sigv4", region="us-east-1")
        with pytest.raises(ValueError, match=r"found no credentials.*auth: none"):
            _ = s.client


class TestIds:
    def test_a_top_level_field_is_the_id(self):
        assert _id_value({"order_id": "o1"}, "order_id") == "o1"

    def test_a_dotted_setting_reads_a_nested_field_unless_the_key_exists_as_written(self):
        assert _id_value({"order": {"id": 7}}, "order.id") == "7"
        assert _id_value({"order.id": "flat", "order": {"id": 7}}, "order.id") == "flat"

    @pytest.mark.parametrize("value", [None, "", True, {"a": 1}, [1]])
    def test_a_missing_empty_or_structured_value_is_refused_with_the_field_named(self, value):
        with pytest.raises(TemplateError, match="'order_id'"):
            _id_value({"order_id": value}, "order_id")

    def test_an_id_longer_than_opensearch_allows_is_permanent(self):
        (record,) = records([{"order_id": "x" * (MAX_ID_BYTES + 1)}])
        outcomes = [OK]
        assert sink(id="order_id")._collect([record], outcomes) == []
        assert outcomes[0].status is Status.PERMANENT
        assert f"{MAX_ID_BYTES} bytes" in outcomes[0].reason


class TestCollect:
    def test_without_an_id_field_each_record_is_a_create_of_its_own_bytes(self):
        batch = records([{"i": 1}, {"i": 2}])
        docs = sink()._collect(batch, [OK, OK])
        assert [(d.doc_id, d.source, d.members) for d in docs] == [
            (batch[0].event_id, batch[0].data, [0]),
            (batch[1].event_id, batch[1].data, [1]),
        ]
        assert docs[0].action == b'{"create":{"_index":"events","_id":"%b"}}' % (
            batch[0].event_id.encode()
        )

    def test_a_record_spread_over_lines_is_reencoded_on_one(self):
        f = EventFactory()
        (record,) = records_from_event(f.event([f.raw(b'{\n  "i": 1\n}\n')]))
        (doc,) = sink()._collect([record], [OK])
        assert doc.source == b'{"i":1}'

    def test_fan_out_twins_share_the_first_ones_document(self):
        (record,) = records([{"v": 1}])
        twins = [record.derive({"v": 2}), record.derive({"v": 3})]
        (doc,) = sink()._collect(twins, [OK, OK])
        assert doc.members == [0, 1]
        assert doc.source == b'{"v":2}'

    def test_with_an_id_field_the_newest_record_stands_for_its_document(self):
        batch = records([{"id": "a", "v": 1}, {"id": "b", "v": 2}, {"id": "a", "v": 3}])
        docs = sink(id="id")._collect(batch, [OK] * 3)
        assert [(d.doc_id, d.members) for d in docs] == [("a", [0, 2]), ("b", [1])]
        position = pad_sequence(batch[2].sequence_number)
        assert docs[0].position == position
        assert docs[0].source == b'{"id":"a","v":3,"%b":"%b"}' % (
            POSITION.encode(),
            position.encode(),
        )

    def test_the_same_id_in_two_indexes_is_two_documents(self):
        batch = records([{"id": "a", "c": "fr"}, {"id": "a", "c": "de"}])
        docs = sink(id="id", index="events-{c}")._collect(batch, [OK, OK])
        assert [d.index for d in docs] == ["events-fr", "events-de"]


class TestChunks:
    def doc(self, size: int) -> _Doc:
        d = _Doc("i", "x", b"s" * (size - 3), "p", 0)
        d.action = b"a"
        return d  # action + source + two newlines = size bytes

    def test_chunks_are_cut_before_max_bytes_is_passed(self):
        s = sink(max_bytes=100)
        chunks = list(s._chunks([self.doc(40) for _ in range(5)]))
        assert [len(c) for c in chunks] == [2, 2, 1]

    def test_a_document_larger_than_max_bytes_goes_alone(self):
        s = sink(max_bytes=100)
        chunks = list(s._chunks([self.doc(10), self.doc(500), self.doc(10)]))
        assert [len(c) for c in chunks] == [1, 1, 1]

    def test_chunks_hold_at_most_max_items(self):
        s = sink(max_items=3)
        assert [len(c) for c in s._chunks([self.doc(10) for _ in range(7)])] == [3, 3, 1]


class TestClient:
    class Closable:
        def __init__(self) -> None:
            self.closed = 0

        def close(self) -> None:
            self.closed += 1

    def test_the_client_is_made_once_and_reused(self):
        s = sink(timeout=3.5)
        client = s.client
        assert s.client is client
        assert type(client).__name__ == "OpenSearch"
        (connection,) = client.transport.connection_pool.connections
        assert type(connection).__name__ == "Urllib3HttpConnection"
        assert connection.timeout == 3.5
        assert client.transport.max_retries == 0
        s.close()
        assert s.client is not client  # closed, then made again on next use
        s.close()

    def test_close_leaves_a_client_passed_in_to_its_owner(self):
        client = self.Closable()
        s = sink(client=client)
        s.close()
        assert client.closed == 0
        assert s.client is client

    def test_a_non_opensearch_error_is_not_swallowed(self):
        s = sink()
        with pytest.raises(KeyError):
            s._classify(KeyError("bug"), "_bulk")
