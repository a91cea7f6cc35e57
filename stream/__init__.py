"""Kinesis I/O and the Lambda runtime contract.

Only the light, dependency-free names are re-exported here; the batch runner and the
handler live in ``stream.batch`` and ``stream.lambda_handler``.
"""

from __future__ import annotations

from stream.event import KPL_MAGIC, records_from_event
from stream.exceptions import DecodeError, PluginError, RecordError, RetryableError, ShardlineError
from stream.records import Record, pad_sequence

__all__ = [
    "KPL_MAGIC",
    "DecodeError",
    "PluginError",
    "Record",
    "RecordError",
    "RetryableError",
    "ShardlineError",
    "pad_sequence",
    "records_from_event",
]
