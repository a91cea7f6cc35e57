"""Whose fault: the record's, or the pipeline's own infrastructure and configuration.

Only a record's own fault sends it to the dead-letter sink. An error that is not about the
record (a missing table or queue, a denied permission, no credentials or region, a step
that is broken for every record) would fail every record of every batch alike; dead-
lettering them would empty the stream into the dead-letter queue while the function
reports success, and Lambda's retries, the iterator-age alarm and the on-failure
destination would never see a problem. Such errors are reported for retry instead, and
logged once per batch, not once per record. The rule, as :mod:`stream.batch` applies it:

a. **Infrastructure**: an AWS error code in :data:`INFRASTRUCTURE_CODES` or a botocore
   exception named in :data:`INFRASTRUCTURE_ERRORS`, raised or returned anywhere (a step, a
   lookup, a sink, the dead-letter sink), whatever the batch. Sinks and the lookup do not
   retry these within the invocation (retrying cannot create a table) and make no further
   calls for the batch. An endpoint that cannot be reached is not listed: it is transient,
   retried within the sink's budget, then reported retryable like a throttle.
b. **Broken step**: a plugin step that raised the same exception type for every record
   that reached it, at least :data:`BROKEN_STEP_MIN_RECORDS` of them, none of which passed
   it, where the type is not a :class:`~stream.exceptions.RecordError` (a step that raises
   ``RecordError``, or a subclass, says the record is at fault: ``DecodeError``, a lookup
   miss, a schema violation). Built-in steps are not judged so: what they raise for a
   record is about its data (an ``expr`` comparing a string with a number), and their
   configuration is checked by ``shardline validate``.
c. Anything else a step raises for a record is that record's fault: dead-lettered with the
   reason.

Why two records for (b): one failing record carries no evidence about the step, so a
batch of one is always judged per record (after Lambda's bisection too). Two records of a
batch failing the same way with none passing is already far likelier a broken step than
two poison records in a row, and a larger threshold would miss exactly the low-traffic
functions whose batches hold a handful of records, where a broken plugin would go on
dead-lettering everything.

Nothing here imports botocore: errors are recognised by their code or class name, so the
runtime's light modules may ask without loading the SDK.
"""

from __future__ import annotations

from stream.exceptions import RecordError

TYPE_CHECKING = False  # not typing's: the handler's import never loads typing (ARCHITECTURE.md)
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "BROKEN_STEP_MIN_RECORDS",
    "INFRASTRUCTURE_CODES",
    "INFRASTRUCTURE_ERRORS",
    "broken_steps",
    "infrastructure_code",
    "is_infrastructure",
]

#: Rule (b): fewest records, all failing alike, that make a step broken.
BROKEN_STEP_MIN_RECORDS = 2

#: AWS error codes that are never about one record: the resource is missing, or the
#: function's identity may not use it. (Throttles and 5xx are transient, not listed: they
#: are retried anyway.)
INFRASTRUCTURE_CODES = frozenset(
    {
        # a resource the pipeline names does not exist
        "ResourceNotFoundException",
        "NoSuchBucket",
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "NonExistentQueue",
        "KMSNotFoundException",
        # the function's identity may not use it
        "AccessDenied",
        "AccessDeniedException",
        "KMSAccessDeniedException",
        "KMS.AccessDeniedException",
        "UnauthorizedOperation",
        "AuthorizationError",
        "AuthFailure",
        "NotAuthorized",
        "security_exception",
        "HTTP401",
        "HTTP403",
        # credentials and signatures
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidAccessKeyId",
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "MissingAuthenticationTokenException",
        # a key the account cannot use
        "KMSDisabledException",
        "KMSInvalidStateException",
        "KMSOptInRequired",
        "OptInRequired",
    }
)

#: botocore exception class names that are never about one record.
INFRASTRUCTURE_ERRORS = frozenset(
    {
        "NoRegionError",
        "NoCredentialsError",
        "PartialCredentialsError",
        "CredentialRetrievalError",
        "NoAuthTokenError",
        "ProfileNotFound",
        "InvalidRegionError",
        "SSOTokenLoadError",
        "UnauthorizedSSOTokenError",
        "TokenRetrievalError",
    }
)
_EITHER = INFRASTRUCTURE_CODES | INFRASTRUCTURE_ERRORS


def infrastructure_code(error: BaseException) -> str | None:
    """The infrastructure code or botocore class name behind ``error``, or ``None``.

    Looks at the error, then at what it was raised from (``raise X from exc``) or while
    handling: our own errors wrap botocore's. An error may also carry its code in a
    ``code`` attribute (the lookup's errors do).

    >>> class NoRegionError(Exception):
    ...     __module__ = "botocore.exceptions"
    >>> infrastructure_code(ValueError("bad amount")) is None
    True
    >>> try:
    ...     try:
    ...         raise NoRegionError("You must specify a region.")
    ...     except NoRegionError as exc:
    ...         raise RuntimeError("lookup failed") from exc
    ... except RuntimeError as wrapped:
    ...     infrastructure_code(wrapped)
    'NoRegionError'
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = _code(current)
        if code is not None:
            return code
        current = current.__cause__ or current.__context__
    return None


def is_infrastructure(code: str) -> bool:
    """Whether an error code (an outcome's ``error``) or botocore class name is rule (a).

    >>> is_infrastructure("ResourceNotFoundException"), is_infrastructure("ValidationException")
    (True, False)
    """
    return code in _EITHER


def _code(error: BaseException) -> str | None:
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        code = (response.get("Error") or {}).get("Code")
        if isinstance(code, str) and code in INFRASTRUCTURE_CODES:
            return code
    own = getattr(error, "code", None)
    if isinstance(own, str) and own in _EITHER:
        return own
    for cls in type(error).__mro__:
        if cls.__name__ in INFRASTRUCTURE_ERRORS and cls.__module__.startswith("botocore"):
            return cls.__name__
    return None


def broken_steps(
    failures: Iterable[tuple[str, BaseException]],
    passed: Mapping[str, int],
    min_records: int = BROKEN_STEP_MIN_RECORDS,
) -> dict[str, str]:
    """Rule (b): the steps that failed every record reaching them alike, with why.

    Args:
        failures: (step, error) of each record a step failed.
        passed: per step, how many records it let through or dropped (a record that
            reached a later step passed this one); any count above zero clears the step.
        min_records: the threshold of the rule.

    >>> errors = [("p", AttributeError("x")), ("p", AttributeError("y"))]
    >>> broken_steps(errors, {})
    {'p': 'AttributeError on all 2 records that reached it, none passed: x'}
    >>> broken_steps(errors, {"p": 1})
    {}
    >>> broken_steps(errors[:1], {})
    {}
    """
    by_step: dict[str, list[BaseException]] = {}
    for step, error in failures:
        by_step.setdefault(step, []).append(error)
    broken: dict[str, str] = {}
    for step, errors in by_step.items():
        if len(errors) < min_records or passed.get(step, 0):
            continue
        kind = type(errors[0])
        if issubclass(kind, RecordError) or any(type(e) is not kind for e in errors):
            continue
        broken[step] = (
            f"{kind.__name__} on all {len(errors)} records that reached it, none passed: "
            f"{errors[0]}"
        )
    return broken
