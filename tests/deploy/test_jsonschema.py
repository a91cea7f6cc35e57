"""The JSON Schema of the pipeline file (``shardline schema``), held against the validator."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from deploy.cli import test as configtest_cli
from deploy.pipeline import schema as model
from deploy.pipeline.jsonschema import BOUNDS, pipeline_schema
from deploy.pipeline.problems import Reporter
from tests.deploy.test_config import CLICKSTREAM, MINIMAL

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "clickstream" / "pipeline.yaml"
VALIDATOR = Draft202012Validator(pipeline_schema())


def _schema_ok(doc: Any) -> bool:
    return bool(VALIDATOR.is_valid(doc))


def _validator_ok(doc: Any) -> bool:
    r = Reporter("pipeline.yaml", {})
    model.validate(r, doc)
    return not r.problems


def _with(section: str, key: str, value: Any) -> dict[str, Any]:
    """The minimal file with one integer setting of ``section`` set to ``value``."""
    doc: dict[str, Any] = yaml.safe_load(MINIMAL)
    function = doc["functions"]["main"]
    if section == "stream":
        doc["stream"][key] = value
        if key == "shards":
            doc["stream"]["mode"] = "provisioned"
    elif section == "function":
        function[key] = value
    elif section == "batch":
        function["batch"] = {key: value}
    else:
        lookup: dict[str, Any] = {"table": "users", "key": "user_id", "into": "user", key: value}
        if key == "miss_ttl_s":
            lookup["ttl_s"] = 10**9  # a miss is never kept longer than an item
        function["processors"] = [{"enrich": {"lookup": lookup}}]
    return doc


BOUND_CASES = [
    (section, key, value)
    for section, keys in BOUNDS.items()
    for key, (lo, hi) in keys.items()
    for value in (lo - 1, lo, *((hi, hi + 1) if hi is not None else (lo + 10**6,)))
]


class TestSchema:
    def test_it_is_a_valid_draft_2020_12_schema(self) -> None:
        """Editors and validators can load it."""
        schema = pipeline_schema()
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        Draft202012Validator.check_schema(schema)

    def test_the_command_prints_it_as_json(self) -> None:
        """`shardline schema` prints the schema and nothing else."""
        result = CliRunner().invoke(configtest_cli.schema, [])
        assert result.exit_code == 0
        assert json.loads(result.stdout) == pipeline_schema()

    def test_every_top_level_key_of_the_contract_is_in_it(self) -> None:
        """CONFIG.md's example (kept verbatim in test_config) names only keys the schema has,
        and the schema has no top-level key the validator does not accept."""
        documented = yaml.safe_load(CLICKSTREAM)
        properties = pipeline_schema()["properties"]
        assert set(documented) <= set(properties)
        assert set(properties) == set(model.TOP_KEYS)

    @pytest.mark.parametrize("text", [CLICKSTREAM, MINIMAL], ids=["config-md", "minimal"])
    def test_the_contract_examples_validate(self, text: str) -> None:
        """What CONFIG.md shows is valid for the schema."""
        errors = [e.message for e in VALIDATOR.iter_errors(yaml.safe_load(text))]
        assert errors == []

    def test_processors_may_be_omitted_in_both(self) -> None:
        """A function with only the route shorthand is valid for the schema and the
        validator alike (absent processors means none)."""
        doc: dict[str, Any] = yaml.safe_load(MINIMAL)
        del doc["functions"]["main"]["processors"]
        assert _schema_ok(doc)
        assert _validator_ok(doc)
        del doc["functions"]["main"]["route"]
        assert not _schema_ok(doc)
        assert not _validator_ok(doc)

    @pytest.mark.parametrize(
        ("key", "value"),
        [("filter_pushdown", True), ("batch", {"parallelization": 4})],
        ids=["filter-pushdown", "parallelization"],
    )
    def test_aggregated_refuses_what_aws_cannot_do_in_both(self, key: str, value: Any) -> None:
        """With stream.aggregated: true, pushdown and parallelization > 1 are refused by the
        schema as by the validator; without it, both accept them."""
        doc: dict[str, Any] = yaml.safe_load(MINIMAL)
        doc["functions"]["main"][key] = value
        assert _schema_ok(doc)
        assert _validator_ok(doc)
        doc["stream"]["aggregated"] = True
        assert not _schema_ok(doc)
        assert not _validator_ok(doc)

    def test_strict_ordering_with_lanes_is_refused_in_both(self) -> None:
        """ordering: strict with parallelization above 1 is an error for the schema as for
        the validator; either one alone is accepted by both."""
        doc: dict[str, Any] = yaml.safe_load(MINIMAL)
        doc["functions"]["main"]["ordering"] = "strict"
        assert _schema_ok(doc)
        assert _validator_ok(copy.deepcopy(doc))
        doc["functions"]["main"]["batch"] = {"parallelization": 2}
        assert not _validator_ok(copy.deepcopy(doc))
        assert not _schema_ok(doc)
        doc["functions"]["main"]["ordering"] = "per_key"
        assert _schema_ok(doc)
        assert _validator_ok(doc)

    def test_the_clickstream_example_validates(self) -> None:
        """The bundled example, ${VAR} references included, as an editor sees it."""
        doc = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
        assert [e.message for e in VALIDATOR.iter_errors(doc)] == []

    def test_defaults_are_the_validators(self) -> None:
        """The defaults shown in editors are what validation fills in."""
        defs = pipeline_schema()["$defs"]
        assert defs["stream"]["properties"]["retention_hours"]["default"] == 24
        assert defs["function"]["properties"]["memory_mb"]["default"] == 256
        assert defs["batch"]["properties"]["max_retries"]["default"] == 3
        assert defs["lookup"]["properties"]["on_miss"]["default"] == "keep"

    def test_a_key_the_validator_accepts_but_the_schema_lacks_fails_loudly(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The schema cannot silently fall behind the validator."""
        monkeypatch.setattr(model, "BATCH_KEYS", (*model.BATCH_KEYS, "tumbling_window_s"))
        with pytest.raises(RuntimeError, match="not described \\['tumbling_window_s'\\]"):
            pipeline_schema()


class TestAgreement:
    @pytest.mark.parametrize(("section", "key", "value"), BOUND_CASES)
    def test_integer_bounds_are_the_validators(self, section: str, key: str, value: int) -> None:
        """At and around each bound, the schema accepts exactly what validation accepts."""
        doc = _with(section, key, value)
        assert _schema_ok(doc) == _validator_ok(doc)

    @given(
        st.sampled_from([(s, k) for s, keys in BOUNDS.items() for k in keys]),
        st.integers(min_value=-2, max_value=700_000),
    )
    def test_any_integer_setting_is_judged_alike(self, field: tuple[str, str], value: int) -> None:
        """Any value of any integer setting: same verdict from both."""
        doc = _with(*field, value)
        assert _schema_ok(doc) == _validator_ok(doc)

    @pytest.mark.parametrize(
        ("change", "why"),
        [
            (lambda d: d.update(nmae="x"), "unknown top-level key"),
            (lambda d: d["stream"].update(mode="provisoned"), "not a stream mode"),
            (lambda d: d["stream"].update(mode="provisioned"), "provisioned without shards"),
            (lambda d: d["stream"].update(shards=2), "shards without provisioned"),
            (lambda d: d["sinks"]["out"].update(type="dynamodb"), "dynamodb without table"),
            (lambda d: d["sinks"]["out"].update(idx="x"), "stdout takes no settings"),
            (lambda d: d["functions"]["main"].pop("route"), "routes nowhere"),
            (lambda d: d["functions"]["main"].update(ordering="fifo"), "not an ordering"),
            (lambda d: d["functions"]["main"].update(processors=[{"filter": {}}]), "empty filter"),
            (lambda d: d.update(name="click stream"), "a space in the stack name"),
        ],
    )
    def test_mistakes_both_reject(self, change: Any, why: str) -> None:
        """A few typical mistakes: each is an error for the schema and for validation."""
        doc = yaml.safe_load(MINIMAL)
        change(doc)
        assert not _validator_ok(copy.deepcopy(doc)), why
        assert not _schema_ok(doc), why

    def test_env_references_stand_for_any_value(self) -> None:
        """`shards: ${SHARDS:-2}` becomes an integer when loaded: the schema lets it be."""
        doc = yaml.safe_load(MINIMAL)
        doc["stream"].update(mode="provisioned", shards="${SHARDS:-2}")
        doc["functions"]["main"]["filter_pushdown"] = "${PUSHDOWN}"
        assert _schema_ok(doc)
        doc["stream"]["shards"] = "two"
        assert not _schema_ok(doc)
