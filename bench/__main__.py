"""``python -m bench NAME [options]``: run one benchmark (``NAME -h`` lists its options).

Each benchmark is a module of this package with ``main(argv) -> int``; it is imported only
when named, so ``coldstart`` does not load Powertools and ``handler`` does not spawn anything.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["BENCHMARKS", "main", "usage"]

#: name -> (module, one-line description)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "coldstart": (
        "bench.coldstart",
        "cold start of stream.lambda_handler as packaged: import, first call (clean interpreters)",
    ),
    "invocation": (
        "bench.invocation",
        "invocation wall time through a delaying proxy: overlapped vs in turn vs Powertools",
    ),
    "coldread": (
        "bench.coldread",
        "ms and items: a windowed function's first batch after a cold start, listed vs whole",
    ),
    "flush": ("bench.flush", "ms: a scheduled window flush through the handler on local moto"),
    "handler": ("bench.handler", "µs/record: shardline vs Powertools BatchProcessor vs plain loop"),
    "memory": ("bench.memory", "peak memory of one invocation: shardline vs plain loop; 6 MB"),
    "producer": ("bench.producer", "records/s: producer batching and aggregation vs PutRecord"),
    "replay": ("bench.replay", "records/s of `shardline replay` from the archive vs a plain loop"),
    "schema": ("bench.schema", "µs/record: JSON Schema and Avro libraries, the schema step"),
    "sinks": ("bench.sinks", "records/s of each sink's bulk writes vs one call per record"),
    "window": ("bench.window", "µs/record: the window step vs a hand-written dict aggregation"),
    "session": ("bench.session", "µs/record: session windows vs a hand-written dict of sessions"),
    "tick": ("bench.tick", "ms and DynamoDB calls of a scheduled flush's tick over N shards"),
    "soak": ("bench.soak", "e2e fault scenarios and the example under load; writes RELIABILITY.md"),
}


def usage() -> str:
    """The usage text: every benchmark with its description."""
    width = max(map(len, BENCHMARKS))
    lines = ["usage: python -m bench NAME [options]", "", "benchmarks:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in sorted(BENCHMARKS.items())]
    lines += ["", "python -m bench NAME -h shows a benchmark's options"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to the named benchmark; unknown or missing names print usage and return 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(usage())
        return 0
    if not args or args[0] not in BENCHMARKS:
        if args:
            print(f"unknown benchmark {args[0]!r}", file=sys.stderr)
        print(usage(), file=sys.stderr)
        return 2
    module = importlib.import_module(BENCHMARKS[args[0]][0])
    code: int = module.main(args[1:])
    return code


if __name__ == "__main__":
    sys.exit(main())
