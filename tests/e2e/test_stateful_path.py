"""A hypothesis state machine over the whole path: producer → stream → local event source
mapping → in-process handler → sinks, on the local servers, with a small stream.

The steps, in any order: put records (some poison, some KPL-aggregated), turn a fault on at
the HTTP layer of one sink (throttle, 5xx, dropped connection, lost acknowledgement, each
for 40% of its writes) or all faults off, stop the run in the middle of its work and start
it again with the same worker id, and split an open shard. After every step the run is
given time to finish what it holds (until it is idle and every record is accounted for, or
a deadline), then the reconciliation of :mod:`tests.e2e.reconcile` must hold: nothing lost,
nothing applied twice, per key nothing applied out of order.

Sizes: a few examples of a few steps in CI (the file runs within a minute on two cores);
``SHARDLINE_E2E_SCALE`` multiplies the examples, and its square root the steps
(``make soak``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.e2e import test_faults
from tests.e2e.test_faults import (
    DROP,
    LOST_ACK,
    SCALE,
    THROTTLE_AND_5XX,
    WRITES,
    Background,
    Scenario,
    route_sinks_through,
    settle,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.e2e.reconcile import Figures
    from tests.faultproxy import Fault, FaultProxy, Rule

pytestmark = pytest.mark.e2e

# test_faults' fixtures (servers, proxies, environment, report), as fixtures of this module.
aws = test_faults.aws
moto_endpoint = test_faults.moto_endpoint
opensearch_endpoint = test_faults.opensearch_endpoint
aws_split_semantics = test_faults.aws_split_semantics
kinesis_split = test_faults.kinesis_split
local_env = test_faults.local_env
aws_proxy = test_faults.aws_proxy
search_proxy = test_faults.search_proxy
report = test_faults.report

EXAMPLES = max(1, round(5 * SCALE))
STEPS = max(2, round(10 * SCALE**0.5))
SETTLE_S = 45.0  # the deadline of "eventually" after each step
FAULTS = ("throttle", "5xx", "drop", "lost_ack")
FAULT_P = 0.4  # of the chosen sink's writes


@dataclass
class Servers:
    """What every example shares: servers, proxies, a folder; and what examples found."""

    aws: Callable[[str], Any]
    opensearch_endpoint: str
    aws_proxy: FaultProxy
    search_proxy: FaultProxy
    folder: Path
    finals: list[Figures] = field(default_factory=list)


def fault_of(sink: str, kind: str) -> Fault:
    if kind == "drop":
        return DROP
    if kind == "lost_ack":
        return LOST_ACK
    throttle, server_error = THROTTLE_AND_5XX[sink]
    return throttle if kind == "throttle" else server_error


class WholePath(RuleBasedStateMachine):
    """One pipeline per example (one shard at first), its run in a thread throughout."""

    servers: Servers  # set by the test before the machine runs

    def __init__(self) -> None:
        super().__init__()
        servers = self.servers
        name = f"sf-{uuid.uuid4().hex[:10]}"
        folder = servers.folder / name
        folder.mkdir()
        self.scenario = Scenario.make(
            servers.aws, folder, name, opensearch=servers.search_proxy.url,
            opensearch_direct=servers.opensearch_endpoint, shards=1, batch=20,
        )  # fmt: skip
        self.reconciler = self.scenario.reconciler()
        self.run = Background(self.scenario.local)
        self.run.start()
        self.rules: list[tuple[FaultProxy, Rule]] = []
        self.splits = 0
        self.last: Figures | None = None

    @initialize(
        records=st.integers(10, 60),
        keys=st.integers(2, 8),
        faults=st.lists(st.tuples(st.sampled_from(sorted(WRITES)), st.sampled_from(FAULTS)),
                        max_size=2),
    )  # fmt: skip
    def first_records(self, records: int, keys: int, faults: list[tuple[str, str]]) -> None:
        """Every example starts with records, and often with faults on."""
        for sink, kind in faults:
            self.fault_on(sink, kind)
        self.scenario.produce(records, keys, poison_every=9)

    @rule(
        records=st.integers(1, 40),
        keys=st.integers(1, 6),
        poison=st.booleans(),
        aggregate=st.booleans(),
    )
    def produce(self, records: int, keys: int, poison: bool, aggregate: bool) -> None:
        self.scenario.produce(records, keys, poison_every=7 if poison else 0, aggregate=aggregate)

    @rule(sink=st.sampled_from(sorted(WRITES)), kind=st.sampled_from(FAULTS))
    def fault_on(self, sink: str, kind: str) -> None:
        proxy = self.servers.search_proxy if sink == "opensearch" else self.servers.aws_proxy
        for selector in WRITES[sink]:
            added = proxy.inject(fault_of(sink, kind), probability=FAULT_P, **selector)
            self.rules.append((proxy, added))

    @precondition(lambda self: self.rules)
    @rule()
    def faults_off(self) -> None:
        for proxy, added in self.rules:
            proxy.remove(added)
        self.rules.clear()

    @rule(records=st.integers(0, 40))
    def stop_and_restart(self, records: int) -> None:
        """Put records, stop the run while it works on them, start it again (same id)."""
        if records:
            self.scenario.produce(records, keys=4)
        self.run.stop()
        self.run.start()

    @precondition(lambda self: self.splits < 2)
    @rule()
    def reshard(self) -> None:
        """Split the open shard with the widest hash range at its middle."""
        kinesis = self.servers.aws("kinesis")
        shards = kinesis.list_shards(StreamName=self.scenario.name)["Shards"]
        open_shards = [s for s in shards if "EndingSequenceNumber" not in s["SequenceNumberRange"]]

        def width(shard: dict[str, Any]) -> int:
            hashes = shard["HashKeyRange"]
            return int(hashes["EndingHashKey"]) - int(hashes["StartingHashKey"])

        widest = max(open_shards, key=width)
        low = int(widest["HashKeyRange"]["StartingHashKey"])
        middle = low + width(widest) // 2 + 1
        kinesis.split_shard(
            StreamName=self.scenario.name,
            ShardToSplit=widest["ShardId"],
            NewStartingHashKey=str(middle),
        )
        self.splits += 1

    @invariant()
    def reconciled(self) -> None:
        figures = settle(self.scenario, self.run, self.reconciler, SETTLE_S)
        figures.check()
        assert figures.complete, f"not every record accounted for in {SETTLE_S} s"
        self.last = figures

    def teardown(self) -> None:
        for proxy, added in self.rules:
            proxy.remove(added)
        self.run.stop()
        if self.last is not None:
            self.servers.finals.append(self.last)


@pytest.mark.usefixtures("local_env", "kinesis_split")
def test_random_produce_fault_restart_and_reshard_steps_keep_the_invariants(
    aws, opensearch_endpoint, aws_proxy, search_proxy, monkeypatch, tmp_path, report
):
    route_sinks_through(monkeypatch, aws_proxy)
    WholePath.servers = Servers(aws, opensearch_endpoint, aws_proxy, search_proxy, tmp_path)
    run_state_machine_as_test(
        WholePath,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            phases=[Phase.explicit, Phase.reuse, Phase.generate],  # a shrink would take minutes
        ),
    )
    finals = WholePath.servers.finals
    assert finals, "no example ran"
    total = finals[0]
    for figures in finals[1:]:
        total = type(total)(**{
            name: getattr(total, name) + getattr(figures, name)
            for name in ("produced", "delivered", "dead_lettered", "lost", "duplicates_seen",
                         "duplicates_removed", "order_violations", "on_failure_messages")
        })  # fmt: skip
    injected = ", ".join(
        f"{name} x{n}" for name, n in sorted((aws_proxy.injected + search_proxy.injected).items())
    )
    report(f"stateful: {len(finals)} examples x <={STEPS} random steps (produce, fault, "
           "stop/restart, reshard)", injected or "no fault drawn", total)  # fmt: skip
    assert total.ok
