"""Window state in DynamoDB (``state: dynamodb``) against the session moto server: the
property of ``tests/processors/test_window.py`` with cold starts between batches, a batch
that fails half-way through its writes, two invocations of one batch, results emitted again
with the same id on redelivery, and ``shardline run --in-process`` of ``examples/windows``.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from hypothesis import given, settings

from deploy.local.readback import archive_lines, table_items
from deploy.local.run import LocalRun
from deploy.local.servers import provision
from deploy.names import window_table_name
from deploy.pipeline.config import compile_plan, parse_config
from processors import window_starts
from processors.chain import Chain, Step
from processors.lineage import KinesisLineage, StaticLineage
from processors.window import Window
from processors.window_store import DynamoDBStore, WindowStateError
from sinks.base import OK
from sinks.memory import MemorySink
from stream.aws import reset_clients
from stream.plan import PLAN_VERSION
from stream.records import Record
from stream.runtime import build_runner
from stream.testing import EventFactory
from tests.e2e.test_faults import aws_split_semantics, kinesis_split  # noqa: F401  # fixtures
from tests.integration.conftest import provision_window_table
from tests.processors.test_window import (
    AGGREGATE,
    _reshard_scenario,
    _scenario,
    check_scenario,
    lineage_of,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from sinks.base import Outcome as SinkOutcome

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def window(table: str, prefix: str, client: Any, **options: Any) -> Window:
    """A new window step on the table: what a cold start builds. ``parallelization`` above
    1 (an option) builds it in lanes mode, as the plan would: its store decides
    redeliveries by the windows' high-water (issue 16, slice S3)."""
    args = {"key": "user", "size_s": 60, "field": "ts", "aggregate": AGGREGATE,
            "function": "f", **options}  # fmt: skip
    lanes = args.get("parallelization", 1) > 1
    store = DynamoDBStore(table, prefix, args.get("allowed_lateness_s", 0), 60, client=client,
                          high_water=lanes)  # fmt: skip
    return Window(**args, store=store)


def run(step: Window, docs: list[dict[str, Any]], first_seq: int) -> list[Record]:
    batch = [
        Record(orjson.dumps(d), d["user"], str(first_seq + i), shard_id="s0", index=i)
        for i, d in enumerate(docs)
    ]
    return Chain([Step.of("processors[0].window", step)]).run(batch).records


def items(aws: Callable[[str], Any], table: str, prefix: str) -> list[dict[str, Any]]:
    """The items of one test (``prefix``) in the module's table, read from every page: the
    table holds every test's items, and a scan's first page (1 MB) holds a prefix only
    while the table is small (the module's tests run four times over fill it past that)."""
    out = table_items(aws("dynamodb"), table)
    return [i for i in out if i["shard"]["S"].startswith(prefix)]


def test_items_reads_a_test_s_items_past_the_first_page_of_a_full_table(
    aws: Callable[[str], Any],
) -> None:
    """Items sorted after 1 MB of other tests' items are found (a single scan missed them)."""
    table, ddb = provision_window_table(aws), aws("dynamodb")  # its own: it fills it
    pad = "x" * 10_000
    others = [{"shard": {"S": f"0other{n:04d}"}, "window": {"S": "#shard"}, "pad": {"S": pad}}
              for n in range(110)]  # fmt: skip  # 1.1 MB, sorted first
    mine = {"shard": {"S": "fmine"}, "window": {"S": "#shard"}}
    for start in range(0, len(others), 25):
        requests = [{"PutRequest": {"Item": i}} for i in others[start : start + 25]]
        assert not ddb.batch_write_item(RequestItems={table: requests}).get("UnprocessedItems")
    ddb.put_item(TableName=table, Item=mine)
    assert "LastEvaluatedKey" in ddb.scan(TableName=table)  # more than one page
    assert items(aws, table, "fmine") == [mine]


DOCS = [
    {"user": "a", "ts": 5, "amount": 2, "product": "p1", "page": "/x"},
    {"user": "b", "ts": 6, "amount": 3, "product": "p2", "page": "/y"},
    {"user": "a", "ts": 30, "amount": 4, "product": "p3", "page": "/z"},
]
CLOSER = [{"user": "c", "ts": 61, "amount": 1, "product": "p", "page": "/"}]


class TestDynamoDBStore:
    def test_state_survives_a_cold_start_and_each_window_is_one_item(self, aws, window_table):
        prefix = uuid.uuid4().hex
        client = aws("dynamodb")
        assert run(window(window_table, prefix, client), DOCS, 1) == []
        out = run(window(window_table, prefix, client), CLOSER, 10)  # a new runner: a cold start
        assert [(r.get("key"), r.get("n"), r.get("revenue")) for r in out] == [
            ("a", 2, 6),
            ("b", 1, 3),
        ]
        stored = items(aws, window_table, prefix)
        kinds = sorted(i["window"]["S"] for i in stored if "tombstone" not in i)
        assert kinds == ["#shard", "#shards", 'w#60#"c"']  # the closed ones buried
        buried = sorted(i["window"]["S"] for i in stored if "tombstone" in i)
        assert buried == ['w#0#"a"', 'w#0#"b"']

    def test_keys_that_are_not_plain_strings_keep_their_items_where_they_were(
        self, aws, window_table, monkeypatch
    ):
        """A state item holds its key's JSON value, as before keys had texts: a table with
        open windows of number keys, written by an earlier version, reads back into the same
        windows after an upgrade, and they are written to the same items."""
        prefix = uuid.uuid4().hex
        client = aws("dynamodb")
        docs = [{**DOCS[0], "user": 7}, {**DOCS[1], "user": "~a"}, {**DOCS[2], "user": 7.0}]
        assert run(window(window_table, prefix, client), docs, 1) == []
        kinds = sorted(i["window"]["S"] for i in items(aws, window_table, prefix))
        assert kinds == ["#shard", "#shards", 'w#0#"~a"', "w#0#7"]
        # the commit lists no starts (as past STARTS_MAX): the closed items are written,
        # to where they were, not deleted (processors.window_starts.dead)
        monkeypatch.setattr(window_starts, "STARTS_MAX", -1)
        out = run(window(window_table, prefix, client), CLOSER, 10)  # a cold start reads them back
        assert sorted((r.get("window_id"), r.get("key"), r.get("n")) for r in out) == [
            ('f/~"~a"/1970-01-01T00:00:00Z', "~a", 1),
            ("f/~7/1970-01-01T00:00:00Z", 7, 2),
        ]
        kinds = sorted(i["window"]["S"] for i in items(aws, window_table, prefix))
        assert kinds == ["#shard", "#shards", 'w#0#"~a"', "w#0#7", 'w#60#"c"']

    def test_one_write_per_distinct_key_and_window_then_one_for_the_shard(self, aws, window_table):
        prefix = uuid.uuid4().hex
        step = window(window_table, prefix, aws("dynamodb"))
        run(step, DOCS[:1], 1)  # the shard's first batch also lists it for the others
        before = step.store.writes  # type: ignore[attr-defined]
        run(step, [{**d, "ts": t} for d in DOCS for t in (1, 2, 3)], 2)
        assert step.store.writes - before == 2 + 1  # type: ignore[attr-defined]

    def test_a_redelivered_batch_writes_nothing_and_yields_the_same_ids(self, aws, window_table):
        prefix = uuid.uuid4().hex
        client = aws("dynamodb")
        first = window(window_table, prefix, client)
        run(first, DOCS, 1)
        closed = [r.json for r in run(first, CLOSER, 10)]
        # the result's write failed: Lambda delivers the batch again, maybe to a new instance
        again = window(window_table, prefix, client)
        assert [r.json for r in run(again, CLOSER, 10)] == closed
        assert again.store.writes == 0  # type: ignore[attr-defined]
        assert [r.json for r in run(first, CLOSER, 10)] == closed  # and to the warm one

    def test_a_batch_that_failed_half_way_changes_nothing(self, aws, window_table):
        """The window items were written, the shard item was not: the batch is delivered
        again and counts its records once."""
        prefix = uuid.uuid4().hex
        client = aws("dynamodb")
        run(window(window_table, prefix, client), DOCS[:1], 1)
        torn = window(window_table, prefix, ShardItemFails(client))
        failed = Chain([Step.of("w", torn)]).run(
            [
                Record(orjson.dumps(d), d["user"], str(2 + i), shard_id="s0", index=i)
                for i, d in enumerate(DOCS[1:])
            ]
        )
        assert [f.retryable for f in failed.failures] == [True, True]
        assert "injected" in str(failed.failures[0].error)
        fresh = window(window_table, prefix, client)
        run(fresh, DOCS[1:], 2)  # the redelivery, shorter than before: bisected
        out = run(fresh, CLOSER, 10)
        assert [(r.get("key"), r.get("n")) for r in out] == [("a", 2), ("b", 1)]

    def test_a_batch_that_closed_windows_and_failed_half_way_closes_them_again(
        self, aws, window_table
    ):
        prefix = uuid.uuid4().hex
        client = aws("dynamodb")
        run(window(window_table, prefix, client), DOCS, 1)
        torn = window(window_table, prefix, ShardItemFails(client))
        assert run(torn, CLOSER, 10) == []  # failed: nothing goes on
        out = run(window(window_table, prefix, client), CLOSER, 10)
        assert [(r.get("key"), r.get("n"), r.get("revenue")) for r in out] == [
            ("a", 2, 6),
            ("b", 1, 3),
        ]

    @pytest.mark.parametrize("whole", [True, False], ids=["read-whole", "read-by-starts"])
    def test_two_invocations_of_one_batch_apply_it_once(self, aws, window_table, whole):
        """A second invocation that read the state before the first one wrote it loses its
        conditions, and the records count once. Read whole (a shard item that lists no
        starts, as an earlier version's): the batch fails, retryable. Read by the starts
        its item lists (processors/window_starts.py): the step reads it whole and applies
        the batch again at once, in the process, and finds it applied: no failure."""
        prefix = uuid.uuid4().hex
        client = aws("dynamodb")
        run(window(window_table, prefix, client), DOCS[:1], 1)
        if whole:
            client.update_item(
                TableName=window_table,
                Key={"shard": {"S": prefix + "s0"}, "window": {"S": "#shard"}},
                UpdateExpression="REMOVE starts",
            )
        one = window(window_table, prefix, client)
        two = window(window_table, prefix, Before(client, lambda: run(one, DOCS[1:], 2)))
        failed = Chain([Step.of("w", two)]).run(
            [
                Record(orjson.dumps(d), d["user"], str(2 + i), shard_id="s0", index=i)
                for i, d in enumerate(DOCS[1:])
            ]
        )
        if whole:
            assert failed.failures
            assert all(isinstance(f.error, WindowStateError) for f in failed.failures)
            assert "another invocation" in str(failed.failures[0].error)
        else:
            assert (failed.failures, failed.records, failed.dropped) == ([], [], {"w": 2})
        out = run(window(window_table, prefix, client), CLOSER, 10)
        assert [(r.get("key"), r.get("n")) for r in out] == [("a", 2), ("b", 1)]


class Before:
    """The real client; before its first write, ``hook`` runs (another invocation). A
    batch writes its window items at once: each waits until the hook has run."""

    def __init__(self, client: Any, hook: Callable[[], Any]) -> None:
        self.client = client
        self.hook: Callable[[], Any] | None = hook
        self.lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def put_item(self, **request: Any) -> Any:
        with self.lock:
            if self.hook is not None:
                hook, self.hook = self.hook, None
                hook()
        return self.client.put_item(**request)


class ShardItemFails:
    """The real client, except that writing the shard item fails once (a timeout between
    the window items and the shard item)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def put_item(self, **request: Any) -> Any:
        if request["Item"]["window"]["S"] == "#shard" and not self.failed:
            self.failed = True
            from botocore.exceptions import ReadTimeoutError  # noqa: PLC0415

            raise ReadTimeoutError(endpoint_url="injected")
        return self.client.put_item(**request)


@settings(deadline=None, max_examples=15)
@given(_scenario())
def test_results_equal_the_reference_with_cold_starts_between_batches(
    aws: Callable[[str], Any], window_table: str, scenario: dict[str, Any]
) -> None:
    """The memory store's property, on DynamoDB, with every other batch run by a new
    window step (a cold start that reads the state back)."""
    prefix = uuid.uuid4().hex
    client = aws("dynamodb")

    def make() -> Window:
        store = DynamoDBStore(
            window_table, prefix, scenario["lateness"], scenario["size"], client=client
        )
        return Window(key="user", size_s=scenario["size"], slide_s=scenario["slide"],
                      field="ts", allowed_lateness_s=scenario["lateness"], aggregate=AGGREGATE,
                      late="late", function="fn", store=store)  # fmt: skip

    warm = make()
    calls = iter(range(10**6))

    def window_for() -> Window:
        return make() if next(calls) % 2 else warm

    check_scenario(scenario, window_for)


@settings(deadline=None, max_examples=15)
@given(_reshard_scenario())
def test_across_a_split_or_merge_results_equal_the_reference_with_cold_starts(
    aws: Callable[[str], Any], window_table: str, scenario: dict[str, Any]
) -> None:
    """The reshard property of the memory store, on DynamoDB, every other batch by a new
    window step: children read their parents' windows back from the table, claims are
    conditional writes, and a child's warm state a sibling's claim made stale is read again."""
    prefix = uuid.uuid4().hex
    client = aws("dynamodb")
    lineage = lineage_of(scenario)

    def make() -> Window:
        store = DynamoDBStore(
            window_table, prefix, scenario["lateness"], scenario["size"], client=client
        )
        return Window(key="user", size_s=scenario["size"], slide_s=scenario["slide"],
                      field="ts", allowed_lateness_s=scenario["lateness"], aggregate=AGGREGATE,
                      late="late", function="fn", store=store, lineage=lineage)  # fmt: skip

    warm = make()
    calls = iter(range(10**6))

    def window_for() -> Window:
        return make() if next(calls) % 2 else warm

    check_scenario(scenario, window_for)


def test_a_local_run_of_the_example_writes_one_state_item_per_window(
    aws: Callable[[str], Any], moto_endpoint: str, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:  # fmt: skip
    """``shardline run --in-process`` of examples/windows: the window table holds one item
    per (shard, key, open window) and the shard's item (a closed window's item is deleted
    once the batch that closed it committed); the hourly table holds the result."""
    for name, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": moto_endpoint}.items():
        monkeypatch.setenv(name, value)
    suffix = uuid.uuid4().hex[:8]
    text = (ROOT / "examples" / "windows" / "pipeline.yaml").read_text(encoding="utf-8")
    text = text.replace("shop", f"shop{suffix}")
    plan = compile_plan(parse_config(text, source="pipeline.yaml", env={}))
    provision(plan, aws)
    events = [
        ("u1", "2026-01-01T10:05:00Z", 20), ("u1", "2026-01-01T10:40:00Z", 15),
        ("u2", "2026-01-01T10:50:00Z", 1), ("u2", "2026-01-01T11:02:00Z", 2),
    ]  # fmt: skip
    aws("kinesis").put_records(
        StreamName=plan["stream"]["name"],
        Records=[
            {"Data": orjson.dumps({"event_type": "purchase", "user_id": u, "ts": ts,
                                   "amount": amount, "product_id": "p", "page": "/"}),
             "PartitionKey": "one"}  # one shard for all: one watermark
            for u, ts, amount in events
        ],
    )  # fmt: skip
    local = LocalRun(plan, worker_id="w1", in_process=True, client=aws,
                     state_dir=tmp_path / ".shardline")  # fmt: skip
    stop = threading.Event()
    timer = threading.Timer(30, stop.set)
    timer.start()
    started = time.monotonic()
    try:
        local.run(stop, until_idle_s=0.5)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 30
    ddb = aws("dynamodb")
    state = ddb.scan(TableName=window_table_name(plan, "purchases-per-user"))["Items"]
    windows = sorted(i["window"]["S"] for i in state
                     if i["window"]["S"].startswith("w#") and "tombstone" not in i)  # fmt: skip
    assert windows == ['w#1767265200#"u2"']
    assert [i["window"]["S"] for i in state if "closed" in i and "tombstone" not in i] == []
    hourly = ddb.scan(TableName=f"shop{suffix}-purchases-hourly")["Items"]
    assert sorted((i["key"]["S"], i["purchases"]["N"]) for i in hourly) == [
        ("u1", "2"), ("u2", "1")
    ]  # fmt: skip


def test_a_result_whose_write_failed_is_emitted_again_with_its_id_on_redelivery(
    window_table: str, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the function's runner (its own DynamoDB client, as in Lambda): the sink
    throttles the result once; the batch is reported from the record that closed the
    window; Lambda delivers the rest again (to a new instance: a cold start) and the sink
    gets the same result once, by window_id."""
    for name, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": moto_endpoint}.items():
        monkeypatch.setenv(name, value)
    prefix = f"{uuid.uuid4().hex}/"
    window_spec = {"key": "user", "size_s": 60, "field": "ts", "aggregate": {"n": "count"},
                   "state": "dynamodb", "table": window_table, "table_prefix": prefix,
                   "function": "f"}  # fmt: skip
    plan: Any = {
        "version": PLAN_VERSION,
        "name": "p",
        "stream": {"name": "s"},
        "sinks": {"hourly": {"type": "dynamodb", "table": "unused", "key": "window_id"}},
        "functions": {"f": {"processors": [{"window": window_spec}], "route": ["hourly"],
                            "on_failure": "hourly"}},
    }  # fmt: skip
    throttled: list[str] = []

    def fail(record: Record, attempt: int) -> str | None:
        if throttled:
            return None
        throttled.append(record.get("window_id"))
        return "retryable"  # the first result written, once

    sink = Written("hourly", fail=fail)
    factory = EventFactory()
    entries = [factory.record(d, d["user"]) for d in [*DOCS, *CLOSER]]
    first = build_runner(plan, "f", lambda name, spec: sink, metrics=False)
    failures = first.handle(factory.event(entries)).response["batchItemFailures"]
    closing = entries[-1]["kinesis"]["sequenceNumber"]
    assert failures == [{"itemIdentifier": closing}]
    again = build_runner(plan, "f", lambda name, spec: sink, metrics=False)
    result = again.handle(factory.event(entries[-1:]))
    assert result.response["batchItemFailures"] == [], result.failed
    assert throttled == ["f/a/1970-01-01T00:00:00Z"]
    assert sorted((d["window_id"], d["n"]) for d in sink.written) == [
        ("f/a/1970-01-01T00:00:00Z", 2),
        ("f/b/1970-01-01T00:00:00Z", 1),
    ]  # each once: b's write of the first delivery was skipped after a's failed (per key)


class Written(MemorySink):
    """A memory sink that keeps each document it wrote."""

    def __init__(self, name: str, fail: Callable[[Record, int], str | None]) -> None:
        super().__init__(name, fail)
        self.written: list[dict[str, Any]] = []

    def _write(self, items: Sequence[Record]) -> list[SinkOutcome]:
        out = super()._write(items)
        self.written += [i.json for i, o in zip(items, out, strict=True) if o is OK]
        return out


class TestQuietShards:
    """A shard with no batch for ``quiet_s`` has its windows closed by the next batch of
    another shard, once their end + lateness is ``quiet_s`` past by the clock."""

    @staticmethod
    def step(table: str, prefix: str, client: Any, clock: list[float]) -> Window:
        store = DynamoDBStore(table, prefix, 0, 60, client=client, now=lambda: clock[0])
        return Window(key="user", size_s=60, field="ts", aggregate={"n": "count"},
                      function="f", store=store, quiet_s=300,
                      now=lambda: clock[0])  # fmt: skip

    @staticmethod
    def on(step: Window, shard: str, docs: list[dict[str, Any]], first_seq: int) -> list[Any]:
        batch = [
            Record(orjson.dumps(d), d["user"], str(first_seq + i), shard_id=shard, index=i)
            for i, d in enumerate(docs)
        ]
        result = Chain([Step.of("processors[0].window", step)]).run(batch)
        assert not result.failures, result.failures
        return [(r.get("window_id"), r.get("n"), r.shard_id) for r in result.records]

    def test_another_shard_s_batch_closes_a_quiet_shard_s_windows_once(self, aws, window_table):
        prefix, client, clock = uuid.uuid4().hex, aws("dynamodb"), [10_000.0]
        self.on(self.step(window_table, prefix, client, clock), "s0", DOCS, 1)  # opens a, b
        z = {"user": "z", "ts": 9_990}
        assert self.on(self.step(window_table, prefix, client, clock), "s1", [z], 1) == []
        clock[0] += 299  # s0 is not quiet yet
        assert self.on(self.step(window_table, prefix, client, clock), "s1", [z], 2) == []
        clock[0] += 2
        closing = self.on(self.step(window_table, prefix, client, clock), "s1", [z], 3)
        assert closing == [("f/a/1970-01-01T00:00:00Z", 2, "s1"),
                           ("f/b/1970-01-01T00:00:00Z", 1, "s1")]  # fmt: skip
        # s1's batch delivered again (its results' write failed): the same results
        assert self.on(self.step(window_table, prefix, client, clock), "s1", [z], 3) == closing
        # s0 wakes: a record for a closed window is late, and a/b never come out again
        s0 = self.step(window_table, prefix, client, clock)
        assert self.on(s0, "s0", [{"user": "a", "ts": 7}, {"user": "a", "ts": 20_000}], 10) == []
        assert s0.late == 1
        assert self.on(self.step(window_table, prefix, client, clock), "s1", [z], 4) == []

    def test_a_quiet_shard_that_wakes_meanwhile_makes_the_closing_batch_retry(
        self, aws, window_table
    ):
        prefix, client, clock = uuid.uuid4().hex, aws("dynamodb"), [10_000.0]
        z = [{"user": "z", "ts": 20_000 + n} for n in range(4)]  # s1's windows stay open
        self.on(self.step(window_table, prefix, client, clock), "s0", DOCS, 1)
        self.on(self.step(window_table, prefix, client, clock), "s1", z[:1], 1)
        clock[0] += 400
        s0 = self.step(window_table, prefix, client, clock)
        woke = {"user": "a", "ts": 40}
        s1 = self.step(
            window_table, prefix, Before(client, lambda: self.on(s0, "s0", [woke], 5)), clock
        )
        batch = [Record(orjson.dumps(z[1]), "z", "2", shard_id="s1", index=0)]
        failed = Chain([Step.of("w", s1)]).run(batch)
        assert [type(f.error) for f in failed.failures] == [WindowStateError]
        # delivered again: s0 is not quiet any more (its batch just now), nothing closes
        assert self.on(self.step(window_table, prefix, client, clock), "s1", z[1:2], 2) == []
        clock[0] += 301
        closing = self.on(self.step(window_table, prefix, client, clock), "s1", z[2:3], 3)
        assert closing == [("f/a/1970-01-01T00:00:00Z", 3, "s1"),
                           ("f/b/1970-01-01T00:00:00Z", 1, "s1")]  # fmt: skip


# -- a real split through the local event source mapping -----------------------------------

RESHARD_PIPELINE = """\
name: {name}
stream: {{name: {name}, mode: provisioned, shards: 1, encryption: none}}
sinks:
  results: {{type: s3, bucket: {name}, prefix: results/, compression: none}}
functions:
  per-user:
    batch: {{size: 7, window_s: 0, starting_position: trim_horizon}}
    processors:
      - window:
          key: user
          size_s: 60
          field: ts
          aggregate: {{n: count, total: {{sum: amount}}}}
    route: [results]
"""


def child_of(user: str) -> int:
    """Which half of the hash range Kinesis puts ``user`` in (the split is at the middle)."""
    return int(int(hashlib.md5(user.encode()).hexdigest(), 16) >= MIDDLE)


MIDDLE = 2**127


@pytest.mark.usefixtures("kinesis_split")
def test_a_split_through_the_local_mapping_continues_each_key_s_window_on_its_child(
    aws: Callable[[str], Any], moto_endpoint: str, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:  # fmt: skip
    """``shardline run --in-process`` to idle, a real SplitShard on the session's moto
    server, more records of the same keys (now on the children), a second run: each key's
    window that straddles the split comes out once, with the parent's and the child's
    records; a parent window no child adds to (``z``) comes out once, closed by a child."""
    for name, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": moto_endpoint}.items():
        monkeypatch.setenv(name, value)
    reset_clients()
    name = f"wsplit{uuid.uuid4().hex[:8]}"
    plan = compile_plan(parse_config(RESHARD_PIPELINE.format(name=name), source="p.yaml", env={}))
    provision(plan, aws)
    kinesis = aws("kinesis")
    users = [f"user{i}" for i in range(8)]
    assert {child_of(u) for u in users} == {0, 1}  # both children get keys

    def put(docs: list[dict[str, Any]]) -> None:
        kinesis.put_records(StreamName=name, Records=[
            {"Data": orjson.dumps(d), "PartitionKey": d["user"]} for d in docs
        ])  # fmt: skip

    before = [{"user": u, "ts": t, "amount": 1} for t in (10, 30, 50) for u in [*users, "z"]]
    put(before)
    first = LocalRun(plan, worker_id="w1", in_process=True, client=aws,
                     state_dir=tmp_path / ".shardline", lease_duration_s=1.5)  # fmt: skip
    run_until_idle(first)
    (parent,) = [s["ShardId"] for s in kinesis.list_shards(StreamName=name)["Shards"]]
    kinesis.split_shard(StreamName=name, ShardToSplit=parent, NewStartingHashKey=str(MIDDLE))
    after = [{"user": u, "ts": t, "amount": 10} for t in (55, 65, 200) for u in users]
    put(after)
    second = LocalRun(plan, worker_id="w1", in_process=True, client=aws,
                      state_dir=tmp_path / ".shardline", lease_duration_s=1.5)  # fmt: skip
    run_until_idle(second)

    shards = kinesis.list_shards(StreamName=name)["Shards"]
    assert sorted(s.get("ParentShardId") for s in shards if s["ShardId"] != parent) == [
        parent, parent,
    ]  # fmt: skip
    lines = archive_lines(aws("s3"), name, "results/")
    emitted = Counter(line["window_id"] for line in lines)
    assert max(emitted.values()) == 1, emitted  # each window_id once
    got = {(line["key"], line["window_start"]): (line["n"], line["total"]) for line in lines}
    zero, minute = "1970-01-01T00:00:00Z", "1970-01-01T00:01:00Z"
    expected = {(u, zero): (3 + 1, 3 + 10) for u in users}  # the parent's 3, the child's 1
    expected |= {(u, minute): (1, 10) for u in users}
    expected[("z", zero)] = (3, 3)  # z has no record after the split: a child closes it
    assert got == expected


def run_until_idle(local: LocalRun, timeout: float = 60) -> None:
    stop = threading.Event()
    timer = threading.Timer(timeout, stop.set)
    timer.daemon = True
    timer.start()
    started = time.monotonic()
    try:
        local.run(stop, until_idle_s=0.5)
    finally:
        timer.cancel()
    assert time.monotonic() - started < timeout, f"the run was not idle within {timeout} s"


def test_kinesis_lineage_lists_the_shards_once_per_shard_it_does_not_know(
    aws: Callable[[str], Any],
) -> None:
    """Parents and children from ListShards after a real SplitShard on the moto server; a
    shard already listed is answered from the list, an unknown one lists again; a stream
    that does not exist has no reshards."""
    kinesis = aws("kinesis")
    name = f"lineage{uuid.uuid4().hex[:8]}"
    kinesis.create_stream(StreamName=name, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 50}
    )
    (parent,) = [s["ShardId"] for s in kinesis.list_shards(StreamName=name)["Shards"]]
    kinesis.split_shard(StreamName=name, ShardToSplit=parent, NewStartingHashKey=str(MIDDLE))
    arn = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
    lineage = KinesisLineage(client=kinesis)
    children = lineage.children(arn, parent)
    assert len(children) == 2
    assert [lineage.parents(arn, c) for c in children] == [(parent,), (parent,)]
    assert lineage.parents(arn, parent) == ()
    assert lineage.calls == 1
    assert lineage.parents(arn, "shardId-000000000099") == ()  # not known: listed again
    assert lineage.calls == 2
    gone = arn.replace(f"stream/{name}", f"stream/{name}-gone")
    assert KinesisLineage(client=kinesis).parents(gone, "shardId-000000000001") == ()


def test_kinesis_lineage_sees_a_split_made_after_it_listed_once_the_list_is_old(
    aws: Callable[[str], Any],
) -> None:
    """Found in review: the list was made again only for an unknown shard, so a sibling
    split after it was made stayed childless for the container's life (an inherited window
    then waits for a drained shard, not for its children). A shard without children is
    asked about again once the list is ``max_age_s`` old, and not before."""
    kinesis = aws("kinesis")
    name = f"lineage{uuid.uuid4().hex[:8]}"
    kinesis.create_stream(StreamName=name, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 50}
    )
    (parent,) = [s["ShardId"] for s in kinesis.list_shards(StreamName=name)["Shards"]]
    kinesis.split_shard(StreamName=name, ShardToSplit=parent, NewStartingHashKey=str(MIDDLE))
    arn = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
    clock = [0.0]
    lineage = KinesisLineage(client=kinesis, max_age_s=60, now=lambda: clock[0])
    _low, high = lineage.children(arn, parent)
    assert lineage.children(arn, high) == ()
    kinesis.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 50}
    )
    kinesis.split_shard(StreamName=name, ShardToSplit=high, NewStartingHashKey=str(MIDDLE * 3 // 2))
    calls = lineage.calls
    clock[0] = 59.0
    assert lineage.children(arn, high) == ()  # the list is young: not asked again
    assert lineage.calls == calls
    clock[0] = 61.0
    grandchildren = lineage.children(arn, high)
    assert len(grandchildren) == 2
    assert [lineage.parents(arn, g) for g in grandchildren] == [(high,), (high,)]
    assert lineage.calls == calls + 1


def test_a_warm_child_whose_sibling_claimed_a_window_applies_its_batch_again(
    aws: Callable[[str], Any], window_table: str
) -> None:
    """Both children of a split inherit the parent's window; c2 claims it; c1, warm, still
    holds it as inherited: its claim loses its condition, and the same invocation reads
    the state again, where the window is closed for c1: its record is late, nothing fails,
    and the window comes out once, from c2, by c2's watermark alone."""
    prefix, client = uuid.uuid4().hex, aws("dynamodb")
    lineage = StaticLineage({"c1": ("p",), "c2": ("p",)})

    def step() -> Window:
        store = DynamoDBStore(window_table, prefix, 0, 60, client=client)
        return Window(key="user", size_s=60, field="ts", aggregate={"n": "count"},
                      function="f", store=store, lineage=lineage, late="late")  # fmt: skip

    def on(w: Window, shard: str, docs: list[dict[str, Any]], seq: int) -> list[Any]:
        batch = [Record(orjson.dumps(d), d["user"], str(seq + i), shard_id=shard, index=i)
                 for i, d in enumerate(docs)]  # fmt: skip
        result = Chain([Step.of("w", w)]).run(batch)
        assert not result.failures, result.failures
        return [(r.get("window_id"), r.get("n"), r.routes) for r in result.records]

    on(step(), "p", [{"user": "a", "ts": 5}], 1)
    c1, c2 = step(), step()
    assert on(c1, "c1", [{"user": "b", "ts": 10}], 10) == []  # c1 inherits a, warm
    assert on(c2, "c2", [{"user": "a", "ts": 20}], 10) == []  # c2 claims a
    held = [i for i in items(aws, window_table, prefix) if i["shard"]["S"] == f"{prefix}p"
            and i["window"]["S"].startswith("w#")]  # fmt: skip
    assert [(i["owner"]["S"], "expires" in i) for i in held] == [("c2", True)]  # TTL: c2 has it
    writes = c1.store.writes  # type: ignore[attr-defined]
    assert on(c1, "c1", [{"user": "a", "ts": 30}], 11) == [(None, None, ("late",))]
    assert c1.store.writes - writes == 2  # type: ignore[attr-defined]  # the lost claim, its item
    # c2 owns it: its own watermark closes it (c1's is at 30), once
    assert on(c2, "c2", [{"user": "y", "ts": 60}], 11) == [("f/a/1970-01-01T00:00:00Z", 2, None)]
    assert on(c1, "c1", [{"user": "b", "ts": 61}], 12) == [  # its own b; a never again
        ("f/b/1970-01-01T00:00:00Z", 1, None)
    ]


def test_a_child_s_first_batch_after_its_parent_went_quiet_inherits_not_closes_it(
    aws: Callable[[str], Any], window_table: str
) -> None:
    """The parent drained long ago (quiet by the clock, not marked yet): the child's first
    batch inherits its windows rather than closing them as a quiet shard's, and a key's
    window continues on the child, once, without a retry."""
    prefix, client, clock = uuid.uuid4().hex, aws("dynamodb"), [10_000.0]
    lineage = StaticLineage({"c": ("p",)})

    def step() -> Window:
        store = DynamoDBStore(window_table, prefix, 0, 60, client=client, now=lambda: clock[0])
        return Window(key="user", size_s=60, field="ts", aggregate={"n": "count"},
                      function="f", store=store, lineage=lineage, quiet_s=300,
                      now=lambda: clock[0])  # fmt: skip

    def on(shard: str, docs: list[dict[str, Any]], seq: int) -> list[Any]:
        batch = [Record(orjson.dumps(d), d["user"], str(seq + i), shard_id=shard, index=i)
                 for i, d in enumerate(docs)]  # fmt: skip
        result = Chain([Step.of("w", step())]).run(batch)
        assert not result.failures, result.failures
        return [(r.get("window_id"), r.get("n")) for r in result.records]

    on("p", [{"user": "a", "ts": 5}], 1)
    clock[0] += 400
    closing = on("c", [{"user": "a", "ts": 30}, {"user": "b", "ts": 9_000}], 10)
    assert closing == [("f/a/1970-01-01T00:00:00Z", 2)]  # the parent's record and the child's
    assert on("c", [{"user": "b", "ts": 9_999}], 12) == [("f/b/1970-01-01T02:30:00Z", 1)]


def _as_written_before_key_texts(
    aws: Callable[[str], Any], table: str, prefix: str, shard: str, old_json: str
) -> None:
    """Move the shard's window items to where the version before key texts wrote them: its
    sort key and ``key`` held the key's JSON as the record had it (``1.0``), where
    :func:`processors.window_keys.key_json` now writes the canonical number (``1``)."""
    ddb = aws("dynamodb")
    for item in items(aws, table, prefix):
        if item["shard"]["S"] == prefix + shard and item["window"]["S"].startswith("w#"):
            ddb.delete_item(TableName=table, Key={"shard": item["shard"], "window": item["window"]})
            start = item["window"]["S"].split("#")[1]
            ddb.put_item(TableName=table, Item={
                **item, "window": {"S": f"w#{start}#{old_json}"}, "key": {"S": old_json},
            })  # fmt: skip


class TestItemsOfAnEarlierVersion:
    """Open windows an earlier version wrote for a whole float key (``w#0#1.0``) are read,
    written, claimed and closed where they are: a write to ``w#0#1`` would fail its
    condition on every retry and stop the shard (found in review)."""

    def step(self, table: str, prefix: str, client: Any, **options: Any) -> Window:
        store = DynamoDBStore(table, prefix, 0, 60, client=client)
        return Window(key="user", size_s=60, field="ts", aggregate={"n": "count"},
                      function="f", store=store, **options)  # fmt: skip

    def on(self, w: Window, shard: str, docs: list[dict[str, Any]], seq: int) -> list[Any]:
        batch = [Record(orjson.dumps(d), "p", str(seq + i), shard_id=shard, index=i)
                 for i, d in enumerate(docs)]  # fmt: skip
        result = Chain([Step.of("w", w)]).run(batch)
        assert not result.failures, result.failures
        return [(r.get("window_id"), r.get("n")) for r in result.records]

    def test_a_window_of_a_whole_float_key_closes_after_an_upgrade(self, aws, window_table):
        prefix, client = uuid.uuid4().hex, aws("dynamodb")
        assert (
            self.on(self.step(window_table, prefix, client), "s0", [{"user": 1.0, "ts": 5}], 1)
            == []
        )
        _as_written_before_key_texts(aws, window_table, prefix, "s0", "1.0")
        # cold starts: a record for the window, then one that closes it
        assert (
            self.on(self.step(window_table, prefix, client), "s0", [{"user": 1.0, "ts": 6}], 2)
            == []
        )
        closer = [{"user": "c", "ts": 61}]
        assert self.on(self.step(window_table, prefix, client), "s0", closer, 3) == [
            ("f/~1/1970-01-01T00:00:00Z", 2)
        ]
        kinds = sorted(i["window"]["S"] for i in items(aws, window_table, prefix))
        assert kinds == ["#shard", "#shards", "w#0#1.0", 'w#60#"c"']

    def test_a_child_claims_a_parent_s_window_of_a_whole_float_key_after_an_upgrade(
        self, aws, window_table
    ):
        prefix, client = uuid.uuid4().hex, aws("dynamodb")
        lineage = StaticLineage({"c": ("s0",)})
        parent = self.step(window_table, prefix, client, lineage=lineage)
        assert self.on(parent, "s0", [{"user": 1.0, "ts": 5}], 1) == []
        _as_written_before_key_texts(aws, window_table, prefix, "s0", "1.0")
        child = self.step(window_table, prefix, client, lineage=lineage)
        assert self.on(child, "c", [{"user": 1.0, "ts": 20}], 10) == []
        assert self.on(child, "c", [{"user": "c", "ts": 61}], 11) == [
            ("f/~1/1970-01-01T00:00:00Z", 2)
        ]
        held = [i for i in items(aws, window_table, prefix) if i["shard"]["S"] == f"{prefix}s0"
                and i["window"]["S"].startswith("w#")]  # fmt: skip
        assert [(i["window"]["S"], i["owner"]["S"]) for i in held] == [("w#0#1.0", "c")]
