"""The pipeline's archive, read back: which function is one, its objects, their records.

An *archive* is a function whose records land in S3 as they arrived, with their positions,
so that a replay can put them through another function later, past the stream's
retention. A function qualifies (:func:`archive_problem` says why one does not) when:

* it has no processors: the lines hold the records as they arrived, not as a chain left
  them (an enricher's fields, a filter's gaps, a fan-out's parts would be replayed as if
  they had arrived so);
* every record goes to one sink, of type ``s3``, by the ``route:`` shorthand;
* that sink's ``prefix`` and ``partition`` templates use no ``{now:...}`` (a redelivery
  would put one record under two prefixes; harmless to a reader, which de-duplicates, but
  the object listing can no longer be narrowed).

:func:`find_archive` picks the first such function in file order; ``validate`` notes which
one it is. The lines :mod:`sinks.s3` writes carry what a record needs to come back at its
original position (:func:`record_from_line`): shard, sequence and sub-sequence number,
partition key and arrival time; the event id is ``{shard}:{sequence}``, as Lambda's. Two
things are not kept, and are reconstructed: the data's exact bytes (a JSON record's line is
its document re-encoded by orjson, compact, same fields in the same order: equal as JSON,
not byte for byte) and whether the record came out of a KPL aggregate (taken as true when
its sub-sequence number is above 0 or the stream is ``aggregated``).

Objects are named ``{first}-{last}-{digest16}.jsonl[.gz]`` under ``{prefix}/{partition}/
{shard}/`` (:func:`sinks.s3.object_key`); :func:`parse_key` reads the shard and the first
and last positions back. An object is written after its records arrived, so one last
modified before ``since`` (less a margin for clocks) holds no record of the window and is
not read (:func:`list_objects`).
"""

from __future__ import annotations

import gzip
import re
from base64 import b64decode
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from sinks.s3 import BOOKKEEPING, DEAD_LETTERS
from stream.records import Record

if TYPE_CHECKING:
    from collections.abc import Iterator

    from stream.plan import Plan

__all__ = [
    "CLOCK_MARGIN_S",
    "Archive",
    "ArchiveObject",
    "archive_problem",
    "find_archive",
    "list_objects",
    "parse_key",
    "read_object",
    "record_from_line",
]

#: How much earlier than ``since`` an object may have been written and still hold a record
#: of the window (S3's and Kinesis's clocks, and a batch window, apart).
CLOCK_MARGIN_S = 900.0
_KEY = re.compile(
    r"(?:^|/)([^/]+)/(\d+)(?:\.(\d+))?-(\d+)(?:\.(\d+))?-([0-9a-f]{16})\.jsonl(\.gz)?$"
)
_NOW = re.compile(r"\{\s*now\s*[:}]")


@dataclass(frozen=True, slots=True)
class Archive:
    """A function of the plan whose sink is a readable archive.

    Attributes:
        function: the archive function's name.
        sink: its ``s3`` sink's name.
        bucket: the bucket.
        prefix: the sink's ``prefix`` template.
        partition: its ``partition`` template ("" when none).
        aggregated: the stream's ``aggregated`` setting (see the module docstring).
    """

    function: str
    sink: str
    bucket: str
    prefix: str = ""
    partition: str = ""
    aggregated: bool = False

    @property
    def listing_prefix(self) -> str:
        """The constant start of every key: where a listing starts.

        >>> Archive("a", "s", "b", "raw/{event_type}/").listing_prefix
        'raw/'
        """
        return self.prefix.split("{", 1)[0].lstrip("/")


def archive_problem(plan: Plan, function: str) -> str:
    """Why a function of the plan is not an archive a replay can read; "" when it is.

    >>> plan = {"sinks": {"raw": {"type": "s3", "bucket": "b"}, "t": {"type": "dynamodb"}},
    ...         "functions": {"a": {"processors": [], "route": ["raw"]},
    ...                       "b": {"processors": [], "route": ["t"]}}}
    >>> archive_problem(plan, "a")
    ''
    >>> archive_problem(plan, "b")
    "its route is not one sink of type s3 (it has: ['t'])"
    """
    spec = plan["functions"][function]
    if spec.get("processors"):
        return "it has processors: its lines hold what the chain made, not what arrived"
    route = list(spec.get("route") or ())
    sink = plan.get("sinks", {}).get(route[0]) if len(route) == 1 else None
    if sink is None or sink.get("type") != "s3":
        return f"its route is not one sink of type s3 (it has: {route})"
    for option in ("prefix", "partition"):
        if _NOW.search(str(sink.get(option) or "")):
            return f"sink {route[0]!r} uses {{now:...}} in its {option}: use {{arrival:...}}"
    return ""


def find_archive(plan: Plan) -> Archive | None:
    """The plan's archive: its first function that qualifies (:func:`archive_problem`)."""
    for function, spec in plan["functions"].items():
        if archive_problem(plan, function):
            continue
        name = (spec.get("route") or [""])[0]
        sink = plan["sinks"][name]
        return Archive(
            function,
            name,
            str(sink["bucket"]),
            str(sink.get("prefix") or ""),
            str(sink.get("partition") or ""),
            (plan.get("stream") or {}).get("aggregated") is True,
        )
    return None


@dataclass(frozen=True, slots=True)
class ArchiveObject:
    """One archive object, as listed (its name says where its records are)."""

    key: str
    shard_id: str
    first: tuple[int, int]
    last: tuple[int, int]
    modified: float
    size: int


def parse_key(key: str) -> tuple[str, tuple[int, int], tuple[int, int]] | None:
    """Shard, first and last position of an archive object's key; ``None`` for another key.

    >>> parse_key("raw/dt=2026-01-01/shardId-1/10-12.3-2035d1f90d6996b4.jsonl.gz")
    ('shardId-1', (10, 0), (12, 3))
    >>> parse_key("raw/notes.txt") is None
    True
    """
    m = _KEY.search(key)
    if m is None:
        return None
    shard, first, first_sub, last, last_sub = m.group(1, 2, 3, 4, 5)
    return shard, (int(first), int(first_sub or 0)), (int(last), int(last_sub or 0))


def list_objects(s3: Any, archive: Archive, since: float | None = None) -> list[ArchiveObject]:
    """The archive's objects, in shard order (shard, then first position); dead-letter
    envelopes and keys of another shape left out, and with ``since`` the objects written
    before ``since - CLOCK_MARGIN_S`` (they hold only older records)."""
    found: list[ArchiveObject] = []
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=archive.bucket, Prefix=archive.listing_prefix):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            parsed = parse_key(key)
            if parsed is None or f"/{DEAD_LETTERS}/" in f"/{key}":
                continue
            modified = obj["LastModified"].timestamp()
            if since is not None and modified < since - CLOCK_MARGIN_S:
                continue
            found.append(ArchiveObject(key, *parsed, modified=modified, size=int(obj["Size"])))
    return sorted(found, key=lambda o: (o.shard_id, o.first, o.last, o.key))


def read_object(s3: Any, archive: Archive, key: str) -> list[Record]:
    """The records of one object (gzip or plain), in the order written."""
    body: bytes = s3.get_object(Bucket=archive.bucket, Key=key)["Body"].read()
    if body[:2] == b"\x1f\x8b":
        body = gzip.decompress(body)
    return list(_records(body, archive.aggregated))


def _records(body: bytes, aggregated: bool) -> Iterator[Record]:
    loads = orjson.loads
    for line in body.splitlines():
        if line:
            yield record_from_line(loads(line), aggregated)


def record_from_line(line: dict[str, Any], aggregated: bool = False) -> Record:
    """A record at its original position from one archive line (:func:`sinks.s3.archive_line`).

    >>> from sinks.s3 import archive_line
    >>> rec = record_from_line(orjson.loads(archive_line(
    ...     Record(b'{"a": 1}', "k", "7", shard_id="s", arrival=1.5))))
    >>> rec.data, rec.partition_key, rec.sequence_number, rec.arrival, rec.event_id
    (b'{"a":1}', 'k', '7', 1.5, 's:7')

    Raises:
        KeyError: the line lacks a bookkeeping field: not an archive line.
    """
    shard = line["_shard"]
    sequence = line["_sequence"]
    sub = line["_sub_sequence"]
    if "_data_base64" in line:
        data = b64decode(line["_data_base64"])
    elif "_data" in line:
        data = orjson.dumps(line["_data"])
    else:
        data = orjson.dumps({k: v for k, v in line.items() if k not in _BOOKKEEPING})
    return Record(
        data,
        line["_partition_key"],
        sequence,
        sub,
        aggregated or sub > 0,
        shard,
        line["_arrival"],
        f"{shard}:{sequence}",
    )


#: ``_part`` is not among them: an archive function has no processors, so its records are
#: never parts, and a ``_part`` in its lines is the record's own field.
_BOOKKEEPING = frozenset(BOOKKEEPING)
