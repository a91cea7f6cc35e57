"""A scheduled flush's tick on the session moto server (issue 16, slice S1 of
``flush-design.md``): when every shard of a function is quiet, ``Window.tick`` /
``SessionWindow.tick`` close their due windows with no closer, each quiet shard by a
conditional commit of its own that names a pending emission, re-emitted by every tick
until acked. Each test runs with one lane and in lanes mode (``parallelization`` 2), and
for session windows where the rule is theirs too.
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy.local.readback import table_items
from processors.chain import Chain, Step
from processors.session import SessionWindow, session_end_of
from processors.window import Window
from processors.window_store import DynamoDBStore, TickIncomplete, WindowStateError
from processors.window_tick import TICK_SUB_BASE, Emission
from stream.records import Record
from tests.integration.test_window_state import DOCS, Before, ShardItemFails
from tests.processors.test_window import AGGREGATE, _rec, _result

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.integration

LANES = pytest.mark.parametrize("lanes", [False, True], ids=["one-lane", "lanes"])
KINDS = pytest.mark.parametrize("kind", ["window", "session"])
START = 10_000.0  # the clock at the first batch
#: what a tick closes of DOCS on s0 (tumbling windows of 60 s; sessions with a gap of 30 s)
CLOSED = {
    "window": [("f/a/1970-01-01T00:00:00Z", 2), ("f/b/1970-01-01T00:00:00Z", 1)],
    "session": [("f/a/1970-01-01T00:00:05Z", 2), ("f/b/1970-01-01T00:00:06Z", 1)],
}  # fmt: skip


def step(
    table: str, prefix: str, client: Any, clock: list[float], *, lanes: bool, kind: str = "window"
) -> Window | SessionWindow:
    """A new step (a cold start) on the table, ``quiet_s`` 300, its clock ``clock``."""
    now = lambda: clock[0]  # noqa: E731
    par = 2 if lanes else 1
    if kind == "session":
        store = DynamoDBStore(table, prefix, 0, 30, client=client, now=now,
                              end_of=session_end_of(30), high_water=lanes)  # fmt: skip
        return SessionWindow(key="user", gap_s=30, field="ts", aggregate={"n": "count"},
                             function="f", store=store, quiet_s=300, now=now,
                             parallelization=par)  # fmt: skip
    store = DynamoDBStore(table, prefix, 0, 60, client=client, now=now, high_water=lanes)
    return Window(key="user", size_s=60, field="ts", aggregate={"n": "count"}, function="f",
                  store=store, quiet_s=300, now=now, parallelization=par)  # fmt: skip


def on(
    window: Window | SessionWindow, shard: str, docs: list[dict[str, Any]], first_seq: int
) -> list[dict[str, Any]]:
    """A batch of ``docs`` on ``shard`` from ``first_seq``: the result documents."""
    batch = [
        Record(orjson.dumps(d), d["user"], str(first_seq + i), shard_id=shard, index=i)
        for i, d in enumerate(docs)
    ]
    result = Chain([Step.of("processors[0].window", window)]).run(batch)
    assert not result.failures, result.failures
    return [r.as_dict() for r in result.records]


def ids(results: Any) -> list[tuple[str, int]]:
    return [(r["window_id"], r["n"]) for r in results]


def tick_parts(aws: Callable[[str], Any], table: str, prefix: str) -> list[str]:
    """The sort keys of the pending entries' parts in the test's partitions."""
    found = table_items(aws("dynamodb"), table)
    mine = [i["window"]["S"] for i in found if i["shard"]["S"].startswith(prefix)]
    return sorted(sk for sk in mine if sk.startswith("~t#"))


class TestTick:
    """The five tests of the design's slice S1, and its risk 7.4."""

    @LANES
    @KINDS
    def test_a_tick_closes_an_all_quiet_function_s_windows_once(
        self, aws, window_table, lanes, kind
    ):
        """s0 opens windows, s1 is never used. 299 s later a tick closes nothing; 301 s
        later it closes them at the synthetic position; a tick without an ack emits the
        same again; after the ack nothing; s0's record for a closed window is late."""
        prefix, client, clock = uuid.uuid4().hex, aws("dynamodb"), [START]
        new = lambda: step(window_table, prefix, client, clock, lanes=lanes, kind=kind)  # noqa: E731
        assert on(new(), "s0", DOCS, 1) == []
        clock[0] += 299
        assert new().tick() == []
        clock[0] += 2
        first = new().tick()
        assert [(e.shard_id, e.tick, e.sequence_number, e.sub_sequence_number) for e in first] == [
            ("s0", 1, "3", TICK_SUB_BASE + 1)
        ]
        assert sorted(ids(first[0].results)) == sorted(CLOSED[kind])
        assert tick_parts(aws, window_table, prefix) == ["~t#0000000001#000"]
        clock[0] += 60
        again = new().tick()  # not acked (a sink was down): the same, as stored
        assert again == first
        ticker = new()
        ticker.ack(again[0])
        ticker.ack(again[0])  # twice is fine
        assert new().tick() == []
        assert tick_parts(aws, window_table, prefix) == []
        s0 = new()
        assert on(s0, "s0", [{"user": "a", "ts": 7}, {"user": "a", "ts": 20_000}], 10) == []
        assert s0.late == 1
        clock[0] += 301  # a's window of 20,000 is not due (end 20,060 + 0 > the cutoff)
        assert new().tick() == []

    @LANES
    @KINDS
    def test_a_batch_of_the_shard_inside_the_tick_makes_it_lose(
        self, aws, window_table, lanes, kind
    ):
        """s0 has a batch between the tick's read of it and its commit: the tick loses its
        condition, emits nothing and leaves nothing pending; the next tick after
        ``quiet_s`` closes the windows with that batch's record in them."""
        prefix, client, clock = uuid.uuid4().hex, aws("dynamodb"), [START]
        on(step(window_table, prefix, client, clock, lanes=lanes, kind=kind), "s0", DOCS, 1)
        clock[0] += 400
        s0 = step(window_table, prefix, client, clock, lanes=lanes, kind=kind)
        woke = {"user": "a", "ts": 31}  # joins a's window (a's session)
        hooked = Before(client, lambda: on(s0, "s0", [woke], 5))
        assert step(window_table, prefix, hooked, clock, lanes=lanes, kind=kind).tick() == []
        assert hooked.hook is None  # it ran, inside the tick
        assert tick_parts(aws, window_table, prefix) == []  # the lost attempt's parts are gone
        assert step(window_table, prefix, client, clock, lanes=lanes, kind=kind).tick() == []
        clock[0] += 301
        closed = step(window_table, prefix, client, clock, lanes=lanes, kind=kind).tick()
        # T 2: the lost attempt took 1 (a T is never used by two attempts: review 13)
        assert [(e.shard_id, e.tick, e.sequence_number) for e in closed] == [("s0", 2, "5")]
        grown = {"window": {"f/a/1970-01-01T00:00:00Z": 3},
                 "session": {"f/a/1970-01-01T00:00:05Z": 3}}[kind]  # fmt: skip
        assert sorted(ids(closed[0].results)) == sorted(
            (i, grown.get(i, n)) for i, n in CLOSED[kind]
        )

    @LANES
    @KINDS
    @pytest.mark.parametrize("first", ["tick", "batch"])
    def test_a_tick_and_a_cross_shard_close_close_each_window_once(
        self, aws, window_table, lanes, kind, first
    ):
        """A tick and another shard's batch decide to close s0 on the same ``rev``/``n``:
        whichever commits first wins, the other loses its condition (the batch is applied
        again, or delivered again with one lane), and each window comes out once over
        both."""
        prefix, client, clock = uuid.uuid4().hex, aws("dynamodb"), [START]
        new = lambda c=client: step(window_table, prefix, c, clock, lanes=lanes, kind=kind)  # noqa: E731
        z = [{"user": "z", "ts": 20_000 + n} for n in range(4)]  # s1's windows stay open
        on(new(), "s0", DOCS, 1)
        on(new(), "s1", z[:1], 1)
        clock[0] += 400
        out: list[tuple[str, int]] = []
        batch = [Record(orjson.dumps(z[1]), "z", "2", shard_id="s1", index=0)]
        if first == "tick":  # the tick commits while the batch writes its window items
            ticked: list[Emission] = []
            s1 = new(Before(client, lambda: ticked.extend(new().tick())))
            result = Chain([Step.of("w", s1)]).run(batch)
            assert [e.shard_id for e in ticked] == ["s0"]  # the tick closed s0 first
            out += [i for e in ticked for i in ids(e.results)]
            for emission in ticked:  # written: acked (else the next tick emits it again)
                new().ack(emission)
            if not lanes:  # its transaction failed: delivered again
                assert [type(f.error) for f in result.failures] == [WindowStateError]
                result = Chain([Step.of("w", new())]).run(batch)
            assert not result.failures
            out += ids(r.as_dict() for r in result.records)
        else:  # the batch commits while the tick writes its entry's parts
            s1 = new()
            ran: list[Any] = []
            hooked = Before(client, lambda: ran.append(Chain([Step.of("w", s1)]).run(batch)))
            assert new(hooked).tick() == []
            assert len(ran) == 1  # the batch ran inside the tick, after its read
            assert not ran[0].failures
            out += ids(r.as_dict() for r in ran[0].records)
        clock[0] += 60
        out += [i for e in new().tick() for i in ids(e.results)]
        out += ids(on(new(), "s1", z[2:3], 3))
        assert sorted(out) == sorted(CLOSED[kind])
        assert Counter(i for i, _ in out).most_common(1)[0][1] == 1

    @LANES
    def test_a_large_close_goes_to_parts_and_reads_back_equal(self, aws, window_table, lanes):
        """Results over 350 KB of JSON: the entry is two parts, read back equal."""
        prefix, client, clock = uuid.uuid4().hex, aws("dynamodb"), [START]
        users = [f"{n:04d}" + "u" * 196 for n in range(800)]  # 800 results of about 500 B
        docs = [{"user": u, "ts": 5} for u in users]
        on(step(window_table, prefix, client, clock, lanes=lanes), "s0", docs, 1)
        clock[0] += 301
        first = step(window_table, prefix, client, clock, lanes=lanes).tick()
        assert len(first) == 1
        assert len(orjson.dumps(list(first[0].results))) > 350_000
        assert tick_parts(aws, window_table, prefix) == ["~t#0000000001#000", "~t#0000000001#001"]
        again = step(window_table, prefix, client, clock, lanes=lanes).tick()
        assert again == first
        assert sorted(r["key"] for r in again[0].results) == users

    @LANES
    @KINDS
    def test_a_tick_s_results_equal_a_cross_shard_close_s(self, aws, window_table, lanes, kind):
        """The same records closed by a tick and by another shard's batch: equal result
        documents (one rule, :meth:`Window._due_results`)."""
        client, clock = aws("dynamodb"), [START]
        by_batch, by_tick = uuid.uuid4().hex, uuid.uuid4().hex
        z = {"user": "z", "ts": 9_990}
        for prefix in (by_batch, by_tick):
            on(step(window_table, prefix, client, clock, lanes=lanes, kind=kind), "s0", DOCS, 1)
        on(step(window_table, by_batch, client, clock, lanes=lanes, kind=kind), "s1", [z], 1)
        clock[0] += 301
        closing = on(
            step(window_table, by_batch, client, clock, lanes=lanes, kind=kind), "s1", [z], 2
        )
        ticked = step(window_table, by_tick, client, clock, lanes=lanes, kind=kind).tick()
        assert sorted(ids(closing)) == sorted(CLOSED[kind])
        assert [list(e.results) for e in ticked] == [closing]

    @pytest.mark.parametrize("lanes", [False, True], ids=["one-lane-then", "lanes-throughout"])
    def test_a_pending_entry_survives_every_later_write_of_the_shard_item(
        self, aws, window_table, lanes
    ):
        """Design risk 7.4: the one-lane ``Put`` of the shard item replaces it whole, so it
        must carry ``ticks``: a pending entry is still pending after a one-lane batch, a
        fence and the batch after it, and the first lanes commit (the conversion); an
        acked one stays acked after a warm batch that read the item before the ack."""
        prefix, clock = uuid.uuid4().hex, [START]
        client = aws("dynamodb")
        new = lambda c=client, lanes=lanes: step(window_table, prefix, c, clock, lanes=lanes)  # noqa: E731
        on(new(), "s0", DOCS, 1)
        warm = new()
        on(warm, "s0", [{"user": "q", "ts": 40}], 4)  # its cache holds the item
        clock[0] += 301
        pending = new().tick()
        assert [(e.shard_id, e.tick) for e in pending] == [("s0", 1)]
        on(warm, "s0", [{"user": "q", "ts": 20_001}], 5)  # warm, after the tick's commit
        assert new().tick() == pending
        on(new(), "s0", [{"user": "q", "ts": 20_002}], 6)  # cold
        assert new().tick() == pending
        if not lanes:
            fence(aws, new, pending)
            # the conversion: the first lanes commit over the one-lane item
            on(new(lanes=True), "s0", [{"user": "q", "ts": 20_005}], 9)
            assert new(lanes=True).tick() == pending
            assert "legacy_applied" in shard_item(aws, window_table, prefix, "s0")
        ticker = new(lanes=True)
        ticker.ack(pending[0])
        assert new(lanes=True).tick() == []
        assert tick_parts(aws, window_table, prefix) == []

    def test_an_acked_entry_stays_acked_after_a_warm_one_lane_batch(self, aws, window_table):
        """The ack moves no ``rev``: a warm one-lane process, whose cache still names the
        entry, takes ``ticks`` from its head read, so its next ``Put`` does not bring the
        entry back. And one that did (an item written with a stale ``ticks``, as a batch
        that read before the ack writes it) names parts that are gone: the next tick
        drops the name and emits nothing."""
        prefix, client, clock = uuid.uuid4().hex, aws("dynamodb"), [START]
        new = lambda: step(window_table, prefix, client, clock, lanes=False)  # noqa: E731
        on(new(), "s0", DOCS, 1)
        clock[0] += 301
        pending = new().tick()
        assert len(pending) == 1
        warm = new()
        on(warm, "s0", [{"user": "q", "ts": 20_000}], 4)  # reads the item naming it
        new().ack(pending[0])
        on(warm, "s0", [{"user": "q", "ts": 20_001}], 5)  # warm: the same rev as its read
        assert "ticks" not in shard_item(aws, window_table, prefix, "s0")
        assert new().tick() == []
        # the race the design accepts: a Put from before the ack brings the name back
        ddb = aws("dynamodb")
        item = shard_item(aws, window_table, prefix, "s0")
        item["ticks"] = {"M": {"1": {"S": "1/3"}}}
        ddb.put_item(TableName=window_table, Item=item)
        assert new().tick() == []
        assert shard_item(aws, window_table, prefix, "s0")["ticks"] == {"M": {}}


class TestTickLimits:
    """What a tick does when its time runs out or the table fails for one shard."""

    @LANES
    def test_stop_leaves_the_other_shards_to_the_next_tick(self, aws, window_table, lanes):
        prefix, client, clock = uuid.uuid4().hex, aws("dynamodb"), [START]
        new = lambda c=client: step(window_table, prefix, c, clock, lanes=lanes)  # noqa: E731
        on(new(), "s0", DOCS, 1)
        on(new(), "s1", DOCS, 1)
        clock[0] += 301
        asked: list[int] = []
        first = new().tick(stop=lambda: len(asked.append(1) or asked) > 1)
        assert [e.shard_id for e in first] == ["s0"]
        second = new().tick()
        assert [(e.shard_id, e.tick) for e in second] == [("s0", 1), ("s1", 1)]
        assert second[0] == first[0]

    @LANES
    def test_a_failed_read_of_one_shard_raises_after_the_others_commit(
        self, aws, window_table, lanes
    ):
        """The table refuses the read of s0's partition (throttled): the tick closes s1,
        then raises; the next tick emits s1's entry and closes s0."""
        prefix, client, clock = uuid.uuid4().hex, aws("dynamodb"), [START]
        new = lambda c=client: step(window_table, prefix, c, clock, lanes=lanes)  # noqa: E731
        on(new(), "s0", DOCS, 1)
        on(new(), "s1", DOCS, 1)
        clock[0] += 301
        with pytest.raises(TickIncomplete, match="ProvisionedThroughputExceeded") as raised:
            new(QueryFails(client, prefix + "s0")).tick()
        assert isinstance(raised.value, WindowStateError)  # retried, as a batch's would be
        # what it committed rides on the error, for the flush to send before it fails
        assert [(e.shard_id, e.tick) for e in raised.value.emissions] == [("s1", 1)]
        after = new().tick()
        assert [(e.shard_id, e.tick) for e in after] == [("s1", 1), ("s0", 1)]
        assert [sorted(ids(e.results)) for e in after] == [sorted(CLOSED["window"])] * 2


class QueryFails:
    """The real client, except that a ``Query`` of partition ``pk`` is refused (throttled)."""

    def __init__(self, client: Any, pk: str) -> None:
        self.client, self.pk = client, pk

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def query(self, **request: Any) -> Any:
        if request["ExpressionAttributeValues"][":s"]["S"] == self.pk:
            from botocore.exceptions import ClientError  # noqa: PLC0415

            error = {"Code": "ProvisionedThroughputExceededException", "Message": "injected"}
            raise ClientError({"Error": error}, "Query")
        return self.client.query(**request)


def shard_item(aws: Callable[[str], Any], table: str, prefix: str, shard: str) -> dict[str, Any]:
    item: dict[str, Any] = aws("dynamodb").get_item(
        TableName=table,
        Key={"shard": {"S": prefix + shard}, "window": {"S": "#shard"}},
        ConsistentRead=True,
    )["Item"]
    return item


def fence(aws: Callable[[str], Any], new: Callable[..., Any], pending: list[Emission]) -> None:
    """One lane: a batch whose shard item write times out leaves its window item pending
    at record 8; its twin of record 7 alone then fences (``UpdateItem`` of ``rev``) before
    it writes over it and commits; then the batch again. ``pending`` stays pending."""
    failing = ShardItemFails(aws("dynamodb"))
    twice = [{"user": "q", "ts": 20_003}, {"user": "q", "ts": 20_004}]
    batch = [Record(orjson.dumps(d), "q", str(7 + i), shard_id="s0", index=i)
             for i, d in enumerate(twice)]  # fmt: skip
    assert Chain([Step.of("w", new(failing))]).run(batch).failures
    assert failing.failed
    assert new().tick() == pending
    calls: list[str] = []
    fenced = aws("dynamodb")
    fenced.meta.events.register(
        "before-parameter-build.dynamodb.UpdateItem",
        lambda params, **_: calls.append(params.get("UpdateExpression", "")),
    )
    on(new(fenced), "s0", twice[:1], 7)
    assert any(c.startswith("SET rev = :new") for c in calls)  # the fence ran
    assert new().tick() == pending
    on(new(), "s0", twice, 7)
    assert new().tick() == pending


# -- the property: batches, cross-shard closes and ticks at any clock, against a model ------

QUIET_S = 50  # the property's quiet_s: its clock moves 0-60 s an event, its event times 0-300


class _Model:
    """The rule of README "Windows" as plain dicts, event by event: per shard, records
    applied once each in order (a redelivered one changes nothing), windows closed by the
    shard's watermark; a batch with a record that is neither late nor redelivered closes
    the other quiet shards, and a tick all of them: a shard with no commit since the
    cutoff (now - ``quiet_s``) and a window that ends (plus the lateness) by then gets
    "a record at the cutoff" (its greatest event time raised to it), which closes them."""

    def __init__(self, size: int, slide: int, lateness: int) -> None:
        self.size, self.slide, self.lateness = size, slide, lateness
        self.windows: dict[str, dict[tuple[str, int], list[tuple[float, dict[str, Any]]]]] = {}
        self.max_time: dict[str, float] = {}
        self.applied: dict[str, int] = {}
        self.clock: dict[str, float] = {}  # a shard's last commit
        self.results: dict[str, dict[str, Any]] = {}
        self.late: set[tuple[str, int]] = set()

    def batch(self, shard: str, records: list[tuple[int, dict[str, Any]]], now: float) -> None:
        new = [(p, d) for p, d in records if p > self.applied.get(shard, -1)]
        closer = False
        for p, doc in new:
            closer |= self._apply(shard, p, doc)
        if new:
            self.applied[shard] = new[-1][0]
            self.clock[shard] = now
        if closer:
            for other in self.clock:
                if other != shard:
                    self._quiet(other, now - QUIET_S)

    def tick(self, now: float) -> None:
        for shard in self.clock:
            self._quiet(shard, now - QUIET_S)

    def _apply(self, shard: str, p: int, doc: dict[str, Any]) -> bool:
        size, slide, t = self.size, self.slide, doc["ts"]
        mt = self.max_time.get(shard)
        wm = None if mt is None else mt - self.lateness
        last = int(t // slide) * slide
        opened = [s for s in range(last - size + slide, last + 1, slide)
                  if wm is None or s + size > wm]  # fmt: skip
        if not opened:
            self.late.add((shard, p))
            return False
        windows = self.windows.setdefault(shard, {})
        for s in opened:
            windows.setdefault((doc["user"], s), []).append((t, doc))
        self.max_time[shard] = t if mt is None else max(mt, t)
        self._close(shard)
        return True

    def _quiet(self, shard: str, cutoff: float) -> None:
        mt = self.max_time.get(shard)
        due = [w for w in self.windows.get(shard, {}) if w[1] + self.size + self.lateness <= cutoff]
        if self.clock[shard] < cutoff and (mt is None or mt < cutoff) and due:
            self.max_time[shard] = cutoff
            self._close(shard)

    def _close(self, shard: str) -> None:
        wm = self.max_time[shard] - self.lateness
        windows = self.windows.setdefault(shard, {})
        for (key, s), items in list(windows.items()):
            if s + self.size <= wm:
                del windows[key, s]
                doc = _result("fn", key, s, self.size, items)
                self.results[doc["window_id"]] = doc


@st.composite
def _tick_scenario(draw: st.DrawFn) -> dict[str, Any]:
    size = draw(st.sampled_from([10, 30, 60]))
    slide = draw(st.sampled_from([d for d in (size, size // 2, size // 5) if size % d == 0]))
    lateness = draw(st.integers(0, size))
    shards: dict[str, list[dict[str, Any]]] = {}
    for n in range(draw(st.integers(1, 3))):
        t_clock, docs = 0, []
        for _ in range(draw(st.integers(0, 20))):
            t_clock += draw(st.integers(0, 15))
            docs.append({
                "user": draw(st.sampled_from([f"u{n}a", f"u{n}b"])),
                "ts": max(0, t_clock - draw(st.integers(0, lateness + 10))),
                "amount": draw(st.integers(-5, 50)),
                "product": draw(st.sampled_from("pqr")),
                "page": draw(st.sampled_from(["/a", "/b", "/c"])),
            })  # fmt: skip
        shards[f"shardId-{n}"] = docs
    # (a tick?, which shard, batch size, records before the end delivered again, the
    # clock's advance before it, whether a tick's emissions are acked)
    event = st.tuples(st.booleans(), st.integers(0, 2), st.integers(1, 6), st.integers(0, 3),
                      st.integers(0, 60), st.booleans())  # fmt: skip
    events = draw(st.lists(event, max_size=30))
    return {"size": size, "slide": slide, "lateness": lateness, "shards": shards,
            "events": events}  # fmt: skip


@LANES
@settings(deadline=None, max_examples=12)
@given(scenario=_tick_scenario())
def test_ticks_between_batches_equal_the_model(
    aws: Callable[[str], Any], window_table: str, lanes: bool, scenario: dict[str, Any]
) -> None:
    """Batches (some delivered again, every other by a new step: a cold start), another
    shard's quiet closes and ticks at any clock: each window_id is emitted with the
    model's result (again, identically: a redelivery, a pending emission), every model
    result is emitted, and late records are exactly the model's."""
    prefix, client, clock = uuid.uuid4().hex, aws("dynamodb"), [0.0]
    size, slide, lateness = scenario["size"], scenario["slide"], scenario["lateness"]

    def make() -> Window:
        now = lambda: clock[0]  # noqa: E731
        store = DynamoDBStore(window_table, prefix, lateness, size, client=client, now=now,
                              high_water=lanes)  # fmt: skip
        return Window(key="user", size_s=size, slide_s=slide, field="ts",
                      allowed_lateness_s=lateness, aggregate=AGGREGATE, late="late",
                      function="fn", store=store, quiet_s=QUIET_S, now=now,
                      parallelization=2 if lanes else 1)  # fmt: skip

    warm, model = make(), _Model(size, slide, lateness)
    calls = iter(range(10**6))
    shards = scenario["shards"]
    names = sorted(shards)
    cursors = dict.fromkeys(shards, 0)
    emitted: dict[str, dict[str, Any]] = {}
    late: set[tuple[str, int]] = set()
    for is_tick, which, count, back, advance, ack in scenario["events"]:
        clock[0] += advance
        window = make() if next(calls) % 2 else warm
        if is_tick:
            for emission in window.tick():
                for doc in emission.results:
                    assert emitted.setdefault(doc["window_id"], doc) == doc
                if ack:
                    window.ack(emission)
            model.tick(clock[0])
            continue
        shard = names[which % len(names)]
        docs, start = shards[shard], cursors[shard]
        if start >= len(docs):
            continue
        end = min(len(docs), start + count)
        batch = [_rec(docs[p], 1000 + p, shard, p - start) for p in range(start, end)]
        result = Chain([Step.of("processors[0].window", window)]).run(batch)
        assert not result.failures, result.failures
        for rec in result.records:
            if rec.routes == ("late",):
                late.add((shard, int(rec.sequence_number) - 1000))
            else:
                assert emitted.setdefault(rec.json["window_id"], rec.json) == rec.json
        model.batch(shard, [(p, docs[p]) for p in range(start, end)], clock[0])
        cursors[shard] = max(start + 1, end - back) if back else end
    assert emitted == model.results
    assert late == model.late
