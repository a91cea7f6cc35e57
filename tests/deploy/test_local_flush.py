"""The local flush ticker (deploy/local/flush.py): which functions flush and how often, and
a ticker that sends the flush event through the function's invoker until its run stops.
End to end on moto: tests/integration/test_window_flush_run.py."""

from __future__ import annotations

import io
import threading
import time
from typing import Any

import orjson
import pytest

from deploy.local.flush import Ticker, flush_period
from deploy.local.run import LocalRun
from stream.esm.invoke import InProcessInvoker, InvokeResult


def window(**kw: Any) -> dict[str, Any]:
    return {"window": {"key": "k", "size_s": 60, "state": "dynamodb", **kw}}


def fn(*steps: dict[str, Any]) -> Any:
    return {"processors": list(steps)}


class TestFlushPeriod:
    def test_the_flush_of_the_functions_last_window_step_which_a_flush_ticks(self):
        assert flush_period(fn(window(flush_s=60), window(flush_s=0), window(flush_s=120))) == 120
        assert flush_period(fn(window(flush_s=60), window(flush_s=0))) is None

    def test_a_plan_compiled_before_flush_s_flushes_every_minute(self):
        assert flush_period(fn(window())) == 60

    def test_a_function_without_windows_or_with_flushes_off_has_no_ticker(self):
        assert flush_period(fn({"filter": {"expr": "a"}}), 0.5) is None
        assert flush_period(fn(window(flush_s=0)), 0.5) is None

    def test_the_override_replaces_the_period(self):
        assert flush_period(fn(window(flush_s=600)), 0.5) == 0.5


class Recording:
    """An invoker that keeps the events it was sent."""

    def __init__(self, fail: bool = False) -> None:
        self.events: list[dict[str, Any]] = []
        self.fail = fail

    def invoke(self, event: dict[str, Any], *, timeout_s: float) -> InvokeResult:
        self.events.append(event)
        error = {"errorType": "WindowStateError", "errorMessage": "x"} if self.fail else None
        return InvokeResult({"pending": 0}, error, False, 0.0, "r")


def wait_for(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.01)


class TestTicker:
    def test_it_sends_the_flush_event_every_period_until_stopped(self):
        stop, invoker = threading.Event(), Recording()
        ticker = Ticker("sessions", invoker, 0.02, timeout_s=5, stop=stop)  # type: ignore[arg-type]
        ticker.start()
        wait_for(lambda: ticker.flushes >= 3)
        stop.set()
        ticker.join()
        assert invoker.events[0] == {"shardline": "flush", "version": 1, "function": "sessions"}
        assert len(invoker.events) == ticker.flushes
        assert not ticker._thread.is_alive()  # stopped with its run: nothing more comes

    def test_a_failed_flush_is_counted_and_the_next_comes_on_time(self):
        stop, invoker = threading.Event(), Recording(fail=True)
        ticker = Ticker("f", invoker, 0.02, timeout_s=5, stop=stop)  # type: ignore[arg-type]
        ticker.start()
        wait_for(lambda: ticker.flushes >= 2)
        stop.set()
        ticker.join()
        assert ticker.failures == ticker.flushes

    def test_the_in_process_handler_of_a_local_run_runs_a_flush_as_a_flush(
        self, tmp_path: Any
    ) -> None:
        """What the ticker sends reaches BatchRunner.flush, not the Kinesis path (which
        would fail on an event without Records)."""
        plan: Any = {
            "version": 0, "name": "p", "stream": {"name": "s"},
            "sinks": {"out": {"type": "discard"}},
            "functions": {"f": {"route": ["out"], "processors": [], "batch": {}}},
        }  # fmt: skip
        local = LocalRun(plan, in_process=True, client=lambda _s: None, state_dir=tmp_path)
        invoker, closers = local._invoker("f", plan["functions"]["f"], tmp_path / "plan.json")
        assert isinstance(invoker, InProcessInvoker)
        outcome = invoker.invoke({"shardline": "flush", "version": 1, "function": "f"}, timeout_s=5)
        assert outcome.error is None
        assert outcome.payload == {
            "shardline": "flush", "function": "f", "windows": 0, "emitted": 0, "pending": 0
        }  # fmt: skip
        for close in closers:
            close()


def test_a_flush_period_of_zero_is_refused() -> None:
    plan: Any = {"name": "p", "functions": {}}
    with pytest.raises(ValueError, match="above 0"):
        LocalRun(plan, flush_every=0, client=lambda _s: None)


@pytest.mark.parametrize(
    ("command", "option"),
    [("run", "--flush-every"), ("dev", "--flush-every"), ("flush", "FUNCTION")],
)
def test_the_commands_offer_the_flush(command: str, option: str) -> None:
    from click.testing import CliRunner  # noqa: PLC0415

    from deploy.cli import main  # noqa: PLC0415

    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert option in result.output


def test_an_in_process_flush_names_the_stream_in_the_local_region(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A flushed result's ``event_source_arn`` comes from the invoked function's ARN
    (stream.flush.stream_arn). In process (``run --in-process``, ``shardline flush``) it
    must name the region the runtime workers' ARN names (the environment's, as
    stream.esm.sandbox.WorkerPool does) and the stream is in: an SQS FIFO sink puts it in
    its deduplication id, so a re-emission by the other path would not be deduplicated."""
    from stream.flush import stream_arn  # noqa: PLC0415

    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    invoker = InProcessInvoker(lambda _e, _c: None, function_name="p-f")
    assert invoker.function_arn == "arn:aws:lambda:eu-west-1:123456789012:function:p-f"
    assert stream_arn(invoker.function_arn, "clicks") == (
        "arn:aws:kinesis:eu-west-1:123456789012:stream/clicks"
    )


class _Answer:
    """What ``lambda.invoke`` answers, for the response's reading only (no AWS call is
    made to succeed: the invoke itself is not exercised here, moto runs no function)."""

    def __init__(self, payload: bytes, error: str | None = None) -> None:
        self.answer: dict[str, Any] = {"Payload": io.BytesIO(payload)}
        if error:
            self.answer["FunctionError"] = error

    def invoke(self, **kwargs: Any) -> dict[str, Any]:
        assert orjson.loads(kwargs["Payload"])["shardline"] == "flush"
        return self.answer


@pytest.mark.parametrize(
    ("payload", "error", "expected"),
    [
        (b"null", None, "not a flush response: None"),
        (b'{"batchItemFailures": []}', None, "not a flush response"),
        (b'{"errorMessage": "boom"}', "Unhandled", None),
    ],
)
def test_a_function_that_does_not_answer_a_flush_is_an_error_not_a_crash(
    payload: bytes, error: str | None, expected: str | None
) -> None:
    from deploy.local.flush import flush_with_lambda  # noqa: PLC0415

    plan = {"name": "p", "functions": {"f": {}}}
    answer = flush_with_lambda(plan, "f", lambda service: _Answer(payload, error))  # type: ignore[arg-type]
    assert "error" in answer
    if expected is not None:
        assert str(answer["error"]).startswith(expected)
    else:
        assert answer["error"] == {"errorMessage": "boom"}
