"""``shardline dlq ls | show | redrive | discard``: the pipeline's dead letters, and the
second pass of their records (:mod:`deploy.ops.dead_letters`).

Each command reads the pipeline FILE (for the queues and buckets and, for ``redrive``, the
functions as they are defined now), then those at ``--endpoint-url``, else the running local
stack, else AWS. Exit status: 0 on success; 1 when a queue cannot be read, when ``redrive`` left a
selected letter unhandled, or ``discard`` could not remove one; 2 for an invalid file.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from deploy.cli.common import json_only_stdout, load_any_plan, plural

if TYPE_CHECKING:
    from collections.abc import Callable

    from deploy.ops.dead_letters import Message, Scan, Selection
    from stream.plan import Plan

__all__ = ["dlq_group"]

_SAMPLE_CHARS = 120


def _options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options every ``dlq`` command shares: the filters, the endpoint, ``--json``."""
    for option in reversed(
        (
            click.argument("file", type=click.Path(dir_okay=False, exists=True)),
            click.option("--function", help="Only letters of this function."),
            click.option("--step", help="Only letters that failed at this step (or prefix: sink)."),
            click.option("--error", help="Only letters of this error class."),
            click.option("--since", help="Only letters that failed since: 2h, 30m, 1d, ISO time."),
            click.option(
                "--source",
                "source_kind",
                type=click.Choice(["all", "sqs", "s3"]),
                default="all",
                show_default=True,
                help="Which dead-letter sinks: queues, buckets (s3 on_failure), or both.",
            ),
            click.option("--endpoint-url", help="AWS endpoint (default: the local stack, if up)."),
            click.option("--json", "as_json", is_flag=True, help="Print one JSON object."),
        )
    ):
        command = option(command)
    return command


@click.group("dlq")
def dlq_group() -> None:
    """Dead letters of a pipeline: list, show, redrive through the fixed file, discard."""


def _scan(
    file: str,
    endpoint_url: str | None,
    hold_s: int,
    filters: dict[str, str | None],
    *,
    claim: bool = False,
) -> tuple[Plan, Scan, Selection]:
    """The plan, every message of its dead-letter queues (held for ``hold_s``) and, with
    ``claim``, of its buckets' objects not claimed by another operator (claimed for as
    long), the filters."""
    import os  # noqa: PLC0415

    from deploy.cli.local import use_local_stack  # noqa: PLC0415
    from deploy.ops.dead_letters import (  # noqa: PLC0415
        LetterSource,
        S3Source,
        Selection,
        SQSSource,
        parse_since,
        read_sources,
        s3_sources,
        sqs_queues,
    )
    from stream.aws import aws_client, reset_clients  # noqa: PLC0415

    since = filters.get("since")
    try:
        since_at = parse_since(since) if since else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    endpoint_url = use_local_stack(endpoint_url)
    if endpoint_url:
        os.environ["AWS_ENDPOINT_URL"] = endpoint_url
        reset_clients()
    plan = load_any_plan(file)
    sqs, s3 = aws_client("sqs"), aws_client("s3")
    kind = filters.get("source_kind") or "all"
    sources: list[LetterSource] = []
    if kind in {"all", "sqs"}:
        sources += [SQSSource(q, sqs, s3, hold_s) for q in sqs_queues(plan)]
    if kind in {"all", "s3"}:
        hold = hold_s if claim else 0
        sources += [S3Source(bucket, prefix, s3, hold) for bucket, prefix in s3_sources(plan)]
    selection = Selection(filters["function"], filters["step"], filters["error"], since_at)
    scan = read_sources(sources)  # renewing its leases until the command closes it
    try:
        for source, why in scan.unreadable.items():
            click.echo(f"{file}: dead-letter source {source!r} cannot be read: {why}", err=True)
    except BaseException:  # a closed pipe: no renewal thread left behind
        scan.close()
        raise
    return plan, scan, selection


def _filters(kwargs: dict[str, Any]) -> dict[str, str | None]:
    return {k: kwargs.pop(k) for k in ("function", "step", "error", "since", "source_kind")}


def _exit_if_unreadable(scan: Scan) -> None:
    if scan.unreadable:
        raise SystemExit(1)


def _cut(text: str, n: int = _SAMPLE_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


@dlq_group.command("ls")
@_options
def ls(file: str, endpoint_url: str | None, as_json: bool, **kwargs: Any) -> None:
    """What the dead-letter queues of FILE hold, by function, step and error.

    Lambda's own on-failure messages (a shard and a sequence range, no records) and
    messages that are not shardline dead letters (foreign) are listed apart.
    """
    from deploy.ops.dead_letters import Kind, group  # noqa: PLC0415

    filters = _filters(kwargs)
    _, scan, selection = _scan(file, endpoint_url, 30, filters)
    scan.release()
    letters = selection.pick(scan.messages)
    groups = group(letters)
    ranges, foreign = scan.of(Kind.RANGE), scan.of(Kind.FOREIGN)
    if as_json:
        click.echo(json.dumps({
            "total": len(letters),
            "groups": [g.as_dict() for g in groups],
            "ranges": [_other(m) for m in ranges],
            "foreign": [_other(m) for m in foreign],
            "queues": {name: name not in scan.unreadable for name in scan.sources},
            "unreadable": scan.unreadable,
        }))  # fmt: skip
        _exit_if_unreadable(scan)
        return
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    console = Console()
    table = Table(title=f"{plural(len(letters), 'dead letter')} in {', '.join(scan.sources)}")
    for column in ("source", "function", "step", "error", "count", "oldest", "newest",
                   "redrives", "sample reason"):  # fmt: skip
        table.add_column(column, justify="right" if column in {"count", "redrives"} else "left")
    for g in groups:
        d = g.as_dict()
        table.add_row(g.source, g.function, g.step, g.error, str(g.count), d["oldest"],
                      d["newest"], str(g.redrives), _cut(g.sample_reason))  # fmt: skip
    console.print(table)
    if ranges:
        click.echo(
            f"{plural(len(ranges), 'on-failure range')} (Lambda's messages: shard and sequence "
            "range, no records; `dlq redrive` reads them from the stream, else the archive)"
        )
    for m in foreign:
        click.echo(f"foreign message {m.id} in {m.source} ({m.problem}): {_cut(m.body, 60)}")
    _exit_if_unreadable(scan)


def _other(m: Message) -> dict[str, Any]:
    return {"source": m.source, "id": m.id, "why": m.problem, "body": _cut(m.body, 1000)}


@dlq_group.command("show")
@_options
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="At most this many letters.")  # fmt: skip
def show(file: str, endpoint_url: str | None, as_json: bool, limit: int, **kwargs: Any) -> None:
    """The dead letters of FILE with their decoded payload, oldest first."""
    from deploy.ops.dead_letters import decoded_payload  # noqa: PLC0415

    _, scan, selection = _scan(file, endpoint_url, 30, _filters(kwargs))
    scan.release()
    letters = sorted(selection.pick(scan.messages), key=lambda m: m.failed_at)
    shown = []
    for m in letters[:limit]:
        letter = m.letter
        if letter is None:
            continue
        rec = letter.record
        shown.append({
            "source": m.source, "id": m.id, "function": letter.function, "step": letter.step,
            "error": letter.error, "reason": letter.reason, "failed_at": letter.failed_at,
            "redrives": letter.redrives, "shard_id": rec.shard_id,
            "sequence_number": rec.sequence_number,
            "sub_sequence_number": rec.sub_sequence_number, "part": rec.part,
            "partition_key": rec.partition_key, "arrival": rec.arrival,
            "payload": decoded_payload(rec.data), "problem": m.problem,
        })  # fmt: skip
    if as_json:
        click.echo(json.dumps({"total": len(letters), "letters": shown}, default=str))
    else:
        for d in shown:
            click.echo(
                f"{d['source']} {d['id']}: {d['function']} {d['step']} {d['error']} "
                f"(key {d['partition_key']!r}, {d['shard_id']} {d['sequence_number']}"
                f"/{d['sub_sequence_number']}, redrives {d['redrives']})"
            )
            click.echo(f"  reason: {d['reason']}")
            click.echo(f"  payload: {json.dumps(d['payload'], default=str)}")
        click.echo(f"{len(shown)} of {plural(len(letters), 'dead letter')} shown", err=True)
    _exit_if_unreadable(scan)


@dlq_group.command("redrive")
@_options
@click.option("--dry-run", is_flag=True, help="Say what would be redriven; change nothing.")
@click.option("--max", "max_letters", type=click.IntRange(min=1), help="At most N letters.")
@click.option(
    "--max-redrives", type=click.IntRange(min=1), default=3, show_default=True,
    help="Leave alone letters already redriven this many times.",
)  # fmt: skip
def redrive_command(
    file: str, *, endpoint_url: str | None, as_json: bool, dry_run: bool, max_letters: int | None,
    max_redrives: int, **kwargs: Any,
) -> None:  # fmt: skip
    """Put dead letters back through their functions as FILE defines them now.

    Lambda's on-failure ranges are resolved into their records (from the stream while it
    holds them, else the pipeline's archive) and go in the same way; a range neither holds
    is listed as unrecoverable, with the reason, and stays.

    Each goes in as a record at its original position (shard, sequence number, partition
    key, arrival), so keyed sinks stay idempotent; records of one key go in their order.
    A letter leaves the queue only once handled: written, filtered, or dead-lettered again
    (its redrive count one higher). Exit status 0 only when every selected letter was.

    Two redrives at once never handle one letter: each holds what it read (a queue's
    visibility timeout, a claim on a bucket's object) until done, and skips what the other
    holds or dead-lettered again meanwhile.
    """
    import time  # noqa: PLC0415

    from deploy.ops.dead_letters import Fate, Kind, redrive, redriven_meanwhile  # noqa: PLC0415
    from deploy.ops.ranges import RangeResolver  # noqa: PLC0415
    from stream.aws import aws_client  # noqa: PLC0415

    begun = time.time()
    plan, scan, selection = _scan(file, endpoint_url, 900, _filters(kwargs), claim=True)
    with scan:  # ended (renewals stopped and joined) also if selecting fails before redrive
        resolver = RangeResolver(plan, aws_client("kinesis"), aws_client("s3"))
        picked = selection.pick(scan.messages)
        selected = [m for m in picked if not redriven_meanwhile(m, begun)]
        meanwhile = len(picked) - len(selected)
        selected += [m for m in scan.of(Kind.RANGE) if resolver.selected(selection, m)]
        with json_only_stdout(as_json):
            done = redrive(
                plan, scan, selected, max_redrives=max_redrives, limit=max_letters,
                dry_run=dry_run, resolve=resolver,
            )  # fmt: skip
    counts = {fate.value: sum(r.fate is fate for r in done) for fate in Fate}
    ok = all(r.fate.handled or r.fate is Fate.PLANNED for r in done) and not scan.unreadable
    if as_json:
        click.echo(json.dumps({
            "selected": len(done), "dry_run": dry_run, "ok": ok, **counts,
            "redriven_meanwhile": meanwhile, "claimed_elsewhere": scan.held_elsewhere,
            "letters": [r.as_dict() for r in done],
        }))  # fmt: skip
    else:
        for r in done:
            if r.fate is not Fate.WRITTEN:
                d = r.as_dict()
                click.echo(
                    f"{r.fate.value}: {d['function']} key {d['partition_key']!r} "
                    f"{d['shard_id']} {d['sequence_number']}/{d['sub_sequence_number']}"
                    + (f": {r.detail}" if r.detail else "")
                )
        if meanwhile or scan.held_elsewhere:
            click.echo(
                "left to another redrive running now: "
                f"{plural(meanwhile, 'letter')} it dead-lettered again, "
                f"{plural(scan.held_elsewhere, 'object')} of letters it claimed",
                err=True,
            )
        summary = ", ".join(f"{n} {fate}" for fate, n in counts.items() if n)
        verb = "would redrive" if dry_run else "redrove"
        click.echo(f"{verb} {plural(len(done), 'selected letter')}: {summary or 'nothing'}",
                   err=True)  # fmt: skip
    if not ok:
        raise SystemExit(1)


@dlq_group.command("discard")
@_options
@click.option("--yes", is_flag=True, help="Really delete the selected letters.")
def discard_command(
    file: str, endpoint_url: str | None, as_json: bool, yes: bool, **kwargs: Any
) -> None:
    """Delete the selected dead letters of FILE for good, and print each one removed.

    Only shardline dead letters are deleted; on-failure ranges and foreign messages stay.
    """
    from deploy.ops.dead_letters import discard, letter_row  # noqa: PLC0415

    if not yes:
        raise click.UsageError("discard deletes letters for good: add --yes (see `dlq ls`)")
    _, scan, selection = _scan(file, endpoint_url, 300, _filters(kwargs), claim=True)
    with scan:
        removed, failed = discard(scan, selection.pick(scan.messages))
    rows = [letter_row(m) for m in removed]
    if as_json:
        click.echo(json.dumps({"removed": rows, "failed": failed}))
    else:
        for row in rows:
            click.echo(
                f"removed {row['id']} from {row['source']}: {row['function']} key "
                f"{row['partition_key']!r} {row['shard_id']} {row['sequence_number']}"
            )
        for message_id, why in failed.items():
            click.echo(f"not removed {message_id}: {why}", err=True)
        click.echo(f"discarded {plural(len(removed), 'dead letter')}", err=True)
    if failed or scan.unreadable:
        raise SystemExit(1)
