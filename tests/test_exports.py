"""Every runtime module's ``__all__`` is honest: sorted, and each name exists.

A package's ``__init__`` re-exports only public names with an explicit ``__all__`` (STYLE.md),
so a name that is renamed or removed must fail here, not in a user's import.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

PACKAGES = ["stream", "processors", "sinks"]


def _isort_key(name: str) -> tuple[int, str]:
    """The order ruff's RUF022 keeps: CONSTANTS, then Classes, then functions."""
    if name.isupper():
        return 0, name
    return (1 if name[0].isupper() else 2), name


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        names.append(package)
        pkg = importlib.import_module(package)
        names += [m.name for m in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}.")]
    return [n for n in names if n != "stream.lambda_handler"]


@pytest.mark.parametrize("name", _modules())
def test_all_is_sorted_and_every_name_exists(name):
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert list(exported) == sorted(exported, key=_isort_key), f"{name}.__all__ is not sorted"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names missing attributes: {missing}"


def test_lambda_handler_exports_the_handler():
    module = importlib.import_module("stream.lambda_handler")
    assert module.__all__ == ["handler", "runner"]
