"""``shardline local up | down | status | env``, and how the other commands find that stack.

``local up`` starts the embedded AWS (a moto server and an osmem-server on loopback) in the
background, for users who want it running between commands; its pids, addresses and logs
live in ``.shardline/local/`` of the working folder. Every command that talks to AWS and
was given no ``--endpoint-url`` then uses it (saying so on stderr): ``dev``, ``demo``,
``run``, ``status``, ``produce``, ``deploy``, ``diff``, ``destroy``, ``invoke``.
"""

from __future__ import annotations

import click

__all__ = ["local_group", "use_local_stack"]


def use_local_stack(endpoint_url: str | None) -> str | None:
    """The endpoint to use: the one given, else (when ``AWS_ENDPOINT_URL`` is not set
    either) a running ``local up`` stack's, whose environment, credentials and
    ``OPENSEARCH_URL`` included, is then set; else None."""
    import os  # noqa: PLC0415

    if endpoint_url or os.environ.get("AWS_ENDPOINT_URL"):  # the user chose already
        return endpoint_url

    from deploy.local import running_local  # noqa: PLC0415

    stack = running_local()
    if stack is None:
        return None
    os.environ.update(stack.environ())
    from stream.aws import reset_clients  # noqa: PLC0415

    reset_clients()
    click.echo(
        f"using the local stack at {stack.endpoint} (shardline local down stops it)", err=True
    )
    return stack.endpoint


@click.group("local")
def local_group() -> None:
    """The embedded local AWS, kept running between commands."""


@local_group.command("up")
def up() -> None:
    """Start a moto server and an osmem-server on loopback, in the background."""
    from deploy.local import STATE_DIR, local_up  # noqa: PLC0415

    stack, started = local_up()
    verb = "started" if started else "already running"
    click.echo(f"local stack {verb}: AWS at {stack.endpoint}, OpenSearch at {stack.opensearch_url}")
    click.echo(f"state and logs in {STATE_DIR}; `shardline local down` stops it")


@local_group.command("down")
def down() -> None:
    """Stop the local stack started by `shardline local up` in this folder."""
    from deploy.local import local_down  # noqa: PLC0415

    click.echo("local stack stopped" if local_down() else "no local stack recorded here")


@local_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the addresses as JSON on stdout.")
def status(as_json: bool) -> None:
    """Say whether a local stack runs here, and where (exit status 1 when none does)."""
    import json  # noqa: PLC0415

    from deploy.local import running_local  # noqa: PLC0415

    stack = running_local()
    if as_json:
        state: dict[str, object] = {"running": stack is not None}
        if stack is not None:
            state |= {"endpoint": stack.endpoint, "opensearch_url": stack.opensearch_url}
        click.echo(json.dumps(state))
    elif stack is not None:
        click.echo(f"running: AWS at {stack.endpoint}, OpenSearch at {stack.opensearch_url}")
    else:
        click.echo("no local stack running here (shardline local up starts one)")
    if stack is None:
        raise SystemExit(1)


@local_group.command("env")
def env() -> None:
    """Print `export NAME=VALUE` lines that send boto3 and the AWS CLI to the local stack.

    For scripts: `eval "$(shardline local env)"`. The values are the endpoint, a region and
    the dummy credentials the local servers accept, and OPENSEARCH_URL. Exit status 1 (and
    nothing on stdout) when no local stack runs here.
    """
    import shlex  # noqa: PLC0415

    from deploy.local import running_local  # noqa: PLC0415

    stack = running_local()
    if stack is None:
        click.echo("no local stack running here (shardline local up starts one)", err=True)
        raise SystemExit(1)
    for name, value in sorted(stack.environ().items()):
        click.echo(f"export {name}={shlex.quote(value)}")
