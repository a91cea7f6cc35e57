"""Lanes mode with two processes at once (issue 16; the bug lanesrun's workers run found:
rows counting fewer records than the reference, every record delivered once, none late):
two window steps on two ``DynamoDBStore`` instances (two Lambda instances, each its own
client, cache and per-shard lock) driven by two real threads at the same time on one moto
table, each thread one lane of shard s0 (its own partition keys, window key = partition
key), many small batches. A barrier between rounds keeps the lanes within a batch of each
other (so no record is late and each window's count is known); within a round the two
batches race for real (no lock between them).

The cause of the loss was moto's, not the protocol's: moto's threaded server checked an
``UpdateItem``'s condition, then parsed its update, then applied it, with no lock, so two
processes' commits on the same ``n`` both passed, and each went on from its own state as
commit ``n + 1`` (:func:`deploy.local.motofix.serialize_dynamodb`). Without that patch,
2 of 40 seeds of this run lost records (one window 7 of 8, 9 of 11, 6 of 10; another a
window never emitted); with it, 0 of 20. The patch's own test
(``test_motofix.py``) fails every time without it; this one is the end-to-end check."""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from processors.chain import Chain, Step
from processors.window import Window, iso
from processors.window_store import DynamoDBStore
from stream.records import Record

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.integration

SIZE = 10
LATENESS = 10


def process(aws: Callable[[str], Any], table: str, prefix: str) -> Window:
    """A lanes-mode window step (``parallelization`` 2) on its own store and client."""
    store = DynamoDBStore(table, prefix, LATENESS, SIZE, client=aws("dynamodb"),
                          now=lambda: 10_000.0, high_water=True)  # fmt: skip
    return Window(key="user", size_s=SIZE, field="ts", aggregate={"n": "count"},
                  allowed_lateness_s=LATENESS, function="f", store=store, quiet_s=None,
                  parallelization=2)  # fmt: skip


def run(step: Window, records: list[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """``(sequence number, document)`` records of shard s0 through the step (retried
    whole on a retryable failure, as Lambda would, at most 5 times): its results."""
    recs = [Record(orjson.dumps(d), d["user"], str(seq), shard_id="s0", index=i)
            for i, (seq, d) in enumerate(records)]  # fmt: skip
    for _ in range(5):
        out = Chain([Step.of("processors[0].window", step)]).run(recs)
        if not out.failures:
            return [r.as_dict() for r in out.records]
    pytest.fail(f"a batch failed 5 times: {out.failures}")


def lanes_once(aws: Callable[[str], Any], table: str, seed: int, rounds: int = 30) -> list[str]:
    """One run: two lanes (keys a*, b*) over two processes in two threads, ``rounds``
    batches each; then a last record far ahead closes every window. Returns what differs
    from the reference (each window's count), empty when none."""
    rnd = random.Random(seed)
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    steps = [process(aws, table, prefix), process(aws, table, prefix)]
    keys = [[f"a{i}" for i in range(4)], [f"b{i}" for i in range(4)]]
    batches: list[list[list[tuple[int, dict[str, Any]]]]] = [[], []]
    expected: Counter[str] = Counter()
    for lane in (0, 1):
        i = 0
        for at in range(rounds):
            batch = []
            for j in range(rnd.randint(2, 8)):
                user = rnd.choice(keys[lane])
                ts = at * 2.0 + j * 0.25  # the lanes' rounds within the lateness
                batch.append((2 * i + lane + 1, {"user": user, "ts": ts}))
                expected[f"f/{user}/{iso(int(ts // SIZE) * SIZE)}"] += 1
                i += 1
            batches[lane].append(batch)
    barrier = threading.Barrier(2, timeout=60)
    results: list[list[dict[str, Any]]] = [[], []]
    errors: list[BaseException] = []

    def lane_run(lane: int) -> None:
        try:
            for batch in batches[lane]:
                barrier.wait()
                results[lane] += run(steps[lane], batch)
        except BaseException as exc:  # reported by the test
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=lane_run, args=(lane,)) for lane in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    last = 2 * 10_000
    closing = run(steps[0], [(last, {"user": "zz", "ts": 10_000.0})])
    got: dict[str, int] = {}
    for out in [*results[0], *results[1], *closing]:
        wid = out["window_id"]
        assert got.get(wid, out["n"]) == out["n"], (wid, got.get(wid), out["n"])
        got[wid] = out["n"]
    late = sum(step.late for step in steps)
    diffs = [f"{w}: {got.get(w)} of {n}" for w, n in sorted(expected.items()) if got.get(w) != n]
    diffs += [f"{w}: {n}, not in the reference" for w, n in got.items() if w not in expected]
    if late:
        diffs.append(f"{late} late")
    return diffs


@pytest.mark.parametrize("seed", range(3))
def test_two_processes_at_once_lose_no_record(aws, window_table, seed):
    """Each window's count is the number of its key's records in it."""
    assert lanes_once(aws, window_table, seed) == []
