"""``python -m bench flush`` runs and every window comes out; no timing checked."""

from __future__ import annotations

import json

import pytest

from bench import flush


@pytest.mark.integration
def test_a_small_run_closes_every_window(
    endpoint: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import stream.lambda_handler as lh  # noqa: PLC0415

    monkeypatch.setattr(lh, "_runner", None)
    assert flush.main(["--shards", "2", "--idle", "2", "--endpoint-url", endpoint, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["results"]
    assert row["rows"] == row["windows"] == 4
    assert row["closed_by_flush"] >= 1
    assert lh._runner is not None
    monkeypatch.setattr(lh, "_runner", None)
