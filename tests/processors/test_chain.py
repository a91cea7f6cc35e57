"""The chain runner: step by step over the batch, failures captured per record."""

from __future__ import annotations

from typing import Any

from processors.chain import EVENT_STEP, Chain, Step
from sinks.base import OK, Outcome, Sink, permanent, retryable
from stream.exceptions import DecodeError, RetryableError
from stream.records import Record


def batch(n: int) -> list[Record]:
    return [Record(f'{{"i":{i}}}'.encode(), f"k{i}", str(i), index=i) for i in range(n)]


class TestChain:
    def test_a_step_that_returns_none_drops_and_is_counted(self):
        chain = Chain([Step.of("processors[0].f", lambda r: r if r.json["i"] % 2 else None)])
        result = chain.run(batch(4))
        assert [r.json["i"] for r in result.records] == [1, 3]
        assert result.dropped == {"processors[0].f": 2}

    def test_fan_out_keeps_the_source_index(self):
        chain = Chain([Step.of("fan", lambda r: [r.derive({"c": 1}), r.derive({"c": 2})])])
        result = chain.run(batch(2))
        assert [(r.index, r.json["c"]) for r in result.records] == [(0, 1), (0, 2), (1, 1), (1, 2)]

    def test_an_exception_fails_only_its_record_permanently(self):
        def boom(r: Record) -> Record:
            if r.json["i"] == 1:
                raise KeyError("user_id")
            return r

        result = Chain([Step.of("processors[3].x", boom)]).run(batch(3))
        assert len(result.records) == 2
        (failure,) = result.failures
        assert (failure.record.index, failure.step, failure.retryable) == (
            1,
            "processors[3].x",
            False,
        )

    def test_a_retryable_error_is_marked_retryable(self):
        def throttled(r: Record) -> Record:
            raise RetryableError("throttled")

        result = Chain([Step.of("s", throttled)]).run(batch(1))
        assert result.failures[0].retryable is True

    def test_a_wrong_return_value_names_the_step_and_the_fix(self):
        result = Chain([Step.of("processors[1].bad", lambda r: {"not": "a record"})]).run(batch(1))
        message = str(result.failures[0].error)
        assert "processors[1].bad" in message
        assert "returned dict, expected Record" in message

    def test_prepare_sees_exactly_the_records_that_reach_the_step(self):
        seen: list[list[int]] = []

        class Lookup:
            def prepare(self, records):
                seen.append([r.index for r in records])

            def __call__(self, r):
                return r

        chain = Chain([Step.of("f", lambda r: r if r.index != 1 else None), Step.of("l", Lookup())])
        chain.run(batch(3))
        assert seen == [[0, 2]]

    def test_undecodable_records_fail_at_the_event_step_before_any_processor(self):
        bad = Record(b"x", "k", "1", error="KPL aggregate checksum (MD5) mismatch")
        result = Chain([]).run([bad, *batch(1)])
        (failure,) = result.failures
        assert failure.step == EVENT_STEP
        assert isinstance(failure.error, DecodeError)
        assert len(result.records) == 1


class Upper:
    """A plugin as users write them: edits the document in place, never calls touch()."""

    def __init__(self, field: str = "name") -> None:
        self.field = field

    def __call__(self, record: Record) -> Record:
        doc = record.as_dict()
        doc[self.field] = doc[self.field].upper()
        return record


class TestUntrackedChanges:
    """A step that is not a tracked built-in is assumed to have changed the document."""

    @staticmethod
    def _records() -> list[Record]:
        return [Record(b'{"name": "ada"}', "k", "1"), Record(b'{"name": "bob"}', "k", "2")]

    def test_an_in_place_edit_without_touch_reaches_the_bytes(self):
        for fuse in (True, False):
            result = Chain([Step.of("processors[0].use(Upper)", Upper())], fuse=fuse).run(
                self._records()
            )
            assert [r.data for r in result.records] == [b'{"name":"ADA"}', b'{"name":"BOB"}']

    def test_records_a_plugin_returns_in_a_list_or_as_another_record_are_re_encoded(self):
        def listed(r: Record) -> list[Record]:
            r.as_dict()["n"] = 1
            return [r]

        def other(r: Record) -> Record:
            new = Record(r.data, r.partition_key, r.sequence_number)
            new.as_dict()["n"] = 2
            return new

        for step, n in ((listed, 1), (other, 2)):
            (rec,) = Chain([Step.of("p", step)]).run(self._records()[:1]).records
            assert rec.data == b'{"name":"ada","n":%d}' % n

    def test_a_plugin_between_fused_built_ins_gets_its_edit_written(self):
        """The filter decodes the document, the plugin edits it, the route only reads it."""
        from processors.filter import Filter  # noqa: PLC0415
        from processors.route import Route  # noqa: PLC0415

        steps = [
            Step.of("processors[0].filter", Filter(match={"name": ["ada", "bob"]})),
            Step.of("processors[1].use(Upper)", Upper()),
            Step.of("processors[2].route", Route.from_config([{"default": ["out"]}], ["out"])),
        ]
        result = Chain(steps).run(self._records())
        assert [r.data for r in result.records] == [b'{"name":"ADA"}', b'{"name":"BOB"}']
        assert [r.routes for r in result.records] == [("out",), ("out",)]

    def test_built_ins_keep_their_fast_path_and_subclasses_do_not(self):
        from processors.filter import Filter  # noqa: PLC0415
        from processors.route import Route  # noqa: PLC0415

        class MyFilter(Filter):
            pass

        assert Step.of("f", Filter(match={"a": [1]})).tracked is True
        assert Step.of("r", Route.from_config([{"default": ["out"]}], ["out"])).tracked is True
        assert Step.of("u", Upper()).tracked is False
        assert Step.of("m", MyFilter(match={"a": [1]})).tracked is False
        assert Step("hand-made", Upper()).tracked is False

    def test_an_unchanged_record_through_a_built_in_keeps_its_bytes(self):
        from processors.filter import Filter  # noqa: PLC0415

        raw = b'{"name":  "ada"}'  # not orjson's spacing: re-encoding would show
        for fuse in (True, False):
            step = Step.of("f", Filter(expr="name == 'ada'"))
            (rec,) = Chain([step], fuse=fuse).run([Record(raw, "k", "1")]).records
            assert rec.data == raw

    def test_through_the_compiled_plan_into_the_stdout_sink(self):
        """The handler's path: plan -> runner -> stdout sink writes the edited value."""
        import io  # noqa: PLC0415

        from deploy.pipeline.config import compile_plan, parse_config  # noqa: PLC0415
        from sinks.stdout import StdoutSink  # noqa: PLC0415
        from stream.runtime import build_runner  # noqa: PLC0415
        from stream.testing import EventFactory  # noqa: PLC0415

        text = (
            "name: up\nstream: {name: s}\nsinks: {out: {type: stdout}}\nfunctions:\n"
            "  main:\n    processors:\n"
            "      - use: 'tests.processors.test_chain:Upper'\n"
            "    route: [out]\n"
        )
        plan = compile_plan(parse_config(text, env={}))
        buf = io.BytesIO()
        runner = build_runner(plan, "main", lambda name, spec: StdoutSink(name, out=buf))
        event = EventFactory().batch([("k", {"name": "ada"}), ("k", {"name": "bob"})])
        runner.handle(event)
        assert buf.getvalue() == b'{"name":"ADA"}\n{"name":"BOB"}\n'


class Rebuild:
    """A plugin that builds its result with ``Record(...)`` instead of ``record.derive``,
    with a made-up sequence number: what a writer who never read the position docs does."""

    def __call__(self, record: Record) -> Record:
        import orjson  # noqa: PLC0415

        return Record(orjson.dumps({**record.as_dict(), "seen": True}), record.partition_key, "0")


class ById(Sink):
    """A keyed store as OpenSearch's ``create`` by ``_id``: an id written once is kept, a
    record with an id already written is taken for a redelivery (OK, nothing written)."""

    def __init__(self, name: str, fail: Any = None, *, permanent_: bool = False) -> None:
        super().__init__(name)
        self.fail = fail
        self.permanent = permanent_
        self.docs: dict[str, Record] = {}

    def _write(self, items: Any) -> list[Outcome]:
        out = []
        for item in items:
            if self.fail is not None and self.fail(item, 0):
                out.append(
                    permanent("refused", "ValidationError")
                    if self.permanent
                    else retryable("injected throttle", "Throttled")
                )
                continue
            self.docs.setdefault(item.document_id, item)
            out.append(OK)
        return out


class TestRecordsAPluginBuilds:
    """What a plugin returns for a record stands at that record's source position."""

    @staticmethod
    def _run(fail: Any = None, *, permanent_: bool = False) -> tuple[Any, Any, list[Record]]:
        """The handler on one aggregate of three user records and one plain record; the
        response, the sink ``out`` (or, with ``permanent_``, the dead-letter sink) and the
        records as they arrived."""
        from stream.runtime import build_runner  # noqa: PLC0415
        from stream.testing import EventFactory  # noqa: PLC0415

        plan = _plan("      - use: 'tests.processors.test_chain:Rebuild'\n", aggregated=True)
        sinks = {"out": ById("out", fail, permanent_=permanent_), "dlq": ById("dlq")}
        runner = build_runner(plan, "main", lambda name, spec: sinks[name])
        factory = EventFactory()
        event = factory.event([
            factory.aggregate([("a", {"n": 1}), ("b", {"n": 2}), ("c", {"n": 3})]),
            factory.record({"n": 4}, "d"),
        ])  # fmt: skip
        from stream.event import records_from_event  # noqa: PLC0415

        inputs = records_from_event(event, aggregated=True, lazy=False)
        return runner.handle(event), sinks["dlq" if permanent_ else "out"], inputs

    def test_each_user_record_of_an_aggregate_keeps_its_own_id_in_keyed_sinks(self):
        """Built with Record(...), the three user records of one aggregate had one
        document id ('') and position: a keyed sink kept one, the others taken for it."""
        _, sink, inputs = self._run()
        written = list(sink.docs.values())
        assert len(written) == 4
        got = sorted((r.shard_id, r.event_id, r.sequence_number, r.sub_sequence_number)
                     for r in written)  # fmt: skip
        want = sorted((r.shard_id, r.event_id, r.sequence_number, r.sub_sequence_number)
                      for r in inputs)  # fmt: skip
        assert got == want
        assert sorted(r.document_id for r in written) == sorted(r.document_id for r in inputs)
        assert all(r.json["seen"] for r in written)

    def test_a_dead_letter_says_where_the_record_came_from(self):
        """Its envelope is what `shardline dlq redrive` reads the shard and position from."""
        result, _, inputs = self._run(lambda rec, attempt: rec.json["n"] == 4)
        assert result.response == {
            "batchItemFailures": [{"itemIdentifier": inputs[3].sequence_number}]
        }
        _, dlq, inputs = self._run(lambda rec, attempt: rec.json["n"] == 2, permanent_=True)
        (doc,) = [r.json for r in dlq.docs.values()]
        assert (doc["shard_id"], doc["event_id"], doc["sequence_number"]) == (
            inputs[1].shard_id, inputs[1].event_id, inputs[1].sequence_number,
        )  # fmt: skip
        assert doc["sub_sequence_number"] == 1


def _plan(processors: str, *, aggregated: bool = False) -> Any:
    from deploy.pipeline.config import compile_plan, parse_config  # noqa: PLC0415

    text = (
        f"name: up\nstream: {{name: s, aggregated: {str(aggregated).lower()}}}\n"
        "sinks: {out: {type: stdout}, dlq: {type: sqs, queue: q}}\nfunctions:\n"
        f"  main:\n    processors:\n{processors}    route: [out]\n    on_failure: dlq\n"
    )
    return compile_plan(parse_config(text, env={}))
