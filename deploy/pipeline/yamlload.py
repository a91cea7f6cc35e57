"""Safe YAML loading that remembers the line of every key and list item.

PyYAML's loaders throw line numbers away once values are built, yet every validation message
must name a line. So the file is *composed* into nodes with a ``SafeLoader`` (no arbitrary
objects, no code), and the node tree is turned into plain dicts, lists and scalars here, with
a side table ``{path: line}``. While walking, this module also:

- rejects duplicate keys in one mapping (PyYAML silently keeps the last one);
- supports ``<<`` merge keys and anchors, and rejects recursive aliases;
- interpolates ``${VAR}`` in string values (see :mod:`deploy.pipeline.interpolate`); a plain
  (unquoted) value is re-read after interpolation, so ``shards: ${SHARDS:-2}`` is the integer 2
  while ``"${SHARDS:-2}"`` stays a string;
- keeps YAML timestamps as the text written (the plan is JSON) and mapping keys as their
  source text (``on:`` is the key ``"on"``, not ``True``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import yaml

from deploy.pipeline.interpolate import interpolate
from deploy.pipeline.problems import format_path

if TYPE_CHECKING:
    from collections.abc import Mapping

    from deploy.pipeline.problems import Path, Reporter

_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no type hints
    """SafeLoader whose timestamps stay strings: ISO text is what the JSON plan carries."""


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_str)


def syntax_message(problem: str, mark: Any) -> str:
    """PyYAML's problem in the user's terms: the column, what is wrong and the fix.

    >>> class Mark:
    ...     line, column = 2, 0
    >>> syntax_message("found character '\\t' that cannot start any token", Mark())
    'column 1: a tab: YAML indents with spaces only; replace the tab with spaces'
    """
    column = mark.column + 1 if mark is not None else 1
    if "'\\t'" in problem or "\t" in problem:
        return f"column {column}: a tab: YAML indents with spaces only; replace the tab with spaces"
    if problem.startswith("mapping values are not allowed"):
        return (
            f"column {column}: unexpected ':' here: this line is indented deeper than the key "
            "above it allows (line it up with its siblings), or a value holds ': ' (quote it)"
        )
    if problem.startswith("expected <block end>"):
        return (
            f"column {column}: the indentation matches no enclosing level: line this up with "
            "the keys (or '- ' items) it belongs with, using spaces"
        )
    if problem.startswith("but found another document"):
        return "a second document ('---'): a pipeline file holds one; remove it or split the file"
    if problem.startswith("could not find expected ':'"):
        return (
            f"column {column}: expected 'key: value' (a ':' is missing, or a quote is not closed)"
        )
    return f"column {column}: {problem}"


def load_yaml(text: str, reporter: Reporter, lines: dict[Path, int], env: Mapping[str, str]) -> Any:
    """Parse one YAML document into plain values, filling ``lines`` and reporting problems.

    Returns ``None`` for an empty document or when the YAML itself is broken (reported as
    ``FILE:LINE: syntax: <problem>``).
    """
    try:
        loader = _Loader(text)  # the reader checks the characters of the whole text here
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        reporter.error_at_line(line, "syntax", f"{exc.reason} (character {exc.character:#x})")
        return None
    try:
        node = loader.get_single_node()
        return None if node is None else _Builder(loader, reporter, lines, env).build(node, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        line = mark.line + 1 if mark else 1
        context, at = exc.context or "", exc.context_mark
        if context.startswith("while scanning a quoted scalar") and at is not None:
            line, problem = at.line + 1, f"the quote at column {at.column + 1} is never closed"
            reporter.error_at_line(line, "syntax", f"{problem}: close it on this line")
            return None
        reporter.error_at_line(line, "syntax", syntax_message(problem, mark))
        return None
    except RecursionError:  # PyYAML's composer recurses per level of nesting
        reporter.error_at_line(loader.line + 1, "syntax", "nested too deeply")
        return None
    finally:
        loader.dispose()


class _Builder:
    """Walks composed nodes into Python values; one per document."""

    def __init__(
        self, loader: _Loader, reporter: Reporter, lines: dict[Path, int], env: Mapping[str, str]
    ) -> None:
        self.loader = loader
        self.reporter = reporter
        self.lines = lines
        self.env = env
        self._active: set[int] = set()  # collections being built: an alias to one recurses

    def build(self, node: yaml.Node, path: Path) -> Any:
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        if id(node) in self._active:
            self._bad(path, "recursive alias: a collection cannot contain itself")
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return self._sequence(node, path)
            return self._mapping(node, path)
        finally:
            self._active.discard(id(node))

    def _sequence(self, node: yaml.SequenceNode, path: Path) -> list[Any] | None:
        if node.tag != _SEQ:
            self._bad(path, f"unsupported YAML tag {node.tag!r}")
            return None
        out: list[Any] = []
        for i, item in enumerate(node.value):
            self.lines[(*path, i)] = item.start_mark.line + 1
            out.append(self.build(item, (*path, i)))
        return out

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any] | None:
        if node.tag != _MAP:
            self._bad(path, f"unsupported YAML tag {node.tag!r}")
            return None
        owners: dict[str, yaml.Node] = {}  # key -> the node that first wrote it here
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE:
                continue
            first = owners.get(key_node.value)
            if first is not None:
                message = (
                    f"duplicate key {key_node.value!r} (first on line {first.start_mark.line + 1})"
                )
                self.reporter.error_at_line(
                    key_node.start_mark.line + 1, format_path(path), message
                )
            else:
                owners[key_node.value] = key_node
        try:
            self.loader.flatten_mapping(node)  # resolves `<<` merge keys in place
        except yaml.constructor.ConstructorError as exc:
            self._bad(path, exc.problem or "invalid merge key")
            return None
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                message = "a key must be a plain value, not a list or mapping"
                self.reporter.error_at_line(
                    key_node.start_mark.line + 1, format_path(path), message
                )
                continue
            key = str(key_node.value)
            owner = owners.get(key)
            if owner is not None and key_node is not owner:
                continue  # a duplicate, or a merged key this mapping sets itself: the first wins
            self.lines[(*path, key)] = key_node.start_mark.line + 1
            out[key] = self.build(value_node, (*path, key))
        return out

    def _bad(self, path: Path, message: str) -> None:
        """Report a value that cannot be used; validation then stays quiet about it."""
        self.reporter.error(path, message)
        self.reporter.silence(path)

    def _scalar(self, node: yaml.ScalarNode, path: Path) -> Any:
        if node.tag == _STR and "$" in node.value:
            text, errors = interpolate(node.value, self.env)
            if errors:
                for message in errors:
                    self._bad(path, message)
                return node.value
            if node.style is not None:  # quoted or block: stays a string
                return text
            tag = self.loader.resolve(yaml.ScalarNode, text, (True, False))
            node = yaml.ScalarNode(tag, text, node.start_mark, node.end_mark)
        if node.tag not in self.loader.yaml_constructors:
            self._bad(path, f"unsupported YAML tag {node.tag!r}")
            return None
        try:
            value = self.loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            self._bad(path, exc.problem or str(exc))
            return None
        except (ValueError, KeyError, IndexError):  # e.g. `!!int x`, `!!bool maybe`
            self._bad(path, f"cannot read {node.value[:40]!r} as {node.tag.rpartition(':')[2]}")
            return None
        if type(value) is int and not -(2**63) <= value < 2**64:
            self._bad(path, "integer out of range: the plan holds 64-bit integers (orjson)")
            return None
        if isinstance(value, bytes):
            self._bad(path, "binary values are not supported (the plan is JSON)")
            return None
        if isinstance(value, float) and not math.isfinite(value):
            self._bad(path, f"expected a finite number, got {node.value}")
            return None
        return value
