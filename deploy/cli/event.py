"""``shardline event FILE.jsonl``: a Lambda Kinesis event for ``invoke``, from JSON lines.

What ``sam local generate-event kinesis`` does, for a whole file: each non-blank line is one
record's data, exactly as written (the bytes of the line), with its partition key taken as
``shardline produce`` takes it (``--key FIELD``, else the line number). ``--aggregate`` packs
the records into KPL aggregates (as ``produce --aggregate`` does), so that the consumer's
de-aggregation is exercised too. The event is made by :class:`stream.testing.EventFactory`:
one shard, growing 56-digit sequence numbers, base64 data, Lambda's exact shape.

``-o FILE`` writes the event to FILE; without it, it goes to stdout. A line that is not JSON
or lacks the key field stops the command with ``FILE:LINE: message`` and exit status 2,
before anything is written: an event with a record silently missing would test less than
it seems to.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from collections.abc import Iterable

    from stream.event import KinesisEvent, KinesisEventRecord

__all__ = ["event_command", "event_from_lines"]

#: Most bytes of user records (data and keys) packed into one aggregate: Kinesis takes
#: records of at most 1 MiB, and the aggregate's framing adds a few bytes per record.
AGGREGATE_BYTES = 1_000_000
EXIT_INVALID = 2


def event_from_lines(
    lines: Iterable[bytes], *, key: str | None = None, aggregate: bool = False
) -> tuple[KinesisEvent, list[tuple[int, str]]]:
    """The event holding one record per non-blank line, and the problems by line number.

    >>> event, problems = event_from_lines([b'{"u": "a"}', b"", b'{"u": "b"}'], key="u")
    >>> [r["kinesis"]["partitionKey"] for r in event["Records"]], problems
    (['a', 'b'], [])
    >>> event, problems = event_from_lines([b'{"u": "a"}', b'{"u": "b"}'], aggregate=True)
    >>> len(event["Records"])
    1
    >>> event_from_lines([b"{", b"{}"], key="u")[1]  # doctest: +NORMALIZE_WHITESPACE
    [(1, 'not JSON: unexpected end of data: line 1 column 2 (char 1)'),
     (2, "no usable partition key field 'u' (got None)")]
    """
    import orjson  # noqa: PLC0415

    from deploy.local.produce import (  # noqa: PLC0415  # produce's rule, kept one
        PartitionKeyError,
        _partition_key,
    )
    from stream.testing import EventFactory  # noqa: PLC0415

    items: list[tuple[str, bytes]] = []
    problems: list[tuple[int, str]] = []
    for line_no, raw in enumerate(lines, start=1):
        data = raw.strip()
        if not data:
            continue
        try:
            doc: Any = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            problems.append((line_no, f"not JSON: {exc}"))
            continue
        try:
            items.append((_partition_key(doc, key, line_no), data))
        except PartitionKeyError as exc:
            problems.append((line_no, str(exc)))
    factory = EventFactory()
    if not aggregate:
        return factory.event(factory.raw(data, pk) for pk, data in items), problems
    records: list[KinesisEventRecord] = []
    chunk: list[tuple[str, bytes]] = []
    size = 0
    for pk, data in items:
        if chunk and size + len(pk) + len(data) > AGGREGATE_BYTES:
            records.append(factory.aggregate(chunk))
            chunk, size = [], 0
        chunk.append((pk, data))
        size += len(pk) + len(data)
    if chunk:
        records.append(factory.aggregate(chunk))
    return factory.event(records), problems


@click.command("event")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, allow_dash=True))
@click.option("--key", metavar="FIELD", help="The field holding the partition key "
              "(default: the line number).")  # fmt: skip
@click.option("--aggregate", is_flag=True, help="Pack the records into KPL aggregates.")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, writable=True),
    help="Write the event to this file instead of stdout.",
)  # fmt: skip
def event_command(file: str, key: str | None, aggregate: bool, output: str | None) -> None:
    """Make a Lambda Kinesis event from the JSON lines of FILE (`-` reads stdin), for
    `shardline invoke --event`.

    Each line is one record's data, as written; `--key FIELD` takes the partition key from
    a field (as `produce` does). Bad lines are printed as FILE:LINE: message, exit status 2.
    """
    import sys  # noqa: PLC0415

    if file == "-":
        event, problems = event_from_lines(sys.stdin.buffer, key=key, aggregate=aggregate)
    else:
        with open(file, "rb") as fh:
            event, problems = event_from_lines(fh, key=key, aggregate=aggregate)
    for line_no, why in problems:
        click.echo(f"{file}:{line_no}: {why} (fix the line, or remove it)", err=True)
    if problems:
        raise SystemExit(EXIT_INVALID)
    from deploy.cli.common import plural, write_output  # noqa: PLC0415

    if write_output(json.dumps(event, indent=2) + "\n", output):
        count = plural(len(event["Records"]), "record")
        click.echo(f"{file}: event of {count} written to {output}", err=True)
