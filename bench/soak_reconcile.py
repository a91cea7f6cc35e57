"""Per-record reconciliation of the load part of ``python -m bench soak``.

The fault suite reconciles its own pipeline record by record (:mod:`tests.e2e.reconcile`);
this does the same for any pipeline whose sinks can be read back (DynamoDB, OpenSearch, S3,
SQS), the clickstream example in particular, with no counter and no metric in the sums:

* **produced**: the stream itself, read back from every shard's start and decoded as the
  functions decode it (aggregates expanded; a corrupt aggregate is one record), checked
  against the positions the producer reported;
* **filtered**: the function's chain (the compiled plan's processors, built as Lambda's
  cold start builds them, its sinks replaced by ones that discard) run here over those
  records; what it drops is filtered, what it raises on should be dead-lettered, and the
  rest should be in every sink its route names;
* **delivered**: in every sink the record's route names, found by its position: an archive
  line (``_shard``, ``_sequence``, ``_sub_sequence``) holding the record's fields; a
  DynamoDB item or OpenSearch document at its ``_position`` (a keyed sink keeps only a
  key's newest record, so an older one counts as present when a newer record of its key
  is there); an OpenSearch document without ``id`` by the record's document id;
* **dead-lettered**: a dead letter of this function at the record's position, or inside an
  on-failure message's range for the batch's lane (:func:`tests.e2e.reconcile.given_up`);
* **lost**: none of these.

Duplicate effects: extra archive lines at one position (removed by position when
identical) and repeated letters (removed likewise) are seen and removed; two documents or
items for one record are seen and are problems. Order, per partition key (records of a key
are in one shard, in position order): OpenSearch documents were first written in that
order (their ``_seq_no`` in the index; a later copy of a record changes no document), and
DynamoDB ``latest`` items too (their ``_written_at``: a write never replaces an item with an
equal or older position). The archive's objects carry no time of write, so its order is not
observable from the store.
"""

from __future__ import annotations

import base64
import itertools
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from tests.e2e.reconcile import Figures, Produced, given_up

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from stream.event import KinesisEvent
    from stream.plan import Plan
    from stream.records import Record

__all__ = [
    "FunctionFigures",
    "LoadFigures",
    "Offline",
    "Position",
    "Stores",
    "StreamCopy",
    "read_stores",
    "read_stream",
    "reconcile_load",
    "run_chain",
]

Position = tuple[str, str, int]
#: Sink types whose entries name their record (by position or id): what a route can go to
#: for its function to be reconciled record by record.
_READ_BY_POSITION = frozenset({"s3", "dynamodb", "opensearch"})
#: The archive's bookkeeping fields (:data:`sinks.s3.BOOKKEEPING`).
_BOOKKEEPING = frozenset({"_shard", "_sequence", "_sub_sequence", "_partition_key", "_arrival"})


def position(record: Record) -> Position:
    """(shard, sequence, sub-sequence): how archive lines and dead letters name a record."""
    return (record.shard_id, record.sequence_number, record.sub_sequence_number)


# -- what was produced ---------------------------------------------------------------------


@dataclass(frozen=True)
class StreamCopy:
    """The stream, read back: each shard's records as the one event a function would get."""

    events: dict[str, KinesisEvent]
    aggregated: bool

    def per_shard(self) -> Iterable[list[Record]]:
        """Fresh records (a chain may change them), one list per shard, in shard order."""
        from stream.event import records_from_event  # noqa: PLC0415

        for shard in sorted(self.events):
            yield records_from_event(self.events[shard], aggregated=self.aggregated)

    def records(self) -> list[Record]:
        return [r for shard in self.per_shard() for r in shard]


def read_stream(kinesis: Any, stream: str, *, aggregated: bool) -> StreamCopy:
    """Every record of every shard of ``stream`` (``aggregated``: the stream's setting)."""
    from stream.testing import read_shard_event  # noqa: PLC0415

    shards = [
        shard["ShardId"]
        for page in kinesis.get_paginator("list_shards").paginate(StreamName=stream)
        for shard in page["Shards"]
    ]
    return StreamCopy({s: read_shard_event(kinesis, stream, s) for s in shards}, aggregated)


@dataclass(frozen=True)
class Offline:
    """What a function's chain makes of the produced records, run here.

    Attributes:
        routes: per record the chain keeps, the sinks its route names.
        filtered: records the chain drops.
        failed: records the chain raises on (a dead letter is expected for each).
    """

    routes: dict[Position, tuple[str, ...]]
    filtered: frozenset[Position]
    failed: frozenset[Position]


def run_chain(plan: Plan, function: str, stream: StreamCopy) -> Offline:
    """Run ``function``'s chain over every record of ``stream``, one batch per shard.

    Steps that read a store (a lookup) read the real one: the environment must point at
    the stack the load ran on."""
    from sinks.discard import DiscardSink  # noqa: PLC0415
    from stream.runtime import build_runner  # noqa: PLC0415

    runner = build_runner(
        plan, function, sink_factory=lambda name, _spec: DiscardSink(name), metrics=False
    )
    default = tuple(runner.default_route)
    routes: dict[Position, tuple[str, ...]] = {}
    filtered: set[Position] = set()
    failed: set[Position] = set()
    for records in stream.per_shard():
        every = [position(r) for r in records]
        chained = runner.chain.run(records)
        for record in chained.records:
            routes[position(record)] = tuple(record.routes if record.routes is not None
                                             else default)  # fmt: skip
        failed.update(position(f.record) for f in chained.failures)
        filtered.update(p for p in every if p not in routes and p not in failed)
    return Offline(routes, frozenset(filtered), frozenset(failed))


# -- what the stores hold ------------------------------------------------------------------


@dataclass
class Stores:
    """Everything the plan's sinks hold, read back.

    Attributes:
        lines: per S3 sink, the archive's lines.
        items: per DynamoDB sink, its items (AttributeValue form).
        documents: per OpenSearch sink, its hits (``_id``, ``_index``, ``_seq_no``,
            ``_source``) in every index its template names.
        messages: the messages of every SQS sink (dead letters and on-failure messages).
        unread: sinks of a kind that cannot be read back (a ``kinesis`` sink, ``stdout``).
    """

    lines: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    items: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    documents: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    unread: list[str] = field(default_factory=list)

    def letters(self, function: str) -> list[dict[str, Any]]:
        return [m for m in self.messages
                if "KinesisBatchInfo" not in m and m.get("function") == function]  # fmt: skip

    def on_failure(self, function_name: str) -> list[dict[str, Any]]:
        """On-failure messages of the deployed function named ``function_name``."""
        return [
            m for m in self.messages if "KinesisBatchInfo" in m
            and str(m.get("requestContext", {}).get("functionArn", "")).rsplit(":", 1)[-1]
            == function_name
        ]  # fmt: skip


def read_stores(plan: Plan, client: Callable[[str], Any]) -> Stores:
    """Read every sink of ``plan`` (see :class:`Stores`)."""
    from deploy.local.readback import archive_lines, dead_letters, table_items  # noqa: PLC0415

    stores = Stores()
    for name, spec in plan["sinks"].items():
        kind = spec["type"]
        if kind == "s3":
            stores.lines[name] = archive_lines(client("s3"), spec["bucket"], spec["prefix"])
        elif kind == "dynamodb":
            stores.items[name] = table_items(client("dynamodb"), spec["table"])
        elif kind == "opensearch":
            stores.documents[name] = _documents(spec["endpoint"], spec["index"])
        elif kind == "sqs":
            stores.messages += dead_letters(client("sqs"), spec["queue"], client("s3"))
        else:
            stores.unread.append(name)
    return stores


def _documents(url: str, template: str) -> list[dict[str, Any]]:
    from opensearchpy import NotFoundError, OpenSearch, helpers  # noqa: PLC0415

    from deploy.local.readback import index_pattern  # noqa: PLC0415

    client = OpenSearch(hosts=[url], timeout=60)
    pattern = index_pattern(template)
    try:
        client.indices.refresh(index=pattern)
        return list(helpers.scan(client, index=pattern, size=2000, seq_no_primary_term=True))
    except NotFoundError:
        return []
    finally:
        client.close()


# -- the reconciliation --------------------------------------------------------------------


@dataclass(frozen=True)
class FunctionFigures:
    """One function's reconciliation: ``filtered`` besides the fault suite's figures
    (produced = filtered + delivered + dead-lettered + lost)."""

    function: str
    filtered: int
    figures: Figures
    dead_letters: dict[str, int] = field(default_factory=dict)  # "step: error" → letters

    @property
    def ok(self) -> bool:
        return self.figures.ok and self.figures.lost == 0


@dataclass(frozen=True)
class LoadFigures:
    """Every function's reconciliation, and what the stream read back says of the producer."""

    functions: dict[str, FunctionFigures]
    stream_problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.stream_problems and all(f.ok for f in self.functions.values())


class _Check:
    """Problems and duplicate / order counts of one function's walk through the stores."""

    def __init__(self, by_position: dict[Position, Record], plan: Plan, stores: Stores) -> None:
        self.by_position = by_position
        self.plan = plan
        self.stores = stores
        self.problems: list[str] = []
        self.seen = 0
        self.removed = 0
        self.order = 0

    def problem(self, text: str) -> None:
        self.problems.append(text)

    def function(
        self, function: str, records: list[Record], offline: Offline, *,
        on_failure: list[dict[str, Any]], lanes: int,
    ) -> FunctionFigures:  # fmt: skip
        """Reconcile one function (see the module doc)."""
        return _reconcile_function(
            self, function, records, offline, on_failure=on_failure, lanes=lanes
        )


def reconcile_load(
    plan: Plan,
    stream: StreamCopy,
    stores: Stores,
    reported: Iterable[Position] | None = None,
) -> LoadFigures:
    """Reconcile every function of ``plan`` without a window step whose sinks can all be
    read (see the module doc); ``reported``: the positions the producer reported, checked
    against the stream."""
    from deploy.names import function_name  # noqa: PLC0415

    records = stream.records()
    by_position = {position(r): r for r in records}
    problems: list[str] = []
    if len(by_position) != len(records):
        problems.append(f"{len(records) - len(by_position)} records share a position")
    if reported is not None:
        reported = set(reported)
        if extra := by_position.keys() - reported:
            problems.append(f"{len(extra)} records on the stream the producer did not report")
        if missing := reported - by_position.keys():
            problems.append(f"{len(missing)} records reported put are not on the stream")
    out = {}
    for function, spec in plan["functions"].items():
        if any("window" in step for step in spec.get("processors") or ()):
            # results name windows, not records, and running the chain offline would apply
            # the records to the live window state: `demo` checks such a function against a
            # reference instead (deploy/local/windowcheck.py)
            continue
        offline = run_chain(plan, function, stream)
        sinks = {s for routes in offline.routes.values() for s in routes}
        if any(plan["sinks"][s]["type"] not in _READ_BY_POSITION for s in sinks):
            continue  # a store whose entries cannot be told apart by record (a queue, stdout)
        lanes = int(spec.get("batch", {}).get("parallelization", 1) or 1)
        check = _Check(by_position, plan, stores)
        on_failure = stores.on_failure(function_name(plan, function))
        out[function] = check.function(
            function, records, offline, on_failure=on_failure, lanes=lanes
        )
    return LoadFigures(out, tuple(problems))


def _reconcile_function(
    check: _Check, function: str, records: list[Record], offline: Offline, *,
    on_failure: list[dict[str, Any]], lanes: int,
) -> FunctionFigures:  # fmt: skip
    plan, stores = check.plan, check.stores
    letters = stores.letters(function)
    lettered = _letters(check, letters)
    produced = [Produced(i, r.partition_key, r.shard_id, r.sequence_number,
                         r.sub_sequence_number) for i, r in enumerate(records)]  # fmt: skip
    gave_up = {position(records[n]) for n in given_up(produced, on_failure, lanes)}
    used = sorted({s for routes in offline.routes.values() for s in routes})
    holders = {name: _holder(check, name, plan["sinks"][name], stores) for name in used}

    filtered = delivered = dead = lost = 0
    missing: list[str] = []
    for record in records:
        p = position(record)
        routes = offline.routes.get(p)
        if p in offline.filtered:
            if any(h.exact(record) for h in holders.values()):
                check.problem(f"filtered record at {p} reached a sink")
            filtered += 1
            continue
        if p in offline.failed and any(h.exact(record) for h in holders.values()):
            check.problem(f"record at {p}, on which the chain raises, reached a sink")
        if routes is not None and all(holders[s].holds(record) for s in routes):
            delivered += 1
        elif p in lettered or p in gave_up:
            dead += 1
        else:
            lost += 1
            missing.append(f"{p} (routes {routes})")
    if lost:
        check.problem(f"{lost} records lost (neither filtered, in their sinks, nor "
                      f"dead-lettered): {missing[:5]}")  # fmt: skip
    for holder in holders.values():
        holder.order(records, offline)
    figures = Figures(
        produced=len(records), delivered=delivered, dead_lettered=dead, lost=lost,
        duplicates_seen=check.seen, duplicates_removed=check.removed,
        order_violations=check.order, on_failure_messages=len(on_failure),
        problems=tuple(check.problems),
    )  # fmt: skip
    reasons = Counter(f"{m.get('step')}: {_error_kind(m.get('error'))}" for m in letters)
    return FunctionFigures(function, filtered, figures, dict(reasons))


def _error_kind(error: Any) -> str:
    """``DecodeError: line 1 ...`` → ``DecodeError``: letters grouped by the kind of error."""
    return str(error).split(":", 1)[0]


def _letters(check: _Check, letters: list[dict[str, Any]]) -> set[Position]:
    """Positions with a dead letter; repeats (a standard queue, a batch redelivered after
    its letters were sent) are removable duplicates."""
    copies: Counter[tuple[Position, str]] = Counter()
    for letter in letters:
        p = (str(letter.get("shard_id")), str(letter.get("sequence_number")),
             int(letter.get("sub_sequence_number") or 0))  # fmt: skip
        if not letter.get("reason") or not letter.get("error") or not letter.get("step"):
            check.problem(f"dead letter at {p} without its reason, error and step")
        record = check.by_position.get(p)
        if record is None:
            check.problem(f"dead letter at {p}: no such record was produced")
        elif letter.get("partition_key") != record.partition_key:
            check.problem(f"dead letter at {p} names another partition key")
        copies[(p, str(letter.get("step")))] += 1
    extra = sum(c - 1 for c in copies.values())
    check.seen += extra
    check.removed += extra
    return {p for p, _ in copies}


# -- sinks, by kind ------------------------------------------------------------------------


class _Holder:
    """Whether one sink holds a record, and its order checks."""

    def holds(self, record: Record) -> bool:
        """Present, or (a keyed sink) superseded by a newer record of its key."""
        return self.exact(record)

    def exact(self, record: Record) -> bool:
        raise NotImplementedError

    def order(self, records: list[Record], offline: Offline) -> None:
        """Count order violations (nothing observable by default)."""


def _holder(check: _Check, name: str, spec: Mapping[str, Any], stores: Stores) -> _Holder:
    kind = spec["type"]
    if kind == "s3":
        return _Archive(check, stores.lines[name])
    if kind == "dynamodb":
        return _Table(check, name, spec, stores.items[name])
    if kind == "opensearch":
        return _Index(check, name, spec, stores.documents[name])
    msg = f"sink {name!r} of type {kind!r} cannot be read back"
    raise ValueError(msg)


class _Archive(_Holder):
    def __init__(self, check: _Check, lines: list[dict[str, Any]]) -> None:
        first: dict[Position, dict[str, Any]] = {}
        for line in lines:
            p = (str(line["_shard"]), str(line["_sequence"]), int(line["_sub_sequence"]))
            record = check.by_position.get(p)
            if record is None or not _line_holds(line, record):
                check.problem(f"archive line at {p} is not the record produced there")
            if p in first:
                check.seen += 1
                if first[p] == line:
                    check.removed += 1
                else:
                    check.problem(f"archive copies of {p} differ")
            else:
                first[p] = line
        self.positions = set(first)

    def exact(self, record: Record) -> bool:
        return position(record) in self.positions


def _line_holds(line: dict[str, Any], record: Record) -> bool:
    """Whether an archive line holds ``record``: its partition key, and every field of its
    JSON object (steps may add fields), or its data kept whole."""
    if line.get("_partition_key") != record.partition_key:
        return False
    body = {k: v for k, v in line.items() if k not in _BOOKKEEPING}
    if "_data_base64" in body:
        return base64.b64decode(body["_data_base64"]) == record.data
    try:
        doc = orjson.loads(record.data)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(doc, dict):
        return bool(body.get("_data") == doc)
    return all(body.get(k) == v for k, v in doc.items())


def _source_field(record: Record, name: str) -> str | None:
    try:
        doc = orjson.loads(record.data)
    except orjson.JSONDecodeError:
        return None
    value = doc.get(name) if isinstance(doc, dict) else None
    return None if value is None else str(value)


class _Keyed(_Holder):
    """A sink of one entry per key value (DynamoDB ``latest``, OpenSearch with ``id``) or
    per record: ``entries`` maps (key value, padded position or None) to how many entries
    and their order stamps."""

    def __init__(self, check: _Check, what: str, field_name: str | None, latest: bool) -> None:
        self.check = check
        self.what = what
        self.field = field_name
        self.latest = latest
        #: key value → [(padded position, order stamp)] of its entries
        self.entries: dict[str, list[tuple[str, tuple[Any, ...]]]] = defaultdict(list)

    def _key(self, record: Record) -> str | None:
        if self.field is None:
            return record.document_id
        return _source_field(record, self.field)

    def add(self, key: str, padded: str, stamp: tuple[Any, ...]) -> None:
        self.entries[key].append((padded, stamp))

    def finish(self) -> None:
        for key, entries in self.entries.items():
            if len(entries) > 1:
                self.check.seen += len(entries) - 1
                self.check.problem(f"{len(entries)} {self.what} entries for {key!r}")

    def _padded(self, record: Record) -> str:
        from stream.records import record_position  # noqa: PLC0415

        return record_position(record)

    def exact(self, record: Record) -> bool:
        key = self._key(record)
        mine = self._padded(record)
        return key is not None and any(p == mine for p, _ in self.entries.get(key, ()))

    def holds(self, record: Record) -> bool:
        key = self._key(record)
        if key is None:
            return False
        mine = self._padded(record)
        if self.latest:  # a key's newest record replaces its older ones
            return any(p >= mine for p, _ in self.entries.get(key, ()))
        return any(p == mine for p, _ in self.entries.get(key, ()))

    def order(self, records: list[Record], offline: Offline) -> None:
        """Per partition key, in position order, the entries holding exactly their record
        were first written in that order (their stamps do not go down)."""
        stamps: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        for record in records:
            if self.what not in offline.routes.get(position(record), ()):
                continue
            key = self._key(record)
            mine = self._padded(record)
            for padded, stamp in self.entries.get(key or "", ()):
                if padded == mine:
                    stamps[record.partition_key].append(stamp)
        for key, order in stamps.items():
            for earlier, later in itertools.pairwise(order):
                if later < earlier and later[0] == earlier[0]:
                    self.check.order += 1
                    self.check.problem(f"{self.what}: partition key {key!r}, a later record "
                                       f"first written before an earlier one")  # fmt: skip


class _Table(_Keyed):
    def __init__(self, check: _Check, name: str, spec: Mapping[str, Any],
                 items: list[dict[str, Any]]) -> None:  # fmt: skip
        latest = spec.get("mode", "latest") == "latest"
        super().__init__(check, name, str(spec["key"]), latest)
        for item in items:
            key = next(iter(item[spec["key"]].values()))
            written = item.get("_written_at", {}).get("N")
            # an append item has no time of write: its order is not observable
            stamp = ("", float(written)) if written is not None and latest else ("", 0.0)
            self.add(str(key), item["_position"]["S"], stamp)
        if latest:  # an append table has an item per record of a key, by design
            self.finish()


class _Index(_Keyed):
    def __init__(self, check: _Check, name: str, spec: Mapping[str, Any],
                 hits: list[dict[str, Any]]) -> None:  # fmt: skip
        id_field = spec.get("id")
        super().__init__(check, name, str(id_field) if id_field else None, bool(id_field))
        for hit in hits:
            source = hit["_source"]
            key = str(source.get(id_field)) if id_field else str(hit["_id"])
            padded = str(source.get("_position", "")) if id_field else ""
            self.add(key, padded, (hit["_index"], int(hit.get("_seq_no", 0))))
        self.finish()

    def _padded(self, record: Record) -> str:
        return super()._padded(record) if self.field is not None else ""
