"""``python -m bench schema``: the libraries of the ``schema`` step, and the step's cost.

Three parts, all in one process except the import times:

* **JSON Schema validators**: ``jsonschema``, ``fastjsonschema`` and ``jsonschema-rs``
  validating realistic order documents (``examples/contracts/schemas/order.json``, draft
  2020-12: ``$ref`` into ``$defs``, ``enum``, ``pattern``, ``additionalProperties``,
  ``dependentRequired``) in µs/record, valid records (the yes/no check) and invalid ones
  (the first error with its pointer and keyword, what a dead letter needs). Each library's
  verdicts are compared with the expected ones: a library that accepts a record breaking a
  2020-12 keyword does not implement the draft. Import time: a fresh interpreter each,
  median of five.
* **Avro**: ``fastavro.schemaless_reader`` decoding the same orders from Avro binary,
  against ``orjson.loads`` and ``json.loads`` of their JSON.
  The ``schema`` step itself on the same records: ``avro:`` on the Avro binary, and
  ``registry:`` on the binary behind the Glue Schema Registry header, its version already
  in the process's cache (a warm function: the header read, the cache looked up, the
  version checked to be the named schema's); the version comes from an in-process stand-in
  for Glue, asked once, since this part measures the per-record path, not the call.
* **The chain**: the handler bench's chain (``bench.handler.PLAN``: match filter, JMESPath
  filter, set, route) with a ``schema`` step in front (a JSON Schema of its click events)
  against the same chain without it, ``runner.handle(event)`` both (the whole handler path),
  in alternating repeats. Target: at most 1.3x.
"""

from __future__ import annotations

import argparse
import copy
import gc
import io
import json
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["CHAIN_TARGET", "CLICK_SCHEMA", "main", "orders"]

Check = Callable[[Any], bool]
Explain = Callable[[Any], str]
ROOT = Path(__file__).resolve().parent.parent
ORDER_SCHEMA = ROOT / "examples" / "contracts" / "schemas" / "order.json"
ORDER_AVRO = ROOT / "examples" / "contracts" / "schemas" / "order.avsc"
#: Most the chain with validation may take, as a multiple of the chain without.
CHAIN_TARGET = 1.3

#: A draft 2020-12 schema of the handler bench's click events (bench.handler._document).
CLICK_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["event_id", "event_type", "user_id", "amount", "timestamp", "page", "device"],
    "properties": {
        "event_id": {"type": "string", "minLength": 32, "maxLength": 32},
        "event_type": {"enum": ["click", "view", "purchase"]},
        "user_id": {"type": "string", "pattern": "^user-[0-9]{5}$"},
        "amount": {"type": "number", "minimum": 0},
        "timestamp": {"type": "string"},
        "page": {
            "type": "object",
            "required": ["path", "item"],
            "properties": {
                "path": {"type": "string"},
                "item": {"type": "integer", "minimum": 0},
                "referrer": {"type": "string"},
            },
        },
        "device": {"$ref": "#/$defs/device"},
    },
    "$defs": {
        "device": {
            "type": "object",
            "required": ["os", "form"],
            "properties": {
                "os": {"type": "string"},
                "form": {"enum": ["mobile", "desktop"]},
                "locale": {"type": "string"},
                "app_version": {"type": "string"},
            },
        }
    },
}

_BREAKS: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
    ("qty 0 (minimum)", lambda d: d["items"][0].update(qty=0)),
    ("currency CHF (enum)", lambda d: d.update(currency="CHF")),
    ("no total (required)", lambda d: d.pop("total")),
    ("extra field (additionalProperties)", lambda d: d.update(note="x")),
    ("coupon without discount (dependentRequired, 2020-12)", lambda d: d.update(coupon="SPRING")),
]


def orders(n: int, *, seed: int = 7) -> list[dict[str, Any]]:
    """``n`` valid orders of 1-4 items."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        items = [
            {"sku": f"sku-{rng.randrange(10_000)}", "qty": rng.randint(1, 5),
             "price": round(rng.uniform(1, 200), 2)}
            for _ in range(rng.randint(1, 4))
        ]  # fmt: skip
        out.append({
            "order_id": f"o-{i}",
            "customer_id": f"c-{rng.randrange(1000)}",
            "currency": rng.choice(["EUR", "GBP", "USD"]),
            "items": items,
            "total": round(sum(it["qty"] * it["price"] for it in items), 2),
        })  # fmt: skip
    return out


def _invalid(valid: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for i, doc in enumerate(valid):
        name, brk = _BREAKS[i % len(_BREAKS)]
        bad = copy.deepcopy(doc)
        brk(bad)
        out.append((name, bad))
    return out


def _validators(schema: dict[str, Any]) -> dict[str, tuple[Check, Explain]]:
    """library -> (is_valid, first error as 'pointer keyword') for ``schema``."""
    import fastjsonschema  # noqa: PLC0415
    import jsonschema  # noqa: PLC0415
    import jsonschema_rs  # noqa: PLC0415

    from processors.schema import json_pointer  # noqa: PLC0415

    py = jsonschema.Draft202012Validator(schema)

    def py_error(doc: Any) -> str:
        err = next(iter(py.iter_errors(doc)))
        return f"{err.json_path} {err.validator}"

    fast = fastjsonschema.compile(schema)

    def fast_valid(doc: Any) -> bool:
        try:
            fast(doc)
        except fastjsonschema.JsonSchemaValueException:
            return False
        return True

    def fast_error(doc: Any) -> str:
        try:
            fast(doc)
        except fastjsonschema.JsonSchemaValueException as exc:
            return f"{exc.name} {exc.rule}"
        return "(accepted)"

    rs = jsonschema_rs.validator_for(schema)

    def rs_error(doc: Any) -> str:
        err = next(iter(rs.iter_errors(doc)))
        return f"{json_pointer(err.instance_path)} {err.schema_path[-1]}"

    return {
        "jsonschema": (py.is_valid, py_error),
        "fastjsonschema": (fast_valid, fast_error),
        "jsonschema-rs": (rs.is_valid, rs_error),
    }


def _per_record(fn: Callable[[Any], Any], docs: Sequence[Any], repeats: int) -> float:
    """Median µs per record of ``fn`` over ``docs``."""
    times = []
    gc.disable()
    try:
        for _ in range(repeats):
            started = time.perf_counter()
            for doc in docs:
                fn(doc)
            times.append((time.perf_counter() - started) / len(docs) * 1e6)
    finally:
        gc.enable()
    return statistics.median(times)


def _import_ms(module: str, runs: int = 5) -> float:
    code = (
        "import time; t = time.perf_counter(); import "
        + module
        + "; print(time.perf_counter() - t)"
    )
    times = [
        float(subprocess.check_output([sys.executable, "-c", code], text=True)) * 1000
        for _ in range(runs)
    ]
    return statistics.median(times)


def _libraries(n: int, repeats: int) -> None:
    schema = json.loads(ORDER_SCHEMA.read_text(encoding="utf-8"))
    valid = orders(n)
    invalid = _invalid(valid)
    bad_docs = [doc for _, doc in invalid]
    modules = {"jsonschema": "jsonschema", "fastjsonschema": "fastjsonschema",
               "jsonschema-rs": "jsonschema_rs"}  # fmt: skip
    print(f"JSON Schema (draft 2020-12, {ORDER_SCHEMA.relative_to(ROOT)}), {n} valid and "
          f"{n} invalid orders, median of {repeats}")  # fmt: skip
    print(f"  {'library':<15} {'valid µs':>9} {'invalid µs':>11} {'import ms':>10}  verdicts")
    for name, (is_valid, error) in _validators(schema).items():
        wrong_valid = sum(not is_valid(d) for d in valid)
        missed = [why for why, d in invalid if is_valid(d)]
        verdict = (
            "all right"
            if not wrong_valid and not missed
            else (
                f"WRONG: accepts {len(missed)} invalid ({sorted(set(missed))[0]}), "
                f"refuses {wrong_valid} valid"
            )
        )
        ok_us = _per_record(is_valid, valid, repeats)
        bad_us = _per_record(lambda d, e=error, v=is_valid: v(d) or e(d), bad_docs, repeats)
        print(f"  {name:<15} {ok_us:9.2f} {bad_us:11.2f} {_import_ms(modules[name]):10.1f}  "
              f"{verdict}")  # fmt: skip
    examples = {name: error(bad_docs[0]) for name, (_, error) in _validators(schema).items()}
    print(f"  first error of '{invalid[0][0]}': {examples}")


def _avro(n: int, repeats: int) -> None:
    import fastavro  # noqa: PLC0415

    schema = fastavro.parse_schema(json.loads(ORDER_AVRO.read_text(encoding="utf-8")))
    docs = [{**d, "coupon": None} for d in orders(n)]
    blobs = []
    for doc in docs:
        out = io.BytesIO()
        fastavro.schemaless_writer(out, schema, doc)
        blobs.append(out.getvalue())
    texts = [orjson.dumps(d) for d in docs]
    read = fastavro.schemaless_reader
    avro_us = _per_record(lambda b: read(io.BytesIO(b), schema, None), blobs, repeats)
    orjson_us = _per_record(orjson.loads, texts, repeats)
    json_us = _per_record(json.loads, texts, repeats)
    size_avro = statistics.mean(map(len, blobs))
    size_json = statistics.mean(map(len, texts))
    print(f"Avro ({ORDER_AVRO.relative_to(ROOT)}), {n} orders, median of {repeats}")
    print(f"  fastavro schemaless_reader {avro_us:6.2f} µs/record  ({size_avro:.0f} bytes)")
    print(f"  orjson.loads of the JSON   {orjson_us:6.2f} µs/record  ({size_json:.0f} bytes)")
    print(f"  json.loads of the JSON     {json_us:6.2f} µs/record   "
          f"import fastavro {_import_ms('fastavro'):.1f} ms")  # fmt: skip
    avro_step, registry_step = _steps(blobs, repeats)
    print(f"  the step, avro:            {avro_step:6.2f} µs/record")
    print(f"  the step, registry: (warm) {registry_step:6.2f} µs/record  (+18 header bytes)")


class _Glue:
    """Answers ``GetSchemaVersion`` for one version, as Glue does; counts the calls."""

    def __init__(self, version_id: str, definition: str) -> None:
        self.version_id = version_id
        self.definition = definition
        self.calls = 0

    def get_schema_version(self, **_: Any) -> dict[str, Any]:
        self.calls += 1
        return {
            "SchemaVersionId": self.version_id,
            "SchemaArn": "arn:aws:glue:us-east-1:123456789012:schema/bench/orders",
            "VersionNumber": 1,
            "DataFormat": "AVRO",
            "SchemaDefinition": self.definition,
            "Status": "AVAILABLE",
        }


def _steps(blobs: list[bytes], repeats: int) -> tuple[float, float]:
    """µs/record of the ``avro:`` step and of the ``registry:`` step with a warm cache."""
    import uuid  # noqa: PLC0415

    from processors.glue_registry import VERSIONS, encode_header  # noqa: PLC0415
    from processors.schema import Schema  # noqa: PLC0415
    from stream.records import Record  # noqa: PLC0415

    definition = ORDER_AVRO.read_text(encoding="utf-8")
    version_id = str(uuid.uuid4())
    glue = _Glue(version_id, definition)
    by_file = Schema(avro=json.loads(definition))
    by_registry = Schema(registry={"name": "orders", "registry": "bench"}, client=glue)
    header = encode_header(version_id)
    framed = [header + b for b in blobs]
    if by_registry(Record(framed[0], "k", "1")).json != by_file(Record(blobs[0], "k", "1")).json:
        msg = "the registry step and the avro step decoded different documents"
        raise RuntimeError(msg)
    # a decoded record's data is its JSON from then on: a fresh record per call, both sides;
    # single passes in alternation, so that a busy machine slows both alike
    avro_runs, registry_runs = [], []
    for _ in range(repeats):
        avro_runs.append(_per_record(lambda b: by_file(Record(b, "k", "1")), blobs, 1))
        registry_runs.append(_per_record(lambda b: by_registry(Record(b, "k", "1")), framed, 1))
    avro_us, registry_us = statistics.median(avro_runs), statistics.median(registry_runs)
    if glue.calls != 1:
        msg = f"the registry step asked Glue {glue.calls} times for one version"
        raise RuntimeError(msg)
    VERSIONS.clear()
    return avro_us, registry_us


def _chain(n: int, repeats: int) -> float:
    from bench.handler import PLAN, make_event  # noqa: PLC0415
    from stream.runtime import build_runner  # noqa: PLC0415

    checked = copy.deepcopy(PLAN)
    steps = checked["functions"]["f"]["processors"]
    steps.insert(0, {"schema": {"json_schema": CLICK_SCHEMA, "source": "click.json"}})
    runners = {"without": build_runner(PLAN, "f"), "with schema": build_runner(checked, "f")}
    event = make_event(n)
    counts = {name: r.handle(event).written for name, r in runners.items()}
    if len(set(map(str, counts.values()))) != 1:
        msg = f"the two chains wrote different records: {counts}"
        raise RuntimeError(msg)
    times: dict[str, list[float]] = {name: [] for name in runners}
    order = list(runners.items())
    for i in range(repeats):
        for name, runner in order if i % 2 == 0 else order[::-1]:
            started = time.perf_counter()
            runner.handle(event)
            times[name].append((time.perf_counter() - started) / n * 1e6)
    med = {name: statistics.median(values) for name, values in times.items()}
    ratio = med["with schema"] / med["without"]
    print(f"The handler bench's chain, {n} records, {repeats} repeats (median, best)")
    for name, values in times.items():
        print(f"  {name:<12} {med[name]:6.2f} µs/record  (best {min(values):.2f})")
    verdict = "ok" if ratio <= CHAIN_TARGET else "OVER"
    print(f"  ratio        {ratio:.2f}x (target <= {CHAIN_TARGET}x: {verdict})")
    return ratio


def main(argv: Sequence[str] | None = None) -> int:
    """Print the three parts; return 1 when the chain's ratio is over its target."""
    parser = argparse.ArgumentParser(prog="python -m bench schema", description=__doc__)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--only", choices=["libraries", "avro", "chain"])
    args = parser.parse_args(argv)
    if args.only in (None, "libraries"):
        _libraries(args.records, args.repeats)
    if args.only in (None, "avro"):
        _avro(args.records, args.repeats)
    if args.only in (None, "chain"):
        return 0 if _chain(args.records, args.repeats) <= CHAIN_TARGET else 1
    return 0
