"""``shardline dev``: a pipeline on the embedded local AWS, deployed and run as in AWS.

The file is deployed to the local moto server with the real deploy code
(:func:`deploy.aws.stack.deploy`: the same template, change set and event source mappings), then
every function is fed by the local event source mapping with the *deployed* mappings'
settings (:class:`deploy.local.run.LocalRun` with ``settings="deployed"``), in worker processes
that are real Lambda runtimes. Records come from ``--produce`` (JSON lines, through the
producer) or from anyone writing to the stream.

Two differences from a deploy to AWS, both because moto stores a function's code but never
runs it (our workers run this checkout's code): the package holds our code and the plan but
no third-party dependencies (no pip download, so ``dev`` starts in seconds and works
offline), and it is built for this machine's CPU and Python. The stores the stack does not
own (lookup tables, target streams of ``kinesis`` sinks) are created empty when missing.
moto's CloudFormation has no ``AWS::Kinesis::StreamConsumer``: a ``consumer: efo``
function's mapping is deployed on the stream there, its consumer registered apart
(:func:`deploy.local.run.register_consumer`), and the run reads it as EFO from the file.

What lands is counted in the stores at the end (:func:`store_counts`), never by the runner.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    from deploy.aws.stack import DeployResult
    from deploy.local.produce import ProduceReport
    from deploy.local.run import FunctionRun, LocalRun
    from stream.plan import Plan

__all__ = [
    "DevReport",
    "PartlyProduced",
    "StoreCounts",
    "aggregate_refusal",
    "local_deploy",
    "produce_file",
    "run_dev",
    "store_counts",
]

BUILD_DIR = ".shardline/build"
#: The Lambda runtimes' output (logs and metrics, as CloudWatch Logs would get them).
LOG_DIR = ".shardline/logs"


def local_deploy(
    plan: Plan, client: Callable[[str], Any], log: Callable[[str], None]
) -> DeployResult:
    """Deploy ``plan`` to a local endpoint (see the module docstring), then create the
    stores the stack does not own."""
    from deploy.aws.package import build_package, native_architecture  # noqa: PLC0415
    from deploy.aws.stack import deploy  # noqa: PLC0415
    from deploy.local.servers import provision  # noqa: PLC0415

    architecture = native_architecture()
    python = f"{sys.version_info.major}.{sys.version_info.minor}"

    def package() -> Any:
        return build_package(
            plan, BUILD_DIR, architecture=architecture, python_version=python, requirements=[]
        )

    from deploy.local.run import register_consumer  # noqa: PLC0415

    efo = [name for name, f in plan["functions"].items() if f["batch"].get("consumer") == "efo"]
    result = deploy(
        _without_consumers(plan) if efo else plan,
        client,
        package=package,
        architecture=architecture,
        runtime=f"python{python}",
        log=log,
    )
    provision(plan, client)  # only what is missing: lookup tables, target streams
    for name in efo:
        register_consumer(plan, name, client)
    return result


def _without_consumers(plan: Plan) -> Plan:
    """``plan`` with every function on the shared throughput, for moto's CloudFormation."""
    import copy  # noqa: PLC0415

    shared = copy.deepcopy(plan)
    for function in shared["functions"].values():
        function["batch"]["consumer"] = "shared"
    return shared


def aggregate_refusal(plan: Plan) -> str | None:
    """Why producing KPL aggregates into ``plan``'s stream would lose records, or None.

    A function with FilterCriteria (``filter_pushdown: true``) never sees an aggregate in
    AWS: its data is not JSON, so the criteria drop it with every user record inside,
    silently. ``validate`` refuses pushdown on a stream declared ``aggregated: true``; a
    stream that is not declared so gets aggregates only by mistake, such as ``dev
    --aggregate``, which is refused with this reason before anything is produced.
    """
    pushed = [name for name, spec in plan["functions"].items() if spec.get("filter_criteria")]
    if not pushed:
        return None
    names = ", ".join(pushed)
    return (
        f"--aggregate would put KPL aggregates on stream {plan['stream']['name']!r}, and "
        f"{names} filter{'s' if len(pushed) == 1 else ''} with pushdown (filter_pushdown: "
        "true): AWS's FilterCriteria drop every aggregate, with all the records inside, "
        "before the function runs, and no dead letter says so. Produce without "
        "--aggregate, or set stream.aggregated: true and remove filter_pushdown"
    )


@dataclass
class StoreCounts:
    """What the stores hold: per sink, items, documents, lines or messages."""

    per_sink: dict[str, int] = field(default_factory=dict)
    dead_letters: Counter[str] = field(default_factory=Counter)  # "function: step: error"
    #: the dead-letter envelopes themselves (a queue's messages can be read only once
    #: before their visibility timeout, so they are kept here for whoever needs more)
    letters: list[dict[str, Any]] = field(default_factory=list)


def store_counts(plan: Plan, client: Callable[[str], Any]) -> StoreCounts:
    """Count what every sink of ``plan`` holds, reading each store (a scan, a count, the
    archive's lines, the queue's messages)."""
    from deploy.local.readback import (  # noqa: PLC0415
        archive_lines,
        dead_letters,
        search_count,
        table_items,
    )

    counts = StoreCounts()
    for name, spec in plan["sinks"].items():
        kind = spec["type"]
        if kind == "dynamodb":
            counts.per_sink[name] = len(table_items(client("dynamodb"), spec["table"]))
        elif kind == "opensearch":
            counts.per_sink[name] = search_count(spec["endpoint"], spec["index"])
        elif kind == "s3":
            # distinct records: a redelivered batch may be archived twice (at least once)
            lines = archive_lines(client("s3"), spec["bucket"], spec["prefix"])
            counts.per_sink[name] = len(
                {
                    (
                        ln.get("_shard"),
                        ln.get("_sequence"),
                        ln.get("_sub_sequence"),
                        ln.get("_part"),
                    )
                    for ln in lines
                }
            )
        elif kind == "sqs":
            letters = dead_letters(client("sqs"), spec["queue"], client("s3"))
            counts.per_sink[name] = len(letters)
            counts.letters += letters
            for letter in letters:
                counts.dead_letters[letter_reason(letter)] += 1
    return counts


def letter_reason(letter: Mapping[str, Any]) -> str:
    """One line saying why a message is in a dead-letter queue.

    A record's dead letter says its function, step and error. The event source mapping's
    on-failure message (a batch given up after its retries or by age) has none of these:
    it says the condition and where the batch is, and its records are not in it.

    >>> letter_reason({"function": "f", "step": "processors[0].f2c", "error": "KeyError: 't'"})
    "f: processors[0].f2c: KeyError: 't'"
    >>> letter_reason({"requestContext": {"condition": "RetryAttemptsExhausted",
    ...     "functionArn": "arn:aws:lambda:us-east-1:1:function:iot-convert"},
    ...     "KinesisBatchInfo": {"batchSize": 3, "shardId": "shardId-000000000000"}})
    'iot-convert: batch given up by the mapping (RetryAttemptsExhausted): 3 records of
    shardId-000000000000, still in the stream; see the function log for the error'
    """
    context = letter.get("requestContext")
    if isinstance(context, dict):
        info = letter.get("KinesisBatchInfo") or {}
        function = str(context.get("functionArn", "?")).rsplit(":", 1)[-1]
        size = info.get("batchSize", "?")
        return (
            f"{function}: batch given up by the mapping ({context.get('condition', '?')}): "
            f"{size} record{'' if size == 1 else 's'} of {info.get('shardId', '?')}, still in "
            "the stream; see the function log for the error"
        )
    return f"{letter.get('function', '?')}: {letter.get('step')}: {letter.get('error')}"


@dataclass
class DevReport:
    """What a ``dev`` run did: the deploy, the producer, the mappings, the stores."""

    deployed: DeployResult | None = None
    produced: Any = None  # what the producing side returned (a ProduceReport for files)
    runs: list[FunctionRun] = field(default_factory=list)
    stored: StoreCounts | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class PartlyProduced:
    """What :func:`produce_file` put before the run stopped it (Ctrl-C, ``--duration``):
    ``sent`` of the file's ``records`` (its non-blank lines) are on the stream. A rerun
    produces the file from its first line again, so the CLI says how far this one got."""

    path: Path
    sent: int
    records: int


class _Stopped(Exception):
    """Raised in the producing target by its progress callback once the run stops."""


class _Producing(threading.Thread):
    """Puts records onto the stream beside the mappings: ``target(progress)`` does the
    putting and returns its report; ``progress(n)`` counts bytes for the display, and
    stops the target (by raising) once ``stop`` is set: Ctrl-C stops producing too."""

    def __init__(
        self, target: Callable[[Callable[[int], None]], Any], stop: threading.Event
    ) -> None:
        super().__init__(name="dev-producer", daemon=True)
        self.target = target
        self.stop = stop
        self.report: Any = None
        self.error: BaseException | None = None
        self.sent_bytes = 0

    def run(self) -> None:
        def progress(size: int) -> None:
            if self.stop.is_set():
                raise _Stopped
            self.sent_bytes += size

        try:
            self.report = self.target(progress)
        except _Stopped:
            self.report = None  # stopped part way: what was put is in the stream
        except BaseException as exc:  # reported by the caller, never lost in a thread
            self.error = exc


def produce_file(
    path: Path, stream: str, client: Callable[[str], Any], *, key: str | None,
    rate: float | None, aggregate: bool,
) -> Callable[[Callable[[int], None]], ProduceReport | PartlyProduced]:  # fmt: skip
    """A producing target (see ``run_dev``) for the JSON lines of ``path``: the file's
    :class:`~deploy.local.produce.ProduceReport`, or :class:`PartlyProduced` when the run stops
    before its end (what was put is flushed first, so ``sent`` is on the stream)."""

    def target(progress: Callable[[int], None]) -> ProduceReport | PartlyProduced:
        from deploy.local.produce import produce_lines  # noqa: PLC0415
        from stream.producer import Producer  # noqa: PLC0415

        with (
            path.open("rb") as lines,
            Producer(stream, client("kinesis"), aggregate=aggregate) as p,
        ):
            try:
                return produce_lines(lines, p, key=key, rate=rate, progress=progress)
            except _Stopped:
                p.flush()  # the records already put reach the stream (or fail, counted)
                totals = p.totals
        with path.open("rb") as f:
            records = sum(1 for line in f if line.strip())
        return PartlyProduced(path, totals.records - totals.failures, records)

    return target


def run_dev(
    plan: Plan,
    client: Callable[[str], Any],
    *,
    produce: Path | None = None,
    key: str | None = None,
    rate: float | None = None,
    aggregate: bool = False,
    source: Callable[[Callable[[int], None]], Any] | None = None,
    prepare: Callable[[], None] | None = None,
    duration: float | None = None,
    until_idle: float | None = None,
    in_process: bool = False,
    worker_id: str = "dev",
    stop: threading.Event | None = None,
    log: Callable[[str], None] = lambda _line: None,
    on_tick: Callable[[LocalRun, _Producing | None], None] | None = None,
    flush_every: float | None = None,
) -> DevReport:
    """Deploy ``plan`` locally, produce ``produce`` (if given) and run every function until
    ``stop`` is set, ``duration`` has passed, or (with ``until_idle``) the producer is done
    and every mapping has been idle that long. Then count what the stores hold.

    ``source`` replaces ``produce``: called in a thread with a progress callback, it puts
    records itself and returns what :attr:`DevReport.produced` should hold. ``prepare`` runs
    after the deploy, before the mappings start (to seed a lookup table, say).

    The environment must already point boto3 and ``${OPENSEARCH_URL}`` at the local stack
    (:meth:`deploy.local.servers.LocalAWS.activated`): the workers' sinks read it.
    ``flush_every`` replaces the windowed functions' ``flush_s`` (:class:`LocalRun`).
    """
    from deploy.local.run import LocalRun  # noqa: PLC0415

    started = time.monotonic()
    report = DevReport()
    report.deployed = local_deploy(plan, client, log)
    local = LocalRun(
        plan, worker_id=worker_id, in_process=in_process, client=client, settings="deployed",
        log_dir=LOG_DIR, flush_every=flush_every,
    )  # fmt: skip
    if prepare is not None:
        prepare()
    local.build()
    if source is None and produce is not None:
        stream = plan["stream"]["name"]
        source = produce_file(produce, stream, client, key=key, rate=rate, aggregate=aggregate)
    stop = stop or threading.Event()
    producer = None
    if source is not None:
        producer = _Producing(source, stop)
        producer.start()
    deadline = None if duration is None else started + duration
    idle_since: list[float] = []

    def tick(runs: list[FunctionRun]) -> None:
        if on_tick is not None:
            on_tick(local, producer)
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            stop.set()
        if until_idle is None:
            return
        producing = producer is not None and producer.is_alive()
        if not producing and all(r.mapping.caught_up for r in runs):
            if not idle_since:
                idle_since.append(now)
            if now - idle_since[0] >= until_idle:
                stop.set()
        else:
            idle_since.clear()

    report.runs = local.run(stop, on_tick=tick)
    if producer is not None:
        producer.join()
        if producer.error is not None:
            raise producer.error
        report.produced = producer.report
    report.stored = store_counts(plan, client)
    report.seconds = time.monotonic() - started
    return report
