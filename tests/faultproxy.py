"""A fault-injecting HTTP proxy on loopback, for integration tests of retries and outcomes.

Sinks classify failures (throttle, 5xx, timeout: retryable; validation: permanent) and
retry some of them. Real local servers never throttle or time out, so this proxy sits
between a client and one (moto server, osmem-server) and injects the failures that AWS
produces, in the shape each client recognises, on exactly the requests a test names:

    >>> with FaultProxy("http://127.0.0.1:5000", seed=1) as proxy:  # doctest: +SKIP
    ...     proxy.inject(THROTTLE, probability=0.3, target="BatchWriteItem")
    ...     client = session.client("dynamodb", endpoint_url=proxy.url)

Requests are forwarded byte for byte (method, path, query, headers, body) with the client's
``Host`` header, so a SigV4 signature stays valid at the target. Each client connection
gets its own keep-alive connection to the target. A request whose client hangs up before
its body has arrived whole (a process killed between PutObject's headers and its body) is
never forwarded, as no server would act on it: relayed with the length of what came, it
became a complete shorter request, and moto stored a cut-off archive object under the
whole body's checksum. :attr:`FaultProxy.cut_off` counts them. Random faults draw from one
``random.Random(seed)``, one draw per matching request and rule, so a run that sends the
same requests in the same order sees the same faults.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from types import TracebackType

__all__ = [
    "DROP",
    "INTERNAL",
    "LOST_ACK",
    "OPENSEARCH_REJECTED",
    "S3_INTERNAL",
    "S3_SLOWDOWN",
    "THROTTLE",
    "THROTTLING",
    "UNAVAILABLE",
    "Fault",
    "FaultProxy",
    "Request",
    "Rule",
    "aws_json_error",
    "held_until",
    "latched",
    "slow",
    "sqs_batch_failures",
]

# Connection-level headers are each hop's own business (RFC 9110 7.6.1); botocore never signs
# them (Expect is on its unsigned list; the proxy already answered 100-continue). Content-Length
# and Transfer-Encoding are kept: the body is relayed as received.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer"}
    | {"upgrade", "expect"}
)


@dataclass(frozen=True, slots=True)
class Fault:
    """What to do instead of (or besides) an honest forward.

    Attributes:
        name: the kind, as counted in :attr:`FaultProxy.injected`.
        status: the canned response's status; 0 for none.
        body: the canned response's body.
        headers: the canned response's headers (Content-Length is added).
        forward: send the request to the target first, so its effect is applied even
            though the client sees a failure (a lost acknowledgement).
        delay: seconds to hold before answering; past the client's read timeout this is a
            timeout. ``stop()`` cuts it short.
        drop: close the connection without a response.
        until_answered: with ``delay`` as the deadline, hold only until the proxy has
            answered a request this picks (:func:`held_until`).
        rewrite: given the request's body, the body to forward instead (None: forward
            nothing, answer 200 with an empty JSON object) and a function that edits the
            target's 200 response body: a partial failure (:func:`sqs_batch_failures`).
    """

    name: str
    status: int = 0
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    forward: bool = False
    delay: float = 0.0
    drop: bool = False
    until_answered: Callable[[Request], bool] | None = None
    rewrite: Callable[[bytes], tuple[bytes | None, Callable[[bytes], bytes]]] | None = None


def aws_json_error(name: str, status: int, code: str, message: str) -> Fault:
    """An error in the AWS JSON protocol (DynamoDB, Kinesis, SQS), as botocore parses it:
    the code after ``#`` in ``__type``; ``x-amzn-ErrorType`` agrees with it."""
    body = json.dumps({"__type": f"com.amazonaws.shardline.faultproxy#{code}", "message": message})
    headers = (("Content-Type", "application/x-amz-json-1.0"), ("x-amzn-ErrorType", code))
    return Fault(name, status, body.encode(), headers)


def _s3_error(name: str, status: int, code: str, message: str) -> Fault:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        "<RequestId>faultproxy</RequestId><HostId>faultproxy</HostId></Error>"
    )
    return Fault(name, status, body.encode(), (("Content-Type", "application/xml"),))


def latched(check: Callable[[], bool]) -> Callable[[], bool]:
    """``check`` asked by one thread at a time, and true for good once it was true.

    For a ``where=`` condition that the test's thread also asks: the proxy asks it from its
    own threads, one per request, and a check that makes boto3 clients from one session
    (not thread-safe) must not run in two threads at once; and a fault switched on by a
    condition (reads held from halfway on) must not switch off again.
    """
    lock = threading.Lock()
    held = [False]

    def ask() -> bool:
        with lock:
            if not held[0]:
                held[0] = check()
            return held[0]

    return ask


def slow(seconds: float, *, forward: bool = True) -> Fault:
    """Hold the response ``seconds`` (make it longer than the client's read timeout).

    Args:
        seconds: how long to hold.
        forward: when true (default) the request reaches the target at once and only the
            response is late: the write is applied but the client times out, the case that
            needs idempotent retries. When false, the target never sees it and the
            connection is closed after the hold.
    """
    return Fault("slow", forward=forward, delay=seconds, drop=not forward)


def held_until(answered: Callable[[Request], bool], deadline: float = 5.0) -> Fault:
    """Forward at once, then hold the response until a request that ``answered`` picks has
    been answered (or ``deadline`` seconds passed): a slow call that ends after a faster
    later one, when the client sends them at once. :attr:`FaultProxy.answered` then shows
    the order; a client that waits for this answer before it sends the other request sees
    only the deadline, and the held request answered first."""
    return Fault("held", forward=True, delay=deadline, until_answered=answered)


def sqs_batch_failures(
    fails: Callable[[Mapping[str, Any]], bool],
    code: str = "InternalError",
    *,
    sender_fault: bool = False,
) -> Fault:
    """A ``SendMessageBatch`` (AWS JSON protocol) of which SQS sends only some entries: the
    entries ``fails`` picks are taken out of the request before it is forwarded, and the
    answer lists them under ``Failed`` with ``code`` (``SenderFault`` false: the sender may
    try again), beside the target's own ``Successful`` entries. What the client is told
    is true: the failed entries were not sent. (moto does not check SigV4 signatures; the
    changed body would not verify at AWS.)"""

    def rewrite(body: bytes) -> tuple[bytes | None, Callable[[bytes], bytes]]:
        request = json.loads(body)
        entries = request.get("Entries", [])
        failed = [entry for entry in entries if fails(entry)]
        kept = [entry for entry in entries if not fails(entry)]

        def edit(answer: bytes) -> bytes:
            response = json.loads(answer or b"{}")
            response.setdefault("Successful", [])
            response["Failed"] = [*response.get("Failed", [])] + [
                {
                    "Id": entry["Id"],
                    "SenderFault": sender_fault,
                    "Code": code,
                    "Message": "faultproxy: this entry was not sent",
                }
                for entry in failed
            ]
            return json.dumps(response).encode()

        forward = json.dumps({**request, "Entries": kept}).encode() if kept else None
        return forward, edit

    return Fault("sqs_batch_failures", rewrite=rewrite)


THROTTLE = aws_json_error(
    "throttle", 400, "ProvisionedThroughputExceededException", "Rate of requests exceeds capacity"
)
"""A DynamoDB or Kinesis throttle: HTTP 400, ``ProvisionedThroughputExceededException``."""
THROTTLING = aws_json_error("throttling", 400, "ThrottlingException", "Rate exceeded")
"""A control-plane or SQS-style throttle: HTTP 400, ``ThrottlingException``."""
UNAVAILABLE = aws_json_error(
    "unavailable", 503, "ServiceUnavailable", "The service is unavailable, try again"
)
"""An AWS JSON 503 ``ServiceUnavailable``."""
INTERNAL = aws_json_error("internal", 500, "InternalServerError", "Internal server error")
"""An AWS JSON 500 ``InternalServerError``."""
S3_SLOWDOWN = _s3_error("s3_slowdown", 503, "SlowDown", "Please reduce your request rate.")
"""S3's throttle: HTTP 503, XML ``<Code>SlowDown</Code>``."""
S3_INTERNAL = _s3_error("s3_internal", 500, "InternalError", "We encountered an internal error.")
"""S3's 500 ``InternalError``."""
OPENSEARCH_REJECTED = Fault(
    "opensearch_rejected",
    429,
    json.dumps(
        {
            "error": {
                "root_cause": [{"type": "es_rejected_execution_exception", "reason": "queue full"}],
                "type": "es_rejected_execution_exception",
                "reason": "rejected execution: the write queue is full (faultproxy)",
            },
            "status": 429,
        }
    ).encode(),
    (("Content-Type", "application/json; charset=UTF-8"),),
)
"""OpenSearch's back-pressure: HTTP 429 ``es_rejected_execution_exception``."""
DROP = Fault("drop", drop=True)
"""Close the connection without a response; the target never sees the request."""
LOST_ACK = Fault("lost_ack", forward=True, drop=True)
"""Forward the request, then close the connection: applied, but the client cannot know."""


@dataclass(frozen=True, slots=True)
class Request:
    """A request as the proxy received it, for rule filters.

    Attributes:
        method: e.g. ``POST``.
        path: the path without the query.
        query: the query string, without ``?``.
        headers: header names in lower case.
        body: the raw body (still chunk-encoded if the client sent it so).
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass(eq=False, slots=True)
class Rule:
    """One injection rule; see :meth:`FaultProxy.inject`. ``fired`` counts its faults."""

    fault: Fault
    probability: float
    times: int | None
    target: str | None
    path: str | None
    method: str | None
    where: Callable[[Request], bool] | None
    fired: int = 0

    def matches(self, request: Request) -> bool:
        """Whether the filters select this request (probability and ``times`` aside)."""
        if self.method is not None and request.method != self.method.upper():
            return False
        if self.path is not None and not request.path.startswith(self.path):
            return False
        if self.target is not None and self.target not in request.headers.get("x-amz-target", ""):
            return False
        return self.where is None or self.where(request)


@dataclass(slots=True)
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    rules: list[Rule] = field(default_factory=list)
    requests: int = 0
    forwarded: int = 0
    cut_off: int = 0
    injected: Counter[str] = field(default_factory=Counter)
    connections: set[socket.socket] = field(default_factory=set)
    threads: set[threading.Thread] = field(default_factory=set)
    answered: list[Request] = field(default_factory=list)


class FaultProxy:
    """A forwarding HTTP proxy on ``127.0.0.1`` with faults that tests turn on and off.

    Args:
        target_url: where requests go, e.g. a moto server's ``http://127.0.0.1:PORT``.
        seed: seed of the random draws of probabilistic rules.
        upstream_timeout: socket timeout of the connections to the target.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. Rules may be
    added and removed while requests flow; all state is guarded by one lock.
    """

    def __init__(self, target_url: str, *, seed: int = 0, upstream_timeout: float = 30.0) -> None:
        parts = urlsplit(target_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            msg = f"FaultProxy: target {target_url!r} is not an http(s)://host[:port] URL"
            raise ValueError(msg)
        self.target_url = target_url
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._prefix = parts.path.rstrip("/")
        self._timeout = upstream_timeout
        self._random = random.Random(seed)
        self._state = _State()
        self._answers = threading.Condition(self._state.lock)
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._loop: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Bind a free loopback port and serve in a daemon thread; returns ``self``."""
        if self._server is not None:
            msg = "FaultProxy.start: already started; stop() it first"
            raise RuntimeError(msg)
        self._stopping.clear()
        server = _Server(("127.0.0.1", 0), _handler_class(self))
        self._server = server
        self._loop = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._loop.name = f"faultproxy-{self.port}"
        self._loop.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Close the listening socket and every client connection; wait for the threads.

        Held (slow) responses are cut short, so this returns quickly. Idempotent.
        """
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self._state.lock:
            connections = list(self._state.connections)
            threads = list(self._state.threads)
        for conn in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                conn.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for thread in [self._loop, *threads]:
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port the proxy listens on."""
        if self._server is None:
            msg = "FaultProxy.port: not started; call start() or use it as a context manager"
            raise RuntimeError(msg)
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The proxy's base URL, to give clients as their endpoint."""
        return f"http://127.0.0.1:{self.port}"

    # -- rules -------------------------------------------------------------------------------

    def inject(
        self,
        fault: Fault,
        *,
        probability: float = 1.0,
        times: int | None = None,
        target: str | None = None,
        path: str | None = None,
        method: str | None = None,
        where: Callable[[Request], bool] | None = None,
    ) -> Rule:
        """Add a rule: inject ``fault`` into matching requests.

        Rules are tried in the order they were added; the first that fires wins.

        Args:
            fault: what to do (a named kind of this module, :func:`slow`, or your own).
            probability: chance per matching request, drawn from the seeded generator.
            times: fire at most this many times (``None``: no limit); with probability 1,
                "the next N matching requests".
            target: only requests whose ``X-Amz-Target`` contains this, e.g.
                ``"BatchWriteItem"`` or ``"PutRecords"``.
            path: only requests whose path starts with this, e.g. ``"/_bulk"``.
            method: only requests with this method.
            where: any other predicate on the :class:`Request`.

        Returns:
            The rule, to :meth:`remove` it or read its ``fired`` count.
        """
        if not 0.0 <= probability <= 1.0:
            msg = f"FaultProxy.inject: probability {probability!r} must be within [0, 1]"
            raise ValueError(msg)
        if times is not None and times < 0:
            msg = f"FaultProxy.inject: times {times!r} must be >= 0 or None for no limit"
            raise ValueError(msg)
        rule = Rule(fault, probability, times, target, path, method, where)
        with self._state.lock:
            self._state.rules.append(rule)
        return rule

    def remove(self, rule: Rule) -> None:
        """Remove one rule (no error if it is gone already)."""
        with self._state.lock:
            if rule in self._state.rules:
                self._state.rules.remove(rule)

    def clear(self) -> None:
        """Remove every rule: from now on the proxy only forwards."""
        with self._state.lock:
            self._state.rules.clear()

    # -- counters ----------------------------------------------------------------------------

    @property
    def requests(self) -> int:
        """Requests received whole, faulted or not (one cut off mid-body counts in
        :attr:`cut_off` only: no rule saw it)."""
        with self._state.lock:
            return self._state.requests

    @property
    def forwarded(self) -> int:
        """Requests sent to the target (honest forwards, ``slow`` and ``lost_ack``)."""
        with self._state.lock:
            return self._state.forwarded

    @property
    def cut_off(self) -> int:
        """Requests whose client hung up before the body ended: never forwarded."""
        with self._state.lock:
            return self._state.cut_off

    @property
    def injected(self) -> Counter[str]:
        """Faults injected so far, by :attr:`Fault.name` (a copy)."""
        with self._state.lock:
            return Counter(self._state.injected)

    @property
    def answered(self) -> list[Request]:
        """The requests answered so far, in the order their responses were sent (a copy;
        a request is in it before its client has the answer)."""
        with self._state.lock:
            return list(self._state.answered)

    # -- the handler's side ------------------------------------------------------------------

    def _record_answer(self, request: Request) -> None:
        with self._answers:
            self._state.answered.append(request)
            self._answers.notify_all()

    def _hold_until(self, answered: Callable[[Request], bool], deadline: float) -> None:
        """Wait until a request ``answered`` picks has been answered, the proxy stops, or
        the deadline passes."""
        with self._answers:
            self._answers.wait_for(
                lambda: any(map(answered, self._state.answered)) or self._stopping.is_set(),
                deadline,
            )

    def _choose(self, request: Request) -> Fault | None:
        with self._state.lock:
            self._state.requests += 1
            for rule in self._state.rules:
                if rule.times is not None and rule.fired >= rule.times:
                    continue
                if not rule.matches(request):
                    continue
                if rule.probability < 1.0 and self._random.random() >= rule.probability:
                    continue
                rule.fired += 1
                self._state.injected[rule.fault.name] += 1
                return rule.fault
            return None

    def _connect(self) -> http.client.HTTPConnection:
        if self._scheme == "https":
            return http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout)
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)

    def _count_cut_off(self) -> None:
        with self._state.lock:
            self._state.cut_off += 1

    def _count_forward(self) -> None:
        with self._state.lock:
            self._state.forwarded += 1

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._state.lock:
            if add:
                self._state.connections.add(conn)
                self._state.threads.add(threading.current_thread())
            else:
                self._state.connections.discard(conn)
                self._state.threads.discard(threading.current_thread())


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() closes client connections itself, then joins
    request_queue_size = 128  # clients open a wave's connections at once (5 drops SYNs)


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes


def _handler_class(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        owner = proxy

    return Handler


class _Handler(BaseHTTPRequestHandler):
    """One client connection: read a request, choose a fault, forward, answer; repeat."""

    owner: FaultProxy
    protocol_version = "HTTP/1.1"  # keep-alive, like AWS endpoints
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stalls
    timeout = 60.0  # an idle client connection is closed after this
    upstream: http.client.HTTPConnection | None = None

    def setup(self) -> None:
        super().setup()
        self.owner._track(self.connection, add=True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):  # the client went away first
            super().finish()
        if self.upstream is not None:
            self.upstream.close()
        self.owner._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:  # the base's name
        """Quiet: tests read counters, not access logs."""

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except OSError:
            self.close_connection = True  # the client hung up (e.g. after its read timeout)

    def _relay(self) -> None:
        request = self._read_request()
        if request is None:  # the client hung up mid-body: nothing to forward or answer
            self.owner._count_cut_off()
            self.close_connection = True
            return
        fault = self.owner._choose(request)
        response = None
        if fault is not None and fault.rewrite is not None:
            response = self._rewritten(request, fault.rewrite)
        elif fault is None or fault.forward:
            response = self._forward(request)
        if fault is not None and fault.until_answered is not None:
            self.owner._hold_until(fault.until_answered, fault.delay)
        elif fault is not None:
            if fault.delay and self.owner._stopping.wait(fault.delay):
                fault = DROP  # stopping: end the hold now
            if fault.drop:
                self.close_connection = True
                return
            if fault.status:
                response = _Response(fault.status, "", list(fault.headers), fault.body)
        if response is not None:
            self.owner._record_answer(request)  # before: the client may look once it has it
            self._answer(response, head=request.method == "HEAD")

    # BaseHTTPRequestHandler dispatches to do_<METHOD>; every method is relayed alike.
    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _relay

    def _read_request(self) -> Request | None:
        """The request, or None when the client hung up before its body ended."""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            if "chunked" in headers.get("transfer-encoding", "").lower():
                body = self._read_chunked()
            else:
                length = int(headers.get("content-length", "0") or 0)
                body = self.rfile.read(length)
                if len(body) < length:  # read() returns short only at end of stream
                    body = None
        except ConnectionError:  # reset mid-body: cut off too
            body = None
        if body is None:
            return None
        path, _, query = self.path.partition("?")
        return Request(self.command, path, query, headers, body)

    def _read_chunked(self) -> bytes | None:
        """The chunked body as received (sizes, extensions and trailers), to relay as is;
        None when the stream ends before the last chunk and the empty line after it."""
        raw = bytearray()
        while True:
            line = self.rfile.readline()
            if not line:
                return None
            raw += line
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                break
            chunk = self.rfile.read(size + 2)
            if len(chunk) < size + 2:
                return None
            raw += chunk
        while True:  # trailers, up to the empty line
            line = self.rfile.readline()
            if not line:
                return None
            raw += line
            if line in (b"\r\n", b"\n"):
                return bytes(raw)

    def _rewritten(
        self,
        request: Request,
        rewrite: Callable[[bytes], tuple[bytes | None, Callable[[bytes], bytes]]],
    ) -> _Response:
        """Forward the rewritten body (if any) and edit a 200 answer."""
        body, edit = rewrite(request.body)
        if body is None:
            headers = [("Content-Type", "application/x-amz-json-1.0")]
            return _Response(200, "OK", headers, edit(b"{}"))
        response = self._forward(Request(request.method, request.path, request.query,
                                         request.headers, body))  # fmt: skip
        if response.status != 200:
            return response
        return _Response(response.status, response.reason, response.headers, edit(response.body))

    def _forward(self, request: Request) -> _Response:
        """Send the request to the target on this connection's keep-alive connection.

        A reused connection that the target closed while idle fails at once; it is reopened
        and the request sent once more (what urllib3 does with a stale pooled connection).
        """
        url = self.owner._prefix + self.path
        headers = [
            (k, str(len(request.body)) if k.lower() == "content-length" else v)
            for k, v in self.headers.items()
            if k.lower() not in _HOP_BY_HOP
        ]  # the length of the body sent, which a rewrite may have changed
        for attempt in range(2):
            reused = self.upstream is not None
            if self.upstream is None:
                self.upstream = self.owner._connect()
            conn = self.upstream
            try:
                conn.putrequest(request.method, url, skip_host=True, skip_accept_encoding=True)
                for name, value in headers:
                    conn.putheader(name, value)
                conn.endheaders(request.body or None)
                answer = conn.getresponse()
                body = answer.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                self.upstream = None
                if reused and attempt == 0:
                    continue
                return _bad_gateway(f"target {self.owner.target_url} closed the connection")
            except OSError as exc:
                conn.close()
                self.upstream = None
                return _bad_gateway(f"target {self.owner.target_url} unreachable: {exc}")
            self.owner._count_forward()
            if answer.will_close:
                conn.close()
                self.upstream = None
            kept = [(k, v) for k, v in answer.getheaders() if k.lower() not in _HOP_BY_HOP]
            return _Response(answer.status, answer.reason, kept, body)
        return _bad_gateway("unreachable")  # pragma: no cover  # the loop always returns

    def _answer(self, response: _Response, *, head: bool) -> None:
        self.send_response(response.status, response.reason or None)
        for name, value in response.headers:
            lower = name.lower()
            if lower == "transfer-encoding" or (lower == "content-length" and not head):
                continue  # the body was read whole: it goes out with its own length
            self.send_header(name, value)
        no_body = head or response.status in (204, 304) or 100 <= response.status < 200
        if not no_body:
            self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if not no_body:
            self.wfile.write(response.body)
        self.wfile.flush()


def _bad_gateway(reason: str) -> _Response:
    body = json.dumps({"message": f"faultproxy: {reason}"}).encode()
    return _Response(502, "Bad Gateway", [("Content-Type", "application/json")], body)
