"""The identity check (DESIGN.md §6.2): replaying a trace under `as-recorded` with enough CPUs
reproduces the recorded timeline exactly — every operation's start and end, every lock's wait."""

from __future__ import annotations

import pytest

from replay.policies.sets import resolve
from replay.sim import SimConfig, simulate
from replay.sim.costs import Costs
from replay.trace import Trace
from replay.workload import reconstruct
from tests.tracebuilder import ANON_VMA_ROOT, FILE_A, TraceBuilder


def contended_trace(path):
    """Three tasks: munmaps contending on one file's i_mmap_rwsem, faults, an anon_vma wait, sleeps."""
    b = TraceBuilder(cpus=2)
    tasks = [b.thread(100 + i, comm="mmap-file") for i in range(3)]
    for round_ in range(3):
        for i, t in enumerate(tasks):
            t.run(700 + 300 * i)
            with t.syscall("munmap", arg0=0x7F00_0000_0000, arg1=8192):
                t.run(250)
                with t.mmap_lock("write", wait=400 * (round_ % 2)):
                    t.run(150)
                    with t.lock("i_mmap_rwsem", FILE_A, wait=(i * 900 + round_ * 100), sleeping=i == 2):
                        t.run(500)
                    t.gather(pages=2, flushes=1)
            with t.fault(0x7F00_0000_3000, wait=100 * i):
                t.run(600)
            if i == 1:
                with t.syscall("mmap"), t.mmap_lock("write"), t.lock("anon_vma", ANON_VMA_ROOT, wait=350):
                    t.run(200)
            t.sleep(3_000 + 1_000 * i)
    return b.write(path)


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_as_recorded_replay_reproduces_the_recorded_timeline(tmp_path, mode):
    trace = Trace.open(contended_trace(tmp_path / "t"))
    w = reconstruct(trace)
    config = SimConfig(cpus=len(w.threads), policy=resolve("as-recorded"), preempt="full", seed=0,
                       mode=mode, costs=Costs.zero(), probe=False)
    res = simulate(w, config)

    kinds = {"exit_group": "exit"}
    recorded_ops = sorted(
        [(tid, kinds.get(name, name), ts, dur) for tid, ts, dur, name in
         trace.read("syscalls").select("tid", "ts", "dur", "name").rows()]
    )
    sim_ops = sorted((r["tid"], r["kind"], r["ts"], r["dur"]) for r in res.tables["sim_ops"].to_pylist())
    assert [r for r in sim_ops if r[1] != "fault"] == recorded_ops

    # faults: from the entry to the release of their mmap_lock read hold
    holds = trace.read("lock_holds").select("tid", "ts", "dur", "wait", "mode").rows()
    reads = sorted((tid, ts - wait, ts + dur) for tid, ts, dur, wait, mode in holds if mode == "read")
    faults = sorted(trace.read("page_faults").select("tid", "ts").rows())
    expected_faults = []
    for tid, ts in faults:
        end = min(e for t, s, e in reads if t == tid and s >= ts)
        expected_faults.append((tid, "fault", ts, end - ts))
    assert [r for r in sim_ops if r[1] == "fault"] == expected_faults

    # every mmap_lock acquisition: acquired at the recorded time, recorded wait and hold
    recorded_holds = sorted((tid, ts, dur, wait) for tid, ts, dur, wait, _ in holds)
    sim_holds = sorted((r["tid"], r["ts"], r["dur"], r["wait"]) for r in res.tables["sim_lock_holds"].to_pylist()
                       if r["lock_class"] == "mmap_lock")
    assert sim_holds == recorded_holds

    # every contended wait of a derived class: same start, same wait
    recorded_waits = sorted((tid, ts, dur, cls) for tid, ts, dur, cls in
                            trace.read("lock_waits").select("tid", "ts", "dur", "lock_class").rows()
                            if cls != "mmap_lock")
    sim_waits = sorted((r["tid"], r["ts"] - r["wait"], r["wait"], r["lock_class"])
                       for r in res.tables["sim_lock_holds"].to_pylist()
                       if r["lock_class"] != "mmap_lock" and r["wait"] > 0)
    assert sim_waits == recorded_waits


def test_same_seed_same_result(tmp_path):
    w = reconstruct(Trace.open(contended_trace(tmp_path / "t")))
    config = SimConfig(cpus=2, policy=resolve("2.6.39"), preempt="voluntary", seed=7)
    a, b = simulate(w, config), simulate(w, config)
    assert a.metrics == b.metrics
    assert all(a.tables[k].equals(b.tables[k]) for k in a.tables)
