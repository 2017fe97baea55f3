"""Work reconstruction: a trace → a Workload (per-thread operation streams for the simulator).

Per thread (docs/SIMULATOR.md, "Work reconstruction"):

* recorded intervals (intervals.py) — system calls and faults become ``Span``,
  lock acquisitions ``Critical``, mmu_gathers ``Gather``; contended waits of
  classes without hold data get a derived hold (holds.py);
* nesting is inferred from containment in time: an interval inside another one's
  hold (or span) becomes part of its ``body``. Measured intervals that overlap
  without nesting are clipped to the outer one; a derived hold that overlaps a
  measured interval is shortened instead (the derived bound is the weaker fact);
  a lock taken inside a gather window splits the gather around it;
* the gaps between them become ``Think`` (on CPU) or ``Block`` (off CPU with
  prev_state≠0, from sched_switch). Time runnable but preempted is dropped: the
  simulator schedules the threads itself. A critical section with nothing inside
  but CPU time has it as ``hold_ns``; otherwise its gaps are ops of its body.

Every op keeps its recorded start (``at_ns``) for open replay and the identity check.
"""

from __future__ import annotations

import gc
import heapq
import os
from bisect import bisect_left
from collections import Counter
from dataclasses import replace
from pathlib import Path

from replay.errors import UsageError
from replay.gcpause import paused_gc
from replay.sim.ops import Block, Critical, Gather, Op, Span, Think, Thread, Workload
from replay.trace.reader import Trace
from replay.workload.holds import derive_holds
from replay.workload.intervals import Interval, OffCpu, Recorded, ThreadRecord, load

#: environment variable selecting the reconstruction path: "columnar" (the default) or "reference"
PATH_ENV = "MMREPLAY_RECONSTRUCT"


def reconstruct(trace: Trace, *, cpus: int | None = None, emit: bool = False, spool: str | Path | None = None
                ) -> Workload:
    """Build the Workload the trace recorded; ``cpus`` overrides the recorded host CPU count.

    ``emit``: the common segments come as policy-neutral instructions (replay/sim/neutral.py's Emitted
    pieces in the threads' ops) instead of op objects, on the columnar path: what flattening, simulate()
    and compare.census read gives the same results; whatever else walks the op objects needs
    ``emit=False`` (the default). ``spool``: a private directory (the caller's, e.g. a mkdtemp) the
    emitted instructions are written to as they are made and mapped from (the files are unlinked at
    once: the directory is left empty), so a long recording's instructions are not held in memory."""
    if cpus is None:
        cpus = trace.manifest.host.cpus
        if cpus <= 0:
            raise UsageError(f"{trace.path}: the trace does not record the host's CPU count; pass --cpus N")
    elif cpus <= 0:
        raise UsageError(f"--cpus must be at least 1 (got {cpus})")
    with paused_gc():  # a million intervals and ops, no cycles
        if os.environ.get(PATH_ENV, "columnar") == "reference":
            threads, derived_classes, rec, sources, notes = _reference(trace)
        else:
            from replay.workload.columnar import build_threads

            threads, derived_classes, rec, sources, notes = build_threads(
                trace, emit, Path(spool) if spool is not None and emit else None)
        # the workload lives as long as the replay and makes no cycles: keep the collector's full pass
        # that re-enabling it would start (seconds on millions of ops) off it
        gc.freeze()
    threads = [t for t in threads if t.ops]
    m = trace.manifest
    return Workload(
        threads=threads,
        cpus=cpus,
        name=trace.path.name,
        derived_classes=derived_classes,
        contiguous=True,
        meta={
            "trace": str(trace.path),
            "recorded_cpus": m.host.cpus,
            "kernel_release": m.host.kernel_release,
            "preempt_model": m.host.preempt_model,
            "start_ns": m.start_ns,
            "end_ns": m.end_ns,
            "measured_hold_classes": sorted(rec.hold_classes),
            "gather_source": rec.gather_source,
            "derived_hold_sources": dict(sorted(sources.items())),
            "notes": dict(sorted(notes.items())),
        },
    )


def _reference(trace: Trace) -> tuple[list[Thread], frozenset[str], Recorded, Counter[str], Counter[str]]:
    """The reference path: an Interval per recorded row, nested one by one (the differential tests' yardstick)."""
    rec = load(trace)
    derived_classes = frozenset(w.lock.lock_class for t in rec.threads.values() for w in t.waits)
    sources = derive_holds(rec)
    notes: Counter[str] = Counter(rec.notes)
    sleeps_known = trace.has("sched_switch")
    threads = [_thread(t, rec, notes, sleeps_known) for t in sorted(rec.threads.values(), key=lambda t: t.tid)]
    return threads, derived_classes, rec, sources, notes


# -- nesting ----------------------------------------------------------------------------------


#: locks an mmu_gather takes itself (zap under the PTE lock, frees under the zone lock): the gather
#: policy models them, so recorded sections of these classes inside a gather window are folded into it
GATHER_LOCK_CLASSES = frozenset({"page_table_lock", "zone_lock"})


def nest(intervals: list[Interval], notes: Counter[str]) -> list[Interval]:
    """Arrange one thread's intervals into a forest by time containment; returns the roots.

    Children lie within their parent's body (after the lock was acquired); gathers take
    no children: a lock inside a gather window splits the gather around it.
    """
    order = sorted(intervals, key=Interval.key)
    pending: list[tuple[tuple[int, int, int, int], int, Interval]] = []  # split gathers' remainders
    roots: list[Interval] = []
    stack: list[Interval] = []
    i = 0
    while i < len(order) or pending:
        if pending and (i == len(order) or pending[0][0] < order[i].key()):
            iv = heapq.heappop(pending)[2]
        else:
            iv = order[i]
            i += 1
        while stack and stack[-1].end <= iv.start:
            stack.pop()
        while stack:
            top = stack[-1]
            if top.kind == "gather" and iv.kind == "critical" and iv.lock.lock_class in GATHER_LOCK_CLASSES:
                iv = None  # the zap's page-table lock / the free path's zone lock: the gather models it
                notes["lock sections inside gathers folded into the gather (its policy models them)"] += 1
                break
            if top.kind == "gather":
                stack.pop()
                rest = _split_gather(top, iv)
                if rest is not None:
                    heapq.heappush(pending, (rest.key(), id(rest), rest))
                notes["gathers split around a lock taken inside them"] += 1
                continue
            if iv.end > top.end:  # overlaps without nesting
                if top.derived and not iv.derived:
                    top.end = max(iv.start, top.body_start)
                    stack.pop()
                    notes["derived holds shortened by a measured interval"] += 1
                    continue
                iv.end = top.end
                notes["derived holds shortened to end with the interval around their start" if iv.derived
                      else "overlapping measured intervals clipped to the outer one"] += 1
            if iv.derived and top.kind == "critical" and iv.body_start <= top.body_start:
                iv = None  # e.g. the rwsem's wait_lock: part of the slow path of the lock being waited for
                notes["lock waits inside another lock's wait folded into it"] += 1
                break
            if iv.start < top.body_start:
                iv.start = min(top.body_start, iv.end)
                iv.body_start = max(iv.body_start, iv.start)
                notes["intervals starting inside a lock wait moved to its acquisition"] += 1
            break
        if iv is None:
            continue
        iv.body_start = min(iv.body_start, iv.end)
        (stack[-1].children if stack else roots).append(iv)
        stack.append(iv)
    return roots


def _split_gather(g: Interval, inner: Interval) -> Interval | None:
    """Cut gather ``g`` at ``inner.start``; return the part after ``inner`` (pages shared by time)."""
    before = max(inner.start - g.start, 0)
    after = max(g.end - max(inner.end, g.start), 0)
    total = before + after
    old_end, pages, flushes = g.end, g.pages, g.flushes or 0
    g.end = g.start + before
    g.recorded_ns = before
    if after == 0:
        return None
    share = before / total
    g.pages = round(pages * share)
    g.flushes = int(flushes * share) if g.flushes is not None else None
    rest = replace(g, start=old_end - after, body_start=old_end - after, end=old_end, recorded_ns=after,
                   pages=pages - g.pages, flushes=(flushes - g.flushes) if g.flushes is not None else None,
                   children=[])
    return rest


# -- gaps ---------------------------------------------------------------------------------


class _Gaps:
    """Turns a stretch of a thread's time into Think / Block ops from its off-CPU pieces."""

    def __init__(self, off_cpu: list[OffCpu], notes: Counter[str]):
        self.off = off_cpu
        self.starts = [o.start for o in off_cpu]
        self.notes = notes

    def ops(self, a: int, b: int) -> list[Op]:
        out: list[Op] = []
        if b <= a:
            return out
        k = max(bisect_left(self.starts, a) - 1, 0)
        off = self.off
        if (k >= len(off) or off[k].end <= a) and (k + 1 >= len(off) or off[k + 1].start >= b):
            if k >= len(off) or off[k].start >= b or off[k].end <= a:
                return [Think(b - a, at_ns=a)]  # the common case: on CPU throughout
        cur = a
        while k < len(self.off) and self.off[k].start < b:
            o = self.off[k]
            k += 1
            if o.end <= cur:
                continue
            s, e = max(o.start, cur), min(o.end, b)
            if s > cur:
                _append(out, Think(s - cur, at_ns=cur))
            if o.blocked:
                _append(out, Block(e - s, at_ns=s))
            else:
                self.notes["preempted ns dropped (the simulator schedules)"] += e - s
            cur = e
        if b > cur:
            _append(out, Think(b - cur, at_ns=cur))
        return out


    def slept(self, a: int, b: int) -> bool:
        """Whether the thread was switched out asleep (not preempted) at some point between ``a`` and ``b``."""
        k = max(bisect_left(self.starts, a) - 1, 0)
        off = self.off
        while k < len(off) and off[k].start < b:
            if off[k].blocked and off[k].end > a:
                return True
            k += 1
        return False

    def off_ns(self, a: int, b: int) -> int:
        """How long the thread was off CPU (asleep or preempted) between ``a`` and ``b``."""
        k = max(bisect_left(self.starts, a) - 1, 0)
        off = self.off
        total = 0
        while k < len(off) and off[k].start < b:
            s, e = max(off[k].start, a), min(off[k].end, b)
            if e > s:
                total += e - s
            k += 1
        return total


def _append(out: list[Op], op: Think | Block) -> None:
    last = out[-1] if out else None
    if type(last) is type(op) and last.at_ns is not None and last.at_ns + last.ns == op.at_ns:
        out[-1] = type(op)(last.ns + op.ns, at_ns=last.at_ns)
    else:
        out.append(op)


def _body(gaps: _Gaps, a: int, b: int, children: list[tuple[Interval, Op]]) -> list[Op]:
    ops: list[Op] = []
    cur = a
    last: Interval | None = None  # the interval of ops[-1], when ops[-1] is a child
    for iv, op in children:
        if last is not None and cur == iv.start and _downgraded(last, iv):
            ops[-1] = replace(ops[-1], downgrade=op)
            last = None
            cur = max(cur, iv.end)
            continue
        ops += gaps.ops(cur, iv.start)
        ops.append(op)
        last = iv
        cur = max(cur, iv.end)
    ops += gaps.ops(cur, b)
    return ops


def _downgraded(w: Interval, r: Interval) -> bool:
    """``r`` is ``w``'s hold going on for read after mmap_write_downgrade: the recorder ends the write
    hold and starts a read hold of the same lock at the same instant, with no wait."""
    return (w.kind == r.kind == "critical" and w.mode == "write" and r.mode == "read" and w.lock == r.lock
            and r.start == w.end and r.body_start == r.start)


def _op(iv: Interval, body: list[Op], off_ns: int = 0, slept: bool | None = None) -> Op:
    if iv.kind == "span":
        return Span(iv.span_kind, tuple(body), at_ns=iv.start, recorded_ns=iv.end - iv.start)
    if iv.kind == "gather":
        # the gather's cost is its time on CPU: preempted inside it, the task did no gather work (the
        # simulator preempts it by itself where the gather policy allows)
        return Gather(iv.pages, 0, mm=iv.mm, fullmm=iv.fullmm, recorded_flushes=iv.flushes,
                      recorded_ns=iv.end - iv.start - off_ns, at_ns=iv.start)
    # A section that only computes is all hold_ns; otherwise its on-CPU gaps stay Think ops of the
    # body, in order, so the layout does not depend on where a simulator puts hold_ns.
    hold = 0
    if len(body) == 1 and isinstance(body[0], Think):
        hold = body.pop().ns
    return Critical(iv.lock, iv.mode, hold, tuple(body), at_ns=iv.start,
                    recorded_wait_ns=iv.body_start - iv.start, derived=iv.derived, recorded_wait_slept=slept)


def _thread(t: ThreadRecord, rec: Recorded, notes: Counter[str], sleeps_known: bool) -> Thread:
    if not t.intervals and not t.instants:
        return Thread(t.tid, t.pid, [], mm=rec.mm_of_pid.get(t.pid, t.pid), comm=t.comm, prio=t.prio)
    roots = nest(t.intervals, notes)
    gaps = _Gaps(t.off_cpu, notes)
    start, end = t.first_ns(), t.last_ns()
    ops = _body(gaps, start, end, build(roots, gaps, notes, sleeps_known))
    return Thread(t.tid, t.pid, ops, mm=rec.mm_of_pid.get(t.pid, t.pid), comm=t.comm, start_ns=start, prio=t.prio)


def build(roots: list[Interval], gaps: _Gaps, notes: Counter[str], sleeps_known: bool) -> list[tuple[Interval, Op]]:
    """Each root of a nested forest with its op (children built first; the columnar path shares this)."""
    # post-order without recursion (mm_take_all_locks nests hundreds deep)
    built: dict[int, Op] = {}
    order: list[Interval] = []
    todo = list(roots)
    while todo:
        iv = todo.pop()
        order.append(iv)
        todo.extend(iv.children)
    for iv in reversed(order):
        children = [(c, built.pop(id(c))) for c in iv.children]
        if iv.kind == "gather":
            off = gaps.off_ns(iv.start, iv.end)
            if off:
                notes["off-CPU ns inside gathers left out of their cost"] += off
            built[id(iv)] = _op(iv, [], off)
        else:
            # whether a lock's recorded waiter slept (sched_switch shows it; without that table, unknown)
            slept = (gaps.slept(iv.start, iv.body_start) if sleeps_known and iv.body_start > iv.start else None) \
                if iv.kind == "critical" else None
            built[id(iv)] = _op(iv, _body(gaps, iv.body_start, iv.end, children), slept=slept)
    return [(r, built.pop(id(r))) for r in roots]
