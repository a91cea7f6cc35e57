"""``shardline dev``: the example deployed to the embedded local AWS and run from its stream.

The stack is real (a moto server and an osmem-server in child processes, as a user gets
them); the records go through the producer, the stream, the local event source mapping with
the deployed mappings' settings, the handler and the real sinks; counts come from the stores.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from click.testing import CliRunner

from deploy.cli import main
from deploy.local.dev import run_dev
from deploy.pipeline.config import load_plan_from_file

if TYPE_CHECKING:
    from collections.abc import Iterator

    from deploy.local.servers import LocalAWS

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).parents[2] / "examples" / "clickstream" / "pipeline.yaml"


#: the event time of the first file's events, epoch ms: the middle of the current minute
#: (near the clock, so that no window is old enough for the quiet-shard rule to close it)
MINUTE = (int(time.time()) // 60 * 60 + 30) * 1000


def events(path: Path, n: int, seed: int, ts: int = MINUTE) -> dict[str, int]:
    """Write ``n`` clickstream events at event time ``ts`` and return what the example should
    make of them (its windowed function's rows apart: see the test)."""
    rng = random.Random(seed)
    expected = {"orders": 0, "search": 0, "archive": n}
    with path.open("wb") as f:
        for i in range(n):
            kind = rng.choice(["click", "view", "purchase"])
            amount = rng.randrange(3) if kind == "purchase" else 0
            user = f"u{rng.randrange(20):03d}"
            doc: dict[str, Any] = {
                "event_id": f"{seed}-{i}", "event_type": kind, "user_id": user, "amount": amount,
                "ts": ts,
            }  # fmt: skip
            if kind == "purchase":
                doc["order_id"] = f"o{seed}-{i}"
            expected["orders"] += kind == "purchase" and amount > 0
            expected["search"] += kind == "click" or (kind == "purchase" and amount > 0)
            f.write(orjson.dumps(doc) + b"\n")
    return expected


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalAWS]:
    from deploy.local.servers import LocalAWS  # noqa: PLC0415

    with LocalAWS() as local, local.activated():
        yield local


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_dev_deploys_runs_and_resumes(stack: LocalAWS, workdir: Path) -> None:
    from stream.aws import reset_clients  # noqa: PLC0415

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
    # every purchase is in one minute, which no watermark has passed: no row yet
    assert first.stored.per_sink == {**expected, "per-minute": 0, "dlq": 0}
    assert {r.name: r.mapping.stats.records_in for r in first.runs} == {
        "enrich-and-route": 300, "purchases-per-minute": 300, "archive-all": 300,
    }  # fmt: skip
    # the mappings ran with the deployed settings
    assert {r.name: r.mapping.settings.size for r in first.runs} == {
        "enrich-and-route": 500, "purchases-per-minute": 500, "archive-all": 100,
    }  # fmt: skip

    more = events(workdir / "second.jsonl", 100, seed=2, ts=MINUTE + 90_000)  # 90 s later
    second = run_dev(
        plan, stack.client, produce=workdir / "second.jsonl", key="user_id", until_idle=1.0,
        in_process=True,
    )  # fmt: skip

    assert second.deployed is not None
    assert second.deployed.status == "unchanged"
    # resumed after the checkpoints: only the new records were read
    assert {r.mapping.stats.records_in for r in second.runs} == {100}
    assert second.stored is not None
    # a later purchase on a shard closes that shard's first minute (its state survived the
    # restart): one row per user of the first file with a purchase, on such a shard
    closed = _closed_minutes(stack, workdir / "first.jsonl", workdir / "second.jsonl")
    assert closed > 0
    assert second.stored.per_sink == {k: expected[k] + more[k] for k in expected} | {
        "per-minute": closed, "dlq": 0,
    }  # fmt: skip


def _closed_minutes(stack: LocalAWS, first: Path, second: Path) -> int:
    """The users with a purchase in ``first`` whose shard has a purchase in ``second``."""
    from stream.producer import ShardMap, hash_key  # noqa: PLC0415

    listed = stack.client("kinesis").list_shards(StreamName="clickstream-events")["Shards"]
    shard_of = ShardMap.from_list_shards(listed).shard_for

    def buyers(path: Path) -> set[str]:
        docs = [orjson.loads(line) for line in path.read_bytes().splitlines()]
        return {d["user_id"] for d in docs if d["event_type"] == "purchase"}

    later = {shard_of(hash_key(user)) for user in buyers(second)}
    return sum(shard_of(hash_key(user)) in later for user in buyers(first))


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


PLAN = """\
name: devtruth
stream:
  name: devtruth-readings
sinks:
  archive:
    type: s3
    bucket: devtruth-archive
    prefix: raw/
functions:
  keep:
    route: [archive]
"""


def _readings(path: Path, n: int) -> None:
    path.write_text("".join(orjson.dumps({"id": i}).decode() + "\n" for i in range(n)))


def _dev(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["dev", "p.yaml", *args])
    return result.exit_code, result.stdout, result.stderr


def _final_row(err: str, function: str) -> list[str]:
    rows = [ln for ln in err.splitlines() if ln.startswith(f"│ {function} ")]
    assert rows, err
    return [cell.strip() for cell in rows[-1].split("│")[1:-1]]


class TestDevSaysWhatItKeeps:
    """Issue 20: what `dev` says about its stack, its producing and its screen is true."""

    def test_an_embedded_stack_says_its_checkpoints_end_and_the_screen_reads_in_a_log(
        self, workdir: Path
    ) -> None:
        """Without `local up` nothing outlives the command, and the output says so; piped,
        the final rate is over the run, tables end with a blank line, URLs stay whole."""
        (workdir / "p.yaml").write_text(PLAN)
        _readings(workdir / "r.jsonl", 200)

        code, _, err = _dev("--produce", "r.jsonl", "--until-idle", "3", "--duration", "120")

        assert code == 0, err
        said = " ".join(err.split())
        assert "for this command only: its stream, stores and checkpoints end with it" in said
        assert "`shardline local up` in this folder to keep them" in said
        assert "checkpoints are kept" not in said
        assert "(Ctrl-C stops; checkpoints end with this command)" in said
        cells = _final_row(err, "keep")
        assert cells[1] == "200", err
        assert float(cells[2].replace(",", "")) > 0, err  # not the last, idle, second's 0
        lines = err.splitlines()
        for i, line in enumerate(lines[:-1]):
            if line.startswith("└"):
                assert lines[i + 1] == "", err  # a blank line before the next title
        uploads = [ln for ln in lines if "to s3://shardline-artifacts" in ln]
        assert len(uploads) == 1, err
        assert uploads[0].endswith(".zip"), err  # the digest is not folded onto a new line

    def test_a_stopped_producer_says_how_much_of_the_file_was_put(self, workdir: Path) -> None:
        """Stopped part way (here by --duration, as by Ctrl-C): N of M, and a rerun resends."""
        (workdir / "p.yaml").write_text(PLAN)
        _readings(workdir / "r.jsonl", 300)

        code, out, err = _dev("--produce", "r.jsonl", "--rate", "20", "--duration", "3", "--json")

        assert code == 0, err
        said = " ".join(err.split())
        part = orjson.loads(out)["produced_part"]
        assert part["records"] == 300
        assert 0 < part["sent"] < 300, part
        assert (
            f"stopped producing: {part['sent']} of the 300 records of r.jsonl were put on the "
            "stream; running dev --produce again puts the file from its first line" in said
        ), said


@pytest.fixture
def kept_stack(workdir: Path) -> Iterator[Path]:
    """`shardline local up` in the work folder, brought down (and the environment restored)
    after the test."""
    import os  # noqa: PLC0415

    from deploy.local.servers import local_down  # noqa: PLC0415

    saved = dict(os.environ)
    up = CliRunner().invoke(main, ["local", "up"])
    assert up.exit_code == 0, up.output
    yield workdir
    local_down()
    os.environ.clear()
    os.environ.update(saved)


def test_with_local_up_dev_keeps_checkpoints_and_says_a_rerun_resends_the_file(
    kept_stack: Path,
) -> None:
    """The kept stack's promise holds: a second run resumes (reads nothing new), and
    `--produce` on it says the file is put again from its start."""
    (kept_stack / "p.yaml").write_text(PLAN)
    _readings(kept_stack / "r.jsonl", 50)

    code, _, err = _dev("--produce", "r.jsonl", "--until-idle", "1", "--duration", "120")

    assert code == 0, err
    said = " ".join(err.split())
    assert "local AWS from `shardline local up`" in said
    assert "running dev again resumes from them" in said
    assert "(Ctrl-C stops; checkpoints are kept)" in said
    assert "--produce puts r.jsonl from its first line again" in said
    assert "for this command only" not in said
    assert _final_row(err, "keep")[1] == "50"

    code, _, err = _dev("--until-idle", "1", "--duration", "120")

    assert code == 0, err
    assert _final_row(err, "keep")[1] == "0", err  # resumed after the 50 records
    assert "--produce puts" not in err
