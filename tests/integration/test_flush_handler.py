"""Issue 16, slice S2 end to end: the Lambda handler runs a scheduled flush event against a
window table (``state: dynamodb``) and a ``dynamodb`` sink keyed by ``window_id`` on the
session's moto server, every call through a :class:`tests.faultproxy.FaultProxy` that
faults the sink's table alone when a test says so.

The function's batches come as Lambda's Kinesis events (:class:`stream.testing.EventFactory`
on the real stream's ARN and shard ids, so a window step asks the real stream for a shard's
parents). ``quiet_s: 1``: a test polls flushes with a deadline until the shard is quiet.
"""

from __future__ import annotations

import base64
import threading
import time
import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
import pytest

import stream.lambda_handler as lh
from deploy.local.readback import table_items
from stream.aws import reset_clients
from stream.exceptions import FlushEventError
from stream.flush import FlushRunner, flush_event
from stream.testing import EventFactory
from tests.faultproxy import THROTTLE, FaultProxy, aws_json_error
from tests.integration.flushing import provision_pipeline, use_endpoint

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

pytestmark = pytest.mark.integration

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z: every window's end is long past
S0, S1 = "shardId-000000000000", "shardId-000000000001"
REFUSED = aws_json_error("refused", 400, "ValidationException", "One or more parameter values")

PIPELINE = """\
name: {name}
stream: {{name: {name}, mode: provisioned, shards: 2, encryption: none}}
sinks:
  results: {{type: dynamodb, table: {name}-results, key: window_id, mode: latest}}
  dlq: {{type: sqs, queue: {name}-dlq}}
functions:
  main:
    on_failure: dlq
    processors:
      - window:
          key: user
          size_s: 60
          field: ts
          quiet_s: 1
          aggregate: {{n: count}}
{more}    route: [results]
"""
#: a second window step over the first one's results: per window size, how many keys
SECOND_WINDOW = """\
      - window:
          key: window_start
          size_s: 60
          field: window_start
          quiet_s: 1
          aggregate: {keys: count}
"""


#: session windows (gap_s) in place of tumbling ones
SESSIONS = PIPELINE.replace("          size_s: 60\n", "          gap_s: 30\n", 1)


class Fn:
    """A deployed function on the moto server, run through the Lambda handler."""

    def __init__(self, aws: Callable[[str], Any], name: str, plan: dict[str, Any]) -> None:
        self.aws = aws
        self.name = name
        self.plan = plan
        self.shards = {s: EventFactory(stream=name, shard_id=s) for s in (S0, S1)}

    def batch(self, shard: str, docs: list[dict[str, Any]]) -> Any:
        factory = self.shards[shard]
        return lh.handler(factory.batch([(d["user"], d) for d in docs]), Context())

    def flush(self, function: str = "main") -> Any:
        return lh.handler(dict(flush_event(function)), Context())

    def flush_until(self, check: Callable[[Any], bool], timeout: float = 30) -> Any:
        """Flush until a response passes ``check`` (the shard turns quiet after 1 s)."""
        deadline = time.monotonic() + timeout
        pause = threading.Event()
        while True:
            response = self.flush()
            if check(response):
                return response
            assert time.monotonic() < deadline, f"no such flush in {timeout} s: {response}"
            pause.wait(0.2)

    def rows(self) -> dict[str, int]:
        out = {}
        for item in table_items(self.aws("dynamodb"), f"{self.name}-results"):
            field = "n" if "n" in item else "keys"
            out[item["window_id"]["S"]] = int(Decimal(item[field]["N"]))
        return out

    def dead_letters(self) -> list[dict[str, Any]]:
        sqs = self.aws("sqs")
        url = sqs.get_queue_url(QueueName=f"{self.name}-dlq")["QueueUrl"]
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        return [orjson.loads(m["Body"]) for m in got.get("Messages", [])]


class Context:
    aws_request_id = "flush-test"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:f"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    with FaultProxy(moto_endpoint) as p:
        yield p


def deploy(
    aws: Callable[[str], Any],
    proxy: FaultProxy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    more: str = "",
    pipeline: str = PIPELINE,
) -> Fn:
    name = f"fl{uuid.uuid4().hex[:8]}"
    plan = provision_pipeline(aws, pipeline.format(name=name, more=more), shards=2)
    path = tmp_path / "pipeline.json"
    path.write_bytes(orjson.dumps(plan))
    monkeypatch.setenv("SHARDLINE_PIPELINE", str(path))
    monkeypatch.delenv("SHARDLINE_FUNCTION", raising=False)
    monkeypatch.setattr(lh, "_runner", None)
    use_endpoint(monkeypatch, proxy.url)
    return Fn(aws, name, plan)


def at(second: int, user: str) -> dict[str, Any]:
    return {"user": user, "ts": T0 + second}


def wid(user: str, minute: int = 0, fn: str = "main") -> str:
    return f"{fn}/{user}/2026-01-01T00:{minute:02d}:00Z"


def sink_writes(name: str, needle: bytes = b"") -> Callable[[Any], bool]:
    """The sink's writes to its table (the window table's requests name another)."""
    table = f'"{name}-results"'.encode()
    return lambda request: table in request.body and needle in request.body


@pytest.fixture(autouse=True)
def _fresh_runner() -> Iterator[None]:
    yield
    lh._runner = None  # the next test's plan, not this one's
    reset_clients()


class TestFlushHandler:
    def test_a_flush_writes_one_row_per_window_of_a_quiet_shard(
        self, aws, proxy, tmp_path, monkeypatch
    ):
        fn = deploy(aws, proxy, tmp_path, monkeypatch)
        assert fn.batch(S0, [at(1, "a"), at(2, "b"), at(3, "a")]) == {"batchItemFailures": []}
        assert fn.rows() == {}  # the shard's own watermark closes nothing yet
        response = fn.flush_until(lambda r: r["emitted"] > 0)
        assert response == {
            "shardline": "flush", "function": "main", "windows": 2, "emitted": 1, "pending": 0
        }  # fmt: skip
        assert fn.rows() == {wid("a"): 2, wid("b"): 1}
        assert fn.flush()["emitted"] == 0  # acked: never emitted again

    def test_a_faulted_sink_leaves_the_emission_pending_until_a_flush_writes_it(
        self, aws, proxy, tmp_path, monkeypatch
    ):
        fn = deploy(aws, proxy, tmp_path, monkeypatch)
        fn.batch(S0, [at(1, "a"), at(2, "b")])
        down = proxy.inject(THROTTLE, where=sink_writes(fn.name))
        response = fn.flush_until(lambda r: r["emitted"] > 0)
        assert (response["windows"], response["emitted"], response["pending"]) == (2, 1, 1)
        assert down.fired > 0
        assert fn.rows() == {}
        proxy.remove(down)
        assert fn.flush() == {
            "shardline": "flush", "function": "main", "windows": 2, "emitted": 1, "pending": 0
        }  # fmt: skip
        assert fn.rows() == {wid("a"): 1, wid("b"): 1}
        assert fn.flush()["emitted"] == 0

    def test_a_permanently_refused_result_is_dead_lettered_and_acked(
        self, aws, proxy, tmp_path, monkeypatch
    ):
        fn = deploy(aws, proxy, tmp_path, monkeypatch)
        fn.batch(S0, [at(1, "a"), at(2, "bad")])
        proxy.inject(REFUSED, where=sink_writes(fn.name, b"/bad/"))
        response = fn.flush_until(lambda r: r["emitted"] > 0)
        assert (response["windows"], response["emitted"], response["pending"]) == (2, 1, 0)
        assert fn.rows() == {wid("a"): 1}
        (letter,) = fn.dead_letters()
        assert letter["step"] == "sink:results"
        assert letter["shard_id"] == S0
        assert orjson.loads(base64.b64decode(letter["data_base64"]))["window_id"] == wid("bad")
        assert fn.flush()["emitted"] == 0  # acked with its dead letter

    def test_a_flush_for_another_function_is_refused(self, aws, proxy, tmp_path, monkeypatch):
        fn = deploy(aws, proxy, tmp_path, monkeypatch)
        with pytest.raises(FlushEventError, match="'other'"):
            fn.flush("other")

    def test_a_kinesis_batch_runs_as_before(self, aws, proxy, tmp_path, monkeypatch):
        """A record past a window's end closes it in the batch, from that record."""
        fn = deploy(aws, proxy, tmp_path, monkeypatch)
        assert fn.batch(S0, [at(1, "a"), at(61, "a")]) == {"batchItemFailures": []}
        assert fn.rows() == {wid("a"): 1}

    def test_with_two_window_steps_only_the_last_is_flushed(
        self, aws, proxy, tmp_path, monkeypatch
    ):
        """The first step's windows wait for a record, as before the flush existed (see the
        next test for why); the second's close by a flush once a record closed the first's."""
        fn = deploy(aws, proxy, tmp_path, monkeypatch, more=SECOND_WINDOW)
        fn.batch(S0, [at(1, "a"), at(2, "b"), at(3, "c")])
        assert [i for i, _ in FlushRunner(lh.runner()).windows] == [1]
        fn.batch(S0, [at(61, "a")])  # the first step's minute 0 closes: 3 keys
        response = fn.flush_until(lambda r: r["emitted"] > 0)
        assert (response["windows"], response["pending"]) == (1, 0)
        assert fn.rows() == {"main/2026-01-01T00:00:00Z/2026-01-01T00:00:00Z": 3}

    def test_session_windows_flush_as_well(self, aws, proxy, tmp_path, monkeypatch):
        """``SessionWindow.tick``: a key's session, quiet past its gap, closes by a flush."""
        fn = deploy(aws, proxy, tmp_path, monkeypatch, pipeline=SESSIONS)
        fn.batch(S0, [at(1, "a"), at(5, "b"), at(20, "a")])  # in time: none is late
        assert fn.rows() == {}
        response = fn.flush_until(lambda r: r["emitted"] > 0)
        assert (response["windows"], response["pending"]) == (2, 0)
        assert sorted(fn.rows().values()) == [1, 2]
        assert fn.flush()["emitted"] == 0

    @pytest.mark.xfail(
        strict=True,
        reason="every window step ticked: a later window step forgets what a flushed record "
        "yielded once a batch of the shard moves its outbox on (why only the last is ticked)",
    )
    def test_a_second_window_steps_result_pending_across_a_batch_of_the_shard(
        self, aws, proxy, tmp_path, monkeypatch
    ):
        """The first step's flushed results close a window of the second step, whose write
        fails: the emission stays pending. A batch of the same shard comes before the next
        flush (Lambda does not hold a shard back for a pending flush) and moves the second
        step's outbox past the synthetic position. The next flush sends the emission again:
        the second step's result for it must still come out.

        Event times near the clock: a flush's close moves the shard's watermark to its
        cutoff (now - quiet_s), so the later batch's records must be newer than that."""
        # the second step's own ticks close nothing here (quiet_s 300): only the first's
        # flushed records close its windows
        more = SECOND_WINDOW.replace("quiet_s: 1", "quiet_s: 300")
        fn = deploy(aws, proxy, tmp_path, monkeypatch, more=more)
        flusher = FlushRunner(lh.runner())
        flusher.windows = [
            (i, step.processor) for i, step in enumerate(lh.runner().chain.steps)
        ]  # both window steps ticked: what FlushRunner refuses to do
        lh.runner()._flusher = flusher
        m = int(time.time()) // 60 * 60
        base = m - 600

        def doc(t: int, user: str) -> dict[str, Any]:
            return {"user": user, "ts": t}

        def minute(t: int) -> str:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
            return f"main/{stamp}/{stamp}"

        # a's first minute closes in the batch (at a@61): the second step opens `base`
        docs = [doc(base + 1, "a"), doc(base + 61, "a"), doc(base + 62, "c")]
        assert fn.batch(S0, docs) == {"batchItemFailures": []}
        down = proxy.inject(THROTTLE, where=sink_writes(fn.name))
        # the flush closes a and c at base+60: the second step's `base` closes, write fails
        response = fn.flush_until(lambda r: r["emitted"] > 0)
        assert (response["emitted"], response["pending"]) == (1, 1)
        # a batch of the shard: d's minute closes at d@185; the second step's base+60 closes
        batch = fn.shards[S0].batch([("d", doc(m + 61, "d")), ("d", doc(m + 185, "d"))])
        assert lh.handler(batch, Context())["batchItemFailures"]  # the sink is still down
        proxy.remove(down)
        assert lh.handler(batch, Context()) == {"batchItemFailures": []}  # Lambda's retry
        assert fn.flush()["pending"] == 0
        assert fn.rows() == {minute(base): 1, minute(base + 60): 2}
