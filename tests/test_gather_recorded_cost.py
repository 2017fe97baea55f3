"""A gather replays at its recorded duration when it has one, zero included; else at the default page costs."""

from __future__ import annotations

import pytest

from replay.policies import resolve
from replay.sim import Costs, SimConfig, simulate
from replay.sim.ops import Gather, Thread, Workload


def _makespan(gather: Gather, policy: str) -> int:
    w = Workload([Thread(tid=1, pid=1, mm=1, ops=[gather])], cpus=1)
    res = simulate(w, SimConfig(cpus=1, policy=resolve(policy), preempt="full", costs=Costs.zero(), probe=False))
    return int(res.metrics["makespan_ns"])


@pytest.mark.parametrize("policy", ["current", "2.6.39", "as-recorded"])
@pytest.mark.parametrize("recorded_ns", [0, 1_000, 7_777])
def test_a_gather_with_a_recorded_duration_takes_exactly_that_long_without_overheads(policy, recorded_ns):
    assert _makespan(Gather(4, recorded_ns=recorded_ns), policy) == recorded_ns


@pytest.mark.parametrize("policy", ["current", "2.6.39"])
def test_a_gather_without_a_recorded_duration_costs_the_default_zap_and_free_per_page(policy):
    c = Costs.zero()
    assert _makespan(Gather(4), policy) == 4 * (c.zap_page_ns + c.free_page_ns)
