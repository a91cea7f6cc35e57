"""Kinesis I/O and the Lambda runtime contract.

Only the light, dependency-free names are re-exported here; the batch runner and the
handler live in ``stream.batch`` and ``stream.lambda_handler``.

The names are imported on first use (PEP 562), not when the package is: ``import
stream.lambda_handler`` runs this file first, and the handler decides what its import
loads and how (it keeps the garbage collector off while the cold start builds).
"""

from __future__ import annotations

from stream.lazy import lazy_names

TYPE_CHECKING = False  # not typing's: the handler's import never loads typing (ARCHITECTURE.md)
if TYPE_CHECKING:
    from stream.event import KPL_MAGIC, records_from_event
    from stream.exceptions import (
        DecodeError,
        PluginError,
        RecordError,
        RetryableError,
        ShardlineError,
    )
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

_EXPORTS = {
    "KPL_MAGIC": "stream.event",
    "records_from_event": "stream.event",
    "DecodeError": "stream.exceptions",
    "PluginError": "stream.exceptions",
    "RecordError": "stream.exceptions",
    "RetryableError": "stream.exceptions",
    "ShardlineError": "stream.exceptions",
    "Record": "stream.records",
    "pad_sequence": "stream.records",
}


__getattr__ = lazy_names(__name__, _EXPORTS)
