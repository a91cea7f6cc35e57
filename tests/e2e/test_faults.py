"""The whole path under faults: producer → stream → local event source mapping → handler →
sinks, on the local servers, each scenario ending with the reconciliation of
:mod:`tests.e2e.reconcile` (nothing lost, nothing applied twice, per-key order kept).

One pipeline file, written by the test (:func:`tests.e2e.reconcile.pipeline_text`): two
shards, a DynamoDB ``latest`` and ``append`` table, an OpenSearch index, an S3 archive and
an SQS dead-letter queue; a few records in each run are poison (the ``expr`` filter raises
on them), so the dead-letter path carries traffic too. Faults come from where they come
from in AWS:

* at the HTTP layer, through :class:`tests.faultproxy.FaultProxy` between the sinks and the
  servers (the sinks' endpoints point at it through ``AWS_ENDPOINT_URL_<SERVICE>`` and the
  file's OpenSearch endpoint); the mapping itself (Kinesis, the lease table, the on-failure
  destination) talks to moto directly, as Lambda's poller is not behind the function's
  network: (a) throttles and 5xx on each sink, (b) slow responses past the client timeout,
  (c) dropped connections before and after the request reached the server;
* in the process: (d) a processor raising on chosen records, (e) the handler exceeding its
  timeout in a real Lambda runtime worker (a sink call held past it), (f) ``shardline run``
  killed with SIGKILL and run again, (g) a shard split in the middle of a run.

Sizes are for CI (the file runs in about a minute on two cores); ``SHARDLINE_E2E_SCALE``
multiplies the record counts (``make soak``). With ``SHARDLINE_E2E_REPORT=FILE`` each
scenario appends its figures to FILE as a JSON line, from which ``python -m bench soak``
writes RELIABILITY.md.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest

import stream.aws
from bench.soak import runtime_workers
from deploy.local.run import LocalRun
from deploy.local.servers import provision
from deploy.pipeline.config import load_plan_from_file
from stream.aws import reset_clients
from stream.producer import Producer
from tests.e2e.reconcile import (
    FUNCTION,
    POISON,
    Figures,
    Layout,
    Observed,
    Produced,
    Reconciler,
    pipeline_text,
    reconcile,
)
from tests.e2e.reconcile import scale as e2e_scale
from tests.faultproxy import (
    DROP,
    INTERNAL,
    LOST_ACK,
    OPENSEARCH_REJECTED,
    S3_INTERNAL,
    S3_SLOWDOWN,
    THROTTLE,
    THROTTLING,
    UNAVAILABLE,
    Fault,
    FaultProxy,
    latched,
    slow,
)
from tests.integration import conftest as servers
from tests.integration import test_run
from tests.integration.fault_fixtures import aws_client
from tests.integration.test_run import (
    CREDENTIALS,
    Pipeline,
    Runs,
    run_until_idle,
    split,
    wait_until,
)
from tests.integration.test_workers import running

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

pytestmark = pytest.mark.e2e

# The integration tests' session servers (a moto server, an osmem-server) and fixtures, as
# fixtures of this module; moto's state is per process: every resource has a unique name.
aws = servers.aws
moto_endpoint = servers.moto_endpoint
opensearch_endpoint = servers.opensearch_endpoint
unique = servers.unique
aws_split_semantics = test_run.aws_split_semantics

ROOT = Path(__file__).resolve().parents[2]
SCALE = e2e_scale()
LEASE_S = 1.5  # in-process runs: leases renewed (and new shards listed) every 0.5 s

OPENSEARCH_UNAVAILABLE = Fault(
    "opensearch_unavailable",
    503,
    json.dumps({"error": {"type": "unavailable", "reason": "faultproxy"}, "status": 503}).encode(),
    (("Content-Type", "application/json; charset=UTF-8"),),
)
"""OpenSearch's 503 (a node restarting, a cluster without a master)."""

#: How to pick each sink's write requests out of the proxied traffic.
WRITES: dict[str, list[dict[str, str]]] = {
    "dynamodb": [{"target": "PutItem"}, {"target": "BatchWriteItem"}],
    "s3": [{"method": "PUT"}],
    "sqs": [{"target": "SendMessageBatch"}],
    "opensearch": [{"path": "/_bulk"}],
}
#: Each sink's throttle and its 5xx, as the service sends them.
THROTTLE_AND_5XX: dict[str, tuple[Fault, Fault]] = {
    "dynamodb": (THROTTLE, INTERNAL),
    "s3": (S3_SLOWDOWN, S3_INTERNAL),
    "sqs": (THROTTLING, UNAVAILABLE),
    "opensearch": (OPENSEARCH_REJECTED, OPENSEARCH_UNAVAILABLE),
}


def count(n: int) -> int:
    """A CI size, scaled by ``SHARDLINE_E2E_SCALE``."""
    return max(1, round(n * SCALE))


def within(seconds: float) -> float:
    """A CI deadline, longer for bigger runs."""
    return seconds * max(1.0, SCALE)


# -- the harness ---------------------------------------------------------------------------


@dataclass
class Scenario:
    """The e2e pipeline, provisioned under unique names, and what was put on its stream."""

    aws: Callable[[str], Any]
    folder: Path
    name: str
    file: Path
    plan: dict[str, Any]
    layout: Layout
    produced: list[Produced] = field(default_factory=list)

    @classmethod
    def make(
        cls,
        aws: Callable[[str], Any],
        folder: Path,
        name: str,
        *,
        opensearch: str,
        opensearch_direct: str | None = None,
        shards: int = 2,
        **options: Any,
    ) -> Scenario:
        """Write the pipeline file (OpenSearch at ``opensearch``, maybe a proxy; read back
        from ``opensearch_direct``), provision its stream, tables, bucket and queue."""
        probe = folder / "probe.tsv"
        file = folder / "pipeline.yaml"
        file.write_text(
            pipeline_text(name, opensearch=opensearch, probe=probe, shards=shards, **options)
        )
        plan = load_plan_from_file(file, env={})
        provision(plan, aws, shards=shards)
        aws("kinesis").get_waiter("stream_exists").wait(
            StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 50}
        )
        ordering = str(plan["functions"][FUNCTION]["ordering"])
        layout = Layout(name, opensearch_direct or opensearch, probe, ordering)
        return cls(aws, folder, name, file, plan, layout)

    def produce(
        self,
        records: int,
        keys: int,
        *,
        poison_every: int = 0,
        aggregate: bool = False,
        tags: Mapping[int, str] | None = None,
        extra: Mapping[int, Mapping[str, Any]] | None = None,
        kinesis: Any = None,
    ) -> list[Produced]:
        """Put ``records`` records over ``keys`` keys, interleaved, ``n`` counting on; every
        ``poison_every``-th is poison; ``tags`` marks records (by their index in this call)
        for fault rules that pick requests by content, ``extra`` adds fields to them;
        ``kinesis``: the producer's client (default: moto's, directly)."""
        start = len(self.produced)
        tags = tags or {}
        extra = extra or {}
        docs = []
        for i in range(records):
            n = start + i
            poison = poison_every > 0 and n % poison_every == poison_every - 1
            doc = Produced(n, f"k{n % keys:03d}", "", "", poison=poison).document()
            if i in tags:
                doc["tag"] = tags[i]
            doc.update(extra.get(i, {}))
            docs.append(doc)
        client = kinesis or self.aws("kinesis")
        with Producer(self.name, client, aggregate=aggregate) as producer:
            for doc in docs:
                producer.put(doc, doc["key"])
            result = producer.flush()
        assert result.ok, result.failed[:3]
        batch = [
            Produced(doc["n"], doc["key"], r.shard_id, r.sequence_number, r.sub_sequence_number,
                     poison=doc["v"] == POISON)
            for doc, r in zip(docs, result.results, strict=True)
        ]  # fmt: skip
        self.produced += batch
        return batch

    @property
    def poison(self) -> int:
        return sum(p.poison for p in self.produced)

    def reconciler(self) -> Reconciler:
        return Reconciler(self.layout, self.aws)

    def local(
        self,
        *,
        in_process: bool = True,
        worker_id: str = "w1",
        client: Callable[[str], Any] | None = None,
    ) -> LocalRun:
        """The mapping of the pipeline's function, as ``shardline run`` builds it
        (``client``: the mapping's own client factory, e.g. its lease table behind a proxy)."""
        return LocalRun(
            self.plan, worker_id=worker_id, in_process=in_process, client=client or self.aws,
            state_dir=self.folder / ".shardline", lease_duration_s=LEASE_S,
            log_dir=None if in_process else self.folder / "logs",
        )  # fmt: skip

    def run_pipeline(self) -> Pipeline:
        """The same files as :mod:`tests.integration.test_run` sees a pipeline."""
        return Pipeline(self.name, self.file, self.layout.probe or Path(), self.plan)


class Background:
    """A :class:`LocalRun` in a thread: stopped cleanly (in-flight batches complete, their
    results are applied, checkpoints written, leases released), then made anew with the
    same worker id to resume."""

    def __init__(self, make: Callable[[], LocalRun]) -> None:
        self._make = make
        self.local: LocalRun | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[BaseException] = []

    def start(self) -> None:
        local = self.local = self._make()
        local.build()
        self._stop = threading.Event()

        def target() -> None:
            try:
                local.run(self._stop)
            except BaseException as exc:  # reported by whoever waits on the run
                self.errors.append(exc)

        self._thread = threading.Thread(target=target, name="e2e-run", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 60) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            assert not self._thread.is_alive(), f"the run did not stop within {timeout} s"
            self._thread = None
        if self.errors:
            raise self.errors[0]

    def activity(self) -> tuple[Any, ...] | None:
        """None while any mapping has work (records read and not done, batches in flight),
        else its counters: equal readings around a read of the stores mean nothing ran."""
        if self.errors:
            raise self.errors[0]
        runs = self.local.runs if self.local is not None else []
        if not runs or not all(r.mapping.caught_up for r in runs):
            return None
        return tuple(
            (s.records_in, s.invocations, s.checkpoints) for s in (r.mapping.stats for r in runs)
        )


def settle(scenario: Scenario, run: Background, reconciler: Reconciler, timeout: float) -> Figures:
    """Reconcile once every produced record is accounted for and the run was idle around
    the read of the stores (nothing half-applied); at the deadline, whatever it is then."""
    deadline = time.monotonic() + timeout
    while True:
        before = run.activity()
        figures = reconciler.reconcile(scenario.produced)
        if before is not None and figures.complete and run.activity() == before:
            return figures
        if time.monotonic() > deadline:
            return figures
        threading.Event().wait(0.1)  # the polling interval, not a wait for the outcome


def route_sinks_through(monkeypatch: pytest.MonkeyPatch, proxy: FaultProxy) -> None:
    """Point the sinks' DynamoDB, S3 and SQS clients (and Lambda runtime workers started
    from now on: they inherit ``AWS_*``) at the proxy; Kinesis stays on moto."""
    for service in ("DYNAMODB", "S3", "SQS"):
        monkeypatch.setenv(f"AWS_ENDPOINT_URL_{service}", proxy.url)
    reset_clients()


@pytest.fixture
def local_env(monkeypatch: pytest.MonkeyPatch, moto_endpoint: str) -> None:
    """Credentials and the moto endpoint for the handlers' sinks (and workers)."""
    for name, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": moto_endpoint}.items():
        monkeypatch.setenv(name, value)
    for service in ("DYNAMODB", "S3", "SQS", "KINESIS"):
        monkeypatch.delenv(f"AWS_ENDPOINT_URL_{service}", raising=False)
    reset_clients()


@pytest.fixture
def kinesis_split(aws_split_semantics: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kinesis's split (``aws_split_semantics``), and Kinesis's sequence numbers across it:
    moto numbers each shard's records 1, 2, 3..., so a child's first records would be
    numbered below its parent's last and share their numbers; in Kinesis they grow with
    time across the stream, and keyed sinks rely on that for a key whose records move from
    parent to child (``latest`` compares positions, ``append`` keys items by them)."""
    from moto.kinesis.models import Record, Shard, Stream  # noqa: PLC0415  # the server's model

    split_shard = Stream.split_shard  # aws_split_semantics' version

    def split_numbering_on(self: Any, shard_to_split: str, new_starting_hash_key: str) -> None:
        parent = self.shards.get(shard_to_split)
        floor = 0 if parent is None else max(
            parent.get_max_sequence_number(), getattr(parent, "sequence_floor", 0)
        )  # fmt: skip
        before = set(self.shards)
        split_shard(self, shard_to_split, new_starting_hash_key)
        for shard_id in set(self.shards) - before:
            self.shards[shard_id].sequence_floor = floor

    def put_record(self: Any, partition_key: str, data: str, explicit_hash_key: str) -> str:
        last = max(self.get_max_sequence_number(), getattr(self, "sequence_floor", 0))
        self.records[last + 1] = Record(partition_key, data, last + 1, explicit_hash_key)
        return str(last + 1)

    monkeypatch.setattr(Stream, "split_shard", split_numbering_on)
    monkeypatch.setattr(Shard, "put_record", put_record)


@pytest.fixture
def aws_proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    with FaultProxy(moto_endpoint, seed=11) as proxy:
        yield proxy


@pytest.fixture
def search_proxy(opensearch_endpoint: str) -> Iterator[FaultProxy]:
    with FaultProxy(opensearch_endpoint, seed=13) as proxy:
        yield proxy


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[..., None]:
    """Append a scenario's figures to ``$SHARDLINE_E2E_REPORT`` (for RELIABILITY.md)."""
    started = time.monotonic()

    def write(scenario: str, injected: str, figures: Figures) -> None:
        path = os.environ.get("SHARDLINE_E2E_REPORT")
        if not path:
            return
        line = {
            "test": request.node.name,
            "scenario": scenario,
            "injected": injected,
            "scale": SCALE,
            "seconds": round(time.monotonic() - started, 1),
            **figures.as_dict(),
        }
        with Path(path).open("ab") as out:
            out.write(orjson.dumps(line) + b"\n")

    return write


def injected_text(*proxies: FaultProxy) -> str:
    """What the proxies injected, e.g. ``throttle x12, internal x9``."""
    counts: dict[str, int] = {}
    for proxy in proxies:
        for name, n in proxy.injected.items():
            counts[name] = counts.get(name, 0) + n
    return ", ".join(f"{name} x{n}" for name, n in sorted(counts.items())) or "nothing fired"


def inject_on_writes(
    aws_proxy: FaultProxy, search_proxy: FaultProxy, sink: str, fault: Fault, probability: float
) -> None:
    proxy = search_proxy if sink == "opensearch" else aws_proxy
    for selector in WRITES[sink]:
        proxy.inject(fault, probability=probability, **selector)


# -- (a), (b), (c): faults at the HTTP layer, in-process handlers ------------------------


@pytest.mark.usefixtures("local_env")
class TestHttpFaults:
    def scenario(
        self, aws: Any, tmp_path: Path, unique: str, opensearch_endpoint: str, proxy_url: str,
        **options: Any,
    ) -> Scenario:  # fmt: skip
        scenario = Scenario.make(
            aws, tmp_path, f"e2e-{unique}", opensearch=proxy_url,
            opensearch_direct=opensearch_endpoint, batch=15, **options,
        )  # fmt: skip
        scenario.produce(count(180), keys=12, poison_every=10)
        scenario.produce(count(60), keys=12, poison_every=10, aggregate=True)
        return scenario

    @pytest.mark.parametrize("sink", ["dynamodb", "opensearch", "s3", "sqs"])
    def test_throttles_and_5xx_on_each_sink_lose_duplicate_and_reorder_nothing(
        self, aws, unique, tmp_path, opensearch_endpoint, aws_proxy, search_proxy,
        monkeypatch, report, sink,
    ):  # fmt: skip
        """30% of the sink's writes throttled and 30% of the rest answered 5xx: the
        sink retries them, what still fails is redelivered by the mapping, and the stores
        end as a clean run leaves them (duplicates only in the archive and the dead-letter
        queue, removed by position)."""
        route_sinks_through(monkeypatch, aws_proxy)
        ordering = "strict" if sink == "s3" else "per_key"
        scenario = self.scenario(
            aws, tmp_path, unique, opensearch_endpoint, search_proxy.url, ordering=ordering
        )
        throttle, server_error = THROTTLE_AND_5XX[sink]
        inject_on_writes(aws_proxy, search_proxy, sink, throttle, 0.3)
        inject_on_writes(aws_proxy, search_proxy, sink, server_error, 0.3)

        run_until_idle(scenario.local(), timeout=within(60))

        figures = scenario.reconciler().reconcile(scenario.produced)
        injected = injected_text(aws_proxy, search_proxy)
        report(f"a: {sink} throttles + 5xx ({ordering})", injected, figures)
        figures.check()
        fired = aws_proxy.injected + search_proxy.injected
        assert fired[throttle.name] + fired[server_error.name] > 0
        assert figures.lost == 0
        assert figures.delivered + figures.dead_lettered == figures.produced

    def test_slow_responses_past_the_client_timeout_are_retried_idempotently(
        self, aws, unique, tmp_path, opensearch_endpoint, aws_proxy, search_proxy,
        monkeypatch, report,
    ):  # fmt: skip
        """One write in ten, on every sink, is answered two seconds late, after the
        client's half-second read timeout: the write landed but the sink cannot know, so it
        writes again; nothing is applied twice or out of order."""
        monkeypatch.setattr(stream.aws, "READ_TIMEOUT_S", 0.5)  # Lambda's own is 30 s
        route_sinks_through(monkeypatch, aws_proxy)
        scenario = self.scenario(aws, tmp_path, unique, opensearch_endpoint, search_proxy.url)
        scenario.plan["sinks"]["search"]["timeout"] = 0.5  # the sink's option, not the file's
        for sink in WRITES:
            inject_on_writes(aws_proxy, search_proxy, sink, slow(2.0), 0.1)

        run_until_idle(scenario.local(), timeout=within(90))

        figures = scenario.reconciler().reconcile(scenario.produced)
        report("b: slow responses past the client timeout, every sink",
               injected_text(aws_proxy, search_proxy), figures)  # fmt: skip
        figures.check()
        assert aws_proxy.injected["slow"] + search_proxy.injected["slow"] > 0
        assert figures.lost == 0

    def test_dropped_connections_before_and_after_the_server_acted_lose_nothing(
        self, aws, unique, tmp_path, opensearch_endpoint, aws_proxy, search_proxy,
        monkeypatch, report,
    ):  # fmt: skip
        """One write in ten, on every sink, has its connection closed before it reaches
        the server, and another one in ten after the server applied it (a lost
        acknowledgement)."""
        route_sinks_through(monkeypatch, aws_proxy)
        scenario = self.scenario(aws, tmp_path, unique, opensearch_endpoint, search_proxy.url)
        for sink in WRITES:
            inject_on_writes(aws_proxy, search_proxy, sink, DROP, 0.1)
            inject_on_writes(aws_proxy, search_proxy, sink, LOST_ACK, 0.1)

        run_until_idle(scenario.local(), timeout=within(60))

        figures = scenario.reconciler().reconcile(scenario.produced)
        report("c: dropped connections (before / after the server acted), every sink",
               injected_text(aws_proxy, search_proxy), figures)  # fmt: skip
        figures.check()
        assert aws_proxy.injected["drop"] > 0
        assert aws_proxy.injected["lost_ack"] + search_proxy.injected["lost_ack"] > 0
        assert figures.lost == 0


# -- (k): a sink down for 20 s ------------------------------------------------------------


@pytest.mark.usefixtures("local_env")
def test_a_sink_down_for_twenty_seconds_delays_but_gives_nothing_up(
    aws, unique, tmp_path, opensearch_endpoint, search_proxy, report
):
    """Every OpenSearch write fails (503) for 20 s in the middle of the run. The sinks'
    retries inside each invocation and the mapping's waits between retries of a batch
    (2, 4, 8 s) ride it out with the default three retries: every record is delivered,
    none goes to the on-failure destination."""
    scenario = Scenario.make(
        aws, tmp_path, f"e2e-{unique}", opensearch=search_proxy.url,
        opensearch_direct=opensearch_endpoint, batch=20,
    )  # fmt: skip
    scenario.produce(count(100), keys=16, poison_every=20)
    reconciler = scenario.reconciler()
    run = Background(scenario.local)
    run.start()
    try:
        pipeline = scenario.run_pipeline()
        wait_until("the run delivering", lambda: len(pipeline.delivered()) >= 20, within(30),
                   lambda: repr(run.errors))  # fmt: skip
        rule = search_proxy.inject(OPENSEARCH_UNAVAILABLE, path="/_bulk")
        down_at = time.monotonic()
        scenario.produce(count(200), keys=16, poison_every=20)
        wait_until("20 s of outage", lambda: time.monotonic() > down_at + 20, 30)
        search_proxy.remove(rule)
        figures = settle(scenario, run, reconciler, timeout=within(90))
    finally:
        run.stop()

    report("k: OpenSearch down for 20 s (every write 503)",
           f"{injected_text(search_proxy)} over 20 s", figures)  # fmt: skip
    figures.check()
    assert search_proxy.injected["opensearch_unavailable"] > 0
    assert reconciler.on_failure == []  # nothing given up
    assert figures.delivered == figures.produced - scenario.poison


# -- (l): a record that fails retryably for ever, on a hot key -----------------------------


@pytest.mark.usefixtures("local_env")
def test_a_record_failing_retryably_for_ever_on_a_hot_key_is_given_up_in_order(
    aws, unique, tmp_path, opensearch_endpoint, aws_proxy, monkeypatch, report
):
    """Most records share one key; every DynamoDB write holding one of them is throttled,
    always. The batch is retried three times (2, 4, 8 s apart), then given up to the
    on-failure destination, by range; the key's later records go on in order after it,
    other keys were never held back, and nothing else is lost."""
    route_sinks_through(monkeypatch, aws_proxy)
    scenario = Scenario.make(
        aws, tmp_path, f"e2e-{unique}", opensearch=opensearch_endpoint, batch=25
    )
    records = count(200)
    hot = dict.fromkeys((records // 3,), "hot-poison")
    scenario.produce(records, keys=4, tags=hot)
    aws_proxy.inject(THROTTLE, target="BatchWriteItem", where=lambda r: b"hot-poison" in r.body)
    aws_proxy.inject(THROTTLE, target="PutItem", where=lambda r: b"hot-poison" in r.body)

    run_until_idle(scenario.local(), timeout=within(90))

    reconciler = scenario.reconciler()
    figures = reconciler.reconcile(scenario.produced)
    report("l: a record throttled for ever on a hot key (per_key)",
           f"{injected_text(aws_proxy)} on one record", figures)  # fmt: skip
    figures.check()
    poisoned = scenario.produced[records // 3]
    ranges = [m["KinesisBatchInfo"] for m in reconciler.on_failure]
    assert any(
        r["shardId"] == poisoned.shard_id
        and int(r["startSequenceNumber"]) <= int(poisoned.sequence_number)
        <= int(r["endSequenceNumber"])
        for r in ranges
    )
    assert all(m["requestContext"]["condition"] == "RetryAttemptsExhausted"
               for m in reconciler.on_failure)  # fmt: skip
    assert figures.lost == 0


# -- (m): DynamoDB refuses the newest record of a key --------------------------------------


@pytest.mark.usefixtures("local_env")
def test_a_refused_newest_record_is_dead_lettered_alone_and_its_key_keeps_the_one_before(
    aws, unique, tmp_path, opensearch_endpoint, report
):
    """The last record of two keys carries a number DynamoDB cannot hold (1e130): both
    tables refuse it. Only that record is dead-lettered (from each table, with the reason);
    the key's ``latest`` item holds the record before it, and every other record of the
    key is delivered (it once dragged its key's valid records into the queue with it)."""
    scenario = Scenario.make(
        aws, tmp_path, f"e2e-{unique}", opensearch=opensearch_endpoint, batch=50
    )
    scenario.produce(count(160), keys=8, poison_every=20)
    refused = scenario.produce(2, keys=8, extra={0: {"big": 1e130}, 1: {"big": 1e130}})

    run_until_idle(scenario.local(), timeout=within(60))

    reconciler = scenario.reconciler()
    figures = reconciler.reconcile(scenario.produced)
    report("m: DynamoDB refuses the newest record of two keys (a number beyond its range)",
           "2 records with big=1e130", figures)  # fmt: skip
    figures.check()
    assert figures.dead_lettered == scenario.poison + len(refused)
    assert figures.delivered == figures.produced - scenario.poison - len(refused)
    refused_at = {(p.shard_id, p.sequence_number) for p in refused}
    steps = {
        letter["step"]
        for letter in reconciler.letters
        if (letter["shard_id"], letter["sequence_number"]) in refused_at
    }
    assert {"sink:latest", "sink:log"} <= steps  # (OpenSearch may refuse it too)


# -- (n): a sink's table missing for a while ------------------------------------------------


@pytest.mark.usefixtures("local_env")
def test_a_missing_table_is_retried_never_dead_lettered_and_delivered_once_it_exists(
    aws, unique, tmp_path, opensearch_endpoint, report
):
    """The ``latest`` table does not exist when the run starts (a mistyped or not yet
    deployed table): not the records' fault, so no record is dead-lettered for it; the
    batches are retried, and once the table is created (6 s later) everything lands."""
    scenario = Scenario.make(
        aws, tmp_path, f"e2e-{unique}", opensearch=opensearch_endpoint, batch=40
    )
    ddb = aws("dynamodb")
    table = scenario.layout.latest_table
    schema = ddb.describe_table(TableName=table)["Table"]
    ddb.delete_table(TableName=table)
    scenario.produce(count(160), keys=8, poison_every=20)
    reconciler = scenario.reconciler()
    run = Background(scenario.local)
    run.start()
    try:
        pipeline = scenario.run_pipeline()
        wait_until("the run trying", lambda: len(pipeline.delivered()) > 0, within(30),
                   lambda: repr(run.errors))  # fmt: skip
        started = time.monotonic()
        wait_until("6 s without the table", lambda: time.monotonic() > started + 6, 10)
        tried = len(pipeline.delivered())
        ddb.create_table(
            TableName=table, KeySchema=schema["KeySchema"],
            AttributeDefinitions=schema["AttributeDefinitions"], BillingMode="PAY_PER_REQUEST",
        )  # fmt: skip
        figures = settle(scenario, run, reconciler, timeout=within(60))
    finally:
        run.stop()

    report("n: the latest table missing for 6 s (ResourceNotFoundException)",
           "table created 6 s after the first try", figures)  # fmt: skip
    figures.check()
    assert reconciler.on_failure == []
    assert {letter["step"] for letter in reconciler.letters} == {"processors[1].filter"}
    assert figures.delivered == figures.produced - scenario.poison
    assert len(pipeline.delivered()) > tried  # delivered again once the table existed


# -- (o): the producer's lost acknowledgements ---------------------------------------------


@pytest.mark.usefixtures("local_env")
@pytest.mark.parametrize("aggregate", [False, True], ids=["plain", "aggregated"])
def test_a_producer_losing_acknowledgements_duplicates_by_id_only_and_keeps_key_order(
    aws, unique, tmp_path, moto_endpoint, opensearch_endpoint, aws_proxy, report, aggregate
):
    """A third of the producer's PutRecords calls reach Kinesis but lose their answer, so
    the producer sends them again: the stream holds those records twice, at two positions
    (Kinesis cannot tell). Per key, no copy of an older record follows a newer one, and
    de-duplicating by the record's id (``n``) leaves exactly what was produced, in order."""
    scenario = Scenario.make(
        aws, tmp_path, f"e2e-{unique}", opensearch=opensearch_endpoint, batch=50
    )
    scenario.layout = dataclasses.replace(scenario.layout, by_record_id=True)
    aws_proxy.inject(LOST_ACK, probability=0.33, target="PutRecords")
    kinesis = aws_client(aws_proxy.url, "kinesis")
    scenario.produce(count(300), keys=12, poison_every=25, aggregate=aggregate,
                     kinesis=kinesis)  # fmt: skip

    run_until_idle(scenario.local(), timeout=within(60))

    figures = scenario.reconciler().reconcile(scenario.produced)
    mode = "with" if aggregate else "without"
    report(f"o: producer lost acks, {mode} aggregation (de-duplicated by record id)",
           injected_text(aws_proxy), figures)  # fmt: skip
    figures.check()
    assert aws_proxy.injected["lost_ack"] > 0
    assert figures.duplicates_removed > 0  # the copies were there, and removable by id
    assert figures.delivered == figures.produced - scenario.poison


# -- (d): a processor raising on chosen records --------------------------------------------


@pytest.mark.usefixtures("local_env")
@pytest.mark.parametrize("ordering", ["per_key", "strict"])
def test_records_a_processor_raises_on_are_dead_lettered_and_hold_nothing_back(
    aws, unique, tmp_path, opensearch_endpoint, report, ordering
):
    """One record in five makes the ``expr`` filter raise: each is dead-lettered with the
    step and the error, once, and every other record is delivered, per key in order."""
    scenario = Scenario.make(
        aws, tmp_path, f"e2e-{unique}", opensearch=opensearch_endpoint, batch=40,
        ordering=ordering,
    )  # fmt: skip
    scenario.produce(count(150), keys=10, poison_every=5)

    run_until_idle(scenario.local(), timeout=within(60))

    reconciler = scenario.reconciler()
    figures = reconciler.reconcile(scenario.produced)
    report(f"d: processor raises on 1 record in 5 ({ordering})", "expr filter TypeError", figures)
    figures.check()
    assert figures.dead_lettered == scenario.poison > 0
    assert figures.delivered == figures.produced - scenario.poison
    steps = {(letter["step"], letter["error"]) for letter in reconciler.letters}
    assert steps == {("processors[1].filter", "TypeError")}


# -- (e): the handler exceeding its timeout, in Lambda runtime workers ---------------------


@pytest.mark.usefixtures("local_env")
def test_a_handler_past_its_timeout_is_retried_and_a_batch_that_always_is_given_up(
    aws, unique, tmp_path, opensearch_endpoint, aws_proxy, monkeypatch, report
):
    """Real runtimes, a 1 s timeout. The first write of the batch holding ``stall-once``
    is held 3 s: the sandbox is killed mid-batch (the ``latest`` table already written),
    the batch is bisected and delivered again, and converges. Every write holding
    ``stall-always`` is held: bisecting isolates it, its retries run out, and the
    on-failure message names its position; nothing else is lost."""
    monkeypatch.chdir(ROOT)  # the workers' task root: where ``tests.`` is importable
    route_sinks_through(monkeypatch, aws_proxy)
    scenario = Scenario.make(
        aws, tmp_path, f"e2e-{unique}", opensearch=opensearch_endpoint, batch=6,
        timeout_s=1, max_retries=1,
    )  # fmt: skip
    records = count(48)
    once, always = records // 4, (3 * records) // 4
    aws_proxy.inject(slow(3, forward=False), times=1, target="BatchWriteItem",
                     where=lambda r: b"stall-once" in r.body)  # fmt: skip
    aws_proxy.inject(slow(3, forward=False), target="BatchWriteItem",
                     where=lambda r: b"stall-always" in r.body)  # fmt: skip
    scenario.produce(records, keys=8, tags={once: "stall-once", always: "stall-always"})

    local = scenario.local(in_process=False)
    # Bounded work (one retry, bisection to single records), but on a loaded machine
    # healthy batches pass the 1 s too, and each of them costs a killed sandbox, a cold
    # start and a bisection: 20 s here became more than 90 s with the machine loaded
    run_until_idle(local, idle_s=0.5, timeout=within(300))

    reconciler = scenario.reconciler()
    figures = reconciler.reconcile(scenario.produced)
    report("e: handler past its 1 s timeout (workers): once, and always for one record",
           f"{injected_text(aws_proxy)} (sandboxes killed)", figures)  # fmt: skip
    figures.check()
    stats = local.runs[0].stats
    assert stats is not None
    assert stats.batches_failed >= 3  # the stall-once batch, and stall-always's bisections
    given_up = scenario.produced[always]
    messages = reconciler.on_failure
    (info,) = [
        m["KinesisBatchInfo"] for m in messages
        if (m["KinesisBatchInfo"]["shardId"], m["KinesisBatchInfo"]["startSequenceNumber"])
        == (given_up.shard_id, given_up.sequence_number)
    ]  # fmt: skip
    assert info["batchSize"] == 1  # bisected down to the one record that always stalls
    # On a loaded machine a healthy batch can pass the 1 s too, twice, and be given up as
    # Lambda would give it up: each give-up is a message, and accounted for, never lost.
    assert {m["requestContext"]["condition"] for m in messages} == {"RetryAttemptsExhausted"}
    named = sum(m["KinesisBatchInfo"]["batchSize"] for m in messages)
    assert (figures.delivered, figures.dead_lettered) == (figures.produced - named, named)


# -- (f): SIGKILL of a runner, and a restart -----------------------------------------------


@pytest.mark.usefixtures("local_env")
def test_a_runner_killed_with_sigkill_and_restarted_loses_and_reorders_nothing(
    aws, unique, tmp_path, moto_endpoint, opensearch_endpoint, aws_proxy, report
):
    """``shardline run`` (in-process handlers) killed with SIGKILL after a checkpoint, in
    the middle of the stream; the same worker id run again until idle resumes after the
    checkpoints: the records between checkpoint and kill are applied again, without effect
    on the keyed stores, and the archive's extra copies are removed by position."""
    scenario = Scenario.make(aws, tmp_path, f"e2e-{unique}", opensearch=opensearch_endpoint)
    scenario.produce(count(400), keys=20, poison_every=25)
    scenario.produce(count(400), keys=20, poison_every=25, aggregate=True)
    pipeline = scenario.run_pipeline()
    runs = Runs(moto_endpoint, tmp_path)
    try:

        @latched  # asked by the proxy's threads and this one
        def quarter() -> bool:
            if len(pipeline.delivered()) < len(scenario.produced) // 4:
                return False
            return any(lease.sequence_number for lease in pipeline.leases(aws).values())

        # From a quarter on, the first run's reads are held (till the kill), so the kill
        # lands mid-stream however late this thread looks (as in test_run's kill scenario)
        aws_proxy.inject(slow(300, forward=False), target="GetRecords", where=lambda _: quarter())
        runs.env["AWS_ENDPOINT_URL_KINESIS"] = aws_proxy.url
        runs.start("first", pipeline, "--worker-id", "w1")
        del runs.env["AWS_ENDPOINT_URL_KINESIS"]

        def part_done() -> bool:
            if not runs.alive("first"):
                pytest.fail(f"the first run exited early:\n{runs.log('first')}")
            return quarter()

        wait_until("a quarter delivered, a checkpoint", part_done, within(60))
        runs.procs["first"].kill()
        runs.finish("first", 10)
        aws_proxy.clear()
        at_kill = len(pipeline.delivered_ns())
        runs.start("resumed", pipeline, "--worker-id", "w1", "--until-idle", "1")
        assert runs.finish("resumed", within(90)) == 0, runs.log("resumed")
    finally:
        runs.close()

    figures = scenario.reconciler().reconcile(scenario.produced)
    report("f: runner killed with SIGKILL mid-stream, restarted",
           f"SIGKILL after {at_kill} of {len(scenario.produced)} records", figures)  # fmt: skip
    figures.check()
    assert 0 < at_kill < len(scenario.produced)
    assert figures.delivered == figures.produced - scenario.poison


@pytest.mark.usefixtures("local_env")
def test_a_runner_with_lambda_runtimes_killed_mid_batch_leaves_no_sandbox_behind(
    aws, unique, tmp_path, moto_endpoint, opensearch_endpoint, aws_proxy, report, monkeypatch
):
    """``shardline run`` with real Lambda runtimes, killed with SIGKILL while a batch is in
    flight (its archive write held 4 s by the proxy); its runtimes must die with it at once:
    an orphan finishing its batch after the restarted run redid it once wrote a partial copy
    over the archive's full one. Restarted with the same worker id, the run resumes and the
    stores reconcile."""
    monkeypatch.chdir(ROOT)
    scenario = Scenario.make(
        aws, tmp_path, f"e2e-{unique}", opensearch=opensearch_endpoint, batch=20
    )
    scenario.produce(count(300), keys=20, poison_every=25)
    scenario.produce(count(300), keys=20, poison_every=25, aggregate=True)
    pipeline = scenario.run_pipeline()
    runs = Runs(moto_endpoint, tmp_path)
    runs.env["AWS_ENDPOINT_URL_S3"] = aws_proxy.url  # the runtimes' archive writes
    sandboxes: set[int] = set()
    try:
        first = runs.start("first", pipeline, "--worker-id", "w1", in_process=False)

        def working() -> bool:
            if not runs.alive("first"):
                pytest.fail(f"the first run exited early:\n{runs.log('first')}")
            sandboxes.update(runtime_workers(first.pid))
            return len(pipeline.delivered()) >= len(scenario.produced) // 4 and bool(sandboxes)

        wait_until("a quarter delivered by runtime workers", working, within(90))
        aws_proxy.inject(slow(4), probability=0.5, method="PUT")
        wait_until("an archive write held", lambda: aws_proxy.injected["slow"] > 0, 30)
        first.kill()
        runs.finish("first", 10)
        at_kill = len(pipeline.delivered_ns())
        wait_until("the killed run's runtimes gone", lambda: not any(map(running, sandboxes)), 2)
        aws_proxy.clear()
        runs.start("resumed", pipeline, "--worker-id", "w1", "--until-idle", "1",
                   in_process=False)  # fmt: skip
        assert runs.finish("resumed", within(120)) == 0, runs.log("resumed")
    finally:
        runs.close()

    figures = scenario.reconciler().reconcile(scenario.produced)
    report("f2: runner with Lambda runtimes killed with SIGKILL mid-batch, restarted",
           f"SIGKILL after {at_kill} of {len(scenario.produced)} records, an archive write "
           f"in flight; {len(sandboxes)} runtimes died with it", figures)  # fmt: skip
    figures.check()
    assert figures.delivered == figures.produced - scenario.poison


# -- (h): one worker cut off from the lease table ------------------------------------------


@pytest.mark.usefixtures("local_env")
def test_a_worker_cut_off_from_its_lease_table_stops_and_another_takes_its_shards(
    aws, unique, tmp_path, moto_endpoint, opensearch_endpoint, report
):
    """Two workers; every lease-table call of the first fails from the middle of the run
    on. It must stop reading once its leases are past their duration on its own clock (it
    cannot learn it lost them: the table does not answer), and the second takes the
    shards over: no split brain, nothing lost or out of order."""
    scenario = Scenario.make(
        aws, tmp_path, f"e2e-{unique}", opensearch=opensearch_endpoint, batch=10
    )
    scenario.produce(count(200), keys=16, poison_every=20)
    pipeline = scenario.run_pipeline()
    reconciler = scenario.reconciler()
    with FaultProxy(moto_endpoint, seed=17) as proxy:

        def cut_off(service: str) -> Any:
            if service == "dynamodb":  # the mapping's DynamoDB: its lease table
                return aws_client(proxy.url, service)
            return aws(service)

        w1 = Background(lambda: scenario.local(worker_id="w1", client=cut_off))
        w2 = Background(lambda: scenario.local(worker_id="w2"))
        w1.start()
        try:
            wait_until("w1 delivering", lambda: len(pipeline.delivered()) >= 40, within(30),
                       lambda: repr(w1.errors))  # fmt: skip
            rule = proxy.inject(UNAVAILABLE)
            cut_at = time.monotonic()
            w2.start()
            scenario.produce(count(200), keys=16, poison_every=20)

            def invocations() -> int:
                assert w1.local is not None
                return sum(r.mapping.stats.invocations for r in w1.local.runs)

            wait_until("past w1's lease duration", lambda: time.monotonic() > cut_at + LEASE_S + 1,
                       10)  # fmt: skip
            stopped_at = invocations()
            figures = settle(scenario, w2, reconciler, timeout=within(60))
            after = invocations()
            proxy.remove(rule)
        finally:
            w2.stop()
            w1.stop()

    report("h: lease table unreachable from one of two workers",
           f"{proxy.injected['unavailable']} lease-table calls failed", figures)  # fmt: skip
    figures.check()
    assert proxy.injected["unavailable"] > 0
    assert after == stopped_at  # cut off past its lease: it invoked nothing more
    assert figures.delivered == figures.produced - scenario.poison


# -- (i), (j): a shard taken over while its owner's batch is still running ------------------


@pytest.mark.usefixtures("local_env")
def test_a_shard_stolen_by_a_new_worker_during_a_slow_batch_loses_nothing(
    aws, unique, tmp_path, opensearch_endpoint, search_proxy, report
):
    """One worker reads both shards; OpenSearch holds some of its writes 3 s. A second
    worker starts and steals a shard by the fair-share rule while the first's batch on it
    is still running, and delivers that batch again from the checkpoint; the first then
    finishes its writes late (its results are discarded: the lease moved). Nothing is lost,
    nothing applied out of order, the archive's copies are removable by position."""
    scenario = Scenario.make(
        aws, tmp_path, f"e2e-{unique}", opensearch=search_proxy.url,
        opensearch_direct=opensearch_endpoint, batch=10,
    )  # fmt: skip
    records = count(240)
    scenario.produce(records, keys=16, poison_every=20,
                     tags=dict.fromkeys(range(0, records, 20), "stall"))  # fmt: skip
    search_proxy.inject(slow(3), path="/_bulk", where=lambda r: b"stall" in r.body)
    reconciler = scenario.reconciler()
    w1 = Background(lambda: scenario.local(worker_id="w1"))
    w2 = Background(lambda: scenario.local(worker_id="w2"))
    w1.start()
    try:
        wait_until("a batch of w1 held", lambda: search_proxy.injected["slow"] > 0, within(30),
                   lambda: repr(w1.errors))  # fmt: skip
        w2.start()
        pipeline = scenario.run_pipeline()
        wait_until("a shard stolen", lambda: len({lease.owner for lease in
                   pipeline.leases(aws).values()} - {None}) == 2, within(30))  # fmt: skip
        scenario.produce(count(120), keys=16, poison_every=20)
        figures = settle(scenario, w2, reconciler, timeout=within(90))
        figures = settle(scenario, w1, reconciler, timeout=within(30))
    finally:
        w2.stop()
        w1.stop()

    report("i: a shard stolen by a new worker during a slow batch (two workers)",
           f"{injected_text(search_proxy)} on OpenSearch", figures)  # fmt: skip
    figures.check()
    assert figures.delivered == figures.produced - scenario.poison


@pytest.mark.usefixtures("local_env")
def test_a_worker_paused_past_its_lease_mid_batch_loses_nothing(
    aws, unique, tmp_path, moto_endpoint, opensearch_endpoint, search_proxy, report
):
    """Two ``shardline run`` workers, one shard (the second waits: nothing to steal). The
    first is stopped with SIGSTOP while OpenSearch holds one of its writes, for three lease
    durations: the second takes the expired lease and delivers the batch again. Resumed
    with SIGCONT, the first finishes its batch late, finds its lease gone, and stops; the
    stores reconcile."""
    scenario = Scenario.make(
        aws, tmp_path, f"e2e-{unique}", opensearch=search_proxy.url,
        opensearch_direct=opensearch_endpoint, shards=1, batch=10,
    )  # fmt: skip
    records = count(200)
    scenario.produce(records, keys=16, poison_every=20, tags={records // 3: "stall"})
    search_proxy.inject(slow(3), times=1, path="/_bulk", where=lambda r: b"stall" in r.body)
    pipeline = scenario.run_pipeline()
    runs = Runs(moto_endpoint, tmp_path)
    lease = ("--lease-duration", "1")
    try:
        first = runs.start("first", pipeline, "--worker-id", "w1", *lease)
        runs.start("second", pipeline, "--worker-id", "w2", *lease)
        wait_until("a batch of w1 held", lambda: search_proxy.injected["slow"] > 0, within(60),
                   lambda: runs.log("first"))  # fmt: skip
        first.send_signal(signal.SIGSTOP)
        paused_at = time.monotonic()
        owner = lambda: {x.owner for x in pipeline.leases(aws).values()}  # noqa: E731
        wait_until("w2 owning the shard", lambda: owner() == {"w2"}, within(30))
        wait_until("three lease durations", lambda: time.monotonic() > paused_at + 3, 10)
        first.send_signal(signal.SIGCONT)
        wait_until("every record delivered",
                   lambda: pipeline.delivered_ns() >= {p.n for p in scenario.produced},
                   within(60))  # fmt: skip
        figures = scenario.reconciler().reconcile(scenario.produced)
        deadline = time.monotonic() + within(30)
        while not figures.complete and time.monotonic() < deadline:
            threading.Event().wait(0.2)  # the polling interval, not a wait for the outcome
            figures = scenario.reconciler().reconcile(scenario.produced)
        first.send_signal(signal.SIGINT)
        runs.procs["second"].send_signal(signal.SIGINT)
        runs.finish("first", 30)
        runs.finish("second", 30)
    finally:
        runs.close()

    report("j: a worker paused (SIGSTOP) past its lease mid-batch, then resumed",
           "SIGSTOP for 3 lease durations while OpenSearch held its write", figures)  # fmt: skip
    figures.check()
    assert figures.delivered == figures.produced - scenario.poison


# -- (g): a shard split in the middle of a run ---------------------------------------------


@pytest.mark.usefixtures("local_env", "kinesis_split")
def test_a_shard_split_in_the_middle_of_a_run_keeps_every_key_in_order(
    aws, unique, tmp_path, opensearch_endpoint, report
):
    """One shard, read by a running mapping, split while records wait on it; records of the
    same keys put afterwards land on the children, which are read only after the parent is
    finished: per key, first deliveries and writes follow the put order."""
    scenario = Scenario.make(
        aws, tmp_path, f"e2e-{unique}", opensearch=opensearch_endpoint, shards=1, batch=25
    )
    before = scenario.produce(count(400), keys=16, poison_every=20)
    run = Background(scenario.local)
    reconciler = scenario.reconciler()
    run.start()
    try:
        pipeline = scenario.run_pipeline()
        wait_until("the run reading the parent", lambda: len(pipeline.delivered()) >= 50, 30,
                   lambda: repr(run.errors))  # fmt: skip
        parent, children = split(aws, pipeline)
        in_parent = len(pipeline.delivered_ns())
        after = scenario.produce(count(200), keys=16, poison_every=20)
        assert {p.shard_id for p in after} <= set(children)
        figures = settle(scenario, run, reconciler, timeout=within(60))
    finally:
        run.stop()

    report("g: shard split in the middle of a run",
           f"split after {in_parent} of {len(before)} records", figures)  # fmt: skip
    figures.check()
    assert in_parent < len(before)
    assert figures.complete
    assert figures.delivered == figures.produced - scenario.poison
    assert parent not in {p.shard_id for p in after}


# -- the reconciliation itself: what it must catch (no servers) ----------------------------


def clean(produced: list[Produced]) -> Observed:
    """What a clean run leaves in the stores for ``produced``: each record once, poison ones
    dead-lettered, every key's newest record in ``latest``, written in put order."""
    good = [p for p in produced if not p.poison]

    def item(p: Produced) -> dict[str, Any]:
        return {"key": p.key, "n": p.n, "_position": p.padded}

    newest = {p.key: p for p in good}
    letters = [
        {"shard_id": p.shard_id, "sequence_number": p.sequence_number,
         "sub_sequence_number": p.sub_sequence_number, "reason": "cannot compare",
         "error": "TypeError", "step": "processors[1].filter",
         "data_base64": base64.b64encode(orjson.dumps(p.document())).decode()}
        for p in produced if p.poison
    ]  # fmt: skip
    order: dict[str, list[int]] = {}
    for p in produced:
        order.setdefault(p.key, []).append(p.n)
    return Observed(
        latest=[item(p) for p in newest.values()],
        log=[item(p) for p in good],
        documents=[{"_id": f"{p.shard_id}:{p.sequence_number}", **p.document()} for p in good],
        archive=[
            {
                **p.document(),
                "_shard": p.shard_id,
                "_sequence": p.sequence_number,
                "_sub_sequence": p.sub_sequence_number,
            }
            for p in good
        ],
        letters=letters,
        on_failure=[],
        probe_order=order,
    )


def records(n: int = 12, keys: int = 3) -> list[Produced]:
    return [
        Produced(i, f"k{i % keys}", "shardId-000000000000", str(100 + i), poison=i % 5 == 4)
        for i in range(n)
    ]


class TestReconciliation:
    def test_a_clean_run_reconciles_with_every_record_delivered_or_dead_lettered(self):
        produced = records()
        figures = reconcile(produced, clean(produced), "per_key")
        assert figures.ok, figures.problems
        assert (figures.delivered, figures.dead_lettered, figures.lost) == (10, 2, 0)

    def test_a_record_missing_from_one_sink_is_lost(self):
        produced = records()
        seen = clean(produced)
        seen.documents = [d for d in seen.documents if d["n"] != 3]
        figures = reconcile(produced, seen, "per_key")
        assert (figures.lost, figures.complete) == (1, False)
        assert any("lost" in p for p in figures.problems)

    def test_a_record_inside_an_on_failure_range_is_dead_lettered_not_lost(self):
        produced = records()
        seen = clean(produced)
        seen.log = [i for i in seen.log if i["n"] != 3]
        seen.on_failure = [{"KinesisBatchInfo": {"shardId": "shardId-000000000000",
                                                 "startSequenceNumber": "103",
                                                 "endSequenceNumber": "103"}}]  # fmt: skip
        figures = reconcile(produced, seen, "per_key")
        assert figures.ok, figures.problems
        assert (figures.dead_lettered, figures.lost) == (3, 0)

    def test_with_lanes_a_range_covers_only_its_own_lanes_records(self):
        """Issue 19, item 7: with parallelization 2 an on-failure range of one lane's batch
        spans the other lane's records too; a record of the other lane missing from the sinks
        is lost, not dead-lettered because it falls inside the range."""
        from stream.esm.rules import lane_of  # noqa: PLC0415

        keys = ["user-1", "a"] * 6  # lanes 0 and 1 by lane_of's CRC-32
        shard = "shardId-000000000000"
        produced = [Produced(i, k, shard, str(100 + i)) for i, k in enumerate(keys)]
        lanes = {p.key: lane_of(p.key, 2) for p in produced}
        assert set(lanes.values()) == {0, 1}
        first = produced[0]
        other = next(p for p in produced[1:] if lanes[p.key] != lanes[first.key])
        last = produced[-1]
        seen = clean(produced)
        info = {
            "shardId": first.shard_id,
            "startSequenceNumber": first.sequence_number,
            "endSequenceNumber": last.sequence_number,
        }
        seen.on_failure = [{"KinesisBatchInfo": info}]
        seen.log = [i for i in seen.log if i["n"] != other.n]
        figures = reconcile(produced, seen, "per_key", lanes=2)
        assert figures.lost == 1
        assert any(f"n=[{other.n}]" in p for p in figures.problems)
        assert reconcile(produced, seen, "per_key", lanes=1).lost == 0  # one lane: all of it

    def test_by_record_id_a_copy_at_another_position_is_a_removable_duplicate(self):
        """The producer put n=3 twice (a lost answer): the copy at a position it never
        reported is a duplicate removed by id in record-id mode, a problem otherwise."""
        produced = records()
        seen = clean(produced)
        copy = next(p for p in produced if p.n == 3)
        at = str(int(copy.sequence_number) + 1000)
        seen.archive.append({**seen.archive[3], "_sequence": at})
        seen.documents.append({**seen.documents[3], "_id": f"{copy.shard_id}:{at}"})
        seen.log.append({**seen.log[3], "_position": "other"})
        strict = reconcile(produced, seen, "per_key")
        assert not strict.ok
        by_id = reconcile(produced, seen, "per_key", by_record_id=True)
        assert by_id.ok, by_id.problems
        assert (by_id.duplicates_seen, by_id.duplicates_removed) == (3, 3)

    def test_archive_copies_are_removed_but_a_second_document_is_a_problem(self):
        produced = records()
        seen = clean(produced)
        seen.archive += seen.archive[:2]
        assert reconcile(produced, seen, "per_key").ok
        seen.documents.append({**seen.documents[0], "_id": "other"})
        figures = reconcile(produced, seen, "per_key")
        assert (figures.duplicates_seen, figures.duplicates_removed) == (3, 2)
        assert not figures.ok

    def test_a_latest_item_older_than_the_newest_delivered_record_is_an_order_violation(self):
        produced = records()
        seen = clean(produced)
        older = next(p for p in produced if p.key == "k0" and not p.poison)
        seen.latest = [i for i in seen.latest if i["key"] != "k0"]
        seen.latest.append({"key": "k0", "n": older.n, "_position": older.padded})
        figures = reconcile(produced, seen, "per_key")
        assert figures.order_violations == 1
        assert not figures.ok

    def test_a_later_record_delivered_first_is_an_order_violation(self):
        produced = records()
        seen = clean(produced)
        assert seen.probe_order is not None
        seen.probe_order["k2"].reverse()
        assert reconcile(produced, seen, "strict").order_violations == 3

    def test_a_poison_record_in_a_sink_or_without_a_letter_is_a_problem(self):
        produced = records()
        poison = next(p for p in produced if p.poison)
        seen = clean(produced)
        seen.letters = [m for m in seen.letters if m["sequence_number"] != poison.sequence_number]
        figures = reconcile(produced, seen, "per_key")
        assert figures.lost == 1
        assert any("no dead letter" in p for p in figures.problems)
