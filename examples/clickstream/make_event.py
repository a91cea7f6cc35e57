"""Make ``event.json``: a Lambda Kinesis event of the clickstream example.

A few hundred records from one shard: clicks, views and purchases of 40 users, a second apart
in event time (`ts`, which the windowed function reads), some of them
KPL-aggregated, and a few malformed ones (not JSON, JSON that is not an object, a corrupt
aggregate) that must end in the dead-letter sink with their reason. Seeded, so the file is
the same every time::

    python examples/clickstream/make_event.py > examples/clickstream/event.json
"""

from __future__ import annotations

import random
import sys

import orjson

from stream.testing import EventFactory, encode_aggregate


def make(n: int = 300, seed: int = 7, day: str = "2026-03-01") -> dict:
    """``n`` records, the same for a seed; their event times on ``day`` (a benchmark that
    sends the batch again takes the next day, so its records open new windows rather than
    come late to the closed ones)."""
    rng = random.Random(seed)
    f = EventFactory(stream="clickstream-events", shard_id="shardId-000000000000")
    entries = []
    i = 0

    def doc() -> dict:
        nonlocal i
        i += 1
        kind = rng.choices(["click", "view", "purchase"], weights=[5, 3, 2])[0]
        user = f"u{rng.randrange(40):03d}"
        body = {
            "event_id": f"e{i:05d}",
            "event_type": kind,
            "user_id": user,
            "ts": f"{day}T12:{i // 60 % 60:02d}:{i % 60:02d}Z",  # a second apart
            "page": rng.choice(["/", "/shoes", "/bags", "/cart", "/checkout"]),
            "amount": round(rng.uniform(5, 300), 2) if kind == "purchase" else 0,
        }
        if kind == "purchase":
            body["order_id"] = f"o{i:05d}"
            if rng.random() < 0.1:
                body["amount"] = 0  # a free sample: the expr filter drops it
        return body

    while i < n:
        roll = rng.random()
        if roll < 0.1:
            items = [
                (d["user_id"], orjson.dumps(d)) for d in (doc() for _ in range(rng.randint(2, 6)))
            ]
            entries.append(f.aggregate(items))
        elif roll < 0.12:
            entries.append(f.raw(b"GET /index.html HTTP/1.1", "malformed"))
            i += 1
        elif roll < 0.13:
            entries.append(f.raw(b'["not", "an", "object"]', "malformed"))
            i += 1
        else:
            d = doc()
            entries.append(f.record(d, d["user_id"]))
    blob = encode_aggregate([("u001", b'{"event_type": "click"}')])
    corrupt = f.raw(blob[:-2] + b"\x00\x00", "u001")
    entries.insert(len(entries) // 2, corrupt)
    return f.event(entries)


if __name__ == "__main__":
    sys.stdout.buffer.write(orjson.dumps(make(), option=orjson.OPT_INDENT_2) + b"\n")
