"""The embedded local AWS: servers on loopback, the plan's resources created in them."""

from __future__ import annotations

import os
import socket
import types
import urllib.request
from typing import TYPE_CHECKING, Any, ClassVar

import pytest

from deploy.local import servers
from deploy.local.servers import LocalAWS, provision, resource_names

if TYPE_CHECKING:
    from collections.abc import Iterator

PLAN: dict[str, Any] = {
    "stream": {"name": "events"},
    "sinks": {
        "orders": {"type": "dynamodb", "table": "orders", "key": "order_id", "mode": "latest"},
        "history": {"type": "dynamodb", "table": "history", "key": "user_id", "mode": "append"},
        "archive": {"type": "s3", "bucket": "archive"},
        "dlq": {"type": "sqs", "queue": "dlq"},
        "next": {"type": "kinesis", "stream": "stage-2", "partition_key": "user_id"},
        "out": {"type": "stdout"},
    },
    "functions": {
        "main": {
            "processors": [
                {"enrich": {"lookup": {"table": "users", "key": "user_id", "into": "user"}}}
            ]
        }
    },
}


class TestResourceNames:
    def test_every_store_of_the_plan_is_listed_once(self):
        names = resource_names(PLAN)
        assert names["streams"] == [("events",), ("stage-2",)]
        assert names["tables"] == [
            ("orders", "order_id", ""),
            ("history", "user_id", "_position"),
            ("users", "user_id", ""),
        ]
        assert names["buckets"] == [("archive",)]
        assert names["queues"] == [("dlq",)]


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalAWS]:
    with LocalAWS() as stack:
        yield stack


@pytest.mark.integration
class TestLocalAWS:
    def test_servers_listen_on_loopback_only(self, stack: LocalAWS):
        for url in (stack.endpoint, stack.opensearch_url):
            assert url.startswith("http://127.0.0.1:")
            with urllib.request.urlopen(url, timeout=5) as response:  # loopback
                assert response.status == 200

    def test_provision_creates_every_resource_and_is_repeatable(self, stack: LocalAWS):
        provision(PLAN, stack.client)
        provision(PLAN, stack.client)  # a second run keeps what exists
        assert set(stack.client("kinesis").list_streams()["StreamNames"]) >= {"events", "stage-2"}
        ddb = stack.client("dynamodb")
        assert set(ddb.list_tables()["TableNames"]) >= {"orders", "history", "users"}
        schema = ddb.describe_table(TableName="history")["Table"]["KeySchema"]
        assert [k["AttributeName"] for k in schema] == ["user_id", "_position"]
        buckets = {b["Name"] for b in stack.client("s3").list_buckets()["Buckets"]}
        assert "archive" in buckets
        assert stack.client("sqs").get_queue_url(QueueName="dlq")["QueueUrl"]

    def test_activated_points_boto3_at_the_server_and_restores_the_environment(
        self, stack: LocalAWS, monkeypatch: pytest.MonkeyPatch
    ):
        import boto3  # noqa: PLC0415

        monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
        with stack.activated():
            assert os.environ["OPENSEARCH_URL"] == stack.opensearch_url
            s3 = boto3.client("s3")
            s3.create_bucket(Bucket="env-bucket")
            assert "env-bucket" in {b["Name"] for b in s3.list_buckets()["Buckets"]}
        assert "AWS_ENDPOINT_URL" not in os.environ

    def test_stop_frees_the_ports(self):
        stack = LocalAWS().start()
        ports = [int(u.rsplit(":", 1)[1]) for u in (stack.endpoint, stack.opensearch_url)]
        stack.stop()
        stack.stop()  # idempotent
        for port in ports:
            with socket.socket() as probe:
                assert probe.connect_ex(("127.0.0.1", port)) != 0


class _ReusingSocket:
    """A socket stand-in for a system that hands the lowest free port to each ``bind`` on
    port 0, a port just closed included (nothing says it may not)."""

    bound: ClassVar[set[int]] = set()

    def __init__(self) -> None:
        self.port = 0

    def bind(self, address: tuple[str, int]) -> None:
        self.port = min(set(range(40000, 40010)) - self.bound)
        self.bound.add(self.port)

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def __enter__(self) -> _ReusingSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bound.discard(self.port)


def test_local_up_s_two_servers_get_two_ports_when_a_freed_port_is_handed_out_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Chosen one after the other, each probe closed at once, the moto server and the
    # osmem-server of `local up` could both get the port the first probe freed.
    monkeypatch.setattr(servers, "socket", types.SimpleNamespace(socket=_ReusingSocket))
    ports = servers._free_ports(2)
    assert len(set(ports)) == 2
    assert not _ReusingSocket.bound  # every probe closed once the ports are chosen
