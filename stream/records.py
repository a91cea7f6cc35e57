"""The record: the unit that flows from a Kinesis batch through the chain into the sinks.

A record keeps its data as bytes until a step needs the JSON document, then decodes it once
(orjson) and caches it, so a pipeline that never looks inside a record never pays for JSON
and a record that is not JSON fails only at the first step that needs it.

Why a slotted class and not a frozen dataclass: a record is created for every Kinesis record
of every batch inside Lambda, and a frozen dataclass's ``__init__`` goes through
``object.__setattr__`` once per field, several times the cost of this one. The position
fields (sequence number, sub-sequence number, shard, partition key, index) are read-only by
contract; the document is mutable on purpose, so that enrichers add fields in place without
copying.
"""

from __future__ import annotations

from binascii import a2b_base64

import orjson

from stream.exceptions import DecodeError

TYPE_CHECKING = False  # not typing's: the handler's import never loads typing (ARCHITECTURE.md)
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, SupportsIndex, TypeVar

    _R = TypeVar("_R", bound="Record")

__all__ = [
    "SEQUENCE_WIDTH",
    "EventRecord",
    "FinalRecord",
    "Record",
    "pad_sequence",
    "record_position",
]

#: Width to which sequence numbers are zero-padded when stored as strings. Kinesis sequence
#: numbers are decimal strings of up to 128 digits (56 in practice); DynamoDB numbers hold
#: only 38 digits and floats lose them, so they are compared as integers in Python and stored
#: as fixed-width strings whose lexicographic order is their numeric order.
SEQUENCE_WIDTH = 128

_UNSET: Any = object()
_loads = orjson.loads
_dumps = orjson.dumps


def pad_sequence(sequence_number: str, sub_sequence_number: int = 0) -> str:
    """Return the position as a fixed-width string that sorts like the numbers.

    >>> pad_sequence("49590338271490256608559692538361571095921575989136588898", 3)[-30:]
    '21575989136588898:000000000003'
    """
    return f"{int(sequence_number):0{SEQUENCE_WIDTH}d}:{sub_sequence_number:012d}"


def record_position(record: Record) -> str:
    """The record's position as stored by keyed sinks: :func:`pad_sequence`, plus the fan-out
    part when a step made several records from one (each part zero-padded, so that the
    strings still sort in the order the step returned them).

    >>> r = Record(b"{}", "k", "7")
    >>> record_position(r)[-14:]
    '7:000000000000'
    >>> r.part = "1.12"
    >>> record_position(r)[-28:]
    '7:000000000000#000001.000012'
    """
    base = pad_sequence(record.sequence_number, record.sub_sequence_number)
    if not record.part:
        return base
    return base + "#" + ".".join(f"{int(p):06d}" for p in record.part.split("."))


class Record:
    """One user record of a Kinesis batch: what a processor receives and returns.

    The document API, for processors (plugins included):

    * :meth:`get` reads one top-level field, :meth:`as_dict` the whole document (a JSON
      object: ``DecodeError`` otherwise), :attr:`json` any JSON value, :attr:`data` the bytes.
    * Edit ``record.as_dict()`` in place and return the record: the chain re-encodes the
      document of every record a plugin returns, so :meth:`touch` is never needed in a
      plugin (the built-ins call it for their own changes, to skip that re-encoding).
    * :meth:`set_json` replaces the document; :meth:`derive` makes another record at the same
      source position (return a list of them to fan out: each gets its own ``part``).
    * The position (``partition_key``, ``sequence_number``, ``sub_sequence_number``,
      ``shard_id``, ``arrival``, ``event_id``, :attr:`position`, :attr:`document_id`) is
      read-only by contract: sinks derive ids and ordering from it.

    >>> r = Record(b'{"user": "ada", "amount": 5}', "ada", "49590338271490256608559692538361")
    >>> r.get("amount"), r.get("country"), r.get("country", "unknown")
    (5, None, 'unknown')
    >>> r.as_dict()["amount"] += 1        # in place; return the record from the processor
    >>> r.json
    {'user': 'ada', 'amount': 6}
    >>> [part.get("item") for part in (r.derive({"item": 1}), r.derive({"item": 2}))]
    [1, 2]
    >>> r.set_json({"user": "ada"}); r.data
    b'{"user":"ada"}'
    >>> r.partition_key, r.position
    ('ada', (49590338271490256608559692538361, 0))

    Attributes:
        partition_key: the record's partition key (per-key ordering is by this key).
        sequence_number: the Kinesis sequence number, a decimal string. For a user record
            from a KPL aggregate it is the aggregate's (the parent's), which is what Lambda
            checkpoints and what ``batchItemFailures`` reports.
        sub_sequence_number: the index inside a KPL aggregate, 0 for a plain record.
        aggregated: whether the record came out of a KPL aggregate.
        shard_id: the shard, e.g. ``shardId-000000000000``.
        arrival: approximate arrival time, epoch seconds.
        event_id: Lambda's ``eventID`` (``shardId-…:<seq>``).
        event_source_arn: the stream ARN.
        index: position in the batch (0-based, after de-aggregation); records derived from
            one source record by fan-out share its index.
        part: "" for a record as it arrived; for one of several records a step returned
            for one record (fan-out), its place among them ("0", "1"...; "1.0" when a later
            step fans out again). Keyed sinks add it to ids and positions, so the parts of
            one source record are distinct documents and items, stable across redelivery.
        routes: sink names a route step chose, ``None`` while no route step has run.
        error: why the record could not even be decoded (a corrupt aggregate), else ``None``.
    """

    __slots__ = (
        "_data",
        "_doc",
        "_entry",
        "aggregated",
        "arrival",
        "error",
        "event_id",
        "event_source_arn",
        "index",
        "part",
        "partition_key",
        "routes",
        "sequence_number",
        "shard_id",
        "sub_sequence_number",
    )

    #: The Lambda event entry an :class:`EventRecord` reads its position from (kept once
    #: read: the event holds it anyway; ``None`` on a record built by ``Record(...)``).
    #: A record whose ``_data`` is ``None`` and whose document is not decoded holds its
    #: bytes there, as base64 text not decoded yet (see :attr:`data`).
    _entry: Mapping[str, Any] | None

    def __init__(  # noqa: PLR0917  # positional: the event parser's call is the hot path
        self,
        data: bytes,
        partition_key: str,
        sequence_number: str,
        sub_sequence_number: int = 0,
        aggregated: bool = False,
        shard_id: str = "",
        arrival: float = 0.0,
        event_id: str = "",
        event_source_arn: str = "",
        index: int = 0,
        error: str | None = None,
    ) -> None:
        # bytes; None once a step changed the document (encoded again when read), or, with
        # no document, while the bytes are still base64 text in the event entry (see data)
        self._data: bytes | None = data
        self._doc: Any = _UNSET
        self._entry = None
        self.partition_key = partition_key
        self.sequence_number = sequence_number
        self.sub_sequence_number = sub_sequence_number
        self.aggregated = aggregated
        self.shard_id = shard_id
        self.arrival = arrival
        self.event_id = event_id
        self.event_source_arn = event_source_arn
        self.index = index
        self.part = ""
        self.routes: tuple[str, ...] | None = None
        self.error = error

    @property
    def data(self) -> bytes:
        """The record's bytes; for a record whose document was replaced, its JSON encoding.

        A handler's record may leave its bytes in its event entry, as base64 text, until
        they are read (:func:`stream.event.records_from_event` with ``decode=False``; a
        fused filter that drops a record it decoded lets go of the bytes again): a batch then
        never holds all its records' bytes at once (``python -m bench memory``).
        """
        data = self._data
        if data is None:
            doc = self._doc
            if doc is _UNSET:  # still the entry's base64 text
                data = a2b_base64(self._entry["kinesis"]["data"], strict_mode=True)  # type: ignore[index]
            else:
                data = _dumps(doc)
            self._data = data
        return data

    @property
    def json(self) -> Any:
        """The decoded JSON document, decoded on first use and cached.

        A property over a slot, not a slot filled by ``__getattr__`` on a miss: measured
        with cachegrind, the miss's AttributeError costs more than four property reads.

        Raises:
            DecodeError: the data is not JSON (invalid UTF-8, NaN, nesting deeper than 1024
                levels...). The message names the record so the dead letter says where.
        """
        doc = self._doc
        if doc is _UNSET:
            data = self._data
            if data is None:  # the bytes are still the entry's base64 text (see data)
                data = self.data
            try:
                doc = self._doc = _loads(data)
            except orjson.JSONDecodeError as exc:
                msg = (
                    f"record {self.sequence_number}/{self.sub_sequence_number} of "
                    f"{self.shard_id or 'the batch'} is not JSON ({exc}); a step that reads "
                    "fields needs JSON data: fix the producer or filter it out before this step"
                )
                raise DecodeError(msg) from None
        return doc

    @property
    def decoded(self) -> bool:
        """Whether the JSON document has been decoded (or set)."""
        return self._doc is not _UNSET

    def as_dict(self) -> dict[str, Any]:
        """The document, which must be a JSON object: what steps that read fields need.

        Raises:
            DecodeError: the data is not JSON, or is JSON but not an object.
        """
        doc = self.json
        if type(doc) is not dict:
            msg = (
                f"record {self.sequence_number}/{self.sub_sequence_number} is JSON "
                f"{type(doc).__name__}, not an object; steps that read fields need an object"
            )
            raise DecodeError(msg)
        return doc

    def get(self, field: str, default: Any = None) -> Any:
        """The top-level ``field`` of the document, or ``default`` when it has none: what
        ``dict.get`` does on :meth:`as_dict`. A dotted name is one key, not a path (read
        nested fields with ``record.as_dict()["a"]["b"]``).

        >>> Record(b'{"a": {"b": 1}, "a.b": 2}', "k", "1").get("a.b")
        2

        Raises:
            DecodeError: the data is not JSON, or is JSON but not an object: the record is
                dead-lettered with the reason, as for any step that reads fields.
        """
        return self.as_dict().get(field, default)

    def set_json(self, doc: Any) -> None:
        """Replace the document; the bytes are re-encoded lazily when a sink asks."""
        self._doc = doc
        self._data = None

    def touch(self) -> None:
        """Mark the document as changed in place, so ``data`` is re-encoded from it.

        Plugins never need it: the chain re-encodes what a plugin returns. Built-in steps
        call it so that the chain may skip that for them.
        """
        if self._doc is not _UNSET:
            self._data = None

    def derive(self, doc: Any) -> Record:
        """A new record at the same source position with another document (for fan-out).

        A processor that returns several records from one returns a list of derived records;
        the chain gives each its ``part``, so keyed sinks keep them as distinct items.
        """
        return self._derive_as(Record, doc)

    def final(self, doc: dict[str, Any], field: str) -> Record:
        """A derived record (:meth:`derive`) that is the only one there will ever be with
        its ``doc[field]``: a window's result by its ``window_id``
        (:class:`FinalRecord`); a plain derived record when ``doc`` has no such field."""
        final_id = doc.get(field)
        if final_id is None:
            return self._derive_as(Record, doc)
        new = self._derive_as(FinalRecord, doc)
        new.final_field = field
        new.final_id = final_id
        return new

    def _derive_as(self, cls: type[_R], doc: Any) -> _R:
        new = cls(
            b"",
            self.partition_key,
            self.sequence_number,
            sub_sequence_number=self.sub_sequence_number,
            aggregated=self.aggregated,
            shard_id=self.shard_id,
            arrival=self.arrival,
            event_id=self.event_id,
            event_source_arn=self.event_source_arn,
            index=self.index,
        )
        new.part = self.part
        new.set_json(doc)
        return new

    @property
    def position(self) -> tuple[int, int]:
        """(sequence number as an integer, sub-sequence number): the total order in a shard."""
        return int(self.sequence_number), self.sub_sequence_number

    @property
    def document_id(self) -> str:
        """A stable id for the source record: the event id, plus the sub-sequence number for
        a record from a KPL aggregate (all its user records share the event id), plus the
        fan-out part for one of several records a step made from one."""
        doc_id = self.event_id
        if self.aggregated:
            doc_id = f"{doc_id}:{self.sub_sequence_number}"
        if self.part:
            doc_id = f"{doc_id}#{self.part}"
        return doc_id

    def record_id(self, field: str) -> str | None:
        """The id a producer gave this record in the JSON field ``field``
        (``Producer(record_id=field)``), or ``None`` if the record has no such field.

        Kinesis has no idempotent put: a PutRecords call whose answer was lost is sent again
        and its records are in the stream twice, at two positions. Their record id is the
        same, so a consumer keeps the first and drops the copy; :attr:`document_id` and the
        position cannot tell them apart. Records a step made from one (fan-out, ``part``)
        share their source's id.

        >>> Record(b'{"rid": "3f0c-7", "v": 1}', "k", "1").record_id("rid")
        '3f0c-7'
        >>> [Record(data, "k", "1").record_id("rid") for data in (b'{"rid": 42}', b"{}")]
        ['42', None]

        Raises:
            DecodeError: the data is not a JSON object, or the field holds something that is
                not an id (a non-empty string or an integer).
        """
        value = self.as_dict().get(field)
        if value is None:
            return None
        if (isinstance(value, str) and value) or type(value) is int:
            return str(value)
        msg = (
            f"record {self.sequence_number}/{self.sub_sequence_number} has {value!r} in its "
            f"record id field {field!r}; a record id is a non-empty string or an integer"
        )
        raise DecodeError(msg)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return (
            self.shard_id == other.shard_id
            and self.sequence_number == other.sequence_number
            and self.sub_sequence_number == other.sub_sequence_number
            and self.partition_key == other.partition_key
            and self.data == other.data
        )

    __hash__ = None  # type: ignore[assignment]  # mutable document: not hashable

    # Pickle and copy (plugins may do either): an EventRecord's position is read first, so
    # the copy is a plain Record; the event entry (a base64 copy of the data) is left out,
    # and so is a document not decoded yet (the "unset" marker is one object per process:
    # a pickled one would come back as a document).

    def __reduce_ex__(self, protocol: SupportsIndex) -> str | tuple[Any, ...]:
        if isinstance(self, EventRecord):  # still lazy (settled ones are Records)
            self._settle()
        return object.__reduce_ex__(self, protocol)

    def __getstate__(self) -> tuple[None, dict[str, Any]]:
        state = {}
        for name in _STATE:
            try:
                state[name] = getattr(self, name)
            except AttributeError:
                continue  # a slot never set
        if state.get("_doc") is _UNSET:
            del state["_doc"]
            state["_data"] = self.data  # bytes still in the entry, which the copy has not
        return None, state

    def __setstate__(self, state: tuple[None, dict[str, Any]]) -> None:
        self._doc = _UNSET
        self._entry = None
        for name, value in state[1].items():
            setattr(self, name, value)

    def __repr__(self) -> str:
        return (
            f"Record(shard_id={self.shard_id!r}, sequence_number={self.sequence_number!r}, "
            f"sub_sequence_number={self.sub_sequence_number}, "
            f"partition_key={self.partition_key!r}, data={self.data[:60]!r})"
        )


#: The position fields an :class:`EventRecord` reads from its event entry on first use.
_POSITION = (
    "aggregated",
    "arrival",
    "event_id",
    "event_source_arn",
    "partition_key",
    "sequence_number",
    "shard_id",
    "sub_sequence_number",
)


#: The slots a pickled or copied record carries: all but the event entry.
_STATE = tuple(name for name in Record.__slots__ if name != "_entry")


class FinalRecord(Record):
    """A record that is the only one there will ever be with ``final_id`` in the field
    ``final_field``: a window's result (``window_id`` = ``FUNCTION/KEY/START``; a window is
    closed once and its result is final once emitted, README "Windows"; with a key on
    several shards each shard's window emits its own part under one ``window_id``, and a
    sink that takes this record as final keeps the part written last).

    Why a class of its own: a ``latest`` DynamoDB sink keyed by that field writes it with
    ``BatchWriteItem``, 25 items a call, instead of one conditional ``PutItem`` each
    (:mod:`sinks.dynamodb`). The condition ("never overwritten by an older record")
    protects a key from its older records; a key that only ever has one record has no
    older one, and writing the same result again (a redelivery re-emits it from the window's
    outbox) changes nothing but ``_written_at``. A step after the window that makes a new
    record (``derive``) makes a plain :class:`Record`; one that changes the document in
    place keeps the class, so the sink also checks that the field still holds ``final_id``.
    Made only by :meth:`Record.final`; a copy or pickle keeps both fields.
    """

    __slots__ = ("final_field", "final_id")

    #: the field that names the record's key (``window_id``), and the value it had when made
    final_field: str
    final_id: Any

    def __getstate__(self) -> tuple[None, dict[str, Any]]:
        state = super().__getstate__()
        state[1]["final_field"] = self.final_field
        state[1]["final_id"] = self.final_id
        return state

    def is_final_in(self, field: str) -> bool:
        """Whether a sink keyed by ``field`` may take this record as its key's only one:
        keyed by the final field, which still holds the final id.

        >>> r = Record(b"{}", "k", "7").final({"window_id": "f/u1/60"}, "window_id")
        >>> r.is_final_in("window_id"), r.is_final_in("key")
        (True, False)
        >>> r.set_json({"window_id": "other"})
        >>> r.is_final_in("window_id")
        False
        """
        if field != self.final_field:
            return False
        doc = self.json
        return type(doc) is dict and doc.get(field) == self.final_id


class EventRecord(Record):
    """A record of a Lambda Kinesis event whose position is read from its entry on first use.

    Why: the handler makes one record per Kinesis record, and most batches never read most
    records' positions (a filter drops the record, a sink that needs no key takes it). Filling
    the eight position fields and calling ``__init__`` was a third of the handler's cost
    beyond base64 and JSON (``python -m bench handler``); :func:`stream.event.records_from_event`
    instead sets the data, the index and the entry (the event's own dict, alive for the
    invocation anyway) and nothing else.

    The first read or write of a position field (``partition_key``, ``sequence_number``,
    ``sub_sequence_number``, ``aggregated``, ``shard_id``, ``arrival``, ``event_id``,
    ``event_source_arn``, and so :attr:`position`, :attr:`document_id`, ``==``) fills all of
    them from the entry and turns the object into a plain :class:`Record` (same slots, so
    ``__class__`` can change): from then on every read is a slot read, and the record is
    indistinguishable from one built by ``Record(...)``. Everything else (the data, the
    document, ``index``, ``part``, ``routes``, ``error``) is a slot from the start.

    Only :func:`stream.event.records_from_event` makes them: ``EventRecord()`` takes no
    arguments (``object.__init__``: the cheapest allocation CPython offers a slotted class,
    cheaper than ``object.__new__(cls)``) and the parser sets those slots itself.
    """

    __slots__ = ()
    __init__ = object.__init__  # see above: the parser fills the slots

    def _settle(self) -> None:
        """Fill the position from the entry and become a plain :class:`Record`.

        The slots first, through :class:`Record`'s own descriptors, and the class last:
        sinks run in threads (:mod:`stream.overlap`), and a thread that reads a field while
        another settles the record sees either an EventRecord (and settles it again, to the
        same values) or a Record whose fields are all set.
        """
        entry: Any = self._entry
        kinesis = entry["kinesis"]
        event_id = entry.get("eventID") or ""
        fill = _FILL
        fill["partition_key"](self, kinesis.get("partitionKey", ""))
        fill["sequence_number"](self, kinesis["sequenceNumber"])
        fill["sub_sequence_number"](self, 0)
        fill["aggregated"](self, False)
        fill["shard_id"](self, event_id.rpartition(":")[0])
        fill["arrival"](self, kinesis.get("approximateArrivalTimestamp") or 0.0)
        fill["event_id"](self, event_id)
        fill["event_source_arn"](self, entry.get("eventSourceARN", ""))
        self.__class__ = Record  # type: ignore[assignment]  # the same layout, on purpose


#: Record's own slot setters of the position fields (EventRecord's names are properties).
_FILL: dict[str, Any] = {name: Record.__dict__[name].__set__ for name in _POSITION}


def _settling(name: str) -> property:
    """A position field of :class:`EventRecord`: settle the record, then use the slot."""
    slot = Record.__dict__[name]

    # EventRecord._settle, not self._settle: another thread may have settled the record
    # into a plain Record since this property was looked up (settling twice is harmless)
    settle = EventRecord._settle

    def get(self: EventRecord) -> Any:
        if type(self) is EventRecord:
            settle(self)
        return slot.__get__(self, Record)

    def put(self: EventRecord, value: Any) -> None:
        if type(self) is EventRecord:
            settle(self)
        slot.__set__(self, value)

    return property(get, put, doc=f"The record's {name} (read from the event entry).")


for _name in _POSITION:
    setattr(EventRecord, _name, _settling(_name))
del _name
