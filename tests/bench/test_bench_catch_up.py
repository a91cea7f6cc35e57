"""Smoke test of ``python -m bench.catch_up`` on a moto server of its own: two processes
alternating in lanes mode catch up from each other's logs, a ``#log#`` range read per
batch, never the partition."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from bench import catch_up

if TYPE_CHECKING:
    import pytest


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
