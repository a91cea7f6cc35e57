"""Fixtures of the bench tests that need a DynamoDB: one moto server on 127.0.0.1 for the
module, with the local stack's patches (:mod:`deploy.local.motofix`: without them moto
lets two conditional writes served at once both pass, and lanes at once lose records)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """The URL of a patched moto server on a free loopback port."""
    from moto.server import ThreadedMotoServer  # noqa: PLC0415

    from deploy.local.motofix import patch_moto  # noqa: PLC0415

    patch_moto()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
