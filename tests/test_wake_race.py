"""The woken writer's race: a lock sleeper woken after a long sleep comes back as slowly as the recorded ones did.

page_fault1_threads (2 threads: fault 128 MiB in, munmap it) on this 2-vCPU guest: thread A's munmap asks for
mmap_lock's write lock during thread B's munmap read part (the 16-ms zap) and sleeps; B's ``up_read`` wakes A
(``rwsem_wake`` -> ``rwsem_mark_wake``: a writer at the head is woken, not handed the lock) and B, still on its
CPU, returns to user and asks for the write lock again 15-24 µs later for its next mmap. The lock word is free
and carries no hand-off bit (A sets ``RWSEM_FLAG_HANDOFF`` itself, in the ``rwsem_try_write_lock`` of its wait
loop, once it runs), so B's slowpath trylock takes it; A, back on a CPU, retries, finds it taken, sets the
bit and spins on B. In the recordings A never came first (0 of 4, 0 of 14, 0 of 75 races): woken onto the
other vCPU, idle since A slept (ms), it ran 26.5/33.0/38.0 µs (p10/p50/p90) after the waking, against
10.5-39 µs for sleepers woken after a short sleep -- a vCPU halted longer than the host's halt-polling window
is scheduled out on the host and slow to come back. The engines drew A's delay from the wake-up latency of
all wake-ups plus the waker -> activation delay of all lock sleepers, and let A win 17-28 % of the races, which
put B's mmap (recorded p99 65.6 µs) behind A's whole munmap (16 ms; docs/VALIDATION.md §e items 12 and 13).
``Costs.lock_wake_long_samples_ns`` keeps the recorded release -> switch-in delays of lock sleepers woken
after ``lock_wake_long_after_ns`` off their CPU; both engines draw one, whole, for such a sleeper.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from replay.policies import resolve
from replay.sim import Costs, SimConfig, simulate
from replay.sim.ops import Critical, LockRef, Span, Think, Thread, Workload
from tests.test_sim_calibrate import _trace
from tests.test_sim_engines import assert_identical, needs_c, run_both

MMAP = LockRef("mmap_lock", 0x100)
ENGINES = ["python", pytest.param("c", marks=needs_c)]
#: the calibrated figures of the quiet page_fault1_threads recording of 21:48 UTC (/tmp/fid-rec): the wake-up
#: latency, and the waker -> activation delays of its 40 lock sleepers (a spread like theirs: 1.0-39 µs)
PF1 = replace(Costs(), wakeup_ns=1_852, wake_jitter_ns=9_711, lock_wake_samples_ns=tuple(range(1_000, 39_000, 950)))
#: its 8 lock sleepers woken after a long sleep, release -> switch-in
PF1_LONG = (29_600, 30_100, 32_800, 38_200, 40_800, 43_100, 44_000, 45_400)


def _race(way_back_ns: int = 20_000) -> Workload:
    """B (10) holds mmap_lock for read 500 µs on its CPU (its munmap's zap); A (11) asks for the write lock 1 µs
    in, spins on the readers for a while and sleeps. B's release wakes A; B asks for the write lock again
    ``way_back_ns`` later (its next mmap) and holds it 10 µs."""
    b = Thread(10, 10, [Span("munmap", (Critical(MMAP, "read", 500_000),)), Think(way_back_ns),
                        Span("mmap", (Critical(MMAP, "write", 10_000),))], start_ns=0)
    a = Thread(11, 10, [Think(1_000), Span("munmap", (Critical(MMAP, "write", 2_000_000),))], start_ns=0)
    return Workload([b, a], cpus=2)


def _b_waited(engine: str, costs: Costs, seed: int) -> int:
    """How long B's mmap waited for the write lock (0: it took it at once)."""
    cfg = SimConfig(cpus=2, policy=resolve("current"), preempt="none", probe=False, engine=engine, seed=seed,
                    costs=costs)
    t = simulate(_race(), cfg).tables["sim_lock_holds"]
    (w,), = [[w] for tid, mode, w in zip(t.column("tid").to_pylist(), t.column("mode").to_pylist(),
                                         t.column("wait").to_pylist(), strict=True) if tid == 10 and mode == "write"]
    return w


@pytest.mark.parametrize("engine", ENGINES)
def test_the_waker_still_on_its_cpu_takes_the_lock_first_as_the_kernels_did(engine):
    """With the recorded long-sleep delays (29.6-45.4 µs after the release) B, back at the lock 20 µs after its
    release, wins in every seed; A retries after B's 10-µs mmap and takes the lock then."""
    costs = replace(PF1, lock_wake_long_samples_ns=PF1_LONG)
    assert [_b_waited(engine, costs, seed) for seed in range(20)] == [0] * 20


@pytest.mark.parametrize("engine", ENGINES)
def test_without_them_the_woken_writer_wins_some_races(engine):
    """The draw before (the wake-up latency of all wake-ups plus one waker -> activation delay of all lock
    sleepers) lets A come first in some seeds, and B's mmap then waits out A's 2-ms munmap."""
    waits = [_b_waited(engine, PF1, seed) for seed in range(20)]
    assert any(w > 1_900_000 for w in waits) and 0 in waits


@pytest.mark.parametrize("engine", ENGINES)
def test_a_short_sleep_keeps_the_old_draw(engine):
    """A sleeper off its CPU less than lock_wake_long_after_ns draws as before (its CPU idled briefly)."""
    for seed in range(5):
        assert _b_waited(engine, replace(PF1, lock_wake_long_samples_ns=PF1_LONG, lock_wake_long_after_ns=10**9),
                         seed) == _b_waited(engine, PF1, seed)


@needs_c
@pytest.mark.parametrize("seed", [0, 5])
def test_both_engines_draw_the_same_long_sleep_delays(seed):
    cfg = SimConfig(cpus=2, policy=resolve("current"), preempt="none", probe=False, seed=seed,
                    costs=replace(PF1, lock_wake_long_samples_ns=PF1_LONG, lock_wake_long_after_ns=100_000))
    assert_identical(*run_both(_race(), cfg))


def test_calibrate_keeps_the_release_to_switch_in_delays_of_long_sleepers(tmp_path):
    """Writer 2 sleeps in its mmap_lock wait, 5 ms or 50 µs, and is woken (sched_waking on CPU 0, in task 3)
    3 µs after task 3's mmap_lock release (tracer tail 0 here): a long sleeper switched in on CPU 1 34 µs after
    the waking (37 µs after the release) is kept; a short one (50 µs off its CPU), and one switched in on the
    waker's CPU, are not."""
    from replay.sim.calibrate import calibrate

    holds, wakes, switches = [], [], []
    t = 10_000_000
    for i in range(12):
        asleep = 5_000_000 if i % 2 == 0 else 50_000
        cpu = 0 if i == 4 else 1  # one long sleeper comes back on the waker's CPU
        switches.append(dict(ts=t - asleep, cpu=1, prev_tid=2, prev_state=2, next_tid=0))
        holds.append(dict(ts=t - 10_000_000, dur=10_000_000 - 3_000, wait=100, tid=3, lock_addr=0x10,
                          lock_class="mmap_lock", mode="read", cpu=0))
        wakes.append(dict(ts=t, tid=2, kind="waking", cpu=0, target_cpu=1, waker_tid=3))
        wakes.append(dict(ts=t + 20_000, tid=2, kind="wakeup", cpu=cpu, target_cpu=cpu, waker_tid=3))
        switches.append(dict(ts=t + 34_000, cpu=cpu, prev_tid=0, prev_state=0, next_tid=2))
        holds.append(dict(ts=t + 36_000, dur=1_000, wait=36_000 + asleep, tid=2, lock_addr=0x10,
                          lock_class="mmap_lock", mode="write", cpu=cpu))
        t += 20_000_000
    cal = calibrate(_trace(tmp_path, {"lock_holds": holds, "sched_wakeup": wakes, "sched_switch": switches}))
    assert cal.costs.lock_wake_long_samples_ns == (37_000,) * 5
    assert any("lock_wake_long_samples_ns: 5 lock sleepers" in n for n in cal.notes)
    assert Costs().lock_wake_long_samples_ns == ()


def test_too_few_long_sleepers_give_no_samples(tmp_path):
    from replay.sim.calibrate import calibrate

    holds = [dict(ts=10_000 * (i + 1), dur=1_000, wait=500, tid=2, lock_addr=0x10, lock_class="mmap_lock",
                  mode="read") for i in range(30)]
    cal = calibrate(_trace(tmp_path, {"lock_holds": holds}))
    assert cal.costs.lock_wake_long_samples_ns == ()
    assert any("lock_wake_long_samples_ns: none" in n for n in cal.notes)
