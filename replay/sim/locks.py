"""Lock policies as the simulator executes them.

Each lock instance is one object with ``acquire(th, now, write) -> bool`` (True:
granted at once, the caller goes on; False: the lock parked the thread as a
spinner or a sleeper through the engine), ``release(th, now, write)``,
``owner_off_cpu(th, now)`` (optimistic spinners stop when the owner leaves its
CPU) and ``abort_spin(th, now)`` (a spinning mutex/rwsem waiter that must
reschedule goes to sleep instead). Grants go back through the engine:
``grant_spin(owner, th, now)`` for a waiter on its CPU (after a cache-line
transfer), ``grant_sleeper(th, now)`` for one that must be woken, and
``wake_retry(th, now)`` wakes a sleeper without the lock (it calls ``acquire`` again
with ``th.retrying`` set). The models are in docs/SIMULATOR.md.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from replay.sim.engine import Engine, SimThread


class SpinLock:
    """Ticket spinlock (FIFO; hand-off grows with waiters) or, with ``per_waiter=0``, an MCS qspinlock.

    Spinning and holding disable preemption (the engine counts it: ``preempt_off``).
    """

    preempt_off = True
    sleeping = False
    abortable = False  # a spinning waiter that must reschedule may go to sleep instead
    __slots__ = ("eng", "owner", "q", "per_waiter")

    def __init__(self, eng: Engine, per_waiter: float):
        self.eng = eng
        self.owner: SimThread | None = None
        self.q: deque[SimThread] = deque()
        self.per_waiter = per_waiter

    def acquire(self, th: SimThread, now: int, write: bool) -> bool:
        if self.owner is None:
            self.owner = th
            return True
        self.q.append(th)
        self.eng.spin(th, now, True)
        return False

    def release(self, th: SimThread, now: int, write: bool) -> None:
        if not self.q:
            self.owner = None
            return
        k = len(self.q)
        nxt = self.q.popleft()
        self.owner = nxt
        self.eng.grant_spin(th, nxt, now, 1 + self.per_waiter * (k - 1))

    def owner_off_cpu(self, th: SimThread, now: int) -> None:
        pass

    def abort_spin(self, th: SimThread, now: int) -> None:  # spinlock waiters never abort
        raise self.eng.inconsistent(th, now, "a waiter that cannot abort its spin was asked to")

    def spin_limit_reached(self, th: SimThread, now: int) -> None:
        raise self.eng.inconsistent(th, now, "only rwsem spinners have a time limit")

    def release_wait(self, now: int) -> int:  # releases at once
        return 0

    def downgrade(self, th: SimThread, now: int) -> None:  # cannot share: the hold stays exclusive
        pass


class Mutex:
    """Sleeping mutex: fast path; optimistic spinning (FIFO, like the OSQ) while the owner
    is on a CPU; otherwise sleep. Unlock gives the lock to the first spinner; with no spinner
    it frees the lock and wakes the first sleeper, which retries when it runs: a running task
    may take the lock first, and the woken waiter, having lost, stays first in line
    (__mutex_unlock_slowpath). Only a first sleeper that has waited ``handoff_after`` ns is
    handed the lock directly (MUTEX_FLAG_HANDOFF).

    ``unqueued`` (``mutex-classic``, 3.0–3.9): the spinners were not queued (MCS queueing
    came in 3.10): at unlock they all re-read the lock word and race for it, so the hand-off
    to one of them costs a line transfer times ``1 + per_waiter·(k−1)`` for k spinners, like
    the ticket spinlock's; an unlock with sleepers wakes the first one even when a spinner
    takes the lock (__mutex_unlock_common_slowpath ran whenever the count said "waiters"),
    and a woken waiter that finds the lock taken sleeps again without spinning (its wait
    loop only retries the lock word); there is no hand-off to a long waiter. That unlock
    slowpath (taken when anyone waits) first takes the mutex's ``wait_lock`` and calls
    wake_up_process() under it: a wake-up costs the unlocker ``waker_ns`` and keeps
    ``wait_lock`` that long, and the next slowpath unlock spins until it is free
    (:meth:`release_wait`) before it releases the lock."""

    preempt_off = False
    sleeping = True
    abortable = True
    __slots__ = ("eng", "owner", "spinners", "sleepers", "woken", "handoff_after", "unqueued", "per_waiter",
                 "waker_ns", "wait_lock_free")

    def __init__(self, eng: Engine, handoff_after_ns: int, unqueued: bool = False, per_waiter: float = 0.0,
                 waker_ns: int = 0):
        self.eng = eng
        self.owner: SimThread | None = None
        self.spinners: deque[SimThread] = deque()
        self.sleepers: deque[SimThread] = deque()
        #: the first waiter, woken by an unlock and not yet back: it is still first in line
        self.woken: SimThread | None = None
        self.handoff_after = handoff_after_ns
        self.unqueued = unqueued
        self.per_waiter = per_waiter
        self.waker_ns = waker_ns
        #: mutex-classic: when the unlocker that holds wait_lock to wake a sleeper lets it go
        self.wait_lock_free = 0

    def acquire(self, th: SimThread, now: int, write: bool) -> bool:
        if self.woken is th:
            self.woken = None
        owner = self.owner
        if owner is None:
            self.owner = th
            return True
        if owner.oncpu and not (self.unqueued and th.retrying) and not self.eng.need_resched(th, now):
            self.spinners.append(th)
            self.eng.spin(th, now, False)
        else:
            self._queue(th)
            self.eng.sleep_on_lock(th, now)
        return False

    def _queue(self, th: SimThread) -> None:
        if th.retrying:  # a woken waiter that lost the race stays first in line
            self.sleepers.appendleft(th)
        else:
            self.sleepers.append(th)

    def release(self, th: SimThread, now: int, write: bool) -> None:
        sleepers, spinners = self.sleepers, self.spinners
        if self.unqueued:
            if spinners:  # they all race for the lock word; one wins
                k = len(spinners)
                nxt = spinners.popleft()
                self.owner = nxt
                self.eng.grant_spin(th, nxt, now, 1 + self.per_waiter * (k - 1))
            else:
                self.owner = None
            if self.sleepers and self.woken is None:
                self.wait_lock_free = now + self.waker_ns
                th.debt += self.waker_ns
                self._wake_first(now, self.waker_ns)
            return
        if sleepers and self.woken is None and now - sleepers[0].wait_start >= self.handoff_after:
            nxt = sleepers.popleft()
            self.owner = nxt
            self.eng.grant_sleeper(nxt, now)
            self._spinners_sleep(now)
        elif spinners:
            nxt = spinners.popleft()
            self.owner = nxt
            self.eng.grant_spin(th, nxt, now)
        else:
            self.owner = None
            self._wake_first(now)

    def _wake_first(self, now: int, delay: int = 0) -> None:
        """Wake the first sleeper to retry, unless one is already on its way."""
        if self.sleepers and self.woken is None:
            self.woken = nxt = self.sleepers.popleft()
            self.eng.wake_retry(nxt, now, delay)

    def release_wait(self, now: int) -> int:
        """Until when an unlock at ``now`` must spin on wait_lock first (mutex-classic's slowpath)."""
        if self.unqueued and (self.spinners or self.sleepers or self.woken is not None):
            return self.wait_lock_free
        return 0

    def _spinners_sleep(self, now: int) -> None:
        while self.spinners:
            s = self.spinners.popleft()
            self._queue(s)
            self.eng.spin_to_sleep(s, now)

    def owner_off_cpu(self, th: SimThread, now: int) -> None:
        if self.owner is th and self.spinners:
            self._spinners_sleep(now)

    def abort_spin(self, th: SimThread, now: int) -> None:
        if th not in self.spinners:
            raise self.eng.inconsistent(th, now, "a waiter that cannot abort its spin was asked to")
        self.spinners.remove(th)
        self._queue(th)
        self.eng.spin_to_sleep(th, now)

    def spin_limit_reached(self, th: SimThread, now: int) -> None:
        raise self.eng.inconsistent(th, now, "only rwsem spinners have a time limit")

    def downgrade(self, th: SimThread, now: int) -> None:  # cannot share: the hold stays exclusive
        pass


#: rwsem_mark_wake() wakes at most this many readers at once (MAX_READERS_WAKEUP, 5.3+)
MAX_READERS_WAKEUP = 256


class RWSem:
    """Reader/writer semaphore as in today's kernel (5.11+; ``classic=True``: as up to 3.9).

    Today: shared readers; writer preference (a reader queues behind sleeping waiters while
    other readers hold the lock); a reader takes a *free* lock even when others wait (reader
    optimistic lock stealing, 5.11 1a728dff855a; readers no longer spin, 617f3ef95177), and
    if it was the first reader it wakes the queued readers. Writers spin optimistically while
    a writer owner runs, and on a reader-owned lock for (10 + readers/2) µs
    (rwsem_rspin_threshold; spinning writers are invisible to arriving readers), after which
    the lock is nonspinnable for writers until a writer owns it. A spinning writer steals the
    lock at release before sleepers (unless the first sleeper has waited ``handoff_after`` ns). Sleepers are served
    from the head: a reader there wakes, granted, every queued reader (up to 256, passing
    the writers between them: d3681e269fff); a writer there is woken without the lock and
    retries when it runs, so a running task may steal it first (rwsem_mark_wake,
    rwsem_try_write_lock), unless it has waited ``handoff_after`` ns (RWSEM_FLAG_HANDOFF).
    A woken writer that lost stays first in line.

    Classic (rwsem-xadd up to 3.9, the ``2.6.39`` and ``3.0`` sets' mmap_sem): strictly
    FIFO, nobody spins or steals; a reader queues whenever anyone waits; a release grants
    the head writer directly, or the readers at the head up to the next writer
    (__rwsem_do_wake)."""

    preempt_off = False
    sleeping = True
    abortable = True
    __slots__ = ("eng", "writer", "readers", "spinners", "sleepers", "woken", "handoff_after", "classic",
                 "nonspinnable")

    def __init__(self, eng: Engine, handoff_after_ns: int, classic: bool = False):
        self.eng = eng
        self.writer: SimThread | None = None
        self.readers = 0
        self.spinners: deque[SimThread] = deque()
        self.sleepers: deque[tuple[SimThread, bool]] = deque()
        #: the first waiter (a writer), woken by a release and not yet back: still first in line
        self.woken: SimThread | None = None
        self.handoff_after = handoff_after_ns
        self.classic = classic
        #: RWSEM_NONSPINNABLE: a writer timed out spinning on readers; no writer spins on readers
        #: again until a writer owns the lock
        self.nonspinnable = False

    def acquire(self, th: SimThread, now: int, write: bool) -> bool:
        if self.woken is th:
            self.woken = None
        if write:
            if self.writer is None and self.readers == 0 and not (self.classic and self.sleepers):
                self.writer = th
                self.nonspinnable = False
                return True
            w = self.writer
            # a woken writer that finds the lock taken goes back to sleep without spinning (the optimistic
            # spin is before queueing, rwsem_down_write_slowpath; its wait loop only retries the lock), unless
            # it has waited handoff_after (handoff_set: it spins on a running writer owner, never on readers)
            retry = th.retrying
            if not self.classic and not self.eng.need_resched(th, now) and not (
                    retry and now - th.wait_start < self.handoff_after):
                if w is not None and w.oncpu:  # spin while the owning writer runs
                    self.spinners.append(th)
                    self.eng.spin(th, now, False)
                    return False
                if w is None and not self.nonspinnable and not retry:  # spin on the readers, for a while
                    self.spinners.append(th)
                    self.eng.spin(th, now, False)
                    self.eng.spin_limit(th, now + (20 + min(self.readers, 30)) * 500)  # rwsem_rspin_threshold
                    return False
        elif self.writer is None:
            if self.classic:
                if not self.sleepers:
                    self.readers += 1
                    return True
            elif self.woken is None and not self.sleepers:  # spinning writers are invisible to readers
                self.readers += 1
                return True
            elif self.readers == 0:  # a free lock with waiters: steal it
                self.readers += 1
                if self.sleepers and not self.sleepers[0][1]:  # the first reader wakes the queued readers
                    self._wake_readers(now)
                return True
        self._queue(th, write)
        self.eng.sleep_on_lock(th, now, th.retrying)  # a woken writer that lost: back to sleep at once
        return False

    def _queue(self, th: SimThread, write: bool) -> None:
        if th.retrying:  # a woken writer that lost the race stays first in line
            self.sleepers.appendleft((th, write))
        else:
            self.sleepers.append((th, write))

    def _wake_readers(self, now: int) -> None:
        """Grant the queued readers: classic, those at the head up to the first writer; today, every
        queued reader up to MAX_READERS_WAKEUP, the writers keeping their places."""
        sleepers = self.sleepers
        if self.classic:
            while sleepers and not sleepers[0][1]:
                self.readers += 1
                self.eng.grant_sleeper(sleepers.popleft()[0], now)
            return
        keep: list[tuple[SimThread, bool]] = []
        woken = 0
        while sleepers and woken < MAX_READERS_WAKEUP:
            th, write = sleepers.popleft()
            if write:
                keep.append((th, write))
            else:
                self.readers += 1
                woken += 1
                self.eng.grant_sleeper(th, now)
        sleepers.extendleft(reversed(keep))

    def release(self, th: SimThread, now: int, write: bool) -> None:
        if write:
            self.writer = None
        else:
            self.readers -= 1
            if self.readers:
                return
        if self.woken is not None:  # the first waiter is on its way; it takes the lock if still free
            if self.spinners:
                nxt = self.spinners.popleft()
                self.writer = nxt
                self.nonspinnable = False
                self.eng.grant_spin(th, nxt, now)
            return
        sleepers, spinners = self.sleepers, self.spinners
        # a spinner does not steal from a sleeper that has waited handoff_after (the replay's spinners do not wake
        # it at each release, as the kernel's up_write does: the time alone stands for its flag there)
        if spinners and not (sleepers and now - sleepers[0][0].wait_start >= self.handoff_after):
            nxt = spinners.popleft()
            self.writer = nxt
            self.nonspinnable = False
            self.eng.grant_spin(th, nxt, now)
        elif sleepers:
            if sleepers[0][1]:
                nxt = sleepers.popleft()[0]
                if self.classic or self._handoff(nxt, now):
                    self.writer = nxt
                    self.nonspinnable = False
                    self.eng.grant_sleeper(nxt, now)
                else:
                    self.woken = nxt
                    self.eng.wake_retry(nxt, now)
                    return
            else:
                self._wake_readers(now)
            self._spinners_sleep(now)

    def _handoff(self, th: SimThread, now: int) -> bool:
        """RWSEM_FLAG_HANDOFF for the head writer at a release no spinner takes: it has waited ``handoff_after`` and
        has been woken and found the lock taken since -- a writer sets the flag itself, in the trylock of its wait
        loop (rwsem_try_write_lock), so one asleep since it queued (behind a reader's long hold, which wakes
        nobody until it ends) has not, and a running task may still take the lock first at the release."""
        return now - th.wait_start >= self.handoff_after and th.retrying

    def _spinners_sleep(self, now: int) -> None:
        while self.spinners:
            s = self.spinners.popleft()
            self._queue(s, True)
            self.eng.spin_to_sleep(s, now, s.retrying)

    def owner_off_cpu(self, th: SimThread, now: int) -> None:
        if self.writer is th and self.spinners:
            self._spinners_sleep(now)

    def abort_spin(self, th: SimThread, now: int) -> None:
        if th not in self.spinners:
            raise self.eng.inconsistent(th, now, "a waiter that cannot abort its spin was asked to")
        self.spinners.remove(th)
        self._queue(th, True)
        self.eng.spin_to_sleep(th, now, th.retrying)

    def release_wait(self, now: int) -> int:  # releases at once
        return 0

    def downgrade(self, th: SimThread, now: int) -> None:
        """downgrade_write: the writer becomes a reader; queued readers at the head are woken
        (rwsem_downgrade_wake); spinning writers now spin on a reader-owned lock, for a while."""
        self.writer = None
        self.readers += 1
        if self.sleepers and not self.sleepers[0][1]:
            self._wake_readers(now)
        for s in self.spinners:
            self.eng.spin_limit(s, now + (20 + min(self.readers, 30)) * 500)

    def spin_limit_reached(self, th: SimThread, now: int) -> None:
        """A writer has spun on readers for rwsem_rspin_threshold: mark the lock nonspinnable and send
        every spinner to sleep (they queue behind it in the OSQ and see the flag)."""
        if self.writer is None and self.readers:
            self.nonspinnable = True
            self._spinners_sleep(now)


class Recorded:
    """The identity baseline: no exclusion; each acquisition waits what the trace recorded: on its CPU
    with preemption off for classes that spin today; for the others asleep, unless the trace shows the
    waiter stayed on its CPU through the wait (it spun optimistically: it waits on its CPU, and the
    probe cannot cut the wait short)."""

    abortable = False
    __slots__ = ("eng", "preempt_off", "sleeping")

    def __init__(self, eng: Engine, sleeping: bool):
        self.eng = eng
        self.sleeping = sleeping
        self.preempt_off = not sleeping

    def acquire(self, th: SimThread, now: int, write: bool) -> bool:
        wait = th.recorded_wait
        if wait <= 0:
            return True
        # a sleeping class's waiter that stayed on its CPU (program.ACQ_SPUN) spun optimistically: it waits there
        sleeping = self.sleeping and not th.code[th.pc][4] & 4
        self.eng.timed_wait(th, now, wait, sleeping, self.preempt_off)
        return False

    def release(self, th: SimThread, now: int, write: bool) -> None:
        pass

    def owner_off_cpu(self, th: SimThread, now: int) -> None:
        pass

    def abort_spin(self, th: SimThread, now: int) -> None:
        raise self.eng.inconsistent(th, now, "a waiter that cannot abort its spin was asked to")

    def spin_limit_reached(self, th: SimThread, now: int) -> None:
        raise self.eng.inconsistent(th, now, "only rwsem spinners have a time limit")

    def release_wait(self, now: int) -> int:  # releases at once
        return 0

    def downgrade(self, th: SimThread, now: int) -> None:
        pass
