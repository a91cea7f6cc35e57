"""The fault proxy itself: honest forwarding, each fault as the client sees it, the rules."""

from __future__ import annotations

import contextlib
import http.client
import random
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import pytest

from tests.faultproxy import (
    DROP,
    INTERNAL,
    LOST_ACK,
    OPENSEARCH_REJECTED,
    S3_INTERNAL,
    S3_SLOWDOWN,
    THROTTLE,
    THROTTLING,
    UNAVAILABLE,
    Fault,
    FaultProxy,
    held_until,
    slow,
    sqs_batch_failures,
)
from tests.integration.fault_fixtures import aws_client
from tests.integration.test_run import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.integration


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    with FaultProxy(moto_endpoint, seed=0) as p:
        yield p


@pytest.fixture
def ddb(proxy: FaultProxy) -> Any:
    return aws_client(proxy.url, "dynamodb")


def make_table(client: Any, name: str) -> str:
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


class Echo:
    """A target that records what reaches it and answers ``{}``: to see the forwarded bytes."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                raw = b""
                if "chunked" in self.headers.get("Transfer-Encoding", ""):
                    while line := self.rfile.readline():
                        raw += line
                        if line == b"\r\n" and raw.endswith(b"0\r\n\r\n"):
                            break
                else:
                    raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                seen.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": dict(self.headers.items()),
                        "body": raw,
                        "port": self.client_address[1],
                    }
                )
                self.send_response(200)
                self.send_header("Content-Type", "application/x-amz-json-1.0")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_PUT = do_POST

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def echo() -> Iterator[Echo]:
    server = Echo()
    yield server
    server.close()


def sigv4_signature(seen: dict[str, Any], host: str) -> str:
    """The signature botocore computes for the request as the target received it."""
    from botocore.auth import SigV4Auth  # noqa: PLC0415
    from botocore.awsrequest import AWSRequest  # noqa: PLC0415
    from botocore.credentials import Credentials  # noqa: PLC0415

    auth = seen["headers"]["Authorization"]
    signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
    headers = {k: v for k, v in seen["headers"].items() if k.lower() in signed}
    headers["Host"] = host
    request = AWSRequest(
        method=seen["method"], url=f"http://{host}{seen['path']}", data=seen["body"]
    )
    for name, value in headers.items():
        request.headers[name] = value
    request.context["timestamp"] = seen["headers"]["X-Amz-Date"]
    signer = SigV4Auth(Credentials("testing", "testing"), "dynamodb", "us-east-1")
    return signer.signature(
        signer.string_to_sign(request, signer.canonical_request(request)), request
    )


class TestForwarding:
    def test_boto3_dynamodb_round_trips_through_the_proxy(self, proxy, ddb, aws, unique):
        table = make_table(ddb, f"fp-{unique}")
        ddb.put_item(TableName=table, Item={"k": {"S": "a"}, "v": {"N": "1"}})
        got = ddb.get_item(TableName=table, Key={"k": {"S": "a"}}, ConsistentRead=True)
        assert got["Item"] == {"k": {"S": "a"}, "v": {"N": "1"}}
        direct = aws("dynamodb").get_item(TableName=table, Key={"k": {"S": "a"}})
        assert direct["Item"]["v"] == {"N": "1"}  # it really reached the moto server
        assert (proxy.requests, proxy.forwarded, proxy.injected) == (3, 3, {})

    def test_the_target_gets_the_clients_host_and_a_sigv4_signature_that_still_verifies(self, echo):
        with FaultProxy(echo.url) as proxy:
            client = aws_client(proxy.url, "dynamodb")
            for _ in range(3):
                client.list_tables()
            host = f"127.0.0.1:{proxy.port}"
        first = echo.seen[0]
        assert first["headers"]["Host"] == host
        auth = first["headers"]["Authorization"]
        assert "SignedHeaders=content-type;host;x-amz-date;x-amz-target," in auth
        assert f"Signature={sigv4_signature(first, first['headers']['Host'])}" in auth
        # The check can fail: signed for another Host, the signature differs.
        assert f"Signature={sigv4_signature(first, echo.url[7:])}" not in auth
        # One client connection, one kept-alive connection to the target.
        assert len({s["port"] for s in echo.seen}) == 1

    def test_a_chunked_body_reaches_the_target_as_sent(self, echo):
        with FaultProxy(echo.url) as proxy:
            conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
            conn.request("PUT", "/b/k?x=1", body=iter([b"hello ", b"world"]), encode_chunked=True)
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, b"{}")
            conn.close()
        (seen,) = echo.seen
        assert seen["path"] == "/b/k?x=1"
        assert seen["body"] == b"6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"

    @pytest.mark.parametrize(
        ("framing", "sent"),
        [
            ("Content-Length: 1000\r\nExpect: 100-continue", b""),
            ("Content-Length: 1000", b"x" * 10),
            ("Transfer-Encoding: chunked", b"3e8\r\n" + b"x" * 10),
            ("Transfer-Encoding: chunked", b"1\r\nx\r\n0\r\n"),
        ],
        ids=["headers-only", "part-of-length", "part-of-chunk", "no-final-line"],
    )
    def test_a_request_whose_client_hangs_up_mid_body_is_not_forwarded(self, echo, framing, sent):
        """A process killed between its headers and the end of its body (a Lambda sandbox
        past its timeout): a server never acts on what did not arrive whole, so the proxy
        must not relay it as a complete shorter request (moto stored such a PutObject as an
        empty object under the whole body's checksum)."""
        with FaultProxy(echo.url) as proxy:
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as client:
                head = f"PUT /b/cut HTTP/1.1\r\nHost: 127.0.0.1\r\n{framing}\r\n\r\n"
                client.sendall(head.encode())
                if "Expect" in framing:  # botocore sends the body after the 100 Continue
                    interim = b""
                    while not interim.endswith(b"\r\n\r\n"):
                        interim += client.recv(1)
                    assert interim.startswith(b"HTTP/1.1 100")
                client.sendall(sent)
            wait_until(
                "the proxy sees the hang-up", lambda: bool(echo.seen) or proxy.cut_off == 1, 10
            )
            assert echo.seen == []
            # The proxy still serves: the next request, whole, is forwarded.
            conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
            conn.request("PUT", "/b/whole", body=b"x" * 10)
            assert conn.getresponse().status == 200
            conn.close()
            assert (proxy.cut_off, proxy.requests, proxy.forwarded) == (1, 1, 1)
        assert [seen["path"] for seen in echo.seen] == ["/b/whole"]

    def test_an_unreachable_target_is_a_502(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # closed again: nothing listens there
        with FaultProxy(f"http://127.0.0.1:{port}") as proxy:
            conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
            conn.request("GET", "/")
            response = conn.getresponse()
            assert response.status == 502
            assert b"unreachable" in response.read()
            conn.close()


class TestFaultKinds:
    @pytest.mark.parametrize(
        ("fault", "code", "status"),
        [
            (THROTTLE, "ProvisionedThroughputExceededException", 400),
            (THROTTLING, "ThrottlingException", 400),
            (UNAVAILABLE, "ServiceUnavailable", 503),
            (INTERNAL, "InternalServerError", 500),
        ],
        ids=lambda v: v.name if isinstance(v, Fault) else None,
    )
    def test_aws_json_errors_reach_botocore_with_their_code_and_status(
        self, proxy, ddb, fault, code, status
    ):
        from botocore.exceptions import ClientError  # noqa: PLC0415

        proxy.inject(fault)
        with pytest.raises(ClientError) as caught:
            ddb.list_tables()
        error = caught.value.response
        assert (error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]) == (
            code,
            status,
        )
        assert proxy.forwarded == 0
        assert proxy.injected == {fault.name: 1}

    @pytest.mark.parametrize(
        ("fault", "code", "status"),
        [(S3_SLOWDOWN, "SlowDown", 503), (S3_INTERNAL, "InternalError", 500)],
    )
    def test_s3_errors_reach_botocore_as_xml_errors(self, proxy, unique, fault, code, status):
        from botocore.exceptions import ClientError  # noqa: PLC0415

        s3 = aws_client(proxy.url, "s3")
        bucket = f"fp-{unique}"
        s3.create_bucket(Bucket=bucket)
        proxy.inject(fault, method="PUT")
        with pytest.raises(ClientError) as caught:
            s3.put_object(Bucket=bucket, Key="k", Body=b"x")
        error = caught.value.response
        assert (error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]) == (
            code,
            status,
        )
        assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0

    @pytest.mark.parametrize("fail", [{"1"}, {"0", "1", "2"}], ids=["one", "all"])
    def test_sqs_batch_failures_send_only_the_other_entries_and_list_the_failed(
        self, proxy, unique, fail
    ):
        sqs = aws_client(proxy.url, "sqs")
        url = sqs.create_queue(QueueName=f"fp-{unique}")["QueueUrl"]
        picked = sqs_batch_failures(lambda entry: entry["Id"] in fail)
        proxy.inject(picked, target="SendMessageBatch")
        sent = sorted({"0", "1", "2"} - fail)
        entries = [{"Id": str(n), "MessageBody": f"m{n}"} for n in range(3)]

        answer = sqs.send_message_batch(QueueUrl=url, Entries=entries)

        assert sorted(e["Id"] for e in answer.get("Successful", [])) == sorted(
            {"0", "1", "2"} - fail
        )
        assert sorted(e["Id"] for e in answer["Failed"]) == sorted(fail)
        assert {(e["Code"], e["SenderFault"]) for e in answer["Failed"]} == {
            ("InternalError", False)
        }
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        assert sorted(m["Body"] for m in got) == [f"m{n}" for n in sent]

    def test_opensearch_rejections_reach_opensearch_py_as_429(self, opensearch_endpoint, unique):
        from opensearchpy import OpenSearch, TransportError  # noqa: PLC0415

        with FaultProxy(opensearch_endpoint) as proxy:
            client = OpenSearch(hosts=[proxy.url], max_retries=0, timeout=5)
            client.index(index=f"fp-{unique}", id="1", body={"a": 1}, refresh=True)
            proxy.inject(OPENSEARCH_REJECTED, path="/_bulk")
            with pytest.raises(TransportError) as caught:
                client.bulk(body=[{"index": {"_index": f"fp-{unique}", "_id": "2"}}, {"a": 2}])
            assert caught.value.status_code == 429
            assert caught.value.error == "es_rejected_execution_exception"
            assert client.get(index=f"fp-{unique}", id="1")["_source"] == {"a": 1}
            assert proxy.injected == {"opensearch_rejected": 1}

    @pytest.mark.parametrize("forward", [True, False])
    def test_a_slow_response_is_a_read_timeout_and_forward_says_whether_it_applied(
        self, proxy, aws, unique, forward
    ):
        from botocore.exceptions import ReadTimeoutError  # noqa: PLC0415

        direct = aws("dynamodb")
        table = make_table(direct, f"fp-{unique}")
        client = aws_client(proxy.url, "dynamodb", read_timeout=0.2)
        proxy.inject(slow(30, forward=forward))
        started = time.monotonic()
        with pytest.raises(ReadTimeoutError):
            client.put_item(TableName=table, Item={"k": {"S": "a"}})
        # the read timeout ended the call, not the answer held 30 s (a bound with room for
        # a loaded machine: the call took 0.2 s and change)
        assert time.monotonic() - started < 10
        count = 1 if forward else 0  # the forward may land after the client gave up: poll
        deadline = time.monotonic() + 30
        while len(items := direct.scan(TableName=table)["Items"]) != count:
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert len(items) == count

    def test_a_held_answer_waits_for_the_named_other_answer_or_its_deadline(self, echo):
        def post(body: bytes) -> int:
            conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
            conn.request("POST", "/", body=body)
            status = conn.getresponse().status
            conn.close()
            return status

        with FaultProxy(echo.url) as proxy:
            proxy.inject(
                held_until(lambda r: r.body == b"fast", 10), where=lambda r: r.body == b"slow"
            )
            with ThreadPoolExecutor(2) as pool:  # sent at once: the held one ends second
                slow_call = pool.submit(post, b"slow")
                assert post(b"fast") == 200
                assert slow_call.result(timeout=10) == 200
            assert [r.body for r in proxy.answered] == [b"fast", b"slow"]
            assert len(echo.seen) == 2  # both forwarded at once; only the answer was held

        with FaultProxy(echo.url) as proxy:  # sent in turn: the held one ends at its deadline
            proxy.inject(
                held_until(lambda r: r.body == b"fast", 0.2), where=lambda r: r.body == b"slow"
            )
            assert post(b"slow") == 200
            assert post(b"fast") == 200
            assert [r.body for r in proxy.answered] == [b"slow", b"fast"]

    @pytest.mark.parametrize(
        ("fault", "applied"), [(DROP, 0), (LOST_ACK, 1)], ids=["drop", "lost_ack"]
    )
    def test_a_dropped_connection_is_a_connection_error(self, proxy, aws, unique, fault, applied):
        from botocore.exceptions import ConnectionClosedError  # noqa: PLC0415

        table = make_table(aws("dynamodb"), f"fp-{unique}")
        client = aws_client(proxy.url, "dynamodb")
        proxy.inject(fault)
        with pytest.raises(ConnectionClosedError):
            client.put_item(TableName=table, Item={"k": {"S": "a"}})
        assert len(aws("dynamodb").scan(TableName=table)["Items"]) == applied
        assert proxy.forwarded == applied


class TestRules:
    def test_a_target_filter_faults_only_the_named_operation(self, proxy, ddb, unique):
        from botocore.exceptions import ClientError  # noqa: PLC0415

        table = make_table(ddb, f"fp-{unique}")
        proxy.inject(THROTTLE, target="BatchWriteItem")
        ddb.put_item(TableName=table, Item={"k": {"S": "a"}})
        with pytest.raises(ClientError, match="ProvisionedThroughputExceeded"):
            ddb.batch_write_item(
                RequestItems={table: [{"PutRequest": {"Item": {"k": {"S": "b"}}}}]}
            )
        assert proxy.injected == {"throttle": 1}

    def test_times_faults_the_next_n_matching_requests_then_forwards(self, proxy, ddb):
        from botocore.exceptions import ClientError  # noqa: PLC0415

        rule = proxy.inject(UNAVAILABLE, times=2)
        results = []
        for _ in range(4):
            try:
                ddb.list_tables()
                results.append("ok")
            except ClientError as exc:
                results.append(exc.response["Error"]["Code"])
        assert results == ["ServiceUnavailable", "ServiceUnavailable", "ok", "ok"]
        assert rule.fired == 2

    def test_rules_are_tried_in_order_and_can_be_removed(self, proxy, ddb):
        from botocore.exceptions import ClientError  # noqa: PLC0415

        first = proxy.inject(THROTTLING)
        proxy.inject(INTERNAL)
        with pytest.raises(ClientError, match="ThrottlingException"):
            ddb.list_tables()
        proxy.remove(first)
        with pytest.raises(ClientError, match="InternalServerError"):
            ddb.list_tables()
        proxy.clear()
        ddb.list_tables()
        assert proxy.injected == {"throttling": 1, "internal": 1}

    def test_a_seeded_probability_gives_the_same_faults_every_run(self, echo):
        from botocore.exceptions import ClientError  # noqa: PLC0415

        def run(seed: int) -> list[bool]:
            with FaultProxy(echo.url, seed=seed) as proxy:
                proxy.inject(THROTTLE, probability=0.3)
                client = aws_client(proxy.url, "dynamodb")
                faulted = []
                for _ in range(40):
                    try:
                        client.list_tables()
                        faulted.append(False)
                    except ClientError:
                        faulted.append(True)
                assert proxy.injected["throttle"] == sum(faulted)
                return faulted

        draws = random.Random(7)
        expected = [draws.random() < 0.3 for _ in range(40)]
        assert run(7) == expected
        assert run(7) == expected
        assert 0 < sum(expected) < 40
        assert run(8) != expected

    def test_counters_and_times_hold_under_concurrent_clients(self, proxy):
        from botocore.exceptions import ClientError  # noqa: PLC0415

        proxy.inject(THROTTLE, times=7)
        client = aws_client(proxy.url, "dynamodb")

        def call(_: int) -> bool:
            try:
                client.list_tables()
            except ClientError:
                return False
            return True

        with ThreadPoolExecutor(8) as pool:
            ok = list(pool.map(call, range(40)))
        assert ok.count(False) == 7
        assert (proxy.requests, proxy.forwarded, proxy.injected) == (40, 33, {"throttle": 7})

    @pytest.mark.parametrize(
        ("kwargs", "word"), [({"probability": 1.5}, "probability"), ({"times": -1}, "times")]
    )
    def test_bad_rules_are_refused_with_the_argument_named(self, proxy, kwargs, word):
        with pytest.raises(ValueError, match=word):
            proxy.inject(THROTTLE, **kwargs)


class TestLifecycle:
    def test_stop_is_quick_closes_the_port_and_leaves_no_threads(self, moto_endpoint):
        before = set(threading.enumerate())
        proxy = FaultProxy(moto_endpoint).start()
        try:
            port = proxy.port
            idle = aws_client(proxy.url, "dynamodb")
            idle.list_tables()  # leaves a kept-alive connection open
            # held far longer than any wait below: only stop() cutting it short ends it in time
            proxy.inject(slow(300, forward=False))
            held = threading.Thread(target=_ignore_errors, args=(idle.list_tables,), daemon=True)
            held.start()
            deadline = time.monotonic() + 30
            while proxy.injected["slow"] == 0 and time.monotonic() < deadline:
                time.sleep(0.01)  # polling for the request to be held, not waiting a fixed time
            assert proxy.injected["slow"] == 1

            started = time.monotonic()
            proxy.stop(timeout=30)  # a hold not cut short would keep it joining for 30 s
            assert time.monotonic() - started < 10
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=1)
            held.join(30)
            deadline = time.monotonic() + 30
            while (extra := set(threading.enumerate()) - before) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert not extra
        finally:  # a failed look must not leave a request held for 300 s behind it
            proxy.stop()  # idempotent

    def test_port_and_url_need_a_started_proxy(self, moto_endpoint):
        proxy = FaultProxy(moto_endpoint)
        with pytest.raises(RuntimeError, match="not started"):
            _ = proxy.url

    def test_a_target_that_is_not_an_http_url_is_refused(self):
        with pytest.raises(ValueError, match="not an http"):
            FaultProxy("127.0.0.1:4566")


def _ignore_errors(fn: Any) -> None:
    with contextlib.suppress(Exception):  # the held request fails when the proxy stops
        fn()
