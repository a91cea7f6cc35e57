"""Real local servers for integration tests, on 127.0.0.1, once per session: a moto server
(AWS APIs) and an osmem-server (the OpenSearch API).

boto3 and opensearch-py talk to them over HTTP like to AWS; nothing is patched. Each test
makes its own resources (unique names), so tests stay independent while sharing servers.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator


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
