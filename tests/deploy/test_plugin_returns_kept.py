"""validate's never-returns check (deploy.pipeline.runtime_checks.drops_every_record) accepts
the plugins that drop nothing (found in review: one that always raises was refused)."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from deploy.pipeline.config import parse_config
from stream.exceptions import RetryableError


class Quarantined(RetryableError):
    pass


def quarantine(record: Any) -> Any:
    """Sends every record to on-failure (a stage that holds the stream during an incident)."""
    raise ValueError(f"quarantined: {record.sequence_number}")


class Hold:
    """Fails every record retryably: the batch is delivered again later (a pause switch)."""

    def __call__(self, record: Any) -> Any:
        raise Quarantined("paused")


def _keep(record: Any) -> Any:
    return record


def _traced(fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*a: Any) -> Any:
        return fn(*a)

    return wrapper


class Delegates:
    def __call__(self, record: Any) -> Any:
        return self._impl(record)

    def _impl(self, record: Any) -> Any:
        return record


class Decorated:
    @_traced
    def __call__(self, record: Any) -> Any:
        return record


lam = lambda record: record  # noqa: E731
part = functools.partial(_keep)


class WithFinally:
    def __call__(self, record: Any) -> Any:
        try:
            record.as_dict()["x"] = 1
        finally:
            return record  # noqa: B012


def _pipeline(processor: str) -> str:
    return (
        "name: p\nstream: {name: s}\nsinks: {out: {type: stdout}}\nfunctions:\n"
        f"  main:\n    processors:\n      - {processor}\n    route: [out]\n"
    )


@pytest.mark.parametrize(
    "target", ["quarantine", "Hold", "Delegates", "Decorated", "lam", "part", "WithFinally"]
)
def test_a_processor_that_drops_nothing_is_valid(target: str) -> None:
    assert parse_config(_pipeline(f'use: "{__name__}:{target}"'), env={})
