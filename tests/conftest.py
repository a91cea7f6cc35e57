"""Test-wide settings: hypothesis profiles (``ci`` is chosen when CI is set), and a fresh
set of shared AWS clients per test.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

from stream.aws import reset_clients

if TYPE_CHECKING:
    from collections.abc import Iterator

settings.register_profile(
    "ci", deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None, max_examples=60)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)


@pytest.fixture(autouse=True)
def _fresh_aws_clients() -> Iterator[None]:
    """Tests point boto3 at different servers through the environment; the runtime's
    shared clients (``stream.aws``) must not carry one test's endpoint into the next, and
    neither must the endpoints a command sets for its process (``produce --endpoint-url``
    sets ``AWS_ENDPOINT_URL_KINESIS``, which wins over a later test's ``AWS_ENDPOINT_URL``)."""
    endpoints = {k: v for k, v in os.environ.items() if k.startswith("AWS_ENDPOINT_URL")}
    reset_clients()
    yield
    reset_clients()
    for key in [k for k in os.environ if k.startswith("AWS_ENDPOINT_URL")]:
        if key not in endpoints:
            del os.environ[key]
    os.environ.update(endpoints)
