"""The root of the errors the operator's side raises on purpose.

Every error of ``deploy/`` derives from :class:`DeployError`, itself a
:class:`stream.exceptions.ShardlineError`, so the ``shardline`` command catches ours once (in
:class:`deploy.cli.main._Main`): one line ``error: MESSAGE`` on stderr and the error's
:attr:`~DeployError.exit_code`. Anything else that escapes a command is a bug or an AWS
surprise and takes the "unexpected error" path (its class name, and ``--debug`` for the
traceback).

Hierarchy (each class lives next to the code that raises it)::

    ShardlineError                       (stream.exceptions)
    └── DeployError                      the root of deploy/
        ├── ConfigError                  (deploy.pipeline.problems) the pipeline file is
        │                                invalid: every problem, with its line; exit 2
        ├── PackageError                 (deploy.aws.package) the Lambda zip cannot be built
        ├── StackError                   (deploy.aws.stack) the stack cannot be deployed or
        │                                destroyed
        ├── PriceError                   (deploy.insights.cost) cannot price; also a ValueError
        ├── ReportError                  (deploy.insights.report) no metrics to report; also
        │                                a ValueError
        ├── EventError                   (deploy.local.invoke) the saved event is unreadable;
        │                                also a ValueError
        ├── PartitionKeyError            (deploy.local.produce) a line has no usable key; also
        │                                a ValueError
        ├── ReplayError                  (deploy.ops.replay) the replay asked for cannot run:
        │                                no archive, an unknown function or sink; exit 2
        └── RunError                     (deploy.local.run) the functions or settings asked for
                                         do not fit the plan or the endpoint; also a
                                         LookupError; exit 2

The classes that are also a ``ValueError`` or ``LookupError`` were one before they had a
root here; the second base keeps the callers that catch that working.
"""

from __future__ import annotations

from stream.exceptions import ShardlineError

__all__ = ["EXIT_ERROR", "EXIT_USAGE", "DeployError"]

#: The CLI's exit status for one of our errors.
EXIT_ERROR = 1
#: ... and for one that says the command's input is wrong, as for a usage error.
EXIT_USAGE = 2


class DeployError(ShardlineError):
    """Root of the errors of ``deploy/``; the message names the cause and the fix.

    Attributes:
        exit_code: the ``shardline`` command's exit status when this error ends it.
    """

    exit_code: int = EXIT_ERROR
