"""The ``shardline`` command: one module per command group, the only code that prints or exits.

:mod:`~deploy.cli.main` defines the group and the pipeline commands (validate, compile,
template, package, invoke, produce, run, status); the others add their groups to it. Each
command imports what it needs inside its function, so ``shardline --help`` stays fast.
"""

from deploy.cli.main import main

__all__ = ["main"]
