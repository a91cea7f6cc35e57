"""Lease-table faults the other suites do not try, against a real moto server: a write
applied whose answer is lost and whose retries are then throttled, a table throttling for
longer than the lease duration, and workers whose clocks disagree by more than a lease.

Through :class:`tests.faultproxy.FaultProxy` (clients that make one attempt per call), on
injected clocks (no sleeps). The mapping-level tests drive
:meth:`~stream.esm.mapping.EventSourceMapping.step` and check what the handler saw: every
record at least once, per key in put order, and twice only where the scenario allows it.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest

from stream.esm.checkpoints import LeaseTable
from stream.esm.store import MemoryCheckpoints
from tests.faultproxy import LOST_ACK, THROTTLE, FaultProxy, Request
from tests.integration.fault_fixtures import aws_client
from tests.integration.test_checkpoints import SEQ, SHARDS, Clock, raw_items
from tests.integration.test_esm import Clock as EpochClock
from tests.integration.test_esm import Recorder, docs, drain, kinesis, mapping, produce, stream

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.integration

__all__ = ["kinesis", "stream"]  # fixtures used here, defined with the ESM tests


def checkpoint_write(request: Request) -> bool:
    """An UpdateItem that writes a checkpoint (``SET #cp = :cp``), not a take or renewal."""
    return b'":cp"' in request.body


def renewal(request: Request) -> bool:
    """An UpdateItem that only bumps the counter of a held lease (a renewal)."""
    target = request.headers.get("x-amz-target", "")
    return target.endswith("UpdateItem") and b'"SET #counter = :next"' in request.body


class Counting:
    """A real boto3 client that counts the calls made through it (each reaches moto)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if not callable(method):
            return method

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return method(*args, **kwargs)

        return counted


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    with FaultProxy(moto_endpoint, seed=11) as p:
        yield p


@pytest.fixture
def table(aws: Any, unique: str) -> str:
    name = f"lease-faults-{unique}"
    LeaseTable(name, "setup", client=aws("dynamodb")).ensure_table()
    return name


def worker(proxy: FaultProxy, table: str, worker_id: str, clock: Any, **kw: Any) -> LeaseTable:
    return LeaseTable(
        table,
        worker_id,
        client=aws_client(proxy.url, "dynamodb"),
        now=clock,
        rng=random.Random(worker_id),
        sleep=lambda _: None,
        **kw,
    )


class TestLostAnswerThenThrottled:
    """The first attempt of a write is applied but its answer lost; every retry is then
    throttled, so the call fails. The next write finds the counter moved by its own
    earlier write: that is not a lost lease."""

    def test_the_next_checkpoint_goes_on_from_the_applied_one(self, proxy, table, aws):
        a = worker(proxy, table, "a", Clock())
        a.sync_shards(SHARDS, "trim_horizon")
        lease = a.take()[0]
        proxy.inject(LOST_ACK, times=1, where=checkpoint_write)
        proxy.inject(THROTTLE, times=4, where=checkpoint_write)
        with pytest.raises(Exception, match="still failing after 5 attempts"):
            a.checkpoint(lease, SEQ)
        assert raw_items(aws("dynamodb"), table)[lease.shard_id]["checkpoint"]["S"] == SEQ

        later = str(int(SEQ) + 5)
        written = a.checkpoint(lease, later)  # was LeaseLost "now held by 'a', not by 'a'"

        assert (written.checkpoint, written.owner) == (later, "a")
        assert raw_items(aws("dynamodb"), table)[lease.shard_id]["checkpoint"]["S"] == later
        assert len(a.take()) == 4

    def test_the_same_checkpoint_sent_again_is_stored_once_more_not_lost(self, proxy, table, aws):
        """The mapping, told the write failed, sends the same checkpoint next round."""
        a = worker(proxy, table, "a", Clock())
        a.sync_shards(SHARDS, "trim_horizon")
        lease = a.take()[0]
        proxy.inject(LOST_ACK, times=1, where=checkpoint_write)
        proxy.inject(THROTTLE, times=4, where=checkpoint_write)
        with pytest.raises(Exception, match="still failing"):
            a.checkpoint(lease, SEQ)
        assert a.checkpoint(lease, SEQ).checkpoint == SEQ
        assert raw_items(aws("dynamodb"), table)[lease.shard_id]["checkpoint"]["S"] == SEQ

    def test_a_renewal_applied_unanswered_keeps_the_tenure(self, proxy, table):
        """A lost renewal answer, then throttles: the next round must not drop and re-take
        the lease (a new tenure), or the reader's lease object is refused as stale."""
        clock = Clock()
        a = worker(proxy, table, "a", clock)
        a.sync_shards(SHARDS, "trim_horizon")
        first = {lease.shard_id: lease for lease in a.take()}
        proxy.inject(LOST_ACK, times=1, where=renewal)
        proxy.inject(THROTTLE, times=4, where=renewal)
        clock.advance(3)
        a.take()  # one renewal applied, unanswered, then throttled out
        assert proxy.injected == Counter({"lost_ack": 1, "throttle": 4})
        clock.advance(3)
        assert len(a.take()) == 4
        for lease in first.values():  # the lease objects of the first take still checkpoint
            assert a.checkpoint(lease, SEQ).checkpoint == SEQ

    def test_a_write_by_another_worker_is_still_a_lost_lease(self, proxy, table):
        """The remembered unsure write explains only this worker's own change."""
        clock = Clock()
        a = worker(proxy, table, "a", clock, lease_duration_s=10.0)
        a.sync_shards(SHARDS, "trim_horizon")
        lease = a.take()[0]
        proxy.inject(LOST_ACK, times=1, where=checkpoint_write)
        proxy.inject(THROTTLE, times=4, where=checkpoint_write)
        with pytest.raises(Exception, match="still failing"):
            a.checkpoint(lease, SEQ)
        b = worker(proxy, table, "b", clock, lease_duration_s=10.0)
        b.take()  # sees the leases for the first time
        clock.advance(11)
        b.take()  # a never renewed: every lease expired, b takes them
        with pytest.raises(Exception, match="held by 'b'"):
            a.checkpoint(lease, str(int(SEQ) + 5))


class TestMappingThroughLostAnswers:
    @pytest.mark.parametrize("round_between", [False, True], ids=["settle-next", "round-next"])
    def test_a_lost_checkpoint_answer_then_throttles_redeliver_nothing(
        self, proxy, kinesis, stream, table, round_between
    ):
        """Before the fix the next checkpoint raised LeaseLost: the shard was dropped,
        taken back next round, and every record done since the applied checkpoint was
        delivered again. With a lease round between the failed write and the next one
        (``round-next``), the round's renewal finds the applied checkpoint first: the
        reader must take it for its own, not for another worker's and read again."""
        monotonic = Clock()
        leases = worker(proxy, table, "w1", monotonic)
        produced = produce(kinesis, stream, docs(60))
        clock, seen, reader = EpochClock(), Recorder(), Counting(kinesis)
        esm = mapping(reader, stream, seen, leases, clock, size=8)
        proxy.inject(LOST_ACK, times=1, where=checkpoint_write)
        proxy.inject(THROTTLE, times=4, where=checkpoint_write)
        jumped = False
        for _ in range(40):
            clock.t += 0.25
            monotonic.advance(0.25)
            esm.step()
            if round_between and not jumped and proxy.injected["throttle"] == 4:
                jumped = True  # the next step begins with a lease round (renew interval 3.3 s)
                clock.t += 3.5
                monotonic.advance(3.5)
            if esm.caught_up and len(seen.seen) >= 60:
                break
        assert proxy.injected == Counter({"lost_ack": 1, "throttle": 4})
        assert jumped == round_between
        assert reader.calls["get_shard_iterator"] == 2  # one per shard: no reader restarted
        ids = [event_id for event_id, _ in seen.seen]
        assert Counter(ids).most_common(1)[0][1] == 1  # nothing twice
        assert set(ids) == set(produced.values())
        assert esm.stats.checkpoints > 0


class TestThrottledForAWhile:
    def test_a_table_throttling_past_the_lease_duration_stops_then_resumes_losing_nothing(
        self, proxy, kinesis, stream, table
    ):
        """Every lease-table call throttled for 1.5 lease durations: the mapping reads on
        while its leases are provably its own, then stops invoking; when the throttling
        ends it takes its leases back and resumes after the stored checkpoints. Records
        done but not checkpointed meanwhile may come twice, nothing is lost, per key the
        first deliveries keep the put order."""
        monotonic = Clock()
        leases = worker(proxy, table, "w1", monotonic, lease_duration_s=6.0)
        produced = produce(kinesis, stream, docs(40, keys=5))
        clock, seen = EpochClock(), Recorder()
        esm = mapping(kinesis, stream, seen, leases, clock, size=5)
        clock.t += 0.25
        esm.step()
        assert seen.seen  # the first batches went through
        throttled = proxy.inject(THROTTLE)
        stopped_at = None
        for step in range(36):  # 9 s of the throttle, on both clocks
            clock.t += 0.25
            monotonic.advance(0.25)
            esm.step()
            if stopped_at is None and esm.positions() == {}:
                stopped_at = step
        assert stopped_at is not None  # it stopped once the leases could not be renewed
        during = len(seen.seen)
        produced |= {
            40 + n: place for n, place in produce(kinesis, stream, docs(20, 5, 40)).items()
        }
        for _ in range(4):
            clock.t += 0.25
            monotonic.advance(0.25)
            esm.step()
        assert len(seen.seen) == during  # nothing invoked while it holds nothing
        proxy.remove(throttled)
        assert throttled.fired > 10
        for _ in range(200):
            clock.t += 0.25
            monotonic.advance(0.25)
            esm.step()
            if (
                esm.positions()
                and esm.caught_up
                and {e for e, _ in seen.seen} >= set(produced.values())
            ):
                break
        ids = [event_id for event_id, _ in seen.seen]
        assert set(ids) == set(produced.values())  # nothing lost
        order: dict[str, list[int]] = {}
        firsts = dict(reversed(seen.seen))  # each record's first copy
        for event_id in dict.fromkeys(ids):  # first deliveries, in the order they came
            order.setdefault(firsts[event_id]["key"], []).append(firsts[event_id]["n"])
        assert all(ns == sorted(ns) for ns in order.values())
        stored = {lease.shard_id: lease.checkpoint for lease in leases.leases()}
        last = {}
        for place in produced.values():
            shard, seq = place.split(":")
            last[shard] = max(last.get(shard, seq), seq, key=int)
        assert stored == last, (esm.stats, esm.positions(), proxy.injected, len(ids))


class TestClocksApart:
    def test_workers_whose_clocks_differ_by_far_more_than_a_lease_share_without_overlap(
        self, proxy, table
    ):
        """Expiry is judged by each worker's own clock, so an offset between two machines'
        clocks (here 10 000 lease durations) changes nothing: b takes no live lease of a,
        and takes a's leases one lease duration (on b's clock) after a stops renewing."""
        clock_a, clock_b = Clock(), Clock()
        clock_b.advance(100_000.0)
        a = worker(proxy, table, "a", clock_a, lease_duration_s=10.0)
        b = worker(proxy, table, "b", clock_b, lease_duration_s=10.0, max_leases_to_steal=0)
        a.sync_shards(SHARDS, "trim_horizon")
        assert len(a.take()) == 4
        for _ in range(6):  # 18 s: a renews every 3 s, b looks as often
            clock_a.advance(3)
            clock_b.advance(3)
            assert len(a.take()) == 4
            assert b.take() == []
        clock_b.advance(10.5)  # a stops; on b's clock a full lease duration passes
        taken = b.take()
        assert len(taken) == 4
        clock_a.advance(10.5)
        assert a.held() == []  # on its own clock a knows it may not write any more
        assert {lease.owner for lease in b.leases()} == {"b"}


class TestClockAheadOfTheStream:
    def test_a_worker_clock_ahead_by_more_than_the_record_age_limit_gives_up_nothing_fresh(
        self, kinesis, stream
    ):
        """Record ages compare the worker's clock with Kinesis's arrival stamps. A worker
        whose clock runs two hours ahead (max_record_age_s one hour) must not take records
        put a moment ago for expired and send them to the on-failure destination: Lambda
        measures the age on the service's side."""
        produced = produce(kinesis, stream, docs(20))
        clock, seen, given_up = EpochClock(), Recorder(), []
        clock.t += 7200.0
        esm = mapping(
            kinesis, stream, seen, MemoryCheckpoints(), clock,
            max_record_age_s=3600, on_failure=given_up.append,
        )  # fmt: skip
        drain(esm, clock)
        assert given_up == []
        assert {event_id for event_id, _ in seen.seen} == set(produced.values())


class TestLostFinish:
    def test_a_finish_applied_unanswered_then_sent_again_is_done_not_a_lost_lease(
        self, proxy, table, aws
    ):
        """A parent shard's SHARD_END applied, its answer lost, the retries throttled: the
        mapping finishes again next round. That must report the shard finished (not
        LeaseLost), and its children must become eligible."""
        from stream.esm.checkpoints import SHARD_END, ShardInfo  # noqa: PLC0415

        clock = Clock()
        a = worker(proxy, table, "a", clock)
        tree = [ShardInfo("shardId-0"), ShardInfo("shardId-1", parent_shard_id="shardId-0")]
        a.sync_shards(tree, "trim_horizon")
        (parent,) = a.take()
        proxy.inject(LOST_ACK, times=1, where=checkpoint_write)
        proxy.inject(THROTTLE, times=4, where=checkpoint_write)
        with pytest.raises(Exception, match="still failing after 5 attempts"):
            a.finish(parent)

        done = a.finish(parent)

        assert (done.checkpoint, done.owner) == (SHARD_END, None)
        items = raw_items(aws("dynamodb"), table)
        assert items["shardId-0"]["checkpoint"]["S"] == SHARD_END
        assert [lease.shard_id for lease in a.take()] == ["shardId-1"]


class TestReadsThrottled:
    def test_a_table_throttling_only_its_reads_keeps_the_leases_renewed(
        self, proxy, kinesis, stream, table
    ):
        """DynamoDB throttles reads and writes apart (their capacities are separate). With
        every Scan throttled for two lease durations the renewals (UpdateItem) still go
        through: the mapping must keep its shards and go on delivering, not let its leases
        run out because the round's shard sync, a Scan, failed first."""
        monotonic = Clock()
        leases = worker(proxy, table, "w1", monotonic, lease_duration_s=6.0)
        produced = produce(kinesis, stream, docs(20))
        clock, seen = EpochClock(), Recorder()
        esm = mapping(kinesis, stream, seen, leases, clock, size=5)
        drain(esm, clock)
        throttled = proxy.inject(THROTTLE, target="Scan")
        produced |= {20 + n: p for n, p in produce(kinesis, stream, docs(20, start=20)).items()}
        for _ in range(48):  # 12 s: two lease durations, four lease rounds
            clock.t += 0.25
            monotonic.advance(0.25)
            esm.step()
        assert throttled.fired >= 10
        assert len(esm.positions()) == 2  # both shards still held
        ids = [event_id for event_id, _ in seen.seen]
        assert set(ids) == set(produced.values())  # delivered during the throttle
        assert max(Counter(ids).values()) == 1


class TestReleaseAfterALostAnswer:
    def test_a_stop_after_an_unanswered_checkpoint_still_releases_the_lease(
        self, proxy, table, aws
    ):
        """The last checkpoint of a clean stop applied, its answer lost, the retries
        throttled; then the release. It must leave the lease without owner (another
        worker takes it at once), not give up because the counter moved."""
        a = worker(proxy, table, "a", Clock())
        a.sync_shards(SHARDS, "trim_horizon")
        lease = a.take()[0]
        proxy.inject(LOST_ACK, times=1, where=checkpoint_write)
        proxy.inject(THROTTLE, times=4, where=checkpoint_write)
        with pytest.raises(Exception, match="still failing"):
            a.checkpoint(lease, SEQ)

        a.release(lease)

        item = raw_items(aws("dynamodb"), table)[lease.shard_id]
        assert "leaseOwner" not in item
        assert item["checkpoint"]["S"] == SEQ
