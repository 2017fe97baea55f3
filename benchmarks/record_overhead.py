"""How much does `mmreplay record` slow a page-fault workload down, compared with `perf record`?

Runs tests/data/mm_workload.c (THREADS threads, each mmap / touch every page /
munmap, >= 500k user page faults in all) three ways, RUNS times each, and
prints the median of the workload's own wall time (measured inside it, so
tracer start-up and exec are excluded):

  bare      the workload alone
  perf      under `perf record -e <every tier-1 tracepoint>` (per task, inherited)
  mmreplay  under `mmreplay record` with every tier-1 probe (the command's tasks)

plus both slowdown ratios, the events mmreplay recorded and lost, and its
drain rate (events decoded and written per second of recorder CPU time spent
draining: the sustained rate the recorder can keep up with).

Needs root, bcc, perf and gcc. Usage:
  sudo PYTHONPATH=. python3 benchmarks/record_overhead.py [--runs 3] [--threads 1] [--iterations 2100]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from replay.trace.reader import Trace  # noqa: E402
from tracer import programs  # noqa: E402


def build(tmp: Path) -> Path:
    exe = tmp / "mmr_bench_wl"
    subprocess.run(["gcc", "-O2", "-pthread", "-o", str(exe), str(ROOT / "tests/data/mm_workload.c")], check=True)
    return exe


def workload_ns(out: str) -> tuple[int, int]:
    """The workload prints its wall time and its CPU time in ns as the last line of its stdout."""
    wall, cpu = out.strip().splitlines()[-1].split()
    return int(wall), int(cpu)


def run_bare(argv: list[str]) -> tuple[int, int]:
    return workload_ns(subprocess.run(argv, check=True, capture_output=True, text=True).stdout)


def run_perf(argv: list[str], tmp: Path, probes: list[str] | None) -> tuple[tuple[int, int], str]:
    events = [tp for fam in programs.select(probes) for tp in fam.tracepoints] + list(programs.SUPPORT_TRACEPOINTS)
    cmd = ["perf", "record", "-q", "-o", str(tmp / "perf.data")]
    for tp in dict.fromkeys(events):
        cmd += ["-e", tp]
    r = subprocess.run(cmd + ["--", *argv], check=True, capture_output=True, text=True)
    return workload_ns(r.stdout), r.stderr.strip()


def run_mmreplay(argv: list[str], tmp: Path, probes: list[str] | None) -> tuple[tuple[int, int], dict]:
    out = tmp / "trace"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    opts = ["--probes", ",".join(probes)] if probes else []
    r = subprocess.run([sys.executable, "-m", "replay", "record", "-o", str(out), "--force", "--no-tier2-check",
                        *opts, "--", *argv], check=True, capture_output=True, text=True, env=env)
    trace = Trace.open(out)
    m = trace.manifest
    # "recorded ... (drain N events/s)" is the CLI's summary line
    drain = 0.0
    for line in r.stderr.splitlines():
        if "drain" in line:
            drain = float(line.rsplit("drain ", 1)[1].split()[0].replace(",", ""))
    stats = {
        "rows": sum(e.rows for e in m.tables.values()),
        "probe_events": sum(p.events for p in m.probes),
        "lost": m.lost_events,
        "lost_by_probe": {p.name: p.lost for p in m.probes if p.lost},
        "ring_buffer_refused": sum(m.extra.get("lost_breakdown", {}).get("ring_buffer_refused", {}).values()),
        "page_faults": trace.rows("page_faults"),
        "drain_events_per_s": drain,
        "record_s": (m.end_ns - m.start_ns) / 1e9,
    }
    return workload_ns(r.stdout), stats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=2100, help="per thread; each touches --pages pages")
    ap.add_argument("--pages", type=int, default=256)
    ap.add_argument("--probes", help="comma-separated tier-1 families for both tracers (default: all)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    for tool in ("gcc", "perf"):
        if shutil.which(tool) is None:
            print(f"record_overhead: {tool} is not installed", file=sys.stderr)
            return 2
    if os.geteuid() != 0:
        print("record_overhead: needs root (perf tracepoints, bcc)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mmr_bench_") as d:
        tmp = Path(d)
        argv = [str(build(tmp)), str(args.threads), str(args.iterations), str(args.pages), "time"]
        bare, perf, mmr, mmr_stats, perf_msgs = [], [], [], [], []
        probes = args.probes.split(",") if args.probes else None
        for _ in range(args.runs):  # interleaved, so drifting machine load hits all three alike
            bare.append(run_bare(argv))
            t, msg = run_perf(argv, tmp, probes)
            perf.append(t)
            perf_msgs.append(msg)
            t, st = run_mmreplay(argv, tmp, probes)
            mmr.append(t)
            mmr_stats.append(st)
            time.sleep(0.2)
    series = {"bare": bare, "perf": perf, "mmreplay": mmr}
    med = {k: statistics.median(x[0] for x in v) / 1e9 for k, v in series.items()}
    med_cpu = {k: statistics.median(x[1] for x in v) / 1e9 for k, v in series.items()}
    result = {
        "workload": {"threads": args.threads, "iterations": args.iterations, "pages": args.pages,
                     "faults": args.threads * args.iterations * args.pages},
        "runs": args.runs,
        "median_wall_s": med,
        "median_cpu_s": med_cpu,
        "all_wall_s": {k: [x[0] / 1e9 for x in v] for k, v in series.items()},
        "all_cpu_s": {k: [x[1] / 1e9 for x in v] for k, v in series.items()},
        "slowdown": {"perf record": med["perf"] / med["bare"], "mmreplay record": med["mmreplay"] / med["bare"]},
        "cpu_slowdown": {"perf record": med_cpu["perf"] / med_cpu["bare"],
                         "mmreplay record": med_cpu["mmreplay"] / med_cpu["bare"]},
        "mmreplay": mmr_stats,
        "perf_messages": [m for m in perf_msgs if m],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    w = result["workload"]
    print(f"workload: {w['threads']} thread(s) x {w['iterations']} x {w['pages']} pages = {w['faults']:,} faults; "
          f"median of {args.runs} runs; wall = the workload's own elapsed time, cpu = its user+sys time")
    for k in series:
        print(f"  {k:<9} wall {med[k]:7.3f} s  cpu {med_cpu[k]:7.3f} s   (wall runs: "
              f"{', '.join(f'{x:.3f}' for x in result['all_wall_s'][k])})")
    print(f"  cpu slowdown: perf record {result['cpu_slowdown']['perf record']:.2f}x, "
          f"mmreplay record {result['cpu_slowdown']['mmreplay record']:.2f}x")
    print(f"  wall slowdown: perf record {result['slowdown']['perf record']:.2f}x, "
          f"mmreplay record {result['slowdown']['mmreplay record']:.2f}x")
    lost = [s["lost"] for s in mmr_stats]
    drains = [s["drain_events_per_s"] for s in mmr_stats]
    print(f"  mmreplay: {statistics.median([s['rows'] for s in mmr_stats]):,.0f} rows, "
          f"{statistics.median([s['probe_events'] for s in mmr_stats]):,.0f} probe hits; ring buffer refused "
          f"{[s['ring_buffer_refused'] for s in mmr_stats]}; lost incl. BPF recursion skips {lost} "
          f"{[s['lost_by_probe'] for s in mmr_stats]}")
    print(f"  mmreplay drain rate: median {statistics.median(drains):,.0f} events/s (runs: "
          f"{', '.join(f'{x:,.0f}' for x in drains)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
