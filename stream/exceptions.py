"""Exceptions shared by the runtime packages.

Every error that shardline raises on purpose derives from :class:`ShardlineError`, so that
callers can catch ours without catching everything. The split that matters at run time is
*retryable* versus *permanent*: a retryable error makes the record's sequence number go into
``batchItemFailures`` (Lambda delivers it again), a permanent one sends the record to the
dead-letter sink with the reason.

Hierarchy::

    ShardlineError
    ├── RecordError            permanent: this record can never be processed as it is
    │   ├── DecodeError        the data is not what a step needs (not JSON, corrupt aggregate)
    │   └── InvalidRecordError (stream.producer) a producer refused the record: bad key/data
    │       └── RecordTooLargeError  over the stream's maximum record size
    ├── RetryableError         transient: try the record again later (throttle, 5xx, timeout)
    ├── UndeliveredRecordsError (stream.producer) records still failing after the retries
    ├── PluginError            a plugin or ``use:`` path cannot be loaded (also a ValueError)
    ├── PlanError              the compiled plan cannot do what was asked (also a ValueError)
    │   └── UnknownFunctionError  no function of that name (also a KeyError)
    ├── FlushEventError        (stream.flush) a flush event of another version or function
    ├── LeaseLost, LeaseTableError  (stream.esm.checkpoints) the local mapping's leases
    ├── ProcessorError         (processors.errors) the root of processors/
    ├── SinkError              (sinks.base) the root of sinks/
    └── DeployError            (deploy.errors) the root of deploy/, the operator's side

Whose fault it is decides a failure's fate, not only its class (:mod:`stream.faults`):

* a ``RecordError`` (or, from a plugin step, any exception that fails only some records) is
  the record's fault: it is dead-lettered with the reason;
* a ``RetryableError`` is transient: the record is reported for retry;
* an error that is not the record's fault is reported for retry too, never dead-lettered,
  and logged once per batch: (a) infrastructure: an AWS error code or botocore exception
  that says a resource is missing or the function's identity cannot use it
  (``ResourceNotFoundException``, ``AccessDenied*``, ``NoRegionError``,
  ``NoCredentialsError``...), raised or returned anywhere; (b) a broken plugin step: one
  that raised the same exception type, not a ``RecordError``, for every record that
  reached it, at least two, none of which passed it. A plugin that means "this record is bad" raises
  ``RecordError``, and its records are dead-lettered however many fail.

``processors`` and ``sinks`` add their own subclasses next to their code; this module imports
nothing of ours so that every package may import it.
"""

from __future__ import annotations

__all__ = [
    "DecodeError",
    "FlushEventError",
    "PlanError",
    "PluginError",
    "RecordError",
    "RetryableError",
    "ShardlineError",
    "UnknownFunctionError",
]


class ShardlineError(Exception):
    """Root of every exception shardline raises on purpose."""


class RecordError(ShardlineError):
    """A record that can never succeed as it is: it goes to the dead-letter sink."""


class DecodeError(RecordError):
    """The record's data is not what a step needs (not JSON, not an object, corrupt aggregate)."""


class RetryableError(ShardlineError):
    """A transient failure: the record is reported in ``batchItemFailures`` and redelivered."""


class PluginError(ShardlineError, ValueError):
    """A processor or sink plugin that cannot be found or loaded."""


class PlanError(ShardlineError, ValueError):
    """The compiled plan cannot do what was asked: not a plan, or no function named when
    it has several."""


class UnknownFunctionError(PlanError, KeyError):
    """No function of that name in the plan; the message lists the known ones."""

    def __str__(self) -> str:  # the message, not KeyError's repr of it
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class FlushEventError(ShardlineError, ValueError):
    """A scheduled flush event this function must not run: another ``version`` of the event,
    or another function's name (a rule pointed at the wrong function). The invocation
    fails, so the function's Errors alarm shows it."""
