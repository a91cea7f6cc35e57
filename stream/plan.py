"""The compiled plan: the contract between ``shardline compile`` and the runtime.

``deploy`` turns a pipeline file into this JSON (:func:`deploy.pipeline.config.compile_plan`),
with every default filled in; the Lambda handler, the local runner and deploy read it. The
runtime owns the shape, so the types live here, beside the code that reads them, and
``compile`` imports them: the two cannot describe different plans (a test compiles every
example pipeline and compares the keys with these types).

A plan file carries :data:`PLAN_VERSION`. :func:`check_version` (from
:mod:`stream.plan_version`, which the handler loads alone) refuses a plan written by an older
or a newer shardline, whose keys this one may read wrongly, and says how to make one it knows.

Only :mod:`typing` is imported here, and the handler does not load this module. Unlike the
rest of the code base, this module has no ``from __future__ import annotations``: a
TypedDict turns each string annotation into a compiled ``ForwardRef`` when its class is
made, which triples this module's import time. Optional keys come from a ``total=False``
subclass of the required ones, which ``__optional_keys__`` reports under either spelling of
annotations (the test that holds compile to these types reads it).
"""

from typing import Any, Literal, NotRequired, TypedDict

from stream.plan_version import PLAN_VERSION, PlanVersionError, check_version

__all__ = [
    "PLAN_VERSION",
    "BatchSettings",
    "EnrichSpec",
    "FilterSpec",
    "FunctionPlan",
    "LookupSpec",
    "Plan",
    "PlanVersionError",
    "ProcessorEntry",
    "RegistryNames",
    "RouteRule",
    "RouteSpec",
    "SchemaSpec",
    "SinkSpec",
    "StreamSpec",
    "check_version",
]


class StreamSpec(TypedDict):
    """``plan["stream"]``: the Kinesis stream the functions consume."""

    name: str
    mode: Literal["on_demand", "provisioned"]
    shards: int | None  # provisioned only
    retention_hours: int
    encryption: Literal["kms", "none"]
    aggregated: bool  # producers use KPL aggregation


class _SinkType(TypedDict):
    type: str


class SinkSpec(_SinkType, total=False):
    """``plan["sinks"][name]``: a sink's type and its options, passed to its constructor.

    Which options a built-in type has (``deploy.pipeline.schema.SINK_TYPES``): dynamodb
    ``table key mode``; opensearch ``endpoint index id auth``; s3 ``bucket prefix
    partition compression``; sqs ``queue overflow_bucket``; kinesis ``stream
    partition_key``; stdout and discard none. A plugin's sink carries the options its class
    declares, which no type here can list (they are still there at run time).
    """

    use: str  # ``module:Class`` instead of a registered type
    # dynamodb
    table: str
    key: str
    mode: Literal["latest", "append"]
    # opensearch
    endpoint: str
    index: str
    id: str | None
    auth: Literal["sigv4", "none"]
    # s3
    bucket: str
    prefix: str
    partition: str | None
    compression: Literal["gzip", "none"]
    # sqs
    queue: str
    overflow_bucket: str | None  # compile fills in the first s3 sink's bucket
    # kinesis
    stream: str
    partition_key: str


class BatchSettings(TypedDict):
    """``function["batch"]``: the event source mapping's settings."""

    size: int
    window_s: int
    starting_position: Literal["trim_horizon", "latest", "at_timestamp"]
    starting_timestamp: int | float | None  # epoch seconds, for at_timestamp only
    parallelization: int
    bisect_on_error: bool
    max_retries: int
    max_record_age_s: int
    consumer: NotRequired[Literal["shared", "efo"]]  # absent in plans compiled before it


class FilterSpec(TypedDict, total=False):
    """The arguments of a ``filter`` step: a content pattern, a JMESPath expression, or both."""

    match: dict[str, Any]
    expr: str


class _Lookup(TypedDict):
    table: str
    key: str
    into: str
    on_miss: Literal["keep", "drop", "dead_letter"]
    ttl_s: int | None


class LookupSpec(_Lookup, total=False):
    """``enrich: lookup``: the DynamoDB table whose item joins the record; the tuning keys
    are there only when the file gives them."""

    table_key: str
    miss_ttl_s: int
    max_entries: int
    #: ``text`` when the table is one of the pipeline's ``dynamodb`` sinks, which write a
    #: number key as its text; absent: a number key is a DynamoDB number
    number_keys: Literal["number", "text"]


class EnrichSpec(TypedDict, total=False):
    """The arguments of an ``enrich`` step (at least one of the three)."""

    set: dict[str, Any]
    timestamp: str
    lookup: LookupSpec


class RouteRule(TypedDict, total=False):
    """One rule of a route: ``{"when": pattern, "to": [sinks]}`` or ``{"default": [sinks]}``."""

    when: dict[str, Any]
    to: list[str]
    default: list[str]


class RouteSpec(TypedDict):
    """The arguments of a ``route`` step."""

    mode: Literal["first", "all"]
    rules: list[RouteRule]


class RegistryNames(TypedDict):
    """A schema of the Glue Schema Registry: its name and its registry's."""

    name: str
    registry: str


class SchemaSpec(TypedDict, total=False):
    """The arguments of a ``schema`` step: one schema, bundled from its file by ``compile``,
    and the file's name as the pipeline file gives it (named in dead letters); or the names
    of a Glue Schema Registry schema, whose versions the function fetches."""

    json_schema: dict[str, Any]
    avro: Any  # an Avro schema: a record mapping, a type name, or a union list
    registry: RegistryNames
    source: str


#: One entry of ``function["processors"]``: a one-key mapping ``{NAME: ARGS}`` (the
#: built-ins' ARGS are :class:`FilterSpec`, :class:`EnrichSpec`, :class:`RouteSpec` and
#: :class:`SchemaSpec`; a
#: plugin's are its own), or ``{"use": "module:attr", "with": {...}}``.
ProcessorEntry = dict[str, Any]


class FunctionPlan(TypedDict):
    """``plan["functions"][name]``: one Lambda function, its mapping and its chain."""

    memory_mb: int
    timeout_s: int
    batch: BatchSettings
    ordering: Literal["strict", "per_key", "none"]
    filter_pushdown: bool
    on_failure: str | None  # a sink of type sqs or s3; None: deploy's `<name>-dlq`
    processors: list[ProcessorEntry]
    route: list[str] | None  # the shorthand: every record to these sinks
    filter_criteria: list[dict[str, Any]]  # patterns AWS applies (filter_pushdown)


class Plan(TypedDict):
    """The whole compiled plan (``shardline compile``'s output)."""

    version: int
    name: str
    region: str | None
    stream: StreamSpec
    sinks: dict[str, SinkSpec]
    functions: dict[str, FunctionPlan]
    metrics: bool | None  # None: in Lambda only
    log_payloads: bool
