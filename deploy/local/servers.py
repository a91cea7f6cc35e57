"""The embedded local AWS: a moto server and an osmem-server on loopback, and the resources a
pipeline's sinks need, created in them.

Everything binds to 127.0.0.1 on free ports (``ThreadedMotoServer`` binds every interface
unless told otherwise). :meth:`LocalAWS.environ` gives the variables that point boto3 and the
pipeline file's ``${OPENSEARCH_URL}`` at the servers, so the sinks run their real code,
unchanged, against them: botocore reads ``AWS_ENDPOINT_URL``.

:func:`provision` creates what a compiled plan names: the stream, a table per DynamoDB sink
and lookup (keyed by the configured attribute, a string; ``append`` tables add the
``_position`` sort key), the buckets and queues. It is the local stand-in for the
CloudFormation stack until ``shardline deploy`` targets the local endpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from typing import TYPE_CHECKING, Any, Self

from deploy.names import window_tables

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from types import TracebackType

    from stream.plan import Plan

__all__ = ["LocalAWS", "local_down", "local_up", "provision", "resource_names", "running_local"]

#: Where ``shardline local up`` keeps what it started (pids, addresses, logs).
STATE_DIR = ".shardline/local"

REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


class LocalAWS:
    """The moto server and osmem-server, started together, stopped together.

    Args:
        opensearch: also start the osmem-server (the OpenSearch API).
        subprocess: run moto in its own process rather than a thread of this one, so the
            server does not share this process's GIL with the client: what the demo and
            the benchmarks want on a 2-core machine. Tests use the in-process server.
        startup_timeout: seconds to wait for the servers to answer.
    """

    def __init__(
        self, *, opensearch: bool = True, subprocess: bool = True, startup_timeout: float = 60
    ) -> None:
        self._want_opensearch = opensearch
        self._subprocess = subprocess
        self._timeout = startup_timeout
        self._moto: Any = None
        self._osmem: Any = None
        self.endpoint = ""
        self.opensearch_url = ""

    def start(self) -> Self:
        """Start both servers on free loopback ports; returns when they answer."""
        if self._subprocess:
            self._moto = _MotoProcess.start(self._timeout)
            self.endpoint = self._moto.url
        else:
            from moto.server import ThreadedMotoServer  # noqa: PLC0415  # local extra only

            from deploy.local.motofix import patch_moto  # noqa: PLC0415

            patch_moto()
            self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            self._moto.start()
            host, port = self._moto.get_host_and_port()
            self.endpoint = f"http://{host}:{port}"
        if self._want_opensearch:
            self._osmem = _OsmemProcess.start(self._timeout)
            self.opensearch_url = self._osmem.url
        return self

    def stop(self) -> None:
        """Stop what was started. Idempotent."""
        if self._osmem is not None:
            self._osmem.close()
            self._osmem = None
        if self._moto is not None:
            self._moto.stop()
            self._moto = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def environ(self) -> dict[str, str]:
        """Variables that send boto3 (and ``${OPENSEARCH_URL}``) to the local servers."""
        env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            **CREDENTIALS,
        }
        if self.opensearch_url:
            env["OPENSEARCH_URL"] = self.opensearch_url
        return env

    @contextlib.contextmanager
    def activated(self) -> Iterator[None]:
        """Set :meth:`environ` in ``os.environ`` for the duration, then restore it."""
        saved = {k: os.environ.get(k) for k in self.environ()}
        os.environ.update(self.environ())
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    @classmethod
    def attach(cls, endpoint: str, opensearch_url: str = "") -> LocalAWS:
        """A handle on servers started by someone else (``shardline local up``): the same
        environment and clients; :meth:`stop` leaves the servers running."""
        stack = cls(opensearch=bool(opensearch_url))
        stack.endpoint, stack.opensearch_url = endpoint, opensearch_url
        return stack

    def client(self, service: str) -> Any:
        """A boto3 client for ``service`` bound to the moto server."""
        import boto3  # noqa: PLC0415

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )


class _MotoProcess:
    """``moto.server`` (through :mod:`deploy.local.motofix`) on a free loopback port, in a
    child process."""

    def __init__(self, process: subprocess.Popen[bytes], url: str) -> None:
        self.process = process
        self.url = url

    @classmethod
    def start(cls, timeout: float) -> _MotoProcess:
        with socket.socket() as probe:  # the OS picks a free port; moto binds it right after
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        # moto.server, with its Kinesis safe for calls at once and its PutObject checking
        # checksums (deploy.local.motofix)
        command = [sys.executable, "-m", "deploy.local.motofix", "-H", "127.0.0.1", "-p", str(port)]
        process = subprocess.Popen(  # our own interpreter and module
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                msg = f"the moto server exited with status {process.returncode} at startup"
                raise RuntimeError(msg)
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                    return cls(process, url)
            except OSError:
                time.sleep(0.05)  # polling a child process's port, bounded by the deadline
        process.kill()
        msg = f"the moto server did not answer on {url} within {timeout} s"
        raise RuntimeError(msg)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class _OsmemProcess:
    """The osmem-server binary on a free loopback port; it prints its URL when ready.

    Started directly rather than through ``osmem_server.OsmemServer`` so that its shutdown
    message does not land in the middle of the demo's output.
    """

    def __init__(self, process: subprocess.Popen[str], url: str) -> None:
        self.process = process
        self.url = url

    @classmethod
    def start(cls, timeout: float) -> _OsmemProcess:
        from osmem_server import resolve_binary  # noqa: PLC0415  # local extra only

        command = [resolve_binary(), "--addr", "127.0.0.1:0", "--no-ja"]
        command += ["--parent-pid", str(os.getpid())]
        process = subprocess.Popen(  # our own pinned binary
            command,
            stdin=subprocess.PIPE,  # the server exits when this closes: no orphan
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        found: list[str] = []

        def read() -> None:
            for line in process.stdout or ():
                with contextlib.suppress(ValueError):
                    message = json.loads(line)
                    if isinstance(message, dict) and "url" in message:
                        found.append(message["url"])
                        return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        if not found:
            process.kill()
            msg = f"the osmem-server did not report its address within {timeout} s"
            raise RuntimeError(msg)
        return cls(process, found[0])

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# --- a stack that outlives the command: shardline local up | down | status ---------------


def _free_ports(count: int) -> list[int]:
    """``count`` different loopback ports free now, for servers that bind them right after.

    The probes stay bound until all are chosen: a port closed at once may be the one the
    system hands out to the next probe (two servers then got one port, and one of them
    failed to start)."""
    with contextlib.ExitStack() as held:
        ports = []
        for _ in range(count):
            probe = held.enter_context(socket.socket())
            probe.bind(("127.0.0.1", 0))
            ports.append(int(probe.getsockname()[1]))
        return ports


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError as exc:
        return getattr(exc, "code", None) is not None  # an HTTP error is an answer too


def running_local(state_dir: str | os.PathLike[str] = STATE_DIR) -> LocalAWS | None:
    """The stack ``shardline local up`` started in this folder, if it still answers."""
    from pathlib import Path  # noqa: PLC0415

    path = Path(state_dir) / "state.json"
    if not path.is_file():
        return None
    state = json.loads(path.read_text())
    search = state.get("opensearch_url", "")
    if not _answers(f"{state['endpoint']}/moto-api/") or (search and not _answers(search)):
        return None  # half a stack is no stack: `local up` starts both again
    return LocalAWS.attach(state["endpoint"], search)


def local_up(
    state_dir: str | os.PathLike[str] = STATE_DIR, *, timeout: float = 60
) -> tuple[LocalAWS, bool]:
    """Start a moto server and an osmem-server that outlive this process (their own
    session, output in ``state_dir``), or find the ones already running. Returns the
    stack and whether it was started now."""
    from pathlib import Path  # noqa: PLC0415

    from osmem_server import resolve_binary  # noqa: PLC0415  # local extra only

    found = running_local(state_dir)
    if found is not None:
        return found, False
    local_down(state_dir)  # what is left of an earlier stack, if anything
    folder = Path(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    moto_port, osmem_port = _free_ports(2)
    commands = {
        # moto.server, with its Kinesis safe for calls at once (deploy.local.motofix: the
        # producer and the kinesis sink send PutRecords at once; plain moto loses records)
        # and its PutObject refusing a body that does not match its checksum, as S3 does
        "moto": [sys.executable, "-m", "deploy.local.motofix", "-H", "127.0.0.1",
                 "-p", str(moto_port)],
        "osmem": [resolve_binary(), "--addr", f"127.0.0.1:{osmem_port}", "--no-ja",
                  "--no-stdin-watch"],
    }  # fmt: skip
    pids: dict[str, int] = {}
    state: dict[str, Any] = {
        "endpoint": f"http://127.0.0.1:{moto_port}",
        "opensearch_url": f"http://127.0.0.1:{osmem_port}",
        "pids": pids,
        "started_at": time.time(),
    }
    try:
        for name, command in commands.items():
            with (folder / f"{name}.log").open("ab") as log:
                process = subprocess.Popen(  # our own interpreter and pinned binary
                    command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C in this terminal must not stop them
                )  # fmt: skip
            pids[name] = process.pid
            # recorded at once, so that `local down` finds whatever was started
            (folder / "state.json").write_text(json.dumps(state, indent=2))
        deadline = time.monotonic() + timeout
        for url in (f"{state['endpoint']}/moto-api/", state["opensearch_url"]):
            while not _answers(url):
                if time.monotonic() > deadline:
                    msg = (
                        f"the local stack did not answer on {url} within {timeout} s: see {folder}"
                    )
                    raise RuntimeError(msg)
                time.sleep(0.05)  # polling a child process's port, bounded by the deadline
    except BaseException:
        local_down(state_dir)
        raise
    return LocalAWS.attach(state["endpoint"], state["opensearch_url"]), True


def local_down(state_dir: str | os.PathLike[str] = STATE_DIR) -> bool:
    """Stop what ``local_up`` started here; False when nothing was recorded."""
    from pathlib import Path  # noqa: PLC0415

    path = Path(state_dir) / "state.json"
    if not path.is_file():
        return False
    state = json.loads(path.read_text())
    _stop_pids(state.get("pids", {}))
    path.unlink()
    return True


def _ours(pid: int) -> bool:
    """Whether ``pid`` still runs a server we start (after a reboot the number may have
    been given to anything)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read()
    except OSError:
        return not os.path.isdir("/proc")  # no procfs (macOS): trust the recorded pid
    return b"moto.server" in command or b"deploy.local.motofix" in command or b"osmem" in command


def _stop_pids(pids: Mapping[str, int]) -> None:
    import signal  # noqa: PLC0415

    pids = {name: pid for name, pid in pids.items() if _ours(pid)}
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for pid in pids.values():
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)  # waiting for a process we signalled, bounded
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
    except ChildProcessError:
        waited = 0
    if waited == pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def resource_names(plan: Plan) -> dict[str, list[tuple[str, ...]]]:
    """What a plan needs created, by kind: ``streams``, ``tables``, ``buckets``, ``queues``.

    Each entry is a tuple; ``tables`` holds ``(name, key, sort_key)``, ``""`` for no sort key.
    """
    streams = [plan["stream"]["name"]]
    tables: list[tuple[str, ...]] = []
    buckets: list[str] = []
    queues: list[str] = []
    for spec in plan.get("sinks", {}).values():
        kind = spec.get("type")
        if kind == "dynamodb":
            sort = "_position" if spec.get("mode") == "append" else ""
            tables.append((spec["table"], spec["key"], sort))
        elif kind == "s3":
            buckets.append(spec["bucket"])
        elif kind == "sqs":
            queues.append(spec["queue"])
        elif kind == "kinesis":
            streams.append(spec["stream"])
    for function in plan.get("functions", {}).values():
        for entry in function.get("processors", ()):
            lookup = (entry.get("enrich") or {}).get("lookup") if isinstance(entry, dict) else None
            if lookup:
                tables.append((lookup["table"], lookup.get("table_key") or lookup["key"], ""))
    if plan.get("functions"):
        tables += [(t, "shard", "window") for t in window_tables(plan).values()]
    return {
        "streams": [(s,) for s in dict.fromkeys(streams)],
        "tables": list(dict.fromkeys(tables)),
        "buckets": [(b,) for b in dict.fromkeys(buckets)],
        "queues": [(q,) for q in dict.fromkeys(queues)],
    }


def provision(plan: Plan, client: Callable[[str], Any], shards: int = 1) -> None:
    """Create the plan's stream(s), tables, buckets and queues; existing ones are kept."""
    names = resource_names(plan)
    kinesis = client("kinesis")
    existing = set(kinesis.list_streams().get("StreamNames", []))
    for (stream,) in names["streams"]:
        # a listing is one page (100 names): a stream beyond it already exists all the same
        if stream not in existing:
            with contextlib.suppress(kinesis.exceptions.ResourceInUseException):
                kinesis.create_stream(StreamName=stream, ShardCount=shards)
    ddb = client("dynamodb")
    tables = set(ddb.list_tables().get("TableNames", []))
    windows = {(t, "shard", "window") for t in window_tables(plan).values()}
    for name, key, sort in names["tables"]:
        if name in tables:
            continue
        schema = [{"AttributeName": key, "KeyType": "HASH"}]
        attrs = [{"AttributeName": key, "AttributeType": "S"}]
        if sort:
            schema.append({"AttributeName": sort, "KeyType": "RANGE"})
            attrs.append({"AttributeName": sort, "AttributeType": "S"})
        with contextlib.suppress(ddb.exceptions.ResourceInUseException):  # beyond the page
            ddb.create_table(
                TableName=name,
                KeySchema=schema,
                AttributeDefinitions=attrs,
                BillingMode="PAY_PER_REQUEST",
            )
        if (name, key, sort) in windows:  # closed windows leave by TTL, as in AWS
            ddb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"AttributeName": "expires", "Enabled": True},
            )
    s3 = client("s3")
    for (bucket,) in names["buckets"]:
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=bucket)
    sqs = client("sqs")
    for (queue,) in names["queues"]:
        sqs.create_queue(QueueName=queue)
