"""The lease table's pure logic: items, shard listings, which leases to create, expiry as
one worker sees it, and the balancing decision of a round (with properties: no lease twice,
children after parents, loads end balanced). The table itself is tested against the moto
server in tests/integration/test_checkpoints.py.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.esm.checkpoints import (
    AT_TIMESTAMP,
    LATEST,
    SHARD_END,
    TRIM_HORIZON,
    ExpiryTracker,
    Lease,
    LeaseLost,
    LeaseTable,
    ShardInfo,
    decide_leases,
    leases_to_create,
    shards_from_list_shards,
)

SEQ = "49590338271490256608559692538361571095921575989136588898"


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class NoCalls:
    """A client that must not be used: the call is refused before reaching DynamoDB."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected DynamoDB call: {name}")


def lease(shard_id: str, owner: str | None = None, **kwargs: Any) -> Lease:
    return Lease(shard_id, kwargs.pop("checkpoint", TRIM_HORIZON), owner=owner, **kwargs)


def ids(leases: Any) -> list[str]:
    return sorted(x.shard_id for x in leases)


class TestLease:
    def test_an_item_written_by_the_kcl_reads_back_with_extra_attributes_ignored(self):
        item = {
            "leaseKey": {"S": "shardId-000000000003"},
            "checkpoint": {"S": SEQ},
            "checkpointSubSequenceNumber": {"N": "7"},
            "leaseOwner": {"S": "host-1:worker"},
            "leaseCounter": {"N": "42"},
            "ownerSwitchesSinceCheckpoint": {"N": "2"},
            "parentShardId": {"SS": ["shardId-000000000001", "shardId-000000000000"]},
            "pendingCheckpoint": {"S": SEQ},
            "startingHashKey": {"S": "0"},
        }
        assert Lease.from_item(item) == Lease(
            "shardId-000000000003",
            SEQ,
            sub_sequence_number=7,
            owner="host-1:worker",
            counter=42,
            parent_shard_ids=("shardId-000000000000", "shardId-000000000001"),
            owner_switches=2,
        )

    def test_a_minimal_item_is_unowned_at_counter_zero(self):
        item = {"leaseKey": {"S": "s0"}, "checkpoint": {"S": LATEST}}
        assert Lease.from_item(item) == Lease("s0", LATEST)

    def test_an_item_without_checkpoint_is_not_a_lease(self):
        with pytest.raises(ValueError, match="not a lease table"):
            Lease.from_item({"leaseKey": {"S": "s0"}})

    def test_finished_means_shard_end(self):
        assert lease("s0", checkpoint=SHARD_END).finished
        assert not lease("s0", checkpoint=SEQ).finished

    @pytest.mark.parametrize(
        ("checkpoint", "sub", "expected"),
        [
            (SEQ, 0, {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": SEQ}),
            (SEQ, 4, {"ShardIteratorType": "AT_SEQUENCE_NUMBER", "StartingSequenceNumber": SEQ}),
            (TRIM_HORIZON, 0, {"ShardIteratorType": "TRIM_HORIZON"}),
            (LATEST, 0, {"ShardIteratorType": "LATEST"}),
        ],
    )
    def test_the_iterator_resumes_after_the_checkpoint(self, checkpoint, sub, expected):
        request = Lease("s0", checkpoint, sub).iterator_request()
        assert request == {"ShardId": "s0", **expected}

    def test_part_way_through_an_aggregate_the_processed_user_records_are_skipped(self):
        assert Lease("s0", SEQ, 4).skip_through == 4
        assert Lease("s0", SEQ, 0).skip_through is None
        assert Lease("s0", TRIM_HORIZON, 4).skip_through is None

    def test_at_timestamp_needs_the_functions_timestamp(self):
        with pytest.raises(ValueError, match="timestamp"):
            Lease("s0", AT_TIMESTAMP).iterator_request()
        request = Lease("s0", AT_TIMESTAMP).iterator_request(timestamp=1700000000.0)
        assert request["Timestamp"] == 1700000000.0

    def test_a_finished_shard_has_no_iterator(self):
        with pytest.raises(ValueError, match="finished"):
            Lease("s0", SHARD_END).iterator_request()


class TestShardsFromListShards:
    def test_a_split_listing_gives_parents_hash_ranges_and_ends(self):
        listing = [
            {
                "ShardId": "shardId-000000000000",
                "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": str(2**128 - 1)},
                "SequenceNumberRange": {
                    "StartingSequenceNumber": "1",
                    "EndingSequenceNumber": "99",
                },
            },
            {
                "ShardId": "shardId-000000000001",
                "ParentShardId": "shardId-000000000000",
                "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": str(2**127 - 1)},
                "SequenceNumberRange": {"StartingSequenceNumber": "100"},
            },
            {
                "ShardId": "shardId-000000000003",
                "ParentShardId": "shardId-000000000001",
                "AdjacentParentShardId": "shardId-000000000002",
                "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": str(2**128 - 1)},
                "SequenceNumberRange": {"StartingSequenceNumber": "200"},
            },
        ]
        parent, child, merged = shards_from_list_shards(listing)
        assert parent.closed
        assert parent.parents == ()
        assert parent.ending_sequence_number == "99"
        assert not child.closed
        assert child.parents == ("shardId-000000000000",)
        assert child.ending_hash_key == 2**127 - 1
        assert merged.parents == ("shardId-000000000001", "shardId-000000000002")


class TestLeasesToCreate:
    SPLIT = (
        ShardInfo("p", ending_sequence_number="9"),
        ShardInfo("c1", parent_shard_id="p"),
        ShardInfo("c2", parent_shard_id="p"),
    )

    def created(self, shards, existing=(), position="trim_horizon") -> dict[str, str]:
        return {x.shard_id: x.checkpoint for x in leases_to_create(shards, existing, position)}

    def test_a_fresh_table_starts_every_shard_at_the_initial_position(self):
        assert self.created(self.SPLIT, position="trim_horizon") == dict.fromkeys(
            ["p", "c1", "c2"], TRIM_HORIZON
        )
        assert self.created(self.SPLIT, position="at_timestamp") == dict.fromkeys(
            ["p", "c1", "c2"], AT_TIMESTAMP
        )

    def test_at_latest_closed_shards_get_no_lease_on_a_fresh_table(self):
        assert self.created(self.SPLIT, position="LATEST") == {"c1": LATEST, "c2": LATEST}

    def test_children_of_a_leased_shard_start_at_trim_horizon(self):
        assert self.created(self.SPLIT, existing={"p"}, position="latest") == {
            "c1": TRIM_HORIZON,
            "c2": TRIM_HORIZON,
        }

    def test_every_descendant_of_a_leased_shard_starts_at_trim_horizon(self):
        two_reshards = [
            ShardInfo("g", parent_shard_id="c", adjacent_parent_shard_id="x"),
            ShardInfo("c", parent_shard_id="p", ending_sequence_number="9"),
            ShardInfo("x", ending_sequence_number="9"),
        ]
        assert self.created(two_reshards, existing={"p"}, position="latest") == {
            "c": TRIM_HORIZON,  # closed, but its parent was being read: read it all
            "g": TRIM_HORIZON,
        }

    def test_parents_are_created_before_their_children_whatever_the_listing_order(self):
        shards = [
            ShardInfo("a-child", parent_shard_id="z-parent"),
            ShardInfo("z-parent", ending_sequence_number="9"),
        ]
        assert list(self.created(shards)) == ["z-parent", "a-child"]

    def test_parents_are_stored_with_the_lease(self):
        (created,) = leases_to_create(
            [ShardInfo("m", parent_shard_id="b", adjacent_parent_shard_id="a")], {"a", "b"}, LATEST
        )
        assert created.parent_shard_ids == ("b", "a")
        assert created.owner is None
        assert created.counter == 0

    def test_an_unknown_position_names_the_allowed_ones(self):
        with pytest.raises(ValueError, match="trim_horizon, latest, at_timestamp"):
            leases_to_create(self.SPLIT, (), "earliest")

    @given(
        parents=st.lists(st.integers(min_value=-1, max_value=20), max_size=20),
        closed=st.lists(st.booleans(), min_size=20, max_size=20),
        existing=st.sets(st.integers(min_value=0, max_value=19)),
        position=st.sampled_from(["trim_horizon", "latest", "at_timestamp"]),
        seed=st.integers(),
    )
    def test_new_leases_are_unique_new_and_after_their_parents(
        self, parents, closed, existing, position, seed
    ):
        # shard i's parent is an earlier shard (a forest), given in a shuffled order
        shards = [
            ShardInfo(
                f"s{i}",
                parent_shard_id=f"s{p % i}" if p >= 0 and i else None,
                ending_sequence_number="9" if closed[i] else None,
            )
            for i, p in enumerate(parents)
        ]
        random.Random(seed).shuffle(shards)
        have = {f"s{i}" for i in existing}
        created = leases_to_create(shards, have, position)
        order = [x.shard_id for x in created]
        assert len(order) == len(set(order))
        assert not set(order) & have
        for n, new in enumerate(created):
            for parent in new.parent_shard_ids:
                assert parent not in order[n:]  # a parent created is created first
            if position == "latest" and new.checkpoint == LATEST:
                assert not next(s for s in shards if s.shard_id == new.shard_id).closed


class TestExpiryTracker:
    def test_a_lease_seen_for_the_first_time_counts_as_just_renewed(self):
        clock = Clock()
        tracker = ExpiryTracker(10.0, clock)
        clock.t = 1_000_000.0
        assert tracker.observe([lease("s0", "a", counter=5)]) == frozenset()

    def test_a_counter_unchanged_for_more_than_the_duration_is_expired(self):
        clock = Clock()
        tracker = ExpiryTracker(10.0, clock)
        tracker.observe([lease("s0", "a", counter=5)])
        clock.t = 10.0
        assert tracker.observe([lease("s0", "a", counter=5)]) == frozenset()  # not more
        clock.t = 10.001
        assert tracker.observe([lease("s0", "a", counter=5)]) == {"s0"}

    def test_a_counter_change_starts_the_duration_again(self):
        clock = Clock()
        tracker = ExpiryTracker(10.0, clock)
        tracker.observe([lease("s0", "a", counter=5)])
        clock.t = 9.0
        tracker.observe([lease("s0", "a", counter=6)])
        clock.t = 18.0
        assert tracker.observe([lease("s0", "a", counter=6)]) == frozenset()
        clock.t = 19.5
        assert tracker.observe([lease("s0", "a", counter=6)]) == {"s0"}

    def test_unowned_leases_are_never_reported_expired(self):
        clock = Clock()
        tracker = ExpiryTracker(1.0, clock)
        tracker.observe([lease("s0")])
        clock.t = 100.0
        assert tracker.observe([lease("s0")]) == frozenset()

    def test_a_lease_gone_from_the_table_is_forgotten(self):
        clock = Clock()
        tracker = ExpiryTracker(10.0, clock)
        tracker.observe([lease("s0", "a")])
        tracker.observe([])
        clock.t = 50.0
        assert tracker.observe([lease("s0", "a")]) == frozenset()  # seen anew


def plan(leases, me="me", held=(), expired=(), steal=1, seed=0):
    return decide_leases(
        leases,
        me,
        held=set(held),
        expired=set(expired),
        max_leases_to_steal=steal,
        rng=random.Random(seed),
    )


class TestPlanRound:
    def test_an_only_worker_takes_every_unowned_lease(self):
        result = plan([lease(f"s{i}") for i in range(4)])
        assert result.target == 4
        assert ids(result.take) == ["s0", "s1", "s2", "s3"]
        assert result.steal == ()

    def test_free_leases_are_taken_only_up_to_the_fair_share(self):
        leases = [lease("s0", "b"), lease("s1"), lease("s2"), lease("s3")]
        result = plan(leases)
        assert result.target == 2
        assert len(result.take) == 2
        assert "s0" not in ids(result.take)

    def test_expired_leases_are_free_and_their_owner_is_not_a_live_worker(self):
        leases = [lease(f"s{i}", "dead") for i in range(4)]
        result = plan(leases, expired={"s0", "s1", "s2", "s3"})
        assert result.target == 4
        assert ids(result.take) == ["s0", "s1", "s2", "s3"]

    def test_no_steal_while_free_leases_exist(self):
        leases = [lease("s0", "b"), lease("s1", "b"), lease("s2", "b"), lease("s3", "dead")]
        result = plan(leases, expired={"s3"})
        assert ids(result.take) == ["s3"]
        assert result.steal == ()

    def test_a_worker_below_its_share_steals_from_the_busiest(self):
        leases = [lease("s0", "b"), lease("s1", "b"), lease("s2", "b")] + [
            lease(f"t{i}", "c") for i in range(5)
        ]
        result = plan(leases)
        assert result.target == 3
        assert [x.owner for x in result.steal] == ["c"]

    def test_steals_are_bounded_by_max_leases_to_steal_and_by_the_surplus(self):
        leases = [lease(f"s{i}", "b") for i in range(6)]
        assert len(plan(leases, steal=5).steal) == 3  # b keeps its share of 3
        assert len(plan(leases, steal=2).steal) == 2
        assert plan(leases, steal=0).steal == ()

    def test_one_is_stolen_from_a_worker_at_its_share_when_two_or_more_are_needed(self):
        leases = [lease("s0", "b"), lease("s1", "b"), lease("s2", "c"), lease("s3", "c")]
        result = plan(leases, steal=3)  # 4 leases, 3 workers: share 2, b and c at 2, me 0
        assert result.target == 2
        assert len(result.steal) == 1  # ends 2/1/1

    def test_no_steal_from_a_worker_at_its_share_when_one_is_needed(self):
        leases = [lease("s0", "b"), lease("s1", "b"), lease("s2", "me"), lease("s3", "c")]
        result = plan(leases, held={"s2"})  # 4 leases, 3 workers: share 2, b has 2
        assert (result.target, result.steal) == (2, ())

    def test_a_worker_at_its_share_takes_nothing(self):
        leases = [lease("s0", "b"), lease("s1", "me"), lease("s2")]
        result = plan(leases, held={"s1"})
        assert result.target == 2
        assert len(result.take) == 1
        full = plan([*leases[:2], lease("s2", "me")], held={"s1", "s2"})
        assert full.leases == ()

    def test_own_leases_not_held_are_taken_back_beyond_the_share(self):
        leases = [lease(f"s{i}", "me") for i in range(4)] + [lease("t0", "b")]
        result = plan(leases, held=())
        assert ids(result.adopt) == ["s0", "s1", "s2", "s3"]
        assert result.take == result.steal == ()

    def test_children_wait_for_every_parent_to_finish(self):
        leases = [
            lease("p1", checkpoint=SHARD_END),
            lease("p2", "b"),
            lease("c", parent_shard_ids=("p1", "p2")),
        ]
        assert ids(plan(leases).leases) == []  # p2 is b's; c waits for p2
        leases[1] = lease("p2", checkpoint=SHARD_END)
        assert ids(plan(leases).leases) == ["c"]

    def test_a_parent_gone_from_the_table_counts_as_finished(self):
        assert ids(plan([lease("c", parent_shard_ids=("gone",))]).take) == ["c"]

    def test_waiting_children_do_not_count_in_the_fair_share(self):
        parents = [lease(f"p{i}", "b") for i in range(4)]
        children = [lease(f"c{i}", parent_shard_ids=(f"p{i}",)) for i in range(4)]
        result = plan(parents + children, seed=1)
        assert result.target == 2
        balanced = [lease("p0", "me"), *parents[1:3], lease("p3", "me"), *children]
        assert plan(balanced, held={"p0", "p3"}).leases == ()  # 2/2 stays: no 3/1 stall

    def test_finished_leases_are_never_taken_nor_counted(self):
        leases = [lease(f"s{i}", checkpoint=SHARD_END) for i in range(3)] + [lease("s3", "b")]
        result = plan(leases)
        assert result.target == 1  # one eligible lease, two workers
        assert result.leases == ()

    def test_an_empty_table_plans_nothing(self):
        assert plan([]).leases == ()

    @given(
        owners=st.lists(st.sampled_from([None, "me", "b", "c", "d"]), max_size=12),
        held_mask=st.lists(st.booleans(), min_size=12, max_size=12),
        expired_mask=st.lists(st.booleans(), min_size=12, max_size=12),
        steal=st.integers(min_value=0, max_value=3),
        seed=st.integers(),
    )
    def test_a_plan_never_takes_a_live_workers_lease_except_by_bounded_steals(
        self, owners, held_mask, expired_mask, steal, seed
    ):
        leases = [lease(f"s{i:02d}", owner) for i, owner in enumerate(owners)]
        held = {
            x.shard_id for x, h in zip(leases, held_mask, strict=False) if h and x.owner == "me"
        }
        expired = {x.shard_id for x, e in zip(leases, expired_mask, strict=False) if e}
        result = plan(leases, held=held, expired=expired, steal=steal, seed=seed)
        planned = [x.shard_id for x in result.leases]
        assert len(planned) == len(set(planned))
        assert not set(planned) & held
        assert all(x.shard_id in expired or x.owner is None for x in result.take)
        assert len(result.steal) <= steal
        assert len({x.owner for x in result.steal}) <= 1
        assert not result.steal or result.take == ()
        mine = sum(1 for x in leases if x.owner == "me")
        assert mine + len(result.take) + len(result.steal) <= max(result.target, mine)

    @given(
        n=st.integers(min_value=0, max_value=12),
        workers=st.integers(min_value=1, max_value=5),
        start=st.lists(st.integers(min_value=-1, max_value=4), min_size=12, max_size=12),
        steal=st.integers(min_value=1, max_value=3),
        seed=st.integers(),
    )
    def test_workers_taking_in_turns_end_balanced_within_one(self, n, workers, start, steal, seed):
        names = [f"w{i}" for i in range(workers)]
        owner: dict[str, str | None] = {
            f"s{i:02d}": (names[start[i]] if 0 <= start[i] < workers else None) for i in range(n)
        }
        rng = random.Random(seed)
        for _ in range(4 * n + 4):  # rounds: every worker once, in a random order
            order = names[:]
            rng.shuffle(order)
            for name in order:
                table = [lease(k, v) for k, v in sorted(owner.items())]
                mine = {k for k, v in owner.items() if v == name}
                result = plan(table, me=name, held=mine, steal=steal, seed=rng.random())
                for taken in result.leases:
                    owner[taken.shard_id] = name
        loads = Counter(owner.values())
        assert None not in loads  # every lease is owned
        counts = [loads.get(name, 0) for name in names]
        assert max(counts) - min(counts) <= 1 or n == 0
        assert max(counts, default=0) == math.ceil(n / workers)


class TestLeaseTableRefusesBeforeAnyCall:
    def table(self, **kwargs: Any) -> LeaseTable:
        return LeaseTable("leases", "me", client=NoCalls(), **kwargs)

    def test_a_worker_needs_an_id_and_a_positive_lease_duration(self):
        with pytest.raises(ValueError, match="worker_id"):
            LeaseTable("leases", "")
        with pytest.raises(ValueError, match="lease_duration_s"):
            LeaseTable("leases", "me", lease_duration_s=0)

    def test_the_renew_interval_is_a_third_of_the_lease_duration(self):
        assert self.table(lease_duration_s=9.0).renew_interval_s == 3.0

    @pytest.mark.parametrize(("sequence_number", "sub"), [("LATEST", 0), ("12a", 0), ("1", -1)])
    def test_a_checkpoint_must_be_a_sequence_number(self, sequence_number, sub):
        with pytest.raises(ValueError, match="finish"):
            self.table().checkpoint(lease("s0", "me"), sequence_number, sub)

    def test_a_lease_not_held_is_neither_checkpointed_nor_finished(self):
        table = self.table()
        with pytest.raises(LeaseLost, match="'s0'") as caught:
            table.checkpoint(lease("s0", "me"), SEQ)
        assert (caught.value.shard_id, caught.value.worker_id) == ("s0", "me")
        with pytest.raises(LeaseLost):
            table.finish(lease("s0", "me"))

    def test_releasing_a_lease_not_held_does_nothing(self):
        self.table().release(lease("s0", "me"))

    def test_an_unknown_initial_position_is_refused(self):
        with pytest.raises(ValueError, match="starting_position"):
            self.table().sync_shards([ShardInfo("s0")], "earliest")
