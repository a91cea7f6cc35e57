"""EventBridge event patterns validated against AWS (LocalStack's AWS-validated templates and
its other AWS-validated cases), run through every path the runtime can take a pattern on.

A pattern applies to the whole event document. A name ending ``_EXC`` must be rejected (AWS's
TestEventPattern raised InvalidEventPatternException), ``_NEG`` must not match, any other must
match; the extra cases say so explicitly. Each case runs:

* ``closure``: :func:`processors.match.compile_pattern`;
* ``codegen``: :func:`processors.codegen.pattern_source` (``None``: the closure is kept);
* ``fused``: a ``filter: {match: ...}`` step in a :class:`processors.chain.Chain` built
  through the registry, as the runtime builds it;
* ``validate``: what ``shardline validate`` reports
  (:func:`deploy.pipeline.runtime_checks.pattern_problems`).
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from deploy.pipeline.runtime_checks import pattern_problems
from processors.chain import Chain
from processors.codegen import Namespace, pattern_source
from processors.match import compile_pattern
from processors.registry import build_processor
from stream.records import Record
from tests.conformance.conftest import data_dir, require

PATHS = ("closure", "codegen", "fused", "validate")
FOLDER = "event-patterns"


def _expected(name: str) -> str:
    if name.endswith("_EXC"):
        return "exception"
    return "no-match" if name.endswith("_NEG") else "match"


def _cases() -> list[Any]:
    base = data_dir()
    folder = None if base is None else base / FOLDER
    if folder is None or not folder.is_dir():
        return [pytest.param(None, id="no-data")]
    out = []
    templates = json.loads((folder / "localstack_event_pattern_templates.json").read_text())
    for t in templates["templates"]:
        case = (t["EventPattern"], t["Event"], _expected(t["name"]))
        out.append(pytest.param(case, id=t["name"]))
    extra = json.loads((folder / "localstack_extra_cases.json").read_text())
    for c in extra["cases"]:
        pattern = (
            json.loads(c["EventPatternText"]) if "EventPatternText" in c else c["EventPattern"]
        )
        if "EventText" in c:
            event = json.loads(c["EventText"])
        elif "EventFile" in c:
            event = json.loads((folder / c["EventFile"]).read_text())
        else:
            event = c["Event"]
        out.append(pytest.param((pattern, event, c["expected"]), id=f"extra-{c['name']}"))
    return out


CASES = _cases()


def matches(path: str, pattern: Any, event: Any) -> bool:
    if path == "closure":
        return compile_pattern(pattern)(event)
    if path == "codegen":
        ns = Namespace()
        source = pattern_source(pattern, "doc", ns)
        fn = compile_pattern(pattern) if source is None else ns.function("doc", source)
        return bool(fn(event))
    step = build_processor(0, {"filter": {"match": pattern}})
    result = Chain([step]).run([Record(orjson.dumps(event), "k", "1")])
    assert not result.failures, result.failures
    return bool(result.records)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", CASES)
def test_event_pattern(case: Any, path: str) -> None:
    """Each AWS-validated outcome holds on every path."""
    require(FOLDER)
    pattern, event, expected = case
    if path == "validate":
        problems = pattern_problems(pattern)
        assert bool(problems) is (expected == "exception"), problems
        return
    if expected == "exception":
        with pytest.raises(ValueError):  # noqa: PT011  # PatternError, or the step's own
            matches(path, pattern, event)
        return
    assert matches(path, pattern, event) is (expected == "match")
