"""How complex a field's wildcards are, as AWS judges when it accepts a pattern.

Why: EventBridge rejects a pattern whose wildcards would make matching slow ("Rule is too
complex - try using fewer wildcard characters or fewer repeating character sequences after a
wildcard character"), and a pattern validated here must not fail there. event-ruler's
``MachineComplexityEvaluator`` measures the worst case over every possible input value: how many
wildcard-pattern states the matcher can be in at once, counting a state that a ``*`` loops on
together with the state it leads to. This module runs the same measure on an automaton of the
field's wildcards (their characters between the JSON quotes that event-ruler matches too) by
subset construction over the characters they use, and :func:`too_complex` applies the limit.

The limit is not documented by AWS. :data:`LIMIT` is the largest value that accepts every pattern
AWS accepted in the AWS-validated cases (``["*/init/*", "*/dir/*"]`` reaches 10) and rejects the
one it rejected (``"*:*:*:*:*:event-bus/*"`` reaches 13). Validation-only: never imported at
runtime unless a pattern has a wildcard.
"""

from __future__ import annotations

from typing import Final

__all__ = ["LIMIT", "complexity", "too_complex"]

LIMIT: Final = 10
_STAR: Final = -1
_MAX_SETS: Final = 20_000  # subsets explored before giving up (and calling it too complex)


def _tokens(text: str) -> list[int]:
    """A wildcard's characters, quoted as event-ruler sees the JSON string; ``*`` is _STAR."""
    out = [ord('"')]
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            out.append(ord(text[i + 1]))
            i += 2
            continue
        out.append(_STAR if text[i] == "*" else ord(text[i]))
        i += 1
    return [*out, ord('"')]


def complexity(wildcards: list[str], cap: int = LIMIT) -> int:
    """The most states the field's wildcards can be in at once (stops early above ``cap``).

    >>> complexity(["arn:aws:events:us-east-1:*:event-bus/*"])
    5
    >>> complexity(["*:*:*:*:*:event-bus/*"]) > LIMIT
    True
    """
    patterns = [_tokens(text) for text in wildcards]

    def closure(states: set[tuple[int, int]]) -> frozenset[tuple[int, int]]:
        out, stack = set(states), list(states)
        while stack:
            k, i = stack.pop()
            if i < len(patterns[k]) and patterns[k][i] == _STAR and (k, i + 1) not in out:
                out.add((k, i + 1))
                stack.append((k, i + 1))
        return frozenset(out)

    alphabet = {c for p in patterns for c in p if c != _STAR} | {0}  # 0: any other character
    start = closure({(k, 0) for k in range(len(patterns))})
    seen, todo, worst = {start}, [start], 0
    while todo:
        current = todo.pop()
        for char in alphabet:
            moved = set()
            for k, i in current:
                if i < len(patterns[k]):
                    token = patterns[k][i]
                    if token == _STAR:
                        moved.add((k, i))
                    elif token == char:
                        moved.add((k, i + 1))
            after = closure(moved)
            live = sum(1 for k, i in after if i < len(patterns[k]))
            worst = max(worst, live)
            if worst > cap or len(seen) > _MAX_SETS:
                return max(worst, cap + 1)
            if after and after not in seen:
                seen.add(after)
                todo.append(after)
    return worst


def too_complex(wildcards: list[str]) -> bool:
    """Whether AWS would reject a field with these wildcards as too complex."""
    return complexity(wildcards) > LIMIT
