"""Security properties of every generated template: least privilege without wildcards,
encryption on every store, no public bucket.

Each property is checked on the examples, on a file using every sink type, and on generated
pipeline files. The wildcards that remain are listed in ``WILDCARD_RESOURCES`` with the
reason AWS gives us no narrower form; a new one fails here until it is listed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings

from deploy.aws.cloudformation import build_template
from deploy.pipeline.config import load_plan_from_file
from tests.deploy.test_config import CLICKSTREAM
from tests.deploy.test_template import DOMAIN, deployable_plans, plan_of
from tests.deploy.test_template_lint import KITCHEN_SINK

EXAMPLE = Path(__file__).parents[2] / "examples" / "clickstream" / "pipeline.yaml"

_ACCOUNT = r"arn:\$\{AWS::Partition\}:%s:\$\{AWS::Region\}:\$\{AWS::AccountId\}:"

#: Resources with a ``*`` that Allow statements may name, and why nothing narrower exists.
#: None is ``*`` alone: each is one key's, one bucket's or one domain's.
WILDCARD_RESOURCES: dict[str, str] = {
    _ACCOUNT % "kms" + r"key/\*": (
        "kms:Decrypt for the stream: the key id behind alias/aws/kinesis is not known when "
        "the template is written; the statement's kms:ViaService condition limits it to "
        "decryption by Kinesis on the function's behalf"
    ),
    r"\$\{[A-Za-z0-9]+\.Arn\}/[^*]*\*": (
        "objects of one bucket of the stack under a key prefix: the archive's literal prefix, "
        "dead-letters/ (oversize dead letters, and archive dead letters whose prefix names "
        "record fields), aws/lambda/ (Lambda's on-failure objects); keys hold shard and "
        "sequence numbers, so they cannot be listed in advance"
    ),
    r"arn:\$\{AWS::Partition\}:s3:::[a-z0-9.-]+/dead-letters/\*": (
        "oversize dead letters in an overflow bucket the file names but does not create"
    ),
    r"arn:\$\{AWS::Partition\}:es:[a-z0-9-]+:\$\{AWS::AccountId\}:domain/[a-z0-9-]+/\*": (
        "HTTP paths (/_bulk, /INDEX/_mget) of the one OpenSearch domain of the sink"
    ),
}

#: Resource types that hold no data, or whose encryption is not the template's to set.
NOT_STORES: dict[str, str] = {
    "AWS::Lambda::Function": "code and configuration; Lambda encrypts them at rest",
    "AWS::Lambda::EventSourceMapping": "configuration",
    "AWS::Kinesis::StreamConsumer": "a registration: the records stay in the stream",
    "AWS::IAM::Role": "configuration",
    "AWS::CloudWatch::Alarm": "configuration",
    "AWS::S3::BucketPolicy": "configuration",
    "AWS::Events::Rule": "a schedule: its constant input is the flush event, no data",
    "AWS::Lambda::Permission": "configuration",
    "AWS::Lambda::EventInvokeConfig": "configuration",
    "AWS::Logs::LogGroup": (
        "CloudWatch Logs encrypts every log group at rest; a KMS key of our own would need a "
        "customer-managed key and its key policy, which the file cannot name"
    ),
}


def _build(plan: dict[str, Any]) -> dict[str, Any]:
    return build_template(plan, code_bucket="artifacts", code_key="p/lambda.zip")


def _plans() -> list[Any]:
    return [
        pytest.param(load_plan_from_file(EXAMPLE), id="example"),
        pytest.param(plan_of(CLICKSTREAM, {"OPENSEARCH_URL": DOMAIN}), id="config-md"),
        pytest.param(plan_of(KITCHEN_SINK), id="every-sink"),
    ]


def _of_type(template: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [r["Properties"] for r in template["Resources"].values() if r["Type"] == kind]


def _policy_statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    """Every statement of every identity and resource policy in the template."""
    found = []
    for role in _of_type(template, "AWS::IAM::Role"):
        for policy in role["Policies"]:
            found += policy["PolicyDocument"]["Statement"]
    for policy in _of_type(template, "AWS::S3::BucketPolicy"):
        found += policy["PolicyDocument"]["Statement"]
    return found


def _resource_text(resource: Any) -> str:
    """A statement resource as text: a literal, a ``Fn::Sub`` string, or ``GetAtt Id.Attr``."""
    if isinstance(resource, str):
        return resource
    if "Fn::Sub" in resource:
        return str(resource["Fn::Sub"])
    (kind, value), *_ = resource.items()
    assert kind == "Fn::GetAtt", resource
    return f"${{{value[0]}.{value[1]}}}"


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# -- the properties --------------------------------------------------------------------------


def check_no_wildcard_actions(template: dict[str, Any]) -> None:
    for statement in _policy_statements(template):
        if statement["Effect"] == "Allow":
            for action in _as_list(statement["Action"]):
                assert "*" not in action, statement
                assert re.fullmatch(r"[a-z0-9-]+:[A-Za-z]+", action), action


def check_wildcard_resources_are_listed(template: dict[str, Any]) -> None:
    for statement in _policy_statements(template):
        if statement["Effect"] != "Allow":
            continue
        assert "Principal" not in statement, statement  # no resource policy opens access
        assert "NotResource" not in statement, statement
        for resource in _as_list(statement["Resource"]):
            text = _resource_text(resource)
            assert text != "*", statement
            if "*" not in text:
                continue
            reasons = [
                r for pattern, r in WILDCARD_RESOURCES.items() if re.fullmatch(pattern, text)
            ]
            assert reasons, f"{statement['Sid']}: {text} is not in WILDCARD_RESOURCES"
            if ":kms:" in text:
                via = statement["Condition"]["StringEquals"]["kms:ViaService"]
                assert via == {"Fn::Sub": "kinesis.${AWS::Region}.amazonaws.com"}


def check_only_tls_denials(template: dict[str, Any]) -> None:
    """Deny statements may be broad (they only take away); the only one is TLS-only."""
    for statement in _policy_statements(template):
        if statement["Effect"] == "Deny":
            assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def check_only_lambda_assumes_roles(template: dict[str, Any]) -> None:
    for role in _of_type(template, "AWS::IAM::Role"):
        assert role["AssumeRolePolicyDocument"]["Statement"] == [
            {
                "Effect": "Allow",
                "Principal": {"Service": "lambda.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ]
        assert "ManagedPolicyArns" not in role  # AWS's managed Lambda policies grant on "*"


def check_named_resources_come_from_the_file(template: dict[str, Any], plan: Any) -> None:
    """An ARN built from a name (not from a resource of the stack) names what the file
    names: a lookup table, a target stream, an overflow bucket, a domain, the stream key, a
    schema registry and schema."""
    sinks = plan["sinks"].values()
    tables = {
        step["enrich"]["lookup"]["table"]
        for function in plan["functions"].values()
        for step in function["processors"]
        if "lookup" in step.get("enrich", {})
    }
    streams = {s["stream"] for s in sinks if s["type"] == "kinesis"}
    buckets = {s.get("overflow_bucket") for s in sinks if s["type"] == "sqs"}
    endpoints = [s["endpoint"] for s in sinks if s["type"] == "opensearch"]
    registries = [
        step["schema"]["registry"]
        for function in plan["functions"].values()
        for step in function["processors"]
        if "registry" in (step.get("schema") or {})
    ]
    for statement in _policy_statements(template):
        for resource in _as_list(statement["Resource"]):
            text = _resource_text(resource)
            if text.startswith("${"):  # a resource of this stack
                assert text[2:].split(".")[0] in template["Resources"], text
                continue
            if text.startswith("arn:${AWS::Partition}:s3:::"):
                assert text.split(":::")[1].split("/")[0] in buckets, text
                continue
            kind, _, rest = text.rsplit(":", 1)[-1].partition("/")
            if kind == "table":
                assert rest in tables, text
            elif kind == "stream":
                assert rest in streams, text
            elif kind == "domain":
                domain = rest.removesuffix("/*")
                assert any(f"-{domain}" in e for e in endpoints), text
            elif kind == "registry":
                assert any(rest == r["registry"] for r in registries), text
            elif kind == "schema":
                assert any(rest == f"{r['registry']}/{r['name']}" for r in registries), text
            else:
                assert (kind, rest) == ("key", "*"), text


def check_every_store_is_encrypted(template: dict[str, Any], plan: Any) -> None:
    streams = _of_type(template, "AWS::Kinesis::Stream")
    assert len(streams) == 1
    if plan["stream"]["encryption"] == "kms":
        assert streams[0]["StreamEncryption"] == {
            "EncryptionType": "KMS",
            "KeyId": "alias/aws/kinesis",
        }
    for table in _of_type(template, "AWS::DynamoDB::Table"):
        assert table["SSESpecification"] == {"SSEEnabled": True}
        assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    for bucket in _of_type(template, "AWS::S3::Bucket"):
        (rule,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    for queue in _of_type(template, "AWS::SQS::Queue"):
        assert queue["SqsManagedSseEnabled"] is True
    stores = {"AWS::Kinesis::Stream", "AWS::DynamoDB::Table", "AWS::S3::Bucket", "AWS::SQS::Queue"}
    for resource in template["Resources"].values():
        assert resource["Type"] in stores | set(NOT_STORES), resource["Type"]


def check_no_public_bucket(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    denied: dict[str, list[Any]] = {}
    for policy in _of_type(template, "AWS::S3::BucketPolicy"):
        (statement,) = policy["PolicyDocument"]["Statement"]
        denied[policy["Bucket"]["Ref"]] = statement["Resource"]
        assert (statement["Effect"], statement["Principal"], statement["Action"]) == (
            "Deny",
            "*",
            "s3:*",
        )
    for rid, resource in resources.items():
        if resource["Type"] != "AWS::S3::Bucket":
            continue
        props = resource["Properties"]
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        assert props["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
        assert "AccessControl" not in props
        assert "WebsiteConfiguration" not in props
        assert denied[rid] == [{"Fn::GetAtt": [rid, "Arn"]}, {"Fn::Sub": f"${{{rid}.Arn}}/*"}]


CHECKS = [
    check_no_wildcard_actions,
    check_wildcard_resources_are_listed,
    check_only_tls_denials,
    check_only_lambda_assumes_roles,
    check_no_public_bucket,
]
def check_efo_reads_only_its_own_consumer(template: dict[str, Any], plan: Any) -> None:
    """A ``consumer: efo`` function's role reads no records from the stream itself (no
    GetRecords, no GetShardIterator) and subscribes to its own consumer only; a shared
    function's role subscribes to nothing."""
    resources = template["Resources"]
    consumers = {
        props["FunctionName"]["Ref"]: props["EventSourceArn"]
        for props in _of_type(template, "AWS::Lambda::EventSourceMapping")
    }
    for function, spec in plan["functions"].items():
        fid = next(i for i, r in resources.items() if r["Type"] == "AWS::Lambda::Function"
                   and r["Properties"]["Environment"]["Variables"]["SHARDLINE_FUNCTION"]
                   == function)  # fmt: skip
        role = resources[resources[fid]["Properties"]["Role"]["Fn::GetAtt"][0]]["Properties"]
        (policy,) = role["Policies"]
        granted = policy["PolicyDocument"]["Statement"]
        subscribe = [s for s in granted if "kinesis:SubscribeToShard" in s["Action"]]
        if spec["batch"].get("consumer") == "efo":
            source = consumers[fid]
            assert source["Fn::GetAtt"][1] == "ConsumerARN", source
            assert [s["Resource"] for s in subscribe] == [[source]]
            assert not any(
                a in s["Action"]
                for s in granted
                for a in ("kinesis:GetRecords", "kinesis:GetShardIterator")
            )
        else:
            assert subscribe == []


def check_registry_reads_only_its_schemas(template: dict[str, Any], plan: Any) -> None:
    """A function with ``schema: {registry: ...}`` steps may call ``glue:GetSchemaVersion``
    on exactly those registries and schemas, and nothing else of Glue; other functions may
    call nothing of Glue."""
    resources = template["Resources"]
    for function, spec in plan["functions"].items():
        fid = next(i for i, r in resources.items() if r["Type"] == "AWS::Lambda::Function"
                   and r["Properties"]["Environment"]["Variables"]["SHARDLINE_FUNCTION"]
                   == function)  # fmt: skip
        role = resources[resources[fid]["Properties"]["Role"]["Fn::GetAtt"][0]]["Properties"]
        (policy,) = role["Policies"]
        glue = [s for s in policy["PolicyDocument"]["Statement"]
                if any(a.startswith("glue:") for a in _as_list(s["Action"]))]  # fmt: skip
        named = [
            (entry["schema"]["registry"]["registry"], entry["schema"]["registry"]["name"])
            for entry in spec.get("processors", ())
            if "registry" in (entry.get("schema") or {})
        ]
        if not named:
            assert glue == [], (function, glue)
            continue
        (statement,) = glue
        assert statement["Action"] == ["glue:GetSchemaVersion"]
        account = "arn:${AWS::Partition}:glue:${AWS::Region}:${AWS::AccountId}:"
        expected = {account + f"registry/{r}" for r, _ in named}
        expected |= {account + f"schema/{r}/{n}" for r, n in named}
        assert {_resource_text(x) for x in statement["Resource"]} == expected


CHECKS_WITH_PLAN = [
    check_named_resources_come_from_the_file,
    check_every_store_is_encrypted,
    check_efo_reads_only_its_own_consumer,
    check_registry_reads_only_its_schemas,
]


class TestSecurity:
    @pytest.mark.parametrize("plan", _plans())
    @pytest.mark.parametrize("check", CHECKS, ids=[c.__name__[6:] for c in CHECKS])
    def test_fixed_files(self, plan, check):
        check(_build(plan))

    @pytest.mark.parametrize("plan", _plans())
    @pytest.mark.parametrize(
        "check", CHECKS_WITH_PLAN, ids=[c.__name__[6:] for c in CHECKS_WITH_PLAN]
    )
    def test_fixed_files_against_their_plan(self, plan, check):
        check(_build(plan), plan)

    @given(deployable_plans())
    @settings(max_examples=40)
    def test_generated_files(self, plan):
        template = _build(plan)
        for check in CHECKS:
            check(template)
        for check_plan in CHECKS_WITH_PLAN:
            check_plan(template, plan)

    def test_every_listed_wildcard_is_used_by_the_file_with_every_sink(self):
        """The allowlist stays short: each entry is needed by some template."""
        texts = [
            _resource_text(resource)
            for statement in _policy_statements(_build(plan_of(KITCHEN_SINK | {"stream": {
                "name": "s", "encryption": "kms"}})))
            for resource in _as_list(statement["Resource"])
        ]  # fmt: skip
        for pattern in WILDCARD_RESOURCES:
            assert any(re.fullmatch(pattern, text) for text in texts), pattern

    def test_a_wildcard_action_or_resource_would_be_caught(self):
        template = _build(plan_of(KITCHEN_SINK))
        role = next(r for r in template["Resources"].values() if r["Type"] == "AWS::IAM::Role")
        statement = role["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0]
        statement["Action"] = ["s3:*"]
        with pytest.raises(AssertionError):
            check_no_wildcard_actions(template)
        statement["Resource"] = ["*"]
        with pytest.raises(AssertionError):
            check_wildcard_resources_are_listed(template)
