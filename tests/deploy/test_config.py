"""Loading, validating and compiling the pipeline file (deploy.pipeline.config and its helpers)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

import deploy
from deploy.pipeline.config import (
    ConfigError,
    PipelineConfig,
    Problem,
    compile_plan,
    load_config,
    load_plan_from_file,
    parse_config,
)
from deploy.pipeline.interpolate import interpolate
from deploy.pipeline.problems import format_path

BROKEN = Path(__file__).parent / "broken"
ENV = {"OPENSEARCH_URL": "https://search-clickstream.us-east-1.es.amazonaws.com"}

# The example of CONFIG.md (the contract), verbatim.
CLICKSTREAM = """\
name: clickstream                 # stack name and resource-name prefix
region: us-east-1                 # optional; else the usual AWS environment/profile

stream:
  name: clickstream-events
  mode: on_demand                 # on_demand | provisioned
  retention_hours: 24
  encryption: kms                 # kms (alias/aws/kinesis) | none
  aggregated: false               # true when producers use KPL aggregation

sinks:                            # named once, used by any function's routes
  orders:
    type: dynamodb
    table: clickstream-orders
    key: order_id                 # partition key attribute, from the record
    mode: latest
  search:
    type: opensearch
    endpoint: ${OPENSEARCH_URL}   # ${VAR} and ${VAR:-default} are read from the environment
    index: "events-{arrival:%Y.%m.%d}"
    id: event_id                  # record field; default: the record's event id
    auth: sigv4                   # sigv4 | none
  archive:
    type: s3
    bucket: clickstream-archive
    prefix: raw/
    partition: "dt={arrival:%Y-%m-%d}/hour={arrival:%H}"
    compression: gzip             # gzip | none; objects are JSON lines
  dlq:
    type: sqs
    queue: clickstream-dlq

functions:                        # each one is a Lambda with its own event source mapping
  enrich-and-route:
    memory_mb: 256
    timeout_s: 60
    batch:
      size: 500
      window_s: 1
      starting_position: trim_horizon   # trim_horizon | latest | at_timestamp
      parallelization: 1
      bisect_on_error: true
      max_retries: 3
      max_record_age_s: 3600
    ordering: per_key             # strict | per_key | none
    filter_pushdown: true         # leading match filters also become FilterCriteria in AWS
    on_failure: dlq
    processors:
      - filter:
          match: {event_type: [click, purchase]}   # Lambda/EventBridge content pattern
      - filter:
          expr: "amount > `0` || event_type == 'click'"   # JMESPath, truthy keeps
      - enrich:
          set: {pipeline: clickstream}
          timestamp: processed_at
      - enrich:
          lookup: {table: users, key: user_id, into: user, on_miss: keep}
      - route:
          - when: {event_type: [purchase]}
            to: [orders, search]
          - default: [archive]
  archive-all:
    processors: []
    route: [archive]              # shorthand: every record goes to these sinks
"""

MINIMAL = """\
name: mini
stream:
  name: mini-events
sinks:
  out:
    type: stdout
functions:
  main:
    processors: []
    route: [out]
"""


def _problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="pipeline.yaml", env=env or {})
    return [str(p) for p in info.value.errors]


def _plan(text: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    return compile_plan(parse_config(text, source="pipeline.yaml", env=env or {}))


def _broken_cases() -> list[Any]:
    cases = []
    for path in sorted(BROKEN.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        expected = [
            line.removeprefix("# expect: ")
            for line in text.splitlines()
            if line.startswith("# expect: ")
        ]
        cases.append(pytest.param(text, expected, id=path.stem))
    return cases


class TestBrokenFiles:
    @pytest.mark.parametrize(("text", "expected"), _broken_cases())
    def test_reports_exactly_the_expected_problems(self, text: str, expected: list[str]) -> None:
        """Each broken file yields its `# expect:` lines, no fewer and no more (no cascades)."""
        assert expected, "a broken file states what it expects"
        assert sorted(_problems(text)) == sorted(expected)

    def test_there_are_at_least_twenty_cases(self) -> None:
        """The suite of broken files keeps its breadth."""
        assert len(_broken_cases()) >= 20

    def test_the_contract_example_message_is_reproduced_verbatim(self) -> None:
        """CONFIG.md's sample error is what a user really sees."""
        text = (BROKEN / "unknown_sink_in_route.yaml").read_text(encoding="utf-8")
        assert _problems(text) == [
            "pipeline.yaml:31: functions.enrich-and-route.processors[3].route[0].to: "
            "unknown sink 'order' (known: orders, search, archive, dlq)"
        ]


class TestValidExample:
    def test_contract_example_validates(self) -> None:
        """The CONFIG.md example is valid once OPENSEARCH_URL is set."""
        cfg = parse_config(CLICKSTREAM, source="pipeline.yaml", env=ENV)
        assert isinstance(cfg, PipelineConfig)
        assert cfg.document["sinks"]["search"]["endpoint"] == ENV["OPENSEARCH_URL"]

    def test_plan_has_every_default_filled(self) -> None:
        """The runtime never needs to know a default: absent settings appear explicitly."""
        plan = _plan(CLICKSTREAM, ENV)
        assert plan["version"] == 1
        assert plan["name"] == "clickstream"
        assert plan["region"] == "us-east-1"
        assert plan["stream"] == {
            "name": "clickstream-events",
            "mode": "on_demand",
            "shards": None,
            "retention_hours": 24,
            "encryption": "kms",
            "aggregated": False,
        }
        assert plan["sinks"] == {
            "orders": {
                "type": "dynamodb",
                "table": "clickstream-orders",
                "key": "order_id",
                "mode": "latest",
            },
            "search": {
                "type": "opensearch",
                "endpoint": ENV["OPENSEARCH_URL"],
                "index": "events-{arrival:%Y.%m.%d}",
                "id": "event_id",
                "auth": "sigv4",
            },
            "archive": {
                "type": "s3",
                "bucket": "clickstream-archive",
                "prefix": "raw/",
                "partition": "dt={arrival:%Y-%m-%d}/hour={arrival:%H}",
                "compression": "gzip",
            },
            "dlq": {
                "type": "sqs",
                "queue": "clickstream-dlq",
                "overflow_bucket": "clickstream-archive",
            },
        }
        assert plan["functions"]["archive-all"] == {
            "memory_mb": 256,
            "timeout_s": 60,
            "batch": {
                "size": 100,
                "window_s": 0,
                "starting_position": "trim_horizon",
                "starting_timestamp": None,
                "parallelization": 1,
                "bisect_on_error": True,
                "max_retries": 3,
                "max_record_age_s": 86400,
                "consumer": "shared",
            },
            "ordering": "per_key",
            "filter_pushdown": False,
            "filter_criteria": [],
            "on_failure": None,
            "processors": [],
            "route": ["archive"],
        }

    def test_leading_match_filters_become_filter_criteria(self) -> None:
        """The CONFIG.md example's stream is not aggregated: its first filter is pushed."""
        fn = _plan(CLICKSTREAM, ENV)["functions"]["enrich-and-route"]
        assert fn["filter_criteria"] == [{"data": {"event_type": ["click", "purchase"]}}]

    def test_processors_are_normalised(self) -> None:
        """Route lists become {mode: first, rules}; lookups get their defaults."""
        fn = _plan(CLICKSTREAM, ENV)["functions"]["enrich-and-route"]
        assert fn["on_failure"] == "dlq"
        assert fn["route"] is None
        assert fn["batch"]["size"] == 500
        assert fn["processors"] == [
            {"filter": {"match": {"event_type": ["click", "purchase"]}}},
            {"filter": {"expr": "amount > `0` || event_type == 'click'"}},
            {"enrich": {"set": {"pipeline": "clickstream"}, "timestamp": "processed_at"}},
            {
                "enrich": {
                    "lookup": {
                        "table": "users",
                        "key": "user_id",
                        "into": "user",
                        "on_miss": "keep",
                        "ttl_s": None,
                    }
                }
            },
            {
                "route": {
                    "mode": "first",
                    "rules": [
                        {"when": {"event_type": ["purchase"]}, "to": ["orders", "search"]},
                        {"default": ["archive"]},
                    ],
                }
            },
        ]

    def test_plan_round_trips_through_orjson(self) -> None:
        """The plan is plain JSON data: what the runtime loads equals what was compiled."""
        plan = _plan(CLICKSTREAM, ENV)
        assert orjson.loads(orjson.dumps(plan)) == plan

    def test_load_from_file_uses_the_path_as_given(self, tmp_path: Path) -> None:
        """load_config reads a file; messages start with the path the user typed."""
        good = tmp_path / "pipeline.yaml"
        good.write_text(CLICKSTREAM, encoding="utf-8")
        assert load_plan_from_file(good, env=ENV) == _plan(CLICKSTREAM, ENV)
        with pytest.raises(ConfigError) as info:
            load_config(str(good), env={})
        assert str(info.value).startswith(f"{good}:19: sinks.search.endpoint: ")

    def test_unreadable_file_is_one_problem(self, tmp_path: Path) -> None:
        """A missing file is reported like any other problem, not as a traceback."""
        with pytest.raises(ConfigError) as info:
            load_config(tmp_path / "nope.yaml")
        (problem,) = info.value.errors
        assert problem.path == "(file)"
        assert problem.message == "cannot read: No such file or directory"

    def test_line_table_locates_keys_and_items(self) -> None:
        """Later steps can point their own errors at the file."""
        cfg = parse_config(CLICKSTREAM, source="pipeline.yaml", env=ENV)
        assert cfg.line_of(("sinks", "dlq", "queue")) == 31
        assert cfg.line_of(("functions", "enrich-and-route", "processors", 4)) == 58
        assert cfg.line_of(("functions", "archive-all", "no-such-key")) == 62


class TestAllProblemsAtOnce:
    def test_three_problems_give_three_lines(self) -> None:
        """Validation does not stop at the first problem; problems come in line order."""
        text = MINIMAL.replace("  name: mini-events", "  name: mini-events\n  mode: fast")
        text = text.replace("    route: [out]", "    route: [nowhere]")
        text = text.replace("name: mini\n", "name: mini\nextra: 1\n")
        expected = [
            "pipeline.yaml:2: extra: unknown key 'extra' "
            "(allowed: name, region, stream, sinks, functions, metrics, log_payloads)",
            "pipeline.yaml:5: stream.mode: expected one of on_demand, provisioned, got 'fast'",
            "pipeline.yaml:12: functions.main.route: unknown sink 'nowhere' (known: out)",
        ]
        assert _problems(text) == expected
        with pytest.raises(ConfigError) as info:
            parse_config(text, source="pipeline.yaml", env={})
        assert str(info.value).splitlines() == expected

    def test_problem_prints_as_file_line_path_message(self) -> None:
        """The printed form is the one editors and CI annotators parse."""
        problem = Problem("p.yaml", 7, "stream.mode", "expected one of on_demand, provisioned")
        assert str(problem) == "p.yaml:7: stream.mode: expected one of on_demand, provisioned"

    def test_paths_use_dots_and_indexes(self) -> None:
        """Keys join with dots, list items show as [i]."""
        assert format_path(("functions", "f", "processors", 3, "route", 0)) == (
            "functions.f.processors[3].route[0]"
        )


class TestInterpolation:
    def test_default_is_used_when_unset(self) -> None:
        """${VAR:-default} falls back without an error."""
        text = MINIMAL.replace("mini-events", "mini-${STAGE:-dev}")
        assert _plan(text)["stream"]["name"] == "mini-dev"
        assert _plan(text, {"STAGE": "prod"})["stream"]["name"] == "mini-prod"

    def test_double_dollar_is_a_literal_dollar(self) -> None:
        """$$ escapes, and is not read as the start of a reference."""
        text = MINIMAL.replace(
            "    processors: []",
            "    processors:\n      - enrich:\n          set: {price: 'US$$5 ${X:-x}'}",
        )
        enrich = _plan(text)["functions"]["main"]["processors"][0]["enrich"]
        assert enrich == {"set": {"price": "US$5 x"}}

    def test_plain_values_are_read_again_after_interpolation(self) -> None:
        """Unquoted ${SHARDS} becomes an integer; quoted it stays a string."""
        text = MINIMAL.replace("  name: mini-events", "  name: mini-events\n  mode: provisioned")
        plain = text.replace("mode: provisioned", "mode: provisioned\n  shards: ${SHARDS:-2}")
        assert _plan(plain)["stream"]["shards"] == 2
        quoted = text.replace("mode: provisioned", "mode: provisioned\n  shards: '${SHARDS:-2}'")
        assert _problems(quoted) == ["pipeline.yaml:5: stream.shards: expected an integer, got '2'"]

    def test_env_mapping_replaces_the_process_environment(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An injected env is the only source; os.environ is the default."""
        monkeypatch.setenv("OPENSEARCH_URL", "https://from-os-environ.example.com")
        assert parse_config(CLICKSTREAM).document["sinks"]["search"]["endpoint"] == (
            "https://from-os-environ.example.com"
        )
        assert any("OPENSEARCH_URL" in p for p in _problems(CLICKSTREAM, env={}))

    @given(st.text())
    def test_escaping_every_dollar_gives_back_the_text(self, text: str) -> None:
        """Doubling each $ is always a safe way to write a literal."""
        assert interpolate(text.replace("$", "$$"), {}) == (text, [])

    @given(st.text().filter(lambda t: "$" not in t))
    def test_text_without_dollar_is_unchanged(self, text: str) -> None:
        """Interpolation never touches text without a $."""
        assert interpolate(text, {"A": "b"}) == (text, [])


class TestYamlDetails:
    def test_timestamps_and_yaml11_words_load_predictably(self) -> None:
        """Unquoted dates stay text; yes is a boolean; keys keep their spelling."""
        text = MINIMAL.replace("  name: mini-events", "  name: mini-events\n  aggregated: yes")
        text = text.replace(
            "    processors: []",
            "    processors:\n      - enrich:\n          set: {since: 2024-05-01, on: 1}",
        )
        plan = _plan(text)
        assert plan["stream"]["aggregated"] is True
        enrich = plan["functions"]["main"]["processors"][0]["enrich"]
        assert enrich == {"set": {"since": "2024-05-01", "on": 1}}

    def test_anchors_and_merge_keys_work(self) -> None:
        """Shared settings can be written once."""
        text = (
            MINIMAL.replace(
                "  main:\n",
                "  main: &base\n    memory_mb: 512\n",
            )
            + "  second:\n    <<: *base\n    timeout_s: 30\n"
        )
        functions = _plan(text)["functions"]
        assert functions["second"]["memory_mb"] == 512
        overridden = _plan(text + "    memory_mb: 1024\n")["functions"]["second"]
        assert overridden["memory_mb"] == 1024
        assert functions["second"]["timeout_s"] == 30
        assert functions["second"]["route"] == ["out"]

    def test_duplicate_key_in_flow_mapping(self) -> None:
        """Duplicates are caught in {a: 1, a: 2} as in block mappings."""
        text = MINIMAL.replace("  out:\n    type: stdout", "  out: {type: stdout, type: s3}")
        assert _problems(text) == [
            "pipeline.yaml:5: sinks.out: duplicate key 'type' (first on line 5)"
        ]

    def test_more_than_one_document_is_a_syntax_error(self) -> None:
        """A pipeline file holds one document."""
        assert _problems(MINIMAL + "---\nname: other\n") == [
            "pipeline.yaml:11: syntax: a second document ('---'): a pipeline file holds one; "
            "remove it or split the file"
        ]


class TestCompile:
    def test_processors_may_be_omitted_when_the_route_shorthand_is_all(self) -> None:
        """`route: [sinks]` alone is a whole function: absent processors means none."""
        text = MINIMAL.replace("    processors: []\n", "")
        assert "processors" not in text
        function = _plan(text)["functions"]["main"]
        assert function["processors"] == []
        assert function["route"] == ["out"]

    def test_omitted_processors_and_no_route_still_routes_nowhere(self) -> None:
        """Without processors and without the shorthand the function is told it routes nowhere."""
        text = MINIMAL.replace("    processors: []\n    route: [out]\n", "    memory_mb: 256\n")
        assert _problems(text) == [
            "pipeline.yaml:8: functions.main: routes nowhere: add 'route: [out]' to send every "
            "record to a sink, or a '- route:' processor with rules"
        ]

    def test_filter_pushdown_is_off_unless_asked_for(self) -> None:
        """AWS drops non-JSON records silently under pushdown: it is the user's choice, so a
        function that does not ask gets no FilterCriteria, and validate notes nothing."""
        text = MINIMAL.replace(
            "    processors: []", "    processors:\n      - filter:\n          match: {a: [1]}"
        )
        cfg = parse_config(text, env={})
        assert cfg.normalized["functions"]["main"]["filter_pushdown"] is False
        assert compile_plan(cfg)["functions"]["main"]["filter_criteria"] == []
        assert cfg.notes == ()
        on = parse_config(text.replace("    route:", "    filter_pushdown: true\n    route:"))
        assert compile_plan(on)["functions"]["main"]["filter_criteria"] == [{"data": {"a": [1]}}]
        assert [n.path for n in on.notes] == ["functions.main.filter_pushdown"]

    def test_more_than_two_shared_functions_are_noted_with_efo_as_the_fix(self) -> None:
        """Each shard's reads are split among the functions without consumer: efo: a third
        one is noted (not an error) at the functions section, naming the fix."""
        three = MINIMAL.replace(
            "functions:\n",
            "functions:\n  b: {route: [out]}\n  c: {route: [out]}\n",
        )
        cfg = parse_config(three, env={})
        (note,) = cfg.notes
        assert note.path == "functions"
        assert note.line == three.splitlines().index("functions:") + 1
        assert "3 functions share each shard's 5 reads/s and 2 MB/s" in note.message
        assert "consumer: efo" in note.message
        efo = three.replace("c: {route: [out]}", "c: {route: [out], batch: {consumer: efo}}")
        assert parse_config(efo, env={}).notes == ()

    def test_now_in_a_sink_name_is_noted_at_its_line(self) -> None:
        """CONFIG.md allows {now:FMT} in index, prefix and partition, but a record delivered
        again later lands under another name (a second copy): validate warns at the line and
        proposes {arrival:FMT} (tests/integration/test_redelivery_templates.py shows the copy)."""
        cfg = parse_config(NOW_IN_SINK_NAMES, source="pipeline.yaml", env={})
        assert [(n.path, n.line) for n in cfg.notes] == [
            ("sinks.archive.partition", 9),
            ("sinks.search.index", 13),
        ]
        assert "use '{arrival:%H}'" in cfg.notes[0].message
        assert "use '{arrival:%Y.%m.%d}'" in cfg.notes[1].message

    def test_metrics_off_with_an_s3_on_failure_is_noted(self) -> None:
        """The template alarms on dead letters in an s3 on_failure bucket through the
        function's RecordsDeadLettered metric: with metrics off they would raise none, so
        validate says so (a queue's depth alarm needs no metric: no note)."""
        vault = MINIMAL.replace(
            "    type: stdout\n", "    type: stdout\n  vault: {type: s3, bucket: mini-vault}\n"
        ).replace("    route: [out]\n", "    route: [out]\n    on_failure: vault\n")
        assert parse_config(vault, env={}).notes == ()
        cfg = parse_config("metrics: false\n" + vault, env={})
        (note,) = cfg.notes
        assert (note.path, note.line) == ("metrics", 1)
        assert "dead letters of main in an s3 on_failure bucket raise no alarm" in note.message
        queue = vault.replace("{type: s3, bucket: mini-vault}", "{type: sqs, queue: mini-vault}")
        assert parse_config("metrics: false\n" + queue, env={}).notes == ()

    def test_the_local_mapping_drops_non_json_only_with_pushdown(self) -> None:
        """`run` builds its mapping from the plan: with pushdown its filter drops a record
        that is not JSON, as AWS does; without, it keeps it for the function to dead-letter."""
        from stream.esm.filter import RecordFilter  # noqa: PLC0415
        from stream.esm.rules import MappingSettings  # noqa: PLC0415

        text = MINIMAL.replace(
            "    processors: []", "    processors:\n      - filter:\n          match: {a: [1]}"
        )
        for pushdown, kept in (("", True), ("    filter_pushdown: true\n", False)):
            plan = _plan(text.replace("    route:", pushdown + "    route:"))
            settings = MappingSettings.from_plan(plan["functions"]["main"])
            keep = RecordFilter(settings.filter_criteria)
            assert keep.matches(b"not json", "k", "1", 0.0) is kept
            assert keep.matches(b'{"a": 1}', "k", "2", 0.0) is True

    @pytest.mark.parametrize(
        ("written", "epoch"),
        [
            ("2024-05-01T00:00:00Z", 1714521600),
            ("2024-05-01T02:00:00+02:00", 1714521600),
            ("2024-05-01", 1714521600),
            ("1714521600", 1714521600),
            ("1714521600.5", 1714521600.5),
        ],
    )
    def test_starting_timestamp_becomes_epoch_seconds(self, written: str, epoch: float) -> None:
        """ISO-8601 (no offset: UTC) or epoch seconds, always epoch seconds in the plan."""
        text = MINIMAL.replace(
            "    route: [out]",
            "    route: [out]\n    batch:\n      starting_position: at_timestamp\n"
            f"      starting_timestamp: {written}",
        )
        batch = _plan(text)["functions"]["main"]["batch"]
        assert batch["starting_position"] == "at_timestamp"
        assert batch["starting_timestamp"] == epoch

    def test_route_map_form_keeps_its_mode(self) -> None:
        """{mode: all, rules} passes through; a JMESPath string is a valid condition."""
        text = MINIMAL.replace(
            "    processors: []\n    route: [out]",
            "    processors:\n      - route:\n          mode: all\n          rules:\n"
            "            - {when: 'amount > `10`', to: [out]}\n",
        )
        route = _plan(text)["functions"]["main"]["processors"][0]["route"]
        assert route == {"mode": "all", "rules": [{"when": "amount > `10`", "to": ["out"]}]}

    def test_use_entry_gets_empty_with(self) -> None:
        """An importable use: path validates; absent `with` becomes {}."""
        text = MINIMAL.replace("    processors: []", "    processors:\n      - use: 'json:dumps'")
        assert _plan(text)["functions"]["main"]["processors"] == [{"use": "json:dumps", "with": {}}]

    def test_use_of_a_missing_name_suggests_installing_or_fixing(self) -> None:
        """A module without the named object gets the install-or-fix hint."""
        text = MINIMAL.replace("    processors: []", "    processors:\n      - use: 'json:nosuch'")
        assert _problems(text) == [
            "pipeline.yaml:10: functions.main.processors[0].use: module 'json' has no attribute "
            "'nosuch' (from 'json:nosuch') (pip install the package that provides 'json', "
            "or fix the path)"
        ]

    def test_use_of_a_module_that_fails_on_import_is_a_problem(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """User code raising at import time is reported at its line, not as a crash."""
        (tmp_path / "shardline_test_broken_plugin.py").write_text("raise RuntimeError('boom')\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        text = MINIMAL.replace(
            "    processors: []",
            "    processors:\n      - use: 'shardline_test_broken_plugin:Thing'",
        )
        (problem,) = _problems(text)
        assert problem.startswith("pipeline.yaml:10: functions.main.processors[0].use: ")
        assert "RuntimeError: boom" in problem

    def test_plugins_are_accepted_when_installed(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Registered processor names and sink types pass with their arguments as written
        (and their constructors accept them: validate builds them)."""
        from tests.deploy import first_hour_plugins  # noqa: PLC0415

        first_hour_plugins.register(
            monkeypatch, processors={"geoip": "AnyArguments"}, sinks={"clickhouse": "AnySink"}
        )
        text = MINIMAL.replace(
            "    type: stdout", "    type: stdout\n  ch:\n    type: clickhouse\n    table: t"
        ).replace(
            "    processors: []\n    route: [out]",
            "    processors:\n      - geoip: {field: ip}\n    route: [out, ch]",
        )
        plan = _plan(text)
        assert plan["sinks"]["ch"] == {"type": "clickhouse", "table": "t"}
        assert plan["functions"]["main"]["processors"] == [{"geoip": {"field": "ip"}}]


class TestPackage:
    def test_all_is_sorted_and_every_name_resolves(self) -> None:
        """deploy.__all__ is honest: sorted, and each name is importable from deploy."""
        assert deploy.__all__ == sorted(deploy.__all__)
        for name in deploy.__all__:
            assert getattr(deploy, name) is not None
        with pytest.raises(AttributeError):
            _ = deploy.no_such_name

    def test_importing_the_cli_does_not_load_yaml(self) -> None:
        """`shardline --help` stays fast: PyYAML loads only when a file is read."""
        code = "import sys, deploy, deploy.cli.main; print('yaml' in sys.modules)"
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parents[2],
            timeout=300,
        )
        assert out.stdout.strip() == "False"


NOW_IN_SINK_NAMES = """\
name: clickstream
stream:
  name: clickstream-events
sinks:
  archive:
    type: s3
    bucket: clickstream-archive
    prefix: "raw/{arrival:%Y}/"
    partition: "dt={arrival:%Y-%m-%d}/hour={now:%H}"
  search:
    type: opensearch
    endpoint: https://search-x.us-east-1.es.amazonaws.com
    index: "events-{now:%Y.%m.%d}"
functions:
  main:
    route: [archive, search]
"""
