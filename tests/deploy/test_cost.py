"""The cost model (`deploy.insights.cost`) and `shardline cost`: public formulas, worked by hand."""

from __future__ import annotations

import datetime
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from deploy.cli.cost import cost
from deploy.insights.cost import (
    CostModel,
    PriceError,
    estimate,
    kinesis_billed_bytes,
    load_price_table,
    put_payload_units,
    region_prices,
    write_request_units,
)
from deploy.pipeline.config import compile_plan, load_plan_from_file, parse_config

if TYPE_CHECKING:
    from deploy.insights.cost import CostEstimate

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "clickstream" / "pipeline.yaml"
HOURS = 730  # AWS's month: 8,760 hours / 12


def plan_of(text: str) -> dict[str, Any]:
    return compile_plan(parse_config(text, source="test.yaml"))


ONE_FUNCTION = """\
name: bill
stream: {name: events, mode: on_demand}
sinks:
  out: {type: stdout}
functions:
  f:
    memory_mb: 256
    batch: {size: 1}
    processors: []
    route: [out]
"""

TWO_FUNCTIONS_ON_DEMAND = """\
name: bill
stream: {name: events, mode: on_demand}
sinks:
  out: {type: stdout}
functions:
  a: {processors: [], route: [out]}
  b: {processors: [], route: [out]}
"""

PROVISIONED = """\
name: bill
stream: {name: events, mode: provisioned, shards: 3}
sinks:
  out: {type: stdout}
functions:
  a: {processors: [], route: [out]}
"""

DYNAMODB = """\
name: bill
stream: {name: events, mode: on_demand}
sinks:
  table: {type: dynamodb, table: items, key: id, mode: append}
functions:
  a: {processors: [], route: [table]}
"""


def usd(result: CostEstimate, service: str, starts: str) -> float:
    """The one line of ``service`` whose item starts with ``starts``."""
    found = [
        line.usd
        for line in result.lines
        if line.service == service and line.item.startswith(starts)
    ]
    assert len(found) == 1, [line.item for line in result.lines]
    return found[0]


class TestPriceTable:
    def test_bundled_table_is_dated_sourced_and_holds_the_lambda_list_prices(self) -> None:
        """The table says when and where its prices are from; Lambda's are the public ones."""
        table = load_price_table()
        datetime.date.fromisoformat(table["as_of"])
        prices = region_prices(table, "us-east-1")
        assert prices.as_of == table["as_of"]
        assert prices.get("lambda", "per_million_requests") == 0.20
        assert prices.get("lambda", "per_gb_second", "x86_64") == 0.0000166667
        assert prices.get("lambda", "per_gb_second", "arm64") == 0.0000133334
        for section in table["regions"]["us-east-1"]:
            assert prices.source(section).startswith("https://aws.amazon.com/"), section

    def test_an_override_replaces_only_the_prices_it_names(self) -> None:
        """A partial document on top of the bundled one: the rest stays as bundled."""
        table = load_price_table(
            {"regions": {"us-east-1": {"sqs_standard": {"per_million_requests": 1}}}}
        )
        prices = region_prices(table, "us-east-1")
        assert prices.get("sqs_standard", "per_million_requests") == 1.0
        assert prices.get("lambda", "per_million_requests") == 0.20

    def test_an_unknown_section_is_refused_with_the_closest_name(self) -> None:
        with pytest.raises(
            PriceError, match=r"unknown section 'lamda' \(did you mean 'lambda'\?\)"
        ):
            load_price_table({"regions": {"us-east-1": {"lamda": {}}}})

    def test_a_negative_or_non_numeric_price_is_refused(self) -> None:
        for bad in (-1, "0.2", True):
            with pytest.raises(PriceError, match=r"lambda\.per_million_requests: expected a price"):
                load_price_table(
                    {"regions": {"us-east-1": {"lambda": {"per_million_requests": bad}}}}
                )

    def test_a_region_not_in_the_table_names_the_fix(self) -> None:
        with pytest.raises(PriceError, match=r"'eu-west-1' is not in the price table.*--prices"):
            region_prices(load_price_table(), "eu-west-1")

    def test_a_new_region_must_have_every_price(self) -> None:
        """Half a region would price some lines at nothing; refuse it and say what is missing."""
        partial = {"regions": {"eu-west-1": {"lambda": {"per_million_requests": 0.2}}}}
        with pytest.raises(
            PriceError, match=r"eu-west-1\.kinesis_on_demand\.per_gb_ingested: missing"
        ):
            region_prices(load_price_table(partial), "eu-west-1")


class TestLambda:
    """The public formula: $0.20 per 1M requests, $0.0000166667 per GB-s (x86_64)."""

    @pytest.mark.parametrize(
        ("requests", "requests_usd", "compute_usd", "total_usd"),
        [(10_000_000, 2.00, 8.33, 10.33), (100_000_000, 20.00, 83.33, 103.33)],
    )
    def test_requests_at_256_mb_and_200_ms_cost_the_published_figures(
        self, requests: int, requests_usd: float, compute_usd: float, total_usd: float
    ) -> None:
        """One record per invocation (batch size 1) makes records and requests the same."""
        result = estimate(
            plan_of(ONE_FUNCTION), requests / (3600 * HOURS), 100,
            per_record_ms=200, architecture="x86_64", dead_letter_fraction=0,
        )  # fmt: skip
        assert round(usd(result, "Lambda", "f: requests"), 2) == requests_usd
        assert round(usd(result, "Lambda", "f: compute"), 2) == compute_usd
        assert round(result.lambda_usd, 2) == total_usd

    def test_arm64_is_the_default_and_bills_its_own_price(self) -> None:
        """500,000 GB-s (10 M x 0.2 s x 0.25 GB) at arm64's $0.0000133334 is $6.67."""
        result = estimate(
            plan_of(ONE_FUNCTION), 10_000_000 / (3600 * HOURS), 100, per_record_ms=200
        )
        assert result.architecture == "arm64"
        assert round(usd(result, "Lambda", "f: compute"), 2) == round(500_000 * 0.0000133334, 2)

    def test_requests_follow_the_effective_batch_not_the_configured_size(self) -> None:
        """Without a window Lambda polls each of the 4 on-demand shards once a second: at
        1,000 records/s a batch holds 250 records, not the configured 100... at most 100."""
        plan = plan_of(TWO_FUNCTIONS_ON_DEMAND)  # batch size 100 by default
        model = CostModel.create(plan, 100)
        function = plan["functions"]["a"]
        assert model.effective_batch(function, 1000) == 100  # 250 a poll, capped at 100
        assert model.effective_batch(function, 40) == 10  # 40/s over 4 shards, 1 s polls
        assert model.effective_batch(function, 0.5) == 1  # never less than one record


class TestWindowFlushes:
    """A ``state: dynamodb`` window step's scheduled flush: one invocation per ``flush_s``
    whatever the rate (730 hours: 43,800 at 60 s), compute at the assumed 150 ms."""

    WINDOWED = """\
name: bill
stream: {name: events, mode: on_demand}
sinks:
  out: {type: stdout}
functions:
  w:
    processors:
      - window: {key: u, size_s: 60, field: ts, aggregate: {n: count}%s}
    route: [out]
  plain: {processors: [], route: [out]}
"""

    @pytest.mark.parametrize("rate", [0.01, 1000])
    def test_a_flush_a_minute_is_43_800_requests_and_about_3_cents(self, rate: float) -> None:
        result = estimate(plan_of(self.WINDOWED % ""), rate, 100)
        (flushes,) = [line for line in result.lines if line.item == "w: flushes (every 60 s)"]
        assert flushes.quantity == HOURS * 60 == 43_800
        assert flushes.usd == pytest.approx(43_800 * 0.20 / 1e6)
        compute = usd(result, "Lambda", "w: flush compute")
        assert compute == pytest.approx(43_800 * 0.150 * 0.25 * 0.0000133334)  # 256 MB, arm64
        assert round(flushes.usd + compute, 2) == 0.03
        assert not [line for line in result.lines if line.item.startswith("plain: flush")]
        assert any("window flushes (w)" in note and "assumed" in note for note in result.notes)

    def test_flush_s_300_is_a_fifth_and_0_none(self) -> None:
        every_5 = estimate(plan_of(self.WINDOWED % ", flush_s: 300"), 1, 100)
        (line,) = [x for x in every_5.lines if x.item == "w: flushes (every 300 s)"]
        assert line.quantity == HOURS * 12
        off = estimate(plan_of(self.WINDOWED % ", flush_s: 0"), 1, 100)
        assert not [x for x in off.lines if "flush" in x.item]
        assert not [n for n in off.notes if "flush" in n]


class TestKinesis:
    def test_on_demand_bills_gb_in_once_out_per_function_and_stream_hours(self) -> None:
        """1,000 records/s of 1,500 bytes, two functions, prices pinned by an override."""
        prices = {"regions": {"us-east-1": {"kinesis_on_demand": {
            "per_gb_ingested": 0.08, "per_gb_retrieved": 0.04, "per_stream_hour": 0.04,
        }}}}  # fmt: skip
        result = estimate(plan_of(TWO_FUNCTIONS_ON_DEMAND), 1000, 1500, prices=prices)
        records = 1000 * 3600 * 730  # 2,628,000,000 a month
        gb = records * 2 * 1024 / 1024**3  # 1,500 bytes bill as 2 KB: 5,012.51 GB
        assert usd(result, "Kinesis", "data in") == pytest.approx(gb * 0.08)
        assert round(usd(result, "Kinesis", "data in"), 2) == 401.00
        assert round(usd(result, "Kinesis", "data out"), 2) == round(2 * gb * 0.04, 2) == 401.00
        assert round(usd(result, "Kinesis", "stream-hours"), 2) == 730 * 0.04 == 29.20

    def test_provisioned_bills_shard_hours_and_25_kb_put_payload_units(self) -> None:
        """3 shards; 50 records/s of 30 KB: each record is two 25 KB PUT payload units."""
        prices = {"regions": {"us-east-1": {"kinesis_provisioned": {
            "per_shard_hour": 0.015, "per_million_put_payload_units": 0.014,
        }}}}  # fmt: skip
        result = estimate(plan_of(PROVISIONED), 50, 30 * 1024, prices=prices)
        units = 50 * 3600 * 730 * 2  # 262,800,000 units a month
        assert round(usd(result, "Kinesis", "shard-hours"), 2) == round(3 * 730 * 0.015, 2) == 32.85
        assert round(usd(result, "Kinesis", "PUT payload units"), 2) == round(
            units / 1e6 * 0.014, 2
        )
        assert round(usd(result, "Kinesis", "PUT payload units"), 2) == 3.68
        assert not [line for line in result.lines if line.item.startswith("data")]

    def test_provisioned_shards_too_few_for_the_rate_are_named_with_the_fix(self) -> None:
        result = estimate(plan_of(PROVISIONED), 4500, 100)
        assert any("set stream.shards to at least 5" in note for note in result.notes)

    def test_an_efo_function_on_demand_pays_its_own_gb_retrieved_not_the_shared_one(self) -> None:
        """1,000 records/s of 1 KB, b with consumer: efo: data out counts a alone, and b's
        consumer bills every GB at the EFO price (no consumer-shard hours on demand)."""
        prices = {"regions": {"us-east-1": {"kinesis_enhanced_fan_out": {
            "per_gb_retrieved_on_demand": 0.05,
        }}}}  # fmt: skip
        text = TWO_FUNCTIONS_ON_DEMAND.replace(
            "b: {processors: [], route: [out]}",
            "b: {batch: {consumer: efo}, processors: [], route: [out]}",
        )
        result = estimate(plan_of(text), 1000, 1024, prices=prices)
        gb = 1000 * 3600 * 730 * 1024 / 1024**3
        assert usd(result, "Kinesis", "data out (1 consuming") == pytest.approx(gb * 0.04)
        assert usd(result, "Kinesis", "b: EFO data retrieved") == pytest.approx(gb * 0.05)
        assert not [line for line in result.lines if "consumer-shard" in line.item]
        assert any("each EFO function adds" in note for note in result.notes)

    def test_an_efo_function_on_a_provisioned_stream_pays_consumer_shard_hours(self) -> None:
        text = PROVISIONED.replace(
            "a: {processors: [], route: [out]}",
            "a: {batch: {consumer: efo}, processors: [], route: [out]}",
        )
        result = estimate(plan_of(text), 100, 1024)
        hours = usd(result, "Kinesis", "a: EFO consumer-shard hours (3 shards)")
        assert round(hours, 2) == round(3 * 730 * 0.015, 2) == 32.85
        gb = 100 * 3600 * 730 * 1024 / 1024**3
        assert usd(result, "Kinesis", "a: EFO data retrieved") == pytest.approx(gb * 0.013)

    def test_it_says_from_how_many_functions_and_which_rate_efo_pays_off(self) -> None:
        """3 provisioned shards, 1 KB records: one shard reads 2 MiB/s, so the shared
        function alone saturates at 6,144 records/s; at 1,000 records/s (about 333 KB/s a
        shard) the seventh function would, but five already share one read a second."""
        model = CostModel.create(plan_of(PROVISIONED), 1024)
        functions, rate = model.efo_pays_off(1000)
        assert functions == 6  # more than 5: the 5 reads/s run out first
        assert rate == pytest.approx(3 * 2 * 1024**2 / 1024)
        functions, _ = model.efo_pays_off(6000)  # 2,000 KB/s a shard: the second saturates
        assert functions == 2
        note = next(n for n in model.notes(1000) if "pays off" in n)
        assert "from 6 shared functions" in note
        assert "from 6,144 records/s" in note

    def test_on_demand_the_shared_limit_is_never_reached_by_four_functions(self) -> None:
        model = CostModel.create(plan_of(TWO_FUNCTIONS_ON_DEMAND), 1024)
        assert model.efo_pays_off(1000)[1] is None

    def test_billing_units_round_up(self) -> None:
        assert [kinesis_billed_bytes(b) for b in (1, 1024, 1025)] == [1024, 1024, 2048]
        assert [put_payload_units(b) for b in (1, 25 * 1024, 25 * 1024 + 1)] == [1, 1, 2]


class TestDynamoDB:
    def test_write_request_units_round_up_per_kb_with_at_least_one(self) -> None:
        assert [write_request_units(b) for b in (0, 1, 1024, 1025, 2048, 2049)] == [
            1,
            1,
            1,
            2,
            2,
            3,
        ]

    def test_an_item_is_the_record_plus_its_bookkeeping_attributes(self) -> None:
        """``_position`` (141 characters), ``_shard`` and ``_written_at`` add about 200
        bytes: an 824-byte record is a 1 KB item (1 WRU), an 825-byte one takes 2."""
        records = 1 * 3600 * 730
        for record_bytes, wru in ((824, 1), (825, 2)):
            result = estimate(plan_of(DYNAMODB), 1, record_bytes, prices={"regions": {
                "us-east-1": {"dynamodb_on_demand": {"per_million_write_request_units": 1.0}},
            }})  # fmt: skip
            assert usd(result, "DynamoDB", "table: writes") == pytest.approx(records * wru / 1e6)

    def test_a_sink_share_scales_the_writes(self) -> None:
        full = estimate(plan_of(DYNAMODB), 10, 500)
        fifth = estimate(plan_of(DYNAMODB), 10, 500, sink_shares={"table": 0.2})
        assert usd(fifth, "DynamoDB", "table") == pytest.approx(usd(full, "DynamoDB", "table") / 5)


class TestBreakEven:
    def test_lambda_is_cheaper_below_the_break_even_and_dearer_above(self) -> None:
        model = CostModel.create(load_plan_from_file(EXAMPLE), 1024)
        rate = model.break_even_rate()
        assert rate is not None
        assert model.lambda_usd(rate * 0.9) < model.containers(rate * 0.9).usd
        assert model.lambda_usd(rate * 1.1) > model.containers(rate * 1.1).usd

    def test_break_even_against_one_small_task_worked_by_hand(self) -> None:
        """One function, one record per request, 1 ms at 256 MB arm64; the containers stay at
        their floor, one 0.25 vCPU / 0.5 GB task. Lambda per record: $0.20/1M for the
        request plus 0.25 GB x 0.001 s x $0.0000133334; the task: 730 h x (0.25 x $0.03238
        + 0.5 x $0.00356). Lambda reaches the task's cost at about 13.5 records/s."""
        per_record = 0.20 / 1e6 + 0.25 * 0.001 * 0.0000133334
        task = 730 * (0.25 * 0.03238 + 0.5 * 0.00356)
        by_hand = task / (3600 * 730 * per_record)
        model = CostModel.create(plan_of(ONE_FUNCTION), 100, prices={"regions": {"us-east-1": {
            "lambda": {"per_million_requests": 0.20, "per_gb_second": {"arm64": 0.0000133334}},
            "fargate": {"per_vcpu_hour": {"arm64": 0.03238}, "per_gb_hour": {"arm64": 0.00356}},
        }}})  # fmt: skip
        assert model.containers(by_hand).vcpu == 0.25  # still the floor there
        assert model.break_even_rate() == pytest.approx(by_hand, rel=1e-5)
        assert round(by_hand, 1) == 13.5

    def test_no_break_even_when_lambda_stays_cheaper(self) -> None:
        """Containers needing a whole second of CPU per record never catch up."""
        model = CostModel.create(plan_of(ONE_FUNCTION), 100, container_per_record_ms=1000)
        assert model.break_even_rate() is None


PLANS = {
    "example": load_plan_from_file(EXAMPLE),
    "provisioned": plan_of(PROVISIONED),
    "one": plan_of(ONE_FUNCTION),
}


class TestProperties:
    @given(
        plan=st.sampled_from(sorted(PLANS)),
        rate=st.floats(-3, 5.3).map(lambda e: 10.0**e),  # 0.001 to 200,000 records/s
        factor=st.floats(1, 4),
        record_bytes=st.integers(1, 1024 * 1024),
        per_record_ms=st.sampled_from([0.0, 0.01]) | st.floats(0, 50),
        window=st.integers(0, 10),
    )
    def test_cost_is_monotonic_non_decreasing_in_rate(
        self, plan: str, rate: float, factor: float, record_bytes: int, per_record_ms: float,
        window: int,
    ) -> None:  # fmt: skip
        """More records never make any part of the bill cheaper: the total, the Lambda
        lines, the containers."""
        spec = json.loads(json.dumps(PLANS[plan]))
        for function in spec["functions"].values():
            function["batch"]["window_s"] = window
        model = CostModel.create(spec, record_bytes, per_record_ms=per_record_ms)
        low, high = model.estimate(rate), model.estimate(rate * factor)
        slack = 1e-9 * max(1.0, high.total_usd)
        assert low.total_usd <= high.total_usd + slack
        assert low.lambda_usd <= high.lambda_usd + slack
        assert low.containers.usd <= high.containers.usd + slack


class TestCli:
    def invoke(self, *args: str) -> Any:
        return CliRunner().invoke(cost, [str(EXAMPLE), *args])

    def test_the_example_at_1000_records_a_second_prints_the_bill(self) -> None:
        result = self.invoke("--rate", "1000", "--record-bytes", "1024")
        assert result.exit_code == 0, result.output
        expected = estimate(load_plan_from_file(EXAMPLE), 1000, 1024)
        assert f"total: ${expected.total_usd:,.2f} a month" in result.stdout
        assert "break-even:" in result.stdout
        for line in expected.lines:
            assert line.item in result.stdout

    def test_json_parses_and_holds_the_totals(self) -> None:
        result = self.invoke("--rate", "1000", "--record-bytes", "1024", "--json")
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert data["total_usd"] == pytest.approx(sum(line["usd"] for line in data["lines"]))
        assert data["region"] == "us-east-1"
        assert data["break_even_rate"] > 0
        assert {line["service"] for line in data["lines"]} >= {"Kinesis", "Lambda"}

    def test_a_region_not_in_the_table_is_one_line_naming_the_fix(self) -> None:
        result = self.invoke("--rate", "1000", "--record-bytes", "1024", "--region", "eu-west-1")
        assert result.exit_code == 2
        assert result.stdout == ""
        assert result.stderr.count("\n") == 1
        assert "region 'eu-west-1' is not in the price table" in result.stderr
        assert "--prices" in result.stderr

    def test_a_price_file_of_the_wrong_shape_names_the_file_and_the_key(
        self, tmp_path: Path
    ) -> None:
        bad = tmp_path / "prices.json"
        bad.write_text(json.dumps({"regions": {"us-east-1": {"lambda": {"per_request": 1}}}}))
        result = self.invoke("--rate", "1", "--record-bytes", "1", "--prices", str(bad))
        assert result.exit_code == 2
        assert result.stderr.startswith(
            f"{bad}: regions.us-east-1.lambda: unknown key 'per_request'"
        )
        assert result.stderr.count("\n") == 1

    def test_a_price_file_that_is_not_json_is_one_line(self, tmp_path: Path) -> None:
        bad = tmp_path / "prices.json"
        bad.write_text("{oops")
        result = self.invoke("--rate", "1", "--record-bytes", "1", "--prices", str(bad))
        assert result.exit_code == 2
        assert result.stderr.startswith(f"{bad}:1: not JSON")
        assert result.stderr.count("\n") == 1

    def test_a_price_file_overrides_the_bundled_prices(self, tmp_path: Path) -> None:
        prices = tmp_path / "prices.json"
        prices.write_text(
            json.dumps({"regions": {"us-east-1": {"kinesis_on_demand": {"per_stream_hour": 1}}}})
        )
        result = CliRunner().invoke(
            cost,
            [str(EXAMPLE), "--rate", "1", "--record-bytes", "1", "--prices", str(prices), "--json"],
        )
        assert result.exit_code == 0, result.output
        lines = json.loads(result.stdout)["lines"]
        assert [line["usd"] for line in lines if line["item"].startswith("stream-hours")] == [730.0]

    def test_the_command_joins_any_click_group(self) -> None:
        """The lead registers it with ``main.add_command(cost)``; any group takes it."""
        group = click.Group("shardline", commands=[cost])
        result = CliRunner().invoke(
            group, ["cost", str(EXAMPLE), "--rate", "10", "--record-bytes", "200"]
        )
        assert result.exit_code == 0, result.output
        assert "total: $" in result.stdout
        assert not math.isnan(float(result.stdout.split("total: $")[1].split()[0].replace(",", "")))


class TestWindowState:
    """A window step's state writes are not priced: the notes say so, for the functions
    that keep it in DynamoDB only (the sinks' lines used to be all the DynamoDB shown)."""

    @pytest.mark.parametrize(("state", "named"), [("", True), (", state: memory", False)])
    def test_the_notes_name_the_windowed_function_s_state_writes(
        self, state: str, named: bool
    ) -> None:
        result = estimate(plan_of(TestWindowFlushes.WINDOWED % state), 1, 100)
        notes = [n for n in result.notes if n.startswith("window state")]
        assert notes == (["window state (w): its table's writes are not priced: per batch, "
                          "one per (key, window) the batch changed or closed, and the shard's "
                          "item (python -m bench invocation counts them for the example)"]
                         if named else [])  # fmt: skip
