"""The producer's pure logic: encoding, limits, the ordering plan, retries, aggregation.

The service is played by ``FakeKinesis``, a small stand-in for the *response shapes* of
PutRecords and ListShards as the API reference documents them (per entry ``SequenceNumber``
and ``ShardId``, or ``ErrorCode`` and ``ErrorMessage``; call errors as botocore's
``ClientError``). It is not a patched boto3: the producer takes any client object, and
this one injects the partial failures that the moto server never produces, checks the
PutRecords limits on every call, and witnesses per-key order. Real-service behaviour is
tested against the moto server in tests/integration/test_producer.py.
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections import Counter
from typing import Any

import orjson
import pytest
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError
from hypothesis import given
from hypothesis import strategies as st

from stream.event import KPL_MAGIC, deaggregate
from stream.producer import (
    MAX_RECORD_BYTES,
    InvalidRecordError,
    Producer,
    RecordTooLargeError,
    ShardMap,
    UndeliveredRecordsError,
    hash_key,
)
from stream.records import Record

THROTTLED = "ProvisionedThroughputExceededException"


def client_error(code: str, status: int = 400) -> ClientError:
    body = {
        "Error": {"Code": code, "Message": f"injected {code}"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(body, "PutRecords")  # type: ignore[arg-type]


def ordinal(data: bytes) -> Any:
    """A record's ordinal within its key ("n"), or its bytes when it is not such JSON."""
    try:
        return orjson.loads(data)["n"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return data


def users_of(entry: dict[str, Any]) -> list[tuple[str, bytes]]:
    """The (partition key, data) user records of a PutRecords entry, aggregates expanded."""
    data, key = entry["Data"], entry["PartitionKey"]
    if not data.startswith(KPL_MAGIC):
        return [(key, data)]
    records = deaggregate(Record(data, key, "1"))
    assert all(r.error is None for r in records), records[0].error
    return [(r.partition_key, r.data) for r in records]


class FakeKinesis:
    """PutRecords and ListShards with injected failures; see the module docstring.

    Args:
        shards: number of shards, hash-key space split evenly (inclusive ends, as AWS).
        entry_fails: (entry, call number) -> an error code to fail that entry, or None.
        call_fails: call number -> an exception to raise for the whole call, or None.
        loses_answer: call number -> whether to apply the call and then raise as if the
            connection dropped before the answer (a lost acknowledgement); the producer
            then sends those records again, and ``stream`` holds every copy.
        ordered: check the order rule on every call (no record of a key sent before every
            earlier one of that key succeeded; at most one record per key per call, in an
            aggregate too, so that resending a call whose answer was lost never writes an
            older record of a key after a newer one).
    """

    def __init__(
        self,
        shards: int = 2,
        entry_fails: Any = None,
        call_fails: Any = None,
        ordered: bool = True,
        max_record: int = MAX_RECORD_BYTES,
        max_request: int = 5 * 1024 * 1024,
        loses_answer: Any = None,
    ) -> None:
        step = 2**128 // shards
        self.ranges = [
            (f"shardId-{i:012d}", i * step, (i + 1) * step - 1 if i < shards - 1 else 2**128 - 1)
            for i in range(shards)
        ]
        self.entry_fails = entry_fails or (lambda entry, call: None)
        self.call_fails = call_fails or (lambda call: None)
        self.loses_answer = loses_answer or (lambda call: False)
        self.stream: list[tuple[str, Any]] = []  # (key, n) of every user record, copies too
        self.unanswered: set[tuple[str, Any]] = set()  # written by calls whose answer was lost
        self.ordered = ordered
        self.max_record = max_record
        self.max_request = max_request
        self.calls: list[list[dict[str, Any]]] = []
        self.targets: list[dict[str, Any]] = []
        self.list_calls = 0
        self.written: dict[tuple[str, int], tuple[str, str, int]] = {}  # (key, n) -> position
        self.done: Counter[str] = Counter()  # per key, records written (they are a prefix)
        self.violations: list[str] = []
        self._seq = 10**20

    def list_shards(self, **kwargs: Any) -> dict[str, Any]:
        self.list_calls += 1
        return {
            "Shards": [
                {
                    "ShardId": shard,
                    "HashKeyRange": {"StartingHashKey": str(lo), "EndingHashKey": str(hi)},
                    "SequenceNumberRange": {"StartingSequenceNumber": "1"},
                }
                for shard, lo, hi in self.ranges
            ]
        }

    def shard_of(self, entry: dict[str, Any]) -> str:
        h = int(entry.get("ExplicitHashKey") or hash_key(entry["PartitionKey"]))
        return next(shard for shard, lo, hi in self.ranges if lo <= h <= hi)

    def put_records(self, *, Records: list[dict[str, Any]], **target: Any) -> dict[str, Any]:
        number = len(self.calls)
        self.calls.append(Records)
        self.targets.append(target)
        self._check_limits(Records)
        self._check_order(Records)
        error = self.call_fails(number)
        if error is not None:
            raise error
        answers: list[dict[str, str]] = []
        for entry in Records:
            code = self.entry_fails(entry, number)
            if code:
                answers.append({"ErrorCode": code, "ErrorMessage": f"injected {code}"})
                continue
            self._seq += 1
            shard = self.shard_of(entry)
            for sub, (key, data) in enumerate(users_of(entry)):
                n = ordinal(data)
                self.stream.append((key, n))
                if (key, n) in self.written:
                    if (key, n) not in self.unanswered:
                        self.violations.append(f"record {key}#{n} written twice")
                else:
                    self.done[key] += 1
                self.written[key, n] = (shard, str(self._seq), sub)
            answers.append({"SequenceNumber": str(self._seq), "ShardId": shard})
        if self.loses_answer(number):
            self.unanswered |= {(k, ordinal(d)) for e in Records for k, d in users_of(e)}
            raise ConnectionClosedError(endpoint_url="https://kinesis.invalid")
        failed = sum(1 for a in answers if "ErrorCode" in a)
        return {"FailedRecordCount": failed, "Records": answers}

    def _check_limits(self, records: list[dict[str, Any]]) -> None:
        sizes = [len(r["Data"]) + len(r["PartitionKey"].encode()) for r in records]
        if len(records) > 500 or sum(sizes) > self.max_request:
            self.violations.append(f"call of {len(records)} entries, {sum(sizes)} bytes")
        if any(size > self.max_record for size in sizes):
            self.violations.append(f"record over {self.max_record} bytes")

    def _check_order(self, records: list[dict[str, Any]]) -> None:
        in_call: set[str] = set()
        for entry in records:
            for key, data in users_of(entry):
                n = ordinal(data)
                if (key, n) in self.written and (key, n) not in self.unanswered:
                    self.violations.append(f"{key}#{n} sent again after it succeeded")
                if self.ordered:
                    if n != self.done[key] and (key, n) not in self.unanswered:
                        self.violations.append(f"{key}#{n} sent before {key}#{self.done[key]}")
                    if key in in_call:
                        self.violations.append(f"two records of key {key} in one call")
                in_call.add(key)


def put_all(producer: Producer, keys: list[str], pad: int = 0) -> list[int]:
    """Put one record per key, data {"k": key, "n": its ordinal within the key}."""
    seen: Counter[str] = Counter()
    out = []
    for key in keys:
        out.append(producer.put({"k": key, "n": seen[key], "pad": "x" * pad}, key))
        seen[key] += 1
    return out


def quiet(**kwargs: Any) -> dict[str, Any]:
    """Producer options for tests: backoff recorded, never slept."""
    return {"sleep": lambda _: None, **kwargs}


class TestPut:
    def test_bytes_str_and_json_are_encoded_and_indices_grow(self):
        fake = FakeKinesis()
        producer = Producer("s", fake, **quiet())
        assert producer.put(b"\x00raw", "a") == 0
        assert producer.put("héllo", "a") == 1
        assert producer.put({"n": 1, "x": [1.5]}, "b") == 2
        producer.flush()
        assert [e["Data"] for e in fake.calls[0]] == [b"\x00raw", b'{"n":1,"x":[1.5]}']
        assert fake.calls[1][0]["Data"] == "héllo".encode()

    def test_data_that_is_not_json_serialisable_is_refused_naming_the_record(self):
        producer = Producer("s", FakeKinesis(), **quiet())
        with pytest.raises(InvalidRecordError, match=r"record 0 \(partition key 'k'\)") as info:
            producer.put({1, 2}, "k")
        assert info.value.index == 0
        assert producer.pending == 0

    @pytest.mark.parametrize("key", ["", "k" * 257, 7])
    def test_a_bad_partition_key_is_refused(self, key):
        with pytest.raises(InvalidRecordError, match="1 to 256 characters"):
            Producer("s", FakeKinesis(), **quiet()).put(b"x", key)

    @pytest.mark.parametrize("ehk", ["-1", "01", "1.5", str(2**128), "x", True])
    def test_a_bad_explicit_hash_key_is_refused(self, ehk):
        with pytest.raises(InvalidRecordError, match="explicit hash key"):
            Producer("s", FakeKinesis(), **quiet()).put(b"x", "k", ehk)

    def test_an_explicit_hash_key_is_sent_as_given(self):
        fake = FakeKinesis()
        producer = Producer("s", fake, **quiet())
        producer.put(b"x", "k", 2**128 - 1)
        (result,) = producer.flush().results
        assert fake.calls[0][0]["ExplicitHashKey"] == str(2**128 - 1)
        assert result.shard_id == "shardId-000000000001"
        assert result.explicit_hash_key == str(2**128 - 1)


class TestLimits:
    def test_a_record_over_1_mib_is_refused_before_any_call_naming_it(self):
        fake = FakeKinesis()
        producer = Producer("s", fake, **quiet())
        producer.put(b"small", "a")
        with pytest.raises(RecordTooLargeError) as info:
            producer.put(b"x" * MAX_RECORD_BYTES, "big-key")
        error = info.value
        assert (error.index, error.partition_key, error.limit) == (1, "big-key", MAX_RECORD_BYTES)
        assert error.size == MAX_RECORD_BYTES + len("big-key")
        assert "record 1 (partition key 'big-key')" in str(error)
        assert f"{MAX_RECORD_BYTES + 7} bytes" in str(error)
        assert fake.calls == []
        result = producer.flush()
        assert [r.index for r in result.results] == [0]
        assert result.ok

    def test_the_record_size_counts_the_partition_key_in_utf8(self):
        producer = Producer("s", FakeKinesis(), **quiet(max_record_bytes=100))
        producer.put(b"x" * 98, "é")  # 98 + 2 bytes: exactly the limit
        with pytest.raises(RecordTooLargeError):
            producer.put(b"x" * 99, "é")

    def test_calls_hold_at_most_500_entries(self):
        fake = FakeKinesis()
        producer = Producer("s", fake, **quiet())
        put_all(producer, [f"k{i}" for i in range(1200)])
        result = producer.flush()
        assert [len(c) for c in fake.calls] == [500, 500, 200]
        assert result.ok
        assert result.stats.calls == 3
        assert result.stats.kinesis_records == 1200

    def test_calls_hold_at_most_5_mib_including_partition_keys(self):
        fake = FakeKinesis()
        producer = Producer("s", fake, **quiet())
        put_all(producer, [f"key-{i:03d}" for i in range(30)], pad=400 * 1024)
        assert producer.flush().ok
        assert [len(c) for c in fake.calls] == [12, 12, 6]
        assert not fake.violations

    def test_limits_that_cannot_hold_one_record_are_refused(self):
        with pytest.raises(ValueError, match="max_request_bytes"):
            Producer("s", max_record_bytes=2048, max_request_bytes=1024)
        with pytest.raises(ValueError, match="max_call_records"):
            Producer("s", max_call_records=501)


class TestOrderingPlan:
    def test_one_entry_per_key_per_call(self):
        fake = FakeKinesis()
        producer = Producer("s", fake, **quiet())
        put_all(producer, list("abc" * 5))
        assert producer.flush().ok
        assert [sorted(e["PartitionKey"] for e in c) for c in fake.calls] == [["a", "b", "c"]] * 5
        assert not fake.violations

    def test_many_keys_still_fill_500_entry_calls(self):
        fake = FakeKinesis()
        producer = Producer("s", fake, **quiet())
        put_all(producer, [f"k{i}" for i in range(1000)] * 2)
        assert producer.flush().ok
        assert [len(c) for c in fake.calls] == [500, 500, 500, 500]
        assert not fake.violations

    def test_without_order_records_of_one_key_share_a_call(self):
        fake = FakeKinesis(ordered=False)
        producer = Producer("s", fake, **quiet(ordered=False))
        put_all(producer, list("abc" * 5))
        assert producer.flush().ok
        assert [len(c) for c in fake.calls] == [15]

    def test_results_come_back_in_put_order_with_positions(self):
        fake = FakeKinesis()
        producer = Producer("s", fake, **quiet())
        put_all(producer, list("abcab"))
        results = producer.flush().results
        assert [r.index for r in results] == [0, 1, 2, 3, 4]
        for r in results:
            n = orjson.loads(r.data)["n"]
            shard, seq, _ = fake.written[r.partition_key, n]
            assert (r.shard_id, r.sequence_number) == (shard, seq)


class TestRetries:
    def test_only_failed_entries_are_sent_again(self):
        failing = {"b", "d"}

        def once(entry, call):
            return THROTTLED if call == 0 and entry["PartitionKey"] in failing else None

        fake = FakeKinesis(entry_fails=once)
        producer = Producer("s", fake, **quiet())
        put_all(producer, list("abcde"))
        result = producer.flush()
        assert result.ok
        assert sorted(e["PartitionKey"] for e in fake.calls[1]) == ["b", "d"]
        assert len(fake.calls) == 2
        assert result.stats.retries == 2
        assert [r.attempts for r in result.results] == [1, 2, 1, 2, 1]

    def test_backoff_is_full_jitter_under_an_exponential_cap(self):
        sleeps: list[float] = []
        fake = FakeKinesis(entry_fails=lambda entry, call: "InternalFailure")
        producer = Producer(
            "s", fake, max_attempts=6, base_delay=0.1, max_delay=0.5, sleep=sleeps.append
        )
        producer.put(b"{}", "k")
        (result,) = producer.flush().results
        assert len(sleeps) == 5
        for n, delay in enumerate(sleeps, start=1):
            assert 0 <= delay <= min(0.5, 0.1 * 2 ** (n - 1))
        assert result.error == "InternalFailure"
        assert result.attempts == 6
        assert not result.permanent
        assert "after 6 attempts" in result.reason

    def test_a_failing_key_holds_back_its_later_records_and_no_other_key(self):
        def bad(entry, call):
            return THROTTLED if entry["PartitionKey"] == "bad" else None

        fake = FakeKinesis(entry_fails=bad)
        producer = Producer("s", fake, **quiet(max_attempts=3))
        put_all(producer, ["bad", "ok", "bad", "ok", "bad"])
        result = producer.flush()
        first, ok1, held1, ok2, held2 = result.results
        assert (first.error, first.attempts) == (THROTTLED, 3)
        assert held1.error == held2.error == "HeldBack"
        assert held1.attempts == 0
        assert "record 0 failed" in held1.reason
        assert ok1.ok
        assert ok2.ok
        sent_bad = [e for c in fake.calls for e in c if e["PartitionKey"] == "bad"]
        assert len(sent_bad) == 3  # record 0, three times; the later ones never
        assert result.stats.failures == 3
        assert [r.index for r in result.failed] == [0, 2, 4]

    def test_held_back_keys_are_released_once_flush_returned_the_failures(self):
        fails = {"on": True}
        fake = FakeKinesis(entry_fails=lambda e, c: THROTTLED if fails["on"] else None)
        producer = Producer("s", fake, **quiet(max_attempts=1))
        producer.put(b'{"n":0}', "k")
        assert not producer.flush().ok
        fails["on"] = False
        producer.put(b'{"n":0}', "k")
        assert producer.flush().ok

    def test_a_throttled_or_5xx_call_is_retried_whole(self):
        fake = FakeKinesis(
            call_fails=lambda n: client_error("InternalFailure", 500) if n == 0 else None
        )
        sleeps: list[float] = []
        producer = Producer("s", fake, sleep=sleeps.append)
        put_all(producer, list("abc"))
        result = producer.flush()
        assert result.ok
        assert len(fake.calls) == 2
        assert len(sleeps) == 1
        assert result.stats.retries == 3

    def test_an_unreachable_endpoint_fails_retryably_after_the_bounded_attempts(self):
        error = EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
        fake = FakeKinesis(call_fails=lambda n: error)
        producer = Producer("s", fake, **quiet(max_attempts=3))
        put_all(producer, list("ab"))
        result = producer.flush()
        assert len(fake.calls) == 3
        assert {(r.error, r.permanent) for r in result.results} == {
            ("EndpointConnectionError", False)
        }
        assert "unreachable" in result.results[0].reason

    def test_records_whose_calls_were_never_answered_fail_saying_they_may_be_written(self):
        fake = FakeKinesis(loses_answer=lambda n: True)
        producer = Producer("s", fake, **quiet(max_attempts=2))
        put_all(producer, list("aab"))
        result = producer.flush()
        assert len(fake.calls) == 2
        assert [(r.error, r.attempts) for r in result.results] == [
            ("ConnectionClosedError", 2),
            ("HeldBack", 0),
            ("ConnectionClosedError", 2),
        ]
        assert "may be in the stream already" in result.results[0].reason
        assert ("a", 0) in fake.stream  # it is

    def test_an_unreachable_endpoint_is_not_tried_again_for_the_later_calls(self):
        error = EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
        fake = FakeKinesis(call_fails=lambda n: error)
        producer = Producer("s", fake, **quiet(max_attempts=3))
        put_all(producer, [f"k{i}" for i in range(1200)])  # three calls' worth
        result = producer.flush()
        assert len(fake.calls) == 3  # the first call's attempts only
        assert len(result.results) == 1200
        assert not any(r.permanent for r in result.results)
        assert Counter(r.error for r in result.results) == {
            "EndpointConnectionError": 500,
            "HeldBack": 700,
        }

    def test_a_missing_stream_fails_everything_permanently_after_one_call(self):
        fake = FakeKinesis(call_fails=lambda n: client_error("ResourceNotFoundException"))
        producer = Producer("nope", fake, **quiet())
        put_all(producer, [f"k{i}" for i in range(1200)])
        result = producer.flush()
        assert len(fake.calls) == 1
        assert len(result.results) == 1200
        assert all(r.permanent and r.error == "ResourceNotFoundException" for r in result.results)
        assert "'nope'" in result.results[0].reason

    def test_put_drains_the_buffer_when_it_is_full_and_flush_returns_everything(self):
        fake = FakeKinesis()
        producer = Producer("s", fake, **quiet(buffer_records=4))
        put_all(producer, [f"k{i}" for i in range(10)])
        assert len(fake.calls) == 2  # sent while putting
        assert producer.pending == 2
        result = producer.flush()
        assert [r.index for r in result.results] == list(range(10))
        assert producer.totals.records == 10

    def test_the_context_manager_flushes_and_raises_with_what_failed(self):
        fake = FakeKinesis(entry_fails=lambda e, c: THROTTLED if e["PartitionKey"] == "x" else None)
        producer = Producer("s", fake, **quiet(max_attempts=2))
        with pytest.raises(UndeliveredRecordsError) as info, producer:
            put_all(producer, ["a", "x", "b"])
        assert [r.partition_key for r in info.value.result.failed] == ["x"]
        assert "put them again" in str(info.value)
        with Producer("s", FakeKinesis(), **quiet()) as producer:
            put_all(producer, ["a"])
        assert producer.totals.records == 1

    def test_an_error_leaving_the_block_is_not_hidden_by_the_failures(self):
        fake = FakeKinesis(entry_fails=lambda e, c: THROTTLED)
        producer = Producer("s", fake, **quiet(max_attempts=1))

        def body():
            with producer:
                put_all(producer, ["a"])
                raise KeyError("boom")

        with pytest.raises(KeyError) as info:
            body()
        assert len(fake.calls) == 1  # what was put is still sent
        assert "1 of 1 records were not delivered" in info.value.__notes__[0]

    def test_a_stream_arn_is_sent_as_stream_arn(self):
        fake = FakeKinesis()
        arn = "arn:aws:kinesis:us-east-1:123456789012:stream/s"
        producer = Producer(arn, fake, **quiet())
        put_all(producer, ["a"])
        assert producer.flush().ok
        assert fake.targets == [{"StreamARN": arn}]


def shard_range(fake: FakeKinesis, shard_id: str) -> tuple[int, int]:
    _, lo, hi = next(r for r in fake.ranges if r[0] == shard_id)
    return lo, hi


class TestAggregation:
    def test_every_user_record_goes_to_the_shard_its_own_key_maps_to(self):
        fake = FakeKinesis(shards=3)
        producer = Producer("s", fake, **quiet(aggregate=True))
        put_all(producer, [f"user-{i % 20}" for i in range(300)])
        result = producer.flush()
        assert result.ok
        assert result.stats.calls == 15  # ordered: one record of each of the 20 keys per call
        assert result.stats.kinesis_records == 45  # one aggregate per shard per call
        for call in fake.calls:
            assert len({fake.shard_of(entry) for entry in call}) == len(call) == 3
            for entry in call:
                shard = fake.shard_of(entry)
                lo, hi = shard_range(fake, shard)
                assert lo <= int(entry["ExplicitHashKey"]) <= hi
                for key, _ in users_of(entry):
                    assert lo <= hash_key(key) <= hi
        by_seq: dict[str, list[int]] = {}
        for r in result.results:
            by_seq.setdefault(r.sequence_number, []).append(r.sub_sequence_number)
        assert all(subs == list(range(len(subs))) for subs in by_seq.values())

    def test_aggregates_stay_within_the_record_size_and_keep_order(self):
        fake = FakeKinesis(max_record=2000, max_request=6000)
        producer = Producer(
            "s", fake, **quiet(aggregate=True, max_record_bytes=2000, max_request_bytes=6000)
        )
        put_all(producer, [f"k{i % 7}" for i in range(400)], pad=20)
        result = producer.flush()
        assert result.ok
        assert not fake.violations
        assert result.stats.kinesis_records > 10
        assert all(len(c) <= 2 for c in fake.calls)  # 7 records a call: one aggregate per shard

    def test_ordered_a_call_holds_one_record_per_key_and_still_packs_many_keys(self):
        """A call whose answer is lost is sent again whole: two records of one key in it
        would write the older one again after the newer one."""
        fake = FakeKinesis(shards=1)
        producer = Producer("s", fake, **quiet(aggregate=True))
        put_all(producer, [f"k{i % 200}" for i in range(400)])
        assert producer.flush().ok
        assert not fake.violations
        assert [[len(users_of(e)) for e in call] for call in fake.calls] == [[200], [200]]

    def test_without_order_records_of_one_key_share_an_aggregate(self):
        fake = FakeKinesis(shards=1, ordered=False)
        producer = Producer("s", fake, **quiet(aggregate=True, ordered=False))
        put_all(producer, ["k"] * 50)
        assert producer.flush().ok
        assert [[len(users_of(e)) for e in call] for call in fake.calls] == [[50]]

    def test_a_lone_record_is_sent_plain(self):
        fake = FakeKinesis()
        producer = Producer("s", fake, **quiet(aggregate=True))
        producer.put(b'{"n":0}', "only")
        (result,) = producer.flush().results
        (entry,) = fake.calls[0]
        assert entry["Data"] == b'{"n":0}'
        assert result.ok
        assert result.sub_sequence_number == 0

    def test_a_record_that_fits_a_record_but_not_an_aggregate_is_sent_plain(self):
        fake = FakeKinesis(max_record=200)
        producer = Producer("s", fake, **quiet(aggregate=True, max_record_bytes=200))
        producer.put(b'{"n":0,"p":"' + b"x" * 170 + b'"}', "k")
        producer.put(b'{"n":1}', "k")
        result = producer.flush()
        assert result.ok
        assert not fake.calls[0][0]["Data"].startswith(KPL_MAGIC)
        assert not fake.violations

    def test_a_missing_stream_fails_every_record_permanently(self):
        class Missing(FakeKinesis):
            def list_shards(self, **kwargs):
                raise client_error("ResourceNotFoundException")

        producer = Producer("gone", Missing(), **quiet(aggregate=True))
        put_all(producer, list("ab"))
        result = producer.flush()
        assert all(r.permanent and r.error == "ResourceNotFoundException" for r in result.results)

    def test_a_result_on_an_unexpected_shard_makes_the_next_flush_list_shards_again(self):
        fake = FakeKinesis(shards=2)
        producer = Producer("s", fake, **quiet(aggregate=True))
        put_all(producer, list("ab"))
        producer.flush()
        put_all(producer, list("ab"))
        producer.flush()
        assert fake.list_calls == 1  # cached
        fake.ranges = [("shardId-000000000009", 0, 2**128 - 1)]  # merged meanwhile
        put_all(producer, list("ab"))
        assert producer.flush().ok
        put_all(producer, list("ab"))
        assert producer.flush().results[0].shard_id == "shardId-000000000009"
        assert fake.list_calls == 2


class TestRecordId:
    def producer(self, fake: FakeKinesis | None = None, **kwargs: Any) -> Producer:
        return Producer("s", fake or FakeKinesis(), **quiet(record_id="rid", **kwargs))

    def test_a_dict_gets_an_id_from_the_producer_id_and_its_index(self):
        producer = self.producer(producer_id="p1")
        producer.put({"v": 1}, "k")
        producer.put({"v": 2}, "k")
        results = producer.flush().results
        assert [orjson.loads(r.data) for r in results] == [
            {"rid": "p1-0", "v": 1},
            {"rid": "p1-1", "v": 2},
        ]
        assert [r.record_id for r in results] == ["p1-0", "p1-1"]

    def test_json_bytes_keep_their_bytes_with_the_field_inserted_first(self):
        producer = self.producer(producer_id="p")
        producer.put(b'  {"v": 1.50, "w": [1, 2]}', "k")
        producer.put("{ }", "k")
        producer.put(b'{"rid": "mine", "v": 3}', "k")
        results = producer.flush().results
        assert [r.data for r in results] == [
            b'  {"rid":"p-0","v": 1.50, "w": [1, 2]}',
            b'{"rid":"p-1" }',
            b'{"rid": "mine", "v": 3}',
        ]
        assert [r.record_id for r in results] == ["p-0", "p-1", "mine"]

    def test_an_id_the_caller_set_is_kept_and_an_integer_one_is_read_as_a_string(self):
        producer = self.producer()
        producer.put({"rid": "order-17", "v": 1}, "k")
        producer.put({"rid": 42}, "k")
        results = producer.flush().results
        assert [r.record_id for r in results] == ["order-17", "42"]
        assert orjson.loads(results[1].data) == {"rid": 42}

    def test_putting_a_result_again_keeps_its_id(self):
        producer = self.producer()
        producer.put({"v": 1}, "k")
        (first,) = producer.flush().results
        producer.put(first.data, first.partition_key)
        (again,) = producer.flush().results
        assert again.record_id == first.record_id
        assert again.data == first.data

    def test_ids_of_two_producers_differ_by_default(self):
        a, b = self.producer(), self.producer()
        assert a.producer_id != b.producer_id
        assert len(a.producer_id) == 16

    def test_the_consumer_reads_the_id_the_producer_gave(self):
        fake = FakeKinesis()
        producer = self.producer(fake, aggregate=True)
        put_all(producer, ["a", "b", "a"])
        results = producer.flush().results
        sent = [data for call in fake.calls for entry in call for _, data in users_of(entry)]
        assert sorted(Record(d, "k", "1").record_id("rid") for d in sent) == sorted(
            r.record_id for r in results
        )

    @pytest.mark.parametrize(
        ("data", "what"),
        [(b"not json", "not JSON"), ([1, 2], "JSON list"), ('"text"', "JSON str")],
    )
    def test_data_that_is_not_a_json_object_is_refused_naming_the_record(self, data, what):
        producer = self.producer()
        with pytest.raises(InvalidRecordError, match=rf"record 0 .*{what}; put a JSON object"):
            producer.put(data, "k")

    @pytest.mark.parametrize("value", ["", None, True, 1.5, [1]])
    def test_a_field_that_holds_no_usable_id_is_refused(self, value):
        producer = self.producer()
        with pytest.raises(InvalidRecordError, match=r"field 'rid' holds .* not a record id"):
            producer.put({"rid": value}, "k")

    def test_the_id_counts_toward_the_record_size(self):
        producer = self.producer(max_record_bytes=20, producer_id="p")
        with pytest.raises(RecordTooLargeError):
            producer.put(b'{"v":"0123456789"}', "k")  # 19 bytes alone, 31 with the id

    def test_without_record_id_the_data_is_sent_as_put(self):
        producer = Producer("s", FakeKinesis(), **quiet())
        producer.put(b'{"v": 1}', "k")
        (result,) = producer.flush().results
        assert (result.data, result.record_id) == (b'{"v": 1}', "")

    def test_an_empty_field_name_is_refused(self):
        with pytest.raises(ValueError, match="record_id must name a JSON field"):
            Producer("s", FakeKinesis(), record_id="")


class TestShardMap:
    def test_closed_shards_are_left_out_and_ranges_are_found_by_their_start(self):
        shards = ShardMap.from_list_shards(
            [
                {
                    "ShardId": "old",
                    "HashKeyRange": {"StartingHashKey": "0"},
                    "SequenceNumberRange": {"EndingSequenceNumber": "9"},
                },
                {"ShardId": "hi", "HashKeyRange": {"StartingHashKey": str(2**127)}},
                {"ShardId": "lo", "HashKeyRange": {"StartingHashKey": "0"}},
            ]
        )
        assert shards.shard_ids == ["lo", "hi"]
        assert shards.shard_for(2**127 - 1) == "lo"
        assert shards.shard_for(2**127) == "hi"
        assert shards.shard_for(2**128 - 1) == "hi"


@given(
    keys=st.lists(st.sampled_from("abcdef"), min_size=1, max_size=60),
    aggregate=st.booleans(),
    ordered=st.booleans(),
    max_attempts=st.integers(1, 4),
    entry_rate=st.floats(0, 0.8),
    call_rate=st.floats(0, 0.3),
    scatter=st.booleans(),
    seed=st.integers(0, 2**32),
)
def test_under_random_failures_order_holds_and_nothing_is_lost_or_sent_twice(
    keys, aggregate, ordered, max_attempts, entry_rate, call_rate, scatter, seed
):
    """With ``scatter``, explicit hash keys send records of one key to different shards."""
    rng = random.Random(seed)
    codes = [THROTTLED, "InternalFailure", "KMSThrottlingException"]

    def entry_fails(entry, call):
        return rng.choice(codes) if rng.random() < entry_rate else None

    def call_fails(call):
        return client_error("ThrottlingException") if rng.random() < call_rate else None

    fake = FakeKinesis(
        shards=3, entry_fails=entry_fails, call_fails=call_fails, ordered=ordered,
        max_record=300, max_request=900,
    )  # fmt: skip
    producer = Producer(
        "s", fake, aggregate=aggregate, ordered=ordered, max_attempts=max_attempts,
        max_record_bytes=300, max_request_bytes=900, sleep=lambda _: None,
    )  # fmt: skip
    seen: Counter[str] = Counter()
    for key in keys:
        ehk = rng.choice([None, "0", str(2**128 - 1)]) if scatter else None
        producer.put({"k": key, "n": seen[key]}, key, ehk)
        seen[key] += 1
    result = producer.flush()

    assert not fake.violations
    assert [r.index for r in result.results] == list(range(len(keys)))
    for r in result.results:
        n = orjson.loads(r.data)["n"]
        written = fake.written.get((r.partition_key, n))
        assert r.ok == (written is not None)
        if written:
            assert (r.shard_id, r.sequence_number, r.sub_sequence_number) == written
        else:
            assert r.error
    assert result.stats.failures == len(result.failed)
    if ordered:  # per key, what was written is a prefix of what was put
        for key in set(keys):
            oks = [r.ok for r in result.results if r.partition_key == key]
            assert oks == sorted(oks, reverse=True)


def test_importing_the_producer_imports_no_client_or_aggregation_library():
    code = (
        "import sys, stream.producer; "
        "print(sorted(m for m in ('boto3', 'botocore', 'aws_kinesis_agg', 'google.protobuf') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert out.stdout.strip() == "[]"


@given(
    keys=st.lists(st.sampled_from("abcdef"), min_size=1, max_size=60),
    aggregate=st.booleans(),
    loss_rate=st.floats(0, 0.6),
    entry_rate=st.floats(0, 0.4),
    seed=st.integers(0, 2**32),
)
def test_lost_answers_leave_copies_but_never_an_older_record_after_a_newer_one(
    keys, aggregate, loss_rate, entry_rate, seed
):
    """The stream, per key, reads 0, 0, 1, 2, 2, ...: copies of a resent call are adjacent."""
    rng = random.Random(seed)

    def entry_fails(entry, call):
        return THROTTLED if rng.random() < entry_rate else None

    fake = FakeKinesis(
        shards=2, entry_fails=entry_fails, loses_answer=lambda call: rng.random() < loss_rate,
        max_record=300, max_request=900,
    )  # fmt: skip
    producer = Producer(
        "s", fake, aggregate=aggregate, max_attempts=50, max_record_bytes=300,
        max_request_bytes=900, sleep=lambda _: None,
    )  # fmt: skip
    seen: Counter[str] = Counter()
    for key in keys:
        producer.put({"k": key, "n": seen[key]}, key)
        seen[key] += 1
    result = producer.flush()

    assert not fake.violations
    assert result.ok
    for key in seen:
        ns = [n for k, n in fake.stream if k == key]
        assert ns == sorted(ns)
        assert list(dict.fromkeys(ns)) == list(range(seen[key]))
