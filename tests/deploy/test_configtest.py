"""Config unit tests (``shardline test``): loading test files, running cases, reporting."""

from __future__ import annotations

import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from deploy.cli import test as configtest_cli
from deploy.pipeline.cases import FixtureFetch, find_test_file, load_suite, run_suite, same
from deploy.pipeline.problems import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "clickstream"

PIPELINE = """\
name: shop
stream:
  name: shop-events
sinks:
  orders:
    type: dynamodb
    table: shop-orders
    key: order_id
  everything:
    type: stdout
  dlq:
    type: sqs
    queue: shop-dlq
functions:
  route:
    on_failure: dlq
    filter_pushdown: false
    processors:
      - filter:
          match: {kind: [order, click]}
      - enrich:
          lookup: {table: shop-users, key: user_id, into: user}
          timestamp: at
      - route:
          - when: {kind: [order]}
            to: [orders]
          - default: [everything]
  pushed:
    filter_pushdown: true
    processors:
      - filter:
          match: {kind: [order]}
    route: [everything]
"""

PASSING = """\
now: 2026-03-01T12:00:00Z
lookups:
  shop-users:
    ada: {name: Ada}
    "7": {name: Seven}
tests:
  - name: an order goes to orders with its user and the file's time
    function: route
    input:
      - json: {kind: order, order_id: o1, user_id: ada}
    expect:
      sinks:
        orders:
          - {kind: order, order_id: o1, user_id: ada, user: {user_id: ada, name: Ada},
             at: "2026-03-01T12:00:00.000Z"}
"""


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with the shop pipeline, as the working directory (names print as typed)."""
    _write(tmp_path, "pipeline.yaml", PIPELINE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(configtest_cli.test, list(args))
    return result.exit_code, result.stdout, result.stderr


def _problems(path: Path | str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_suite(path, env={})
    return [str(p) for p in info.value.errors]


class TestExample:
    def test_the_clickstream_tests_pass_through_the_command(self) -> None:
        """Every case of the shipped example passes: one line per case, a total, exit 0."""
        code, out, err = _invoke(str(EXAMPLE / "pipeline.test.yaml"))
        assert code == 0, out + err
        lines = out.splitlines()
        suite = load_suite(EXAMPLE / "pipeline.test.yaml")
        assert len(lines) == len(suite.cases) + 1
        assert all(line.startswith("PASS  ") for line in lines[:-1])
        assert lines[-1] == f"{len(suite.cases)} passed, 0 failed"

    def test_the_example_covers_every_function_dead_letters_drops_and_aggregates(self) -> None:
        """The shipped cases exercise what the brief asks of them."""
        suite = load_suite(EXAMPLE / "pipeline.test.yaml")
        assert {case.function for case in suite.cases} == set(suite.plan["functions"])
        assert any(case.dead_letters for case in suite.cases)
        assert any(case.dropped for case in suite.cases)
        assert any(item.parts for case in suite.cases for item in case.inputs)
        routed = {sink for case in suite.cases for sink, docs in case.sinks.items() if docs}
        assert routed == {"orders", "search", "archive", "per-minute"}

    def test_a_pipeline_file_finds_the_tests_beside_it(self) -> None:
        """`shardline test pipeline.yaml` runs pipeline.test.yaml."""
        assert find_test_file(EXAMPLE / "pipeline.yaml") == EXAMPLE / "pipeline.test.yaml"
        code, out, _ = _invoke(str(EXAMPLE / "pipeline.yaml"))
        assert code == 0
        assert "passed, 0 failed" in out


class TestRunning:
    def test_a_passing_case_prints_its_summary_line(self, shop: Path) -> None:
        """The lookup answers from the file's items; the enricher's clock is the file's now."""
        _write(shop, "pipeline.test.yaml", PASSING)
        code, out, _ = _invoke("pipeline.test.yaml")
        assert code == 0, out
        assert out.splitlines() == [
            "PASS  an order goes to orders with its user and the file's time (route): "
            "1 in, orders 1",
            "1 passed, 0 failed",
        ]

    def test_a_failing_case_prints_a_diff_per_sink_and_exits_1(self, shop: Path) -> None:
        """Expected and got, record by record, as a -/+ diff; extra records are named."""
        _write(shop, "pipeline.test.yaml", """\
            lookups: {shop-users: {}}
            tests:
              - name: wrong amount
                function: route
                input:
                  - json: {kind: order, order_id: o1, amount: 25.5}
                  - json: {kind: click, page: /}
                  - json: {kind: click, page: /cart}
                expect:
                  sinks:
                    orders:
                      - {kind: order, order_id: o1, amount: 5, at: "2026-01-01T00:00:00.000Z"}
                    everything:
                      - {kind: click, page: /, at: "2026-01-01T00:00:00.000Z"}
            """)  # fmt: skip
        code, out, _ = _invoke("pipeline.test.yaml")
        assert code == 1
        assert out.startswith("FAIL  wrong amount (route): 3 in, orders 1, everything 2\n")
        assert "  sink orders: record [0] differs (- expected, + got):\n" in out
        assert '    -  "amount": 5,\n    +  "amount": 25.5,\n' in out
        assert '       "order_id": "o1"\n' in out  # the rest of the record, as context
        assert "  sink everything: expected 1 record, got 2\n" in out
        assert "  sink everything: record [1] written, not expected:\n" in out
        assert '    + {"at": "2026-01-01T00:00:00.000Z", "kind": "click", "page": "/cart"}' in out
        assert out.endswith("0 passed, 1 failed\n")

    def test_subset_compares_only_the_keys_written_and_diffs_only_those(self, shop: Path) -> None:
        """Extra keys pass; a wrong one shows without the keys the case left out."""
        _write(shop, "pipeline.test.yaml", """\
            compare: subset
            lookups: {shop-users: {ada: {name: Ada}}}
            tests:
              - name: subset passes
                function: route
                input: [{json: {kind: order, order_id: o1, user_id: ada}}]
                expect: {sinks: {orders: [{order_id: o1, user: {name: Ada}}]}}
              - name: subset fails
                function: route
                input: [{json: {kind: order, order_id: o1, user_id: ada}}]
                expect: {sinks: {orders: [{order_id: o2}]}}
            """)  # fmt: skip
        code, out, _ = _invoke("pipeline.test.yaml")
        assert code == 1
        assert out.splitlines()[0].startswith("PASS  subset passes")
        assert "FAIL  subset fails" in out
        assert '     {\n    -  "order_id": "o2"\n    +  "order_id": "o1"\n     }\n' in out
        assert "user_id" not in out.split("FAIL  subset fails")[1]

    def test_dead_letters_are_matched_by_reason_and_step(self, shop: Path) -> None:
        """A reason substring and a step claim one dead letter each; a wrong one is named."""
        _write(shop, "pipeline.test.yaml", """\
            lookups: {shop-users: {}}
            tests:
              - name: letters
                function: route
                input:
                  - text: not json
                  - base64: 84mawgAAAAAAAAAAAAAAAAAAAAAAAAA=   # magic bytes, no aggregate:
                expect:                                        # plain data on this stream
                  dead_letters:
                    - {reason: is not JSON, step: "processors[0].filter", count: 2}
              - name: wrong letters
                function: route
                input: [{text: not json}]
                expect: {dead_letters: [no such reason]}
            """)  # fmt: skip
        code, out, _ = _invoke("pipeline.test.yaml")
        assert code == 1
        lines = out.splitlines()
        assert lines[0] == "PASS  letters (route): 2 in, dead letters 2"
        assert lines[1] == "FAIL  wrong letters (route): 1 in, dead letters 1"
        assert lines[2] == (
            "  dead letters: expected 1 with reason containing 'no such reason', got 0"
        )
        assert lines[3].startswith("  dead letters: not expected: processors[0].filter: record ")

    def test_filter_criteria_drop_before_the_function_as_in_aws(self, shop: Path) -> None:
        """With pushdown, AWS drops non-JSON records: they are dropped, not dead-lettered."""
        _write(shop, "pipeline.test.yaml", """\
            tests:
              - name: pushed down
                function: pushed
                input: [{text: not json}, {json: {kind: click}}, {json: {kind: order}}]
                expect:
                  sinks: {everything: [{kind: order}]}
                  dropped: 2
            """)  # fmt: skip
        code, out, _ = _invoke("pipeline.test.yaml")
        assert code == 0, out
        assert "dropped 2 (filtered by pushdown 2)" in out

    def test_without_pushdown_non_json_reaches_the_function_and_fails_there(
        self, shop: Path
    ) -> None:
        """Pushdown off (the default): nothing is dropped before the function, so a record
        that is not JSON fails at the first filter (no on_failure here: reported failed),
        as AWS would deliver it."""
        text = (shop / "pipeline.yaml").read_text().replace("    filter_pushdown: true\n", "")
        (shop / "pipeline.yaml").write_text(text)
        _write(shop, "pipeline.test.yaml", """\
            tests:
              - name: not pushed down
                function: pushed
                input:
                  - {text: not json, partition_key: a}
                  - {json: {kind: click}, partition_key: b}
                  - {json: {kind: order}, partition_key: b}
                expect:
                  sinks: {everything: [{kind: order}]}
                  failed: 1
                  dropped: 1
            """)  # fmt: skip
        code, out, _ = _invoke("pipeline.test.yaml")
        assert code == 0, out
        assert "failed 1, dropped 1" in out
        assert "filtered by pushdown" not in out

    def test_aggregated_input_is_one_kinesis_record_of_user_records(self, shop: Path) -> None:
        """The function de-aggregates it; each user record is routed on its own."""
        _write(shop, "pipeline.test.yaml", """\
            compare: subset
            lookups: {shop-users: {}}
            tests:
              - name: aggregate
                function: route
                input:
                  - aggregate:
                      - {json: {kind: order, order_id: o1}, partition_key: a}
                      - {json: {kind: view}, partition_key: b}
                      - {json: {kind: click}, partition_key: c}
                expect:
                  sinks: {orders: [{order_id: o1}], everything: [{kind: click}]}
                  dropped: 1
            """)  # fmt: skip
        code, out, _ = _invoke("pipeline.test.yaml")
        assert code == 0, out
        assert "3 in, orders 1, everything 1, dropped 1" in out


class TestBadFiles:
    def test_each_problem_names_file_line_path_and_fix(self, shop: Path) -> None:
        """Every mistake is reported in one pass, at its own line, exit 2."""
        _write(shop, "pipeline.test.yaml", """\
            tests:
              - name: typo
                function: rout
                input:
                  - jsn: {kind: order}
                  - {json: {}, text: x}
                  - base64: "%%"
                expect:
                  sinks:
                    order: []
                    dlq: []
                  dead_lettrs: 1
            """)  # fmt: skip
        code, out, err = _invoke("pipeline.test.yaml")
        assert code == 2
        assert out == ""
        assert err.splitlines() == [
            "pipeline.test.yaml:3: tests[0].function: unknown function 'rout' "
            "(did you mean 'route'?)",
            "pipeline.test.yaml:5: tests[0].input[0].jsn: unknown key 'jsn' (did you mean 'json'?)",
            "pipeline.test.yaml:5: tests[0].input[0]: give exactly one of json, text, base64, "
            "aggregate per record, got none",
            "pipeline.test.yaml:6: tests[0].input[1]: give exactly one of json, text, base64, "
            "aggregate per record, got json and text",
            "pipeline.test.yaml:7: tests[0].input[2].base64: not valid base64 (Only base64 "
            "data is allowed); for readable bytes use text: instead",
            "pipeline.test.yaml:12: tests[0].expect.dead_lettrs: unknown key 'dead_lettrs' "
            "(did you mean 'dead_letters'?)",
        ]

    def test_sinks_and_lookups_are_checked_against_the_function(self, shop: Path) -> None:
        """Unknown sinks list the known ones; the dead-letter sink points to dead_letters;
        a looked-up table without items says how to give them."""
        _write(shop, "pipeline.test.yaml", """\
            tests:
              - name: sinks
                function: route
                input: [{json: {}}]
                expect:
                  sinks:
                    ordrs: []
                    dlq: []
            """)  # fmt: skip
        assert _problems("pipeline.test.yaml") == [
            "pipeline.test.yaml:2: tests[0]: function 'route' looks up DynamoDB table "
            "'shop-users': give its items as 'lookups: {shop-users: {KEY: {...}}}' at the top "
            "of the file or in the case ({} is an empty table)",
            "pipeline.test.yaml:7: tests[0].expect.sinks.ordrs: unknown sink 'ordrs' (did you "
            "mean 'orders'?)",
            "pipeline.test.yaml:8: tests[0].expect.sinks.dlq: 'dlq' is the function's "
            "on_failure sink: expect its records under dead_letters",
        ]

    def test_a_pipeline_with_several_functions_needs_the_case_to_name_one(self, shop: Path) -> None:
        """Which function runs is never guessed."""
        _write(shop, "pipeline.test.yaml", """\
            tests:
              - name: which
                input: [{json: {}}]
                expect: {}
            """)  # fmt: skip
        assert _problems("pipeline.test.yaml") == [
            "pipeline.test.yaml:2: tests[0].function: required: the pipeline has 2 functions "
            "(route, pushed); name the one this case runs",
        ]

    def test_a_broken_pipeline_reports_its_own_lines(self, shop: Path) -> None:
        """The pipeline's problems come with the pipeline's file name and lines."""
        _write(shop, "broken.yaml", PIPELINE.replace("key: order_id", "key: [order_id]"))
        _write(shop, "broken.test.yaml", "tests: [{name: x, input: [{json: {}}], expect: {}}]\n")
        code, _, err = _invoke("broken.test.yaml")
        assert code == 2
        assert err.splitlines() == [
            "broken.yaml:8: sinks.orders.key: expected a string, got a list",
        ]

    def test_a_missing_pipeline_and_broken_yaml_are_reported(self, shop: Path) -> None:
        """A file name that leads nowhere, and YAML that does not parse, each get a line."""
        _write(shop, "other.test.yaml", "pipeline: nope.yaml\ntests: [{name: x}]\n")
        assert _problems("other.test.yaml")[0] == (
            "other.test.yaml:1: pipeline: no pipeline file 'nope.yaml' (the name is relative "
            "to the test file's folder): fix the name, or set 'pipeline:'"
        )
        _write(shop, "pipeline.test.yaml", "tests:\n  - name: [x\n")
        assert _problems("pipeline.test.yaml")[0].startswith("pipeline.test.yaml:3: syntax: ")


class TestFixtureFetch:
    def test_keys_are_text_and_match_equal_numbers(self) -> None:
        """A fixture key "7" answers the record value 7 (and 7.0) and the string "7"; the
        item carries its key attribute, as DynamoDB returns it."""
        fetch = FixtureFetch({"7": {"name": "Seven"}, "ada": {"name": "Ada"}}, "user_id")
        found = fetch([Decimal(7), "7", "ada", "bob"]).items
        assert found == {
            Decimal(7): {"user_id": 7, "name": "Seven"},
            "7": {"user_id": "7", "name": "Seven"},
            "ada": {"user_id": "ada", "name": "Ada"},
        }

    def test_each_answer_is_a_fresh_copy(self) -> None:
        """A step changing one record's item cannot change the next case's."""
        items = {"k": {"tags": ["a"]}}
        fetch = FixtureFetch(items, "id")
        fetch(["k"]).items["k"]["tags"].append("b")
        assert fetch(["k"]).items["k"]["tags"] == ["a"]


class TestSame:
    def test_json_equality_keeps_booleans_apart_from_numbers(self) -> None:
        """1 and 1.0 are equal JSON numbers; true is not 1."""
        assert same([1, {"a": 2.0}], [1.0, {"a": 2}])
        assert not same({"a": True}, {"a": 1})
        assert not same({"a": 1}, {"a": 1, "b": 2})

    def test_subset_ignores_extra_keys_at_every_level_but_not_list_items(self) -> None:
        """Lists still match item for item."""
        assert same({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}, "d": 3}, subset=True)
        assert not same({"a": [1]}, {"a": [1, 2]}, subset=True)
        assert not same({"a": 1}, {"b": 1}, subset=True)


def test_run_suite_runs_every_case_in_file_order(shop: Path) -> None:
    """One result per case, in order, each knowing its case."""
    _write(shop, "pipeline.test.yaml", PASSING)
    results = run_suite(load_suite("pipeline.test.yaml"))
    assert [r.case.name for r in results] == [
        "an order goes to orders with its user and the file's time"
    ]
    assert results[0].passed
    assert results[0].written == {"orders": 1, "everything": 0}
