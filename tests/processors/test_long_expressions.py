"""Long JMESPath expressions: every path builds and agrees, however long the expression.

The fused chain once wrote each step of ``a.b.c``, each ``|`` and each ``||``/``&&`` nested in
the previous one, so that CPython's limit of 200 nested parentheses was passed at 49 fields, 49
pipes, 40 ``||`` over bare fields or about 194 comparisons: ``Chain(...)`` raised SyntaxError at
Lambda init although ``shardline validate`` had said ok. The closures also recursed once per
operator. Now the generated code is flat, a condition that still does not compile keeps its
closure, and validation runs what the runtime builds. These tests hold that: what validates
builds, fused where codegen writes it, and answers as ``jmespath.search`` (where jmespath itself
does not run out of recursion) and as the unfused chain.
"""

from __future__ import annotations

from typing import Any

import jmespath
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from deploy.pipeline.runtime_checks import expr_problem
from processors import codegen
from processors.chain import Chain
from processors.expr import ExprError, compile_expr, compile_predicate, is_truthy
from processors.fused import FusedRun
from processors.registry import build_processor
from stream.records import Record

SIZES = (2, 40, 41, 49, 50, 194, 200, 500)
SHAPES = {
    "field": lambda n: ".".join(f"a{i}" for i in range(n)),
    "pipe": lambda n: " | ".join(f"a{i}" for i in range(n)),
    "or": lambda n: " || ".join(f"a{i}" for i in range(n)),
    "and": lambda n: " && ".join(f"a{i}" for i in range(n)),
    "or-comparisons": lambda n: " || ".join(f"a{i} == `{i}`" for i in range(n)),
    "and-comparisons": lambda n: " && ".join(f"a{i} >= `0`" for i in range(n)),
    "index": lambda n: "a0" + "[0]" * n,
    "mixed": lambda n: " || ".join(f"(a{i}.b.c == 'x' && !(a{i}.d))" for i in range(n)),
}
VALUES = (None, 0, 1, "x", "", [], {}, True, False)


def documents(n: int) -> list[Any]:
    """Documents on which each shape gives both truthy and falsy answers (nested at most 200
    deep: orjson, like the record's decoder, refuses deeper documents)."""
    depth = min(n, 200)
    nested: Any = "end"
    for i in reversed(range(depth)):
        nested = {f"a{i}": nested}
    deep_list: Any = "end"
    for _ in range(depth):
        deep_list = [deep_list]
    docs: list[Any] = [{}, nested, {"a0": deep_list}, [1], "text", None]
    for value in VALUES:
        docs.append({f"a{i}": value for i in range(n)})
        docs.append({f"a{n - 1}": value, "a0": 0})
        docs.append({f"a{i}": {"b": {"c": "x"}, "d": value} for i in range(n)})
    docs.append({f"a{i}": i for i in range(n)})
    return docs


def run_chain(expression: str, docs: list[Any], *, fuse: bool) -> tuple[Chain, list[Any]]:
    chain = Chain([build_processor(0, {"filter": {"expr": expression}})], fuse=fuse)
    records = [Record(orjson.dumps(doc), "k", str(i), index=i) for i, doc in enumerate(docs)]
    result = chain.run(records)
    failed = {f.record.index: type(f.error).__name__ for f in result.failures}
    kept = {r.index for r in result.records}
    return chain, [failed.get(i, i in kept) for i in range(len(docs))]


def reference(expression: str, doc: Any) -> Any:
    """jmespath.search's truthiness or error's name, None where it recurses too deep."""
    try:
        return is_truthy(jmespath.search(expression, doc))
    except RecursionError:
        return None
    except Exception as exc:  # e.g. TypeError: ordering a string against a number
        return type(exc).__name__


def truth(fn: Any, doc: Any) -> Any:
    try:
        return is_truthy(fn(doc))
    except Exception as exc:
        return type(exc).__name__


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_long_expression_validates_builds_fused_and_agrees(shape: str, size: int) -> None:
    """Validation passes, the chain builds and fuses, and every path gives the same answers."""
    expression = SHAPES[shape](size)
    docs = documents(size)
    assert expr_problem(expression) is None
    chain, fused = run_chain(expression, docs, fuse=True)
    assert any(isinstance(segment, FusedRun) for segment in chain._segments), "not fused"
    _, plain = run_chain(expression, docs, fuse=False)
    assert fused == plain
    predicate, value = compile_predicate(expression), compile_expr(expression)
    for doc, kept in zip(docs, fused, strict=True):
        assert truth(predicate, doc) == kept
        assert truth(value, doc) == kept
        expected = reference(expression, doc)
        assert expected is None or expected == kept, doc
    if size <= 200:  # deeper documents cannot be records
        assert {True, False} <= set(fused), "the documents should give both answers"


@pytest.mark.parametrize("size", [50, 200, 300])
def test_a_condition_too_deep_to_generate_keeps_its_closure_in_the_chain(size: int) -> None:
    """``!!!…a`` nests in any form: the step runs its closure and the chain still builds."""
    expression = "!" * size + "a"
    assert expr_problem(expression) is None
    docs = [{"a": v} for v in VALUES]
    _, fused = run_chain(expression, docs, fuse=True)
    _, plain = run_chain(expression, docs, fuse=False)
    assert fused == plain == [is_truthy(jmespath.search(expression, d)) for d in docs]


class TestCompiles:
    def test_a_short_shallow_condition_is_taken_without_compiling_it(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Only a long or bracket-heavy source is compiled to check it (a cold start cost)."""
        calls: list[str] = []

        def spy(text: str, filename: str, mode: str) -> Any:
            calls.append(text)
            return compile(text, filename, mode)

        monkeypatch.setattr(codegen, "compile", spy, raising=False)
        assert codegen.compiles("d", "(d.get('a', _MISSING) == (1)) if d else False")
        assert calls == []
        assert not codegen.compiles("d", "(" * 195 + "d" + ")" * 195)
        assert codegen.compiles("d", " or ".join(f"d{i}" for i in range(200)))
        assert len(calls) == 2


@pytest.mark.parametrize("expression", ["!" * 1000 + "a", "(" * 1000 + "a" + ")" * 1000])
def test_what_jmespath_cannot_parse_is_an_expr_error_at_validation_and_at_start(
    expression: str,
) -> None:
    """Validation says so, and building the step raises the same ExprError (no RecursionError)."""
    assert "nested too deeply" in (expr_problem(expression) or "")
    with pytest.raises(ExprError, match="nested too deeply"):
        build_processor(0, {"filter": {"expr": expression}})


operands = st.sampled_from(["a", "b", "c.d", "a[0]", "`0`", "''", "b == `1`", "!c", "@"])
operators = st.sampled_from([" || ", " && ", " | ", "."])


@st.composite
def long_expressions(draw: st.DrawFn) -> str:
    """Chains of up to 300 operands joined by mixed operators (a '.' only before a field)."""
    parts = [draw(operands)]
    for _ in range(draw(st.integers(1, 300))):
        op = draw(operators)
        operand = draw(st.sampled_from(["a", "b", "d"]) if op == "." else operands)
        if op == "." and not parts[-1].replace(".", "").isalnum():
            op = " | "
        parts += [op, operand]
    return "".join(parts)


long_docs = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "a": st.sampled_from([0, [1], {"a": 1}, "", None]),
            "b": st.sampled_from([1, 0, True, {"b": 1}]),
            "c": st.sampled_from([{"d": 1}, {"d": ""}, False]),
            "d": st.sampled_from([1, None, {"d": 0}]),
        },
    ),
    min_size=1,
    max_size=6,
)


@given(expression=long_expressions(), docs=long_docs)
def test_random_long_expressions_agree_on_every_path(expression: str, docs: list[Any]) -> None:
    """Whatever validates builds, and fused, unfused and jmespath.search agree."""
    if expr_problem(expression) is not None:
        with pytest.raises(ExprError):
            build_processor(0, {"filter": {"expr": expression}})
        return
    _, fused = run_chain(expression, docs, fuse=True)
    _, plain = run_chain(expression, docs, fuse=False)
    assert fused == plain
    for doc, kept in zip(docs, fused, strict=True):
        expected = reference(expression, doc)
        assert expected is None or expected == kept


@pytest.mark.parametrize("expression", ["a[0:10]", "a[::-1].b", "a[1:] | length(@)"])
def test_validation_accepts_slices(expression: str) -> None:
    """A slice's children are ints or None: validation once crashed walking them."""
    assert expr_problem(expression) is None


def test_validation_rejects_a_zero_slice_step_that_would_fail_every_record() -> None:
    """jmespath raises ValueError for ``a[::0]`` on each list: say so before deploying."""
    assert "slice step cannot be zero" in (expr_problem("a[::0]") or "")


@pytest.mark.parametrize("shape", ["field", "pipe", "or", "or-comparisons", "mixed"])
def test_a_pipeline_file_that_validates_starts(shape: str) -> None:
    """From YAML: validate and compile accept the file, and the runtime's runner builds from
    the plan and filters as the expression says (this raised SyntaxError at start at 49)."""
    from deploy.pipeline.config import compile_plan, parse_config  # noqa: PLC0415
    from sinks.discard import DiscardSink  # noqa: PLC0415
    from stream.runtime import build_runner  # noqa: PLC0415

    expression = SHAPES[shape](200)
    text = (
        "name: long\nstream: {name: s}\nsinks:\n  out: {type: stdout}\n"
        "functions:\n  f:\n    processors:\n"
        f"      - filter: {{expr: {orjson.dumps(expression).decode()}}}\n"
        "    route: [out]\n"
    )
    plan = compile_plan(parse_config(text, env={}))
    runner = build_runner(plan, "f", lambda name, _spec: DiscardSink(name), metrics=False)
    docs = documents(200)
    _, expected = run_chain(expression, docs, fuse=False)
    records = [Record(orjson.dumps(d), "k", str(i), index=i) for i, d in enumerate(docs)]
    kept = runner.chain.run(records)
    assert sorted(r.index for r in kept.records) == [i for i, k in enumerate(expected) if k is True]
