"""Replay: put the records that arrived in a time window through a function again.

The records come from the pipeline's archive (:mod:`deploy.ops.archive`; past the stream's
retention, and not bound by a shard's read limit) or from the stream (``AT_TIMESTAMP`` on
every shard, :mod:`deploy.ops.shards`). Each goes through the function's *current* chain
(:func:`stream.runtime.build_runner` on the plan, as ``dlq redrive`` does) at its original
position (shard, sequence and sub-sequence number, partition key, arrival), so keyed sinks
are idempotent: replaying into live stores changes nothing, and a ``latest`` item is never
overwritten by an older record.

Order and parallelism. The work is cut into *units* (archive objects, or shards) taken in
shard order (shard, then first position) and read into *waves* of about
:data:`WAVE_RECORDS` records (``wave_records``); a shard is read page by page, so a stream
replay holds one wave and one page at a time, never a shard's whole window, and forgets the
positions of a wave once it is applied (a shard has no duplicates). A wave's records are
de-duplicated by position (the archive is at-least-once), kept when their arrival is in
``[since, until)``, and split into lanes by a stable hash of the partition key
(``zlib.crc32``); lanes run in parallel on a bounded thread pool, each with its own runner,
in order, in batches of ``batch_size``. So the
records of one key are applied in their shard order, and a wave starts only when the one
before it is done. In a lane, once a record of a key fails (retryably: a sink was
unavailable), the later records of that key are held back, and the replay stops after that
wave (nothing of a later wave is applied out of order).

Resuming. After each wave the units it finished are added to a small state file
(:class:`ReplayState`, under ``.shardline/``); a replay of the same request skips them. An
interrupted wave is applied again on the next run, harmlessly.

Which sinks. Every sink the function writes, or only ``sinks``; the others are replaced by
a ``discard`` sink, except the function's ``on_failure`` sink, which always receives what
fails again (nothing is dropped). Replaying from the archive leaves out the archive's own
sink unless it is named: it already holds these records.
"""

from __future__ import annotations

import hashlib
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from deploy.errors import EXIT_USAGE, DeployError
from deploy.ops.archive import Archive, find_archive, list_objects, read_object
from deploy.ops.dead_letters import window_index
from deploy.ops.shards import list_shard_ids, to_records, window_pages

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from sinks.base import Sink
    from stream.batch import BatchRunner
    from stream.plan import Plan, SinkSpec
    from stream.records import Record
    from stream.runtime import SinkFactory

__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_WORKERS",
    "SOURCES",
    "WAVE_RECORDS",
    "ReplayError",
    "ReplayRequest",
    "ReplayResult",
    "ReplayState",
    "replay",
    "target_sinks",
]

SOURCES = ("archive", "stream")
DEFAULT_WORKERS = 4
DEFAULT_BATCH = 500
#: Records read before a wave is run: enough for every lane to have full batches.
WAVE_RECORDS = 20_000
_PREFETCH = 8  # archive objects read at once
_PAGE_LIMIT = 10_000  # most records one GetRecords returns


class ReplayError(DeployError):
    """A replay that cannot start: no archive, an unknown function or sink, a bad window."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """What to replay.

    Attributes:
        function: the function whose chain the records go through.
        since: the window's start (arrival, epoch seconds, included).
        until: its end (excluded).
        source: ``archive`` or ``stream``.
        sinks: only these sinks (``None``: the defaults, module docstring).
        dry_run: read and count, write nothing.
        workers: lanes run at once.
        batch_size: records per batch through the runner.
        wave_records: records read before a wave is run; a stream replay holds fewer
            than twice this many at a time.
    """

    function: str
    since: float
    until: float
    source: str = "archive"
    sinks: tuple[str, ...] | None = None
    dry_run: bool = False
    workers: int = DEFAULT_WORKERS
    batch_size: int = DEFAULT_BATCH
    wave_records: int = WAVE_RECORDS

    def state_name(self, pipeline: str) -> str:
        """The state file's name: the same request resumes the same file.

        >>> ReplayRequest("f", 1.0, 2.0).state_name("shop")
        'replay-shop-f-archive-9666010e6584.json'
        """
        what = f"{self.since!r}|{self.until!r}|{','.join(self.sinks or ())}"
        digest = hashlib.sha256(what.encode()).hexdigest()[:12]
        return f"replay-{pipeline}-{self.function}-{self.source}-{digest}.json"


@dataclass
class ReplayResult:
    """What a replay did.

    Attributes:
        units: objects (archive) or shards (stream) to read, in all.
        skipped: units finished by an earlier run (the state file).
        done: units finished by this run.
        read: records read from them.
        duplicates: records read twice (the archive is at-least-once).
        outside: records outside the window.
        replayed: records put through the function (in the window, once each).
        written: records written, per sink.
        dead_letters: records dead-lettered (again).
        failed: records not handled, with the first reason of each sink or step.
        keys: distinct partition keys replayed.
        sinks: the sinks written (the others discarded).
        seconds: time taken.
    """

    units: int = 0
    skipped: int = 0
    done: int = 0
    read: int = 0
    duplicates: int = 0
    outside: int = 0
    replayed: int = 0
    written: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    failed: int = 0
    reasons: list[str] = field(default_factory=list)
    keys: int = 0
    sinks: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether every record in the window was handled."""
        return self.failed == 0


@dataclass
class ReplayState:
    """The units a replay has finished, kept in a JSON file between runs."""

    path: Path
    done: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, path: Path) -> ReplayState:
        """The state at ``path`` (empty when there is none)."""
        if not path.exists():
            return cls(path)
        return cls(path, set(orjson.loads(path.read_bytes()).get("done", ())))

    def add(self, units: Sequence[str]) -> None:
        """Record finished units (written through a temporary file: never half a file)."""
        self.done.update(units)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps({"done": sorted(self.done)}))
        tmp.replace(self.path)

    def clear(self) -> None:
        """Forget the state: the replay is complete."""
        self.path.unlink(missing_ok=True)


def target_sinks(
    plan: Plan, request: ReplayRequest, archive: Archive | None
) -> list[str]:
    """The sinks a replay writes (module docstring: which sinks).

    Raises:
        ReplayError: a named sink is not one the function writes.
    """
    from stream.runtime import used_sinks  # noqa: PLC0415

    spec = plan["functions"][request.function]
    used = [s for s in used_sinks(spec) if s != spec.get("on_failure")]
    if request.sinks is not None:
        unknown = [s for s in request.sinks if s not in used]
        if unknown:
            msg = (
                f"--sinks {','.join(unknown)}: not written by {request.function!r} "
                f"(it writes: {', '.join(used)})"
            )
            raise ReplayError(msg)
        return list(request.sinks)
    if request.source == "archive" and archive is not None:
        return [s for s in used if s != archive.sink]
    return used


def replay(
    plan: Plan,
    request: ReplayRequest,
    *,
    s3: Any = None,
    kinesis: Any = None,
    state_dir: Path | str = ".shardline",
    sink_factory: SinkFactory | None = None,
    on_progress: Callable[[ReplayResult], None] | None = None,
    archive: Archive | None = None,
) -> ReplayResult:
    """Replay a window through a function (module docstring); the state file is removed
    once every unit is done, and kept otherwise for the next run.

    Raises:
        ReplayError: the request cannot be run (no archive, unknown function or sink).
    """
    if request.function not in plan["functions"]:
        known = ", ".join(plan["functions"])
        msg = f"no function {request.function!r} in the file (it has: {known})"
        raise ReplayError(msg)
    window = window_index(plan["functions"][request.function])
    if window is not None:
        msg = (
            f"function {request.function!r} has a window step (processors[{window}]): it has "
            "applied its shards past these records and would take each for a redelivery and "
            "drop it, so a replay would write nothing and say it replayed them. A window's "
            "results are final once emitted; shardline does not run a window over its records "
            "again (replay a function without a window step)"
        )
        raise ReplayError(msg)
    if request.source not in SOURCES:
        msg = f"--source {request.source!r}: expected archive or stream"
        raise ReplayError(msg)
    if request.until <= request.since:
        msg = "--until must be later than --since"
        raise ReplayError(msg)
    if request.source == "archive":
        archive = archive or find_archive(plan)
        if archive is None:
            msg = (
                "the pipeline has no archive: a function with no processors whose route is one "
                "s3 sink (README, 'Replay'); use --source stream within the stream's retention"
            )
            raise ReplayError(msg)
    started = time.monotonic()
    result = ReplayResult(sinks=target_sinks(plan, request, archive))
    state = ReplayState.load(Path(state_dir) / request.state_name(str(plan.get("name") or "")))
    waves = (
        _archive_waves(s3, archive, request, state, result)
        if archive is not None and request.source == "archive"
        else _stream_waves(kinesis, plan, request, state, result)
    )
    lanes = _Lanes(plan, request, result, sink_factory)
    seen: set[tuple[str, int, int, str]] = set()
    keys: set[str] = set()
    try:
        with ThreadPoolExecutor(max_workers=request.workers, thread_name_prefix="replay") as pool:
            for units, records in waves:
                if request.source == "stream":
                    seen.clear()  # positions are unique in a shard: hold none of them
                wave = _select(records, request, seen, result)
                keys.update(r.partition_key for r in wave)
                result.replayed += len(wave)
                if not request.dry_run and wave:
                    lanes.run(pool, wave)
                if result.failed:
                    break  # later waves would apply a failed key's later records first
                result.done += len(units)
                if not request.dry_run:
                    state.add(units)
                if on_progress is not None:
                    on_progress(result)
    finally:
        lanes.close()
        result.keys = len(keys)
        result.seconds = time.monotonic() - started
    if not request.dry_run and result.ok and result.done + result.skipped == result.units:
        state.clear()
    return result


def _select(
    records: list[Record],
    request: ReplayRequest,
    seen: set[tuple[str, int, int, str]],
    result: ReplayResult,
) -> list[Record]:
    """The wave's records in the window, each position once."""
    wave = []
    since, until = request.since, request.until
    for rec in records:
        result.read += 1
        if not since <= rec.arrival < until:
            result.outside += 1
            continue
        position = (rec.shard_id, int(rec.sequence_number), rec.sub_sequence_number, rec.part)
        if position in seen:
            result.duplicates += 1
            continue
        seen.add(position)
        wave.append(rec)
    return wave


def _archive_waves(
    s3: Any, archive: Archive, request: ReplayRequest, state: ReplayState, result: ReplayResult
) -> Iterator[tuple[list[str], list[Record]]]:
    """Waves of archive objects, in shard order; objects done earlier are skipped."""
    objects = list_objects(s3, archive, since=request.since)
    result.units = len(objects)
    todo = [o for o in objects if o.key not in state.done]
    result.skipped = len(objects) - len(todo)
    units: list[str] = []
    records: list[Record] = []
    with ThreadPoolExecutor(max_workers=_PREFETCH, thread_name_prefix="replay-read") as pool:
        for start in range(0, len(todo), _PREFETCH):
            chunk = todo[start : start + _PREFETCH]
            for obj, recs in zip(
                chunk, pool.map(lambda o: read_object(s3, archive, o.key), chunk), strict=True
            ):
                units.append(obj.key)
                records += recs
                if len(records) >= request.wave_records:
                    yield units, records
                    units, records = [], []
    if units:
        yield units, records


def _stream_waves(
    kinesis: Any,
    plan: Plan,
    request: ReplayRequest,
    state: ReplayState,
    result: ReplayResult,
) -> Iterator[tuple[list[str], list[Record]]]:
    """Waves of each shard's records from ``since`` (``AT_TIMESTAMP``) up to ``until``, in
    shard order, read page by page (pages of at most ``wave_records``): a wave holds fewer
    than twice ``wave_records`` records, never a whole shard's window. A shard is a unit
    done only with its last wave (one interrupted before is read again from ``since``)."""
    stream = str(plan["stream"]["name"])
    aggregated = (plan.get("stream") or {}).get("aggregated") is True
    shards = list_shard_ids(kinesis, stream)
    result.units = len(shards)
    result.skipped = sum(s in state.done for s in shards)
    size = request.wave_records
    for shard in shards:
        if shard in state.done:
            continue
        records: list[Record] = []
        pages = window_pages(
            kinesis, stream, shard, request.since, request.until, limit=min(size, _PAGE_LIMIT)
        )
        for raws in pages:
            records += to_records(raws, shard, aggregated=aggregated)
            if len(records) >= size:
                yield [], records
                records = []
        yield [shard], records


class _Lanes:
    """The lanes of a replay: one runner per worker thread, records split by key."""

    def __init__(
        self,
        plan: Plan,
        request: ReplayRequest,
        result: ReplayResult,
        sink_factory: SinkFactory | None,
    ) -> None:
        self.plan = plan
        self.request = request
        self.result = result
        self.make = sink_factory
        self.local = threading.local()
        self.runners: list[BatchRunner] = []
        self.lock = threading.Lock()

    def _runner(self) -> BatchRunner:
        runner: BatchRunner | None = getattr(self.local, "runner", None)
        if runner is None:
            from sinks.discard import DiscardSink  # noqa: PLC0415
            from sinks.registry import build_sink  # noqa: PLC0415
            from stream.runtime import build_runner  # noqa: PLC0415

            make = self.make or build_sink
            keep = set(self.result.sinks)
            keep.add(self.plan["functions"][self.request.function].get("on_failure") or "")

            def factory(name: str, spec: SinkSpec) -> Sink:
                return make(name, spec) if name in keep else DiscardSink(name)

            runner = build_runner(self.plan, self.request.function, factory, metrics=False)
            self.local.runner = runner
            with self.lock:
                self.runners.append(runner)
        return runner

    def run(self, pool: ThreadPoolExecutor, wave: list[Record]) -> None:
        lanes: list[list[Record]] = [[] for _ in range(self.request.workers)]
        for rec in wave:
            lanes[zlib.crc32(rec.partition_key.encode()) % len(lanes)].append(rec)
        for future in [pool.submit(self._lane, lane) for lane in lanes if lane]:
            future.result()

    def _lane(self, records: list[Record]) -> None:
        runner = self._runner()
        failed_keys: set[str] = set()
        size = self.request.batch_size
        written: dict[str, int] = {}
        dead = failed = 0
        reasons: list[str] = []
        for start in range(0, len(records), size):
            batch: list[Record] = []
            for rec in records[start : start + size]:
                if rec.partition_key in failed_keys:
                    failed += 1
                    continue
                rec.index = len(batch)
                rec.routes = None
                batch.append(rec)
            if not batch:
                continue
            outcome = runner.run(batch)
            for name, n in outcome.written.items():
                written[name] = written.get(name, 0) + n
            dead += len(outcome.dead_letters)
            for index, why in outcome.failed.items():
                failed += 1
                failed_keys.add(batch[index].partition_key)
                if len(reasons) < 3 and why not in reasons:
                    reasons.append(why)
        with self.lock:
            result = self.result
            for name, n in written.items():
                result.written[name] = result.written.get(name, 0) + n
            result.dead_letters += dead
            result.failed += failed
            result.reasons += [r for r in reasons if r not in result.reasons][:3]

    def close(self) -> None:
        for runner in self.runners:
            for sink in runner.sinks.values():
                sink.close()
