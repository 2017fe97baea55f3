"""The tier-1 tracer's own time at an mmap_lock acquisition is replayed like the recorded waits hold it.

A recorded mmap_lock wait runs from mmap_lock_start_locking to acquire_returned: an
uncontended acquisition "waits" the first tracepoint's BPF program and the fast path
(0.1 to 0.7 µs here, docs/VALIDATION.md §c.1, §e). With ``mmap_lock_tracer_ns`` (which
``--calibrate`` measures) the engine runs min(recorded wait, it) of CPU time before the
attempt and counts it in the acquisition's wait, so replayed waits and the system calls
around them hold the tracer's time as the recorded ones do. 0 is an untraced kernel.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from replay.policies import resolve
from replay.sim import Costs, SimConfig, simulate
from replay.sim.calibrate import _uncontended_mmap_lock_waits, calibrate
from replay.sim.ops import Critical, LockRef, Span, Think, Thread, Workload
from replay.trace import Trace
from tests.test_sim_engines import assert_identical, needs_c, run_both

MMAP = LockRef("mmap_lock", 0x100)
ENGINES = ["python", pytest.param("c", marks=needs_c)]


def _one_mmap(recorded_wait: int) -> Workload:
    crit = Critical(MMAP, "write", 500, recorded_wait_ns=recorded_wait, recorded_wait_slept=False)
    return Workload([Thread(1, 1, [Span("mmap", (Think(1_000), crit, Think(1_000)))])], cpus=1)


def _replay(w: Workload, tracer: int, policy: str = "current", engine: str = "python"):
    cfg = SimConfig(cpus=w.cpus, policy=resolve(policy), preempt="none", probe=False, engine=engine,
                    costs=replace(Costs.zero(), cas_ns=0, mmap_lock_tracer_ns=tracer))
    res = simulate(w, cfg)
    holds = res.tables["sim_lock_holds"]
    return holds.column("wait").to_pylist(), res.tables["sim_ops"].column("dur").to_pylist()


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("recorded", "tracer", "wait"), [
    (300, 200, 200),  # the tracer's time, at most mmap_lock_tracer_ns
    (100, 200, 100),  # never more than the acquisition's own recorded wait
    (300, 0, 0),      # untraced kernel: the uncontended wait is 0
    (0, 200, 0),      # the recorded acquisition did not wait (a downgrade's read hold)
])
def test_an_uncontended_acquisition_waits_the_tracers_time(engine, recorded, tracer, wait):
    waits, spans = _replay(_one_mmap(recorded), tracer, engine=engine)
    assert waits == [wait]
    assert spans == [2_500 + wait]  # the system call holds it too


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("tracer", "span"), [(200, 2_700), (0, 2_512)])
def test_a_traced_acquisitions_fast_path_is_in_the_tracers_time(engine, tracer, span):
    """The recorded wait holds the acquire's atomic and the work after the release holds the release's: with
    the tracer's time replayed the lock's fast path (cas_ns) is not charged again; untraced, it is."""
    cfg = SimConfig(cpus=1, policy=resolve("current"), preempt="none", probe=False, engine=engine,
                    costs=replace(Costs.zero(), cas_ns=12, mmap_lock_tracer_ns=tracer))
    res = simulate(_one_mmap(300), cfg)
    assert res.tables["sim_lock_holds"].column("dur").to_pylist() == [500 + (0 if tracer else 12)]
    assert res.tables["sim_ops"].column("dur").to_pylist() == [span]


def test_as_recorded_replays_the_whole_recorded_wait_once():
    waits, spans = _replay(_one_mmap(300), 200, policy="as-recorded")
    assert waits == [300] and spans == [2_800]


@needs_c
def test_both_engines_agree_with_the_tracer_on_contended_threads():
    crit = [Critical(MMAP, "write", 3_000, recorded_wait_ns=400, recorded_wait_slept=False), Think(200)]
    w = Workload([Thread(t, 1, crit * 50) for t in (1, 2, 3)], cpus=2)
    cfg = SimConfig(cpus=2, policy=resolve("current"), preempt="none", probe=True, seed=3,
                    costs=replace(Costs(), mmap_lock_tracer_ns=300))
    py, c = run_both(w, cfg)
    assert_identical(py, c)
    waits = np.asarray(py.tables["sim_lock_holds"].column("wait"))
    assert (waits >= 300).all()  # every acquisition waited the tracer's time at least, contended or not
    assert pc.sum(py.tables["sim_lock_waits"].column("dur")).as_py() > 0


def test_calibrate_takes_the_tracers_time_from_uncontended_acquisitions():
    trace = Trace.open(Path(__file__).resolve().parents[1] / "sample_traces" / "mmap1_threads")
    tw = np.asarray(_uncontended_mmap_lock_waits(trace))
    assert len(tw) > 20_000  # the two threads shared one vCPU: nearly every acquisition was uncontended
    cal = calibrate(trace)
    assert cal.costs.mmap_lock_tracer_ns == round(float(np.quantile(tw, 0.99)))
    assert 50 < cal.costs.mmap_lock_tracer_ns < 1_000
    assert any(n.startswith("mmap_lock_tracer_ns = ") for n in cal.notes)
