"""Smoke test of ``python -m bench sinks``: every sink runs both ways and all records land."""

from __future__ import annotations

import pytest

from bench import sinks

pytestmark = pytest.mark.integration


def test_every_sink_reports_both_rates_on_a_tiny_run(capsys: pytest.CaptureFixture[str]):
    """A tiny run prints one row per sink; each run has checked that every record landed."""
    assert sinks.main(["--records", "20", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    for name in ("dynamodb append", "opensearch", "s3", "sqs (dead letters)", "kinesis"):
        row = next(line for line in out.splitlines() if line.startswith(name + " "))
        bulk, naive, ratio = row[len(name) :].split()[:3]
        assert float(bulk) > 0
        assert float(naive) > 0
        assert ratio.endswith("x")
