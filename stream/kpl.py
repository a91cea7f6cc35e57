"""Access to the KPL aggregate protobuf message of ``aws_kinesis_agg``, without its path hack.

``aws_kinesis_agg.messages_pb2`` does ``import config_pb2`` as a top-level module, and the
library's own modules make that work by inserting their folder at the front of ``sys.path``
for the whole process. We register the package's ``config_pb2`` under that top-level name
instead, leaving ``sys.path`` alone. Imported only when an aggregate is seen or made.
"""

from __future__ import annotations

import importlib
import sys
from functools import cache
from typing import Any

__all__ = ["aggregated_record_type"]


@cache
def aggregated_record_type() -> Any:
    """The protobuf class ``AggregatedRecord`` (the KPL aggregation format)."""
    if "config_pb2" not in sys.modules:
        sys.modules["config_pb2"] = importlib.import_module("aws_kinesis_agg.config_pb2")
    messages = importlib.import_module("aws_kinesis_agg.messages_pb2")
    return messages.AggregatedRecord
