"""The ``shardline`` command: a plain click group that other modules add commands to.

Each command imports what it needs inside its function, so ``shardline --help`` and every
command start without loading PyYAML, boto3 or the local stack they do not use.

Exit status: 0 on success, 2 when the pipeline file is invalid (every problem is printed on
stderr as ``FILE:LINE: path: message``, one per line), as for a usage error.

Errors: the group catches ours, a :class:`~stream.exceptions.ShardlineError`, once: one line
``error: MESSAGE`` and the error's ``exit_code`` (1 unless it says otherwise, see
:mod:`deploy.errors`). Anything else is unexpected (a bug, an AWS surprise): one line naming
its class, exit status 1, and the traceback with ``--debug``. A command catches only a named
error of ours that it words differently (the file at fault first, one problem per line),
never ``KeyError`` or ``ValueError``: those are bugs, and must show as such.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING

import click

from deploy.cli.common import EXIT_INVALID, json_only_stdout, load_or_exit, plural, write_output

if TYPE_CHECKING:

    from deploy.pipeline.config import PipelineConfig
    from processors.glue_registry import RegistrySchema

__all__ = ["main"]

#: The fix for errors users meet first, by exception class name (botocore's, mostly).
_HINTS = {
    "NoRegionError": ": set AWS_DEFAULT_REGION, or region: in the pipeline file",
    "NoCredentialsError": ": configure AWS credentials (aws configure, or AWS_PROFILE)",
    "EndpointConnectionError": ": is the endpoint running? (shardline local status)",
}


class _Main(click.Group):
    """The group: one of our errors is ``error: MESSAGE`` and its exit status; an
    unexpected error is one line naming its class and exit status 1. Tracebacks of either
    only with ``shardline --debug`` (or ``SHARDLINE_DEBUG=1``)."""

    def invoke(self, ctx: click.Context) -> object:
        from stream.exceptions import ShardlineError  # noqa: PLC0415

        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            import os  # noqa: PLC0415

            if (ctx.obj or {}).get("debug") or os.environ.get("SHARDLINE_DEBUG") == "1":
                raise
            notes = "".join(f" ({note})" for note in getattr(exc, "__notes__", ()))
            if isinstance(exc, ShardlineError):  # ours: the message names the cause and fix
                click.echo(f"error: {exc}{notes}", err=True)
                raise SystemExit(getattr(exc, "exit_code", 1)) from None
            command = ctx.invoked_subcommand or ""
            # a note says where (stream.runtime adds "while building processors[0] (f2c)")
            hint = _HINTS.get(type(exc).__name__, "") + notes
            click.echo(
                f"error: {type(exc).__name__}: {str(exc).rstrip('.')}{hint} "
                f"(`shardline --debug {command} ...` shows the traceback)",
                err=True,
            )
            raise SystemExit(1) from None


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="shardline", prog_name="shardline")
@click.option("--debug", is_flag=True, help="Show tracebacks of unexpected errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """shardline: event processing on Amazon Kinesis with AWS Lambda."""
    ctx.obj = {"debug": debug}


def _summary(cfg: PipelineConfig) -> str:
    spec = cfg.normalized
    return f"{plural(len(spec['functions']), 'function')}, {plural(len(spec['sinks']), 'sink')}"


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def validate(files: tuple[str, ...]) -> None:
    """Check each pipeline FILE and print every problem with its line and path.

    Every file is checked; the exit status is 2 when any of them has a problem.
    """
    invalid = False
    for file in files:
        try:
            cfg = load_or_exit(file)
        except SystemExit:  # its problems are printed: go on with the next file
            invalid = True
            continue
        for note in cfg.notes:  # a choice's consequence, not a problem: the status stays 0
            click.echo(f"{note.file}:{note.line}: {note.path}: note: {note.message}", err=True)
        _archive_note(cfg)
        click.echo(f"{file}: ok ({_summary(cfg)})")
    if invalid:
        raise SystemExit(EXIT_INVALID)


def _archive_note(cfg: PipelineConfig) -> None:
    """Say which function is the archive `replay` reads (deploy.ops.archive), if any."""
    from deploy.ops.archive import find_archive  # noqa: PLC0415
    from deploy.pipeline.config import compile_plan  # noqa: PLC0415

    archive = find_archive(compile_plan(cfg))
    if archive is not None:
        line = cfg.line_of(("functions", archive.function))
        click.echo(
            f"{cfg.source}:{line}: functions.{archive.function}: note: the pipeline's archive "
            f"(`shardline replay` reads s3://{archive.bucket}/{archive.listing_prefix})",
            err=True,
        )


@main.command("compile")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the JSON plan here instead of to stdout.",
)
def compile_(file: str, output: str | None) -> None:
    """Compile the pipeline FILE into the JSON plan that the runtime loads."""
    from deploy.pipeline.config import compile_plan  # noqa: PLC0415  # only when used

    cfg = load_or_exit(file)
    text = json.dumps(compile_plan(cfg), indent=2, ensure_ascii=False) + "\n"
    if write_output(text, output):
        click.echo(f"{file}: plan written to {output} ({_summary(cfg)})", err=True)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--function", "function", help="The function to run (default: the only one).")
@click.option(
    "--event",
    "event",
    required=True,
    type=click.Path(dir_okay=False, exists=True),
    help="A saved Lambda Kinesis event (JSON).",
)
@click.option(
    "--sinks",
    "sinks",
    type=click.Choice(["real", "stdout"]),
    default="real",
    show_default=True,
    help="`stdout` replaces every sink with one that prints `SINK<TAB>JSON` lines.",
)
@click.option("--endpoint-url", help="AWS endpoint for the real sinks and lookups (e.g. local).")
def invoke(
    file: str, function: str | None, event: str, sinks: str, endpoint_url: str | None
) -> None:
    """Run a function of FILE (pipeline file or compiled plan) on a saved EVENT.

    Records that reach stdout sinks are printed as they are written; then a summary goes
    to stderr and the handler's response, as Lambda would receive it, to stdout. With a
    local stack running (shardline local up) or --endpoint-url, the real sinks write there.
    """
    import os  # noqa: PLC0415

    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    from deploy.cli.common import load_any_plan  # noqa: PLC0415
    from deploy.cli.local import use_local_stack  # noqa: PLC0415
    from deploy.local.invoke import (  # noqa: PLC0415
        EventError,
        record_lines,
        run_invoke,
        summary_rows,
    )
    from stream.exceptions import PlanError  # noqa: PLC0415

    endpoint_url = use_local_stack(endpoint_url)
    if endpoint_url:
        os.environ["AWS_ENDPOINT_URL"] = endpoint_url
    plan = load_any_plan(file)
    try:
        result = run_invoke(plan, function, event, stdout_sinks=sinks == "stdout")
    except EventError as exc:  # the event's fault: its message names the event file
        click.echo(str(exc), err=True)
        raise SystemExit(1) from None
    except PlanError as exc:  # no such function, or none named: the file's fault
        click.echo(f"{file}: {exc}", err=True)
        raise SystemExit(1) from None
    table = Table(title=f"{plan.get('name', '')} / {result.function}: {event}")
    table.add_column("what")
    table.add_column("records", justify="right")
    for what, count in summary_rows(result):
        table.add_row(what, count)
    console = Console(stderr=True)
    console.print(table)
    for line in record_lines(result):  # why each record was dead-lettered or reported
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    click.echo(json.dumps(result.result.response))


@main.command()
@click.argument("stream")
@click.option(
    "--file",
    "file",
    required=True,
    type=click.Path(dir_okay=False, allow_dash=True),
    help="JSON lines to send; `-` reads stdin.",
)
@click.option("--key", help="The document field holding the partition key (default: line number).")
@click.option("--aggregate", is_flag=True, help="KPL-aggregate records per shard.")
@click.option(
    "--record-id",
    metavar="FIELD",
    help="Give each record a stable id in this field (kept if present), for de-duplication.",
)
@click.option(
    "--schema",
    "schema",
    metavar="FILE|registry:[REGISTRY/]NAME[@VERSION]",
    help="A contract: .json (JSON Schema), .avsc (Avro, sent as Avro binary), or a Glue Schema "
    "Registry schema (its latest version unless @VERSION; sent with the registry header); lines "
    "that break it are refused.",
)
@click.option(
    "--compression",
    type=click.Choice(["none", "zlib"]),
    default="none",
    show_default=True,
    help="With a registry schema: deflate each payload (the header's compression byte says so).",
)
@click.option("--rate", type=float, help="At most this many records per second.")
@click.option(
    "--concurrent/--sequential",
    default=True,
    show_default=True,
    help="Send the PutRecords calls that may go together at once (no two share a partition "
    "key, so per-key order holds; pays when a flush holds more keys than one call takes), "
    "or one call at a time.",
)
@click.option("--endpoint-url", help="A Kinesis endpoint, e.g. a local server.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def produce(
    stream: str, *, file: str, key: str | None, aggregate: bool, record_id: str | None,
    schema: str | None, compression: str, rate: float | None, concurrent: bool,
    endpoint_url: str | None, as_json: bool,
) -> None:  # fmt: skip
    """Put the JSON lines of FILE onto STREAM, in order per partition key.

    The calls of a flush go at once (--sequential: one at a time): a partition key's next
    record waits for the answer to its previous one either way, so order per key holds.
    Malformed lines are reported with their line number and skipped, and so are lines that
    break the --schema contract; the exit status is 1 when any line was skipped or refused
    or any record could not be written after retries.
    """
    import os  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from rich.console import Console  # noqa: PLC0415
    from rich.progress import Progress  # noqa: PLC0415

    from deploy.cli.local import use_local_stack  # noqa: PLC0415
    from deploy.local.produce import produce_lines  # noqa: PLC0415
    from stream.aws import aws_client  # noqa: PLC0415
    from stream.producer import Producer  # noqa: PLC0415

    endpoint_url = use_local_stack(endpoint_url)
    if endpoint_url:
        os.environ["AWS_ENDPOINT_URL_KINESIS"] = endpoint_url
        os.environ["AWS_ENDPOINT_URL_GLUE"] = endpoint_url  # a registry schema is read there
    contract = _contract(schema, compression)
    console = Console(stderr=True)
    source = sys.stdin.buffer if file == "-" else open(file, "rb")  # noqa: SIM115
    total = None if file == "-" else os.path.getsize(file)
    try:
        producer = Producer(
            stream, aws_client("kinesis"), aggregate=aggregate, record_id=record_id or None,
            schema=contract, concurrent=concurrent,
        )  # fmt: skip
    except (ValueError, OSError) as exc:  # a broken contract file: nothing was read or sent
        raise click.UsageError(f"--schema {schema}: {exc}") from None
    with source, Progress(console=console, transient=True, disable=total is None) as bar:
        task = bar.add_task(f"producing to {stream}", total=total)
        report = produce_lines(
            source, producer, key=key, rate=rate, progress=lambda n: bar.advance(task, n)
        )
    for line_no, why in report.malformed[:20]:
        click.echo(f"{file}:{line_no}: skipped: {why}", err=True)
    if len(report.malformed) > 20:
        click.echo(f"... and {len(report.malformed) - 20} more malformed lines", err=True)
    for line_no, why in report.refused[:20]:
        click.echo(f"{file}:{line_no}: refused: {why}", err=True)
    if len(report.refused) > 20:
        click.echo(f"... and {len(report.refused) - 20} more refused lines", err=True)
    for line_no, why in report.failed[:20]:
        click.echo(f"{file}:{line_no}: not written: {why}", err=True)
    stats = report.stats
    if as_json:
        summary = {
            **(dataclasses.asdict(stats) if stats is not None else {}),
            "lines": report.lines,
            "malformed": [{"line": n, "reason": why} for n, why in report.malformed],
            "failed": [{"line": n, "reason": why} for n, why in report.failed],
            "refused": [{"line": n, "reason": why} for n, why in report.refused],
            "seconds": round(report.seconds, 3),
        }
        click.echo(json.dumps(summary))
    elif stats is not None:
        rate_done = stats.records / report.seconds if report.seconds else 0.0
        console.print(
            f"{plural(stats.records - stats.failures, 'record')} written "
            f"({plural(stats.bytes, 'byte')}) in {plural(stats.kinesis_records, 'Kinesis record')}"
            f" and {plural(stats.calls, 'call')}, {plural(stats.retries, 'retry', 'retries')}, "
            f"{stats.failures - len(report.refused)} failed, "
            # only a contract refuses: without --schema the line reads as it always has
            + (f"{len(report.refused)} refused by the contract, " if schema else "")
            + f"{plural(len(report.malformed), 'malformed line')} "
            f"skipped; {rate_done:.0f} records/s"
        )
    if not report.ok:
        raise SystemExit(1)


def _contract(schema: str | None, compression: str) -> RegistrySchema | str | None:
    """``produce --schema``'s contract: a file's path, or a registry reference."""
    import os  # noqa: PLC0415

    only_registry = "--compression applies to a registry schema (--schema registry:...)"
    if schema is None:
        if compression != "none":
            raise click.UsageError(only_registry)
        return None
    if schema.startswith("registry:"):
        from processors.glue_registry import RegistrySchema  # noqa: PLC0415

        try:
            return RegistrySchema.parse(schema, compression)
        except ValueError as exc:
            raise click.UsageError(f"--schema {schema}: {exc}") from None
    if compression != "none":
        raise click.UsageError(only_registry)
    if not os.path.isfile(schema):
        raise click.UsageError(f"--schema {schema}: no such file (or registry:[REGISTRY/]NAME)")
    return schema


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--function", "functions", multiple=True, help="Run only these functions.")
@click.option("--endpoint-url", help="AWS endpoint for the stream, tables and sinks.")
@click.option("--worker-id", help="This worker's id in the lease tables (default: host-random).")
@click.option("--in-process", is_flag=True, help="Run handlers here, not in Lambda runtimes.")
@click.option("--until-idle", type=float, help="Stop after every shard is idle this long (s).")
@click.option("--duration", type=float, help="Stop after this many seconds.")
@click.option(
    "--lease-duration", type=click.FloatRange(min=1.0), default=10.0, show_default=True,
    help="Seconds a shard lease lasts without renewal before another worker may take it.",
)  # fmt: skip
@click.option(
    "--settings", type=click.Choice(["auto", "plan", "deployed"]), default="auto",
    show_default=True,
    help="Mapping settings from the file (plan), from the stack deployed at the endpoint "
    "(deployed), or deployed when there is one (auto).",
)  # fmt: skip
@click.option(
    "--flush-every", type=click.FloatRange(min=0.0, min_open=True), metavar="S",
    help="Flush windowed functions every S seconds instead of their flush_s (for tests).",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def run(
    file: str, *, functions: tuple[str, ...], endpoint_url: str | None, worker_id: str | None,
    in_process: bool, until_idle: float | None, duration: float | None, lease_duration: float,
    settings: str, flush_every: float | None, as_json: bool,
) -> None:  # fmt: skip
    """Feed the functions of FILE from its stream, as Lambda's event source mapping does.

    Checkpoints and leases live in DynamoDB (one table per function), so a stopped run
    resumes after its last checkpoint and several runs share the shards. Ctrl-C stops
    cleanly: batches in flight finish, checkpoints are written, leases are released.
    A function deployed at the endpoint (shardline deploy) runs with its deployed mapping's
    settings, unless --settings plan. A function with a window step is sent the scheduled
    flush event every flush_s (or --flush-every), as its EventBridge rule does in AWS.
    """
    import os  # noqa: PLC0415
    import threading  # noqa: PLC0415

    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    from deploy.cli.common import load_any_plan  # noqa: PLC0415
    from deploy.cli.local import use_local_stack  # noqa: PLC0415
    from deploy.local.run import LocalRun, RunError, stop_on_signals  # noqa: PLC0415

    endpoint_url = use_local_stack(endpoint_url)
    if endpoint_url:
        os.environ["AWS_ENDPOINT_URL"] = endpoint_url
    plan = load_any_plan(file)
    console = Console(stderr=True, width=120)
    try:
        local = LocalRun(
            plan, functions=list(functions) or None, worker_id=worker_id,
            in_process=in_process, lease_duration_s=lease_duration, settings=settings,
            log_to=2 if as_json else None,  # the workers' logs and metrics: stderr
            flush_every=flush_every,
        )  # fmt: skip
        local.build()
    except RunError as exc:  # no such function, or no deployed mapping: a usage error
        click.echo(f"{file}: {exc}", err=True)
        raise SystemExit(exc.exit_code) from None
    stop = threading.Event()
    timer = threading.Timer(duration or 0, stop.set)
    timer.daemon = True
    if duration is not None:
        timer.start()
    sources = ", ".join(f"{name} ({local.sources[name]} settings)" for name in local.names)
    console.print(f"worker {local.worker_id}: running {sources} (Ctrl-C stops)")
    with stop_on_signals(stop), json_only_stdout(as_json):
        runs = local.run(stop, until_idle_s=until_idle)
    timer.cancel()
    table = Table(title=f"{plan['name']}: event source mappings")
    # "filtered by pushdown": dropped by the mapping's FilterCriteria before any invocation
    columns = ("function", "records in", "filtered by pushdown", "invocations", "ok", "partial",
               "failed", "retries", "on-failure", "checkpoints")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column == "function" else "right")
    for r in runs:
        s = r.stats or r.mapping.stats
        table.add_row(
            r.name, str(s.records_in), str(s.records_filtered), str(s.invocations),
            str(s.batches_ok), str(s.batches_partial), str(s.batches_failed), str(s.retries),
            str(s.records_on_failure), str(s.checkpoints),
        )  # fmt: skip
    console.print(table)
    if as_json:
        from deploy.cli.dev import mapping_json  # noqa: PLC0415

        stats = {r.name: mapping_json(r.stats or r.mapping.stats) for r in runs}
        click.echo(json.dumps({"worker_id": local.worker_id, "functions": stats}))


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.argument("function")
@click.option("--endpoint-url", help="A local endpoint: flush in this process against it.")
def flush(file: str, function: str, endpoint_url: str | None) -> None:
    """Send FUNCTION of FILE one scheduled window flush, as its EventBridge rule does.

    Without an endpoint, invokes the deployed Lambda function (lambda invoke); with a local
    stack running or --endpoint-url, runs the flush in this process against it (the local
    Lambda runs no code). Prints the response: windows sent on, emissions, pending.
    """
    import os  # noqa: PLC0415

    from deploy.cli.common import load_any_plan  # noqa: PLC0415
    from deploy.cli.local import use_local_stack  # noqa: PLC0415
    from deploy.local.flush import flush_in_process, flush_with_lambda  # noqa: PLC0415
    from stream.aws import aws_client  # noqa: PLC0415

    endpoint_url = use_local_stack(endpoint_url)
    if endpoint_url:
        os.environ["AWS_ENDPOINT_URL"] = endpoint_url
    plan = load_any_plan(file)
    if function not in plan["functions"]:
        known = ", ".join(plan["functions"])
        raise click.UsageError(f"{file}: no function {function!r} (known: {known})")
    if region := plan.get("region"):
        os.environ.setdefault("AWS_DEFAULT_REGION", region)
    if endpoint_url:
        answer = flush_in_process(plan, function)
    else:
        answer = flush_with_lambda(plan, function, aws_client)
    click.echo(json.dumps(answer))
    if "error" in answer:
        raise SystemExit(1)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--function", "functions", multiple=True, help="Only these functions.")
@click.option("--endpoint-url", help="AWS endpoint for the stream and lease tables.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON on stdout.")
def status(
    file: str, *, functions: tuple[str, ...], endpoint_url: str | None, as_json: bool
) -> None:
    """Per function and shard: lease owner, checkpoint, and lag behind the newest record."""
    import os  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    from deploy.cli.common import load_any_plan  # noqa: PLC0415
    from deploy.cli.local import use_local_stack  # noqa: PLC0415
    from deploy.local.run import mapping_status  # noqa: PLC0415
    from stream.aws import aws_client  # noqa: PLC0415

    endpoint_url = use_local_stack(endpoint_url)
    if endpoint_url:
        os.environ["AWS_ENDPOINT_URL"] = endpoint_url
    plan = load_any_plan(file)
    if region := plan.get("region"):  # the file's region, unless the environment names one
        os.environ.setdefault("AWS_DEFAULT_REGION", region)
    table = Table(title=f"{plan['name']}: shards")
    for column in ("function", "shard", "owner", "checkpoint", "records behind", "ms behind"):
        table.add_column(
            column, justify="right" if "behind" in column else "left", overflow="fold",
            no_wrap=column == "shard",
        )  # fmt: skip
    try:
        rows = mapping_status(plan, aws_client, list(functions) or None)
    except Exception as exc:
        if type(exc).__name__ != "NoRegionError":
            raise
        click.echo(
            f"{file}: no AWS region, so no stream to look at: for AWS set region: in the file "
            "or AWS_DEFAULT_REGION; for a local stack start it (shardline local up) or pass "
            "--endpoint-url",
            err=True,
        )
        raise SystemExit(1) from None
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(row) for row in rows]))
        return
    for row in rows:
        checkpoint = row.checkpoint  # a long sequence number shows its changing end
        if len(checkpoint) >= 24 and checkpoint.isdigit():
            checkpoint = "…" + checkpoint[-20:]
        behind = "-" if row.behind is None else f"{row.behind}{'+' if row.behind_more else ''}"
        millis = "-" if row.millis_behind is None else str(row.millis_behind)
        table.add_row(row.function, row.shard_id, row.owner, checkpoint, behind, millis)
    # the terminal's width, or COLUMNS; 110 when piped: a narrow one folds, never cuts
    wide = sys.stdout.isatty() or bool(os.environ.get("COLUMNS"))
    Console(width=None if wide else 110).print(table)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--code-bucket",
    default="shardline-artifacts",
    show_default=True,
    help="Bucket of the Lambda package (`shardline deploy` passes the one it uploads to).",
)
@click.option("--code-key", help="Key of the Lambda package [default: NAME/lambda.zip].")
@click.option(
    "--architecture",
    type=click.Choice(["arm64", "x86_64"]),
    default="arm64",
    show_default=True,
    help="The functions' architecture, as the package was built for.",
)
def template(file: str, *, code_bucket: str, code_key: str | None, architecture: str) -> None:
    """Print the CloudFormation template (JSON) of the pipeline FILE, and nothing else.

    Problems that would stop a deploy (a generated name too long for AWS, one table with
    two key schemas) are printed on stderr and the exit status is 1; the template is
    printed all the same, for review.
    """
    from deploy.aws.cloudformation import build_template, deploy_problems, template_json  # noqa: PLC0415
    from deploy.pipeline.config import compile_plan  # noqa: PLC0415  # only when used

    plan = compile_plan(load_or_exit(file))
    key = code_key or f"{plan['name']}/lambda.zip"
    body = build_template(plan, code_bucket=code_bucket, code_key=key, architecture=architecture)
    click.echo(template_json(body), nl=False)
    problems = deploy_problems(plan)
    for problem in problems:
        click.echo(f"{file}: {problem}", err=True)
    if problems:
        raise SystemExit(1)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option(
    "-o",
    "--output",
    "out_dir",
    required=True,
    type=click.Path(),
    help="The zip to write (PATH.zip), or a directory for NAME.zip (created if missing).",
)
@click.option(
    "--architecture",
    type=click.Choice(["arm64", "x86_64"]),
    default="arm64",
    show_default=True,
    help="The functions' architecture: native dependencies are installed for it.",
)
@click.option(
    "--python-version",
    default="3.12",
    show_default=True,
    help="The Lambda runtime's Python (python3.12 is 3.12).",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    default=".shardline/cache",
    show_default=True,
    help="Where installed dependencies are kept between builds.",
)
@click.option(
    "--compile-with",
    "compile_with",
    metavar="PYTHON",
    help="Ship bytecode compiled by this interpreter of --python-version (faster cold "
    "starts; the zip then depends on it). Default: sources only.",
)
def package(
    file: str,
    *,
    out_dir: str,
    architecture: str,
    python_version: str,
    cache_dir: str,
    compile_with: str | None,
) -> None:
    """Build the Lambda zip of FILE (pipeline file or compiled plan) and print its size.

    It holds stream/, processors/, sinks/, the compiled plan, the plugins the plan uses and
    the run-time dependencies built for the target; boto3 (in the Lambda runtime), deploy/
    and the CLI libraries are left out. The same inputs give the same bytes, so an
    unchanged pipeline redeploys as a no-op; the output says how it was built (sources
    only, or bytecode by the --compile-with interpreter).
    """
    from deploy.aws.package import PackageError, build_package, format_size  # noqa: PLC0415
    from deploy.cli.common import load_any_plan  # noqa: PLC0415

    plan = load_any_plan(file)
    try:
        result = build_package(
            plan,
            out_dir,
            architecture=architecture,
            python_version=python_version,
            cache_dir=cache_dir,
            compile_with=compile_with,
            log=lambda line: click.echo(line, err=True),
        )
    except PackageError as exc:  # named after the file, as the file's problems are
        click.echo(f"{file}: {exc}", err=True)
        raise SystemExit(1) from None
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(
        f"{result.path}: {format_size(result.size)} ({result.size} bytes), "
        f"{len(result.files)} files, {architecture}, python{python_version}, "
        f"{result.built}, sha256 {result.sha256}"
    )


def _add_commands() -> None:
    """Commands defined in their own modules (each imports its heavy parts when run)."""
    from deploy.cli.cost import cost  # noqa: PLC0415
    from deploy.cli.dev import demo_command, dev_command  # noqa: PLC0415
    from deploy.cli.dlq import dlq_group  # noqa: PLC0415
    from deploy.cli.event import event_command  # noqa: PLC0415
    from deploy.cli.init import init_command  # noqa: PLC0415
    from deploy.cli.local import local_group  # noqa: PLC0415
    from deploy.cli.replay import replay_command  # noqa: PLC0415
    from deploy.cli.report import report  # noqa: PLC0415
    from deploy.cli.rewind import rewind_command  # noqa: PLC0415
    from deploy.cli.stack import deploy_command, destroy_command, diff_command  # noqa: PLC0415
    from deploy.cli.test import schema, test  # noqa: PLC0415

    for command in (
        deploy_command, diff_command, destroy_command, dev_command, demo_command, test, schema,
        cost, report, local_group, event_command, init_command, dlq_group, replay_command,
        rewind_command,
    ):  # fmt: skip
        main.add_command(command)


_add_commands()

