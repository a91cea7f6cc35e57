"""The ``schema`` step: a record must follow a contract, or it is dead-lettered with the reason.

Three contracts, one per step (the plan carries a file's schema itself, bundled by
``compile`` from the file the pipeline names, so the runtime reads no file)::

    - schema: {json_schema: schemas/order.json}   # JSON Schema, draft 2020-12 by default
    - schema: {avro: schemas/order.avsc}          # Avro binary -> its JSON document
    - schema: {registry: {name: orders, registry: default}}   # the Glue Schema Registry

A registry record carries the registry's wire header (:mod:`processors.glue_registry`): the
step fetches the version it names once per process, checks that it is a version of the named
schema, and then checks (JSON) or decodes (Avro) the payload exactly as the two file
contracts do. A record with no or a bad header, an unknown version id or a version of another
schema is dead-lettered with the reason; Glue throttled, unreachable or denying access is
retried, never dead-lettered.

A JSON record that does not conform fails with the instance's JSON pointer and the failing
keyword (:class:`ContractError`); an Avro record that does not decode fails with the Avro
error and the byte offset. A decoded Avro record continues as its JSON document (the chain
re-encodes it as JSON for the sinks).

The libraries, chosen by ``python -m bench schema`` (``jsonschema-rs``: draft 2020-12, and
the fastest; ``fastavro``), are imported when a step is built, never at module import, and
are in the ``contracts`` extra: a Lambda package holds them only when a function has the step.
"""

from __future__ import annotations

import io
import os
import zlib
from typing import TYPE_CHECKING, Any

import orjson

from processors.errors import ProcessorError
from stream.aws import lazy_client
from stream.exceptions import PluginError, RecordError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from processors.glue_registry import RegistrySchema, SchemaVersion
    from stream.records import Record

__all__ = ["ContractError", "Schema", "json_pointer", "load_json_validator", "parse_avro"]

#: What to install when a library of the step is missing.
INSTALL = "pip install 'shardline[contracts]'"


class ContractError(ProcessorError, RecordError):
    """A record that does not follow the step's schema (dead-lettered, never retried).

    Attributes:
        pointer: the JSON pointer of the failing value in the record (``""``: the whole
            document); for Avro, ``""``.
        keyword: the JSON Schema keyword that failed (``required``, ``type``...); for Avro,
            ``"avro"``.
    """

    def __init__(self, message: str, pointer: str = "", keyword: str = "") -> None:
        super().__init__(message)
        self.pointer = pointer
        self.keyword = keyword


def json_pointer(path: Any) -> str:
    """An RFC 6901 pointer from a list of keys and indexes.

    >>> json_pointer(["items", 0, "a/b~c"])
    '/items/0/a~1b~0c'
    >>> json_pointer([])
    ''
    """
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _keyword(schema_path: Any) -> str:
    """The keyword that failed: the last name of the schema path (not an index)."""
    for part in reversed(list(schema_path)):
        if isinstance(part, str):
            return part
    return "(schema)"


def load_json_validator(schema: Any) -> Any:
    """A compiled ``jsonschema-rs`` validator; draft 2020-12 unless ``$schema`` says otherwise.

    Raises:
        PluginError: ``jsonschema-rs`` is not installed.
        ValueError: the schema is not a valid schema (``jsonschema_rs.ValidationError``).
    """
    try:
        import jsonschema_rs  # noqa: PLC0415  # only when a function has the step
    except ImportError:
        msg = f"the schema step needs jsonschema-rs for json_schema: {INSTALL}"
        raise PluginError(msg) from None
    if isinstance(schema, dict) and "$schema" not in schema:
        return jsonschema_rs.Draft202012Validator(schema)
    return jsonschema_rs.validator_for(schema)


def parse_avro(schema: Any) -> Any:
    """The parsed ``fastavro`` schema.

    Raises:
        PluginError: ``fastavro`` is not installed.
        ValueError: the schema is not a valid Avro schema (fastavro's ``SchemaParseException``
            or ``UnknownType``).
    """
    try:
        import fastavro  # noqa: PLC0415  # only when a function has the step
    except ImportError:
        msg = f"the schema step needs fastavro for avro: {INSTALL}"
        raise PluginError(msg) from None
    try:
        return fastavro.parse_schema(schema)
    except Exception as exc:  # fastavro's schema errors have no common base
        raise ValueError(f"invalid Avro schema: {type(exc).__name__}: {exc}") from exc


class Schema:
    """Check each record against a JSON Schema, decode it from Avro binary, or read it with
    the Glue Schema Registry version its header names.

    Args:
        json_schema: the JSON Schema (a mapping; ``compile`` bundles the file's content).
        avro: the Avro schema (a mapping, or a name/list as Avro allows).
        registry: ``{"name": SCHEMA, "registry": REGISTRY}``: records carry the registry's
            header and must be of a version of that schema.
        source: the file it came from, named in every failure (default ``schema``).
        client: the Glue client (registry only); by default the process's shared one,
            created on the first version fetched.
        wire_header: the registry header a producer writes before each record
            (:meth:`registered` sets it; see :meth:`to_wire`).

    Raises:
        ValueError: not exactly one contract, a schema given as a path (the plan bundles the
            content: compile the pipeline file), or a broken schema.
        PluginError: the library the contract needs is not installed.
    """

    client = lazy_client("glue")
    """The Glue client of a registry step, created when a version is first fetched."""

    def __init__(
        self,
        json_schema: Any = None,
        avro: Any = None,
        source: str | None = None,
        *,
        registry: Mapping[str, str] | None = None,
        client: Any = None,
        wire_header: bytes = b"",
    ) -> None:
        given_kinds = [json_schema is not None, avro is not None, registry is not None]
        if given_kinds.count(True) != 1:
            msg = "schema needs exactly one of json_schema, avro or registry"
            raise ValueError(msg)
        self._client = client
        self._avro: Any = None
        self._registry: tuple[str, str] | None = None
        self.wire_header = wire_header
        if registry is not None:
            from processors import glue_registry  # noqa: PLC0415  # light; only with the step

            self._versions = glue_registry.VERSIONS
            self._split = glue_registry.split_header
            self._header_error = glue_registry.RegistryRecordError
            #: Versions already checked to be this step's schema, by the id's 16 bytes: a
            #: warm record's whole path is one lookup (the contract is the version's own).
            self._accepted: dict[bytes, Schema] = {}
            self._registry = _registry_names(registry)
            self.kind = "registry"
            self.source = source or "registry {}/{}".format(*reversed(self._registry))
            return
        given = json_schema if json_schema is not None else avro
        if isinstance(given, str) and given.endswith((".json", ".avsc")):
            msg = (
                f"schema {given!r} is a file name: the plan carries the schema itself; make the "
                "plan with `shardline compile PIPELINE.yaml`, which bundles the file"
            )
            raise ValueError(msg)
        self.source = source or "schema"
        self.kind = "json_schema" if json_schema is not None else "avro"
        if json_schema is not None:
            self._validator = load_json_validator(json_schema)
            #: The compiled yes/no check (the fused chain calls it directly).
            self.is_valid: Callable[[Any], bool] = self._validator.is_valid
        else:
            self._avro = parse_avro(avro)
            import fastavro  # noqa: PLC0415  # loaded by parse_avro already

            self._read = fastavro.schemaless_reader

    def __call__(self, record: Record) -> Record:
        """The record, checked (JSON Schema) or decoded (Avro, a registry's payload)."""
        if self._avro is not None:
            record.set_json(self._decode(record.data))
            return record
        if self._registry is not None:
            record.set_json(self._from_registry(record.data))
            return record
        doc = record.json
        if self.is_valid(doc):
            return record
        raise self.failure(doc)

    def _glue(self) -> Any:
        """The Glue client, asked for only when a version must be fetched."""
        return self.client

    def document(self, payload: bytes) -> Any:
        """The JSON document of a payload of this contract: decoded (Avro) or parsed and
        checked (JSON Schema).

        Raises:
            ContractError: the payload does not follow the contract.
        """
        if self._avro is not None:
            return self._decode(payload)
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            msg = f"record is not JSON of {self.source}: {exc}"
            raise ContractError(msg, keyword="json") from None
        if self.is_valid(doc):
            return doc
        raise self.failure(doc)

    def _from_registry(self, data: bytes) -> Any:
        """The document of a registry record (see the module docstring)."""
        if data[:2] == b"\x03\x00":  # the header, uncompressed: maybe a version seen before
            contract = self._accepted.get(data[2:18])
            if contract is not None:
                return contract.document(data[18:])
        try:
            header, payload = self._split(data)
            version, contract = self._versions.get(header.key, self._glue, _version_contract)
        except self._header_error as exc:
            raise ContractError(f"{exc} ({self.source})", keyword="registry") from None
        if (version.schema, version.registry) != self._registry:
            msg = (
                f"record's schema version {version.version_id} is {version.qualified}, not a "
                f"version of {self.source}"
            )
            raise ContractError(msg, keyword="registry")
        if isinstance(contract, str):
            raise ContractError(contract, keyword="registry")
        self._accepted[header.key] = contract
        return contract.document(payload)

    def failure(self, doc: Any) -> ContractError:
        """The error for a document that :attr:`is_valid` refused: its first failing value."""
        error = next(iter(self._validator.iter_errors(doc)), None)
        if error is None:  # is_valid and iter_errors disagree: never seen; say so plainly
            return ContractError(f"record does not follow {self.source}")
        pointer = json_pointer(error.instance_path)
        keyword = _keyword(error.schema_path)
        where = pointer or "(the document)"
        msg = f"record does not follow {self.source}: at {where}, keyword {keyword}: "
        msg += str(error.message)
        return ContractError(msg, pointer, keyword)

    @classmethod
    def registered(cls, reference: RegistrySchema, client: Any = None) -> Schema:
        """A producer's contract for a registered schema: its latest (or given) version,
        fetched now, whose :meth:`to_wire` writes the registry header.

        Raises:
            ValueError: the schema or version is not in the registry, Glue refused the call,
                or the version is not an available Avro or JSON schema.
            PluginError: the library the version's format needs is not installed.
        """
        from processors.glue_registry import (  # noqa: PLC0415  # only with a registry schema
            encode_header,
            fetch_latest,
        )

        version = fetch_latest(reference, client)
        header = encode_header(version.version_id, reference.compression_byte)
        contract = _version_contract(version, header)
        if isinstance(contract, str):
            msg = f"{reference}: {contract}"
            raise ValueError(msg)
        return contract

    def to_wire(self, doc: Any) -> bytes:
        """The bytes a registry step reads: the header, then the Avro binary or the checked
        JSON of ``doc``, deflated when the header says zlib.

        Raises:
            ContractError: the document does not follow the version's schema.
            ValueError: not a registered contract (:meth:`registered`).
        """
        if len(self.wire_header) < 2:
            msg = f"{self.source} is not a registered schema: it has no registry header"
            raise ValueError(msg)
        if self._avro is not None:
            body = self.encode(doc)
        elif self.is_valid(doc):
            body = orjson.dumps(doc)
        else:
            raise self.failure(doc)
        if self.wire_header[1] != 0:  # the only other compression is zlib
            body = zlib.compress(body)
        return self.wire_header + body

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Schema:
        """The contract of a schema file: ``.json`` is a JSON Schema, ``.avsc`` an Avro
        schema; ``registry:[REGISTRY/]NAME[@VERSION]`` is a registered schema
        (:meth:`registered`, its latest version unless one is named).

        For producers (``Producer(schema=...)``, ``shardline produce --schema``), which share
        the file with the pipeline's ``schema`` step.

        Raises:
            ValueError: another suffix, a file that is not JSON, or a broken schema.
            OSError: the file cannot be read.
        """
        name = os.fspath(path)
        if name.startswith("registry:"):
            from processors.glue_registry import RegistrySchema  # noqa: PLC0415

            return cls.registered(RegistrySchema.parse(name))
        if not name.endswith((".json", ".avsc")):
            msg = f"schema {name!r}: a contract is a .json (JSON Schema) or .avsc (Avro) file"
            raise ValueError(msg)
        with open(name, "rb") as f:
            text = f.read()
        try:
            content = orjson.loads(text)
        except ValueError as exc:
            msg = f"schema {name!r} is not JSON: {exc}"
            raise ValueError(msg) from None
        if name.endswith(".json"):
            return cls(json_schema=content, source=name)
        return cls(avro=content, source=name)

    def encode(self, doc: Any) -> bytes:
        """The Avro binary of a JSON document (what the ``avro`` step decodes back).

        Raises:
            ContractError: the document does not follow the Avro schema (keyword ``avro``;
                the message names the failing field and value).
            ValueError: this is a JSON Schema contract (JSON records are sent as they are).
        """
        if self._avro is None:
            msg = f"{self.source} is a JSON Schema: only an Avro contract encodes records"
            raise ValueError(msg)
        from fastavro import schemaless_writer  # noqa: PLC0415  # loaded by parse_avro already
        from fastavro.validation import validate  # noqa: PLC0415

        try:
            validate(doc, self._avro, raise_errors=True)
            out = io.BytesIO()
            schemaless_writer(out, self._avro, doc)
        except Exception as exc:  # fastavro's ValidationError, or the writer's own errors
            errors = getattr(exc, "errors", None)
            reason = _avro_reason(errors[0]) if errors else f"{type(exc).__name__}: {exc}"
            msg = f"record does not follow {self.source} (Avro): {reason}"
            raise ContractError(msg, keyword="avro") from None
        return out.getvalue()

    def _decode(self, data: bytes) -> Any:
        stream = io.BytesIO(data)
        try:
            doc = self._read(stream, self._avro, None)
        except Exception as exc:  # truncated data, bad union index, bad UTF-8...
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            msg = (
                f"record is not Avro of {self.source}: {reason} at byte {stream.tell()} "
                f"of {len(data)}"
            )
            raise ContractError(msg, keyword="avro") from None
        if stream.tell() != len(data):
            extra = len(data) - stream.tell()
            msg = (
                f"record is not Avro of {self.source}: {extra} bytes left after the record "
                f"({len(data)} bytes; another schema, or a header the step does not read)"
            )
            raise ContractError(msg, keyword="avro")
        return doc


def _registry_names(registry: Mapping[str, str]) -> tuple[str, str]:
    """``(schema, registry)`` of a step's ``registry`` argument.

    Raises:
        ValueError: not a mapping with a ``name`` (and an optional ``registry``).
    """
    from processors.glue_registry import DEFAULT_REGISTRY  # noqa: PLC0415

    name = registry.get("name") if isinstance(registry, dict) else None
    where = registry.get("registry", DEFAULT_REGISTRY) if isinstance(registry, dict) else None
    if not isinstance(name, str) or not name or not isinstance(where, str) or not where:
        msg = f"schema registry needs {{name: SCHEMA, registry: REGISTRY}}, got {registry!r}"
        raise ValueError(msg)
    return name, where


def _version_contract(version: SchemaVersion, wire_header: bytes = b"") -> Schema | str:
    """The contract of a registered version, or why it cannot be one (every record of the
    version is refused with that reason).

    Raises:
        RegistryUnavailable: the library the version's format needs is not installed (the
            package is broken, not the record: retried, never dead-lettered).
    """
    from processors.glue_registry import RegistryUnavailable  # noqa: PLC0415

    source = f"{version.qualified} ({version.version_id})"
    if version.status != "AVAILABLE":
        return f"{source} is {version.status}, not AVAILABLE: the registry cannot vouch for it"
    if version.data_format not in ("AVRO", "JSON"):
        return f"{source} is {version.data_format}: the schema step reads AVRO and JSON"
    try:
        definition = orjson.loads(version.definition)
        if version.data_format == "AVRO":
            return Schema(avro=definition, source=source, wire_header=wire_header)
        return Schema(json_schema=definition, source=source, wire_header=wire_header)
    except PluginError as exc:
        raise RegistryUnavailable(str(exc), "PluginError") from exc
    except ValueError as exc:  # not JSON (orjson's error is one), or not a usable schema
        return f"{source} is not a usable {version.data_format} schema: {exc}"


def _avro_reason(error: Any) -> str:
    """One line from fastavro's ``ValidationErrorData``: the field, the value, the type.

    >>> from types import SimpleNamespace as E
    >>> _avro_reason(E(field="Order.total", datum="x", schema="double"))
    "at Order.total: 'x' is not a double"
    >>> _avro_reason(E(field="", datum=[1], schema={"type": "record", "name": "Order"}))
    'at (the record): [1] is not a record Order'
    """
    schema = error.schema
    if isinstance(schema, dict):
        expected = " ".join(str(schema[k]) for k in ("type", "name") if k in schema)
    elif isinstance(schema, list):
        expected = "one of " + ", ".join(map(str, schema))
    else:
        expected = str(schema)
    return f"at {error.field or '(the record)'}: {error.datum!r} is not a {expected}"
