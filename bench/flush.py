"""Wall time of a scheduled window flush (issue 16) through the Lambda handler, on a local
moto server: per stream size, the flush that closes quiet shards' windows and the flushes
with nothing due (what almost every scheduled flush is).

Per ``--shards N``: a pipeline with one tumbling window step (``state: dynamodb``,
``quiet_s: 1``) and a ``dynamodb`` sink keyed by ``window_id``, provisioned on the server;
one batch per shard through ``stream.lambda_handler.handler`` opens two windows on it (keys
of its own, so the sink's rows count every window); after 1.5 s every shard is quiet, and
the next flush closes what no other shard's batch closed meanwhile (the cross-shard rule
closes some shards while the batches are still coming: ``closed_by_flush`` says how many
the flush took). Then ``--idle`` flushes with nothing due. ``rows`` checks that every
window came out.

Local moto answers in well under a millisecond: the figures are the handler's and
moto's own time, not DynamoDB's round trips on AWS (each closed shard costs a read of its
item, a conditional commit, the sink's write and the ack).

    python -m bench flush [--shards 1 10 50] [--idle N] [--endpoint-url URL] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z: every window's end is long past
PIPELINE = """\
name: {name}
stream: {{name: {name}, mode: provisioned, shards: {shards}, encryption: none}}
sinks:
  results: {{type: dynamodb, table: {name}-results, key: window_id, mode: latest}}
functions:
  main:
    processors:
      - window:
          key: user
          size_s: 60
          field: ts
          quiet_s: 1
          aggregate: {{n: count}}
    route: [results]
"""
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


class _Context:
    aws_request_id = "bench-flush"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def measure(shards: int, idle: int, client: Callable[[str], Any], folder: str) -> dict[str, Any]:
    """One stream of ``shards`` shards: the closing flush and ``idle`` empty ones."""
    import stream.lambda_handler as lh  # noqa: PLC0415
    from deploy.local.servers import provision  # noqa: PLC0415
    from deploy.pipeline.config import compile_plan, parse_config  # noqa: PLC0415
    from stream.aws import reset_clients  # noqa: PLC0415
    from stream.flush import flush_event  # noqa: PLC0415
    from stream.testing import EventFactory  # noqa: PLC0415

    name = f"bench{uuid.uuid4().hex[:8]}"
    plan = dict(compile_plan(parse_config(PIPELINE.format(name=name, shards=shards), env={})))
    provision(plan, client, shards=shards)  # type: ignore[arg-type]
    path = os.path.join(folder, f"{name}.json")
    with open(path, "wb") as file:
        file.write(orjson.dumps(plan))
    os.environ["SHARDLINE_PIPELINE"] = path
    lh._runner = None  # a new plan: the handler's cold start again
    reset_clients()
    context = _Context()
    for i in range(shards):
        factory = EventFactory(stream=name, shard_id=f"shardId-{i:012d}")
        docs = [
            (f"a{i}", {"user": f"a{i}", "ts": T0 + 1}),
            (f"b{i}", {"user": f"b{i}", "ts": T0 + 2}),
        ]
        lh.handler(dict(factory.batch(docs)), context)
    threading.Event().wait(1.5)  # every shard quiet (quiet_s: 1)
    flush = dict(flush_event("main"))
    started = time.perf_counter()
    closing = lh.handler(flush, context)
    closing_ms = (time.perf_counter() - started) * 1000
    idle_ms = []
    for _ in range(idle):
        started = time.perf_counter()
        answer = lh.handler(flush, context)
        idle_ms.append((time.perf_counter() - started) * 1000)
        if answer["emitted"]:  # type: ignore[typeddict-item]
            msg = f"an idle flush emitted: {answer}"
            raise RuntimeError(msg)
    rows = client("dynamodb").scan(TableName=f"{name}-results", Select="COUNT")["Count"]
    return {
        "shards": shards,
        "rows": rows,
        "windows": 2 * shards,
        "closed_by_flush": closing["emitted"],  # type: ignore[typeddict-item]
        "closing_flush_ms": round(closing_ms, 1),
        "idle_flush_ms_median": round(statistics.median(idle_ms), 1) if idle_ms else None,
        "idle_flush_ms_min": round(min(idle_ms), 1) if idle_ms else None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench flush", description=__doc__)
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--idle", type=int, default=5, help="flushes with nothing due")
    parser.add_argument("--endpoint-url", help="a patched moto server (default: start one)")
    parser.add_argument("--json", action="store_true", help="one JSON document")
    args = parser.parse_args(argv)

    import tempfile  # noqa: PLC0415

    import boto3  # noqa: PLC0415

    server = None
    url = args.endpoint_url
    if url is None:
        from moto.server import ThreadedMotoServer  # noqa: PLC0415

        from deploy.local.motofix import patch_moto  # noqa: PLC0415

        patch_moto()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
    quiet = {"SHARDLINE_LOG_LEVEL": "WARNING", "SHARDLINE_METRICS": "0"}  # stdout: ours
    keys = (*CREDENTIALS, *quiet, "AWS_ENDPOINT_URL", "SHARDLINE_PIPELINE")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({**CREDENTIALS, **quiet, "AWS_ENDPOINT_URL": url})
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )

    def client(service: str) -> Any:
        return session.client(service, endpoint_url=url)

    try:
        with tempfile.TemporaryDirectory() as folder:
            results = [measure(n, args.idle, client, folder) for n in args.shards]
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if server is not None:
            server.stop()
    if args.json:
        print(json.dumps({"results": results}))
        return 0
    print(f"{'shards':>6} {'windows':>7} {'rows':>5} {'closed by flush':>15} "
          f"{'closing ms':>10} {'idle ms (median)':>16}")  # fmt: skip
    for r in results:
        print(f"{r['shards']:>6} {r['windows']:>7} {r['rows']:>5} {r['closed_by_flush']:>15} "
              f"{r['closing_flush_ms']:>10} {r['idle_flush_ms_median']!s:>16}")  # fmt: skip
    return 0
