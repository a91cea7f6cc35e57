"""Window state that the review found could stall or grow (review2): a key too long for a
DynamoDB sort key, an unhashable key next to a refused session, and an outbox behind a
filter. Each test failed before its fix."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from processors.chain import Chain, Step
from processors.window import Window
from processors.window_store import DynamoDBStore, MemoryStore
from stream.records import Record
from tests.integration.test_window_limits import (  # noqa: F401  # fixtures
    collect_plugin,
    committed,
    run,
    session,
    window,
)

pytestmark = pytest.mark.integration


def test_a_long_key_is_dead_lettered_not_retried_for_ever(aws, window_table):  # type: ignore[no-untyped-def]
    """README: "A state that would still not fit is never retried". A key whose JSON is
    over ~1 KB makes the window item's sort key (w#START#KEY) over DynamoDB's 1024-byte
    limit: every commit fails with a ValidationException, retried for ever (stuck shard)."""
    prefix = uuid.uuid4().hex
    step = window(window_table, prefix, aws("dynamodb"), {"n": "count"})
    docs = [{"user": "k" * 1100, "ts": 5}, {"user": "b", "ts": 6}]
    result = run(step, docs, 1)
    retried = [str(f.error)[:160] for f in result.failures if f.retryable]
    assert retried == []
    (failure,) = result.failures
    assert failure.record.sequence_number == "1"
    assert "too long for a window" in str(failure.error)
    assert [r.as_dict()["key"] for r in result.records] == []  # b's window still open


@pytest.mark.usefixtures("collect_plugin")
def test_a_session_refusal_does_not_fail_the_batch_for_an_unhashable_key(aws, window_table):
    """A batch with a session too large (its key refused) and a record whose key is a list:
    only that record should be dead-lettered (WindowRecordError); `key in refused` raises
    TypeError out of prepare instead and every record of the batch fails."""
    prefix = uuid.uuid4().hex
    client = aws("dynamodb")
    aggregate = {"n": "count", "all": {"collect": "blob"}}
    docs = [{"user": "a", "ts": 5 + i, "blob": "x" * 100_000} for i in range(5)]
    docs.append({"user": ["x"], "ts": 7, "blob": "u"})
    docs.append({"user": "b", "ts": 8, "blob": "u"})
    result = run(session(window_table, prefix, client, aggregate), docs, 1)
    kinds = sorted(type(f.error).__name__ for f in result.failures)
    assert kinds == ["ValueTooLarge"] * 5 + ["WindowRecordError"]


class _Measuring:
    """A DynamoDB client that records the bytes of each TransactWriteItems (names and
    values, as DynamoDB counts them) and passes every call to moto, which does not enforce
    DynamoDB's 4 MB limit on a transaction."""

    def __init__(self, client: Any, sizes: list[int]) -> None:
        self._client, self._sizes = client, sizes

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def transact_write_items(self, **request: Any) -> Any:
        self._sizes.append(sum(
            len(k) + len(str(next(iter(v.values()))))
            for op in request["TransactItems"] for k, v in op["Put"]["Item"].items()
        ))  # fmt: skip
        return self._client.transact_write_items(**request)


def test_a_quiet_close_transaction_stays_under_dynamodb_s_4_mb(aws, window_table):
    """16 quiet shards whose last batch left a ~280 KB outbox (inline: under 300 KB). Found
    in review: the next batch of another shard rewrote all 16 shard items in one
    TransactWriteItems, about 4.3 MB; DynamoDB refuses that (moto does not), the batch is
    retried and picks the same quiet shards: every active shard stuck. Now a batch closes
    what fits and the next one the rest."""
    prefix, client, clock, sizes = uuid.uuid4().hex, aws("dynamodb"), [10_000.0], []
    aggregate = {"n": "count", "page": {"last": "page"}}

    def step(c):
        store = DynamoDBStore(window_table, prefix, 0, 60, client=c, now=lambda: clock[0])
        return Window(key="user", size_s=60, field="ts", aggregate=aggregate, function="f",
                      store=store, quiet_s=300, now=lambda: clock[0])  # fmt: skip

    for s in range(1, 17):
        docs = [{"user": f"u{s}-{i}", "ts": 5, "page": f"{i}" * 30_000} for i in range(9)]
        docs.append({"user": f"y{s}", "ts": 61, "page": "/"})
        batch = [Record(orjson.dumps(d), d["user"], str(1 + i), shard_id=f"s{s}", index=i)
                 for i, d in enumerate(docs)]  # fmt: skip
        assert len(committed(Chain([Step.of("w", step(client))]).run(batch))) == 9
    clock[0] += 301
    batch = [Record(orjson.dumps({"user": "z", "ts": 9_990, "page": "/"}), "z", "1",
                    shard_id="s0", index=0)]  # fmt: skip
    out = committed(Chain([Step.of("w", step(_Measuring(client, sizes)))]).run(batch))
    assert 0 < len(out) < 16
    batch = [Record(orjson.dumps({"user": "z", "ts": 9_991, "page": "/"}), "z", "2",
                    shard_id="s0", index=0)]  # fmt: skip
    out += committed(Chain([Step.of("w", step(_Measuring(client, sizes)))]).run(batch))
    assert len(out) == 16  # every quiet shard's window, once
    assert len({r["window_id"] for r in out}) == 16
    assert max(sizes) <= 4 * 1024 * 1024, sizes


def test_the_outbox_forgets_earlier_batches_when_the_first_record_is_filtered():
    """The outbox keeps what the last batch's records yielded; it is pruned only when the
    first record that reaches the step has index 0. Behind a filter that drops a batch's
    first record, it is never pruned: it grows with every batch (DynamoDB: the shard item's
    outbox, rewritten whole, in parts, at every batch)."""
    from processors.filter import Filter  # noqa: PLC0415

    store = MemoryStore()
    step = Window(key="user", size_s=60, field="ts", aggregate={"n": "count"}, function="f",
                  state="memory", store=store)  # fmt: skip
    chain = Chain([Step.of("processors[0].filter", Filter(match={"event_type": ["purchase"]})),
                   Step.of("processors[1].window", step)])  # fmt: skip
    seq = 1
    for b in range(50):
        docs = [{"event_type": "click", "user": "x", "ts": b * 60}]  # index 0: filtered
        docs += [{"event_type": "purchase", "user": f"u{i}", "ts": b * 60 + i} for i in range(20)]
        batch = []
        for i, d in enumerate(docs):
            batch.append(Record(orjson.dumps(d), d["user"], str(seq), shard_id="s0", index=i))
            seq += 1
        chain.run(batch)
    assert len(store.shards["s0"].outbox) <= 1
