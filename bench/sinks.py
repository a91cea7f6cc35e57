"""``python -m bench sinks``: records per second of each sink against the naive way.

One run starts the embedded local AWS (:class:`deploy.local.servers.LocalAWS`: a moto server in its
own process and an osmem-server), then, per sink, writes the same records twice on fresh
resources: once through the sink's ``write_batch`` (bulk calls, as a function writes) and
once the naive way, one call per record (``PutItem``, an index call, ``PutObject``,
``SendMessage``, ``PutRecord``), as a hand-written Lambda often does. The table shows
records per second of both and the ratio; the issue's targets are DynamoDB append at least 5
times, OpenSearch 10 times, S3 50 times the naive rate.

Local servers are not AWS: their per-request cost differs from the service's, and the
client and server share this machine's two cores, so the ratios say how many round trips
the bulk path saves, not what a Lambda will see. Each figure is the median of ``--repeat``
runs of the same records both ways, each on fresh resources (moto's SQS slows down as a
queue fills, so equal sizes keep the comparison fair); every run checks that the store
holds every record afterwards, so a fast wrong sink cannot win.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson

from stream.event import records_from_event
from stream.testing import EventFactory

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from deploy.local.servers import LocalAWS
    from stream.event import KinesisEvent
    from stream.records import Record

__all__ = ["TARGETS", "main", "make_event", "run"]

#: sink -> the ratio the issue asks for (bulk records/s over naive records/s).
TARGETS = {"dynamodb append": 5.0, "opensearch": 10.0, "s3": 50.0}


def make_event(n: int) -> KinesisEvent:
    """A Lambda event of ``n`` order records (~200 bytes of JSON) over 50 partition keys."""
    f = EventFactory(stream="bench", shard_id="shardId-000000000000")
    docs: Iterator[dict[str, Any]] = (
        {
            "order_id": f"o{i:06d}",
            "user_id": f"u{i % 50:03d}",
            "event_type": "purchase",
            "amount": round(5 + (i % 997) * 0.37, 2),
            "page": "/checkout",
            "items": [{"sku": f"s{i % 17}", "qty": 1 + i % 3}],
        }
        for i in range(n)
    )
    return f.batch((str(d["user_id"]), d) for d in docs)


class _Case:
    """One sink: how to set up fresh resources, write both ways, and count what landed."""

    def __init__(
        self,
        name: str,
        setup: Callable[[], dict[str, Any]],
        bulk: Callable[[dict[str, Any], list[Record]], None],
        naive: Callable[[dict[str, Any], list[Record]], None],
        count: Callable[[dict[str, Any]], int],
    ) -> None:
        self.name, self.setup, self.bulk, self.naive, self.count = name, setup, bulk, naive, count


def _cases(stack: LocalAWS) -> list[_Case]:  # noqa: PLR0915  # four small closures per sink
    from opensearchpy import OpenSearch  # noqa: PLC0415

    from deploy.local.readback import archive_lines, table_items  # noqa: PLC0415
    from deploy.local.servers import provision  # noqa: PLC0415
    from sinks.base import DeadLetter  # noqa: PLC0415
    from sinks.dynamodb import DynamoDBSink, to_attribute  # noqa: PLC0415
    from sinks.kinesis import KinesisSink  # noqa: PLC0415
    from sinks.opensearch import OpenSearchSink  # noqa: PLC0415
    from sinks.s3 import S3Sink  # noqa: PLC0415
    from sinks.sqs import SQSSink  # noqa: PLC0415

    ddb, s3, sqs = stack.client("dynamodb"), stack.client("s3"), stack.client("sqs")
    kinesis = stack.client("kinesis")
    search = OpenSearch(hosts=[stack.opensearch_url], timeout=60)

    def unique(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:8]}"

    def plan(**sinks: dict[str, Any]) -> dict[str, Any]:
        return {"stream": {"name": unique("bench")}, "sinks": sinks, "functions": {}}

    def ddb_setup() -> dict[str, Any]:
        table = unique("orders")
        provision(plan(t={"type": "dynamodb", "table": table, "key": "order_id",
                          "mode": "append"}), stack.client)  # fmt: skip
        return {"table": table}

    def ddb_bulk(env: dict[str, Any], records: list[Record]) -> None:
        DynamoDBSink("orders", table=env["table"], key="order_id", mode="append",
                     client=ddb).write_batch(records)  # fmt: skip

    def ddb_naive(env: dict[str, Any], records: list[Record]) -> None:
        for r in records:
            item = {k: to_attribute(v) for k, v in r.as_dict().items()}
            item["_position"] = {"S": f"{r.sequence_number}:{r.sub_sequence_number}"}
            ddb.put_item(TableName=env["table"], Item=item)

    def ddb_count(env: dict[str, Any]) -> int:
        return len(table_items(ddb, env["table"]))

    def os_setup() -> dict[str, Any]:
        return {"index": unique("bench")}

    def os_bulk(env: dict[str, Any], records: list[Record]) -> None:
        sink = OpenSearchSink("search", endpoint=stack.opensearch_url, index=env["index"],
                              auth="none")  # fmt: skip
        sink.write_batch(records)
        sink.close()

    def os_naive(env: dict[str, Any], records: list[Record]) -> None:
        for r in records:
            search.index(index=env["index"], id=r.document_id, body=r.as_dict())

    def os_count(env: dict[str, Any]) -> int:
        search.indices.refresh(index=env["index"])
        return int(search.count(index=env["index"])["count"])

    def s3_setup() -> dict[str, Any]:
        bucket = unique("archive")
        s3.create_bucket(Bucket=bucket)
        return {"bucket": bucket}

    def s3_bulk(env: dict[str, Any], records: list[Record]) -> None:
        S3Sink("archive", bucket=env["bucket"], prefix="raw/", client=s3).write_batch(records)

    def s3_naive(env: dict[str, Any], records: list[Record]) -> None:
        for r in records:
            key = f"raw/{r.shard_id}/{r.sequence_number}-{r.sub_sequence_number}.json"
            s3.put_object(Bucket=env["bucket"], Key=key, Body=r.data)

    def s3_count(env: dict[str, Any]) -> int:
        return len(archive_lines(s3, env["bucket"]))

    def sqs_setup() -> dict[str, Any]:
        queue = unique("dlq")
        url = sqs.create_queue(QueueName=queue)["QueueUrl"]
        return {"queue": queue, "url": url}

    def letters(records: list[Record]) -> list[DeadLetter]:
        return [DeadLetter(r, "bench", "Bench", "sink:bench", "f", "p", 1.0) for r in records]

    def sqs_bulk(env: dict[str, Any], records: list[Record]) -> None:
        SQSSink("dlq", queue=env["queue"], client=sqs).write_dead_letters(letters(records))

    def sqs_naive(env: dict[str, Any], records: list[Record]) -> None:
        for letter in letters(records):
            sqs.send_message(
                QueueUrl=env["url"], MessageBody=orjson.dumps(letter.document()).decode()
            )

    def sqs_count(env: dict[str, Any]) -> int:
        attrs = sqs.get_queue_attributes(
            QueueUrl=env["url"], AttributeNames=["ApproximateNumberOfMessages"]
        )
        return int(attrs["Attributes"]["ApproximateNumberOfMessages"])

    def kinesis_setup() -> dict[str, Any]:
        stream = unique("stage-2")
        kinesis.create_stream(StreamName=stream, ShardCount=1)
        return {"stream": stream}

    def kinesis_bulk(env: dict[str, Any], records: list[Record]) -> None:
        KinesisSink("next", stream=env["stream"], partition_key="user_id",
                    client=kinesis).write_batch(records)  # fmt: skip

    def kinesis_naive(env: dict[str, Any], records: list[Record]) -> None:
        for r in records:
            kinesis.put_record(StreamName=env["stream"], Data=r.data, PartitionKey=r.partition_key)

    def kinesis_count(env: dict[str, Any]) -> int:
        shard = kinesis.list_shards(StreamName=env["stream"])["Shards"][0]["ShardId"]
        iterator = kinesis.get_shard_iterator(
            StreamName=env["stream"], ShardId=shard, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        seen = 0
        while True:
            page = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            if not page["Records"]:
                return seen
            seen += len(page["Records"])
            iterator = page["NextShardIterator"]

    return [
        _Case("dynamodb append", ddb_setup, ddb_bulk, ddb_naive, ddb_count),
        _Case("opensearch", os_setup, os_bulk, os_naive, os_count),
        _Case("s3", s3_setup, s3_bulk, s3_naive, s3_count),
        _Case("sqs (dead letters)", sqs_setup, sqs_bulk, sqs_naive, sqs_count),
        _Case("kinesis", kinesis_setup, kinesis_bulk, kinesis_naive, kinesis_count),
    ]


def _rate(case: _Case, how: str, event: KinesisEvent) -> float:
    """Records per second of one run on fresh resources; checks that every record landed."""
    env = case.setup()
    records = records_from_event(event)  # fresh records: nothing decoded by an earlier run
    write = case.bulk if how == "bulk" else case.naive
    started = time.perf_counter()
    write(env, records)
    seconds = time.perf_counter() - started
    landed = case.count(env)
    if landed != len(records):
        msg = f"{case.name} ({how}): {landed} of {len(records)} records landed; bench stopped"
        raise SystemExit(msg)
    return len(records) / seconds


def run(records: int, repeat: int) -> list[dict[str, Any]]:
    """Every case's median records/s both ways, and the ratio."""
    from deploy.local.servers import LocalAWS  # noqa: PLC0415

    event = make_event(records)
    rows = []
    with LocalAWS() as stack, stack.activated():
        for case in _cases(stack):
            bulk = [_rate(case, "bulk", event) for _ in range(repeat)]
            naive = [_rate(case, "naive", event) for _ in range(repeat)]
            b, n = statistics.median(bulk), statistics.median(naive)
            rows.append({"sink": case.name, "bulk_rps": b, "naive_rps": n, "ratio": b / n,
                         "target": TARGETS.get(case.name)})  # fmt: skip
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Run and print the table (or JSON)."""
    parser = argparse.ArgumentParser(prog="python -m bench sinks", description=__doc__)
    parser.add_argument("--records", type=int, default=500, help="records per run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = run(args.records, args.repeat)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'sink':<20} {'bulk rec/s':>11} {'naive rec/s':>12} {'ratio':>7}  target")
    for row in rows:
        target = f">= {row['target']:g}x" if row["target"] else "-"
        print(f"{row['sink']:<20} {row['bulk_rps']:>11.0f} {row['naive_rps']:>12.0f} "
              f"{row['ratio']:>6.1f}x  {target}")  # fmt: skip
    print(f"({args.records} records per run, fresh resources each, median of {args.repeat}; "
          f"python {sys.version.split()[0]})")  # fmt: skip
    return 0
