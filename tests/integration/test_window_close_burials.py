"""A closed window's item is buried, not written closed (issue 17), on the session moto
server: with one lane, a commit that lists its open windows' starts writes only the windows
still open (and the shard item), and once it committed puts tombstones over the items of
the windows it closed (``BatchWriteItem``, 25 a call, at once:
:func:`processors.window_starts.dead`; tombstones, not deletes: review 25).
Each test compares the step's results with a twin partition on the old path (its commits
list no starts, so it is read whole and writes its closed windows closed), and counts the
calls.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest

from processors import window_starts
from tests.integration.test_window_starts import (
    Counted,
    minute,
    run,
    shard_item,
    step,
    unlist,
)
from tests.integration.test_window_state import items
from tests.integration.test_window_tick import on
from tests.integration.test_window_tick import step as ticking_step

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.integration

USERS = 30  # 30 closed windows a minute: two BatchWriteItem calls (25 + 5)


@contextmanager
def old_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The commits inside list no starts (as past ``STARTS_MAX``): read whole, their
    closed windows written closed with a TTL, none buried: the path before issue 17."""
    with monkeypatch.context() as patched:
        patched.setattr(window_starts, "STARTS_MAX", -1)
        yield


class Recorded:
    """The real client, recording each ``PutItem``'s sort key and each ``BatchWriteItem``'s
    tombstones' sort keys (``deletes``: the items they replace); ``refuse`` makes the next
    ``BatchWriteItem`` calls fail (a ``ClientError``), ``unprocess`` makes them do nothing
    and hand every item back as ``UnprocessedItems`` (DynamoDB's answer under
    throttling)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.puts: list[str] = []
        self.deletes: list[list[str]] = []
        self.refuse = 0
        self.unprocess = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def put_item(self, **request: Any) -> Any:
        self.puts.append(request["Item"]["window"]["S"])
        return self.client.put_item(**request)

    def batch_write_item(self, **request: Any) -> Any:
        keys = [r["PutRequest"]["Item"]["window"]["S"]
                for table in request["RequestItems"].values() for r in table]  # fmt: skip
        self.deletes.append(sorted(keys))
        if self.refuse:
            self.refuse -= 1
            from botocore.exceptions import ClientError  # noqa: PLC0415

            error = {"Error": {"Code": "InternalServerError", "Message": "injected"}}
            raise ClientError(error, "BatchWriteItem")  # type: ignore[arg-type]
        if self.unprocess:
            self.unprocess -= 1
            return {"UnprocessedItems": request["RequestItems"]}
        return self.client.batch_write_item(**request)

    def reset(self) -> None:
        self.puts, self.deletes = [], []


def window_sks(
    aws: Callable[[str], Any], table: str, prefix: str, shard: str = "s0"
) -> dict[str, dict[str, Any]]:
    """The window items (``w#``) of the test's shard's partition, by sort key, but the
    tombstones (:func:`tombstones`): what the windows' items were before a commit buried
    them, or the old path's."""
    return {sk: i for sk, i in _window_items(aws, table, prefix, shard).items()
            if "tombstone" not in i}  # fmt: skip


def tombstones(
    aws: Callable[[str], Any], table: str, prefix: str, shard: str = "s0"
) -> dict[str, dict[str, Any]]:
    """The tombstones of the test's shard's partition, by sort key: dead windows' items
    replaced after a commit (:func:`processors.window_items.tombstone`), each closed, with
    no accumulators and a TTL (checked here)."""
    found = {sk: i for sk, i in _window_items(aws, table, prefix, shard).items()
             if "tombstone" in i}  # fmt: skip
    for sk, item in found.items():
        assert item["closed"] == {"BOOL": True}, sk
        assert "acc" not in item, sk
        assert "prev" not in item, sk
        assert int(item["expires"]["N"]) > 0, sk
    return found


def _window_items(
    aws: Callable[[str], Any], table: str, prefix: str, shard: str
) -> dict[str, dict[str, Any]]:
    return {i["window"]["S"]: i for i in items(aws, table, prefix)
            if i["shard"]["S"] == prefix + shard and i["window"]["S"][:2] == "w#"}  # fmt: skip


def of_minute(m: int, users: int = USERS) -> list[str]:
    return sorted(f'w#{m * 60}#"u{u}"' for u in range(users))


def no_sleep(seconds: float) -> None:
    """The store's wait before asking again for unprocessed items: none in a test."""


class TestAClosingBatch:
    def test_writes_the_open_windows_then_buries_the_closed_ones(
        self, aws, window_table, monkeypatch
    ):
        """Minute 1's batch closes minute 0's 30 windows: it writes minute 1's 30 items
        and the shard item, nothing closed, then puts tombstones over minute 0's items in
        two calls (25 + 5). The results equal the twin's on the old path, warm and after a
        cold start, and its partition holds the open windows and the tombstones only."""
        a, b = uuid.uuid4().hex, uuid.uuid4().hex
        client = aws("dynamodb")
        recorded = Recorded(client)
        warm = step(window_table, a, recorded)
        for m in range(4):
            recorded.reset()
            got = run(warm, minute(m, USERS), 100 * m + 1)
            with old_path(monkeypatch):
                assert run(step(window_table, b, client), minute(m, USERS), 100 * m + 1) == got
            assert len(got) == (USERS if m else 0)
            assert sorted(recorded.puts) == sorted([*of_minute(m), "#shard"])  # none closed
            assert recorded.puts[-1] == "#shard"  # the deletes come after the commit
            if m:
                # the two calls go at once: the order they reached the client is not theirs
                assert sorted(len(keys) for keys in recorded.deletes) == [5, 25]
                assert sorted(k for keys in recorded.deletes for k in keys) == of_minute(m - 1)
            else:
                assert recorded.deletes == []
            assert sorted(window_sks(aws, window_table, a)) == of_minute(m)
            assert sorted(tombstones(aws, window_table, a)) == sorted(
                sk for before in range(m) for sk in of_minute(before)
            )
        closed_b = [sk for sk, i in window_sks(aws, window_table, b).items() if "closed" in i]
        assert sorted(closed_b) == sorted(of_minute(0) + of_minute(1) + of_minute(2))
        assert "starts" not in shard_item(aws, window_table, b)  # the twin: the old path
        cold = run(step(window_table, a, client), minute(4, USERS), 401)
        with old_path(monkeypatch):
            assert run(step(window_table, b, client), minute(4, USERS), 401) == cold
        assert {r["n"] for r in cold} == {1}
        assert len(cold) == USERS

    def test_a_whole_read_writes_them_closed_as_before(self, aws, window_table, monkeypatch):
        """A commit that lists no starts (more open than ``STARTS_MAX``) writes the
        windows it closed closed, with their TTL, and deletes nothing."""
        a = uuid.uuid4().hex
        recorded = Recorded(aws("dynamodb"))
        with old_path(monkeypatch):
            run(step(window_table, a, recorded), minute(0, 3), 1)
            run(step(window_table, a, recorded), minute(1, 3), 101)
        assert recorded.deletes == []
        stored = window_sks(aws, window_table, a)
        assert sorted(sk for sk, i in stored.items() if "expires" in i and "closed" in i) == (
            of_minute(0, 3)
        )


class TestAFailedBurial:
    def test_does_not_fail_the_batch_and_the_next_commit_buries_them(
        self, aws, window_table, monkeypatch
    ):
        """The delete after minute 1's commit fails: the batch still yields minute 0's
        results, its items stay (open-looking, behind the watermark, at a start the shard
        item no longer lists); a cold read by the starts does not read them; the next
        commit of the process deletes them with its own."""
        a, b = uuid.uuid4().hex, uuid.uuid4().hex
        client = aws("dynamodb")
        recorded = Recorded(client)
        warm = step(window_table, a, recorded)

        def both(m: int, seq: int) -> list[dict[str, Any]]:
            got = run(warm, minute(m, 3), seq)
            with old_path(monkeypatch):
                assert run(step(window_table, b, client), minute(m, 3), seq) == got
            return got

        both(0, 1)
        recorded.refuse = 1
        assert [r["key"] for r in both(1, 101)] == ["u0", "u1", "u2"]  # committed, no error
        assert recorded.deletes == [of_minute(0, 3)]  # tried once
        left = window_sks(aws, window_table, a)
        assert sorted(left) == sorted(of_minute(0, 3) + of_minute(1, 3))
        assert all("acc" in left[sk] and "closed" not in left[sk] for sk in of_minute(0, 3))
        assert window_starts.listed(shard_item(aws, window_table, a)) == {"w#60#"}
        recorded.reset()
        assert [r["key"] for r in both(2, 201)] == ["u0", "u1", "u2"]
        assert recorded.deletes == [sorted(of_minute(0, 3) + of_minute(1, 3))]  # one call
        assert sorted(window_sks(aws, window_table, a)) == of_minute(2, 3)
        recorded.reset()
        both(3, 301)
        assert recorded.deletes == [of_minute(2, 3)]  # nothing left over to ask again

    def test_unprocessed_items_are_asked_again_and_past_the_budget_kept(
        self, aws, window_table, monkeypatch
    ):
        """DynamoDB hands the deletes back unprocessed: asked again after a backoff, they
        go; handed back at every attempt (the budget, ``MAX_ATTEMPTS``), the batch still
        succeeds and the next commit deletes them."""
        from stream.aws import MAX_ATTEMPTS  # noqa: PLC0415

        a = uuid.uuid4().hex
        recorded = Recorded(aws("dynamodb"))
        warm = step(window_table, a, recorded)
        warm.store._sleep = no_sleep  # the backoff, not waited in a test
        run(warm, minute(0, 3), 1)
        recorded.unprocess = 1
        assert len(run(warm, minute(1, 3), 101)) == 3
        assert recorded.deletes == [of_minute(0, 3)] * 2  # handed back, asked again
        assert sorted(window_sks(aws, window_table, a)) == of_minute(1, 3)
        recorded.reset()
        recorded.unprocess = MAX_ATTEMPTS
        assert len(run(warm, minute(2, 3), 201)) == 3
        assert recorded.deletes == [of_minute(1, 3)] * MAX_ATTEMPTS
        assert sorted(window_sks(aws, window_table, a)) == sorted(of_minute(1, 3) + of_minute(2, 3))
        recorded.reset()
        assert len(run(warm, minute(3, 3), 301)) == 3
        assert recorded.deletes == [sorted(of_minute(1, 3) + of_minute(2, 3))]
        assert sorted(window_sks(aws, window_table, a)) == of_minute(3, 3)


class TestAZombie:
    def test_its_write_after_the_burial_is_never_emitted(self, aws, window_table, monkeypatch):
        """A zombie (an attempt past its lease) read minute 0's windows open, and writes
        one back after the batch that closed it committed and deleted it: an open-looking
        item behind the watermark, at a start the shard item no longer lists. A warm
        batch, a cold read by the starts and a read of the whole partition never emit it
        (the results equal the twin's); the whole read's commit deletes it."""
        a, b = uuid.uuid4().hex, uuid.uuid4().hex
        client = aws("dynamodb")
        warm = step(window_table, a, client)

        def both(window: Any, m: int) -> list[dict[str, Any]]:
            got = run(window, minute(m, 3), 100 * m + 1)
            with old_path(monkeypatch):
                assert run(step(window_table, b, client), minute(m, 3), 100 * m + 1) == got
            assert [r["window_start"] for r in got] == [f"1970-01-01T00:{m - 1:02d}:00Z"] * (
                3 if m else 0
            )  # the minute before's windows only: never the zombie's
            return got

        both(warm, 0)
        zombie = window_sks(aws, window_table, a)['w#0#"u0"']  # open, as the zombie read it
        both(warm, 1)
        assert 'w#0#"u0"' not in window_sks(aws, window_table, a)  # deleted
        client.put_item(TableName=window_table, Item=zombie)  # the zombie's late write
        assert len(both(warm, 2)) == 3  # warm: not read
        counted = Counted(client)
        assert len(both(step(window_table, a, counted), 3)) == 3  # cold, by the starts
        assert counted.window_items == 3  # minute 2's open windows, not the zombie's
        unlist(aws, window_table, a)  # the next read is of the whole partition
        recorded = Recorded(client)
        assert len(both(step(window_table, a, recorded), 4)) == 3
        # with the zombie's and minute 3's, what minute 3's shard item lists as still to
        # delete: minute 2's, and minute 1's, which its own cold load read from minute 2's
        # (deleted already, which a new process cannot know: a write unit each)
        assert recorded.deletes == [sorted(['w#0#"u0"', *of_minute(1, 3), *of_minute(2, 3),
                                            *of_minute(3, 3)])]  # fmt: skip
        assert sorted(window_sks(aws, window_table, a)) == of_minute(4, 3)


class TestClosedElsewhere:
    @pytest.mark.parametrize("by", ["shard", "tick"])
    def test_the_shard_s_next_commit_buries_what_a_quiet_close_or_a_tick_closed(
        self, aws, window_table, by
    ):
        """s0's windows are closed by another shard's batch (s0 quiet) or by a flush's
        tick: their items stay open-looking, behind s0's raised watermark (the closer
        writes only s0's shard item). s0's next batch reads them by its listed starts
        (``flushed``), emits none of them again, and deletes them after its commit."""
        prefix, client, clock = uuid.uuid4().hex, aws("dynamodb"), [10_000.0]

        def new(c: Any = client) -> Any:
            return ticking_step(window_table, prefix, c, clock, lanes=False)

        assert on(new(), "s0", [{"user": f"u{u}", "ts": u} for u in range(3)], 1) == []
        if by == "shard":
            assert on(new(), "s1", [{"user": "z", "ts": 20_000}], 1) == []  # s0 not quiet
        clock[0] += 400
        if by == "shard":
            closed = on(new(), "s1", [{"user": "z", "ts": 20_001}], 2)
        else:
            emissions = new().tick()
            closed = [r for e in emissions for r in e.results]
            for emission in emissions:
                new().ack(emission)
        assert sorted(r["key"] for r in closed) == ["u0", "u1", "u2"]
        left = window_sks(aws, window_table, prefix, "s0")
        assert sorted(left) == of_minute(0, 3)
        assert not any("closed" in i for i in left.values())  # open-looking, behind it
        recorded = Recorded(client)
        assert on(new(recorded), "s0", [{"user": "u0", "ts": 20_000}], 10) == []
        assert recorded.deletes == [of_minute(0, 3)]
        assert sorted(window_sks(aws, window_table, prefix, "s0")) == ['w#19980#"u0"']


class TestLanesModeAfterTheBurials:
    def test_a_redelivered_batch_is_decided_not_late(self, aws, window_table):
        """``parallelization`` raised after a one-lane batch closed (and deleted) windows:
        lanes mode gets the batch again (a sink after the step failed) and asks the closed
        windows' items whether its records were applied. Items deleted, a window with no
        item would say "no record went in": the records would come out late. The one-lane
        protocol decided every record up to its ``applied``, so they are decided: the
        closer's results again, nothing late."""
        prefix, client, clock = uuid.uuid4().hex, aws("dynamodb"), [10_000.0]
        docs = [{"user": f"u{u}", "ts": u} for u in range(3)] + [{"user": "c", "ts": 61}]
        one_lane = ticking_step(window_table, prefix, client, clock, lanes=False)
        first = on(one_lane, "s0", docs, 1)
        assert sorted(r["key"] for r in first) == ["u0", "u1", "u2"]
        assert sorted(window_sks(aws, window_table, prefix)) == ['w#60#"c"']  # deleted
        lanes = ticking_step(window_table, prefix, client, clock, lanes=True)
        assert on(lanes, "s0", docs, 1) == first
        assert lanes.late == 0
