"""The SQS sink's pure logic: bodies, ids, keys, options, and the retry loop's bookkeeping.

The retry loop is driven by a scripted client that answers ``SendMessageBatch`` with the
entry failures moto cannot produce (throttled entries, ``SenderFault: false``). It fakes
failures, never success: that messages really arrive is tested against moto in
``tests/integration/test_sqs_sink.py``.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sinks.base import DeadLetter, Status
from sinks.sqs import (
    SQSSink,
    deduplication_id,
    message_group_id,
    overflow_key,
    record_body,
)
from stream.overlap import WAVE_WIDTH, overlapping
from stream.records import Record

URL = "https://sqs.us-east-1.amazonaws.com/123456789012/dlq"


def letter(seq: int = 1, sub: int = 0, step: str = "sink:orders", **kw: Any) -> DeadLetter:
    rec = Record(
        kw.pop("data", b'{"id": 1}'),
        kw.pop("key", "k"),
        str(4959 + seq),
        sub,
        shard_id="shardId-000000000001",
        event_source_arn="arn:aws:kinesis:us-east-1:1:stream/clicks",
    )
    return DeadLetter(rec, kw.pop("reason", "bad"), "ValidationError", step, "fn", "p", 1.0)


@pytest.fixture(autouse=True)
def in_turn():
    """Scripts answer by call number: the calls go in turn here (stream.overlap off); the
    calls sent at once are tested against moto (tests/integration/test_overlap_sinks.py)."""
    with overlapping(False):
        yield


class Scripted:
    """Answers each ``send_message_batch`` with ``script(call_number, entries)``."""

    def __init__(self, script: Any) -> None:
        self.script = script
        self.calls: list[list[dict[str, Any]]] = []

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> Any:
        self.calls.append(Entries)
        return self.script(len(self.calls), Entries)


def ok(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"Successful": [{"Id": e["Id"]} for e in entries], "Failed": []}


def fail(entry_id: str, code: str, sender: bool) -> dict[str, Any]:
    return {"Id": entry_id, "Code": code, "Message": "no", "SenderFault": sender}


def client_error(code: str, status: int = 400) -> Exception:
    from botocore.exceptions import ClientError  # noqa: PLC0415

    body = {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(body, "SendMessageBatch")  # type: ignore[arg-type]


class TestRecordBody:
    def test_utf8_text_is_sent_as_is(self):
        assert record_body("héllo {}".encode()) == ("héllo {}", False)

    @pytest.mark.parametrize("data", [b"\xff\xfe", b"nul\x00", "\uffff".encode(), b"\x1b[0m"])
    def test_bytes_sqs_rejects_are_sent_as_base64(self, data):
        body, is_base64 = record_body(data)
        assert is_base64
        assert base64.b64decode(body) == data

    @given(st.binary(min_size=1, max_size=200))
    def test_every_body_decodes_back_to_the_data(self, data):
        body, is_base64 = record_body(data)
        assert (base64.b64decode(body) if is_base64 else body.encode()) == data


class TestIds:
    def test_a_valid_partition_key_is_its_own_group(self):
        assert message_group_id("user-42/eu") == "user-42/eu"

    @pytest.mark.parametrize("key", ["with space", "ключ", "x" * 129, ""])
    def test_other_keys_map_to_a_stable_hash_sqs_accepts(self, key):
        group = message_group_id(key)
        assert group == message_group_id(key)
        assert group.startswith("sha256-")
        assert len(group) <= 128

    def test_dedup_ids_are_64_hex_digits_and_differ_by_any_part(self):
        base = deduplication_id("arn", "shard", "1", 0, "fn", "sink:a")
        assert len(base) == 64
        int(base, 16)
        assert deduplication_id("arn", "shard", "1", 0, "fn", "sink:a") == base
        assert deduplication_id("arn", "shard", "1", 1, "fn", "sink:a") != base
        assert deduplication_id("arn", "shard", "1", 0, "fn", "sink:b") != base

    def test_overflow_keys_are_deterministic_and_one_per_letter(self):
        key = overflow_key(letter(), "dl/")
        assert key == overflow_key(letter(reason="other reason"), "dl/")
        assert key.startswith("dl/clicks/shardId-000000000001/4960-0-")
        assert key.endswith(".json")
        assert overflow_key(letter(sub=1), "dl/") != key
        assert overflow_key(letter(step="sink:search"), "dl/") != key


class TestOptions:
    @pytest.mark.parametrize(
        ("queue", "fifo"), [("dlq", False), ("dlq.fifo", True), (URL + ".fifo", True)]
    )
    def test_a_fifo_queue_is_recognised_by_its_name(self, queue, fifo):
        assert SQSSink("dlq", queue=queue).fifo is fifo

    @pytest.mark.parametrize("size", [1023, 2**20 + 1])
    def test_a_message_limit_sqs_cannot_have_is_refused(self, size):
        with pytest.raises(ValueError, match="MaximumMessageSize"):
            SQSSink("dlq", queue="q", max_message_bytes=size)

    def test_zero_attempts_and_an_empty_queue_are_refused(self):
        with pytest.raises(ValueError, match="max_attempts"):
            SQSSink("dlq", queue="q", max_attempts=0)
        with pytest.raises(ValueError, match="queue"):
            SQSSink("dlq", queue="")


class TestMessages:
    def test_fifo_entries_carry_the_key_as_group_and_a_position_hash_as_dedup_id(self):
        client = Scripted(lambda n, entries: ok(entries))
        sink = SQSSink("dlq", queue=URL + ".fifo", client=client)
        sink.write_dead_letters([letter(key="user-1"), letter(key="user-1", reason="again")])
        first, second = client.calls[0]
        assert first["MessageGroupId"] == "user-1"
        assert first["MessageDeduplicationId"] == second["MessageDeduplicationId"]

    def test_standard_entries_have_no_fifo_fields(self):
        client = Scripted(lambda n, entries: ok(entries))
        SQSSink("dlq", queue=URL, client=client).write_dead_letters([letter()])
        assert "MessageGroupId" not in client.calls[0][0]

    def test_attributes_are_cut_and_empty_ones_left_out(self):
        client = Scripted(lambda n, entries: ok(entries))
        long = letter(reason="r" * 1000)
        SQSSink("dlq", queue=URL, client=client).write_dead_letters([long])
        attributes = client.calls[0][0]["MessageAttributes"]
        assert len(attributes["reason"]["StringValue"]) == 256
        assert all(a["StringValue"] for a in attributes.values())
        assert set(attributes) == {"reason", "error", "step", "function", "pipeline", "shard"}


class TestRetries:
    def test_only_failed_entries_are_sent_again_with_jittered_backoff(self):
        def script(n, entries):
            if n == 1:
                return {
                    "Successful": [{"Id": e["Id"]} for e in entries if e["Id"] not in "13"],
                    "Failed": [fail("1", "RequestThrottled", False), fail("3", "X", False)],
                }
            return ok(entries)

        client = Scripted(script)
        pauses: list[float] = []
        sink = SQSSink("dlq", queue=URL, client=client, sleep=pauses.append)
        outcomes = sink.write_dead_letters([letter(i) for i in range(5)])
        assert all(o.ok for o in outcomes)
        assert [[e["Id"] for e in call] for call in client.calls] == [
            ["0", "1", "2", "3", "4"],
            ["1", "3"],
        ]
        assert len(pauses) == 1
        assert 0 <= pauses[0] <= 0.05 * 2

    def test_sender_faults_are_permanent_and_not_retried(self):
        client = Scripted(
            lambda n, entries: {
                "Successful": [{"Id": "0"}],
                "Failed": [fail("1", "InvalidMessageContents", True)],
            }
        )
        outcomes = SQSSink("dlq", queue=URL, client=client).write_dead_letters(
            [letter(1), letter(2)]
        )
        assert outcomes[0].ok
        assert outcomes[1].status is Status.PERMANENT
        assert outcomes[1].error == "InvalidMessageContents"
        assert len(client.calls) == 1

    def test_entries_failing_every_attempt_are_retryable_after_max_attempts(self):
        client = Scripted(
            lambda n, entries: {"Successful": [], "Failed": [fail("0", "InternalError", False)]}
        )
        sink = SQSSink("dlq", queue=URL, client=client, max_attempts=3, sleep=lambda _: None)
        (outcome,) = sink.write_dead_letters([letter()])
        assert outcome.status is Status.RETRYABLE
        assert "after 3 attempts" in outcome.reason
        assert len(client.calls) == 3

    def test_an_entry_in_no_list_is_sent_again(self):
        client = Scripted(lambda n, entries: {"Successful": []} if n == 1 else ok(entries))
        sink = SQSSink("dlq", queue=URL, client=client, sleep=lambda _: None)
        assert sink.write_dead_letters([letter()])[0].ok
        assert len(client.calls) == 2

    @pytest.mark.parametrize(
        ("code", "status", "expected", "calls"),
        [
            ("AWS.SimpleQueueService.RequestThrottled", 400, Status.OK, 2),
            ("InternalFailure", 500, Status.OK, 2),
            # not the message's fault (stream.faults): retryable, and not retried in the sink
            ("AWS.SimpleQueueService.NonExistentQueue", 400, Status.RETRYABLE, 1),
            ("AccessDenied", 403, Status.RETRYABLE, 1),
            ("InvalidParameterValue", 400, Status.PERMANENT, 1),
        ],
    )
    def test_whole_call_errors_are_classified(self, code, status, expected, calls):
        def script(n, entries):
            if n == 1:
                raise client_error(code, status)
            return ok(entries)

        client = Scripted(script)
        sink = SQSSink("dlq", queue=URL, client=client, sleep=lambda _: None)
        (outcome,) = sink.write_dead_letters([letter()])
        assert outcome.status is expected
        assert len(client.calls) == calls

    def test_a_queue_failing_whole_calls_every_attempt_is_not_called_for_later_chunks(self):
        def script(n, entries):
            raise client_error("AWS.SimpleQueueService.RequestThrottled")

        client = Scripted(script)
        sink = SQSSink("dlq", queue=URL, client=client, max_attempts=2, sleep=lambda _: None)
        outcomes = sink.write_dead_letters([letter(i) for i in range(25)])
        assert {o.status for o in outcomes} == {Status.RETRYABLE}
        assert len(client.calls) == 2  # the first chunk's attempts; chunks 2 and 3 wait
        assert [o.error for o in outcomes[10:]] == ["HeldBack"] * 15
        assert "RequestThrottled" in outcomes[24].reason

    def test_a_queue_failing_whole_calls_holds_back_the_waves_after_the_first(self):
        def script(n, entries):
            raise client_error("AWS.SimpleQueueService.RequestThrottled")

        client = Scripted(script)
        sink = SQSSink("dlq", queue=URL, client=client, max_attempts=2, sleep=lambda _: None)
        letters = [letter(i, key=f"k{i}") for i in range(10 * WAVE_WIDTH + 5)]
        with overlapping(True):
            outcomes = sink.write_dead_letters(letters)
        assert {o.status for o in outcomes} == {Status.RETRYABLE}
        assert len(client.calls) == 2 * WAVE_WIDTH  # the first wave's calls, each attempted
        wave = 10 * WAVE_WIDTH
        assert "HeldBack" not in {o.error for o in outcomes[:wave]}
        assert [o.error for o in outcomes[wave:]] == ["HeldBack"] * 5

    def test_entry_failures_do_not_stop_the_later_chunks(self):
        def script(n, entries):
            if n <= 2:  # the first chunk: its first entry fails both attempts
                return {
                    "Successful": [{"Id": e["Id"]} for e in entries[1:]],
                    "Failed": [fail(entries[0]["Id"], "InternalError", sender=False)],
                }
            return ok(entries)

        client = Scripted(script)
        sink = SQSSink("dlq", queue=URL, client=client, max_attempts=2, sleep=lambda _: None)
        outcomes = sink.write_dead_letters([letter(i) for i in range(25)])
        assert [i for i, o in enumerate(outcomes) if not o.ok] == [0]
        assert [len(call) for call in client.calls] == [10, 1, 10, 5]

    def test_calls_hold_at_most_10_entries(self):
        client = Scripted(lambda n, entries: ok(entries))
        SQSSink("dlq", queue=URL, client=client).write_dead_letters([letter(i) for i in range(25)])
        assert [len(call) for call in client.calls] == [10, 10, 5]
