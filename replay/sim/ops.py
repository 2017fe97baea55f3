"""The simulator's input: per-thread streams of operations (the reconstructed work).

Work reconstruction (replay/workload/) turns a trace into a ``Workload``; the
synthesizer and the tests build them directly. The simulator (replay/sim/)
executes a Workload under a policy set. Durations are CPU work in ns *as
recorded*; the simulator decides how long they take under other policies
(waiting, spinning, preemption, flush costs come on top).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class LockRef:
    """A lock instance: its class (schema.LOCK_CLASSES) and kernel address."""

    lock_class: str
    addr: int


@dataclass(frozen=True, slots=True)
class Think:
    """CPU work outside any modelled lock (user code or unrelated kernel work); preemptible."""

    ns: int
    at_ns: int | None = None  # recorded start, for open replay and the identity check


@dataclass(frozen=True, slots=True)
class Block:
    """Off-CPU time not caused by a modelled lock (I/O, sleeping, waiting for a child)."""

    ns: int
    at_ns: int | None = None


@dataclass(frozen=True, slots=True)
class Critical:
    """Acquire ``lock`` in ``mode``, run ``body`` (nested sections, gathers), spend
    ``hold_ns`` of CPU, release.

    ``hold_ns`` is the hold time *excluding* what ``body`` takes. Nesting
    expresses lock order (mm_take_all_locks is a chain hundreds deep; the
    simulator must not recurse on it).

    ``downgrade``: a write section that ends in ``mmap_write_downgrade`` (munmap
    does): the hold turns into a read hold without being released, and the
    given read section of the same lock (its body, then its hold_ns) runs before
    the release. A lock policy that cannot share keeps the hold exclusive.
    """

    lock: LockRef
    mode: str  # "read" | "write"
    hold_ns: int
    body: tuple[Op, ...] = ()
    at_ns: int | None = None  # recorded start of the acquire attempt
    recorded_wait_ns: int | None = None  # what the trace saw; used by the as-recorded policy
    #: the recorded waiter left its CPU during the wait (sched_switch); None: not known. as-recorded
    #: replays a wait that slept as a sleep and one that did not on the CPU, whatever the class
    recorded_wait_slept: bool | None = None
    derived: bool = False  # hold_ns comes from the missing-holds model, not a measurement
    downgrade: Critical | None = None  # the read section after downgrade_write (mode write only)


@dataclass(frozen=True, slots=True)
class Gather:
    """An mmu_gather: unmap and free ``pages`` base pages (and ``pt_pages`` page-table
    pages) of mm ``mm``, flushing the TLB as the gather policy dictates."""

    pages: int
    pt_pages: int = 0
    mm: int = 0
    fullmm: bool = False
    recorded_flushes: int | None = None
    recorded_ns: int | None = None  # recorded duration of the whole gather, when known
    at_ns: int | None = None


@dataclass(frozen=True, slots=True)
class Span:
    """A labelled operation whose end-to-end latency is reported: a page fault, a
    munmap, an mmap, an exit. Its ``body`` is what it did."""

    kind: str  # fault | mmap | munmap | mprotect | madvise | brk | mremap | exit | fork | other
    body: tuple[Op, ...]
    at_ns: int | None = None
    recorded_ns: int | None = None


Op = Think | Block | Critical | Gather | Span


def children(op: Op) -> tuple[Op, ...]:
    """The ops nested in ``op``: a Critical's or Span's body, then a Critical's downgrade section."""
    if type(op) is Critical:
        return op.body if op.downgrade is None else (*op.body, op.downgrade)
    if type(op) is Span:
        return op.body
    return ()


@dataclass
class Thread:
    """One task's ordered work. ``mm`` groups threads sharing an address space
    (TLB shootdowns go to the CPUs running the same mm)."""

    tid: int
    pid: int
    ops: list[Op]
    mm: int = 0
    comm: str = ""
    start_ns: int = 0  # recorded first activity; threads start then in both modes
    prio: int = 120


@dataclass
class Workload:
    """Everything the simulator needs to replay a trace or a synthetic pattern."""

    threads: list[Thread]
    cpus: int
    name: str = ""
    #: lock classes whose hold times were derived by the missing-holds model
    derived_classes: frozenset[str] = frozenset()
    #: provenance: trace path, manifest facts, reconstruction notes
    meta: dict[str, object] = field(default_factory=dict)
    #: each thread's top-level ops cover its recorded time (Think and Block fill every gap, as reconstruction
    #: makes them): in open replay, waiting for an op's recorded start is time the task was running, so it
    #: waits on its CPU; otherwise (synthetic arrivals) the gaps are idle and it sleeps
    contiguous: bool = False

    @property
    def lock_classes(self) -> set[str]:
        from replay.sim.neutral import Emitted, counts

        seen: set[str] = set()
        stack: list[Op] = [op for t in self.threads for op in t.ops]
        neutral = {}
        while stack:
            op = stack.pop()
            if isinstance(op, Critical):
                seen.add(op.lock.lock_class)
            elif type(op) is Emitted:  # policy-neutral instructions (reconstruct(emit=True))
                neutral[id(op.neutral)] = op.neutral
                continue
            stack.extend(children(op))
        for nc in neutral.values():
            seen.update(counts(nc)[0])
        return seen
