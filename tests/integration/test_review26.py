"""Review 26: the tombstones that bury a dead window's item (review 25's fix) against every
reader of a whole partition. Each scenario runs twice, as in
``test_window_close_burials_review2``: on the burials' path, and on a twin whose one-lane
commits list no starts (the old path: closed windows written closed at their commit,
nothing buried), and the two must yield the same results and count the same late records.

The burial is made to land late: the one-lane batch runs in a thread whose real
``BatchWriteItem`` waits on an ``Event`` (a deferred burial still in flight, a worker
paused in it) while other processes go on; then it goes through, as sent. Against the
session moto server; the order is forced with events, never timed.
"""

from __future__ import annotations

import threading
import uuid
from contextlib import nullcontext
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from processors.chain import Chain, Step
from processors.window import Window
from processors.window_store import DynamoDBStore
from stream.records import Record
from tests.integration.test_window_close_burials import old_path, tombstones, window_sks
from tests.integration.test_window_tick_reshards import ARN, Setup

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from contextlib import AbstractContextManager

pytestmark = pytest.mark.integration

DEADLINE_S = 60.0


class Held:
    """The real client; once ``armed``, its next ``BatchWriteItem`` (a burial) says it got
    there (``reached``) and waits for ``go`` before it is sent, as it was built."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.armed = False
        self.reached = threading.Event()
        self.go = threading.Event()
        self.sent: list[list[str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def batch_write_item(self, **request: Any) -> Any:
        if self.armed:
            self.armed = False
            self.reached.set()
            if not self.go.wait(DEADLINE_S):
                raise AssertionError("the burial was never let go")
        self.sent.append(sorted(r["PutRequest"]["Item"]["window"]["S"]
                                for rs in request["RequestItems"].values()
                                for r in rs))  # fmt: skip
        return self.client.batch_write_item(**request)


def path(monkeypatch: pytest.MonkeyPatch, burying: bool) -> AbstractContextManager[None]:
    """The burials' path (``burying``), or the twin's: the old path, whose commits list no
    starts, so closed windows are written closed (:func:`old_path`)."""
    return nullcontext() if burying else old_path(monkeypatch)


def in_thread(go: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(go())
        except BaseException as exc:  # the test reads it
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def held_batch(held: Held, go: Callable[[], Any], burying: bool) -> Iterator[list[Any]]:
    """Run ``go`` (a one-lane batch); on the burials' path, in a thread held at its burial:
    yields while it is held, then lets it go and yields its result."""
    if not burying:
        result = go()
        yield []
        yield [result]
        return
    held.armed = True
    thread, out = in_thread(go)
    assert held.reached.wait(DEADLINE_S), "the batch never reached its burial"
    yield []
    held.go.set()
    thread.join(DEADLINE_S)
    assert not thread.is_alive()
    assert len(out) == 1
    assert not isinstance(out[0], BaseException), out[0]
    yield out


# -- the conversion ---------------------------------------------------------------------

SIZE = 60


def conv_step(aws: Any, table: str, prefix: str, *, lanes: bool, client: Any = None) -> Window:
    store = DynamoDBStore(table, prefix, 0, SIZE, client=client or aws("dynamodb"),
                          now=lambda: 10_000.0, high_water=lanes)  # fmt: skip
    return Window(key="user", size_s=SIZE, field="ts", aggregate={"n": "count"},
                  function="f", store=store, quiet_s=None, late="late",
                  parallelization=2 if lanes else 1)  # fmt: skip


def conv_run(window: Window, records: list[tuple[int, str, float]]) -> list[Any]:
    recs = [Record(orjson.dumps({"user": u, "ts": ts}), u, str(seq), shard_id="s0", index=i)
            for i, (seq, u, ts) in enumerate(records)]  # fmt: skip
    out = Chain([Step.of("w", window)]).run(recs)
    assert not out.failures, [f.error for f in out.failures]
    return sorted(("late", r.json["user"]) if r.routes == ("late",)
                  else (r.get("key"), r.get("window_start"), r.get("n"))
                  for r in out.records)  # fmt: skip


class TestABurialLandingAfterTheConversion:
    def test_lanes_mode_decides_as_on_the_twin(self, aws, window_table, monkeypatch):
        """One lane applies 1-2 (x, y in window 0), then 3-4 (v at 100 opens and closes
        window 60; z at 200 closes window 0): x's, y's window 0 and v's window 60 are dead
        (v's blindly). The burial is held. Lanes mode converts the shard (w at 5 and 7:
        ``legacy_applied`` 4) and writes window 0's open-looking items closed; then the
        tombstones land over them (and where v's window never had an item). A lagging
        lane delivers y's 2 again (decided), v's new 6 (window 60: late) and x's new 8
        (window 0: late); a cold process gets the same batch again. All as on the twin."""
        client = aws("dynamodb")
        got = {}
        for name, burying in (("new", True), ("twin", False)):
            prefix = f"r{uuid.uuid4().hex[:8]}:"
            held = Held(client)
            one = conv_step(aws, window_table, prefix, lanes=False, client=held)
            first = conv_run(one, [(1, "x", 1.0), (2, "y", 50.0)])
            with path(monkeypatch, burying):
                steps = held_batch(held, partial(conv_run, one, [(3, "v", 100.0), (4, "z", 200.0)]),
                                   burying)  # fmt: skip
                next(steps)
                lanes = conv_step(aws, window_table, prefix, lanes=True)
                converting = conv_run(lanes, [(5, "w", 201.0), (7, "w", 202.0)])
                (closer,) = next(steps)
            stones = tombstones(aws, window_table, prefix)
            assert bool(stones) is burying
            lagging = conv_step(aws, window_table, prefix, lanes=True)
            batch = [(2, "y", 50.0), (6, "v", 70.0), (8, "x", 30.0)]
            out = conv_run(lagging, batch)
            cold = conv_step(aws, window_table, prefix, lanes=True)
            again = conv_run(cold, batch)
            got[name] = (first, closer, converting, out, again)
        assert got["new"] == got["twin"]
        _, closer, _, out, again = got["new"]
        assert ("v", "1970-01-01T00:01:00Z", 1) in closer
        assert out == again == [("late", "v"), ("late", "x")]


# -- a split ----------------------------------------------------------------------------


def minute_docs(m: int, users: int = 3) -> list[dict[str, Any]]:
    return [{"user": f"u{u}", "ts": m * 60 + u} for u in range(users)]


def on_with(setup: Setup, shard: str, docs: list[dict[str, Any]], first_seq: int,
            client: Any = None) -> list[Any]:  # fmt: skip
    batch = [Record(orjson.dumps(d), d["user"], str(first_seq + i), shard_id=shard, index=i,
                    event_source_arn=ARN) for i, d in enumerate(docs)]  # fmt: skip
    out = Chain([Step.of("w", setup.step(client))]).run(batch)
    assert not out.failures, out.failures
    return sorted(("late", r.json["user"]) if r.routes == ("late",)
                  else (r.as_dict()["window_id"], r.as_dict()["n"])
                  for r in out.records)  # fmt: skip


class TestABurialLandingAfterASplit:
    @pytest.mark.parametrize("lanes", [False, True], ids=["one-lane", "lanes"])
    def test_the_children_decide_as_on_the_twin(self, aws, window_table, monkeypatch, lanes):
        """p (one lane) has minute 0 and 1 of u0-u2; its batch of minute 2 and of v at
        150 (v's minute 2, then u's minute 3 close minutes 1 and 2: v's blindly) is held
        at its burial while p splits: c1 and c2 inherit minute 3 and claim it; then the
        tombstones land in p's partition. The children, warm and cold, with late records
        of the buried windows, yield what the twin's do."""
        got = {}
        lineage = {"c1": ("p",), "c2": ("p",)}
        for name, burying in (("new", True), ("twin", False)):
            parent = Setup(aws, window_table, lineage, lanes=False, kind="window")
            held = Held(parent.client)
            found: list[Any] = []
            with path(monkeypatch, burying):
                found += on_with(parent, "p", minute_docs(0) + minute_docs(1), 1)
                docs = [{"user": "v", "ts": 150}, *minute_docs(3)]
                steps = held_batch(held, partial(on_with, parent, "p", docs, 101, held),
                                   burying)  # fmt: skip
                next(steps)
                children = Setup(aws, window_table, lineage, lanes=lanes, kind="window")
                children.prefix, children.clock = parent.prefix, parent.clock
                found += on_with(children, "c1", [{"user": "u0", "ts": 190},
                                                  {"user": "u0", "ts": 70}], 1)  # fmt: skip
                found += on_with(children, "c2", [{"user": "u1", "ts": 191},
                                                  {"user": "v", "ts": 155}], 1)  # fmt: skip
                (closer,) = next(steps)
            found += closer
            assert bool(tombstones(aws, window_table, parent.prefix, "p")) is burying
            found += on_with(children, "c1", [{"user": "u0", "ts": 100},
                                              {"user": "u2", "ts": 192}], 10)  # fmt: skip
            found += on_with(children, "c2", [{"user": "v", "ts": 130},
                                              {"user": "u1", "ts": 300}], 10)  # fmt: skip
            found += on_with(children, "c1", [{"user": "u0", "ts": 301}], 20)
            got[name] = sorted(found, key=repr)
        assert got["new"] == got["twin"]
        assert ("late", "v") in got["new"]
        assert ("f/v/1970-01-01T00:02:00Z", 1) in got["new"]


# -- a lateness raised while the burial is in flight -------------------------------------


def late_step(table: str, prefix: str, client: Any, lateness: int) -> Window:
    store = DynamoDBStore(table, prefix, lateness, 60, client=client, now=lambda: 10_000.0)
    return Window(key="user", size_s=60, field="ts", aggregate={"n": "count"}, function="f",
                  store=store, quiet_s=None, late="late",
                  allowed_lateness_s=lateness)  # fmt: skip


def late_run(window: Window, docs: list[dict[str, Any]], first_seq: int) -> list[Any]:
    batch = [Record(orjson.dumps(d), d["user"], str(first_seq + i), shard_id="s0", index=i)
             for i, d in enumerate(docs)]  # fmt: skip
    out = Chain([Step.of("w", window)]).run(batch)
    assert not out.failures, out.failures
    return sorted(("late", r.json["user"]) if r.routes == ("late",)
                  else (r.as_dict()["window_id"], r.as_dict()["n"])
                  for r in out.records)  # fmt: skip


class TestABurialLandingAfterALatenessRaise:
    def test_the_raised_step_decides_as_on_the_twin(self, aws, window_table, monkeypatch):
        """Lateness 0: minutes 0 and 1, then a batch with v at 100 and minute 3 (minutes
        1 and 2 dead, v's blindly), held at its burial. A redeploy raises the lateness to
        50 (the watermark lifted, not moved back): a new process applies minute 4 and
        records of the buried windows (late), and a cold one again; then the tombstones
        land and a cold process reads the whole shard (after a failed commit: its
        starts unlisted) with more of them. As on the twin."""
        client = aws("dynamodb")
        got = {}
        for name, burying in (("new", True), ("twin", False)):
            prefix = uuid.uuid4().hex
            held = Held(client)
            found: list[Any] = []
            with path(monkeypatch, burying):
                old = late_step(window_table, prefix, held, 0)
                found += late_run(old, minute_docs(0) + minute_docs(1), 1)
                docs = [{"user": "v", "ts": 100}, *minute_docs(3)]
                steps = held_batch(held, partial(late_run, old, docs, 101), burying)
                next(steps)
                raised = late_step(window_table, prefix, client, 50)
                found += late_run(raised, [{"user": "u0", "ts": 70}, {"user": "v", "ts": 110},
                                           {"user": "u1", "ts": 241}], 201)  # fmt: skip
                (closer,) = next(steps)
                found += closer
                found += late_run(late_step(window_table, prefix, client, 50),
                                  [{"user": "v", "ts": 119}, {"user": "u2", "ts": 242}],
                                  301)  # fmt: skip
                from tests.integration.test_window_starts import unlist  # noqa: PLC0415

                unlist(aws, window_table, prefix)
                found += late_run(
                    late_step(window_table, prefix, client, 50),
                    [{"user": "u0", "ts": 65}, {"user": "v", "ts": 400}],
                    401,
                )
            got[name] = sorted(found, key=repr)
            assert bool(tombstones(aws, window_table, prefix)) is burying
        assert got["new"] == got["twin"]
        assert got["new"].count(("late", "v")) == 2


# -- a quiet close or a flush's tick while the burial is in flight -------------------------


class TestABurialLandingAfterAQuietClose:
    @pytest.mark.parametrize("by", ["shard", "lanes shard", "tick"])
    def test_the_quiet_shard_goes_on_as_on_the_twin(self, aws, window_table, monkeypatch, by):
        """s0 (one lane): minute 0, then a batch with v at 61 and minute 2 (minute 0 and
        v's minute 1 dead, v's blindly) held at its burial; s0 goes quiet and s1's batch
        (one lane, or lanes mode) or a flush's tick closes its minute 2 while the burial
        is in flight; then it lands. s0's next batch (late records of every closed
        window, a new one) and a cold redelivery of it yield what the twin's do."""
        from tests.integration.test_window_tick import on  # noqa: PLC0415
        from tests.integration.test_window_tick import step as ticking_step  # noqa: PLC0415

        client = aws("dynamodb")
        got = {}
        for name, burying in (("new", True), ("twin", False)):
            prefix, clock = uuid.uuid4().hex, [10_000.0]
            held = Held(client)

            def new(c: Any = client, lanes: bool = False, p: str = prefix,
                    k: list[float] = clock) -> Any:  # fmt: skip
                return ticking_step(window_table, p, c, k, lanes=lanes)

            def ids(found: list[Any]) -> list[Any]:
                return sorted((r["window_id"], r["n"]) for r in found)

            found: list[Any] = []
            with path(monkeypatch, burying):
                found += ids(on(new(), "s0", [{"user": f"u{u}", "ts": u} for u in range(3)], 1))
                if by != "tick":
                    assert on(new(lanes=by == "lanes shard"), "s1",
                              [{"user": "z", "ts": 20_000}], 1) == []  # fmt: skip
                docs = [{"user": "v", "ts": 61}] + [{"user": f"u{u}", "ts": 125 + u}
                                                    for u in range(3)]  # fmt: skip
                one = new(held)
                steps = held_batch(held, partial(on, one, "s0", docs, 10), burying)
                next(steps)
                clock[0] += 400
                if by == "tick":
                    emissions = new().tick()
                    closed = [r for e in emissions for r in e.results]
                    for emission in emissions:
                        new().ack(emission)
                else:
                    closed = on(new(lanes=by == "lanes shard"), "s1",
                                [{"user": "z", "ts": 20_001}], 2)  # fmt: skip
                found += ids(closed)
                (closer,) = next(steps)
                found += ids(closer)
                late = [{"user": "u0", "ts": 5}, {"user": "v", "ts": 70},
                        {"user": "u1", "ts": 130}, {"user": "q", "ts": 20_100}]  # fmt: skip
                lanes = by == "lanes shard"
                after = new(lanes=lanes)
                found += ids(on(after, "s0", late, 20))
                cold = new(lanes=lanes)
                found += ids(on(cold, "s0", late, 20))
            got[name] = (sorted(found), after.late, cold.late)
            assert bool(tombstones(aws, window_table, prefix)) is burying
        assert got["new"] == got["twin"]


# -- a merge --------------------------------------------------------------------------------


class TestABurialLandingAfterAMerge:
    @pytest.mark.parametrize("lanes", [False, True], ids=["one-lane", "lanes"])
    def test_the_child_decides_as_on_the_twin(self, aws, window_table, monkeypatch, lanes):
        """p1 closes u0's minute 0 and v's minute 1 (v's blindly: opened and closed in the
        batch) with its burial held; p2 holds u0's minute 0 open; c merges them and reads
        both partitions while the burial is in flight, then it lands, and c goes on (a cold
        start each batch). As on the twin."""
        got = {}
        lineage = {"c": ("p1", "p2")}
        for name, burying in (("new", True), ("twin", False)):
            parents = Setup(aws, window_table, lineage, lanes=False, kind="window")
            held = Held(parents.client)
            found: list[Any] = []
            with path(monkeypatch, burying):
                found += on_with(parents, "p1", [{"user": "u0", "ts": 1}], 1)
                found += on_with(parents, "p2", [{"user": "u0", "ts": 30}], 1)
                docs = [{"user": "v", "ts": 70}, {"user": "u0", "ts": 121}]
                steps = held_batch(held, partial(on_with, parents, "p1", docs, 10, held),
                                   burying)  # fmt: skip
                next(steps)
                child = Setup(aws, window_table, lineage, lanes=lanes, kind="window")
                child.prefix, child.clock = parents.prefix, parents.clock
                found += on_with(child, "c", [{"user": "u0", "ts": 40},
                                              {"user": "v", "ts": 75}], 1)  # fmt: skip
                (closer,) = next(steps)
                found += closer
                found += on_with(child, "c", [{"user": "u0", "ts": 50},
                                              {"user": "u1", "ts": 130}], 10)  # fmt: skip
                found += on_with(child, "c", [{"user": "v", "ts": 80},
                                              {"user": "u1", "ts": 300}], 20)  # fmt: skip
            got[name] = sorted(found, key=repr)
        assert got["new"] == got["twin"]


# -- a zombie's write between the commit and its burial ---------------------------------------


class TestAZombieWriteBetweenTheCommitAndTheBurial:
    @pytest.mark.parametrize("burial", ["lands", "fails once"])
    def test_no_open_window_item_is_left(self, aws, window_table, monkeypatch, burial):
        """Review 25's zombie, the other order: Z read the shard and paused before its
        writes; B takes the shard over with minute 1 and minute 2 (minute 0 dead, minute 1
        opened and closed: blind), commits, and is held at its burial; Z wakes and writes
        minute 1's windows as new (no item is there yet), loses its shard item's
        condition; then B's tombstones land (or fail, and B's next commit buries them).
        No open-looking item is left behind the watermark, and the results are the old
        path's."""
        from tests.integration.test_review25 import (  # noqa: PLC0415
            Paused,
            open_items_left,
            zombie_batch,
        )
        from tests.integration.test_window_close_burials import Recorded  # noqa: PLC0415
        from tests.integration.test_window_starts import minute, run, step  # noqa: PLC0415

        got = {}
        for name, burying in (("new", True), ("twin", False)):
            with path(monkeypatch, burying):
                prefix = uuid.uuid4().hex
                real = aws("dynamodb")
                paused = Paused(real)
                recorded = Recorded(real)
                held = Held(recorded)
                zombie = step(window_table, prefix, paused)
                owner = step(window_table, prefix, held)
                results = [run(zombie, minute(0), 100)]
                thread, errors = zombie_batch(zombie, paused, minute(1), 200)
                if burial == "fails once":
                    recorded.refuse = 1
                steps = held_batch(held, partial(run, owner, minute(1) + minute(2), 200),
                                   burying)  # fmt: skip
                next(steps)
                paused.go.set()
                thread.join(DEADLINE_S)
                assert not thread.is_alive()
                assert len(errors) == 1
                paused.armed = False
                (closer,) = next(steps)
                results.append(closer)
                results.append(run(zombie, minute(1), 200))
                for m in (3, 4):
                    results.append(run(owner, minute(m), 100 * m + 100))
                left = open_items_left(aws, window_table, prefix)
            got[name] = ([sorted(r["window_id"] for r in rs) for rs in results], left)
        assert got["new"] == got["twin"]
        assert got["new"][1] == {}


# -- hopping windows, read whole after the burial landed --------------------------------------


class TestHoppingWindows:
    def test_a_whole_read_after_a_late_burial_decides_as_on_the_twin(
        self, aws, window_table, monkeypatch
    ):
        """Hopping windows (60 s by 30): u0-u4 at minute 0 and 1, then a batch with v at
        95 (its windows at 60 and 90: v's 60 opened and closed in the batch) and minute 3
        (every window before 150 dead), held at its burial while a cold process applies
        late records of the dead windows and new ones; the tombstones land, and a cold
        process reading the shard whole (its starts unlisted) gets more of them."""
        from tests.integration.test_window_starts import minute, run, step, unlist  # noqa: PLC0415

        client = aws("dynamodb")
        got = {}
        for name, burying in (("new", True), ("twin", False)):
            with path(monkeypatch, burying):
                prefix = uuid.uuid4().hex
                held = Held(client)
                first = step(window_table, prefix, held, slide=30)
                found = [run(first, minute(0) + minute(1), 1)]
                docs = [{**minute(0, 1)[0], "user": "v", "ts": 95}, *minute(3)]
                steps = held_batch(held, partial(run, first, docs, 101), burying)
                next(steps)
                late = [{**minute(0, 1)[0], "user": "v", "ts": 100}, *minute(4)]
                second = step(window_table, prefix, client, slide=30)
                found.append(run(second, late, 201))
                (closer,) = next(steps)
                found.append(closer)
                unlist(aws, window_table, prefix)
                more = [{**minute(0, 1)[0], "user": "v", "ts": 125}, *minute(6)]
                third = step(window_table, prefix, client, slide=30)
                found.append(run(third, more, 301))
            got[name] = ([sorted((r["window_id"], r["n"]) for r in rs) for rs in found],
                         second.late, third.late)  # fmt: skip
            assert bool(tombstones(aws, window_table, prefix)) is burying
        assert got["new"] == got["twin"]
        assert got["new"][1:] == (1, 1)  # v's record in dead windows: late, each once


# -- the tombstone's TTL ------------------------------------------------------------------------


class TestTheTombstoneTTL:
    def test_at_least_a_day_past_its_burial_even_after_a_lowered_lateness(
        self, aws, window_table, monkeypatch
    ):
        """Event times at the clock (10,000 s), lateness 50: a batch closes minute 0's
        windows (dead), its burial refused; a redeploy lowers the lateness to 0 and the
        next commit buries them. The tombstone's TTL is a day past the burial's clock at
        least (end + the lateness it ran with + a day); the twin's closed item (written at
        the close, with lateness 50) stays the lowered 50 s longer: shorter, but still a
        day and more past the burial, far past any lease (review 25's zombie)."""
        from tests.integration.test_window_close_burials import Recorded  # noqa: PLC0415

        client = aws("dynamodb")
        expires = {}
        base = 9_960  # minute 166's start: windows [9960, 10020)
        for name, burying in (("new", True), ("twin", False)):
            with path(monkeypatch, burying):
                prefix = uuid.uuid4().hex
                recorded = Recorded(client)
                docs = [{"user": f"u{u}", "ts": base + u} for u in range(3)]
                late_run(late_step(window_table, prefix, recorded, 50), docs, 1)
                recorded.refuse = 1
                closing = [{"user": "u0", "ts": base + 60 + 50}]
                late_run(late_step(window_table, prefix, recorded, 50), closing, 10)
                late_run(late_step(window_table, prefix, client, 0),
                         [{"user": "u1", "ts": base + 111}], 20)  # fmt: skip
            items = tombstones(aws, window_table, prefix) if burying else {
                sk: i for sk, i in window_sks(aws, window_table, prefix).items()
                if sk.startswith(f"w#{base}#")}  # fmt: skip
            assert sorted(items) == [f'w#{base}#"u{u}"' for u in range(3)]
            expires[name] = {int(i["expires"]["N"]) for i in items.values()}
        day = 86_400
        assert expires["new"] == {base + 60 + day}  # end + lateness 0 + a day (past the clock's)
        assert expires["twin"] == {base + 60 + 50 + day}  # end + lateness 50 + a day
        assert min(expires["new"]) >= 10_000 + day
