"""Why ``validate`` warns about ``{now:FMT}`` in sink names (deploy.pipeline.braces.clock_problem):
a record delivered again an hour later is archived a second time under another key with
``{now:...}``, and onto its first copy with ``{arrival:...}``, which ``validate`` proposes."""

from __future__ import annotations

from typing import Any

import pytest

from deploy.pipeline.config import parse_config
from sinks.base import Status
from sinks.s3 import S3Sink
from stream.event import records_from_event
from stream.testing import EventFactory

pytestmark = pytest.mark.integration

PIPELINE = """\
name: shop
stream: {name: shop-events}
sinks:
  archive: {type: s3, bucket: shop-archive, partition: "hour={SOURCE:%H}"}
functions:
  main: {route: [archive]}
"""


def _keys(s3: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def _deliver_twice(s3: Any, bucket: str, source: str) -> list[str]:
    """One batch written, then delivered again an hour later (Lambda's retry after a
    partial failure, or a late batch of a worker that lost its lease)."""
    clock = [1_767_225_600.0]  # 2026-01-01T00:00:00Z
    sink = S3Sink(
        "archive", bucket=bucket, partition=f"hour={{{source}:%H}}", client=s3,
        now=lambda: clock[0],
    )  # fmt: skip
    event = EventFactory().batch([("u1", {"n": 1}), ("u2", {"n": 2})])
    for _ in range(2):
        outcomes = sink.write_batch(records_from_event(event))
        assert {o.status for o in outcomes} == {Status.OK}
        clock[0] += 3600
    return _keys(s3, bucket)


def test_now_in_a_partition_archives_a_redelivered_batch_twice(aws: Any, unique: str) -> None:
    s3 = aws("s3")
    s3.create_bucket(Bucket=f"now-{unique}")
    keys = _deliver_twice(s3, f"now-{unique}", "now")
    assert len(keys) == 2  # two objects, the same two records in each
    (note,) = parse_config(PIPELINE.replace("SOURCE", "now"), source="pipeline.yaml").notes
    assert note.path == "sinks.archive.partition"
    assert note.message.startswith("'{now:%H}' renders the time of the write")


def test_arrival_in_a_partition_archives_a_redelivered_batch_once(aws: Any, unique: str) -> None:
    s3 = aws("s3")
    s3.create_bucket(Bucket=f"arrival-{unique}")
    assert len(_deliver_twice(s3, f"arrival-{unique}", "arrival")) == 1
    assert parse_config(PIPELINE.replace("SOURCE", "arrival"), source="pipeline.yaml").notes == ()
