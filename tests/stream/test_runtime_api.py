"""The Runtime API server speaks Lambda's protocol to a plain HTTP client acting as a runtime."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from stream.esm.runtime_api import API_VERSION, Invocation, InvocationResult, RuntimeAPI

if TYPE_CHECKING:
    from collections.abc import Iterator

ARN = "arn:aws:lambda:us-east-1:123456789012:function:f"
NEXT = f"/{API_VERSION}/runtime/invocation/next"
WALL = 1_767_225_600.0


@pytest.fixture
def api() -> Iterator[RuntimeAPI]:
    server = RuntimeAPI(ARN, wall_clock=lambda: WALL)
    yield server
    server.close()


def call(
    api: RuntimeAPI, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection, as awslambdaric's ``call_rapid`` does."""
    conn = http.client.HTTPConnection(api.address, timeout=10)
    try:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        conn.request(method, path, data, headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def poll(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("condition not met within the deadline")
        time.sleep(0.005)


def take(api: RuntimeAPI, event: Any = None, **kwargs: Any) -> tuple[Invocation, dict[str, str]]:
    """Queue an invocation and fetch it as the runtime would; the invocation and headers."""
    invocation = api.submit(Invocation(json.dumps(event or {}).encode(), 3.0, **kwargs))
    status, headers, _ = call(api, "GET", NEXT)
    assert status == 200
    return invocation, headers


def response_path(request_id: str, kind: str = "response") -> str:
    return f"/{API_VERSION}/runtime/invocation/{request_id}/{kind}"


class TestNext:
    def test_next_blocks_until_an_invocation_is_queued_then_sends_the_event(self, api):
        got: dict[str, Any] = {}
        runtime = threading.Thread(target=lambda: got.update(r=call(api, "GET", NEXT)))
        runtime.start()
        poll(lambda: api.ready_at is not None)  # the runtime is waiting in /next
        assert runtime.is_alive()
        invocation = api.submit(Invocation(b'{"Records": []}', 2.5))
        runtime.join(10)
        status, headers, body = got["r"]
        assert status == 200
        assert body == b'{"Records": []}'
        assert headers["Lambda-Runtime-Aws-Request-Id"] == invocation.request_id
        assert headers["Lambda-Runtime-Deadline-Ms"] == str(int((WALL + 2.5) * 1000))
        assert headers["Lambda-Runtime-Invoked-Function-Arn"] == ARN
        assert re.fullmatch(
            r"Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=0",
            headers["Lambda-Runtime-Trace-Id"],
        )
        assert "Lambda-Runtime-Client-Context" not in headers
        assert api.wait_delivered(invocation, time.monotonic())

    def test_client_context_and_cognito_identity_are_sent_when_set(self, api):
        _, headers = take(api, client_context='{"custom": 1}', cognito_identity='{"id": "x"}')
        assert headers["Lambda-Runtime-Client-Context"] == '{"custom": 1}'
        assert headers["Lambda-Runtime-Cognito-Identity"] == '{"id": "x"}'

    def test_invocations_are_delivered_in_the_order_they_were_queued(self, api):
        first = api.submit(Invocation(b"1", 1.0))
        second = api.submit(Invocation(b"2", 1.0))
        assert call(api, "GET", NEXT)[1]["Lambda-Runtime-Aws-Request-Id"] == first.request_id
        assert call(api, "GET", NEXT)[1]["Lambda-Runtime-Aws-Request-Id"] == second.request_id

    def test_an_invocation_not_taken_is_not_delivered_by_the_deadline(self, api):
        invocation = api.submit(Invocation(b"{}", 1.0))
        assert not api.wait_delivered(invocation, time.monotonic() + 0.01)
        assert api.wait_outcome(invocation, time.monotonic()) is None

    def test_close_releases_a_runtime_blocked_in_next(self):
        server = RuntimeAPI(ARN)
        got: dict[str, Any] = {}
        runtime = threading.Thread(target=lambda: got.update(r=call(server, "GET", NEXT)))
        runtime.start()
        poll(lambda: server.ready_at is not None)
        server.close()
        runtime.join(10)
        assert got["r"][0] == 503


class TestResults:
    def test_a_response_completes_the_invocation_with_its_payload(self, api):
        invocation, _ = take(api)
        status, _, body = call(
            api, "POST", response_path(invocation.request_id), {"batchItemFailures": []}
        )
        assert (status, json.loads(body)) == (202, {"status": "OK"})
        assert api.wait_outcome(invocation, time.monotonic()) == InvocationResult(
            payload={"batchItemFailures": []}
        )

    def test_an_error_completes_the_invocation_with_awslambdarics_error_shape(self, api):
        invocation, _ = take(api)
        error = {
            "errorMessage": "boom",
            "errorType": "ValueError",
            "requestId": invocation.request_id,
            "stackTrace": ['  File "h.py", line 5, in boom\n'],
        }
        headers = {"Lambda-Runtime-Function-Error-Type": "ValueError"}
        status, _, _ = call(
            api, "POST", response_path(invocation.request_id, "error"), error, headers
        )
        assert status == 202
        outcome = api.wait_outcome(invocation, time.monotonic())
        assert outcome == InvocationResult(error=error)

    def test_an_error_body_without_a_type_takes_it_from_the_header(self, api):
        invocation, _ = take(api)
        headers = {"Lambda-Runtime-Function-Error-Type": "Runtime.Custom"}
        call(api, "POST", response_path(invocation.request_id, "error"), b"not json", headers)
        outcome = api.wait_outcome(invocation, time.monotonic())
        assert outcome is not None
        assert outcome.error == {"errorMessage": "not json", "errorType": "Runtime.Custom"}

    def test_a_second_post_for_the_same_request_is_refused_and_changes_nothing(self, api):
        invocation, _ = take(api)
        call(api, "POST", response_path(invocation.request_id), 1)
        status, _, body = call(api, "POST", response_path(invocation.request_id), 2)
        assert status == 400
        assert json.loads(body)["errorType"] == "InvalidRequestID"
        assert api.wait_outcome(invocation, time.monotonic()) == InvocationResult(payload=1)

    def test_a_post_for_an_unknown_request_id_is_refused(self, api):
        status, _, body = call(api, "POST", response_path("no-such-id"), 1)
        assert status == 400
        assert json.loads(body)["errorType"] == "InvalidRequestID"

    def test_unknown_routes_are_404(self, api):
        assert call(api, "GET", f"/{API_VERSION}/runtime/elsewhere")[0] == 404
        assert call(api, "POST", f"/{API_VERSION}/runtime/invocation/x/other", 1)[0] == 404

    def test_the_first_outcome_holds_a_late_response_is_refused(self, api):
        invocation, _ = take(api)
        late = InvocationResult(error={"errorType": "Sandbox.Timedout"}, timed_out=True)
        assert api.resolve(invocation, late) is late
        assert call(api, "POST", response_path(invocation.request_id), 1)[0] == 400
        assert api.resolve(invocation, InvocationResult(payload=2)) is late


class TestInitError:
    def test_an_init_error_fails_the_queued_invocations_and_every_later_one(self, api):
        queued = api.submit(Invocation(b"{}", 1.0))
        error = {
            "errorMessage": "Unable to import module 'm': No module named 'm'",
            "errorType": "Runtime.ImportModuleError",
            "requestId": "",
            "stackTrace": [],
        }
        headers = {"Lambda-Runtime-Function-Error-Type": "Runtime.ImportModuleError"}
        status, _, _ = call(api, "POST", f"/{API_VERSION}/runtime/init/error", error, headers)
        assert status == 202
        assert api.init_error == error
        assert api.wait_outcome(queued, time.monotonic()) == InvocationResult(error=error)
        later = api.submit(Invocation(b"{}", 1.0))
        assert later.outcome == InvocationResult(error=error)

    def test_an_init_error_after_init_is_refused(self, api):
        take(api)
        status, _, body = call(api, "POST", f"/{API_VERSION}/runtime/init/error", {})
        assert status == 403
        assert json.loads(body)["errorType"] == "InvalidStateTransition"
        assert api.init_error is None


class TestEnd:
    def test_a_runtime_that_is_gone_fails_what_it_held_and_every_later_invocation(self, api):
        in_flight, _ = take(api)
        queued = api.submit(Invocation(b"{}", 1.0))
        api.end(lambda request_id: {"errorType": "Runtime.ExitError", "errorMessage": request_id})
        for invocation in (in_flight, queued, api.submit(Invocation(b"{}", 1.0))):
            outcome = api.wait_outcome(invocation, time.monotonic())
            assert outcome is not None
            assert outcome.error == {
                "errorType": "Runtime.ExitError",
                "errorMessage": invocation.request_id,
            }
