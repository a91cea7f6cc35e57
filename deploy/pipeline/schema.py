"""Validation of the pipeline file (see CONFIG.md, the contract) into its normalised form.

:func:`validate` checks every section, reports every problem through the
:class:`~deploy.pipeline.problems.Reporter`, and returns the document with every default filled in:
the shape :func:`deploy.pipeline.config.compile_plan` turns into the JSON plan. Values are read only
through :class:`~deploy.pipeline.fields.Fields`, so messages read the same everywhere.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from deploy.pipeline import runtime_checks, spec
from deploy.pipeline.braces import clock_problem, template_problem
from deploy.pipeline.fields import Fields, as_mapping, describe, suggest
from deploy.pipeline.steps import sink_list, validate_chain

if TYPE_CHECKING:
    from collections.abc import Callable

    from deploy.pipeline.problems import Path, Reporter
    from deploy.pipeline.spec import Key

TOP_KEYS = tuple(spec.TOP)
STREAM_KEYS = tuple(spec.STREAM)
FUNCTION_KEYS = tuple(spec.FUNCTION)
BATCH_KEYS = tuple(spec.BATCH)
STREAM_MODES = spec.STREAM["mode"].enum
STARTING_POSITIONS = spec.BATCH["starting_position"].enum
ORDERINGS = spec.FUNCTION["ordering"].enum
FAILURE_SINK_TYPES = ("sqs", "s3")

_STACK_NAME = re.compile(spec.STACK_NAME)
_SINK_NAME = re.compile(spec.SINK_NAME)
_IMPORT_PATH = re.compile(spec.IMPORT_PATH)
_REGION = re.compile(str(spec.TOP["region"].pattern))
_NEVER_UNBOUNDED = (
    "{value} ({what}) is not allowed: one poison record would block a shard for up to a week, "
    "until it expires; use {lo}..{hi} and let on_failure keep what still fails"
)


def _matches(regex: re.Pattern[str], rule: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if regex.fullmatch(value) else f"invalid name {value!r}: {rule}"

    return check


def _named(what: str, limit: int | None) -> Callable[[str], str | None]:
    """Check for names that become AWS resource names: letters, digits, hyphens."""

    def check(value: str) -> str | None:
        if not _STACK_NAME.fullmatch(value):
            return (
                f"invalid name {value!r}: use letters, digits and hyphens, starting with a "
                f"letter ({what})"
            )
        if limit is not None and len(value) > limit:
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


def _check(key: Key) -> Callable[[str], str | None] | None:
    """The check of a string key whose rule the spec states: a name pattern, a template or
    a URL (keys with a message of their own, the stack name and region, get theirs)."""
    if key.pattern is not None and key.rule is not None:
        return _matches(re.compile(key.pattern), key.rule)
    if key.template:
        return template_problem
    if key.url:
        return _url
    return None


#: Settings per built-in sink type, in the order the plan lists them (see spec.SINK_TYPES).
SINK_TYPES = spec.SINK_TYPES
_SINK_CHECKS = {
    (kind, key): _check(setting)
    for kind, settings in SINK_TYPES.items()
    for key, setting in settings.items()
}
_stream_name = _check(spec.STREAM["name"])


def validate(r: Reporter, doc: Any) -> dict[str, Any]:
    """Check the whole document; return it normalised (every default filled in)."""
    if doc is None:
        r.error((), "the file is empty: expected a mapping with name, stream, sinks, functions")
        return {}
    data = as_mapping(r, (), doc, "a mapping with name, stream, sinks, functions")
    if data is None:
        return {}
    f = Fields(r, (), data, TOP_KEYS)
    top = spec.TOP
    name = f.read(
        "name", top["name"], _named("it names the CloudFormation stack", top["name"].max_length)
    )
    region = f.read("region", top["region"], _region)
    # metrics: unset means "in Lambda only" (not in `invoke`, `test`, in-process runs)
    metrics = f.flag("metrics", default=True) if "metrics" in data else None
    log_payloads = f.read("log_payloads", top["log_payloads"])
    stream = _stream(r, f)
    sinks = _sinks(r, f)
    functions = _functions(r, f, sinks, aggregated=stream["aggregated"] is True)
    _shared_readers(r, functions)
    _loops(r, stream["name"], sinks or {}, functions)
    if metrics is False:
        _silent_dead_letters(r, functions, sinks or {})
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


def _loops(
    r: Reporter, stream: str | None, sinks: dict[str, Any], functions: dict[str, Any]
) -> None:
    """A ``kinesis`` sink that writes to the pipeline's own stream feeds every function the
    records it wrote. A function that sends every record there with no step at all can
    never stop (each record comes back, forever, each time a new position: no sink's
    idempotency helps): an error. With steps, a filter may drop what came back: a note."""
    for sink, options in sinks.items():
        if options.get("type") != "kinesis" or stream is None or options.get("stream") != stream:
            continue
        endless = [
            name for name, fn in functions.items()
            if not fn.get("processors") and sink in (fn.get("route") or ())
        ]  # fmt: skip
        for name in endless:
            r.error(
                ("functions", name, "route"),
                f"sink {sink!r} writes to this pipeline's own stream {stream!r}, and this "
                "function sends it every record with no step: each comes back to it and is "
                "written again, forever; write to another stream, or filter out what the "
                "function wrote (a field it sets)",
            )
        if not endless:
            r.note(
                ("sinks", sink, "stream"),
                f"the pipeline's own stream {stream!r}: what this sink writes comes back to "
                "every function; make sure their filters drop it, or records cycle forever",
            )


def _silent_dead_letters(r: Reporter, functions: dict[str, Any], sinks: dict[str, Any]) -> None:
    """A note when ``metrics: false`` leaves a function's dead letters without an alarm: in
    an ``s3`` on_failure bucket they are heard of through the function's
    ``RecordsDeadLettered`` metric only (a bucket has no per-minute object count; its
    request metrics alarm covers what Lambda itself writes under ``aws/lambda/``). A
    queue's depth alarm needs no metric of ours."""
    silent = [
        name for name, fn in functions.items()
        if (sinks.get(fn.get("on_failure") or "") or {}).get("type") == "s3"
    ]  # fmt: skip
    if silent:
        r.note(
            ("metrics",),
            f"with metrics off, dead letters of {', '.join(silent)} in an s3 "
            "on_failure bucket raise no alarm (the template alarms on each function's "
            "RecordsDeadLettered metric, which is not sent); leave metrics on, or give "
            "them an sqs on_failure (its depth alarm needs no metric)",
        )


#: More shared-throughput functions than this on one stream slow each other down noticeably.
SHARED_READERS_NOTED = 2


def _shared_readers(r: Reporter, functions: dict[str, Any]) -> None:
    """A note (not an error) when more than two functions share the stream's read throughput:
    each shard's 5 reads/s and 2 MB/s are split among them (AWS advises at most two)."""
    shared = [
        name for name, fn in functions.items() if (fn.get("batch") or {}).get("consumer") != "efo"
    ]
    if len(shared) > SHARED_READERS_NOTED:
        r.note(
            ("functions",),
            f"{len(shared)} functions share each shard's 5 reads/s and 2 MB/s "
            f"({', '.join(shared)}): each gets 1/{len(shared)} of them, so every one reads and "
            "delivers more slowly than alone; give the busiest 'batch: {consumer: efo}' "
            "(enhanced fan-out: 2 MB/s per shard of its own; `shardline cost` prices it)",
        )


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
    keys = spec.STREAM
    mode = f.read("mode", keys["mode"])
    mode_ok = data.get("mode", keys["mode"].default) in STREAM_MODES
    shards = None
    if mode_ok and mode == "provisioned":
        if not f.has("shards"):
            r.error(f.at("shards"), "required when mode is provisioned (a number of shards, >= 1)")
        shards = f.read("shards", keys["shards"])
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
        "retention_hours": f.read("retention_hours", keys["retention_hours"]),
        "encryption": f.read("encryption", keys["encryption"]),
        "aggregated": f.read("aggregated", keys["aggregated"]),
    }


def _sinks(r: Reporter, top: Fields) -> dict[str, dict[str, Any]] | None:
    """The sinks by name, or None when the section is missing or not a mapping."""
    data = top.mapping("sinks", required=True)
    if data is None:
        return None
    if not data:
        r.error(top.at("sinks"), "no sinks defined: functions need somewhere to send records")
    out: dict[str, dict[str, Any]] = {}
    for name, entry in data.items():
        path: Path = ("sinks", name)
        if not _SINK_NAME.fullmatch(name):
            r.error(
                path,
                f"invalid sink name {name!r}: use letters, digits, '_' and '-', "
                "starting with a letter",
            )
        out[name] = _sink(r, path, entry)
    return out


def _sink(r: Reporter, path: Path, spec: Any) -> dict[str, Any]:
    data = as_mapping(r, path, spec, "a mapping with a type and its settings")
    if data is None:
        return {"type": None}
    if "use" in data:
        return _use_sink(r, path, data)
    kind = data.get("type")
    builtins = ", ".join(SINK_TYPES)
    if kind is None:
        r.error(
            (*path, "type"),
            f"required field is missing (one of {builtins}, or a plugin's; or name the "
            'class: use: "module:Class" with with: {...})',
        )
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
        out[key] = f.read(key, setting, _SINK_CHECKS[kind, key])
        if setting.template and isinstance(out[key], str):
            # the sinks' idempotency under redelivery: CONFIG.md allows {now:FMT}, so a note
            clock = clock_problem(out[key])
            if clock is not None:
                r.note(f.at(key), clock)
    return out


def _use_sink(r: Reporter, path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """A sink named by import path, as a processor is: ``use: "module:Class"`` and its
    options under ``with:`` (the module may sit beside the pipeline file; ``package`` ships
    it). Compiled to ``{"type": PATH, "use": PATH, **options}``: the runtime's registry
    builds it from ``use``, and ``type`` keeps the shape every plan sink has."""
    if "type" in data:
        r.error(
            (*path, "type"),
            "a sink takes type or use, not both: use names its class, type a registered one",
        )
    for key in data:
        if key not in spec.USE and key != "type":
            r.error(
                (*path, key),
                f"unknown key {key!r}: a use: sink takes its options under with: "
                f"(with: {{{key}: ...}}), as a processor's use: does",
            )
    f = Fields(r, path, {k: v for k, v in data.items() if k in spec.USE}, tuple(spec.USE))
    target = f.read("use", spec.USE["use"])
    options = f.read("with", spec.USE["with"])
    options = dict(options) if isinstance(options, dict) else {}
    for key in ("type", "use"):
        if key in options:
            r.error((*path, "with", key), f"{key!r} cannot be an option: it names the sink")
    if not isinstance(target, str):
        return {"type": None}
    if not _IMPORT_PATH.fullmatch(target):
        expected = "an import path like 'package.module:Class'"
        r.error(f.at("use"), f"expected {expected}, got {target!r}")
        return {"type": None}
    problem = runtime_checks.load_problem(target, pipeline_file=r.file)  # beside the file too
    if problem is not None:
        r.error(f.at("use"), problem)
        return {"type": None}
    out = {"type": target, "use": target, **options}
    for where, message in runtime_checks.sink_option_problems(out):
        r.error((*path, "with", *where), message)
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
    for name, entry in data.items():
        path: Path = ("functions", name)
        problem = _named("it names the Lambda function", spec.FUNCTION_NAME_MAX)(name)
        if problem is not None:
            r.error(path, problem)
        body = as_mapping(r, path, {} if entry is None else entry)
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
    windows = [p for p in processors if isinstance(p, dict) and "window" in p]
    if windows and batch["parallelization"] > 1:
        # lanes mode (issue 16): each window remembers the partition keys it holds
        r.note(
            (*f.at("batch"), "parallelization"),
            f"{batch['parallelization']} lanes with a window step: partition records by the "
            "window key; a window whose records come from more than 16 partition keys "
            "dead-letters the record that would pass that, with the reason (README, "
            '"Windows": lanes)',
        )
    keys = spec.FUNCTION
    ordering = f.read("ordering", keys["ordering"])
    if ordering == "strict" and batch["parallelization"] > 1:
        r.error(
            f.at("ordering"),
            f"strict with {batch['parallelization']} lanes (batch.parallelization): lanes split "
            "a shard's records by partition key and run their batches at the same time, so a "
            "failure holds back only its own lane and later records of other keys are written "
            "past it; use ordering: per_key (what lanes keep), or parallelization: 1 for "
            "strict shard order",
        )
    pushdown = f.read("filter_pushdown", keys["filter_pushdown"])
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
        "memory_mb": f.read("memory_mb", keys["memory_mb"]),
        "timeout_s": f.read("timeout_s", keys["timeout_s"]),
        "batch": batch,
        "ordering": ordering,
        "filter_pushdown": pushdown,
        "on_failure": _on_failure(r, f, sinks),
        "processors": processors,
        "route": route,
    }


def _misspelt(data: dict[str, Any], keys: tuple[str, ...]) -> bool:
    """Whether an unknown key of ``data`` reads as one of ``keys`` misspelt."""
    return any(suggest(str(key), FUNCTION_KEYS) in keys for key in data if key not in FUNCTION_KEYS)


def _on_failure(r: Reporter, f: Fields, sinks: dict[str, Any] | None) -> str | None:
    name: str | None = f.read("on_failure", spec.FUNCTION["on_failure"])
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
    keys = spec.BATCH
    position = f.read("starting_position", keys["starting_position"])
    return {
        "size": f.read("size", keys["size"]),
        "window_s": f.read("window_s", keys["window_s"]),
        "starting_position": position,
        "starting_timestamp": _starting_timestamp(r, f, position),
        "parallelization": f.read("parallelization", keys["parallelization"]),
        "bisect_on_error": f.read("bisect_on_error", keys["bisect_on_error"]),
        "max_retries": _bounded(f, "max_retries", what="retry forever"),
        "max_record_age_s": _bounded(f, "max_record_age_s", what="no age limit"),
        "consumer": f.read("consumer", keys["consumer"]),
    }


def _bounded(f: Fields, key: str, *, what: str) -> int | None:
    """AWS's ``-1`` means unbounded; a pipeline must never ask for it, and is told why."""
    setting = spec.BATCH[key]
    value = f.data.get(key)
    if value == -1 and not isinstance(value, bool):
        bounds = {"lo": setting.minimum, "hi": setting.maximum}
        f.r.error(f.at(key), _NEVER_UNBOUNDED.format(value=value, what=what, **bounds))
        return int(setting.default)
    read: int | None = f.read(key, setting)
    return read


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
            if seconds >= 0:
                return int(seconds) if seconds.is_integer() else seconds
            r.error(at, f"{value!r} is before 1970 (epoch 0), which no stream holds: "
                    "use a time within the stream's retention")  # fmt: skip
            return None
    r.error(at, f"expected {expected}, got {describe(value)}")
    return None
