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


class TestRegistryStep:
    def test_the_plan_carries_the_names_and_the_default_registry(self, tmp_path: Path) -> None:
        plan = compile_plan(load_config(_write(tmp_path, "registry: {name: orders}", {})))
        step = plan["functions"]["f"]["processors"][0]
        assert step == {
            "schema": {
                "registry": {"name": "orders", "registry": "default-registry"},
                "source": "registry default-registry/orders",
            }
        }

    def test_a_bad_shape_is_an_error_at_its_line_and_path(self, tmp_path: Path) -> None:
        path = _write(tmp_path, "registry: {name: 'or ders', regstry: shop}", {})
        assert sorted(_problems(path)) == [
            f"{path}:7: functions.f.processors[0].schema.registry.name: invalid name "
            "'or ders': 1-255 letters, digits, '_', '-', '$', '#' or '.'",
            f"{path}:7: functions.f.processors[0].schema.registry.regstry: unknown key "
            "'regstry' (did you mean 'registry'?)",
        ]

    def test_a_missing_name_or_a_second_contract_is_an_error(self, tmp_path: Path) -> None:
        (missing,) = _problems(_write(tmp_path, "registry: {registry: shop}", {}))
        assert missing.endswith("schema.registry.name: required field is missing")
        (both,) = _problems(_write(tmp_path, "registry: {name: o}, avro: o.avsc", {}))
        assert "needs exactly one of json_schema (a .json file), avro (a .avsc file) or " in both
        (scalar,) = _problems(_write(tmp_path, "registry: orders", {}))
        assert scalar.endswith("schema.registry: expected a mapping, got 'orders'")

    def test_the_editor_schema_accepts_what_validate_accepts(self) -> None:
        import jsonschema_rs  # noqa: PLC0415

        from deploy.pipeline.jsonschema import pipeline_schema  # noqa: PLC0415

        validator = jsonschema_rs.validator_for(pipeline_schema())
        doc = {"name": "t", "stream": {"name": "s"}, "sinks": {"out": {"type": "stdout"}},
               "functions": {"f": {"route": ["out"], "processors": [
                   {"schema": {"registry": {"name": "orders", "registry": "shop"}}}]}}}  # fmt: skip
        assert validator.is_valid(doc)
        step = doc["functions"]["f"]["processors"][0]["schema"]  # type: ignore[index]
        step["registry"] = {"registry": "shop"}
        assert not validator.is_valid(doc)
        step["registry"] = {"name": "orders"}
        step["avro"] = "o.avsc"
        assert not validator.is_valid(doc)

    def test_shardline_test_refuses_a_case_of_a_registry_function_with_what_to_do(
        self, tmp_path: Path
    ) -> None:
        from deploy.pipeline.cases import load_suite  # noqa: PLC0415

        _write(tmp_path, "registry: {name: orders, registry: shop}", {})
        (tmp_path / "pipeline.test.yaml").write_text(
            "tests:\n  - name: r\n    function: f\n    input: [{json: {}}]\n    expect: {}\n"
        )
        with pytest.raises(ConfigError) as caught:
            load_suite(tmp_path / "pipeline.test.yaml")
        (problem,) = [str(p) for p in caught.value.errors]
        where = f"{tmp_path / 'pipeline.test.yaml'}:3: tests[0].function: function 'f' reads "
        assert problem.startswith(where)
        assert "(processors[0], registry shop/orders), which shardline test does not call" in (
            problem
        )
        assert "schema: {avro: FILE}" in problem


class TestPackage:
    def test_only_the_library_a_step_needs_is_shipped(self) -> None:
        plan = compile_plan(load_config(ROOT / "examples" / "contracts" / "pipeline.yaml"))
        names = sorted(r.split(">")[0].split("=")[0] for r in _step_requirements(plan))
        assert names == ["fastavro", "jsonschema-rs"]
        plan["functions"].pop("avro-orders")
        assert [r.split(">")[0] for r in _step_requirements(plan)] == ["jsonschema-rs"]

    def test_a_registry_step_ships_both_libraries(self) -> None:
        """A registered version may be Avro or JSON: only a record says which."""
        plan = compile_plan(load_config(ROOT / "examples" / "contracts" / "registry.yaml"))
        names = sorted(r.split(">")[0].split("=")[0] for r in _step_requirements(plan))
        assert names == ["fastavro", "jsonschema-rs"]

    def test_a_pipeline_without_the_step_ships_neither(self) -> None:
        plan = compile_plan(load_config(ROOT / "examples" / "windows" / "pipeline.yaml"))
        assert _step_requirements(plan) == []
