"""The simulator against queueing theory (DESIGN.md §6.1).

With every overhead set to zero, one lock fed by Poisson arrivals is a FIFO
single-server queue and N CPUs fed by Poisson CPU work are M/M/c. Seeds are
fixed, so every test is deterministic; the sample sizes make the tolerances
roughly 2-3 standard errors of the estimators, so a wrong model fails them.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from replay.policies import resolve
from replay.sim import Costs, SimConfig, simulate
from replay.sim.queueing import (
    erlang_c_wait,
    md1_wait,
    mm1_wait,
    poisson_cpu_workload,
    poisson_lock_workload,
)

ZERO = Costs.zero()
MEAN_S = 1_000_000  # 1 ms services: arrival times in ns then almost never tie


def _lock_run(n, rho, service, seed, policy="i_mmap_rwsem=spinlock", mode="write"):
    w, sample = poisson_lock_workload(n, rho, service, MEAN_S, seed=seed, mode=mode)
    cfg = SimConfig(cpus=200, policy=resolve(policy), mode="open", costs=ZERO, probe=False, seed=seed)
    return simulate(w, cfg), sample, w


def _arrivals_and_services(w):
    ops = sorted((op.at_ns, op.hold_ns) for t in w.threads for op in t.ops)
    return np.array([a for a, _ in ops]), np.array([s for _, s in ops])


@pytest.mark.parametrize("rho", [0.5, 0.7, 0.9])
@pytest.mark.parametrize("service", ["exp", "det"])
def test_ticket_spinlock_waits_equal_the_lindley_recursion_customer_by_customer(rho, service):
    res, _, w = _lock_run(10_000, rho, service, seed=7)
    arrivals, services = _arrivals_and_services(w)
    expected = np.zeros(len(arrivals), dtype=np.int64)
    for i in range(1, len(arrivals)):
        expected[i] = max(0, expected[i - 1] + services[i - 1] - (arrivals[i] - arrivals[i - 1]))
    holds = res.tables["sim_lock_holds"].sort_by([("ts", "ascending")])
    attempt = holds.column("ts").to_numpy() - holds.column("wait").to_numpy()
    np.testing.assert_array_equal(attempt, arrivals)
    np.testing.assert_array_equal(holds.column("wait").to_numpy(), expected)


def _batch_means_se(holds, batches=20):
    """Standard error of the mean wait by batch means over the arrival-ordered waits
    (consecutive waits are strongly correlated; batch means are nearly independent)."""
    holds = holds.sort_by([("ts", "ascending")])
    wait = holds.column("wait").to_numpy().astype(float)
    means = np.array([b.mean() for b in np.array_split(wait, batches)])
    return means.std(ddof=1) / np.sqrt(batches)


@pytest.mark.parametrize(
    ("rho", "service", "n"),
    [(0.5, "exp", 80_000), (0.7, "exp", 80_000), (0.9, "exp", 100_000),
     (0.5, "det", 40_000), (0.7, "det", 40_000), (0.9, "det", 100_000)],
)
def test_mean_lock_wait_matches_pollaczek_khinchine(rho, service, n):
    """Within 3%, or within 3 batch-means standard errors where the sample cannot resolve 3%
    (M/M/1 at ρ ≥ 0.7: its waits are so correlated that 3% needs millions of customers;
    benchmarks/replay_speed.py --validate runs those)."""
    res, _, _ = _lock_run(n, rho, service, seed=1)
    lam = rho / MEAN_S
    theory = mm1_wait(lam, MEAN_S) if service == "exp" else md1_wait(lam, MEAN_S)
    sim = res.metrics["wait_mean_ns:i_mmap_rwsem"]
    se = _batch_means_se(res.tables["sim_lock_holds"])
    assert abs(sim - theory) <= max(0.03 * theory, 3 * se), (sim, theory, se)


@pytest.mark.parametrize("policy", ["i_mmap_rwsem=mutex", "i_mmap_rwsem=rwsem", "i_mmap_rwsem=qspinlock"])
def test_every_exclusive_lock_policy_is_an_mm1_queue_without_overheads(policy):
    """Mean wait does not depend on the service order of a work-conserving queue."""
    res, _, _ = _lock_run(40_000, 0.6, "det", seed=3, policy=policy)
    theory = md1_wait(0.6 / MEAN_S, MEAN_S)
    assert res.metrics["wait_mean_ns:i_mmap_rwsem"] == pytest.approx(theory, rel=0.03)


def test_readers_never_wait_for_each_other():
    res, _, _ = _lock_run(5_000, 0.9, "exp", seed=2, policy="i_mmap_rwsem=rwsem", mode="read")
    assert res.metrics["wait_mean_ns:i_mmap_rwsem"] == 0


@pytest.mark.parametrize(("cpus", "rho"), [(2, 0.7), (4, 0.8)])
def test_run_queue_wait_matches_erlang_c(cpus, rho):
    w, sample = poisson_cpu_workload(80_000, rho, cpus, MEAN_S, seed=5)
    fcfs = replace(ZERO, timeslice_ns=10**15)  # Erlang C assumes no time slicing
    res = simulate(w, SimConfig(cpus=cpus, policy=resolve("current"), mode="open", costs=fcfs, probe=False))
    sched = res.tables["sim_sched"]
    waits = sched.filter(sched.column("next_tid").to_numpy() >= 0).column("wait").to_numpy()
    assert len(waits) == sample.n  # one dispatch per arrival: no slices were cut
    theory = erlang_c_wait(cpus, sample.rate_per_ns, sample.mean_service_ns)
    assert waits.mean() == pytest.approx(theory, rel=0.05)
    # Little's law for the run queue: the engine's queue-length integral = λ·W from the switch log
    assert res.metrics["runq_mean"] == pytest.approx(waits.sum() / res.metrics["makespan_ns"], rel=1e-9)


def test_littles_law_time_average_waiters_equal_rate_times_mean_wait():
    res, _, _ = _lock_run(50_000, 0.8, "exp", seed=4)
    holds = res.tables["sim_lock_holds"]
    wait = holds.column("wait").to_numpy()
    span = res.metrics["makespan_ns"]
    # L from the engine's own queue-length integral, λW from the per-acquisition log
    assert res.metrics["waiters_mean:i_mmap_rwsem"] == pytest.approx(len(wait) / span * wait.mean(), rel=1e-9)
    assert res.metrics["waiters_mean:i_mmap_rwsem"] > 1


def test_same_seed_same_result_and_other_seed_other_probe_phases():
    from replay.sim.queueing import poisson_lock_workload as mk

    w, _ = mk(3_000, 0.7, "exp", 10_000, seed=1, streams=16)
    cfg = SimConfig(cpus=4, policy=resolve("3.0"), mode="open", seed=11)
    a, b = simulate(w, cfg), simulate(w, cfg)
    assert a.metrics == b.metrics
    for name in a.tables:
        assert a.tables[name].equals(b.tables[name]), name
    c = simulate(w, SimConfig(cpus=4, policy=resolve("3.0"), mode="open", seed=12))
    assert not c.tables["sim_probe"].column("ts").equals(a.tables["sim_probe"].column("ts"))
