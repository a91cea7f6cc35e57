"""Enhanced fan-out locally, against the session moto server: a ``consumer: efo`` function
registers its consumer (moto has RegisterStreamConsumer, not SubscribeToShard) and reads with
a budget of its own, while the shared functions split each shard's 5 reads/s and 2 MB/s.

Ground truth is the server's list of consumers and the records each function was invoked with
(the mappings' counters of records read and batches that succeeded).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from deploy.local.run import LocalRun
from deploy.local.servers import provision
from deploy.pipeline.config import load_plan_from_file
from stream.aws import reset_clients
from stream.producer import Producer

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

pytestmark = pytest.mark.integration

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}

PIPELINE = """\
name: {name}
stream: {{name: {name}, mode: provisioned, shards: 1, encryption: none}}
sinks:
  drop: {{type: discard}}
functions:
  first: {{route: [drop]}}
  second: {{route: [drop]}}
  fanout:
    batch: {{consumer: efo}}
    route: [drop]
"""


@pytest.fixture
def local_env(monkeypatch: pytest.MonkeyPatch, moto_endpoint: str) -> None:
    for name, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": moto_endpoint}.items():
        monkeypatch.setenv(name, value)
    reset_clients()


def _plan(aws: Callable[[str], Any], folder: Path, name: str) -> dict[str, Any]:
    file = folder / "pipeline.yaml"
    file.write_text(PIPELINE.format(name=name))
    plan = load_plan_from_file(file)
    provision(plan, aws, shards=1)
    aws("kinesis").get_waiter("stream_exists").wait(StreamName=name)
    return plan


def _run_until_idle(local: LocalRun, timeout: float = 30) -> None:
    stop = threading.Event()
    timer = threading.Timer(timeout, stop.set)
    timer.daemon = True
    timer.start()
    start = time.monotonic()
    try:
        local.run(stop, until_idle_s=0.5)
    finally:
        timer.cancel()
    assert time.monotonic() - start < timeout, f"the run was not idle within {timeout} s"


class TestEnhancedFanOutLocally:
    def test_the_efo_function_registers_its_consumer_and_keeps_its_own_budget(
        self, aws: Callable[[str], Any], local_env: None, unique: str, tmp_path: Path
    ) -> None:
        """Two shared functions split the shard's budget (share 2); the EFO one has its own
        (share 1) through a consumer named like the Lambda function, registered once even
        when the run is built again; every function reads every record."""
        name = f"efo-{unique}"
        plan = _plan(aws, tmp_path, name)
        with Producer(name, aws("kinesis"), sleep=lambda _: None) as producer:
            for n in range(50):
                producer.put({"n": n}, partition_key=f"k{n % 5}")

        def local() -> LocalRun:
            return LocalRun(
                plan, worker_id="w1", in_process=True, client=aws,
                state_dir=tmp_path / ".shardline",
            )  # fmt: skip

        run = local()
        runs = {r.name: r for r in run.build()}
        assert {n: r.mapping.share for n, r in runs.items()} == {
            "first": 2,
            "second": 2,
            "fanout": 1,
        }
        kinesis = aws("kinesis")
        stream_arn = kinesis.describe_stream_summary(StreamName=name)[
            "StreamDescriptionSummary"
        ]["StreamARN"]
        consumers = kinesis.list_stream_consumers(StreamARN=stream_arn)["Consumers"]
        assert [c["ConsumerName"] for c in consumers] == [f"{name}-fanout"]
        assert run.consumer_arns == {"fanout": consumers[0]["ConsumerARN"]}

        _run_until_idle(run)
        for r in run.runs:
            assert r.stats is not None
            assert r.stats.records_in == 50, r.name
            assert r.stats.batches_failed == 0, r.name

        again = local()
        again.build()
        again.close()
        assert again.consumer_arns == run.consumer_arns
        assert len(kinesis.list_stream_consumers(StreamARN=stream_arn)["Consumers"]) == 1


class TestEnhancedFanOutInDev:
    def test_dev_deploys_an_efo_function_and_runs_it_with_its_own_budget(
        self,
        aws: Callable[[str], Any],
        local_env: None,
        unique: str,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """moto's CloudFormation has no StreamConsumer: dev deploys the mapping on the
        stream, registers the consumer itself, and runs the function as EFO (share 1) with
        the deployed settings, the shared ones splitting the shard (share 2)."""
        from deploy.local.dev import run_dev  # noqa: PLC0415

        monkeypatch.chdir(tmp_path)
        name = f"dev-{unique}"
        file = tmp_path / "pipeline.yaml"
        file.write_text(PIPELINE.format(name=name))
        plan = load_plan_from_file(file)
        (tmp_path / "events.jsonl").write_text("".join(f'{{"n": {n}}}\n' for n in range(20)))

        report = run_dev(
            plan, aws, produce=tmp_path / "events.jsonl", key="n", until_idle=1.0,
            in_process=True,
        )  # fmt: skip

        assert report.deployed is not None
        assert {r.name: (r.mapping.share, r.mapping.stats.records_in) for r in report.runs} == {
            "first": (2, 20), "second": (2, 20), "fanout": (1, 20),
        }  # fmt: skip
        kinesis = aws("kinesis")
        stream_arn = kinesis.describe_stream_summary(StreamName=name)[
            "StreamDescriptionSummary"
        ]["StreamARN"]
        consumers = kinesis.list_stream_consumers(StreamARN=stream_arn)["Consumers"]
        assert [c["ConsumerName"] for c in consumers] == [f"{name}-fanout"]
