"""``schema`` steps in the pipeline file: the schema file is read, checked and bundled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.aws.package import _step_requirements
from deploy.pipeline.config import ConfigError, compile_plan, load_config

ROOT = Path(__file__).resolve().parent.parent.parent
PIPELINE = """\
name: t
stream: {{name: s}}
sinks: {{out: {{type: stdout}}}}
functions:
  f:
    processors:
      - schema: {{{step}}}
    route: [out]
"""


def _write(tmp_path: Path, step: str, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    path = tmp_path / "pipeline.yaml"
    path.write_text(PIPELINE.format(step=step))
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return [str(p) for p in caught.value.errors]


class TestSchemaStep:
    def test_the_schema_is_bundled_into_the_plan_with_its_name(self, tmp_path: Path) -> None:
        schema = {"type": "object", "required": ["id"]}
        path = _write(
            tmp_path, "json_schema: schemas/o.json", {"schemas/o.json": json.dumps(schema)}
        )
        plan = compile_plan(load_config(path))
        step = plan["functions"]["f"]["processors"][0]
        assert step == {"schema": {"json_schema": schema, "source": "schemas/o.json"}}

    def test_a_missing_file_is_an_error_at_the_steps_line(self, tmp_path: Path) -> None:
        path = _write(tmp_path, "json_schema: schemas/none.json", {})
        (problem,) = _problems(path)
        assert problem.startswith(f"{path}:7: functions.f.processors[0].schema.json_schema")
        assert "cannot read" in problem
        assert "relative to the pipeline file" in problem

    def test_a_schema_that_is_not_json_is_an_error_at_its_own_line(self, tmp_path: Path) -> None:
        path = _write(tmp_path, "json_schema: o.json", {"o.json": '{\n  "type": "object",\n  ]\n'})
        (problem,) = _problems(path)
        assert problem.startswith(f"{tmp_path / 'o.json'}:3: (file): not JSON")

    def test_an_invalid_json_schema_is_an_error_at_the_broken_keyword(self, tmp_path: Path) -> None:
        text = '{\n  "type": "object",\n  "properties": {\n    "qty": {"minimum": "one"}\n  }\n}\n'
        path = _write(tmp_path, "json_schema: o.json", {"o.json": text})
        (problem,) = _problems(path)
        assert problem.startswith(f"{tmp_path / 'o.json'}:4: /properties/qty/minimum:")
        assert "not a valid JSON Schema" in problem

    def test_an_invalid_avro_schema_is_an_error_in_its_file(self, tmp_path: Path) -> None:
        text = '{"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]}'
        path = _write(tmp_path, "avro: o.avsc", {"o.avsc": text})
        (problem,) = _problems(path)
        assert problem.startswith(f"{tmp_path / 'o.avsc'}:1:")
        assert "UnknownType: nope" in problem

    def test_both_or_neither_schema_is_an_error(self, tmp_path: Path) -> None:
        path = _write(tmp_path, "json_schema: a.json, avro: b.avsc", {})
        (problem,) = _problems(path)
        assert "needs exactly one of json_schema" in problem


class TestPackage:
    def test_only_the_library_a_step_needs_is_shipped(self) -> None:
        plan = compile_plan(load_config(ROOT / "examples" / "contracts" / "pipeline.yaml"))
        names = sorted(r.split(">")[0].split("=")[0] for r in _step_requirements(plan))
        assert names == ["fastavro", "jsonschema-rs"]
        plan["functions"].pop("avro-orders")
        assert [r.split(">")[0] for r in _step_requirements(plan)] == ["jsonschema-rs"]

    def test_a_pipeline_without_the_step_ships_neither(self) -> None:
        plan = compile_plan(load_config(ROOT / "examples" / "windows" / "pipeline.yaml"))
        assert _step_requirements(plan) == []
