"""Runs of built-in steps fused into one generated loop over the batch.

Why: the chain calls each step once per record, and each step calls the ``json`` property
and its compiled condition's closures: about 500 instructions per call, most of a small
step's cost. Built-in filters, ``set``/``timestamp`` enrichers and routes are configuration,
not code, so for every maximal run of them :func:`fuse` writes one Python function (once,
when the chain is built at Lambda init) that loops over the records, reads each document
once and evaluates the run's conditions inline (:mod:`processors.codegen`).

A JSON Schema step (:mod:`processors.schema`) joins a run as one call to its compiled
validator on the document the run reads anyway.

It is transparent: the same survivors in the same order, the same documents and routes, the
same ``dropped`` counts and the same failures (step, exception, message, retryable flag, in
the unfused order: step by step, record order within a step). A DecodeError is raised by the
step of the run that first reads the document, as unfused. A step is left to the plain
chain when its condition uses something codegen does not write (e.g. ``cidr``, JMESPath
functions) or that would not compile (nested past CPython's limits; codegen writes chains of
fields, pipes, ``||`` and ``&&`` flat, so only constructs such as 200 ``!`` get there), when it
is not exactly a built-in (a subclass, a hand-made ``Step``), or, for a
``timestamp`` enricher, when it is not first in its run (its ``prepare`` takes the stamp
and only a run's first step can have one). The generated source is kept on
:attr:`FusedRun.source` for debugging.
"""

from __future__ import annotations

import copy
import sys
from binascii import Error as BinasciiError
from binascii import a2b_base64

from processors.codegen import Namespace, pattern_source
from processors.step import EVENT_STEP, Step, StepFailure
from stream import records
from stream.event import KPL_MAGIC, Undeferred, undecodable
from stream.exceptions import DecodeError, RetryableError

TYPE_CHECKING = False  # not typing's: the handler's import never loads typing (ARCHITECTURE.md)
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from stream.records import Record

__all__ = ["FusedRun", "fuse"]

#: Routes in ``all`` mode precompute the sinks of every subset of matching rules.
MAX_ALL_RULES = 10
_DOC = "doc"
_IS_DICT = "is_dict"  # type(doc) is dict, set where the loop reads the document
_DROP = "    <drop>"  # a filter's line that counts a drop, numbered when the run is built

# Reading a document and marking it changed are the two Record calls left per record; for
# an exact Record or EventRecord (the handler's records: the same slots) the loop does them
# on its slots (a third of the fused loop's cost): decode as ``Record.json`` does, and on any
# error call ``rec.json`` so that the property raises its own error; ``set_json(doc)``, with
# ``doc`` already the record's document, only clears the cached bytes. Should Record change
# shape, the loop calls the property and the method.
_INLINE = (
    {"_data", "_doc"} <= set(getattr(records.Record, "__slots__", ()))
    and hasattr(records, "EventRecord")
    and hasattr(records, "_UNSET")
    and hasattr(records, "_loads")
)
_READ = ["doc = rec.json"]
_READ_INLINE = [
    "rec_type = type(rec)",
    "if rec_type is _EventRecord or rec_type is _Record:",
    "    doc = rec._doc",
    "    if doc is _UNSET:",
    "        data = rec._data",
    "        if data is None:  # still base64 in the event entry: Record._entry",
    "            fresh = True",
    "            try:",
    "                text = rec._entry['kinesis']['data']",
    "            except Exception:  # not an entry records_from_event reads blind",
    "                raise _Undeferred from None",
    "            try:",
    "                data = rec._data = _a2b_base64(text, strict_mode=True)",
    "            except (_BinasciiError, TypeError, ValueError) as exc:",
    "                failed_data.append(_undecodable(rec, text, exc))",
    "                continue",
    "        else:",
    "            fresh = False",
    "        try:",
    "            doc = rec._doc = _loads(data)",
    "        except Exception:",
    "            if fresh and data[:4] == _KPL_MAGIC:  # an aggregate to expand",
    "                raise _Undeferred from None",
    "            doc = rec.json  # raises the record's DecodeError",
    "    else:",
    "        fresh = False",
    "else:",
    "    doc = rec.json",
]
# A record a filter drops keeps only its bytes, not the document decoded from them (the
# caller's batch list still holds the record until the batch ends: ``python -m bench
# memory`` measured the documents of dropped records as a third of the handler's peak). Only
# while the bytes are the truth (no step of the run changed the document): ``rec.json``
# decodes the same document again should anything read it. A handler's record whose bytes
# this run decoded from its event entry (``fresh``) lets go of them too: the entry still
# holds them as base64 (alive anyway), and ``rec.data`` decodes them again.
_RELEASE = [
    "    if (rec_type is _EventRecord or rec_type is _Record) and rec._data is not None:",
    "        rec._doc = _UNSET",
    "        if fresh:",
    "            rec._data = None",
]
_CHANGED = ["rec.set_json(doc)"]
_CHANGED_INLINE = [  # rec_type: set by the read, which comes first in the run
    "if rec_type is _EventRecord or rec_type is _Record:",
    "    rec._data = None  # rec.set_json(doc)",
    "else:",
    "    rec.set_json(doc)",
]


class FusedRun:
    """Consecutive steps run as one generated loop.

    Attributes:
        name: the first step's name (a failing ``prepare`` is reported under it).
        steps: the steps fused, in chain order.
        decodes_data: whether the run reads every record's document before anything else
            (no ``prepare``, and its first step reads the document), decoding a record's
            base64 text itself (:func:`stream.event.records_from_event` with
            ``decode=False``) and failing bad base64 as the chain does at its ``event``
            step: what lets the handler defer base64 to it.
        prepare: the first step's batch hook, or ``None``.
        source: the generated Python source.
        run: ``run(records, failures, dropped) -> survivors``; appends failures and sets
            ``dropped[step name]`` exactly as the chain does step by step.
    """

    __slots__ = ("decodes_data", "name", "prepare", "run", "source", "steps")

    def __init__(
        self,
        steps: Sequence[Step],
        source: str,
        namespace: dict[str, Any],
        *,
        decodes_data: bool = False,
    ) -> None:
        self.steps = tuple(steps)
        self.name = steps[0].name
        self.prepare = steps[0].prepare
        self.decodes_data = decodes_data and self.prepare is None
        self.source = source
        exec(compile(source, f"<fused {self.name}>", "exec"), namespace)
        self.run: Callable[[list[Record], list[StepFailure], dict[str, int]], list[Record]]
        self.run = namespace["fused"]

    def __repr__(self) -> str:
        return f"FusedRun({', '.join(step.name for step in self.steps)})"


def fuse(steps: Sequence[Step]) -> tuple[Step | FusedRun, ...]:
    """The chain's steps with each maximal run of fusable steps replaced by a FusedRun."""
    out: list[Step | FusedRun] = []
    run: list[tuple[Step, _Part]] = []
    ns = Namespace()
    for step in steps:
        exact = any(part.exact for _, part in run)
        part = _part(step, ns, first=not run, is_dict="True" if exact else _IS_DICT)
        if part is None and run:  # a timestamp enricher starts a new run
            out.extend(_build_or_plain(run, ns))
            run, ns = [], Namespace()
            part = _part(step, ns, first=True, is_dict=_IS_DICT)
        if part is None:
            out.append(step)
        else:
            run.append((step, part))
    if run:
        out.extend(_build_or_plain(run, ns))
    return tuple(out)


def _build_or_plain(run: list[tuple[Step, _Part]], ns: Namespace) -> list[Step | FusedRun]:
    """The run fused, or, should its generated loop not compile, its steps unfused.

    The generators check each condition (:func:`processors.codegen.compiles`), so this is
    the last guard: building a chain must never fail where validation passed.
    """
    try:
        return [_build(run, ns)]
    except (SyntaxError, RecursionError, MemoryError):
        return [step for step, _ in run]


class _Part:
    """One step's share of the loop body: statements over ``rec`` and ``doc``."""

    __slots__ = ("body", "drops", "exact", "json", "setup")

    def __init__(
        self, body: list[str], *, json: bool, drops: bool = False, exact: bool = False,
        setup: str = "",
    ) -> None:  # fmt: skip
        self.body = body
        self.json = json  # reads the document, so it may fail
        self.drops = drops
        self.exact = exact  # leaves ``type(doc) is dict`` (an enricher)
        self.setup = setup


def _builtin(module: str, name: str) -> type | None:
    """The built-in class if its module is loaded (else no step can be one of them)."""
    found = getattr(sys.modules.get(module), name, None)
    return found if isinstance(found, type) else None


def _plain(step: Step, proc: Any) -> bool:
    """Whether the step runs exactly the processor's own ``__call__`` and ``prepare``."""
    run = step.run
    call = run is proc or (
        getattr(run, "__self__", None) is proc
        and getattr(run, "__func__", None) is type(proc).__call__
    )
    hook = step.prepare
    prepare = hook is None or (
        getattr(hook, "__self__", None) is proc
        and getattr(hook, "__func__", None) is getattr(type(proc), "prepare", None)
    )
    return call and prepare


def _part(step: Step, ns: Namespace, *, first: bool, is_dict: str) -> _Part | None:
    proc = step.processor
    kind = type(proc)
    if kind is _builtin("processors.filter", "Filter") and _plain(step, proc):
        return _filter(proc, ns, is_dict)
    if kind is _builtin("processors.enrich", "Enrich") and _plain(step, proc):
        return _enrich(proc, ns, first=first)
    if kind is _builtin("processors.route", "Route") and _plain(step, proc):
        return _route(proc, ns, is_dict)
    if kind is _builtin("processors.schema", "Schema") and _plain(step, proc):
        return _schema(proc, ns)
    return None


def _condition(when: Any, ns: Namespace, is_dict: str) -> str | None:
    if isinstance(when, str):
        # processors.expr (and jmespath) are loaded already: the step compiled ``when``
        from processors.codegen_expr import predicate_source  # noqa: PLC0415

        return predicate_source(when, _DOC, ns, is_dict)
    return pattern_source(when, _DOC, ns, is_dict)


def _filter(proc: Any, ns: Namespace, is_dict: str) -> _Part | None:
    tests = []
    for when in (proc.match, proc.expr):
        if when is not None:
            source = _condition(when, ns, is_dict)
            if source is None:
                return None
            tests.append(source)
    body = [f"if not ({' and '.join(tests)}):", _DROP, "    continue"]
    return _Part(body, json=True, drops=True)


def _enrich(proc: Any, ns: Namespace, *, first: bool) -> _Part | None:
    if proc.timestamp and not first:
        return None
    body = [f"if not {_IS_DICT}:", "    doc = rec.as_dict()  # raises its DecodeError"]
    for key, value in proc.fields.items():
        if isinstance(value, dict | list):  # copied per record, as Enrich does
            body.append(f"doc[{ns.literal(key)}] = _deepcopy({ns.const(value)})")
        else:
            body.append(f"doc[{ns.literal(key)}] = {ns.literal(value)}")
    setup = ""
    if proc.timestamp:
        # The chain has just called prepare(), which took the batch's stamp.
        stamp = ns.temp()
        setup = f"{stamp} = {ns.const(proc)}.stamp()"
        body.append(f"doc[{ns.literal(proc.timestamp)}] = {stamp}")
    ns.values["_deepcopy"] = copy.deepcopy
    body += _CHANGED_INLINE if _INLINE else _CHANGED
    return _Part(body, json=True, exact=True, setup=setup)


def _route(proc: Any, ns: Namespace, is_dict: str) -> _Part | None:
    rules = proc.conditions
    default = ns.const(proc.default)
    if not rules:
        return _Part([f"rec.routes = {default}"], json=False)
    tests = [_condition(when, ns, is_dict) for when, _ in rules]
    if any(test is None for test in tests):
        return None
    body: list[str] = []
    if proc.mode == "first":
        for i, (test, (_, to)) in enumerate(zip(tests, rules, strict=True)):
            body += [f"{'if' if i == 0 else 'elif'} {test}:", f"    rec.routes = {ns.const(to)}"]
        return _Part([*body, "else:", f"    rec.routes = {default}"], json=True)
    if len(rules) > MAX_ALL_RULES:
        return None
    hits = ns.temp()
    body.append(f"{hits} = 0")
    for i, test in enumerate(tests):
        body += [f"if {test}:", f"    {hits} |= {1 << i}"]
    table = ns.const(_subsets([to for _, to in rules], proc.default))
    return _Part([*body, f"rec.routes = {table}[{hits}]"], json=True)


def _schema(proc: Any, ns: Namespace) -> _Part | None:
    """A JSON Schema check on the document the run has read (an Avro step reads bytes and
    replaces the document: it runs on its own)."""
    if proc.kind != "json_schema":
        return None
    body = [f"if not {ns.const(proc.is_valid)}(doc):", f"    raise {ns.const(proc.failure)}(doc)"]
    return _Part(body, json=True)


def _subsets(targets: list[tuple[str, ...]], default: tuple[str, ...]) -> tuple[Any, ...]:
    """Route ``all``'s answer for every bit set of matching rules."""
    table = []
    for mask in range(1 << len(targets)):
        chosen: list[str] = []
        for i, to in enumerate(targets):
            if mask >> i & 1:
                chosen.extend(s for s in to if s not in chosen)
        table.append(tuple(chosen) if chosen else default)
    return tuple(table)


def _failure(record: Record, step: str, exc: Exception) -> StepFailure:
    return StepFailure(record, step, exc, isinstance(exc, RetryableError))


def _undecodable(record: Record, text: str, exc: Exception) -> StepFailure:
    """A record whose base64 the run found bad: marked and failed as the chain fails the
    ones :func:`stream.event.records_from_event` found (at its ``event`` step)."""
    record._data = undecodable(record, text, exc)
    return StepFailure(record, EVENT_STEP, DecodeError(record.error), retryable=False)


def _build(run: list[tuple[Step, _Part]], ns: Namespace) -> FusedRun:
    ns.values["_failure"] = _failure
    if _INLINE:
        ns.values["_undecodable"] = _undecodable
        ns.values["_a2b_base64"] = a2b_base64
        ns.values["_BinasciiError"] = BinasciiError
        ns.values["_Undeferred"] = Undeferred
        ns.values["_KPL_MAGIC"] = KPL_MAGIC
        ns.values["_Record"] = records.Record
        ns.values["_EventRecord"] = records.EventRecord
        ns.values["_UNSET"] = records._UNSET
        ns.values["_loads"] = records._loads
    lines = [
        "def fused(records, failures, dropped):",
        "    out = []",
        "    append = out.append",
        *(f"    dropped_{i} = 0" for i, (_, part) in enumerate(run) if part.drops),
        *(f"    failed_{i} = []" for i, (_, part) in enumerate(run) if part.json),
        *(f"    {part.setup}" for _, part in run if part.setup),
        *(["    failed_data = []"] if _INLINE else []),
        "    for rec in records:",
    ]
    read = False
    for i, (step, part) in enumerate(run):
        body = []
        for line in part.body:
            if line != _DROP:
                body.append(line)
                continue
            body.append(f"    dropped_{i} += 1")
            if _INLINE:
                body += _RELEASE
        if part.json and not read:
            body[:0] = [*(_READ_INLINE if _INLINE else _READ), f"{_IS_DICT} = type(doc) is dict"]
            read = True
        lines.append(f"        # {step.name!r}")
        if not part.json:  # no document, nothing that can raise
            lines += [f"        {line}" for line in body]
            continue
        lines.append("        try:")
        lines += [f"            {line}" for line in body]
        if _INLINE:  # the read's signal to parse the event again (stream.event.Undeferred)
            lines += ["        except _Undeferred:", "            raise"]
        lines += [
            "        except Exception as exc:",
            f"            failed_{i}.append(_failure(rec, {step.name!r}, exc))",
            "            continue",
        ]
    lines.append("        append(rec)")
    if _INLINE:
        lines += ["    if failed_data:", "        failures.extend(failed_data)"]
    for i, (step, part) in enumerate(run):
        if part.json:
            lines += [f"    if failed_{i}:", f"        failures.extend(failed_{i})"]
        if part.drops:
            lines += [f"    if dropped_{i}:", f"        dropped[{step.name!r}] = dropped_{i}"]
    lines.append("    return out")
    first_reads = _INLINE and run[0][1].json
    return FusedRun(
        [step for step, _ in run], "\n".join(lines) + "\n", ns.values, decodes_data=first_reads
    )
