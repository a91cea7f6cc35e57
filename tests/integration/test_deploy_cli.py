"""``shardline deploy/diff/destroy`` as a user runs them, on a moto server of their own."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from deploy.cli import main

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.integration

PIPELINE = """\
name: deploy-cli
stream: {name: deploy-cli-events}
sinks:
  keep: {type: dynamodb, table: deploy-cli-items, key: id}
functions:
  store:
    batch: {size: 100}
    processors: []
    route: [keep]
"""


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer  # noqa: PLC0415

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def cli(endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The arguments every command gets; the working folder is a fresh one."""
    monkeypatch.chdir(tmp_path)
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    Path("pipeline.yaml").write_text(PIPELINE)
    return ["pipeline.yaml", "--endpoint-url", endpoint, "--region", "us-east-1"]


def cache_option(pytestconfig: pytest.Config) -> list[str]:
    cache = getattr(pytestconfig, "cache", None)
    return ["--cache-dir", str(cache.mkdir("shardline-package"))] if cache is not None else []


def test_deploy_diff_destroy(cli: list[str], pytestconfig: pytest.Config) -> None:
    runner = CliRunner()
    cache = cache_option(pytestconfig)

    first = runner.invoke(main, ["deploy", *cli, *cache])
    assert first.exit_code == 0, first.output
    assert "stack deploy-cli: created" in first.output
    assert "AWS::Lambda::EventSourceMapping" in first.output

    again = runner.invoke(main, ["deploy", *cli, *cache])
    assert again.exit_code == 0, again.output
    assert "stack deploy-cli: no changes" in again.output

    Path("pipeline.yaml").write_text(PIPELINE.replace("size: 100", "size: 50"))
    preview = runner.invoke(main, ["diff", *cli, *cache])
    assert preview.exit_code == 0, preview.output
    assert "stack deploy-cli: previewed" in preview.output
    assert "Modify" in preview.output

    gone = runner.invoke(main, ["destroy", *cli])
    assert gone.exit_code == 0, gone.output
    assert "stack deploy-cli: deleted" in gone.output
    assert "deleted table deploy-cli-items" in gone.output  # empty, so not kept

    twice = runner.invoke(main, ["destroy", *cli])
    assert "stack deploy-cli: not deployed" in twice.output


def test_a_file_that_cannot_deploy_is_one_line_and_exit_1(cli: list[str]) -> None:
    # window state in the process: valid (shardline test runs it), not deployable (a long
    # name and one table with two key schemas, this test's earlier examples, are now
    # validate errors at their lines, exit 2)
    window = (
        "      - window: {key: id, size_s: 60, time: arrival, aggregate: {n: count},"
        " state: memory}\n"
    )
    Path("pipeline.yaml").write_text(
        PIPELINE.replace("    processors: []\n", "    processors:\n" + window)
    )

    result = CliRunner().invoke(main, ["deploy", *cli])

    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: cannot deploy:")
    assert "Traceback" not in result.output
    assert "state: memory" in result.output


def test_no_region_anywhere_names_the_fix(cli: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    args = [a for a in cli if a not in {"--region", "us-east-1"}]

    result = CliRunner().invoke(main, ["destroy", *args])

    assert result.exit_code == 1
    assert "no AWS region: pass --region" in result.output
