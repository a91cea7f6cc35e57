"""``python -m bench memory``: peak memory of the handler path against the plain loop.

Issue 17's memory target: on a batch of 10,000 records of 1 KB of JSON, the handler's peak
at most 1.5x the plain loop's; and a 6 MB event (Lambda's largest synchronous payload) must
fit a 256 MB function with room to spare.

Each measurement is a fresh interpreter (``python -m bench memory --child ...``), so that
neither implementation inherits the other's heap. The parent writes the event as JSON once;
the child builds its implementation (Lambda init), then receives the event as Lambda's
runtime client hands it over: the request body read as bytes, parsed by a C JSON parser
(stdlib ``json``), the body still referenced while the handler runs. It then measures one
invocation two ways:

* **tracemalloc**: the peak of Python's own allocations during the call, above what was
  allocated before it (the event itself is not counted: Lambda hands it over);
* **RSS**: the process's peak resident set (``VmHWM``, reset through
  ``/proc/self/clear_refs`` just before the call) above the resident set before it. This is
  what Lambda's memory limit sees, allocator slack included.

Why the event is parsed from JSON in the child, not built there: building it (decoding,
padding and encoding every document) left several MB of freed heap that the call then
reused without growing the resident set, so "RSS above base" counted only what exceeded
that leftover, a different amount for each side (the plain loop's 13.6 MB showed as 5.0;
shardline's ratio read 1.75x before the change that met the target and 0.84x after it).
Parsing leaves little behind, as in Lambda, and RSS growth follows the allocations.

Both sides get the same event and do the same work: base64 and JSON of every record, the
two filters, the field set, the route; the plain loop keeps the documents it routes until
it returns, as the handler keeps its batch until the sinks are written.

RSS is measured on the child's first invocation (a later one reuses the heap the first grew,
so its RSS does not move), tracemalloc on the second. The 6 MB line is the whole process's
peak RSS while the handler runs, split into the interpreter (with orjson and the bench's
argparse), shardline's modules and runner, the event (body and parsed dict) and the
invocation's own peak; Powertools is not imported in these processes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import tracemalloc
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["FUNCTION_MB", "RATIO_TARGET", "main", "measure_child", "sized_event"]

#: Most the handler's peak may be, as a multiple of the plain loop's (issue 17).
RATIO_TARGET = 1.5
#: The function size the 6 MB batch must fit.
FUNCTION_MB = 256
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def sized_event(records: int, record_bytes: int) -> dict[str, Any]:
    """``bench.handler``'s event with each document padded to about ``record_bytes``."""
    from bench.handler import make_event  # noqa: PLC0415  # see measure_child

    event = make_event(records)
    from binascii import a2b_base64, b2a_base64  # noqa: PLC0415

    for entry in event["Records"]:
        kinesis = entry["kinesis"]
        doc = orjson.loads(a2b_base64(kinesis["data"]))
        pad = max(record_bytes - len(orjson.dumps(doc)) - 10, 0)
        doc["note"] = "x" * pad
        kinesis["data"] = b2a_base64(orjson.dumps(doc), newline=False).decode()
    return event


def _rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE


def _hwm_bytes() -> int:
    with open("/proc/self/status", "rb") as status:
        for line in status:
            if line.startswith(b"VmHWM:"):
                return int(line.split()[1]) * 1024
    msg = "no VmHWM in /proc/self/status"
    raise RuntimeError(msg)


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # resets the peak resident set (Linux >= 4.0)
    except OSError:
        return False
    return True


def measure_child(name: str, event_path: str) -> dict[str, Any]:
    """In this process: one implementation's peak memory on one invocation (see above)."""
    started_rss = _rss_bytes()  # the interpreter and this benchmark's own modules
    # what the function imports and builds at Lambda init (bench.handler imports the
    # runtime, not Powertools), measured apart from the interpreter
    from bench.handler import IMPLEMENTATIONS  # noqa: PLC0415

    run = IMPLEMENTATIONS[name]()
    init_rss = _rss_bytes()
    # The event as Lambda hands it over: the runtime client reads the request body and
    # parses it with a C JSON parser, and the body stays referenced while the handler runs.
    with open(event_path, "rb") as src:
        body = src.read()
    event = json.loads(body)
    gc.collect()
    base_rss = _rss_bytes()
    # RSS first, on the process's first invocation: later ones reuse the arenas the first
    # one grew, and their RSS does not move
    reset = _reset_hwm()
    run(event)
    peak_rss = _hwm_bytes()
    gc.collect()
    tracemalloc.start()
    base_traced = tracemalloc.get_traced_memory()[0]
    run(event)
    peak_traced = tracemalloc.get_traced_memory()[1] - base_traced
    tracemalloc.stop()
    del body
    return {
        "name": name,
        "event_bytes": os.path.getsize(event_path),
        "traced_peak_bytes": peak_traced,
        "rss_peak_above_base_bytes": peak_rss - base_rss if reset else None,
        "rss_peak_bytes": peak_rss,
        "rss_started_bytes": started_rss,
        "rss_init_bytes": init_rss,
        "rss_base_bytes": base_rss,
    }


def _child(name: str, event_path: str) -> dict[str, Any]:
    proc = subprocess.run(  # our own interpreter, fixed arguments
        [sys.executable, "-m", "bench", "memory", "--child", name, "--event", event_path],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        msg = f"bench memory child {name} failed:\n{proc.stderr[-2000:]}"
        raise RuntimeError(msg)
    report: dict[str, Any] = orjson.loads(proc.stdout.strip().splitlines()[-1])
    return report


def _write_event(directory: str, records: int, record_bytes: int) -> str:
    path = os.path.join(directory, f"event-{records}x{record_bytes}.json")
    with open(path, "wb") as out:
        out.write(orjson.dumps(sized_event(records, record_bytes)))
    return path


def _delta(row: dict[str, Any], high: str, low: str) -> str:
    return f"{(row[high + '_bytes'] - row[low + '_bytes']) / 2**20:6.1f}"


def _mb(n: float | None) -> str:
    return "   n/a" if n is None else f"{n / 2**20:6.1f}"


def main(argv: Sequence[str] | None = None) -> int:
    """Measure in fresh interpreters and print the table (or ``--json``)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench memory",
        description="peak memory of one invocation: shardline vs the plain loop",
    )
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--record-bytes", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3, help="fresh interpreters of each")
    parser.add_argument("--child", choices=["shardline", "plain"], help=argparse.SUPPRESS)
    parser.add_argument("--event", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-six-mb", action="store_true", help="skip the 6 MB event's run")
    args = parser.parse_args(argv)
    if args.child:
        print(orjson.dumps(measure_child(args.child, args.event)).decode())
        return 0
    rows: dict[str, list[dict[str, Any]]] = {"shardline": [], "plain": []}
    big = None
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        path = _write_event(tmp, args.records, args.record_bytes)
        for _ in range(max(args.repeat, 1)):
            for name, found in rows.items():
                found.append(_child(name, path))
        # Lambda's largest synchronous payload: 6 MB of event JSON, through the handler.
        if not args.no_six_mb:
            per_record = len(orjson.dumps(sized_event(10, 1024))) / 10
            big = _child("shardline", _write_event(tmp, int(6_000_000 / per_record), 1024))

    def med(name: str, key: str) -> float | None:
        values = [row[key] for row in rows[name] if row[key] is not None]
        return statistics.median(values) if values else None

    report: dict[str, Any] = {
        "records": args.records,
        "record_bytes": args.record_bytes,
        "event_bytes": rows["plain"][0]["event_bytes"],
        "repeat": args.repeat,
        "median": {
            name: {
                key: med(name, key) for key in ("traced_peak_bytes", "rss_peak_above_base_bytes")
            }
            for name in rows
        },
        "six_mb": big
        and {
            "event_bytes": big["event_bytes"],
            "rss_started_bytes": big["rss_started_bytes"],
            "rss_init_bytes": big["rss_init_bytes"],
            "rss_base_bytes": big["rss_base_bytes"],
            "rss_peak_bytes": big["rss_peak_bytes"],
            "headroom_mb": FUNCTION_MB - big["rss_peak_bytes"] / 2**20,
        },
    }
    ours, floor = report["median"]["shardline"], report["median"]["plain"]
    report["ratios"] = {
        key: (ours[key] / floor[key] if ours[key] and floor[key] else None)
        for key in ("traced_peak_bytes", "rss_peak_above_base_bytes")
    }
    if args.json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return 0
    ratio = report["ratios"]
    lines = [
        f"peak memory of one invocation, {args.records:,} records of ~{args.record_bytes} B "
        f"({report['event_bytes'] / 2**20:.1f} MB event), median of {args.repeat} fresh "
        "interpreters each",
        "",
        f"{'':<22}{'tracemalloc MB':>15}{'RSS above base MB':>19}",
    ]
    for name in rows:
        row = report["median"][name]
        lines.append(
            f"{name:<22}{_mb(row['traced_peak_bytes']):>15}"
            f"{_mb(row['rss_peak_above_base_bytes']):>19}"
        )
    for key, label in (("traced_peak_bytes", "tracemalloc"), ("rss_peak_above_base_bytes", "RSS")):
        value = ratio[key]
        verdict = "n/a" if value is None else ("PASS" if value <= RATIO_TARGET else "MISS")
        shown = "n/a" if value is None else f"{value:.2f}x"
        lines.append(
            f"shardline / plain ({label}): {shown}   target <= {RATIO_TARGET}x   {verdict}"
        )
    six = report["six_mb"]
    lines += (
        []
        if not six
        else [
            "",
            f"6 MB event ({six['event_bytes'] / 2**20:.1f} MB of JSON), handler path, whole "
            f"process resident set: {six['rss_peak_bytes'] / 2**20:.1f} MB at its peak of a "
            f"{FUNCTION_MB} MB function, headroom {six['headroom_mb']:.0f} MB",
            f"  the interpreter, orjson, the bench's argparse  "
            f"{six['rss_started_bytes'] / 2**20:6.1f} MB",
            f"  + shardline's modules and runner (init)        "
            f"{_delta(six, 'rss_init', 'rss_started')} MB",
            f"  + the event: request body and parsed dict      "
            f"{_delta(six, 'rss_base', 'rss_init')} MB",
            f"  + the invocation's own peak                    "
            f"{_delta(six, 'rss_peak', 'rss_base')} MB",
        ]
    )
    print("\n".join(lines))
    return 0
