"""The demo's window reference (``deploy.local.windowcheck``): written apart from the window
step, it must agree with it on any records, and its verdicts (missing, extra, different
rows) must name what is wrong."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy.local.windowcheck import (
    AtLeast,
    Landed,
    WindowCheck,
    WindowReference,
    compared_aggregates,
    reference,
    unchecked_functions,
)
from processors.chain import Chain, Step
from processors.window import Window
from stream.records import Record

WINDOW = {
    "key": "user", "size_s": 60, "field": "ts", "allowed_lateness_s": 10,
    "aggregate": {"n": "count", "revenue": {"sum": "amount"}, "top": {"max": "amount"}},
}  # fmt: skip

#: every aggregation the reference models
WINDOW_ALL = {**WINDOW, "aggregate": {
    **WINDOW["aggregate"], "kinds": {"distinct": "amount"}, "head": {"first": "amount"},
    "tail": {"last": "amount"}, "label": {"first": "label"},
}}  # fmt: skip

record = st.fixed_dictionaries(
    {
        # keys of three JSON types, some with one text as Python sees them (1 == 1.0 == True)
        "user": st.sampled_from(["a", "b", "c", 1, 1.0, "1", True]),
        # seconds after the previous record (disorder, lateness), on 5 s steps to hit the bounds
        "step": st.integers(-8, 6).map(lambda n: n * 5),
        "amount": st.integers(0, 50),
    }
)


def _shard(user: Any) -> str:
    return "s0" if user in {"a", "b"} else "s1"  # a key's records are on one shard


def _landed(draws: list[dict[str, Any]]) -> list[Landed]:
    out, t = [], 1_767_225_600.0  # epoch milliseconds in the records
    for seq, draw in enumerate(draws, start=1):
        t += draw["step"]
        doc = {"user": draw["user"], "ts": int(t * 1000), "amount": draw["amount"]}
        if draw["amount"] % 3:  # some records without it: first/last skip them
            doc["label"] = f"l{draw['amount']}"
        out.append(Landed(_shard(draw["user"]), (seq, 0), orjson.dumps(doc)))
    return out


@settings(max_examples=60, deadline=None)
@given(
    draws=st.lists(record, max_size=60),
    cuts=st.lists(st.integers(1, 60), max_size=4),
    slide=st.sampled_from([60, 20]),
)
def test_the_reference_agrees_with_the_window_step(
    draws: list[dict[str, Any]], cuts: list[int], slide: int
) -> None:
    """Any records of three keys on two shards, in any batches: the step's results are the
    reference's closed windows, its late count the reference's, and the records that yield
    results its closing records."""
    settings_ = {**WINDOW_ALL, "slide_s": slide}
    landed = _landed(draws)
    window = Window(**settings_, state="memory", function="f")
    chain = Chain([Step.of("processors[0].window", window)])
    results: dict[str, dict[str, Any]] = {}
    closers = set()
    for shard in ("s0", "s1"):
        mine = [r for r in landed if r.shard == shard]
        bounds = sorted({0, len(mine), *(c for c in cuts if c < len(mine))})
        for lo, hi in itertools.pairwise(bounds):
            batch = [
                Record(r.data, "k", str(r.position[0]), shard_id=shard, index=i)
                for i, r in enumerate(mine[lo:hi])
            ]
            for out in chain.run(batch).records:
                results[out.json["window_id"]] = out.json
                closers.add((shard, out.sequence_number))

    ref = reference("f", settings_, landed)

    assert set(results) == set(ref.closed)
    for window_id, values in ref.closed.items():
        assert {name: results[window_id][name] for name in values} == values
    assert ref.late == window.late
    assert ref.closers == len(closers)
    assert not set(ref.open) & set(ref.closed)


def test_a_closing_record_past_the_last_window_closes_every_earlier_one() -> None:
    docs = [({"user": "a", "ts": 30, "amount": 5}, "s0"),
            ({"user": "b", "ts": 95, "amount": 7}, "s0"),
            ({"user": "c", "ts": 50, "amount": 1}, "s1")]  # fmt: skip
    landed = [Landed(s, (i, 0), orjson.dumps(d)) for i, (d, s) in enumerate(docs)]
    before = reference("f", WINDOW, landed)
    # s0's watermark (95 - 10) passed a's minute only; s1 has closed nothing
    assert sorted(before.closed) == ["f/a/1970-01-01T00:00:00Z"]
    assert sorted(before.open) == ["f/b/1970-01-01T00:01:00Z", "f/c/1970-01-01T00:00:00Z"]

    close = 120 + 10  # the last window's end plus the lateness
    landed += [Landed(s, (9, 0), orjson.dumps({"user": u, "ts": close, "amount": 1}))
               for u, s in (("a", "s0"), ("c", "s1"))]  # fmt: skip
    after = reference("f", WINDOW, landed)

    assert sorted(after.closed) == [
        "f/a/1970-01-01T00:00:00Z", "f/b/1970-01-01T00:01:00Z", "f/c/1970-01-01T00:00:00Z"
    ]  # fmt: skip
    assert sorted(after.open) == ["f/a/1970-01-01T00:02:00Z", "f/c/1970-01-01T00:02:00Z"]
    assert after.closed["f/b/1970-01-01T00:01:00Z"] == {"n": 1, "revenue": 7, "top": 7}


def test_records_the_steps_before_keep_are_the_only_ones_counted() -> None:
    docs = [{"user": "a", "ts": 1, "amount": 5, "kind": "buy"},
            {"user": "a", "ts": 2, "amount": 9, "kind": "view"},
            {"user": "a", "ts": 200, "amount": 1, "kind": "buy"}]  # fmt: skip
    landed = [Landed("s0", (i, 0), orjson.dumps(d)) for i, d in enumerate(docs)]
    landed.insert(1, Landed("s0", (0, 1), b"GET / HTTP/1.1"))  # not JSON: never reaches it

    ref = reference("f", WINDOW, landed, keep=lambda doc: doc["kind"] == "buy")

    assert ref.reached == 2
    assert ref.closed == {"f/a/1970-01-01T00:00:00Z": {"n": 1, "revenue": 5, "top": 5}}


def test_the_verdicts_name_missing_extra_and_different_rows() -> None:
    ref = WindowReference(
        closed={"w1": {"n": 2, "revenue": 10.5}, "w2": {"n": 1, "revenue": 3.0},
                "w3": {"n": 1, "revenue": 1.0}},
        open={"w4": {"n": 1, "revenue": 1.0}},
    )  # fmt: skip
    rows = {
        "w1": {"window_id": "w1", "n": 2, "revenue": 10.5000000001},  # a decimal round trip
        "w2": {"window_id": "w2", "n": 2, "revenue": 3.0},  # counted twice
        "w4": {"window_id": "w4", "n": 1, "revenue": 1.0},  # closed too early
    }

    check = WindowCheck("f", "per-minute", ref, rows, ("n", "revenue"))

    assert check.missing == ["w3"]
    assert check.extra == ["w4"]
    assert check.differing == ["w2"]
    assert check.matching == 1


def test_keys_of_different_json_types_are_different_windows_with_different_ids() -> None:
    docs = [{"user": 1, "ts": 5, "amount": 1}, {"user": "1", "ts": 6, "amount": 2},
            {"user": True, "ts": 7, "amount": 3}, {"user": 1.0, "ts": 8, "amount": 4},
            {"user": "z", "ts": 200, "amount": 0}]  # fmt: skip
    landed = [Landed("s0", (i, 0), orjson.dumps(d)) for i, d in enumerate(docs)]

    ref = reference("f", WINDOW, landed)

    assert ref.closed == {
        "f/~1/1970-01-01T00:00:00Z": {"n": 2, "revenue": 5, "top": 4},
        "f/1/1970-01-01T00:00:00Z": {"n": 1, "revenue": 2, "top": 2},
        "f/~true/1970-01-01T00:00:00Z": {"n": 1, "revenue": 3, "top": 3},
    }


def test_a_distinct_past_its_bound_is_compared_as_at_least_up_to_the_exact_count() -> None:
    ref = WindowReference(closed={"w1": {"d": AtLeast(10)}, "w2": {"d": AtLeast(10)},
                                  "w3": {"d": AtLeast(10)}})  # fmt: skip
    rows = {"w1": {"d": {"at_least": 7}}, "w2": {"d": {"at_least": 11}}, "w3": {"d": 10}}

    assert WindowCheck("f", "s", ref, rows, ("d",)).differing == ["w2", "w3"]


def test_what_the_reference_cannot_check_is_named_with_the_reason() -> None:
    table = {"type": "dynamodb", "table": "t", "key": "window_id"}
    window = {"key": "u", "size_s": 60, "field": "ts", "aggregate": {"n": "count"}}
    functions = {
        "checked": [{"filter": {"match": {"k": ["a"]}}}, {"window": window}],
        "sessions": [{"window": {**window, "gap_s": 60}}],
        "arrival": [{"window": {**window, "time": "arrival"}}],
        "enriched": [{"enrich": {"set": {"x": "1"}}}, {"window": window}],
        "to-queue": [{"window": window}],
        "plain": [{"filter": {"match": {"k": ["a"]}}}],
    }
    plan: Any = {
        "sinks": {"rows": table, "queue": {"type": "sqs", "queue": "q"}},
        "functions": {name: {"processors": steps, "route": ["queue" if name == "to-queue"
                                                               else "rows"]}
                      for name, steps in functions.items()},
    }  # fmt: skip

    why = unchecked_functions(plan)

    assert sorted(why) == ["arrival", "enriched", "sessions", "to-queue"]
    assert "session" in why["sessions"]
    assert "arrival" in why["arrival"]
    assert "not a filter" in why["enriched"]
    assert "window_id" in why["to-queue"]
    plugin = {**window, "aggregate": {"n": "count", "h": {"hll": "u"}, "f": {"first": "u"}}}
    assert compared_aggregates(plugin) == (("n", "f"), ("h",))
