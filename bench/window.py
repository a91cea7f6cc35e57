"""``python -m bench window``: the window step per record, against a hand-written dict.

One process, one batch of JSON records (already decoded, as the chain sees them), the same
aggregation two ways, in alternating repeats:

* **window**: the ``window`` step as the chain runs it: ``prepare(batch)`` then the step on
  each record, over tumbling windows of an event-time field (epoch seconds), with ``count``,
  ``sum`` and ``max``, in-memory state.
* **dict**: a hand-written loop: read key, time and amount, ``key, start`` into a dict of
  ``[count, sum, max]``, close the windows behind a watermark.

Each repeat uses fresh state (a new step, a new dict) so both do the same work, and runs
the two back to back, in turn first: the ratio of each repeat's pair is printed as
min/median/max, so a reader can judge the noise of a shared machine (the medians of the
two, and their ratio, too). It also reports the state writes per batch (one per distinct
key and window the batch touched), against the distinct (key, window) pairs of the batch.
With ``--endpoint-url`` (a DynamoDB, e.g. a local moto server) it runs the records in
batches of ``--batch`` through ``state: dynamodb`` on a fresh table and counts the
``PutItem`` calls of each batch: one per distinct (key, window) plus one for the shard's
item; with ``--lanes N`` as well, what ``parallelization`` N costs per batch against one
lane (writes, reads, lost conditions: :mod:`bench.window_lanes`). ``--only window`` (or
``dict``, or ``none``: neither) runs one loop ``--repeats``
times and prints nothing, for counting instructions (README).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from typing import TYPE_CHECKING, Any

import orjson

from processors.window import Window
from stream.records import Record

if TYPE_CHECKING:
    from collections.abc import Sequence

SIZE = 60
LATENESS = 5


def _batch(n: int, keys: int) -> list[Record]:
    records = []
    for i in range(n):
        doc = {"user": f"u{i % keys}", "ts": 1_767_225_600 + i // 10 - (i % 3), "amount": i % 97}
        rec = Record(orjson.dumps(doc), doc["user"], str(10**20 + i), shard_id="s", index=i)
        rec.json  # noqa: B018  # decoded once, as an earlier step would have
        records.append(rec)
    return records


def _window(records: Sequence[Record]) -> int:
    step = Window(key="user", size_s=SIZE, field="ts", allowed_lateness_s=LATENESS,
                  aggregate={"n": "count", "revenue": {"sum": "amount"},
                             "biggest": {"max": "amount"}}, state="memory")  # fmt: skip
    step.prepare(records)
    out = 0
    for rec in records:
        res = step(rec)
        if res is not None:
            out += len(res) if type(res) is list else 1
    return out


def _dict(records: Sequence[Record]) -> int:
    windows: dict[tuple[str, int], list[Any]] = {}
    max_time = None
    results = []
    for rec in records:
        doc = rec.json
        key, t, amount = doc["user"], doc["ts"], doc["amount"]
        start = t // SIZE * SIZE
        if max_time is not None and start + SIZE <= max_time - LATENESS:
            continue
        acc = windows.get((key, start))
        if acc is None:
            acc = windows[(key, start)] = [0, 0, None]
        acc[0] += 1
        acc[1] += amount
        if acc[2] is None or amount > acc[2]:
            acc[2] = amount
        if max_time is None or t > max_time:
            max_time = t
            for wkey in [w for w in windows if w[1] + SIZE <= max_time - LATENESS]:
                results.append((wkey, windows.pop(wkey)))
    return len(results)


def main(argv: Sequence[str] | None = None) -> int:
    """Print µs/record of both and their ratio, and the state writes per batch."""
    parser = argparse.ArgumentParser(prog="python -m bench window", description=__doc__)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--endpoint-url", help="a DynamoDB endpoint: count state writes there")
    parser.add_argument("--batch", type=int, default=500, help="records per batch there")
    parser.add_argument("--lanes", type=int,
                        help="with --endpoint-url: also writes, reads and lost conditions per "
                             "batch with this many lanes (parallelization) vs one")  # fmt: skip
    parser.add_argument("--only", choices=["window", "dict", "none"],
                        help="run just this loop --repeats times, print nothing: for counting "
                             "instructions (valgrind), less the same with none")  # fmt: skip
    args = parser.parse_args(argv)
    if args.lanes is not None and (args.endpoint_url is None or not 1 <= args.lanes <= 10):
        parser.error("--lanes takes 1 to 10 (as parallelization) and needs --endpoint-url")
    records = _batch(args.records, args.keys)
    if args.only:
        gc.disable()
        only = {"window": _window, "dict": _dict, "none": len}[args.only]
        only(records[:100])  # imports, the fold compiled: not counted
        for _ in range(args.repeats):
            only(records)
        return 0
    if _window(records) != _dict(records):
        print("the two disagree on the number of results")
        return 1
    times: dict[str, list[float]] = {"window": [], "dict": []}
    gc.disable()
    try:
        for i in range(args.repeats):
            order = [("window", _window), ("dict", _dict)]
            for name, fn in order if i % 2 == 0 else order[::-1]:
                started = time.perf_counter()
                fn(records)
                times[name].append((time.perf_counter() - started) / len(records) * 1e6)
    finally:
        gc.enable()
    step = Window(key="user", size_s=SIZE, field="ts", allowed_lateness_s=LATENESS,
                  aggregate={"n": "count"}, state="memory")  # fmt: skip
    step.prepare(records)
    distinct = len({(r.json["user"], r.json["ts"] // SIZE) for r in records})
    med = {name: statistics.median(values) for name, values in times.items()}
    print(f"{args.records} records, {args.keys} keys, {args.repeats} repeats (median, best)")
    for name, values in times.items():
        print(f"  {name:<7} {med[name]:6.3f} µs/record  (best {min(values):.3f})")
    pairs = sorted(w / d for w, d in zip(times["window"], times["dict"], strict=True))
    print(f"  ratio   {statistics.median(pairs):.2f}x median of the repeats' pairs "
          f"(min {pairs[0]:.2f}, max {pairs[-1]:.2f}); medians' ratio "
          f"{med['window'] / med['dict']:.2f}x (target <= 2x)")  # fmt: skip
    writes = step.store.writes  # type: ignore[attr-defined]
    print(f"  state writes per batch: {writes} for {distinct} distinct (key, window)")
    if args.endpoint_url:
        _dynamodb_writes(records, args.endpoint_url, args.batch)
    if args.lanes is not None:
        from bench import window_lanes  # noqa: PLC0415

        costs = window_lanes.measure(_batch(args.records, args.keys), args.endpoint_url,
                                     args.batch, args.lanes)  # fmt: skip
        print(window_lanes.report(costs, args.batch))
    return 0


def _dynamodb_writes(records: Sequence[Record], endpoint_url: str, size: int) -> None:
    """Run the records in batches through a DynamoDB store; print its writes per batch."""
    import boto3  # noqa: PLC0415

    from bench.window_lanes import window_table  # noqa: PLC0415
    from processors.window_store import DynamoDBStore  # noqa: PLC0415

    client = boto3.client("dynamodb", endpoint_url=endpoint_url)
    table = window_table(client, "bench-windows")
    store = DynamoDBStore(table, "", LATENESS, SIZE, client=client)
    step = Window(key="user", size_s=SIZE, field="ts", allowed_lateness_s=LATENESS,
                  aggregate={"n": "count"}, store=store)  # fmt: skip
    print(f"  DynamoDB, batches of {size}: PutItem calls per batch / distinct (key, window)")
    for first in range(0, len(records), size):
        batch = list(records[first : first + size])
        for i, rec in enumerate(batch):
            rec.index = i
        before = store.writes
        started = time.perf_counter()
        step.prepare(batch)
        elapsed = time.perf_counter() - started
        closed = set()
        for rec in batch:
            res = step(rec)
            for doc in [] if res is None else res if type(res) is list else [res]:
                closed.add((doc.get("key"), doc.get("window_start")))
        pairs = {(r.json["user"], r.json["ts"] // SIZE * SIZE) for r in batch}
        print(f"    batch {first // size}: {store.writes - before} writes for {len(pairs)} "
              f"(key, window) added to, {len(closed)} closed (some of them the same), "
              f"1 shard item; {elapsed * 1000:.0f} ms")  # fmt: skip
    client.delete_table(TableName=table)
