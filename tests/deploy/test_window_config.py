"""The window step in the pipeline file: the example validates against both descriptions
(the validator and the JSON Schema), its ``shardline test`` cases pass, and the plan carries
what the runtime builds the step from. The refusals with file:line are broken files
(``tests/deploy/broken/window_settings.yaml``)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.aws.cloudformation import build_template, deploy_problems
from deploy.local.invoke import record_lines, run_invoke
from deploy.local.run import LocalRun, RunError
from deploy.pipeline.cases import load_suite, run_suite
from deploy.pipeline.config import compile_plan, parse_config
from processors.window import Window, WindowConfigError
from processors.window_store import DynamoDBStore
from stream.runtime import used_sinks
from stream.testing import EventFactory
from tests.deploy.test_jsonschema import VALIDATOR, _validator_ok

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "windows"
TEXT = (EXAMPLE / "pipeline.yaml").read_text(encoding="utf-8")


def test_the_readme_example_is_the_shipped_example() -> None:
    readme = (EXAMPLE.parents[1] / "README.md").read_text(encoding="utf-8")
    body = TEXT.split("\n", 3)[3]  # after the three comment lines
    assert body in readme


def test_the_example_validates_and_the_schema_agrees() -> None:
    doc = yaml.safe_load(TEXT)
    assert _validator_ok(doc)
    assert VALIDATOR.is_valid(doc)


@pytest.mark.parametrize(
    ("change", "valid"),
    [
        ({"slide_s": 600}, True),
        ({"state": "memory", "time": "event"}, True),
        ({"state": "dynamodb"}, True),
        ({"state": "disk"}, False),
        ({"size_s": None}, False),
        ({"aggregate": {}}, False),
        ({"aggregate": {"n": {"sum": "a", "max": "b"}}}, False),
        ({"colour": "red"}, False),
    ],
)
def test_the_schema_and_the_validator_agree_on_a_window(
    change: dict[str, Any], valid: bool
) -> None:
    doc = yaml.safe_load(TEXT)
    window = doc["functions"]["purchases-per-user"]["processors"][1]["window"]
    for key, value in change.items():
        if value is None:
            del window[key]
        else:
            window[key] = value
    assert VALIDATOR.is_valid(copy.deepcopy(doc)) is valid
    assert _validator_ok(doc) is valid


def test_the_plan_names_the_function_and_the_late_sink_is_built() -> None:
    plan = compile_plan(parse_config(TEXT, source="pipeline.yaml", env={}))
    function = plan["functions"]["purchases-per-user"]
    window = function["processors"][1]["window"]
    assert window["function"] == "purchases-per-user"
    assert (window["size_s"], window["state"], window["late"]) == (3600, "dynamodb", "late-orders")
    assert window["table"] == "shop-purchases-per-user-windows"
    assert window["table_prefix"] == "processors[1]/"
    assert window["quiet_s"] == 300
    assert used_sinks(function) == ["late-orders", "hourly"]
    # what its state must remember: the function's age bound (issue 16, slice S3), and
    # its lanes (above 1, lanes mode; at 1 main's protocol)
    assert window["max_record_age_s"] == function["batch"]["max_record_age_s"] == 86_400
    assert window["parallelization"] == function["batch"]["parallelization"] == 1


def test_the_window_step_s_store_keeps_what_a_redelivery_reads_for_the_plan_s_age_bound() -> None:
    doc = yaml.safe_load(TEXT)
    doc["functions"]["purchases-per-user"]["batch"] = {"max_record_age_s": 3_600}
    plan = compile_plan(parse_config(yaml.safe_dump(doc), source="pipeline.yaml", env={}))
    window = plan["functions"]["purchases-per-user"]["processors"][1]["window"]
    store = Window(**window).store
    assert isinstance(store, DynamoDBStore)
    # one lane: decided by the applied position, as before issue 16 (no high-water written)
    assert (store.max_record_age_s, store.high_water, store.persist_high_water) == (
        3_600,
        False,
        False,
    )
    # lanes mode (``parallelization`` above 1): by the windows' high-water
    lanes = Window(**{**window, "parallelization": 2}).store
    assert isinstance(lanes, DynamoDBStore)
    assert (lanes.max_record_age_s, lanes.high_water, lanes.persist_high_water) == (
        3_600,
        True,
        True,
    )


def test_a_window_step_in_lanes_mode_refuses_a_store_that_decides_by_the_applied_position() -> None:
    store = DynamoDBStore("t", high_water=False)
    args: dict[str, Any] = {"key": "user", "size_s": 60, "field": "ts",
                            "aggregate": {"n": "count"}, "store": store}  # fmt: skip
    with pytest.raises(WindowConfigError, match="lagging lane"):
        Window(**args, parallelization=2)
    assert Window(**args).store is store  # one lane: what the store decides by is right


def test_the_example_cases_pass() -> None:
    results = run_suite(load_suite(EXAMPLE / "pipeline.test.yaml"))
    assert results
    assert all(result.passed for result in results), [r for r in results if not r.passed]


def test_nothing_that_runs_a_function_as_lambda_takes_a_window_kept_in_memory() -> None:
    """A cold start or a restart would lose the open windows: the template (deploy, dev) and
    a local run refuse a step with state: memory, naming it; validate says so as a note.
    The default, state: dynamodb, passes."""
    memory = TEXT.replace("state: dynamodb ", "state: memory ")
    cfg = parse_config(memory, source="pipeline.yaml", env={})
    plan = compile_plan(cfg)
    where = "functions.purchases-per-user.processors[1].window: state: memory"
    assert any(p.startswith(where) for p in deploy_problems(plan))
    with pytest.raises(RunError, match=r"processors\[1\]\.window: state: memory"):
        LocalRun(plan, in_process=True)
    assert any("state: memory" in n.message for n in cfg.notes)
    default = compile_plan(parse_config(TEXT, source="pipeline.yaml", env={}))
    assert not [p for p in deploy_problems(default) if "window" in p]


def test_the_template_makes_the_window_table_with_a_ttl_and_grants_only_it() -> None:
    plan = compile_plan(parse_config(TEXT, source="pipeline.yaml", env={}))
    template = build_template(plan, code_bucket="b", code_key="k")
    table = template["Resources"]["PurchasesPerUserWindowTable"]["Properties"]
    assert table["TableName"] == "shop-purchases-per-user-windows"
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert [k["AttributeName"] for k in table["KeySchema"]] == ["shard", "window"]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires", "Enabled": True}
    assert table["Tags"] == [
        {"Key": "shardline:pipeline", "Value": "shop"},
        {"Key": "shardline:window-state", "Value": "2"},  # lanes may run on it (issue 16)
    ]
    role = template["Resources"]["PurchasesPerUserRole"]["Properties"]
    statements = role["Policies"][0]["PolicyDocument"]["Statement"]
    (grant,) = [s for s in statements if s["Sid"] == "WindowState"]
    assert grant["Action"] == [
        "dynamodb:BatchGetItem",
        "dynamodb:BatchWriteItem",  # closed windows' items deleted (the role refused it)
        "dynamodb:DeleteItem",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:Query",
        "dynamodb:UpdateItem",
    ]
    assert grant["Resource"] == [{"Fn::GetAtt": ["PurchasesPerUserWindowTable", "Arn"]}]


@pytest.mark.parametrize("consumer", [None, "efo"])
def test_the_window_function_may_list_its_stream_s_shards(consumer: str | None) -> None:
    """A reshard's child learns its parents with ListShards (README, "Windows"): the role
    allows it on the stream, whether the function polls or reads through its consumer."""
    plan = compile_plan(parse_config(TEXT, source="pipeline.yaml", env={}))
    if consumer:
        plan["functions"]["purchases-per-user"]["batch"]["consumer"] = consumer
    template = build_template(plan, code_bucket="b", code_key="k")
    role = template["Resources"]["PurchasesPerUserRole"]["Properties"]
    statements = role["Policies"][0]["PolicyDocument"]["Statement"]
    listing = [s for s in statements if "kinesis:ListShards" in s["Action"]]
    assert [s["Resource"] for s in listing] == [[{"Fn::GetAtt": ["Stream", "Arn"]}]]


# -- lanes (issue 16, slice S7: validate no longer refuses a window step with them) ------------


def _with_lanes(text: str, lanes: int) -> str:
    """The example's function with ``batch.parallelization: lanes``."""
    batch = f"    batch: {{parallelization: {lanes}}}\n"
    return text.replace("  purchases-per-user:\n", f"  purchases-per-user:\n{batch}")


def test_a_window_function_with_lanes_validates_in_both_and_compiles_to_lanes_mode() -> None:
    doc = yaml.safe_load(_with_lanes(TEXT, 2))
    assert doc["functions"]["purchases-per-user"]["batch"] == {"parallelization": 2}
    assert _validator_ok(copy.deepcopy(doc))
    assert VALIDATOR.is_valid(doc)
    cfg = parse_config(_with_lanes(TEXT, 2), source="pipeline.yaml", env={})
    assert [n.message for n in cfg.notes if "16 partition keys" in n.message]
    window = compile_plan(cfg)["functions"]["purchases-per-user"]["processors"][1]["window"]
    assert window["parallelization"] == 2
    store = Window(**window).store
    assert isinstance(store, DynamoDBStore)
    assert store.high_water


def test_lanes_with_a_window_step_and_aggregation_are_still_refused_by_both() -> None:
    doc = yaml.safe_load(_with_lanes(TEXT, 2))
    doc["stream"]["aggregated"] = True
    assert not VALIDATOR.is_valid(copy.deepcopy(doc))
    assert not _validator_ok(doc)


def test_the_example_cases_pass_with_lanes(tmp_path: Path) -> None:
    """``shardline test`` runs a case as one batch (no lanes), on the lanes-mode step."""
    (tmp_path / "pipeline.yaml").write_text(_with_lanes(TEXT, 3), encoding="utf-8")
    cases = (EXAMPLE / "pipeline.test.yaml").read_text(encoding="utf-8")
    (tmp_path / "pipeline.test.yaml").write_text(cases, encoding="utf-8")
    results = run_suite(load_suite(tmp_path / "pipeline.test.yaml"))
    assert results
    assert all(result.passed for result in results), [r for r in results if not r.passed]


def test_invoke_runs_a_window_function_with_lanes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``shardline invoke`` (one event, one batch) of a function at 2 lanes, its window in
    memory (no table): the hour closes and its result comes out, as at one lane."""
    text = _with_lanes(TEXT, 2).replace("state: dynamodb ", "state: memory ")
    cfg = parse_config(text, source="pipeline.yaml", env={})
    plan = compile_plan(cfg)
    assert plan["functions"]["purchases-per-user"]["batch"]["parallelization"] == 2
    factory = EventFactory()
    rows = [("u1", "2026-01-01T10:05:00Z", 20), ("u1", "2026-01-01T10:40:00Z", 5),
            ("u2", "2026-01-01T11:02:00Z", 1)]  # fmt: skip
    event = {"Records": [
        factory.raw(json.dumps({"event_type": "purchase", "user_id": user, "ts": ts,
                                "amount": amount, "product_id": "p", "page": "/"}).encode(), user)
        for user, ts, amount in rows
    ]}  # fmt: skip
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event), encoding="utf-8")
    invocation = run_invoke(plan, "purchases-per-user", str(path), stdout_sinks=True)
    assert invocation.result.response == {"batchItemFailures": []}
    assert record_lines(invocation) == []  # nothing dead-lettered, nothing to retry
    assert invocation.result.written == {"hourly": 1}
    assert "purchases-per-user/u1/2026-01-01T10:00:00Z" in capsys.readouterr().out
