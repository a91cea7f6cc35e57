"""How the event source mapping invokes a function: the Invoker protocol and the in-process one.

The mapping needs one thing from a function runtime: run this event, within this timeout,
and say what came back. Function errors and timeouts are *results* (Lambda reports them to
the mapping, which applies its retry rules), never exceptions; an exception out of
``invoke`` means the invocation could not even be made (a broken worker pool), which Lambda
treats as an error before invocation: retried without counting toward ``max_retries``.

Two implementations: :class:`InProcessInvoker` below (tests, ``shardline invoke``), and the
worker pool of real Lambda runtimes (awslambdaric) in :mod:`stream.esm.sandbox`.
"""

from __future__ import annotations

import os
import time
import traceback
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["InProcessInvoker", "InvokeOutcome", "InvokeResult", "Invoker", "LocalContext"]


@dataclass(frozen=True)
class InvokeResult:
    """One invocation's result, as the mapping sees it.

    Attributes:
        payload: the response, parsed from JSON (None for a null response or on error).
        error: ``{"errorType", "errorMessage", ...}`` on a function error or timeout.
        timed_out: the function ran past its timeout (``error`` says so too).
        duration_s: how long the invocation ran.
        request_id: the invocation's request id.
    """

    payload: Any
    error: dict[str, Any] | None
    timed_out: bool
    duration_s: float
    request_id: str


class InvokeOutcome(Protocol):
    """What the mapping reads from a result: :class:`InvokeResult`, or any result class with
    these attributes (the worker pool's ``WorkerInvokeResult`` adds init duration and pid)."""

    @property
    def payload(self) -> Any:
        """The parsed response."""
        ...

    @property
    def error(self) -> dict[str, Any] | None:
        """The function error, if any."""
        ...

    @property
    def timed_out(self) -> bool:
        """Whether the function ran past its timeout."""
        ...

    @property
    def duration_s(self) -> float:
        """How long it ran."""
        ...

    @property
    def request_id(self) -> str:
        """The request id."""
        ...


class Invoker(Protocol):
    """Runs a function on one event; errors and timeouts are results, not exceptions."""

    def invoke(self, event: dict[str, Any], *, timeout_s: float) -> InvokeOutcome:
        """Invoke once and return what happened."""
        ...


class LocalContext:
    """The ``context`` an in-process handler gets: the attributes of Lambda's context object.

    ``get_remaining_time_in_millis`` counts down from the timeout like Lambda's.
    """

    def __init__(
        self,
        request_id: str,
        *,
        function_name: str,
        function_arn: str,
        memory_mb: int,
        deadline: float,
        clock: Callable[[], float],
    ) -> None:
        self.aws_request_id = request_id
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = function_arn
        self.memory_limit_in_mb = str(memory_mb)
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = f"local/[$LATEST]{request_id.replace('-', '')}"
        self.identity = None
        self.client_context = None
        self._deadline = deadline
        self._clock = clock

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the function's timeout (never negative)."""
        return max(0, int((self._deadline - self._clock()) * 1000))


class InProcessInvoker:
    """Calls the handler in this process, in the calling thread.

    An exception is a function error shaped like the Python runtime's (``errorType``,
    ``errorMessage``, ``requestId``, ``stackTrace``); a response that cannot be encoded as
    JSON is ``Runtime.MarshalError``, as in Lambda. The response goes through a JSON round
    trip so that the mapping sees what a real runtime would send, and the handler gets its
    own copy of the event (a handler that edits its event does not edit the retries').

    A handler cannot be interrupted in-process: one that runs past ``timeout_s`` is let
    finish, and its result is then reported as a timeout (``Sandbox.Timedout``) and its
    response discarded, as Lambda would. Its side effects have happened, which Lambda's
    would not all have: use the worker pool to test code that must be cut off.

    The mapping calls ``invoke`` from several threads when shards or lanes run at once; the
    handler must be thread-safe then.

    Args:
        handler: ``handler(event, context)``.
        function_name: the name in the context and the default ARN.
        function_arn: ``context.invoked_function_arn``.
        memory_mb: ``context.memory_limit_in_mb`` (reported only).
        clock: monotonic seconds (injected in tests to make an invocation "take" time).
    """

    def __init__(
        self,
        handler: Callable[[dict[str, Any], Any], Any],
        *,
        function_name: str = "shardline-local",
        function_arn: str | None = None,
        memory_mb: int = 128,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.handler = handler
        self.function_name = function_name
        # the environment's region, as the runtime workers' ARN (stream.esm.sandbox): a
        # flush names its stream after it (stream.flush.stream_arn)
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        self.function_arn = function_arn or (
            f"arn:aws:lambda:{region or 'us-east-1'}:123456789012:function:{function_name}"
        )
        self.memory_mb = memory_mb
        self._clock = clock

    def invoke(self, event: dict[str, Any], *, timeout_s: float) -> InvokeResult:
        """Run the handler on ``event``; never raises for what the handler does."""
        request_id = str(uuid.uuid4())
        event = orjson.loads(orjson.dumps(event))
        start = self._clock()
        context = LocalContext(
            request_id,
            function_name=self.function_name,
            function_arn=self.function_arn,
            memory_mb=self.memory_mb,
            deadline=start + timeout_s,
            clock=self._clock,
        )
        payload: Any = None
        error: dict[str, Any] | None = None
        try:
            response = self.handler(event, context)
        except Exception as exc:  # any handler exception is a function error
            error = {
                "errorType": type(exc).__name__,
                "errorMessage": str(exc),
                "requestId": request_id,
                "stackTrace": traceback.format_tb(exc.__traceback__),
            }
        else:
            try:
                payload = orjson.loads(orjson.dumps(response))
            except orjson.JSONEncodeError as exc:
                error = {
                    "errorType": "Runtime.MarshalError",
                    "errorMessage": f"Unable to marshal response: {exc}",
                    "requestId": request_id,
                    "stackTrace": [],
                }
        duration = self._clock() - start
        if duration > timeout_s:
            error = {
                "errorType": "Sandbox.Timedout",
                "errorMessage": f"RequestId: {request_id} Error: Task timed out after "
                f"{timeout_s:.2f} seconds",
            }
            return InvokeResult(None, error, True, duration, request_id)
        return InvokeResult(None if error else payload, error, False, duration, request_id)
