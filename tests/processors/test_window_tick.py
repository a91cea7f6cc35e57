"""A scheduled flush's tick with ``state: memory`` (issue 16): no table to keep a pending
emission in, so a tick finds no shard and emits nothing (``validate`` refuses ``flush_s``
with it); the windows wait for the shard's next record, as before."""

from __future__ import annotations

import orjson
import pytest

from processors.chain import Chain, Step
from processors.session import SessionWindow
from processors.window import Window
from processors.window_tick import TICK_SUB_BASE, Emission
from stream.records import Record


@pytest.mark.parametrize("kind", ["window", "session"])
def test_a_tick_on_the_memory_store_emits_nothing(kind: str) -> None:
    clock = [10_000.0]
    options = {"key": "user", "field": "ts", "aggregate": {"n": "count"}, "state": "memory",
               "quiet_s": 300, "now": lambda: clock[0]}  # fmt: skip
    step = (SessionWindow(gap_s=30, **options) if kind == "session"
            else Window(size_s=60, **options))  # fmt: skip
    batch = [Record(orjson.dumps({"user": "a", "ts": 5}), "a", "1", shard_id="s0", index=0)]
    assert Chain([Step.of("w", step)]).run(batch).records == []
    clock[0] += 10_000
    assert step.tick() == []
    step.ack(Emission("s0", 1, "1", TICK_SUB_BASE + 1, ()))  # nothing to drop: fine
    later = [Record(orjson.dumps({"user": "a", "ts": 500}), "a", "2", shard_id="s0", index=0)]
    assert [r.get("n") for r in Chain([Step.of("w", step)]).run(later).records] == [1]
