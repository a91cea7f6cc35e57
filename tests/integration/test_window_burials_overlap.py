"""The burials (tombstones) of the windows a batch closed run beside its sinks (issue 17), and the
invocation ends only once they have: :func:`stream.overlap.behind` in a
:func:`stream.overlap.deferring` block (:meth:`stream.batch.BatchRunner.run`). Against the
session moto server; the order of events is forced with events between threads, never
timed."""

from __future__ import annotations

import threading
import uuid
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from processors.chain import Chain, Step
from processors.window_starts import start_prefix
from sinks.memory import MemorySink
from stream.batch import BatchRunner
from stream.overlap import overlapping
from stream.records import Record
from tests.integration.test_window_close_burials import Recorded
from tests.integration.test_window_starts import minute, step
from tests.integration.test_window_state import items

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from sinks.base import Outcome

pytestmark = pytest.mark.integration

DEADLINE_S = 60.0


class Gated(Recorded):
    """The real client; each ``BatchWriteItem`` (the deletes) first waits until the sink has
    written (``sunk``), or the deadline: a delete on the path before the sinks never sees
    it set and goes on after the deadline, ``waited_out``."""

    def __init__(self, client: Any, sunk: threading.Event) -> None:
        super().__init__(client)
        self.sunk = sunk
        self.waited_out = False
        self.gate = False

    def batch_write_item(self, **request: Any) -> Any:
        if self.gate and not self.sunk.wait(DEADLINE_S):
            self.waited_out = True
        return super().batch_write_item(**request)


class Rows(MemorySink):
    """A memory sink that says when it has written a batch's results."""

    def __init__(self, sunk: threading.Event) -> None:
        super().__init__("rows")
        self.sunk = sunk

    def _write(self, items: Sequence[Record]) -> list[Outcome]:
        outcomes = super()._write(items)
        self.sunk.set()
        return outcomes


def batch(docs: list[dict[str, Any]], first_seq: int) -> list[Record]:
    return [Record(orjson.dumps(d), d["user"], str(first_seq + i), shard_id="s0", index=i)
            for i, d in enumerate(docs)]  # fmt: skip


def runner_for(aws: Callable[[str], Any], table: str, client: Any, sunk: threading.Event) -> Any:
    window = step(table, uuid.uuid4().hex, client)
    chain = Chain([Step.of("processors[0].window", window)])
    return BatchRunner(chain, {"rows": Rows(sunk)}, default_route=["rows"], function="f"), window


def test_a_batch_s_burials_run_beside_its_sinks_and_end_before_it_returns(aws, window_table):
    sunk = threading.Event()
    client = Gated(aws("dynamodb"), sunk)
    runner, window = runner_for(aws, window_table, client, sunk)
    runner.run(batch(minute(0, 30), 100))  # opens minute 0's 30 windows
    client.gate = True
    sunk.clear()
    result = runner.run(batch(minute(1, 30), 200))  # closes them: 30 results, 2 deletes
    assert result.written == {"rows": 30}
    assert len(client.deletes) == 2  # 25 + 5 keys
    assert not client.waited_out  # each delete waited for the sink: it ran beside it
    # and the invocation ended after them: minute 0's items are tombstones when run returned
    prefix = window.store.prefix
    left = [i for i in items(aws, window_table, prefix) if i["window"]["S"].startswith("w#")]
    live = [i for i in left if "tombstone" not in i]
    assert len(live) == 30
    assert all(i["window"]["S"].startswith(start_prefix(60)) for i in live)  # minute 1's
    buried = [i for i in left if "tombstone" in i]
    assert len(buried) == 30
    assert all(i["window"]["S"].startswith(start_prefix(0)) for i in buried)  # minute 0's


def test_with_overlap_off_the_burials_go_before_the_sinks_as_before(aws, window_table):
    sunk = threading.Event()
    client = Recorded(aws("dynamodb"))
    order: list[str] = []
    deletes = client.batch_write_item

    def delete(**request: Any) -> Any:
        order.append("delete" if not sunk.is_set() else "delete after the sink")
        return deletes(**request)

    client.batch_write_item = delete  # type: ignore[method-assign]
    runner, _ = runner_for(aws, window_table, client, sunk)
    with overlapping(False):
        runner.run(batch(minute(0, 5), 100))
        sunk.clear()
        runner.run(batch(minute(1, 5), 200))
    assert order == ["delete"]


def test_a_burial_still_running_is_settled_by_the_shard_s_next_commit(aws, window_table):
    # a step's store used outside an invocation's block after one: the next commit takes
    # what the last one's deletes did (the keys leave the list the shard item carries)
    sunk = threading.Event()
    client = Gated(aws("dynamodb"), sunk)
    runner, window = runner_for(aws, window_table, client, sunk)
    runner.run(batch(minute(0, 5), 100))
    runner.run(batch(minute(1, 5), 200))  # deletes minute 0's five
    runner.run(batch(minute(2, 5), 300))  # deletes minute 1's five, settles minute 0's
    assert window.store.buried == 5  # minute 0's, settled; minute 1's at the next commit
    runner.run(batch(minute(3, 5), 400))
    assert window.store.buried == 10
    assert sorted(len(d) for d in client.deletes) == [5, 5, 5]
