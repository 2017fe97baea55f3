"""Tier-2 measured lock holds against the holds replay derives from the same trace's tier-1 view.

A tier-2 trace (recorded in the guest of tests/vm/run.sh) has every i_mmap_rwsem / anon_vma hold.
Its tier-1 view (what a host that refuses tier 2 records: mmap_lock holds, contended waits, no
gathers/take_all_locks tables) leaves replay to derive holds from the waits (replay.workload.holds).
This prints, per lock class, the holds each side has (count, median, p99, total time) and what
`replay --compare 2.6.39` makes of each (the longest preempt-off section), for docs/VALIDATION.md.

    PYTHONPATH=. python3 benchmarks/tier2_vs_derived.py TRACE [--seeds N]

Durations in a guest trace are emulated time: compare the two columns with each other, not with
hardware figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

from replay.trace.reader import Trace
from replay.trace.writer import write_trace
from replay.workload.holds import derive_holds
from replay.workload.intervals import load

CLASSES = ("i_mmap_rwsem", "anon_vma")
TIER2_ONLY = ("gathers", "take_all_locks")


def tier1_view(trace: Trace, out: Path) -> Trace:
    """The same recording as tier 1 alone sees it: tier 1's mmap_lock rows, no tier-2 tables."""
    tables = {}
    for name in trace.tables:
        if name in TIER2_ONLY:
            continue
        t = trace.arrow(name)
        if name == "lock_holds":
            t = pl.from_arrow(t).filter(pl.col("lock_class") == "mmap_lock").to_arrow()
        tables[name] = t
    m = trace.manifest
    write_trace(out, tables, source="recorded", host=m.host, start_ns=m.start_ns, end_ns=m.end_ns)
    return Trace.open(out)


def _stats(durs: np.ndarray) -> dict[str, float]:
    if not len(durs):
        return {"n": 0, "p50": float("nan"), "p99": float("nan"), "total": 0.0}
    return {"n": len(durs), "p50": float(np.median(durs)), "p99": float(np.percentile(durs, 99)),
            "total": float(durs.sum())}


def measured(trace: Trace) -> dict[str, dict[str, float]]:
    h = trace.scan("lock_holds").filter(pl.col("success") & ~pl.col("incomplete")).collect()
    return {c: _stats(h.filter(pl.col("lock_class") == c)["dur"].to_numpy()) for c in CLASSES}


def derived(trace: Trace) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    rec = load(trace)
    sources = derive_holds(rec)
    durs: dict[str, list[int]] = {c: [] for c in CLASSES}
    for t in rec.threads.values():
        for iv in t.intervals:
            if iv.derived and iv.lock is not None and iv.lock.lock_class in durs:
                durs[iv.lock.lock_class].append(iv.end - iv.body_start)
    return {c: _stats(np.asarray(v, np.int64)) for c, v in durs.items()}, dict(sources)


def preempt_off(trace: Path, seeds: int) -> dict[str, float]:
    r = subprocess.run([sys.executable, "-m", "replay", "replay", str(trace), "--compare", "2.6.39", "current",
                        "--seeds", str(seeds), "--json"], capture_output=True, text=True, check=True)
    out = {}
    for row in json.loads(r.stdout)["summary"]:
        if row["metric"].startswith("preempt_off_max_ns"):
            out[f"{row['policy_set']} {row['metric']}"] = row["mean"]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("trace")
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args()
    t2 = Trace.open(args.trace)
    with tempfile.TemporaryDirectory() as tmp:
        t1 = tier1_view(t2, Path(tmp) / "tier1")
        meas = measured(t2)
        der, sources = derived(t1)
        print(f"trace {args.trace} ({t2.manifest.host.kernel_release}, {t2.manifest.host.cpus} CPUs)")
        print("| class | tier 2 measured: holds, p50, p99, total | tier 1 derived: holds, p50, p99, total |")
        print("|---|---|---|")
        for c in CLASSES:
            a, b = meas[c], der[c]
            print(f"| {c} | {a['n']}, {a['p50']:.0f} ns, {a['p99']:.0f} ns, {a['total'] / 1e6:.2f} ms "
                  f"| {b['n']}, {b['p50']:.0f} ns, {b['p99']:.0f} ns, {b['total'] / 1e6:.2f} ms |")
        print(f"derived-hold evidence: {sources}")
        po2, po1 = preempt_off(Path(args.trace), args.seeds), preempt_off(Path(tmp) / "tier1", args.seeds)
        for k in sorted(set(po2) | set(po1)):
            print(f"{k}: tier 2 {po2.get(k, 0) / 1e3:.1f} us, tier-1 view {po1.get(k, 0) / 1e3:.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
