"""perf stat's counts of a command's tasks against the rows mmreplay recorded for them in the same run.

`mmreplay record -- perf stat -e TP... -- WORKLOAD` makes both tools watch one run: perf counts each
tracepoint hit of the workload's tasks, mmreplay records them. Used by the live truth test and by
benchmarks/record_overhead.py --truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from replay.trace.reader import Trace

#: tracepoint -> the probe family that records it
TRUTH_TRACEPOINTS = ("lock:contention_begin", "sched:sched_switch", "exceptions:page_fault_user", "tlb:tlb_flush")
_FAMILY = {"lock:contention_begin": "lock_contention", "sched:sched_switch": "sched_switch",
           "exceptions:page_fault_user": "page_fault", "tlb:tlb_flush": "tlb_flush"}


@dataclass(frozen=True)
class Agreement:
    """One tracepoint: perf's count, the rows recorded, and what mmreplay says it lost or caused itself."""

    tracepoint: str
    perf: int
    recorded: int
    lost: int
    recorder: int

    @property
    def ratio(self) -> float | None:
        """recorded / (perf - recorder): perf also counts the hits the recorder caused in these tasks
        (contention on its maps' locks), which mmreplay drops on purpose and reports apart."""
        ref = self.perf - self.recorder
        return self.recorded / ref if ref > 0 else None


def parse_perf_stat_csv(text: str) -> dict[str, int]:
    """`perf stat -x,` output: event name -> count (lines whose count is not a number are skipped)."""
    out = {}
    for line in text.splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[0].isdigit():
            out[parts[2]] = int(parts[0])
    return out


def compare_with_perf(trace: Trace, comm: str, perf: dict[str, int]) -> list[Agreement]:
    """Rows of the tasks of the processes named comm against perf's counts. sched_switch: switch-outs of
    those tasks (perf counts a switch for the task switched out); lock:contention_begin: the begins folded
    into each wait; tlb:tlb_flush: all but the flush at a task switch, which happens after perf has
    switched the task's counters out."""
    tasks = trace.scan("tasks").collect()
    pids = set(tasks.filter(pl.col("comm") == comm)["pid"].to_list())
    tids = tasks.filter(pl.col("pid").is_in(list(pids)))["tid"].to_list()
    probes = {p.name: p for p in trace.manifest.probes}

    def count(table: str, col: str = "tid", extra: pl.Expr | None = None, total: pl.Expr | None = None) -> int:
        if table not in trace.tables:
            return 0
        f = pl.col(col).is_in(tids)
        if extra is not None:
            f = f & extra
        return int(trace.scan(table).filter(f).select(total if total is not None else pl.len()).collect().item()
                   or 0)

    got = {
        "lock:contention_begin": count("lock_waits", total=pl.col("begins").sum()),
        "sched:sched_switch": count("sched_switch", "prev_tid"),
        "exceptions:page_fault_user": count("page_faults"),
        "tlb:tlb_flush": count("tlb_flushes", extra=pl.col("reason") != "TLB_FLUSH_ON_TASK_SWITCH"),
    }
    out = []
    for tp, rows in got.items():
        p = probes.get(_FAMILY[tp])
        out.append(Agreement(tp, perf.get(tp, 0), rows, p.lost if p else 0, p.recorder if p else 0))
    return out
