"""The CLI's error lines, ours (a ShardlineError) and unexpected ones; --debug shows tracebacks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
import pytest
from click.testing import CliRunner

from deploy.cli import main

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def boom() -> Iterator[None]:
    """A command of the group that fails the way a bug or an AWS surprise would."""

    @click.command("boom")
    def command() -> None:
        msg = "the table vanished."
        raise RuntimeError(msg)

    main.add_command(command)
    yield
    main.commands.pop("boom")


@pytest.mark.usefixtures("boom")
def test_an_unexpected_error_is_one_line_and_exit_1() -> None:
    result = CliRunner().invoke(main, ["boom"])

    assert result.exit_code == 1
    assert result.output == (
        "error: RuntimeError: the table vanished "
        "(`shardline --debug boom ...` shows the traceback)\n"
    )


@pytest.mark.usefixtures("boom")
def test_debug_lets_the_traceback_through() -> None:
    result = CliRunner().invoke(main, ["--debug", "boom"])

    assert isinstance(result.exception, RuntimeError)


@pytest.fixture
def raising() -> Iterator[list[BaseException]]:
    """A command of the group that raises what the test puts in the list."""
    errors: list[BaseException] = []

    @click.command("raising")
    def command() -> None:
        raise errors[0]

    main.add_command(command)
    yield errors
    main.commands.pop("raising")


def test_one_of_our_errors_is_error_and_its_message_exit_1(raising: list[BaseException]) -> None:
    """A ShardlineError is ours: its message already names the cause and the fix."""
    from stream.exceptions import ShardlineError  # noqa: PLC0415

    raising.append(ShardlineError("the stream 'orders' is not there: deploy it first"))
    result = CliRunner().invoke(main, ["raising"])

    assert result.exit_code == 1
    assert result.output == "error: the stream 'orders' is not there: deploy it first\n"
    assert "Traceback" not in result.output


def test_our_error_carries_its_exit_status(raising: list[BaseException]) -> None:
    """A usage error of ours (a RunError: no such function) exits 2, as click's do."""
    from deploy.local.run import RunError  # noqa: PLC0415

    raising.append(RunError("no function 'x' in the plan (known: f)"))
    result = CliRunner().invoke(main, ["raising"])

    assert result.exit_code == 2
    assert result.output == "error: no function 'x' in the plan (known: f)\n"


def test_a_package_root_is_caught_too(raising: list[BaseException]) -> None:
    """Every package's root derives from ShardlineError, so the group catches each."""
    from processors.errors import ProcessorError  # noqa: PLC0415
    from sinks.base import SinkError  # noqa: PLC0415

    for error in (ProcessorError("bad step"), SinkError("bad sink")):
        raising[:] = [error]
        result = CliRunner().invoke(main, ["raising"])
        assert (result.exit_code, result.output) == (1, f"error: {error}\n")


def test_a_key_error_is_a_bug_not_a_user_error(raising: list[BaseException]) -> None:
    """A KeyError is not swallowed as if the user were at fault: it takes the unexpected
    path, naming its class and pointing at --debug for the traceback."""
    raising.append(KeyError("functions"))
    result = CliRunner().invoke(main, ["raising"])

    assert result.exit_code == 1
    assert result.output == (
        "error: KeyError: 'functions' (`shardline --debug raising ...` shows the traceback)\n"
    )


def test_debug_shows_the_traceback_of_our_errors_too(raising: list[BaseException]) -> None:
    from stream.exceptions import ShardlineError  # noqa: PLC0415

    raising.append(ShardlineError("no"))
    result = CliRunner().invoke(main, ["--debug", "raising"])

    assert isinstance(result.exception, ShardlineError)


def test_invoke_with_a_hand_edited_plan_reports_the_bug_not_the_file(tmp_path: Path) -> None:
    """A plan missing a key the runtime needs is not "the user's input": before, `invoke`
    caught every KeyError and printed it as `FILE: nowhere`; now it is unexpected."""
    import json  # noqa: PLC0415

    from stream.plan import PLAN_VERSION  # noqa: PLC0415

    plan = {
        "version": PLAN_VERSION, "name": "p", "sinks": {},
        "functions": {"f": {"processors": [], "route": ["nowhere"]}},
    }  # fmt: skip
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    (tmp_path / "event.json").write_text(json.dumps({"Records": []}))

    result = CliRunner().invoke(
        main,
        ["invoke", str(tmp_path / "plan.json"), "--event", str(tmp_path / "event.json")],
    )

    assert result.exit_code == 1
    assert result.output.startswith("error: KeyError: 'nowhere'"), result.output
    assert "shardline --debug invoke" in result.output


def test_invoke_names_the_file_when_the_plan_has_no_such_function(tmp_path: Path) -> None:
    """The plan's fault, worded as before: the file first, the known functions."""
    import json  # noqa: PLC0415

    from stream.plan import PLAN_VERSION  # noqa: PLC0415

    plan = {
        "version": PLAN_VERSION, "name": "p", "sinks": {},
        "functions": {"f": {"processors": []}},
    }  # fmt: skip
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    (tmp_path / "event.json").write_text(json.dumps({"Records": []}))

    result = CliRunner().invoke(
        main,
        ["invoke", str(tmp_path / "plan.json"), "--function", "g",
         "--event", str(tmp_path / "event.json")],
    )  # fmt: skip

    assert result.exit_code == 1
    assert result.output == f"{tmp_path / 'plan.json'}: no function 'g' in the plan (known: f)\n"
