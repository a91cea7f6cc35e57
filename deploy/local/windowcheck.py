"""The demo's check of windowed functions: the rows read back from DynamoDB against a
reference computed from the records the demo produced.

The reference is a plain-dict replay of the window rules (README, "Windows"), written apart
from :mod:`processors.window` so that it can disagree with it: per shard, in the order the
producer says each record landed (its shard, sequence and sub-sequence number, from
``PutRecords``' answers), a record that reaches the window step is added to each of its
windows whose end is after the shard's watermark (the greatest event time seen before it
minus ``allowed_lateness_s``), or is late when none is; a window is closed at the end when
its shard's final watermark has reached its end, and open otherwise. Only the steps before
the window that the reference can model (``filter`` with ``match`` or ``expr``, compiled
with the runtime's own compilers) may come before it; a function with others is not
checked. Aggregations: ``count``, ``sum``, ``min``, ``max``, ``avg``; other aggregates of a
row are not compared (:attr:`WindowCheck.compared` names those that are).

Why the producer's answers and not the put order: records of one shard are not in put order
(a per-key ordered producer sends a key's records one call apart, a second producer's
aggregates go out at its own flush), and lateness depends on the order in the shard.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from stream.plan import FunctionPlan, Plan

__all__ = [
    "Landed",
    "WindowCheck",
    "WindowReference",
    "check_windows",
    "reference",
    "window_functions",
    "window_rows",
]

#: The aggregations the reference computes; other aggregates of a row are not compared.
_MODELLED = ("count", "sum", "min", "max", "avg")
#: Sums of floats in the same order agree exactly; DynamoDB's decimal round trip may not.
_TOLERANCE = 1e-6


@dataclass(frozen=True, slots=True)
class Landed:
    """A produced record where it landed: its shard, its position there (sequence number,
    sub-sequence number) and its data as put."""

    shard: str
    position: tuple[int, int]
    data: bytes


@dataclass
class WindowReference:
    """What the window step should have made of the produced records.

    Attributes:
        closed: ``window_id`` -> the aggregates, for the windows its shard's final watermark
            has passed: exactly these are rows of the result table.
        open: the same for windows still open at the end (no row yet, and none missing).
        late: records that reached the step after all their windows had closed.
        reached: records that reached the step (kept by the steps before it).
        closers: records whose application closed at least one window (each goes on as the
            results; every other record that reached the step is dropped by it).
        watermarks: per shard, the final watermark (epoch seconds).
    """

    closed: dict[str, dict[str, Any]] = field(default_factory=dict)
    open: dict[str, dict[str, Any]] = field(default_factory=dict)
    late: int = 0
    reached: int = 0
    closers: int = 0
    watermarks: dict[str, float] = field(default_factory=dict)


@dataclass
class WindowCheck:
    """A windowed function's rows against its reference.

    Attributes:
        function: the function.
        sink: the sink its results are routed to (a ``dynamodb`` table keyed by ``window_id``).
        reference: the reference.
        rows: the rows read back, by ``window_id``.
        compared: the aggregate names compared.
        samples: a few rows, in ``window_id`` order, for the summary.
    """

    function: str
    sink: str
    reference: WindowReference
    rows: dict[str, dict[str, Any]]
    compared: tuple[str, ...]
    samples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def missing(self) -> list[str]:
        """Closed windows without a row."""
        return sorted(set(self.reference.closed) - set(self.rows))

    @property
    def extra(self) -> list[str]:
        """Rows of windows the reference has open or does not know."""
        return sorted(set(self.rows) - set(self.reference.closed))

    @property
    def differing(self) -> list[str]:
        """Closed windows whose row holds other aggregates than the reference."""
        out = []
        for window_id, expected in self.reference.closed.items():
            row = self.rows.get(window_id)
            if row is not None and not all(
                _same(row.get(name), expected[name]) for name in self.compared
            ):
                out.append(window_id)
        return sorted(out)

    @property
    def matching(self) -> int:
        """Closed windows whose row equals the reference."""
        return len(self.reference.closed) - len(self.missing) - len(self.differing)


def window_functions(plan: Plan) -> dict[str, tuple[int, dict[str, Any], str]]:
    """function -> (the index of its window step, the step's settings, its result sink),
    for each function with one window step routed to one ``dynamodb`` sink keyed by
    ``window_id``: the functions whose rows can be read back and checked."""
    out = {}
    for name, spec in plan["functions"].items():
        steps = spec.get("processors") or []
        at = [i for i, step in enumerate(steps) if "window" in step]
        route = spec.get("route") or []
        if len(at) != 1 or len(route) != 1 or any("route" in s for s in steps):
            continue
        sink: dict[str, Any] = dict(plan["sinks"].get(route[0]) or {})
        if sink.get("type") == "dynamodb" and sink.get("key") == "window_id":
            out[name] = (at[0], dict(steps[at[0]]["window"]), str(route[0]))
    return out


def _keeper(steps: list[dict[str, Any]]) -> Callable[[Any], bool] | None:
    """A predicate of the steps before the window, or ``None`` if one is not a filter."""
    from processors.expr import compile_predicate  # noqa: PLC0415
    from processors.match import compile_pattern  # noqa: PLC0415

    tests: list[Callable[[Any], bool]] = []
    for step in steps:
        args = step.get("filter")
        if not isinstance(args, dict) or set(args) - {"match", "expr"}:
            return None
        if "match" in args:
            tests.append(compile_pattern(args["match"]))
        if "expr" in args:
            tests.append(compile_predicate(args["expr"]))
    return lambda doc: all(test(doc) for test in tests)


def _seconds(value: Any) -> float | None:
    """Epoch seconds of a time field (ISO-8601, UTC without an offset; epoch s; ms from
    10^11 on), ``None`` if it is none of them."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value / 1000 if abs(value) >= 1e11 else float(value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    return None


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def reference(
    function: str,
    window: Mapping[str, Any],
    landed: Iterable[Landed],
    keep: Callable[[Any], bool] = lambda _doc: True,
) -> WindowReference:
    """Replay ``landed`` through the rules of ``window`` (the step's settings in the plan),
    per shard in shard order; ``keep`` is what the steps before the window keep. Event time
    only (``time: event``); aggregations of :data:`_MODELLED`."""
    size = int(window["size_s"])
    slide = int(window.get("slide_s") or size)
    lateness = int(window.get("allowed_lateness_s") or 0)
    key_field, time_field = window["key"], window["field"]
    aggs = {name: _kind(spec) for name, spec in window["aggregate"].items()}
    out = WindowReference()
    shards: dict[str, list[Landed]] = {}
    for record in landed:
        shards.setdefault(record.shard, []).append(record)
    acc: dict[tuple[str, Any, int], list[Any]] = {}  # (shard, key, start) -> values
    for shard, records in shards.items():
        greatest: float | None = None
        ends: list[int] = []  # the ends of the shard's open windows (a heap)
        for record in sorted(records, key=lambda r: r.position):
            try:
                doc = orjson.loads(record.data)
            except orjson.JSONDecodeError:
                continue  # dead-lettered before the window
            if not isinstance(doc, dict) or not keep(doc):
                continue
            t = _seconds(doc.get(time_field))
            key = doc.get(key_field)
            if t is None or key is None:
                continue  # dead-lettered by the window
            out.reached += 1
            watermark = -math.inf if greatest is None else greatest - lateness
            last = int(t // slide) * slide
            starts = [
                s for s in range(last - size + slide, last + 1, slide) if s + size > watermark
            ]
            if not starts:
                out.late += 1
                continue
            for start in starts:
                docs = acc.get((shard, key, start))
                if docs is None:
                    docs = acc[shard, key, start] = []
                    heapq.heappush(ends, start + size)
                docs.append(doc)
            greatest = t if greatest is None else max(greatest, t)
            if ends and ends[0] <= greatest - lateness:
                out.closers += 1
                while ends and ends[0] <= greatest - lateness:
                    heapq.heappop(ends)
        out.watermarks[shard] = -math.inf if greatest is None else greatest - lateness
    for (shard, key, start), docs in acc.items():
        window_id = f"{function}/{key}/{_iso(start)}"
        values = {name: _aggregate(kind, docs) for name, kind in aggs.items() if kind}
        closed = start + size <= out.watermarks[shard]
        (out.closed if closed else out.open)[window_id] = values
    return out


def _kind(spec: Any) -> tuple[str, str | None] | None:
    """(kind, field) of an aggregate the reference computes, else ``None``."""
    if spec == "count":
        return ("count", None)
    if isinstance(spec, dict) and len(spec) == 1:
        ((kind, name),) = spec.items()
        if kind in _MODELLED:
            return (str(kind), str(name))
    return None


def _aggregate(kind: tuple[str, str | None], docs: list[dict[str, Any]]) -> Any:
    name, field_name = kind
    if name == "count" and field_name is None:
        return len(docs)
    values = [d[field_name] for d in docs if field_name and d.get(field_name) is not None]
    if name == "count":
        return len(values)
    if name == "sum":
        total: float = 0
        for value in values:
            total += value
        return total
    if not values:
        return None
    if name == "min":
        return min(values)
    if name == "max":
        return max(values)
    return sum(values) / len(values)  # avg


def _same(row: Any, expected: Any) -> bool:
    if isinstance(row, int | float) and isinstance(expected, int | float):
        return abs(row - expected) <= _TOLERANCE * max(1.0, abs(expected))
    return bool(row == expected)


def window_rows(ddb: Any, table: str) -> dict[str, dict[str, Any]]:
    """The result table's items by ``window_id``, as plain values (numbers as int or float)."""
    from boto3.dynamodb.types import TypeDeserializer  # noqa: PLC0415

    from deploy.local.readback import table_items  # noqa: PLC0415

    plain = TypeDeserializer().deserialize
    rows = {}
    for item in table_items(ddb, table):
        row = {name: _number(plain(value)) for name, value in item.items()}
        rows[str(row["window_id"])] = row
    return rows


def _number(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def check_windows(
    plan: Plan, client: Callable[[str], Any], landed: list[Landed], samples: int = 3
) -> list[WindowCheck]:
    """Each checkable windowed function's rows (:func:`window_functions`) against its
    reference over ``landed``."""
    checks = []
    for function, (at, window, sink) in window_functions(plan).items():
        spec: FunctionPlan = plan["functions"][function]
        keep = _keeper(list((spec.get("processors") or [])[:at]))
        if keep is None or window.get("time", "event") != "event":
            continue
        ref = reference(function, window, landed, keep)
        rows = window_rows(client("dynamodb"), plan["sinks"][sink]["table"])
        compared = tuple(n for n, s in window["aggregate"].items() if _kind(s))
        shown = [rows[w] for w in sorted(rows)[:samples]]
        checks.append(WindowCheck(function, sink, ref, rows, compared, shown))
    return checks
