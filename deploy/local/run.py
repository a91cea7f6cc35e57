"""``shardline run``: a pipeline's functions fed from its stream by the local event source
mapping, with checkpoints and leases in DynamoDB, so a stopped run resumes where it left off
and several runs (on one machine or several) share the shards.

Per function, as Lambda has one event source mapping per function:

* a lease table ``<pipeline>-<function>-leases`` (the KCL's "application"), created when
  missing; each run is a worker with its own id;
* the function runs in worker processes that are real Lambda runtimes (``awslambdaric``
  against a local Runtime API, :mod:`stream.esm.sandbox`), or in this process with
  ``in_process`` (faster to start; a timeout cannot cut a handler short);
* read throughput as in AWS: each shard's 5 reads/s and 2 MB/s are split evenly among the
  file's functions without ``consumer: efo`` (:func:`stream.esm.rules.next_read_at`), so a
  third function slows the others down; a function with ``consumer: efo`` registers its
  consumer (``<pipeline>-<function>``) and reads with a budget of its own. The split counts
  every shared function of the file, so runs of its functions in several processes pace as
  one; not modelled: other readers of the stream (another pipeline, ``tail``, a KCL app),
  an idle function leaving its share to the others, Kinesis's throttling errors (each
  function keeps to its share instead) and EFO's push delivery (it polls, like the others);
* the on-failure destination is the function's ``on_failure`` sink: an SQS queue gets the
  AWS-shaped metadata message, an S3 bucket an object with the whole invocation record (the
  message plus ``payload``, the batch's event), under Lambda's key layout;
* the mapping's settings (batch size, window, starting position, parallelization, bisect,
  retries, record age, filter criteria, on-failure destination) come from the compiled plan
  or, for a pipeline deployed to the endpoint (``shardline deploy``), from its event source
  mapping as the Lambda API lists it (:func:`deployed_settings`), so a run behaves as the
  deployed stack does even when the file has changed since.

The compiled plan that workers load is written to ``.shardline/`` in the working folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from deploy.errors import EXIT_USAGE, DeployError
from deploy.names import function_name, lease_table_name, stream_consumer_name

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from deploy.local.flush import Ticker
    from stream.esm.mapping import EventSourceMapping, MappingStats
    from stream.esm.rules import MappingSettings
    from stream.plan import FunctionPlan, Plan

__all__ = [
    "FunctionInitError",
    "FunctionRun",
    "LocalRun",
    "RunError",
    "ShardStatus",
    "deployed_settings",
    "keeps_payload",
    "mapping_status",
    "on_failure_destination",
    "register_consumer",
    "shared_share",
    "stop_on_signals",
]

STATE_DIR = ".shardline"
#: Where ``LocalRun`` takes mapping settings from: the plan, the deployed mapping, or the
#: deployed one when there is one (``auto``).
SETTINGS_SOURCES = ("plan", "deployed", "auto")


def on_failure_destination(
    plan: Plan,
    function: str,
    client: Callable[[str], Any],
    destination_arn: str | None = None,
) -> Callable[[Mapping[str, Any]], None] | None:
    """Where the mapping sends batches it gives up on: the function's ``on_failure`` sink,
    or the queue or bucket ``destination_arn`` names (a deployed mapping's).

    Lambda sends SQS destinations the metadata message alone (the records stay in the
    stream until retention ends) and S3 destinations an object per batch under
    ``aws/lambda/<mapping>/<shard>/YYYY/MM/DD/<time>-<uuid>`` holding the whole invocation
    record: the message and the batch's event under ``payload`` (the mapping adds it when
    :func:`keeps_payload`); both are reproduced. Errors propagate: the mapping keeps the
    batch and sends the message again later.
    """
    spec = _on_failure_spec(plan, function, destination_arn)
    if spec is None:
        return None
    mapping_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{plan['name']}/{function}"))
    if spec["type"] == "sqs":
        sqs = client("sqs")
        queue_url: list[str] = []

        def send(message: Mapping[str, Any]) -> None:
            if not queue_url:
                queue_url.append(sqs.get_queue_url(QueueName=spec["queue"])["QueueUrl"])
            sqs.send_message(QueueUrl=queue_url[0], MessageBody=orjson.dumps(message).decode())

        return send
    if spec["type"] == "s3":
        s3 = client("s3")

        def put(message: Mapping[str, Any]) -> None:
            shard = message["KinesisBatchInfo"]["shardId"]
            when = datetime.now(UTC)
            key = (
                f"aws/lambda/{mapping_id}/{shard}/{when:%Y/%m/%d}/"
                f"{when:%Y-%m-%dT%H.%M.%S}-{uuid.uuid4()}"
            )
            s3.put_object(Bucket=spec["bucket"], Key=key, Body=orjson.dumps(message))

        return put
    return None


def keeps_payload(
    plan: Plan, function: str, destination_arn: str | None = None
) -> bool:
    """Whether the function's on-failure destination is a bucket, which AWS sends whole
    invocation records (the event under ``payload``), not the metadata alone.

    >>> plan = {"sinks": {"dlq": {"type": "sqs"}, "vault": {"type": "s3", "bucket": "v"}},
    ...         "functions": {"a": {"on_failure": "vault"}, "b": {"on_failure": "dlq"}}}
    >>> keeps_payload(plan, "a"), keeps_payload(plan, "b")
    (True, False)
    >>> keeps_payload(plan, "b", "arn:aws:s3:::v")  # a deployed mapping's destination
    True
    """
    spec = _on_failure_spec(plan, function, destination_arn)
    return spec is not None and spec.get("type") == "s3"


def _on_failure_spec(
    plan: Plan, function: str, destination_arn: str | None
) -> Mapping[str, Any] | None:
    if destination_arn is not None:
        return _destination_spec(destination_arn)
    name = plan["functions"][function].get("on_failure")
    spec: Mapping[str, Any] | None = plan["sinks"].get(name) if name else None
    return spec


def _destination_spec(arn: str) -> dict[str, str] | None:
    """``arn:aws:sqs:REGION:ACCOUNT:NAME`` or ``arn:aws:s3:::BUCKET`` as a sink spec.

    >>> _destination_spec("arn:aws:sqs:us-east-1:123456789012:clickstream-dlq")
    {'type': 'sqs', 'queue': 'clickstream-dlq'}
    >>> _destination_spec("arn:aws:s3:::archive")
    {'type': 's3', 'bucket': 'archive'}
    """
    parts = arn.split(":", 5)
    if len(parts) == 6 and parts[2] == "sqs":
        return {"type": "sqs", "queue": parts[5]}
    if len(parts) == 6 and parts[2] == "s3":
        return {"type": "s3", "bucket": parts[5]}
    return None  # SNS, Kafka: not reproduced locally


def deployed_settings(
    plan: Plan, function: str, client: Callable[[str], Any]
) -> tuple[MappingSettings, str | None] | None:
    """The settings and on-failure destination ARN of the function's deployed mapping on
    the plan's stream (``ListEventSourceMappings``); None when it is not deployed."""
    from stream.esm.rules import MappingSettings  # noqa: PLC0415

    lam = client("lambda")
    name = function_name(plan, function)
    try:
        timeout = lam.get_function_configuration(FunctionName=name)["Timeout"]
    except lam.exceptions.ResourceNotFoundException:
        return None
    stream = plan["stream"]["name"]
    found = [
        m
        for page in lam.get_paginator("list_event_source_mappings").paginate(FunctionName=name)
        for m in page["EventSourceMappings"]
        if _reads_stream(m.get("EventSourceArn", ""), stream)
    ]
    # the live one, newest first: during a replacement the old one may still be listed
    found = sorted(
        (m for m in found if m.get("State") not in {"Deleting", "Disabled"}),
        key=lambda m: str(m.get("LastModified", "")),
        reverse=True,
    )
    if not found:
        return None
    mapping = found[0]
    batch = plan["functions"][function].get("batch") or {}
    if mapping.get("StartingPosition") == "AT_TIMESTAMP" and not mapping.get(
        "StartingPositionTimestamp"
    ):  # moto keeps it but does not list it; AWS lists it
        mapping = {**mapping, "StartingPositionTimestamp": batch.get("starting_timestamp")}
    destination = (mapping.get("DestinationConfig") or {}).get("OnFailure", {}).get("Destination")
    return MappingSettings.from_lambda(mapping, timeout), destination


def _reads_stream(arn: str, stream: str) -> bool:
    """Whether a mapping's source is the stream or an enhanced fan-out consumer of it.

    >>> _reads_stream("arn:aws:kinesis:us-east-1:1:stream/s", "s")
    True
    >>> _reads_stream("arn:aws:kinesis:us-east-1:1:stream/s/consumer/p-f:1700000000", "s")
    True
    >>> _reads_stream("arn:aws:kinesis:us-east-1:1:stream/s2", "s")
    False
    """
    _, _, resource = arn.partition(":stream/")
    return resource.split("/consumer/", 1)[0] == stream


def register_consumer(plan: Plan, function: str, client: Callable[[str], Any]) -> str:
    """Register the function's enhanced fan-out consumer on the plan's stream (kept when it
    is there already, as after an earlier run or a deploy); returns its ARN.

    moto implements RegisterStreamConsumer but not SubscribeToShard: the mapping still reads
    with GetRecords, with the consumer's own budget (:func:`stream.esm.rules.next_read_at`).
    """
    kinesis = client("kinesis")
    stream = plan["stream"]["name"]
    stream_arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"][
        "StreamARN"
    ]
    name = stream_consumer_name(plan, function)
    # looked up first: moto registers a second consumer of the same name where AWS refuses
    try:
        found = kinesis.describe_stream_consumer(StreamARN=stream_arn, ConsumerName=name)
        return str(found["ConsumerDescription"]["ConsumerARN"])
    except kinesis.exceptions.ResourceNotFoundException:
        pass
    try:
        made = kinesis.register_stream_consumer(StreamARN=stream_arn, ConsumerName=name)
    except kinesis.exceptions.ResourceInUseException:  # another run registered it meanwhile
        found = kinesis.describe_stream_consumer(StreamARN=stream_arn, ConsumerName=name)
        return str(found["ConsumerDescription"]["ConsumerARN"])
    return str(made["Consumer"]["ConsumerARN"])


def shared_share(settings: Mapping[str, MappingSettings]) -> int:
    """How many functions split each shard's shared read throughput: those of the plan's
    stream without an enhanced fan-out consumer (at least 1).

    >>> from stream.esm.rules import MappingSettings
    >>> shared_share({"a": MappingSettings(), "b": MappingSettings(consumer="efo")})
    1
    """
    return max(1, sum(s.consumer != "efo" for s in settings.values()))


class FunctionInitError(DeployError, RuntimeError):
    """A function's Lambda runtime failed its init: its chain or sinks could not be built
    from the plan (a plugin refusing its arguments in a plan compiled elsewhere, or a plugin
    changed since). Lambda would fail every batch with it until the function changes; a
    local run stops and says why.

    Attributes:
        function: the function's name in the plan.
        error: what the runtime posted to ``/init/error`` (``errorType``, ``errorMessage``).
    """

    def __init__(self, function: str, error: Mapping[str, Any]) -> None:
        self.function = function
        self.error = dict(error)
        kind = error.get("errorType") or "Runtime.Unknown"
        message = str(error.get("errorMessage") or "").rstrip(".")
        trace = error.get("stackTrace") or []
        # awslambdaric's frames read '  File "x.py", line 5, in __init__\n    raise ...\n'
        where = str(trace[-1]).strip().splitlines()[0] if trace else ""
        super().__init__(
            f"function {function!r} failed its init in the Lambda runtime, so every batch "
            f"would fail: {kind}: {message}"
            + (f" ({where})" if where else "")
            + "; fix the plan or the plugin and run again"
        )


@dataclass
class FunctionRun:
    """One function's mapping and what it holds (its worker pool, if any)."""

    name: str
    mapping: EventSourceMapping
    closers: list[Callable[[], None]] = field(default_factory=list)
    stats: MappingStats | None = None

    @property
    def init_error(self) -> dict[str, Any] | None:
        """The error its Lambda runtime's init failed with, if one did (None in-process,
        where the chain is built before the run starts)."""
        error: dict[str, Any] | None = getattr(self.mapping.invoker, "init_error", None)
        return error


class RunError(DeployError, LookupError):
    """The functions or the settings asked for do not fit the plan (no such function) or
    the endpoint (``settings="deployed"`` and no deployed mapping); a usage error."""

    exit_code = EXIT_USAGE


class LocalRun:
    """The mappings of a plan's functions, built and run together.

    Args:
        plan: the compiled plan.
        functions: which functions to run (default: all).
        worker_id: this worker's id in the lease tables (unique among running workers;
            the same id after a restart takes its leases back at once).
        in_process: run handlers in this process instead of Lambda runtime workers.
        client: boto3 client factory (default: the shared runtime clients).
        state_dir: where the plan file for workers goes.
        lease_duration_s: how long a lease lasts without renewal.
        settings: ``plan`` (the file's), ``deployed`` (the deployed mapping's; an error when
            a function has none) or ``auto`` (deployed when there is one, else the file's).
        log_dir: where the runtimes' output goes, ``FUNCTION.log`` each (default: this
            process's stdout and stderr).
        log_to: without ``log_dir``, a file descriptor (or file) for the runtimes' output
            instead of this process's stdout: ``run --json`` keeps stdout for its summary.
        flush_every: seconds between the scheduled window flushes of every function that
            has them, instead of its ``flush_s`` (``--flush-every``: 60 s is long for a
            test). :meth:`run` sends each windowed function (a window step with ``state:
            dynamodb`` and ``flush_s`` not 0) the flush event through its own invoker, as
            its EventBridge rule does in AWS (:mod:`deploy.local.flush`).
    """

    def __init__(
        self,
        plan: Plan,
        *,
        functions: list[str] | None = None,
        worker_id: str | None = None,
        in_process: bool = False,
        client: Callable[[str], Any] | None = None,
        state_dir: Path | str = STATE_DIR,
        lease_duration_s: float = 10.0,
        settings: str = "plan",
        log_dir: Path | str | None = None,
        log_to: Any = None,
        flush_every: float | None = None,
    ) -> None:
        from stream.aws import aws_client  # noqa: PLC0415

        if settings not in SETTINGS_SOURCES:
            msg = f"settings {settings!r}: expected one of {', '.join(SETTINGS_SOURCES)}"
            raise ValueError(msg)

        self.plan = plan
        self.names = functions or list(plan["functions"])
        unknown = [f for f in self.names if f not in plan["functions"]]
        if unknown:
            known = ", ".join(plan["functions"])
            msg = f"no function {', '.join(map(repr, unknown))} in the plan (known: {known})"
            raise RunError(msg)
        from deploy.pipeline.steps import window_state_problems  # noqa: PLC0415

        if problems := window_state_problems(plan, self.names):
            raise RunError("; ".join(problems))
        self.worker_id = worker_id or f"{_hostname()}-{uuid.uuid4().hex[:8]}"
        self.in_process = in_process
        self.client = client or aws_client
        self.state_dir = Path(state_dir)
        self.lease_duration_s = lease_duration_s
        self.settings = settings
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.log_to = log_to
        if flush_every is not None and not flush_every > 0:
            msg = f"flush_every {flush_every!r}: expected seconds above 0"
            raise ValueError(msg)
        self.flush_every = flush_every
        #: per windowed function, its flush ticker while :meth:`run` runs
        self.tickers: dict[str, Ticker] = {}
        #: per function, where its settings came from: "plan" or "deployed"
        self.sources: dict[str, str] = {}
        #: per function with ``consumer: efo``, the ARN of its registered consumer
        self.consumer_arns: dict[str, str] = {}
        self.runs: list[FunctionRun] = []

    def build(self) -> list[FunctionRun]:
        """Create the lease tables and the mappings (workers start on first invocation)."""
        from stream.esm.checkpoints import LeaseTable  # noqa: PLC0415
        from stream.esm.mapping import EventSourceMapping  # noqa: PLC0415
        from stream.esm.rules import MappingSettings  # noqa: PLC0415

        plan_file = self._write_plan()
        stream = self.plan["stream"]["name"]
        # every function's settings first: a missing deployment fails before tables are made
        chosen = {name: self._settings(name) for name in self.names}
        # the shard's shared throughput is split among every shared function of the file,
        # whether this process runs it or another one does (as in AWS, where all consume)
        every = {
            name: chosen[name][0] if name in chosen else MappingSettings.from_plan(spec)
            for name, spec in self.plan["functions"].items()
        }
        share = shared_share(every)
        for name in self.names:
            spec = self.plan["functions"][name]
            table = LeaseTable(
                lease_table_name(self.plan, name),
                self.worker_id,
                client=self.client("dynamodb"),
                lease_duration_s=self.lease_duration_s,
            )
            table.ensure_table()
            settings, destination = chosen[name]
            efo = settings.consumer == "efo"
            if efo:
                self.consumer_arns[name] = register_consumer(self.plan, name, self.client)
            invoker, closers = self._invoker(name, spec, plan_file)
            mapping = EventSourceMapping(
                stream,
                settings,
                invoker,
                table,
                client=self.client("kinesis"),
                function_name=function_name(self.plan, name),
                on_failure=on_failure_destination(self.plan, name, self.client, destination),
                on_failure_payload=keeps_payload(self.plan, name, destination),
                share=1 if efo else share,
            )
            self.runs.append(FunctionRun(name, mapping, closers))
        return self.runs

    def run(
        self,
        stop: threading.Event,
        *,
        until_idle_s: float | None = None,
        on_tick: Callable[[list[FunctionRun]], None] | None = None,
    ) -> list[FunctionRun]:
        """Run every mapping in its own thread until ``stop`` is set (or, with
        ``until_idle_s``, until every mapping has been caught up for that long), and a
        flush ticker per windowed function (:attr:`tickers`), stopped with them.

        Raises:
            FunctionInitError: a function's Lambda runtime failed its init; every mapping
                is stopped first, within a tick (0.2 s) of the failed invocation, so before
                the mapping's first retry (2 s later) unless ``max_retries`` is 0.
        """
        if not self.runs:
            self.build()
        threads = []
        for run in self.runs:

            def target(run: FunctionRun = run) -> None:
                run.stats = run.mapping.run(stop)

            thread = threading.Thread(target=target, name=f"esm-{run.name}", daemon=True)
            thread.start()
            threads.append(thread)
        self._start_tickers(stop)
        idle_since: float | None = None
        failed: FunctionRun | None = None
        try:
            while not stop.is_set() and any(t.is_alive() for t in threads):
                stop.wait(0.2)
                failed = next((r for r in self.runs if r.init_error is not None), None)
                if failed is not None:
                    break
                if on_tick is not None:
                    on_tick(self.runs)
                if until_idle_s is None:
                    continue
                if all(r.mapping.caught_up for r in self.runs):
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since >= until_idle_s:
                        stop.set()
                else:
                    idle_since = None
        finally:
            stop.set()
            for thread in threads:
                thread.join()
            for ticker in self.tickers.values():
                ticker.join()  # before the workers stop: a flush in flight finishes
            self.close()
        if failed is not None and failed.init_error is not None:
            raise FunctionInitError(failed.name, failed.init_error)
        return self.runs

    def _start_tickers(self, stop: threading.Event) -> None:
        """A flush ticker per function with scheduled flushes, on its mapping's invoker."""
        from deploy.local.flush import Ticker, flush_period  # noqa: PLC0415

        for run in self.runs:
            spec = self.plan["functions"][run.name]
            period = flush_period(spec, self.flush_every)
            if period is None:
                continue
            ticker = Ticker(
                run.name,
                run.mapping.invoker,
                period,
                timeout_s=float(spec.get("timeout_s", 60)),
                stop=stop,
            )
            self.tickers[run.name] = ticker
            ticker.start()

    def close(self) -> None:
        """Stop worker processes. Idempotent."""
        for run in self.runs:
            for close in run.closers:
                with contextlib.suppress(Exception):
                    close()
            run.closers.clear()

    def _settings(self, name: str) -> tuple[MappingSettings, str | None]:
        """The function's settings and on-failure ARN (None: its ``on_failure`` sink)."""
        from stream.esm.rules import MappingSettings  # noqa: PLC0415

        if self.settings != "plan":
            from botocore.exceptions import ClientError  # noqa: PLC0415

            try:
                deployed = deployed_settings(self.plan, name, self.client)
            except ClientError:
                if self.settings == "deployed":
                    raise
                deployed = None  # auto: an endpoint without the Lambda API, or no access
            if deployed is not None:
                self.sources[name] = "deployed"
                if self.plan["functions"][name]["batch"].get("consumer") == "efo":
                    # moto's CloudFormation cannot make the consumer: `dev` deploys the
                    # mapping on the stream and registers the consumer apart
                    deployed = (dataclasses.replace(deployed[0], consumer="efo"), deployed[1])
                return deployed
            if self.settings == "deployed":
                msg = (
                    f"function {name!r} has no event source mapping on stream "
                    f"{self.plan['stream']['name']!r} at this endpoint: deploy it first "
                    "(shardline deploy FILE --endpoint-url URL), or use the file's settings"
                )
                raise RunError(msg)
        self.sources[name] = "plan"
        return MappingSettings.from_plan(self.plan["functions"][name]), None

    def _write_plan(self) -> Path:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / f"plan-{self.plan['name']}.json"
        path.write_bytes(orjson.dumps(self.plan, option=orjson.OPT_INDENT_2))
        return path.resolve()

    def _invoker(
        self, name: str, spec: FunctionPlan, plan_file: Path
    ) -> tuple[Any, list[Callable[[], None]]]:
        deployed_name = function_name(self.plan, name)
        if self.in_process:
            from stream.esm.invoke import InProcessInvoker  # noqa: PLC0415
            from stream.runtime import build_runner  # noqa: PLC0415

            runner = build_runner(self.plan, name)

            def handler(event: dict[str, Any], context: Any) -> Any:
                if event.get("shardline") == "flush":  # as stream.lambda_handler does
                    return runner.flush(event, context)
                return runner.handle(event).response

            def close_sinks() -> None:
                for sink in runner.sinks.values():
                    sink.close()

            invoker = InProcessInvoker(
                handler, function_name=deployed_name, memory_mb=spec.get("memory_mb", 128)
            )
            return invoker, [close_sinks]
        from stream.esm.sandbox import WorkerPool  # noqa: PLC0415

        parallel = spec.get("batch", {}).get("parallelization", 1)
        log = self.log_to  # None: this process's stdout and stderr
        opened = None
        if self.log_dir is not None:  # what CloudWatch Logs would get: logs and EMF lines
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log = opened = (self.log_dir / f"{name}.log").open("ab")
        pool = WorkerPool(
            {"SHARDLINE_PIPELINE": str(plan_file), "SHARDLINE_FUNCTION": name},
            size=max(1, min(4, parallel * 2)),
            function_name=deployed_name,
            memory_mb=spec.get("memory_mb", 128),
            log=log,
        )
        return pool, [pool.close] if opened is None else [pool.close, opened.close]


def _hostname() -> str:
    import socket  # noqa: PLC0415

    return socket.gethostname().split(".")[0] or "worker"


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Set ``stop`` on SIGINT and SIGTERM (a clean stop: checkpoints saved, leases released),
    restoring the previous handlers afterwards."""
    import signal  # noqa: PLC0415

    def handle(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass(frozen=True)
class ShardStatus:
    """One shard of one function's mapping, as ``shardline status`` shows it."""

    function: str
    shard_id: str
    owner: str
    checkpoint: str
    behind: int | None  # records after the checkpoint (None: finished or unknown)
    behind_more: bool  # there are more than one GetRecords call could count
    millis_behind: int | None


def mapping_status(
    plan: Plan, client: Callable[[str], Any], functions: list[str] | None = None
) -> list[ShardStatus]:
    """Per function and shard: owner, checkpoint and how far it is behind the newest record
    (one GetRecords from the checkpoint: its record count and ``MillisBehindLatest``)."""
    from stream.esm.checkpoints import LeaseTable, LeaseTableError  # noqa: PLC0415

    kinesis = client("kinesis")
    stream = plan["stream"]["name"]
    rows: list[ShardStatus] = []
    for name in functions or list(plan["functions"]):
        table = LeaseTable(lease_table_name(plan, name), "status", client=client("dynamodb"))
        try:
            leases = table.leases()
        except LeaseTableError as exc:
            if exc.code != "ResourceNotFoundException":
                raise  # unreachable, throttled, no access: not "never run"
            never = "never run (no lease table)"
            rows.append(ShardStatus(name, "-", "-", never, None, False, None))
            continue
        for lease in sorted(leases, key=lambda lease: lease.shard_id):
            behind = millis = None
            more = False
            if not lease.finished:
                with contextlib.suppress(Exception):
                    request = lease.iterator_request()
                    iterator = kinesis.get_shard_iterator(StreamName=stream, **request)
                    page = kinesis.get_records(
                        ShardIterator=iterator["ShardIterator"], Limit=10_000
                    )
                    behind = len(page["Records"])
                    more = behind == 10_000
                    millis = page.get("MillisBehindLatest")
            rows.append(
                ShardStatus(name, lease.shard_id, lease.owner or "-", lease.checkpoint,
                            behind, more, millis)
            )  # fmt: skip
    return rows
