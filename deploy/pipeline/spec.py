"""The pipeline file's keys, described once: types, bounds, choices, patterns, defaults, words.

This module is data. The validator (:mod:`deploy.pipeline.schema`, :mod:`deploy.pipeline.steps`,
through :meth:`deploy.pipeline.fields.Fields.read`) takes the allowed keys, ranges, choices,
name rules and defaults of each section from here, and the JSON Schema generator
(:mod:`deploy.pipeline.jsonschema`) takes the same, plus the descriptions editors show. A key
is added, bounded or renamed here, and both follow.

What only the validator can check (sink names a route uses exist, patterns and JMESPath
compile, plugins are installed, cross-key rules such as ``shards`` only with ``provisioned``)
stays in its code; the shapes of nested sections (``batch``, ``processors``, a rule) stay in
the generator's.

>>> STREAM["retention_hours"].minimum, STREAM["retention_hours"].maximum
(24, 8760)
>>> FUNCTION["ordering"].enum, FUNCTION["ordering"].default
(('strict', 'per_key', 'none'), 'per_key')
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from deploy.names import MAX_FUNCTION_NAME
from processors.lookup import ON_MISS as _ON_MISS

__all__ = [
    "BATCH",
    "ENRICH",
    "FILTER",
    "FUNCTION",
    "FUNCTION_NAME_MAX",
    "IMPORT_PATH",
    "LOOKUP",
    "ROUTE",
    "RULE",
    "SCHEMA",
    "SCHEMA_REGISTRY",
    "SINK_NAME",
    "SINK_TYPES",
    "STACK_NAME",
    "STREAM",
    "TEMPLATE",
    "TOP",
    "USE",
    "WINDOW",
    "Key",
    "Section",
]

Kind = Literal["string", "integer", "boolean", "enum", "object", "array", "any"]


@dataclass(frozen=True)
class Key:
    """One key of a section of the pipeline file.

    Attributes:
        kind: what the value is; ``enum`` is a string among ``enum``.
        description: what editors show (the JSON Schema's ``description``).
        default: what validation fills in when the key is absent (None: nothing).
        required: the key must be given (and, for a string, not be empty).
        minimum: the least integer allowed.
        maximum: the greatest integer allowed (None: no upper bound).
        multiple_of: an integer must be a multiple of this (the JSON Schema's
            ``multipleOf``; None: any).
        enum: the allowed strings, in the order messages list them.
        pattern: a regex the whole string must match (Python ``fullmatch``).
        rule: how ``pattern`` reads in a message: ``invalid name 'x': <rule>``; or why
            ``multiple_of``: ``must be a multiple of 60 (<rule>), got 90``.
        min_length: the JSON Schema's ``minLength`` (validation refuses empty required text).
        max_length: the most characters allowed.
        template: the string is a brace template (:mod:`sinks.templates`).
        url: the string is an http(s) URL.
    """

    kind: Kind
    description: str = ""
    default: Any = None
    required: bool = False
    minimum: int | None = None
    maximum: int | None = None
    multiple_of: int | None = None
    enum: tuple[str, ...] = ()
    pattern: str | None = None
    rule: str | None = None
    min_length: int | None = None
    max_length: int | None = None
    template: bool = False
    url: bool = False


#: The keys of one mapping of the file, in the order the validator reads and lists them.
Section = dict[str, Key]

# -- name rules (AWS's, and ours for the names the file gives) --------------------------------

#: Stack and function names: they become CloudFormation and Lambda names.
STACK_NAME = r"[A-Za-z][A-Za-z0-9-]*"
#: The most characters of a function's own name (Lambda allows 64 for the whole name).
FUNCTION_NAME_MAX = MAX_FUNCTION_NAME
#: Names under ``sinks:``.
SINK_NAME = r"[A-Za-z][A-Za-z0-9_-]*"
#: ``use: package.module:Class``.
IMPORT_PATH = r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*"
#: How a template setting is described.
TEMPLATE = "a template: {field}, {field.sub}, {arrival:FMT} and {now:FMT} (strftime) are replaced"

_REGION = r"[a-z]{2}(-[a-z]+)+-[0-9]+"  # ASCII digits (\d takes any Unicode digit)
_STREAM_NAME = Key(
    "string", pattern=r"[A-Za-z0-9_.-]{1,128}", rule="1-128 letters, digits, '_', '-' or '.'"
)
_TABLE_NAME = Key(
    "string", pattern=r"[A-Za-z0-9_.-]{3,255}", rule="3-255 letters, digits, '_', '-' or '.'"
)
_BUCKET_NAME = Key(
    "string",
    pattern=r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]",
    rule="3-63 lowercase letters, digits, '.' or '-'",
)
_QUEUE_NAME = Key(
    "string",
    pattern=r"[A-Za-z0-9_-]{1,80}|[A-Za-z0-9_-]{1,75}\.fifo",
    rule="1-80 letters, digits, '_' or '-' (optional .fifo)",
)


def _like(base: Key, **changes: Any) -> Key:
    """``base`` with some attributes changed (a name rule, made required or described)."""
    return replace(base, **changes)


# -- sections ----------------------------------------------------------------------------------

TOP: Section = {
    "name": Key(
        "string",
        "Stack name and prefix of the resources the file does not name.",
        required=True,
        pattern=STACK_NAME,
        max_length=128,
    ),
    "region": Key(
        "string", "AWS region; else the usual AWS environment or profile.", pattern=_REGION
    ),
    "stream": Key("object", "The Kinesis stream the functions consume.", required=True),
    "sinks": Key(
        "object", "Sinks by name, used by any function's routes and on_failure.", required=True
    ),
    "functions": Key(
        "object", "Lambda functions, each with its own event source mapping.", required=True
    ),
    "metrics": Key(
        "boolean",
        "CloudWatch metrics (EMF) once per invocation; unset: in Lambda only. "
        "SHARDLINE_METRICS=0/1 overrides.",
    ),
    "log_payloads": Key(
        "boolean", "Log a poison record's payload with its position.", default=False
    ),
}

STREAM: Section = {
    "name": _like(
        _STREAM_NAME, description="The Kinesis stream, used exactly as written.", required=True
    ),
    "mode": Key("enum", "Capacity mode.", default="on_demand", enum=("on_demand", "provisioned")),
    "shards": Key("integer", "Shard count; provisioned mode only.", minimum=1),
    "retention_hours": Key(
        "integer", "How long records are kept.", default=24, minimum=24, maximum=8760
    ),
    "encryption": Key(
        "enum", "kms: the AWS managed key alias/aws/kinesis.", default="kms", enum=("kms", "none")
    ),
    "aggregated": Key(
        "boolean",
        "Producers use KPL aggregation: corrupt aggregates are dead-lettered (else data "
        "that only looks like one passes as a plain record); functions may not use "
        "filter_pushdown (AWS cannot filter aggregates) nor parallelization above 1.",
        default=False,
    ),
}

FUNCTION: Section = {
    "memory_mb": Key("integer", "Lambda memory (MB).", default=256, minimum=128, maximum=10240),
    "timeout_s": Key("integer", "Lambda timeout (s).", default=60, minimum=1, maximum=900),
    "batch": Key("object", "The event source mapping's batching and retry settings."),
    "ordering": Key(
        "enum",
        "What a failure holds back in its batch: strict everything after it, per_key the "
        "later records of its partition key, none nothing.",
        default="per_key",
        enum=("strict", "per_key", "none"),
    ),
    "filter_pushdown": Key(
        "boolean",
        "Opt in: leading match filters also become the mapping's FilterCriteria, and AWS "
        "then drops records that are not JSON silently. Not with stream.aggregated.",
        default=False,
    ),
    "on_failure": Key(
        "string",
        "A sink of type sqs or s3 for poison records and exhausted retries; when absent, "
        "deploy creates the queue <name>-dlq.",
    ),
    "processors": Key(
        "array",
        "The chain: filter, enrich, route, plugins; absent or [] means none (then the route "
        "shorthand sends every record).",
    ),
    "route": Key("array", "Shorthand: every record goes to these sinks (no route processor)."),
}

BATCH: Section = {
    "size": Key("integer", "Most records per invocation.", default=100, minimum=1, maximum=10000),
    "window_s": Key(
        "integer", "Seconds to gather records before invoking.", default=0, minimum=0, maximum=300
    ),
    "starting_position": Key(
        "enum",
        "Where a new mapping starts.",
        default="trim_horizon",
        enum=("trim_horizon", "latest", "at_timestamp"),
    ),
    "starting_timestamp": Key(
        "any", "For at_timestamp: ISO-8601 (UTC without an offset) or epoch seconds."
    ),
    "parallelization": Key(
        "integer", "Concurrent batches per shard.", default=1, minimum=1, maximum=10
    ),
    "bisect_on_error": Key("boolean", "Split a failing batch and retry halves.", default=True),
    "max_retries": Key(
        "integer",
        "Retries of a failing batch; never -1.",
        default=3,
        minimum=0,
        maximum=10000,
    ),
    "max_record_age_s": Key(
        "integer",
        "Older records go to on_failure.",
        default=86400,
        minimum=60,
        maximum=604800,
    ),
    "consumer": Key(
        "enum",
        "shared: the shard's 5 reads/s and 2 MB/s, split among the stream's shared functions; "
        "efo: an enhanced fan-out consumer of the function's own, with 2 MB/s per shard "
        "(priced apart: see shardline cost).",
        default="shared",
        enum=("shared", "efo"),
    ),
}


def _sink_setting(kind: str, key: str, base: Key) -> Key:
    words = f"{kind} sink {key}."
    return _like(base, description=f"{words} {TEMPLATE}." if base.template else words)


def _sink_type(kind: str, settings: dict[str, Key]) -> Section:
    return {key: _sink_setting(kind, key, base) for key, base in settings.items()}


_REQUIRED = Key("string", required=True, min_length=1)

#: The settings of each built-in sink type (besides ``type``), in the order the plan lists them.
SINK_TYPES: dict[str, Section] = {
    "dynamodb": _sink_type(
        "dynamodb",
        {
            "table": _like(_TABLE_NAME, required=True, min_length=1),
            "key": _REQUIRED,
            "mode": Key("enum", default="latest", enum=("latest", "append")),
        },
    ),
    "opensearch": _sink_type(
        "opensearch",
        {
            "endpoint": Key("string", required=True, min_length=1, url=True),
            "index": Key("string", required=True, min_length=1, template=True),
            "id": Key("string"),
            "auth": Key("enum", default="sigv4", enum=("sigv4", "none")),
        },
    ),
    "s3": _sink_type(
        "s3",
        {
            "bucket": _like(_BUCKET_NAME, required=True, min_length=1),
            "prefix": Key("string", default="", template=True),
            "partition": Key("string", template=True),
            "compression": Key("enum", default="gzip", enum=("gzip", "none")),
        },
    ),
    "sqs": _sink_type(
        "sqs",
        {
            "queue": _like(_QUEUE_NAME, required=True, min_length=1),
            # where a dead letter too large for one message goes; default: the first s3 sink's
            "overflow_bucket": _BUCKET_NAME,
        },
    ),
    "kinesis": _sink_type(
        "kinesis",
        {"stream": _like(_STREAM_NAME, required=True, min_length=1), "partition_key": _REQUIRED},
    ),
    "stdout": {},
    "discard": {},  # accepts and drops everything (Vector's blackhole): benchmarks, dry runs
}

# -- processors --------------------------------------------------------------------------------

FILTER: Section = {
    "match": Key("object"),  # described as $defs/pattern
    "expr": Key("string", "A JMESPath expression; truthy keeps."),
}

ENRICH: Section = {
    "set": Key("object", "Fields to set."),
    "timestamp": Key("string", "Field for the processing time."),
    "lookup": Key("object", "The item of a DynamoDB table keyed by a record field."),
}

LOOKUP: Section = {
    "table": _like(
        _TABLE_NAME,
        description="The table, used exactly as written.",
        required=True,
        min_length=1,
    ),
    "key": Key("string", "The record field holding the key.", required=True, min_length=1),
    "into": Key("string", "The field that receives the item.", required=True, min_length=1),
    "on_miss": Key("enum", "What a record without an item does.", default="keep", enum=_ON_MISS),
    "ttl_s": Key("integer", "Seconds an item is cached (300).", minimum=0),
    "table_key": Key("string", "The table's partition key, when not named like key."),
    "miss_ttl_s": Key("integer", "Seconds a miss is cached (min(ttl_s, 60)).", minimum=0),
    "max_entries": Key("integer", "Most keys cached.", minimum=1),
}

ROUTE: Section = {
    "mode": Key(
        "enum",
        "first: the first rule that matches; all: every rule that matches.",
        default="first",
        enum=("first", "all"),
    ),
    "rules": Key("array", required=True),
}

RULE: Section = {
    "when": Key("any", "A match pattern, or a JMESPath expression (a string).", required=True),
    "to": Key("array", required=True),  # described as $defs/sink_list
    "default": Key("array"),
}

WINDOW: Section = {
    "key": Key(
        "string",
        "The record field whose value names the key's windows.",
        required=True,
        min_length=1,
    ),
    "size_s": Key("integer", "Window length (s): tumbling, or hopping with slide_s.", minimum=1),
    "slide_s": Key(
        "integer", "Hopping windows: seconds between starts; divides size_s.", minimum=1
    ),
    "gap_s": Key(
        "integer",
        "Session windows, instead of size_s: a gap of this many seconds or more between two "
        "records of a key ends a session.",
        minimum=1,
    ),
    "time": Key(
        "enum",
        "event: the time in the record's field; arrival: the approximate arrival time.",
        default="event",
        enum=("event", "arrival"),
    ),
    "field": Key(
        "string",
        "With time: event, the field holding it: ISO-8601 (UTC without an offset) or epoch "
        "seconds, or milliseconds (numbers of at least 10^11).",
    ),
    "allowed_lateness_s": Key(
        "integer",
        "How far behind the greatest event time of its shard a record still counts; at most "
        "size_s (gap_s).",
        default=0,
        minimum=0,
    ),
    "aggregate": Key(
        "object",
        "Result name -> count, or {KIND: field} with KIND count, sum, min, max, avg, distinct, "
        "first, last, or a plugin of shardline.aggregations.",
        required=True,
    ),
    "late": Key("string", "A sink for records later than allowed; else dropped and counted."),
    "quiet_s": Key(
        "integer",
        "A shard with no batch for this long is quiet: the next batch of another shard of the "
        "function closes its windows whose end plus the lateness is this long past (by the "
        "clock). With state: dynamodb.",
        default=300,
        minimum=1,
    ),
    "flush_s": Key(
        "integer",
        "How often (s, whole minutes) a scheduled flush closes the windows of quiet shards "
        "when no other shard of the function has a batch: an EventBridge rule invokes the "
        "function; 0: off. With state: dynamodb (off with memory), on the chain's last "
        "window step (off on an earlier one; validate refuses a non-zero value there, which "
        "this schema cannot express).",
        default=60,  # processors.window.DEFAULT_FLUSH_S (not imported: the CLI starts light)
        minimum=0,
        maximum=86_400,  # processors.window.MAX_FLUSH_S
        multiple_of=60,
        rule="EventBridge schedules whole minutes",
    ),
    "state": Key(
        "enum",
        "Where windows live between batches: dynamodb (a table per function, created by "
        "deploy); memory (the process, lost on a cold start: for shardline test only).",
        default="dynamodb",
        enum=("memory", "dynamodb"),
    ),
}

SCHEMA: Section = {
    "json_schema": Key(
        "string",
        "A JSON Schema file (draft 2020-12 unless its $schema says otherwise), relative to the "
        "pipeline file; a record that does not follow it is dead-lettered with the JSON "
        "pointer and keyword.",
        min_length=1,
    ),
    "avro": Key(
        "string",
        "An Avro schema file (.avsc), relative to the pipeline file: records are Avro binary "
        "and continue as their JSON document; one that does not decode is dead-lettered.",
        min_length=1,
    ),
    "registry": Key(
        "object",
        "A schema in the AWS Glue Schema Registry: records carry its wire header (version "
        "byte 3, compression byte, 16-byte schema version id) and an Avro or JSON payload; the "
        "version is fetched once per id. Avro records continue as their JSON document.",
    ),
}

#: Glue's rule for registry and schema names.
_GLUE_NAME = Key(
    "string",
    pattern=r"[A-Za-z0-9_$#.-]{1,255}",
    rule="1-255 letters, digits, '_', '-', '$', '#' or '.'",
)

SCHEMA_REGISTRY: Section = {
    "name": replace(_GLUE_NAME, description="The schema's name in the registry.", required=True),
    "registry": replace(
        _GLUE_NAME,
        description="The registry's name; default-registry is the one AWS's serializers use.",
        default="default-registry",
    ),
}

USE: Section = {
    "use": Key("string", required=True, pattern=IMPORT_PATH),
    "with": Key("object"),
}
