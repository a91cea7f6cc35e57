"""Sink types by name: the built-ins and plugins from the ``shardline.sinks`` group.

Built-in modules are imported only when a pipeline uses them, so a stdout-only function
never imports boto3 or opensearch-py.
"""

from __future__ import annotations

from sinks.base import Sink
from stream.exceptions import PluginError
from stream.plugins import SINK_GROUP, entry_point_names, load_entry_point, load_object

TYPE_CHECKING = False  # not typing's: the handler's import never loads typing (ARCHITECTURE.md)
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from stream.plan import SinkSpec

__all__ = ["BUILTIN_SINKS", "build_sink", "sink_class", "sink_options", "sink_types"]

#: Built-in sink types and where they live ("module:Class").
BUILTIN_SINKS: dict[str, str] = {
    "stdout": "sinks.stdout:StdoutSink",
    "discard": "sinks.discard:DiscardSink",
    "dynamodb": "sinks.dynamodb:DynamoDBSink",
    "kinesis": "sinks.kinesis:KinesisSink",
    "opensearch": "sinks.opensearch:OpenSearchSink",
    "s3": "sinks.s3:S3Sink",
    "sqs": "sinks.sqs:SQSSink",
}
_SPEC_KEYS = frozenset({"type", "use"})


def sink_types() -> set[str]:
    """Every sink type a pipeline may name: built-ins, planned built-ins and plugins."""
    return set(BUILTIN_SINKS) | entry_point_names(SINK_GROUP)


def sink_class(spec: SinkSpec) -> Any:
    """The class (or factory) that makes a sink of this spec: its ``use`` path, a built-in,
    or the plugin registered under its ``type``; imported now.

    Raises:
        PluginError: unknown type, or the plugin does not import.
    """
    if "use" in spec:
        return load_object(spec["use"])
    kind = spec.get("type", "")
    if kind in BUILTIN_SINKS:
        return load_object(BUILTIN_SINKS[kind])
    return load_entry_point(SINK_GROUP, kind)


def sink_options(spec: Mapping[str, Any]) -> dict[str, Any]:
    """What ``__init__`` receives besides the name: the spec without ``type`` and ``use``."""
    return {k: v for k, v in spec.items() if k not in _SPEC_KEYS}


def build_sink(name: str, spec: SinkSpec) -> Sink:
    """Create the sink ``name`` from its compiled spec (``{"type": ..., **options}``).

    Raises:
        PluginError: unknown type, or a plugin that is not a :class:`~sinks.base.Sink`.
    """
    cls = sink_class(spec)
    sink = cls(name, **sink_options(spec))
    if not isinstance(sink, Sink):
        msg = f"sink {name!r}: {cls!r} made a {type(sink).__name__}, not a sinks.base.Sink"
        raise PluginError(msg)
    return sink
