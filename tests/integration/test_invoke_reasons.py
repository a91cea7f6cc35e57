"""``shardline invoke`` says, per record, why it was dead-lettered or reported for retry
(issue 20, item 3), against a real moto server: the dead-letter queue of one function does
not exist there."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from deploy.cli import main
from stream.testing import EventFactory

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration

PIPELINE = """\
name: iot
stream:
  name: iot-readings
sinks:
  out:
    type: stdout
  dlq:
    type: sqs
    queue: {queue}
functions:
  convert:
    on_failure: dlq
    processors:
      - use: "tests.deploy.first_hour_plugins:ReturnsDict"
    route: [out]
"""


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moto_endpoint: str) -> Path:
    monkeypatch.chdir(tmp_path)
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    factory = EventFactory()
    some = [factory.raw(b'{"t": 70}', "a"), factory.raw(b'{"t": 170}', "b")]
    some.append(factory.raw(b'{"t": 71}', "c"))
    every = [factory.raw(b'{"t": 170}', "a"), factory.raw(b'{"t": 171}', "b")]
    (tmp_path / "event.json").write_text(json.dumps({"Records": some}), encoding="utf-8")
    (tmp_path / "every.json").write_text(json.dumps({"Records": every}), encoding="utf-8")
    return tmp_path


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["invoke", *args])
    return result.exit_code, result.stdout, result.stderr


def test_each_dead_letter_says_its_step_and_the_contract_broken(
    files: Path, moto_endpoint: str, aws: object
) -> None:
    """A plugin returning a dict: each record's line names the step and the fix."""
    queue = "iot-dlq-present"
    aws("sqs").create_queue(QueueName=queue)  # type: ignore[operator]
    (files / "iot.yaml").write_text(PIPELINE.format(queue=queue), encoding="utf-8")

    code, out, err = _invoke("iot.yaml", "--event", "event.json", "--endpoint-url", moto_endpoint)

    assert code == 0, err
    assert "iot / convert: event.json" in err  # the function's name, not a placeholder
    lines = [ln for ln in err.splitlines() if ln.startswith("record ")]
    assert len(lines) == 1, err
    assert lines[0].startswith("record 1 (key 'b', sequence ")
    step = "processors[0].use(tests.deploy.first_hour_plugins:ReturnsDict)"
    assert f"dead-lettered at {step}: " in lines[0]
    assert "returned dict, expected Record" in lines[0]
    assert json.loads(out.splitlines()[-1]) == {"batchItemFailures": []}


def test_a_step_broken_for_every_record_is_the_reason_they_are_retried(
    files: Path, moto_endpoint: str, aws: object
) -> None:
    """Every record fails the same way: not their fault, so each is reported, saying so."""
    queue = "iot-dlq-present"
    aws("sqs").create_queue(QueueName=queue)  # type: ignore[operator]
    (files / "iot.yaml").write_text(PIPELINE.format(queue=queue), encoding="utf-8")

    code, out, err = _invoke("iot.yaml", "--event", "every.json", "--endpoint-url", moto_endpoint)

    assert code == 0, err
    lines = [ln for ln in err.splitlines() if ln.startswith("record ")]
    assert [ln.split(" (")[0] for ln in lines] == ["record 0", "record 1"], err
    assert all("reported for retry (batchItemFailures): " in ln for ln in lines), err
    assert all("broken step" in ln and "returned dict" in ln for ln in lines), err
    assert len(json.loads(out.splitlines()[-1])["batchItemFailures"]) == 2


def test_a_missing_dead_letter_queue_is_the_reason_records_are_reported(
    files: Path, moto_endpoint: str
) -> None:
    """The queue does not exist: the records are reported for retry, and each says why."""
    (files / "iot.yaml").write_text(PIPELINE.format(queue="iot-dlq-missing"), encoding="utf-8")

    code, out, err = _invoke("iot.yaml", "--event", "event.json", "--endpoint-url", moto_endpoint)

    assert code == 0, err
    lines = [ln for ln in err.splitlines() if ln.startswith("record ")]
    assert len(lines) == 1, err
    assert all("reported for retry (batchItemFailures)" in ln for ln in lines), err
    assert all("NonExistentQueue" in ln or "does not exist" in ln for ln in lines), err
    assert len(json.loads(out.splitlines()[-1])["batchItemFailures"]) >= 1


def test_a_bad_event_is_named_not_the_pipeline_file(files: Path, moto_endpoint: str) -> None:
    """The event is at fault: its name starts the message."""
    (files / "iot.yaml").write_text(PIPELINE.format(queue="q"), encoding="utf-8")
    (files / "bad.json").write_text('{"records": []}', encoding="utf-8")
    (files / "text.json").write_text("not json", encoding="utf-8")

    code, out, err = _invoke("iot.yaml", "--event", "bad.json")
    assert code == 1
    assert out == ""
    assert err.startswith(
        "bad.json: not a Lambda Kinesis event: expected an object with a 'Records'"
    )

    code, _, err = _invoke("iot.yaml", "--event", "text.json")
    assert code == 1
    assert err.startswith("text.json: not JSON (")
