"""Time `mmreplay info` on a 10-million-row trace and measure its peak memory.

Target (issue 2): under 1 s, with peak RSS far below the trace's size —
info reads manifest and file footers only, never the tables.

    python3 benchmarks/info_speed.py [--rows 10000000] [--runs 5] [--dir DIR]

The trace is built once in DIR (default /var/tmp/mmreplay-bench/info-10M) and
reused. Each run is a fresh `mmreplay info` process, so the time includes
interpreter start and imports, as a user sees it. A peer run of
`python3 -c "import polars, pyarrow"` in the same session gives the floor.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from replay.trace import Trace, TraceWriter  # noqa: E402

CHUNK = 1_000_000


def build(path: Path, rows: int) -> None:
    """A trace with rows split over lock_waits, lock_holds, page_faults and tlb_flushes."""
    rng = np.random.default_rng(1)
    per_table = {"lock_holds": rows * 4 // 10, "lock_waits": rows * 2 // 10,
                 "page_faults": rows * 3 // 10, "tlb_flushes": rows // 10}
    seq = 0
    with TraceWriter(path, source="synthetic", force=True, extra={"benchmark": "info_speed"}) as w:
        for name, n in per_table.items():
            for start in range(0, n, CHUNK):
                k = min(CHUNK, n - start)
                idx = np.arange(seq, seq + k)
                seq += k
                common = dict(ts=idx * 100, seq=idx, cpu=(idx % 2).astype(np.int32),
                              pid=np.full(k, 100, np.int32), tid=(100 + idx % 8).astype(np.int32))
                if name == "page_faults":
                    cols = dict(address=rng.integers(0, 2**47, k, dtype=np.uint64), ip=np.zeros(k, np.uint64),
                                error_code=np.full(k, 6, np.uint32))
                elif name == "tlb_flushes":
                    cols = dict(reason=rng.integers(0, 5, k).astype(np.int16),
                                pages=rng.integers(-1, 64, k))
                else:
                    cols = dict(dur=rng.integers(10, 10_000, k), lock_addr=np.full(k, 0xFFFF8880DEAD0000, np.uint64),
                                lock_class=rng.integers(0, 7, k).astype(np.int16),
                                stack_id=np.full(k, -1, np.int32), incomplete=np.zeros(k, bool))
                    if name == "lock_holds":
                        cols |= dict(wait=rng.integers(0, 1000, k), mode=(idx % 2).astype(np.int16),
                                     success=np.ones(k, bool), depth=np.zeros(k, np.int32))
                    else:
                        cols |= dict(flags=np.full(k, 2, np.uint32), ret=np.zeros(k, np.int32),
                                     begins=np.ones(k, np.int32))
                w.write(name, common | cols)


def timed(cmd: list[str]) -> tuple[float, int]:
    """Wall time and peak RSS (KiB) of one child process."""
    t0 = time.perf_counter()
    pid = subprocess.Popen(cmd, stdout=subprocess.DEVNULL).pid
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd} failed")
    return elapsed, usage.ru_maxrss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dir", type=Path, default=Path("/var/tmp/mmreplay-bench/info-10M"))
    ap.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build_only:
        build(args.dir, args.rows)
        return
    if not (args.dir / "manifest.json").exists() or sum(
        e.rows for e in Trace.open(args.dir).manifest.tables.values()
    ) != args.rows:
        # Built in a child: a forked child inherits its parent's peak RSS until exec.
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--build-only", "--rows", str(args.rows), "--dir", str(args.dir)],
                       check=True)
        print(f"built {args.rows} rows in {time.perf_counter() - t0:.1f} s")
    size = sum(f.stat().st_size for f in args.dir.iterdir())
    info = [sys.executable, "-m", "replay", "info", str(args.dir)]
    floor = [sys.executable, "-c", "import polars, pyarrow"]
    info_runs = [timed(info) for _ in range(args.runs)]
    floor_runs = [timed(floor) for _ in range(args.runs)]
    t_info = statistics.median(t for t, _ in info_runs)
    t_floor = statistics.median(t for t, _ in floor_runs)
    rss = max(r for _, r in info_runs)
    rss_floor = max(r for _, r in floor_runs)
    print(f"trace: {args.rows} rows, {size / 2**20:.0f} MiB on disk")
    print(f"mmreplay info: median {t_info:.3f} s over {args.runs} runs (target < 1 s); "
          f"import floor {t_floor:.3f} s; info beyond imports {t_info - t_floor:.3f} s")
    print(f"peak RSS {rss / 1024:.0f} MiB = {rss * 1024 / size:.1%} of the trace's size "
          f"(importing polars + pyarrow alone: {rss_floor / 1024:.0f} MiB)")
    print("PASS" if t_info < 1.0 and rss * 1024 < size / 4 else "FAIL")


if __name__ == "__main__":
    main()
