"""A pipeline author's first hour (issue 20): nothing fails silently.

Each test drives the CLI as a user would (click's CliRunner) on a file of their own: what
used to pass with exit 0 and fail later, or print a raw library message, now says where and
how to fix it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from deploy.cli import main
from tests.deploy import first_hour_plugins

if TYPE_CHECKING:
    from pathlib import Path

IOT = """\
name: iot
stream:
  name: iot-readings
sinks:
  archive:
    type: stdout
  hook:
    type: webhook
    url: ftp://example.com/in
functions:
  convert:
    processors:
      - f2c: {feild: temperature}
      - enrich: {set: {unit: C}}
    route: [archive]
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in a temporary directory, so file names print as the user typed them."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


class TestPluginArguments:
    """Item 2: a plugin's constructor runs at validate, as at a Lambda cold start."""

    @pytest.fixture(autouse=True)
    def plugins(self, monkeypatch: pytest.MonkeyPatch) -> None:
        first_hour_plugins.register(monkeypatch)

    @pytest.mark.parametrize("command", ["validate", "compile", "template"])
    def test_a_step_and_a_sink_that_refuse_their_arguments_are_errors_at_their_lines(
        self, workdir: Path, command: str
    ) -> None:
        """`- f2c: {feild: ...}` is reported at the step's line, the bad sink at its own."""
        (workdir / "iot.yaml").write_text(IOT, encoding="utf-8")

        code, out, err = _cli(command, "iot.yaml")

        assert code == 2, (out, err)
        assert out == ""
        lines = err.splitlines()
        assert lines[0].startswith("iot.yaml:7: sinks.hook: sink 'hook' fails to start: "), err
        assert (
            "ValueError: webhook.url must be an http(s) URL, got 'ftp://example.com/in'"
            in (lines[0])
        )
        assert lines[1].startswith(
            "iot.yaml:13: functions.convert.processors[0]: processor 'f2c' fails to start: "
            "TypeError: "
        ), err
        assert "unexpected keyword argument 'feild'" in lines[1]
        assert len(lines) == 2, err

    def test_a_used_sink_failing_is_said_once_and_good_arguments_pass(self, workdir: Path) -> None:
        """A sink that two functions use is one error; fixed arguments validate."""
        text = IOT.replace("route: [archive]", "route: [archive, hook]") + (
            "  copy:\n    route: [hook]\n"
        )
        (workdir / "iot.yaml").write_text(text, encoding="utf-8")
        code, _, err = _cli("validate", "iot.yaml")
        assert code == 2
        assert err.count("sinks.hook:") == 1, err

        fixed = IOT.replace("feild", "field").replace("ftp://", "https://")
        (workdir / "iot.yaml").write_text(fixed, encoding="utf-8")
        code, out, err = _cli("validate", "iot.yaml")
        assert code == 0, err
        assert out == "iot.yaml: ok (1 function, 2 sinks)\n"

    def test_run_refuses_a_step_that_would_fail_at_init_before_reading(self, workdir: Path) -> None:
        """`run` says why on screen and exits non-zero, instead of failing every batch."""
        (workdir / "iot.yaml").write_text(IOT, encoding="utf-8")

        code, _, err = _cli("run", "iot.yaml", "--in-process", "--duration", "1")

        assert code == 2, err
        assert "iot.yaml:13: functions.convert.processors[0]: processor 'f2c' fails" in err
