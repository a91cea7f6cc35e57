"""Overlapping the I/O of one invocation: calls that need not wait for each other go at once.

Lambda bills the invocation's wall time, and most of it is waiting on DynamoDB, OpenSearch
and S3. The batch fold writes its sinks at once (:class:`stream.batch.BatchRunner`), and
inside a sink the bulk calls that may go together are sent in **waves**
(:meth:`sinks.base.Sink._write_in_chunks`, the DynamoDB sink, the ``lookup`` enricher):

* the calls of a wave share no partition key (calls that share one stay in order, one
  wave after the other), and at most :data:`WAVE_WIDTH` calls are in a wave (bulk calls,
  of 25 to 500 items each: 32 of them hold a whole 500-record batch), or
  :data:`ITEM_WAVE_WIDTH` (calls of one item each: DynamoDB ``latest``'s conditional
  ``PutItem`` per key, whose number grows with the batch's keys);
* a wave is sent whole and awaited whole; its outcomes are then read in the order the
  sequential code would have read them, so failed keys, ``strict`` and the rule "a call
  that fails entirely holds back the rest of the batch" decide what the *next* wave sends:
  the calls already in flight beside the failed one finish (they share no key with it);
* ``strict`` ordering sends one call per wave, as before: nothing after the first failure
  may be written.

A sink's own calls go in waves through ``_write_in_chunks`` only when it declares
``concurrent_calls`` (a plugin's ``_write`` may keep state; SQS does). The sinks that take a
whole batch in one ``_write`` (``per_key_safe``) cut their calls into waves with
:func:`waves` themselves: DynamoDB its keys (``latest``) and chunks (``append``), OpenSearch
its ``_mget`` and ``_bulk`` calls, S3 its objects (a wave's objects share no partition
key), SQS its dead letters' calls, and the Kinesis sink's producer its PutRecords calls
(``Producer(concurrent=True)``).

boto3 clients are thread-safe, sessions are not: clients are made once per process under a
lock (:func:`stream.aws.aws_client`). The call pool is made once per process, a runner's
sink pool once per runner (on its first batch with two sinks to write), never per
invocation; threads start on first use, and ``concurrent.futures`` is imported only then
(it costs milliseconds of cold start).

:data:`ENABLED` switches it all off (every call in turn, as before): tests run both paths.

>>> run_all([lambda: 1, lambda: 2])
[1, 2]
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

TYPE_CHECKING = False  # not typing's: the handler's import never loads typing (ARCHITECTURE.md)
if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterator, Sequence
    from concurrent.futures import ThreadPoolExecutor
    from typing import Any, TypeVar

    T = TypeVar("T")

__all__ = [
    "ENABLED",
    "ITEM_WAVE_WIDTH",
    "SINK_WIDTH",
    "WAVE_WIDTH",
    "behind",
    "call_pool",
    "deferred",
    "deferring",
    "new_pool",
    "overlapping",
    "run_all",
    "wave_width",
    "waves",
]

#: Whether calls overlap at all (``False``: every call in turn, the code before issue 17).
ENABLED = True
#: Most calls of one wave in flight at once (one sink's bulk calls, one lookup's chunks).
WAVE_WIDTH = 32
#: Most calls of one item each in flight at once (DynamoDB ``latest``: a conditional
#: ``PutItem`` per key). A batch has as many as keys, up to its size: 32 cut a 500-record
#: batch of distinct keys into 16 waves, each a round trip on the invocation's critical
#: path; 128 into 4, and the usual batch of fewer keys into one. DynamoDB does not limit
#: requests in flight; its limit is per partition, 1,000 write units a second, and a wave's
#: keys are distinct (spread over partitions), each item a unit or a few: the width changes
#: when a batch's writes happen, not how many there are. The cost is local: a thread
#: (started on first use, about 20 KB resident each here) and a kept-alive connection per
#: call in flight.
ITEM_WAVE_WIDTH = 128
#: Most sinks of one function written at once.
SINK_WIDTH = 4

_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()
_CALLS = "shardline-call"  # the call pool's thread names start so
#: per thread: ``behind`` is the list of futures of the :func:`deferring` block running in
#: that thread (its invocation's), absent or ``None`` outside one
_local = threading.local()


@contextmanager
def overlapping(enabled: bool) -> Iterator[None]:
    """Set :data:`ENABLED` for a block (tests and benches that compare both paths).

    >>> with overlapping(False):
    ...     wave_width()
    1
    """
    global ENABLED  # noqa: PLW0603  # the process's switch
    before = ENABLED
    ENABLED = enabled
    try:
        yield
    finally:
        ENABLED = before


def wave_width(*, one_item: bool = False) -> int:
    """How many calls a wave may hold now: :data:`WAVE_WIDTH`, or :data:`ITEM_WAVE_WIDTH`
    for calls of one item each (read now: ``bench invocation --item-wave-width`` sets it),
    or 1 when switched off.

    >>> wave_width(), wave_width(one_item=True)
    (32, 128)
    """
    if not ENABLED:
        return 1
    return ITEM_WAVE_WIDTH if one_item else WAVE_WIDTH


def waves(calls: Sequence[T], keys: Callable[[T], Collection[str]] | None = None) -> list[list[T]]:
    """Cut ``calls`` (in the order they would go in turn) into waves to send one after
    another: at most :func:`wave_width` calls each, and, with ``keys`` (the partition keys a
    call holds), no two calls of a wave that share a key: the later one starts the next
    wave, so a key's calls are applied in order, each after the fate of the one before.

    >>> waves(["a", "b", "a", "c"], keys=lambda call: {call})
    [['a', 'b'], ['a', 'c']]
    >>> with overlapping(False):
    ...     waves([1, 2])
    [[1], [2]]
    """
    width = wave_width()
    cut: list[list[T]] = []
    taken: set[str] = set()
    for call in calls:
        held = keys(call) if keys is not None else ()
        if not cut or len(cut[-1]) >= width or not taken.isdisjoint(held):
            cut.append([])
            taken = set()
        cut[-1].append(call)
        taken.update(held)
    return cut


def call_pool() -> ThreadPoolExecutor:
    """The process's pool for the calls of waves (made once; threads start on first use).

    A task of this pool never waits on another task of it (:func:`run_all` runs in turn
    there), so it cannot deadlock; the sinks' own writes run on each runner's pool
    (:class:`stream.batch.BatchRunner`).
    """
    global _pool  # noqa: PLW0603  # one pool per process, like the clients
    pool = _pool
    if pool is None:
        with _lock:
            pool = _pool
            if pool is None:
                pool = _pool = new_pool(ITEM_WAVE_WIDTH, _CALLS)  # the widest wave
    return pool


def new_pool(width: int, name: str) -> ThreadPoolExecutor:
    """A pool of at most ``width`` threads, started on first use. ``concurrent.futures``
    costs milliseconds to import, so it is imported here, when a first pool is needed,
    not on the cold-start path."""
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415  # see above

    return ThreadPoolExecutor(width, thread_name_prefix=name)


def run_all(calls: Sequence[Callable[[], T]], pool: ThreadPoolExecutor | None = None) -> list[T]:
    """Run ``calls`` at once on ``pool`` (default :func:`call_pool`), the first one in this
    thread; return their results in order, once every call has ended.

    With one call or :data:`ENABLED` off, they run here in turn.

    Raises:
        Exception: the first exception, in the order of ``calls``, after all have ended
            (nothing is left running behind the caller's back).
    """
    if len(calls) <= 1 or not ENABLED or threading.current_thread().name.startswith(_CALLS):
        # a call of a wave that makes calls of its own makes them in turn: a task of the
        # call pool that waited on others of it could wait for ever when the pool is full
        return [call() for call in calls]
    pool = pool or call_pool()
    futures = [pool.submit(call) for call in calls[1:]]
    first: list[T] = []
    error: BaseException | None = None
    try:
        first.append(calls[0]())
    except BaseException as exc:  # re-raised below, after the others have ended
        error = exc
    results = first
    for future in futures:
        raised = future.exception()
        if raised is not None:
            error = error or raised
        else:
            results.append(future.result())
    if error is not None:
        raise error
    return results


@contextmanager
def deferring() -> Iterator[None]:
    """A block (an invocation: :meth:`stream.batch.BatchRunner.run`) in which calls started
    with :func:`behind` may run beside what follows them, and which ends only once every one
    of them has ended: nothing of an invocation runs after its handler returned (Lambda
    freezes the process then). Per thread; blocks nest (the inner one waits for its own).
    A call's exception is not raised here: it is its starter's, through the function
    :func:`behind` gave it."""
    pending: list[Any] = []
    outer = getattr(_local, "behind", None)
    _local.behind = pending
    try:
        yield
    finally:
        _local.behind = outer
        for future in pending:
            future.exception()  # waits; the starter reads the outcome


def behind(calls: Sequence[Callable[[], T]]) -> Callable[[], list[T]]:
    """Start ``calls`` at once and return a function that waits for them and returns their
    results in order (raising the first exception, as :func:`run_all`).

    In a :func:`deferring` block of this thread (with :data:`ENABLED` on, not in a call of
    the pool) they go on the call pool and this returns at once: work a batch does not wait
    for, such as deleting the items of the windows its commit closed (issue 17: one round
    trip fewer before the sinks), overlaps what comes next, and the block's end waits for it.
    Elsewhere they run here, now, as :func:`run_all` runs them: a caller that is not an
    invocation (a test, a bench, a tool) sees them done when this returns.

    >>> behind([lambda: 1, lambda: 2])()
    [1, 2]
    """
    if not deferred():
        results = run_all(calls)
        return lambda: results
    pool = call_pool()
    futures = [pool.submit(call) for call in calls]
    _local.behind.extend(futures)  # the deferring block's: it waits for them

    def wait() -> list[T]:
        return [future.result() for future in futures]

    return wait


def deferred() -> bool:
    """Whether calls :func:`behind` started here now would run beside what follows (in a
    :func:`deferring` block of this thread, :data:`ENABLED` on, not in a call of the pool).

    >>> deferred()
    False
    """
    return (
        getattr(_local, "behind", None) is not None
        and ENABLED
        and not threading.current_thread().name.startswith(_CALLS)
    )
