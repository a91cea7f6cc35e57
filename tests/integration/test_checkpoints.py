"""The lease and checkpoint table against a real moto server: creation, coordination rounds,
balancing, expiry, checkpoints by the owner only, resharding, and races between workers.

Time is a fake monotonic clock shared by the workers and advanced by the tests (no sleeps);
each test has its own table.
"""

from __future__ import annotations

import random
import threading
from typing import TYPE_CHECKING, Any

import pytest

from stream.esm.checkpoints import (
    SHARD_END,
    TRIM_HORIZON,
    Lease,
    LeaseLost,
    LeaseTable,
    LeaseTableError,
    ShardInfo,
    shards_from_list_shards,
)
from tests.faultproxy import LOST_ACK, THROTTLE, UNAVAILABLE, FaultProxy
from tests.integration.fault_fixtures import aws_client

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.integration

SHARDS = [ShardInfo(f"shardId-{i:012d}") for i in range(4)]
SHARDS_AS_LEASES = [Lease(s.shard_id, TRIM_HORIZON) for s in SHARDS]
SEQ = "49590338271490256608559692538361571095921575989136588898"


class Clock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class Hooked:
    """A real boto3 client with a hook run before (``update_item``) or after (``scan``) a
    call: a way to interleave two workers at an exact point. Every call reaches moto.

    ``atomic``, a lock shared by several clients, makes their updates reach moto one at a
    time. DynamoDB applies a conditional write to an item atomically; moto's threaded server
    does not (two concurrent ``UpdateItem`` calls can both pass their condition: seen once in
    about ten runs of the thread race below). The lock restores what DynamoDB guarantees,
    so a race the test finds is the workers', not moto's."""

    def __init__(self, client: Any, atomic: threading.Lock | None = None) -> None:
        self._client = client
        self._atomic = atomic
        self.before_update: Callable[[], None] | None = None
        self.after_scan: Callable[[], None] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def update_item(self, **kwargs: Any) -> Any:
        hook, self.before_update = self.before_update, None  # once
        if hook:
            hook()
        if self._atomic is None:
            return self._client.update_item(**kwargs)
        with self._atomic:
            return self._client.update_item(**kwargs)

    def scan(self, **kwargs: Any) -> Any:
        page = self._client.scan(**kwargs)
        if self.after_scan:
            self.after_scan()
        return page


@pytest.fixture
def ddb(aws: Any) -> Any:
    return aws("dynamodb")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def table(ddb: Any, unique: str, clock: Clock) -> str:
    name = f"leases-{unique}"
    LeaseTable(name, "setup", client=ddb, now=clock, sleep=clock.advance).ensure_table()
    return name


@pytest.fixture
def worker(ddb: Any, table: str, clock: Clock) -> Callable[..., LeaseTable]:
    def make(worker_id: str, client: Any = None, **kwargs: Any) -> LeaseTable:
        return LeaseTable(
            table,
            worker_id,
            client=client or ddb,
            now=clock,
            rng=random.Random(worker_id),
            sleep=lambda _: None,
            **kwargs,
        )

    return make


def ids(leases: list[Lease]) -> list[str]:
    return [lease.shard_id for lease in leases]


def owners(table: LeaseTable) -> dict[str, str | None]:
    return {lease.shard_id: lease.owner for lease in table.leases()}


def raw_items(ddb: Any, table: str) -> dict[str, dict[str, Any]]:
    items = ddb.scan(TableName=table, ConsistentRead=True)["Items"]
    return {item["leaseKey"]["S"]: item for item in items}


class TestTable:
    def test_ensure_table_creates_an_on_demand_table_keyed_by_lease_key(self, ddb, table):
        described = ddb.describe_table(TableName=table)["Table"]
        assert described["TableStatus"] == "ACTIVE"
        assert described["KeySchema"] == [{"AttributeName": "leaseKey", "KeyType": "HASH"}]
        assert described["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"

    def test_ensure_table_on_an_existing_lease_table_keeps_its_leases(self, worker):
        a = worker("a")
        a.sync_shards(SHARDS, "trim_horizon")
        a.ensure_table()
        assert len(a.leases()) == 4

    def test_ensure_table_refuses_a_table_that_is_not_a_lease_table(self, ddb, unique, clock):
        name = f"other-{unique}"
        ddb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        with pytest.raises(LeaseTableError, match="not a lease table") as caught:
            LeaseTable(name, "a", client=ddb, now=clock).ensure_table()
        assert caught.value.code == "KeySchemaMismatch"

    def test_a_missing_table_is_reported_with_the_fix(self, ddb, unique):
        table = LeaseTable(f"missing-{unique}", "a", client=ddb)
        with pytest.raises(LeaseTableError, match="ensure_table") as caught:
            table.take()
        assert caught.value.code == "ResourceNotFoundException"


class TestSync:
    def test_sync_creates_one_unowned_lease_per_shard_with_the_kcl_attributes(
        self, ddb, table, worker
    ):
        created = worker("a").sync_shards(SHARDS, "trim_horizon")
        assert ids(created) == ids(SHARDS_AS_LEASES)
        items = raw_items(ddb, table)
        assert sorted(items) == ids(SHARDS_AS_LEASES)
        assert items["shardId-000000000000"] == {
            "leaseKey": {"S": "shardId-000000000000"},
            "checkpoint": {"S": "TRIM_HORIZON"},
            "checkpointSubSequenceNumber": {"N": "0"},
            "leaseCounter": {"N": "0"},
            "ownerSwitchesSinceCheckpoint": {"N": "0"},
        }

    def test_syncing_again_creates_nothing_and_keeps_checkpoints(self, worker):
        a = worker("a")
        a.sync_shards(SHARDS, "trim_horizon")
        lease = a.take()[0]
        a.checkpoint(lease, SEQ)
        assert worker("b").sync_shards(SHARDS, "latest") == []
        assert a.leases()[0].checkpoint == SEQ

    def test_children_of_a_leased_shard_start_at_trim_horizon_with_their_parents(
        self, ddb, table, worker
    ):
        a = worker("a")
        a.sync_shards([ShardInfo("p")], "latest")
        split = [
            ShardInfo("p", ending_sequence_number="9"),
            ShardInfo("c1", parent_shard_id="p"),
            ShardInfo("c2", parent_shard_id="p"),
        ]
        assert ids(a.sync_shards(split, "latest")) == ["c1", "c2"]
        leases = {lease.shard_id: lease for lease in a.leases()}
        assert leases["p"].checkpoint == "LATEST"
        assert leases["c1"].checkpoint == leases["c2"].checkpoint == TRIM_HORIZON
        assert leases["c1"].parent_shard_ids == ("p",)
        assert raw_items(ddb, table)["c1"]["parentShardId"] == {"SS": ["p"]}

    def test_a_real_split_creates_the_children_after_their_parent(self, aws, unique, worker):
        kinesis = aws("kinesis")
        stream = f"events-{unique}"
        kinesis.create_stream(StreamName=stream, ShardCount=1)
        a = worker("a")
        a.sync_shards(
            shards_from_list_shards(kinesis.list_shards(StreamName=stream)["Shards"]), "latest"
        )
        (parent,) = a.leases()
        kinesis.split_shard(
            StreamName=stream, ShardToSplit=parent.shard_id, NewStartingHashKey=str(2**127)
        )
        listed = shards_from_list_shards(kinesis.list_shards(StreamName=stream)["Shards"])
        created = a.sync_shards(listed, "latest")
        assert len(created) == 2
        assert all(lease.parent_shard_ids == (parent.shard_id,) for lease in created)
        assert all(lease.checkpoint == TRIM_HORIZON for lease in created)
        assert ids(a.take()) == [parent.shard_id]  # the children wait for their parent


class TestTake:
    def test_one_worker_takes_all_four_leases(self, worker):
        a = worker("a")
        a.sync_shards(SHARDS, "trim_horizon")
        held = a.take()
        assert ids(held) == ids(SHARDS_AS_LEASES)
        assert all(lease.owner == "a" and lease.counter == 1 for lease in held)
        assert set(owners(a).values()) == {"a"}

    def test_a_second_worker_steals_up_to_its_fair_share_over_rounds(self, worker):
        a, b = worker("a"), worker("b")
        a.sync_shards(SHARDS, "trim_horizon")
        a.take()
        counts = []
        for _ in range(4):
            counts.append((len(a.take()), len(b.take())))
        assert counts[0] == (4, 1)  # b steals one at a time (max_leases_to_steal=1)
        assert counts[-1] == counts[-2] == (2, 2)
        assert sorted(owners(a).values()) == ["a", "a", "b", "b"]

    def test_a_worker_steals_several_at_once_when_allowed(self, worker):
        a, b = worker("a"), worker("b", max_leases_to_steal=2)
        a.sync_shards(SHARDS, "trim_horizon")
        a.take()
        assert len(b.take()) == 2
        assert len(a.take()) == 2  # a's renewals of the stolen two failed: dropped
        assert b.take()[0].owner_switches == 1

    def test_leases_of_a_worker_that_stopped_renewing_are_taken_after_expiry(self, worker, clock):
        a, b = worker("a"), worker("b")
        a.sync_shards(SHARDS, "trim_horizon")
        for _ in range(3):
            a.take()
            b.take()
        assert len(a.held()) == len(b.held()) == 2
        seen = []
        for _ in range(4):  # a stops; b goes on every 3 s
            clock.advance(3)
            seen.append(len(b.take()))
        assert seen == [2, 2, 2, 4]  # a's counters unchanged for 12 s > 10 s at the 4th round
        assert set(owners(b).values()) == {"b"}

    def test_a_new_worker_waits_a_lease_duration_before_taking_a_live_looking_lease(
        self, worker, clock
    ):
        a = worker("a")
        a.sync_shards(SHARDS, "trim_horizon")
        a.take()
        c = worker("c", max_leases_to_steal=0)
        assert c.take() == []
        clock.advance(10)
        assert c.take() == []  # not more than the lease duration yet
        clock.advance(0.5)
        assert len(c.take()) == 4

    def test_a_restarted_worker_with_the_same_id_takes_its_leases_back_at_once(self, worker):
        before = worker("a")
        before.sync_shards(SHARDS[:2], "trim_horizon")
        lease = before.take()[0]
        before.checkpoint(lease, SEQ, 3)
        after = worker("a")
        held = after.take()
        assert len(held) == 2
        assert (held[0].checkpoint, held[0].sub_sequence_number) == (SEQ, 3)
        assert held[0].owner_switches == 0  # same owner: no switch
        with pytest.raises(LeaseLost):  # the old process (a zombie) can no longer write
            before.checkpoint(lease, SEQ + "0")
        assert after.leases()[0].checkpoint == SEQ

    def test_a_released_lease_is_taken_by_another_worker_at_once(self, worker):
        a, b = worker("a"), worker("b", max_leases_to_steal=0)
        a.sync_shards(SHARDS, "trim_horizon")
        first = a.take()[0]
        assert b.take() == []
        a.release(first)
        assert owners(a)[first.shard_id] is None
        assert first.shard_id not in ids(a.held())
        a.release(first)  # not held any more: nothing to do
        assert ids(b.take()) == [first.shard_id]

    def test_release_all_leaves_every_lease_unowned(self, worker):
        a = worker("a")
        a.sync_shards(SHARDS[:2], "trim_horizon")
        a.take()
        a.release_all()
        assert a.held() == []
        assert set(owners(a).values()) == {None}

    def test_children_are_not_taken_before_their_parent_finishes(self, worker):
        a, b = worker("a"), worker("b")
        split = [
            ShardInfo("p", ending_sequence_number="9"),
            ShardInfo("c1", parent_shard_id="p"),
            ShardInfo("c2", parent_shard_id="p"),
        ]
        a.sync_shards(split, "trim_horizon")
        parent = a.take()[0]
        assert ids(a.held()) == ["p"]
        assert b.take() == []  # neither the children nor a's only eligible lease
        parent = a.checkpoint(parent, SEQ)
        finished = a.finish(parent)
        assert finished.finished
        assert finished.owner is None
        assert ids(a.take()) == ["c1", "c2"]
        assert len(b.take()) == 1  # balancing resumes on the children
        assert {lease.shard_id: lease.checkpoint for lease in a.leases()}["p"] == SHARD_END

    def test_a_merged_child_waits_for_both_parents(self, worker):
        a = worker("a")
        merge = [
            ShardInfo("p1", ending_sequence_number="9"),
            ShardInfo("p2", ending_sequence_number="9"),
            ShardInfo("c", parent_shard_id="p1", adjacent_parent_shard_id="p2"),
        ]
        a.sync_shards(merge, "trim_horizon")
        p1, p2 = a.take()
        a.finish(p1)
        assert ids(a.take()) == ["p2"]
        a.finish(p2)
        assert ids(a.take()) == ["c"]


class TestCheckpoint:
    def test_the_owner_checkpoints_and_leases_shows_owner_and_checkpoint(self, worker):
        a = worker("a")
        a.sync_shards(SHARDS[:2], "trim_horizon")
        lease = a.take()[1]
        written = a.checkpoint(lease, SEQ, 2)
        assert (written.checkpoint, written.sub_sequence_number) == (SEQ, 2)
        assert written.counter == lease.counter + 1
        shown = {x.shard_id: (x.owner, x.checkpoint) for x in worker("status").leases()}
        assert shown[lease.shard_id] == ("a", SEQ)
        assert shown["shardId-000000000000"] == ("a", TRIM_HORIZON)

    def test_a_lease_read_before_a_renewal_round_still_checkpoints(self, worker):
        a = worker("a")
        a.sync_shards(SHARDS[:1], "trim_horizon")
        lease = a.take()[0]  # a shard reader holds this object
        a.take()  # the coordinator renews meanwhile: the counter moves on
        a.take()
        assert a.checkpoint(lease, SEQ).counter == lease.counter + 3

    def test_a_worker_that_lost_the_lease_cannot_checkpoint_and_writes_nothing(self, worker, clock):
        a, b = worker("a"), worker("b")
        a.sync_shards(SHARDS[:2], "trim_horizon")
        lease = a.take()[0]
        b.take()
        clock.advance(11)  # a stalls (no take) past the lease duration
        b.take()
        assert len(b.held()) == 2
        with pytest.raises(LeaseLost, match="now held by 'b'") as caught:
            a.checkpoint(lease, SEQ)
        assert (caught.value.shard_id, caught.value.owner) == (lease.shard_id, "b")
        stored = b.leases()[0]
        assert (stored.checkpoint, stored.owner) == (TRIM_HORIZON, "b")
        assert stored.owner_switches == 1
        with pytest.raises(LeaseLost):  # and it is no longer held: refused before any write
            a.checkpoint(lease, SEQ)
        with pytest.raises(LeaseLost):
            a.finish(lease)

    def test_a_lease_from_an_earlier_tenure_is_refused(self, worker, clock):
        a, b = worker("a"), worker("b")
        a.sync_shards(SHARDS[:1], "trim_horizon")
        old = a.take()[0]
        b.take()
        clock.advance(11)
        b.take()  # b takes it over from a, then stalls
        a.take()
        clock.advance(11)
        again = a.take()[0]  # a takes it back: a new tenure
        with pytest.raises(LeaseLost):
            a.checkpoint(old, SEQ)
        assert a.checkpoint(again, SEQ).checkpoint == SEQ

    def test_a_checkpoint_resets_the_owner_switches(self, worker):
        a, b = worker("a"), worker("b")
        a.sync_shards(SHARDS[:2], "trim_horizon")
        a.take()
        stolen = b.take()[0]
        assert stolen.owner_switches == 1
        assert b.checkpoint(stolen, SEQ).owner_switches == 0

    def test_a_checkpoint_never_moves_backwards(self, worker):
        a = worker("a")
        a.sync_shards(SHARDS[:1], "trim_horizon")
        lease = a.checkpoint(a.take()[0], SEQ, 5)
        with pytest.raises(ValueError, match="backwards"):
            a.checkpoint(lease, SEQ, 4)
        assert a.checkpoint(lease, SEQ, 5).sub_sequence_number == 5  # same: idempotent
        assert a.leases()[0].sub_sequence_number == 5

    def test_a_resumed_reader_starts_after_the_checkpoint(self, aws, unique, worker):
        kinesis = aws("kinesis")
        stream = f"events-{unique}"
        kinesis.create_stream(StreamName=stream, ShardCount=1)
        put = [
            kinesis.put_record(StreamName=stream, Data=f"r{i}".encode(), PartitionKey="k")
            for i in range(4)
        ]
        a = worker("a")
        a.sync_shards(
            shards_from_list_shards(kinesis.list_shards(StreamName=stream)["Shards"]),
            "trim_horizon",
        )
        a.checkpoint(a.take()[0], put[1]["SequenceNumber"])
        a.release_all()
        resumed = worker("b").take()[0]
        iterator = kinesis.get_shard_iterator(StreamName=stream, **resumed.iterator_request())
        records = kinesis.get_records(ShardIterator=iterator["ShardIterator"])["Records"]
        assert [r["Data"] for r in records] == [b"r2", b"r3"]


class TestRaces:
    def test_of_two_workers_taking_one_expired_lease_exactly_one_wins(self, ddb, worker, clock):
        a = worker("a")
        a.sync_shards(SHARDS[:1], "trim_horizon")
        counter = a.take()[0].counter
        hooked = Hooked(ddb)
        b, c = worker("b", client=hooked, max_leases_to_steal=0), worker("c", max_leases_to_steal=0)
        assert b.take() == c.take() == []
        clock.advance(11)  # a is gone; both see the lease expired
        hooked.before_update = c.take  # c's whole round runs between b's scan and b's write
        assert b.take() == []
        assert ids(c.held()) == [SHARDS[0].shard_id]
        (stored,) = a.leases()
        assert (stored.owner, stored.counter) == ("c", counter + 1)  # one take, one write

    def test_workers_taking_in_threads_never_share_a_lease(self, ddb, worker, clock):
        a = worker("a")
        a.sync_shards(SHARDS, "trim_horizon")
        counters = {lease.shard_id: lease.counter for lease in a.take()}
        atomic = threading.Lock()  # DynamoDB's atomic conditional write (see Hooked)
        clients = [Hooked(ddb, atomic) for _ in range(3)]
        racers = [worker(f"r{i}", client=clients[i], max_leases_to_steal=0) for i in range(3)]
        for racer in racers:
            racer.take()
        clock.advance(11)
        barrier = threading.Barrier(len(racers), timeout=10)
        for client in clients:
            client.after_scan = barrier.wait  # every racer has read before anyone writes
        results: dict[str, list[Lease]] = {}
        errors: list[BaseException] = []

        def run(racer: LeaseTable) -> None:
            try:
                results[racer.worker_id] = racer.take()
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(racer,)) for racer in racers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
        assert not errors
        held = [lease.shard_id for leases in results.values() for lease in leases]
        assert sorted(held) == ids(SHARDS_AS_LEASES)  # every lease once: none twice
        stored = {lease.shard_id: lease for lease in a.leases()}
        for racer_id, leases in results.items():
            for lease in leases:
                assert stored[lease.shard_id].owner == racer_id
        assert {k: v.counter for k, v in stored.items()} == {k: v + 1 for k, v in counters.items()}


class TestFaults:
    """Through the fault proxy, with clients that make one attempt per call."""

    @pytest.fixture
    def proxy(self, moto_endpoint: str) -> Iterator[FaultProxy]:
        with FaultProxy(moto_endpoint, seed=5) as p:
            yield p

    @pytest.fixture
    def faulty(self, proxy: FaultProxy, worker: Callable[..., LeaseTable]) -> LeaseTable:
        a = worker("a", client=aws_client(proxy.url, "dynamodb"))
        a.sync_shards(SHARDS, "trim_horizon")
        return a

    def test_throttled_reads_and_writes_are_retried(self, proxy, faulty):
        proxy.inject(THROTTLE, times=2, target="Scan")
        proxy.inject(THROTTLE, times=2, target="UpdateItem")
        held = faulty.take()
        assert len(held) == 4
        assert faulty.checkpoint(held[0], SEQ).checkpoint == SEQ
        assert proxy.injected["throttle"] == 4

    def test_a_checkpoint_whose_answer_was_lost_is_not_a_lost_lease(self, proxy, faulty):
        lease = faulty.take()[0]
        proxy.inject(LOST_ACK, times=1, target="UpdateItem")
        written = faulty.checkpoint(lease, SEQ, 1)  # applied; the retry finds it done
        assert proxy.injected["lost_ack"] == 1
        assert (written.checkpoint, written.counter) == (SEQ, lease.counter + 1)
        assert faulty.checkpoint(written, SEQ, 2).sub_sequence_number == 2  # still held

    def test_a_take_whose_answer_was_lost_still_holds_the_lease(self, proxy, faulty):
        proxy.inject(LOST_ACK, times=1, target="UpdateItem")
        assert len(faulty.take()) == 4
        assert proxy.injected["lost_ack"] == 1
        assert set(owners(faulty).values()) == {"a"}

    def test_an_unreadable_table_fails_the_round_after_the_renewals(self, proxy, faulty, ddb):
        before = {lease.shard_id: lease.counter for lease in faulty.take()}
        proxy.inject(UNAVAILABLE, target="Scan")
        with pytest.raises(LeaseTableError, match="still failing after 5 attempts") as caught:
            faulty.take()
        assert caught.value.code == "ServiceUnavailable"
        stored = {k: int(v["leaseCounter"]["N"]) for k, v in raw_items(ddb, faulty.table).items()}
        assert stored == {k: v + 1 for k, v in before.items()}  # renewed all the same

    def test_leases_that_cannot_be_renewed_are_let_go_after_the_lease_duration(
        self, proxy, faulty, clock
    ):
        faulty.take()
        rule = proxy.inject(UNAVAILABLE, target="UpdateItem")
        clock.advance(5)
        assert len(faulty.take()) == 4  # renewals failed, but within the lease duration
        clock.advance(6)
        assert faulty.take() == []  # others may take them now: stop reading
        proxy.remove(rule)
        assert len(faulty.take()) == 4  # still in its name: taken back at once

    def test_a_worker_cut_off_from_the_table_holds_nothing_after_the_lease_duration(
        self, proxy, faulty, clock
    ):
        """Issue 19, item 2: every call fails (renewals and the scan), so take() raises
        before it could drop anything; the leases must still expire on the worker's own
        clock, and held() says so without asking the table."""
        assert len(faulty.take()) == 4
        rule = proxy.inject(UNAVAILABLE)
        clock.advance(5)
        with pytest.raises(LeaseTableError):
            faulty.take()
        assert len(faulty.held()) == 4  # within the lease duration: still ours
        clock.advance(6)
        with pytest.raises(LeaseTableError):
            faulty.take()
        assert faulty.held() == []  # another worker may own them now
        proxy.remove(rule)
        assert len(faulty.take()) == 4  # reachable again, still in its name: taken back

    def test_a_worker_paused_past_its_lease_holds_nothing_when_it_resumes(self, faulty, clock):
        """A worker stopped (SIGSTOP, a long GC pause) for longer than the lease duration
        holds nothing the moment it resumes, before any call to the table."""
        assert len(faulty.take()) == 4
        clock.advance(10.5)
        assert faulty.held() == []

