"""Benchmarks, run on demand (``python -m bench NAME``), never timed inside the test suite.

* ``handler``: per-record cost of the full Lambda handler path against Powertools'
  ``BatchProcessor`` and a hand-written orjson loop, on the same event in one process.
* ``coldstart``: what a cold start pays for ``stream.lambda_handler`` as deployed (the
  packaged code in a clean interpreter, bare and after Lambda's runtime bootstrap).

See ``bench/README.md`` for how to read the figures.
"""

from __future__ import annotations

__all__: list[str] = []
