"""What every command of the ``shardline`` CLI shares: loading a pipeline file or exiting,
``--json`` keeping stdout to one document, one output to ``-o`` or stdout, and counted nouns.

Command modules import these from here, never from :mod:`deploy.cli.main` (which imports the
command modules to add them to the group), so the CLI has no import cycle.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from collections.abc import Iterator

    from deploy.pipeline.config import PipelineConfig
    from stream.plan import Plan

__all__ = [
    "EXIT_INVALID",
    "json_only_stdout",
    "load_any_plan",
    "load_or_exit",     "plural",
    "write_output",
]

#: Exit status for an invalid pipeline file, as for a usage error.
EXIT_INVALID = 2


def load_or_exit(file: str) -> PipelineConfig:
    """Load and validate ``file``; on problems print them all to stderr and exit with 2.

    Commands of this group that take a pipeline file share it, so every command reports a
    broken file the same way.
    """
    from deploy.pipeline.config import ConfigError, load_config  # noqa: PLC0415  # only when used

    try:
        return load_config(file)
    except ConfigError as exc:
        for problem in exc.errors:
            click.echo(str(problem), err=True)
        raise SystemExit(EXIT_INVALID) from None


@contextlib.contextmanager
def json_only_stdout(as_json: bool) -> Iterator[None]:
    """With ``--json``, stdout holds one JSON document and nothing else: while the command
    runs, what the runtime writes to ``sys.stdout`` (the JSON log lines and EMF metrics of
    in-process handlers, as Lambda would have them) goes to stderr. Print the document
    after the block."""
    if not as_json:
        yield
        return
    import sys  # noqa: PLC0415

    with contextlib.redirect_stdout(sys.stderr):
        yield


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """``n`` and the noun, singular for one.

    >>> plural(1, "function"), plural(2, "call"), plural(1, "retry", "retries")
    ('1 function', '2 calls', '1 retry')
    >>> plural(12_000, "record")
    '12,000 records'
    """
    return f"{n:,} {noun if n == 1 else nouns or noun + 's'}"


def write_output(text: str, output: str | None) -> bool:
    """A command's single output: to the file ``-o`` names, else to stdout (nothing else goes
    there). Returns whether it went to a file, so the caller says so on stderr."""
    if output is None:
        click.echo(text, nl=False)
        return False
    with open(output, "w", encoding="utf-8") as fh:
        fh.write(text)
    return True


def load_any_plan(file: str) -> Plan:
    """A compiled plan from a ``.json`` plan or a pipeline file (validated and compiled; on
    problems they are printed and the command exits with 2, as :func:`load_or_exit`). A
    plan of another shardline's version is refused the same way, with the fix."""
    if file.endswith(".json"):
        from stream.plan import PlanVersionError  # noqa: PLC0415
        from stream.runtime import load_plan  # noqa: PLC0415

        try:
            return load_plan(file)
        except PlanVersionError as exc:
            click.echo(str(exc), err=True)
            raise SystemExit(EXIT_INVALID) from None
    from deploy.pipeline.config import compile_plan  # noqa: PLC0415

    return compile_plan(load_or_exit(file))
