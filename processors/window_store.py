"""The ``window`` step's state: a map of its modules, and the names the rest of the code imports.

The state of a window step lives in a store (:class:`WindowStore`): in the process
(``state: memory``) or in a DynamoDB table (``state: dynamodb``, the default). Each part
lives in a module of its own, whose docstring says why it is as it is:

* :mod:`processors.window_state`: a shard's state (:class:`ShardState`), outcomes,
  positions and their high-water marks, the store protocol and the errors;
* :mod:`processors.window_memory`: :class:`MemoryStore`;
* :mod:`processors.window_items`: the table's items (its layout, sizes and TTLs) as text:
  window items (:func:`window_item`), accumulators (:func:`encode`), high-water marks;
* :mod:`processors.window_outbox`: what records yielded, kept for their redelivery;
* :mod:`processors.window_starts`: the open windows' starts a shard item lists, so that a
  cold read reads them, not every window the shard closed in the last days;
* :mod:`processors.window_dynamodb`: :class:`DynamoDBStore` (a warm batch's round trips),
  built in layers: :mod:`processors.window_table` (settings, mode, calls),
  :mod:`processors.window_roll` (lanes mode's roll-forward), :mod:`processors.window_reshards`,
  :mod:`processors.window_reads` (a batch's read, quiet shards, redeliveries), and the two
  commits: :mod:`processors.window_one_lane` (``v``/``prev``, the fence, the shard item's
  outbox) and :mod:`processors.window_lanes` (the redo log on ``n``, catch-up, conversion,
  the way back), with :mod:`processors.window_cache` (what a process knows of a shard) and
  :mod:`processors.window_log` (the log's encoding and requests).
"""

from __future__ import annotations

from processors.window_cache import _Cached  # noqa: F401  # re-exported for tests
from processors.window_dynamodb import DynamoDBStore
from processors.window_items import (  # noqa: F401  # the names not in __all__: re-exported
    _SHARD_SK,
    CLOSED_TTL_S,
    DEFAULT_MAX_RECORD_AGE_S,
    OUTBOX_MARGIN_S,
    bound_hw,
    decode,
    encode,
    hw_marks,
    hw_stored,
    hw_text,
    window_item,
)
from processors.window_memory import MemoryStore
from processors.window_outbox import outbox_sk  # noqa: F401  # re-exported
from processors.window_state import (  # noqa: F401  # position_mark: re-exported
    HW_MAX_PKS,
    HW_UNBOUNDED,
    ClaimLost,
    CommitLost,
    Inherited,
    LanesMet,
    Mark,
    Outcome,
    Position,
    ShardState,
    StateTooLarge,
    TickIncomplete,
    WindowKey,
    WindowRecordError,
    WindowStateError,
    WindowStore,
    position_mark,
)

__all__ = [
    "CLOSED_TTL_S",
    "DEFAULT_MAX_RECORD_AGE_S",
    "HW_MAX_PKS",
    "HW_UNBOUNDED",
    "OUTBOX_MARGIN_S",
    "ClaimLost",
    "CommitLost",
    "DynamoDBStore",
    "Inherited",
    "LanesMet",
    "Mark",
    "MemoryStore",
    "Outcome",
    "Position",
    "ShardState",
    "StateTooLarge",
    "TickIncomplete",
    "WindowKey",
    "WindowRecordError",
    "WindowStateError",
    "WindowStore",
    "decode",
    "encode",
]
