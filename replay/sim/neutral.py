"""Policy-neutral instructions: a thread's common segments flattened once, for every policy set.

Most of a long recording is a few shapes of work (a system call around its
mmap_lock section, a lone lock section, the think time between them). Their
instructions are the same under every policy set but for the preemption points
(the preemption model; whether a lock's policy sleeps), the lock and span-kind
indexes (first seen in walk order, a set's Program numbers its own locks), the
``UNTIL``s (open replay only) and the ``--perturb`` noise. Columnar
reconstruction (replay/workload/emit.py) writes those segments straight from
the trace's columns as a ``NeutralCode``: the instructions with the trace's own
lock and kind numbers and a *point class* per instruction, no op object.

A thread's ``ops`` then mixes ``Emitted`` pieces (rows ``lo:hi`` of its
NeutralCode, in walk order) with ordinary op objects (the rare segments: gathers,
derived holds, deep nests, off-CPU stretches). ``walk_thread`` flattens such a
thread for one Flattener: the op objects through the usual walk, the pieces by
one vectorised pass; the result is what the op objects of the same segments
give, byte for byte (tests/test_reconstruct_emit.py): locks and kinds are
registered in walk order across pieces and op objects, noise is drawn in walk
order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from replay.sim.ops import LockRef, Thread
from replay.sim.program import ACQ, DOWNGRADE, END, KERN, REL, SPAN_B, SPAN_E, USER, WIDTH

#: point classes: a point under full preemption only; always a point; an acquire inside the kernel
#: (a point under full preemption, and under voluntary when the lock's policy sleeps); an UNTIL (open
#: replay only: dropped in closed replay, a point in open)
P_FULL, P_TRUE, P_ACQ, P_UNTIL = 0, 1, 2, 3


@dataclass(eq=False, slots=True)
class NeutralCode:
    """A thread's policy-neutral instructions, as columns (one row per instruction).

    ``op``, ``a``, ``b``, ``d``: the instruction's opcode and operands 1, 2 and 4 (program.WIDTH's
    layout), with ACQ/REL/DOWNGRADE's lock an index into ``locks`` and SPAN_B/E's kind an index into
    ``kinds``; operand 3 is only ever ACQ's recorded wait: ``wait`` holds it, one per ACQ row, in order.
    UNTIL's on-CPU operand is the flattening's own (left 0 here).
    """

    op: np.ndarray  # uint8
    a: np.ndarray  # int64
    b: np.ndarray  # uint8
    d: np.ndarray  # uint8
    pclass: np.ndarray  # uint8: P_*
    wait: np.ndarray  # int64, per ACQ row
    locks: list[LockRef]
    kinds: list[str]

    def __len__(self) -> int:
        return len(self.op)


@dataclass(frozen=True, slots=True, eq=False)
class Emitted:
    """Rows ``lo:hi`` of a thread's NeutralCode, standing in the thread's ops where their ops would be."""

    neutral: NeutralCode
    lo: int
    hi: int


def emitted(th: Thread) -> NeutralCode | None:
    """The thread's NeutralCode if some of its ops are Emitted pieces."""
    for op in th.ops:
        if type(op) is Emitted:
            return op.neutral
    return None


def _first_seen(col: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """(sorted distinct values of col[rows], [(row of first sight, value)] in order of first sight)."""
    vals = col[rows]
    u, first = np.unique(vals, return_index=True)
    order = np.argsort(first, kind="stable")
    return u, list(zip(rows[first[order]].tolist(), u[order].tolist(), strict=True))


#: rows of a NeutralCode made into instructions at a time (bounds the temporary arrays)
WINDOW = 1 << 20


def walk_thread(f, th: Thread, walk_ops: Callable) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Thread ``th``'s (code, points) under Flattener ``f``, in consecutive parts, its END last: together
    what ``walk_ops(f, [th])`` gives for the same thread made of op objects only."""
    nc = emitted(th)
    if nc is None:
        code, points, _ = walk_ops(f, [th])
        yield code, points
        return
    op = nc.op
    lock_rows = np.flatnonzero((op == ACQ) | (op == REL) | (op == DOWNGRADE))
    kind_rows = np.flatnonzero((op == SPAN_B) | (op == SPAN_E))
    lu, lfirst = _first_seen(nc.a, lock_rows)
    ku, kfirst = _first_seen(nc.a, kind_rows)
    del lock_rows, kind_rows
    lid_of = np.zeros(len(lu), np.int64)
    kid_of = np.zeros(len(ku), np.int64)
    li = ki = 0
    work_rows = np.flatnonzero((op == USER) | (op == KERN)) if f.perturbing else None
    scaled = nc.a.copy() if f.perturbing else None
    wi = 0
    parts: list[object] = []  # Emitted pieces and (code, points) of op runs, in walk order
    pending: list[object] = []

    def run_ops() -> None:
        code, points, _ = walk_ops(f, [Thread(th.tid, th.pid, list(pending), mm=th.mm)])
        parts.append((code[:-1], points[:-1]))  # without the END
        pending.clear()

    # first every lock, kind and noise draw in walk order (the op runs' instructions on the way), then the
    # pieces' instructions, which need no more of that order
    for item in th.ops:
        if type(item) is not Emitted:
            pending.append(item)
            continue
        if pending:
            run_ops()
        hi = item.hi
        while li < len(lfirst) and lfirst[li][0] < hi:  # locks first seen in this piece, in order
            local = lfirst[li][1]
            lid_of[np.searchsorted(lu, local)] = f.lock(nc.locks[local], th.tid)
            li += 1
        while ki < len(kfirst) and kfirst[ki][0] < hi:
            local = kfirst[ki][1]
            kid_of[np.searchsorted(ku, local)] = f.kind(nc.kinds[local])
            ki += 1
        if scaled is not None:  # the noise of this piece's Think and hold times, in walk order
            scale = f.scale
            while wi < len(work_rows) and work_rows[wi] < hi:
                r = int(work_rows[wi])
                scaled[r] = scale(int(scaled[r]))
                wi += 1
        parts.append(item)
    if pending:
        run_ops()
    sleeping = np.asarray(f.sleeping_lock, dtype=bool)
    acq_before = 0  # ACQ rows before the window (their waits are nc.wait in order)
    for part in parts:
        if type(part) is not Emitted:
            yield part
            continue
        for lo in range(part.lo, part.hi, WINDOW):
            hi = min(lo + WINDOW, part.hi)
            code, points, acqs = _window(f, nc, lo, hi, scaled, lu, lid_of, ku, kid_of, sleeping, acq_before)
            acq_before += acqs
            yield code, points
    yield np.asarray([[END, 0, 0, 0, 0]], np.int64), np.ones(1, np.uint8)


def _window(f, nc: NeutralCode, lo: int, hi: int, scaled: np.ndarray | None, lu: np.ndarray, lid_of: np.ndarray,
            ku: np.ndarray, kid_of: np.ndarray, sleeping: np.ndarray, acq_before: int
            ) -> tuple[np.ndarray, np.ndarray, int]:
    """Rows ``lo:hi`` of ``nc`` as Flattener ``f``'s instructions and points; and how many ACQs they hold.

    Closed replay drops the UNTIL rows before the instructions are made (a gather of the narrow columns)
    rather than after (a copy of the 40-byte rows)."""
    op = nc.op[lo:hi]
    a = nc.a[lo:hi] if scaled is None else scaled[lo:hi]
    b, d, pc = nc.b[lo:hi], nc.d[lo:hi], nc.pclass[lo:hi]
    acq = op == ACQ
    n_acq = int(np.count_nonzero(acq))
    waits = nc.wait[acq_before:acq_before + n_acq]
    if not f.open_mode:  # closed replay has no UNTIL: the ACQ rows and their order are unchanged
        keep = np.flatnonzero(pc != P_UNTIL)
        if len(keep) < len(pc):
            op, a, b, d, pc, acq = op[keep], a[keep], b[keep], d[keep], pc[keep], acq[keep]
    code = np.empty((len(op), WIDTH), np.int64)
    code[:, 0] = op
    code[:, 1] = a
    code[:, 2] = b
    code[:, 3] = 0
    code[acq, 3] = waits
    code[:, 4] = d
    rows = np.flatnonzero(acq | (op == REL) | (op == DOWNGRADE))
    if len(rows):
        code[rows, 1] = lid_of[np.searchsorted(lu, a[rows])]
    rows = np.flatnonzero((op == SPAN_B) | (op == SPAN_E))
    if len(rows):
        code[rows, 1] = kid_of[np.searchsorted(ku, a[rows])]
    if f.full:
        points = np.ones(len(op), np.uint8)
    else:
        points = ((pc == P_TRUE) | (pc == P_UNTIL)).view(np.uint8)
        if f.voluntary:
            rows = np.flatnonzero(pc == P_ACQ)
            if len(rows):
                points[rows] = sleeping[code[rows, 1]]
    if f.open_mode:
        code[pc == P_UNTIL, 2] = f.until_on_cpu
    return code, points, n_acq


def counts(nc: NeutralCode) -> tuple[dict[str, int], dict[str, int]]:
    """(sections per lock class, spans per kind) of a NeutralCode, as compare.census counts op objects:
    a downgraded section counts twice (its write and its read part)."""
    op = nc.op
    acq: dict[str, int] = {}
    rows = (op == ACQ) | (op == DOWNGRADE)
    if rows.any():
        u, c = np.unique(nc.a[rows], return_counts=True)
        for lk, k in zip(u.tolist(), c.tolist(), strict=True):
            cls = nc.locks[lk].lock_class
            acq[cls] = acq.get(cls, 0) + k
    spans: dict[str, int] = {}
    rows = op == SPAN_B
    if rows.any():
        u, c = np.unique(nc.a[rows], return_counts=True)
        for kd, k in zip(u.tolist(), c.tolist(), strict=True):
            spans[nc.kinds[kd]] = spans.get(nc.kinds[kd], 0) + k
    return acq, spans
