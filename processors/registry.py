"""Processors by name: the built-ins, entry-point plugins, and ``use:`` import paths.

An entry of the pipeline file is a one-key map ``{NAME: ARGS}``, or ``{use: "pkg.mod:Name",
with: {...}}``. NAME is a built-in (``filter``, ``enrich``, ``route``, ``schema``,
``window``; with ``gap_s``, session windows) or a plugin registered under the entry-point
group ``shardline.processors``.
What a name resolves to may be:

* a class: called with ARGS as keyword arguments (a mapping) or as its one argument;
* a plain function: the processor itself (it takes no ARGS).

Only the modules a pipeline names are imported.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from processors.chain import Step
from stream.exceptions import PluginError
from stream.plugins import (
    PROCESSOR_GROUP,
    SINK_GROUP,
    entry_point_names,
    load_entry_point,
    load_object,
)

TYPE_CHECKING = False  # not typing's: the handler's import never loads typing (ARCHITECTURE.md)
if TYPE_CHECKING:
    from typing import Any

    from stream.plan import ProcessorEntry

__all__ = [
    "BUILTIN_PROCESSORS",
    "PluginError",
    "build_processor",
    "load_object",
    "plugin_target",
    "processor_names",
    "sink_plugin_names",
]

BUILTIN_PROCESSORS: dict[str, str] = {
    "filter": "processors.filter:Filter",
    "enrich": "processors.enrich:Enrich",
    "route": "processors.route:Route",
    "schema": "processors.schema:Schema",
    "window": "processors.window:Window",
}

#: What a ``window`` step with ``gap_s`` (session windows) is built from.
SESSION_WINDOW = "processors.session:SessionWindow"


def processor_names() -> set[str]:
    """Every processor name a pipeline may use: built-ins and installed plugins."""
    return set(BUILTIN_PROCESSORS) | entry_point_names(PROCESSOR_GROUP)


def sink_plugin_names() -> set[str]:
    """Sink types registered by installed plugins (the built-ins live in ``sinks``)."""
    return entry_point_names(SINK_GROUP)


def plugin_target(entry: ProcessorEntry) -> tuple[Any, Any] | None:
    """What a plugin entry names (its class or function, imported now) and its ARGS (the
    ``with:`` mapping for ``use:``); ``None`` for a built-in. For the operator's side:
    ``shardline template`` asks the class for its ``iam_statements``.

    Raises:
        PluginError: the name is unknown, the plugin does not load, or the entry is not a
            one-key map.
    """
    if "use" in entry:
        return load_object(entry["use"]), entry.get("with") or {}
    if len(entry) != 1:
        msg = f"an entry is a one-key map {{NAME: ARGS}}, got {sorted(entry)}"
        raise PluginError(msg)
    ((kind, args),) = entry.items()
    if kind in BUILTIN_PROCESSORS:
        return None
    return load_entry_point(PROCESSOR_GROUP, kind), args


def build_processor(
    index: int, entry: ProcessorEntry, sinks: Collection[str] | None = None
) -> Step:
    """Build the step for entry ``index`` of a function's ``processors`` list.

    Raises:
        PluginError: the name is unknown or the plugin does not load.
        ValueError: the arguments are wrong (the processor's own message).
    """
    if "use" in entry:
        path = entry["use"]
        target = load_object(path)
        args: Any = entry.get("with") or {}
        name = f"processors[{index}].use({path})"
    else:
        if len(entry) != 1:
            keys = sorted(entry)
            msg = f"processors[{index}]: an entry is a one-key map {{NAME: ARGS}}, got {keys}"
            raise PluginError(msg)
        ((kind, args),) = entry.items()
        name = f"processors[{index}].{kind}"
        if kind == "route":
            from processors.route import Route  # noqa: PLC0415  # only when used

            return Step.of(name, Route.from_config(args, sinks))
        if kind == "window" and isinstance(args, Mapping) and args.get("gap_s") is not None:
            target = load_object(SESSION_WINDOW)  # one step in the file, two shapes of state
        elif kind in BUILTIN_PROCESSORS:
            target = load_object(BUILTIN_PROCESSORS[kind])
        else:
            target = load_entry_point(PROCESSOR_GROUP, kind)
    return Step.of(name, _instantiate(name, target, args))


def _instantiate(name: str, target: Any, args: Any) -> Any:
    if isinstance(target, type):
        if args is None:
            return target()
        if isinstance(args, Mapping):
            return target(**args)
        return target(args)
    if callable(target):
        if args:
            msg = f"{name}: {target!r} is a function and takes no arguments; got {args!r}"
            raise PluginError(msg)
        return target
    msg = f"{name}: {target!r} is neither a processor class nor a function"
    raise PluginError(msg)
