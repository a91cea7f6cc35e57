"""A window key's text: injective over JSON keys, plain strings unchanged, numbers canonical;
and the window steps (tumbling, hopping, sessions) name and keep windows by it."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.chain import Chain, Step
from processors.session import SessionWindow
from processors.window import Window
from processors.window_keys import MARKER, key_text, key_value
from stream.records import Record

#: What a key field may hold: a string (some starting with the marker), a number or a bool.
KEYS = st.one_of(
    st.text(),
    st.text().map(lambda s: MARKER + s),
    st.integers(),
    st.integers(-(2**60), 2**60).map(float),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)


def _canonical(key: Any) -> tuple[str, Any]:
    """What makes two keys one (as JSON and DynamoDB see them): the kind, and the value,
    numbers compared exactly (1 and 1.0 are one number)."""
    if type(key) is bool:
        return ("bool", key)
    if type(key) is str:
        return ("str", key)
    return ("number", key)  # 1 == 1.0 in Python, exactly as numbers


class TestKeyText:
    @given(KEYS, KEYS)
    def test_two_keys_share_a_text_exactly_when_they_are_one_json_value(
        self, a: Any, b: Any
    ) -> None:
        assert (key_text(a) == key_text(b)) == (_canonical(a) == _canonical(b))

    @given(KEYS)
    def test_the_text_gives_the_key_back_as_its_canonical_value(self, key: Any) -> None:
        back = key_value(key_text(key))
        assert _canonical(back) == _canonical(key)
        assert type(back) is (float if type(key) is float and not key.is_integer() else
                              int if type(key) in (int, float) else type(key))  # fmt: skip

    @given(st.text().filter(lambda s: not s.startswith(MARKER)))
    def test_a_string_without_the_marker_is_its_own_text(self, key: str) -> None:
        assert key_text(key) == key

    def test_numbers_are_canonical_and_kinds_apart(self) -> None:
        assert [key_text(k) for k in (1, 1.0, -0.0, 0.1, 1e20, True, "1", "~1")] == [
            "~1", "~1", "~0", "~0.1", "~100000000000000000000", "~true", "1", '~"~1"',
        ]  # fmt: skip

    @pytest.mark.parametrize("key", [math.nan, math.inf, -math.inf])
    def test_a_number_that_is_not_finite_has_no_text(self, key: float) -> None:
        with pytest.raises(ValueError, match="finite"):
            key_text(key)


def _rec(doc: dict[str, Any], seq: int) -> Record:
    return Record(orjson.dumps(doc), "p", str(seq), shard_id="s0", index=seq)


def _results(step: Window | SessionWindow, keys: list[Any]) -> dict[str, Any]:
    """Each key's record at time 5, then one far later that closes them: window_id -> key."""
    chain = Chain([Step.of("processors[0].window", step)])
    docs = [{"user": k, "ts": 5} for k in keys] + [{"user": "zz", "ts": 10_000}]
    out = chain.run([_rec(d, i + 1) for i, d in enumerate(docs)])
    assert out.failures == []
    ids = [r.json["window_id"] for r in out.records]
    assert len(ids) == len(set(ids))  # one result per window_id
    return {r.json["window_id"]: (r.json["key"], r.json["n"]) for r in out.records}


COUNT = {"key": "user", "field": "ts", "aggregate": {"n": "count"}, "state": "memory",
         "function": "fn"}  # fmt: skip
STEPS = {
    "tumbling": lambda: Window(size_s=60, **COUNT),
    "hopping": lambda: Window(size_s=60, slide_s=30, **COUNT),
    "session": lambda: SessionWindow(gap_s=60, **COUNT),
}


@pytest.mark.parametrize("kind", sorted(STEPS))
class TestWindowIds:
    def test_the_number_1_the_string_1_and_true_are_three_windows_with_three_ids(
        self, kind: str
    ) -> None:
        results = _results(STEPS[kind](), [1, "1", True, "~1"])
        named = {(w.split("/")[1], v) for w, v in results.items() if "/zz/" not in w}
        assert named == {("~1", (1, 1)), ("1", ("1", 1)), ("~true", (True, 1)),
                         ('~"~1"', ("~1", 1))}  # fmt: skip
        per_key = 2 if kind == "hopping" else 1  # each record is in two hopping windows
        assert sum("/zz/" not in w for w in results) == 4 * per_key

    def test_1_and_1_0_are_one_key_as_in_dynamodb(self, kind: str) -> None:
        results = _results(STEPS[kind](), [1, 1.0, 2.5])
        assert {v for w, v in results.items() if "/zz/" not in w} == {(1, 2), (2.5, 1)}

    def test_a_key_that_is_not_a_finite_number_is_dead_lettered(self, kind: str) -> None:
        chain = Chain([Step.of("processors[0].window", STEPS[kind]())])
        record = Record(b"{}", "p", "1", shard_id="s0")
        record.set_json({"user": math.nan, "ts": 5})  # not from JSON: a plugin step's
        out = chain.run([record])
        assert len(out.failures) == 1
        assert "finite" in str(out.failures[0].error)


class TestTimesThatAreNoTime:
    """A time a step before the window set to NaN or infinity (orjson never parses one) is
    the record's fault: that record is dead-lettered, and the others of the batch are
    aggregated (it had failed the whole batch as ``int()``'s ValueError; found in review)."""

    @pytest.mark.parametrize("kind", ["tumbling", "session"])
    @pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
    def test_only_that_record_is_dead_lettered(self, kind: str, bad: float) -> None:
        if kind == "tumbling":
            step: Window | SessionWindow = Window(
                key="user", size_s=60, field="ts", aggregate={"n": "count"}, state="memory",
                function="f",
            )
        else:
            step = SessionWindow(
                key="user", gap_s=30, field="ts", aggregate={"n": "count"}, state="memory",
                function="f",
            )
        batch = []
        for i, ts in enumerate([5, bad, 7, 200]):
            r = Record(b"{}", "p", str(i + 1), shard_id="s0", index=i)
            r.set_json({"user": "a", "ts": ts})
            batch.append(r)
        out = Chain([Step.of("processors[0].window", step)]).run(batch)
        assert [(f.record.sequence_number, f.retryable) for f in out.failures] == [("2", False)]
        assert "time field 'ts'" in str(out.failures[0].error)
        assert [(r.get("key"), r.get("n")) for r in out.records] == [("a", 2)]
