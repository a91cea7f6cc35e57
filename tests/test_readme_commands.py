"""The README's shell commands run as shown: each line of a plain ``` block (a command, with
``\\`` continuations joined) is either run here, from a copy of ``examples/`` in a temporary
folder, offline, and must exit 0, or listed in :data:`SKIPPED` with the reason. A command
added to the README, or changed, is neither until this file says which."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BIN = Path(sys.executable).parent  # this environment's .venv/bin

#: Commands not run here, each with why.
SKIPPED = {
    "make demo": "starts the embedded AWS and runs 20,000 events (minutes); tests/deploy/"
    "test_demo.py runs the demo on fewer",
    "make test": "the whole test suite, which this test is part of",
    ".venv/bin/shardline demo": "what `make demo` runs: minutes, see make demo",
    ".venv/bin/python -m bench handler": "a benchmark: run on demand, never timed in tests",
    ".venv/bin/python -m bench sinks": "a benchmark on the local servers, run on demand",
    ".venv/bin/python -m bench producer": "a benchmark on the local servers, run on demand",
    "make soak": "fault scenarios and 10 minutes of load",
    "shardline produce clickstream-events --file events.jsonl --key user_id": "needs a "
    "running stream (AWS or an endpoint); tests/integration drive produce on moto",
    "shardline produce shop-registry-orders --file orders.jsonl --key order_id --schema "
    "registry:shop/orders --compression zlib": "needs a stream and the registry's schema; "
    "tests/integration/test_glue_registry.py drives produce --schema registry: on moto",
    "shardline run examples/clickstream/pipeline.yaml": "needs a running stream and runs "
    "until stopped; tests/integration drive run on moto",
    "shardline status examples/clickstream/pipeline.yaml": "needs the stream and lease "
    "tables of a run; tests/integration/test_first_hour_cli.py drives status on moto",
    "shardline diff examples/clickstream/pipeline.yaml": "needs AWS (CloudFormation)",
    "shardline deploy examples/clickstream/pipeline.yaml": "needs AWS (CloudFormation, "
    "Lambda); tests/deploy/test_dev.py deploys to moto",
    "shardline destroy examples/clickstream/pipeline.yaml": "needs AWS (a deployed stack)",
    **dict.fromkeys(
        (
            "shardline dlq ls pipeline.yaml",
            "shardline dlq show pipeline.yaml --limit 5",
            "shardline dlq redrive pipeline.yaml --dry-run",
            "shardline dlq redrive pipeline.yaml",
        ),
        "needs a pipeline's dead-letter queues; tests/integration/test_dlq.py drives dlq on moto",
    ),
    "shardline rewind pipeline.yaml --function enrich-and-route --to 2026-05-01T09:00:00Z": (
        "needs a run's checkpoints or a deployed stack; tests/integration/test_rewind.py "
        "drives rewind on moto"
    ),
    "shardline replay pipeline.yaml --function enrich-and-route --since 2026-03-01T10:00 "
    "--until 2026-03-01T12:00 --dry-run": "needs an archive bucket with records; "
    "tests/integration/test_replay.py drives replay on moto",
    "shardline replay pipeline.yaml --function enrich-and-route --since 6h --sinks orders": "needs "
    "an archive bucket and the stores; tests/integration/test_replay.py drives replay on moto",
}

#: Lines a run command must print on stdout.
SHOWN = {
    ".venv/bin/shardline invoke plan.json --function archive-all --event event.json "
    "--sinks stdout": [
        'archive\t{"user_id": "u1", "event_type": "click"}',
        '{"batchItemFailures": []}',
    ],
    ".venv/bin/shardline --help": ["Usage: shardline [OPTIONS] COMMAND [ARGS]..."],
}


def shell_blocks(text: str) -> list[list[str]]:
    """The commands of each plain ``` block (```python and the like are not shell):
    comments cut, ``\\`` continuations joined."""
    blocks: list[list[str]] = []
    current: list[str] | None = None
    other = False  # inside a block with a language
    pending = ""
    for line in text.splitlines():
        if line.startswith("```"):
            if other:
                other = False
            elif current is not None:
                blocks.append(current)
                current = None
            elif line == "```":
                current = []
            else:
                other = True
            continue
        if current is None:
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        command = (pending + line.strip()).split("  #", 1)[0].strip()
        pending = ""
        if command:
            current.append(command)
    return [b for b in blocks if b]


BLOCKS = shell_blocks(README.read_text(encoding="utf-8"))


def test_every_readme_command_is_run_or_skipped_with_a_reason() -> None:
    commands = [c for block in BLOCKS for c in block]
    assert len(commands) > 10, commands
    stale = sorted(set(SKIPPED) - set(commands))
    assert not stale, f"SKIPPED lists commands the README no longer has: {stale}"
    assert not set(SHOWN) - set(commands), "SHOWN lists commands the README no longer has"
    assert not set(SHOWN) & set(SKIPPED)
    run = [c for c in commands if c not in SKIPPED]
    assert any(c.startswith(".venv/bin/shardline validate") for c in run), run


@pytest.mark.parametrize(
    "block",
    [b for b in BLOCKS if any(c not in SKIPPED for c in b)],
    ids=lambda block: next(c for c in block if c not in SKIPPED)[:60],
)
def test_the_readme_blocks_commands_run_as_shown(block: list[str], tmp_path: Path) -> None:
    """Each command not skipped exits 0 (in order, in one folder: later ones read what earlier
    ones wrote) and prints what :data:`SHOWN` says it prints."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SHARDLINE_"))}
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION="us-east-1", COLUMNS="120")  # fmt: skip
    for command in block:
        if command in SKIPPED:
            continue
        line = command.replace(".venv/bin/", f"{BIN}/")
        done = subprocess.run(
            ["bash", "-c", f"set -o pipefail; {line}"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"{command}\nexit {done.returncode}\n{done.stderr}"
        for shown in SHOWN.get(command, ()):
            assert shown in done.stdout.splitlines(), f"{command}: no line {shown!r}\n{done.stdout}"
