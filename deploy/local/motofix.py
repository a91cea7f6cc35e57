"""The embedded moto server, made to behave as AWS does where our tests and the local stack
depend on it: PutRecords calls at once, DynamoDB conditional writes at once, and PutObject
bodies that do not match their checksums.

Kinesis. moto's Kinesis numbers a shard's records by reading the highest sequence number
and storing the next (``moto.kinesis.models.Shard.put_record``, "not safe for concurrency"
in its own words): two PutRecords served at once by the threaded server may take one
number, and one record silently replaces the other while both calls answer success.
Kinesis numbers records safely, and the producer sends calls at once
(``Producer(concurrent=True)``: ``shardline produce``, the ``kinesis`` sink), so the local
stack must too: measured before this, 8 of 4,000 records lost by ``python -m bench
producer --keys 4000``. And its GetRecords walks the shard's records in Python while a put
may add one (``Shard.get_records``: "OrderedDict mutated during iteration", answered as
HTTP 500; ``make demo`` saw 4 to 7 a run, each a 2 s wait of the reader).
:func:`serialize_kinesis_shards` puts one lock around the methods that change or walk a
shard's records.

S3. botocore sends every PutObject with a checksum of the whole body in a header
(``x-amz-checksum-crc32``; flexible checksums, on by default since botocore 1.36). S3
computes the checksum of the body it received and refuses a mismatch (400 ``BadDigest``),
so a body cut short on its way never becomes an object. moto stores the header as given
without looking ("TODO: AWS computes the provided value and verifies it's the same",
``S3Response._get_checksum``): a request whose body was cut off and relayed as a shorter
complete one (as the tests' fault proxy did when a Lambda sandbox was killed between
PutObject's headers and body) was kept as an empty object carrying the full body's
checksum, and every later read of it failed (``FlexibleChecksumError ... AAAAAA==``, the
CRC32 of nothing). :func:`reject_s3_checksum_mismatches` makes PutObject check the
checksums it can compute exactly (CRC32, SHA-1, SHA-256: moto falls back to CRC32 for
CRC32C and CRC64NVME without optional libraries, so those are left alone) and refuse a
mismatch as S3 does.

DynamoDB. moto's UpdateItem evaluates the condition on the item, then validates the update
expression (a parse of the whole AST, slow for a long expression), then applies it, with
no lock (``moto.dynamodb.models.DynamoDBBackend.update_item``): two conditional updates
served at once by the threaded server may both pass a condition that only one of them
can hold on DynamoDB, where a conditional write is atomic. The window state's lanes mode
commits with one ``UpdateItem`` of the shard item on its commit number ``n``; two
processes' commits on the same ``n`` both passed, each went on with its own state as
commit ``n + 1``, and the records of one were lost from then on (lanes in Lambda runtime
worker processes, ``tests/integration/test_window_lanes_run.py``: some windows counting
fewer records, 3 of 5 runs). Measured: two threads racing 150 rounds each of read ``n``,
``UpdateItem`` on ``n = seen`` with 30 attributes set, about 58 of 210 successes passed
on a condition another success had already moved. :func:`serialize_dynamodb` serves one
DynamoDB request at a time (each is atomic on DynamoDB: an item's write, a transaction, a
consistent read of a partition between writes).

:func:`patch_moto` applies them all in this process (the in-process server of the tests and
``LocalAWS(subprocess=False)``); ``python -m deploy.local.motofix ARGS`` runs
``moto.server`` with them (``LocalAWS``'s child process). Each patch is idempotent.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import zlib
from typing import Any

__all__ = [
    "checksum_mismatch",
    "main",
    "patch_moto",
    "reject_s3_checksum_mismatches",
    "serialize_dynamodb",
    "serialize_kinesis_shards",
]

_LOCKED = "_shardline_serialized"
_CHECKED = "_shardline_checksums_checked"


def patch_moto() -> None:
    """Every patch of this module, in this process; idempotent."""
    serialize_kinesis_shards()
    serialize_dynamodb()
    reject_s3_checksum_mismatches()


def serialize_dynamodb() -> None:
    """Make moto serve one DynamoDB request at a time (its handler's ``call_action`` under
    one process-wide lock), so that a conditional write is atomic as on DynamoDB and a
    read never sees an update half applied; idempotent."""
    from moto.dynamodb.responses import DynamoHandler  # noqa: PLC0415  # the local extra only

    original = DynamoHandler.call_action
    if getattr(original, _LOCKED, False):
        return
    lock = threading.Lock()
    DynamoHandler.call_action = _under(lock, original)  # type: ignore[method-assign]


def serialize_kinesis_shards() -> None:
    """Make moto's ``Shard`` methods that add to or walk its records take one process-wide
    lock (a put numbers its record from the highest so far; a read walks them all);
    idempotent."""
    from moto.kinesis.models import Shard  # noqa: PLC0415  # the local extra only

    if getattr(Shard.put_record, _LOCKED, False):
        return
    lock = threading.Lock()
    for name in ("put_record", "get_records", "get_sequence_number_at"):
        setattr(Shard, name, _under(lock, getattr(Shard, name)))


def _under(lock: threading.Lock, original: Any) -> Any:
    """``original`` called with ``lock`` held."""

    def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
        with lock:
            return original(self, *args, **kwargs)

    setattr(locked, _LOCKED, True)
    return locked


def _crc32(body: bytes) -> bytes:
    return zlib.crc32(body).to_bytes(4, "big")


def _sha1(body: bytes) -> bytes:
    return hashlib.sha1(body, usedforsecurity=False).digest()


def _sha256(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


#: The checksum headers checked, with S3's name of the algorithm and the raw digest.
_CHECKSUMS = (
    ("x-amz-checksum-crc32", "CRC32", _crc32),
    ("x-amz-checksum-sha1", "SHA1", _sha1),
    ("x-amz-checksum-sha256", "SHA256", _sha256),
)


def checksum_mismatch(headers: Any, body: bytes) -> str:
    """The name of the first checksum header that does not match ``body`` (S3's name of
    its algorithm), or ``""`` when every checked one does or none is sent.

    >>> checksum_mismatch({"x-amz-checksum-crc32": "AAAAAA=="}, b"")
    ''
    >>> checksum_mismatch({"x-amz-checksum-crc32": "O0HJ5g=="}, b"")
    'CRC32'
    """
    for header, name, digest in _CHECKSUMS:
        sent = headers.get(header)
        if sent and sent != base64.b64encode(digest(body)).decode():
            return name
    return ""


def reject_s3_checksum_mismatches() -> None:
    """Make moto's PutObject refuse a body whose checksum header does not match it, with
    S3's 400 ``BadDigest``, before anything is stored; idempotent."""
    from moto.s3.exceptions import S3ClientError  # noqa: PLC0415  # the local extra only
    from moto.s3.responses import S3Response  # noqa: PLC0415

    original = S3Response.put_object
    if getattr(original, _CHECKED, False):
        return

    def put_object(self: Any) -> Any:
        body = self.body or b""
        name = checksum_mismatch(self.headers, body if isinstance(body, bytes) else body.encode())
        if name:
            msg = f"The {name} you specified did not match the calculated checksum."
            raise S3ClientError("BadDigest", msg)
        return original(self)

    setattr(put_object, _CHECKED, True)
    S3Response.put_object = put_object  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> None:
    """``moto.server``'s command line, with the patches in place."""
    patch_moto()
    from moto.server import main as moto_main  # noqa: PLC0415

    moto_main(argv)


if __name__ == "__main__":
    main()
