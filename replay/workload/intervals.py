"""The recorded intervals of each thread, read from a trace: the raw material of reconstruction.

Every operation the simulator replays starts life here as an ``Interval`` of one
tid: a system call or page fault (``span``), a lock acquisition (``critical``:
attempt → acquired → released), or an mmu_gather (``gather``). Off-CPU time
comes from sched_switch as ``OffCpu`` pieces. Nothing here nests or derives;
reconstruct.py and holds.py do that.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from weakref import WeakKeyDictionary

import numpy as np
import polars as pl

from replay.sim.ops import LockRef
from replay.trace.reader import Trace

#: lock_waits flags (LCB_F_*)
LCB_SPIN, LCB_READ, LCB_WRITE, LCB_MUTEX = 1, 2, 4, 32
#: tlb_flush reasons a task raises for its own work (the others are received, not initiated)
LOCAL_FLUSH_REASONS = ("TLB_LOCAL_SHOOTDOWN", "TLB_LOCAL_MM_SHOOTDOWN")
REMOTE_FLUSH_REASON = "TLB_REMOTE_SEND_IPI"
#: x86: a CPU lazily on an mm that is flushed switches to init_mm instead (flush_tlb_func); in an exiting
#: task's full-mm gather that switch is the gather's one flush (pages 0 with PCID: nothing to flush)
LAZY_LEAVE_REASON = "TLB_FLUSH_ON_TASK_SWITCH"
#: a TLB_FLUSH_ON_TASK_SWITCH this soon after the task's own sched_switch is that context switch's
CONTEXT_SWITCH_FLUSH_NS = 20_000
SPAN_KIND = {"exit_group": "exit"}
#: note naming the faults whose end no event shows (served under the per-VMA lock, tier 1)
UNMEASURED_FAULTS = "faults with no measured end (per-VMA lock, tier 1): not replayed as operations"
#: note naming the batched frees of page faults (a full LRU batch drained), which are not mmu_gathers
FAULT_FREES = "batched frees inside page faults (LRU batch drains): left in the fault's time, not gathers"
#: lock classes of the scheduler itself: the simulator models scheduling, their recorded waits are dropped
SCHEDULER_CLASSES = frozenset({"runqueue_lock"})
#: a fault's lock holds follow its entry (and each other) within this gap
FAULT_CHAIN_GAP_NS = 20_000
#: outside a system call, free bursts further apart than this are separate gathers
GATHER_SPLIT_GAP_NS = 100_000
#: sched_switch prev_state bits of a task switched out for the last time (EXIT_DEAD, EXIT_ZOMBIE)
EXIT_STATES = 0x10 | 0x20

RANK = {"span": 0, "critical": 1, "gather": 2}


@dataclass(eq=False)
class Interval:
    """One recorded (or, for ``derived`` criticals, partly modelled) operation of a thread.

    ``start`` is the attempt (for a critical, the start of its wait), ``body_start``
    where the work inside begins (for a critical, the moment it acquired the lock),
    ``end`` the release / return.
    """

    kind: str  # span | critical | gather
    start: int
    body_start: int
    end: int
    seq: int
    span_kind: str = ""
    lock: LockRef | None = None
    mode: str = "write"
    wait: int | None = None
    derived: bool = False
    exclusive_wait: bool = True  # a derived wait whose successor's acquisition bounds our release
    evidence: str = ""  # derived holds: which evidence of the missing-holds model decided the hold
    pages: int = 0
    flushes: int | None = None
    fullmm: bool = False
    mm: int = 0
    recorded_ns: int | None = None
    children: list[Interval] = field(default_factory=list)

    def key(self) -> tuple[int, int, int, int]:
        """Sort order for nesting: outer before inner (earlier start, later end, span before lock)."""
        return (self.start, -self.end, RANK[self.kind], self.seq)


@dataclass(frozen=True)
class OffCpu:
    """A stretch off CPU: ``blocked`` (switched out with prev_state≠0) or preempted (runnable)."""

    start: int
    end: int
    blocked: bool


@dataclass
class ThreadRecord:
    """Everything the trace says one thread did."""

    tid: int
    pid: int
    comm: str = ""
    prio: int = 120
    intervals: list[Interval] = field(default_factory=list)
    waits: list[Interval] = field(default_factory=list)  # contended waits of classes without hold data
    off_cpu: list[OffCpu] = field(default_factory=list)
    instants: list[int] = field(default_factory=list)  # events with no duration (unmeasured fault entries)
    first_sched: int | None = None
    last_out: int | None = None  # final switch-out (blocked) after which the thread never ran again

    def first_ns(self) -> int:
        starts = [iv.start for iv in self.intervals] + [w.start for w in self.waits] + self.instants
        if self.first_sched is not None:
            starts.append(self.first_sched)
        return min(starts)

    def last_ns(self) -> int:
        ends = [iv.end for iv in self.intervals] + [w.end for w in self.waits] + self.instants
        if self.last_out is not None:
            ends.append(self.last_out)
        return max(ends)


@dataclass
class Recorded:
    """The whole trace, per thread, plus facts reconstruction reports."""

    threads: dict[int, ThreadRecord]
    hold_classes: set[str]  # classes whose holds the trace measured
    mm_of_pid: dict[int, int]
    gather_source: str  # "gathers" (tier 2) | "page_free_batches" (tier 1) | "none"
    notes: Counter[str] = field(default_factory=Counter)


def _rows(trace: Trace, name: str, columns: list[str], *filters: pl.Expr) -> list[tuple]:
    lf = trace.scan(name)
    for f in filters:
        lf = lf.filter(f)
    lf = lf.select(columns)
    sort = [c for c in ("tid", "ts", "seq") if c in columns]
    return lf.sort(sort).collect().rows()


def load_contended_waits(trace: Trace, hold_classes: set[str], thread: Callable[[int, int], ThreadRecord],
                         notes: Counter[str]) -> None:
    """Each contended wait of a class without measured holds, as a derived-hold candidate on its thread's waits."""
    if not trace.has("lock_waits"):
        return
    for tid, ts, seq, pid, dur, addr, flags, ret, cls in _rows(
        trace, "lock_waits", ["tid", "ts", "seq", "pid", "dur", "lock_addr", "flags", "ret", "lock_class"],
        ~pl.col("lock_class").cast(pl.String).is_in(sorted(hold_classes)),  # others: inside the measured wait
    ):
        if cls in SCHEDULER_CLASSES:
            notes["runqueue_lock waits dropped (the simulator does its own scheduling)"] += 1
            continue
        if ret != 0:
            notes["aborted waits (ret<0) left as think time"] += 1
            continue
        mode = "read" if flags & LCB_READ else "write"
        thread(tid, pid).waits.append(Interval(
            "critical", ts, ts + dur, ts + dur, seq, lock=LockRef(cls, addr), mode=mode, wait=dur, derived=True,
            exclusive_wait=not flags & LCB_READ))


#: a recycled mm_struct's later lives get lock ids with these top bits flipped (never a kernel address)
INCARNATION_SHIFT = 48
#: per open trace, the mmap_lock holds (row of lock_holds by tid, ts, seq) in a later life of their address
_LIVES: WeakKeyDictionary[Trace, pl.DataFrame] = WeakKeyDictionary()


def _mmap_lock_incarnations(holds: pl.LazyFrame, exited: pl.LazyFrame) -> pl.LazyFrame:
    """Per mmap_lock hold (by ``row``), the life of the mm_struct it locked: 0, 1, ... at its address.

    A process's mm_struct is freed when it exits and the slab hands the same address to the next
    fork (fork-exit recycles two or three addresses among hundreds of children), so one address is
    many locks in turn, and keyed by address alone the replay makes a fork's dup_mmap (which takes
    the new mm's lock nested) wait for the *previous* owner's exit_mmap whenever the replayed timing
    lets the two overlap: waits the kernel cannot have. A life ends after a run of holds by a process
    whose own mm is at that address (the address it takes most) that never takes it again and one of
    whose tasks then exited (``exited``: tid, ts of its final switch-out); another process's holds in
    between (the parent's dup_mmap, a /proc reader) belong to the life around them.
    """
    dead = (holds.select("tid", "pid").unique().join(exited, on="tid")
            .group_by("pid").agg(pl.col("ts").max().alias("died")))
    m = holds.filter(pl.col("lock_class").cast(pl.String) == "mmap_lock").select("row", "ts", "pid", "lock_addr")
    own = (m.group_by("pid", "lock_addr").len().sort("len", "lock_addr", descending=[True, False])
           .group_by("pid", maintain_order=True).first().select("pid", pl.col("lock_addr").alias("own")))
    m = (m.sort("lock_addr", "ts", "row")
         .with_columns(run=(pl.col("pid") != pl.col("pid").shift(1).over("lock_addr")).fill_null(True)
                       .cum_sum().over("lock_addr"),
                       last=pl.col("ts").max().over("lock_addr", "pid"))
         .join(own, on="pid", how="left").join(dead, on="pid", how="left"))
    runs = (m.group_by("lock_addr", "run").agg(pl.col("ts").max().alias("end"), pl.col("last").first(),
                                               pl.col("died").first(),
                                               (pl.col("own").first() == pl.col("lock_addr").first()).alias("mine"))
            .sort("lock_addr", "run")
            .with_columns(ends=(pl.col("mine").fill_null(False) & (pl.col("end") == pl.col("last"))
                                & (pl.col("died") >= pl.col("end")).fill_null(False)).cast(pl.Int64))
            .with_columns(life=(pl.col("ends").cum_sum() - pl.col("ends")).over("lock_addr"))
            .select("lock_addr", "run", "life"))
    return m.join(runs, on=["lock_addr", "run"]).select("row", "life")


def sorted_by_tid_ts_seq(lf: pl.LazyFrame) -> pl.DataFrame:
    """``lf`` collected and sorted by tid, ts, seq: the order by numpy's lexsort of the three keys, then the
    frame read and gathered a column at a time (polars' sort of a wide frame of millions of rows holds it
    twice and more, and so does its collect); polars' own sort when some keys are null or tie."""
    keys = ("tid", "ts", "seq")
    names = lf.collect_schema().names()
    kf = lf.select(*keys).collect()
    if any(kf[k].null_count() for k in keys):
        del kf
        return lf.collect().sort(*keys)
    tid, ts, seq = (kf[k].to_numpy() for k in keys)
    order = np.lexsort((seq, ts, tid))
    tid, ts, seq = tid[order], ts[order], seq[order]
    tie = bool(np.any((tid[1:] == tid[:-1]) & (ts[1:] == ts[:-1]) & (seq[1:] == seq[:-1])))
    del tid, ts, seq, kf
    if tie:
        return lf.collect().sort(*keys)
    idx = pl.Series(order)
    del order
    cols = {}
    for c in names:  # read a column at a time: polars' collect of the whole frame peaks at twice its size
        cols[c] = lf.select(c).collect().to_series().gather(idx)
    return pl.DataFrame(cols)


def lock_holds_table(trace: Trace, columns: list[str]) -> pl.DataFrame:
    """lock_holds' ``columns`` (rows sorted by tid, ts, seq), an mmap_lock's ``lock_addr`` made the id of the
    mm's life (_mmap_lock_incarnations): the address itself for the first, its top bits XOR the life
    number from INCARNATION_SHIFT up for the next ones."""
    need = sorted({*columns, "ts", "pid", "lock_addr", "lock_class", "tid", "seq"})
    df = sorted_by_tid_ts_seq(trace.scan("lock_holds").select(need)).with_row_index("row")
    lives = _LIVES.get(trace)
    if lives is None:
        shared = (df.lazy().filter(pl.col("lock_class").cast(pl.String) == "mmap_lock")  # taken by two processes
                  .group_by("lock_addr").agg(pl.col("pid").n_unique().alias("n")).filter(pl.col("n") > 1)
                  .select("lock_addr").collect())
        if shared.is_empty() or not trace.has("sched_switch"):  # one process per address, or no deaths seen
            lives = pl.DataFrame(schema={"row": pl.UInt32, "life": pl.Int64})
        else:
            exited = (trace.scan("sched_switch").filter((pl.col("prev_state") & EXIT_STATES) != 0)
                      .select(pl.col("prev_tid").alias("tid"), "ts"))
            lives = _mmap_lock_incarnations(df.lazy().join(shared.lazy(), on="lock_addr", how="semi"), exited)
            lives = lives.filter(pl.col("life") > 0).collect()
        _LIVES[trace] = lives
    if lives.is_empty():
        return df.select(columns)
    out = (df.lazy().join(lives.lazy(), on="row", how="left")
           .with_columns(pl.when(pl.col("life").fill_null(0) > 0)
                         .then(pl.col("lock_addr") ^ (pl.col("life").cast(pl.UInt64) * (1 << INCARNATION_SHIFT)))
                         .otherwise(pl.col("lock_addr")).alias("lock_addr")))
    return out.sort("row").select(columns).collect()


def syscall_table(trace: Trace) -> pl.DataFrame:
    """The syscalls table (tid, ts, seq, pid, dur, name; sorted by tid, ts, seq), each exit_group
    stretched over the task's own mm work that followed it.

    exit_group never returns: the recorder closes it at sched_process_exit, which Linux 6.16+ fires
    *before* exit_mm (its group_dead field marks those kernels), so the exiting task's mm teardown —
    exit_mmap's mmap_lock holds, its full-mm gather and flush — would fall outside the span, be taken
    for user-mode work, and be merged with the page faults before it into one gather. A task does
    nothing in user space after exit_group, so every lock hold, free batch and TLB flush of that tid
    between the exit_group entry and its final switch-out (prev_state EXIT_ZOMBIE/EXIT_DEAD) is the
    exit's; the span ends at the last of them (unchanged on kernels that trace the exit after exit_mm)."""
    cols = ["tid", "ts", "seq", "pid", "dur", "name"]
    sc = trace.scan("syscalls").select(cols).sort("tid", "ts", "seq").collect()
    ends = exit_group_ends(trace, sc)
    if ends is None:
        return sc
    return (sc.join(ends, on=["tid", "ts"], how="left", maintain_order="left")
            .with_columns(pl.when(pl.col("new_end").is_not_null() & (pl.col("name").cast(pl.String) == "exit_group"))
                          .then(pl.col("new_end") - pl.col("ts")).otherwise(pl.col("dur")).alias("dur"))
            .select(cols))


def exit_group_ends(trace: Trace, sc: pl.DataFrame) -> pl.DataFrame | None:
    """syscall_table's stretched exit_group ends: (tid, ts, new_end) for the exit_group rows of ``sc`` (the
    syscalls table sorted by tid, ts, seq), None when nothing is stretched."""
    exits = sc.filter(pl.col("name").cast(pl.String) == "exit_group").select(
        "tid", pl.col("ts").alias("x_ts"), (pl.col("ts") + pl.col("dur")).alias("x_end"))
    if exits.is_empty():
        return None
    xl = exits.lazy()
    if trace.has("sched_switch"):  # the task's death: its first final switch-out after the exit
        dead = (trace.scan("sched_switch").filter((pl.col("prev_state") & EXIT_STATES) != 0)
                .select(pl.col("prev_tid").alias("tid"), pl.col("ts").alias("d_ts"))
                .join(xl.select("tid", "x_ts"), on="tid").filter(pl.col("d_ts") >= pl.col("x_ts"))
                .group_by("tid", "x_ts").agg(pl.col("d_ts").min()))
        xl = xl.join(dead, on=["tid", "x_ts"], how="left")
    else:
        xl = xl.with_columns(pl.lit(None, pl.Int64).alias("d_ts"))
    parts = []
    # only the exiting tasks' rows (the join below keeps no other): filtered first, not millions concatenated
    exiting = pl.col("tid").is_in(exits["tid"].unique().implode())
    for name, start, end in (("lock_holds", pl.col("ts") - pl.col("wait"), pl.col("ts") + pl.col("dur")),
                             ("page_free_batches", pl.col("ts"), pl.col("ts") + pl.col("dur")),
                             ("tlb_flushes", pl.col("ts"), pl.col("ts"))):
        if trace.has(name):
            parts.append(trace.scan(name).filter(exiting).select("tid", start.alias("s"), end.alias("e")))
    if not parts:
        return None
    after = (pl.concat(parts).join(xl, on="tid")
             .filter((pl.col("s") >= pl.col("x_ts")) & (pl.col("d_ts").is_null() | (pl.col("e") <= pl.col("d_ts"))))
             .group_by("tid", "x_ts").agg(pl.col("e").max().alias("m_end")))
    return exits.lazy().join(after, on=["tid", "x_ts"], how="left").select(
        "tid", pl.col("x_ts").alias("ts"), pl.max_horizontal("x_end", "m_end").alias("new_end")).collect()


def _mm_of_pid(trace: Trace, holds: pl.DataFrame | None = None) -> dict[int, int]:
    """Each process's mm_struct address: the mmap_lock it takes most often (its pid if never seen).
    ``holds``: lock_holds_table's rows with pid, lock_addr and lock_class, if already read."""
    votes: dict[int, Counter[int]] = defaultdict(Counter)
    if holds is None:
        holds = lock_holds_table(trace, ["pid", "lock_addr", "lock_class"])
    for pid, addr, n in (
        holds.lazy().filter(pl.col("lock_class") == "mmap_lock")
        .group_by("pid", "lock_addr").len().sort("pid", "lock_addr").collect().rows()
    ):
        votes[pid][addr] += n
    if trace.has("gathers"):
        for pid, mm, n in trace.scan("gathers").group_by("pid", "mm").len().sort("pid", "mm").collect().rows():
            votes[pid][mm] += n
    return {pid: c.most_common(1)[0][0] for pid, c in votes.items()}


def load(trace: Trace) -> Recorded:
    """Read the intervals of every thread that did mm work (lock, syscall, fault or gather)."""
    trace.require("lock_holds", needed_for="work reconstruction (mmap_lock holds and page-fault durations)")
    threads: dict[int, ThreadRecord] = {}
    notes: Counter[str] = Counter()
    mm_of_pid = _mm_of_pid(trace)

    def thread(tid: int, pid: int) -> ThreadRecord:
        t = threads.get(tid)
        if t is None:
            t = threads[tid] = ThreadRecord(tid, pid)
        return t

    def mm(pid: int) -> int:
        return mm_of_pid.get(pid, pid)

    # lock holds (tier 1: mmap_lock; tier 2: rwsems and mutexes too)
    hold_classes: set[str] = set()
    for tid, ts, seq, pid, dur, wait, addr, cls, mode, ok in lock_holds_table(
        trace, ["tid", "ts", "seq", "pid", "dur", "wait", "lock_addr", "lock_class", "mode", "success"]
    ).rows():
        hold_classes.add(cls)
        if not ok:
            notes["failed trylocks skipped"] += 1
            continue
        thread(tid, pid).intervals.append(Interval(
            "critical", ts - wait, ts, ts + dur, seq, lock=LockRef(cls, addr), mode=mode, wait=wait))

    # contended waits of classes the trace has no holds for → holds derived later (holds.py)
    load_contended_waits(trace, hold_classes, thread, notes)

    # system calls
    syscalls: dict[int, list[Interval]] = defaultdict(list)
    if trace.has("syscalls"):
        for tid, ts, seq, pid, dur, name in syscall_table(trace).rows():
            iv = Interval("span", ts, ts, ts + dur, seq, span_kind=SPAN_KIND.get(name, name), recorded_ns=dur)
            thread(tid, pid).intervals.append(iv)
            syscalls[tid].append(iv)
    else:
        notes["no syscalls table: mmap/munmap latencies not reported"] += 1

    # page faults: the trace gives the entry only; a fault lasts until it releases the last lock
    # it was seen holding (tier 1: its mmap_lock read hold; tier 2 also the page-table lock)
    if trace.has("page_faults"):
        faults: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
        for tid, ts, seq, pid in _rows(trace, "page_faults", ["tid", "ts", "seq", "pid"]):
            faults[tid].append((ts, seq, pid))
        for tid, rows in faults.items():
            t = thread(tid, rows[0][2])
            for ts, end, seq in _fault_extents(rows, t.intervals, syscalls.get(tid, ())):
                if end == ts:
                    notes[UNMEASURED_FAULTS] += 1  # its time stays in the surrounding think time
                    t.instants.append(ts)
                    continue
                t.intervals.append(Interval("span", ts, ts, end, seq, span_kind="fault", recorded_ns=end - ts))

    # gathers
    if trace.has("gathers"):
        gather_source = "gathers"
        for tid, ts, seq, pid, dur, gmm, fullmm, flushes, pages in _rows(
            trace, "gathers", ["tid", "ts", "seq", "pid", "dur", "mm", "fullmm", "flushes", "pages"]
        ):
            thread(tid, pid).intervals.append(Interval(
                "gather", ts, ts, ts + dur, seq, pages=pages, flushes=flushes, fullmm=fullmm, mm=gmm,
                recorded_ns=dur))
    elif trace.has("page_free_batches"):
        gather_source = "page_free_batches"
        _tier1_gathers(trace, threads, syscalls, mm, notes)
    else:
        gather_source = "none"
        notes["no gathers or page_free_batches: page freeing not modelled"] += 1

    # scheduling: off-CPU pieces of the threads we keep
    if trace.has("sched_switch"):
        _off_cpu(trace, threads)
    else:
        notes["no sched_switch table: all gaps taken as on-CPU think time"] += 1

    for t in threads.values():
        t.waits.sort(key=Interval.key)  # holds.py walks them in order; intervals are sorted where needed
    _names(trace, threads)
    return Recorded(threads, hold_classes, {pid: mm(pid) for pid in {t.pid for t in threads.values()}},
                    gather_source, notes)


def _fault_extents(faults: list[tuple[int, int, int]], intervals: list[Interval],
                   syscalls: list[Interval]) -> list[tuple[int, int, int]]:
    """(entry, end, seq) of each fault of one thread: the end is the release of the last measured
    lock hold in a chain that starts within FAULT_CHAIN_GAP_NS of the entry (each link within the
    gap of the previous release), before the thread's next fault or system call."""
    holds = sorted((iv for iv in intervals if iv.kind == "critical"), key=lambda iv: iv.start)
    starts = [iv.start for iv in holds]
    sys_starts = sorted(iv.start for iv in syscalls)
    out = []
    for i, (ts, seq, _pid) in enumerate(faults):
        limit = faults[i + 1][0] if i + 1 < len(faults) else None
        k = bisect_left(sys_starts, ts)
        if k < len(sys_starts) and (limit is None or sys_starts[k] < limit):
            limit = sys_starts[k]
        end = ts
        j = bisect_left(starts, ts)
        while j < len(holds) and (limit is None or starts[j] < limit) and starts[j] - end <= FAULT_CHAIN_GAP_NS:
            end = max(end, holds[j].end)
            j += 1
        out.append((ts, end, seq))
    return out


def _tier1_gathers(trace: Trace, threads: dict[int, ThreadRecord], syscalls: dict[int, list[Interval]],
                   mm_of: Callable[[int], int], notes: Counter[str]) -> None:
    """Tier 1 has no gather window: rebuild one from the batched free bursts and the TLB flushes the
    task raised inside the same system call. A lock wait between two bursts splits the gather (the
    kernel frees in unmap_vmas, takes i_mmap in free_pgtables, then flushes in tlb_finish_mmu), and so
    does a page fault's entry: a fault never runs inside an mmu_gather, and the single-page flush of a
    copy-on-write fault (ptep_clear_flush) outside a system call is the fault's, not a gather's."""
    events: dict[int, list[tuple[int, int, int, int, str]]] = defaultdict(list)  # tid → (ts, end, seq, pages, what)
    pids: dict[int, int] = {}
    for tid, ts, seq, pid, dur, pages in _rows(
        trace, "page_free_batches", ["tid", "ts", "seq", "pid", "dur", "pages"], pl.col("batched")
    ):
        events[tid].append((ts, ts + dur, seq, pages, "free"))
        pids[tid] = pid
    if trace.has("tlb_flushes"):
        for tid, ts, seq, reason in _rows(
            trace, "tlb_flushes", ["tid", "ts", "seq", "reason"],
            pl.col("reason").cast(pl.String).is_in([*LOCAL_FLUSH_REASONS, REMOTE_FLUSH_REASON]),
        ):
            if tid in events:
                events[tid].append((ts, ts, seq, 0, "remote" if reason == REMOTE_FLUSH_REASON else "local"))
        switched: dict[int, list[int]] = defaultdict(list)  # the task's own switch-outs
        if trace.has("sched_switch"):
            for tid, ts in _rows(trace, "sched_switch", ["prev_tid", "ts"], pl.col("prev_tid").is_in(list(events))):
                switched[tid].append(ts)
        exits = {tid: sorted(s.start for s in spans if s.span_kind == "exit") for tid, spans in syscalls.items()}
        exit_spans = {tid: sorted((s for s in spans if s.span_kind == "exit"), key=lambda s: s.start)
                      for tid, spans in syscalls.items()}
        for tid, ts, seq in _rows(trace, "tlb_flushes", ["tid", "ts", "seq"],
                                  pl.col("reason").cast(pl.String) == LAZY_LEAVE_REASON,
                                  pl.col("tid").is_in([t for t in events if exits.get(t)])):
            span = _container(exit_spans[tid], exits[tid], ts)
            k = bisect_left(switched.get(tid, []), ts - CONTEXT_SWITCH_FLUSH_NS)
            own_switch = k < len(switched[tid]) and switched[tid][k] <= ts
            if span is not None and not own_switch:
                events[tid].append((ts, ts, seq, 0, "local"))  # the exit's gather leaves the mm instead of flushing
    lru_frees = 0
    fault_starts: dict[int, list[int]] = defaultdict(list)  # a page fault is never inside a gather
    if trace.has("page_faults"):
        for tid, ts in _rows(trace, "page_faults", ["tid", "ts"], pl.col("tid").is_in(list(events))):
            fault_starts[tid].append(ts)
    for tid, evs in events.items():
        evs.sort(key=lambda e: (e[0], e[2]))
        faults = fault_starts.get(tid, [])
        t = threads.get(tid) or threads.setdefault(tid, ThreadRecord(tid, pids[tid]))
        spans = sorted(syscalls.get(tid, ()), key=lambda s: s.start)
        span_starts = [s.start for s in spans]
        lock_starts = sorted([iv.start for iv in t.intervals if iv.kind == "critical"] + [w.start for w in t.waits])

        group: list[tuple[int, int, int, int, str]] = []
        group_span: Interval | None = None
        for ev in evs:
            span = _container(spans, span_starts, ev[0])
            if group:
                last = max(e[1] for e in group)
                k = bisect_left(lock_starts, last)
                lock_between = k < len(lock_starts) and lock_starts[k] < ev[0]
                far = span is None and ev[0] - last > GATHER_SPLIT_GAP_NS
                f = bisect_left(faults, last)  # a COW fault's own flush (ptep_clear_flush) is not a gather's
                fault_between = f < len(faults) and faults[f] <= ev[0]
                if span is not group_span or lock_between or far or fault_between:
                    lru_frees += not _emit_gather(t, group, group_span, mm_of, faults)
                    group = []
            if not group:
                group_span = span
            group.append(ev)
        if group:
            lru_frees += not _emit_gather(t, group, group_span, mm_of, faults)
    if lru_frees:
        notes[FAULT_FREES] += lru_frees
    notes["gathers rebuilt from page_free_batches + tlb_flushes (tier 1)"] += sum(
        1 for t in threads.values() for iv in t.intervals if iv.kind == "gather")


def _container(spans: list[Interval], starts: list[int], ts: int) -> Interval | None:
    """The system call (sorted by start) that contains time ``ts``, if any."""
    k = bisect_left(starts, ts + 1) - 1
    return spans[k] if k >= 0 and spans[k].start <= ts <= spans[k].end else None


def _emit_gather(t: ThreadRecord, group: list[tuple[int, int, int, int, str]], span: Interval | None,
                 mm_of: Callable[[int], int], faults: list[int]) -> bool:
    """Add the group's gather to ``t``; False for the free burst of a page fault (not a gather)."""
    pages = sum(e[3] for e in group)
    if pages == 0:
        return True  # flushes with nothing freed (mprotect, a stray flush): not an mmu_gather
    start = min(e[0] for e in group)
    if span is None and all(e[4] == "free" for e in group):
        f = bisect_left(faults, start + 1) - 1
        if f >= 0 and start - faults[f] <= FAULT_CHAIN_GAP_NS:
            return False  # the fault's folio_add_lru drained a full LRU batch: its time stays the fault's
    end = max(e[1] for e in group)
    local = sum(1 for e in group if e[4] == "local")
    remote = sum(1 for e in group if e[4] == "remote")
    t.intervals.append(Interval(
        "gather", start, start, end, min(e[2] for e in group), pages=pages, flushes=max(local, remote),
        fullmm=span is not None and span.span_kind == "exit", mm=mm_of(t.pid), recorded_ns=end - start))
    return True


def _off_cpu(trace: Trace, threads: dict[int, ThreadRecord]) -> None:
    """Pair each thread's switch-out with its next switch-in."""
    tids = list(threads)
    df = (trace.scan("sched_switch")
          .filter(pl.col("prev_tid").is_in(tids) | pl.col("next_tid").is_in(tids))
          .select("ts", "seq", "prev_tid", "prev_prio", "prev_state", "next_tid")
          .sort("ts", "seq").collect())
    out_at: dict[int, tuple[int, bool]] = {}
    for ts, _seq, prev, prio, state, nxt in df.rows():
        if prev in threads:
            t = threads[prev]
            t.prio = prio
            if t.first_sched is None:
                t.first_sched = ts
            out_at[prev] = (ts, state != 0)
        if nxt in threads:
            t = threads[nxt]
            if t.first_sched is None:
                t.first_sched = ts
            if nxt in out_at:
                start, blocked = out_at.pop(nxt)
                t.off_cpu.append(OffCpu(start, ts, blocked))
    for tid, (ts, blocked) in out_at.items():
        if blocked:
            threads[tid].last_out = ts


def _names(trace: Trace, threads: dict[int, ThreadRecord]) -> None:
    if not trace.has("tasks"):
        return
    for tid, pid, comm in trace.scan("tasks").select("tid", "pid", "comm").collect().rows():
        t = threads.get(tid)
        if t is not None:
            t.comm = comm
            t.pid = pid
