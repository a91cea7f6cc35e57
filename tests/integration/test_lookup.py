"""The lookup enricher against a real moto server: bulk keys, the warm cache, on_miss, failures."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
import pytest

from processors.chain import Chain, Step
from processors.enrich import Enrich, EnrichLookup
from processors.lookup import Lookup, LookupMiss, LookupUnavailable
from processors.registry import build_processor
from sinks.memory import MemorySink
from stream.batch import BatchRunner
from stream.event import records_from_event
from stream.overlap import overlapping
from stream.testing import EventFactory

if TYPE_CHECKING:
    from stream.records import Record

pytestmark = pytest.mark.integration

STEP = "processors[0].enrich"


class Counting:
    """The real client, counting the keys of each BatchGetItem call on the way through."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: list[int] = []

    def batch_get_item(self, **kwargs: Any) -> Any:
        (request,) = kwargs["RequestItems"].values()
        self.calls.append(len(request["Keys"]))
        return self.client.batch_get_item(**kwargs)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make_table(ddb: Any, name: str, key: str = "user_id", kind: str = "S") -> str:
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": key, "AttributeType": kind}],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


def user_item(i: int, key: str = "user_id") -> dict[str, Any]:
    return {
        key: {"S": f"user-{i:03d}"},
        "name": {"S": f"name {i}"},
        "visits": {"N": str(i)},
        "ratio": {"N": "0.25"},
        "tags": {"SS": ["b", "a"]},
        "avatar": {"B": bytes([i, 255])},
        "prefs": {"M": {"lang": {"S": "en"}, "ids": {"L": [{"N": "1"}]}}},
    }


def expected_user(i: int, key: str = "user_id") -> dict[str, Any]:
    import base64  # noqa: PLC0415  # only here

    return {
        key: f"user-{i:03d}",
        "name": f"name {i}",
        "visits": i,
        "ratio": 0.25,
        "tags": ["a", "b"],
        "avatar": base64.b64encode(bytes([i, 255])).decode(),
        "prefs": {"lang": "en", "ids": [1]},
    }


def put(ddb: Any, table: str, items: list[dict[str, Any]]) -> None:
    for start in range(0, len(items), 25):
        chunk = items[start : start + 25]
        ddb.batch_write_item(RequestItems={table: [{"PutRequest": {"Item": i}} for i in chunk]})


def batch(docs: list[dict[str, Any]], factory: EventFactory | None = None) -> list[Record]:
    f = factory or EventFactory()
    return records_from_event(f.batch((str(d.get("user_id")), d) for d in docs))


def chain(step: Any) -> Chain:
    return Chain([Step.of(STEP, step)])


@pytest.fixture
def ddb(aws: Any) -> Any:
    return aws("dynamodb")


@pytest.fixture
def users(ddb: Any, unique: str) -> str:
    """A table with user-000 .. user-099."""
    table = make_table(ddb, f"users-{unique}")
    put(ddb, table, [user_item(i) for i in range(100)])
    return table


class TestBulk:
    def test_250_records_of_120_ids_take_two_calls_and_get_their_items(self, ddb, users):
        client = Counting(ddb)
        step = Enrich(lookup=Lookup(users, "user_id", "user", client=client, now=Clock()))
        docs = [{"user_id": f"user-{i % 120:03d}", "n": i} for i in range(250)]
        result = chain(step).run(batch(docs))
        assert sorted(client.calls) == [20, 100]  # the two chunks go at once: either first
        assert len(result.records) == 250
        assert not result.failures
        for rec in result.records:
            i = int(rec.json["user_id"][5:])
            if i < 100:
                assert rec.json["user"] == expected_user(i)
            else:
                assert "user" not in rec.json  # on_miss keep: unchanged

    def test_a_warm_batch_is_served_from_the_cache_until_the_ttl_passes(self, ddb, users):
        client, clock = Counting(ddb), Clock()
        step = chain(Lookup(users, "user_id", "user", ttl_s=300, client=client, now=clock))
        docs = [{"user_id": f"user-{i % 120:03d}"} for i in range(250)]
        step.run(batch(docs))
        clock.t = 59.0
        warm = step.run(batch(docs))
        assert sorted(client.calls) == [20, 100]  # the cold batch's two chunks, at once
        assert warm.records[7].json["user"] == expected_user(7)
        clock.t = 60.0  # misses are kept min(ttl_s, 60) s: only the 20 misses are asked again
        step.run(batch(docs))
        assert client.calls[2:] == [20]
        clock.t = 300.0
        step.run(batch(docs))
        assert len(client.calls) == 5
        assert sorted(client.calls[3:]) == [20, 100]

    def test_unprocessed_keys_from_a_response_over_16_mb_are_fetched_again(self, ddb, unique):
        table = make_table(ddb, f"big-{unique}")
        blob = "x" * 380_000
        put(ddb, table, [{"user_id": {"S": f"b{i}"}, "blob": {"S": blob}} for i in range(45)])
        client = Counting(ddb)
        result = chain(Lookup(table, "user_id", "item", client=client, sleep=lambda _: None)).run(
            batch([{"user_id": f"b{i}"} for i in range(45)])
        )
        assert client.calls[0] == 45
        assert len(client.calls) >= 2
        assert sum(client.calls[1:]) >= 1
        assert all(len(r.json["item"]["blob"]) == 380_000 for r in result.records)
        assert len(result.records) == 45

    def test_number_keys_and_a_table_key_named_differently(self, ddb, unique):
        table = make_table(ddb, f"accounts-{unique}", key="id", kind="N")
        put(ddb, table, [{"id": {"N": str(i)}, "plan": {"S": f"p{i}"}} for i in (1, 2, 10**15)])
        step = Lookup(table, "account", "acct", table_key="id", client=ddb)
        docs = [{"account": 1}, {"account": 2.0}, {"account": 10**15}, {"account": 3}]
        result = chain(step).run(batch(docs))
        assert [r.json.get("acct", {}).get("plan") for r in result.records] == [
            "p1",
            "p2",
            "p1000000000000000",
            None,
        ]
        assert result.records[0].json["acct"]["id"] == 1


class TestOnMiss:
    @pytest.mark.parametrize("on_miss", ["keep", "drop", "dead_letter"])
    def test_misses_through_the_batch_runner(self, ddb, users, on_miss):
        out, dlq = MemorySink("out"), MemorySink("dlq")
        step = Enrich(set={"p": 1}, lookup=Lookup(users, "user_id", "user", on_miss, client=ddb))
        runner = BatchRunner(
            chain(step), {"out": out, "dlq": dlq}, default_route=["out"], on_failure="dlq"
        )
        docs = [
            {"user_id": "user-001"},
            {"user_id": "ghost"},
            {"other": 1},
            {"user_id": "user-002"},
        ]
        result = runner.run(batch(docs))
        assert result.response == {"batchItemFailures": []}
        docs_out = [orjson.loads(data) for _, data in out.latest.values()]
        written = {doc.get("user_id", "-"): doc for doc in docs_out}
        assert written["user-001"]["user"] == expected_user(1)
        assert written["user-001"]["p"] == 1
        if on_miss == "keep":
            assert result.written == {"out": 4}
            assert written["ghost"] == {"user_id": "ghost", "p": 1}
        elif on_miss == "drop":
            assert result.written == {"out": 2}
            assert result.dropped == {STEP: 2}
        else:
            assert result.written == {"out": 2}
            why = {d.record.json.get("user_id", "-"): d.reason for d in result.dead_letters}
            assert len(why) == 2
            assert f"no item with user_id='ghost' in DynamoDB table {users!r}" in why["ghost"]
            assert "has no field 'user_id'" in why["-"]
            assert {letter.error for letter in result.dead_letters} == {LookupMiss.__name__}


class TestFailures:
    def test_a_missing_table_fails_each_record_retryably_with_the_table_named(self, ddb, unique):
        client = Counting(ddb)
        step = Lookup(f"nope-{unique}", "user_id", "user", client=client)
        with overlapping(False):  # in turn; at once, the first wave's calls (test_lookup)
            result = chain(step).run(batch([{"user_id": f"u{i}"} for i in range(150)]))
        assert client.calls == [100]  # the second call would fail alike: not made
        assert len(result.failures) == 150
        assert all(f.retryable for f in result.failures)  # not the records' fault
        error = result.failures[0].error
        assert isinstance(error, LookupUnavailable)
        assert f"nope-{unique}" in str(error)
        assert "ResourceNotFoundException" in str(error)

    def test_the_table_created_later_is_used_at_once_failures_are_not_cached(self, ddb, unique):
        step = chain(Lookup(f"late-{unique}", "user_id", "user", client=ddb))
        assert step.run(batch([{"user_id": "user-001"}])).failures
        put(ddb, make_table(ddb, f"late-{unique}"), [user_item(1)])
        (rec,) = step.run(batch([{"user_id": "user-001"}])).records
        assert rec.json["user"] == expected_user(1)

    def test_an_unreachable_endpoint_makes_the_records_retryable(self):
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
        step = Lookup("users", "user_id", "user", client=dead, sleep=lambda _: None)
        records = batch([{"user_id": f"u{i}"} for i in range(3)])
        runner = BatchRunner(chain(step), {"out": MemorySink("out")}, default_route=["out"])
        result = runner.run(records)
        assert sorted(i["itemIdentifier"] for i in result.response["batchItemFailures"]) == sorted(
            r.sequence_number for r in records
        )
        assert all("unreachable" in why for why in result.failed.values())
        direct = chain(step).run(records)
        assert all(f.retryable and isinstance(f.error, LookupUnavailable) for f in direct.failures)


def test_the_registry_builds_a_lookup_whose_default_client_reaches_the_table(
    ddb, users, moto_endpoint, monkeypatch
):
    """From the plan form, with boto3's own default client (endpoint from the environment)."""
    import boto3  # noqa: PLC0415

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # a fresh default session, restored after
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    lookup = {"table": users, "key": "user_id", "into": "user", "on_miss": "drop", "ttl_s": None}
    step = build_processor(0, {"enrich": {"lookup": lookup, "set": {"user": {"overridden": True}}}})
    assert isinstance(step.processor, EnrichLookup)
    result = Chain([step]).run(batch([{"user_id": "user-005"}, {"user_id": "ghost"}]))
    (rec,) = result.records
    assert rec.json["user"] == {"overridden": True}  # lookup first, then set
    assert result.dropped == {STEP: 1}
