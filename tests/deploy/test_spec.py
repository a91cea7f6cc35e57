"""The pipeline file's keys are described once (deploy/pipeline/spec.py), and both the
validator and the JSON Schema take them from there."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import yaml

from deploy.pipeline import fields as fields_module
from deploy.pipeline import schema as model
from deploy.pipeline import spec
from deploy.pipeline.jsonschema import pipeline_schema
from deploy.pipeline.problems import Reporter
from tests.deploy.test_config import CLICKSTREAM, MINIMAL

SCHEMA = pipeline_schema()
DEFS = SCHEMA["$defs"]

#: Every section of the spec, and where the JSON Schema lists its properties.
SECTIONS: dict[str, tuple[spec.Section, dict[str, Any]]] = {
    "top": (spec.TOP, SCHEMA["properties"]),
    "stream": (spec.STREAM, DEFS["stream"]["properties"]),
    "function": (spec.FUNCTION, DEFS["function"]["properties"]),
    "batch": (spec.BATCH, DEFS["batch"]["properties"]),
    "filter": (spec.FILTER, DEFS["filter"]["properties"]),
    "enrich": (spec.ENRICH, DEFS["enrich"]["properties"]),
    "lookup": (spec.LOOKUP, DEFS["lookup"]["properties"]),
    "route": (spec.ROUTE, DEFS["route"]["anyOf"][1]["properties"]),
    "rule": (
        spec.RULE,
        {**DEFS["rule"]["oneOf"][0]["properties"], **DEFS["rule"]["oneOf"][1]["properties"]},
    ),
    "use": (
        spec.USE,
        next(b for b in DEFS["processor"]["anyOf"] if "use" in b.get("properties", {}))[
            "properties"
        ],
    ),
    **{
        f"sink {kind}": (
            settings,
            {k: v for k, v in branch["then"]["properties"].items() if k != "type"},
        )
        for (kind, settings), branch in zip(
            spec.SINK_TYPES.items(), DEFS["sink"]["allOf"], strict=True
        )
    },
}


def _every_key_in_use() -> dict[str, Any]:
    """A file that makes the validator read every section it has."""
    doc: dict[str, Any] = yaml.safe_load(MINIMAL)
    sinks = yaml.safe_load(CLICKSTREAM)["sinks"]
    sinks["search"]["endpoint"] = "https://search.example"
    sinks["stream"] = {"type": "kinesis", "stream": "s", "partition_key": "k"}
    sinks["out"] = {"type": "stdout"}
    sinks["drop"] = {"type": "discard"}
    doc["sinks"] = sinks
    lookup = {"table": "users", "key": "user_id", "into": "user"}
    doc["functions"]["main"] = {
        "batch": {"size": 10},
        "on_failure": "dlq",
        "processors": [
            {"filter": {"match": {"a": [1]}}},
            {"enrich": {"set": {"x": 1}, "lookup": lookup}},
            {"use": "json:JSONDecoder", "with": {}},
            {"route": {"mode": "all", "rules": [{"when": "a", "to": ["out"]}]}},
        ],
    }
    return doc


def _described(properties: dict[str, Any], key: str) -> str | None:
    shape = properties[key]
    if "description" in shape:
        return str(shape["description"])
    ref = shape.get("$ref", "")
    return DEFS[ref.rpartition("/")[2]].get("description") if ref else None


class TestOneDescription:
    def test_every_key_list_the_validator_reads_is_a_section_of_the_spec(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The validator checks keys only against the spec's sections, and reads them all:
        no section keeps a list of keys of its own."""
        seen: list[tuple[str, ...]] = []
        original = fields_module.Fields.__init__

        def spy(self: Any, r: Any, path: Any, data: Any, allowed: Any) -> None:
            seen.append(tuple(allowed))
            original(self, r, path, data, allowed)

        monkeypatch.setattr(fields_module.Fields, "__init__", spy)
        r = Reporter("pipeline.yaml", {})
        model.validate(r, _every_key_in_use())
        assert [str(p) for p in r.problems] == []
        sections = {
            name: ("type", *keys) if name.startswith("sink ") else tuple(keys)
            for name, (keys, _) in SECTIONS.items()
        }
        unknown = [keys for keys in seen if keys not in sections.values()]
        assert unknown == [], "key lists read by the validator but not in deploy/pipeline/spec.py"
        unread = [name for name, keys in sections.items() if keys not in seen]
        assert unread == [], "sections of the spec the validator never reads"

    @pytest.mark.parametrize("name", list(SECTIONS))
    def test_the_schema_describes_exactly_the_spec_keys(self, name: str) -> None:
        """Each section's properties in the JSON Schema are the spec's keys, with the
        spec's descriptions, bounds and choices."""
        keys, properties = SECTIONS[name]
        assert list(properties) == list(keys)
        for key, described in keys.items():
            if described.description:
                assert _described(properties, key) == described.description, key
            shape = properties[key].get("anyOf", [properties[key]])[0]
            if described.kind == "integer":
                assert (shape["minimum"], shape.get("maximum")) == (
                    described.minimum,
                    described.maximum,
                ), key
            if described.kind == "enum":
                assert shape["enum"] == list(described.enum), key

    def test_a_bound_changed_in_the_spec_changes_both(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The validator's message and the schema's maximum both follow the spec."""
        narrower = dataclasses.replace(spec.BATCH["size"], maximum=50)
        monkeypatch.setitem(spec.BATCH, "size", narrower)
        doc: dict[str, Any] = yaml.safe_load(MINIMAL)
        doc["functions"]["main"]["batch"] = {"size": 51}
        r = Reporter("pipeline.yaml", {})
        model.validate(r, doc)
        assert [p.message for p in r.problems] == ["must be between 1 and 50, got 51"]
        size = pipeline_schema()["$defs"]["batch"]["properties"]["size"]
        assert size["anyOf"][0]["maximum"] == 50

    def test_every_integer_key_has_a_lower_bound(self) -> None:
        """Fields.read needs one (there is no unbounded integer in the file)."""
        missing = [
            (name, key)
            for name, (keys, _) in SECTIONS.items()
            for key, described in keys.items()
            if described.kind == "integer" and described.minimum is None
        ]
        assert missing == []
