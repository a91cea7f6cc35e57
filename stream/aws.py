"""AWS calls for the runtime: shared clients, one backoff, and what an error means.

Every sink, the lookup enricher, the lease table and the producer ask here instead of
calling ``boto3.client`` or reading botocore's errors themselves, so that:

* there is one client per service per process: two DynamoDB sinks and a lookup share one,
  and a client costs tens of milliseconds and a few MB to create (boto3 loads the service
  model). :class:`lazy_client` is the attribute that hands it out on first use;
* shardline's own hot paths (the DynamoDB sink, the lookup, the window state) share a second client
  of their service that skips botocore's parameter validation (``validated=False``): a call costs
  about 1 ms of the CPU Lambda bills, and the validation's walk over the request was about 5% of
  that time (12% of a conditional ``PutItem``'s instructions), spent checking requests that
  shardline's code builds right by construction (every attribute value a one-member dict of strings,
  table names checked by ``validate``). Everyone else, plugins above all, gets the validated client
  by default, whose ``ParamValidationError`` names the wrong parameter before anything is sent;
* botocore's own retries are off: each caller retries exactly the failed items with full
  jitter (:func:`backoff_delay`) within its budget (:data:`MAX_ATTEMPTS`), and two nested
  retry loops would multiply the time an unreachable endpoint costs;
* connect and read timeouts are short, so an unreachable endpoint costs seconds of a
  Lambda's budget, not botocore's default minute per attempt;
* an error means the same to every caller of a service: :func:`classify` turns it into an
  :class:`AwsFailure` whose :class:`Kind` says whether retrying can help, from one table of
  retryable codes per service (:data:`RETRYABLE_CODES`) and the infrastructure codes of
  :mod:`stream.faults`.

boto3 and botocore are imported on the first client or the first error, not when this
module is. The endpoint, region and credentials come from the environment as usual
(``AWS_ENDPOINT_URL`` points every client at a local server).
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stream.faults import INFRASTRUCTURE_CODES, INFRASTRUCTURE_ERRORS
from stream.overlap import ITEM_WAVE_WIDTH, SINK_WIDTH

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "BASE_DELAY_S",
    "CONNECT_TIMEOUT_S",
    "FIRST_DELAY_S",
    "MAX_ATTEMPTS",
    "MAX_DELAY_S",
    "READ_TIMEOUT_S",
    "RETRYABLE_CODES",
    "AwsFailure",
    "Kind",
    "aws_client",
    "backoff_delay",
    "classify",
    "is_retryable_code",
    "lazy_client",
    "reset_clients",
]

CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 30

#: Attempts per call within one invocation before its records are reported retryable, and
#: the first and the largest backoff delay between them (full jitter). Together: at most
#: about 7 s of waiting per call (3.5 s expected), so that with the event source mapping's
#: waits between retries of a batch (2, 4, 8 s locally) the default three retries ride out a
#: sink outage of tens of seconds, while one invocation of a function writing four sinks
#: stays well inside a 60 s timeout. Every sink and the lookup use them.
MAX_ATTEMPTS = 8
BASE_DELAY_S = 0.05
MAX_DELAY_S = 2.0
#: The bound of the first retry's wait, ``backoff_delay(1)``'s: for the callers whose
#: ``base_delay`` names that first bound (the producer, the lookup).
FIRST_DELAY_S = 2 * BASE_DELAY_S

#: Per service, the error codes that retrying after a backoff may fix, each with why. A
#: code that is not listed is retried only when its HTTP status is 5xx (and 429 where the
#: service throttles that way, :data:`_THROTTLES_WITH_429`).
RETRYABLE_CODES: Mapping[str, Mapping[str, str]] = {
    "dynamodb": {
        "ProvisionedThroughputExceededException": "the table's or index's capacity is used up",
        "ThrottlingException": "control-plane or on-demand throttling",
        "RequestLimitExceeded": "the account's request rate (on-demand tables) is exceeded",
        "InternalServerError": "a DynamoDB fault, 500",
        "ServiceUnavailable": "DynamoDB is briefly unavailable, 503",
        "LimitExceededException": "too many control-plane operations at once (lease tables)",
        "TransactionInProgressException": "an item is in another transaction for a moment",
    },
    "kinesis": {
        "ProvisionedThroughputExceededException": "the shard's write rate is used up",
        "ThrottlingException": "API rate throttling",
        "Throttling": "API rate throttling, query-protocol spelling",
        "LimitExceededException": "ListShards and other control-plane calls over their rate",
        "KMSThrottlingException": "KMS throttles the stream's encryption key",
        "InternalFailure": "a Kinesis fault",
        "InternalServerError": "a Kinesis fault, 500",
        "ServiceUnavailable": "Kinesis is briefly unavailable, 503",
        "RequestTimeout": "the request timed out on the service side",
        "RequestTimeoutException": "the request timed out on the service side",
    },
    "s3": {
        "SlowDown": "the prefix's request rate is exceeded",
        "Throttling": "API rate throttling",
        "ThrottlingException": "API rate throttling",
        "RequestTimeout": "the upload did not arrive in time; resend it",
        "RequestTimeTooSkewed": "the signing clock is off; a fresh signature may pass",
        "InternalError": "an S3 fault",
        "ServiceUnavailable": "S3 is briefly unavailable, 503",
        "OperationAborted": "a conflicting operation on the bucket is in progress",
        "ExpiredToken": "temporary credentials expired; the client refreshes them",
        "TokenRefreshRequired": "temporary credentials need a refresh",
    },
    "glue": {
        "ThrottlingException": "the Schema Registry's request rate is exceeded",
        "InternalServiceException": "a Glue fault",
        "OperationTimeoutException": "the operation timed out on the service side",
        "ServiceUnavailable": "Glue is briefly unavailable, 503",
    },
    "sqs": {
        "AWS.SimpleQueueService.RequestThrottled": "the queue's request rate is exceeded",
        "RequestThrottled": "the queue's request rate is exceeded",
        "ThrottlingException": "API rate throttling",
        "Throttling": "API rate throttling, query-protocol spelling",
        "KMS.ThrottlingException": "KMS throttles the queue's encryption key",
        "ServiceUnavailable": "SQS is briefly unavailable, 503",
        "InternalError": "an SQS fault",
        "InternalFailure": "an SQS fault",
        "SlowDown": "request rate exceeded",
        "RequestTimeout": "the request timed out on the service side",
    },
}
#: Services whose HTTP 429 is a throttle whatever the code.
_THROTTLES_WITH_429 = frozenset({"s3", "sqs"})
#: Services where any code containing "Throttl" is a throttle (S3 has several spellings).
_THROTTL_ANYWHERE = frozenset({"s3"})

_clients: dict[tuple[str, bool], Any] = {}
_lock = threading.Lock()


def aws_client(service: str, *, validated: bool = True) -> Any:
    """The process's shared client for ``service`` (``"dynamodb"``, ``"s3"``...).

    ``validated=False`` gives the client without botocore's parameter validation, kept for
    the calls shardline's own code builds (a malformed request is then refused by the
    service, not by botocore: ``ValidationException`` or ``SerializationException``, not
    ``ParamValidationError``). A plugin keeps the default: the validated client, whose
    errors name the wrong parameter and which never sends a request missing a required
    member (which a REST service could read as another operation).
    """
    slot = (service, validated)
    client = _clients.get(slot)
    if client is None:
        with _lock:
            client = _clients.get(slot)
            if client is None:
                client = _clients[slot] = _make(service, validated=validated)
    return client


def reset_clients() -> None:
    """Forget the shared clients (tests that change the environment's endpoint)."""
    with _lock:
        _clients.clear()


def _make(service: str, *, validated: bool) -> Any:
    import boto3  # noqa: PLC0415  # heavy: only when a client is first needed
    from botocore.config import Config  # noqa: PLC0415  # loaded with boto3 anyway

    config = Config(
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"mode": "standard", "total_max_attempts": 1},
        # the calls in flight at once: a wave on the call pool, plus the calling threads
        max_pool_connections=ITEM_WAVE_WIDTH + SINK_WIDTH + 1,
        parameter_validation=validated,
    )
    return boto3.client(service, config=config)


class lazy_client:  # used like @property
    """A read-only attribute: the client injected into ``slot`` (``None``: none was), else
    the process's shared client for ``service`` (``validated``: which one,
    :func:`aws_client`), kept in ``slot`` on first use.

    Thread-safe: the calls of a wave (:mod:`stream.overlap`) may ask at once; the client is
    made once under :func:`aws_client`'s lock (boto3's default session is not thread-safe,
    its clients are), and every thread stores the same object in ``slot``.

    >>> class Sink:
    ...     client = lazy_client("dynamodb")
    ...     def __init__(self, client=None):
    ...         self._client = client
    >>> Sink(client="injected").client
    'injected'
    """

    __slots__ = ("service", "slot", "validated")

    def __init__(self, service: str, slot: str = "_client", *, validated: bool = True) -> None:
        self.service = service
        self.slot = slot
        self.validated = validated

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None:
            return self
        client = getattr(instance, self.slot)
        if client is None:
            client = aws_client(self.service, validated=self.validated)
            setattr(instance, self.slot, client)
        return client


def backoff_delay(
    attempt: int,
    base_delay: float = BASE_DELAY_S,
    max_delay: float = MAX_DELAY_S,
    uniform: Callable[[float, float], float] | None = None,
) -> float:
    """The wait before retry ``attempt`` (1 for the first retry): full jitter, uniform
    between 0 and ``base_delay * 2**attempt``, capped at ``max_delay``.

    ``uniform`` is injectable (a seeded ``random.Random().uniform``; by default the
    ``random`` module's, imported on the first retry). The exponent stops at 32 so that a
    huge attempt number cannot overflow a float.

    >>> 0 <= backoff_delay(1) <= 0.1, 0 <= backoff_delay(30) <= MAX_DELAY_S
    (True, True)
    >>> backoff_delay(3, 0.05, uniform=lambda low, high: high)
    0.4
    """
    if uniform is None:
        import random  # noqa: PLC0415  # a millisecond of import, needed only on a retry

        uniform = random.uniform
    return uniform(0, min(max_delay, base_delay * 2 ** min(attempt, 32)))


class Kind(enum.Enum):
    """What a failed AWS call means for its caller."""

    RETRYABLE = "retryable"
    """The service answered a throttle or a fault (a listed code, a 5xx): retry with backoff."""
    INFRASTRUCTURE = "infrastructure"
    """Not the request's fault and the same for every request (:mod:`stream.faults`): a
    missing resource, a denied permission, no credentials or region. Retrying now cannot
    help."""
    PERMANENT = "permanent"
    """The service refused this request (a validation error, a failed condition...)."""
    INVALID = "invalid"
    """botocore refused the request before sending it (``ParamValidationError``)."""
    NO_ANSWER = "no_answer"
    """Sent, and no answer came (read timeout, connection closed): the service may have
    applied it."""
    UNREACHABLE = "unreachable"
    """No answer from the endpoint (connection refused, DNS, connect timeout, any other
    botocore error)."""
    OTHER = "other"
    """Not a botocore error at all (a bug, a test double's own exception)."""


@dataclass(frozen=True, slots=True)
class AwsFailure:
    """A failed AWS call, classified.

    Attributes:
        kind: what retrying can do (:class:`Kind`).
        code: the service's error code (``ClientError``), else the exception class name.
        message: the service's error message, else the exception's text.
        http_status: the response's HTTP status; 0 when the service did not answer.
        answered: whether the service itself answered (a ``ClientError``).
        item: the item DynamoDB returned with a failed condition (``Item``), else ``None``.
    """

    kind: Kind
    code: str
    message: str
    http_status: int = 0
    answered: bool = False
    item: Mapping[str, Any] | None = None


def is_retryable_code(service: str, code: str, http_status: int = 0) -> bool:
    """Whether ``service``'s error ``code`` (with its HTTP status, when known) is worth a
    retry: a listed code, a 5xx, a 429 where the service throttles that way.

    >>> is_retryable_code("dynamodb", "LimitExceededException"), is_retryable_code("s3", "X", 503)
    (True, True)
    >>> is_retryable_code("s3", "SlowDownThrottled"), is_retryable_code("dynamodb", "X", 429)
    (True, False)
    """
    if code in RETRYABLE_CODES[service] or http_status >= 500:
        return True
    if http_status == 429 and service in _THROTTLES_WITH_429:
        return True
    return service in _THROTTL_ANYWHERE and "Throttl" in code


def classify(exc: BaseException, service: str) -> AwsFailure:
    """What the error of a call to ``service`` means (:class:`Kind`).

    A service's answer is retryable when :func:`is_retryable_code` says so, else
    infrastructure when its code is in :data:`stream.faults.INFRASTRUCTURE_CODES`, else
    permanent. botocore's own errors: ``ParamValidationError`` is invalid, a read timeout or
    a closed connection is no answer, a missing region or credentials
    (:data:`stream.faults.INFRASTRUCTURE_ERRORS`) is infrastructure, any other is
    unreachable. Anything else is other.

    Raises:
        KeyError: ``service`` has no table in :data:`RETRYABLE_CODES`.
    """
    rules = RETRYABLE_CODES[service]  # an unknown service fails here, not on the first error
    response = getattr(exc, "response", None)
    if _is_botocore(exc, "ClientError") and isinstance(response, dict):
        error = response.get("Error") or {}
        code = str(error.get("Code", "") or "")
        message = str(error.get("Message", "") or "")
        status = int((response.get("ResponseMetadata") or {}).get("HTTPStatusCode", 0) or 0)
        item = response.get("Item")
        if code in rules:
            kind = Kind.RETRYABLE
        elif code in INFRASTRUCTURE_CODES:
            kind = Kind.INFRASTRUCTURE
        elif is_retryable_code(service, code, status):
            kind = Kind.RETRYABLE
        else:
            kind = Kind.PERMANENT
        return AwsFailure(kind, code, message, status, answered=True, item=item)
    name = type(exc).__name__
    if not _is_botocore(exc, "BotoCoreError"):
        return AwsFailure(Kind.OTHER, name, str(exc))
    if _is_botocore(exc, "ParamValidationError"):
        kind = Kind.INVALID
    elif _is_botocore(exc, "ReadTimeoutError") or _is_botocore(exc, "ConnectionClosedError"):
        kind = Kind.NO_ANSWER
    elif any(c.__name__ in INFRASTRUCTURE_ERRORS for c in type(exc).__mro__):
        kind = Kind.INFRASTRUCTURE
    else:
        kind = Kind.UNREACHABLE
    return AwsFailure(kind, name, str(exc))


def _is_botocore(exc: BaseException, name: str) -> bool:
    """Whether ``exc`` is an instance of ``botocore.exceptions.<name>``, without importing
    botocore (it is loaded already when one of its errors exists)."""
    return any(
        c.__name__ == name and c.__module__.startswith("botocore") for c in type(exc).__mro__
    )
