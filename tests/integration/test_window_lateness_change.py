"""A redeploy that changes ``allowed_lateness_s``, on the session moto server (review 18,
finding 3, and the lead's note on it). The watermark is ``max_time`` less the lateness: a
raised lateness would move it back, and a window closed (emitted; with one lane its item
deleted) would open again for a record on time under the new lateness: a second, partial
result for the same ``window_id``. So each commit stores the lateness it ran with in its
shard item, and a load under a larger one raises ``max_time`` by the difference
(:func:`processors.window_items.max_time_of`): the watermark stays, and the raise takes
effect as event time passes it. A lowered lateness moves the watermark on at once. Each test
compares with a twin partition on the old path (its commits list no starts: read whole,
closed windows written closed, none deleted).
"""

from __future__ import annotations

import uuid
from contextlib import nullcontext
from typing import Any

import pytest

from processors.window import Window
from processors.window_store import DynamoDBStore
from tests.integration.test_window_close_burials import old_path, window_sks
from tests.integration.test_window_starts import minute, run, shard_item
from tests.processors.test_window import AGGREGATE

pytestmark = pytest.mark.integration


def late_step(table: str, prefix: str, client: Any, lateness: int) -> Window:
    """A new window step (a cold start: a redeploy) of tumbling 60 s windows."""
    store = DynamoDBStore(table, prefix, lateness, 60, client=client)
    return Window(key="user", size_s=60, field="ts", aggregate=AGGREGATE, function="f",
                  store=store, allowed_lateness_s=lateness)  # fmt: skip


def rows(got: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    return sorted((r["window_start"], r["key"], r["n"]) for r in got)


def at(m: int) -> str:
    return f"1970-01-01T00:0{m}:00Z"


class TestALatenessRaised:
    def test_a_closed_window_stays_closed(self, aws, window_table, monkeypatch):
        """Lateness 0: minute 1's batch closes (emits, and deletes) minute 0's windows.
        A redeploy raises the lateness to 60 s: a record for u0's minute 0 (30 s, within
        60 s of the greatest event time, 62 s) stays late, no second result comes for
        minute 0, and minute 1's windows close 60 s of event time later than before (at
        minute 3's batch, not minute 2's). As the twin on the old path."""
        a, b = uuid.uuid4().hex, uuid.uuid4().hex
        client = aws("dynamodb")
        record = [{"user": "u0", "ts": 30, "amount": 100, "product": "p", "page": "/"}]
        out: dict[str, list[list[tuple[str, str, int]]]] = {}
        lates: dict[str, int] = {}
        for prefix, old in ((a, False), (b, True)):
            with old_path(monkeypatch) if old else nullcontext():
                first = late_step(window_table, prefix, client, 0)
                assert rows(run(first, minute(0, 3), 1)) == []
                emitted = rows(run(first, minute(1, 3), 101))
                assert emitted == [(at(0), f"u{u}", 1) for u in range(3)]
                later = late_step(window_table, prefix, client, 60)  # the redeploy
                out[prefix] = [rows(run(later, record, 151))]
                lates[prefix] = later.late
                out[prefix] += [rows(run(later, minute(m, 3), 100 * m + 1)) for m in (2, 3, 4)]
        assert lates == {a: 1, b: 1}  # the record is late
        assert out[a] == [[], [], [(at(1), f"u{u}", 1) for u in range(3)],
                          [(at(2), f"u{u}", 1) for u in range(3)]]  # fmt: skip
        assert out[a] == out[b]
        assert not [sk for sk in window_sks(aws, window_table, a) if sk.startswith("w#0#")]
        item = shard_item(aws, window_table, a)
        assert item["lateness"] == {"N": "60"}
        assert float(item["max_time"]["N"]) == 242  # event time passed the raised 122

    def test_a_warm_process_after_the_redeploy_keeps_the_watermark(self, aws, window_table):
        """The raise is taken once: a second process under the new lateness reads the
        shard item the first wrote (``lateness`` 60, ``max_time`` raised) as it is."""
        prefix = uuid.uuid4().hex
        client = aws("dynamodb")
        first = late_step(window_table, prefix, client, 0)
        run(first, minute(0, 3), 1)
        run(first, minute(1, 3), 101)
        run(late_step(window_table, prefix, client, 60), minute(2, 3), 201)  # 122 -> 182
        got = run(late_step(window_table, prefix, client, 60), minute(3, 3), 301)
        assert rows(got) == [(at(1), f"u{u}", 1) for u in range(3)]  # watermark 122


class TestALatenessLowered:
    def test_closes_windows_earlier_at_once(self, aws, window_table, monkeypatch):
        """Lateness 60: minute 1's batch closes nothing (watermark 2 s). A redeploy lowers
        it to 0: minute 2's batch closes minute 0's and minute 1's windows at once, as
        the twin on the old path."""
        a, b = uuid.uuid4().hex, uuid.uuid4().hex
        client = aws("dynamodb")
        out = {}
        for prefix, old in ((a, False), (b, True)):
            with old_path(monkeypatch) if old else nullcontext():
                first = late_step(window_table, prefix, client, 60)
                assert run(first, minute(0, 3), 1) == []
                assert run(first, minute(1, 3), 101) == []
                out[prefix] = rows(run(late_step(window_table, prefix, client, 0),
                                       minute(2, 3), 201))  # fmt: skip
        print(out)
        assert out[a] == [(at(m), f"u{u}", 1) for m in (0, 1) for u in range(3)]
        assert out[a] == out[b]
        assert shard_item(aws, window_table, a)["lateness"] == {"N": "0"}
