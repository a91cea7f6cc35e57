"""``python -m bench coldstart``: what importing the Lambda handler module costs and loads.

Each run is a fresh interpreter, ``python -X importtime -c "import stream.lambda_handler"``,
with ``SHARDLINE_PIPELINE`` pointing at a compiled plan of a stdout-only pipeline, so the
import also builds the runner, exactly as Lambda's init phase does. The importtime report
(stderr) gives the cumulative time of ``stream.lambda_handler`` and of every module under it.

Bytecode: by default the runs share a temporary ``PYTHONPYCACHEPREFIX`` that a first, untimed
run fills, so the figures are for a package that ships (or has cached) ``.pyc`` files.
``--no-bytecode`` sets ``PYTHONDONTWRITEBYTECODE`` and an empty cache instead: every module
is compiled from source on every run, which is what a Lambda zip without ``.pyc`` costs
(``/var/task`` is read-only, so Lambda cannot cache them).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from stream.plan import PLAN_VERSION

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["HEAVY", "PLAN", "ImportTime", "main", "parse_importtime", "run_once"]

ROOT = Path(__file__).resolve().parents[1]
HANDLER = "stream.lambda_handler"

#: The compiled plan of a stdout-only pipeline: nothing in it needs an AWS client.
PLAN: dict[str, Any] = {
    "version": PLAN_VERSION,
    "name": "cold",
    "sinks": {"out": {"type": "stdout"}},
    "functions": {
        "f": {
            "processors": [{"filter": {"match": {"a": [1]}}}],
            "route": ["out"],
            "on_failure": None,
            "ordering": "per_key",
        }
    },
}

#: Modules a stdout-only handler must not load (deploy-side or client libraries), and
#: jmespath's visitor, which the expr compiler uses (listed for information).
HEAVY = (
    "boto3",
    "botocore",
    "opensearchpy",
    "yaml",
    "click",
    "rich",
    "aws_kinesis_agg",
    "google.protobuf",
    "jmespath",
)

_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S.*)$")


@dataclass(frozen=True, slots=True)
class ImportTime:
    """One module's line of ``-X importtime``.

    Attributes:
        module: the module name.
        self_us: time spent in the module's own body, µs.
        cumulative_us: including the modules it imported, µs.
        depth: nesting level (0 for a module imported by the ``-c`` code itself).
    """

    module: str
    self_us: int
    cumulative_us: int
    depth: int


def parse_importtime(stderr: str) -> list[ImportTime]:
    """Parse the ``-X importtime`` report; other lines are ignored.

    >>> parse_importtime("import time:       590 |       1540 |   os.path")[0].cumulative_us
    1540
    """
    out: list[ImportTime] = []
    for line in stderr.splitlines():
        match = _LINE.match(line)
        if match:
            self_us, cumulative, indent, name = match.groups()
            out.append(ImportTime(name, int(self_us), int(cumulative), (len(indent) - 1) // 2))
    return out


def _present(modules: Sequence[ImportTime], name: str) -> bool:
    return any(m.module == name or m.module.startswith(name + ".") for m in modules)


#: What Lambda's Python runtime has imported before it imports the handler: its bootstrap
#: (awslambdaric, the `local` extra; logging, json, decimal, traceback, threading...).
RUNTIME_PRELUDE = "import awslambdaric.bootstrap; "


def run_once(env: dict[str, str], prelude: str = "") -> tuple[list[ImportTime], float]:
    """One fresh interpreter importing the handler: (importtime lines, process wall seconds).

    Raises:
        RuntimeError: the import failed (its stderr is in the message).
    """
    t0 = time.perf_counter()
    proc = subprocess.run(  # our own interpreter, fixed arguments
        [sys.executable, "-X", "importtime", "-c", f"{prelude}import {HANDLER}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.splitlines()[-15:])
        msg = f"importing {HANDLER} failed (exit {proc.returncode}):\n{tail}"
        raise RuntimeError(msg)
    return parse_importtime(proc.stderr), wall


def _child_env(plan_path: Path, cache: Path, bytecode: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDLINE_")}
    env["SHARDLINE_PIPELINE"] = str(plan_path)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONPYCACHEPREFIX"] = str(cache)
    if bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def measure(repeat: int, bytecode: bool = True, after_runtime: bool = False) -> dict[str, Any]:
    """Run the import ``repeat`` times (after one untimed run); return the figures."""
    with tempfile.TemporaryDirectory(prefix="shardline-cold-") as tmp:
        plan_path = Path(tmp, "pipeline.json")
        plan_path.write_bytes(orjson.dumps(PLAN))
        env = _child_env(plan_path, Path(tmp, "pycache"), bytecode)
        prelude = RUNTIME_PRELUDE if after_runtime else ""
        run_once(env, prelude)  # fills the bytecode cache (or, without it, warms the OS file cache)
        runs = [run_once(env, prelude) for _ in range(repeat)]
    totals = []
    orjson_us = []  # orjson's own import: datetime, uuid, dataclasses, json, enum
    for modules, _ in runs:
        handler = [m for m in modules if m.module == HANDLER]
        if not handler:
            msg = f"{HANDLER} is missing from the importtime report"
            raise RuntimeError(msg)
        totals.append(handler[-1].cumulative_us)
        orjson_us.append(next((m.cumulative_us for m in modules if m.module == "orjson"), 0))
    median_run = sorted(range(repeat), key=totals.__getitem__)[(repeat - 1) // 2]
    modules = runs[median_run][0]
    top = sorted(modules, key=lambda m: m.cumulative_us, reverse=True)[:10]
    return {
        "runs": repeat,
        "bytecode_cache": bytecode,
        "after_runtime": after_runtime,
        "handler_cumulative_us": {"median": statistics.median(totals), "best": min(totals)},
        "orjson_cumulative_us": {"median": statistics.median(orjson_us), "best": min(orjson_us)},
        "process_wall_ms": {
            "median": statistics.median(w for _, w in runs) * 1e3,
            "best": min(w for _, w in runs) * 1e3,
        },
        "modules_imported": len(modules),
        "top": [
            {"module": m.module, "cumulative_us": m.cumulative_us, "self_us": m.self_us}
            for m in top
        ],
        "present": {name: _present(modules, name) for name in HEAVY},
    }


def _text(report: dict[str, Any]) -> str:
    handler, wall = report["handler_cumulative_us"], report["process_wall_ms"]
    cache = "warm bytecode cache" if report["bytecode_cache"] else "no bytecode (compiled each run)"
    lines = [
        f"cold start: import {HANDLER} (stdout-only plan, runner built at import), "
        f"{report['runs']} fresh interpreters, {cache}"
        + (", after Lambda's runtime bootstrap (awslambdaric)" if report["after_runtime"] else ""),
        "",
        f"{HANDLER} cumulative: {handler['median'] / 1e3:.1f} ms median, "
        f"{handler['best'] / 1e3:.1f} ms best",
        f"  of which orjson's own import (it loads datetime, uuid, dataclasses, json, enum): "
        f"{report['orjson_cumulative_us']['median'] / 1e3:.1f} ms median, "
        f"{report['orjson_cumulative_us']['best'] / 1e3:.1f} ms best",
        f"whole process (interpreter start + import + exit): {wall['median']:.0f} ms median, "
        f"{wall['best']:.0f} ms best; {report['modules_imported']} modules imported",
        "",
        "top 10 modules by cumulative import time (median run):",
        f"{'cumulative µs':>14}{'self µs':>10}  module",
    ]
    lines += [f"{m['cumulative_us']:>14}{m['self_us']:>10}  {m['module']}" for m in report["top"]]
    lines += ["", "heavy modules:"]
    lines += [
        f"  {name:<16} {'LOADED' if loaded else 'absent'}"
        for name, loaded in report["present"].items()
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print (or ``--json``); returns 1 if the import fails."""
    parser = argparse.ArgumentParser(
        prog="python -m bench coldstart",
        description=f"import cost of {HANDLER} in fresh interpreters (python -X importtime)",
    )
    parser.add_argument("--repeat", type=int, default=7, help="timed fresh interpreters")
    parser.add_argument(
        "--no-bytecode", action="store_true", help="compile every module from source each run"
    )
    parser.add_argument(
        "--after-runtime",
        action="store_true",
        help="import Lambda's runtime bootstrap (awslambdaric) first, as Lambda has when it "
        "imports the handler: what the handler itself adds",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    try:
        report = measure(
            max(args.repeat, 1), bytecode=not args.no_bytecode, after_runtime=args.after_runtime
        )
    except RuntimeError as exc:
        print(f"bench coldstart: FAILED: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        print(_text(report))
    return 0
