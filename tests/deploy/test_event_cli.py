"""``shardline event``: JSON lines to a Lambda Kinesis event that ``invoke`` runs."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from deploy.cli import main
from stream.event import records_from_event

if TYPE_CHECKING:
    from pathlib import Path

PIPELINE = """\
name: events
stream: {name: events}
sinks:
  out: {type: stdout}
functions:
  echo:
    processors:
      - enrich: {set: {seen: true}}
    route: [out]
"""
LINES = '{"user": "ada", "n": 1}\n\n{"user": "bob", "n": 2}\n{"user": "ada", "n": 3}\n'


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    (tmp_path / "events.jsonl").write_text(LINES)
    return tmp_path


@pytest.mark.parametrize("aggregate", [False, True])
def test_the_event_holds_each_line_with_its_key_and_invoke_runs_it(
    workdir: Path, aggregate: bool
) -> None:
    """Each line becomes one record (aggregated or not), keyed by --key, and invoke runs it."""
    runner = CliRunner()
    args = ["event", "events.jsonl", "--key", "user", "-o", "event.json"]
    made = runner.invoke(main, [*args, "--aggregate"] if aggregate else args)
    assert made.exit_code == 0, made.output
    event = json.loads((workdir / "event.json").read_text())
    assert len(event["Records"]) == (1 if aggregate else 3)
    records = records_from_event(event)
    assert [(r.partition_key, r.json, r.aggregated) for r in records] == [
        ("ada", {"user": "ada", "n": 1}, aggregate),
        ("bob", {"user": "bob", "n": 2}, aggregate),
        ("ada", {"user": "ada", "n": 3}, aggregate),
    ]
    invoked = runner.invoke(
        main, ["invoke", "pipeline.yaml", "--event", "event.json", "--sinks", "stdout"]
    )
    assert invoked.exit_code == 0, invoked.output
    written = [json.loads(line.split("\t", 1)[1]) for line in invoked.stdout.splitlines()
               if line.startswith("out\t")]  # fmt: skip
    assert [doc["n"] for doc in written] == [1, 2, 3]
    assert all(doc["seen"] is True for doc in written)


def test_without_output_the_event_goes_to_stdout_keyed_by_line_number(workdir: Path) -> None:
    """No -o: the event is the whole of stdout; no --key: the key is the line number."""
    made = CliRunner().invoke(main, ["event", "events.jsonl"])
    assert made.exit_code == 0
    event = json.loads(made.stdout)
    assert [r["kinesis"]["partitionKey"] for r in event["Records"]] == ["1", "3", "4"]


def test_a_bad_line_is_named_by_file_and_line_and_nothing_is_written(workdir: Path) -> None:
    """A line that is not JSON, or lacks the key, stops the command with exit status 2."""
    (workdir / "bad.jsonl").write_text('{"user": "a"}\n{"user": \n{"n": 1}\n')
    made = CliRunner().invoke(main, ["event", "bad.jsonl", "--key", "user", "-o", "out.json"])
    assert made.exit_code == 2
    assert "bad.jsonl:2: not JSON" in made.output
    assert "bad.jsonl:3: no usable partition key field 'user'" in made.output
    assert not (workdir / "out.json").exists()
