"""Smoke test of ``python -m bench session``: it runs and both implementations agree."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from bench import session

if TYPE_CHECKING:
    import pytest


def test_prints_both_rows_the_ratio_and_the_writes(capsys: pytest.CaptureFixture[str]) -> None:
    assert session.main(["--records", "3000", "--keys", "20", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  session\s+[\d.]+ µs/record", out, re.M), out
    assert re.search(r"^  dict\s+[\d.]+ µs/record", out, re.M), out
    closed = int(re.search(r"(\d+) sessions closed", out).group(1))  # type: ignore[union-attr]
    assert closed > 0
    assert f"one per session it changed: {closed} closed" in out


def test_the_step_and_the_hand_written_dict_close_the_same_sessions() -> None:
    records = session._batch(5000, 50)
    assert session._session(records) == session._dict(records) > 0
