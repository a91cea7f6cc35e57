"""The Glue Schema Registry end to end against moto's registry over the moto server: records
produced with the registry header by the producer (and by hand, for the broken ones) are
read from the stream and handled by the real Lambda handler. Conforming records reach the
DynamoDB sink as documents; records with no header, an unknown version id, a version of
another schema or a payload that breaks the version are dead-lettered with the reason;
Glue throttling or denying access fails the batch for retry and dead-letters nothing.

Glue's calls go through a :class:`tests.faultproxy.FaultProxy` (``AWS_ENDPOINT_URL_GLUE``),
which counts ``GetSchemaVersion`` requests per version id as they cross the wire, and injects
the throttles and denials; every other service goes to moto directly.
"""

from __future__ import annotations

import base64
import json
import struct
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any

import orjson
import pytest

import stream.lambda_handler as lh
from deploy.local.readback import dead_letters, table_items
from deploy.pipeline.config import load_plan_from_file
from processors.glue_registry import (
    UNAVAILABLE_TTL_S,
    VERSIONS,
    RegistrySchema,
    encode_header,
)
from stream.aws import reset_clients
from stream.producer import CONTRACT_ERROR, Producer
from tests.faultproxy import THROTTLING, Fault, FaultProxy, aws_json_error
from tests.integration.test_producer import lambda_event, make_stream, no_sleep, read_shard

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from tests.faultproxy import Request

pytestmark = pytest.mark.integration

PIPELINE = """\
name: registry
stream: {name: "${STREAM}"}
sinks:
  orders: {type: dynamodb, table: "${ORDERS}", key: order_id, mode: latest}
  dlq: {type: sqs, queue: "${DLQ}"}
functions:
  main:
    on_failure: dlq
    processors:
      - schema: {registry: {name: orders, registry: "${REGISTRY}"}}
      - filter: {expr: "total > `0`"}
    route: [orders]
"""

ORDER_V1 = {
    "type": "record",
    "name": "Order",
    "fields": [
        {"name": "order_id", "type": "string"},
        {"name": "total", "type": "double"},
    ],
}
ORDER_V2 = {
    **ORDER_V1,
    "fields": [
        *ORDER_V1["fields"],
        {"name": "coupon", "type": ["null", "string"], "default": None},
    ],
}
EVENT_JSON = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {"order_id": {"type": "string"}, "total": {"type": "number", "minimum": 0}},
    "required": ["order_id", "total"],
}
DENIED = aws_json_error("denied", 400, "AccessDeniedException", "not authorized: GetSchemaVersion")


class Registry:
    """A test's own registry, stream, table and queue; ``handler`` runs the real Lambda
    handler (a cold start the first time, then warm) on the stream's records."""

    def __init__(
        self,
        aws: Callable[[str], Any],
        proxy: FaultProxy,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        endpoint: str,
        unique: str,
    ) -> None:
        self.aws = aws
        self.proxy = proxy
        self.tmp_path = tmp_path
        self.monkeypatch = monkeypatch
        self.names = {
            "REGISTRY": f"reg-{unique}",
            "STREAM": f"glue-{unique}",
            "ORDERS": f"orders-{unique}",
            "DLQ": f"dlq-{unique}",
        }
        for name, value in {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ENDPOINT_URL_GLUE": proxy.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        }.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        monkeypatch.delenv("SHARDLINE_FUNCTION", raising=False)
        monkeypatch.setenv("SHARDLINE_METRICS", "0")
        #: GetSchemaVersion requests that reached the proxy, by the version id they asked.
        self.asked: Counter[str] = Counter()
        proxy.inject(DENIED, target="GetSchemaVersion", where=self._count)  # never fires
        glue = aws("glue")
        registry = self.names["REGISTRY"]
        glue.create_registry(RegistryName=registry)
        self.v1 = self._schema("orders", "AVRO", ORDER_V1)
        self.v2 = glue.register_schema_version(
            SchemaId={"RegistryName": registry, "SchemaName": "orders"},
            SchemaDefinition=json.dumps(ORDER_V2),
        )["SchemaVersionId"]
        self.other = self._schema("other", "AVRO", ORDER_V1)
        self.events = self._schema("events", "JSON", EVENT_JSON)
        self.kinesis = aws("kinesis")
        make_stream(self.kinesis, self.names["STREAM"], shards=1)
        aws("dynamodb").create_table(
            TableName=self.names["ORDERS"],
            KeySchema=[{"AttributeName": "order_id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "order_id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        aws("sqs").create_queue(QueueName=self.names["DLQ"])
        self.pipeline = PIPELINE

    def _count(self, request: Request) -> bool:
        self.asked[orjson.loads(request.body).get("SchemaVersionId", "(by name)")] += 1
        return False

    def _schema(self, name: str, data_format: str, definition: Any) -> str:
        created = self.aws("glue").create_schema(
            RegistryId={"RegistryName": self.names["REGISTRY"]},
            SchemaName=name,
            DataFormat=data_format,
            Compatibility="NONE",
            SchemaDefinition=json.dumps(definition),
        )
        return str(created["SchemaVersionId"])

    def producer(self, reference: RegistrySchema) -> Producer:
        return Producer(self.names["STREAM"], self.kinesis, schema=reference, sleep=no_sleep)

    def put_raw(self, data: bytes, key: str = "raw") -> None:
        self.kinesis.put_record(StreamName=self.names["STREAM"], Data=data, PartitionKey=key)

    def event(self) -> dict[str, Any]:
        stream = self.names["STREAM"]
        (shard,) = self.kinesis.list_shards(StreamName=stream)["Shards"]
        records = read_shard(self.kinesis, stream, shard["ShardId"])
        return dict(lambda_event(stream, shard["ShardId"], records))

    def handler(self, event: dict[str, Any], *, cold: bool = True) -> dict[str, Any]:
        if cold:
            source = self.tmp_path / "pipeline.yaml"
            source.write_text(self.pipeline)
            plan_file = self.tmp_path / "plan.json"
            plan_file.write_bytes(orjson.dumps(load_plan_from_file(source, env=self.names)))
            self.monkeypatch.setenv("SHARDLINE_PIPELINE", str(plan_file))
            self.monkeypatch.setattr(lh, "_runner", None)
            reset_clients()
        return dict(lh.handler(event, None))

    def letters(self) -> list[dict[str, Any]]:
        return dead_letters(self.aws("sqs"), self.names["DLQ"])

    def orders(self) -> dict[str, dict[str, Any]]:
        items = table_items(self.aws("dynamodb"), self.names["ORDERS"])
        return {i["order_id"]["S"]: i for i in items}


@pytest.fixture
def registry(
    aws: Callable[[str], Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    moto_endpoint: str,
    unique: str,
) -> Iterator[Registry]:
    VERSIONS.clear()  # the process's cache: each test counts its own fetches
    with FaultProxy(moto_endpoint) as proxy:
        yield Registry(aws, proxy, tmp_path, monkeypatch, moto_endpoint, unique)
    lh._runner = None  # the next test builds its own
    VERSIONS.clear()
    reset_clients()


def reported(response: dict[str, Any]) -> list[str]:
    return [item["itemIdentifier"] for item in response["batchItemFailures"]]


def reasons(letters: list[dict[str, Any]]) -> dict[str, str]:
    """Each dead letter's reason, by its partition key."""
    return {letter["partition_key"]: letter["reason"] for letter in letters}


class TestRegistryStep:
    def test_produced_records_reach_the_sink_and_broken_ones_are_dead_lettered_with_why(
        self, registry: Registry
    ):
        names = registry.names
        latest = registry.producer(RegistrySchema("orders", names["REGISTRY"], compression="zlib"))
        latest.put({"order_id": "o-1", "total": 2.5, "coupon": "SPRING"}, "o-1")
        latest.put({"order_id": "o-2", "total": "two"}, "o-2")  # refused: never sent
        result = latest.flush()
        assert [r.ok for r in result.results] == [True, False]
        assert result.failed[0].error == CONTRACT_ERROR
        assert "at Order.total: 'two' is not a double" in result.failed[0].reason
        first = registry.producer(RegistrySchema("orders", names["REGISTRY"], version=1))
        first.put({"order_id": "o-3", "total": 4.0}, "o-3")
        first.put({"order_id": "o-4", "total": 0.0}, "o-4")  # valid; the filter drops it
        first.flush()
        wire = encode_header(registry.v1)
        registry.put_raw(b'{"order_id": "o-5", "total": 1}', "no-header")
        registry.put_raw(encode_header(uuid.uuid4()) + b"\x02", "unknown-id")
        registry.put_raw(encode_header(registry.other) + b"\x06o-7\x00", "other-schema")
        registry.put_raw(wire + b"\x06o-8", "cut-short")

        assert registry.handler(registry.event()) == {"batchItemFailures": []}

        orders = registry.orders()
        assert sorted(orders) == ["o-1", "o-3"]
        assert orders["o-1"]["total"] == {"N": "2.5"}  # the Avro record became its document
        assert orders["o-1"]["coupon"] == {"S": "SPRING"}
        assert "coupon" not in orders["o-3"]  # version 1 has no coupon
        why = reasons(registry.letters())
        assert sorted(why) == ["cut-short", "no-header", "other-schema", "unknown-id"]
        assert "no Glue Schema Registry header: byte 0 is 123 ('{')" in why["no-header"]
        assert "is not in the Glue Schema Registry (EntityNotFoundException" in why["unknown-id"]
        assert (
            f"is {names['REGISTRY']}/other version 1, not a version of registry"
            in (why["other-schema"])
        )
        assert f"record is not Avro of {names['REGISTRY']}/orders version 1" in why["cut-short"]

    def test_each_version_id_is_fetched_once_across_warm_invocations(self, registry: Registry):
        producer = registry.producer(RegistrySchema("orders", registry.names["REGISTRY"]))
        for n in range(20):
            producer.put({"order_id": f"o-{n}", "total": n + 1.0}, f"o-{n % 4}")
        producer.flush()
        bogus = str(uuid.uuid4())
        for n in range(3):
            registry.put_raw(encode_header(bogus) + b"\x00", f"bogus-{n}")
        event = registry.event()

        assert registry.handler(event) == {"batchItemFailures": []}
        assert registry.handler(event, cold=False) == {"batchItemFailures": []}

        # the producer asked by name, the function once per id: the latest version and the
        # unknown one (remembered as unknown), across 23 records and two invocations
        assert registry.asked == {"(by name)": 1, registry.v2: 1, bogus: 1}
        assert len(registry.orders()) == 20
        assert len(registry.letters()) == 6  # the bogus records, once per invocation

    def test_a_json_version_is_checked_and_its_violations_name_the_pointer(
        self, registry: Registry
    ):
        registry.pipeline = PIPELINE.replace("name: orders,", "name: events,").replace(
            '      - filter: {expr: "total > `0`"}\n', ""
        )
        producer = registry.producer(RegistrySchema("events", registry.names["REGISTRY"]))
        producer.put({"order_id": "e-1", "total": 3}, "e-1")
        producer.flush()
        header = encode_header(registry.events)
        registry.put_raw(header + b'{"order_id": "e-2", "total": -1}', "negative")
        registry.put_raw(header + b"{not json", "not-json")

        assert registry.handler(registry.event()) == {"batchItemFailures": []}

        assert sorted(registry.orders()) == ["e-1"]
        why = reasons(registry.letters())
        assert "at /total, keyword minimum" in why["negative"]
        assert "record is not JSON of" in why["not-json"]


class TestNotTheRecordsFault:
    def test_a_throttled_registry_fails_the_batch_for_retry_and_dead_letters_nothing(
        self, registry: Registry
    ):
        producer = registry.producer(RegistrySchema("orders", registry.names["REGISTRY"]))
        for n in range(3):
            producer.put({"order_id": f"o-{n}", "total": 1.0}, f"o-{n}")
        producer.flush()
        event = registry.event()
        rule = registry.proxy.inject(THROTTLING, target="GetSchemaVersion")

        response = registry.handler(event)

        assert reported(response) == [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
        assert registry.letters() == []
        assert registry.orders() == {}
        # three calls with backoff, then the id fails at once for the rest of the batch
        assert registry.asked[registry.v2] == 3
        registry.proxy.remove(rule)
        VERSIONS.clear()  # past UNAVAILABLE_TTL_S: the redelivery asks again
        assert registry.handler(event, cold=False) == {"batchItemFailures": []}
        assert sorted(registry.orders()) == ["o-0", "o-1", "o-2"]

    def test_access_denied_fails_the_batch_without_retrying_the_call(self, registry: Registry):
        producer = registry.producer(RegistrySchema("orders", registry.names["REGISTRY"]))
        producer.put({"order_id": "o-1", "total": 1.0}, "o-1")
        producer.put({"order_id": "o-2", "total": 1.0}, "o-2")
        producer.flush()
        event = registry.event()
        registry.proxy.clear()
        registry.proxy.inject(DENIED, target="GetSchemaVersion", where=registry._count)
        registry.proxy.inject(DENIED, target="GetSchemaVersion")

        response = registry.handler(event)

        assert len(reported(response)) == 2
        assert registry.letters() == []
        assert registry.asked[registry.v2] == 1  # retrying cannot grant a permission

    def status(self, registry: Registry, version_id: str, status: str) -> Fault:
        """Glue's own answer for ``version_id`` (moto's), with another ``Status``: moto
        registers every version AVAILABLE at once, where Glue checks compatibility first."""
        answer = registry.aws("glue").get_schema_version(SchemaVersionId=version_id)
        answer.pop("ResponseMetadata")
        body = json.dumps({**answer, "Status": status}, default=str).encode()
        return Fault(status.lower(), 200, body, (("Content-Type", "application/x-amz-json-1.1"),))

    def asks(self, version_id: str) -> Callable[[Request], bool]:
        return lambda request: orjson.loads(request.body).get("SchemaVersionId") == version_id

    def test_a_pending_version_fails_the_batch_for_retry_and_is_asked_again(
        self, registry: Registry, monkeypatch: pytest.MonkeyPatch
    ):
        clock = [0.0]
        monkeypatch.setattr(VERSIONS, "now", lambda: clock[0])
        producer = registry.producer(RegistrySchema("orders", registry.names["REGISTRY"]))
        for n in range(3):
            producer.put({"order_id": f"o-{n}", "total": 1.0}, f"o-{n}")
        producer.flush()
        event = registry.event()
        pending = registry.proxy.inject(
            self.status(registry, registry.v2, "PENDING"), where=self.asks(registry.v2)
        )

        response = registry.handler(event)

        assert reported(response) == [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
        assert registry.letters() == []
        assert registry.orders() == {}
        assert pending.fired == 1  # one call for the batch, not one per record
        # Glue has finished its checks: the warm function asks again and takes it
        registry.proxy.remove(pending)
        clock[0] += UNAVAILABLE_TTL_S
        assert registry.handler(event, cold=False) == {"batchItemFailures": []}
        assert sorted(registry.orders()) == ["o-0", "o-1", "o-2"]
        assert registry.letters() == []

    @pytest.mark.parametrize("status", ["FAILURE", "DELETING"])
    def test_a_failed_or_deleting_version_is_refused_for_good(
        self, registry: Registry, status: str
    ):
        order = b"\x06o-1" + struct.pack("<d", 1.0)  # Avro: {"order_id": "o-1", "total": 1.0}
        registry.put_raw(encode_header(registry.v1) + order, "o-1")
        event = registry.event()
        registry.proxy.inject(self.status(registry, registry.v1, status), times=1)

        assert registry.handler(event) == {"batchItemFailures": []}
        assert registry.handler(event, cold=False) == {"batchItemFailures": []}

        assert registry.orders() == {}
        why = [letter["reason"] for letter in registry.letters()]
        assert len(why) == 2
        assert all(f"is {status}, not AVAILABLE" in reason for reason in why)
        assert registry.asked[registry.v1] == 1  # remembered: a refusal is final


class TestProduceCommand:
    def test_produce_writes_the_header_and_refuses_lines_by_number(self, registry: Registry):
        from click.testing import CliRunner  # noqa: PLC0415

        from deploy.cli import main  # noqa: PLC0415

        names = registry.names
        lines = [
            orjson.dumps({"order_id": "c-1", "total": 1.5}),
            orjson.dumps({"order_id": "c-2"}),  # no total: refused
            orjson.dumps({"order_id": "c-3", "total": 2.0}),
        ]
        result = CliRunner().invoke(
            main,
            [
                "produce", names["STREAM"], "--file", "-", "--key", "order_id",
                "--schema", f"registry:{names['REGISTRY']}/orders@1", "--compression", "zlib",
                "--json",
            ],
            input=b"\n".join(lines),
        )  # fmt: skip
        assert result.exit_code == 1, result.output
        assert "-:2: refused: record 1" in result.output
        data = [base64.b64decode(r["kinesis"]["data"]) for r in registry.event()["Records"]]
        assert [d[:2] for d in data] == [b"\x03\x05", b"\x03\x05"]  # header, zlib
        assert {d[2:18] for d in data} == {uuid.UUID(registry.v1).bytes}
        assert registry.handler(registry.event()) == {"batchItemFailures": []}
        assert sorted(registry.orders()) == ["c-1", "c-3"]

    def test_an_unknown_registry_schema_is_a_usage_error(self, registry: Registry):
        from click.testing import CliRunner  # noqa: PLC0415

        from deploy.cli import main  # noqa: PLC0415

        reference = f"registry:{registry.names['REGISTRY']}/nope"
        result = CliRunner().invoke(
            main,
            ["produce", "s", "--file", "-", "--schema", reference],
            input=b"{}",
        )
        assert result.exit_code == 2, result.output
        assert "EntityNotFoundException" in result.output
