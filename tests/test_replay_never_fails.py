"""A replay never fails on a recording: a wait's timers die with the wait, and a state the model
cannot reach is a one-line error naming the trace, the thread and the time, with exit status 3."""

from __future__ import annotations

import importlib
from dataclasses import replace

import pytest

from replay.cli.main import main
from replay.errors import InconsistencyError
from replay.policies import resolve
from replay.sim import Costs, SimConfig, cengine, simulate
from replay.sim.ops import Block, Critical, LockRef, Think, Thread, Workload
from replay.sim.program import flatten
from replay.trace import Trace
from replay.workload import reconstruct
from tests.test_sim_engines import assert_identical, run_both
from tests.tracebuilder import ANON_VMA_ROOT, TraceBuilder

simulate_module = importlib.import_module("replay.sim.simulate")
batch_module = importlib.import_module("replay.batch")

needs_c = pytest.mark.skipif(not cengine.available(), reason="no C compiler: the C engine cannot be built")
SAMPLE = "sample_traces/mmap1_threads"


def _spin_then_recorded_wait() -> Workload:
    """Writer T2 spins on reader T1's mmap_lock (rspin limit at 1 000 + 10 500 ns), gets it at ~5 000,
    then waits 20 µs as recorded on an ``other`` lock, spinning through the old limit's time."""
    sem, other = LockRef("mmap_lock", 1), LockRef("other", 2)
    return Workload([
        Thread(tid=1, pid=1, ops=[Critical(sem, "read", 5_000)]),
        Thread(tid=2, pid=1, ops=[Critical(sem, "write", 100), Critical(other, "write", 100, recorded_wait_ns=20_000)],
               start_ns=1_000),
    ], cpus=2)


@pytest.mark.parametrize("engine", ["python", pytest.param("c", marks=needs_c)])
def test_a_spin_limit_does_not_outlive_the_spin_it_was_set_for(engine):
    res = simulate(_spin_then_recorded_wait(), SimConfig(cpus=2, policy=resolve("current"), probe=False,
                                                         engine=engine))
    waits = res.tables["sim_lock_waits"].to_pydict()
    assert waits["dur"] == [pytest.approx(4_000, abs=200), 20_000]  # the recorded wait, whole


@needs_c
def test_both_engines_agree_on_a_recorded_wait_after_a_spin():
    assert_identical(*run_both(_spin_then_recorded_wait(), SimConfig(cpus=2, policy=resolve("current"), probe=True,
                                                                     probe_period_ns=7_000)))


def _bad_opcode(monkeypatch):
    """Make every program a run gets (flattened in memory, or flattened ahead into files and mapped, as the
    CLI does) hold an opcode no engine knows at thread 2's second instruction."""
    def corrupt(p):
        code = p.code.copy()
        code[int(p.start[1]) + 1, 0] = 99
        return replace(p, code=code)
    monkeypatch.setattr(simulate_module, "flatten", lambda *a, **k: corrupt(flatten(*a, **k)))
    mapped = batch_module._mapped
    monkeypatch.setattr(batch_module, "_mapped", lambda *a, **k: corrupt(mapped(*a, **k)))


@pytest.mark.parametrize("engine", ["python", pytest.param("c", marks=needs_c)])
def test_an_inconsistency_names_the_thread_and_the_time(monkeypatch, engine):
    _bad_opcode(monkeypatch)
    with pytest.raises(InconsistencyError) as e:
        simulate(_spin_then_recorded_wait(), SimConfig(cpus=2, policy=resolve("current"), probe=False,
                                                       engine=engine))
    name = {"python": "Python", "c": "C"}[engine]
    # T2 reaches its hold (the second instruction) once T1's read hold hands it mmap_lock, 7 µs in
    assert str(e.value) == (f"tid 2 at 0.000007 s into the replay: bad opcode "
                            f"(policy set current, seed 0, {name} engine)")
    assert e.value.exit_status == 3


@pytest.mark.parametrize("seeds", ["1", "2"])
def test_the_cli_reports_an_inconsistency_in_one_line_with_exit_status_3(monkeypatch, capsys, seeds):
    _bad_opcode(monkeypatch)
    assert main(["replay", SAMPLE, "--seeds", seeds, "--engine", "python", "--compare", "current"]) == 3
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith(f"mmreplay: error: {SAMPLE}: tid ") and "s into the replay: bad opcode" in err




# -- reconstruction: no sleep inside a hold the trace did not measure -------------------------------------


def test_a_derived_hold_ends_where_its_holder_went_to_sleep(tmp_path):
    """Tier 1 sees anon_vma's contended waits, not its holds: T1's hold is bracketed by its mprotect's
    mmap_lock hold, inside which T1 also sleeps 20 µs. The hold ends at that sleep (2.6.39 replays
    anon_vma as a spinlock, whose holder cannot sleep; sleeping inside it deadlocked the spinners
    of a fresh mprotect-split recording); the sleep stays, after the hold."""
    b = TraceBuilder(cpus=2)
    t = b.thread(1)
    with t.syscall("mprotect"), t.mmap_lock("write"):
        with t.lock("anon_vma", ANON_VMA_ROOT, wait=1_000):
            t.run(500)
        t.sleep(20_000)
        t.run(100)
    w = reconstruct(Trace.open(b.write(tmp_path / "t")))
    anon = [op for th in w.threads for op in _walk(th.ops) if isinstance(op, Critical)
            and op.lock.lock_class == "anon_vma"]
    assert len(anon) == 1 and anon[0].hold_ns == 500 and anon[0].body == ()
    assert any(isinstance(op, Block) and op.ns == 20_000 for th in w.threads for op in _walk(th.ops))
    assert w.meta["notes"]["derived holds ended at the holder's next sleep"] == 1


def _walk(ops):
    for op in ops:
        yield op
        yield from _walk(getattr(op, "body", ()))
        if getattr(op, "downgrade", None) is not None:
            yield from _walk((op.downgrade,))


# -- as-recorded: a recorded wait replays as the recorder saw it -------------------------------------------


@pytest.mark.parametrize("engine", ["python", pytest.param("c", marks=needs_c)])
@pytest.mark.parametrize("slept, switches, spun", [(True, 2, 0), (False, 1, 7_000), (None, 2, 0)])
def test_as_recorded_waits_sleep_only_if_the_recorded_waiter_slept(engine, slept, switches, spun):
    """A 7 µs mmap_lock wait whose waiter stayed on its CPU (an optimistic spinner) replays on the
    CPU: one context switch (the first dispatch), not the sleep plus switch back in that every
    as-recorded wait of a sleeping class used to become; one that slept, or of unknown kind (no
    sched_switch in the trace), still sleeps."""
    lock = LockRef("mmap_lock", 1)
    w = Workload([Thread(tid=1, pid=1, ops=[Critical(lock, "write", 500, recorded_wait_ns=7_000,
                                                     recorded_wait_slept=slept)])], cpus=1)
    res = simulate(w, SimConfig(cpus=1, policy=resolve("as-recorded"), probe=False, engine=engine))
    waits = res.tables["sim_lock_waits"].to_pydict()
    assert waits["dur"] == [7_000] and waits["spun_ns"] == [spun] and waits["slept"] == [slept is not False]
    assert res.metrics["context_switches"] == switches
    assert res.metrics["preempt_off_max_ns"] == 0  # mmap_lock's wait and hold leave preemption on


def test_reconstruction_says_whether_a_recorded_waiter_slept(tmp_path):
    b = TraceBuilder(cpus=2)
    t = b.thread(1)
    with t.syscall("munmap"), t.mmap_lock("write", wait=3_000):
        t.run(100)
    with t.syscall("munmap"), t.mmap_lock("write", wait=4_000, sleeping=True):
        t.run(100)
    w = reconstruct(Trace.open(b.write(tmp_path / "t")))
    crit = [op for th in w.threads for op in _walk(th.ops) if isinstance(op, Critical)]
    assert [(c.recorded_wait_ns, c.recorded_wait_slept) for c in crit] == [(3_000, False), (4_000, True)]
    w = reconstruct(Trace.open(b.write(tmp_path / "u", omit=("sched_switch",))))
    crit = [op for th in w.threads for op in _walk(th.ops) if isinstance(op, Critical)]
    assert [c.recorded_wait_slept for c in crit] == [None, None]


# -- open replay of a recording: an op that ends early does not become a sleep --------------------------


@pytest.mark.parametrize("engine", ["python", pytest.param("c", marks=needs_c)])
def test_open_replay_of_a_recording_waits_for_recorded_starts_on_the_cpu(engine):
    """Two 10 µs think stretches recorded back to back, the second at 15 µs (the first took 15 µs
    as recorded: a tracer's time, a preemption). Replayed open, the task waits the 5 µs for the
    recorded start on its CPU (it was running): one dispatch, not a sleep and a switch per op,
    which made open replays of fresh recordings show 85x the recorded context switches. A synthetic
    arrival stream (not contiguous) still sleeps between arrivals."""
    ops = [Think(10_000, at_ns=0), Think(10_000, at_ns=15_000)]
    for contiguous, switches in ((True, 1), (False, 2)):
        w = Workload([Thread(tid=1, pid=1, ops=ops)], cpus=1, contiguous=contiguous)
        res = simulate(w, SimConfig(cpus=1, policy=resolve("current"), mode="open", probe=False, engine=engine))
        assert res.metrics["context_switches"] == switches
        # the first dispatch's switch fits in the 5 µs; the sleeper's switch back in comes on top
        assert res.metrics["makespan_ns"] == 25_000 + (0 if contiguous else Costs().context_switch_ns)


def test_a_derived_hold_ends_before_its_holder_waits_on_the_same_lock_again(tmp_path):
    """Lock stealing: T1 releases anon_vma and takes it again before T2, queued since before T1's
    first acquisition, gets it. The hand-off evidence (T2 is the next to acquire) would stretch T1's
    first hold over its second wait: T1 would then wait for itself, and a fresh mprotect-split
    recording deadlocked under every policy set. T1's second wait proves the first hold had ended."""
    b = TraceBuilder(cpus=2)
    t1 = b.thread(1, cpu=0)
    with t1.lock("anon_vma", ANON_VMA_ROOT, wait=1_000):
        t1.run(300)
    t1.run(200)
    with t1.lock("anon_vma", ANON_VMA_ROOT, wait=500):
        t1.run(300)
    t2 = b.thread(2, cpu=1, start_ns=b.start_ns + 500)
    with t2.lock("anon_vma", ANON_VMA_ROOT, wait=2_000):
        t2.run(300)
    w = reconstruct(Trace.open(b.write(tmp_path / "t")))
    anon = [op for th in w.threads if th.tid == 1 for op in _walk(th.ops)
            if isinstance(op, Critical) and op.lock.lock_class == "anon_vma"]
    assert len(anon) == 2 and all(not any(isinstance(c, Critical) for c in _walk(op.body)) for op in anon)
    assert anon[0].hold_ns <= 500
    assert w.meta["notes"]["derived holds ended at the holder's next wait on the same lock"] == 1
    for s in ("2.6.39", "current"):
        res = simulate(w, SimConfig(cpus=2, policy=resolve(s), seed=1))  # finishes: no thread waits for itself
        assert res.tables["sim_ops"].num_rows >= 0
