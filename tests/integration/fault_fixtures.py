"""Helpers for tests through :class:`tests.faultproxy.FaultProxy`: clients that fail fast.

botocore retries throttles, 5xx and connection errors by itself; through the proxy we want
to see the sink's own retries, so these clients make exactly one attempt per call. Note
that botocore's ``retries["max_attempts"]`` counts *retries* (1 means two attempts);
``total_max_attempts`` counts attempts.
"""

from __future__ import annotations

from typing import Any

__all__ = ["aws_client", "no_sleep"]


def aws_client(
    endpoint: str,
    service: str,
    *,
    read_timeout: float = 10.0,
    connect_timeout: float = 2.0,
) -> Any:
    """A boto3 client of ``service`` bound to ``endpoint``, one attempt per call."""
    import boto3  # noqa: PLC0415  # heavy: only integration tests need it
    from botocore.config import Config  # noqa: PLC0415  # same

    config = Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        read_timeout=read_timeout,
        connect_timeout=connect_timeout,
        s3={"addressing_style": "path"},
    )
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=config,
    )


def no_sleep(_seconds: float) -> None:
    """Injected as a sink's ``sleep``: backoff is exercised, not waited for."""
