"""The JMESPath compliance suite (jmespath.py's ``tests/compliance`` and ``tests/legacy``),
run through every path the runtime can take an expression on.

shardline claims ``compile_expr(src)(doc) == jmespath.search(src, doc)``; the suite is the
outside word on what ``jmespath.search`` must return. Each case runs:

* ``closure``: :func:`processors.expr.compile_expr`, the value;
* ``predicate``: :func:`processors.expr.compile_predicate`, the value's JMESPath truthiness;
* ``codegen``: :func:`processors.codegen_expr.expr_source`, the value as generated Python
  (``None`` means "not written", the closure is kept, and is then what runs);
* ``fused``: a ``filter: {expr: ...}`` step in a :class:`processors.chain.Chain` built through
  the registry as the runtime builds it (fused into generated code where codegen writes it);
  the record is kept exactly when the value is truthy, and an error case fails the record;
* ``validate``: what ``shardline validate`` says
  (:func:`deploy.pipeline.runtime_checks.expr_problem`): no problem for a case with a result,
  a problem for a syntax error, an unknown function or a wrong argument count (those would
  fail every record).

An ``error`` case passes when compiling raises :class:`processors.expr.ExprError` or
evaluating raises jmespath's own error class (for ``invalid-value``, a zero slice step, the
``ValueError`` that ``jmespath.search`` raises too); the six ``bench`` cases have no result and are
compared with ``jmespath.search``.
"""

from __future__ import annotations

import json
from typing import Any

import jmespath
import orjson
import pytest
from jmespath.exceptions import JMESPathError

from deploy.pipeline.runtime_checks import expr_problem
from processors.chain import Chain
from processors.codegen import Namespace
from processors.codegen_expr import expr_source
from processors.expr import ExprError, compile_expr, compile_predicate, is_truthy
from processors.registry import build_processor
from stream.records import Record
from tests.conformance.conftest import data_dir, require

PATHS = ("closure", "predicate", "codegen", "fused", "validate")
#: Errors that are found before any record is seen (validate rejects them).
STATIC_ERRORS = frozenset({"syntax", "unknown-function", "invalid-arity", "invalid-value"})


def _cases() -> list[Any]:
    base = data_dir()
    folder = None if base is None else base / "jmespath"
    if folder is None or not folder.is_dir():
        return [pytest.param(None, id="no-data")]
    files = [*sorted(folder.glob("*.json")), folder / "legacy" / "literal.json"]
    out = []
    for file in files:
        stem = file.relative_to(folder).with_suffix("").as_posix()
        for g, group in enumerate(json.loads(file.read_text(encoding="utf-8"))):
            for c, case in enumerate(group["cases"]):
                out.append(pytest.param((group["given"], case), id=f"{stem}-{g}-{c}"))
    return out


CASES = _cases()


def same(actual: Any, expected: Any) -> bool:
    """JSON equality that keeps ``true`` apart from ``1`` (``==`` would not)."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(actual) is type(expected) and actual == expected
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(same(a, e) for a, e in zip(actual, expected, strict=True))
        )
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and actual.keys() == expected.keys()
            and all(same(actual[k], expected[k]) for k in expected)
        )
    return bool(actual == expected) and (actual is None) == (expected is None)


def evaluate(path: str, expression: str, given: Any) -> Any:
    """The case's outcome on one path: the value (or truthiness), or the raised error."""
    if path == "closure":
        return compile_expr(expression)(given)
    if path == "predicate":
        return compile_predicate(expression)(given)
    if path == "codegen":
        ns = Namespace()
        source = expr_source(expression, "doc", ns)
        fn = compile_expr(expression) if source is None else ns.function("doc", source)
        return fn(given)
    step = build_processor(0, {"filter": {"expr": expression}})
    record = Record(orjson.dumps(given), "k", "1")
    result = Chain([step]).run([record])
    if result.failures:
        raise result.failures[0].error
    return bool(result.records)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", CASES)
def test_compliance(case: Any, path: str) -> None:
    """Every case gives the suite's result (or error) on every path."""
    require("jmespath")
    given, spec = case
    expression = spec["expression"]
    if path == "validate":
        problem = expr_problem(expression)
        if spec.get("error") in STATIC_ERRORS:
            assert problem is not None, f"validate accepts {expression!r}"
        elif "error" not in spec:
            assert problem is None, problem
        return
    if "error" in spec:
        # a zero slice step: jmespath.search raises Python's ValueError, and so do we
        errors = (
            (ExprError, JMESPathError, ValueError)
            if spec["error"] == "invalid-value"
            else (ExprError, JMESPathError)
        )
        with pytest.raises(errors):
            evaluate(path, expression, given)
        return
    expected = spec["result"] if "result" in spec else jmespath.search(expression, given)
    if path in ("predicate", "fused"):
        expected = is_truthy(expected)
    actual = evaluate(path, expression, given)
    assert same(actual, expected), f"{expression!r} on {path}: {actual!r} != {expected!r}"
