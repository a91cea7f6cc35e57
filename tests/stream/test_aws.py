"""stream.aws: one classification of AWS errors per service, one backoff, one lazy client.

No servers: botocore's own exception types, built as botocore builds them.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    ReadTimeoutError,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from stream import aws
from stream.aws import (
    BASE_DELAY_S,
    MAX_DELAY_S,
    RETRYABLE_CODES,
    AwsFailure,
    Kind,
    backoff_delay,
    classify,
    is_retryable_code,
    lazy_client,
)
from stream.faults import INFRASTRUCTURE_CODES

ROOT = Path(__file__).resolve().parents[2]


def client_error(code: str, status: int = 400, message: str = "m", **extra: object) -> ClientError:
    response = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
        **extra,
    }
    return ClientError(response, "Op")  # type: ignore[arg-type]


class TestClassify:
    @pytest.mark.parametrize("service", sorted(RETRYABLE_CODES))
    def test_every_listed_code_of_a_service_is_retryable(self, service):
        for code in RETRYABLE_CODES[service]:
            assert classify(client_error(code), service).kind is Kind.RETRYABLE, code

    def test_the_dynamodb_table_is_the_union_of_its_three_former_users(self):
        # issue 14: checkpoints listed LimitExceededException, the sink
        # TransactionInProgressException, the lookup neither
        expected = {
            "ProvisionedThroughputExceededException",
            "ThrottlingException",
            "RequestLimitExceeded",
            "InternalServerError",
            "ServiceUnavailable",
            "LimitExceededException",
            "TransactionInProgressException",
        }
        assert set(RETRYABLE_CODES["dynamodb"]) == expected

    def test_every_listed_code_says_why(self):
        for service, table in RETRYABLE_CODES.items():
            for code, why in table.items():
                assert why.strip(), (service, code)

    @pytest.mark.parametrize("service", sorted(RETRYABLE_CODES))
    def test_a_5xx_with_any_code_is_retryable(self, service):
        assert classify(client_error("Whatever", 503), service).kind is Kind.RETRYABLE

    @pytest.mark.parametrize(
        ("service", "retryable"),
        [("s3", True), ("sqs", True), ("dynamodb", False), ("kinesis", False)],
    )
    def test_a_429_is_a_throttle_only_where_the_service_throttles_so(self, service, retryable):
        kind = classify(client_error("TooManyRequests", 429), service).kind
        assert (kind is Kind.RETRYABLE) is retryable

    def test_s3_takes_any_throttling_spelling(self):
        assert classify(client_error("SomeThrottledThing"), "s3").kind is Kind.RETRYABLE
        assert classify(client_error("SomeThrottledThing"), "dynamodb").kind is Kind.PERMANENT

    def test_s3_retries_an_expired_token_though_it_is_an_infrastructure_code(self):
        assert "ExpiredToken" in INFRASTRUCTURE_CODES
        assert classify(client_error("ExpiredToken"), "s3").kind is Kind.RETRYABLE
        assert classify(client_error("ExpiredToken"), "dynamodb").kind is Kind.INFRASTRUCTURE

    @pytest.mark.parametrize("code", ["ResourceNotFoundException", "AccessDeniedException"])
    def test_a_missing_or_denied_resource_is_infrastructure(self, code):
        failure = classify(client_error(code), "dynamodb")
        assert failure.kind is Kind.INFRASTRUCTURE
        assert failure.answered

    def test_a_service_answer_carries_code_message_status_and_item(self):
        item = {"leaseKey": {"S": "shard-1"}}
        failure = classify(
            client_error("ConditionalCheckFailedException", 400, "no", Item=item), "dynamodb"
        )
        assert failure == AwsFailure(
            Kind.PERMANENT, "ConditionalCheckFailedException", "no", 400, answered=True, item=item
        )

    def test_botocore_refusing_the_request_is_invalid(self):
        exc = ParamValidationError(report="Missing required parameter")
        failure = classify(exc, "sqs")
        assert (failure.kind, failure.code, failure.answered) == (
            Kind.INVALID,
            "ParamValidationError",
            False,
        )

    @pytest.mark.parametrize(
        "exc",
        [
            ReadTimeoutError(endpoint_url="http://127.0.0.1:9"),
            ConnectionClosedError(endpoint_url="http://127.0.0.1:9"),
        ],
    )
    def test_a_request_sent_and_never_answered_is_no_answer(self, exc):
        assert classify(exc, "kinesis").kind is Kind.NO_ANSWER

    def test_an_endpoint_that_cannot_be_reached_is_unreachable(self):
        failure = classify(EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), "s3")
        assert (failure.kind, failure.code, failure.http_status) == (
            Kind.UNREACHABLE,
            "EndpointConnectionError",
            0,
        )

    @pytest.mark.parametrize("exc", [NoCredentialsError(), NoRegionError()])
    def test_no_credentials_or_region_is_infrastructure_without_an_answer(self, exc):
        failure = classify(exc, "dynamodb")
        assert failure.kind is Kind.INFRASTRUCTURE
        assert not failure.answered

    def test_an_error_not_from_botocore_is_other(self):
        assert classify(KeyError("bug"), "dynamodb").kind is Kind.OTHER

    def test_an_unknown_service_fails_at_once(self):
        with pytest.raises(KeyError):
            classify(client_error("X"), "lambda")

    def test_is_retryable_code_agrees_with_classify(self):
        for service, table in RETRYABLE_CODES.items():
            for code in (*table, "ValidationException"):
                retry = classify(client_error(code), service).kind is Kind.RETRYABLE
                assert is_retryable_code(service, code, 400) is retry, (service, code)


class TestBackoff:
    @settings(deadline=None)
    @given(attempt=st.integers(0, 10_000), base=st.floats(0.001, 10), cap=st.floats(0, 60))
    def test_a_wait_is_between_zero_and_the_capped_exponential_bound(self, attempt, base, cap):
        bound = min(cap, base * 2 ** min(attempt, 32))
        assert 0 <= backoff_delay(attempt, base, cap) <= bound

    def test_the_bound_doubles_per_attempt_up_to_the_cap(self):
        highest = [backoff_delay(a, uniform=lambda _low, high: high) for a in range(1, 8)]
        assert highest == [0.1, 0.2, 0.4, 0.8, 1.6, MAX_DELAY_S, MAX_DELAY_S]
        assert highest[0] == 2 * BASE_DELAY_S == aws.FIRST_DELAY_S

    def test_the_randomness_is_injectable(self):
        one, two = random.Random(7), random.Random(7)
        assert backoff_delay(3, uniform=one.uniform) == backoff_delay(3, uniform=two.uniform)

    def test_full_jitter_spreads_over_the_whole_range(self):
        waits = [backoff_delay(1, 0.5, 10) for _ in range(400)]
        assert min(waits) < 0.1
        assert max(waits) > 0.9


class TestLazyClient:
    class Owner:
        client = lazy_client("dynamodb")
        s3 = lazy_client("s3", "_s3")

        def __init__(self, client: object = None) -> None:
            self._client = client
            self._s3 = None

    def test_an_injected_client_is_used(self):
        assert self.Owner("mine").client == "mine"

    def test_the_shared_client_is_made_once_and_kept(self, monkeypatch):
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        owner = self.Owner()
        assert owner.client is aws.aws_client("dynamodb")
        assert owner._client is owner.client
        assert owner.s3 is aws.aws_client("s3")
        assert owner._s3 is owner.s3

    def test_on_the_class_it_is_the_descriptor(self):
        assert isinstance(self.Owner.client, lazy_client)


# What a backoff or a table of retryable codes looks like in source, outside stream/aws.py.
_JITTER = re.compile(r"\.uniform\(\s*0")
_RETRY_CODE = re.compile(
    r'"(ProvisionedThroughputExceededException|ThrottlingException|Throttling|SlowDown|'
    r'RequestThrottled|RequestLimitExceeded|ServiceUnavailable)"'
)
_RUNTIME = ("stream", "sinks", "processors")


def _table_codes(text: str) -> set[str]:
    return set(_RETRY_CODE.findall(text))


def _runtime_sources() -> list[Path]:
    files = [p for d in _RUNTIME for p in sorted((ROOT / d).rglob("*.py"))]
    return [p for p in files if p != ROOT / "stream" / "aws.py"]


class TestOneOfEach:
    """Issue 14: eight copies of the backoff and six tables of retryable codes had drifted
    apart. A second one must not come back outside stream/aws.py."""

    def test_the_scan_sees_the_runtime_sources(self):
        names = {p.name for p in _runtime_sources()}
        assert {"dynamodb.py", "lookup.py", "checkpoints.py", "producer.py"} <= names

    def test_no_second_full_jitter_backoff(self):
        found = [
            f"{p.relative_to(ROOT)}:{n}"
            for p in _runtime_sources()
            for n, line in enumerate(p.read_text().splitlines(), 1)
            if _JITTER.search(line) or "random.uniform" in line
        ]
        assert not found, f"use stream.aws.backoff_delay instead of: {found}"

    def test_no_second_table_of_retryable_codes(self):
        found = [
            f"{p.relative_to(ROOT)}: {sorted(_table_codes(p.read_text()))}"
            for p in _runtime_sources()
            if len(_table_codes(p.read_text())) >= 2  # one code tested alone is no table
        ]
        assert not found, f"use stream.aws.RETRYABLE_CODES / classify instead: {found}"

    def test_the_scan_would_catch_the_old_copies(self):
        assert _JITTER.search("return random.uniform(0, bound)")
        assert _JITTER.search("self._rng.uniform(0, self._base_delay * 2**attempt)")
        table = '_RETRYABLE_CODES = frozenset({"ThrottlingException", "ServiceUnavailable"})'
        assert len(_table_codes(table)) == 2
