"""Scheduled window flushes on the local stack and by hand (issue 16).

In AWS, an EventBridge rule invokes each windowed function with the flush event every
``flush_s`` (:mod:`stream.flush`). moto fires no schedules, so ``shardline run`` and ``dev``
run a :class:`Ticker` per such function instead: a thread that sends the same event through
the function's own invoker (its Lambda runtime workers, or the in-process handler), so a
flush locally takes the handler path it takes in AWS. ``shardline flush`` sends one by hand:
to the deployed Lambda function (``lambda invoke``), or, at a local endpoint, through the
handler in this process (moto's Lambda runs no code here).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import orjson

from deploy.names import flush_seconds, function_name
from stream.flush import flush_event

if TYPE_CHECKING:
    from collections.abc import Callable

    from stream.esm.invoke import InvokeOutcome, Invoker
    from stream.plan import FunctionPlan, Plan

__all__ = ["Ticker", "flush_in_process", "flush_period", "flush_with_lambda"]

def flush_period(spec: FunctionPlan, override: float | None = None) -> float | None:
    """Seconds between a function's flushes, ``None`` when it has none: its EventBridge
    rule's period (:func:`deploy.names.flush_seconds`: the last window step's ``flush_s``,
    with ``state: dynamodb``), or ``override`` (``--flush-every``) for a function that
    flushes at all.

    >>> w = lambda **kw: {"window": {"key": "k", "size_s": 60, **kw}}
    >>> flush_period({"processors": [w(flush_s=0), w()]})
    60.0
    >>> flush_period({"processors": [w(flush_s=0), w(flush_s=300)]}, 0.5)
    0.5
    >>> flush_period({"processors": [w(flush_s=0)]}, 0.5), flush_period({"processors": []})
    (None, None)
    >>> flush_period({"processors": [w(state="memory")]}) is None
    True
    """
    every = flush_seconds(spec)
    if not every:
        return None
    return override if override is not None else float(every)


class Ticker:
    """Sends a function the flush event every ``period_s`` seconds until ``stop`` is set,
    in a daemon thread, through ``invoker`` (what its event source mapping invokes).

    A flush that fails (a function error, a timeout) is counted and the next one comes on
    time, as the next scheduled rule's invocation would in AWS (no async retries).

    Attributes:
        flushes: invocations made.
        failures: of which a function error or timeout.
        last: the last outcome.
    """

    def __init__(
        self,
        function: str,
        invoker: Invoker,
        period_s: float,
        *,
        timeout_s: float,
        stop: threading.Event,
    ) -> None:
        self.function = function
        self.invoker = invoker
        self.period_s = period_s
        self.timeout_s = timeout_s
        self.stop = stop
        self.flushes = 0
        self.failures = 0
        self.last: InvokeOutcome | None = None
        self._thread = threading.Thread(target=self._loop, name=f"flush-{function}", daemon=True)

    def start(self) -> None:
        """Start the thread; the first flush comes one period after."""
        self._thread.start()

    def join(self) -> None:
        """Wait for the thread (set ``stop`` first); a flush in flight finishes."""
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        event = dict(flush_event(self.function))
        while not self.stop.wait(self.period_s):
            try:
                outcome = self.invoker.invoke(event, timeout_s=self.timeout_s)
            except Exception:  # the pool could not invoke (stopping): the next tick tries
                self.failures += 1
                continue
            self.flushes += 1
            self.last = outcome
            if outcome.error is not None:
                self.failures += 1


def flush_with_lambda(plan: Plan, function: str, client: Callable[[str], Any]) -> dict[str, Any]:
    """Invoke the deployed function once with the flush event (synchronously, so the
    response comes back); its response, or ``{"error": ...}`` with the function's error."""
    lam = client("lambda")
    answer = lam.invoke(
        FunctionName=function_name(plan, function),
        InvocationType="RequestResponse",
        Payload=orjson.dumps(flush_event(function)),
    )
    payload = orjson.loads(answer["Payload"].read() or b"null")
    if answer.get("FunctionError"):
        return {"error": payload}
    if not isinstance(payload, dict) or payload.get("shardline") != "flush":
        # a function deployed before flushes existed, or not shardline's handler
        return {"error": f"not a flush response: {payload!r} (deploy this version first)"}
    result: dict[str, Any] = payload
    return result


def flush_in_process(plan: Plan, function: str, *, timeout_s: float | None = None) -> Any:
    """Run one flush of ``function`` through the handler path in this process (its sinks
    and window tables at the endpoint the environment names); the response, or
    ``{"error": ...}`` with the error as Lambda would report it."""
    from stream.esm.invoke import InProcessInvoker  # noqa: PLC0415
    from stream.runtime import build_runner  # noqa: PLC0415

    runner = build_runner(plan, function)
    invoker = InProcessInvoker(runner.flush, function_name=function_name(plan, function))
    spec = plan["functions"][function]
    try:
        outcome = invoker.invoke(
            dict(flush_event(function)), timeout_s=timeout_s or spec.get("timeout_s", 60)
        )
    finally:
        for sink in runner.sinks.values():
            sink.close()
    return {"error": outcome.error} if outcome.error is not None else outcome.payload
