"""``shardline rewind`` on the local servers (issue 15): a run, a rewind of its checkpoints to
a time in the middle of the stream, a second run that reprocesses exactly the records that
arrived since then, into idempotent sinks (the archive holds the same records); a rewind
refused while a worker holds leases, and one forced, after which that worker can no longer
checkpoint. The AWS path is checked on its templates (and, where moto can, its change sets).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from deploy.local.readback import archive_lines
from deploy.ops.rewind import mapping_change_sets
from stream.esm.checkpoints import LeaseLost, LeaseTable
from tests.integration.test_run import (
    FUNCTION,
    Pipeline,
    local_env,  # noqa: F401  # a fixture: the in-process handlers' sinks reach moto
    local_run,
    make_pipeline,
    run_until_idle,
)

if TYPE_CHECKING:
    from collections.abc import Callable

# the in-process handlers' sinks reach moto through the environment (local_env)
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("local_env")]

SHARDLINE = str(Path(sys.executable).with_name("shardline"))
ROOT = Path(__file__).resolve().parents[2]  # the probe processor is tests.integration's


def shardline(folder: Path, endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1", "PYTHONPATH": str(ROOT)}  # fmt: skip
    return subprocess.run(
        [SHARDLINE, *args, "--endpoint-url", endpoint],
        capture_output=True, text=True, cwd=folder, env=env, check=False, timeout=300,
    )  # fmt: skip


def arrivals(aws: Callable[[str], Any], pipeline: Pipeline) -> list[tuple[datetime, int]]:
    """Every record of the stream: (arrival time, n), in arrival order."""
    kinesis = aws("kinesis")
    out = []
    for shard in kinesis.list_shards(StreamName=pipeline.stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=pipeline.stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        records = kinesis.get_records(ShardIterator=iterator, Limit=10_000)["Records"]
        out += [(r["ApproximateArrivalTimestamp"], json.loads(r["Data"])["n"]) for r in records]
    return sorted(out)


def middle(times: list[tuple[datetime, int]]) -> datetime:
    """A time strictly between two arrivals near the middle of the stream."""
    half = len(times) // 2
    for i in range(half, len(times)):
        if times[i][0] > times[i - 1][0]:
            return times[i - 1][0] + (times[i][0] - times[i - 1][0]) / 2
    pytest.fail("every record arrived at the same time")


def archived(aws: Callable[[str], Any], pipeline: Pipeline) -> set[tuple[str, str]]:
    lines = archive_lines(aws("s3"), pipeline.name, "raw/")
    return {(line["_shard"], line["_sequence"]) for line in lines}


@pytest.fixture
def ran(aws: Callable[[str], Any], tmp_path: Path, unique: str) -> Pipeline:
    """A two-shard pipeline whose 40 records were all processed by one run."""
    pipeline = make_pipeline(aws, tmp_path, f"rw-{unique}", shards=2)
    for _ in range(4):  # four puts: arrival times differ between them
        pipeline.produce(aws, keys=5, per_key=2)
    run_until_idle(local_run(pipeline, aws, tmp_path))
    assert {int(line.n) for line in pipeline.delivered()} == set(range(40))
    return pipeline


def test_a_rewound_run_reprocesses_exactly_the_records_since_then(
    ran: Pipeline, aws: Callable[[str], Any], tmp_path: Path, moto_endpoint: str
) -> None:
    """The rewind says what it will reprocess; the second run delivers each record that
    arrived since T once, and no other; the archive holds the same records; the checkpoints
    end where the first run left them."""
    before = archived(aws, ran)
    checkpoints = {s: lease.checkpoint for s, lease in ran.leases(aws).items()}
    times = arrivals(aws, ran)
    at = middle(times)
    expected = {n for when, n in times if when >= at}
    assert 0 < len(expected) < 40
    first_run = len(ran.delivered())

    done = shardline(tmp_path, moto_endpoint, "rewind", str(ran.file), "--function", FUNCTION,
                     "--to", at.astimezone(UTC).isoformat(), "--yes", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["rewound"] is True
    assert summary["records"] == len(expected)
    assert {s["shard_id"] for s in summary["shards"] if s["moves"]} == set(summary["moved"])

    run_until_idle(local_run(ran, aws, tmp_path))
    again = [int(line.n) for line in ran.delivered()[first_run:]]
    assert sorted(again) == sorted(expected)  # each once: no more, no less
    assert archived(aws, ran) == before
    assert {s: lease.checkpoint for s, lease in ran.leases(aws).items()} == checkpoints


def test_rewind_refuses_while_a_worker_holds_leases_and_force_fences_it(
    ran: Pipeline, aws: Callable[[str], Any], tmp_path: Path, moto_endpoint: str
) -> None:
    """A held lease stops the rewind, saying to stop `run` first, and changes nothing; with
    --force the rewind goes through and the holder can no longer checkpoint over it."""
    worker = LeaseTable(ran.lease_table, "w-live", client=aws("dynamodb"))
    held = worker.take()
    assert held
    checkpoints = {s: lease.checkpoint for s, lease in ran.leases(aws).items()}
    at = middle(arrivals(aws, ran)).astimezone(UTC).isoformat()
    args = ("rewind", str(ran.file), "--function", FUNCTION, "--to", at, "--yes")

    refused = shardline(tmp_path, moto_endpoint, *args)
    assert refused.returncode == 1
    assert "stop `shardline run`" in refused.stderr.lower()
    assert "--force" in refused.stderr
    assert {s: lease.checkpoint for s, lease in ran.leases(aws).items()} == checkpoints

    forced = shardline(tmp_path, moto_endpoint, *args, "--force")
    assert forced.returncode == 0, forced.stderr
    rewound = ran.leases(aws)
    moved = [s for s, lease in rewound.items() if lease.checkpoint != checkpoints[s]]
    assert moved
    assert all(lease.owner is None for lease in rewound.values())
    lease = next(x for x in held if x.shard_id == moved[0])
    with pytest.raises(LeaseLost):
        worker.checkpoint(lease, checkpoints[lease.shard_id])
    assert ran.leases(aws)[lease.shard_id].checkpoint == rewound[lease.shard_id].checkpoint


def test_rewind_of_a_function_that_never_ran_says_so(
    aws: Callable[[str], Any], tmp_path: Path, moto_endpoint: str, unique: str
) -> None:
    pipeline = make_pipeline(aws, tmp_path, f"rw-{unique}", shards=1)
    done = shardline(tmp_path, moto_endpoint, "rewind", str(pipeline.file), "--function",
                     FUNCTION, "--to", "1h", "--yes")  # fmt: skip
    assert done.returncode == 1
    assert "has not run here yet" in done.stderr


class TestMappingChangeSets:
    """The AWS path at the template level: the mapping leaves, then returns at the time."""

    TEMPLATE: dict[str, Any] = {  # noqa: RUF012
        "Resources": {
            "MainFunction": {"Type": "AWS::Lambda::Function", "Properties": {}},
            "MainMapping": {
                "Type": "AWS::Lambda::EventSourceMapping",
                "Properties": {
                    "FunctionName": {"Ref": "MainFunction"},
                    "StartingPosition": "TRIM_HORIZON",
                    "BatchSize": 100,
                },
            },
        },
        "Outputs": {
            "MainMappingId": {"Value": {"Ref": "MainMapping"}},
            "MainFunctionName": {"Value": {"Ref": "MainFunction"}},
        },
    }

    def test_first_without_the_mapping_then_with_it_at_the_timestamp(self) -> None:
        without, again = mapping_change_sets(self.TEMPLATE, "MainMapping", 1_767_225_600.0)
        assert set(without["Resources"]) == {"MainFunction"}
        assert set(without["Outputs"]) == {"MainFunctionName"}
        assert set(again["Resources"]) == {"MainFunction", "MainMappingAt1767225600"}
        props = again["Resources"]["MainMappingAt1767225600"]["Properties"]
        assert props["StartingPosition"] == "AT_TIMESTAMP"
        assert props["StartingPositionTimestamp"] == 1_767_225_600.0
        assert props["BatchSize"] == 100
        assert again["Outputs"]["MainMappingId"] == {"Value": {"Ref": "MainMappingAt1767225600"}}
        assert self.TEMPLATE["Resources"]["MainMapping"]["Properties"]["StartingPosition"] == (
            "TRIM_HORIZON"
        )  # the deployed template is not changed in place

    def test_a_later_deploy_keeps_the_rewound_position(self) -> None:
        from deploy.aws.cloudformation import keep_rewinds  # noqa: PLC0415

        _, again = mapping_change_sets(self.TEMPLATE, "MainMapping", 1_767_225_600.0)
        redeployed = keep_rewinds(self.TEMPLATE, again)
        assert redeployed == again

    def test_a_second_rewind_replaces_the_first(self) -> None:
        _, first = mapping_change_sets(self.TEMPLATE, "MainMapping", 1_000.0)
        without, second = mapping_change_sets(first, "MainMapping", 2_000.0)
        assert set(without["Resources"]) == {"MainFunction"}
        assert set(second["Resources"]) == {"MainFunction", "MainMappingAt2000"}

    def test_an_interrupted_rewind_is_finished_from_what_the_stack_records(self) -> None:
        """The first template records the mapping it removes; from that alone (the file's
        template is not needed) one template puts it back at the new time, outputs and all,
        and drops the record."""
        from deploy.ops.rewind import pending_rewind, resume_change_set  # noqa: PLC0415

        without, _ = mapping_change_sets(self.TEMPLATE, "MainMapping", 1_000.0)
        assert pending_rewind(without, "MainMapping") is not None
        assert pending_rewind(self.TEMPLATE, "MainMapping") is None

        finished = resume_change_set(without, "MainMapping", 2_000.0)

        assert set(finished["Resources"]) == {"MainFunction", "MainMappingAt2000"}
        props = finished["Resources"]["MainMappingAt2000"]["Properties"]
        assert (props["StartingPosition"], props["StartingPositionTimestamp"]) == (
            "AT_TIMESTAMP", 2_000.0,
        )  # fmt: skip
        assert props["BatchSize"] == 100
        assert finished["Outputs"]["MainMappingId"] == {"Value": {"Ref": "MainMappingAt2000"}}
        assert "Metadata" not in finished
