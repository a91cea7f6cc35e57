"""``python -m bench session``: session windows per record, against a hand-written dict.

One process, one batch of JSON records (already decoded, as the chain sees them), the same
aggregation two ways, in alternating repeats:

* **session**: the ``window`` step with ``gap_s`` as the chain runs it: ``prepare(batch)``
  then the step on each record, with ``count``, ``sum`` and ``max``, in-memory state;
* **dict**: a hand-written loop: per key a list of open sessions ``[first, last, count,
  sum, max]``, a record joining (and bridging) those it is less than the gap from, a heap
  of ends closing them behind the watermark.

The records (:func:`_batch`): keys that come and go, some records out of order within
the lateness and some late, so that sessions open, grow (backwards too), merge and close.
Each repeat uses fresh state. It also reports the state writes of the batch (one per
distinct session the batch changed) and how many results both made.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import statistics
import time
from typing import TYPE_CHECKING, Any

import orjson

from processors.session import SessionWindow
from stream.records import Record

if TYPE_CHECKING:
    from collections.abc import Sequence

GAP = 30
LATENESS = 10
T0 = 1_767_225_600


def _batch(n: int, keys: int) -> list[Record]:
    """Ten records a second on one shard, each of a key that is not resting (a key rests
    200 s in every 1,000, longer than the gap: its session closes); every 7th record is up
    to 8 s late (within the lateness), every 50th 15 s (late)."""
    records = []
    for i in range(n):
        now = T0 + i // 10
        k = (i * 7919) % keys
        while (now // 200 + k) % 5 == 0:
            k = (k + 1) % keys
        back = 15 if i % 50 == 0 else (i * 31 % 9 if i % 7 == 0 else 0)
        doc = {"user": f"u{k}", "ts": now - back, "amount": i % 97}
        rec = Record(orjson.dumps(doc), doc["user"], str(10**20 + i), shard_id="s", index=i)
        rec.json  # noqa: B018  # decoded once, as an earlier step would have
        records.append(rec)
    return records


def _session(records: Sequence[Record]) -> int:
    step = SessionWindow(key="user", gap_s=GAP, field="ts", allowed_lateness_s=LATENESS,
                         aggregate={"n": "count", "revenue": {"sum": "amount"},
                                    "biggest": {"max": "amount"}}, state="memory")  # fmt: skip
    step.prepare(records)
    out = 0
    for rec in records:
        res = step(rec)
        if res is not None:
            out += len(res) if type(res) is list else 1
    return out


def _dict(records: Sequence[Record]) -> int:
    open_: dict[str, list[list[Any]]] = {}
    ends: list[tuple[float, int, list[Any]]] = []  # (end, tie-break, session); stale ones skipped
    max_time = None
    results = []
    tie = 0
    for rec in records:
        doc = rec.json
        key, t, amount = doc["user"], doc["ts"], doc["amount"]
        if max_time is not None and t < max_time - LATENESS:
            continue  # late
        sessions = open_.setdefault(key, [])
        hit = [s for s in sessions if s[0] < t + GAP and t < s[1] + GAP]
        if not hit:
            s = [t, t, 0, 0, None, key]
            sessions.append(s)
        else:
            hit.sort()
            s = hit[0]
            for other in hit[1:]:
                sessions.remove(other)
                s[1] = max(s[1], other[1])
                s[2] += other[2]
                s[3] += other[3]
                if other[4] is not None and (s[4] is None or other[4] > s[4]):
                    s[4] = other[4]
                other[2] = -1  # merged away: its heap entries are stale
        s[0], s[1] = min(s[0], t), max(s[1], t)
        s[2] += 1
        s[3] += amount
        if s[4] is None or amount > s[4]:
            s[4] = amount
        tie += 1
        heapq.heappush(ends, (s[1] + GAP, tie, s))
        if max_time is None or t > max_time:
            max_time = t
        watermark = max_time - LATENESS
        while ends and ends[0][0] <= watermark:
            end, _, s = heapq.heappop(ends)
            if s[2] >= 0 and s[1] + GAP == end:
                open_[s[5]].remove(s)
                s[2] = -1
                results.append(s)
    return len(results)


def main(argv: Sequence[str] | None = None) -> int:
    """Print µs/record of both and their ratio, and the state writes of the batch."""
    parser = argparse.ArgumentParser(prog="python -m bench session", description=__doc__)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    records = _batch(args.records, args.keys)
    made = _session(records), _dict(records)
    if made[0] != made[1]:
        print(f"the two disagree on the number of results: {made[0]} and {made[1]}")
        return 1
    times: dict[str, list[float]] = {"session": [], "dict": []}
    gc.disable()
    try:
        for i in range(args.repeats):
            order = [("session", _session), ("dict", _dict)]
            for name, fn in order if i % 2 == 0 else order[::-1]:
                started = time.perf_counter()
                fn(records)
                times[name].append((time.perf_counter() - started) / len(records) * 1e6)
    finally:
        gc.enable()
    step = SessionWindow(key="user", gap_s=GAP, field="ts", allowed_lateness_s=LATENESS,
                         aggregate={"n": "count"}, state="memory")  # fmt: skip
    step.prepare(records)
    med = {name: statistics.median(values) for name, values in times.items()}
    print(f"{args.records} records, {args.keys} keys, {args.repeats} repeats (median, best); "
          f"{made[0]} sessions closed")  # fmt: skip
    for name, values in times.items():
        print(f"  {name:<8} {med[name]:6.3f} µs/record  (best {min(values):.3f})")
    print(f"  ratio    {med['session'] / med['dict']:.2f}x (target <= 2x)")
    writes = step.store.writes  # type: ignore[attr-defined]
    still = len(step.store.shard("s").windows)  # type: ignore[attr-defined]
    print(f"  state writes of the batch: {writes}, one per session it changed: {made[0]} "
          f"closed + {still} still open + {writes - made[0] - still} merged away")  # fmt: skip
    return 0
