"""Review 22: a commit's deletes beside the sinks (issue 17, ``stream.overlap.behind``) and
the lateness raise's ``lift`` (:func:`processors.window_items.max_time_and_lift`), against
the session moto server. Each test is a combination the pipeline file allows."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from processors.chain import Chain, Step
from processors.lineage import StaticLineage
from stream.records import Record
from tests.integration.test_window_starts import minute, shard_item
from tests.integration.test_window_state import window

if TYPE_CHECKING:
    from processors.window import Window

pytestmark = pytest.mark.integration


def purchase(user: str, ts: int) -> dict[str, Any]:
    return {"user": user, "ts": ts, "amount": 1, "product": "p", "page": "/"}


def on(step: Window, shard: str, docs: list[dict[str, Any]], first_seq: int) -> list[Any]:
    batch = [Record(orjson.dumps(d), d["user"], str(first_seq + i), shard_id=shard, index=i)
             for i, d in enumerate(docs)]  # fmt: skip
    result = Chain([Step.of("processors[0].window", step)]).run(batch)
    if result.failures:
        raise result.failures[0].error
    return [r.as_dict() for r in result.records]


LINEAGE = {"direct": {"c": ("g",)}, "via a parent with no batch": {"p": ("g",), "c": ("p",)}}


def lateness_step(
    table: str, prefix: str, client: Any, lateness: int, parents: Any, lanes: int = 1
) -> Window:
    return window(table, prefix, client, allowed_lateness_s=lateness,
                  lineage=StaticLineage(parents), parallelization=lanes)  # fmt: skip


@pytest.mark.parametrize("lanes", [1, 2], ids=["one-lane", "lanes"])
@pytest.mark.parametrize(
    "via",
    [
        "direct",
        "via a parent with no batch",  # review22 finding 1: fixed (the sub-view's lift)
    ],
)
def test_a_child_keeps_its_ancestor_s_lift(aws, window_table, via, lanes):
    """Shard g, lateness 0: minutes 0 and 1 (greatest event time 61). A redeploy raises the
    lateness to 60: g takes a record at 62 (max_time stored 121, lift 60). g is split: its
    child c (directly, or through a parent p that never had a batch) takes a record at 63
    under lateness 60, then a redeploy lowers the lateness back to 0: c's record at 64 is
    in order (greater than every event time seen), so not late."""
    prefix, client = uuid.uuid4().hex, aws("dynamodb")
    parents = LINEAGE[via]
    first = lateness_step(window_table, prefix, client, 0, parents, lanes)
    on(first, "g", minute(0, 2), 1)
    on(first, "g", minute(1, 2), 101)
    raised = lateness_step(window_table, prefix, client, 60, parents, lanes)
    on(raised, "g", [purchase("u0", 62)], 151)
    assert shard_item(aws, window_table, prefix, "g")["lift"] == {"N": "60"}
    child = lateness_step(window_table, prefix, client, 60, parents, lanes)  # a cold start
    on(child, "c", [purchase("u0", 63)], 1)
    back = lateness_step(window_table, prefix, client, 0, parents, lanes)
    on(back, "c", [purchase("u1", 64)], 2)
    assert back.late == 0
