"""The fused fast path: generated sources and fused chains against the closures they replace.

``processors.codegen`` writes patterns and JMESPath expressions as Python source and
``processors.fused`` turns runs of built-in steps into one generated loop; both must be
invisible. The property tests run each generated source against the closure of
``processors.match`` / ``processors.expr`` (tested against AWS's documentation and
``jmespath.search``), and random chains fused and unfused over the same random batch.
"""

from __future__ import annotations

import base64
from typing import Any, ClassVar

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from processors.chain import Chain, Step
from processors.codegen import Namespace, pattern_source
from processors.codegen_expr import expr_source, predicate_source
from processors.enrich import Enrich
from processors.expr import compile_expr, compile_predicate
from processors.filter import Filter
from processors.fused import FusedRun
from processors.match import compile_pattern, validate_pattern
from processors.route import Route
from stream.event import records_from_event
from stream.exceptions import DecodeError, RetryableError
from stream.records import EventRecord, Record

KEYS = ("a", "b", "n")
SINKS = ("s1", "s2", "s3")
TEXTS = ("x", "xa", "ax", "X", "", "10.0.0.7", "ß", "SS")
SCALAR_VALUES = (None, True, False, 0, 1, 1.0, 0.0, -1, 2.5, 5, 6e9, -6e9, *TEXTS)

# --------------------------------------------------------------------------- strategies

scalars = st.sampled_from(SCALAR_VALUES)
common = st.sampled_from(["x", 1, 0, True, None])  # so that filters keep some records
values = st.recursive(
    common | scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner),
    max_leaves=6,
)
field_values = st.one_of(common, common, values)
objects = st.one_of(
    st.fixed_dictionaries(dict.fromkeys(KEYS, field_values)),
    st.fixed_dictionaries({}, optional=dict.fromkeys(KEYS, values)),
)
documents = st.one_of(objects, objects, objects, values)

texts = st.sampled_from(TEXTS)
numbers = st.sampled_from([-3, 0, 1, 2.5])
operators = st.one_of(
    st.builds(lambda name, t: {name: t}, st.sampled_from(["prefix", "suffix"]), texts),
    st.builds(lambda t: {"equals-ignore-case": t}, texts),
    st.builds(
        lambda name, t: {name: {"equals-ignore-case": t}},
        st.sampled_from(["prefix", "suffix"]),
        texts,
    ),
    st.sampled_from([{"wildcard": "x*"}, {"wildcard": "*a"}, {"wildcard": "a\\*"}]),
    st.builds(
        lambda op, n: {"numeric": [op, n]}, st.sampled_from(["=", "<", "<=", ">", ">="]), numbers
    ),
    st.builds(
        lambda lo, hi: {"numeric": [">=", lo, "<", hi]},
        st.sampled_from([-3, 0]),
        st.sampled_from([1, 2.5]),
    ),
    st.builds(lambda b: {"exists": b}, st.booleans()),
    st.builds(
        lambda v: {"anything-but": v},
        st.one_of(
            texts,
            numbers,
            st.lists(texts, min_size=1, max_size=2),
            st.lists(numbers, min_size=1, max_size=2),
        ),
    ),
    st.builds(
        lambda form, t: {"anything-but": {form: t}},
        st.sampled_from(["prefix", "suffix", "equals-ignore-case"]),
        st.sampled_from(["x", "a", ["x", "A"]]),
    ),
    st.just({"anything-but": {"wildcard": ["x*", "*a"]}}),
)
matchers = st.lists(st.one_of(common, scalars, operators), min_size=1, max_size=4)


def _patterns(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    flat = st.dictionaries(st.sampled_from(KEYS), matchers, min_size=1, max_size=2)
    if depth == 0:
        return flat
    inner = st.one_of(matchers, matchers, st.deferred(lambda: _patterns(depth - 1)))
    fields = st.dictionaries(st.sampled_from(KEYS), inner, min_size=1, max_size=2)
    fields = st.one_of(
        fields, st.dictionaries(st.sampled_from(KEYS), matchers, min_size=1, max_size=1)
    )
    with_or = st.builds(
        lambda base, alts: {**base, "$or": alts}, flat, st.lists(flat, min_size=2, max_size=2)
    )
    return st.one_of(fields, fields, with_or)


patterns = _patterns(2).filter(lambda p: not validate_pattern(p))

FIELDS = ("a", "b", "n", "n.a", "n.b", "a[0]", "@", "n | a", "a[-1].b")
LITERALS = (
    "`0`",
    "`1`",
    "`1.0`",
    "`0.0`",
    "`2.5`",
    "`true`",
    "`false`",
    "`null`",
    "'x'",
    '`"x"`',
    "'X'",
    "`[1]`",
    "`{}`",
)
COMPARATORS = ("==", "!=", "<", "<=", ">", ">=")


@st.composite
def expressions(draw: st.DrawFn, depth: int = 3) -> str:
    """Field tests joined by &&, || and !, with literal and field operands on both sides."""
    if depth == 0 or draw(st.integers(0, 2)) == 0:
        kind = draw(st.sampled_from(["cmp", "cmp", "cmp", "lcmp", "ff", "field", "literal"]))
        field, literal = draw(st.sampled_from(FIELDS)), draw(st.sampled_from(LITERALS))
        op = draw(st.sampled_from(COMPARATORS))
        if kind == "cmp":
            return f"{field} {op} {literal}"
        if kind == "lcmp":
            return f"{literal} {op} {field}"
        if kind == "ff":
            return f"{field} {op} {draw(st.sampled_from(FIELDS))}"
        return field if kind == "field" else literal
    kind = draw(st.sampled_from(["&&", "||", "!", "cmp"]))
    if kind == "!":
        return f"!({draw(expressions(depth - 1))})"
    if kind == "cmp":
        op = draw(st.sampled_from(COMPARATORS))
        return f"({draw(expressions(depth - 1))}) {op} ({draw(expressions(depth - 1))})"
    return f"({draw(expressions(depth - 1))}) {kind} ({draw(expressions(depth - 1))})"


# What codegen does not write: these steps stay on the plain chain, between fused runs.
UNSUPPORTED_EXPRS = ("length(a) > `0`", "a[*] == `[1]`", "contains(a, 'x')")
UNSUPPORTED_PATTERNS = ({"a": [{"cidr": "10.0.0.0/24"}]},)

conditions = st.one_of(
    patterns,
    patterns,
    expressions(),
    expressions(),
    st.sampled_from(UNSUPPORTED_EXPRS + UNSUPPORTED_PATTERNS),
)
set_values = st.sampled_from(["x", 1, True, None, {"k": [1]}, [1, 2], 2.5])
STAMP = 1_767_225_600.5


@st.composite
def steps(draw: st.DrawFn) -> list[Step]:
    out = []
    for i in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["match", "expr", "both", "enrich", "stamp", "route", "plain"]))
        name = f"processors[{i}].{kind}"
        if kind == "match":
            processor: Any = Filter(match=draw(patterns | st.sampled_from(UNSUPPORTED_PATTERNS)))
        elif kind == "expr":
            processor = Filter(expr=draw(expressions() | st.sampled_from(UNSUPPORTED_EXPRS)))
        elif kind == "both":
            processor = Filter(match=draw(patterns), expr=draw(expressions()))
        elif kind in ("enrich", "stamp"):
            fields = draw(
                st.dictionaries(st.sampled_from(("a", "b", "c", "n")), set_values, max_size=3)
            )
            stamp = "ts" if kind == "stamp" or not fields else None
            processor = Enrich(set=fields, timestamp=stamp, now=lambda: STAMP)
        elif kind == "route":
            rules: list[dict[str, Any]] = [
                {"when": when, "to": to}
                for when, to in draw(
                    st.lists(
                        st.tuples(conditions, st.lists(st.sampled_from(SINKS), max_size=2)),
                        max_size=3,
                    )
                )
            ]
            if draw(st.booleans()):
                rules.append(
                    {"default": draw(st.lists(st.sampled_from(SINKS), min_size=1, max_size=2))}
                )
            processor = Route(rules, draw(st.sampled_from(["first", "all"])))
        else:
            processor = _plain_step
        out.append(Step.of(name, processor))
    return out


def _plain_step(record: Record) -> Record | None:
    """Not a built-in: reads the document, drops objects whose ``b`` is 1."""
    doc = record.json
    return None if isinstance(doc, dict) and doc.get("b") == 1 else record


raw_data = st.one_of(
    documents.map(orjson.dumps),
    documents.map(orjson.dumps),
    documents.map(orjson.dumps),
    st.sampled_from([b"not json", b"\xff", b"", b"[1,", b'"text"', b"[1,2]", b"null", b"0", b"{}"]),
)
batches = st.lists(
    st.tuples(raw_data, st.sampled_from([None] * 9 + ["corrupt aggregate"])),
    min_size=2,
    max_size=16,
)


def make_records(batch: list[tuple[bytes, str | None]]) -> list[Record]:
    return [
        Record(data, f"k{i % 3}", str(i), index=i, error=error)
        for i, (data, error) in enumerate(batch)
    ]


def event_records(batch: list[tuple[bytes, str | None]]) -> list[Record]:
    """The records :func:`make_records` makes, as the handler makes them from an event."""
    entries = [
        {
            "kinesis": {
                "partitionKey": f"k{i % 3}",
                "sequenceNumber": str(i),
                "data": base64.b64encode(b"\x00" + data).decode(),
            }
        }
        for i, (data, _) in enumerate(batch)
    ]
    records = records_from_event({"Records": entries})
    for record, (data, error) in zip(records, batch, strict=True):
        assert type(record) is EventRecord
        # the batch's exact bytes (which may start with the KPL magic bytes, so the event
        # carried them behind a zero byte), set on the slot as the parser does
        record._data = data
        record.error = error
    return records


def outcome(
    chain: Chain, batch: list[tuple[bytes, str | None]], *, lazy: bool = False
) -> tuple[Any, ...]:
    result = chain.run(event_records(batch) if lazy else make_records(batch))
    return (
        [(r.index, r.data, r.routes) for r in result.records],
        list(result.dropped.items()),
        [
            (
                f.record.index,
                f.step,
                type(f.error).__name__,
                str(f.error),
                f.retryable,
                f.record.data,
            )
            for f in result.failures
        ],
    )


def raised(fn: Any, *args: Any) -> Any:
    """The value, or the exception as (type, message)."""
    try:
        return ("ok", fn(*args))
    except Exception as exc:  # compared, not handled
        return ("raised", type(exc).__name__, str(exc))


def generated(source: str | None, ns: Namespace) -> Any:
    assert source is not None
    return ns.function("doc", source)


EDGE_DOCS: list[Any] = [
    {},
    {"a": 0, "b": [], "n": {"a": False, "b": 0.0}},
    {"a": [0, 1.0, True, None, "", [], {}, "x"], "b": 1},
    {"a": "x", "b": "xa", "n": [{"a": 1}, {"b": "x"}]},
    {"a": [[1, "x"], []], "n": {}},
    {"a": None, "b": True, "n": None},
    {"a": 1.0, "b": 6e9, "n": {"a": [None]}},
    None,
    0,
    "x",
    [],
    [{"a": 1}],
]


# --------------------------------------------------------------------------- differential


class TestFusedChainAgainstPlainChain:
    @settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
    @given(chain_steps=steps(), batch=batches)
    def test_a_fused_chain_gives_exactly_the_plain_chains_result(
        self, chain_steps: list[Step], batch: list[tuple[bytes, str | None]]
    ) -> None:
        fused = Chain(chain_steps)
        plain = Chain(chain_steps, fuse=False)
        expected = outcome(plain, batch)
        assert outcome(fused, batch) == expected
        event(f"fused steps: {sum(len(getattr(s, 'steps', ())) for s in fused._segments)}")
        event(f"kept {bool(expected[0])}, dropped {bool(expected[1])}, failed {bool(expected[2])}")

    @settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
    @given(chain_steps=steps(), batch=batches)
    def test_records_of_an_event_give_what_records_built_whole_give(
        self, chain_steps: list[Step], batch: list[tuple[bytes, str | None]]
    ) -> None:
        """The handler's records (EventRecord: position read from the event when needed)
        take the fused loop's inline path too; the result is the plain chain's."""
        expected = outcome(Chain(chain_steps, fuse=False), batch)
        assert outcome(Chain(chain_steps), batch, lazy=True) == expected


class TestSourcesAgainstClosures:
    @settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
    @given(pattern=patterns, docs=st.lists(documents, max_size=6))
    def test_pattern_source_agrees_with_compile_pattern(
        self, pattern: dict[str, Any], docs: list[Any]
    ) -> None:
        ns = Namespace()
        fast, reference = (
            generated(pattern_source(pattern, "doc", ns), ns),
            compile_pattern(pattern),
        )
        for doc in [*docs, *EDGE_DOCS]:
            assert fast(doc) is reference(doc), doc

    @settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
    @given(expression=expressions(), docs=st.lists(documents, max_size=6))
    def test_expression_sources_agree_with_the_compiled_expression(
        self, expression: str, docs: list[Any]
    ) -> None:
        ns = Namespace()
        value = generated(expr_source(expression, "doc", ns), ns)
        predicate = generated(predicate_source(expression, "doc", ns), ns)
        reference_value, reference_predicate = (
            compile_expr(expression),
            compile_predicate(expression),
        )
        for doc in [*docs, *EDGE_DOCS]:
            assert raised(value, doc) == raised(reference_value, doc), doc
            assert raised(predicate, doc) == raised(reference_predicate, doc), doc


# --------------------------------------------------------------------------- operators


def agrees(pattern: dict[str, Any], docs: list[Any]) -> None:
    ns = Namespace()
    fast, reference = generated(pattern_source(pattern, "doc", ns), ns), compile_pattern(pattern)
    assert [fast(d) for d in docs] == [reference(d) for d in docs]


class TestPatternSource:
    def test_a_list_of_strings_is_one_set_lookup_inline(self) -> None:
        ns = Namespace()
        source = pattern_source({"kind": ["a", "b"]}, "doc", ns)
        assert source is not None
        assert "doc.get('kind', _MISSING)" in source
        fn = ns.function("doc", source)
        assert [fn({"kind": "a"}), fn({"kind": "c"}), fn({}), fn([])] == [True, False, False, False]

    def test_numbers_match_by_value_and_bools_are_not_numbers(self) -> None:
        agrees({"a": [5, 1]}, [{"a": 5.0}, {"a": 1}, {"a": True}, {"a": "5"}, {"a": [0, 5]}])
        agrees({"a": [True]}, [{"a": True}, {"a": 1}, {"a": 1.0}, {"a": [False, True]}])

    def test_null_means_present_and_null(self) -> None:
        agrees({"a": [None]}, [{"a": None}, {}, {"a": ""}, {"a": False}, {"a": [None]}])

    def test_nested_keys_and_arrays_of_objects(self) -> None:
        pattern = {"n": {"a": ["x"], "b": [{"exists": False}]}}
        agrees(
            pattern,
            [
                {"n": {"a": "x"}},
                {"n": {"a": "x", "b": 1}},
                {"n": [{"a": "y"}, {"a": "x"}]},
                {},
                {"n": 1},
            ],
        )
        agrees(
            {"n": {"a": [{"exists": False}]}},
            [{}, {"n": 1}, {"n": []}, {"n": [1]}, {"n": [{"a": 1}]}],
        )

    def test_prefix_suffix_and_equals_ignore_case(self) -> None:
        docs = [{"a": "xa"}, {"a": "ax"}, {"a": "XA"}, {"a": 1}, {"a": ["b", "xb"]}, {}]
        agrees({"a": [{"prefix": "x"}]}, docs)
        agrees({"a": [{"suffix": "x"}]}, docs)
        agrees({"a": [{"prefix": {"equals-ignore-case": "X"}}]}, docs)
        agrees({"a": [{"equals-ignore-case": "xA"}]}, docs)
        agrees({"a": [{"wildcard": "x*"}]}, docs)

    def test_ignore_case_as_event_ruler_does(self) -> None:
        docs = [{"a": v} for v in ("straße", "STRASSE", "Straße 1", "GROSS", "\u212a", "k")]
        agrees({"a": [{"equals-ignore-case": "straße"}]}, docs)
        agrees({"a": [{"equals-ignore-case": "STRASSE"}]}, docs)
        agrees({"a": [{"prefix": {"equals-ignore-case": "straße"}}]}, docs)
        agrees({"a": [{"suffix": {"equals-ignore-case": "ß"}}]}, docs)
        agrees({"a": [{"anything-but": {"equals-ignore-case": ["ß", "k"]}}]}, docs)

    def test_dotted_keys_joined(self) -> None:
        docs = [
            {"a": {"b": "x"}},
            {"a.b": "x"},
            {"a": {"c": 1}, "a.b": "x"},
            {"a": "s", "a.b": "x"},
            {"a": ["s", {"c": 1}], "a.b": "x"},
            {"a": [{"b": "x"}]},
            {"a.b": "y"},
            {},
        ]
        agrees({"a.b": ["x"]}, docs)
        agrees({"a": {"b": ["x"]}}, docs)
        agrees({"a.b": [{"exists": False}]}, docs)

    def test_numeric_ranges(self) -> None:
        docs = [{"a": v} for v in (0, 1, 2.5, 3, -1, True, "1", None, 6e9, 6e11, 1.0000001, [5, 1])]
        agrees({"a": [{"numeric": [">", 0, "<=", 2.5]}]}, docs)
        agrees({"a": [{"numeric": ["=", 1]}]}, docs)
        agrees({"a": [{"numeric": ["<", 0]}]}, docs)

    def test_exists(self) -> None:
        docs = [{"a": 1}, {"a": None}, {}, {"a": {}}, {"a": []}, {"a": [[]]}, {"a": [1]}]
        agrees({"a": [{"exists": True}]}, docs)
        agrees({"a": [{"exists": False}]}, docs)

    def test_anything_but(self) -> None:
        docs = [{"a": v} for v in ("x", "y", 1, 1.0, True, None, ["x", "y"], ["x"])] + [{}]
        agrees({"a": [{"anything-but": ["x", "z"]}]}, docs)
        agrees({"a": [{"anything-but": 1}]}, docs)
        agrees({"a": [{"anything-but": {"prefix": "x"}}]}, docs)

    def test_or_of_alternatives(self) -> None:
        agrees({"$or": [{"a": ["x"]}, {"b": [1]}]}, [{"a": "x"}, {"b": 1}, {"b": 1.0}, {}])

    def test_cidr_is_not_written(self) -> None:
        assert pattern_source({"a": [{"cidr": "10.0.0.0/8"}]}, "doc", Namespace()) is None

    def test_an_invalid_pattern_is_not_written(self) -> None:
        assert pattern_source({}, "doc", Namespace()) is None


def same(expression: str, docs: list[Any]) -> None:
    ns = Namespace()
    value, reference = generated(expr_source(expression, "doc", ns), ns), compile_expr(expression)
    assert [raised(value, d) for d in docs] == [raised(reference, d) for d in docs]
    predicate = generated(predicate_source(expression, "doc", ns), ns)
    reference = compile_predicate(expression)
    assert [raised(predicate, d) for d in docs] == [raised(reference, d) for d in docs]


class TestExpressionSource:
    def test_fields_and_subexpressions(self) -> None:
        same("n.a", [{"n": {"a": 1}}, {"n": 1}, {"n": [1]}, {}, None, "s"])
        same("a[0].b", [{"a": [{"b": 2}]}, {"a": []}, {"a": {"b": 1}}])

    def test_equality_keeps_bools_apart_from_numbers(self) -> None:
        docs = [{"a": v} for v in (True, False, 1, 0, 1.0, 0.0, None, "1", [1])]
        for source in (
            "a == `1`",
            "a != `0`",
            "a == `true`",
            "`false` != a",
            "a == `[1]`",
            "a == 'x'",
        ):
            same(source, docs)

    def test_ordering_is_between_numbers_or_strings_else_null(self) -> None:
        docs = [{"a": v} for v in (0, 1, 2.5, True, None, [], "b")]
        for source in ("a > `0`", "`1` <= a", "a < 'c'", "a > `true`", "a >= `null`"):
            same(source, docs)

    def test_or_returns_a_value_and_truthiness_is_jmespaths(self) -> None:
        docs = [{"a": v, "b": "x"} for v in (0, 0.0, False, None, "", [], {}, "y")]
        for source in ("a || b", "a && b", "!a", "!(a == `0`)", "a"):
            same(source, docs)

    def test_comparing_a_string_to_a_number_raises_as_jmespath_does(self) -> None:
        ns = Namespace()
        fn = generated(predicate_source("a > `0`", "doc", ns), ns)
        assert raised(fn, {"a": "x"}) == raised(compile_predicate("a > `0`"), {"a": "x"})
        assert raised(fn, {"a": "x"})[1] == "TypeError"

    @pytest.mark.parametrize(
        "source", [*UNSUPPORTED_EXPRS, "a[1:2]", "{x: a}", "not_valid ==", "[a, b]"]
    )
    def test_unsupported_constructs_are_not_written(self, source: str) -> None:
        assert expr_source(source, "doc", Namespace()) is None
        assert predicate_source(source, "doc", Namespace()) is None


# --------------------------------------------------------------------------- fusion


def batch(*docs: Any) -> list[Record]:
    return [
        Record(d if isinstance(d, bytes) else orjson.dumps(d), "k", str(i), index=i)
        for i, d in enumerate(docs)
    ]


class TestFusion:
    def test_consecutive_builtins_become_one_loop_with_its_source_kept(self) -> None:
        chain = Chain(
            [
                Step.of("f", Filter(match={"a": ["x"]})),
                Step.of("e", Enrich(set={"b": 1})),
                Step.of("r", Route([{"when": "b == `1`", "to": ["s1"]}])),
            ]
        )
        (run,) = chain._segments
        assert isinstance(run, FusedRun)
        assert [s.name for s in run.steps] == ["f", "e", "r"]
        assert "for rec in records:" in run.source
        result = chain.run(batch({"a": "x"}, {"a": "y"}))
        assert [(r.json, r.routes) for r in result.records] == [({"a": "x", "b": 1}, ("s1",))]
        assert result.dropped == {"f": 1}

    def test_after_an_enricher_conditions_skip_the_type_test_and_still_miss_fields(self) -> None:
        steps = [
            Step.of("e", Enrich(set={"c": 1})),
            Step.of("f", Filter(expr="a == `1` || !b")),
            Step.of("r", Route([{"when": {"a": [1]}, "to": ["s1"]}, {"default": ["s2"]}])),
        ]
        (run,) = Chain(steps)._segments
        assert "isinstance(doc, dict)" not in run.source  # type: ignore[union-attr]
        data = [(orjson.dumps(d), None) for d in ({}, {"a": 1}, {"a": True}, {"b": 0}, [1])]
        assert outcome(Chain(steps), data) == outcome(Chain(steps, fuse=False), data)

    def test_names_and_values_are_data_in_the_source_never_code(self) -> None:
        steps = [
            Step.of("drop\n<drop>", Filter(match={"a": ["    <drop>", "x"]})),
            Step.of("e'\"", Enrich(set={"k\n": "'\"\n", "l": ["    <drop>"]})),
        ]
        data = [(orjson.dumps(d), None) for d in ({"a": "    <drop>"}, {"a": "y"}, {"a": "x"})]
        assert outcome(Chain(steps), data) == outcome(Chain(steps, fuse=False), data)
        assert Chain(steps).run(make_records(data)).dropped == {"drop\n<drop>": 1}

    def test_an_unsupported_condition_splits_the_run_and_keeps_its_closure(self) -> None:
        cidr = Step.of("cidr", Filter(match={"ip": [{"cidr": "10.0.0.0/8"}]}))
        chain = Chain([Step.of("f", Filter(expr="a")), cidr, Step.of("g", Filter(expr="b"))])
        kinds = [type(segment).__name__ for segment in chain._segments]
        assert kinds == ["FusedRun", "Step", "FusedRun"]
        result = chain.run(batch({"a": 1, "b": 1, "ip": "10.1.2.3"}, {"a": 1, "ip": "11.0.0.1"}))
        assert [r.index for r in result.records] == [0]
        assert result.dropped == {"cidr": 1}

    def test_a_timestamp_enricher_starts_a_run_and_its_prepare_takes_the_stamp(self) -> None:
        calls: list[int] = []

        def now() -> float:
            calls.append(1)
            return STAMP

        stamped = Step.of("t", Enrich(timestamp="at", now=now))
        chain = Chain([Step.of("f", Filter(expr="a")), stamped, Step.of("e", Enrich(set={"b": 1}))])
        assert [len(s.steps) for s in chain._segments] == [1, 2]  # type: ignore[union-attr]
        result = chain.run(batch({"a": 1}, {"a": 2}, {"a": 0}))
        assert [r.json["at"] for r in result.records] == ["2026-01-01T00:00:00.500Z"] * 3
        assert len(calls) == 1

    def test_a_decode_error_is_reported_by_the_first_step_that_reads_the_document(self) -> None:
        chain = Chain(
            [Step.of("r", Route([{"default": ["s1"]}])), Step.of("e", Enrich(set={"b": 1}))]
        )
        result = chain.run(batch(b"not json", [1]))
        assert [(f.step, type(f.error), f.retryable) for f in result.failures] == [
            ("e", DecodeError, False),
            ("e", DecodeError, False),
        ]
        assert "is JSON list, not an object" in str(result.failures[1].error)

    def test_steps_that_are_not_exactly_builtins_are_left_alone(self) -> None:
        class MyFilter(Filter):
            __slots__ = ()

        own = Step("own", lambda r: r, None, Filter(expr="a"))  # runs something else
        chain = Chain([Step.of("sub", MyFilter(expr="a")), own])
        assert all(isinstance(s, Step) for s in chain._segments)

    def test_a_dropped_record_keeps_its_bytes_not_its_decoded_document(self) -> None:
        """Memory: the batch list holds dropped records until the batch ends; their
        documents are let go, and decoded again, equal, should anything read them."""
        records = batch({"a": "x"}, {"a": "y"})
        result = Chain([Step.of("f", Filter(match={"a": ["x"]}))]).run(records)
        assert [r.index for r in result.records] == [0]
        assert (records[0].decoded, records[1].decoded) == (True, False)
        assert records[1].json == {"a": "y"}

    def test_a_record_changed_before_its_drop_keeps_the_changed_document(self) -> None:
        records = batch({"a": "x"}, {"a": "y"})
        steps = [Step.of("e", Enrich(set={"b": 1})), Step.of("f", Filter(match={"a": ["x"]}))]
        Chain(steps).run(records)
        assert records[1].decoded
        assert records[1].data == b'{"a":"y","b":1}'

    def test_fuse_false_runs_the_plain_loop(self) -> None:
        chain = Chain([Step.of("f", Filter(expr="a"))], fuse=False)
        assert chain._segments == chain.steps

    def test_a_record_subclass_is_read_and_marked_through_its_own_methods(self) -> None:
        class Audited(Record):
            __slots__ = ()
            calls: ClassVar[list[str]] = []

            @property
            def json(self) -> Any:
                self.calls.append("json")
                return Record.json.fget(self)  # type: ignore[attr-defined]

            def set_json(self, doc: Any) -> None:
                self.calls.append("set_json")
                super().set_json(doc)

        steps = [Step.of("f", Filter(expr="a > `0`")), Step.of("e", Enrich(set={"b": 1}))]
        records = [Audited(orjson.dumps({"a": i}), "k", str(i), index=i) for i in range(3)]
        result = Chain(steps).run(records)
        assert [r.data for r in result.records] == [b'{"a":1,"b":1}', b'{"a":2,"b":1}']
        assert Audited.calls == ["json", "json", "set_json", "json", "set_json"]

    def test_a_failing_prepare_fails_every_record_that_reaches_the_run(self) -> None:
        def down() -> float:
            raise RetryableError("clock unavailable")

        steps = [Step.of("t", Enrich(timestamp="at", now=down)), Step.of("f", Filter(expr="a"))]
        fused, plain = Chain(steps), Chain(steps, fuse=False)
        data = [(orjson.dumps({"a": 1}), None), (b"not json", None)]
        assert outcome(fused, data) == outcome(plain, data)
        (failure, _) = fused.run(batch({"a": 1}, b"not json")).failures
        assert (failure.step, failure.retryable) == ("t", True)
