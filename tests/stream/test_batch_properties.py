"""Properties of the batch fold under Lambda's redelivery (DESIGN.md, "Semantics").

For any batch, any ordering policy and any pattern of transient failures (in a processor,
in a sink, in the dead-letter sink), replaying the batch from the lowest reported sequence
number until nothing is reported gives:

(a) the same keyed sink state as one clean pass;
(b) per key, no sink applies a record before the earlier records of that key that it
    receives (policies strict and per_key);
(c) every record applied to all its sinks, or dead-lettered, or dropped by a filter.

And every response names only sequence numbers present in the batch.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from processors.chain import Chain, Step
from processors.filter import Filter
from processors.route import Route
from sinks.base import Ordering
from sinks.memory import MemorySink
from stream.batch import BatchRunner
from stream.event import records_from_event
from stream.exceptions import RetryableError
from stream.overlap import overlapping
from stream.testing import EventFactory

if TYPE_CHECKING:
    from stream.records import Record

KEYS = ["k0", "k1", "k2"]
SINKS = ["A", "B"]


class Flaky:
    """A processor that fails retryably the first ``plan[position]`` times it sees a record."""

    def __init__(self, plan: dict[tuple[str, int], int]) -> None:
        self.plan = plan
        self.seen: Counter[tuple[str, int]] = Counter()

    def __call__(self, record: Record) -> Record:
        where = (record.sequence_number, record.sub_sequence_number)
        self.seen[where] += 1
        if self.seen[where] <= self.plan.get(where, 0):
            msg = "injected transient failure"
            raise RetryableError(msg)
        return record


user_record = st.fixed_dictionaries(
    {
        "key": st.sampled_from(KEYS),
        "to": st.lists(st.sampled_from(SINKS), max_size=2, unique=True),
        "kind": st.sampled_from(["json", "json", "json", "json", "poison", "skip"]),
        "chain_failures": st.integers(0, 2),
        "sink_failures": st.integers(0, 2),
        "sink_permanent": st.sampled_from([False, False, False, True]),
        "dlq_failures": st.integers(0, 1),
    }
)
entry = st.one_of(
    st.lists(user_record, min_size=1, max_size=1).map(lambda rs: ("plain", rs)),
    st.lists(user_record, min_size=1, max_size=4).map(lambda rs: ("aggregate", rs)),
)


def _data(i: int, spec: dict[str, Any]) -> bytes:
    if spec["kind"] == "poison":
        return b"\xff not json"
    return orjson_dumps({"n": i, "to": spec["to"], "kind": spec["kind"]})


def orjson_dumps(doc: Any) -> bytes:
    import orjson  # noqa: PLC0415

    return orjson.dumps(doc)


def build_event(
    entries: list[tuple[str, list[dict[str, Any]]]],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    factory = EventFactory()
    records = []
    specs: list[dict[str, Any]] = []
    n = 0
    for kind, users in entries:
        pairs = []
        for spec in users:
            pairs.append((spec["key"], _data(n, spec)))
            specs.append(spec)
            n += 1
        if kind == "plain":
            records.append(factory.raw(pairs[0][1], pairs[0][0]))
        else:
            records.append(factory.aggregate(pairs))
    return factory.event(records), specs


class World:
    """The sinks and failure plans of one run; ``transient=False`` gives the clean pass."""

    def __init__(
        self,
        event: dict[str, Any],
        specs: list[dict[str, Any]],
        ordering: Ordering,
        transient: bool,
    ) -> None:
        positions = [(r.sequence_number, r.sub_sequence_number) for r in records_from_event(event)]
        self.spec_at = dict(zip(positions, specs, strict=True))
        chain_plan = {p: s["chain_failures"] for p, s in self.spec_at.items()} if transient else {}
        self.flaky = Flaky(chain_plan)

        def fail(sink: str):
            def decide(record: Record, attempt: int) -> str | None:
                spec = self.spec_at[(record.sequence_number, record.sub_sequence_number)]
                if sink == "DLQ":
                    return "retryable" if transient and attempt < spec["dlq_failures"] else None
                if spec["sink_permanent"] and sink == "A":
                    return "permanent"
                if transient and attempt < spec["sink_failures"]:
                    return "retryable"
                return None

            return decide

        self.sinks = {name: MemorySink(name, fail(name), max_batch=3) for name in [*SINKS, "DLQ"]}
        chain = Chain(
            [
                Step.of("processors[0].flaky", self.flaky),
                Step.of("processors[1].filter", Filter(expr="kind != 'skip'")),
                Step.of(
                    "processors[2].route",
                    Route([{"when": {"to": [s]}, "to": [s]} for s in SINKS], mode="all"),
                ),
            ]
        )
        self.runner = BatchRunner(
            chain, self.sinks, on_failure="DLQ", ordering=ordering, function="f"
        )

    def deliver(self, event: dict[str, Any]) -> int:
        """Deliver like Lambda: resume from the lowest reported sequence number. Returns rounds."""
        entries = event["Records"]
        present = {e["kinesis"]["sequenceNumber"] for e in entries}
        for rounds in range(1, 200):
            response = self.runner.run(records_from_event({"Records": entries})).response
            failures = [f["itemIdentifier"] for f in response["batchItemFailures"]]
            assert set(failures) <= present, "reported a sequence number not in the batch"
            if not failures:
                return rounds
            lowest = min(failures, key=int)
            entries = [e for e in entries if int(e["kinesis"]["sequenceNumber"]) >= int(lowest)]
        raise AssertionError("redelivery did not converge")


def _user(key: str, chain_failures: int) -> dict[str, Any]:
    return {
        "key": key,
        "to": ["A"],
        "kind": "json",
        "chain_failures": chain_failures,
        "sink_failures": 0,
        "sink_permanent": False,
        "dlq_failures": 0,
    }


# both paths: the sinks' calls in waves at once (stream.overlap), and every call in turn
@pytest.mark.parametrize("concurrent", [True, False])
@settings(max_examples=300, deadline=None)
@given(entries=st.lists(entry, min_size=1, max_size=12), ordering=st.sampled_from(list(Ordering)))
@example(
    entries=[("plain", [_user("k0", 1)]), ("plain", [_user("k0", 0)])], ordering=Ordering.PER_KEY
)
def test_replay_until_clean_matches_one_clean_pass(entries, ordering, concurrent):
    with overlapping(concurrent):
        _replay_until_clean_matches_one_clean_pass(entries, ordering)


def _replay_until_clean_matches_one_clean_pass(entries, ordering):
    event, specs = build_event(entries)
    clean = World(event, specs, ordering, transient=False)
    assert clean.deliver(event) == 1
    faulty = World(event, specs, ordering, transient=True)
    faulty.deliver(event)

    # (a) keyed state equals one clean pass
    for name in SINKS:
        assert faulty.sinks[name].latest == clean.sinks[name].latest

    # (c) every record applied to all its sinks, or dead-lettered, or filtered out
    dead = {pos for _, pos in faulty.sinks["DLQ"].log}
    for name in SINKS:
        applied = {pos for _, pos in faulty.sinks[name].log}
        expected = {pos for _, pos in clean.sinks[name].log}
        assert expected <= applied
    clean_dead = {pos for _, pos in clean.sinks["DLQ"].log}
    assert clean_dead <= dead
    records = records_from_event(event)
    for rec in records:
        spec = faulty.spec_at[(rec.sequence_number, rec.sub_sequence_number)]
        pos = rec.position
        if spec["kind"] == "poison":
            assert pos in dead
        elif spec["kind"] == "json":
            for name in spec["to"]:
                assert pos in {p for _, p in faulty.sinks[name].log} or pos in dead

    # (b) per-key order: an application never precedes the first application of an
    # earlier record of its key that this sink receives
    if ordering is not Ordering.NONE:
        for name in SINKS:
            wanted: dict[str, list[tuple[int, int]]] = {}
            for key, pos in clean.sinks[name].log:
                wanted.setdefault(key, []).append(pos)
            applied: set[tuple[int, int]] = set()
            for key, pos in faulty.sinks[name].log:
                earlier = [p for p in wanted.get(key, []) if p < pos]
                missing = [p for p in earlier if p not in applied]
                assert not missing, f"sink {name} applied {pos} of {key} before {missing}"
                applied.add(pos)


@pytest.mark.parametrize("concurrent", [True, False])
@settings(deadline=None)
@given(entries=st.lists(entry, min_size=1, max_size=12), ordering=st.sampled_from(list(Ordering)))
def test_clean_pass_reports_nothing_and_dead_letters_every_poison_record(
    entries, ordering, concurrent
):
    event, specs = build_event(entries)
    world = World(event, specs, ordering, transient=False)
    with overlapping(concurrent):
        result = world.runner.run(records_from_event(event))
    assert result.response == {"batchItemFailures": []}
    poison = sum(
        1
        for s in specs
        if s["kind"] == "poison" or (s["sink_permanent"] and "A" in s["to"] and s["kind"] == "json")
    )
    assert len(result.dead_letters) == poison
