"""A configured step of a processor chain and what it reports for a record it cannot process.

These are data shared by the chain runner (:mod:`processors.chain`) and the fused runs that
replace consecutive built-in steps (:mod:`processors.fused`); they live apart from both so
that neither imports the other to name them.
"""

from __future__ import annotations

import sys
from types import FunctionType, MethodType

from stream.values import FrozenValue

TYPE_CHECKING = False  # not typing's: the handler's import never loads typing (ARCHITECTURE.md)
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from processors.base import Processor
    from stream.records import Record

__all__ = ["EVENT_STEP", "TRACKED_BUILTINS", "Step", "StepFailure"]

#: The step name of failures found while decoding the event (corrupt aggregates).
EVENT_STEP = "event"


class Step(FrozenValue):
    """One configured processor.

    Attributes:
        name: where it stands in the file, e.g. ``processors[2].filter`` (used in dead
            letters and metrics).
        run: what the chain calls per record (the processor, or its bound ``__call__``).
        prepare: its batch hook, if it is batch-aware.
        processor: the processor as configured.
        tracked: the processor is a built-in that marks every change it makes to a
            document (``set_json``/``touch``), so the chain need not. Any other step is
            assumed to have changed the decoded document of every record it returns: a
            plugin that edits ``record.as_dict()`` in place and forgets ``touch()`` would
            otherwise have sinks read the old bytes. Only :meth:`of` sets it.
    """

    __slots__ = ("name", "prepare", "processor", "run", "tracked")

    name: str
    run: Processor
    prepare: Callable[[Sequence[Record]], None] | None
    processor: object
    tracked: bool

    def __init__(
        self,
        name: str,
        run: Processor,
        prepare: Callable[[Sequence[Record]], None] | None = None,
        processor: object = None,
        tracked: bool = False,
    ) -> None:
        setattr_ = object.__setattr__  # frozen (stream.values)
        setattr_(self, "name", name)
        setattr_(self, "run", run)
        setattr_(self, "prepare", prepare)
        setattr_(self, "processor", processor)
        setattr_(self, "tracked", tracked)

    @classmethod
    def of(cls, name: str, processor: Processor) -> Step:
        """A step for this processor, picking up its ``prepare`` hook if it has one.

        For an instance of a class with a Python ``__call__``, the step keeps the bound
        method: calling it directly skips the type's call slot lookup, which costs about
        as much as a small processor's body.
        """
        call = getattr(type(processor), "__call__", None)  # noqa: B004  # the Python method
        run = MethodType(call, processor) if isinstance(call, FunctionType) else processor
        tracked = any(type(processor) is _loaded(path) for path in TRACKED_BUILTINS)
        return cls(name, run, getattr(processor, "prepare", None), processor, tracked)


#: The built-in processor classes (``module:Class``) that mark each change they make to a
#: document; exactly these classes, not subclasses (a subclass may edit in place).
TRACKED_BUILTINS = (
    "processors.filter:Filter",
    "processors.route:Route",
    "processors.enrich:Enrich",
    "processors.enrich:EnrichLookup",
    "processors.schema:Schema",  # checks without changing, or replaces with set_json
    "processors.window:Window",  # changes no document: results are derived records
    "processors.session:SessionWindow",  # the same, for session windows
)


def _loaded(path: str) -> object:
    """The class at ``module:Class`` if its module is loaded (else nothing can be one)."""
    module, _, name = path.partition(":")
    return getattr(sys.modules.get(module), name, None)


class StepFailure(FrozenValue):
    """A record that a step could not process.

    Attributes:
        record: the record as it reached the step.
        step: the step's name.
        error: what was raised (or built, for a wrong return value).
        retryable: whether delivering it again may succeed.
    """

    __slots__ = ("error", "record", "retryable", "step")

    record: Record
    step: str
    error: BaseException
    retryable: bool

    def __init__(self, record: Record, step: str, error: BaseException, retryable: bool) -> None:
        setattr_ = object.__setattr__  # frozen (stream.values)
        setattr_(self, "record", record)
        setattr_(self, "step", step)
        setattr_(self, "error", error)
        setattr_(self, "retryable", retryable)
