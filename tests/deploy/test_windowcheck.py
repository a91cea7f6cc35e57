"""The demo's window reference (``deploy.local.windowcheck``): written apart from the window
step, it must agree with it on any records, and its verdicts (missing, extra, different
rows) must name what is wrong."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy.local.windowcheck import Landed, WindowCheck, WindowReference, reference
from processors.chain import Chain, Step
from processors.window import Window
from stream.records import Record

WINDOW = {
    "key": "user", "size_s": 60, "field": "ts", "allowed_lateness_s": 10,
    "aggregate": {"n": "count", "revenue": {"sum": "amount"}, "top": {"max": "amount"}},
}  # fmt: skip

record = st.fixed_dictionaries(
    {
        "user": st.sampled_from(["a", "b", "c"]),
        # seconds after the previous record (disorder, lateness), on 5 s steps to hit the bounds
        "step": st.integers(-8, 6).map(lambda n: n * 5),
        "amount": st.integers(0, 50),
    }
)


SHARD = {"a": "s0", "b": "s0", "c": "s1"}  # a key's records are on one shard


def _landed(draws: list[dict[str, Any]]) -> list[Landed]:
    out, t = [], 1_767_225_600.0  # epoch milliseconds in the records
    for seq, draw in enumerate(draws, start=1):
        t += draw["step"]
        doc = {"user": draw["user"], "ts": int(t * 1000), "amount": draw["amount"]}
        out.append(Landed(SHARD[draw["user"]], (seq, 0), orjson.dumps(doc)))
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
    settings_ = {**WINDOW, "slide_s": slide}
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
