"""`validate` refuses a plugin processor whose code never returns a record.

``None`` from a processor means "dropped"; a ``__call__`` that edits the record in place and
forgets ``return record`` drops every record, silently: the function reports success, the
metrics count the records as filtered, and the sinks get nothing.
"""

from __future__ import annotations

from typing import Any

import pytest

from deploy.pipeline.config import parse_config
from deploy.pipeline.problems import ConfigError


class Forgets:
    """Masks in place and forgets to return the record."""

    def __call__(self, record: Any) -> None:
        doc = record.as_dict()
        if "email" in doc:
            doc["email"] = "***"


def forgets(record: Any) -> None:
    record.as_dict()["seen"] = True


class Returns:
    """Every way of returning a record now and then, which must not be refused."""

    def __init__(self, how: str = "branch") -> None:
        self.how = how

    def __call__(self, record: Any) -> Any:
        if self.how == "branch":
            if record.get("bot"):
                return None
            return record
        if self.how == "or":
            return (record.get("x") and record) or None
        return record if record.get("keep") else None


class Generates:
    """A generator (a contract error each record reports), not a silent drop."""

    def __call__(self, record: Any) -> Any:
        yield record


def _pipeline(processor: str) -> str:
    return (
        "name: p\nstream: {name: s}\nsinks: {out: {type: stdout}}\nfunctions:\n"
        f"  main:\n    processors:\n      - {processor}\n    route: [out]\n"
    )


@pytest.mark.parametrize("target", ["Forgets", "forgets"])
def test_a_processor_that_never_returns_a_record_is_an_error_at_its_line(target: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_pipeline(f'use: "{__name__}:{target}"'), source="p.yaml", env={})

    (problem,) = caught.value.errors
    assert (problem.line, problem.path) == (7, "functions.main.processors[0]")
    assert "drops every record: its code never returns one" in problem.message
    assert "Return the record" in problem.message


@pytest.mark.parametrize("how", ["branch", "or", "conditional"])
def test_a_processor_that_returns_a_record_on_some_path_is_valid(how: str) -> None:
    text = _pipeline(f'use: "{__name__}:Returns"\n        with: {{how: {how}}}')
    assert parse_config(text, env={}).normalized["functions"]["main"]["processors"]


def test_a_generator_is_not_taken_for_a_silent_drop() -> None:
    assert parse_config(_pipeline(f'use: "{__name__}:Generates"'), env={})
