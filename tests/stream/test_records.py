"""Record: lazy JSON, positions, derived records."""

from __future__ import annotations

import pytest

from stream.exceptions import DecodeError
from stream.records import SEQUENCE_WIDTH, FinalRecord, Record, pad_sequence


def make(data: bytes = b'{"a": 1}', seq: str = "100", sub: int = 0, **kw) -> Record:
    return Record(data, "key", seq, sub_sequence_number=sub, shard_id="shardId-0", **kw)


class TestJson:
    def test_json_is_decoded_once_and_cached(self):
        record = make()
        assert record.decoded is False
        first = record.json
        assert record.decoded is True
        assert record.json is first

    def test_data_that_is_not_json_raises_decode_error_naming_the_record(self):
        record = make(b"\xffnot json", seq="42")
        with pytest.raises(DecodeError, match="42/0 of shardId-0 is not JSON"):
            _ = record.json

    def test_nan_and_too_deep_nesting_are_not_json(self):
        for data in (b'{"a": NaN}', b"[" * 2000 + b"]" * 2000):
            with pytest.raises(DecodeError):
                _ = make(data).json

    def test_object_rejects_json_that_is_not_an_object(self):
        with pytest.raises(DecodeError, match="JSON list, not an object"):
            make(b"[1, 2]").as_dict()

    def test_data_is_reencoded_after_the_document_changes_in_place(self):
        record = make()
        record.as_dict()["b"] = 2
        assert record.data == b'{"a": 1}'  # not yet marked
        record.touch()
        assert record.data == b'{"a":1,"b":2}'

    def test_untouched_record_keeps_its_original_bytes(self):
        record = make(b'{ "a" : 1 }')
        _ = record.json
        record.touch  # noqa: B018  # attribute access only: nothing changes
        assert record.data == b'{ "a" : 1 }'


class TestPosition:
    def test_position_compares_sequence_numbers_as_integers(self):
        assert make(seq="9").position < make(seq="10").position

    def test_padded_positions_sort_like_the_numbers(self):
        values = [("9", 0), ("10", 0), ("10", 2), ("100000000000000000000000000000000000000000", 1)]
        padded = [pad_sequence(s, sub) for s, sub in values]
        assert padded == sorted(padded)
        assert all(len(p) == SEQUENCE_WIDTH + 13 for p in padded)

    def test_document_id_of_an_aggregated_record_includes_the_sub_sequence_number(self):
        plain = make(event_id="shardId-0:100")
        agg = make(sub=3, aggregated=True, event_id="shardId-0:100")
        assert plain.document_id == "shardId-0:100"
        assert agg.document_id == "shardId-0:100:3"


class TestRecordId:
    def test_the_producer_record_id_is_read_from_the_named_field(self):
        assert make(b'{"rid": "p-3", "v": 1}').record_id("rid") == "p-3"
        assert make(b'{"rid": 7}').record_id("rid") == "7"

    def test_a_record_without_the_field_has_none(self):
        assert make(b'{"v": 1}').record_id("rid") is None

    def test_fan_out_parts_share_their_source_s_id(self):
        source = make(b'{"rid": "p-3"}')
        part = source.derive({"rid": "p-3", "split": 1})
        assert part.record_id("rid") == source.record_id("rid")

    @pytest.mark.parametrize("data", [b"[1]", b"not json", b'{"rid": ""}', b'{"rid": [1]}'])
    def test_no_object_or_an_unusable_id_raises_decode_error(self, data):
        with pytest.raises(DecodeError):
            make(data).record_id("rid")


class TestDerive:
    def test_derived_record_keeps_the_source_position_and_has_the_new_document(self):
        source = make(seq="77", sub=2, index=5)
        derived = source.derive({"x": 1})
        assert (derived.sequence_number, derived.sub_sequence_number, derived.index) == ("77", 2, 5)
        assert derived.json == {"x": 1}
        assert derived.data == b'{"x":1}'

    def test_records_are_equal_by_position_and_data(self):
        assert make() == make()
        assert make() != make(seq="101")


class TestPickleAndCopy:
    """Plugins may pickle or copy records (a process pool, a cache): every record comes
    back as a plain Record with the same position, data and document."""

    @staticmethod
    def lazy() -> Record:
        from stream.event import records_from_event  # noqa: PLC0415
        from stream.records import EventRecord  # noqa: PLC0415
        from stream.testing import EventFactory  # noqa: PLC0415

        factory = EventFactory(stream="orders")
        (record,) = records_from_event(factory.event([factory.record({"a": 1}, "ada")]))
        assert type(record) is EventRecord  # its position not read yet
        return record

    @staticmethod
    def same(copy: Record, original: Record) -> None:
        assert type(copy) is Record
        assert copy == original
        assert copy.json == original.json
        fields = ("partition_key", "sequence_number", "shard_id", "arrival", "event_id",
                  "event_source_arn", "index", "part", "routes", "error")  # fmt: skip
        assert [getattr(copy, f) for f in fields] == [getattr(original, f) for f in fields]

    def test_a_lazy_record_pickles_without_its_event_entry(self):
        import pickle  # noqa: PLC0415

        record = self.lazy()
        restored = pickle.loads(pickle.dumps(record))
        self.same(restored, record)
        assert getattr(restored, "_entry", None) is None

    def test_a_lazy_record_copies(self):
        import copy  # noqa: PLC0415

        for how in (copy.copy, copy.deepcopy):
            record = self.lazy()
            self.same(how(record), record)

    def test_an_undecoded_document_is_decoded_after_pickling(self):
        import pickle  # noqa: PLC0415

        record = make(b'{"a": 1}')
        restored = pickle.loads(pickle.dumps(record))
        assert restored.decoded is False
        assert restored.json == {"a": 1}

    def test_a_replaced_document_survives_pickling(self):
        import pickle  # noqa: PLC0415

        record = make()
        record.set_json({"b": 2})
        restored = pickle.loads(pickle.dumps(record))
        assert restored.json == {"b": 2}
        assert restored.data == b'{"b":2}'


class TestFinalRecord:
    """A window's result: the only record there will ever be with its ``window_id``."""

    def test_a_final_record_is_derived_and_names_its_field_and_id(self):
        source = make(b'{"user": "a"}')
        result = source.final({"window_id": "f/a/60", "n": 2}, "window_id")
        assert isinstance(result, FinalRecord)
        assert (result.final_field, result.final_id) == ("window_id", "f/a/60")
        assert result.position == source.position
        assert result.json == {"window_id": "f/a/60", "n": 2}

    def test_it_is_final_only_in_its_field_and_while_the_field_holds_its_id(self):
        result = make().final({"window_id": "f/a/60", "key": "a"}, "window_id")
        assert isinstance(result, FinalRecord)
        assert result.is_final_in("window_id")
        assert not result.is_final_in("key")  # keyed by the user: many results per item
        result.as_dict()["window_id"] = "f/b/60"  # a later step changed it in place
        assert not result.is_final_in("window_id")
        result.set_json(["not", "an", "object"])
        assert not result.is_final_in("window_id")

    def test_a_derived_record_of_a_final_one_is_a_plain_record(self):
        result = make().final({"window_id": "f/a/60"}, "window_id")
        assert type(result.derive({"window_id": "f/a/60"})) is Record
        assert type(make().final({"n": 1}, "window_id")) is Record  # no id: not final

    def test_it_pickles_and_copies_with_its_field_and_id(self):
        import copy  # noqa: PLC0415
        import pickle  # noqa: PLC0415

        result = make().final({"window_id": "f/a/60"}, "window_id")
        assert isinstance(result, FinalRecord)
        for restored in (pickle.loads(pickle.dumps(result)), copy.copy(result),
                         copy.deepcopy(result)):  # fmt: skip
            assert type(restored) is FinalRecord
            assert restored.is_final_in("window_id")
            assert restored == result
