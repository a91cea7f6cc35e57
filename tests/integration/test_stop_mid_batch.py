"""A run stopped (its stop event set) while a batch is half-written to two sinks: the SQS
queue has it, the S3 archive's PutObject is still held by :class:`tests.faultproxy.FaultProxy`.

:class:`deploy.local.run.LocalRun` in this thread, against the session moto server; the
archive's client goes through the proxy (``AWS_ENDPOINT_URL_S3``). The promise under test
(``EventSourceMapping.run``): no new batch starts after the stop, the batch in flight is
completed and its result applied, the checkpoint covers exactly what both sinks hold, and a
second run delivers the rest, so each record is in both sinks, lost nowhere.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest

from deploy.local.readback import archive_lines
from deploy.local.run import LocalRun
from deploy.local.servers import provision
from deploy.pipeline.config import load_plan_from_file
from stream.aws import reset_clients
from stream.producer import Producer
from tests.e2e.test_faults import local_env
from tests.faultproxy import S3_INTERNAL, FaultProxy, Request, slow, sqs_batch_failures
from tests.integration.test_run import (
    Pipeline,
    first_order,
    put_order,
    run_until_idle,
    wait_until,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

pytestmark = pytest.mark.integration

__all__ = ["local_env"]  # a fixture, defined with the e2e faults

PIPELINE = """\
name: {name}
stream: {{name: {name}, mode: provisioned, shards: 1, encryption: none}}
sinks:
  archive: {{type: s3, bucket: {name}, prefix: raw/, compression: none}}
  queue: {{type: sqs, queue: {name}-out}}
functions:
  main:
    batch: {{size: 50, window_s: 0, starting_position: trim_horizon}}
    processors:
      - use: "tests.integration.order_probe:Probe"
        with: {{path: "{probe}"}}
    route: [archive, queue]
"""


@pytest.fixture
def pipeline(aws: Callable[[str], Any], tmp_path: Path, local_env: None) -> Pipeline:
    name = f"stop-{uuid.uuid4().hex[:10]}"
    probe, file = tmp_path / "probe.tsv", tmp_path / "pipeline.yaml"
    file.write_text(PIPELINE.format(name=name, probe=probe))
    plan = load_plan_from_file(file)
    provision(plan, aws, shards=1)
    aws("kinesis").get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 50}
    )
    return Pipeline(name, file, probe, plan)


@pytest.fixture
def proxy(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, local_env: None
) -> Iterator[FaultProxy]:
    with FaultProxy(moto_endpoint, seed=2) as p:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", p.url)
        reset_clients()
        yield p


def local_run(pipeline: Pipeline, aws: Callable[[str], Any], folder: Path) -> LocalRun:
    return LocalRun(
        pipeline.plan, worker_id="w1", in_process=True, client=aws,
        state_dir=folder / ".shardline", lease_duration_s=3.0,
    )  # fmt: skip


def queued(aws: Callable[[str], Any], queue: str) -> list[dict[str, Any]]:
    """Every message in the queue (received, not deleted: they become visible again)."""
    sqs = aws("sqs")
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    bodies: list[dict[str, Any]] = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60)
        messages = got.get("Messages", [])
        if not messages:
            return bodies
        bodies += [json.loads(m["Body"]) for m in messages]


def waiting(aws: Callable[[str], Any], queue: str) -> int:
    """Messages in the queue, without receiving them."""
    sqs = aws("sqs")
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    names = ["ApproximateNumberOfMessages"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def archived(aws: Callable[[str], Any], pipeline: Pipeline) -> list[dict[str, Any]]:
    return list(archive_lines(aws("s3"), pipeline.name, "raw/"))


def is_put(request: Request) -> bool:
    return request.method == "PUT" and "/raw/" in request.path


@pytest.mark.parametrize("hold_s", [1.5], ids=["held-1.5s"])
def test_a_stop_while_the_archive_write_is_held_completes_the_batch_and_the_next_run_the_rest(
    aws, pipeline, proxy, tmp_path, hold_s
):
    pipeline.produce(aws, keys=10, per_key=10)  # 100 records: batches of 50
    stop = threading.Event()

    def held_put(request: Request) -> bool:
        """The write to hold, and the stop set as the proxy takes it: this thread, polling,
        may look only after the hold (a loaded machine; with 6 s between its looks the run
        had gone on to the next batch), the stop must come while the write is held."""
        if not is_put(request):
            return False
        stop.set()
        return True

    # held unanswered, then cut without reaching S3: the sink retries after the stop
    held = proxy.inject(slow(hold_s, forward=False), times=1, where=held_put)
    local = local_run(pipeline, aws, tmp_path)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            local.run(stop)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    thread = threading.Thread(target=target, name="stop-mid-batch", daemon=True)
    thread.start()
    try:
        wait_until("the archive write held", lambda: held.fired == 1, 60, lambda: repr(errors))
        assert stop.is_set()  # the queue has (or is getting) the batch; the archive does not
        thread.join(30)
    finally:
        stop.set()
    assert not thread.is_alive()
    assert not errors
    first = pipeline.delivered_ns()
    assert first == set(range(50))  # the batch in flight, and no batch after the stop
    at_stop = pipeline.leases(aws)
    (lease,) = at_stop.values()
    assert lease.owner is None  # released at the stop
    (end_of_batch,) = [p.sequence_number for p in pipeline.produced if p.n == 49]
    assert lease.checkpoint == end_of_batch  # the whole batch is done, nothing after it
    assert {int(line["n"]) for line in archived(aws, pipeline)} == first
    assert waiting(aws, f"{pipeline.name}-out") == len(first)  # read once, at the end

    run_until_idle(local_run(pipeline, aws, tmp_path))

    everything = set(range(100))
    lines = archived(aws, pipeline)
    assert sorted(int(line["n"]) for line in lines) == sorted(everything)  # each once
    messages = Counter(doc["n"] for doc in queued(aws, f"{pipeline.name}-out"))
    assert set(messages) == everything
    assert max(messages.values()) == 1
    delivered = pipeline.delivered()
    assert max(Counter(line.n for line in delivered).values()) == 1  # resumed after the stop
    assert first_order(delivered) == put_order(pipeline.produced)


def test_a_stop_while_the_archive_keeps_failing_leaves_the_batch_to_the_next_run(
    aws, pipeline, proxy, tmp_path
):
    """The archive answers 500 to every attempt of the batch in flight when the stop comes:
    its records are reported retryable, the retry is not started, the checkpoint stays
    before them and the lease is released. The next run delivers them again: the queue
    then holds the batch twice (a standard queue is at-least-once; readers de-duplicate
    by position), the archive once, and nothing is missing anywhere."""
    pipeline.produce(aws, keys=10, per_key=10)
    failing = proxy.inject(S3_INTERNAL, where=is_put)
    local = local_run(pipeline, aws, tmp_path)
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            local.run(stop)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    thread = threading.Thread(target=target, name="stop-mid-batch", daemon=True)
    thread.start()
    try:
        wait_until("the archive write failing", lambda: failing.fired >= 1, 60, repr)
        stop.set()
        thread.join(30)
    finally:
        stop.set()
    assert not thread.is_alive()
    assert not errors
    proxy.remove(failing)
    first = pipeline.delivered_ns()
    assert first == set(range(50))
    (lease,) = pipeline.leases(aws).values()
    assert (lease.owner, lease.checkpoint) == (None, "TRIM_HORIZON")  # nothing done
    assert archived(aws, pipeline) == []
    assert waiting(aws, f"{pipeline.name}-out") == 50

    run_until_idle(local_run(pipeline, aws, tmp_path))

    everything = set(range(100))
    lines = archived(aws, pipeline)
    assert sorted(int(line["n"]) for line in lines) == sorted(everything)
    messages = Counter(doc["n"] for doc in queued(aws, f"{pipeline.name}-out"))
    assert set(messages) == everything
    assert {n for n, count in messages.items() if count > 1} <= first
    assert first_order(pipeline.delivered()) == put_order(pipeline.produced)


DEAD_LETTERS = """\
name: {name}
stream: {{name: {name}, mode: provisioned, shards: 1, encryption: none}}
sinks:
  archive: {{type: s3, bucket: {name}, prefix: raw/, compression: none}}
  dlq: {{type: sqs, queue: {name}-dlq}}
functions:
  main:
    batch: {{size: 50, window_s: 0, starting_position: trim_horizon}}
    ordering: per_key
    on_failure: dlq
    processors:
      - use: "tests.integration.order_probe:Probe"
        with: {{path: "{probe}"}}
      - filter: {{expr: "v >= `0`"}}
    route: [archive]
"""


def letters(aws: Callable[[str], Any], queue: str) -> Counter[str]:
    """The dead letters in the queue, counted by the sequence number they carry."""
    return Counter(letter["sequence_number"] for letter in queued(aws, queue))


def test_a_stop_right_after_a_dead_letter_batch_partly_failed_loses_no_letter(
    aws, tmp_path, local_env, moto_endpoint, monkeypatch
):
    """Seven poison records (the filter raises on them) in the first batch; SQS reports
    one of their letters ``Failed`` (retryable, not sent) on every attempt, the others are
    sent. The run is stopped right then: the record whose letter failed is reported for
    retry, so the checkpoint stops before it (per key, its key's later records are held
    back, others go on). The next run delivers it again and its letter is sent: every
    poison record has a letter, every good record is archived; letters already sent may
    come twice (a standard queue is at-least-once), never none."""
    name = f"dlq-{uuid.uuid4().hex[:10]}"
    probe, file = tmp_path / "probe.tsv", tmp_path / "pipeline.yaml"
    file.write_text(DEAD_LETTERS.format(name=name, probe=probe))
    plan = load_plan_from_file(file)
    provision(plan, aws, shards=1)
    aws("kinesis").get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 50}
    )
    pipeline = Pipeline(name, file, probe, plan)
    poison = {n for n in range(100) if n % 7 == 3}
    with Producer(name, aws("kinesis"), sleep=lambda _: None) as producer:
        for n in range(100):
            producer.put(
                {"key": f"k{n % 10}", "n": n, "v": "x" if n in poison else n}, f"k{n % 10}"
            )
        result = producer.flush()
    assert result.ok
    seq = {n: r.sequence_number for n, r in enumerate(result.results)}
    with FaultProxy(moto_endpoint, seed=4) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", proxy.url)
        reset_clients()
        refused = proxy.inject(
            sqs_batch_failures(
                lambda e: json.loads(e["MessageBody"])["sequence_number"] == seq[17]
            ),
            target="SendMessageBatch",
        )
        local = local_run(pipeline, aws, tmp_path)
        stop = threading.Event()
        errors: list[BaseException] = []

        def target() -> None:
            try:
                local.run(stop)
            except BaseException as exc:  # reported by the test
                errors.append(exc)

        thread = threading.Thread(target=target, name="stop-after-letters", daemon=True)
        thread.start()
        try:
            wait_until("a letter refused", lambda: refused.fired >= 1, 60, repr)
            stop.set()
            thread.join(30)
        finally:
            stop.set()
        assert not thread.is_alive()
        assert not errors
        proxy.remove(refused)
        at_stop = letters(aws, f"{name}-dlq")
        assert seq[17] not in at_stop
        assert set(at_stop) == {seq[n] for n in poison if n < 50} - {seq[17]}
        (lease,) = pipeline.leases(aws).values()
        assert lease.owner is None
        assert int(lease.checkpoint if lease.checkpoint.isdigit() else 0) < int(seq[17])

        run_until_idle(local_run(pipeline, aws, tmp_path))

    sent = letters(aws, f"{name}-dlq") + at_stop  # received once each: count both reads
    assert set(sent) == {seq[n] for n in poison}  # every poison record has its letter
    archived_ns = {int(line["n"]) for line in archived(aws, pipeline)}
    assert archived_ns == set(range(100)) - poison  # every good record, nothing poison
    assert first_order(pipeline.delivered()) == {
        key: [n for n in range(100) if f"k{n % 10}" == key] for key in {f"k{k}" for k in range(10)}
    }
