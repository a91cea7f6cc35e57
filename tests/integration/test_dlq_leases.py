"""Two operators redriving at once (issue 15): every dead letter is handled exactly once,
none is lost, over a real moto server. SQS letters are leased by their visibility timeout,
S3 letter objects by a conditional claim (:mod:`deploy.ops.leases`)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest

from deploy.ops.dead_letters import (
    Kind,
    LetterSource,
    Message,
    S3Source,
    SQSSource,
    read_sources,
    redrive,
)
from deploy.ops.leases import CLAIMS_PREFIX, LeaseKeeper, ObjectClaims
from stream.testing import EventFactory
from tests.faultproxy import FaultProxy, slow
from tests.integration.fault_fixtures import aws_client
from tests.integration.test_dlq import SHARDLINE, BucketProject, Project, _items, _table

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

pytestmark = pytest.mark.integration

#: The plugin of test_dlq, logging each record it sees (process id, order id) to LOG.
PLUGIN = """\
import os

FAIL = {fail!r}
LOG = {log!r}


class Picky:
    def __call__(self, record):
        with open(LOG, "a") as out:
            out.write(f"{{os.getpid()}} {{record.get('order_id')}}\\n")
        if record.get("flag") in FAIL:
            raise ValueError(f"cannot price an order flagged {{record.get('flag')}}")
        return record
"""
#: Twelve orders dead-lettered in four batches (four S3 objects of letters), beside one that
#: passes in each (a step that fails every record is broken: its batch is retried instead);
#: o5 and o11 fail again.
ORDERS = [f"o{n}" for n in range(1, 13)]
PASSING = [f"p{n}" for n in range(1, 5)]
WORSE = {"o5", "o11"}


def _write(project: Project, table: str, sink: str, fail: set[str], log: Path) -> None:
    project.write(table=table, queue=sink, fail=fail)
    plugin = project.folder / f"{project.module}.py"
    plugin.write_text(PLUGIN.format(fail=sorted(fail), log=str(log)))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    return path


def _redrive_both(project: Project) -> list[tuple[int, dict[str, Any]]]:
    """Two ``dlq redrive --json`` started at once; each one's exit status and output."""
    args = [SHARDLINE, "dlq", "redrive", project.file, "--json", "--endpoint-url",
            project.endpoint]  # fmt: skip
    running = [
        subprocess.Popen(
            args,
            cwd=project.folder,
            env=project.env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    out = []
    for proc in running:
        stdout, stderr = proc.communicate(timeout=300)
        assert stdout.strip(), stderr
        out.append((proc.returncode, json.loads(stdout)))
    return out


@pytest.mark.parametrize("where", ["sqs", "s3"])
def test_two_redrives_at_once_handle_every_letter_exactly_once(
    where: str, folder: Path, tmp_path: Path, aws: Any, moto_endpoint: str, unique: str
) -> None:
    """Both runs succeed; together they write the ten fixed orders and dead-letter the two
    that fail again once each (redrives 1, not 2); the processor saw each record once; the
    table equals a clean run's; no claim is left behind."""
    sink = f"shop-dlq-{unique}"
    if where == "sqs":
        aws("sqs").create_queue(QueueName=sink)
        project: Project = Project(folder, moto_endpoint, "shop")
    else:
        aws("s3").create_bucket(Bucket=sink)
        project = BucketProject(folder, moto_endpoint, "shop")
    table = _table(aws, f"orders-{unique}")
    _write(project, table, sink, {"bad", "worse"}, tmp_path / "first.log")
    factory = EventFactory(stream="shop-events")
    for batch in range(4):
        records = [factory.record({"order_id": PASSING[batch]}, PASSING[batch])] + [
            factory.record({"order_id": o, "flag": "worse" if o in WORSE else "bad"}, o)
            for o in ORDERS[batch * 3 : batch * 3 + 3]
        ]
        event = tmp_path / f"event{batch}.json"
        event.write_text(json.dumps(factory.event(records)))
        invoked = project.run("invoke", project.file, "--event", str(event))
        assert invoked.returncode == 0, invoked.stderr
    assert project.dlq("ls")[1]["total"] == 12

    log = tmp_path / "redrive.log"
    _write(project, table, sink, {"worse"}, log)
    runs = _redrive_both(project)

    assert [code for code, _ in runs] == [0, 0], runs
    assert sum(out["written"] for _, out in runs) == 10, runs
    assert sum(out["dead_again"] for _, out in runs) == 2, runs
    assert sum(out["selected"] for _, out in runs) == 12, runs
    seen = Counter(line.split()[1] for line in log.read_text().splitlines())
    assert seen == dict.fromkeys(ORDERS, 1)
    assert sorted(item["order_id"]["S"] for item in _items(aws, table)) == sorted(
        set(ORDERS + PASSING) - WORSE
    )
    code, shown = project.dlq("show")
    assert code == 0
    assert sorted((x["partition_key"], x["redrives"]) for x in shown["letters"]) == [
        ("o11", 1), ("o5", 1),
    ]  # fmt: skip
    if where == "s3":
        left = aws("s3").list_objects_v2(Bucket=sink, Prefix=CLAIMS_PREFIX).get("KeyCount")
        assert left == 0


def _poll(until: Any, within_s: float) -> bool:
    """Whether ``until()`` came true before the deadline (asked again and again)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if until():
            return True
        time.sleep(0.1)  # the interval between polls, not a wait for an outcome
    return False


class TestSQSLease:
    """A message is deleted only while this redrive's lease on it holds."""

    @pytest.fixture
    def queue(self, aws: Any, unique: str) -> str:
        name = f"lease-{unique}"
        aws("sqs").create_queue(QueueName=name)
        aws("sqs").send_message(QueueUrl=name, MessageBody="a letter")
        return name

    def test_a_lease_that_ran_out_is_not_deleted(self, aws: Any, queue: str) -> None:
        """Once another reader received the message, the first one neither deletes it nor
        makes it visible again: it is the other's."""
        first = SQSSource(queue, aws("sqs"), aws("s3"), hold_s=1)
        (message,) = first.read()
        other = SQSSource(queue, aws("sqs"), aws("s3"), hold_s=60)
        got: list[Any] = []
        assert _poll(lambda: got.extend(other.read()) or got, within_s=30)

        failed = first.delete([message])

        assert "lease (the visibility timeout) ran out" in failed[message.id]
        assert other.delete(got) == {}  # the other's handle still deletes it
        attrs = aws("sqs").get_queue_attributes(
            QueueUrl=first.url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        assert attrs["ApproximateNumberOfMessages"] == "0"

    def test_the_keeper_holds_a_lease_past_its_timeout(self, aws: Any, queue: str) -> None:
        """Renewed every 0.3 s, a 3 s hold keeps the message hidden for 9 s (three holds),
        then it is deleted; without the keeper another reader gets it within that time
        (above). The hold leaves a renewal 2.7 s to come (a 1 s hold left 0.7 s: a keeper
        thread kept waiting that long on a loaded machine, or by a long garbage collection
        in a session's big process, lost the lease). The watch lasts three holds, as it
        lasted three 1 s holds before: watched for 4 s, a keeper that stopped renewing
        after 1.5 s passed, its last renewal hiding the message to 4.5 s."""
        first = SQSSource(queue, aws("sqs"), aws("s3"), hold_s=3)
        (message,) = first.read()
        other = SQSSource(queue, aws("sqs"), aws("s3"), hold_s=60)
        with LeaseKeeper(first.renew, every_s=0.3) as keeper:
            assert not _poll(other.read, within_s=9)
        assert keeper.renewals >= 3
        assert keeper.error is None
        assert first.delete([message]) == {}


class TestSlowRead:
    """The leases are renewed from the first receive on, not only once every source has
    been read: a long read (a large queue, a slow connection) must not let the first
    letters become visible to another operator before the redrive runs them."""

    def test_letters_read_first_stay_hidden_while_later_ones_are_read(
        self, aws: Any, moto_endpoint: str, unique: str
    ) -> None:
        name = f"slow-read-{unique}"
        aws("sqs").create_queue(QueueName=name)
        url = aws("sqs").get_queue_url(QueueName=name)["QueueUrl"]
        for start in range(0, 30, 10):
            entries = [{"Id": str(n), "MessageBody": f"letter {start + n}"} for n in range(10)]
            aws("sqs").send_message_batch(QueueUrl=url, Entries=entries)
        with FaultProxy(moto_endpoint) as proxy:
            # every receive answers 1 s late: 3 full ones and 2 empty ones, ~5 s of reading
            # against a 2 s hold (the first ten would be visible again after 2 s)
            rule = proxy.inject(slow(1.0), target="ReceiveMessage")
            source = SQSSource(name, aws_client(proxy.url, "sqs"), aws("s3"), hold_s=2)
            began = time.monotonic()
            scans: list[Any] = []
            # in a thread with a deadline: with leases running out mid-read, the source
            # receives its own letters again and again and the read never ends
            reading = threading.Thread(
                target=lambda: scans.append(read_sources([source])), daemon=True
            )
            reading.start()
            reading.join(60)
            assert scans, "the read did not end within 60 s (its leases ran out mid-read)"
            scan = scans[0]
            took = time.monotonic() - began
            try:
                other = SQSSource(name, aws("sqs"), aws("s3"), hold_s=60)
                stolen = other.read()
                assert rule.fired >= 4
                assert took > 2 * source.hold_s, took  # the read did outlast the hold
                assert len(scan.messages) == 30
                assert stolen == [], f"{len(stolen)} letters visible to another reader"
                assert scan.keeper is not None
                assert scan.keeper.renewals >= 1
                assert scan.keeper.error is None
            finally:
                scan.release()
        assert scan.keeper is None  # released: renewing stopped


class TestLeasesRunningOut:
    """A read slower than its hold with nothing renewing (``SQSSource.read`` alone): the
    first letters become visible and are received again. Found in the review of the lease
    work: every such round counted as new, so the read never ended, and a letter kept its
    first receipt handle, which SQS no longer honours for a delete."""

    def test_the_read_ends_and_keeps_each_letter_once_with_its_latest_handle(
        self, aws: Any, moto_endpoint: str, unique: str
    ) -> None:
        name = f"lapsed-{unique}"
        aws("sqs").create_queue(QueueName=name)
        url = aws("sqs").get_queue_url(QueueName=name)["QueueUrl"]
        entries = [{"Id": str(n), "MessageBody": f"letter {n}"} for n in range(10)]
        aws("sqs").send_message_batch(QueueUrl=url, Entries=entries)
        with FaultProxy(moto_endpoint) as proxy:
            proxy.inject(slow(1.2), target="ReceiveMessage")  # longer than the 1 s hold
            source = SQSSource(name, aws_client(proxy.url, "sqs"), aws("s3"), hold_s=1)
            read: list[Any] = []
            reading = threading.Thread(target=lambda: read.append(source.read()), daemon=True)
            reading.start()
            reading.join(60)
            assert read, "the read did not end within 60 s (it kept receiving its own letters)"
            letters = read[0]
            assert sorted(m.id for m in letters) == sorted({m.id for m in letters})
            assert len(letters) == 10
            # the lease of a letter received again holds that receipt's handle, the one a
            # delete or an extension then sends
            newer = [m for m in letters if source._leases[m.id][0] != m.handle]
            assert newer, "no letter was received again: the test did not let a lease lapse"


class TestObjectClaims:
    """An S3 object of letters is held by one claim at a time."""

    def test_a_live_claim_excludes_and_a_stale_one_is_taken_over(
        self, aws: Any, unique: str
    ) -> None:
        s3 = aws("s3")
        bucket = f"claims-{unique}"
        s3.create_bucket(Bucket=bucket)
        first = ObjectClaims(bucket, s3, 60)
        second = ObjectClaims(bucket, s3, 60)
        assert first.claim("bad/dead-letters/x.jsonl")
        assert not second.claim("bad/dead-letters/x.jsonl")
        assert first.renew("bad/dead-letters/x.jsonl") == ""

        later = ObjectClaims(bucket, s3, 60, now=lambda: time.time() + 120)  # first's ran out
        assert later.claim("bad/dead-letters/x.jsonl")
        assert "taken over" in first.renew("bad/dead-letters/x.jsonl")
        first.release("bad/dead-letters/x.jsonl")  # not its own any more: a no-op
        assert not second.claim("bad/dead-letters/x.jsonl")
        later.release("bad/dead-letters/x.jsonl")
        assert second.claim("bad/dead-letters/x.jsonl")

    def test_a_source_whose_claim_was_taken_over_deletes_nothing(
        self, aws: Any, unique: str
    ) -> None:
        s3 = aws("s3")
        bucket = f"claims-{unique}"
        s3.create_bucket(Bucket=bucket)
        key = "bad/dead-letters/shardId-000000000000/1-1-x.jsonl"
        s3.put_object(Bucket=bucket, Key=key, Body=b"not a letter\n")
        first = S3Source(bucket, "bad/", s3, hold_s=60)
        (message,) = first.read()
        assert S3Source(bucket, "bad/", s3, hold_s=60).read() == []  # claimed: skipped
        ObjectClaims(bucket, s3, 60, now=lambda: time.time() + 120).claim(key)

        failed = first.delete([message])

        assert "taken over" in failed[message.id]
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"not a letter\n"


class _FirstRenewWaits:
    """The real S3 client; the first claim renewal (PutObject with IfMatch) is sent only
    after a second one has been answered: the lease keeper's renewal and the source's
    renewal before a delete, in flight at once."""

    def __init__(self, client: Any) -> None:
        import threading  # noqa: PLC0415

        self.client = client
        self.second_done = threading.Event()
        self.first: bool | None = None
        self.lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def put_object(self, **request: Any) -> Any:
        if "IfMatch" not in request or not request["Key"].startswith(CLAIMS_PREFIX):
            return self.client.put_object(**request)
        with self.lock:
            first, self.first = self.first is None, False
        if first:
            self.second_done.wait(10)
            return self.client.put_object(**request)
        try:
            return self.client.put_object(**request)
        finally:
            self.second_done.set()


class TestReviewRenewRace:
    def test_two_renewals_of_one_holder_at_once_keep_the_claim(self, aws: Any, unique: str):
        import threading  # noqa: PLC0415

        s3 = aws("s3")
        bucket = f"claims-{unique}"
        s3.create_bucket(Bucket=bucket)
        client = _FirstRenewWaits(s3)
        claims = ObjectClaims(bucket, client, 60)
        key = "bad/dead-letters/x.jsonl"
        assert claims.claim(key)
        answers: list[str] = []
        threads = [threading.Thread(target=lambda: answers.append(claims.renew(key)))
                   for _ in range(2)]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        # nobody else ever claimed it: both renewals are this holder's own
        assert answers == ["", ""], answers
        assert claims.held == [key]


def _keepers() -> set[threading.Thread]:
    """The lease keepers' renewal threads alive now."""
    return {t for t in threading.enumerate() if t.name == "lease-keeper"}


class _Interrupted(LetterSource):
    """A source whose read is cut short by ^C (after the sources before it were read)."""

    name = "interrupted"
    hold_s = 30

    def read(self) -> list[Message]:
        raise KeyboardInterrupt

    def delete(self, messages: Sequence[Message]) -> dict[str, str]:
        return {}

    def release(self, messages: Sequence[Message]) -> None:
        pass


class TestNoRenewalThreadLeft:
    """Every read stops and joins the thread that renews its leases: a thread left behind
    renews its letters' visibility for the rest of the process (no other operator gets
    them) and, in tests, piles up (test_replay left three)."""

    @pytest.fixture
    def source(self, aws: Any, unique: str) -> SQSSource:
        name = f"keeper-{unique}"
        aws("sqs").create_queue(QueueName=name)
        aws("sqs").send_message(QueueUrl=name, MessageBody='{"KinesisBatchInfo": {}}')
        return SQSSource(name, aws("sqs"), aws("s3"), hold_s=30)

    def test_a_scan_ended_by_its_with_block_has_joined_its_thread(self, source: SQSSource):
        before = _keepers()
        with read_sources([source]) as scan:
            assert len(scan.messages) == 1
            assert scan.keeper is not None
            assert scan.keeper.running
        assert _keepers() - before == set()

    def test_a_read_interrupted_by_ctrl_c_leaves_no_thread(self, source: SQSSource):
        before = _keepers()
        with pytest.raises(KeyboardInterrupt):
            read_sources([source, _Interrupted()])
        assert _keepers() - before == set()

    def test_a_scan_dropped_without_closing_stops_renewing(self, source: SQSSource):
        before = _keepers()
        assert len(read_sources([source]).messages) == 1  # looked at, never closed
        assert _poll(lambda: not _keepers() - before, within_s=30)

    def test_a_redrive_interrupted_while_resolving_ranges_ends_its_scan(
        self, aws: Any, source: SQSSource
    ):
        """Resolving ranges reads the stream or the archive, which may take long: ^C then
        must still release the letters and stop renewing them."""

        def interrupted(message: Message) -> Any:
            raise KeyboardInterrupt

        before = _keepers()
        scan = read_sources([source])
        plan: Any = {"name": "p", "functions": {}}
        with pytest.raises(KeyboardInterrupt):
            redrive(plan, scan, scan.of(Kind.RANGE), resolve=interrupted)
        assert _keepers() - before == set()
        assert scan.keeper is None
        other = SQSSource(source.name, aws("sqs"), aws("s3"), hold_s=30)
        again = other.read()  # released at once, not held until its lease ran out
        assert [m.kind for m in again] == [Kind.RANGE]
        other.release(again)
