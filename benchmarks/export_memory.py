"""Peak memory and time of `mmreplay export` (Perfetto protobuf) as the recording grows.

Builds a trace of N back-to-back copies of the take-all-locks sample (timestamps shifted), then
exports it in a child process and prints max RSS: bounded memory means RSS grows far slower
than N.  Usage: python3 benchmarks/export_memory.py 1 60
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from replay.trace.manifest import Host  # noqa: E402
from replay.trace.reader import Trace  # noqa: E402
from replay.trace.writer import write_trace  # noqa: E402

TABLES = ("tasks", "lock_holds", "syscalls", "sched_switch", "sched_wakeup", "tlb_flushes", "page_faults")


def build(out: Path, copies: int) -> None:
    t = Trace.open(ROOT / "sample_traces" / "take-all-locks")
    span = t.manifest.end_ns - t.manifest.start_ns
    tables = {}
    for name in TABLES:
        df = t.read(name)
        if "ts" in df.columns:
            df = pl.concat([df.with_columns(pl.col("ts") + i * span, pl.col("seq") + i * 10**7)
                            for i in range(copies)])
        tables[name] = df.to_arrow()
    host = Host(kernel_release="6.18", arch="x86_64", page_size=4096, cpus=2, preempt_model="dynamic", hostname="b")
    write_trace(out, tables, host=host, source="synthetic", start_ns=0, end_ns=span * copies + 10**9)


def main() -> None:
    for copies in map(int, sys.argv[1:] or ["1", "60"]):
        with tempfile.TemporaryDirectory() as d:
            trace, out = Path(d) / "t", Path(d) / "t.perfetto-trace"
            build(trace, copies)
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            subprocess.run([sys.executable, "-m", "replay", "export", str(trace), "-o", str(out)], cwd=ROOT,
                           check=True, capture_output=True)
            rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            print(f"copies {copies:3d}: rows x{copies}, max RSS {max(rss, before) / 1024:.0f} MB, "
                  f"output {out.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
