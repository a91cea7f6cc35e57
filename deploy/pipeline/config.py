"""Load, validate and compile the pipeline file (the contract is CONFIG.md).

The operator's side reads YAML once; Lambda never does. :func:`load_config` parses and
validates the file and raises one :class:`ConfigError` with *every* problem, each printed as
``FILE:LINE: path: message``. :func:`compile_plan` turns a valid config into the JSON plan
that the runtime loads with orjson, with every default filled in so the runtime needs neither
PyYAML nor knowledge of defaults.

Steps, in order: YAML with line numbers (:mod:`deploy.pipeline.yamlload`), ``${VAR}`` interpolation
from the environment while loading (so the values checked are the final ones), then
validation and normalisation (:mod:`deploy.pipeline.schema`).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deploy.names import window_tables
from deploy.pipeline.deployable import plan_problems
from deploy.pipeline.problems import ConfigError, Problem, Reporter
from deploy.pipeline.pushdown import filter_criteria
from deploy.pipeline.runtime_checks import drops_every_record
from deploy.pipeline.schema import validate
from deploy.pipeline.yamlload import load_yaml
from stream.plan import PLAN_VERSION

if TYPE_CHECKING:
    from collections.abc import Mapping

    from deploy.pipeline.problems import Path as DocPath
    from sinks.base import Sink
    from stream.plan import Plan, SinkSpec
    from stream.runtime import BuildFailure

__all__ = [
    "PLAN_VERSION",
    "ConfigError",
    "PipelineConfig",
    "Problem",
    "compile_plan",
    "load_config",
    "load_plan_from_file",
    "parse_config",
]


@dataclass(frozen=True)
class PipelineConfig:
    """A validated pipeline file.

    Attributes:
        source: the file name as given, for messages.
        document: the file's content after ``${VAR}`` interpolation, as written.
        normalized: the validated content with every default filled in.
        lines: line (1-based) of every mapping key and list item, by document path; later
            steps (deploy, local run) use it to point their own errors at the file.
        notes: what ``validate`` tells the user without failing (e.g. what
            ``filter_pushdown`` does to records that are not JSON), in line order.
    """

    source: str
    document: dict[str, Any]
    normalized: dict[str, Any]
    lines: Mapping[DocPath, int]
    notes: tuple[Problem, ...] = ()

    def line_of(self, path: DocPath) -> int:
        """The line of ``path``, or of its nearest ancestor in the file."""
        return Reporter(self.source, self.lines).line_of(path)


def parse_config(
    text: str, *, source: str = "<string>", env: Mapping[str, str] | None = None
) -> PipelineConfig:
    """Validate pipeline YAML given as text; ``source`` names it in messages.

    Raises:
        ConfigError: with every problem found, in line order.
    """
    lines: dict[DocPath, int] = {}
    reporter = Reporter(source, lines)
    document = load_yaml(text, reporter, lines, os.environ if env is None else env)
    if document is None and reporter.problems:  # broken YAML: nothing to validate
        raise ConfigError(reporter.sorted_problems())
    normalized = validate(reporter, document)
    notes = tuple(sorted(reporter.notes, key=lambda p: p.line))
    cfg = PipelineConfig(source, document, normalized, lines, notes)
    plan = _check_builds(reporter, cfg)  # also beside the problems found so far: one run says all
    if plan is not None and not reporter.problems:
        for path, message in plan_problems(plan):  # what AWS would refuse: template and deploy do
            reporter.error(path, message)
    if reporter.problems:
        raise ConfigError(reporter.sorted_problems())
    return cfg


def _check_builds(r: Reporter, cfg: PipelineConfig) -> Plan | None:
    """Build every function's steps and sinks with the runtime's own builder
    (:func:`stream.runtime.build_runner`), as a Lambda cold start does, and report what
    raises at the line of the step or sink: a plugin that refuses its arguments or does
    not import fails here, not on every invocation; and ask every plugin for its IAM
    statements (what ``template`` grants), reporting one IAM would refuse. Constructors
    make no AWS clients (those are created on first use), so this touches no network. A
    sink no function uses is built too.

    It runs even when validation found problems, so that one run reports them all, but
    builds only what has none: a step or sink with a problem at, inside or around it
    (its list) is left out, since what validation normalised for it is a stand-in (its
    constructor would fail on that, not on the user's mistake); a sink with a problem is
    replaced by one that discards while its functions are built. A file whose structure
    is too broken to compile a plan (which a problem says already) builds nothing.

    Returns the plan it built from, or None when the file did not compile."""
    had_problems = bool(r.problems)
    try:
        plan = compile_plan(cfg)
    except Exception:
        if not had_problems:
            raise  # a valid file that does not compile: our bug, to be seen as one
        return None
    check = _BuildCheck(r, plan)
    for name in plan["functions"]:
        try:
            check.function(name)
        except Exception:
            if not had_problems:
                raise
            # assembled from stand-ins: built once the problems are fixed
    check.sinks()
    return plan


class _BuildCheck:
    """What :func:`_check_builds` reports, each step and sink once, none with a problem."""

    def __init__(self, r: Reporter, plan: Plan) -> None:
        self.r = r
        self.plan = plan
        self.seen: set[DocPath] = set()
        self.used: set[str] = set()

    def broken(self, where: DocPath) -> bool:
        """A problem at, in or around ``where`` (a step's list is 3 parts deep)."""
        return self.r.reported_at(where, container=len(where) - 1 if len(where) > 2 else 2)

    def report(self, prefix: DocPath, failure: BuildFailure) -> None:
        from stream.exceptions import PluginError  # noqa: PLC0415

        where = failure.where
        path = (*prefix, *where) if where[0] == "processors" else where
        if path in self.seen or self.broken(path):  # a sink of several functions: said once
            return
        if path[0] == "sinks" and path[1] not in self.plan["sinks"]:  # a route to it says so
            return
        self.seen.add(path)
        plan = self.plan
        what = f"sink {path[1]!r}" if path[0] == "sinks" else f"processor {_step_name(plan, path)}"
        exc = failure.error
        why = f"{what} fails to start: {type(exc).__name__}: {_one_line(exc)}"
        if not isinstance(exc, PluginError):  # a loading problem says its own fix
            why += (
                " (its constructor raised this while the function was being built, as at "
                "every Lambda cold start: fix its arguments)"
            )
        self.r.error(path, why)

    def _sink(self, name: str, spec: SinkSpec) -> Sink:
        """The sink a function is built with; one that discards for a sink with a problem."""
        from sinks.discard import DiscardSink  # noqa: PLC0415  # the runtime's, light
        from sinks.registry import build_sink  # noqa: PLC0415

        if self.broken(("sinks", name)):  # reported already
            return DiscardSink(name)
        return build_sink(name, spec)

    def function(self, name: str) -> None:
        """Build function ``name``; check what its plugin steps return and ask for."""
        from deploy.pipeline.runtime_checks import processor_iam_statements  # noqa: PLC0415
        from stream.runtime import build_runner, used_sinks  # noqa: PLC0415

        def on_error(failure: BuildFailure) -> None:
            self.report(("functions", name), failure)

        runner = build_runner(
            self.plan, name, sink_factory=self._sink, metrics=False, on_error=on_error
        )
        function = self.plan["functions"][name]
        self.used.update(used_sinks(function))
        for step in runner.chain.steps:
            index = int(step.name.partition("[")[2].partition("]")[0])
            path = ("functions", name, "processors", index)
            if self.broken(path) or path in self.seen:
                continue
            if not step.tracked and drops_every_record(step):
                self.r.error(
                    path,
                    f"processor {_step_name(self.plan, path)} drops every record: its code "
                    "never returns one (None means dropped). Return the record: edits made "
                    "in place reach the sinks",
                )
                continue
            try:
                processor_iam_statements(function["processors"][index])
            except ValueError as exc:
                self.r.error(path, _one_line(exc))

    def sinks(self) -> None:
        """Build the sinks no function uses; ask plugin sinks for their IAM statements."""
        from deploy.pipeline.runtime_checks import plugin_iam_statements  # noqa: PLC0415
        from sinks.registry import BUILTIN_SINKS, build_sink  # noqa: PLC0415
        from stream.runtime import BuildFailure  # noqa: PLC0415

        for name, spec in self.plan["sinks"].items():
            where: DocPath = ("sinks", name)
            if self.broken(where) or where in self.seen:
                continue
            if name not in self.used:
                try:
                    build_sink(name, spec)
                except Exception as exc:  # any failure at start is the problem to report
                    self.report((), BuildFailure(where, exc))
                    continue
            if "use" in spec or spec.get("type") not in BUILTIN_SINKS:
                try:
                    plugin_iam_statements(name, spec)
                except ValueError as exc:
                    self.r.error(where, _one_line(exc))


def _step_name(plan: Plan, path: DocPath) -> str:
    entry = plan["functions"][str(path[1])]["processors"][int(path[3])]
    return repr(entry["use"] if "use" in entry else next(iter(entry)))


def _one_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> PipelineConfig:
    """Read and validate a pipeline file; ``env`` defaults to ``os.environ``.

    The file name appears in messages exactly as given, the way the user typed it.

    Raises:
        ConfigError: with every problem found (an unreadable file is one problem).
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else f"not UTF-8 ({exc.reason})"
        raise ConfigError([Problem(source, 1, "(file)", f"cannot read: {reason}")]) from exc
    return parse_config(text, source=source, env=env)


def compile_plan(cfg: PipelineConfig) -> Plan:
    """The JSON plan for the runtime and deploy: plain data, every default explicit.

    Beyond the normalised config it applies the rules that depend on several settings:
    for a function with ``filter_pushdown: true`` (an explicit choice; validation refuses it
    on a KPL-aggregated stream, which AWS cannot filter) the leading match filters become
    ``filter_criteria`` (:mod:`deploy.pipeline.pushdown`). The stream's ``aggregated`` flag is in
    the plan's ``stream``, where the runtime reads it (:func:`stream.runtime.build_runner`).
    An SQS sink that names
    no ``overflow_bucket`` gets the first S3 sink's bucket, where dead letters too large
    for one message are written. A window step with ``state: dynamodb`` gets its table
    (:func:`deploy.names.window_table_name`), its place in the chain (``table_prefix``),
    the function's ``max_record_age_s`` (what its state must remember) and
    ``parallelization`` (above 1, its state decides redeliveries by the windows'
    high-water; at 1 by the applied position, as before issue 16).
    A ``lookup`` on the table of one of the pipeline's ``dynamodb`` sinks asks for a number
    key as its text (``number_keys: text``), as that sink writes it
    (:func:`sinks.dynamodb.key_text`): else it would never find what the sink wrote.
    """
    spec = copy.deepcopy(cfg.normalized)
    buckets = [s["bucket"] for s in spec["sinks"].values() if s.get("type") == "s3"]
    for sink in spec["sinks"].values():
        if sink.get("type") == "sqs" and not sink.get("overflow_bucket") and buckets:
            sink["overflow_bucket"] = buckets[0]
    functions = spec["functions"]
    for function in functions.values():
        function["filter_criteria"] = filter_criteria(function)
    tables = window_tables(spec)
    sink_tables = {s["table"] for s in spec["sinks"].values() if s.get("type") == "dynamodb"}
    for name, function in functions.items():
        for index, entry in enumerate(function.get("processors") or ()):
            enrich = entry.get("enrich") if isinstance(entry, dict) else None
            lookup = enrich.get("lookup") if isinstance(enrich, dict) else None
            if isinstance(lookup, dict) and lookup.get("table") in sink_tables:
                lookup["number_keys"] = "text"  # the sink writes a number key as its text
            window = entry.get("window") if isinstance(entry, dict) else None
            if isinstance(window, dict) and name in tables and window.get("state") == "dynamodb":
                window["table"] = tables[name]
                window["table_prefix"] = f"processors[{index}]/"
                # how long its closed windows and outbox entries must stay readable
                window["max_record_age_s"] = function["batch"]["max_record_age_s"]
                window["parallelization"] = function["batch"]["parallelization"]
    return {
        "version": PLAN_VERSION,
        "name": spec["name"],
        "region": spec["region"],
        "stream": spec["stream"],
        "sinks": spec["sinks"],
        "functions": functions,
        "metrics": spec["metrics"],
        "log_payloads": spec["log_payloads"],
    }


def load_plan_from_file(path: str | Path, env: Mapping[str, str] | None = None) -> Plan:
    """Load, validate and compile in one call (the CLI's and tests' usual need).

    Raises:
        ConfigError: with every problem found.
    """
    return compile_plan(load_config(path, env))
