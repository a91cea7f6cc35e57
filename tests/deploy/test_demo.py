"""``shardline demo``: the example end to end on the embedded local AWS, reconciled."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from deploy.cli import main
from deploy.local.demo import SPAN_S, START, synthetic_traffic

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration


def row(out: str, label: str) -> str:
    """The count column of the summary row whose first column is ``label``."""
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) > 2 and cells[1] == label:
            return cells[2]
    raise AssertionError(f"no row {label!r} in\n{out}")


def test_synthetic_traffic_has_every_kind_of_record() -> None:
    traffic = synthetic_traffic(5000)
    kinds = {data[:1] for data, _, _ in traffic.records}
    assert kinds == {b"{", b"G"}  # JSON events and malformed text
    assert any(aggregated for _, _, aggregated in traffic.records)
    assert len(traffic.corrupt_aggregates) == 1
    assert traffic.produced == 5001
    assert synthetic_traffic(5000).records == traffic.records  # seeded
    # event times over SPAN_S from the start, a few seconds out of order, some 90 s late
    times = [json.loads(data)["ts"] / 1000 for data, _, _ in traffic.records if data[:1] == b"{"]
    assert START - 92 <= min(times) < START
    assert START + SPAN_S - 3 < max(times) < START + SPAN_S
    assert any(later < earlier - 60 for earlier, later in itertools.pairwise(times))


def test_filtered_counts_emf_lines_that_follow_other_text(tmp_path: Path) -> None:
    """Under load a library's message without a newline (urllib3's read timeout) runs into
    the next EMF line: its invocation's filtered records still count (they did not, and the
    demo's reconciliation failed while the stores held every record)."""
    from deploy.local.demo import _filtered_from_metrics  # noqa: PLC0415

    emf = b'{"_aws": {"Timestamp": 1}, "RecordsIn": 10, "RecordsFiltered": %d}'
    earlier = b"earlier run\n" + emf % 100 + b"\n"  # skipped: before this run
    (tmp_path / "f.log").write_bytes(
        earlier
        + b"[WARNING] POST /_bulk\n"
        + emf % 3 + b"\n"
        + b"urllib3.exceptions.ReadTimeoutError: Read timed out. (read timeout=10.0)"
        + emf % 4 + b"\n"
    )  # fmt: skip

    filtered = _filtered_from_metrics(tmp_path, ["f", "g"], {"f.log": len(earlier)})

    assert filtered == {"f": 7, "g": 0}


def test_closing_records_close_every_window_on_every_shard() -> None:
    """One purchase per shard, by a user of that shard, at the last window's end plus the
    lateness: every shard's watermark passes every earlier window."""
    from deploy.local.demo import EXAMPLE, closing_records  # noqa: PLC0415
    from deploy.pipeline.config import load_plan_from_file  # noqa: PLC0415
    from stream.producer import ShardMap, hash_key  # noqa: PLC0415

    plan = load_plan_from_file(EXAMPLE / "pipeline.yaml")
    traffic = synthetic_traffic(1000)
    shards = ShardMap([(f"s{i}", i * 2**126) for i in range(4)])

    closing = closing_records(traffic, plan, shards.shard_for)

    docs = [json.loads(data) for data, _, _ in closing]
    assert sorted(shards.shard_for(hash_key(d["user_id"])) for d in docs) == [
        "s0", "s1", "s2", "s3"
    ]  # fmt: skip
    assert {d["event_type"] for d in docs} == {"purchase"}
    last = max(json.loads(d)["ts"] for d, _, _ in traffic.records if d[:1] == b"{") / 1000
    end = (last // 60 + 1) * 60  # the end of the last minute with a purchase
    assert {d["ts"] / 1000 for d in docs} == {end + 10} == {traffic.close_at}


def test_demo_reconciles_from_the_stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Counts read back from DynamoDB, OpenSearch, S3 and SQS add up to what was produced,
    and the windowed function's rows equal the reference for every closed window."""
    monkeypatch.chdir(tmp_path)

    result = CliRunner().invoke(main, ["demo", "--events", "1000", "--json"])

    out = result.output
    assert result.exit_code == 0, out
    summary = json.loads(result.stdout)
    closing = summary["closing_records"]  # one purchase per shard, put last
    assert closing >= 1
    assert row(out, "produced") == f"{1001 + closing:,}"
    assert row(out, "archive") == f"{1000 + closing:,}"  # the corrupt aggregate: a dead letter
    assert int(row(out, "orders").replace(",", "")) > 0
    assert int(row(out, "with a user from the lookup").replace(",", "")) > 0
    assert "event: DecodeError" in out  # the corrupt aggregate, for every function
    assert "NO" not in out
    assert out.count(" yes │") == 5  # two functions by record, the windowed one three times
    assert "stream arrival to DynamoDB write" in out
    assert " p99 " in out
    assert summary["reconciled"] is True
    assert summary["produced"] == 1001 + closing
    assert summary["stores"]["archive"] == 1000 + closing
    assert summary["latency_ms"]["p50"] <= summary["latency_ms"]["p99"]
    windows = summary["windows"]["purchases-per-minute"]
    assert windows["rows"] == windows["closed"] == windows["matching"] > 0
    assert summary["stores"]["per-minute"] == windows["rows"]
    assert windows["missing"] == windows["extra"] == windows["differing"] == []
    assert windows["open"] == closing  # only the closing purchases' own windows
    assert len(windows["samples"]) == 3
    assert {"window_id", "purchases", "revenue"} <= set(windows["samples"][0])
    assert row(out, "rows (closed windows)") == f"{windows['rows']:,}"
    assert f"closed by closing purchases put after the traffic, one per shard ({closing})" in out


@pytest.mark.parametrize("pushdown", [True, False], ids=["pushdown", "no-pushdown"])
def test_reconciliation_counts_what_pushdown_dropped(pushdown: bool) -> None:
    """A function with FilterCriteria: records its mapping dropped never reached it, so
    they are a term of the sum (read from the mapping); without criteria they are not."""
    from deploy.local.demo import DemoReport, _reconcile  # noqa: PLC0415
    from deploy.local.dev import DevReport, StoreCounts  # noqa: PLC0415

    criteria = [{"data": {"kind": ["order"]}}] if pushdown else []
    plan = {"functions": {"f": {"processors": [], "route": ["archive"],
                                "filter_criteria": criteria}}}  # fmt: skip
    report = DemoReport(
        dev=DevReport(stored=StoreCounts(per_sink={"archive": 5})),
        produced=10,
        filtered={"f": 2},
        pushed_down={"f": 3 if pushdown else 0},
    )
    report.dead_by_function = {"f": Counter({"event: DecodeError": 0 if pushdown else 3})}
    _reconcile(plan, report)
    (label, produced, counted) = report.checks[0]
    assert (produced, counted) == (10, 10)
    assert ("filtered by pushdown" in label) is pushdown
    assert report.reconciled


def test_the_demos_tables_keep_whole_headers_and_numbers_when_piped() -> None:
    """Off a terminal rich would take 80 columns and cut the live table to "re…" and "20…":
    dev's and demo's console is 120 columns wide on any stream, and only the written counts
    (one sink a line) and the lag wrap."""
    import io  # noqa: PLC0415
    import time  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415
    from types import SimpleNamespace  # noqa: PLC0415

    from deploy.cli.dev import _Display, _print_demo, display_console  # noqa: PLC0415
    from deploy.local.demo import EXAMPLE, DemoReport, _reconcile  # noqa: PLC0415
    from deploy.local.dev import DevReport, StoreCounts  # noqa: PLC0415
    from deploy.pipeline.config import load_plan_from_file  # noqa: PLC0415
    from stream.esm.mapping import MappingStats  # noqa: PLC0415

    plan = load_plan_from_file(EXAMPLE / "pipeline.yaml")
    display = _Display(plan, None, Path("no-logs-here"))
    display.lag_at = time.monotonic()  # no lag reading: no endpoint
    runs = []
    for name in plan["functions"]:
        display.metrics.counts[name] = {
            "RecordsIn": 200_000.0, "RecordsFiltered": 51_234.0, "RecordsDeadLettered": 6_120.0,
        }  # fmt: skip
        display.metrics.written[name] = {"archive": 200_000.0, "orders": 12_345.0,
                                         "search": 123_456.0}  # fmt: skip
        runs.append(SimpleNamespace(name=name, mapping=SimpleNamespace(stats=MappingStats())))
    local = SimpleNamespace(runs=runs, names=list(plan["functions"]))
    producer = SimpleNamespace(is_alive=lambda: False, sent_bytes=123_456_789)
    report = DemoReport(
        dev=DevReport(stored=StoreCounts(per_sink={"archive": 200_000, "orders": 12_345})),
        produced=200_000, filtered={"enrich-and-route": 51_234}, pushed_down={},
    )  # fmt: skip
    report.dead_by_function = {
        "enrich-and-route": Counter({"processors[1].expr: DecodeError: not JSON": 6_120})
    }
    _reconcile(plan, report)

    stream = io.StringIO()
    assert not stream.isatty()
    console = display_console(stream)
    console.print(display.table(local, producer, final=True))
    _print_demo(console, report, EXAMPLE)
    out = stream.getvalue()

    assert "…" not in out, out
    header = next(line for line in out.splitlines() if "function" in line and "┃" in line)
    cells = [cell.strip() for cell in header.split("┃")[1:-1]]
    assert cells == ["function", "in", "rec/s", "pushdown", "filtered", "written", "dead",
                     "failed", "retries", "behind"], out  # fmt: skip
    assert "200,000" in out
    assert "archive 200,000" in out
    assert "search 123,456" in out
    assert max(len(line) for line in out.splitlines()) <= 120
