"""A pool of local Lambda sandboxes: real runtimes (awslambdaric) behind a Runtime API each.

The ESM's out-of-process invoker. Each sandbox is one ``python -m awslambdaric <handler>``
process with the Lambda environment variables, pulling invocations from its own
:class:`~stream.esm.runtime_api.RuntimeAPI` on 127.0.0.1, so the function's code runs exactly
as in a Lambda container image: same runtime client, same ``context`` object, same error
shape, module-level init done once per cold start.

Reproduced from Lambda:

* Cold starts on demand: a sandbox is started when an invocation finds no idle one (up to
  ``size``); its init (process start and handler import, until the first ``/next``) is
  measured and returned as ``init_duration_s`` of that invocation. Warm sandboxes are
  reused, most recently used first.
* Timeouts: the deadline (``Lambda-Runtime-Deadline-Ms``, ``context``'s remaining time)
  starts when the runtime takes the invocation; past it the sandbox is killed (SIGKILL)
  and thrown away, the result is ``timed_out`` with ``Sandbox.Timedout`` "RequestId: …
  Error: Task timed out after X.XX seconds", and the next invocation is a cold start.
* A runtime that exits mid-invocation gives ``Runtime.ExitError`` "RequestId: … Error:
  Runtime exited with error: exit status N" (or "signal: killed"); the sandbox is replaced.
* An init failure (``Runtime.ImportModuleError``, ``Runtime.HandlerNotFound``, …) is the
  invocation's function error, with the body the runtime posted to ``/init/error``; the
  sandbox is replaced, so the next invocation tries the init again. The pool keeps the
  first such body as :attr:`WorkerPool.init_error`: where Lambda would fail every batch
  until the function changes, a local runner can stop and say why.
* An unhandled exception in the handler is a function error with awslambdaric's body
  (``errorType``, ``errorMessage``, ``requestId``, ``stackTrace``); the sandbox stays warm.
* Environment: ``AWS_LAMBDA_FUNCTION_NAME``, ``…_MEMORY_SIZE``, ``…_VERSION``,
  ``…_LOG_GROUP_NAME``, ``…_LOG_STREAM_NAME``, ``AWS_REGION``, ``AWS_DEFAULT_REGION``,
  ``AWS_EXECUTION_ENV``, ``_HANDLER``, ``LAMBDA_TASK_ROOT``, ``TZ=:UTC``, plus the
  function's own variables. Reserved names win over the function's, as AWS refuses them.
  ``PYTHONPATH`` is the task root, then the pool's extra folders, then the parent's
  ``PYTHONPATH`` (what the runner can import, its runtimes can).
* ``TMPDIR`` is a directory per sandbox, kept while it is warm and removed with it.

Not reproduced: the memory limit (``memory_mb`` is only reported), CPU share, the freeze
of an idle sandbox (its background threads keep running), a private ``/tmp`` for code that
hard-codes the path, the 6 MB payload limits, the 10 s init limit's retry within the
invoke phase (here a runtime that does not poll within ``init_timeout_s`` times the
invocation out), SnapStart, extensions, and a clean environment: ``PATH``, ``HOME``,
``LANG`` and the parent's ``AWS_*`` variables (credentials, endpoint) are passed through.

A runtime whose parent dies (even by SIGKILL) dies with it, mid-invocation included: each
runtime starts through :data:`_BOOT`, a watchdog thread that kills the process as soon as it
is re-parented, then runs awslambdaric as ``python -m`` would. An orphaned runtime that
finished its batch seconds later, after a restarted runner had redone it, would write a
late copy of the batch over the redone one. (Between invocations an orphan would also stop
by itself, its ``/next`` connection broken; the watchdog covers the invocation in flight.)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson

from stream.esm.invoke import Invoker, InvokeResult
from stream.esm.runtime_api import Invocation, InvocationResult, RuntimeAPI

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

__all__ = [
    "DEFAULT_HANDLER",
    "InvokeResult",
    "Invoker",
    "WorkerInvokeResult",
    "WorkerPool",
    "exit_error",
    "timeout_error",
]

DEFAULT_HANDLER = "stream.lambda_handler.handler"
_INHERITED = ("HOME", "LANG", "LC_ALL", "PATH")
_TERM_GRACE_S = 2.0
_PARENT_VARIABLE = "SHARDLINE_SANDBOX_PARENT"
#: What a runtime process runs: a watchdog that SIGKILLs the process the moment its parent
#: (the pool's process, named in the environment) is gone, then awslambdaric's ``__main__``
#: exactly as ``python -m awslambdaric HANDLER`` runs it. Polling ``getppid`` rather than
#: ``PR_SET_PDEATHSIG``: the latter fires when the *thread* that started the process ends,
#: and sandboxes are started from the invoking pool's threads.
_BOOT = (
    "import os, runpy, signal, sys, threading, time\n"
    "parent = int(os.environ.pop('SHARDLINE_SANDBOX_PARENT'))\n"
    "def watch():\n"
    "    while os.getppid() == parent:\n"
    "        time.sleep(0.05)\n"
    "    os.kill(os.getpid(), signal.SIGKILL)\n"
    "threading.Thread(target=watch, name='shardline-orphan-watch', daemon=True).start()\n"
    "sys.argv[0] = 'awslambdaric'\n"
    "runpy.run_module('awslambdaric', run_name='__main__', alter_sys=True)\n"
)


@dataclass(frozen=True)
class WorkerInvokeResult(InvokeResult):
    """An :class:`InvokeResult` with what the sandbox adds.

    Attributes:
        init_duration_s: the cold start this invocation paid (Lambda's "Init Duration"),
            None when a warm sandbox took it.
        worker_pid: the runtime process that ran it.
    """

    init_duration_s: float | None = None
    worker_pid: int = 0


def timeout_error(request_id: str, timeout_s: float) -> dict[str, Any]:
    """The error Lambda reports for an invocation past its timeout."""
    return {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {request_id} Error: Task timed out after "
        f"{timeout_s:.2f} seconds",
    }


def exit_error(returncode: int, request_id: str) -> dict[str, Any]:
    """The error Lambda reports when the runtime process exits during an invocation.

    The status reads like Go's (Lambda's) ``exit status 3`` or ``signal: killed``.
    """
    if returncode < 0:
        status = f"signal: {signal.strsignal(-returncode) or -returncode}".lower()
    else:
        status = f"exit status {returncode}"
    return {
        "errorType": "Runtime.ExitError",
        "errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: {status}",
    }


@dataclass(frozen=True)
class _Config:
    env: dict[str, str]
    argv: list[str]
    task_root: str
    function_arn: str
    init_timeout_s: float
    log: int | IO[Any] | None
    clock: Callable[[], float]


def _search_path(root: str, pythonpath: Sequence[str | Path]) -> list[str]:
    """The runtime's ``PYTHONPATH``: the task root, the given folders, then this process's
    own ``PYTHONPATH``, so that a plugin module the runner can import (``use:``) imports in
    its runtimes too."""
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    path: list[str] = []
    for entry in [root, *map(str, pythonpath), *inherited]:
        if entry not in path:
            path.append(entry)
    return path


class _Sandbox:
    """One runtime process, its Runtime API and its TMPDIR; started in the constructor."""

    def __init__(self, config: _Config) -> None:
        self._config = config
        self._clock = config.clock
        self.api = RuntimeAPI(config.function_arn, clock=config.clock)
        self.tmp = tempfile.mkdtemp(prefix="shardline-sandbox-")
        env = dict(
            config.env,
            AWS_LAMBDA_RUNTIME_API=self.api.address,
            TMPDIR=self.tmp,
            **{_PARENT_VARIABLE: str(os.getpid())},
        )
        self.started_at = self._clock()
        self.process = subprocess.Popen(
            config.argv,
            env=env,
            cwd=config.task_root,
            stdin=subprocess.DEVNULL,
            stdout=config.log,
            stderr=None if config.log is None else subprocess.STDOUT,
        )
        self.pid = self.process.pid
        self.cold = True
        self.broken = False  # timed out, or failed its init: never reused
        self._stop_lock = threading.Lock()
        self._stopped = False
        self._watcher = threading.Thread(
            target=self._watch, name=f"sandbox-{self.pid}", daemon=True
        )
        self._watcher.start()

    @property
    def reusable(self) -> bool:
        return not self.broken and self.process.poll() is None

    def _watch(self) -> None:
        """Turn the process's exit into the error of whatever it was doing."""
        code = self.process.wait()
        self.api.end(lambda request_id: exit_error(code, request_id))

    def invoke(self, event: bytes, timeout_s: float) -> WorkerInvokeResult:
        invocation = self.api.submit(Invocation(event, timeout_s))
        cold, self.cold = self.cold, False
        start = self._clock()
        self.api.wait_delivered(invocation, start + self._config.init_timeout_s)
        init_s = None
        if cold:
            ready = self.api.ready_at
            init_s = (ready if ready is not None else self._clock()) - self.started_at
        taken = invocation.delivered_at
        if taken is None:  # never ran: an init error, an exit, or no poll in time
            outcome = invocation.outcome
            taken = self._clock()
        else:
            outcome = self.api.wait_outcome(invocation, taken + timeout_s)
        if outcome is None:
            late = InvocationResult(
                error=timeout_error(invocation.request_id, timeout_s), timed_out=True
            )
            outcome = self.api.resolve(invocation, late)
            if outcome is late:
                self.broken = True
                self.process.kill()  # as Lambda does: the sandbox is not reused
        if self.api.init_error is not None:
            self.broken = True
        return WorkerInvokeResult(
            payload=outcome.payload,
            error=outcome.error,
            timed_out=outcome.timed_out,
            duration_s=max(0.0, self._clock() - taken),
            request_id=invocation.request_id,
            init_duration_s=init_s,
            worker_pid=self.pid,
        )

    def stop(self) -> None:
        """SIGTERM, SIGKILL after a grace period, reap, close the API, remove TMPDIR."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(_TERM_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._watcher.join()
        self.api.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


class WorkerPool:
    """Up to ``size`` Lambda sandboxes of one function, started on demand, reused warm.

    Thread-safe: each :meth:`invoke` takes an idle sandbox, else starts one if fewer than
    ``size`` exist, else waits for one (like Lambda's concurrency limit, without the
    throttle error). Use as a context manager, or call :meth:`close`.

    Args:
        function_env: the function's environment (``SHARDLINE_PIPELINE``,
            ``SHARDLINE_FUNCTION``, ``AWS_ENDPOINT_URL``, ...).
        size: the most sandboxes at once (the function's concurrency).
        handler: ``module.function``, as in the function's Handler setting.
        function_name: ``AWS_LAMBDA_FUNCTION_NAME`` and the name in the function ARN.
        memory_mb: reported as ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``; not enforced.
        region: ``AWS_REGION``; default the environment's, else us-east-1.
        account_id: the account in the function ARN.
        task_root: ``LAMBDA_TASK_ROOT``, the runtime's working directory and the first
            entry of its ``PYTHONPATH``; default the current directory.
        pythonpath: more ``PYTHONPATH`` entries, after the task root.
        python: the interpreter that runs awslambdaric (it must have it installed).
        init_timeout_s: how long a runtime may take to ask for its first invocation.
        log: where the runtimes' stdout and stderr go (a file or fd); default inherited.
        clock: monotonic clock (injectable).

    Attributes:
        init_error: the first error a runtime posted to ``/init/error``
            (``{"errorType", "errorMessage", "stackTrace"}``), None while every init passed.
    """

    def __init__(
        self,
        function_env: Mapping[str, str],
        *,
        size: int,
        handler: str = DEFAULT_HANDLER,
        function_name: str = "shardline-function",
        memory_mb: int = 128,
        region: str | None = None,
        account_id: str = "123456789012",
        task_root: str | Path | None = None,
        pythonpath: Sequence[str | Path] = (),
        python: str = sys.executable,
        init_timeout_s: float = 10.0,
        log: int | IO[Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if size < 1:
            msg = f"WorkerPool: size {size}, expected at least 1 sandbox"
            raise ValueError(msg)
        region = (
            region
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or "us-east-1"
        )
        root = str(Path(task_root or os.getcwd()).resolve())
        self.size = size
        self.function_arn = f"arn:aws:lambda:{region}:{account_id}:function:{function_name}"
        env = {k: v for k, v in os.environ.items() if k in _INHERITED or k.startswith("AWS_")}
        env.update(function_env)
        env.update(
            {
                "AWS_LAMBDA_FUNCTION_NAME": function_name,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function_name}",
                "AWS_LAMBDA_LOG_STREAM_NAME": time.strftime("%Y/%m/%d/[$LATEST]")
                + uuid.uuid4().hex,
                "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
                "AWS_EXECUTION_ENV": "AWS_Lambda_python{}.{}".format(*sys.version_info[:2]),
                "AWS_REGION": region,
                "AWS_DEFAULT_REGION": region,
                "LAMBDA_TASK_ROOT": root,
                "PYTHONPATH": os.pathsep.join(_search_path(root, pythonpath)),
                "TZ": ":UTC",
                "_HANDLER": handler,
            }
        )
        self._config = _Config(
            env=env,
            argv=[python, "-c", _BOOT, handler],
            task_root=root,
            function_arn=self.function_arn,
            init_timeout_s=init_timeout_s,
            log=log,
            clock=clock,
        )
        self._cond = threading.Condition()
        self._idle: list[_Sandbox] = []  # most recently used last
        self._all: set[_Sandbox] = set()
        self._starting = 0
        self._closed = False
        self.init_error: dict[str, Any] | None = None

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pids(self) -> list[int]:
        """The runtime processes alive in the pool now."""
        with self._cond:
            return sorted(s.pid for s in self._all if s.process.poll() is None)

    def invoke(self, event: dict[str, Any], *, timeout_s: float) -> WorkerInvokeResult:
        """Run the function on ``event`` in a sandbox; errors and timeouts are results.

        Raises:
            RuntimeError: the pool is closed.
            OSError: a runtime process could not be started.
        """
        body: bytes = orjson.dumps(event)
        sandbox = self._acquire()
        try:
            result = sandbox.invoke(body, timeout_s)
            if sandbox.api.init_error is not None:
                with self._cond:
                    self.init_error = self.init_error or sandbox.api.init_error
            return result
        finally:
            self._release(sandbox)

    def close(self) -> None:
        """Stop every runtime and wait for it; invocations still running end with
        ``Runtime.ExitError``, later ones raise."""
        with self._cond:
            self._closed = True
            sandboxes = list(self._all)
            self._all.clear()
            self._idle.clear()
            self._cond.notify_all()
        for sandbox in sandboxes:  # signal all first: their exits overlap
            if sandbox.process.poll() is None:
                sandbox.process.terminate()
        for sandbox in sandboxes:
            sandbox.stop()

    def _acquire(self) -> _Sandbox:
        dead: list[_Sandbox] = []
        try:
            with self._cond:
                while True:
                    if self._closed:
                        msg = f"WorkerPool of {self.function_arn} is closed: make a new one"
                        raise RuntimeError(msg)
                    while self._idle:
                        sandbox = self._idle.pop()
                        if sandbox.reusable:
                            return sandbox
                        self._all.discard(sandbox)  # exited while idle
                        dead.append(sandbox)
                    if len(self._all) + self._starting < self.size:
                        self._starting += 1
                        break
                    self._cond.wait()
        finally:
            for sandbox in dead:
                sandbox.stop()
        try:
            sandbox = _Sandbox(self._config)
        except BaseException:
            with self._cond:
                self._starting -= 1
                self._cond.notify_all()
            raise
        with self._cond:
            self._starting -= 1
            self._cond.notify_all()
            if not self._closed:
                self._all.add(sandbox)
                return sandbox
        sandbox.stop()
        msg = f"WorkerPool of {self.function_arn} was closed while starting a sandbox"
        raise RuntimeError(msg)

    def _release(self, sandbox: _Sandbox) -> None:
        with self._cond:
            if sandbox.reusable and not self._closed:
                self._idle.append(sandbox)
                self._cond.notify()
                return
            self._all.discard(sandbox)
            self._cond.notify()
        sandbox.stop()
