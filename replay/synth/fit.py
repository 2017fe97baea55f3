"""Fit the synthesizer's distributions from a recorded trace (``mmreplay synth --fit TRACE``).

What a trace can tell, and what this fits from it:

Each key becomes a lognormal (maximum likelihood) or, with ``kind="empirical"``,
the table of the samples' quantiles (for multi-modal holds).

* ``hold:<class>:<op>``: the *own* time of successful, complete
  lock holds (hold minus the holds, gathers and free bursts nested directly in
  it, by interval containment within the tid). The operation is the innermost
  syscall containing the hold (mmap, munmap, madvise, brk, exit_group -> exit);
  outside any syscall, a mmap_lock read hold is a fault's, a mmap_lock write
  hold is fork's or mm_take_all_locks', and a leaf i_mmap_rwsem / anon_vma
  hold is fork's (dup_mmap). Page-table-lock holds outside syscalls and
  gathers are faults'. Holds inside mprotect/mremap fit nothing.
* ``take_all:step`` / ``take_all:drop`` / ``take_all:register`` and
  ``hold:mmap_lock:take_all``, from tier 2 (a ``take_all_locks`` table and the
  i_mmap_rwsem / anon_vma holds inside each call): per nested lock, the gap
  between consecutive acquisitions of the chain (from the call's start); per
  nested lock, the gap between consecutive releases (mm_drop_all_locks); the
  gap from the last acquisition to the first release (the notifier
  registration); and the enclosing mmap_lock write hold minus the chain's span.
  The chain's links release in VMA order, not innermost first, so the generic
  nesting below cannot take them apart; those write holds fit nothing else.
* the same keys from tier 1 (no nested holds recorded), for recordings of the
  project's take-all-locks program (workloads/take_all_locks.c, whose ``-n``
  in the manifest's command gives the chain: n file VMAs and n anon VMAs): the
  locker's ``mmap_lock`` write hold (the holds outside recorded syscalls of the
  tid that has most of them) is the chain and its fixed cost. Its 10th
  percentile per trace (``TAKE_ALL_QUANTILE``: on this project's shared 2-vCPU
  host, at load average 10-14, the median of the same chain doubled while the
  holds had no context switch inside: other jobs slow the locker down without
  preempting it, and the 10th percentile stayed linear in the chain length and
  matched the median of a quiet recording) against the chain length gives, by
  least squares over the traces
  (``--fit`` given several times, at different ``-n``), the cost per nested
  lock (slope) and the fixed part (intercept); with one chain length only the
  slope is fitted, over the default fixed part. Tier 1 cannot split a lock's
  cost between taking it and dropping it: the slope is split as the defaults
  are (``take_all:step`` : ``take_all:drop`` = 2 : 1), the intercept equally
  between ``hold:mmap_lock:take_all`` and ``take_all:register``.
* ``syscall:<name>``: the syscalls' own time (minus nested holds).
* ``think:user``: the gaps between consecutive syscalls of a tid
  that hold no page fault and no context switch of that tid.

A key needs at least ``MIN_SAMPLES`` samples; otherwise it keeps its default.
Without a ``gathers`` table (a tier-1 recording), the mmap_lock holds of
munmap (the read part, after the downgrade), madvise and exit contain their gather's zap and free time, which the
synthetic templates add on their own (``zap:page``, ``free:page``): those
keys keep their defaults rather than count the gather twice.
Not fittable from tier-1/tier-2 traces, so always kept: fault service time
(a fault is recorded at entry only), per-page zap and free costs, user time
between page touches, sleeps. Lock waits are reported, never used: a wait
is not a hold, and this synthesizer generates uncontended timelines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from replay.synth.model import Empirical, LogNormal, Model
from replay.trace.reader import Trace

MIN_SAMPLES = 20
_OP_OF_SYSCALL = {"mmap": "mmap", "munmap": "munmap", "madvise": "madvise", "brk": "brk", "exit_group": "exit",
                  "mprotect": "mprotect"}
_KIND_SYSCALL, _KIND_HOLD, _KIND_OTHER = 0, 1, 2


@dataclass
class FitReport:
    fitted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [*(f"fitted {x}" for x in self.fitted), *(f"note: {x}" for x in self.notes),
                f"kept default ({len(self.kept)}): {', '.join(self.kept)}" if self.kept else "kept default: none"]


def _intervals(trace: Trace) -> pl.DataFrame:
    """Every interval of the trace that can nest: syscalls, lock holds, gathers, page-free bursts."""
    parts = []
    if trace.has("syscalls"):
        parts.append(trace.scan("syscalls").filter(~pl.col("incomplete")).select(
            "tid", "ts", "dur", pl.lit(_KIND_SYSCALL).alias("kind"), pl.col("name").cast(pl.String).alias("a"),
            pl.lit("").alias("b"), pl.lit(0, pl.Int32).alias("depth")))
    if trace.has("lock_holds"):
        parts.append(trace.scan("lock_holds").filter(pl.col("success") & ~pl.col("incomplete")).select(
            "tid", "ts", "dur", pl.lit(_KIND_HOLD).alias("kind"), pl.col("lock_class").cast(pl.String).alias("a"),
            pl.col("mode").cast(pl.String).alias("b"), pl.col("depth")))
    for name in ("gathers", "page_free_batches"):
        if trace.has(name):
            parts.append(trace.scan(name).filter(~pl.col("incomplete")).select(
                "tid", "ts", "dur", pl.lit(_KIND_OTHER).alias("kind"), pl.lit(name).alias("a"), pl.lit("").alias("b"),
                pl.lit(0, pl.Int32).alias("depth")))
    if not parts:
        return pl.DataFrame()
    outer_first = [False, False, True]  # at equal starts the longer interval encloses the shorter
    return pl.concat(parts, how="vertical_relaxed").sort(["tid", "ts", "dur"], descending=outer_first).collect()


def _nesting(df: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Per interval: own time, innermost enclosing syscall row (-1), inside a gather, has children;
    and how many intervals partially overlap their predecessor (ignored as children)."""
    tid = df["tid"].to_numpy()
    ts = df["ts"].to_numpy()
    dur = df["dur"].to_numpy()
    end = ts + dur
    kind = df["kind"].to_numpy()
    is_gather = (df["a"] == "gathers").to_numpy()
    n = len(df)
    child_sum = np.zeros(n, np.int64)
    syscall_of = np.full(n, -1, np.int64)
    in_gather = np.zeros(n, bool)
    has_child = np.zeros(n, bool)
    partial = 0
    stack: list[int] = []
    cur_tid = None
    for i in range(n):
        if tid[i] != cur_tid:
            stack.clear()
            cur_tid = tid[i]
        while stack and end[stack[-1]] <= ts[i]:
            stack.pop()
        if stack:
            top = stack[-1]
            if end[i] <= end[top]:
                child_sum[top] += dur[i]
                has_child[top] = True
                syscall_of[i] = top if kind[top] == _KIND_SYSCALL else syscall_of[top]
                in_gather[i] = is_gather[top] or in_gather[top]
            else:
                partial += 1
                stack.clear()
        stack.append(i)
    return dur - child_sum, syscall_of, in_gather, has_child, partial


def _gaps(trace: Trace) -> np.ndarray:
    """Gaps between consecutive syscalls of a tid with no fault and no switch-out of that tid inside."""
    if not trace.has("syscalls"):
        return np.zeros(0)
    sc = (trace.scan("syscalls").select("tid", "ts", "dur").sort(["tid", "ts"])
          .with_columns((pl.col("ts") + pl.col("dur")).shift(1).over("tid").alias("gap_start"))
          .filter(pl.col("gap_start").is_not_null() & (pl.col("ts") >= pl.col("gap_start")))
          .select("tid", pl.col("gap_start"), pl.col("ts").alias("gap_end")).sort("gap_end").collect())
    if sc.is_empty():
        return np.zeros(0)
    blockers = []
    if trace.has("page_faults"):
        blockers.append(trace.scan("page_faults").select("tid", "ts"))
    if trace.has("sched_switch"):
        blockers.append(trace.scan("sched_switch").select(pl.col("prev_tid").alias("tid"), "ts"))
    if blockers:
        b = pl.concat(blockers).with_columns(pl.col("tid").cast(pl.Int32)).sort("ts").collect()
        # both sides are sorted by time; polars cannot verify that per tid group, hence no check
        sc = sc.with_columns(pl.col("tid").cast(pl.Int32)).join_asof(
            b.rename({"ts": "blocker"}), left_on="gap_end", right_on="blocker", by="tid", strategy="backward",
            check_sortedness=False)
        sc = sc.filter(pl.col("blocker").is_null() | (pl.col("blocker") < pl.col("gap_start")))
    return (sc["gap_end"] - sc["gap_start"]).to_numpy()


@dataclass
class TakeAllChains:
    """Samples of the mm_take_all_locks chain costs (tier 2), and which write holds enclose a chain."""

    step: np.ndarray
    drop: np.ndarray
    register: np.ndarray
    own: np.ndarray  # the enclosing mmap_lock write hold minus the chain's span
    write_holds: set[tuple[int, int]]  # (tid, ts) of those write holds
    calls: int
    links: np.ndarray  # nested locks per call


def take_all_chains(trace: Trace) -> TakeAllChains | None:
    """The chain of every complete, successful mm_take_all_locks call with its nested holds, or None."""
    if not (trace.has("take_all_locks") and trace.has("lock_holds")):
        return None
    calls = (trace.scan("take_all_locks").filter(~pl.col("incomplete") & (pl.col("ret") == 0))
             .select("tid", "ts", "dur").collect())
    if calls.is_empty():
        return None
    holds = (trace.scan("lock_holds").filter(pl.col("success") & ~pl.col("incomplete"))
             .select("tid", "ts", "dur", pl.col("lock_class").cast(pl.String), pl.col("mode").cast(pl.String))
             .collect())
    nested = holds.filter(pl.col("lock_class").is_in(["i_mmap_rwsem", "anon_vma"]))
    writes = holds.filter((pl.col("lock_class") == "mmap_lock") & (pl.col("mode") == "write"))
    step, drop, register, own, links = [], [], [], [], []
    enclosing: set[tuple[int, int]] = set()
    for tid, ts, dur in calls.iter_rows():
        inside = nested.filter((pl.col("tid") == tid) & (pl.col("ts") >= ts) & (pl.col("ts") <= ts + dur))
        if len(inside) < 2:
            continue
        acq = np.sort(inside["ts"].to_numpy().astype(np.int64))
        rel = np.sort((inside["ts"] + inside["dur"]).to_numpy().astype(np.int64))
        w = writes.filter((pl.col("tid") == tid) & (pl.col("ts") <= ts) & (pl.col("ts") + pl.col("dur") >= rel[-1]))
        if len(w) != 1:
            continue
        step.append(np.diff(np.concatenate([[ts], acq])))
        drop.append(np.diff(rel))
        register.append(np.array([rel[0] - acq[-1]]))
        own.append(np.array([int(w["dur"][0]) - (rel[-1] - ts)]))
        links.append(len(inside))
        enclosing.add((int(tid), int(w["ts"][0])))
    if not links:
        return None
    cat = np.concatenate
    return TakeAllChains(cat(step), cat(drop), cat(register), cat(own), enclosing, len(links), np.array(links))


@dataclass
class TakeAllRegression:
    """The mm_take_all_locks cost per nested lock from tier-1 recordings at one or more chain lengths."""

    links: np.ndarray  # nested locks per trace (2 x the program's -n)
    medians: np.ndarray  # the locker's mmap_lock write hold per trace at TAKE_ALL_QUANTILE, ns
    holds: np.ndarray  # write holds per trace
    per_lock_ns: float  # slope
    fixed_ns: float | None  # intercept; None: one chain length, the default fixed part kept

    def describe(self) -> str:
        q = round(TAKE_ALL_QUANTILE * 100)
        pts = ", ".join(f"{int(k)} locks: p{q} {m / 1e3:.1f} µs ({int(n)} holds)"
                        for k, m, n in zip(self.links, self.medians, self.holds, strict=True))
        fixed = f", fixed {self.fixed_ns / 1e3:.1f} µs" if self.fixed_ns is not None else " (default fixed part)"
        return (f"mm_take_all_locks from tier-1 write holds ({pts}): {self.per_lock_ns:.1f} ns per nested lock"
                f"{fixed}")


TAKE_ALL_PROGRAM = "take_all_locks"
TAKE_ALL_DEFAULT_COUNT = 256  # workloads/take_all_locks.c without -n
#: which quantile of the locker's write holds stands for the chain's cost (see the module docstring)
TAKE_ALL_QUANTILE = 0.10


def take_all_chain_length(trace: Trace) -> int | None:
    """Nested locks of the recorded program's mm_take_all_locks, from the manifest's command: 2 x ``-n`` of
    workloads/take_all_locks.c (n files, n anon VMAs); None for any other command."""
    cmd = list(trace.manifest.command or [])
    at = next((i for i, a in enumerate(cmd) if a.rsplit("/", 1)[-1] == TAKE_ALL_PROGRAM), None)
    if at is None:
        return None
    n = TAKE_ALL_DEFAULT_COUNT
    args = cmd[at + 1:]
    for i, a in enumerate(args):
        if a == "-n" and i + 1 < len(args):
            try:
                n = int(args[i + 1])
            except ValueError:
                return None
    return 2 * n if n > 0 else None


def take_all_tier1(traces: list[Trace]) -> tuple[list[tuple[int, float, int]], list[str]]:
    """Per usable trace (chain length, the locker's write hold at TAKE_ALL_QUANTILE, holds); and why others
    were not used."""
    points, skipped = [], []
    for trace in traces:
        links = take_all_chain_length(trace)
        if links is None or not trace.has("lock_holds"):
            continue
        writes = (trace.scan("lock_holds").filter(
            pl.col("success") & ~pl.col("incomplete") & (pl.col("lock_class").cast(pl.String) == "mmap_lock")
            & (pl.col("mode").cast(pl.String) == "write")).select("tid", "ts", "dur").sort("tid", "ts").collect())
        if trace.has("syscalls"):
            sc = (trace.scan("syscalls").select("tid", pl.col("ts").alias("s_ts"), (pl.col("ts") + pl.col("dur"))
                                                .alias("s_end")).sort("s_ts").collect())
            inside = writes.sort("ts").join_asof(sc.sort("s_ts"), left_on="ts", right_on="s_ts", by="tid",
                                                 strategy="backward", check_sortedness=False)
            writes = inside.filter(pl.col("s_end").is_null() | (pl.col("s_end") < pl.col("ts"))).select(
                "tid", "ts", "dur")
        if writes.is_empty():
            skipped.append(f"{trace.path}: no mmap_lock write holds outside system calls")
            continue
        tid = writes.group_by("tid").agg(pl.len()).sort(["len", "tid"], descending=[True, False])["tid"][0]
        x = writes.filter(pl.col("tid") == tid)["dur"].to_numpy()
        if x.size < MIN_SAMPLES:
            skipped.append(f"{trace.path}: only {x.size} take-all write holds")
            continue
        points.append((links, float(np.quantile(x, TAKE_ALL_QUANTILE)), int(x.size)))
    return points, skipped


def fit_take_all_tier1(points: list[tuple[int, float, int]], model: Model) -> TakeAllRegression | None:
    """Least squares of the hold on chain length (slope, intercept); one length: slope over the default
    fixed part (own hold + registration). None when the slope comes out non-positive."""
    if not points:
        return None
    links = np.array([p[0] for p in points], dtype=np.float64)
    med = np.array([p[1] for p in points], dtype=np.float64)
    fixed: float | None
    if np.unique(links).size >= 2:
        slope, fixed = (float(v) for v in np.polyfit(links, med, 1))
    else:
        default_fixed = model["hold:mmap_lock:take_all"].mean + model["take_all:register"].mean
        slope, fixed = float(np.mean((med - default_fixed) / links)), None
    if not slope > 0:
        return None
    return TakeAllRegression(links.astype(np.int64), med, np.array([p[2] for p in points]), slope, fixed)


FIT_KINDS = ("lognormal", "empirical")


def fit_model(trace: Trace, base: Model | None = None, kind: str = "lognormal",
              more: tuple[Trace, ...] = ()) -> tuple[Model, FitReport]:
    """A copy of ``base`` (default: the defaults) with every key the trace supports fitted,
    as lognormals or as empirical quantile tables (``kind``). ``more``: further recordings that
    only the tier-1 mm_take_all_locks regression uses (other chain lengths)."""
    if kind not in FIT_KINDS:
        raise ValueError(f"fit kind must be one of {FIT_KINDS}, not {kind!r}")
    model = Model(dict((base or Model()).dists), dict((base or Model()).fitted))
    report = FitReport()
    samples: dict[str, list[np.ndarray]] = {}
    where: dict[str, str] = {}

    def add(key: str, values: np.ndarray, source: str) -> None:
        if key in excluded:
            return
        if key in model.dists and values.size:
            samples.setdefault(key, []).append(values)
            where.setdefault(key, source)

    gather_keys = {"hold:mmap_lock:munmap_zap", "hold:mmap_lock:madvise", "hold:mmap_lock:exit"}
    if not trace.has("gathers"):
        report.notes.append("no gathers table (tier 2): " + ", ".join(sorted(gather_keys))
                            + " would include the gather's zap and free time; kept default")
    # mm_take_all_locks and dup_mmap nest i_mmap_rwsem / anon_vma holds that only tier 2 records
    nesting_keys = {"hold:mmap_lock:take_all", "hold:mmap_lock:fork"}
    nested_recorded = trace.has("lock_holds") and trace.scan("lock_holds").filter(
        pl.col("lock_class").is_in(["i_mmap_rwsem", "anon_vma"])).select(pl.len()).collect().item() > 0
    if not nested_recorded:
        report.notes.append("no i_mmap_rwsem/anon_vma holds (tier 2): " + ", ".join(sorted(nesting_keys))
                            + " would include the nested holds; kept default")
    excluded = (gather_keys if not trace.has("gathers") else set()) | (nesting_keys if not nested_recorded else set())

    tier1_done: set[str] = set()
    chains = take_all_chains(trace)
    if chains is not None:
        add("take_all:step", chains.step, "gaps between the acquisitions of mm_take_all_locks chains (tier 2)")
        add("take_all:drop", chains.drop, "gaps between the releases of mm_drop_all_locks (tier 2)")
        add("take_all:register", chains.register, "last chain acquisition to first release (tier 2)")
        add("hold:mmap_lock:take_all", chains.own, "take-all mmap_lock write holds minus the chain (tier 2)")
        report.notes.append(f"{chains.calls} mm_take_all_locks chains of {int(np.median(chains.links))} nested "
                            "locks (median) fitted the take_all:* keys")
        excluded = excluded | {"hold:mmap_lock:take_all"}  # the generic pass below must not add to it
    elif not nested_recorded:
        points, skipped = take_all_tier1([trace, *more])
        report.notes.extend(skipped)
        reg = fit_take_all_tier1(points, model)
        if reg is not None:
            tier1_done = _apply_take_all(model, reg, trace, report)
            report.notes = [n.replace("hold:mmap_lock:fork, hold:mmap_lock:take_all", "hold:mmap_lock:fork")
                            for n in report.notes]
            excluded = excluded | {"take_all:step", "take_all:drop", "take_all:register", "hold:mmap_lock:take_all"}
        elif points:
            report.notes.append("tier-1 take-all write holds gave no positive cost per nested lock: kept defaults")

    df = _intervals(trace)
    if not df.is_empty():
        own, syscall_of, in_gather, has_child, partial = _nesting(df)
        if partial:
            report.notes.append(f"{partial} intervals partly overlap the one before them in their tid; "
                                "not treated as nested")
        row_kind = df["kind"].to_numpy()
        a = df["a"].to_numpy()
        b = df["b"].to_numpy()
        names = np.where(syscall_of >= 0, a[np.maximum(syscall_of, 0)], "")
        sys_rows = row_kind == _KIND_SYSCALL
        for name in np.unique(a[sys_rows]):
            add(f"syscall:{name}", own[sys_rows & (a == name)], f"{name} syscalls' own time")
        holds = row_kind == _KIND_HOLD
        for cls in np.unique(a[holds]):
            of_cls = holds & (a == cls)
            for sysname, op in _OP_OF_SYSCALL.items():
                sel = of_cls & (names == sysname)
                if cls == "page_table_lock":
                    continue  # inside syscalls these are zaps: per-page, not per-hold
                if cls == "mmap_lock" and sysname == "munmap":  # detach under write, zap after the downgrade
                    add("hold:mmap_lock:munmap", own[sel & (b == "write")], "mmap_lock write holds inside munmap")
                    add("hold:mmap_lock:munmap_zap", own[sel & (b == "read")], "mmap_lock read holds inside munmap")
                    continue
                add(f"hold:{cls}:{op}", own[sel], f"{cls} holds inside {sysname}")
            outside = of_cls & (syscall_of < 0)
            if cls == "mmap_lock":
                if chains is not None:  # the take-all write holds: fitted above, and not fork's
                    key = list(zip(df["tid"].to_list(), df["ts"].to_list(), strict=True))
                    outside = outside & ~np.array([k in chains.write_holds for k in key])
                add("hold:mmap_lock:fault", own[outside & (b == "read")], "mmap_lock read holds outside syscalls")
                for op in ("fork", "take_all"):
                    add(f"hold:mmap_lock:{op}", own[outside & (b == "write")], "mmap_lock write holds outside syscalls")
            elif cls == "page_table_lock":
                add("hold:page_table_lock:fault", own[outside & ~in_gather], "page_table_lock holds outside gathers")
            elif cls in ("i_mmap_rwsem", "anon_vma"):
                add(f"hold:{cls}:fork", own[outside & ~has_child], f"leaf {cls} holds outside syscalls")
    add("think:user", _gaps(trace), "gaps between a tid's syscalls without faults or switches")

    if trace.has("page_faults") and trace.rows("page_faults") > 1:
        gaps = (trace.scan("page_faults").select("tid", "ts").sort("tid", "ts")
                .with_columns(pl.col("ts").diff().over("tid").alias("gap"))
                .filter(pl.col("gap").is_not_null() & (pl.col("gap") < 100_000))
                .select(pl.len().alias("n"), pl.col("gap").median().alias("median")).collect())
        if gaps["n"][0]:
            report.notes.append(f"{gaps['n'][0]} fault-to-fault gaps under 100 µs, median {gaps['median'][0]:.0f} ns: "
                                "fault service plus user time, not separable; fault:* and think:touch kept")
    if trace.has("lock_waits"):
        waits = trace.scan("lock_waits").group_by("lock_class").agg(
            pl.len().alias("n"), pl.col("dur").median().alias("median")).sort("lock_class").collect()
        for row in waits.iter_rows(named=True):
            report.notes.append(f"{row['n']} {row['lock_class']} waits (median {row['median']:.0f} ns) "
                                "are waits, not holds: not fitted")
    for key in sorted(model.dists):
        if key in tier1_done:
            continue
        values = np.concatenate(samples[key]) if key in samples else np.zeros(0)
        values = values[values > 0]
        if values.size >= MIN_SAMPLES:
            d = LogNormal.fit(values, "") if kind == "lognormal" else Empirical.fit(values, "")
            source = f"{trace.path}: {values.size} {where[key]}"
            model.replace(key, d, source)
            shape = f"sigma {d.sigma:.3f}" if kind == "lognormal" else f"p99 {float(d.quantile(0.99)):.0f} ns"
            report.fitted.append(f"{key}: {kind}, median {d.median:.0f} ns, {shape} from {values.size} {where[key]}")
        else:
            report.kept.append(key if values.size == 0 else f"{key} (only {values.size} samples)")
    return model, report


def _apply_take_all(model: Model, reg: TakeAllRegression, trace: Trace, report: FitReport) -> set[str]:
    """Set the take_all:* keys (and the take-all mmap_lock hold) so that their means add up to the regression."""
    step, drop = model["take_all:step"], model["take_all:drop"]
    share = step.mean / (step.mean + drop.mean)  # the defaults' split: tier 1 sees only the sum
    source = f"{trace.path}: {reg.describe()}"

    def set_mean(key: str, mean: float) -> None:
        sigma = model[key].sigma
        model.replace(key, LogNormal(mean * math.exp(-sigma**2 / 2), sigma), source)

    set_mean("take_all:step", reg.per_lock_ns * share)
    set_mean("take_all:drop", reg.per_lock_ns * (1 - share))
    fitted = ["take_all:step", "take_all:drop"]
    if reg.fixed_ns is not None and reg.fixed_ns > 0:
        set_mean("hold:mmap_lock:take_all", reg.fixed_ns / 2)
        set_mean("take_all:register", reg.fixed_ns / 2)
        fitted += ["hold:mmap_lock:take_all", "take_all:register"]
    elif reg.fixed_ns is not None:
        report.notes.append(f"tier-1 take-all intercept {reg.fixed_ns / 1e3:.1f} µs is not positive: fixed part kept")
    for key in fitted:
        report.fitted.append(f"{key}: lognormal, median {model[key].median:.0f} ns, sigma {model[key].sigma:.3f} "
                             f"from {reg.describe()}")
    return set(fitted)
