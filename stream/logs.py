"""Structured logs: one JSON line per event, with the invocation's request id and batch.

Every line carries ``timestamp``, ``level``, ``message`` and ``logger``; the lines the
handler writes also carry ``request_id`` (the Lambda context's ``aws_request_id``),
``function``, ``pipeline``, ``shard`` and the batch's ``first_sequence_number`` and
``last_sequence_number``, so that CloudWatch Logs Insights finds an invocation's lines by
any of them. Per invocation, :class:`BatchLog` writes:

* ``INFO batch processed``: the counts (in, filtered, written, dead-lettered, reported);
* ``WARNING poison record dead-lettered``: once per dead letter, with the record's position
  (``sequence_number``, ``sub_sequence_number``, ``part``, ``index``), ``step``, ``error``
  and ``reason``. Never the record's data, unless the pipeline file says
  ``log_payloads: true`` (records often hold personal data; the dead-letter sink keeps
  them anyway);
* ``WARNING records reported for retry``: once per invocation, not per record (a throttled
  sink may fail a whole batch): how many, and the first one (where Lambda resumes) with
  its reason;
* ``ERROR infrastructure error, batch reported for retry``: once per invocation, when an
  error was not the records' fault (:mod:`stream.faults`: a missing table or queue, a
  denied permission, no region or credentials, a broken step), with ``errors``: where
  (a step, ``sink:NAME``) -> reason;
* ``ERROR batch failed``: the handler raised (the whole batch is retried), with the
  traceback.

A scheduled window flush (:mod:`stream.flush`) writes its dead letters' and its
infrastructure errors' lines as a batch does, then ``INFO window flush`` with its response's
counts (``windows``, ``emitted``, ``pending``) and what it wrote; ``WARNING`` instead when
emissions stay pending.

Why stdlib :mod:`logging` and not direct writes: Lambda's Python runtime has imported it
before our code runs, so it costs nothing at cold start; levels work as everywhere
(``SHARDLINE_LOG_LEVEL``, else Lambda's ``AWS_LAMBDA_LOG_LEVEL``, else ``INFO``); and a
plugin that logs to ``logging.getLogger("shardline.myplugin")`` gets the same JSON lines.
It costs a few microseconds per line, and lines are per invocation or per poison record,
never per good record. The ``shardline`` logger does not propagate to the root logger,
where Lambda's runtime installs its own handler: each event is printed once.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import orjson

TYPE_CHECKING = False  # not typing's: the handler's import never loads typing (ARCHITECTURE.md)
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any, TextIO

    from sinks.base import DeadLetter
    from stream.batch import BatchResult

__all__ = [
    "LEVEL_ENV",
    "LOGGER",
    "PAYLOAD_LIMIT",
    "BatchLog",
    "JsonFormatter",
    "StdoutHandler",
    "configure",
]

#: The logger every shardline line goes through; plugins may log to its children.
LOGGER = "shardline"
#: The environment variable that sets the level (``DEBUG``, ``INFO``, ``WARNING``...).
LEVEL_ENV = "SHARDLINE_LOG_LEVEL"
#: At most this many characters (bytes, for binary data) of a payload are logged (with
#: ``log_payloads: true``): a CloudWatch log event holds 256 KiB, a Kinesis record 1 MiB.
PAYLOAD_LIMIT = 8192

# Lambda's level names (advanced logging controls) that the logging module spells otherwise.
_LEVEL_ALIASES = {"TRACE": "DEBUG", "WARN": "WARNING", "FATAL": "CRITICAL"}


class JsonFormatter(logging.Formatter):
    """Formats a log record as one JSON object on one line.

    The fields passed as ``extra={"fields": {...}}`` are added at the top level.

    >>> record = logging.LogRecord("shardline", logging.INFO, "", 0, "hi", None, None)
    >>> record.created = 0.0
    >>> record.fields = {"shard": "shardId-000000000000"}
    >>> print(JsonFormatter().format(record))
    {"timestamp":"1970-01-01T00:00:00.000Z","level":"INFO","message":"hi","logger":"shardline","shard":"shardId-000000000000"}
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line (no trailing newline)."""
        created = record.created
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        doc: dict[str, Any] = {
            "timestamp": f"{stamp}.{int(created % 1 * 1000):03d}Z",
            "level": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if fields:
            doc.update(fields)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        line: bytes = orjson.dumps(doc, default=str)
        return line.decode()


class StdoutHandler(logging.Handler):
    """Writes each line to a stream, by default ``sys.stdout`` as it is when writing.

    Looked up per line rather than kept, so a runtime or test that replaces
    ``sys.stdout`` after configuration still gets the lines.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self._stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        """Write the formatted record and a newline, and flush."""
        try:
            out = self._stream if self._stream is not None else sys.stdout
            out.write(self.format(record) + "\n")
            out.flush()
        except Exception:  # logging must never fail the batch
            self.handleError(record)


def configure(
    level: str | int | None = None,
    *,
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> logging.Logger:
    """Set up the ``shardline`` logger: JSON lines to stdout, not propagated. Idempotent.

    Args:
        level: a level name or number; default ``SHARDLINE_LOG_LEVEL``, else
            ``AWS_LAMBDA_LOG_LEVEL``, else ``INFO``.
        stream: where lines go; default ``sys.stdout`` at the time of each line.
        environ: the environment to read levels from; default ``os.environ``.

    Raises:
        ValueError: the level is not one the logging module knows.
    """
    env = os.environ if environ is None else environ
    if level is None:
        level = env.get(LEVEL_ENV) or env.get("AWS_LAMBDA_LOG_LEVEL") or "INFO"
    if isinstance(level, str):
        name = level.strip().upper()
        name = _LEVEL_ALIASES.get(name, name)
        number = logging.getLevelName(name)
        if not isinstance(number, int):
            msg = f"log level {level!r}: expected DEBUG, INFO, WARNING, ERROR or CRITICAL"
            raise ValueError(msg)
        level = number
    logger = logging.getLogger(LOGGER)
    for old in [h for h in logger.handlers if isinstance(h, StdoutHandler)]:
        logger.removeHandler(old)
    handler = StdoutHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger


class BatchLog:
    """Writes the log lines of one function's invocations. Holds no per-invocation state.

    Args:
        function: the function's name, on every line.
        pipeline: the pipeline's name, on every line.
        log_payloads: whether a poison record's line includes its data (the pipeline
            file's ``log_payloads``).
        logger: the logger; default the ``shardline`` logger.
    """

    def __init__(
        self,
        function: str = "",
        pipeline: str = "",
        *,
        log_payloads: bool = False,
        logger: logging.Logger | None = None,
    ) -> None:
        self.function = function
        self.pipeline = pipeline
        self.log_payloads = log_payloads
        self.logger = logger or logging.getLogger(LOGGER)

    def context(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        """The fields every line of this invocation carries (constant time: the batch's
        first and last entries only)."""
        shard = first = last = None
        try:
            entries = event["Records"]
            if entries:
                shard = entries[0]["eventID"].rpartition(":")[0] or None
                first = entries[0]["kinesis"]["sequenceNumber"]
                last = entries[-1]["kinesis"]["sequenceNumber"]
        except (AttributeError, LookupError, TypeError):
            pass  # not a Kinesis event: logged as it is, without a batch position
        return {
            "request_id": getattr(context, "aws_request_id", None),
            "function": self.function,
            "pipeline": self.pipeline,
            "shard": shard,
            "first_sequence_number": first,
            "last_sequence_number": last,
        }

    def batch(self, result: BatchResult, event: Mapping[str, Any], context: Any) -> None:
        """Log one processed batch: its poison records, its retries, its counts."""
        logger = self.logger
        warn = bool(result.dead_letters or result.failed)
        if not logger.isEnabledFor(logging.WARNING if warn else logging.INFO):
            return  # nothing to say at this level: not even the context is built
        fields = self.context(event, context)
        if result.infrastructure:
            logger.error(
                "infrastructure error, batch reported for retry",
                extra={"fields": {**fields, "errors": dict(result.infrastructure)}},
            )
        for letter in result.dead_letters:
            logger.warning(
                "poison record dead-lettered", extra={"fields": {**fields, **self._poison(letter)}}
            )
        if result.failed:
            first = min(result.failed)
            reported = result.response["batchItemFailures"]
            logger.warning(
                "records reported for retry",
                extra={
                    "fields": {
                        **fields,
                        "records": len(result.failed),
                        "first_index": first,
                        # the lowest reported: where Lambda resumes the shard
                        "resume_sequence_number": reported[0]["itemIdentifier"],
                        "reason": result.failed[first],
                    }
                },
            )
        logger.info(
            "batch processed",
            extra={
                "fields": {
                    **fields,
                    "records_in": result.records_in,
                    "filtered": sum(result.dropped.values()),
                    "unrouted": result.unrouted,
                    "written": dict(result.written),
                    "dead_lettered": len(result.dead_letters),
                    "reported_for_retry": len(result.failed),
                }
            },
        )

    def flushed(
        self, response: Mapping[str, Any], results: Sequence[BatchResult], context: Any
    ) -> None:
        """Log one scheduled flush: its dead letters, its infrastructure errors, its counts."""
        logger = self.logger
        fields = self.context({}, context)
        for result in results:
            if result.infrastructure:
                logger.error(
                    "infrastructure error, flush left pending",
                    extra={"fields": {**fields, "errors": dict(result.infrastructure)}},
                )
            for letter in result.dead_letters:
                logger.warning(
                    "poison record dead-lettered",
                    extra={"fields": {**fields, **self._poison(letter)}},
                )
        written: dict[str, int] = {}
        for result in results:
            for name, n in result.written.items():
                written[name] = written.get(name, 0) + n
        level = logging.WARNING if response.get("pending") else logging.INFO
        first = next((r.failed[min(r.failed)] for r in results if r.failed), None)
        logger.log(
            level,
            "window flush",
            extra={
                "fields": {
                    **fields,
                    "windows": response.get("windows"),
                    "emitted": response.get("emitted"),
                    "pending": response.get("pending"),
                    "written": written,
                    "dead_lettered": sum(len(r.dead_letters) for r in results),
                    **({"reason": first} if first is not None else {}),
                }
            },
        )

    def failed(self, event: Mapping[str, Any], context: Any) -> None:
        """Log the exception being handled: the handler failed and the batch is retried."""
        self.logger.exception("batch failed", extra={"fields": self.context(event, context)})

    def _poison(self, letter: DeadLetter) -> dict[str, Any]:
        rec = letter.record
        out: dict[str, Any] = {
            "sequence_number": rec.sequence_number,
            "sub_sequence_number": rec.sub_sequence_number,
            "part": rec.part,
            "index": rec.index,
            "step": letter.step,
            "error": letter.error,
            "reason": letter.reason,
        }
        if self.log_payloads:
            try:
                data = rec.data
            except (TypeError, ValueError) as exc:  # a document orjson cannot write
                out["payload_error"] = str(exc)
                return out
            try:
                text = data.decode()
            except UnicodeDecodeError:
                from base64 import b64encode  # noqa: PLC0415  # only for binary payloads

                out["payload_base64"] = b64encode(data[:PAYLOAD_LIMIT]).decode()
                out["payload_truncated"] = len(data) > PAYLOAD_LIMIT
            else:
                out["payload"] = text[:PAYLOAD_LIMIT]
                out["payload_truncated"] = len(text) > PAYLOAD_LIMIT
        return out
