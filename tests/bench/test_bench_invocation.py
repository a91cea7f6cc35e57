"""Smoke test of ``python -m bench invocation``: every function, every row, the same calls
with the overlap switched off and on, both floors; the delay proxy relays, counts and logs
each call with its times; the timeline's depth, service times and slope."""

from __future__ import annotations

import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest

from bench import delayproxy, invocation, timeline
from stream import overlap
from stream.event import records_from_event

pytestmark = pytest.mark.integration


def test_a_tiny_run_reports_every_row_and_the_same_calls_both_ways(
    capsys: pytest.CaptureFixture[str],
):
    args = ["--records", "40", "--repeat", "1", "--latency-ms", "1", "--json", "--timeline"]
    assert invocation.main([*args, "--item-wave-width", "8"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["latencies_ms"] == [1, 0, 2]
    assert report["item_wave_width"] == 8
    assert overlap.ITEM_WAVE_WIDTH == 128  # set back after the run
    assert set(report["functions"]) == {"enrich-and-route", "archive-all", "purchases-per-minute"}
    for figures in report["functions"].values():
        for row in ("before", "after", "powertools", "floor", "local_floor"):
            assert figures[row]["wall_ms"] > 0
            assert figures[row]["gb_s_per_million"] > 0
        assert figures["before"]["calls"] == figures["after"]["calls"]  # only the timing differs
        assert figures["floor"]["critical_path_calls"] >= 1
        after = figures["after"]
        assert set(after["wall_ms_by_latency"]) == {"0", "1", "2"}
        assert after["observed_depth"] >= 1
        assert set(after["service_ms"]) == set(after["calls"])  # a time for every operation
        assert len(after["timeline"]) == sum(after["calls"].values())
        # the local floor adds the servers' time on the critical path, never less than 0
        assert figures["local_floor"]["wall_ms"] >= figures["floor"]["wall_ms"]
        assert "timeline" not in figures["before"]
    archive = report["functions"]["archive-all"]
    assert archive["after"]["calls"]["PUT object"] >= 1
    assert ["PUT object"] in archive["floor"]["steps"][-1]


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
        with urllib.request.urlopen(url + delayproxy.LOG_PATH, timeout=30) as answer:
            log = json.loads(answer.read())
        assert [call[0] for call in log] == ["ListTables"] * 2
        for _, received, forwarded, served, answered in log:
            assert received + 0.001 <= forwarded <= served <= answered  # held 1 ms, then sent
        with urllib.request.urlopen(url + delayproxy.LOG_PATH, timeout=30) as answer:
            assert json.loads(answer.read()) == []  # taken: the next look starts afresh
    finally:
        for one in (server, upstream):
            one.shutdown()
            one.server_close()


def test_a_call_is_in_the_proxy_s_log_before_its_answer_goes_out(
    monkeypatch: pytest.MonkeyPatch,
):
    # The bench asks for the log as soon as the invocation has its last answer: a call
    # logged only after its answer was written could be missing from that look (CI saw a
    # run's last PutObject counted in one row and not in the other).
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    server = delayproxy.serve(f"http://127.0.0.1:{upstream.server_address[1]}", 0.0)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    seen_when_answering: list[list[str]] = []
    answer = delayproxy.BaseHTTPRequestHandler.send_response_only

    def look_first(handler: BaseHTTPRequestHandler, code: int, message: str | None = None) -> None:
        relayed = handler.server is server and not handler.path.startswith("/__delayproxy/")
        if relayed:  # the proxy answering the call (not the look, not the upstream)
            with urllib.request.urlopen(url + delayproxy.LOG_PATH, timeout=30) as got:
                seen_when_answering.append([call[0] for call in json.loads(got.read())])
        answer(handler, code, message)

    monkeypatch.setattr(delayproxy.BaseHTTPRequestHandler, "send_response_only", look_first)
    try:
        request = urllib.request.Request(
            url + "/t",
            data=b"{}",
            method="POST",
            headers={"X-Amz-Target": "DynamoDB_20120810.PutItem"},
        )
        with urllib.request.urlopen(request, timeout=30) as got:
            got.read()
        assert seen_when_answering == [["PutItem"]]
    finally:
        for one in (server, upstream):
            one.shutdown()
            one.server_close()


def test_each_batch_of_the_bench_is_new_to_the_window_step():
    # Each batch after the last in position and in event time: a batch among the last
    # one's positions was skipped as a redelivery, and one at the same times came late to
    # windows already closed (either way the window step measured next to nothing).
    first, second = (invocation._fresh(invocation._example_event(300, n + 1), n) for n in (0, 1))
    docs = [[orjson.loads(r.data) for r in records_from_event(e) if r.data.startswith(b"{")]
            for e in (first, second)]  # fmt: skip
    positions = [
        [int(r["kinesis"]["sequenceNumber"]) for r in e["Records"]] for e in (first, second)
    ]
    assert max(positions[0]) < min(positions[1])
    times = [[d["ts"] for d in batch if "ts" in d] for batch in docs]
    assert len(times[0]) == len(times[1]) > 200  # the same documents
    assert max(times[0]) < min(times[1])  # a day later: past any lateness
    assert [{k: v for k, v in d.items() if k != "ts"} for d in docs[0]] == [
        {k: v for k, v in d.items() if k != "ts"} for d in docs[1]
    ]


class TestTimeline:
    def test_a_wave_counts_once_and_a_call_sent_after_an_answer_counts_again(self):
        wave = [("PutItem", 0.0, 0.01, 0.012, 0.013), ("PutItem", 0.001, 0.011, 0.02, 0.021)]
        after = ("_bulk", 0.021, 0.031, 0.032, 0.033)  # sent once the slower one answered
        assert timeline.depth(wave) == 1
        assert timeline.depth([*wave, after]) == 2
        early = ("_bulk", 0.0135, 0.0235, 0.024, 0.025)  # after the first answer only
        assert timeline.depth([*wave, early]) == 2

    def test_the_service_time_adds_up_the_server_s_time_on_each_call_of_an_operation(self):
        calls = [("PutItem", 0.0, 0.01, 0.013, 0.02), ("PutItem", 0.0, 0.01, 0.017, 0.018)]
        calls.append(("_bulk", 0.0, 0.01, 0.0125, 0.013))
        assert timeline.service_ms(calls) == {"PutItem": 10.0, "_bulk": 2.5}

    def test_the_slope_of_wall_over_latency_is_the_sequential_calls(self):
        assert timeline.slope([(0, 50), (10, 80), (20, 110), (10, 80)]) == 3.0
        assert timeline.slope([(0, 50), (0, 60)]) == 0.0  # one latency: no line


class TestFloors:
    def test_the_local_floor_adds_the_slowest_branch_of_each_step_by_service_time(self):
        # 75 PutItems that moto served in 25 ms all told, against _mget and _bulk in 5
        before = {"service_ms": {"PutItem": 25.0, "_mget": 2.0, "_bulk": 3.0}}
        after = {"calls": {"PutItem": 75, "_mget": 1, "_bulk": 1}, "letter_phases": 0}
        rows = invocation.floors({"before": before, "after": {**after, "cpu_ms": 4.0}}, 10)
        assert rows["floor"]["critical_path_calls"] == 2  # _mget then _bulk
        assert rows["floor"]["wall_ms"] == 24.0
        # the PutItem branch, one call deep, served in 25 ms, outlasts _mget + _bulk (25 ms)
        assert rows["local_floor"]["wall_ms"] == 24.0 + 15.0
