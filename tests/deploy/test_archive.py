"""The archive reader and on-failure ranges (deploy.ops.archive, deploy.ops.ranges), without
servers: which functions qualify, what a line gives back, what a key says, what a range is."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from deploy.ops.archive import archive_problem, find_archive, parse_key, record_from_line
from deploy.ops.ranges import parse_range
from deploy.ops.replay import ReplayError, ReplayRequest, replay, target_sinks
from sinks.s3 import archive_line, object_key
from stream.records import Record

PLAN = {
    "name": "shop",
    "stream": {"name": "shop-events"},
    "sinks": {
        "raw": {"type": "s3", "bucket": "b", "prefix": "raw/", "partition": "{arrival:%Y}"},
        "now": {"type": "s3", "bucket": "b", "prefix": "{now:%Y}/"},
        "orders": {"type": "dynamodb", "table": "t", "key": "id"},
        "dlq": {"type": "sqs", "queue": "q"},
    },
    "functions": {
        "price": {"processors": [{"enrich": {}}], "route": ["orders", "raw"], "on_failure": "dlq"},
        "stamped": {"processors": [], "route": ["now"]},
        "keep": {"processors": [], "route": ["raw"]},
    },
}


class TestQualifies:
    def test_the_first_function_without_processors_routing_to_one_s3_sink_is_the_archive(
        self,
    ) -> None:
        archive = find_archive(PLAN)
        assert archive is not None
        assert (archive.function, archive.sink, archive.listing_prefix) == ("keep", "raw", "raw/")

    def test_processors_or_now_templates_disqualify_with_the_reason(self) -> None:
        assert "processors" in archive_problem(PLAN, "price")
        assert "{now:...}" in archive_problem(PLAN, "stamped")

    def test_a_plan_without_one_has_no_archive_and_replay_says_so(self) -> None:
        plan = {**PLAN, "functions": {"price": PLAN["functions"]["price"]}}
        assert find_archive(plan) is None
        with pytest.raises(ReplayError, match="has no archive"):
            replay(plan, ReplayRequest("price", 0, 1))

    @pytest.mark.parametrize("window", [{"size_s": 60}, {"gap_s": 60}])
    def test_a_function_with_a_window_step_is_refused_with_the_reason(self, window) -> None:
        """Its window has applied its shards past the records: each would be dropped as a
        redelivery, and the replay would report them replayed with nothing written."""
        step = {"window": {"key": "u", "field": "ts", "aggregate": {"n": "count"}, **window}}
        plan = {**PLAN, "functions": {**PLAN["functions"], "counts": {
            "processors": [{"filter": {}}, step], "route": ["orders"]}}}  # fmt: skip
        with pytest.raises(ReplayError, match=r"window step \(processors\[1\]\)"):
            replay(plan, ReplayRequest("counts", 0, 1, source="stream"))

    def test_replay_from_the_archive_leaves_out_the_archive_sink_unless_named(self) -> None:
        archive = find_archive(PLAN)
        assert target_sinks(PLAN, ReplayRequest("price", 0, 1), archive) == ["orders"]
        named = ReplayRequest("price", 0, 1, sinks=("raw",))
        assert target_sinks(PLAN, named, archive) == ["raw"]
        with pytest.raises(ReplayError, match="not written by 'price'"):
            target_sinks(PLAN, ReplayRequest("price", 0, 1, sinks=("dlq",)), archive)


class TestRecordFromLine:
    @given(
        doc=st.dictionaries(
            st.text(max_size=5), st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5), max_size=4
        ),
        key=st.text(min_size=1, max_size=8),
        seq=st.integers(min_value=0, max_value=10**40),
        sub=st.integers(min_value=0, max_value=5),
        arrival=st.floats(min_value=0, max_value=2e9),
    )
    def test_a_line_gives_back_the_record_at_its_position_with_equal_json(
        self, doc: dict[str, object], key: str, seq: int, sub: int, arrival: float
    ) -> None:
        rec = Record(orjson.dumps(doc), key, str(seq), sub, sub > 0, "shardId-1", arrival)
        line = orjson.loads(archive_line(rec))
        back = record_from_line(line)
        assert (back.partition_key, back.sequence_number, back.sub_sequence_number) == (
            key, str(seq), sub,
        )  # fmt: skip
        assert (back.shard_id, back.arrival, back.event_id) == (
            "shardId-1", arrival, f"shardId-1:{seq}",
        )  # fmt: skip
        assert orjson.loads(back.data) == doc

    def test_data_that_is_not_a_json_object_comes_back_whole(self) -> None:
        for data in (b"\xff\x00", b"[1, 2]", b'{"_shard": 1}'):
            line = orjson.loads(archive_line(Record(data, "k", "7", shard_id="s")))
            back = record_from_line(line)
            assert back.data == data or orjson.loads(back.data) == orjson.loads(data)


class TestKeys:
    def test_a_key_says_its_shard_and_first_and_last_positions(self) -> None:
        a = Record(b"", "k", "10", 2, True, shard_id="shardId-7")
        b = Record(b"", "k", "12", 0, True, shard_id="shardId-7")
        assert parse_key(object_key("raw/", "y=2026", [a, b])) == (
            "shardId-7", (10, 2), (12, 0),
        )  # fmt: skip
        assert parse_key("raw/dead-letters-notes.json") is None


class TestParseRange:
    def test_an_on_failure_message_gives_its_shard_and_sequence_range(self) -> None:
        body = orjson.dumps({
            "requestContext": {"functionArn": "arn:aws:lambda:r:1:function:shop-price",
                               "condition": "RecordAgeExceeded"},
            "KinesisBatchInfo": {"shardId": "s", "startSequenceNumber": "1",
                                 "endSequenceNumber": "9", "batchSize": 3,
                                 "streamArn": "arn:aws:kinesis:r:1:stream/shop-events"},
        }).decode()  # fmt: skip
        rng = parse_range(body)
        assert rng is not None
        assert (rng.shard_id, rng.start, rng.end, rng.size) == ("s", "1", "9", 3)
        assert rng.function_arn.endswith("shop-price")

    @pytest.mark.parametrize("body", ["", "[]", '{"KinesisBatchInfo": {"shardId": "s"}}'])
    def test_anything_else_is_not_a_range(self, body: str) -> None:
        assert parse_range(body) is None
