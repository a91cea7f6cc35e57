"""Where the outside conformance suites live, and the skip when they are absent.

The data is third-party (see its SOURCES.md) and is never copied into this repository: the
tests read it from ``../shared/conformance-data`` next to the repository root, or from the
folder named by ``SHARDLINE_CONFORMANCE_DATA``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ENV = "SHARDLINE_CONFORMANCE_DATA"
ROOT = Path(__file__).resolve().parents[2]


def data_dir() -> Path | None:
    """The conformance data folder, or None when it is not there."""
    configured = os.environ.get(ENV)
    path = Path(configured) if configured else ROOT.parent / "shared" / "conformance-data"
    return path if path.is_dir() else None


def require(*parts: str) -> Path:
    """The path under the data folder; skips the test (with the reason) when absent."""
    base = data_dir()
    if base is None or not base.joinpath(*parts).exists():
        where = os.environ.get(ENV) or str(ROOT.parent / "shared" / "conformance-data")
        pytest.skip(f"conformance data not found at {where}/{'/'.join(parts)} (set {ENV})")
    return base.joinpath(*parts)
