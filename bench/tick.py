"""What one scheduled flush's tick costs (issue 16, ``flush-design.md`` §4, §6 S5): its wall
time and DynamoDB calls over N listed shards of which D are quiet with a window due, on a
DynamoDB endpoint (``--endpoint-url``; default a moto server started here, as the local
stack's).

Three ticks in a row: the first closes the D due shards (their state read and one commit
each, one entry part each; with one lane the read is two ``Query`` calls at once, below the
windows and the one start the shard item lists: ``processors/window_starts.py``; in lanes
mode one); the second, not acked, emits the D pending entries again (one
``Query`` each) and closes nothing; after the acks, the third finds nothing (the floor: the
list and the shard items, ``BatchGetItem`` by 100). Each shard was set up by one batch of
``--keys`` records (one window per key): a due shard's records are at event time 5 (their
windows end at 60), the others' at 20,000 (not due). Figures on moto are for comparison
between runs, not AWS latencies.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson

from processors.chain import Chain, Step
from processors.window import Window
from stream.records import Record

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Print each tick's milliseconds, calls and emissions."""
    parser = argparse.ArgumentParser(prog="python -m bench tick", description=__doc__)
    parser.add_argument("--shards", type=int, default=100)
    parser.add_argument("--due", type=int, default=10, help="of them, quiet with a window due")
    parser.add_argument("--keys", type=int, default=10, help="windows per shard")
    parser.add_argument("--lanes", action="store_true", help="lanes mode (parallelization 2)")
    parser.add_argument("--endpoint-url", help="a DynamoDB endpoint (default: a moto server)")
    args = parser.parse_args(argv)
    if not 0 <= args.due <= args.shards:
        parser.error("--due takes 0 to --shards")
    stop: Callable[[], None] | None = None
    endpoint = args.endpoint_url
    if endpoint is None:
        endpoint, stop = _moto()
    try:
        for line in measure(endpoint, args.shards, args.due, args.keys, lanes=args.lanes):
            print(line)
    finally:
        if stop is not None:
            stop()
    return 0


def measure(endpoint: str, shards: int, due: int, keys: int, *, lanes: bool) -> list[str]:
    """Set the shards up on a fresh table (deleted after), then time the three ticks."""
    import boto3  # noqa: PLC0415

    from bench.window_lanes import window_table  # noqa: PLC0415
    from processors.window_store import DynamoDBStore  # noqa: PLC0415

    client = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="x", aws_secret_access_key="x")  # fmt: skip
    table = window_table(client, "bench-tick")
    clock = [10_000.0]

    def step() -> Window:
        now = lambda: clock[0]  # noqa: E731
        store = DynamoDBStore(table, "", 0, 60, client=client, now=now, high_water=lanes)
        return Window(key="user", size_s=60, field="ts", aggregate={"n": "count"},
                      function="f", store=store, quiet_s=300, now=now,
                      parallelization=2 if lanes else 1)  # fmt: skip

    try:
        setup = step()
        for n in range(shards):
            ts = 5 if n < due else 20_000
            batch = [Record(orjson.dumps({"user": f"k{k}", "ts": ts}), f"k{k}", str(k + 1),
                            shard_id=f"shard-{n:05d}", index=k) for k in range(keys)]  # fmt: skip
            result = Chain([Step.of("w", setup)]).run(batch)
            if result.failures:
                msg = f"setup batch of shard {n} failed: {result.failures[0].error}"
                raise RuntimeError(msg)
        clock[0] += 301
        mode = "lanes mode" if lanes else "one lane"
        lines = [f"{shards} shards listed, {due} due, {keys} windows each, {mode} ({endpoint})"]
        ticker = step()
        store: Any = ticker.store
        for name, ack in (("closes the due", False), ("re-emits, unacked", True),
                          ("nothing to do", False)):  # fmt: skip
            reads, writes = store.reads, store.writes
            started = time.perf_counter()
            emitted = ticker.tick()
            elapsed = (time.perf_counter() - started) * 1000
            results = sum(len(e.results) for e in emitted)
            lines.append(f"  tick, {name:<18} {elapsed:8.1f} ms  {store.reads - reads:5} reads "
                         f"{store.writes - writes:5} writes  {len(emitted):5} emissions "
                         f"({results} results)")  # fmt: skip
            if ack:
                for emission in emitted:
                    ticker.ack(emission)
        return lines
    finally:
        client.delete_table(TableName=table)


def _moto() -> tuple[str, Callable[[], None]]:
    """A moto server on a free loopback port, as the local stack starts it."""
    from moto.server import ThreadedMotoServer  # noqa: PLC0415

    from deploy.local.motofix import patch_moto  # noqa: PLC0415

    patch_moto()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return f"http://{host}:{port}", server.stop
