"""Lay the tasks' own timelines onto CPUs: time sharing, sleeps, and the sched rows they leave.

Each task is pinned to one CPU (task i on CPU i mod cpus). On a CPU the tasks
take turns round robin: a task runs for at least a slice (3 ms, about the
EEVDF base slice of a 24-CPU machine: 0.75 ms x (1 + log2 24)) and is
preempted at its next *free* boundary, a point outside every lock hold,
syscall and gather (the user-mode loop), if another task is runnable; a
``block`` leaf takes it off the CPU (prev_state 2) until its sleep is over.
This models a recording on a machine with fewer CPUs than tasks without ever
preempting a lock holder: the synthetic trace stays "uncontended", and the
replayer decides what contention and preemption do.

The result per task is a piecewise shift from its own clock to the CPU's
clock (real = virtual + shift, constant between two resumptions), the
boundary where the recording ends for it, and the sched_switch / sched_wakeup
rows of the CPU.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from replay.synth.template import Timeline

SLICE_NS = 3_000_000
PRIO = 120  # nice 0
TASK_RUNNING, TASK_INTERRUPTIBLE, TASK_UNINTERRUPTIBLE, TASK_DEAD = 0, 1, 2, 0x80


@dataclass
class TaskRun:
    """One task's timeline and, after scheduling, how it maps onto its CPU."""

    timeline: Timeline
    tid_of_leaf: Callable[[int], int]
    blocks: np.ndarray = field(init=False)  # global leaf indices of its sleeps
    pos: int = 0
    wake: float = 0.0
    resume_v: list[float] = field(default_factory=list)
    resume_shift: list[float] = field(default_factory=list)
    stop: int = 0  # boundary index where the recording ends for this task

    def __post_init__(self) -> None:
        self.blocks = self.timeline.block_leaves()

    @property
    def v(self) -> np.ndarray:
        return self.timeline.v

    def release(self) -> None:
        """Drop the big arrays once the task's rows are out (keeps the shifts)."""
        self.blocks = np.zeros(0, np.int64)
        self.timeline.v = np.zeros(0)

    def next_free(self, at_v: float) -> int:
        """The first preemptible boundary at or after own-clock time ``at_v``."""
        return self.timeline.next_free(int(np.searchsorted(self.v, at_v, "left")))

    def last_free(self, at_v: float) -> int:
        """The last preemptible boundary at or before ``at_v``, but not before where it is now."""
        b = self.timeline.last_free(int(np.searchsorted(self.v, at_v, "right")) - 1)
        return self.pos if b is None else max(b, self.pos)

    def next_block(self) -> int:
        i = int(np.searchsorted(self.blocks, self.pos, "left"))
        return int(self.blocks[i]) if i < self.blocks.size else self.v.size

    def real(self, v: np.ndarray, *, end: bool = False) -> np.ndarray:
        """Map own-clock times to CPU times. ``end``: the time closes an interval, so a
        resumption at exactly that time belongs after it."""
        rv = np.asarray(self.resume_v)
        i = np.searchsorted(rv, v, "left" if end else "right") - 1
        return v + np.asarray(self.resume_shift)[np.maximum(i, 0)]


@dataclass
class SchedRows:
    switch: list[tuple[float, int, int, int, int]] = field(default_factory=list)  # ts, cpu, prev, state, next
    wakeup: list[tuple[float, int, int, str, int]] = field(default_factory=list)  # ts, cpu, tid, kind, waker


def schedule_cpu(cpu: int, tasks: list[TaskRun], end_ns: float, rows: SchedRows, slice_ns: float = SLICE_NS) -> None:
    """Run ``tasks`` round robin on ``cpu`` until ``end_ns``; fills their shifts and stops."""
    rq: deque[TaskRun] = deque(tasks)
    blocked: list[TaskRun] = []
    now = 0.0
    prev_tid: int | None = None  # None: the trace starts with the first task already running
    prev_state = TASK_RUNNING

    def switch(ts: float, next_tid: int) -> None:
        nonlocal prev_tid, prev_state
        if prev_tid is not None and ts < end_ns:
            rows.switch.append((ts, cpu, prev_tid, prev_state, next_tid))
        prev_tid, prev_state = next_tid, TASK_RUNNING

    def wake_due(t: float) -> None:
        for task in sorted((b for b in blocked if b.wake <= t), key=lambda b: b.wake):
            blocked.remove(task)
            rq.append(task)

    while True:
        if not rq:
            if not blocked:
                break
            first = min(blocked, key=lambda b: b.wake)
            now = max(now, first.wake)
            if now >= end_ns:
                break
            wake_due(now)
        task = rq.popleft()
        if prev_tid is None or prev_tid != task.tid_of_leaf(task.pos):
            switch(now, task.tid_of_leaf(task.pos))
        shift = now - task.v[task.pos]
        task.resume_v.append(float(task.v[task.pos]))
        task.resume_shift.append(shift)
        while True:
            limit_v = end_ns - shift
            block = task.next_block()
            slice_end = task.next_free(task.v[task.pos] + slice_ns)
            stop = min(block, slice_end)
            if stop >= task.v.size - 1 or task.v[stop] > limit_v:
                task.stop = task.last_free(limit_v)
                now = end_ns
                for other in [*rq, *blocked]:
                    other.stop = other.pos
                return
            now = task.v[stop] + shift
            task.pos = stop
            if stop == block:
                task.pos = block + 1
                task.wake = now + (task.v[block + 1] - task.v[block])
                task.stop = task.pos  # if it never wakes before the end
                blocked.append(task)
                if task.wake < end_ns:
                    rows.wakeup.append((task.wake, cpu, task.tid_of_leaf(task.pos), "wakeup", 0))
                prev_tid, prev_state = task.tid_of_leaf(block), TASK_UNINTERRUPTIBLE
                wake_due(now)
                if not rq:
                    switch(now, 0)  # idle
                break
            wake_due(now)
            if rq:
                prev_tid, prev_state = task.tid_of_leaf(stop - 1), TASK_RUNNING
                rq.append(task)
                break
            shift = now - task.v[task.pos]  # unchanged: it kept running
    for t in tasks:
        t.stop = max(t.stop, 0)
