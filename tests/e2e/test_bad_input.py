"""Bad input through the example pipeline: the handler never raises, and every record is
delivered, filtered or dead-lettered with a reason that names the problem.

Each test makes a Lambda Kinesis event (:class:`stream.testing.EventFactory`) and runs it
through :meth:`stream.batch.BatchRunner.invoke`, what ``stream.lambda_handler.handler``
calls per invocation (metrics and log lines included), of a function of
``examples/clickstream/pipeline.yaml``. The runner is built from the compiled plan by
:func:`stream.runtime.build_runner`, as ``deploy/pipeline/cases.py`` builds it: in-memory sinks,
and the lookup's items given through its ``fetch`` option, so no server is involved.

The in-memory sinks keep the real sinks' contract where bad input meets it: a sink reads
each record's bytes and answers a document that cannot be encoded with a permanent outcome
(``sinks/opensearch.py``, ``s3.py``, ``dynamodb.py``); the dead-letter sink encodes each
letter's envelope and answers one it cannot encode with a permanent outcome, as
``SQSSink`` does.

The reconciliation of every batch: records in = delivered (read back from the sinks) +
filtered (dropped by a step or routed nowhere) + dead-lettered (read back from the
dead-letter sink), no record both delivered and dead-lettered, and nothing reported in
``batchItemFailures``: Lambda would deliver a malformed record again unchanged until its
retries ran out, holding back the later records of its key all that time.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import random
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from deploy.pipeline.cases import FixtureFetch
from deploy.pipeline.config import load_plan_from_file
from sinks.base import OK, DeadLetter, Outcome, permanent
from sinks.memory import MemorySink
from stream.event import KPL_MAGIC
from stream.kpl import aggregated_record_type
from stream.records import Record
from stream.runtime import build_runner
from stream.testing import EventFactory, encode_aggregate

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from stream.batch import BatchResult
    from stream.event import KinesisEvent, KinesisEventRecord

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = ROOT / "examples" / "clickstream" / "pipeline.yaml"
ROUTE = "enrich-and-route"
ARCHIVE = "archive-all"
FUNCTIONS = (ROUTE, ARCHIVE)
#: Items of the lookup's table (``clickstream-users``); u3 is a miss, kept (on_miss: keep).
USERS = {"u1": {"name": "Ada", "tier": "gold"}, "u2": {"name": "Grace", "tier": "silver"}}
KEYS = ("u1", "u2", "u3")
MIB = 1024 * 1024
#: Where each function's valid clicks go.
CLICKS_GO_TO = {ROUTE: "search", ARCHIVE: "archive"}

Position = tuple[int, int]


# -- the harness ---------------------------------------------------------------------------


class Store(MemorySink):
    """A memory sink that reads each record's bytes before applying it, as every real sink
    does, and answers a document it cannot encode with a permanent outcome, as they do."""

    def _write(self, items: Sequence[Record]) -> list[Outcome]:
        out: list[Outcome] = [OK] * len(items)
        writable: list[int] = []
        for i, item in enumerate(items):
            try:
                item.data  # noqa: B018  # encodes a document a step changed
            except (TypeError, ValueError) as exc:
                reason = f"sink {self.name!r} cannot write the record as JSON ({exc})"
                out[i] = permanent(reason, "JSONEncodeError")
            else:
                writable.append(i)
        if writable:
            written = super()._write([items[i] for i in writable])
            for i, outcome in zip(writable, written, strict=True):
                out[i] = outcome
        return out


class DeadLetters(MemorySink):
    """The dead-letter sink: keeps each letter's JSON envelope; a letter whose envelope
    cannot be encoded is a permanent failure, as ``SQSSink`` answers it."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.letters: list[dict[str, Any]] = []

    def write_dead_letters(self, letters: Sequence[DeadLetter]) -> list[Outcome]:
        out: list[Outcome] = []
        for letter in letters:
            try:
                envelope = letter.document()
                orjson.dumps(envelope)
            except (TypeError, ValueError) as exc:
                out.append(permanent(f"dead letter cannot be encoded: {exc}", type(exc).__name__))
                continue
            self.letters.append(envelope)
            out.append(OK)
        return out


@cache
def plan() -> dict[str, Any]:
    """The example's compiled plan (``${OPENSEARCH_URL:-...}`` takes its default)."""
    return load_plan_from_file(PIPELINE, env={})


def plan_with_users(function: str) -> dict[str, Any]:
    """The plan with :data:`USERS` behind every lookup of the function (its ``fetch``)."""
    base = plan()
    spec = copy.deepcopy(base["functions"][function])
    for entry in spec.get("processors", ()):
        lookup = entry.get("enrich", {}).get("lookup") if isinstance(entry, dict) else None
        if isinstance(lookup, dict):
            lookup["fetch"] = FixtureFetch(USERS, lookup.get("table_key") or lookup["key"])
    return {**base, "functions": {**base["functions"], function: spec}}


@dataclass
class Delivery:
    """One invocation: the response, the runner's counts, and what the sinks hold."""

    response: dict[str, Any]
    result: BatchResult
    stores: dict[str, Store]
    dead: DeadLetters

    @property
    def filtered(self) -> int:
        return sum(self.result.dropped.values()) + self.result.unrouted

    def positions(self, sink: str) -> list[tuple[str, Position]]:
        """(partition key, position) of every record the sink applied, in write order."""
        return list(self.stores[sink].log) if sink in self.stores else []

    def delivered(self) -> set[Position]:
        return {pos for store in self.stores.values() for _, pos in store.log}

    def letter(self, position: Position) -> dict[str, Any]:
        (found,) = [
            e
            for e in self.dead.letters
            if (int(e["sequence_number"]), e["sub_sequence_number"]) == position
        ]
        return found

    def dead_lettered(self) -> set[Position]:
        return {(int(e["sequence_number"]), e["sub_sequence_number"]) for e in self.dead.letters}

    def reconcile(self, records_in: int) -> None:
        """in = delivered + filtered + dead-lettered; nothing left for Lambda to retry."""
        assert self.response == {"batchItemFailures": []}, self.result.failed
        assert self.result.records_in == records_in
        delivered, dead = self.delivered(), self.dead_lettered()
        assert not delivered & dead
        assert len(delivered) + self.filtered + len(dead) == records_in
        # the runner's own counts agree with what the sinks hold
        assert len(self.result.dead_letters) == len(self.dead.letters)
        for name, store in self.stores.items():
            assert self.result.written.get(name, 0) == len(store.log)


def invoke(function: str, event: KinesisEvent) -> Delivery:
    """Run the event through a fresh runner of the function, as one Lambda invocation."""
    on_failure = plan()["functions"][function]["on_failure"]
    stores: dict[str, Store] = {}
    dead = DeadLetters(on_failure)

    def make(name: str, spec: Any) -> MemorySink:
        if name == on_failure:
            return dead
        stores[name] = Store(name)
        return stores[name]

    runner = build_runner(plan_with_users(function), function, make, metrics=True)
    # invoke() returns only the response: keep the result it computed, for the counts
    results: list[BatchResult] = []
    handle = runner.handle

    def handle_and_keep(e: Any) -> BatchResult:
        results.append(handle(e))
        return results[-1]

    runner.handle = handle_and_keep  # type: ignore[method-assign]
    response = runner.invoke(event)
    (result,) = results
    assert response is result.response
    return Delivery(dict(response), result, stores, dead)


def position(entry: KinesisEventRecord, sub: int = 0) -> Position:
    return int(entry["kinesis"]["sequenceNumber"]), sub


# -- inputs --------------------------------------------------------------------------------


def click(key: str = "u1", event_id: str = "e1", **extra: Any) -> dict[str, Any]:
    """A valid click: kept by both filters, looked up, routed to search."""
    return {"event_id": event_id, "event_type": "click", "user_id": key, "page": "/", **extra}


def nested(depth: int, kind: str) -> bytes:
    """JSON nested ``depth`` levels deep: arrays, or objects."""
    if kind == "array":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def with_field(doc: dict[str, Any], name: str, raw: bytes) -> bytes:
    """The document's JSON with one more field whose value is the raw JSON text given."""
    return orjson.dumps(doc)[:-1] + b',"' + name.encode() + b'":' + raw + b"}"


def random_bytes() -> bytes:
    data = random.Random(7).randbytes(512)
    assert not data.startswith(KPL_MAGIC)
    with pytest.raises(UnicodeDecodeError):
        data.decode()
    return data


def one_mib_purchase(key: str) -> bytes:
    """A valid purchase of exactly 1 MiB with its partition key: Kinesis's largest record."""
    doc = {"event_id": "big", "event_type": "purchase", "user_id": key, "order_id": "o1"}
    doc |= {"amount": 1, "note": ""}
    pad = MIB - len(key) - len(orjson.dumps(doc))
    data = orjson.dumps(doc | {"note": "x" * pad})
    assert len(data) + len(key) == MIB
    return data


def aggregate_blob(n: int = 3) -> bytes:
    return encode_aggregate(
        [(f"u{i % 2 + 1}", orjson.dumps(click(f"u{i % 2 + 1}"))) for i in range(n)]
    )


def bad_checksum() -> bytes:
    blob = aggregate_blob()
    return blob[:-1] + bytes([blob[-1] ^ 0xFF])


def truncated_protobuf() -> bytes:
    """The protobuf cut inside a user record, under a digest that matches what is left (a
    producer that wrote a short buffer): only the protobuf parse can tell."""
    body = aggregate_blob()[len(KPL_MAGIC) : -16][:-7]
    return KPL_MAGIC + body + hashlib.md5(body).digest()  # the format's checksum


def truncated_in_transit() -> bytes:
    return aggregate_blob()[:-20]


def bad_key_index() -> bytes:
    message = aggregated_record_type()()
    message.partition_key_table.append("u1")
    user = message.records.add()
    user.partition_key_index = 5
    user.data = orjson.dumps(click())
    body = message.SerializeToString()
    return KPL_MAGIC + body + hashlib.md5(body).digest()  # the format's checksum


@dataclass(frozen=True)
class Fate:
    """What must happen to a bad record: delivered to ``sinks``, filtered, or dead-lettered
    at ``step`` with a reason containing every one of ``reason``."""

    kind: str  # delivered | filtered | dead
    sinks: tuple[str, ...] = ()
    step: str = ""
    reason: tuple[str, ...] = ()


def delivered(*sinks: str) -> Fate:
    return Fate("delivered", sinks=sinks)


FILTERED = Fate("filtered")


def dead(step: str, *reason: str) -> Fate:
    return Fate("dead", step=step, reason=reason)


def not_json(*reason: str) -> Fate:
    """Dead-lettered by the first step that reads the document: the match filter."""
    return dead("processors[0].filter", "is not JSON", *reason)


CORRUPT = "event"
ARCHIVED = delivered("archive")


@dataclass(frozen=True)
class BadInput:
    """One bad Kinesis record: its data (or the raw base64 text), and its fate per function."""

    name: str
    data: Callable[[], bytes]
    fates: dict[str, Fate]
    base64_text: str | None = None


BAD_INPUTS = [
    BadInput(
        "random-bytes",
        random_bytes,
        {ROUTE: not_json("not valid UTF-8"), ARCHIVE: ARCHIVED},
    ),
    *(
        BadInput(
            f"invalid-utf8-{name}",
            lambda raw=raw: with_field(click(), "page", raw),
            {
                ROUTE: not_json("not valid UTF-8"),
                ARCHIVE: ARCHIVED,
            },
        )
        for name, raw in [
            ("latin1", b'"caf\xe9"'),
            ("overlong", b'"\xc0\xaf"'),
            ("surrogate", b'"\xed\xa0\x80"'),
            ("cut-sequence", b'"\xe2\x82"'),
        ]
    ),
    *(
        BadInput(f"json-{name}", lambda raw=raw: raw, {ROUTE: FILTERED, ARCHIVE: ARCHIVED})
        for name, raw in [
            ("array", b'[{"event_type": "click"}]'),
            ("string", b'"click"'),
            ("number", b"42"),
            ("null", b"null"),
            ("true", b"true"),
        ]
    ),
    *(
        BadInput(
            f"nested-10000-{kind}{'-in-a-click' if inner else ''}",
            lambda kind=kind, inner=inner: (
                with_field(click(), "d", nested(10_000, kind)) if inner else nested(10_000, kind)
            ),
            {
                ROUTE: not_json("depth limit exceeded"),
                ARCHIVE: ARCHIVED,
            },
        )
        for kind in ("array", "object")
        for inner in (False, True)
    ),
    BadInput(
        "string-900kb",
        lambda: orjson.dumps(click(page="/" + "x" * 900_000)),
        {ROUTE: delivered("search"), ARCHIVE: ARCHIVED},
    ),
    *(
        BadInput(
            f"literal-{name}",
            lambda raw=raw: with_field(
                {"event_type": "purchase", "user_id": "u1", "order_id": "o1"}, "amount", raw
            ),
            {ROUTE: not_json(why), ARCHIVE: ARCHIVED},
        )
        for name, raw, why in [
            ("nan", b"NaN", "unexpected character"),
            ("infinity", b"Infinity", "unexpected character"),
            ("minus-infinity", b"-Infinity", "no digit after"),
            ("overflow-1e400", b"1e400", "infinity"),
        ]
    ),
    BadInput(
        "record-1mib",
        lambda: one_mib_purchase("u1"),
        {ROUTE: delivered("orders", "search"), ARCHIVE: ARCHIVED},
    ),
    *(
        BadInput(f"kpl-{name}", make, {ROUTE: dead(CORRUPT, why), ARCHIVE: dead(CORRUPT, why)})
        for name, make, why in [
            ("bad-checksum", bad_checksum, "checksum (MD5) mismatch"),
            ("truncated-protobuf", truncated_protobuf, "not a valid protobuf message"),
            ("truncated-in-transit", truncated_in_transit, "checksum (MD5) mismatch"),
            ("magic-only", lambda: KPL_MAGIC + b"\x00" * 3, "too short"),
            ("bad-key-index", bad_key_index, "partition key index 5"),
        ]
    ),
    BadInput(
        "not-base64",
        bytes,
        {ROUTE: dead(CORRUPT, "not valid base64"), ARCHIVE: dead(CORRUPT, "not valid base64")},
        base64_text="%%% not base64 %%%",
    ),
]


def bad_entry(f: EventFactory, case: BadInput, key: str) -> KinesisEventRecord:
    entry = f.raw(case.data(), key)
    if case.base64_text is not None:
        entry["kinesis"]["data"] = case.base64_text
    return entry


# -- each bad input ------------------------------------------------------------------------


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("case", BAD_INPUTS, ids=lambda case: case.name)
def test_a_bad_record_is_delivered_filtered_or_dead_lettered_with_its_reason(
    case: BadInput, function: str
) -> None:
    """Between two valid records of its key, so that a bad record that held back its key
    would show: both of them are delivered, in order."""
    f = EventFactory(stream="clickstream-events")
    before = f.record(click("u1", "e-before"), "u1")
    bad = bad_entry(f, case, "u1")
    after = f.record(click("u1", "e-after"), "u1")

    delivery = invoke(function, f.event([before, bad, after]))

    delivery.reconcile(3)
    clicks = CLICKS_GO_TO[function]
    assert [p for k, p in delivery.positions(clicks) if k == "u1" and p != position(bad)] == [
        position(before),
        position(after),
    ]
    fate = case.fates[function]
    here = position(bad)
    landed = {
        name for name, store in delivery.stores.items() if any(p == here for _, p in store.log)
    }
    if fate.kind == "delivered":
        assert landed == set(fate.sinks)
        assert here not in delivery.dead_lettered()
    elif fate.kind == "filtered":
        assert not landed
        assert here not in delivery.dead_lettered()
        assert delivery.filtered == 1
    else:
        assert not landed
        letter = delivery.letter(here)
        assert letter["step"] == fate.step
        for words in fate.reason:
            assert words in letter["reason"]
        assert letter["function"] == function
        if case.base64_text is None:  # the letter carries the bytes as they arrived
            assert base64.b64decode(letter["data_base64"]) == case.data()


def test_a_900kb_string_and_a_1mib_record_arrive_whole() -> None:
    f = EventFactory(stream="clickstream-events")
    page = "/" + "x" * 900_000
    big = one_mib_purchase("u2")
    entries = [f.record(click("u1", page=page), "u1"), f.raw(big, "u2")]

    delivery = invoke(ROUTE, f.event(entries))

    delivery.reconcile(2)
    search = delivery.stores["search"].latest
    assert orjson.loads(search["u1"][1])["page"] == page
    assert orjson.loads(search["u2"][1])["note"] == orjson.loads(big)["note"]
    assert orjson.loads(search["u2"][1])["user"] == {"user_id": "u2", **USERS["u2"]}


def test_a_good_aggregate_after_a_corrupt_one_is_de_aggregated_in_order() -> None:
    f = EventFactory(stream="clickstream-events")
    corrupt = f.raw(bad_checksum(), "u1")
    users = [("u1", orjson.dumps(click("u1", f"e{i}"))) for i in range(3)]
    good = f.aggregate(users)

    delivery = invoke(ROUTE, f.event([corrupt, good]))

    delivery.reconcile(4)
    assert delivery.dead_lettered() == {position(corrupt)}
    assert delivery.positions("search") == [("u1", position(good, sub)) for sub in range(3)]


# -- nesting that orjson reads but cannot write --------------------------------------------

#: orjson reads up to 1,024 levels of nesting but writes at most 254: a document in between
#: decodes, passes the chain, and once a step has changed it, cannot be encoded again.
READABLE_NOT_WRITABLE = 300

# orjson reads 1,024 levels of nesting but writes at most 254: a record that decodes but,
# once changed, cannot be encoded must still be dead-lettered (the envelope says why),
# never reported for retry on every delivery until Lambda's retries run out.


def test_a_document_nested_300_levels_decodes() -> None:
    """The premise of the two tests below: such a record passes the chain's JSON steps."""
    data = with_field(click(), "d", nested(READABLE_NOT_WRITABLE, "array"))
    record = Record(data, "u1", "1")
    assert record.as_dict()["event_type"] == "click"
    record.touch()
    with pytest.raises(TypeError):
        record.data  # noqa: B018


def test_the_dead_letter_of_a_document_too_deep_to_encode_is_still_written() -> None:
    data = with_field(click(), "d", nested(READABLE_NOT_WRITABLE, "array"))
    record = Record(data, "u1", "49590338271490256608559692538361571095921575989136588898")
    record.as_dict()["pipeline"] = "clickstream"  # what `enrich: set` does
    record.touch()
    letter = DeadLetter(record, "cannot write the record as JSON", "JSONEncodeError", "sink:x")

    envelope = letter.document()

    assert envelope["sequence_number"] == record.sequence_number
    orjson.dumps(envelope)


def test_a_click_nested_300_levels_deep_is_dead_lettered_not_retried() -> None:
    f = EventFactory(stream="clickstream-events")
    deep = f.raw(with_field(click(), "d", nested(READABLE_NOT_WRITABLE, "array")), "u1")
    after = f.record(click("u1", "e-after"), "u1")

    delivery = invoke(ROUTE, f.event([deep, after]))

    delivery.reconcile(2)
    assert delivery.letter(position(deep))["step"] == "sink:search"
    assert [p for _, p in delivery.positions("search")] == [position(after)]


# -- any mix of garbage and valid records --------------------------------------------------

_scalar = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
)
_json = st.recursive(
    _scalar,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
#: Objects that nearly pass: a known event type, fields of any JSON type.
_near_miss = st.fixed_dictionaries(
    {"event_type": st.sampled_from(["click", "purchase", "view"])},
    optional={"amount": _json, "user_id": _json, "order_id": _json, "event_id": _json},
)
_garbage_data = st.one_of(
    st.binary(max_size=48),
    st.binary(max_size=48).map(lambda b: KPL_MAGIC + b),
    _json.map(orjson.dumps),
    _near_miss.map(orjson.dumps),
)
_valid = st.builds(lambda key: ("valid", key, b""), st.sampled_from(KEYS))
_garbage = st.builds(lambda key, data: ("garbage", key, data), st.sampled_from(KEYS), _garbage_data)
_plain = _valid | _garbage
_item = _plain | st.lists(_plain, min_size=1, max_size=4).map(
    lambda parts: ("aggregate", "", parts)
)


@pytest.mark.parametrize("function", FUNCTIONS)
@given(items=st.lists(_item, min_size=1, max_size=12))
def test_any_mix_of_garbage_and_valid_records_reconciles_and_keeps_valid_records_in_order(
    function: str, items: list[tuple[str, str, Any]]
) -> None:
    f = EventFactory(stream="clickstream-events")
    entries: list[KinesisEventRecord] = []
    expected: dict[str, list[Position]] = {}  # valid clicks per key, in shard order
    records_in = 0
    serial = 0

    def data_of(kind: str, key: str, data: bytes) -> bytes:
        nonlocal serial
        serial += 1
        return orjson.dumps(click(key, f"e{serial}")) if kind == "valid" else data

    for kind, key, payload in items:
        if kind == "aggregate":
            entry = f.aggregate([(k, data_of(kd, k, d)) for kd, k, d in payload])
            for sub, (kd, k, _) in enumerate(payload):
                if kd == "valid":
                    expected.setdefault(k, []).append(position(entry, sub))
            records_in += len(payload)
        else:
            entry = f.raw(data_of(kind, key, payload), key)
            if kind == "valid":
                expected.setdefault(key, []).append(position(entry))
            records_in += 1
        entries.append(entry)

    delivery = invoke(function, f.event(entries))

    delivery.reconcile(records_in)
    for name in delivery.stores:  # per key, every sink applies records in shard order
        per_key: dict[str, list[Position]] = {}
        for key, pos in delivery.positions(name):
            per_key.setdefault(key, []).append(pos)
        assert all(ps == sorted(set(ps)) for ps in per_key.values())
    valid = set().union(*expected.values())
    got: dict[str, list[Position]] = {}
    for key, pos in delivery.positions(CLICKS_GO_TO[function]):
        if pos in valid:
            got.setdefault(key, []).append(pos)
    assert got == expected
    for letter in delivery.dead.letters:
        assert letter["reason"]
        assert letter["step"]
