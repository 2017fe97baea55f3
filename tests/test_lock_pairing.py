"""Pairing lock:contention_begin with contention_end (bpf/mmr_lc_pair.h, the code bpf/lock_contention.c runs).

tests/data/lock_pairing.c feeds one task's begin/end events on one lock through that very header, compiled
with gcc, as the BPF program keeps them in its map. The sequences are the kernel's (kernel/locking/, 6.1 and
6.18 alike; the header says where each comes from): a repeated begin folds into the open wait only where the
kernel emits one inside a wait. Any other repeated begin means the open wait's end was lost (the kernel
skipped it as BPF recursion): that wait is dropped and counted, never stretched over the waits that follow
(a CI run once saw a 2.4 s rcu_core spinlock "wait" made that way).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracer import BPF_DIR

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")

SRC = Path(__file__).parent / "data" / "lock_pairing.c"
SPIN, READ, WRITE, RT, PERCPU, MUTEX = 1, 2, 4, 8, 16, 32  # include/trace/events/lock.h LCB_F_*


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    exe = tmp_path_factory.mktemp("pairing") / "lock_pairing"
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", f"-I{BPF_DIR}", "-o", str(exe), str(SRC)], check=True)

    def run(events: list[int | None]) -> list[tuple]:
        """events: begin flags, or None for an end -> outcomes ("wait", first_event, flags, begins), ..."""
        text = "".join("e\n" if e is None else f"b {e}\n" for e in events)
        out = subprocess.run([str(exe)], input=text, capture_output=True, text=True, check=True).stdout
        return [(w[0], *map(int, w[1:])) for w in (line.split() for line in out.splitlines())]

    return run


E = None  # a contention_end


def mutex(spins: int) -> list[int | None]:
    """__mutex_lock_common: MUTEX|SPIN on entry; then MUTEX before sleeping, and per wake-up as first waiter
    MUTEX|SPIN, MUTEX again when that spin fails; the end. spins=0: the entry spin took the lock."""
    seq: list[int | None] = [MUTEX | SPIN]
    for _ in range(spins):
        seq += [MUTEX, MUTEX | SPIN]
    return [*seq, E]


def wait_lock_inside(first: int, inner: int) -> list[int | None]:
    """rt_mutex (RT) or semaphore (0): the wait_lock at the lock's own address contended after each sleep."""
    return [first, *[SPIN, E] * inner, E]


@pytest.mark.parametrize("seq, flags, begins", [
    (mutex(0), MUTEX | SPIN, 1),
    (mutex(1), MUTEX | SPIN, 3),
    (mutex(4), MUTEX | SPIN, 9),
    ([MUTEX | SPIN, MUTEX, E], MUTEX | SPIN, 2),  # the entry spin failed, woken with the lock handed off
    ([READ, E], READ, 1),  # rwsem
    ([WRITE, E], WRITE, 1),
    ([PERCPU | READ, E], PERCPU | READ, 1),
    ([PERCPU | WRITE, E], PERCPU | WRITE, 1),
    ([SPIN, E], SPIN, 1),  # qspinlock
    ([SPIN | READ, E], SPIN | READ, 1),  # qrwlock
    ([SPIN | WRITE, E], SPIN | WRITE, 1),
    (wait_lock_inside(RT, 0), RT, 1),
    (wait_lock_inside(RT, 3), RT, 4),
    (wait_lock_inside(RT | READ, 1), RT | READ, 2),  # rwbase_rt
    (wait_lock_inside(0, 0), 0, 1),  # semaphore
    (wait_lock_inside(0, 2), 0, 3),
])
def test_each_lock_types_own_sequence_is_one_wait_from_its_first_begin_to_its_end(pair, seq, flags, begins):
    assert pair(seq) == [("wait", 0, flags, begins)]


@pytest.mark.parametrize("first", [SPIN, SPIN | READ, SPIN | WRITE, READ, WRITE, PERCPU | READ, RT, 0])
def test_a_second_wait_on_the_same_lock_after_a_lost_end_starts_anew(pair, first):
    """The failing CI run: an interrupt's spinlock wait (rcu_core) lost its end; the next wait of the task on
    that lock folded into it, one wait of seconds instead of two short ones."""
    assert pair([first, first, E]) == [("stale", 0), ("wait", 1, first, 1)]


def test_a_mutex_wait_after_one_whose_end_was_lost_in_its_spin_starts_anew(pair):
    assert pair([MUTEX | SPIN, MUTEX | SPIN, E]) == [("stale", 0), ("wait", 1, MUTEX | SPIN, 1)]
    assert pair([MUTEX | SPIN, MUTEX, MUTEX, E]) == [("stale", 0), ("wait", 2, MUTEX, 1)]


def test_a_mutex_wait_after_one_whose_end_was_lost_while_asleep_cannot_be_told_from_its_next_spin(pair):
    """The one case the flags leave open: MUTEX then MUTEX|SPIN is the first waiter's spin after a wake-up,
    and also a new wait after a lost end. Mutex waits end in task context, where no program of ours runs
    to make the kernel skip the end as recursion: such an end is not lost. The known limit, shown."""
    assert pair([MUTEX | SPIN, MUTEX, MUTEX | SPIN, E]) == [("wait", 0, MUTEX | SPIN, 3)]


def test_a_spin_begin_on_a_lock_of_another_type_is_not_an_inner_wait_lock(pair):
    """Only rt_mutex_base and semaphore keep their wait_lock at the lock's address; a mutex's and an rwsem's
    sit further in, and a spin begin on their address means a lost end."""
    for first in (MUTEX | SPIN, READ, WRITE, PERCPU | WRITE, SPIN):
        assert pair([first, SPIN, E]) == [("stale", 0), ("wait", 1, SPIN, 1)], first


def test_an_end_without_a_begin_is_unmatched_and_a_begin_without_an_end_stays_open(pair):
    assert pair([E, SPIN]) == [("unmatched", 0), ("open", 1, SPIN, 1)]


# A lock address has one type: a run of waits on it, each the kernel's sequence for that type.
KINDS = {
    "mutex": st.integers(0, 3).map(mutex),
    "rwsem": st.sampled_from([READ, WRITE]).map(lambda f: [f, E]),
    "percpu": st.sampled_from([PERCPU | READ, PERCPU | WRITE]).map(lambda f: [f, E]),
    "spin": st.sampled_from([SPIN, SPIN | READ, SPIN | WRITE]).map(lambda f: [f, E]),
    "rt": st.tuples(st.sampled_from([RT, RT | READ, RT | WRITE]), st.integers(0, 3)).map(
        lambda a: wait_lock_inside(*a)),
    "sem": st.integers(0, 3).map(lambda n: wait_lock_inside(0, n)),
}


@st.composite
def runs(draw):
    kind = draw(st.sampled_from(sorted(KINDS)))
    waits = draw(st.lists(KINDS[kind], min_size=1, max_size=8))
    # which waits lose their end: any but a mutex wait that was asleep (the case the flags cannot tell)
    lost = [draw(st.booleans()) and not (kind == "mutex" and len(w) > 2) for w in waits]
    return waits, lost


@settings(max_examples=300, deadline=None, derandomize=True)
@given(runs())
def test_a_lost_end_never_stretches_a_wait_over_the_waits_that_follow(pair, run):
    """Every wait that kept its end comes out exactly (first begin, flags, begins folded); every wait that lost
    it comes out dropped (stale) or, the last one, still open: none spans the next."""
    waits, lost = run
    events: list[int | None] = []
    want = []
    for i, (w, gone) in enumerate(zip(waits, lost, strict=True)):
        start = len(events)
        begins = [f for f in w[:-1] if f is not None]
        outer = [f for f in begins if not (f == SPIN and w[0] is not None and (w[0] & RT or w[0] == 0))]
        flags = 0
        for f in (outer if w[0] & MUTEX else begins[:1]):
            flags |= f
        events += w[:-1] if gone else w
        if not gone:
            want.append(("wait", start, flags, len(begins)))
        elif i < len(waits) - 1:
            want.append(("stale", start))
        else:
            want.append(("open", start, flags, len(begins)))
    assert pair(events) == want


# -- an end without a begin: a wait cut by the start, or a begin lost since (tests/data/lock_task.c) --------

TASK_SRC = Path(__file__).parent / "data" / "lock_task.c"
L, Q, RQ, IRQ_LOCK = 4096, 8192, 12288, 16384  # a sleeping lock; another; a runqueue lock; an interrupt's spinlock
WAIT_LOCK = L + 8  # struct mutex: wait_lock after the owner word (a rw_semaphore's is further in)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    exe = tmp_path_factory.mktemp("task") / "lock_task"
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", f"-I{BPF_DIR}", "-o", str(exe), str(TASK_SRC)], check=True)

    def run(events: list[tuple]) -> list[tuple]:
        """events of one task alive at the start, since the start: ("b", addr, flags) a begin kept, ("f", addr,
        flags) a begin the map had no room for, ("e", addr) an end, ("n", addr) an end inside our
        contention_begin program -> ("wait", addr, flags) | ("cut", addr) | ("lost", addr), one per end."""
        text = "".join(" ".join(map(str, e)) + "\n" for e in events)
        out = subprocess.run([str(exe)], input=text, capture_output=True, text=True, check=True).stdout
        return [(w[0], *map(int, w[1:])) for w in (line.split() for line in out.splitlines())]

    return run


@pytest.mark.parametrize("inside, cut", [
    ([], L),  # nothing else before its end
    ([("b", WAIT_LOCK, SPIN), ("e", WAIT_LOCK)], L),  # a mutex waiter or rwsem writer, woken: its wait_lock
    ([("b", RQ, SPIN), ("e", RQ)] * 2, L),  # schedule() spinning for the runqueue lock
    ([("b", L, SPIN), ("e", L)], L),  # an rt_mutex's or semaphore's own wait_lock, at its address
    ([("b", IRQ_LOCK, SPIN | READ), ("e", IRQ_LOCK)], L),  # an interrupt's rwlock on top of a spinning waiter
])
def test_a_wait_in_progress_at_the_start_is_cut_by_it_whatever_ran_inside_it(task, inside, cut):
    """The waits a task runs inside its own wait are complete pairs of raw spinning locks; they do not make
    its end a lost begin's (the rule "its first lock event since the start" would have dropped these)."""
    out = task([*inside, ("e", cut)])
    assert out[-1] == ("cut", cut)
    assert all(o[0] == "wait" for o in out[:-1])


def test_waits_in_progress_at_the_start_end_innermost_first_each_cut_by_it(task):
    """An interrupt spinning on top of a task spinning for a mutex, both at the start."""
    assert task([("e", IRQ_LOCK), ("e", L)]) == [("cut", IRQ_LOCK), ("cut", L)]


@pytest.mark.parametrize("before", [
    [("b", L, WRITE), ("e", L)],  # an rwsem wait since the start: nothing from before it is still waiting
    [("b", L, MUTEX | SPIN), ("e", L)],
    [("b", L, READ), ("b", WAIT_LOCK, SPIN), ("e", WAIT_LOCK), ("e", L)],
    [("b", L, 0), ("e", L)],  # a semaphore
    [("b", L, PERCPU | READ), ("e", L)],
])
def test_an_end_without_a_begin_after_a_sleeping_wait_began_since_the_start_is_a_lost_begin(task, before):
    """The phantom: a spinlock wait of an interrupt whose begin the kernel skipped, written as a wait from the
    recording's start to its end. Dropped and counted instead."""
    out = task([*before, ("e", IRQ_LOCK)])
    assert out[-1] == ("lost", IRQ_LOCK)


def test_an_end_without_a_begin_inside_a_wait_begun_since_the_start_is_a_lost_begin(task):
    assert task([("b", Q, SPIN), ("e", IRQ_LOCK), ("e", Q)]) == [("lost", IRQ_LOCK), ("wait", Q, SPIN)]
    assert task([("b", Q, SPIN), ("e", Q), ("e", L)]) == [("wait", Q, SPIN), ("cut", L)]  # closed: no longer


def test_an_end_inside_our_contention_begin_program_is_a_lost_begin(task):
    """The kernel skipped its begin as recursion: it came while that program ran on the CPU."""
    assert task([("n", IRQ_LOCK)]) == [("lost", IRQ_LOCK)]


def test_a_begin_the_map_had_no_room_for_makes_the_next_end_without_a_begin_lost(task):
    assert task([("f", Q, SPIN), ("e", Q), ("e", L)]) == [("lost", Q), ("cut", L)]
    assert task([("f", Q, SPIN), ("b", RQ, SPIN), ("e", RQ), ("e", Q)]) == [("wait", RQ, SPIN), ("lost", Q)]


def test_a_rt_lock_since_the_start_does_not_settle_it(task):
    """PREEMPT_RT's spinlock_t (RT) runs inside a percpu-rwsem wait: an RT wait since the start does not prove
    every wait from before it over."""
    assert task([("b", Q, RT), ("e", Q), ("e", L)]) == [("wait", Q, RT), ("cut", L)]
