"""The missing-holds model: hold times for lock classes the trace only saw contended waits of.

Tier 1 measures every mmap_lock acquisition, but for i_mmap_rwsem, anon_vma and
the spin locks it has only ``lock:contention_begin/end`` — waits, never holds.
A wait of task A on lock L that ends at ``e`` means A acquired L at ``e``; when A
released it is not recorded. Three pieces of evidence bound it, tried in order
(docs/SIMULATOR.md, "Missing holds"):

1. **hand-off** — another task B that was already waiting on L at ``e`` and is the
   first to acquire L after ``e`` got it when A released (FIFO hand-off of a
   mutex, a writer-held rwsem, a queued spinlock). For an exclusive wait the hold
   is ``e_B - e``; for a read wait it is only an upper bound (readers share).
2. **bracket** — A released L before the operation that contains the wait ended
   (the mmap_lock write hold, the munmap, the fault), and — without hand-off
   evidence — before A's next recorded event (its next lock attempt, gather,
   system call; for a spin lock also its next sleep, since spinlock holders do
   not sleep). That is an upper bound, often far above the hold, so when the
   class has at least ``MIN_SAMPLES`` hand-off holds the hold is the median of
   those that fit under the bound (**sampled**); otherwise the bound itself.
3. **typical** — the wait lies outside every recorded operation: the thread's
   next event says nothing about the release (it may be running untraced
   kernel code), so the hold is the median hand-off hold of the class, else
   ``DEFAULT_HOLD_NS``, capped by the next event.

Whatever the evidence, a derived hold ends by the holder's next sleep (2.6.39 replays
i_mmap and anon_vma as spinlocks, whose holders cannot sleep) and before the holder's
next wait on the same lock (these locks do not nest in themselves: a hold across it
would make the replayed thread wait for itself).

benchmarks/missing_holds_error.py measures the error against simulated ground
truth: hand-off holds come out ~30 ns long (the hand-off itself), sampled ones
within ~30% (median), where the bare bracket overestimated by ~100%.

Uncontended acquisitions leave no trace in tier 1 at all; those holds are not
modelled (their time stays in the surrounding think time).

Measured holds (tier 1's mmap_lock, tier 2's rwsems) need two repairs before nesting
(:func:`fit_measured_holds`), both for the take-all-locks chain (issue #12):

* **a wait nobody caused** — a measured acquisition made while holding another
  measured lock, whose wait no other recorded thread's hold of the same lock
  overlaps and during which the waiter never slept, waited for nothing: that time
  is the lock code's (and, under emulation, the probes') own CPU time inside the
  outer hold, so it stays on-CPU time of the outer section instead of a recorded
  wait, which every simulated policy but as-recorded replaces by its own (zero,
  uncontended). mm_take_all_locks spends most of its chain there. (Outside any
  hold, the attempt keeps its recorded start: nothing recorded gets shorter.)
* **releases out of nesting order** — a measured hold that starts inside another
  one's hold and is released after it (mm_drop_all_locks releases in VMA order,
  not innermost first): the outer hold is extended to that release, so the chain
  stays one nest whose outermost section spans it, as the preempt-off time of
  2.6.39's spinlocks did. Clipping the inner hold instead (what nesting does
  otherwise) cut each chain's section short by its whole release phase.
"""

from __future__ import annotations

import statistics
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from collections.abc import Callable

from replay.workload.intervals import Interval, Recorded, ThreadRecord

#: other threads' holds looked at per wait before it counts as contended (readers can pile up)
OVERLAP_SCAN = 256

#: hold assumed when no evidence bounds it (a short critical section; ~ an i_mmap tree update)
DEFAULT_HOLD_NS = 1_000
#: hand-off holds of a class needed before they stand in for the holds the bracket only bounds
MIN_SAMPLES = 10
SPIN_CLASSES = frozenset({"page_table_lock", "zone_lock", "runqueue_lock"})


#: lock policies that keep a spinning class spinning (the recorded kernel's spinlocks are queued spinlocks; the
#: named sets call them ``spinlock``): a set that gives a SPIN_CLASSES class one of these keeps its type
SPINNING_POLICIES = frozenset({"spinlock", "qspinlock"})


def replayed_policy(lock_policy: Callable[[str], str], derived_classes: frozenset[str] | set[str]
                    ) -> Callable[[str], str]:
    """``lock_policy`` as the engines replay a workload whose ``derived_classes`` the trace saw waiting only.

    A spinning class (SPIN_CLASSES) whose holds are all derived and whose policy keeps it spinning is
    replayed ``as-recorded``: each contended wait is the recorded wait, spun on the waiter's CPU with
    preemption off (the engines' as-recorded lock for a class that does not sleep), and its derived hold
    runs with preemption off but excludes nobody. The holds the recorded waits waited for were mostly
    uncontended acquisitions, which tier 1 does not record: the derived holds (one per recorded wait) almost
    never meet one another, so replayed as a spinlock the waits vanished (docs/VALIDATION.md §e items 11
    and 14; docs/SIMULATOR.md, "What the model cannot see"). A policy that changes the class (a mutex, an
    rwsem) still gets the derived holds. The sleeping classes (i_mmap_rwsem, anon_vma) keep their model
    even where the set keeps the recorded rwsem: 2.6.39 and 3.0 change them, and a projection against
    ``current`` must compare one model with the same model, not a model with the recording.
    """
    kept = frozenset(derived_classes) & SPIN_CLASSES
    if not kept:
        return lock_policy

    def policy(lock_class: str) -> str:
        p = lock_policy(lock_class)
        return "as-recorded" if lock_class in kept and p in SPINNING_POLICIES else p

    return policy


def _handoff_ends(rec: Recorded) -> dict[int, int]:
    """id(wait) → acquisition time of the next waiter that was queued on the same lock when it acquired."""
    by_lock: dict[tuple[str, int], list[tuple[int, int, int, Interval]]] = defaultdict(list)
    for t in rec.threads.values():
        for w in t.waits:
            by_lock[(w.lock.lock_class, w.lock.addr)].append((w.body_start, w.start, t.tid, w))
    out: dict[int, int] = {}
    for waits in by_lock.values():
        waits.sort(key=lambda x: (x[0], x[1]))
        ends = [x[0] for x in waits]
        for acquired, _start, tid, w in waits:
            k = bisect_left(ends, acquired + 1)
            for acquired_j, start_j, tid_j, _ in waits[k:k + 256]:
                if tid_j != tid and start_j <= acquired:
                    out[id(w)] = acquired_j
                    break
    return out


def _brackets(t: ThreadRecord) -> dict[int, tuple[int | None, int | None, int | None]]:
    """id(wait) → (end of the innermost measured interval containing it, start of the thread's next event,
    start of its next sleep)."""
    measured = sorted(t.intervals, key=Interval.key)
    starts = sorted([iv.start for iv in measured] + [w.start for w in t.waits])
    sleeps = sorted(o.start for o in t.off_cpu if o.blocked)
    out: dict[int, tuple[int | None, int | None, int | None]] = {}
    stack: list[Interval] = []
    i = 0
    for w in t.waits:
        while i < len(measured) and measured[i].start <= w.start:
            iv = measured[i]
            while stack and stack[-1].end <= iv.start:
                stack.pop()
            stack.append(iv)
            i += 1
        parent = next((p for p in reversed(stack) if p.body_start <= w.start and p.end >= w.body_start), None)
        k = bisect_right(starts, w.body_start)
        nxt = starts[k] if k < len(starts) else None
        k = bisect_right(sleeps, w.body_start)
        sleep = sleeps[k] if k < len(sleeps) else None
        if w.lock.lock_class in SPIN_CLASSES and sleep is not None and (nxt is None or sleep < nxt):
            nxt = sleep
        out[id(w)] = (parent.end if parent else None, nxt, sleep)
    return out


def _next_same_lock(t: ThreadRecord) -> dict[int, int]:
    """id(wait) → start of the thread's next wait on the same lock, for the waits that have one."""
    by_lock: dict[tuple[str, int], list[Interval]] = defaultdict(list)
    for w in t.waits:
        by_lock[(w.lock.lock_class, w.lock.addr)].append(w)
    out: dict[int, int] = {}
    for waits in by_lock.values():
        waits.sort(key=lambda w: (w.start, w.body_start))
        for w, nxt in zip(waits, waits[1:], strict=False):
            out[id(w)] = nxt.start
    return out


def derive_holds(rec: Recorded, brackets_of: Callable[[ThreadRecord], dict] | None = None) -> Counter[str]:
    """Give every contended wait of a hold-less class a derived hold; move it among the thread's intervals.

    Returns how many holds each kind of evidence decided (``"<class>: hand-off"`` ...).
    Measured holds are fitted first (:func:`fit_measured_holds`).
    ``brackets_of``: _brackets computed another way (the columnar path's, from its arrays).
    """
    fit_measured_holds(rec)
    handoff = _handoff_ends(rec)
    brackets = {tid: (brackets_of or _brackets)(t) for tid, t in rec.threads.items()}
    typical_samples: dict[str, list[int]] = defaultdict(list)
    for t in rec.threads.values():
        for w in t.waits:
            h = handoff.get(id(w))
            parent_end, _, sleep = brackets[t.tid][id(w)]
            if w.exclusive_wait and h is not None and (parent_end is None or h <= parent_end) \
                    and (sleep is None or h <= sleep):
                typical_samples[w.lock.lock_class].append(h - w.body_start)
    samples = {cls: sorted(v) for cls, v in typical_samples.items()}

    sources: Counter[str] = Counter()
    for t in rec.threads.values():
        again = _next_same_lock(t)
        for w in t.waits:
            acquired = w.body_start
            parent_end, nxt, sleep = brackets[t.tid][id(w)]
            h = handoff.get(id(w))
            if h is not None and w.exclusive_wait:
                end = min(h, parent_end) if parent_end is not None else h
                source = "hand-off"
            elif parent_end is not None:
                bound = min(b for b in (parent_end, nxt, h) if b is not None) - acquired
                sample = samples.get(w.lock.lock_class, [])
                # the median of the class's hand-off holds that fit under the bound
                k = bisect_right(sample, bound) if len(sample) >= MIN_SAMPLES else 0
                end = acquired + (sample[(k - 1) // 2] if k else bound)
                source = "sampled" if k else "bracket"
            else:
                # outside every recorded operation the thread's next event is no sign of a release
                # (it may be running untraced kernel code): take the class's typical hold
                sample = samples.get(w.lock.lock_class, [])
                hold = int(statistics.median(sample)) if sample else DEFAULT_HOLD_NS
                caps = [b - acquired for b in (nxt, h) if b is not None]
                end = acquired + min([hold, *caps])
                source = "typical"
            if sleep is not None and end > sleep:
                # the holder went to sleep: a hold the trace does not measure ends there. Whether it held on
                # today is unknown, and the 2.6.39 set replays these classes as spinlocks, whose holders
                # cannot sleep (a derived hold across a sleep deadlocked the spinners)
                end = sleep
                rec.notes["derived holds ended at the holder's next sleep"] += 1
            relock = again.get(id(w))
            if relock is not None and end > relock:
                end = relock  # released before the thread waited on the same lock again
                rec.notes["derived holds ended at the holder's next wait on the same lock"] += 1
            w.end = max(end, acquired)
            w.evidence = source
            sources[f"{w.lock.lock_class}: {source}"] += 1
        t.intervals.extend(t.waits)
        t.waits = []
    return sources


def fit_measured_holds(rec: Recorded) -> None:
    """Turn waits nobody caused into on-CPU time and extend holds released out of nesting order (module doc)."""
    holders: dict[tuple[str, int], list[tuple[int, int, int]]] = defaultdict(list)
    for t in rec.threads.values():
        for iv in t.intervals:
            if iv.kind == "critical" and not iv.derived:
                holders[(iv.lock.lock_class, iv.lock.addr)].append((iv.body_start, iv.end, t.tid))
    index = MeasuredHolders(holders)
    for t in rec.threads.values():
        fit_thread_holds(t, [iv for iv in t.intervals if iv.kind == "critical" and not iv.derived], index,
                         rec.notes)


class MeasuredHolders:
    """Every thread's measured holds per lock, (acquired, released, tid): who could have caused a wait."""

    def __init__(self, holders: dict[tuple[str, int], list[tuple[int, int, int]]]):
        self.index: dict[tuple[str, int], tuple[list[int], list[tuple[int, int, int]], list[int]]] = {}
        for key, hs in holders.items():
            hs.sort()
            reach, m = [], -1
            for _b, e, _tid in hs:
                m = max(m, e)
                reach.append(m)  # the latest release among holds acquired up to here
            self.index[key] = ([b for b, _e, _tid in hs], hs, reach)

    def contended(self, iv: Interval, tid: int) -> bool:
        """Did another thread hold iv's lock during iv's wait (a crowd of holders: assume so)?"""
        starts, hs, reach = self.index[(iv.lock.lock_class, iv.lock.addr)]
        j = bisect_left(starts, iv.body_start) - 1
        for _ in range(OVERLAP_SCAN):
            if j < 0 or reach[j] <= iv.start:
                return False
            b, e, other = hs[j]
            if other != tid and e > iv.start and b < iv.body_start:
                return True
            j -= 1
        return True


def fit_thread_holds(t: ThreadRecord, held: list[Interval], holders: MeasuredHolders, notes: Counter[str]) -> None:
    """fit_measured_holds for one thread's measured holds ``held`` (changed in place)."""
    sleeps = sorted((o.start, o.end) for o in t.off_cpu if o.blocked)
    sleep_starts = [a for a, _ in sleeps]
    held = sorted(held, key=Interval.key)
    stack: list[Interval] = []
    for iv in held:
        while stack and stack[-1].end <= iv.start:
            stack.pop()
        nested = bool(stack) and iv.start >= stack[-1].body_start
        stack.append(iv)
        if not nested or iv.body_start <= iv.start:
            continue  # only inside another hold does the wait's time lengthen a recorded section
        k = bisect_left(sleep_starts, iv.body_start) - 1
        slept = k >= 0 and sleeps[k][1] > iv.start
        if not slept and not holders.contended(iv, t.tid):
            iv.start = iv.body_start
            notes["measured waits no holder caused kept as on-CPU time"] += 1
    stack = []
    for iv in sorted(held, key=Interval.key):
        while stack and stack[-1].end <= iv.start:
            stack.pop()
        if stack and iv.end > stack[-1].end and iv.start >= stack[-1].body_start:
            for outer in stack:
                if outer.end < iv.end:
                    outer.end = iv.end
            notes["measured holds released out of nesting order: outer holds extended"] += 1
        stack.append(iv)
