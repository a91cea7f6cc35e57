"""Smoke test of ``python -m bench.catch_up`` on a moto server of its own: two processes
alternating in lanes mode catch up from each other's logs, a ``#log#`` range read per
batch, never the partition."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from bench import catch_up

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer  # noqa: PLC0415

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_each_batch_reads_the_other_s_log_not_the_partition(
    endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert catch_up.main(["--endpoint-url", endpoint, "--batches", "8", "--records", "5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("6 batches of 5 records"), out
    log_reads = re.search(r"Query #log#: ([\d.]+) calls, ([\d.]+) items", out)
    assert log_reads, out
    assert float(log_reads.group(1)) == 1.0
    assert "Query partition" not in out
