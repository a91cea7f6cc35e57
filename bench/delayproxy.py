"""A loopback HTTP proxy that adds a fixed delay to every request, for ``bench invocation``.

In-region AWS calls take about 10 ms; the local servers answer in well under one. This
proxy stands between a client and one local server (moto, osmem-server), holds each request
``latency_ms`` before forwarding it byte for byte (with the client's ``Host`` header, so a
SigV4 signature stays valid), and counts requests by operation. It runs in its own process
(``python -m bench.delayproxy UPSTREAM LATENCY_MS`` prints its URL, then serves until stdin
closes), so its work is not counted in the bench's CPU time.

``GET /__delayproxy/calls`` answers the counts as JSON and resets them,
``GET /__delayproxy/latency/MS`` sets the delay, ``GET /__delayproxy/server`` answers
``{"busy_ms": ...}`` and resets it: the wall time during which at least one request was with
the server (forwarded, its answer not yet read back), and ``GET /__delayproxy/log`` answers
every request since the last look, in arrival order, and resets it: ``[op, received,
forwarded, served, answered]``, four ``time.monotonic()`` readings (``CLOCK_MONOTONIC``, one
clock for every process of the machine, so two proxies' logs can be merged): the request
read whole from the client, sent on after the delay, its answer read back from the server
(``served - forwarded`` is the server's **service time**), the answer about to be written
to the client (logged before it is written, so a client that has its answer finds the call
in the log).
None of these paths is forwarded. On AWS the
service's own time is inside the ~10 ms a call takes, and thousands of hosts serve the calls
of a wave at once; a local server is one process on this machine's cores, so its time is
in the bench's wall time on top of the latency, and ``bench invocation`` prints it apart.
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "COUNTS_PATH",
    "LATENCY_PATH",
    "LOG_PATH",
    "SERVER_PATH",
    "main",
    "operation",
    "serve",
]

COUNTS_PATH = "/__delayproxy/calls"
LATENCY_PATH = "/__delayproxy/latency/"
SERVER_PATH = "/__delayproxy/server"
LOG_PATH = "/__delayproxy/log"
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "transfer-encoding",
    }
)


def operation(method: str, path: str, target: str) -> str:
    """A request's operation: the AWS JSON target (``PutItem``), an OpenSearch API
    (``_bulk``, ``_mget``), or the method and the path's depth (S3: ``PUT object``).

    >>> operation("POST", "/", "DynamoDB_20120810.BatchGetItem")
    'BatchGetItem'
    >>> operation("POST", "/events-2026.01.01/_mget", ""), operation("PUT", "/b/k/1.gz", "")
    ('_mget', 'PUT object')
    """
    if target:
        return target.rsplit(".", 1)[-1]
    parts = [p for p in urlsplit(path).path.split("/") if p]
    api = next((p for p in parts if p.startswith("_")), "")
    if api:
        return api
    return f"{method} {'object' if len(parts) > 1 else 'bucket' if parts else 'root'}"


class _Busy:
    """The wall time during which at least one request is with the server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inside = 0
        self._since = 0.0
        self._total = 0.0

    def enter(self) -> None:
        with self._lock:
            if not self._inside:
                self._since = time.perf_counter()
            self._inside += 1

    def leave(self) -> None:
        with self._lock:
            self._inside -= 1
            if not self._inside:
                self._total += time.perf_counter() - self._since

    def take(self) -> float:
        """Seconds busy since the last take (a request inside now counts up to now)."""
        with self._lock:
            now = time.perf_counter()
            total = self._total + (now - self._since if self._inside else 0.0)
            self._total = 0.0
            self._since = now
            return total


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # the listen backlog: a wave opens up to ITEM_WAVE_WIDTH connections at once, and with
    # socketserver's default of 5 the kernel drops the SYNs beyond it, which the client
    # sends again only after a second
    request_queue_size = 256


def serve(upstream: str, latency_ms: float) -> ThreadingHTTPServer:
    """A started proxy to ``upstream`` on a free loopback port (serving in a thread)."""
    target = urlsplit(upstream)
    delay = [latency_ms / 1000.0]
    counts: Counter[str] = Counter()
    lock = threading.Lock()
    busy = _Busy()
    log: list[tuple[str, float, float, float, float]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        upstream_conn: http.client.HTTPConnection | None = None

        def setup(self) -> None:
            super().setup()
            # no Nagle: headers and body go in separate writes, and a delayed ACK would add
            # 40 ms to every request on top of the latency asked for
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, format: str, *args: object) -> None:  # quiet
            del format, args

        def _control(self) -> bool:
            """Answer a request to the proxy itself (counts, log, busy time, latency)."""
            answers = {COUNTS_PATH: counts, LOG_PATH: log}
            if self.path in answers:
                with lock:
                    kept = answers[self.path]
                    body = json.dumps(dict(kept) if self.path == COUNTS_PATH else kept).encode()
                    kept.clear()
            elif self.path == SERVER_PATH:
                body = json.dumps({"busy_ms": busy.take() * 1000.0}).encode()
            elif self.path.startswith(LATENCY_PATH):
                delay[0] = float(self.path[len(LATENCY_PATH) :]) / 1000.0
                body = b"{}"
            else:
                return False
            self._answer(200, [("Content-Type", "application/json")], body)
            return True

        def _relay(self) -> None:
            if self.path.startswith("/__delayproxy/") and self._control():
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            received = time.monotonic()
            op = operation(self.command, self.path, self.headers.get("X-Amz-Target", ""))
            with lock:
                counts[op] += 1
            time.sleep(delay[0])  # the round trip a real region would add
            forwarded = time.monotonic()
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            for attempt in range(2):  # a kept-alive upstream connection may have closed
                conn = self.upstream_conn
                if conn is None:
                    conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                    conn.connect()
                    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self.upstream_conn = conn
                busy.enter()
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                    served = time.monotonic()
                    break
                except (http.client.HTTPException, OSError):
                    conn.close()
                    self.upstream_conn = None
                    if attempt:
                        raise
                finally:
                    busy.leave()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
            kept = [(k, v) for k, v in kept if k.lower() != "content-length"]
            # logged before the answer goes out: a client that has its answer may ask for
            # the log at once, and must find this call in it (logged after, it raced)
            with lock:
                log.append((op, received, forwarded, served, time.monotonic()))
            self._answer(response.status, kept, data)

        def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
            self.send_response_only(status)
            for key, value in headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

    server = _Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv: Sequence[str] | None = None) -> int:
    """``UPSTREAM LATENCY_MS``: print the proxy's URL, serve until stdin closes."""
    upstream, latency = list(sys.argv[1:] if argv is None else argv)
    server = serve(upstream, float(latency))
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    sys.stdin.read()  # the parent closes our stdin (or dies): stop
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
