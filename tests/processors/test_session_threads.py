"""A local run (``shardline run --in-process``) calls one runner, and so one window step,
from a thread per shard (``stream/esm/invoke.py``): each thread's batch must get its own
results, for session windows as for tumbling ones (found in review: a session step kept
them on the instance, and a second shard's ``prepare`` dropped the first one's result)."""

from __future__ import annotations

import threading

import orjson
import pytest

from processors.session import SessionWindow
from processors.window import Window
from processors.window_store import MemoryStore
from stream.records import Record


def _rec(doc: dict[str, object], seq: int, shard: str) -> Record:
    return Record(orjson.dumps(doc), str(doc["user"]), str(seq), shard_id=shard, index=seq - 1)


@pytest.mark.parametrize("kind", ["session", "tumbling"])
def test_two_shards_prepared_in_two_threads_each_get_their_own_results(kind: str) -> None:
    cls, size = (SessionWindow, {"gap_s": 10}) if kind == "session" else (Window, {"size_s": 100})
    window = cls(key="user", **size, field="ts", function="f",  # type: ignore[arg-type]
                 aggregate={"n": "count"}, state="memory", store=MemoryStore())  # fmt: skip
    a = [_rec({"user": "a", "ts": 100}, 1, "s0"), _rec({"user": "a", "ts": 200}, 2, "s0")]
    b = [_rec({"user": "b", "ts": 100}, 1, "s1")]
    prepared_a, prepared_b = threading.Event(), threading.Event()
    out: list[object] = []

    def shard_a() -> None:
        window.prepare(a)
        prepared_a.set()
        prepared_b.wait(10)
        out.extend(window(r) for r in a)  # the chain's per-record call, after prepare

    def shard_b() -> None:
        prepared_a.wait(10)
        window.prepare(b)
        prepared_b.set()

    threads = [threading.Thread(target=shard_a), threading.Thread(target=shard_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(out) == 2
    assert out[0] is None
    assert out[1] is not None, "shard s0's closed window was lost to another thread's prepare"
