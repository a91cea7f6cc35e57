"""A scheduled flush's unit of output: the results a tick closed on one quiet shard
(issue 16, /work/notes/flush-design.md)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TICK_SUB_BASE = 10**11  # synthetic sub-sequence numbers: 10**11 + T, past any KPL sub


@dataclass(frozen=True, slots=True)
class Emission:
    """One pending emission of a flush: kept in the quiet shard's partition until acked."""

    shard_id: str
    tick: int  # the shard's tick number T (1, 2, ...)
    sequence_number: str  # the quiet shard's last applied sequence number
    sub_sequence_number: int  # TICK_SUB_BASE + tick
    results: tuple[dict[str, Any], ...]  # the result documents, in order


__all__ = ["TICK_SUB_BASE", "Emission"]  # below the shared text (flushapi.md): the exports
