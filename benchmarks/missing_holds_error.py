"""How wrong is the missing-holds model? Measure it where the truth is known.

1. Simulate a workload whose i_mmap_rwsem holds are known (N tasks munmapping
   pages of one shared file: mmap_lock write → i_mmap_rwsem → gather, plus
   faults), under a lock policy, with the probe off.
2. Turn the simulated events into a *tier-1* trace: mmap_lock acquisitions
   into lock_holds, contended i_mmap_rwsem acquisitions into lock_waits only
   (no holds), munmaps into syscalls, faults into page_faults, switches into
   sched_switch — what the tracepoints would have recorded.
3. Reconstruct it and compare every derived hold with the simulated one.

    PYTHONPATH=$PWD python3 benchmarks/missing_holds_error.py [--tasks 8] [--cpus 4] [--rounds 300]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path

import pyarrow as pa

from replay.policies.sets import resolve
from replay.sim import SimConfig, simulate
from replay.sim.costs import Costs
from replay.sim.ops import Critical, Gather, LockRef, Span, Think, Thread, Workload
from replay.trace import Host, Trace, write_trace
from replay.workload import reconstruct
from replay.workload.holds import derive_holds
from replay.workload.intervals import load
from replay.workload.timeline import layout

MM = 0xFFFF_8880_1000_0000
FILE = 0xFFFF_8880_2000_0100
T0 = 1_000_000_000


def workload(tasks: int, cpus: int, rounds: int, seed: int) -> Workload:
    rng = random.Random(seed)
    threads = []
    for i in range(tasks):
        tid = 100 + i
        mm = LockRef("mmap_lock", MM + tid * 0x1000)
        ops = []
        for _ in range(rounds):
            ops.append(Think(rng.randint(1_000, 4_000)))
            i_mmap = Critical(LockRef("i_mmap_rwsem", FILE), "write", rng.randint(300, 1_500))
            ops.append(Span("munmap", (Think(200), Critical(mm, "write", 0, body=(
                Think(100), i_mmap, Think(rng.randint(0, 400)), Gather(4, recorded_ns=400))), Think(100))))
            ops.append(Span("fault", (Think(100), Critical(mm, "read", 500))))
        threads.append(Thread(tid, tid, ops, mm=mm.addr, start_ns=T0 + rng.randint(0, 2_000)))
    return Workload(threads, cpus=cpus)


def as_tier1_trace(res, cpus: int, path: Path) -> list[tuple[int, int, int]]:
    """Write what tier 1 would have seen; return the true i_mmap holds (tid, attempt, hold)."""
    holds = res.tables["sim_lock_holds"].to_pylist()
    lh = [h for h in holds if h["lock_class"] == "mmap_lock"]
    truth = [(h["tid"], h["ts"] - h["wait"], h["dur"]) for h in holds if h["lock_class"] == "i_mmap_rwsem"]
    lw = [h for h in holds if h["lock_class"] == "i_mmap_rwsem" and h["wait"] > 0]
    ops = res.tables["sim_ops"].to_pylist()
    sw = [s for s in res.tables["sim_sched"].to_pylist() if s["prev_tid"] != -2 and s["next_tid"] != -2]
    seq = iter(range(10**9))
    n = len
    tables = {
        "lock_holds": {
            "ts": [h["ts"] for h in lh], "dur": [h["dur"] for h in lh], "wait": [h["wait"] for h in lh],
            "seq": [next(seq) for _ in lh], "cpu": [h["cpu"] for h in lh], "pid": [h["tid"] for h in lh],
            "tid": [h["tid"] for h in lh], "lock_addr": pa.array([h["lock_addr"] for h in lh], pa.uint64()),
            "lock_class": ["mmap_lock"] * n(lh), "mode": [h["mode"] for h in lh], "success": [True] * n(lh),
            "depth": [h["depth"] for h in lh], "stack_id": [-1] * n(lh), "incomplete": [False] * n(lh)},
        "lock_waits": {
            "ts": [h["ts"] - h["wait"] for h in lw], "dur": [h["wait"] for h in lw], "seq": [next(seq) for _ in lw],
            "cpu": [h["cpu"] for h in lw], "pid": [h["tid"] for h in lw], "tid": [h["tid"] for h in lw],
            "lock_addr": pa.array([h["lock_addr"] for h in lw], pa.uint64()), "flags": [4] * n(lw), "ret": [0] * n(lw),
            "begins": [1] * n(lw), "lock_class": ["i_mmap_rwsem"] * n(lw), "stack_id": [-1] * n(lw),
            "incomplete": [False] * n(lw)},
        "syscalls": {
            "ts": [o["ts"] for o in ops if o["kind"] == "munmap"],
            "dur": [o["dur"] for o in ops if o["kind"] == "munmap"]},
        "page_faults": {"ts": [o["ts"] for o in ops if o["kind"] == "fault"]},
        "sched_switch": {
            "ts": [s["ts"] for s in sw], "seq": [next(seq) for _ in sw], "cpu": [s["cpu"] for s in sw],
            "prev_tid": [max(s["prev_tid"], 0) for s in sw], "prev_prio": [120] * n(sw),
            "prev_state": [0 if s["reason"] in ("preempt", "dispatch") else 1 for s in sw],
            "next_tid": [max(s["next_tid"], 0) for s in sw], "next_prio": [120] * n(sw)},
    }
    mun = [o for o in ops if o["kind"] == "munmap"]
    tables["syscalls"].update({
        "seq": [next(seq) for _ in mun], "cpu": [o["cpu"] for o in mun], "pid": [o["tid"] for o in mun],
        "tid": [o["tid"] for o in mun], "name": ["munmap"] * n(mun), "arg0": [0] * n(mun), "arg1": [0] * n(mun),
        "ret": [0] * n(mun), "incomplete": [False] * n(mun)})
    flt = [o for o in ops if o["kind"] == "fault"]
    tables["page_faults"].update({
        "seq": [next(seq) for _ in flt], "cpu": [o["cpu"] for o in flt], "pid": [o["tid"] for o in flt],
        "tid": [o["tid"] for o in flt], "address": [0x1000] * n(flt), "ip": [0] * n(flt),
        "error_code": [6] * n(flt)})
    write_trace(path, tables, host=Host(cpus=cpus, kernel_release="simulated", arch="x86_64"))
    return truth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--cpus", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--policy", default="3.0", help="policy set the ground truth is simulated under")
    a = ap.parse_args()
    w = workload(a.tasks, a.cpus, a.rounds, seed=1)
    res = simulate(w, SimConfig(cpus=a.cpus, policy=resolve(a.policy), preempt="voluntary", seed=1,
                                costs=Costs(), probe=False))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t"
        truth = {(tid, start): hold for tid, start, hold in as_tier1_trace(res, a.cpus, path)}
        trace = Trace.open(path)
        rec = load(trace)
        derive_holds(rec)
        evidence = {(t.tid, iv.start): iv.evidence for t in rec.threads.values() for iv in t.intervals
                    if iv.derived}
        derived = {(p.tid, p.start): p.end - p.acquired for p in layout(reconstruct(trace))
                   if p.kind == "critical:i_mmap_rwsem"}
    print(f"policy {a.policy}: {a.tasks} tasks on {a.cpus} CPUs, {len(truth)} i_mmap acquisitions, "
          f"{len(derived)} contended (seen by tier 1), true hold mean {statistics.mean(truth.values()):.0f} ns")
    by: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for key, hold in derived.items():
        by[evidence.get(key, "?")].append((hold, truth[key]))
    print(f"{'evidence':<10}{'holds':>7}{'median err':>12}{'mean err':>10}{'median |rel err|':>18}{'exact':>8}")
    for ev, pairs in sorted(by.items()):
        errs = [h - t for h, t in pairs]
        rel = [abs(h - t) / t for h, t in pairs if t]
        exact = sum(1 for h, t in pairs if abs(h - t) <= 1) / len(pairs)
        print(f"{ev:<10}{len(pairs):>7}{statistics.median(errs):>10.0f}ns{statistics.mean(errs):>8.0f}ns"
              f"{100 * statistics.median(rel):>17.1f}%{100 * exact:>7.0f}%")


if __name__ == "__main__":
    main()
