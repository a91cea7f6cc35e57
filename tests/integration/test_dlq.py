"""``shardline dlq ls | show | redrive | discard`` on a real moto server (issue 15, first
slice): a processor raises on some records, the file is fixed, the redrive empties the queue
and the table (and the OpenSearch indices, in both ways of that sink) then equal a clean run
of the fixed file. Every command runs as users run it
(the console script, from the project folder), so each sees the plugin module as it is now.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stream.testing import EventFactory

pytestmark = pytest.mark.integration

SHARDLINE = str(Path(sys.executable).with_name("shardline"))

PIPELINE = """\
name: shop
stream: {{name: shop-events}}
sinks:
  orders: {{type: dynamodb, table: {table}, key: order_id, mode: latest}}
  dlq: {{type: sqs, queue: {queue}}}
{search}functions:
  {function}:
    on_failure: dlq
    processors:
      - use: "{module}:Picky"
    route: [orders{routes}]
"""
#: Two OpenSearch sinks (``Project.write(search=URL, index=NAME)``): one document per
#: record, and one per order with its position.
SEARCH_SINKS = """\
  events: {{type: opensearch, endpoint: "{url}", index: {index}-events, auth: none}}
  latest: {{type: opensearch, endpoint: "{url}", index: {index}-latest, id: order_id, auth: none}}
"""
PLUGIN = """\
FAIL = {fail!r}


class Picky:
    def __call__(self, record):
        flag = record.get("flag")
        if flag in FAIL:
            raise ValueError(f"cannot price an order flagged {{flag}}")
        return record
"""
#: (partition key, document): o2's first version fails, its second passes; o4 fails twice.
RECORDS = [
    ("o1", {"order_id": "o1", "amount": 10}),
    ("o2", {"order_id": "o2", "amount": 20, "flag": "bad"}),
    ("o3", {"order_id": "o3", "amount": 30, "flag": "bad"}),
    ("o2", {"order_id": "o2", "amount": 21}),
    ("o4", {"order_id": "o4", "amount": 40, "flag": "worse"}),
    ("o3", {"order_id": "o3", "amount": 31, "flag": "bad"}),
]


def _table(aws: Any, name: str) -> str:
    aws("dynamodb").create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "order_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "order_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


def _items(aws: Any, table: str) -> list[dict[str, Any]]:
    """The table's items, without the time they were written at."""
    items = aws("dynamodb").scan(TableName=table)["Items"]
    return sorted(
        ({k: v for k, v in item.items() if k != "_written_at"} for item in items),
        key=lambda item: item["order_id"]["S"],
    )


class Project:
    """A project folder: a pipeline file, its plugin beside it, an event; runs commands."""

    def __init__(self, folder: Path, endpoint: str, name: str) -> None:
        self.folder = folder
        self.endpoint = endpoint
        self.file = f"{name}.yaml"
        self.module = f"picky_{name}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.env |= {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "PYTHONPATH": "",
        }

    def write(
        self,
        *,
        table: str,
        queue: str,
        fail: set[str],
        function: str = "price",
        search: str = "",
        index: str = "",
    ) -> None:
        sinks = SEARCH_SINKS.format(url=search, index=index) if search else ""
        text = PIPELINE.format(
            table=table, queue=queue, function=function, module=self.module, search=sinks,
            routes=", events, latest" if search else "",
        )  # fmt: skip
        (self.folder / self.file).write_text(text)
        (self.folder / f"{self.module}.py").write_text(PLUGIN.format(fail=sorted(fail)))

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SHARDLINE, *args, "--endpoint-url", self.endpoint],
            capture_output=True, text=True, cwd=self.folder, env=self.env, check=False, timeout=300,
        )  # fmt: skip

    def dlq(self, command: str, *args: str) -> tuple[int, dict[str, Any]]:
        done = self.run("dlq", command, self.file, "--json", *args)
        assert done.stdout.strip(), done.stderr
        return done.returncode, json.loads(done.stdout)


@pytest.fixture
def event_file(tmp_path: Path) -> Path:
    factory = EventFactory(stream="shop-events")
    event = factory.event([factory.record(doc, key) for key, doc in RECORDS])
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    return path


def _documents(client: Any, index: str) -> dict[str, Any]:
    """Every document of ``index``: its ``_source`` by ``_id`` (after a refresh)."""
    client.indices.refresh(index=index)
    found = client.search(index=index, body={"size": 10_000})["hits"]["hits"]
    return {h["_id"]: h["_source"] for h in found}


def test_ls_fix_redrive_leaves_the_table_as_a_clean_run_of_the_fixed_file(
    folder: Path,
    event_file: Path,
    aws: Any,
    moto_endpoint: str,
    unique: str,
    opensearch: Any,
    opensearch_endpoint: str,
) -> None:
    """The letters are listed; dry run and a refused file change nothing; the redrive (first
    one letter, then the rest) empties the queue but for the letter that fails again (with
    its count) and the foreign message; the table and the indices equal a clean run's, item
    for item and document for document (``_id`` and ``_source``)."""
    sqs = aws("sqs")
    queue = f"shop-dlq-{unique}"
    url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    table = _table(aws, f"orders-{unique}")
    shop = Project(folder, moto_endpoint, "shop")
    search = {"search": opensearch_endpoint, "index": f"shop-{unique}"}
    shop.write(table=table, queue=queue, fail={"bad", "worse"}, **search)
    invoked = shop.run("invoke", shop.file, "--event", str(event_file))
    assert invoked.returncode == 0, invoked.stderr
    sqs.send_message(QueueUrl=url, MessageBody="not a dead letter")

    code, listed = shop.dlq("ls")
    assert code == 0
    assert listed["total"] == 4
    [grouped] = listed["groups"]
    assert (grouped["function"], grouped["error"], grouped["count"]) == ("price", "ValueError", 4)
    assert "cannot price an order flagged" in grouped["sample_reason"]
    assert [m["body"] for m in listed["foreign"]] == ["not a dead letter"]
    assert shop.dlq("ls", "--error", "KeyError")[1]["total"] == 0
    assert shop.dlq("ls", "--function", "price", "--since", "1h")[1]["total"] == 4
    code, shown = shop.dlq("show", "--limit", "2")
    assert (code, shown["total"], len(shown["letters"])) == (0, 4, 2)
    assert shown["letters"][0]["payload"]["flag"] in {"bad", "worse"}

    # the file is fixed: only "worse" still fails
    shop.write(table=table, queue=queue, fail={"worse"}, **search)
    before = _items(aws, table)
    code, planned = shop.dlq("redrive", "--dry-run")
    assert (code, planned["planned"]) == (0, 4)
    assert _items(aws, table) == before
    assert shop.dlq("ls")[1]["total"] == 4

    code, first = shop.dlq("redrive", "--max", "1")
    assert (code, first["selected"], first["written"]) == (0, 1, 1), first
    code, rest = shop.dlq("redrive")
    assert code == 0, rest
    assert (rest["written"], rest["dead_again"]) == (2, 1), rest

    code, left = shop.dlq("ls")
    assert left["total"] == 1
    [again] = left["groups"]
    assert again["redrives"] == 1
    assert "flagged worse" in again["sample_reason"]
    assert [m["body"] for m in left["foreign"]] == ["not a dead letter"]

    # a clean run of the fixed file into another table writes exactly the same items
    clean = Project(folder, moto_endpoint, "clean")
    clean_table = _table(aws, f"orders-clean-{unique}")
    clean_queue = f"clean-dlq-{unique}"
    sqs.create_queue(QueueName=clean_queue)
    clean.write(
        table=clean_table, queue=clean_queue, fail={"worse"},
        search=opensearch_endpoint, index=f"clean-{unique}",
    )  # fmt: skip
    assert clean.run("invoke", clean.file, "--event", str(event_file)).returncode == 0
    assert _items(aws, table) == _items(aws, clean_table)
    assert len(_items(aws, table)) == 3
    for kind, count in (("events", 5), ("latest", 3)):
        redriven = _documents(opensearch, f"shop-{unique}-{kind}")
        assert redriven == _documents(opensearch, f"clean-{unique}-{kind}"), kind
        assert len(redriven) == count, kind

    # up to --max-redrives: then the letter is left alone, listed, and the exit status is 1
    assert shop.dlq("redrive")[1]["dead_again"] == 1
    code, exhausted = shop.dlq("redrive", "--max-redrives", "2")
    assert (code, exhausted["exhausted"]) == (1, 1)
    assert shop.dlq("ls")[1]["groups"][0]["redrives"] == 2


def test_a_letter_whose_function_is_gone_is_refused_and_discard_needs_yes(
    folder: Path, event_file: Path, aws: Any, moto_endpoint: str, unique: str
) -> None:
    """Renaming the function refuses its letters with the reason and keeps them; discard
    without --yes removes nothing, with it removes the letters and keeps foreign messages."""
    sqs = aws("sqs")
    queue = f"shop-dlq-{unique}"
    url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    table = _table(aws, f"orders-{unique}")
    shop = Project(folder, moto_endpoint, "shop")
    shop.write(table=table, queue=queue, fail={"bad", "worse"})
    assert shop.run("invoke", shop.file, "--event", str(event_file)).returncode == 0
    sqs.send_message(QueueUrl=url, MessageBody='{"some": "json"}')
    shop.write(table=table, queue=queue, fail=set(), function="pricing")
    before = _items(aws, table)

    code, refused = shop.dlq("redrive")
    assert (code, refused["refused"]) == (1, 4)
    why = refused["letters"][0]["detail"]
    assert "function 'price' is not in the file (it has: pricing)" in why
    assert _items(aws, table) == before
    assert shop.dlq("ls")[1]["total"] == 4

    assert shop.run("dlq", "discard", shop.file).returncode == 2  # --yes is required
    code, removed = shop.dlq("discard", "--yes", "--function", "price")
    assert (code, len(removed["removed"])) == (0, 4)
    code, listed = shop.dlq("ls")
    assert (listed["total"], len(listed["foreign"])) == (0, 1)


class BucketProject(Project):
    """The same shop, dead-lettering to an ``s3`` sink instead of a queue."""

    def write(self, *, table: str, queue: str, fail: set[str], function: str = "price") -> None:
        super().write(table=table, queue=queue, fail=fail, function=function)
        path = self.folder / self.file
        path.write_text(
            path.read_text().replace(
                f"dlq: {{type: sqs, queue: {queue}}}",
                f"dlq: {{type: s3, bucket: {queue}, prefix: bad/, compression: gzip}}",
            )
        )


def test_s3_letters_are_listed_and_redriven_and_their_objects_go_once_handled(
    folder: Path, event_file: Path, aws: Any, moto_endpoint: str, unique: str
) -> None:
    """An ``s3`` on_failure sink's letters are listed like a queue's; a Lambda on-failure
    object under aws/lambda/ is a range, listed, and kept when it cannot be resolved; the
    redrive writes the fixed records, leaves the letter that fails again (in its own
    object, one redrive higher), and deletes the objects whose letters were all handled."""
    s3 = aws("s3")
    bucket = f"shop-bad-{unique}"
    s3.create_bucket(Bucket=bucket)
    table = _table(aws, f"orders-{unique}")
    shop = BucketProject(folder, moto_endpoint, "shop")
    shop.write(table=table, queue=bucket, fail={"bad", "worse"})
    invoked = shop.run("invoke", shop.file, "--event", str(event_file))
    assert invoked.returncode == 0, invoked.stderr
    batch_info = {"KinesisBatchInfo": {"shardId": "shardId-000000000000", "batchSize": 2}}
    s3.put_object(
        Bucket=bucket, Key="aws/lambda/m/shardId-000000000000/x", Body=json.dumps(batch_info)
    )
    letter_objects = [
        o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="bad/")["Contents"]
    ]
    assert letter_objects
    assert all("dead-letters/" in key for key in letter_objects)

    code, listed = shop.dlq("ls")
    assert code == 0, listed
    assert listed["total"] == 4
    [grouped] = listed["groups"]
    assert (grouped["source"], grouped["count"]) == (f"s3://{bucket}/bad/", 4)
    assert len(listed["ranges"]) == 1
    assert shop.dlq("ls", "--source", "sqs")[1]["total"] == 0

    shop.write(table=table, queue=bucket, fail={"worse"})
    code, done = shop.dlq("redrive")
    # the range names no sequence numbers: neither the stream nor an archive can give its
    # records, so it stays, and the run says not everything selected was handled
    assert code == 1, done
    assert (done["written"], done["dead_again"], done["unrecoverable"]) == (3, 1, 1), done

    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert not keys & set(letter_objects)  # every letter of them handled: deleted
    assert "aws/lambda/m/shardId-000000000000/x" in keys  # a range is never deleted
    code, left = shop.dlq("ls")
    assert left["total"] == 1
    assert left["groups"][0]["redrives"] == 1
    assert "flagged worse" in left["groups"][0]["sample_reason"]
    assert len(_items(aws, table)) == 3
