"""The 2011 spinlock → mutex microbenchmarks, as posted, against the model (docs/VALIDATION.md §h).

    PYTHONPATH=. python3 benchmarks/published_2011.py                 # every row, 3 seeds (~10 min on 2 CPUs)
    PYTHONPATH=. python3 benchmarks/published_2011.py --seeds 1 --tasks 3 12
    PYTHONPATH=. python3 benchmarks/published_2011.py --costs FILE    # the same rows with other costs

What was published (Peter Zijlstra, replies to Andrew Morton's "What effect does this have on kernel
performance?", linux-mm / LKML, Thu 21 Apr 2011; archived one message per commit in the git repository
github.com/sjp38/lore-linux-mm, file ``m``):

* "Re: [PATCH 15/20] mm: Convert i_mmap_lock to a mutex", Message-ID <1303392503.2035.136.camel@laptop>:
  ``mmap-file N 50000`` — N forked tasks each loop 50 000 × (mmap one page of one shared file MAP_SHARED,
  munmap it); the file's i_mmap_lock is the one contended lock.
* "Re: [PATCH 19/20] mm: Convert anon_vma->lock to a mutex", Message-ID <1303392504.2035.137.camel@laptop>:
  ``mmap-merge N 50000`` — N forked children each loop 50 000 × (munmap one page in the middle of the
  5·N-page anon VMA they inherited, mmap(MAP_FIXED) it back, which merges): every split and merge takes
  the shared root anon_vma lock.

Both on "a dual socket westmere EP (2*6*2)" (24 hardware threads, 2 sockets), an unpatched -tip kernel
(2.6.39-rc: i_mmap_lock and anon_vma->lock spinlocks, per-CPU mmu_gather) against the same with the
series applied (both locks mutexes, preemptible mmu_gather: what 3.0 merged), `time perf stat --repeat 10`:
``real`` and ``sys`` below are for the 10 runs.

The model: `mmreplay synth` of the pattern with N tasks on N CPUs (every task's own uncontended timeline,
the same number of iterations per task, like the program's fixed loop count; ``--fault-lock mmap_lock``
as on 2011 kernels), replayed closed-loop on 24 CPUs, 2 sockets of 12 (``Costs.cpus_per_socket``: the
Westmere-EP's topology, not a fitted value), preemption voluntary, under ``2.6.39`` and ``3.0``. The
2011 mmap-merge is modelled by the ``mprotect-split`` pattern: on the 2011 kernels each iteration's
split and merge took the shared root anon_vma lock (4 + 3 holds), which `mprotect-split` reproduces;
today's `mmap-merge` pattern models 6.x, where the remapped page gets an anon_vma of its own
(docs/VALIDATION.md §b). Figures compared: elapsed time (makespan) mutex ÷ spinlock, and system time
(CPU time of all CPUs) mutex ÷ spinlock. A row matches when the direction agrees (both ratios on the
same side of 1) and the model's ratio is within 30 % of the published one.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from replay.batch import RunSpec, Settings, run_all
from replay.compare import t_quantile
from replay.sim.costs import Costs
from replay.trace.reader import Trace
from replay.workload import reconstruct

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "benchmarks" / "out" / "published_2011.json"
CPUS = 24
CPUS_PER_SOCKET = 12  # "dual socket westmere EP (2*6*2)"
PREEMPT = "voluntary"
TOLERANCE = 0.30

ARCHIVE = "github.com/sjp38/lore-linux-mm (file m)"
SOURCES = {
    "mmap-file": ("Re: [PATCH 15/20] mm: Convert i_mmap_lock to a mutex", "<1303392503.2035.136.camel@laptop>"),
    "mmap-merge": ("Re: [PATCH 19/20] mm: Convert anon_vma->lock to a mutex", "<1303392504.2035.137.camel@laptop>"),
}
#: what models each published program
PATTERN = {"mmap-file": "mmap-file", "mmap-merge": "mprotect-split"}


@dataclass(frozen=True)
class Row:
    """One column of a posted table: ``time perf stat --repeat 10 ./PROGRAM TASKS 50000``, seconds."""

    program: str
    tasks: int
    spin_real: float
    spin_sys: float
    mutex_real: float
    mutex_sys: float

    @property
    def real_ratio(self) -> float:
        return self.mutex_real / self.spin_real

    @property
    def sys_ratio(self) -> float:
        return self.mutex_sys / self.spin_sys


def _s(text: str) -> float:
    """'13m20.203s' -> 800.203"""
    m, s = text.rstrip("s").split("m")
    return int(m) * 60 + float(s)


PUBLISHED: tuple[Row, ...] = tuple(
    Row(prog, n, _s(sr), _s(ss), _s(mr), _s(ms)) for prog, n, sr, ss, mr, ms in (
        # mmap-file: unpatched (spinlock) real / sys, patched (mutex) real / sys
        ("mmap-file", 48, "0m33.973s", "13m20.203s", "0m23.551s", "1m17.177s"),
        ("mmap-file", 24, "0m17.816s", "7m5.814s", "0m12.265s", "0m41.875s"),
        ("mmap-file", 12, "0m8.762s", "1m44.440s", "0m7.016s", "0m26.139s"),
        ("mmap-file", 6, "0m3.778s", "0m22.371s", "0m3.644s", "0m13.872s"),
        ("mmap-file", 3, "0m1.307s", "0m3.751s", "0m1.412s", "0m3.873s"),
        ("mmap-merge", 48, "2m14.152s", "53m1.628s", "1m14.742s", "4m51.984s"),
        ("mmap-merge", 24, "1m7.976s", "27m7.502s", "0m34.823s", "2m7.259s"),
        ("mmap-merge", 12, "0m32.607s", "6m30.265s", "0m26.320s", "2m11.851s"),
        ("mmap-merge", 6, "0m13.593s", "1m22.047s", "0m12.647s", "0m52.916s"),
        ("mmap-merge", 3, "0m5.464s", "0m16.693s", "0m4.896s", "0m13.610s"),
    ))


def mean_ci(xs: list[float]) -> tuple[float, float, float]:
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, m, m
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
    h = t_quantile(0.975, len(xs) - 1) * sd / math.sqrt(len(xs))
    return m, m - h, m + h


def synth(pattern: str, out: Path, tasks: int, seconds: float, seed: int) -> Path:
    cmd = [sys.executable, "-m", "replay", "synth", pattern, "-o", str(out), "--tasks", str(tasks),
           "--cpus", str(tasks), "--seconds", str(seconds), "--seed", str(seed), "--fault-lock", "mmap_lock",
           "--force"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=REPO)
    return out


def cpu_ns(metrics: dict) -> float:
    return metrics["work_cpu_ns"] + metrics["overhead_cpu_ns"] + metrics["spin_cpu_ns"]


def model_row(row: Row, seeds: list[int], seconds: float, costs: Costs, jobs: int, tmp: Path) -> dict:
    """Per seed: synthesize with that seed, replay under 2.6.39 and 3.0 with that seed; the ratios."""
    real, sys_, switches = [], [], []
    for seed in seeds:
        path = synth(PATTERN[row.program], tmp / f"{row.program}-{row.tasks}", row.tasks, seconds, seed)
        workload = reconstruct(Trace.open(path), cpus=CPUS)
        settings = Settings(cpus=CPUS, preempt=PREEMPT, mode="closed", costs=costs, keep_tables=False)
        specs = [RunSpec("2.6.39", seed), RunSpec("3.0", seed)]
        spin, mutex = run_all(workload, specs, settings, jobs=jobs)
        real.append(mutex.metrics["makespan_ns"] / spin.metrics["makespan_ns"])
        sys_.append(cpu_ns(mutex.metrics) / cpu_ns(spin.metrics))
        switches.append((spin.metrics["context_switches"], mutex.metrics["context_switches"]))
    return {"real": mean_ci(real), "sys": mean_ci(sys_),
            "switches": [sum(s[0] for s in switches) / len(switches), sum(s[1] for s in switches) / len(switches)]}


def verdict(published: float, model: float) -> str:
    same_side = (published - 1) * (model - 1) > 0 or published == model == 1
    err = model / published - 1
    if not same_side:
        return "direction"
    return "ok" if abs(err) <= TOLERANCE else "size"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--tasks", type=int, nargs="*", default=None, help="only these task counts")
    ap.add_argument("--programs", nargs="*", default=list(PATTERN), choices=list(PATTERN))
    ap.add_argument("--seconds", type=float, default=0.002, help="synthetic trace length per task (default 2 ms)")
    ap.add_argument("--costs", default=None, help="a costs file (Costs.load) instead of the defaults")
    ap.add_argument("--set", action="append", default=[], metavar="COST=VALUE",
                    help="override one cost (e.g. lock_data_lines=3); repeatable")
    ap.add_argument("--out", default=str(OUT), help="JSON output (default benchmarks/out/published_2011.json)")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    costs = Costs.load(args.costs) if args.costs else Costs()
    costs = replace(costs, cpus_per_socket=CPUS_PER_SOCKET)
    for item in args.set:
        name, _, value = item.partition("=")
        kind = type(getattr(costs, name))
        costs = replace(costs, **{name: kind(float(value)) if kind is int else kind(value)})
    seeds = list(range(args.seeds))
    rows = [r for r in PUBLISHED if r.program in args.programs and (args.tasks is None or r.tasks in args.tasks)]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for row in rows:
            m = model_row(row, seeds, args.seconds, costs, args.jobs, Path(tmp))
            results.append((row, m))
            print(f"  {row.program} {row.tasks}: real x{m['real'][0]:.2f} (published x{row.real_ratio:.3f}), "
                  f"sys x{m['sys'][0]:.2f} (published x{row.sys_ratio:.3f})", file=sys.stderr, flush=True)
    for prog in args.programs:
        subject, msgid = SOURCES[prog]
        print(f"\n{prog} (model: synth {PATTERN[prog]}): \"{subject}\", Peter Zijlstra, 21 Apr 2011, {msgid}, "
              f"{ARCHIVE}")
    changed = {f: getattr(costs, f) for f in costs.__dataclass_fields__ if getattr(costs, f) != getattr(Costs(), f)}
    print(f"\n24 CPUs in 2 sockets, {args.seconds * 1e3:g} ms per task synthesized, seeds 0..{len(seeds) - 1} "
          f"(mean [95% CI]); ratio = 3.0 (mutex) / 2.6.39 (spinlock); error = model / published − 1; costs "
          f"other than the defaults: {changed}\n")
    print("| program | tasks | published real ×10 (spin → mutex) | published real ratio | model makespan ratio "
          "| error | published sys ratio | model CPU ratio | error | switches 2.6.39 → 3.0 | verdict (real, sys) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    doc = []
    for row, m in results:
        r, s = m["real"], m["sys"]
        er, es = r[0] / row.real_ratio - 1, s[0] / row.sys_ratio - 1
        v = (verdict(row.real_ratio, r[0]), verdict(row.sys_ratio, s[0]))
        print(f"| {row.program} | {row.tasks} | {row.spin_real:.3f} → {row.mutex_real:.3f} s | ×{row.real_ratio:.3f} "
              f"| ×{r[0]:.3f} [{r[1]:.3f}, {r[2]:.3f}] | {er:+.0%} | ×{row.sys_ratio:.3f} "
              f"| ×{s[0]:.3f} [{s[1]:.3f}, {s[2]:.3f}] | {es:+.0%} "
              f"| {m['switches'][0]:,.0f} → {m['switches'][1]:,.0f} | {v[0]}, {v[1]} |")
        doc.append({"program": row.program, "tasks": row.tasks, "published_real_ratio": row.real_ratio,
                    "published_sys_ratio": row.sys_ratio, "model_real_ratio": r, "model_sys_ratio": s,
                    "real_error": er, "sys_error": es, "switches": m["switches"], "verdict": v})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"seeds": seeds, "seconds": args.seconds, "costs": costs.__dict__, "rows": doc},
                              indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
