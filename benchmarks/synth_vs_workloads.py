"""Compare the synthesizer's default model with the real workload programs on this host.

For every workload: run the program with one task (uncontended) and compare
its measured time per iteration with the mean time per iteration of the
synthetic template under the default model. A ratio far from 1 says a default
is off for this host (use `mmreplay synth --fit` with a recorded trace).

Run: PYTHONPATH=$PWD python3 benchmarks/synth_vs_workloads.py [--seconds 0.5]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from replay.synth.model import Model  # noqa: E402
from replay.synth.patterns import PATTERNS, Params, tasks_for  # noqa: E402
from replay.synth.template import compile_template  # noqa: E402

REGION_PAGES = 256


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=0.5)
    args = ap.parse_args()
    import tracer.workloads as wl
    model = Model()
    print(f"{'workload':<24} {'measured ns/it':>15} {'model ns/it':>12} {'model/measured':>15}")
    for name in wl.names():
        params = {"region_bytes": REGION_PAGES * 4096} if hasattr(wl.spec(name), "region_bytes") else {}
        if name == "kbuild":
            params = {"files": 8}
        seconds = 3.0 if name == "kbuild" else args.seconds
        out = subprocess.run(wl.command(name, 1, seconds, **params), capture_output=True, text=True, check=True)
        s = wl.parse_summary(out.stdout)
        measured = s.seconds * 1e9 / max(1, s.iterations)
        pattern = PATTERNS[name]
        p = Params(tasks=1, cpus=1, region_pages=REGION_PAGES, files=256)
        task = tasks_for(pattern, p)[0]
        compiled = compile_template(pattern.build(task, p, pattern.region_pages(p)))
        per_iteration = compiled.mean_ns(model)
        if name.startswith(("page_fault", "tlb_flush")):
            per_iteration /= pattern.region_pages(p)  # the program counts pages, the template whole passes
        print(f"{name:<24} {measured:>15.0f} {per_iteration:>12.0f} {per_iteration / measured:>15.2f}")


if __name__ == "__main__":
    main()
