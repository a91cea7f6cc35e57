"""``shardline dev``: the example deployed to the embedded local AWS and run from its stream.

The stack is real (a moto server and an osmem-server in child processes, as a user gets
them); the records go through the producer, the stream, the local event source mapping with
the deployed mappings' settings, the handler and the real sinks; counts come from the stores.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from click.testing import CliRunner

from deploy.cli import main
from deploy.config import load_plan_from_file
from deploy.dev import run_dev

if TYPE_CHECKING:
    from collections.abc import Iterator

    from deploy.local import LocalAWS

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).parents[2] / "examples" / "clickstream" / "pipeline.yaml"


def events(path: Path, n: int, seed: int) -> dict[str, int]:
    """Write ``n`` clickstream events and return what the example should make of them."""
    rng = random.Random(seed)
    expected = {"orders": 0, "search": 0, "archive": n}
    with path.open("wb") as f:
        for i in range(n):
            kind = rng.choice(["click", "view", "purchase"])
            amount = rng.randrange(3) if kind == "purchase" else 0
            user = f"u{rng.randrange(20):03d}"
            doc: dict[str, Any] = {
                "event_id": f"{seed}-{i}", "event_type": kind, "user_id": user, "amount": amount
            }  # fmt: skip
            if kind == "purchase":
                doc["order_id"] = f"o{seed}-{i}"
            expected["orders"] += kind == "purchase" and amount > 0
            expected["search"] += kind == "click" or (kind == "purchase" and amount > 0)
            f.write(orjson.dumps(doc) + b"\n")
    return expected


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalAWS]:
    from deploy.local import LocalAWS  # noqa: PLC0415

    with LocalAWS() as local, local.activated():
        yield local


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_dev_deploys_runs_and_resumes(stack: LocalAWS, workdir: Path) -> None:
    from stream.clients import reset_clients  # noqa: PLC0415

    reset_clients()
    plan = load_plan_from_file(EXAMPLE)
    expected = events(workdir / "first.jsonl", 300, seed=1)

    first = run_dev(
        plan, stack.client, produce=workdir / "first.jsonl", key="user_id", until_idle=1.0,
        in_process=True,
    )  # fmt: skip

    assert first.deployed is not None
    assert first.deployed.status == "created"
    assert first.stored is not None
    assert first.stored.per_sink == {**expected, "dlq": 0}
    assert {r.name: r.mapping.stats.records_in for r in first.runs} == {
        "enrich-and-route": 300, "archive-all": 300,
    }  # fmt: skip
    # the mappings ran with the deployed settings
    assert {r.name: r.mapping.settings.size for r in first.runs} == {
        "enrich-and-route": 500, "archive-all": 100,
    }  # fmt: skip

    more = events(workdir / "second.jsonl", 100, seed=2)
    second = run_dev(
        plan, stack.client, produce=workdir / "second.jsonl", key="user_id", until_idle=1.0,
        in_process=True,
    )  # fmt: skip

    assert second.deployed is not None
    assert second.deployed.status == "unchanged"
    # resumed after the checkpoints: only the new records were read
    assert {r.mapping.stats.records_in for r in second.runs} == {100}
    assert second.stored is not None
    assert second.stored.per_sink == {k: expected[k] + more[k] for k in expected} | {"dlq": 0}


def test_dev_command_runs_the_functions_in_lambda_runtimes(workdir: Path) -> None:
    """The command starts its own stack, shows the table, reads the stores back."""
    events(workdir / "events.jsonl", 120, seed=3)

    result = CliRunner().invoke(
        main,
        ["dev", str(EXAMPLE), "--produce", "events.jsonl", "--key", "user_id",
         "--until-idle", "1", "--duration", "120"],
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert "│ archive" in result.output
    archive = [line for line in result.output.splitlines() if line.startswith("│ archive ")]
    assert archive, result.output
    assert archive[0].split("│")[2].strip() == "120", result.output
    assert (workdir / ".shardline" / "logs" / "archive-all.log").stat().st_size > 0
