"""Typed reads of one mapping in the pipeline file, reporting what was expected.

Every section validator reads its keys through :class:`Fields`, so the wording of type,
range, enum and unknown-key messages is the same across the whole file:

- ``unknown key 'idx' (did you mean 'id'?)``, else the allowed keys;
- ``expected an integer, got 'abc'``; booleans are never integers;
- ``expected one of gzip, none, got 'zip'``;
- ``must be between 1 and 900, got 0``.

A read returns the default (or ``None``) when the value is absent or wrong, so validation
keeps going and reports everything in one pass.
"""

from __future__ import annotations

import difflib
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from deploy.pipeline.problems import Path, Reporter
    from deploy.pipeline.spec import Key


def describe(value: Any) -> str:
    """How a wrong value is shown in a message: YAML spelling for scalars, kind otherwise.

    >>> describe("abc"), describe(True), describe(None), describe([1]), describe(2.5)
    ("'abc'", 'true', 'null', 'a list', '2.5')
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return str(value)


def suggest(word: str, choices: Iterable[str]) -> str | None:
    """The closest choice to a misspelt ``word``, if one is close enough."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return match[0] if match else None


def unknown(kind: str, word: str, choices: Sequence[str], label: str = "allowed") -> str:
    """``unknown key 'idx' (did you mean 'id'?)``, or the list of choices when none is close.

    >>> unknown("key", "idx", ["id", "index"])
    "unknown key 'idx' (did you mean 'id'?)"
    >>> unknown("key", "zzz", ["id", "index"])
    "unknown key 'zzz' (allowed: id, index)"
    """
    close = suggest(word, choices)
    if close is not None:
        return f"unknown {kind} {word!r} (did you mean {close!r}?)"
    return f"unknown {kind} {word!r} ({label}: {', '.join(choices) or 'none'})"


def as_mapping(
    r: Reporter, path: Path, value: Any, what: str = "a mapping"
) -> dict[str, Any] | None:
    """``value`` if it is a mapping, else report ``expected <what>`` and return None."""
    if isinstance(value, dict):
        return value
    r.error(path, f"expected {what}, got {describe(value)}")
    return None


class Fields:
    """Reads the keys of one mapping at ``path``; unknown keys are reported on creation."""

    def __init__(self, r: Reporter, path: Path, data: dict[str, Any], allowed: Sequence[str]):
        self.r = r
        self.path = path
        self.data = data
        for key in data:
            if key not in allowed:
                self.r.error((*path, key), unknown("key", key, allowed))

    def has(self, key: str) -> bool:
        """Whether ``key`` is given with a non-null value."""
        return self.data.get(key) is not None

    def at(self, key: str) -> Path:
        """The path of ``key`` in this mapping."""
        return (*self.path, key)

    def _get(self, key: str, required: bool) -> Any:
        value = self.data.get(key)
        if value is None and required:
            message = "required, but empty" if key in self.data else "required field is missing"
            self.r.error(self.at(key), message)
        return value

    def text(
        self,
        key: str,
        *,
        required: bool = False,
        default: str | None = None,
        check: Callable[[str], str | None] | None = None,
    ) -> str | None:
        """A string; ``check`` returns a message when the string is malformed."""
        value = self._get(key, required)
        if value is None:
            return default
        if not isinstance(value, str):
            self.r.error(self.at(key), f"expected a string, got {describe(value)}")
            return default
        if not value and required:
            self.r.error(self.at(key), "required, but empty")
            return default
        if check is not None:
            problem = check(value)
            if problem is not None:
                self.r.error(self.at(key), problem)
        return value

    def integer(
        self,
        key: str,
        *,
        default: int | None,
        lo: int,
        hi: int | None = None,
        required: bool = False,
        multiple_of: int | None = None,
        why: str | None = None,
    ) -> int | None:
        """An integer in ``lo..hi`` (inclusive; no upper bound when ``hi`` is None), and a
        multiple of ``multiple_of`` when given (``why`` says why, in the message).

        A boolean or a float is not an integer, even ``256.0``.
        """
        value = self._get(key, required)
        if value is None:
            return default
        if not isinstance(value, int) or isinstance(value, bool):
            self.r.error(self.at(key), f"expected an integer, got {describe(value)}")
            return default
        if hi is None and value < lo:
            self.r.error(self.at(key), f"must be at least {lo}, got {value}")
            return default
        if hi is not None and not lo <= value <= hi:
            self.r.error(self.at(key), f"must be between {lo} and {hi}, got {value}")
            return default
        if multiple_of is not None and value % multiple_of:
            reason = f" ({why})" if why else ""
            self.r.error(self.at(key), f"must be a multiple of {multiple_of}{reason}, got {value}")
            return default
        return value

    def flag(self, key: str, *, default: bool) -> bool:
        """A YAML boolean (true/false, or YAML 1.1 yes/no/on/off), never a quoted string."""
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.r.error(self.at(key), f"expected true or false, got {describe(value)}")
            return default
        return value

    def choice(self, key: str, choices: Sequence[str], *, default: str) -> str:
        """One of ``choices``; a near miss gets a suggestion."""
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, str) or value not in choices:
            message = f"expected one of {', '.join(choices)}, got {describe(value)}"
            close = suggest(value, choices) if isinstance(value, str) else None
            self.r.error(self.at(key), message + (f" (did you mean {close!r}?)" if close else ""))
            return default
        return value

    def read(self, key: str, spec: Key, check: Callable[[str], str | None] | None = None) -> Any:
        """``key`` read as :mod:`deploy.pipeline.spec` describes it: its kind, bounds,
        choices and default; ``check`` adds a string's own rule (a name, a template)."""
        if spec.kind == "integer":
            if spec.minimum is None:
                msg = f"spec of {key!r}: an integer key needs a minimum"
                raise TypeError(msg)
            return self.integer(
                key,
                default=spec.default,
                lo=spec.minimum,
                hi=spec.maximum,
                required=spec.required,
                multiple_of=spec.multiple_of,
                why=spec.rule,
            )
        if spec.kind == "enum":
            return self.choice(key, spec.enum, default=spec.default)
        if spec.kind == "boolean":
            return self.flag(key, default=spec.default)
        if spec.kind == "string":
            if check is None and spec.pattern is not None and spec.rule is not None:
                check = _name_rule(spec.pattern, spec.rule)  # the spec's rule, wherever read
            return self.text(key, required=spec.required, default=spec.default, check=check)
        if spec.kind == "object":
            return self.mapping(key, required=spec.required)
        msg = f"spec of {key!r}: a {spec.kind} key is read by its section's own code"
        raise TypeError(msg)

    def mapping(self, key: str, *, required: bool = False) -> dict[str, Any] | None:
        """A nested mapping, or None (reported when required or of the wrong type)."""
        value = self._get(key, required)
        if value is None:
            return None
        return as_mapping(self.r, self.at(key), value)


def _name_rule(pattern: str, rule: str) -> Callable[[str], str | None]:
    """The check of a name whose pattern and rule the spec states (a table AWS names)."""
    regex = re.compile(pattern)

    def check(value: str) -> str | None:
        return None if regex.fullmatch(value) else f"invalid name {value!r}: {rule}"

    return check
