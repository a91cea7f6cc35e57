"""``python -m bench soak``'s load part: two workers through a pause past the lease and a
steal, reconciled record by record (:mod:`bench.soak_load`, :mod:`bench.soak_reconcile`).

The first class runs the load for a few seconds on a fresh local stack; the second checks,
on stores made up here, that the reconciliation finds what it must (a record missing from
a sink is lost, a second document is a duplicate effect, documents first written out of
order are order violations), so a clean run's zeros are not vacuous.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from bench.soak import write_reliability
from bench.soak_load import run_load
from bench.soak_reconcile import Stores, StreamCopy, reconcile_load
from deploy.pipeline.config import load_plan_from_file
from stream.records import pad_sequence
from stream.testing import EventFactory

if TYPE_CHECKING:
    from pathlib import Path

    from stream.plan import Plan


@pytest.mark.integration
class TestTwoWorkerLoad:
    def test_a_pause_past_the_lease_and_a_steal_lose_duplicate_and_reorder_nothing(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """15 s of the example at 20 records/s, two workers with 1.5 s leases: one is stopped
        for three lease durations (the other takes its leases), a third steals from them;
        every record of each function is filtered, delivered or dead-lettered, in order."""
        monkeypatch.chdir(tmp_path)  # the deploy's build folder
        lines: list[str] = []
        load = run_load(0.25, 20, 1.0, lines.append, lease_s=1.5, in_process=True)

        faults = load.faults
        assert faults is not None, lines
        assert faults.paused_held > 0, faults
        assert faults.taken_from_paused > 0, faults  # past the lease: the other took them
        assert faults.paused_s >= 3 * load.lease_s
        live = {owner for owner in faults.stolen_from if owner != "None"}
        assert live <= {"soak-a", "soak-b"}
        assert live, faults  # stolen from a worker that held them
        assert load.problems == [], load.problems
        figures = load.figures
        assert figures is not None
        assert figures.stream_problems == ()
        assert set(figures.functions) == {"enrich-and-route", "archive-all"}
        for f in figures.functions.values():
            g = f.figures
            assert g.problems == (), g.problems[:5]
            assert g.produced == load.produced == f.filtered + g.delivered + g.dead_lettered
            assert g.lost == 0
            assert g.order_violations == 0
            assert g.duplicates_seen == g.duplicates_removed
        routed = figures.functions["enrich-and-route"]
        assert routed.filtered > 0  # views and free purchases
        assert routed.figures.delivered > 0
        assert routed.figures.dead_lettered > 0  # text that is not JSON
        assert figures.functions["archive-all"].filtered == 0
        sampled = set(load.memory.samples)
        assert {"producer", "worker soak-a", "worker soak-b", "worker soak-c"} <= sampled


PIPELINE = """\
name: rec
stream: {name: rec, mode: provisioned, shards: 1, encryption: none}
sinks:
  archive: {type: s3, bucket: rec, prefix: raw/, compression: none}
  search: {type: opensearch, endpoint: "http://127.0.0.1:9", index: rec, id: event_id, auth: none}
  dlq: {type: sqs, queue: rec-dlq}
functions:
  f:
    on_failure: dlq
    processors:
      - filter: {match: {event_type: [click]}}
    route: [search, archive]
"""


def plan(tmp_path: Path) -> Plan:
    file = tmp_path / "pipeline.yaml"
    file.write_text(PIPELINE)
    return load_plan_from_file(file, env={})


def stream(n: int = 8) -> StreamCopy:
    """``n`` records of two keys: every third a view (filtered), the last not JSON."""
    factory = EventFactory(stream="rec")
    entries = []
    for i in range(n - 1):
        kind = "view" if i % 3 == 2 else "click"
        doc = {"event_id": f"e{i}", "event_type": kind}
        entries.append(factory.record(doc, f"k{i % 2}"))
    entries.append(factory.raw(b"GET / HTTP/1.1", "k0"))
    return StreamCopy({factory.shard_id: factory.event(entries)}, aggregated=False)


def clean(copy: StreamCopy) -> Stores:
    """The stores as a correct run leaves them."""
    stores = Stores(lines={"archive": []}, documents={"search": []})
    for record in copy.records():
        if not record.data.startswith(b"{"):
            stores.messages.append({
                "function": "f", "step": "processors[0].filter", "reason": "poison",
                "error": "DecodeError: not JSON", "shard_id": record.shard_id,
                "sequence_number": record.sequence_number, "sub_sequence_number": 0,
                "partition_key": record.partition_key,
                "data_base64": base64.b64encode(record.data).decode(),
            })  # fmt: skip
            continue
        doc = orjson.loads(record.data)
        if doc["event_type"] != "click":
            continue
        stores.lines["archive"].append({
            **doc, "_shard": record.shard_id, "_sequence": record.sequence_number,
            "_sub_sequence": 0, "_partition_key": record.partition_key, "_arrival": 1.0,
        })  # fmt: skip
        seq_no = len(stores.documents["search"])
        stores.documents["search"].append({
            "_id": doc["event_id"], "_index": "rec", "_seq_no": seq_no,
            "_source": {**doc, "_position": pad_sequence(record.sequence_number, 0)},
        })  # fmt: skip
    return stores


class TestReconciliation:
    def figures(self, tmp_path: Path, stores: Stores, copy: StreamCopy) -> Any:
        return reconcile_load(plan(tmp_path), copy, stores).functions["f"]

    def test_a_clean_run_accounts_for_every_record(self, tmp_path: Path) -> None:
        """Filtered by the chain run here, delivered to both sinks, or dead-lettered."""
        copy = stream()
        f = self.figures(tmp_path, clean(copy), copy)
        assert f.ok, f.figures.problems
        assert (f.figures.produced, f.filtered, f.figures.delivered) == (8, 2, 5)
        assert f.figures.dead_lettered == 1
        assert f.dead_letters == {"processors[0].filter: DecodeError": 1}

    def test_a_record_missing_from_one_sink_is_lost(self, tmp_path: Path) -> None:
        copy = stream()
        stores = clean(copy)
        stores.lines["archive"].pop(1)
        f = self.figures(tmp_path, stores, copy)
        assert f.figures.lost == 1
        assert not f.ok

    def test_a_record_with_neither_letter_nor_sink_is_lost_not_filtered(
        self, tmp_path: Path
    ) -> None:
        copy = stream()
        stores = clean(copy)
        stores.messages.clear()
        f = self.figures(tmp_path, stores, copy)
        assert (f.figures.lost, f.figures.dead_lettered, f.filtered) == (1, 0, 2)

    def test_repeated_archive_lines_are_removed_but_a_second_document_is_a_problem(
        self, tmp_path: Path
    ) -> None:
        copy = stream()
        stores = clean(copy)
        stores.lines["archive"].append(dict(stores.lines["archive"][0]))
        f = self.figures(tmp_path, stores, copy)
        assert (f.figures.duplicates_seen, f.figures.duplicates_removed) == (1, 1)
        assert f.ok
        other = dict(stores.documents["search"][0], _index="rec-2")
        stores.documents["search"].append(other)
        f = self.figures(tmp_path, stores, copy)
        assert (f.figures.duplicates_seen, f.figures.duplicates_removed) == (2, 1)
        assert not f.ok

    def test_documents_of_a_key_first_written_out_of_order_are_violations(
        self, tmp_path: Path
    ) -> None:
        copy = stream()
        stores = clean(copy)
        docs = stores.documents["search"]
        docs[0]["_seq_no"], docs[2]["_seq_no"] = docs[2]["_seq_no"], docs[0]["_seq_no"]
        f = self.figures(tmp_path, stores, copy)
        assert f.figures.order_violations == 1
        assert not f.ok

    def test_a_filtered_record_in_a_sink_and_a_line_of_another_record_are_problems(
        self, tmp_path: Path
    ) -> None:
        copy = stream()
        stores = clean(copy)
        view = copy.records()[2]
        stores.lines["archive"].append({
            "event_id": "e2", "event_type": "view", "_shard": view.shard_id,
            "_sequence": view.sequence_number, "_sub_sequence": 0, "_partition_key": "k1",
            "_arrival": 1.0,
        })  # fmt: skip
        stores.lines["archive"][0]["event_id"] = "e99"
        f = self.figures(tmp_path, stores, copy)
        assert any("filtered record" in p for p in f.figures.problems)
        assert any("not the record produced there" in p for p in f.figures.problems)

    def test_positions_the_producer_reported_are_checked_against_the_stream(
        self, tmp_path: Path
    ) -> None:
        copy = stream()
        reported = [(r.shard_id, r.sequence_number, 0) for r in copy.records()][1:]
        load = reconcile_load(plan(tmp_path), copy, clean(copy), reported)
        assert load.stream_problems == ("1 records on the stream the producer did not report",)


class TestReliabilityFile:
    def test_a_load_only_run_keeps_the_scenario_section_and_says_from_when(
        self, tmp_path: Path
    ) -> None:
        """``--no-scenarios`` rewrites the file with the scenario table it had."""
        path = tmp_path / "RELIABILITY.md"
        path.write_text(
            "# Reliability\n\nMeasured by `x`\non 2026-12-06 02:21 UTC (2 CPUs); ...\n\n"
            "## Fault scenarios\n\n| a | 1 |\n\n## Load: old\n\nold figures\n"
        )
        text = write_reliability(path, None, None, "python -m bench soak --no-scenarios")
        assert "| a | 1 |" in text
        assert "Kept from the run of 2026-12-06 02:21 UTC" in text
        assert "old figures" not in text
        assert path.read_text() == text
