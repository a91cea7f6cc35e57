"""Lanes mode's logs after their commit: rolled forward, read while pending, cleaned.

A commit's outcomes are final at its ``UpdateItem`` (:mod:`processors.window_lanes`); then
its log's items are written, each only over an older ``n``, and its number leaves
``pending``. What fails there does not fail the batch: readers lay the pending logs over
the items, and the next commit of the writer, or a batch of any process that read the log
two commits old, rolls it forward. The log's encoding and requests:
:mod:`processors.window_log`.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from processors.window_items import (
    _SHARD_SK,
)
from processors.window_log import (
    LOG_SK,
    decode_log,
    log_id_parts,
    log_prefix,
    read_head,
    roll_owned,
    roll_requests,
)
from processors.window_outbox import (
    _PART,
)
from processors.window_state import (
    WindowStateError,
)
from processors.window_table import _TableStore
from stream.overlap import run_all, wave_width

if TYPE_CHECKING:
    from collections.abc import Mapping

    from processors.window_cache import _Cached


__all__: list[str] = []


class _Newer(WindowStateError):
    """A roll-forward's lost condition: the item holds a newer commit's write."""


class _RollForward(_TableStore):
    """The store with lanes mode's roll-forward, its pending logs read, its garbage
    dropped."""

    __slots__ = ()

    def _pending_logs(self, pk: str, cached: _Cached) -> list[tuple[int, list[dict[str, Any]]]]:
        """The shard's pending logs as last read (:attr:`_Cached.pending`), with their
        items: those this process read or wrote, and any other read now (one ``Query``
        of its parts each)."""
        out = []
        for m in sorted(cached.pending):
            log = cached.decoded.get(m)
            if log is None:
                log_id, count = log_id_parts(cached.logs[m])
                prefix = log_prefix(m, log_id)
                parts = {int(i["window"]["S"][len(prefix):]): i["log"]["S"]
                         for i in self._query(pk, prefix, prefix + "~")}  # fmt: skip
                log = cached.decoded[m] = decode_log(parts, count)
            out.append((m, log))
        return out

    def _committed_as(self, pk: str, n: int, named: str) -> bool | None:
        """Whether commit ``n`` holds this attempt's log (``named``) after all: a lost
        condition can be the commit's own, sent again after a lost answer (an SDK with
        retries), and dropping a committed log's parts would leave a pending log nobody
        can read (review 8). One consistent ``GetItem`` per lost condition; ``None``: the
        read failed, unsure (the caller keeps the parts: garbage at worst)."""
        try:
            item = self._call(
                "GetItem",
                self.client.get_item,
                TableName=self.table,
                Key={"shard": {"S": pk}, "window": {"S": _SHARD_SK}},
                ConsistentRead=True,
                ProjectionExpression="#l",
                ExpressionAttributeNames={"#l": "logs"},
            ).get("Item")
        except WindowStateError:
            return None
        return bool(item) and item.get("logs", {}).get("M", {}).get(str(n), {}).get("S") == named

    def _roll_forward(
        self,
        pk: dict[str, str],
        cached: _Cached,
        commits: list[int],
        dropped: list[tuple[int, str, int]],
    ) -> None:
        """After a commit: the items of the logs ``commits`` (its own, and pending ones it
        helps) written at once, each only over an older one; then one ``UpdateItem``
        takes them out of ``pending`` (no condition: set operations commute). The parts
        of logs the commit no longer names (``dropped``) are deleted in the same wave. A
        failure leaves the log pending: readers lay it over the items; this process rolls
        it forward after its next commit. Never raises (the batch committed)."""
        requests: list[dict[str, Any]] = []
        unread = []  # logs whose parts could not be read: never taken out of pending
        for m in commits:
            log = cached.decoded.get(m)
            if log is None:  # another's, not read yet
                try:
                    log = next(items for at, items in
                               self._pending_logs(pk["S"], cached) if at == m)  # fmt: skip
                except (StopIteration, KeyError, WindowStateError):
                    unread.append(m)
                    continue
            requests += roll_requests(self.table, m, log)
        if unread:  # review 8: a DELETE of them would lose their committed items for good
            cached.unrolled.update(unread)
            commits = [m for m in commits if m not in unread]
        deletes = [{"TableName": self.table,
                    "Key": {"shard": pk, "window": {"S": f"{log_prefix(m, i)}{p:03d}"}}}
                   for m, i, count in dropped for p in range(count)]  # fmt: skip
        calls = [partial(self._roll_one, request) for request in requests]
        calls += [partial(self._quietly, "DeleteItem", self.client.delete_item, request)
                  for request in deletes]  # fmt: skip
        width = wave_width(one_item=True)
        ok = True
        for first in range(0, len(calls), width):
            ok = all(run_all(calls[first : first + width])) and ok
        if not ok:
            cached.unrolled.update(commits)
            return
        if not commits:  # only old parts to delete: nothing leaves pending
            return
        try:
            self._call(
                "UpdateItem",
                self.client.update_item,
                TableName=self.table,
                Key={"shard": pk, "window": {"S": _SHARD_SK}},
                UpdateExpression="DELETE #p :p",
                ExpressionAttributeNames={"#p": "pending"},
                ExpressionAttributeValues={":p": {"NS": [str(m) for m in commits]}},
            )
        except WindowStateError:
            cached.unrolled.update(commits)
            return
        cached.unrolled.difference_update(commits)
        cached.pending.difference_update(commits)
        for m in commits:
            cached.decoded.pop(m, None)

    def _roll_logs(self, pk: str, logs: Mapping[int, list[dict[str, Any]]]) -> bool:
        """Another shard's committed logs (a parent's still pending, a quiet shard's this
        batch closed) rolled forward, then taken out of its ``pending``; best effort:
        ``False`` leaves them pending (readers lay them over the items). A child rolls
        its parents' pending logs forward before it claims: a claim is an ``UpdateItem``
        of the parent's item on ``attribute_exists``, which an item that so far exists
        only in a pending log (its writer died before its roll-forward, and a parent
        that drained never commits again to finish it) failed for ever."""
        calls = [
            partial(self._roll_one, request)
            for m, log in logs.items()
            for request in roll_requests(self.table, m, log)
        ]
        width = wave_width(one_item=True)
        ok = True
        for first in range(0, len(calls), width):
            ok = all(run_all(calls[first : first + width])) and ok
        if not ok:
            return False
        return self._quietly(
            "UpdateItem",
            self.client.update_item,
            {
                "TableName": self.table,
                "Key": {"shard": {"S": pk}, "window": {"S": _SHARD_SK}},
                "UpdateExpression": "DELETE #p :p",
                "ExpressionAttributeNames": {"#p": "pending"},
                "ExpressionAttributeValues": {":p": {"NS": [str(m) for m in logs]}},
            },
        )

    def _roll_one(self, request: dict[str, Any]) -> bool:
        """One roll-forward ``PutItem``: a lost condition is a newer commit's item (done),
        or, for a window item, a reshard's child's claim (:func:`roll_owned`: the same
        write that keeps the claim); another failure is ``False`` (the log stays
        pending)."""
        try:
            self._call("PutItem", self.client.put_item, lost=_Newer, **request)
        except _Newer:
            if "ConditionExpression" not in request:
                return True
            try:
                self._call("UpdateItem", self.client.update_item, lost=_Newer,
                           **roll_owned(request))  # fmt: skip
            except _Newer:
                return True
            except WindowStateError:
                return False
        except WindowStateError:
            return False
        return True

    def _drop_garbage(self, pk: str, found: list[dict[str, Any]]) -> None:
        """A full read's cleaning (design §4; review 8): the log parts no commit can name
        any more, deleted best effort. A part of commit N at or below the shard item's
        ``n`` whose id is not ``logs[N]``'s is an attempt that never committed (it died
        between its log and its commit, or lost its condition and its delete failed), or
        a log a commit dropped whose delete failed: no attempt can commit it any more (a
        commit N holds only at ``n`` = N - 1), and no reader reads it. Without this they
        stay for ever (no TTL) and every full read pays for them."""
        head = next((i for i in found if i["window"]["S"] == _SHARD_SK), None)
        n, logs, _ = read_head(head)
        if head is None or not n:
            return
        named = {log_prefix(m, log_id_parts(v)[0]) for m, v in logs.items()}
        calls = []
        if "legacy_applied" in head:  # converted: the one-lane outbox's parts are garbage
            for item in found:
                if item["window"]["S"].startswith(_PART):
                    request = {
                        "TableName": self.table,
                        "Key": {"shard": {"S": pk}, "window": item["window"]},
                    }
                    calls.append(partial(self._quietly, "DeleteItem", self.client.delete_item,
                                         request))  # fmt: skip
        for item in found:
            sk = item["window"]["S"]
            if not sk.startswith(LOG_SK):
                continue
            prefix = sk[: sk.rindex("#") + 1]
            if int(prefix[len(LOG_SK) :].split("#", 1)[0]) <= n and prefix not in named:
                request = {
                    "TableName": self.table,
                    "Key": {"shard": {"S": pk}, "window": {"S": sk}},
                }
                calls.append(partial(self._quietly, "DeleteItem", self.client.delete_item, request))
        if calls:
            run_all(calls)

    def _drop_logs(self, pk: dict[str, str], logs: list[tuple[int, str, int]]) -> None:
        """The parts of logs no commit names (an attempt that lost its commit), deleted
        best effort: what is left is garbage a later full read skips."""
        calls = [partial(self._quietly, "DeleteItem", self.client.delete_item,
                         {"TableName": self.table,
                          "Key": {"shard": pk, "window": {"S": f"{log_prefix(m, i)}{p:03d}"}}})
                 for m, i, count in logs for p in range(count)]  # fmt: skip
        run_all(calls)
