"""Regenerate every number of docs/VALIDATION.md (DESIGN.md §6: how we know the simulator is right).

    PYTHONPATH=. python3 benchmarks/validation.py                    # all parts, 5 seeds (~20 min on 2 CPUs)
    PYTHONPATH=. python3 benchmarks/validation.py take-all-locks     # part a
    PYTHONPATH=. python3 benchmarks/validation.py scaling --seeds 3  # part b
    PYTHONPATH=. python3 benchmarks/validation.py model              # part c

Parts (each prints a markdown table and writes its figures as JSON under benchmarks/out/validation/):

* ``take-all-locks`` — the recorded sample and a synthetic trace replayed under 2.6.39 and current: longest
  preempt-off section (overall and per cause) and the probe's scheduling latency, paired over seeds.
* ``scaling`` — synthetic mmap-file, mmap-merge and mprotect-split at 3, 12 and 48 tasks on 24 CPUs under
  2.6.39 (spinlocks), 3.0 (mutexes) and current (rwsems): makespan and CPU time. Seed s synthesizes the
  trace with seed s *and* replays it with seed s, so the intervals cover the workload's sampling noise too.
* ``waker`` — §b's sensitivity: 3.0 against 2.6.39 at 12 and 48 tasks as the waker's cost of a wake-up under
  3.0's mutex wait_lock (``Costs.mutex_waker_ns``) grows from 0 (the default) to 5 µs.
* ``kbuild`` — the recorded kbuild sample under 2.6.39 and 3.0 (the 2010 posting's kernel build).
* ``model`` — recorded samples replayed under ``current`` (the policy of the 6.18 kernel they were recorded
  on) with its preemption model (none), on the recorded CPU count and on the CPUs the tasks really ran on:
  recorded vs simulated waits per lock class (p50, p99, relative errors, two-sample KS distance).
* ``identity`` — ``as-recorded`` replay of real samples: the share of system calls and mmap_lock
  acquisitions reproduced to the nanosecond.

Intervals are mean ± t(0.975, n−1)·sd/√n over the seeds (replay.compare.t_quantile).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

from replay.batch import RunSpec, Settings, run_all
from replay.compare import t_quantile
from replay.sim.calibrate import calibrate
from replay.sim.costs import Costs
from replay.trace.reader import Trace
from replay.workload import reconstruct

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sample_traces"
OUT = REPO / "benchmarks" / "out" / "validation"
#: preemption model of the what-if replays (parts a, b): what `mmreplay replay` makes of preempt=dynamic
PREEMPT = "voluntary"
#: the model the samples' kernel really ran (part c): CONFIG_PREEMPT_DYNAMIC with CONFIG_PREEMPT_NONE=y as the
#: boot default and no preempt= on the command line
KERNEL_PREEMPT = "none"


# ---------------------------------------------------------------- statistics

def mean_ci(xs: list[float]) -> tuple[float, float, float]:
    """Mean and its 95% t-interval (the interval is the mean itself with one value)."""
    a = np.asarray(xs, dtype=float)
    m = float(a.mean())
    if len(a) < 2:
        return m, m, m
    h = t_quantile(0.975, len(a) - 1) * float(a.std(ddof=1)) / math.sqrt(len(a))
    return m, m - h, m + h


def ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov–Smirnov statistic sup |F_a − F_b| (scipy.stats.ks_2samp when installed)."""
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    try:
        from scipy.stats import ks_2samp
    except ImportError:
        a, b = np.sort(a), np.sort(b)
        grid = np.concatenate([a, b])
        return float(np.max(np.abs(np.searchsorted(a, grid, "right") / len(a)
                                   - np.searchsorted(b, grid, "right") / len(b))))
    return float(ks_2samp(a, b).statistic)


def fmt_ns(v: float) -> str:
    if not math.isfinite(v):
        return "–"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {unit}"
    return f"{v:.0f} ns"


def fmt_ci(m: float, lo: float, hi: float) -> str:
    return f"{fmt_ns(m)} [{fmt_ns(lo)}, {fmt_ns(hi)}]"


def save(name: str, data: object) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(data, indent=1, default=float))


# ---------------------------------------------------------------- running

WAKER_NS = (0, 500, 1_000, 2_000, 5_000)


def part_waker(seeds: list[int], jobs: int, tasks: list[int], seconds: float) -> dict:
    """§b sensitivity: 3.0's makespan against 2.6.39's as the waker's cost W of a wake-up under
    mutex-classic's wait_lock (Costs.mutex_waker_ns) grows; the saturated patterns only."""
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for pattern in ("mmap-file", "mprotect-split"):
            for n in [t for t in tasks if t >= 12]:
                base: dict[int, float] = {}
                ratios: dict[int, list[float]] = {w: [] for w in WAKER_NS}
                switches: dict[int, list[float]] = {w: [] for w in WAKER_NS}
                for seed in seeds:
                    path = synth(pattern, Path(tmp) / f"{pattern}-{n}", tasks=n, cpus=24, seconds=seconds,
                                 seed=seed, extra=["--fault-lock", "mmap_lock"])
                    runs, _ = replay(path, ["2.6.39"], [seed], tables=False, jobs=jobs)
                    base[seed] = runs["2.6.39"][seed].metrics["makespan_ns"]
                    for w in WAKER_NS:
                        runs, _ = replay(path, ["3.0"], [seed], tables=False, jobs=jobs,
                                         costs=Costs(mutex_waker_ns=w))
                        ratios[w].append(runs["3.0"][seed].metrics["makespan_ns"] / base[seed])
                        switches[w].append(runs["3.0"][seed].metrics["context_switches"])
                out[f"{pattern}:{n}"] = {w: {"ratio": mean_ci(ratios[w]), "switches": mean_ci(switches[w])}
                                         for w in WAKER_NS}
                print(f"  {pattern} {n} tasks: " + ", ".join(
                    f"W={w} x{out[f'{pattern}:{n}'][w]['ratio'][0]:.2f}" for w in WAKER_NS),
                    file=sys.stderr, flush=True)
    print(f"\n### b. sensitivity: 3.0 / 2.6.39 makespan against W = Costs.mutex_waker_ns (mean [95% CI] over "
          f"seeds {seeds[0]}..{seeds[-1]}; context switches of 3.0)\n")
    print("| workload | tasks | " + " | ".join(f"W = {w / 1e3:g} µs" for w in WAKER_NS) + " |")
    print("|---|---|" + "---|" * len(WAKER_NS))
    for key, res in out.items():
        pattern, n = key.split(":")
        cells = [f"×{r['ratio'][0]:.2f} [{r['ratio'][1]:.2f}, {r['ratio'][2]:.2f}], {r['switches'][0]:,.0f} sw"
                 for r in (res[w] for w in WAKER_NS)]
        print(f"| {pattern} | {n} | " + " | ".join(cells) + " |")
    save("waker", {k: {str(w): r for w, r in v.items()} for k, v in out.items()})
    return out


def synth(pattern: str, out: Path, *, tasks: int, cpus: int, seconds: float, seed: int, extra: list[str]) -> Path:
    cmd = [sys.executable, "-m", "replay", "synth", pattern, "-o", str(out), "--tasks", str(tasks),
           "--cpus", str(cpus), "--seconds", str(seconds), "--seed", str(seed), "--force", *extra]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=REPO)
    return out


def replay(path: Path, sets: list[str], seeds: list[int], *, cpus: int | None = None, tables: bool = True,
           jobs: int = 2, preempt: str = PREEMPT, mode: str = "closed",
           probe: bool = True, calibrated: bool = False,
           costs: Costs | None = None) -> tuple[dict[str, dict[int, object]], object]:
    """runs[set][seed] = Run, for the trace at ``path`` reconstructed on ``cpus`` (default: as recorded);
    ``calibrated``: with the costs the trace measures (replay --calibrate); ``costs``: these instead."""
    trace = Trace.open(path)
    workload = reconstruct(trace, cpus=cpus)
    costs = costs or (calibrate(trace).costs if calibrated else Costs())
    settings = Settings(cpus=workload.cpus, preempt=preempt, mode=mode, costs=costs, keep_tables=tables,
                        probe=probe)
    specs = [RunSpec(s, seed) for s in sets for seed in seeds]
    out: dict[str, dict[int, object]] = {s: {} for s in sets}
    for spec, run in zip(specs, run_all(workload, specs, settings, jobs=jobs), strict=True):
        out[spec.policy_set][spec.seed] = run
    return out, workload


def paired(runs: dict, base: str, other: str, f) -> dict[str, list[float]]:
    """Per-seed values of f(metrics) under base and other, and their differences, with means and CIs."""
    seeds = sorted(runs[base])
    b = [f(runs[base][s]) for s in seeds]
    o = [f(runs[other][s]) for s in seeds]
    return {"base": mean_ci(b), "other": mean_ci(o), "diff": mean_ci([y - x for x, y in zip(b, o, strict=True)])}


# ---------------------------------------------------------------- part a

def preempt_by_cause(run) -> dict[str, float]:
    t = pl.from_arrow(run.tables["sim_preempt_off"])
    if t.is_empty():
        return {}
    return dict(t.group_by("cause").agg(pl.col("dur").max()).iter_rows())


def part_take_all_locks(seeds: list[int], jobs: int) -> dict:
    sets = ["2.6.39", "current"]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        syn = synth("take-all-locks", Path(tmp) / "tal", tasks=2, cpus=2, seconds=0.05, seed=0, extra=[])
        for label, path in (("recorded sample", SAMPLES / "take-all-locks"),
                            ("synthetic (2 tasks, 256 files, 0.05 s)", syn)):
            runs, wl = replay(path, sets, seeds, jobs=jobs)
            res = {}
            for metric in ("preempt_off_max_ns", "probe_latency_p50_ns", "probe_latency_p99_ns",
                           "probe_latency_max_ns", "makespan_ns"):
                res[metric] = paired(runs, *sets, lambda r, m=metric: r.metrics[m])
            causes = sorted({c for s in sets for r in runs[s].values() for c in preempt_by_cause(r)})
            res["preempt_off_max_by_cause"] = {
                c: {s: mean_ci([preempt_by_cause(runs[s][k]).get(c, 0.0) for k in seeds]) for s in sets}
                for c in causes}
            res["derived_classes"] = sorted(wl.derived_classes)
            out[label] = res
    print("\n### a. take-all-locks: 2.6.39 vs current (mean [95% CI] over seeds "
          f"{seeds[0]}..{seeds[-1]}, preempt {PREEMPT})\n")
    print("| trace | figure | 2.6.39 | current | current − 2.6.39 |\n|---|---|---|---|---|")
    for label, res in out.items():
        for metric in ("preempt_off_max_ns", "probe_latency_p50_ns", "probe_latency_p99_ns", "probe_latency_max_ns",
                       "makespan_ns"):
            r = res[metric]
            print(f"| {label} | {metric} | {fmt_ci(*r['base'])} | {fmt_ci(*r['other'])} | {fmt_ci(*r['diff'])} |")
        for cause, by in res["preempt_off_max_by_cause"].items():
            print(f"| {label} | longest preempt-off, cause {cause} | {fmt_ns(by['2.6.39'][0])} "
                  f"| {fmt_ns(by['current'][0])} | |")
    save("take_all_locks", out)
    return out


# ---------------------------------------------------------------- part b

def cpu_ns(run) -> float:
    m = run.metrics
    return m["work_cpu_ns"] + m["overhead_cpu_ns"] + m["spin_cpu_ns"]


SCALING = ("mmap-file", "mmap-merge", "mprotect-split")


def part_scaling(seeds: list[int], jobs: int, tasks: list[int], seconds: float) -> dict:
    sets = ["2.6.39", "3.0", "current"]
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for pattern in SCALING:
            for n in tasks:
                per_seed: dict[str, dict[int, object]] = {s: {} for s in sets}
                for seed in seeds:
                    path = synth(pattern, Path(tmp) / f"{pattern}-{n}", tasks=n, cpus=24, seconds=seconds,
                                 seed=seed, extra=["--fault-lock", "mmap_lock"])
                    runs, _ = replay(path, sets, [seed], tables=False, jobs=jobs)
                    for s in sets:
                        per_seed[s][seed] = runs[s][seed]
                res = {}
                for metric, f in (("makespan_ns", lambda r: r.metrics["makespan_ns"]), ("cpu_ns", cpu_ns),
                                  ("spin_cpu_ns", lambda r: r.metrics["spin_cpu_ns"]),
                                  ("context_switches", lambda r: r.metrics["context_switches"])):
                    res[metric] = {s: mean_ci([f(per_seed[s][k]) for k in seeds]) for s in sets}
                    for other in sets[1:]:
                        ratios = [f(per_seed[other][k]) / f(per_seed["2.6.39"][k]) if f(per_seed["2.6.39"][k])
                                  else float("nan") for k in seeds]
                        res[metric][f"{other}/2.6.39"] = mean_ci(ratios)
                out[f"{pattern}:{n}"] = res
                print(f"  {pattern} {n} tasks: makespan " + ", ".join(
                    f"{s} {fmt_ns(res['makespan_ns'][s][0])}" for s in sets), file=sys.stderr, flush=True)
    print(f"\n### b. 24 simulated CPUs, synthetic traces of {seconds * 1e3:g} ms, --fault-lock mmap_lock "
          f"(mean [95% CI] over seeds {seeds[0]}..{seeds[-1]}; ratio = per-seed ratio to 2.6.39)\n")
    print("| workload | tasks | makespan 2.6.39 | makespan 3.0 | 3.0/2.6.39 | current/2.6.39 | CPU 2.6.39 | CPU 3.0 "
          "| CPU 3.0/2.6.39 | CPU current/2.6.39 | spinning 2.6.39 | switches 2.6.39 → 3.0 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for key, res in out.items():
        pattern, n = key.split(":")
        mk, cpu = res["makespan_ns"], res["cpu_ns"]

        def ratio(r):
            return f"{r[0]:.2f} [{r[1]:.2f}, {r[2]:.2f}]"

        print(f"| {pattern} | {n} | {fmt_ns(mk['2.6.39'][0])} | {fmt_ns(mk['3.0'][0])} | {ratio(mk['3.0/2.6.39'])} "
              f"| {ratio(mk['current/2.6.39'])} | {fmt_ns(cpu['2.6.39'][0])} | {fmt_ns(cpu['3.0'][0])} "
              f"| {ratio(cpu['3.0/2.6.39'])} | {ratio(cpu['current/2.6.39'])} "
              f"| {fmt_ns(res['spin_cpu_ns']['2.6.39'][0])} "
              f"| {res['context_switches']['2.6.39'][0]:.0f} → {res['context_switches']['3.0'][0]:.0f} |")
    save("scaling", out)
    return out


def part_kbuild(seeds: list[int], jobs: int) -> dict:
    """The recorded kbuild sample under 2.6.39 and 3.0: the 2010 posting's kernel build was within noise."""
    runs, _ = replay(SAMPLES / "kbuild", ["2.6.39", "3.0"], seeds, tables=False, jobs=jobs)
    kb = paired(runs, "2.6.39", "3.0", lambda r: r.metrics["makespan_ns"])
    print(f"\nkbuild sample (2 jobs, 2 CPUs), makespan 2.6.39 {fmt_ci(*kb['base'])}, 3.0 {fmt_ci(*kb['other'])}, "
          f"3.0 − 2.6.39 {fmt_ci(*kb['diff'])} ({kb['diff'][0] / kb['base'][0]:+.4%})")
    save("kbuild", kb)
    return kb


# ---------------------------------------------------------------- part c

#: classes whose recorded waits the replay does not simulate: runqueue_lock waits are dropped (the simulator
#: schedules), `other` is replayed as recorded in every named set (docs/SIMULATOR.md)
NOT_SIMULATED = {"runqueue_lock", "other"}


def recorded_waits(trace: Trace) -> dict[str, dict[str, np.ndarray]]:
    """Per class: 'all' = every acquisition's wait (mmap_lock: exact from tier 1), 'contended' = the
    contention tracepoints' waits (lock_waits), the only waits tier 1 has for the other classes."""
    out: dict[str, dict[str, np.ndarray]] = {}
    holds = (trace.scan("lock_holds").filter(pl.col("success") & ~pl.col("incomplete"))
             .select("lock_class", "wait").collect())
    for (cls,), g in holds.group_by("lock_class"):
        out.setdefault(str(cls), {})["all"] = g["wait"].to_numpy()
    if "lock_waits" in trace.tables:
        waits = trace.scan("lock_waits").filter(~pl.col("incomplete")).select("lock_class", "dur").collect()
        for (cls,), g in waits.group_by("lock_class"):
            out.setdefault(str(cls), {})["contended"] = g["dur"].to_numpy()
    return out


def simulated_waits(runs: dict[int, object]) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, list]] = {}
    for run in runs.values():
        h = pl.from_arrow(run.tables["sim_lock_holds"]).select("lock_class", "wait")
        for (cls,), g in h.group_by("lock_class"):
            out.setdefault(str(cls), {}).setdefault("all", []).append(g["wait"].to_numpy())
        w = pl.from_arrow(run.tables["sim_lock_waits"]).select("lock_class", "dur")
        for (cls,), g in w.group_by("lock_class"):
            out.setdefault(str(cls), {}).setdefault("contended", []).append(g["dur"].to_numpy())
    return {c: {k: np.concatenate(v) for k, v in d.items()} for c, d in out.items()}


MODEL_SAMPLES = ("mmap-file", "mmap1_threads", "mmap1_threads-pinned", "tlb_flush2_threads", "page_fault3_threads")


def part_model(seeds: list[int], jobs: int) -> dict:
    out: dict = {}
    rows = []
    for name in MODEL_SAMPLES:
        trace = Trace.open(SAMPLES / name)
        used = cpus_used(trace)
        for cpus in sorted({trace.manifest.host.cpus, len(used)}, reverse=True):
            for mode, probe in (("closed", True), ("open", True), ("open", False)):
                rows += _model_rows(name, trace, cpus, used, seeds, jobs, mode, probe)
            rows += _model_rows(name, trace, cpus, used, seeds, jobs, "closed", True, calibrated=True)
        out[name] = [r for r in rows if r["trace"] == name]
    print(f"\n### c. recorded vs simulated waits under `current`, preempt {KERNEL_PREEMPT}, "
          f"seeds {seeds[0]}..{seeds[-1]} pooled\n")
    print("| trace | CPUs | mode | probe | class | waits | recorded n | simulated n/seed | p50 rec → sim "
          "| p50 rel. err | p99 rec → sim | p99 rel. err | KS | KS, waits < 1 µs as 0 | share > 1 µs rec / sim "
          "| sim. waiters slept |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")

    def pct(v):
        return "–" if not math.isfinite(v) else f"{v:+.0%}"

    for r in rows:
        print(f"| {r['trace']} | {r['cpus']} | {r['mode']} | {'on' if r['probe'] else 'off'} "
              f"| {r['class']}{' †' if r['derived'] else ''} | {r['waits']} "
              f"| {r['recorded_n']} | {r['simulated_n_per_seed']:.0f} "
              f"| {fmt_ns(r['recorded_p50'])} → {fmt_ns(r['simulated_p50'])} "
              f"| {pct(r['p50_rel_err'])} | {fmt_ns(r['recorded_p99'])} → {fmt_ns(r['simulated_p99'])} "
              f"| {pct(r['p99_rel_err'])} | {r['ks']:.2f} | {r['ks_floor']:.2f} | {r['recorded_share_over_1us']:.1%} / "
              f"{r['simulated_share_over_1us']:.1%} | {r['simulated_slept_share']:.0%} |")
    save("model", out)
    return out


def floor(waits: np.ndarray, ns: int = 1000) -> np.ndarray:
    """Waits below ``ns`` as 0: the recorded mmap_lock "wait" of an uncontended acquisition is the time between
    two tracepoints (~0.15 µs here, tracer overhead included); the simulator's is 0."""
    return np.where(waits < ns, 0, waits).astype(float)


def _slept_share(runs: dict[int, object]) -> dict[str, float]:
    """Per class, the share of simulated contended waits in which the waiter slept."""
    t = pl.concat([pl.from_arrow(r.tables["sim_lock_waits"]).select("lock_class", "slept") for r in runs.values()])
    return {str(c): float(v) for c, v in t.group_by("lock_class").agg(pl.col("slept").mean()).iter_rows()}


def cpus_used(trace: Trace, share: float = 0.05) -> list[int]:
    """The CPUs that ran at least ``share`` of the recorded lock acquisitions (where the workload really ran)."""
    by_cpu = trace.scan("lock_holds").group_by("cpu").len().collect()
    total = by_cpu["len"].sum()
    return sorted(c for c, n in by_cpu.iter_rows() if n >= share * total)


def _model_rows(name: str, trace: Trace, cpus: int, used: list[int], seeds: list[int], jobs: int, mode: str,
                probe: bool, calibrated: bool = False) -> list[dict]:
    rows = []
    runs, wl = replay(SAMPLES / name, ["current"], seeds, cpus=cpus, jobs=jobs, preempt=KERNEL_PREEMPT, mode=mode,
                      probe=probe, calibrated=calibrated)
    if calibrated:
        mode = "closed, calibrated"
    slept = _slept_share(runs["current"])
    rec, sim = recorded_waits(trace), simulated_waits(runs["current"])
    n_seeds = len(seeds)
    for cls in sorted(rec):
        if cls in NOT_SIMULATED:
            continue
        for kind in ("all", "contended"):
            r = rec[cls].get(kind)
            if r is None or len(r) == 0:
                continue
            s = sim.get(cls, {}).get(kind, np.zeros(0, dtype=np.int64))
            rp50, rp99 = (float(np.percentile(r, q)) for q in (50, 99))
            sp50, sp99 = ((float(np.percentile(s, q)) for q in (50, 99)) if len(s) else (math.nan, math.nan))
            row = {"trace": name, "cpus": cpus, "mode": mode, "probe": probe, "cpus_used": used, "class": cls,
                   "waits": kind, "simulated_slept_share": slept.get(cls, math.nan),
                   "recorded_n": len(r),
                   "simulated_n_per_seed": len(s) / n_seeds, "recorded_p50": rp50, "simulated_p50": sp50,
                   "p50_rel_err": (sp50 - rp50) / rp50 if rp50 else math.nan,
                   "recorded_p99": rp99, "simulated_p99": sp99,
                   "p99_rel_err": (sp99 - rp99) / rp99 if rp99 else math.nan,
                   "ks": ks_distance(r.astype(float), s.astype(float)),
                   "ks_floor": ks_distance(floor(r), floor(s)),
                   "recorded_share_over_1us": float((r > 1000).mean()),
                   "simulated_share_over_1us": float((s > 1000).mean()) if len(s) else math.nan,
                   "derived": cls in wl.derived_classes}
            rows.append(row)
    return rows


# ---------------------------------------------------------------- part d

IDENTITY_SAMPLES = ("mmap-file", "mprotect-split", "mmap1_threads", "take-all-locks", "fork-exit")


def part_identity() -> dict:
    """`as-recorded` on the real samples: no costs, no probe, one CPU per task, open mode (recorded starts).
    The share of recorded system calls and mmap_lock acquisitions the replay reproduces to the nanosecond."""
    from replay.policies import resolve
    from replay.sim import SimConfig, simulate

    out = {}
    for name in IDENTITY_SAMPLES:
        trace = Trace.open(SAMPLES / name)
        wl = reconstruct(trace)
        res = simulate(wl, SimConfig(cpus=len(wl.threads), policy=resolve("as-recorded"), preempt="full", seed=0,
                                     mode="open", costs=Costs.zero(), probe=False))
        tids = {t.tid for t in wl.threads}
        kinds = {"exit_group": "exit"}
        rec_ops = (trace.scan("syscalls").filter(~pl.col("incomplete") & pl.col("tid").is_in(list(tids)))
                   .select("tid", "ts", "dur", "name").collect())
        rec = {(t, kinds.get(n, n), ts): d for t, ts, d, n in rec_ops.iter_rows()}
        sim = {(r["tid"], r["kind"], r["ts"]): r["dur"] for r in res.tables["sim_ops"].to_pylist()
               if r["kind"] != "fault"}
        same = sum(1 for k, d in rec.items() if sim.get(k) == d)
        diffs = np.array([abs(sim[k] - d) for k, d in rec.items() if k in sim], dtype=float)
        holds = (trace.scan("lock_holds").filter(pl.col("success") & ~pl.col("incomplete")
                                                 & pl.col("tid").is_in(list(tids)))
                 .select("tid", "ts", "dur", "wait").collect())
        rh = set(holds.iter_rows())
        sh = {(r["tid"], r["ts"], r["dur"], r["wait"]) for r in res.tables["sim_lock_holds"].to_pylist()
              if r["lock_class"] == "mmap_lock"}
        preempted = (trace.scan("sched_switch")
                     .filter(pl.col("prev_tid").is_in(list(tids)) & (pl.col("prev_state") == 0))
                     .select(pl.len()).collect().item())
        out[name] = {"syscalls": len(rec), "syscalls_exact": same, "syscalls_found": len(diffs),
                     "syscall_abs_err_p99_ns": float(np.percentile(diffs, 99)) if len(diffs) else math.nan,
                     "syscall_abs_err_max_ns": float(diffs.max()) if len(diffs) else math.nan,
                     "mmap_lock_holds": len(rh), "mmap_lock_holds_exact": len(rh & sh), "preemptions": preempted}
    print("\n### d. as-recorded replay of the real samples (no costs, no probe, a CPU per task, open mode)\n")
    print("| trace | system calls | same start and duration | \\|Δdur\\| p99 / max | mmap_lock acquisitions "
          "| same start, wait, hold | preemptions of the tasks |\n|---|---|---|---|---|---|---|")
    for name, r in out.items():
        print(f"| {name} | {r['syscalls']} | {r['syscalls_exact'] / max(1, r['syscalls']):.2%} "
              f"| {fmt_ns(r['syscall_abs_err_p99_ns'])} / {fmt_ns(r['syscall_abs_err_max_ns'])} "
              f"| {r['mmap_lock_holds']} | {r['mmap_lock_holds_exact'] / max(1, r['mmap_lock_holds']):.2%} "
              f"| {r['preemptions']} |")
    save("identity", out)
    return out


PARTS = ("take-all-locks", "kbuild", "scaling", "waker", "model", "identity")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parts", nargs="*", help=f"some of {', '.join(PARTS)} (default: all)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--tasks", type=int, nargs="+", default=[3, 12, 48])
    ap.add_argument("--seconds", type=float, default=0.003, help="length of the synthetic scaling traces")
    a = ap.parse_args()
    if set(a.parts) - set(PARTS):
        ap.error(f"unknown parts {sorted(set(a.parts) - set(PARTS))}; known: {', '.join(PARTS)}")
    parts = a.parts or PARTS
    seeds = list(range(a.seeds))
    if "take-all-locks" in parts:
        part_take_all_locks(seeds, a.jobs)
    if "model" in parts:
        part_model(seeds, a.jobs)
    if "identity" in parts:
        part_identity()
    if "kbuild" in parts:
        part_kbuild(seeds, a.jobs)
    if "scaling" in parts:
        part_scaling(seeds, a.jobs, a.tasks, a.seconds)
    if "waker" in parts:
        part_waker(seeds, a.jobs, a.tasks, a.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
