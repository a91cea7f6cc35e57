"""Validation of a function's processor chain and of sink references.

A processor entry is a one-key map ``- NAME: ARGS`` (``- use: "pkg.mod:Class"`` may add
``with:``). Built-ins are checked here in full; match patterns and JMESPath expressions are
checked by the runtime's own compilers (:mod:`deploy.pipeline.runtime_checks`), so what
validates here is what runs in Lambda. Each validator returns the entry as the plan carries
it: the route list form becomes ``{"mode": "first", "rules": [...]}``, a lookup gets its defaults.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from deploy.pipeline import contracts, runtime_checks, spec
from deploy.pipeline.fields import Fields, as_mapping, describe, suggest, unknown

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from deploy.pipeline.problems import Path, Reporter
    from stream.plan import Plan

BUILTIN_PROCESSORS = ("enrich", "filter", "route", "schema", "window")
ON_MISS = spec.LOOKUP["on_miss"].enum
ROUTE_MODES = spec.ROUTE["mode"].enum
_IMPORT_PATH = re.compile(spec.IMPORT_PATH)
_FIRST = spec.ROUTE["mode"].default
_PATTERN_EXAMPLE = "a mapping like {event_type: [click]}"


def sink_list(r: Reporter, path: Path, value: Any, sinks: Sequence[str] | None) -> list[str]:
    """A non-empty list of defined sink names (``to:``, ``default:``, ``route:``).

    An unknown name is reported at its own line, under the list's path, with the known
    sinks in file order: ``unknown sink 'order' (known: orders, search, archive, dlq)``.
    ``sinks`` is None when the ``sinks:`` section is itself broken: names are then not
    checked, since every one would be reported as unknown for the same reason.
    """
    if not isinstance(value, list):
        r.error(path, f"expected a list of sink names like [archive], got {describe(value)}")
        return []
    if not value:
        r.error(path, "empty list: name at least one sink (use a filter to drop records)")
    seen: set[str] = set()
    for i, name in enumerate(value):
        if not isinstance(name, str):
            r.error(path, f"expected a sink name, got {describe(name)}", at=(*path, i))
        elif sinks is not None and name not in sinks:
            known = ", ".join(sinks) or "none defined"
            r.error(path, f"unknown sink {name!r} (known: {known})", at=(*path, i))
        elif name in seen:
            r.error(path, f"sink {name!r} is listed twice", at=(*path, i))
        else:
            seen.add(name)
    return [name for name in value if isinstance(name, str)]


def validate_chain(
    r: Reporter, path: Path, value: Any, sinks: Sequence[str] | None
) -> tuple[list[dict[str, Any]], bool]:
    """Check a ``processors:`` list; return its plan form and whether it has a route."""
    if not isinstance(value, list):
        r.error(path, f"expected a list of processors (may be empty: []), got {describe(value)}")
        return [], False
    out: list[dict[str, Any]] = []
    route_at: Path | None = None
    for i, entry in enumerate(value):
        at = (*path, i)
        if not isinstance(entry, dict):
            shape = "a one-key mapping like '- filter: {...}'"
            r.error(at, f"expected {shape}, got {describe(entry)}")
            continue
        if "use" in entry:
            out.append(_use(r, at, entry))
            continue
        if len(entry) != 1:
            r.error(at, _entry_shape(list(entry)))
            continue
        ((name, args),) = entry.items()
        if name == "filter":
            out.append({"filter": _filter(r, (*at, name), args)})
        elif name == "enrich":
            out.append({"enrich": _enrich(r, (*at, name), args)})
        elif name == "schema":
            out.append({"schema": contracts.schema_step(r, (*at, name), args)})
        elif name == "window":
            out.append({"window": _window(r, (*at, name), args, sinks, path)})
        elif name == "route":
            if route_at is not None:
                r.error((*at, name), "only one route processor per function: merge the rules")
            route_at = (*at, name)
            out.append({"route": _route(r, (*at, name), args, sinks)})
        else:
            _plugin(r, (*at, name), name)
            out.append({name: args})
    _earlier_flushes(r, path, value, out)
    return out, route_at is not None


def _earlier_flushes(
    r: Reporter, path: Path, written: list[Any], out: list[dict[str, Any]]
) -> None:
    """A scheduled flush ticks the chain's last window step only (:mod:`stream.flush`): an
    earlier window step's flushed result, sent again after a batch of its shard, would find
    the later step's outbox past it and yield nothing there, losing a result of the later
    step. So an earlier step's windows close by records alone: its ``flush_s`` is 0 in the
    plan, and a non-zero value written is refused rather than silently not kept."""
    windows = [i for i, entry in enumerate(out) if isinstance(entry.get("window"), dict)]
    for i in windows[:-1]:
        entry = written[i].get("window") if isinstance(written[i], dict) else None
        value = entry.get("flush_s") if isinstance(entry, dict) else None
        if type(value) is int and value != 0 and out[i]["window"].get("flush_s") == value:
            r.error(
                (*path, i, "window", "flush_s"),
                f"{value} on a window step followed by another window step: a scheduled "
                "flush closes the last window step's quiet windows only (README, "
                '"Windows": scheduled flush); this step\'s windows close by records, so '
                "remove flush_s here or write 0",
            )
        out[i]["window"]["flush_s"] = 0


def _entry_shape(keys: list[str]) -> str:
    if not keys:
        return "empty processor entry: write '- NAME: ARGS'"
    shown = ", ".join(repr(k) for k in keys)
    if keys[0] in BUILTIN_PROCESSORS:
        return (
            f"a processor entry has one key, got {shown}: indent {keys[1]!r} under "
            f"{keys[0]!r}, or start a new entry with '- '"
        )
    return f"a processor entry has one key, got {shown}: write one '- NAME: ARGS' per processor"


def _pattern(r: Reporter, path: Path, value: Any) -> None:
    if as_mapping(r, path, value, f"a match pattern ({_PATTERN_EXAMPLE})") is None:
        return
    for sub, message in runtime_checks.pattern_problems(value):
        r.error((*path, *sub), message)


def _expr(r: Reporter, path: Path, value: Any) -> None:
    if not isinstance(value, str):
        r.error(path, f"expected a JMESPath expression (a string), got {describe(value)}")
        return
    problem = runtime_checks.expr_problem(value)
    if problem is not None:
        r.error(path, problem)


def _filter(r: Reporter, path: Path, args: Any) -> dict[str, Any]:
    data = as_mapping(r, path, args, "a mapping with match and/or expr")
    if data is None:
        return {}
    Fields(r, path, data, tuple(spec.FILTER))
    if "match" in data:
        _pattern(r, (*path, "match"), data["match"])
    if "expr" in data:
        _expr(r, (*path, "expr"), data["expr"])
    if "match" not in data and "expr" not in data:
        r.error(path, "needs match (a pattern), expr (a JMESPath expression), or both")
    return {k: v for k, v in data.items() if k in ("match", "expr")}


def _enrich(r: Reporter, path: Path, args: Any) -> dict[str, Any]:
    data = as_mapping(r, path, args, "a mapping with set, timestamp and/or lookup")
    if data is None:
        return {}
    f = Fields(r, path, data, tuple(spec.ENRICH))
    out: dict[str, Any] = {}
    if f.has("set"):
        out["set"] = f.mapping("set")
        if out["set"] == {}:
            r.error(f.at("set"), "empty: name at least one field to set, e.g. {source: web}")
    if f.has("timestamp"):
        out["timestamp"] = f.text("timestamp", required=True)
    if f.has("lookup"):
        out["lookup"] = _lookup(r, f.at("lookup"), f.mapping("lookup"))
    if not out:
        r.error(path, "needs at least one of set, timestamp, lookup")
    return out


def _lookup(r: Reporter, path: Path, data: dict[str, Any] | None) -> dict[str, Any]:
    """``lookup: {table, key, into, on_miss, ttl_s}``, plus optional tuning keys.

    ``table_key`` (the table's partition key, when not named like the record field),
    ``miss_ttl_s`` (default ``min(ttl_s, 60)``) and ``max_entries`` (cache size) appear in
    the plan only when given, so plans of files without them stay as they were.
    """
    if data is None:
        return {}
    keys = spec.LOOKUP
    f = Fields(r, path, data, tuple(keys))
    out: dict[str, Any] = {
        key: f.read(key, keys[key]) for key in ("table", "key", "into", "on_miss", "ttl_s")
    }
    if f.has("table_key"):
        out["table_key"] = f.text("table_key", required=True)
    miss = f.read("miss_ttl_s", keys["miss_ttl_s"])
    if miss is not None:
        from processors.lookup import DEFAULT_TTL_S  # noqa: PLC0415  # one default, light module

        ttl = out["ttl_s"] if out["ttl_s"] is not None else DEFAULT_TTL_S
        if miss > ttl:
            r.error(f.at("miss_ttl_s"), f"must not exceed ttl_s ({ttl:g}), got {miss}")
        else:
            out["miss_ttl_s"] = miss
    entries = f.read("max_entries", keys["max_entries"])
    if entries is not None:
        out["max_entries"] = entries
    return out


def _route(r: Reporter, path: Path, args: Any, sinks: Sequence[str] | None) -> dict[str, Any]:
    if isinstance(args, list):
        return {"mode": _FIRST, "rules": _rules(r, path, args, sinks)}
    data = as_mapping(r, path, args, "a list of rules or a mapping {mode: first|all, rules: [...]}")
    if data is None:
        return {"mode": _FIRST, "rules": []}
    f = Fields(r, path, data, tuple(spec.ROUTE))
    mode = f.read("mode", spec.ROUTE["mode"])
    rules = data.get("rules")
    if rules is None:
        r.error(f.at("rules"), "required field is missing (a list of rules)")
        return {"mode": mode, "rules": []}
    if not isinstance(rules, list):
        r.error(f.at("rules"), f"expected a list of rules, got {describe(rules)}")
        return {"mode": mode, "rules": []}
    return {"mode": mode, "rules": _rules(r, f.at("rules"), rules, sinks)}


def _rules(
    r: Reporter, path: Path, rules: list[Any], sinks: Sequence[str] | None
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    default_at: int | None = None
    for j, rule in enumerate(rules):
        at = (*path, j)
        data = as_mapping(r, at, rule, "a rule {when: ..., to: [...]} or {default: [...]}")
        if data is None:
            continue
        if "default" in data:
            for extra in (k for k in data if k != "default"):
                r.error((*at, extra), f"a default rule has only 'default', got {extra!r} too")
            if default_at is not None:
                r.error(at, f"only one default rule is allowed (another is rule [{default_at}])")
            else:
                default_at = j
            out.append({"default": sink_list(r, (*at, "default"), data["default"], sinks)})
        else:
            out.append(_rule(r, at, data, sinks))
    if default_at is not None and any("default" not in rule for rule in out[default_at:]):
        r.error(
            (*path, default_at),
            "the default rule must be the last rule (rules after it never run)",
        )
    return out


def _rule(
    r: Reporter, at: Path, data: dict[str, Any], sinks: Sequence[str] | None
) -> dict[str, Any]:
    f = Fields(r, at, data, tuple(spec.RULE))
    when = data.get("when")
    if when is None:
        r.error(
            f.at("when"),
            "required field is missing (a match pattern or a JMESPath expression; "
            "write the catch-all as '- default: [SINK]')",
        )
    elif isinstance(when, str):
        _expr(r, f.at("when"), when)
    elif when == {}:  # route rules run in the function only: AWS never sees them
        r.error(
            f.at("when"),
            "an empty pattern: name the fields a record must match, e.g. "
            "{event_type: [purchase]}, or write a rule for every record as '- default: [SINK]'",
        )
    else:
        _pattern(r, f.at("when"), when)
    if data.get("to") is None:
        r.error(f.at("to"), "required field is missing (a list of sink names)")
        return {"when": when, "to": []}
    return {"when": when, "to": sink_list(r, f.at("to"), data["to"], sinks)}


#: Why a window step with ``state: memory`` runs only where one process sees every record.
MEMORY_WINDOWS = (
    "state: memory keeps open windows in one process: `shardline test` and `invoke` run it; "
    "`template`, `deploy`, `dev` and `run` refuse it, since a Lambda cold start or a restart "
    "would lose open windows: use state: dynamodb (the default)"
)


def window_state_problems(plan: Plan, functions: Iterable[str] | None = None) -> list[str]:
    """The window steps of ``functions`` (default: all) whose state lives in one process:
    each loses its open windows when the process goes, so nothing that runs a function as
    Lambda does (deploy, a local run in runtimes or across restarts) may take one."""
    problems = []
    for name in functions if functions is not None else plan["functions"]:
        for index, step in enumerate(plan["functions"][name].get("processors") or ()):
            window = step.get("window")
            if isinstance(window, dict) and window.get("state") == "memory":
                problems.append(f"functions.{name}.processors[{index}].window: {MEMORY_WINDOWS}")
    return problems


_WINDOW_SETTINGS = ("key", "size_s", "slide_s", "time", "field", "allowed_lateness_s", "state",
                    "quiet_s", "flush_s")  # fmt: skip


def _window(
    r: Reporter, path: Path, args: Any, sinks: Sequence[str] | None, chain: Path
) -> dict[str, Any]:
    """``window: {key, size_s | gap_s, slide_s, time, field, allowed_lateness_s, aggregate,
    late, state, quiet_s, flush_s}``; the plan adds ``function`` (the first part of each
    ``window_id``). With ``gap_s``, session windows (:mod:`processors.session`): no
    ``size_s`` nor ``slide_s``, the lateness at most the gap."""
    from processors.session import session_problem  # noqa: PLC0415  # light, pure
    from processors.window import window_problem  # noqa: PLC0415  # light, pure

    data = as_mapping(r, path, args, "a mapping with key, size_s and aggregate")
    if data is None:
        return {}
    keys = spec.WINDOW
    f = Fields(r, path, data, tuple(keys))
    out: dict[str, Any] = {name: f.read(name, keys[name]) for name in _WINDOW_SETTINGS}
    if f.has("gap_s"):
        out["gap_s"] = gap = f.read("gap_s", keys["gap_s"])
        lateness = out["allowed_lateness_s"] or 0
        problem = session_problem(gap, out["size_s"], out["slide_s"], lateness)
        if problem is not None and isinstance(gap, int):
            where = next(k for k in ("size_s", "slide_s", "allowed_lateness_s", "gap_s")
                         if problem.startswith(k))  # fmt: skip
            r.error(f.at("gap_s" if where == "size_s" else where), problem)
    elif out["size_s"] is None and not f.has("size_s"):
        r.error(path, "needs size_s (tumbling; add slide_s for hopping) or gap_s (sessions)")
    elif isinstance(out["size_s"], int):
        problem = window_problem(out["size_s"], out["slide_s"], out["allowed_lateness_s"] or 0)
        if problem is not None:
            where = "slide_s" if problem.startswith("slide_s") else "allowed_lateness_s"
            r.error(f.at(where), problem)
    if out["state"] == "memory":
        r.note(f.at("state"), MEMORY_WINDOWS)
        _memory_flush(r, f.at("flush_s"), data.get("flush_s"), out)
    if out["time"] == "event" and not f.has("field"):
        r.error(f.at("field"), "required with time: event (the record field holding the time)")
    if out["time"] == "arrival" and f.has("field"):
        r.error(f.at("field"), "only with time: event (time: arrival reads no field)")
    out["aggregate"] = _aggregate(r, f.at("aggregate"), data.get("aggregate"))
    if f.has("late"):
        late = f.text("late", required=True)
        if late is not None and sinks is not None and late not in sinks:
            known = ", ".join(sinks) or "none defined"
            r.error(f.at("late"), f"unknown sink {late!r} (known: {known})")
        out["late"] = late
    out["function"] = str(chain[1]) if len(chain) > 1 else ""
    return {k: v for k, v in out.items() if v is not None}


def _memory_flush(r: Reporter, path: Path, written: Any, out: dict[str, Any]) -> None:
    """``flush_s`` of a ``state: memory`` window: the default is silently off (0 in the
    plan), a non-zero value written is refused as the runtime refuses it (no table for a
    flush to read). A value the key's own rules refused is not reported twice."""
    from processors.window import flush_problem  # noqa: PLC0415  # light, pure

    if type(written) is int and written == out["flush_s"]:
        problem = flush_problem(written, memory=True)
        if problem is not None:
            r.error(path, problem)
    out["flush_s"] = 0


def _aggregate(r: Reporter, path: Path, value: Any) -> dict[str, Any]:
    data = as_mapping(r, path, value, "a mapping like {purchases: count, revenue: {sum: amount}}")
    if data is None:
        return {}
    if not data:
        r.error(path, "empty: name at least one result, e.g. {purchases: count}")
    names = runtime_checks.aggregation_names()
    reserved = ("window_id", "key", "window_start", "window_end")
    for name, how in data.items():
        at = (*path, name)
        if name in reserved:
            r.error(at, f"{name!r} is a field of every result: name the aggregate otherwise")
        if isinstance(how, str):
            kind, field = how, None
        elif isinstance(how, dict) and len(how) == 1:
            ((kind, field),) = how.items()
            if not isinstance(field, str) or not field:
                r.error((*at, kind), f"expected a record field name, got {describe(field)}")
        else:
            r.error(
                at, f"expected count or {{KIND: field}} like {{sum: amount}}, got {describe(how)}"
            )
            continue
        if kind not in names:
            message = unknown("aggregation", str(kind), sorted(names))
            r.error(at if isinstance(how, str) else (*at, kind), message)
        elif kind != "count" and field is None and kind in _FIELD_AGGREGATIONS:
            r.error(at, f"{kind} needs a field: {{{kind}: FIELD}}")
    return data


_FIELD_AGGREGATIONS = ("sum", "min", "max", "avg", "distinct", "first", "last")


def _use(r: Reporter, path: Path, entry: dict[str, Any]) -> dict[str, Any]:
    f = Fields(r, path, entry, tuple(spec.USE))
    target = f.read("use", spec.USE["use"])
    options = f.read("with", spec.USE["with"])
    if target is not None:
        if not _IMPORT_PATH.fullmatch(target):
            expected = "an import path like 'package.module:Class'"
            r.error(f.at("use"), f"expected {expected}, got {target!r}")
        else:
            # a module beside the file counts
            problem = runtime_checks.load_problem(target, pipeline_file=r.file)
            if problem is not None:
                r.error(f.at("use"), problem)
    return {"use": target, "with": options if options is not None else {}}


def _plugin(r: Reporter, path: Path, name: str) -> None:
    names = runtime_checks.processor_plugin_names()
    if name in names:
        return
    installed = sorted(names - set(BUILTIN_PROCESSORS))
    message = (
        f"unknown processor {name!r} (built-ins: {', '.join(BUILTIN_PROCESSORS)}; "
        f"plugins: {', '.join(installed) or 'none'})"
    )
    close = suggest(name, sorted(names | set(BUILTIN_PROCESSORS)))
    if close is not None:
        message += f" — did you mean {close!r}?"
    else:
        message += " — install the plugin package or use `use: pkg.mod:Class`"
    r.error(path, message)
