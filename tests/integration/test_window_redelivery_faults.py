"""Review of slice S3 (issue 16): a closer's outcome survives a failed outbox entry write
after its commit, entries in parts, a window that closed in the same batch, and hopping
windows, each redelivered after a restart once the shard item's outbox has moved on.

The faults are injected by a client wrapper that refuses the outbox entries' ``PutItem``
(``~o#``) while told to; every other call goes to the session's moto server as it is. In
lanes mode (``parallelization`` 2), where those entries exist."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError

from processors.window_store import DynamoDBStore, outbox_sk
from tests.integration.test_window_redelivery import (
    A1,
    A3,
    B2,
    CLOSER,
    RESULTS,
    batch,
    doc,
    window,
)
from tests.integration.test_window_state import AGGREGATE, items

if TYPE_CHECKING:
    from collections.abc import Callable

    from processors.window import Window

pytestmark = pytest.mark.integration


class RefusingEntries:
    """A DynamoDB client that refuses ``PutItem`` of outbox entries (sort key ``~o#``,
    or only part ``part`` of one) while ``refusing``; everything else is the real call."""

    def __init__(self, client: Any, part: int | None = None) -> None:
        self._client = client
        self.refusing = False
        self.refused = 0
        self.part = part

    def put_item(self, **request: Any) -> Any:
        sk = request["Item"]["window"]["S"]
        hit = sk.startswith("~o#") and (self.part is None or sk.endswith(f"~{self.part:03d}"))
        if self.refusing and hit:
            self.refused += 1
            raise ClientError(
                {"Error": {"Code": "InternalServerError", "Message": "injected"}}, "PutItem"
            )
        return self._client.put_item(**request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def on(step: Window, table: str, prefix: str, client: Any) -> Window:
    step.store = DynamoDBStore(table, prefix, 0, 60, client=client, high_water=True)
    step.store.bind(step._merge)
    return step


def entries(aws: Callable[[str], Any], table: str, prefix: str) -> list[str]:
    return sorted(i["window"]["S"] for i in items(aws, table, prefix)
                  if i["window"]["S"].startswith("~o#"))  # fmt: skip


def closer_refused(
    aws: Callable[[str], Any], table: str
) -> tuple[str, Any, RefusingEntries, Window]:
    """A step in lanes mode whose closer's entry write is about to be refused: a, b and a
    applied, the entries refused from now on. The prefix, the real client, the refusing
    one and the step."""
    prefix, real = uuid.uuid4().hex, aws("dynamodb")
    refusing = RefusingEntries(real)
    step = on(window(table, prefix, real), table, prefix, refusing)
    assert batch(step, [A1, B2, A3]) == []
    refusing.refusing = True
    return prefix, real, refusing, step


def test_an_entry_whose_write_after_the_commit_failed_is_written_by_the_next_commit(
    aws: Callable[[str], Any], window_table: str
) -> None:
    prefix, real, refusing, step = closer_refused(aws, window_table)
    assert batch(step, [CLOSER]) == RESULTS  # committed: the batch does not fail
    assert refusing.refused == 1
    assert entries(aws, window_table, prefix) == []  # its commit's pending log holds it meanwhile
    refusing.refusing = False
    assert batch(step, [(11, doc("c", 62))]) == []  # rolls its own log forward at last
    assert entries(aws, window_table, prefix) == [outbox_sk((10, 0, ()))]
    again = window(window_table, prefix, real)  # a restart, from the checkpoint before the closer
    assert batch(again, [CLOSER, (11, doc("c", 62)), (12, doc("c", 63))]) == RESULTS
    assert again.late == 0


def test_an_entry_whose_write_failed_is_read_through_its_pending_log_by_the_next_process(
    aws: Callable[[str], Any], window_table: str
) -> None:
    """The process that committed the closer dies after its entry's write failed: the next
    one reads the entry in the commit's log, still pending (lanes mode's redo log, slice
    S4a), and a batch that finds that log two commits old rolls it forward."""
    prefix, real, _, step = closer_refused(aws, window_table)
    assert batch(step, [CLOSER]) == RESULTS
    assert entries(aws, window_table, prefix) == []
    nxt = window(window_table, prefix, real)
    assert batch(nxt, [(11, doc("c", 62))]) == []
    again = window(window_table, prefix, real)
    assert batch(again, [CLOSER, (11, doc("c", 62)), (12, doc("c", 63))]) == RESULTS
    assert batch(nxt, [(13, doc("c", 64))]) == []  # finds it two commits old: helps
    assert entries(aws, window_table, prefix) == [outbox_sk((10, 0, ()))]


def test_a_next_commit_whose_roll_forward_fails_too_still_commits_and_a_later_one_rolls_both(
    aws: Callable[[str], Any], window_table: str
) -> None:
    """The outcomes are final at the commit: a roll-forward refused again does not fail
    the batch; the logs stay pending (read through) until a commit rolls them forward."""
    prefix, real, refusing, step = closer_refused(aws, window_table)
    assert batch(step, [CLOSER]) == RESULTS
    assert batch(step, [(11, doc("c", 62))]) == []  # committed; its entry refused again
    assert entries(aws, window_table, prefix) == []
    again = window(window_table, prefix, real)
    assert batch(again, [CLOSER, (11, doc("c", 62))]) == RESULTS
    refusing.refusing = False
    assert batch(step, [(12, doc("c", 63))]) == []
    assert entries(aws, window_table, prefix) == [outbox_sk((10, 0, ()))]
    again = window(window_table, prefix, real)
    assert batch(again, [CLOSER, (11, doc("c", 62)), (12, doc("c", 63))]) == RESULTS


BIG = [(1 + u, doc(f"user{u:04d}", 5)) for u in range(1700)]  # results of about 400 KB


@pytest.mark.parametrize("part", [None, 1], ids=["whole", "one-part"])
def test_an_entry_in_parts_whose_write_failed_is_whole_after_the_next_commit(
    aws: Callable[[str], Any], window_table: str, part: int | None
) -> None:
    prefix, real = uuid.uuid4().hex, aws("dynamodb")
    refusing = RefusingEntries(real, part)
    step = on(window(window_table, prefix, real), window_table, prefix, refusing)
    assert batch(step, BIG) == []
    closer = (5000, doc("c", 61))
    refusing.refusing = True
    first = batch(step, [closer])
    assert len(first) == 1700
    assert refusing.refused >= 1
    refusing.refusing = False
    assert batch(step, [(5001, doc("c", 62))]) == []
    sk = outbox_sk((5000, 0, ()))
    kept = [e for e in entries(aws, window_table, prefix) if e.startswith(sk)]
    assert len(kept) > 1  # in parts (over 350 KB)
    again = window(window_table, prefix, real)
    assert batch(again, [closer, (5001, doc("c", 62)), (5002, doc("c", 63))]) == first


def test_a_window_that_closed_in_the_batch_that_applied_its_records(
    aws: Callable[[str], Any], window_table: str
) -> None:
    prefix, client = uuid.uuid4().hex, aws("dynamodb")
    step = window(window_table, prefix, client)
    assert batch(step, [A1, B2, A3, CLOSER]) == RESULTS
    assert batch(step, [(11, doc("c", 62))]) == []
    again = window(window_table, prefix, client)
    assert batch(again, [A1, B2, A3, CLOSER, (11, doc("c", 62)), (12, doc("c", 63))]) == RESULTS
    assert again.late == 0


def test_hopping_windows_some_closed_redelivered_after_a_restart(
    aws: Callable[[str], Any], window_table: str
) -> None:
    """Windows of 60 s every 30 s. c@70 closes a's windows at -30 and 0 and b's at 0;
    a@40 and b@35 stay in the windows at 30 too. Redelivered from the start after a
    restart (records in a closed and an open window, or only closed ones): no result
    twice with other content, nothing late, and the next close counts each record once,
    as a run without the restart does."""
    recs = [(1, doc("a", 5)), (2, doc("b", 35)), (3, doc("a", 40))]
    later = [(4, doc("c", 70)), (5, doc("c", 71))]
    client = aws("dynamodb")
    ref_prefix = uuid.uuid4().hex
    ref = _hop(window_table, ref_prefix, client)
    expected = batch(ref, recs) + batch(ref, later[:1]) + batch(ref, later[1:])
    expected += batch(ref, [(6, doc("c", 72))]) + batch(ref, [(7, doc("c", 100))])
    prefix = uuid.uuid4().hex
    step = _hop(window_table, prefix, client)
    got = batch(step, recs) + batch(step, later[:1]) + batch(step, later[1:])
    again = _hop(window_table, prefix, client)  # a restart: everything again, from record 1
    got += batch(again, [*recs, *later, (6, doc("c", 72))])
    got += batch(again, [(7, doc("c", 100))])
    assert again.late == 0
    by_id: dict[str, dict[str, Any]] = {}
    for r in got:
        assert by_id.setdefault(r["id"], r) == r  # a duplicate only with the same content
    assert sorted(by_id.values(), key=lambda r: r["id"]) == sorted(expected, key=lambda r: r["id"])
    assert len(expected) == 6  # a at -30, a and b at 0; then a, b and c at 30


def _hop(table: str, prefix: str, client: Any) -> Window:
    from processors.window import Window  # noqa: PLC0415

    store = DynamoDBStore(table, prefix, 0, 60, client=client, high_water=True)
    args = {"key": "user", "size_s": 60, "slide_s": 30, "field": "ts",
            "aggregate": AGGREGATE, "function": "f"}  # fmt: skip
    return Window(**args, store=store)


def test_a_quiet_shard_s_results_with_a_closer_whose_entry_write_failed(
    aws: Callable[[str], Any], window_table: str
) -> None:
    """s1's batch closes quiet s0's windows: their results go out with s1's closer, whose
    entry write after the transaction fails. s1's next batch writes it; redelivered from
    before the closer after a restart, s1 yields those results again."""
    from tests.integration.test_window_round_trips import batch_on, step_on  # noqa: PLC0415
    from tests.integration.test_window_state import DOCS  # noqa: PLC0415

    prefix, real, clock = uuid.uuid4().hex, aws("dynamodb"), [10_000.0]
    refusing = RefusingEntries(real)
    batch_on(step_on(window_table, prefix, real, clock, lanes=True), "s0", DOCS, 1)  # a, b on s0
    s1 = step_on(window_table, prefix, refusing, clock, lanes=True)
    z = [{"user": "z", "ts": 9_990 + n} for n in range(4)]
    assert batch_on(s1, "s1", z[:1], 1) == []
    clock[0] += 301  # s0 is quiet now
    refusing.refusing = True
    closing = batch_on(s1, "s1", z[1:2], 2)
    assert closing == [("f/a/1970-01-01T00:00:00Z", 2, "s1"),
                       ("f/b/1970-01-01T00:00:00Z", 1, "s1")]  # fmt: skip
    assert refusing.refused == 1
    refusing.refusing = False
    assert batch_on(s1, "s1", z[2:3], 3) == []
    again = step_on(window_table, prefix, real, clock, lanes=True)  # a restart, before the closer
    assert batch_on(again, "s1", z[1:4], 2) == closing


def test_a_child_s_batch_redelivered_after_a_restart_once_its_claimed_windows_closed(
    aws: Callable[[str], Any], window_table: str
) -> None:
    """A split's child claims its parent's windows of a and b with its first batch, closes
    them with its next; redelivered from its first record after a restart, it yields the
    results again, counts nothing twice and sends nothing to the late sink."""
    import orjson  # noqa: PLC0415

    from processors.chain import Chain, Step  # noqa: PLC0415
    from processors.lineage import StaticLineage  # noqa: PLC0415
    from processors.window import Window  # noqa: PLC0415
    from stream.records import Record  # noqa: PLC0415

    prefix, client = uuid.uuid4().hex, aws("dynamodb")
    lineage = StaticLineage({"c1": ("p",), "c2": ("p",)})

    def step() -> Window:
        store = DynamoDBStore(window_table, prefix, 0, 60, client=client, high_water=True)
        return Window(key="user", size_s=60, field="ts", aggregate={"n": "count"},
                      function="f", store=store, lineage=lineage, late="late")  # fmt: skip

    def on(w: Window, shard: str, docs: list[tuple[int, str, int]]) -> list[Any]:
        batch = [Record(orjson.dumps({"user": u, "ts": t}), u, str(seq), shard_id=shard, index=i)
                 for i, (seq, u, t) in enumerate(docs)]  # fmt: skip
        result = Chain([Step.of("w", w)]).run(batch)
        assert not result.failures, result.failures
        return sorted((r.get("window_id"), r.get("n"), r.routes) for r in result.records)

    assert on(step(), "p", [(1, "a", 5), (2, "b", 6)]) == []
    c1 = step()
    first, closer, later = [(10, "a", 20), (11, "b", 30)], [(12, "y", 61)], [(13, "y", 62)]
    assert on(c1, "c1", first) == []  # claims a and b
    results = on(c1, "c1", closer)
    assert results == [("f/a/1970-01-01T00:00:00Z", 2, None),
                       ("f/b/1970-01-01T00:00:00Z", 2, None)]  # fmt: skip
    assert on(c1, "c1", later) == []
    again = step()
    assert on(again, "c1", [*first, *closer, *later, (14, "y", 63)]) == results
    assert again.late == 0
    assert on(again, "c1", [(15, "y", 130)]) == [("f/y/1970-01-01T00:01:00Z", 3, None)]


def test_a_batch_s_outbox_entries_are_read_for_exactly_its_positions_parts_included(
    aws: Callable[[str], Any], window_table: str
) -> None:
    """Review 6's nit: the range ended at ``outbox_sk(last) + "~~"``, which sorts before
    the parts (``~I``) of an entry at (s, sub, ()) when the batch's last record is (s, sub,
    (1,)): that entry was never read. Now it is, and nothing outside first..last is."""
    from processors.window_store import Outcome, ShardState, _Cached  # noqa: PLC0415

    prefix, client = uuid.uuid4().hex, aws("dynamodb")
    store = DynamoDBStore(window_table, prefix, 0, 60, client=client, high_water=True)
    big = Outcome(tuple({"window_id": f"f/{i}", "pad": "x" * 1000} for i in range(400)))
    small = Outcome(({"window_id": "f/s", "n": 1},))
    outbox = {(7, 0, ()): big, (7, 0, (1,)): small, (6, 0, ()): small, (7, 0, (2,)): small,
              (7, 1, ()): small, (8, 0, ()): small}  # fmt: skip
    cached = _Cached(ShardState(), None, None, lanes=True)
    puts = store._outbox_puts({"S": prefix + "s0"}, cached, outbox, 10_000)
    assert len(puts[7, 0, ()]) == 2  # in parts: ~o#...#~000, ~001
    for parts in puts.values():
        for put in parts:
            client.put_item(**put)
    assert store.outcomes("s0", (7, 0, ()), (7, 0, (1,))) == {(7, 0, ()): big, (7, 0, (1,)): small}
    assert store.outcomes("s0", (7, 0, (1,)), (7, 1, ())) == {
        (7, 0, (1,)): small,
        (7, 0, (2,)): small,
        (7, 1, ()): small,
    }
