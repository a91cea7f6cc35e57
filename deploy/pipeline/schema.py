"""Validation of the pipeline file (see CONFIG.md, the contract) into its normalised form.

:func:`validate` checks every section, reports every problem through the
:class:`~deploy.pipeline.problems.Reporter`, and returns the document with every default filled in:
the shape :func:`deploy.pipeline.config.compile_plan` turns into the JSON plan. Values are read only
through :class:`~deploy.pipeline.fields.Fields`, so messages read the same everywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from deploy.pipeline import runtime_checks
from deploy.pipeline.braces import template_problem
from deploy.pipeline.fields import Fields, as_mapping, describe, suggest
from deploy.pipeline.steps import sink_list, validate_chain

if TYPE_CHECKING:
    from collections.abc import Callable

    from deploy.pipeline.problems import Path, Reporter

TOP_KEYS = ("name", "region", "stream", "sinks", "functions", "metrics", "log_payloads")
STREAM_KEYS = ("name", "mode", "shards", "retention_hours", "encryption", "aggregated")
FUNCTION_KEYS = (
    "memory_mb", "timeout_s", "batch", "ordering", "filter_pushdown", "on_failure",
    "processors", "route",
)  # fmt: skip
BATCH_KEYS = (
    "size", "window_s", "starting_position", "starting_timestamp", "parallelization",
    "bisect_on_error", "max_retries", "max_record_age_s",
)  # fmt: skip
STREAM_MODES = ("on_demand", "provisioned")
STARTING_POSITIONS = ("trim_horizon", "latest", "at_timestamp")
ORDERINGS = ("strict", "per_key", "none")
FAILURE_SINK_TYPES = ("sqs", "s3")

_STACK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]*")
_SINK_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d+")
_STREAM_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}|[A-Za-z0-9_-]{1,75}\.fifo")
_NEVER_UNBOUNDED = (
    "{value} ({what}) is not allowed: one poison record would block a shard for up to a week, "
    "until it expires; use {lo}..{hi} and let on_failure keep what still fails"
)


def _matches(regex: re.Pattern[str], rule: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if regex.fullmatch(value) else f"invalid name {value!r}: {rule}"

    return check


def _named(what: str, limit: int) -> Callable[[str], str | None]:
    """Check for names that become AWS resource names: letters, digits, hyphens."""

    def check(value: str) -> str | None:
        if not _STACK_NAME.fullmatch(value):
            return (
                f"invalid name {value!r}: use letters, digits and hyphens, starting with a "
                f"letter ({what})"
            )
        if len(value) > limit:
            return f"name is {len(value)} characters long, at most {limit} allowed ({what})"
        return None

    return check


def _url(value: str) -> str | None:
    parts = urlsplit(value)
    if parts.scheme in ("http", "https") and parts.netloc:
        return None
    return f"expected a URL like https://search-domain.us-east-1.es.amazonaws.com, got {value!r}"


def _region(value: str) -> str | None:
    if _REGION.fullmatch(value):
        return None
    return f"expected an AWS region like us-east-1, got {value!r}"


_stream_name = _matches(_STREAM_NAME, "1-128 letters, digits, '_', '-' or '.'")
_table_name = _matches(_TABLE_NAME, "3-255 letters, digits, '_', '-' or '.'")
_bucket_name = _matches(_BUCKET_NAME, "3-63 lowercase letters, digits, '.' or '-'")
_queue_name = _matches(_QUEUE_NAME, "1-80 letters, digits, '_' or '-' (optional .fifo)")


@dataclass(frozen=True)
class _Setting:
    """One setting of a built-in sink type: a string, or one of ``choices``."""

    required: bool = False
    default: str | None = None
    choices: tuple[str, ...] = ()
    check: Callable[[str], str | None] | None = None


_REQUIRED = _Setting(required=True)

# Settings per built-in sink type, in the order the plan lists them.
SINK_TYPES: dict[str, dict[str, _Setting]] = {
    "dynamodb": {
        "table": _Setting(required=True, check=_table_name),
        "key": _REQUIRED,
        "mode": _Setting(default="latest", choices=("latest", "append")),
    },
    "opensearch": {
        "endpoint": _Setting(required=True, check=_url),
        "index": _Setting(required=True, check=template_problem),
        "id": _Setting(),
        "auth": _Setting(default="sigv4", choices=("sigv4", "none")),
    },
    "s3": {
        "bucket": _Setting(required=True, check=_bucket_name),
        "prefix": _Setting(default="", check=template_problem),
        "partition": _Setting(check=template_problem),
        "compression": _Setting(default="gzip", choices=("gzip", "none")),
    },
    "sqs": {
        "queue": _Setting(required=True, check=_queue_name),
        # where a dead letter too large for one message goes; default: the first s3 sink's
        "overflow_bucket": _Setting(check=_bucket_name),
    },
    "kinesis": {
        "stream": _Setting(required=True, check=_stream_name),
        "partition_key": _REQUIRED,
    },
    "stdout": {},
    "discard": {},  # accepts and drops everything (Vector's blackhole): benchmarks, dry runs
}


def validate(r: Reporter, doc: Any) -> dict[str, Any]:
    """Check the whole document; return it normalised (every default filled in)."""
    if doc is None:
        r.error((), "the file is empty: expected a mapping with name, stream, sinks, functions")
        return {}
    data = as_mapping(r, (), doc, "a mapping with name, stream, sinks, functions")
    if data is None:
        return {}
    f = Fields(r, (), data, TOP_KEYS)
    name = f.text("name", required=True, check=_named("it names the CloudFormation stack", 128))
    region = f.text("region", check=_region)
    # metrics: unset means "in Lambda only" (not in `invoke`, `test`, in-process runs)
    metrics = f.flag("metrics", default=True) if "metrics" in data else None
    log_payloads = f.flag("log_payloads", default=False)
    stream = _stream(r, f)
    sinks = _sinks(r, f)
    functions = _functions(r, f, sinks, aggregated=stream["aggregated"] is True)
    if name is not None:
        _generated_names(r, name, functions)
    return {
        "name": name,
        "region": region,
        "stream": stream,
        "sinks": sinks or {},
        "functions": functions,
        "metrics": metrics,
        "log_payloads": log_payloads,
    }


def _generated_names(r: Reporter, name: str, functions: dict[str, Any]) -> None:
    """AWS's limits on the names deploy makes from the pipeline's name (the template's own
    naming functions, so the two cannot drift): each at the line that sets it, so that
    ``validate`` refuses what ``template`` and ``deploy`` would."""
    from deploy.names import (  # noqa: PLC0415  # deploy's naming, loaded when used
        MAX_FUNCTION_NAME,
        MAX_QUEUE_NAME,
        dead_letter_queue_name,
        function_name,
    )

    plan = {"name": name}
    for function in functions:
        full = function_name(plan, function)
        if len(full) > MAX_FUNCTION_NAME and len(function) <= MAX_FUNCTION_NAME:
            r.error(
                ("functions", function),
                f"the Lambda function name {full!r} (pipeline name, '-', function name) is "
                f"{len(full)} characters long, AWS allows {MAX_FUNCTION_NAME}: "
                + (
                    f"shorten the pipeline's name or this one (to at most {room} characters)"
                    if (room := MAX_FUNCTION_NAME - len(name) - 1) > 0
                    else "shorten the pipeline's name (it leaves no room for function names)"
                ),
            )
    queue = dead_letter_queue_name(plan)
    if len(queue) > MAX_QUEUE_NAME and any(not f.get("on_failure") for f in functions.values()):
        r.error(
            ("name",),
            f"the dead-letter queue {queue!r} made for functions without on_failure is "
            f"{len(queue)} characters long, SQS allows {MAX_QUEUE_NAME}: shorten the name, or "
            "give every function an on_failure sink",
        )


def _stream(r: Reporter, top: Fields) -> dict[str, Any]:
    given = top.mapping("stream", required=True)
    data = given or {}
    f = Fields(r, ("stream",), data, STREAM_KEYS)
    name = f.text("name", required=given is not None, check=_stream_name)
    mode = f.choice("mode", STREAM_MODES, default="on_demand")
    mode_ok = data.get("mode", "on_demand") in STREAM_MODES
    shards = None
    if mode_ok and mode == "provisioned":
        if not f.has("shards"):
            r.error(f.at("shards"), "required when mode is provisioned (a number of shards, >= 1)")
        shards = f.integer("shards", default=None, lo=1)
    elif mode_ok and "shards" in data:
        r.error(
            f.at("shards"),
            "only for mode: provisioned (on_demand scales shards itself); remove it or set "
            "mode: provisioned",
        )
    return {
        "name": name,
        "mode": mode,
        "shards": shards,
        "retention_hours": f.integer("retention_hours", default=24, lo=24, hi=8760),
        "encryption": f.choice("encryption", ("kms", "none"), default="kms"),
        "aggregated": f.flag("aggregated", default=False),
    }


def _sinks(r: Reporter, top: Fields) -> dict[str, dict[str, Any]] | None:
    """The sinks by name, or None when the section is missing or not a mapping."""
    data = top.mapping("sinks", required=True)
    if data is None:
        return None
    if not data:
        r.error(top.at("sinks"), "no sinks defined: functions need somewhere to send records")
    out: dict[str, dict[str, Any]] = {}
    for name, spec in data.items():
        path: Path = ("sinks", name)
        if not _SINK_NAME.fullmatch(name):
            r.error(
                path,
                f"invalid sink name {name!r}: use letters, digits, '_' and '-', "
                "starting with a letter",
            )
        out[name] = _sink(r, path, spec)
    return out


def _sink(r: Reporter, path: Path, spec: Any) -> dict[str, Any]:
    data = as_mapping(r, path, spec, "a mapping with a type and its settings")
    if data is None:
        return {"type": None}
    kind = data.get("type")
    builtins = ", ".join(SINK_TYPES)
    if kind is None:
        r.error((*path, "type"), f"required field is missing (one of {builtins}, or a plugin's)")
        return {"type": None}
    if not isinstance(kind, str):
        r.error((*path, "type"), f"expected a sink type (a string), got {describe(kind)}")
        return {"type": None}
    fields = SINK_TYPES.get(kind)
    if fields is None:
        installed = sorted(runtime_checks.sink_plugin_types() - set(SINK_TYPES))
        if kind in installed:
            # a plugin sink: its options are checked against what its class declares
            for where, problem in runtime_checks.sink_option_problems(data):
                r.error((*path, *where), problem)
            return dict(data)
        message = (
            f"unknown sink type {kind!r} (built-ins: {builtins}; "
            f"plugins: {', '.join(installed) or 'none'})"
        )
        close = suggest(kind, [*SINK_TYPES, *installed])
        message += f" — did you mean {close!r}?" if close else " — install the plugin package"
        r.error((*path, "type"), message)
        return {"type": None}
    f = Fields(r, path, data, ("type", *fields))
    out: dict[str, Any] = {"type": kind}
    for key, setting in fields.items():
        if setting.choices:
            out[key] = f.choice(key, setting.choices, default=str(setting.default))
        else:
            out[key] = f.text(
                key, required=setting.required, default=setting.default, check=setting.check
            )
    return out


def _functions(
    r: Reporter, top: Fields, sinks: dict[str, dict[str, Any]] | None, *, aggregated: bool
) -> dict[str, Any]:
    data = top.mapping("functions", required=True)
    if data is None:
        return {}
    if not data:
        r.error(top.at("functions"), "define at least one function")
    names = None if sinks is None else list(sinks)
    out: dict[str, Any] = {}
    for name, spec in data.items():
        path: Path = ("functions", name)
        problem = _named("it names the Lambda function", 64)(name)
        if problem is not None:
            r.error(path, problem)
        body = as_mapping(r, path, {} if spec is None else spec)
        if body is not None:
            out[name] = _function(r, path, body, sinks, names, aggregated=aggregated)
    return out


def _function(
    r: Reporter,
    path: Path,
    data: dict[str, Any],
    sinks: dict[str, Any] | None,
    names: list[str] | None,
    *,
    aggregated: bool,
) -> dict[str, Any]:
    f = Fields(r, path, data, FUNCTION_KEYS)
    processors: list[dict[str, Any]] = []
    has_route = False
    if "processors" in data:  # absent means none: `route: [sinks]` alone is a whole function
        processors, has_route = validate_chain(r, f.at("processors"), data["processors"], names)
    route: list[str] | None = None
    if data.get("route") is not None:
        route = sink_list(r, f.at("route"), data["route"], names)
        if has_route:
            r.error(
                f.at("route"),
                "both a route processor and the route shorthand: keep one (the shorthand "
                "sends every record to its sinks, a route processor chooses per record)",
            )
    elif not has_route and not _misspelt(data, ("processors", "route")):
        # (a misspelt 'processors' or 'route' is already reported as an unknown key: one
        # typo, one error)
        example = names[0] if names else "SINK"
        r.error(
            path,
            f"routes nowhere: add 'route: [{example}]' to send every record to a sink, "
            "or a '- route:' processor with rules",
        )
    batch = _batch(r, f)
    if aggregated and batch["parallelization"] > 1:
        r.error(
            (*f.at("batch"), "parallelization"),
            f"{batch['parallelization']} lanes with stream.aggregated: true: AWS's "
            "ParallelizationFactor does not work with KPL aggregation (Lambda picks a lane by "
            "the aggregate's outer partition key, so the records of one user key interleave "
            "across lanes and lose their order); set parallelization: 1 and add shards for "
            "throughput, or stop aggregating",
        )
    pushdown = f.flag("filter_pushdown", default=False)
    if pushdown is True and aggregated:
        r.error(
            f.at("filter_pushdown"),
            "not with stream.aggregated: true: AWS cannot apply FilterCriteria to KPL "
            "aggregates (no aggregate's data is JSON, so every one would be dropped with all "
            "its user records); remove filter_pushdown and let the function's filters drop",
        )
    elif pushdown is True:
        r.note(
            f.at("filter_pushdown"),
            "leading match filters also become the mapping's FilterCriteria: AWS drops "
            "records whose data is not JSON before invoking the function, silently (no dead "
            "letter); `run`, `invoke` and `test` drop and count them the same way",
        )
    return {
        "memory_mb": f.integer("memory_mb", default=256, lo=128, hi=10240),
        "timeout_s": f.integer("timeout_s", default=60, lo=1, hi=900),
        "batch": batch,
        "ordering": f.choice("ordering", ORDERINGS, default="per_key"),
        "filter_pushdown": pushdown,
        "on_failure": _on_failure(r, f, sinks),
        "processors": processors,
        "route": route,
    }


def _misspelt(data: dict[str, Any], keys: tuple[str, ...]) -> bool:
    """Whether an unknown key of ``data`` reads as one of ``keys`` misspelt."""
    return any(suggest(str(key), FUNCTION_KEYS) in keys for key in data if key not in FUNCTION_KEYS)


def _on_failure(r: Reporter, f: Fields, sinks: dict[str, Any] | None) -> str | None:
    name = f.text("on_failure")
    if name is None or sinks is None:
        return name
    if name not in sinks:
        r.error(f.at("on_failure"), f"unknown sink {name!r} (known: {', '.join(sinks) or 'none'})")
    elif sinks[name].get("type") not in (*FAILURE_SINK_TYPES, None):
        r.error(
            f.at("on_failure"),
            f"sink {name!r} is of type {sinks[name]['type']}; on_failure needs a sink of type "
            "sqs or s3 (it keeps poison records and exhausted retries)",
        )
    return name


def _batch(r: Reporter, fn: Fields) -> dict[str, Any]:
    data = fn.mapping("batch") or {}
    f = Fields(r, fn.at("batch"), data, BATCH_KEYS)
    position = f.choice("starting_position", STARTING_POSITIONS, default="trim_horizon")
    return {
        "size": f.integer("size", default=100, lo=1, hi=10000),
        "window_s": f.integer("window_s", default=0, lo=0, hi=300),
        "starting_position": position,
        "starting_timestamp": _starting_timestamp(r, f, position),
        "parallelization": f.integer("parallelization", default=1, lo=1, hi=10),
        "bisect_on_error": f.flag("bisect_on_error", default=True),
        "max_retries": _bounded(f, "max_retries", default=3, lo=0, hi=10000, what="retry forever"),
        "max_record_age_s": _bounded(
            f, "max_record_age_s", default=86400, lo=60, hi=604800, what="no age limit"
        ),
    }


def _bounded(f: Fields, key: str, *, default: int, lo: int, hi: int, what: str) -> int | None:
    """AWS's ``-1`` means unbounded; a pipeline must never ask for it, and is told why."""
    value = f.data.get(key)
    if value == -1 and not isinstance(value, bool):
        f.r.error(f.at(key), _NEVER_UNBOUNDED.format(value=value, what=what, lo=lo, hi=hi))
        return default
    return f.integer(key, default=default, lo=lo, hi=hi)


def _starting_timestamp(r: Reporter, f: Fields, position: str) -> int | float | None:
    """Epoch seconds for ``at_timestamp``; ISO text without an offset is taken as UTC."""
    value = f.data.get("starting_timestamp")
    at = f.at("starting_timestamp")
    if position != "at_timestamp":
        if value is not None:
            r.error(at, "only used with starting_position: at_timestamp")
        return None
    expected = "an ISO-8601 timestamp like 2024-05-01T00:00:00Z, or epoch seconds"
    if value is None:
        r.error(at, f"required when starting_position is at_timestamp ({expected})")
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            seconds = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
            return int(seconds) if seconds.is_integer() else seconds
    r.error(at, f"expected {expected}, got {describe(value)}")
    return None
