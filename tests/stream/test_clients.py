"""Shared runtime clients: one per service, no nested retries, short timeouts."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from processors.lookup import DynamoDBFetch
from sinks.dynamodb import DynamoDBSink
from stream.aws import (
    CONNECT_TIMEOUT_S,
    READ_TIMEOUT_S,
    Kind,
    aws_client,
    classify,
    lazy_client,
    reset_clients,
)


@pytest.fixture(autouse=True)
def _region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture
def nobody_listens(monkeypatch: pytest.MonkeyPatch) -> str:
    """Every client's endpoint is a loopback port nothing listens on: a request that is
    sent fails to connect (at once: refused), one refused before sending never gets there."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return endpoint


#: A PutItem botocore's validation refuses: an attribute value that is not a string.
BAD_PUT = {"TableName": "orders", "Item": {"order_id": {"S": 42}}}


class TestAwsClient:
    def test_one_client_per_service_is_shared(self):
        assert aws_client("dynamodb") is aws_client("dynamodb")
        assert aws_client("s3") is not aws_client("dynamodb")

    def test_reset_makes_the_next_call_create_a_new_client(self):
        first = aws_client("sqs")
        reset_clients()
        assert aws_client("sqs") is not first

    def test_botocore_makes_one_attempt_and_times_out_early(self):
        config = aws_client("kinesis").meta.config
        assert config.retries["total_max_attempts"] == 1
        assert config.connect_timeout == CONNECT_TIMEOUT_S
        assert config.read_timeout == READ_TIMEOUT_S

    def test_the_endpoint_comes_from_the_environment(self, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
        assert aws_client("dynamodb").meta.endpoint_url == "http://127.0.0.1:4566"

    def test_the_unvalidated_client_is_shared_apart_from_the_validated_one(self):
        plain = aws_client("dynamodb", validated=False)
        assert plain is aws_client("dynamodb", validated=False)
        assert plain is not aws_client("dynamodb")
        # the same settings otherwise (the client's config does not show the validation:
        # botocore applies it to the serializer; the two tests below show it at work)
        assert plain.meta.config.retries == aws_client("dynamodb").meta.config.retries
        assert plain.meta.config.max_pool_connections == (
            aws_client("dynamodb").meta.config.max_pool_connections
        )
        reset_clients()
        assert aws_client("dynamodb", validated=False) is not plain

    def test_a_plugin_s_client_refuses_a_bad_parameter_before_sending(self, nobody_listens):
        # what a plugin gets (aws_client, lazy_client): botocore names the parameter and
        # sends nothing (sent, this request would fail to connect instead)
        class Plugin:
            client = lazy_client("dynamodb")

            def __init__(self) -> None:
                self._client = None

        for client in (aws_client("dynamodb"), Plugin().client):
            with pytest.raises(Exception, match=r"Item\.order_id\.S") as caught:
                client.put_item(**BAD_PUT)
            assert classify(caught.value, "dynamodb").kind is Kind.INVALID

    def test_the_unvalidated_client_sends_what_it_is_given(self, nobody_listens):
        with pytest.raises(Exception, match=nobody_listens) as caught:
            aws_client("dynamodb", validated=False).put_item(**BAD_PUT)
        assert classify(caught.value, "dynamodb").kind is Kind.UNREACHABLE

    def test_shardline_s_dynamodb_sink_lookup_and_window_state_share_the_unvalidated_client(
        self,
    ):
        from processors.window_store import DynamoDBStore  # noqa: PLC0415

        sink = DynamoDBSink("orders", table="orders", key="order_id")
        fetch = DynamoDBFetch("users", "user_id")  # the lookup's BatchGetItem
        state = DynamoDBStore("f-windows", "f#", size=60, lateness=0)
        plain = aws_client("dynamodb", validated=False)
        assert sink.client is plain
        assert fetch.client is plain
        assert state.client is plain  # one DynamoDB client for a windowed function, not two

    def test_importing_the_module_imports_no_boto3(self):
        code = "import sys, stream.aws; print('boto3' in sys.modules)"
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
        )
        assert out.stdout.strip() == "False", out.stderr
