"""``shardline deploy/diff/destroy`` against a real moto server (CloudFormation, Lambda, ...).

The module starts a moto server of its own, but moto's state is per process, shared with
the other in-process servers: other modules' resources may be listed, so assertions name
the example's resources (``clickstream-*``, which no other module uses). The tests run in
file order and build on each other, as an operator would: deploy, redeploy, preview a
change, apply it, destroy.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from deploy.aws.package import PackageResult, build_package
from deploy.aws.stack import StackError, deploy, deployed_template, destroy, stack_status
from deploy.local.run import LocalRun, deployed_settings, on_failure_destination
from deploy.names import function_name
from deploy.pipeline.config import load_plan_from_file

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

EXAMPLE = Path(__file__).parents[2] / "examples" / "clickstream" / "pipeline.yaml"
ENV = {"OPENSEARCH_URL": "http://127.0.0.1:9200"}

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cloud() -> Iterator[Callable[[str], Any]]:
    """A client factory on a moto server of this module's own."""
    import boto3  # noqa: PLC0415
    from moto.server import ThreadedMotoServer  # noqa: PLC0415

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    clients: dict[str, Any] = {}

    def client(service: str) -> Any:
        if service not in clients:
            clients[service] = session.client(service, endpoint_url=f"http://{host}:{port}")
        return clients[service]

    yield client
    server.stop()


@pytest.fixture(scope="module")
def cache_dir(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pip cache of tests/deploy/test_package.py, so the dependencies download once."""
    cache = getattr(pytestconfig, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("shardline-package"))
    return tmp_path_factory.mktemp("package-cache")


class Builder:
    """Builds the package of a plan, as ``shardline deploy`` does (arm64, python3.12)."""

    def __init__(self, out: Path, cache_dir: Path) -> None:
        self.out = out
        self.cache_dir = cache_dir
        self.built: list[PackageResult] = []

    def __call__(self, plan: dict[str, Any]) -> Callable[[], PackageResult]:
        def build() -> PackageResult:
            result = build_package(plan, self.out / str(len(self.built)), cache_dir=self.cache_dir)
            self.built.append(result)
            return result

        return build


@pytest.fixture(scope="module")
def builder(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Builder:
    return Builder(tmp_path_factory.mktemp("packages"), cache_dir)


def example_plan(tmp_path: Path, batch_size: int | None = None, name: str | None = None) -> Any:
    text = EXAMPLE.read_text()
    if batch_size is not None:
        text = text.replace("size: 500", f"size: {batch_size}")
    if name is not None:
        text = text.replace("name: clickstream\n", f"name: {name}\n", 1)
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    return load_plan_from_file(path, env=ENV)


def mappings(cloud: Callable[[str], Any], plan: dict[str, Any], function: str) -> list[Any]:
    name = function_name(plan, function)
    found: list[Any] = cloud("lambda").list_event_source_mappings(FunctionName=name)[
        "EventSourceMappings"
    ]
    return found


def arn_name(arn: str) -> str:
    return arn.rsplit(":", 1)[-1].rsplit("/", 1)[-1]


def test_a_deploy_creates_the_example(cloud: Any, builder: Builder, tmp_path: Path) -> None:
    plan = example_plan(tmp_path)
    lines: list[str] = []
    result = deploy(plan, cloud, package=builder(plan), log=lines.append)

    assert result.status == "created"
    assert stack_status(cloud("cloudformation"), "clickstream") == "CREATE_COMPLETE"
    assert {c.action for c in result.changes} == {"Add"}
    assert any(
        line.endswith("CREATE_COMPLETE      AWS::CloudFormation::Stack       clickstream")
        for line in lines
    ), lines
    assert result.code_key == f"clickstream/{builder.built[-1].sha256}.zip"
    # moto 5.2.5 resolves no Outputs on a stack made by a change set (AWS does); whatever
    # DescribeStacks says is what the result carries
    described = cloud("cloudformation").describe_stacks(StackName="clickstream")["Stacks"][0]
    assert result.outputs == {
        o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])
    }

    stream_arn = cloud("kinesis").describe_stream_summary(StreamName="clickstream-events")[
        "StreamDescriptionSummary"
    ]["StreamARN"]
    queue_url = cloud("sqs").get_queue_url(QueueName="clickstream-dlq")["QueueUrl"]
    queue_arn = cloud("sqs").get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])[
        "Attributes"
    ]
    assert queue_arn["MessageRetentionPeriod"] == "1209600"
    deployed = cloud("cloudformation").get_template(StackName="clickstream")["TemplateBody"]
    functions = [r for r in deployed["Resources"].values() if r["Type"] == "AWS::Lambda::Function"]
    # moto 5.2.5's CloudFormation drops Architectures (its functions report x86_64)
    assert [f["Properties"]["Architectures"] for f in functions] == [["arm64"]] * 3
    for function, spec in plan["functions"].items():
        config = cloud("lambda").get_function(FunctionName=function_name(plan, function))
        conf = config["Configuration"]
        assert conf["Runtime"] == "python3.12"
        assert conf["Handler"] == "stream.lambda_handler.handler"
        assert conf["MemorySize"] == spec["memory_mb"]
        assert conf["Timeout"] == spec["timeout_s"]
        assert conf["Environment"]["Variables"]["SHARDLINE_FUNCTION"] == function
        assert conf["CodeSha256"] == builder.built[-1].code_sha256

        (mapping,) = mappings(cloud, plan, function)
        batch = spec["batch"]
        assert mapping["EventSourceArn"] == stream_arn
        assert mapping["BatchSize"] == batch["size"]
        assert mapping["MaximumBatchingWindowInSeconds"] == batch["window_s"]
        assert mapping["StartingPosition"] == batch["starting_position"].upper()
        assert mapping["ParallelizationFactor"] == batch["parallelization"]
        assert mapping["BisectBatchOnFunctionError"] is batch["bisect_on_error"]
        assert mapping["MaximumRetryAttempts"] == batch["max_retries"]
        assert mapping["MaximumRecordAgeInSeconds"] == batch["max_record_age_s"]
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        destination = mapping["DestinationConfig"]["OnFailure"]["Destination"]
        assert arn_name(destination) == "clickstream-dlq"
        assert queue_arn["QueueArn"] == destination
        patterns = [f["Pattern"] for f in mapping.get("FilterCriteria", {}).get("Filters", [])]
        # the stream may carry KPL aggregates: no pushdown (see deploy.pipeline.pushdown)
        assert patterns == []

    table = cloud("dynamodb").describe_table(TableName="clickstream-orders")["Table"]
    assert table["KeySchema"] == [{"AttributeName": "order_id", "KeyType": "HASH"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    encryption = cloud("s3").get_bucket_encryption(Bucket="clickstream-archive")
    rules = encryption["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    kinds = {
        r["ResourceType"]
        for r in cloud("cloudformation").list_stack_resources(StackName="clickstream")[
            "StackResourceSummaries"
        ]
    }
    assert {
        "AWS::Kinesis::Stream", "AWS::Lambda::Function", "AWS::Lambda::EventSourceMapping",
        "AWS::IAM::Role", "AWS::DynamoDB::Table", "AWS::S3::Bucket", "AWS::SQS::Queue",
    } <= kinds  # fmt: skip


def test_b_redeploying_the_same_file_changes_nothing(
    cloud: Any, builder: Builder, tmp_path: Path
) -> None:
    plan = example_plan(tmp_path)
    before = mappings(cloud, plan, "enrich-and-route")
    uploads = len(cloud("s3").list_objects_v2(Bucket=_artifacts(cloud))["Contents"])

    result = deploy(plan, cloud, package=builder(plan))

    assert result.status == "unchanged"
    assert result.changes == ()
    assert builder.built[-1].sha256 == builder.built[-2].sha256  # the same bytes
    assert mappings(cloud, plan, "enrich-and-route") == before
    assert len(cloud("s3").list_objects_v2(Bucket=_artifacts(cloud))["Contents"]) == uploads
    assert stack_status(cloud("cloudformation"), "clickstream") == "CREATE_COMPLETE"
    assert pending_change_sets(cloud) == []


def test_c_diff_shows_a_batch_size_change_without_applying_it(
    cloud: Any, builder: Builder, tmp_path: Path
) -> None:
    plan = example_plan(tmp_path, batch_size=200)

    result = deploy(plan, cloud, package=builder(plan), execute=False)

    assert result.status == "previewed"
    changed = {(c.action, c.resource_type) for c in result.changes}
    assert ("Modify", "AWS::Lambda::EventSourceMapping") in changed
    assert ("Modify", "AWS::Lambda::Function") in changed  # the plan is in the package
    (mapping,) = mappings(cloud, plan, "enrich-and-route")
    assert mapping["BatchSize"] == 500
    assert pending_change_sets(cloud) == []


def test_d_changing_the_batch_size_updates_the_mapping(
    cloud: Any, builder: Builder, tmp_path: Path
) -> None:
    plan = example_plan(tmp_path, batch_size=200)
    (before,) = mappings(cloud, plan, "enrich-and-route")

    # a template over the inline limit goes through the artifacts bucket (TemplateURL)
    result = deploy(plan, cloud, package=builder(plan), max_template_body=1000)

    assert result.status == "updated"
    keys = [o["Key"] for o in cloud("s3").list_objects_v2(Bucket=_artifacts(cloud))["Contents"]]
    assert any(re.fullmatch(r"clickstream/template-[0-9a-f]{64}\.json", k) for k in keys), keys
    (after,) = mappings(cloud, plan, "enrich-and-route")
    assert after["UUID"] == before["UUID"]  # updated in place, not replaced
    assert after["BatchSize"] == 200
    conf = cloud("lambda").get_function_configuration(
        FunctionName=function_name(plan, "enrich-and-route")
    )
    assert conf["CodeSha256"] == builder.built[-1].code_sha256
    assert deploy(plan, cloud, package=builder(plan)).status == "unchanged"


def test_d2_a_local_run_takes_the_deployed_mapping_settings(cloud: Any, tmp_path: Path) -> None:
    """The file says 500; the stack was deployed with 200: a run follows the stack."""
    plan = example_plan(tmp_path)

    def build(settings: str) -> LocalRun:
        local = LocalRun(plan, client=cloud, in_process=True, settings=settings, state_dir=tmp_path)
        local.build()
        for run in local.runs:
            for close in run.closers:
                close()
        return local

    auto, from_file = build("auto"), build("plan")

    assert auto.sources == {
        "enrich-and-route": "deployed", "purchases-per-minute": "deployed",
        "archive-all": "deployed",
    }  # fmt: skip
    deployed = {run.name: run.mapping.settings for run in auto.runs}
    assert deployed["enrich-and-route"].size == 200
    assert deployed["enrich-and-route"].max_retries == 3
    assert deployed["enrich-and-route"].bisect_on_error is True
    assert deployed["enrich-and-route"].timeout_s == 60
    assert from_file.sources["enrich-and-route"] == "plan"
    assert from_file.runs[0].mapping.settings.size == 500
    # the deployed destination is the queue its ARN names
    settings_and_arn = deployed_settings(plan, "archive-all", cloud)
    assert settings_and_arn is not None
    send = on_failure_destination(plan, "archive-all", cloud, settings_and_arn[1])
    assert send is not None
    send({"requestContext": {"condition": "RetryAttemptsExhausted"}})
    sqs = cloud("sqs")
    url = sqs.get_queue_url(QueueName="clickstream-dlq")["QueueUrl"]
    (message,) = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"]
    assert "RetryAttemptsExhausted" in message["Body"]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    other = {**plan, "name": "not-deployed"}
    with pytest.raises(LookupError, match="deploy it first"):
        LocalRun(
            other, client=cloud, in_process=True, settings="deployed", state_dir=tmp_path
        ).build()


def test_d3_rewind_recreates_the_mapping_at_the_timestamp_and_a_deploy_keeps_it(
    cloud: Any, builder: Builder, tmp_path: Path
) -> None:
    """Two change sets: the mapping goes, then a new one (a new UUID) starts AT_TIMESTAMP;
    deploying the file again changes nothing (it does not start the function over)."""
    from deploy.ops.rewind import plan_mapping_rewind, rewind_mapping  # noqa: PLC0415

    plan = example_plan(tmp_path, batch_size=200)
    (before,) = mappings(cloud, plan, "enrich-and-route")
    to = 1_767_225_600.0
    rewind = plan_mapping_rewind(plan, "enrich-and-route", to, cloud)
    assert rewind.mapping_id == "EnrichAndRouteMapping"
    assert set(rewind.shards) == {"shardId-000000000000"}

    rewind_mapping(rewind, cloud)

    (after,) = mappings(cloud, plan, "enrich-and-route")
    assert after["UUID"] != before["UUID"]  # recreated, not updated in place
    assert after["StartingPosition"] == "AT_TIMESTAMP"
    # moto's mapping does not report StartingPositionTimestamp: the stack's template says it
    deployed = deployed_template(cloud("cloudformation"), "clickstream")["Resources"]
    assert "EnrichAndRouteMapping" not in deployed
    assert deployed["EnrichAndRouteMappingAt1767225600"]["Properties"][
        "StartingPositionTimestamp"
    ] == to
    assert after["BatchSize"] == 200
    (other,) = mappings(cloud, plan, "archive-all")
    assert other["StartingPosition"] != "AT_TIMESTAMP"  # only the function asked for
    assert deploy(plan, cloud, package=builder(plan)).status == "unchanged"


def test_e_a_file_that_cannot_deploy_fails_before_anything_is_created(
    cloud: Any, builder: Builder, tmp_path: Path
) -> None:
    plan = example_plan(tmp_path)  # validate refuses the long name at its line; a plan
    plan["name"] = "x" * 60  # made another way is refused by deploy itself
    buckets = cloud("s3").list_buckets()["Buckets"]

    with pytest.raises(StackError, match=r"is \d+ characters long, AWS allows 64"):
        deploy(plan, cloud, package=builder(plan))

    assert stack_status(cloud("cloudformation"), "x" * 60) is None
    assert cloud("s3").list_buckets()["Buckets"] == buckets


def test_f_a_table_of_another_stack_with_other_keys_is_refused(
    cloud: Any, builder: Builder, tmp_path: Path
) -> None:
    """A second pipeline naming the first one's table, keyed differently, fails up front."""
    text = EXAMPLE.read_text().replace("name: clickstream\n", "name: other\n", 1)
    text = text.replace("name: clickstream-events", "name: other-events")
    text = text.replace("key: order_id", "key: user_id")
    for store in ("archive", "dlq"):
        text = text.replace(f"clickstream-{store}", f"other-{store}")
    path = tmp_path / "other.yaml"
    path.write_text(text)
    plan = load_plan_from_file(path, env=ENV)
    built = len(builder.built)

    with pytest.raises(StackError) as failure:
        deploy(plan, cloud, package=builder(plan))

    message = str(failure.value)
    assert (
        "table clickstream-orders (pipeline clickstream's), keyed by order_id where this "
        "file needs user_id" in message
    )
    assert stack_status(cloud("cloudformation"), "other") is None
    assert len(builder.built) == built  # refused before packaging


def all_tables(cloud: Any) -> list[str]:
    """Every table name: ListTables pages by 100, and the session's server holds more."""
    pages = cloud("dynamodb").get_paginator("list_tables").paginate()
    return [name for page in pages for name in page["TableNames"]]


def test_g_destroy_keeps_stores_with_data_unless_asked(
    cloud: Any, builder: Builder, tmp_path: Path
) -> None:
    plan = example_plan(tmp_path, batch_size=200)
    cloud("dynamodb").put_item(TableName="clickstream-orders", Item={"order_id": {"S": "o-1"}})

    result = destroy(plan, cloud)

    assert result.deleted
    assert stack_status(cloud("cloudformation"), "clickstream") is None
    functions = [f["FunctionName"] for f in cloud("lambda").list_functions()["Functions"]]
    assert [f for f in functions if f.startswith("clickstream-")] == []
    mappings = cloud("lambda").list_event_source_mappings()["EventSourceMappings"]
    assert [m for m in mappings if ":function:clickstream-" in m["FunctionArn"]] == []
    assert result.kept == ("table clickstream-orders",)
    assert set(result.removed) == {
        "bucket clickstream-archive", "queue clickstream-dlq",
        "table clickstream-purchases-per-minute",  # empty: nothing to keep
    }  # fmt: skip
    streams = cloud("kinesis").get_paginator("list_streams").paginate()
    assert "clickstream-events" not in [n for page in streams for n in page["StreamNames"]]
    tables = [t for t in all_tables(cloud) if "clickstream" in t]
    assert tables == ["clickstream-orders"]  # the lease tables went with the stack

    kept = "table clickstream-orders (kept by an earlier `shardline destroy`"
    with pytest.raises(StackError, match=re.escape(kept)):
        deploy(plan, cloud, package=builder(plan))
    # another pipeline's --delete-data leaves it alone: it is not theirs
    other = {**plan, "name": "someone-else"}
    assert destroy(other, cloud, delete_data=True).removed == ()

    again = destroy(plan, cloud, delete_data=True)
    assert not again.deleted
    assert again.removed == ("table clickstream-orders",)
    assert "clickstream-orders" not in all_tables(cloud)


def pending_change_sets(cloud: Callable[[str], Any]) -> list[Any]:
    """Change sets left for review (an executed one may stay listed, as EXECUTE_COMPLETE)."""
    summaries = cloud("cloudformation").list_change_sets(StackName="clickstream")["Summaries"]
    return [s for s in summaries if s["ExecutionStatus"] != "EXECUTE_COMPLETE"]


def _artifacts(cloud: Callable[[str], Any]) -> str:
    (name,) = [
        b["Name"]
        for b in cloud("s3").list_buckets()["Buckets"]
        if b["Name"].startswith("shardline-artifacts-")
    ]
    return name
