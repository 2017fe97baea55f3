"""As-recorded interference: the CPU time other jobs took from the recorded tasks, replayed as recorded.

A recording made on a shared host holds the recorded tasks' involuntary
switch-outs (``sched_switch`` with ``prev_state`` 0: preempted, still runnable)
and, later, their switch-ins. Reconstruction drops that preempted time from the
tasks' work (docs/SIMULATOR.md), and the simulator has only the recorded tasks:
a replay runs them as if the host had been theirs. On a loaded host that is the
largest difference between a replay and its recording (docs/VALIDATION.md §e):
tasks that never ran at the same time (another job held the other CPU) run side
by side and contend, and the switches other jobs caused are gone.

This module derives, per recorded task, the runnable-but-not-running intervals
that the task's own workload does not explain: the parts of each preempted
interval during which fewer recorded tasks ran than the host had CPUs (so a CPU
was busy with something outside the recording; while every CPU ran recorded
tasks the simulator's own scheduler decides the wait), and by the same rule the
parts of each wait to run after a sleep (``sched_wakeup`` to the switch-in:
woken, runnable, another job on the CPU; ``Interference.woken``). ``apply`` hands them to
the simulator as ``Block`` ops at the recorded point of the task's work: the task
leaves its CPU for the recorded time (less the wake-up and switch the engine
adds to a block, unless the costs' ``blocks_hold_wakeup`` has it end the block at
its length) and comes back, as it did. It is an input of the replay
like the recorded work, not a model of the other jobs: it answers "this
workload on this host as loaded as it was", which is what a replay is compared
with when its recording is the reference.

Placement, by recorded start: an interval that starts inside a ``Think`` splits it
at the recorded offset; inside a system call or fault (``Span``) or a sleeping
lock's section (``Critical`` of mmap_lock, i_mmap_rwsem, anon_vma: the task was
preempted holding it, and the others waited, as they did) it goes into its body
by the same rule, so the recorded operation's latency holds it as the recorded
one does; inside a gather or a spinlock's section (no off-CPU point there) it
goes right after it, counted in ``Applied.moved``. An interval that starts
inside a sleeping lock's recorded wait goes before the attempt, the lock not
held: a woken writer retries the lock, and on pinned mmap1_threads recordings
the other thread took the lock during 95 % of that time. A wait to run after a
sleep is placed only there and in closed replay (``apply(woken=...)``): a
sleep outside a lock wait is a recorded ``Block`` that holds it already, and
open replay's recorded starts hold it too.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import polars as pl

from replay.sim.ops import Block, Critical, Op, Span, Think, Thread, Workload
from replay.sim.program import SLEEPING_CLASSES
from replay.trace.reader import Trace


@dataclass(frozen=True)
class Interference:
    """Per task (tid): (recorded start, ns) of each interval other jobs held it off its CPU."""

    intervals: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    #: preempted intervals seen (switch-out with prev_state 0 to the task's next switch-in)
    preemptions: int = 0
    #: time of theirs the recorded tasks' own workload explains (every CPU ran a recorded task): left out
    own_ns: int = 0
    #: per task: (recorded wake-up, ns) of each interval it waited to run after a sleep (``sched_wakeup`` to its
    #: switch-in) while some CPU ran another job; the engine's own wake-up latency is in it
    woken: dict[int, list[tuple[int, int]]] = field(default_factory=dict)

    @property
    def total_ns(self) -> int:
        return sum(d for iv in (*self.intervals.values(), *self.woken.values()) for _, d in iv)

    @property
    def count(self) -> int:
        return sum(len(iv) for iv in self.intervals.values())


def _covered(starts: np.ndarray, counts: np.ndarray, s: int, e: int, cpus: int) -> int:
    """ns of [s, e) during which at least ``cpus`` recorded tasks ran (counts[i] holds from starts[i] on)."""
    busy = 0
    i = max(0, int(np.searchsorted(starts, s, side="right")) - 1)
    while i < len(starts) and starts[i] < e:
        lo = max(s, int(starts[i]))
        hi = min(e, int(starts[i + 1])) if i + 1 < len(starts) else e
        if hi > lo and counts[i] >= cpus:
            busy += hi - lo
        i += 1
    return busy


def derive(trace: Trace, tids: list[int], cpus: int) -> Interference:
    """The recorded tasks' preempted time that no recorded task caused (see the module's docstring)."""
    if not trace.has("sched_switch") or not tids:
        return Interference()
    df = (trace.scan("sched_switch").filter(pl.col("prev_tid").is_in(tids) | pl.col("next_tid").is_in(tids))
          .select("ts", "prev_tid", "prev_state", "next_tid").sort("ts", maintain_order=True).collect())
    tidset = set(tids)
    ts = df["ts"].to_numpy()
    prev = df["prev_tid"].to_numpy()
    state = df["prev_state"].to_numpy()
    nxt = df["next_tid"].to_numpy()
    # which recorded tasks ran, from each switch on: a task whose first row switches it out ran from the start
    first_seen: dict[int, bool] = {}  # tid -> its first row switched it out
    for p, n in zip(prev.tolist(), nxt.tolist(), strict=True):
        if p in tidset and p not in first_seen:
            first_seen[p] = True
        if n in tidset and n not in first_seen:
            first_seen[n] = False
    on = {t for t, out_first in first_seen.items() if out_first}
    wakeups: dict[int, np.ndarray] = {}
    if trace.has("sched_wakeup"):
        wk = (trace.scan("sched_wakeup").filter(pl.col("tid").is_in(tids) & (pl.col("kind") == "wakeup"))
              .select("ts", "tid").sort("ts").collect())
        for (tid,), g in wk.group_by("tid"):
            wakeups[int(tid)] = g["ts"].to_numpy()
    counts = np.empty(len(ts), dtype=np.int64)
    out_at: dict[int, int] = {}  # tid -> when it was preempted, while it waits to run again
    slept_at: dict[int, int] = {}  # tid -> when it went to sleep, until it runs again
    raw: list[tuple[int, int, int]] = []
    woken_raw: list[tuple[int, int, int]] = []
    for i in range(len(ts)):
        p, n, t = int(prev[i]), int(nxt[i]), int(ts[i])
        if p in tidset:
            on.discard(p)
            if state[i] == 0:
                out_at[p] = t
                slept_at.pop(p, None)  # (a switch-in lost by the recorder: the earlier sleep is no longer known)
            else:
                slept_at[p] = t
                out_at.pop(p, None)
        if n in tidset:
            on.add(n)
            s = out_at.pop(n, None)
            if s is not None and t > s:
                raw.append((n, s, t))
            s = slept_at.pop(n, None)
            w = wakeups.get(n)
            if s is not None and w is not None:  # its last wake-up since it went to sleep: runnable from there on
                j = int(np.searchsorted(w, t, side="right")) - 1
                if j >= 0 and s <= int(w[j]) < t:
                    woken_raw.append((n, int(w[j]), t))
        counts[i] = len(on)
    intervals: dict[int, list[tuple[int, int]]] = {}
    woken: dict[int, list[tuple[int, int]]] = {}
    own = 0
    for out, rows in ((intervals, raw), (woken, woken_raw)):
        for tid, s, e in rows:
            busy = _covered(ts, counts, s, e, cpus)
            own += busy
            if e - s - busy > 0:
                out.setdefault(tid, []).append((s, e - s - busy))
    return Interference(intervals, preemptions=len(raw), own_ns=own, woken=woken)


@dataclass(frozen=True)
class Applied:
    """The workload with the interference in it, and how it was placed."""

    workload: Workload
    placed: int
    moved: int  # intervals that started inside an op with no off-CPU point (a gather, a spinlock section): after it
    skipped: int  # intervals of a task whose ops have no recorded start
    #: of ``placed``, waits to run after a wake-up inside a sleeping lock's wait (``Interference.woken``)
    woken: int = 0


def _place(ops: Sequence[Op], ivs: list[tuple[int, int, bool]], overhead_ns: int, count: list[int]) -> list[Op]:
    """``ops`` with ``ivs`` (sorted (start, ns, woken)) placed: each in the op it started in, descending into system
    calls, faults and sleeping locks' sections; after any other op; before the first op if it started
    earlier. A woken interval (a wait to run after a sleep) is placed only where it started inside a sleeping
    lock's recorded wait (before the attempt): any other recorded sleep is a ``Block`` that holds it already.
    count: [placed, moved, woken placed]."""
    at = [op.at_ns if op.at_ns is not None else -1 for op in ops]
    groups: dict[int, list[tuple[int, int, bool]]] = {}
    for iv in ivs:
        groups.setdefault(max(0, bisect.bisect_right(at, iv[0]) - 1), []).append(iv)
    out: list[Op] = []
    for i, op in enumerate(ops):
        here = groups.get(i)
        kind = type(op)
        sleeping = kind is Critical and op.lock.lock_class in SLEEPING_CLASSES
        if here and sleeping and op.at_ns is not None:
            # off its CPU while still waiting for the lock (woken, or preempted spinning): before the attempt, the
            # lock not held (a woken writer retries it; the others may take it meanwhile, as they could)
            waited = op.at_ns + (op.recorded_wait_ns or 0)
            for st, d, woken in here:
                if st < waited:
                    out.append(Block(max(0, d - overhead_ns), st))
                    count[0] += 1
                    count[2] += woken
            here = [iv for iv in here if iv[0] >= waited]
        if here and not (kind is Span and op.body) and not (sleeping and op.body):
            here = [iv for iv in here if not iv[2]]
        if not here:
            out.append(op)
            continue
        if i == 0 and op.at_ns is not None:  # intervals before the first op go first
            early = [iv for iv in here if iv[0] < op.at_ns]
            here = [iv for iv in here if iv[0] >= op.at_ns]
            for st, d, _ in early:
                out.append(Block(max(0, d - overhead_ns), st))
                count[0] += 1
            if not here:
                out.append(op)
                continue
        if kind is Think and op.at_ns is not None:
            done = 0  # work of the Think already placed
            off = 0  # interference already placed inside it
            for st, d, _ in here:
                k = min(op.ns, max(done, st - op.at_ns - off))
                if k > done:
                    out.append(Think(k - done, op.at_ns + done + off))
                out.append(Block(max(0, d - overhead_ns), st))
                done = k
                off += d
                count[0] += 1
            if op.ns > done:
                out.append(Think(op.ns - done, op.at_ns + done + off))
        elif kind is Span and op.body:
            out.append(replace(op, body=tuple(_place(op.body, here, overhead_ns, count))))
        elif sleeping:
            # a task preempted holding a sleeping lock: the others wait for it, as they did (a section with no
            # nested op gets it before its hold time: the offset inside a hold is not recorded)
            dg = op.downgrade
            if dg is not None and dg.at_ns is not None:
                # after mmap_write_downgrade the task held the lock for read: an interval that began there goes
                # into the read part (placed in the write part, it held the lock for write: other readers waited)
                later = [iv for iv in here if iv[0] >= dg.at_ns]
                here = [iv for iv in here if iv[0] < dg.at_ns]
                if later:
                    (dg,) = _place((dg,), later, overhead_ns, count)
                    op = replace(op, downgrade=dg)
            if not here:
                out.append(op)
                continue
            if op.body:
                body = _place(op.body, here, overhead_ns, count)
            else:
                body = [Block(max(0, d - overhead_ns), st) for st, d, _ in here]
                count[0] += len(here)
            out.append(replace(op, body=tuple(body)))
        else:  # no off-CPU point inside (a gather, a spinlock's section, a bodiless op): after it
            out.append(op)
            for st, d, _ in here:
                out.append(Block(max(0, d - overhead_ns), st))
                count[0] += 1
                count[1] += 1
    return out


def apply(workload: Workload, interference: Interference, overhead_ns: int, *, woken: bool = True,
          exact: bool = False) -> Applied:
    """``workload`` with each task's intervals as ``Block`` ops at their recorded points; each block is
    ``overhead_ns`` shorter (what the engine adds to a block: a wake-up and a context switch), or, with ``exact``
    (the costs' ``blocks_hold_wakeup``: the engine ends a block at its length, docs/VALIDATION.md §e item 12), as
    long as recorded. Either way a wait to run after a wake-up no longer than ``overhead_ns`` is the engine's.

    ``woken``: place the waits to run after a wake-up too. For closed replay only: in open replay the task's next
    operation waits for its recorded start, which holds that wait already (never under a lock, it delays no other
    task), and placing it as well ran a pinned mmap1_threads open replay 15-17 ms late at the median instead of
    0.1-1.4 ms (docs/VALIDATION.md §e.9)."""
    threads: list[Thread] = []
    count = [0, 0, 0]
    skipped = 0
    for th in workload.threads:
        # a wait to run after a wake-up no longer than the engine's own wake-up and switch is the engine's
        ivs = sorted([*((s, d, False) for s, d in interference.intervals.get(th.tid, ())),
                      *((s, d, True) for s, d in (interference.woken.get(th.tid, ()) if woken else ())
                        if d > overhead_ns)])
        if not ivs or any(op.at_ns is None for op in th.ops):
            threads.append(th)
            skipped += sum(not iv[2] for iv in ivs)
            continue
        threads.append(replace(th, ops=_place(th.ops, ivs, 0 if exact else overhead_ns, count)))
    placed, moved, n_woken = count
    meta = dict(workload.meta)
    meta["interference"] = (f"as recorded: {placed} intervals ({n_woken} of them waits to run after a wake-up), "
                            f"{interference.total_ns / 1e6:.1f} ms other jobs held the recorded tasks off their CPUs "
                            f"({moved} placed after the operation they fell in)")
    return Applied(replace(workload, threads=threads, meta=meta), placed, moved, skipped, n_woken)
