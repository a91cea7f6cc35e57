"""A claim lost to a sibling with ``state: memory``: the invocation applies the batch again
from the committed state (README, "Reshards"). Found in review: the memory store handed back
the state the failed attempt had already moved on, so the second attempt took the batch for
a redelivery and the record was neither in a result, nor late."""

from __future__ import annotations

import threading

import orjson

from processors.lineage import StaticLineage
from processors.window import Window
from processors.window_store import MemoryStore
from stream.records import Record


def _rec(doc: dict[str, object], seq: int, shard: str) -> Record:
    return Record(orjson.dumps(doc), str(doc["user"]), str(seq), shard_id=shard, index=0)


class SiblingFirst(MemoryStore):
    """c2's batch runs (in its own thread, as a local run would) just before c1 commits."""

    def __init__(self) -> None:
        super().__init__()
        self.before_c1: object = None

    def commit(self, shard_id, state, changed, quiet=None):  # type: ignore[no-untyped-def]
        hook, self.before_c1 = (self.before_c1, None) if shard_id == "c1" else (None, None)
        if hook is not None:
            t = threading.Thread(target=hook)
            t.start()
            t.join(10)
        return super().commit(shard_id, state, changed, quiet)


def test_a_record_for_a_window_a_sibling_claimed_first_is_late_not_lost() -> None:
    store = SiblingFirst()
    window = Window(key="user", size_s=100, field="ts", function="f", aggregate={"n": "count"},
                    state="memory", store=store,
                    lineage=StaticLineage({"c1": ("p",), "c2": ("p",)}))
    window.prepare([_rec({"user": "a", "ts": 10}, 1, "p")])  # p: window [0, 100) opens
    c2 = [_rec({"user": "a", "ts": 30}, 1, "c2")]
    store.before_c1 = lambda: window.prepare(c2)  # c2 adds to it and claims it first
    c1 = [_rec({"user": "a", "ts": 20}, 1, "c1")]
    window.prepare(c1)  # c1 adds to it too: its claim is lost, the batch applied again
    assert window(c1[0]) is not None or window.late == 1, (
        "c1's record is neither in a result, nor routed late, nor counted late: "
        f"late={window.late}, c1 state windows={store.shards['c1'].windows}"
    )
