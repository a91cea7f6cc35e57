"""A record that fails retryably in a step before a window is delivered again, with every
record after it (Lambda retries from the earliest reported position). Found in review: the
window had already applied the records after it, so on redelivery the failed record was
behind the shard's applied position, taken for a redelivery, and never aggregated."""

from __future__ import annotations

import orjson
import pytest

from processors.chain import Chain, HeldBack, Step
from processors.session import SessionWindow
from processors.window import Window
from processors.window_store import MemoryStore
from stream.exceptions import RetryableError
from stream.records import Record


class _Throttled(RetryableError):
    pass


def _batch(first_seq: int, docs: list[dict[str, object]]) -> list[Record]:
    return [
        Record(orjson.dumps(d), str(d["user"]), str(first_seq + i), shard_id="s0", index=i)
        for i, d in enumerate(docs)
    ]


@pytest.mark.parametrize("kind", ["tumbling", "session"])
def test_a_record_failed_retryably_before_the_window_is_aggregated_when_delivered_again(
    kind: str,
) -> None:
    failing = {"1"}  # the first delivery's lookup is throttled on sequence 1

    def lookup(rec: Record) -> Record:
        if rec.sequence_number in failing:
            raise _Throttled("throttled")
        return rec

    cls, size = (Window, {"size_s": 100}) if kind == "tumbling" else (SessionWindow, {"gap_s": 100})
    window = cls(key="user", **size, field="ts", function="f",  # type: ignore[arg-type]
                 aggregate={"n": "count"}, state="memory", store=MemoryStore())  # fmt: skip
    chain = Chain([Step.of("processors[0]", lookup), Step.of("processors[1].window", window)])
    docs = [{"user": "a", "ts": 10}, {"user": "a", "ts": 20}, {"user": "a", "ts": 30}]
    first = chain.run(_batch(1, docs))
    assert [f.record.sequence_number for f in first.failures if f.retryable][:1] == ["1"]
    held = [f for f in first.failures if isinstance(f.error, HeldBack)]
    assert [f.record.sequence_number for f in held] == ["2", "3"]  # not applied ahead of 1
    failing.clear()
    # Lambda delivers again from the earliest reported record, with all after it
    reported = min(int(f.record.sequence_number) for f in first.failures if f.retryable)
    again = chain.run(_batch(reported, docs[reported - 1 :]))
    assert not again.failures
    closer = chain.run(_batch(4, [{"user": "a", "ts": 250}]))
    results = [r.as_dict() for r in (*first.records, *again.records, *closer.records)]
    start = "1970-01-01T00:00:00Z" if kind == "tumbling" else "1970-01-01T00:00:10Z"
    assert [(r["window_id"], r["n"]) for r in results] == [(f"f/a/{start}", 3)]
