"""Plugins as a pipeline author writes them: constructors that validate their arguments.

Registered for a test by :func:`register`, which makes ``stream.plugins`` see them as
installed entry points (``- f2c: {field: temperature}``, ``type: webhook``).
"""

from __future__ import annotations

from importlib.metadata import EntryPoint
from typing import TYPE_CHECKING, Any

from sinks.discard import DiscardSink

if TYPE_CHECKING:
    import pytest


class F2C:
    """Fahrenheit to Celsius in one field; ``__init__`` refuses anything but ``field``."""

    def __init__(self, field: str) -> None:
        if not isinstance(field, str) or not field:
            msg = f"f2c.field must be a field name, got {field!r}"
            raise ValueError(msg)
        self.field = field

    def __call__(self, record: Any) -> Any:
        doc = record.as_dict()
        doc[self.field] = round((doc[self.field] - 32) * 5 / 9, 2)
        record.touch()
        return record


class Webhook(DiscardSink):
    """A sink plugin whose constructor requires an http(s) ``url``."""

    def __init__(self, name: str, url: str = "") -> None:
        if not url.startswith(("http://", "https://")):
            msg = f"webhook.url must be an http(s) URL, got {url!r}"
            raise ValueError(msg)
        super().__init__(name)


class AnyArguments:
    """A processor plugin that takes any keyword arguments and passes records through."""

    def __init__(self, **options: Any) -> None:
        self.options = options

    def __call__(self, record: Any) -> Any:
        return record


class AnySink(DiscardSink):
    """A sink plugin that takes any settings."""

    def __init__(self, name: str, **options: Any) -> None:
        super().__init__(name)
        self.options = options


def register(
    monkeypatch: pytest.MonkeyPatch,
    processors: dict[str, str] | None = None,
    sinks: dict[str, str] | None = None,
) -> None:
    """Make plugins of this module installed entry points for one test: by default
    ``f2c`` (processor) and ``webhook`` (sink); else ``{name: class name}``."""
    import stream.plugins  # noqa: PLC0415

    def group(name: str, members: dict[str, str]) -> dict[str, EntryPoint]:
        return {k: EntryPoint(k, f"{__name__}:{v}", name) for k, v in members.items()}

    groups = {
        stream.plugins.PROCESSOR_GROUP: group(
            stream.plugins.PROCESSOR_GROUP, processors or {"f2c": "F2C"}
        ),
        stream.plugins.SINK_GROUP: group(
            stream.plugins.SINK_GROUP, sinks or {"webhook": "Webhook"}
        ),
    }
    monkeypatch.setattr(stream.plugins, "_group", lambda name: groups.get(name, {}))


class ReturnsDict:
    """A processor plugin that breaks the contract for records with ``t`` over 100: it
    returns the document, not the record."""

    def __call__(self, record: Any) -> Any:
        return record.as_dict() if record.as_dict().get("t", 0) > 100 else record
