"""A ``latest`` table of a window's results: each result is the only record there will ever be
with its ``window_id`` (:class:`stream.records.FinalRecord`), so the sink writes those keys
without a condition, 25 to a ``BatchWriteItem`` call, and every other key as before (one
conditional ``PutItem``). Against a real moto server; the calls counted with botocore's
``before-call`` event (observed, not replaced)."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy.local.readback import table_items
from sinks.dynamodb import DynamoDBSink
from stream.event import records_from_event
from stream.overlap import overlapping
from stream.records import FinalRecord
from stream.testing import EventFactory

if TYPE_CHECKING:
    from stream.records import Record

pytestmark = pytest.mark.integration

KEY = "window_id"


def make_table(ddb: Any, name: str) -> str:
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": KEY, "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": KEY, "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


def sources(n: int, factory: EventFactory | None = None) -> list[Record]:
    f = factory or EventFactory()
    return records_from_event(f.batch((f"u{i}", {"user": f"u{i}"}) for i in range(n)))


def results(closers: list[Record], windows: list[str], n: int = 1) -> list[Record]:
    """The results a window step makes: derived from the record that closed each window."""
    return [c.final({KEY: w, "key": w.split("/")[1], "n": n}, KEY)
            for c, w in zip(closers, windows, strict=True)]  # fmt: skip


def counting(ddb: Any) -> Counter[str]:
    calls: Counter[str] = Counter()
    ddb.meta.events.register("before-call.dynamodb", lambda model, **_: calls.update([model.name]))
    return calls


def writes(calls: Counter[str]) -> Counter[str]:
    """The write calls counted (``table_items`` scans with the same client)."""
    return Counter({op: n for op, n in calls.items() if op != "Scan"})


def by_id(ddb: Any, table: str) -> dict[str, dict[str, Any]]:
    return {i[KEY]["S"]: i for i in table_items(ddb, table)}


@pytest.fixture
def ddb(aws: Any) -> Any:
    return aws("dynamodb")


@pytest.mark.parametrize("concurrent", [True, False], ids=["at-once", "in-turn"])
def test_results_go_in_batch_writes_of_25_and_equal_the_conditional_items(ddb, unique, concurrent):
    table = make_table(ddb, f"ppm-{unique}")
    twin = make_table(ddb, f"ppm-twin-{unique}")
    closers = sources(60)
    windows = [f"f/u{i}/60" for i in range(60)]
    calls = counting(ddb)
    sink = DynamoDBSink("ppm", table=table, key=KEY, client=ddb, now=lambda: 1.0)
    with overlapping(concurrent):
        outcomes = sink.write_batch(results(closers, windows))
    assert all(o.ok for o in outcomes)
    assert writes(calls) == Counter({"BatchWriteItem": 3})  # 60 keys: 25 + 25 + 10, no PutItem
    # the same records as plain ones (derive): one conditional PutItem each, same items
    plain = [r.derive(r.json) for r in results(closers, windows)]
    DynamoDBSink("ppm", table=twin, key=KEY, client=ddb, now=lambda: 1.0).write_batch(plain)
    assert by_id(ddb, table) == by_id(ddb, twin)
    assert calls["PutItem"] == 60


def test_a_redelivered_result_is_written_again_the_same_but_its_write_time(ddb, unique):
    table = make_table(ddb, f"ppm-{unique}")
    closers = sources(3)
    windows = ["f/u0/0", "f/u1/0", "f/u2/0"]
    DynamoDBSink("ppm", table=table, key=KEY, client=ddb, now=lambda: 1.0).write_batch(
        results(closers, windows)
    )
    before = by_id(ddb, table)
    again = DynamoDBSink("ppm", table=table, key=KEY, client=ddb, now=lambda: 2.5)
    assert all(o.ok for o in again.write_batch(results(closers, windows)))
    after = by_id(ddb, table)
    assert {w: {k: v for k, v in i.items() if k != "_written_at"} for w, i in after.items()} == {
        w: {k: v for k, v in i.items() if k != "_written_at"} for w, i in before.items()
    }
    assert {i["_written_at"]["N"] for i in after.values()} == {"2.5"}  # unconditional


def test_a_result_keyed_by_another_field_keeps_the_condition(ddb, unique):
    # a table of each user's latest window: many results per item, an older one must not win
    name = f"users-{unique}"
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "key", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "key", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    older, newer = sources(2)
    old = older.final({KEY: "f/a/0", "key": "a", "n": "old"}, KEY)
    new = newer.final({KEY: "f/a/60", "key": "a", "n": "new"}, KEY)
    calls = counting(ddb)
    sink = DynamoDBSink("users", table=name, key="key", client=ddb)
    assert sink.write_batch([new])[0].ok
    assert sink.write_batch([old])[0].ok  # a redelivery of an older batch, after
    (item,) = table_items(ddb, name)
    assert item["n"]["S"] == "new"
    assert writes(calls) == Counter({"PutItem": 2})


def test_a_result_whose_id_a_later_step_changed_keeps_the_condition(ddb, unique):
    table = make_table(ddb, f"ppm-{unique}")
    older, newer = sources(2)
    new = newer.final({KEY: "f/a/60", "n": "new"}, KEY)
    new.as_dict()[KEY] = "shared"  # a later step rewrote the id in place: not final now
    old = older.final({KEY: "f/b/0", "n": "old"}, KEY)
    old.as_dict()[KEY] = "shared"
    old.touch()
    new.touch()
    calls = counting(ddb)
    sink = DynamoDBSink("ppm", table=table, key=KEY, client=ddb)
    sink.write_batch([new])
    sink.write_batch([old])
    (item,) = table_items(ddb, table)
    assert item["n"]["S"] == "new"
    assert writes(calls) == Counter({"PutItem": 2})


def test_a_key_with_a_plain_record_beside_its_result_keeps_the_condition(ddb, unique):
    # a later step fanned a result out into itself and a plain copy with the same id
    table = make_table(ddb, f"ppm-{unique}")
    closer, other = sources(2)
    result = closer.final({KEY: "f/a/0", "n": 1}, KEY)
    result.part = "0"
    copy = closer.derive({KEY: "f/a/0", "n": 2})
    copy.part = "1"
    lone = other.final({KEY: "f/b/0", "n": 3}, KEY)
    calls = counting(ddb)
    outcomes = DynamoDBSink("ppm", table=table, key=KEY, client=ddb).write_batch(
        [result, copy, lone]
    )
    assert all(o.ok for o in outcomes)
    assert writes(calls) == Counter({"PutItem": 1, "BatchWriteItem": 1})
    assert {w: int(i["n"]["N"]) for w, i in by_id(ddb, table).items()} == {"f/a/0": 2, "f/b/0": 3}


def test_results_and_ordinary_records_in_one_batch_each_go_their_way(ddb, unique):
    table = make_table(ddb, f"ppm-{unique}")
    f = EventFactory()
    closers = sources(30, f)
    ordinary = records_from_event(f.batch((f"o{i}", {KEY: f"o{i}", "n": i}) for i in range(5)))
    calls = counting(ddb)
    batch = results(closers, [f"f/u{i}/0" for i in range(30)]) + ordinary
    assert all(
        o.ok for o in DynamoDBSink("ppm", table=table, key=KEY, client=ddb).write_batch(batch)
    )
    assert writes(calls) == Counter({"BatchWriteItem": 2, "PutItem": 5})
    assert len(table_items(ddb, table)) == 35
    assert all(type(r) is FinalRecord for r in batch[:30])


def test_a_table_that_is_missing_holds_back_results_and_others_alike(aws, unique):
    ddb = aws("dynamodb")
    calls = counting(ddb)
    closers = sources(60)
    sink = DynamoDBSink("ppm", table=f"nope-{unique}", key=KEY, client=ddb, sleep=lambda _: None)
    outcomes = sink.write_batch(results(closers, [f"f/u{i}/0" for i in range(60)]))
    assert {o.status.name for o in outcomes} == {"RETRYABLE"}
    assert all("nope-" in o.reason for o in outcomes)
    assert calls["BatchWriteItem"] == 3  # one wave: each call once, none retried


@settings(max_examples=15, deadline=None)
@given(
    deliveries=st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=8),
    concurrent=st.booleans(),
)
def test_any_order_of_deliveries_leaves_each_window_its_one_result(aws, deliveries, concurrent):
    """Four batches of results (each window closed once, in one batch) and ordinary records
    of shared keys, delivered in any order and any number of times (redeliveries, a late
    copy of an older batch after a newer one): each window's item is its one result, each
    ordinary key's item its newest record delivered, as with every write conditional."""
    ddb = aws("dynamodb")
    table = make_table(ddb, f"ppm-{uuid.uuid4().hex[:10]}")  # a table per example
    f = EventFactory()
    batches = []
    for b in range(4):
        closers = records_from_event(f.batch((f"u{b}{i}", {"u": i}) for i in range(7)))
        plain = records_from_event(f.batch((f"k{i}", {KEY: f"k{i}", "n": b}) for i in range(3)))
        batches.append(results(closers, [f"f/u{i}/{b}" for i in range(7)], n=b) + plain)
    sink = DynamoDBSink("ppm", table=table, key=KEY, client=ddb)
    with overlapping(concurrent):
        for b in deliveries:
            assert all(o.ok for o in sink.write_batch(batches[b]))
    got = {w: int(i["n"]["N"]) for w, i in by_id(ddb, table).items()}
    expected = {f"f/u{i}/{b}": b for b in set(deliveries) for i in range(7)}
    expected |= {f"k{i}": max(deliveries) for i in range(3)}
    assert got == expected
