"""Rewind a function: start it again from a timestamp (``shardline rewind``).

**Locally** (``shardline run`` and ``dev``: the local event source mapping's lease table,
:mod:`stream.esm.checkpoints`) each shard's checkpoint moves back to just before the first
record that arrived at or after the timestamp ``T``: GetShardIterator ``AT_TIMESTAMP`` finds
that record ``S``; since a checkpoint means "after", the checkpoint becomes the record before
``S`` (read from ``TRIM_HORIZON``), or ``TRIM_HORIZON`` when ``S`` is the shard's first.
A checkpoint is only ever moved *back*: a shard with nothing after ``T``, or whose checkpoint
is not past ``S`` yet, keeps it (moving it forward would skip records never processed).

A worker holding a lease could overwrite the rewound checkpoint with its own next one, so
:func:`rewind_checkpoints` refuses while any lease of the function has an owner, unless
``force``. Either way each write is the KCL's takeover: conditional on the lease counter read,
it bumps the counter and removes the owner. A worker still running (``force``) then fails
its next renewal and checkpoint (both conditional on the counter it knows), drops the shard
without writing, and whoever takes the lease next reads after the rewound checkpoint.

**In AWS** Lambda keeps the checkpoints of its event source mapping to itself; the only way
back is a new mapping with ``StartingPosition: AT_TIMESTAMP``. A mapping's starting position
cannot be updated in place (CloudFormation replaces the resource: it would create the new
mapping before deleting the old, and two mappings would read the stream at once, out of
order). So :func:`mapping_change_sets` gives two templates, applied as two change sets: the
deployed template without the function's mapping (the function stops reading; records wait
in the stream), then with a new one at ``AT_TIMESTAMP`` ``T`` under a logical id naming the
time (``<Id>At<epoch>``: the stack's history shows the rewind, and moto, which keeps a removed
resource cached under its id, creates it too), its ``Metadata`` naming the time and the
file's id. ``shardline deploy`` keeps a rewound mapping as it is
(:func:`deploy.aws.cloudformation.keep_rewinds`), so a later deploy of the file does not
replace it and start the function over from its file's starting position. Between the two
change sets the function reads nothing.

If the second change set fails, or the process dies between the two, the function has no
mapping. The first template therefore records the rewind in the stack itself: its top-level
``Metadata`` ``shardline:rewind_pending`` keeps, by the file's mapping id, the mapping as it
was (as JSON text, so nothing in it is evaluated), the outputs that referred to it and the
time it was rewinding to. Running ``shardline rewind`` again finds the mapping gone and the
record there (:func:`pending_rewind`), and finishes the rewind with one change set
(:func:`resume_change_set`): the mapping at ``AT_TIMESTAMP`` of the new ``--to``, the
record removed. A ``shardline deploy`` of the file also puts the mapping back (at the
file's starting position) and drops the record.

Reprocessing is safe because sinks are idempotent by record position: keyed DynamoDB and
OpenSearch writes land the same, a ``latest`` item is never overwritten by an older record;
the S3 archive is at-least-once.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from deploy.aws.cloudformation import REWOUND_FROM, REWOUND_TO
from deploy.errors import DeployError
from deploy.names import lease_table_name

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from stream.plan import Plan

__all__ = [
    "REWIND_PENDING",
    "MappingRewind",
    "RewindError",
    "RewindPreview",
    "ShardMove",
    "check_not_held",
    "mapping_change_sets",
    "pending_rewind",
    "plan_checkpoint_rewind",
    "plan_mapping_rewind",
    "resume_change_set",
    "rewind_checkpoints",
    "rewind_mapping",
]

#: Top-level template ``Metadata`` of a stack whose rewind removed a mapping and has not
#: created it again yet (module docstring).
REWIND_PENDING = "shardline:rewind_pending"
_TRIM_HORIZON = "TRIM_HORIZON"
_SHARD_END = "SHARD_END"
_READ_LIMIT = 10_000  # GetRecords' most records per call


class RewindError(DeployError):
    """The function cannot be rewound as asked; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class ShardMove:
    """One shard of a rewind.

    Attributes:
        shard_id: the shard.
        checkpoint: its checkpoint now.
        target: the checkpoint it moves to (equal to ``checkpoint``: it stays).
        records: how many records it reprocesses (those from ``first`` through the
            checkpoint; approximate: records arriving meanwhile are read anyway).
        first: the first record at or after the timestamp, "" when none.
        owner: the worker holding its lease, "" when none.
    """

    shard_id: str
    checkpoint: str
    target: str
    records: int
    first: str = ""
    owner: str = ""

    @property
    def moves(self) -> bool:
        """Whether the checkpoint changes."""
        return self.target != self.checkpoint


@dataclass(frozen=True, slots=True)
class RewindPreview:
    """What a rewind of one function's checkpoints does, shard by shard."""

    function: str
    table: str
    to: float
    shards: tuple[ShardMove, ...] = field(default_factory=tuple)

    @property
    def records(self) -> int:
        """Records reprocessed, all shards."""
        return sum(s.records for s in self.shards)

    @property
    def held(self) -> dict[str, str]:
        """Leases with an owner: shard id to worker."""
        return {s.shard_id: s.owner for s in self.shards if s.owner}

    def as_dict(self) -> dict[str, Any]:
        """The plan for ``--json``."""
        return {
            "function": self.function,
            "table": self.table,
            "to": _iso(self.to),
            "records": self.records,
            "shards": [
                {
                    "shard_id": s.shard_id, "checkpoint": s.checkpoint, "target": s.target,
                    "moves": s.moves, "records": s.records, "first": s.first,
                    "owner": s.owner,
                }
                for s in self.shards
            ],
        }  # fmt: skip


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def _read(kinesis: Any, stream: str, request: Mapping[str, Any]) -> Any:
    """Every record from an iterator to the shard's end (or until caught up), lazily."""
    iterator = kinesis.get_shard_iterator(StreamName=stream, **request)["ShardIterator"]
    while iterator:
        page = kinesis.get_records(ShardIterator=iterator, Limit=_READ_LIMIT)
        yield from page.get("Records", ())
        if not page.get("Records") and not page.get("MillisBehindLatest"):
            return
        iterator = page.get("NextShardIterator")


def _shard_move(kinesis: Any, stream: str, lease: Any, to: float) -> ShardMove:
    """Where one shard's checkpoint goes for a rewind to ``to``; see the module docstring."""
    stamp = datetime.fromtimestamp(to, UTC)
    at = {"ShardId": lease.shard_id, "ShardIteratorType": "AT_TIMESTAMP", "Timestamp": stamp}
    done = lease.checkpoint
    owner = lease.owner or ""
    first, count = "", 0
    for record in _read(kinesis, stream, at):
        seq = record["SequenceNumber"]
        first = first or seq
        if done != _SHARD_END and (not done.isdigit() or int(seq) > int(done)):
            break
        count += 1
    if not first or count == 0:  # nothing after T, or nothing after T processed yet
        return ShardMove(lease.shard_id, done, done, 0, first, owner)
    before = _TRIM_HORIZON
    for record in _read(kinesis, stream, {"ShardId": lease.shard_id,
                                          "ShardIteratorType": "TRIM_HORIZON"}):  # fmt: skip
        if int(record["SequenceNumber"]) >= int(first):
            break
        before = record["SequenceNumber"]
    return ShardMove(lease.shard_id, done, before, count, first, owner)


def plan_checkpoint_rewind(
    plan: Plan, function: str, to: float, client: Callable[[str], Any]
) -> RewindPreview:
    """What rewinding ``function``'s local checkpoints to ``to`` (epoch seconds) does.

    Raises:
        RewindError: no such function, or no checkpoints yet (it never ran here).
    """
    from stream.esm.checkpoints import LeaseTable, LeaseTableError  # noqa: PLC0415

    _check_function(plan, function)
    table = lease_table_name(plan, function)
    leases = LeaseTable(table, "shardline-rewind", client=client("dynamodb"))
    try:
        found = leases.leases()
    except LeaseTableError as exc:
        if exc.code != "ResourceNotFoundException":
            raise
        found = []
    if not found:
        msg = (
            f"function {function!r} has no checkpoints in {table!r}: it has not run here yet "
            "(nothing to rewind; its first run starts at its starting_position)"
        )
        raise RewindError(msg)
    kinesis = client("kinesis")
    stream = str(plan["stream"]["name"])
    moves = tuple(_shard_move(kinesis, stream, lease, to) for lease in found)
    return RewindPreview(function, table, to, moves)


def _check_function(plan: Plan, function: str) -> None:
    if function not in plan["functions"]:
        known = ", ".join(plan["functions"])
        msg = f"no function {function!r} in the file (it has: {known})"
        raise RewindError(msg)


def check_not_held(rewind: RewindPreview, *, force: bool = False) -> None:
    """Refuse a rewind while a worker holds a lease of the function, unless ``force``.

    Raises:
        RewindError: a lease has an owner, and not ``force``; the message says to stop
            ``shardline run`` first.
    """
    if rewind.held and not force:
        holders = ", ".join(f"{shard} by {owner}" for shard, owner in rewind.held.items())
        msg = (
            f"function {rewind.function!r} is running: leases held ({holders}). Stop "
            "`shardline run` (or `dev`) first: it releases its leases when it stops. If no "
            "worker runs any more (it was killed), pass --force: a worker still running loses "
            "its leases and cannot overwrite the rewound checkpoints"
        )
        raise RewindError(msg)


def rewind_checkpoints(
    rewind: RewindPreview, client: Callable[[str], Any], *, force: bool = False
) -> list[ShardMove]:
    """Write the moves of ``rewind``; the shards moved.

    Each write is conditional on the lease counter as planned, bumps it and removes the
    owner (the module docstring says why).

    Raises:
        RewindError: a lease has an owner and not ``force``; or a lease changed since the
            plan was made (a worker checkpointed): plan again. Shards written before stay.
    """
    check_not_held(rewind, force=force)
    from botocore.exceptions import ClientError  # noqa: PLC0415

    dynamodb = client("dynamodb")
    counters = _counters(dynamodb, rewind.table)
    moved: list[ShardMove] = []
    for move in rewind.shards:
        if not move.moves:
            continue
        counter = counters.get(move.shard_id, 0)
        try:
            dynamodb.update_item(
                TableName=rewind.table,
                Key={"leaseKey": {"S": move.shard_id}},
                UpdateExpression=(
                    "SET #cp = :cp, #sub = :zero, #switches = :zero, #counter = :next "
                    "REMOVE #owner"
                ),
                ConditionExpression="#counter = :known AND #cp = :was",
                ExpressionAttributeNames={
                    "#cp": "checkpoint", "#sub": "checkpointSubSequenceNumber",
                    "#switches": "ownerSwitchesSinceCheckpoint", "#counter": "leaseCounter",
                    "#owner": "leaseOwner",
                },
                ExpressionAttributeValues={
                    ":cp": {"S": move.target}, ":zero": {"N": "0"}, ":was": {"S": move.checkpoint},
                    ":known": {"N": str(counter)}, ":next": {"N": str(counter + 1)},
                },
            )  # fmt: skip
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            msg = (
                f"the lease of {move.shard_id} changed while rewinding (a worker checkpointed "
                f"or took it); {len(moved)} shard(s) moved before it. Stop the worker and "
                "run rewind again"
            )
            raise RewindError(msg) from None
        moved.append(move)
    return moved


def _counters(dynamodb: Any, table: str) -> dict[str, int]:
    """Each lease's counter now, read once more just before writing (consistent)."""
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        page = dynamodb.scan(**kwargs)
        items += page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return {
        item["leaseKey"]["S"]: int(item.get("leaseCounter", {}).get("N", "0")) for item in items
    }


def mapping_change_sets(
    template: Mapping[str, Any], mapping_id: str, to: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two templates of an AWS rewind: without the function's mapping (and with the
    rewind recorded as pending), then with a new one at ``AT_TIMESTAMP`` ``to`` under a
    logical id naming the time (see the module docstring). ``mapping_id`` is the id the file
    gives the mapping; the deployed one may carry an earlier rewind's id. Outputs that refer
    to the mapping leave with it and come back referring to the new one.

    >>> t = {"Resources": {"FM": {"Type": "AWS::Lambda::EventSourceMapping",
    ...       "Properties": {"StartingPosition": "TRIM_HORIZON"}}},
    ...      "Outputs": {"FMId": {"Value": {"Ref": "FM"}}}}
    >>> without, again = mapping_change_sets(t, "FM", 0.0)
    >>> sorted(without["Resources"]), sorted(without["Outputs"])
    ([], [])
    >>> pending_rewind(without, "FM")["to"]
    '1970-01-01T00:00:00.000+00:00'
    >>> again["Resources"]["FMAt0"]["Properties"]
    {'StartingPosition': 'AT_TIMESTAMP', 'StartingPositionTimestamp': 0.0}
    >>> again["Resources"]["FMAt0"]["Metadata"]["shardline:rewound_to"]
    '1970-01-01T00:00:00.000+00:00'
    >>> again["Outputs"], "Metadata" in again
    ({'FMId': {'Value': {'Ref': 'FMAt0'}}}, False)

    Raises:
        RewindError: the template has no such mapping.
    """
    resources = template.get("Resources", {})
    current = next(
        (
            logical_id
            for logical_id, resource in resources.items()
            if resource.get("Type") == "AWS::Lambda::EventSourceMapping"
            and mapping_id in (logical_id, (resource.get("Metadata") or {}).get(REWOUND_FROM))
        ),
        None,
    )
    if current is None:
        msg = (
            f"the deployed template has no event source mapping {mapping_id!r} and no "
            "interrupted rewind of it to finish: deploy first"
        )
        raise RewindError(msg)
    without = copy.deepcopy(dict(template))
    mapping = without["Resources"].pop(current)
    outputs = without.get("Outputs", {})
    gone = {k: v for k, v in outputs.items() if v.get("Value") == {"Ref": current}}
    without["Outputs"] = {k: v for k, v in outputs.items() if k not in gone}
    metadata = dict(without.get("Metadata") or {})
    pending = dict(metadata.get(REWIND_PENDING) or {})
    pending[mapping_id] = {
        "to": _iso(to),
        "mapping": json.dumps(mapping, sort_keys=True),
        "outputs": json.dumps(gone, sort_keys=True),
    }
    without["Metadata"] = {**metadata, REWIND_PENDING: pending}
    return without, resume_change_set(without, mapping_id, to)


def pending_rewind(template: Mapping[str, Any], mapping_id: str) -> dict[str, Any] | None:
    """The rewind of ``mapping_id`` that removed the mapping and has not created it again
    (``to``: the time it was rewinding to; ``mapping``, ``outputs``: JSON text), else None."""
    pending = (template.get("Metadata") or {}).get(REWIND_PENDING) or {}
    record = pending.get(mapping_id)
    return dict(record) if isinstance(record, dict) else None


def resume_change_set(template: Mapping[str, Any], mapping_id: str, to: float) -> dict[str, Any]:
    """The second template of a rewind: ``template`` (the first one, or a stack left with
    the rewind pending) with the mapping recorded as pending back, at ``AT_TIMESTAMP``
    ``to``, under a logical id naming the time, and the record removed.

    Raises:
        RewindError: ``template`` has no pending rewind of ``mapping_id``.
    """
    record = pending_rewind(template, mapping_id)
    if record is None:
        msg = f"no interrupted rewind of {mapping_id!r} in the deployed template"
        raise RewindError(msg)
    again = copy.deepcopy(dict(template))
    metadata = dict(again.pop("Metadata", None) or {})
    pending = {k: v for k, v in metadata.pop(REWIND_PENDING, {}).items() if k != mapping_id}
    if pending:
        metadata[REWIND_PENDING] = pending
    if metadata:
        again["Metadata"] = metadata
    new_id = f"{mapping_id}At{int(to)}"
    mapping = json.loads(record["mapping"])
    mapping["Properties"]["StartingPosition"] = "AT_TIMESTAMP"
    mapping["Properties"]["StartingPositionTimestamp"] = to
    stamp = {REWOUND_TO: _iso(to), REWOUND_FROM: mapping_id}
    mapping["Metadata"] = {**(mapping.get("Metadata") or {}), **stamp}
    again["Resources"][new_id] = mapping
    back = json.loads(record.get("outputs") or "{}")
    again["Outputs"] = {
        **again.get("Outputs", {}),
        **{k: {**v, "Value": {"Ref": new_id}} for k, v in back.items()},
    }
    return again


@dataclass(frozen=True, slots=True)
class MappingRewind:
    """What an AWS rewind of one function's event source mapping does.

    Attributes:
        function: the function.
        stack: the stack.
        mapping_id: the mapping's logical id.
        to: the timestamp (epoch seconds).
        shards: records at or after ``to`` by shard id: all of them are read again
            (approximate: records arriving meanwhile are read anyway).
        templates: the templates applied, in order: two (see :func:`mapping_change_sets`),
            or one that finishes an interrupted rewind (:func:`resume_change_set`).
        resumed: the time an interrupted rewind was rewinding to (ISO), "" when none.
    """

    function: str
    stack: str
    mapping_id: str
    to: float
    shards: dict[str, int]
    templates: tuple[dict[str, Any], ...]
    resumed: str = ""

    @property
    def records(self) -> int:
        """Records reprocessed, all shards."""
        return sum(self.shards.values())

    def as_dict(self) -> dict[str, Any]:
        """The plan for ``--json``."""
        return {
            "function": self.function, "stack": self.stack, "mapping": self.mapping_id,
            "to": _iso(self.to), "records": self.records, "shards": self.shards,
            "resumed": self.resumed,
        }  # fmt: skip


def plan_mapping_rewind(
    plan: Plan, function: str, to: float, client: Callable[[str], Any]
) -> MappingRewind:
    """What rewinding ``function``'s deployed mapping to ``to`` does (nothing changed yet).

    Raises:
        RewindError: no such function, or the stack has no mapping for it.
    """
    from deploy.aws.cloudformation import logical_ids  # noqa: PLC0415
    from deploy.aws.stack import deployed_template, stack_status  # noqa: PLC0415

    _check_function(plan, function)
    stack = str(plan["name"])
    if stack_status(client("cloudformation"), stack) is None:
        msg = f"stack {stack!r} is not deployed: nothing to rewind (shardline deploy first)"
        raise RewindError(msg)
    mapping_id = logical_ids(plan)[("Mapping", function)]
    deployed = deployed_template(client("cloudformation"), stack)
    interrupted = pending_rewind(deployed, mapping_id)
    templates: tuple[dict[str, Any], ...]
    if interrupted is not None and not _has_mapping(deployed, mapping_id):
        templates = (resume_change_set(deployed, mapping_id, to),)
    else:
        interrupted = None
        templates = mapping_change_sets(deployed, mapping_id, to)
    kinesis = client("kinesis")
    stream = str(plan["stream"]["name"])
    stamp = datetime.fromtimestamp(to, UTC)
    shards: dict[str, int] = {}
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        at = {"ShardId": shard["ShardId"], "ShardIteratorType": "AT_TIMESTAMP", "Timestamp": stamp}
        shards[shard["ShardId"]] = sum(1 for _ in _read(kinesis, stream, at))
    resumed = str(interrupted["to"]) if interrupted else ""
    return MappingRewind(function, stack, mapping_id, to, shards, templates, resumed)


def _has_mapping(template: Mapping[str, Any], mapping_id: str) -> bool:
    """Whether ``template`` has the mapping the file calls ``mapping_id`` (maybe rewound)."""
    return any(
        resource.get("Type") == "AWS::Lambda::EventSourceMapping"
        and mapping_id in (logical_id, (resource.get("Metadata") or {}).get(REWOUND_FROM))
        for logical_id, resource in template.get("Resources", {}).items()
    )


def rewind_mapping(
    rewind: MappingRewind,
    client: Callable[[str], Any],
    *,
    log: Callable[[str], None] | None = None,
    timeout_s: float = 1800.0,
) -> None:
    """Apply the change sets of ``rewind``: the mapping goes, then comes back at
    ``AT_TIMESTAMP`` (or, finishing an interrupted rewind, only comes back).

    Raises:
        deploy.aws.stack.StackError: the first change set failed (nothing changed).
        RewindError: the mapping was removed and the change set creating it again failed:
            the function reads nothing until ``shardline rewind`` is run again, which
            finishes this rewind (the message says so).
    """
    from deploy.aws.stack import StackError, update_template  # noqa: PLC0415

    *first, last = rewind.templates
    for template in first:
        update_template(client, rewind.stack, template, log=log, timeout_s=timeout_s)
    try:
        update_template(client, rewind.stack, last, log=log, timeout_s=timeout_s)
    except StackError as exc:
        msg = (
            f"{exc}\nthe mapping {rewind.mapping_id} of {rewind.function!r} is removed and "
            "was not created again: the function reads nothing now. Run `shardline rewind` "
            "again: it finishes this rewind (the stack records it)"
        )
        raise RewindError(msg) from exc
