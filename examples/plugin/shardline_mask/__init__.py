"""An example shardline processor plugin: ``- mask: {fields: [email], keep: 2}``.

Installed, it is found through the entry-point group ``shardline.processors`` under the
name ``mask``. The class follows the processor contract: ``__init__`` validates the
arguments from the pipeline file once; ``__call__`` takes a record and returns it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Mask"]


class Mask:
    """Replace all but the first ``keep`` characters of string fields with ``*``."""

    def __init__(self, fields: list[str], keep: int = 0) -> None:
        if not fields or not all(isinstance(f, str) for f in fields):
            msg = "mask.fields must be a non-empty list of field names"
            raise ValueError(msg)
        if keep < 0:
            msg = f"mask.keep must be 0 or more, got {keep}"
            raise ValueError(msg)
        self.fields = tuple(fields)
        self.keep = keep

    def __call__(self, record: Any) -> Any:
        doc = record.as_dict()
        for field in self.fields:
            value = doc.get(field)
            if isinstance(value, str):
                doc[field] = value[: self.keep] + "*" * max(len(value) - self.keep, 0)
        return record  # edited in place: the chain re-encodes what a plugin returns
