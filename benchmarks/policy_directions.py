"""Direction and size of the 2011 policy changes on a modelled mmap-file workload (DESIGN.md §6.4).

    PYTHONPATH=. python3 benchmarks/policy_directions.py [--tasks 16] [--cpus 8] [--seeds 3]

N tasks loop mmap / 3 faults / think / munmap of one shared file (i_mmap contended,
a 64-page gather per munmap); each policy set × preemption model runs over seeds
and prints means of makespan, i_mmap wait p99, probe latency p99/max, longest
preempt-off section, spinning CPU and context switches.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from replay.policies import resolve
from replay.sim import SimConfig, simulate

sys.path.insert(0, str(Path(__file__).parent))
from replay_speed import mmap_file  # noqa: E402  (the workload the speed benchmark uses)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=16)
    ap.add_argument("--cpus", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--loops", type=int, default=200)
    args = ap.parse_args()
    w = mmap_file(args.tasks, args.loops)
    keys = [("makespan_ns", 1e6, "makespan ms"), ("wait_p99_ns:i_mmap_rwsem", 1e3, "i_mmap wait p99 us"),
            ("probe_latency_p99_ns", 1e3, "probe p99 us"), ("probe_latency_max_ns", 1e3, "probe max us"),
            ("preempt_off_max_ns", 1e3, "preempt-off max us"), ("spin_cpu_ns", 1e6, "spin ms"),
            ("context_switches", 1, "switches")]
    print(f"{'set':8} {'preempt':9} " + " ".join(f"{k[2]:>18}" for k in keys))
    for pol in ("2.6.39", "3.0", "current"):
        for pre in ("none", "voluntary", "full"):
            runs = [simulate(w, SimConfig(cpus=args.cpus, policy=resolve(pol), preempt=pre, seed=s)).metrics
                    for s in range(args.seeds)]
            cells = []
            for key, scale, _ in keys:
                vals = [r.get(key, 0.0) / scale for r in runs]
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                cells.append(f"{statistics.mean(vals):11.2f} ±{sd:5.2f}")
            print(f"{pol:8} {pre:9} " + " ".join(f"{c:>18}" for c in cells))


if __name__ == "__main__":
    main()
