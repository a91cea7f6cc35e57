"""Smoke test of ``python -m bench``: it runs and the implementations agree; no timing."""

from __future__ import annotations

import json
import re

import pytest

from bench import handler, memory
from bench.__main__ import main as bench_main


class TestHandlerBench:
    def test_prints_the_three_rows_and_both_ratios(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A tiny run prints a row per implementation and the two target lines."""
        assert handler.main(["--records", "200", "--repeat", "1"]) == 0
        out = capsys.readouterr().out
        rows = {
            name: re.search(rf"^{re.escape(label)}\s+[\d.]+\s+[\d.]+\s+(\d+)$", out, re.M)
            for name, label in (
                ("shardline", "shardline"),
                ("powertools", "powertools BatchProcessor"),
                ("plain", "plain loop (orjson)"),
            )
        }
        assert all(rows.values()), out
        kept = {int(m.group(1)) for m in rows.values() if m}
        assert len(kept) == 1, out
        assert "shardline throughput / powertools" in out
        assert "shardline time / plain loop" in out

    def test_json_output_reports_equal_kept_counts(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """With --json the three implementations report the same kept count, and some drop."""
        assert handler.main(["--records", "200", "--repeat", "1", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        results = report["results"]
        assert list(results) == ["shardline", "powertools", "plain"]
        kept = {row["kept"] for row in results.values()}
        assert len(kept) == 1
        assert 0 < kept.pop() < report["records"] == 200
        assert set(report["ratios"]) == {"throughput_vs_powertools", "time_vs_plain"}

    def test_disagreeing_implementations_fail_loudly(self) -> None:
        """If one implementation kept other records, measuring stops with BenchError."""
        event = handler.make_event(20)

        def wrong() -> handler.Run:
            return lambda _event: ({"batchItemFailures": []}, -1)

        implementations = {**handler.IMPLEMENTATIONS, "plain": wrong}
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(handler, "IMPLEMENTATIONS", implementations)
            with pytest.raises(handler.BenchError, match="disagree"):
                handler.measure(event, repeat=1, warmup=0)


class TestDispatch:
    def test_unknown_benchmark_prints_usage_and_returns_2(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An unknown name is a usage error."""
        assert bench_main(["nope"]) == 2
        err = capsys.readouterr().err
        assert "usage: python -m bench" in err
        assert "handler" in err

    def test_no_name_prints_usage_and_returns_2(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A missing name is a usage error too."""
        assert bench_main([]) == 2
        assert "usage: python -m bench" in capsys.readouterr().err


class TestMemoryBench:
    def test_each_implementation_is_measured_in_its_own_interpreter(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A tiny run reports both peaks of both implementations, and a ratio."""
        argv = ["--records", "300", "--record-bytes", "512", "--repeat", "1", "--no-six-mb"]
        assert memory.main([*argv, "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        for name in ("shardline", "plain"):
            assert report["median"][name]["traced_peak_bytes"] > 300 * 512
        assert report["ratios"]["traced_peak_bytes"] > 0
        assert report["event_bytes"] > 300 * 512
