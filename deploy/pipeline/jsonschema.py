"""The JSON Schema of the pipeline file, for editors (completion, hover, squiggles) and CI.

It is generated from :mod:`deploy.pipeline.spec`, the description of every key that the
validator (:mod:`deploy.pipeline.schema`, :mod:`deploy.pipeline.steps`) reads too: types,
integer ranges, choices, name patterns, defaults and descriptions. Nothing is restated here;
this module only shapes the nested sections. A key the validator accepts that this module
does not describe makes :func:`pipeline_schema` raise, so the two cannot drift apart
silently. :data:`BOUNDS` lists the integer ranges, for the tests that hold both alike.

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
from deploy.pipeline import spec
from deploy.pipeline.steps import BUILTIN_PROCESSORS

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["BOUNDS", "DRAFT", "TOP_KEYS", "pipeline_schema"]

DRAFT = "https://json-schema.org/draft/2020-12/schema"
TOP_KEYS = model.TOP_KEYS

#: The sections of the file that have integer settings, as the spec describes them.
_SECTIONS: dict[str, spec.Section] = {
    "stream": spec.STREAM,
    "function": spec.FUNCTION,
    "batch": spec.BATCH,
    "lookup": spec.LOOKUP,
}

#: Integer settings and their inclusive ranges (None: no upper bound), by section.
BOUNDS: dict[str, dict[str, tuple[int, int | None]]] = {
    section: {
        name: (int(key.minimum or 0), key.maximum)
        for name, key in keys.items()
        if key.kind == "integer"
    }
    for section, keys in _SECTIONS.items()
}

_ENV_REF = r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}"


def pipeline_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the pipeline file, as a JSON-ready dict.

    Raises:
        RuntimeError: the validator accepts a key this module does not describe (or the
            other way round); the message names it.
    """
    keys = spec.TOP
    top = {
        "name": _scalar(keys["name"]),
        "region": _scalar(keys["region"]),
        "stream": {"$ref": "#/$defs/stream"},
        "sinks": {
            "type": "object",
            "description": keys["sinks"].description,
            "minProperties": 1,
            "propertyNames": {"pattern": _anchored(spec.SINK_NAME)},
            "additionalProperties": {"$ref": "#/$defs/sink"},
        },
        "functions": {
            "type": "object",
            "description": keys["functions"].description,
            "minProperties": 1,
            "propertyNames": {
                "pattern": _anchored(spec.STACK_NAME),
                "maxLength": spec.FUNCTION_NAME_MAX,
            },
            "additionalProperties": {"$ref": "#/$defs/function"},
        },
        "metrics": _scalar(keys["metrics"]),
        "log_payloads": _scalar(keys["log_payloads"]),
    }
    return {
        "$schema": DRAFT,
        "title": "shardline pipeline file",
        "description": "A Kinesis stream and the Lambda functions that consume it "
        "(see `shardline validate`, which checks everything this schema cannot).",
        **_object(TOP_KEYS, top, required=_required(keys)),
        **_aggregated_rules(),
        "$defs": {
            "env": {
                "type": "string",
                "pattern": _ENV_REF,
                "description": "${VAR} or ${VAR:-default}, read from the environment when "
                "the file is loaded.",
            },
            "stream": _stream(),
            "sink": _sink(),
            "function": _function(),
            "batch": _batch(),
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
            "lookup": _lookup(),
            "route": _route(),
            "rule": _rule(),
            "schema": _schema(),
            "window": _window(),
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


def _required(keys: spec.Section) -> tuple[str, ...]:
    return tuple(name for name, key in keys.items() if key.required)


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
            f"not accepted {extra}; describe each accepted key in deploy/pipeline/spec.py"
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


def _scalar(key: spec.Key) -> dict[str, Any]:
    """A string, integer, boolean or enum key as the spec describes it, or a ``${VAR}``.

    An empty default (``prefix: ""``) is not shown: it tells an editor's user nothing.
    """
    shape: dict[str, Any]
    if key.kind == "enum":
        shape = {"enum": list(key.enum)}
    elif key.kind in ("string", "integer", "boolean"):
        shape = {"type": key.kind}
    else:
        msg = f"a {key.kind} key is shaped by its section, not as a scalar"
        raise TypeError(msg)
    if key.minimum is not None:
        shape["minimum"] = key.minimum
    if key.maximum is not None:
        shape["maximum"] = key.maximum
    if key.multiple_of is not None:
        shape["multipleOf"] = key.multiple_of
    if key.pattern is not None:
        shape["pattern"] = _anchored(key.pattern)
    if key.url:
        shape["format"] = "uri"
    if key.max_length is not None:
        shape["maxLength"] = key.max_length
    if key.min_length is not None:
        shape["minLength"] = key.min_length
    if key.description:
        shape["description"] = key.description
    if key.default is not None and key.default != "":
        shape["default"] = key.default
    return _with_env(shape)


def _scalars(keys: spec.Section) -> dict[str, Any]:
    """The scalar keys of a section; the others are for the caller to shape."""
    return {
        name: _scalar(key)
        for name, key in keys.items()
        if key.kind in ("string", "integer", "boolean", "enum")
    }


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


# -- sections ----------------------------------------------------------------------------------


def _stream() -> dict[str, Any]:
    out = _object(model.STREAM_KEYS, _scalars(spec.STREAM), required=_required(spec.STREAM))
    out["description"] = spec.TOP["stream"].description
    out["if"] = {"properties": {"mode": {"const": "provisioned"}}, "required": ["mode"]}
    out["then"] = {"required": ["shards"]}
    out["else"] = {"not": {"required": ["shards"]}}
    return out


def _sink() -> dict[str, Any]:
    branches = []
    for kind, settings in model.SINK_TYPES.items():
        shapes: dict[str, Any] = {"type": {"const": kind}, **_scalars(settings)}
        required = ("type", *_required(settings))
        then = _object(("type", *settings), shapes, required=required)
        # required: a use: sink has no type, which a bare const would match
        is_kind = {"properties": {"type": {"const": kind}}, "required": ["type"]}
        branches.append({"if": is_kind, "then": then})
    by_type = {"required": ["type"], "not": {"anyOf": [{"required": ["use"]},
                                                        {"required": ["with"]}]}}  # fmt: skip
    # the class by import path, its options under with: (a processor's use: entry)
    by_path = {"required": ["use"], "propertyNames": {"enum": list(spec.USE)}}
    return {
        "type": "object",
        "description": "A sink: its type and that type's settings, or use: 'pkg.mod:Class' "
        "with its options under with: {...}.",
        "properties": {
            "type": {
                "type": "string",
                "description": "A built-in sink type, or one a plugin registers under the "
                "entry-point group shardline.sinks.",
                "examples": list(model.SINK_TYPES),
            },
            "use": {
                "type": "string",
                "pattern": f"^{spec.IMPORT_PATH}$",
                "description": "The sink's class by import path, instead of a type.",
            },
            "with": {"type": "object", "description": "The options of a use: sink."},
        },
        "oneOf": [by_type, by_path],
        "allOf": branches,
    }


def _function() -> dict[str, Any]:
    keys = spec.FUNCTION
    shapes = {
        **_scalars(keys),
        "batch": {"$ref": "#/$defs/batch"},
        "processors": {
            "type": "array",
            "items": {"$ref": "#/$defs/processor"},
            "description": keys["processors"].description,
        },
        "route": {"$ref": "#/$defs/sink_list", "description": keys["route"].description},
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
    # ordering: strict with lanes, as the validator refuses it: lanes run a shard's batches
    # at once, so a failure cannot hold back the later records of other partition keys
    lanes = {"properties": {"parallelization": {"minimum": 2}}, "required": ["parallelization"]}
    out["not"] = {
        "properties": {"ordering": {"const": "strict"}, "batch": lanes},
        "required": ["ordering", "batch"],
    }
    return out


def _batch() -> dict[str, Any]:
    keys = spec.BATCH
    shapes = {
        **_scalars(keys),
        "starting_timestamp": {
            "description": keys["starting_timestamp"].description,
            "anyOf": [{"type": "string"}, {"type": "number", "minimum": 0}],
        },
    }
    out = _object(model.BATCH_KEYS, shapes)
    out["description"] = spec.FUNCTION["batch"].description
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

    if set(BUILTIN_PROCESSORS) != {"filter", "enrich", "route", "schema", "window"}:
        msg = (
            "deploy.pipeline.jsonschema describes filter, enrich, route, schema, window; "
            f"built-ins: {BUILTIN_PROCESSORS}"
        )
        raise RuntimeError(msg)
    use = {
        "use": {"type": "string", "pattern": f"^{spec.IMPORT_PATH}$"},
        "with": {"type": "object"},
    }
    return {
        "description": "A one-key map '- NAME: ARGS': a built-in, a plugin registered under "
        "shardline.processors, or '- use: pkg.mod:Class' with 'with: {...}'.",
        "anyOf": [
            *(entry(name) for name in BUILTIN_PROCESSORS),
            {
                "type": "object",
                "properties": use,
                "required": list(_required(spec.USE)),
                "additionalProperties": False,
            },
            {
                "type": "object",
                "minProperties": 1,
                "maxProperties": 1,
                "propertyNames": {"not": {"enum": [*BUILTIN_PROCESSORS, *spec.USE]}},
                "description": "A plugin processor: its arguments are its own.",
            },
        ],
    }


def _filter() -> dict[str, Any]:
    keys = spec.FILTER
    return {
        "type": "object",
        "description": "Keep the records that match (both, when both are given).",
        "properties": {
            "match": {"$ref": "#/$defs/pattern"},
            "expr": {"type": "string", "description": keys["expr"].description},
        },
        "additionalProperties": False,
        "minProperties": 1,
    }


def _enrich() -> dict[str, Any]:
    keys = spec.ENRICH
    return {
        "type": "object",
        "description": "Add fields: a DynamoDB item (lookup), then set, then timestamp.",
        "properties": {
            "set": {"type": "object", "minProperties": 1, "description": keys["set"].description},
            "timestamp": {"type": "string", "description": keys["timestamp"].description},
            "lookup": {"$ref": "#/$defs/lookup"},
        },
        "additionalProperties": False,
        "minProperties": 1,
    }


def _lookup() -> dict[str, Any]:
    keys = spec.LOOKUP
    return {
        "type": "object",
        "description": spec.ENRICH["lookup"].description,
        "properties": _scalars(keys),
        "required": list(_required(keys)),
        "additionalProperties": False,
    }


def _route() -> dict[str, Any]:
    rules = {"type": "array", "items": {"$ref": "#/$defs/rule"}}
    return {
        "description": "Name the sinks of each record: a list of rules (first match), or "
        "{mode: first|all, rules: [...]}.",
        "anyOf": [
            rules,
            {
                "type": "object",
                "properties": {"mode": _scalar(spec.ROUTE["mode"]), "rules": rules},
                "required": list(_required(spec.ROUTE)),
                "additionalProperties": False,
            },
        ],
    }


def _window() -> dict[str, Any]:
    keys = spec.WINDOW
    aggregation = {
        "anyOf": [
            {"type": "string", "description": "count, or a plugin that takes no field"},
            {
                "type": "object",
                "minProperties": 1,
                "maxProperties": 1,
                "additionalProperties": {"type": "string", "minLength": 1},
                "description": "{KIND: field}, e.g. {sum: amount}",
            },
        ]
    }
    shapes = {
        **_scalars(keys),
        "aggregate": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": aggregation,
            "description": keys["aggregate"].description,
        },
    }
    out = _object(list(keys), shapes, _required(keys))
    out["description"] = (
        "Aggregate per key over windows of event or arrival time (tumbling or hopping with "
        "size_s, sessions with gap_s); one result record per closed window."
    )
    out["oneOf"] = [{"required": ["size_s"]}, {"required": ["gap_s"]}]
    out["dependentRequired"] = {"slide_s": ["size_s"]}  # hopping only: never with gap_s
    # a scheduled flush with state: memory, as the validator refuses it: no table to read
    out["not"] = {
        "properties": {"state": {"const": "memory"}, "flush_s": {"not": {"const": 0}}},
        "required": ["state", "flush_s"],
    }
    return out


def _schema() -> dict[str, Any]:
    keys = spec.SCHEMA
    names = spec.SCHEMA_REGISTRY
    registry = _object(list(names), _scalars(names), _required(names))
    registry["description"] = keys["registry"].description
    out = _object(list(keys), {**_scalars(keys), "registry": registry})
    out["description"] = (
        "A record contract: a JSON Schema or an Avro schema file, or a schema of the Glue "
        "Schema Registry."
    )
    out["oneOf"] = [{"required": [kind]} for kind in keys]
    return out


def _rule() -> dict[str, Any]:
    return {
        "oneOf": [
            {
                "type": "object",
                "properties": {
                    "when": {
                        "description": spec.RULE["when"].description,
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
