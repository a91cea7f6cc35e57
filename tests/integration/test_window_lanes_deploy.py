"""``shardline deploy`` and lanes on a window table (issue 16, design §7), through moto's
CloudFormation and DynamoDB: every window table the template makes is tagged
``shardline:window-state=2``; a deploy at ``parallelization`` above 1 is refused, before
anything is uploaded or changed, when the function's window table exists without that tag
(state an earlier version wrote, whose invocations may still run during the update); a
deploy of this version at ``parallelization: 1`` tags it, and lanes deploy after that."""

from __future__ import annotations

import hashlib
import zipfile
from typing import TYPE_CHECKING, Any

import pytest

from deploy.aws.package import PackageResult
from deploy.aws.stack import StackError, deploy, deployed_template
from deploy.names import window_table_name
from deploy.pipeline.config import compile_plan, parse_config

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

pytestmark = pytest.mark.integration

TAG = {"Key": "shardline:window-state", "Value": "2"}
PIPELINE = """\
name: {name}
stream: {{name: {name}-events}}
sinks:
  results: {{type: dynamodb, table: {name}-results, key: window_id}}
functions:
  main:
    batch: {{parallelization: {lanes}}}
    processors:
      - window: {{key: user, size_s: 60, field: ts, aggregate: {{n: count}}}}
    route: [results]
"""


def _plan(name: str, lanes: int) -> dict[str, Any]:
    text = PIPELINE.format(name=name, lanes=lanes)
    return dict(compile_plan(parse_config(text, source="pipeline.yaml", env={})))


def _package(folder: Path) -> PackageResult:
    """A stand-in for the function's zip: nothing here invokes the function."""
    path = folder / "code.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("handler.py", "")
    data = path.read_bytes()
    return PackageResult(path, len(data), hashlib.sha256(data).hexdigest(), ("handler.py",))


def _tags(aws: Callable[[str], Any], table: str) -> list[dict[str, str]]:
    ddb = aws("dynamodb")
    arn = ddb.describe_table(TableName=table)["Table"]["TableArn"]
    tags: list[dict[str, str]] = ddb.list_tags_of_resource(ResourceArn=arn)["Tags"]
    return tags


def _lanes_deployed(aws: Callable[[str], Any], name: str) -> int:
    """The mapping's ParallelizationFactor in the deployed template."""
    resources = deployed_template(aws("cloudformation"), name)["Resources"]
    (mapping,) = [r for r in resources.values() if r["Type"] == "AWS::Lambda::EventSourceMapping"]
    return int(mapping["Properties"].get("ParallelizationFactor", 1))


def test_lanes_are_refused_on_an_untagged_window_table_until_a_one_lane_deploy_tags_it(
    aws: Callable[[str], Any], tmp_path: Path, unique: str
) -> None:
    name = f"wl-{unique}"
    package = _package(tmp_path)
    table = window_table_name(_plan(name, 1), "main")
    assert deploy(_plan(name, 1), aws, package=package).status == "created"
    assert TAG in _tags(aws, table)
    # the table as a version before the tag left it (its state in the one-lane format)
    ddb = aws("dynamodb")
    arn = ddb.describe_table(TableName=table)["Table"]["TableArn"]
    ddb.untag_resource(ResourceArn=arn, TagKeys=[TAG["Key"]])
    assert TAG not in _tags(aws, table)

    for execute in (False, True):  # diff and deploy alike
        with pytest.raises(StackError) as refused:
            deploy(_plan(name, 2), aws, package=package, execute=execute)
        message = str(refused.value)
        assert "function main: parallelization 2" in message
        assert f"window table {table}" in message
        assert "deploy once with parallelization: 1 with this version" in message
    assert _lanes_deployed(aws, name) == 1  # nothing deployed
    assert TAG not in _tags(aws, table)

    lines: list[str] = []
    assert deploy(_plan(name, 1), aws, package=package, log=lines.append).status == "unchanged"
    assert TAG in _tags(aws, table)
    assert f"tagged window table {table} shardline:window-state=2" in lines

    assert deploy(_plan(name, 2), aws, package=package).status == "updated"
    assert _lanes_deployed(aws, name) == 2
    assert TAG in _tags(aws, table)


def test_a_new_window_table_takes_lanes_at_once_and_the_tag(
    aws: Callable[[str], Any], tmp_path: Path, unique: str
) -> None:
    name = f"wn-{unique}"
    plan = _plan(name, 2)
    assert deploy(plan, aws, package=_package(tmp_path)).status == "created"
    assert _lanes_deployed(aws, name) == 2
    tags = _tags(aws, window_table_name(plan, "main"))
    assert TAG in tags
    assert {"Key": "shardline:pipeline", "Value": name} in tags


def test_the_window_table_checks_describe_each_table_once(
    aws: Callable[[str], Any], tmp_path: Path, unique: str
) -> None:
    """The lanes check before a deploy and the tagging after it each describe a window
    table once (its existence, its ARN for the tags and the tag call: one DescribeTable),
    counted on the real calls through botocore's event hooks."""
    name = f"wd-{unique}"
    package = _package(tmp_path)
    table = window_table_name(_plan(name, 1), "main")
    assert deploy(_plan(name, 1), aws, package=package).status == "created"
    described: list[str] = []

    def counted(service: str) -> Any:
        made = aws(service)
        if service == "dynamodb":
            made.meta.events.register(
                "provide-client-params.dynamodb.DescribeTable",
                lambda params, **_: described.append(params["TableName"]),
            )
        return made

    ddb = aws("dynamodb")
    arn = ddb.describe_table(TableName=table)["Table"]["TableArn"]
    ddb.untag_resource(ResourceArn=arn, TagKeys=[TAG["Key"]])
    # unchanged at one lane: the lanes check skips it (one lane), the tagging tags it
    assert deploy(_plan(name, 1), counted, package=package).status == "unchanged"
    assert TAG in _tags(aws, table)
    assert described.count(table) == 1
    # lanes: the check finds the tag, the tagging finds it too
    described.clear()
    assert deploy(_plan(name, 2), counted, package=package).status == "updated"
    assert described.count(table) == 2
