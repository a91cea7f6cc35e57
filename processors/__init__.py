"""The processor contract, the chain runner, the built-ins and the plugin registry.

Built-in processors (``filter``, ``enrich``, ``route``) are imported by the registry when a
pipeline names them, not here.
"""

from __future__ import annotations

from processors.base import BatchAware, Processor, ProcessorResult
from processors.chain import Chain, ChainResult, Step, StepFailure

__all__ = [
    "BatchAware",
    "Chain",
    "ChainResult",
    "Processor",
    "ProcessorResult",
    "Step",
    "StepFailure",
]
