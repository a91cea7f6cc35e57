"""The plan's version: a plan of another shardline is refused on load, with the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import stream.lambda_handler as lh
from stream.exceptions import PlanError, ShardlineError
from stream.plan import PLAN_VERSION, PlanVersionError, check_version
from stream.runtime import load_plan

ROOT = Path(__file__).resolve().parent.parent.parent
PLAN = {
    "version": PLAN_VERSION,
    "name": "t",
    "sinks": {"out": {"type": "discard"}},
    "functions": {"f": {"ordering": "per_key", "on_failure": None, "route": ["out"]}},
}
FIX = "run `shardline compile PIPELINE.yaml` with the shardline that runs it"


def _without_version() -> dict[str, object]:
    return {k: v for k, v in PLAN.items() if k != "version"}


#: (plan, what the message says about it)
MISMATCHES = [
    pytest.param({**PLAN, "version": PLAN_VERSION - 1}, "older", "plan version 0", id="older"),
    pytest.param({**PLAN, "version": PLAN_VERSION + 1}, "newer", "plan version 2", id="newer"),
    pytest.param(_without_version(), "older", "no plan version", id="missing"),
    pytest.param({**PLAN, "version": "1"}, "older", "version '1'", id="text"),
    pytest.param({**PLAN, "version": True}, "older", "version True", id="bool"),
]


class TestCheckVersion:
    def test_the_current_version_passes(self):
        check_version(PLAN, "pipeline.json")

    @pytest.mark.parametrize(("plan", "age", "found"), MISMATCHES)
    def test_another_version_names_the_file_the_versions_and_the_fix(self, plan, age, found):
        with pytest.raises(PlanVersionError) as caught:
            check_version(plan, "dist/pipeline.json")
        assert str(caught.value) == (
            f"dist/pipeline.json: this plan is {age} than this shardline "
            f"({found}, expects {PLAN_VERSION}): {FIX}"
        )

    def test_the_error_is_ours_and_a_value_error(self):
        """Callers that caught the ValueError of a file that is no plan still catch it."""
        assert issubclass(PlanVersionError, ShardlineError)
        assert issubclass(PlanVersionError, ValueError)

    def test_json_that_is_no_object_is_no_plan(self):
        with pytest.raises(PlanVersionError, match=r"^p\.json: not a shardline plan .*compile"):
            check_version([1, 2], "p.json")


class TestLoadPlan:
    def test_a_plan_of_this_version_loads(self, tmp_path: Path):
        path = tmp_path / "pipeline.json"
        path.write_text(json.dumps(PLAN))
        assert load_plan(path) == PLAN

    @pytest.mark.parametrize(("plan", "age", "found"), MISMATCHES)
    def test_a_plan_of_another_version_is_refused(self, tmp_path: Path, plan, age, found):
        path = tmp_path / "pipeline.json"
        path.write_text(json.dumps(plan))
        with pytest.raises(PlanVersionError) as caught:
            load_plan(path)
        assert str(caught.value).startswith(f"{path}: this plan is {age} ")
        assert str(caught.value).endswith(FIX)

    def test_a_versioned_file_without_functions_is_still_no_plan(self, tmp_path: Path):
        path = tmp_path / "pipeline.json"
        path.write_text(json.dumps({"version": PLAN_VERSION}))
        with pytest.raises(PlanError, match="no 'functions'"):
            load_plan(path)


class TestThroughTheHandler:
    @pytest.fixture
    def old_plan(self, tmp_path: Path) -> Path:
        path = tmp_path / "pipeline.json"
        path.write_text(json.dumps({**PLAN, "version": PLAN_VERSION + 1}))
        return path

    def test_the_cold_start_refuses_it(self, old_plan: Path, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv("SHARDLINE_PIPELINE", str(old_plan))
        monkeypatch.delenv("SHARDLINE_FUNCTION", raising=False)
        monkeypatch.setattr(lh, "_runner", None)
        with pytest.raises(PlanVersionError, match=r"newer than this shardline.*shardline compile"):
            lh.handler({"Records": []})

    def test_lambda_init_fails_with_the_message(self, old_plan: Path):
        """Importing the handler module is Lambda's init: it exits non-zero, saying why."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDLINE_")}
        env["SHARDLINE_PIPELINE"] = str(old_plan)
        proc = subprocess.run(
            [sys.executable, "-c", "import stream.lambda_handler"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert proc.returncode != 0
        assert f"PlanVersionError: {old_plan}: this plan is newer" in proc.stderr
        assert FIX in proc.stderr
