"""Loading plugins: entry points and ``pkg.module:Name`` import paths.

Processors and sinks are both extended the same way (entry-point groups
``shardline.processors`` and ``shardline.sinks``, or an explicit import path), so the
loading lives here, once, and both registries call it. Entry points are read lazily and
only the one that a pipeline names is imported.
"""

from __future__ import annotations

import importlib
from functools import cache

from stream.exceptions import PluginError

TYPE_CHECKING = False  # not typing's: the handler's import never loads typing (ARCHITECTURE.md)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["PROCESSOR_GROUP", "SINK_GROUP", "entry_point_names", "load_entry_point", "load_object"]

PROCESSOR_GROUP = "shardline.processors"
SINK_GROUP = "shardline.sinks"


class _Clash:
    """A name that several installed distributions register in one group, each for another
    object: which one a plain ``{name: entry point}`` map keeps depends on the order the
    distributions are found in, which differs between a virtualenv and the Lambda zip, so
    ``validate`` and ``test`` could run one plugin and Lambda the other."""

    __slots__ = ("owners",)

    def __init__(self, owners: list[str]) -> None:
        self.owners = owners


def _owner(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name if dist is not None else 'a distribution'} ({ep.value})"


@cache
def _group(group: str) -> dict[str, Any]:
    """The group's entry points by name; a name registered for several objects maps to a
    :class:`_Clash`, which :func:`load_entry_point` refuses."""
    # importlib.metadata costs a third of the handler's import time; built-ins never need it.
    from importlib.metadata import entry_points  # noqa: PLC0415

    found: dict[str, Any] = {}
    for ep in entry_points(group=group):
        known = found.get(ep.name)
        if known is None:
            found[ep.name] = ep
        elif isinstance(known, _Clash):
            known.owners.append(_owner(ep))
        elif known.value != ep.value:  # the same object twice (one distribution) is no clash
            found[ep.name] = _Clash([_owner(known), _owner(ep)])
    return found


def entry_point_names(group: str) -> set[str]:
    """Names registered by installed distributions under this entry-point group."""
    return set(_group(group))


def load_entry_point(group: str, name: str) -> Any:
    """Import and return the object registered as ``name`` in ``group``.

    Raises:
        PluginError: no such entry point, several installed packages register the name
            for different objects, or importing it failed.
    """
    ep = _group(group).get(name)
    if ep is None:
        msg = (
            f"no plugin {name!r} in entry-point group {group!r}: "
            "install the package that provides it"
        )
        raise PluginError(msg)
    if isinstance(ep, _Clash):
        msg = (
            f"plugin {name!r} is registered in entry-point group {group!r} by "
            f"{' and by '.join(ep.owners)}: which one would run depends on the order the "
            "packages are found in, here and in the Lambda zip; uninstall one, or rename "
            "its entry point"
        )
        raise PluginError(msg)
    try:
        return ep.load()
    except Exception as exc:
        msg = f"plugin {name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}"
        raise PluginError(msg) from exc


def load_object(path: str) -> Any:
    """Import ``"package.module:Name"`` (dots after the colon walk attributes).

    Raises:
        PluginError: the path is malformed, the module does not import, or has no such name.
    """
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        msg = f"import path {path!r} must look like 'package.module:Name'"
        raise PluginError(msg)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        msg = (
            f"cannot import module {module_name!r} for {path!r} ({exc}): install the package "
            "that provides it (pip install ...) or fix the path"
        )
        raise PluginError(msg) from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            msg = f"module {module_name!r} has no attribute {attr!r} (from {path!r})"
            raise PluginError(msg) from None
    return obj
