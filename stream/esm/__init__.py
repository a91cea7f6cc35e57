"""The local event source mapping: what AWS runs between a stream and a function, run here.

Never in a Lambda package (``shardline package`` leaves this folder out): it is the stand-in for
Lambda's poller when pipelines run on the embedded local AWS or against a real stream with
``shardline run``. :mod:`~stream.esm.mapping` polls shards and invokes; :mod:`~stream.esm.rules`
holds the pure decisions (batching windows, retries, bisection, fair-share leases);
:mod:`~stream.esm.checkpoints` the DynamoDB checkpoint and lease tables;
:mod:`~stream.esm.invoke`, :mod:`~stream.esm.runtime_api` and :mod:`~stream.esm.sandbox` run the
handler in process or in a real Lambda runtime (``awslambdaric``).
"""

__all__: list[str] = []
