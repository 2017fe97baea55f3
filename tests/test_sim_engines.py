"""The compiled simulator (engine.c, flatten.c) gives the Python one's results (engine.py, program.py).

The Python code is the reference; the C code transcribes it for speed. Every
event table and every metric must be equal, bit for bit, on random workloads
under random policies, preemption models, costs and seeds (hypothesis), the
flattened programs must be equal, and both must fail the same way. How the C
parts are built and found: tests/test_sim_compiled.py.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from replay.errors import MmreplayError
from replay.policies import resolve
from replay.sim import Costs, SimConfig, cengine, cflatten, simulate
from replay.sim.ops import Block, Critical, LockRef, Span, Think, Thread, Workload
from replay.sim.program import flatten
from replay.sim.queueing import poisson_lock_workload
from tests.test_sim_invariants import COSTS, SETTINGS, workloads

# costs that reach the engines' rarer branches: free context switches, no jitter, two sockets, failing batch
# allocations, hand-offs after short waits, unlocks of mutex-classic spinning on wait_lock, the tracer's time at
# mmap_lock acquisitions (and after release and downgrade stamps), lock data that follows the lock between CPUs,
# recorded hand-offs drawn per grant to a spinner, recorded waker -> activation delays drawn per woken lock sleeper,
# a lock sleeper's way to sleep (grants and wakes to retry inside it), blocks that hold their wake-up, recorded
# release -> switch-in delays drawn per lock sleeper woken after a long sleep
cost_variants = st.builds(
    lambda cs, jitter, per_socket, fail, mh, rh, ticket, waker, tracer, lines, handoffs, wakes, window, exact, longs,
    long_after: replace(
        COSTS, timeslice_ns=40_000, context_switch_ns=cs, wake_jitter_ns=jitter, cpus_per_socket=per_socket,
        batch_alloc_fail_p=fail, mutex_handoff_after_ns=mh, rwsem_handoff_after_ns=rh,
        ticket_handoff_per_waiter=ticket, mutex_waker_ns=waker, mmap_lock_tracer_ns=tracer, lock_data_lines=lines,
        mmap_lock_release_tail_ns=tracer // 5, mmap_lock_downgrade_tail_ns=tracer // 4,  # the tracer's, at release
        line_transfer_samples_ns=handoffs, lock_wake_samples_ns=wakes, lock_sleep_window_ns=window,
        blocks_hold_wakeup=exact, lock_wake_long_samples_ns=longs, lock_wake_long_after_ns=long_after),
    st.sampled_from([0, 1_700]), st.sampled_from([0, 1_000]), st.sampled_from([0, 1, 2]),
    st.sampled_from([0.0, 0.5]), st.sampled_from([2_000, 1_000_000]), st.sampled_from([3_000, 4_000_000]),
    st.sampled_from([0.5, 0.37]), st.sampled_from([0, 2_000]), st.sampled_from([0, 500]), st.sampled_from([0, 3]),
    st.sampled_from([(), (0, 31, 400, 8_000), tuple(range(150, 900, 3))]),
    st.sampled_from([(), (2_400, 17_000, 40_000), tuple(range(1_000, 30_000, 700))]),
    st.sampled_from([0, 300, 8_000]),
    st.sampled_from([0, 1]),
    st.sampled_from([(), (900, 26_000, 45_000)]),
    st.sampled_from([0, 5_000, 200_000]),
)
configs = st.builds(
    lambda cpus, pol, pre, seed, period, mode, costs, perturb, probe: SimConfig(
        cpus=cpus, policy=resolve(pol), preempt=pre, seed=seed, costs=costs, probe_period_ns=period, mode=mode,
        perturb=perturb, probe=probe),
    st.integers(1, 4),
    st.sampled_from(["2.6.39", "3.0", "current", "as-recorded", "i_mmap_rwsem=qspinlock,gather=percpu",
                     "anon_vma=mutex,page_table_lock=qspinlock", "mmap_lock=mutex,i_mmap_rwsem=rwsem",
                     "i_mmap_rwsem=rwsem-classic,anon_vma=rwsem-classic",
                     "i_mmap_rwsem=mutex-classic,mmap_lock=mutex-classic"]),
    st.sampled_from(["none", "voluntary", "full"]),
    st.integers(0, 2**31 - 1),
    st.sampled_from([7_000, 20_000, 1_000_000]),
    st.sampled_from(["closed", "open"]),
    cost_variants,
    st.sampled_from([0.0, 0.3]),
    st.booleans(),
)

needs_c = pytest.mark.skipif(not cengine.available(), reason="the compiled engine is not installed (pip install .)")


def _walk_available() -> bool:
    try:
        cflatten.load()
    except cengine.EngineUnavailable:
        return False
    return True


needs_c_walk = pytest.mark.skipif(not _walk_available(),
                                  reason="the compiled flattening is not installed (pip install .)")


def run_both(w: Workload, cfg: SimConfig):
    """Both engines' results, or both engines' error messages."""
    out = []
    for engine in ("python", "c"):
        try:
            out.append(simulate(w, replace(cfg, engine=engine)))
        except MmreplayError as e:
            out.append(str(e))
    return out


def assert_identical(py, c) -> None:
    if isinstance(py, str) or isinstance(c, str):
        assert py == c
        return
    assert py.metrics == c.metrics
    for name, table in py.tables.items():
        assert table.equals(c.tables[name]), name


@needs_c
@SETTINGS
@given(w=workloads, cfg=configs)
def test_the_c_engine_gives_the_python_engines_results_bit_for_bit(w, cfg):
    py, c = run_both(w, cfg)
    assert_identical(py, c)
    if isinstance(py, str):
        return
    for engine in ("python", "c"):  # the metrics alone (the C engine keeps only the columns they read)
        alone = simulate(w, replace(cfg, engine=engine), tables=False)
        assert list(alone.metrics.items()) == list(py.metrics.items()) and alone.tables == {}


@needs_c
@pytest.mark.parametrize("probe", [False, True])
def test_both_engines_report_the_same_deadlock(probe):
    lock = LockRef("i_mmap_rwsem", 1)
    w = Workload([Thread(tid=1, pid=1, ops=[Critical(lock, "write", 100, (Block(10_000),))]),
                  Thread(tid=2, pid=1, ops=[Critical(lock, "write", 100)], start_ns=50)], cpus=1)
    py, c = run_both(w, SimConfig(cpus=1, policy=resolve("i_mmap_rwsem=spinlock"), probe=probe))
    assert isinstance(py, str) and "deadlocked" in py and c == py


@needs_c
def test_both_engines_agree_on_a_long_m_m_1_queue():
    w, _ = poisson_lock_workload(20_000, 0.9, "exp", 1_000, seed=4)
    cfg = SimConfig(cpus=200, policy=resolve("i_mmap_rwsem=spinlock"), mode="open", costs=Costs.zero(), probe=False)
    assert_identical(*run_both(w, cfg))


@needs_c
def test_the_c_engine_reports_progress_up_to_completion():
    lock = LockRef("i_mmap_rwsem", 1)
    w = Workload([Thread(tid=i, pid=1, ops=[Critical(lock, "write", 100)] * 40_000) for i in (1, 2)], cpus=2)
    seen: list[float] = []
    simulate(w, SimConfig(cpus=2, policy=resolve("current"), probe=False, engine="c"), progress=seen.append)
    assert len(seen) >= 2 and seen == sorted(seen) and seen[-1] == 1.0 and 0 < seen[0] < 1


def _one_lock_workload() -> Workload:
    lock = LockRef("i_mmap_rwsem", 1)
    return Workload([Thread(tid=i, pid=1, ops=[Critical(lock, "write", 100)] * 50) for i in (1, 2)], cpus=2)


@needs_c
def test_fractional_costs_run_on_the_python_engine():
    w = _one_lock_workload()
    costs = replace(Costs(), context_switch_ns=1_700.5)
    with pytest.raises(cengine.EngineUnavailable, match="whole-number"):
        simulate(w, SimConfig(cpus=2, policy=resolve("current"), costs=costs, engine="c"))
    cfg = SimConfig(cpus=2, policy=resolve("current"), costs=costs, probe=False)
    auto = simulate(w, cfg)
    assert auto.metrics == simulate(w, replace(cfg, engine="python")).metrics
    whole = simulate(w, replace(cfg, costs=replace(costs, context_switch_ns=1_700))).metrics
    # the half nanosecond was kept on every switch, not truncated
    assert auto.metrics["overhead_cpu_ns"] - whole["overhead_cpu_ns"] == 0.5 * whole["context_switches"] > 0


def test_an_unknown_engine_is_a_usage_error():
    from replay.errors import UsageError

    with pytest.raises(UsageError, match="engine"):
        SimConfig(cpus=1, policy=resolve("current"), engine="fortran")


@needs_c
def test_kernel_addresses_above_int64_are_fine_for_both_engines():
    """mm and lock identities in real traces are kernel pointers (>= 2**63)."""
    mm = 0xFFFF_8881_2345_6000
    lock = LockRef("i_mmap_rwsem", 0xFFFF_8881_0000_1000)
    w = Workload([Thread(tid=i, pid=1, mm=mm, ops=[Critical(lock, "write", 300)] * 20) for i in (1, 2, 3)], cpus=2)
    py, c = run_both(w, SimConfig(cpus=2, policy=resolve("2.6.39"), seed=1))
    assert_identical(py, c)
    assert set(c.tables["sim_lock_holds"].column("lock_addr").to_pylist()) == {lock.addr}


def _programs(w: Workload, cfg: SimConfig):
    args = (w, cfg.policy.lock_policy, cfg.policy.gather, cfg.preempt, cfg.mode == "open", cfg.costs, cfg.perturb,
            cfg.seed)
    out = []
    for compiled in (False, True):
        try:
            out.append(flatten(*args, compiled=compiled))
        except (ValueError, TypeError) as e:
            out.append(f"{type(e).__name__}: {e}")
    return out


@needs_c_walk
@SETTINGS
@given(w=workloads, cfg=configs)
def test_the_compiled_walk_flattens_to_the_same_program(w, cfg):
    py, c = _programs(w, cfg)
    for field in ("code", "points", "start", "floats"):
        assert np.array_equal(getattr(py, field), getattr(c, field)), field
    assert py.locks == c.locks and py.kinds == c.kinds


@needs_c_walk
@pytest.mark.parametrize("op", [
    Critical(LockRef("i_mmap_rwsem", 1), "exclusive", 10),
    Critical(LockRef("i_mmap", 1), "write", 10),
    Span("fault", (Critical(LockRef("mmap_lock", 1), "read", 10, (Think(5), "not an op")),)),
])
def test_the_compiled_walk_rejects_bad_ops_with_the_same_errors(op):
    w = Workload([Thread(tid=7, pid=1, ops=[Think(10), op])], cpus=1)
    py, c = _programs(w, SimConfig(cpus=1, policy=resolve("current")))
    assert isinstance(py, str) and py == c and "thread 7" in py


@needs_c
@pytest.mark.parametrize("policy", ["mmap_lock=rwsem", "mmap_lock=rwsem-classic"])
def test_both_engines_wake_the_same_readers_from_a_long_rwsem_queue(policy):
    """300 readers and a writer every 50th behind a blocked writer: the reader wake-up limit (256)
    and the writers' places in the queue, which the small random workloads never reach."""
    lock = LockRef("mmap_lock", 1)
    waiters = [Thread(tid=10 + i, pid=1, ops=[Critical(lock, "write" if i % 50 == 49 else "read", 100)] * 3,
                      start_ns=1_000 + i) for i in range(300)]
    w = Workload([Thread(tid=1, pid=1, ops=[Critical(lock, "write", 100, (Block(5_000),))]), *waiters], cpus=64)
    assert_identical(*run_both(w, SimConfig(cpus=64, policy=resolve(policy), seed=2)))


@needs_c
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_both_engines_agree_on_writers_spinning_on_readers(seed):
    """Many readers and a few writers on one mmap_lock with the probe on: writers spin on readers,
    time out, mark the lock nonspinnable, and readers steal it from woken writers."""
    lock = LockRef("mmap_lock", 1)
    threads = [Thread(tid=i, pid=1, ops=[Think(300 + 97 * i), Critical(lock, "write" if i % 4 == 0 else "read",
                                                                      2_000 + 1_500 * (i % 7))] * 40,
                      start_ns=37 * i) for i in range(1, 13)]
    w = Workload(threads, cpus=6)
    py, c = run_both(w, SimConfig(cpus=6, policy=resolve("current"), seed=seed, probe_period_ns=20_000))
    assert_identical(py, c)
    waits = c.tables["sim_lock_waits"].to_pylist()
    assert any(r["mode"] == "write" and r["spun_ns"] > 0 and r["slept"] for r in waits)


def _two_writers():
    from replay.sim.simulate import program_for

    lock = LockRef("mmap_lock", 1)
    w = Workload([Thread(1, 1, [Think(100), Critical(lock, "write", 50)]),
                  Thread(2, 1, [Think(120), Critical(lock, "write", 40)])], cpus=2)
    cfg = SimConfig(cpus=2, policy=resolve("current"), preempt="voluntary", seed=1, engine="c")
    program = program_for(w, cfg)
    args = (program, w, cfg.cpus, cfg.preempt, cfg.policy.gather, cfg.seed, cfg.costs, cfg.probe, cfg.probe_period_ns)
    return args


@needs_c
def test_the_c_engines_log_columns_are_the_python_engines_rows_and_outlive_it():
    """The C engine hands its log columns over (its own memory, no copy): they are the Python engine's
    rows cut into the typed columns, and stay valid after the engine is freed."""
    from replay.sim import logtables
    from replay.sim.engine import Engine

    args = _two_writers()
    py = Engine(*args)
    py.run()
    want = {name: logtables.from_rows(name, rows) for name, rows in py.logs().items()}
    eng = cengine.CEngine(*args)  # every column unless keep() says otherwise
    eng.run()
    got = eng.columns()
    with pytest.raises(RuntimeError, match="handed over"):
        eng.columns()
    eng.free()
    with pytest.raises(RuntimeError, match="freed"):
        eng.columns()
    assert any(log.rows == 1 for log in got.values())
    for name, log in got.items():
        assert log.rows == want[name].rows and log.columns.keys() == want[name].columns.keys(), name
        for col, a in log.columns.items():
            b = want[name].columns[col]
            assert a.dtype == b.dtype and np.array_equal(a, b), (name, col)


@needs_c
def test_the_c_engine_keeps_only_the_columns_asked_for():
    """keep(): the other columns are not logged, the row counts are the same."""
    from replay.sim import logtables

    args = _two_writers()
    full = cengine.CEngine(*args)
    full.keep()
    full.run()
    every = full.columns()
    eng = cengine.CEngine(*args)
    eng.keep(logtables.METRIC_COLUMNS)
    eng.run()
    got = eng.columns()
    for name, log in got.items():
        assert log.rows == every[name].rows
        assert set(log.columns) == set(logtables.METRIC_COLUMNS[name])
        for col, a in log.columns.items():
            assert np.array_equal(a, every[name].columns[col])
    eng2 = cengine.CEngine(*args)
    eng2.run()
    with pytest.raises(RuntimeError, match="before it runs"):
        eng2.keep({})
