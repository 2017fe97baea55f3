"""Measured holds that the op model's LIFO nesting cannot take as recorded (holds.fit_measured_holds).

mm_take_all_locks takes hundreds of i_mmap_rwsem / anon_vma locks inside its mmap_lock write hold and
mm_drop_all_locks releases them in VMA order, not innermost first; under emulation each acquisition's
own path costs tens of µs that tier 2 records as the lock's wait. Replayed under 2.6.39 (spinlocks)
the whole chain must stay one preempt-off section as long as the recorded one (issue #12).
"""

from __future__ import annotations

from collections import Counter

from replay.sim.ops import LockRef
from replay.workload.holds import fit_measured_holds
from replay.workload.intervals import Interval, OffCpu, Recorded, ThreadRecord
from replay.workload.reconstruct import nest

MMAP = LockRef("mmap_lock", 0x1000)


def _hold(lock: LockRef, start: int, acquired: int, end: int, seq: int) -> Interval:
    return Interval("critical", start, acquired, end, seq, lock=lock, mode="write", wait=acquired - start)


def _chain(n: int = 4) -> tuple[Interval, list[Interval]]:
    """A write hold of mmap_lock [0, 10_000] and inside it n nested locks, each waited for 100 ns with
    nobody holding it, all held until a release phase that frees them in acquisition order."""
    outer = _hold(MMAP, 0, 10, 10_000, 0)
    links = [_hold(LockRef("anon_vma" if i % 2 else "i_mmap_rwsem", 0x2000 + i), 100 + 200 * i, 200 + 200 * i,
                   5_000 + 100 * i, 1 + i) for i in range(n)]
    return outer, links


def _recorded(*threads: ThreadRecord) -> Recorded:
    return Recorded({t.tid: t for t in threads}, {"mmap_lock", "i_mmap_rwsem", "anon_vma"}, {}, "none")


def test_a_chain_released_in_acquisition_order_stays_one_nest_as_long_as_its_last_release():
    outer, links = _chain()
    t = ThreadRecord(1, 1, intervals=[outer, *links])
    fit_measured_holds(_recorded(t))
    roots = nest(t.intervals, Counter())
    assert roots == [outer]
    depth, iv = 0, outer
    while iv.children:
        (iv,) = iv.children
        depth += 1
    assert depth == len(links)  # one chain: every link inside the one before it
    first = links[0]
    assert first.body_start == 200 and first.end == 5_000 + 100 * (len(links) - 1)  # spans the last release


def test_waits_inside_a_hold_that_no_one_caused_are_on_cpu_time_and_contended_or_slept_ones_stay_waits():
    outer, links = _chain()
    other = ThreadRecord(2, 2, intervals=[_hold(links[1].lock, 150, 150, 320, 9)])  # holds link 1 as we wait
    me = ThreadRecord(1, 1, intervals=[outer, *links], off_cpu=[OffCpu(520, 560, blocked=True)])  # sleeps in link 2's
    rec = _recorded(me, other)
    fit_measured_holds(rec)
    assert links[0].start == links[0].body_start == 200  # nobody held it: the lock path's own time
    assert (links[1].start, links[1].body_start) == (300, 400)  # thread 2 held it: a real wait
    assert (links[2].start, links[2].body_start) == (500, 600)  # it slept: a real wait
    assert links[3].start == links[3].body_start == 800
    assert (outer.start, outer.body_start) == (0, 10)  # not inside a hold: the attempt keeps its recorded start
    assert rec.notes["measured waits no holder caused kept as on-CPU time"] == 2


def test_holds_that_nest_are_left_as_recorded():
    outer = _hold(MMAP, 0, 10, 1_000, 0)
    inner = _hold(LockRef("i_mmap_rwsem", 0x2000), 20, 20, 500, 1)
    later = _hold(LockRef("anon_vma", 0x3000), 2_000, 2_100, 2_500, 2)
    rec = _recorded(ThreadRecord(1, 1, intervals=[outer, inner, later]))
    fit_measured_holds(rec)
    assert [(iv.start, iv.body_start, iv.end) for iv in (outer, inner, later)] == \
        [(0, 10, 1_000), (20, 20, 500), (2_000, 2_100, 2_500)]
    assert not rec.notes
