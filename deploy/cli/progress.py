"""Progress of a long command on stderr (``shardline replay``): rich's progress bar when
stderr is a terminal, plain lines otherwise.

A bar redraws itself in place, which a log file or a CI job shows as one line rewritten
with control characters (or not at all). Piped, each update is therefore a line of its
own, at most one a second (and the last one always), cut to 120 columns like the other
commands' piped output.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

__all__ = ["PIPED_WIDTH", "UnitProgress"]

#: Columns of a piped progress line.
PIPED_WIDTH = 120


class UnitProgress:
    """Units done out of a total, with a detail (``3/10 archive objects, 1,200 records``).

    Args:
        label: what is going on (``replaying price from the archive``).
        stream: where to write (default: stderr).
        terminal: draw a bar; default: whether ``stream`` is a terminal.
        every_s: least seconds between two piped lines.
        now: a monotonic clock (injected for tests).
    """

    def __init__(
        self,
        label: str,
        *,
        stream: TextIO | None = None,
        terminal: bool | None = None,
        every_s: float = 1.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self._stream = stream if stream is not None else sys.stderr
        self._terminal = self._stream.isatty() if terminal is None else terminal
        self._every_s = every_s
        self._now = now
        self._last_at: float | None = None
        self._pending = ""  # the latest piped line not written yet
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> UnitProgress:
        if self._terminal:
            from rich.console import Console  # noqa: PLC0415
            from rich.progress import (  # noqa: PLC0415
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            console = Console(file=self._stream, force_terminal=True)
            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=console,
            )  # fmt: skip
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=None, detail="")
        return self

    def update(self, done: int, total: int, detail: str) -> None:
        """``done`` of ``total`` units now, and what they came to (``detail``)."""
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total or None, detail=detail)
            return
        self._pending = f"{self.label}: {done}/{total} {detail}"
        at = self._now()
        if self._last_at is None or at - self._last_at >= self._every_s or done >= total:
            self._flush()
            self._last_at = at

    def _flush(self) -> None:
        if self._pending:
            line = self._pending
            if len(line) > PIPED_WIDTH:
                line = line[: PIPED_WIDTH - 3] + "..."
            self._stream.write(line + "\n")
            self._stream.flush()
            self._pending = ""

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
        else:
            self._flush()  # the last state, even when it came within the second
