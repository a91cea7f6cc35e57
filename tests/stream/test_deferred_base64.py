"""The handler leaves base64 to a chain whose first step reads every document
(``records_from_event(decode=False)``, :attr:`processors.chain.Chain.decodes_data`), so a
batch never holds all its records' bytes at once: memory, issue 17. The outcome must be the
one of decoding everything first: these tests compare the two on the same events."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.chain import Chain, Step
from processors.enrich import Enrich
from processors.filter import Filter
from processors.route import Route
from sinks.base import Ordering
from sinks.memory import MemorySink
from stream.batch import BatchResult, BatchRunner
from stream.event import Undeferred, records_from_event
from stream.records import Record
from stream.testing import EventFactory

KEYS = ("a", "b", "c")


def chain(*, fuse: bool = True, enrich: bool = True) -> Chain:
    """With an enricher the fused run never keeps the bytes it decodes (the document
    changes anyway); without one it keeps them for the records it lets through."""
    steps = [
        Step.of("processors[0].filter", Filter(expr="v > `0`")),
        Step.of("processors[1].enrich", Enrich(set={"seen": True})),
        Step.of("processors[2].route", Route([{"when": {"k": ["a"]}, "to": ["A"]},
                                              {"default": ["B"]}])),
    ]  # fmt: skip
    return Chain(steps if enrich else [steps[0], steps[2]], fuse=fuse)


def runner(*, enrich: bool = True) -> tuple[BatchRunner, dict[str, MemorySink]]:
    sinks = {name: MemorySink(name) for name in ("A", "B", "DLQ")}
    made = BatchRunner(
        chain(enrich=enrich),
        sinks,
        on_failure="DLQ",
        ordering=Ordering.PER_KEY,
        function="f",
        now=lambda: 1_767_225_600.0,  # dead letters carry the time: the same for both
    )
    return made, sinks


def outcome(result: BatchResult, sinks: dict[str, MemorySink]) -> tuple[Any, ...]:
    letters = [
        (d.record.index, d.record.data, d.record.error, d.step, d.error, d.reason)
        for d in result.dead_letters
    ]
    stored = {name: sorted(map(repr, sink.latest.items())) for name, sink in sinks.items()}
    return (
        result.response,
        result.records_in,
        result.dropped,
        result.written,
        result.failed,
        result.infrastructure,
        letters,
        stored,
    )


# One entry of the event: a JSON document, bytes that are not JSON, text that is not base64,
# or a KPL aggregate of documents.
entries = st.one_of(
    st.tuples(st.just("doc"), st.sampled_from(KEYS), st.integers(-2, 3)),
    st.tuples(st.just("raw"), st.sampled_from(KEYS), st.binary(max_size=12)),
    st.tuples(st.just("bad"), st.sampled_from(KEYS), st.sampled_from(["!!!", "YQ", "=YQ==", ""])),
    st.tuples(
        st.just("agg"),
        st.sampled_from(KEYS),
        st.lists(st.integers(-1, 2), min_size=1, max_size=3),
    ),
)


def make_event(rows: list[tuple[str, str, Any]]) -> dict[str, Any]:
    factory = EventFactory(stream="s")
    made = []
    for kind, key, value in rows:
        if kind == "doc":
            made.append(factory.record({"k": key, "v": value}, key))
        elif kind == "raw":
            made.append(factory.raw(value, key))
        elif kind == "bad":
            entry = factory.record({"k": key}, key)
            entry["kinesis"]["data"] = value
            made.append(entry)
        else:
            pairs = [(key, orjson.dumps({"k": key, "v": v})) for v in value]
            made.append(factory.aggregate(pairs))
    return factory.event(made)


class TestSameOutcome:
    @settings(deadline=None, max_examples=150)
    @given(st.lists(entries, max_size=12), st.booleans())
    def test_handle_equals_decoding_everything_first(self, rows, enrich):
        event = make_event(rows)
        deferred, deferred_sinks = runner(enrich=enrich)
        assert deferred.chain.decodes_data  # the path under test
        eager, eager_sinks = runner(enrich=enrich)
        got = outcome(deferred.handle(event), deferred_sinks)
        want = outcome(eager.run(records_from_event(event)), eager_sinks)
        assert got == want

    def test_bad_base64_is_dead_lettered_at_the_event_step_with_its_text(self):
        event = make_event([("doc", "a", 1), ("bad", "a", "!!!"), ("doc", "b", 2)])
        made, _ = runner()
        result = made.handle(event)
        (letter,) = result.dead_letters
        assert (letter.step, letter.error, letter.record.data) == ("event", "DecodeError", b"!!!")
        assert "not valid base64" in letter.reason
        assert result.written == {"A": 1, "B": 1}


class TestRecordsFromEventDeferred:
    def test_records_leave_their_bytes_in_the_entry_until_read(self):
        factory = EventFactory()
        event = factory.batch([("a", {"n": 1}), ("b", {"n": 2})])
        records = records_from_event(event, decode=False)
        assert [r._data for r in records] == [None, None]
        assert [r.data for r in records] == [b'{"n":1}', b'{"n":2}']
        assert [r.json for r in records] == [{"n": 1}, {"n": 2}]

    def test_an_aggregate_makes_the_first_reader_ask_for_the_event_parsed_again(self):
        factory = EventFactory()
        users = [("a", b'{"k":"a","v":2}'), ("b", b'{"k":"b","v":3}')]
        event = factory.event([factory.record({"k": "a", "v": 1}, "a"), factory.aggregate(users)])
        with pytest.raises(Undeferred):
            chain().run(records_from_event(event, decode=False))
        made, _ = runner()
        result = made.handle(event)  # parsed again, the aggregate expanded
        assert (result.records_in, result.written) == (3, {"A": 2, "B": 1})

    @pytest.mark.parametrize("data", [None, 7, b"eyJ2IjoxfQ==", "eyJ2IjoxfQ"])
    def test_data_that_is_not_base64_text_fails_as_when_parsed_first(self, data):
        factory = EventFactory()
        entry = factory.record({"v": 1}, "a")
        entry["kinesis"]["data"] = data
        deferred, deferred_sinks = runner()
        eager, eager_sinks = runner()
        event = {"Records": [entry, factory.record({"k": "b", "v": 2}, "b")]}
        got = outcome(deferred.handle(event), deferred_sinks)
        assert got == outcome(eager.run(records_from_event(event)), eager_sinks)

    def test_an_entry_without_data_fails_the_invocation_as_when_parsed_first(self):
        factory = EventFactory()
        entry = factory.record({"v": 1}, "a")
        del entry["kinesis"]["data"]
        made, _ = runner()
        with pytest.raises(KeyError):
            records_from_event({"Records": [entry]})
        with pytest.raises(KeyError):
            made.handle({"Records": [entry]})


class TestMemory:
    @pytest.mark.parametrize("enrich", [True, False])
    def test_the_batch_holds_no_bytes_of_the_records_a_filter_dropped(self, enrich):
        """What was measured (``python -m bench memory``): all the batch's bytes at once,
        decoded before the chain ran, and a dropped record's bytes until the batch ended."""
        factory = EventFactory()
        event = factory.batch(
            [(k, {"k": k, "v": v}) for k, v in zip("abab", (1, 0, 2, 0), strict=True)]
        )
        records = records_from_event(event, decode=False)
        result = chain(enrich=enrich).run(records)
        kept = {r.index for r in result.records}
        assert kept == {0, 2}
        seen = {"seen": True} if enrich else {}
        assert [r.data for r in result.records] == [
            orjson.dumps({"k": k, "v": v, **seen}) for k, v in (("a", 1), ("a", 2))
        ]
        assert [r._data for r in records if r.index not in kept] == [None] * 2
        assert not any(r.decoded for r in records if r.index not in kept)
        assert [r.data for r in records if r.index not in kept] == [
            orjson.dumps({"k": "b", "v": 0})
        ] * 2

    def test_a_chain_that_starts_with_a_plugin_decodes_first(self):
        steps = [Step("mine", lambda r: r, None, object()), *chain().steps]
        assert not Chain(steps).decodes_data
        assert not chain(fuse=False).decodes_data
        assert chain(enrich=False).decodes_data

    def test_pickled_deferred_record_keeps_its_data(self):
        import pickle  # noqa: PLC0415

        factory = EventFactory()
        (record,) = records_from_event(factory.batch([("a", {"n": 1})]), decode=False)
        copy = pickle.loads(pickle.dumps(record))
        assert type(copy) is Record
        assert copy.data == b'{"n":1}'
        assert base64.b64decode(record._entry["kinesis"]["data"]) == copy.data  # type: ignore[index]
