"""The waker's cost of one wake-up on this host: what Costs.mutex_waker_ns stands for.

3.0's mutex unlock called wake_up_process() with the mutex's wait_lock held
(docs/VALIDATION.md §b); how long that took the unlocker decides the direction
of the spinlock -> mutex comparison there. No tier-1 tracepoint times it, so
this times FUTEX_WAKE in the waking thread (benchmarks/waker_cost.c), with a
sleeper to wake on another CPU and with none; the difference is the waker's
share of a remote wake-up on this machine (its kernel, its CPUs or hypervisor).

    python3 benchmarks/waker_cost.py [--rounds 3000] [--runs 3] [--waker-cpu 0] [--sleeper-cpu 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--waker-cpu", type=int, default=0)
    ap.add_argument("--sleeper-cpu", type=int, default=1)
    a = ap.parse_args()
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        print("waker_cost: no C compiler (set CC or install gcc)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "waker_cost"
        subprocess.run([cc, "-O2", "-pthread", "-o", str(exe), str(HERE / "waker_cost.c")], check=True)
        runs = []
        for _ in range(a.runs):
            out = subprocess.run([str(exe), str(a.rounds), str(a.waker_cpu), str(a.sleeper_cpu)],
                                 capture_output=True, text=True, check=True).stdout.split()
            runs.append([int(x) for x in out])
    print(f"FUTEX_WAKE in the waker (CPU {a.waker_cpu}), sleeper on CPU {a.sleeper_cpu}, "
          f"{a.runs} runs x {a.rounds} wake-ups (ns; p10 / p50 / p90 per run):")
    for i, r in enumerate(runs, 1):
        print(f"  run {i}: with a sleeper {r[0]:,} / {r[1]:,} / {r[2]:,}; with none {r[3]:,} / {r[4]:,} / {r[5]:,}")
    w = statistics.median(r[1] for r in runs)
    n = statistics.median(r[4] for r in runs)
    print(f"median of the runs' p50: {w:,} ns with a sleeper, {n:,} ns with none: "
          f"the waker's share of a wake-up ~ {w - n:,} ns (mutex_waker_ns)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
