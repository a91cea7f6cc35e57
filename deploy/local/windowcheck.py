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
with the runtime's own compilers) may come before it. A windowed function the reference
cannot check (other steps before the window, session windows, arrival time, results not
in one ``dynamodb`` sink keyed by ``window_id``) is named with the reason
(:func:`unchecked_functions`), never skipped silently. Aggregations: ``count``, ``sum``,
``min``, ``max``, ``avg``, ``distinct``, ``first``, ``last``; a plugin's aggregates are not
compared, and the check says so (:attr:`WindowCheck.unchecked`). Window ids name keys by
their text (:func:`processors.window_keys.key_text`, the ``window_id`` contract), and
windows are told apart by it: the number ``1`` and the string ``"1"`` are two.

Why the producer's answers and not the put order: records of one shard are not in put order
(a per-key ordered producer sends a key's records one call apart, a second producer's
aggregates go out at its own flush), and lateness depends on the order in the shard.
"""

from __future__ import annotations

import heapq
import json
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
    "AtLeast",
    "Landed",
    "WindowCheck",
    "WindowReference",
    "check_windows",
    "compared_aggregates",
    "reference",
    "unchecked_functions",
    "window_functions",
    "window_rows",
]

#: The aggregations the reference computes; other aggregates of a row are not compared.
_MODELLED = ("count", "sum", "min", "max", "avg", "distinct", "first", "last")
#: The aggregations that share a window's byte budget (:func:`processors.aggregations.share_budget`)
_BUDGETED = ("distinct", "first", "last")
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
        unchecked: the aggregate names not compared (the reference does not model them: a
            plugin's), for the summary to say so.
    """

    function: str
    sink: str
    reference: WindowReference
    rows: dict[str, dict[str, Any]]
    compared: tuple[str, ...]
    samples: list[dict[str, Any]] = field(default_factory=list)
    unchecked: tuple[str, ...] = ()

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


def unchecked_functions(plan: Plan) -> dict[str, str]:
    """function -> why its windows are not checked, for each function with a window step
    that :func:`check_windows` leaves out (the demo's summary names them)."""
    checkable = window_functions(plan)
    out = {}
    for name, spec in plan["functions"].items():
        steps = list(spec.get("processors") or [])
        if not any("window" in step for step in steps):
            continue
        if name not in checkable:
            out[name] = (
                "its results do not go to one dynamodb sink keyed by window_id (one window "
                "step, one route, no route step): no rows to read back"
            )
            continue
        at, window, _ = checkable[name]
        why = _unmodelled(steps[:at], window)
        if why is not None:
            out[name] = why
    return out


def _unmodelled(before: list[dict[str, Any]], window: Mapping[str, Any]) -> str | None:
    """Why the reference cannot replay a checkable function's window, or ``None``."""
    if "gap_s" in window:
        return "session windows (gap_s): the reference models tumbling and hopping windows"
    if window.get("time", "event") != "event":
        return "time: arrival: the reference replays event times only"
    if _keeper(before) is None:
        return "a step before the window that is not a filter: the reference cannot replay it"
    return None


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


def _text(key: Any) -> str | None:
    """The key's text in ``window_id`` (the step's contract), ``None`` for a key the step
    dead-letters (none, an object or list, a number that is not finite)."""
    from processors.window_keys import key_text  # noqa: PLC0415  # light, pure

    if type(key) not in (str, int, float, bool):
        return None
    try:
        return key_text(key)
    except ValueError:
        return None


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
    budgeted = sum(1 for kind in aggs.values() if kind and kind[0] in _BUDGETED)
    out = WindowReference()
    shards: dict[str, list[Landed]] = {}
    for record in landed:
        shards.setdefault(record.shard, []).append(record)
    #: (shard, key text, start) -> (event time, document) in shard order
    acc: dict[tuple[str, str, int], list[tuple[float, Any]]] = {}
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
            key = _text(doc.get(key_field))
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
                docs.append((t, doc))
            greatest = t if greatest is None else max(greatest, t)
            if ends and ends[0] <= greatest - lateness:
                out.closers += 1
                while ends and ends[0] <= greatest - lateness:
                    heapq.heappop(ends)
        out.watermarks[shard] = -math.inf if greatest is None else greatest - lateness
    for (shard, key, start), docs in acc.items():
        window_id = f"{function}/{key}/{_iso(start)}"
        values = {name: _aggregate(kind, docs, budgeted) for name, kind in aggs.items() if kind}
        closed = start + size <= out.watermarks[shard]
        (out.closed if closed else out.open)[window_id] = values
    return out


def compared_aggregates(window: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The names of a window step's aggregates the reference computes and compares, and
    of those it does not (a plugin's).

    >>> window = {"aggregate": {"n": "count", "d": {"distinct": "x"}, "h": {"hll": "x"}}}
    >>> compared_aggregates(window)
    (('n', 'd'), ('h',))
    """
    compared = tuple(n for n, spec in window["aggregate"].items() if _kind(spec))
    return compared, tuple(n for n in window["aggregate"] if n not in compared)


def _kind(spec: Any) -> tuple[str, str | None] | None:
    """(kind, field) of an aggregate the reference computes, else ``None``."""
    if spec == "count":
        return ("count", None)
    if isinstance(spec, dict) and len(spec) == 1:
        ((kind, name),) = spec.items()
        if kind in _MODELLED:
            return (str(kind), str(name))
    return None


@dataclass(frozen=True, slots=True)
class AtLeast:
    """A ``distinct`` past its bound (:data:`processors.aggregations.DISTINCT_LIMIT` values,
    or its byte budget): the row says ``{"at_least": N}``, N at most ``exact`` (which
    values it kept depends on the order of the batches' merges)."""

    exact: int


def _aggregate(
    kind: tuple[str, str | None], docs: list[tuple[float, Any]], budgeted: int = 1
) -> Any:
    name, field_name = kind
    if name == "count" and field_name is None:
        return len(docs)
    timed = [(t, d[field_name]) for t, d in docs if field_name and d.get(field_name) is not None]
    values = [value for _, value in timed]
    if name == "count":
        return len(values)
    if name in {"first", "last"}:  # by event time; a tie: the earlier (first), later (last)
        if not timed:
            return None
        pick = min if name == "first" else max
        order = range(len(timed)) if name == "first" else range(len(timed) - 1, -1, -1)
        return timed[pick(order, key=lambda i: timed[i][0])][1]
    if name == "distinct":
        return _distinct(values, budgeted)
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


def _distinct(values: list[Any], budgeted: int) -> int | AtLeast:
    """How many distinct values, as ``distinct`` counts them: scalars as Python compares
    them (1 and 1.0 are one), objects and lists by their JSON with sorted keys; past its
    bound, :class:`AtLeast`."""
    from processors.aggregations import DISTINCT_LIMIT, STATE_BUDGET  # noqa: PLC0415

    seen = {
        v
        if isinstance(v, str | int | float)
        else orjson.dumps(v, option=orjson.OPT_SORT_KEYS).decode()
        for v in values
    }
    size = sum(len(json.dumps(v, separators=(",", ":"))) + 1 for v in seen)  # and commas
    if len(seen) > DISTINCT_LIMIT or size > STATE_BUDGET // budgeted:
        return AtLeast(len(seen))
    return len(seen)


def _same(row: Any, expected: Any) -> bool:
    if isinstance(expected, AtLeast):
        kept = row.get("at_least") if isinstance(row, dict) else None
        return isinstance(kept, int) and 0 < kept <= expected.exact
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
        before = list((spec.get("processors") or [])[:at])
        keep = _keeper(before)
        if keep is None or _unmodelled(before, window) is not None:
            continue  # unchecked_functions names it, with the reason
        ref = reference(function, window, landed, keep)
        rows = window_rows(client("dynamodb"), plan["sinks"][sink]["table"])
        compared, unchecked = compared_aggregates(window)
        shown = [rows[w] for w in sorted(rows)[:samples]]
        checks.append(WindowCheck(function, sink, ref, rows, compared, shown, unchecked))
    return checks
