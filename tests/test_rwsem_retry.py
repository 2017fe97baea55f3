"""A writer woken to retry an rwsem that finds it taken again goes back to sleep; it does not spin.

Today's rwsem (kernel/locking/rwsem.c, 5.11 to 6.18) spins optimistically once, in
``rwsem_down_write_slowpath`` before the writer queues (``rwsem_optimistic_spin``); the wait loop after it
only retries the lock (``rwsem_try_write_lock``) and calls ``schedule()`` again when that fails. Only a
first waiter that has set the hand-off bit (it has waited ``RWSEM_WAIT_TIMEOUT``) spins, on a running
writer owner (``rwsem_spin_on_owner``). The engines let a woken writer that lost the race spin on a running
writer owner like a new arrival: on a fresh mmap1_threads recording (2026-12-07 18:29 UTC) the kernel's
160 sleeping writer waits slept 507 times (a woken writer lost the lock to the other thread, which ran all
along, and slept again: 3.2 sleeps a wait), the replay's once each (docs/VALIDATION.md §e item 11).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from replay.policies import resolve
from replay.sim import Costs, SimConfig, simulate
from replay.sim.ops import Block, Critical, LockRef, Span, Think, Thread, Workload
from tests.test_sim_engines import assert_identical, needs_c, run_both

MMAP = LockRef("mmap_lock", 0x100)
ENGINES = ["python", pytest.param("c", marks=needs_c)]


def _steal(block_ns: int, steal_hold_ns: int = 20_000) -> Workload:
    """Writer 10 takes mmap_lock and sleeps ``block_ns`` holding it, so writer 11, asking 500 ns later, sleeps
    (its owner is off its CPU). At 10's release 11 is woken to retry; writer 12, running all along, takes the
    free lock 1 µs after the release, before 11 runs (5 µs wake-up), and holds it ``steal_hold_ns`` on its CPU."""
    holder = Thread(10, 10, [Span("munmap", (Critical(MMAP, "write", 1_000, body=(Block(block_ns),)),))],
                    start_ns=0)
    waiter = Thread(11, 10, [Think(500), Span("mmap", (Critical(MMAP, "write", 100),))], start_ns=0)
    release = block_ns + 6_000  # the holder's wake-up (5 µs) and its 1-µs hold after the block
    thief = Thread(12, 10, [Think(release + 1_000), Span("mmap", (Critical(MMAP, "write", steal_hold_ns),))],
                   start_ns=0)
    return Workload([holder, waiter, thief], cpus=3)


def _cfg(engine: str, handoff: int = 4_000_000, window: int = 0, **kw) -> SimConfig:
    return SimConfig(cpus=3, policy=resolve("current"), preempt="none", probe=False, engine=engine,
                     costs=replace(Costs.zero(), wakeup_ns=5_000, rwsem_handoff_after_ns=handoff,
                                   lock_sleep_window_ns=window), **kw)


def _waiter(res) -> tuple[int, int, int]:
    """Thread 11's lock sleeps (switch-outs), its wait and when it got the lock."""
    s = res.tables["sim_sched"]
    sleeps = sum(p == 11 and str(r) == "sleep-lock"
                 for p, r in zip(s.column("prev_tid").to_pylist(), s.column("reason").to_pylist(), strict=True))
    h = res.tables["sim_lock_holds"]
    (wait, ts), = [(w, t) for tid, w, t in zip(h.column("tid").to_pylist(), h.column("wait").to_pylist(),
                                               h.column("ts").to_pylist(), strict=True) if tid == 11]
    return sleeps, wait, ts


@pytest.mark.parametrize("engine", ENGINES)
def test_a_woken_writer_that_finds_the_lock_taken_sleeps_again(engine):
    res = simulate(_steal(10_000), _cfg(engine))
    # released at 16 µs, 11 runs at 21 µs, 12 holds it 17-37 µs: 11 sleeps again, is woken at 37 µs and runs
    # at 42 µs (on the code before: it spun 21-37 µs and got the lock at 37 µs, one sleep)
    assert _waiter(res) == (2, 41_500, 42_000)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_writer_that_waited_for_the_handoff_spins_on_a_running_writer(engine):
    # hand-off after 100 µs: 11 has waited 97.5 µs at the release (woken to retry, not handed the lock) and
    # 102.5 µs when it runs and finds 12 holding it: handoff_set, it spins on 12 and takes the lock at 12's
    # release (119 µs) without sleeping again
    res = simulate(_steal(92_000), _cfg(engine, handoff=100_000))
    assert _waiter(res) == (1, 118_500, 119_000)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_woken_writer_that_lost_goes_back_to_sleep_without_the_way_to_sleep(engine):
    """The way to sleep (``lock_sleep_window_ns``, 12 µs here) is a new wait's: ``contention_begin`` and the
    recorder's program, then ``schedule()``. A woken writer that loses its retry has neither and sleeps at
    once; a wake during its short way back does not keep it on its CPU (on the fresh mmap1_threads recording
    196 of 350 such re-sleeps were woken between their switch-in and switch-out and slept all the same)."""
    res = simulate(_steal(10_000, steal_hold_ns=8_000), _cfg(engine, window=12_000))
    # 11 asks at 0.5 µs, its way to sleep ends at 12.5 µs (the release is at 16 µs): it sleeps; woken at 16 µs,
    # it runs at 21 µs and finds 12 holding the lock (17-25 µs): it sleeps at once, is woken at 25 µs and runs
    # at 30 µs (on the code before: it stayed on its CPU 21-33 µs and retried there at 12's release, 25 µs)
    assert _waiter(res) == (2, 29_500, 30_000)


def _behind_a_reader() -> Workload:
    """Reader 10 holds mmap_lock 201 µs, 200 of them off its CPU; writer 11 asks at 0.5 µs, spins on the reader
    10.5 µs (rwsem_rspin_threshold) and sleeps; writer 12, running, asks 1 µs after the reader's release."""
    reader = Thread(10, 10, [Span("mmap", (Critical(MMAP, "read", 1_000, body=(Block(200_000),)),))], start_ns=0)
    waiter = Thread(11, 10, [Think(500), Span("munmap", (Critical(MMAP, "write", 100),))], start_ns=0)
    thief = Thread(12, 10, [Think(207_000), Span("mmap", (Critical(MMAP, "write", 20_000),))], start_ns=0)
    return Workload([reader, waiter, thief], cpus=3)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_writer_asleep_past_the_handoff_time_is_woken_not_handed_the_lock(engine):
    """RWSEM_FLAG_HANDOFF is set by the waiting writer itself, in the trylock of its wait loop, once it has
    waited RWSEM_WAIT_TIMEOUT: a writer asleep since it queued (behind a reader, which wakes nobody before its
    release) has not set it, so the release wakes it and a running writer may take the lock first; the woken
    writer, finding it taken, sets the flag (it spins on the running owner) and gets the lock at the next
    release. On a page_fault1_threads recording the other thread's mmap took the lock 15 µs after such a
    release and the writer, asleep 10 ms behind a munmap's read part, 1.1 ms later; the engines handed it the
    lock at the release and the mmap waited 16.7 ms behind its munmap (docs/VALIDATION.md §e item 11)."""
    res = simulate(_behind_a_reader(), _cfg(engine, handoff=100_000))
    h = res.tables["sim_lock_holds"]
    got = {t: (ts, w) for t, ts, w in zip(h.column("tid").to_pylist(), h.column("ts").to_pylist(),
                                         h.column("wait").to_pylist(), strict=True)}
    # released at 206 µs; 12 takes the lock at 207 µs without waiting; 11 runs at 211 µs, spins on 12 and takes
    # the lock at 12's release, 227 µs (on the code before: 11 was handed the lock at 206 µs and ran at 211 µs,
    # 12 waited behind it)
    assert got[12] == (207_000, 0)
    assert got[11] == (227_000, 226_500)


@needs_c
@pytest.mark.parametrize("case", ["steal", "steal-handoff", "reader"])
def test_both_engines_retry_alike(case):
    w, handoff = {"steal": (_steal(10_000), 4_000_000), "steal-handoff": (_steal(92_000), 100_000),
                  "reader": (_behind_a_reader(), 100_000)}[case]
    assert_identical(*run_both(w, _cfg("python", handoff, seed=1)))
