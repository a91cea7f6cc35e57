"""Structured logs: JSON lines with the request id, shard and the batch's sequence numbers;
a poison record's position and reason once, its payload only when the plan allows it."""

from __future__ import annotations

import io
import json
import logging
import types
from typing import TYPE_CHECKING, Any

import pytest

import stream.lambda_handler as lh
from stream.logs import LOGGER, JsonFormatter, StdoutHandler, configure
from stream.testing import EventFactory

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

SECRET = b"card=4111111111111111 not json"
CONTEXT = types.SimpleNamespace(aws_request_id="8f5b6a9e-request")


def make_plan(*, on_failure: str | None = "dlq", log_payloads: bool | None = None) -> Any:
    plan: dict[str, Any] = {
        "version": 1,
        "name": "shop",
        "sinks": {"out": {"type": "discard"}, "dlq": {"type": "discard"}},
        "functions": {
            "f": {
                "ordering": "per_key",
                "on_failure": on_failure,
                "route": ["out"],
                "processors": [{"filter": {"match": {"keep": [True]}}}],
            }
        },
    }
    if log_payloads is not None:
        plan["log_payloads"] = log_payloads
    return plan


@pytest.fixture(autouse=True)
def _restore_logger() -> Iterator[None]:
    """Leave the shardline logger as a cold start sets it, whatever a test configured."""
    yield
    configure("INFO")


@pytest.fixture
def use_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """use_plan(plan): the handler will load this plan at its next cold start."""
    monkeypatch.setenv("SHARDLINE_METRICS", "0")  # these tests read log lines only
    monkeypatch.delenv("SHARDLINE_FUNCTION", raising=False)
    monkeypatch.delenv("SHARDLINE_LOG_LEVEL", raising=False)
    monkeypatch.delenv("AWS_LAMBDA_LOG_LEVEL", raising=False)

    def use(plan: dict[str, Any]) -> None:
        path = tmp_path / "pipeline.json"
        path.write_text(json.dumps(plan))
        monkeypatch.setenv("SHARDLINE_PIPELINE", str(path))
        monkeypatch.setattr(lh, "_runner", None)

    return use


def log_lines(out: str) -> list[dict[str, Any]]:
    docs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [d for d in docs if "level" in d]


def batch_with_poison(f: EventFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    """(event, the poison entry): a kept record, a poison record, a filtered record."""
    bad = f.raw(SECRET, "p")
    event = dict(f.event([f.record({"keep": True}, "a"), bad, f.record({"keep": False}, "b")]))
    return event, bad


class TestContext:
    def test_every_line_has_the_request_id_shard_and_first_and_last_sequence_numbers(
        self, use_plan, capsys
    ):
        """The invocation's context is on each of its lines."""
        use_plan(make_plan())
        event, _ = batch_with_poison(EventFactory(shard_id="shardId-000000000007"))
        lh.handler(event, CONTEXT)
        lines = log_lines(capsys.readouterr().out)
        assert {line["message"] for line in lines} == {
            "poison record dead-lettered",
            "batch processed",
        }
        entries = event["Records"]
        for line in lines:
            assert line["request_id"] == "8f5b6a9e-request"
            assert line["shard"] == "shardId-000000000007"
            assert line["first_sequence_number"] == entries[0]["kinesis"]["sequenceNumber"]
            assert line["last_sequence_number"] == entries[-1]["kinesis"]["sequenceNumber"]
            assert line["function"] == "f"
            assert line["pipeline"] == "shop"
            assert line["level"] in {"INFO", "WARNING"}
            assert line["timestamp"].endswith("Z")

    def test_the_batch_line_gives_the_counts(self, use_plan, capsys):
        """One INFO line per invocation with what happened to the records."""
        use_plan(make_plan())
        event, _ = batch_with_poison(EventFactory())
        lh.handler(event, CONTEXT)
        (line,) = [d for d in log_lines(capsys.readouterr().out) if d["level"] == "INFO"]
        assert line["message"] == "batch processed"
        assert (line["records_in"], line["filtered"], line["dead_lettered"]) == (3, 1, 1)
        assert line["written"] == {"out": 1}
        assert line["reported_for_retry"] == 0

    def test_without_a_context_the_request_id_is_null(self, use_plan, capsys):
        """A local call without a Lambda context still logs, with request_id null."""
        use_plan(make_plan())
        lh.handler(dict(EventFactory().batch([("a", {"keep": True})])))
        (line,) = log_lines(capsys.readouterr().out)
        assert line["request_id"] is None
        assert line["shard"] == "shardId-000000000000"


class TestPoison:
    def test_a_poison_record_logs_its_position_and_reason_once(self, use_plan, capsys):
        """One WARNING line for the dead letter, with sequence, sub-sequence, index, step."""
        use_plan(make_plan())
        event, bad = batch_with_poison(EventFactory())
        lh.handler(event, CONTEXT)
        lines = log_lines(capsys.readouterr().out)
        (poison,) = [d for d in lines if d["message"] == "poison record dead-lettered"]
        assert poison["level"] == "WARNING"
        assert poison["sequence_number"] == bad["kinesis"]["sequenceNumber"]
        assert poison["sub_sequence_number"] == 0
        assert poison["index"] == 1
        assert poison["step"] == "processors[0].filter"
        assert poison["error"] == "DecodeError"
        assert "is not JSON" in poison["reason"]

    def test_the_payload_is_not_logged_by_default(self, use_plan, capsys):
        """Neither the data nor its base64 appears anywhere in the output."""
        use_plan(make_plan())
        event, bad = batch_with_poison(EventFactory())
        lh.handler(event, CONTEXT)
        out = capsys.readouterr().out
        assert "4111111111111111" not in out
        assert bad["kinesis"]["data"] not in out
        (poison,) = [d for d in log_lines(out) if "sequence_number" in d]
        assert not {"payload", "payload_base64"} & set(poison)

    def test_log_payloads_false_in_the_plan_keeps_it_out(self, use_plan, capsys):
        """An explicit false is the default."""
        use_plan(make_plan(log_payloads=False))
        event, _ = batch_with_poison(EventFactory())
        lh.handler(event, CONTEXT)
        assert "4111111111111111" not in capsys.readouterr().out

    def test_log_payloads_true_logs_the_payload_with_the_position(self, use_plan, capsys):
        """With the plan's permission the poison line carries the data as text."""
        use_plan(make_plan(log_payloads=True))
        event, _ = batch_with_poison(EventFactory())
        lh.handler(event, CONTEXT)
        (poison,) = [d for d in log_lines(capsys.readouterr().out) if "sequence_number" in d]
        assert poison["payload"] == SECRET.decode()
        assert poison["payload_truncated"] is False

    def test_a_binary_payload_is_logged_as_base64(self, use_plan, capsys):
        """Data that is not UTF-8 is logged as base64, exactly."""
        use_plan(make_plan(log_payloads=True))
        f = EventFactory()
        bad = f.raw(b"\xff\xfe binary", "p")
        lh.handler(dict(f.event([bad])), CONTEXT)
        (poison,) = [d for d in log_lines(capsys.readouterr().out) if "sequence_number" in d]
        assert poison["payload_base64"] == bad["kinesis"]["data"]
        assert "payload" not in poison


class TestRetries:
    def test_many_reported_records_give_one_line_with_where_lambda_resumes(self, use_plan, capsys):
        """Without a dead-letter sink, five poison records are reported: one WARNING line,
        the count, and the lowest sequence number."""
        use_plan(make_plan(on_failure=None))
        f = EventFactory()
        bad = [f.raw(b"x%d" % i, f"k{i}") for i in range(5)]
        lh.handler(dict(f.event([f.record({"keep": True}, "a"), *bad])), CONTEXT)
        lines = log_lines(capsys.readouterr().out)
        (retry,) = [d for d in lines if d["message"] == "records reported for retry"]
        assert retry["level"] == "WARNING"
        assert retry["records"] == 5
        assert retry["first_index"] == 1
        assert retry["resume_sequence_number"] == bad[0]["kinesis"]["sequenceNumber"]
        assert "no on_failure sink" in retry["reason"]
        assert retry["request_id"] == "8f5b6a9e-request"
        assert not [d for d in lines if d["message"] == "poison record dead-lettered"]


class TestFailuresAndLevels:
    def test_a_failing_batch_logs_an_error_with_the_traceback_and_raises(self, use_plan, capsys):
        """The handler's exception is logged once, as one line, then raised to Lambda."""
        use_plan(make_plan())
        with pytest.raises(ValueError, match="not a Kinesis event"):
            lh.handler({"Records": "nope"}, CONTEXT)
        (line,) = log_lines(capsys.readouterr().out)
        assert line["level"] == "ERROR"
        assert line["message"] == "batch failed"
        assert line["request_id"] == "8f5b6a9e-request"
        assert "ValueError: not a Kinesis event" in line["exception"]

    def test_shardline_log_level_warning_drops_the_batch_line(self, use_plan, monkeypatch, capsys):
        """The level comes from SHARDLINE_LOG_LEVEL at cold start."""
        monkeypatch.setenv("SHARDLINE_LOG_LEVEL", "WARNING")
        use_plan(make_plan())
        event, _ = batch_with_poison(EventFactory())
        lh.handler(event, CONTEXT)
        lines = log_lines(capsys.readouterr().out)
        assert [d["message"] for d in lines] == ["poison record dead-lettered"]

    def test_lambdas_own_level_names_are_understood(self):
        """AWS_LAMBDA_LOG_LEVEL uses WARN and TRACE; they map to the logging module's."""
        assert configure(environ={"AWS_LAMBDA_LOG_LEVEL": "WARN"}).level == logging.WARNING
        assert configure(environ={"AWS_LAMBDA_LOG_LEVEL": "TRACE"}).level == logging.DEBUG
        assert configure(environ={}).level == logging.INFO

    def test_an_unknown_level_is_refused(self):
        """A typo is an error at cold start."""
        with pytest.raises(ValueError, match="log level 'LOUD'"):
            configure("LOUD")

    def test_configure_is_idempotent_and_does_not_propagate(self):
        """One handler however often a cold start configures, and nothing reaches the root
        logger, where Lambda's runtime prints its own copy."""
        stream = io.StringIO()
        configure("INFO", stream=stream)
        logger = configure("INFO", stream=stream)
        logger.info("hello")
        assert sum(isinstance(h, StdoutHandler) for h in logger.handlers) == 1
        assert logger.propagate is False
        (line,) = stream.getvalue().splitlines()
        assert json.loads(line)["message"] == "hello"

    def test_a_plugin_logger_gets_the_same_json_lines(self):
        """A child of the shardline logger is formatted the same way."""
        stream = io.StringIO()
        configure("INFO", stream=stream)
        logging.getLogger(f"{LOGGER}.myplugin").warning("lookup %s slow", "users")
        doc = json.loads(stream.getvalue())
        assert (doc["logger"], doc["message"], doc["level"]) == (
            "shardline.myplugin",
            "lookup users slow",
            "WARNING",
        )


class TestFormatter:
    def test_an_exception_stays_on_one_line(self):
        """The traceback is a JSON string: one log event, not one per traceback line."""
        try:
            raise KeyError("user_id")
        except KeyError:
            record = logging.getLogger(LOGGER).makeRecord(
                LOGGER, logging.ERROR, "", 0, "boom", None, __import__("sys").exc_info()
            )
        line = JsonFormatter().format(record)
        assert "\n" not in line
        assert "KeyError: 'user_id'" in json.loads(line)["exception"]
