"""Smoke test of ``python -m bench window``: it runs, prints the ratio with its spread and
one state write per distinct (key, window); ``--only`` runs one loop silently; ``--lanes``
prints the DynamoDB cost per batch with lanes against one lane (on a moto server)."""

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


def test_lanes_prints_writes_reads_and_lost_conditions_per_batch_against_one_lane(
    endpoint: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--lanes 2`` on a moto server of its own: every setup applies the same records
    (same results, none late); lanes taking turns lose no condition and write per batch,
    beyond one write per (key, window) they add to, within 3 of one lane's (design §8 S7),
    whose deletes of closed windows' items count a write each (as DynamoDB bills them)."""
    for name, value in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    argv = ["--records", "2000", "--keys", "20", "--repeats", "1", "--endpoint-url", endpoint,
            "--batch", "100", "--lanes", "2"]  # fmt: skip
    assert window.main(argv) == 0
    out = capsys.readouterr().out
    row = re.compile(
        r"^ {4}(?P<name>[^\n]+?) +(?P<batches>\d+) batches: +(?P<writes>[\d.]+) writes for "
        r"+(?P<pairs>[\d.]+) \(key, window\) = +(?P<over>[-+][\d.]+), +(?P<buried>[\d.]+) "
        r"buried, +(?P<reads>[\d.]+) reads, "
        r"(?P<lost>[\d.]+) lost conditions; (?P<results>\d+) results, (?P<late>\d+) late",
        re.MULTILINE,
    )
    rows = {m["name"]: m for m in row.finditer(out)}
    assert list(rows) == ["1 lane, one-lane protocol", "1 lane, lanes mode", "2 lanes, in turn",
                          "2 lanes, at once"], out  # fmt: skip
    assert {m["results"] for m in rows.values()} == {rows["1 lane, lanes mode"]["results"]}
    assert int(rows["1 lane, lanes mode"]["results"]) > 0
    assert {m["late"] for m in rows.values()} == {"0"}
    turns = rows["2 lanes, in turn"]
    assert float(turns["lost"]) == 0
    one = rows["1 lane, one-lane protocol"]
    assert float(one["buried"]) > 0  # one lane buries its closed windows' items
    assert float(turns["buried"]) == 0  # lanes mode writes them closed
    assert float(turns["over"]) - (float(one["over"]) + float(one["buried"])) <= 3
    assert float(turns["reads"]) > 1, "a lane catches up on the other's commits"
    assert "vs 1 lane, one-lane protocol" in out
