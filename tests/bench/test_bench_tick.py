"""Smoke test of ``python -m bench tick`` on a moto server: the three ticks print what they
did (the due shards closed, then emitted again unacked, then nothing) and their calls."""

from __future__ import annotations

import re

import pytest

from bench import tick


@pytest.mark.parametrize("lanes", [False, True], ids=["one-lane", "lanes"])
def test_the_three_ticks_close_re_emit_then_find_nothing(endpoint: str, lanes: bool) -> None:
    lines = tick.measure(endpoint, 3, 2, 2, lanes=lanes)
    assert lines[0].startswith("3 shards listed, 2 due, 2 windows each")
    rows = [re.search(r"(\d+) reads\s+(\d+) writes\s+(\d+) emissions \((\d+) results\)", line)
            for line in lines[1:]]  # fmt: skip
    got = [tuple(int(g) for g in row.groups()) if row else None for row in rows]
    assert got[1:] == [(4, 0, 2, 4), (2, 0, 0, 0)]  # list + items, a Query per pending one
    assert got[0] is not None
    # list + items + each due shard's state: with one lane two Query calls at once (below
    # the windows, its listed start: processors/window_starts.py), in lanes mode one
    assert got[0][:1] + got[0][2:] == ((4 if lanes else 6), 2, 4)
    assert got[0][1] >= 4  # each due shard: its entry's part and its commit at least
