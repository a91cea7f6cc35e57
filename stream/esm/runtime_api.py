"""The Lambda Runtime API of one local sandbox, served on 127.0.0.1 for one runtime process.

A Lambda runtime (here awslambdaric, the runtime interface client AWS ships for Python
container images) does not get called: it pulls. It asks ``GET /runtime/invocation/next``
for work, runs the handler, and posts the result back. This module is that other end,
the part of Lambda's sandbox the ESM needs in order to run real runtimes locally:

* ``GET  /2018-06-01/runtime/invocation/next`` blocks until an invocation is queued, then
  answers with the event as body and the headers the runtime reads
  (``Lambda-Runtime-Aws-Request-Id``, ``-Deadline-Ms``, ``-Invoked-Function-Arn``,
  ``-Trace-Id``, and ``-Client-Context`` / ``-Cognito-Identity`` when set). awslambdaric
  4.2.2 crashes with SIGSEGV when the trace id header is missing, so it is always sent.
  The first call also marks the end of the runtime's init (the handler module is imported).
* ``POST /2018-06-01/runtime/invocation/{id}/response``: the handler's return value.
* ``POST /2018-06-01/runtime/invocation/{id}/error``: an unhandled exception, as
  ``{"errorMessage", "errorType", "requestId", "stackTrace"}`` with the type also in the
  ``Lambda-Runtime-Function-Error-Type`` header.
* ``POST /2018-06-01/runtime/init/error``: the handler could not be loaded
  (``Runtime.ImportModuleError``, ``Runtime.HandlerNotFound``...). Every queued invocation
  fails with that error, as Lambda reports an init failure to the invocation that caused it.

Status codes follow Lambda's: 202 ``{"status": "OK"}`` on accepted posts, 400
``InvalidRequestID`` for an id that is not in flight (unknown or already answered), 403
``InvalidStateTransition`` for an init error after init, 404 for anything else.

One server per sandbox, as in Lambda (each sandbox has its own API on its own loopback
address): ``/next`` never has to guess which runtime is asking, and a sandbox is thrown
away with its server. The Deadline-Ms header is wall-clock epoch milliseconds, as the
runtime expects; internally every wait uses the monotonic clock.
"""

from __future__ import annotations

import collections
import contextlib
import re
import secrets
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["API_VERSION", "Invocation", "InvocationResult", "RuntimeAPI", "trace_id"]

API_VERSION = "2018-06-01"
_INVOCATION = re.compile(rf"^/{API_VERSION}/runtime/invocation/([^/]+)/(response|error)$")
_NEXT = f"/{API_VERSION}/runtime/invocation/next"
_INIT_ERROR = f"/{API_VERSION}/runtime/init/error"
_ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"


@dataclass(frozen=True)
class InvocationResult:
    """How an invocation ended: a payload, or an error in Lambda's shape (its status for
    the counters is :class:`stream.esm.rules.InvocationStatus`).

    Attributes:
        payload: the handler's return value, decoded from JSON (None on error).
        error: ``{"errorType", "errorMessage", ...}`` for a function error, else None.
        timed_out: the sandbox was stopped at the deadline.
    """

    payload: Any = None
    error: dict[str, Any] | None = None
    timed_out: bool = False


class Invocation:
    """One invocation queued on a sandbox; its fields are guarded by the API's lock.

    Attributes:
        request_id: the Lambda request id (a UUID).
        event: the event, JSON-encoded.
        timeout_s: the function timeout; the deadline starts when the runtime takes it.
        delivered_at: monotonic time the runtime took it (None while queued).
        outcome: set once, by the runtime's post or by the sandbox's end.
    """

    __slots__ = (
        "client_context",
        "cognito_identity",
        "delivered_at",
        "event",
        "outcome",
        "request_id",
        "timeout_s",
        "trace_id",
    )

    def __init__(
        self,
        event: bytes,
        timeout_s: float,
        *,
        request_id: str | None = None,
        client_context: str | None = None,
        cognito_identity: str | None = None,
    ) -> None:
        self.request_id = request_id or str(uuid.uuid4())
        self.event = event
        self.timeout_s = timeout_s
        self.trace_id = trace_id()
        self.client_context = client_context
        self.cognito_identity = cognito_identity
        self.delivered_at: float | None = None
        self.outcome: InvocationResult | None = None


def trace_id() -> str:
    """A fresh X-Ray trace header value, in the format Lambda passes to the runtime."""
    root = f"1-{int(time.time()):08x}-{secrets.token_hex(12)}"
    return f"Root={root};Parent={secrets.token_hex(8)};Sampled=0"


class RuntimeAPI:
    """The Runtime API of one sandbox, on a free port of 127.0.0.1, served by a thread.

    Args:
        function_arn: sent as ``Lambda-Runtime-Invoked-Function-Arn``.
        clock: monotonic clock for delivery times (injectable for tests).
        wall_clock: epoch seconds for the ``Deadline-Ms`` header.
    """

    def __init__(
        self,
        function_arn: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.function_arn = function_arn
        self._clock = clock
        self._wall_clock = wall_clock
        self._cond = threading.Condition()
        self._queue: collections.deque[Invocation] = collections.deque()
        self._in_flight: dict[str, Invocation] = {}
        self._ended: Callable[[str], dict[str, Any]] | None = None
        self._closed = False
        #: monotonic time of the first ``/next``: the runtime finished its init.
        self.ready_at: float | None = None
        #: the error the runtime posted to ``/init/error``, if any.
        self.init_error: dict[str, Any] | None = None
        self._server = _Server(("127.0.0.1", 0), _handler_for(self))
        port = self._server.server_port
        #: ``host:port``, the value of the runtime's ``AWS_LAMBDA_RUNTIME_API``.
        self.address = f"127.0.0.1:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            args=(0.05,),  # poll interval: close() returns within it
            name=f"runtime-api-{port}",
            daemon=True,
        )
        self._thread.start()

    # -- the sandbox's side ---------------------------------------------------------------

    def submit(self, invocation: Invocation) -> Invocation:
        """Queue an invocation for the runtime's next ``/next``; returns it.

        On a sandbox that has ended (see :meth:`end`) the invocation fails at once with
        the sandbox's error, so a caller never waits for a runtime that is gone.
        """
        with self._cond:
            if self._ended is not None:
                invocation.outcome = InvocationResult(error=self._ended(invocation.request_id))
            elif self.init_error is not None:
                invocation.outcome = InvocationResult(error=self.init_error)
            else:
                self._queue.append(invocation)
            self._cond.notify_all()
        return invocation

    def wait_delivered(self, invocation: Invocation, until: float) -> bool:
        """Wait until the runtime took the invocation or it ended; False at ``until``."""
        return self._wait(
            lambda: invocation.delivered_at is not None or invocation.outcome is not None,
            until,
        )

    def wait_outcome(self, invocation: Invocation, until: float) -> InvocationResult | None:
        """The invocation's outcome, or None if it has none at ``until`` (monotonic)."""
        self._wait(lambda: invocation.outcome is not None, until)
        with self._cond:
            return invocation.outcome

    def resolve(self, invocation: Invocation, outcome: InvocationResult) -> InvocationResult:
        """Give the invocation this outcome unless it has one; returns the one that holds.

        This settles the race between a runtime's late response and the deadline.
        """
        with self._cond:
            if invocation.outcome is None:
                self._finish(invocation, outcome)
            return invocation.outcome or outcome

    def end(self, error: Callable[[str], dict[str, Any]]) -> None:
        """The runtime process is gone: fail what is queued or in flight, and all later
        submissions, with ``error(request_id)``."""
        with self._cond:
            self._ended = error
            for invocation in [*self._queue, *self._in_flight.values()]:
                if invocation.outcome is None:
                    invocation.outcome = InvocationResult(error=error(invocation.request_id))
            self._queue.clear()
            self._in_flight.clear()
            self._cond.notify_all()

    def close(self) -> None:
        """Stop serving; a runtime still blocked in ``/next`` gets 503 (or a closed socket)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _wait(self, predicate: Callable[[], bool], until: float) -> bool:
        with self._cond:
            while not predicate():
                left = until - self._clock()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def _finish(self, invocation: Invocation, outcome: InvocationResult) -> None:
        invocation.outcome = outcome
        self._in_flight.pop(invocation.request_id, None)
        self._cond.notify_all()

    # -- the runtime's side (called by the request handler threads) -----------------------

    def _next(self) -> Invocation | None:
        with self._cond:
            if self.ready_at is None:
                self.ready_at = self._clock()
                self._cond.notify_all()
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            invocation = self._queue.popleft()
            invocation.delivered_at = self._clock()
            self._in_flight[invocation.request_id] = invocation
            self._cond.notify_all()
            return invocation

    def _deadline_ms(self, invocation: Invocation) -> int:
        return int((self._wall_clock() + invocation.timeout_s) * 1000)

    def _post(self, request_id: str, outcome: InvocationResult) -> bool:
        with self._cond:
            invocation = self._in_flight.get(request_id)
            if invocation is None:
                return False
            self._finish(invocation, outcome)
            return True

    def _post_init_error(self, error: dict[str, Any]) -> bool:
        with self._cond:
            if self.ready_at is not None:
                return False
            self.init_error = error
            for invocation in self._queue:
                invocation.outcome = InvocationResult(error=error)
            self._queue.clear()
            self._cond.notify_all()
            return True


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a runtime blocked in /next must not hold up close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A runtime killed at its deadline resets its connection: that is not an error."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


def _error_body(body: bytes, error_type: str | None) -> dict[str, Any]:
    """The posted error as a dict; a body that is not a JSON object is kept as the message."""
    try:
        error = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        error = None
    if not isinstance(error, dict):
        error = {"errorMessage": body.decode(errors="replace")}
    if not error.get("errorType"):
        error["errorType"] = error_type or "Runtime.Unknown"
    error.setdefault("errorMessage", "")
    return error


def _handler_for(api: RuntimeAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the runtime polls on one connection
        disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the function's logs are the runtime's output, not this server's."""

        def do_GET(self) -> None:
            if self.path != _NEXT:
                self._reply(HTTPStatus.NOT_FOUND, _err("NotFound", f"no route {self.path}"))
                return
            invocation = api._next()
            if invocation is None:
                self._reply(HTTPStatus.SERVICE_UNAVAILABLE, _err("Shutdown", "sandbox closed"))
                return
            headers = {
                "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
                "Lambda-Runtime-Deadline-Ms": str(api._deadline_ms(invocation)),
                "Lambda-Runtime-Invoked-Function-Arn": api.function_arn,
                "Lambda-Runtime-Trace-Id": invocation.trace_id,
            }
            if invocation.client_context is not None:
                headers["Lambda-Runtime-Client-Context"] = invocation.client_context
            if invocation.cognito_identity is not None:
                headers["Lambda-Runtime-Cognito-Identity"] = invocation.cognito_identity
            self._reply(HTTPStatus.OK, invocation.event, headers)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.path == _INIT_ERROR:
                error = _error_body(body, self.headers.get(_ERROR_TYPE_HEADER))
                if api._post_init_error(error):
                    self._reply(HTTPStatus.ACCEPTED, b'{"status":"OK"}')
                else:
                    self._reply(
                        HTTPStatus.FORBIDDEN,
                        _err("InvalidStateTransition", "init error after init completed"),
                    )
                return
            match = _INVOCATION.match(self.path)
            if match is None:
                self._reply(HTTPStatus.NOT_FOUND, _err("NotFound", f"no route {self.path}"))
                return
            request_id, kind = match.groups()
            if kind == "response":
                try:
                    outcome = InvocationResult(payload=orjson.loads(body) if body else None)
                except orjson.JSONDecodeError:
                    outcome = InvocationResult(payload=body.decode(errors="replace"))
            else:
                outcome = InvocationResult(
                    error=_error_body(body, self.headers.get(_ERROR_TYPE_HEADER))
                )
            if api._post(request_id, outcome):
                self._reply(HTTPStatus.ACCEPTED, b'{"status":"OK"}')
            else:
                self._reply(
                    HTTPStatus.BAD_REQUEST,
                    _err("InvalidRequestID", f"request id {request_id} is not in flight"),
                )

        def _reply(
            self, status: HTTPStatus, body: bytes, headers: dict[str, str] | None = None
        ) -> None:
            # The runtime may be gone (killed at its deadline): nobody is left to tell.
            with contextlib.suppress(OSError):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

    return Handler


def _err(error_type: str, message: str) -> bytes:
    body: bytes = orjson.dumps({"errorType": error_type, "errorMessage": message})
    return body
