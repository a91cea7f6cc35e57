"""Review 17: adversarial cases of the cold read by listed starts
(:mod:`processors.window_starts`), on the session moto server. Each test compares the
step's results with a twin partition whose shard item lists no starts (read whole)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from processors import window_starts
from processors.chain import Chain, Step
from processors.window import Window
from processors.window_store import DynamoDBStore, WindowStateError
from stream.records import Record
from tests.integration.test_window_starts import shard_item, unlist
from tests.integration.test_window_state import ShardItemFails
from tests.processors.test_window import AGGREGATE

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.integration

LATENESS = 60


def step(table: str, prefix: str, client: Any, *, now: Callable[[], float] | None = None,
         quiet_s: int | None = None) -> Window:  # fmt: skip
    """A new window step (a cold start): tumbling windows of 60 s, 60 s of lateness."""
    more: dict[str, Any] = {"now": now} if now else {}
    store = DynamoDBStore(table, prefix, LATENESS, 60, client=client, **more)
    return Window(key="user", size_s=60, field="ts", aggregate=AGGREGATE, function="f",
                  store=store, allowed_lateness_s=LATENESS, quiet_s=quiet_s,
                  **more)  # fmt: skip


def run(window: Window, docs: list[dict[str, Any]], first_seq: int,
        shard: str = "s0") -> list[dict[str, Any]]:  # fmt: skip
    batch = [
        Record(orjson.dumps(d), d["user"], str(first_seq + i), shard_id=shard, index=i)
        for i, d in enumerate(docs)
    ]
    result = Chain([Step.of("processors[0].window", window)]).run(batch)
    if result.failures:
        raise result.failures[0].error
    return [r.as_dict() for r in result.records]


def doc(user: str, ts: float, amount: int = 1) -> dict[str, Any]:
    return {"user": user, "ts": ts, "amount": amount, "product": "p", "page": "/"}


def counts(results: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    return sorted((r["key"], r["window_start"], r["n"]) for r in results)


class Fences:
    """The real client, counting the fences (``UpdateItem`` of the shard item's ``rev``)
    and the window writes that lost their condition."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.fences = 0
        self.lost = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def update_item(self, **request: Any) -> Any:
        self.fences += "SET rev" in request.get("UpdateExpression", "")
        return self.client.update_item(**request)

    def put_item(self, **request: Any) -> Any:
        try:
            return self.client.put_item(**request)
        except self.client.exceptions.ConditionalCheckFailedException:
            self.lost += request["Item"]["window"]["S"].startswith("w#")
            raise


class TestFencedThenLost:
    def test_a_fence_then_a_lost_new_start_applies_the_batch_again_once(self, aws, window_table):
        """A dead attempt (101-103) leaves pending items at the listed start ``w#0#`` and
        at the new start ``w#60#``. The bisected redelivery (101-102) reads by the starts,
        finds ``w#0#u0`` pending at another ``v``: it fences, writes ``w#0#u0``, and its
        write of ``w#60#u0`` as new loses. Applied again on the whole partition, in the
        process, it fences again; each record counts once."""
        client = aws("dynamodb")
        a, b = uuid.uuid4().hex, uuid.uuid4().hex
        first = [doc(f"u{u}", u) for u in range(3)]
        dead = [doc("u0", 10, 2), doc("u0", 70, 3), doc("u1", 71, 4)]
        for p in (a, b):
            run(step(window_table, p, client), first, 1)
        unlist(aws, window_table, b)
        with pytest.raises(WindowStateError):
            run(step(window_table, a, ShardItemFails(client)), dead, 101)
        assert window_starts.listed(shard_item(aws, window_table, a)) == {"w#0#"}
        fences = Fences(client)
        run(step(window_table, a, fences), dead[:2], 101)
        assert (fences.fences, fences.lost) == (2, 1)  # fenced, lost, read whole, fenced
        run(step(window_table, a, client), dead[2:], 103)
        for docs, seq in ((dead[:2], 101), (dead[2:], 103)):
            unlist(aws, window_table, b)
            run(step(window_table, b, client), docs, seq)
        closer = [doc("u9", 1000)]
        got = run(step(window_table, a, client), closer, 201)
        unlist(aws, window_table, b)
        assert got == run(step(window_table, b, client), closer, 201)
        assert counts(got) == [("u0", "1970-01-01T00:00:00Z", 2), ("u0", "1970-01-01T00:01:00Z", 1),
                               ("u1", "1970-01-01T00:00:00Z", 1), ("u1", "1970-01-01T00:01:00Z", 1),
                               ("u2", "1970-01-01T00:00:00Z", 1)]  # fmt: skip


class TestQuietClose:
    def test_a_quiet_close_over_a_dead_attempt_s_new_start(self, aws, window_table):
        """Shard s1 has ``w#0#u0`` open and a dead attempt's pending ``w#60#u1`` (a start
        its item does not list). s0's batch closes s1 as quiet, reading s1 by the starts
        of the shard item it just read (``seen``), and writes s1's item with the starts it
        read. s1's redelivery (now late) and later batches give the results the whole
        read gives, each record counted once."""
        client = aws("dynamodb")
        clock = [1000.0]

        def now() -> float:
            return clock[0]

        out = {}
        for p in (uuid.uuid4().hex, uuid.uuid4().hex):
            whole = bool(out)
            make = lambda c=client, p=p: step(window_table, p, c, now=now, quiet_s=300)  # noqa: E731
            clock[0] = 1000.0
            run(make(), [doc("s0u", 1)], 1, "s0")
            run(make(), [doc("u0", 10)], 1, "s1")
            with pytest.raises(WindowStateError):
                run(make(ShardItemFails(client)), [doc("u1", 70)], 2, "s1")
            if whole:
                unlist(aws, window_table, p, "s1")
            assert ("starts" in shard_item(aws, window_table, p, "s1")) is not whole
            clock[0] = 2000.0
            closed = run(make(), [doc("s0u", 3000)], 2, "s0")
            starts = window_starts.listed(shard_item(aws, window_table, p, "s1"))
            assert starts == (None if whole else {"w#0#"})
            if whole:
                unlist(aws, window_table, p, "s1")
            again = run(make(), [doc("u1", 70)], 2, "s1")
            if whole:
                unlist(aws, window_table, p, "s1")
            later = run(make(), [doc("u1", 5000), doc("u2", 5001)], 3, "s1")
            if whole:
                unlist(aws, window_table, p, "s1")
            clock[0] = 9000.0
            last = run(make(), [doc("s0u", 9000)], 3, "s0")
            out[whole] = (closed, again, later, last)
        assert out[False] == out[True]
        closed, again, later, last = out[False]
        assert counts(closed) == [("s0u", "1970-01-01T00:00:00Z", 1),
                                  ("u0", "1970-01-01T00:00:00Z", 1)]  # fmt: skip
        assert again == []  # late: s1's watermark passed minute 1 with the close
        assert sum(r["n"] for r in later + last if r["key"] == "u1") == 1
