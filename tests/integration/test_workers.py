"""Real Lambda runtimes (awslambdaric processes) in a WorkerPool: results, errors, timeouts,
crashes, init failures, warm reuse, concurrency, and no process left behind.

The handlers live in ``tests/integration/handlers.py``; the runtimes import them from the
repository root, the pool's task root. No AWS server is needed: the pipeline test writes
to the stdout sink, which the runtime's output (a file here) shows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from stream.esm.sandbox import WorkerPool
from stream.testing import EventFactory

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HANDLERS = "tests.integration.handlers"


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def poll(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("condition not met within the deadline")
        time.sleep(0.01)


@pytest.fixture
def make_pool(tmp_path: Path) -> Iterator[Callable[..., WorkerPool]]:
    """Pools of the test's handler, with the runtimes' output in a file; all closed after."""
    pools: list[WorkerPool] = []
    log = (tmp_path / "runtime.log").open("wb")

    def make(handler: str, size: int = 1, **kwargs: Any) -> WorkerPool:
        kwargs.setdefault("function_env", {})
        pool = WorkerPool(
            size=size, handler=f"{HANDLERS}.{handler}", task_root=ROOT, log=log, **kwargs
        )
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()
    log.close()


class TestResults:
    def test_a_handler_gets_the_event_and_lambdas_context_and_environment(self, make_pool):
        pool = make_pool(
            "ok", function_env={"SHARDLINE_FUNCTION": "f"}, function_name="fn", memory_mb=256
        )
        result = pool.invoke({"Records": [1]}, timeout_s=3)
        assert result.error is None
        assert not result.timed_out
        payload = result.payload
        assert payload["event"] == {"Records": [1]}
        assert payload["request_id"] == result.request_id
        assert payload["function_arn"] == pool.function_arn
        assert pool.function_arn.endswith(":function:fn")
        assert payload["memory_mb"] == "256"
        assert 0 < payload["remaining_ms"] <= 3000
        assert payload["env"]["SHARDLINE_FUNCTION"] == "f"
        assert payload["env"]["AWS_LAMBDA_FUNCTION_NAME"] == "fn"
        assert payload["env"]["_HANDLER"] == f"{HANDLERS}.ok"
        assert payload["env"]["LAMBDA_TASK_ROOT"] == str(ROOT)
        assert payload["env"]["AWS_REGION"]
        assert payload["pid"] == result.worker_pid

    def test_a_warm_runtime_is_reused_and_only_the_first_invocation_pays_init(self, make_pool):
        pool = make_pool("ok")
        results = [pool.invoke({"n": n}, timeout_s=3) for n in range(3)]
        assert {r.payload["pid"] for r in results} == {results[0].worker_pid}
        assert results[0].init_duration_s is not None
        assert results[0].init_duration_s > 0
        assert [r.init_duration_s for r in results[1:]] == [None, None]
        tmpdir = results[0].payload["env"]["TMPDIR"]
        assert Path(tmpdir).is_dir()  # kept while the sandbox is warm
        assert {r.payload["env"]["TMPDIR"] for r in results} == {tmpdir}

    def test_an_unhandled_exception_is_a_function_error_and_the_runtime_stays_warm(self, make_pool):
        pool = make_pool("error")
        first = pool.invoke({"x": 1}, timeout_s=3)
        assert first.payload is None
        assert not first.timed_out
        assert first.error is not None
        assert first.error["errorType"] == "ValueError"
        assert first.error["errorMessage"] == "cannot handle {'x': 1}"
        assert first.error["requestId"] == first.request_id
        assert any("handlers.py" in line for line in first.error["stackTrace"])
        second = pool.invoke({"x": 2}, timeout_s=3)
        assert second.worker_pid == first.worker_pid
        assert second.init_duration_s is None


class TestSandboxEnds:
    def test_past_its_timeout_a_runtime_is_killed_and_the_next_invocation_is_cold(self, make_pool):
        pool = make_pool("slow")
        warm = pool.invoke({}, timeout_s=3)
        late = pool.invoke({"sleep_s": 30}, timeout_s=0.3)
        assert late.timed_out
        assert late.payload is None
        assert late.error == {
            "errorType": "Sandbox.Timedout",
            "errorMessage": f"RequestId: {late.request_id} Error: Task timed out after "
            "0.30 seconds",
        }
        assert late.duration_s >= 0.3
        assert not running(warm.worker_pid)
        after = pool.invoke({}, timeout_s=3)
        assert after.error is None
        assert after.payload == after.worker_pid != warm.worker_pid
        assert after.init_duration_s is not None

    def test_a_runtime_that_exits_mid_invocation_is_an_exit_error_and_is_replaced(self, make_pool):
        pool = make_pool("crash")
        before = pool.invoke({}, timeout_s=3)
        crashed = pool.invoke({"exit": 3}, timeout_s=3)
        assert crashed.error == {
            "errorType": "Runtime.ExitError",
            "errorMessage": f"RequestId: {crashed.request_id} Error: Runtime exited with "
            "error: exit status 3",
        }
        assert not crashed.timed_out
        after = pool.invoke({}, timeout_s=3)
        assert after.payload == after.worker_pid != before.worker_pid
        assert after.init_duration_s is not None

    @pytest.mark.parametrize(
        ("handler", "error_type", "message"),
        [
            ("no_such_module.handler", "Runtime.ImportModuleError", "Unable to import module"),
            ("handlers.missing", "Runtime.HandlerNotFound", "Handler 'missing' missing"),
        ],
    )
    def test_an_init_failure_is_the_invocations_function_error_and_init_is_retried(
        self, handler, error_type, message
    ):
        with WorkerPool(
            {},
            size=1,
            handler=f"tests.integration.{handler}",
            task_root=ROOT,
            log=subprocess.DEVNULL,
        ) as pool:
            assert pool.init_error is None
            first = pool.invoke({}, timeout_s=3)
            assert first.error is not None
            assert first.error["errorType"] == error_type
            assert message in first.error["errorMessage"]
            assert first.init_duration_s is not None
            poll(lambda: pool.pids == [])  # the failed sandbox is not kept
            second = pool.invoke({}, timeout_s=3)
            assert second.error is not None
            assert second.error["errorType"] == error_type
            assert second.worker_pid != first.worker_pid  # a fresh init, not a cached error
            assert pool.init_error == first.error  # the first one, kept for the pool's caller


class TestConcurrency:
    def test_concurrent_invocations_use_up_to_size_runtimes_and_reuse_them(self, make_pool):
        pool = make_pool("slow", size=2)
        results: list[Any] = []
        threads = [
            threading.Thread(
                target=lambda: results.append(pool.invoke({"sleep_s": 0.3}, timeout_s=5))
            )
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        assert len(results) == 4
        assert all(r.error is None for r in results)
        assert len({r.worker_pid for r in results}) == 2
        assert sum(r.init_duration_s is not None for r in results) == 2
        assert len(pool.pids) == 2


class TestShutdown:
    def test_close_stops_every_runtime_and_removes_their_tmpdirs(self, make_pool):
        pool = make_pool("ok", size=2)
        results: list[Any] = []
        threads = [
            threading.Thread(target=lambda: results.append(pool.invoke({}, timeout_s=3)))
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        pids = pool.pids
        assert pids
        assert all(running(pid) for pid in pids)
        pool.close()
        assert pool.pids == []
        assert not any(running(pid) for pid in pids)
        assert not any(Path(r.payload["env"]["TMPDIR"]).exists() for r in results)
        with pytest.raises(RuntimeError, match="is closed"):
            pool.invoke({}, timeout_s=3)

    def test_runtimes_exit_by_themselves_when_their_parent_is_killed(self):
        script = (
            "import os, signal, sys\n"
            "from stream.esm.sandbox import WorkerPool\n"
            "pool = WorkerPool({}, size=1, handler=sys.argv[1], task_root=sys.argv[2],\n"
            "                  log=open(os.devnull, 'wb'))\n"
            "print(pool.invoke({}, timeout_s=3).worker_pid, flush=True)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n"
        )
        parent = subprocess.run(
            [sys.executable, "-c", script, f"{HANDLERS}.ok", str(ROOT)],
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert parent.returncode == -9
        pid = int(parent.stdout)
        poll(lambda: not running(pid))


    def test_a_runtime_mid_invocation_dies_with_its_killed_parent_and_writes_nothing_late(
        self, tmp_path
    ):
        """Issue 19: a SIGKILLed runner must not leave its sandbox finishing the batch
        seconds later, after a restarted runner redid it (a late, partial copy of the
        batch's writes). The runtime dies with its parent, mid-invocation."""
        pid_file, done_file = tmp_path / "pid", tmp_path / "done"
        script = (
            "import os, signal, sys, threading, time\n"
            "from stream.esm.sandbox import WorkerPool\n"
            "pool = WorkerPool({}, size=1, handler=sys.argv[1], task_root=sys.argv[2],\n"
            "                  log=open(os.devnull, 'wb'))\n"
            "event = {'pid_file': sys.argv[3], 'done_file': sys.argv[4], 'sleep_s': 6}\n"
            "threading.Thread(target=pool.invoke, args=(event,), kwargs={'timeout_s': 30},\n"
            "                 daemon=True).start()\n"
            "deadline = time.monotonic() + 20\n"
            "while not os.path.exists(sys.argv[3]) and time.monotonic() < deadline:\n"
            "    time.sleep(0.01)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n"
        )
        argv = [f"{HANDLERS}.slow_batch", str(ROOT), str(pid_file), str(done_file)]
        parent = subprocess.run(
            [sys.executable, "-c", script, *argv],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert parent.returncode == -9
        pid = int(pid_file.read_text())
        # the runtime must die before the batch's 6 s of work are done: the done file
        # (written at its end) says so, however long this machine takes to reap it
        poll(lambda: not running(pid), timeout=30)
        assert not done_file.exists()


class TestShardlineHandler:
    def test_the_real_handler_runs_a_compiled_plan_in_a_runtime(self, tmp_path):
        plan = {
            "version": 1,
            "name": "t",
            "sinks": {"out": {"type": "stdout"}, "dlq": {"type": "discard"}},
            "functions": {
                "f": {
                    "ordering": "per_key",
                    "on_failure": None,
                    "route": ["out"],
                    "processors": [{"filter": {"match": {"keep": [True]}}}],
                }
            },
        }
        (tmp_path / "pipeline.json").write_text(json.dumps(plan))
        log_path = tmp_path / "runtime.log"
        env = {"SHARDLINE_PIPELINE": str(tmp_path / "pipeline.json"), "SHARDLINE_FUNCTION": "f"}
        f = EventFactory()
        with log_path.open("wb") as log, WorkerPool(env, size=1, task_root=ROOT, log=log) as pool:
            clean = pool.invoke(
                f.batch([("a", {"keep": True, "n": 1}), ("b", {"keep": False, "n": 2})]),
                timeout_s=5,
            )
            bad = f.raw(b"not json", "c")
            poisoned = pool.invoke(f.event([bad]), timeout_s=5)
        assert clean.error is None
        assert clean.payload == {"batchItemFailures": []}
        assert clean.init_duration_s is not None
        assert poisoned.payload == {
            "batchItemFailures": [{"itemIdentifier": bad["kinesis"]["sequenceNumber"]}]
        }
        assert poisoned.worker_pid == clean.worker_pid
        lines = log_path.read_bytes().splitlines()
        docs = [json.loads(line) for line in lines if line.startswith(b"{")]
        # beside the stdout sink's record: the runtime's EMF metrics and JSON log lines
        assert [d for d in docs if "_aws" not in d and "level" not in d] == [{"keep": True, "n": 1}]
        assert any("_aws" in d for d in docs)
        assert os.environ.get("SHARDLINE_PIPELINE") is None  # the parent's env is untouched
