"""``shardline produce`` against a moto server: lines land in order per key, bad lines are
named by number and skipped, and the exit status says so."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from click.testing import CliRunner

from deploy.cli import main
from deploy.local.produce import produce_lines
from stream.event import records_from_event
from tests.faultproxy import THROTTLE, FaultProxy, Request, held_until
from tests.integration.test_producer import lambda_event, make_stream, read_shard

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.integration


@pytest.fixture
def env(moto_endpoint: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": moto_endpoint,
    }


def lines(n: int, keys: int = 7) -> list[bytes]:
    return [orjson.dumps({"user": f"u{i % keys}", "n": i}) for i in range(n)]


def stream_docs(kinesis: Any, stream: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        event = lambda_event(
            stream, shard["ShardId"], read_shard(kinesis, stream, shard["ShardId"])
        )
        out += [(r.partition_key, r.as_dict()) for r in records_from_event(event)]
    return out


class TestProduceCommand:
    def test_valid_lines_land_in_order_per_key_and_bad_lines_are_named(
        self, aws: Any, env: dict[str, str], unique: str, tmp_path: Path
    ):
        kinesis = aws("kinesis")
        stream = make_stream(kinesis, f"in-{unique}")
        body = lines(300)
        body.insert(10, b"not json")  # line 11
        body.insert(20, b'{"n": -1}')  # line 21: no user field
        body.insert(30, b"")  # blank lines are not records and not errors
        (tmp_path / "in.jsonl").write_bytes(b"\n".join(body) + b"\n")
        result = CliRunner(env=env).invoke(
            main, ["produce", stream, "--file", str(tmp_path / "in.jsonl"), "--key", "user"]
        )
        assert result.exit_code == 1, result.output
        assert f"{tmp_path / 'in.jsonl'}:11: skipped:" in result.output
        assert f"{tmp_path / 'in.jsonl'}:21: skipped: no usable partition key field 'user'" in (
            result.output
        )
        assert "300 records written" in result.output
        docs = stream_docs(kinesis, stream)
        assert len(docs) == 300
        assert all(key == doc["user"] for key, doc in docs)
        per_key: dict[str, list[int]] = {}
        for key, doc in docs:
            per_key.setdefault(key, []).append(doc["n"])
        assert all(ns == sorted(ns) for ns in per_key.values())

    def test_aggregated_input_from_stdin_packs_records_and_exits_zero(
        self, aws: Any, env: dict[str, str], unique: str
    ):
        kinesis = aws("kinesis")
        stream = make_stream(kinesis, f"agg-{unique}")
        result = CliRunner(env=env).invoke(
            main,
            ["produce", stream, "--file", "-", "--key", "user", "--aggregate"],
            input=b"\n".join(lines(500, keys=100)),
        )
        assert result.exit_code == 0, result.output
        assert "500 records written" in result.output
        shards = kinesis.list_shards(StreamName=stream)["Shards"]
        kinesis_records = sum(len(read_shard(kinesis, stream, s["ShardId"])) for s in shards)
        assert kinesis_records < 20  # ordered: a call holds one record of each of 100 keys
        assert sorted(doc["n"] for _, doc in stream_docs(kinesis, stream)) == list(range(500))

    def test_record_id_gives_every_line_an_id_and_keeps_one_it_has(
        self, aws: Any, env: dict[str, str], unique: str
    ):
        kinesis = aws("kinesis")
        stream = make_stream(kinesis, f"rid-{unique}")
        body = lines(20)
        body[3] = b'{"user": "u3", "n": 3, "rid": "order-3"}'
        body.insert(5, b'{"user": "u5", "n": 5, "rid": [5]}')  # line 6: no usable id
        result = CliRunner(env=env).invoke(
            main,
            ["produce", stream, "--file", "-", "--key", "user", "--record-id", "rid"],
            input=b"\n".join(body),
        )
        assert result.exit_code == 1, result.output
        assert "-:6: skipped:" in result.output
        assert "field 'rid' holds [5], not a record id" in result.output
        ids = {doc["n"]: doc["rid"] for _, doc in stream_docs(kinesis, stream)}
        assert sorted(ids) == list(range(20))
        assert ids[3] == "order-3"
        assert len(set(ids.values())) == 20

    def test_schema_refuses_lines_that_break_the_contract_by_number_and_exits_one(
        self, aws: Any, env: dict[str, str], unique: str
    ):
        kinesis = aws("kinesis")
        stream = make_stream(kinesis, f"schema-{unique}")
        item = {"sku": "a", "qty": 1, "price": 1.0}
        good = {"order_id": "o-1", "customer_id": "c", "currency": "EUR", "items": [item]}
        body = [orjson.dumps({**good, "order_id": f"o-{n}", "total": 1.0}) for n in range(5)]
        body[2] = orjson.dumps({**good, "total": -1})  # line 3: minimum
        schema = Path(__file__).resolve().parents[2] / "examples/contracts/schemas/order.json"
        result = CliRunner(env=env).invoke(
            main,
            ["produce", stream, "--file", "-", "--schema", str(schema), "--json"],
            input=b"\n".join(body),
        )
        assert result.exit_code == 1, result.output
        assert "-:3: refused: record 2" in result.output
        assert "at /total, keyword minimum" in result.output
        summary = orjson.loads(result.stdout.strip().splitlines()[-1])
        assert [r["line"] for r in summary["refused"]] == [3]
        assert summary["failed"] == []
        assert summary["records"] - summary["failures"] == 4
        assert len(stream_docs(kinesis, stream)) == 4

    def test_a_schema_file_that_is_no_contract_is_a_usage_error(
        self, env: dict[str, str], tmp_path: Path
    ):
        (tmp_path / "order.json").write_text("{")
        result = CliRunner(env=env).invoke(
            main, ["produce", "s", "--file", "-", "--schema", str(tmp_path / "order.json")]
        )
        assert result.exit_code == 2
        assert "is not JSON" in result.output


def entries_of(n: int) -> Callable[[Request], bool]:
    """A PutRecords request of ``n`` entries (JSON protocol)."""

    def match(request: Request) -> bool:
        try:
            return len(orjson.loads(request.body)["Records"]) == n
        except (ValueError, KeyError, TypeError):
            return False

    return match


class TestConcurrentCalls:
    """``produce`` sends the calls of a flush at once (the producer's ``concurrent=True``);
    ``--sequential`` one at a time. Measured: python -m bench producer --keys 2000."""

    @pytest.fixture
    def proxy(self, moto_endpoint: str) -> Iterator[FaultProxy]:
        with FaultProxy(moto_endpoint, seed=11) as p:
            yield p

    def produce(
        self, proxy: FaultProxy, env: dict[str, str], stream: str, body: list[bytes], *args: str
    ) -> Any:
        via_proxy = {**env, "AWS_ENDPOINT_URL": proxy.url}
        return CliRunner(env=via_proxy).invoke(
            main, ["produce", stream, "--file", "-", *args], input=b"\n".join(body)
        )

    def put_records(self, proxy: FaultProxy) -> list[Request]:
        return [r for r in proxy.answered if "PutRecords" in r.headers.get("x-amz-target", "")]

    def test_the_calls_of_a_flush_go_at_once(
        self, aws: Any, env: dict[str, str], unique: str, proxy: FaultProxy
    ):
        kinesis = aws("kinesis")
        stream = make_stream(kinesis, f"wave-{unique}")
        # 600 lines, each its own key (the line number): a call of 500 and one of 100; the
        # first is answered only once the second was, or after 5 s
        proxy.inject(held_until(entries_of(100), 5.0), target="PutRecords", where=entries_of(500))

        result = self.produce(proxy, env, stream, lines(600, keys=600))

        assert result.exit_code == 0, result.output
        assert [entries_of(100)(r) for r in self.put_records(proxy)] == [True, False]
        assert sorted(doc["n"] for _, doc in stream_docs(kinesis, stream)) == list(range(600))

    def test_sequential_sends_one_call_at_a_time(
        self, aws: Any, env: dict[str, str], unique: str, proxy: FaultProxy
    ):
        kinesis = aws("kinesis")
        stream = make_stream(kinesis, f"turn-{unique}")
        proxy.inject(held_until(entries_of(100), 1.0), target="PutRecords", where=entries_of(500))

        result = self.produce(proxy, env, stream, lines(600, keys=600), "--sequential")

        assert result.exit_code == 0, result.output
        assert [entries_of(100)(r) for r in self.put_records(proxy)] == [False, True]
        assert len(stream_docs(kinesis, stream)) == 600

    def test_per_key_order_holds_when_calls_at_once_are_throttled_and_resent(
        self, aws: Any, env: dict[str, str], unique: str, proxy: FaultProxy
    ):
        kinesis = aws("kinesis")
        stream = make_stream(kinesis, f"keys-{unique}")
        throttled = proxy.inject(THROTTLE, probability=0.3, target="PutRecords")

        # 700 keys: more than one call takes, so the calls of a flush go in waves of two
        result = self.produce(proxy, env, stream, lines(3000, keys=700), "--key", "user")

        assert result.exit_code == 0, result.output
        assert throttled.fired > 0
        per_key: dict[str, list[int]] = {}
        for key, doc in stream_docs(kinesis, stream):
            per_key.setdefault(key, []).append(doc["n"])
        assert sum(len(ns) for ns in per_key.values()) == 3000  # a throttle applies nothing
        assert len(per_key) == 700
        assert all(ns == sorted(ns) for ns in per_key.values())


class TestLocalServerUnderCallsAtOnce:
    def test_puts_at_once_into_one_shard_keep_every_record(self, aws: Any, unique: str):
        """moto's Kinesis numbered records without a lock and lost some of the calls at once
        that ``produce`` sends (deploy.local.motofix); the local stack's server keeps all."""
        kinesis = aws("kinesis")
        stream = make_stream(kinesis, f"race-{unique}", shards=1)
        start = threading.Barrier(8)

        def put(t: int) -> list[str]:
            entries = [{"Data": f"{t}-{i}".encode(), "PartitionKey": f"k{i}"} for i in range(500)]
            start.wait(timeout=30)
            answer = kinesis.put_records(StreamName=stream, Records=entries)
            return [r["SequenceNumber"] for r in answer["Records"]]

        with ThreadPoolExecutor(8) as pool:
            numbers = [n for got in pool.map(put, range(8)) for n in got]

        assert len(set(numbers)) == 4000  # no number given twice
        (shard,) = kinesis.list_shards(StreamName=stream)["Shards"]
        assert len(read_shard(kinesis, stream, shard["ShardId"])) == 4000


class _CountingProducer:
    """Stands in for the producer where only the pacing is under test."""

    def __init__(self) -> None:
        self.put_count = 0
        self.totals = None

    def put(self, data: bytes, key: str) -> int:
        self.put_count += 1
        return self.put_count

    def flush(self) -> Any:
        return type("R", (), {"failed": []})()


class TestPacing:
    def test_rate_paces_records_per_second_on_the_injected_clock(self):
        clock = [0.0]
        producer = _CountingProducer()
        report = produce_lines(
            lines(250), producer,  # type: ignore[arg-type]
            rate=100, now=lambda: clock[0],
            sleep=lambda s: clock.__setitem__(0, clock[0] + s),
        )  # fmt: skip
        assert producer.put_count == 250
        assert report.seconds == pytest.approx(2.5)
