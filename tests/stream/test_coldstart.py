"""Importing the handler of a stdout-only pipeline loads no client or CLI library.

The import time is measured and printed (``pytest -s`` shows it), never asserted: timings
belong to ``python -m bench coldstart``, not to the test suite.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import orjson
import pytest

from stream.plan import PLAN_VERSION

ROOT = Path(__file__).resolve().parents[2]
PLAN = {
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
WATCHED = (
    "boto3",
    "botocore",
    "opensearchpy",
    "yaml",
    "click",
    "rich",
    "aws_kinesis_agg",
    "google.protobuf",
    "jmespath",
    "importlib.metadata",
    "typing",
    "processors.base",
    "stream.shapes",
)
FORBIDDEN = {
    # typing is two milliseconds that nothing on the path needs at run time: the modules use
    # TYPE_CHECKING = False, and the TypedDicts and the Protocol load on first use
    "typing",
    "processors.base",
    "stream.shapes",
    "jmespath",  # the pipeline has no JMESPath expression
    "importlib.metadata",  # built-in processors and sinks need no entry points
    "boto3",
    "botocore",
    "opensearchpy",
    "yaml",
    "click",
    "rich",
    "aws_kinesis_agg",
    "google.protobuf",
}
OURS = ("stream", "processors", "sinks")
#: The child: imports the handler (which builds the runner), then prints the watched modules
#: loaded, the classes of ours that are dataclasses, and the regexes our code compiled.
CODE = f"""\
import re, sys
compiled = []
_compile = re._compile
def _spy(pattern, flags):
    frame = sys._getframe(1)
    while frame.f_globals.get("__name__") == "re":
        frame = frame.f_back
    caller = frame.f_globals.get("__name__", "")
    if caller.partition(".")[0] in {OURS!r}:
        compiled.append(caller + ": " + str(pattern))
    return _compile(pattern, flags)
re._compile = _spy
import gc
collections = []
def _count(phase, info):  # a collection while code of ours runs
    frame = sys._getframe(1) if phase == "start" else None
    while frame and frame.f_globals.get("__name__", "").partition(".")[0] not in {OURS!r}:
        frame = frame.f_back
    if frame:
        collections.append(info["generation"])
gc.callbacks.append(_count)
import stream.lambda_handler
gc.callbacks.remove(_count)
re._compile = _compile
print(sorted(m for m in {WATCHED!r} if m in sys.modules))
print(sorted(
    f"{{name}}.{{value.__qualname__}}"
    for name, module in list(sys.modules.items())
    if name.partition(".")[0] in {OURS!r}
    for value in vars(module).values()
    if isinstance(value, type) and value.__module__ == name
    and "__dataclass_fields__" in vars(value)
))
print(compiled)
print([collections, gc.isenabled()])
"""


class Cold(NamedTuple):
    """What one fresh interpreter's import of the handler showed."""

    loaded: list[str]  # the WATCHED modules loaded
    importtime: str  # the -X importtime report
    dataclasses: list[str]  # classes of ours on the path made by the dataclass decorator
    compiled: list[str]  # "module: pattern" of each regex our code compiled
    collections: list[int]  # the generation of each collection while our import code ran
    collecting: bool  # whether the collector was on after it


@pytest.fixture(scope="module")
def cold_import(tmp_path_factory: pytest.TempPathFactory) -> Cold:
    """The import of the handler with a stdout-only plan, in one fresh interpreter."""
    plan = tmp_path_factory.mktemp("cold") / "pipeline.json"
    plan.write_bytes(orjson.dumps(PLAN))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDLINE_")}
    env["SHARDLINE_PIPELINE"] = str(plan)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", CODE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()[-4:]
    loaded, dataclasses, compiled, (collections, enabled) = map(ast.literal_eval, lines)
    return Cold(loaded, proc.stderr, dataclasses, compiled, collections, enabled)


class TestColdStart:
    def test_stdout_pipeline_loads_no_client_or_cli_library(self, cold_import: Cold) -> None:
        """boto3, opensearch-py, PyYAML, click, rich, KPL and protobuf stay unloaded."""
        loaded = cold_import.loaded
        print(f"\nwatched modules loaded by the handler import: {loaded}")
        assert FORBIDDEN.isdisjoint(loaded), loaded

    def test_no_dataclass_decorator_on_the_path(self, cold_import: Cold) -> None:
        """No class the handler's import defines is a dataclass: the decorator compiles its
        methods from source at import (``DeadLetter``'s were 5 M instructions of a cold
        start); the classes on the path take their value methods from ``stream.values``."""
        assert cold_import.dataclasses == []

    def test_no_regex_compiled_for_a_plan_without_one(self, cold_import: Cold) -> None:
        """Module-level patterns are compiled where first used (``processors.match``'s CIDR
        shapes were a fifth of that module's import); this plan's filter needs none."""
        assert cold_import.compiled == []

    def test_no_garbage_collection_while_the_cold_start_builds(self, cold_import: Cold) -> None:
        """The handler turns the collector off before anything of its import (orjson's too:
        the ``stream`` package imports nothing up front) and back on after the build; the
        collections it skips were 5% of the import's instructions."""
        assert cold_import.collections == []
        assert cold_import.collecting

    def test_handler_import_time_is_measured(self, cold_import: Cold) -> None:
        """The importtime report has the handler's cumulative time; it is printed, not judged."""
        report = cold_import.importtime
        match = re.search(
            r"^import time:\s+\d+ \|\s+(\d+) \|\s*stream\.lambda_handler$", report, re.M
        )
        assert match is not None, report[-2000:]
        print(f"\nstream.lambda_handler cumulative import time: {int(match.group(1)) / 1e3:.1f} ms")
