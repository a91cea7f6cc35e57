"""A window key's text: how the value of a window step's key field is named in each
``window_id`` (``FUNCTION/KEY/START``) and in the window state.

The rule (README, "Windows"), which makes the text injective over the JSON values a key may
be (strings, numbers, booleans), so that two keys never share a ``window_id``:

* a string is its own text (``"u1"`` -> ``u1``), unless it starts with :data:`MARKER`;
* any other key is :data:`MARKER` and its canonical JSON: ``~1``, ``~1.5``, ``~true``;
* a string that starts with :data:`MARKER` is :data:`MARKER` and its JSON too (``"~a"`` ->
  ``~"~a"``), so that it can be told from a number or boolean (whose JSON never starts with
  a quote).

Numbers are canonical as DynamoDB's are: ``1`` and ``1.0`` are one number, so one key (text
``~1``, and the result's ``key`` is ``1``); ``-0.0`` is ``~0``; a number that is not
integral is its shortest round-trip text (``~0.1``). A non-finite number (``NaN``,
``Infinity``: no JSON value, and never equal to itself) is no key. The window state is keyed
by this text too, so ``1``, ``1.0`` and ``"1"`` are the windows their texts say (Python's
``1 == 1.0 == True`` never merges two of them).

>>> [key_text(k) for k in ("u1", 1, 1.0, "1", True, 0.5, "~x")]
['u1', '~1', '~1', '1', '~true', '~0.5', '~"~x"']
>>> [key_value(key_text(k)) for k in ("u1", 1.0, True, "~x")]
['u1', 1, True, '~x']
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["MARKER", "key_json", "key_of_json", "key_text", "key_value"]

#: What starts the text of a key that is not a plain string.
MARKER = "~"


def key_text(key: str | float | bool) -> str:
    """The key's text (the module docstring states the rule).

    Raises:
        ValueError: a number that is not finite (the window step dead-letters its record).
    """
    if isinstance(key, str):
        return key if not key.startswith(MARKER) else MARKER + json.dumps(key)
    if isinstance(key, bool):
        return MARKER + ("true" if key else "false")
    if isinstance(key, float):
        if not math.isfinite(key):
            msg = f"a key must be a finite number, got {key!r}"
            raise ValueError(msg)
        return MARKER + (str(int(key)) if key.is_integer() else repr(key))
    return MARKER + str(int(key))


def key_value(text: str) -> Any:
    """The key a text names (its canonical value: ``~1`` is ``1``), for the result's ``key``.

    >>> key_value("u1"), key_value("~2.5"), key_value('~"~a"')
    ('u1', 2.5, '~a')
    """
    if not text.startswith(MARKER):
        return text
    return json.loads(text[1:])


def key_json(text: str) -> str:
    """The JSON of the key a text names: how a window's state item holds its key (in its sort
    key ``w#START#KEY`` and its ``key``). The value, not the text, so that an item stays
    where it was before keys had texts: a table written by an earlier version, with number
    keys in its open windows, reads back into the same windows and is written to the same
    items (``1`` was and is ``w#START#1``; ``"~a"`` was and is ``w#START#"~a"``). A whole
    float key was written as ``1.0`` by that version: the store keeps such an item's own
    key JSON for its writes and claims (``DynamoDBStore._legacy``).

    >>> key_json("u1"), key_json("~1"), key_json('~"~a"')
    ('"u1"', '1', '"~a"')
    """
    return json.dumps(text if not text.startswith(MARKER) else key_value(text))


def key_of_json(stored: str) -> str:
    """The text of the key a state item holds (:func:`key_json`'s inverse; a number
    written as ``1.0`` by an earlier version is the key ``~1``)."""
    return key_text(json.loads(stored))
