"""``shardline rewind FILE --function F --to T``: start a function again from a timestamp
(:mod:`deploy.ops.rewind`).

With an endpoint (``--endpoint-url``, or the running local stack) the function's local
checkpoints move back (``shardline run`` / ``dev`` then reprocess); without one, in AWS, its
event source mapping is replaced by one at ``AT_TIMESTAMP``, through two change sets
(``--target`` chooses otherwise). What will be reprocessed is printed first, and confirmed
unless ``--yes``. Exit status: 0 when rewound (or nothing to do, or declined), 1 on an error
(a worker holds the leases: stop ``run`` first), 2 for an invalid file.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from deploy.cli.common import load_any_plan, plural

if TYPE_CHECKING:
    from deploy.ops.rewind import MappingRewind

__all__ = ["rewind_command"]

_SAFE = (
    "Reprocessing is safe: sinks are idempotent by record position (DynamoDB and OpenSearch "
    "end the same, a `latest` item is never overwritten by an older record; the S3 archive "
    "is at-least-once)."
)


@click.command("rewind")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--function", "function", required=True, help="The function to rewind.")
@click.option("--to", "to", required=True, help="Start again from: ISO time, or 2h, 30m, 1d ago.")
@click.option(
    "--target",
    type=click.Choice(["local", "aws"]),
    help="Local checkpoints or the AWS mapping (default: local with an endpoint).",
)
@click.option(
    "--force", is_flag=True, help="Rewind even though a worker holds leases (it loses them)."
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--endpoint-url", help="AWS endpoint (default: the local stack, if up).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def rewind_command(
    file: str, *, function: str, to: str, target: str | None, force: bool, yes: bool,
    endpoint_url: str | None, as_json: bool,
) -> None:  # fmt: skip
    """Start FUNCTION of FILE again from time TO: its records since then are reprocessed."""
    import os  # noqa: PLC0415

    from deploy.cli.local import use_local_stack  # noqa: PLC0415
    from deploy.ops import rewind as ops  # noqa: PLC0415
    from deploy.ops.dead_letters import parse_since  # noqa: PLC0415
    from stream.aws import aws_client, reset_clients  # noqa: PLC0415

    try:
        at = parse_since(to)
    except ValueError as exc:
        raise click.BadParameter(str(exc).replace("--since", "--to"), param_hint="--to") from None
    endpoint_url = use_local_stack(endpoint_url)
    if endpoint_url:
        os.environ["AWS_ENDPOINT_URL"] = endpoint_url
        reset_clients()
    target = target or ("local" if endpoint_url else "aws")
    plan = load_any_plan(file)

    def say(line: str) -> None:
        click.echo(line, err=True)

    if target == "local":
        local = ops.plan_checkpoint_rewind(plan, function, at, aws_client)
        summary: dict[str, Any] = {"target": "local", **local.as_dict()}
        moving = [s for s in local.shards if s.moves]
        lines = [
            f"{s.shard_id}: checkpoint {s.checkpoint} -> {s.target} "
            f"({plural(s.records, 'record')} again, from {s.first})"
            for s in moving
        ] + [f"{s.shard_id}: stays at {s.checkpoint} (it processed nothing that arrived since)"
             for s in local.shards if not s.moves]  # fmt: skip
        records, shards = local.records, len(moving)
    else:
        remote = ops.plan_mapping_rewind(plan, function, at, aws_client)
        summary = {"target": "aws", **remote.as_dict()}
        lines = _aws_lines(remote)
        records, shards = remote.records, len(remote.shards)
    # on stderr, --json or not: stdout keeps the JSON
    say(f"rewind {function} to {summary['to']}: about {plural(records, 'record')} on "
        f"{plural(shards, 'shard')} will be reprocessed")  # fmt: skip
    for line in lines:
        say(f"  {line}")
    say(_SAFE)
    if target == "local" and not moving:
        summary["rewound"] = False
        _done(summary, as_json, "nothing to rewind")
        return
    if target == "local":
        ops.check_not_held(local, force=force)  # before asking: a refusal needs no answer
    if not yes and not click.confirm("rewind?", err=True):
        summary["rewound"] = False
        _done(summary, as_json, "not rewound")
        return
    if target == "local":
        moved = ops.rewind_checkpoints(local, aws_client, force=force)
        summary["moved"] = [s.shard_id for s in moved]
        message = f"rewound {plural(len(moved), 'shard')}: the next `shardline run` reprocesses"
    else:
        ops.rewind_mapping(remote, aws_client, log=say)
        finished = f" (the interrupted rewind to {remote.resumed} is finished)"
        message = f"rewound: the new mapping reads from {summary['to']}" + (
            finished if remote.resumed else ""
        )
    summary["rewound"] = True
    _done(summary, as_json, message)


def _aws_lines(remote: MappingRewind) -> list[str]:
    """What an AWS rewind reprocesses and does, a line each; says so when it finishes an
    interrupted one."""
    lines = [f"{shard}: {plural(n, 'record')} since then" for shard, n in remote.shards.items()]
    if remote.resumed:
        lines.append(
            f"an earlier rewind (to {remote.resumed}) removed the mapping {remote.mapping_id} "
            "and stopped before creating it again: the function reads nothing now. This "
            "rewind finishes it: the mapping is created at AT_TIMESTAMP (one change set of "
            f"stack {remote.stack})"
        )
    else:
        lines.append(
            f"the mapping {remote.mapping_id} is removed, then created again at AT_TIMESTAMP "
            f"(two change sets of stack {remote.stack})"
        )
    return lines


def _done(summary: dict[str, Any], as_json: bool, message: str) -> None:
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(message, err=True)
