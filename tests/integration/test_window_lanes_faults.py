"""Issue 16, S7: faults at the seams of windows with ``parallelization`` above 1 that no test
tried: the partition keys' bound (``TooManyPartitionKeys``) meeting redelivery (a batch
refused by a sink after its commit and bisected, a hopping record whose later window is
full, two sessions of one key bridged by a record), on the session's moto server.

Each test holds the results to a one-pass reference (:func:`reference`, the README's rule:
a record goes into its open windows, one of a window's 17th partition key into none) over
the records in the order they were first applied, and each record to one verdict
(applied, dead-lettered, late) on every delivery (:class:`Verdicts`). A step (or a runner)
built anew stands for a cold start; records are what Lambda delivers."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from deploy.local.servers import provision
from deploy.pipeline.config import compile_plan, parse_config
from processors.chain import Chain, ChainResult, Step
from processors.lineage import StaticLineage
from processors.session import SessionWindow, session_end_of
from processors.window import TooManyPartitionKeys, Window
from processors.window_state import HW_MAX_PKS
from processors.window_store import DynamoDBStore, MemoryStore
from stream.aws import reset_clients
from stream.records import Record
from stream.runtime import build_runner
from tests.faultproxy import FaultProxy, aws_json_error

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from stream.batch import BatchResult

pytestmark = pytest.mark.integration

SHARD = "shardId-000000000000"
#: ``(sequence number, partition key, window key, event time)``
Rec = tuple[int, str, str, float]


def reference(
    recs: Sequence[Rec], size: int, slide: int, lateness: float
) -> tuple[dict[tuple[str, int], int], set[int], set[int]]:
    """One pass, plain dicts: the closed windows' counts, the refused and the late records'
    sequence numbers. A record none of whose windows is open is late; one whose partition
    key would be the 17th of an open window of it goes into none (refused); else it goes
    into each open window; windows close when the watermark reaches their end."""
    pks: dict[tuple[str, int], set[str]] = {}
    counts: dict[tuple[str, int], int] = {}
    closed: dict[tuple[str, int], int] = {}
    refused: set[int] = set()
    late: set[int] = set()
    max_time: float | None = None
    for seq, pk, key, t in recs:
        wm = -float("inf") if max_time is None else max_time - lateness
        last = int(t // slide) * slide
        opened = [(key, s) for s in range(last - size + slide, last + 1, slide) if s + size > wm]
        if not opened:
            late.add(seq)
            continue
        if any(pk not in pks.get(w, ()) and len(pks.get(w, ())) >= HW_MAX_PKS for w in opened):
            refused.add(seq)
            continue
        for w in opened:
            pks.setdefault(w, set()).add(pk)
            counts[w] = counts.get(w, 0) + 1
        max_time = t if max_time is None else max(max_time, t)
        for w in [w for w in counts if w[1] + size <= max_time - lateness]:
            closed[w] = counts.pop(w)
    return closed, refused, late


class Verdicts:
    """Each record's verdict per delivery: ``dead`` (dead-lettered), ``late``, ``applied``
    (neither: counted, or decided before); a record whose batch failed retryably at it
    (a sink's refusal) gets none that time. :meth:`check`: one verdict per record."""

    def __init__(self) -> None:
        self.seen: dict[int, set[str]] = {}

    def add(self, seq: int, verdict: str) -> None:
        self.seen.setdefault(seq, set()).add(verdict)

    def of(self, verdict: str) -> set[int]:
        return {seq for seq, got in self.seen.items() if verdict in got}

    def check(self) -> None:
        mixed = {seq: got for seq, got in self.seen.items() if len(got) > 1}
        assert not mixed, f"records with two verdicts over their deliveries: {mixed}"


def _records(recs: Sequence[Rec], field: str = "k") -> list[Record]:
    return [Record(orjson.dumps({field: k, "ts": t, "id": str(seq)}), pk, str(seq),
                   shard_id=SHARD, index=i)
            for i, (seq, pk, k, t) in enumerate(recs)]  # fmt: skip


def chain_verdicts(out: ChainResult, recs: Sequence[Rec], verdicts: Verdicts) -> list[Any]:
    """Records the verdicts of a chain run (only ``TooManyPartitionKeys`` may fail a record
    here); its results (records with a ``window_id``)."""
    dead = set()
    for failure in out.failures:
        assert isinstance(failure.error, TooManyPartitionKeys), failure.error
        dead.add(int(failure.record.sequence_number))
    late = {int(r.sequence_number) for r in out.records if r.routes == ("late",)}
    for seq, *_ in recs:
        verdicts.add(seq, "dead" if seq in dead else "late" if seq in late else "applied")
    return [r for r in out.records if r.get("window_id") is not None]


# -- 1. the batch that added partition keys 10..16, refused by a sink after its commit --------

PIPELINE = """\
name: {name}
stream: {{name: {name}}}
sinks:
  rows: {{type: dynamodb, table: {name}-rows, key: window_id, mode: latest}}
  late: {{type: dynamodb, table: {name}-late, key: id}}
  dlq: {{type: sqs, queue: {name}-dlq}}
functions:
  counts:
    batch: {{parallelization: 2}}
    on_failure: dlq
    processors:
      - window: {{key: k, size_s: 60, field: ts, allowed_lateness_s: 30,
                  aggregate: {{n: count}}, late: late}}
    route: [rows]
"""
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def proxied(monkeypatch: pytest.MonkeyPatch, moto_endpoint: str) -> Iterator[FaultProxy]:
    """The runner's sinks and window state reach moto through a :class:`FaultProxy`."""
    with FaultProxy(moto_endpoint, seed=7) as proxy:
        for name, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": proxy.url}.items():
            monkeypatch.setenv(name, value)
        reset_clients()
        yield proxy
    reset_clients()


def _run(plan: dict[str, Any], recs: Sequence[Rec], verdicts: Verdicts) -> BatchResult:
    """One delivery to a cold function (a runner of its own), its verdicts recorded."""
    runner = build_runner(plan, "counts", metrics=False)
    try:
        result = runner.run(_records(recs))
    finally:
        for sink in runner.sinks.values():
            sink.close()
    dead = {int(letter.record.sequence_number) for letter in result.dead_letters}
    for letter in result.dead_letters:
        assert letter.error == "TooManyPartitionKeys", letter
    failed = {recs[i][0] for i in result.failed}
    for seq, *_ in recs:
        if seq not in failed:
            verdicts.add(seq, "dead" if seq in dead else "applied")
    return result


def _rows(aws: Callable[[str], Any], table: str) -> dict[str, int]:
    items = aws("dynamodb").scan(TableName=table, ConsistentRead=True)["Items"]
    return {i["window_id"]["S"]: int(i["n"]["N"]) for i in items}


def test_a_batch_that_filled_a_window_refused_by_a_sink_after_its_commit_and_bisected(
    aws: Callable[[str], Any], proxied: FaultProxy, unique: str
) -> None:
    """Batch A puts partition keys p1..p9 into window k [60, 120) (and y's window [0, 60)
    opens); batch B adds p10..p16, and its p15 record closes y's window, whose row the sink
    refuses once: B fails after its commit (from its closer). Lambda bisects it: its halves
    are delivered, each to a cold start, then B whole with later records of p17 and p18.
    Every delivery gives each record the same verdict (p10..p16 applied, p17 and p18
    dead-lettered), y's row is written by the redelivery, and the close of k's window
    counts p1..p16 once each, as the reference."""
    name = f"lf-{unique}"
    plan: dict[str, Any] = compile_plan(parse_config(PIPELINE.format(name=name),
                                                     source="p.yaml", env={}))  # fmt: skip
    assert plan["functions"]["counts"]["processors"][0]["window"]["parallelization"] == 2
    provision(plan, aws)
    rows_table = plan["sinks"]["rows"]["table"]
    a = [(1, "y", "y", 5.0)] + [(1 + i, f"p{i}", "k", 60.0 + i) for i in range(1, 10)]
    b = [(10 + i - 9, f"p{i}", "k", 75.0 + i) for i in range(10, 17)]  # seq 11..17, t 85..91
    later = [(18, "p17", "k", 92.0), (19, "p18", "k", 93.0)]
    closer = [(20, "z", "z", 200.0)]
    verdicts = Verdicts()

    def is_rows(request: Any) -> bool:
        return f'"{rows_table}"'.encode() in request.body

    denied = aws_json_error("denied", 400, "AccessDeniedException", "injected, once")
    # y's row is a window's result (FinalRecord): it goes in a BatchWriteItem, no condition
    rule = proxied.inject(denied, times=1, target="BatchWriteItem", where=is_rows)
    assert not _run(plan, a, verdicts).failed
    first = _run(plan, b, verdicts)
    assert rule.fired == 1
    assert first.failed, "the sink's refusal fails the batch from y's closer"
    assert {b[i][0] for i in first.failed} >= {16}  # p15's record closed y's window
    assert _rows(aws, rows_table) == {}
    for half in (b[:3], b[3:]):  # bisected
        got = _run(plan, half, verdicts)
        assert not got.failed, got.failed
        assert not got.dead_letters, got.dead_letters
    assert _rows(aws, rows_table) == {"counts/y/1970-01-01T00:00:00Z": 1}
    for _ in range(2):  # B again with the later records, and that batch once more
        got = _run(plan, b + later, verdicts)
        assert not got.failed
        assert {int(d.record.sequence_number) for d in got.dead_letters} == {18, 19}
    assert not _run(plan, closer, verdicts).failed
    verdicts.check()
    closed, refused, late = reference(a + b + later + closer, 60, 60, 30)
    assert verdicts.of("dead") == refused == {18, 19}
    assert late == set()
    assert closed == {("y", 0): 1, ("k", 60): 16}
    assert _rows(aws, rows_table) == {f"counts/{k}/{_iso(s)}": n for (k, s), n in closed.items()}
    assert aws("dynamodb").scan(TableName=plan["sinks"]["late"]["table"])["Items"] == []


def _iso(start: int) -> str:
    from processors.window import iso  # noqa: PLC0415

    return iso(start)


# -- 2. hopping: the earlier window closed, the later one open and full ----------------------


def _hopping(store: Any) -> Window:
    return Window(key="k", size_s=60, slide_s=30, field="ts", aggregate={"n": "count"},
                  function="f", store=store, now=lambda: 10_000.0, lineage=StaticLineage(),
                  late="late", parallelization=2)  # fmt: skip


def _dynamodb(aws: Callable[[str], Any], table: str, prefix: str, size: int) -> DynamoDBStore:
    return DynamoDBStore(table, prefix, 0, size, client=aws("dynamodb"),
                         now=lambda: 10_000.0, high_water=True)  # fmt: skip


@pytest.mark.parametrize("store", ["memory", "dynamodb"])
def test_a_hopping_record_whose_later_window_is_full_is_refused_whole_also_once_it_closed(
    aws: Callable[[str], Any], window_table: str, store: str
) -> None:
    """Windows of 60 s every 30 s, no lateness. q's record at 10 is in [-30, 30) and
    [0, 60); p1..p16 at 60..75 fill [30, 90) (and [60, 120)) and close [0, 60). q's record
    at 50 (X) is in [0, 60), closed, and [30, 90), open and full: refused whole. X is
    delivered again while [30, 90) is open, then after a record at 95 closed it (a cold
    start for the DynamoDB store): refused again each time (not late: its key's mark in
    [0, 60) is before it), p1's second record (in [30, 90) only) counted once."""
    prefix = f"h{uuid.uuid4().hex[:8]}:"
    memory = MemoryStore(sized=False)

    def step() -> Window:
        return _hopping(memory if store == "memory" else _dynamodb(aws, window_table, prefix, 60))

    first = [(1, "q", "k", 10.0)] + [(1 + i, f"p{i}", "k", 59.0 + i) for i in range(1, 17)]
    x = [(20, "q", "k", 50.0), (21, "p1", "k", 51.0)]
    closer, after = [(22, "z", "z", 95.0)], [(23, "z", "z", 130.0)]
    verdicts = Verdicts()
    warm = step()

    def deliver(w: Window, recs: list[Rec]) -> list[Any]:
        return chain_verdicts(Chain([Step.of("w", w)]).run(_records(recs)), recs, verdicts)

    results = deliver(warm, first)
    assert {r.get("window_id"): r.get("n") for r in results} == {
        "f/k/1969-12-31T23:59:30Z": 1,  # [-30, 30)
        "f/k/1970-01-01T00:00:00Z": 1,  # [0, 60): q only, p1 (at 60) is past it
    }
    deliver(warm, x)
    assert verdicts.of("dead") == {20}
    deliver(warm, x)  # again, [30, 90) still open
    got = deliver(warm, closer)
    deliver(step(), x + closer)  # after [30, 90) closed: a cold start (DynamoDB)
    deliver(step(), x + closer)
    got += deliver(step(), after)
    verdicts.check()
    closed, refused, late = reference(first + x + closer + after, 60, 30, 0)
    assert refused == verdicts.of("dead") == {20}
    assert late == verdicts.of("late") == set()
    emitted = {r.get("window_id"): r.get("n") for r in got}
    want = {f"f/{k}/{_iso(s)}": n for (k, s), n in closed.items() if s >= 30}
    assert emitted == want
    assert want["f/k/1970-01-01T00:00:30Z"] == 17  # p1..p16 and p1's record at 51


# -- 3. sessions: two sessions of one key, bridged ---------------------------------------------

GAP = 100


def session_reference(recs: Sequence[Rec]) -> tuple[dict[str, int], set[int]]:
    """The session property tests' one-pass reference (``n`` of each result) over the
    records the README's bound keeps: a key takes records of at most 16 partition keys over
    its life (no record here is late). The refused records' sequence numbers."""
    from tests.processors.test_session import _reference  # noqa: PLC0415

    names: dict[str, set[str]] = {}
    docs, refused = [], set()
    for seq, pk, key, t in recs:
        held = names.setdefault(key, set())
        if pk not in held and len(held) >= HW_MAX_PKS:
            refused.add(seq)
            continue
        held.add(pk)
        docs.append({"user": key, "ts": t, "amount": 1, "product": "p", "page": "/"})
    results, late = _reference({SHARD: docs}, GAP, GAP, "f")
    assert late == set()
    return {wid: r["n"] for wid, r in results.items()}, refused


def _sessions(store: Any) -> SessionWindow:
    return SessionWindow(key="k", gap_s=GAP, field="ts", allowed_lateness_s=GAP,
                         aggregate={"n": "count"}, late="late", function="f", store=store,
                         lineage=StaticLineage(), parallelization=2)  # fmt: skip


@pytest.mark.parametrize("bridge_pk", ["p1", "p19"], ids=["known-pk", "new-pk"])
@pytest.mark.parametrize("store", ["memory", "dynamodb"])
def test_two_sessions_of_one_key_with_nine_partition_keys_each_bridged_by_a_record(
    aws: Callable[[str], Any], window_table: str, store: str, bridge_pk: str
) -> None:
    """Key k: a session of p1..p9 at 1000..1008, another of p10..p18 at 1110..1118 (a gap
    of 102 s, both open: the lateness is the gap), then a record at 1060 within the gap of
    both. The merge of 9 and 9 partition keys (18) never happens: the bound is the key's,
    over its open sessions and its life, not a session's, so p17's and p18's records are
    refused when they come (the key names 16 already), before any bridge. A bridge of a
    partition key the key names (p1) merges the sessions into one of 16 partition keys
    and 17 records; one of a 17th (p19) is refused and the sessions stay two. Delivered
    again (the whole stream, warm, then on a cold start), every record keeps its verdict
    and the results are the same; no dead-lettered record is counted."""
    prefix = f"s{uuid.uuid4().hex[:8]}:"
    memory = MemoryStore(sized=False)

    def step() -> SessionWindow:
        if store == "memory":
            return _sessions(memory)
        return _sessions(DynamoDBStore(window_table, prefix, GAP, GAP, client=aws("dynamodb"),
                                       end_of=session_end_of(GAP), now=lambda: 10_000.0,
                                       high_water=True))  # fmt: skip

    one = [(i, f"p{i}", "k", 999.0 + i) for i in range(1, 10)]
    two = [(i, f"p{i}", "k", 1100.0 + i) for i in range(10, 19)]
    bridge = [(19, bridge_pk, "k", 1060.0)]
    closer = [(20, "z", "z", 1500.0)]
    stream = one + two + bridge + closer
    verdicts = Verdicts()

    def deliver(w: SessionWindow, recs: list[Rec]) -> dict[str, int]:
        out = chain_verdicts(Chain([Step.of("w", w)]).run(_records(recs)), recs, verdicts)
        return {r.get("window_id"): r.get("n") for r in out}

    warm = step()
    got = {}
    for batch in (one, two, bridge, closer):
        got.update(deliver(warm, batch))
    want, refused = session_reference(stream)
    assert verdicts.of("dead") == refused == ({17, 18} if bridge_pk == "p1" else {17, 18, 19})
    assert want == (
        {"f/k/1970-01-01T00:16:40Z": 17}  # one session: p1..p16 and the bridge
        if bridge_pk == "p1"
        else {"f/k/1970-01-01T00:16:40Z": 9, "f/k/1970-01-01T00:18:30Z": 7}
    )
    assert got == want
    assert deliver(warm, stream) == want  # redelivered: the same results, from the outbox
    assert deliver(step(), stream) == want  # and on a cold start
    assert deliver(step(), [*two, *bridge]) == {}
    verdicts.check()
    assert verdicts.of("late") == set()
