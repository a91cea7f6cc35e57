"""Lanes mode's exactly-once property (issue 16, slice S4a's redo log) on the session's moto
server, not only the memory store: the scenarios of
``tests/processors/test_window_lanes.py`` (lanes interleaved, restarts from the checkpoint,
twins after a batch or at once, another lane's batch between a read and its commit) run
through two window steps whose ``DynamoDBStore``\\ s share one table (two processes), and
faults only a table has: a commit whose roll-forward is refused (the log stays pending),
a commit whose answer is lost (applied, but the batch fails and is delivered again), and a
process restarted cold (its cache gone: it reads the partition with pending logs laid
over). The records as first applied, in commit order, through the one-pass reference,
give exactly the results emitted and the late records.

Faults are client wrappers: every call they do not refuse goes to the real client, a
refused one raises as botocore would. Interleavings run the other process's batch inside
this one's commit call, before the real call, in one thread: no sleeps."""

from __future__ import annotations

import uuid
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from botocore.exceptions import ClientError, ReadTimeoutError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.lineage import StaticLineage
from processors.window import Window
from processors.window_store import DynamoDBStore, WindowStateError
from stream.records import Record
from tests.processors.test_window import AGGREGATE, _reference
from tests.processors.test_window_lanes import SHARD, _apply, _lanes_scenario

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.integration


def _is_commit(request: dict[str, Any]) -> bool:
    return request["Key"]["window"]["S"] == "#shard" and "ADD #p" in request.get(
        "UpdateExpression", ""
    )


class Process:
    """One process's client: runs ``before`` (other attempts) just before its next commit;
    ``refuse_roll`` refuses roll-forward ``PutItem``\\ s (not a log part's) for one batch;
    ``lose_answer`` sends the next commit and then raises a timeout (applied, unanswered)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.before: list[Callable[[], None]] = []
        self.refuse_roll = False
        self.lose_answer = False
        self.applied_unanswered = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def update_item(self, **request: Any) -> Any:
        if _is_commit(request):
            while self.before:
                self.before.pop(0)()
            if self.lose_answer:
                self.lose_answer = False
                self._client.update_item(**request)
                self.applied_unanswered = True
                raise ReadTimeoutError(endpoint_url="injected")
        return self._client.update_item(**request)

    def put_item(self, **request: Any) -> Any:
        if self.refuse_roll and not request["Item"]["window"]["S"].startswith("#log#"):
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "injected"}},
                              "PutItem")  # fmt: skip
        return self._client.put_item(**request)


@settings(
    deadline=None,
    max_examples=30,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(_lanes_scenario(), st.lists(st.integers(0, 4), min_size=60, max_size=60))
def test_lanes_on_dynamodb_yield_what_one_pass_over_the_commits_does(
    aws: Callable[[str], Any], window_table: str, scenario: dict[str, Any], faults: list[int]
) -> None:
    """The memory store's lanes property, on two DynamoDB stores sharing a table, with
    per-step table faults (``faults``: 0 the batch's roll-forward refused, 1 its commit's
    answer lost, 2 its process restarted cold first, else none)."""
    docs, lanes = scenario["docs"], scenario["lanes"]
    prefix = uuid.uuid4().hex
    real = aws("dynamodb")
    clients = [Process(real), Process(real)]

    def make(process: int) -> Window:
        store = DynamoDBStore(window_table, prefix, scenario["lateness"], scenario["size"],
                              client=clients[process], high_water=True)  # fmt: skip
        return Window(key="user", size_s=scenario["size"], slide_s=scenario["slide"],
                      field="ts", allowed_lateness_s=scenario["lateness"], aggregate=AGGREGATE,
                      function="fn", late="late", store=store, lineage=StaticLineage())  # fmt: skip

    steps = [make(0), make(1)]
    of_lane = [[i for i, d in enumerate(docs) if scenario["lane_of"][d["user"]] == lane]
               for lane in range(lanes)]  # fmt: skip
    cursors = [0] * lanes
    first: list[int] = []
    placed: set[int] = set()
    verdicts: dict[int, set[bool]] = {}
    emitted: dict[str, dict[str, Any]] = {}

    def run(process: int, chosen: list[int]) -> bool:
        batch = [Record(orjson.dumps(docs[i]), docs[i]["user"], str(1000 + i),
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
    expected, late = _reference({SHARD: witness}, scenario["size"], scenario["slide"],
                                scenario["lateness"], "fn")  # fmt: skip
    assert emitted == expected
    assert {i for i, v in verdicts.items() if True in v} == {first[p] for _, p in late}
