"""Calls per batch of a window step in lanes mode when two processes alternate on one
shard (issue 16, slice S4b): each batch finds the other's commit, so it catches up, from
the other's log (S4b) or by reading the partition again (S4a).

Run against a DynamoDB endpoint (a local moto server with the local stack's patches: plain
moto lets two conditional writes served at once both pass)::

    python -m deploy.local.motofix -p 5077 &
    python -m bench.catch_up --endpoint-url http://127.0.0.1:5077

Prints, per batch after the first two (both processes warm), the mean number of calls
of each operation (a ``Query`` by what it reads: the partition, a ``#log#`` range, or
outbox entries) and the mean number of items those reads returned.
"""

from __future__ import annotations

import argparse
import collections
from typing import TYPE_CHECKING, Any

import orjson

from bench.window_lanes import window_table
from processors.chain import Chain, Step
from processors.window import Window
from processors.window_store import DynamoDBStore
from stream.records import Record

if TYPE_CHECKING:
    from collections.abc import Sequence

SIZE = 60


class _Counted:
    """Counts of one client's calls, from botocore's event hooks (nothing patched)."""

    def __init__(self, client: Any) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self.items: collections.Counter[str] = collections.Counter()
        self._what = ""
        client.meta.events.register("before-parameter-build.dynamodb", self._start)
        client.meta.events.register("after-call.dynamodb", self._end)

    def _start(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        what = model.name
        if what == "Query":
            low = params.get("ExpressionAttributeValues", {}).get(":l", {}).get("S", "")
            what += " #log#" if low.startswith("#log#") else " ~o#" if low else " partition"
        self._what = what
        self.calls[what] += 1

    def _end(self, parsed: dict[str, Any], **_: Any) -> None:
        if "Items" in parsed:
            self.items[self._what] += len(parsed["Items"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.catch_up", description=__doc__)
    parser.add_argument("--endpoint-url", required=True)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--records", type=int, default=20, help="records per batch")
    parser.add_argument("--keys", type=int, default=50, help="window keys over the run")
    args = parser.parse_args(argv)

    import boto3  # noqa: PLC0415

    client = boto3.client("dynamodb", endpoint_url=args.endpoint_url, region_name="us-east-1",
                          aws_access_key_id="x", aws_secret_access_key="x")  # fmt: skip
    table = window_table(client, "bench-catch-up")
    steps, counts = [], []
    for _ in range(2):
        own = boto3.client("dynamodb", endpoint_url=args.endpoint_url, region_name="us-east-1",
                           aws_access_key_id="x", aws_secret_access_key="x")  # fmt: skip
        counts.append(_Counted(own))
        store = DynamoDBStore(table, "", 0, SIZE, client=own, high_water=True)
        steps.append(Window(key="user", size_s=SIZE, field="ts", aggregate={"n": "count"},
                            store=store, quiet_s=None, parallelization=2))  # fmt: skip
    seq = 0
    total: collections.Counter[str] = collections.Counter()
    items: collections.Counter[str] = collections.Counter()
    measured = 0
    for b in range(args.batches):
        records = []
        for i in range(args.records):
            seq += 1
            doc = {"user": f"u{(seq * 7) % args.keys}", "ts": seq * 0.5}
            records.append(Record(orjson.dumps(doc), doc["user"], str(seq), shard_id="s0",
                                  index=i))  # fmt: skip
        counted = counts[b % 2]
        calls, read = collections.Counter(counted.calls), collections.Counter(counted.items)
        out = Chain([Step.of("processors[0].window", steps[b % 2])]).run(records)
        if out.failures:
            raise SystemExit(f"batch {b} failed: {out.failures[:1]}")
        if b >= 2:
            measured += 1
            total += counted.calls - calls
            items += counted.items - read
    print(f"{measured} batches of {args.records} records, two processes alternating "
          f"(lanes mode); per batch:")  # fmt: skip
    for what in sorted(total):
        got = f", {items[what] / measured:.1f} items" if what in items else ""
        print(f"  {what}: {total[what] / measured:.2f} calls{got}")
    client.delete_table(TableName=table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
