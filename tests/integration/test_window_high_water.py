"""The windows' high-water in DynamoDB (issue 16, slice S1): each window item carries
``hw`` (partition key -> the position of the last record of that key decided on it), also
once closed; a cold start reads it back for the open windows; a batch that never
committed leaves it read as before (``hw_prev``); an item written before it existed reads
as unknown (``HW_UNBOUNDED``). The window step's DynamoDB store decides redeliveries by it
in lanes mode (``parallelization`` above 1, slice S3: ``high_water``), where these tests
build it; a store that does not (one lane, as main; session windows, until slice S6)
writes none. Against the session's moto server."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from processors.chain import Chain, Step
from processors.window import TooManyPartitionKeys, Window
from processors.window_store import HW_MAX_PKS, DynamoDBStore
from stream.records import Record
from tests.integration.test_window_redelivery import window
from tests.integration.test_window_state import (
    AGGREGATE,
    CLOSER,
    DOCS,
    ShardItemFails,
    items,
    run,
)
from tests.integration.test_window_state import window as one_lane

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.integration


def test_with_one_lane_window_items_carry_no_high_water(
    aws: Callable[[str], Any], window_table: str
) -> None:
    # (and session windows' store): with one lane nothing reads it back: stored, it would
    # cost write units for nothing
    prefix = uuid.uuid4().hex
    client = aws("dynamodb")
    step = one_lane(window_table, prefix, client)
    run(step, DOCS, 1)  # a@1, b@2, a@3
    assert _hw_of(aws, window_table, prefix) == {'w#0#"a"': None, 'w#0#"b"': None}
    assert all("hw_prev" not in i for i in items(aws, window_table, prefix))
    assert (
        DynamoDBStore(window_table, prefix, 0, 60, client=client, high_water=False).shard("s0").hw
        == {}
    )


def _hw_of(aws: Callable[[str], Any], table: str, prefix: str) -> dict[str, str | None]:
    """Each window item's ``hw`` attribute (``None``: none), by sort key."""
    return {i["window"]["S"]: i.get("hw", {}).get("S") for i in items(aws, table, prefix)
            if i["window"]["S"].startswith("w#")}  # fmt: skip


def _read_back(table: str, prefix: str, client: Any) -> dict[Any, Any]:
    """The open windows' high-water as a cold start reads it."""
    return DynamoDBStore(table, prefix, 0, 60, client=client, high_water=True).shard("s0").hw


def test_each_window_item_holds_its_high_water_also_closed_and_a_cold_start_reads_it(
    aws: Callable[[str], Any], window_table: str
) -> None:
    prefix = uuid.uuid4().hex
    client = aws("dynamodb")
    run(window(window_table, prefix, client), DOCS, 1)  # a@1, b@2, a@3
    assert _hw_of(aws, window_table, prefix) == {
        'w#0#"a"': '{"a":["3",0,[]]}',
        'w#0#"b"': '{"b":["2",0,[]]}',
    }
    assert _read_back(window_table, prefix, client) == {
        ("a", 0): {"a": (1, "3", 0, ())},
        ("b", 0): {"b": (1, "2", 0, ())},
    }
    out = run(window(window_table, prefix, client), CLOSER, 10)  # closes both
    assert len(out) == 2
    assert _hw_of(aws, window_table, prefix) == {
        'w#0#"a"': '{"a":["3",0,[]]}',  # closed items keep it
        'w#0#"b"': '{"b":["2",0,[]]}',
        'w#60#"c"': '{"c":["10",0,[]]}',
    }
    assert _read_back(window_table, prefix, client) == {("c", 60): {"c": (2, "10", 0, ())}}


class CommitFails(ShardItemFails):
    """The real client, except that the shard item's commit (lanes mode: an
    ``UpdateItem``) times out once."""

    def update_item(self, **request: Any) -> Any:
        if request["Key"]["window"]["S"] == "#shard" and not self.failed:
            self.failed = True
            from botocore.exceptions import ReadTimeoutError  # noqa: PLC0415

            raise ReadTimeoutError(endpoint_url="injected")
        return self.client.update_item(**request)


def test_a_batch_that_never_committed_leaves_the_high_water_read_as_before(
    aws: Callable[[str], Any], window_table: str
) -> None:
    prefix = uuid.uuid4().hex
    client = aws("dynamodb")
    run(window(window_table, prefix, client), DOCS[:1], 1)  # a@1
    torn = window(window_table, prefix, CommitFails(client))
    doc = DOCS[2]  # a@30: its log is written, its commit is not (lanes mode: slice S4a)
    failed = Chain([Step.of("w", torn)]).run([Record(orjson.dumps(doc), "a", "2", shard_id="s0")])
    assert [f.retryable for f in failed.failures] == [True]
    assert _hw_of(aws, window_table, prefix) == {'w#0#"a"': '{"a":["1",0,[]]}'}  # no item written
    assert _read_back(window_table, prefix, client) == {("a", 0): {"a": (1, "1", 0, ())}}


def test_an_item_written_before_the_high_water_existed_reads_as_unknown(
    aws: Callable[[str], Any], window_table: str
) -> None:
    prefix = uuid.uuid4().hex
    client = aws("dynamodb")
    run(window(window_table, prefix, client), DOCS, 1)
    for sort_key in ('w#0#"a"', 'w#0#"b"'):  # as the version before this one wrote them
        client.update_item(TableName=window_table, Key={"shard": {"S": prefix + "s0"},
                           "window": {"S": sort_key}}, UpdateExpression="REMOVE hw")  # fmt: skip
    unknown = {"": (0, "", 0, ())}  # HW_UNBOUNDED: redeliveries decided as with one lane
    assert _read_back(window_table, prefix, client) == {("a", 0): unknown, ("b", 0): unknown}
    out = run(window(window_table, prefix, client), CLOSER, 10)
    assert [(r.get("key"), r.get("n")) for r in out] == [("a", 2), ("b", 1)]


def test_a_window_fed_by_thousands_of_partition_keys_still_commits_and_stays_small(
    aws: Callable[[str], Any], window_table: str
) -> None:
    """A window key that is not the partition key (one site, a partition key per user: the
    README advises against it, ``validate`` allows it) gathers every user's partition key.
    Before the high-water existed this window's item was a few hundred bytes and a batch
    of 4,000 users committed; a high-water of every user made the item pass DynamoDB's
    400 KB (the batch failed at each retry). Past ``HW_MAX_PKS`` partition keys the item,
    and the process, keep one entry instead; a window of at most that many keeps them all.
    Redelivered, the batch is not counted twice. In lanes mode the step's guard keeps the
    bound, with one lane too (review 11: a window past it at one lane lost a lagging lane's
    record once ``parallelization`` was raised again): the 17th partition key's record and
    every later new one is dead-lettered (``TooManyPartitionKeys``), on redelivery too."""
    prefix = uuid.uuid4().hex
    client = aws("dynamodb")
    store = DynamoDBStore(window_table, prefix, 0, 60, client=client, high_water=True)
    step = Window(key="site", size_s=60, field="ts", aggregate=AGGREGATE, function="f",
                  store=store)  # fmt: skip
    seq = 49590338271490256608559692538361571095921575989136588898  # Kinesis' 56 digits
    users = [str(uuid.UUID(int=i)) for i in range(4000 + HW_MAX_PKS)]
    sites = ["many"] * 4000 + ["few"] * HW_MAX_PKS
    docs = [orjson.dumps({"site": site, "ts": 5, "amount": 1}) for site in sites]
    batch = [
        Record(doc, user, str(seq + i), shard_id="s0", index=i)
        for i, (doc, user) in enumerate(zip(docs, users, strict=True))
    ]
    result = Chain([Step.of("processors[0].window", step)]).run(batch)
    refused = {int(f.record.sequence_number) - seq for f in result.failures
               if isinstance(f.error, TooManyPartitionKeys)}  # fmt: skip
    assert (len(result.failures), refused) == (4000 - HW_MAX_PKS, set(range(HW_MAX_PKS, 4000)))
    stored = _hw_of(aws, window_table, prefix)
    assert len(orjson.loads(stored['w#0#"many"'])) == HW_MAX_PKS
    assert len(orjson.loads(stored['w#0#"few"'] or "{}")) == HW_MAX_PKS
    assert len(step.store.shard("s0").hw[("many", 0)]) == HW_MAX_PKS
    closer = Record(orjson.dumps({"site": "z", "ts": 65, "amount": 1}), "z",
                    str(seq + len(batch)), shard_id="s0", index=len(batch))  # fmt: skip
    again = Chain([Step.of("processors[0].window", step)]).run([*batch, closer])  # redelivered
    assert len(again.failures) == 4000 - HW_MAX_PKS
    assert sorted((r.get("key"), r.get("n")) for r in again.records) == [
        ("few", HW_MAX_PKS),
        ("many", HW_MAX_PKS),
    ]
