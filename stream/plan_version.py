"""The compiled plan's version, checked when a plan is loaded.

Apart from :mod:`stream.plan` (the plan's shape, as TypedDicts) because a cold start needs
only this: building the TypedDict classes costs about a millisecond of import time that the
handler does not use (they are for the type checker). :mod:`stream.plan` re-exports these.
"""

from __future__ import annotations

from stream.exceptions import PlanError

__all__ = ["PLAN_VERSION", "PlanVersionError", "check_version"]

PLAN_VERSION = 1
"""Version of the plan's shape: ``compile`` writes it, :func:`check_version` requires it.
Raise it when a key is renamed or its meaning changes."""


class PlanVersionError(PlanError):
    """A plan file written by another shardline than the one reading it (or no plan)."""


def check_version(plan: object, where: object) -> None:
    """Refuse a plan that this shardline did not write; ``where`` names it in the message.

    >>> check_version({"version": PLAN_VERSION}, "pipeline.json")
    >>> check_version({"version": PLAN_VERSION + 1}, "pipeline.json")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    stream.plan_version.PlanVersionError: pipeline.json: this plan is newer than this shardline ...

    Raises:
        PlanVersionError: not a mapping, or no version, or another version than
            :data:`PLAN_VERSION`.
    """
    if not isinstance(plan, dict):
        kind = type(plan).__name__
        msg = f"{where}: not a shardline plan (a JSON {kind}, not an object)"
        raise PlanVersionError(f"{msg}; make one with `shardline compile PIPELINE.yaml`")
    version = plan.get("version")
    if version == PLAN_VERSION and type(version) is int:
        return
    if isinstance(version, int) and not isinstance(version, bool):
        age = "older" if version < PLAN_VERSION else "newer"
        found = f"plan version {version}"
    else:  # no version (or not a number): not written by a `compile` that checks versions
        age, found = "older", "no plan version" if version is None else f"version {version!r}"
    msg = (
        f"{where}: this plan is {age} than this shardline ({found}, expects {PLAN_VERSION}): "
        "run `shardline compile PIPELINE.yaml` with the shardline that runs it"
    )
    raise PlanVersionError(msg)
