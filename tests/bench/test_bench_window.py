"""Smoke test of ``python -m bench window``: it runs, prints the ratio with its spread and
one state write per distinct (key, window); ``--only`` runs one loop silently."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from bench import window

if TYPE_CHECKING:
    import pytest


def test_prints_the_ratio_with_its_spread_and_one_write_per_window(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert window.main(["--records", "3000", "--keys", "20", "--repeats", "3"]) == 0
    out = capsys.readouterr().out
    spread = re.search(r"ratio\s+([\d.]+)x median .*\(min ([\d.]+), max ([\d.]+)\)", out)
    assert spread, out
    low, mid, high = float(spread.group(2)), float(spread.group(1)), float(spread.group(3))
    assert 0 < low <= mid <= high
    writes = re.search(r"state writes per batch: (\d+) for (\d+) distinct", out)
    assert writes, out
    assert writes.group(1) == writes.group(2)


def test_only_runs_one_loop_and_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert window.main(["--records", "500", "--repeats", "1", "--only", "window"]) == 0
    assert capsys.readouterr().out == ""
