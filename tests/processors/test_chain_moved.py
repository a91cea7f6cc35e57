"""Records a plugin step returns that are not the one it got (found in review): another record
of the batch it moved keeps its own position (``processors.chain._at_source`` had rewritten it
in place, so two records shared one id and a keyed sink kept one), and a record returned after
a ``route`` step goes where the record it replaces was routed (it was counted unrouted and
written nowhere, a success to Lambda)."""

from __future__ import annotations

import io
from typing import Any

import orjson
import pytest

from processors.chain import Chain, Step
from stream.records import Record


def batch() -> list[Record]:
    # shard order: seq 1 happened at t=20, seq 2 at t=10 (a late producer)
    return [
        Record(b'{"t":20,"id":"a"}', "k", "1", shard_id="s", event_id="s:1", index=0),
        Record(b'{"t":10,"id":"b"}', "k", "2", shard_id="s", event_id="s:2", index=1),
    ]


class SortByTime:
    """Batch-aware: hands out the batch's records in event-time order, by position."""

    def prepare(self, records: Any) -> None:
        ordered = sorted(records, key=lambda r: r.json["t"])
        self.at = {r.position: s for r, s in zip(records, ordered, strict=True)}

    def __call__(self, record: Record) -> Record:
        return self.at[record.position]


class SortByTimeIdentity(SortByTime):
    def prepare(self, records: Any) -> None:
        ordered = sorted(records, key=lambda r: r.json["t"])
        self.at = {id(r): s for r, s in zip(records, ordered, strict=True)}

    def __call__(self, record: Record) -> Record:
        return self.at[id(record)]


def test_a_step_that_reorders_the_batch_loses_no_record() -> None:
    result = Chain([Step.of("processors[0].use(x:SortByTime)", SortByTime())]).run(batch())
    assert sorted(r.json["id"] for r in result.records) == ["a", "b"]


def test_a_record_moved_keeps_its_own_position() -> None:
    records = batch()
    result = Chain([Step.of("processors[0].use(x:Sort)", SortByTimeIdentity())]).run(records)
    by_id = {r.json["id"]: r.event_id for r in result.records}
    assert by_id == {"a": "s:1", "b": "s:2"}


class Rebuild:
    def __call__(self, record: Record) -> Record:
        return Record(orjson.dumps({**record.as_dict(), "seen": True}), record.partition_key, "0")


class Derive:
    def __call__(self, record: Record) -> Record:
        return record.derive({**record.as_dict(), "seen": True})


@pytest.mark.parametrize("plugin", ["Rebuild", "Derive"])
def test_a_record_a_plugin_returns_after_a_route_goes_where_it_was_routed(plugin: str) -> None:
    from deploy.pipeline.config import compile_plan, parse_config  # noqa: PLC0415
    from sinks.stdout import StdoutSink  # noqa: PLC0415
    from stream.runtime import build_runner  # noqa: PLC0415
    from stream.testing import EventFactory  # noqa: PLC0415

    text = (
        "name: r\nstream: {name: s}\nsinks: {a: {type: stdout}, b: {type: stdout}}\n"
        "functions:\n  main:\n    processors:\n"
        "      - route: [{when: {kind: [x]}, to: [a]}, {default: [b]}]\n"
        f"      - use: 'tests.processors.test_chain_moved:{plugin}'\n"
    )
    plan = compile_plan(parse_config(text, env={}))
    bufs: dict[str, Any] = {"a": io.BytesIO(), "b": io.BytesIO()}
    runner = build_runner(plan, "main", lambda name, spec: StdoutSink(name, out=bufs[name]))
    result = runner.handle(EventFactory().batch([("k", {"kind": "x"}), ("k", {"kind": "y"})]))
    assert (bufs["a"].getvalue(), bufs["b"].getvalue()) == (
        b'{"kind":"x","seen":true}\n',
        b'{"kind":"y","seen":true}\n',
    ), result
