"""Session windows with their state in DynamoDB (``state: dynamodb``) against the session moto
server: the property of ``tests/processors/test_session.py`` with cold starts between
batches, a merge whose batch fails half-way through its writes, a quiet shard's sessions
closed by another shard's batch, and ``shardline run --in-process`` of examples/sessions."""

from __future__ import annotations

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
from processors.chain import Chain, Step
from processors.lineage import StaticLineage
from processors.session import SessionWindow, session_end_of
from processors.window_store import DynamoDBStore
from stream.aws import reset_clients
from stream.records import Record
from tests.e2e.test_faults import aws_split_semantics, kinesis_split  # noqa: F401  # fixtures
from tests.integration.test_window_state import MIDDLE, child_of, run_until_idle
from tests.processors.test_session import (
    check_sessions,
    session_reshard_scenario,
    session_scenario,
)
from tests.processors.test_window import AGGREGATE

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def step(
    table: str, prefix: str, client: Any, clock: list[float] | None = None, **options: Any
) -> SessionWindow:
    """A new session window on the table: what a cold start builds."""
    now = (lambda: clock[0]) if clock is not None else None
    args: dict[str, Any] = {"key": "user", "gap_s": 10, "field": "ts", "function": "f",
                            "aggregate": {"n": "count", "revenue": {"sum": "amount"}},
                            **options}  # fmt: skip
    lateness = args.get("allowed_lateness_s", 0)
    timed: dict[str, Any] = {"now": now} if now is not None else {}
    store = DynamoDBStore(table, prefix, lateness, args["gap_s"], client=client,
                          end_of=session_end_of(args["gap_s"]), **timed)  # fmt: skip
    return SessionWindow(**args, store=store, **timed)


def run(window: SessionWindow, docs: list[dict[str, Any]], first_seq: int, shard: str = "s0"):
    batch = [
        Record(orjson.dumps(d), d["user"], str(first_seq + i), shard_id=shard, index=i)
        for i, d in enumerate(docs)
    ]
    return Chain([Step.of("processors[0].window", window)]).run(batch)


def sessions(window: SessionWindow, docs: list[dict[str, Any]], first_seq: int, shard: str = "s0"):
    result = run(window, docs, first_seq, shard)
    assert not result.failures, result.failures
    return [(r.get("window_id"), r.get("n"), r.get("revenue")) for r in result.records]


def items(aws: Callable[[str], Any], table: str, prefix: str) -> dict[str, dict[str, Any]]:
    """One test's items (``prefix``) of the module's table, from every page of the scan
    (every test writes to the table: one page of 1 MB holds a prefix only while it is
    small)."""
    out = table_items(aws("dynamodb"), table)
    return {i["window"]["S"]: i for i in out if i["shard"]["S"].startswith(prefix)}


class ShardItemFails:
    """The real client, except that writing the shard item fails once (a timeout between
    the session items and the shard item)."""

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


A100 = {"user": "a", "ts": 100, "amount": 1}
A115 = {"user": "a", "ts": 115, "amount": 2}
A107 = {"user": "a", "ts": 107, "amount": 4}  # 7 after 100, 8 before 115: bridges them
CLOSER = {"user": "b", "ts": 200, "amount": 0}


class TestDynamoDBSessions:
    def test_a_merge_leaves_one_open_item_and_marks_the_merged_one_closed(self, aws, window_table):
        prefix = uuid.uuid4().hex
        client = aws("dynamodb")
        assert (
            sessions(step(window_table, prefix, client, allowed_lateness_s=10), [A100, A115], 1)
            == []
        )
        assert sessions(step(window_table, prefix, client, allowed_lateness_s=10), [A107], 3) == []
        state = items(aws, window_table, prefix)
        assert "acc" in state['w#100#"a"']
        assert state['w#115#"a"']["closed"] == {"BOOL": True}
        assert "acc" not in state['w#115#"a"']
        out = sessions(step(window_table, prefix, client, allowed_lateness_s=10), [CLOSER], 4)
        assert out == [("f/a/1970-01-01T00:01:40Z", 3, 7)]

    def test_a_merge_whose_batch_failed_half_way_changes_nothing(self, aws, window_table):
        """The session items were written (the merged one closed), the shard item was not:
        the batch is delivered again to a cold start, which reads both sessions back and
        merges them once."""
        prefix = uuid.uuid4().hex
        client = aws("dynamodb")
        sessions(step(window_table, prefix, client, allowed_lateness_s=10), [A100, A115], 1)
        torn = run(
            step(window_table, prefix, ShardItemFails(client), allowed_lateness_s=10), [A107], 3
        )
        assert [f.retryable for f in torn.failures] == [True]
        assert "injected" in str(torn.failures[0].error)
        fresh = step(window_table, prefix, client, allowed_lateness_s=10)
        assert sorted(fresh.store.shard("s0").windows) == [("a", 100.0), ("a", 115.0)]
        assert sessions(step(window_table, prefix, client, allowed_lateness_s=10), [A107], 3) == []
        out = sessions(step(window_table, prefix, client, allowed_lateness_s=10), [CLOSER], 4)
        assert out == [("f/a/1970-01-01T00:01:40Z", 3, 7)]

    def test_the_shard_s_next_end_follows_a_growing_session(self, aws, window_table):
        """Other shards find a quiet one by its next end: the end of its earliest-ending
        open session now, not the end it had before it grew."""
        prefix = uuid.uuid4().hex
        window = step(window_table, prefix, aws("dynamodb"))
        sessions(window, [A100], 1)
        sessions(window, [{**A100, "ts": 104}, {**A100, "ts": 108}], 2)
        assert items(aws, window_table, prefix)["#shard"]["next_end"] == {"N": "118"}

    def test_one_write_per_changed_session_then_one_for_the_shard(self, aws, window_table):
        prefix = uuid.uuid4().hex
        window = step(window_table, prefix, aws("dynamodb"))
        sessions(window, [A100], 1)  # the shard's first batch also lists it for the others
        before = window.store.writes  # type: ignore[attr-defined]
        docs = [{"user": u, "ts": 101 + t, "amount": 1} for u in ("a", "c") for t in range(3)]
        sessions(window, docs, 2)
        assert window.store.writes - before == 2 + 1  # type: ignore[attr-defined]

    def test_a_quiet_shard_s_sessions_close_with_another_shard_s_batch_once(
        self, aws, window_table
    ):
        prefix, client, clock = uuid.uuid4().hex, aws("dynamodb"), [10_000.0]
        assert sessions(step(window_table, prefix, client, clock), [A100, A107], 1) == []
        z = {"user": "z", "ts": 9_990, "amount": 0}
        assert sessions(step(window_table, prefix, client, clock), [z], 1, "s1") == []
        clock[0] += 299  # s0 is not quiet yet
        assert sessions(step(window_table, prefix, client, clock), [z], 2, "s1") == []
        clock[0] += 2
        closing = sessions(step(window_table, prefix, client, clock), [z], 3, "s1")
        assert closing == [("f/a/1970-01-01T00:01:40Z", 2, 5)]
        # s1's batch delivered again: the same result
        assert sessions(step(window_table, prefix, client, clock), [z], 3, "s1") == closing
        # s0 wakes: a record that would extend the closed session is late, none comes again
        s0 = step(window_table, prefix, client, clock)
        assert sessions(s0, [{"user": "a", "ts": 110, "amount": 9}], 10) == []
        assert s0.late == 1
        assert items(aws, window_table, prefix)['w#100#"a"']["closed"] == {"BOOL": True}


@settings(deadline=None, max_examples=15)
@given(session_scenario())
def test_sessions_equal_the_reference_with_cold_starts_between_batches(
    aws: Callable[[str], Any], window_table: str, scenario: dict[str, Any]
) -> None:
    """The memory store's property, on DynamoDB, with every other batch run by a new
    session window (a cold start that reads the state back)."""
    prefix = uuid.uuid4().hex
    client = aws("dynamodb")

    def make() -> SessionWindow:
        return step(window_table, prefix, client, gap_s=scenario["gap"], late="late", function="fn",
                    allowed_lateness_s=scenario["lateness"], aggregate=AGGREGATE)  # fmt: skip

    warm = make()
    calls = iter(range(10**6))

    def step_for() -> SessionWindow:
        return make() if next(calls) % 2 else warm

    check_sessions(scenario, step_for)


@settings(deadline=None, max_examples=15)
@given(session_reshard_scenario())
def test_across_a_split_or_merge_sessions_equal_the_reference_with_cold_starts(
    aws: Callable[[str], Any], window_table: str, scenario: dict[str, Any]
) -> None:
    """The reshard property of the memory store, on DynamoDB, every other batch by a new
    session window: children read their parents' sessions back from the table, claims are
    conditional writes on the parents' items, a cold start of a child that still inherits
    reads them again (a joined session's second part included, written closed in the
    child's partition once claimed)."""
    prefix = uuid.uuid4().hex
    client = aws("dynamodb")
    lineage = StaticLineage(scenario["lineage"])

    def make() -> SessionWindow:
        return step(window_table, prefix, client, gap_s=scenario["gap"], late="late", function="fn",
                    allowed_lateness_s=scenario["lateness"], aggregate=AGGREGATE,
                    lineage=lineage)  # fmt: skip

    warm = make()
    calls = iter(range(10**6))

    def step_for() -> SessionWindow:
        return make() if next(calls) % 2 else warm

    check_sessions(scenario, step_for)


def test_a_local_run_of_the_example_writes_each_visit_once(
    aws: Callable[[str], Any], moto_endpoint: str, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:  # fmt: skip
    """``shardline run --in-process`` of examples/sessions on the local stack: the plan's
    session window keeps its state in the function's table (one item per session, the
    merged one closed) and the visits table holds each closed visit once, by window_id."""
    credentials = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": moto_endpoint,
    }
    for name, value in credentials.items():
        monkeypatch.setenv(name, value)
    suffix = uuid.uuid4().hex[:8]
    text = (ROOT / "examples" / "sessions" / "pipeline.yaml").read_text(encoding="utf-8")
    text = text.replace("site", f"site{suffix}")
    plan = compile_plan(parse_config(text, source="pipeline.yaml", env={}))
    provision(plan, aws)
    views = [
        ("u1", "2026-01-01T10:00:00Z", "/home"), ("u1", "2026-01-01T10:20:00Z", "/shoes"),
        ("u1", "2026-01-01T10:51:00Z", "/bags"), ("u1", "2026-01-01T10:49:30Z", "/sale"),
        ("u2", "2026-01-01T11:30:00Z", "/home"),
    ]  # fmt: skip
    aws("kinesis").put_records(
        StreamName=plan["stream"]["name"],
        Records=[
            {"Data": orjson.dumps({"event_type": "page_view", "user_id": u, "ts": ts,
                                   "page": page}),
             "PartitionKey": "one"}  # one shard for all: one watermark
            for u, ts, page in views
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
    state = ddb.scan(TableName=window_table_name(plan, "visits-per-user"))["Items"]
    sessions_state = {i["window"]["S"]: "closed" in i for i in state
                      if i["window"]["S"].startswith("w#")}  # fmt: skip
    u1, u1_later, u2 = 1767261600, 1767264660, 1767267000  # 10:00, 10:51, 11:30
    assert sessions_state == {
        f'w#{u1}#"u1"': True, f'w#{u1_later}#"u1"': True, f'w#{u2}#"u2"': False
    }  # fmt: skip
    visits = ddb.scan(TableName=f"site{suffix}-visits")["Items"]
    assert [(i["window_id"]["S"], i["views"]["N"], i["window_end"]["S"]) for i in visits] == [
        ("visits-per-user/u1/2026-01-01T10:00:00Z", "4", "2026-01-01T11:21:00Z")
    ]


def _canonical(text: str) -> str:
    """A number's text as DynamoDB stores and returns it: no trailing zeroes."""
    return text.rstrip("0").rstrip(".") if "." in text and "e" not in text.lower() else text


class TestNumbersAsDynamoDBReturnsThem:
    """DynamoDB trims a number's trailing zeroes ("100.0" comes back as "100"; moto keeps
    the text as sent). Found in review: a session's item was named from ``str(100.0)``
    (``w#100.0#...``), read back as the int 100 after a cold start, and every later write
    went to ``w#100#...`` on a condition that could never hold, for ever."""

    def test_every_number_the_store_writes_is_already_in_dynamodbs_form(self, aws, window_table):
        prefix = uuid.uuid4().hex
        client = aws("dynamodb")
        first = {"user": "a", "ts": 100.0, "amount": 1}
        assert sessions(step(window_table, prefix, client), [first], 1) == []
        written = items(aws, window_table, prefix)
        assert 'w#100#"a"' in written
        numbers = [(name, value["N"]) for item in written.values()
                   for name, value in item.items() if "N" in value]  # fmt: skip
        assert numbers
        assert [(n, t) for n, t in numbers if _canonical(t) != t] == []

    def test_a_session_read_back_after_a_cold_start_is_written_to_the_same_item(
        self, aws, window_table
    ):
        prefix = uuid.uuid4().hex
        client = aws("dynamodb")
        assert sessions(step(window_table, prefix, client), [A100], 1) == []
        # a new instance reads the state back (a cold start) and adds to the open session
        assert sessions(step(window_table, prefix, client), [{"user": "a", "ts": 105, "amount": 1}],
                        2) == []  # fmt: skip
        assert sorted(items(aws, window_table, prefix)) == ["#shard", "#shards", 'w#100#"a"']
        out = sessions(step(window_table, prefix, client), [CLOSER], 3)
        assert out == [("f/a/1970-01-01T00:01:40Z", 2, 2)]


# -- a real split through the local event source mapping -----------------------------------

RESHARD_PIPELINE = """\
name: {name}
stream: {{name: {name}, mode: provisioned, shards: 1, encryption: none}}
sinks:
  results: {{type: s3, bucket: {name}, prefix: results/, compression: none}}
functions:
  visits:
    batch: {{size: 7, window_s: 0, starting_position: trim_horizon}}
    processors:
      - window:
          key: user
          gap_s: 30
          field: ts
          aggregate: {{n: count, total: {{sum: amount}}}}
    route: [results]
"""


@pytest.mark.usefixtures("kinesis_split")
def test_a_split_through_the_local_mapping_continues_each_key_s_session_on_its_child(
    aws: Callable[[str], Any], moto_endpoint: str, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:  # fmt: skip
    """``shardline run --in-process`` to idle, a real SplitShard on the session's moto
    server, more records of the same keys (now on the children), a second run: each
    key's visit that spans the split comes out once, as one session with the parent's and
    the child's records under the parent's start; a parent's session no child adds to
    (``z``) comes out once, closed by a child once both children are past its end."""
    credentials = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": moto_endpoint,
    }
    for name, value in credentials.items():
        monkeypatch.setenv(name, value)
    reset_clients()
    name = f"ssplit{uuid.uuid4().hex[:8]}"
    plan = compile_plan(parse_config(RESHARD_PIPELINE.format(name=name), source="p.yaml", env={}))
    provision(plan, aws)
    kinesis = aws("kinesis")
    users = [f"user{i}" for i in range(8)]
    assert {child_of(u) for u in users} == {0, 1}  # both children get keys

    def put(docs: list[dict[str, Any]]) -> None:
        kinesis.put_records(StreamName=name, Records=[
            {"Data": orjson.dumps(d), "PartitionKey": d["user"]} for d in docs
        ])  # fmt: skip

    put([{"user": u, "ts": t, "amount": 1} for t in (10, 30, 50) for u in [*users, "z"]])
    first = LocalRun(plan, worker_id="w1", in_process=True, client=aws,
                     state_dir=tmp_path / ".shardline", lease_duration_s=1.5)  # fmt: skip
    run_until_idle(first)
    (parent,) = [s["ShardId"] for s in kinesis.list_shards(StreamName=name)["Shards"]]
    kinesis.split_shard(StreamName=name, ShardToSplit=parent, NewStartingHashKey=str(MIDDLE))
    put([{"user": u, "ts": t, "amount": 10} for t in (55, 65, 200) for u in users])
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
    got = {(line["key"], line["window_start"], line["window_end"]): (line["n"], line["total"])
           for line in lines}  # fmt: skip
    start, end = "1970-01-01T00:00:10Z", "1970-01-01T00:01:35Z"  # 10 to 65 + 30
    expected = {(u, start, end): (3 + 2, 3 + 20) for u in users}  # the parent's 3, the child's 2
    expected[("z", start, "1970-01-01T00:01:20Z")] = (3, 3)  # no record after the split
    assert got == expected  # the sessions at 200 are still open


def test_two_parents_sessions_joined_on_the_child_are_claimed_at_each_parent(aws, window_table):
    """After a merge, a key's sessions on both parents less than gap_s apart are one on
    the child: its first batch claims each part on its parent's item (``owner``) and writes
    the later part closed in its own partition, so a cold start reads the session once."""
    prefix, client = uuid.uuid4().hex, aws("dynamodb")
    lineage = StaticLineage({"c": ("p1", "p2")})
    assert sessions(step(window_table, prefix, client, lineage=lineage), [A100], 1, "p1") == []
    assert sessions(step(window_table, prefix, client, lineage=lineage),
                    [{**A100, "ts": 105, "amount": 2}], 1, "p2") == []  # fmt: skip
    assert sessions(step(window_table, prefix, client, lineage=lineage),
                    [{**A100, "ts": 112, "amount": 4}], 10, "c") == []  # fmt: skip
    state = items(aws, window_table, prefix + "p")
    assert state['w#100#"a"']["owner"] == state['w#105#"a"']["owner"] == {"S": "c"}
    mine = items(aws, window_table, prefix + "c")
    assert "acc" in mine['w#100#"a"']
    assert mine['w#105#"a"']["closed"] == {"BOOL": True}
    out = sessions(step(window_table, prefix, client, lineage=lineage), [CLOSER], 11, "c")
    assert out == [("f/a/1970-01-01T00:01:40Z", 3, 7)]
