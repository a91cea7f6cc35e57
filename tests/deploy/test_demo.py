"""``shardline demo``: the example end to end on the embedded local AWS, reconciled."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from deploy.cli import main

pytestmark = pytest.mark.integration


def test_demo_writes_every_sink_and_reconciles_from_the_stores():
    """Counts read back from DynamoDB, OpenSearch, S3 and SQS add up to what came in."""
    result = CliRunner().invoke(main, ["demo"])
    out = result.output
    assert result.exit_code == 0, out
    for sink, count in (("orders", 42), ("search", 211), ("archive", 300), ("dlq", 4)):
        assert any(
            line.split("│")[1:3]
            and line.split("│")[1].strip() == sink
            and line.split("│")[2].strip() == str(count)
            for line in out.splitlines()
        ), f"{sink} {count} not in\n{out}"
    assert "search documents with a user from the lookup" in out
    assert "NO" not in out
    assert out.count("│ yes │") == 2
