"""The processor contract, the chain runner, the built-ins and the plugin registry.

Built-in processors (``filter``, ``enrich``, ``route``) are imported by the registry when a
pipeline names them, not here.
"""

from __future__ import annotations

from processors.chain import Chain, ChainResult, Step, StepFailure
from stream.lazy import lazy_names

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


# the contract's Protocol needs typing, which a cold start does not load: imported on first use
__getattr__ = lazy_names(__name__, dict.fromkeys(_BASE, "processors.base"))
