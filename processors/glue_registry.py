"""The Glue Schema Registry: its wire header, schema versions fetched once per id, and the
producer's reference to a registered schema.

A record written with a registry schema (by shardline's producer, or by AWS's Glue Schema
Registry serializers for the KPL, Kafka and Flink) carries an 18-byte header::

    byte 0        3     the header version
    byte 1        0, 5  the payload's compression: 0 none, 5 zlib
    bytes 2..17         the schema version id, a UUID (its 16 bytes in network order)
    bytes 18..          the payload: Avro binary or JSON, per the version's DataFormat

The ``schema`` step (:mod:`processors.schema`, ``- schema: {registry: {name, registry}}``)
reads the header, asks Glue for the version by its id (``GetSchemaVersion``) and validates or
decodes the payload with the version's definition. A version id is asked once per process:
:data:`VERSIONS` keeps what Glue answered across warm invocations (a schema version is
immutable once registered), and an id Glue does not know for :data:`UNKNOWN_TTL_S`, so a
stream of records with a bogus id costs one call per id and period, not one per record. A
version Glue has not made available *yet* (``PENDING``: :data:`NOT_YET_STATUSES`) is not
kept: it is remembered like a failed call, for :data:`UNAVAILABLE_TTL_S`, then asked again.

Whose fault (:mod:`stream.faults`): a record with no header, a bad header or an id Glue does
not know is the record's fault (:class:`RegistryRecordError`, dead-lettered), and so is a
version whose status is final but not ``AVAILABLE`` (``FAILURE``, ``DELETING``: the step's
contract refuses it); Glue throttled, failing or unreachable, a version still ``PENDING``,
or the function not allowed to read it, is not (:class:`RegistryUnavailable`, retried; its
``code`` names an infrastructure error such as ``AccessDeniedException`` so the batch
reports it once).

This module imports nothing of ours but the ground types; boto3 is loaded with the client.
"""

from __future__ import annotations

import time
import uuid
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from processors.errors import ProcessorError
from stream.aws import Kind, aws_client, backoff_delay, classify
from stream.exceptions import RecordError, RetryableError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "COMPRESSION_NONE",
    "COMPRESSION_ZLIB",
    "DEFAULT_REGISTRY",
    "HEADER_BYTES",
    "HEADER_VERSION",
    "NOT_YET_STATUSES",
    "UNKNOWN_TTL_S",
    "VERSIONS",
    "Header",
    "RegistryRecordError",
    "RegistrySchema",
    "RegistryUnavailable",
    "SchemaVersion",
    "VersionCache",
    "encode_header",
    "fetch_latest",
    "split_header",
]

HEADER_VERSION = 3
COMPRESSION_NONE = 0
COMPRESSION_ZLIB = 5
HEADER_BYTES = 18
#: The registry AWS's serializers use when none is named.
DEFAULT_REGISTRY = "default-registry"
#: How long an id that Glue does not know stays unknown without asking again.
UNKNOWN_TTL_S = 300.0
#: How long after Glue failed (throttled, unreachable) the same id fails at once, so a batch
#: of records of one id makes a few calls, not a few per record.
UNAVAILABLE_TTL_S = 2.0
#: Calls per fetch before the record is reported retryable.
ATTEMPTS = 3
#: Version statuses that say "not yet", not "no": ``PENDING`` while Glue checks a new
#: version's compatibility; it ends ``AVAILABLE`` or ``FAILURE``. (``FAILURE`` and
#: ``DELETING`` are final refusals; the step's contract refuses every status but AVAILABLE.)
NOT_YET_STATUSES = frozenset({"PENDING"})
#: The code of :class:`RegistryUnavailable` for a version not yet available: not an
#: infrastructure code (:mod:`stream.faults`), so the batch is retried like a throttle.
_NOT_YET_CODE = "SchemaVersionNotAvailable"

_COMPRESSIONS = {COMPRESSION_NONE: "none", COMPRESSION_ZLIB: "zlib"}


class RegistryRecordError(RecordError, ProcessorError):
    """The record's header is missing or malformed, or names a version Glue does not know:
    the record's fault, dead-lettered."""


class RegistryUnavailable(RetryableError, ProcessorError):
    """Glue could not answer for a version now (throttled, failing, unreachable) or the
    function may not read it: delivered again, never dead-lettered.

    Attributes:
        code: the Glue error code or botocore exception name (``AccessDeniedException``...).
    """

    def __init__(self, reason: str, code: str = "") -> None:
        super().__init__(reason)
        self.code = code


@dataclass(frozen=True, slots=True)
class Header:
    """A record's registry header: which schema version, and whether the payload is zlib.

    Attributes:
        key: the version id's 16 bytes, as the header carries them (the cache's key: making
            the UUID's text costs more than the rest of a warm record's header path).
        compression: :data:`COMPRESSION_NONE` or :data:`COMPRESSION_ZLIB`.
    """

    key: bytes
    compression: int

    @property
    def version_id(self) -> str:
        """The version id as Glue spells it."""
        return str(uuid.UUID(bytes=self.key))


def split_header(data: bytes) -> tuple[Header, bytes]:
    """The header and the (inflated) payload of a record.

    >>> vid = uuid.UUID("6f1b0c2e-9a43-4a5e-8d3b-0123456789ab")
    >>> header, payload = split_header(encode_header(vid) + b'{"a": 1}')
    >>> header.version_id, payload
    ('6f1b0c2e-9a43-4a5e-8d3b-0123456789ab', b'{"a": 1}')
    >>> split_header(b'{"a": 1}')
    Traceback (most recent call last):
    ...
    processors.glue_registry.RegistryRecordError: record has no Glue Schema Registry header: \
byte 0 is 123 ('{'), expected 3 (8 bytes)

    Raises:
        RegistryRecordError: too short, another header version, an unknown compression, or
            a zlib payload that does not inflate.
    """
    if not data or data[0] != HEADER_VERSION:
        first = data[0] if data else None
        shown = f" ({chr(first)!r})" if first is not None and 32 <= first < 127 else ""
        what = f"byte 0 is {first}{shown}" if data else "the record is empty"
        msg = (
            f"record has no Glue Schema Registry header: {what}, expected {HEADER_VERSION} "
            f"({len(data)} bytes)"
        )
        raise RegistryRecordError(msg)
    if len(data) < HEADER_BYTES:
        msg = (
            f"record's Glue Schema Registry header is cut short: {len(data)} bytes, a header "
            f"is {HEADER_BYTES}"
        )
        raise RegistryRecordError(msg)
    compression = data[1]
    if compression not in _COMPRESSIONS:
        msg = (
            f"record's Glue Schema Registry header names compression {compression}; known: "
            "0 (none), 5 (zlib)"
        )
        raise RegistryRecordError(msg)
    header = Header(data[2:HEADER_BYTES], compression)
    payload = data[HEADER_BYTES:]
    if compression == COMPRESSION_ZLIB:
        try:
            payload = zlib.decompress(payload)
        except zlib.error as exc:
            msg = f"record's payload does not inflate (header says zlib): {exc}"
            raise RegistryRecordError(msg) from None
    return header, payload


def encode_header(version_id: uuid.UUID | str, compression: int = COMPRESSION_NONE) -> bytes:
    """The 18 header bytes for a schema version id.

    >>> encode_header("00000000-0000-0000-0000-000000000001", COMPRESSION_ZLIB).hex()
    '030500000000000000000000000000000001'
    """
    vid = version_id if isinstance(version_id, uuid.UUID) else uuid.UUID(version_id)
    if compression not in _COMPRESSIONS:
        msg = f"compression {compression} is not 0 (none) or 5 (zlib)"
        raise ValueError(msg)
    return bytes((HEADER_VERSION, compression)) + vid.bytes


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    """One registered schema version, as ``GetSchemaVersion`` answers.

    Attributes:
        version_id: the UUID the header carries.
        registry: the registry's name (from the schema's ARN).
        schema: the schema's name (from the schema's ARN).
        version_number: 1, 2, ...
        data_format: ``AVRO``, ``JSON`` or ``PROTOBUF``.
        definition: the schema text (Avro schema JSON, or JSON Schema).
        status: ``AVAILABLE``, ``PENDING``, ``FAILURE`` or ``DELETING``.
    """

    version_id: str
    registry: str
    schema: str
    version_number: int
    data_format: str
    definition: str
    status: str

    @classmethod
    def from_response(cls, response: Mapping[str, Any]) -> SchemaVersion:
        """From a ``GetSchemaVersion`` response (the schema ARN names registry and schema).

        >>> SchemaVersion.from_response({
        ...     "SchemaVersionId": "v", "SchemaArn": "arn:aws:glue:us-east-1:1:schema/reg/orders",
        ...     "VersionNumber": 2, "DataFormat": "AVRO", "SchemaDefinition": "{}",
        ...     "Status": "AVAILABLE"}).qualified
        'reg/orders version 2'
        """
        arn = str(response.get("SchemaArn") or "")
        _, _, path = arn.partition(":schema/")
        registry, _, schema = path.partition("/")
        return cls(
            version_id=str(response["SchemaVersionId"]),
            registry=registry,
            schema=schema,
            version_number=int(response.get("VersionNumber") or 0),
            data_format=str(response.get("DataFormat") or ""),
            definition=str(response.get("SchemaDefinition") or ""),
            status=str(response.get("Status") or "AVAILABLE"),
        )

    @property
    def qualified(self) -> str:
        """``registry/schema version N``, as messages name it."""
        return f"{self.registry}/{self.schema} version {self.version_number}"


@dataclass(slots=True)
class _Entry:
    version: SchemaVersion | None  # None: unknown or unavailable until ``until``
    compiled: Any = None
    reason: str = ""
    code: str = ""
    until: float = 0.0


@dataclass
class VersionCache:
    """Schema versions by id, with what a caller compiled from each (the step's contract).

    Known versions stay for the life of the process (versions are immutable); an unknown id
    for :data:`UNKNOWN_TTL_S`; a failed call, or a version not yet available, for
    :data:`UNAVAILABLE_TTL_S`. ``calls`` counts
    the ``GetSchemaVersion`` calls made, for tests and logs.
    """

    now: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    max_entries: int = 10_000
    calls: int = 0
    _entries: dict[bytes, _Entry] = field(default_factory=dict)

    def get(
        self,
        key: bytes,
        client: Callable[[], Any],
        compile_version: Callable[[SchemaVersion], Any],
    ) -> tuple[SchemaVersion, Any]:
        """The version whose id's 16 bytes are ``key`` and what ``compile_version`` made of
        it, fetched on first use with the Glue client ``client()`` returns (asked only then).

        ``compile_version`` runs once per version; what it raises is not cached (a missing
        library is fixed by a new deployment, which starts a new process anyway).

        Raises:
            RegistryRecordError: Glue does not know the id.
            RegistryUnavailable: Glue could not answer, or the version is not available
                yet (see the module docstring).
        """
        entry = self._entries.get(key)
        if entry is not None and entry.compiled is not None:  # a warm record's whole path
            return entry.version, entry.compiled  # type: ignore[return-value]  # set with it
        if entry is None or (entry.version is None and entry.until <= self.now()):
            entry = self._fetch(str(uuid.UUID(bytes=key)), client)
            if len(self._entries) >= self.max_entries:
                self._entries.pop(next(iter(self._entries)))
            self._entries[key] = entry
        if entry.version is None:
            if entry.code:
                raise RegistryUnavailable(entry.reason, entry.code)
            raise RegistryRecordError(entry.reason)
        if entry.compiled is None:
            entry.compiled = compile_version(entry.version)
        return entry.version, entry.compiled

    def clear(self) -> None:
        """Forget every version (tests; a process never needs to)."""
        self._entries.clear()
        self.calls = 0

    def _fetch(self, version_id: str, client: Callable[[], Any]) -> _Entry:
        glue = client()
        attempt = 0
        while True:
            self.calls += 1
            try:
                response = glue.get_schema_version(SchemaVersionId=version_id)
            except Exception as exc:  # classified below; never a bare pass-through
                failure = classify(exc, "glue")
            else:
                version = SchemaVersion.from_response(response)
                if version.status in NOT_YET_STATUSES:
                    return self._not_yet(version)
                return _Entry(version)
            if failure.code == "EntityNotFoundException" or failure.kind is Kind.PERMANENT:
                reason = (
                    f"schema version {version_id} of the record's header is not in the Glue "
                    f"Schema Registry ({failure.code}: {failure.message})"
                )
                return _Entry(None, reason=reason, until=self.now() + UNKNOWN_TTL_S)
            attempt += 1
            # retrying now cannot grant a permission; the budget bounds the rest
            if failure.kind is Kind.INFRASTRUCTURE or attempt >= ATTEMPTS:
                break
            self.sleep(backoff_delay(attempt))
        reason = (
            f"cannot read schema version {version_id} from the Glue Schema Registry: "
            f"{failure.code}: {failure.message}"
        )
        if failure.kind is Kind.INFRASTRUCTURE:
            reason += " (grant glue:GetSchemaVersion on the registry and schema to the role)"
        until = self.now() + UNAVAILABLE_TTL_S
        return _Entry(None, reason=reason, code=failure.code or "Unavailable", until=until)

    def _not_yet(self, version: SchemaVersion) -> _Entry:
        """A version Glue has registered but not yet made available (its compatibility
        check runs): the record is not at fault and the version may become AVAILABLE any
        moment, so it is remembered only as briefly as a failed call, then asked again."""
        reason = (
            f"schema version {version.version_id} ({version.qualified}) is {version.status} "
            "in the Glue Schema Registry, not yet AVAILABLE: delivered again until it is"
        )
        until = self.now() + UNAVAILABLE_TTL_S
        return _Entry(None, reason=reason, code=_NOT_YET_CODE, until=until)


#: The process's cache: shared by every registry step, kept across warm invocations.
VERSIONS = VersionCache()


@dataclass(frozen=True, slots=True)
class RegistrySchema:
    """A producer's reference to a registered schema: which version to write records with.

    Spelt ``registry:REGISTRY/NAME`` (the latest version), ``registry:REGISTRY/NAME@N``
    (version N) or ``registry:NAME`` (the default registry) on the command line.

    Attributes:
        name: the schema's name.
        registry: the registry's name.
        version: the version number; ``None`` for the latest.
        compression: ``none`` or ``zlib`` (the payload deflated; the header says so).
    """

    name: str
    registry: str = DEFAULT_REGISTRY
    version: int | None = None
    compression: str = "none"

    def __post_init__(self) -> None:
        if self.compression not in ("none", "zlib"):
            msg = f"compression {self.compression!r}: expected none or zlib"
            raise ValueError(msg)
        if not self.name or not self.registry:
            msg = "a registry schema needs a schema name and a registry name"
            raise ValueError(msg)

    @classmethod
    def parse(cls, text: str, compression: str = "none") -> RegistrySchema:
        """The reference a ``registry:...`` spelling names.

        >>> RegistrySchema.parse("registry:default/orders@3")
        RegistrySchema(name='orders', registry='default', version=3, compression='none')
        >>> RegistrySchema.parse("registry:orders").registry
        'default-registry'

        Raises:
            ValueError: not ``registry:[REGISTRY/]NAME[@VERSION]``.
        """
        if not text.startswith("registry:"):
            msg = f"{text!r}: a registry schema is spelt registry:[REGISTRY/]NAME[@VERSION]"
            raise ValueError(msg)
        rest = text.removeprefix("registry:")
        path, at, number = rest.partition("@")
        registry, slash, name = path.rpartition("/")
        if at and not number.isdigit():
            msg = f"{text!r}: the version after @ is a number, got {number!r}"
            raise ValueError(msg)
        return cls(
            name=name,
            registry=registry if slash else DEFAULT_REGISTRY,
            version=int(number) if at else None,
            compression=compression,
        )

    @property
    def compression_byte(self) -> int:
        """The header's compression byte."""
        return COMPRESSION_ZLIB if self.compression == "zlib" else COMPRESSION_NONE

    def __str__(self) -> str:
        which = f"@{self.version}" if self.version is not None else ""
        return f"registry:{self.registry}/{self.name}{which}"


def fetch_latest(reference: RegistrySchema, client: Any = None) -> SchemaVersion:
    """The version a producer writes with: the reference's number, else the latest.

    Raises:
        ValueError: the schema or version does not exist, or Glue refused the call (the
            producer's side: nothing was sent yet, so the caller stops).
    """
    glue = client if client is not None else aws_client("glue")
    number = (
        {"LatestVersion": True}
        if reference.version is None
        else {"VersionNumber": reference.version}
    )
    try:
        response = glue.get_schema_version(
            SchemaId={"RegistryName": reference.registry, "SchemaName": reference.name},
            SchemaVersionNumber=number,
        )
    except Exception as exc:  # classified: the message names the code
        failure = classify(exc, "glue")
        msg = f"{reference}: cannot read it from the Glue Schema Registry: {failure.code}: "
        msg += failure.message
        raise ValueError(msg) from None
    return SchemaVersion.from_response(response)
