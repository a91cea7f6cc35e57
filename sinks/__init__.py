"""The sink contract and the sinks. Backends are imported when a pipeline uses them."""

from __future__ import annotations

from sinks.base import OK, DeadLetter, Ordering, Outcome, Sink, Status, permanent, retryable

__all__ = ["OK", "DeadLetter", "Ordering", "Outcome", "Sink", "Status", "permanent", "retryable"]
