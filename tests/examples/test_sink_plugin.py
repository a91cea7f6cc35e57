"""The example sink plugin installs beside the processor plugin, registers its entry point,
has its options checked by validate, its IAM statement granted by template, and writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.deploy.test_template_lint import findings, runner  # noqa: F401  # fixture
from tests.integration.conftest import aws, moto_endpoint, unique  # noqa: F401  # fixtures

if TYPE_CHECKING:
    from cfnlint.api import Runner

ROOT = Path(__file__).resolve().parents[2]

PIPELINE = """\
name: shop
stream: {{name: shop-events}}
sinks:
  events:
    type: eventbridge
    bus: {bus}
    source: shop.orders
functions:
  publish:
    processors:
      - mask: {{fields: [email], keep: 2}}
    route: [events]
"""


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both example plugins, pip-installed (entry points and all) into one folder."""
    target = tmp_path_factory.mktemp("plugins-site")
    for example in ("plugin", "sink-plugin"):
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
             str(target), str(ROOT / "examples" / example)],
            check=True, timeout=600,
        )  # fmt: skip
    return target


def run(
    args: list[str], plugin_path: Path, cwd: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    environ = dict(os.environ, PYTHONPATH=os.pathsep.join([str(plugin_path), str(ROOT)]), **env)
    return subprocess.run(
        [sys.executable, "-m", "deploy.cli", *args],
        capture_output=True, text=True, env=environ, cwd=cwd, check=False, timeout=600,
    )  # fmt: skip


def test_validate_checks_the_options_the_sink_declares(plugin_path: Path, tmp_path: Path) -> None:
    """An unknown option, a wrong type and a missing required one each get their line."""
    (tmp_path / "pipeline.yaml").write_text(PIPELINE.format(bus="orders"))
    assert run(["validate", "pipeline.yaml"], plugin_path, tmp_path).returncode == 0
    bad = PIPELINE.format(bus="orders").replace("    bus: orders\n", "    buss: orders\n")
    bad = bad.replace("source: shop.orders", "source: 3")
    (tmp_path / "bad.yaml").write_text(bad)
    result = run(["validate", "bad.yaml"], plugin_path, tmp_path)
    assert result.returncode == 2
    assert "bad.yaml:6: sinks.events.buss: unknown option for sink type 'eventbridge'" in (
        result.stderr
    )
    assert "did you mean 'bus'?" in result.stderr
    assert "bad.yaml:7: sinks.events.source: expected str, got int 3" in result.stderr
    assert "bad.yaml:4: sinks.events: sink type 'eventbridge' requires option 'bus'" in (
        result.stderr
    )


def test_template_grants_the_sinks_iam_statements_and_lints_clean(
    plugin_path: Path,
    tmp_path: Path,
    runner: Runner,  # noqa: F811  # the fixture
) -> None:
    """The role of the function routing to the plugin sink may put events on its bus."""
    (tmp_path / "pipeline.yaml").write_text(PIPELINE.format(bus="orders"))
    result = run(["template", "pipeline.yaml"], plugin_path, tmp_path)
    assert result.returncode == 0, result.stderr
    template: dict[str, Any] = json.loads(result.stdout)
    roles = [r for r in template["Resources"].values() if r["Type"] == "AWS::IAM::Role"]
    statements = [s for role in roles for p in role["Properties"]["Policies"]
                  for s in p["PolicyDocument"]["Statement"]]  # fmt: skip
    granted = [s for s in statements if s["Action"] == ["events:PutEvents"]]
    arn = "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/orders"
    assert granted == [
        {"Sid": "SinkEventsPlugin", "Effect": "Allow", "Action": ["events:PutEvents"],
         "Resource": [{"Fn::Sub": arn}]}
    ]  # fmt: skip
    assert findings(runner, template) == []


@pytest.mark.integration
def test_an_installed_sink_plugin_writes_after_an_installed_processor(
    plugin_path: Path,
    tmp_path: Path,
    aws: Any,  # noqa: F811  # the fixture
    moto_endpoint: str,  # noqa: F811
    unique: str,  # noqa: F811
) -> None:
    """invoke runs mask, then the eventbridge sink puts the masked records on the bus."""
    events, sqs = aws("events"), aws("sqs")
    bus, queue = f"orders-{unique}", sqs.create_queue(QueueName=f"seen-{unique}")["QueueUrl"]
    events.create_event_bus(Name=bus)
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
    events.put_rule(Name="all", EventBusName=bus, EventPattern='{"source": ["shop.orders"]}')
    events.put_targets(
        Rule="all", EventBusName=bus,
        Targets=[{"Id": "q", "Arn": queue_arn["Attributes"]["QueueArn"]}],
    )  # fmt: skip
    (tmp_path / "pipeline.yaml").write_text(PIPELINE.format(bus=bus))
    (tmp_path / "orders.jsonl").write_text('{"email": "ada@example.com"}\n{"email": "bob@x.io"}\n')
    made = run(["event", "orders.jsonl", "-o", "event.json"], plugin_path, tmp_path)
    assert made.returncode == 0, made.stderr
    invoked = run(
        ["invoke", "pipeline.yaml", "--event", "event.json", "--endpoint-url", moto_endpoint],
        plugin_path, tmp_path, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )  # fmt: skip
    assert invoked.returncode == 0, invoked.stderr
    assert json.loads(invoked.stdout.splitlines()[-1]) == {"batchItemFailures": []}
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    details = sorted(json.loads(m["Body"])["detail"]["email"] for m in messages)
    assert details == ["ad*************", "bo******"]
