"""The local setup the flush tests share (``test_window_flush_run.py``,
``test_flush_handler.py``): a pipeline file's plan with its stream and tables made on the
session's moto server, and in-process handlers pointed at an endpoint.

The handlers read their endpoint and credentials from the environment, as in Lambda; the
tests set them with ``monkeypatch`` so that the next test starts clean.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deploy.local.servers import provision
from deploy.pipeline.config import compile_plan, parse_config
from stream.aws import reset_clients

if TYPE_CHECKING:
    from collections.abc import Callable

    import pytest

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


def provision_pipeline(aws: Callable[[str], Any], text: str, *, shards: int) -> dict[str, Any]:
    """The plan of a pipeline file's ``text``, its resources made as ``shardline run`` makes
    them, once its stream exists (a put before that is refused)."""
    plan: dict[str, Any] = dict(compile_plan(parse_config(text, env={})))
    provision(plan, aws, shards=shards)
    aws("kinesis").get_waiter("stream_exists").wait(
        StreamName=plan["stream"]["name"], WaiterConfig={"Delay": 0.2, "MaxAttempts": 50}
    )
    return plan


def use_endpoint(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """Point in-process handlers (sinks, window state) at ``endpoint``: its credentials in
    the environment, and no shared client made for an endpoint before."""
    for name, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(name, value)
    reset_clients()
