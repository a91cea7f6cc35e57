"""Review 18 of "closed windows deleted, not rewritten closed" (one lane), on the session moto
server: what the deletes leave behind. Before the change a window a commit closed was
written closed with a TTL (``expires``), so DynamoDB removed it in a day or so whatever
happened after; now it is deleted once, best effort, by the process that committed, and an
item that escapes that delete stays open-looking with no TTL, at a start no read by the
starts reads: kept for ever (every read of the whole partition pays for it). Each test
compares with the path before the change (``old_path``, ``keeping_closed``).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest

from processors.window import Window
from processors.window_state import WindowStateError
from processors.window_store import DynamoDBStore
from tests.integration.test_window_close_burials import (
    Recorded,
    of_minute,
    old_path,
    window_sks,
)
from tests.integration.test_window_starts import keeping_closed, minute, run, step
from tests.integration.test_window_state import ShardItemFails
from tests.processors.test_window import AGGREGATE

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.integration


def kept_for_ever(aws: Callable[[str], Any], table: str, prefix: str, sks: list[str]) -> list[str]:
    """The items of ``sks`` still in the partition with no TTL (``expires``)."""
    stored = window_sks(aws, table, prefix)
    return sorted(sk for sk in sks if sk in stored and "expires" not in stored[sk])


class TestAFailedBurialThenANewProcess:
    def test_the_closed_windows_items_do_not_stay_for_ever(self, aws, window_table, monkeypatch):
        """The delete after minute 1's commit fails; every batch runs in a new process
        (cold), as Lambda may. Minute 0's items are never deleted and have no TTL; on the
        old path they were written closed with one."""
        a, b = uuid.uuid4().hex, uuid.uuid4().hex
        client = aws("dynamodb")
        recorded = Recorded(client)
        run(step(window_table, a, recorded), minute(0, 3), 1)
        recorded.refuse = 1
        got = run(step(window_table, a, recorded), minute(1, 3), 101)
        assert [r["key"] for r in got] == ["u0", "u1", "u2"]
        for m in range(2, 6):  # later batches, each in a new process
            run(step(window_table, a, client), minute(m, 3), 100 * m + 1)
        with old_path(monkeypatch):
            for m in range(6):
                run(step(window_table, b, client), minute(m, 3), 100 * m + 1)
        assert kept_for_ever(aws, window_table, b, of_minute(0, 3)) == []  # the old path
        assert kept_for_ever(aws, window_table, a, of_minute(0, 3)) == []


class TestAFailedAttemptThenALargerBatch:
    def test_the_failed_attempt_s_items_do_not_stay_for_ever(self, aws, window_table):
        """Attempt A (minute 1's records) writes minute 1's items and fails before its
        shard item. The records come again in another process in a larger batch (minute
        1 and minute 2's records): it opens and closes minute 1's windows, reading by the
        starts (minute 0's), so it meets none of A's items. Results are right, but A's
        items stay, read as committed (A's ``v`` is behind ``applied``), behind the
        watermark, with no TTL; on the old path the batch closed them."""
        a, b = uuid.uuid4().hex, uuid.uuid4().hex
        client = aws("dynamodb")
        larger = minute(1, 3) + minute(2, 3)
        for prefix, old in ((a, False), (b, True)):
            with keeping_closed(enabled=old):  # b: the path before (closed, starts listed)
                run(step(window_table, prefix, client), minute(0, 3), 1)
                with pytest.raises(WindowStateError):
                    run(step(window_table, prefix, ShardItemFails(client)), minute(1, 3), 101)
                assert set(of_minute(1, 3)) <= set(window_sks(aws, window_table, prefix))
                got = run(step(window_table, prefix, client), larger, 101)  # a new process
                assert sorted((r["window_start"], r["key"]) for r in got) == sorted(
                    (f"1970-01-01T00:0{m}:00Z", f"u{u}") for m in (0, 1) for u in range(3)
                )
                run(step(window_table, prefix, client), minute(3, 3), 301)
        assert kept_for_ever(aws, window_table, b, of_minute(1, 3)) == []  # the old path
        assert kept_for_ever(aws, window_table, a, of_minute(1, 3)) == []


def late_step(table: str, prefix: str, client: Any, lateness: int) -> Window:
    """The step of :func:`tests.integration.test_window_starts.step` with a lateness."""
    store = DynamoDBStore(table, prefix, lateness, 60, client=client)
    return Window(key="user", size_s=60, field="ts", aggregate=AGGREGATE, function="f",
                  store=store, allowed_lateness_s=lateness)  # fmt: skip


class TestALatenessRaisedAfterALeak:
    def test_a_reopened_window_does_not_count_its_emitted_records_again(self, aws, window_table):
        """Minute 0's items leak (the delete fails, the next batch is another process);
        then ``allowed_lateness_s`` goes from 0 to 60 s (a redeploy, in a new process). A
        record for u0's minute 0 would be on time by the new lateness: here the leaked
        items were read open again, so u0's window held its minute 0 record, emitted
        already, and u1's and u2's, which no new record went into, were emitted a second
        time; on the path before the deletes, u0's window came again with the new record
        alone (a second, partial result). Now the watermark does not go back on a raise
        (:func:`processors.window_items.max_time_of`): the record is late on both paths,
        and no window of minute 0 comes again."""
        a, b = uuid.uuid4().hex, uuid.uuid4().hex
        client = aws("dynamodb")
        late = [{"user": "u0", "ts": 30, "amount": 100, "product": "p", "page": "/"}]
        out = {}
        for prefix, old in ((a, False), (b, True)):
            with keeping_closed(enabled=old):
                recorded = Recorded(client)
                run(step(window_table, prefix, recorded), minute(0, 3), 1)
                recorded.refuse = 1
                run(step(window_table, prefix, recorded), minute(1, 3), 101)
                later = late_step(window_table, prefix, client, 60)
                assert run(later, late, 201) == []
                assert later.late == 1  # the watermark stayed at 62 s: late, as before
                out[prefix] = run(later, minute(2, 3), 301)
        assert [(r["window_start"], r["key"]) for r in out[b]] == []  # minute 1's: not yet
        assert out[a] == out[b]
