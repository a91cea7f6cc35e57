"""The event Lambda hands the handler and the response it returns, as ``TypedDict`` shapes.

They live here, not in :mod:`stream.event` and :mod:`stream.batch` where they belong by
meaning, because a ``TypedDict`` needs :mod:`typing`, two milliseconds of a cold start that
nothing else on the handler's import path needs (ARCHITECTURE.md). Those modules name them
for type checkers and still give them at run time (``from stream.event import KinesisEvent``
works), loading this module on first use.
"""

from __future__ import annotations

from typing import TypedDict

__all__ = [
    "BatchItemFailure",
    "BatchResponse",
    "FlushEvent",
    "FlushResponse",
    "KinesisEvent",
    "KinesisEventRecord",
    "KinesisPayload",
]


class KinesisPayload(TypedDict, total=False):
    """The ``kinesis`` member of an event record, as Lambda sends it."""

    kinesisSchemaVersion: str
    partitionKey: str
    sequenceNumber: str
    data: str
    approximateArrivalTimestamp: float


class KinesisEventRecord(TypedDict, total=False):
    """One entry of ``Records`` in a Lambda Kinesis event."""

    kinesis: KinesisPayload
    eventSource: str
    eventVersion: str
    eventID: str
    eventName: str
    invokeIdentityArn: str
    awsRegion: str
    eventSourceARN: str


class KinesisEvent(TypedDict):
    """A Lambda Kinesis event: one shard's batch."""

    Records: list[KinesisEventRecord]


class BatchItemFailure(TypedDict):
    """One entry of ``batchItemFailures``."""

    itemIdentifier: str


class BatchResponse(TypedDict):
    """The handler's response with ``ReportBatchItemFailures`` on."""

    batchItemFailures: list[BatchItemFailure]


class FlushEvent(TypedDict):
    """A scheduled window flush (:mod:`stream.flush`): the constant input of the function's
    EventBridge rule, or what ``shardline run``'s ticker and ``shardline flush`` send."""

    shardline: str  # "flush"
    version: int  # 1
    function: str


class FlushResponse(TypedDict):
    """What a flush returns (EventBridge discards it; ``shardline flush`` and tests read it).

    ``windows``: result documents sent on (re-sent pending ones included); ``emitted``:
    emissions sent on; ``pending``: those of them left pending for the next flush (a
    record failed retryably).
    """

    shardline: str
    function: str
    windows: int
    emitted: int
    pending: int
