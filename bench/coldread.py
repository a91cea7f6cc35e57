"""``python -m bench coldread``: a windowed function's first batch after a cold start.

A window shard's partition kept the items of the windows it closed for a day and more
(their TTL), so a cold start that read the whole partition read more with every window
the shard closed. Since issue 17 a commit that lists its starts deletes them instead
(:func:`processors.window_starts.dead`), so this bench builds the partition as an earlier
version wrote it (and as a commit that lists no starts still does): the clickstream
example's ``purchases-per-minute`` handles ``--batches`` batches of ``--records`` user
records (each a day of event time after the one before, so each closes the last one's
windows: about 70 a batch) with its closed windows written closed, on the embedded local
AWS. Then, in turns, a new runner (a cold start) handles one batch:

* **listed**: as the table is: the shard item lists its open windows' starts, and the read
  keeps to them (:mod:`processors.window_starts`);
* **whole**: the same, with ``starts`` removed from every shard item first, as a table an
  earlier version wrote: the read takes the whole partition (one ``Query`` below the
  windows, then one of them all; before the list, the one ``Query`` of it all).

Printed per mode: the cold batch's wall time (median of ``--repeat``), the window items
its ``Query`` calls returned, and its ``Query`` pages; then the ratio whole/listed. The
runner's warm batch after it is printed for scale.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

__all__ = ["main", "run"]

FUNCTION = "purchases-per-minute"


class _Queries:
    """Counts the ``Query`` pages and the window items (``w#``) they returned, on a client."""

    def __init__(self, client: Any) -> None:
        self.pages = 0
        self.window_items = 0
        client.meta.events.register("after-call.dynamodb.Query", self._seen)

    def _seen(self, parsed: dict[str, Any], **_: Any) -> None:
        self.pages += 1
        found = parsed.get("Items", [])
        self.window_items += sum(1 for i in found if i["window"]["S"].startswith("w#"))

    def take(self) -> tuple[int, int]:
        out = (self.pages, self.window_items)
        self.pages = self.window_items = 0
        return out


def _unlist(ddb: Any, table: str) -> int:
    """Remove ``starts`` from every shard item of ``table``: the shard items changed."""
    changed = 0
    start: dict[str, Any] = {}
    while True:
        page = ddb.scan(TableName=table, **start)
        for item in page.get("Items", []):
            if item["window"]["S"] == "#shard" and "starts" in item:
                key = {"shard": item["shard"], "window": item["window"]}
                ddb.update_item(TableName=table, Key=key, UpdateExpression="REMOVE starts")
                changed += 1
        if "LastEvaluatedKey" not in page:
            return changed
        start = {"ExclusiveStartKey": page["LastEvaluatedKey"]}


@contextmanager
def _keeping_closed() -> Iterator[None]:
    """Commits write the windows they close closed (with their TTL), as before issue 17."""
    from processors import window_starts  # noqa: PLC0415

    dead = window_starts.dead
    window_starts.dead = lambda wkey, starts: False
    try:
        yield
    finally:
        window_starts.dead = dead


def run(batches: int, records: int, repeat: int) -> dict[str, Any]:
    """The figures of both modes (see the module docstring)."""
    from bench.invocation import _example_event, _fresh, _setup  # noqa: PLC0415
    from deploy.local.servers import LocalAWS  # noqa: PLC0415
    from deploy.names import window_table_name  # noqa: PLC0415
    from stream.aws import aws_client, reset_clients  # noqa: PLC0415
    from stream.runtime import build_runner  # noqa: PLC0415

    report: dict[str, Any] = {"batches": batches, "records": records, "modes": {}}
    with LocalAWS() as stack, stack.activated():
        plan = _setup(stack, stack.opensearch_url)
        reset_clients()
        table = window_table_name(plan, FUNCTION)
        later = (_fresh(_example_event(records, n + 1), n) for n in itertools.count())
        runner = build_runner(plan, FUNCTION, metrics=False)
        with _keeping_closed():
            for _ in range(batches):
                runner.handle(next(later))
        queries = _Queries(aws_client("dynamodb", validated=False))
        ddb = stack.client("dynamodb")
        for mode in ("listed", "whole"):
            cold, warm, reads = [], [], []
            for _ in range(repeat):
                if mode == "whole":
                    _unlist(ddb, table)
                fresh = build_runner(plan, FUNCTION, metrics=False)
                queries.take()
                began = time.perf_counter()
                fresh.handle(next(later))
                cold.append(time.perf_counter() - began)
                reads.append(queries.take())
                began = time.perf_counter()
                fresh.handle(next(later))
                warm.append(time.perf_counter() - began)
            report["modes"][mode] = {
                "cold_ms": statistics.median(cold) * 1000,
                "warm_ms": statistics.median(warm) * 1000,
                "query_pages": statistics.median(r[0] for r in reads),
                "window_items_read": statistics.median(r[1] for r in reads),
            }
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Run and print the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench coldread", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=24, help="batches before the cold ones")
    parser.add_argument("--records", type=int, default=500, help="user records per batch")
    parser.add_argument("--repeat", type=int, default=3, help="cold starts per mode")
    args = parser.parse_args(argv)
    report = run(args.batches, args.records, args.repeat)
    print(f"{FUNCTION}: a cold start's first batch after {args.batches} batches of "
          f"{args.records} records (local moto)")  # fmt: skip
    print(f"  {'mode':<8} {'cold ms':>8} {'warm ms':>8} {'Query pages':>12} {'window items':>13}")
    for mode, f in report["modes"].items():
        print(f"  {mode:<8} {f['cold_ms']:8.1f} {f['warm_ms']:8.1f} {f['query_pages']:12g} "
              f"{f['window_items_read']:13g}")  # fmt: skip
    listed, whole = report["modes"]["listed"], report["modes"]["whole"]
    print(f"  whole/listed: cold batch {whole['cold_ms'] / listed['cold_ms']:.2f}x, window items "
          f"read {whole['window_items_read'] / max(listed['window_items_read'], 1):.0f}x")
    return 0
