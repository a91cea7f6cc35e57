"""``shardline deploy``, ``diff`` and ``destroy``: the CLI of :mod:`deploy.aws.stack`.

The three share their options: the file, ``--endpoint-url`` (any AWS-compatible endpoint,
such as the embedded local stack) and ``--region`` (else the file's ``region``, else the
environment's). Errors are one line with the fix; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from collections.abc import Callable

    from deploy.aws.stack import Change
    from stream.plan import Plan

__all__ = ["deploy_command", "destroy_command", "diff_command"]


def _target(function: Callable[..., None]) -> Callable[..., None]:
    """The options every stack command takes."""
    for option in reversed(
        [
            click.argument("file", type=click.Path(dir_okay=False, exists=True)),
            click.option("--endpoint-url", help="An AWS-compatible endpoint (e.g. local)."),
            click.option("--region", help="AWS region [default: the file's, else AWS_REGION]."),
            click.option("--debug", is_flag=True, help="Show tracebacks."),
        ]
    ):
        function = option(function)
    return function


def _package_options(function: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(
        [
            click.option(
                "--architecture",
                type=click.Choice(["arm64", "x86_64"]),
                default="arm64",
                show_default=True,
                help="The functions' CPU; the package is built for it.",
            ),
            click.option(
                "--runtime", default="python3.12", show_default=True, help="Lambda runtime."
            ),
            click.option(
                "--artifacts-bucket",
                help="Bucket for the package [default: shardline-artifacts-ACCOUNT-REGION].",
            ),
            click.option(
                "--cache-dir",
                default=".shardline/cache",
                show_default=True,
                type=click.Path(file_okay=False),
                help="Where installed dependencies are kept between builds.",
            ),
        ]
    ):
        function = option(function)
    return function


def _clients(plan: Plan, region: str | None, endpoint_url: str | None) -> Any:
    import boto3  # noqa: PLC0415

    session = boto3.session.Session(region_name=region or plan.get("region") or None)
    if session.region_name is None:
        msg = "no AWS region: pass --region, set region: in the file, or set AWS_REGION"
        raise click.ClickException(msg)

    @functools.cache
    def client(service: str) -> Any:
        return session.client(service, endpoint_url=endpoint_url)

    return client


def _run(debug: bool, action: Callable[[], None]) -> None:
    """Run ``action``, turning AWS errors into one line and exit status 1 (ours, a
    :class:`~deploy.errors.DeployError`, are the group's: the same line)."""
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    try:
        action()
    except (ClientError, BotoCoreError) as exc:
        if debug:
            raise
        hint = ""
        if isinstance(exc, BotoCoreError) and "credentials" in str(exc).lower():
            hint = ": configure AWS credentials (aws configure, or AWS_PROFILE)"
        click.echo(f"error: {exc}{hint}", err=True)
        raise SystemExit(1) from None


def _changes_table(title: str, changes: tuple[Change, ...]) -> Any:
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=title)
    for column in ("action", "resource", "type", "replacement"):
        table.add_column(column)
    for change in changes:
        table.add_row(change.action, change.logical_id, change.resource_type, change.replacement)
    return table


def _stack_change(
    file: str, *, endpoint_url: str | None, region: str | None, debug: bool,
    architecture: str, runtime: str, artifacts_bucket: str | None, cache_dir: str,
    execute: bool,
) -> None:  # fmt: skip
    from rich.console import Console  # noqa: PLC0415

    from deploy.aws.package import build_package, format_size  # noqa: PLC0415
    from deploy.aws.stack import deploy  # noqa: PLC0415
    from deploy.cli.common import load_any_plan  # noqa: PLC0415
    from deploy.cli.local import use_local_stack  # noqa: PLC0415

    endpoint_url = use_local_stack(endpoint_url)
    plan = load_any_plan(file)
    client = _clients(plan, region, endpoint_url)
    console = Console(stderr=True, width=120)
    python_version = runtime.removeprefix("python")

    def package() -> Any:
        # a line, not a second spinner: the deploy's status is showing (rich < 14.1
        # allows one live display at a time)
        console.print("building the Lambda package")
        built = build_package(
            plan,
            ".shardline/build",
            architecture=architecture,
            python_version=python_version,
            cache_dir=cache_dir,
            log=console.print,
        )
        console.print(f"package {built.path}: {format_size(built.size)}, sha256 {built.sha256}")
        for note in built.notes:
            console.print(f"note: {note}")
        return built

    def action() -> None:
        with console.status(f"{'deploying' if execute else 'previewing'} stack {plan['name']}"):
            result = deploy(
                plan,
                client,
                package=package,
                architecture=architecture,
                runtime=runtime,
                artifacts_bucket=artifacts_bucket,
                execute=execute,
                log=console.print,
            )
        if result.status == "unchanged":
            console.print(f"stack {result.stack}: no changes")
        else:
            console.print(_changes_table(f"stack {result.stack}: {result.status}", result.changes))
        if execute:
            for key, value in sorted(result.outputs.items()):
                click.echo(f"{key}\t{value}")

    _run(debug, action)


@click.command("deploy")
@_target
@_package_options
def deploy_command(
    file: str, *, endpoint_url: str | None, region: str | None, debug: bool,
    architecture: str, runtime: str, artifacts_bucket: str | None, cache_dir: str,
) -> None:  # fmt: skip
    """Create or update the stack of FILE through a change set, and print its outputs.

    Builds the Lambda package, uploads it under its digest, shows the change set and
    applies it. An unchanged file changes nothing. Problems that would stop the deploy half
    way (a name too long for AWS, a store that exists already) fail before anything is made.
    """
    _stack_change(
        file, endpoint_url=endpoint_url, region=region, debug=debug, architecture=architecture,
        runtime=runtime, artifacts_bucket=artifacts_bucket, cache_dir=cache_dir, execute=True,
    )  # fmt: skip


@click.command("diff")
@_target
@_package_options
def diff_command(
    file: str, *, endpoint_url: str | None, region: str | None, debug: bool,
    architecture: str, runtime: str, artifacts_bucket: str | None, cache_dir: str,
) -> None:  # fmt: skip
    """Show what `shardline deploy FILE` would change, without changing it."""
    _stack_change(
        file, endpoint_url=endpoint_url, region=region, debug=debug, architecture=architecture,
        runtime=runtime, artifacts_bucket=artifacts_bucket, cache_dir=cache_dir, execute=False,
    )  # fmt: skip


@click.command("destroy")
@_target
@click.option(
    "--delete-data", is_flag=True, help="Also delete tables, buckets and queues holding data."
)
def destroy_command(
    file: str, *, endpoint_url: str | None, region: str | None, debug: bool, delete_data: bool
) -> None:
    """Delete the stack of FILE. Stores that hold data are kept unless --delete-data."""
    from rich.console import Console  # noqa: PLC0415

    from deploy.aws.stack import destroy  # noqa: PLC0415
    from deploy.cli.common import load_any_plan  # noqa: PLC0415
    from deploy.cli.local import use_local_stack  # noqa: PLC0415

    endpoint_url = use_local_stack(endpoint_url)
    plan = load_any_plan(file)
    client = _clients(plan, region, endpoint_url)
    console = Console(stderr=True, width=120)

    def action() -> None:
        with console.status(f"deleting stack {plan['name']}"):
            result = destroy(plan, client, delete_data=delete_data, log=console.print)
        if not result.deleted:
            console.print(f"stack {result.stack}: not deployed")
        else:
            console.print(f"stack {result.stack}: deleted")
        for store in result.removed:
            console.print(f"deleted {store}")
        for store in result.kept:
            console.print(f"kept {store}: it holds data (--delete-data deletes it)")

    _run(debug, action)
