"""Where the event source mapping keeps its checkpoints: the lease table, or memory.

:class:`CheckpointStore` is the part of :class:`stream.esm.checkpoints.LeaseTable` the mapping
uses, so that a run can use either the DynamoDB lease table (durable, shared among
``shardline run`` processes) or :class:`MemoryCheckpoints` (one process: ``invoke``-style
runs and tests; several mappings in one process may share one to resume each other).

Both speak :class:`stream.esm.checkpoints.Lease`, and a checkpoint means "after": the stored
sequence number is the last record fully processed, and a reader resumes with
``AFTER_SEQUENCE_NUMBER`` (``Lease.iterator_request``).
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from stream.esm.checkpoints import SHARD_END, Lease, LeaseLost, leases_to_create

if TYPE_CHECKING:
    from collections.abc import Sequence

    from stream.esm.checkpoints import ShardInfo

__all__ = ["CheckpointStore", "MemoryCheckpoints"]


class CheckpointStore(Protocol):
    """The lease and checkpoint operations the mapping calls (all from one thread)."""

    @property
    def renew_interval_s(self) -> float:
        """How often the mapping calls :meth:`take`."""
        ...

    def sync_shards(self, shards: Sequence[ShardInfo], initial_position: str) -> list[Lease]:
        """Create leases for shards not seen yet, parents before children."""
        ...

    def take(self) -> list[Lease]:
        """Renew and take leases; the leases held now (a shard not among them must stop)."""
        ...

    def held(self) -> list[Lease]:
        """The leases this worker can still prove it holds, without calling the table (a
        lease not renewed in time is not among them): a shard not among them must stop."""
        ...

    def checkpoint(self, lease: Lease, sequence_number: str, sub_sequence_number: int = 0) -> Lease:
        """Store that everything up to ``sequence_number`` is done; raises ``LeaseLost``."""
        ...

    def finish(self, lease: Lease) -> Lease:
        """Mark the shard read to its end (``SHARD_END``); its children become eligible."""
        ...

    def release(self, lease: Lease) -> None:
        """Give the lease up (clean shutdown)."""
        ...

    def leases(self) -> list[Lease]:
        """Every lease, by shard id."""
        ...


class MemoryCheckpoints:
    """Leases and checkpoints in a dict: the :class:`CheckpointStore` of a single process.

    The same rules as the lease table: leases are created parents first
    (:func:`stream.esm.checkpoints.leases_to_create`), a lease is taken only when its parents
    are finished (or unknown), only the holder checkpoints, and a checkpoint never moves
    backwards. There is no expiry: a lease held by one worker id stays with it until
    released or finished, so mappings that share a store must stop (release) before
    another takes their shards over.

    Args:
        worker_id: the owner written on taken leases.
        renew_interval_s: how often the mapping looks for new leases (children after a
            reshard, new shards).

    >>> store = MemoryCheckpoints()
    >>> from stream.esm.checkpoints import ShardInfo
    >>> _ = store.sync_shards([ShardInfo("shardId-0")], "trim_horizon")
    >>> lease = store.checkpoint(store.take()[0], "42")
    >>> store.positions()
    {'shardId-0': '42'}
    """

    def __init__(self, worker_id: str = "local", *, renew_interval_s: float = 1.0) -> None:
        self.worker_id = worker_id
        self.renew_interval_s = renew_interval_s
        self._leases: dict[str, Lease] = {}
        self._tenure: dict[str, int] = {}  # shard -> counter when this worker took it
        self._lock = threading.Lock()

    def sync_shards(self, shards: Sequence[ShardInfo], initial_position: str) -> list[Lease]:
        """Create a lease for each shard not known yet; returns the leases created."""
        with self._lock:
            created = leases_to_create(shards, set(self._leases), initial_position)
            for lease in created:
                self._leases[lease.shard_id] = lease
            return created

    def take(self) -> list[Lease]:
        """Take every eligible lease nobody else holds; return the leases held, by shard."""
        with self._lock:
            leases = self._leases
            for shard_id, lease in sorted(leases.items()):
                parents_done = all(
                    p not in leases or leases[p].finished for p in lease.parent_shard_ids
                )
                if lease.owner is None and not lease.finished and parents_done:
                    leases[shard_id] = replace(
                        lease, owner=self.worker_id, counter=lease.counter + 1
                    )
                    self._tenure[shard_id] = lease.counter + 1
            return [lease for _, lease in sorted(leases.items()) if lease.owner == self.worker_id]

    def held(self) -> list[Lease]:
        """The leases held by this worker id (memory leases never expire), by shard."""
        with self._lock:
            leases = sorted(self._leases.items())
            return [lease for _, lease in leases if lease.owner == self.worker_id]

    def checkpoint(self, lease: Lease, sequence_number: str, sub_sequence_number: int = 0) -> Lease:
        """Store the checkpoint (resume *after* ``sequence_number``).

        Raises:
            LeaseLost: the lease is not held by this worker, or ``lease`` is from an
                earlier tenure.
            ValueError: not a sequence number, or behind the stored checkpoint.
        """
        with self._lock:
            current = self._held(lease)
            if not sequence_number.isdigit():
                msg = (
                    f"checkpoint of {lease.shard_id!r}: {sequence_number!r} is not a "
                    "sequence number; use finish() at the end of a shard"
                )
                raise ValueError(msg)
            stored = current.sequence_number
            if stored is not None and (int(sequence_number), sub_sequence_number) < (
                int(stored),
                current.sub_sequence_number,
            ):
                msg = (
                    f"checkpoint of {lease.shard_id!r} would move backwards, from {stored} "
                    f"to {sequence_number}"
                )
                raise ValueError(msg)
            new = replace(
                current,
                checkpoint=sequence_number,
                counter=current.counter + 1,
                sub_sequence_number=sub_sequence_number,
                owner_switches=0,
            )
            self._leases[lease.shard_id] = new
            return new

    def finish(self, lease: Lease) -> Lease:
        """Checkpoint ``SHARD_END`` and give the lease up."""
        with self._lock:
            current = self._held(lease)
            new = replace(
                current,
                checkpoint=SHARD_END,
                sub_sequence_number=0,
                owner=None,
                counter=current.counter + 1,
            )
            self._leases[lease.shard_id] = new
            return new

    def release(self, lease: Lease) -> None:
        """Give the lease up; releasing a lease not held does nothing."""
        with self._lock:
            current = self._leases.get(lease.shard_id)
            if current is not None and current.owner == self.worker_id:
                self._leases[lease.shard_id] = replace(
                    current, owner=None, counter=current.counter + 1
                )

    def leases(self) -> list[Lease]:
        """Every lease, by shard id."""
        with self._lock:
            return [lease for _, lease in sorted(self._leases.items())]

    def positions(self) -> dict[str, str]:
        """Each shard's checkpoint (a sequence number or a position name), for tests and
        summaries."""
        return {lease.shard_id: lease.checkpoint for lease in self.leases()}

    def _held(self, lease: Lease) -> Lease:
        current = self._leases.get(lease.shard_id)
        tenure = self._tenure.get(lease.shard_id, 0)
        if current is None or current.owner != self.worker_id or lease.counter < tenure:
            owner = current.owner if current else None
            raise LeaseLost("memory", lease.shard_id, self.worker_id, owner)
        return current
