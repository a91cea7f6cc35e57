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

    def test_aggregates_put_by_another_producer_fail_the_reconciliation(
        self, workdir: Path
    ) -> None:
        """The case `dev --aggregate` used to hide: 300 records in one aggregate, dropped
        whole by FilterCriteria, add up to a few filtered by pushdown, nothing archived."""
        from deploy.config import load_plan_from_file  # noqa: PLC0415
        from deploy.demo import account  # noqa: PLC0415
        from deploy.dev import run_dev  # noqa: PLC0415
        from deploy.local import LocalAWS  # noqa: PLC0415
        from stream.clients import reset_clients  # noqa: PLC0415
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
