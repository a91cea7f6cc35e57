"""Window state that would not fit a DynamoDB item (400 KB), against the session moto
server: a ``distinct`` of 10,000 UUIDs, a ``first``/``last`` value too large to keep, and a
batch whose results (the shard item's outbox) are larger than one item. Each batch
commits: none fails and is retried for ever (a stuck shard).
"""

from __future__ import annotations

import sys
import uuid
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from processors.aggregations import ValueTooLarge
from processors.chain import Chain, ChainResult, Step
from processors.session import SessionWindow, session_end_of
from processors.window import Window
from processors.window_store import DynamoDBStore, MemoryStore
from stream import plugins
from stream.records import Record

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

pytestmark = pytest.mark.integration

ITEM_LIMIT = 400 * 1024


def window(table: str, prefix: str, client: Any, aggregate: dict[str, Any]) -> Window:
    store = DynamoDBStore(table, prefix, 0, 60, client=client)
    return Window(key="user", size_s=60, field="ts", aggregate=aggregate, function="f",
                  store=store)  # fmt: skip


def session(table: str, prefix: str, client: Any, aggregate: dict[str, Any]) -> SessionWindow:
    store = DynamoDBStore(table, prefix, 0, 30, client=client, end_of=session_end_of(30))
    return SessionWindow(key="user", gap_s=30, field="ts", aggregate=aggregate, function="f",
                         store=store)  # fmt: skip


def run(step: Window | SessionWindow, docs: list[dict[str, Any]], first_seq: int) -> ChainResult:
    batch = [
        Record(orjson.dumps(d), d["user"], str(first_seq + i), shard_id="s0", index=i)
        for i, d in enumerate(docs)
    ]
    return Chain([Step.of("processors[0].window", step)]).run(batch)


def committed(result: ChainResult) -> list[dict[str, Any]]:
    """The batch's results, after checking that no failure is a retryable one (a window
    state that could not be written: the batch would be delivered again for ever)."""
    retried = [str(f.error) for f in result.failures if f.retryable]
    assert retried == []
    return [r.json for r in result.records]


def item_sizes(aws: Callable[[str], Any], table: str, prefix: str) -> dict[str, int]:
    """Each item of the prefix's shards: its sort key -> its size as DynamoDB counts it
    (attribute names and string values, close enough for these)."""
    pages = aws("dynamodb").get_paginator("scan").paginate(TableName=table)
    scan = [item for page in pages for item in page["Items"]]
    return {
        i["window"]["S"]: sum(len(k) + len(str(next(iter(v.values())))) for k, v in i.items())
        for i in scan
        if i["shard"]["S"].startswith(prefix)
    }


class TestDistinct:
    def test_10000_uuids_in_one_window_commit_and_count_at_least(self, aws, window_table):
        prefix = uuid.uuid4().hex
        step = window(
            window_table, prefix, aws("dynamodb"), {"n": "count", "ids": {"distinct": "id"}}
        )
        docs = [{"user": "a", "ts": 5, "id": str(uuid.uuid4())} for _ in range(10_000)]
        assert committed(run(step, docs, 1)) == []
        assert max(item_sizes(aws, window_table, prefix).values()) < ITEM_LIMIT
        out = committed(run(step, [{"user": "z", "ts": 61, "id": "x"}], 20_000))
        assert out[0]["n"] == 10_000
        kept = out[0]["ids"]["at_least"]
        assert 3_000 < kept < 10_000  # exact while the values fit: 170 KB of 39-byte UUIDs

    def test_a_window_s_second_batch_adds_up_to_the_budget_across_cold_starts(
        self, aws, window_table
    ):
        prefix = uuid.uuid4().hex
        client = aws("dynamodb")
        aggregate = {"ids": {"distinct": "id"}, "more": {"distinct": "id2"}}
        for n in range(3):  # a new step each time: read back from the table
            docs = [{"user": "a", "ts": 5, "id": str(uuid.uuid4()), "id2": str(uuid.uuid4())}
                    for _ in range(2_500)]  # fmt: skip
            assert (
                committed(run(window(window_table, prefix, client, aggregate), docs, 1 + 3000 * n))
                == []
            )
            assert max(item_sizes(aws, window_table, prefix).values()) < ITEM_LIMIT
        out = committed(run(window(window_table, prefix, client, aggregate),
                            [{"user": "z", "ts": 61}], 20_000))  # fmt: skip
        assert 1_000 < out[0]["ids"]["at_least"] < 7_500
        assert out[0]["ids"] == out[0]["more"]  # one budget, shared in halves

    def test_a_session_of_10000_uuids_commits(self, aws, window_table):
        prefix = uuid.uuid4().hex
        step = session(window_table, prefix, aws("dynamodb"), {"ids": {"distinct": "id"}})
        docs = [{"user": "a", "ts": 5 + i / 1000, "id": str(uuid.uuid4())} for i in range(10_000)]
        assert committed(run(step, docs, 1)) == []
        out = committed(run(step, [{"user": "z", "ts": 100, "id": "x"}], 20_000))
        assert out[0]["ids"]["at_least"] > 3_000


class TestLargeValues:
    def test_a_first_value_too_large_to_keep_is_dead_lettered_and_the_window_goes_on(
        self, aws, window_table
    ):
        prefix = uuid.uuid4().hex
        aggregate = {"n": "count", "page": {"first": "page"}}
        step = window(window_table, prefix, aws("dynamodb"), aggregate)
        docs = [
            {"user": "a", "ts": 5, "page": "/small"},
            {"user": "a", "ts": 4, "page": "x" * 300_000},
            {"user": "a", "ts": 7, "page": "/also-small"},
        ]
        first = run(step, docs, 1)
        assert [type(f.error) for f in first.failures] == [ValueTooLarge]
        assert not first.failures[0].retryable
        assert "too large to aggregate" in str(first.failures[0].error)
        again = run(window(window_table, prefix, aws("dynamodb"), aggregate), docs, 1)
        assert [type(f.error) for f in again.failures] == [ValueTooLarge]  # redelivered: same
        # kept, the large value would be in the item twice (acc and prev) at the next batch
        assert committed(run(step, [{"user": "a", "ts": 8, "page": "/later"}], 5)) == []
        out = committed(run(step, [{"user": "z", "ts": 61, "page": "/"}], 10))
        assert (out[0]["n"], out[0]["page"]) == (3, "/small")

    def test_a_session_s_first_value_too_large_is_dead_lettered(self, aws, window_table):
        prefix = uuid.uuid4().hex
        step = session(window_table, prefix, aws("dynamodb"), {"page": {"first": "page"}})
        result = run(step, [{"user": "a", "ts": 5, "page": {"blob": "y" * 250_000}}], 1)
        assert [type(f.error) for f in result.failures] == [ValueTooLarge]
        assert committed(run(step, [{"user": "a", "ts": 6, "page": "/"}], 2)) == []
        out = committed(run(step, [{"user": "z", "ts": 100, "page": "/z"}], 3))
        assert [(r["key"], r["page"]) for r in out] == [("a", "/")]


class TestOutbox:
    def test_a_batch_whose_results_exceed_an_item_commits_and_replays_them(self, aws, window_table):
        """12 windows closed by one batch, each result with a 30 KB value: 360 KB of
        results, more than the shard item can hold alongside the rest; redelivered to a
        cold start, the batch yields the same results."""
        prefix = uuid.uuid4().hex
        client = aws("dynamodb")
        aggregate = {"n": "count", "page": {"last": "page"}}
        docs = [{"user": f"u{i}", "ts": 5, "page": f"{i}" * 30_000} for i in range(14)]
        docs.append({"user": "z", "ts": 61, "page": "/"})
        out = committed(run(window(window_table, prefix, client, aggregate), docs, 1))
        assert sorted(r["key"] for r in out) == sorted(f"u{i}" for i in range(14))
        assert max(item_sizes(aws, window_table, prefix).values()) < ITEM_LIMIT
        assert sum(k.startswith("#outbox#") for k in item_sizes(aws, window_table, prefix)) == 2
        replayed = committed(run(window(window_table, prefix, client, aggregate), docs, 1))
        assert replayed == out
        committed(run(window(window_table, prefix, client, aggregate), [docs[-1]], 100))
        kinds = item_sizes(aws, window_table, prefix)
        assert [k for k in kinds if k.startswith("#outbox#")] == []  # small again: inline


COLLECT = '''
class Collect:
    """Every value, in order: an accumulator with no bound (a plugin's)."""

    def __init__(self, field):
        self.field = field

    def create(self):
        return []

    def add(self, acc, value, at):
        acc.append(value)
        return acc

    def merge(self, a, b):
        return a + b

    def result(self, acc):
        return len(acc)
'''


@pytest.fixture
def collect_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An aggregation plugin ``collect`` installed as a distribution on sys.path."""
    (tmp_path / "shardline_collect.py").write_text(COLLECT)
    info = tmp_path / "shardline_collect-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shardline-collect\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[shardline.aggregations]\ncollect = shardline_collect:Collect\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins._group.cache_clear()
    yield
    plugins._group.cache_clear()
    sys.modules.pop("shardline_collect", None)


@pytest.mark.usefixtures("collect_plugin")
class TestPluginState:
    def test_records_that_would_make_a_window_too_large_are_dead_lettered(self, aws, window_table):
        """A plugin's accumulator past 400 KB: the batch's records for that window are
        dead-lettered (not retried for ever), the others are applied."""
        prefix = uuid.uuid4().hex
        client = aws("dynamodb")
        aggregate = {"n": "count", "all": {"collect": "blob"}}
        small = [{"user": "a", "ts": 5, "blob": "s"}, {"user": "b", "ts": 5, "blob": "t"}]
        assert committed(run(window(window_table, prefix, client, aggregate), small, 1)) == []
        big = [{"user": "a", "ts": 6, "blob": "x" * 100_000} for _ in range(5)]
        big.append({"user": "b", "ts": 7, "blob": "u"})
        result = run(window(window_table, prefix, client, aggregate), big, 10)
        assert [type(f.error) for f in result.failures] == [ValueTooLarge] * 5
        assert "too large to store" in str(result.failures[0].error)
        assert committed(result) == []
        closer = [{"user": "z", "ts": 61, "blob": "z"}]
        out = committed(run(window(window_table, prefix, client, aggregate), closer, 20))
        assert [(r["key"], r["n"], r["all"]) for r in out] == [("a", 1, 1), ("b", 2, 2)]

    def test_a_session_s_records_that_would_make_it_too_large_are_dead_lettered(
        self, aws, window_table
    ):
        prefix = uuid.uuid4().hex
        client = aws("dynamodb")
        aggregate = {"n": "count", "all": {"collect": "blob"}}
        docs = [{"user": "a", "ts": 5 + i, "blob": "x" * 100_000} for i in range(5)]
        docs.insert(2, {"user": "b", "ts": 6, "blob": "u"})
        result = run(session(window_table, prefix, client, aggregate), docs, 1)
        assert [type(f.error) for f in result.failures] == [ValueTooLarge] * 5
        closer = [{"user": "z", "ts": 100, "blob": "z"}]
        out = committed(run(session(window_table, prefix, client, aggregate), closer, 20))
        assert [(r["key"], r["n"]) for r in out] == [("b", 1)]


class TestQuietOutbox:
    def test_a_quiet_shard_s_outbox_in_parts_survives_another_shard_closing_its_windows(
        self, aws, window_table
    ):
        """s0's last batch left its outbox in parts; s1's batch closes s0's windows and
        rewrites s0's shard item (a new revision): s0's parts move with it, the old ones
        are deleted, and s0's batch delivered again yields the same results."""
        prefix, client, clock = uuid.uuid4().hex, aws("dynamodb"), [10_000.0]
        aggregate = {"n": "count", "page": {"last": "page"}}

        def step() -> Window:
            store = DynamoDBStore(window_table, prefix, 0, 60, client=client, now=lambda: clock[0])
            return Window(key="user", size_s=60, field="ts", aggregate=aggregate, function="f",
                          store=store, quiet_s=300, now=lambda: clock[0])  # fmt: skip

        def on(shard: str, docs: list[dict[str, Any]], first_seq: int) -> list[dict[str, Any]]:
            batch = [
                Record(orjson.dumps(d), d["user"], str(first_seq + i), shard_id=shard, index=i)
                for i, d in enumerate(docs)
            ]
            return committed(Chain([Step.of("processors[0].window", step())]).run(batch))

        docs = [{"user": f"u{i}", "ts": 5, "page": f"{i}" * 30_000} for i in range(14)]
        docs.append({"user": "y", "ts": 61, "page": "/"})  # closes the 14, opens y's
        first = on("s0", docs, 1)
        assert len(first) == 14
        parts = {k for k in item_sizes(aws, window_table, prefix) if k.startswith("#outbox#")}
        assert len(parts) == 2
        clock[0] += 301
        closing = on("s1", [{"user": "z", "ts": 9_990, "page": "/"}], 1)
        assert [r["key"] for r in closing] == ["y"]  # s0's quiet window, closed by s1
        now = {k for k in item_sizes(aws, window_table, prefix) if k.startswith("#outbox#")}
        assert len(now) == 2
        assert not now & parts  # s0's new revision's parts; the old ones deleted
        assert on("s0", docs, 1) == first  # redelivered: the same results


@pytest.mark.usefixtures("collect_plugin")
class TestPluginStateInMemory:
    """``state: memory`` (``shardline test``, ``invoke``) refuses what DynamoDB refuses:
    the same records are dead-lettered, the same results come out (as in
    :class:`TestPluginState`), and the state goes on from its last commit."""

    def test_records_that_would_make_a_window_too_large_are_dead_lettered(self) -> None:
        aggregate = {"n": "count", "all": {"collect": "blob"}}
        step = Window(key="user", size_s=60, field="ts", aggregate=aggregate, function="f",
                      state="memory")  # fmt: skip
        assert isinstance(step.store, MemoryStore)
        assert step.store.sized  # built-ins alone never outgrow an item: not checked then
        assert not Window(key="user", size_s=60, field="ts", aggregate={"n": "count"},
                          state="memory").store.sized  # type: ignore[attr-defined]  # fmt: skip
        small = [{"user": "a", "ts": 5, "blob": "s"}, {"user": "b", "ts": 5, "blob": "t"}]
        assert committed(run(step, small, 1)) == []
        big = [{"user": "a", "ts": 6, "blob": "x" * 100_000} for _ in range(5)]
        big.append({"user": "b", "ts": 7, "blob": "u"})
        result = run(step, big, 10)  # a warm shard: its state changed in place, put back
        assert [type(f.error) for f in result.failures] == [ValueTooLarge] * 5
        assert "too large to store" in str(result.failures[0].error)
        assert committed(result) == []
        assert committed(run(step, big, 10)) == []  # redelivered: applied already
        out = committed(run(step, [{"user": "z", "ts": 61, "blob": "z"}], 20))
        assert [(r["key"], r["n"], r["all"]) for r in out] == [("a", 1, 1), ("b", 2, 2)]

    def test_a_session_s_records_that_would_make_it_too_large_are_dead_lettered(self) -> None:
        aggregate = {"n": "count", "all": {"collect": "blob"}}
        step = SessionWindow(key="user", gap_s=30, field="ts", aggregate=aggregate,
                             function="f", state="memory")  # fmt: skip
        assert committed(run(step, [{"user": "b", "ts": 1, "blob": "u"}], 1)) == []
        docs = [{"user": "a", "ts": 5 + i, "blob": "x" * 100_000} for i in range(5)]
        docs.insert(2, {"user": "b", "ts": 6, "blob": "u"})
        result = run(step, docs, 2)
        assert [type(f.error) for f in result.failures] == [ValueTooLarge] * 5
        out = committed(run(step, [{"user": "z", "ts": 100, "blob": "z"}], 20))
        assert [(r["key"], r["n"]) for r in out] == [("b", 2)]
