"""An AWS rewind interrupted between its two change sets (issue 15) is finished by running
``shardline rewind`` again, through moto's CloudFormation: the stack left without the
function's mapping records the rewind, and the second run creates the mapping at the new
time with one change set, and says so."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from deploy.aws.package import PackageResult
from deploy.aws.stack import deploy, deployed_template, update_template
from deploy.names import function_name
from deploy.ops.rewind import REWIND_PENDING, pending_rewind, plan_mapping_rewind
from deploy.pipeline.config import load_plan_from_file

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.integration

SHARDLINE = str(Path(sys.executable).with_name("shardline"))
PIPELINE = """\
name: {name}
stream: {{name: {name}-events}}
sinks:
  orders: {{type: dynamodb, table: {name}-orders, key: order_id}}
functions:
  main:
    route: [orders]
"""


def _package(folder: Path) -> PackageResult:
    """A stand-in for the function's zip: a rewind never looks at the code."""
    path = folder / "code.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("handler.py", "")
    data = path.read_bytes()
    return PackageResult(path, len(data), hashlib.sha256(data).hexdigest(), ("handler.py",))


def _mappings(aws: Callable[[str], Any], plan: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = aws("lambda").list_event_source_mappings(
        FunctionName=function_name(plan, "main")
    )["EventSourceMappings"]
    return found


def test_a_rewind_that_died_between_its_change_sets_is_finished_by_the_next(
    aws: Callable[[str], Any], moto_endpoint: str, tmp_path: Path, unique: str
) -> None:
    name = f"rw-{unique}"
    file = tmp_path / "pipeline.yaml"
    file.write_text(PIPELINE.format(name=name))
    plan = load_plan_from_file(file)
    package = _package(tmp_path)
    assert deploy(plan, aws, package=package).status == "created"
    assert len(_mappings(aws, plan)) == 1

    # the first change set only, as when the process dies (or the second fails) after it
    first = plan_mapping_rewind(plan, "main", 1_767_225_600.0, aws)
    assert first.resumed == ""
    update_template(aws, name, first.templates[0])
    assert _mappings(aws, plan) == []
    left = deployed_template(aws("cloudformation"), name)
    assert pending_rewind(left, "MainMapping")["to"].startswith("2026-01-01T00:00:00")

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    done = subprocess.run(
        [SHARDLINE, "rewind", str(file), "--function", "main", "--to", "2026-01-02T00:00:00Z",
         "--target", "aws", "--yes", "--json", "--endpoint-url", moto_endpoint],
        capture_output=True, text=True, env=env, check=False, cwd=tmp_path, timeout=300,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["rewound"] is True
    assert summary["resumed"].startswith("2026-01-01T00:00:00")
    assert "stopped before creating it again" in done.stderr
    (mapping,) = _mappings(aws, plan)
    assert mapping["StartingPosition"] == "AT_TIMESTAMP"
    deployed = deployed_template(aws("cloudformation"), name)
    assert REWIND_PENDING not in deployed.get("Metadata", {})
    props = deployed["Resources"]["MainMappingAt1767312000"]["Properties"]
    assert props["StartingPositionTimestamp"] == 1_767_312_000.0
    # nothing half done any more: a rewind now is the usual two change sets, and a deploy
    # of the file keeps the rewound mapping
    assert plan_mapping_rewind(plan, "main", 1_767_312_000.0, aws).resumed == ""
    assert deploy(plan, aws, package=package).status == "unchanged"
