"""A pipeline with every sink type, run by the Lambda handler in a fresh process against the
local servers: records land where the routes send them, the poison record reaches the
dead-letter queue with its reason, and a redelivered batch changes no keyed store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from deploy.local.readback import archive_lines, dead_letters, search_count, table_items
from deploy.local.servers import provision
from deploy.pipeline.config import load_plan_from_file
from stream.testing import EventFactory

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

PIPELINE = """\
name: allsinks
stream:
  name: ${PREFIX}-events
  aggregated: true
sinks:
  orders: {type: dynamodb, table: "${PREFIX}-orders", key: order_id, mode: latest}
  history: {type: dynamodb, table: "${PREFIX}-history", key: user_id, mode: append}
  search:
    type: opensearch
    endpoint: ${OPENSEARCH_URL}
    index: "${PREFIX}-events-{arrival:%Y.%m.%d}"
    auth: none
  archive: {type: s3, bucket: "${PREFIX}-archive", prefix: raw/, partition: "dt={arrival:%Y-%m-%d}"}
  next: {type: kinesis, stream: "${PREFIX}-stage-2", partition_key: user_id}
  dlq: {type: sqs, queue: "${PREFIX}-dlq"}
functions:
  main:
    ordering: per_key
    on_failure: dlq
    processors:
      - filter:
          match: {event_type: [click, purchase]}
      - enrich:
          lookup: {table: "${PREFIX}-users", key: user_id, into: user, on_miss: keep}
      - route:
          - when: {event_type: [purchase]}
            to: [orders, history, search, next]
          - default: [search, archive]
"""


def make_event() -> tuple[dict[str, Any], dict[str, int]]:
    """60 user records (clicks, views, purchases of 6 users; one KPL aggregate) and a
    record that is not JSON; the expected counts."""
    f = EventFactory(stream="allsinks-events", shard_id="shardId-000000000000")
    entries = []
    kinds = ["click", "view", "purchase"]
    docs = [
        {"event_id": f"e{i}", "event_type": kinds[i % 3], "user_id": f"u{i % 6}"}
        | ({"order_id": f"o{i // 2}", "amount": i} if i % 3 == 2 else {})
        for i in range(60)
    ]
    for d in docs[:50]:
        entries.append(f.record(d, d["user_id"]))
    entries.append(f.aggregate([(d["user_id"], orjson.dumps(d)) for d in docs[50:]]))
    entries.insert(7, f.raw(b"GET /index.html HTTP/1.1", "u1"))
    purchases = [d for d in docs if d["event_type"] == "purchase"]
    clicks = [d for d in docs if d["event_type"] == "click"]
    expected = {
        "orders": len({d["order_id"] for d in purchases}),
        "history": len(purchases),
        "search": len(purchases) + len(clicks),
        "archive": len(clicks),
        "next": len(purchases),
    }
    return f.event(entries), expected


def run_handler(plan_file: Path, event_file: Path, env: dict[str, str]) -> dict[str, Any]:
    """One cold start and one invocation of ``stream.lambda_handler.handler``."""
    code = (
        "import json, sys; from stream.lambda_handler import handler; "
        "print(json.dumps(handler(json.load(open(sys.argv[1])), None)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(event_file)],
        env={**os.environ, **env, "SHARDLINE_PIPELINE": str(plan_file),
             "SHARDLINE_FUNCTION": "main", "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def stream_records(kinesis: Any, stream: str) -> list[dict[str, Any]]:
    """Every record of every shard of ``stream``, from the start."""
    out = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = kinesis.get_records(ShardIterator=iterator, Limit=1000)
            out += page["Records"]
            if not page["Records"]:
                break
            iterator = page.get("NextShardIterator")
    return out


class TestAllSinks:
    def test_records_land_by_route_and_the_poison_record_is_dead_lettered(
        self,
        aws: Callable[[str], Any],
        moto_endpoint: str,
        opensearch_endpoint: str,
        unique: str,
        tmp_path: Path,
    ):
        prefix = f"all-{unique}"
        env = {
            "PREFIX": prefix,
            "OPENSEARCH_URL": opensearch_endpoint,
            "AWS_ENDPOINT_URL": moto_endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }
        (tmp_path / "pipeline.yaml").write_text(PIPELINE)
        plan = load_plan_from_file(tmp_path / "pipeline.yaml", env=env)
        plan_file = tmp_path / "plan.json"
        plan_file.write_bytes(orjson.dumps(plan))
        provision(plan, aws)
        ddb = aws("dynamodb")
        for n in range(4):  # users u0..u3 exist; u4 and u5 are misses, kept as they are
            ddb.put_item(
                TableName=f"{prefix}-users",
                Item={"user_id": {"S": f"u{n}"}, "tier": {"S": "gold"}},
            )
        event, expected = make_event()
        event_file = tmp_path / "event.json"
        event_file.write_bytes(orjson.dumps(event))

        assert run_handler(plan_file, event_file, env) == {"batchItemFailures": []}

        def stored() -> dict[str, int]:
            return {
                "orders": len(table_items(ddb, f"{prefix}-orders")),
                "history": len(table_items(ddb, f"{prefix}-history")),
                "search": search_count(opensearch_endpoint, f"{prefix}-events-*"),
                "archive": len(archive_lines(aws("s3"), f"{prefix}-archive", "raw/")),
                "next": len(stream_records(aws("kinesis"), f"{prefix}-stage-2")),
            }

        assert stored() == expected
        orders = {i["order_id"]["S"]: i for i in table_items(ddb, f"{prefix}-orders")}
        assert orders["o1"]["user"]["M"]["tier"] == {"S": "gold"}  # o1 is u2's: found
        assert "user" not in orders["o2"]  # o2 is u5's: a miss, kept unchanged

        (letter,) = dead_letters(aws("sqs"), f"{prefix}-dlq")
        assert letter["step"] == "processors[0].filter"
        assert letter["error"] == "DecodeError"
        assert "not JSON" in letter["reason"]
        assert letter["data_base64"] == "R0VUIC9pbmRleC5odG1sIEhUVFAvMS4x"
        assert letter["function"] == "main"

        # Lambda redelivers the whole batch: keyed stores and the archive do not change;
        # Kinesis and a standard queue are at-least-once and receive the records again.
        objects_before = sorted(
            o["ETag"] for o in aws("s3").list_objects_v2(Bucket=f"{prefix}-archive")["Contents"]
        )
        assert run_handler(plan_file, event_file, env) == {"batchItemFailures": []}
        again = stored()
        assert {k: again[k] for k in ("orders", "history", "search", "archive")} == {
            k: expected[k] for k in ("orders", "history", "search", "archive")
        }
        objects_after = sorted(
            o["ETag"] for o in aws("s3").list_objects_v2(Bucket=f"{prefix}-archive")["Contents"]
        )
        assert objects_after == objects_before
        assert again["next"] == 2 * expected["next"]
