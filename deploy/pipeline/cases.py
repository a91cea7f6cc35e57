"""Config unit tests: ``shardline test FILE``, in the style of ``benthos test`` and ``vector test``.

A test file sits beside its pipeline (``pipeline.test.yaml`` for ``pipeline.yaml``) and holds
named cases: records in, and what each sink and the dead-letter sink must get out. A case
runs one function exactly as Lambda would, in this process and with no servers: the
function's runner is built from the compiled plan (:func:`stream.runtime.build_runner`)
with in-memory sinks, the FilterCriteria pushed down to its event source mapping are
applied first, as AWS does, and a Kinesis event made from the inputs goes through it.

::

    pipeline: pipeline.yaml        # optional: by default the name without ".test"
    compare: exact                 # exact | subset (for every case; a case may override)
    now: 2026-01-01T00:00:00Z      # the clock of `enrich: timestamp` and the arrival time
    env: {OPENSEARCH_URL: http://localhost:9200}   # for ${VAR} in the pipeline file
    lookups:                       # DynamoDB items for `enrich: lookup`: table, key, item
      clickstream-users:
        u001: {name: Ada, tier: gold}
    tests:
      - name: purchases go to orders and search
        function: enrich-and-route # optional when the pipeline has one function
        lookups: {...}             # replaces the tables it names, for this case
        input:
          - json: {event_type: purchase, order_id: o1, user_id: u001, amount: 5}
            partition_key: u001    # optional, default "key"
          - text: "GET / HTTP/1.1" # raw bytes (UTF-8 of the text): malformed input
          - base64: "/w=="         # exact bytes
          - aggregate:             # one KPL-aggregated Kinesis record of these records
              - json: {...}
                partition_key: u002
        expect:
          sinks:                   # every sink the function routes to; one left out
            orders: [{...}]        # must get nothing. Records in shard order.
          dead_letters:            # each: reason (a substring), step (exact), count
            - {reason: "is not JSON", step: processors[0].filter}
          failed: 0                # reported in batchItemFailures (Lambda retries them)
          dropped: 2               # filtered out (in the function, or by pushdown: with
                                   # filter_pushdown: true the function's FilterCriteria
                                   # drop first, as in AWS, records that are not JSON too)

A record is compared as the JSON document the chain left it, as the ``stdout`` sink writes
it; data that is not JSON shows as ``{_text: ...}`` (UTF-8) or ``{_data_base64: ...}``.
``compare: exact`` wants equal documents (``true`` is not ``1``); ``compare: subset`` wants
every key the expected document gives, recursively, and ignores the others (lists still
match item for item). ``dead_letters`` and ``failed`` also take a count (any reason) or a
list of reason substrings; each expected entry claims its ``count`` (default 1) matching
records in shard order, and every record must be claimed. Left out, they mean none.

``enrich: lookup`` reads ``lookups`` through the processor's ``fetch`` option, so no
DynamoDB (and no patched boto3) is involved; every table a function looks up needs an
entry (``{}`` is an empty table). A key is the text written in the file: it matches a
record's string value, and a number equal to it. The item gets its key attribute, as
DynamoDB returns it. String values are interpolated as in the pipeline file (``${VAR}``,
``$$`` for a literal ``$``).

What this does not see: the real sinks' own checks (a DynamoDB item without its key
field, a non-object document for OpenSearch) and their I/O, which the integration tests
and ``shardline dev`` exercise.
"""

from __future__ import annotations

import base64
import binascii
import copy
import difflib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from deploy.pipeline.fields import Fields, as_mapping, describe, unknown
from deploy.pipeline.problems import ConfigError, Problem, Reporter
from deploy.pipeline.yamlload import load_yaml
from processors.lookup import Fetched
from sinks.base import Ordering, permanent
from sinks.memory import MemorySink

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from deploy.pipeline.problems import Path as DocPath
    from processors.lookup import KeyValue
    from sinks.base import DeadLetter, Outcome, Sink
    from stream.batch import BatchResult
    from stream.event import KinesisEventRecord
    from stream.plan import FunctionPlan, Plan, SinkSpec
    from stream.records import Record

__all__ = [
    "DEFAULT_NOW",
    "Case",
    "CaseResult",
    "FixtureFetch",
    "Suite",
    "find_test_file",
    "load_suite",
    "run_case",
    "run_suite",
    "same",
    "written_document",
]

#: 2026-01-01T00:00:00Z: the clock and first arrival time when a file gives no ``now``.
DEFAULT_NOW = 1_767_225_600.0
DEFAULT_PARTITION_KEY = "key"
COMPARE = ("exact", "subset")
TOP_KEYS = ("pipeline", "compare", "now", "env", "lookups", "tests")
CASE_KEYS = ("name", "function", "compare", "now", "lookups", "input", "expect")
EXPECT_KEYS = ("sinks", "dead_letters", "failed", "dropped")
INPUT_KINDS = ("json", "text", "base64", "aggregate")
_RECORD_SHAPE = "a record like {json: {...}}, {text: ...}, {base64: ...} or {aggregate: [...]}"


@dataclass(frozen=True)
class InputRecord:
    """One Kinesis record of a case's input: plain, or a KPL aggregate of user records."""

    data: bytes
    partition_key: str
    parts: tuple[tuple[str, bytes], ...] | None = None

    @property
    def user_records(self) -> int:
        """How many records the function sees for it (after de-aggregation)."""
        return 1 if self.parts is None else len(self.parts)


@dataclass(frozen=True)
class Claim:
    """An expected group of dead letters or failures: ``count`` of them matching."""

    reason: str | None
    step: str | None
    count: int

    def matches(self, reason: str, step: str | None) -> bool:
        """Whether one dead letter (or failure) fits this claim."""
        if self.reason is not None and self.reason not in reason:
            return False
        return self.step is None or self.step == step

    def __str__(self) -> str:
        what = f"reason containing {self.reason!r}" if self.reason is not None else "any reason"
        where = f" at step {self.step}" if self.step is not None else ""
        return f"{self.count} with {what}{where}"


@dataclass(frozen=True)
class Case:
    """One named test: a function, its input and what must come out.

    Attributes:
        sinks: expected documents per sink the function routes to (absent: none).
        dead_letters: expected dead letters.
        failed: expected records reported in ``batchItemFailures``.
        dropped: expected records dropped, or ``None`` when not checked.
    """

    name: str
    function: str
    compare: str
    now: float
    lookups: dict[str, dict[str, Any]]
    inputs: tuple[InputRecord, ...]
    sinks: dict[str, list[Any]]
    dead_letters: tuple[Claim, ...] = ()
    failed: tuple[Claim, ...] = ()
    dropped: int | None = None


@dataclass(frozen=True)
class Suite:
    """A loaded test file: its pipeline's compiled plan and its cases."""

    source: str
    pipeline: str
    plan: Plan
    cases: tuple[Case, ...]


@dataclass
class CaseResult:
    """What a case got, and every way it differs from what it expected (empty: passed)."""

    case: Case
    records_in: int = 0
    written: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    failed: int = 0
    dropped: int = 0
    pushed_down: int = 0
    differences: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Whether every expectation held."""
        return not self.differences

    def summary(self) -> str:
        """One line: verdict, case, function, and what went where."""
        counts = [f"{self.records_in} in"]
        counts += [f"{sink} {n}" for sink, n in self.written.items() if n]
        counts += [f"dead letters {self.dead_letters}"] if self.dead_letters else []
        counts += [f"failed {self.failed}"] if self.failed else []
        if self.dropped:  # pushdown named apart: AWS drops those before the function
            pushed = f" (filtered by pushdown {self.pushed_down})" if self.pushed_down else ""
            counts.append(f"dropped {self.dropped}{pushed}")
        verdict = "PASS" if self.passed else "FAIL"
        return f"{verdict}  {self.case.name} ({self.case.function}): {', '.join(counts)}"

    def report(self) -> str:
        """The summary line, then the differences, indented (for a failing case)."""
        return "\n".join([self.summary(), *(f"  {line}" for line in self.differences)])


# -- loading -------------------------------------------------------------------------------


def find_test_file(path: str | Path) -> Path:
    """The test file for ``path``: itself, or for a pipeline file ``X.yaml`` its ``X.test.yaml``
    when that exists (else ``path``, which then fails to load with its own message).

    >>> str(find_test_file("examples/clickstream/pipeline.test.yaml"))
    'examples/clickstream/pipeline.test.yaml'
    """
    given = Path(path)
    if ".test." in given.name:
        return given
    sibling = given.with_name(f"{given.stem}.test{given.suffix}")
    return sibling if sibling.exists() else given


def _default_pipeline(test_file: Path) -> str | None:
    """``pipeline.test.yaml`` -> ``pipeline.yaml``; None when the name has no ``.test.``."""
    head, sep, tail = test_file.name.rpartition(".test.")
    return f"{head}.{tail}" if sep else None


def load_suite(path: str | Path, env: Mapping[str, str] | None = None) -> Suite:
    """Read a test file and the pipeline it tests; check both completely.

    Args:
        path: the test file, named in messages as given.
        env: the environment for ``${VAR}`` (default ``os.environ``); the file's ``env``
            is added to it for the pipeline file.

    Raises:
        ConfigError: every problem of the test file and of the pipeline file, each as
            ``FILE:LINE: path: message``.
    """
    from deploy.pipeline.config import compile_plan, load_config  # noqa: PLC0415  # it loads PyYAML too

    source = str(path)
    base_env = dict(os.environ if env is None else env)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else f"not UTF-8 ({exc.reason})"
        raise ConfigError([Problem(source, 1, "(file)", f"cannot read: {reason}")]) from exc
    lines: dict[DocPath, int] = {}
    r = Reporter(source, lines)
    doc = load_yaml(text, r, lines, base_env)
    if doc is None:
        if not r.problems:
            r.error((), "the file is empty: expected a mapping with tests: [...]")
        raise ConfigError(r.sorted_problems())
    data = as_mapping(r, (), doc, "a mapping with pipeline and tests")
    if data is None:
        raise ConfigError(r.sorted_problems())
    top = Fields(r, (), data, TOP_KEYS)
    pipeline_name = top.text("pipeline", required=False) or _default_pipeline(Path(source))
    if pipeline_name is None:
        r.error(
            top.at("pipeline"),
            "required field is missing: name the pipeline file, e.g. 'pipeline: pipeline.yaml' "
            "(or call the test file NAME.test.yaml beside NAME.yaml)",
        )
    pipeline_env = {**base_env, **_env(r, top)}
    plan: Plan | None = None
    pipeline = ""
    pipeline_problems: list[Problem] = []
    if pipeline_name is not None:
        pipeline = str(Path(source).parent / pipeline_name)
        if not Path(pipeline).is_file():
            r.error(
                top.at("pipeline"),
                f"no pipeline file {pipeline!r} (the name is relative to the test file's "
                "folder): fix the name, or set 'pipeline:'",
            )
        else:
            try:
                plan = compile_plan(load_config(pipeline, pipeline_env))
            except ConfigError as exc:
                pipeline_problems = exc.errors
    defaults = _Defaults(
        compare=top.choice("compare", COMPARE, default="exact"),
        now=_now(r, top, DEFAULT_NOW),
        lookups=_lookups(r, top),
    )
    cases = _cases(r, top, plan, defaults)
    if r.problems or pipeline_problems:
        raise ConfigError([*r.sorted_problems(), *pipeline_problems])
    if plan is None:  # unreachable: a missing plan is always reported above
        raise ConfigError([Problem(source, 1, "pipeline", "the pipeline could not be loaded")])
    return Suite(source, pipeline, plan, tuple(cases))


@dataclass(frozen=True)
class _Defaults:
    compare: str
    now: float
    lookups: dict[str, dict[str, Any]]


def _env(r: Reporter, top: Fields) -> dict[str, str]:
    data = top.mapping("env") or {}
    out: dict[str, str] = {}
    for name, value in data.items():
        if isinstance(value, dict | list) or value is None:
            r.error((*top.at("env"), name), f"expected a string, got {describe(value)}")
        else:
            out[name] = value if isinstance(value, str) else json.dumps(value)
    return out


def _now(r: Reporter, f: Fields, default: float) -> float:
    """An ISO-8601 time (UTC when it gives no offset) or epoch seconds."""
    value = f.data.get("now")
    if value is None:
        return default
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    expected = "an ISO-8601 time like 2026-01-01T00:00:00Z, or epoch seconds"
    r.error(f.at("now"), f"expected {expected}, got {describe(value)}")
    return default


def _lookups(r: Reporter, f: Fields) -> dict[str, dict[str, Any]]:
    """``{table: {key: item}}``; each item a mapping."""
    data = f.mapping("lookups") or {}
    out: dict[str, dict[str, Any]] = {}
    for table, items in data.items():
        path = (*f.at("lookups"), table)
        given = as_mapping(r, path, {} if items is None else items, "a mapping {KEY: {item}}")
        if given is None:
            continue
        for key, item in given.items():
            as_mapping(r, (*path, key), item, "an item: a mapping of attributes")
        out[table] = {k: v for k, v in given.items() if isinstance(v, dict)}
    return out


def _cases(r: Reporter, top: Fields, plan: Plan | None, d: _Defaults) -> list[Case]:
    value = top.data.get("tests")
    at = top.at("tests")
    if value is None:
        r.error(at, "required field is missing (a list of cases: - name: ..., input, expect)")
        return []
    if not isinstance(value, list) or not value:
        r.error(at, f"expected a non-empty list of cases, got {describe(value)}")
        return []
    cases: list[Case] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(value):
        case = _case(r, (*at, i), entry, plan, d)
        if case is None:
            continue
        if case.name in seen:
            r.error((*at, i, "name"), f"duplicate case name (first in tests[{seen[case.name]}])")
        seen.setdefault(case.name, i)
        cases.append(case)
    return cases


def _case(
    r: Reporter, path: DocPath, entry: Any, plan: Plan | None, d: _Defaults
) -> Case | None:
    data = as_mapping(r, path, entry, "a case: a mapping with name, input and expect")
    if data is None:
        return None
    f = Fields(r, path, data, CASE_KEYS)
    name = f.text("name", required=True) or f"tests[{path[-1]}]"
    function = _function(r, f, plan)
    lookups = {**d.lookups, **_lookups(r, f)}
    inputs = _inputs(r, f)
    expect = f.mapping("expect", required=True)
    spec = plan["functions"].get(function) if plan is not None and function else None
    if spec is not None:
        _check_lookup_fixtures(r, path, function or "", spec, lookups)
        _refuse_registry(r, f.at("function") if "function" in data else path, function, spec)
    e = Fields(r, f.at("expect"), expect or {}, EXPECT_KEYS)
    return Case(
        name=name,
        function=function or "",
        compare=f.choice("compare", COMPARE, default=d.compare),
        now=_now(r, f, d.now),
        lookups=lookups,
        inputs=tuple(inputs),
        sinks=_expected_sinks(r, e, plan, spec),
        dead_letters=_claims(r, e, "dead_letters", with_step=True),
        failed=_claims(r, e, "failed", with_step=False),
        dropped=e.integer("dropped", default=None, lo=0),
    )


def _refuse_registry(r: Reporter, at: DocPath, function: str | None, spec: FunctionPlan) -> None:
    """A case cannot run a ``schema: {registry: ...}`` step: its records name schema
    versions by the ids Glue gave them when they were registered, which a test file cannot
    know, and ``shardline test`` calls no AWS API. Say so, and what to do instead."""
    for i, entry in enumerate(spec.get("processors", ())):
        schema = entry.get("schema") if isinstance(entry, dict) else None
        if isinstance(schema, dict) and "registry" in schema:
            r.error(
                at,
                f"function {function!r} reads the Glue Schema Registry (processors[{i}], "
                f"{schema.get('source', 'registry')}), which shardline test does not call: "
                "test the chain behind it with a function that has schema: {avro: FILE} or "
                "{json_schema: FILE} (the registered definition) instead, and the registry step "
                "against a local stack (shardline dev, then shardline produce --schema "
                "registry:REGISTRY/NAME)",
            )
            return


def _function(r: Reporter, f: Fields, plan: Plan | None) -> str | None:
    name = f.text("function")
    if plan is None:
        return name
    known = list(plan["functions"])
    if name is None:
        if len(known) == 1:
            return str(known[0])
        r.error(f.at("function"), f"required: the pipeline has {len(known)} functions "
                f"({', '.join(known)}); name the one this case runs")  # fmt: skip
        return None
    if name not in known:
        r.error(f.at("function"), unknown("function", name, known, "known"))
        return None
    return name


def _inputs(r: Reporter, f: Fields) -> list[InputRecord]:
    value = f.data.get("input")
    at = f.at("input")
    if not isinstance(value, list) or not value:
        what = "required field is missing" if value is None else f"got {describe(value)}"
        r.error(at, f"{what}: expected a non-empty list of records (- json: {{...}})")
        return []
    out: list[InputRecord] = []
    for i, item in enumerate(value):
        record = _input(r, (*at, i), item, nested=False)
        if record is not None:
            out.append(record)
    return out


def _input(r: Reporter, path: DocPath, item: Any, *, nested: bool) -> InputRecord | None:
    data = as_mapping(r, path, item, _RECORD_SHAPE)
    if data is None:
        return None
    if nested and "aggregate" in data:
        r.error((*path, "aggregate"), "an aggregate holds plain records (json, text or base64)")
        return None
    kinds = INPUT_KINDS[:3] if nested else INPUT_KINDS
    f = Fields(r, path, data, (*kinds, "partition_key"))
    given = [k for k in kinds if k in data]
    if len(given) != 1:
        which = " and ".join(given) or "none"
        r.error(path, f"give exactly one of {', '.join(kinds)} per record, got {which}")
        return None
    key = f.text("partition_key", default=DEFAULT_PARTITION_KEY)
    if key == "":
        r.error(f.at("partition_key"), "a partition key is a non-empty string")
    key = key or DEFAULT_PARTITION_KEY
    kind = given[0]
    value = data[kind]
    if kind == "aggregate":
        return _aggregate(r, f.at(kind), value, key, "partition_key" in data)
    payload = _payload(r, f.at(kind), kind, value)
    return None if payload is None else InputRecord(payload, key)


def _payload(r: Reporter, path: DocPath, kind: str, value: Any) -> bytes | None:
    if kind == "json":
        try:
            return orjson.dumps(value)
        except orjson.JSONEncodeError as exc:
            r.error(path, f"cannot be encoded as JSON ({exc})")
            return None
    if not isinstance(value, str):
        r.error(path, f"expected a string, got {describe(value)}")
        return None
    if kind == "text":
        return value.encode()
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        r.error(path, f"not valid base64 ({exc}); for readable bytes use text: instead")
        return None


def _aggregate(
    r: Reporter, path: DocPath, value: Any, key: str, key_given: bool
) -> InputRecord | None:
    if not isinstance(value, list) or not value:
        r.error(path, f"expected a non-empty list of records (- json: {{...}}), got "
                f"{describe(value)}")  # fmt: skip
        return None
    parts: list[tuple[str, bytes]] = []
    for i, item in enumerate(value):
        record = _input(r, (*path, i), item, nested=True)
        if record is not None:
            parts.append((record.partition_key, record.data))
    if len(parts) != len(value):
        return None
    return InputRecord(b"", key if key_given else parts[0][0], tuple(parts))


def _lookup_tables(spec: FunctionPlan) -> list[str]:
    """The DynamoDB tables the function's ``enrich: lookup`` steps read."""
    tables = []
    for entry in spec.get("processors", ()):
        lookup = (entry.get("enrich") or {}).get("lookup") if isinstance(entry, dict) else None
        if isinstance(lookup, dict) and lookup.get("table"):
            tables.append(lookup["table"])
    return tables


def _check_lookup_fixtures(
    r: Reporter, path: DocPath, function: str, spec: FunctionPlan, lookups: Mapping[str, Any]
) -> None:
    for table in _lookup_tables(spec):
        if table not in lookups:
            r.error(
                path,
                f"function {function!r} looks up DynamoDB table {table!r}: give its items as "
                f"'lookups: {{{table}: {{KEY: {{...}}}}}}' at the top of the file or in the "
                "case ({} is an empty table)",
            )


def _routed_sinks(spec: FunctionPlan) -> list[str]:
    from stream.runtime import used_sinks  # noqa: PLC0415

    return used_sinks({**spec, "on_failure": None})


def _expected_sinks(
    r: Reporter, e: Fields, plan: Plan | None, spec: FunctionPlan | None
) -> dict[str, list[Any]]:
    data = e.mapping("sinks") or {}
    routed = _routed_sinks(spec) if spec is not None else None
    out: dict[str, list[Any]] = {}
    for name, given in data.items():
        at = (*e.at("sinks"), name)
        if routed is not None and plan is not None and name not in routed:
            if spec is not None and name == spec.get("on_failure"):
                message = f"{name!r} is the function's on_failure sink: expect its records " \
                    "under dead_letters"  # fmt: skip
            elif name in plan["sinks"]:
                message = f"the function never writes to sink {name!r} (it routes to: " \
                    f"{', '.join(routed) or 'nothing'})"  # fmt: skip
            else:
                message = unknown("sink", name, routed, "the function routes to")
            r.error(at, message)
            continue
        records = [] if given is None else given
        if not isinstance(records, list):
            r.error(at, f"expected a list of records (JSON documents; [] for none), got "
                    f"{describe(records)}")  # fmt: skip
            continue
        out[name] = records
    return out


def _claims(r: Reporter, e: Fields, key: str, *, with_step: bool) -> tuple[Claim, ...]:
    """``N`` (any reason), or a list of reason substrings or ``{reason, step, count}``."""
    value = e.data.get(key)
    at = e.at(key)
    if value is None:
        return ()
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            r.error(at, f"must be at least 0, got {value}")
            return ()
        return (Claim(None, None, value),) if value else ()
    if not isinstance(value, list):
        r.error(at, f"expected a count or a list of reasons, got {describe(value)}")
        return ()
    allowed = ("reason", "step", "count") if with_step else ("reason", "count")
    claims: list[Claim] = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            claims.append(Claim(item, None, 1))
            continue
        data = as_mapping(r, (*at, i), item, "a reason (a substring) or {reason: ..., count: N}")
        if data is None:
            continue
        f = Fields(r, (*at, i), data, allowed)
        count = f.integer("count", default=1, lo=1) or 1
        claims.append(Claim(f.text("reason"), f.text("step") if with_step else None, count))
    return tuple(claims)


# -- running -------------------------------------------------------------------------------


class FixtureFetch:
    """The lookup's ``fetch``, answered from the test file's items instead of DynamoDB.

    Args:
        items: item per key, as written in the file (the key as text).
        table_key: the table's partition key attribute, added to every item returned.
    """

    def __init__(self, items: Mapping[str, Mapping[str, Any]], table_key: str) -> None:
        self.table_key = table_key
        self._by_text = dict(items)
        self._by_number: dict[Decimal, Mapping[str, Any]] = {}
        for text, item in items.items():
            try:
                number = Decimal(text)
            except InvalidOperation:
                continue
            if number.is_finite():
                self._by_number.setdefault(number, item)

    def __call__(self, keys: Sequence[KeyValue]) -> Fetched:
        """The items of the keys that have one; the others are misses."""
        found: dict[KeyValue, dict[str, Any]] = {}
        for k in keys:
            plain: str | int | float
            if isinstance(k, str):
                item, plain = self._by_text.get(k), k
            else:
                item, plain = self._by_number.get(k), _plain_number(k)
            if item is not None:
                found[k] = copy.deepcopy({self.table_key: plain, **item})
        return Fetched(found)


def _plain_number(k: Decimal) -> int | float:
    return int(k) if k == k.to_integral_value() else float(k)


class _RecordingSink(MemorySink):
    """A memory sink that also keeps every document written, in write order."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.documents: list[Any] = []
        self._lettering = False

    def write_dead_letters(self, letters: Sequence[DeadLetter]) -> list[Outcome]:
        """Dead letters are checked from the batch result, not kept as documents."""
        self._lettering = True
        try:
            return self.write_batch([letter.as_record() for letter in letters], Ordering.NONE)
        finally:
            self._lettering = False

    def _write(self, items: Sequence[Record]) -> list[Outcome]:
        outcomes = super()._write(items)
        if self._lettering:
            return outcomes
        out: list[Outcome] = []
        for item, outcome in zip(items, outcomes, strict=True):
            if not outcome.ok:
                out.append(outcome)
                continue
            try:
                self.documents.append(written_document(item))
            except orjson.JSONEncodeError as exc:  # as the real JSON sinks answer it
                out.append(
                    permanent(
                        f"sink {self.name!r} cannot write the record as JSON ({exc}): a step "
                        "put a value JSON cannot hold into the document; fix that step",
                        "JSONEncodeError",
                    )
                )
            else:
                out.append(outcome)
        return out


def written_document(record: Record) -> Any:
    """A record as a test compares it: its JSON, else ``{_text}`` or ``{_data_base64}``."""
    data = record.data
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        try:
            return {"_text": data.decode()}
        except UnicodeDecodeError:
            return {"_data_base64": base64.b64encode(data).decode()}


def _case_plan(plan: Plan, case: Case) -> Plan:
    """The plan with the case's clock in every enricher, its items behind every lookup and
    its windows in memory.

    Both go in through the processors' own constructor options (``now``, ``fetch``), so
    the steps built are the ones Lambda runs, fused the same way.
    """
    spec = copy.deepcopy(plan["functions"][case.function])
    for entry in spec.get("processors", ()):
        window = entry.get("window") if isinstance(entry, dict) else None
        if isinstance(window, dict):
            window["state"] = "memory"  # a case is one fresh process: no table needed
            window["flush_s"] = 0  # ... nor a scheduled flush of one
        args = entry.get("enrich") if isinstance(entry, dict) else None
        if not isinstance(args, dict):
            continue
        args["now"] = lambda: case.now
        lookup = args.get("lookup")
        if isinstance(lookup, dict):
            table_key = lookup.get("table_key") or lookup["key"]
            lookup["fetch"] = FixtureFetch(case.lookups.get(lookup["table"], {}), table_key)
    return {**plan, "functions": {**plan["functions"], case.function: spec}}


def _event(plan: Plan, case: Case) -> tuple[list[KinesisEventRecord], int]:
    """The event records of the case's input that pass the function's FilterCriteria, and
    how many user records the criteria dropped (as the event source mapping does)."""
    from stream.esm.filter import RecordFilter  # noqa: PLC0415
    from stream.testing import EventFactory  # noqa: PLC0415

    region = plan.get("region") or "us-east-1"
    factory = EventFactory(stream=plan["stream"]["name"], region=region, arrival=case.now)
    keep = RecordFilter(plan["functions"][case.function].get("filter_criteria") or ())
    entries: list[KinesisEventRecord] = []
    dropped = 0
    for item in case.inputs:
        if item.parts is None:
            entry = factory.raw(item.data, item.partition_key)
        else:
            entry = factory.aggregate(item.parts, item.partition_key)
        kinesis = entry["kinesis"]
        data = base64.b64decode(kinesis["data"])
        seq, arrival = kinesis["sequenceNumber"], kinesis["approximateArrivalTimestamp"]
        if keep.matches(data, item.partition_key, seq, arrival):
            entries.append(entry)
        else:
            dropped += item.user_records
    return entries, dropped


def run_case(suite: Suite, case: Case) -> CaseResult:
    """Run one case in this process and compare; never raises for the pipeline's sake."""
    from stream.runtime import build_runner  # noqa: PLC0415

    outcome = CaseResult(case)
    sinks: dict[str, _RecordingSink] = {}

    def make(name: str, spec: SinkSpec) -> Sink:
        sinks[name] = _RecordingSink(name)
        return sinks[name]

    try:
        runner = build_runner(_case_plan(suite.plan, case), case.function, make)
        entries, pushed_down = _event(suite.plan, case)
        result = runner.handle({"Records": entries})
    except Exception as exc:  # a plugin that does not build or load: the case fails, not us
        outcome.differences.append(f"error: {type(exc).__name__}: {exc}")
        return outcome
    outcome.records_in = sum(item.user_records for item in case.inputs)
    outcome.dead_letters = len(result.dead_letters)
    outcome.failed = len(result.failed)
    outcome.dropped = sum(result.dropped.values()) + result.unrouted + pushed_down
    outcome.pushed_down = pushed_down
    routed = _routed_sinks(suite.plan["functions"][case.function])
    for name in routed:
        got = sinks[name].documents if name in sinks else []
        outcome.written[name] = len(got)
        expected = case.sinks.get(name, [])
        outcome.differences += _compare_sink(name, expected, got, case.compare)
    letters = [(d.reason, d.step) for d in result.dead_letters]
    outcome.differences += _compare_claims("dead letters", case.dead_letters, letters)
    failures = [(why, None) for _, why in sorted(result.failed.items())]
    outcome.differences += _compare_claims("failed", case.failed, failures)
    if case.dropped is not None and case.dropped != outcome.dropped:
        outcome.differences.append(
            f"dropped: expected {case.dropped}, got {outcome.dropped}"
            + _drop_detail(result, pushed_down)
        )
    return outcome


def _drop_detail(result: BatchResult, pushed_down: int) -> str:
    parts = [f"{step} {n}" for step, n in result.dropped.items()]
    parts += [f"unrouted {result.unrouted}"] if result.unrouted else []
    parts += [f"filtered by pushdown {pushed_down}"] if pushed_down else []
    return f" ({', '.join(parts)})" if parts else ""


def run_suite(suite: Suite) -> list[CaseResult]:
    """Run every case of the suite, in file order."""
    return [run_case(suite, case) for case in suite.cases]


# -- comparing -----------------------------------------------------------------------------


def same(expected: Any, got: Any, *, subset: bool = False) -> bool:
    """JSON equality where ``true`` is not ``1``; with ``subset``, extra keys are ignored.

    >>> same({"a": 1}, {"a": 1.0}), same({"a": True}, {"a": 1}), same({}, {"b": 2})
    (True, False, False)
    >>> same({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}, "d": 3}, subset=True)
    True
    """
    if isinstance(expected, bool) or isinstance(got, bool):
        return type(expected) is type(got) and expected == got
    if isinstance(expected, int | float) and isinstance(got, int | float):
        return expected == got
    if isinstance(expected, dict):
        if not isinstance(got, dict) or (not subset and expected.keys() != got.keys()):
            return False
        return all(k in got and same(v, got[k], subset=subset) for k, v in expected.items())
    if isinstance(expected, list):
        return (
            isinstance(got, list)
            and len(expected) == len(got)
            and all(same(e, g, subset=subset) for e, g in zip(expected, got, strict=True))
        )
    return type(expected) is type(got) and expected == got


def _project(got: Any, expected: Any) -> Any:
    """``got`` cut down to the keys ``expected`` names, so a subset diff shows only those."""
    if isinstance(got, dict) and isinstance(expected, dict):
        return {k: _project(got[k], expected[k]) for k in expected if k in got}
    if isinstance(got, list) and isinstance(expected, list):
        return [_project(g, e) for g, e in zip(got, expected, strict=False)] + got[len(expected) :]
    return got


def _pretty(value: Any) -> list[str]:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False).splitlines()


def _one_line(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _records(n: int) -> str:
    return f"{n} record" if n == 1 else f"{n} records"


def _compare_sink(name: str, expected: list[Any], got: list[Any], compare: str) -> list[str]:
    """Differences of one sink, record by record: a -/+ diff for each record that differs."""
    subset = compare == "subset"
    out: list[str] = []
    for i in range(max(len(expected), len(got))):
        if i >= len(got):
            out.append(f"sink {name}: record [{i}] expected, not written:")
            out.append(f"  - {_one_line(expected[i])}")
        elif i >= len(expected):
            out.append(f"sink {name}: record [{i}] written, not expected:")
            out.append(f"  + {_one_line(got[i])}")
        elif not same(expected[i], got[i], subset=subset):
            shown = _project(got[i], expected[i]) if subset else got[i]
            note = " (subset: keys not expected are left out)" if subset else ""
            out.append(f"sink {name}: record [{i}] differs (- expected, + got){note}:")
            diff = difflib.unified_diff(
                _pretty(expected[i]), _pretty(shown), lineterm="", n=1_000_000
            )
            out += [f"  {line}" for line in list(diff)[3:]]
    if out and len(expected) != len(got):
        out.insert(0, f"sink {name}: expected {_records(len(expected))}, got {len(got)}")
    return out


def _compare_claims(
    what: str, claims: Sequence[Claim], got: Sequence[tuple[str, str | None]]
) -> list[str]:
    """Each claim takes its count of matching records, in order; all must be taken."""
    free = list(range(len(got)))
    out: list[str] = []
    for claim in claims:
        taken = [i for i in free if claim.matches(*got[i])][: claim.count]
        free = [i for i in free if i not in taken]
        if len(taken) < claim.count:
            out.append(f"{what}: expected {claim}, got {len(taken)}")
    for i in free:
        reason, step = got[i]
        out.append(f"{what}: not expected: {step + ': ' if step else ''}{reason}")
    if out:
        listed = [f"  {step + ': ' if step else ''}{reason}" for reason, step in got]
        out.append(f"{what}: got {len(got)}" + (":" if got else ""))
        out += listed
    return out
