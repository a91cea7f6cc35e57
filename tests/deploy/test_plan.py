"""The plan's types (:mod:`stream.plan`) say what ``compile_plan`` writes, key for key.

Every example pipeline, and one that uses every built-in sink type and optional setting, is
compiled and compared with the TypedDicts recursively: a key that compile adds, drops or
renames, or a value of another type, fails here until the contract says the same.
"""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints, is_typeddict

import pytest
import yaml
from click.testing import CliRunner

from deploy.cli import main
from deploy.pipeline import schema, steps
from deploy.pipeline.config import compile_plan, load_config, parse_config
from stream.plan import (
    PLAN_VERSION,
    BatchSettings,
    EnrichSpec,
    FilterSpec,
    FunctionPlan,
    LookupSpec,
    Plan,
    RouteSpec,
    SchemaSpec,
    SinkSpec,
    StreamSpec,
)

ROOT = Path(__file__).resolve().parent.parent.parent
ENV = {"OPENSEARCH_URL": "http://127.0.0.1:9200"}

#: The argument types of the built-in steps (a plugin's arguments are its own).
STEP_ARGS: dict[str, Any] = {
    "filter": FilterSpec,
    "enrich": EnrichSpec,
    "route": RouteSpec,
    "schema": SchemaSpec,
}

#: Every built-in sink type, every optional setting given, both route forms and a ``use``.
EVERYTHING = """\
name: all
region: eu-west-1
metrics: true
log_payloads: true
stream: {name: all-events, mode: provisioned, shards: 2, retention_hours: 48, encryption: none}
sinks:
  latest: {type: dynamodb, table: all-latest, key: id, mode: latest}
  log: {type: dynamodb, table: all-log, key: id, mode: append}
  search: {type: opensearch, endpoint: "http://127.0.0.1:9200", index: ev, id: id, auth: none}
  archive: {type: s3, bucket: all-archive, prefix: raw/, partition: "p={arrival:%H}"}
  dlq: {type: sqs, queue: all-dlq}
  next: {type: kinesis, stream: all-next, partition_key: "{id}"}
  out: {type: stdout}
  void: {type: discard}
functions:
  main:
    memory_mb: 512
    timeout_s: 30
    batch: {size: 10, window_s: 2, starting_position: at_timestamp,
            starting_timestamp: "2026-01-01T00:00:00Z", parallelization: 2,
            bisect_on_error: false, max_retries: 5, max_record_age_s: 600}
    ordering: none
    filter_pushdown: true
    on_failure: dlq
    processors:
      - filter: {match: {kind: [a, b]}}
      - filter: {expr: "n > `1`"}
      - enrich:
          set: {seen: true}
          timestamp: at
          lookup: {table: all-users, key: user, into: u, on_miss: drop, ttl_s: 30,
                   table_key: user_id, miss_ttl_s: 5, max_entries: 100}
      - use: json:loads
        with: {}
      - route:
          mode: all
          rules:
            - when: {kind: [a]}
              to: [latest, log, search]
            - default: [archive, next, out, void]
  shorthand:
    batch: {starting_position: latest}
    route: [out]
"""


def _conflicts(value: object, tp: Any, at: str) -> list[str]:
    """Where ``value`` is not of type ``tp`` (a TypedDict checked key by key)."""
    origin = get_origin(tp)
    if tp is Any:
        return []
    if is_typeddict(tp):
        if not isinstance(value, dict):
            return [f"{at}: {value!r} is no mapping ({tp.__name__})"]
        required, optional = tp.__required_keys__, tp.__optional_keys__
        found = [f"{at}.{k}: missing, {tp.__name__} requires it" for k in required - value.keys()]
        found += [f"{at}.{k}: compile writes it, {tp.__name__} lacks it" for k in
                  value.keys() - required - optional]  # fmt: skip
        hints = get_type_hints(tp)
        for key in sorted(value.keys() & hints.keys()):
            found += _conflicts(value[key], hints[key], f"{at}.{key}")
        return found
    if origin in (Union, types.UnionType):
        options = [_conflicts(value, arg, at) for arg in get_args(tp)]
        return [] if any(not o for o in options) else [f"{at}: {value!r} is not {tp}"]
    if origin is Literal:
        return [] if value in get_args(tp) else [f"{at}: {value!r} is not one of {get_args(tp)}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{at}: {value!r} is no list"]
        (item,) = get_args(tp)
        return [p for i, v in enumerate(value) for p in _conflicts(v, item, f"{at}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{at}: {value!r} is no mapping"]
        _, item = get_args(tp)
        return [p for k, v in value.items() for p in _conflicts(v, item, f"{at}.{k}")]
    if tp is type(None):
        return [] if value is None else [f"{at}: {value!r} is not None"]
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, tp)
    return [] if ok else [f"{at}: {value!r} is not {tp.__name__}"]


def _plan_conflicts(plan: Plan) -> list[str]:
    """The whole plan against :class:`Plan`, and each built-in step's arguments against
    their own type (``processors`` is typed as one-key mappings of any plugin)."""
    found = _conflicts(plan, Plan, "plan")
    for name, function in plan["functions"].items():
        for i, entry in enumerate(function["processors"]):
            ((kind, args),) = [(k, v) for k, v in entry.items() if k != "with"]
            if kind in STEP_ARGS:
                where = f"plan.functions.{name}.processors[{i}].{kind}"
                found += _conflicts(args, STEP_ARGS[kind], where)
    return found


def _example_pipelines() -> list[Path]:
    """Every pipeline file under examples/ (not the test-case files beside them)."""
    found = []
    for path in sorted((ROOT / "examples").rglob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(doc, dict) and "functions" in doc:
            found.append(path)
    return found


class TestContract:
    def test_there_are_example_pipelines(self):
        assert _example_pipelines()

    @pytest.mark.parametrize(
        "path", _example_pipelines(), ids=lambda p: str(p.relative_to(ROOT / "examples"))
    )
    def test_each_example_compiles_to_the_typed_plan(self, path: Path):
        plan = compile_plan(load_config(path, env=ENV))
        assert _plan_conflicts(plan) == []

    def test_a_pipeline_with_every_setting_compiles_to_the_typed_plan(self):
        plan = compile_plan(parse_config(EVERYTHING, env=ENV))
        assert _plan_conflicts(plan) == []
        # and every optional key of the types was written at least once (so none is stale)
        lookup = plan["functions"]["main"]["processors"][2]["enrich"]["lookup"]
        # number_keys: compiled for a lookup on a sink's table (test_dynamodb_sink.py)
        assert LookupSpec.__optional_keys__ - {"number_keys"} <= lookup.keys()
        assert SinkSpec.__optional_keys__ - {"use"} <= {
            key for spec in plan["sinks"].values() for key in spec
        }

    def test_the_checker_sees_a_key_compile_adds_drops_or_retypes(self):
        plan = compile_plan(parse_config(EVERYTHING, env=ENV))
        function = plan["functions"]["main"]
        del function["batch"]["size"]
        function["extra"] = 1  # type: ignore[typeddict-unknown-key]
        function["memory_mb"] = "512"  # type: ignore[typeddict-item]
        assert _plan_conflicts(plan) == [
            "plan.functions.main.extra: compile writes it, FunctionPlan lacks it",
            "plan.functions.main.batch.size: missing, BatchSettings requires it",
            "plan.functions.main.memory_mb: '512' is not int",
        ]

    def test_the_version_written_is_the_one_the_runtime_expects(self):
        assert compile_plan(parse_config(EVERYTHING, env=ENV))["version"] == PLAN_VERSION

    def test_the_top_level_keys_are_the_files_plus_version(self):
        assert Plan.__required_keys__ == {"version", *schema.TOP_KEYS}

    def test_the_sink_options_are_the_built_in_types_settings(self):
        settings = {key for fields in schema.SINK_TYPES.values() for key in fields}
        assert SinkSpec.__optional_keys__ == settings | {"use"}

    @pytest.mark.parametrize(
        ("typed", "key", "choices"),
        [
            (StreamSpec, "mode", schema.STREAM_MODES),
            (FunctionPlan, "ordering", schema.ORDERINGS),
            (BatchSettings, "starting_position", schema.STARTING_POSITIONS),
            (LookupSpec, "on_miss", steps.ON_MISS),
            (RouteSpec, "mode", steps.ROUTE_MODES),
        ],
    )
    def test_each_literal_lists_the_choices_validation_accepts(self, typed, key, choices):
        assert get_args(get_type_hints(typed)[key]) == tuple(choices)

    def test_each_sink_literal_lists_the_choices_validation_accepts(self):
        hints = get_type_hints(SinkSpec)
        for fields in schema.SINK_TYPES.values():
            for key, setting in fields.items():
                if setting.enum:
                    assert get_args(hints[key]) == tuple(setting.enum), key


class TestOldPlanOnTheCommandLine:
    @pytest.fixture
    def old_plan(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
        monkeypatch.chdir(tmp_path)
        plan = typing.cast("dict[str, Any]", compile_plan(parse_config(EVERYTHING, env=ENV)))
        plan["version"] = PLAN_VERSION - 1
        Path("plan.json").write_text(json.dumps(plan), encoding="utf-8")
        return "plan.json"

    @pytest.mark.parametrize(
        "args",
        [
            ["run", "plan.json"],
            ["invoke", "plan.json", "--function", "main", "--event", "event.json"],
            ["status", "plan.json"],
        ],
        ids=lambda a: a[0],
    )
    def test_a_command_refuses_it_with_the_fix(self, old_plan: str, args: list[str]):
        """Before it touches the endpoint (none listens on the one given)."""
        Path("event.json").write_text('{"Records": []}', encoding="utf-8")
        result = CliRunner().invoke(main, [*args, "--endpoint-url", "http://127.0.0.1:9"])
        assert result.exit_code == 2, result.output
        assert result.stderr == (
            f"{old_plan}: this plan is older than this shardline (plan version "
            f"{PLAN_VERSION - 1}, expects {PLAN_VERSION}): run `shardline compile PIPELINE.yaml` "
            "with the shardline that runs it\n"
        )
