"""A pipeline author's first hour (issue 20): nothing fails silently.

Each test drives the CLI as a user would (click's CliRunner) on a file of their own: what
used to pass with exit 0 and fail later, or print a raw library message, now says where and
how to fix it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner

from deploy.cli import main
from tests.deploy import first_hour_plugins

if TYPE_CHECKING:
    from pathlib import Path

IOT = """\
name: iot
stream:
  name: iot-readings
sinks:
  archive:
    type: stdout
  hook:
    type: webhook
    url: ftp://example.com/in
functions:
  convert:
    processors:
      - f2c: {feild: temperature}
      - enrich: {set: {unit: C}}
    route: [archive]
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in a temporary directory, so file names print as the user typed them."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


class TestPluginArguments:
    """Item 2: a plugin's constructor runs at validate, as at a Lambda cold start."""

    @pytest.fixture(autouse=True)
    def plugins(self, monkeypatch: pytest.MonkeyPatch) -> None:
        first_hour_plugins.register(monkeypatch)

    @pytest.mark.parametrize("command", ["validate", "compile", "template"])
    def test_a_step_and_a_sink_that_refuse_their_arguments_are_errors_at_their_lines(
        self, workdir: Path, command: str
    ) -> None:
        """`- f2c: {feild: ...}` is reported at the step's line, the bad sink at its own."""
        (workdir / "iot.yaml").write_text(IOT, encoding="utf-8")

        code, out, err = _cli(command, "iot.yaml")

        assert code == 2, (out, err)
        assert out == ""
        lines = err.splitlines()
        assert lines[0].startswith("iot.yaml:7: sinks.hook: sink 'hook' fails to start: "), err
        assert (
            "ValueError: webhook.url must be an http(s) URL, got 'ftp://example.com/in'"
            in (lines[0])
        )
        assert lines[1].startswith(
            "iot.yaml:13: functions.convert.processors[0]: processor 'f2c' fails to start: "
            "TypeError: "
        ), err
        assert "unexpected keyword argument 'feild'" in lines[1]
        assert len(lines) == 2, err

    def test_a_used_sink_failing_is_said_once_and_good_arguments_pass(self, workdir: Path) -> None:
        """A sink that two functions use is one error; fixed arguments validate."""
        text = IOT.replace("route: [archive]", "route: [archive, hook]") + (
            "  copy:\n    route: [hook]\n"
        )
        (workdir / "iot.yaml").write_text(text, encoding="utf-8")
        code, _, err = _cli("validate", "iot.yaml")
        assert code == 2
        assert err.count("sinks.hook:") == 1, err

        fixed = IOT.replace("feild", "field").replace("ftp://", "https://")
        (workdir / "iot.yaml").write_text(fixed, encoding="utf-8")
        code, out, err = _cli("validate", "iot.yaml")
        assert code == 0, err
        assert out == "iot.yaml: ok (1 function, 2 sinks)\n"

    def test_run_refuses_a_step_that_would_fail_at_init_before_reading(self, workdir: Path) -> None:
        """`run` says why on screen and exits non-zero, instead of failing every batch."""
        (workdir / "iot.yaml").write_text(IOT, encoding="utf-8")

        code, _, err = _cli("run", "iot.yaml", "--in-process", "--duration", "1")

        assert code == 2, err
        assert "iot.yaml:13: functions.convert.processors[0]: processor 'f2c' fails" in err


DEV_IOT = """\
name: iotdev
stream:
  name: iotdev-readings
sinks:
  archive:
    type: s3
    bucket: iotdev-archive
    prefix: raw/
  dlq:
    type: sqs
    queue: iotdev-dlq
functions:
  keep-readings:
    filter_pushdown: true
    on_failure: dlq
    processors:
      - filter:
          match: {kind: [reading]}
      - filter:
          expr: "temperature > `0`"
    route: [archive]
"""


DEV_LATEST = """\
name: latestdev
stream:
  name: latestdev-readings
sinks:
  latest:
    type: dynamodb
    table: latestdev-latest
    key: kind
    mode: latest
functions:
  keep-latest:
    route: [latest]
"""


def _readings(path: Path, n: int) -> dict[str, int]:
    """``n`` JSON lines: readings (some not above zero) and status lines."""
    counts = {"archive": 0, "pushdown": 0, "filtered": 0}
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            kind = "status" if i % 5 == 0 else "reading"
            temperature = (i % 7) - 2
            f.write(json.dumps({"id": i, "kind": kind, "temperature": temperature}) + "\n")
            if kind == "status":
                counts["pushdown"] += 1
            elif temperature > 0:
                counts["archive"] += 1
            else:
                counts["filtered"] += 1
    return counts


@pytest.mark.integration
class TestDevReconciles:
    """Item 1: `dev` refuses aggregates that pushdown would drop, and reconciles."""

    def test_aggregates_into_a_pushdown_function_are_refused_before_producing(
        self, workdir: Path
    ) -> None:
        """AWS would drop every aggregate silently: nothing is deployed or produced."""
        (workdir / "iot.yaml").write_text(DEV_IOT, encoding="utf-8")
        _readings(workdir / "readings.jsonl", 300)

        code, out, err = _cli(
            "dev", "iot.yaml", "--produce", "readings.jsonl", "--aggregate", "--until-idle", "1"
        )

        assert code == 2, err
        assert out == ""
        assert "iot.yaml: --aggregate would put KPL aggregates on stream 'iotdev-readings'" in err
        assert "keep-readings filters with pushdown" in err
        assert "Produce without --aggregate, or set stream.aggregated: true" in err
        assert not (workdir / ".shardline" / "build").exists()  # nothing was deployed

    def test_dev_prints_the_reconciliation_and_one_json_document(self, workdir: Path) -> None:
        """produced = filtered + filtered by pushdown + archive + dead-lettered, checked."""
        (workdir / "iot.yaml").write_text(DEV_IOT, encoding="utf-8")
        expected = _readings(workdir / "readings.jsonl", 300)

        code, out, err = _cli(
            "dev", "iot.yaml", "--produce", "readings.jsonl", "--until-idle", "1",
            "--duration", "120", "--json",
        )  # fmt: skip

        assert code == 0, err
        assert "reconciliation" in err
        check = [ln for ln in err.splitlines() if "produced = filtered + filtered by" in ln]
        assert len(check) == 1, err
        assert check[0].rstrip(" │").endswith("300 │   300 │ yes"), check
        summary = json.loads(out)
        assert summary["stores"]["archive"] == expected["archive"]
        counts = summary["functions"]["keep-readings"]
        assert counts["filtered_by_pushdown"] == expected["pushdown"]
        assert counts["filtered_by_steps"] == expected["filtered"]
        assert counts["written"] == {"archive": expected["archive"]}
        assert summary["reconciled"] is True
        # the table's last row says the same as the JSON document
        row = [ln for ln in err.splitlines() if ln.startswith("│ keep-readings │")][-1]
        cells = [c.strip() for c in row.split("│")[1:-1]]
        assert cells[1] == str(counts["records_in"])
        assert cells[3:6] == [
            str(expected["pushdown"]),
            str(expected["filtered"]),
            f"archive {expected['archive']}",
        ]

    def test_a_run_with_no_sink_to_count_is_not_failed_for_a_loss_it_cannot_see(
        self, workdir: Path
    ) -> None:
        """A `latest` table holds one item per key (a plugin sink: nothing dev reads back):
        no check applies, and dev had exited 1 saying records were missing from the stores,
        with an empty reconciliation table."""
        (workdir / "latest.yaml").write_text(DEV_LATEST, encoding="utf-8")
        _readings(workdir / "readings.jsonl", 40)

        code, out, err = _cli(
            "dev", "latest.yaml", "--produce", "readings.jsonl", "--until-idle", "1",
            "--duration", "120", "--json",
        )  # fmt: skip

        assert code == 0, err
        assert "missing from the stores" not in err
        assert "nothing to reconcile: no function sends every record" in " ".join(err.split())
        summary = json.loads(out)
        assert summary["reconciled"] is None
        assert summary["functions"]["keep-latest"]["written"] == {"latest": 40}

    def test_aggregates_put_by_another_producer_fail_the_reconciliation(
        self, workdir: Path
    ) -> None:
        """The case `dev --aggregate` used to hide: 300 records in one aggregate, dropped
        whole by FilterCriteria, add up to a few filtered by pushdown, nothing archived."""
        from deploy.local.demo import account  # noqa: PLC0415
        from deploy.local.dev import run_dev  # noqa: PLC0415
        from deploy.local.servers import LocalAWS  # noqa: PLC0415
        from deploy.pipeline.config import load_plan_from_file  # noqa: PLC0415
        from stream.aws import reset_clients  # noqa: PLC0415
        from stream.producer import Producer  # noqa: PLC0415

        (workdir / "iot.yaml").write_text(DEV_IOT, encoding="utf-8")
        _readings(workdir / "readings.jsonl", 300)
        lines = (workdir / "readings.jsonl").read_bytes().splitlines()

        with LocalAWS() as stack, stack.activated():
            reset_clients()
            plan = load_plan_from_file(workdir / "iot.yaml")

            def source(progress: Any) -> int:
                with Producer(plan["stream"]["name"], stack.client("kinesis"), aggregate=True) as p:
                    for i, line in enumerate(lines):
                        p.put(line, f"k{i}")  # one record per key fits in a call
                return len(lines)

            report = run_dev(plan, stack.client, source=source, until_idle=1.0, in_process=True)
            accounts = account(
                plan, report, 300, workdir / ".shardline" / "logs", {}, exact_sinks_only=True
            )
            reset_clients()

        assert report.stored is not None
        assert report.stored.per_sink["archive"] == 0
        ((what, produced, accounted),) = accounts.checks
        assert (
            what
            == "keep-readings: produced = filtered + filtered by pushdown + archive + dead-lettered"
        )
        assert produced == 300
        assert 0 < accounted < 10  # the aggregates, each one record to the mapping
        assert not accounts.reconciled


MINIMAL = """\
name: iot
stream:
  name: iot-readings
sinks:
  out:
    type: stdout
functions:
  convert:
    processors:
      - filter: {match: {kind: [reading]}}
    route: [out]
"""


class TestSmallerDefects:
    """Item 5: what validate, test and the packaging said badly or not at all."""

    def _validate(self, workdir: Path, text: str) -> tuple[int, list[str]]:
        (workdir / "p.yaml").write_text(text, encoding="utf-8")
        code, _, err = _cli("validate", "p.yaml")
        return code, err.splitlines()

    def test_a_function_name_too_long_with_the_pipeline_prefix_is_an_error_at_its_line(
        self, workdir: Path
    ) -> None:
        """79 characters with the prefix: validate refuses what template would."""
        name, long = "iot-sensors-plant-floor-a", "c" * 53  # each fine alone
        text = MINIMAL.replace("  convert:", f"  {long}:").replace("iot\n", f"{name}\n", 1)
        code, lines = self._validate(workdir, text)
        assert code == 2
        assert lines == [
            f"p.yaml:8: functions.{long}: the Lambda function name '{name}-{long}' (pipeline "
            "name, '-', function name) is 79 characters long, AWS allows 64: shorten the "
            "pipeline's name or this one (to at most 38 characters)"
        ]

    def test_the_dead_letter_queue_made_from_a_long_name_is_an_error_at_the_name(
        self, workdir: Path
    ) -> None:
        name = "n" * 77
        code, lines = self._validate(workdir, MINIMAL.replace("name: iot\n", f"name: {name}\n"))
        assert code == 2
        assert f"p.yaml:1: name: the dead-letter queue '{name}-dlq' made for functions" in (
            "\n".join(lines)
        )

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (
                MINIMAL.replace("  name: iot-readings", "\tname: iot-readings"),
                "p.yaml:3: syntax: column 1: a tab: YAML indents with spaces only; replace the "
                "tab with spaces",
            ),
            (
                MINIMAL.replace("    route: [out]", "   route: [out]"),
                "p.yaml:11: syntax: column 4: the indentation matches no enclosing level: line "
                "this up with the keys (or '- ' items) it belongs with, using spaces",
            ),
            (
                MINIMAL.replace("  name: iot-readings", "  name: iot-readings\n   mode: x"),
                "p.yaml:4: syntax: column 8: unexpected ':' here: this line is indented deeper "
                "than the key above it allows (line it up with its siblings), or a value holds "
                "': ' (quote it)",
            ),
            (
                MINIMAL.replace("name: iot\n", 'name: "iot\n'),
                "p.yaml:1: syntax: the quote at column 7 is never closed: close it on this line",
            ),
        ],
        ids=["tab", "dedent", "indent", "quote"],
    )
    def test_yaml_mistakes_say_line_column_and_fix(
        self, workdir: Path, text: str, expected: str
    ) -> None:
        code, lines = self._validate(workdir, text)
        assert code == 2
        assert lines == [expected]

    def test_one_typo_is_one_error(self, workdir: Path) -> None:
        """`procesors` is an unknown key with its fix, not also "routes nowhere"."""
        text = MINIMAL.replace("    processors:", "    procesors:").replace(
            "    route: [out]\n", ""
        )
        code, lines = self._validate(workdir, text)
        assert code == 2
        assert lines == [
            "p.yaml:9: functions.convert.procesors: unknown key 'procesors' (did you mean "
            "'processors'?)"
        ]

    def test_an_empty_route_condition_does_not_blame_aws(self, workdir: Path) -> None:
        """Route rules run in the function; AWS never sees them."""
        text = MINIMAL.replace(
            "    route: [out]\n",
            "      - route:\n          - when: {}\n            to: [out]\n",
        )
        code, lines = self._validate(workdir, text)
        assert code == 2
        assert len(lines) == 1
        assert lines[0].startswith("p.yaml:12: functions.convert.processors[1].route[0].when: ")
        assert "AWS" not in lines[0]
        assert "'- default: [SINK]'" in lines[0]

    def test_test_on_a_pipeline_without_a_test_file_says_where_it_looked(
        self, workdir: Path
    ) -> None:
        (workdir / "p.yaml").write_text(MINIMAL, encoding="utf-8")
        code, out, err = _cli("test", "p.yaml")
        assert code == 2
        assert out == ""
        assert err.startswith(
            "p.yaml: a pipeline file with no test file: looked for p.test.yaml; write one there"
        )

    def test_status_without_a_region_says_what_to_do(
        self, workdir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_CONFIG_FILE", str(workdir / "no-config"))
        (workdir / "p.yaml").write_text(MINIMAL, encoding="utf-8")
        code, out, err = _cli("status", "p.yaml")
        assert code == 1
        assert out == ""
        assert err.startswith("p.yaml: no AWS region, so no stream to look at: for AWS set region:")
        assert "shardline local up" in err

    def test_the_license_is_an_spdx_expression_for_setuptools_77(self) -> None:
        """`license = {text = ...}` made every install print setuptools' deprecation."""
        import tomllib  # noqa: PLC0415
        from pathlib import Path  # noqa: PLC0415

        project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
        assert project["project"]["license"] == "Apache-2.0"
        assert project["build-system"]["requires"] == ["setuptools>=77"]
