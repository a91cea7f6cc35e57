"""Mutated pipeline files: ``shardline validate`` never prints a traceback, and every
problem it prints names the file and a line of it (``FILE:LINE: path: message``), exit 2.

The files are mutations of ``examples/clickstream/pipeline.yaml`` (the plugin example,
``examples/plugin/``, ships a package and no pipeline file): a key deleted with its block,
a scalar changed to another type, a line of garbage inserted, a key duplicated, a line
indented wrongly, the file truncated, random characters inserted (lone surrogates among
them, which make the file invalid UTF-8). The command runs in this process through
click's ``CliRunner``, which catches what would be a traceback as ``result.exception``.

Pathological inputs (nesting a thousand levels deep, scalars PyYAML cannot construct,
integers too long to print, JMESPath nested past the recursion limit) have tests of their
own at the end; the property leaves them out so that its examples explore everything else.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner
from hypothesis import example, given
from hypothesis import strategies as st

from deploy.cli import main

if TYPE_CHECKING:
    from click.testing import Result

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SEED = (ROOT / "examples" / "clickstream" / "pipeline.yaml").read_text(encoding="utf-8")
LINES = SEED.splitlines(keepends=True)
#: A line that holds a mapping key (maybe as a list item): indent, key, value.
KEY_LINE = re.compile(r"^(?P<indent> *)(?:- +)?(?P<key>[A-Za-z_][\w-]*):(?P<value>.*)$")

REPLACEMENTS = [
    "0", "-1", "3", "65536", "9223372036854775807", "1.5", "-0.0", "1e3", ".inf", "-.inf",
    ".nan", "0x1F", "0o17", "1_000", "true", "false", "yes", "off", "null", "~", "''", '""',
    "x", "'quoted'", "\"a\\tb\"", "[]", "{}", "[1, two]", "{a: 1}", "[[], {}]", "2026-01-01",
    "2026-01-01T00:00:00Z", "12:30", "!!binary aGVsbG8=", "!!str 5", "!!float 1", "&a 1",
    "*undefined", "|\n  block", ">-\n  folded", "${UNSET_VAR_FOR_TEST}", "${X:-}", "$$", "'${'",
]  # fmt: skip


def indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def block(lines: list[str], start: int) -> int:
    """The end (exclusive) of the key at ``start`` with the lines nested under it."""
    own = indent_of(lines[start])
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or indent_of(lines[end]) > own):
        end += 1
    return end


@st.composite
def mutation(draw: st.DrawFn, lines: list[str]) -> list[str]:
    """One mutation of the file's lines."""
    found = [(i, KEY_LINE.match(line)) for i, line in enumerate(lines)]
    keys = [i for i, m in found if m]
    # keys whose value is on their line (a scalar or a flow collection)
    valued = [i for i, m in found if m and m["value"].split("#")[0].strip()]
    kind = draw(
        st.sampled_from(["delete", "retype", "garbage", "duplicate", "indent", "truncate", "chars"])
    )
    if kind == "delete" and keys:
        i = draw(st.sampled_from(keys))
        return lines[:i] + lines[block(lines, i) :]
    if kind == "retype" and valued:
        i = draw(st.sampled_from(valued))
        m = KEY_LINE.match(lines[i])
        assert m is not None
        value = draw(st.sampled_from(REPLACEMENTS) | st.text(max_size=12))
        head = lines[i][: m.start("value")]
        return [*lines[:i], f"{head} {value}\n", *lines[i + 1 :]]
    if kind == "garbage":
        i = draw(st.integers(0, len(lines)))
        text = draw(st.text(max_size=40).map(lambda s: s.replace("\r", "").replace("\n", " ")))
        return [*lines[:i], " " * draw(st.integers(0, 8)) + text + "\n", *lines[i:]]
    if kind == "duplicate" and keys:
        i = draw(st.sampled_from(keys))
        end = block(lines, i) if draw(st.booleans()) else i + 1
        return lines[:end] + lines[i:end] + lines[end:]
    if kind == "indent" and lines:
        i = draw(st.integers(0, len(lines) - 1))
        new = draw(st.sampled_from(["", " ", "  ", "   ", "\t"])) * draw(st.integers(0, 6))
        return [*lines[:i], new + lines[i].lstrip(" "), *lines[i + 1 :]]
    text = "".join(lines)
    if kind == "truncate":
        return [text[: draw(st.integers(0, len(text)))]]
    at = draw(st.integers(0, len(text)))
    chars = draw(st.text(st.characters(exclude_categories=()), min_size=1, max_size=6))
    return [text[:at] + chars + text[at:]]


@st.composite
def mutated_pipelines(draw: st.DrawFn) -> str:
    """The example file after one to three mutations."""
    lines = list(LINES)
    for _ in range(draw(st.integers(1, 3))):
        lines = "".join(draw(mutation(lines))).splitlines(keepends=True)
    return "".join(lines)


def validate(path: Path, text: str) -> Result:
    """``shardline validate PATH`` on the text (UTF-8; lone surrogates as invalid bytes)."""
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    return CliRunner().invoke(main, ["validate", str(path)])


def check_output(path: Path, text: str, result: Result) -> None:
    """No traceback; ok on stdout, or every stderr line ``FILE:LINE: ...`` and exit 2."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output
    if result.exit_code == 0:
        assert result.stdout.startswith(f"{path}: ok (")
        notes = re.compile(rf"^{re.escape(str(path))}:[0-9]+: \S+: note: ")  # not problems
        assert all(notes.match(line) for line in result.stderr.splitlines()), result.stderr
        return
    assert result.exit_code == 2
    assert not result.stdout
    problems = result.stderr.removesuffix("\n").split("\n")  # lines as a terminal shows them
    assert problems != [""]
    last_line = len(text.splitlines()) + 1  # Python splits on every break YAML knows, and more
    where = re.compile(rf"^{re.escape(str(path))}:(?P<line>[0-9]+): \S")
    for problem in problems:
        m = where.match(problem)
        assert m, problem
        assert 1 <= int(m["line"]) <= last_line, problem


@pytest.fixture(scope="module")
def path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mutated") / "pipeline.yaml"


def test_the_example_itself_is_valid(path: Path) -> None:
    result = validate(path, SEED)
    assert result.exit_code == 0, result.output
    check_output(path, SEED, result)


@given(text=mutated_pipelines())
@example(text=SEED.replace("\nstream:\n", "\nstream:\n  name: again\n", 1))  # duplicate key
@example(text=SEED.replace("  orders:\n", "\torders:\n", 1))  # a tab for indentation
@example(text=SEED.replace("    type: dynamodb\n", "      type: dynamodb\n", 1))
@example(text=SEED[: len(SEED) // 2])
@example(text=SEED.replace("clickstream-dlq", "click\udcffstream-dlq"))  # not UTF-8
@example(text=SEED.replace("name: clickstream\n", "name: click\x00stream\n"))
@example(text="\ufeff" + SEED)
@example(text="")
@example(text="- just\n- a list\n")
@example(text=SEED.replace("retention_hours: 24", "retention_hours: [24]"))
@example(text=SEED.replace("max_retries: 3", "max_retries: 99999999999999999999999"))
def test_validate_never_prints_a_traceback_and_names_a_line_of_the_file(
    path: Path, text: str
) -> None:
    check_output(path, text, validate(path, text))


# -- pathological files --------------------------------------------------------------------


def _deep_flow(depth: int) -> str:
    return SEED.replace("retention_hours: 24", f"retention_hours: {'[' * depth}{']' * depth}")


@pytest.mark.parametrize(
    "text",
    [
        _deep_flow(1000),
        SEED.replace("retention_hours: 24", "retention_hours: " + "{a: " * 1000 + "1" + "}" * 1000),
        SEED + "".join(" " * i + "a:\n" for i in range(1000)),
    ],
    ids=["flow-lists", "flow-mappings", "block-mappings"],
)
def test_nesting_a_thousand_levels_deep_is_a_problem_on_its_line(path: Path, text: str) -> None:
    check_output(path, text, validate(path, text))


@pytest.mark.parametrize(
    "value",
    ["!!int x", "!!float x", "!!bool maybe", "!!int ''", "9" * 5000],
    ids=["int-tag", "float-tag", "bool-tag", "empty-int-tag", "5000-digits"],
)
def test_a_scalar_yaml_cannot_construct_is_a_problem_on_its_line(path: Path, value: str) -> None:
    text = SEED.replace("memory_mb: 256", f"memory_mb: {value}")
    check_output(path, text, validate(path, text))


def test_an_integer_too_long_to_print_is_a_problem_on_its_line(path: Path) -> None:
    text = SEED.replace("memory_mb: 256", "memory_mb: 0x" + "f" * 4000)
    check_output(path, text, validate(path, text))


@pytest.mark.parametrize(
    "expr",
    [
        "(" * 1000 + "amount" + ")" * 1000,
        "!" * 1000 + "amount",
        "`" + "[" * 1000 + "]" * 1000 + "`",
    ],
    ids=["parentheses", "negations", "literal"],
)
def test_a_jmespath_expression_nested_too_deep_is_a_problem_on_its_line(
    path: Path, expr: str
) -> None:
    text = SEED.replace("expr: \"amount > `0` || event_type == 'click'\"", f"expr: '{expr}'")
    assert text != SEED
    check_output(path, text, validate(path, text))
