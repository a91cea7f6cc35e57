"""The embedded moto server, made safe for PutRecords calls at once.

moto's Kinesis numbers a shard's records by reading the highest sequence number and storing
the next (``moto.kinesis.models.Shard.put_record``, "not safe for concurrency" in its own
words): two PutRecords served at once by the threaded server may take one number, and one
record silently replaces the other while both calls answer success. Kinesis numbers records
safely, and the producer sends calls at once (``Producer(concurrent=True)``: ``shardline
produce``, the ``kinesis`` sink), so the local stack must too: measured before this, 8 of
4,000 records lost by ``python -m bench producer --keys 4000``.

:func:`serialize_kinesis_puts` puts one lock around that method in this process (the
in-process server of the tests and ``LocalAWS(subprocess=False)``); ``python -m
deploy.local.motofix ARGS`` runs ``moto.server`` with it (``LocalAWS``'s child process).
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["main", "serialize_kinesis_puts"]

_LOCKED = "_shardline_serialized"


def serialize_kinesis_puts() -> None:
    """Make moto's ``Shard.put_record`` take one process-wide lock; idempotent."""
    from moto.kinesis.models import Shard  # noqa: PLC0415  # the local extra only

    original = Shard.put_record
    if getattr(original, _LOCKED, False):
        return
    lock = threading.Lock()

    def put_record(self: Any, *args: Any, **kwargs: Any) -> Any:
        with lock:
            return original(self, *args, **kwargs)

    setattr(put_record, _LOCKED, True)
    Shard.put_record = put_record  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> None:
    """``moto.server``'s command line, with the lock in place."""
    serialize_kinesis_puts()
    from moto.server import main as moto_main  # noqa: PLC0415

    moto_main(argv)


if __name__ == "__main__":
    main()
