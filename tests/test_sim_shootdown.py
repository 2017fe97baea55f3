"""Which CPUs a TLB flush interrupts, and what exit_mmap's flush costs (issue #16, VALIDATION §e).

As x86 arch/x86/mm/tlb.c (6.1 and 6.18): flush_tlb_mm_range IPIs the CPUs of mm_cpumask that are not
lazy and have the mm loaded (should_flush_tlb; 6.1's tlb_is_not_lazy with a cpumask cleared on a
switch) -- a CPU running a thread of the mm, in the kernel or in user work. A flush that freed page
tables goes to the lazy CPUs too (native_flush_tlb_multi: on_each_cpu_mask when freed_tables). An idle
CPU stays lazy on the mm it last ran. In open replay a thread waiting on its CPU for its next recorded
start is not known to be running the mm (the recorded task was off CPU or idle part of that gap): it gets
no IPI. exit_mm makes the exiting CPU lazy, so exit_mmap's first flush switches to init_mm (a CR3 write,
no flush: Costs.lazy_leave_ns) and the later ones do nothing on that CPU and are not traced.

Each workload is small enough that the target set is known by hand; both engines must agree.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from replay.policies import resolve
from replay.sim import Costs, SimConfig, simulate
from replay.sim.ops import Block, Gather, Span, Think, Thread, Workload

ENGINES = ("python", "c")
COSTS = replace(Costs(), wake_jitter_ns=0)


def run(w: Workload, engine: str, mode: str = "closed", costs: Costs = COSTS):
    cfg = SimConfig(cpus=w.cpus, policy=resolve("current"), mode=mode, probe=False, costs=costs, engine=engine)
    return simulate(w, cfg)


def munmap(at: int | None, pages: int = 4, pt_pages: int = 0) -> Span:
    return Span("munmap", (Gather(pages=pages, pt_pages=pt_pages, mm=1),), at_ns=at)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_thread_in_user_work_of_the_mm_is_interrupted(engine: str) -> None:
    """B runs user work (Think) of the same mm while A flushes: one IPI, B's work stretched."""
    w = Workload([Thread(tid=1, pid=1, mm=1, ops=[Think(10_000), munmap(None)]),
                  Thread(tid=2, pid=1, mm=1, ops=[Think(100_000)])], cpus=2)
    r = run(w, engine)
    assert r.metrics["tlb_flushes"] == 1
    assert r.metrics["ipis"] == 1


@pytest.mark.parametrize("engine", ENGINES)
def test_another_mm_is_not_interrupted(engine: str) -> None:
    w = Workload([Thread(tid=1, pid=1, mm=1, ops=[Think(10_000), munmap(None, pt_pages=1)]),
                  Thread(tid=2, pid=2, mm=2, ops=[Think(100_000)])], cpus=2)
    assert run(w, engine).metrics["ipis"] == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_a_thread_waiting_for_its_recorded_start_is_not_interrupted(engine: str) -> None:
    """Open replay of a contiguous workload: B ran 0-1 us and starts again at 100 us; between, it waits
    on its CPU for the recorded start. A flushes at 10 us: the kernel's CPU had B off CPU or idle for an
    unknown part of that gap, so no IPI (before the fix: one, with the 2 us shootdown on A's munmap)."""
    w = Workload([Thread(tid=1, pid=1, mm=1, ops=[Think(1_000, at_ns=0), munmap(10_000)]),
                  Thread(tid=2, pid=1, mm=1, ops=[Think(1_000, at_ns=0), Think(1_000, at_ns=100_000)])],
                 cpus=2, contiguous=True)
    r = run(w, engine, mode="open")
    assert r.metrics["tlb_flushes"] == 1
    assert r.metrics["ipis"] == 0
    ops = r.tables["sim_ops"].to_pydict()
    # the munmap's latency has no shootdown in it: its zap, flush and frees only
    assert max(ops["dur"]) < COSTS.shootdown_ns


@pytest.mark.parametrize("engine", ENGINES)
def test_a_waiting_thread_is_interrupted_when_page_tables_are_freed(engine: str) -> None:
    """The same, but the munmap frees a page-table page: native_flush_tlb_multi sends to the whole
    mm_cpumask, lazy CPUs included."""
    w = Workload([Thread(tid=1, pid=1, mm=1, ops=[Think(1_000, at_ns=0), munmap(10_000, pt_pages=1)]),
                  Thread(tid=2, pid=1, mm=1, ops=[Think(1_000, at_ns=0), Think(1_000, at_ns=100_000)])],
                 cpus=2, contiguous=True)
    assert run(w, engine, mode="open").metrics["ipis"] == 1


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("pt_pages", "ipis"), [(0, 0), (1, 1)])
def test_an_idle_cpu_lazy_on_the_mm_only_for_freed_tables(engine: str, pt_pages: int, ipis: int) -> None:
    """B ran on CPU 1 and sleeps (Block): CPU 1 idles lazy on the mm. A's flush skips it unless the
    munmap freed page tables (before the fix: never, an idle CPU was not a target)."""
    w = Workload([Thread(tid=1, pid=1, mm=1, ops=[Think(10_000), munmap(None, pt_pages=pt_pages)]),
                  Thread(tid=2, pid=1, mm=1, ops=[Think(1_000), Block(100_000)])], cpus=2)
    r = run(w, engine)
    assert r.metrics["ipis"] == ipis
    # a lazy CPU runs nothing to stretch: only A pays, the sender's wait for the ack
    assert r.metrics["tlb_flushes"] == 1


@pytest.mark.parametrize("engine", ENGINES)
def test_exit_flush_is_a_lazy_leave_once(engine: str) -> None:
    """An exit whose full-mm gather was split in two (a lock between its free bursts): one traced flush,
    the switch to init_mm, costing lazy_leave_ns and not full_flush_ns (before: two flushes, each
    charged full_flush_ns)."""
    exit_span = Span("exit", (Gather(pages=8, mm=1, fullmm=True), Gather(pages=8, pt_pages=2, mm=1, fullmm=True)))
    w = Workload([Thread(tid=1, pid=1, mm=1, ops=[Think(1_000), exit_span])], cpus=1)

    def exit_ns(costs: Costs) -> int:
        r = run(w, engine, costs=costs)
        assert r.metrics["tlb_flushes"] == 1
        assert r.metrics["ipis"] == 0
        ops = r.tables["sim_ops"].to_pydict()
        return ops["dur"][0]

    base = exit_ns(replace(COSTS, lazy_leave_ns=200, full_flush_ns=920))
    assert exit_ns(replace(COSTS, lazy_leave_ns=700, full_flush_ns=920)) == base + 500
    assert exit_ns(replace(COSTS, lazy_leave_ns=200, full_flush_ns=5_000)) == base


@pytest.mark.parametrize("engine", ENGINES)
def test_exit_flush_reaches_a_cpu_lazy_on_the_dying_mm(engine: str) -> None:
    """exit_mmap frees the page tables: its final flush IPIs a CPU idling lazy on the mm (here the CPU
    a sibling of the same mm last ran on) -- as native_flush_tlb_multi does with freed_tables."""
    exit_span = Span("exit", (Gather(pages=8, pt_pages=2, mm=1, fullmm=True),))
    w = Workload([Thread(tid=1, pid=1, mm=1, ops=[Think(10_000), exit_span]),
                  Thread(tid=2, pid=1, mm=1, ops=[Think(1_000)])], cpus=2)
    r = run(w, engine)
    assert r.metrics["tlb_flushes"] == 1
    assert r.metrics["ipis"] == 1
