"""A shard split while one worker holds the parent and a second worker starts, against a
real moto server with Kinesis's split semantics (``kinesis_split``): does anyone take the
children, is the parent finished exactly once, does every key keep its order?

Two :class:`~stream.esm.mapping.EventSourceMapping` instances share one lease table (worker
ids ``a`` and ``b``) and are driven by ``step()`` in turns on injected clocks: no threads,
no sleeps, the interleaving is the test's.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest

from stream.esm.checkpoints import SHARD_END, LeaseTable
from tests.e2e.test_faults import aws_split_semantics, kinesis_split
from tests.integration.test_checkpoints import Clock
from tests.integration.test_esm import Clock as EpochClock
from tests.integration.test_esm import Recorder, docs, mapping, produce

if TYPE_CHECKING:
    from stream.esm.mapping import EventSourceMapping

pytestmark = pytest.mark.integration

__all__ = ["aws_split_semantics", "kinesis_split"]  # fixtures, defined with the e2e faults

LEASE_S = 6.0


class Workers:
    """Two mappings on one stream and one lease table, stepped in turns."""

    def __init__(self, aws: Any, stream: str, table: str) -> None:
        self.kinesis = aws("kinesis")
        self.ddb = aws("dynamodb")
        self.stream = stream
        self.table = table
        self.epoch = EpochClock()
        self.monotonic = Clock()
        self.seen: dict[str, Recorder] = {}
        self.mappings: dict[str, EventSourceMapping] = {}
        self.leases: dict[str, LeaseTable] = {}

    def start(self, worker_id: str) -> None:
        leases = LeaseTable(
            self.table,
            worker_id,
            client=self.ddb,
            lease_duration_s=LEASE_S,
            now=self.monotonic,
            rng=random.Random(worker_id),
            sleep=lambda _: None,
        )
        leases.ensure_table()
        self.leases[worker_id] = leases
        self.seen[worker_id] = Recorder()
        self.mappings[worker_id] = mapping(
            self.kinesis, self.stream, self.seen[worker_id], leases, self.epoch, size=5
        )

    def step(self, *workers: str) -> None:
        self.epoch.t += 0.25
        self.monotonic.advance(0.25)
        for worker_id in workers:
            self.mappings[worker_id].step()

    def delivered(self) -> list[tuple[str, dict[str, Any]]]:
        return [item for recorder in self.seen.values() for item in recorder.seen]

    def stored(self) -> dict[str, str]:
        return {lease.shard_id: lease.checkpoint for lease in self.leases["b"].leases()}

    def finished(self) -> int:
        return sum(m.stats.shards_finished for m in self.mappings.values())


@pytest.fixture
def one_shard(aws: Any, unique: str) -> str:
    kinesis = aws("kinesis")
    name = f"split-workers-{unique}"
    kinesis.create_stream(StreamName=name, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    return name


def split(kinesis: Any, stream: str) -> tuple[str, list[str]]:
    (parent,) = [s["ShardId"] for s in kinesis.list_shards(StreamName=stream)["Shards"]]
    kinesis.split_shard(StreamName=stream, ShardToSplit=parent, NewStartingHashKey=str(2**127))
    shards = kinesis.list_shards(StreamName=stream)["Shards"]
    children = sorted(s["ShardId"] for s in shards if s.get("ParentShardId") == parent)
    assert len(children) == 2
    return parent, children


def first_order(delivered: list[tuple[str, dict[str, Any]]]) -> dict[str, list[int]]:
    """Per key, the record numbers in the order they were first delivered."""
    order: dict[str, list[int]] = {}
    for event_id in dict.fromkeys(event_id for event_id, _ in delivered):
        doc = dict(reversed(delivered))[event_id]
        order.setdefault(doc["key"], []).append(doc["n"])
    return order


def expected(produced: dict[int, str], parent: str, children: list[str]) -> dict[str, str]:
    last: dict[str, str] = {}
    for place in produced.values():
        shard, seq = place.split(":")
        last[shard] = max(last.get(shard, seq), seq, key=int)
    return {parent: SHARD_END} | {child: last.get(child, "TRIM_HORIZON") for child in children}


def run_until(workers: Workers, done: Any, *ids: str, steps: int = 600) -> None:
    for _ in range(steps):
        workers.step(*ids)
        if done():
            return
    pytest.fail(f"not done after {steps} steps: {workers.stored()}")


@pytest.mark.usefixtures("kinesis_split")
class TestSplitWhileHeld:
    def _begin(self, aws: Any, stream: str, unique: str) -> tuple[Workers, dict[int, str]]:
        workers = Workers(aws, stream, f"split-leases-{unique}")
        produced = produce(workers.kinesis, stream, docs(40, keys=8))
        workers.start("a")
        for _ in range(2):
            workers.step("a")
        assert 0 < len(workers.delivered()) < 40  # a holds the parent, part-way through
        return workers, produced

    def _after_split(self, workers: Workers, produced: dict[int, str]) -> tuple[str, list[str]]:
        parent, children = split(workers.kinesis, workers.stream)
        later = produce(workers.kinesis, workers.stream, docs(40, keys=8, start=40))
        assert {place.split(":")[0] for place in later.values()} == set(children)
        produced.update({40 + n: place for n, place in later.items()})
        return parent, children

    def _check(self, workers: Workers, produced: dict[int, str], *, twice_ok: bool) -> None:
        delivered = workers.delivered()
        ids = [event_id for event_id, _ in delivered]
        assert set(ids) == set(produced.values())  # nothing lost
        if not twice_ok:
            assert max(Counter(ids).values()) == 1
        assert all(ns == sorted(ns) for ns in first_order(delivered).values())
        assert workers.finished() == 1  # the parent finished once, by one worker

    def test_a_second_worker_starting_after_the_split_shares_the_children(
        self, aws, one_shard, unique
    ):
        workers, produced = self._begin(aws, one_shard, unique)
        parent, children = self._after_split(workers, produced)
        workers.start("b")
        want = expected(produced, parent, children)
        run_until(workers, lambda: workers.stored() == want, "a", "b")
        self._check(workers, produced, twice_ok=False)
        assert workers.mappings["a"].stats.shards_finished == 1  # its holder finished it

        def balanced() -> bool:
            leases = workers.leases["b"].leases()
            return {lease.owner for lease in leases if lease.shard_id in children} == {"a", "b"}

        run_until(workers, balanced, "a", "b")  # b, holding nothing, gets a child
        assert workers.stored() == want

    def test_the_parent_released_by_a_stopping_worker_is_finished_by_the_other(
        self, aws, one_shard, unique
    ):
        """a stops cleanly (releases) part-way through the parent, after the split: b,
        which started meanwhile, takes the parent, finishes it, then takes both children."""
        workers, produced = self._begin(aws, one_shard, unique)
        parent, children = self._after_split(workers, produced)
        workers.start("b")
        workers.step("a", "b")
        workers.mappings["a"].release()
        want = expected(produced, parent, children)
        run_until(workers, lambda: workers.stored() == want, "b")
        self._check(workers, produced, twice_ok=False)
        assert workers.mappings["b"].stats.shards_finished == 1

    def test_the_parent_of_a_vanished_worker_is_taken_after_its_lease_and_finished(
        self, aws, one_shard, unique
    ):
        """a stops stepping (killed, no release) with the parent part-read: b takes it
        once it expired on b's clock, reads it from a's checkpoint, finishes it, reads the
        children. Records a handled after its last checkpoint may come twice."""
        workers, produced = self._begin(aws, one_shard, unique)
        parent, children = self._after_split(workers, produced)
        workers.start("b")
        want = expected(produced, parent, children)
        run_until(workers, lambda: workers.stored() == want, "b")
        self._check(workers, produced, twice_ok=True)
        assert workers.mappings["b"].stats.shards_finished == 1
        assert {lease.owner for lease in workers.leases["b"].leases()} <= {None, "b"}
