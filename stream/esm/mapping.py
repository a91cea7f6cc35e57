"""The local event source mapping: Kinesis shards to function invocations, with Lambda's rules.

What it reproduces, and where each rule lives:

* **Reading** (here): every shard the checkpoint store lets this worker hold is read with
  GetShardIterator and GetRecords, paced by :func:`stream.esm.rules.next_read_at`: the
  shard's 5 reads/s and 2 MB/s split evenly among the ``share`` shared-throughput
  functions of the stream (an enhanced fan-out function has ``share`` 1: a budget of its
  own), and once per ``idle_poll_s`` while the shard is caught up (Lambda polls an idle
  shard once per second). An EFO function reads with GetRecords too (no local server
  implements SubscribeToShard's HTTP/2 push): its budget is modelled, its lower delivery
  latency (about 70 ms against 200 ms) is not. A reader starts after the lease's checkpoint
  (``AFTER_SEQUENCE_NUMBER``: a checkpoint means "after") or at the starting position.
* **The event** (here): each Kinesis record becomes the entry Lambda builds
  (``kinesis{kinesisSchemaVersion, partitionKey, sequenceNumber, data,
  approximateArrivalTimestamp}``, ``eventSource``, ``eventVersion``, ``eventID``
  ``shardId-…:seq``, ``eventName``, ``invokeIdentityArn``, ``awsRegion``,
  ``eventSourceARN``), once, when it is read.
* **Filtering** (:mod:`stream.esm.filter`): records that match no filter pattern are dropped
  before batching and count as processed; KPL aggregates never match a ``data`` pattern
  (as on AWS's shared-throughput consumer) and are counted apart.
* **Batching** (here): per shard and lane, in sequence order, up to ``size`` records or
  6 MB of event, invoked when full, when the batching window (``window_s``) has passed, or
  when the shard is read to its end. The window opens when a lane that had nothing waiting
  receives a record; records left over after a full batch are a backlog and go out without
  a new wait.
* **Responses, retries, bisect, age, on-failure** (:mod:`stream.esm.rules`). A record's age
  is measured on Kinesis's clock, as Lambda measures it on the service's side: when the
  HTTP ``Date`` of GetRecords answers shows this worker's clock more than
  :data:`CLOCK_SKEW_TOLERANCE_S` off, ages are corrected by that difference, so a worker
  whose clock runs ahead does not send fresh records to on-failure as too old.
* **ParallelizationFactor** (here): a shard's records are spread over ``parallelization``
  lanes by a stable hash of the partition key (CRC-32), and each lane has at most one batch
  in flight, so a key's records are delivered in order while up to N batches of the shard
  run at once. The shard's checkpoint is the highest sequence number *below which every
  record read is done* (acknowledged, filtered out, or sent to the on-failure destination):
  lanes finish out of order, so a lane ahead of another cannot move the checkpoint past the
  slower lane's records; after a restart the faster lane's records after that point are
  delivered again (at-least-once, as in Lambda).
* **Resharding** (the store): a closed parent is read to its end (GetRecords returns no
  next iterator), every record done, then ``finish``ed; the store hands out its children
  only after that, so they start after their parents.
* **Leases** (the store, :class:`stream.esm.store.CheckpointStore`): ``take`` is called every
  ``renew_interval_s``; a shard whose lease is no longer held, or whose checkpoint raises
  ``LeaseLost``, is dropped at once, its in-flight results discarded (its new owner resumes
  after the last checkpoint). So is a shard whose lease was not renewed within the lease
  duration on this worker's own clock, whatever the table says or whether it answers at all
  (cut off from the table, or paused): no new batch of it starts after that. A round whose
  shard sync fails (it reads the whole table, and reads may be throttled while writes are
  not) still renews the leases held.

Stopping (:meth:`EventSourceMapping.run`): when ``stop`` is set no new batch starts; the
batches in flight complete and their results are applied (retries they ask for are not
started), the checkpoints are written, then the leases are released so another worker
takes them at once. A batch is never abandoned half-applied.

Errors before invocation (the invoker raised: a broken worker pool) retry the same batch
after a backoff, without counting toward ``max_retries`` (only the record age ends them),
as Lambda does for throttles and service errors. An on-failure callback that raises leaves
the batch undone (the checkpoint waits): the same message is sent again after a backoff,
without invoking the function again, so nothing is lost silently.

Two ways to drive it: :meth:`~EventSourceMapping.run` (a thread pool for invocations; all
state changes happen in the calling thread) and :meth:`~EventSourceMapping.step`
(deterministic: one read per shard, one batch per lane, invoked in order in the calling
thread; for tests and ``invoke``-style runs with an injected clock).
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import time
import uuid
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from stream.esm.checkpoints import LeaseLost, ShardInfo, shards_from_list_shards
from stream.esm.filter import RecordFilter
from stream.esm.rules import (
    AGE_EXCEEDED,
    MAX_PAYLOAD_BYTES,
    RETRIES_EXHAUSTED,
    SHARD_READS_PER_S,
    Batch,
    InvocationStatus,
    ShardRecord,
    decide,
    expired,
    lane_of,
    next_read_at,
    on_failure_message,
    retry_delay,
    with_payload,
)
from stream.exceptions import ShardlineError

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable, Iterable, Mapping

    from stream.esm.checkpoints import Lease
    from stream.esm.invoke import InvokeOutcome, Invoker
    from stream.esm.rules import MappingSettings, OnFailureMessage
    from stream.esm.store import CheckpointStore
    from stream.event import KinesisEventRecord

__all__ = ["CLOCK_SKEW_TOLERANCE_S", "GET_RECORDS_PER_SECOND", "EventSourceMapping", "MappingStats"]

log = logging.getLogger(__name__)

#: Kinesis allows 5 GetRecords calls per shard per second (all shared consumers together).
GET_RECORDS_PER_SECOND = SHARD_READS_PER_S
_MAX_GET_RECORDS = 10_000
_MAX_BUFFER = 20_000
_MAX_BACKOFF_S = 30.0
#: A difference between this worker's clock and Kinesis's (read from the HTTP ``Date`` of
#: GetRecords answers, whole seconds) up to this is taken for the Date's rounding and the
#: call's latency, not for a wrong clock: record ages then use the worker's clock as is.
CLOCK_SKEW_TOLERANCE_S = 2.0


@dataclass
class MappingStats:
    """Counters of one mapping, for the CLI's summary (a snapshot: see ``stats``).

    Attributes:
        records_in: Kinesis records read from the stream.
        records_filtered: records dropped by the filter criteria (processed, never invoked).
        aggregated_dropped: of those, KPL aggregates (which a ``data`` pattern never matches).
        invocations: function invocations.
        batches_ok: invocations that succeeded for the whole batch.
        batches_partial: invocations that reported ``batchItemFailures``.
        batches_failed: function errors, timeouts and invalid responses.
        retries: retries scheduled (counted toward ``max_retries``).
        splits: batches bisected or split at a failed record (not retries).
        invoke_errors: invocations that could not be made (the invoker raised).
        batches_on_failure: batches sent to the on-failure destination.
        records_on_failure: records in them.
        checkpoints: checkpoints written.
        get_records_calls: GetRecords calls.
        shards_finished: shards read to their end and finished.
    """

    records_in: int = 0
    records_filtered: int = 0
    aggregated_dropped: int = 0
    invocations: int = 0
    batches_ok: int = 0
    batches_partial: int = 0
    batches_failed: int = 0
    retries: int = 0
    splits: int = 0
    invoke_errors: int = 0
    batches_on_failure: int = 0
    records_on_failure: int = 0
    checkpoints: int = 0
    get_records_calls: int = 0
    shards_finished: int = 0


class _InvokeFailed:
    """The invoker raised: the invocation was not made (an error before invocation)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _ShardLane:
    """One of a shard's lanes (``parallelization_factor`` of them, keys spread by hash):
    its records read and not yet delivered, its retries, whether a batch is in flight.
    Not the producer's lanes (stream.producer), which schedule its calls."""

    __slots__ = (
        "busy",
        "failures",
        "fresh",
        "fresh_bytes",
        "not_before",
        "pending",
        "since",
        "undelivered",
    )

    def __init__(self) -> None:
        self.fresh: deque[ShardRecord] = deque()  # read, never delivered
        self.fresh_bytes = 0
        self.since: float | None = None  # when the oldest fresh record was read
        self.pending: deque[Batch] = deque()  # retries and split halves: delivered first
        self.busy = False
        self.not_before = 0.0
        self.failures = 0  # consecutive errors before invocation or at the destination
        self.undelivered: tuple[Batch, OnFailureMessage] | None = None  # refused: send again


class _Shard:
    """One held shard: its reader, lanes, and the records between read and checkpoint."""

    def __init__(self, lease: Lease, info: ShardInfo, lanes: int) -> None:
        self.shard_id = lease.shard_id
        self.lease = lease
        self.info = info
        self.iterator: str | None = None
        self.ended = False  # read to its end: no records will come
        self.caught_up = False  # the last read found nothing new
        self.last_read: str | None = None  # the last record read in this tenure
        self.calls: deque[tuple[float, int]] = deque(maxlen=GET_RECORDS_PER_SECOND)
        self.next_poll = 0.0
        self.order: deque[tuple[int, str]] = deque()  # (position, seq) read, not checkpointed
        self.done: set[int] = set()  # positions done, of records in ``order``
        self.reached: str | None = None  # highest sequence number with everything done
        self.stored: str | None = lease.sequence_number
        self.lanes = [_ShardLane() for _ in range(lanes)]
        self.inflight = 0

    @property
    def buffered(self) -> int:
        return sum(len(lane.fresh) for lane in self.lanes)


class EventSourceMapping:
    """One function's event source mapping on one stream, run locally.

    Args:
        stream: the stream name.
        settings: the mapping's settings (:meth:`MappingSettings.from_plan`).
        invoker: runs the function (:class:`stream.esm.invoke.InProcessInvoker`, or the
            worker pool of :mod:`stream.esm.sandbox`).
        checkpoints: where leases and checkpoints live (:class:`stream.esm.checkpoints.LeaseTable`
            or :class:`stream.esm.store.MemoryCheckpoints`).
        client: a boto3 Kinesis client; by default the process's shared one.
        function_arn: ``requestContext.functionArn`` of on-failure messages; by default
            ``arn:aws:lambda:<region>:<account>:function:<function_name>`` from the stream.
        function_name: the Lambda function's name in that default ARN (the local run
            passes the deployed name, so that ``dlq redrive`` tells whose a range is).
        on_failure: receives each on-failure message (the lead wires it to SQS or S3);
            without one, batches given up on are logged and skipped, as Lambda does
            without a destination.
        on_failure_payload: the destination keeps whole invocation records (S3): each
            message also carries the batch's event under ``payload``
            (:func:`stream.esm.rules.with_payload`), as AWS writes to a bucket; SQS and
            SNS get the metadata alone.
        invoke_identity_arn: ``invokeIdentityArn`` of every record; by default a role
            ``lambda-role`` in the stream's account.
        now: epoch seconds (record ages are compared with arrival timestamps); injected in
            tests, with ``sleep``, so that nothing really waits.
        sleep: how the run loop idles.
        idle_poll_s: how long a caught-up shard waits before its next GetRecords.
        tick_s: the run loop's idle step.
        max_concurrency: invocations at once in :meth:`run` (all shards and lanes).
        share: how many functions split each shard's shared read throughput (5 reads/s,
            2 MB/s): the stream's functions without ``consumer: efo``; 1 for an enhanced
            fan-out function, which has its own.

    Raises:
        ValueError: ``AT_TIMESTAMP`` with a timestamp in the future, or invalid filter
            criteria (the pattern error says where).
    """

    def __init__(
        self,
        stream: str,
        settings: MappingSettings,
        invoker: Invoker,
        checkpoints: CheckpointStore,
        *,
        client: Any = None,
        function_arn: str | None = None,
        function_name: str = "shardline-local",
        on_failure: Callable[[OnFailureMessage], None] | None = None,
        on_failure_payload: bool = False,
        invoke_identity_arn: str | None = None,
        now: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        idle_poll_s: float = 1.0,
        tick_s: float = 0.05,
        max_concurrency: int = 64,
        share: int = 1,
    ) -> None:
        stamp = settings.starting_timestamp
        if settings.starting_position == "AT_TIMESTAMP" and stamp is not None and stamp > now():
            msg = (
                f"starting_timestamp {stamp} is in the future; AWS refuses an AT_TIMESTAMP "
                "mapping that starts later than now: give a past time"
            )
            raise ValueError(msg)
        self.stream = stream
        self.settings = settings
        self.invoker = invoker
        self.checkpoints = checkpoints
        self._client = client
        self._function_arn = function_arn
        self._function_name = function_name
        self._on_failure = on_failure
        self._on_failure_payload = on_failure_payload
        self._identity = invoke_identity_arn
        self._now = now
        self._sleep = sleep
        self.idle_poll_s = idle_poll_s
        self.tick_s = tick_s
        self.max_concurrency = max_concurrency
        if share < 1:
            msg = f"share: {share!r} is not a number of functions (1 or more)"
            raise ValueError(msg)
        self.share = share
        self._filter = RecordFilter(settings.filter_criteria)
        self._stats = MappingStats()
        self._shards: dict[str, _Shard] = {}
        self._infos: dict[str, ShardInfo] = {}
        self._next_refresh = float("-inf")
        self._refreshed = False
        self._stream_arn = ""
        self._region = ""
        self._account = ""
        self._warned_aggregates = False
        self._skew = 0.0  # this worker's clock minus Kinesis's, beyond the tolerance
        cap = settings.size * settings.parallelization
        self._buffer_cap = max(settings.size, min(cap, _MAX_BUFFER))

    # -- public surface -------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The Kinesis client, created on first use."""
        if self._client is None:
            from stream.aws import aws_client  # noqa: PLC0415  # boto3 only when needed

            self._client = aws_client("kinesis")
        return self._client

    @property
    def stats(self) -> MappingStats:
        """A snapshot of the counters."""
        return dataclasses.replace(self._stats)

    @property
    def function_arn(self) -> str:
        """``requestContext.functionArn`` of the on-failure messages."""
        if self._function_arn:
            return self._function_arn
        region, account = self._region or "us-east-1", self._account or "123456789012"
        return f"arn:aws:lambda:{region}:{account}:function:{self._function_name}"

    @property
    def stream_arn(self) -> str:
        """The stream's ARN (known after the first refresh)."""
        return self._stream_arn

    def positions(self) -> dict[str, str | None]:
        """Each held shard's stored checkpoint (None: nothing checkpointed yet)."""
        return {shard_id: shard.stored for shard_id, shard in sorted(self._shards.items())}

    @property
    def caught_up(self) -> bool:
        """Every held shard was read up to its newest record and everything read is done
        (also true when no shard is held, e.g. other workers hold them all)."""
        return self._refreshed and all(
            (shard.caught_up or shard.ended) and not shard.order and not shard.inflight
            for shard in self._shards.values()
        )

    def step(self) -> int:
        """One deterministic round: leases (when ``renew_interval_s`` has passed on the
        injected clock), one read per shard, one batch per lane (invoked in order, in this
        thread), results applied, checkpoints written. With a lease table, step at least
        every ``renew_interval_s`` of real time, or the leases expire.

        Returns:
            The number of invocations made.
        """
        self._maintain()
        self._poll_all()
        count = 0
        for shard, batch in self._ready():
            result = self._invoke(batch)
            count += not isinstance(result, _InvokeFailed)
            self._complete(shard, batch, result)
        self._settle()
        return count

    def poll_once(self) -> int:
        """One read per held shard (refreshing leases when due); returns records read."""
        self._maintain()
        before = self._stats.records_in
        self._poll_all()
        self._settle()
        return self._stats.records_in - before

    def run(self, stop: threading.Event) -> MappingStats:
        """Run until ``stop`` is set, then finish in-flight batches, checkpoint and release
        the leases (see the module doc). Returns the final counters."""
        inflight: dict[Future[InvokeOutcome | _InvokeFailed], tuple[_Shard, Batch]] = {}
        pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="esm-invoke")
        try:
            while not stop.is_set():
                self._maintain()
                progress = self._poll_all() > 0
                for shard, batch in self._ready():
                    inflight[pool.submit(self._invoke, batch)] = (shard, batch)
                    progress = True
                if inflight:
                    finished, _ = wait(inflight, timeout=self.tick_s, return_when=FIRST_COMPLETED)
                    for future in finished:
                        shard, batch = inflight.pop(future)
                        self._complete(shard, batch, future.result())
                        progress = True
                self._settle()
                if not progress and not inflight:
                    self._sleep(self.tick_s)
            for future in list(inflight):
                shard, batch = inflight.pop(future)
                self._complete(shard, batch, future.result())
            self._settle()
        finally:
            pool.shutdown(wait=True)
            self.release()
        return self.stats

    def release(self) -> None:
        """Release every held lease (after :meth:`step`-driven runs; :meth:`run` does it)."""
        for shard in list(self._shards.values()):
            try:
                self.checkpoints.release(shard.lease)
            except ShardlineError as exc:
                log.warning("lease on %s not released (it will expire): %s", shard.shard_id, exc)
        self._shards.clear()

    # -- leases and shards ----------------------------------------------------------------

    def _maintain(self) -> None:
        now = self._now()
        if now >= self._next_refresh:
            self._next_refresh = now + self.checkpoints.renew_interval_s
            if not self._refreshed:
                self._refresh()  # a missing stream or table fails the start, loudly
                return
            try:
                self._refresh()
            except Exception as exc:  # keep the shards held until they expire on our clock
                log.warning("lease refresh failed (retrying next round): %s", exc)
        self._stop_unheld()

    def _stop_unheld(self) -> None:
        """Stop reading every shard whose lease this worker can no longer prove it holds
        (not renewed within the lease duration: the table unreachable, or this process
        paused): another worker may own it by now. Results of its batches in flight are
        discarded; the new owner resumes after the last checkpoint."""
        if not self._shards:
            return
        held = {lease.shard_id for lease in self.checkpoints.held()}
        for shard_id in list(self._shards):
            if shard_id not in held:
                log.warning("lease on %s not renewed in time: stopping its reader", shard_id)
                del self._shards[shard_id]

    def _refresh(self) -> None:
        if not self._stream_arn:
            summary = self.client.describe_stream_summary(StreamName=self.stream)
            self._stream_arn = summary["StreamDescriptionSummary"]["StreamARN"]
            parts = self._stream_arn.split(":")
            self._region, self._account = parts[3], parts[4]
        infos = shards_from_list_shards(self._list_shards())
        self._infos = {info.shard_id: info for info in infos}
        try:
            self.checkpoints.sync_shards(infos, self.settings.starting_position)
        except ShardlineError as exc:
            if not self._refreshed:
                raise  # a missing or unusable table fails the start, loudly
            # the sync reads the whole table; reads may be throttled while writes are not:
            # the round's renewals must still be tried, or the leases run out meanwhile
            log.warning("syncing the shards' leases failed (again next round): %s", exc)
        held = {lease.shard_id: lease for lease in self.checkpoints.take()}
        for shard_id in list(self._shards):
            if shard_id not in held:
                log.info("lease on %s no longer held: stopping its reader", shard_id)
                del self._shards[shard_id]
        for shard_id, lease in held.items():
            info = self._infos.get(shard_id, ShardInfo(shard_id))
            shard = self._shards.get(shard_id)
            if shard is not None and lease.checkpoint != shard.lease.checkpoint:
                if _within_done(shard, lease):
                    # this reader's own checkpoint, written although its answer was lost
                    # (the lease table found it applied), or one inside what it has done
                    shard.lease, shard.stored = lease, lease.checkpoint
                else:
                    # checkpointed by another worker between two rounds (lost and taken
                    # back) past what this reader has done: what it holds is stale, start
                    # again from the stored checkpoint
                    log.info("lease on %s moved while away: rereading after it", shard_id)
                    del self._shards[shard_id]
                    shard = None
            if shard is not None:
                shard.info = info
                if lease.counter > shard.lease.counter:
                    shard.lease = lease
            elif not lease.finished:
                self._shards[shard_id] = _Shard(lease, info, self.settings.parallelization)
        self._refreshed = True

    def _list_shards(self) -> list[Mapping[str, Any]]:
        shards: list[Mapping[str, Any]] = []
        response = self.client.list_shards(StreamName=self.stream)
        shards += response.get("Shards", [])
        while response.get("NextToken"):
            response = self.client.list_shards(NextToken=response["NextToken"])
            shards += response.get("Shards", [])
        return shards

    def _drop(self, shard: _Shard, reason: str) -> None:
        if self._shards.get(shard.shard_id) is shard:
            log.warning("dropping shard %s: %s", shard.shard_id, reason)
            del self._shards[shard.shard_id]

    # -- reading --------------------------------------------------------------------------

    def _poll_all(self) -> int:
        before = self._stats.records_in
        for shard in list(self._shards.values()):
            self._poll(shard)
        return self._stats.records_in - before

    def _poll(self, shard: _Shard) -> None:
        now = self._now()
        if shard.ended or now < shard.next_poll or shard.buffered >= self._buffer_cap:
            return
        calls = shard.calls
        ready = next_read_at(calls, self.share)
        if now < ready:
            shard.next_poll = ready
            return
        try:
            if shard.iterator is None:
                shard.iterator = self._iterator(shard)
            limit = min(_MAX_GET_RECORDS, self._buffer_cap - shard.buffered)
            calls.append((now, 0))
            self._stats.get_records_calls += 1
            sent = self._now()  # after GetShardIterator: the Date is stamped during this call
            response = self.client.get_records(ShardIterator=shard.iterator, Limit=limit)
        except Exception as exc:  # any read error: back off, read again later
            self._read_failed(shard, exc, now)
            return
        records = response.get("Records") or []
        calls[-1] = (now, sum(len(r["Data"]) for r in records))  # what the 2 MB/s counts
        self._observe_stream_clock(response, sent, self._now())
        for raw in records:
            self._add(shard, raw, now)
        shard.iterator = response.get("NextShardIterator")
        shard.caught_up = not records and not response.get("MillisBehindLatest")
        if shard.iterator is None or (shard.caught_up and self._past_end(shard)):
            shard.ended = True
        elif shard.caught_up:
            shard.next_poll = now + self.idle_poll_s

    def _observe_stream_clock(
        self, response: Mapping[str, Any], sent: float, answered: float
    ) -> None:
        """Estimate how far this worker's clock is from Kinesis's, from the answer's HTTP
        ``Date``. Arrival stamps are Kinesis's clock; Lambda judges a record's age on the
        service's side, so a worker whose clock runs ahead by more than
        ``max_record_age_s`` would otherwise send records put a moment ago to the
        on-failure destination (and one behind would keep expired records).

        The server stamped the Date somewhere between ``sent`` and ``answered`` on this
        worker's clock: the estimate is taken at the middle, and a difference within half
        the call's time (plus the tolerance) is no skew; an answer slower than twice the
        tolerance changes nothing (it would have reset a skew already measured). Measured
        from the time before the call, a slow answer (throttle retries inside botocore) had
        read as a clock ahead and aged fresh records into on-failure (found in review)."""
        headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        date = headers.get("date") if isinstance(headers, dict) else None
        if not date:
            return  # not over HTTP (a stub client): the worker's clock is all there is
        from email.utils import mktime_tz, parsedate_tz  # noqa: PLC0415  # light, rarely needed

        parsed = parsedate_tz(date)
        if parsed is None:
            return
        half = (answered - sent) / 2
        if half > CLOCK_SKEW_TOLERANCE_S:
            return  # too slow an answer to tell: the estimate stays as the last one had it
        skew = sent + half - (mktime_tz(parsed) + 0.5)  # the Date: whole seconds, rounded down
        skew = skew if abs(skew) > CLOCK_SKEW_TOLERANCE_S + half else 0.0
        if skew and not self._skew:
            log.warning("this worker's clock is %+.1f s off Kinesis's: ages use Kinesis's", skew)
        elif self._skew and not skew:
            log.info("this worker's clock agrees with Kinesis's again")
        self._skew = skew

    def _iterator(self, shard: _Shard) -> str:
        if shard.last_read is not None:  # resume after what this reader already buffered
            request: dict[str, Any] = {
                "ShardId": shard.shard_id,
                "ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
                "StartingSequenceNumber": shard.last_read,
            }
        else:
            request = shard.lease.iterator_request(self.settings.starting_timestamp)
        response = self.client.get_shard_iterator(StreamName=self.stream, **request)
        iterator: str = response["ShardIterator"]
        return iterator

    def _past_end(self, shard: _Shard) -> bool:
        """A closed shard whose last sequence number was read (for servers that, unlike
        Kinesis, keep giving a next iterator at the end of a closed shard)."""
        ending = shard.info.ending_sequence_number
        if ending is None:
            return False
        last = shard.last_read or shard.lease.sequence_number
        return (int(last) if last is not None else 0) >= int(ending)

    def _read_failed(self, shard: _Shard, exc: Exception, now: float) -> None:
        # whatever failed, what is past the last read is unknown again: not caught up
        # (``dev --until-idle`` and ``demo`` stop on caught-up mappings, and would leave
        # records unread), an expired iterator included
        shard.caught_up = False
        code = _error_code(exc)
        if code == "ExpiredIteratorException":
            shard.iterator = None  # a new one after the last record read, at once
            return
        delay = 1.0 if code == "ProvisionedThroughputExceededException" else 2.0
        # one line: a proxy or a local server may answer a 5xx with a whole HTML page
        reason = str(exc).split("\n", 1)[0][:300]
        log.warning("reading %s failed (%s); again in %.1f s", shard.shard_id, reason, delay)
        shard.iterator = None if code == "ResourceNotFoundException" else shard.iterator
        shard.next_poll = now + delay

    def _add(self, shard: _Shard, raw: Mapping[str, Any], now: float) -> None:
        stats = self._stats
        stats.records_in += 1
        seq: str = raw["SequenceNumber"]
        data: bytes = raw["Data"]
        key: str = raw["PartitionKey"]
        stamp = raw["ApproximateArrivalTimestamp"]
        arrival = round(stamp if isinstance(stamp, int | float) else stamp.timestamp(), 3)
        shard.last_read = seq
        if not self._filter.matches(data, key, seq, arrival):
            stats.records_filtered += 1
            if self._filter.aggregated(data):
                stats.aggregated_dropped += 1
                self._warn_aggregate(shard.shard_id, seq)
            position = int(seq)
            shard.order.append((position, seq))
            shard.done.add(position)
            return
        entry: KinesisEventRecord = {
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": key,
                "sequenceNumber": seq,
                "data": base64.b64encode(data).decode("ascii"),
                "approximateArrivalTimestamp": arrival,
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": f"{shard.shard_id}:{seq}",
            "eventName": "aws:kinesis:record",
            "invokeIdentityArn": self._identity or f"arn:aws:iam::{self._account}:role/lambda-role",
            "awsRegion": self._region,
            "eventSourceARN": self._stream_arn,
        }
        lane_index = lane_of(key, self.settings.parallelization)
        record = ShardRecord(entry, shard.shard_id, len(orjson.dumps(entry)) + 1, lane_index)
        shard.order.append((record.position, seq))
        lane = shard.lanes[lane_index]
        if not lane.fresh:
            lane.since = now
        lane.fresh.append(record)
        lane.fresh_bytes += record.size

    def _warn_aggregate(self, shard_id: str, seq: str) -> None:
        if not self._warned_aggregates:
            self._warned_aggregates = True
            log.warning(
                "%s:%s is a KPL aggregate: filter criteria never match aggregates (AWS drops "
                "them on a shared-throughput consumer), so it was dropped with its user "
                "records; if producers aggregate, set stream.aggregated: true and remove "
                "filter_pushdown",
                shard_id,
                seq,
            )

    # -- batching -------------------------------------------------------------------------

    def _ready(self) -> list[tuple[_Shard, Batch]]:
        """The batches to invoke now, one per idle lane; expired ones go to on-failure."""
        ready = []
        for shard in list(self._shards.values()):
            for index, lane in enumerate(shard.lanes):
                batch = self._next_batch(shard, index, lane)
                if batch is not None:
                    lane.busy = True
                    shard.inflight += 1
                    ready.append((shard, batch))
        return ready

    def _next_batch(self, shard: _Shard, index: int, lane: _ShardLane) -> Batch | None:
        if lane.busy:
            return None
        max_age = self.settings.max_record_age_s
        while True:
            now = self._now()
            if now < lane.not_before:
                return None
            if lane.undelivered is not None:  # the destination again, not the function
                refused, message = lane.undelivered
                lane.undelivered = None
                if not self._give_up(shard, lane, refused, message=message):
                    return None
                continue
            batch: Batch | None
            if lane.pending:
                batch = lane.pending.popleft()
            else:
                batch = self._fresh_batch(shard, index, lane, now)
                if batch is None:
                    return None
            if not expired(batch, max_age, now - self._skew):  # on the stream's clock
                return batch
            if not self._give_up(shard, lane, batch, condition=AGE_EXCEEDED):
                return None

    def _fresh_batch(self, shard: _Shard, index: int, lane: _ShardLane, now: float) -> Batch | None:
        fresh = lane.fresh
        if not fresh:
            return None
        settings = self.settings
        full = len(fresh) >= settings.size or lane.fresh_bytes >= MAX_PAYLOAD_BYTES
        waited = lane.since is not None and now - lane.since >= settings.window_s
        if not (full or waited or shard.ended):
            return None
        max_age = settings.max_record_age_s
        stream_now = now - self._skew  # ages are on the stream's clock, as its stamps
        old = max_age >= 0 and stream_now - fresh[0].arrival > max_age
        taken: list[ShardRecord] = []
        size = 14  # {"Records":[]}
        while fresh and len(taken) < settings.size:
            record = fresh[0]
            if taken and size + record.size > MAX_PAYLOAD_BYTES:
                break
            if old and stream_now - record.arrival <= max_age:
                break  # expired records go to on-failure apart from younger ones
            taken.append(fresh.popleft())
            size += record.size
            lane.fresh_bytes -= record.size
        if not fresh:
            lane.since = None
        return Batch(shard.shard_id, index, tuple(taken))

    # -- invoking and applying results ----------------------------------------------------

    def _invoke(self, batch: Batch) -> InvokeOutcome | _InvokeFailed:
        """Runs in a pool thread under :meth:`run`: touches nothing but the invoker."""
        try:
            return self.invoker.invoke(batch.event(), timeout_s=self.settings.timeout_s)
        except Exception as exc:  # the invocation could not be made
            return _InvokeFailed(exc)

    def _complete(self, shard: _Shard, batch: Batch, result: InvokeOutcome | _InvokeFailed) -> None:
        lane = shard.lanes[batch.lane]
        lane.busy = False
        shard.inflight -= 1
        if self._shards.get(shard.shard_id) is not shard:
            return  # the lease was lost meanwhile: its new owner delivers these again
        stats = self._stats
        if isinstance(result, _InvokeFailed):
            stats.invoke_errors += 1
            lane.failures += 1
            delay = min(_MAX_BACKOFF_S, 0.5 * 2**lane.failures)
            log.warning(
                "invoking %s failed before the function ran (%s); again in %.1f s",
                shard.shard_id,
                result.error,
                delay,
            )
            lane.pending.appendleft(batch)
            lane.not_before = self._now() + delay
            return
        lane.failures = 0
        stats.invocations += 1
        decision = decide(
            batch,
            payload=result.payload,
            error=result.error,
            timed_out=result.timed_out,
            request_id=result.request_id,
            settings=self.settings,
        )
        if decision.outcome is InvocationStatus.OK:
            stats.batches_ok += 1
        elif decision.outcome is InvocationStatus.PARTIAL:
            stats.batches_partial += 1
        else:
            stats.batches_failed += 1
        if decision.reason:
            log.info(
                "%s batch %s..%s: %s",
                shard.shard_id,
                batch.records[0].sequence_number,
                batch.records[-1].sequence_number,
                decision.reason,
            )
        self._mark_done(shard, decision.done)
        lane.pending.extendleft(reversed(decision.retry))
        if decision.counted and decision.retry:  # a retry waits; a split goes at once
            lane.not_before = self._now() + retry_delay(decision.retry[0].retries)
        stats.retries += decision.counted
        stats.splits += decision.split
        if decision.exhausted is not None:
            self._give_up(shard, lane, decision.exhausted, condition=RETRIES_EXHAUSTED)

    def _give_up(
        self,
        shard: _Shard,
        lane: _ShardLane,
        batch: Batch,
        *,
        condition: str = "",
        message: OnFailureMessage | None = None,
    ) -> bool:
        """Send a batch to the on-failure destination and mark it done; False when the
        destination refused it: the lane then sends the same message again after a
        backoff, before anything else, without invoking the function again."""
        if message is None:
            message = on_failure_message(
                batch,
                condition=condition,
                function_arn=self.function_arn,
                stream_arn=self._stream_arn,
                request_id=str(uuid.uuid4()),
                now=self._now(),
            )
            if self._on_failure_payload:
                message = with_payload(message, batch.event())
        if self._on_failure is None:
            log.warning(
                "no on-failure destination: skipping %s records of %s (%s..%s, %s)",
                len(batch.records),
                shard.shard_id,
                batch.records[0].sequence_number,
                batch.records[-1].sequence_number,
                message["requestContext"]["condition"],
            )
        else:
            try:
                self._on_failure(message)
            except Exception as exc:  # keep the records: retry later
                lane.failures += 1
                delay = min(_MAX_BACKOFF_S, 0.5 * 2**lane.failures)
                log.error(
                    "on-failure destination refused %s (%s); again in %.1f s",
                    shard.shard_id,
                    exc,
                    delay,
                )
                lane.undelivered = (batch, message)
                lane.not_before = self._now() + delay
                return False
            lane.failures = 0
        self._stats.batches_on_failure += 1
        self._stats.records_on_failure += len(batch.records)
        self._mark_done(shard, batch.records)
        return True

    def _mark_done(self, shard: _Shard, records: Iterable[ShardRecord]) -> None:
        done = shard.done
        for record in records:
            done.add(record.position)

    # -- checkpoints ----------------------------------------------------------------------

    def _settle(self) -> None:
        """Move every shard's checkpoint up to its done prefix; finish shards read to the end."""
        for shard in list(self._shards.values()):
            order, done = shard.order, shard.done
            while order and order[0][0] in done:
                position, shard.reached = order.popleft()
                done.discard(position)
            if shard.reached is not None and shard.reached != shard.stored:
                try:
                    shard.lease = self.checkpoints.checkpoint(shard.lease, shard.reached)
                except (LeaseLost, ValueError) as exc:  # lost, or moved on by another worker
                    self._drop(shard, str(exc))
                    continue
                except ShardlineError as exc:
                    log.warning("checkpoint of %s not stored yet: %s", shard.shard_id, exc)
                    continue
                shard.stored = shard.reached
                self._stats.checkpoints += 1
            if shard.ended and not order and not shard.inflight:
                self._finish(shard)

    def _finish(self, shard: _Shard) -> None:
        try:
            self.checkpoints.finish(shard.lease)
        except LeaseLost as exc:
            self._drop(shard, str(exc))
            return
        except ShardlineError as exc:
            log.warning("finishing %s failed (again next round): %s", shard.shard_id, exc)
            return
        del self._shards[shard.shard_id]
        self._stats.shards_finished += 1
        self._next_refresh = float("-inf")  # its children may start now
        log.info("shard %s read to its end and finished", shard.shard_id)


def _within_done(shard: _Shard, lease: Lease) -> bool:
    """Whether the lease's stored checkpoint lies between the checkpoint this reader last
    stored and the point below which it has done every record: then every record up to it
    is done here, and the reader goes on as it is (rereading would deliver again the
    records it did after it, and discard its batches in flight)."""
    seq = lease.sequence_number
    if seq is None or lease.sub_sequence_number or shard.reached is None:
        return False
    low = int(shard.stored) if shard.stored is not None else -1
    return low <= int(seq) <= int(shard.reached)


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return type(exc).__name__
