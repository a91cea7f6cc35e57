"""Session windows in lanes mode on DynamoDB (issue 16, slice S6), on the session's moto
server: sessions' items carry their high-water (``hw``), a key's high-water outside its open
sessions lives in an ``h#KEY`` item (closed sessions, late records), a late record's
outcome in an outbox entry (``~o#POS``), all written through the redo log; two window
steps whose ``DynamoDBStore``\\ s share one table stand for two processes (a new step: a
cold start). The scenarios of ``tests/processors/test_session_lanes.py``, where the memory
store runs them."""

from __future__ import annotations

import uuid
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.lineage import StaticLineage
from processors.session import SessionWindow, session_end_of
from processors.window_store import DynamoDBStore, WindowStateError
from stream.records import Record
from tests.integration.test_window_lanes_dynamodb import Process
from tests.processors.test_session import _reference
from tests.processors.test_session_lanes import SHARD, _apply, _lanes_scenario, _late, _rec
from tests.processors.test_session_lanes import _results as results
from tests.processors.test_window import AGGREGATE

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.integration


def _step(table: str, prefix: str, client: Any, **options: Any) -> SessionWindow:
    """A session window in lanes mode on the table: what a cold start builds."""
    args = {"key": "user", "gap_s": 100, "field": "ts", "allowed_lateness_s": 10,
            "aggregate": {"n": "count", "total": {"sum": "amount"}}, "late": "late",
            "function": "fn", **options}  # fmt: skip
    store = DynamoDBStore(table, prefix, args["allowed_lateness_s"], args["gap_s"],
                          client=client, end_of=session_end_of(args["gap_s"]),
                          high_water=True)  # fmt: skip
    return SessionWindow(**args, store=store, lineage=StaticLineage(), parallelization=2)


def _items(client: Any, table: str, prefix: str) -> dict[str, dict[str, Any]]:
    found = client.query(TableName=table, KeyConditionExpression="#s = :s",
                         ExpressionAttributeNames={"#s": "shard"},
                         ExpressionAttributeValues={":s": {"S": prefix + SHARD}},
                         ConsistentRead=True)["Items"]  # fmt: skip
    return {i["window"]["S"]: i for i in found}


def test_a_late_record_inside_a_session_a_later_record_extended_is_late_again_once(
    aws: Callable[[str], Any], window_table: str
) -> None:
    """The trap of the design (§5.1 step 3) on DynamoDB: the late record (position 3, at
    1020, inside ``a``'s session that position 4 extends) is delivered again after its
    sink write failed, on a cold process: the key's high-water (the session's ``hw``)
    says decided, and the outbox entry its commit wrote says late. Never added."""
    client, prefix = aws("dynamodb"), uuid.uuid4().hex
    one, two = _step(window_table, prefix, client), _step(window_table, prefix, client)
    assert _apply(one, [_rec("a", 1, 1000, 1)]) == [None]
    assert _apply(two, [_rec("b", 2, 1050, 10)]) == [None]  # watermark 1040
    assert _late(_apply(one, [_rec("a", 3, 1020, 100), _rec("a", 4, 1080, 1000)])) == [
        True,
        False,
    ]
    stored = _items(client, window_table, prefix)
    late_entries = [i for sk, i in stored.items() if sk.startswith("~o#")]
    assert [orjson.loads(i["o"]["S"]) for i in late_entries] == [{"late": True}]
    assert orjson.loads(stored['h#"a"']["hw"]["S"]) == {"a": ["3", 0, []]}
    assert _apply(two, [_rec("b", 5, 1075, 20)]) == [None]
    cold = _step(window_table, prefix, client)  # the redelivery, on a cold process
    assert _late(_apply(cold, [_rec("a", 3, 1020, 100), _rec("a", 4, 1080, 1000)])) == [
        True,
        False,
    ]
    closer = _apply(cold, [_rec("b", 6, 1400, 40)])
    assert results(closer) == {
        "fn/a/1970-01-01T00:16:40Z": (2, 1001),
        "fn/b/1970-01-01T00:17:30Z": (2, 30),
    }


def test_a_lagging_lane_s_late_record_alone_is_committed(
    aws: Callable[[str], Any], window_table: str
) -> None:
    """A lagging lane's batch holding only a late record changes no session and no
    applied position: it still commits (its key's ``h#KEY`` and its outbox entry), or a
    later record of its partition key in a session around its time makes its redelivery
    "decided, nothing"."""
    client, prefix = aws("dynamodb"), uuid.uuid4().hex
    one = _step(window_table, prefix, client)
    _apply(one, [_rec("b", 2, 1000), _rec("b", 4, 1100)])  # watermark 1090
    assert _late(_apply(one, [_rec("a", 1, 1050)])) == [True]  # position 1 < applied 4
    _apply(one, [_rec("a", 3, 1095), _rec("a", 5, 1091)])  # a's session: hw past position 1
    cold = _step(window_table, prefix, client)
    assert _late(_apply(cold, [_rec("a", 1, 1050)])) == [True]  # late again, from its entry


def test_a_record_of_a_session_that_closed_since_is_decided_after_a_cold_start(
    aws: Callable[[str], Any], window_table: str
) -> None:
    """The closed session's high-water went to its key's ``h#KEY`` item: a cold process
    finds the redelivered records decided (nothing), not late."""
    client, prefix = aws("dynamodb"), uuid.uuid4().hex
    one = _step(window_table, prefix, client)
    _apply(one, [_rec("a", 2, 1000), _rec("a", 4, 1001)])
    assert results(_apply(one, [_rec("b", 5, 2000)])) == {"fn/a/1970-01-01T00:16:40Z": (2, 2)}
    cold = _step(window_table, prefix, client)
    assert _late(_apply(cold, [_rec("a", 2, 1000), _rec("a", 4, 1001)])) == [False, False]
    assert cold.late == 0
    closer = _apply(cold, [_rec("b", 7, 3000)])
    assert results(closer) == {"fn/b/1970-01-01T00:33:20Z": (1, 1)}


def test_a_key_s_high_water_only_in_a_pending_log_is_laid_over(
    aws: Callable[[str], Any], window_table: str
) -> None:
    """The commit that closed ``a``'s session committed, but its roll-forward failed: the
    ``h#KEY`` item is only in the pending log. A cold process lays the log over the items
    and finds the redelivered records decided, not late."""
    client, prefix = Process(aws("dynamodb")), uuid.uuid4().hex
    one = _step(window_table, prefix, client)
    _apply(one, [_rec("a", 2, 1000), _rec("a", 4, 1001)])
    client.refuse_roll = True  # the closer's roll-forward: refused
    assert results(_apply(one, [_rec("b", 5, 2000)])) == {"fn/a/1970-01-01T00:16:40Z": (2, 2)}
    client.refuse_roll = False
    assert 'h#"a"' not in _items(aws("dynamodb"), window_table, prefix)  # only in the log
    cold = _step(window_table, prefix, client)
    assert _late(_apply(cold, [_rec("a", 2, 1000), _rec("a", 4, 1001)])) == [False, False]


@settings(
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(_lanes_scenario(), st.lists(st.integers(0, 4), min_size=60, max_size=60))
def test_session_lanes_on_dynamodb_yield_what_one_pass_over_the_commits_does(
    aws: Callable[[str], Any], window_table: str, scenario: dict[str, Any], faults: list[int]
) -> None:
    """The memory store's session lanes property on two DynamoDB stores sharing a table,
    with per-step faults (``faults``: 0 the batch's roll-forward refused, 1 its commit's
    answer lost, 2 its process restarted cold first, else none)."""
    docs, lanes = scenario["docs"], scenario["lanes"]
    prefix = uuid.uuid4().hex
    real = aws("dynamodb")
    clients = [Process(real), Process(real)]

    def make(process: int) -> SessionWindow:
        store = DynamoDBStore(window_table, prefix, scenario["lateness"], scenario["gap"],
                              client=clients[process], end_of=session_end_of(scenario["gap"]),
                              high_water=True)  # fmt: skip
        return SessionWindow(key="user", gap_s=scenario["gap"], field="ts",
                             allowed_lateness_s=scenario["lateness"], aggregate=AGGREGATE,
                             function="fn", late="late", store=store,
                             lineage=StaticLineage(), parallelization=2)  # fmt: skip

    steps = [make(0), make(1)]
    of_lane = [[i for i, d in enumerate(docs) if scenario["lane_of"][d["pk"]] == lane]
               for lane in range(lanes)]  # fmt: skip
    cursors = [0] * lanes
    first: list[int] = []
    placed: set[int] = set()
    verdicts: dict[int, set[bool]] = {}
    emitted: dict[str, dict[str, Any]] = {}

    def run(process: int, chosen: list[int]) -> bool:
        batch = [Record(orjson.dumps(docs[i]), docs[i]["pk"], str(1000 + i),
                        shard_id=SHARD) for i in chosen]  # fmt: skip
        try:
            outcomes = _apply(steps[process], batch)
        except WindowStateError:  # the batch fails: Lambda delivers it again
            if clients[process].applied_unanswered:  # but it committed: its place is here
                first.extend(i for i in chosen if i not in placed)
                placed.update(chosen)
            return False
        finally:
            clients[process].refuse_roll = False
            clients[process].applied_unanswered = False
        for i, rec in zip(chosen, outcomes, strict=True):
            if i not in placed:
                first.append(i)
                placed.add(i)
            is_late = isinstance(rec, Record) and rec.routes == ("late",)
            verdicts.setdefault(i, set()).add(is_late)
            for got in rec if isinstance(rec, list) else [rec]:
                if got is not None and got.routes != ("late",):
                    doc = got.json
                    assert emitted.setdefault(doc["window_id"], doc) == doc
        return True

    def deliver(lane: int, length: int, process: int, what: int = 9, fault: int = 9) -> None:
        start = cursors[lane]
        chosen = of_lane[lane][start : start + length]
        if not chosen:
            return
        if fault == 0:
            clients[process].refuse_roll = True
        elif fault == 1:
            clients[process].lose_answer = True
        elif fault == 2:
            steps[process] = make(process)
        if what == 2:
            clients[process].before.append(partial(run, 1 - process, chosen))
        elif what == 3:
            other = (lane + 1) % lanes
            clients[process].before.append(partial(deliver, other, length, 1 - process))
        ok = run(process, chosen)
        clients[process].before.clear()  # a batch that failed before its commit
        if ok:
            cursors[lane] = max(cursors[lane], start + len(chosen))
        if what == 1:
            run(1 - process, chosen)

    for (lane, length, process, what), fault in zip(scenario["steps"], faults, strict=False):
        if what == 0:
            low = min((of_lane[x][cursors[x]] for x in range(lanes)
                       if cursors[x] < len(of_lane[x])), default=len(docs))  # fmt: skip
            cursors = [sum(1 for i in of_lane[x] if i < low) for x in range(lanes)]
        deliver(lane, length, process, what, fault)
    while any(cursors[x] < len(of_lane[x]) for x in range(lanes)):
        for lane in range(lanes):
            deliver(lane, 4, lane % 2)
    assert sorted(first) == list(range(len(docs)))
    assert all(len(v) == 1 for v in verdicts.values()), verdicts
    witness = [docs[i] for i in first]
    expected, late = _reference({SHARD: witness}, scenario["gap"], scenario["lateness"], "fn")
    assert emitted == expected
    assert {i for i, v in verdicts.items() if True in v} == {first[p] for _, p in late}
