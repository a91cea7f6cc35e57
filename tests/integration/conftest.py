"""Real local servers for integration tests, on 127.0.0.1, once per session: a moto server
(AWS APIs) and an osmem-server (the OpenSearch API).

boto3 and opensearch-py talk to them over HTTP like to AWS; nothing is patched. Each test
makes its own resources (unique names), so tests stay independent while sharing servers.

``window_table`` is the one window state table (``state: dynamodb``) a module's window tests
share; each test keeps to its own partition prefix in it.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer  # noqa: PLC0415

    from deploy.local.motofix import patch_moto  # noqa: PLC0415

    patch_moto()  # the local stack's server, as LocalAWS starts it
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def aws(moto_endpoint: str) -> Any:
    """A factory of boto3 clients bound to the moto server."""
    import boto3  # noqa: PLC0415

    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )

    def client(service: str) -> Any:
        return session.client(service, endpoint_url=moto_endpoint)

    return client


@pytest.fixture(scope="session")
def opensearch_endpoint() -> Iterator[str]:
    """The URL of an osmem-server (in-memory OpenSearch API) on a free loopback port."""
    from osmem_server import OsmemServer  # noqa: PLC0415

    server = OsmemServer.start(addr="127.0.0.1:0", japanese=False)
    yield server.url
    server.close()


@pytest.fixture(scope="session")
def opensearch(opensearch_endpoint: str) -> Any:
    """An opensearch-py client bound to the osmem-server."""
    from opensearchpy import OpenSearch  # noqa: PLC0415

    return OpenSearch(hosts=[opensearch_endpoint], timeout=30)


@pytest.fixture
def unique() -> str:
    """A short unique suffix for resource names."""
    return uuid.uuid4().hex[:10]


def provision_window_table(aws: Callable[[str], Any]) -> str:
    """A new window state table, made by the local stack's provisioning (as ``shardline
    run`` makes it) for a plan of one function ``f`` with one ``state: dynamodb`` window
    step: its name. For a test that needs a table of its own (one it fills, say); the
    others share :func:`window_table`."""
    from deploy.local.servers import provision  # noqa: PLC0415
    from deploy.names import window_table_name  # noqa: PLC0415

    plan = {
        "name": f"w{uuid.uuid4().hex[:8]}",
        "stream": {"name": f"s{uuid.uuid4().hex[:8]}"},
        "sinks": {},
        "functions": {"f": {"processors": [{"window": {"state": "dynamodb"}}]}},
    }
    provision(plan, aws)
    return window_table_name(plan, "f")


@pytest.fixture(scope="module")
def window_table(aws: Callable[[str], Any]) -> str:
    """One window state table for the module; each test uses its own partition prefix.
    Items expire by their ``expires`` attribute (DynamoDB TTL), as a deployed table's do."""
    name = provision_window_table(aws)
    ttl = aws("dynamodb").describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires"
    return name
