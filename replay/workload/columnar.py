"""Columnar work reconstruction: the same Workload as the reference path, without an object per row.

The reference (intervals.py → holds.py → reconstruct.nest/build) makes an
``Interval`` of every recorded row, sorts and nests them one by one. Here the
large tables (lock_holds, syscalls, page_faults) stay numpy columns per thread;
each thread's intervals are ordered by the nesting key with ``np.lexsort`` and
cut into *segments*: runs that overlap nothing before them (an interval that
starts at or after every earlier end). ``nest`` never carries anything across
such a boundary, so segments are independent:

* a segment that is a single measured interval, or a measured root with
  measured children laid out one after the other inside its body (a system
  call around its mmap_lock section, a munmap's write hold then its downgraded
  read hold) becomes its ops straight from the columns: nothing in nest applies;
* every other segment (gathers, derived holds, deeper or overlapping nests)
  becomes ``Interval`` objects and goes through the reference ``nest`` and
  ``build`` unchanged.

The small tables (lock_waits, gathers, page_free_batches, sched_switch, tasks)
go through the reference code as rows. Derived holds use the reference
``derive_holds`` with brackets computed from the columns.

``MMREPLAY_RECONSTRUCT=reference`` selects the reference path instead; the
differential tests (tests/test_reconstruct_columnar.py) hold both to the same
Workload and the same engine input, byte for byte.
"""

from __future__ import annotations

import tempfile
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from replay.sim.ops import Critical, LockRef, Op, Span, Think, Thread
from replay.trace.reader import Trace
from replay.workload import emit as emit_rows
from replay.workload.holds import SPIN_CLASSES, MeasuredHolders, derive_holds, fit_thread_holds
from replay.workload.intervals import (
    FAULT_CHAIN_GAP_NS,
    SPAN_KIND,
    UNMEASURED_FAULTS,
    Interval,
    Recorded,
    ThreadRecord,
    _mm_of_pid,
    _names,
    _off_cpu,
    _rows,
    _tier1_gathers,
    exit_group_ends,
    load_contended_waits,
    lock_holds_table,
    syscall_table,
)
from replay.workload.reconstruct import _Gaps, build, nest

SPAN, CRITICAL, GATHER = 0, 1, 2  # intervals.RANK
KIND_NAMES = ("span", "critical", "gather")


@dataclass
class _Cols:
    """One thread's measured intervals (the reference's t.intervals before derived holds), as columns."""

    kind: np.ndarray  # SPAN | CRITICAL | GATHER
    start: np.ndarray
    body: np.ndarray  # body_start
    end: np.ndarray
    seq: np.ndarray
    code: np.ndarray  # span kind index | lock index | gather index (int32)
    mode: np.ndarray  # 1 write, 0 read (criticals)
    #: criticals: the recorded wait; spans and gathers: the recorded time. None while it is what start, body
    #: and end say (body - start for a critical, end - start for the others): until the fit moves a
    #: thread's holds (_fit_measured_holds keeps it then), so a long trace's loaded columns carry no copy of it
    extra: np.ndarray | None = None

    def extras(self) -> np.ndarray:
        """``extra``, made from start, body and end when not kept."""
        if self.extra is not None:
            return self.extra
        return np.where(self.kind == CRITICAL, self.body - self.start, self.end - self.start)


#: measured rows (lock holds and system calls) from which _Load writes each thread's columns to files as it reads
#: the tables and the cross-thread steps and the builder read them back a thread at a time (_Spooled): every
#: thread's columns held at once were the 60-s replay's peak (60 M rows x 34 B, 2 GB); below it they stay in memory
SPOOL_ROWS = 8 << 20
_DTYPES = dict(kind=np.int8, start=np.int64, body=np.int64, end=np.int64, seq=np.int64, code=np.int32, mode=np.int8,
               extra=np.int64)


class _Spooled:
    """One thread's _Cols in files (a raw file per column, the parts appended in the order _Load adds them),
    each column read when first asked for and kept until ``release``: the cross-thread steps and the builder
    hold one thread's columns at a time."""

    def __init__(self, root: Path, tid: int):
        object.__setattr__(self, "_path", root / str(tid))

    def __getattr__(self, name: str):  # a column not read yet (or released)
        dtype = _DTYPES.get(name)
        if dtype is None:
            raise AttributeError(name)
        path = Path(f"{self._path}.{name}")
        value = np.fromfile(path, dtype) if name != "extra" or path.exists() else None
        object.__setattr__(self, name, value)
        return value

    def extras(self) -> np.ndarray:
        return _Cols.extras(self)

    def keep(self, *names: str) -> None:
        """Write the columns ``names`` (changed in memory) back to their files."""
        for name in names:
            getattr(self, name).astype(_DTYPES[name], copy=False).tofile(f"{self._path}.{name}")

    def release(self) -> None:
        for name in _DTYPES:
            self.__dict__.pop(name, None)


def _release(c) -> None:
    """Let a spooled thread's columns go (in-memory _Cols: nothing)."""
    if type(c) is _Spooled:
        c.release()


def _columns(trace: Trace, name: str, cols: list[str], *filters: pl.Expr) -> pl.DataFrame:
    lf = trace.scan(name)
    for f in filters:
        lf = lf.filter(f)
    return lf.select(cols).sort([c for c in ("tid", "ts", "seq") if c in cols]).collect()


def _syscall_columns(trace: Trace) -> tuple[np.ndarray, ...]:
    """intervals.syscall_table as numpy columns (tid, ts, seq, pid, dur, name code as int64, the names):
    the stretched exit_group durations written into ``dur`` by searchsorted instead of polars' left join of
    the whole table (a second wide copy of millions of rows)."""
    cols = ["tid", "ts", "seq", "pid", "dur", "name"]
    lf = trace.scan("syscalls").select(cols)
    frame: pl.DataFrame | None = None  # syscall_table's, when it is taken instead

    def column(c: str) -> pl.Series:  # read a column at a time: polars' collect of the whole frame peaks at
        return lf.select(c).collect().to_series() if frame is None else frame[c]  # twice its size

    # only the exit_group rows are read by exit_group_ends (its rows' order is not used)
    ends = exit_group_ends(trace, lf.filter(pl.col("name").cast(pl.String) == "exit_group").collect())
    dtype = lf.collect_schema()["name"]
    names = dtype.categories.to_list() if hasattr(dtype, "categories") else None
    tid, ts, seq = (column(c).to_numpy() for c in ("tid", "ts", "seq"))
    order = np.lexsort((seq, ts, tid))
    tid, ts, seq = tid[order], ts[order], seq[order]
    tie = (tid[1:] == tid[:-1]) & (ts[1:] == ts[:-1]) & (seq[1:] == seq[:-1])
    if tie.any() or (ends is not None and ends.select("tid", "ts").is_duplicated().any()):
        # rows equal in the sort key (their order is polars' sort's) or a join on a repeated key (it repeats
        # rows): syscall_table itself then
        del order, tid, ts, seq, tie
        frame = syscall_table(trace)
        ends = None
        tid, ts, seq = (frame[c].to_numpy() for c in ("tid", "ts", "seq"))
        order = np.arange(len(tid))
    del tie
    pid = column("pid").to_numpy()[order]
    dur = column("dur").to_numpy()[order]
    code = column("name").to_physical().to_numpy()[order].astype(np.int64)
    frame = None
    del order
    if ends is not None:
        exit_code = names.index("exit_group")
        rows = _by_tid(tid)
        for t, x, new_end in ends.select("tid", "ts", "new_end").iter_rows():
            if new_end is None or t not in rows:
                continue
            lo, hi = rows[t]
            a = lo + int(np.searchsorted(ts[lo:hi], x, side="left"))
            b = lo + int(np.searchsorted(ts[lo:hi], x, side="right"))
            for i in range(a, b):
                if code[i] == exit_code:
                    dur[i] = new_end - x
    return tid, ts, seq, pid, dur, code, names


def _firsts(tid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct tids, the row of each one's first) of a table sorted by tid: np.unique(tid, return_index=True)
    without its sort (of millions of rows)."""
    first = np.flatnonzero(tid[1:] != tid[:-1]) + 1 if len(tid) else np.empty(0, np.int64)
    first = np.concatenate([np.zeros(min(len(tid), 1), np.int64), first])
    return tid[first], first


def _by_tid(tid: np.ndarray) -> dict[int, tuple[int, int]]:
    """tid → (lo, hi) rows of a table sorted by tid."""
    if len(tid) == 0:
        return {}
    tids, first = _firsts(tid)
    bounds = [*first.tolist(), len(tid)]
    return {t: (bounds[i], bounds[i + 1]) for i, t in enumerate(tids.tolist())}


class _Load:
    """The reference intervals.load, with the large tables as columns."""

    def __init__(self, trace: Trace, spool: Path | None = None):
        trace.require("lock_holds", needed_for="work reconstruction (mmap_lock holds and page-fault durations)")
        self.trace = trace
        self.notes: Counter[str] = Counter()
        self.threads: dict[int, ThreadRecord] = {}
        self.mm_of_pid: dict[int, int] = {}  # run() fills it from the lock holds it reads
        self.locks: list[LockRef] = []
        self.lock_ids: dict[tuple[str, int], int] = {}
        self.span_kinds: list[str] = []
        self.gathers: list[tuple] = []  # (pages, flushes, fullmm, mm, recorded_ns) by gather index
        self.parts: dict[int, list[dict[str, np.ndarray]]] = {}
        #: where each thread's columns are written (SPOOL_ROWS), None to keep them in ``parts``
        self.spool = spool
        self.spooled: dict[int, int] = {}  # tid -> its rows of lock holds (the first rows of its files), in order

    def thread(self, tid: int, pid: int) -> ThreadRecord:
        t = self.threads.get(tid)
        if t is None:
            t = self.threads[tid] = ThreadRecord(tid, pid)
        return t

    def create(self, tid: np.ndarray, pid: np.ndarray) -> None:
        """Create the threads of a table sorted by tid, in the reference's order, with the first row's pid."""
        if len(tid):
            tids, first = _firsts(tid)
            for t, p in zip(tids.tolist(), pid[first].tolist(), strict=True):
                self.thread(t, p)

    def add(self, tid: np.ndarray, **cols: np.ndarray) -> None:
        for t, (lo, hi) in _by_tid(tid).items():
            self._part(t, {k: v[lo:hi] for k, v in cols.items()})

    def _part(self, tid: int, part: dict[str, np.ndarray]) -> None:
        """One more piece of the thread's columns: kept in ``parts``, or appended to its files."""
        if self.spool is None:
            self.parts.setdefault(tid, []).append(part)
            return
        n = self.spooled.setdefault(tid, 0)
        if part["kind"][0] == CRITICAL:  # the lock holds: read first, the only criticals
            self.spooled[tid] = n + len(part["kind"])
        for k, v in part.items():
            with open(self.spool / f"{tid}.{k}", "ab") as f:
                np.asarray(v, _DTYPES[k]).tofile(f)

    def lock_index(self, cls: str, addr: int) -> int:
        lid = self.lock_ids.get((cls, addr))
        if lid is None:
            lid = self.lock_ids[(cls, addr)] = len(self.locks)
            self.locks.append(LockRef(cls, addr))
        return lid

    def run(self) -> tuple[Recorded, dict[int, _Cols]]:
        trace, notes = self.trace, self.notes
        holds = lock_holds_table(trace, ["tid", "ts", "seq", "pid", "dur", "wait", "lock_addr", "lock_class",
                                         "mode", "success"])  # a recycled mm's lock: one id per life
        self.mm_of_pid.update(_mm_of_pid(trace, holds))
        hold_classes = set(holds["lock_class"].unique().cast(pl.String).to_list())
        failed = int((~holds["success"]).sum())
        if failed:
            notes["failed trylocks skipped"] += failed
            # a column at a time, each let go once filtered: a filter of the whole frame holds it twice (a
            # 60-s recording's 36 M lock holds: 3.3 GB at once)
            keep, kept = holds["success"], {}
            for c in holds.columns:
                kept[c] = holds.get_column(c).filter(keep)
                holds = holds.drop(c)
            holds = pl.DataFrame(kept)
            del keep, kept
        # lock ids in order of first appearance, joined on the class's physical code (a string per row of
        # millions otherwise)
        pairs = holds.select("lock_class", "lock_addr").unique(maintain_order=True).select(
            pl.col("lock_class").to_physical().alias("p"), pl.col("lock_class").cast(pl.String).alias("c"),
            pl.col("lock_addr").alias("a"))
        for _, cls, addr in pairs.iter_rows():
            self.lock_index(cls, addr)
        lock_idx = self._lock_idx(holds, pairs)
        tid, pid = holds["tid"].to_numpy(), holds["pid"].to_numpy()
        self.create(tid, pid)
        ts, dur, wait = holds["ts"].to_numpy(), holds["dur"].to_numpy(), holds["wait"].to_numpy()
        seq, mode = holds["seq"].to_numpy(), (holds["mode"] == "write").to_numpy().astype(np.int8)
        x = None
        for t, (lo, hi) in _by_tid(tid).items():  # a thread at a time: no whole-table start, end or code
            x = ts[lo:hi]
            self._part(t, dict(kind=np.full(hi - lo, CRITICAL, np.int8), start=x - wait[lo:hi], body=x,
                               end=x + dur[lo:hi], seq=seq[lo:hi], code=lock_idx[lo:hi].astype(np.int32),
                               mode=mode[lo:hi]))
        del holds, lock_idx, ts, dur, wait, seq, mode, x

        load_contended_waits(trace, hold_classes, self.thread, notes)

        sys_by_tid: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        if trace.has("syscalls"):
            tid, ts, seq, pid, dur, code, names = _syscall_columns(trace)
            self.span_kinds = [SPAN_KIND.get(n, n) for n in names]
            self.create(tid, pid)
            del pid
            x = end = None
            for t, (lo, hi) in _by_tid(tid).items():
                x, end = ts[lo:hi], ts[lo:hi] + dur[lo:hi]
                self._part(t, dict(kind=np.full(hi - lo, SPAN, np.int8), start=x, body=x, end=end, seq=seq[lo:hi],
                                   code=code[lo:hi].astype(np.int32), mode=np.zeros(hi - lo, np.int8)))
                sys_by_tid[t] = (x, end, code[lo:hi])
            del tid, ts, seq, dur, code, x, end
        else:
            notes["no syscalls table: mmap/munmap latencies not reported"] += 1
        self.sys_by_tid = sys_by_tid

        if trace.has("page_faults"):
            self._faults()

        if trace.has("gathers"):
            gather_source = "gathers"
            for tid_, ts_, seq, pid_, dur_, gmm, fullmm, flushes, pages in _rows(
                trace, "gathers", ["tid", "ts", "seq", "pid", "dur", "mm", "fullmm", "flushes", "pages"]
            ):
                self.thread(tid_, pid_)
                self._gather(tid_, ts_, ts_ + dur_, seq, pages, flushes, fullmm, gmm)
        elif trace.has("page_free_batches"):
            gather_source = "page_free_batches"
            self._tier1()
        else:
            gather_source = "none"
            notes["no gathers or page_free_batches: page freeing not modelled"] += 1

        if trace.has("sched_switch"):
            _off_cpu(trace, self.threads)
        else:
            notes["no sched_switch table: all gaps taken as on-CPU think time"] += 1
        for t in self.threads.values():
            t.waits.sort(key=Interval.key)
        _names(trace, self.threads)
        mm = self.mm_of_pid
        rec = Recorded(self.threads, hold_classes, {pid: mm.get(pid, pid) for pid in {t.pid for t in
                                                                                     self.threads.values()}},
                       gather_source, notes)
        # the faults and the tier-1 gathers were its readers; its views would keep the whole syscalls table's
        # ts, end and code arrays alive while _cols copies every thread's columns (570 MB of a 60-s recording's)
        self.sys_by_tid = {}
        cols = self._cols()
        return rec, cols

    def _lock_idx(self, holds: pl.DataFrame, pairs: pl.DataFrame) -> np.ndarray:
        """Each hold's lock index (int32): per class, its address looked up by searchsorted in the class's
        sorted addresses (a polars join materialised the key columns and the joined frame of every row)."""
        p = holds["lock_class"].to_physical().to_numpy()
        a = holds["lock_addr"].to_numpy()
        lock_idx = np.full(len(a), -1, np.int32)
        by_class: dict[int, tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
        for code, cls, addr in pairs.iter_rows():
            by_class[code][0].append(addr)
            by_class[code][1].append(self.lock_ids[(cls, addr)])
        tables = []
        for code, (addrs, ids) in by_class.items():
            addrs_a = np.asarray(addrs, a.dtype)
            o = np.argsort(addrs_a, kind="stable")
            tables.append((code, addrs_a[o], np.asarray(ids, np.int64)[o]))
        # a window of rows at a time: the row numbers, addresses and lookups of the whole table (36 M rows of
        # a 60-s recording: 0.9 GB beside the holds frame) were that stage's peak
        for lo in range(0, len(a), 1 << 20):
            pw, aw, out = p[lo:lo + (1 << 20)], a[lo:lo + (1 << 20)], lock_idx[lo:lo + (1 << 20)]
            for code, addrs_s, ids_s in tables:
                rows = np.flatnonzero(pw == code)
                out[rows] = ids_s[np.searchsorted(addrs_s, aw[rows])]
        return lock_idx

    def _gather(self, tid: int, start: int, end: int, seq: int, pages: int, flushes, fullmm: bool, mm: int) -> None:
        gi = len(self.gathers)
        self.gathers.append((pages, flushes, fullmm, mm, end - start))
        one = np.ones(1, np.int64)
        self._part(tid, dict(
            kind=np.full(1, GATHER, np.int8), start=one * start, body=one * start, end=one * end, seq=one * seq,
            code=np.full(1, gi, np.int32), mode=np.zeros(1, np.int8)))

    def _faults(self) -> None:
        """intervals._fault_extents on columns: a fault ends with the last lock hold chained to its entry."""
        pf = _columns(self.trace, "page_faults", ["tid", "ts", "seq", "pid"])
        tid, ts, seq, pid = (pf[c].to_numpy() for c in ("tid", "ts", "seq", "pid"))
        for t, (lo, hi) in _by_tid(tid).items():
            rec = self.thread(t, int(pid[lo]))
            fts = ts[lo:hi]
            hs, he = self._hold_extents(t)
            sys_starts = (np.sort(self.sys_by_tid[t][0], kind="stable") if t in self.sys_by_tid
                          else np.empty(0, np.int64))
            limit = np.empty(len(fts), np.int64)
            big = np.iinfo(np.int64).max
            limit[:-1] = fts[1:]
            limit[-1] = big
            k = np.searchsorted(sys_starts, fts, side="left")
            has = k < len(sys_starts)
            nxt_sys = np.where(has, sys_starts[np.minimum(k, max(len(sys_starts) - 1, 0))] if len(sys_starts)
                               else big, big)
            limit = np.minimum(limit, nxt_sys)
            j0 = np.searchsorted(hs, fts, side="left")
            # as Python ints: whole lists when the faults are many; read one at a time (only the holds a fault's
            # chain reaches) when they are few next to the holds (a list of millions of ints for 67 faults)
            few = 16 * len(fts) < len(hs)
            hs_l, he_l = (_Ints(hs), _Ints(he)) if few else (hs.tolist(), he.tolist())
            n = len(hs_l)
            ends = []
            for f, j, lim in zip(fts.tolist(), j0.tolist(), limit.tolist(), strict=True):
                end = f
                while j < n and hs_l[j] < lim and hs_l[j] - end <= FAULT_CHAIN_GAP_NS:
                    if he_l[j] > end:
                        end = he_l[j]
                    j += 1
                ends.append(end)
            ends_a = np.asarray(ends, dtype=np.int64)
            unmeasured = ends_a == fts
            if unmeasured.any():
                self.notes[UNMEASURED_FAULTS] += int(unmeasured.sum())
                rec.instants.extend(fts[unmeasured].tolist())
            m = ~unmeasured
            if m.any():
                if "fault" not in self.span_kinds:
                    self.span_kinds.append("fault")
                fk = self.span_kinds.index("fault")
                s, e = fts[m], ends_a[m]
                self._part(t, dict(
                    kind=np.full(len(s), SPAN, np.int8), start=s, body=s, end=e, seq=seq[lo:hi][m],
                    code=np.full(len(s), fk, np.int32), mode=np.zeros(len(s), np.int8)))

    def _hold_extents(self, tid: int) -> tuple[np.ndarray, np.ndarray]:
        """(starts, ends) of the thread's measured lock holds, stably sorted by start."""
        if self.spool is not None:
            n = self.spooled.get(tid, 0)
            if not n:
                return np.empty(0, np.int64), np.empty(0, np.int64)
            s = np.fromfile(self.spool / f"{tid}.start", np.int64, count=n)
            e = np.fromfile(self.spool / f"{tid}.end", np.int64, count=n)
            o = np.argsort(s, kind="stable")
            return s[o], e[o]
        parts = [p for p in self.parts.get(tid, ()) if p["kind"][0] == CRITICAL] if tid in self.parts else []
        if not parts:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        s = np.concatenate([p["start"] for p in parts])
        e = np.concatenate([p["end"] for p in parts])
        o = np.argsort(s, kind="stable")
        return s[o], e[o]

    def _tier1(self) -> None:
        """intervals._tier1_gathers, given the thread's system calls and lock starts as stand-in intervals."""
        fake: dict[int, ThreadRecord] = {}
        syscalls: dict[int, list[Interval]] = {}
        tids = set(self.trace.scan("page_free_batches").filter(pl.col("batched")).select("tid").unique()
                   .collect()["tid"].to_list())
        at = self._tier1_times(tids)
        exit_code = self.span_kinds.index("exit") if "exit" in self.span_kinds else -1
        for t in tids:
            real = self.threads.get(t)
            ft = fake[t] = ThreadRecord(t, real.pid) if real is not None else None
            if ft is None:
                continue
            # _tier1_gathers only bisects these lists at the times of the thread's free bursts and flushes
            # (at[t]): the first hold starting at or after such a time, the last system call starting at or
            # before it and the exits answer each of its questions as the whole lists would; an object per
            # hold and call of a process-mode recording (every worker frees at exit) was 0.4 KiB a row
            x = at.get(t, np.empty(0, np.int64))
            hs, _ = self._hold_extents(t)
            k = np.unique(np.searchsorted(hs, x, side="left"))
            hs = hs[k[k < len(hs)]]
            ft.intervals = [Interval("critical", s, s, s, 0) for s in hs.tolist()]
            ft.waits = real.waits
            if t in self.sys_by_tid:
                s, e, code = self.sys_by_tid[t]
                o = np.argsort(s, kind="stable")
                k = np.searchsorted(s[o], x, side="right") - 1
                keep = np.zeros(len(s), bool)
                keep[o[k[k >= 0]]] = True
                keep |= code == exit_code
                s, e, code = s[keep], e[keep], code[keep]  # (in the calls' own order, as the reference's)
                syscalls[t] = [Interval("span", a, a, b, 0, span_kind=self.span_kinds[c])
                               for a, b, c in zip(s.tolist(), e.tolist(), code.tolist(), strict=True)]
        fake = {t: r for t, r in fake.items() if r is not None}
        before = set(fake)
        scratch = Counter()
        _tier1_gathers(self.trace, fake, syscalls, lambda pid: self.mm_of_pid.get(pid, pid), scratch)
        self.notes.update(scratch)
        for t, ft in fake.items():
            for iv in ft.intervals:
                if iv.kind == "gather":
                    self._gather(t, iv.start, iv.end, iv.seq, iv.pages, iv.flushes, iv.fullmm, iv.mm)
            if t not in before:  # a thread only the free bursts show, created in the reference's order
                ft.intervals = []
                self.threads[t] = ft

    def _tier1_times(self, tids: set[int]) -> dict[int, np.ndarray]:
        """Per thread, every time _tier1_gathers may look a lock start or a system call up at: the starts
        and ends of its free bursts and its flushes' times (all of them, a superset of what it asks)."""
        parts: dict[int, list[np.ndarray]] = defaultdict(list)
        f = _columns(self.trace, "page_free_batches", ["tid", "ts", "dur"], pl.col("tid").is_in(list(tids)))
        tid, ts, dur = (f[c].to_numpy() for c in ("tid", "ts", "dur"))
        for t, (lo, hi) in _by_tid(tid).items():
            parts[t] += [ts[lo:hi], ts[lo:hi] + dur[lo:hi]]
        if self.trace.has("tlb_flushes"):
            f = _columns(self.trace, "tlb_flushes", ["tid", "ts"], pl.col("tid").is_in(list(tids)))
            tid, ts = f["tid"].to_numpy(), f["ts"].to_numpy()
            for t, (lo, hi) in _by_tid(tid).items():
                parts[t].append(ts[lo:hi])
        return {t: np.concatenate(p).astype(np.int64) for t, p in parts.items()}

    def _cols(self) -> dict[int, _Cols]:
        """Each thread's parts as one _Cols, a column at a time: the parts' pieces of a column (views of
        whole-table arrays) go once it is concatenated, so the tables and the threads' columns are not all
        held at once. Spooled: each thread's files, read a thread at a time (_Spooled)."""
        if self.spool is not None:
            return {tid: _Spooled(self.spool, tid) for tid in self.spooled}
        parts, self.parts = self.parts, {}
        out: dict[int, dict[str, np.ndarray]] = {tid: {} for tid in parts}
        # the sequence numbers as int32 when they all fit (they only order ties): 4 bytes a row of every
        # thread's columns, which are all held until each thread is built (240 MB of a 60-s recording's)
        i32 = np.iinfo(np.int32)
        seqs = [p["seq"] for ps in parts.values() for p in ps if len(p["seq"])]
        narrow = all(i32.min <= x.min() and x.max() <= i32.max for x in seqs)
        del seqs
        for k in _Cols.__dataclass_fields__:
            if k == "extra":  # never loaded: made from start, body and end (_Cols.extras)
                continue
            for tid, ps in parts.items():
                if k == "seq" and narrow:
                    out[tid][k] = np.concatenate([p.pop(k) for p in ps], dtype=np.int32, casting="same_kind")
                else:
                    out[tid][k] = np.concatenate([p.pop(k) for p in ps])
        return {tid: _Cols(**c) for tid, c in out.items()}


def _brackets_of(cols: dict[int, _Cols]):
    """holds._brackets from a thread's columns: (innermost measured parent's end, next event, next sleep)."""

    def brackets(t: ThreadRecord) -> dict[int, tuple[int | None, int | None, int | None]]:
        out: dict[int, tuple[int | None, int | None, int | None]] = {}
        if not t.waits:
            return out
        c = cols.get(t.tid)
        if c is not None:
            order = _nest_order(c.start, c.end, c.kind, c.seq)  # as _thread's
            ms, me = c.start[order], c.end[order]
        else:
            order = ms = me = np.empty(0, np.int64)
        # each segment's first interval (_segment_first's, kept only where a segment starts: a long thread's
        # per-interval arrays are the memory here)
        seg_starts = _segment_starts(ms, me)
        # the next interval or wait start after a wait's body: ms is sorted (lexsort's last key), so is ws
        ws = np.sort(np.asarray([w.start for w in t.waits], np.int64))
        sleeps = sorted(o.start for o in t.off_cpu if o.blocked)
        for w in t.waits:
            n = int(np.searchsorted(ms, w.start, side="right"))
            parent = None
            if n:
                stack: list[int] = []
                for i in range(int(seg_starts[np.searchsorted(seg_starts, n - 1, side="right") - 1]), n):
                    while stack and me[stack[-1]] <= ms[i]:
                        stack.pop()
                    stack.append(i)
                for p in reversed(stack):
                    if c.body[order[p]] <= w.start and me[p] >= w.body_start:
                        parent = int(me[p])
                        break
            nxt = None
            for xs in (ms, ws):
                k = int(np.searchsorted(xs, w.body_start, side="right"))
                if k < len(xs) and (nxt is None or int(xs[k]) < nxt):
                    nxt = int(xs[k])
            k = bisect_right(sleeps, w.body_start)
            sleep = sleeps[k] if k < len(sleeps) else None
            if w.lock.lock_class in SPIN_CLASSES and sleep is not None and (nxt is None or sleep < nxt):
                nxt = sleep
            out[id(w)] = (parent, nxt, sleep)
        _release(c)
        return out

    return brackets


def _nest_order(start: np.ndarray, end: np.ndarray, kind: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """``np.lexsort((seq, kind, -end, start))``: the intervals in nesting order (ties in every key in index
    order). A stable sort by start (the columns are a few runs sorted by it: near linear), then the keys
    after it among the rows whose start ties; lexsort's four indirect passes over every row took 7x as long."""
    order = np.argsort(start, kind="stable")
    s = start[order]
    tie = s[1:] == s[:-1]
    del s
    if tie.any():
        rows = np.zeros(len(order), bool)
        rows[1:] |= tie
        rows[:-1] |= tie
        rows = np.flatnonzero(rows)  # whole groups of equal starts, in place: start is the first key
        o = order[rows]
        order[rows] = o[np.lexsort((seq[o], kind[o], -end[o], start[o]))]
    return order


def _segment_starts(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """For intervals in nesting order: the index of each segment's first interval, ascending (the distinct
    values of _segment_first)."""
    if len(start) == 0:
        return np.empty(0, np.int64)
    cm = np.maximum.accumulate(end[:-1])
    out = np.flatnonzero(start[1:] >= cm)
    del cm
    out += 1
    return np.concatenate([np.zeros(1, np.int64), out])


def _segments(start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For intervals in nesting order: (_segment_first, whether each one is its segment's first), the
    indexes int32 when they fit."""
    n = len(start)
    is_root = np.ones(n, bool)
    if n > 1:
        cm = np.maximum.accumulate(end[:-1])
        np.greater_equal(start[1:], cm, out=is_root[1:])
        del cm
    first = np.arange(n, dtype=np.int32 if n < 2**31 else np.int64)
    first *= is_root
    np.maximum.accumulate(first, out=first)
    return first, is_root


def build_threads(trace: Trace, emit: bool = False, spool: Path | None = None
                  ) -> tuple[list[Thread], frozenset[str], Recorded, Counter[str], Counter[str]]:
    """(threads, derived classes, the Recorded facts, derived-hold sources, notes) as the reference gives them
    (``emit``: each thread's fast segments as Emitted pieces instead of op objects: emit.py; ``spool``: a
    private directory their rows are written to, mapped from there: neutral.NeutralWriter)."""
    rows = sum(trace.scan(n).select(pl.len()).collect().item() for n in ("lock_holds", "syscalls") if trace.has(n))
    with tempfile.TemporaryDirectory(prefix="mmreplay-cols-", dir=spool) as tmp:
        load = _Load(trace, Path(tmp) if rows >= SPOOL_ROWS else None)
        rec, cols = load.run()
        derived_classes = frozenset(w.lock.lock_class for t in rec.threads.values() for w in t.waits)
        _fit_measured_holds(rec, cols, load.locks)
        sources = derive_holds(rec, brackets_of=_brackets_of(cols))
        notes: Counter[str] = Counter(rec.notes)
        sleeps_known = trace.has("sched_switch")
        out = []
        for t in sorted(rec.threads.values(), key=lambda t: t.tid):
            out.append(_thread(t, cols.pop(t.tid, None), load, rec, notes, sleeps_known, emit, spool))
    return out, derived_classes, rec, sources, notes


def _fit_measured_holds(rec: Recorded, cols: dict[int, _Cols], locks: list[LockRef]) -> None:
    """holds.fit_measured_holds on the columns (derive_holds' own call finds no measured hold here).

    Only a thread with a hold acquired while an earlier one was still held can change; only its
    holds become ``Interval`` objects, and only if there is one do all holds become the holders' index.
    """
    nested = []
    for tid, c in cols.items():
        m = np.flatnonzero(c.kind == CRITICAL)
        if len(m) > 1:
            o = m[np.lexsort((m, c.seq[m], -c.end[m], c.start[m]))]
            if np.any(c.start[o[1:]] < np.maximum.accumulate(c.end[o[:-1]])):
                nested.append((tid, m))
        _release(c)
    if not nested:
        return
    index = _ColumnHolders(cols, locks, {(locks[lid].lock_class, locks[lid].addr)
                                          for tid, m in nested for lid in _codes(cols[tid], m)})
    for tid, m in nested:
        c = cols[tid]
        held = [Interval("critical", a, b, e, q, lock=locks[lid]) for a, b, e, q, lid in zip(
            c.start[m].tolist(), c.body[m].tolist(), c.end[m].tolist(), c.seq[m].tolist(), c.code[m].tolist(),
            strict=True)]
        fit_thread_holds(rec.threads[tid], held, index, rec.notes)
        c.extra = c.extras()  # the recorded waits and times, before start and end move
        c.start[m] = [iv.start for iv in held]
        c.end[m] = [iv.end for iv in held]
        if type(c) is _Spooled:
            c.keep("extra", "start", "end")
            c.release()


def _codes(c, m: np.ndarray) -> list[int]:
    out = np.unique(c.code[m]).tolist()
    _release(c)
    return out


def _thread(t: ThreadRecord, c: _Cols | None, load: _Load, rec: Recorded, notes: Counter[str],
            sleeps_known: bool, emit: bool = False, spool: Path | None = None) -> Thread:
    """The thread's ops; ``emit``: its fast segments as Emitted pieces (replay/sim/neutral.py), no op object
    (``spool``: their rows written to files there, mapped)."""
    mm = rec.mm_of_pid.get(t.pid, t.pid)
    derived = t.intervals  # derive_holds moved the waits here
    nm = 0 if c is None else len(c.start)
    if not nm and not derived and not t.instants:
        return Thread(t.tid, t.pid, [], mm=mm, comm=t.comm, prio=t.prio)
    nd = len(derived)

    def col(name: str, d: list | np.ndarray, dtype) -> np.ndarray:
        """The measured intervals' column ``name`` then the derived holds' ``d``; c lets its own go (a long
        thread's columns are most of the memory here: each goes once sorted)."""
        x = getattr(c, name) if c is not None else np.empty(0, dtype)
        if c is not None:
            setattr(c, name, None)
        return np.concatenate([x, np.asarray(d, dtype)]) if nd else x

    kind = col("kind", np.full(nd, CRITICAL, np.int8), np.int8)
    start = col("start", [w.start for w in derived], np.int64)
    end = col("end", [w.end for w in derived], np.int64)
    seq = col("seq", [w.seq for w in derived], np.int64)
    n = len(start)
    order = _nest_order(start, end, kind, seq)  # stable: ties keep their index order
    kind = kind[order]
    start = start[order]
    end = end[order]
    seq = seq[order]
    body = col("body", [w.body_start for w in derived], np.int64)[order]
    # lock / span kind / gather index, mode, wait or recorded time in nesting order (derived holds: 0; they
    # are read from ``derived``)
    code_s = col("code", np.zeros(nd, np.int32), np.int32)[order]
    mode_s = col("mode", np.zeros(nd, np.int8), np.int8)[order]
    # the recorded waits and times: kept by the fit, else made from start, body and end where read (_Extras)
    extra_s = col("extra", np.zeros(nd, np.int64), np.int64)[order] if c is not None and c.extra is not None \
        else None
    is_derived = order >= nm
    derived_at = dict(zip(np.flatnonzero(is_derived).tolist(), (order[is_derived] - nm).tolist(), strict=True))
    del order
    first, is_root = _segments(start, end)
    # a fast segment: its root and every other member measured, not gathers; the others inside the
    # root's body (after its clipped acquisition), one after the other (a temporary at a time: a long
    # thread's per-interval arrays are the memory here)
    cbody = np.minimum(body, end)
    # the body starts as recorded (read by the rare segments' Intervals): the clipped ones where they differ
    over = np.flatnonzero(body != cbody)
    body_over = dict(zip(over.tolist(), body[over].tolist(), strict=True))
    del body, over
    r = first
    bad = is_derived | (kind == GATHER)
    del is_derived
    child_bad = start < cbody[r]
    child_bad |= end > end[r]
    if n:  # an interval not right after its root starts before the end of the one before it
        child_bad[0] |= start[0] < 0
        child_bad[1:] |= ~is_root[:-1] & (start[1:] < end[:-1])
    child_bad &= ~is_root
    bad |= child_bad
    del child_bad
    seg_id = np.cumsum(is_root, dtype=np.int32 if n < 2**31 else np.int64)
    seg_id -= 1
    seg_bad = np.bincount(seg_id[bad], minlength=int(seg_id[-1]) + 1) > 0 if n else np.empty(0, bool)
    del bad

    gaps = _Gaps(t.off_cpu, notes)
    off_starts = [o.start for o in t.off_cpu]
    off_ends = [o.end for o in t.off_cpu]
    gops, gslept = gaps.ops, gaps.slept

    def gap(a: int, b: int) -> list[Op]:
        if b <= a:
            return []
        j = bisect_left(off_starts, b) - 1
        if j >= 0 and off_ends[j] > a:
            return gops(a, b)
        return [Think(b - a, a)]

    # the columns as Python ints: whole lists when every segment becomes op objects; read one at a time when
    # only the rare ones do (emit: lists of a million ints each are most of the memory otherwise)
    ints = _Ints if emit else _list
    kinds = ints(kind)
    starts, ends, cbodies = ints(start), ints(end), ints(cbody)
    bodies = _Bodies(cbodies, body_over) if body_over else cbodies
    codes, modes = ints(code_s), ints(mode_s)
    extras = ints(extra_s) if extra_s is not None else _Extras(kinds, starts, bodies, ends)
    locks, span_kinds = load.locks, load.span_kinds

    def leaf(i: int) -> tuple[tuple, Op]:
        """The op of measured interval i (order position) with nothing inside, and its descriptor."""
        k, s, b, e = kinds[i], starts[i], cbodies[i], ends[i]
        j = i
        if k == SPAN:
            return ("span", "", None, s, b, e), Span(span_kinds[codes[j]], tuple(gap(b, e)), s, e - s)
        return critical(i, gap(b, e))

    def critical(i: int, body_ops: list[Op]) -> tuple[tuple, Op]:
        s, b, e = starts[i], cbodies[i], ends[i]
        j = i
        lock = locks[codes[j]]
        mode = "write" if modes[j] else "read"
        slept = None
        if sleeps_known and b > s:
            k = bisect_left(off_starts, b) - 1
            slept = gslept(s, b) if k >= 0 and off_ends[k] > s else False
        hold = 0
        if len(body_ops) == 1 and type(body_ops[0]) is Think:
            hold = body_ops.pop().ns
        return ("critical", mode, lock, s, b, e), Critical(lock, mode, hold, tuple(body_ops), s, b - s, slept, False)

    def compose_run(cur: int, children: list[tuple[tuple, Op]], ops: list[Op]) -> int:
        """reconstruct._body over descriptors, without the gap after the last child: appends to ``ops``,
        returns where the last child ends (``cur`` if none does later)."""
        last = None
        for d, op in children:
            ds = d[3]
            if last is not None and cur == ds and last[0] == d[0] == "critical" and last[1] == "write" \
                    and d[1] == "read" and last[2] == d[2] and ds == last[5] and d[4] == ds:
                w = ops[-1]
                ops[-1] = Critical(w.lock, w.mode, w.hold_ns, w.body, w.at_ns, w.recorded_wait_ns,
                                   w.recorded_wait_slept, w.derived, op)
                last = None
                if d[5] > cur:
                    cur = d[5]
                continue
            if ds > cur:
                j = bisect_left(off_starts, ds) - 1
                if j >= 0 and off_ends[j] > cur:
                    ops += gops(cur, ds)
                else:
                    ops.append(Think(ds - cur, cur))
            ops.append(op)
            last = d
            if d[5] > cur:
                cur = d[5]
        return cur

    def compose(a: int, b: int, children: list[tuple[tuple, Op]]) -> list[Op]:
        """reconstruct._body over descriptors."""
        ops: list[Op] = []
        ops += gap(compose_run(a, children, ops), b)
        return ops

    lo_start: list[int] = []
    hi_end: list[int] = []
    firsts_a = np.flatnonzero(is_root)
    seg_first = ints(np.append(firsts_a, n))
    bad_segs = ints(seg_bad)
    # segments no off-CPU piece overlaps: every gap inside is one Think, no wait slept
    if t.off_cpu and n:
        os_, oe_ = np.asarray(off_starts, np.int64), np.asarray(off_ends, np.int64)
        j = np.searchsorted(os_, end[firsts_a], side="left") - 1
        clean = ~((j >= 0) & (oe_[np.maximum(j, 0)] > start[firsts_a]))
    else:
        clean = np.ones(len(firsts_a), bool)
    clean_segs = ints(clean)
    def segment(si: int) -> list[tuple[tuple, Op]]:
        """The roots of segment ``si`` as op objects (descriptor, op)."""
        bad_seg = bad_segs[si]
        roots: list[tuple[tuple, Op]] = []
        a, z = seg_first[si], seg_first[si + 1]
        if not bad_seg and clean_segs[si]:
            s, b, e = starts[a], cbodies[a], ends[a]
            ja = a
            if z == a + 1:  # one measured interval alone: a system call, a fault, a lock section
                if kinds[a] == SPAN:
                    roots.append((("span", "", None, s, b, e),
                                  Span(span_kinds[codes[ja]], (Think(e - b, b),) if e > b else (), s, e - s)))
                else:
                    lock = locks[codes[ja]]
                    mode = "write" if modes[ja] else "read"
                    roots.append((("critical", mode, lock, s, b, e),
                                  Critical(lock, mode, e - b if e > b else 0, (), s, b - s,
                                           (False if b > s else None) if sleeps_known else None, False)))
                return roots
            # a root with leaves one after the other in its body (reconstruct._body, inlined)
            ops = []
            cur = b
            last_write = None  # (lock, end) of the previous leaf when it is a write section
            for i in range(a + 1, z):
                cs, cb, ce = starts[i], cbodies[i], ends[i]
                cj = i
                if kinds[i] == SPAN:
                    op = Span(span_kinds[codes[cj]], (Think(ce - cb, cb),) if ce > cb else (), cs, ce - cs)
                    if cs > cur:
                        ops.append(Think(cs - cur, cur))
                    ops.append(op)
                    last_write = None
                else:
                    lock = locks[codes[cj]]
                    write = modes[cj]
                    op = Critical(lock, "write" if write else "read", ce - cb if ce > cb else 0, (), cs, cb - cs,
                                  (False if cb > cs else None) if sleeps_known else None, False)
                    if last_write is not None and not write and cur == cs and cb == cs and last_write[1] == cs \
                            and last_write[0] == lock:
                        w = ops[-1]
                        ops[-1] = Critical(w.lock, w.mode, w.hold_ns, w.body, w.at_ns, w.recorded_wait_ns,
                                           w.recorded_wait_slept, w.derived, op)
                        last_write = None
                        if ce > cur:
                            cur = ce
                        continue
                    if cs > cur:
                        ops.append(Think(cs - cur, cur))
                    ops.append(op)
                    last_write = (lock, ce) if write else None
                if ce > cur:
                    cur = ce
            if e > cur:
                ops.append(Think(e - cur, cur))
            if kinds[a] == SPAN:
                roots.append((("span", "", None, s, b, e), Span(span_kinds[codes[ja]], tuple(ops), s, e - s)))
            else:
                roots.append(critical(a, ops))
            return roots
        if not bad_seg:
            if z == a + 1:
                roots.append(leaf(a))
                return roots
            children = [leaf(i) for i in range(a + 1, z)]
            if kinds[a] == SPAN:
                ops = compose(cbodies[a], ends[a], children)
                s, e = starts[a], ends[a]
                roots.append((("span", "", None, s, cbodies[a], e),
                              Span(span_kinds[codes[a]], tuple(ops), s, e - s)))
            else:
                roots.append(critical(a, compose(cbodies[a], ends[a], children)))
            return roots
        ivs = [derived[derived_at[i]] if i in derived_at else _interval(i, i, kinds, starts, bodies, ends, seq, codes,
                                                                          modes, extras, load)
               for i in range(a, z)]
        for iv, op in build(nest(ivs, notes), gaps, notes, sleeps_known):
            roots.append(((iv.kind, iv.mode, iv.lock, iv.start, iv.body_start, iv.end), op))
        # nest moves and clips: the thread's extent counts the intervals as nest left them
        lo_start.append(min(iv.start for iv in ivs))
        hi_end.append(max(iv.end for iv in ivs))
        return roots

    nseg = len(bad_segs)
    emitting = None
    if not emit:
        roots = [r for si in range(nseg) for r in segment(si)]
    else:
        fast = emit_rows.fast_segments(seg_bad | ~clean, kind[firsts_a] == CRITICAL, mode_s[firsts_a] == 1)
        roots_of = {si: segment(si) for si in np.flatnonzero(~fast).tolist()}

        def emitting(t0: int, t1: int) -> list:
            """The thread's ops: Emitted pieces for the fast segments, op objects for the others."""
            return emit_rows.thread_ops(
                t0, t1, fast, roots_of, compose_run, gops, off_starts, off_ends, locks, span_kinds, sleeps_known,
                is_root=is_root, first=first, seg_id=seg_id, is_span=kind == SPAN, is_crit=kind == CRITICAL,
                mode=mode_s, code=code_s, start=start, cbody=cbody, end=end, spool=spool, name=str(t.tid))
    good = np.repeat(~seg_bad, np.diff(np.append(firsts_a, n))) if n else np.empty(0, bool)
    firsts = lo_start + list(t.instants)
    lasts = hi_end + list(t.instants)
    if good.any():
        i64 = np.iinfo(np.int64)
        firsts.append(int(np.min(start, where=good, initial=i64.max)))  # no copy of the selection
        lasts.append(int(np.max(end, where=good, initial=i64.min)))
    if t.first_sched is not None:
        firsts.append(t.first_sched)
    if t.last_out is not None:
        lasts.append(t.last_out)
    t0, t1 = min(firsts), max(lasts)
    if emitting is None:
        return Thread(t.tid, t.pid, compose(t0, t1, roots), mm=mm, comm=t.comm, start_ns=t0, prio=t.prio)
    return Thread(t.tid, t.pid, emitting(t0, t1), mm=mm, comm=t.comm, start_ns=t0, prio=t.prio)


def _list(a: np.ndarray) -> list:
    return a.tolist()


class _ColumnHolders(MeasuredHolders):
    """MeasuredHolders of the locks ``keys`` (the ones fit_thread_holds asks about: the nested threads'),
    from the columns: per lock, every thread's holds sorted as the tuples (acquired, released, tid) sort,
    kept as arrays and read an item at a time (a tuple per hold of every thread was 0.2 KiB a hold)."""

    def __init__(self, cols: dict[int, _Cols], locks: list[LockRef], keys: set[tuple[str, int]]):
        self.index = {}
        key_ids = {k: i for i, k in enumerate(sorted(keys))}
        key_of = np.asarray([key_ids.get((lk.lock_class, lk.addr), -1) for lk in locks] or [-1], np.int64)
        ks, bs, es, ts = [], [], [], []
        for tid, c in cols.items():  # one pass over the threads (a fork-heavy trace has thousands, each a key)
            m = np.flatnonzero(c.kind == CRITICAL)
            k = key_of[c.code[m]]
            m, k = m[k >= 0], k[k >= 0]
            ks.append(k)
            bs.append(c.body[m].astype(np.int64))  # copies: fit_thread_holds moves the columns later
            es.append(c.end[m].astype(np.int64))
            ts.append(np.full(len(m), tid, np.int64))
            _release(c)
        k, b, e, t = (np.concatenate(x) if x else np.empty(0, np.int64) for x in (ks, bs, es, ts))
        o = np.lexsort((t, e, b, k))
        k, b, e, t = k[o], b[o], e[o], t[o]
        cut = np.searchsorted(k, np.arange(len(key_ids) + 1), side="left")
        for key, i in key_ids.items():
            lo, hi = int(cut[i]), int(cut[i + 1])
            be, ee, te = b[lo:hi], e[lo:hi], t[lo:hi]
            reach = np.maximum.accumulate(np.maximum(ee, -1)) if hi > lo else ee
            self.index[key] = (_Ints(be), _Triples(be, ee, te), _Ints(reach))


class _Triples:
    """Three arrays' items as (int, int, int), converted when read."""

    __slots__ = ("a", "b", "c")

    def __init__(self, a: np.ndarray, b: np.ndarray, c: np.ndarray):
        self.a, self.b, self.c = a, b, c

    def __getitem__(self, i: int) -> tuple[int, int, int]:
        return self.a[i].item(), self.b[i].item(), self.c[i].item()

    def __len__(self) -> int:
        return len(self.a)


class _Ints:
    """An array's items as Python ints (bools for a bool array), converted when read."""

    __slots__ = ("a",)

    def __init__(self, a: np.ndarray):
        self.a = a

    def __getitem__(self, i: int) -> int:
        return self.a[i].item()

    def __len__(self) -> int:
        return len(self.a)


class _Bodies:
    """The recorded body starts in nesting order: the clipped ones but where ``over`` says otherwise."""

    __slots__ = ("cbodies", "over")

    def __init__(self, cbodies, over: dict[int, int]):
        self.cbodies, self.over = cbodies, over

    def __getitem__(self, i: int) -> int:
        b = self.over.get(i)
        return self.cbodies[i] if b is None else b


class _Extras:
    """_Cols.extra of the intervals in nesting order, made from start, body and end when read."""

    __slots__ = ("kinds", "starts", "bodies", "ends")

    def __init__(self, kinds, starts, bodies, ends):
        self.kinds, self.starts, self.bodies, self.ends = kinds, starts, bodies, ends

    def __getitem__(self, i: int) -> int:
        return (self.bodies[i] if self.kinds[i] == CRITICAL else self.ends[i]) - self.starts[i]


def _interval(i: int, j: int, kinds, starts, bodies, ends, seqs, codes, modes, extras, load: _Load) -> Interval:
    """The reference's Interval of measured interval j (at order position i), fresh (nest mutates it)."""
    k, s, b, e = kinds[i], starts[i], bodies[i], ends[i]
    sq = int(seqs[i])
    if k == CRITICAL:
        return Interval("critical", s, b, e, sq, lock=load.locks[codes[j]], mode="write" if modes[j] else "read",
                        wait=extras[j])
    if k == SPAN:
        return Interval("span", s, b, e, sq, span_kind=load.span_kinds[codes[j]], recorded_ns=extras[j])
    pages, flushes, fullmm, mm, rns = load.gathers[codes[j]]
    return Interval("gather", s, b, e, sq, pages=pages, flushes=flushes, fullmm=fullmm, mm=mm, recorded_ns=rns)
