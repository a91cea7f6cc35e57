"""cfn-lint finds no error and no warning in the templates of the examples and of generated
pipeline files.

cfn-lint runs as a library: one ``Runner`` (its rules take most of a second to load) lints
every template of the module, about half a second each, for the us-east-1 specs.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings

from deploy.aws.cloudformation import build_template, template_json
from deploy.pipeline.config import load_plan_from_file
from tests.deploy.test_config import CLICKSTREAM
from tests.deploy.test_template import DOMAIN, deployable_plans, plan_of

if TYPE_CHECKING:
    from cfnlint.api import Runner

EXAMPLES_DIR = Path(__file__).parents[2] / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*/pipeline.yaml"))

# Every sink type and setting the template reacts to, in one file.
KITCHEN_SINK: dict[str, Any] = {
    "name": "Kitchen-Sink",
    "region": "eu-west-1",
    "stream": {"name": "kitchen.events_1", "mode": "provisioned", "shards": 4,
               "retention_hours": 168, "encryption": "none"},
    "sinks": {
        "latest": {"type": "dynamodb", "table": "kitchen.latest", "key": "id"},
        "log": {"type": "dynamodb", "table": "kitchen_log", "key": "id", "mode": "append"},
        "archive": {"type": "s3", "bucket": "kitchen-archive", "prefix": "raw-{kind}/",
                    "compression": "none"},
        "vault": {"type": "s3", "bucket": "kitchen-vault"},
        "orders": {"type": "sqs", "queue": "kitchen-orders.fifo", "overflow_bucket": "elsewhere"},
        "next": {"type": "kinesis", "stream": "kitchen-stage-2", "partition_key": "user_id"},
        "search": {"type": "opensearch", "endpoint": DOMAIN, "index": "e-{arrival:%Y}"},
        "debug": {"type": "stdout"},
    },
    "functions": {
        "route-all": {
            "memory_mb": 10240, "timeout_s": 900, "ordering": "per_key", "on_failure": "vault",
            "batch": {"size": 10000, "window_s": 300, "starting_position": "at_timestamp",
                      "starting_timestamp": "2024-05-01T00:00:00Z", "parallelization": 10,
                      "bisect_on_error": False, "max_retries": 0, "max_record_age_s": 60},
            "processors": [
                {"filter": {"match": {"event_type": ["click", "purchase"]}}},
                {"filter": {"match": {"amount": [{"numeric": [">", 0, "<=", 5]}]}}},
                {"enrich": {"lookup": {"table": "kitchen.latest", "key": "id", "into": "prev"}}},
                {"route": {"mode": "all", "rules": [
                    {"when": {"event_type": ["purchase"]}, "to": ["latest", "log", "orders"]},
                    {"when": "amount > `100`", "to": ["search", "next"]},
                    {"default": ["archive", "debug"]},
                ]}},
            ],
        },
        "archive": {"processors": [], "route": ["archive"], "on_failure": "archive"},
        "bare": {"processors": [], "route": ["debug"]},
        "fan-out": {"batch": {"consumer": "efo"}, "processors": [], "route": ["debug"]},
        "contract": {"processors": [{"schema": {"registry": {"name": "orders.v$1",
                                                             "registry": "kitchen"}}}],
                     "route": ["debug"]},
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def runner() -> Runner:
    from cfnlint.api import Runner  # noqa: PLC0415  # heavy: only for this module
    from cfnlint.config import ConfigMixIn  # noqa: PLC0415

    return Runner(ConfigMixIn(regions=["us-east-1"]))


def findings(runner: Runner, template: dict[str, Any]) -> list[str]:
    """cfn-lint's errors and warnings for ``template``, as it would print them."""
    from cfnlint.api import decode_str  # noqa: PLC0415

    decoded, problems = decode_str(template_json(template))
    assert not problems, problems
    matches = [*problems, *runner.validate_template(decoded)]
    return [f"{m.rule.id} {m.path_string}: {m.message}" for m in matches if m.rule.id[0] in "EW"]


def build(plan: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return build_template(plan, code_bucket="artifacts", code_key="p/lambda.zip", **kwargs)


class TestLint:
    @pytest.mark.parametrize("architecture", ["arm64", "x86_64"])
    @pytest.mark.parametrize("example", EXAMPLES, ids=[p.parent.name for p in EXAMPLES])
    def test_every_example_lints_clean(self, runner: Runner, example: Path, architecture: str):
        template = build(load_plan_from_file(example), architecture=architecture)
        assert findings(runner, template) == []

    def test_the_config_md_example_lints_clean(self, runner: Runner):
        assert findings(runner, build(plan_of(CLICKSTREAM, {"OPENSEARCH_URL": DOMAIN}))) == []

    def test_every_sink_type_and_setting_at_once_lints_clean(self, runner: Runner):
        assert findings(runner, build(plan_of(KITCHEN_SINK))) == []

    @given(deployable_plans())
    @settings(max_examples=12)
    def test_generated_pipelines_lint_clean(self, runner: Runner, plan: dict[str, Any]):
        assert findings(runner, build(plan)) == []

    def test_the_linter_does_report_a_broken_template(self, runner: Runner):
        """Guards the tests above against a linter that checks nothing."""
        template = copy.deepcopy(build(plan_of(KITCHEN_SINK)))
        function = template["Resources"]["BareFunction"]["Properties"]
        function |= {"MemorySize": "lots", "Timeout": 901}
        found = findings(runner, template)
        assert any(
            f.startswith("E3012 Resources/BareFunction/Properties/MemorySize") for f in found
        )
        assert any("Timeout" in f for f in found), json.dumps(found)

    @pytest.mark.parametrize("flush_s", [60, 300, 86_400])
    def test_a_windowed_function_s_scheduled_flush_lints_clean(self, runner: Runner, flush_s: int):
        """The flush rule, its permission and the function's async invoke settings (issue
        16) at the shortest, a common and the longest flush_s."""
        plan = load_plan_from_file(EXAMPLES_DIR / "windows" / "pipeline.yaml")
        plan["functions"]["purchases-per-user"]["processors"][1]["window"]["flush_s"] = flush_s
        template = build(plan)
        kinds = {r["Type"] for r in template["Resources"].values()}
        assert {"AWS::Events::Rule", "AWS::Lambda::Permission",
                "AWS::Lambda::EventInvokeConfig"} <= kinds  # fmt: skip
        assert findings(runner, template) == []

    def test_the_linter_does_report_a_broken_flush_rule(self, runner: Runner):
        """cfn-lint knows these resources: a schedule EventBridge refuses is found."""
        plan = load_plan_from_file(EXAMPLES_DIR / "windows" / "pipeline.yaml")
        template = copy.deepcopy(build(plan))
        rule = template["Resources"]["PurchasesPerUserFlushRule"]["Properties"]
        rule["State"] = "SOMETIMES"
        config = template["Resources"]["PurchasesPerUserFlushInvokeConfig"]["Properties"]
        config["MaximumEventAgeInSeconds"] = 30  # below the least Lambda allows (60)
        found = findings(runner, template)
        assert any("FlushRule/Properties/State" in f for f in found), found
        assert any("MaximumEventAgeInSeconds" in f for f in found), found
