"""The root of the errors ``processors/`` raises on purpose.

Hierarchy (each class lives next to the code that raises it)::

    ShardlineError                      (stream.exceptions)
    └── ProcessorError                  the root of processors/
        ├── ProcessorContractError      (processors.chain) a step returned something other
        │                               than a record, a list of records or None; also a
        │                               TypeError
        ├── ExprError                   (processors.expr) an expression does not parse; also
        │                               a ValueError
        ├── PatternError                (processors.match) an invalid filter pattern; also a
        │                               ValueError
        └── LookupMiss, LookupFailed    (processors.lookup) also a RecordError (dead-lettered);
            LookupUnavailable           also a RetryableError (delivered again)

The second bases are what these classes were before they had a root here: callers that
catch them keep working, and the record/retry split of :mod:`stream.exceptions` decides a
lookup failure's fate.
"""

from __future__ import annotations

from stream.exceptions import ShardlineError

__all__ = ["ProcessorError"]


class ProcessorError(ShardlineError):
    """Root of the errors of ``processors/``."""
