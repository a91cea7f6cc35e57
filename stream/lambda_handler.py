"""The Lambda entry point: ``stream.lambda_handler.handler``.

The compiled plan is read and the function's chain and sinks are built once per cold start
(module import), then reused by every warm invocation. Nothing of one invocation is kept
on the runner: each batch's outcome is a fresh result object.

Each invocation prints the batch's CloudWatch metrics (:mod:`stream.metrics`, once) and
its JSON log lines (:mod:`stream.logs`) to stdout, which Lambda sends to CloudWatch Logs.

Environment:
    SHARDLINE_PIPELINE: path of the compiled plan (default: ``pipeline.json`` beside this
        module, where ``shardline deploy`` puts it in the zip).
    SHARDLINE_FUNCTION: the function to run (default: the plan's only function).
    SHARDLINE_METRICS: ``1`` or ``0`` turns metrics on or off over the plan's ``metrics``
        (a plan without that setting emits them in Lambda only).
    SHARDLINE_LOG_LEVEL: the log level (default: ``AWS_LAMBDA_LOG_LEVEL``, else INFO).
"""

from __future__ import annotations

import gc
import os

#: Inside Lambda (or when told where the plan is) the import builds the runner: the init
#: phase runs at full CPU before the first invocation is timed.
_BUILD_AT_IMPORT = bool(
    os.environ.get("SHARDLINE_PIPELINE") or os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
)
if _BUILD_AT_IMPORT:
    # No collections while the cold start imports and builds: what it makes lives as long
    # as the process (runner() freezes it), and each collection would walk the runtime's
    # objects and ours again, 5% of the import's instructions (bench coldstart). Turned
    # back on below, built or not, unless it was off already.
    _COLLECTING = gc.isenabled()
    gc.disable()

from stream.logs import configure as configure_logs  # noqa: E402  # after gc.disable()
from stream.runtime import build_runner, load_plan  # noqa: E402

TYPE_CHECKING = False  # not typing's: the handler's import never loads typing (ARCHITECTURE.md)
if TYPE_CHECKING:
    from typing import Any

    from stream.batch import BatchResponse, BatchRunner
    from stream.shapes import FlushResponse

__all__ = ["handler", "runner"]

# os.path, not pathlib: pathlib (with fnmatch, urllib.parse, ipaddress) is milliseconds of
# cold start that nothing else in the function needs
_DEFAULT_PLAN = os.path.join(os.path.dirname(__file__), "pipeline.json")
_runner: BatchRunner | None = None


def runner() -> BatchRunner:
    """The function's runner, built on first use (the cold start) and then reused."""
    global _runner  # noqa: PLW0603  # the one cold-start cache Lambda reuses while warm
    if _runner is None:
        configure_logs()
        plan = load_plan(os.environ.get("SHARDLINE_PIPELINE") or _DEFAULT_PLAN)
        _runner = build_runner(plan, os.environ.get("SHARDLINE_FUNCTION") or None)
        # What init built lives as long as the process: keep it out of later collections.
        # The import ran with the collector off, so this also keeps the few garbage cycles
        # it left (about 340 objects, 54 KB, stdlib classes' temporaries): collecting them
        # first would walk every object made since, 2.5 M instructions (bench coldstart).
        gc.freeze()
    return _runner


def handler(event: dict[str, Any], context: Any = None) -> BatchResponse | FlushResponse:
    """Process one Kinesis batch; return ``{"batchItemFailures": [...]}``. A scheduled
    window flush (``{"shardline": "flush", ...}``, which no Kinesis event has) runs
    :meth:`BatchRunner.flush` instead (:mod:`stream.flush`): one dict lookup per batch."""
    if event.get("shardline") == "flush":
        return runner().flush(event, context)
    return runner().invoke(event, context)


if _BUILD_AT_IMPORT:
    try:
        runner()
    finally:
        if _COLLECTING:
            gc.enable()
