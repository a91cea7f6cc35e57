"""``shardline replay``: put a time window of records through a function again, from the
archive or the stream (:mod:`deploy.ops.replay`).

Exit status: 0 when every record of the window was handled; 1 when some were not (the
state file under ``.shardline/`` lets the next run resume); 2 for an invalid file or
request; 130 after Ctrl-C (the next run resumes).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from deploy.cli.common import EXIT_INVALID, json_only_stdout, load_any_plan, plural

if TYPE_CHECKING:
    from collections.abc import Mapping

    from deploy.ops.replay import ReplayResult
    from stream.plan import Plan

__all__ = ["replay_command"]


@click.command("replay")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--function", "function", required=True, help="The function to replay through.")
@click.option("--since", required=True, help="Window start (arrival): 2h, 30m, 1d, ISO time.")
@click.option("--until", default="0s", show_default=True, help="Window end (excluded).")
@click.option("--source", type=click.Choice(["archive", "stream"]), default="archive",
              show_default=True, help="Read the pipeline's archive, or the stream.")  # fmt: skip
@click.option("--sinks", help="Only these sinks (comma-separated); the others are discarded.")
@click.option("--dry-run", is_flag=True, help="Read and count; write nothing.")
@click.option("--workers", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Partition-key lanes run at once.")  # fmt: skip
@click.option("--state-dir", default=".shardline", show_default=True,
              help="Where the resume state is kept.")  # fmt: skip
@click.option("--endpoint-url", help="AWS endpoint (default: the local stack, if up).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def replay_command(
    file: str, *, function: str, since: str, until: str, source: str, sinks: str | None,
    dry_run: bool, workers: int, state_dir: str, endpoint_url: str | None, as_json: bool,
) -> None:  # fmt: skip
    """Reprocess the records that arrived in [--since, --until) through FUNCTION as FILE
    defines it now, into its sinks, at their original positions.

    Keyed sinks are idempotent by position: replaying into live stores changes nothing.
    Records of one key go in their order; keys run in parallel. Ctrl-C stops; running the
    same command again resumes where it stopped.
    """
    import os  # noqa: PLC0415
    import sys  # noqa: PLC0415
    from contextlib import nullcontext  # noqa: PLC0415

    from deploy.cli.local import use_local_stack  # noqa: PLC0415
    from deploy.cli.progress import UnitProgress  # noqa: PLC0415
    from deploy.ops.dead_letters import parse_since  # noqa: PLC0415
    from deploy.ops.replay import ReplayError, ReplayRequest, replay  # noqa: PLC0415
    from stream.aws import aws_client, reset_clients  # noqa: PLC0415

    try:
        window = parse_since(since), parse_since(until)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    endpoint_url = use_local_stack(endpoint_url)
    if endpoint_url:
        os.environ["AWS_ENDPOINT_URL"] = endpoint_url
        reset_clients()
    plan = load_any_plan(file)
    request = ReplayRequest(
        function, *window, source=source,
        sinks=tuple(s.strip() for s in sinks.split(",") if s.strip()) if sinks else None,
        dry_run=dry_run, workers=workers,
    )  # fmt: skip

    units = "objects" if source == "archive" else "shards"
    bar = UnitProgress(f"replaying {function} from the {source}")

    def progress(r: ReplayResult) -> None:
        detail = f"{units}, {plural(r.replayed, 'record')} replayed"
        bar.update(r.done + r.skipped, r.units, detail)

    try:
        with json_only_stdout(as_json), bar if not as_json else nullcontext():
            result = replay(
                plan, request, s3=aws_client("s3"), kinesis=aws_client("kinesis"),
                state_dir=state_dir, on_progress=None if as_json else progress,
            )  # fmt: skip
    except ReplayError as exc:
        click.echo(f"{file}: {exc}", err=True)
        raise SystemExit(EXIT_INVALID) from None
    except KeyboardInterrupt:
        click.echo("interrupted: run the same command again to resume", err=True)
        raise SystemExit(130) from None
    stores = _read_back(plan, result.sinks) if not dry_run else {}
    doc = {
        "function": function, "source": source, "since": window[0], "until": window[1],
        "dry_run": dry_run, "ok": result.ok, "units": result.units, "skipped": result.skipped,
        "done": result.done, "read": result.read, "duplicates": result.duplicates,
        "outside": result.outside, "replayed": result.replayed, "keys": result.keys,
        "written": result.written, "dead_letters": result.dead_letters,
        "failed": result.failed, "reasons": result.reasons, "sinks": result.sinks,
        "seconds": round(result.seconds, 3), "stores": stores,
    }  # fmt: skip
    if as_json:
        click.echo(json.dumps(doc))
    else:
        verb = "would replay" if dry_run else "replayed"
        click.echo(
            f"{verb} {plural(result.replayed, 'record')} of {plural(result.keys, 'key')} "
            f"through {function} from the {source} in {result.seconds:.1f} s "
            f"({result.duplicates} duplicates, {result.outside} outside the window skipped)"
        )
        for name, n in sorted(result.written.items()):
            click.echo(f"  {name}: {plural(n, 'record')} written")
        for name, count in stores.items():
            click.echo(f"  {name} now holds {count}")
        if result.dead_letters:
            click.echo(f"  {plural(result.dead_letters, 'record')} dead-lettered")
        for why in result.reasons:
            click.echo(f"  failed: {why}", err=True)
    if not result.ok:
        sys.exit(1)


def _read_back(plan: Plan, sinks: list[str]) -> dict[str, Any]:
    """What the written stores hold now, read from the services (not the runner's counts)."""
    from deploy.local.readback import search_count, table_items  # noqa: PLC0415
    from stream.aws import aws_client  # noqa: PLC0415

    out: dict[str, Any] = {}
    for name in sinks:
        spec: Mapping[str, Any] = plan["sinks"].get(name) or {}
        try:
            if spec.get("type") == "dynamodb":
                out[name] = f"{len(table_items(aws_client('dynamodb'), spec['table']))} items"
            elif spec.get("type") == "opensearch":
                out[name] = f"{search_count(spec['endpoint'], spec['index'])} documents"
        except Exception as exc:  # the summary is informative: say what could not be read
            out[name] = f"not read ({type(exc).__name__}: {exc})"
    return out
