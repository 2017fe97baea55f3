"""The discrete-event engine: CPUs, a scheduler, threads executing flattened programs.

This is the reference implementation, and the documentation of the model;
replay/sim/engine.c transcribes it function for function (tests/test_sim_engines.py
holds them equal): change the model here first, then there.

Design (benchmarks/replay_speed.py, docs/SIMULATOR.md "Speed"): integer
time in ns; one heap of plain tuples ``(time, seq, event, index, generation)``;
threads are slotted objects allocated once; instructions are tuples unpacked once
from the Program. ``run()`` is one loop: an event that resumes a thread falls
through into the instruction loop, and a block that leaves the CPU idle is
handled inline. A thread whose next segment
ends before the earliest pending event runs on inline without touching the heap
(nothing can interleave with it, so this is exact). A stale segment-end event
(the segment was stretched by an interrupt or cut by a preemption) is recognised
by its generation and dropped.

Scheduling model (docs/SIMULATOR.md): one global FIFO run queue; a woken thread
takes an idle CPU or queues; a running thread yields at its next preemption
point once its slice is over and others wait; the per-CPU probe wakes
periodically and preempts at the first point the preemption model and the
thread's preempt count allow.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable
from itertools import chain

import numpy as np

from replay.errors import MmreplayError
from replay.gcpause import paused_gc
from replay.sim.costs import Costs
from replay.sim.locks import Mutex, Recorded, RWSem, SpinLock
from replay.sim.ops import Workload
from replay.sim.program import (
    ACQ,
    BLOCK,
    DOWNGRADE,
    END,
    GB,
    GE,
    GFLUSH,
    GPOINT,
    GZAP,
    KERN,
    REL,
    SLEEPING_CLASSES,
    SPAN_B,
    SPAN_E,
    UNTIL,
    USER,
    Program,
    tlb_flush_ns,
)
from replay.trace.schema import LOCK_CLASSES, SIM_PREEMPT_CAUSES, SIM_PROBE_CAUSES, SIM_SWITCH_REASONS

# thread states
RUN, SPIN, SLEEP, BLOCKED, READY, PREEMPTED, DONE = range(7)
# events
# events (E_RSPIN: a writer's time limit for spinning on a reader-owned rwsem; E_PSLEEP: the end of a lock
# sleeper's way to sleep, E_RESUME: a sleeper woken to retry inside it; probe events last)
E_SEG, E_WAKE, E_GRANT, E_RSPIN, E_PSLEEP, E_RESUME, E_PWAKE, E_PEND = range(8)

IDLE_TID = -1
PROBE_TID = -2

# the event logs hold codes: indexes in the results schema's vocabularies (replay/trace/schema.py)
R_DISPATCH, R_PREEMPT, R_BLOCK, R_SLEEP_LOCK, R_EXIT, R_PROBE_END = (
    SIM_SWITCH_REASONS.index(r) for r in ("dispatch", "preempt", "block", "sleep-lock", "exit", "probe-end"))
P_SPINLOCK, P_SPIN_WAIT, P_GATHER, P_PTL, P_RECORDED_SPIN = (
    SIM_PREEMPT_CAUSES.index(c) for c in ("spinlock", "spin-wait", "gather", "ptl", "recorded-spin"))
Q_IDLE, Q_PREEMPTIBLE, Q_KERNEL, Q_SWITCH = (SIM_PROBE_CAUSES.index(c) for c in ("idle", "preemptible", "kernel",
                                                                                "switch"))
#: a preempt-off cause as the probe's cause (it waited for that section to end)
PROBE_CAUSE_OF = tuple(SIM_PROBE_CAUSES.index(c) for c in SIM_PREEMPT_CAUSES)
#: the rows of each log (ints; lid: the lock's index in Program.locks, -1: none)
LOG_COLUMNS = {
    "sim_lock_waits": ("ts", "dur", "cpu", "tid", "lid", "write", "spun_ns", "slept"),
    "sim_lock_holds": ("ts", "dur", "wait", "cpu", "tid", "lid", "write", "depth", "derived"),
    "sim_ops": ("ts", "dur", "cpu", "tid", "kind"),
    "sim_preempt_off": ("ts", "dur", "cpu", "tid", "cause", "lock_class", "cut"),
    "sim_probe": ("ts", "latency", "cpu", "tid", "cause"),
    "sim_sched": ("ts", "cpu", "prev_tid", "next_tid", "reason", "wait"),
}


class SimThread:
    """Mutable state of one simulated thread (allocated once per run)."""

    __slots__ = (
        # identity, program counter, where it is
        "idx", "tid", "mm", "code", "points", "pc", "state", "cpu", "oncpu", "gen",
        # the current segment: work left in the instruction, its end, its work and overhead parts
        "rem", "fresh", "seg_start", "seg_end", "seg_work", "seg_debt", "segpre", "seg_over", "debt",
        # preempt count and the open preempt-off section
        "pcount", "poff_start", "poff_cause", "poff_class",
        # locks held and the acquisition under way
        "held", "wait_start", "spin_start", "spins", "spun", "slept", "granted", "retrying", "recorded_wait",
        "waiting_lock", "traced_at",
        # open spans and the gather under way
        "spans", "g_pending", "g_cap", "g_full", "g_pt", "g_broken", "g_free",
        "slice_start", "runnable_at",
        # its mm torn down on this CPU: exit_mmap's first flush left the lazy mm (switch to init_mm)
        "left_mm",
        # the tracer's time at an mmap_lock release or downgrade (issue #16)
        "tail_at", "credit",
        # on its way to sleep on a lock: still on its CPU, queued (Costs.lock_sleep_window_ns)
        "presleep",
        # when it last left its CPU (a woken lock sleeper's delay depends on how long it slept: issue #16)
        "off_at",
    )

    def __init__(self, idx: int, tid: int, mm: int, code: list[tuple], points: list[bool]):
        self.idx = idx
        self.tid = tid
        self.mm = mm
        self.code = code
        self.points = points
        self.pc = 0
        self.state = BLOCKED
        self.cpu = -1
        self.oncpu = False
        self.gen = 0
        self.rem = 0
        self.fresh = True
        self.seg_start = self.seg_end = self.seg_work = self.seg_debt = 0
        self.segpre = False
        self.seg_over = False
        self.left_mm = False
        self.debt = 0
        self.pcount = 0
        self.poff_start = 0
        self.poff_cause = 0  # SIM_PREEMPT_CAUSES index
        self.poff_class = -1  # LOCK_CLASSES index, -1: none
        self.held: list[tuple] = []
        self.wait_start = 0
        self.spin_start = 0
        self.spins = 0  # wait generation: + 1 when a spin begins and when a wait ends (names a time limit's wait)
        self.spun = 0
        self.slept = False
        self.granted = False
        #: woken by an unlock without the lock (wake-and-retry): its wait goes on until it gets the lock
        self.retrying = False
        self.recorded_wait = 0
        self.waiting_lock = None
        self.traced_at = -1  # start of the tracer's time at the acquisition under way (issue #16), -1: none
        self.spans: list[tuple[int, int]] = []
        self.g_pending = 0
        self.g_cap = 0
        self.g_full = False
        self.g_pt = 0
        self.g_broken = False
        self.g_free = 0.0
        self.slice_start = 0
        self.runnable_at = 0
        #: the recorded release's (downgrade's) time while the tracer's time after it runs, -1: none under way
        self.tail_at = -1
        #: tracer time replayed at releases and downgrades, taken back from the next work (which contains it)
        self.credit = 0
        self.presleep = False
        self.off_at = 0


class Engine:
    """One simulation run: build with a flattened Program, call ``run()``."""

    def __init__(self, program: Program, workload: Workload, cpus: int, preempt: str, gather: str, seed: int,
                 costs: Costs, probe: bool, probe_period_ns: int,
                 progress: Callable[[float], None] | None = None):
        if cpus < 1:
            raise ValueError("cpus must be at least 1")
        self.c = costs
        self.cpus = cpus
        self.per_socket = costs.cpus_per_socket
        self.line_ns = costs.line_transfer_ns
        #: recorded hand-offs to spinners, one drawn per same-socket grant (Costs.line_transfer_samples_ns)
        self.handoffs = costs.line_transfer_samples_ns
        #: recorded waker -> activation delays of woken lock sleepers, one drawn per such wake-up
        #: (Costs.lock_wake_samples_ns; the C engine draws the same)
        self.lock_wakes = costs.lock_wake_samples_ns
        #: recorded release -> switch-in delays of lock sleepers woken after a long sleep, and how long is long
        #: (Costs.lock_wake_long_samples_ns, lock_wake_long_after_ns; the C engine draws the same)
        self.long_wakes = costs.lock_wake_long_samples_ns
        self.long_after = costs.lock_wake_long_after_ns
        #: a lock waiter that must sleep leaves its CPU this much later (Costs.lock_sleep_window_ns)
        self.sleep_window = costs.lock_sleep_window_ns
        #: a Block's length holds its wake-up (Costs.blocks_hold_wakeup): runnable at its end less the switch
        self.block_exact = bool(costs.blocks_hold_wakeup)
        self.full = preempt == "full"
        self.percpu = gather == "percpu"
        self.rng = random.Random(seed)
        self.progress = progress
        self.probe = probe
        self.probe_period = probe_period_ns
        self.heap: list[tuple] = []
        self.seq = 0
        self.threads = [SimThread(i, t.tid, t.mm, program.thread_code(i),
                                  program.points[program.start[i]:program.start[i + 1]].tolist())
                        for i, t in enumerate(workload.threads)]
        self.total_instr = len(program.code) or 1
        self.locks = []
        for info in program.locks:
            if info.policy == "spinlock":
                lk = SpinLock(self, costs.ticket_handoff_per_waiter)
            elif info.policy == "qspinlock":
                lk = SpinLock(self, 0.0)
            elif info.policy == "mutex":
                lk = Mutex(self, costs.mutex_handoff_after_ns)
            elif info.policy == "mutex-classic":
                lk = Mutex(self, costs.mutex_handoff_after_ns, unqueued=True,
                           per_waiter=costs.ticket_handoff_per_waiter, waker_ns=costs.mutex_waker_ns)
            elif info.policy == "rwsem":
                lk = RWSem(self, costs.rwsem_handoff_after_ns)
            elif info.policy == "rwsem-classic":
                lk = RWSem(self, costs.rwsem_handoff_after_ns, classic=True)
            elif info.policy == "as-recorded":
                lk = Recorded(self, info.lock_class in SLEEPING_CLASSES)
            else:
                raise ValueError(f"unknown lock policy {info.policy!r}")
            self.locks.append(lk)
        self.lock_info = program.locks
        self.lock_cost = [costs.spin_lock_unlock_ns if isinstance(lk, SpinLock)
                          else (0 if isinstance(lk, Recorded) else costs.cas_ns) for lk in self.locks]
        # issue #16: the tier-1 tracer's own time at each mmap_lock acquisition (start_locking ->
        # acquire_returned), replayed as CPU work before the attempt and counted in the acquisition's wait,
        # as the recorded waits count it: min(recorded wait, costs.mmap_lock_tracer_ns) per acquisition.
        # 0 (the default): an untraced kernel. as-recorded replays the whole recorded wait already.
        self.lock_tracer = [costs.mmap_lock_tracer_ns if info.lock_class == "mmap_lock" and not isinstance(lk, Recorded)
                            else 0 for info, lk in zip(program.locks, self.locks, strict=True)]
        # the recorded wait the tracer's time is taken from holds the fast path (the acquire's atomic) and the
        # recorded work after a release holds the release's: a traced lock's fast path is not charged again (it
        # made every replayed hold 12 ns longer than recorded, issue #16)
        self.lock_cost = [0 if tr else cost for tr, cost in zip(self.lock_tracer, self.lock_cost, strict=True)]
        # issue #16: the tracer's time after mmap_lock_released's (a downgrade's acquire_returned's) timestamp,
        # the lock still held: replayed before each release (downgrade), the recorded hold ending where it
        # started, and taken back from the thread's next work, which the reconstruction gave that time.
        self.lock_tail = [costs.mmap_lock_release_tail_ns if info.lock_class == "mmap_lock"
                          and not isinstance(lk, Recorded) else 0 for info, lk in zip(program.locks, self.locks,
                                                                                     strict=True)]
        self.lock_dtail = [costs.mmap_lock_downgrade_tail_ns if info.lock_class == "mmap_lock"
                           and not isinstance(lk, Recorded) else 0 for info, lk in zip(program.locks, self.locks,
                                                                                      strict=True)]
        #: lines of protected data that follow each lock to a new owner's CPU (Costs.lock_data_lines)
        self.lock_lines = [0 if isinstance(lk, Recorded) else costs.lock_data_lines for lk in self.locks]
        self.lock_cpu = [-1] * len(self.locks)  # CPU of each lock's last owner, -1 none yet
        self.kinds = program.kinds
        # CPUs
        self.cur: list[SimThread | None] = [None] * cpus
        self.last_tid = [IDLE_TID] * cpus
        self.idle = list(range(cpus - 1, -1, -1))  # pop() gives CPU 0 first
        self.rq: deque[SimThread] = deque()
        self.rq_area = 0  # integral of the run-queue length over time (Little's L)
        self.rq_last = 0
        self.preempted: list[SimThread | None] = [None] * cpus
        # the thread whose mm each CPU last loaded (cpu_tlbstate.loaded_mm; kept while the CPU idles: lazy TLB)
        self.loaded: list[SimThread | None] = [None] * cpus
        self.probe_running = [False] * cpus
        self.probe_pending = [-1] * cpus  # time need_resched is set for the probe (wake + irq), -1 none
        self.probe_wake = [0] * cpus
        self.probe_cause = [0] * cpus
        self.probe_tid = [IDLE_TID] * cpus
        # accounting
        self.events = 0
        self.instr = 0
        self.work_ns = 0
        self.overhead_ns = 0
        self.spin_ns = 0
        self.probe_cpu_ns = 0
        self.switches = 0
        self.tlb_flushes = 0
        self.ipis = 0
        self.atomic_sleeps = 0
        self.probe_overruns = 0
        self.instr_at_probe = -1  # instructions executed at the last probe wake-up (deadlock check)
        self.done = 0
        self.end = 0  # when the last thread finished
        # waiters per lock class (index in LOCK_CLASSES) and its integral over time (Little's L)
        self.nwait = [0] * len(LOCK_CLASSES)
        self.wait_area = [0] * len(LOCK_CLASSES)
        self.wait_last = [0] * len(LOCK_CLASSES)
        self.contended = [False] * len(LOCK_CLASSES)
        self.lock_cls = [LOCK_CLASSES.index(info.lock_class) for info in program.locks]
        # event logs (tuples; turned into Arrow tables by replay.sim.simulate)
        self.rows_waits: list[tuple] = []
        self.rows_holds: list[tuple] = []
        self.rows_ops: list[tuple] = []
        self.rows_poff: list[tuple] = []
        self.rows_probe: list[tuple] = []
        self.rows_sched: list[tuple] = []
        #: simulated time starts with the first thread (traces carry absolute monotonic times)
        self.t0 = min((t.start_ns for t in workload.threads), default=0)
        self.rq_last = self.t0
        for th, t in zip(self.threads, workload.threads, strict=True):
            self.push(t.start_ns, E_WAKE, th.idx, th.gen)
        if probe:
            for c in range(cpus):
                self.push(self.t0 + self.rng.randrange(max(1, probe_period_ns)), E_PWAKE, c, 0)

    def logs(self) -> dict[str, np.ndarray]:
        """The event logs as int64 arrays, one row per event, columns as in ``LOG_COLUMNS``.

        Call once, after ``run()``: the row lists are released (millions of tuples that
        the cyclic collector would otherwise rescan through everything that follows).
        """
        out = {}
        names = ("rows_waits", "rows_holds", "rows_ops", "rows_poff", "rows_probe", "rows_sched")
        for name, attr in zip(LOG_COLUMNS, names, strict=True):
            rows = getattr(self, attr)
            w = len(LOG_COLUMNS[name])
            out[name] = np.fromiter(chain.from_iterable(rows), dtype=np.int64, count=len(rows) * w).reshape(-1, w)
            setattr(self, attr, [])
        return out

    # ----------------------------------------------------------------- helpers
    def push(self, t: int, ev: int, x: int, g: int) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, ev, x, g))

    def wake_cost(self) -> int:
        j = self.c.wake_jitter_ns
        return self.c.wakeup_ns + (round(self.rng.expovariate(1.0 / j)) if j else 0)

    def lock_wake_cost(self, th: SimThread, now: int) -> int:
        """A woken lock sleeper's delay before it runs: the recorded waker -> activation delay (an IPI to an idle
        CPU and its exit from idle: Costs.lock_wake_samples_ns, drawn after the wake-up latency), then the
        wake-up latency (issue #16). A sleeper off its CPU for ``lock_wake_long_after_ns`` or more takes instead
        one recorded release -> switch-in delay of such a sleeper (Costs.lock_wake_long_samples_ns: a vCPU idle
        that long has left its host CPU and is slow to come back), whole: runnable that much after the release
        less the switch its dispatch costs, no wake-up latency drawn (docs/VALIDATION.md §e item 13)."""
        if self.long_wakes and now - th.off_at >= self.long_after:
            w = self.long_wakes[int(self.rng.random() * len(self.long_wakes))] - self.c.context_switch_ns
            return w if w > 0 else 0
        w = self.wake_cost()
        if self.lock_wakes:
            w += self.lock_wakes[int(self.rng.random() * len(self.lock_wakes))]
        return w

    def need_resched(self, th: SimThread, now: int) -> bool:
        c = th.cpu
        return self.probe_pending[c] >= 0 or (bool(self.rq) and now - th.slice_start >= self.c.timeslice_ns)

    def inconsistent(self, th: SimThread, now: int, what: str) -> AssertionError:
        """The error for a state the model cannot reach (a bug): names the thread and the simulated time;
        replay.sim.simulate turns it into a one-line InconsistencyError (engine.c words it the same)."""
        return AssertionError(f"tid {th.tid} at {(now - self.t0) / 1e9:.6f} s into the replay: {what}")

    def poff_inc(self, th: SimThread, now: int, cause: int, cls: int) -> None:
        if th.pcount == 0:
            th.poff_start = now
            th.poff_cause = cause
            th.poff_class = cls
        th.pcount += 1

    def poff_dec(self, th: SimThread, now: int) -> None:
        th.pcount -= 1
        if th.pcount == 0:
            self.rows_poff.append((th.poff_start, now - th.poff_start, th.cpu, th.tid, th.poff_cause, th.poff_class,
                                   False))

    # ------------------------------------------------------- CPU hand-over
    def leave_cpu(self, th: SimThread, now: int, reason: int) -> None:
        c = th.cpu
        self.cur[c] = None
        th.oncpu = False
        th.cpu = -1
        th.off_at = now
        for h in th.held:
            self.locks[h[0]].owner_off_cpu(th, now)
        if th.pcount > 0:  # slept in atomic context (e.g. Block under a spinlock): close the section
            self.rows_poff.append((th.poff_start, now - th.poff_start, c, th.tid, th.poff_cause, th.poff_class, True))
            if reason != R_EXIT:
                self.atomic_sleeps += 1
        self.cpu_next(c, now, th.tid, reason)

    def cpu_next(self, c: int, now: int, prev: int, reason: int) -> None:
        if self.probe_pending[c] >= 0:
            self.rows_sched.append((now, c, prev, PROBE_TID, reason, 0))
            self.start_probe(c, now)
        elif self.rq:
            self.rq_area += len(self.rq) * (now - self.rq_last)
            self.rq_last = now
            self.dispatch(c, self.rq.popleft(), now, prev, reason)
        else:
            self.idle.append(c)
            self.rows_sched.append((now, c, prev, IDLE_TID, reason, 0))

    def bind(self, c: int, th: SimThread, now: int, prev: int, reason: int) -> None:
        """Put ``th`` on CPU ``c`` (the switch itself is the caller's: an overhead segment or none)."""
        self.rows_sched.append((now, c, prev, th.tid, reason, now - th.runnable_at))
        self.cur[c] = th
        self.loaded[c] = th
        th.cpu = c
        th.oncpu = True
        th.state = RUN
        th.slice_start = now
        if th.pcount > 0:
            th.poff_start = now
        self.switches += 1

    def dispatch(self, c: int, th: SimThread, now: int, prev: int, reason: int) -> None:
        self.bind(c, th, now, prev, reason)
        self.start_overhead(th, now, self.c.context_switch_ns)

    def start_overhead(self, th: SimThread, now: int, ns: int) -> None:
        self.overhead_ns += ns
        th.seg_over = True
        th.segpre = False
        th.seg_start = now
        th.seg_end = now + ns
        th.seg_work = 0
        th.seg_debt = ns
        th.gen += 1
        self.push(now + ns, E_SEG, th.idx, th.gen)

    # ----------------------------------------------------- lock callbacks
    def spin(self, th: SimThread, now: int, preempt_off: bool) -> None:
        th.state = SPIN
        th.spin_start = now
        th.spins += 1
        if preempt_off:
            if th.pcount == 0:
                th.poff_start = now
                th.poff_cause = P_SPIN_WAIT
                th.poff_class = self.lock_cls[th.code[th.pc][1]]
            th.pcount += 1

    def sleep_on_lock(self, th: SimThread, now: int, again: bool = False) -> None:
        """``th`` sleeps on its lock, through the way to sleep (``lock_sleep_window_ns``) unless ``again``: an
        rwsem writer woken to retry that lost goes back to sleep at once -- its way back has no contention_begin
        and no recorder's program, and a wake on it does not keep it on its CPU (issue #16 item 2; a mutex
        waiter's retry fires contention_begin again and keeps the window)."""
        th.state = SLEEP
        if self.sleep_window and not again:
            if not th.retrying:  # a new wait: it has not slept yet (a retry keeps its earlier sleep)
                th.slept = False
            self.begin_window(th, now)
            return
        th.slept = True
        self.leave_cpu(th, now, R_SLEEP_LOCK)

    def spin_to_sleep(self, th: SimThread, now: int, again: bool = False) -> None:
        d = now - th.spin_start
        th.spun += d
        self.spin_ns += d
        th.state = SLEEP
        if self.sleep_window and not again:
            self.begin_window(th, now)
            return
        th.slept = True
        self.leave_cpu(th, now, R_SLEEP_LOCK)

    def begin_window(self, th: SimThread, now: int) -> None:
        """The waiter, queued, is on its way to sleep (the kernel's schedule() after contention_begin): it
        leaves its CPU ``sleep_window`` ns later unless a grant or a wake to retry comes first, which it
        takes on its CPU, without a switch or a wake-up (issue #16, docs/VALIDATION.md §e item 10)."""
        th.presleep = True
        th.spins += 1  # a new wait generation: no earlier timer acts on it
        self.push(now + self.sleep_window, E_PSLEEP, th.idx, th.spins)

    def grant_spin(self, frm: SimThread, th: SimThread, now: int, scale: float | None = None) -> None:
        """Hand the lock from ``frm`` to the spinner ``th``: one line transfer (times ``scale``) from now."""
        th.waiting_lock = None  # granted: the hand-off is under way, nothing left to abort
        per = self.per_socket
        if per and frm.cpu // per != th.cpu // per:
            line = self.c.line_transfer_remote_ns
        elif self.handoffs:  # a recorded hand-off, drawn (the C engine draws the same)
            line = self.handoffs[int(self.rng.random() * len(self.handoffs))]
        else:
            line = self.line_ns
        at = now + (line if scale is None else round(line * scale))
        self.seq += 1
        heapq.heappush(self.heap, (at, self.seq, E_GRANT, th.idx, th.gen))

    def migrate(self, lid: int, c: int) -> int:
        """The data of lock ``lid`` moves to CPU ``c``, its new owner's: ``lock_data_lines`` line
        transfers (cross-socket ones when the last owner's CPU is on another socket) if the last
        owner ran elsewhere, else nothing."""
        prev = self.lock_cpu[lid]
        self.lock_cpu[lid] = c
        if prev < 0 or prev == c:
            return 0
        per = self.per_socket
        line = self.c.line_transfer_remote_ns if per and prev // per != c // per else self.line_ns
        return self.lock_lines[lid] * line

    def spin_limit(self, th: SimThread, at: int) -> None:
        """End ``th``'s current spin at ``at`` unless it has got the lock or stopped by then."""
        self.push(at, E_RSPIN, th.idx, th.spins)

    def wake_retry(self, th: SimThread, now: int, delay: int = 0) -> None:
        """Wake a lock sleeper without granting the lock: it retries the acquisition when it runs
        (runnable ``delay`` ns later than a wake-up from ``now`` would make it)."""
        th.waiting_lock = None
        th.retrying = True
        if th.presleep:  # not asleep yet: it retries on its CPU
            th.presleep = False
            th.state = SPIN
            th.spin_start = now
            self.push(now + delay, E_RESUME, th.idx, th.gen)
            return
        th.state = READY
        self.push(now + delay + self.lock_wake_cost(th, now), E_WAKE, th.idx, th.gen)

    def grant_sleeper(self, th: SimThread, now: int) -> None:
        th.waiting_lock = None
        th.granted = True
        if th.presleep:  # not asleep yet: it goes on on its CPU
            th.presleep = False
            th.state = SPIN
            th.spin_start = now
            self.push(now, E_GRANT, th.idx, th.gen)
            return
        th.state = READY
        self.push(now + self.lock_wake_cost(th, now), E_WAKE, th.idx, th.gen)

    def timed_wait(self, th: SimThread, now: int, wait: int, sleeping: bool, preempt_off: bool) -> None:
        """as-recorded: wait ``wait`` ns asleep or on the CPU (preemption off for a spinning class)."""
        if sleeping:
            th.state = SLEEP
            th.slept = True
            th.granted = True
            self.leave_cpu(th, now, R_SLEEP_LOCK)
            self.push(now + max(0, wait - self.c.context_switch_ns), E_WAKE, th.idx, th.gen)
        else:
            th.state = SPIN
            th.spin_start = now
            if preempt_off:
                self.poff_inc(th, now, P_RECORDED_SPIN, self.lock_cls[th.code[th.pc][1]])
            self.push(now + wait, E_GRANT, th.idx, th.gen)

    def stretch(self, th: SimThread, ns: int) -> None:
        """An interrupt handler runs inside ``th``'s running segment: it ends ``ns`` later."""
        th.seg_end += ns
        th.seg_debt += ns
        self.overhead_ns += ns
        th.gen += 1
        self.push(th.seg_end, E_SEG, th.idx, th.gen)

    # ---------------------------------------------------------- TLB flushes
    def flush(self, th: SimThread, now: int, pages: int, fullmm: bool, freed_tables: bool = False) -> int:
        """Flush the TLB for a gather of ``pages``; returns the initiator's cost, stretches the targets'.

        As x86 flush_tlb_mm_range / native_flush_tlb_multi (6.1 and 6.18) do: the IPI goes to the CPUs
        whose loaded mm is ``th``'s and that are not lazy -- running a thread of the mm, in the kernel or in
        its user work (should_flush_tlb, 6.1's tlb_is_not_lazy); a thread waiting on its CPU for its next
        recorded start (open mode) is not one: the recorded task was off CPU or idle for an unknown part
        of that gap. A flush that freed page tables (``freed_tables``) goes to the whole mm_cpumask, lazy
        CPUs included (an idle CPU whose last mm is this one, and those waiting threads).

        A full-mm flush is exit_mmap's: exit_mm made the CPU lazy, so flush_tlb_func leaves the mm
        (switch_mm_irqs_off to init_mm, a CR3 write without a flush under PCID: ``lazy_leave_ns``) at the
        first one; the later ones find init_mm loaded and do nothing locally, and the kernel traces none."""
        c = self.c
        if fullmm:
            if th.left_mm:
                cost = 0
            else:
                th.left_mm = True
                self.tlb_flushes += 1
                cost = c.lazy_leave_ns
        else:
            self.tlb_flushes += 1
            cost = tlb_flush_ns(pages, c, False)
        mm = th.mm
        steal = c.ipi_handler_ns + cost
        any_ = False
        for i in range(len(self.cur)):
            if i == th.cpu:
                continue
            if self.probe_running[i]:
                continue  # the probe task's mm is loaded there
            r = self.cur[i]
            if r is None:  # idle: lazy on the mm it last ran
                r = self.loaded[i]
                if freed_tables and r is not None and r.mm == mm:
                    any_ = True
                    self.ipis += 1
                continue
            if r.mm != mm:
                continue
            if not freed_tables and not r.seg_over and r.state == RUN:
                ins = r.code[r.pc]
                if ins[0] == UNTIL and ins[2]:
                    continue  # waiting for its recorded start: not known to be running the mm
            any_ = True
            self.ipis += 1
            if r.state == RUN:  # the handler runs inside whatever the target was doing
                self.stretch(r, steal)
        if any_:
            cost += c.shootdown_ns
        return cost

    # ----------------------------------------------------------------- probe
    def probe_wake_ev(self, c: int, t: int) -> None:
        if self.done == len(self.threads):
            return
        if self.instr == self.instr_at_probe and not any(self.probe_running) \
                and all(e[2] >= E_PWAKE for e in self.heap):
            return  # only probe timers are left: the threads are deadlocked; let the run end and say so
        self.instr_at_probe = self.instr
        self.push(t + self.probe_period, E_PWAKE, c, 0)
        if self.probe_running[c] or self.probe_pending[c] >= 0:
            self.probe_overruns += 1
            return
        cst = self.c
        irq = cst.probe_irq_ns + (round(self.rng.expovariate(1.0 / cst.wake_jitter_ns)) if cst.wake_jitter_ns else 0)
        self.probe_wake[c] = t
        th = self.cur[c]
        if th is None:
            if self.preempted[c] is not None:  # cannot happen: the probe is not running
                raise self.inconsistent(self.preempted[c], t, "preempted thread without a running probe")
            self.idle.remove(c)
            self.probe_pending[c] = t + irq
            self.probe_cause[c] = Q_IDLE
            self.probe_tid[c] = IDLE_TID
            self.rows_sched.append((t, c, IDLE_TID, PROBE_TID, R_DISPATCH, 0))
            self.start_probe(c, t)
            return
        self.probe_tid[c] = th.tid
        if th.state == RUN and not th.seg_over and th.segpre and th.pcount == 0:
            # preempt mid-segment: keep what is left of the work for later
            done = t - th.seg_start
            if done < th.seg_debt:
                th.debt += th.seg_debt - done
                self.overhead_ns -= th.seg_debt - done
                done_work = 0
            else:
                done_work = done - th.seg_debt
            self.work_ns += done_work
            th.rem += th.seg_work - done_work
            th.gen += 1
            self.probe_pending[c] = t + irq
            self.probe_cause[c] = Q_PREEMPTIBLE
            self.switch_to_probe(th, c, t)
            return
        self.probe_pending[c] = t + irq
        if th.state == SPIN and th.waiting_lock is not None and th.waiting_lock.abortable:
            self.probe_cause[c] = Q_PREEMPTIBLE
            th.waiting_lock.abort_spin(th, t)  # sleeps; the CPU goes to the probe
            return
        if th.pcount > 0:
            self.probe_cause[c] = PROBE_CAUSE_OF[th.poff_cause]
        elif th.state == RUN and th.seg_over:
            self.probe_cause[c] = Q_SWITCH
        else:
            self.probe_cause[c] = Q_KERNEL
        if th.state == RUN:  # the timer interrupt steals from the running segment
            self.stretch(th, irq)

    def switch_to_probe(self, th: SimThread, c: int, now: int) -> None:
        th.state = PREEMPTED
        self.preempted[c] = th
        for h in th.held:
            self.locks[h[0]].owner_off_cpu(th, now)
        th.oncpu = False
        self.rows_sched.append((now, c, th.tid, PROBE_TID, R_PREEMPT, 0))
        self.start_probe(c, now)

    def start_probe(self, c: int, now: int) -> None:
        ready = self.probe_pending[c]
        start = now if now > ready else ready
        sw = self.c.context_switch_ns
        wake = self.probe_wake[c]
        self.rows_probe.append((wake, start + sw - wake, c, self.probe_tid[c], self.probe_cause[c]))
        self.probe_pending[c] = -1
        self.probe_running[c] = True
        end = start + sw + self.c.probe_run_ns
        self.probe_cpu_ns += end - now
        self.switches += 1
        self.push(end, E_PEND, c, 0)

    def probe_end(self, c: int, t: int) -> None:
        self.probe_running[c] = False
        th = self.preempted[c]
        if th is None:
            self.cpu_next(c, t, PROBE_TID, R_PROBE_END)
            return
        self.preempted[c] = None
        self.rows_sched.append((t, c, PROBE_TID, th.tid, R_PROBE_END, 0))
        th.state = RUN
        th.oncpu = True
        self.switches += 1
        self.start_overhead(th, t, self.c.context_switch_ns)

    def preempt(self, th: SimThread, now: int) -> None:
        """At a preemption point with need_resched: to the probe, or to the run queue's head."""
        c = th.cpu
        if self.probe_pending[c] >= 0:
            self.switch_to_probe(th, c, now)
        else:
            th.state = READY
            th.runnable_at = now
            self.rq_area += len(self.rq) * (now - self.rq_last)
            self.rq_last = now
            self.rq.append(th)
            self.leave_cpu(th, now, R_PREEMPT)

    # ------------------------------------------------------------- the loop
    def run(self) -> None:
        """Pop events and run threads until the heap is empty.

        One function on purpose (the hot loop, benchmarks/replay_speed.py): an event that
        resumes a thread falls through into the instruction loop, which runs the thread
        until it starts a segment that others may interleave with, waits or leaves its CPU.
        The loop makes no reference cycles, only many small tuples: the cyclic garbage
        collector is paused while it runs (it would rescan the workload and the logs).
        """
        with paused_gc():
            self._run()

    def _run(self) -> None:
        heap = self.heap
        pop = heapq.heappop
        push = heapq.heappush
        threads = self.threads
        progress = self.progress
        next_report = 1 << 16
        cst = self.c
        free_switch = cst.context_switch_ns == 0
        slice_ns = cst.timeslice_ns
        full = self.full
        percpu = self.percpu
        idle = self.idle
        rq = self.rq
        cur = self.cur
        probe_pending = self.probe_pending
        locks = self.locks
        lock_cost = self.lock_cost
        lock_tracer = self.lock_tracer
        lock_tail = self.lock_tail
        lock_dtail = self.lock_dtail
        lock_lines = self.lock_lines
        rows_sched = self.rows_sched
        rows_holds = self.rows_holds
        rows_poff = self.rows_poff
        nwait = self.nwait
        wait_area = self.wait_area
        wait_last = self.wait_last
        contended = self.contended
        lock_cls = self.lock_cls
        events = self.events
        work = 0  # work and overhead of the segments started here, added to the totals at the end
        over = 0
        while heap:
            if progress is not None and events >= next_report:
                next_report += 1 << 16
                progress(min(1.0, self.instr / self.total_instr))
            now, _, ev, x, g = pop(heap)
            events += 1
            if ev == E_SEG:
                th = threads[x]
                if th.gen != g:
                    events -= 1
                    continue
                completed = True
            elif ev == E_WAKE:
                th = threads[x]
                th.runnable_at = now
                if not idle:
                    th.state = READY
                    self.rq_area += len(rq) * (now - self.rq_last)
                    self.rq_last = now
                    rq.append(th)
                    continue
                if not free_switch:
                    th.state = READY
                    self.dispatch(idle.pop(), th, now, IDLE_TID, R_DISPATCH)
                    continue
                # nothing to wait for: run it now, without a zero-length event
                self.bind(idle.pop(), th, now, IDLE_TID, R_DISPATCH)
                th.seg_over = False
                th.seg_work = 0
                completed = False
            elif ev == E_GRANT:
                th = threads[x]
                d = now - th.spin_start
                th.spun += d
                self.spin_ns += d
                th.granted = True
                th.state = RUN
                completed = False
            elif ev == E_RESUME:  # woken to retry before it slept: back to its acquisition
                th = threads[x]
                d = now - th.spin_start
                th.spun += d
                self.spin_ns += d
                th.state = RUN
                completed = False
            elif ev == E_PSLEEP:
                th = threads[x]
                if th.presleep and th.spins == g:  # nothing came in time: it sleeps
                    th.presleep = False
                    th.slept = True
                    self.leave_cpu(th, now, R_SLEEP_LOCK)
                continue
            elif ev == E_PWAKE:
                self.probe_wake_ev(x, now)
                continue
            elif ev == E_RSPIN:
                th = threads[x]
                if th.state == SPIN and th.spins == g and th.waiting_lock is not None:
                    th.waiting_lock.spin_limit_reached(th, now)
                continue
            else:
                self.probe_end(x, now)
                continue
            # ---- run ``th`` from ``now``; ``completed``: its current segment has just ended
            code = th.code
            points = th.points
            n = 0
            while True:
                if completed:
                    completed = False
                    work += th.seg_work
                    if th.seg_over:
                        th.seg_over = False
                    elif th.rem == 0:
                        op = code[th.pc][0]
                        if op == REL or op == DOWNGRADE:  # the tracer's time after the stamp is over (issue #16)
                            continue
                        if op >= GZAP:
                            ins = code[th.pc]
                            if op == GZAP:
                                th.g_pending += ins[1]
                                th.g_free = ins[3]
                                if not percpu:
                                    self.poff_dec(th, now)
                                    cap = th.g_cap
                                    maxp = cst.max_gather_pages
                                    while th.g_pending > cap and cap < maxp:
                                        if cst.batch_alloc_fail_p and self.rng.random() < cst.batch_alloc_fail_p:
                                            break
                                        cap = min(maxp, cap + cst.batch_pages)
                                    th.g_cap = cap
                            elif op == GFLUSH:
                                th.g_pending = 0
                            elif op == GPOINT:  # percpu break: the pending pages were flushed, preemption enabled
                                th.g_pending = 0
                                self.poff_dec(th, now)
                                th.g_broken = True
                                continue  # re-run GPOINT after the preemption point
                            elif op == GE:
                                th.g_pending = 0
                                if percpu:
                                    self.poff_dec(th, now)
                        elif op == ACQ:  # the tracer's time before the attempt is over (issue #16): attempt
                            continue
                        th.pc += 1
                        th.fresh = True
                pc = th.pc
                c = th.cpu
                if points[pc] and th.pcount == 0 and (
                    probe_pending[c] >= 0 or (rq and now - th.slice_start >= slice_ns)
                ):
                    self.instr += n
                    events += n
                    self.preempt(th, now)
                    break
                ins = code[pc]
                op = ins[0]
                n += 1
                # --- instructions that start a segment set d (work) and pre (preemptible mid-way)
                if op <= KERN:  # USER or KERN
                    if th.fresh:
                        th.rem = ins[1]
                        th.fresh = False
                        if th.credit:  # issue #16: tracer time replayed at a release, recorded in this work
                            k = th.credit if th.credit < th.rem else th.rem
                            th.rem -= k
                            th.credit -= k
                    d = th.rem
                    if op == USER:
                        pre = True
                        if rq:
                            cut = th.slice_start + slice_ns - now
                            if 0 < cut < d:
                                d = cut
                    else:
                        pre = full and th.pcount == 0
                elif op == ACQ and th.fresh and lock_tracer[ins[1]] and ins[3] and not th.granted:
                    # issue #16: the tracer's time at this acquisition first (not preemptible: a BPF program)
                    th.fresh = False
                    th.traced_at = now + th.debt
                    d = th.rem = min(ins[3], lock_tracer[ins[1]])
                    pre = False
                elif op == ACQ:
                    lid = ins[1]
                    if not th.granted:
                        lk = locks[lid]
                        th.recorded_wait = ins[3]
                        if not lk.acquire(th, now, ins[2]):
                            # parked by the lock (spinning, sleeping or a recorded wait)
                            th.waiting_lock = lk
                            self.instr += n
                            events += n
                            if th.retrying:  # woken, lost the race: the same wait goes on
                                break
                            th.wait_start = now
                            th.spun = 0
                            if th.state != SLEEP:
                                th.slept = False
                            k = lock_cls[lid]  # one waiter more
                            nw = nwait[k]
                            if nw:
                                wait_area[k] += nw * (now - wait_last[k])
                            wait_last[k] = now
                            nwait[k] = nw + 1
                            contended[k] = True
                            break
                        if not th.retrying:  # uncontended
                            if lk.preempt_off:
                                if th.pcount == 0:
                                    th.poff_start = now
                                    th.poff_cause = P_SPINLOCK
                                    th.poff_class = lock_cls[lid]
                                th.pcount += 1
                            if th.traced_at >= 0:
                                th.held.append((lid, now, now - th.traced_at, len(th.held), ins[4]))
                                th.traced_at = -1
                                th.fresh = True
                            else:
                                th.held.append((lid, now, 0, len(th.held), ins[4]))
                            th.debt += lock_cost[lid]
                            if lock_lines[lid]:
                                th.debt += self.migrate(lid, c)
                            th.pc = pc + 1
                            continue
                    # the end of a contended wait: granted, or won its retry after a wake-up. Its timers
                    # (a spin limit) must not act on a later wait: forget the lock, start a new generation
                    th.granted = False
                    th.retrying = False
                    th.waiting_lock = None
                    th.spins += 1
                    wait = now - th.wait_start
                    k = lock_cls[lid]  # one waiter fewer: the integral of waiters over time (Little's L)
                    nw = nwait[k]
                    if nw:
                        wait_area[k] += nw * (now - wait_last[k])
                    wait_last[k] = now
                    nwait[k] = nw - 1
                    contended[k] = True
                    self.rows_waits.append((th.wait_start, wait, c, th.tid, lid, ins[2], th.spun, th.slept))
                    if th.traced_at >= 0:  # the hold's wait counts the tracer's time before the attempt
                        wait = now - th.traced_at
                        th.traced_at = -1
                        th.fresh = True
                    th.held.append((lid, now, wait, len(th.held), ins[4]))
                    th.debt += lock_cost[lid]
                    if lock_lines[lid]:
                        th.debt += self.migrate(lid, c)
                    th.pc = pc + 1
                    continue
                elif (op == REL or op == DOWNGRADE) and th.tail_at < 0 and not th.granted and (
                        lock_tail[ins[1]] if op == REL else lock_dtail[ins[1]]):
                    # issue #16: the tracer's time after the recorded release (downgrade) first, lock held
                    th.tail_at = now + th.debt
                    d = th.rem = lock_tail[ins[1]] if op == REL else lock_dtail[ins[1]]
                    th.fresh = False
                    pre = False
                elif op == REL:
                    lid = ins[1]
                    lk = locks[lid]
                    if th.granted:  # back from spinning on the lock's internal wait_lock
                        th.granted = False
                        self.poff_dec(th, now)
                    else:
                        until = lk.release_wait(now)
                        if until > now:  # mutex-classic: spin (preemption off) until wait_lock is free
                            th.state = SPIN
                            th.spin_start = now
                            self.poff_inc(th, now, P_SPIN_WAIT, lock_cls[lid])
                            self.seq += 1
                            push(heap, (until, self.seq, E_GRANT, th.idx, th.gen))
                            self.instr += n
                            events += n
                            break
                    h = th.held.pop()
                    if th.tail_at >= 0:  # the hold as the tracer recorded it; the tracer's time owed back
                        rows_holds.append((h[1], th.tail_at - h[1], h[2], c, th.tid, lid, ins[2], h[3], h[4]))
                        th.credit += lock_tail[lid]
                        th.tail_at = -1
                        th.fresh = True
                    else:
                        rows_holds.append((h[1], now - h[1], h[2], c, th.tid, lid, ins[2], h[3], h[4]))
                    lk.release(th, now, ins[2])
                    if lk.preempt_off:
                        th.pcount -= 1
                        if th.pcount == 0:
                            rows_poff.append((th.poff_start, now - th.poff_start, c, th.tid, th.poff_cause,
                                              th.poff_class, False))
                    th.pc = pc + 1
                    continue
                elif op == UNTIL or op == BLOCK or op == END:
                    if th.debt:  # pay pending overhead (lock costs) before leaving the CPU
                        th.seg_over = True
                        d = 0
                        pre = False
                        n -= 1  # the instruction itself runs after the payment
                    elif op == UNTIL and ins[2]:  # open mode: wait for the recorded start on the CPU, as user work
                        # (the recorded task was running then: an op that ends early must not become a sleep
                        # and a context switch); re-evaluated after any cut, so the start stays the recorded one
                        d = ins[1] - now
                        if d <= 0:
                            th.pc = pc + 1
                            th.fresh = True
                            continue
                        th.rem = d
                        pre = True
                        if rq:
                            cut = th.slice_start + slice_ns - now
                            if 0 < cut < d:
                                d = cut
                    elif op == END:
                        th.state = DONE
                        self.done += 1
                        if now > self.end:
                            self.end = now
                        self.instr += n
                        events += n
                        self.leave_cpu(th, now, R_EXIT)
                        break
                    else:  # BLOCK, or UNTIL asleep (the gaps of a workload that is not contiguous are idle)
                        if op != BLOCK:
                            until = ins[1]
                        elif self.block_exact:  # as recorded: its wake-up inside it, the dispatch's switch ends it
                            until = now + max(0, ins[1] - self.c.context_switch_ns)
                        else:
                            until = now + ins[1]
                        th.pc = pc + 1
                        th.fresh = True
                        if op == UNTIL and until <= now:
                            continue
                        th.state = BLOCKED
                        if th.held or th.pcount > 0 or probe_pending[c] >= 0 or rq:
                            self.leave_cpu(th, now, R_BLOCK)
                        else:  # Engine.leave_cpu onto an idle CPU, inline
                            cur[c] = None
                            th.oncpu = False
                            th.cpu = -1
                            idle.append(c)
                            rows_sched.append((now, c, th.tid, IDLE_TID, R_BLOCK, 0))
                        self.seq += 1
                        push(heap, (until + (self.wake_cost() if op == BLOCK and not self.block_exact else 0),
                                    self.seq, E_WAKE, th.idx, th.gen))
                        self.instr += n
                        events += n
                        break
                elif op == DOWNGRADE:  # log the write hold, go on holding for read
                    lid = ins[1]
                    h = th.held[-1]
                    at = now
                    if th.tail_at >= 0:  # the stamp the tracer gave both holds; the tracer's time owed back
                        at = th.tail_at
                        th.credit += lock_dtail[lid]
                        th.tail_at = -1
                        th.fresh = True
                    rows_holds.append((h[1], at - h[1], h[2], c, th.tid, lid, 1, h[3], h[4]))
                    th.held[-1] = (lid, at, 0, h[3], h[4])
                    locks[lid].downgrade(th, now)
                    th.pc = pc + 1
                    continue
                elif op == SPAN_B:
                    th.spans.append((now, c))
                    th.pc = pc + 1
                    continue
                elif op == SPAN_E:
                    start, c0 = th.spans.pop()
                    self.rows_ops.append((start, now - start, c0, th.tid, ins[1]))
                    th.pc = pc + 1
                    continue
                elif op == GB:
                    th.g_pending = 0
                    th.g_cap = cst.percpu_batch_pages if percpu else cst.local_batch_pages
                    th.g_full = ins[1]
                    th.g_pt = ins[2]
                    th.g_broken = False
                    if percpu:
                        self.poff_inc(th, now, P_GATHER, -1)
                    th.pc = pc + 1
                    continue
                elif op == GZAP:
                    if th.fresh:
                        th.rem = ins[2]
                        th.fresh = False
                        if not percpu:
                            self.poff_inc(th, now, P_PTL, -1)
                    d = th.rem
                    pre = False
                elif op == GFLUSH or op == GE:
                    pend = th.g_pending
                    if op == GFLUSH and (pend < th.g_cap if percpu else pend <= th.g_cap):  # room left
                        # (the per-CPU batch flushes when full; the on-stack one grew if it could)
                        th.pc = pc + 1
                        continue
                    if th.fresh:
                        th.fresh = False
                        if pend or th.g_full:
                            th.debt += self.flush(th, now, pend, th.g_full, op == GE and th.g_pt > 0)
                        th.rem = round(th.g_free * pend) + (th.g_pt if op == GE else 0)
                    d = th.rem
                    pre = full and not percpu and th.pcount == 0
                elif op == GPOINT:
                    if not percpu:
                        th.pc = pc + 1
                        continue
                    if th.g_broken:
                        th.g_broken = False
                        self.poff_inc(th, now, P_GATHER, -1)
                        th.pc = pc + 1
                        th.fresh = True
                        continue
                    if not (probe_pending[c] >= 0 or (rq and now - th.slice_start >= slice_ns)):
                        th.pc = pc + 1
                        continue
                    # need_resched: tlb_finish_mmu (flush + free what is pending), preempt_enable, cond_resched
                    pend = th.g_pending
                    if th.fresh:
                        th.fresh = False
                        if pend:
                            th.debt += self.flush(th, now, pend, False)
                        th.rem = round(th.g_free * pend)
                    d = th.rem
                    pre = False
                else:
                    raise self.inconsistent(th, now, "bad opcode")
                # --- start a segment of d ns work (+ pending overhead)
                debt = th.debt
                if debt:
                    th.debt = 0
                    over += debt
                th.rem -= d
                th.seg_work = d
                th.seg_debt = debt
                th.segpre = pre
                th.seg_start = now
                end = now + d + debt
                th.seg_end = end
                if not heap or end < heap[0][0]:
                    now = end  # nothing can happen before the segment ends: go on inline
                    n += 1
                    completed = True
                    continue
                th.gen += 1
                self.seq += 1
                push(heap, (end, self.seq, E_SEG, th.idx, th.gen))
                self.instr += n
                events += n
                break
        self.events = events
        self.work_ns += work
        self.overhead_ns += over
        if self.done != len(threads):
            stuck = [th.tid for th in threads if th.state != DONE]
            raise MmreplayError(
                f"the simulation deadlocked with {len(stuck)} threads unfinished (e.g. tids {stuck[:5]}): "
                "a thread slept holding a spinlock while spinners took every CPU; use more CPUs or another policy"
            )
