"""``shardline invoke``: the function's FilterCriteria drop first, as in AWS, and are counted."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from click.testing import CliRunner

from deploy.cli import main
from deploy.local.invoke import run_invoke, summary_rows
from deploy.pipeline.config import compile_plan, parse_config
from stream.testing import EventFactory

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

PIPELINE = """\
name: shop
stream:
  name: shop-events
sinks:
  out:
    type: stdout
  dlq:
    type: sqs
    queue: shop-dlq
functions:
  main:
    on_failure: dlq
    {pushdown}
    processors:
      - filter:
          match: {{kind: [order]}}
    route: [out]
"""


def _event_file(tmp_path: Path) -> Path:
    factory = EventFactory()
    event = {
        "Records": [
            factory.raw(b"not json", "a"),
            factory.raw(b'{"kind": "click"}', "b"),
            factory.raw(b'{"kind": "order"}', "b"),
        ]
    }
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event), encoding="utf-8")
    return path


def _plan(pushdown: bool) -> dict[str, object]:
    text = PIPELINE.format(pushdown="filter_pushdown: true" if pushdown else "")
    return compile_plan(parse_config(text, source="pipeline.yaml", env={}))


class TestInvoke:
    def test_with_pushdown_records_aws_would_drop_never_reach_the_function(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The record that is not JSON and the click are dropped by the criteria, counted as
        filtered by pushdown; the function sees only the order, and dead-letters nothing."""
        done = run_invoke(_plan(True), "main", str(_event_file(tmp_path)), stdout_sinks=True)
        assert done.pushed_down == 2
        assert done.result.records_in == 1
        assert done.result.dead_letters == []
        assert done.result.dropped == {}
        rows = dict(summary_rows(done))
        assert rows["filtered by pushdown (FilterCriteria, before the function)"] == "2"
        assert capsys.readouterr().out.splitlines() == ['out\t{"kind": "order"}']

    def test_without_pushdown_the_function_dead_letters_what_is_not_json(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Pushdown off (the default): every record reaches the function, the one that is
        not JSON is dead-lettered and the click dropped by the function's own filter."""
        done = run_invoke(_plan(False), "main", str(_event_file(tmp_path)), stdout_sinks=True)
        assert done.pushed_down == 0
        assert done.result.records_in == 3
        assert [letter.step for letter in done.result.dead_letters] == ["processors[0].filter"]
        assert done.result.dropped == {"processors[0].filter": 1}
        rows = dict(summary_rows(done))
        assert not any("pushdown" in what for what in rows)
        capsys.readouterr()

    def test_the_command_prints_the_pushdown_row_and_the_response(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The CLI's summary names the pushdown count apart; the response is clean."""
        monkeypatch.chdir(tmp_path)
        (tmp_path / "pipeline.yaml").write_text(
            PIPELINE.format(pushdown="filter_pushdown: true"), encoding="utf-8"
        )
        _event_file(tmp_path)
        monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
        result = CliRunner().invoke(
            main, ["invoke", "pipeline.yaml", "--event", "event.json", "--sinks", "stdout"]
        )
        assert result.exit_code == 0, result.output
        assert "filtered by pushdown" in result.stderr
        assert result.stdout.splitlines()[-1] == '{"batchItemFailures": []}'
