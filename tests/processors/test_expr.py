"""Tests for processors.expr: compiled JMESPath must match jmespath.search exactly."""

from __future__ import annotations

import json
from typing import Any

import jmespath
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jmespath import exceptions

from processors import expr
from processors.expr import ExprError, compile_expr, compile_predicate, is_truthy

NAMES = ["a", "b", "c", "foo", "x y"]

# --------------------------------------------------------------------------- helpers


def same(x: Any, y: Any) -> bool:
    """Deep equality that also requires equal types, so True vs 1 and 1 vs 1.0 differ."""
    if type(x) is not type(y):
        return False
    if isinstance(x, dict):
        return list(x) == list(y) and all(same(x[k], y[k]) for k in x)
    if isinstance(x, list):
        return len(x) == len(y) and all(same(i, j) for i, j in zip(x, y, strict=True))
    return bool(x == y)


def outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(*args)
    except Exception as exc:
        return "raised", type(exc)


def assert_matches(source: str, doc: Any) -> None:
    """compile_expr(source)(doc) returns/raises like jmespath.search; so does the predicate."""
    expected = outcome(jmespath.search, source, doc)
    if (
        expected[0] == "raised"
        and issubclass(expected[1], exceptions.ParseError)
        and (not issubclass(expected[1], exceptions.ArityError))
    ):
        with pytest.raises(ExprError):
            compile_expr(source)
        return
    actual = outcome(compile_expr(source), doc)
    assert actual[0] == expected[0], (source, doc, actual, expected)
    if expected[0] == "raised":
        assert actual[1] is expected[1], (source, doc, actual, expected)
        with pytest.raises(expected[1]):
            compile_predicate(source)(doc)
    else:
        assert same(actual[1], expected[1]), (source, doc, actual, expected)
        assert compile_predicate(source)(doc) is is_truthy(expected[1]), (source, doc)


# --------------------------------------------------------------------------- strategies

scalars = st.one_of(
    st.sampled_from([None, True, False, 0, 1, 0.0, 1.0, "", "a"]),
    st.sampled_from([-1, 2, 10, 1.5, -2.5]),
    st.integers(-5, 5),
    st.text(alphabet="abcx ", max_size=3),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(NAMES), inner, max_size=4),
    ),
    max_leaves=10,
)
documents = st.one_of(
    st.dictionaries(st.sampled_from(NAMES), json_values, max_size=5),
    st.dictionaries(st.sampled_from(NAMES), json_values, max_size=5),
    json_values,
)


def ident(name: str) -> str:
    return name if name.isidentifier() else json.dumps(name)


identifiers = st.sampled_from(NAMES).map(ident)
backtick_literals = scalars.map(lambda v: f"`{json.dumps(v)}`") | st.sampled_from(
    ["`[1, true]`", "`[true]`", '`{"a": 1}`', "`[]`", "`{}`", '`""`', "`[1]`"]
)
raw_strings = st.text(alphabet="abcx ", max_size=3).map(lambda s: f"'{s}'")
atoms = st.one_of(identifiers, identifiers, backtick_literals, raw_strings, st.just("@"))
COMPARATORS = ["==", "!=", "<", "<=", ">", ">="]
UNARY_FUNCS = [
    "length",
    "type",
    "to_string",
    "to_number",
    "keys",
    "values",
    "abs",
    "ceil",
    "floor",
    "max",
    "min",
    "sum",
    "avg",
    "sort",
    "reverse",
    "to_array",
    "not_null",
]
BINARY_FUNCS = ["contains", "starts_with", "ends_with", "join", "not_null", "merge"]
EXPREF_FUNCS = ["sort_by", "max_by", "min_by", "map"]
SUFFIXES = [
    "name",
    "index",
    "slice",
    "[*]",
    ".*",
    "[]",
    "[*].a",
    "[].b",
    ".*.c",
    "filter",
    "list",
    "hash",
]
KINDS = [
    "suffix",
    "suffix",
    "suffix",
    "chain",
    "chain",
    "compare",
    "compare_literal",
    "compare_literal",
    "logic",
    "logic",
    "not",
    "list",
    "hash",
    "unary",
    "binary",
    "expref",
]


def paren(e: str) -> str:
    return f"({e})"


@st.composite
def expressions(draw: st.DrawFn, depth: int = 3) -> str:
    """A JMESPath expression over NAMES; compound operands are parenthesised."""
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        return draw(atoms)

    def sub() -> str:
        return draw(expressions(depth - 1))

    def suffix() -> str:
        kind = draw(st.sampled_from(SUFFIXES))
        if kind == "name":
            return "." + draw(identifiers)
        if kind == "index":
            return f"[{draw(st.integers(-3, 3))}]"
        if kind == "slice":
            bound = st.sampled_from(["", "-2", "-1", "0", "1", "2"])
            step = draw(st.sampled_from(["", ":-1", ":1", ":2"]))
            return f"[{draw(bound)}:{draw(bound)}{step}]"
        if kind == "filter":
            return f"[?{sub()}]"
        if kind == "list":
            return f".[{sub()}, {sub()}]"
        if kind == "hash":
            return f".{{a: {sub()}, b: {sub()}}}"
        return kind

    kind = draw(st.sampled_from(KINDS))
    if kind == "suffix":
        return paren(sub()) + suffix()
    if kind == "chain":
        return draw(identifiers) + suffix() + suffix()
    if kind == "compare":
        return f"{paren(sub())} {draw(st.sampled_from(COMPARATORS))} {paren(sub())}"
    if kind == "compare_literal":
        literal = draw(backtick_literals | raw_strings)
        return f"{draw(identifiers)} {draw(st.sampled_from(COMPARATORS))} {literal}"
    if kind == "logic":
        return f"{paren(sub())} {draw(st.sampled_from(['&&', '||', '|']))} {paren(sub())}"
    if kind == "not":
        return "!" + paren(sub())
    if kind == "list":
        return "[" + ", ".join(sub() for _ in range(draw(st.integers(1, 3)))) + "]"
    if kind == "hash":
        keys = draw(st.lists(identifiers, min_size=1, max_size=3))
        return "{" + ", ".join(f"{k}: {sub()}" for k in keys) + "}"
    if kind == "unary":
        return f"{draw(st.sampled_from(UNARY_FUNCS))}({sub()})"
    if kind == "binary":
        return f"{draw(st.sampled_from(BINARY_FUNCS))}({sub()}, {sub()})"
    name = draw(st.sampled_from(EXPREF_FUNCS))
    if name == "map":
        return f"map(&{sub()}, {sub()})"
    return f"{name}({sub()}, &{sub()})"


flat_scalars = st.sampled_from([None, True, False, 0, 1, 0.0, 1.0, 2, -1.5, "", "a", "ab", [], {}])
records = st.dictionaries(st.sampled_from(NAMES), flat_scalars | json_values, max_size=5)
record_lists = st.lists(records, max_size=4)


@st.composite
def predicates(draw: st.DrawFn, depth: int = 3) -> str:
    """Filter-shaped expressions: field-vs-literal tests joined by &&, || and !."""
    name = draw(identifiers)
    if depth == 0 or draw(st.integers(0, 2)) == 0:
        kind = draw(st.sampled_from(["cmp", "cmp", "cmp", "field", "chain", "call", "length"]))
        if kind == "cmp":
            op = draw(st.sampled_from(COMPARATORS))
            return f"{name} {op} {draw(backtick_literals | raw_strings)}"
        if kind == "field":
            return name
        if kind == "chain":
            return f"{name}.{draw(identifiers)} == {draw(backtick_literals)}"
        if kind == "length":
            return f"length({name}) > `{draw(st.integers(0, 2))}`"
        func = draw(st.sampled_from(["contains", "starts_with", "ends_with"]))
        return f"{func}({name}, {draw(raw_strings)})"
    kind = draw(st.sampled_from(["&&", "||", "!"]))
    if kind == "!":
        return f"!({draw(predicates(depth - 1))})"
    return f"({draw(predicates(depth - 1))}) {kind} ({draw(predicates(depth - 1))})"


# --------------------------------------------------------------------------- differential

# Hand-picked documents every generated expression is also run against: cheap, and they
# hold the values where JMESPath and Python disagree (0, 1.0, true, "", [], {}).
EDGE_DOCS: list[Any] = [
    {"a": 0, "b": [], "c": False, "foo": 0.0},
    {"a": [0, 0.0, False, None, "", [], {}, 1], "b": 1},
    None,
    0,
    "s",
    [],
    {},
    [1, True, None],
    {"a": True},
    {"a": 1},
    {"a": 1.0},
    {"a": {"b": {"c": {"foo": 1}}}},
    {"a": [{"b": 2, "c": 3}, {"b": 0}, [1, 2], None]},
    {"a": "x", "b": 0},
    {"a": [], "b": ""},
    {"a": {"b": 1, "c": [1]}},
]


@settings(deadline=None, max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(source=expressions(), doc=documents)
def test_compiled_expression_matches_jmespath_search_for_generated_inputs(
    source: str, doc: Any
) -> None:
    for d in (doc, *EDGE_DOCS):
        assert_matches(source, d)


@settings(deadline=None, max_examples=120)
@given(
    name=st.sampled_from(NAMES),
    op=st.sampled_from(COMPARATORS),
    literal=backtick_literals | raw_strings,
    doc=documents,
)
def test_hot_field_comparator_shape_matches_jmespath_search(
    name: str, op: str, literal: str, doc: Any
) -> None:
    for d in (doc, *EDGE_DOCS):
        assert_matches(f"{ident(name)} {op} {literal}", d)
        assert_matches(f"{literal} {op} {ident(name)}", d)


@settings(deadline=None, max_examples=200)
@given(source=predicates(), doc=records, items=record_lists)
def test_filter_shaped_predicates_match_jmespath_search(
    source: str, doc: dict[str, Any], items: list[dict[str, Any]]
) -> None:
    assert_matches(source, doc)
    assert_matches(f"[?{source}]", items)
    assert_matches(f"a[?{source}].b", {"a": items})


@pytest.mark.parametrize(
    "source",
    [
        "a",
        "a.b.c",
        "a.b.c.foo",
        "a[0]",
        "a[-1]",
        "a[1:]",
        "a[::-1]",
        "a[*].b",
        "a.*",
        "a[]",
        "a[?b > `1`].c",
        "a || b",
        "a && b",
        "!a",
        "a | [0]",
        "[a, b]",
        "{x: a, y: b}",
        "length(a)",
        "contains(a, `1`)",
        "not_null(a, b)",
        "sort_by(a, &b)",
        "a == `1`",
        "a == `true`",
        "a != `0`",
        "a < 'x'",
        "a >= `1.5`",
        "`1` == a",
        "a[?@]",
        "a[?b]",
        "max(a)",
        "min(a)",
        "sum(a)",
        "avg(a)",
        "keys(a)",
        "type(a)",
        "to_number(a)",
        "to_string(a)",
        "abs(a)",
        "join(', ', a)",
        "starts_with(a, 'x')",
        "not_null(a, length(b))",
    ],
)
@pytest.mark.parametrize("doc", EDGE_DOCS)
def test_known_shapes_match_jmespath_search_on_edge_documents(source: str, doc: Any) -> None:
    assert_matches(source, doc)


# --------------------------------------------------------------------------- units


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, True),
        (0.0, True),
        (1, True),
        ("x", True),
        ([0], True),
        ({"a": None}, True),
        (True, True),
        (False, False),
        (None, False),
        ("", False),
        ([], False),
        ({}, False),
    ],
)
def test_is_truthy_treats_zero_as_true_and_empty_containers_as_false(
    value: Any, expected: bool
) -> None:
    assert is_truthy(value) is expected


def test_boolean_literal_true_does_not_equal_number_one() -> None:
    assert compile_expr("`true` == `1`")({}) is False
    assert compile_expr("a == `1`")({"a": True}) is False
    assert compile_expr("a == `1`")({"a": 1.0}) is True


def test_predicate_keeps_a_record_whose_value_is_zero() -> None:
    assert compile_predicate("amount")({"amount": 0}) is True
    assert compile_predicate("!amount")({"amount": 0}) is False


def test_ordering_comparison_with_a_non_comparable_operand_gives_null_and_is_falsy() -> None:
    assert compile_expr("a < `true`")({"a": 1}) is None
    assert compile_expr("a < b")({"a": [1], "b": [2]}) is None
    assert compile_predicate("a > `1`")({"a": None}) is False


def test_ordering_comparison_on_strings_follows_jmespath_1_1_lexicographic_order() -> None:
    # jmespath 1.1.0 (unlike the spec) orders strings; we match jmespath.search.
    assert compile_expr("a < 'b'")({"a": "a"}) is jmespath.search("a < 'b'", {"a": "a"}) is True


def test_ordering_a_number_against_a_string_raises_type_error_like_jmespath() -> None:
    with pytest.raises(TypeError):
        jmespath.search("a > `1`", {"a": "x"})
    with pytest.raises(TypeError):
        compile_expr("a > `1`")({"a": "x"})


def test_bad_syntax_raises_expr_error_naming_expression_position_and_expectation() -> None:
    with pytest.raises(ExprError) as info:
        compile_expr("a..b")
    err = info.value
    assert err.expression == "a..b"
    assert err.position == 2
    assert "'a..b'" in str(err)
    assert "position 2" in str(err)
    assert "expected one of" in str(err)
    assert "unquoted_identifier" in str(err)
    assert isinstance(err, ValueError)


def test_incomplete_and_empty_expressions_raise_expr_error() -> None:
    with pytest.raises(ExprError, match="end of expression"):
        compile_expr("a[?b ==")
    with pytest.raises(ExprError, match="empty"):
        compile_predicate("")


def test_function_with_expref_falls_back_to_jmespath_interpreter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    visited: list[str] = []
    real_visit = expr._INTERPRETER.visit

    def spy(node: dict[str, Any], value: Any) -> Any:
        visited.append(node["type"])
        return real_visit(node, value)

    monkeypatch.setattr(expr._INTERPRETER, "visit", spy)
    doc = {"people": [{"age": 30, "n": "b"}, {"age": 20, "n": "a"}]}
    source = "sort_by(people, &age)[*].n"
    assert compile_expr(source)(doc) == jmespath.search(source, doc) == ["a", "b"]
    assert visited[0] == "function_expression"


def test_function_argument_type_error_is_raised_by_jmespath_at_evaluation() -> None:
    fn = compile_expr("length(a)")
    assert fn({"a": [1, 2]}) == 2
    with pytest.raises(exceptions.JMESPathTypeError):
        fn({"a": 5})


def test_unknown_function_raises_only_when_evaluated_like_jmespath() -> None:
    fn = compile_expr("a && nope(@)")
    assert fn({"a": False}) is False
    with pytest.raises(exceptions.UnknownFunctionError):
        fn({"a": True})


def test_field_access_on_non_objects_gives_null() -> None:
    fn = compile_expr("a.b")
    for doc in (None, [1], "ab", 3, True, {"a": [{"b": 1}]}):
        assert fn(doc) is None


def test_filter_tests_and_projects_element_by_element_so_the_first_error_matches() -> None:
    # Element 1 passes the filter and its projection raises TypeError (1 > 'x'); element 2
    # would make the condition raise JMESPathTypeError. jmespath raises the former.
    doc = {"a": [{"c": "s", "b": 1}, {"c": 5}]}
    source = "a[?length(c) > `0`].[b > 'x']"
    with pytest.raises(TypeError):
        jmespath.search(source, doc)
    with pytest.raises(TypeError):
        compile_expr(source)(doc)
