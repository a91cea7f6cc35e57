"""Which shards a shard was made from: what the ``window`` step needs across a reshard.

A Kinesis event names its shard but not that shard's parents, and a child shard's windows
start from its parents' (README, "Windows": reshards). :class:`KinesisLineage` asks
``ListShards`` once for a shard it does not know yet (a warm container keeps the answer:
parents never change) and answers from the list for every shard of the stream. A shard
missing from the list (past the stream's retention) has no parents: its windows closed long
ago.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from processors.errors import ProcessorError
from stream.exceptions import RetryableError

__all__ = ["KinesisLineage", "Lineage", "LineageError", "no_lineage", "stream_name"]

#: ``(stream ARN, shard id) -> its parent shard ids`` (none; one after a split; two after
#: a merge).
Lineage = Callable[[str, str], tuple[str, ...]]


class LineageError(ProcessorError, RetryableError):
    """ListShards failed: the batch is delivered again (its windows need the answer)."""


def stream_name(arn: str) -> str:
    """The stream's name in its ARN (``ListShards`` takes it on every Kinesis version).

    >>> stream_name("arn:aws:kinesis:eu-west-1:123456789012:stream/shop-events")
    'shop-events'
    """
    return arn.rpartition(":stream/")[2] or arn


class KinesisLineage:
    """Parents from ``ListShards``, listed again only for a shard not seen yet.

    Args:
        client: a Kinesis client; default the process's shared one (:mod:`stream.aws`).
    """

    __slots__ = ("_client", "calls", "parents")

    def __init__(self, client: Any = None) -> None:
        self._client = client
        #: stream ARN -> shard id -> parents, as last listed
        self.parents: dict[str, dict[str, tuple[str, ...]]] = {}
        #: ListShards pages asked for (tests and the bench)
        self.calls = 0

    def __call__(self, arn: str, shard_id: str) -> tuple[str, ...]:
        if not arn:  # a record that names no stream (a hand-made event): nothing to ask
            return ()
        known = self.parents.get(arn)
        if known is None or shard_id not in known:
            known = self.parents[arn] = self._list(arn)
        return known.get(shard_id, ())

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
        except (BotoCoreError, ClientError) as exc:
            msg = f"window: ListShards of {stream_name(arn)!r} (a new shard's parents): {exc}"
            raise LineageError(msg) from exc


def no_lineage(arn: str, shard_id: str) -> tuple[str, ...]:
    """No parents for any shard (``state: memory`` without a stream, as in ``shardline test``)."""
    return ()
