"""The ``schema`` step's files: read, checked and bundled into the plan at validate time.

(``- schema: {registry: {name: orders, registry: default}}`` names a schema of the Glue
Schema Registry instead: validation checks the names, and the plan carries them; the
function fetches the versions its records name at run time.)

``- schema: {json_schema: schemas/order.json}`` or ``- schema: {avro: schemas/order.avsc}``
names a file relative to the pipeline file. Validation reads it, checks that it is a schema
(JSON Schema against its metaschema with ``jsonschema-rs``, Avro with ``fastavro``) and
puts its content into the plan with the name as written, so the runtime reads no file::

    {"schema": {"json_schema": {...the schema...}, "source": "schemas/order.json"}}

A problem in the schema file is reported at that file's line (``schemas/order.json:7:
/properties/qty/minimum: ...``); a missing file at the step's line in the pipeline file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deploy.pipeline import spec
from deploy.pipeline.fields import Fields, as_mapping
from deploy.pipeline.problems import Problem

if TYPE_CHECKING:
    from deploy.pipeline.problems import Path as DocPath
    from deploy.pipeline.problems import Reporter

__all__ = ["line_of_pointer", "schema_step"]

_KINDS = ("json_schema", "avro", "registry")


def schema_step(r: Reporter, path: DocPath, args: Any) -> dict[str, Any]:
    """Check ``schema: {json_schema: FILE}`` or ``{avro: FILE}``; return its plan form."""
    shape = "a mapping {json_schema: FILE}, {avro: FILE} or {registry: {name, registry}}"
    data = as_mapping(r, path, args, shape)
    if data is None:
        return {}
    f = Fields(r, path, data, tuple(spec.SCHEMA))
    given = [kind for kind in _KINDS if f.has(kind)]
    if len(given) != 1:
        r.error(
            path,
            "needs exactly one of json_schema (a .json file), avro (a .avsc file) or "
            "registry ({name: SCHEMA, registry: REGISTRY})",
        )
        return {}
    (kind,) = given
    if kind == "registry":
        return _registry(r, f)
    name = f.text(kind, required=True)
    if name is None:
        return {}
    base = Path(r.file).parent if not r.file.startswith("<") else Path()
    file = base / name
    shown = str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else f"not UTF-8 ({exc.reason})"
        relative = "the path is relative to the pipeline file"
        r.error(f.at(kind), f"cannot read {shown}: {why} ({relative})")
        return {}
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        r.error_in(Problem(shown, exc.lineno, "(file)", f"not JSON: {exc.msg}"), f.at(kind))
        return {}
    problem = _json_schema_problem(schema) if kind == "json_schema" else _avro_problem(schema)
    if problem is not None:
        pointer, message = problem
        line = line_of_pointer(text, pointer)
        r.error_in(Problem(shown, line, pointer or "(schema)", message), f.at(kind))
        return {}
    return {kind: schema, "source": name}


def _registry(r: Reporter, f: Fields) -> dict[str, Any]:
    """``registry: {name, registry}``: the names, checked against Glue's rule."""
    data = f.mapping("registry", required=True)
    if data is None:
        return {}
    g = Fields(r, f.at("registry"), data, tuple(spec.SCHEMA_REGISTRY))
    names = {key: g.read(key, rule, _glue_name(rule)) for key, rule in spec.SCHEMA_REGISTRY.items()}
    if not all(isinstance(v, str) and v for v in names.values()):
        return {}
    return {"registry": names, "source": f"registry {names['registry']}/{names['name']}"}


def _glue_name(rule: spec.Key) -> Any:
    import re  # noqa: PLC0415

    pattern = re.compile(rule.pattern or "")

    def check(value: str) -> str | None:
        if pattern.fullmatch(value):
            return None
        return f"invalid name {value!r}: {rule.rule}"

    return check


def _json_schema_problem(schema: Any) -> tuple[str, str] | None:
    from processors.schema import json_pointer, load_json_validator  # noqa: PLC0415
    from stream.exceptions import PluginError  # noqa: PLC0415

    try:
        import jsonschema_rs  # noqa: PLC0415  # the runtime's library, on the operator's side
    except ImportError:
        return "", "the schema step needs jsonschema-rs: pip install 'shardline[contracts]'"
    try:
        jsonschema_rs.meta.validate(schema)
        load_json_validator(schema)
    except jsonschema_rs.ValidationError as exc:
        first = exc.message.splitlines()[0] if exc.message else str(exc).splitlines()[0]
        return json_pointer(exc.instance_path), f"not a valid JSON Schema: {first}"
    except (PluginError, ValueError) as exc:  # a $ref that does not resolve, a bad regex
        return "", f"not a usable JSON Schema: {str(exc).splitlines()[0]}"
    return None


def _avro_problem(schema: Any) -> tuple[str, str] | None:
    from processors.schema import parse_avro  # noqa: PLC0415
    from stream.exceptions import PluginError  # noqa: PLC0415

    try:
        parse_avro(schema)
    except (PluginError, ValueError) as exc:
        return "", str(exc).splitlines()[0]
    return None


def line_of_pointer(text: str, pointer: str) -> int:
    """The line (1-based) of the value at JSON ``pointer`` in JSON ``text``; 1 when unknown.

    >>> line_of_pointer('{\\n  "a": {\\n    "b": [1,\\n 2]}}', "/a/b/1")
    4
    """
    import yaml  # noqa: PLC0415  # the operator's side; JSON is YAML, with node positions

    try:
        node: Any = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return 1
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]
    for part in parts:
        if isinstance(node, yaml.MappingNode):
            found = [v for k, v in node.value if k.value == part]
            if not found:
                break
            node = found[0]
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
        else:
            break
    return int(node.start_mark.line) + 1 if node is not None else 1
