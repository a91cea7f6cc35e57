"""Names a module exports but imports only on first use (PEP 562's module ``__getattr__``).

Why: the handler's import (a Lambda cold start) must not load ``typing`` or modules the
pipeline does not use, yet ``from stream import Record`` and ``from stream.event import
KinesisEvent`` must keep working for users and plugins. One helper, so each module states only
which names come from where.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not typing's: the handler's import never loads typing (ARCHITECTURE.md)
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["lazy_names"]


def lazy_names(module: str, sources: Mapping[str, str]) -> Callable[[str], object]:
    """A ``__getattr__`` for ``module`` that imports each name of ``sources`` (name -> the
    module that defines it) on first use, then keeps it in ``module`` (later reads cost
    nothing); any other name is an ``AttributeError``, as Python's own lookup says it.

    >>> getter = lazy_names("stream", {"pad_sequence": "stream.records"})
    >>> getter("pad_sequence").__name__
    'pad_sequence'
    >>> getter("nope")
    Traceback (most recent call last):
    ...
    AttributeError: module 'stream' has no attribute 'nope'
    """

    def __getattr__(name: str) -> object:
        source = sources.get(name)
        if source is None:
            msg = f"module {module!r} has no attribute {name!r}"
            raise AttributeError(msg)
        from importlib import import_module  # noqa: PLC0415

        value = getattr(import_module(source), name)
        setattr(sys.modules[module], name, value)
        return value

    return __getattr__
