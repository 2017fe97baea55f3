"""Build small, realistic traces for tests: per-thread timelines written with write_trace.

Each thread has its own clock (``now``) that its methods advance; nested work is
written with context managers, so a test reads like the kernel code path it
models::

    b = TraceBuilder(cpus=4)
    t = b.thread(101, comm="mmap-file")
    t.run(2_000)                                   # user work, on CPU
    with t.syscall("munmap", arg0=0x7f00_0000_0000, arg1=4096):
        t.run(300)
        with t.mmap_lock("write", wait=1_000):     # lock_holds row (tier 1 sees mmap_lock)
            with t.lock("i_mmap_rwsem", FILE_A, wait=2_500):   # lock_waits row only (tier 1)
                t.run(400)                         # hold: invisible to tier 1
            t.gather(pages=64, flushes=1)          # page_free_batches + tlb_flushes
    with t.fault(0x7f00_0000_1000):                # page_faults + the fault's mmap_lock read hold
        t.run(700)
    t.sleep(50_000)                                # sched_switch out (prev_state=1) and back in
    b.write(tmp_path / "t", tier=1)

The builder does not schedule: waits are what the test says they are (or,
with ``wait=None``, until the lock's last release written so far), and threads
must be put on distinct CPUs (the default) if their timelines overlap.
``b.truth`` keeps every lock hold, including those tier 1 cannot see, so
tests can check the missing-holds model against the ground truth.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from replay.trace import Host, Probe, write_trace

#: lock_waits flags (LCB_F_*)
SPIN, READ, WRITE, RT, PERCPU, MUTEX = 1, 2, 4, 8, 16, 32

MM_BASE = 0xFFFF_8880_1000_0000
FILE_A = 0xFFFF_8880_2000_0100  # i_mmap_rwsem of a shared file
FILE_B = 0xFFFF_8880_2000_0200
ANON_VMA_ROOT = 0xFFFF_8880_3000_0040  # a root anon_vma shared by forked children


TIER1_TABLES = ("lock_holds", "lock_waits", "syscalls", "page_faults", "page_free_batches", "tlb_flushes",
                "sched_switch", "sched_wakeup", "ipis")


def mm_addr(pid: int) -> int:
    """The mm_struct (and so mmap_lock) address the builder gives process ``pid``."""
    return MM_BASE + pid * 0x1000


# Fake kernel text: one stack per lock class, so stack-based classification has something to chew on.
_TEXT = 0xFFFF_FFFF_8100_0000
_SYMBOLS = [
    "down_write", "down_read", "mutex_lock", "_raw_spin_lock", "rwsem_down_write_slowpath",
    "unlink_file_vma", "free_pgtables", "unmap_region", "do_vmi_munmap", "__vm_munmap",
    "anon_vma_clone", "__split_vma", "mmap_region", "do_mmap", "lock_vma_under_rcu",
    "handle_mm_fault", "do_user_addr_fault", "exc_page_fault", "mm_take_all_locks",
    "__pte_alloc", "free_pcppages_bulk", "tlb_finish_mmu", "exit_mmap",
]
_STACKS = {
    "i_mmap_rwsem": ["rwsem_down_write_slowpath", "down_write", "unlink_file_vma", "free_pgtables",
                     "unmap_region", "do_vmi_munmap", "__vm_munmap"],
    "anon_vma": ["rwsem_down_write_slowpath", "down_write", "anon_vma_clone", "__split_vma",
                 "do_vmi_munmap", "__vm_munmap"],
    "mmap_lock": ["rwsem_down_write_slowpath", "down_write", "do_vmi_munmap", "__vm_munmap"],
    "page_table_lock": ["_raw_spin_lock", "__pte_alloc", "handle_mm_fault", "do_user_addr_fault"],
    "zone_lock": ["_raw_spin_lock", "free_pcppages_bulk", "tlb_finish_mmu", "exit_mmap"],
    "runqueue_lock": ["_raw_spin_lock"],
    "other": ["mutex_lock"],
}
_STACK_IDS = {cls: i for i, cls in enumerate(_STACKS)}


def _sym_addr(name: str) -> int:
    return _TEXT + _SYMBOLS.index(name) * 0x100


@dataclass
class Hold:
    """Ground truth of one lock hold, visible in the trace or not."""

    tid: int
    lock_class: str
    addr: int
    mode: str
    start: int  # acquire attempt
    acquired: int
    released: int = 0

    @property
    def wait(self) -> int:
        return self.acquired - self.start

    @property
    def hold(self) -> int:
        return self.released - self.acquired


@dataclass
class _Rows:
    """Rows of every table, each with a creation counter for deterministic seq numbers."""

    data: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    counter: int = 0

    def add(self, table: str, row: dict[str, Any]) -> dict[str, Any]:
        row["_n"] = self.counter
        self.counter += 1
        self.data.setdefault(table, []).append(row)
        return row


class ThreadBuilder:
    """One task's timeline. Every method advances ``now`` by the time it models."""

    def __init__(self, trace: TraceBuilder, tid: int, pid: int, comm: str, cpu: int, start_ns: int):
        self.b = trace
        self.tid, self.pid, self.comm, self.cpu = tid, pid, comm, cpu
        self.now = start_ns
        self.held: list[Hold] = []

    # -- plain time ------------------------------------------------------------------

    def run(self, ns: int) -> ThreadBuilder:
        """On-CPU work that touches no modelled lock."""
        self.now += ns
        return self

    def _off_cpu(self, ns: int, state: int, runnable: int = 0) -> None:
        """``runnable``: of a sleep's ``ns``, the last part after its wake-up (waiting for the CPU)."""
        out = self.now
        self.b._rows.add("sched_switch", dict(ts=out, cpu=self.cpu, prev_tid=self.tid, prev_prio=120,
                                              prev_state=state, next_tid=0, next_prio=120))
        self.now += ns
        if state:
            self.b._rows.add("sched_wakeup", dict(ts=self.now - runnable, cpu=self.cpu, tid=self.tid, prio=120,
                                                  target_cpu=self.cpu, kind="wakeup", waker_tid=0))
        self.b._rows.add("sched_switch", dict(ts=self.now, cpu=self.cpu, prev_tid=0, prev_prio=120,
                                              prev_state=0, next_tid=self.tid, next_prio=120))

    def sleep(self, ns: int, state: int = 1, runnable: int = 0) -> ThreadBuilder:
        """Block off-CPU (I/O, nanosleep, waiting for a child): switched out with prev_state≠0, woken
        ``runnable`` ns before it runs again."""
        self._off_cpu(ns, state, runnable)
        return self

    def preempted(self, ns: int) -> ThreadBuilder:
        """Runnable but off-CPU (switched out with prev_state=0)."""
        self._off_cpu(ns, 0)
        return self

    # -- system calls and faults ----------------------------------------------------------

    @contextlib.contextmanager
    def syscall(self, name: str, arg0: int = 0, arg1: int = 0, ret: int = 0) -> Iterator[ThreadBuilder]:
        """A traced mm system call spanning whatever the body does."""
        row = self.b._rows.add("syscalls", dict(ts=self.now, cpu=self.cpu, pid=self.pid, tid=self.tid, name=name,
                                                arg0=arg0, arg1=arg1, ret=ret, incomplete=False))
        yield self
        row["dur"] = self.now - row["ts"]

    @contextlib.contextmanager
    def fault(self, address: int, *, write: bool = True, entry_ns: int = 100, wait: int = 0,
              vma_lock: bool = False) -> Iterator[ThreadBuilder]:
        """A user page fault: page_faults row, ``entry_ns`` of work, then the body under mmap_lock
        read (or, with ``vma_lock``, under a per-VMA lock that no tier-1 tracepoint sees)."""
        self.b._rows.add("page_faults", dict(ts=self.now, cpu=self.cpu, pid=self.pid, tid=self.tid,
                                             address=address, ip=0x40_1000, error_code=4 | (2 if write else 0)))
        self.now += entry_ns
        if vma_lock:
            yield self
        else:
            with self.mmap_lock("read", wait=wait):
                yield self

    # -- locks ------------------------------------------------------------------------

    @contextlib.contextmanager
    def mmap_lock(self, mode: str, *, wait: int | None = 0, sleeping: bool = False,
                  runnable: int = 0) -> Iterator[ThreadBuilder]:
        """mmap_lock of this thread's process: tier 1 records every acquisition (lock_holds)."""
        with self.lock("mmap_lock", mm_addr(self.pid), mode, wait=wait, sleeping=sleeping, runnable=runnable):
            yield self

    @contextlib.contextmanager
    def lock(self, lock_class: str, addr: int, mode: str = "write", *, wait: int | None = 0,
             flags: int | None = None, sleeping: bool = False, runnable: int = 0) -> Iterator[ThreadBuilder]:
        """Hold a lock around the body. A wait > 0 is contended: it writes a lock_waits row (what
        lock:contention_begin/end see). Hold times reach the trace for mmap_lock always and for
        other classes only when the trace is written with ``tier=2``. ``sleeping`` puts the
        waiter off-CPU for the wait (a sleeping lock's slow path), woken ``runnable`` ns before it runs again.

        ``wait=None`` derives the wait from the lock itself: the thread waits until the last
        release written so far (FIFO hand-off), so write contending threads in arrival order.
        """
        key = (lock_class, addr)
        if wait is None:
            wait = max(0, self.b._free_at.get(key, 0) - self.now)
        h = Hold(self.tid, lock_class, addr, mode, start=self.now, acquired=self.now + wait)
        if wait:
            if flags is None:
                flags = (READ if mode == "read" else WRITE) if lock_class in ("mmap_lock", "i_mmap_rwsem",
                                                                              "anon_vma") else SPIN
            self.b._rows.add("lock_waits", dict(ts=self.now, dur=wait, cpu=self.cpu, pid=self.pid, tid=self.tid,
                                                lock_addr=addr, flags=flags, ret=0, begins=1,
                                                lock_class=lock_class, stack_id=_STACK_IDS[lock_class],
                                                incomplete=False))
            if sleeping:
                self._off_cpu(wait, 2, runnable)
            else:
                self.now += wait
        depth = len(self.held)
        self.held.append(h)
        self.b.truth.append(h)
        yield self
        self.held.pop()
        h.released = self.now
        self.b._free_at[key] = max(self.b._free_at.get(key, 0), self.now)
        self.b._holds.append((h, depth))

    # -- page freeing -----------------------------------------------------------------------

    def gather(self, pages: int, *, flushes: int = 1, ns_per_page: int = 20, fullmm: bool = False,
               remote_cpus: int = 0) -> ThreadBuilder:
        """An mmu_gather freeing ``pages`` in ``flushes`` batches: one page_free_batches burst and
        one tlb_flush (plus an IPI when ``remote_cpus``) per batch; a gathers row in tier 2."""
        start = self.now
        left = pages
        for i in range(flushes):
            n = left // (flushes - i)
            left -= n
            self.b._rows.add("page_free_batches", dict(ts=self.now, dur=n * ns_per_page, cpu=self.cpu, pid=self.pid,
                                                       tid=self.tid, pages=n, batched=True, incomplete=False))
            self.now += n * ns_per_page
            self.b._rows.add("tlb_flushes", dict(ts=self.now, cpu=self.cpu, pid=self.pid, tid=self.tid,
                                                 reason="TLB_LOCAL_SHOOTDOWN", pages=n if n <= 33 else -1))
            if remote_cpus:
                self.b._rows.add("tlb_flushes", dict(ts=self.now, cpu=self.cpu, pid=self.pid, tid=self.tid,
                                                     reason="TLB_REMOTE_SEND_IPI", pages=n if n <= 33 else -1))
                self.b._rows.add("ipis", dict(ts=self.now, cpu=self.cpu, pid=self.pid, tid=self.tid, target_cpu=-1,
                                              ncpus=remote_cpus, callsite=_sym_addr("tlb_finish_mmu"), callback=0))
            self.now += 1
        self.b._rows.add("gathers", dict(ts=start, dur=self.now - start, cpu=self.cpu, pid=self.pid, tid=self.tid,
                                         mm=mm_addr(self.pid), fullmm=fullmm, flushes=flushes, pages=pages,
                                         incomplete=False))
        return self


class TraceBuilder:
    """A whole trace: threads, host facts, and ``write()`` to a trace directory."""

    def __init__(self, cpus: int = 4, start_ns: int = 1_000_000_000, preempt_model: str = "voluntary"):
        self.cpus = cpus
        self.start_ns = start_ns
        self.preempt_model = preempt_model
        self.threads: dict[int, ThreadBuilder] = {}
        self.truth: list[Hold] = []
        self._holds: list[tuple[Hold, int]] = []
        self._free_at: dict[tuple[str, int], int] = {}  # last release written per lock (wait=None)
        self._rows = _Rows()

    def thread(self, tid: int, *, pid: int | None = None, comm: str = "worker", cpu: int | None = None,
               start_ns: int | None = None) -> ThreadBuilder:
        """A new task; by default its own process (pid = tid), on the next CPU, starting at the trace start."""
        if tid in self.threads:
            raise ValueError(f"thread {tid} already exists")
        cpu = len(self.threads) % self.cpus if cpu is None else cpu
        t = ThreadBuilder(self, tid, tid if pid is None else pid, comm, cpu,
                          self.start_ns if start_ns is None else start_ns)
        self.threads[tid] = t
        return t

    @property
    def end_ns(self) -> int:
        return max((t.now for t in self.threads.values()), default=self.start_ns)

    def tables(self, tier: int = 1) -> dict[str, list[dict[str, Any]]]:
        """Every table as row dicts, with seq numbered by (ts, creation order)."""
        # every probe of the tier ran, so each of its tables exists, empty or not
        rows: dict[str, list[dict[str, Any]]] = {name: [] for name in TIER1_TABLES}
        rows.update({k: [dict(r) for r in v] for k, v in self._rows.data.items()})
        holds = []
        for h, depth in self._holds:
            if h.lock_class == "mmap_lock" or tier >= 2:
                t = self.threads[h.tid]
                holds.append(dict(ts=h.acquired, dur=h.hold, wait=h.wait, cpu=t.cpu, pid=t.pid, tid=h.tid,
                                  lock_addr=h.addr, lock_class=h.lock_class, mode=h.mode, success=True,
                                  depth=depth, stack_id=_STACK_IDS[h.lock_class], incomplete=False,
                                  _n=-1, _open=h.start))
        rows["lock_holds"] = holds
        if tier < 2:
            rows.pop("gathers", None)
        else:
            rows.setdefault("gathers", [])
        events = [(r.get("_open", r["ts"]), r["_n"], r) for v in rows.values() for r in v]
        for seq, (_, _, r) in enumerate(sorted(events, key=lambda e: (e[0], e[1]))):
            r["seq"] = seq
        for v in rows.values():
            for r in v:
                r.pop("_n"), r.pop("_open", None)
        rows["tasks"] = [dict(tid=t.tid, pid=t.pid, comm=t.comm) for t in self.threads.values()]
        rows["stacks"] = [dict(stack_id=i, ips=[_sym_addr(s) + 0x10 for s in frames])
                          for i, frames in enumerate(_STACKS.values())]
        rows["symbols"] = [dict(addr=_sym_addr(s), name=s, module="", file=None, line=None) for s in _SYMBOLS]
        return rows

    def write(self, path: str | Path, *, tier: int = 1, omit: tuple[str, ...] = ()) -> Path:
        """Write the trace directory; ``omit`` leaves tables out (a probe that did not load)."""
        from replay.trace.schema import TABLES_BY_NAME

        tables = {}
        all_rows = self.tables(tier)
        for name, rows in all_rows.items():
            if name in omit:
                continue
            spec = TABLES_BY_NAME[name]
            tables[name] = {c.name: pa.array([r.get(c.name) for r in rows], pa.string() if c.is_enum else c.type)
                            for c in spec.columns}
        probes = [Probe(name=n, tier=1, events=len(all_rows.get(t, [])))
                  for n, t in (("mmap_lock", "lock_holds"), ("lock:contention", "lock_waits"),
                               ("syscalls", "syscalls"), ("exceptions:page_fault_user", "page_faults"),
                               ("kmem:mm_page_free_batched", "page_free_batches"), ("tlb:tlb_flush", "tlb_flushes"),
                               ("sched", "sched_switch"), ("ipi", "ipis"))
                  if t not in omit]
        if tier >= 2:
            probes.append(Probe(name="tlb_gather_mmu", tier=2, events=len(all_rows.get("gathers", []))))
        host = Host(kernel_release="6.8.0-test", arch="x86_64", page_size=4096, cpus=self.cpus,
                    preempt_model=self.preempt_model, hostname="builder")
        write_trace(path, tables, host=host, probes=probes, start_ns=self.start_ns, end_ns=self.end_ns,
                    command=["tests/tracebuilder.py"])
        return Path(path)
