"""deploy.ops.shards.to_records: GetRecords' records as the runtime's records, held for a
whole replay or redrive, so they keep no second (base64) copy of their data."""

from __future__ import annotations

import gc
import os
import tracemalloc
from datetime import UTC, datetime
from typing import Any

from deploy.ops.shards import to_records
from stream.records import Record

SHARD = "shardId-000000000007"


def _raws(n: int, size: int) -> list[dict[str, Any]]:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        {
            "Data": os.urandom(size),
            "PartitionKey": f"k{i}",
            "SequenceNumber": str(10**20 + i),
            "ApproximateArrivalTimestamp": at,
        }
        for i in range(n)
    ]


def test_records_have_their_position_and_keep_no_event_entry() -> None:
    raws = _raws(3, 16)
    records = to_records(raws, SHARD, "arn:aws:kinesis:us-east-1:1:stream/s")
    assert [type(r) for r in records] == [Record] * 3
    assert [r._entry for r in records] == [None] * 3
    assert [(r.partition_key, r.sequence_number, r.shard_id, r.data) for r in records] == [
        (raw["PartitionKey"], raw["SequenceNumber"], SHARD, raw["Data"]) for raw in raws
    ]
    assert records[0].event_source_arn == "arn:aws:kinesis:us-east-1:1:stream/s"
    assert records[0].arrival == datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def test_records_hold_about_their_data_only() -> None:
    """500 records of 10 KB hold ~5 MB; keeping the event entries held ~2.3 times that."""
    raws = _raws(500, 10_000)
    data = sum(len(raw["Data"]) for raw in raws)
    gc.collect()
    tracemalloc.start()
    try:
        records = to_records(raws, SHARD)
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(records) == 500
    assert held < 1.3 * data, f"{held / data:.2f} times the data"
