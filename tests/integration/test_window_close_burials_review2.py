"""Review of issue 17 (a closed window's item deleted, not written closed) across a
``parallelization`` change and reshards, on the session moto server. Each scenario runs
twice: on the new path, and on a twin whose one-lane commits list no starts (the old path:
read whole, closed windows written closed with a TTL, nothing deleted), and the two must
yield the same results and count the same late records.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from processors import window_starts
from tests.integration.test_window_close_burials import old_path, window_sks
from tests.integration.test_window_starts import shard_item
from tests.integration.test_window_tick import on
from tests.integration.test_window_tick import step as ticking_step
from tests.integration.test_window_tick_reshards import Setup

pytestmark = pytest.mark.integration


class TestDead:
    def test_a_closed_window_at_a_listed_start_is_not_dead(self) -> None:
        """``dead`` takes a window key (key, start); it said every closed window was dead
        once any start was listed: it built the prefix from the whole key tuple
        (``w#('u0', 60)#``, never listed), since the merge with ``start_prefix`` taking
        the start alone (6084faa). The contract: dead only at a start not listed."""
        assert window_starts.dead(("u0", 60), frozenset({"w#60#"})) is False
        assert window_starts.dead(("u0", 0), frozenset({"w#60#"})) is True
        assert window_starts.dead(("u0", 0), None) is False


def minute_docs(m: int, users: int = 3) -> list[dict[str, Any]]:
    return [{"user": f"u{u}", "ts": m * 60 + u} for u in range(users)]


class TestLanesAfterACommitThatListedNone:
    def test_a_redelivered_batch_after_a_lanes_quiet_close_equals_the_twin(
        self, aws, window_table, monkeypatch
    ):
        """The gap the author named: s0's commits listed starts (minute 0's windows
        deleted), then its last one-lane commit listed none (as past ``STARTS_MAX``), and a
        lanes batch of s1 closed s0 as quiet (s0's item: ``n``, no ``legacy_applied``, no
        ``starts``: :meth:`_Cached.one_lane_wrote` is false). s0's last batch comes again
        to lanes mode, with a record late the first time (minute 0, deleted): its results
        and late count equal the twin's (nothing deleted)."""
        client = aws("dynamodb")
        late_doc = {"user": "late", "ts": 5}  # minute 0 closed (deleted) before batch 3
        got: dict[str, tuple[list[Any], list[Any], int]] = {}
        for name, deleting in (("new", True), ("twin", False)):
            prefix, clock = uuid.uuid4().hex, [10_000.0]

            def new(lanes: bool, prefix: str = prefix, clock: list[float] = clock) -> Any:
                return ticking_step(window_table, prefix, client, clock, lanes=lanes)

            batches = [minute_docs(0), minute_docs(1), [*minute_docs(2), late_doc]]
            firsts = []
            for i, docs in enumerate(batches):
                one_lane = new(False)
                if deleting and i < 2:
                    firsts.append(on(one_lane, "s0", docs, 100 * i + 1))
                else:
                    with old_path(monkeypatch):
                        firsts.append(on(one_lane, "s0", docs, 100 * i + 1))
                assert one_lane.late == (1 if i == 2 else 0)
            if deleting:
                assert not any(sk.startswith("w#0#") for sk in window_sks(aws, window_table,
                                                                         prefix))  # fmt: skip
            assert "starts" not in shard_item(aws, window_table, prefix)
            assert on(new(True), "s1", [{"user": "z", "ts": 20_000}], 1) == []
            clock[0] += 400
            closer = on(new(True), "s1", [{"user": "z", "ts": 20_001}], 2)
            item = shard_item(aws, window_table, prefix)
            assert "n" in item
            assert "legacy_applied" not in item
            assert "starts" not in item
            lanes = new(True)
            again = on(lanes, "s0", batches[2], 201)
            got[name] = (firsts, closer, again, lanes.late)
        assert got["new"] == got["twin"]
        firsts, closer, again, late = got["new"]
        assert again == firsts[2]  # the closer's results again
        assert late == 1  # the late record is late again
        assert sorted(r["key"] for r in closer) == ["u0", "u1", "u2"]  # minute 2's


def results(found: list[Any]) -> list[Any]:
    return sorted((r["window_id"], r["n"]) if isinstance(r, dict) else r for r in found)


class TestASplit:
    @pytest.mark.parametrize("lanes", [False, True], ids=["one-lane", "lanes"])
    def test_the_children_of_a_parent_that_buried_its_closed_windows_equal_the_twin(
        self, aws, window_table, monkeypatch, lanes
    ):
        """p (one lane) closes minute 0 (deleted on the new path, written closed on the
        twin) and leaves minute 1 open; p splits into c1 and c2 (one lane, or lanes mode:
        ``parallelization`` raised at the split). The children's results (minute 1 of
        each key, claimed; a record of minute 0 late) equal the twin's."""
        got = {}
        for name, deleting in (("new", True), ("twin", False)):
            parent = Setup(aws, window_table, {"c1": ("p",), "c2": ("p",)}, lanes=False,
                           kind="window")  # fmt: skip
            found = []
            for i, m in enumerate((0, 1)):
                if deleting:
                    found += parent.on("p", minute_docs(m), 100 * i + 1)
                else:
                    with old_path(monkeypatch):
                        found += parent.on("p", minute_docs(m), 100 * i + 1)
            sks = window_sks(aws, window_table, parent.prefix, "p")
            assert any(sk.startswith("w#0#") for sk in sks) is not deleting
            children = Setup(aws, window_table, {"c1": ("p",), "c2": ("p",)}, lanes=lanes,
                             kind="window")  # fmt: skip
            children.prefix, children.clock = parent.prefix, parent.clock
            found += children.on("c1", [{"user": "u0", "ts": 125}, {"user": "u0", "ts": 10}], 1)
            found += children.on("c2", [{"user": "u1", "ts": 130}, {"user": "u2", "ts": 131}], 1)
            found += children.on("c1", [{"user": "u0", "ts": 200}], 10)
            got[name] = results(found)
        assert got["new"] == got["twin"]
        assert ("late", "u0") in got["new"]
        assert ("f/u0/1970-01-01T00:01:00Z", 1) in got["new"]  # p's minute 1 of u0
        assert ("f/u0/1970-01-01T00:02:00Z", 1) in got["new"]


class TestAMerge:
    @pytest.mark.parametrize("lanes", [False, True], ids=["one-lane", "lanes"])
    def test_one_parent_closed_a_window_the_other_still_has_open(
        self, aws, window_table, monkeypatch, lanes
    ):
        """p1 closed u0's minute 0 (deleted on the new path), p2 still holds it open; c
        merges them. c's results (u0's minute 0 from p2's record, closed by c) equal the
        twin's."""
        got = {}
        for name, deleting in (("new", True), ("twin", False)):
            lineage = {"c": ("p1", "p2")}
            parents = Setup(aws, window_table, lineage, lanes=False, kind="window")
            found = []
            if deleting:
                found += parents.on("p1", minute_docs(0, 1) + minute_docs(1, 1), 1)
            else:
                with old_path(monkeypatch):
                    found += parents.on("p1", minute_docs(0, 1) + minute_docs(1, 1), 1)
            found += parents.on("p2", [{"user": "u0", "ts": 30}], 1)
            sks = window_sks(aws, window_table, parents.prefix, "p1")
            assert ('w#0#"u0"' in sks) is not deleting
            child = Setup(aws, window_table, lineage, lanes=lanes, kind="window")
            child.prefix, child.clock = parents.prefix, parents.clock
            found += child.on("c", [{"user": "u0", "ts": 70}, {"user": "u1", "ts": 130}], 1)
            found += child.on("c", [{"user": "u0", "ts": 40}, {"user": "u1", "ts": 200}], 10)
            got[name] = results(found)
        assert got["new"] == got["twin"]
        assert ("f/u0/1970-01-01T00:00:00Z", 1) in got["new"]  # p1's, and p2's (by c)


class TestALaggingLaneAfterTheConversion:
    def test_a_new_record_of_a_window_that_never_had_an_item_is_late_not_decided(
        self, aws, window_table, monkeypatch
    ):
        """One lane applies 1-3 (z at 3 closes x's and y's window 0: buried on the new
        path). Lanes mode: w's lane commits 5 (the conversion: ``legacy_applied`` 3); a
        lagging lane delivers y's 2 again and v's new 4, in window 0 (closed, never an
        item). 2 is decided (one lane applied it: nothing again, not late); 4 lies after
        the one-lane applied, so "decided up to 3" does not cover it: it is late, counted
        once, as on the twin. Its redelivery, cold, is late again."""
        from tests.integration.test_window_conversion import run as conv_run  # noqa: PLC0415
        from tests.integration.test_window_conversion import step as conv_step  # noqa: PLC0415

        got = {}
        for name, deleting in (("new", True), ("twin", False)):
            prefix = f"c{uuid.uuid4().hex[:8]}:"
            one = conv_step(aws, window_table, prefix, lanes=False)
            conv_run(one, [(1, "x", 1.0), (2, "y", 50.0)])
            if deleting:
                closer = conv_run(one, [(3, "z", 200.0)])
            else:
                with old_path(monkeypatch):
                    closer = conv_run(one, [(3, "z", 200.0)])
            sks = {i["window"]["S"] for i in window_items(aws, window_table, f"{prefix}s0")
                   if "tombstone" not in i}  # fmt: skip
            assert ('w#0#"x"' in sks) is not deleting
            assert conv_run(conv_step(aws, window_table, prefix, lanes=True),
                            [(5, "w", 201.0)]) == []  # fmt: skip
            lagging = conv_step(aws, window_table, prefix, lanes=True)
            out = conv_run(lagging, [(2, "y", 50.0), (4, "v", 10.0)])
            cold = conv_step(aws, window_table, prefix, lanes=True)
            again = conv_run(cold, [(2, "y", 50.0), (4, "v", 10.0)])
            got[name] = (closer, out, lagging.late, again, cold.late)
        assert got["new"] == got["twin"]
        assert got["new"][1:] == ([], 1, [], 1)


def window_items(aws: Any, table: str, pk: str) -> list[dict[str, Any]]:
    """The items of partition ``pk`` (strongly consistent ``Query``)."""
    client = aws("dynamodb")
    return client.query(TableName=table, ConsistentRead=True,
                        KeyConditionExpression="#s = :p", ExpressionAttributeNames={"#s": "shard"},
                        ExpressionAttributeValues={":p": {"S": pk}})["Items"]  # fmt: skip
