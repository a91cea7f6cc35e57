"""Redeliveries decided by the windows' high-water in DynamoDB (issue 16, slice S3), in
lanes mode (``parallelization`` above 1: the step is built so directly, as ``validate``
refuses it until slice S7), against the session's moto server: a record is applied
already if a window of it says so for its partition key (open windows in the state;
closed ones in their items), its outcome comes from the shard item's outbox or its own
outbox entry item (``~o#POS``), and a lagging lane's record before the shard's greatest
applied position is applied, not skipped.

Each "restart" is a new window step on the same table (a cold start), handed records
from before the shard's last commit, as Lambda does after a restart with
``parallelization`` > 1 (every lane resumes from the shard's checkpoint).

With one lane the store keeps main's protocol (the last tests here): a record at or before
the shard's ``applied`` was applied already, whatever windows it falls in now."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from processors import window_starts
from processors.chain import Chain, Step
from processors.window_store import CLOSED_TTL_S, OUTBOX_MARGIN_S, DynamoDBStore, outbox_sk
from stream.records import Record
from tests.integration.test_window_state import items
from tests.integration.test_window_state import window as one_lane

if TYPE_CHECKING:
    from collections.abc import Callable

    from processors.window import Window

pytestmark = pytest.mark.integration


def window(table: str, prefix: str, client: Any, **options: Any) -> Window:
    """A new window step on the table in lanes mode (``parallelization`` 2), where its
    store decides redeliveries by the windows' high-water."""
    return one_lane(table, prefix, client, parallelization=2, **options)


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
    aws: Callable[[str], Any], window_table: str
) -> None:
    prefix, client = uuid.uuid4().hex, aws("dynamodb")
    step = window(window_table, prefix, client)
    assert batch(step, [A1, B2, A3]) == []
    assert batch(step, [CLOSER]) == RESULTS
    # a later batch commits; in lanes mode the shard item holds no outbox (slice S4a: the
    # outcomes are in the commit's log, then in entry items)
    assert batch(step, [(11, doc("c", 62))]) == []
    shard = next(i for i in items(aws, window_table, prefix) if i["window"]["S"] == "#shard")
    assert "outbox" not in shard
    # a restart: the lanes resume from the checkpoint, before the closer
    again = window(window_table, prefix, client)
    assert batch(again, [CLOSER, (11, doc("c", 62)), (12, doc("c", 63))]) == RESULTS
    assert again.late == 0
    # the closer's entry is an item of its own, kept for the age bound plus an hour
    entry = next(
        i for i in items(aws, window_table, prefix) if i["window"]["S"] == outbox_sk((10, 0, ()))
    )
    left = int(entry["expires"]["N"]) - int(again._now())
    assert 86_400 + OUTBOX_MARGIN_S - 60 <= left <= 86_400 + OUTBOX_MARGIN_S


def test_a_late_record_redelivered_is_late_again(
    aws: Callable[[str], Any], window_table: str
) -> None:
    prefix, client = uuid.uuid4().hex, aws("dynamodb")
    step = window(window_table, prefix, client)
    assert batch(step, [A1, B2, A3]) == []
    assert batch(step, [CLOSER]) == RESULTS
    late = (11, doc("a", 7))  # its window closed: late (no lateness allowed)
    assert batch(step, [late]) == []
    assert step.late == 1
    assert batch(step, [(12, doc("c", 64))]) == []
    again = window(window_table, prefix, client)
    assert batch(again, [late, (12, doc("c", 64))]) == []
    assert again.late == 1  # late again, and not added to the closed window


def test_an_applied_record_whose_window_closed_since_is_not_late(
    aws: Callable[[str], Any], window_table: str
) -> None:
    """Record 1 went into window (a, 0); the closer shut it. Redelivered from the
    checkpoint after a restart, record 1 has no open window: its closed window's item
    says it was applied (``hw``), so it is not sent to the late sink (without that
    lookup it was)."""
    prefix, client = uuid.uuid4().hex, aws("dynamodb")
    step = window(window_table, prefix, client)
    assert batch(step, [A1, B2, A3]) == []
    assert batch(step, [CLOSER]) == RESULTS
    closed = next(i for i in items(aws, window_table, prefix) if i["window"]["S"] == 'w#0#"a"')
    assert "closed" in closed
    assert int(closed["expires"]["N"]) - int(step._now()) >= 86_400 + OUTBOX_MARGIN_S - 60
    again = window(window_table, prefix, client)
    assert batch(again, [A1, B2, A3, CLOSER]) == RESULTS
    assert again.late == 0


def test_a_lagging_lane_s_record_before_the_applied_position_is_applied(
    aws: Callable[[str], Any], window_table: str
) -> None:
    """Two lanes of one shard (two processes): lane A commits a's records 1 and 3; lane
    B's batch then brings b's record 2, before the shard's applied position 3. It is new
    (no window says b's 2 was decided) and is applied: the closer counts it. Deciding by
    the applied position alone skipped it (main before slice S3)."""
    prefix, client = uuid.uuid4().hex, aws("dynamodb")
    lane_a, lane_b = window(window_table, prefix, client), window(window_table, prefix, client)
    assert batch(lane_a, [A1, A3]) == []
    assert batch(lane_b, [B2]) == []
    assert batch(lane_a, [CLOSER]) == RESULTS
    assert lane_a.late == lane_b.late == 0


def test_an_open_window_of_an_earlier_version_falls_back_to_the_applied_position(
    aws: Callable[[str], Any], window_table: str
) -> None:
    """A window item with no ``hw`` (written by the version before: its high-water is
    unknown) decides as that version did: a record at or before the shard's applied
    position was applied already; the rest of the table goes on."""
    prefix, client = uuid.uuid4().hex, aws("dynamodb")
    assert batch(window(window_table, prefix, client), [A1, B2, A3]) == []
    for sort_key in ('w#0#"a"', 'w#0#"b"'):  # as the version before this one wrote them
        client.update_item(TableName=window_table, Key={"shard": {"S": prefix + "s0"},
                           "window": {"S": sort_key}}, UpdateExpression="REMOVE hw")  # fmt: skip
    again = window(window_table, prefix, client)
    assert batch(again, [A1, B2, A3, CLOSER]) == RESULTS  # 1-3 not counted twice


def test_a_closed_item_keeps_a_day_when_the_age_bound_is_shorter(
    aws: Callable[[str], Any], window_table: str
) -> None:
    prefix, client = uuid.uuid4().hex, aws("dynamodb")
    step = window(window_table, prefix, client)
    step.store = DynamoDBStore(window_table, prefix, 0, 60, client=client, max_record_age_s=60,
                               high_water=True)  # fmt: skip
    step.store.bind(step._merge)
    assert batch(step, [A1, B2, A3]) == []
    assert batch(step, [CLOSER]) == RESULTS
    closed = next(i for i in items(aws, window_table, prefix) if i["window"]["S"] == 'w#0#"a"')
    assert int(closed["expires"]["N"]) - int(step._now()) >= CLOSED_TTL_S - 60
    entry = next(
        i for i in items(aws, window_table, prefix) if i["window"]["S"] == outbox_sk((10, 0, ()))
    )
    assert int(entry["expires"]["N"]) - int(step._now()) <= 60 + OUTBOX_MARGIN_S


# -- one lane: main's protocol -------------------------------------------------------------


def _moved(step: Window, records: list[tuple[int, str, int]]) -> list[tuple[Any, Any]]:
    """``(sequence number, region, time)`` records of one user (partition key ``user-1``)
    through a step keyed by region: (window_id, n) of its results, sorted."""
    recs = [
        Record(
            orjson.dumps({"user": "user-1", "region": region, "ts": ts}),
            "user-1",
            str(seq),
            shard_id="s0",
            index=i,
        )
        for i, (seq, region, ts) in enumerate(records)
    ]
    out = Chain([Step.of("processors[0].window", step)]).run(recs)
    assert not out.failures
    return sorted((r.get("window_id"), r.get("n")) for r in out.records)


@pytest.mark.parametrize(("parallelization", "counted"), [(1, 1), (2, 2)])
def test_a_record_an_earlier_step_moves_to_other_windows_on_redelivery_counts_once_with_one_lane(
    aws: Callable[[str], Any], window_table: str, parallelization: int, counted: int
) -> None:
    """Records 1 and 2 go into region eu's window. Delivered again (a sink after the step
    failed), a lookup before the window now says us (its table changed in between). With
    one lane they were applied (at or before ``applied``) and count once, in eu, as on main.
    In lanes mode no high-water of us's window knows them: they count in both windows (the
    cost of lanes mode, in the store's docstring; review 6's /tmp/rv6/moved2.py)."""
    prefix, client = uuid.uuid4().hex, aws("dynamodb")
    step = one_lane(window_table, prefix, client, key="region", aggregate={"n": "count"},
                    parallelization=parallelization)  # fmt: skip
    assert _moved(step, [(1, "eu", 5), (2, "eu", 6)]) == []
    again = _moved(step, [(1, "us", 5), (2, "us", 6), (3, "eu", 70)])
    eu = [("f/eu/1970-01-01T00:00:00Z", 2)]
    assert again == (eu if counted == 1 else [*eu, ("f/us/1970-01-01T00:00:00Z", 2)])
    assert sum(n for _, n in again) == 2 * counted


@pytest.mark.parametrize("listed", [True, False], ids=["starts-listed", "unlisted"])
def test_with_one_lane_no_outbox_entry_nor_high_water_is_written_and_closed_items_keep_a_day(
    aws: Callable[[str], Any], window_table: str, monkeypatch: pytest.MonkeyPatch, listed: bool
) -> None:
    """Main's items: a closing batch writes no ``~o#`` entry and no ``hw``; a closed item
    is buried once the batch committed (a tombstone: its shard item lists its open
    windows' starts, :func:`processors.window_starts.dead`), or, when it lists none (past
    ``STARTS_MAX``), written closed; either kept a day, as main does (lanes mode: the age
    bound plus an hour). A closer redelivered after a restart while the shard item's
    outbox still holds it yields its results from there, with one read; and a redelivered
    record whose window closed since is not late, its item buried or not."""
    if not listed:
        monkeypatch.setattr(window_starts, "STARTS_MAX", -1)
    prefix, client = uuid.uuid4().hex, aws("dynamodb")
    step = one_lane(window_table, prefix, client)
    assert step.store.high_water is False
    assert batch(step, [A1, B2, A3]) == []
    assert batch(step, [CLOSER]) == RESULTS
    stored = items(aws, window_table, prefix)
    assert sorted(i["window"]["S"] for i in stored) == [
        "#shard",
        "#shards",
        'w#0#"a"',
        'w#0#"b"',
        'w#60#"c"',
    ]
    assert [i["window"]["S"] for i in stored if "hw" in i or "hw_prev" in i] == []
    closed = next(i for i in stored if i["window"]["S"] == 'w#0#"a"')
    assert ("tombstone" in closed) is listed
    assert "acc" not in closed
    assert 0 < int(closed["expires"]["N"]) - int(step._now()) <= CLOSED_TTL_S
    again = one_lane(window_table, prefix, client)  # a restart
    assert batch(again, [A1, B2, A3, CLOSER]) == RESULTS
    assert again.late == 0
