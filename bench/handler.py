"""``python -m bench handler``: the handler path per record, against two baselines.

One process, one event, the same work three ways:

* **shardline**: ``runner.handle(event)`` (what the Lambda handler runs: decode the event,
  run the batch with the cyclic garbage collector paused) with a runner built
  from a plan (match filter -> JMESPath filter -> set enrich -> route to a discard sink): the
  whole Lambda handler path, base64 and JSON decoding included.
* **powertools**: ``process_partial_response`` with ``BatchProcessor(EventType.KinesisDataStreams)``
  and a record handler written the way a Powertools user would: ``record.kinesis.data_as_json()``
  (Powertools' own decoder: ``base64.b64decode`` + stdlib ``json.loads``), a set membership
  test, a ``jmespath.compile``-d expression, a field set, an append.
* **plain**: a hand-written loop over ``event["Records"]``: ``binascii.a2b_base64``,
  ``orjson.loads``, the conditions as Python expressions, the field set, an append, and the
  empty ``batchItemFailures`` response. The floor: no framework can do less.

Runners, processors and compiled expressions are built once, outside the timing (Lambda
init). Each repeat runs the three in turn (rotating who goes first, so drift and garbage
collection hit all alike); the table shows the median and best of the repeats. Every run
checks that all three kept the same number of records, and stops loudly if not.

Then the cost of metrics (:mod:`stream.metrics`): ``runner.invoke(event, context)``, what
the Lambda handler runs per invocation, with metrics off and on, alternating in the same
repeats; stdout goes to ``os.devnull`` for both, so the EMF lines are really written. The
overhead is the median, over repeats, of each pair's on/off ratio (paired, so drift
cancels), and, as a figure that noise does not blur, the time of the metrics work alone:
building and writing one invocation's documents, as a share of the handler's median.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import platform
import random
import statistics
import sys
import time
from binascii import a2b_base64
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from stream.runtime import build_runner
from stream.testing import EventFactory

__all__ = [
    "EXPR",
    "IMPLEMENTATIONS",
    "METRICS_TARGET",
    "PLAIN_TARGET",
    "PLAN",
    "POWERTOOLS_TARGET",
    "BenchError",
    "main",
    "make_event",
    "measure",
    "measure_metrics",
]

#: The JMESPath condition of the second filter, shared by shardline and the Powertools handler.
EXPR = "amount > `0` || event_type == 'click'"
KEPT_TYPES = ("click", "purchase")
SINK = "out"
#: Most that metrics may add to the handler's time (the issue's budget): 2%.
METRICS_TARGET = 0.02
#: Issue 17's targets: shardline at least 3x the Powertools handler's throughput, and at
#: most 1.2x the plain loop's time.
POWERTOOLS_TARGET = 3.0
PLAIN_TARGET = 1.2

PLAN: dict[str, Any] = {
    "name": "bench",
    "sinks": {SINK: {"type": "discard"}},
    "functions": {
        "f": {
            "ordering": "per_key",
            "on_failure": None,
            "route": None,
            "processors": [
                {"filter": {"match": {"event_type": list(KEPT_TYPES)}}},
                {"filter": {"expr": EXPR}},
                {"enrich": {"set": {"pipeline": "bench"}}},
                {
                    "route": {
                        "mode": "first",
                        "rules": [
                            {"when": {"event_type": ["purchase"]}, "to": [SINK]},
                            {"default": [SINK]},
                        ],
                    }
                },
            ],
        }
    },
}

Run = Callable[[dict[str, Any]], tuple[dict[str, Any], int]]
"""One implementation: event -> (Lambda response, records kept)."""


class BenchError(RuntimeError):
    """The implementations disagree: the timing would compare different work."""


# --- the event ------------------------------------------------------------------------------

_PAGES = ("/", "/search", "/cart", "/checkout", "/account", "/deals")
_REFERRERS = ("direct", "google", "newsletter", "partner", "social")
_DEVICES = (("ios", "mobile"), ("android", "mobile"), ("windows", "desktop"), ("macos", "desktop"))
_LOCALES = ("de-DE", "en-GB", "en-US", "fr-FR", "nl-NL")


def _document(rng: random.Random, index: int, user: int, start: float) -> dict[str, Any]:
    roll = rng.random()
    event_type = "click" if roll < 0.5 else "view" if roll < 0.8 else "purchase"
    if event_type == "purchase":
        # a quarter of purchases are zero (vouchers, failed payments): the expr drops them
        amount: float = 0 if rng.random() < 0.25 else round(rng.uniform(1.0, 500.0), 2)
    else:
        amount = 0 if rng.random() < 0.8 else round(rng.uniform(0.5, 50.0), 2)
    os_name, form = rng.choice(_DEVICES)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start + index * 0.01))
    return {
        "event_id": f"{rng.getrandbits(128):032x}",
        "event_type": event_type,
        "user_id": f"user-{user:05d}",
        "amount": amount,
        "timestamp": f"{stamp}.{index % 100 * 10:03d}Z",
        "page": {
            "path": rng.choice(_PAGES),
            "item": rng.randrange(100_000),
            "referrer": rng.choice(_REFERRERS),
        },
        "device": {
            "os": os_name,
            "form": form,
            "locale": rng.choice(_LOCALES),
            "app_version": f"4.{rng.randrange(20)}.{rng.randrange(10)}",
        },
    }


def make_event(records: int, *, keys: int = 100, seed: int = 20_260_101) -> dict[str, Any]:
    """A Lambda Kinesis event of ``records`` JSON records (~250 bytes each), ``keys`` users.

    The user id is the partition key. Event types are about 50% click, 30% view, 20%
    purchase; most amounts of clicks and views are 0, most purchases are positive floats.
    Deterministic for a seed.
    """
    rng = random.Random(seed)
    factory = EventFactory(stream="bench-stream")
    start = 1_767_225_600.0
    pairs = []
    for i in range(records):
        user = rng.randrange(keys)
        pairs.append((f"user-{user:05d}", _document(rng, i, user, start)))
    return dict(factory.batch(pairs))


# --- the three implementations --------------------------------------------------------------


def shardline() -> Run:
    """The handler path: event -> records -> runner (built once, as at Lambda init)."""
    runner = build_runner(PLAN, "f")

    def run(event: dict[str, Any]) -> tuple[dict[str, Any], int]:
        result = runner.handle(event)  # what stream.lambda_handler.handler runs
        return dict(result.response), result.written.get(SINK, 0)

    return run


class _Context:
    """The few LambdaContext attributes anything might read; Powertools reads none here."""

    function_name = "bench"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench"
    memory_limit_in_mb = 1024
    aws_request_id = "00000000-0000-0000-0000-000000000000"
    log_group_name = "/aws/lambda/bench"
    log_stream_name = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def powertools() -> Run:
    """``process_partial_response`` with a record handler doing the same work by hand.

    Powertools is imported here, not with the module: ``python -m bench memory`` imports
    this module in the processes whose whole resident set it reports.
    """
    import jmespath  # noqa: PLC0415
    from aws_lambda_powertools.utilities.batch import (  # noqa: PLC0415
        BatchProcessor,
        EventType,
        process_partial_response,
    )

    processor = BatchProcessor(event_type=EventType.KinesisDataStreams)
    expression = jmespath.compile(EXPR)
    kept_types = frozenset(KEPT_TYPES)
    context = _Context()
    routed: dict[str, list[dict[str, Any]]] = {SINK: []}

    def record_handler(record: Any) -> None:
        doc = record.kinesis.data_as_json()
        if doc.get("event_type") not in kept_types:
            return
        if not expression.search(doc):
            return
        doc["pipeline"] = "bench"
        if doc.get("event_type") == "purchase":  # the route: purchase -> out, default -> out
            routed[SINK].append(doc)
        else:
            routed[SINK].append(doc)

    def run(event: dict[str, Any]) -> tuple[dict[str, Any], int]:
        response = process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
        kept = len(routed[SINK])
        routed[SINK] = []  # the routed documents die with the invocation, as in the others
        return dict(response), kept

    return run


def plain() -> Run:
    """The floor: a loop with orjson and inline conditions, no framework."""
    loads = orjson.loads

    def run(event: dict[str, Any]) -> tuple[dict[str, Any], int]:
        out: list[dict[str, Any]] = []
        for entry in event["Records"]:
            doc = loads(a2b_base64(entry["kinesis"]["data"]))
            if doc.get("event_type") not in ("click", "purchase"):
                continue
            amount = doc.get("amount")
            if not (
                (isinstance(amount, int | float) and not isinstance(amount, bool) and amount > 0)
                or doc.get("event_type") == "click"
            ):
                continue
            doc["pipeline"] = "bench"
            if doc.get("event_type") == "purchase":  # the route, as above
                out.append(doc)
            else:
                out.append(doc)
        failures: list[dict[str, str]] = []
        return {"batchItemFailures": failures}, len(out)

    return run


#: name -> factory, in table order.
IMPLEMENTATIONS: dict[str, Callable[[], Run]] = {
    "shardline": shardline,
    "powertools": powertools,
    "plain": plain,
}
_LABELS = {
    "shardline": "shardline",
    "powertools": "powertools BatchProcessor",
    "plain": "plain loop (orjson)",
}


# --- measuring ------------------------------------------------------------------------------


def _check(kept: dict[str, int], responses: dict[str, dict[str, Any]]) -> None:
    if len(set(kept.values())) != 1:
        counts = ", ".join(f"{name} kept {n}" for name, n in kept.items())
        msg = f"the implementations disagree ({counts}): they do not do the same filtering"
        raise BenchError(msg)
    for name, response in responses.items():
        if response != {"batchItemFailures": []}:
            msg = f"{name} reported failures on a clean batch: {response!r}"
            raise BenchError(msg)


def measure(
    event: dict[str, Any], repeat: int, warmup: int = 2, names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Time each implementation on ``event``; return per-implementation timings and counts.

    Raises:
        BenchError: the implementations kept different numbers of records, or one reported
            failures.
    """
    runs = {name: IMPLEMENTATIONS[name]() for name in names or IMPLEMENTATIONS}
    order = list(runs)
    times: dict[str, list[float]] = {name: [] for name in order}
    kept: dict[str, int] = {}
    for i in range(warmup + repeat):
        shift = i % len(order)
        responses: dict[str, dict[str, Any]] = {}
        for name in order[shift:] + order[:shift]:
            fn = runs[name]
            t0 = time.perf_counter()
            response, n = fn(event)
            elapsed = time.perf_counter() - t0
            responses[name], kept[name] = response, n
            if i >= warmup:
                times[name].append(elapsed)
        _check(kept, responses)
    n_records = len(event["Records"])
    results = {
        name: {
            "median_us_per_record": statistics.median(times[name]) / n_records * 1e6,
            "best_us_per_record": min(times[name]) / n_records * 1e6,
            "kept": kept[name],
        }
        for name in order
    }
    return {"records": n_records, "repeat": repeat, "warmup": warmup, "results": results}


def measure_metrics(event: dict[str, Any], repeat: int, warmup: int = 2) -> dict[str, Any]:
    """Time ``runner.invoke`` with metrics off and on, paired; see the module docstring.

    Raises:
        BenchError: a run reported failures on the clean batch.
    """
    context = _Context()
    runners = {
        "off": build_runner(PLAN, "f", metrics=False),
        "on": build_runner(PLAN, "f", metrics=True),
    }
    times: dict[str, list[float]] = {"off": [], "on": []}
    n_records = len(event["Records"])
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        for i in range(warmup + repeat):
            for name in ("off", "on") if i % 2 else ("on", "off"):
                t0 = time.perf_counter()
                response = runners[name].invoke(event, context)
                elapsed = time.perf_counter() - t0
                if response != {"batchItemFailures": []}:
                    msg = f"metrics {name}: failures on a clean batch: {response!r}"
                    raise BenchError(msg)
                if i >= warmup:
                    times[name].append(elapsed)
        # The metrics work alone, on a result of this event: documents built and written.
        metrics = runners["on"].metrics
        if metrics is None:  # pragma: no cover  # built with metrics=True just above
            msg = "the metrics runner has no metrics"
            raise BenchError(msg)
        result = runners["on"].handle(event)
        rounds = 200
        t0 = time.perf_counter()
        for _ in range(rounds):
            metrics.emit(result, n_records)
        emit_s = (time.perf_counter() - t0) / rounds
    paired = sorted(on / off - 1.0 for on, off in zip(times["on"], times["off"], strict=True))
    off_median = statistics.median(times["off"])
    overhead = statistics.median(paired)
    quartiles = statistics.quantiles(paired, n=4) if len(paired) > 1 else [overhead] * 3
    return {
        "off": {
            "median_us_per_record": off_median / n_records * 1e6,
            "best_us_per_record": min(times["off"]) / n_records * 1e6,
        },
        "on": {
            "median_us_per_record": statistics.median(times["on"]) / n_records * 1e6,
            "best_us_per_record": min(times["on"]) / n_records * 1e6,
        },
        "repeat": repeat,
        "overhead_paired_median": overhead,
        "overhead_paired_quartiles": [quartiles[0], quartiles[2]],
        "emit_us_per_invocation": emit_s * 1e6,
        "emit_share": emit_s / off_median,
        "documents": len(metrics.documents(result, n_records)),
        "target": f"< {METRICS_TARGET:.0%}",
        "pass": overhead < METRICS_TARGET,
    }


def _ratios(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ours = results.get("shardline")
    if ours is None:
        return out
    if "powertools" in results:
        theirs = results["powertools"]
        median = theirs["median_us_per_record"] / ours["median_us_per_record"]
        best = theirs["best_us_per_record"] / ours["best_us_per_record"]
        out["throughput_vs_powertools"] = {
            "median": median,
            "best": best,
            "target": f">= {POWERTOOLS_TARGET}",
            "pass": median >= POWERTOOLS_TARGET,
        }
    if "plain" in results:
        floor = results["plain"]
        median = ours["median_us_per_record"] / floor["median_us_per_record"]
        best = ours["best_us_per_record"] / floor["best_us_per_record"]
        out["time_vs_plain"] = {
            "median": median,
            "best": best,
            "target": f"<= {PLAIN_TARGET}",
            "pass": median <= PLAIN_TARGET,
        }
    return out


def _table(report: dict[str, Any]) -> str:
    results, ratios = report["results"], report["ratios"]
    lines = [
        f"handler path, {report['records']:,} records of ~{report['avg_bytes']} B JSON, "
        f"{report['repeat']} repeats after {report['warmup']} warm-up "
        f"(Python {report['python']}, orjson {report['orjson']})",
        "",
        f"{'':<27}{'median µs/rec':>14}{'best µs/rec':>13}{'kept':>8}",
    ]
    for name, row in results.items():
        lines.append(
            f"{_LABELS[name]:<27}{row['median_us_per_record']:>14.3f}"
            f"{row['best_us_per_record']:>13.3f}{row['kept']:>8}"
        )
    lines.append("")
    if "throughput_vs_powertools" in ratios:
        r = ratios["throughput_vs_powertools"]
        lines.append(
            f"shardline throughput / powertools: {r['median']:5.2f}x median, {r['best']:5.2f}x best"
            f"   target {r['target']}x   {'PASS' if r['pass'] else 'MISS'}"
        )
    if "time_vs_plain" in ratios:
        r = ratios["time_vs_plain"]
        lines.append(
            f"shardline time / plain loop:       {r['median']:5.2f}x median, {r['best']:5.2f}x best"
            f"   target {r['target']}x   {'PASS' if r['pass'] else 'MISS'}"
        )
    m = report.get("metrics")
    if m is not None:
        lines += [
            "",
            "metrics (runner.invoke, what the handler runs; EMF lines written to os.devnull)",
            f"{'':<27}{'median µs/rec':>14}{'best µs/rec':>13}",
        ]
        for name in ("off", "on"):
            row = m[name]
            lines.append(
                f"{'shardline, metrics ' + name:<27}{row['median_us_per_record']:>14.3f}"
                f"{row['best_us_per_record']:>13.3f}"
            )
        lines += [
            "",
            f"metrics on / off, {m['repeat']} paired repeats: "
            f"{m['overhead_paired_median']:+.2%} median "
            f"(quartiles {m['overhead_paired_quartiles'][0]:+.2%} .. "
            f"{m['overhead_paired_quartiles'][1]:+.2%})"
            f"   target {m['target']}   {'PASS' if m['pass'] else 'MISS'}",
            f"metrics work alone: {m['emit_us_per_invocation']:.1f} µs per invocation "
            f"({m['documents']} EMF lines), {m['emit_share']:.3%} of the handler's median",
        ]
    return "\n".join(lines)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        msg = f"expected a positive integer, got {text}"
        raise argparse.ArgumentTypeError(msg)
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table (or JSON with ``--json``); 0 unless it breaks."""
    parser = argparse.ArgumentParser(
        prog="python -m bench handler",
        description="µs per record of the Lambda handler path: shardline vs Powertools "
        "BatchProcessor vs a plain orjson loop, same event, one process.",
    )
    parser.add_argument("--records", type=_positive, default=10_000, help="records per event")
    parser.add_argument("--repeat", type=_positive, default=15, help="timed runs of each")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs of each first")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--metrics-repeat",
        type=_positive,
        default=41,
        help="timed pairs of the metrics off/on comparison (more than --repeat: the "
        "difference sought is small beside the noise)",
    )
    parser.add_argument(
        "--no-metrics", action="store_true", help="skip the metrics off/on comparison"
    )
    args = parser.parse_args(argv)

    event = make_event(args.records)
    sizes = [len(a2b_base64(e["kinesis"]["data"])) for e in event["Records"]]
    try:
        report = measure(event, args.repeat, max(args.warmup, 0))
        if not args.no_metrics:
            report["metrics"] = measure_metrics(event, args.metrics_repeat, max(args.warmup, 0))
    except BenchError as exc:
        print(f"bench handler: FAILED: {exc}", file=sys.stderr)
        return 1
    report["avg_bytes"] = round(sum(sizes) / len(sizes))
    report["python"] = platform.python_version()
    report["orjson"] = orjson.__version__
    report["gc_enabled"] = gc.isenabled()
    report["ratios"] = _ratios(report["results"])
    if args.json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        print(_table(report))
    return 0
