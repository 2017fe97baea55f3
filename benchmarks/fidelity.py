"""Recorded-kernel fidelity: does a replay under this kernel's own policies give back what it recorded?

For each workload (root; records live on this kernel with the tier-1 probes):

1. record it for --seconds with --tasks tasks (`mmreplay record --workload`);
2. reconstruct it and replay it under `current` (this kernel's policies) with
   `--calibrate` costs, the recorded CPU count and preemption model, without the
   probe task (the recording had none), in closed and in open mode, --seeds seeds;
3. print, per figure, the recorded value, the replayed mean and the error:
   lock wait p50/p99 per class, operation latency p50/p99 per system call and
   for faults, context switches onto the recorded tasks, TLB flushes they raised.

The recorded side: waits from lock_holds (mmap_lock: every acquisition) and
lock_waits (other classes: contended ones only, which are all the replay has of
them); operation latency from the reconstructed spans' recorded durations (a
system call's own; a fault's from its entry to its last lock release); switches
from sched_switch; flushes: those reconstruction gave its mmu_gathers (tlb_flushes' local and
IPI-sending reasons inside a gather, and an exiting task's lazy leave of its mm, which is its full-mm
gather's flush on x86; a fault's own flushes are not a gather's: replay/workload/intervals.py).
A figure is held to the target (±15 %) when it rests on at least --min-samples
samples and the recorded figure's own 95 % sampling band is within the target
(a percentile: the values at the ranks of its band, sampling_band; a share:
binomial; a count: Poisson): another recording of the same run could differ by
that much, so a figure with a wider band cannot be held to 15 %. Every figure is
printed; those not held are marked ~.

Modes: closed and open replay, each without and with the recorded host's
interference (+i: replay/interference.py, the time other jobs held the
recorded tasks off their CPUs, as recorded).

    sudo PYTHONPATH=$PWD python3 benchmarks/fidelity.py [--seconds 1] [--tasks 2] [--seeds 3]
        [--workloads mmap1_threads,...] [--keep DIR] [--traces DIR]

--traces replays recordings made before (DIR/<workload>) instead of recording.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from replay.cli.replay import preempt_default  # noqa: E402
from replay.interference import apply as apply_interference  # noqa: E402
from replay.interference import derive as derive_interference  # noqa: E402
from replay.policies import resolve  # noqa: E402
from replay.sim import SimConfig, simulate  # noqa: E402
from replay.sim.calibrate import calibrate  # noqa: E402
from replay.sim.ops import Gather, Span, Workload, children  # noqa: E402
from replay.trace.reader import Trace  # noqa: E402
from replay.workload import reconstruct  # noqa: E402
from replay.workload.intervals import LOCAL_FLUSH_REASONS, REMOTE_FLUSH_REASON  # noqa: E402

#: contended and not, threads and processes, faults, munmap-heavy, fork-heavy
WORKLOADS = ("mmap1_threads", "mmap1_processes", "page_fault1_threads", "tlb_flush2_threads", "fork-exit",
             "mmap-file")
TARGET = 0.15
#: recorded waits of uncontended acquisitions are the tracer's time between its two tracepoints (0.1 to
#: 0.6 µs, docs/VALIDATION.md §c.1); the share of waits over this floor is compared instead
FLOOR_NS = 1_000


def sampling_band(values: np.ndarray, q: float) -> float:
    """Relative half-width of the q-quantile's 95 % band in this sample: the values at the quantiles
    q ± 1.96·sqrt(q(1−q)/n) (the band of the q-quantile's rank in n samples) against the quantile itself.
    What another sample of the same run could have given; a figure whose band exceeds the target cannot
    be held to it."""
    n = len(values)
    d = 1.96 * math.sqrt(q * (1 - q) / n)
    mid = float(np.quantile(values, q))
    lo, hi = float(np.quantile(values, max(0.0, q - d))), float(np.quantile(values, min(1.0, q + d)))
    return max(hi / mid - 1, 1 - lo / mid) if mid else math.inf


@dataclass
class Figure:
    name: str
    recorded: float
    samples: int
    replayed: dict[str, list[float]] = field(default_factory=dict)  # mode -> one value per seed
    band: float = 0.0  # the recorded percentile's relative 95 % sampling band (0: a count or a share)

    def error(self, mode: str) -> float | None:
        v = self.replayed.get(mode)
        if not v or self.recorded == 0:
            return None
        return float(np.mean(v)) / self.recorded - 1.0


def record(name: str, seconds: float, tasks: int, out: Path) -> Path:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    argv = [sys.executable, "-m", "replay", "record", "--no-tier2-check", "-o", str(out), "--workload", name,
            "--tasks", str(tasks), "--duration", str(seconds)]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"recording {name} failed: {proc.stderr.strip()[-500:]}")
    return out


def _spans(w: Workload) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    stack = [op for t in w.threads for op in t.ops]
    while stack:
        op = stack.pop()
        if isinstance(op, Span) and op.recorded_ns is not None:
            out.setdefault(op.kind, []).append(op.recorded_ns)
        stack.extend(children(op))
    return out


def _gather_flushes(w: Workload) -> int:
    n = 0
    stack = [op for t in w.threads for op in t.ops]
    while stack:
        op = stack.pop()
        if isinstance(op, Gather):
            n += op.recorded_flushes or 0
        stack.extend(children(op))
    return n


def all_flushes(trace: Trace, tids: list[int]) -> int:
    """Every TLB flush the recorded tasks raised (local, or sending IPIs), in gathers or not."""
    if not trace.has("tlb_flushes"):
        return 0
    return (trace.scan("tlb_flushes").filter(pl.col("tid").is_in(tids) & pl.col("reason").cast(pl.String).is_in(
        [*LOCAL_FLUSH_REASONS, REMOTE_FLUSH_REASON])).select(pl.len()).collect().item())


def recorded_figures(trace: Trace, w: Workload, min_samples: int) -> list[Figure]:
    """What the kernel did, per figure (the replay's names), from the trace and its reconstruction."""
    tids = [t.tid for t in w.threads]
    figs: list[Figure] = []
    waits: dict[str, np.ndarray] = {}
    holds = trace.scan("lock_holds").filter(pl.col("tid").is_in(tids) & pl.col("success") & ~pl.col("incomplete"))
    for cls, wait in holds.group_by("lock_class").agg(pl.col("wait")).collect().rows():
        waits[cls] = np.asarray(wait, dtype=float)
    if trace.has("lock_waits"):
        lw = (trace.scan("lock_waits").filter(pl.col("tid").is_in(tids) & (pl.col("ret") == 0))
              .group_by("lock_class").agg(pl.col("dur")).collect().rows())
        for cls, dur in lw:
            if cls not in waits and cls != "runqueue_lock":
                waits[cls] = np.asarray(dur, dtype=float)
    for cls, v in sorted(waits.items()):
        for q in (50, 99):
            figs.append(Figure(f"wait_p{q}_ns:{cls}", float(np.percentile(v, q)), len(v),
                               band=sampling_band(v, q / 100)))
        if cls == "mmap_lock":  # every acquisition recorded: the share that waited (the tracer's own ~0.5 µs aside)
            p = float((v > FLOOR_NS).mean())
            band = 1.96 * math.sqrt(p * (1 - p) / len(v)) / p if p else math.inf  # binomial 95 % band, relative
            figs.append(Figure(f"wait_over_1us_pct:{cls}", 100.0 * p, len(v), band=band))
    for kind, v in sorted(_spans(w).items()):
        a = np.asarray(v, dtype=float)
        for q in (50, 99):
            figs.append(Figure(f"op_latency_p{q}_ns:{kind}", float(np.percentile(a, q)), len(a),
                               band=sampling_band(a, q / 100)))
    if trace.has("sched_switch"):
        n = trace.scan("sched_switch").filter(pl.col("next_tid").is_in(tids)).select(pl.len()).collect().item()
        figs.append(Figure("task_switches", float(n), n, band=1.96 / math.sqrt(n) if n else math.inf))  # Poisson
    # the simulator flushes in mmu_gathers only: compare the flushes the reconstruction gave its gathers
    # (a COW fault's or a single-page flush outside a gather is not modelled; the total is printed apart)
    n = _gather_flushes(w)
    figs.append(Figure("tlb_flushes", float(n), n, band=1.96 / math.sqrt(n) if n else math.inf))
    return [f for f in figs if f.samples >= 1]


def overlap(trace: Trace, tids: list[int]) -> tuple[float, int, int]:
    """The share of the recorded tasks' CPU time during which another recorded task ran too, and how
    often they were switched out preempted / asleep (sched_switch): what closed replay cannot keep."""
    if not trace.has("sched_switch"):
        return float("nan"), 0, 0
    df = (trace.scan("sched_switch").filter(pl.col("prev_tid").is_in(tids) | pl.col("next_tid").is_in(tids))
          .select("ts", "prev_tid", "prev_state", "next_tid").sort("ts").collect())
    tidset = set(tids)
    running = 0
    last = None
    busy = both = 0
    preempted = slept = 0
    for ts, prev, state, nxt in df.rows():
        if last is not None and running:
            busy += (ts - last) * running
            if running >= 2:
                both += (ts - last) * running
        last = ts
        if prev in tidset:
            running = max(0, running - 1)
            if state == 0:
                preempted += 1
            else:
                slept += 1
        if nxt in tidset:
            running += 1
    return (both / busy if busy else float("nan")), preempted, slept


#: replay modes: closed/open, and each with the recorded host's interference (replay/interference.py)
MODES = ("closed", "open", "closed+i", "open+i")


def with_interference(w: Workload, trace: Trace, mode: str) -> Workload:
    """The workload with the time other jobs held its tasks off their CPUs, as recorded (as `replay
    --interference --mode MODE` places it)."""
    cal = calibrate(trace)
    inf = derive_interference(trace, [t.tid for t in w.threads], w.cpus)
    c = cal.costs
    return apply_interference(w, inf, c.wakeup_ns + c.wake_jitter_ns + c.context_switch_ns,
                              woken=mode == "closed", exact=bool(c.blocks_hold_wakeup)).workload


def replay_figures(w: Workload, trace: Trace, mode: str, seeds: int) -> list[dict[str, float]]:
    cal = calibrate(trace)
    preempt = preempt_default(trace.manifest.host.preempt_model)[0]
    if mode.endswith("+i"):
        mode = mode[:-2]
        w = with_interference(w, trace, mode)
    out = []
    for seed in range(seeds):
        res = simulate(w, SimConfig(cpus=w.cpus, policy=resolve("current"), preempt=preempt, seed=seed, mode=mode,
                                    costs=cal.costs, probe=False))
        m = dict(res.metrics)
        sched = res.tables["sim_sched"]
        holds = pl.from_arrow(res.tables["sim_lock_holds"].select(["lock_class", "wait"]))
        for cls, wait in holds.group_by("lock_class").agg(pl.col("wait")).rows():
            m[f"wait_over_1us_pct:{cls}"] = 100.0 * float((np.asarray(wait) > FLOOR_NS).mean())
        m["task_switches"] = float(pl.from_arrow(sched.select(["next_tid"])).filter(pl.col("next_tid") >= 0)
                                   .height)
        out.append(m)
    return out


def fmt(v: float | None, name: str) -> str:
    if v is None:
        return "-"
    if "_pct:" in name:
        return f"{v:.1f} %"
    if name.endswith("_ns") or "_ns:" in name:
        if abs(v) >= 1e6:
            return f"{v / 1e6:.3g} ms"
        if abs(v) >= 1e3:
            return f"{v / 1e3:.3g} µs"
        return f"{v:.0f} ns"
    return f"{v:,.0f}"


def run(name: str, trace_dir: Path, seeds: int, min_samples: int) -> tuple[list[Figure], dict]:
    trace = Trace.open(trace_dir)
    w = reconstruct(trace)
    figs = recorded_figures(trace, w, min_samples)
    for mode in MODES:
        runs = replay_figures(w, trace, mode, seeds)
        for f in figs:
            vals = [r[f.name] for r in runs if f.name in r]
            if vals:
                f.replayed[mode] = vals
    tids = [t.tid for t in w.threads]
    share, preempted, slept = overlap(trace, tids)
    return figs, {"threads": len(w.threads), "cpus": w.cpus, "overlap": share, "preempted": preempted,
                  "slept": slept, "flushes": all_flushes(trace, tids)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--tasks", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--min-samples", type=int, default=20, help="fewer samples: the figure is marked (~)")
    ap.add_argument("--traces", type=Path, help="replay DIR/<workload> recorded before instead of recording")
    ap.add_argument("--keep", type=Path, help="keep the recordings in this directory")
    ap.add_argument("--markdown", action="store_true", help="print markdown tables (docs/VALIDATION.md)")
    args = ap.parse_args()
    names = [n for n in args.workloads.split(",") if n]
    base = args.keep or Path(tempfile.mkdtemp(prefix="mmr-fidelity-"))
    within = dict.fromkeys(MODES, 0)
    total = 0
    for name in names:
        trace_dir = args.traces / name if args.traces else record(name, args.seconds, args.tasks, base / name)
        figs, facts = run(name, trace_dir, args.seeds, args.min_samples)
        print(f"\n## {name}: {facts['threads']} tasks on {facts['cpus']} CPUs, current --calibrate, "
              f"{args.seeds} seed(s), probe off; recorded: {100 * facts['overlap']:.0f} % of the tasks' CPU time "
              f"ran alongside another recorded task, {facts['preempted']:,} preemptions, "
              f"{facts['slept']:,} sleeps, {facts['flushes']:,} TLB flushes in all (in gathers or not)\n")
        if args.markdown:
            print("| figure | samples | recorded | band | " + " | ".join(f"{m} | error" for m in MODES) + " |")
            print("|---|---:|---:|---:|" + "---:|---:|" * len(MODES))
        else:
            print(f"{'figure':<34}{'samples':>9}{'recorded':>12}{'band':>7}"
                  + "".join(f"{m:>12}{'error':>8}" for m in MODES))
        for f in figs:
            held = f.samples >= args.min_samples and f.band <= TARGET and f.recorded > 0
            cells = []
            for mode in MODES:
                v = f.replayed.get(mode)
                e = f.error(mode)
                cells += [fmt(float(np.mean(v)) if v else None, f.name), "-" if e is None else f"{100 * e:+.0f}%"]
                if held and mode == MODES[0]:
                    total += 1
                if held and e is not None:
                    within[mode] += abs(e) <= TARGET
            label = f.name + ("" if held else "~")
            band = "inf" if math.isinf(f.band) else f"±{100 * f.band:.0f}%"
            if args.markdown:
                print(f"| {label} | {f.samples} | {fmt(f.recorded, f.name)} | {band} | " + " | ".join(cells) + " |")
            else:
                print(f"{label:<34}{f.samples:>9}{fmt(f.recorded, f.name):>12}{band:>7}" + "".join(
                    f"{c:>12}" if i % 2 == 0 else f"{c:>8}" for i, c in enumerate(cells)))
    print(f"\nheld to ±{100 * TARGET:.0f}%: {total} figures (≥ {args.min_samples} samples and a recorded 95 % "
          f"sampling band within ±{100 * TARGET:.0f}%; ~: not held). Within, per mode: "
          + ", ".join(f"{m} {within[m]}/{total}" for m in MODES))
    if not args.keep and not args.traces:
        print(f"recordings in {base}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
