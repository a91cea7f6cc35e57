"""The names of what a pipeline creates: functions, lease and window tables, the default
dead-letter queue, and a windowed function's scheduled flush (its period, rate and event).

Both the CloudFormation template and the local runner derive names from the plan with these, so
a stack deployed to AWS and a local run address the same resources the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "DEFAULT_FLUSH_S",
    "MAX_FUNCTION_NAME",
    "MAX_QUEUE_NAME",
    "dead_letter_queue_name",
    "flush_rate",
    "flush_seconds",
    "function_name",
    "lease_table_name",
    "stream_consumer_name",
    "window_table_name",
    "window_tables",
]

#: AWS's limits on the names: a Lambda function's name, an SQS queue's name.
MAX_FUNCTION_NAME = 64
MAX_QUEUE_NAME = 80
#: A window step's ``flush_s`` with ``state: dynamodb`` when the plan has none (a plan
#: compiled before the key): the runtime's default, ``processors.window.DEFAULT_FLUSH_S``.
DEFAULT_FLUSH_S = 60


def function_name(plan: Mapping[str, Any], function: str) -> str:
    """The Lambda function's name: the pipeline's name, then the function's.

    >>> function_name({"name": "clickstream"}, "archive-all")
    'clickstream-archive-all'
    """
    return f"{plan['name']}-{function}"


def dead_letter_queue_name(plan: Mapping[str, Any]) -> str:
    """The queue created for functions whose file names no ``on_failure``.

    >>> dead_letter_queue_name({"name": "clickstream"})
    'clickstream-dlq'
    """
    return f"{plan['name']}-dlq"


def lease_table_name(plan: Mapping[str, Any], function: str) -> str:
    """The lease table of one function's mapping: one per (pipeline, function).

    >>> lease_table_name({"name": "clickstream"}, "archive-all")
    'clickstream-archive-all-leases'
    """
    return f"{plan['name']}-{function}-leases"


def stream_consumer_name(plan: Mapping[str, Any], function: str) -> str:
    """The enhanced fan-out consumer registered for a function with ``consumer: efo``: the
    Lambda function's name (unique per stream, at most 64 of Kinesis's 128 characters).

    >>> stream_consumer_name({"name": "clickstream"}, "archive-all")
    'clickstream-archive-all'
    """
    return function_name(plan, function)


def window_table_name(plan: Mapping[str, Any], function: str) -> str:
    """The table of one function's window state (``state: dynamodb``): one per function.

    >>> window_table_name({"name": "shop"}, "purchases-per-user")
    'shop-purchases-per-user-windows'
    """
    return f"{plan['name']}-{function}-windows"


def window_tables(plan: Mapping[str, Any]) -> dict[str, str]:
    """function -> its window state table, for the functions with a ``state: dynamodb``
    window step, in file order.

    >>> window_tables({"name": "shop", "functions": {"a": {"processors": [
    ...     {"window": {"state": "dynamodb"}}]}, "b": {"route": ["x"]}}})
    {'a': 'shop-a-windows'}
    """
    out = {}
    for function, spec in plan["functions"].items():
        for entry in spec.get("processors") or ():
            window = entry.get("window") if isinstance(entry, dict) else None
            if isinstance(window, dict) and window.get("state", "dynamodb") == "dynamodb":
                out[function] = window_table_name(plan, function)
    return out


def flush_seconds(function: Mapping[str, Any]) -> int:
    """Seconds between one function's scheduled flushes (0: none): the ``flush_s`` of its
    last window step when that step keeps its state in DynamoDB. A flush ticks that step
    alone (:mod:`stream.flush`; ``validate`` refuses ``flush_s`` on an earlier one).

    >>> w = lambda **kw: {"window": {"state": "dynamodb", **kw}}
    >>> flush_seconds({"processors": [w(flush_s=0), w(flush_s=120)]})
    120
    >>> flush_seconds({"processors": [w()]}), flush_seconds({"processors": [w(flush_s=0)]})
    (60, 0)
    >>> flush_seconds({"processors": [{"window": {"state": "memory"}}]})
    0
    """
    windows = [
        entry["window"]
        for entry in function.get("processors") or ()
        if isinstance(entry, dict) and isinstance(entry.get("window"), dict)
    ]
    if not windows or windows[-1].get("state", "dynamodb") != "dynamodb":
        return 0
    flush = windows[-1].get("flush_s")
    return DEFAULT_FLUSH_S if flush is None else int(flush)


def flush_rate(seconds: int) -> str:
    """The EventBridge schedule of a flush every ``seconds`` (whole minutes). EventBridge
    takes ``rate(1 minute)`` but refuses ``rate(1 minutes)``, and the other way round from 2.

    >>> flush_rate(60), flush_rate(300)
    ('rate(1 minute)', 'rate(5 minutes)')
    """
    minutes = seconds // 60
    return f"rate({minutes} minute{'' if minutes == 1 else 's'})"
