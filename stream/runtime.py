"""Build a function's batch runner from the compiled plan (JSON, made by ``deploy``).

The plan already holds every default, so nothing here needs to know the pipeline file's
syntax, PyYAML or the CLI. Sinks are built only when a function uses them: by a route
rule, the ``route:`` shorthand or as ``on_failure``. Three settings beyond the function are
read here: ``metrics`` (overridden by ``SHARDLINE_METRICS``; see
:func:`stream.metrics.metrics_enabled`), ``log_payloads`` and ``stream.aggregated`` (what
data that only looks like a KPL aggregate is: :func:`stream.event.records_from_event`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import orjson

from processors.chain import Chain
from processors.registry import build_processor
from sinks.base import Ordering, Sink
from sinks.registry import build_sink
from stream.batch import BatchRunner
from stream.exceptions import PlanError, UnknownFunctionError
from stream.metrics import metrics_enabled
from stream.plan_version import check_version
from stream.values import FrozenValue

TYPE_CHECKING = False  # not typing's: the handler's import never loads typing (ARCHITECTURE.md)
if TYPE_CHECKING:
    from typing import Any

    from stream.plan import FunctionPlan, Plan, SinkSpec

__all__ = [
    "BuildFailure",
    "SinkFactory",
    "build_runner",
    "function_names",
    "load_plan",
    "used_sinks",
]

#: make(name, spec) -> Sink; the default builds the real sink of the spec's type.
SinkFactory = Callable[[str, "SinkSpec"], Sink]


class BuildFailure(FrozenValue):
    """A step or sink whose constructor raised while a runner was being built.

    ``where`` is its place in the plan, ``("processors", 2)`` or ``("sinks", "archive")``,
    so that ``validate`` can point at the line of the pipeline file that configures it.
    """

    __slots__ = ("error", "where")

    where: tuple[str | int, ...]
    error: Exception

    def __init__(self, where: tuple[str | int, ...], error: Exception) -> None:
        object.__setattr__(self, "where", where)  # frozen (stream.values)
        object.__setattr__(self, "error", error)


def load_plan(path: str | os.PathLike[str]) -> Plan:
    """Read a compiled plan (``shardline compile``) and check that this shardline knows it.

    Raises:
        PlanVersionError: the file is a plan of an older or newer shardline, or no plan (the
            message names the file and says to compile it again).
        PlanError: the file has no functions. Both are also a ``ValueError``.
    """
    with open(path, "rb") as file:  # not pathlib: see stream.lambda_handler
        plan = orjson.loads(file.read())
    check_version(plan, path)
    if "functions" not in plan:
        msg = f"{path}: not a shardline plan (no 'functions'); make one with `shardline compile`"
        raise PlanError(msg)
    checked: Plan = plan  # orjson gives Any; check_version has looked at it
    return checked


def function_names(plan: Plan) -> list[str]:
    """The plan's function names, in file order."""
    return list(plan["functions"])


def used_sinks(function: FunctionPlan) -> list[str]:
    """Every sink a function may write to, in the order they are first named."""
    names: list[str] = []

    def add(values: Any) -> None:
        for name in [values] if isinstance(values, str) else values or ():
            if name not in names:
                names.append(name)

    for entry in function.get("processors", ()):
        window = entry.get("window") if isinstance(entry, Mapping) else None
        if isinstance(window, Mapping) and window.get("late"):
            add(window["late"])  # where late records go
        route = entry.get("route") if isinstance(entry, Mapping) else None
        if route is None:
            continue
        rules = route.get("rules", ()) if isinstance(route, Mapping) else route
        for rule in rules:
            add(rule.get("to"))
            add(rule.get("default"))
    add(function.get("route"))
    if function.get("on_failure"):
        add(function["on_failure"])
    return names


def build_runner(
    plan: Plan,
    function: str | None = None,
    sink_factory: SinkFactory | None = None,
    *,
    metrics: bool | None = None,
    environ: Mapping[str, str] | None = None,
    on_error: Callable[[BuildFailure], None] | None = None,
    from_step: int = 0,
) -> BatchRunner:
    """The batch runner of one function of the plan.

    Args:
        plan: the compiled plan.
        function: the function's name; may be omitted when the plan has only one.
        sink_factory: builds sinks; defaults to the real sink of each spec's type.
        metrics: measure batches and emit metrics; ``None`` decides from ``environ`` and
            the plan (:func:`stream.metrics.metrics_enabled`).
        environ: the environment for that decision; default ``os.environ``.
        on_error: when given, a step or sink that raises while being built is reported to
            it and left out (a sink is replaced by one that discards), and building goes
            on: ``validate`` builds every function this way to report every failure at its
            line, with the very constructors Lambda's cold start runs. When ``None`` the
            error propagates, with a note naming the step or sink.
        from_step: build only the processors at this index and after, each named by its
            index in the file still (``processors[3].filter``): ``dlq redrive`` puts what a
            sink refused back in after a ``window`` step, which would take it for a
            redelivery (:mod:`deploy.ops.dead_letters`).

    Raises:
        UnknownFunctionError: no such function (the message lists the known ones; also a
            ``KeyError``).
        PlanError: the plan has several functions and none was named (also a ``ValueError``).
        ValueError: ``SHARDLINE_METRICS`` has a value other than 0 or 1.
    """
    functions = plan["functions"]
    if function is None:
        if len(functions) != 1:
            msg = f"the plan has {len(functions)} functions ({', '.join(functions)}): name one"
            raise PlanError(msg)
        function = next(iter(functions))
    if function not in functions:
        msg = f"no function {function!r} in the plan (known: {', '.join(functions)})"
        raise UnknownFunctionError(msg)
    spec = functions[function]
    sink_specs = plan.get("sinks", {})
    make = sink_factory or build_sink
    sinks: dict[str, Sink] = {}
    for name in used_sinks(spec):
        try:
            sinks[name] = make(name, sink_specs[name])
        except Exception as exc:
            _failed(on_error, ("sinks", name), exc, f"while building sink {name!r}")
            sinks[name] = _discard(name)
    for name in _shared_tables(plan, function, sinks):
        sinks[name].takes_final = False  # type: ignore[attr-defined]
    steps = []
    for i, entry in enumerate(spec.get("processors", ())):
        if i < from_step:
            continue
        try:
            steps.append(build_processor(i, entry, list(sink_specs)))
        except Exception as exc:
            kind = entry.get("use") or next(iter(entry), None)
            where = f"processors[{i}]" + (f" ({kind})" if kind else "")
            _failed(on_error, ("processors", i), exc, f"while building {where}")
    return BatchRunner(
        Chain(steps),
        sinks,
        default_route=spec.get("route"),
        on_failure=spec.get("on_failure"),
        ordering=Ordering(spec.get("ordering", "per_key")),
        function=function,
        pipeline=plan.get("name", ""),
        metrics=(
            metrics_enabled(plan.get("metrics"), os.environ if environ is None else environ)
            if metrics is None
            else metrics
        ),
        log_payloads=plan.get("log_payloads") is True,
        aggregated=(plan.get("stream") or {}).get("aggregated") is True,
        stream=(plan.get("stream") or {}).get("name") or "",
    )


def _shared_tables(plan: Plan, function: str, sinks: Mapping[str, Sink]) -> list[str]:
    """The function's ``dynamodb`` sinks whose table another function of the plan also
    writes (through any sink naming that table). Such a sink must not take a window's result
    as its key's only record ever (:class:`stream.records.FinalRecord`): the other
    function's records may share its key, and a result written without the condition
    would overwrite a newer one of them (review 24)."""
    specs = plan.get("sinks", {})

    def tables(fn: str) -> set[str]:
        return {
            str(specs[n].get("table"))
            for n in used_sinks(plan["functions"][fn])
            if n in specs and specs[n].get("type") == "dynamodb"
        }

    others: set[str] = set()
    for fn in plan["functions"]:
        if fn != function:
            others |= tables(fn)
    return [
        name
        for name, sink in sinks.items()
        if hasattr(sink, "takes_final")
        and name in specs
        and str(specs[name].get("table")) in others
    ]


def _failed(
    on_error: Callable[[BuildFailure], None] | None,
    where: tuple[str | int, ...],
    exc: Exception,
    note: str,
) -> None:
    """Report a constructor's failure to ``on_error``, or re-raise it with ``note`` added
    (the traceback of a Lambda init error then says which step or sink it was)."""
    if on_error is None:
        exc.add_note(note)
        raise exc
    on_error(BuildFailure(where, exc))


def _discard(name: str) -> Sink:
    from sinks.discard import DiscardSink  # noqa: PLC0415  # only for a sink that failed

    return DiscardSink(name)
