"""What the delay proxies saw of one invocation's calls, for ``bench invocation``.

A call is ``(op, received, forwarded, served, answered)``: :mod:`bench.delayproxy`'s log, in
``time.monotonic()`` seconds (one clock for every process, so the two proxies' logs merge).
The proxy holds each call ``latency`` between ``received`` and ``forwarded``; the server
works on it between ``forwarded`` and ``served``.

Pure functions, no servers: the bench feeds them the logs, tests feed them made-up ones.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = ["Call", "depth", "service_ms", "slope"]

#: ``(op, received, forwarded, served, answered)``, as :mod:`bench.delayproxy` logs it.
Call = tuple[str, float, float, float, float]


def depth(calls: Iterable[Sequence[object]]) -> int:
    """The most calls of ``calls`` that went one after another: the longest chain in which
    each call reached the proxy after the one before it had been answered. Calls that were
    in flight together (a wave) count once; a call that waited for another counts again.

    It counts what the invocation did, not what it had to do: two calls that need not wait
    for each other but happened to go one after the other count as two.

    >>> depth([("A", 0, 1, 2, 2), ("B", 0.5, 1.5, 2.5, 2.5), ("C", 3, 4, 5, 5)])
    2
    >>> depth([])
    0
    """
    spans = sorted((float(c[1]), float(c[4])) for c in calls)  # type: ignore[arg-type]
    chain: list[int] = []
    for n, (start, _) in enumerate(spans):
        before = [chain[m] for m in range(n) if spans[m][1] <= start]
        chain.append(1 + max(before, default=0))
    return max(chain, default=0)


def service_ms(calls: Iterable[Sequence[object]]) -> dict[str, float]:
    """The server's time on the calls of each operation, added up, in ms (per call,
    ``served - forwarded``: from the moment the proxy sent the call on to the moment it had
    read the whole answer back).

    >>> service_ms([("PutItem", 0, 1, 1.004, 1.005), ("PutItem", 0, 1, 1.006, 1.007)])
    {'PutItem': 10.0}
    """
    total: dict[str, float] = {}
    for call in calls:
        op, forwarded, served = str(call[0]), float(call[2]), float(call[3])  # type: ignore[arg-type]
        total[op] = total.get(op, 0.0) + (served - forwarded) * 1000.0
    return {op: round(ms, 3) for op, ms in sorted(total.items())}


def slope(points: Sequence[tuple[float, float]]) -> float:
    """The least-squares slope of ``(x, y)`` points: with x the latency added per call and
    y the invocation's wall time (both in ms), how much wall time each ms of latency adds,
    that is how many calls the invocation made one after another.

    >>> slope([(0, 100), (10, 130), (20, 160)])
    3.0
    >>> slope([(10, 5)])
    0.0
    """
    xs = [x for x, _ in points]
    if len(set(xs)) < 2:  # a line needs two latencies
        return 0.0
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(y for _, y in points)
    spread = sum((x - mean_x) ** 2 for x in xs)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread
