"""Redeliveries decided by the windows' high-water in DynamoDB (issue 16, slice S3), against
the session's moto server: a record is applied already if a window of it says so for its
partition key (open windows in the state; closed ones in their items), its outcome comes
from the shard item's outbox or its own outbox entry item (``~o#POS``), and a lagging
lane's record before the shard's greatest applied position is applied, not skipped.

Each "restart" is a new window step on the same table (a cold start), handed records
from before the shard's last commit, as Lambda does after a restart with
``parallelization`` > 1 (every lane resumes from the shard's checkpoint)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from processors.chain import Chain, Step
from processors.window_store import CLOSED_TTL_S, OUTBOX_MARGIN_S, DynamoDBStore, outbox_sk
from stream.records import Record
from tests.integration.test_window_state import items, window
from tests.integration.test_window_state import table as table  # noqa: PLC0414  # the fixture

if TYPE_CHECKING:
    from collections.abc import Callable

    from processors.window import Window

pytestmark = pytest.mark.integration


def batch(step: Window, records: list[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Run ``(sequence number, document)`` records of shard s0 (partition key: the user)
    through the step; the results as (window_id, key, n), sorted."""
    recs = [
        Record(orjson.dumps(doc), doc["user"], str(seq), shard_id="s0", index=i)
        for i, (seq, doc) in enumerate(records)
    ]
    out = Chain([Step.of("processors[0].window", step)]).run(recs)
    assert not out.failures
    return sorted(
        ({"id": r.get("window_id"), "key": r.get("key"), "n": r.get("n")} for r in out.records),
        key=lambda r: r["id"],
    )


def doc(user: str, ts: int, amount: int = 1) -> dict[str, Any]:
    return {"user": user, "ts": ts, "amount": amount, "product": "p", "page": "/"}


A1, B2, A3 = (1, doc("a", 5)), (2, doc("b", 6)), (3, doc("a", 30))
CLOSER = (10, doc("c", 61))  # closes the windows at 0 of a and b
RESULTS = [
    {"id": "f/a/1970-01-01T00:00:00Z", "key": "a", "n": 2},
    {"id": "f/b/1970-01-01T00:00:00Z", "key": "b", "n": 1},
]


def test_a_closer_redelivered_after_a_restart_yields_the_same_results_from_its_outbox_entry(
    aws: Callable[[str], Any], table: str
) -> None:
    prefix, client = uuid.uuid4().hex, aws("dynamodb")
    step = window(table, prefix, client)
    assert batch(step, [A1, B2, A3]) == []
    assert batch(step, [CLOSER]) == RESULTS
    # a later batch commits: the shard item's outbox now starts at its first record
    assert batch(step, [(11, doc("c", 62))]) == []
    shard = next(i for i in items(aws, table, prefix) if i["window"]["S"] == "#shard")
    assert '"10"' not in shard["outbox"]["S"]
    # a restart: the lanes resume from the checkpoint, before the closer
    again = window(table, prefix, client)
    assert batch(again, [CLOSER, (11, doc("c", 62)), (12, doc("c", 63))]) == RESULTS
    assert again.late == 0
    # the closer's entry is an item of its own, kept for the age bound plus an hour
    entry = next(i for i in items(aws, table, prefix) if i["window"]["S"] == outbox_sk((10, 0, ())))
    left = int(entry["expires"]["N"]) - int(again._now())
    assert 86_400 + OUTBOX_MARGIN_S - 60 <= left <= 86_400 + OUTBOX_MARGIN_S


def test_a_late_record_redelivered_is_late_again(aws: Callable[[str], Any], table: str) -> None:
    prefix, client = uuid.uuid4().hex, aws("dynamodb")
    step = window(table, prefix, client)
    assert batch(step, [A1, B2, A3]) == []
    assert batch(step, [CLOSER]) == RESULTS
    late = (11, doc("a", 7))  # its window closed: late (no lateness allowed)
    assert batch(step, [late]) == []
    assert step.late == 1
    assert batch(step, [(12, doc("c", 64))]) == []
    again = window(table, prefix, client)
    assert batch(again, [late, (12, doc("c", 64))]) == []
    assert again.late == 1  # late again, and not added to the closed window


def test_an_applied_record_whose_window_closed_since_is_not_late(
    aws: Callable[[str], Any], table: str
) -> None:
    """Record 1 went into window (a, 0); the closer shut it. Redelivered from the
    checkpoint after a restart, record 1 has no open window: its closed window's item
    says it was applied (``hw``), so it is not sent to the late sink (without that
    lookup it was)."""
    prefix, client = uuid.uuid4().hex, aws("dynamodb")
    step = window(table, prefix, client)
    assert batch(step, [A1, B2, A3]) == []
    assert batch(step, [CLOSER]) == RESULTS
    closed = next(i for i in items(aws, table, prefix) if i["window"]["S"] == 'w#0#"a"')
    assert "closed" in closed
    assert int(closed["expires"]["N"]) - int(step._now()) >= 86_400 + OUTBOX_MARGIN_S - 60
    again = window(table, prefix, client)
    assert batch(again, [A1, B2, A3, CLOSER]) == RESULTS
    assert again.late == 0


def test_a_lagging_lane_s_record_before_the_applied_position_is_applied(
    aws: Callable[[str], Any], table: str
) -> None:
    """Two lanes of one shard (two processes): lane A commits a's records 1 and 3; lane
    B's batch then brings b's record 2, before the shard's applied position 3. It is new
    (no window says b's 2 was decided) and is applied: the closer counts it. Deciding by
    the applied position alone skipped it (main before slice S3)."""
    prefix, client = uuid.uuid4().hex, aws("dynamodb")
    lane_a, lane_b = window(table, prefix, client), window(table, prefix, client)
    assert batch(lane_a, [A1, A3]) == []
    assert batch(lane_b, [B2]) == []
    assert batch(lane_a, [CLOSER]) == RESULTS
    assert lane_a.late == lane_b.late == 0


def test_an_open_window_of_an_earlier_version_falls_back_to_the_applied_position(
    aws: Callable[[str], Any], table: str
) -> None:
    """A window item with no ``hw`` (written by the version before: its high-water is
    unknown) decides as that version did: a record at or before the shard's applied
    position was applied already; the rest of the table goes on."""
    prefix, client = uuid.uuid4().hex, aws("dynamodb")
    assert batch(window(table, prefix, client), [A1, B2, A3]) == []
    for sort_key in ('w#0#"a"', 'w#0#"b"'):  # as the version before this one wrote them
        client.update_item(TableName=table, Key={"shard": {"S": prefix + "s0"},
                           "window": {"S": sort_key}}, UpdateExpression="REMOVE hw")  # fmt: skip
    again = window(table, prefix, client)
    assert batch(again, [A1, B2, A3, CLOSER]) == RESULTS  # 1-3 not counted twice


def test_a_closed_item_keeps_a_day_when_the_age_bound_is_shorter(
    aws: Callable[[str], Any], table: str
) -> None:
    prefix, client = uuid.uuid4().hex, aws("dynamodb")
    step = window(table, prefix, client)
    step.store = DynamoDBStore(table, prefix, 0, 60, client=client, max_record_age_s=60)
    step.store.bind(step._merge)
    assert batch(step, [A1, B2, A3]) == []
    assert batch(step, [CLOSER]) == RESULTS
    closed = next(i for i in items(aws, table, prefix) if i["window"]["S"] == 'w#0#"a"')
    assert int(closed["expires"]["N"]) - int(step._now()) >= CLOSED_TTL_S - 60
    entry = next(i for i in items(aws, table, prefix) if i["window"]["S"] == outbox_sk((10, 0, ())))
    assert int(entry["expires"]["N"]) - int(step._now()) <= 60 + OUTBOX_MARGIN_S
