"""``shardline status --json`` against a moto server."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from deploy.cli import main

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration


def test_status_json_says_never_run(
    moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    path = tmp_path / "p.yaml"
    path.write_text(
        "name: json-status\nstream: {name: json-status-events}\n"
        "sinks: {out: {type: stdout}}\nfunctions: {f: {processors: [], route: [out]}}\n"
    )

    result = CliRunner().invoke(
        main, ["status", str(path), "--endpoint-url", moto_endpoint, "--json"]
    )

    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["function"] == "f"
    assert row["checkpoint"] == "never run (no lease table)"
