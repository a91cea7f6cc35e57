"""The closed windows' deletes that are still to do are durable (review 18, finding 1), on the
session moto server: a commit's shard item lists them (``deleting``: the earlier commits'
that failed and its own), a load reads them back, and the shard's next commit, in any
process, deletes them after it; a quiet close or a flush's tick, which rewrites the shard
item, carries the list. Past its caps a commit writes the windows it closed closed, with
their TTL, as before the deletes.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from processors import window_starts
from tests.integration.test_window_close_burials import (
    Recorded,
    of_minute,
    old_path,
    window_sks,
)
from tests.integration.test_window_starts import minute, run, shard_item, step
from tests.integration.test_window_tick import on
from tests.integration.test_window_tick import step as ticking_step

pytestmark = pytest.mark.integration


def deleting(item: dict[str, Any]) -> list[str]:
    return sorted(item["deleting"]["SS"]) if "deleting" in item else []


class TestTheList:
    def test_a_failed_burial_is_done_by_the_next_process(self, aws, window_table):
        """Minute 1's delete fails: its shard item lists minute 0's items (written before
        the delete). A new process's commit (minute 2) lists them with minute 1's and
        deletes both; its next commit, warm, lists only minute 2's."""
        prefix = uuid.uuid4().hex
        client = aws("dynamodb")
        recorded = Recorded(client)
        run(step(window_table, prefix, recorded), minute(0, 3), 1)
        assert deleting(shard_item(aws, window_table, prefix)) == []
        recorded.refuse = 1
        run(step(window_table, prefix, recorded), minute(1, 3), 101)
        assert deleting(shard_item(aws, window_table, prefix)) == of_minute(0, 3)
        assert set(of_minute(0, 3)) <= set(window_sks(aws, window_table, prefix))  # left
        recorded = Recorded(client)
        warm = step(window_table, prefix, recorded)  # a new process
        run(warm, minute(2, 3), 201)
        assert recorded.deletes == [sorted(of_minute(0, 3) + of_minute(1, 3))]
        assert deleting(shard_item(aws, window_table, prefix)) == sorted(
            of_minute(0, 3) + of_minute(1, 3)
        )
        assert sorted(window_sks(aws, window_table, prefix)) == of_minute(2, 3)
        run(warm, minute(3, 3), 301)
        assert deleting(shard_item(aws, window_table, prefix)) == of_minute(2, 3)
        assert warm.store.buried == 9  # type: ignore[attr-defined]

    @pytest.mark.parametrize(
        ("cap", "value"), [("DELETING_MAX", 2), ("DELETING_BYTES", 2 * len('w#60#"u0"'))]
    )
    def test_past_its_cap_a_closed_window_is_written_closed(
        self, aws, window_table, monkeypatch, cap, value
    ):
        """A list of at most two (one process): minute 1's commit lists (and deletes) two
        of minute 0's windows and writes the third closed, with its TTL; so does minute
        2's of minute 1's. The results equal the twin's on the old path. (A new process
        lists what the shard item listed, deleted already or not, first: past the cap, a
        commit of a new process writes more windows closed.)"""
        a, b = uuid.uuid4().hex, uuid.uuid4().hex
        client = aws("dynamodb")
        monkeypatch.setattr(window_starts, cap, value)
        warm = step(window_table, a, client)
        for m in range(3):
            got = run(warm, minute(m, 3), 100 * m + 1)
            with old_path(monkeypatch):
                assert run(step(window_table, b, client), minute(m, 3), 100 * m + 1) == got
            assert len(got) == (3 if m else 0)
        listed = deleting(shard_item(aws, window_table, a))
        assert len(listed) == 2
        assert set(listed) <= set(of_minute(1, 3))
        stored = window_sks(aws, window_table, a)
        closed = sorted(sk for sk, i in stored.items() if "closed" in i)
        assert len(closed) == 2  # one of minute 0's, one of minute 1's
        assert all("expires" in stored[sk] for sk in closed)
        assert sorted(set(stored) - set(closed)) == of_minute(2, 3)


class TestAQuietClose:
    def test_carries_the_list(self, aws, window_table):
        """s0's delete fails (its item lists minute 0's windows); s1's batch then closes
        s0's open window (s0 quiet) and rewrites s0's shard item: the list is kept, and
        s0's next batch, in a new process, deletes those items."""
        prefix, client, clock = uuid.uuid4().hex, aws("dynamodb"), [10_000.0]

        def new(c: Any = client) -> Any:
            return ticking_step(window_table, prefix, c, clock, lanes=False)

        assert on(new(), "s0", [{"user": f"u{u}", "ts": u} for u in range(3)], 1) == []
        assert on(new(), "s1", [{"user": "z", "ts": 20_000}], 1) == []  # s0 not quiet
        recorded = Recorded(client)
        recorded.refuse = 1
        closed = on(new(recorded), "s0", [{"user": "x", "ts": 61}], 10)
        assert sorted(r["key"] for r in closed) == ["u0", "u1", "u2"]
        assert deleting(shard_item(aws, window_table, prefix, "s0")) == of_minute(0, 3)
        clock[0] += 400
        closed = on(new(), "s1", [{"user": "z", "ts": 20_001}], 2)
        assert [r["key"] for r in closed] == ["x"]  # s0's, closed by s1's batch
        assert deleting(shard_item(aws, window_table, prefix, "s0")) == of_minute(0, 3)
        recorded = Recorded(client)
        assert on(new(recorded), "s0", [{"user": "u0", "ts": 20_000}], 20) == []
        assert recorded.deletes == [sorted([*of_minute(0, 3), 'w#60#"x"'])]
        assert sorted(window_sks(aws, window_table, prefix, "s0")) == ['w#19980#"u0"']
