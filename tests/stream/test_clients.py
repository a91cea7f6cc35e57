"""Shared runtime clients: one per service, no nested retries, short timeouts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stream.aws import CONNECT_TIMEOUT_S, READ_TIMEOUT_S, aws_client, reset_clients


@pytest.fixture(autouse=True)
def _region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


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

    def test_importing_the_module_imports_no_boto3(self):
        code = "import sys, stream.aws; print('boto3' in sys.modules)"
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
        )
        assert out.stdout.strip() == "False", out.stderr
