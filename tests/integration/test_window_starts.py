"""A cold read of a window shard reads its open windows only (``processors.window_starts``),
on the session moto server: the shard item lists the starts of the windows open at its
``applied``, and a read keeps to them; what it did not read, a commit reads before it
writes. Each test compares the step's results with a twin partition read whole (its shard
item's ``starts`` removed, as an earlier version wrote it), and counts what was read.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from processors import window_starts
from processors.chain import Chain, Step
from processors.window import Window
from processors.window_store import DynamoDBStore, WindowStateError
from stream.records import Record
from tests.integration.test_window_state import Before, ShardItemFails, items
from tests.processors.test_window import AGGREGATE

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.integration


class Counted:
    """The real client, counting the window items (``w#``) each ``Query`` returned."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.window_items = 0
        self.queries = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def query(self, **request: Any) -> Any:
        page = self.client.query(**request)
        self.queries += 1
        self.window_items += sum(1 for i in page.get("Items", []) if i["window"]["S"][:2] == "w#")
        return page


def step(table: str, prefix: str, client: Any, *, slide: int | None = None) -> Window:
    """A new window step (a cold start): tumbling windows of 60 s, or hopping by ``slide``."""
    store = DynamoDBStore(table, prefix, 0, 60, client=client)
    more = {"slide_s": slide} if slide else {}
    return Window(key="user", size_s=60, field="ts", aggregate=AGGREGATE, function="f",
                  store=store, **more)  # fmt: skip


def run(window: Window, docs: list[dict[str, Any]], first_seq: int) -> list[dict[str, Any]]:
    batch = [
        Record(orjson.dumps(d), d["user"], str(first_seq + i), shard_id="s0", index=i)
        for i, d in enumerate(docs)
    ]
    result = Chain([Step.of("processors[0].window", window)]).run(batch)
    if result.failures:
        raise result.failures[0].error
    return [r.as_dict() for r in result.records]


def minute(m: int, users: int = 5) -> list[dict[str, Any]]:
    """A purchase of each of ``users`` users in minute ``m`` (closing minute ``m - 1``)."""
    return [{"user": f"u{u}", "ts": m * 60 + u, "amount": u + 1, "product": "p", "page": "/"}
            for u in range(users)]  # fmt: skip


def shard_item(
    aws: Callable[[str], Any], table: str, prefix: str, shard: str = "s0"
) -> dict[str, Any]:
    item: dict[str, Any] = aws("dynamodb").get_item(
        TableName=table, Key={"shard": {"S": prefix + shard}, "window": {"S": "#shard"}},
        ConsistentRead=True,
    )["Item"]  # fmt: skip
    return item


def unlist(aws: Callable[[str], Any], table: str, prefix: str, shard: str = "s0") -> None:
    """The shard item as an earlier version wrote it: no ``starts``."""
    aws("dynamodb").update_item(
        TableName=table, Key={"shard": {"S": prefix + shard}, "window": {"S": "#shard"}},
        UpdateExpression="REMOVE starts",
    )  # fmt: skip


def twins(aws: Callable[[str], Any], table: str, batches: list[list[dict[str, Any]]],
          *, old_path: bool = False,
          **options: Any) -> tuple[str, str, list[list[dict[str, Any]]]]:  # fmt: skip
    """Two partitions given the same batches, each by a new step: the results (equal).
    ``old_path``: their closed windows' items are written closed, not deleted, as before
    :func:`processors.window_starts.dead` (a commit's starts listed only in its item)."""
    a, b = uuid.uuid4().hex, uuid.uuid4().hex
    client = aws("dynamodb")
    out = []
    for n, docs in enumerate(batches):
        first = 1 + 100 * n
        with keeping_closed(enabled=old_path):
            one = run(step(table, a, client, **options), docs, first)
            assert run(step(table, b, client, **options), docs, first) == one
        out.append(one)
    return a, b, out


@contextmanager
def keeping_closed(*, enabled: bool = True) -> Iterator[None]:
    """While on, a commit writes the windows it closed closed (with their TTL), as before
    they were deleted, and still lists its starts."""
    if not enabled:
        yield
        return
    real = window_starts.dead
    window_starts.dead = lambda wkey, starts: False  # type: ignore[assignment]
    try:
        yield
    finally:
        window_starts.dead = real


class TestAColdRead:
    def test_reads_the_open_windows_and_not_the_closed_ones(self, aws, window_table):
        a, b, _ = twins(aws, window_table, [minute(m) for m in range(12)], old_path=True)
        assert window_starts.listed(shard_item(aws, window_table, a)) == {"w#660#"}
        stored = [i for i in items(aws, window_table, a) if i["window"]["S"][:2] == "w#"]
        assert len(stored) == 60  # 55 closed (kept, as before the deletes), 5 open
        unlist(aws, window_table, b)  # read whole, as an item of an earlier version says
        counted, whole = Counted(aws("dynamodb")), Counted(aws("dynamodb"))
        got = run(step(window_table, a, counted), minute(12), 1201)
        assert run(step(window_table, b, whole), minute(12), 1201) == got
        assert [r["window_start"] for r in got] == ["1970-01-01T00:11:00Z"] * 5
        assert counted.window_items == 5
        assert whole.window_items == 60
        assert window_starts.listed(shard_item(aws, window_table, a)) == {"w#720#"}
        assert window_starts.listed(shard_item(aws, window_table, b)) == {"w#720#"}  # listed again

    def test_of_hopping_windows_reads_each_open_start(self, aws, window_table):
        a, b, _ = twins(aws, window_table, [minute(m) for m in range(6)], slide=20)
        assert window_starts.listed(shard_item(aws, window_table, a)) == {
            "w#260#", "w#280#", "w#300#",
        }  # fmt: skip
        unlist(aws, window_table, b)
        counted = Counted(aws("dynamodb"))
        got = run(step(window_table, a, counted, slide=20), minute(6), 601)
        assert run(step(window_table, b, aws("dynamodb"), slide=20), minute(6), 601) == got
        assert len(got) == 15  # 3 windows of each of 5 users closed
        assert counted.queries == 1 + 3  # below w#, then each start at once

    def test_the_list_follows_the_open_windows(self, aws, window_table):
        late = [{"user": "u0", "ts": 10_000, "amount": 1, "product": "p", "page": "/"}]
        a, _, _ = twins(aws, window_table, [minute(0), minute(1), late])
        assert window_starts.listed(shard_item(aws, window_table, a)) == {"w#9960#"}
        closer = [{"user": "u9", "ts": 20_000, "amount": 1, "product": "p", "page": "/"}]
        step_a = step(window_table, a, aws("dynamodb"))
        assert len(run(step_a, closer, 401)) == 1
        assert shard_item(aws, window_table, a)["starts"]["SS"] == ["w#19980#"]

    def test_more_starts_than_listed_read_the_partition(self, aws, window_table, monkeypatch):
        monkeypatch.setattr(window_starts, "STARTS_MAX", 2)
        a, _, _ = twins(aws, window_table, [minute(m) for m in range(4)], slide=20)
        assert "starts" not in shard_item(aws, window_table, a)  # three starts open
        counted = Counted(aws("dynamodb"))
        run(step(window_table, a, counted, slide=20), minute(4), 401)
        assert counted.window_items > 15  # closed ones too: the whole partition


class TestWhatTheReadDidNotSee:
    def test_a_failed_attempt_s_items_at_a_new_start_make_one_more_application(
        self, aws, window_table
    ):
        """A batch opens windows of a new start and times out before its shard item:
        its items stay, pending, at a start the shard item does not list. Its delivery
        again, in another process (a cold read by the listed starts), writes them as new,
        loses the condition, reads the shard whole and applies the batch again, in the
        process: the batch does not fail."""
        a, b, _ = twins(aws, window_table, [minute(0)])
        failing = ShardItemFails(aws("dynamodb"))
        with pytest.raises(WindowStateError):
            run(step(window_table, a, failing), minute(1), 101)
        pending = [i for i in items(aws, window_table, a) if i["window"]["S"].startswith("w#60#")]
        assert len(pending) == 5
        assert window_starts.listed(shard_item(aws, window_table, a)) == {"w#0#"}
        counted = Counted(aws("dynamodb"))
        got = run(step(window_table, a, counted), minute(1), 101)  # no error: applied again
        assert counted.window_items == 5 + 10  # by the starts, then whole (w#0#, w#60#)
        assert got == run(step(window_table, b, aws("dynamodb")), minute(1), 101)
        assert len(got) == 5
        after_a = run(step(window_table, a, aws("dynamodb")), minute(2), 201)
        assert after_a == run(step(window_table, b, aws("dynamodb")), minute(2), 201)
        assert [r["n"] for r in after_a] == [1] * 5  # each minute-1 window counted once

    def test_a_shorter_redelivery_fences_the_dead_attempt_s_pending_items(self, aws, window_table):
        """The dead attempt wrote records 101-105's windows; the batch delivered again
        holds 101-102 only (bisected). The two windows it writes hold the dead attempt's
        pending writes, at another ``v``: read whole after its write lost, it fences, and
        the three others stay pending, read as not there."""
        a, b, _ = twins(aws, window_table, [minute(0)])
        with pytest.raises(WindowStateError):
            run(step(window_table, a, ShardItemFails(aws("dynamodb"))), minute(1), 101)
        got = run(step(window_table, a, aws("dynamodb")), minute(1)[:2], 101)
        assert got == run(step(window_table, b, aws("dynamodb")), minute(1)[:2], 101)
        assert window_starts.listed(shard_item(aws, window_table, a)) == {"w#60#"}
        rest = run(step(window_table, a, aws("dynamodb")), minute(1)[2:], 103)
        assert rest == run(step(window_table, b, aws("dynamodb")), minute(1)[2:], 103)
        closed = run(step(window_table, a, aws("dynamodb")), minute(2), 201)
        assert closed == run(step(window_table, b, aws("dynamodb")), minute(2), 201)
        assert sorted((r["key"], r["n"]) for r in closed) == [(f"u{u}", 1) for u in range(5)]

    def test_a_stale_attempt_reads_whole_and_finds_its_batch_applied(self, aws, window_table):
        """Read by the starts ``{w#0#}``; before its writes, another process commits the
        same batch (minute 1, opening ``w#60#``) and one more record. Its writes of the
        minute-1 windows lose; read whole, the batch is a redelivery: nothing is written
        again, nothing counted twice (review 16's case)."""
        a, b, _ = twins(aws, window_table, [minute(0)])
        client = aws("dynamodb")
        more = [{"user": "u0", "ts": 70, "amount": 7, "product": "p", "page": "/"}]

        def others_commit() -> None:
            assert len(run(step(window_table, a, client), minute(1), 101)) == 5
            assert run(step(window_table, a, client), more, 201) == []

        stale = step(window_table, a, Before(client, others_commit))
        assert run(stale, minute(1), 101) == []  # applied already: the outbox holds 201's
        for docs, first in ((minute(1), 101), (more, 201)):
            run(step(window_table, b, client), docs, first)
        closed = run(step(window_table, a, client), minute(2), 301)
        assert closed == run(step(window_table, b, client), minute(2), 301)
        assert {r["key"]: r["n"] for r in closed}["u0"] == 2

    def test_an_open_item_the_list_misses_is_read_once_a_write_over_it_loses(
        self, aws, window_table
    ):
        """An open window whose start the shard item does not list (as by a bug or a
        hand edit) is never written over as absent: the write loses, and the batch is
        applied again on the whole partition, with the window's records."""
        a, _, _ = twins(aws, window_table, [minute(0), minute(1)])
        client = aws("dynamodb")
        client.update_item(
            TableName=window_table, Key={"shard": {"S": a + "s0"}, "window": {"S": "#shard"}},
            UpdateExpression="SET starts = :s",
            ExpressionAttributeValues={":s": {"SS": ["w#999999#"]}},
        )  # fmt: skip
        window = step(window_table, a, client)
        more = [{"user": "u0", "ts": 61, "amount": 7, "product": "p", "page": "/"}]
        assert run(window, more, 201) == []
        assert window_starts.listed(shard_item(aws, window_table, a)) == {"w#60#"}
        closed = run(window, minute(2), 301)
        assert {r["key"]: r["n"] for r in closed} == {"u0": 2, "u1": 1, "u2": 1, "u3": 1,
                                                      "u4": 1}  # fmt: skip


class TestAWarmProcess:
    def test_pays_no_read_for_the_windows_it_opens(self, aws, window_table):
        """Read by the starts, a warm process opens windows at new starts with no read
        (review 16: a read before each such commit cost a round trip a batch)."""
        a, b, _ = twins(aws, window_table, [minute(0)])
        unlist(aws, window_table, b)  # b is read whole
        by_starts, whole = Reads(aws("dynamodb")), Reads(aws("dynamodb"))
        step_a, step_b = step(window_table, a, by_starts), step(window_table, b, whole)
        for m in range(1, 6):  # warm batches, each opening a new minute's windows
            assert run(step_a, minute(m), 100 * m + 1) == run(step_b, minute(m), 100 * m + 1)
        assert by_starts.window_reads == whole.window_reads == 0
        assert by_starts.queries == 2  # the cold read: below w#, then w#0#


class Reads(Counted):
    """Counted, with the ``BatchGetItem`` calls that asked for window items."""

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.window_reads = 0

    def batch_get_item(self, **request: Any) -> Any:
        keys = [k for r in request["RequestItems"].values() for k in r["Keys"]]
        self.window_reads += any(k["window"]["S"].startswith("w#") for k in keys)
        return self.client.batch_get_item(**request)
