"""Review 8 of slice S4a (lanes mode's redo log, :mod:`processors.window_log`): faults the
branch's own tests leave out, on the session's moto server. A commit applied whose answer
is lost (a timeout; or an SDK that sends it again and gets the lost condition back), a
crash between the log's parts and the commit (orphan parts), a pending log cut in parts
(over 350 KB) rolled forward by another process, and a log kept pending while the
``logs`` map moves past :data:`~processors.window_log.KEEP_LOGS` commits.

Faults are client wrappers over the real client (a refused call raises as botocore
would; nothing is faked as done)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from processors.window_log import KEEP_LOGS
from tests.integration.test_window_redelivery import A1, A3, B2, CLOSER, RESULTS, doc, window
from tests.integration.test_window_redo_log import Wrapped, _is_commit, head, pending, run
from tests.integration.test_window_state import items

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.integration


def _refused(operation: str) -> ClientError:
    return ClientError({"Error": {"Code": "InternalServerError", "Message": "injected"}},
                       operation)  # fmt: skip


def logs_of(aws: Callable[[str], Any], table: str, prefix: str) -> list[str]:
    return sorted(i["window"]["S"] for i in items(aws, table, prefix)
                  if i["window"]["S"].startswith("#log#"))  # fmt: skip


class AnswerLost(Wrapped):
    """The next commit is applied, then its answer is lost: ``resend`` sends it once more,
    as an SDK with retries does after a timeout (the second answer is the lost
    condition); else a timeout is raised."""

    def __init__(self, client: Any, *, resend: bool) -> None:
        super().__init__(client)
        self.armed = True
        self.resend = resend

    def update_item(self, **request: Any) -> Any:
        if _is_commit(request) and self.armed:
            self.armed = False
            self._client.update_item(**request)
            if self.resend:
                return self._client.update_item(**request)  # ConditionalCheckFailed
            raise ReadTimeoutError(endpoint_url="injected")
        return self._client.update_item(**request)


@pytest.mark.parametrize("resend", [False, True], ids=["timeout", "sdk-resend"])
def test_a_commit_applied_whose_answer_is_lost_is_applied_once_and_the_shard_goes_on(
    aws: Callable[[str], Any], window_table: str, resend: bool
) -> None:
    """The closer's commit is applied, its answer lost: the batch fails (or, with the
    resend, loses its condition to itself). Either way the commit stands: its log must
    stay readable, the redelivery (same process, then a cold one) yields the results
    once and counts nothing twice, and later batches go on."""
    prefix, real = uuid.uuid4().hex, aws("dynamodb")
    assert run(window(window_table, prefix, real), [A1, B2, A3]) == ([], [])
    step = window(window_table, prefix, AnswerLost(real, resend=resend))
    got = run(step, [CLOSER])
    assert got == (RESULTS, []) or got == ([], [True])
    assert int(head(aws, window_table, prefix)["n"]["N"]) >= 2
    cold = window(window_table, prefix, real)
    assert run(cold, [A1, B2, A3, CLOSER]) == (RESULTS, [])
    assert cold.late == 0
    assert run(step, [CLOSER, (11, doc("c", 62))]) == (RESULTS, [])
    got, failed = run(window(window_table, prefix, real), [(20, doc("e", 200))])
    assert failed == []
    assert [(r["key"], r["n"]) for r in got] == [("c", 2)]


class CrashBeforeCommit(Wrapped):
    """The next commit is never sent (the process dies after its log's parts)."""

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.armed = True

    def update_item(self, **request: Any) -> Any:
        if _is_commit(request) and self.armed:
            self.armed = False
            raise ReadTimeoutError(endpoint_url="injected")
        return self._client.update_item(**request)


def test_orphan_parts_of_a_commit_number_another_process_committed_are_never_read(
    aws: Callable[[str], Any], window_table: str
) -> None:
    """Process X writes its log for commit 2 (a@7 into a's window) and dies before the
    commit; process Y commits 2 itself (b's record). X's parts, same N, another id, are
    never laid over anything: a's window holds records 1 and 3 only."""
    prefix, real = uuid.uuid4().hex, aws("dynamodb")
    assert run(window(window_table, prefix, real), [A1, A3]) == ([], [])
    crashing = window(window_table, prefix, CrashBeforeCommit(real))
    assert run(crashing, [(4, doc("a", 7))]) == ([], [True])
    orphans = logs_of(aws, window_table, prefix)
    assert any(sk.startswith("#log#00000000000000000002#") for sk in orphans)
    assert run(window(window_table, prefix, real), [(5, doc("b", 8))]) == ([], [])  # commit 2
    assert int(head(aws, window_table, prefix)["n"]["N"]) == 2
    got, failed = run(window(window_table, prefix, real), [(20, doc("e", 200))])
    assert failed == []
    assert sorted((r["key"], r["n"]) for r in got) == [("a", 2), ("b", 1)]


def test_orphan_parts_do_not_stay_in_the_partition_for_ever(
    aws: Callable[[str], Any], window_table: str
) -> None:
    """A crash between the log and the commit leaves parts no ``logs`` entry will ever
    name. They have no TTL and every full read of the partition reads them (read units,
    up to 350 KB a part): the design (§4) says the writer or any later full read deletes
    them. After the orphan's commit number is long passed (more than ``KEEP_LOGS``
    commits, cold reads among them), no part of it may be left."""
    prefix, real = uuid.uuid4().hex, aws("dynamodb")
    assert run(window(window_table, prefix, real), [A1]) == ([], [])
    crashing = window(window_table, prefix, CrashBeforeCommit(real))
    assert run(crashing, [(2, doc("a", 7))]) == ([], [True])
    orphan = [sk for sk in logs_of(aws, window_table, prefix)
              if sk.startswith("#log#00000000000000000002#")]  # fmt: skip
    assert len(orphan) == 1
    for seq in range(3, 3 + KEEP_LOGS + 3):
        assert run(window(window_table, prefix, real), [(seq, doc("a", 7 + seq))]) == ([], [])
    assert orphan[0] not in logs_of(aws, window_table, prefix)


class BigValues(Wrapped):
    """Refuses roll-forward ``PutItem``\\ s (not a log part's) while ``refusing``."""

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.refusing = False

    def put_item(self, **request: Any) -> Any:
        if self.refusing and not request["Item"]["window"]["S"].startswith("#log#"):
            raise _refused("PutItem")
        return self._client.put_item(**request)


def test_a_pending_log_of_several_parts_is_read_and_rolled_forward_by_another_process(
    aws: Callable[[str], Any], window_table: str
) -> None:
    """A batch of 1,500 keys (a log over 350 KB: several parts) commits; its roll-forward
    is refused and its process dies. Another process reads the state through the pending
    log (all parts), helps roll it forward two commits later, and every window closes
    with its one record."""
    prefix, real = uuid.uuid4().hex, aws("dynamodb")
    refusing = BigValues(real)
    keys = [f"user-{i:05d}-{'x' * 40}" for i in range(1500)]
    big = [(1 + i, doc(k, 5)) for i, k in enumerate(keys)]
    refusing.refusing = True
    assert run(window(window_table, prefix, refusing), big) == ([], [])
    parts = logs_of(aws, window_table, prefix)
    assert len(parts) >= 2, parts
    assert pending(aws, window_table, prefix) == {1}
    other = window(window_table, prefix, real)
    assert run(other, big[:3]) == ([], [])  # redelivered: applied already (the log says)
    for seq in (5000, 5001, 5002):
        assert run(other, [(seq, doc("z", 10))]) == ([], [])
    assert pending(aws, window_table, prefix) == set()
    got, failed = run(window(window_table, prefix, real), [(6000, doc("e", 200))])
    assert failed == []
    assert len(got) == len(keys) + 1
    assert {r["n"] for r in got} == {1, 3} or {r["n"] for r in got} == {1}


class RefusingKey(Wrapped):
    """Refuses every roll-forward ``PutItem`` of one sort key while ``refusing``."""

    def __init__(self, client: Any, sk: str) -> None:
        super().__init__(client)
        self.sk = sk
        self.refusing = True

    def put_item(self, **request: Any) -> Any:
        if self.refusing and request["Item"]["window"]["S"] == self.sk:
            raise _refused("PutItem")
        return self._client.put_item(**request)


def test_a_log_pending_past_keep_logs_commits_stays_named_readable_and_rolls_forward(
    aws: Callable[[str], Any], window_table: str
) -> None:
    """Commit 2 (a@7 into a's window) is never rolled forward while more than
    ``KEEP_LOGS`` commits pass (every roll-forward of a's item refused, in every process):
    the ``logs`` map keeps it named, its parts stay, cold reads see a's two records; once
    the item's write goes through, a later commit rolls it forward and drops it."""
    prefix, real = uuid.uuid4().hex, aws("dynamodb")
    assert run(window(window_table, prefix, real), [A1]) == ([], [])
    stuck = RefusingKey(real, 'w#0#"a"')
    assert run(window(window_table, prefix, stuck), [(2, doc("a", 7))]) == ([], [])
    assert pending(aws, window_table, prefix) == {2}
    warm = window(window_table, prefix, stuck)
    for seq in range(3, 3 + KEEP_LOGS + 4):
        assert run(warm, [(seq, doc("b", seq))]) == ([], [])
        if seq % 3 == 0:  # a cold process between
            assert run(window(window_table, prefix, stuck), [(seq + 100, doc("c", seq))]) == (
                [],
                [],
            )
    shard = head(aws, window_table, prefix)
    assert "2" in shard["logs"]["M"]
    assert 2 in pending(aws, window_table, prefix)
    assert run(window(window_table, prefix, real), [(2, doc("a", 7))]) == ([], [])  # applied
    stuck.refusing = False
    for seq in (300, 301, 302):
        assert run(warm, [(seq, doc("b", 20))]) == ([], [])
    assert pending(aws, window_table, prefix) == set()
    got, failed = run(window(window_table, prefix, real), [(400, doc("e", 200))])
    assert failed == []
    assert {r["key"]: r["n"] for r in got}["a"] == 2
