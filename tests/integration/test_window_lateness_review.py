"""Review 21: the stored lateness (a14b214) and the durable deletes' list (af46dde), on the
session moto server. Each test is a combination the pipeline file allows. Both findings
(the raised max_time read back as event time) are fixed: the shard item keeps the raise
apart, as ``lift`` (:func:`processors.window_items.max_time_and_lift`).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.integration.test_window_lateness_change import at, late_step, rows
from tests.integration.test_window_starts import minute, run, shard_item

pytestmark = pytest.mark.integration


def purchase(user: str, ts: int) -> dict[str, Any]:
    return {"user": user, "ts": ts, "amount": 1, "product": "p", "page": "/"}


class TestARaiseThenALowerBack:
    def test_an_in_order_record_is_not_late(self, aws, window_table):
        """Lateness 0 (minutes 0 and 1: minute 0 closes); a redeploy raises it to 60 (a
        record at 63: max_time stored 122, lateness 60); a redeploy lowers it back to 0.
        A record at 64 is in order (the greatest event time so far is 63): not late, and
        u0's minute 1 window counts 60, 63 and 64, as on a twin that kept lateness 0."""
        a, b = uuid.uuid4().hex, uuid.uuid4().hex
        client = aws("dynamodb")
        out: dict[str, list[list[tuple[str, str, int]]]] = {}
        lates: dict[str, int] = {}
        for prefix, raised in ((a, 60), (b, 0)):
            first = late_step(window_table, prefix, client, 0)
            run(first, minute(0, 3), 1)
            assert rows(run(first, minute(1, 3), 101)) == [(at(0), f"u{u}", 1) for u in range(3)]
            out[prefix] = [rows(run(late_step(window_table, prefix, client, raised),
                                    [purchase("u0", 63)], 151))]  # fmt: skip
            back = late_step(window_table, prefix, client, 0)  # the redeploy back
            out[prefix].append(rows(run(back, [purchase("u0", 64)], 161)))
            lates[prefix] = back.late
            out[prefix].append(rows(run(back, minute(2, 3), 201)))
        assert float(shard_item(aws, window_table, a)["max_time"]["N"]) >= 122  # the raise
        assert lates == {a: 0, b: 0}
        assert out[b] == [[], [], [(at(1), "u0", 3), (at(1), "u1", 1), (at(1), "u2", 1)]]
        assert out[a] == out[b]


class TestARaiseWhileTheOldVersionStillRuns:
    def test_no_in_order_record_is_late_after_the_overlap(self, aws, window_table):
        """Lateness 0 (minutes 0 and 1; greatest event time 62); a redeploy raises it to
        60: the new version commits a record at 63, then a batch goes to a warm container
        of the old version still running (lateness 0: a record at 64), then the new one
        again: records at 65 and 70 are past every event time seen, late under no
        lateness; none is dropped."""
        prefix = uuid.uuid4().hex
        client = aws("dynamodb")
        old = late_step(window_table, prefix, client, 0)
        run(old, minute(0, 3), 1)
        run(old, minute(1, 3), 101)
        run(late_step(window_table, prefix, client, 60), [purchase("u0", 63)], 151)
        run(late_step(window_table, prefix, client, 0), [purchase("u1", 64)], 161)
        new = late_step(window_table, prefix, client, 60)
        run(new, [purchase("u0", 65), purchase("u1", 70)], 171)
        assert new.late == 0
