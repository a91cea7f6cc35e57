"""``${VAR}`` interpolation of string values from the environment.

Secrets and per-stage values (endpoints, bucket suffixes) stay out of the pipeline file:

- ``${VAR}`` is the value of ``VAR``; unset is an error naming the variable.
- ``${VAR:-default}`` is ``default`` when ``VAR`` is unset or empty (as in the shell).
- ``$$`` is a literal ``$``; a ``$`` not followed by ``{`` or ``$`` is kept as is.

>>> interpolate("${HOST:-localhost}:9200", {})
('localhost:9200', [])
>>> interpolate("cost: $$5 at ${HOST}", {"HOST": "h"})
('cost: $5 at h', [])
>>> interpolate("${NOPE}", {})[1]
["environment variable 'NOPE' is not set (set it, or write ${NOPE:-default})"]
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def interpolate(text: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    """Replace every ``${...}`` in ``text`` and return the result and the problems.

    Every broken reference is reported (not only the first); it is left in the result
    unchanged, so the caller can still show the value.
    """
    if "$" not in text:
        return text, []
    out: list[str] = []
    errors: list[str] = []
    i = 0
    while i < len(text):
        j = text.find("$", i)
        if j < 0:
            out.append(text[i:])
            break
        out.append(text[i:j])
        nxt = text[j + 1 : j + 2]
        if nxt == "$":
            out.append("$")
            i = j + 2
            continue
        if nxt != "{":
            out.append("$")
            i = j + 1
            continue
        end = text.find("}", j + 2)
        if end < 0:
            errors.append("unterminated '${' (close it with '}', or write '$$' for a literal '$')")
            out.append(text[j:])
            break
        body = text[j + 2 : end]
        name, has_default, default = body.partition(":-")
        value = env.get(name)
        if not _NAME.fullmatch(name):
            errors.append(
                f"invalid reference '${{{body}}}': expected ${{NAME}} or ${{NAME:-default}} "
                "(NAME: letters, digits, underscores)"
            )
            out.append(text[j : end + 1])
        elif has_default and not value:
            out.append(default)
        elif value is None:
            errors.append(
                f"environment variable '{name}' is not set (set it, or write ${{{name}:-default}})"
            )
            out.append(text[j : end + 1])
        else:
            out.append(value)
        i = end + 1
    return "".join(out), errors
