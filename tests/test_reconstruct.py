"""Work reconstruction: a trace becomes per-thread op streams that lay out exactly as recorded."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replay.errors import MissingTableError, UsageError
from replay.sim.ops import Block, Critical, Gather, Span, Think
from replay.trace import Trace
from replay.workload import reconstruct
from replay.workload.holds import DEFAULT_HOLD_NS
from replay.workload.timeline import layout
from tests.tracebuilder import ANON_VMA_ROOT, FILE_A, TraceBuilder, mm_addr


def munmap(t, *, mmap_wait=0, i_mmap_wait=0, i_mmap_hold=400, pages=64, flushes=1, lock_addr=FILE_A):
    """The munmap of a file page: mmap_lock write → i_mmap_rwsem (free_pgtables) → gather."""
    with t.syscall("munmap", arg0=0x7F00_0000_0000, arg1=4096 * pages):
        t.run(300)
        with t.mmap_lock("write", wait=mmap_wait):
            t.run(200)
            with t.lock("i_mmap_rwsem", lock_addr, wait=i_mmap_wait):
                t.run(i_mmap_hold)
            t.gather(pages=pages, flushes=flushes)
        t.run(100)


def recorded_intervals(trace: Trace) -> list[tuple[int, str, int, int, int | None]]:
    """(tid, kind, start, end, acquired) of every syscall, mmap_lock acquisition and lock wait in the trace."""
    out = []
    for tid, ts, dur, name in trace.read("syscalls").select("tid", "ts", "dur", "name").rows():
        out.append((tid, f"span:{'exit' if name == 'exit_group' else name}", ts, ts + dur, None))
    for tid, ts, dur, wait, cls in trace.read("lock_holds").select("tid", "ts", "dur", "wait", "lock_class").rows():
        out.append((tid, f"critical:{cls}", ts - wait, ts + dur, ts))
    for tid, ts in trace.read("page_faults").select("tid", "ts").rows():
        out.append((tid, "span:fault", ts, None, None))
    return sorted(out, key=lambda r: (r[0], r[2], r[1]))


def placed_intervals(workload) -> list[tuple[int, str, int, int, int | None]]:
    out = []
    for p in layout(workload):
        if p.kind.startswith("span:") or p.kind == "critical:mmap_lock":
            out.append((p.tid, p.kind, p.start, None if p.kind == "span:fault" else p.end, p.acquired))
    return sorted(out, key=lambda r: (r[0], r[2], r[1]))


def two_tasks_trace(tmp_path, tier=1):
    b = TraceBuilder(cpus=4)
    a = b.thread(101, comm="mmap-file")
    c = b.thread(202, comm="mmap-file")
    for i in range(3):
        a.run(1_000)
        munmap(a, mmap_wait=0, i_mmap_wait=500 * i)
        with a.fault(0x7F00_0000_1000, wait=200 * i):
            a.run(700)
        a.sleep(5_000)
        c.run(1_500)
        with c.fault(0x7F00_0000_2000):
            c.run(900)
        c.sleep(2_000)  # blocked, not preempted: preemption is dropped, so it would shift the layout
        munmap(c, i_mmap_wait=800, pages=600, flushes=2)
    return b, b.write(tmp_path / "trace", tier=tier)


def walk(ops):
    todo = list(ops)
    while todo:
        op = todo.pop()
        yield op
        if isinstance(op, Critical | Span):
            todo.extend(op.body)


def test_layout_reproduces_every_recorded_syscall_fault_and_mmap_lock_acquisition(tmp_path):
    _, path = two_tasks_trace(tmp_path)
    trace = Trace.open(path)
    w = reconstruct(trace)
    rec = recorded_intervals(trace)
    rec = [(tid, k, s, None if k == "span:fault" else e, acq) for tid, k, s, e, acq in rec]
    assert placed_intervals(w) == rec


def test_lock_waits_keep_their_recorded_start_and_wait(tmp_path):
    _, path = two_tasks_trace(tmp_path)
    trace = Trace.open(path)
    w = reconstruct(trace)
    waits = sorted((tid, ts, ts + dur) for tid, ts, dur, cls in
                   trace.read("lock_waits").select("tid", "ts", "dur", "lock_class").rows() if cls == "i_mmap_rwsem")
    placed = sorted((p.tid, p.start, p.acquired) for p in layout(w) if p.kind == "critical:i_mmap_rwsem"
                    and p.acquired > p.start)
    assert placed == waits


def test_fault_lasts_from_entry_until_it_releases_mmap_lock(tmp_path):
    b = TraceBuilder()
    t = b.thread(7)
    with t.fault(0x1000, entry_ns=150, wait=300):
        t.run(900)
    w = reconstruct(Trace.open(b.write(tmp_path / "t")))
    (fault,) = w.threads[0].ops
    assert isinstance(fault, Span) and fault.kind == "fault"
    assert fault.recorded_ns == 150 + 300 + 900
    think, crit = fault.body
    assert think == Think(150, at_ns=b.start_ns)
    assert (crit.lock.lock_class, crit.mode, crit.recorded_wait_ns, crit.hold_ns) == ("mmap_lock", "read", 300, 900)


def test_fault_with_no_measured_end_is_not_replayed_as_an_operation(tmp_path):
    b = TraceBuilder()
    t = b.thread(7)
    with t.fault(0x1000, vma_lock=True):
        t.run(900)
    t.run(100)
    with t.syscall("mmap"):
        t.run(50)
    w = reconstruct(Trace.open(b.write(tmp_path / "t")))
    assert [type(op).__name__ for op in w.threads[0].ops] == ["Think", "Span"]  # the fault's time is think time
    assert w.threads[0].ops[0].ns == 100 + 900 + 100  # fault entry, fault body, user work
    assert any("per-VMA" in k for k in w.meta["notes"])


def test_sleeping_becomes_block_and_preemption_is_dropped(tmp_path):
    b = TraceBuilder()
    t = b.thread(7)
    with t.syscall("mmap"):
        t.run(100)
    t.run(1_000)
    t.sleep(20_000)
    t.run(500)
    t.preempted(7_000)
    t.run(500)
    with t.syscall("mmap"):
        t.run(100)
    w = reconstruct(Trace.open(b.write(tmp_path / "t")))
    gaps = [op for op in w.threads[0].ops if not isinstance(op, Span)]
    assert [type(op) for op in gaps] == [Think, Block, Think, Think]
    assert [op.ns for op in gaps] == [1_000, 20_000, 500, 500]
    assert w.meta["notes"]["preempted ns dropped (the simulator schedules)"] == 7_000


def test_nesting_follows_time_containment(tmp_path):
    b = TraceBuilder()
    t = b.thread(7)
    munmap(t, i_mmap_wait=1_000)
    w = reconstruct(Trace.open(b.write(tmp_path / "t")))
    (span,) = w.threads[0].ops
    assert span.kind == "munmap"
    mmap_lock = next(op for op in span.body if isinstance(op, Critical))
    assert mmap_lock.lock.lock_class == "mmap_lock" and mmap_lock.mode == "write"
    kinds = [type(op).__name__ + (f":{op.lock.lock_class}" if isinstance(op, Critical) else "")
             for op in mmap_lock.body]
    # the builder ends a gather 1 ns after its last flush: that ns is the trailing Think
    assert kinds == ["Think", "Critical:i_mmap_rwsem", "Gather", "Think"]
    i_mmap = mmap_lock.body[1]
    assert i_mmap.derived and i_mmap.recorded_wait_ns == 1_000


def test_tier1_gather_counts_pages_and_local_flushes_of_its_syscall(tmp_path):
    b = TraceBuilder()
    t = b.thread(7)
    munmap(t, pages=1_000, flushes=3)
    with t.syscall("exit_group"):
        t.gather(pages=5_000, flushes=10, fullmm=True, remote_cpus=3)
    w = reconstruct(Trace.open(b.write(tmp_path / "t")))
    gathers = [op for op in walk(w.threads[0].ops) if isinstance(op, Gather)]
    assert sorted((g.pages, g.recorded_flushes, g.fullmm, g.mm) for g in gathers) == [
        (1_000, 3, False, mm_addr(7)), (5_000, 10, True, mm_addr(7))]
    assert w.meta["gather_source"] == "page_free_batches"


def test_tier2_gathers_and_holds_are_measured_not_derived(tmp_path):
    b, path = two_tasks_trace(tmp_path, tier=2)
    w = reconstruct(Trace.open(path))
    assert w.derived_classes == frozenset()
    assert w.meta["gather_source"] == "gathers"
    i_mmap = [op for t in w.threads for op in walk(t.ops)
              if isinstance(op, Critical) and op.lock.lock_class == "i_mmap_rwsem"]
    truth = sorted(h.hold for h in b.truth if h.lock_class == "i_mmap_rwsem")
    assert sorted(op.hold_ns for op in i_mmap) == truth
    assert not any(op.derived for op in i_mmap)


# -- the missing-holds model -----------------------------------------------------------------


def derived_holds(w, lock_class):
    return {(t.tid, op.at_ns): op.hold_ns for t in w.threads for op in walk(t.ops)
            if isinstance(op, Critical) and op.lock.lock_class == lock_class and op.derived}


def test_derived_classes_are_those_seen_only_waiting(tmp_path):
    b = TraceBuilder()
    t = b.thread(7)
    munmap(t, i_mmap_wait=300)
    with t.lock("anon_vma", ANON_VMA_ROOT, wait=200):
        t.run(50)
    w = reconstruct(Trace.open(b.write(tmp_path / "t")))
    assert w.derived_classes == {"i_mmap_rwsem", "anon_vma"}
    assert "mmap_lock" in w.meta["measured_hold_classes"]


def test_handoff_to_a_queued_waiter_gives_the_exact_hold(tmp_path):
    # A acquires i_mmap at t0+1000 and holds it 3000; B queued at t0+500 gets it on A's release.
    b = TraceBuilder()
    a, c = b.thread(1), b.thread(2)
    with a.syscall("munmap"), a.mmap_lock("write"):
        with a.lock("i_mmap_rwsem", FILE_A, wait=1_000):
            a.run(3_000)
        a.run(9_000)  # more work under mmap_lock: the bracket alone would overestimate
    c.run(500)
    with c.syscall("munmap"), c.mmap_lock("write"):
        with c.lock("i_mmap_rwsem", FILE_A, wait=3_500):
            c.run(700)
    w = reconstruct(Trace.open(b.write(tmp_path / "t")))
    holds = derived_holds(w, "i_mmap_rwsem")
    assert holds[(1, b.start_ns)] == 3_000
    assert w.meta["derived_hold_sources"]["i_mmap_rwsem: hand-off"] == 1


def test_hold_without_handoff_is_bracketed_by_the_next_event(tmp_path):
    b = TraceBuilder()
    t = b.thread(1)
    munmap(t, i_mmap_wait=500, i_mmap_hold=1_234)
    w = reconstruct(Trace.open(b.write(tmp_path / "t")))
    assert list(derived_holds(w, "i_mmap_rwsem").values()) == [1_234]
    assert w.meta["derived_hold_sources"] == {"i_mmap_rwsem: bracket": 1}


def test_derived_hold_never_outlives_the_operation_containing_it(tmp_path):
    # The queued waiter acquires long after A's munmap returned: A's hold still ends with its mmap_lock.
    b = TraceBuilder()
    a, c = b.thread(1), b.thread(2)
    with a.syscall("munmap"):
        with a.mmap_lock("write"):
            with a.lock("i_mmap_rwsem", FILE_A, wait=1_000):
                a.run(2_000)
        a.run(100)
    c.run(10)
    with c.lock("i_mmap_rwsem", FILE_A, wait=50_000):
        c.run(10)
    w = reconstruct(Trace.open(b.write(tmp_path / "t")))
    assert derived_holds(w, "i_mmap_rwsem")[(1, b.start_ns)] == 2_000


def test_bracketed_hold_takes_the_median_handoff_hold_that_fits_under_its_bound(tmp_path):
    b = TraceBuilder()
    a, c, d = b.thread(1), b.thread(2), b.thread(3)
    for _ in range(12):  # A hands i_mmap to C every round: 12 hand-off samples of exactly 3000 ns
        base = max(a.now, c.now)
        a.run(base - a.now)
        c.run(base + 500 - c.now)
        with a.syscall("munmap"), a.mmap_lock("write"):
            with a.lock("i_mmap_rwsem", FILE_A, wait=1_000):
                a.run(3_000)
        with c.syscall("munmap"), c.mmap_lock("write"):
            with c.lock("i_mmap_rwsem", FILE_A, wait=3_500):
                c.run(700)  # bound 700: no sample fits under it, so the bracket stands
    d.run(c.now + 10_000 - d.now)
    with d.syscall("munmap"), d.mmap_lock("write"):
        with d.lock("i_mmap_rwsem", FILE_A, wait=200):
            d.run(3_200)
        d.run(20_000)  # the bracket alone would say 23 µs
    w = reconstruct(Trace.open(b.write(tmp_path / "t")))
    holds = derived_holds(w, "i_mmap_rwsem")
    assert sorted({h for (tid, _), h in holds.items() if tid == 1}) == [3_000]
    assert sorted({h for (tid, _), h in holds.items() if tid == 2}) == [700]
    assert [h for (tid, _), h in holds.items() if tid == 3] == [3_000]
    assert w.meta["derived_hold_sources"] == {"i_mmap_rwsem: hand-off": 12, "i_mmap_rwsem: bracket": 12,
                                              "i_mmap_rwsem: sampled": 1}


def test_hold_with_no_evidence_takes_the_default(tmp_path):
    b = TraceBuilder()
    t = b.thread(1)
    with t.lock("anon_vma", ANON_VMA_ROOT, wait=300):
        t.run(50)
    w = reconstruct(Trace.open(b.write(tmp_path / "t")))
    assert list(derived_holds(w, "anon_vma").values()) == [DEFAULT_HOLD_NS]


def test_wait_outside_any_operation_takes_the_typical_hold_not_the_gap_to_the_next_event(tmp_path):
    b = TraceBuilder()
    t = b.thread(1)
    with t.lock("other", 0xFFFF_8881_0000_0040, wait=300):  # e.g. inside an untraced system call
        t.run(50)
    t.run(1_000_000)
    with t.syscall("mmap"):
        t.run(100)
    w = reconstruct(Trace.open(b.write(tmp_path / "t")))
    assert list(derived_holds(w, "other").values()) == [DEFAULT_HOLD_NS]
    assert w.meta["derived_hold_sources"] == {"other: typical": 1}


def test_missing_hold_data_is_a_one_line_missing_table_error(tmp_path):
    b = TraceBuilder()
    munmap(b.thread(1))
    with pytest.raises(MissingTableError, match="lock_holds.*mmap_lock"):
        reconstruct(Trace.open(b.write(tmp_path / "t", omit=("lock_holds",))))


def test_cpus_default_to_the_recorded_host_and_can_be_overridden(tmp_path):
    b = TraceBuilder(cpus=6)
    munmap(b.thread(1))
    trace = Trace.open(b.write(tmp_path / "t"))
    assert reconstruct(trace).cpus == 6
    assert reconstruct(trace, cpus=64).cpus == 64
    with pytest.raises(UsageError, match="--cpus"):
        reconstruct(trace, cpus=0)


# -- invariant: any builder timeline lays out exactly as recorded ------------------------------

_step = st.one_of(
    st.tuples(st.just("run"), st.integers(1, 5_000)),
    st.tuples(st.just("sleep"), st.integers(1, 50_000)),
    st.tuples(st.just("fault"), st.integers(0, 3_000), st.integers(1, 3_000)),
    st.tuples(st.just("munmap"), st.integers(0, 3_000), st.integers(0, 3_000), st.integers(1, 3_000),
              st.integers(1, 700)),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(programs=st.lists(st.lists(_step, min_size=1, max_size=8), min_size=1, max_size=3))
def test_any_timeline_lays_out_as_recorded(tmp_path_factory, programs):
    b = TraceBuilder(cpus=4)
    for i, program in enumerate(programs):
        t = b.thread(100 + i)
        for step in program:
            if step[0] == "run":
                t.run(step[1])
            elif step[0] == "sleep":
                t.sleep(step[1])
            elif step[0] == "fault":
                with t.fault(0x1000, wait=step[1]):
                    t.run(step[2])
            else:
                munmap(t, mmap_wait=step[1], i_mmap_wait=step[2], i_mmap_hold=step[3], pages=step[4])
    trace = Trace.open(b.write(tmp_path_factory.mktemp("t") / "t"))
    w = reconstruct(trace)
    rec = [(tid, k, s, None if k == "span:fault" else e, acq) for tid, k, s, e, acq in recorded_intervals(trace)]
    assert placed_intervals(w) == rec
    # every recorded nanosecond of a thread between its first and last event is accounted for
    for t in w.threads:
        ends = [p.end for p in layout(w) if p.tid == t.tid and p.depth == 0]
        assert max(ends) == max(e for tid, _, _, e, _ in recorded_intervals(trace) if tid == t.tid and e)


def test_a_lock_taken_inside_a_gather_window_splits_the_gather_and_keeps_its_pages():
    from collections import Counter

    from replay.sim.ops import LockRef
    from replay.workload.intervals import Interval
    from replay.workload.reconstruct import nest

    gather = Interval("gather", 0, 0, 1_000, 0, pages=90, flushes=3, recorded_ns=1_000)
    lock = Interval("critical", 400, 450, 500, 1, lock=LockRef("i_mmap_rwsem", FILE_A), wait=50)
    roots = nest([gather, lock], Counter())
    assert [(r.kind, r.start, r.end) for r in roots] == [("gather", 0, 400), ("critical", 400, 500),
                                                         ("gather", 500, 1_000)]
    assert roots[0].pages + roots[2].pages == 90 and roots[0].flushes + roots[2].flushes == 3
    assert roots[0].pages == 40  # shared by time: 400 of the 900 ns outside the lock


def test_per_vma_fault_lasts_until_its_page_table_lock_release_in_tier2(tmp_path):
    b = TraceBuilder()
    t = b.thread(7)
    with t.fault(0x1000, vma_lock=True, entry_ns=300):
        with t.lock("page_table_lock", mm_addr(7) + 0x40):
            t.run(60)
    t.run(5_000)
    with t.fault(0x2000, vma_lock=True):
        t.run(200)
    path = b.write(tmp_path / "t", tier=2)
    w = reconstruct(Trace.open(path))
    first, think = w.threads[0].ops
    assert (first.kind, first.recorded_ns) == ("fault", 360)
    assert isinstance(think, Think)  # the second fault: nothing measured, its time is not known


def test_page_table_lock_sections_inside_a_gather_are_folded_into_it():
    from collections import Counter

    from replay.sim.ops import LockRef
    from replay.workload.intervals import Interval
    from replay.workload.reconstruct import nest

    gather = Interval("gather", 0, 0, 1_000, 0, pages=90, flushes=3, recorded_ns=1_000)
    ptl = Interval("critical", 100, 100, 900, 1, lock=LockRef("page_table_lock", 1), wait=0)
    notes = Counter()
    roots = nest([gather, ptl], notes)
    assert [(r.kind, r.start, r.end, r.pages) for r in roots] == [("gather", 0, 1_000, 90)]
    assert sum(notes.values()) == 1


def test_a_lock_wait_inside_another_locks_wait_is_part_of_its_slow_path():
    from collections import Counter

    from replay.sim.ops import LockRef
    from replay.workload.intervals import Interval
    from replay.workload.reconstruct import nest

    mmap_lock = Interval("critical", 0, 1_000, 2_000, 0, lock=LockRef("mmap_lock", 1), wait=1_000)
    wait_lock = Interval("critical", 200, 300, 350, 1, lock=LockRef("other", 2), wait=100, derived=True)
    (root,) = nest([mmap_lock, wait_lock], Counter())
    assert root is mmap_lock and root.children == []


def test_runqueue_lock_waits_are_left_to_the_simulators_scheduler(tmp_path):
    b = TraceBuilder()
    t = b.thread(7)
    with t.syscall("munmap"), t.mmap_lock("write"):
        with t.lock("runqueue_lock", 0xFFFF_8881_0000_0000, wait=300):
            t.run(100)
    w = reconstruct(Trace.open(b.write(tmp_path / "t")))
    assert w.lock_classes == {"mmap_lock"} and w.derived_classes == frozenset()
    assert any("runqueue_lock" in k for k in w.meta["notes"])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plans=st.lists(st.lists(st.tuples(st.integers(0, 800), st.integers(50, 2_000)), min_size=1, max_size=6),
                      min_size=2, max_size=4))
def test_handoff_holds_equal_the_true_holds_under_fifo_contention(tmp_path_factory, plans):
    from replay.workload.holds import derive_holds
    from replay.workload.intervals import load

    b = TraceBuilder(cpus=4)
    threads = [b.thread(100 + i) for i in range(len(plans))]
    todo = {t.tid: list(plan) for t, plan in zip(threads, plans, strict=True)}
    for t in threads:
        t.run(todo[t.tid][0][0])
    while any(todo.values()):  # acquire in arrival order so the builder's FIFO waits are consistent
        t = min((t for t in threads if todo[t.tid]), key=lambda t: (t.now, t.tid))
        _, hold = todo[t.tid].pop(0)
        with t.lock("i_mmap_rwsem", FILE_A, wait=None):
            t.run(hold)
        if todo[t.tid]:
            t.run(todo[t.tid][0][0])
    rec = load(Trace.open(b.write(tmp_path_factory.mktemp("t") / "t")))
    derive_holds(rec)
    truth = {(h.tid, h.start): h.hold for h in b.truth}
    for t in rec.threads.values():
        for iv in t.intervals:
            if iv.evidence == "hand-off":
                assert iv.end - iv.body_start == truth[(t.tid, iv.start)]


def test_a_write_hold_that_goes_on_for_read_at_the_same_instant_is_one_downgraded_section(tmp_path):
    """munmap: mmap_lock write, then mmap_write_downgrade, then read until the release. The recorder
    ends the write hold and starts a read hold (wait 0) at the same ns; reconstruction makes them one
    Critical with a downgrade section, and the layout still gives both holds as recorded."""
    b = TraceBuilder()
    t = b.thread(7)
    with t.syscall("munmap"):
        t.run(200)
        with t.mmap_lock("write", wait=300):
            t.run(1_000)
        with t.mmap_lock("read"):
            t.run(4_000)
        t.run(100)
        with t.mmap_lock("read"):  # a later, separate read acquisition is not part of it
            t.run(500)
    path = b.write(tmp_path / "t")
    w = reconstruct(Trace.open(path))
    (span,) = w.threads[0].ops
    crits = [op for op in span.body if isinstance(op, Critical)]
    assert len(crits) == 2
    down = crits[0].downgrade
    assert (crits[0].mode, crits[0].hold_ns, down.mode, down.hold_ns, down.recorded_wait_ns) == \
        ("write", 1_000, "read", 4_000, 0)
    assert crits[1].downgrade is None and crits[1].mode == "read"
    rec = recorded_intervals(Trace.open(path))
    assert placed_intervals(w) == [(tid, k, s, None if k == "span:fault" else e, acq) for tid, k, s, e, acq in rec]


def test_time_preempted_inside_a_gather_is_not_gather_work(tmp_path):
    """A munmap frees 100 pages in two bursts of 50 (20 ns a page, 1 ns per flush) and is preempted
    for 50 µs between them: the gather costs its 2 001 ns on CPU, not the 52 µs window (the
    simulator preempts the gather itself where the gather policy allows; counted as non-preemptible
    work, the window made a 2.6.39 per-CPU gather a 50 µs preempt-off section)."""
    b = TraceBuilder()
    t = b.thread(1)
    with t.syscall("munmap"):
        t.gather(pages=50)
        t.preempted(50_000)
        t.gather(pages=50)
    w = reconstruct(Trace.open(b.write(tmp_path / "t")))
    gathers = [op for op in walk(w.threads[0].ops) if isinstance(op, Gather)]
    assert [(g.pages, g.recorded_ns) for g in gathers] == [(100, 2_001)]
    assert w.meta["notes"]["off-CPU ns inside gathers left out of their cost"] == 50_000
