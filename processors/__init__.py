"""The processor contract, the chain runner, the built-ins and the plugin registry.

Built-in processors (``filter``, ``enrich``, ``route``) are imported by the registry when a
pipeline names them, not here.
"""

from __future__ import annotations

from processors.chain import Chain, ChainResult, Step, StepFailure

TYPE_CHECKING = False  # not typing's: the handler's import never loads typing (ARCHITECTURE.md)
if TYPE_CHECKING:
    from processors.base import BatchAware, Processor, ProcessorResult

__all__ = [
    "BatchAware",
    "Chain",
    "ChainResult",
    "Processor",
    "ProcessorResult",
    "Step",
    "StepFailure",
]

_BASE = frozenset({"BatchAware", "Processor", "ProcessorResult"})


def __getattr__(name: str) -> object:
    """The contract's types, from :mod:`processors.base` on first use: its ``Protocol``
    needs typing, which the handler's import does not load otherwise (a cold start)."""
    if name in _BASE:
        from processors import base  # noqa: PLC0415  # typing: not at cold start

        return getattr(base, name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
