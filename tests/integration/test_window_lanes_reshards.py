"""Lanes mode's quiet shards and reshards on the commit counter (issue 16, slice S5;
design ``parallel-windows.md`` §5.2, §5.3) on the session's moto server: a quiet shard's
close is a commit with a log, in one transaction with the closer's, each on its ``n``; a
child marks its parents on their ``n`` and claims inherited windows before its commit,
conditional on ``owner``; a child's claim finds the parent's items rolled forward; a
roll-forward keeps a child's claim.

Window steps on their own ``DynamoDBStore`` stand for processes (lanes of one shard, or
shards); interleavings run one step's batch inside a call of another's (its commit), in
one thread: the order is exact, no sleeps. Faults are client wrappers: every call they do
not refuse goes to the real client."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from botocore.exceptions import ClientError

from processors.chain import Chain, Step
from processors.lineage import StaticLineage
from processors.window import Window
from processors.window_store import DynamoDBStore
from stream.records import Record
from tests.integration.test_window_state import items

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.integration

WINDOW_A = "f/a/1970-01-01T00:00:00Z"
WINDOW_B = "f/b/1970-01-01T00:00:00Z"


class Client:
    """The real client. ``before_commit``: run once before the next commit (an
    ``UpdateItem`` of a ``#shard`` that adds to ``pending``, recorded as ``commit``, or a
    quiet-shard transaction); ``before_mark``: once before a child's next mark of a
    parent; ``refuse_rolls``: refuse the roll-forward ``PutItem``\\ s of
    window items of partitions starting so (not log parts); ``calls``: (operation, what)
    with ``what`` for a ``Query`` ``log`` or ``partition``."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.before_commit: Callable[[], Any] | None = None
        self.before_mark: Callable[[], Any] | None = None
        self.refuse_rolls: str | None = None
        self.calls: list[tuple[str, str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def _hook(self) -> None:
        hook, self.before_commit = self.before_commit, None
        if hook is not None:
            hook()

    def update_item(self, **request: Any) -> Any:
        commit = "ADD #p" in request.get("UpdateExpression", "")
        if commit:
            self._hook()
        if request.get("UpdateExpression", "").startswith("ADD children"):
            hook, self.before_mark = self.before_mark, None
            if hook is not None:
                hook()
        self.calls.append(("update_item", "commit" if commit else request["Key"]["window"]["S"]))
        return self._client.update_item(**request)

    def transact_write_items(self, **request: Any) -> Any:
        self._hook()
        self.calls.append(("transact_write_items", ""))
        return self._client.transact_write_items(**request)

    def put_item(self, **request: Any) -> Any:
        item = request["Item"]
        if (
            self.refuse_rolls is not None
            and item["shard"]["S"].startswith(self.refuse_rolls)
            and item["window"]["S"].startswith("w#")
        ):
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "injected"}},
                              "PutItem")  # fmt: skip
        return self._client.put_item(**request)

    def query(self, **request: Any) -> Any:
        low = request["ExpressionAttributeValues"].get(":l", {}).get("S", "")
        self.calls.append(("query", "log" if low.startswith("#log#") else low or "partition"))
        return self._client.query(**request)


def process(
    aws: Callable[[str], Any],
    table: str,
    prefix: str,
    clock: list[float] | None = None,
    lineage: StaticLineage | None = None,
) -> tuple[Window, Client]:
    """A lanes-mode window step (``parallelization`` 2) on its own store and client;
    with ``clock``, quiet shards after 300 s."""
    client = Client(aws("dynamodb"))
    now = (lambda: clock[0]) if clock is not None else (lambda: 10_000.0)
    store = DynamoDBStore(table, prefix, 0, 60, client=client, now=now, high_water=True)
    step = Window(key="user", size_s=60, field="ts", aggregate={"n": "count"}, function="f",
                  store=store, quiet_s=300 if clock is not None else None, now=now,
                  lineage=lineage or StaticLineage(), late="late",
                  parallelization=2)  # fmt: skip
    return step, client


def on(step: Window, shard: str, docs: list[tuple[str, float]], seq: int) -> list[Any]:
    """Records (user, ts) of ``shard`` from sequence number ``seq`` through the step: its
    results as (window_id, n, shard), late ones as ("late", user); a failure fails."""
    batch = [Record(orjson.dumps({"user": u, "ts": t}), u, str(seq + i), shard_id=shard, index=i)
             for i, (u, t) in enumerate(docs)]  # fmt: skip
    out = Chain([Step.of("w", step)]).run(batch)
    assert not out.failures, out.failures
    return [("late", r.json["user"]) if r.routes == ("late",) else
            (r.get("window_id"), r.get("n"), r.shard_id) for r in out.records]  # fmt: skip


def window_items(aws: Callable[[str], Any], table: str, pk: str) -> dict[str, dict[str, Any]]:
    return {i["window"]["S"]: i for i in items(aws, table, pk)
            if i["shard"]["S"] == pk and i["window"]["S"].startswith("w#")}  # fmt: skip


class TestAChildClaimsOfItsParents:
    def test_a_window_only_in_the_parent_s_pending_log_is_claimed(self, aws, window_table):
        """The parent's commit of window a is pending (its roll-forward refused: the item
        exists only in the log). The child's record of a claims it: the claim finds the
        item because the child rolls the parent's pending log forward first; without
        that, the claim's ``attribute_exists`` fails on every attempt and the batch
        fails. The window comes out once, with the parent's record."""
        prefix = f"t{uuid.uuid4().hex[:8]}:"
        lineage = StaticLineage({"c": ("p",)})
        parent, parent_client = process(aws, window_table, prefix, lineage=lineage)
        parent_client.refuse_rolls = prefix
        assert on(parent, "p", [("a", 5.0)], 1) == []
        assert window_items(aws, window_table, prefix + "p") == {}  # only in the pending log
        child, _ = process(aws, window_table, prefix, lineage=lineage)
        assert on(child, "c", [("a", 20.0)], 100) == []
        held = window_items(aws, window_table, prefix + "p")
        assert [i["owner"]["S"] for i in held.values()] == ["c"]
        assert on(child, "c", [("x", 100.0)], 101) == [(WINDOW_A, 2, "c")]

    def test_a_roll_forward_of_a_parent_s_log_keeps_the_child_s_claim(self, aws, window_table):
        """Window a's item is at the parent's first commit, its second commit's log
        pending. Child c1's roll-forward of that log is refused, so c1 claims the older
        item in place. Then c2 (the other child of the split) reads the parent and rolls
        the log forward: the item takes the log's content and keeps ``owner`` c1, so c2
        holds a as another's and never closes it. With a ``PutItem`` that dropped the
        claim, c2 inherited a, claimed it too and closed it: the window came out twice."""
        prefix = f"t{uuid.uuid4().hex[:8]}:"
        lineage = StaticLineage({"c1": ("p",), "c2": ("p",)})
        parent, parent_client = process(aws, window_table, prefix, lineage=lineage)
        assert on(parent, "p", [("a", 5.0)], 1) == []
        parent_client.refuse_rolls = prefix
        assert on(parent, "p", [("a", 6.0)], 2) == []
        c1, c1_client = process(aws, window_table, prefix, lineage=lineage)
        c1_client.refuse_rolls = prefix + "p"  # its roll-forward of the parent's log
        assert on(c1, "c1", [("a", 20.0)], 100) == []
        c1_client.refuse_rolls = None
        (held,) = window_items(aws, window_table, prefix + "p").values()
        assert (held["owner"]["S"], held["n"]["N"]) == ("c1", "1")  # claimed in place
        c2, _ = process(aws, window_table, prefix, lineage=lineage)
        assert on(c2, "c2", [("b", 10.0)], 200) == []  # rolls the parent's log forward
        (held,) = window_items(aws, window_table, prefix + "p").values()
        assert (held["owner"]["S"], held["n"]["N"]) == ("c1", "2")
        out = on(c1, "c1", [("a", 100.0)], 101)
        out += on(c2, "c2", [("b", 100.0)], 201)
        assert sorted(out) == [(WINDOW_A, 3, "c1"), (WINDOW_B, 1, "c2")]


class TestTwoLanesOfAChild:
    def test_racing_on_the_child_s_first_commit_counts_each_window_once(self, aws, window_table):
        """Two lanes of a new child (two processes), each inheriting the parent's
        windows: lane A claims a, and lane B's whole batch (it claims b and commits
        first) runs inside A's commit. A's commit loses its condition; A reads again,
        takes its own claim again (``owner`` is this shard) and commits. Both windows
        come out once with every record."""
        prefix = f"t{uuid.uuid4().hex[:8]}:"
        lineage = StaticLineage({"c": ("p",)})
        parent, _ = process(aws, window_table, prefix, lineage=lineage)
        assert on(parent, "p", [("a", 5.0), ("b", 6.0)], 1) == []
        lane_a, a_client = process(aws, window_table, prefix, lineage=lineage)
        lane_b, _ = process(aws, window_table, prefix, lineage=lineage)
        a_client.before_commit = lambda: on(lane_b, "c", [("b", 21.0)], 102)
        assert on(lane_a, "c", [("a", 20.0)], 101) == []
        assert a_client.calls.count(("update_item", "commit")) == 2  # lost, then again
        held = window_items(aws, window_table, prefix + "p")
        assert sorted(i["owner"]["S"] for i in held.values()) == ["c", "c"]
        out = on(lane_a, "c", [("a", 100.0)], 103)
        out += on(lane_b, "c", [("b", 101.0)], 104)
        assert sorted(out) == [(WINDOW_A, 2, "c"), (WINDOW_B, 2, "c")]


class TestAQuietShardAndItsOwnLane:
    def test_its_lane_commits_inside_the_close_the_closer_reads_again(self, aws, window_table):
        """s1's batch closes quiet s0's window a; inside its transaction a lane of s0
        commits a record of a: the transaction loses s0's condition (its ``n`` moved),
        s1 reads again and finds s0 awake: nothing closes. s0 closes a itself, with
        both records, once."""
        prefix = f"t{uuid.uuid4().hex[:8]}:"
        clock = [10_000.0]
        s0, _ = process(aws, window_table, prefix, clock)
        assert on(s0, "s0", [("a", 5.0)], 1) == []
        s1, s1_client = process(aws, window_table, prefix, clock)
        assert on(s1, "s1", [("z", 20_000.0)], 1) == []
        clock[0] += 400
        s0_lane, _ = process(aws, window_table, prefix, clock)
        s1_client.before_commit = lambda: on(s0_lane, "s0", [("a", 30.0)], 2)
        assert on(s1, "s1", [("z", 20_001.0)], 2) == []
        assert ("transact_write_items", "") in s1_client.calls  # it tried the close
        out = on(s0, "s0", [("y", 100.0)], 3)
        out += on(s1, "s1", [("z", 20_002.0)], 3)
        assert out == [(WINDOW_A, 2, "s0")]

    def test_the_close_commits_inside_its_lane_s_commit_the_lane_catches_up(
        self, aws, window_table
    ):
        """A lane of quiet s0 applies a record of a; inside its commit, s1's batch closes
        s0's a (a commit of s0 with a log, in one transaction with s1's). The lane's
        commit loses its condition, catches up from the close's log (no read of the
        partition: before S5 the close carried no log) and finds a closed: its record
        is late. a comes out once, from s1."""
        prefix = f"t{uuid.uuid4().hex[:8]}:"
        clock = [10_000.0]
        s0, s0_client = process(aws, window_table, prefix, clock)
        assert on(s0, "s0", [("a", 5.0)], 1) == []
        s1, _ = process(aws, window_table, prefix, clock)
        assert on(s1, "s1", [("z", 20_000.0)], 1) == []
        clock[0] += 400
        closing: list[Any] = []
        s0_client.before_commit = lambda: closing.extend(on(s1, "s1", [("z", 20_001.0)], 2))
        calls = len(s0_client.calls)
        assert on(s0, "s0", [("a", 30.0)], 2) == [("late", "a")]
        assert closing == [(WINDOW_A, 1, "s1")]
        mine = s0_client.calls[calls:]
        assert ("query", "log") in mine
        assert ("query", "partition") not in mine
        assert on(s0, "s0", [("a", 20_000.0)], 3) == []
        assert on(s1, "s1", [("z", 20_002.0)], 3) == []

    def test_a_child_s_first_commit_inside_the_close_keeps_the_parent_s_window(
        self, aws, window_table
    ):
        """Parent p is quiet; s1's batch would close p's window a, and inside its
        transaction p's child c has its first batch: it inherits a and marks p. The close
        is conditional on p having no ``children``, so it fails; s1 reads again, leaves
        the marked p to its child, and a comes out once, from c. Without the condition
        (the mark moves no ``n``) s1 closed a while c went on with it: twice."""
        prefix = f"t{uuid.uuid4().hex[:8]}:"
        clock = [10_000.0]
        lineage = StaticLineage({"c": ("p",)})
        parent, _ = process(aws, window_table, prefix, clock, lineage)
        assert on(parent, "p", [("a", 5.0)], 1) == []
        s1, s1_client = process(aws, window_table, prefix, clock, lineage)
        assert on(s1, "s1", [("z", 20_000.0)], 1) == []
        clock[0] += 400
        child, _ = process(aws, window_table, prefix, clock, lineage)
        s1_client.before_commit = lambda: on(child, "c", [("b", 30.0)], 100)
        assert on(s1, "s1", [("z", 20_001.0)], 2) == []
        assert ("transact_write_items", "") in s1_client.calls  # it tried the close
        out = on(child, "c", [("x", 100.0)], 101)
        out += on(s1, "s1", [("z", 20_002.0)], 3)
        assert sorted(out) == [(WINDOW_A, 1, "c"), (WINDOW_B, 1, "c")]

    def test_a_close_between_the_child_s_read_and_its_mark_makes_the_child_read_again(
        self, aws, window_table
    ):
        """Parent p is quiet; its child c's first batch reads p (window a open) and,
        before c marks p, s1's batch closes a. The mark is conditional on p's ``n``,
        which the close moved: c reads p again, finds a closed, and its record of a is
        late. a comes out once, from s1. Without the condition c went on with a (and
        claimed it: the close sets no ``owner``): twice."""
        prefix = f"t{uuid.uuid4().hex[:8]}:"
        clock = [10_000.0]
        lineage = StaticLineage({"c": ("p",)})
        parent, _ = process(aws, window_table, prefix, clock, lineage)
        assert on(parent, "p", [("a", 5.0)], 1) == []
        s1, _ = process(aws, window_table, prefix, clock, lineage)
        assert on(s1, "s1", [("z", 20_000.0)], 1) == []
        clock[0] += 400
        child, child_client = process(aws, window_table, prefix, clock, lineage)
        closing: list[Any] = []
        child_client.before_mark = lambda: closing.extend(on(s1, "s1", [("z", 20_001.0)], 2))
        out = on(child, "c", [("a", 30.0)], 100)
        assert closing == [(WINDOW_A, 1, "s1")]
        out += on(child, "c", [("x", 20_000.0)], 101)  # c holds no window of p: nothing closes
        out += on(s1, "s1", [("z", 20_002.0)], 3)
        assert out == [("late", "a")]
