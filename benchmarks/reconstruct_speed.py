"""How fast work reconstruction turns a large tier-1 trace into a Workload.

Writes a page_fault1-like trace with numpy (T threads, each F anon faults under
mmap_lock read, an munmap with a contended i_mmap_rwsem wait and a gather every
100 faults, a sleep every 50), then times ``reconstruct``.

    PYTHONPATH=$PWD python3 benchmarks/reconstruct_speed.py [--threads 8] [--faults 80000] [--replay]

``--replay`` also times replaying the reconstructed work under 2.6.39 and current
with two seeds each (what ``mmreplay replay --compare 2.6.39 current --seeds 2``
runs after reconstruction), once with the C simulator and once with the Python one.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from replay.trace import Host, Trace, write_trace
from replay.workload import reconstruct

MM = 0xFFFF_8880_1000_0000
FILE = 0xFFFF_8880_2000_0100


def build(path: Path, threads: int, faults: int) -> int:
    """Write the trace; returns its number of events."""
    rng = np.random.default_rng(0)
    cols: dict[str, dict[str, list[np.ndarray]]] = {}

    def add(table: str, **c: np.ndarray) -> None:
        d = cols.setdefault(table, {})
        for k, v in c.items():
            d.setdefault(k, []).append(np.asarray(v))

    for i in range(threads):
        tid = 1000 + i
        n = faults
        # per fault: 1 µs user work, 100 ns entry, 0-200 ns wait, ~600 ns hold
        user = rng.integers(800, 1200, n)
        wait = np.where(rng.random(n) < 0.1, rng.integers(1, 2000, n), 0)
        hold = rng.integers(500, 700, n)
        munmap_every, sleep_every = 100, 50
        extra = np.zeros(n, dtype=np.int64)
        extra[::munmap_every] = 6_000  # room for the munmap before the fault
        extra[::sleep_every] += 20_000  # and a sleep
        step = user + 100 + wait + hold + extra
        start = 1_000_000_000 + np.concatenate([[0], np.cumsum(step)[:-1]])
        pf = start + user + extra
        acq = pf + 100 + wait
        ones = np.ones(n, dtype=np.int64)
        add("page_faults", ts=pf, cpu=ones * i, pid=ones * tid, tid=ones * tid, address=ones * 0x7F00_0000_0000,
            ip=ones * 0x401000, error_code=ones * 6)
        add("lock_holds", ts=acq, dur=hold, wait=wait, cpu=ones * i, pid=ones * tid, tid=ones * tid,
            lock_addr=np.full(n, MM + tid * 0x1000, dtype=np.uint64), lock_class=np.full(n, "mmap_lock"),
            mode=np.full(n, "read"), success=np.ones(n, bool), depth=ones * 0, stack_id=ones * -1,
            incomplete=np.zeros(n, bool))
        m = start[::munmap_every] + user[::munmap_every]
        k = len(m)
        ks = np.ones(k, dtype=np.int64)
        add("syscalls", ts=m, dur=ks * 5_000, cpu=ks * i, pid=ks * tid, tid=ks * tid, name=np.full(k, "munmap"),
            arg0=ks * 0x7F00_0000_0000, arg1=ks * 4096 * 100, ret=ks * 0, incomplete=np.zeros(k, bool))
        add("lock_holds", ts=m + 300, dur=ks * 4_500, wait=ks * 100, cpu=ks * i, pid=ks * tid, tid=ks * tid,
            lock_addr=np.full(k, MM + tid * 0x1000, dtype=np.uint64), lock_class=np.full(k, "mmap_lock"),
            mode=np.full(k, "write"), success=np.ones(k, bool), depth=ks * 0, stack_id=ks * -1,
            incomplete=np.zeros(k, bool))
        add("lock_waits", ts=m + 500, dur=ks * 700, cpu=ks * i, pid=ks * tid, tid=ks * tid,
            lock_addr=np.full(k, FILE, dtype=np.uint64), flags=ks * 4, ret=ks * 0, begins=ks,
            lock_class=np.full(k, "i_mmap_rwsem"), stack_id=ks * -1, incomplete=np.zeros(k, bool))
        add("page_free_batches", ts=m + 2_500, dur=ks * 2_000, cpu=ks * i, pid=ks * tid, tid=ks * tid,
            pages=ks * 100, batched=np.ones(k, bool), incomplete=np.zeros(k, bool))
        add("tlb_flushes", ts=m + 4_600, cpu=ks * i, pid=ks * tid, tid=ks * tid,
            reason=np.full(k, "TLB_LOCAL_SHOOTDOWN"), pages=ks * -1)
        s = pf[::sleep_every] - 20_000
        q = len(s)
        qs = np.ones(q, dtype=np.int64)
        add("sched_switch", ts=s, cpu=qs * i, prev_tid=qs * tid, prev_prio=qs * 120, prev_state=qs,
            next_tid=qs * 0, next_prio=qs * 120)
        add("sched_switch", ts=s + 20_000 - 1, cpu=qs * i, prev_tid=qs * 0, prev_prio=qs * 120, prev_state=qs * 0,
            next_tid=qs * tid, next_prio=qs * 120)
    tables = {}
    events = 0
    seq = 0
    for name, d in cols.items():
        data = {k: np.concatenate(v) for k, v in d.items()}
        n = len(data["ts"])
        data["seq"] = np.arange(seq, seq + n)
        seq += n
        events += n
        tables[name] = data
    tables["tasks"] = {"tid": [1000 + i for i in range(threads)], "pid": [1000 + i for i in range(threads)],
                       "comm": ["page_fault1"] * threads}
    write_trace(path, tables, host=Host(cpus=threads, kernel_release="bench", arch="x86_64"))
    return events


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--faults", type=int, default=80_000, help="faults per thread")
    ap.add_argument("--replay", action="store_true", help="also time the replay with each engine")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t"
        t0 = time.perf_counter()
        events = build(path, a.threads, a.faults)
        t1 = time.perf_counter()
        w = reconstruct(Trace.open(path))
        t2 = time.perf_counter()
        ops = sum(len(t.ops) for t in w.threads)
        print(f"trace: {events:,} events ({a.threads} threads x {a.faults:,} faults) written in {t1 - t0:.2f} s")
        print(f"reconstruct: {t2 - t1:.2f} s = {events / (t2 - t1):,.0f} events/s; {ops:,} top-level ops")
        print(f"derived holds: {w.meta['derived_hold_sources']}")
        if a.replay:
            from replay.batch import RunSpec, Settings, run_all
            from replay.sim.costs import Costs

            specs = [RunSpec(s, seed) for s in ("2.6.39", "current") for seed in (0, 1)]
            figures = {}
            for engine in ("c", "python"):
                settings = Settings(cpus=w.cpus, preempt="voluntary", mode="closed", costs=Costs(), engine=engine)
                t3 = time.perf_counter()
                runs = run_all(w, specs, settings)
                dt = time.perf_counter() - t3
                events = sum(r.metrics["events"] for r in runs)
                figures[engine] = [r.metrics for r in runs]
                print(f"replay, {engine} engine: 2 sets x 2 seeds in {dt:.2f} s ({events / dt:,.0f} events/s, "
                      "incl. flatten, tables, metrics)")
            print(f"identical figures: {figures['c'] == figures['python']}")


if __name__ == "__main__":
    main()
