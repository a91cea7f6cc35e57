"""``python -m bench coldstart``: what a Lambda cold start pays for the handler, as deployed.

**What is imported.** Not the checkout: its editable install puts a finder in ``site`` that
imports ``pathlib``, ``importlib.util``, ``inspect`` and more at interpreter start, which a
Lambda never runs (and which then looks free to the handler). The function's code folder is
laid out by :func:`deploy.aws.package.stage_code`, what ``shardline package`` zips:
``stream/``, ``processors/``, ``sinks/`` and the plan at ``stream/pipeline.json``; beside
them a copy of this machine's orjson, the one run-time dependency a stdout-only plan loads
(anything else it imported would fail the run). Lambda's runtime interface client
(``awslambdaric``, with ``simplejson`` and ``snapshot-restore-py``) is copied to a second
folder, as ``/var/runtime`` holds it. Each run is a fresh interpreter of an empty venv (no
``.pth``, no finder), ``PYTHONPATH`` = the two folders, ``AWS_LAMBDA_FUNCTION_NAME`` set, so
that the import reads the plan and builds the runner as Lambda's init phase does.

**What is measured**, with ``time.perf_counter`` inside the process (never ``-X
importtime``, which slows imports down):

* *bare*: ``import stream.lambda_handler`` in an interpreter that ran only ``site``: our
  code, orjson and every standard-library module either loads.
* *after the runtime*: the same import after ``import awslambdaric.bootstrap`` in the same
  process. Lambda's bootstrap has imported that module (and with it ``json``, ``logging``,
  ``traceback``, ``threading``, ``decimal``, ``simplejson``, ``enum``, ``re``...) and set up
  logging before it imports the handler (``bootstrap.run`` -> ``_get_handler`` ->
  ``importlib.import_module``), so this increment is what a cold start pays for our code.
* *first invocation*: then ``handler(event)`` on a small batch (``--batch`` records, one in
  two kept by the filter and printed by the stdout sink), in the same process. Work moved
  from import to the first call shows up here, so "import + first" is the figure to compare.

``-X importtime`` runs (the same process, alternated with the timed ones) give the listing:
orjson's own import after the runtime (its extension loads ``dataclasses``, ``inspect``,
``uuid``, ``platform``, ``datetime`` when imported; fixed while orjson is the JSON library),
and the modules our import loads by their own time.

``--against REV`` lays out a second code folder from the git revision ``REV`` (only
``stream/``, ``processors/``, ``sinks/`` are taken from it) and alternates its runs with the
working tree's, so that before and after are measured under the same load.

Bytecode: by default every folder's runs share a ``PYTHONPYCACHEPREFIX`` that an untimed
first run fills (a zip built with ``--compile-with``); ``--no-bytecode`` compiles every module
from source on every run (a zip of sources only: ``/var/task`` is read-only).
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import venv
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from deploy.aws.package import stage_code
from stream.plan import PLAN_VERSION
from stream.testing import EventFactory

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "HEAVY",
    "PLAN",
    "ImportTime",
    "Sample",
    "main",
    "measure",
    "parse_importtime",
]

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

#: Distributions the function folder gets beside our code (a stdout-only plan imports these).
TASK_DISTRIBUTIONS = ("orjson",)
#: Lambda's runtime interface client and what it imports, for the runtime folder.
RUNTIME_DISTRIBUTIONS = ("awslambdaric", "simplejson", "snapshot-restore-py")
#: What Lambda's Python runtime has imported when it imports the handler.
RUNTIME_PRELUDE = "import awslambdaric.bootstrap"

#: Modules a stdout-only handler must not load (deploy-side or client libraries), and
#: jmespath, which only a plan with an expression needs.
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

#: The child: times the prelude, the handler's import and the first invocation, then writes
#: one line of figures to stderr. Only ``time`` (built in) is imported before the timed parts.
_CHILD = """\
import time
_clock = time.perf_counter
_t0 = _clock()
{prelude}
_t1 = _clock()
import stream.lambda_handler
_t2 = _clock()
import sys
_imported = list(sys.modules)
import orjson as _orjson  # already loaded by the handler
with open({event!r}, "rb") as _f:
    _event = _orjson.loads(_f.read())
_t3 = _clock()
_result = stream.lambda_handler.handler(_event, None)
_t4 = _clock()
_seen = set(_imported)
_later = [m for m in sys.modules if m not in _seen]
sys.stdout.flush()
sys.stderr.write("SHARDLINE-COLD " + repr(dict(
    prelude=_t1 - _t0, imported=_t2 - _t1, first=_t4 - _t3, modules=len(_imported),
    later=_later, failures=len(_result["batchItemFailures"]),
    heavy=sorted(m for m in {heavy!r} if m in sys.modules),
    origin=stream.lambda_handler.__file__,
    editable=sorted(m for m in sys.modules if m.startswith("__editable__")),
)) + "\\n")
"""

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


@dataclass(slots=True)
class Sample:
    """The runs of one code folder in one mode (bare or after the runtime).

    Attributes:
        imported: seconds of ``import stream.lambda_handler``, one per run.
        first: seconds of the first ``handler(event)``, one per run.
        reports: the ``-X importtime`` reports of the listing runs.
        last: what the last timed run reported: ``later``, the modules first imported by
            the first invocation; ``heavy``, the :data:`HEAVY` modules loaded; ``modules``,
            ``len(sys.modules)`` after the import; ``origin``, the handler module's file;
            ``editable``, any editable-install finder module loaded (there should be none).
    """

    imported: list[float] = field(default_factory=list)
    first: list[float] = field(default_factory=list)
    reports: list[list[ImportTime]] = field(default_factory=list)
    last: dict[str, Any] = field(default_factory=dict)


def _copy_distribution(name: str, dest: Path) -> None:
    """Copy an installed distribution's files (not its scripts or metadata) into ``dest``."""
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        msg = f"{name} is not installed here: pip install -e '.[local]'"
        raise RuntimeError(msg) from None
    for file in dist.files or ():
        parts = file.parts
        if parts[0] == ".." or parts[0].endswith(".dist-info") or "__pycache__" in parts:
            continue
        target = dest.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(str(file.locate()), target)


def _stage_revision(rev: str, dest: Path) -> Path:
    """Extract ``stream/``, ``processors/``, ``sinks/`` of git revision ``rev`` into ``dest``."""
    dest.mkdir(parents=True)
    archive = subprocess.run(  # fixed arguments; rev is one argv item
        ["git", "archive", "--format=tar", rev, "stream", "processors", "sinks"],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        msg = f"git archive {rev}: {archive.stderr.decode(errors='replace').strip()}"
        raise RuntimeError(msg)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


@dataclass(frozen=True, slots=True)
class _Folder:
    """One laid-out function: its code folder and bytecode cache."""

    label: str
    task: Path
    cache: Path


def _lay_out(label: str, tmp: Path, source_root: Path | None) -> _Folder:
    task = tmp / label / "task"
    task.mkdir(parents=True)
    stage_code(PLAN, task, source_root=source_root)  # type: ignore[arg-type]
    for name in TASK_DISTRIBUTIONS:
        _copy_distribution(name, task)
    return _Folder(label, task, tmp / label / "pycache")


def _env(folder: _Folder, runtime: Path, bytecode: bool) -> dict[str, str]:
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TZ") if k in os.environ}
    env.update(
        PYTHONPATH=os.pathsep.join([str(folder.task), str(runtime)]),
        LAMBDA_TASK_ROOT=str(folder.task),
        AWS_LAMBDA_FUNCTION_NAME="cold",
        AWS_REGION="us-east-1",
    )
    if bytecode:
        env["PYTHONPYCACHEPREFIX"] = str(folder.cache)
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _run(
    python: Path, env: dict[str, str], code: str, importtime: bool
) -> tuple[dict[str, Any], list[ImportTime]]:
    argv = [str(python), *(["-X", "importtime"] if importtime else []), "-c", code]
    proc = subprocess.run(  # our own child code, fixed arguments
        argv, cwd=env["LAMBDA_TASK_ROOT"], env=env, capture_output=True, text=True, check=False
    )
    figures = [ln for ln in proc.stderr.splitlines() if ln.startswith("SHARDLINE-COLD ")]
    if proc.returncode != 0 or not figures:
        tail = "\n".join(proc.stderr.splitlines()[-15:])
        msg = f"importing {HANDLER} failed (exit {proc.returncode}):\n{tail}"
        raise RuntimeError(msg)
    result: dict[str, Any] = ast.literal_eval(figures[-1].partition(" ")[2])
    if result["failures"]:
        msg = f"the first invocation reported {result['failures']} batchItemFailures"
        raise RuntimeError(msg)
    return result, parse_importtime(proc.stderr) if importtime else []


MODES = ("bare", "runtime")


def measure(
    repeat: int, *, bytecode: bool = True, against: str | None = None, batch: int = 10
) -> dict[str, Any]:
    """Lay out the function(s), run them alternately ``repeat`` times each; the figures."""
    with tempfile.TemporaryDirectory(prefix="shardline-cold-") as tmp_name:
        tmp = Path(tmp_name)
        python_dir = tmp / "python"
        venv.create(python_dir, with_pip=False, symlinks=True, clear=True)
        python = python_dir / "bin" / "python"
        runtime = tmp / "runtime"
        for name in RUNTIME_DISTRIBUTIONS:
            _copy_distribution(name, runtime)
        folders = [_lay_out("working tree", tmp, None)]
        if against is not None:
            source = _stage_revision(against, tmp / "rev-source")
            folders.insert(0, _lay_out(against, tmp, source))
        event_path = tmp / "event.json"
        factory = EventFactory()
        event = factory.batch((f"k{i}", {"a": i % 2, "n": i}) for i in range(batch))
        event_path.write_bytes(orjson.dumps(event))
        codes = {
            mode: _CHILD.format(
                prelude=RUNTIME_PRELUDE if mode == "runtime" else "",
                event=str(event_path),
                heavy=HEAVY,
            )
            for mode in MODES
        }
        samples = {(f.label, mode): Sample() for f in folders for mode in MODES}
        envs = {f.label: _env(f, runtime, bytecode) for f in folders}
        for folder in folders:  # fills the bytecode cache, or warms the OS file cache
            _run(python, envs[folder.label], codes["runtime"], importtime=False)
        for _ in range(repeat):
            for importtime in (False, True):
                for mode in MODES:
                    for folder in folders:
                        result, report = _run(python, envs[folder.label], codes[mode], importtime)
                        sample = samples[folder.label, mode]
                        if importtime:
                            sample.reports.append(report)
                            continue
                        sample.imported.append(result["imported"])
                        sample.first.append(result["first"])
                        sample.last = result
    return {
        "runs": repeat,
        "bytecode_cache": bytecode,
        "batch": batch,
        "python": sys.version.split()[0],
        "folders": [
            {"code": f.label, **{mode: _figures(samples[f.label, mode]) for mode in MODES}}
            for f in folders
        ],
    }


def _ms(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values) * 1e3, "best": min(values) * 1e3}


def _figures(sample: Sample) -> dict[str, Any]:
    total = [a + b for a, b in zip(sample.imported, sample.first, strict=True)]
    handler_us = [_cumulative(r, HANDLER) for r in sample.reports]
    orjson_us = [_cumulative(r, "orjson") for r in sample.reports]
    median_report = sample.reports[
        sorted(range(len(handler_us)), key=handler_us.__getitem__)[(len(handler_us) - 1) // 2]
    ]
    ours = _under(median_report, HANDLER)
    return {
        "import_ms": _ms(sample.imported),
        "first_invocation_ms": _ms(sample.first),
        "import_and_first_ms": _ms(total),
        "importtime_handler_ms": statistics.median(handler_us) / 1e3,
        "importtime_orjson_ms": statistics.median(orjson_us) / 1e3,
        "modules_after_import": sample.last["modules"],
        "first_invocation_imports": sample.last["later"],
        "heavy_loaded": sample.last["heavy"],
        "handler_file": sample.last["origin"],
        "editable_finders": sample.last["editable"],
        "top_self": [
            {"module": m.module, "self_us": m.self_us, "cumulative_us": m.cumulative_us}
            for m in sorted(ours, key=lambda m: m.self_us, reverse=True)[:15]
        ],
    }


def _cumulative(report: Sequence[ImportTime], name: str) -> int:
    return next((m.cumulative_us for m in report if m.module == name), 0)


def _under(report: Sequence[ImportTime], name: str) -> list[ImportTime]:
    """The lines of ``name`` and of the modules it imported (they precede it, deeper)."""
    end = next((i for i, m in enumerate(report) if m.module == name and m.depth == 0), None)
    if end is None:
        return []
    start = end
    while start > 0 and report[start - 1].depth > 0:
        start -= 1
    return list(report[start : end + 1])


def _text(report: dict[str, Any]) -> str:
    cache = "warm bytecode cache" if report["bytecode_cache"] else "no bytecode (compiled each run)"
    lines = [
        f"cold start of {HANDLER} as deployed: the code folder `shardline package` zips "
        "(stdout-only plan) in a fresh interpreter of a clean venv, Python "
        f"{report['python']}, {report['runs']} runs of each row, alternated, {cache}",
        "  bare           = import in an interpreter that ran only `site`",
        "  after runtime  = the same import after `import awslambdaric.bootstrap` "
        "(what Lambda's runtime has loaded): what a cold start pays for our code",
        f"  first call     = handler(event) on {report['batch']} records right after the import",
        "",
        f"{'code':<16}{'mode':<15}{'import ms':>16}{'first call ms':>16}"
        f"{'import+first ms':>18}   (median / best)",
    ]
    for folder in report["folders"]:
        for mode, title in (("bare", "bare"), ("runtime", "after runtime")):
            fig = folder[mode]
            lines.append(
                f"{folder['code'][:15]:<16}{title:<15}"
                + "".join(
                    f"{fig[k]['median']:>9.1f} /{fig[k]['best']:>5.1f}"
                    for k in ("import_ms", "first_invocation_ms", "import_and_first_ms")
                )
            )
    last = report["folders"][-1]
    after = last["runtime"]
    lines += [
        "",
        f"{last['code']}, after the runtime (-X importtime, median run):",
        f"  orjson's own import: {after['importtime_orjson_ms']:.1f} ms of "
        f"{after['importtime_handler_ms']:.1f} ms (its extension loads dataclasses, inspect, "
        "uuid, platform, datetime; fixed while orjson is the JSON library)",
        f"  modules after the import: {after['modules_after_import']}; first imported by the "
        f"first call: {', '.join(after['first_invocation_imports']) or 'none'}",
        f"  client or CLI libraries loaded: {', '.join(after['heavy_loaded']) or 'none'}",
        "  what the import loads, by its own time:",
        f"{'self µs':>12}{'cumulative µs':>15}  module",
    ]
    lines += [
        f"{m['self_us']:>12}{m['cumulative_us']:>15}  {m['module']}" for m in after["top_self"]
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print (or ``--json``); returns 1 if the import or the first call fails."""
    parser = argparse.ArgumentParser(
        prog="python -m bench coldstart",
        description=f"cold start of {HANDLER} as deployed (fresh clean interpreters)",
    )
    parser.add_argument("--repeat", type=int, default=9, help="timed runs of each row")
    parser.add_argument("--batch", type=int, default=10, help="records of the first call")
    parser.add_argument(
        "--against",
        metavar="REV",
        help="also lay out stream/, processors/, sinks/ of this git revision; alternate runs",
    )
    parser.add_argument(
        "--no-bytecode", action="store_true", help="compile every module from source each run"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    try:
        report = measure(
            max(args.repeat, 1),
            bytecode=not args.no_bytecode,
            against=args.against,
            batch=max(args.batch, 1),
        )
    except RuntimeError as exc:
        print(f"bench coldstart: FAILED: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        print(_text(report))
    return 0
