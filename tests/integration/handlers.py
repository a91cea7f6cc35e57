"""Small Lambda handlers that the worker tests run under awslambdaric, one behaviour each.

They are imported by the runtime processes (``tests.integration.handlers.ok``), never by
the tests themselves.
"""

from __future__ import annotations

import os
import time
from typing import Any

LAMBDA_VARIABLES = (
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_REGION",
    "LAMBDA_TASK_ROOT",
    "SHARDLINE_FUNCTION",
    "TMPDIR",
    "_HANDLER",
)


def ok(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Echo the event with what the runtime gave: its pid, context and environment."""
    return {
        "pid": os.getpid(),
        "event": event,
        "request_id": context.aws_request_id,
        "function_arn": context.invoked_function_arn,
        "memory_mb": context.memory_limit_in_mb,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "env": {name: os.environ.get(name) for name in LAMBDA_VARIABLES},
    }


def error(event: dict[str, Any], context: Any) -> None:
    """Raise: an unhandled exception, reported through ``/invocation/{id}/error``."""
    msg = f"cannot handle {event!r}"
    raise ValueError(msg)


def slow(event: dict[str, Any], context: Any) -> int:
    """Sleep ``sleep_s`` seconds (to run past the timeout), then return the pid."""
    time.sleep(event.get("sleep_s", 0))
    return os.getpid()


def slow_batch(event: dict[str, Any], context: Any) -> int:
    """Write the pid to ``pid_file``, work for ``sleep_s`` seconds, then write ``done_file``:
    a batch whose late writes would land after its runner died.

    The pid file appears whole (written aside, then renamed): the runner kills itself as
    soon as it exists and the test reads it at once, so an ``open`` that created it empty
    before the write raced with that read."""
    aside = event["pid_file"] + ".part"
    with open(aside, "w") as out:
        out.write(str(os.getpid()))
    os.replace(aside, event["pid_file"])
    time.sleep(event["sleep_s"])
    with open(event["done_file"], "w") as out:
        out.write("late write")
    return os.getpid()


def crash(event: dict[str, Any], context: Any) -> int:
    """Exit the runtime process at once with ``exit`` as status, else return the pid."""
    if "exit" in event:
        os._exit(event["exit"])
    return os.getpid()
