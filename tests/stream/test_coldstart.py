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
CODE = (
    "import os, sys; import stream.lambda_handler; "
    f"print(sorted(m for m in {WATCHED!r} if m in sys.modules)); "
    # the classes that our modules on the path define with the dataclass decorator
    "print(sorted(f'{m}.{v.__qualname__}' for m, mod in list(sys.modules.items()) "
    f"if m.partition('.')[0] in {OURS!r} for v in vars(mod).values() "
    "if isinstance(v, type) and v.__module__ == m and '__dataclass_fields__' in vars(v)))"
)


@pytest.fixture(scope="module")
def cold_import(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], str, list[str]]:
    """(watched modules loaded, importtime report, dataclasses of ours loaded) of one fresh
    interpreter."""
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
    loaded, dataclasses = map(ast.literal_eval, proc.stdout.strip().splitlines()[-2:])
    return loaded, proc.stderr, dataclasses


class TestColdStart:
    def test_stdout_pipeline_loads_no_client_or_cli_library(
        self, cold_import: tuple[list[str], str, list[str]]
    ) -> None:
        """boto3, opensearch-py, PyYAML, click, rich, KPL and protobuf stay unloaded."""
        loaded, _, _ = cold_import
        print(f"\nwatched modules loaded by the handler import: {loaded}")
        assert FORBIDDEN.isdisjoint(loaded), loaded

    def test_no_dataclass_decorator_on_the_path(
        self, cold_import: tuple[list[str], str, list[str]]
    ) -> None:
        """No class the handler's import defines is a dataclass: the decorator compiles its
        methods from source at import (``DeadLetter``'s were 5 M instructions of a cold
        start); the classes on the path take their value methods from ``stream.values``."""
        _, _, dataclasses = cold_import
        assert dataclasses == [], dataclasses

    def test_handler_import_time_is_measured(
        self, cold_import: tuple[list[str], str, list[str]]
    ) -> None:
        """The importtime report has the handler's cumulative time; it is printed, not judged."""
        _, report, _ = cold_import
        match = re.search(
            r"^import time:\s+\d+ \|\s+(\d+) \|\s*stream\.lambda_handler$", report, re.M
        )
        assert match is not None, report[-2000:]
        print(f"\nstream.lambda_handler cumulative import time: {int(match.group(1)) / 1e3:.1f} ms")
