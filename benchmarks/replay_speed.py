"""Simulator speed: simulated events per second on one core, and the same M/M/1 model in SimPy.

    PYTHONPATH=. python3 benchmarks/replay_speed.py            # speed
    PYTHONPATH=. python3 benchmarks/replay_speed.py --validate # + M/M/1 at rho 0.9 with 2M customers

Reports, for (1) a realistic mm workload (the 2011 review's mmap-file pattern: N
tasks mmap/fault/munmap one shared file, probe on, policy "current") and (2) an
M/M/1 lock queue (open arrivals, no overheads): engine-only events/s (run loop),
end-to-end events/s (flatten + run + tables + metrics) and, for M/M/1, customers/s
and simulated seconds per wall second against SimPy running the identical arrival
and service sequence. Both engines are timed: the C one (replay/sim/engine.c, the
default) and the Python reference (engine.py); their results are identical.
"Events" are the engine's state transitions: instructions executed plus
scheduler, grant and probe events (SimPy's count is its scheduled events); they
differ between engines, so the comparison is in customers/s.
Timings are medians of ``--repeat`` runs, mmreplay and SimPy interleaved.
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import replace
from statistics import median

from replay.policies import resolve
from replay.sim import Costs, SimConfig, simulate
from replay.sim.cengine import CEngine
from replay.sim.engine import Engine
from replay.sim.ops import Block, Critical, Gather, LockRef, Span, Think, Thread, Workload
from replay.sim.program import flatten
from replay.sim.queueing import mm1_wait, poisson_lock_workload


def mmap_file(ntasks: int = 16, loops: int = 400, pages: int = 64, seed: int = 0) -> Workload:
    """N tasks loop: mmap one page of a shared file, fault 3 pages, think, munmap (i_mmap + a gather)."""
    rng = random.Random(seed)
    imap = LockRef("i_mmap_rwsem", 0xA000)
    threads = []
    for k in range(ntasks):
        mm = 100 + k
        mml = LockRef("mmap_lock", 0x1000 + k)
        ptl = LockRef("page_table_lock", 0x2000 + k)
        ops: list = []
        for _ in range(loops):
            ops.append(Span("mmap", (Critical(mml, "write", 800, body=(Critical(imap, "write", 300),)),)))
            for _ in range(3):
                ops.append(Span("fault", (Critical(mml, "read", 500, body=(Critical(ptl, "write", 200),)),)))
            ops.append(Think(rng.randrange(2000, 6000)))
            ops.append(Span("munmap", (Critical(mml, "write", 500, body=(
                Critical(imap, "write", 400), Gather(pages, pt_pages=1, mm=mm))),)))
            if rng.random() < 0.05:
                ops.append(Block(20_000))
        threads.append(Thread(tid=k + 1, pid=k + 1, ops=ops, mm=mm))
    return Workload(threads, cpus=8, name="mmap-file")


def time_engine(w: Workload, cfg: SimConfig) -> tuple[float, int, float, float]:
    """(engine-only seconds, events, flatten + engine seconds, end-to-end seconds) with ``cfg.engine``."""
    pol = cfg.policy
    cls = CEngine if cfg.engine == "c" else Engine
    t0 = time.perf_counter()
    prog = flatten(w, pol.lock_policy, pol.gather, cfg.preempt, cfg.mode == "open", cfg.costs,
                   compiled=cfg.engine == "c")
    eng = cls(prog, w, cfg.cpus, cfg.preempt, pol.gather, cfg.seed, cfg.costs, cfg.probe, cfg.probe_period_ns)
    t1 = time.perf_counter()
    eng.run()
    t2 = time.perf_counter()
    simulate(w, cfg)
    return t2 - t1, eng.events, t2 - t0, time.perf_counter() - t2


def simpy_mm1(arrivals: list[int], services: list[int], cpus: int = 0) -> tuple[float, int, float]:
    """The same FIFO single-server queue in SimPy: (seconds, events, mean wait). With ``cpus``,
    each customer first takes a CPU from a pool, as every mmreplay thread does."""
    import simpy

    env = simpy.Environment()
    lock = simpy.Resource(env, capacity=1)
    pool = simpy.Resource(env, capacity=cpus) if cpus else None
    waits: list[float] = []

    def customer(s: int):
        cpu = pool.request() if pool is not None else None
        if cpu is not None:
            yield cpu
        t = env.now
        with lock.request() as req:
            yield req
            waits.append(env.now - t)
            yield env.timeout(s)
        if cpu is not None:
            pool.release(cpu)

    def source():
        for a, s in zip(arrivals, services, strict=True):
            yield env.timeout(a - env.now)
            env.process(customer(s))

    env.process(source())
    t0 = time.perf_counter()
    env.run()
    dt = time.perf_counter() - t0
    return dt, next(env._eid), sum(waits) / len(waits)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=200_000)
    ap.add_argument("--validate", action="store_true", help="also M/M/1 at rho 0.9 with 2M customers")
    ap.add_argument("--repeat", type=int, default=5, help="median of N timings (the machine is shared)")
    args = ap.parse_args()
    reps = max(1, args.repeat)

    w = mmap_file()
    print(f"median of {reps}; realistic mmap-file (16 tasks, 8 CPUs, probe on, current, full):")
    for engine in ("c", "python"):
        cfg = SimConfig(cpus=8, policy=resolve("current"), preempt="full", seed=1, engine=engine)
        runs = [time_engine(w, cfg) for _ in range(reps)]
        events = runs[0][1]
        eng_s = median(r[0] for r in runs)
        e2e_s = median(r[3] for r in runs)
        print(f"  {engine:>6} engine only : {events / eng_s:12,.0f} events/s ({eng_s:.3f} s, {events:,} events)")
        print(f"  {engine:>6} end to end  : {events / e2e_s:12,.0f} events/s ({e2e_s:.3f} s, incl. flatten, tables, "
              f"metrics)  target >= 1M: {'met' if events / e2e_s >= 1e6 else 'NOT met'}")

    n = args.customers
    mm1, sample = poisson_lock_workload(n, 0.7, "exp", 1_000_000, seed=1)
    mcfg = SimConfig(cpus=200, policy=resolve("i_mmap_rwsem=spinlock"), mode="open", costs=Costs.zero(),
                     probe=False, engine="c")
    pcfg = replace(mcfg, engine="python")
    ops = sorted((op.at_ns, op.hold_ns) for t in mm1.threads for op in t.ops)
    arr, svc = [a for a, _ in ops], [s for _, s in ops]
    span_s = arr[-1] / 1e9  # simulated seconds of arrivals (the same for both engines)
    # interleaved so that the machine's noise hits every contender alike
    runs = [(time_engine(mm1, mcfg), time_engine(mm1, pcfg), simpy_mm1(arr, svc), simpy_mm1(arr, svc, cpus=200))
            for _ in range(reps)]
    events = runs[0][0][1]
    c_eng, c_sim, c_e2e = (median(r[0][k] for r in runs) for k in (0, 2, 3))
    p_eng, p_sim, p_e2e = (median(r[1][k] for r in runs) for k in (0, 2, 3))
    sp_s = median(r[2][0] for r in runs)
    sp_events, sp_wait = runs[0][2][1], runs[0][2][2]
    spc_s = median(r[3][0] for r in runs)
    spc_events = runs[0][3][1]
    sim_wait = simulate(mm1, mcfg).metrics["wait_mean_ns:i_mmap_rwsem"]
    print(f"M/M/1 rho=0.7, {n:,} customers ({span_s:,.0f} simulated s): mean wait mmreplay {sim_wait:,.0f} ns, "
          f"SimPy {sp_wait:,.0f} ns")

    def line(name: str, ev: int, s: float, note: str = "") -> None:
        print(f"  {name:<26}: {ev / s:12,.0f} events/s {n / s:10,.0f} customers/s {span_s / s:8,.0f} sim-s/s "
              f"({s:.3f} s){note}")

    line("C engine", events, c_eng, "  run loop only")
    line("C flatten+engine", events, c_sim, "  + flattening the workload (flatten.c) and building the engine")
    line("C end to end", events, c_e2e, "  simulate(): + event tables and metrics")
    line("Python engine", events, p_eng, "  the reference engine.py, run loop only")
    line("Python end to end", events, p_e2e)
    line("SimPy", sp_events, sp_s, "  env.run(): customers are created while it runs")
    line("SimPy + CPU pool", spc_events, spc_s, "  each customer also takes a CPU, as in mmreplay")
    print("  C speed-up in customers/s over SimPy (target 5x): "
          f"engine {sp_s / c_eng:.1f}x, flatten+engine {sp_s / c_sim:.1f}x, end to end {sp_s / c_e2e:.1f}x; "
          f"over SimPy + CPU pool: {spc_s / c_eng:.1f}x / {spc_s / c_sim:.1f}x / {spc_s / c_e2e:.1f}x")
    print(f"  C over Python: engine {p_eng / c_eng:.1f}x, end to end {p_e2e / c_e2e:.1f}x")

    if args.validate:
        for service in ("exp", "det"):
            big, s = poisson_lock_workload(2_000_000, 0.9, service, 1_000_000, seed=2)
            r = simulate(big, mcfg)
            got = r.metrics["wait_mean_ns:i_mmap_rwsem"]
            want = mm1_wait(0.9e-6, 1e6) if service == "exp" else mm1_wait(0.9e-6, 1e6) / 2
            print(f"M/{'M' if service == 'exp' else 'D'}/1 rho=0.9, 2M customers: {got:,.0f} ns vs "
                  f"{want:,.0f} ns ({got / want - 1:+.1%})")


if __name__ == "__main__":
    main()
