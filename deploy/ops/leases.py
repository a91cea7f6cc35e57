"""Leases on dead letters: two operators redriving at once never both handle one letter.

A redrive holds every letter it read until it has handled it, and removes a letter only
while it still holds it. How a letter is held depends on where it is:

* An SQS message's lease is its visibility timeout: receiving it hides it from every other
  reader for ``hold_s`` seconds (:class:`deploy.ops.dead_letters.SQSSource`).
* An S3 object of letters has no such thing. Its lease is a *claim* (:class:`ObjectClaims`):
  a small object ``shardline-claims/<key>`` in the same bucket, created only if absent
  (``PutObject`` with ``If-None-Match: *``), which names its holder and until when it holds.
  A claim past its time (its holder died) is taken over with ``If-Match`` on the ETag read,
  so two operators taking over one stale claim cannot both win. A holder renews its claim
  the same way (``If-Match`` on the ETag it wrote); a renewal that fails means the claim
  was taken over, and the object is not touched -- unless the claim object still names
  this holder and has not run out: then two renewals of its own raced (the lease keeper's
  and the one before a delete), one won the ETag, and the claim is kept.

While letters are being handled, :class:`LeaseKeeper` renews every lease in a background
thread (every third of the hold), so a long redrive keeps them. Before removing a letter
the source renews its lease once more and removes it only if that worked: a lease that ran
out (the process stalled past its hold) may be another operator's by now, and the letter
is left to them (:attr:`deploy.ops.dead_letters.Fate.UNDELETED`: a rerun would redrive it
again, harmlessly, since sinks are idempotent by record position).
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

__all__ = ["CLAIMS_PREFIX", "Claim", "LeaseKeeper", "ObjectClaims"]

#: Where the claims of a bucket's letter objects are kept: ``shardline-claims/<key>``.
CLAIMS_PREFIX = "shardline-claims/"
_TAKEN = {"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "404", "412", "409"}


@dataclass(frozen=True, slots=True)
class Claim:
    """A claim this process holds: the claimed object's key, the claim object's ETag as
    written (what renewing and releasing are conditional on), and when it runs out (epoch
    seconds: other processes read it, so it is wall-clock time)."""

    key: str
    etag: str
    until: float


def _code(exc: Exception) -> str:
    """The S3 error code of a botocore ``ClientError`` (or its HTTP status), else ""."""
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    return code or str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


class ObjectClaims:
    """Conditional claims on the objects of one bucket (see the module docstring).

    Args:
        bucket: the bucket of the letter objects (the claims are kept there too).
        client: a boto3 S3 client.
        hold_s: how long a claim holds without renewal.
        owner: who holds the claims (default: a fresh id per instance).
        now: wall-clock time (injected for tests).
    """

    def __init__(
        self,
        bucket: str,
        client: Any,
        hold_s: float,
        *,
        owner: str | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.bucket = bucket
        self.owner = owner or uuid.uuid4().hex
        self._client = client
        self._hold_s = hold_s
        self._now = now
        self._held: dict[str, Claim] = {}
        self._lock = threading.Lock()

    @property
    def held(self) -> list[str]:
        """The keys claimed now, in the order claimed."""
        with self._lock:
            return list(self._held)

    def _put(self, key: str, **condition: str) -> Claim:
        until = self._now() + self._hold_s
        body = orjson.dumps({"owner": self.owner, "key": key, "until": until})
        put = self._client.put_object(
            Bucket=self.bucket, Key=CLAIMS_PREFIX + key, Body=body, **condition
        )
        return Claim(key, str(put.get("ETag", "")), until)

    def claim(self, key: str) -> bool:
        """Claim the object ``key``: True when this process holds it now, False when another
        holds it (a live claim, or one taken over at the same moment).

        A claim past its time is taken over (conditional on the ETag read).
        """
        from botocore.exceptions import ClientError  # noqa: PLC0415

        claim: Claim | None
        try:
            claim = self._put(key, IfNoneMatch="*")
        except ClientError as exc:
            if _code(exc) not in _TAKEN:
                raise
            claim = self._take_over(key)
        if claim is None:
            return False
        with self._lock:
            self._held[key] = claim
        return True

    def _take_over(self, key: str) -> Claim | None:
        """Take a stale claim over (conditional on its ETag); None when it is live or another
        process took it first."""
        from botocore.exceptions import ClientError  # noqa: PLC0415

        try:
            got = self._client.get_object(Bucket=self.bucket, Key=CLAIMS_PREFIX + key)
            etag = str(got.get("ETag", ""))
            until = float(orjson.loads(got["Body"].read()).get("until") or 0.0)
        except ClientError as exc:
            if _code(exc) not in _TAKEN:
                raise
            return None  # released meanwhile: the next run claims it
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            until = 0.0  # not a claim we can read: as good as stale
        if until > self._now():
            return None
        try:
            return self._put(key, IfMatch=etag)
        except ClientError as exc:
            if _code(exc) not in _TAKEN:
                raise
            return None

    def renew(self, key: str) -> str:
        """Hold ``key`` for ``hold_s`` more; "" when renewed, else why the claim is lost
        (it is then forgotten: the object is another holder's)."""
        from botocore.exceptions import ClientError  # noqa: PLC0415

        with self._lock:
            claim = self._held.get(key)
        if claim is None:
            return f"{key} is not claimed by this redrive"
        try:
            renewed = self._put(key, IfMatch=claim.etag)
        except ClientError as exc:
            if _code(exc) not in _TAKEN:
                raise
            # Two renewals of ours at once (the lease keeper's and the one before a
            # delete) both send the ETag held: one wins and the other sees 412. The claim
            # object then still names us; only a takeover by another holder is a loss.
            mine = self._still_mine(key)
            if mine is not None:
                self._keep(mine)
                return ""
            with self._lock:
                self._held.pop(key, None)
            return f"the claim on {key} was taken over after it ran out ({_code(exc)})"
        self._keep(renewed)
        return ""

    def _keep(self, claim: Claim) -> None:
        """Remember ``claim`` as the one held, unless a later one of ours (a concurrent
        renewal that ran out further) is remembered already, or the key was released."""
        with self._lock:
            held = self._held.get(claim.key)
            if held is not None and held.until <= claim.until:
                self._held[claim.key] = claim

    def _still_mine(self, key: str) -> Claim | None:
        """The claim object on ``key`` as it is now, if this holder wrote it and it has
        not run out; else None (taken over, released, or unreadable)."""
        from botocore.exceptions import ClientError  # noqa: PLC0415

        try:
            got = self._client.get_object(Bucket=self.bucket, Key=CLAIMS_PREFIX + key)
            body = orjson.loads(got["Body"].read())
            owner, until = body.get("owner"), float(body.get("until") or 0.0)
        except ClientError as exc:
            if _code(exc) not in _TAKEN:
                raise
            return None
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            return None
        if owner != self.owner or until <= self._now():
            return None
        return Claim(key, str(got.get("ETag", "")), until)

    def release(self, key: str) -> None:
        """Give the claim on ``key`` up (only if it is still ours: conditional delete)."""
        from botocore.exceptions import ClientError  # noqa: PLC0415

        with self._lock:
            claim = self._held.pop(key, None)
        if claim is None:
            return
        try:
            self._client.delete_object(
                Bucket=self.bucket, Key=CLAIMS_PREFIX + key, IfMatch=claim.etag
            )
        except ClientError as exc:
            if _code(exc) not in _TAKEN:
                raise


class LeaseKeeper:
    """Calls ``renew`` every ``every_s`` seconds in a background thread while the ``with``
    block runs: the leases of a redrive stay its own however long its sinks take.

    A renewal that raises is remembered (:attr:`error`) and tried again next time; the
    sources judge per letter whether its lease still holds when removing it.

    Args:
        renew: renews every lease held (``Scan.renew``).
        every_s: seconds between renewals (a third of the shortest hold).
    """

    def __init__(self, renew: Callable[[], object], every_s: float) -> None:
        self._renew = renew
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
        self.renewals = 0
        self.error: Exception | None = None

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            try:
                self._renew()
                self.renewals += 1
            except Exception as exc:  # botocore's errors: keep trying; delete checks again
                self.error = exc

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the thread to end after the renewal in progress, if any, without waiting for
        it (safe from any thread, the keeper's own included: a finalizer may run there)."""
        self._stop.set()

    @property
    def running(self) -> bool:
        """Whether the renewal thread is still alive."""
        return self._thread.is_alive()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._thread is not threading.current_thread() and self._thread.ident is not None:
            self._thread.join()
