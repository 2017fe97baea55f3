"""A woken lock sleeper runs after the recorded waker -> activation delay, then the wake-up latency.

The engine's wake-up of a lock sleeper starts at the release (the kernel's try_to_wake_up in the releaser,
``sched_waking``). ``--calibrate`` measured the wake-up latency from ``sched_wakeup`` to the switch-in only;
``sched_wakeup`` fires where the woken task is activated, which on a CPU that idles happens only after an IPI
has brought it out of idle: on a 0.5-s tlb_flush2_threads recording here 17 µs at the median (waker -> switch-in
21.6 µs, wakeup -> switch-in 2.3 µs), so every replayed lock sleep was short by it (issue #16 item 2,
docs/VALIDATION.md §e item 10). ``Costs.lock_wake_samples_ns`` keeps the recorded delays of woken lock sleepers
and both engines draw one per wake-up of a lock sleeper (granted, or woken to retry); the default (none) is
the engine as before.

A waiter that must sleep does not leave its CPU when it queues: the kernel's ``contention_begin`` fires right
before ``schedule()``, whose way to the switch (the recorder's program, newly-idle balancing) took 5.9/7.9/13.2 µs
(p10/p50/p90) on that recording, and 71 read waits were granted inside it, 3.1-6.6 µs in, without a switch. The
engine slept each waiter at once. ``Costs.lock_sleep_window_ns`` keeps it on its CPU, queued, that long; a
grant or a wake to retry inside it is taken there.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from replay.policies import resolve
from replay.sim import Costs, SimConfig, simulate
from replay.sim.ops import Block, Critical, LockRef, Span, Think, Thread, Workload
from tests.test_sim_calibrate import _trace
from tests.test_sim_engines import assert_identical, needs_c, run_both

MMAP = LockRef("mmap_lock", 0x100)
ENGINES = ["python", pytest.param("c", marks=needs_c)]


def _sleeper(mode: str) -> Workload:
    """A writer takes mmap_lock and sleeps 10 µs holding it (off its CPU: nobody spins on it); another thread
    asks for the lock in ``mode`` 500 ns after and sleeps until the release."""
    holder = Thread(10, 10, [Span("munmap", (Critical(MMAP, "write", 1_000, body=(Block(10_000),)),))], start_ns=0)
    waiter = Thread(11, 10, [Think(500), Span("mmap", (Critical(MMAP, mode, 100),))], start_ns=0)
    return Workload([holder, waiter], cpus=2)


def _waits(engine: str, mode: str, samples: tuple[int, ...]) -> list[tuple[int, bool]]:
    cfg = SimConfig(cpus=2, policy=resolve("current"), preempt="none", probe=False, engine=engine,
                    costs=replace(Costs.zero(), lock_wake_samples_ns=samples))
    t = simulate(_sleeper(mode), cfg).tables["sim_lock_waits"]
    return list(zip(t.column("dur").to_pylist(), t.column("slept").to_pylist(), strict=True))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("mode", ["read", "write"])  # a reader is granted by the release, a writer woken to retry
def test_a_woken_lock_sleeper_waits_the_recorded_wakers_delay(engine, mode):
    (base, slept), = _waits(engine, mode, ())
    assert slept
    assert _waits(engine, mode, (40_000,)) == [(base + 40_000, True)]


@needs_c
@pytest.mark.parametrize("seed", [0, 3])
def test_both_engines_draw_the_same_wake_delays(seed):
    cfg = SimConfig(cpus=2, policy=resolve("current"), preempt="none", probe=False, seed=seed,
                    costs=replace(Costs(), lock_wake_samples_ns=tuple(range(1_000, 30_000, 700))))
    assert_identical(*run_both(_sleeper("read"), cfg))


def test_calibrate_keeps_the_wakers_delay_of_woken_lock_sleepers(tmp_path):
    """Lock waits whose sleeper is woken (sched_waking in the waker) 17 µs or 2.5 µs before it is activated
    (sched_wakeup); a wake-up outside any lock wait (a timer) is not a lock sleeper's and is left out."""
    holds, wakes, switches = [], [], []
    t = 1_000_000
    for i in range(40):
        delay = 17_000 if i % 2 else 2_500
        holds.append(dict(ts=t + 60_000, dur=1_000, wait=60_000, tid=2, lock_addr=0x10, lock_class="mmap_lock",
                          mode="read"))
        wakes.append(dict(ts=t + 30_000, tid=2, kind="waking", target_cpu=1))
        wakes.append(dict(ts=t + 30_000 + delay, tid=2, kind="wakeup", target_cpu=1))
        switches.append(dict(ts=t + 32_000 + delay, next_tid=2))
        # a sleep outside any lock wait, woken 500 µs after its waker ran
        wakes.append(dict(ts=t + 100_000, tid=2, kind="waking", target_cpu=1))
        wakes.append(dict(ts=t + 600_000, tid=2, kind="wakeup", target_cpu=1))
        switches.append(dict(ts=t + 601_000, next_tid=2))
        t += 1_000_000
    from replay.sim.calibrate import calibrate

    cal = calibrate(_trace(tmp_path, {"lock_holds": holds, "sched_wakeup": wakes, "sched_switch": switches}))
    s = cal.costs.lock_wake_samples_ns
    assert len(s) == 40 and list(s) == sorted(s)  # the 40 delays' quantiles
    assert s[0] == 2_500 and s[-1] == 17_000
    assert abs(sum(s) / len(s) - 9_750) <= 100  # the recorded mean, not a median
    assert any("lock_wake_samples_ns: 40 woken lock sleepers" in n for n in cal.notes)


def test_without_wake_events_there_are_no_samples(tmp_path):
    holds = [dict(ts=10_000 * (i + 1), dur=1_000, wait=500, tid=2, lock_addr=0x10, lock_class="mmap_lock",
                  mode="read") for i in range(30)]
    cal = calibrate_of(tmp_path, {"lock_holds": holds})
    assert cal.costs.lock_wake_samples_ns == () == Costs().lock_wake_samples_ns
    assert any("lock_wake_samples_ns: none (no sched_wakeup" in n for n in cal.notes)


def calibrate_of(tmp_path, tables):
    from replay.sim.calibrate import calibrate

    return calibrate(_trace(tmp_path, tables))


# ---- a lock sleeper's way to sleep (Costs.lock_sleep_window_ns) ---------------------------------------


def _replay(engine: str, w: Workload, window: int):
    cfg = SimConfig(cpus=2, policy=resolve("current"), preempt="none", probe=False, engine=engine,
                    costs=replace(Costs.zero(), lock_sleep_window_ns=window))
    res = simulate(w, cfg)
    waits = res.tables["sim_lock_waits"]
    sched = res.tables["sim_sched"]
    lock_sleeps = sum(r == "sleep-lock" for r in sched.column("reason").to_pylist())
    return list(zip(waits.column("dur").to_pylist(), waits.column("slept").to_pylist(), strict=True)), lock_sleeps


def _running_writer(mode: str) -> Workload:
    """A writer holds mmap_lock 1 µs on its CPU; a reader (which never spins) asks 500 ns in."""
    holder = Thread(10, 10, [Span("munmap", (Critical(MMAP, "write", 1_000),))], start_ns=0)
    waiter = Thread(11, 10, [Think(500), Span("mmap", (Critical(MMAP, mode, 100),))], start_ns=0)
    return Workload([holder, waiter], cpus=2)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_reader_granted_on_its_way_to_sleep_never_leaves_its_cpu(engine):
    # 6.18 tlb_flush2_threads: 71 read waits went through the slowpath and were granted 3.1-6.6 µs after
    # contention_begin without a switch, where the engine slept every one of them
    assert _replay(engine, _running_writer("read"), 8_000) == ([(500, False)], 0)
    assert _replay(engine, _running_writer("read"), 0) == ([(500, True)], 1)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_sleeper_not_granted_within_the_window_sleeps_at_its_end(engine):
    # the holder sleeps 10 µs holding the lock: the reader's 2-µs way to sleep ends first
    waits, sleeps = _replay(engine, _sleeper("read"), 2_000)
    assert sleeps == 1 and waits[0][1] is True
    res = simulate(_sleeper("read"), SimConfig(cpus=2, policy=resolve("current"), preempt="none", probe=False,
                                               engine=engine, costs=replace(Costs.zero(), lock_sleep_window_ns=2_000)))
    out = [r for r in res.tables["sim_sched"].to_pylist() if r["reason"] == "sleep-lock"]
    assert [r["ts"] - res.tables["sim_lock_waits"].column("ts")[0].as_py() for r in out] == [2_000]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_writer_woken_to_retry_on_its_way_to_sleep_retries_on_its_cpu(engine):
    # the holder is off its CPU holding the lock (so the writer does not spin), back after 1 µs, releases
    # 1 µs later; the waiting writer is woken to retry (no hand-off yet) inside its 8-µs window
    holder = Thread(10, 10, [Span("munmap", (Critical(MMAP, "write", 1_000, body=(Block(1_000),)),))], start_ns=0)
    waiter = Thread(11, 10, [Think(500), Span("mmap", (Critical(MMAP, "write", 100),))], start_ns=0)
    w = Workload([holder, waiter], cpus=2)
    assert _replay(engine, w, 8_000) == ([(1_500, False)], 0)
    (wait, slept), = _replay(engine, w, 0)[0]
    assert slept and wait == 1_500  # Costs.zero(): the wake-up itself is free


@needs_c
@pytest.mark.parametrize("seed", [0, 3])
def test_both_engines_take_the_same_way_to_sleep(seed):
    for w in (_sleeper("read"), _sleeper("write"), _running_writer("read")):
        cfg = SimConfig(cpus=2, policy=resolve("current"), preempt="none", probe=False, seed=seed,
                        costs=replace(Costs(), lock_sleep_window_ns=3_000,
                                      lock_wake_samples_ns=tuple(range(1_000, 30_000, 700))))
        assert_identical(*run_both(w, cfg))


def test_calibrate_measures_the_way_to_sleep_from_contention_begin_to_the_switch_out(tmp_path):
    """Sleeping-lock waits whose task switched out asleep 6, 8 or 10 µs after contention_begin: the median,
    8 µs. A spinlock's wait with a switch in it, a wait that never left its CPU and a preemption (prev_state
    0) are not the way to sleep and are left out."""
    waits, switches = [], []
    t = 1_000_000
    for i in range(30):
        gap = (6_000, 8_000, 10_000)[i % 3]
        waits.append(dict(ts=t, dur=50_000, tid=2, flags=2, lock_class="mmap_lock"))
        switches.append(dict(ts=t + gap, prev_tid=2, prev_state=2, next_tid=0))
        waits.append(dict(ts=t + 100_000, dur=20_000, tid=3, flags=1, lock_class="page_table_lock"))  # a spinlock
        switches.append(dict(ts=t + 101_000, prev_tid=3, prev_state=2, next_tid=0))
        waits.append(dict(ts=t + 200_000, dur=5_000, tid=2, flags=2, lock_class="mmap_lock"))  # granted on its CPU
        waits.append(dict(ts=t + 300_000, dur=5_000, tid=4, flags=4, lock_class="mmap_lock"))
        switches.append(dict(ts=t + 301_000, prev_tid=4, prev_state=0, next_tid=0))  # preempted, not asleep
        t += 1_000_000
    cal = calibrate_of(tmp_path, {"lock_waits": waits, "sched_switch": switches})
    assert cal.costs.lock_sleep_window_ns == 8_000
    assert any("lock_sleep_window_ns = 8000: median over 30 lock waits" in n for n in cal.notes)
    assert Costs().lock_sleep_window_ns == 0
