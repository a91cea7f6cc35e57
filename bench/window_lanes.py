"""``python -m bench window --endpoint-url URL --lanes N``: what a window step's DynamoDB
state costs per batch with ``parallelization`` N (lanes mode, issue 16) against one lane.

One shard's records (``bench.window``'s) go through three setups on fresh partitions of one
table, in batches of ``--batch`` records:

* **1 lane, one-lane protocol**: today's ``parallelization: 1`` (the shard's applied
  position, the shard item's outbox);
* **1 lane, lanes mode**: the same batches through the redo log on the commit number;
* **N lanes, in turn** and **N lanes, at once**: the records split by partition key into N
  lanes (CRC-32, as the local mapping does), each lane a process of its own (its own step,
  store and client: a process's lanes share a lock and never conflict), round after round
  the lanes' i-th batches, one after another (each catches up on the others' commits, no
  condition is lost) or at once in threads (all commit at about the same time: most lose
  their condition to another lane's commit and apply again, the worst case). A lane is at
  most a batch ahead of another, as the mapping's read buffer keeps it.

Per batch it prints DynamoDB calls that write (``PutItem``, ``UpdateItem``, ``DeleteItem``,
``TransactWriteItems``), the items one lane buried (a closed window's, under a tombstone, with
``BatchWriteItem``), and the calls that read, as the store counts them, and lost conditions: a
commit (``UpdateItem`` or ``TransactWriteItems``) refused because another lane committed
first (the batch then catches up and applies again), counted from botocore's answers. The
design's target (``parallel-windows.md`` §8 S7): writes per batch at most one lane's + 3.
Records behind the lateness (late) are counted: with lanes the watermark is the shard's, so
a lane's lead makes some records of the others late; keep ``--batch`` small enough (a lane's
lead is a batch) for the comparison to be of the same records.
"""

from __future__ import annotations

import threading
import time
import uuid
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from processors.chain import Chain, Step
from processors.window import Window
from processors.window_store import DynamoDBStore

if TYPE_CHECKING:
    from collections.abc import Sequence

    from stream.records import Record

__all__ = ["Cost", "measure", "report"]

#: lateness of the lanes runs: a window's length, the most ``validate`` allows
LATENESS = 60
SIZE = 60
_LOST = frozenset({"ConditionalCheckFailedException", "TransactionCanceledException"})


@dataclass
class Cost:
    """One setup's totals."""

    name: str
    batches: int = 0
    writes: int = 0
    buried: int = 0
    reads: int = 0
    lost: int = 0
    pairs: int = 0
    late: int = 0
    results: int = 0
    seconds: float = 0.0

    def per_batch(self, value: int) -> float:
        return value / self.batches if self.batches else 0.0


class _Lane:
    """A process of its own: a client (lost conditions counted from its answers), a store,
    a step."""

    def __init__(self, endpoint_url: str, table: str, prefix: str, *, lanes_mode: bool) -> None:
        import boto3  # noqa: PLC0415

        self.client = boto3.client(
            "dynamodb", endpoint_url=endpoint_url, region_name="us-east-1",
            aws_access_key_id="x", aws_secret_access_key="x",
        )  # fmt: skip
        self.lost = 0
        self.client.meta.events.register("after-call.dynamodb", self._answered)
        self.store = DynamoDBStore(table, prefix, LATENESS, SIZE, client=self.client,
                                   high_water=lanes_mode)  # fmt: skip
        self.step = Window(key="user", size_s=SIZE, field="ts", allowed_lateness_s=LATENESS,
                           aggregate={"n": "count", "revenue": {"sum": "amount"}},
                           store=self.store, quiet_s=None,
                           parallelization=2 if lanes_mode else 1)  # fmt: skip
        self.chain = Chain([Step.of("processors[0].window", self.step)])
        self.results = 0
        self.error: BaseException | None = None

    def _answered(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        code = parsed.get("Error", {}).get("Code", "")
        if code in _LOST and model.name in {"UpdateItem", "TransactWriteItems"}:
            self.lost += 1

    def run(self, batch: list[Record]) -> None:
        try:
            out = self.chain.run(batch)
            if out.failures:
                msg = f"a batch failed: {out.failures[:1]}"
                raise SystemExit(msg)
            self.results += len(out.records)
        except BaseException as exc:  # reported by the round
            self.error = exc


def _batches(records: Sequence[Record], size: int) -> list[list[Record]]:
    out = []
    for first in range(0, len(records), size):
        batch = list(records[first : first + size])
        for i, rec in enumerate(batch):
            rec.index = i
        out.append(batch)
    return out


def _setup(endpoint_url: str, table: str, records: Sequence[Record], size: int, lanes: int,
           *, lanes_mode: bool, name: str, together: bool = True) -> Cost:  # fmt: skip
    prefix = uuid.uuid4().hex[:8]
    procs = [_Lane(endpoint_url, table, prefix, lanes_mode=lanes_mode) for _ in range(lanes)]
    split: list[list[Record]] = [[] for _ in range(lanes)]
    for rec in records:
        split[zlib.crc32(rec.partition_key.encode()) % lanes].append(rec)
    queues = [_batches(recs, size) for recs in split]
    cost = Cost(name)
    started = time.perf_counter()
    for r in range(max(len(q) for q in queues)):
        threads = [threading.Thread(target=proc.run, args=(q[r],))
                   for proc, q in zip(procs, queues, strict=True) if r < len(q)]  # fmt: skip
        for thread in threads:
            thread.start()
            if not together:  # in turn: each catches up on the others' commits, none lost
                thread.join()
        for thread in threads:
            thread.join()
        cost.batches += len(threads)
        cost.pairs += sum(len({(rec.json["user"], rec.json["ts"] // SIZE) for rec in q[r]})
                          for q in queues if r < len(q))  # fmt: skip
        for proc in procs:
            if proc.error is not None:
                raise proc.error
    cost.seconds = time.perf_counter() - started
    for proc in procs:
        cost.writes += proc.store.writes
        cost.buried += proc.store.buried
        cost.reads += proc.store.reads
        cost.lost += proc.lost
        cost.late += proc.step.late
        cost.results += proc.results
    return cost


def window_table(client: Any, prefix: str) -> str:
    """A new window state table (the key schema ``deploy`` gives one), named ``prefix`` and
    a random suffix: the benches' own, on the endpoint ``client`` talks to."""
    table = f"{prefix}-{uuid.uuid4().hex[:8]}"
    client.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "shard", "KeyType": "HASH"},
                   {"AttributeName": "window", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "shard", "AttributeType": "S"},
                              {"AttributeName": "window", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )  # fmt: skip
    return table


def measure(records: Sequence[Record], endpoint_url: str, size: int, lanes: int) -> list[Cost]:
    """The three setups' costs over ``records`` on a fresh table (deleted after)."""
    import boto3  # noqa: PLC0415

    client = boto3.client("dynamodb", endpoint_url=endpoint_url, region_name="us-east-1",
                          aws_access_key_id="x", aws_secret_access_key="x")  # fmt: skip
    table = window_table(client, "bench-lanes")
    try:
        return [
            _setup(endpoint_url, table, records, size, 1, lanes_mode=False,
                   name="1 lane, one-lane protocol"),
            _setup(endpoint_url, table, records, size, 1, lanes_mode=True,
                   name="1 lane, lanes mode"),
            _setup(endpoint_url, table, records, size, lanes, lanes_mode=True,
                   name=f"{lanes} lanes, in turn", together=False),
            _setup(endpoint_url, table, records, size, lanes, lanes_mode=True,
                   name=f"{lanes} lanes, at once"),
        ]  # fmt: skip
    finally:
        client.delete_table(TableName=table)


def report(costs: Sequence[Cost], size: int) -> str:
    """The costs per batch, and the writes per batch beyond one per (key, window) the batch
    adds to (a lane's batch holds fewer keys over more time than one lane's, so writes per
    batch alone compare different work) against one lane's + 3. One lane's count its
    tombstones over closed windows' items (issue 17: ``BatchWriteItem`` calls of 25, in no
    column but ``buried``) one write each, as DynamoDB bills them, which is what its
    closed windows' ``PutItem`` cost when the target was set."""
    lines = [f"  DynamoDB, batches of {size} records (lateness {LATENESS} s); per batch:"]
    for c in costs:
        lines.append(
            f"    {c.name:<26} {c.batches:3d} batches: {c.per_batch(c.writes):6.2f} writes "
            f"for {c.per_batch(c.pairs):6.2f} (key, window) = "
            f"{c.per_batch(c.writes - c.pairs):+5.2f}, {c.per_batch(c.buried):5.2f} buried, "
            f"{c.per_batch(c.reads):5.2f} reads, "
            f"{c.per_batch(c.lost):4.2f} lost conditions; {c.results} results, {c.late} late; "
            f"{c.seconds / max(c.batches, 1) * 1000:.0f} ms"
        )
    one = costs[0]
    base = one.per_batch(one.writes + one.buried - one.pairs)  # a tombstone bills as a write
    for c in costs[1:]:
        extra = c.per_batch(c.writes - c.pairs) - base
        verdict = "within" if extra <= 3 else "over"
        lines.append(f"    writes per batch beyond its (key, window)s, {c.name} vs {one.name}: "
                     f"{extra:+.2f} ({verdict} the target of +3)")  # fmt: skip
    return "\n".join(lines)
