"""The CloudFormation template of a plan (deploy.aws.cloudformation) and ``shardline template``.

``pipeline_documents`` generates valid pipeline files (as dicts) of every shape the schema
allows that the template cares about; the lint and security tests use it too.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy.aws.cloudformation import (
    HANDLER,
    PLAN_IN_PACKAGE,
    PLAN_PATH,
    build_template,
    dead_letter_queue_name,
    deploy_problems,
    function_name,
    key_prefix,
    logical_ids,
    opensearch_domain,
    template_json,
)
from deploy.cli import main
from deploy.names import lease_table_name
from deploy.pipeline.config import ConfigError, compile_plan, load_plan_from_file, parse_config
from sinks.s3 import object_key
from sinks.templates import Template
from stream.records import Record
from stream.runtime import used_sinks
from tests.deploy.test_config import CLICKSTREAM, ENV

ORDERS = "ClickstreamOrdersTable"


def in_account(service: str, resource: str) -> str:
    """An ARN in the stack's partition, region and account, as ``Fn::Sub`` writes it."""
    return f"arn:${{AWS::Partition}}:{service}:${{AWS::Region}}:${{AWS::AccountId}}:{resource}"


EXAMPLE = Path(__file__).parents[2] / "examples" / "clickstream" / "pipeline.yaml"
DOMAIN = "https://search-shop-logs-abcdefghijklmnopqrstuvwxyz.eu-west-1.es.amazonaws.com"

# -- building plans ------------------------------------------------------------------------


def plan_of(doc: dict[str, Any] | str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Validate and compile a pipeline given as a dict (JSON is YAML) or YAML text."""
    text = doc if isinstance(doc, str) else json.dumps(doc)
    return compile_plan(parse_config(text, source="pipeline.yaml", env=env or ENV))


def build(plan: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return build_template(plan, code_bucket="artifacts", code_key="shop/lambda.zip", **kwargs)


def minimal(**functions: Any) -> dict[str, Any]:
    """A pipeline with a stdout sink and the given functions (default: one, ``main``)."""
    return {
        "name": "shop",
        "stream": {"name": "shop-events"},
        "sinks": {"out": {"type": "stdout"}},
        "functions": functions or {"main": {"processors": [], "route": ["out"]}},
    }


def of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """The properties of every resource of ``kind``, by logical id."""
    return {
        rid: r.get("Properties", {})
        for rid, r in template["Resources"].items()
        if r["Type"] == f"AWS::{kind}"
    }


def only(template: dict[str, Any], kind: str) -> dict[str, Any]:
    (props,) = of_type(template, kind).values()
    return props


def statements(template: dict[str, Any], function: str) -> dict[str, dict[str, Any]]:
    """The role policy statements of one function, by Sid."""
    role = template["Resources"][f"{_camel(function)}Role"]["Properties"]
    (policy,) = role["Policies"]
    return {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}


def _camel(name: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in re.split(r"[^A-Za-z0-9]+", name) if p)


# -- generated pipeline files --------------------------------------------------------------

NAMES = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,14}", fullmatch=True)
FUNCTION_NAMES = st.from_regex(r"[a-z][a-z0-9-]{0,14}", fullmatch=True)
SINK_NAMES = st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True)
STREAMS = st.from_regex(r"[A-Za-z0-9_.-]{1,24}", fullmatch=True)
TABLES = st.from_regex(r"[A-Za-z0-9_.-]{3,24}", fullmatch=True)
BUCKETS = st.from_regex(r"[a-z0-9][a-z0-9-]{1,20}[a-z0-9]", fullmatch=True)
QUEUES = st.from_regex(r"[A-Za-z0-9_-]{1,30}(\.fifo)?", fullmatch=True)
PREFIXES = st.sampled_from(["", "raw/", "raw", "/a//b/", "{event_type}/", "x-{arrival:%Y}/"])
PATTERNS = st.sampled_from(
    [
        {"event_type": ["click", "purchase"]},
        {"amount": [{"numeric": [">", 0]}]},
        {"user": {"tier": ["gold"]}},
        {"event_type": [{"prefix": "pur"}]},
        {"kind": [{"anything-but": ["test"]}]},
        {"order_id": [{"exists": True}]},
    ]
)


def sink_specs() -> st.SearchStrategy[dict[str, Any]]:
    def spec(kind: str, required: dict[str, Any], **optional: Any) -> Any:
        return st.fixed_dictionaries({"type": st.just(kind), **required}, optional=optional)

    return st.one_of(
        spec("dynamodb", {"table": TABLES, "key": st.sampled_from(["id", "order_id"])},
             mode=st.sampled_from(["latest", "append"])),
        spec("s3", {"bucket": BUCKETS}, prefix=PREFIXES,
             partition=st.just("dt={arrival:%Y-%m-%d}"),
             compression=st.sampled_from(["gzip", "none"])),
        spec("sqs", {"queue": QUEUES}, overflow_bucket=BUCKETS),
        spec("kinesis", {"stream": STREAMS, "partition_key": st.just("user_id")}),
        spec("opensearch", {
            "endpoint": st.sampled_from([DOMAIN, "http://127.0.0.1:9200", "https://os.example.com"]),
            "index": st.just("events-{arrival:%Y.%m.%d}"),
        }, id=st.just("event_id"), auth=st.sampled_from(["sigv4", "none"])),
        spec("stdout", {}),
    )  # fmt: skip


def batches() -> st.SearchStrategy[dict[str, Any]]:
    base = st.fixed_dictionaries(
        {},
        optional={
            "size": st.integers(1, 10000),
            "window_s": st.integers(0, 300),
            "starting_position": st.sampled_from(["trim_horizon", "latest"]),
            "parallelization": st.integers(1, 10),
            "bisect_on_error": st.booleans(),
            "max_retries": st.integers(0, 10000),
            "max_record_age_s": st.integers(60, 604800),
            "consumer": st.sampled_from(["shared", "efo"]),
        },
    )
    at = st.fixed_dictionaries(
        {
            "starting_position": st.just("at_timestamp"),
            "starting_timestamp": st.sampled_from(["2024-05-01T00:00:00Z", 1714521600, 1.5e9]),
        }
    )
    return st.one_of(base, at)


@st.composite
def function_specs(draw: Any, sinks: dict[str, Any]) -> dict[str, Any]:
    names = list(sinks)
    failure = [  # Lambda's on-failure destinations: standard queues, buckets
        n for n, s in sinks.items()
        if s["type"] == "s3" or (s["type"] == "sqs" and not s["queue"].endswith(".fifo"))
    ]  # fmt: skip
    spec = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "memory_mb": st.integers(128, 10240),
                "timeout_s": st.integers(1, 900),
                "batch": batches(),
                "ordering": st.sampled_from(["strict", "per_key", "none"]),
                "filter_pushdown": st.booleans(),
            },
        )
    )
    if failure and draw(st.booleans()):
        spec["on_failure"] = draw(st.sampled_from(failure))
    steps: list[Any] = [{"filter": {"match": p}} for p in draw(st.lists(PATTERNS, max_size=3))]
    if draw(st.booleans()):  # a Glue Schema Registry contract: a grant of its own
        registered = {"name": draw(st.sampled_from(["orders", "orders.v$1"]))}
        if draw(st.booleans()):
            registered["registry"] = draw(st.sampled_from(["shop", "default-registry"]))
        steps.append({"schema": {"registry": registered}})
    if draw(st.booleans()):
        table = draw(st.sampled_from(["shop-users", "users.v2"]))
        steps.append({"enrich": {"lookup": {"table": table, "key": "user_id", "into": "user"}}})
    targets = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
    if draw(st.booleans()):
        spec["route"] = targets
    else:
        steps.append(
            {
                "route": [
                    {"when": {"event_type": ["purchase"]}, "to": targets},
                    {"default": [names[0]]},
                ]
            }
        )
    spec["processors"] = steps
    return spec


@st.composite
def pipeline_documents(draw: Any) -> dict[str, Any]:
    """A valid pipeline file (as a dict): sink mixes, modes, filters, on_failure or not."""
    sinks = draw(st.dictionaries(SINK_NAMES, sink_specs(), min_size=1, max_size=5))
    functions = draw(st.dictionaries(FUNCTION_NAMES, function_specs(sinks), min_size=1, max_size=3))
    stream: dict[str, Any] = {"name": draw(STREAMS)}
    if draw(st.booleans()):
        stream |= {"mode": "provisioned", "shards": draw(st.integers(1, 50))}
    stream |= draw(
        st.fixed_dictionaries(
            {},
            optional={
                "retention_hours": st.integers(24, 8760),
                "encryption": st.sampled_from(["kms", "none"]),
                "aggregated": st.booleans(),
            },
        )
    )
    for spec in functions.values():  # strict shard order needs one lane (validate refuses)
        if spec.get("ordering") == "strict" and "parallelization" in spec.get("batch", {}):
            spec["batch"]["parallelization"] = 1
    if stream.get("aggregated"):  # what validate refuses with aggregation
        for spec in functions.values():
            spec.pop("filter_pushdown", None)
            if "parallelization" in spec.get("batch", {}):
                spec["batch"]["parallelization"] = 1
    doc = {"name": draw(NAMES), "stream": stream, "sinks": sinks, "functions": functions}
    if draw(st.booleans()):
        doc["region"] = draw(st.sampled_from(["us-east-1", "eu-west-1"]))
    return doc


def _valid_plan(doc: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return plan_of(doc)
    except ConfigError:  # what validate refuses (one table with two key schemas...)
        return None


def deployable_plans() -> st.SearchStrategy[dict[str, Any]]:
    """Compiled plans of generated files that validate and :func:`deploy_problems` pass."""
    return (
        pipeline_documents()
        .map(_valid_plan)
        .filter(lambda plan: plan is not None and not deploy_problems(plan))
    )


# -- the tests -----------------------------------------------------------------------------


class TestStream:
    def test_an_on_demand_stream_has_no_shard_count_and_is_encrypted_by_default(self):
        props = only(build(plan_of(minimal())), "Kinesis::Stream")
        assert props == {
            "Name": "shop-events",
            "RetentionPeriodHours": 24,
            "StreamModeDetails": {"StreamMode": "ON_DEMAND"},
            "StreamEncryption": {"EncryptionType": "KMS", "KeyId": "alias/aws/kinesis"},
        }

    def test_a_provisioned_stream_has_its_shard_count_and_retention(self):
        doc = minimal()
        doc["stream"] |= {"mode": "provisioned", "shards": 3, "retention_hours": 168}
        props = only(build(plan_of(doc)), "Kinesis::Stream")
        assert props["StreamModeDetails"] == {"StreamMode": "PROVISIONED"}
        assert props["ShardCount"] == 3
        assert props["RetentionPeriodHours"] == 168

    def test_encryption_none_leaves_the_stream_unencrypted_and_grants_no_kms(self):
        doc = minimal()
        doc["stream"]["encryption"] = "none"
        template = build(plan_of(doc))
        assert "StreamEncryption" not in only(template, "Kinesis::Stream")
        assert not any("kms:" in json.dumps(s) for s in statements(template, "main").values())

    def test_a_kinesis_sinks_target_stream_is_not_created(self):
        doc = minimal()
        doc["sinks"]["next"] = {"type": "kinesis", "stream": "stage-2", "partition_key": "id"}
        doc["functions"]["main"]["route"] = ["next"]
        assert list(of_type(build(plan_of(doc)), "Kinesis::Stream")) == ["Stream"]


class TestFunction:
    def test_the_lambda_has_the_defaults_and_names_its_plan_and_function(self):
        props = only(build(plan_of(minimal())), "Lambda::Function")
        assert props == {
            "FunctionName": "shop-main",
            "Description": "shardline shop: main",
            "Runtime": "python3.12",
            "Architectures": ["arm64"],
            "Handler": HANDLER,
            "MemorySize": 256,
            "Timeout": 60,
            "Role": {"Fn::GetAtt": ["MainRole", "Arn"]},
            "Code": {"S3Bucket": "artifacts", "S3Key": "shop/lambda.zip"},
            "Environment": {
                "Variables": {"SHARDLINE_FUNCTION": "main", "SHARDLINE_PIPELINE": PLAN_PATH}
            },
            "LoggingConfig": {"LogGroup": {"Ref": "MainLogGroup"}, "LogFormat": "Text"},
        }

    def test_runtime_architecture_memory_and_timeout_follow_the_arguments_and_file(self):
        doc = minimal(
            main={"memory_mb": 1024, "timeout_s": 300, "processors": [], "route": ["out"]}
        )
        props = only(build(plan_of(doc), runtime="python3.13", architecture="x86_64"),
                     "Lambda::Function")  # fmt: skip
        assert (props["Runtime"], props["Architectures"]) == ("python3.13", ["x86_64"])
        assert (props["MemorySize"], props["Timeout"]) == (1024, 300)

    def test_the_plan_path_is_where_the_handler_looks_by_default(self):
        import stream.lambda_handler as handler  # noqa: PLC0415  # builds nothing without env

        root = Path(handler.__file__).parents[1]
        assert Path(handler._DEFAULT_PLAN).relative_to(root).as_posix() == PLAN_IN_PACKAGE
        assert f"/var/task/{PLAN_IN_PACKAGE}" == PLAN_PATH

    def test_its_log_group_is_the_one_lambda_writes_to_and_is_kept_30_days(self):
        props = only(build(plan_of(minimal())), "Logs::LogGroup")
        assert props == {"LogGroupName": "/aws/lambda/shop-main", "RetentionInDays": 30}

    def test_reserved_concurrency_is_not_set_because_the_file_cannot_ask_for_it(self):
        assert "ReservedConcurrentExecutions" not in only(
            build(plan_of(minimal())), "Lambda::Function"
        )


class TestEventSourceMapping:
    def test_every_batch_setting_of_the_file_is_on_the_mapping(self):
        batch = {
            "size": 250, "window_s": 5, "starting_position": "latest", "parallelization": 4,
            "bisect_on_error": False, "max_retries": 7, "max_record_age_s": 7200,
        }  # fmt: skip
        doc = minimal(main={"batch": batch, "processors": [], "route": ["out"]})
        assert only(build(plan_of(doc)), "Lambda::EventSourceMapping") == {
            "EventSourceArn": {"Fn::GetAtt": ["Stream", "Arn"]},
            "FunctionName": {"Ref": "MainFunction"},
            "BatchSize": 250,
            "MaximumBatchingWindowInSeconds": 5,
            "StartingPosition": "LATEST",
            "ParallelizationFactor": 4,
            "BisectBatchOnFunctionError": False,
            "MaximumRetryAttempts": 7,
            "MaximumRecordAgeInSeconds": 7200,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "DestinationConfig": {
                "OnFailure": {"Destination": {"Fn::GetAtt": ["ShopDlqQueue", "Arn"]}}
            },
        }

    def test_an_efo_function_reads_through_a_consumer_of_its_own(self):
        doc = minimal(
            main={"batch": {"consumer": "efo"}, "processors": [], "route": ["out"]},
            other={"processors": [], "route": ["out"]},
        )
        template = build(plan_of(doc))
        assert of_type(template, "Kinesis::StreamConsumer") == {
            "MainConsumer": {
                "ConsumerName": "shop-main",
                "StreamARN": {"Fn::GetAtt": ["Stream", "Arn"]},
            }
        }
        sources = {
            props["FunctionName"]["Ref"]: props["EventSourceArn"]
            for props in of_type(template, "Lambda::EventSourceMapping").values()
        }
        assert sources == {
            "MainFunction": {"Fn::GetAtt": ["MainConsumer", "ConsumerARN"]},
            "OtherFunction": {"Fn::GetAtt": ["Stream", "Arn"]},
        }
        assert template["Outputs"]["MainConsumerArn"]["Value"] == {
            "Fn::GetAtt": ["MainConsumer", "ConsumerARN"]
        }

    def test_an_efo_role_subscribes_to_its_consumer_and_never_calls_get_records(self):
        doc = minimal(
            main={"batch": {"consumer": "efo"}, "processors": [], "route": ["out"]},
            other={"processors": [], "route": ["out"]},
        )
        template = build(plan_of(doc))
        efo = statements(template, "main")
        assert efo["ReadThroughOwnConsumer"] == {
            "Sid": "ReadThroughOwnConsumer",
            "Effect": "Allow",
            "Action": ["kinesis:DescribeStreamConsumer", "kinesis:SubscribeToShard"],
            "Resource": [{"Fn::GetAtt": ["MainConsumer", "ConsumerARN"]}],
        }
        assert efo["DescribeStream"]["Action"] == [
            "kinesis:DescribeStream", "kinesis:DescribeStreamSummary", "kinesis:ListShards",
        ]  # fmt: skip
        assert "ReadStream" not in efo
        shared = statements(template, "other")
        assert "kinesis:GetRecords" in shared["ReadStream"]["Action"]
        assert not any("SubscribeToShard" in str(s) for s in shared.values())

    def test_at_timestamp_sets_the_timestamp_in_epoch_seconds(self):
        batch = {"starting_position": "at_timestamp", "starting_timestamp": "2024-05-01T00:00:00Z"}
        doc = minimal(main={"batch": batch, "processors": [], "route": ["out"]})
        props = only(build(plan_of(doc)), "Lambda::EventSourceMapping")
        assert props["StartingPosition"] == "AT_TIMESTAMP"
        assert props["StartingPositionTimestamp"] == 1714521600

    def test_retries_and_record_age_are_bounded_when_the_file_says_nothing(self):
        props = only(build(plan_of(minimal())), "Lambda::EventSourceMapping")
        assert (props["MaximumRetryAttempts"], props["MaximumRecordAgeInSeconds"]) == (3, 86400)
        assert props["BisectBatchOnFunctionError"] is True

    @given(deployable_plans())
    @settings(max_examples=25)
    def test_no_mapping_is_ever_unbounded_or_without_an_on_failure_destination(self, plan):
        for props in of_type(build(plan), "Lambda::EventSourceMapping").values():
            assert 0 <= props["MaximumRetryAttempts"] <= 10000
            assert 60 <= props["MaximumRecordAgeInSeconds"] <= 604800
            assert props["DestinationConfig"]["OnFailure"]["Destination"]["Fn::GetAtt"][1] == "Arn"
            assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]

    def test_the_on_failure_sink_is_the_destination_queue_or_bucket(self):
        doc = minimal(
            a={"on_failure": "dlq", "processors": [], "route": ["out"]},
            b={"on_failure": "vault", "processors": [], "route": ["out"]},
        )
        doc["sinks"] |= {
            "dlq": {"type": "sqs", "queue": "shop-dead"},
            "vault": {"type": "s3", "bucket": "shop-vault"},
        }
        template = build(plan_of(doc))
        mappings = of_type(template, "Lambda::EventSourceMapping")
        destination = {
            k: v["DestinationConfig"]["OnFailure"]["Destination"] for k, v in mappings.items()
        }
        assert destination == {
            "AMapping": {"Fn::GetAtt": ["ShopDeadQueue", "Arn"]},
            "BMapping": {"Fn::GetAtt": ["ShopVaultBucket", "Arn"]},
        }
        assert [p["QueueName"] for p in of_type(template, "SQS::Queue").values()] == ["shop-dead"]

    def test_functions_without_on_failure_share_the_created_dead_letter_queue(self):
        doc = minimal(
            a={"processors": [], "route": ["out"]}, b={"processors": [], "route": ["out"]}
        )
        template = build(plan_of(doc))
        queues = of_type(template, "SQS::Queue")
        assert queues == {
            "ShopDlqQueue": {
                "QueueName": "shop-dlq",
                "SqsManagedSseEnabled": True,
                "MessageRetentionPeriod": 1209600,
                "Tags": [{"Key": "shardline:pipeline", "Value": "shop"}],
            }
        }
        for props in of_type(template, "Lambda::EventSourceMapping").values():
            assert props["DestinationConfig"]["OnFailure"]["Destination"] == {
                "Fn::GetAtt": ["ShopDlqQueue", "Arn"]
            }

    def test_a_sink_queue_named_like_the_dead_letter_queue_is_the_same_queue(self):
        doc = minimal(a={"processors": [], "route": ["dlq"]})
        doc["sinks"]["dlq"] = {"type": "sqs", "queue": dead_letter_queue_name({"name": "shop"})}
        assert len(of_type(build(plan_of(doc)), "SQS::Queue")) == 1

    def test_leading_match_filters_become_the_filter_criteria_with_pushdown_on(self):
        steps = [
            {"filter": {"match": {"event_type": ["click"], "amount": [{"numeric": [">", 0]}]}}}
        ]
        main = {"processors": steps, "route": ["out"], "filter_pushdown": True}
        plan = plan_of(minimal(main=main))
        props = only(build(plan), "Lambda::EventSourceMapping")
        (pattern,) = (f["Pattern"] for f in props["FilterCriteria"]["Filters"])
        assert json.loads(pattern) == plan["functions"]["main"]["filter_criteria"][0]
        assert pattern == '{"data":{"amount":[{"numeric":[">",0]}],"event_type":["click"]}}'

    @pytest.mark.parametrize(
        ("stream", "function"),
        [({"aggregated": True}, {}), ({}, {"filter_pushdown": False}), ({}, {})],
        ids=["kpl-aggregated", "pushdown-off", "pushdown-by-default-off"],
    )
    def test_no_filter_criteria_unless_pushdown_is_asked_for(self, stream, function):
        """Pushdown is an opt-in: AWS drops non-JSON records silently under it."""
        steps = [{"filter": {"match": {"event_type": ["click"]}}}]
        doc = minimal(main={"processors": steps, "route": ["out"], **function})
        doc["stream"] |= stream
        assert "FilterCriteria" not in only(build(plan_of(doc)), "Lambda::EventSourceMapping")


class TestStores:
    def test_dynamodb_tables_are_keyed_by_the_sink_key_and_append_adds_the_position(self):
        doc = minimal()
        doc["sinks"] |= {
            "latest": {"type": "dynamodb", "table": "shop-orders", "key": "order_id"},
            "log": {"type": "dynamodb", "table": "shop-log", "key": "id", "mode": "append"},
        }
        tables = of_type(build(plan_of(doc)), "DynamoDB::Table")
        safety = {
            "BillingMode": "PAY_PER_REQUEST",
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "SSESpecification": {"SSEEnabled": True},
            "Tags": [{"Key": "shardline:pipeline", "Value": "shop"}],  # the owner, for destroy
        }
        assert tables["ShopOrdersTable"] == {
            "TableName": "shop-orders",
            "KeySchema": [{"AttributeName": "order_id", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "order_id", "AttributeType": "S"}],
            **safety,
        }
        assert tables["ShopLogTable"] == {
            "TableName": "shop-log",
            "KeySchema": [
                {"AttributeName": "id", "KeyType": "HASH"},
                {"AttributeName": "_position", "KeyType": "RANGE"},
            ],
            "AttributeDefinitions": [
                {"AttributeName": "id", "AttributeType": "S"},
                {"AttributeName": "_position", "AttributeType": "S"},
            ],
            **safety,
        }
        assert tables["MainLeaseTable"] == {
            "TableName": lease_table_name({"name": "shop"}, "main"),
            "KeySchema": [{"AttributeName": "leaseKey", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "leaseKey", "AttributeType": "S"}],
            **safety,
        }

    def test_a_lookup_table_is_read_but_not_created_unless_a_sink_writes_it(self):
        lookup = {"enrich": {"lookup": {"table": "users", "key": "user_id", "into": "u"}}}
        doc = minimal(main={"processors": [lookup], "route": ["out"]})
        names = {p["TableName"] for p in of_type(build(plan_of(doc)), "DynamoDB::Table").values()}
        assert names == {"shop-main-leases"}
        doc["sinks"]["users"] = {"type": "dynamodb", "table": "users", "key": "user_id"}
        names = {p["TableName"] for p in of_type(build(plan_of(doc)), "DynamoDB::Table").values()}
        assert names == {"shop-main-leases", "users"}

    def test_one_table_named_by_two_sinks_is_created_once(self):
        doc = minimal()
        doc["sinks"] |= {
            "a": {"type": "dynamodb", "table": "shared", "key": "id"},
            "b": {"type": "dynamodb", "table": "shared", "key": "id"},
        }
        assert len(of_type(build(plan_of(doc)), "DynamoDB::Table")) == 2  # + the lease table

    def test_the_archive_bucket_is_encrypted_private_tls_only_and_never_expires_data(self):
        doc = minimal()
        doc["sinks"]["archive"] = {"type": "s3", "bucket": "shop-archive", "prefix": "raw/"}
        template = build(plan_of(doc))
        bucket = only(template, "S3::Bucket")
        assert bucket["BucketName"] == "shop-archive"
        assert bucket["BucketEncryption"] == {
            "ServerSideEncryptionConfiguration": [
                {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
            ]
        }
        assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
        assert len(bucket["PublicAccessBlockConfiguration"]) == 4
        (rule,) = bucket["LifecycleConfiguration"]["Rules"]
        assert rule["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
        assert not {"ExpirationInDays", "Transitions", "ExpiredObjectDeleteMarker"} & set(rule)
        policy = only(template, "S3::BucketPolicy")
        assert policy["Bucket"] == {"Ref": "ShopArchiveBucket"}
        (deny,) = policy["PolicyDocument"]["Statement"]
        assert deny["Effect"] == "Deny"
        assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        assert deny["Resource"] == [
            {"Fn::GetAtt": ["ShopArchiveBucket", "Arn"]},
            {"Fn::Sub": "${ShopArchiveBucket.Arn}/*"},
        ]

    def test_a_fifo_queue_is_declared_fifo(self):
        doc = minimal()
        doc["sinks"]["q"] = {"type": "sqs", "queue": "shop-orders.fifo"}
        doc["functions"]["main"]["route"] = ["q"]
        queues = {p["QueueName"]: p for p in of_type(build(plan_of(doc)), "SQS::Queue").values()}
        assert queues["shop-orders.fifo"]["FifoQueue"] is True
        assert "FifoQueue" not in queues["shop-dlq"]


def _grants(template: dict[str, Any], function: str) -> dict[str, tuple[list[str], list[Any]]]:
    return {sid: (s["Action"], s["Resource"]) for sid, s in statements(template, function).items()}


class TestLeastPrivilege:
    def test_the_config_example_grants_exactly_what_each_function_uses(self):
        env = {"OPENSEARCH_URL": DOMAIN}
        template = build(plan_of(CLICKSTREAM, env))
        domain = "arn:${AWS::Partition}:es:eu-west-1:${AWS::AccountId}:domain/shop-logs/*"
        raw = "${ClickstreamArchiveBucket.Arn}/raw/*"
        common = {
            "ReadStream": (
                ["kinesis:DescribeStream", "kinesis:DescribeStreamSummary", "kinesis:GetRecords",
                 "kinesis:GetShardIterator", "kinesis:ListShards"],
                [{"Fn::GetAtt": ["Stream", "Arn"]}],
            ),
            "DecryptStreamThroughKinesis": (
                ["kms:Decrypt"],
                [{"Fn::Sub": "arn:${AWS::Partition}:kms:${AWS::Region}:${AWS::AccountId}:key/*"}],
            ),
            "OnFailureDestination": (["sqs:SendMessage"],
                                     [{"Fn::GetAtt": ["ClickstreamDlqQueue", "Arn"]}]),
        }  # fmt: skip
        assert _grants(template, "enrich-and-route") == {
            **common,
            "SinkDlq": (["sqs:GetQueueUrl", "sqs:SendMessage"],
                        [{"Fn::GetAtt": ["ClickstreamDlqQueue", "Arn"]}]),
            "SinkDlqOverflow": (["s3:PutObject"],
                                [{"Fn::Sub": "${ClickstreamArchiveBucket.Arn}/dead-letters/*"}]),
            "WriteOwnLogs": (
                ["logs:CreateLogStream", "logs:PutLogEvents"],
                [{"Fn::GetAtt": ["EnrichAndRouteLogGroup", "Arn"]}],
            ),
            "SinkOrders": (["dynamodb:PutItem"], [{"Fn::GetAtt": [ORDERS, "Arn"]}]),
            "SinkSearch": (["es:ESHttpPost"], [{"Fn::Sub": domain}]),
            "SinkArchive": (["s3:PutObject"], [{"Fn::Sub": raw}]),
            "LookupUsers": (
                ["dynamodb:BatchGetItem"],
                [{"Fn::Sub": in_account("dynamodb", "table/users")}],
            ),
        }  # fmt: skip
        # archive-all names no on_failure: its mapping gives up to clickstream-dlq (the
        # queue `<name>-dlq`, which the file also names), but it writes no dead letters itself
        assert _grants(template, "archive-all") == {
            **common,
            "WriteOwnLogs": (
                ["logs:CreateLogStream", "logs:PutLogEvents"],
                [{"Fn::GetAtt": ["ArchiveAllLogGroup", "Arn"]}],
            ),
            "SinkArchive": (["s3:PutObject"], [{"Fn::Sub": raw}]),
        }  # fmt: skip

    def test_the_stream_key_is_usable_only_through_kinesis(self):
        statement = statements(build(plan_of(minimal())), "main")["DecryptStreamThroughKinesis"]
        assert statement["Condition"] == {
            "StringEquals": {"kms:ViaService": {"Fn::Sub": "kinesis.${AWS::Region}.amazonaws.com"}}
        }

    def test_only_lambda_may_assume_the_role(self):
        role = only(build(plan_of(minimal())), "IAM::Role")
        assert role["AssumeRolePolicyDocument"]["Statement"] == [
            {
                "Effect": "Allow",
                "Principal": {"Service": "lambda.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ]
        assert "RoleName" not in role  # IAM names are global: CloudFormation names it

    @pytest.mark.parametrize(
        ("sink", "expected"),
        [
            ({"type": "dynamodb", "table": "tab1", "key": "id", "mode": "append"},
             (["dynamodb:BatchWriteItem"], [{"Fn::GetAtt": ["Tab1Table", "Arn"]}])),
            ({"type": "kinesis", "stream": "next", "partition_key": "id"},
             (["kinesis:ListShards", "kinesis:PutRecords"],
              [{"Fn::Sub": in_account("kinesis", "stream/next")}])),
            ({"type": "kinesis", "stream": "shop-events", "partition_key": "id"},
             (["kinesis:ListShards", "kinesis:PutRecords"], [{"Fn::GetAtt": ["Stream", "Arn"]}])),
            ({"type": "s3", "bucket": "b-1", "prefix": "x-{user}/{arrival:%Y}"},
             (["s3:PutObject"], [{"Fn::Sub": "${B1Bucket.Arn}/x-*"}])),
            ({"type": "sqs", "queue": "q1", "overflow_bucket": "elsewhere"},
             (["sqs:GetQueueUrl", "sqs:SendMessage"], [{"Fn::GetAtt": ["Q1Queue", "Arn"]}])),
        ],
        ids=["dynamodb-append", "kinesis-other", "kinesis-own", "s3-template", "sqs"],
    )  # fmt: skip
    def test_each_sink_type_gets_its_exact_actions_on_its_resource(self, sink, expected):
        doc = minimal()
        doc["sinks"]["it"] = sink
        doc["functions"]["main"]["route"] = ["it"]
        if sink.get("stream") == doc["stream"]["name"]:  # what it wrote must not come back
            doc["functions"]["main"]["processors"] = [{"filter": {"expr": "stage == null"}}]
        assert _grants(build(plan_of(doc)), "main")["SinkIt"] == expected

    def test_an_overflow_bucket_outside_the_file_is_granted_by_name(self):
        doc = minimal()
        doc["sinks"]["it"] = {"type": "sqs", "queue": "q1", "overflow_bucket": "elsewhere"}
        doc["functions"]["main"]["route"] = ["it"]
        assert _grants(build(plan_of(doc)), "main")["SinkItOverflow"] == (
            ["s3:PutObject"],
            [{"Fn::Sub": "arn:${AWS::Partition}:s3:::elsewhere/dead-letters/*"}],
        )

    def test_dead_letters_of_an_archive_whose_prefix_names_fields_are_granted_too(self):
        doc = minimal(main={"on_failure": "vault", "processors": [], "route": ["out"]})
        doc["sinks"]["vault"] = {"type": "s3", "bucket": "vault", "prefix": "raw-{kind}/"}
        grants = _grants(build(plan_of(doc)), "main")
        assert grants["SinkVault"] == (
            ["s3:PutObject"],
            [{"Fn::Sub": "${VaultBucket.Arn}/raw-*"},
             {"Fn::Sub": "${VaultBucket.Arn}/dead-letters/*"}],
        )  # fmt: skip
        assert grants["OnFailureDestination"] == (
            ["s3:PutObject"],
            [{"Fn::Sub": "${VaultBucket.Arn}/aws/lambda/*"}],
        )
        assert grants["OnFailureDestinationList"] == (
            ["s3:ListBucket"],
            [{"Fn::GetAtt": ["VaultBucket", "Arn"]}],
        )

    @pytest.mark.parametrize(
        "sink",
        [
            {"type": "opensearch", "endpoint": DOMAIN, "index": "i", "auth": "none"},
            {"type": "opensearch", "endpoint": "https://os.example.com", "index": "i"},
            {"type": "stdout"},
            {"type": "discard"},
        ],
        ids=["opensearch-no-auth", "opensearch-custom-endpoint", "stdout", "discard"],
    )
    def test_sinks_without_an_aws_api_to_call_get_no_grant(self, sink):
        doc = minimal()
        doc["sinks"]["it"] = sink
        doc["functions"]["main"]["route"] = ["it"]
        assert "SinkIt" not in statements(build(plan_of(doc)), "main")

    @given(deployable_plans())
    @settings(max_examples=25)
    def test_a_role_names_no_store_of_a_sink_its_function_does_not_use(self, plan):
        template = build(plan)
        ids = logical_ids(plan)
        for function, spec in plan["functions"].items():
            allowed = {ids[("Stream", "")], ids[("LogGroup", function)]}
            allowed.add(ids.get(("Consumer", function), ""))  # its own EFO consumer
            for sink in used_sinks(spec):
                sink_spec = plan["sinks"][sink]
                for kind, key in (("Table", "table"), ("Bucket", "bucket"), ("Queue", "queue"),
                                  ("Bucket", "overflow_bucket")):  # fmt: skip
                    allowed.add(ids.get((kind, sink_spec.get(key, "")), ""))
            for step in spec["processors"]:
                table = step.get("enrich", {}).get("lookup", {}).get("table", "")
                allowed.add(ids.get(("Table", table), ""))
            mapping = template["Resources"][ids[("Mapping", function)]]["Properties"]
            allowed.add(mapping["DestinationConfig"]["OnFailure"]["Destination"]["Fn::GetAtt"][0])
            role = template["Resources"][ids[("Role", function)]]["Properties"]
            assert _referenced(role["Policies"]) <= allowed


def _referenced(policies: Any) -> set[str]:
    """The logical ids a policy's resources refer to (``GetAtt`` and ``${Id.Arn}``)."""
    found: set[str] = set()
    for key, value in _walk(policies):
        if key == "Fn::GetAtt":
            found.add(value[0])
        elif key == "Fn::Sub":
            found |= set(re.findall(r"\$\{([A-Za-z0-9]+)\.Arn\}", value))
    return found


class TestOpenSearchDomain:
    def test_opensearch_domain_endpoints_name_their_region_and_domain(self):
        assert opensearch_domain(DOMAIN) == ("eu-west-1", "shop-logs")
        vpc = "https://vpc-a-b-c-abcdefghijklmnopqrstuvwxyz.us-west-2.es.amazonaws.com"
        assert opensearch_domain(vpc) == ("us-west-2", "a-b-c")
        assert opensearch_domain("https://search-solo.us-east-1.es.amazonaws.com") == (
            "us-east-1",
            "solo",
        )
        assert opensearch_domain("https://search.example.com") is None


class TestKeyPrefix:
    @given(
        st.lists(
            st.sampled_from(["raw", "", "/", "{kind}", "x-", "{arrival:%Y}", "a.b"]), max_size=5
        ),
        st.sampled_from(["a", "", "b/c"]),
    )
    def test_every_key_the_archive_writes_starts_with_the_granted_prefix(self, parts, kind):
        prefix = "".join(parts)
        record = Record(f'{{"kind": "{kind}"}}'.encode(), "k", "1", shard_id="s", arrival=0.0)
        rendered = Template(prefix).render(record)
        assert object_key(rendered, "dt=x", [record]).startswith(key_prefix(prefix))


class TestAlarmsAndOutputs:
    def test_each_function_alarms_on_iterator_age_and_errors(self):
        doc = minimal(main={"batch": {"window_s": 10}, "processors": [], "route": ["out"]})
        alarms = of_type(build(plan_of(doc)), "CloudWatch::Alarm")
        age, errors = alarms["MainIteratorAgeAlarm"], alarms["MainErrorsAlarm"]
        assert (age["MetricName"], age["Statistic"], age["Threshold"]) == (
            "IteratorAge",
            "Maximum",
            70000,
        )
        assert (errors["MetricName"], errors["Statistic"], errors["Threshold"]) == (
            "Errors",
            "Sum",
            0,
        )
        for alarm in (age, errors):
            assert alarm["Namespace"] == "AWS/Lambda"
            assert alarm["Dimensions"] == [
                {"Name": "FunctionName", "Value": {"Ref": "MainFunction"}}
            ]
            assert alarm["ComparisonOperator"] == "GreaterThanThreshold"

    def test_only_queues_that_receive_dead_letters_get_a_depth_alarm(self):
        doc = minimal(main={"processors": [], "route": ["orders"]})
        doc["sinks"]["orders"] = {"type": "sqs", "queue": "orders"}
        alarms = of_type(build(plan_of(doc)), "CloudWatch::Alarm")
        depth = {k: v for k, v in alarms.items() if v["Namespace"] == "AWS/SQS"}
        assert list(depth) == ["ShopDlqQueueDepthAlarm"]
        props = depth["ShopDlqQueueDepthAlarm"]
        assert props["MetricName"] == "ApproximateNumberOfMessagesVisible"
        assert (props["Threshold"], props["ComparisonOperator"]) == (0, "GreaterThanThreshold")

    def test_an_s3_on_failure_bucket_alarms_on_what_lambda_and_the_function_write_there(self):
        """Lambda's on-failure objects (a request metrics filter on aws/lambda/ of the
        bucket) and the function's own dead letters (its EMF metric) each alarm at once."""
        doc = minimal(main={"processors": [], "route": ["out"], "on_failure": "vault"})
        doc["sinks"]["vault"] = {"type": "s3", "bucket": "shop-vault"}
        doc["sinks"]["archive"] = {"type": "s3", "bucket": "shop-archive"}
        doc["functions"]["other"] = {"processors": [], "route": ["archive"]}
        template = build(plan_of(doc))
        buckets = of_type(template, "S3::Bucket")
        assert buckets["ShopVaultBucket"]["MetricsConfigurations"] == [
            {"Id": "lambda-on-failure", "Prefix": "aws/lambda/"}
        ]
        assert "MetricsConfigurations" not in buckets["ShopArchiveBucket"]
        alarms = of_type(template, "CloudWatch::Alarm")
        objects = alarms["ShopVaultOnFailureObjectsAlarm"]
        assert (objects["Namespace"], objects["MetricName"], objects["Statistic"]) == (
            "AWS/S3", "PutRequests", "Sum",
        )  # fmt: skip
        assert objects["Dimensions"] == [
            {"Name": "BucketName", "Value": "shop-vault"},
            {"Name": "FilterId", "Value": "lambda-on-failure"},
        ]
        letters = alarms["MainDeadLettersAlarm"]
        assert (letters["Namespace"], letters["MetricName"]) == ("shardline", "RecordsDeadLettered")
        assert letters["Dimensions"] == [
            {"Name": "Pipeline", "Value": "shop"},
            {"Name": "Function", "Value": "main"},
        ]
        for alarm in (objects, letters):
            assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")
            assert (alarm["Period"], alarm["EvaluationPeriods"]) == (60, 1)
        assert "OtherDeadLettersAlarm" not in alarms  # its dead letters go to a queue
        doc["metrics"] = False  # no EMF metric to alarm on: the bucket's alarm remains
        alarms = of_type(build(plan_of(doc)), "CloudWatch::Alarm")
        assert "MainDeadLettersAlarm" not in alarms
        assert "ShopVaultOnFailureObjectsAlarm" in alarms

    def test_outputs_name_the_stream_functions_mappings_queues_buckets_and_tables(self):
        template = build(load_plan_from_file(EXAMPLE))
        assert sorted(template["Outputs"]) == [
            "ArchiveAllFunctionArn", "ArchiveAllFunctionName", "ArchiveAllLeaseTableName",
            "ArchiveAllMappingId", "ClickstreamArchiveBucketName", "ClickstreamDlqQueueUrl",
            "ClickstreamOrdersTableName", "ClickstreamPurchasesPerMinuteTableName",
            "EnrichAndRouteFunctionArn", "EnrichAndRouteFunctionName",
            "EnrichAndRouteLeaseTableName", "EnrichAndRouteMappingId",
            "PurchasesPerMinuteFunctionArn", "PurchasesPerMinuteFunctionName",
            "PurchasesPerMinuteLeaseTableName", "PurchasesPerMinuteMappingId",
            "PurchasesPerMinuteWindowTableName", "StreamArn", "StreamName",
        ]  # fmt: skip
        assert template["Outputs"]["ClickstreamDlqQueueUrl"]["Value"] == {
            "Ref": "ClickstreamDlqQueue"
        }


NUMBERS = {
    "RetentionPeriodHours", "ShardCount", "MemorySize", "Timeout", "RetentionInDays",
    "BatchSize", "MaximumBatchingWindowInSeconds", "ParallelizationFactor",
    "MaximumRetryAttempts", "MaximumRecordAgeInSeconds", "StartingPositionTimestamp",
    "MessageRetentionPeriod", "DaysAfterInitiation", "Period", "EvaluationPeriods", "Threshold",
}  # fmt: skip
FLAGS = {
    "BisectBatchOnFunctionError", "PointInTimeRecoveryEnabled", "SSEEnabled",
    "SqsManagedSseEnabled", "FifoQueue", "BlockPublicAcls", "BlockPublicPolicy",
    "IgnorePublicAcls", "RestrictPublicBuckets",
}  # fmt: skip


def _walk(value: Any) -> Any:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key, item
            yield from _walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item)


class TestDeterminism:
    def test_the_same_plan_gives_the_same_bytes(self):
        first = template_json(build(load_plan_from_file(EXAMPLE)))
        assert first == template_json(build(load_plan_from_file(EXAMPLE)))
        assert first.endswith("}\n")
        assert json.loads(first) == build(load_plan_from_file(EXAMPLE))

    @given(deployable_plans())
    @settings(max_examples=25)
    def test_templates_are_deterministic_and_numbers_and_flags_are_native(self, plan):
        template = build(plan)
        assert template_json(template) == template_json(build(copy.deepcopy(plan)))
        text = template_json(template)
        assert list(json.loads(text)) == sorted(json.loads(text))
        # the resources, not their logical ids (a queue named "-.fifo" is "FifoQueue")
        for key, value in _walk(list(template["Resources"].values())):
            if key in NUMBERS:
                assert isinstance(value, (int, float)), key
                assert not isinstance(value, bool), key
            if key in FLAGS:
                assert isinstance(value, bool), key

    @given(deployable_plans())
    @settings(max_examples=25)
    def test_logical_ids_are_unique_alphanumeric_and_short_enough(self, plan):
        ids = list(logical_ids(plan).values())
        assert len(ids) == len(set(ids))
        assert all(re.fullmatch(r"[A-Za-z0-9]{1,255}", i) for i in ids)
        template = build(plan)
        assert set(template["Resources"]) <= set(ids)
        assert all(re.fullmatch(r"[A-Za-z0-9]{1,255}", o) for o in template["Outputs"])

    def test_names_that_camelcase_alike_get_distinct_ids(self):
        doc = minimal()
        doc["sinks"] |= {
            "a": {"type": "dynamodb", "table": "t-one", "key": "id"},
            "b": {"type": "dynamodb", "table": "t_one", "key": "id"},
        }
        tables = of_type(build(plan_of(doc)), "DynamoDB::Table")
        assert {p["TableName"] for p in tables.values()} == {"t-one", "t_one", "shop-main-leases"}
        assert "TOneTable" not in tables


class TestDeployProblems:
    def test_the_examples_have_none(self):
        assert deploy_problems(load_plan_from_file(EXAMPLE)) == []
        assert deploy_problems(plan_of(CLICKSTREAM)) == []

    def test_a_function_name_over_64_characters_is_reported_with_the_fix(self):
        """(validate refuses such a file at its line; a plan made another way is caught here)"""
        doc = minimal(main={"processors": [], "route": ["out"], "on_failure": "dlq"})
        doc["sinks"]["dlq"] = {"type": "sqs", "queue": "q"}
        plan = plan_of(doc)
        plan["functions"] = {"f" * 60: plan["functions"]["main"]}
        assert len(function_name(plan, "f" * 60)) == 65
        (problem,) = deploy_problems(plan)
        assert problem.startswith(f"functions.{'f' * 60}: the Lambda function name")
        assert "65 characters long, AWS allows 64" in problem

    def test_a_dead_letter_queue_name_over_80_characters_is_reported_only_when_needed(self):
        doc = minimal()  # (validate refuses the long name; a plan made another way is caught)
        doc["functions"] = {"m": {"processors": [], "route": ["out"]}}
        queue = "name: the dead-letter queue"
        plan = plan_of(doc)
        plan["name"] = "p" * 77  # the function names are too long as well, and reported
        problems = deploy_problems(plan)
        assert [p for p in problems if p.startswith(queue)] == [
            f"{queue} '{'p' * 77}-dlq' (for functions without on_failure) is 81 characters "
            "long, SQS allows 80: shorten the pipeline name or give every function an "
            "on_failure sink"
        ]
        doc["sinks"]["dlq"] = {"type": "sqs", "queue": "q"}
        doc["functions"]["m"]["on_failure"] = "dlq"
        plan = plan_of(doc)
        plan["name"] = "p" * 77
        problems = deploy_problems(plan)
        assert problems  # the function names
        assert not [p for p in problems if p.startswith(queue)]

    def test_one_table_with_two_key_schemas_is_reported(self):
        """(validate refuses such a file at its line, tests/deploy/broken; a plan made
        another way is caught here)"""
        doc = minimal()
        doc["sinks"] |= {
            "a": {"type": "dynamodb", "table": "shared", "key": "id"},
            "b": {"type": "dynamodb", "table": "other", "key": "id", "mode": "append"},
        }
        plan = plan_of(doc)
        plan["sinks"]["b"]["table"] = "shared"
        (problem,) = deploy_problems(plan)
        assert problem.startswith("sinks.b: table 'shared'")
        assert "sinks.a needs it keyed by 'id' alone" in problem

    def test_a_lookup_on_a_sink_table_with_another_key_is_reported(self):
        lookup = {"enrich": {"lookup": {"table": "people", "key": "user_id", "into": "u"}}}
        doc = minimal(main={"processors": [lookup], "route": ["out"]})
        doc["sinks"]["users"] = {"type": "dynamodb", "table": "users", "key": "id"}
        plan = plan_of(doc)
        plan["functions"]["main"]["processors"][0]["enrich"]["lookup"]["table"] = "users"
        (problem,) = deploy_problems(plan)
        assert problem.startswith("functions.main.processors[0].enrich.lookup: table 'users'")

    def test_a_sink_table_named_like_a_lease_table_is_reported(self):
        doc = minimal()
        doc["sinks"]["t"] = {"type": "dynamodb", "table": "shop-other-leases", "key": "id"}
        plan = plan_of(doc)
        plan["sinks"]["t"]["table"] = "shop-main-leases"
        (problem,) = deploy_problems(plan)
        assert problem.startswith("functions.main: its lease table 'shop-main-leases'")

    def test_a_fifo_on_failure_queue_is_reported(self):
        doc = minimal(main={"processors": [], "route": ["out"], "on_failure": "dlq"})
        doc["sinks"]["dlq"] = {"type": "sqs", "queue": "dead"}
        plan = plan_of(doc)
        plan["sinks"]["dlq"]["queue"] = "dead.fifo"
        (problem,) = deploy_problems(plan)
        assert problem.startswith("functions.main.on_failure: queue 'dead.fifo' is a FIFO queue")

    def test_what_validate_refuses_of_it_is_what_it_reports(self):
        """The file's own checks and deploy's are one rule (deploy.pipeline.deployable):
        a file validate accepts has no such problem left for deploy."""
        doc = minimal(main={"processors": [], "route": ["out"], "on_failure": "dlq"})
        doc["sinks"]["dlq"] = {"type": "sqs", "queue": "dead.fifo"}
        with pytest.raises(ConfigError, match=r"on_failure: queue 'dead\.fifo' is a FIFO queue"):
            plan_of(doc)

    def test_a_stack_over_500_resources_is_reported(self):
        doc = minimal(**{f"f{i}": {"processors": [], "route": ["out"]} for i in range(72)})
        problems = deploy_problems(plan_of(doc))
        assert any("CloudFormation allows 500" in p for p in problems)


class TestCli:
    @pytest.fixture
    def runner(self) -> CliRunner:
        return CliRunner(env=ENV)

    def test_it_prints_the_template_json_and_nothing_else(self, runner: CliRunner):
        result = runner.invoke(main, ["template", str(EXAMPLE)])
        assert result.exit_code == 0, result.output
        assert result.stderr == ""
        expected = build_template(
            load_plan_from_file(EXAMPLE, env=ENV),
            code_bucket="shardline-artifacts",
            code_key="clickstream/lambda.zip",
        )
        assert result.stdout == template_json(expected)

    def test_code_location_and_architecture_are_options(self, runner: CliRunner):
        args = ["template", str(EXAMPLE), "--code-bucket", "b", "--code-key", "k.zip"]
        result = runner.invoke(main, [*args, "--architecture", "x86_64"])
        assert result.exit_code == 0, result.output
        function = json.loads(result.stdout)["Resources"]["ArchiveAllFunction"]["Properties"]
        assert function["Code"] == {"S3Bucket": "b", "S3Key": "k.zip"}
        assert function["Architectures"] == ["x86_64"]

    def test_an_invalid_file_exits_2_with_its_problems(self, runner: CliRunner, tmp_path: Path):
        broken = tmp_path / "broken.yaml"
        broken.write_text("name: shop\n", encoding="utf-8")
        result = runner.invoke(main, ["template", str(broken)])
        assert result.exit_code == 2
        assert result.stdout == ""
        assert "stream: required field is missing" in result.stderr

    def test_deploy_problems_go_to_stderr_with_exit_status_1(self, runner, tmp_path: Path):
        doc = minimal(**{f"f{i}": {"processors": [], "route": ["out"]} for i in range(72)})
        path = tmp_path / "big.yaml"
        path.write_text(json.dumps(doc), encoding="utf-8")
        result = runner.invoke(main, ["template", str(path)])
        assert result.exit_code == 1
        assert json.loads(result.stdout)["Resources"]
        assert f"{path}: functions: the stack would hold" in result.stderr

    def test_one_table_with_two_key_schemas_is_a_validate_error(self, runner, tmp_path: Path):
        """validate and template refuse it alike, at the second sink's line, exit 2."""
        doc = minimal()
        doc["sinks"] |= {
            "a": {"type": "dynamodb", "table": "shared", "key": "id"},
            "b": {"type": "dynamodb", "table": "shared", "key": "id", "mode": "append"},
        }
        path = tmp_path / "shared.yaml"
        path.write_text(json.dumps(doc), encoding="utf-8")
        for command in ("validate", "template"):
            result = runner.invoke(main, [command, str(path)])
            assert result.exit_code == 2
            assert f"{path}:1: sinks.b: table 'shared'" in result.stderr

    def test_a_function_name_too_long_with_its_prefix_is_a_validate_error(
        self, runner, tmp_path: Path
    ):
        """validate, compile and template refuse it alike, at the function's line."""
        doc = minimal(**{"f" * 60: {"processors": [], "route": ["out"]}})
        path = tmp_path / "long.yaml"
        path.write_text(json.dumps(doc), encoding="utf-8")
        for command in ("validate", "template"):
            result = runner.invoke(main, [command, str(path)])
            assert result.exit_code == 2
            assert result.stdout == ""
            assert result.stderr.startswith(
                f"{path}:1: functions.{'f' * 60}: the Lambda function name 'shop-{'f' * 60}' "
                "(pipeline name, '-', function name) is 65 characters long, AWS allows 64: "
                "shorten the pipeline's name or this one (to at most 59 characters)"
            ), result.stderr
