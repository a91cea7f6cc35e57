"""The ``shardline`` command: a plain click group that other modules add commands to.

Each command imports what it needs inside its function, so ``shardline --help`` and every
command start without loading PyYAML, boto3 or the local stack they do not use.

Exit status: 0 on success, 2 when the pipeline file is invalid (every problem is printed on
stderr as ``FILE:LINE: path: message``, one per line), as for a usage error.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from deploy.config import PipelineConfig

__all__ = ["main"]

EXIT_INVALID = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """shardline: event processing on Amazon Kinesis with AWS Lambda."""


def load_or_exit(file: str) -> PipelineConfig:
    """Load and validate ``file``; on problems print them all to stderr and exit with 2.

    Commands of this group that take a pipeline file share it, so every command reports a
    broken file the same way.
    """
    from deploy.config import ConfigError, load_config  # noqa: PLC0415  # only when used

    try:
        return load_config(file)
    except ConfigError as exc:
        for problem in exc.errors:
            click.echo(str(problem), err=True)
        raise SystemExit(EXIT_INVALID) from None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _summary(cfg: PipelineConfig) -> str:
    spec = cfg.normalized
    return f"{_count(len(spec['functions']), 'function')}, {_count(len(spec['sinks']), 'sink')}"


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
def validate(file: str) -> None:
    """Check the pipeline FILE and print every problem with its line and path."""
    cfg = load_or_exit(file)
    click.echo(f"{file}: ok ({_summary(cfg)})")


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
    from deploy.config import compile_plan  # noqa: PLC0415  # only when used

    cfg = load_or_exit(file)
    text = json.dumps(compile_plan(cfg), indent=2, ensure_ascii=False) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    with open(output, "w", encoding="utf-8") as fh:
        fh.write(text)
    click.echo(f"{file}: plan written to {output} ({_summary(cfg)})", err=True)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--function", "function", help="The function to run (default: the only one).")
@click.option(
    "--event", "event", required=True, type=click.Path(dir_okay=False, exists=True),
    help="A saved Lambda Kinesis event (JSON).",
)
@click.option(
    "--sinks", "sinks", type=click.Choice(["real", "stdout"]), default="real", show_default=True,
    help="`stdout` replaces every sink with one that prints `SINK<TAB>JSON` lines.",
)
def invoke(file: str, function: str | None, event: str, sinks: str) -> None:
    """Run a function of FILE (pipeline file or compiled plan) on a saved EVENT.

    Records that reach stdout sinks are printed as they are written; then a summary goes
    to stderr and the handler's response, as Lambda would receive it, to stdout.
    """
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    from deploy.invoke import load_any_plan, run_invoke, summary_rows  # noqa: PLC0415
    from stream.exceptions import ShardlineError  # noqa: PLC0415

    plan = load_any_plan(file)
    try:
        result = run_invoke(plan, function, event, stdout_sinks=sinks == "stdout")
    except (ShardlineError, KeyError, ValueError) as exc:
        click.echo(f"{file}: {exc}", err=True)
        raise SystemExit(1) from None
    table = Table(title=f"{plan.get('name', '')} / {function or 'function'}: {event}")
    table.add_column("what")
    table.add_column("records", justify="right")
    for what, count in summary_rows(result):
        table.add_row(what, count)
    Console(stderr=True).print(table)
    click.echo(json.dumps(result.response))


if __name__ == "__main__":  # `python -m deploy.cli`, as tests and CI without the script use
    main()
