"""A window step's scheduled flush (issue 16, slice S3): the pipeline key ``flush_s``, the
plan that carries it to the runtime's constructors, the JSON Schema that agrees with the
validator, and the template's three resources per windowed function. The refusals with
file:line are ``tests/deploy/broken/flush_settings.yaml``."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.aws.cloudformation import build_template
from deploy.names import DEFAULT_FLUSH_S
from deploy.pipeline import spec
from deploy.pipeline.config import compile_plan, parse_config
from processors.session import SessionWindow
from processors.window import DEFAULT_FLUSH_S as RUNTIME_DEFAULT
from processors.window import MAX_FLUSH_S, Window, WindowConfigError
from tests.deploy.test_jsonschema import VALIDATOR, _validator_ok

ROOT = Path(__file__).resolve().parents[2]
WINDOWS = (ROOT / "examples" / "windows" / "pipeline.yaml").read_text(encoding="utf-8")
SESSIONS = (ROOT / "examples" / "sessions" / "pipeline.yaml").read_text(encoding="utf-8")
FUNCTION = "purchases-per-user"
RESOURCES = ("PurchasesPerUserFlushRule", "PurchasesPerUserFlushPermission",
             "PurchasesPerUserFlushInvokeConfig")  # fmt: skip


def _doc(**window: Any) -> dict[str, Any]:
    """The windows example with its window step's settings changed (None: removed)."""
    doc: dict[str, Any] = yaml.safe_load(WINDOWS)
    step = doc["functions"][FUNCTION]["processors"][1]["window"]
    for key, value in window.items():
        if value is None:
            step.pop(key, None)
        else:
            step[key] = value
    return doc


def _plan(doc: dict[str, Any]) -> Any:
    return compile_plan(parse_config(yaml.safe_dump(doc), source="pipeline.yaml", env={}))


def _resources(doc: dict[str, Any]) -> dict[str, Any]:
    return dict(build_template(_plan(doc), code_bucket="b", code_key="k")["Resources"])


class TestTheKey:
    def test_the_spec_s_bounds_are_the_runtime_s(self) -> None:
        """The spec writes the runtime's numbers out (importing the window step would slow
        the CLI's start): they must not drift apart."""
        key = spec.WINDOW["flush_s"]
        assert (key.default, key.maximum, key.minimum, key.multiple_of) == (
            RUNTIME_DEFAULT,
            MAX_FLUSH_S,
            0,
            60,
        )
        assert DEFAULT_FLUSH_S == RUNTIME_DEFAULT

    @pytest.mark.parametrize(
        ("flush_s", "state", "planned"),
        [(None, "dynamodb", 60), (300, "dynamodb", 300), (0, "dynamodb", 0),
         (None, "memory", 0), (0, "memory", 0)],
    )  # fmt: skip
    def test_the_plan_carries_it_and_the_step_is_built_from_it(
        self, flush_s: int | None, state: str, planned: int
    ) -> None:
        """Default 60; with state: memory the default is silently off (0 in the plan)."""
        window = _plan(_doc(flush_s=flush_s, state=state))["functions"][FUNCTION]["processors"]
        args = window[1]["window"]
        assert args["flush_s"] == planned
        assert Window(**args).flush_s == planned

    def test_a_session_window_s_plan_carries_it_too(self) -> None:
        doc: dict[str, Any] = yaml.safe_load(SESSIONS)
        doc["functions"]["visits-per-user"]["processors"][1]["window"]["flush_s"] = 120
        args = _plan(doc)["functions"]["visits-per-user"]["processors"][1]["window"]
        assert args["flush_s"] == 120
        assert SessionWindow(**args).flush_s == 120

    @pytest.mark.parametrize(
        ("flush_s", "message"),
        [(90, "or a multiple of 60"), (86_460, "at most 86400"), (-60, r"0 \(off\) or more"),
         (1.5, "whole number"), (True, "whole number")],
    )  # fmt: skip
    @pytest.mark.parametrize("step", [Window, SessionWindow])
    def test_the_runtime_refuses_what_validate_refuses(
        self, step: type[Any], flush_s: Any, message: str
    ) -> None:
        sizes = {"size_s": 60} if step is Window else {"gap_s": 60}
        args = {"key": "u", "field": "ts", "aggregate": {"n": "count"}, "table": "t", **sizes}
        with pytest.raises(WindowConfigError, match=message):
            step(**args, flush_s=flush_s)

    @pytest.mark.parametrize("step", [Window, SessionWindow])
    def test_the_memory_store_refuses_a_flush_and_takes_the_default_as_off(
        self, step: type[Any]
    ) -> None:
        sizes = {"size_s": 60} if step is Window else {"gap_s": 60}
        args = {"key": "u", "field": "ts", "aggregate": {"n": "count"}, "state": "memory", **sizes}
        with pytest.raises(WindowConfigError, match=r"flush_s \(60\) needs state: dynamodb"):
            step(**args, flush_s=60)
        assert step(**args).flush_s == 0
        assert step(**args, flush_s=0).flush_s == 0


@pytest.mark.parametrize(
    ("change", "valid"),
    [
        ({}, True),
        ({"flush_s": 0}, True),
        ({"flush_s": 60}, True),
        ({"flush_s": 86_400}, True),
        ({"flush_s": 90}, False),
        ({"flush_s": 86_460}, False),
        ({"flush_s": -60}, False),
        ({"flush_s": "60"}, False),
        ({"flush_s": 1.5}, False),
        ({"state": "memory"}, True),
        ({"state": "memory", "flush_s": 0}, True),
        ({"state": "memory", "flush_s": 60}, False),
        ({"state": "memory", "flush_s": 300}, False),
    ],
)
def test_the_schema_and_the_validator_agree_on_flush_s(change: dict[str, Any], valid: bool) -> None:
    """Each rule of flush_s is refused (or taken) by both, state: memory with a non-zero
    flush included."""
    doc = _doc(**change)
    assert VALIDATOR.is_valid(copy.deepcopy(doc)) is valid
    assert _validator_ok(doc) is valid


class TestTheTemplate:
    def test_a_windowed_dynamodb_function_gets_its_rule_permission_and_invoke_config(
        self,
    ) -> None:
        resources = _resources(_doc())
        rule = resources["PurchasesPerUserFlushRule"]
        assert rule["Type"] == "AWS::Events::Rule"
        props = rule["Properties"]
        assert props["ScheduleExpression"] == "rate(1 minute)"  # singular: EventBridge's rule
        assert props["State"] == "ENABLED"
        (target,) = props["Targets"]
        assert target["Arn"] == {"Fn::GetAtt": ["PurchasesPerUserFunction", "Arn"]}
        assert json.loads(target["Input"]) == {
            "shardline": "flush",
            "version": 1,
            "function": FUNCTION,
        }
        permission = resources["PurchasesPerUserFlushPermission"]
        assert permission["Type"] == "AWS::Lambda::Permission"
        assert permission["Properties"] == {
            "Action": "lambda:InvokeFunction",
            "FunctionName": {"Ref": "PurchasesPerUserFunction"},
            "Principal": "events.amazonaws.com",
            "SourceArn": {"Fn::GetAtt": ["PurchasesPerUserFlushRule", "Arn"]},
        }
        invoke = resources["PurchasesPerUserFlushInvokeConfig"]
        assert invoke["Type"] == "AWS::Lambda::EventInvokeConfig"
        assert invoke["Properties"] == {
            "FunctionName": {"Ref": "PurchasesPerUserFunction"},
            "Qualifier": "$LATEST",
            "MaximumRetryAttempts": 0,
            "MaximumEventAgeInSeconds": 60,
        }
        alarm = resources["PurchasesPerUserErrorsAlarm"]["Properties"]["AlarmDescription"]
        assert alarm == (
            "shop-purchases-per-user failed whole invocations of a batch or of a scheduled "
            "window flush (an exception, a timeout or out of memory)"
        )

    def test_eventbridge_does_not_retry_a_flush_it_could_not_deliver(self) -> None:
        """A rule's target is retried by EventBridge for 24 hours and up to 185 times by
        default (a throttled Invoke, say, when the stream's batches use the concurrency):
        each minute's flush would pile up and come late, overlapping the next. As with
        Lambda's own async retries (EventInvokeConfig), the next flush is the retry."""
        rule = _resources(_doc())["PurchasesPerUserFlushRule"]
        (target,) = rule["Properties"]["Targets"]
        assert target["RetryPolicy"] == {"MaximumRetryAttempts": 0, "MaximumEventAgeInSeconds": 60}

    @pytest.mark.parametrize(
        ("flush_s", "rate"),
        [(60, "rate(1 minute)"), (120, "rate(2 minutes)"), (300, "rate(5 minutes)"),
         (86_400, "rate(1440 minutes)")],
    )  # fmt: skip
    def test_the_rate_text_is_exact(self, flush_s: int, rate: str) -> None:
        rule = _resources(_doc(flush_s=flush_s))["PurchasesPerUserFlushRule"]
        assert rule["Properties"]["ScheduleExpression"] == rate

    def test_flush_s_0_makes_none_and_the_errors_alarm_says_nothing_of_a_flush(self) -> None:
        resources = _resources(_doc(flush_s=0))
        assert not [r for r in RESOURCES if r in resources]
        assert not [r for r in resources.values() if r["Type"] == "AWS::Events::Rule"]
        alarm = resources["PurchasesPerUserErrorsAlarm"]["Properties"]["AlarmDescription"]
        assert "flush" not in alarm

    def test_only_windowed_functions_get_them(self) -> None:
        """A function without a window step has no rule; the windowed one has its own."""
        doc = _doc()
        doc["functions"]["all-orders"] = {"route": ["hourly"]}
        resources = _resources(doc)
        rules = [k for k, r in resources.items() if r["Type"] == "AWS::Events::Rule"]
        assert rules == ["PurchasesPerUserFlushRule"]
        assert not [k for k in resources if k.startswith("AllOrdersFlush")]

    def test_the_last_window_step_s_flush_is_scheduled(self) -> None:
        """A flush ticks the chain's last window step only (stream.flush): its period is
        the rule's, and an earlier step's default is off in the plan."""
        doc = _doc(flush_s=600)
        steps = doc["functions"][FUNCTION]["processors"]
        earlier = copy.deepcopy(steps[1])
        del earlier["window"]["flush_s"]
        steps[1:1] = [earlier]
        plan = _plan(doc)
        windows = [p["window"] for p in plan["functions"][FUNCTION]["processors"] if "window" in p]
        assert [w["flush_s"] for w in windows] == [0, 600]
        rule = _resources(doc)["PurchasesPerUserFlushRule"]
        assert rule["Properties"]["ScheduleExpression"] == "rate(10 minutes)"

    def test_a_session_window_function_gets_them_too(self) -> None:
        doc: dict[str, Any] = yaml.safe_load(SESSIONS)
        resources = dict(build_template(_plan(doc), code_bucket="b", code_key="k")["Resources"])
        target = resources["VisitsPerUserFlushRule"]["Properties"]["Targets"][0]
        assert json.loads(target["Input"])["function"] == "visits-per-user"
        assert "VisitsPerUserFlushInvokeConfig" in resources
