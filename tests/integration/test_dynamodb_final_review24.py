"""Review 24 of "window results written without a condition" (:class:`stream.records.FinalRecord`,
``sinks.dynamodb.DynamoDBSink._put_latest``): a ``latest`` table keyed by ``window_id`` that
another function of the same file (so of the same stream, positions comparable) also routes to.
The file is valid (``validate`` accepts it); the sink takes a window's result as its key's only
record ever, and writes it without the condition that keeps a ``latest`` item from an older
record (CONFIG.md: "one item per key, never overwritten by an older record"). Against the
session's moto server, each function built from the plan as Lambda builds it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
import pytest

from deploy.local import servers
from deploy.local.servers import provision
from deploy.pipeline.config import compile_plan, parse_config
from sinks.dynamodb import DynamoDBSink
from stream.aws import reset_clients
from stream.records import FinalRecord, Record
from stream.runtime import build_runner

if TYPE_CHECKING:
    from collections.abc import Callable

    from stream.batch import BatchResult

pytestmark = pytest.mark.integration

CREDENTIALS = {**servers.CREDENTIALS, "AWS_DEFAULT_REGION": "us-east-1"}  # the local servers'
# counts: views per user per minute into rows (and a copy of each result to a queue);
# fixes: correction events of the same stream (an operator's tool puts them in), which
# replace a window's row: one item per window_id, the newest record wins (latest)
PIPELINE = """\
name: {name}
stream: {{name: {name}}}
sinks:
  rows: {{type: dynamodb, table: {name}-rows, key: window_id, mode: latest}}
  alerts: {{type: sqs, queue: {name}-alerts}}
  dlq: {{type: sqs, queue: {name}-dlq}}
functions:
  counts:
    on_failure: dlq
    processors:
      - filter: {{match: {{kind: [view]}}}}
      - window: {{key: user, size_s: 60, field: ts, aggregate: {{n: count}}}}
    route: [rows, alerts]
  fixes:
    on_failure: dlq
    processors:
      - filter: {{match: {{kind: [fix]}}}}
    route: [rows]
"""
SHARD = "shardId-000000000000"
WID = "counts/a/1970-01-01T00:00:00Z"
#: the stream, one shard: a's two views, b's view that closes a's minute [0, 60) (seq 3),
#: then a correction of that window's row (seq 4, after the result it corrects)
STREAM = [
    {"kind": "view", "user": "a", "ts": 10},
    {"kind": "view", "user": "a", "ts": 20},
    {"kind": "view", "user": "b", "ts": 70},
    {"kind": "fix", "user": "a", "window_id": WID, "key": "a", "n": 3,
     "window_start": "1970-01-01T00:00:00Z", "window_end": "1970-01-01T00:01:00Z"},
]  # fmt: skip


@pytest.fixture
def local_env(monkeypatch: pytest.MonkeyPatch, moto_endpoint: str) -> None:
    for name, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": moto_endpoint}.items():
        monkeypatch.setenv(name, value)
    reset_clients()


def batch(first: int, last: int) -> list[Record]:
    """The stream's records ``first``..``last`` (sequence numbers, 1-based) as one batch."""
    return [
        Record(
            orjson.dumps(STREAM[seq - 1]),
            STREAM[seq - 1]["user"],
            str(seq),
            shard_id=SHARD,
            index=i,
        )
        for i, seq in enumerate(range(first, last + 1))
    ]


def invoke(plan: dict[str, Any], function: str, records: list[Record]) -> BatchResult:
    """One invocation as Lambda makes it (a cold start: the window's state in its table)."""
    runner = build_runner(plan, function, metrics=False)
    try:
        return runner.run(records)
    finally:
        for sink in runner.sinks.values():
            sink.close()


def row_n(aws: Callable[[str], Any], table: str) -> dict[str, str]:
    items = aws("dynamodb").scan(TableName=table, ConsistentRead=True)["Items"]
    return {i["window_id"]["S"]: i["n"]["N"] for i in items}


def test_a_redelivered_result_does_not_overwrite_a_newer_record_of_another_function(
    aws: Callable[[str], Any], unique: str, local_env: None
) -> None:
    name = f"r24-{unique}"
    plan: dict[str, Any] = compile_plan(
        parse_config(PIPELINE.format(name=name), source="p.yaml", env={})
    )
    provision(plan, aws)
    rows, alerts = plan["sinks"]["rows"]["table"], plan["sinks"]["alerts"]["queue"]
    sqs = aws("sqs")
    sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=alerts)["QueueUrl"])  # an outage

    # counts reads seqs 1-3: seq 3 closes a's minute; rows takes the result, alerts cannot
    first = invoke(plan, "counts", batch(1, 3))
    assert sorted(first.failed) == [2], first.failed  # seq 3 (index 2): retried by Lambda
    assert first.written.get("rows") == 1
    assert row_n(aws, rows) == {WID: "2"}

    # meanwhile fixes reads seqs 1-4 and writes the correction (seq 4) over the row
    assert not invoke(plan, "fixes", batch(1, 4)).failed
    assert row_n(aws, rows) == {WID: "3"}

    # the queue is back; Lambda delivers counts' batch again from seq 3: the window
    # yields its result again from its outbox (the same window_id, at seq 3)
    sqs.create_queue(QueueName=alerts)
    reset_clients()
    again = invoke(plan, "counts", batch(3, 4))
    assert not again.failed, again.failed

    assert row_n(aws, rows) == {WID: "3"}  # main: "2", the older result's


def test_the_conditional_write_keeps_the_newer_record_in_the_same_sequence(
    aws: Callable[[str], Any], unique: str
) -> None:
    """The twin of the test above: the same three writes (the result at seq 3, the
    correction at seq 4, the result again at seq 3) as plain records, so conditional."""
    ddb = aws("dynamodb")
    table = f"r24-twin-{unique}"
    ddb.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "window_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "window_id", "AttributeType": "S"}],
    )
    sink = DynamoDBSink("rows", table=table, key="window_id", client=ddb)
    result = Record(b"{}", "b", "3", shard_id=SHARD).final(
        {"window_id": WID, "key": "a", "n": 2}, "window_id"
    )
    assert type(result) is FinalRecord
    (fix,) = batch(4, 4)
    for record in (result, fix, result):
        assert all(o.ok for o in sink.write_batch([record.derive(record.json)]))
    assert row_n(aws, table) == {WID: "3"}


def test_only_a_table_another_function_writes_loses_the_unconditional_writes() -> None:
    """The fix's scope: ``counts`` alone on its table keeps writing its results in
    ``BatchWriteItem`` calls; beside ``fixes`` (the same table, under another sink name
    too) it writes them on the condition."""
    shared = compile_plan(parse_config(PIPELINE.format(name="p"), source="p.yaml", env={}))
    alone = compile_plan(parse_config(
        PIPELINE.format(name="p").replace("route: [rows]\n", "route: [dlq]\n"),
        source="p.yaml", env={}))  # fmt: skip
    renamed = compile_plan(parse_config(
        PIPELINE.format(name="p")
        .replace("  alerts:", "  fixed: {type: dynamodb, table: p-rows, key: window_id}\n  alerts:")
        .replace("route: [rows]\n", "route: [fixed]\n"),
        source="p.yaml", env={}))  # fmt: skip
    taken = {}
    for label, plan in (("shared", shared), ("alone", alone), ("renamed", renamed)):
        runner = build_runner(plan, "counts", metrics=False)
        taken[label] = runner.sinks["rows"].takes_final  # type: ignore[attr-defined]
    assert taken == {"shared": False, "alone": True, "renamed": False}
