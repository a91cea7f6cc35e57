"""Errors that are not the records' fault, through the Lambda handler against a real moto
server: a missing lookup table, sink table or dead-letter queue, and no region, fail the
batch for retry (every record in ``batchItemFailures``) instead of dead-lettering it; a
poison record in a healthy pipeline is still dead-lettered (stream.faults)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
import pytest

import stream.lambda_handler as lh
from deploy.config import load_plan_from_file
from deploy.readback import dead_letters, table_items
from stream.aws import reset_clients
from stream.testing import EventFactory

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

pytestmark = pytest.mark.integration

PIPELINE = """\
name: infra
stream: {name: infra-events}
sinks:
  orders: {type: dynamodb, table: "${ORDERS}", key: order_id, mode: latest}
  dlq: {type: sqs, queue: "${DLQ}"}
functions:
  main:
    ordering: per_key
    on_failure: dlq
    processors:
      - enrich:
          lookup: {table: "${USERS}", key: user_id, into: user, on_miss: keep}
    route: [orders]
"""


class Typo:
    """A plugin step with a bug: ``record.jsn`` raises AttributeError for every record."""

    def __call__(self, record: Any) -> Any:
        record.jsn["seen"] = True
        return record


def make_event() -> dict[str, Any]:
    """Six orders of three users, and one record that is not JSON (index 3)."""
    f = EventFactory(stream="infra-events")
    entries = [
        f.record({"order_id": f"o{i}", "user_id": f"u{i % 3}"}, f"u{i % 3}") for i in range(6)
    ]
    entries.insert(3, f.raw(b"GET / HTTP/1.1", "u9"))
    return f.event(entries)


def sequence_numbers(event: dict[str, Any]) -> list[str]:
    return [r["kinesis"]["sequenceNumber"] for r in event["Records"]]


def reported(response: dict[str, Any]) -> list[str]:
    return [item["itemIdentifier"] for item in response["batchItemFailures"]]


class Pipeline:
    """The pipeline above with its own resources; ``handler`` runs the real Lambda handler
    (cold start, then one invocation) with the environment the test chose."""

    def __init__(
        self,
        aws: Callable[[str], Any],
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        endpoint: str,
        unique: str,
    ) -> None:
        self.aws = aws
        self.tmp_path = tmp_path
        self.monkeypatch = monkeypatch
        self.names = {
            "ORDERS": f"orders-{unique}",
            "USERS": f"users-{unique}",
            "DLQ": f"dlq-{unique}",
        }
        for name, value in {
            "AWS_ENDPOINT_URL": endpoint,
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

    def create(self, *, orders: bool = True, users: bool = True, dlq: bool = True) -> None:
        ddb = self.aws("dynamodb")
        for table, key, wanted in (
            (self.names["ORDERS"], "order_id", orders),
            (self.names["USERS"], "user_id", users),
        ):
            if wanted:
                ddb.create_table(
                    TableName=table,
                    KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
                    AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
                    BillingMode="PAY_PER_REQUEST",
                )
        if dlq:
            self.aws("sqs").create_queue(QueueName=self.names["DLQ"])

    def handler(self, event: dict[str, Any], text: str = PIPELINE) -> dict[str, Any]:
        source = self.tmp_path / "pipeline.yaml"
        source.write_text(text)
        plan_file = self.tmp_path / "plan.json"
        plan_file.write_bytes(orjson.dumps(load_plan_from_file(source, env=self.names)))
        self.monkeypatch.setenv("SHARDLINE_PIPELINE", str(plan_file))
        self.monkeypatch.setattr(lh, "_runner", None)
        reset_clients()
        return dict(lh.handler(event, None))

    def letters(self) -> list[dict[str, Any]]:
        return dead_letters(self.aws("sqs"), self.names["DLQ"])

    def orders(self) -> list[str]:
        items = table_items(self.aws("dynamodb"), self.names["ORDERS"])
        return sorted(i["order_id"]["S"] for i in items)


@pytest.fixture
def pipeline(
    aws: Callable[[str], Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    moto_endpoint: str,
    unique: str,
) -> Iterator[Pipeline]:
    yield Pipeline(aws, tmp_path, monkeypatch, moto_endpoint, unique)
    lh._runner = None  # the next test builds its own
    reset_clients()


class TestInfrastructureErrors:
    def test_a_healthy_pipeline_dead_letters_only_the_poison_record(self, pipeline):
        pipeline.create()
        event = make_event()
        assert pipeline.handler(event) == {"batchItemFailures": []}
        (letter,) = pipeline.letters()
        assert letter["error"] == "DecodeError"
        assert pipeline.orders() == [f"o{i}" for i in range(6)]

    def test_a_missing_lookup_table_reports_the_batch_and_dead_letters_nothing(self, pipeline):
        pipeline.create(users=False)
        event = make_event()
        response = pipeline.handler(event)
        # every record that reached the lookup: the poison record failed before it, alone
        assert reported(response) == [s for i, s in enumerate(sequence_numbers(event)) if i != 3]
        assert pipeline.orders() == []
        assert [x["error"] for x in pipeline.letters()] == ["DecodeError"]

    def test_a_missing_sink_table_reports_the_batch_and_dead_letters_nothing(self, pipeline):
        pipeline.create(orders=False)
        event = make_event()
        response = pipeline.handler(event)
        assert reported(response) == [s for i, s in enumerate(sequence_numbers(event)) if i != 3]
        assert [x["error"] for x in pipeline.letters()] == ["DecodeError"]

    def test_a_missing_dead_letter_queue_reports_the_poison_record_not_loses_it(self, pipeline):
        pipeline.create(dlq=False)
        event = make_event()
        response = pipeline.handler(event)
        assert reported(response) == [sequence_numbers(event)[3]]
        assert pipeline.orders() == [f"o{i}" for i in range(6)]

    def test_no_region_reports_the_batch(self, pipeline, monkeypatch):
        pipeline.create()
        monkeypatch.delenv("AWS_DEFAULT_REGION")
        monkeypatch.delenv("AWS_REGION")
        event = make_event()
        response = pipeline.handler(event)
        assert reported(response) == sequence_numbers(event)
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        assert pipeline.letters() == []

    def test_a_plugin_step_failing_every_record_alike_reports_the_batch(self, pipeline):
        pipeline.create()
        plugin = "      - use: tests.integration.test_infrastructure_errors:Typo\n"
        text = PIPELINE.replace("    processors:\n", "    processors:\n" + plugin)
        event = make_event()
        response = pipeline.handler(event, text)
        assert reported(response) == sequence_numbers(event)
        assert pipeline.letters() == []
        assert pipeline.orders() == []
