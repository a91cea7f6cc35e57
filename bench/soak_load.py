"""The load part of ``python -m bench soak``: the example under steady load, run by two
workers through a pause past the lease and a steal, reconciled record by record.

``examples/clickstream/pipeline.yaml`` is deployed to a fresh local AWS (moto and the
osmem-server, each in its own process) with the real deploy code, as ``shardline dev``
deploys it, and its lookup table seeded. Two ``shardline run`` processes (workers ``soak-a``
and ``soak-b``, the deployed mappings' settings, handlers in Lambda runtime workers unless
``in_process``) share the lease tables, while this process puts the demo's synthetic
traffic at a steady ``rate`` for ``minutes``. During the load (:mod:`bench.soak_workers`):

* at a quarter of it, ``soak-a`` is stopped with SIGSTOP for three lease durations, then
  resumed (a pause past the lease);
* at half of it, a third worker ``soak-c`` starts and steals leases by the fair-share rule,
  and at three quarters (at least one lease duration after its first lease) it is stopped
  cleanly (a steal, then a scale-in).

Then the workers run until every shard of every function is caught up (read from the lease
tables and the stream: ``shardline status``'s figures) and are stopped cleanly. Every
``sample_s`` the resident memory of each worker, of its Lambda runtimes and of this process
is sampled (growth after warm-up, the first quarter of the load and at least 10 s).

The reconciliation (:mod:`bench.soak_reconcile`) reads the stream and every store back and
accounts for each record of each function: produced = filtered (the function's chain run
here) + delivered + dead-lettered, with lost records, duplicate effects and per-key order
violations. Latency is arrival in the stream to the write in DynamoDB (an order item's
``_written_at`` against its event's ``_arrival`` in the archive).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from bench.soak_reconcile import LoadFigures, Position, Stores
    from bench.soak_workers import FaultLog, Worker

__all__ = [
    "GROWTH_LIMIT",
    "LoadReport",
    "Memory",
    "read_rss_kib",
    "run_load",
    "runtime_workers",
]

GROWTH_LIMIT = 0.10
_TICK_S = 0.1
#: Caught up this long counts as drained: longer than a mapping's idle poll (1 s).
_IDLE_S = 2.0
#: The pause, in lease durations: past the lease, with time for the others to take it.
PAUSE_LEASES = 3.0
#: Open shards of the example's stream (an on-demand stream's first four, as in AWS).
SHARDS = 4


# -- memory --------------------------------------------------------------------------------


def read_rss_kib(pid: int) -> int | None:
    """A process's resident set size in KiB (``VmRSS``), or None when it is gone.

    >>> read_rss_kib(os.getpid()) > 0
    True
    """
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def runtime_workers(parent: int | None = None) -> list[int]:
    """Pids of the Lambda runtime workers (awslambdaric) whose parent is ``parent`` (this
    process by default)."""
    me = os.getpid() if parent is None else parent
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
            if int(fields[1]) != me:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                if b"awslambdaric" in cmdline.read():
                    found.append(int(entry))
        except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
            continue
    return found


@dataclass
class Memory:
    """RSS samples: per process label, (seconds since start, KiB)."""

    samples: dict[str, list[tuple[float, int]]] = field(default_factory=dict)

    def sample(self, elapsed: float, processes: dict[str, int] | None = None) -> None:
        """Sample ``processes`` (label → pid; default: this process as ``runner``) and the
        Lambda runtime workers of each."""
        processes = {"runner": os.getpid()} if processes is None else processes
        for label, pid in list(processes.items()):
            for worker in runtime_workers(pid):
                self._add(f"{label} runtime {worker}", worker, elapsed)
            self._add(label, pid, elapsed)

    def _add(self, label: str, pid: int, elapsed: float) -> None:
        rss = read_rss_kib(pid)
        if rss is not None:
            self.samples.setdefault(label, []).append((elapsed, rss))

    def growth(self, warm_up_s: float) -> dict[str, tuple[int, int, float]]:
        """Per process with six samples or more after its warm-up (``warm_up_s`` from its
        first sample: a worker started mid-load warms up too): (KiB after warm-up, KiB at
        the end, growth as a fraction)."""
        out = {}
        for label, samples in self.samples.items():
            born = samples[0][0]
            after = [kib for t, kib in samples if t >= born + warm_up_s]
            if len(after) < 6:
                continue
            start, end = statistics.median(after[:3]), statistics.median(after[-3:])
            out[label] = (int(start), int(end), end / start - 1.0)
        return out


class _Sampler(threading.Thread):
    """Samples the memory of the live workers (and this process) every ``every`` s."""

    def __init__(self, memory: Memory, workers: list[Worker], started: float,
                 every: float) -> None:  # fmt: skip
        super().__init__(name="soak-memory", daemon=True)
        self.memory, self.workers, self.started, self.every = memory, workers, started, every
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            live = {f"worker {w.worker_id}": w.pid for w in list(self.workers) if w.alive()}
            self.memory.sample(time.monotonic() - self.started, {"producer": os.getpid(),
                                                                 **live})  # fmt: skip
            self.done.wait(self.every)  # the sampling interval


# -- the report ----------------------------------------------------------------------------


@dataclass
class LoadReport:
    """What the load part measured."""

    minutes: float
    rate: float
    lease_s: float = 5.0
    in_process: bool = False
    produced: int = 0
    produce_seconds: float = 0.0
    produced_at: float = 0.0  # monotonic time of the last put
    drain_seconds: float = 0.0  # from the last put until every shard stayed caught up
    latency_ms: tuple[float, float] | None = None  # p50, p99
    figures: LoadFigures | None = None
    faults: FaultLog | None = None
    problems: list[str] = field(default_factory=list)  # a worker that failed, a fault not seen
    memory: Memory = field(default_factory=Memory)
    warm_up_s: float = 0.0

    @property
    def rate_held(self) -> float:
        """Records per second the producer put, over the producing time."""
        return self.produced / self.produce_seconds if self.produce_seconds else 0.0

    @property
    def reconciled(self) -> bool:
        return self.figures is not None and self.figures.ok and not self.problems

    @property
    def flat(self) -> bool:
        growth = self.memory.growth(self.warm_up_s)
        return bool(growth) and all(g < GROWTH_LIMIT for _, _, g in growth.values())


# -- producing -----------------------------------------------------------------------------


def _steady_source(
    *,
    records: list[tuple[bytes, str, bool]],
    corrupt: list[tuple[bytes, str]],
    stream: str,
    client: Callable[[str], Any],
    rate: float,
    seconds: float,
    load: LoadReport,
    reported: list[Position],
) -> Callable[[], int]:
    """Put ``records`` at ``rate`` per second for ``seconds`` (the KPL-aggregated ones
    through an aggregating producer), the corrupt aggregates spread over the run; every
    position the producer reports goes to ``reported``; returns how many were put."""

    def flush(*producers: Any) -> None:
        for producer in producers:
            result = producer.flush()
            if result.failed:
                msg = f"{len(result.failed)} records not put: {result.failed[0].reason}"
                raise RuntimeError(msg)
            reported.extend((r.shard_id, r.sequence_number, r.sub_sequence_number)
                            for r in result.results)  # fmt: skip

    def target() -> int:
        from stream.producer import Producer  # noqa: PLC0415

        kinesis = client("kinesis")
        every = max(1, len(records) // (len(corrupt) + 1))
        sent = put = 0
        started = time.monotonic()
        with (
            Producer(stream, kinesis) as plain,
            Producer(stream, kinesis, aggregate=True) as aggregating,
        ):
            while sent < len(records):
                elapsed = time.monotonic() - started
                due = min(len(records), int(elapsed * rate) + 1)
                while sent < due:
                    data, key, aggregated = records[sent]
                    (aggregating if aggregated else plain).put(data, key)
                    sent += 1
                    put += 1
                    if sent % every == 0 and corrupt:
                        bad, bad_key = corrupt.pop()
                        plain.put(bad, bad_key)
                        put += 1
                flush(plain, aggregating)
                if elapsed < seconds:
                    time.sleep(_TICK_S)  # a steady rate: put what is due, ten times a second
            for bad, bad_key in corrupt:
                plain.put(bad, bad_key)
                put += 1
            flush(plain)
        load.produced_at = time.monotonic()
        load.produce_seconds = load.produced_at - started
        load.produced = put
        return put

    return target


class _Producing(threading.Thread):
    def __init__(self, target: Callable[[], int]) -> None:
        super().__init__(name="soak-producer", daemon=True)
        self.target_ = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.target_()
        except BaseException as exc:  # raised again by whoever joins
            self.error = exc


# -- the run -------------------------------------------------------------------------------


def run_load(
    minutes: float,
    rate: float,
    sample_s: float,
    log: Callable[[str], None],
    *,
    lease_s: float = 5.0,
    in_process: bool = False,
) -> LoadReport:
    """The example at ``rate`` records/s for ``minutes`` on a fresh local stack, two
    workers, a pause past the lease and a steal (see the module doc)."""
    from deploy.local.servers import LocalAWS  # noqa: PLC0415
    from stream.aws import reset_clients  # noqa: PLC0415

    seconds = minutes * 60.0
    load = LoadReport(minutes, rate, lease_s, in_process, warm_up_s=max(10.0, seconds / 4))
    folder = Path(tempfile.mkdtemp(prefix="shardline-soak-load-"))
    stack = LocalAWS().start()
    run: _Run | None = None
    try:
        with stack.activated():
            reset_clients()
            run = _Run(load, stack, folder, log, sample_s)
            run.run()
    finally:
        if run is not None:
            run.close()
        stack.stop()
        reset_clients()
    if load.reconciled:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        log(f"load: the workers' output is kept in {folder}")
    return load


class _Run:
    """One load run on a started stack (the environment points at it)."""

    def __init__(self, load: LoadReport, stack: Any, folder: Path,
                 log: Callable[[str], None], sample_s: float) -> None:  # fmt: skip
        from bench.soak_workers import FaultLog  # noqa: PLC0415
        from deploy.local import demo  # noqa: PLC0415
        from deploy.pipeline.config import load_plan_from_file  # noqa: PLC0415

        self.load, self.stack, self.folder, self.log = load, stack, folder, log
        self.sample_s = sample_s
        self.seconds = load.minutes * 60.0
        self.file = demo.EXAMPLE / "pipeline.yaml"
        self.plan = load_plan_from_file(self.file)  # ${OPENSEARCH_URL}: the stack's
        self.client = stack.client
        self.env = dict(os.environ)
        self.workers: list[Worker] = []
        self.sampler: _Sampler | None = None
        self.started = 0.0
        load.faults = self.faults = FaultLog()

    def worker(self, worker_id: str) -> Worker:
        from bench.soak_workers import Worker  # noqa: PLC0415

        made = Worker(worker_id, self.file, self.folder, self.stack.endpoint, self.env,
                      self.load.lease_s, self.load.in_process).start()  # fmt: skip
        self.workers.append(made)
        return made

    def run(self) -> None:
        from bench.soak_reconcile import read_stores, read_stream, reconcile_load  # noqa: PLC0415
        from bench.soak_workers import LeaseWatch  # noqa: PLC0415
        from deploy.local import demo  # noqa: PLC0415
        from deploy.local.dev import local_deploy  # noqa: PLC0415

        load, plan, client = self.load, self.plan, self.client
        traffic = demo.synthetic_traffic(max(1, int(load.rate * self.seconds)))
        local_deploy(plan, client, self.log)
        _open_shards(client("kinesis"), plan["stream"]["name"], SHARDS)
        demo._seed_users(plan, client)
        a, b = self.worker("soak-a"), self.worker("soak-b")
        self.watch = watch = LeaseWatch(plan, client)
        watch.wait("both workers holding leases",
                   lambda: bool(watch.held_by(a.worker_id) and watch.held_by(b.worker_id)),
                   120 + 20 * load.lease_s, self.workers)  # fmt: skip
        reported: list[Position] = []
        producer = _Producing(_steady_source(
            records=list(traffic.records), corrupt=list(traffic.corrupt_aggregates),
            stream=plan["stream"]["name"], client=client, rate=load.rate, seconds=self.seconds,
            load=load, reported=reported,
        ))  # fmt: skip
        self.started = time.monotonic()
        self.sampler = _Sampler(load.memory, self.workers, self.started, self.sample_s)
        self.sampler.start()
        producer.start()
        self.log(f"load: {len(traffic.records)} records at {load.rate:g}/s, "
                 f"workers {a.pid} {b.pid}")  # fmt: skip
        self.pause(a)
        self.steal()
        producer.join()
        if producer.error is not None:
            raise producer.error
        self.drain()
        live = [w for w in self.workers if w.alive()]
        for w in live:
            w.interrupt()  # all at once: each finishes its batches and releases its leases
        for w in live:
            if (code := w.stop()) != 0:
                load.problems.append(f"worker {w.worker_id} exited {code}: {w.tail(500)}")
        self.sampler.done.set()
        self.log("load: reading the stream and the stores back")
        stream = read_stream(client("kinesis"), plan["stream"]["name"],
                             aggregated=plan["stream"].get("aggregated") is True)  # fmt: skip
        stores = read_stores(plan, client)
        load.figures = reconcile_load(plan, stream, stores, reported)
        load.latency_ms = _latency(stores)
        faults = self.faults
        if not faults.happened:
            load.problems.append(
                f"the faults moved no lease (taken from the paused worker: "
                f"{faults.taken_from_paused}, stolen from live workers: {faults.stolen_from})"
            )

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.done.set()
        for w in self.workers:
            w.kill()

    # -- the faults ------------------------------------------------------------------------

    def at(self, fraction: float) -> None:
        """Wait until ``fraction`` of the load's time has passed (now if it has)."""
        due = self.started + fraction * self.seconds
        while time.monotonic() < due:
            time.sleep(_TICK_S)  # the schedule's resolution

    def event(self, text: str) -> None:
        self.faults.events.append((round(time.monotonic() - self.started, 1), text))
        self.log(f"load: {text}")

    def pause(self, paused: Worker) -> None:
        """At a quarter of the load: SIGSTOP for :data:`PAUSE_LEASES` lease durations,
        watching the others take its leases, then SIGCONT."""
        self.at(0.25)
        faults, watch, lease_s = self.faults, self.watch, self.load.lease_s
        held: set[tuple[str, str]] = set()

        def holding() -> bool:  # a lease of its may have just moved (a steal, a slow renewal)
            held.update(watch.held_by(paused.worker_id))
            return bool(held)

        watch.wait(f"{paused.worker_id} holding a lease", holding, 60 + 20 * lease_s,
                   self.workers)  # fmt: skip
        faults.paused_held = len(held)
        paused.pause()
        paused_at = time.monotonic()
        self.event(f"{paused.worker_id} stopped (SIGSTOP) holding {len(held)} leases")
        taken: set[tuple[str, str]] = set()
        while time.monotonic() < paused_at + PAUSE_LEASES * lease_s:
            owners = watch.owners()
            taken |= {w for w in held if owners.get(w) not in (None, paused.worker_id)}
            time.sleep(min(_TICK_S * 5, lease_s / 4))  # the lease table's polling interval
        paused.resume()
        faults.paused_s = time.monotonic() - paused_at
        faults.taken_from_paused = len(taken)
        self.event(f"{paused.worker_id} resumed (SIGCONT) after {faults.paused_s:.1f} s; "
                   f"{len(taken)} of its leases were taken meanwhile")  # fmt: skip

    def steal(self) -> None:
        """At half the load a third worker starts and steals; it is stopped cleanly at three
        quarters (and not before it held leases for one lease duration)."""
        self.at(0.5)
        faults, watch, lease_s = self.faults, self.watch, self.load.lease_s
        last = [watch.owners()]
        faults.free_at_steal = sum(owner is None for owner in last[0].values())
        third = self.worker("soak-c")
        self.event(f"{third.worker_id} started")
        stolen: dict[tuple[str, str], str | None] = {}  # lease → its owner before the third

        def stealing() -> bool:
            owners = watch.owners()
            for where, owner in owners.items():
                if owner == third.worker_id and where not in stolen:
                    stolen[where] = last[0].get(where)
            last[0] = owners
            return bool(stolen)

        faults.steal_s = watch.wait("the third worker stealing a lease", stealing,
                                    120 + 20 * lease_s, self.workers)  # fmt: skip
        self.event(f"{third.worker_id} holds {len(stolen)} leases, {faults.steal_s:.1f} s "
                   "after its start")  # fmt: skip
        until = max(self.started + 0.75 * self.seconds, time.monotonic() + lease_s)
        while time.monotonic() < until:
            stealing()
            time.sleep(min(_TICK_S * 5, lease_s / 4))  # the lease table's polling interval
        faults.stolen = len(stolen)
        faults.stolen_from = dict(Counter(str(owner) for owner in stolen.values()))
        code = third.stop()
        self.event(f"{third.worker_id} stopped (SIGINT), exit {code}; it held "
                   f"{len(stolen)} leases")  # fmt: skip
        if code != 0:
            self.load.problems.append(f"worker {third.worker_id} exited {code}: "
                                      f"{third.tail(500)}")  # fmt: skip

    def drain(self) -> None:
        """Wait until every shard of every function has stayed caught up :data:`_IDLE_S`
        (``shardline status``'s figures: no record after any checkpoint)."""
        from deploy.local.run import mapping_status  # noqa: PLC0415

        load = self.load
        deadline = time.monotonic() + 300 + load.produce_seconds
        idle_since = 0.0
        while True:
            rows = mapping_status(self.plan, self.client)
            caught_up = bool(rows) and all(
                r.behind == 0 and not r.behind_more for r in rows if r.behind is not None
            )
            now = time.monotonic()
            if not caught_up:
                idle_since = 0.0
            elif not idle_since:
                idle_since = now
            elif now - idle_since >= _IDLE_S:
                load.drain_seconds = max(0.001, idle_since - load.produced_at)
                self.log(f"load: drained {load.drain_seconds:.1f} s after the last record")
                return
            if now > deadline or not any(w.alive() for w in self.workers):
                load.problems.append("the workers did not catch up: " + "; ".join(
                    f"{r.function} {r.shard_id} behind {r.behind}" for r in rows))  # fmt: skip
                return
            time.sleep(0.5)  # the polling interval of the lease tables and the stream


def _open_shards(kinesis: Any, stream: str, count: int) -> None:
    """Make the (still empty) stream ``count`` shards wide, under the same name and ARN.

    An on-demand stream starts with four shards in AWS; moto's CloudFormation makes one, and
    with one shard per function two workers cannot share a function's work, nor can a third
    steal anything (:func:`stream.esm.checkpoints.decide_leases`). moto cannot split as
    Kinesis does either (its SplitShard keeps routing records to the closed parent: see
    ``aws_split_semantics`` in ``tests/integration/test_run.py``), so the stream is made
    again, empty, with ``count`` shards and the deployed stream's encryption."""
    summary = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]
    if summary["OpenShardCount"] >= count:
        return
    kinesis.delete_stream(StreamName=stream, EnforceConsumerDeletion=True)
    kinesis.get_waiter("stream_not_exists").wait(
        StreamName=stream, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100}
    )
    kinesis.create_stream(StreamName=stream, ShardCount=count)
    kinesis.get_waiter("stream_exists").wait(
        StreamName=stream, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100}
    )
    if summary.get("EncryptionType") == "KMS":
        kinesis.start_stream_encryption(
            StreamName=stream, EncryptionType="KMS", KeyId=summary["KeyId"]
        )


def _latency(stores: Stores) -> tuple[float, float] | None:
    """p50 and p99 of arrival in the stream → write in DynamoDB, over the records both an
    archive and a ``latest`` table hold (by ``event_id``)."""
    arrivals = {
        line["event_id"]: float(line["_arrival"])
        for lines in stores.lines.values()
        for line in lines
        if isinstance(line.get("event_id"), str)
    }
    latencies = sorted(
        (float(item["_written_at"]["N"]) - arrivals[event]) * 1000
        for items in stores.items.values()
        for item in items
        if (event := item.get("event_id", {}).get("S")) in arrivals and "_written_at" in item
    )
    if not latencies:
        return None
    last = len(latencies) - 1
    return (latencies[min(last, int(0.5 * len(latencies)))],
            latencies[min(last, int(0.99 * len(latencies)))])  # fmt: skip
