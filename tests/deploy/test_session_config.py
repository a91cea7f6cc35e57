"""Session windows (``window`` with ``gap_s``) in the pipeline file: the example validates
against both descriptions (the validator and the JSON Schema), which agree on what they
refuse; its ``shardline test`` cases pass; the plan builds a session window with its table.
The refusals with file:line are in ``tests/deploy/broken/window_settings.yaml``."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.pipeline.cases import load_suite, run_suite
from deploy.pipeline.config import compile_plan, parse_config
from processors.registry import build_processor
from processors.session import SessionWindow
from processors.window_store import DynamoDBStore
from tests.deploy.test_jsonschema import VALIDATOR, _validator_ok

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sessions"
TEXT = (EXAMPLE / "pipeline.yaml").read_text(encoding="utf-8")


def test_the_readme_shows_the_shipped_example() -> None:
    readme = (EXAMPLE.parents[1] / "README.md").read_text(encoding="utf-8")
    body = TEXT.split("\n", 3)[3]  # after the three comment lines
    assert body in readme


def test_the_example_validates_and_the_schema_agrees() -> None:
    doc = yaml.safe_load(TEXT)
    assert _validator_ok(doc)
    assert VALIDATOR.is_valid(doc)


@pytest.mark.parametrize(
    ("change", "valid"),
    [
        ({"allowed_lateness_s": 1800}, True),
        ({"state": "memory"}, True),
        ({"size_s": 3600}, False),
        ({"slide_s": 600}, False),
        ({"gap_s": 0}, False),
        ({"gap_s": None}, False),
    ],
)
def test_the_schema_and_the_validator_agree_on_a_session_window(
    change: dict[str, Any], valid: bool
) -> None:
    doc = yaml.safe_load(TEXT)
    window = doc["functions"]["visits-per-user"]["processors"][1]["window"]
    for key, value in change.items():
        if value is None:
            del window[key]
        else:
            window[key] = value
    assert VALIDATOR.is_valid(copy.deepcopy(doc)) is valid
    assert _validator_ok(doc) is valid


def test_lateness_beyond_the_gap_is_refused_by_the_validator() -> None:
    """The one rule JSON Schema cannot state (it compares two keys)."""
    doc = yaml.safe_load(TEXT)
    doc["functions"]["visits-per-user"]["processors"][1]["window"]["allowed_lateness_s"] = 1801
    assert not _validator_ok(doc)


def test_the_plan_builds_a_session_window_on_the_function_s_table() -> None:
    plan = compile_plan(parse_config(TEXT, source="pipeline.yaml", env={}))
    entry = plan["functions"]["visits-per-user"]["processors"][1]
    window = entry["window"]
    assert (window["gap_s"], window["state"], window["function"]) == (
        1800,
        "dynamodb",
        "visits-per-user",
    )
    assert window["table"] == "site-visits-per-user-windows"
    assert "size_s" not in window
    step = build_processor(1, entry)
    assert isinstance(step.processor, SessionWindow)
    store = step.processor.store
    assert isinstance(store, DynamoDBStore)
    assert store.end_of is not None
    assert store.end_of(("u1", 100.0), [1, 130.5]) == 1930.5


def test_the_example_cases_pass() -> None:
    results = run_suite(load_suite(EXAMPLE / "pipeline.test.yaml"))
    assert results
    assert all(result.passed for result in results), [r for r in results if not r.passed]
