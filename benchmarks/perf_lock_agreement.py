"""How closely do mmreplay's `waits --by caller` and `perf lock contention` of the same run agree, and why not exactly?

Runs `mmreplay record --comm W --probe-cost -- perf lock record -- W` (W =
tests/data/perf_lock/mmcontend.c, 4 threads x 2000 mmap/touch/munmap) RUNS
times and prints, per run:

* the comparison per caller (perf's rows regrouped by mmreplay's caller rule
  applied to perf's -v stacks): counts, totals, mean wait on both sides;
* the run time per hit of our contention_begin / contention_end programs
  (kernel BPF statistics);
* every wait paired one to one with perf's (same tid, same lock, same order,
  from `perf script`): the difference ours - perf per wait, spinning and
  sleeping waits apart, and the offset between the two clocks at the begin.

tests/test_perf_lock_live.py is the pass/fail version. Needs root, bcc, perf, gcc.
  sudo PYTHONPATH=. python3 benchmarks/perf_lock_agreement.py [--runs 3] [--probes lock_contention|all]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from replay.analytics import perf_lock, queries  # noqa: E402
from replay.analytics.source import Source  # noqa: E402
from replay.analytics.sql import run_sql  # noqa: E402
from replay.trace.reader import Trace  # noqa: E402

_EVENT = re.compile(r"\s*(\d+)\s+\[\d+\]\s+(\d+)\.(\d+):\s+lock:contention_(begin|end):\s+(0x[0-9a-f]+)")


def perf_waits(data: Path) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """(tid, lock) -> [(begin ts, duration)] from perf's raw events, paired as perf pairs them."""
    out = subprocess.run(["perf", "script", "-i", str(data), "-F", "tid,cpu,time,event,trace", "--ns"],
                         capture_output=True, text=True, check=True).stdout
    open_: dict[tuple[int, int], int] = {}
    waits: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for line in out.splitlines():
        m = _EVENT.match(line)
        if not m:
            continue
        key, ts = (int(m[1]), int(m[5], 16)), int(m[2]) * 1_000_000_000 + int(m[3])
        if m[4] == "begin":
            open_.setdefault(key, ts)
        elif key in open_:
            t0 = open_.pop(key)
            waits[key].append((t0, ts - t0))
    return waits


def show_ours_only(trace: Path, key: tuple[int, int], perf_begins: list[int], offset: float) -> None:
    """Our waits of (tid, lock) that perf lacks: no perf begin within 100 us after ours (clock offset removed)."""
    tr = Trace.open(trace)
    rows = run_sql(Source.open(trace), "SELECT w.ts, w.dur, w.flags, c.frames FROM lock_waits w JOIN callers c "
                   f"USING (stack_id) WHERE w.tid = {key[0]} AND w.lock_addr = {key[1]} ORDER BY w.ts")
    pb = np.array(sorted(perf_begins), dtype=np.int64)
    for r in rows.iter_rows(named=True):
        t = r["ts"] - offset
        i = np.searchsorted(pb, t)
        if i < len(pb) and pb[i] - t < 100_000:
            continue
        print(f"  ours only: tid {key[0]} lock {key[1]:#x}, {(tr.manifest.end_ns - r['ts']) / 1e6:.1f} ms before the "
              f"end, dur {r['dur']} ns, flags {r['flags']}: {r['frames']}")


def per_wait(trace: Path, data: Path) -> None:
    theirs = perf_waits(data)
    ours: dict[tuple[int, int], list[tuple[int, int, int]]] = defaultdict(list)
    for ts, dur, tid, addr, flags in Trace.open(trace).scan("lock_waits").sort("ts").select(
            "ts", "dur", "tid", "lock_addr", "flags").collect().iter_rows():
        ours[(tid, addr)].append((ts, dur, flags))
    diffs: dict[str, list[int]] = defaultdict(list)
    offsets, unpaired, extra = [], 0, []
    for key in set(theirs) | set(ours):
        p, o = theirs.get(key, []), ours.get(key, [])
        unpaired += abs(len(p) - len(o))
        if len(o) > len(p):
            extra.append((key, [pt for pt, _ in p]))
        for (pt, pd), (ot, od, flags) in zip(p, o, strict=False):
            diffs["spinning" if flags & 1 else "sleeping"].append(od - pd)
            offsets.append(ot - pt)
    off = np.array(offsets)
    med = np.median(off)
    for key, begins in extra:
        show_ours_only(trace, key, begins, med + 1_000)  # perf begins after ours, by our probe's run time
    print(f"  waits paired one to one: {len(off)}, unpaired {unpaired}; "
          f"begin ts ours - perf: median {med / 1e3:.1f} us "
          f"(the clocks' offset), spread p1 {(np.percentile(off, 1) - med) / 1e3:+.2f} us, "
          f"p99 {(np.percentile(off, 99) - med) / 1e3:+.2f} us")
    for kind, d in sorted(diffs.items()):
        a = np.array(d)
        p = np.percentile(a, [1, 10, 50, 90, 99])
        print(f"  {kind:9s} {len(a):6d} waits, ours - perf per wait (ns): p1 {p[0]:.0f}  p10 {p[1]:.0f}  "
              f"p50 {p[2]:.0f}  p90 {p[3]:.0f}  p99 {p[4]:.0f}  max {a.max()}  mean {a.mean():.0f}")


def run_once(tmp: Path, exe: Path, probes: str, i: int) -> None:
    trace, data = tmp / f"trace{i}", tmp / f"perf{i}.data"
    sel = [] if probes == "all" else ["--probes", probes]
    subprocess.run([sys.executable, "-m", "replay", "record", "-o", str(trace), "--force", "--comm", exe.name, *sel,
                    "--no-tier2-check", "--probe-cost", "--", "perf", "lock", "record", "-o", str(data), "--",
                    str(exe), "4", "2000"], env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True,
                   capture_output=True)
    text = subprocess.run(["perf", "lock", "contention", "-i", str(data), "-v"], capture_output=True, text=True).stderr
    perf = perf_lock.parse(text)
    pools = perf_lock.caller_pools(perf, Trace.open(trace))
    cmp = perf_lock.compare(perf, queries.run(Source.open(trace), "waits", ["caller"]), key="mm_caller", pools=pools)
    extra = json.loads((trace / "manifest.json").read_text())["extra"]
    print(f"run {i + 1}: lost {extra['lost_breakdown']}")
    for tp, c in extra.get("probe_cost", {}).items():
        if tp.startswith("lock:"):
            print(f"  {tp}: {c['runs']} runs, {c['run_ns'] / c['runs']:.0f} ns per run, {c['run_ns'] / 1e6:.2f} ms")
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, tbl_hide_dataframe_shape=True,
                   tbl_hide_column_data_types=True):
        print(cmp.select("caller", "perf_count", "mm_count", "perf_total_ns", "mm_total_ns", "total_diff_ns",
                         (pl.col("perf_total_ns") / pl.col("perf_count")).round(0).alias("perf_mean_ns"),
                         (pl.col("mm_total_ns") / pl.col("mm_count")).round(0).alias("mm_mean_ns")).head(12))
    print(f"  all callers: perf {cmp['perf_count'].sum()} waits, {cmp['perf_total_ns'].sum()} ns; ours "
          f"{cmp['mm_count'].sum()} waits, {cmp['mm_total_ns'].sum()} ns")
    per_wait(trace, data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--probes", default="lock_contention", help="lock_contention (default) or all")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        exe = tmp / "mmplkbench"
        subprocess.run(["gcc", "-O2", "-pthread", "-o", str(exe), str(ROOT / "tests/data/perf_lock/mmcontend.c")],
                       check=True)
        print(f"load average: {os.getloadavg()}")
        for i in range(args.runs):
            run_once(tmp, exe, args.probes, i)


if __name__ == "__main__":
    main()
