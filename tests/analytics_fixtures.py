"""Small traces and replay results with hand-checkable numbers, for the analytics tests.

Every figure the tests assert is derivable from the constants here; the
comments give the expected values so a reader can check them by hand.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from replay.trace.manifest import Host
from replay.trace.schema import TABLES_BY_NAME
from replay.trace.writer import write_trace

HOST = Host(kernel_release="6.1.0-test", arch="x86_64", page_size=4096, cpus=2, preempt_model="voluntary",
            hostname="fixture")

K = 0xFFFFFFFF81000000
SYMBOLS = [
    (K + 0x000, "rwsem_down_write_slowpath"),
    (K + 0x100, "down_write"),
    (K + 0x200, "__vm_munmap"),
    (K + 0x300, "do_user_addr_fault"),
    (K + 0x400, "down_read"),
    (K + 0x500, "unlink_file_vma"),
    (K + 0x600, "_raw_spin_lock"),
    (K + 0x700, "zap_pte_range"),
]
#: stack_id -> frames (innermost first); the caller is the first frame outside the lock functions.
STACKS = {
    1: [K + 0x010, K + 0x120, K + 0x230, 0x1234],  # slowpath, down_write, __vm_munmap+0x30, unknown
    2: [K + 0x408, K + 0x344],  # down_read, do_user_addr_fault+0x44
    3: [K + 0x604, K + 0x770],  # _raw_spin_lock, zap_pte_range+0x70
    4: [K + 0x120],  # only a lock function: caller falls back to it (down_write)
}
TASKS = [(100, 100, "main"), (101, 100, "worker1"), (102, 100, "worker2"), (200, 200, "kthreadd")]

MMAP_LOCK, ANON_VMA, PTL = 0xFFFF888000001000, 0xFFFF888000002000, 0xFFFF888000003000
SPIN, READ, WRITE = 1, 2, 4


def u64(xs: object) -> pa.Array:
    """Kernel addresses exceed Int64: give them their Arrow type explicitly."""
    return pa.array(list(xs), pa.uint64())


def lock_waits() -> dict[str, list]:
    """107 waits.

    mmap_lock: i = 1..100, dur = 1000*i ns; odd i are writes (stack 1), even reads (stack 2);
      tid 101 for i <= 60 else 102.  count 100, total 5_050_000, p50 50_000, p99 99_000, max 100_000.
      write: 50 waits, total 2_500_000, p50 49_000, p99 99_000; read: p50 50_000, p99 100_000.
    anon_vma: dur 500, 500, 2000 (tid 100, stack 4): p50 500, p99 2000, total 3000.
    page_table_lock: spinning, dur 100, 200, 300, 70_000 (tid 102, stack 3): p50 200, p99 70_000.
    """
    rows = []
    for i in range(1, 101):
        write = i % 2 == 1
        rows.append((i * 200_000, 1000 * i, i % 2, 101 if i <= 60 else 102, MMAP_LOCK,
                     WRITE if write else READ, "mmap_lock", 1 if write else 2))
    for j, d in enumerate((500, 500, 2000)):
        rows.append((30_000_000 + j * 10_000, d, 0, 100, ANON_VMA, WRITE, "anon_vma", 4))
    for j, d in enumerate((100, 200, 300, 70_000)):
        rows.append((40_000_000 + j * 100_000, d, 1, 102, PTL, SPIN, "page_table_lock", 3))
    ts, dur, cpu, tid, addr, flags, cls, stack = zip(*rows, strict=True)
    n = len(rows)
    return {
        "ts": ts, "dur": dur, "seq": range(n), "cpu": cpu, "pid": [100] * n, "tid": tid, "lock_addr": u64(addr),
        "flags": flags, "ret": [0] * n, "begins": [1] * n, "lock_class": cls, "stack_id": stack,
        "incomplete": [False] * n,
    }


def lock_holds() -> dict[str, list]:
    """mmap_lock holds 10_000*i for i = 1..10 (write for i <= 4), plus one failed trylock (excluded);
    i_mmap_rwsem holds 3000 and 5000.  mmap_lock: count 10, total 550_000, p50 50_000, max 100_000."""
    rows = [(i * 1_000_000, 10_000 * i, 5 * i, 101, MMAP_LOCK, "mmap_lock", "write" if i <= 4 else "read", True, 1)
            for i in range(1, 11)]
    rows.append((12_000_000, 0, 0, 102, MMAP_LOCK, "mmap_lock", "write", False, 1))
    rows += [(13_000_000, 3000, 0, 100, 0xFFFF888000004000, "i_mmap_rwsem", "write", True, 4),
             (14_000_000, 5000, 0, 100, 0xFFFF888000004000, "i_mmap_rwsem", "write", True, 4)]
    ts, dur, wait, tid, addr, cls, mode, ok, stack = zip(*rows, strict=True)
    n = len(rows)
    return {
        "ts": ts, "dur": dur, "wait": wait, "seq": range(1000, 1000 + n), "cpu": [0] * n, "pid": [100] * n,
        "tid": tid, "lock_addr": u64(addr), "lock_class": cls, "mode": mode, "success": ok, "depth": [0] * n,
        "stack_id": stack, "incomplete": [False] * n,
    }


#: (reason, pages): local 1,1,2,33; remote -1 (full), 5; task switch -1.
FLUSHES = [("TLB_LOCAL_SHOOTDOWN", 1), ("TLB_LOCAL_SHOOTDOWN", 1), ("TLB_LOCAL_SHOOTDOWN", 2),
           ("TLB_LOCAL_SHOOTDOWN", 33), ("TLB_REMOTE_SHOOTDOWN", -1), ("TLB_REMOTE_SHOOTDOWN", 5),
           ("TLB_FLUSH_ON_TASK_SWITCH", -1)]


def tlb_flushes() -> dict[str, list]:
    n = len(FLUSHES)
    return {"ts": [50_000_000 + 1000 * i for i in range(n)], "seq": range(2000, 2000 + n), "cpu": [0] * n,
            "pid": [100] * n, "tid": [101] * n, "reason": [r for r, _ in FLUSHES], "pages": [p for _, p in FLUSHES]}


def gathers() -> dict[str, list]:
    """pages 8, 510, 1020 (fullmm), 0: count 4, total 1538, p50 8, max 1020."""
    pages, fullmm = [8, 510, 1020, 0], [False, False, True, False]
    n = len(pages)
    return {"ts": [60_000_000 + 100_000 * i for i in range(n)], "dur": [4000, 30_000, 90_000, 1000],
            "seq": range(3000, 3000 + n), "cpu": [1] * n, "pid": [100] * n, "tid": [102] * n, "mm": [0xABC] * n,
            "fullmm": fullmm, "flushes": [1, 1, 3, 0], "pages": pages, "incomplete": [False] * n}


def page_free_batches() -> dict[str, list]:
    """pages 8, 16, 510."""
    pages = [8, 16, 510]
    n = len(pages)
    return {"ts": [61_000_000 + 1000 * i for i in range(n)], "dur": [100] * n, "seq": range(3100, 3100 + n),
            "cpu": [1] * n, "pid": [100] * n, "tid": [102] * n, "pages": pages, "batched": [True] * n,
            "incomplete": [False] * n}


def sched_tables() -> tuple[dict[str, list], dict[str, list]]:
    """Wakeup -> run latencies: tid 101 4000 (from its sched_waking) and 10_000; tid 102 2000.

    A wakeup of 101 while it runs (seq 9) and its return after a preemption (seq 11) are not latencies.
    """
    wake = [  # ts, seq, tid, kind
        (1000, 1, 101, "waking"), (1200, 2, 101, "wakeup"), (10_000, 5, 102, "wakeup"),
        (10_500, 6, 101, "wakeup"), (21_000, 9, 101, "wakeup"),
    ]
    switch = [  # ts, seq, cpu, prev, prev_state, next
        (5000, 3, 0, 0, 0, 101), (9000, 4, 0, 101, 1, 0), (12_000, 7, 1, 0, 0, 102), (20_500, 8, 0, 0, 0, 101),
        (30_000, 10, 0, 101, 0, 0), (31_000, 11, 0, 0, 0, 101),
    ]
    w = {"ts": [r[0] for r in wake], "seq": [r[1] for r in wake], "cpu": [0] * len(wake),
         "tid": [r[2] for r in wake], "prio": [120] * len(wake), "target_cpu": [0] * len(wake),
         "kind": [r[3] for r in wake], "waker_tid": [100] * len(wake)}
    s = {"ts": [r[0] for r in switch], "seq": [r[1] for r in switch], "cpu": [r[2] for r in switch],
         "prev_tid": [r[3] for r in switch], "prev_prio": [120] * len(switch), "prev_state": [r[4] for r in switch],
         "next_tid": [r[5] for r in switch], "next_prio": [120] * len(switch)}
    return w, s


def syscalls() -> dict[str, list]:
    """munmap 10_000, 20_000, 30_000 ns; mmap 1000, 3000 ns."""
    names, durs = ["munmap"] * 3 + ["mmap"] * 2, [10_000, 20_000, 30_000, 1000, 3000]
    n = len(names)
    return {"ts": [70_000_000 + 100_000 * i for i in range(n)], "dur": durs, "seq": range(4000, 4000 + n),
            "cpu": [0] * n, "pid": [100] * n, "tid": [101] * n, "name": names, "arg0": [0x7F0000000000] * n,
            "arg1": [4096] * n, "ret": [0] * n, "incomplete": [False] * n}


def page_faults() -> dict[str, list]:
    n = 5
    return {"ts": [80_000_000 + 10 * i for i in range(n)], "seq": range(5000, 5000 + n), "cpu": [0] * n,
            "pid": [100] * n, "tid": [101] * n, "address": u64(0x7F0000000000 + 4096 * i for i in range(n)),
            "ip": u64([0x401000] * n), "error_code": [6] * n}


def ipis() -> dict[str, object]:
    """Two shootdown IPIs sent by tid 101."""
    return {"ts": [50_000_500, 50_004_500], "seq": [2100, 2101], "cpu": [0, 0], "pid": [100, 100], "tid": [101, 101],
            "target_cpu": [1, -1], "ncpus": [1, 1], "callsite": u64([K + 0x800] * 2), "callback": u64([K + 0x900] * 2)}


def recorded_tables(extra_symbols: list[tuple[int, str]] = ()) -> dict[str, object]:
    wake, switch = sched_tables()
    syms = sorted([*SYMBOLS, *extra_symbols])
    return {
        "tasks": {"tid": [t[0] for t in TASKS], "pid": [t[1] for t in TASKS], "comm": [t[2] for t in TASKS]},
        "lock_waits": lock_waits(),
        "lock_holds": lock_holds(),
        "tlb_flushes": tlb_flushes(),
        "gathers": gathers(),
        "page_free_batches": page_free_batches(),
        "sched_wakeup": wake,
        "sched_switch": switch,
        "syscalls": syscalls(),
        "page_faults": page_faults(),
        "ipis": ipis(),
        "stacks": {"stack_id": list(STACKS), "ips": pa.array(list(STACKS.values()), pa.list_(pa.uint64()))},
        "symbols": {"addr": u64(a for a, _ in syms), "name": [n for _, n in syms], "module": [""] * len(syms),
                    "file": [None] * len(syms), "line": pa.array([None] * len(syms), pa.int32())},
    }


def write_recorded(path: Path, *, only: tuple[str, ...] | None = None, **kwargs: object) -> Path:
    """The recorded fixture trace (or only some of its tables)."""
    tables = recorded_tables(**kwargs)
    if only is not None:
        tables = {k: v for k, v in tables.items() if k in only}
    write_trace(path, tables, host=HOST, source="synthetic", start_ns=0, end_ns=100_000_000)
    return path


# -- replay results ---------------------------------------------------------------------------------
# Rows for the simulator's results tables (replay/trace/schema.py); _fill_missing gives the columns
# these figures do not depend on a neutral value.


def _sim(rows: list[tuple], cols: tuple[str, ...]) -> dict[str, object]:
    out: dict[str, object] = {c: [r[i] for r in rows] for i, c in enumerate(cols)}
    if "lock_addr" in out:
        out["lock_addr"] = u64(out["lock_addr"])
    return out


def results_tables() -> dict[str, dict[str, object]]:
    """Two policy sets over two seeds.

    sim_lock_waits, mmap_lock: spinlock 1000, 2000 (seed 0), 3000, 4000 (seed 1): p50 2000, max 4000;
      mutex 10_000 (seed 0), 20_000 (seed 1): p50 10_000; mutex anon_vma 500 (seed 0).
    sim_lock_holds: spinlock 50_000, mutex 60_000 (derived from the missing-holds model).
    sim_probe latencies: spinlock 100, 200 (cause spinlock), 300 (idle); mutex 1000, 2000 (preemptible).
    sim_preempt_off: spinlock 5000 (cpu 0), 7000 (cpu 1, a gather); mutex 100.
    sim_sched run delays of workload tasks: spinlock 0, 500, 3000; mutex 700.
    """
    key = ("policy_set", "seed", "ts", "dur", "cpu", "tid")
    lock = [("spinlock", 0, 1000, 1000, 0, 101, MMAP_LOCK, "mmap_lock", "write", 1000, False),
            ("spinlock", 0, 5000, 2000, 1, 102, MMAP_LOCK, "mmap_lock", "read", 2000, False),
            ("spinlock", 1, 1000, 3000, 0, 101, MMAP_LOCK, "mmap_lock", "write", 3000, False),
            ("spinlock", 1, 5000, 4000, 1, 102, MMAP_LOCK, "mmap_lock", "read", 4000, False),
            ("mutex", 0, 1000, 10_000, 0, 101, MMAP_LOCK, "mmap_lock", "write", 1000, True),
            ("mutex", 1, 1000, 20_000, 0, 101, MMAP_LOCK, "mmap_lock", "write", 1000, True),
            ("mutex", 0, 9000, 500, 1, 100, ANON_VMA, "anon_vma", "write", 500, False)]
    holds = [("spinlock", 0, 3000, 50_000, 1000, 0, 101, MMAP_LOCK, "mmap_lock", "write", 0, False),
             ("mutex", 0, 3000, 60_000, 10_000, 0, 101, MMAP_LOCK, "mmap_lock", "write", 0, True)]
    probe = [("spinlock", 0, 100, 100, 0, 101, "spinlock"), ("spinlock", 0, 200, 200, 0, 101, "spinlock"),
             ("spinlock", 1, 100, 300, 1, -1, "idle"), ("mutex", 0, 100, 1000, 0, 101, "preemptible"),
             ("mutex", 1, 100, 2000, 1, 101, "preemptible")]
    poff = [("spinlock", 0, 1000, 5000, 0, 101, "spinlock", "mmap_lock", False),
            ("spinlock", 0, 2000, 7000, 1, 102, "gather", None, False),
            ("mutex", 0, 1000, 100, 0, 101, "ptl", "page_table_lock", True)]
    ops = [("spinlock", 0, 0, 12_000, 0, 101, "munmap"), ("mutex", 0, 0, 15_000, 0, 101, "munmap")]
    # switch-ins: tid 101 waited 0 and 3000, tid 102 500 (spinlock); the idle task (-1) is no workload task
    sched = [("spinlock", 0, 0, 0, -1, 101, "dispatch", 0), ("spinlock", 0, 10_000, 0, 101, 102, "preempt", 500),
             ("spinlock", 0, 20_000, 0, 102, 101, "block", 3000), ("spinlock", 0, 30_000, 0, 101, -1, "exit", 0),
             ("mutex", 0, 0, 0, -1, 101, "dispatch", 700)]
    lk = ("lock_addr", "lock_class", "mode")
    return {
        "sim_lock_waits": _sim(lock, (*key, *lk, "spun_ns", "slept")),
        "sim_lock_holds": _sim(holds, (*key[:4], "wait", *key[4:], *lk, "depth", "derived")),
        "sim_probe": _sim(probe, ("policy_set", "seed", "ts", "latency", "cpu", "tid", "cause")),
        "sim_preempt_off": _sim(poff, (*key, "cause", "lock_class", "cut")),
        "sim_ops": _sim(ops, (*key, "kind")),
        "sim_sched": _sim(sched, ("policy_set", "seed", "ts", "cpu", "prev_tid", "next_tid", "reason", "wait")),
        # mutex vs spinlock: the wait p99 rises (interval excludes 0), the makespan does not move
        "sim_comparison": _sim(
            [("makespan_ns", None, None, "spinlock", "mutex", 1e6, 1.001e6, 1e3, -5e3, 7e3, 2, False),
             ("wait_p99_ns", "mmap_lock", None, "spinlock", "mutex", 4000.0, 20_000.0, 16_000.0, 15e3, 17e3, 2, False)],
            ("metric", "lock_class", "kind", "base", "other", "base_mean", "other_mean", "diff_mean", "ci_low",
             "ci_high", "seeds", "derived")),
    }


def _fill_missing(name: str, data: dict[str, object]) -> dict[str, object]:
    """Give columns the registered definition has and these rows lack a neutral value.

    replay/ owns the results schema and may add columns; the figures asserted here never
    depend on them, so the fixture keeps writing under a newer definition.
    """
    n = len(next(iter(data.values())))  # type: ignore[arg-type]
    out = dict(data)
    for col in TABLES_BY_NAME[name].columns:
        if col.name in out:
            continue
        if col.nullable:
            out[col.name] = pa.nulls(n, col.type)
        elif col.is_enum:
            out[col.name] = [col.values[0]] * n
        elif pa.types.is_boolean(col.type):
            out[col.name] = [False] * n
        elif pa.types.is_string(col.type):
            out[col.name] = [""] * n
        else:
            out[col.name] = pa.array([0] * n, col.type)
    return out


def write_results(path: Path, *, only: tuple[str, ...] | None = None, trace: Path | None = None) -> Path:
    """Replay results in the trace format (manifest kind "results")."""
    tables = {name: _fill_missing(name, data) for name, data in results_tables().items()}
    if only is not None:
        tables = {k: v for k, v in tables.items() if k in only}
    extra = {"trace": str(trace)} if trace is not None else {}
    write_trace(path, tables, kind="results", source="simulated", host=HOST, extra=extra)
    return path
