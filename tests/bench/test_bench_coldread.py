"""Smoke test of ``python -m bench coldread`` on its own local AWS: a cold start that keeps
to the listed starts reads fewer window items than one that reads the whole partition."""

from __future__ import annotations

from bench import coldread


def test_the_listed_read_takes_the_open_windows_and_the_whole_read_every_closed_one() -> None:
    report = coldread.run(batches=4, records=200, repeat=1)
    listed, whole = report["modes"]["listed"], report["modes"]["whole"]
    assert 0 < listed["window_items_read"] < whole["window_items_read"]
    assert whole["window_items_read"] >= 3 * listed["window_items_read"]  # 4 batches closed
    assert listed["cold_ms"] > 0
