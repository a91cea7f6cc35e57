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
