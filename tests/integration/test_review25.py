"""Review 25: the window store's burials of closed windows (issue 17; deletes when review 25
found this, tombstones since) under a zombie: a worker paused past its lease while another
took its shard over. Against the session moto server; the two workers are two window steps
with their own stores (two processes) on one partition, and the pause is a thread held on an
``Event`` inside the real client, never a faked answer. The order of events is forced with
events, never timed."""

from __future__ import annotations

import threading
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from processors import window_starts
from processors.window_store import WindowStateError
from tests.integration.test_window_close_burials import window_sks
from tests.integration.test_window_starts import minute, run, shard_item, step

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.integration

DEADLINE_S = 60.0


class Paused:
    """The real client; once ``armed``, each ``PutItem`` of a window item (``w#``) first
    says it got there (``reached``) and waits for ``go``: a worker paused (a GC pause, a
    stalled VM) between its read of the shard and its writes, past its lease."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.armed = False
        self.reached = threading.Event()
        self.go = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def put_item(self, **request: Any) -> Any:
        if self.armed and request["Item"]["window"]["S"].startswith("w#"):
            self.reached.set()
            if not self.go.wait(DEADLINE_S):
                raise AssertionError("the zombie was never let go")
        return self.client.put_item(**request)


def zombie_batch(
    zombie_step: Any, client: Paused, docs: list[dict[str, Any]], first_seq: int
) -> tuple[threading.Thread, list[BaseException]]:
    """The zombie's batch in a thread, paused at its first window item write."""
    errors: list[BaseException] = []

    def go() -> None:
        try:
            run(zombie_step, docs, first_seq)
        except BaseException as exc:  # the test reads it
            errors.append(exc)

    client.armed = True
    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    assert client.reached.wait(DEADLINE_S), "the zombie never reached its writes"
    return thread, errors


def open_items_left(
    aws: Callable[[str], Any], table: str, prefix: str
) -> dict[str, dict[str, Any]]:
    """The window items with no TTL (``expires``: open-looking) of windows the shard's
    watermark passed (closed): on the deletes' path at a start the shard item no longer
    lists, so no read by the starts reads them and no commit deletes them; DynamoDB never
    expires them either."""
    head = shard_item(aws, table, prefix)
    watermark = float(head["max_time"]["N"]) - int(head["lateness"]["N"])
    return {sk: i for sk, i in window_sks(aws, table, prefix).items()
            if "expires" not in i and float(i["end"]["N"]) <= watermark}  # fmt: skip


class TestAZombieWritesAfterTheNewOwnerBuried:
    @pytest.mark.parametrize("path", ["burials", "old path"])
    def test_no_open_window_item_is_left_for_ever(self, aws, window_table, monkeypatch, path):
        """Worker Z and worker B share shard s0 (Z's lease expired while it was paused).
        Both committed minute 0 (five users). Z takes minute 1's five records, reads the
        shard and pauses before its writes. B takes the shard over and gets a longer
        batch: minute 1 and minute 2: minute 0's windows close (buried) and so do minute
        1's, opened and closed in B's batch (not written; buried blind). Z wakes: its
        writes of minute 1's windows as new windows must lose their condition, and its
        shard item loses its own. Z's batch comes again (a redelivery: B's outcomes,
        nothing written). B goes on with minutes 3 to 5. No open-looking item (``acc``,
        no ``expires``) of a closed window may stay. With deletes, Z's writes succeeded
        (nothing was there any more) and minute 1's five items stayed for ever, at a
        start no shard item lists again; with tombstones, as on the old path (commits
        list no starts: closed windows written closed, with a TTL), they lose their
        condition."""
        if path == "old path":
            monkeypatch.setattr(window_starts, "STARTS_MAX", -1)
        prefix = uuid.uuid4().hex
        real = aws("dynamodb")
        paused = Paused(real)
        zombie = step(window_table, prefix, paused)
        owner = step(window_table, prefix, real)
        run(zombie, minute(0), 100)  # both workers warm on minute 0 (Z committed it)
        thread, errors = zombie_batch(zombie, paused, minute(1), 200)
        got = run(owner, minute(1) + minute(2), 200)  # B: the shard taken over
        assert sorted(r["window_start"] for r in got).count("1970-01-01T00:01:00Z") == 5
        paused.go.set()
        thread.join(DEADLINE_S)
        assert not thread.is_alive()
        assert len(errors) == 1
        assert isinstance(errors[0], WindowStateError)  # its commit lost: rev moved
        paused.armed = False
        again = run(zombie, minute(1), 200)  # its redelivery: applied already, written by B
        assert sorted(r["window_start"] for r in again) == ["1970-01-01T00:00:00Z"] * 5
        for m in (3, 4, 5):
            run(owner, minute(m), 100 * m + 100)
        assert open_items_left(aws, window_table, prefix) == {}
