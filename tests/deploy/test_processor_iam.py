"""A plugin processor that calls AWS declares its IAM statements as a sink does
(``iam_statements(cls, options)``): the template grants them to the role of every function
whose chain holds the step, and validate refuses a statement IAM would not take."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import pytest

from deploy.aws.cloudformation import build_template
from deploy.pipeline import runtime_checks
from deploy.pipeline.config import ConfigError, compile_plan, load_config

if TYPE_CHECKING:
    from pathlib import Path

PIPELINE = """\
name: tiered
stream: {name: tiered-events}
sinks:
  out: {type: stdout}
functions:
  tier:
    processors:
      - filter: {match: {kind: [order]}}
      - use: "tiers:Tiers"
        with: {table: customer-tiers}
    route: [out]
  plain:
    processors:
      - use: "tiers:NoAws"
    route: [out]
"""
MODULE = """\
class Tiers:
    def __init__(self, table):
        self.table = table

    @classmethod
    def iam_statements(cls, options):
        arn = "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/"
        return [
            {"Action": "dynamodb:GetItem", "Resource": {"Fn::Sub": arn + options["table"]}},
            {"Sid": "TierSecret", "Action": ["secretsmanager:GetSecretValue"],
             "Resource": "arn:aws:secretsmanager:*:*:secret:tiers-*"},
        ]

    def __call__(self, record):
        return record


class NoAws:
    def __call__(self, record):
        return record


class Denying(Tiers):
    @classmethod
    def iam_statements(cls, options):
        return [{"Effect": "Deny", "Action": "s3:*", "Resource": "*"}]


class Crashing(Tiers):
    @classmethod
    def iam_statements(cls, options):
        return [{"Action": "dynamodb:GetItem", "Resource": options["tabel"]}]
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The module beside the file; what loading it adds to the paths is undone after."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    monkeypatch.setattr(runtime_checks, "_LOCAL_FOLDERS", [])
    monkeypatch.delitem(sys.modules, "tiers", raising=False)
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    (tmp_path / "tiers.py").write_text(MODULE)
    return tmp_path


def role_statements(template: dict[str, Any], function: str) -> list[dict[str, Any]]:
    role = template["Resources"][f"{function}Role"]
    return [s for p in role["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]]


def test_the_template_grants_what_the_processor_asks_for(project: Path) -> None:
    plan = compile_plan(load_config(project / "pipeline.yaml"))
    template = build_template(plan, code_bucket="code", code_key="fn.zip")
    statements = role_statements(template, "Tier")
    arn = "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/customer-tiers"
    assert {"Sid": "Processor1Plugin", "Effect": "Allow", "Action": ["dynamodb:GetItem"],
            "Resource": [{"Fn::Sub": arn}]} in statements  # fmt: skip
    assert {"Sid": "TierSecret", "Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"],
            "Resource": ["arn:aws:secretsmanager:*:*:secret:tiers-*"]} in statements  # fmt: skip
    # only the function whose chain holds the step gets them
    plain = role_statements(template, "Plain")
    assert not [s for s in plain if s["Sid"].startswith(("Processor", "TierSecret"))]


def test_validate_refuses_a_statement_iam_would_not_take(project: Path) -> None:
    (project / "deny.yaml").write_text(PIPELINE.replace("tiers:Tiers", "tiers:Denying"))
    with pytest.raises(ConfigError) as caught:
        load_config(project / "deny.yaml")
    (problem,) = caught.value.errors
    assert (problem.line, problem.path) == (9, "functions.tier.processors[1]")
    assert "Denying.iam_statements()[0]: Effect 'Deny'" in problem.message


def test_an_iam_statements_hook_that_raises_is_an_error_at_its_step(project: Path) -> None:
    """A plugin's bug in ``iam_statements`` (here a KeyError) is reported at the step's
    line, as its other problems are; it stopped validate with a bare ``KeyError: 'tabel'``
    (found in review)."""
    (project / "crash.yaml").write_text(PIPELINE.replace("tiers:Tiers", "tiers:Crashing"))
    with pytest.raises(ConfigError) as caught:
        load_config(project / "crash.yaml")
    (problem,) = caught.value.errors
    assert (problem.line, problem.path) == (9, "functions.tier.processors[1]")
    assert "Crashing.iam_statements({'table': 'customer-tiers'}) raised KeyError('tabel')" in (
        problem.message
    )
