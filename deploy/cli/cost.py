"""``shardline cost``: what a pipeline will cost a month, before it is deployed.

The command prices the pipeline file (or compiled plan) at a steady rate with
:mod:`deploy.insights.cost` and prints the bill line by line, the total, the same work on always-on
containers and the rate from which those would be cheaper. ``--json`` prints the same as
data. Bad input (an unknown region, a price file of the wrong shape) is one line on stderr
naming the fix, and the exit status is 2, as for a usage error.

It is a plain ``click.Command``; ``deploy.cli.main`` adds it to the ``shardline`` group. rich and
the cost model are imported when the command runs, so ``shardline --help`` stays light.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, NoReturn

import click

from deploy.insights.cost import (
    ARCHITECTURES,
    DEFAULT_DEAD_LETTER_FRACTION,
    DEFAULT_PER_RECORD_MS,
    HOURS_PER_MONTH,
)

if TYPE_CHECKING:
    from deploy.insights.cost import CostEstimate

__all__ = ["cost"]

EXIT_INPUT = 2


def _fail(message: str) -> NoReturn:
    click.echo(message, err=True)
    raise SystemExit(EXIT_INPUT)


def _read_prices(path: str) -> Any:
    """The override document of ``--prices``; unreadable or not JSON is one line, exit 2."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except OSError as exc:
        _fail(f"{path}: cannot read: {exc.strerror}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = f"{path}:{exc.lineno}" if isinstance(exc, json.JSONDecodeError) else path
        _fail(f"{where}: not JSON ({exc}); give an object shaped like deploy/insights/prices.json")


def _shares(values: tuple[str, ...]) -> dict[str, float]:
    """``--sink-share SINK=FRACTION`` values by sink; the range is checked by the model."""
    shares = {}
    for value in values:
        sink, _, fraction = value.partition("=")
        try:
            shares[sink] = float(fraction)
        except ValueError:
            _fail(f"--sink-share {value!r}: expected SINK=FRACTION, e.g. orders=0.2")
    return shares


def _quantity(value: float, unit: str) -> str:
    if value >= 1e6:
        return f"{value / 1e6:,.2f} M {unit}"
    if value >= 1000:
        return f"{value:,.0f} {unit}"
    return f"{value:,.2f}".rstrip("0").rstrip(".") + f" {unit}"


def _print(result: CostEstimate) -> None:
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    table = Table(
        title=(
            f"{result.pipeline}: {result.rate:,g} records/s of {result.record_bytes:,} bytes, "
            f"{result.records_per_month:,.0f} records in {result.hours_per_month:g} hours"
        ),
        caption=f"{result.region} list prices as of {result.prices_as_of} (USD)",
    )
    table.add_column("service")
    table.add_column("line")
    table.add_column("quantity a month", justify="right")
    table.add_column("price")
    table.add_column("monthly", justify="right")
    for line in result.lines:
        table.add_row(
            line.service, line.item, _quantity(line.quantity, line.unit), line.price,
            f"${line.usd:,.2f}",
        )  # fmt: skip
    table.add_section()
    table.add_row("", "total", "", "", f"${result.total_usd:,.2f}")
    console = Console(width=120)
    console.print(table)
    box = result.containers
    console.print(
        f"total: ${result.total_usd:,.2f} a month, of which Lambda ${result.lambda_usd:,.2f}",
        highlight=False,
    )
    console.print(
        f"containers instead of Lambda (Fargate {box.architecture}, always on): "
        f"{box.vcpu:.2f} vCPU, {box.memory_gb:.2f} GB: ${box.usd:,.2f} a month; "
        f"total ${result.total_with_containers_usd:,.2f}",
        highlight=False,
    )
    if result.break_even_rate is None:
        console.print("break-even: none up to 1,000,000 records/s (Lambda stays cheaper)")
    else:
        console.print(
            f"break-even: {result.break_even_rate:,.3g} records/s (Lambda is cheaper below, "
            "containers above)",
            highlight=False,
        )
    for note in result.notes:
        console.print(f"note: {note}", highlight=False, markup=False)


@click.command("cost")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option(
    "--rate", required=True, type=click.FloatRange(min=0, min_open=True),
    help="Records per second, steady over the month.",
)  # fmt: skip
@click.option(
    "--record-bytes", required=True, type=click.IntRange(1, 1024 * 1024),
    help="Bytes per record as produced (Kinesis allows up to 1 MiB).",
)  # fmt: skip
@click.option(
    "--hours-per-month", type=click.FloatRange(min=0, min_open=True, max=744),
    default=HOURS_PER_MONTH, show_default=True, help="Hours the load runs in a month.",
)  # fmt: skip
@click.option("--region", help="Price region [default: the file's region, else us-east-1].")
@click.option(
    "--prices", "prices_file", type=click.Path(dir_okay=False),
    help="JSON prices over the bundled table, shaped like deploy/insights/prices.json "
    "(any subset).",
)  # fmt: skip
@click.option(
    "--per-record-ms", type=click.FloatRange(min=0), default=DEFAULT_PER_RECORD_MS,
    show_default=True, help="Lambda's billed time per record and function, sink writes included.",
)  # fmt: skip
@click.option(
    "--dead-letter-fraction", type=click.FloatRange(0, 1),
    default=DEFAULT_DEAD_LETTER_FRACTION, show_default=True,
    help="Share of records that end in the on_failure sink.",
)  # fmt: skip
@click.option(
    "--architecture", type=click.Choice(ARCHITECTURES),
    help="The functions' (and containers') architecture [default: the plan's, else arm64].",
)  # fmt: skip
@click.option(
    "--sink-share", "sink_shares", multiple=True, metavar="SINK=FRACTION",
    help="Share of records that reach SINK (default 1: every record); repeatable.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the estimate as JSON.")
def cost(
    file: str, *, rate: float, record_bytes: int, hours_per_month: float, region: str | None,
    prices_file: str | None, per_record_ms: float, dead_letter_fraction: float,
    architecture: str | None, sink_shares: tuple[str, ...], as_json: bool,
) -> None:  # fmt: skip
    """Estimate the monthly AWS cost of the pipeline FILE at --rate records/s.

    Prices the stream, every function (requests and GB-seconds from its memory, batch and
    the per-record duration) and the sinks, compares the functions with always-on
    containers and prints the rate from which the containers are cheaper. Prices are the
    bundled dated list prices (deploy/insights/prices.json); --prices overrides them.
    """
    from deploy.cli.common import load_any_plan  # noqa: PLC0415
    from deploy.insights.cost import CostModel, PriceError, load_price_table  # noqa: PLC0415
    from stream.exceptions import PlanError  # noqa: PLC0415

    overrides = _read_prices(prices_file) if prices_file else None
    if overrides is not None:
        try:
            load_price_table(overrides)
        except PriceError as exc:
            _fail(f"{prices_file}: {exc}")
    try:
        plan = load_any_plan(file)
    except (OSError, json.JSONDecodeError, PlanError) as exc:  # a .json plan: not one
        _fail(f"{file}: {exc}")
    try:
        model = CostModel.create(
            plan, record_bytes, region=region, prices=overrides,
            hours_per_month=hours_per_month, per_record_ms=per_record_ms,
            dead_letter_fraction=dead_letter_fraction, architecture=architecture,
            sink_shares=_shares(sink_shares),
        )  # fmt: skip
        result = model.estimate(rate)
    except PriceError as exc:
        _fail(f"{file}: {exc}")
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    _print(result)
