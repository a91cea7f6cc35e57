"""What a compiled plan asks of AWS that AWS refuses, found from the plan alone.

``validate`` (through :func:`deploy.pipeline.config.parse_config`) reports these at their
lines, and :func:`deploy.aws.cloudformation.deploy_problems` reports them again for a plan
made another way, so that a file ``validate`` accepts is one ``template`` and ``deploy``
accept too. Each rule is AWS's:

* one DynamoDB table has one key schema: two sinks (or a sink and a lookup, a lease table or
  a window's state table) that name one table with two key schemas cannot both be right,
  and the template would create it with the first one's, so every write of the other sink
  would be refused;
* Lambda sends a mapping's failed batches only to standard SQS queues, never to a FIFO one;
* a filter pattern of an event source mapping is at most 4,096 characters.

What needs the whole template (the stack's 500 resources) stays in ``deploy_problems``.

>>> plan = {"name": "p", "sinks": {
...     "a": {"type": "dynamodb", "table": "t1", "key": "id", "mode": "latest"},
...     "b": {"type": "dynamodb", "table": "t1", "key": "id", "mode": "append"}},
...     "functions": {}}
>>> [(path, message.split(",")[0]) for path, message in plan_problems(plan)]
[(('sinks', 'b'), "table 't1' would be keyed by 'id' with sort key '_position'")]
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from deploy.names import dead_letter_queue_name, lease_table_name, window_tables
from deploy.pipeline.problems import format_path

if TYPE_CHECKING:
    from collections.abc import Mapping

    from deploy.pipeline.problems import Path

__all__ = ["MAX_PATTERN", "filter_pattern", "on_failure_target", "plan_problems"]

#: The most characters of one filter pattern of an event source mapping (Lambda's limit).
MAX_PATTERN = 4096


def filter_pattern(pattern: Any) -> str:
    """A filter pattern as the mapping's ``FilterCriteria`` holds it: compact JSON text."""
    return json.dumps(pattern, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def on_failure_target(plan: Mapping[str, Any], function: str) -> tuple[str, str]:
    """``("sqs", queue)`` or ``("s3", bucket)``: where the function's mapping gives up to
    (the queue deploy makes, ``<name>-dlq``, when the file names no ``on_failure``)."""
    name = plan["functions"][function].get("on_failure")
    spec = plan["sinks"].get(name) if name else None
    if spec is not None and spec.get("type") == "s3":
        return "s3", spec["bucket"]
    if spec is not None and spec.get("type") == "sqs":
        return "sqs", spec["queue"]
    return "sqs", dead_letter_queue_name(plan)


def plan_problems(plan: Mapping[str, Any]) -> list[tuple[Path, str]]:
    """What AWS would refuse in ``plan``, each as (the path it is about, the message with
    the fix), in file order; empty if nothing."""
    problems: list[tuple[Path, str]] = []
    for function, spec in plan["functions"].items():
        kind, target = on_failure_target(plan, function)
        if kind == "sqs" and target.endswith(".fifo"):
            problems.append((
                ("functions", function, "on_failure"),
                f"queue {target!r} is a FIFO queue; Lambda sends failed batches only to "
                "standard queues: use a standard queue or an s3 sink",
            ))  # fmt: skip
        for pattern in spec.get("filter_criteria") or ():
            size = len(filter_pattern(pattern))
            if size > MAX_PATTERN:
                problems.append((
                    ("functions", function, "filter_pushdown"),
                    f"the leading match filters are {size} characters as a Lambda filter "
                    f"pattern, at most {MAX_PATTERN} allowed: shorten them or set "
                    "filter_pushdown: false",
                ))  # fmt: skip
    return problems + _table_problems(plan)


def _table_problems(plan: Mapping[str, Any]) -> list[tuple[Path, str]]:
    """Tables named twice in one file must agree on their key schema."""
    problems: list[tuple[Path, str]] = []
    seen: dict[str, tuple[str, tuple[str, str]]] = {}  # table: (where, (hash, sort))

    def need(table: str, path: Path, what: str, schema: tuple[str, str], why: str) -> None:
        """``what`` (``table``, ``its lease table``...) named ``table`` needs ``schema``."""
        where = format_path(path) + ("" if what == "table" else f" ({what})")
        if table not in seen:
            seen[table] = (where, schema)
            return
        first, known = seen[table]
        if known != schema:
            problems.append((
                path,
                f"{what} {table!r} {why} {_schema(schema)}, but {first} needs it keyed by "
                f"{_schema(known)}: one table has one key schema; use another table",
            ))  # fmt: skip

    for sink, spec in plan["sinks"].items():
        if spec.get("type") == "dynamodb":
            sort = "_position" if spec.get("mode") == "append" else ""
            schema = (spec["key"], sort)
            need(spec["table"], ("sinks", sink), "table", schema, "would be keyed by")
    for function in plan["functions"]:
        name = lease_table_name(plan, function)
        need(name, ("functions", function), "its lease table", ("leaseKey", ""), "is keyed by")
    for function, name in window_tables(plan).items():
        what = "its window state table"
        need(name, ("functions", function), what, ("shard", "window"), "is keyed by")
    for function, fn in plan["functions"].items():
        for i, entry in enumerate(fn.get("processors") or ()):
            lookup = (entry.get("enrich") or {}).get("lookup") if isinstance(entry, dict) else None
            if lookup and lookup.get("table") in seen:
                path: Path = ("functions", function, "processors", i, "enrich", "lookup")
                key = lookup.get("table_key") or lookup["key"]
                need(lookup["table"], path, "table", (key, ""), "is read as keyed by")
    return problems


def _schema(schema: tuple[str, str]) -> str:
    key, sort = schema
    return f"{key!r} with sort key {sort!r}" if sort else f"{key!r} alone"
