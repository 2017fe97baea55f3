"""Time every named query on a 10-million-row trace (target: < 1 s each).

    PYTHONPATH=. python3 benchmarks/query_speed.py [--cache DIR] [--rows N] [--repeat 3]

The trace is built once (chunked, with write_trace's TraceWriter) into the cache
directory and reused; its rows are spread over the tables the queries read:
lock_waits 40%, lock_holds 30%, tlb_flushes 10%, sched_switch 10%,
sched_wakeup 5%, gathers 3%, syscalls 2%, plus small tasks/stacks/symbols.
Each query is collected ``--repeat`` times; the median wall time is reported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from replay.analytics import queries
from replay.analytics.source import Source
from replay.analytics.sql import run_sql
from replay.trace.manifest import Host
from replay.trace.schema import LOCK_CLASSES, SYSCALLS, TLB_REASONS
from replay.trace.writer import TraceWriter

SHARES = {"lock_waits": 0.40, "lock_holds": 0.30, "tlb_flushes": 0.10, "sched_switch": 0.10,
          "sched_wakeup": 0.05, "gathers": 0.03, "syscalls": 0.02}
CHUNK = 1_000_000
THREADS, LOCKS, STACKS, SYMBOLS = 256, 5000, 1000, 5000
KERNEL = 0xFFFFFFFF81000000
_clock: dict[str, int] = dict.fromkeys(SHARES, 0)  # last ts written per table


def _chunk(name: str, n: int, rng: np.random.Generator) -> dict[str, object]:
    ts = _clock[name] + np.cumsum(rng.integers(50, 500, n))
    _clock[name] = int(ts[-1])
    # seq must order events trace-wide as ts does (the scheduling-latency join relies on it)
    seq = ts * len(SHARES) + list(SHARES).index(name)
    tid = rng.integers(1000, 1000 + THREADS, n).astype(np.int32)
    cpu = rng.integers(0, 64, n).astype(np.int32)
    dur = rng.lognormal(8, 2, n).astype(np.int64)
    false = np.zeros(n, bool)
    if name == "lock_waits":
        return {"ts": ts, "dur": dur, "seq": seq, "cpu": cpu, "pid": tid // 16, "tid": tid,
                "lock_addr": pa.array(0xFFFF888000000000 + 64 * rng.integers(0, LOCKS, n).astype(np.uint64)),
                "flags": rng.choice(np.array([1, 2, 4, 32], np.uint32), n), "ret": np.zeros(n, np.int32),
                "begins": np.ones(n, np.int32), "lock_class": rng.integers(0, len(LOCK_CLASSES), n),
                "stack_id": rng.integers(0, STACKS, n).astype(np.int32), "incomplete": false}
    if name == "lock_holds":
        return {"ts": ts, "dur": dur, "wait": dur // 4, "seq": seq, "cpu": cpu, "pid": tid // 16, "tid": tid,
                "lock_addr": pa.array(0xFFFF888000000000 + 64 * rng.integers(0, LOCKS, n).astype(np.uint64)),
                "lock_class": rng.integers(0, len(LOCK_CLASSES), n), "mode": rng.integers(0, 2, n),
                "success": np.ones(n, bool), "depth": np.zeros(n, np.int32),
                "stack_id": rng.integers(0, STACKS, n).astype(np.int32), "incomplete": false}
    if name == "tlb_flushes":
        pages = np.where(rng.random(n) < 0.2, -1, rng.integers(1, 600, n))
        return {"ts": ts, "seq": seq, "cpu": cpu, "pid": tid // 16, "tid": tid,
                "reason": rng.integers(0, len(TLB_REASONS), n), "pages": pages}
    if name == "sched_switch":
        return {"ts": ts, "seq": seq, "cpu": cpu, "prev_tid": tid, "prev_prio": np.full(n, 120, np.int32),
                "prev_state": rng.integers(0, 2, n), "next_tid": rng.integers(1000, 1000 + THREADS, n).astype(np.int32),
                "next_prio": np.full(n, 120, np.int32)}
    if name == "sched_wakeup":
        return {"ts": ts, "seq": seq, "cpu": cpu, "tid": tid, "prio": np.full(n, 120, np.int32),
                "target_cpu": cpu, "kind": rng.integers(0, 3, n), "waker_tid": tid}
    if name == "gathers":
        return {"ts": ts, "dur": dur, "seq": seq, "cpu": cpu, "pid": tid // 16, "tid": tid,
                "mm": pa.array(rng.integers(0, 100, n).astype(np.uint64)), "fullmm": rng.random(n) < 0.1,
                "flushes": rng.integers(0, 4, n).astype(np.int32), "pages": rng.integers(0, 2000, n),
                "incomplete": false}
    if name == "syscalls":
        return {"ts": ts, "dur": dur, "seq": seq, "cpu": cpu, "pid": tid // 16, "tid": tid,
                "name": rng.integers(0, len(SYSCALLS), n),
                "arg0": pa.array(rng.integers(0, 2**47, n).astype(np.uint64)),
                "arg1": pa.array(np.full(n, 4096, np.uint64)), "ret": np.zeros(n, np.int64), "incomplete": false}
    raise ValueError(name)


def build(path: Path, rows: int) -> None:
    rng = np.random.default_rng(42)
    with TraceWriter(path, source="synthetic", host=Host(kernel_release="bench", arch="x86_64", cpus=64)) as w:
        tids = np.arange(1000, 1000 + THREADS, dtype=np.int32)
        w.write("tasks", {"tid": tids, "pid": tids // 16, "comm": [f"bench{t}" for t in tids]})
        sym = np.sort(rng.choice(np.arange(SYMBOLS * 4, dtype=np.uint64), SYMBOLS, replace=False)) * 64
        w.write("symbols", {"addr": pa.array(KERNEL + sym), "name": [f"func{i}" for i in range(SYMBOLS)],
                            "module": [""] * SYMBOLS, "file": [None] * SYMBOLS,
                            "line": pa.array([None] * SYMBOLS, pa.int32())})
        ips = [list(KERNEL + sym[rng.integers(0, SYMBOLS, 8)] + 5) for _ in range(STACKS)]
        w.write("stacks", {"stack_id": np.arange(STACKS, dtype=np.int32), "ips": pa.array(ips, pa.list_(pa.uint64()))})
        for name, share in SHARES.items():
            total, start = int(rows * share), 0
            while start < total:
                n = min(CHUNK, total - start)
                w.write(name, _chunk(name, n, rng))
                start += n


def timed(fn: object, repeat: int) -> tuple[float, float, int]:
    """(median, fastest, rows out) of ``repeat`` runs."""
    times, n = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = fn().height  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                    / "mmreplay-bench")
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    path = args.cache / f"trace-{args.rows}"
    if not (path / "manifest.json").exists():
        print(f"building {args.rows:,}-row trace in {path} ...", file=sys.stderr)
        t0 = time.perf_counter()
        build(path, args.rows)
        print(f"built in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    src = Source.open(path)
    total = sum(src.trace.rows(t) for t in src.trace.tables)
    print(f"trace {path}: {total:,} rows; median of {args.repeat} runs; polars {pl.__version__}, {os.cpu_count()} CPUs")
    cases = [(name, q.default_by) for name, q in queries.QUERIES.items() if not q.two_inputs]
    cases += [("waits", ("caller",)), ("waits", ("task",)), ("locks", ("class", "mode"))]
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'query':<34} {'rows out':>9} {'median s':>8} {'min s':>8}")
    worst = 0.0
    for name, by in cases:
        limit = queries.QUERIES[name].default_limit  # as the command line runs it
        sec, best, n = timed(lambda name=name, by=by, limit=limit: queries.run(src, name, by, limit=limit),
                             args.repeat)
        worst = max(worst, sec)
        label = f"{name} --by {','.join(by)}" if by else name
        print(f"{label:<34} {n:>9} {sec:>8.3f} {best:>8.3f}")
    sql = "SELECT lock_class, count(*) AS n, max(dur) AS m FROM lock_waits GROUP BY lock_class"
    sec, best, n = timed(lambda: run_sql(src, sql), args.repeat)
    worst = max(worst, sec)
    print(f"{'--sql (group by class)':<34} {n:>9} {sec:>8.3f} {best:>8.3f}")
    print(f"slowest median: {worst:.3f} s ({'within' if worst < 1 else 'over'} the 1 s target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
