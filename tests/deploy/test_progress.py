"""Progress on stderr (deploy.cli.progress): a bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import io

from deploy.cli.progress import PIPED_WIDTH, UnitProgress


class Clock:
    def __init__(self) -> None:
        self.at = 0.0

    def __call__(self) -> float:
        return self.at


class TestPiped:
    def test_one_line_a_second_and_always_the_last(self) -> None:
        """Updates within a second of the last line wait; the final state is printed at
        the end even when it came too soon; no carriage return or control character."""
        out, clock = io.StringIO(), Clock()
        with UnitProgress("replaying price from the archive", stream=out, now=clock) as bar:
            bar.update(1, 10, "objects, 5 records replayed")
            clock.at = 0.5
            bar.update(2, 10, "objects, 9 records replayed")  # too soon: held
            clock.at = 1.2
            bar.update(3, 10, "objects, 14 records replayed")
            clock.at = 1.3
            bar.update(4, 10, "objects, 20 records replayed")  # held, then printed at exit
        assert out.getvalue().splitlines() == [
            "replaying price from the archive: 1/10 objects, 5 records replayed",
            "replaying price from the archive: 3/10 objects, 14 records replayed",
            "replaying price from the archive: 4/10 objects, 20 records replayed",
        ]
        assert "\r" not in out.getvalue()
        assert "\x1b" not in out.getvalue()

    def test_the_last_unit_is_printed_at_once_and_lines_fit_120_columns(self) -> None:
        out, clock = io.StringIO(), Clock()
        with UnitProgress("x" * 200, stream=out, now=clock) as bar:
            bar.update(1, 2, "shards")
            bar.update(2, 2, "shards")  # done: not held back
            assert len(out.getvalue().splitlines()) == 2
        lines = out.getvalue().splitlines()
        assert len(lines) == 2
        assert all(len(line) == PIPED_WIDTH and line.endswith("...") for line in lines)


class TestTerminal:
    def test_a_terminal_gets_rich_s_bar(self) -> None:
        """On a terminal the bar is drawn (with its count), not one line per update."""
        out = io.StringIO()
        with UnitProgress("replaying price from the stream", stream=out, terminal=True) as bar:
            bar.update(1, 2, "shards, 3 records replayed")
            bar.update(2, 2, "shards, 6 records replayed")
        text = out.getvalue()
        assert "\x1b[" in text  # drawn with control sequences, in place
        assert "━" in text  # rich's bar
        assert "2/2" in text
        assert "6 records replayed" in text
