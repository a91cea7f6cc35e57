"""AWS clients for the runtime: created on first use, shared, and configured for Lambda.

Every sink, the lookup enricher and the producer ask here instead of calling
``boto3.client`` themselves, for three reasons:

* one client per service per process: two DynamoDB sinks and a lookup share one, and a
  client costs tens of milliseconds and a few MB to create (boto3 loads the service model);
* botocore's own retries are off: each caller retries exactly the failed items with full
  jitter within its budget, and two nested retry loops would multiply the time an
  unreachable endpoint costs;
* short connect and read timeouts, so an unreachable endpoint costs seconds of a Lambda's
  budget, not botocore's default minute per attempt.

boto3 is imported on the first call, not when this module is. The endpoint, region and
credentials come from the environment as usual (``AWS_ENDPOINT_URL`` points every client
at a local server).
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["CONNECT_TIMEOUT_S", "READ_TIMEOUT_S", "aws_client", "reset_clients"]

CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 30

_clients: dict[str, Any] = {}
_lock = threading.Lock()


def aws_client(service: str) -> Any:
    """The process's shared client for ``service`` (``"dynamodb"``, ``"s3"``...)."""
    client = _clients.get(service)
    if client is None:
        with _lock:
            client = _clients.get(service)
            if client is None:
                client = _clients[service] = _make(service)
    return client


def reset_clients() -> None:
    """Forget the shared clients (tests that change the environment's endpoint)."""
    with _lock:
        _clients.clear()


def _make(service: str) -> Any:
    import boto3  # noqa: PLC0415  # heavy: only when a client is first needed
    from botocore.config import Config  # noqa: PLC0415  # loaded with boto3 anyway

    config = Config(
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"mode": "standard", "total_max_attempts": 1},
    )
    return boto3.client(service, config=config)
