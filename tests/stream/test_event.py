"""Lambda Kinesis event -> records, with KPL de-aggregation."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.event import KPL_MAGIC, records_from_event
from stream.records import EventRecord, Record
from stream.testing import EventFactory, encode_aggregate

_BAD_BODY = b"\x0a\xff\xff\xff"  # a length-delimited field longer than the message


class TestPlainRecords:
    def test_fields_come_from_the_exact_lambda_shape(self):
        f = EventFactory(stream="s", shard_id="shardId-000000000007", region="eu-west-1")
        entry = f.record({"a": 1}, "pk")
        (record,) = records_from_event(f.event([entry]))
        assert record.data == b'{"a":1}'
        assert record.partition_key == "pk"
        assert record.sequence_number == entry["kinesis"]["sequenceNumber"]
        assert record.shard_id == "shardId-000000000007"
        assert record.event_id == entry["eventID"]
        assert record.event_source_arn == "arn:aws:kinesis:eu-west-1:123456789012:stream/s"
        assert record.arrival == entry["kinesis"]["approximateArrivalTimestamp"]
        assert (record.sub_sequence_number, record.aggregated, record.index) == (0, False, 0)

    def test_records_keep_shard_order_and_get_their_batch_index(self):
        f = EventFactory()
        records = records_from_event(f.batch([("a", 1), ("b", 2), ("a", 3)]))
        assert [r.json for r in records] == [1, 2, 3]
        assert [r.index for r in records] == [0, 1, 2]

    def test_invalid_base64_becomes_a_record_with_the_reason(self):
        f = EventFactory()
        entry = f.record("x")
        entry["kinesis"]["data"] = "!!!"
        (record,) = records_from_event(f.event([entry]))
        assert record.error is not None
        assert "not valid base64" in record.error

    def test_an_event_without_records_is_rejected_with_what_was_expected(self):
        with pytest.raises(ValueError, match="'Records' list"):
            records_from_event({"foo": 1})


class TestAggregates:
    def test_user_records_keep_the_parent_sequence_number_and_get_sub_sequence_numbers(self):
        f = EventFactory()
        entry = f.aggregate([("k1", b"a"), ("k2", b"b"), ("k1", b"c")])
        records = records_from_event(f.event([f.record("before"), entry, f.record("after")]))
        parent = entry["kinesis"]["sequenceNumber"]
        agg = records[1:4]
        assert [r.data for r in agg] == [b"a", b"b", b"c"]
        assert [r.partition_key for r in agg] == ["k1", "k2", "k1"]
        assert [r.sub_sequence_number for r in agg] == [0, 1, 2]
        assert {r.sequence_number for r in agg} == {parent}
        assert all(r.aggregated for r in agg)
        assert [r.index for r in records] == [0, 1, 2, 3, 4]

    def test_a_bad_checksum_on_an_aggregated_stream_becomes_one_failed_record(self):
        f = EventFactory()
        blob = encode_aggregate([("k", b"x")])
        corrupt = blob[:-1] + bytes([blob[-1] ^ 1])
        (record,) = records_from_event(f.event([f.raw(corrupt, "k")]), aggregated=True)
        assert record.error is not None
        assert "checksum" in record.error
        assert record.data == corrupt

    def test_a_protobuf_error_on_an_aggregated_stream_becomes_one_failed_record(self):
        blob = KPL_MAGIC + _BAD_BODY + hashlib.md5(_BAD_BODY).digest()
        event = EventFactory().event([EventFactory().raw(blob)])
        (record,) = records_from_event(event, aggregated=True)
        assert record.error is not None
        assert "protobuf" in record.error

    def test_magic_bytes_alone_are_too_short_to_be_an_aggregate(self):
        event = EventFactory().event([EventFactory().raw(KPL_MAGIC + b"x")])
        (record,) = records_from_event(event, aggregated=True)
        assert record.error is not None
        assert "too short" in record.error

    @pytest.mark.parametrize(
        "data",
        [
            KPL_MAGIC + b"x",  # too short
            KPL_MAGIC + b"plain text that starts with the magic bytes" + b"0" * 16,  # MD5
            KPL_MAGIC + _BAD_BODY + hashlib.md5(_BAD_BODY).digest(),  # protobuf
        ],
        ids=["too-short", "checksum", "protobuf"],
    )
    def test_on_a_plain_stream_magic_bytes_that_fail_the_checks_are_plain_data(self, data):
        """As the KCL and aws_kinesis_agg: not an aggregate after all, so one plain record
        with its exact bytes and no error (the default: stream.aggregated is false)."""
        f = EventFactory()
        records = records_from_event(f.event([f.record("before"), f.raw(data, "k")]))
        assert [r.error for r in records] == [None, None]
        assert records[1].data == data
        assert (records[1].sub_sequence_number, records[1].aggregated) == (0, False)
        assert records[1].index == 1

    def test_a_valid_aggregate_is_expanded_on_a_plain_stream_too(self):
        f = EventFactory()
        records = records_from_event(f.event([f.aggregate([("a", b"1"), ("b", b"2")])]))
        assert [(r.partition_key, r.data, r.error) for r in records] == [
            ("a", b"1", None),
            ("b", b"2", None),
        ]

    def test_plain_pipelines_do_not_import_protobuf(self):
        import subprocess  # noqa: PLC0415
        import sys  # noqa: PLC0415

        code = (
            "import sys; from stream.testing import EventFactory as F; "
            "from stream.event import records_from_event as r; "
            "f = F(); r(f.batch([('k', {'a': 1})])); "
            "print('google.protobuf' in sys.modules, 'aws_kinesis_agg' in sys.modules)"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
        )
        assert out.stdout.split() == ["False", "False"]


payloads = st.lists(
    st.tuples(st.text(min_size=1, max_size=8), st.binary(max_size=40)), min_size=1, max_size=20
)


@given(groups=st.lists(st.tuples(st.booleans(), payloads), min_size=1, max_size=6))
def test_aggregation_then_event_then_records_is_lossless(groups):
    f = EventFactory()
    entries, expected = [], []
    for aggregate, items in groups:
        if aggregate:
            entries.append(f.aggregate(items))
            expected.extend(items)
        else:
            for key, data in items:
                if data[:4] == KPL_MAGIC:
                    continue
                entries.append(f.raw(data, key))
                expected.append((key, data))
    records = records_from_event(f.event(entries))
    assert [(r.partition_key, r.data) for r in records] == expected
    assert all(r.error is None for r in records)
    positions = [r.position for r in records]
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)


def test_event_factory_data_is_base64_of_the_payload():
    entry = EventFactory().record({"a": 1})
    assert base64.b64decode(entry["kinesis"]["data"]) == b'{"a":1}'


def _eager(entry: dict) -> tuple:
    """The position fields of an entry as the parser filled them before records were lazy."""
    kinesis = entry["kinesis"]
    event_id = entry.get("eventID") or ""
    return (
        kinesis.get("partitionKey", ""),
        kinesis["sequenceNumber"],
        0,
        False,
        event_id.rpartition(":")[0],
        kinesis.get("approximateArrivalTimestamp") or 0.0,
        event_id,
        entry.get("eventSourceARN", ""),
    )


def _position(record) -> tuple:
    return (
        record.partition_key,
        record.sequence_number,
        record.sub_sequence_number,
        record.aggregated,
        record.shard_id,
        record.arrival,
        record.event_id,
        record.event_source_arn,
    )


class TestLazyPosition:
    """A record's position stays in the event entry until something reads it (EventRecord)."""

    def test_a_record_is_settled_into_a_plain_record_by_its_first_position_read(self):
        f = EventFactory(shard_id="shardId-000000000003")
        (record,) = records_from_event(f.event([f.record({"a": 1}, "pk")]))
        assert type(record) is EventRecord
        assert record.json == {"a": 1}  # the document needs no position
        assert type(record) is EventRecord
        assert record.partition_key == "pk"
        assert type(record) is Record
        assert record.shard_id == "shardId-000000000003"

    @pytest.mark.parametrize(
        "field",
        [
            "partition_key",
            "sequence_number",
            "sub_sequence_number",
            "aggregated",
            "shard_id",
            "arrival",
            "event_id",
            "event_source_arn",
        ],
    )
    def test_writing_a_position_field_settles_the_rest_first(self, field):
        f = EventFactory(stream="s", shard_id="shardId-000000000001")
        entry = f.record({"a": 1}, "pk")
        (record,) = records_from_event(f.event([entry]))
        setattr(record, field, "changed")
        assert type(record) is Record
        expected = dict(zip(POSITION_FIELDS, _eager(entry), strict=True))
        expected[field] = "changed"
        assert dict(zip(POSITION_FIELDS, _position(record), strict=True)) == expected

    def test_a_lazy_record_equals_the_record_built_from_the_same_fields(self):
        f = EventFactory()
        entry = f.record({"a": 1}, "pk")
        (lazy,) = records_from_event(f.event([entry]))
        eager = Record(b'{"a":1}', *_eager(entry))
        assert lazy == eager
        assert (lazy.position, lazy.document_id) == (eager.position, eager.document_id)

    @given(
        st.lists(
            st.tuples(
                st.text(min_size=1, max_size=8),
                st.binary(max_size=20),
                st.sampled_from(["shardId-000000000000", "shardId-000000000009"]),
                st.booleans(),
            ),
            max_size=12,
        )
    )
    def test_every_field_matches_the_eager_parse_of_any_batch(self, rows):
        """Keys, data, shards (a batch may mix event ids of two shards) and entries that
        lack the optional members: each lazy record reads what the eager parse filled."""
        entries = []
        for i, (key, data, shard, full) in enumerate(rows):
            f = EventFactory(shard_id=shard)
            entry = f.raw(b"\x00" + data, key)  # never the KPL magic bytes
            if not full:
                del entry["eventSourceARN"]
                del entry["kinesis"]["approximateArrivalTimestamp"]
            entry["kinesis"]["sequenceNumber"] = str(10**20 + i)
            entry["eventID"] = f"{shard}:{10**20 + i}"
            entries.append(entry)
        records = records_from_event({"Records": entries})
        assert [r.index for r in records] == list(range(len(entries)))
        assert [r.data for r in records] == [b"\x00" + data for _, data, _, _ in rows]
        assert [_position(r) for r in records] == [_eager(e) for e in entries]
        assert all(type(r) is Record for r in records)  # every one settled by the read


POSITION_FIELDS = (
    "partition_key",
    "sequence_number",
    "sub_sequence_number",
    "aggregated",
    "shard_id",
    "arrival",
    "event_id",
    "event_source_arn",
)


def test_records_read_from_several_threads_at_once_settle_consistently():
    """Sinks run in threads: a field read while another thread settles the same record
    sees every field set (the slots are filled before the class changes)."""
    import sys  # noqa: PLC0415
    import threading  # noqa: PLC0415

    f = EventFactory()
    event = f.batch([(f"k{i}", {"i": i}) for i in range(3000)])
    expected = [e["kinesis"]["partitionKey"] for e in event["Records"]]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(3):
            records = records_from_event(event)
            seen: list[list[str]] = []
            errors: list[BaseException] = []

            def read(records=records, seen=seen, errors=errors):
                try:
                    seen.append([(r.shard_id, r.partition_key)[1] for r in records])
                except BaseException as exc:  # reported below
                    errors.append(exc)

            threads = [threading.Thread(target=read) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert errors == []
            assert seen == [expected] * 4
    finally:
        sys.setswitchinterval(interval)
