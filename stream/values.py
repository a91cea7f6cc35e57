"""Value semantics for the slotted classes on the handler's import path, written once.

Why not ``@dataclass``: the decorator writes each class's methods as source and compiles it
at import (``__init__``, ``__repr__``, ``__eq__``, and for a frozen class ``__hash__``,
``__setattr__``, ``__delattr__``, ``__getstate__``, ``__setstate__``), then builds a slotted
class a second time. Measured with cachegrind, the six classes of the Lambda handler's path
(the chain's step and failure and result, the batch result, the metrics' measurements, a
build failure) were 12% of the instructions of importing ``stream.lambda_handler``: cold
start, paid by every new Lambda environment. Here each class writes its ``__init__`` (typed,
as the fields read) and inherits the rest, which behaves as the dataclass methods did: equal
when of the same class with equal fields, a ``Name(field=value, ...)`` repr, and for
:class:`FrozenValue` hashable and read-only (``dataclasses.FrozenInstanceError``), copyable
and picklable.

The fields are the class's ``__slots__``, in order.
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError  # loaded already: orjson imports dataclasses

TYPE_CHECKING = False  # not typing's: the handler's import never loads typing (ARCHITECTURE.md)
if TYPE_CHECKING:
    from typing import Any, Self

__all__ = ["FrozenValue", "Value"]


class Value:
    """Equality and repr over ``__slots__``, as a ``@dataclass(slots=True)``."""

    __slots__: tuple[str, ...] = ()

    def _fields(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return self._fields() == other._fields()
        return NotImplemented

    __hash__: Any = None  # mutable: not hashable, as a dataclass

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__qualname__}({fields})"


class FrozenValue(Value):
    """:class:`Value`, read-only and hashable, as a ``@dataclass(frozen=True, slots=True)``.

    ``__init__`` sets the fields with ``object.__setattr__``, as the dataclass's did.
    """

    __slots__: tuple[str, ...] = ()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __setattr__(self, name: str, value: Any) -> None:
        msg = f"cannot assign to field {name!r}"
        raise FrozenInstanceError(msg)

    def __delattr__(self, name: str) -> None:
        msg = f"cannot delete field {name!r}"
        raise FrozenInstanceError(msg)

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` to some fields, as ``dataclasses.replace``.

        For a class whose ``__init__`` takes each field under its own name.
        """
        fields = {name: getattr(self, name) for name in self.__slots__}
        return type(self)(**{**fields, **changes})

    def __replace__(self, **changes: Any) -> Self:
        """``copy.replace`` (Python 3.13): :meth:`replace`."""
        return self.replace(**changes)

    def __getstate__(self) -> tuple[Any, ...]:
        return self._fields()

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for name, value in zip(self.__slots__, state, strict=True):
            object.__setattr__(self, name, value)
