"""``python -m bench producer``: the producer against a naive PutRecord loop, on moto.

One run starts the embedded local AWS (a moto server in its own process) and sends the same
``--records`` user records of ~200 bytes (``--keys`` partition keys, 100 by default) four
ways, each to a fresh two-shard stream:

* **naive**: one ``PutRecord`` call per record, the loop a first producer often is;
* **batched**: :class:`stream.producer.Producer` (``ordered=True``): ``PutRecords`` of up to
  500 entries, failed entries retried, per-key order kept;
* **concurrent**: the same with ``concurrent=True`` (``shardline produce``'s default): the
  calls that share no partition key go at once. With per-key order a call holds one record
  of each key, so this pays only with more keys than a call takes (``--keys 2000``);
* **aggregated**: the batched producer with ``aggregate=True``: KPL aggregates per shard.

It prints records per second and the ratio to the naive loop, and for aggregation the user
records per Kinesis record. Targets: batched at least 20 times the naive rate; at least 50
user records of 200 bytes per Kinesis record with aggregation. Every run reads the stream
back (de-aggregating) and stops the bench if a record is missing. moto is not Kinesis: the
ratios show the calls saved, not the service's latency.
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

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["main", "make_lines", "run"]

TARGET_BATCHED = 20.0
TARGET_PER_RECORD = 50.0


def make_lines(n: int, keys: int = 100) -> list[tuple[str, bytes]]:
    """``n`` (partition key, ~200-byte JSON) pairs over ``keys`` keys."""
    out = []
    for i in range(n):
        key = f"user-{i % keys:03d}"
        doc = {"user_id": key, "n": i, "event_type": "click", "page": "/p/" + "x" * 120}
        out.append((key, orjson.dumps(doc)))
    return out


def _count(kinesis: Any, stream: str) -> tuple[int, int]:
    """(Kinesis records, user records) in the stream, de-aggregated like a consumer does."""
    from stream.event import records_from_event  # noqa: PLC0415
    from stream.testing import read_shard_event  # noqa: PLC0415

    kinesis_records = user_records = 0
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        event = read_shard_event(kinesis, stream, shard["ShardId"])
        kinesis_records += len(event["Records"])
        user_records += len(records_from_event(event))
    return kinesis_records, user_records


def _one(kinesis: Any, how: str, lines: list[tuple[str, bytes]]) -> dict[str, float]:
    from stream.producer import Producer  # noqa: PLC0415

    stream = f"bench-{uuid.uuid4().hex[:8]}"
    kinesis.create_stream(StreamName=stream, ShardCount=2)
    started = time.perf_counter()
    if how == "naive":
        for key, data in lines:
            kinesis.put_record(StreamName=stream, Data=data, PartitionKey=key)
    else:
        aggregate, concurrent = how == "aggregated", how == "concurrent"
        with Producer(stream, kinesis, aggregate=aggregate, concurrent=concurrent) as producer:
            for key, data in lines:
                producer.put(data, key)
    seconds = time.perf_counter() - started
    kinesis_records, user_records = _count(kinesis, stream)
    if user_records != len(lines):
        msg = f"{how}: {user_records} of {len(lines)} records in the stream; bench stopped"
        raise SystemExit(msg)
    return {"rps": len(lines) / seconds, "per_kinesis_record": user_records / kinesis_records}


def run(records: int, repeat: int, keys: int = 100) -> dict[str, dict[str, float]]:
    """Median records/s (and user records per Kinesis record) of each way."""
    from deploy.local.servers import LocalAWS  # noqa: PLC0415

    lines = make_lines(records, keys)
    out: dict[str, dict[str, float]] = {}
    with LocalAWS(opensearch=False) as stack:
        kinesis = stack.client("kinesis")
        for how in ("naive", "batched", "concurrent", "aggregated"):
            runs = [_one(kinesis, how, lines) for _ in range(repeat)]
            out[how] = {
                "rps": statistics.median(r["rps"] for r in runs),
                "per_kinesis_record": statistics.median(r["per_kinesis_record"] for r in runs),
            }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run and print the table (or JSON)."""
    parser = argparse.ArgumentParser(prog="python -m bench producer", description=__doc__)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = run(args.records, args.repeat, args.keys)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    naive = rows["naive"]["rps"]
    print(f"{'way':<12} {'rec/s':>9} {'x naive':>8} {'user rec / Kinesis rec':>23}")
    for how, row in rows.items():
        print(f"{how:<12} {row['rps']:>9.0f} {row['rps'] / naive:>7.1f}x "
              f"{row['per_kinesis_record']:>23.1f}")  # fmt: skip
    batched = rows["batched"]["rps"] / naive
    packed = rows["aggregated"]["per_kinesis_record"]
    print(f"batched / naive: {batched:.1f}x (target >= {TARGET_BATCHED:g}x) "
          f"{'PASS' if batched >= TARGET_BATCHED else 'MISS'}")  # fmt: skip
    verdict = "PASS" if packed >= TARGET_PER_RECORD else "MISS"
    print(f"user records per Kinesis record, aggregated: {packed:.0f} "
          f"(target >= {TARGET_PER_RECORD:g}) {verdict}")  # fmt: skip
    print(f"({args.records} records of ~200 bytes, {args.keys} keys, 2 shards, median of "
          f"{args.repeat}; python {sys.version.split()[0]})")  # fmt: skip
    return 0
