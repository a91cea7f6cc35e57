"""Smoke test of ``python -m bench producer``: all four ways run and every record lands."""

from __future__ import annotations

import json

import pytest

from bench import producer

pytestmark = pytest.mark.integration


def test_a_tiny_run_prints_the_four_ways_and_both_verdicts(capsys: pytest.CaptureFixture[str]):
    """Each way read its records back (the bench stops otherwise); aggregation packs them."""
    assert producer.main(["--records", "120", "--repeat", "1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert set(rows) == {"naive", "batched", "concurrent", "aggregated"}
    assert rows["naive"]["per_kinesis_record"] == 1.0
    assert rows["aggregated"]["per_kinesis_record"] > 10
