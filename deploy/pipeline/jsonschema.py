"""The JSON Schema of the pipeline file, for editors (completion, hover, squiggles) and CI.

It is generated from the validator's own model, :mod:`deploy.pipeline.schema` and
:mod:`deploy.pipeline.steps`: the allowed keys of every section (``TOP_KEYS``,
``STREAM_KEYS``, ``FUNCTION_KEYS``, ``BATCH_KEYS``), the choices (``STREAM_MODES``,
``ORDERINGS``, ``ON_MISS``...), the built-in sink types with their settings
(``SINK_TYPES``), the name rules, and the defaults, which are read from what
:func:`deploy.pipeline.schema.validate` fills into a minimal file. A key the validator accepts
that this module does not describe makes :func:`pipeline_schema` raise, so the two cannot
drift apart silently. What the model keeps only inside its checks, the integer ranges, is
stated here once (:data:`BOUNDS`) and a test holds it against the validator.

``shardline validate`` stays the authority: it also checks what a schema cannot say
(sink names that a route uses exist, match patterns and JMESPath compile, plugins are
installed). Where the file may write ``${VAR}`` (any value: the loader interpolates
before validating), the schema accepts a reference in place of the value.

>>> schema = pipeline_schema()
>>> sorted(schema["properties"]) == sorted(TOP_KEYS)
True
>>> schema["$defs"]["function"]["properties"]["ordering"]["default"]
'per_key'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deploy.pipeline import schema as model
from deploy.pipeline.braces import template_problem
from deploy.pipeline.problems import Reporter
from deploy.pipeline.steps import BUILTIN_PROCESSORS, ON_MISS, ROUTE_MODES, validate_chain

if TYPE_CHECKING:
    import re
    from collections.abc import Callable, Mapping, Sequence

__all__ = ["BOUNDS", "DRAFT", "TOP_KEYS", "pipeline_schema"]

DRAFT = "https://json-schema.org/draft/2020-12/schema"
TOP_KEYS = model.TOP_KEYS

#: Integer settings and their inclusive ranges (None: no upper bound), by section.
BOUNDS: dict[str, dict[str, tuple[int, int | None]]] = {
    "stream": {"shards": (1, None), "retention_hours": (24, 8760)},
    "function": {"memory_mb": (128, 10240), "timeout_s": (1, 900)},
    "batch": {
        "size": (1, 10000),
        "window_s": (0, 300),
        "parallelization": (1, 10),
        "max_retries": (0, 10000),
        "max_record_age_s": (60, 604800),
    },
    "lookup": {"ttl_s": (0, None), "miss_ttl_s": (0, None), "max_entries": (1, None)},
}

_ENV_REF = r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}"
_IMPORT_PATH = r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$"
_TEMPLATE = "a template: {field}, {field.sub}, {arrival:FMT} and {now:FMT} (strftime) are replaced"

# The name rules of deploy.pipeline.schema (its private regexes: this module is its other half),
# by the check that applies them.
_NAME_RULES: dict[Callable[[str], str | None], re.Pattern[str]] = {
    model._stream_name: model._STREAM_NAME,
    model._table_name: model._TABLE_NAME,
    model._bucket_name: model._BUCKET_NAME,
    model._queue_name: model._QUEUE_NAME,
}


def pipeline_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the pipeline file, as a JSON-ready dict.

    Raises:
        RuntimeError: the validator accepts a key this module does not describe (or the
            other way round); the message names it.
    """
    defaults = _defaults()
    top = {
        "name": _with_env(
            {
                "type": "string",
                "pattern": _anchored(model._STACK_NAME.pattern),
                "maxLength": 128,
                "description": "Stack name and prefix of the resources the file does not name.",
            }
        ),
        "region": _with_env(
            {
                "type": "string",
                "pattern": _anchored(model._REGION.pattern),
                "description": "AWS region; else the usual AWS environment or profile.",
            }
        ),
        "stream": {"$ref": "#/$defs/stream"},
        "sinks": {
            "type": "object",
            "description": "Sinks by name, used by any function's routes and on_failure.",
            "minProperties": 1,
            "propertyNames": {"pattern": _anchored(model._SINK_NAME.pattern)},
            "additionalProperties": {"$ref": "#/$defs/sink"},
        },
        "functions": {
            "type": "object",
            "description": "Lambda functions, each with its own event source mapping.",
            "minProperties": 1,
            "propertyNames": {
                "pattern": _anchored(model._STACK_NAME.pattern),
                "maxLength": 64,
            },
            "additionalProperties": {"$ref": "#/$defs/function"},
        },
        "metrics": _with_env(
            {
                "type": "boolean",
                "description": "CloudWatch metrics (EMF) once per invocation; unset: in "
                "Lambda only. SHARDLINE_METRICS=0/1 overrides.",
            }
        ),
        "log_payloads": _flag(False, "Log a poison record's payload with its position."),
    }
    return {
        "$schema": DRAFT,
        "title": "shardline pipeline file",
        "description": "A Kinesis stream and the Lambda functions that consume it "
        "(see `shardline validate`, which checks everything this schema cannot).",
        **_object(TOP_KEYS, top, required=("name", "stream", "sinks", "functions")),
        **_aggregated_rules(),
        "$defs": {
            "env": {
                "type": "string",
                "pattern": _ENV_REF,
                "description": "${VAR} or ${VAR:-default}, read from the environment when "
                "the file is loaded.",
            },
            "stream": _stream(defaults["stream"]),
            "sink": _sink(),
            "function": _function(defaults["function"]),
            "batch": _batch(defaults["function"]["batch"]),
            "sink_list": {
                "type": "array",
                "items": {"type": "string"},
                "minItems": 1,
                "uniqueItems": True,
                "description": "Names of sinks defined under sinks.",
            },
            "pattern": {
                "type": "object",
                "description": "A Lambda/EventBridge content pattern on the record's JSON, "
                "e.g. {event_type: [click]}.",
            },
            "processor": _processor(),
            "filter": _filter(),
            "enrich": _enrich(),
            "lookup": _lookup(defaults["lookup"]),
            "route": _route(defaults["route"]),
            "rule": _rule(),
        },
    }


# -- helpers ---------------------------------------------------------------------------------


def _anchored(pattern: str) -> str:
    """A Python ``fullmatch`` regex as a JSON Schema pattern (which searches)."""
    return f"^(?:{pattern})$"


def _with_env(shape: dict[str, Any]) -> dict[str, Any]:
    """``shape``, or a ``${VAR}`` reference; descriptions and defaults stay outside."""
    outer: dict[str, Any] = {k: shape.pop(k) for k in ("description", "default") if k in shape}
    return {**outer, "anyOf": [shape, {"$ref": "#/$defs/env"}]}


def _object(
    keys: Sequence[str], shapes: Mapping[str, Any], required: Sequence[str] = ()
) -> dict[str, Any]:
    """A closed object whose properties are exactly the validator's ``keys``."""
    missing = [k for k in keys if k not in shapes]
    extra = [k for k in shapes if k not in keys]
    if missing or extra:
        msg = (
            f"deploy.pipeline.jsonschema is out of step with deploy.pipeline.schema: "
            f"not described {missing}, "
            f"not accepted {extra}; describe each accepted key in deploy/pipeline/jsonschema.py"
        )
        raise RuntimeError(msg)
    out: dict[str, Any] = {
        "type": "object",
        "properties": {k: shapes[k] for k in keys},
        "additionalProperties": False,
    }
    if required:
        out["required"] = list(required)
    return out


def _integer(section: str, key: str, default: Any, description: str) -> dict[str, Any]:
    lo, hi = BOUNDS[section][key]
    shape: dict[str, Any] = {"type": "integer", "minimum": lo, "description": description}
    if hi is not None:
        shape["maximum"] = hi
    if default is not None:
        shape["default"] = default
    return _with_env(shape)


def _choice(choices: Sequence[str], default: Any, description: str) -> dict[str, Any]:
    shape: dict[str, Any] = {"enum": list(choices), "description": description}
    if default is not None:
        shape["default"] = default
    return _with_env(shape)


def _flag(default: bool, description: str) -> dict[str, Any]:
    return _with_env({"type": "boolean", "default": default, "description": description})


def _text(description: str, **more: Any) -> dict[str, Any]:
    return _with_env({"type": "string", "description": description, **more})


def _aggregated_rules() -> dict[str, Any]:
    """What ``stream.aggregated: true`` refuses in every function, as the validator does:
    ``filter_pushdown: true`` (AWS cannot filter aggregates) and ``parallelization`` above 1
    (AWS's ParallelizationFactor does not work with aggregation)."""
    refused = {
        "properties": {
            "filter_pushdown": {"not": {"const": True}},
            "batch": {"properties": {"parallelization": {"maximum": 1}}},
        }
    }
    aggregated = {"properties": {"aggregated": {"const": True}}, "required": ["aggregated"]}
    return {
        "if": {"properties": {"stream": aggregated}, "required": ["stream"]},
        "then": {"properties": {"functions": {"additionalProperties": refused}}},
    }


def _defaults() -> dict[str, Any]:
    """The defaults the validator fills into a minimal file: one source of truth."""
    r = Reporter("<defaults>", {})
    doc = {
        "name": "defaults",
        "stream": {"name": "defaults"},
        "sinks": {"out": {"type": "stdout"}},
        "functions": {"f": {"processors": [], "route": ["out"]}},
    }
    normalized = model.validate(r, doc)
    chain = [
        {"enrich": {"lookup": {"table": "t", "key": "k", "into": "i"}}},
        {"route": {"rules": [{"default": ["out"]}]}},
    ]
    steps, _ = validate_chain(r, ("processors",), chain, ["out"])
    if r.problems:  # the validator changed what a minimal file is: say so plainly
        raise RuntimeError("; ".join(str(p) for p in r.problems))
    return {
        "stream": normalized["stream"],
        "function": normalized["functions"]["f"],
        "lookup": steps[0]["enrich"]["lookup"],
        "route": steps[1]["route"],
    }


# -- sections ----------------------------------------------------------------------------------


def _stream(d: Mapping[str, Any]) -> dict[str, Any]:
    shapes = {
        "name": _text(
            "The Kinesis stream, used exactly as written.",
            pattern=_anchored(model._STREAM_NAME.pattern),
        ),
        "mode": _choice(model.STREAM_MODES, d["mode"], "Capacity mode."),
        "shards": _integer("stream", "shards", None, "Shard count; provisioned mode only."),
        "retention_hours": _integer(
            "stream", "retention_hours", d["retention_hours"], "How long records are kept."
        ),
        "encryption": _choice(
            ("kms", "none"), d["encryption"], "kms: the AWS managed key alias/aws/kinesis."
        ),
        "aggregated": _flag(
            d["aggregated"],
            "Producers use KPL aggregation: corrupt aggregates are dead-lettered (else data "
            "that only looks like one passes as a plain record); functions may not use "
            "filter_pushdown (AWS cannot filter aggregates) nor parallelization above 1.",
        ),
    }
    out = _object(model.STREAM_KEYS, shapes, required=("name",))
    out["description"] = "The Kinesis stream the functions consume."
    out["if"] = {"properties": {"mode": {"const": "provisioned"}}, "required": ["mode"]}
    out["then"] = {"required": ["shards"]}
    out["else"] = {"not": {"required": ["shards"]}}
    return out


def _sink() -> dict[str, Any]:
    branches = []
    for kind, settings in model.SINK_TYPES.items():
        shapes: dict[str, Any] = {"type": {"const": kind}}
        required = ["type"]
        for key, setting in settings.items():
            if setting.choices:
                shapes[key] = _choice(setting.choices, setting.default, f"{kind} sink {key}.")
                continue
            shape: dict[str, Any] = {"type": "string", "description": f"{kind} sink {key}."}
            rule = _NAME_RULES.get(setting.check) if setting.check else None
            if rule is not None:
                shape["pattern"] = _anchored(rule.pattern)
            elif setting.check is template_problem:
                shape["description"] += f" {_TEMPLATE}."
            elif key == "endpoint":
                shape["format"] = "uri"
            if setting.default:
                shape["default"] = setting.default
            if setting.required:
                required.append(key)
                shape["minLength"] = 1
            shapes[key] = _with_env(shape)
        then = _object(("type", *settings), shapes, required=required)
        branches.append({"if": {"properties": {"type": {"const": kind}}}, "then": then})
    return {
        "type": "object",
        "description": "A sink: its type and that type's settings.",
        "required": ["type"],
        "properties": {
            "type": {
                "type": "string",
                "description": "A built-in sink type, or one a plugin registers under the "
                "entry-point group shardline.sinks.",
                "examples": list(model.SINK_TYPES),
            }
        },
        "allOf": branches,
    }


def _function(d: Mapping[str, Any]) -> dict[str, Any]:
    shapes = {
        "memory_mb": _integer("function", "memory_mb", d["memory_mb"], "Lambda memory (MB)."),
        "timeout_s": _integer("function", "timeout_s", d["timeout_s"], "Lambda timeout (s)."),
        "batch": {"$ref": "#/$defs/batch"},
        "ordering": _choice(
            model.ORDERINGS,
            d["ordering"],
            "What a failure holds back in its batch: strict everything after it, per_key the "
            "later records of its partition key, none nothing.",
        ),
        "filter_pushdown": _flag(
            d["filter_pushdown"],
            "Opt in: leading match filters also become the mapping's FilterCriteria, and AWS "
            "then drops records that are not JSON silently. Not with stream.aggregated.",
        ),
        "on_failure": _text(
            "A sink of type sqs or s3 for poison records and exhausted retries; when absent, "
            "deploy creates the queue <name>-dlq."
        ),
        "processors": {
            "type": "array",
            "items": {"$ref": "#/$defs/processor"},
            "description": "The chain: filter, enrich, route, plugins; absent or [] means "
            "none (then the route shorthand sends every record).",
        },
        "route": {
            "$ref": "#/$defs/sink_list",
            "description": "Shorthand: every record goes to these sinks (no route processor).",
        },
    }
    out = _object(model.FUNCTION_KEYS, shapes)
    out["description"] = "A Lambda function consuming the stream."
    out["anyOf"] = [  # routes somewhere: the shorthand, or a route processor
        {"required": ["route"]},
        {
            "required": ["processors"],
            "properties": {"processors": {"contains": {"required": ["route"]}}},
        },
    ]
    return out


def _batch(d: Mapping[str, Any]) -> dict[str, Any]:
    shapes = {
        "size": _integer("batch", "size", d["size"], "Most records per invocation."),
        "window_s": _integer(
            "batch", "window_s", d["window_s"], "Seconds to gather records before invoking."
        ),
        "starting_position": _choice(
            model.STARTING_POSITIONS, d["starting_position"], "Where a new mapping starts."
        ),
        "starting_timestamp": {
            "description": "For at_timestamp: ISO-8601 (UTC without an offset) or epoch seconds.",
            "anyOf": [{"type": "string"}, {"type": "number", "minimum": 0}],
        },
        "parallelization": _integer(
            "batch", "parallelization", d["parallelization"], "Concurrent batches per shard."
        ),
        "bisect_on_error": _flag(d["bisect_on_error"], "Split a failing batch and retry halves."),
        "max_retries": _integer(
            "batch", "max_retries", d["max_retries"], "Retries of a failing batch; never -1."
        ),
        "max_record_age_s": _integer(
            "batch", "max_record_age_s", d["max_record_age_s"], "Older records go to on_failure."
        ),
    }
    out = _object(model.BATCH_KEYS, shapes)
    out["description"] = "The event source mapping's batching and retry settings."
    out["if"] = {
        "properties": {"starting_position": {"const": "at_timestamp"}},
        "required": ["starting_position"],
    }
    out["then"] = {"required": ["starting_timestamp"]}
    out["else"] = {"not": {"required": ["starting_timestamp"]}}
    return out


def _processor() -> dict[str, Any]:
    def entry(name: str) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {name: {"$ref": f"#/$defs/{name}"}},
            "required": [name],
            "additionalProperties": False,
        }

    if set(BUILTIN_PROCESSORS) != {"filter", "enrich", "route"}:
        msg = (
            "deploy.pipeline.jsonschema describes filter, enrich, route; "
            f"built-ins: {BUILTIN_PROCESSORS}"
        )
        raise RuntimeError(msg)
    return {
        "description": "A one-key map '- NAME: ARGS': a built-in, a plugin registered under "
        "shardline.processors, or '- use: pkg.mod:Class' with 'with: {...}'.",
        "anyOf": [
            *(entry(name) for name in BUILTIN_PROCESSORS),
            {
                "type": "object",
                "properties": {
                    "use": {"type": "string", "pattern": _IMPORT_PATH},
                    "with": {"type": "object"},
                },
                "required": ["use"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "minProperties": 1,
                "maxProperties": 1,
                "propertyNames": {"not": {"enum": [*BUILTIN_PROCESSORS, "use", "with"]}},
                "description": "A plugin processor: its arguments are its own.",
            },
        ],
    }


def _filter() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "Keep the records that match (both, when both are given).",
        "properties": {
            "match": {"$ref": "#/$defs/pattern"},
            "expr": {"type": "string", "description": "A JMESPath expression; truthy keeps."},
        },
        "additionalProperties": False,
        "minProperties": 1,
    }


def _enrich() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "Add fields: a DynamoDB item (lookup), then set, then timestamp.",
        "properties": {
            "set": {"type": "object", "minProperties": 1, "description": "Fields to set."},
            "timestamp": {"type": "string", "description": "Field for the processing time."},
            "lookup": {"$ref": "#/$defs/lookup"},
        },
        "additionalProperties": False,
        "minProperties": 1,
    }


def _lookup(d: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "description": "The item of a DynamoDB table keyed by a record field.",
        "properties": {
            "table": _text("The table, used exactly as written.", minLength=1),
            "key": _text("The record field holding the key.", minLength=1),
            "into": _text("The field that receives the item.", minLength=1),
            "on_miss": _choice(ON_MISS, d["on_miss"], "What a record without an item does."),
            "ttl_s": _integer("lookup", "ttl_s", None, "Seconds an item is cached (300)."),
            "table_key": _text("The table's partition key, when not named like key."),
            "miss_ttl_s": _integer(
                "lookup", "miss_ttl_s", None, "Seconds a miss is cached (min(ttl_s, 60))."
            ),
            "max_entries": _integer("lookup", "max_entries", None, "Most keys cached."),
        },
        "required": ["table", "key", "into"],
        "additionalProperties": False,
    }


def _route(d: Mapping[str, Any]) -> dict[str, Any]:
    rules = {"type": "array", "items": {"$ref": "#/$defs/rule"}}
    return {
        "description": "Name the sinks of each record: a list of rules (first match), or "
        "{mode: first|all, rules: [...]}.",
        "anyOf": [
            rules,
            {
                "type": "object",
                "properties": {
                    "mode": _choice(
                        ROUTE_MODES,
                        d["mode"],
                        "first: the first rule that matches; all: every rule that matches.",
                    ),
                    "rules": rules,
                },
                "required": ["rules"],
                "additionalProperties": False,
            },
        ],
    }


def _rule() -> dict[str, Any]:
    return {
        "oneOf": [
            {
                "type": "object",
                "properties": {
                    "when": {
                        "description": "A match pattern, or a JMESPath expression (a string).",
                        "anyOf": [{"$ref": "#/$defs/pattern"}, {"type": "string"}],
                    },
                    "to": {"$ref": "#/$defs/sink_list"},
                },
                "required": ["when", "to"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {"default": {"$ref": "#/$defs/sink_list"}},
                "required": ["default"],
                "additionalProperties": False,
            },
        ]
    }
