"""``python -m bench replay``: records per second of ``shardline replay`` from the archive.

One run starts the embedded local AWS (:class:`deploy.local.servers.LocalAWS`), writes
``--records`` records into an archive bucket the way the ``s3`` sink does (objects of
``--per-object`` records, gzip JSON lines with positions, over ``--keys`` partition keys
and two shards), then reads them back three ways:

* ``plain loop``: list the objects, GET, gunzip and ``orjson.loads`` every line, nothing
  else: the floor of reading the archive;
* ``replay → discard``: :func:`deploy.ops.replay.replay` through a function whose route is
  a ``discard`` sink: reading, positions, de-duplication, lanes and the runner;
* ``replay → dynamodb``: the same into a ``latest`` DynamoDB table on the moto server.

The target (issue 15) is 20,000 records/s per process into ``discard``. Into DynamoDB a
``latest`` table takes one conditional PutItem per record (BatchWriteItem carries no
condition), so moto's per-request cost sets that figure. Local servers are
not AWS: S3 GETs and DynamoDB writes cost what moto costs on this machine's shared cores.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import tempfile
import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["main", "run"]

TARGET_DISCARD_RPS = 20_000


def _plan(bucket: str, table: str) -> dict[str, Any]:
    return {
        "name": "bench",
        "stream": {"name": "bench-events"},
        "sinks": {
            "raw": {"type": "s3", "bucket": bucket, "prefix": "raw/"},
            "null": {"type": "discard"},
            "orders": {"type": "dynamodb", "table": table, "key": "order_id", "mode": "latest"},
        },
        "functions": {
            "keep": {"processors": [], "route": ["raw"]},
            "count": {"processors": [], "route": ["null"], "ordering": "per_key"},
            "store": {"processors": [], "route": ["orders"], "ordering": "per_key"},
        },
    }


def _fill(s3: Any, bucket: str, records: int, per_object: int, keys: int) -> float:
    """Write the archive as the s3 sink does; returns the first arrival time."""
    from sinks.s3 import archive_line, object_body, object_key  # noqa: PLC0415
    from stream.records import Record  # noqa: PLC0415

    start = time.time() - 3600
    for shard in ("shardId-000000000000", "shardId-000000000001"):
        half = records // 2
        for first in range(0, half, per_object):
            members = []
            for n in range(first, min(first + per_object, half)):
                key = f"k{n % keys}"
                doc = {"order_id": key, "n": n, "amount": n % 97, "kind": "purchase"}
                members.append(Record(orjson.dumps(doc), key, str(10**20 + n), shard_id=shard,
                                      arrival=start + n / 1000))  # fmt: skip
            body = object_body([archive_line(r) for r in members])
            s3.put_object(Bucket=bucket, Key=object_key("raw/", "", members), Body=body)
    return start


def _plain(s3: Any, bucket: str) -> int:
    n = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="raw/"):
        for obj in page.get("Contents", []):
            body = gzip.decompress(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
            n += sum(1 for line in body.splitlines() if line and orjson.loads(line))
    return n


def run(records: int, per_object: int, keys: int, repeat: int, workers: int) -> dict[str, Any]:
    """Median records/s of each way, over ``repeat`` runs."""
    from deploy.local.servers import LocalAWS  # noqa: PLC0415
    from deploy.ops.replay import ReplayRequest, replay  # noqa: PLC0415

    rates: dict[str, list[float]] = {"plain loop": [], "replay → discard": [],
                                     "replay → dynamodb": []}  # fmt: skip
    with LocalAWS() as stack, stack.activated():
        s3, ddb = stack.client("s3"), stack.client("dynamodb")
        bucket, table = f"bench-{uuid.uuid4().hex[:8]}", f"bench-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=bucket)
        ddb.create_table(
            TableName=table, BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "order_id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "order_id", "AttributeType": "S"}],
        )  # fmt: skip
        since = _fill(s3, bucket, records, per_object, keys)
        plan = _plan(bucket, table)
        for _ in range(repeat):
            started = time.perf_counter()
            assert _plain(s3, bucket) == records
            rates["plain loop"].append(records / (time.perf_counter() - started))
            for function, label in (("count", "replay → discard"), ("store", "replay → dynamodb")):
                with tempfile.TemporaryDirectory() as state:
                    request = ReplayRequest(function, since, time.time(), workers=workers)
                    started = time.perf_counter()
                    result = replay(plan, request, s3=s3, state_dir=state)
                    seconds = time.perf_counter() - started
                if not result.ok or result.replayed != records:
                    msg = f"{label}: {result.replayed} of {records} replayed ({result.reasons})"
                    raise SystemExit(msg)
                rates[label].append(records / seconds)
    return {name: statistics.median(values) for name, values in rates.items()}


def main(argv: Sequence[str] | None = None) -> int:
    """Run and print the figures (or JSON)."""
    parser = argparse.ArgumentParser(prog="python -m bench replay", description=__doc__)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--per-object", type=int, default=5_000)
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = run(args.records, args.per_object, args.keys, args.repeat, args.workers)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for name, rps in rows.items():
        target = f"  (target >= {TARGET_DISCARD_RPS:,})" if name.endswith("discard") else ""
        print(f"{name:<20} {rps:>10,.0f} rec/s{target}")
    python = sys.version.split()[0]
    print(f"({args.records:,} records in objects of {args.per_object:,}, {args.keys:,} keys, "
          f"{args.workers} workers, median of {args.repeat}; python {python})")  # fmt: skip
    return 0
