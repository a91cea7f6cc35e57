"""The OpenSearch sink against a real osmem-server: bulk, replay, order, templates,
classification, chunking; and, where osmem cannot be made to fail (429, 5xx, 413, a whole
request refused), against a scripted HTTP endpoint on loopback that opensearch-py talks to
like to any other."""

from __future__ import annotations

import hashlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from sinks.base import Status
from sinks.opensearch import POSITION, OpenSearchSink
from stream.event import records_from_event
from stream.overlap import WAVE_WIDTH, overlapping
from stream.records import pad_sequence
from stream.testing import EventFactory

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from stream.records import Record

pytestmark = pytest.mark.integration

NO_SLEEP: Callable[[float], None] = lambda _: None  # noqa: E731


def batch(docs: list[dict[str, Any]], factory: EventFactory | None = None) -> list[Record]:
    f = factory or EventFactory()
    return records_from_event(f.batch((str(d.get("k", "key")), d) for d in docs))


def hits(client: Any, index: str) -> dict[str, dict[str, Any]]:
    """Every document of the indices matching ``index``, by ``_id`` (after a refresh), with
    ``_seq_no`` and ``_version``: equal hits mean the documents were not even rewritten."""
    client.indices.refresh(index=index)
    body = {"size": 10_000, "seq_no_primary_term": True, "version": True}
    found = client.search(index=index, body=body)
    return {h["_id"]: h for h in found["hits"]["hits"]}


def count(client: Any, index: str) -> int:
    client.indices.refresh(index=index)
    return int(client.count(index=index)["count"])


def sink(endpoint: str, index: str, **options: Any) -> OpenSearchSink:
    options.setdefault("sleep", NO_SLEEP)
    return OpenSearchSink("search", endpoint=endpoint, index=index, auth="none", **options)


class Counting:
    """The real client, counting the ``_bulk`` calls and their sizes."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.bodies: list[bytes] = []

    def bulk(self, body: bytes) -> Any:
        self.bodies.append(body)
        return self.client.bulk(body=body)

    def mget(self, body: bytes) -> Any:
        return self.client.mget(body=body)


class Racing(Counting):
    """The real client; just before the sink's first ``_bulk``, another writer acts."""

    def __init__(self, client: Any, other_writer: Callable[[], None]) -> None:
        super().__init__(client)
        self.other_writer: Callable[[], None] | None = other_writer

    def bulk(self, body: bytes) -> Any:
        if self.other_writer is not None:
            write, self.other_writer = self.other_writer, None
            write()
        return super().bulk(body)


class TestEventIdDocuments:
    def test_a_bulk_write_makes_one_document_per_record_with_its_json_as_source(
        self, opensearch, opensearch_endpoint, unique
    ):
        s = sink(opensearch_endpoint, f"events-{unique}-{{arrival:%Y.%m.%d}}")
        docs = [
            {"k": f"k{i % 7}", "i": i, "tags": ["a", f"t{i}"], "m": {"x": i / 2}}
            for i in range(300)
        ]
        records = batch(docs)
        assert all(o.ok for o in s.write_batch(records))
        found = hits(opensearch, f"events-{unique}-*")
        assert len(found) == 300
        assert {i: h["_source"] for i, h in found.items()} == {
            r.event_id: d for r, d in zip(records, docs, strict=True)
        }
        assert {h["_index"] for h in found.values()} == {f"events-{unique}-2026.01.01"}

    def test_replaying_the_same_batch_changes_nothing(
        self, opensearch, opensearch_endpoint, unique
    ):
        s = sink(opensearch_endpoint, f"events-{unique}")
        records = batch([{"i": i} for i in range(50)])
        assert all(o.ok for o in s.write_batch(records))
        before = hits(opensearch, f"events-{unique}")
        assert all(o.ok for o in s.write_batch(records))
        after = hits(opensearch, f"events-{unique}")
        assert after == before
        assert {h["_source"]["i"] for h in after.values()} == set(range(50))

    def test_a_replay_starting_at_a_later_record_adds_only_the_new_ones(
        self, opensearch, opensearch_endpoint, unique
    ):
        s = sink(opensearch_endpoint, f"events-{unique}")
        f = EventFactory()
        first = batch([{"i": i} for i in range(200)], f)
        later = batch([{"i": i} for i in range(200, 260)], f)
        assert all(o.ok for o in s.write_batch(first))
        assert all(o.ok for o in s.write_batch(first[120:] + later))  # Lambda resumes at 120
        found = hits(opensearch, f"events-{unique}")
        assert sorted(h["_source"]["i"] for h in found.values()) == list(range(260))

    def test_the_user_records_of_an_aggregate_get_distinct_ids(
        self, opensearch, opensearch_endpoint, unique
    ):
        f = EventFactory()
        event = f.event([f.aggregate([("a", {"n": 1}), ("b", {"n": 2}), ("a", {"n": 3})])])
        records = records_from_event(event)
        s = sink(opensearch_endpoint, f"events-{unique}")
        assert all(o.ok for o in s.write_batch(records))
        found = hits(opensearch, f"events-{unique}")
        event_id = records[0].event_id
        assert {i: h["_source"]["n"] for i, h in found.items()} == {
            f"{event_id}:0": 1,
            f"{event_id}:1": 2,
            f"{event_id}:2": 3,
        }


class TestConfiguredId:
    def test_a_batch_with_five_versions_of_a_document_leaves_the_fifth(
        self, opensearch, opensearch_endpoint, unique
    ):
        s = sink(opensearch_endpoint, f"orders-{unique}", id="order_id")
        docs = [{"k": f"k{v}", "order_id": oid, "v": v} for v in range(1, 6) for oid in "ab"]
        records = batch(docs)
        outcomes = s.write_batch(records)
        assert all(o.ok for o in outcomes)
        found = hits(opensearch, f"orders-{unique}")
        assert {i: h["_source"]["v"] for i, h in found.items()} == {"a": 5, "b": 5}
        newest = records[-1]
        assert found["b"]["_source"][POSITION] == pad_sequence(newest.sequence_number)

    def test_an_older_record_after_a_newer_one_changes_nothing(
        self, opensearch, opensearch_endpoint, unique
    ):
        s = sink(opensearch_endpoint, f"orders-{unique}", id="order_id")
        old, new = batch([{"order_id": "o1", "v": "old"}, {"order_id": "o1", "v": "new"}])
        assert s.write_batch([new])[0].ok
        before = hits(opensearch, f"orders-{unique}")
        assert s.write_batch([old])[0].ok
        after = hits(opensearch, f"orders-{unique}")
        assert after == before
        assert after["o1"]["_source"]["v"] == "new"

    def test_replaying_older_batches_after_newer_ones_never_moves_a_document_back(
        self, opensearch, opensearch_endpoint, unique
    ):
        s = sink(opensearch_endpoint, f"orders-{unique}", id="order.id")
        f = EventFactory()
        first = batch([{"order": {"id": f"o{i % 4}"}, "v": i} for i in range(12)], f)
        second = batch([{"order": {"id": f"o{i % 4}"}, "v": i} for i in range(12, 20)], f)
        assert all(o.ok for o in s.write_batch(second))
        assert all(o.ok for o in s.write_batch(first))
        assert all(o.ok for o in s.write_batch(first[5:] + second[:3]))  # a bisected replay
        found = hits(opensearch, f"orders-{unique}")
        assert {i: h["_source"]["v"] for i, h in found.items()} == {
            "o0": 16,
            "o1": 17,
            "o2": 18,
            "o3": 19,
        }

    def test_a_concurrent_newer_write_between_read_and_write_wins(
        self, opensearch, opensearch_endpoint, unique
    ):
        index = f"orders-{unique}"
        f = EventFactory()
        ours, theirs = batch([{"order_id": "o1", "v": "ours"}, {"order_id": "o1", "v": "new"}], f)
        other = sink(opensearch_endpoint, index, id="order_id")
        client = Racing(opensearch, lambda: other.write_batch([theirs]))
        s = sink(opensearch_endpoint, index, id="order_id", client=client)
        assert s.write_batch([ours])[0].ok
        assert len(client.bodies) == 1  # the conflict was read again, and ours is older
        assert hits(opensearch, index)["o1"]["_source"]["v"] == "new"

    def test_a_concurrent_older_write_between_read_and_write_is_overwritten(
        self, opensearch, opensearch_endpoint, unique
    ):
        index = f"orders-{unique}"
        f = EventFactory()
        older, ours = batch([{"order_id": "o1", "v": "old"}, {"order_id": "o1", "v": "ours"}], f)
        other = sink(opensearch_endpoint, index, id="order_id")
        client = Racing(opensearch, lambda: other.write_batch([older]))
        s = sink(opensearch_endpoint, index, id="order_id", client=client)
        assert s.write_batch([ours])[0].ok
        assert len(client.bodies) == 2  # create met the other's document (409), then index
        assert hits(opensearch, index)["o1"]["_source"]["v"] == "ours"


class TestIndexTemplates:
    def test_the_arrival_date_picks_the_index(self, opensearch, opensearch_endpoint, unique):
        f = EventFactory(arrival=1_767_225_600.0 - 0.02)  # two records before midnight UTC
        records = batch([{"i": i} for i in range(4)], f)
        s = sink(opensearch_endpoint, f"events-{unique}-{{arrival:%Y.%m.%d}}")
        assert all(o.ok for o in s.write_batch(records))
        found = hits(opensearch, f"events-{unique}-*")
        assert {h["_source"]["i"]: h["_index"] for h in found.values()} == {
            0: f"events-{unique}-2025.12.31",
            1: f"events-{unique}-2025.12.31",
            2: f"events-{unique}-2026.01.01",
            3: f"events-{unique}-2026.01.01",
        }

    def test_a_field_picks_the_index_and_a_record_without_it_is_permanent(
        self, opensearch, opensearch_endpoint, unique
    ):
        f = EventFactory()
        records = batch([{"country": "fr"}, {"user": 1}, {"country": "de"}], f)
        records += records_from_event(f.event([f.raw(b"not json")]))
        s = sink(opensearch_endpoint, f"events-{unique}-{{country}}")
        fr, missing, de, not_json = s.write_batch(records)
        assert fr.ok
        assert de.ok
        assert missing.status is Status.PERMANENT
        assert "'country'" in missing.reason
        assert not_json.status is Status.PERMANENT
        assert "not JSON" in not_json.reason
        found = hits(opensearch, f"events-{unique}-*")
        assert sorted(h["_index"] for h in found.values()) == [
            f"events-{unique}-de",
            f"events-{unique}-fr",
        ]


class TestClassification:
    def test_a_mapping_conflict_is_permanent_with_the_opensearch_error(
        self, opensearch, opensearch_endpoint, unique
    ):
        index = f"typed-{unique}"
        opensearch.indices.create(
            index=index, body={"mappings": {"properties": {"n": {"type": "integer"}}}}
        )
        s = sink(opensearch_endpoint, index)
        before, bad, after = s.write_batch(batch([{"n": 1}, {"n": "abc"}, {"n": 3}]))
        assert before.ok
        assert after.ok
        assert bad.status is Status.PERMANENT
        assert bad.error == "mapper_parsing_exception"
        assert "mapper_parsing_exception" in bad.reason
        assert "[n]" in bad.reason
        assert index in bad.reason
        assert sorted(h["_source"]["n"] for h in hits(opensearch, index).values()) == [1, 3]

    def test_a_refused_newest_version_fails_alone_and_the_next_newer_most_is_written(
        self, opensearch, opensearch_endpoint, unique
    ):
        index = f"typed-{unique}"
        opensearch.indices.create(
            index=index, body={"mappings": {"properties": {"n": {"type": "integer"}}}}
        )
        s = sink(opensearch_endpoint, index, id="order_id")
        docs = [{"order_id": "a", "n": n} for n in range(1, 20)]
        docs += [{"order_id": "b", "n": "x"}, {"order_id": "a", "n": "abc"}]
        docs += [{"order_id": "a", "n": "def"}]
        outcomes = s.write_batch(batch(docs))
        assert [o.status for o in outcomes] == [Status.OK] * 19 + [Status.PERMANENT] * 3
        assert {o.error for o in outcomes[19:]} == {"mapper_parsing_exception"}
        assert {i: h["_source"]["n"] for i, h in hits(opensearch, index).items()} == {"a": 19}

    def test_an_invalid_index_name_is_permanent(self, opensearch_endpoint, unique):
        s = sink(opensearch_endpoint, f"Events-{unique}")
        (outcome,) = s.write_batch(batch([{"i": 1}]))
        assert outcome.status is Status.PERMANENT
        assert outcome.error == "invalid_index_name_exception"

    @pytest.mark.parametrize("id_field", ["order_id", None])
    def test_a_document_orjson_cannot_write_is_permanent_and_its_neighbours_are_written(
        self, opensearch, opensearch_endpoint, unique, id_field
    ):
        # orjson reads 1024 levels but writes 255: a step that changes such a record (or
        # id mode, which always re-encodes) must not make write_batch raise.
        deep = b'{"order_id": "o2", "deep": ' + b"[" * 300 + b"]" * 300 + b"}"
        f = EventFactory()
        event = f.event([f.record({"order_id": "o1"}), f.raw(deep), f.record({"order_id": "o3"})])
        records = records_from_event(event)
        records[1].json["stamped"] = True  # as an enrich step does
        records[1].touch()
        index = f"deep-{unique}"
        outcomes = sink(opensearch_endpoint, index, id=id_field).write_batch(records)
        assert [o.status for o in outcomes] == [Status.OK, Status.PERMANENT, Status.OK]
        assert outcomes[1].error == "JSONEncodeError"
        assert count(opensearch, index) == 2

    def test_an_unreachable_endpoint_is_retryable_for_every_record_in_bounded_time(self):
        with socket.socket() as probe:  # a port that was free a moment ago: nothing listens
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        sleeps: list[float] = []
        for id_field in (None, "order_id"):
            s = sink(
                f"http://127.0.0.1:{port}",
                "events",
                id=id_field,
                max_items=10,
                max_attempts=3,
                timeout=2,
                sleep=sleeps.append,
            )
            outcomes = s.write_batch(batch([{"order_id": f"o{i}"} for i in range(40)]))
            assert {o.status for o in outcomes} == {Status.RETRYABLE}
            assert "unreachable" in outcomes[0].reason
            s.close()
        assert len(sleeps) == 4  # two pauses per write, between three rounds


class TestChunking:
    def test_a_small_max_bytes_gives_several_bulk_calls_and_every_document(
        self, opensearch, opensearch_endpoint, unique
    ):
        client = Counting(opensearch)
        s = sink(opensearch_endpoint, f"events-{unique}", client=client, max_bytes=4096)
        records = batch([{"i": i, "pad": "x" * 150} for i in range(100)])
        assert all(o.ok for o in s.write_batch(records))
        assert len(client.bodies) > 5
        assert all(len(body) <= 4096 for body in client.bodies)
        assert count(opensearch, f"events-{unique}") == 100

    def test_max_items_caps_the_documents_per_call(self, opensearch, opensearch_endpoint, unique):
        client = Counting(opensearch)
        s = sink(opensearch_endpoint, f"events-{unique}", client=client, max_items=7)
        assert all(o.ok for o in s.write_batch(batch([{"i": i} for i in range(50)])))
        assert [body.count(b"\n") // 2 for body in client.bodies] == [7] * 7 + [1]
        assert count(opensearch, f"events-{unique}") == 50


# -- a scripted endpoint for the failures osmem does not produce --------------------------


class Scripted:
    """A loopback HTTP endpoint answering ``_bulk`` per document by ``answer``.

    ``answer(request_number, documents)`` gets the parsed (action, source) pairs and returns
    either an HTTP status for the whole request or one item status per document.
    """

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.answer: Callable[[int, list[tuple[Any, Any]]], int | list[int]] = lambda n, d: (
            [201] * len(d)
        )
        script = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                script.requests.append((dict(self.headers), body))
                lines = [orjson.loads(line) for line in body.splitlines()]
                pairs = list(zip(lines[::2], lines[1::2], strict=True))
                answer = script.answer(len(script.requests), pairs)
                if isinstance(answer, int):
                    error = {"type": f"status_{answer}_exception", "reason": "scripted"}
                    self.reply(answer, {"error": error, "status": answer})
                    return
                items = []
                for (action, _), status in zip(pairs, answer, strict=True):
                    ((op, meta),) = action.items()
                    item = {"_index": meta["_index"], "_id": meta["_id"], "status": status}
                    if status >= 300:
                        item["error"] = {"type": f"status_{status}_exception", "reason": "no"}
                    items.append({op: item})
                self.reply(
                    200, {"took": 1, "errors": any(s >= 300 for s in answer), "items": items}
                )

            def reply(self, status: int, doc: Any) -> None:
                data = orjson.dumps(doc)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
        self.server.request_queue_size = 128  # a wave's connections come at once
        self.server.server_bind()
        self.server.server_activate()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def documents(self, n: int) -> list[int]:
        """The ``i`` field of each document of request ``n`` (1-based)."""
        lines = self.requests[n - 1][1].splitlines()
        return [orjson.loads(line)["i"] for line in lines[1::2]]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    endpoint = Scripted()
    yield endpoint
    endpoint.close()


class TestFailuresOsmemCannotProduce:
    def test_throttled_items_are_retried_alone_after_a_pause(self, scripted):
        scripted.answer = lambda n, docs: [
            429 if n == 1 and src["i"] % 3 == 0 else 201 for _, src in docs
        ]
        sleeps: list[float] = []
        s = sink(scripted.url, "events", sleep=sleeps.append)
        outcomes = s.write_batch(batch([{"i": i} for i in range(9)]))
        assert all(o.ok for o in outcomes)
        assert scripted.documents(2) == [0, 3, 6]
        assert len(sleeps) == 1
        assert 0 <= sleeps[0] <= 0.1

    def test_items_failing_with_5xx_every_time_end_retryable_with_the_reason(self, scripted):
        scripted.answer = lambda n, docs: [503 if src["i"] == 1 else 201 for _, src in docs]
        s = sink(scripted.url, "events", max_attempts=4)
        ok, failing, ok2 = s.write_batch(batch([{"i": 0}, {"i": 1}, {"i": 2}]))
        assert ok.ok
        assert ok2.ok
        assert failing.status is Status.RETRYABLE
        assert failing.error == "status_503_exception"
        assert "503" in failing.reason
        assert len(scripted.requests) == 4

    @pytest.mark.parametrize(
        ("at_once", "calls"), [(False, 1), (True, WAVE_WIDTH)], ids=["in-turn", "overlapped"]
    )
    def test_a_whole_request_throttled_stops_the_round_and_ends_retryable(
        self, scripted, at_once, calls
    ):
        scripted.answer = lambda n, docs: 429
        s = sink(scripted.url, "events", max_items=2, max_attempts=3)
        docs = [{"i": i} for i in range(2 * (WAVE_WIDTH + 1))]  # a wave and one more call
        with overlapping(at_once):
            outcomes = s.write_batch(batch(docs))
        assert {o.status for o in outcomes} == {Status.RETRYABLE}
        assert "429" in outcomes[0].reason
        assert "429" in outcomes[-1].reason
        # per round, the calls of the first wave (one, in turn; a wave's, at once): the
        # later chunks waited
        assert len(scripted.requests) == 3 * calls

    def test_a_request_too_large_is_split_until_the_big_document_stands_alone(self, scripted):
        scripted.answer = lambda n, docs: (
            413 if any(len(s["pad"]) > 100 for _, s in docs) else [201] * len(docs)
        )
        s = sink(scripted.url, "events")
        docs = [{"i": i, "pad": "x" * (1000 if i == 5 else 10)} for i in range(8)]
        outcomes = s.write_batch(batch(docs))
        assert [o.status for o in outcomes] == [Status.OK] * 5 + [Status.PERMANENT] + [
            Status.OK
        ] * 2
        assert "413" in outcomes[5].reason
        assert "http.max_content_length" in outcomes[5].reason

    def test_a_request_refused_with_400_is_bisected_to_the_offending_document(self, scripted):
        scripted.answer = lambda n, docs: (
            400 if any(s["i"] == 11 for _, s in docs) else [201] * len(docs)
        )
        s = sink(scripted.url, "events")
        outcomes = s.write_batch(batch([{"i": i} for i in range(16)]))
        assert [i for i, o in enumerate(outcomes) if not o.ok] == [11]
        assert outcomes[11].status is Status.PERMANENT
        assert outcomes[11].error == "status_400_exception"
        assert len(scripted.requests) <= 2 * 4 + 1  # log2(16) levels, two calls per level

    def test_forbidden_is_about_the_endpoint_so_retryable(self, scripted):
        scripted.answer = lambda n, docs: 403
        s = sink(scripted.url, "events", max_attempts=2)
        (outcome,) = s.write_batch(batch([{"i": 1}]))
        assert outcome.status is Status.RETRYABLE
        assert "403" in outcome.reason

    def test_sigv4_signs_each_request_for_es_in_the_region(self, scripted, monkeypatch):
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDSHARDLINE")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        monkeypatch.setenv("AWS_REGION", "eu-west-3")
        s = OpenSearchSink("search", endpoint=scripted.url, index="events")  # auth: sigv4
        assert s.write_batch(batch([{"i": 1}]))[0].ok
        s.close()
        headers, body = scripted.requests[0]
        headers = {k.lower(): v for k, v in headers.items()}
        assert headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDSHARDLINE/")
        assert "/eu-west-3/es/aws4_request" in headers["authorization"]
        assert headers["x-amz-content-sha256"] == hashlib.sha256(body).hexdigest()
