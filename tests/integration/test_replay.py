"""``shardline replay`` and the resolution of Lambda's on-failure ranges (issue 15, second
slice), on a real moto server with the local event source mapping running in process.

* Replaying an archived time range into empty stores gives the same DynamoDB items as the
  live run; replaying into the live stores changes nothing (no duplicate in an ``append``
  table, items equal). The same from the stream (``AT_TIMESTAMP``).
* The same for OpenSearch documents, on a real osmem-server, in both ways of the sink (one
  document per record; ``id: order_id`` with positions), from the archive and from the
  stream: the replayed index holds the live documents (``_id`` and ``_source``), and
  replaying into the live index rewrites none (same ``_seq_no`` and ``_version``).
* A function with ``max_retries: 0`` whose processor fails retryably for some records
  sends on-failure ranges to its queue; once fixed, ``dlq redrive`` reads them from the
  stream and writes them, and the queue is empty. With the stream gone, the archive.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner

from deploy.cli import main
from deploy.local.run import LocalRun
from deploy.local.servers import provision
from deploy.ops.dead_letters import Fate, Kind, SQSSource, read_sources, redrive
from deploy.ops.ranges import RangeResolver
from deploy.ops.replay import ReplayRequest, replay
from deploy.pipeline.config import load_plan_from_file
from stream.aws import reset_clients
from stream.producer import Producer

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

pytestmark = pytest.mark.integration

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}

PIPELINE = """\
name: {name}
stream: {{name: {name}}}
sinks:
  orders: {{type: dynamodb, table: {name}-orders, key: order_id, mode: latest}}
  log: {{type: dynamodb, table: {name}-log, key: order_id, mode: append}}
  raw: {{type: s3, bucket: {name}-raw, prefix: raw/}}
  dlq: {{type: sqs, queue: {name}-dlq}}
functions:
  keep:
    route: [raw]
  price:
    on_failure: dlq
    batch: {{max_retries: 0, bisect_on_error: false}}
    processors:
      - use: "{module}:Flaky"
      - enrich: {{set: {{priced: true}}}}
    route: [orders, log]
"""
PLUGIN = """\
import os

from stream.exceptions import RetryableError


class Flaky:
    def __call__(self, record):
        if record.get("flag") and os.environ.get("FLAKY_{name}"):
            raise RetryableError("the price service is down")
        return record
"""


@pytest.fixture(autouse=True)
def _no_lease_keeper_left() -> Iterator[None]:
    """Every dead-letter read of a test ends its lease renewals: a ``lease-keeper`` thread
    left alive would go on hiding its letters from every other reader."""
    before = {t for t in threading.enumerate() if t.name == "lease-keeper"}
    yield
    left = {t for t in threading.enumerate() if t.name == "lease-keeper"} - before
    assert not left, f"{len(left)} lease renewal threads outlived their reads"


@pytest.fixture
def local_env(monkeypatch: pytest.MonkeyPatch, moto_endpoint: str) -> None:
    for name, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": moto_endpoint}.items():
        monkeypatch.setenv(name, value)
    reset_clients()


#: Two OpenSearch sinks the ``price`` function also writes (``_pipeline(search=URL)``): one
#: document per record, and one per order with its position.
SEARCH_SINKS = """\
  events: {{type: opensearch, endpoint: "{url}", index: {name}-events, auth: none}}
  latest: {{type: opensearch, endpoint: "{url}", index: {name}-latest, id: order_id, auth: none}}
"""


def _pipeline(
    folder: Path,
    aws: Callable[[str], Any],
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
    search: str = "",
) -> dict[str, Any]:
    name = f"rp-{unique}"
    module = f"flaky_{unique}"
    (folder / f"{module}.py").write_text(PLUGIN.format(name=unique))
    monkeypatch.syspath_prepend(str(folder))
    file = folder / "pipeline.yaml"
    text = PIPELINE.format(name=name, module=module)
    if search:
        sinks = SEARCH_SINKS.format(url=search, name=name)
        text = text.replace("functions:\n", f"{sinks}functions:\n", 1)
        text = text.replace("route: [orders, log]", "route: [orders, log, events, latest]")
    file.write_text(text)
    plan = load_plan_from_file(file)
    plan["file"] = str(file)
    provision(plan, aws, shards=2)
    aws("kinesis").get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 50}
    )
    return plan


def _produce(aws: Callable[[str], Any], plan: dict[str, Any], flagged: set[int]) -> None:
    with Producer(plan["stream"]["name"], aws("kinesis"), sleep=lambda _: None) as producer:
        for n in range(40):
            key = f"o{n % 8}"
            doc = {"order_id": key, "n": n, **({"flag": True} if n in flagged else {})}
            producer.put(doc, key)
        assert producer.flush().ok


def _run(plan: dict[str, Any], aws: Callable[[str], Any], folder: Path) -> None:
    local = LocalRun(
        {k: v for k, v in plan.items() if k != "file"}, worker_id="w1", in_process=True,
        client=aws, state_dir=folder / ".shardline",
    )  # fmt: skip
    stop = threading.Event()
    timer = threading.Timer(60, stop.set)
    timer.daemon = True
    timer.start()
    try:
        local.run(stop, until_idle_s=1.0)
    finally:
        timer.cancel()


def _items(aws: Callable[[str], Any], table: str) -> list[dict[str, Any]]:
    items = aws("dynamodb").scan(TableName=table)["Items"]
    rows = [{k: v for k, v in i.items() if k != "_written_at"} for i in items]
    return sorted(rows, key=lambda i: json.dumps(i, sort_keys=True))


def _empty_tables(plan: dict[str, Any], aws: Callable[[str], Any], suffix: str) -> dict[str, Any]:
    """A copy of the plan whose tables are new, empty ones."""
    other = copy.deepcopy(plan)
    for sink in ("orders", "log"):
        other["sinks"][sink]["table"] += suffix
    provision(other, aws)
    return other


def test_replaying_the_archive_gives_the_live_items_and_changes_nothing_live(
    tmp_path: Path, aws: Any, unique: str, local_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = _pipeline(tmp_path, aws, unique, monkeypatch)
    since = time.time() - 1
    _produce(aws, plan, flagged=set())
    _run(plan, aws, tmp_path)
    until = time.time() + 1
    orders, log = plan["sinks"]["orders"]["table"], plan["sinks"]["log"]["table"]
    live = _items(aws, orders), _items(aws, log)
    assert (len(live[0]), len(live[1])) == (8, 40)

    s3, kinesis = aws("s3"), aws("kinesis")
    fresh = _empty_tables(plan, aws, "-replayed")
    request = ReplayRequest("price", since, until, workers=3, batch_size=7)
    result = replay(fresh, request, s3=s3, kinesis=kinesis, state_dir=tmp_path / "state")
    assert result.ok, result.reasons
    assert (result.replayed, result.keys, result.written) == (40, 8, {"orders": 40, "log": 40})
    assert result.sinks == ["orders", "log"]  # the archive's own sink is left out
    tables = fresh["sinks"]["orders"]["table"], fresh["sinks"]["log"]["table"]
    assert (_items(aws, tables[0]), _items(aws, tables[1])) == live
    assert not list((tmp_path / "state").glob("*.json"))  # complete: no state left

    again = replay(plan, request, s3=s3, kinesis=kinesis, state_dir=tmp_path / "state")
    assert again.ok
    assert (_items(aws, orders), _items(aws, log)) == live  # no duplicate, nothing older won

    streamed = _empty_tables(plan, aws, "-streamed")
    from_stream = ReplayRequest("price", since, until, source="stream", workers=2)
    result = replay(streamed, from_stream, s3=s3, kinesis=kinesis, state_dir=tmp_path / "s")
    assert (result.ok, result.replayed) == (True, 40)
    tables = streamed["sinks"]["orders"]["table"], streamed["sinks"]["log"]["table"]
    assert (_items(aws, tables[0]), _items(aws, tables[1])) == live

    # page by page: with waves of 3 records no wave holds a shard's window (20 records, in
    # pages of 3), and the stores still end the same
    paged = _empty_tables(plan, aws, "-paged")
    waves: list[int] = []
    small = ReplayRequest("price", since, until, source="stream", workers=2, wave_records=3)
    result = replay(
        paged, small, s3=s3, kinesis=kinesis, state_dir=tmp_path / "p",
        on_progress=lambda r: waves.append(r.replayed - sum(waves)),
    )  # fmt: skip
    assert (result.ok, result.replayed, sum(waves)) == (True, 40, 40)
    assert max(waves) <= 5, waves  # under twice the wave size: one wave and one page
    assert len(waves) >= 40 // 5, waves
    tables = paged["sinks"]["orders"]["table"], paged["sinks"]["log"]["table"]
    assert (_items(aws, tables[0]), _items(aws, tables[1])) == live

    # the command, piped (not a terminal): progress as plain lines, the last one complete
    runner = CliRunner()
    window = [datetime.fromtimestamp(t, UTC).isoformat() for t in (since, until)]
    done = runner.invoke(main, [
        "replay", plan["file"], "--function", "price", "--since", window[0], "--until",
        window[1], "--state-dir", str(tmp_path / "piped"),
        "--endpoint-url", aws("s3").meta.endpoint_url,
    ])  # fmt: skip
    assert done.exit_code == 0, done.output
    progress = [x for x in done.stderr.splitlines() if x.startswith("replaying price from")]
    assert progress, done.stderr
    assert progress[-1].endswith("objects, 40 records replayed"), progress
    counted = progress[-1].split(": ", 1)[1].split()[0]
    assert counted.split("/")[0] == counted.split("/")[1]  # every object done
    assert "\r" not in done.stderr

    # a window with nothing in it replays nothing; the command prints one JSON document
    done = runner.invoke(main, [
        "replay", plan["file"], "--function", "price", "--since", "2001-01-01T00:00:00",
        "--until", "2001-01-02T00:00:00", "--json", "--state-dir", str(tmp_path / "cli"),
        "--endpoint-url", aws("s3").meta.endpoint_url,
    ])  # fmt: skip
    assert done.exit_code == 0, done.output
    doc = json.loads(done.stdout)
    assert (doc["replayed"], doc["ok"]) == (0, True)
    assert (_items(aws, orders), _items(aws, log)) == live


def _documents(client: Any, index: str) -> dict[str, dict[str, Any]]:
    """Every document of ``index`` by ``_id`` (after a refresh): its ``_source``, and its
    ``_seq_no`` and ``_version``, which change whenever the document is written again."""
    client.indices.refresh(index=index)
    body = {"size": 10_000, "seq_no_primary_term": True, "version": True}
    found = client.search(index=index, body=body)["hits"]["hits"]
    return {h["_id"]: {k: h[k] for k in ("_source", "_seq_no", "_version")} for h in found}


def _sources(documents: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {doc_id: doc["_source"] for doc_id, doc in documents.items()}


@pytest.mark.parametrize("source", ["archive", "stream"])
def test_replaying_gives_the_live_documents_and_rewrites_none_live(
    source: str,
    tmp_path: Path,
    aws: Any,
    unique: str,
    local_env: None,
    monkeypatch: pytest.MonkeyPatch,
    opensearch: Any,
    opensearch_endpoint: str,
) -> None:
    plan = _pipeline(tmp_path, aws, unique, monkeypatch, search=opensearch_endpoint)
    since = time.time() - 1
    _produce(aws, plan, flagged=set())
    _run(plan, aws, tmp_path)
    until = time.time() + 1
    indices = {s: plan["sinks"][s]["index"] for s in ("events", "latest")}
    live = {s: _documents(opensearch, index) for s, index in indices.items()}
    assert (len(live["events"]), len(live["latest"])) == (40, 8)
    assert {d["_source"]["n"] for d in live["latest"].values()} == set(range(32, 40))

    s3, kinesis = aws("s3"), aws("kinesis")
    fresh = copy.deepcopy(plan)
    for sink in indices:
        fresh["sinks"][sink]["index"] += "-replayed"
    request = ReplayRequest("price", since, until, source=source, workers=3, batch_size=7)
    result = replay(fresh, request, s3=s3, kinesis=kinesis, state_dir=tmp_path / "state")
    assert result.ok, result.reasons
    assert result.replayed == 40
    assert (result.written["events"], result.written["latest"]) == (40, 40)
    for sink in indices:
        replayed = _documents(opensearch, fresh["sinks"][sink]["index"])
        assert _sources(replayed) == _sources(live[sink]), sink  # same _id, same _source

    again = replay(plan, request, s3=s3, kinesis=kinesis, state_dir=tmp_path / "state")
    assert (again.ok, again.replayed, again.written["latest"]) == (True, 40, 40), again.reasons
    for sink, index in indices.items():
        assert _documents(opensearch, index) == live[sink], sink  # not even rewritten


def test_on_failure_ranges_are_resolved_from_the_stream_then_the_archive(
    tmp_path: Path, aws: Any, unique: str, local_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = _pipeline(tmp_path, aws, unique, monkeypatch)
    monkeypatch.setenv(f"FLAKY_{unique}", "1")
    _produce(aws, plan, flagged={5, 13, 30})
    _run(plan, aws, tmp_path)
    monkeypatch.delenv(f"FLAKY_{unique}")  # the price service is back
    sqs, s3, kinesis = aws("sqs"), aws("s3"), aws("kinesis")
    source = SQSSource(plan["sinks"]["dlq"]["queue"], sqs, s3, hold_s=60)

    scan = read_sources([source])
    ranges = scan.of(Kind.RANGE)
    assert ranges, [m.body for m in scan.messages]
    resolver = RangeResolver(plan, kinesis, s3)
    assert {resolver(m).source for m in ranges} == {"stream"}, [resolver(m).why for m in ranges]
    done = redrive(plan, scan, ranges, dry_run=True, resolve=resolver)
    assert {r.fate for r in done} == {Fate.PLANNED}

    clean = _empty_tables(plan, aws, "-clean")
    replay(clean, ReplayRequest("price", 0, time.time() + 1), s3=s3, kinesis=kinesis,
           state_dir=tmp_path / "clean")  # fmt: skip
    orders, log = plan["sinks"]["orders"]["table"], plan["sinks"]["log"]["table"]
    assert len(_items(aws, log)) < 40  # the ranges' records are missing

    # one range with the stream gone: from the archive (a resolver reading another stream)
    scan = read_sources([source])
    first, *rest = scan.of(Kind.RANGE)
    gone = {**plan, "stream": {**plan["stream"], "name": f"gone-{unique}"}}
    archived = RangeResolver(gone, kinesis, s3)
    body = first.body.replace(f"stream/{plan['stream']['name']}", f"stream/gone-{unique}")
    moved = type(first)(**{**{f: getattr(first, f) for f in first.__slots__}, "body": body})
    assert archived(moved).source == "archive"
    scan.messages = [moved if m is first else m for m in scan.messages]
    done = redrive(plan, scan, [moved], resolve=archived)
    assert [r.fate for r in done] == [Fate.WRITTEN], done
    with read_sources([source]) as scan:
        done = redrive(plan, scan, scan.of(Kind.RANGE), resolve=resolver)
    assert all(r.fate is Fate.WRITTEN for r in done), done
    with read_sources([source]) as scan:
        assert scan.messages == []

    tables = clean["sinks"]["orders"]["table"], clean["sinks"]["log"]["table"]
    assert (_items(aws, orders), _items(aws, log)) == (
        _items(aws, tables[0]), _items(aws, tables[1])
    )  # fmt: skip
    assert len(_items(aws, log)) == 40
    del rest


def test_a_range_neither_the_stream_nor_an_archive_holds_is_unrecoverable(
    tmp_path: Path, aws: Any, unique: str, local_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = _pipeline(tmp_path, aws, unique, monkeypatch)
    monkeypatch.setenv(f"FLAKY_{unique}", "1")
    _produce(aws, plan, flagged={3})
    _run(plan, aws, tmp_path)
    sqs, s3, kinesis = aws("sqs"), aws("s3"), aws("kinesis")
    source = SQSSource(plan["sinks"]["dlq"]["queue"], sqs, s3, hold_s=60)
    no_archive = {**plan, "functions": {"price": plan["functions"]["price"]}}
    gone = {**no_archive, "stream": {**plan["stream"], "name": f"gone-{unique}"}}
    scan = read_sources([source])
    [m] = scan.of(Kind.RANGE)
    body = m.body.replace(f"stream/{plan['stream']['name']}", f"stream/gone-{unique}")
    moved = type(m)(**{**{f: getattr(m, f) for f in m.__slots__}, "body": body})
    scan.messages = [moved]
    done = redrive(gone, scan, [moved], resolve=RangeResolver(gone, kinesis, s3))
    assert [r.fate for r in done] == [Fate.UNRECOVERABLE]
    assert "the stream no longer holds it" in done[0].detail
    assert "no archive" in done[0].detail
    with read_sources([source]) as scan:
        assert len(scan.of(Kind.RANGE)) == 1  # left in the queue
