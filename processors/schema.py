"""The ``schema`` step: a record must follow a contract, or it is dead-lettered with the reason.

Two contracts, one per step (the plan carries the schema itself, bundled by ``compile``
from the file the pipeline names, so the runtime reads no file)::

    - schema: {json_schema: schemas/order.json}   # JSON Schema, draft 2020-12 by default
    - schema: {avro: schemas/order.avsc}          # Avro binary -> its JSON document

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
from typing import TYPE_CHECKING, Any

import orjson

from processors.errors import ProcessorError
from stream.exceptions import PluginError, RecordError

if TYPE_CHECKING:
    from collections.abc import Callable

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
    """Check each record against a JSON Schema, or decode it from Avro binary.

    Args:
        json_schema: the JSON Schema (a mapping; ``compile`` bundles the file's content).
        avro: the Avro schema (a mapping, or a name/list as Avro allows).
        source: the file it came from, named in every failure (default ``schema``).

    Raises:
        ValueError: neither or both schemas, a schema given as a path (the plan bundles the
            content: compile the pipeline file), or a broken schema.
        PluginError: the library the contract needs is not installed.
    """

    def __init__(
        self, json_schema: Any = None, avro: Any = None, source: str | None = None
    ) -> None:
        if (json_schema is None) == (avro is None):
            msg = "schema needs exactly one of json_schema or avro"
            raise ValueError(msg)
        given = json_schema if json_schema is not None else avro
        if isinstance(given, str) and given.endswith((".json", ".avsc")):
            msg = (
                f"schema {given!r} is a file name: the plan carries the schema itself; make the "
                "plan with `shardline compile PIPELINE.yaml`, which bundles the file"
            )
            raise ValueError(msg)
        self.source = source or "schema"
        self.kind = "json_schema" if json_schema is not None else "avro"
        self._avro: Any = None
        if json_schema is not None:
            self._validator = load_json_validator(json_schema)
            #: The compiled yes/no check (the fused chain calls it directly).
            self.is_valid: Callable[[Any], bool] = self._validator.is_valid
        else:
            self._avro = parse_avro(avro)
            import fastavro  # noqa: PLC0415  # loaded by parse_avro already

            self._read = fastavro.schemaless_reader

    def __call__(self, record: Record) -> Record:
        """The record, checked (JSON Schema) or decoded (Avro)."""
        if self._avro is not None:
            record.set_json(self._decode(record))
            return record
        doc = record.json
        if self.is_valid(doc):
            return record
        raise self.failure(doc)

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
    def from_file(cls, path: str | os.PathLike[str]) -> Schema:
        """The contract of a schema file: ``.json`` is a JSON Schema, ``.avsc`` an Avro schema.

        For producers (``Producer(schema=...)``, ``shardline produce --schema``), which share
        the file with the pipeline's ``schema`` step.

        Raises:
            ValueError: another suffix, a file that is not JSON, or a broken schema.
            OSError: the file cannot be read.
        """
        name = os.fspath(path)
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

    def _decode(self, record: Record) -> Any:
        data = record.data
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
