"""The worker's clock against Kinesis's: a slow GetRecords answer on a correct clock is no skew
(found in review: it aged fresh records into on-failure)."""

from __future__ import annotations

from email.utils import formatdate
from typing import Any

from tests.stream.test_esm_rules import T0, Clock, FakeKinesis, rig


class SlowKinesis(FakeKinesis):
    """A correct clock; GetRecords answers 3 s after it is sent (throttle retries inside
    botocore, a congested link). Date: when the server answered, on the same clock."""

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:
        self.clock.t += 3.0
        response = super().get_records(ShardIterator, Limit)
        response["ResponseMetadata"] = {
            "HTTPHeaders": {"date": formatdate(self.clock(), usegmt=True)}
        }
        return response


def test_a_slow_answer_on_a_correct_clock_does_not_age_records() -> None:
    clock = Clock()
    kinesis = SlowKinesis(clock)
    r = rig(kinesis=kinesis, clock=clock, max_record_age_s=60)
    put = [kinesis.put("k", {"i": 0}, arrival=T0 - 55)]  # 58 s old when read, on every clock
    r.steps()
    assert r.failures == []
    assert r.invoker.delivered == [put]


class SkewedThenSlow(FakeKinesis):
    """This worker's clock is 10 s ahead of Kinesis's; the second GetRecords answers after
    30 s (a throttled call retried inside botocore)."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.answers = 0

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:
        self.answers += 1
        if self.answers == 2:
            self.clock.t += 30.0
        response = super().get_records(ShardIterator, Limit)
        date = formatdate(self.clock() - 10, usegmt=True)
        response["ResponseMetadata"] = {"HTTPHeaders": {"date": date}}
        return response


def test_a_slow_answer_keeps_the_skew_already_measured() -> None:
    """One slow answer (its Date could be anywhere in 30 s) says nothing about the clock: it
    had reset a measured skew to none (review), and a record 55 s old on Kinesis's clock
    read as 65 s old on this worker's, past ``max_record_age_s``, into on-failure."""
    clock = Clock()
    kinesis = SkewedThenSlow(clock)
    r = rig(kinesis=kinesis, clock=clock, max_record_age_s=60)
    r.steps()  # the first answer: the skew measured
    clock.t += 60.0  # past the idle poll: the next step reads again
    put = [kinesis.put("k", {"i": 0}, arrival=clock() - 10 - 25)]  # 55 s old once answered
    r.steps()
    assert kinesis.answers >= 2
    assert r.failures == []
    assert r.invoker.delivered == [put]
