"""Which shards a shard was made from: what the ``window`` step needs across a reshard.

A Kinesis event names its shard but not that shard's parents, and a child shard's windows
start from its parents' (README, "Windows": reshards). :class:`KinesisLineage` asks
``ListShards`` once for a shard it does not know yet (a warm container keeps the answer:
parents never change) and answers from the list for every shard of the stream; a shard the
list shows without children is asked about again once the list is a minute old (it may
have been split since). A shard
missing from the list (past the stream's retention) has no parents: its windows closed long
ago; so has every shard of a stream that does not exist (an event made by hand).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

from processors.errors import ProcessorError
from stream.exceptions import RetryableError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["KinesisLineage", "Lineage", "LineageError", "StaticLineage", "stream_name"]


class Lineage(Protocol):
    """A stream's shards' parents and children."""

    def parents(self, arn: str, shard_id: str) -> tuple[str, ...]:
        """The shard's parents: none; one after a split; two after a merge."""

    def children(self, arn: str, shard_id: str) -> tuple[str, ...]:
        """The shards made from this one (two after a split, one after a merge)."""


class LineageError(ProcessorError, RetryableError):
    """ListShards failed: the batch is delivered again (its windows need the answer)."""


def stream_name(arn: str) -> str:
    """The stream's name in its ARN (``ListShards`` takes it on every Kinesis version).

    >>> stream_name("arn:aws:kinesis:eu-west-1:123456789012:stream/shop-events")
    'shop-events'
    """
    return arn.rpartition(":stream/")[2] or arn


class KinesisLineage:
    """Parents from ``ListShards``, listed again for a shard not seen yet, and for the
    children of a shard that had none when last listed, once the list is ``max_age_s`` old.

    Parents never change, children may come later: a shard split after the list was made
    has children the list does not show. A window inherited from a common parent waits for
    every heir (:meth:`processors.window.Window._heirs_floor`); a sibling taken for
    childless would count as an heir once drained and quiet, and the window could close
    while its grandchildren may still add to it. ``max_age_s`` (60) is well under the
    ``quiet_s`` after which a drained shard counts as progressing (300 by default).

    Args:
        client: a Kinesis client; default the process's shared one (:mod:`stream.aws`).
        max_age_s: how old a list may be before "no children" is asked again.
        now: the clock.
    """

    __slots__ = ("_client", "_listed_at", "_now", "calls", "listed", "max_age_s")

    def __init__(
        self,
        client: Any = None,
        max_age_s: float = 60.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self.max_age_s = max_age_s
        self._now = now
        #: stream ARN -> shard id -> parents, as last listed
        self.listed: dict[str, dict[str, tuple[str, ...]]] = {}
        self._listed_at: dict[str, float] = {}
        #: ListShards pages asked for (tests and the bench)
        self.calls = 0

    def parents(self, arn: str, shard_id: str) -> tuple[str, ...]:
        return self._known(arn, shard_id).get(shard_id, ())

    def children(self, arn: str, shard_id: str) -> tuple[str, ...]:
        known = self._known(arn, shard_id)
        found = tuple(s for s, parents in known.items() if shard_id in parents)
        if found or not arn or self._now() - self._listed_at[arn] < self.max_age_s:
            return found
        known = self._relist(arn)  # split since the list was made?
        return tuple(s for s, parents in known.items() if shard_id in parents)

    def _known(self, arn: str, shard_id: str) -> dict[str, tuple[str, ...]]:
        if not arn:  # a record that names no stream (a hand-made event): nothing to ask
            return {}
        known = self.listed.get(arn)
        if known is None or shard_id not in known:
            known = self._relist(arn)
        return known

    def _relist(self, arn: str) -> dict[str, tuple[str, ...]]:
        known = self.listed[arn] = self._list(arn)
        self._listed_at[arn] = self._now()
        return known

    def _list(self, arn: str) -> dict[str, tuple[str, ...]]:
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        if self._client is None:
            from stream.aws import aws_client  # noqa: PLC0415  # boto3 on first use

            self._client = aws_client("kinesis")
        out: dict[str, tuple[str, ...]] = {}
        request: dict[str, Any] = {"StreamName": stream_name(arn)}
        try:
            while True:
                self.calls += 1
                page = self._client.list_shards(**request)
                for shard in page.get("Shards", []):
                    parents = (shard.get("ParentShardId"), shard.get("AdjacentParentShardId"))
                    out[shard["ShardId"]] = tuple(p for p in parents if p)
                token = page.get("NextToken")
                if not token:
                    return out
                request = {"NextToken": token}
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return out  # no such stream (a hand-made event): no shard has parents
            msg = f"window: ListShards of {stream_name(arn)!r} (a new shard's parents): {exc}"
            raise LineageError(msg) from exc
        except BotoCoreError as exc:
            msg = f"window: ListShards of {stream_name(arn)!r} (a new shard's parents): {exc}"
            raise LineageError(msg) from exc


class StaticLineage:
    """Parents given up front, for every stream: tests, and ``state: memory`` without a
    stream (``shardline test``: no shard has parents).

    >>> lineage = StaticLineage({"s1": ("s0",), "s2": ("s0",)})
    >>> lineage.parents("", "s1"), lineage.children("", "s0")
    (('s0',), ('s1', 's2'))
    """

    __slots__ = ("_parents",)

    def __init__(self, parents: Mapping[str, tuple[str, ...]] | None = None) -> None:
        self._parents = dict(parents or {})

    def parents(self, arn: str, shard_id: str) -> tuple[str, ...]:
        return self._parents.get(shard_id, ())

    def children(self, arn: str, shard_id: str) -> tuple[str, ...]:
        return tuple(sorted(s for s, ps in self._parents.items() if shard_id in ps))
