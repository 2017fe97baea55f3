"""Reconstruction of fork-exit churn as Linux 6.16+ records it (issue #16, fidelity misses).

* exit_group never returns; the recorder closes it at sched_process_exit, which 6.16+ fires
  *before* exit_mm. The exit's mm teardown (exit_mmap's mmap_lock holds, its full-mm gather)
  still belongs to the exit span: both reconstruction paths stretch the span over it.
* The copy-on-write faults before the exit flush one page each (ptep_clear_flush): those
  flushes are the faults', never a gather's.
* A dead child's mm_struct address is handed to the next fork: each life of the address is
  its own lock, so a replay cannot make a fork wait for a previous owner's exit.
"""

from __future__ import annotations

import importlib

import pytest

from replay.sim.ops import Critical, Gather, Span, children
from replay.trace.reader import Trace
from replay.workload.intervals import FAULT_FREES, INCARNATION_SHIFT, lock_holds_table, syscall_table
from tests.tracebuilder import TraceBuilder, mm_addr

recon = importlib.import_module("replay.workload.reconstruct")
PATHS = ("columnar", "reference")
EXIT_ZOMBIE = 32
RECYCLED = 0xFFFF_8880_7777_0040  # one mm_struct address the slab gives child after child


def cow_then_exit(b: TraceBuilder, tid: int, *, cpu: int, pages: int = 64, faults: int = 8) -> int:
    """A forked child: ``faults`` COW faults (per-VMA lock) each flushing its page, then _exit
    recorded as 6.16+ does (span closed before exit_mm), the teardown, the final switch-out.
    Returns the end of the teardown."""
    c = b.thread(tid, comm="fork-exit", cpu=cpu)
    for i in range(faults):
        with c.fault(0x7000_0000 + i * 4096, vma_lock=True):
            c.run(300)
            b._rows.add("tlb_flushes", dict(ts=c.now, cpu=c.cpu, pid=c.pid, tid=c.tid,
                                            reason="TLB_LOCAL_MM_SHOOTDOWN", pages=1))
        c.run(200)
    with c.syscall("exit_group"):
        c.run(2_000)  # exit_signals .. sched_process_exit
    with c.lock("mmap_lock", RECYCLED, "read"):  # exit_mmap: unmap_vmas under the read lock
        c.gather(pages=pages, flushes=1, fullmm=True)
    with c.lock("mmap_lock", RECYCLED, "write"):  # free_pgtables
        c.run(3_000)
    end = c.now
    c.run(500)
    b._rows.add("sched_switch", dict(ts=c.now, cpu=c.cpu, prev_tid=c.tid, prev_prio=120, prev_state=EXIT_ZOMBIE,
                                     next_tid=0, next_prio=120))
    return end


def walk(ops, parent=None):
    for op in ops:
        yield op, parent
        yield from walk(children(op), op if isinstance(op, Span) else parent)


@pytest.mark.parametrize("path", PATHS)
def test_the_exit_span_covers_the_teardown_and_cow_flushes_stay_out_of_gathers(tmp_path, monkeypatch, path):
    b = TraceBuilder(cpus=2)
    end = cow_then_exit(b, 500, cpu=0)
    trace = Trace.open(b.write(tmp_path / "t"))
    sc = syscall_table(trace)
    start = sc["ts"][0]
    assert sc["dur"].to_list() == [end - start]  # to the write hold's release, not sched_process_exit

    monkeypatch.setenv(recon.PATH_ENV, path)
    w = recon.reconstruct(trace)
    (t,) = w.threads
    gathers = [(op, parent) for op, parent in walk(t.ops) if isinstance(op, Gather)]
    assert len(gathers) == 1
    g, parent = gathers[0]
    assert parent is not None and parent.kind == "exit" and parent.recorded_ns == end - start
    assert g.fullmm and g.pages == 64
    assert g.recorded_flushes == 1  # the gather's own, not the 8 COW faults' single-page flushes
    assert g.recorded_ns == 64 * 20  # the burst, not the faults before it


def test_an_exit_on_a_kernel_that_traces_it_after_exit_mm_is_unchanged(tmp_path):
    b = TraceBuilder(cpus=2)
    c = b.thread(600, cpu=0)
    with c.syscall("exit_group"), c.mmap_lock("write"):
        c.gather(pages=16, fullmm=True)
    c.run(100)
    b._rows.add("sched_switch", dict(ts=c.now, cpu=0, prev_tid=600, prev_prio=120, prev_state=EXIT_ZOMBIE,
                                     next_tid=0, next_prio=120))
    trace = Trace.open(b.write(tmp_path / "t"))
    assert syscall_table(trace)["dur"].to_list() == trace.read("syscalls")["dur"].to_list()


def forks_on_one_recycled_address(b: TraceBuilder) -> None:
    """Parent 100 forks three children in turn; each new mm lands at RECYCLED (dup_mmap takes it
    nested under the parent's own), each child exits before the next fork."""
    p = b.thread(100, comm="parent", cpu=1)
    at = b.start_ns
    for k in range(3):
        p.now = max(p.now, at)
        with p.mmap_lock("write"), p.lock("mmap_lock", RECYCLED, "write"):  # dup_mmap
            p.run(20_000)
        child = b.thread(200 + k, comm="fork-exit", cpu=0, start_ns=p.now + 1_000)
        with child.syscall("exit_group"):
            child.run(1_000)
        with child.lock("mmap_lock", RECYCLED, "read"):
            child.gather(pages=32, fullmm=True)
        with child.lock("mmap_lock", RECYCLED, "write"):
            child.run(2_000)
        child.run(100)
        b._rows.add("sched_switch", dict(ts=child.now, cpu=0, prev_tid=child.tid, prev_prio=120,
                                         prev_state=EXIT_ZOMBIE, next_tid=0, next_prio=120))
        at = child.now + 500


def test_each_life_of_a_recycled_mm_is_its_own_lock(tmp_path):
    b = TraceBuilder(cpus=2)
    forks_on_one_recycled_address(b)
    trace = Trace.open(b.write(tmp_path / "t"))
    h = lock_holds_table(trace, ["tid", "ts", "lock_addr"])
    ids = {tid: set(h.filter(h["tid"] == tid)["lock_addr"].to_list()) for tid in (200, 201, 202)}
    lives = [ids[200], ids[201], ids[202]]
    assert all(len(s) == 1 for s in lives)
    assert lives[0] == {RECYCLED}
    assert lives[1] == {RECYCLED ^ (1 << INCARNATION_SHIFT)} and lives[2] == {RECYCLED ^ (2 << INCARNATION_SHIFT)}
    parent = set(h.filter(h["tid"] == 100)["lock_addr"].to_list())
    assert parent == {0xFFFF_8880_1000_0000 + 100 * 0x1000} | lives[0] | lives[1] | lives[2]  # its own + each dup_mmap


def test_a_process_taking_a_live_mm_now_and_then_does_not_split_it(tmp_path):
    """A /proc reader's one acquisition of another process's mm, between the owner's holds."""
    b = TraceBuilder(cpus=2)
    owner, reader = b.thread(100, cpu=0), b.thread(900, cpu=1)
    for _ in range(3):
        with owner.mmap_lock("write"):
            owner.run(1_000)
        owner.run(5_000)
    reader.now = b.start_ns + 3_000
    with reader.lock("mmap_lock", 0xFFFF_8880_1000_0000 + 100 * 0x1000, "read"):
        reader.run(500)
    with reader.mmap_lock("read"):
        reader.run(500)
    trace = Trace.open(b.write(tmp_path / "t"))
    h = lock_holds_table(trace, ["tid", "lock_addr"])
    assert h["lock_addr"].to_list() == trace.read("lock_holds").sort("tid", "ts", "seq")["lock_addr"].to_list()


@pytest.mark.parametrize("path", PATHS)
def test_both_paths_give_each_fork_the_lock_of_the_child_it_creates(tmp_path, monkeypatch, path):
    b = TraceBuilder(cpus=2)
    forks_on_one_recycled_address(b)
    monkeypatch.setenv(recon.PATH_ENV, path)
    w = recon.reconstruct(Trace.open(b.write(tmp_path / "t")))
    by_tid = {t.tid: [op.lock.addr for op, _ in walk(t.ops) if isinstance(op, Critical)] for t in w.threads}
    nested = [a for a in by_tid[100] if a != 0xFFFF_8880_1000_0000 + 100 * 0x1000]
    assert nested == [set(by_tid[200 + k]).pop() for k in range(3)]
    assert len(set(nested)) == 3


@pytest.mark.parametrize("path", PATHS)
def test_a_full_lru_batch_freed_in_a_fault_is_not_a_gather(tmp_path, monkeypatch, path):
    """tlb_flush2: the write fault's folio_add_lru drains a full LRU batch, freeing the pages that
    earlier madvise(DONTNEED)s unmapped (30 at a time), with no system call around it. An exec's
    teardown (no traced system call either, no fault just before) stays a gather."""
    b = TraceBuilder(cpus=2)
    t = b.thread(700, cpu=0)
    with t.fault(0x7000_0000, vma_lock=True):
        t.run(1_500)
        b._rows.add("page_free_batches", dict(ts=t.now, dur=4_000, cpu=0, pid=700, tid=700, pages=30,
                                              batched=True, incomplete=False))
        t.run(4_000)
    t.run(200_000)
    t.gather(pages=500, flushes=1)  # the old mm's teardown in execve
    monkeypatch.setenv(recon.PATH_ENV, path)
    w = recon.reconstruct(Trace.open(b.write(tmp_path / "t")))
    gathers = [op for th in w.threads for op, _ in walk(th.ops) if isinstance(op, Gather)]
    assert [g.pages for g in gathers] == [500]
    assert w.meta["notes"][FAULT_FREES] == 1  # said, not silently dropped


@pytest.mark.parametrize("path", PATHS)
def test_an_exiting_task_leaving_its_mm_is_its_exit_gathers_flush(tmp_path, monkeypatch, path):
    """x86: the exiting CPU is lazy on the mm, so exit_mmap's flush switches it to init_mm
    (TLB_FLUSH_ON_TASK_SWITCH) instead of flushing; that is the gather's one flush. The same event
    right after the task's own context switch is the switch's, not the gather's."""
    b = TraceBuilder(cpus=2)
    for tid, preempted in ((800, False), (801, True)):
        c = b.thread(tid, cpu=tid - 800)
        with c.syscall("exit_group"):
            c.run(1_000)
        if preempted:
            c.preempted(5_000)
        b._rows.add("tlb_flushes", dict(ts=c.now + 1, cpu=c.cpu, pid=c.pid, tid=c.tid,
                                        reason="TLB_FLUSH_ON_TASK_SWITCH", pages=0))
        c.run(100)
        with c.lock("mmap_lock", mm_addr(tid), "read"):
            b._rows.add("page_free_batches", dict(ts=c.now, dur=2_000, cpu=c.cpu, pid=c.pid, tid=c.tid, pages=100,
                                                  batched=True, incomplete=False))
            c.run(2_000)
        c.run(100)
        b._rows.add("sched_switch", dict(ts=c.now, cpu=c.cpu, prev_tid=c.tid, prev_prio=120,
                                         prev_state=EXIT_ZOMBIE, next_tid=0, next_prio=120))
    monkeypatch.setenv(recon.PATH_ENV, path)
    w = recon.reconstruct(Trace.open(b.write(tmp_path / "t")))
    flushes = {th.tid: [op.recorded_flushes for op, _ in walk(th.ops) if isinstance(op, Gather)] for th in w.threads}
    assert flushes == {800: [1], 801: [0]}
