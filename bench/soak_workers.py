"""The load part's workers: ``shardline run`` processes sharing the lease tables, and the two
lease faults ``python -m bench soak`` puts them through while the load goes on.

The fault suite's scenarios (i) and (j) (``tests/e2e/test_faults.py``) run the same faults
for seconds on the e2e pipeline; here they happen in the middle of the example's steady
load, with every function's mapping in play:

* **a pause past the lease**: one of the two workers is stopped with SIGSTOP for three lease
  durations, then resumed with SIGCONT. While it is stopped its leases expire on the other
  worker's clock and are taken; once resumed it finds them gone (whatever batch it was in
  the middle of is discarded, its late writes land after the other worker's) and takes its
  fair share back.
* **a steal**: a third worker starts; no lease is free, so it steals from the busiest worker
  by the fair-share rule (:func:`stream.esm.checkpoints.decide_leases`) while that worker's
  batches run; then it is stopped (SIGINT: a clean stop, its leases released) and the two
  take the shards back.

Each fault is checked in the lease tables (:class:`LeaseWatch`), not assumed: the report
says how many leases moved, so a run where nothing was taken cannot pass for one where
something was. Processes are ended by their pid only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from stream.plan import Plan

__all__ = ["FaultLog", "LeaseWatch", "Worker", "WorkerError"]

#: ``shardline run`` from this checkout, whatever the venv's scripts are called.
SHARDLINE = (sys.executable, "-m", "deploy.cli")
_POLL_S = 0.2


class WorkerError(RuntimeError):
    """A worker did not do what the load needs (exited early, did not stop)."""


@dataclass
class Worker:
    """One ``shardline run`` process of the pipeline file, with its own worker id.

    Args:
        worker_id: its id in the lease tables (unique among the running workers).
        file: the pipeline file (deployed at ``endpoint``: the deployed settings are used).
        folder: its working directory; its output goes to ``{worker_id}.log`` there.
        endpoint: the local AWS endpoint; ``env`` the rest of its environment.
        lease_s: ``--lease-duration``.
        in_process: handlers in the process (``--in-process``), else in Lambda runtimes.
    """

    worker_id: str
    file: Path
    folder: Path
    endpoint: str
    env: dict[str, str]
    lease_s: float
    in_process: bool = False
    process: subprocess.Popen[bytes] | None = None
    interrupted: bool = False

    @property
    def pid(self) -> int:
        if self.process is None:
            raise WorkerError(f"worker {self.worker_id} was never started")
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.folder / f"{self.worker_id}.log"

    def start(self) -> Worker:
        """Start ``shardline run FILE --settings deployed``."""
        args = [
            *SHARDLINE, "run", str(self.file), "--endpoint-url", self.endpoint,
            "--worker-id", self.worker_id, "--lease-duration", f"{self.lease_s:g}",
            "--settings", "deployed",
        ]  # fmt: skip
        if self.in_process:
            args.append("--in-process")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                args, cwd=self.folder, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def pause(self) -> None:
        """SIGSTOP: the process stops where it is (its runtimes, idle, are left running)."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def interrupt(self) -> None:
        """SIGINT without waiting (:meth:`stop` waits); once: a second one could reach the
        process after its run restored the default handler, and end it uncleanly."""
        if self.alive() and self.process is not None and not self.interrupted:
            self.interrupted = True
            self.process.send_signal(signal.SIGINT)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGINT, as Ctrl-C: batches in flight finish, checkpoints are written, leases
        released; its exit status."""
        if self.process is None:
            return 0
        self.interrupt()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            msg = f"worker {self.worker_id} still running {timeout:g} s after SIGINT"
            raise WorkerError(msg) from None

    def kill(self) -> None:
        """SIGCONT then SIGKILL, by pid: whatever is left of it at the end of the load."""
        if self.alive() and self.process is not None:
            os.kill(self.pid, signal.SIGCONT)
            self.process.kill()
            self.process.wait(10)

    def tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""


@dataclass
class LeaseWatch:
    """The owners of every function's leases, read from the lease tables."""

    plan: Plan
    client: Callable[[str], Any]

    def owners(self) -> dict[tuple[str, str], str | None]:
        """(function, shard) → owner, for every lease not finished."""
        from deploy.names import lease_table_name  # noqa: PLC0415
        from stream.esm.checkpoints import LeaseTable, LeaseTableError  # noqa: PLC0415

        out: dict[tuple[str, str], str | None] = {}
        for function in self.plan["functions"]:
            table = LeaseTable(
                lease_table_name(self.plan, function), "soak-watch", client=self.client("dynamodb")
            )
            try:
                leases = table.leases()
            except LeaseTableError:
                continue  # not made yet (the first worker makes it)
            for lease in leases:
                if not lease.finished:
                    out[(function, lease.shard_id)] = lease.owner
        return out

    def held_by(self, worker_id: str) -> set[tuple[str, str]]:
        return {where for where, owner in self.owners().items() if owner == worker_id}

    def wait(
        self, what: str, condition: Callable[[], bool], timeout: float,
        workers: Sequence[Worker] = (),
    ) -> float:  # fmt: skip
        """Poll ``condition`` until it holds; the seconds it took. At the deadline, or
        when a worker exits, :class:`WorkerError` with the workers' last output."""
        started = time.monotonic()
        deadline = started + timeout
        while not condition():
            dead = [w for w in workers if not w.alive()]
            if dead or time.monotonic() > deadline:
                why = f"{dead[0].worker_id} exited" if dead else f"not within {timeout:g} s"
                tails = "\n".join(f"--- {w.worker_id}:\n{w.tail()}" for w in workers)
                owners = sorted(self.owners().items())
                raise WorkerError(f"waiting for {what}: {why}; leases {owners}\n{tails}")
            time.sleep(_POLL_S)  # the polling interval of a condition read from the tables
        return time.monotonic() - started


@dataclass
class FaultLog:
    """What the faults did, as read from the lease tables, for the report.

    Attributes:
        paused_s: how long the paused worker was stopped.
        taken_from_paused: its leases another worker held while it was stopped.
        paused_held: leases it held when it was stopped.
        stolen: leases the third worker held.
        stolen_from: how many of them each worker held just before (``None``: nobody).
        free_at_steal: leases nobody held when the third worker started (0: whatever it
            holds, it stole).
        steal_s: from the third worker's start to its first lease.
        events: (seconds since the load started, what happened), in order.
    """

    paused_s: float = 0.0
    paused_held: int = 0
    taken_from_paused: int = 0
    stolen: int = 0
    stolen_from: dict[str, int] = field(default_factory=dict)
    free_at_steal: int = 0
    steal_s: float = 0.0
    events: list[tuple[float, str]] = field(default_factory=list)

    @property
    def happened(self) -> bool:
        """Whether both faults really moved leases: another worker took some of the paused
        one's, and the third took some from a worker that held them."""
        live = sum(n for owner, n in self.stolen_from.items() if owner != "None")
        return self.taken_from_paused > 0 and live > 0
