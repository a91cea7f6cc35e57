"""The DynamoDB sink against a real moto server: bulk, replay, order, classification."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest

from deploy.local.readback import table_items
from sinks.base import Ordering, Status
from sinks.dynamodb import DynamoDBSink
from stream.aws import aws_client
from stream.event import records_from_event
from stream.overlap import ITEM_WAVE_WIDTH, WAVE_WIDTH, overlapping
from stream.testing import EventFactory

if TYPE_CHECKING:
    from stream.records import Record

pytestmark = pytest.mark.integration


def make_table(ddb: Any, name: str, append: bool) -> str:
    keys = [{"AttributeName": "order_id", "KeyType": "HASH"}]
    attrs = [{"AttributeName": "order_id", "AttributeType": "S"}]
    if append:
        keys.append({"AttributeName": "_position", "KeyType": "RANGE"})
        attrs.append({"AttributeName": "_position", "AttributeType": "S"})
    ddb.create_table(
        TableName=name, KeySchema=keys, AttributeDefinitions=attrs, BillingMode="PAY_PER_REQUEST"
    )
    return name


def batch(docs: list[dict[str, Any]], factory: EventFactory | None = None) -> list[Record]:
    f = factory or EventFactory()
    return records_from_event(f.batch((str(d.get("order_id")), d) for d in docs))


def exact_batch(docs: list[dict[str, Any]], factory: EventFactory | None = None) -> list[Record]:
    """Like :func:`batch`, with the standard encoder: integers beyond 64 bits are kept."""
    f = factory or EventFactory()
    return records_from_event(f.batch((str(d["order_id"]), json.dumps(d).encode()) for d in docs))


@pytest.fixture
def ddb(aws: Any) -> Any:
    return aws("dynamodb")


class TestLatest:
    def test_bulk_write_keeps_the_newest_record_of_each_key(self, ddb, unique):
        table = make_table(ddb, f"orders-{unique}", append=False)
        sink = DynamoDBSink("orders", table=table, key="order_id", client=ddb)
        records = batch([{"order_id": f"o{i % 30}", "v": i} for i in range(90)])
        outcomes = sink.write_batch(records)
        assert all(o.status is Status.OK for o in outcomes)
        items = table_items(ddb, table)
        assert len(items) == 30
        assert {i["order_id"]["S"]: int(i["v"]["N"]) for i in items} == {
            f"o{k}": 60 + k for k in range(30)
        }

    def test_replaying_the_same_batch_changes_nothing(self, ddb, unique):
        table = make_table(ddb, f"orders-{unique}", append=False)
        sink = DynamoDBSink("orders", table=table, key="order_id", client=ddb, now=lambda: 1.0)
        records = batch([{"order_id": f"o{i}", "v": i} for i in range(10)])
        sink.write_batch(records)
        before = sorted(table_items(ddb, table), key=lambda i: i["order_id"]["S"])
        sink2 = DynamoDBSink("orders", table=table, key="order_id", client=ddb, now=lambda: 2.0)
        assert all(o.ok for o in sink2.write_batch(records))
        after = sorted(table_items(ddb, table), key=lambda i: i["order_id"]["S"])
        assert after == before  # even _written_at: the conditional put did not rewrite

    def test_an_older_record_after_a_newer_one_changes_nothing(self, ddb, unique):
        table = make_table(ddb, f"orders-{unique}", append=False)
        sink = DynamoDBSink("orders", table=table, key="order_id", client=ddb)
        old, new = batch([{"order_id": "o1", "v": "old"}, {"order_id": "o1", "v": "new"}])
        sink.write_batch([new])
        assert sink.write_batch([old])[0].ok
        (item,) = table_items(ddb, table)
        assert item["v"]["S"] == "new"

    def test_numbers_round_trip_exactly(self, ddb, unique):
        table = make_table(ddb, f"orders-{unique}", append=False)
        sink = DynamoDBSink("orders", table=table, key="order_id", client=ddb)
        big = 2**64 - 1  # orjson reads larger integers as floats: see the issue note
        sink.write_batch(batch([{"order_id": "n", "f": 0.1, "big": big, "m": {"x": [1.5, None]}}]))
        (item,) = table_items(ddb, table)
        assert Decimal(item["f"]["N"]) == Decimal("0.1")
        assert int(item["big"]["N"]) == big
        assert item["m"] == {"M": {"x": {"L": [{"N": "1.5"}, {"NULL": True}]}}}

    def test_integers_beyond_64_bits_round_trip_exactly(self, ddb, unique):
        """orjson reads them as floats; the sink decodes the record's bytes exactly instead."""
        table = make_table(ddb, f"orders-{unique}", append=False)
        sink = DynamoDBSink("orders", table=table, key="order_id", client=ddb)
        data = b'{"order_id": "b", "big": -123456789012345678901234567890, "f": 0.1}'
        records = records_from_event(EventFactory().event([EventFactory().raw(data, "b")]))
        assert [o.status for o in sink.write_batch(records)] == [Status.OK]
        (item,) = table_items(ddb, table)
        assert item["big"] == {"N": "-123456789012345678901234567890"}
        assert Decimal(item["f"]["N"]) == Decimal("0.1")


class TestAppend:
    def test_one_item_per_record_and_replays_of_an_overlapping_batch_add_none(self, ddb, unique):
        table = make_table(ddb, f"events-{unique}", append=True)
        sink = DynamoDBSink("events", table=table, key="order_id", mode="append", client=ddb)
        records = batch([{"order_id": f"o{i % 3}", "v": i} for i in range(60)])
        assert all(o.ok for o in sink.write_batch(records, Ordering.PER_KEY))
        assert all(o.ok for o in sink.write_batch(records[20:], Ordering.PER_KEY))
        assert len(table_items(ddb, table)) == 60

    def test_a_late_copy_of_a_batch_leaves_every_item_byte_identical(self, ddb, unique):
        # A worker paused past its lease finishes its batch after the new owner wrote it:
        # the late copy must change nothing, not even a time a reader takes as the write's.
        table = make_table(ddb, f"events-{unique}", append=True)
        records = batch([{"order_id": f"o{i % 7}", "v": i, "f": 0.1} for i in range(40)])
        first = DynamoDBSink(
            "events", table=table, key="order_id", mode="append", client=ddb, now=lambda: 1.0
        )
        assert all(o.ok for o in first.write_batch(records, Ordering.PER_KEY))
        before = sorted(table_items(ddb, table), key=repr)
        late = DynamoDBSink(
            "events", table=table, key="order_id", mode="append", client=ddb, now=lambda: 9.0
        )
        assert all(o.ok for o in late.write_batch(records, Ordering.PER_KEY))
        assert sorted(table_items(ddb, table), key=repr) == before
        assert len(before) == 40
        assert {i["_arrival"]["N"] for i in before} == {str(r.arrival) for r in records}
        assert all("_written_at" not in i for i in before)

    def test_fan_out_duplicates_of_one_position_never_share_a_call(self, ddb, unique):
        table = make_table(ddb, f"events-{unique}", append=True)
        sink = DynamoDBSink("events", table=table, key="order_id", mode="append", client=ddb)
        (record,) = batch([{"order_id": "o1", "v": 1}])
        twins = [
            record.derive({"order_id": "o1", "v": 2}),
            record.derive({"order_id": "o1", "v": 3}),
        ]
        assert all(o.ok for o in sink.write_batch(twins))
        (item,) = table_items(ddb, table)
        assert item["v"]["N"] == "3"


class TestNumericKeys:
    """The tables deploy makes for a sink are keyed by a string (deploy.aws.cloudformation);
    a key field of numbers is written as their text, never refused record by record."""

    @pytest.mark.parametrize("mode", ["latest", "append"])
    def test_a_number_in_the_key_field_is_written_as_its_text(self, ddb, unique, mode):
        table = make_table(ddb, f"orders-{unique}", append=mode == "append")
        sink = DynamoDBSink("orders", table=table, key="order_id", mode=mode, client=ddb)
        outcomes = sink.write_batch(batch([{"order_id": 1042, "n": 1}, {"order_id": 2.5}]))
        assert [o.status for o in outcomes] == [Status.OK, Status.OK]
        items = table_items(ddb, table)
        assert sorted(i["order_id"]["S"] for i in items) == ["1042", "2.5"]
        assert [i["n"] for i in items if "n" in i] == [{"N": "1"}]  # other fields stay numbers

    def test_one_number_written_two_ways_is_one_latest_item(self, ddb, unique):
        table = make_table(ddb, f"orders-{unique}", append=False)
        sink = DynamoDBSink("orders", table=table, key="order_id", client=ddb)
        outcomes = sink.write_batch(batch([{"order_id": 7, "v": 1}, {"order_id": 7.0, "v": 2}]))
        assert [o.status for o in outcomes] == [Status.OK, Status.OK]
        (item,) = table_items(ddb, table)
        assert (item["order_id"], item["v"]) == ({"S": "7"}, {"N": "2"})

    def test_a_lookup_on_the_sink_s_table_finds_what_it_wrote_under_a_number(self, ddb, unique):
        """A function that enriches from a table another sink writes, by the same numeric
        field: the plan asks the lookup for the number's text (found in review: it asked for
        a DynamoDB number, never found the item, and the record went on unenriched)."""
        from deploy.pipeline.config import compile_plan, parse_config  # noqa: PLC0415
        from processors.lookup import Lookup  # noqa: PLC0415

        table = make_table(ddb, f"orders-{unique}", append=False)
        sink = DynamoDBSink("orders", table=table, key="order_id", client=ddb)
        assert sink.write_batch(batch([{"order_id": 1042, "v": 1}]))[0].ok
        text = (
            f"name: p\nstream: {{name: s}}\nsinks:\n  orders: {{type: dynamodb, table: {table},"
            " key: order_id, mode: latest}\n  out: {type: stdout}\nfunctions:\n  main:\n"
            "    processors:\n      - enrich:\n          lookup: {table: TABLE, key: order_id,"
            " into: order, on_miss: dead_letter}\n    route: [out]\n"
        )
        for looked, expected in ((table, "text"), ("elsewhere", None)):
            plan = compile_plan(parse_config(text.replace("TABLE", looked), env={}))
            (step,) = plan["functions"]["main"]["processors"]
            assert step["enrich"]["lookup"].get("number_keys") == expected
        plan = compile_plan(parse_config(text.replace("TABLE", table), env={}))
        spec = dict(plan["functions"]["main"]["processors"][0]["enrich"]["lookup"])
        lookup = Lookup(**spec, client=ddb)
        (record,) = batch([{"order_id": 1042}])
        lookup.prepare([record])
        assert lookup(record).as_dict()["order"]["v"] == 1


class TestClassification:
    @pytest.fixture(params=["validated", "runtime"])
    def ddb(
        self,
        request: pytest.FixtureRequest,
        aws: Any,
        moto_endpoint: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> Any:
        """Both clients: the test's own (botocore validates) and the runtime's shared one
        a sink uses by default, without botocore's parameter validation
        (``aws_client(validated=False)``): DynamoDB's refusals, and the reasons and
        statuses made of them, must be the same through either."""
        if request.param == "validated":
            return aws("dynamodb")
        monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        client = aws_client("dynamodb", validated=False)
        assert DynamoDBSink("s", table="t", key="k").client is client  # what a sink gets
        return client

    def test_an_item_over_400_kb_is_permanent_and_does_not_fail_its_neighbours(self, ddb, unique):
        table = make_table(ddb, f"orders-{unique}", append=False)
        sink = DynamoDBSink("orders", table=table, key="order_id", client=ddb)
        records = batch([{"order_id": "big", "blob": "x" * 420_000}, {"order_id": "ok", "v": 1}])
        big, fine = sink.write_batch(records)
        assert big.status is Status.PERMANENT
        assert "400 KB" in big.reason
        assert fine.ok
        assert [i["order_id"]["S"] for i in table_items(ddb, table)] == ["ok"]

    def test_a_refused_newest_record_leaves_the_newest_accepted_one_in_the_item(self, ddb, unique):
        # 10**130 is beyond DynamoDB's number range: only that record is refused.
        table = make_table(ddb, f"orders-{unique}", append=False)
        sink = DynamoDBSink("orders", table=table, key="order_id", client=ddb)
        docs = [{"order_id": "o1", "n": n} for n in range(1, 21)]
        docs.append({"order_id": "o1", "n": 10**130})
        outcomes = sink.write_batch(exact_batch(docs))
        assert [o.status for o in outcomes] == [Status.OK] * 20 + [Status.PERMANENT]
        assert outcomes[-1].error == "ValidationException"
        (item,) = table_items(ddb, table)
        assert item["n"] == {"N": "20"}

    def test_each_refused_record_of_a_key_falls_back_to_the_next_older_one(self, ddb, unique):
        table = make_table(ddb, f"orders-{unique}", append=False)
        sink = DynamoDBSink("orders", table=table, key="order_id", client=ddb)
        huge = 10**130
        docs = [
            {"order_id": "a", "n": 1},
            {"order_id": "b", "n": huge},
            {"order_id": "a", "n": 2},
            {"order_id": "a", "n": huge},
            {"order_id": "a", "n": huge},
        ]
        outcomes = sink.write_batch(exact_batch(docs))
        assert [o.status for o in outcomes] == [
            Status.OK,
            Status.PERMANENT,
            Status.OK,
            Status.PERMANENT,
            Status.PERMANENT,
        ]
        assert {i["order_id"]["S"]: i["n"]["N"] for i in table_items(ddb, table)} == {"a": "2"}

    def test_a_refused_record_older_than_the_stored_item_changes_nothing(self, ddb, unique):
        table = make_table(ddb, f"orders-{unique}", append=False)
        sink = DynamoDBSink("orders", table=table, key="order_id", client=ddb)
        f = EventFactory()
        first = batch([{"order_id": "a", "n": 1}, {"order_id": "a", "n": 2}], f)
        sink.write_batch(first)
        later = exact_batch([{"order_id": "a", "n": 3}, {"order_id": "a", "n": 10**130}], f)
        assert [o.status for o in sink.write_batch(later)] == [Status.OK, Status.PERMANENT]
        assert [o.status for o in sink.write_batch(first)] == [Status.OK, Status.OK]  # replay
        (item,) = table_items(ddb, table)
        assert item["n"] == {"N": "3"}

    def test_a_missing_key_is_permanent_with_the_field_named(self, ddb, unique):
        table = make_table(ddb, f"orders-{unique}", append=False)
        sink = DynamoDBSink("orders", table=table, key="order_id", client=ddb)
        (outcome,) = sink.write_batch(batch([{"order_id": ""}]))
        assert outcome.status is Status.PERMANENT
        assert "'order_id'" in outcome.reason

    def test_one_invalid_item_does_not_fail_the_other_items_of_its_batch_write(self, ddb, unique):
        # A number beyond DynamoDB's range: DynamoDB refuses the whole call.
        table = make_table(ddb, f"events-{unique}", append=True)
        sink = DynamoDBSink("events", table=table, key="order_id", mode="append", client=ddb)
        docs = [{"order_id": "a"}, {"order_id": "b", "n": 10**130}, {"order_id": "c"}]
        first, bad, last = sink.write_batch(exact_batch(docs))
        assert first.ok
        assert last.ok
        assert bad.status is Status.PERMANENT
        assert bad.error == "ValidationException"
        assert sorted(i["order_id"]["S"] for i in table_items(ddb, table)) == ["a", "c"]

    def test_append_a_refused_record_fails_alone(self, ddb, unique):
        table = make_table(ddb, f"events-{unique}", append=True)
        sink = DynamoDBSink("events", table=table, key="order_id", mode="append", client=ddb)
        docs = [{"order_id": "o1", "n": n} for n in range(1, 6)]
        docs.append({"order_id": "o1", "n": 10**130})
        outcomes = sink.write_batch(exact_batch(docs))
        assert [o.status for o in outcomes] == [Status.OK] * 5 + [Status.PERMANENT]
        assert sorted(int(i["n"]["N"]) for i in table_items(ddb, table)) == [1, 2, 3, 4, 5]

    @pytest.mark.parametrize("mode", ["latest", "append"])
    def test_a_record_nested_past_the_recursion_limit_is_permanent_not_raised(
        self, ddb, unique, mode
    ):
        table = make_table(ddb, f"orders-{unique}", append=mode == "append")
        sink = DynamoDBSink("orders", table=table, key="order_id", mode=mode, client=ddb)
        deep = b'{"order_id": "deep", "v": ' + b"[" * 1000 + b"]" * 1000 + b"}"
        f = EventFactory()
        records = records_from_event(f.event([f.raw(deep, "deep"), f.record({"order_id": "o"})]))
        bad, fine = sink.write_batch(records)
        assert bad.status is Status.PERMANENT
        assert "32 levels" in bad.reason
        assert fine.ok

    @pytest.mark.parametrize("mode", ["latest", "append"])
    def test_a_missing_table_is_retryable_at_once_and_stops_the_batch(self, aws, unique, mode):
        # Not the records' fault (stream.faults): never dead-lettered, never retried in the
        # sink (retrying cannot create the table), and no further call for other keys.
        calls: list[str] = []
        ddb = aws("dynamodb")
        ddb.meta.events.register(
            "before-call.dynamodb", lambda model, **_: calls.append(model.name)
        )
        sleeps: list[float] = []
        sink = DynamoDBSink(
            "orders", table=f"nope-{unique}", key="order_id", mode=mode, client=ddb,
            sleep=sleeps.append,
        )  # fmt: skip
        records = batch([{"order_id": f"o{i}"} for i in range(25 * 2 * WAVE_WIDTH)])
        with overlapping(False):  # calls in turn
            outcomes = sink.write_batch(records[:40])
        assert {o.status for o in outcomes} == {Status.RETRYABLE}
        assert outcomes[0].error == "ResourceNotFoundException"
        assert f"nope-{unique}" in outcomes[0].reason
        assert outcomes[-1].error == "HeldBack"  # the first key's (or chunk's) call only
        assert len(calls) == 1
        assert sleeps == []

        calls.clear()  # calls at once: the first wave's, then none
        outcomes = sink.write_batch(records)
        assert {o.status for o in outcomes} == {Status.RETRYABLE}
        assert outcomes[-1].error == "HeldBack"
        assert len(calls) == (ITEM_WAVE_WIDTH if mode == "latest" else WAVE_WIDTH)
        assert sleeps == []

    def test_an_unreachable_endpoint_is_retryable(self, unique):
        import boto3  # noqa: PLC0415
        from botocore.config import Config  # noqa: PLC0415

        dead = boto3.client(
            "dynamodb",
            endpoint_url="http://127.0.0.1:9",
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
            config=Config(retries={"max_attempts": 1}, connect_timeout=1),
        )
        sink = DynamoDBSink(
            "orders", table="t", key="order_id", client=dead, max_attempts=2, sleep=lambda _: None
        )
        (outcome,) = sink.write_batch(batch([{"order_id": "o1"}]))
        assert outcome.status is Status.RETRYABLE

    @pytest.mark.parametrize(("mode", "count"), [("latest", 5), ("append", 60)])
    def test_an_unreachable_endpoint_costs_one_call_s_attempts_not_one_per_key(self, mode, count):
        import boto3  # noqa: PLC0415
        from botocore.config import Config  # noqa: PLC0415

        dead = boto3.client(
            "dynamodb",
            endpoint_url="http://127.0.0.1:9",
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
            config=Config(retries={"total_max_attempts": 1}, connect_timeout=1),
        )
        sleeps: list[float] = []
        options: dict[str, Any] = {"mode": mode, "max_attempts": 2, "sleep": sleeps.append}
        sink = DynamoDBSink("orders", table="t", key="order_id", client=dead, **options)
        with overlapping(False):  # calls in turn; at once, the first wave's (see above)
            outcomes = sink.write_batch(batch([{"order_id": f"o{i}"} for i in range(count)]))
        assert {o.status for o in outcomes} == {Status.RETRYABLE}
        assert "unreachable" in outcomes[0].reason
        assert outcomes[-1].error == "HeldBack"
        assert len(sleeps) == 1  # the first key's (or chunk's) two attempts, then no more


def test_importing_the_sink_module_imports_no_client_library():
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    code = "import sys, sinks.dynamodb; print('boto3' in sys.modules, 'botocore' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert out.stdout.split() == ["False", "False"]
