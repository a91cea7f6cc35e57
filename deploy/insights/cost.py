"""What a pipeline will cost a month on AWS, line by line, and when containers would be cheaper.

People choose Lambda for the bill, so the bill has to be known before the deploy. The model
takes the compiled plan (:func:`deploy.pipeline.config.compile_plan`), a steady rate of records per
second, their size, and the public list prices of ``deploy/insights/prices.json`` (dated, per
region, overridable), and prices each line the way AWS bills it:

* Kinesis, on-demand: GB in and GB out, each record rounded up to 1 KB (AWS states the
  rounding for writes; it is assumed for reads), one read of every record per function (each
  function has its own event source mapping on the shared throughput), and stream-hours.
  Provisioned: the plan's shards for every hour, and PUT payload units of 25 KB per record.
  A function with ``batch.consumer: efo`` reads through its own enhanced fan-out consumer
  instead, billed apart: its data retrieved per GB (on-demand and provisioned prices differ)
  and, provisioned, a consumer-shard hour for every shard. EFO never lowers the bill: it pays
  off in read throughput, and the notes say from how many functions and which rate the
  shared 2 MB/s per shard is used up (:meth:`CostModel.efo_pays_off`).
* Lambda, per function: requests = records / effective batch size, and GB-seconds = memory
  x records x the per-record duration (Lambda's billed wall time per record, sink writes
  included). The effective batch is what the event source mapping really hands over: the
  records that arrive on one shard (split ``parallelization`` ways) during the batching
  window, or during the one-second poll when there is no window, capped by the batch size and
  the 6 MB invocation payload.
* Lambda's scheduled window flushes (a ``state: dynamodb`` window step's ``flush_s``): one
  invocation every ``flush_s`` whatever the rate, each billed at an assumed
  :data:`FLUSH_MS` (not measured); their DynamoDB reads are not priced.
* Sinks: DynamoDB write request units per item (record plus bookkeeping attributes, rounded
  up per KB), S3 PUTs (one object per batch and partition: time partitions give one per
  batch, so one is assumed) and the storage a month of archive adds, SQS requests. Filters
  and route conditions are not estimated: every record reaches every sink its function can
  route to (an upper bound) unless ``sink_shares`` says what fraction does. Dead letters, at
  an assumed fraction, go to each function's ``on_failure`` sink.
* The same load on always-on containers (Fargate): vCPUs = rate x CPU time per record /
  target utilisation, at least one 0.25 vCPU / 0.5 GB task, 2 GB per vCPU. A record's CPU
  time on a container is its Lambda duration times the vCPU share Lambda gave it (1,769 MB
  is one vCPU), since Lambda's duration at 256 MB is that of a seventh of a CPU; pass
  ``container_per_record_ms`` to set it outright. The break-even rate is where the Lambda
  lines cost what the containers cost; everything else (stream, sinks) is the same on both.

Free tiers, tiered discounts (Lambda's beyond 6 billion GB-s), OpenSearch clusters, lookup
reads, CloudWatch and data transfer are not priced; the estimate's ``notes`` say what was
assumed or left out for the plan at hand.

>>> kinesis_billed_bytes(1500), put_payload_units(30 * 1024), write_request_units(1025)
(2048, 2, 2)
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from deploy.errors import DeployError
from deploy.names import flush_seconds

if TYPE_CHECKING:
    from collections.abc import Mapping

    from stream.plan import FunctionPlan, Plan

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_CONTAINER_UTILISATION",
    "DEFAULT_DEAD_LETTER_FRACTION",
    "DEFAULT_PER_RECORD_MS",
    "DEFAULT_REGION",
    "FLUSH_MS",
    "HOURS_PER_MONTH",
    "ContainerEstimate",
    "CostEstimate",
    "CostLine",
    "CostModel",
    "PriceError",
    "Prices",
    "estimate",
    "kinesis_billed_bytes",
    "load_price_table",
    "put_payload_units",
    "region_prices",
    "stream_shards",
    "write_request_units",
]

HOURS_PER_MONTH = 730.0
"""AWS's own month in its pricing examples (8,760 hours / 12)."""
DEFAULT_REGION = "us-east-1"
DEFAULT_PER_RECORD_MS = 1.0
"""Lambda's billed time per record when nothing was measured. The chain itself costs a few
µs per record (``python -m bench handler``: about 5 µs); the bulk writes to the sinks
dominate, one round trip of 10-50 ms per 25-500 records, i.e. 0.1-1 ms per record. 1 ms is
the round, pessimistic end; measure yours with ``shardline dev`` and pass ``--per-record-ms``."""
FLUSH_MS = 150.0
"""Lambda's billed time of one scheduled window flush, assumed, not measured: a read of the
window table's shard registry and of each shard's item, and a commit per shard it closes."""
DEFAULT_DEAD_LETTER_FRACTION = 0.001
DEFAULT_CONTAINER_UTILISATION = 0.6
"""Containers are sized to run at 60% CPU, the usual autoscaling target that leaves room for
bursts and a lost task."""
ARCHITECTURES = ("arm64", "x86_64")

KB = 1024
GB = 1024**3
PUT_PAYLOAD_UNIT_BYTES = 25 * KB
SHARD_RECORDS_PER_S = 1000
SHARD_BYTES_PER_S = 1024**2
SHARD_READ_BYTES_PER_S = 2 * 1024**2  # shared by the functions without consumer: efo
SHARD_READS_PER_S = 5
ON_DEMAND_MIN_SHARDS = 4  # a new on-demand stream writes 4 MB/s ...
ON_DEMAND_HEADROOM = 2.0  # ... and scales to twice the peak of the last 30 days
POLL_INTERVAL_S = 1.0  # Lambda polls each shard once a second without a batching window
INVOKE_PAYLOAD_BYTES = 6 * 1024**2
EVENT_RECORD_OVERHEAD_BYTES = 500  # eventID, ARN, sequence number... around the base64 data
LAMBDA_MB_PER_VCPU = 1769
DYNAMODB_BOOKKEEPING_BYTES = 200  # _position (141 chars), _shard, _written_at or _arrival
ARCHIVE_LINE_OVERHEAD_BYTES = 180  # _shard, _sequence, _sub_sequence, _partition_key, _arrival
GZIP_RATIO = 0.25  # JSON lines with repeated field names; a typical, not a measured, ratio
DEAD_LETTER_OVERHEAD_BYTES = 600  # the envelope around the base64 record (DeadLetter.document)
SQS_CHUNK_BYTES = 64 * KB  # SQS bills each 64 KB of a request's payload as one request
SQS_BATCH = 10
CONTAINER_MIN_VCPU = 0.25
CONTAINER_GB_PER_VCPU = 2.0
BREAK_EVEN_RANGE = (0.001, 1_000_000.0)  # records/s searched for the break-even
LAMBDA_FIRST_TIER_GB_S = 6e9

_SECTIONS: dict[str, tuple[str, ...]] = {
    "kinesis_on_demand": ("per_gb_ingested", "per_gb_retrieved", "per_stream_hour"),
    "kinesis_provisioned": ("per_shard_hour", "per_million_put_payload_units"),
    "kinesis_enhanced_fan_out": (
        "per_consumer_shard_hour",
        "per_gb_retrieved_provisioned",
        "per_gb_retrieved_on_demand",
    ),
    "lambda": ("per_million_requests", "per_gb_second"),
    "dynamodb_on_demand": ("per_million_write_request_units",),
    "s3_standard": ("per_thousand_put_requests", "per_gb_month"),
    "sqs_standard": ("per_million_requests",),
    "fargate": ("per_vcpu_hour", "per_gb_hour"),
}
_BY_ARCHITECTURE = frozenset(
    {("lambda", "per_gb_second"), ("fargate", "per_vcpu_hour"), ("fargate", "per_gb_hour")}
)
_TOP_KEYS = ("as_of", "currency", "note", "regions")
_SECTION_WORDS = ("source", "as_of")  # a section's own date, when newer than the table's


class PriceError(DeployError, ValueError):
    """The price table cannot price this estimate; the message names the fix."""


# -- the price table -----------------------------------------------------------------------


def _suggest(word: str, choices: tuple[str, ...], kind: str = "key") -> str:
    from deploy.pipeline.fields import unknown  # noqa: PLC0415  # only for the message

    return unknown(kind, word, list(choices))


def _check_overrides(doc: Any) -> None:
    """Every key of an override document is one the table has; every price a number >= 0."""
    if not isinstance(doc, dict):
        msg = "expected a JSON object shaped like deploy/insights/prices.json"
        raise PriceError(msg)
    for key in doc:
        if key not in _TOP_KEYS:
            raise PriceError(f"{_suggest(key, _TOP_KEYS)} at the top level")
    regions = doc.get("regions", {})
    if not isinstance(regions, dict):
        raise PriceError("regions: expected an object of region names")
    for region, sections in regions.items():
        if not isinstance(sections, dict):
            raise PriceError(f"regions.{region}: expected an object of price sections")
        for section, keys in sections.items():
            where = f"regions.{region}.{section}"
            if section not in _SECTIONS:
                raise PriceError(
                    f"regions.{region}: {_suggest(section, tuple(_SECTIONS), 'section')}"
                )
            if not isinstance(keys, dict):
                raise PriceError(f"{where}: expected an object of prices")
            for key, value in keys.items():
                if key in _SECTION_WORDS:
                    continue
                if key not in _SECTIONS[section]:
                    choices = (*_SECTIONS[section], *_SECTION_WORDS)
                    raise PriceError(f"{where}: {_suggest(key, choices)}")
                if (section, key) in _BY_ARCHITECTURE:
                    if not isinstance(value, dict):
                        raise PriceError(
                            f'{where}.{key}: expected {{"arm64": price, "x86_64": price}}'
                        )
                    for arch, price in value.items():
                        if arch not in ARCHITECTURES:
                            raise PriceError(
                                f"{where}.{key}: {_suggest(arch, ARCHITECTURES, 'architecture')}"
                            )
                        _check_price(f"{where}.{key}.{arch}", price)
                else:
                    _check_price(f"{where}.{key}", value)


def _check_price(where: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise PriceError(f"{where}: expected a price in USD (a number >= 0), got {value!r}")


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> None:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


def load_price_table(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The bundled ``deploy/insights/prices.json``, ``overrides`` (same shape, any subset) on top.

    Raises:
        PriceError: an override names a key the table does not have, or a price is not a
            number >= 0.
    """
    text = resources.files("deploy.insights").joinpath("prices.json").read_text(encoding="utf-8")
    table: dict[str, Any] = json.loads(text)
    if overrides is not None:
        _check_overrides(overrides)
        _merge(table, overrides)
    return table


@dataclass(frozen=True)
class Prices:
    """One region's prices, every one present and checked, with the table's date."""

    region: str
    as_of: str
    sections: Mapping[str, Mapping[str, Any]]

    def get(self, section: str, key: str, architecture: str | None = None) -> float:
        """The price of ``key`` in ``section`` (of ``architecture`` where prices differ)."""
        value = self.sections[section][key]
        return float(value[architecture] if architecture is not None else value)

    def source(self, section: str) -> str:
        """Where the section's prices were read."""
        return str(self.sections[section].get("source", ""))


def region_prices(table: Mapping[str, Any], region: str) -> Prices:
    """The prices of ``region`` from a table made by :func:`load_price_table`.

    Raises:
        PriceError: the region is not in the table, or a price of it is missing.
    """
    regions = table.get("regions", {})
    if region not in regions:
        msg = (
            f"region {region!r} is not in the price table (it has: {', '.join(regions)}); "
            f'pass --prices FILE.json with {{"regions": {{"{region}": {{...}}}}}} holding every '
            "section of deploy/insights/prices.json at that region's prices, or pick a listed "
            "region"
        )
        raise PriceError(msg)
    sections = regions[region]
    for section, keys in _SECTIONS.items():
        for key in keys:
            value = sections.get(section, {}).get(key)
            missing = value is None or (
                (section, key) in _BY_ARCHITECTURE and set(value) != set(ARCHITECTURES)
            )
            if missing:
                msg = (
                    f"regions.{region}.{section}.{key}: missing; a region needs every price "
                    "of deploy/insights/prices.json (copy its us-east-1 section and edit the "
                    "prices)"
                )
                raise PriceError(msg)
    return Prices(region, str(table.get("as_of", "unknown")), sections)


# -- billing units ---------------------------------------------------------------------------


def kinesis_billed_bytes(record_bytes: int) -> int:
    """On-demand Kinesis bills each record rounded up to the next 1 KB (1,024 bytes).

    >>> kinesis_billed_bytes(1), kinesis_billed_bytes(1024), kinesis_billed_bytes(4608)
    (1024, 1024, 5120)
    """
    return max(1, math.ceil(record_bytes / KB)) * KB


def put_payload_units(record_bytes: int) -> int:
    """Provisioned Kinesis bills each record as 25 KB chunks, at least one.

    >>> put_payload_units(5 * 1024), put_payload_units(45 * 1024), put_payload_units(25 * 1024)
    (1, 2, 1)
    """
    return max(1, math.ceil(record_bytes / PUT_PAYLOAD_UNIT_BYTES))


def write_request_units(item_bytes: int) -> int:
    """A standard DynamoDB write costs one WRU per KB of item, rounded up, at least one.

    >>> write_request_units(1), write_request_units(1024), write_request_units(3 * 1024 + 1)
    (1, 1, 4)
    """
    return max(1, math.ceil(item_bytes / KB))


def stream_shards(stream: Mapping[str, Any], rate: float, record_bytes: int) -> int:
    """The shards a stream has at ``rate``: the plan's when provisioned; for on-demand, what
    AWS scales to (twice the needed write capacity, at least the 4 a new stream starts with).

    >>> stream_shards({"mode": "provisioned", "shards": 3}, 10_000, 100)
    3
    >>> on_demand = {"mode": "on_demand"}
    >>> stream_shards(on_demand, 1000, 1024), stream_shards(on_demand, 5000, 100)
    (4, 10)
    """
    if stream.get("mode") == "provisioned":
        return int(stream["shards"])
    needed = max(rate / SHARD_RECORDS_PER_S, rate * record_bytes / SHARD_BYTES_PER_S)
    return max(ON_DEMAND_MIN_SHARDS, math.ceil(ON_DEMAND_HEADROOM * needed - 1e-9))


# -- results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CostLine:
    """One line of the monthly bill.

    Attributes:
        service: Kinesis, Lambda, DynamoDB, S3 or SQS.
        item: what is billed, naming the function or sink it belongs to.
        quantity: how many ``unit`` a month.
        unit: the billing unit (GB, requests, GB-s, WRU...).
        price: the list price as quoted, e.g. ``$0.20 per 1M requests``.
        usd: the line's monthly cost.
    """

    service: str
    item: str
    quantity: float
    unit: str
    price: str
    usd: float


@dataclass(frozen=True)
class ContainerEstimate:
    """The Lambda functions' work on always-on Fargate tasks instead.

    Attributes:
        architecture: the tasks' CPU architecture (the functions').
        vcpu_needed: the vCPUs the work needs at the target utilisation.
        vcpu: what is paid for: ``vcpu_needed`` but at least one 0.25 vCPU task.
        memory_gb: 2 GB per vCPU, Fargate's smallest ratio (0.5 GB for 0.25 vCPU).
        usd: the tasks' monthly cost, running every hour of the month.
    """

    architecture: str
    vcpu_needed: float
    vcpu: float
    memory_gb: float
    usd: float


@dataclass(frozen=True)
class CostEstimate:
    """The monthly bill of a pipeline at one rate, and the container alternative."""

    pipeline: str
    region: str
    prices_as_of: str
    rate: float
    record_bytes: int
    hours_per_month: float
    records_per_month: float
    per_record_ms: float
    architecture: str
    lines: tuple[CostLine, ...]
    containers: ContainerEstimate
    break_even_rate: float | None
    notes: tuple[str, ...]

    @property
    def total_usd(self) -> float:
        """The monthly bill with Lambda: every line."""
        return sum(line.usd for line in self.lines)

    @property
    def lambda_usd(self) -> float:
        """The Lambda lines only: what containers would replace."""
        return sum(line.usd for line in self.lines if line.service == "Lambda")

    @property
    def total_with_containers_usd(self) -> float:
        """The monthly bill with the containers in place of the Lambda lines."""
        return self.total_usd - self.lambda_usd + self.containers.usd

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``, the totals included."""
        out = asdict(self)
        out["lines"] = [asdict(line) for line in self.lines]
        out["notes"] = list(self.notes)
        out["total_usd"] = self.total_usd
        out["lambda_usd"] = self.lambda_usd
        out["total_with_containers_usd"] = self.total_with_containers_usd
        return out


# -- the model ------------------------------------------------------------------------------


def _money(price: float) -> str:
    text = f"{price:.10f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


def _routed(function: FunctionPlan) -> list[str]:
    """The sinks a function's routes name (not its ``on_failure`` sink)."""
    from stream.runtime import used_sinks  # noqa: PLC0415  # keeps `shardline --help` light

    return used_sinks({**function, "on_failure": None})


def _efo(function: FunctionPlan) -> bool:
    return (function.get("batch") or {}).get("consumer") == "efo"


def _architecture(plan: Plan, function: FunctionPlan, default: str) -> str:
    return str(function.get("architecture") or plan.get("architecture") or default)


@dataclass(frozen=True)
class CostModel:
    """Prices one plan at any rate; :meth:`estimate` is the bill, :meth:`break_even_rate` the
    rate where containers start to be cheaper. Build it with :meth:`create`."""

    plan: Plan
    record_bytes: int
    prices: Prices
    hours_per_month: float = HOURS_PER_MONTH
    per_record_ms: float = DEFAULT_PER_RECORD_MS
    dead_letter_fraction: float = DEFAULT_DEAD_LETTER_FRACTION
    architecture: str = "arm64"
    container_utilisation: float = DEFAULT_CONTAINER_UTILISATION
    container_per_record_ms: float | None = None
    sink_shares: Mapping[str, float] | None = None

    @classmethod
    def create(
        cls,
        plan: Plan,
        record_bytes: int,
        *,
        region: str | None = None,
        prices: Mapping[str, Any] | None = None,
        hours_per_month: float = HOURS_PER_MONTH,
        per_record_ms: float = DEFAULT_PER_RECORD_MS,
        dead_letter_fraction: float = DEFAULT_DEAD_LETTER_FRACTION,
        architecture: str | None = None,
        container_utilisation: float = DEFAULT_CONTAINER_UTILISATION,
        container_per_record_ms: float | None = None,
        sink_shares: Mapping[str, float] | None = None,
    ) -> CostModel:
        """Check the inputs and pick the prices: ``region`` (else the plan's, else
        us-east-1) from the bundled table with ``prices`` (an override document) on top.
        ``sink_shares`` gives the fraction of its functions' records that reach a sink (the
        rest are filtered or routed elsewhere); a sink not named gets every record.

        Raises:
            PriceError: unknown region, a bad override, or an input out of range.
        """
        if record_bytes < 1 or hours_per_month <= 0 or per_record_ms < 0:
            msg = "record bytes must be >= 1, hours per month > 0, per-record ms >= 0"
            raise PriceError(msg)
        if not 0 <= dead_letter_fraction <= 1 or not 0 < container_utilisation <= 1:
            msg = "the dead-letter fraction must be in 0..1, the utilisation in (0, 1]"
            raise PriceError(msg)
        for sink, share in (sink_shares or {}).items():
            if sink not in plan["sinks"]:
                known = ", ".join(plan["sinks"])
                raise PriceError(f"sink share: unknown sink {sink!r} (known: {known})")
            if not 0 <= share <= 1:
                raise PriceError(f"sink share of {sink!r} must be in 0..1, got {share}")
        arch = architecture or plan.get("architecture") or "arm64"
        if arch not in ARCHITECTURES:
            raise PriceError(f"architecture {arch!r}: expected one of {', '.join(ARCHITECTURES)}")
        table = load_price_table(prices)
        chosen = region or plan.get("region") or DEFAULT_REGION
        return cls(
            plan, record_bytes, region_prices(table, chosen), hours_per_month, per_record_ms,
            dead_letter_fraction, arch, container_utilisation, container_per_record_ms,
            dict(sink_shares or {}),
        )  # fmt: skip

    # Each method prices one part of the bill at ``rate`` records per second.

    def records(self, rate: float) -> float:
        """Records a month at ``rate``."""
        return rate * 3600 * self.hours_per_month

    def effective_batch(self, function: FunctionPlan, rate: float) -> float:
        """Records per invocation: what one shard's slice of ``rate`` brings in a window (or a
        one-second poll), capped by the batch size and the 6 MB payload, at least one."""
        batch = function["batch"]
        slices = stream_shards(self.plan["stream"], rate, self.record_bytes) * max(
            1, int(batch.get("parallelization") or 1)
        )
        window = max(float(batch.get("window_s") or 0), POLL_INTERVAL_S)
        event_bytes = 4 * math.ceil(self.record_bytes / 3) + EVENT_RECORD_OVERHEAD_BYTES
        cap = min(int(batch["size"]), max(1, INVOKE_PAYLOAD_BYTES // event_bytes))
        return max(1.0, min(float(cap), rate / slices * window))

    def lambda_lines(self, rate: float) -> list[CostLine]:
        """Requests and GB-seconds of every function."""
        lines = []
        records = self.records(rate)
        per_request = self.prices.get("lambda", "per_million_requests")
        for name, function in self.plan["functions"].items():
            arch = _architecture(self.plan, function, self.architecture)
            per_gb_s = self.prices.get("lambda", "per_gb_second", arch)
            batch = self.effective_batch(function, rate)
            requests = records / batch
            gb_s = function["memory_mb"] / 1024 * records * self.per_record_ms / 1000
            lines += [
                CostLine(
                    "Lambda", f"{name}: requests (batch ~{batch:,.0f})", requests, "requests",
                    f"{_money(per_request)} per 1M", requests * per_request / 1e6,
                ),
                CostLine(
                    "Lambda", f"{name}: compute ({function['memory_mb']} MB, {arch})", gb_s,
                    "GB-s", f"{_money(per_gb_s)} per GB-s", gb_s * per_gb_s,
                ),
            ]  # fmt: skip
            lines += self._flush_lines(name, function, per_request, per_gb_s)
        return lines

    def flushes(self, function: FunctionPlan) -> float:
        """Scheduled window flushes of ``function`` a month (0 without one), at any rate."""
        every = flush_seconds(function)
        return self.hours_per_month * 3600 / every if every else 0.0

    def _flush_lines(
        self, name: str, function: FunctionPlan, per_request: float, per_gb_s: float
    ) -> list[CostLine]:
        """The function's scheduled window flushes: requests, and compute at the assumed
        :data:`FLUSH_MS` each."""
        n = self.flushes(function)
        if not n:
            return []
        gb_s = function["memory_mb"] / 1024 * n * FLUSH_MS / 1000
        every = flush_seconds(function)
        return [
            CostLine("Lambda", f"{name}: flushes (every {every} s)", n, "requests",
                     f"{_money(per_request)} per 1M", n * per_request / 1e6),
            CostLine("Lambda", f"{name}: flush compute ({FLUSH_MS:g} ms est.)",
                     gb_s, "GB-s", f"{_money(per_gb_s)} per GB-s", gb_s * per_gb_s),
        ]  # fmt: skip

    def _efo_functions(self) -> list[str]:
        return [n for n, f in self.plan["functions"].items() if _efo(f)]

    def efo_lines(self, rate: float) -> list[CostLine]:
        """Each ``consumer: efo`` function's consumer: data retrieved, and consumer-shard
        hours on a provisioned stream (each record read once, without rounding)."""
        stream, hours = self.plan["stream"], self.hours_per_month
        provisioned = stream.get("mode") == "provisioned"
        section = "kinesis_enhanced_fan_out"
        per_gb = self.prices.get(
            section, "per_gb_retrieved_provisioned" if provisioned else "per_gb_retrieved_on_demand"
        )
        per_hour = self.prices.get(section, "per_consumer_shard_hour")
        shards = stream_shards(stream, rate, self.record_bytes)
        gb = self.records(rate) * self.record_bytes / GB
        lines = []
        for name in self._efo_functions():
            lines.append(CostLine("Kinesis", f"{name}: EFO data retrieved", gb, "GB",
                                  f"{_money(per_gb)} per GB", gb * per_gb))  # fmt: skip
            if provisioned:
                n = shards * hours
                lines.append(CostLine(
                    "Kinesis", f"{name}: EFO consumer-shard hours ({shards} shards)", n,
                    "consumer-shard-hours", f"{_money(per_hour)} per consumer-shard-hour",
                    n * per_hour,
                ))  # fmt: skip
        return lines

    def efo_pays_off(self, rate: float) -> tuple[int, float | None]:
        """When shared throughput runs out, so that EFO pays off (in speed, never in price).

        Each shard's 2 MB/s and 5 reads/s are split among the shared functions: they keep up
        while together they read under 2 MB/s per shard and are at most five (one read a
        second each, about 1 s delivery). Returns the number of shared functions from which
        that fails at ``rate``, and the rate from which the plan's shared functions exceed
        it (None when they never do: an on-demand stream adds shards as writes grow, so
        four or fewer functions never reach it).
        """
        shards = stream_shards(self.plan["stream"], rate, self.record_bytes)
        per_shard = rate * self.record_bytes / shards
        by_bytes = math.floor(SHARD_READ_BYTES_PER_S / per_shard) + 1 if per_shard else 10**9
        functions = min(SHARD_READS_PER_S + 1, by_bytes)
        shared = len(self.plan["functions"]) - len(self._efo_functions())
        limit: float | None = None
        if shared:
            if self.plan["stream"].get("mode") == "provisioned":
                limit = shards * SHARD_READ_BYTES_PER_S / (shared * self.record_bytes)
            elif shared * SHARD_BYTES_PER_S / ON_DEMAND_HEADROOM > SHARD_READ_BYTES_PER_S:
                # on-demand keeps each shard at most half written: reads of 1/2 MB/s each
                limit = ON_DEMAND_MIN_SHARDS * SHARD_READ_BYTES_PER_S / (shared * self.record_bytes)
        return functions, limit

    def kinesis_lines(self, rate: float) -> list[CostLine]:
        """The stream: data in and out and stream-hours, or shard-hours and PUT units, and
        the EFO consumers (:meth:`efo_lines`)."""
        stream, hours, records = self.plan["stream"], self.hours_per_month, self.records(rate)
        if stream.get("mode") == "provisioned":
            shards = int(stream["shards"] or 0)  # validation requires it when provisioned
            units = records * put_payload_units(self.record_bytes)
            per_shard = self.prices.get("kinesis_provisioned", "per_shard_hour")
            per_units = self.prices.get("kinesis_provisioned", "per_million_put_payload_units")
            return [
                CostLine(
                    "Kinesis", f"shard-hours ({shards} shards)", shards * hours, "shard-hours",
                    f"{_money(per_shard)} per shard-hour", shards * hours * per_shard,
                ),
                CostLine(
                    "Kinesis", "PUT payload units (25 KB)", units, "units",
                    f"{_money(per_units)} per 1M", units * per_units / 1e6,
                ),
                *self.efo_lines(rate),
            ]  # fmt: skip
        consumers = len(self.plan["functions"]) - len(self._efo_functions())
        gb_in = records * kinesis_billed_bytes(self.record_bytes) / GB
        per_in = self.prices.get("kinesis_on_demand", "per_gb_ingested")
        per_out = self.prices.get("kinesis_on_demand", "per_gb_retrieved")
        per_hour = self.prices.get("kinesis_on_demand", "per_stream_hour")
        return [
            CostLine("Kinesis", "data in (on-demand)", gb_in, "GB",
                     f"{_money(per_in)} per GB", gb_in * per_in),
            CostLine("Kinesis", f"data out ({consumers} consuming functions)", gb_in * consumers,
                     "GB", f"{_money(per_out)} per GB", gb_in * consumers * per_out),
            CostLine("Kinesis", "stream-hours (on-demand)", hours, "stream-hours",
                     f"{_money(per_hour)} per stream-hour", hours * per_hour),
            *self.efo_lines(rate),
        ]  # fmt: skip

    def sink_lines(self, rate: float) -> list[CostLine]:
        """DynamoDB, S3 and SQS lines, summed per sink over the functions that write to it."""
        records, sinks = self.records(rate), self.plan["sinks"]
        wrus: dict[str, float] = {}
        puts: dict[str, float] = {}
        stored: dict[str, float] = {}
        sqs: dict[str, float] = {}
        item_wrus = write_request_units(self.record_bytes + DYNAMODB_BOOKKEEPING_BYTES)
        letter_bytes = 4 * math.ceil(self.record_bytes / 3) + DEAD_LETTER_OVERHEAD_BYTES
        for function in self.plan["functions"].values():
            batch = self.effective_batch(function, rate)
            for name in _routed(function):
                spec, share = sinks[name], (self.sink_shares or {}).get(name, 1.0)
                reaching = records * share
                if spec["type"] == "dynamodb":
                    wrus[name] = wrus.get(name, 0.0) + reaching * item_wrus
                elif spec["type"] == "s3":  # a batch writes an object if any record comes
                    objects = records / batch * (1 - (1 - share) ** batch)
                    puts[name] = puts.get(name, 0.0) + objects
                    line = self.record_bytes + ARCHIVE_LINE_OVERHEAD_BYTES
                    ratio = GZIP_RATIO if spec.get("compression", "gzip") == "gzip" else 1.0
                    stored[name] = stored.get(name, 0.0) + reaching * line * ratio / GB
                elif spec["type"] == "sqs" and reaching:
                    per_call = min(float(SQS_BATCH), max(1.0, batch * share))
                    chunks = math.ceil(per_call * self.record_bytes / SQS_CHUNK_BYTES)
                    sqs[name] = sqs.get(name, 0.0) + reaching / per_call * max(1, chunks)
            letters = records * self.dead_letter_fraction
            target = function.get("on_failure")
            if target and sinks[target]["type"] == "s3":  # sparse: one object per letter
                puts[target] = puts.get(target, 0.0) + letters
            elif letters:  # one message per request: poison records come one at a time
                queue = target or f"{self.plan['name']}-dlq"
                sqs[queue] = sqs.get(queue, 0.0) + letters * math.ceil(
                    letter_bytes / SQS_CHUNK_BYTES
                )
        return self._sink_cost_lines(wrus, puts, stored, sqs)

    def _sink_cost_lines(
        self,
        wrus: Mapping[str, float],
        puts: Mapping[str, float],
        stored: Mapping[str, float],
        sqs: Mapping[str, float],
    ) -> list[CostLine]:
        per_wru = self.prices.get("dynamodb_on_demand", "per_million_write_request_units")
        per_put = self.prices.get("s3_standard", "per_thousand_put_requests")
        per_gb_month = self.prices.get("s3_standard", "per_gb_month")
        per_sqs = self.prices.get("sqs_standard", "per_million_requests")
        lines = [
            CostLine("DynamoDB", f"{name}: writes", n, "WRU",
                     f"{_money(per_wru)} per 1M", n * per_wru / 1e6)
            for name, n in wrus.items()
        ]  # fmt: skip
        for name, n in puts.items():
            lines.append(CostLine("S3", f"{name}: PUT requests", n, "requests",
                                  f"{_money(per_put)} per 1,000", n * per_put / 1000))  # fmt: skip
            if name in stored:
                gb = stored[name]
                lines.append(CostLine("S3", f"{name}: storage added this month", gb,
                                      "GB-month", f"{_money(per_gb_month)} per GB-month",
                                      gb * per_gb_month))  # fmt: skip
        lines += [
            CostLine("SQS", f"{name}: requests", n, "requests",
                     f"{_money(per_sqs)} per 1M", n * per_sqs / 1e6)
            for name, n in sqs.items()
        ]  # fmt: skip
        return lines

    def lines(self, rate: float) -> list[CostLine]:
        """The whole monthly bill with Lambda, line by line."""
        return [*self.kinesis_lines(rate), *self.lambda_lines(rate), *self.sink_lines(rate)]

    def lambda_usd(self, rate: float) -> float:
        """What the Lambda lines cost at ``rate``."""
        return sum(line.usd for line in self.lambda_lines(rate))

    def containers(self, rate: float) -> ContainerEstimate:
        """The functions' work on always-on Fargate tasks of the same architecture."""
        cpu_s = 0.0
        for function in self.plan["functions"].values():
            if self.container_per_record_ms is not None:
                cpu_s += self.container_per_record_ms / 1000
            else:
                share = min(1.0, function["memory_mb"] / LAMBDA_MB_PER_VCPU)
                cpu_s += self.per_record_ms / 1000 * share
        needed = rate * cpu_s / self.container_utilisation
        vcpu = max(CONTAINER_MIN_VCPU, needed)
        memory = vcpu * CONTAINER_GB_PER_VCPU
        arch = self.architecture
        hourly = vcpu * self.prices.get("fargate", "per_vcpu_hour", arch) + memory * (
            self.prices.get("fargate", "per_gb_hour", arch)
        )
        return ContainerEstimate(arch, needed, vcpu, memory, hourly * self.hours_per_month)

    def break_even_rate(self) -> float | None:
        """The lowest rate (records/s) from which the Lambda lines cost at least as much as
        the containers, or None when Lambda stays cheaper over ``BREAK_EVEN_RANGE``.

        Lambda costs nothing at no load and the containers cost one small task, so Lambda
        starts below; the first point of a geometric scan where it is no longer below is
        narrowed by bisection to within a millionth.
        """

        def gap(rate: float) -> float:
            return self.lambda_usd(rate) - self.containers(rate).usd

        lo, hi = BREAK_EVEN_RANGE
        steps = 400
        previous = lo
        if gap(lo) >= 0:
            return None
        for i in range(1, steps + 1):
            rate = float(lo * (hi / lo) ** (i / steps))
            if gap(rate) >= 0:
                low, high = previous, rate
                while high - low > 1e-6 * high:
                    middle = (low + high) / 2
                    low, high = (low, middle) if gap(middle) >= 0 else (middle, high)
                return high
            previous = rate
        return None

    def notes(self, rate: float) -> list[str]:
        """What the estimate assumed or left out, for this plan at this rate."""
        plan, stream = self.plan, self.plan["stream"]
        shards = stream_shards(stream, rate, self.record_bytes)
        shares = self.sink_shares or {}
        priced = {"dynamodb", "s3", "sqs"}
        full = [s for f in plan["functions"].values() for s in _routed(f)
                if s not in shares and plan["sinks"][s]["type"] in priced]  # fmt: skip
        notes = [
            f"per-record duration {self.per_record_ms:g} ms per function (Lambda billed time, "
            "sink writes included); measure yours and pass --per-record-ms",
            f"dead letters at {self.dead_letter_fraction:.2%} of each function's records",
            f"containers: {self.container_utilisation:.0%} target CPU, at least one "
            "0.25 vCPU / 0.5 GB task, 2 GB per vCPU; CPU per record "
            + (
                f"{self.container_per_record_ms:g} ms per function"
                if self.container_per_record_ms is not None
                else f"= Lambda duration x Lambda's vCPU share (memory / {LAMBDA_MB_PER_VCPU} MB)"
            ),
            "not priced: free tiers, OpenSearch, lookup reads, CloudWatch, data transfer",
        ]
        if full:
            notes.append(
                f"upper bound: every record reaches {', '.join(dict.fromkeys(full))} "
                "(filters and route conditions are not estimated); pass --sink-share SINK=F"
            )
        if stream.get("mode") != "provisioned":
            notes.append(f"on-demand stream assumed at {shards} shards for batching")
        elif rate > shards * SHARD_RECORDS_PER_S or (
            rate * self.record_bytes > shards * SHARD_BYTES_PER_S
        ):
            need = math.ceil(max(rate / SHARD_RECORDS_PER_S,
                                 rate * self.record_bytes / SHARD_BYTES_PER_S))  # fmt: skip
            notes.append(f"{shards} shards cannot take this rate (writes throttle): "
                         f"set stream.shards to at least {need}")  # fmt: skip
        if stream.get("aggregated"):
            notes.append("stream.aggregated: Kinesis bills and batches the KPL aggregates, "
                         "so Kinesis and Lambda requests are lower than shown")  # fmt: skip
        if (stream.get("retention_hours") or 24) > 24:
            notes.append("retention beyond 24 hours is billed extra and not included")
        for name, function in plan["functions"].items():
            slices = shards * max(1, int(function["batch"].get("parallelization") or 1))
            if rate / slices * self.per_record_ms / 1000 >= 1:
                notes.append(f"{name} cannot keep up: {rate / slices:,.0f} records/s per shard "
                             "slice at this duration; raise batch.parallelization")  # fmt: skip
            for sink in _routed(function):
                spec = plan["sinks"][sink]
                partition = str(spec.get("partition") or "")
                named = partition.replace("{arrival:", "").replace("{now:", "")
                if spec["type"] == "s3" and "{" in named:
                    notes.append(f"{sink}: the partition names record fields; one object per "
                                 "batch assumed (one per distinct value in reality)")  # fmt: skip
                if spec["type"] in ("opensearch", "kinesis"):
                    notes.append(f"{sink} ({spec['type']}): not priced")
        windowed = [name for name, f in plan["functions"].items()
                    if any("window" in p and p["window"].get("state", "dynamodb") == "dynamodb"
                           for p in f.get("processors", []))]  # fmt: skip
        if windowed:
            notes.append(
                f"window state ({', '.join(windowed)}): its table's writes are not priced: per "
                "batch, one per (key, window) the batch changed or closed, and "
                "the shard's item (python -m bench invocation counts them for the example)"
            )
        flushed = [name for name, f in plan["functions"].items() if self.flushes(f)]
        if flushed:
            notes.append(
                f"window flushes ({', '.join(flushed)}): one invocation per flush_s at any "
                f"rate, each assumed {FLUSH_MS:g} ms (not measured); their DynamoDB reads "
                "(the shard registry and one item per shard) are not priced"
            )
        notes += self._efo_notes(rate)
        gb_s = sum(line.quantity for line in self.lambda_lines(rate) if line.unit == "GB-s")
        if gb_s > LAMBDA_FIRST_TIER_GB_S:
            notes.append("over 6 billion GB-s a month: Lambda's tiered discount not applied")
        return list(dict.fromkeys(notes))

    def _efo_notes(self, rate: float) -> list[str]:
        functions, limit = self.efo_pays_off(rate)
        efo = self._efo_functions()
        shared = len(self.plan["functions"]) - len(efo)
        where = (
            f"from {limit:,.0f} records/s with these {shared} shared functions"
            if limit is not None
            else f"at no rate with these {shared} shared functions"
        )
        notes = [
            f"enhanced fan-out (batch.consumer: efo) pays off in read throughput, never in "
            f"price: at this rate and size from {functions} shared functions per stream, "
            f"and {where} (each shard's 2 MB/s and 5 reads/s are split among them)"
        ]
        if shared >= functions:
            notes.append(f"{shared} functions share each shard's reads at this rate: they fall "
                         "behind; give the busiest consumer: efo, or add shards")  # fmt: skip
        if efo:
            per = sum(line.usd for line in self.efo_lines(rate)) / len(efo)
            notes.append(f"each EFO function adds ${per:,.2f} a month at this rate "
                         f"({', '.join(efo)})")  # fmt: skip
        return notes

    def estimate(self, rate: float) -> CostEstimate:
        """The monthly bill at ``rate`` records per second, with the container comparison."""
        if rate <= 0:
            raise PriceError(f"rate must be > 0 records/s, got {rate}")
        return CostEstimate(
            pipeline=str(self.plan.get("name", "")),
            region=self.prices.region,
            prices_as_of=self.prices.as_of,
            rate=rate,
            record_bytes=self.record_bytes,
            hours_per_month=self.hours_per_month,
            records_per_month=self.records(rate),
            per_record_ms=self.per_record_ms,
            architecture=self.architecture,
            lines=tuple(self.lines(rate)),
            containers=self.containers(rate),
            break_even_rate=self.break_even_rate(),
            notes=tuple(self.notes(rate)),
        )


def estimate(
    plan: Plan,
    rate: float,
    record_bytes: int,
    *,
    region: str | None = None,
    prices: Mapping[str, Any] | None = None,
    hours_per_month: float = HOURS_PER_MONTH,
    per_record_ms: float = DEFAULT_PER_RECORD_MS,
    dead_letter_fraction: float = DEFAULT_DEAD_LETTER_FRACTION,
    architecture: str | None = None,
    container_utilisation: float = DEFAULT_CONTAINER_UTILISATION,
    container_per_record_ms: float | None = None,
    sink_shares: Mapping[str, float] | None = None,
) -> CostEstimate:
    """The monthly cost of ``plan`` at ``rate`` records/s of ``record_bytes`` each.

    The options are :meth:`CostModel.create`'s.

    Raises:
        PriceError: unknown region, a bad price override, or an input out of range.
    """
    model = CostModel.create(
        plan, record_bytes, region=region, prices=prices, hours_per_month=hours_per_month,
        per_record_ms=per_record_ms, dead_letter_fraction=dead_letter_fraction,
        architecture=architecture, container_utilisation=container_utilisation,
        container_per_record_ms=container_per_record_ms, sink_shares=sink_shares,
    )  # fmt: skip
    return model.estimate(rate)
