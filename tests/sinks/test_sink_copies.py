"""A sink plugin that edits records in ``_write`` edits its own copies: the edit reaches
neither the route's other sinks (written at once, in threads) nor the dead letter."""

from __future__ import annotations

import base64
import json
import threading
from typing import TYPE_CHECKING, Any

from processors.chain import Chain, Step
from sinks.base import OK, Outcome, Sink, own_copies, permanent
from sinks.memory import MemorySink
from stream.batch import BatchRunner
from stream.records import Record

if TYPE_CHECKING:
    from collections.abc import Sequence

DEADLINE_S = 10.0


class Redacting(Sink):
    """Masks ``card`` in place, as a sink that formats for its backend might; refuses
    records with ``bad`` (dead-lettered); signals once it has edited its batch."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.edited = threading.Event()
        self.written: list[dict[str, Any]] = []

    def _write(self, items: Sequence[Record]) -> list[Outcome]:
        outcomes = []
        for record in items:
            doc = record.as_dict()
            doc["card"] = "****"
            doc["formatted_by"] = self.name
            self.written.append(dict(doc))
            outcomes.append(permanent("refused", "Validation") if doc.get("bad") else OK)
        self.edited.set()
        return outcomes


class Reading(Sink):
    """Reads each document after the redacting sink has edited its batch."""

    def __init__(self, name: str, after: threading.Event) -> None:
        super().__init__(name)
        self.after = after
        self.seen: list[dict[str, Any]] = []

    def _write(self, items: Sequence[Record]) -> list[Outcome]:
        assert self.after.wait(DEADLINE_S), "the redacting sink never wrote"
        self.seen += [dict(record.as_dict()) for record in items]
        return [OK] * len(items)


class Letters(Sink):
    """The dead-letter sink: keeps the envelopes."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.envelopes: list[dict[str, Any]] = []

    def _write(self, items: Sequence[Record]) -> list[Outcome]:
        self.envelopes += [record.as_dict() for record in items]
        return [OK] * len(items)


def tag(record: Record) -> Record:
    """A plugin step that edits in place: the chain re-encodes the document lazily."""
    record.as_dict()["tagged"] = True
    return record


def batch() -> list[Record]:
    return [
        Record(b'{"card": "4111"}', "a", "1", index=0, event_id="e1", shard_id="s"),
        Record(b'{"card": "5500", "bad": true}', "b", "2", index=1, event_id="e2", shard_id="s"),
    ]


def test_an_edit_in_write_reaches_neither_the_other_sinks_nor_the_dead_letter() -> None:
    redacting = Redacting("redact")
    reading = Reading("read", after=redacting.edited)
    builtin = MemorySink("memory")
    letters = Letters("dlq")
    runner = BatchRunner(
        Chain([Step.of("tag", tag)]),
        {"redact": redacting, "read": reading, "memory": builtin, "dlq": letters},
        default_route=["redact", "read", "memory"],
        on_failure="dlq",
    )
    records = batch()
    result = runner.run(records)

    assert result.response == {"batchItemFailures": []}
    # the redacting sink wrote what it edited
    assert [d["card"] for d in redacting.written] == ["****", "****"]
    # the other plugin sink, reading after the edit, sees the chain's documents
    assert reading.seen == [{"card": "4111", "tagged": True},
                            {"card": "5500", "bad": True, "tagged": True}]  # fmt: skip
    # so does the built-in, which shares the chain's records
    stored = [json.loads(data) for _position, data in builtin.latest.values()]
    assert sorted(stored, key=lambda d: d["card"]) == reading.seen
    # the dead letter keeps the record as the chain left it, for redrive
    (envelope,) = letters.envelopes
    assert envelope["step"] == "sink:redact"
    assert json.loads(base64.b64decode(envelope["data_base64"])) == {
        "card": "5500", "bad": True, "tagged": True,
    }  # fmt: skip
    assert [r.get("card") for r in records] == ["4111", "5500"]


def test_copies_keep_the_position_and_route_and_share_no_document() -> None:
    (original,) = batch()[:1]
    original.part, original.routes = "1", ("x",)
    original.as_dict()  # decoded: the copy must not share this dict
    (copy,) = own_copies([original])
    assert copy == original
    assert (copy.document_id, copy.index, copy.part, copy.routes) == ("e1#1", 0, "1", ("x",))
    copy.as_dict()["card"] = "****"
    assert original.get("card") == "4111"


def test_a_builtin_sink_gets_the_records_themselves() -> None:
    """Built-ins never edit, so they skip the copy (a decoding per record)."""
    seen: list[Record] = []

    class Spy(MemorySink):
        def _write(self, items: Sequence[Record]) -> list[Outcome]:
            seen.extend(items)
            return super()._write(items)

    records = batch()
    Spy("m").write_batch(records)
    assert all(a is b for a, b in zip(seen, records, strict=True))
