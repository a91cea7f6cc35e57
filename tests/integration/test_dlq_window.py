"""``dlq redrive`` of a function with a ``window`` step, on a real moto server (window state
in DynamoDB, letters in SQS): a window's result or late record that a sink refused goes
back into that sink once, after the window (run through it again, the window would take it
for a redelivery and drop it); a letter of a step before the window is refused and stays.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from deploy.local.servers import provision
from deploy.ops.dead_letters import Fate, Kind, SQSSource, read_sources, redrive
from deploy.pipeline.config import compile_plan, parse_config
from sinks.base import permanent
from sinks.dynamodb import DynamoDBSink
from stream.aws import reset_clients
from stream.records import Record
from stream.runtime import build_runner

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from sinks.base import Outcome

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
  rows: {{type: dynamodb, table: {name}-rows, key: window_id}}
  late: {{type: dynamodb, table: {name}-late, key: id}}
  dlq: {{type: sqs, queue: {name}-dlq}}
functions:
  counts:
    on_failure: dlq
    processors:
      - use: "{here}:Picky"
      - window: {{key: user, size_s: 60, field: ts, aggregate: {{n: count}}, late: late}}
    route: [rows]
"""
HERE = __name__
SHARD = "shardId-000000000000"
#: Four batches of one shard. Picky refuses id 2 (before the window); id 4 closes a's
#: window [0, 60) (its result goes to ``rows``, which refuses it); id 5 is late (to
#: ``late``, which refuses it too); id 7's batch moves the window's outbox past them all.
BATCHES = [
    [{"id": "1", "user": "a", "ts": 5}, {"id": "2", "user": "a", "ts": 6, "flag": "bad"},
     {"id": "3", "user": "a", "ts": 10}],
    [{"id": "4", "user": "b", "ts": 70}],
    [{"id": "5", "user": "c", "ts": 20}, {"id": "6", "user": "b", "ts": 71}],
    [{"id": "7", "user": "b", "ts": 72}],
]  # fmt: skip
RESULT_ID = "counts/a/1970-01-01T00:00:00Z"


class RefusingTable(DynamoDBSink):
    """A DynamoDB sink that refuses every record for good while the file ``broken`` exists
    (a sink the operator then fixes)."""

    def __init__(self, name: str, *, broken: str, **options: Any) -> None:
        super().__init__(name, **options)
        self.broken = Path(broken)

    def _write(self, items: Sequence[Record]) -> list[Outcome]:
        if self.broken.exists():
            return [permanent("the table refuses it (test)", "Refused")] * len(items)
        return super()._write(items)


class Picky:
    """A step before the window that cannot handle a flagged record."""

    def __call__(self, record: Record) -> Record:
        if record.get("flag"):
            msg = f"cannot handle a record flagged {record.get('flag')}"
            raise ValueError(msg)
        return record


@pytest.fixture
def local_env(monkeypatch: pytest.MonkeyPatch, moto_endpoint: str) -> None:
    for name, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": moto_endpoint}.items():
        monkeypatch.setenv(name, value)
    reset_clients()


def _plan(aws: Callable[[str], Any], unique: str, broken: Path) -> dict[str, Any]:
    name = f"dw-{unique}"
    text = PIPELINE.format(name=name, here=HERE)
    plan: dict[str, Any] = compile_plan(parse_config(text, source="p.yaml", env={}))
    provision(plan, aws)  # the tables (the window's state too) and the queue
    for sink in ("rows", "late"):  # the runtime builds a spec with "use" from that class
        options = {k: v for k, v in plan["sinks"][sink].items() if k != "type"}
        plan["sinks"][sink] = {"use": f"{HERE}:RefusingTable", **options, "broken": str(broken)}
    return plan


def _run_batches(plan: dict[str, Any]) -> None:
    """The four batches through the function as Lambda runs them (a runner per batch: a
    cold start each, the window's state in its table)."""
    seq = 0
    for docs in BATCHES:
        batch = []
        for index, doc in enumerate(docs):
            seq += 1
            batch.append(Record(orjson.dumps(doc), doc["user"], str(seq), shard_id=SHARD,
                                index=index))  # fmt: skip
        runner = build_runner(plan, "counts", metrics=False)
        try:
            result = runner.run(batch)
        finally:
            for sink in runner.sinks.values():
                sink.close()
        assert not result.failed, result.failed


def _items(aws: Callable[[str], Any], table: str) -> list[dict[str, Any]]:
    items = aws("dynamodb").scan(TableName=table)["Items"]
    return sorted(({k: v for k, v in i.items() if not k.startswith("_")} for i in items),
                  key=repr)  # fmt: skip


def _fates(done: Sequence[Any]) -> dict[str, tuple[Fate, str]]:
    return {r.message.letter.step: (r.fate, r.detail) for r in done}


def test_a_window_result_and_a_late_record_go_back_into_their_sinks_and_earlier_letters_stay(
    tmp_path: Path, aws: Any, unique: str, local_env: None
) -> None:
    broken = tmp_path / "broken"
    broken.touch()
    plan = _plan(aws, unique, broken)
    _run_batches(plan)
    rows, late = plan["sinks"]["rows"]["table"], plan["sinks"]["late"]["table"]
    assert (_items(aws, rows), _items(aws, late)) == ([], [])
    source = SQSSource(plan["sinks"]["dlq"]["queue"], aws("sqs"), aws("s3"), hold_s=60)
    picky, result, late_record = "processors[0].use(" + HERE + ":Picky)", "sink:rows", "sink:late"

    with read_sources([source]) as scan:
        letters = scan.of(Kind.LETTER)
        assert sorted(m.letter.step for m in letters) == sorted([picky, result, late_record])
        planned = _fates(redrive(plan, scan, letters, dry_run=True))
    assert planned[result][0] is planned[late_record][0] is Fate.PLANNED
    assert planned[picky][0] is Fate.REFUSED
    assert "window" in planned[picky][1]
    assert "dlq discard" in planned[picky][1]

    broken.unlink()  # the operator fixes the sinks
    with read_sources([source]) as scan:
        done = _fates(redrive(plan, scan, scan.of(Kind.LETTER)))
    assert done[result][0] is done[late_record][0] is Fate.WRITTEN, done
    assert done[picky][0] is Fate.REFUSED
    assert _items(aws, rows) == [
        {"window_id": {"S": RESULT_ID}, "key": {"S": "a"}, "n": {"N": "2"},
         "window_start": {"S": "1970-01-01T00:00:00Z"},
         "window_end": {"S": "1970-01-01T00:01:00Z"}},
    ]  # fmt: skip
    assert _items(aws, late) == [{"id": {"S": "5"}, "user": {"S": "c"}, "ts": {"N": "20"}}]

    with read_sources([source]) as scan:  # only the refused letter is left, and stays
        left = scan.of(Kind.LETTER)
        assert [m.letter.step for m in left] == [picky]
        again = _fates(redrive(plan, scan, left))
    assert again[picky][0] is Fate.REFUSED
    with read_sources([source]) as scan:
        assert len(scan.of(Kind.LETTER)) == 1
    assert len(_items(aws, rows)) == 1
