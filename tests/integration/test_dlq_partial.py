"""``shardline dlq redrive`` when the dead-letter queue takes only part of a batch: the
letter of a record that fails again cannot be sent (``SendMessageBatch`` lists it under
``Failed``, retryable, on every attempt), then the redrive ends. The original letter must
stay in the queue (it was not handled: its record is neither written nor dead-lettered
again), the letters handled leave it, and the next redrive handles the one left, once.

The commands run as users run them, against the session moto server through
:class:`tests.faultproxy.FaultProxy` (``--endpoint-url`` names the proxy).
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

import pytest

from tests.faultproxy import FaultProxy, sqs_batch_failures
from tests.integration.test_dlq import Project, _items, _table, event_file, folder

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

pytestmark = pytest.mark.integration

__all__ = ["event_file", "folder"]  # fixtures, defined with the dlq tests


def worse_letter(entry: Mapping[str, Any]) -> bool:
    """A SendMessageBatch entry holding the letter of the order flagged ``worse``."""
    letter = json.loads(entry["MessageBody"])
    return b'"worse"' in base64.b64decode(letter.get("data_base64", ""))


def test_a_letter_whose_new_letter_was_refused_stays_and_is_handled_next_time(
    folder: Path, event_file: Path, aws: Any, moto_endpoint: str, unique: str
) -> None:
    sqs = aws("sqs")
    queue = f"shop-dlq-{unique}"
    sqs.create_queue(QueueName=queue)
    table = _table(aws, f"orders-{unique}")
    shop = Project(folder, moto_endpoint, "shop")
    shop.write(table=table, queue=queue, fail={"bad", "worse"})
    assert shop.run("invoke", shop.file, "--event", str(event_file)).returncode == 0
    assert shop.dlq("ls")[1]["total"] == 4

    shop.write(table=table, queue=queue, fail={"worse"})  # fixed, but for "worse"
    with FaultProxy(moto_endpoint, seed=6) as proxy:
        shop.endpoint = proxy.url
        refused = proxy.inject(sqs_batch_failures(worse_letter), target="SendMessageBatch")
        code, first = shop.dlq("redrive")
        shop.endpoint = moto_endpoint
    assert refused.fired >= 1
    assert code != 0, first  # a letter was not handled: the operator must know
    assert (first["written"], first["dead_again"], first["failed"]) == (3, 0, 1), first

    code, left = shop.dlq("ls")
    assert left["total"] == 1  # the three handled letters left the queue, "worse" did not
    [group] = left["groups"]
    assert group["redrives"] == 0  # the original letter, not a new one
    assert {item["order_id"]["S"] for item in _items(aws, table)} == {"o1", "o2", "o3"}

    code, second = shop.dlq("redrive")
    assert (second["dead_again"], second["failed"]) == (1, 0), second
    code, after = shop.dlq("ls")
    assert after["total"] == 1  # dead-lettered again: its new letter replaced the old one
    assert after["groups"][0]["redrives"] == 1
