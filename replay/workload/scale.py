"""`--scale-tasks K`: more (or fewer) tasks doing the recorded work, for what-if replays.

K > 1 adds copies: every thread gets ``floor(K) - 1`` copies and the first
``round(frac(K) * n)`` threads one more. A copy belongs to a copy of its
*process*: new pid, tid and mm, and the locks private to an mm (mmap_lock,
page_table_lock) are the copy's own, while the locks of shared objects
(i_mmap_rwsem of a file, anon_vma, zone and runqueue locks) stay shared — so
scaling N forked mmap-file tasks to 2N keeps them contending on the file's
i_mmap lock, and does not make them contend on one mmap_lock they never shared.

K < 1 keeps the first ``max(1, round(K * n))`` threads (by start time, then tid).
The result is deterministic: the same K gives the same workload.
"""

from __future__ import annotations

import math
from dataclasses import replace

from replay.errors import UsageError
from replay.sim.ops import Critical, Gather, LockRef, Op, Span, Thread, Workload, children

#: locks that belong to one address space (copied with the process)
MM_PRIVATE_CLASSES = frozenset({"mmap_lock", "page_table_lock"})
#: copies get ids above any real pid/tid (PID_MAX_LIMIT is 2^22)
ID_STRIDE = 1 << 22
#: copies' mm_struct and mm-private lock addresses are offset by this per copy
ADDR_STRIDE = 1 << 40


def scale_tasks(workload: Workload, k: float) -> Workload:
    """A workload with ``k`` times the recorded threads (see module doc)."""
    if not (k > 0) or math.isinf(k):
        raise UsageError(f"--scale-tasks must be a positive number (got {k})")
    threads = sorted(workload.threads, key=lambda t: (t.start_ns, t.tid))
    n = len(threads)
    if n == 0 or k == 1:
        return workload
    if k < 1:
        kept = threads[: max(1, round(k * n))]
        return replace(workload, threads=kept, meta={**workload.meta, "scale_tasks": k, "threads_recorded": n})
    whole = math.floor(k)
    extra = round((k - whole) * n)
    out = list(threads)
    for copy in range(1, whole + 1):
        members = threads if copy < whole else threads[:extra]
        out += [_copy(t, copy) for t in members]
    return replace(workload, threads=out, meta={**workload.meta, "scale_tasks": k, "threads_recorded": n})


def _copy(t: Thread, copy: int) -> Thread:
    return replace(
        t,
        tid=t.tid + copy * ID_STRIDE,
        pid=t.pid + copy * ID_STRIDE,
        mm=_addr(t.mm, copy),
        ops=[_remap(op, copy) for op in t.ops],
    )


def _addr(addr: int, copy: int) -> int:
    return (addr + copy * ADDR_STRIDE) % (1 << 64)


def _remap(op: Op, copy: int) -> Op:
    """The op with mm-private locks and mms moved to the copy's address space (iterative: deep nests)."""
    # Build bottom-up: collect nodes in pre-order, rebuild in reverse.
    order: list[Op] = []
    todo: list[Op] = [op]
    while todo:
        o = todo.pop()
        order.append(o)
        todo.extend(children(o))
    new: dict[int, Op] = {}
    for o in reversed(order):
        if isinstance(o, Critical):
            lock = o.lock
            if lock.lock_class in MM_PRIVATE_CLASSES:
                lock = LockRef(lock.lock_class, _addr(lock.addr, copy))
            new[id(o)] = replace(o, lock=lock, body=tuple(new[id(b)] for b in o.body),
                                 downgrade=None if o.downgrade is None else new[id(o.downgrade)])
        elif isinstance(o, Span):
            new[id(o)] = replace(o, body=tuple(new[id(b)] for b in o.body))
        elif isinstance(o, Gather):
            new[id(o)] = replace(o, mm=_addr(o.mm, copy))
        else:
            new[id(o)] = o
    return new[id(op)]
