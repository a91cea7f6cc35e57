"""The end-to-end pipeline and its reconciliation, read back from the stores.

Every fault scenario (``test_faults.py``), the stateful test (``test_stateful_path.py``) and
``python -m bench soak`` run the same pipeline file (:data:`PIPELINE`): one function that
logs each batch it is given (:class:`tests.integration.order_probe.Probe`), drops nothing
but fails a chosen record in its ``expr`` filter (a record whose ``v`` is a string: JMESPath
cannot compare it with a number, so the step raises and the record is dead-lettered), and
writes every other record to four sinks: a DynamoDB ``latest`` table and an ``append`` table
keyed by the record's ``key``, an OpenSearch index (document id: the event id) and an S3
archive; the dead-letter sink and the on-failure destination are one SQS queue.

Each record carries ``n``, its put order (unique), and ``key``, its partition key. What the
reconciliation checks (DESIGN.md's guarantees), from the stores only, never from counters:

* nothing lost: every produced record is in all four sinks (*delivered*), or in the queue:
  a dead letter at its position with a reason, or inside the shard and sequence range of an
  on-failure message (retries exhausted or too old) with its condition (*dead-lettered*);
  a poison record is dead-lettered and in no sink;
* no duplicate effect: no two OpenSearch documents or ``append`` items hold the same record;
  the archive holds every delivered record at least once and, after de-duplication by
  (shard, sequence, sub-sequence), exactly once, the copies identical; a standard queue may
  repeat a dead letter, removed the same way. Duplicates *seen* are every extra copy found;
  *removed* are those the readers' de-duplication takes out (archive lines and letters);
* order: no ``latest`` item holds an older record than the newest delivered for its key;
  under ``per_key`` and ``strict``, per key, the records were first handed to the function
  in put order (the probe's log). The ``append`` table keeps no time of write (its items
  come from the records alone, so that a late copy of a batch changes nothing): its order
  is the position it is keyed by, checked with every item's position.

The queue is read with :func:`deploy.local.readback.dead_letters`, which makes every message
visible again after the read, so a run can be reconciled again and again while it goes on.
"""

from __future__ import annotations

import base64
import os
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from deploy.local.readback import archive_lines, dead_letters, table_items
from stream.esm.rules import lane_of
from stream.records import pad_sequence
from tests.integration.order_probe import read_probe

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from pathlib import Path

__all__ = [
    "FUNCTION",
    "PIPELINE",
    "POISON",
    "SINKS",
    "Figures",
    "Layout",
    "Observed",
    "Produced",
    "Reconciler",
    "given_up",
    "pipeline_text",
    "reconcile",
    "scale",
]

FUNCTION = "main"
#: The sinks every record is routed to, in write order.
SINKS = ("latest", "log", "search", "archive")
#: A poison record's ``v``: the filter ``v >= `0``` raises on it (string vs number).
POISON = "poison"

PIPELINE = """\
name: {name}
stream:
  name: {name}
  mode: provisioned
  shards: {shards}
  encryption: none
sinks:
  latest: {{type: dynamodb, table: {name}-latest, key: key, mode: latest}}
  log: {{type: dynamodb, table: {name}-log, key: key, mode: append}}
  search: {{type: opensearch, endpoint: "{opensearch}", index: {name}, auth: none}}
  archive: {{type: s3, bucket: {name}, prefix: raw/}}
  dlq: {{type: sqs, queue: {name}-dlq}}
functions:
  {function}:
    timeout_s: {timeout_s}
    batch:
      size: {batch}
      window_s: 0
      starting_position: trim_horizon
      bisect_on_error: true
      max_retries: {max_retries}
      max_record_age_s: {max_record_age_s}
      parallelization: {parallelization}
    ordering: {ordering}
    on_failure: dlq
    processors:
      - use: "tests.integration.order_probe:Probe"
        with: {{path: "{probe}"}}
      - filter:
          expr: "v >= `0`"
    route: [{sinks}]
"""


def pipeline_text(
    name: str,
    *,
    opensearch: str,
    probe: Path,
    shards: int = 2,
    batch: int = 50,
    ordering: str = "per_key",
    timeout_s: int = 60,
    max_retries: int = 3,
    max_record_age_s: int = 86400,
    parallelization: int = 1,
) -> str:
    """The e2e pipeline file: every resource named ``name`` (``-latest``, ``-log``,
    ``-dlq``), the OpenSearch sink at ``opensearch`` (a fault proxy's URL, or the server's)."""
    return PIPELINE.format(
        name=name, shards=shards, opensearch=opensearch, function=FUNCTION,
        timeout_s=timeout_s, batch=batch, max_retries=max_retries, ordering=ordering,
        probe=probe, sinks=", ".join(SINKS), max_record_age_s=max_record_age_s,
        parallelization=parallelization,
    )  # fmt: skip


def scale(default: float = 1.0) -> float:
    """``SHARDLINE_E2E_SCALE``: how much bigger than the CI sizes to run (``make soak``)."""
    return float(os.environ.get("SHARDLINE_E2E_SCALE") or default)


@dataclass(frozen=True, slots=True)
class Produced:
    """One record put: its put order ``n``, key, where Kinesis stored it, and whether it is
    poison (the filter raises on it)."""

    n: int
    key: str
    shard_id: str
    sequence_number: str
    sub_sequence_number: int = 0
    poison: bool = False

    @property
    def position(self) -> tuple[str, str, int]:
        """(shard, sequence, sub-sequence): how the archive and the letters name it."""
        return (self.shard_id, self.sequence_number, self.sub_sequence_number)

    @property
    def padded(self) -> str:
        """The ``_position`` keyed sinks store."""
        return pad_sequence(self.sequence_number, self.sub_sequence_number)

    def document(self) -> dict[str, Any]:
        """What is put on the stream."""
        return {"key": self.key, "n": self.n, "v": POISON if self.poison else self.n}


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the e2e pipeline named ``name`` writes (see :func:`pipeline_text`)."""

    name: str
    opensearch_url: str
    probe: Path | None = None
    ordering: str = "per_key"
    parallelization: int = 1
    by_record_id: bool = False

    @property
    def latest_table(self) -> str:
        return f"{self.name}-latest"

    @property
    def log_table(self) -> str:
        return f"{self.name}-log"

    @property
    def queue(self) -> str:
        return f"{self.name}-dlq"


@dataclass(frozen=True)
class Figures:
    """One reconciliation: the counts for RELIABILITY.md and every problem found.

    Attributes:
        produced: records put.
        delivered: records in all their sinks.
        dead_lettered: records not delivered, with a dead letter or inside an on-failure
            message's range (poison records included).
        lost: records neither (while a run goes on: not yet).
        duplicates_seen: extra copies found: archive lines, letters, documents, items.
        duplicates_removed: those that de-duplication by position takes out (archive
            lines and letters); the others are problems.
        order_violations: probe inversions + ``latest`` items older than the newest
            delivered record of their key.
        on_failure_messages: on-failure messages (batches given up on).
        problems: what is wrong, one line each (empty: reconciled).
    """

    produced: int
    delivered: int
    dead_lettered: int
    lost: int
    duplicates_seen: int
    duplicates_removed: int
    order_violations: int
    on_failure_messages: int = 0
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether nothing is wrong (nothing lost, duplicated or out of order)."""
        return not self.problems

    @property
    def complete(self) -> bool:
        """Whether every record is accounted for (what "eventually" waits for)."""
        return self.lost == 0

    def as_dict(self) -> dict[str, Any]:
        """The figures as JSON-ready values (problems as a list)."""
        out = asdict(self)
        out["problems"] = list(self.problems)
        return out

    def check(self) -> None:
        """Fail with the first problems when there are any."""
        if self.problems:
            shown = "\n  ".join(self.problems[:25])
            more = len(self.problems) - 25
            tail = f"\n  ... and {more} more" if more > 0 else ""
            msg = f"reconciliation failed ({self.summary()}):\n  {shown}{tail}"
            raise AssertionError(msg)

    def summary(self) -> str:
        """One line: the counts."""
        return (
            f"produced {self.produced}, delivered {self.delivered}, dead-lettered "
            f"{self.dead_lettered}, lost {self.lost}, duplicates {self.duplicates_seen} seen / "
            f"{self.duplicates_removed} removed, order violations {self.order_violations}"
        )


@dataclass
class Observed:
    """What the stores hold, as the checks read it.

    Attributes:
        latest: the ``latest`` table's items (``key``, ``n``, ``_position``).
        log: the ``append`` table's items, the same attributes.
        documents: the OpenSearch documents' sources (with ``_id``).
        archive: the archive's lines.
        letters: the dead-letter envelopes.
        on_failure: the on-failure messages.
        probe_order: per key, ``n`` in first-delivery order (None: no probe).
    """

    latest: list[dict[str, Any]]
    log: list[dict[str, Any]]
    documents: list[dict[str, Any]]
    archive: list[dict[str, Any]]
    letters: list[dict[str, Any]]
    on_failure: list[dict[str, Any]]
    probe_order: dict[str, list[int]] | None


@dataclass
class Reconciler:
    """Reads the e2e pipeline's stores and reconciles them with what was produced.

    Args:
        layout: where the pipeline writes.
        aws: boto3 client factory bound to the AWS endpoint itself (not a fault proxy).
    """

    layout: Layout
    aws: Callable[[str], Any]
    _messages: list[dict[str, Any]] = field(default_factory=list)

    def reconcile(self, produced: Sequence[Produced]) -> Figures:
        """Read every store now and reconcile it with ``produced`` (see the module doc)."""
        layout = self.layout
        return reconcile(
            produced, self._observe(), layout.ordering, layout.parallelization,
            layout.by_record_id,
        )  # fmt: skip

    @property
    def letters(self) -> list[dict[str, Any]]:
        """The dead letters of the last read of the queue."""
        return [m for m in self._messages if "KinesisBatchInfo" not in m]

    @property
    def on_failure(self) -> list[dict[str, Any]]:
        """The on-failure messages of the last read of the queue."""
        return [m for m in self._messages if "KinesisBatchInfo" in m]

    # -- reading ---------------------------------------------------------------------------

    def _observe(self) -> Observed:
        ddb, s3 = self.aws("dynamodb"), self.aws("s3")
        messages = self._messages = dead_letters(self.aws("sqs"), self.layout.queue, s3)
        probe = self.layout.probe
        return Observed(
            latest=_plain_items(table_items(ddb, self.layout.latest_table)),
            log=_plain_items(table_items(ddb, self.layout.log_table)),
            documents=self._documents(),
            archive=archive_lines(s3, self.layout.name, "raw/"),
            letters=[m for m in messages if "KinesisBatchInfo" not in m],
            on_failure=[m for m in messages if "KinesisBatchInfo" in m],
            probe_order=None if probe is None else _first_delivery_order(probe),
        )

    def _documents(self) -> list[dict[str, Any]]:
        from opensearchpy import NotFoundError, OpenSearch, helpers  # noqa: PLC0415

        client = OpenSearch(hosts=[self.layout.opensearch_url], timeout=30)
        try:
            client.indices.refresh(index=self.layout.name)
            hits = helpers.scan(client, index=self.layout.name, size=2000)
            return [dict(hit["_source"], _id=hit["_id"]) for hit in hits]
        except NotFoundError:
            return []  # nothing written yet
        finally:
            client.close()


def _plain_items(items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The attributes the checks need, out of AttributeValue form."""
    out = []
    for item in items:
        n = item.get("n", {}).get("N")
        out.append(
            {
                "key": item["key"].get("S", item["key"].get("N")),
                "n": None if n is None else int(n),
                "_position": item["_position"]["S"],
            }
        )
    return out


def _first_delivery_order(probe: Path) -> dict[str, list[int]]:
    """Per key, the records' ``n`` in the order each was first handed to the function."""
    seen: set[str] = set()
    order: dict[str, list[int]] = defaultdict(list)
    for line in read_probe(probe):
        if line.n not in seen and line.n.lstrip("-").isdigit():
            seen.add(line.n)
            order[line.partition_key].append(int(line.n))
    return dict(order)


# -- the checks ----------------------------------------------------------------------------


class _Check:
    """Accumulates problems and counts while the reconciliation walks the stores."""

    def __init__(self, produced: Sequence[Produced], by_record_id: bool = False) -> None:
        self.by_record_id = by_record_id
        self.by_n = {p.n: p for p in produced}
        self.by_position = {p.position: p for p in produced}
        self.problems: list[str] = []
        self.seen = 0
        self.removed = 0
        self.order = 0

    def problem(self, text: str) -> None:
        self.problems.append(text)


def reconcile(
    produced: Sequence[Produced],
    seen: Observed,
    ordering: str,
    lanes: int = 1,
    by_record_id: bool = False,
) -> Figures:
    """The checks of the module doc, on what was read; ``ordering`` is the function's
    (order is checked under ``per_key`` and ``strict`` only), ``lanes`` its
    ``parallelization``.

    ``by_record_id``: the stream may hold a record twice, at two positions (the producer
    sent a call again after its answer was lost). ``n`` is then the record id readers
    de-duplicate by: a copy at a position the producer did not report is a removable
    duplicate, not a record that was never produced, and a store holding ``n`` twice (once
    per position) holds a removable duplicate, not a duplicate effect."""
    check = _Check(produced, by_record_id)
    given_up = _given_up(produced, seen.on_failure, lanes)
    lettered = _letters(check, seen.letters)
    archived = _archive(check, seen.archive)
    searched = _counted_once(check, "OpenSearch document", [d.get("n") for d in seen.documents])
    logged = _counted_once(check, "append item", [i["n"] for i in seen.log])
    _positions_match(check, seen.log, "append item")

    delivered = dead = lost = 0
    for p in produced:
        present = [p.n in logged, p.n in searched, p.position in archived]
        if p.poison:
            if any(present):
                check.problem(f"poison record n={p.n} reached a sink: {present}")
            if p.position not in lettered:
                check.problem(f"poison record n={p.n} has no dead letter with its reason")
        if all(present) and not p.poison:
            delivered += 1
        elif p.position in lettered or p.n in given_up:
            dead += 1
        else:
            lost += 1
    if lost:
        missing = [
            p.n
            for p in produced
            if not p.poison
            and p.position not in lettered
            and p.n not in given_up
            and not (p.n in logged and p.n in searched and p.position in archived)
        ]
        check.problem(f"{lost} records lost (neither in their sinks nor dead-lettered): "
                      f"n={missing[:10]}")  # fmt: skip

    _latest(check, produced, seen.latest, given_up, lettered)
    if ordering in ("per_key", "strict") and seen.probe_order is not None:
        _probe_order(check, seen.probe_order)
    return Figures(
        produced=len(produced),
        delivered=delivered,
        dead_lettered=dead,
        lost=lost,
        duplicates_seen=check.seen,
        duplicates_removed=check.removed,
        order_violations=check.order,
        on_failure_messages=len(seen.on_failure),
        problems=tuple(check.problems),
    )


def _given_up(
    produced: Sequence[Produced], messages: list[dict[str, Any]], lanes: int = 1
) -> set[int]:
    """``n`` of every record of a batch an on-failure message gave up on.

    The message names only a shard and a sequence range (as AWS's does). With
    ``parallelization`` > 1 other lanes' records fall inside that range too, delivered or
    not, so a record counts only when it is of the batch's lane: the lane of the record at
    the range's start (the batch's first record), by the mapping's rule
    (:func:`stream.esm.rules.lane_of`). Counting by range alone would pass a lost record
    off as dead-lettered.
    """
    by_position = {(p.shard_id, int(p.sequence_number)): p for p in produced}
    ranges: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for message in messages:
        info = message["KinesisBatchInfo"]
        start, end = int(info["startSequenceNumber"]), int(info["endSequenceNumber"])
        first = by_position.get((info["shardId"], start))
        lane = lane_of(first.key, lanes) if first is not None else -1
        ranges[info["shardId"]].append((start, end, lane))
    return {
        p.n
        for p in produced
        if any(
            lo <= int(p.sequence_number) <= hi and lane_of(p.key, lanes) == lane
            for lo, hi, lane in ranges.get(p.shard_id, ())
        )
    }


def _letters(check: _Check, letters: list[dict[str, Any]]) -> set[tuple[str, str, int]]:
    """Positions with a dead letter; repeats (a standard queue) are removable duplicates."""
    copies: Counter[tuple[str, str, int, str]] = Counter()
    out: set[tuple[str, str, int]] = set()
    for letter in letters:
        position = (
            str(letter.get("shard_id")),
            str(letter.get("sequence_number")),
            int(letter.get("sub_sequence_number") or 0),
        )
        if not letter.get("reason") or not letter.get("error") or not letter.get("step"):
            check.problem(f"dead letter at {position} without its reason, error and step")
        data = base64.b64decode(letter.get("data_base64") or "")
        if position not in check.by_position and not _a_copy(check, data):
            check.problem(f"dead letter at {position}: no such record was produced")
        expected = check.by_position.get(position)
        if expected is not None and data and orjson.loads(data).get("n") != expected.n:
            check.problem(f"dead letter at {position} holds another record's data")
        copies[(*position, str(letter.get("step")))] += 1
        out.add(position)
    extra = sum(c - 1 for c in copies.values())
    check.seen += extra
    check.removed += extra
    return out


def _a_copy(check: _Check, data: bytes) -> bool:
    """Whether a letter's data is a produced record's (by id ``n``), in record-id mode."""
    if not check.by_record_id or not data:
        return False
    try:
        return orjson.loads(data).get("n") in check.by_n
    except (orjson.JSONDecodeError, AttributeError):
        return False


def _archive(check: _Check, lines: list[dict[str, Any]]) -> set[tuple[str, str, int]]:
    """Positions in the archive; extra identical copies are removable duplicates."""
    first: dict[tuple[str, str, int], dict[str, Any]] = {}
    for line in lines:
        position = (str(line["_shard"]), str(line["_sequence"]), int(line["_sub_sequence"]))
        expected = check.by_position.get(position)
        if expected is None and check.by_record_id and line.get("n") in check.by_n:
            check.seen += 1  # a copy the producer put at another position: removed by id
            check.removed += 1
            continue
        if expected is None or expected.n != line.get("n"):
            check.problem(f"archive line at {position} (n={line.get('n')}) was never produced")
        if position in first:
            check.seen += 1
            if first[position] == line:
                check.removed += 1
            else:
                check.problem(f"archive copies of {position} differ: {first[position]} / {line}")
        else:
            first[position] = line
    return set(first)


def _counted_once(check: _Check, what: str, ns: list[Any]) -> set[int]:
    """``n`` of a store's documents or items; a repeat cannot be removed: a problem."""
    counts = Counter(ns)
    for n, count in counts.items():
        if n not in check.by_n:
            check.problem(f"{what} n={n} was never produced")
        if count > 1:
            check.seen += count - 1
            if check.by_record_id:  # one per position the producer put it at: by id
                check.removed += count - 1
            else:
                check.problem(f"{count} {what}s hold record n={n}")
    return {n for n in counts if isinstance(n, int)}


def _positions_match(check: _Check, items: list[dict[str, Any]], what: str) -> None:
    for item in items:
        expected = check.by_n.get(item["n"])
        if expected is None:
            continue
        if item["key"] != expected.key or (
            item["_position"] != expected.padded and not check.by_record_id
        ):
            check.problem(f"{what} of n={item['n']} is at {item['_position']}, not its position")


def _latest(
    check: _Check,
    produced: Sequence[Produced],
    items: list[dict[str, Any]],
    given_up: set[int],
    lettered: set[tuple[str, str, int]],
) -> None:
    """Each key's item holds the newest record delivered for it (or a newer one given up
    on: a batch can be written in part before Lambda gives up on it), never an older one."""
    must: dict[str, int] = {}
    may: dict[str, set[int]] = defaultdict(set)
    for p in produced:
        if p.poison or p.position in lettered:
            continue
        may[p.key].add(p.n)
        if p.n not in given_up:
            must[p.key] = max(must.get(p.key, -1), p.n)
    stored = {item["key"]: item for item in items}
    for key, item in stored.items():
        if item["n"] not in may.get(key, ()):
            check.problem(f"latest item of key {key!r} holds n={item['n']}, not one of its records")
        elif item["n"] < must.get(key, -1):
            check.order += 1
            check.problem(
                f"latest item of key {key!r} holds n={item['n']}, older than n={must[key]}"
            )
        _positions_match(check, [item], "latest item")
    for key in must.keys() - stored.keys():
        check.problem(f"no latest item for key {key!r} (newest delivered n={must[key]})")


def _probe_order(check: _Check, order: dict[str, list[int]]) -> None:
    """Per key, first deliveries in put order (``n`` grows with the put order of a key)."""
    for key, ns in order.items():
        highest = -1
        for n in ns:
            if n < highest:
                check.order += 1
                check.problem(f"key {key!r}: n={n} first delivered after n={highest}")
            highest = max(highest, n)


#: :func:`_given_up` for other reconciliations (``python -m bench soak``'s load part).
given_up = _given_up
