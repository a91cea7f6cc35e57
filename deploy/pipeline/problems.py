"""Problems found in a pipeline file, and the reporter that collects them.

Validation never stops at the first mistake: every check appends a :class:`Problem` to a
:class:`Reporter`, and the caller raises one :class:`ConfigError` carrying all of them, so a
user fixes a file in one round trip instead of one error per run.

A location inside the document is a *path*: a tuple of mapping keys (``str``) and list indexes
(``int``). It prints the way users read it:

>>> format_path(("functions", "enrich", "processors", 3, "route", 0, "to"))
'functions.enrich.processors[3].route[0].to'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from deploy.errors import EXIT_USAGE, DeployError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

Path = tuple[str | int, ...]
"""A location in the document: mapping keys and list indexes from the top."""

TOP_LEVEL = "(top level)"
"""How the document itself is named in a message (the empty path)."""


def format_path(path: Path) -> str:
    """Render a path with dots for keys and ``[i]`` for list indexes.

    >>> format_path(())
    '(top level)'
    >>> format_path(("sinks", "orders", "table"))
    'sinks.orders.table'
    """
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or TOP_LEVEL


@dataclass(frozen=True)
class Problem:
    """One mistake in a pipeline file, located by file, line and path.

    ``str(problem)`` is the line printed for the user: ``FILE:LINE: path: message``, the
    format editors and CI annotators already understand.

    >>> str(Problem("pipeline.yaml", 3, "stream.mode", "expected one of on_demand, provisioned"))
    'pipeline.yaml:3: stream.mode: expected one of on_demand, provisioned'
    """

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.path}: {self.message}"


class ConfigError(DeployError):
    """The pipeline file is invalid; ``errors`` holds every problem found, in line order."""

    exit_code = EXIT_USAGE

    def __init__(self, errors: Iterable[Problem]) -> None:
        self.errors: list[Problem] = list(errors)
        super().__init__("\n".join(str(p) for p in self.errors))


class Reporter:
    """Collects problems for one file, turning document paths into line numbers.

    Args:
        file: the file name as the user gave it; it starts every message.
        lines: line number (1-based) of every mapping key and list item, by path.
    """

    def __init__(self, file: str, lines: Mapping[Path, int]) -> None:
        self.file = file
        self.lines = lines
        self.problems: list[Problem] = []
        #: The document path of every problem of :meth:`error`, as given: what later
        #: checks leave alone (``config._check_builds`` builds only what has none).
        self.paths: list[Path] = []
        #: What the user should know but need not fix (a choice with a cost): printed by
        #: ``validate``, never an error.
        self.notes: list[Problem] = []
        self._silenced: set[Path] = set()

    def line_of(self, path: Path) -> int:
        """The line of ``path``, else of its nearest ancestor that has one, else 1."""
        for end in range(len(path), 0, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return 1

    def error(self, path: Path, message: str, *, at: Path | None = None) -> None:
        """Record a problem at ``path``; ``at`` points the line at a more precise spot."""
        if any(path[:end] in self._silenced for end in range(len(path) + 1)):
            return
        line = self.line_of(at if at is not None else path)
        self.paths.append(path)
        self.problems.append(Problem(self.file, line, format_path(path), message))

    def note(self, path: Path, message: str) -> None:
        """Record a note at ``path``: a consequence of a valid choice, said once."""
        self.notes.append(Problem(self.file, self.line_of(path), format_path(path), message))

    def error_in(self, problem: Problem, path: Path) -> None:
        """Record a problem located in another file (a schema file a step reads), for the
        setting at ``path`` of this one."""
        self.paths.append(path)
        self.problems.append(problem)

    def error_at_line(self, line: int, path: str, message: str) -> None:
        """Record a problem whose location is known only as a line (YAML syntax errors)."""
        self.problems.append(Problem(self.file, line, path, message))

    def silence(self, path: Path) -> None:
        """Drop later problems at ``path`` and below: its value is already reported as broken.

        Used for a value whose ``${VAR}`` could not be resolved, so the user reads
        "OPENSEARCH_URL is not set" once rather than also "expected a URL, got '${...}'".
        """
        self._silenced.add(path)

    def reported_at(self, where: Path, *, container: int) -> bool:
        """Whether a problem was reported at ``where``, inside it, or at one of its
        ancestors at least ``container`` parts long (the list or mapping holding it): its
        normalised value may then be a stand-in, not something to build."""
        return any(
            p[: len(where)] == where or (container <= len(p) < len(where) and where[: len(p)] == p)
            for p in self.paths
        )

    def sorted_problems(self) -> list[Problem]:
        """All problems, in line order (stable, so same-line problems keep check order)."""
        return sorted(self.problems, key=lambda p: p.line)
