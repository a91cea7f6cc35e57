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


def rows(got: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    return sorted((r["window_start"], r["key"], r["n"]) for r in got)


@pytest.mark.parametrize("lanes", [1, 2], ids=["one-lane", "lanes"])
def test_a_lowering_long_after_a_raise_moves_the_watermark_on_at_once(aws, window_table, lanes):
    """review22 finding 2, fixed: a record past the raised ``max_time`` sets the lift to 0.
    Partition a: lateness 0 (minutes 0 and 1), raised to 60 (a record at 62: lift 60),
    then minutes 2 to 5 (greatest event time 301: event time is far past the raise). Twin
    b: lateness 60 from the start, the same records. Both at lateness 60 with the same
    greatest event time, both lowered to 0: a record at 250 (51 s behind 301) is late for
    both, and minute 4's windows close with the same counts."""
    client = aws("dynamodb")
    out: dict[str, list[Any]] = {}
    for name, start in (("a", 0), ("b", 60)):
        prefix = uuid.uuid4().hex
        first = window(window_table, prefix, client, allowed_lateness_s=start,
                       parallelization=lanes)  # fmt: skip
        on(first, "s0", minute(0, 2), 1)
        on(first, "s0", minute(1, 2), 101)
        raised = window(window_table, prefix, client, allowed_lateness_s=60,
                        parallelization=lanes)  # fmt: skip
        on(raised, "s0", [purchase("u0", 62)], 151)
        for m in (2, 3, 4, 5):
            on(raised, "s0", minute(m, 2), 100 * m + 1)
        back = window(window_table, prefix, client, allowed_lateness_s=0, parallelization=lanes)
        on(back, "s0", [purchase("u0", 250)], 601)
        late = back.late
        out[name] = [late, rows(on(back, "s0", minute(6, 2), 701))]
    assert out["b"][0] == 1  # late under lateness 0: 51 s behind the greatest event time
    assert out["a"] == out["b"]
