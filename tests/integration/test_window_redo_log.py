"""Lanes mode's redo-log commit (issue 16, slice S4a; :mod:`processors.window_log`) on the
session's moto server: a failure after the commit leaves it committed (readers lay the
pending log over the items; a later batch rolls it forward), a failure before it leaves
nothing visible, a zombie loses its commit and applies again, and a batch that writes
nothing checks the commit number before it answers.

Faults and interleavings come from client wrappers: each forwards every call it does not
refuse to the real client, and a refused call raises as botocore would (nothing is faked
as done). Interleavings run the other invocation inside one of this one's calls (before
or after the real call), in one thread: the order is exact, no sleeps."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from processors.chain import Chain, Step
from processors.window_store import outbox_sk
from stream.records import Record
from tests.integration.test_window_redelivery import A1, A3, B2, CLOSER, RESULTS, doc, window
from tests.integration.test_window_state import items

if TYPE_CHECKING:
    from collections.abc import Callable

    from processors.window import Window

pytestmark = pytest.mark.integration


def run(step: Window, records: list[tuple[int, dict[str, Any]]]) -> tuple[list[Any], list[Any]]:
    """``(sequence number, document)`` records of shard s0 through the step: its results
    as {id, key, n} sorted, and its failures (retryable or not)."""
    recs = [Record(orjson.dumps(d), d["user"], str(seq), shard_id="s0", index=i)
            for i, (seq, d) in enumerate(records)]  # fmt: skip
    out = Chain([Step.of("processors[0].window", step)]).run(recs)
    got = sorted(({"id": r.get("window_id"), "key": r.get("key"), "n": r.get("n")}
                  for r in out.records), key=lambda r: r["id"])  # fmt: skip
    return got, [f.retryable for f in out.failures]


def head(aws: Callable[[str], Any], table: str, prefix: str) -> dict[str, Any]:
    return next(i for i in items(aws, table, prefix) if i["window"]["S"] == "#shard")


def item(aws: Callable[[str], Any], table: str, prefix: str, sk: str) -> dict[str, Any] | None:
    return next((i for i in items(aws, table, prefix) if i["window"]["S"] == sk), None)


def pending(aws: Callable[[str], Any], table: str, prefix: str) -> set[int]:
    return {int(p) for p in head(aws, table, prefix).get("pending", {}).get("NS", ())}


def _is_commit(request: dict[str, Any]) -> bool:
    return request["Key"]["window"]["S"] == "#shard" and "ADD #p" in request.get(
        "UpdateExpression", ""
    )


class Wrapped:
    """The real client; subclasses refuse or interleave some calls."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class RefusingRollForward(Wrapped):
    """Refuses (``InternalServerError``) every ``PutItem`` but a log part's while
    ``refusing``: a commit's log and its commit go through, its roll-forward does not."""

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.refusing = False
        self.refused = 0

    def put_item(self, **request: Any) -> Any:
        if self.refusing and not request["Item"]["window"]["S"].startswith("#log#"):
            self.refused += 1
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "injected"}},
                              "PutItem")  # fmt: skip
        return self._client.put_item(**request)


def _refused_after_commit(
    aws: Callable[[str], Any], table: str
) -> tuple[str, Any, RefusingRollForward, Window]:
    """a, b and a applied (commit 1); then the closer's commit 2, whose roll-forward is
    refused: the batch answers its results (final at the commit) and the log stays
    pending. The prefix, the real client, the wrapper and the step."""
    prefix, real = uuid.uuid4().hex, aws("dynamodb")
    refusing = RefusingRollForward(real)
    step = window(table, prefix, refusing)
    assert run(step, [A1, B2, A3]) == ([], [])
    refusing.refusing = True
    assert run(step, [CLOSER]) == (RESULTS, [])
    assert refusing.refused >= 3  # a's and b's closed items, c's new one, the entry
    assert pending(aws, table, prefix) == {2}
    assert "closed" not in (item(aws, table, prefix, 'w#0#"a"') or {})  # not rolled forward
    assert item(aws, table, prefix, outbox_sk((10, 0, ()))) is None
    refusing.refusing = False
    return prefix, real, refusing, step


def test_a_failure_after_the_commit_the_next_batch_of_the_process_rolls_it_forward(
    aws: Callable[[str], Any], window_table: str
) -> None:
    """The process keeps the log it could not roll forward and does so after its next
    commit; meanwhile a cold start reads the committed state through the pending log (the
    closer's redelivery yields the same results, a's records are not counted again)."""
    prefix, real, _, step = _refused_after_commit(aws, window_table)
    cold = window(window_table, prefix, real)
    assert run(cold, [A1, B2, A3, CLOSER]) == (RESULTS, [])  # replayed, not recounted
    assert cold.late == 0
    assert run(step, [(11, doc("c", 62))]) == ([], [])  # commit 3, then 2's roll-forward
    assert pending(aws, window_table, prefix) == set()
    assert "closed" in (item(aws, window_table, prefix, 'w#0#"a"') or {})
    assert item(aws, window_table, prefix, outbox_sk((10, 0, ()))) is not None
    again = window(window_table, prefix, real)
    assert run(again, [CLOSER, (11, doc("c", 62)), (12, doc("c", 63))]) == (RESULTS, [])
    assert again.late == 0


def test_a_failure_after_the_commit_a_cold_process_reads_it_and_helps_roll_it_forward(
    aws: Callable[[str], Any], window_table: str
) -> None:
    """The committing process dies after its commit (its roll-forward refused): another
    process reads the committed state through the pending log at every batch, and the
    first batch that finds the log two commits old (design §5.1 step 8) rolls it
    forward; the window a closed is never closed again, its result comes out once."""
    prefix, real, _, _ = _refused_after_commit(aws, window_table)
    other = window(window_table, prefix, real)
    seen = []
    for seq in (11, 12, 13):
        got, failed = run(other, [(seq, doc("c", 50 + seq))])
        assert failed == []
        seen += got
        if not pending(aws, window_table, prefix):
            break
    assert seen == []  # nothing closed twice
    assert pending(aws, window_table, prefix) == set()
    assert "closed" in (item(aws, window_table, prefix, 'w#0#"a"') or {})
    assert run(window(window_table, prefix, real), [A1, B2, A3, CLOSER]) == (RESULTS, [])


class CommitTimesOut(Wrapped):
    """The commit's ``UpdateItem`` (the shard item, ``ADD pending``) is never sent once:
    a timeout before it, after the log's parts were written."""

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.failed = False

    def update_item(self, **request: Any) -> Any:
        if _is_commit(request) and not self.failed:
            self.failed = True
            raise ReadTimeoutError(endpoint_url="injected")
        return self._client.update_item(**request)


def test_a_failure_before_the_commit_leaves_nothing_visible_and_the_redelivery_applies_once(
    aws: Callable[[str], Any], window_table: str
) -> None:
    prefix, real = uuid.uuid4().hex, aws("dynamodb")
    assert run(window(window_table, prefix, real), [A1, B2, A3]) == ([], [])
    before = {i["window"]["S"]: i for i in items(aws, window_table, prefix)
              if not i["window"]["S"].startswith("#log#")}  # fmt: skip
    step = window(window_table, prefix, CommitTimesOut(real))
    assert run(step, [CLOSER]) == ([], [True])  # the whole batch again
    after = {i["window"]["S"]: i for i in items(aws, window_table, prefix)
             if not i["window"]["S"].startswith("#log#")}  # fmt: skip
    assert after == before  # the log's parts only: no commit names them
    assert run(window(window_table, prefix, real), [CLOSER]) == (RESULTS, [])  # a cold start
    assert run(step, [CLOSER]) == (RESULTS, [])  # the redelivery: replayed
    assert run(window(window_table, prefix, real), [(11, doc("a", 65))]) == ([], [])


class Interleaving(Wrapped):
    """Runs ``before`` (once) just before this client's first commit ``UpdateItem``."""

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.before: Callable[[], None] | None = None
        self.commits = 0

    def update_item(self, **request: Any) -> Any:
        if _is_commit(request):
            self.commits += 1
            hook, self.before = self.before, None
            if hook is not None:
                hook()
        return self._client.update_item(**request)


def test_a_zombie_that_read_before_another_attempt_s_commit_loses_and_applies_again(
    aws: Callable[[str], Any], window_table: str
) -> None:
    """Design §9.3, in lanes mode: attempt B (a's records 2-4, the lane after a restart)
    has written its log; zombie Z (record 2 alone, an invocation from before the restart)
    reads the shard then (a's window: record 1); B commits; Z's commit then loses its
    condition on ``n``, Z reads again (B's log pending, laid over the items) and finds
    record 2 applied: it writes nothing. The window closes with records 1-4.

    What it catches: a commit not conditional on the commit number read (Z's log, a's
    window with records 1 and 2, would be committed over B's: records 3 and 4 lost, as
    ``v``/``prev`` lose record 29 in §9.3) and a read that ignores the pending log (Z's
    retry would see a's window without B's records and apply record 2 again)."""
    prefix, real = uuid.uuid4().hex, aws("dynamodb")
    assert run(window(window_table, prefix, real), [(1, doc("a", 5))]) == ([], [])
    b_client, z_client = Interleaving(real), Interleaving(real)
    b_step, z_step = window(window_table, prefix, b_client), window(window_table, prefix, z_client)
    lane = [(2, doc("a", 6)), (3, doc("a", 7)), (4, doc("a", 8))]
    z_out: list[Any] = []

    def zombie() -> None:  # B's log is written, its commit not sent
        z_client.before = b_commits
        z_out.append(run(z_step, lane[:1]))

    def b_commits() -> None:  # Z has read and applied: B's commit passes first
        b_client.before = None
        b_client._client.update_item(**b_request.pop())

    b_request: list[dict[str, Any]] = []

    def b_update(**request: Any) -> Any:
        if _is_commit(request) and not b_request and b_client.commits == 0:
            b_client.commits += 1
            b_request.append(request)
            zombie()  # Z reads, applies; at its commit, B's goes first
            assert not b_request, "B's commit was sent by Z's hook"
            return {}
        return real.update_item(**request)

    b_client.update_item = b_update  # type: ignore[method-assign]
    assert run(b_step, lane) == ([], [])
    assert z_out == [([], [])]
    assert z_client.commits == 1  # lost, then nothing to write (validated by a read)
    assert int(head(aws, window_table, prefix)["n"]["N"]) == 2  # B's only
    got, failed = run(window(window_table, prefix, real), [(10, doc("c", 61))])
    assert failed == []
    assert got == [{"id": "f/a/1970-01-01T00:00:00Z", "key": "a", "n": 4}]


class PagedRead(Wrapped):
    """A cold start's ``Query`` of the partition, one item a page, with ``between``
    (once) run after the page holding the shard item: the shard item is read at one
    commit, the window items after another commit's roll-forward (as one DynamoDB
    ``Query`` may: it is no snapshot)."""

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.between: Callable[[], None] | None = None

    def query(self, **request: Any) -> Any:
        if self.between is None or "BETWEEN" in request["KeyConditionExpression"]:
            return self._client.query(**request)
        page = self._client.query(**request, Limit=1)
        if any(i["window"]["S"] == "#shard" for i in page.get("Items", [])):
            hook, self.between = self.between, None
            hook()
        return page


def test_a_batch_that_writes_nothing_reads_the_commit_number_before_it_answers(
    aws: Callable[[str], Any], window_table: str
) -> None:
    """Design §9.2, built: lane A commits a's records 1 and 3 (commit 1). A lagging lane's
    record 2 (b@70, which closes a's window) is delivered twice at once: S and its twin T.
    T reads the shard item at commit 1; S then commits 2 and rolls its window items
    forward, but its outbox entry's write fails; T reads the window items: b's window
    says record 2 is applied, its outcome is in no entry T can see (commit 2's log was not
    pending when T read the shard item). T writes nothing: without a second read of the
    shard item it would answer "applied, nothing to replay" and a's result would be lost
    (S's answer may be the one Lambda ignores). It reads it, finds commit 2, reads again
    and replays the result."""
    prefix, real = uuid.uuid4().hex, aws("dynamodb")
    assert run(window(window_table, prefix, real), [(1, doc("a", 5)), (3, doc("a", 30))]) == (
        [],
        [],
    )
    lagging = [(2, doc("b", 70))]
    result = [{"id": "f/a/1970-01-01T00:00:00Z", "key": "a", "n": 2}]
    s_client, t_client = RefusingRollForward(real), PagedRead(real)
    s_out: list[Any] = []

    def sibling() -> None:
        s_client.refusing = False

        def only_entries(**request: Any) -> Any:
            if request["Item"]["window"]["S"].startswith("~o#"):
                raise ClientError({"Error": {"Code": "InternalServerError",
                                             "Message": "injected"}}, "PutItem")  # fmt: skip
            return real.put_item(**request)

        s_client.put_item = only_entries  # type: ignore[method-assign]
        s_out.append(run(window(window_table, prefix, s_client), lagging))

    t_client.between = sibling
    t_step = window(window_table, prefix, t_client)
    assert run(t_step, lagging) == (result, [])
    assert s_out == [(result, [])]
    assert pending(aws, window_table, prefix) == {2}  # S's entry: still in its log only
    assert "hw" in (item(aws, window_table, prefix, 'w#60#"b"') or {})  # rolled forward


def test_a_late_roll_forward_never_undoes_a_newer_commit_s_item(
    aws: Callable[[str], Any], window_table: str
) -> None:
    """Commit 2 (the closer, c's window opened with c@61) is not rolled forward; another
    process commits 3 (c@62 into c's window) and rolls it forward; the first process then
    commits 4 (d's record) and rolls its own log 2 forward at last: c's item must keep
    commit 3's content (each roll-forward ``PutItem`` holds only over an older ``n``),
    else c@62 is lost from c's window."""
    prefix, real, _, step = _refused_after_commit(aws, window_table)
    assert run(window(window_table, prefix, real), [(11, doc("c", 62))]) == ([], [])
    assert run(step, [(12, doc("d", 63))]) == ([], [])  # commit 4, then log 2 rolled
    assert pending(aws, window_table, prefix) == set()
    got, failed = run(window(window_table, prefix, real), [(20, doc("e", 200))])
    assert failed == []
    assert [(r["key"], r["n"]) for r in got] == [("c", 2), ("d", 1)]


class RefusingLogReads(Wrapped):
    """Refuses (``InternalServerError``) every ``Query`` of a log's parts while
    ``refusing``: a pending log the process has not decoded cannot be read."""

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.refusing = False
        self.refused = 0

    def query(self, **request: Any) -> Any:
        if self.refusing and any(
            v.get("S", "").startswith("#log#")
            for v in request.get("ExpressionAttributeValues", {}).values()
        ):
            self.refused += 1
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "injected"}},
                              "Query")  # fmt: skip
        return self._client.query(**request)


def test_a_pending_log_whose_parts_cannot_be_read_stays_pending_until_it_is_rolled_forward(
    aws: Callable[[str], Any], window_table: str
) -> None:
    """Review 8: the roll-forward after a commit helps the older pending logs; one whose
    parts it cannot read (a throttled ``Query``) was still taken out of ``pending``, and
    its committed items, never written, were lost for every later reader. It stays
    pending now, and a later commit rolls it forward."""
    prefix, real, _, step = _refused_after_commit(aws, window_table)
    reads = RefusingLogReads(real)
    step.store._client = reads  # type: ignore[attr-defined]  # the same process, its reads refused
    step.store._cache["s0"].decoded.clear()  # type: ignore[attr-defined]  # as if another's log
    reads.refusing = True
    assert run(step, [(11, doc("d", 62))]) == ([], [])  # commit 3; log 2 unreadable
    assert reads.refused >= 1
    assert 2 in pending(aws, window_table, prefix)  # on the branch: {3} or set(): log 2 dropped
    cold = window(window_table, prefix, real)
    assert run(cold, [A1, B2, A3, CLOSER]) == (RESULTS, [])  # still read through log 2
    reads.refusing = False
    assert run(step, [(12, doc("e", 63))]) == ([], [])  # commit 4 rolls log 2 forward
    assert 2 not in pending(aws, window_table, prefix)
    assert "closed" in (item(aws, window_table, prefix, 'w#0#"a"') or {})
