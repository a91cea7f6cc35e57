"""The CloudFormation template of a compiled plan (``shardline template``, ``shardline deploy``).

What the stack holds, and why each safety setting is there:

* the stream, named as written: on-demand or provisioned, its retention, and KMS encryption
  with ``alias/aws/kinesis`` when ``encryption: kms``;
* per function: the Lambda (``stream.lambda_handler.handler``, code from S3, the plan at
  :data:`PLAN_PATH` inside the package), its log group with a retention, its role, its event
  source mapping and two alarms (iterator age, errors); with a ``state: dynamodb`` window
  step whose ``flush_s`` is not 0, its scheduled flush: an EventBridge rule
  (``rate(N minutes)``) that invokes it with a constant flush event, without EventBridge's
  delivery retries, the permission for EventBridge to, and its asynchronous invocations
  without Lambda's retries and dropped after 60 s (the next flush is the retry); with
  ``batch.consumer: efo`` also its enhanced fan-out consumer
  (``AWS::Kinesis::StreamConsumer``, named like the function), which its mapping reads
  instead of the stream;
* the stores its sinks write to, named as written: a DynamoDB table per table (on-demand,
  point-in-time recovery, SSE), a bucket per bucket (encryption, public access blocked, a
  TLS-only policy, a rule that aborts incomplete multipart uploads; nothing is ever expired),
  a queue per queue (SSE, 14 days' retention), plus the lease table of each function, so that
  ``shardline run`` works against AWS too (Lambda's own mapping keeps its checkpoints itself),
  and the window state table of each function with a ``state: dynamodb`` window step
  (``PIPELINE-FUNCTION-windows``, TTL on ``expires``: :mod:`processors.window_items`);
* the dead-letter queue ``<name>-dlq`` when some function names no ``on_failure``: a mapping
  without an on-failure destination loses what it gives up on;
* a depth alarm on every queue that receives dead letters, and for a bucket that does
  (``on_failure`` of type s3), what an operator needs to hear of both writers there: an
  alarm on the bucket's request metric ``PutRequests`` under ``aws/lambda/`` (a request
  metrics filter the bucket defines), which fires on any object Lambda writes when it gives
  up on a batch, and per function an alarm on its own ``RecordsDeadLettered`` metric (EMF,
  when ``metrics`` is on), which fires on any invocation that dead-letters a record. A
  bucket has no per-minute object count (S3's storage metrics are daily), so "something
  arrived" is what the two alarms say, as a queue's depth alarm does.

Least privilege: each function's role may read its stream (and decrypt through Kinesis) or,
with ``consumer: efo``, describe the stream and list its shards and ``SubscribeToShard`` and
``DescribeStreamConsumer`` on its own consumer only (no ``GetRecords``),
write its own log group, and call exactly the actions its sinks, lookups and on-failure
destination use, on exactly those resources: ``PutItem`` on a ``latest`` table,
``BatchWriteItem`` on an ``append`` table, ``BatchGetItem`` on a lookup table,
``GetItem``/``BatchGetItem``/``PutItem``/``UpdateItem``/``Query`` on its own window state
table, ``glue:GetSchemaVersion`` on the registry and schema of a ``schema: {registry: ...}``
step, ``PutObject``
under an archive's literal prefix, ``GetQueueUrl``/``SendMessage`` on a queue (and
``PutObject`` under ``dead-letters/`` of its overflow bucket), ``PutRecords``/``ListShards`` on
a target stream, ``ESHttpPost`` on an OpenSearch domain with SigV4 (``_bulk`` and ``_mget``
are both POSTs). Besides object-key prefixes and a domain's paths, one resource is a
pattern, because AWS leaves no narrower form: the stream key is ``key/*`` (the id behind
``alias/aws/kinesis`` is not known to the template; the grant holds only through Kinesis,
``kms:ViaService``). An OpenSearch endpoint that is not a domain endpoint
(``search-DOMAIN-ID.REGION.es.amazonaws.com``) gets no grant at all: the domain's access
policy must allow the role.

Not created: lookup tables, an ``overflow_bucket`` named only there, and the target streams of
``kinesis`` sinks, which belong to whoever owns them (a target stream is usually the next
pipeline's source); OpenSearch domains. Roles are not named: CloudFormation names them
``<stack>-<logical id>-<suffix>`` (IAM names are global, so a fixed name would collide
when a pipeline is deployed in two regions); the stack needs ``CAPABILITY_IAM``.

Output is deterministic (:func:`template_json`): the same plan and arguments give the same
bytes, so an unchanged pipeline redeploys as "no changes". Values are native JSON numbers
and booleans, never strings. :func:`deploy_problems` finds what validates but cannot deploy.
"""

from __future__ import annotations

import json
import re
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from deploy.names import (
    MAX_FUNCTION_NAME,
    MAX_QUEUE_NAME,
    dead_letter_queue_name,
    flush_rate,
    flush_seconds,
    function_name,
    lease_table_name,
    stream_consumer_name,
    window_tables,
)
from deploy.pipeline.deployable import (
    filter_pattern,
    on_failure_target,
    plan_problems,
)
from deploy.pipeline.problems import format_path
from deploy.pipeline.pushdown import MAX_FILTERS
from deploy.pipeline.runtime_checks import plugin_iam_statements, processor_iam_statements
from sinks.registry import BUILTIN_SINKS
from sinks.s3 import DEAD_LETTERS
from sinks.templates import Template
from stream.flush import flush_event
from stream.metrics import NAMESPACE as METRICS_NAMESPACE
from stream.runtime import used_sinks

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from stream.plan import FunctionPlan, Plan, SinkSpec

__all__ = [
    "HANDLER",
    "PLAN_IN_PACKAGE",
    "PLAN_PATH",
    "REWOUND_FROM",
    "REWOUND_TO",
    "WINDOW_STATE_TAG",
    "WINDOW_STATE_VERSION",
    "build_template",
    "deploy_problems",
    "keep_rewinds",
    "key_prefix",
    "logical_ids",
    "opensearch_domain",
    "template_json",
    "uses_efo",
]

HANDLER = "stream.lambda_handler.handler"
#: Where the packaging step puts the compiled plan in the zip (beside ``lambda_handler``).
PLAN_IN_PACKAGE = "stream/pipeline.json"
#: The same file in the Lambda (a zip is unpacked in ``LAMBDA_TASK_ROOT``, ``/var/task``).
PLAN_PATH = f"/var/task/{PLAN_IN_PACKAGE}"

LOG_RETENTION_DAYS = 30
OWNER_TAG = "shardline:pipeline"
#: On a window state table: the state's format is one this version's code reads and writes
#: with lanes (``parallelization`` above 1, issue 16). ``shardline deploy`` refuses lanes on
#: a table that exists without it (:mod:`deploy.aws.stack`), so that lanes never meet an
#: invocation of a version older than the one-lane store's lanes check.
WINDOW_STATE_TAG = "shardline:window-state"
WINDOW_STATE_VERSION = "2"
QUEUE_RETENTION_S = 1_209_600  # 14 days, SQS's maximum
MULTIPART_ABORT_DAYS = 7
#: A scheduled flush that waited this long in Lambda's async queue is dropped (the least
#: AWS allows): the next one is on its way.
FLUSH_EVENT_AGE_S = 60
ITERATOR_AGE_MS = 60_000  # plus the batching window, which holds records on purpose
ITERATOR_AGE_MINUTES = 5  # consecutive minutes over the threshold before it alarms
OVERFLOW_PREFIX = "dead-letters/"  # sinks.sqs.SQSSink's default overflow_prefix
ON_FAILURE_PREFIX = "aws/lambda/"  # where Lambda writes failed-batch objects to S3
ON_FAILURE_METRICS_ID = "lambda-on-failure"  # the request metrics filter on that prefix
#: A mapping's ``Metadata`` key saying ``shardline rewind`` restarted it (an ISO time).
REWOUND_TO = "shardline:rewound_to"
#: ... and the logical id the file gives that mapping (the rewound one's id names the time).
REWOUND_FROM = "shardline:mapping"

# AWS limits that the pipeline file's own checks do not cover.
MAX_RESOURCES = 500
MAX_OUTPUTS = 200
_MAX_ID = 240  # logical ids are at most 255 characters; outputs add a suffix

_STREAM_READ = (
    "kinesis:DescribeStream",
    "kinesis:DescribeStreamSummary",
    "kinesis:GetRecords",
    "kinesis:GetShardIterator",
    "kinesis:ListShards",
)
#: What Lambda's enhanced fan-out mapping needs on the stream itself: it lists the shards and
#: reads them through the consumer (``SubscribeToShard``), never with GetRecords.
_STREAM_DESCRIBE = (
    "kinesis:DescribeStream",
    "kinesis:DescribeStreamSummary",
    "kinesis:ListShards",
)
#: ... and on the function's own consumer.
_CONSUMER_READ = ("kinesis:DescribeStreamConsumer", "kinesis:SubscribeToShard")
#: On the stores that hold results (sink tables, buckets, queues): deleting or replacing the
#: stack never deletes data; ``shardline destroy`` removes what is empty (deploy.aws.stack).
_RETAIN = {"DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"}
#: What a window step does on its table (``TransactWriteItems`` needs ``PutItem``).
_WINDOW_STATE_ACTIONS = [
    "dynamodb:BatchGetItem",
    "dynamodb:BatchWriteItem",  # closed windows' items, deleted (processors.window_starts)
    "dynamodb:DeleteItem",  # an outbox's parts once no shard item names them
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:Query",
    "dynamodb:UpdateItem",
]
_POSITIONS = {"trim_horizon": "TRIM_HORIZON", "latest": "LATEST", "at_timestamp": "AT_TIMESTAMP"}
_DOMAIN_HOST = re.compile(
    r"(?:search|vpc)-(?P<domain>[a-z][a-z0-9-]{2,27}?)(?:-[a-z0-9]{26})?"
    r"\.(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+)\.es\.amazonaws\.com(?:\.cn)?"
)


@dataclass
class _Stores:
    """What the stack creates besides the stream and functions, by name, in file order."""

    tables: dict[str, tuple[str, str]] = field(default_factory=dict)  # name: (hash, sort)
    buckets: list[str] = field(default_factory=list)
    queues: list[str] = field(default_factory=list)
    dead_letter_queues: list[str] = field(default_factory=list)
    dead_letter_buckets: list[str] = field(default_factory=list)
    lease_tables: dict[str, str] = field(default_factory=dict)  # function: table
    window_tables: dict[str, str] = field(default_factory=dict)  # function: table


def uses_efo(function: FunctionPlan) -> bool:
    """Whether the function reads through an enhanced fan-out consumer of its own.

    >>> uses_efo({"batch": {"consumer": "efo"}}), uses_efo({"batch": {}})
    (True, False)
    """
    return (function.get("batch") or {}).get("consumer") == "efo"


def _stores(plan: Plan) -> _Stores:
    out = _Stores()
    for spec in plan["sinks"].values():
        kind = spec.get("type")
        if kind == "dynamodb":
            sort = "_position" if spec.get("mode") == "append" else ""
            out.tables.setdefault(spec["table"], (spec["key"], sort))
        elif kind == "s3" and spec["bucket"] not in out.buckets:
            out.buckets.append(spec["bucket"])
        elif kind == "sqs" and spec["queue"] not in out.queues:
            out.queues.append(spec["queue"])
    for function in plan["functions"]:
        kind, name = on_failure_target(plan, function)
        if kind == "sqs":
            if name not in out.queues:
                out.queues.append(name)
            if name not in out.dead_letter_queues:
                out.dead_letter_queues.append(name)
        elif name not in out.dead_letter_buckets:
            out.dead_letter_buckets.append(name)
        out.lease_tables[function] = lease_table_name(plan, function)
    out.window_tables = window_tables(plan)
    return out


def _camel(name: str) -> str:
    parts = re.split(r"[^A-Za-z0-9]+", name)
    return "".join(part[:1].upper() + part[1:] for part in parts if part)


def logical_ids(plan: Plan) -> dict[tuple[str, str], str]:
    """The logical id of every resource, by ``(kind, name)``.

    Ids are the name in CamelCase followed by the kind (``ClickstreamOrdersTable``), so that
    they read well and stay put while the file changes. Names that CamelCase alike
    (``a-b``, ``a_b``) get a CRC-32 of kind and name appended, so ids never collide.
    Kinds: ``Function``, ``Role``, ``LogGroup``, ``Mapping``, ``IteratorAgeAlarm``,
    ``ErrorsAlarm``, ``LeaseTable``, ``WindowTable``, ``DeadLettersAlarm``, ``Consumer``,
    ``FlushRule``, ``FlushPermission``, ``FlushInvokeConfig`` (by function), ``Table``,
    ``Bucket``, ``BucketPolicy``, ``OnFailureObjectsAlarm``, ``Queue``,
    ``QueueDepthAlarm`` (by resource name); the stream is ``("Stream", "")``.
    """
    stores = _stores(plan)
    keys: list[tuple[str, str]] = [("Stream", "")]
    for function in plan["functions"]:
        for kind in (
            "Function",
            "Role",
            "LogGroup",
            "Mapping",
            "IteratorAgeAlarm",
            "ErrorsAlarm",
            "LeaseTable",
        ):
            keys.append((kind, function))
    keys += [("WindowTable", f) for f in stores.window_tables]
    keys += [("Table", t) for t in stores.tables]
    keys += [(k, b) for b in stores.buckets for k in ("Bucket", "BucketPolicy")]
    keys += [("Queue", q) for q in stores.queues]
    keys += [("QueueDepthAlarm", q) for q in stores.dead_letter_queues]
    keys += [("OnFailureObjectsAlarm", b) for b in stores.dead_letter_buckets]
    s3_failures = [f for f in plan["functions"] if on_failure_target(plan, f)[0] == "s3"]
    keys += [("DeadLettersAlarm", f) for f in s3_failures]
    keys += [("Consumer", f) for f in plan["functions"] if uses_efo(plan["functions"][f])]
    flushed = [f for f, spec in plan["functions"].items() if flush_seconds(spec)]
    keys += [(k, f) for f in flushed for k in ("FlushRule", "FlushPermission", "FlushInvokeConfig")]
    wanted: dict[tuple[str, str], str] = {}
    for kind, name in keys:
        stem = _camel(name)[: _MAX_ID - len(kind) - 8]
        wanted[(kind, name)] = stem + kind
    taken = Counter(wanted.values())
    out: dict[tuple[str, str], str] = {}
    for (kind, name), value in wanted.items():
        suffix = f"{zlib.crc32(f'{kind}:{name}'.encode()):08X}" if taken[value] > 1 else ""
        out[(kind, name)] = value + suffix
    return out


def _sub(text: str) -> dict[str, str]:
    return {"Fn::Sub": text}


def _arn(service: str, resource: str) -> dict[str, str]:
    return _sub(
        f"arn:${{AWS::Partition}}:{service}:${{AWS::Region}}:${{AWS::AccountId}}:{resource}"
    )


def _get(logical_id: str, attribute: str = "Arn") -> dict[str, list[str]]:
    return {"Fn::GetAtt": [logical_id, attribute]}


def _ref(logical_id: str) -> dict[str, str]:
    return {"Ref": logical_id}


def _literal(text: str) -> str:
    """Text inside ``Fn::Sub`` that must not be substituted."""
    return text.replace("${", "${!")


def key_prefix(template: str) -> str:
    """The literal start of every S3 key a prefix template renders to, for a grant.

    The S3 sink splits prefix, partition and file name on ``/`` and drops empty segments,
    so ``raw``, ``raw/`` and ``/raw//`` all write under ``raw/``. A ``{...}`` ends what is
    known: its last segment becomes a prefix of the key (``raw-{x}`` gives ``raw-``).

    >>> key_prefix("raw/"), key_prefix("/a//b"), key_prefix("raw/{x}/y"), key_prefix("r-{x}")
    ('raw/', 'a/b/', 'raw/', 'r-')
    """
    known, brace, _ = template.partition("{")
    segments = known.split("/")
    partial = segments.pop() if brace else ""
    return "".join(f"{s}/" for s in segments if s) + partial


class _Policy:
    """A role's policy statements, each with a Sid that says why, unique in the policy."""

    def __init__(self) -> None:
        self.statements: list[dict[str, Any]] = []

    def allow(
        self,
        sid: str,
        actions: Iterable[str],
        resources: list[Any],
        condition: dict[str, Any] | None = None,
    ) -> None:
        taken = {statement["Sid"] for statement in self.statements}
        unique, n = sid, 2
        while unique in taken:
            unique, n = f"{sid}{n}", n + 1
        statement: dict[str, Any] = {"Sid": unique, "Effect": "Allow"}
        statement |= {"Action": sorted(actions), "Resource": resources}
        if condition is not None:
            statement["Condition"] = condition
        self.statements.append(statement)


class _Builder:
    """Assembles one template; each method adds one group of resources."""

    def __init__(
        self, plan: Plan, code: dict[str, str], runtime: str, architecture: str
    ) -> None:
        self.plan = plan
        self.code = code
        self.runtime = runtime
        self.architecture = architecture
        self.stores = _stores(plan)
        self.ids = logical_ids(plan)
        self.resources: dict[str, Any] = {}
        self.outputs: dict[str, Any] = {}
        # on every store: who owns it, for `shardline destroy --delete-data` after the stack
        self.tags = [{"Key": OWNER_TAG, "Value": str(plan["name"])}]

    def id(self, kind: str, name: str = "") -> str:
        return self.ids[(kind, name)]

    def output(self, key: str, value: Any, description: str) -> None:
        self.outputs[key] = {"Description": description, "Value": value}

    # -- stores ------------------------------------------------------------------------

    def stream(self) -> None:
        spec = self.plan["stream"]
        props: dict[str, Any] = {
            "Name": spec["name"],
            "RetentionPeriodHours": spec["retention_hours"],
        }
        if spec["mode"] == "provisioned":
            props["StreamModeDetails"] = {"StreamMode": "PROVISIONED"}
            props["ShardCount"] = spec["shards"]
        else:
            props["StreamModeDetails"] = {"StreamMode": "ON_DEMAND"}
        if spec["encryption"] == "kms":
            props["StreamEncryption"] = {"EncryptionType": "KMS", "KeyId": "alias/aws/kinesis"}
        sid = self.id("Stream")
        self.resources[sid] = {"Type": "AWS::Kinesis::Stream", "Properties": props}
        self.output("StreamName", _ref(sid), "stream: name")
        self.output("StreamArn", _get(sid), "stream: ARN")

    def table(
        self,
        logical_id: str,
        name: str,
        key: str,
        sort: str,
        what: str,
        *,
        retain: bool,
        ttl: str | None = None,
        tags: list[dict[str, str]] | None = None,
    ) -> None:
        schema = [{"AttributeName": key, "KeyType": "HASH"}]
        attributes = [{"AttributeName": key, "AttributeType": "S"}]
        if sort:
            schema.append({"AttributeName": sort, "KeyType": "RANGE"})
            attributes.append({"AttributeName": sort, "AttributeType": "S"})
        self.resources[logical_id] = {
            "Type": "AWS::DynamoDB::Table",
            **(_RETAIN if retain else {}),
            "Properties": {
                "TableName": name,
                "BillingMode": "PAY_PER_REQUEST",
                "KeySchema": schema,
                "AttributeDefinitions": attributes,
                "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
                "SSESpecification": {"SSEEnabled": True},
                **(
                    {"TimeToLiveSpecification": {"AttributeName": ttl, "Enabled": True}}
                    if ttl
                    else {}
                ),
                "Tags": self.tags if tags is None else tags,
            },
        }
        self.output(f"{logical_id}Name", _ref(logical_id), f"{what}: name")

    def tables(self) -> None:
        for name, (key, sort) in self.stores.tables.items():
            self.table(self.id("Table", name), name, key, sort, f"table {name}", retain=True)
        for function, name in self.stores.lease_tables.items():
            what = f"lease table of {function}"
            self.table(self.id("LeaseTable", function), name, "leaseKey", "", what, retain=False)
        # the state's format, which lanes need before they may run on the table
        window_tags = [*self.tags, {"Key": WINDOW_STATE_TAG, "Value": WINDOW_STATE_VERSION}]
        for function, name in self.stores.window_tables.items():
            what = f"window state of {function}"
            self.table(
                self.id("WindowTable", function), name, "shard", "window", what,
                retain=False, ttl="expires", tags=window_tags,
            )  # fmt: skip

    def buckets(self) -> None:
        for name in self.stores.buckets:
            bid = self.id("Bucket", name)
            self.resources[bid] = {
                "Type": "AWS::S3::Bucket",
                **_RETAIN,
                "Properties": {
                    "BucketName": name,
                    "BucketEncryption": {
                        "ServerSideEncryptionConfiguration": [
                            {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                        ]
                    },
                    "PublicAccessBlockConfiguration": {
                        "BlockPublicAcls": True,
                        "BlockPublicPolicy": True,
                        "IgnorePublicAcls": True,
                        "RestrictPublicBuckets": True,
                    },
                    "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
                    "Tags": self.tags,
                    **self._request_metrics(name),
                    "LifecycleConfiguration": {
                        "Rules": [
                            {
                                "Id": "abort-incomplete-multipart-uploads",
                                "Status": "Enabled",
                                "AbortIncompleteMultipartUpload": {
                                    "DaysAfterInitiation": MULTIPART_ABORT_DAYS
                                },
                            }
                        ]
                    },
                },
            }
            self.resources[self.id("BucketPolicy", name)] = {
                "Type": "AWS::S3::BucketPolicy",
                "Properties": {
                    "Bucket": _ref(bid),
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Sid": "DenyInsecureTransport",
                                "Effect": "Deny",
                                "Principal": "*",
                                "Action": "s3:*",
                                "Resource": [_get(bid), _sub(f"${{{bid}.Arn}}/*")],
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        ],
                    },
                },
            }
            self.output(f"{bid}Name", _ref(bid), f"bucket {name}: name")

    def _request_metrics(self, bucket: str) -> dict[str, Any]:
        """A dead-letter bucket's request metrics filter on Lambda's on-failure objects, and
        the alarm on it (see the module docstring)."""
        if bucket not in self.stores.dead_letter_buckets:
            return {}
        self.resources[self.id("OnFailureObjectsAlarm", bucket)] = _alarm(
            f"{bucket}-on-failure-objects",
            f"Lambda gave up on a batch and wrote it to s3://{bucket}/{ON_FAILURE_PREFIX} "
            "(retries exhausted or records too old): the object holds the records; fix the "
            "cause and replay them",
            namespace="AWS/S3",
            metric="PutRequests",
            dimension=("BucketName", bucket),
            more=[("FilterId", ON_FAILURE_METRICS_ID)],
            statistic="Sum",
            threshold=0,
            periods=1,
        )
        return {
            "MetricsConfigurations": [{"Id": ON_FAILURE_METRICS_ID, "Prefix": ON_FAILURE_PREFIX}]
        }

    def queues(self) -> None:
        for name in self.stores.queues:
            qid = self.id("Queue", name)
            props: dict[str, Any] = {
                "QueueName": name,
                "SqsManagedSseEnabled": True,
                "MessageRetentionPeriod": QUEUE_RETENTION_S,
                "Tags": self.tags,
            }
            if name.endswith(".fifo"):
                props["FifoQueue"] = True
            self.resources[qid] = {"Type": "AWS::SQS::Queue", **_RETAIN, "Properties": props}
            self.output(f"{qid}Url", _ref(qid), f"queue {name}: URL")
        for name in self.stores.dead_letter_queues:
            self.resources[self.id("QueueDepthAlarm", name)] = _alarm(
                f"{name}-depth",
                f"dead letters waiting in {name}: read them, fix the cause, redrive",
                namespace="AWS/SQS",
                metric="ApproximateNumberOfMessagesVisible",
                dimension=("QueueName", _get(self.id("Queue", name), "QueueName")),
                statistic="Maximum",
                threshold=0,
                periods=1,
            )

    # -- functions ---------------------------------------------------------------------

    def function(self, function: str) -> None:
        spec = self.plan["functions"][function]
        name = function_name(self.plan, function)
        fid, rid, lid = (self.id(k, function) for k in ("Function", "Role", "LogGroup"))
        self.resources[lid] = {
            "Type": "AWS::Logs::LogGroup",
            "Properties": {
                "LogGroupName": f"/aws/lambda/{name}",
                "RetentionInDays": LOG_RETENTION_DAYS,
            },
        }
        self.resources[rid] = {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "Description": f"shardline {self.plan['name']}: function {function}",
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "lambda.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                },
                "Policies": [
                    {
                        "PolicyName": "shardline",
                        "PolicyDocument": {
                            "Version": "2012-10-17",
                            "Statement": self.statements(function),
                        },
                    }
                ],
            },
        }
        self.resources[fid] = {
            "Type": "AWS::Lambda::Function",
            "Properties": {
                "FunctionName": name,
                "Description": f"shardline {self.plan['name']}: {function}",
                "Runtime": self.runtime,
                "Architectures": [self.architecture],
                "Handler": HANDLER,
                "MemorySize": spec["memory_mb"],
                "Timeout": spec["timeout_s"],
                "Role": _get(rid),
                "Code": dict(self.code),
                "Environment": {
                    "Variables": {"SHARDLINE_FUNCTION": function, "SHARDLINE_PIPELINE": PLAN_PATH}
                },
                "LoggingConfig": {"LogGroup": _ref(lid), "LogFormat": "Text"},
            },
        }
        if uses_efo(spec):
            self.consumer(function)
        self.mapping(function, spec)
        window_ms = spec["batch"]["window_s"] * 1000
        self.resources[self.id("IteratorAgeAlarm", function)] = _alarm(
            f"{name}-iterator-age",
            f"{name} is falling behind its stream (oldest record over "
            f"{(ITERATOR_AGE_MS + window_ms) // 1000} s old for {ITERATOR_AGE_MINUTES} minutes)",
            namespace="AWS/Lambda",
            metric="IteratorAge",
            dimension=("FunctionName", _ref(fid)),
            statistic="Maximum",
            threshold=ITERATOR_AGE_MS + window_ms,
            periods=ITERATOR_AGE_MINUTES,
        )
        flush = flush_seconds(spec)
        self.resources[self.id("ErrorsAlarm", function)] = _alarm(
            f"{name}-errors",
            f"{name} failed whole invocations"
            + (" of a batch or of a scheduled window flush" if flush else "")
            + " (an exception, a timeout or out of memory)",
            namespace="AWS/Lambda",
            metric="Errors",
            dimension=("FunctionName", _ref(fid)),
            statistic="Sum",
            threshold=0,
            periods=1,
        )
        kind, bucket = on_failure_target(self.plan, function)
        if kind == "s3" and self.plan.get("metrics") is not False:
            self.resources[self.id("DeadLettersAlarm", function)] = _alarm(
                f"{name}-dead-letters",
                f"{name} dead-lettered records to s3://{bucket} (under its prefix's "
                "dead-letters/): read them, fix the cause, redrive",
                namespace=METRICS_NAMESPACE,  # the functions' EMF metrics
                metric="RecordsDeadLettered",
                dimension=("Pipeline", self.plan["name"]),
                more=[("Function", function)],
                statistic="Sum",
                threshold=0,
                periods=1,
            )
        if flush:
            self.flush(function, flush)
        self.output(f"{fid}Name", _ref(fid), f"function {function}: name")
        self.output(f"{fid}Arn", _get(fid), f"function {function}: ARN")
        mid = self.id("Mapping", function)
        self.output(f"{mid}Id", _ref(mid), f"function {function}: event source mapping UUID")

    def flush(self, function: str, seconds: int) -> None:
        """The function's scheduled window flush (``flush_s``): a rule invokes it every
        ``seconds`` with its flush event, so that quiet shards' windows close when no other
        shard has a batch. Lambda's async retries are off and a flush older than 60 s is
        dropped: the next flush is the retry, and a retry would only overlap it."""
        fid = self.id("Function", function)
        rule = self.id("FlushRule", function)
        event = json.dumps(flush_event(function), separators=(",", ":"))
        self.resources[rule] = {
            "Type": "AWS::Events::Rule",
            "Properties": {
                "Description": f"shardline {self.plan['name']}: flush {function}'s quiet windows",
                "ScheduleExpression": flush_rate(seconds),
                "State": "ENABLED",
                "Targets": [
                    {
                        "Id": "flush",
                        "Arn": _get(fid),
                        "Input": event,
                        # EventBridge's default: 24 h, 185 attempts; the next flush is the retry
                        "RetryPolicy": {
                            "MaximumRetryAttempts": 0,
                            "MaximumEventAgeInSeconds": FLUSH_EVENT_AGE_S,
                        },
                    }
                ],
            },
        }
        self.resources[self.id("FlushPermission", function)] = {
            "Type": "AWS::Lambda::Permission",
            "Properties": {
                "Action": "lambda:InvokeFunction",
                "FunctionName": _ref(fid),
                "Principal": "events.amazonaws.com",
                "SourceArn": _get(rule),
            },
        }
        self.resources[self.id("FlushInvokeConfig", function)] = {
            "Type": "AWS::Lambda::EventInvokeConfig",
            "Properties": {
                "FunctionName": _ref(fid),
                "Qualifier": "$LATEST",
                "MaximumRetryAttempts": 0,
                "MaximumEventAgeInSeconds": FLUSH_EVENT_AGE_S,
            },
        }

    def consumer(self, function: str) -> None:
        """The function's enhanced fan-out consumer: its own 2 MB/s per shard, pushed."""
        cid = self.id("Consumer", function)
        self.resources[cid] = {
            "Type": "AWS::Kinesis::StreamConsumer",
            "Properties": {
                "ConsumerName": stream_consumer_name(self.plan, function),
                "StreamARN": _get(self.id("Stream")),
            },
        }
        self.output(f"{cid}Arn", _get(cid, "ConsumerARN"), f"function {function}: EFO consumer")

    def _source(self, function: str) -> Any:
        """What the function's mapping reads: its consumer (EFO) or the stream (shared)."""
        if uses_efo(self.plan["functions"][function]):
            return _get(self.id("Consumer", function), "ConsumerARN")
        return _get(self.id("Stream"))

    def mapping(self, function: str, spec: FunctionPlan) -> None:
        batch = spec["batch"]
        kind, target = on_failure_target(self.plan, function)
        destination = self.id("Queue" if kind == "sqs" else "Bucket", target)
        props: dict[str, Any] = {
            "EventSourceArn": self._source(function),
            "FunctionName": _ref(self.id("Function", function)),
            "BatchSize": batch["size"],
            "MaximumBatchingWindowInSeconds": batch["window_s"],
            "StartingPosition": _POSITIONS[batch["starting_position"]],
            "ParallelizationFactor": batch["parallelization"],
            "BisectBatchOnFunctionError": batch["bisect_on_error"],
            "MaximumRetryAttempts": batch["max_retries"],
            "MaximumRecordAgeInSeconds": batch["max_record_age_s"],
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "DestinationConfig": {"OnFailure": {"Destination": _get(destination)}},
        }
        if batch["starting_position"] == "at_timestamp":
            props["StartingPositionTimestamp"] = batch["starting_timestamp"]
        patterns = spec.get("filter_criteria") or []
        if patterns:
            filters = [{"Pattern": filter_pattern(p)} for p in patterns]
            props["FilterCriteria"] = {"Filters": filters}
        self.resources[self.id("Mapping", function)] = {
            "Type": "AWS::Lambda::EventSourceMapping",
            "Properties": props,
        }

    # -- least privilege ---------------------------------------------------------------

    def statements(self, function: str) -> list[dict[str, Any]]:
        """The role's policy: every grant names its reason in its Sid."""
        spec = self.plan["functions"][function]
        policy = _Policy()
        if uses_efo(spec):
            policy.allow("DescribeStream", _STREAM_DESCRIBE, [_get(self.id("Stream"))])
            consumer = _get(self.id("Consumer", function), "ConsumerARN")
            policy.allow("ReadThroughOwnConsumer", _CONSUMER_READ, [consumer])
        else:
            policy.allow("ReadStream", _STREAM_READ, [_get(self.id("Stream"))])
        if self.plan["stream"]["encryption"] == "kms":
            via = {"kms:ViaService": _sub("kinesis.${AWS::Region}.amazonaws.com")}
            policy.allow(
                "DecryptStreamThroughKinesis",
                ["kms:Decrypt"],
                [_arn("kms", "key/*")],
                condition={"StringEquals": via},
            )
        policy.allow(
            "WriteOwnLogs",
            ["logs:CreateLogStream", "logs:PutLogEvents"],
            [_get(self.id("LogGroup", function))],
        )
        for sink in used_sinks(spec):
            dead_letters = sink == spec.get("on_failure")
            self._sink_grants(policy, sink, self.plan["sinks"][sink], dead_letters)
        for index, entry in enumerate(spec.get("processors", ())):
            # a plugin processor: what its class's iam_statements() asks for
            for n, statement in enumerate(processor_iam_statements(entry)):
                self._grant(policy, f"Processor{index}Plugin{n if n else ''}", statement)
        for table in _lookup_tables(spec):
            policy.allow(f"Lookup{_camel(table)}", ["dynamodb:BatchGetItem"], [self._table(table)])
        registered = _registry_schemas(spec)
        if registered:
            # GetSchemaVersion by id authorises on the version's registry and schema
            resources = [
                _arn("glue", arn)
                for registry, name in registered
                for arn in (f"registry/{registry}", f"schema/{registry}/{name}")
            ]
            policy.allow("ReadSchemaRegistry", ["glue:GetSchemaVersion"], resources)
        if function in self.stores.window_tables:
            policy.allow(
                "WindowState",
                _WINDOW_STATE_ACTIONS,
                [_get(self.id("WindowTable", function))],
            )
        kind, target = on_failure_target(self.plan, function)
        if kind == "sqs":
            queue = _get(self.id("Queue", target))
            policy.allow("OnFailureDestination", ["sqs:SendMessage"], [queue])
        else:
            objects = self._objects(target, ON_FAILURE_PREFIX)
            policy.allow("OnFailureDestination", ["s3:PutObject"], [objects])
            policy.allow("OnFailureDestinationList", ["s3:ListBucket"], [self._bucket(target)])
        return policy.statements

    def _sink_grants(
        self, policy: _Policy, sink: str, spec: SinkSpec, dead_letters: bool
    ) -> None:
        sid = f"Sink{_camel(sink)}"
        kind = spec.get("type")
        if kind == "dynamodb":
            action = "dynamodb:BatchWriteItem" if spec["mode"] == "append" else "dynamodb:PutItem"
            policy.allow(sid, [action], [self._table(spec["table"])])
        elif kind == "s3":
            prefixes = [key_prefix(spec["prefix"])]
            if dead_letters and prefixes[0] and Template(spec["prefix"]).fields:
                prefixes.append(f"{DEAD_LETTERS}/")  # the prefix is left out for dead letters
            objects = [self._objects(spec["bucket"], prefix) for prefix in prefixes]
            policy.allow(sid, ["s3:PutObject"], objects)
        elif kind == "sqs":
            queue = _get(self.id("Queue", spec["queue"]))
            policy.allow(sid, ["sqs:GetQueueUrl", "sqs:SendMessage"], [queue])
            if overflow := spec.get("overflow_bucket"):
                objects = self._objects(overflow, OVERFLOW_PREFIX)
                policy.allow(f"{sid}Overflow", ["s3:PutObject"], [objects])
        elif kind == "kinesis":
            target = spec["stream"]
            own = target == self.plan["stream"]["name"]
            arn = _get(self.id("Stream")) if own else _arn("kinesis", f"stream/{target}")
            policy.allow(sid, ["kinesis:ListShards", "kinesis:PutRecords"], [arn])
        elif kind == "opensearch" and spec.get("auth") == "sigv4":
            domain = opensearch_domain(spec["endpoint"])
            if domain is not None:
                region, name = domain
                domain_arn = f"arn:${{AWS::Partition}}:es:{region}:${{AWS::AccountId}}:domain"
                policy.allow(sid, ["es:ESHttpPost"], [_sub(f"{domain_arn}/{name}/*")])
        elif "use" in spec or kind not in BUILTIN_SINKS:
            # a plugin sink: what its class's iam_statements() asks for (runtime_checks)
            for n, statement in enumerate(plugin_iam_statements(sink, spec)):
                self._grant(policy, f"{sid}Plugin{n if n else ''}", statement)
        # stdout, discard and opensearch without sigv4 call no AWS API the role must allow.

    @staticmethod
    def _grant(policy: _Policy, sid: str, statement: Mapping[str, Any]) -> None:
        """A statement a plugin asked for (checked by runtime_checks), under its own Sid."""
        actions, resources = statement["Action"], statement["Resource"]
        policy.allow(
            statement.get("Sid") or sid,
            [actions] if isinstance(actions, str) else actions,
            resources if isinstance(resources, list) else [resources],
            condition=statement.get("Condition"),
        )

    def _table(self, table: str) -> Any:
        if table in self.stores.tables:
            return _get(self.id("Table", table))
        return _arn("dynamodb", f"table/{table}")

    def _bucket(self, bucket: str) -> Any:
        if bucket in self.stores.buckets:
            return _get(self.id("Bucket", bucket))
        return _sub(f"arn:${{AWS::Partition}}:s3:::{bucket}")

    def _objects(self, bucket: str, prefix: str) -> Any:
        if bucket in self.stores.buckets:
            return _sub(f"${{{self.id('Bucket', bucket)}.Arn}}/{_literal(prefix)}*")
        return _sub(f"arn:${{AWS::Partition}}:s3:::{bucket}/{_literal(prefix)}*")

    def build(self) -> dict[str, Any]:
        self.stream()
        for function in self.plan["functions"]:
            self.function(function)
        self.tables()
        self.buckets()
        self.queues()
        return {
            "AWSTemplateFormatVersion": "2010-09-09",
            "Description": f"shardline pipeline {self.plan['name']}",
            "Resources": self.resources,
            "Outputs": self.outputs,
        }


def _alarm(
    name: str,
    description: str,
    *,
    namespace: str,
    metric: str,
    dimension: tuple[str, Any],
    statistic: str,
    threshold: int,
    periods: int,
    more: Sequence[tuple[str, Any]] = (),
) -> dict[str, Any]:
    return {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            "AlarmName": name,
            "AlarmDescription": description,
            "Namespace": namespace,
            "MetricName": metric,
            "Dimensions": [{"Name": key, "Value": value} for key, value in (dimension, *more)],
            "Statistic": statistic,
            "Period": 60,
            "EvaluationPeriods": periods,
            "Threshold": threshold,
            "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching",
        },
    }


def _registry_schemas(function: FunctionPlan) -> list[tuple[str, str]]:
    """``(registry, schema)`` of each Glue Schema Registry step, once each, in file order."""
    found: list[tuple[str, str]] = []
    for entry in function.get("processors", ()):
        schema = entry.get("schema") if isinstance(entry, dict) else None
        names = schema.get("registry") if isinstance(schema, dict) else None
        if isinstance(names, dict) and (pair := (names["registry"], names["name"])) not in found:
            found.append(pair)
    return found


def _lookup_tables(function: FunctionPlan) -> list[str]:
    tables: list[str] = []
    for entry in function.get("processors", ()):
        lookup = (entry.get("enrich") or {}).get("lookup") if isinstance(entry, dict) else None
        if lookup and lookup["table"] not in tables:
            tables.append(lookup["table"])
    return tables


def opensearch_domain(endpoint: str) -> tuple[str, str] | None:
    """``(region, domain)`` of an Amazon OpenSearch Service domain endpoint, else None.

    >>> host = "search-logs-prod-abcdefghijklmnopqrstuvwxyz.eu-west-1.es.amazonaws.com"
    >>> opensearch_domain(f"https://{host}")
    ('eu-west-1', 'logs-prod')
    >>> opensearch_domain("http://127.0.0.1:9200") is None
    True
    """
    host = urlsplit(endpoint).hostname or ""
    found = _DOMAIN_HOST.fullmatch(host)
    return None if found is None else (found["region"], found["domain"])


def build_template(
    plan: Plan,
    *,
    code_bucket: str,
    code_key: str,
    runtime: str = "python3.12",
    architecture: str = "arm64",
) -> dict[str, Any]:
    """The CloudFormation template (a dict) for a compiled plan; see the module docstring.

    Args:
        plan: the compiled plan (:func:`deploy.pipeline.config.compile_plan`).
        code_bucket: the bucket holding the Lambda package.
        code_key: the package's key; a new key (e.g. one naming the package's digest) is
            what makes CloudFormation update the functions' code.
        runtime: the Lambda runtime.
        architecture: ``arm64`` or ``x86_64``, as the package was built for.
    """
    code = {"S3Bucket": code_bucket, "S3Key": code_key}
    return _Builder(plan, code, runtime, architecture).build()


def keep_rewinds(template: Mapping[str, Any], deployed: Mapping[str, Any]) -> dict[str, Any]:
    """``template`` with each event source mapping that ``shardline rewind`` recreated in
    ``deployed`` kept as it is there: its logical id (the rewind's) and its starting
    position. A mapping's position cannot change in place, so a deploy of the file would
    otherwise replace it and start the function over from the file's position. The rewound
    mapping's ``Metadata`` names the file's id (``shardline:mapping``) and the time.

    >>> new = {"Resources": {"M": {"Properties": {"StartingPosition": "TRIM_HORIZON"}}},
    ...        "Outputs": {"MId": {"Value": {"Ref": "M"}}}}
    >>> old = {"Resources": {"MAt5": {"Metadata": {"shardline:rewound_to": "t",
    ...        "shardline:mapping": "M"}, "Properties": {"StartingPosition": "AT_TIMESTAMP",
    ...        "StartingPositionTimestamp": 5.0}}}}
    >>> kept = keep_rewinds(new, old)
    >>> kept["Resources"]["MAt5"]["Properties"]["StartingPositionTimestamp"], kept["Outputs"]
    (5.0, {'MId': {'Value': {'Ref': 'MAt5'}}})
    """
    out: dict[str, Any] = json.loads(json.dumps(template))
    resources = out.get("Resources", {})
    for logical_id, resource in deployed.get("Resources", {}).items():
        metadata = resource.get("Metadata") or {}
        base = metadata.get(REWOUND_FROM)
        if REWOUND_TO not in metadata or base not in resources:
            continue
        mine = resources.pop(base)
        props = resource.get("Properties", {})
        for key in ("StartingPosition", "StartingPositionTimestamp"):
            if key in props:
                mine.setdefault("Properties", {})[key] = props[key]
        keep = {REWOUND_TO: metadata[REWOUND_TO], REWOUND_FROM: base}
        mine["Metadata"] = {**(mine.get("Metadata") or {}), **keep}
        resources[logical_id] = mine
        for output in out.get("Outputs", {}).values():
            if output.get("Value") == {"Ref": base}:
                output["Value"] = {"Ref": logical_id}
    return out


def template_json(template: Mapping[str, Any]) -> str:
    """The template as JSON text: sorted keys, two-space indents, a final newline, so the
    same template is always the same bytes."""
    return json.dumps(template, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def deploy_problems(plan: Plan) -> list[str]:
    """What in a valid plan cannot be deployed, each with the place and the fix; empty if
    nothing. The deploy step calls it before creating anything. ``validate`` refuses all of
    it but the stack's size and in-process window state (which ``shardline test`` runs)
    (:mod:`deploy.pipeline.deployable`); a plan made another way is checked in full here."""
    from deploy.pipeline.steps import window_state_problems  # noqa: PLC0415

    problems = window_state_problems(plan)
    functions = plan["functions"]
    for function, spec in functions.items():
        name = function_name(plan, function)
        if len(name) > MAX_FUNCTION_NAME:
            problems.append(
                f"functions.{function}: the Lambda function name {name!r} (pipeline name, '-', "
                f"function name) is {len(name)} characters long, AWS allows "
                f"{MAX_FUNCTION_NAME}: shorten the pipeline's or the function's name"
            )
        patterns = spec.get("filter_criteria") or []
        if len(patterns) > MAX_FILTERS:
            problems.append(
                f"functions.{function}: {len(patterns)} filter patterns, an event source "
                f"mapping takes at most {MAX_FILTERS}: merge the leading match filters"
            )
    dlq = dead_letter_queue_name(plan)
    needs_dlq = any(not spec.get("on_failure") for spec in functions.values())
    if needs_dlq and len(dlq) > MAX_QUEUE_NAME:
        problems.append(
            f"name: the dead-letter queue {dlq!r} (for functions without on_failure) is "
            f"{len(dlq)} characters long, SQS allows {MAX_QUEUE_NAME}: shorten the pipeline "
            "name or give every function an on_failure sink"
        )
    problems += [f"{format_path(path)}: {message}" for path, message in plan_problems(plan)]
    template = build_template(plan, code_bucket="b", code_key="k")
    for section, limit in (("Resources", MAX_RESOURCES), ("Outputs", MAX_OUTPUTS)):
        count = len(template[section])
        if count > limit:
            problems.append(
                f"functions: the stack would hold {count} {section.lower()}, CloudFormation "
                f"allows {limit}: split the pipeline into several files"
            )
    return problems
