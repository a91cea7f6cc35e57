"""validate reports every problem one run can find: what the schema finds (options,
aggregations) and what only building the functions finds (constructors, plugins that do not
import, steps that drop every record, IAM statements) together, each at its line. It had
stopped after the first kind: the second showed up only once the first was fixed."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import pytest

from deploy.pipeline import runtime_checks
from deploy.pipeline.config import ConfigError, load_config
from stream import plugins

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

PIPELINE = """\
name: onepass
stream: {name: onepass-events}
sinks:
  hook:
    use: "mine:Hook"
    with: {pth: /tmp/x}
  picky:
    use: "mine:Hook"
    with: {path: ""}
  out: {type: stdout}
functions:
  counts:
    processors:
      - window: {key: a, size_s: 60, time: arrival, aggregate: {n: {nosuch: x}}, state: memory}
    route: [out]
  refuses:
    processors:
      - use: "mine:NeedsField"
        with: {field: ""}
    route: [hook]
  broken:
    processors:
      - gone: {}
    route: [out]
  forgets:
    processors:
      - use: "mine:Forgets"
      - use: "mine:Denies"
    route: [out]
"""
MODULE = """\
from sinks.base import OK, Sink


class Hook(Sink):
    option_types = {"path": str}
    required_options = frozenset({"path"})

    def __init__(self, name, path):
        super().__init__(name)
        if not path:
            raise ValueError("path must name a file")
        self.path = path

    def _write(self, records):
        return [OK] * len(records)


class NeedsField:
    def __init__(self, field):
        if not field:
            raise ValueError("field must name a field")

    def __call__(self, record):
        return record


class Forgets:
    def __call__(self, record):
        record.as_dict()["seen"] = True


class Denies:
    @classmethod
    def iam_statements(cls, options):
        return [{"Action": "s3:GetObject"}]

    def __call__(self, record):
        return record
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """mine.py beside the file, and an installed distribution whose processor ``gone``
    names a module that raises on import; what loading them changes is undone after."""
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    (tmp_path / "mine.py").write_text(MODULE)
    site = tmp_path / "site"
    info = site / "gone_plugin-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gone-plugin\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[shardline.processors]\ngone = gone_plugin:Gone\n")
    (site / "gone_plugin.py").write_text("import this_module_does_not_exist\n")
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    monkeypatch.setattr(runtime_checks, "_LOCAL_FOLDERS", [])
    plugins._group.cache_clear()
    yield tmp_path
    plugins._group.cache_clear()
    for module in ("mine", "gone_plugin"):
        sys.modules.pop(module, None)


def test_one_run_reports_the_schema_and_the_build_problems_at_their_lines(project: Path):
    with pytest.raises(ConfigError) as caught:
        load_config(project / "pipeline.yaml")
    found = [(p.line, p.path, p.message) for p in caught.value.errors]
    where = [(line, path) for line, path, _ in found]
    assert where == [
        (6, "sinks.hook.with.pth"),  # the schema: an option the class does not take
        (6, "sinks.hook.with"),  # ... and the one it requires
        (7, "sinks.picky"),  # building: the constructor refuses its option
        (14, "functions.counts.processors[0].window.aggregate.n.nosuch"),  # the schema
        (18, "functions.refuses.processors[0]"),  # building: the constructor refuses
        (23, "functions.broken.processors[0]"),  # building: the plugin does not import
        (27, "functions.forgets.processors[0]"),  # building: it never returns a record
        (28, "functions.forgets.processors[1]"),  # its IAM statement lacks a Resource
    ], found
    messages = dict(where_message for where_message in ((p, m) for _, p, m in found))
    assert "path must name a file" in messages["sinks.picky"]
    assert "field must name a field" in messages["functions.refuses.processors[0]"]
    assert "this_module_does_not_exist" in messages["functions.broken.processors[0]"]
    assert "drops every record" in messages["functions.forgets.processors[0]"]
    assert (
        "a statement is a mapping with Action and Resource"
        in (messages["functions.forgets.processors[1]"])
    )


def test_a_step_or_sink_with_a_schema_problem_is_not_built_too(project: Path) -> None:
    """`hook` lacks `path`: its constructor would fail on that, said once already."""
    with pytest.raises(ConfigError) as caught:
        load_config(project / "pipeline.yaml")
    assert not [p for p in caught.value.errors if p.path == "sinks.hook"]
    assert not [p for p in caught.value.errors if "fails to start" in p.message
                and p.path.startswith("functions.counts")]  # fmt: skip
