"""The CLI's error line for unexpected errors; the traceback only with --debug."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
import pytest
from click.testing import CliRunner

from deploy.cli import main

if TYPE_CHECKING:
    from collections.abc import Iterator


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
