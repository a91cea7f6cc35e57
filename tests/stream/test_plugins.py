"""Loading plugins by entry point (stream.plugins), as installed distributions register them."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import pytest

from stream import plugins

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

TWIN = '''
class Twin:
    def __call__(self, record):
        record.as_dict()["by"] = __name__
        return record
'''


def _distribution(site: Path, name: str, entry_points: str) -> None:
    """A distribution ``name`` with the module ``name`` and these entry points."""
    (site / f"{name}.py").write_text(TWIN)
    info = site / f"{name}-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(entry_points)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins._group.cache_clear()
    yield tmp_path
    plugins._group.cache_clear()
    for module in ("plug_one", "plug_two"):
        sys.modules.pop(module, None)


PIPELINE = """\
name: twins
stream: {name: s}
sinks: {out: {type: stdout}}
functions:
  main:
    processors:
      - twin: {}
    route: [out]
"""


class TestOneNameTwoPackages:
    """Two installed packages register one name: the one that ran depended on the order the
    packages were found in (the virtualenv's for `validate` and `test`, the zip's in
    Lambda), silently."""

    def test_validate_refuses_the_name_at_its_line_naming_both_packages(self, site: Path):
        from deploy.pipeline.config import parse_config  # noqa: PLC0415
        from deploy.pipeline.problems import ConfigError  # noqa: PLC0415

        _distribution(site, "plug_one", "[shardline.processors]\ntwin = plug_one:Twin\n")
        _distribution(site, "plug_two", "[shardline.processors]\ntwin = plug_two:Twin\n")

        with pytest.raises(ConfigError) as caught:
            parse_config(PIPELINE, source="p.yaml", env={})

        message = str(caught.value)
        assert "p.yaml:7: functions.main.processors[0]" in message
        assert "plug_one (plug_one:Twin)" in message
        assert "plug_two (plug_two:Twin)" in message
        assert "uninstall one" in message

    def test_a_sink_type_registered_twice_is_refused_too(self, site: Path):
        from stream.exceptions import PluginError  # noqa: PLC0415

        _distribution(site, "plug_one", "[shardline.sinks]\nhook = plug_one:Twin\n")
        _distribution(site, "plug_two", "[shardline.sinks]\nhook = plug_two:Twin\n")

        with pytest.raises(PluginError, match=r"'shardline\.sinks' by plug_") as caught:
            plugins.load_entry_point(plugins.SINK_GROUP, "hook")
        assert "plug_one (plug_one:Twin)" in str(caught.value)
        assert "plug_two (plug_two:Twin)" in str(caught.value)

    def test_one_package_alone_still_loads(self, site: Path):
        _distribution(site, "plug_one", "[shardline.processors]\ntwin = plug_one:Twin\n")

        loaded = plugins.load_entry_point(plugins.PROCESSOR_GROUP, "twin")

        assert loaded.__module__ == "plug_one"
