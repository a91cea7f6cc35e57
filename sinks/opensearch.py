"""The ``opensearch`` sink: records as documents, written with ``_bulk``, idempotently.

Each record becomes a document whose ``_source`` is the record's JSON object, in the index
its template names (``events-{arrival:%Y.%m.%d}``; a record that lacks a template field, or
is not a JSON object, is permanent with the reason). Bulk bodies are NDJSON built with
orjson and sent as bytes, so nothing is encoded twice; they are cut at ``max_bytes`` (the
action line and the source line of each document counted together) and ``max_items``.

Idempotency and order, the two ways:

* No ``id`` setting: ``_id`` is the record's :attr:`~stream.records.Record.document_id`
  (the event id, plus the sub-sequence number for a user record of a KPL aggregate), so
  every record is its own document, written with the ``create`` op. A 409
  ``version_conflict_engine_exception`` means an earlier delivery wrote it: ok. Replays
  therefore add nothing and change nothing. Records at one position (fan-out twins routed
  to this sink) share one document: the first is written, the others share its fate.
* ``id: FIELD``: records with the same field value share a document (per index), as
  DynamoDB ``latest`` shares an item. The batch is collapsed to the newest record per
  (index, ``_id``) (older ones share its fate; when OpenSearch refuses the newest, e.g. a
  mapping conflict, that record alone is permanent and the next newer-most one is written
  in its place) and the document carries ``_position``
  (:func:`~stream.records.pad_sequence`, a fixed-width string that sorts like the
  numbers). Kinesis sequence numbers have 56 digits and do not fit OpenSearch's 63-bit
  external versions, so writes use optimistic concurrency instead: ``_mget`` reads the
  stored ``_position`` with ``_seq_no``/``_primary_term``; a document whose position is
  equal or newer is left alone (ok), an older one is replaced with ``index`` +
  ``if_seq_no``/``if_primary_term``, a missing one is made with ``create``. A 409 then
  means another writer got there in between: read again and decide again, within
  ``max_attempts``. An older record therefore never overwrites a newer one, whatever
  Lambda redelivers, bisects or replays. Positions order the records of one shard: the id
  field should not span partition keys of different shards.

Why ``per_key_safe`` holds in both ways: with the event id, each record has its own
document, and the order in which different documents are written changes no document's
state; with an ``id`` field, every write is conditional on the position. So the base class
may send a whole batch in one ``_write``, which retries only what failed.

Calls: a round's ``_mget`` calls, then its ``_bulk`` calls, go at once in waves of at most
:data:`stream.overlap.WAVE_WIDTH` (:func:`stream.overlap.waves`); each document is in one
call only, so they need not wait for each other, and their answers are read in call order.

Failures: per item, 429 and 5xx are retried inside the invocation (backoff with full
jitter, only the failed items); other 4xx (mapping and parsing errors, invalid index
names) are permanent, the reason naming OpenSearch's error type and reason. A whole request
answered 400 or 413 is about its content: it is split in halves until the offending
document stands alone, which is then permanent. Any other whole-request failure (429, 5xx,
401/403, timeouts, refused connections) is about the endpoint: no later wave is sent in
that round, and the round is retried after backoff; when attempts run out, the records are
retryable, so Lambda delivers them again.

The client (opensearch-py, and boto3 for SigV4 credentials) is created on first use and
reused while the Lambda is warm; importing this module imports neither.
"""

from __future__ import annotations

import os
import time
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from sinks.base import (
    BASE_DELAY_S,
    MAX_ATTEMPTS,
    OK,
    Outcome,
    Sink,
    Status,
    backoff_delay,
    permanent,
    retryable,
)
from sinks.templates import Template, TemplateError
from stream.exceptions import DecodeError
from stream.overlap import WAVE_WIDTH, run_all, waves
from stream.records import record_position

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from stream.records import Record

__all__ = ["MAX_ID_BYTES", "POSITION", "OpenSearchSink"]

#: OpenSearch rejects a whole ``_bulk`` request whose ``_id`` is longer than this (UTF-8).
MAX_ID_BYTES = 512
#: The source field that holds the record's position in ``id`` mode.
POSITION = "_position"
_AUTH_MODES = ("sigv4", "none")
_CONFLICT = 409
# Refusals about the index, not the document: an older version would be refused alike.
_EVERY_VERSION = frozenset(
    {
        "invalid_index_name_exception",
        "index_closed_exception",
        "cluster_block_exception",
        "security_exception",
    }
)
_dumps = orjson.dumps


class _Doc:
    """One document to write and the records (indexes into the batch) that share its fate.

    In ``id`` mode, ``versions`` holds every member's (position, member, source): the
    newest is written, and when OpenSearch refuses it, :meth:`fall_back` puts the next
    newer-most in its place.
    """

    __slots__ = (
        "action",
        "doc_id",
        "index",
        "members",
        "outcome",
        "position",
        "source",
        "versions",
    )

    def __init__(self, index: str, doc_id: str, source: bytes, position: str, member: int):
        self.index = index
        self.doc_id = doc_id
        self.source = source
        self.position = position
        self.members = [member]
        self.action = b""
        self.outcome: Outcome = OK
        self.versions: list[tuple[str, int, bytes]] | None = None

    def meta(self) -> dict[str, Any]:
        return {"_index": self.index, "_id": self.doc_id}

    def fall_back(self) -> int | None:
        """Drop the refused newest version for the next newer-most one; the refused
        member, or ``None`` when no older version is left (or the error would refuse
        every version alike)."""
        versions = self.versions
        if not versions or len(versions) < 2 or self.outcome.error in _EVERY_VERSION:
            return None
        versions.sort()
        _, refused, _ = versions.pop()
        self.members.remove(refused)
        self.position, _, self.source = versions[-1]
        self.action = b""
        self.outcome = OK
        return refused


class OpenSearchSink(Sink):
    """Write records to OpenSearch as documents; see the module docstring for the modes.

    Why ``Urllib3HttpConnection``: opensearch-py imports ``requests`` either way, but per
    request the urllib3 connection is a pool ``urlopen``, while ``requests`` adds a session
    layer (environment proxy lookup, hooks, cookie jar, adapter) to every call; urllib3 is
    also what botocore uses. SigV4 goes through opensearch-py's ``Urllib3AWSV4SignerAuth``
    (the urllib3 twin of ``AWSV4SignerAuth``), which signs with frozen credentials. The
    calls of a wave share the client from several threads: opensearch-py's transport keeps
    no state per request, and urllib3's pool is thread-safe; the pool keeps up to
    ``WAVE_WIDTH`` connections (urllib3's default keeps one, opening and dropping the
    others on every wave).

    Args:
        name: the sink's name in the pipeline file.
        endpoint: the domain's URL, e.g. ``https://search-x.us-east-1.es.amazonaws.com``.
        index: the index template (``{field}``, ``{field.sub}``, ``{arrival:FMT}``,
            ``{now:FMT}``).
        id: the record field (dotted for nested) whose value is the ``_id``; ``None``: the
            record's event id, one document per record.
        auth: ``sigv4`` (the function's credentials, service ``es``) or ``none``.
        client: an ``opensearchpy.OpenSearch``; by default one is created on first use and
            reused while the Lambda is warm. A client passed in is not closed by ``close``.
        max_bytes: most bytes of documents (action and source lines) per ``_bulk`` call.
        max_items: most documents per ``_bulk`` or ``_mget`` call.
        max_attempts: rounds of writing (and, with ``id``, reading) before what still fails
            is reported retryable.
        base_delay: first backoff delay in seconds; doubles per round up to ``MAX_DELAY_S``
            (2 s), full jitter (:func:`stream.aws.backoff_delay`).
        timeout: seconds per HTTP request of the default client (connect and read).
        region: the region to sign for; default ``AWS_REGION``, ``AWS_DEFAULT_REGION``,
            then boto3's configuration.
        sleep: injectable for tests.
        now: the clock of ``{now:FMT}`` in the index template.

    Raises:
        ValueError: an unknown ``auth``, a malformed template or a non-positive limit.
    """

    shares_records: ClassVar[bool] = True  # never edits a record: no copies (sinks.base)
    max_batch: ClassVar[int] = 10_000  # a whole Lambda batch: chunking is done here, by bytes
    per_key_safe: ClassVar[bool] = True  # one document per record, or position-conditional

    def __init__(
        self,
        name: str,
        *,
        endpoint: str,
        index: str,
        id: str | None = None,  # the pipeline file's name for the setting
        auth: str = "sigv4",
        client: Any = None,
        max_bytes: int = 5 * 1024 * 1024,
        max_items: int = 500,
        max_attempts: int = MAX_ATTEMPTS,
        base_delay: float = BASE_DELAY_S,
        timeout: float = 10.0,
        region: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name)
        if auth not in _AUTH_MODES:
            msg = f"opensearch sink {name!r}: auth {auth!r}, expected 'sigv4' or 'none'"
            raise ValueError(msg)
        if min(max_bytes, max_items, max_attempts) < 1:
            msg = (
                f"opensearch sink {name!r}: max_bytes, max_items and max_attempts must be "
                f"at least 1 (got {max_bytes}, {max_items}, {max_attempts})"
            )
            raise ValueError(msg)
        self.endpoint = endpoint
        self.index = Template(index, now=now)
        self.id_field = id or None
        self.auth = auth
        self.region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        self._client = client
        self._owns_client = client is None
        self._max_bytes = max_bytes
        self._max_items = max_items
        self._max_attempts = max_attempts
        self._base_delay = base_delay
        self._timeout = timeout
        self._sleep = sleep

    @property
    def client(self) -> Any:
        """The OpenSearch client, created on first use (opensearch-py is imported only then)."""
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def close(self) -> None:
        """Close the client this sink created (a client passed in belongs to the caller)."""
        if self._client is not None and self._owns_client:
            self._client.close()
            self._client = None

    def _make_client(self) -> Any:
        from opensearchpy import (  # noqa: PLC0415  # heavy: only when an OpenSearch sink writes
            OpenSearch,
            Urllib3AWSV4SignerAuth,
            Urllib3HttpConnection,
        )

        http_auth = None
        if self.auth == "sigv4":
            import boto3  # noqa: PLC0415  # heavy, and only SigV4 needs it

            session = boto3.Session()
            credentials = session.get_credentials()
            region = self.region or session.region_name
            if credentials is None or not region:
                missing = "credentials" if credentials is None else "a region"
                msg = (
                    f"opensearch sink {self.name!r}: auth sigv4 found no {missing} (set "
                    "AWS_REGION and the AWS credentials, or auth: none for a local endpoint)"
                )
                raise ValueError(msg)
            http_auth = Urllib3AWSV4SignerAuth(credentials, region, "es")
        return OpenSearch(
            hosts=[self.endpoint],
            http_auth=http_auth,
            connection_class=Urllib3HttpConnection,
            timeout=self._timeout,
            max_retries=0,  # retries are ours: only failed items, with backoff and jitter
            retry_on_timeout=False,
            pool_maxsize=WAVE_WIDTH,  # a wave's calls each on a connection of their own
        )

    # -- building documents -------------------------------------------------------------

    def _write(self, items: Sequence[Record]) -> list[Outcome]:
        outcomes: list[Outcome] = [OK] * len(items)
        docs = self._collect(items, outcomes)
        pending = docs
        while pending:
            self._deliver(pending)
            pending = []
            for doc in docs:
                if doc.outcome.status is Status.PERMANENT:
                    outcome = doc.outcome
                    refused = doc.fall_back()
                    if refused is not None:  # that record alone: write the next older one
                        outcomes[refused] = outcome
                        pending.append(doc)
        for doc in docs:
            for i in doc.members:
                outcomes[i] = doc.outcome
        return outcomes

    def _collect(self, items: Sequence[Record], outcomes: list[Outcome]) -> list[_Doc]:
        """One document per (index, ``_id``); records that cannot be placed are permanent."""
        by_key: dict[tuple[str, str], _Doc] = {}
        latest = self.id_field is not None
        for i, record in enumerate(items):
            try:
                index, doc_id, source, position = self._document(record)
            except (TemplateError, DecodeError) as exc:
                outcomes[i] = permanent(f"sink {self.name!r}: {exc}", type(exc).__name__)
                continue
            except orjson.JSONEncodeError as exc:  # a bad record never fails its batch
                outcomes[i] = permanent(
                    f"sink {self.name!r} cannot write the record as JSON ({exc}): a step put "
                    "a value JSON cannot hold into the document, or it is nested deeper than "
                    "orjson writes (255 levels); fix that step or the producer",
                    "JSONEncodeError",
                )
                continue
            key = (index, doc_id)
            doc = by_key.get(key)
            if doc is None:
                doc = by_key[key] = _Doc(index, doc_id, source, position, i)
                if latest:
                    doc.versions = [(position, i, source)]
                continue
            doc.members.append(i)
            if latest and doc.versions is not None:
                doc.versions.append((position, i, source))
                if position >= doc.position:  # the newest record stands for the rest
                    doc.source, doc.position = source, position
        docs = list(by_key.values())
        if not latest:
            for doc in docs:
                doc.action = _dumps({"create": doc.meta()})
        return docs

    def _document(self, record: Record) -> tuple[str, str, bytes, str]:
        """(index, ``_id``, source line, position) of a record.

        Raises:
            DecodeError: the record is not a JSON object.
            TemplateError: the index template or the id field has no usable value.
            orjson.JSONEncodeError: the document cannot be encoded (a value a step put in
                that JSON cannot hold, or nesting deeper than orjson writes).
        """
        doc = record.as_dict()
        index = self.index.render(record)
        if self.id_field is None:  # the position is not needed: the id is
            data = record.data
            source = data if b"\n" not in data else _dumps(doc)  # NDJSON: one line each
            doc_id = record.document_id
            if doc_id:
                return index, doc_id, source, ""
            position = record_position(record)
            return index, f"{record.shard_id}:{position}", source, position
        position = record_position(record)
        doc_id = _id_value(doc, self.id_field)
        source = _dumps({**doc, POSITION: position})
        if len(doc_id.encode()) > MAX_ID_BYTES:
            msg = (
                f"_id {doc_id[:40]!r}... is longer than OpenSearch's {MAX_ID_BYTES} bytes; "
                "use a shorter id field"
            )
            raise TemplateError(msg)
        return index, doc_id, source, position

    # -- rounds of writing --------------------------------------------------------------

    def _deliver(self, docs: list[_Doc]) -> None:
        """Write, and write again what failed retryably, for at most ``max_attempts`` rounds.

        Every document leaves with its outcome set; those still failing keep the last
        retryable outcome. A round of only version conflicts starts again without waiting:
        a concurrent writer is done, the position must be read again.
        """
        pending = docs
        for attempt in range(self._max_attempts):
            if attempt and any(d.outcome.error != "version_conflict" for d in pending):
                self._sleep(backoff_delay(attempt, self._base_delay))
            again: list[_Doc] = []
            ready = pending if self.id_field is None else self._plan(pending, again)
            self._bulk(ready, again)
            if not again:
                return
            pending = again

    def _plan(self, docs: list[_Doc], again: list[_Doc]) -> list[_Doc]:
        """Read stored positions; return the documents to write, each with its action line.

        A document whose stored position is equal or newer is done (ok). When ``_mget``
        answers 400 or 413 the documents fall back to ``create``, which never overwrites:
        the bulk answer then says per document what is wrong (a 409 is read again).
        """
        ready: list[_Doc] = []
        down: Outcome | None = None
        size = self._max_items
        chunks = [docs[start : start + size] for start in range(0, len(docs), size)]
        for wave in waves(chunks):  # distinct documents: a wave's reads go at once
            if down is not None:
                for chunk in wave:
                    _fail(chunk, down, again)
                continue
            _ = self.client  # made here, before the calls of the wave share it
            answers = run_all([partial(self._read, chunk) for chunk in wave])
            for chunk, (failed, found) in zip(wave, answers, strict=True):
                if failed is not None:
                    down = down or failed
                    _fail(chunk, failed, again)
                    continue
                for doc, stored in zip(chunk, found, strict=True):
                    if self._decide(doc, stored):
                        ready.append(doc)
                    elif doc.outcome is not OK:
                        again.append(doc)
        return ready

    def _read(self, chunk: list[_Doc]) -> tuple[Outcome | None, list[dict[str, Any]]]:
        """One ``_mget`` of the stored positions: (the outcome that stops the round when
        the endpoint failed as a whole, what was found for each document; ``{}`` when the
        request was refused for its content, so that ``create`` decides)."""
        wanted = [{**d.meta(), "_source": [POSITION]} for d in chunk]
        try:
            found = self.client.mget(body=_dumps({"docs": wanted})).get("docs", [])
        except Exception as exc:
            split, outcome = self._classify(exc, "_mget")
            if not split:
                return outcome, []
            found = [{}] * len(chunk)
        if len(found) != len(chunk):
            found = [{}] * len(chunk)
        return None, found

    def _decide(self, doc: _Doc, stored: dict[str, Any]) -> bool:
        """Set the action line from what ``_mget`` found; False when nothing is to be sent."""
        if not stored.get("found"):  # missing, or an index that does not exist yet
            doc.action = _dumps({"create": doc.meta()})
            return True
        position = (stored.get("_source") or {}).get(POSITION)
        if isinstance(position, str) and position >= doc.position:
            doc.outcome = OK  # an equal or newer record is there already
            return False
        seq_no, term = stored.get("_seq_no"), stored.get("_primary_term")
        if not isinstance(seq_no, int) or not isinstance(term, int):
            doc.outcome = retryable(
                f"OpenSearch _mget gave no _seq_no/_primary_term for {doc.doc_id!r} in index "
                f"{doc.index!r}; sink {self.name!r} needs them to write conditionally "
                "(OpenSearch 1.0 or later)",
                "MissingSeqNo",
            )
            return False
        doc.action = _dumps({"index": {**doc.meta(), "if_seq_no": seq_no, "if_primary_term": term}})
        return True

    def _bulk(self, docs: list[_Doc], again: list[_Doc]) -> None:
        """Send the documents in ``_bulk`` calls, in waves (:mod:`stream.overlap`): the
        calls of a wave go at once (each document is in one call only, and the order in
        which different documents are written changes none of them); after a call that
        failed as a whole, the later waves are not sent."""
        down: Outcome | None = None
        for wave in waves(list(self._chunks(docs))):
            if down is not None:
                for chunk in wave:
                    _fail(chunk, down, again)
                continue
            _ = self.client  # made here, before the calls of the wave share it
            for stop, retry in run_all([partial(self._send_apart, chunk) for chunk in wave]):
                again += retry  # in call order, as if sent in turn
                down = down or stop

    def _send_apart(self, chunk: list[_Doc]) -> tuple[Outcome | None, list[_Doc]]:
        """:meth:`_send` with a list of its own for what to send again (calls of a wave run
        in threads of their own)."""
        again: list[_Doc] = []
        return self._send(chunk, again), again

    def _chunks(self, docs: list[_Doc]) -> Iterator[list[_Doc]]:
        """Cut at ``max_items`` documents or ``max_bytes`` of NDJSON; a document larger than
        ``max_bytes`` goes alone (the domain's ``http.max_content_length`` decides)."""
        chunk: list[_Doc] = []
        size = 0
        for doc in docs:
            n = len(doc.action) + len(doc.source) + 2
            if chunk and (len(chunk) >= self._max_items or size + n > self._max_bytes):
                yield chunk
                chunk, size = [], 0
            chunk.append(doc)
            size += n
        if chunk:
            yield chunk

    def _send(self, chunk: list[_Doc], again: list[_Doc]) -> Outcome | None:
        """One ``_bulk`` call; returns the outcome that stops the round, if the endpoint
        failed as a whole. A request answered 400 or 413 is split until one document is
        left, which is then permanent."""
        body = b"".join(b"%b\n%b\n" % (d.action, d.source) for d in chunk)
        try:
            response = self.client.bulk(body=body)
        except Exception as exc:
            split, outcome = self._classify(exc, "_bulk")
            if not split:
                _fail(chunk, outcome, again)
                return outcome
            if len(chunk) == 1:
                chunk[0].outcome = outcome
                return None
            half = len(chunk) // 2
            down = self._send(chunk[:half], again)
            if down is not None:
                _fail(chunk[half:], down, again)
                return down
            return self._send(chunk[half:], again)
        results = response.get("items", [])
        if len(results) != len(chunk):
            outcome = retryable(
                f"OpenSearch answered {len(results)} results for {len(chunk)} bulk actions "
                f"(sink {self.name!r})",
                "BulkMismatch",
            )
            _fail(chunk, outcome, again)
            return None
        if not response.get("errors"):
            for doc in chunk:
                doc.outcome = OK
            return None
        for doc, result in zip(chunk, results, strict=True):
            doc.outcome = self._item_outcome(doc, next(iter(result.values())))
            if doc.outcome.status is Status.RETRYABLE:
                again.append(doc)
        return None

    # -- classification -----------------------------------------------------------------

    def _item_outcome(self, doc: _Doc, result: dict[str, Any]) -> Outcome:
        status = result.get("status", 0)
        if 200 <= status < 300:
            return OK
        error = result.get("error") or {}
        kind = str(error.get("type", "")) if isinstance(error, dict) else ""
        if status == _CONFLICT and kind in ("version_conflict_engine_exception", ""):
            if self.id_field is None:
                return OK  # create found the document: an earlier delivery wrote it
            return retryable(
                f"document {doc.doc_id!r} in index {doc.index!r} kept changing under "
                f"concurrent writers (sink {self.name!r}); it is read and decided again",
                "version_conflict",
            )
        reason = (
            f"OpenSearch {status} {_describe(error)} for document {doc.doc_id!r} "
            f"in index {doc.index!r} (sink {self.name!r})"
        )
        if status == 429 or status >= 500:
            return retryable(reason, kind or f"HTTP{status}")
        return permanent(reason, kind or f"HTTP{status}")

    def _classify(self, exc: Exception, api: str) -> tuple[bool, Outcome]:
        """(whether to split the request, the outcome) of a request that failed whole.

        400 and 413 are about the content: split, and permanent for a single document.
        Everything else (429, 5xx, 401/403, 404 on the endpoint, timeouts, refused
        connections, an answer that is not JSON) is about the endpoint: retryable.

        Raises:
            Exception: ``exc`` itself when it is not an opensearch-py error (a bug).
        """
        from opensearchpy.exceptions import (  # noqa: PLC0415  # loaded with the client
            ConnectionError as OpenSearchConnectionError,
        )
        from opensearchpy.exceptions import (  # noqa: PLC0415  # loaded with the client
            OpenSearchException,
            TransportError,
        )

        where = f"OpenSearch {api} at {self.endpoint} (sink {self.name!r})"
        if isinstance(exc, OpenSearchConnectionError):
            return False, retryable(f"{where} unreachable: {exc}", type(exc).__name__)
        if isinstance(exc, TransportError) and isinstance(exc.status_code, int):
            status = exc.status_code
            info = exc.info if isinstance(exc.info, dict) else {}
            error = info.get("error") if isinstance(info.get("error"), dict) else None
            detail = _describe(error) if error else f"{exc.error}: {str(exc.info)[:200]}"
            kind = str(error.get("type", "")) if error else f"HTTP{status}"
            if status == 413:
                return True, permanent(
                    f"{where} answered 413: a document of this size exceeds the domain's "
                    "http.max_content_length; make the record smaller",
                    "RequestEntityTooLarge",
                )
            if status == 400:
                return True, permanent(f"{where} answered 400 {detail}", kind)
            return False, retryable(f"{where} answered {status} {detail}", kind)
        if isinstance(exc, OpenSearchException):
            return False, retryable(f"{where} failed: {exc}", type(exc).__name__)
        raise exc


def _fail(docs: list[_Doc], outcome: Outcome, again: list[_Doc]) -> None:
    for doc in docs:
        doc.outcome = outcome
    again.extend(docs)


def _describe(error: Any) -> str:
    """``type: reason (caused by type: reason)`` of an OpenSearch error object."""
    if not isinstance(error, dict):
        return str(error)
    text = f"{error.get('type', 'error')}: {error.get('reason', '')}"
    cause = error.get("caused_by")
    if isinstance(cause, dict):
        text += f" (caused by {cause.get('type', 'error')}: {cause.get('reason', '')})"
    return text


def _id_value(doc: dict[str, Any], field: str) -> str:
    """The ``_id`` from a record field: a key as written, else a dotted path.

    Raises:
        TemplateError: the field is missing, empty, or not a string or number.
    """
    value: Any = doc.get(field)
    if value is None and "." in field:
        value = doc
        for key in field.split("."):
            value = value.get(key) if type(value) is dict else None
    if (type(value) is str and value) or type(value) in (int, float):
        return str(value)
    msg = (
        f"the record has no usable id field {field!r} (got {value!r}); the document id needs "
        "a non-empty string or a number there: add it in an enrich step or change `id`"
    )
    raise TemplateError(msg)
