"""FilterCriteria push-down: a function's leading ``match`` filters, as Lambda filter patterns.

When a function starts with ``filter: {match: ...}`` steps and says ``filter_pushdown:
true``, Lambda's event source mapping applies them before invoking the function, so dropped
records cost no invocation. It is an explicit choice because it is not only an optimisation:
AWS drops a record whose data is not JSON silently, where the function would dead-letter it
with the reason (validate says so in a note; ``run``, ``invoke`` and ``test`` drop the same
records). The steps stay in the chain as well (a record that passes AWS's filter passes
ours), and this module is conservative:

* the leading match filters are ANDed into one pattern by merging them where their fields
  do not overlap; the first filter that cannot be merged, and everything after it, stays
  in the function only (Lambda ORs its filters, it cannot AND them);
* a pattern using an operator that Lambda's filtering does not support is not pushed down:
  ``wildcard``, ``cidr`` and the ``anything-but`` forms with ``prefix``, ``suffix``,
  ``equals-ignore-case`` or ``wildcard`` ("Pipe support: No" in EventBridge's operator
  table, the same engine);
* a Kinesis record's JSON is under ``data`` in Lambda's filter, so each pattern is wrapped;
* dotted keys are split first (AWS joins ``a.b`` and ``a: {b}`` into one field), so two
  filters that name one field in the two spellings are not merged into one pattern.

>>> filter_criteria({"filter_pushdown": True, "processors": [
...     {"filter": {"match": {"event_type": ["click"]}}},
...     {"filter": {"match": {"amount": [{"numeric": [">", 0]}]}}},
...     {"filter": {"expr": "a"}}]})
[{'data': {'event_type': ['click'], 'amount': [{'numeric': ['>', 0]}]}}]
"""

from __future__ import annotations

import copy
from typing import Any

from processors.match import join_dotted_keys

__all__ = ["MAX_FILTERS", "filter_criteria", "pushable"]

#: Lambda's default quota of filters per event source mapping.
MAX_FILTERS = 5
_UNSUPPORTED = frozenset({"wildcard", "cidr"})
_UNSUPPORTED_BUT = frozenset({"prefix", "suffix", "equals-ignore-case", "wildcard"})


def pushable(pattern: Any) -> bool:
    """Whether Lambda's event filtering supports every operator ``pattern`` uses."""
    if isinstance(pattern, dict):
        for key, value in pattern.items():
            if key in _UNSUPPORTED:
                return False
            if key == "anything-but" and isinstance(value, dict) and _UNSUPPORTED_BUT & set(value):
                return False
            if not pushable(value):
                return False
        return True
    if isinstance(pattern, list):
        return all(pushable(item) for item in pattern)
    return True


def _joined(pattern: Any) -> Any:
    """The pattern with dotted keys split (``{"a.b": X}`` is ``{"a": {"b": X}}`` to AWS), so
    that two filters naming one field in the two spellings are seen to overlap."""
    if not isinstance(pattern, dict):
        return pattern
    joined, _ = join_dotted_keys(pattern)
    return {
        key: [_joined(alt) for alt in spec] if key == "$or" and isinstance(spec, list)
        else _joined(spec)
        for key, spec in joined.items()
    }  # fmt: skip


def _merge(into: dict[str, Any], pattern: dict[str, Any]) -> bool:
    """AND ``pattern`` into ``into`` in place when no field is matched twice."""
    for key, value in pattern.items():
        if key not in into:
            into[key] = copy.deepcopy(value)
        elif isinstance(into[key], dict) and isinstance(value, dict) and key != "$or":
            if not _merge(into[key], value):
                return False
        else:
            return False
    return True


def filter_criteria(function: dict[str, Any]) -> list[dict[str, Any]]:
    """The Lambda filter patterns for a compiled function (empty when nothing is pushed).

    Each pattern is a dict such as ``{"data": {...}}``; CloudFormation wants each as a JSON
    string in ``FilterCriteria.Filters[].Pattern``.
    """
    if not function.get("filter_pushdown"):
        return []
    merged: dict[str, Any] = {}
    for entry in function.get("processors", ()):
        match = (entry.get("filter") or {}).get("match") if isinstance(entry, dict) else None
        if not isinstance(match, dict) or not pushable(match):
            break
        trial = copy.deepcopy(merged)
        if not _merge(trial, _joined(match)):
            break
        merged = trial
    return [{"data": merged}] if merged else []
