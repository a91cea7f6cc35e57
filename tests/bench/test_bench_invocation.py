"""Smoke test of ``python -m bench invocation``: both functions, every row, the same calls
with the overlap switched off and on; and the delay proxy relays and counts."""

from __future__ import annotations

import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench import delayproxy, invocation

pytestmark = pytest.mark.integration


def test_a_tiny_run_reports_every_row_and_the_same_calls_both_ways(
    capsys: pytest.CaptureFixture[str],
):
    args = ["--records", "40", "--repeat", "1", "--latency-ms", "1", "--json"]
    assert invocation.main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["functions"]) == {"enrich-and-route", "archive-all", "purchases-per-minute"}
    for figures in report["functions"].values():
        for row in ("before", "after", "powertools", "floor"):
            assert figures[row]["wall_ms"] > 0
            assert figures[row]["gb_s_per_million"] > 0
        assert figures["before"]["calls"] == figures["after"]["calls"]  # only the timing differs
        assert figures["floor"]["critical_path_calls"] >= 1
    assert report["functions"]["archive-all"]["after"]["calls"]["PUT object"] >= 1


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        seen = {"path": self.path, "body": body.decode(), "host": self.headers["Host"]}
        answer = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        del format, args


def test_the_delay_proxy_relays_byte_for_byte_and_counts_by_operation():
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    server = delayproxy.serve(f"http://127.0.0.1:{upstream.server_address[1]}", 1.0)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        for _ in range(2):  # the second on the kept-alive upstream connection
            request = urllib.request.Request(
                url + "/t?x=1",
                data=b'{"a": 1}',
                method="POST",
                headers={"X-Amz-Target": "DynamoDB_20120810.ListTables"},
            )
            with urllib.request.urlopen(request, timeout=30) as answer:
                seen = json.loads(answer.read())
            assert seen == {"path": "/t?x=1", "body": '{"a": 1}', "host": url[len("http://") :]}
        with urllib.request.urlopen(url + delayproxy.COUNTS_PATH, timeout=30) as answer:
            assert json.loads(answer.read()) == {"ListTables": 2}
    finally:
        for one in (server, upstream):
            one.shutdown()
            one.server_close()
