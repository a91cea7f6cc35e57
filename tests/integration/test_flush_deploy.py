"""A windowed function's scheduled flush (issue 16, slice S3), deployed through moto's
CloudFormation: the EventBridge rule's schedule and target (its constant input names the
function), and the function's resource policy that lets EventBridge invoke it, from that
rule only. moto never fires a schedule; the handler's side of a flush has its own tests.

moto's CloudFormation has no model of ``AWS::Lambda::EventInvokeConfig``: it logs "No Moto
CloudFormation support" and warns (a ``UserWarning``, which the suite does not turn into an
error), skips it as it skips the alarms, and the stack still completes. The test holds the
skipped types to those two, so that a resource moto newly skips is noticed."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import pytest

from deploy.aws.stack import deploy, deployed_template
from deploy.names import function_name
from deploy.pipeline.config import compile_plan, parse_config
from tests.integration.test_window_lanes_deploy import _package

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

pytestmark = pytest.mark.integration

PIPELINE = """\
name: {name}
stream: {{name: {name}-events}}
sinks:
  results: {{type: dynamodb, table: {name}-results, key: window_id}}
functions:
  main:
    processors:
      - window: {{key: user, size_s: 60, field: ts, aggregate: {{n: count}}{flush}}}
    route: [results]
  plain:
    route: [results]
"""


def _plan(name: str, flush: str = "") -> dict[str, Any]:
    text = PIPELINE.format(name=name, flush=flush)
    return dict(compile_plan(parse_config(text, source="pipeline.yaml", env={})))


@pytest.mark.parametrize(("flush", "rate"), [("", "rate(1 minute)"),
                                             (", flush_s: 300", "rate(5 minutes)")])  # fmt: skip
def test_the_deployed_rule_invokes_the_windowed_function_with_its_flush_event(
    aws: Callable[[str], Any],
    tmp_path: Path,
    unique: str,
    flush: str,
    rate: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = f"fl-{unique}"
    plan = _plan(name, flush)
    with caplog.at_level(logging.WARNING, logger="moto"):
        assert deploy(plan, aws, package=_package(tmp_path)).status == "created"
    unsupported = "No Moto CloudFormation support for "
    skipped = {r.getMessage().removeprefix(unsupported) for r in caplog.records
               if r.getMessage().startswith(unsupported)}  # fmt: skip
    assert skipped == {"AWS::CloudWatch::Alarm", "AWS::Lambda::EventInvokeConfig"}

    events = aws("events")
    function = aws("lambda").get_function(FunctionName=function_name(plan, "main"))
    arn = function["Configuration"]["FunctionArn"]
    (rule_name,) = events.list_rule_names_by_target(TargetArn=arn)["RuleNames"]
    rule = events.describe_rule(Name=rule_name)
    assert rule["ScheduleExpression"] == rate
    assert rule["State"] == "ENABLED"
    (target,) = events.list_targets_by_rule(Rule=rule_name)["Targets"]
    assert target["Arn"] == arn
    assert json.loads(target["Input"]) == {"shardline": "flush", "version": 1, "function": "main"}

    policy = json.loads(
        aws("lambda").get_policy(FunctionName=function_name(plan, "main"))["Policy"]
    )
    (statement,) = policy["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "lambda:InvokeFunction"
    assert statement["Condition"]["ArnLike"]["AWS:SourceArn"] == rule["Arn"]

    # the function without a window step has no rule, and no policy
    plain = aws("lambda").get_function(FunctionName=function_name(plan, "plain"))
    targeting = events.list_rule_names_by_target(TargetArn=plain["Configuration"]["FunctionArn"])
    assert targeting["RuleNames"] == []
    with pytest.raises(aws("lambda").exceptions.ResourceNotFoundException):
        aws("lambda").get_policy(FunctionName=function_name(plan, "plain"))


def test_flush_s_0_deploys_no_rule_and_diff_shows_the_default_s_three(
    aws: Callable[[str], Any], tmp_path: Path, unique: str
) -> None:
    name = f"f0-{unique}"
    plan = _plan(name, ", flush_s: 0")
    assert deploy(plan, aws, package=_package(tmp_path)).status == "created"
    function = aws("lambda").get_function(FunctionName=function_name(plan, "main"))
    targeting = aws("events").list_rule_names_by_target(
        TargetArn=function["Configuration"]["FunctionArn"]
    )
    assert targeting["RuleNames"] == []
    resources = deployed_template(aws("cloudformation"), name)["Resources"]
    assert not [r for r in resources if "Flush" in r]
    assert "MainFunction" in resources

    # shardline diff with the default flush_s: what the update would add
    preview = deploy(_plan(name), aws, package=_package(tmp_path), execute=False)
    assert preview.status == "previewed"
    added = {(c.logical_id, c.resource_type) for c in preview.changes if c.action == "Add"}
    assert added == {
        ("MainFlushRule", "AWS::Events::Rule"),
        ("MainFlushPermission", "AWS::Lambda::Permission"),
        ("MainFlushInvokeConfig", "AWS::Lambda::EventInvokeConfig"),
    }
