"""The partition keys' bound with lanes on DynamoDB (issue 16, slice S7), on the session's
moto server: with ``parallelization`` 2 the record of a window's 17th partition key is
dead-lettered with the reason, the window's result counts the other 16, its item's
high-water names those 16 (never the one entry the store keeps past the bound, which
decides by the applied position and would skip a lagging lane's record), and a redelivery,
warm or cold, before or after the window closed, is refused again. With one lane nothing
is refused. The memory store's cases: ``tests/processors/test_window_pk_bound.py``."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from processors.lineage import StaticLineage
from processors.session import SessionWindow, session_end_of
from processors.window_store import HW_MAX_PKS, DynamoDBStore
from tests.integration.test_window_state import window as built
from tests.processors.test_window_pk_bound import SHARD, USERS, _closer, _one_each, _run

if TYPE_CHECKING:
    from collections.abc import Callable

    from processors.window import Window

pytestmark = pytest.mark.integration

RESULT = {"fn/p1/1970-01-01T00:00:00Z": HW_MAX_PKS}


def _window(table: str, prefix: str, client: Any, parallelization: int = 2) -> Window:
    """What a cold start builds: a new step and store on the table."""
    return built(table, prefix, client, key="product", function="fn", late="late",
                 parallelization=parallelization)  # fmt: skip


def _item(client: Any, table: str, prefix: str, sort_key: str) -> dict[str, Any]:
    key = {"shard": {"S": prefix + SHARD}, "window": {"S": sort_key}}
    return client.get_item(TableName=table, Key=key, ConsistentRead=True)["Item"]


def _errors(failed: list[tuple[str, Exception]]) -> list[tuple[str, str]]:
    return [(seq, str(error)) for seq, error in failed]


def test_a_window_s_17th_partition_key_is_dead_lettered_and_stays_so(
    aws: Callable[[str], Any], window_table: str
) -> None:
    prefix = uuid.uuid4().hex
    client = aws("dynamodb")
    step = _window(window_table, prefix, client)
    results, failed = _run(step, _one_each())
    assert results == {}
    assert [seq for seq, _ in failed] == [str(HW_MAX_PKS + 1)]
    assert "already holds records of 16 partition keys" in str(failed[0][1])
    assert "'u16'" in str(failed[0][1])
    first = _errors(failed)
    hw = orjson.loads(_item(client, window_table, prefix, 'w#0#"p1"')["hw"]["S"])
    assert sorted(hw) == USERS[:HW_MAX_PKS]  # its 16 keys, not the unbounded entry
    assert _errors(_run(step, _one_each())[1]) == first  # warm redelivery
    assert _errors(_run(_window(window_table, prefix, client), _one_each())[1]) == first  # cold
    results, failed = _run(_window(window_table, prefix, client), [_closer(100)])
    assert (results, failed) == (RESULT, [])
    # closed since: a cold start finds the refusal in the outbox entries, not "late"
    assert _errors(_run(_window(window_table, prefix, client), _one_each())[1]) == first
    results, failed = _run(
        _window(window_table, prefix, client), [_closer(100)]
    )  # the closer again
    assert (results, failed) == (RESULT, [])


def test_with_one_lane_nothing_is_refused(aws: Callable[[str], Any], window_table: str) -> None:
    prefix = uuid.uuid4().hex
    client = aws("dynamodb")
    step = _window(window_table, prefix, client, parallelization=1)
    assert _run(step, _one_each()) == ({}, [])
    assert _run(step, [_closer(100)]) == ({"fn/p1/1970-01-01T00:00:00Z": HW_MAX_PKS + 1}, [])


def _session(table: str, prefix: str, client: Any) -> SessionWindow:
    store = DynamoDBStore(table, prefix, 0, 30, client=client, end_of=session_end_of(30),
                          high_water=True)  # fmt: skip
    return SessionWindow(key="product", gap_s=30, field="ts", aggregate={"n": "count"},
                         function="fn", late="late", store=store, lineage=StaticLineage(),
                         parallelization=2)  # fmt: skip


def test_a_session_key_s_17th_partition_key_is_dead_lettered_and_stays_so(
    aws: Callable[[str], Any], window_table: str
) -> None:
    prefix = uuid.uuid4().hex
    client = aws("dynamodb")
    results, failed = _run(_session(window_table, prefix, client), _one_each())
    assert results == {}
    assert [seq for seq, _ in failed] == [str(HW_MAX_PKS + 1)]
    first = _errors(failed)
    assert _errors(_run(_session(window_table, prefix, client), _one_each())[1]) == first  # cold
    results, failed = _run(_session(window_table, prefix, client), [_closer(100)])
    assert (results, failed) == ({"fn/p1/1970-01-01T00:00:05Z": HW_MAX_PKS}, [])
    hw = orjson.loads(_item(client, window_table, prefix, 'h#"p1"')["hw"]["S"])
    assert sorted(hw) == USERS[:HW_MAX_PKS]  # the key's high-water: the 16, bounded
    assert _errors(_run(_session(window_table, prefix, client), _one_each())[1]) == first
