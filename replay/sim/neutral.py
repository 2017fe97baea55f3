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

import mmap
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

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

    The columns are in memory, or (NeutralWriter with a spool directory) read-only maps of files:
    ``maps`` holds those maps, whose pages every pass here drops from the resident set once read
    (``drop_pages``), so a long thread's rows cost page cache, not the process's memory.
    """

    op: np.ndarray  # uint8
    a: np.ndarray  # int64
    b: np.ndarray  # uint8
    d: np.ndarray  # uint8
    pclass: np.ndarray  # uint8: P_*
    wait: np.ndarray  # int64, per ACQ row
    locks: list[LockRef]
    kinds: list[str]
    maps: tuple = field(default=())  # the mmap.mmap objects behind spooled columns

    def __len__(self) -> int:
        return len(self.op)

    def __reduce__(self):  # a spooled one travels as arrays (pickle copies them), never as its maps
        return NeutralCode, (self.op, self.a, self.b, self.d, self.pclass, self.wait, self.locks, self.kinds)

    def drop_pages(self) -> None:
        """Drop the spooled columns' pages from the resident set (read again from the page cache if needed)."""
        for m in self.maps:
            m.madvise(mmap.MADV_DONTNEED)


#: (column, element type) of a NeutralCode, in the order NeutralWriter.add takes them
COLUMNS = (("op", np.uint8), ("a", np.int64), ("b", np.uint8), ("d", np.uint8), ("pclass", np.uint8),
           ("wait", np.int64))


class NeutralWriter:
    """A thread's NeutralCode written a block of rows at a time: kept in memory, or with ``spool`` (a
    private directory) appended to files there, which ``finish`` maps read-only and unlinks at once
    (the maps keep the data; nothing is left to clean up, also when the replay fails). Reconstruction
    of a long recording then holds one block of rows at a time instead of every thread's rows."""

    def __init__(self, spool: Path | None, name: str):
        self.spool = spool
        self.blocks: list[list[np.ndarray]] = [[] for _ in COLUMNS]
        self.files = []
        if spool is not None:
            self.paths = [Path(spool, f"{name}.{col}") for col, _ in COLUMNS]
            self.files = [open(p, "x+b") for p in self.paths]  # noqa: SIM115 (closed by finish)

    def add(self, *cols: np.ndarray) -> None:
        for k, ((_, dtype), x) in enumerate(zip(COLUMNS, cols, strict=True)):
            x = np.ascontiguousarray(x, dtype=dtype)
            if self.files:
                self.files[k].write(memoryview(x).cast("B"))
            else:
                self.blocks[k].append(x)

    def finish(self, locks: list[LockRef], kinds: list[str]) -> NeutralCode:
        if not self.files:
            return NeutralCode(*(np.concatenate(b) if b else np.empty(0, dtype)
                                 for b, (_, dtype) in zip(self.blocks, COLUMNS, strict=True)), locks, kinds)
        arrays, maps = [], []
        try:
            for f, (_, dtype) in zip(self.files, COLUMNS, strict=True):
                f.flush()
                size = f.tell()
                if size:
                    m = mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ)
                    maps.append(m)
                    arrays.append(np.frombuffer(m, dtype=dtype))
                else:
                    arrays.append(np.empty(0, dtype))
        finally:
            for f, p in zip(self.files, self.paths, strict=True):
                f.close()
                os.unlink(p)
            self.files = []
        return NeutralCode(*arrays, locks, kinds, maps=tuple(maps))


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


#: rows of a NeutralCode read at a time (bounds the temporary arrays and, spooled, the resident pages; a
#: window's instructions, 40 bytes a row, stay in the CPU's caches: flattening a 10-s recording's rows took
#: 0.9 s of CPU a policy set in windows of 64 Ki rows, 1.4 s in windows of 1 Mi, fresh pages each time)
WINDOW = 1 << 16


def _windows(nc: NeutralCode) -> Iterator[tuple[int, int]]:
    """(lo, hi) of consecutive windows of ``nc``'s rows; a spooled one's pages are dropped after each."""
    for lo in range(0, len(nc), WINDOW):
        yield lo, min(lo + WINDOW, len(nc))
        nc.drop_pages()


def _first_seen(nc: NeutralCode) -> tuple[np.ndarray, list[tuple[int, int]], np.ndarray, list[tuple[int, int]]]:
    """For the lock operands (ACQ, REL, DOWNGRADE rows) and the kind operands (SPAN_B, SPAN_E rows) of ``nc``:
    (sorted distinct values, [(row of first sight, value)] in order of first sight), a window at a time."""
    seen: tuple[dict[int, int], dict[int, int]] = ({}, {})
    for lo, hi in _windows(nc):
        op, a = nc.op[lo:hi], nc.a[lo:hi]
        for into, rows in zip(seen, (np.flatnonzero((op == ACQ) | (op == REL) | (op == DOWNGRADE)),
                                     np.flatnonzero((op == SPAN_B) | (op == SPAN_E))), strict=True):
            if len(rows):
                u, first = np.unique(a[rows], return_index=True)
                for v, r in zip(u.tolist(), (rows[first] + lo).tolist(), strict=True):
                    into.setdefault(v, r)
    out: list = []
    for into in seen:
        out += [np.asarray(sorted(into), np.int64), sorted((r, v) for v, r in into.items())]
    return tuple(out)


def walk_thread(f, th: Thread, walk_ops: Callable) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Thread ``th``'s (code, points) under Flattener ``f``, in consecutive parts, its END last: together
    what ``walk_ops(f, [th])`` gives for the same thread made of op objects only."""
    nc = emitted(th)
    if nc is None:
        code, points, _ = walk_ops(f, [th])
        yield code, points
        return
    op = nc.op
    lu, lfirst, ku, kfirst = _first_seen(nc)
    lid_of = np.zeros(len(lu), np.int64)
    kid_of = np.zeros(len(ku), np.int64)
    li = ki = 0
    work_rows = np.flatnonzero((op == USER) | (op == KERN)) if f.perturbing else None
    scaled = nc.a.copy() if f.perturbing else None
    nc.drop_pages()
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
    # The pieces' rows are made a window of WINDOW rows at a time, whatever the pieces: a row's instruction
    # depends on nothing but the row (and, for an ACQ, how many ACQs come before it), so a piece's
    # instructions are a slice of its window's. A window per piece cost Python calls and a page drop per
    # piece: a 10-s recording's thread has thousands of pieces between its rare segments.
    acq_before = 0  # ACQ rows before the window (their waits are nc.wait in order)
    w_lo = w_hi = 0  # the rows of the window made last
    code = points = keep = None
    for part in parts:
        if type(part) is not Emitted:
            yield part
            continue
        lo = part.lo
        while lo < part.hi:
            if code is None or lo >= w_hi:
                w_lo, w_hi = lo, min(lo + WINDOW, len(nc))
                code, points, acqs, keep = _window(f, nc, w_lo, w_hi, scaled, lu, lid_of, ku, kid_of, sleeping,
                                                   acq_before)
                nc.drop_pages()
                acq_before += acqs
            hi = min(part.hi, w_hi)
            if keep is None:
                a, b = lo - w_lo, hi - w_lo
            else:  # (closed replay: the window's kept rows, the UNTILs dropped)
                a, b = (int(x) for x in np.searchsorted(keep, (lo - w_lo, hi - w_lo)))
            if b > a:  # (a window's edge may leave a piece's part of it only UNTILs)
                yield code[a:b], points[a:b]
            lo = hi
    yield np.asarray([[END, 0, 0, 0, 0]], np.int64), np.ones(1, np.uint8)


def _window(f, nc: NeutralCode, lo: int, hi: int, scaled: np.ndarray | None, lu: np.ndarray, lid_of: np.ndarray,
            ku: np.ndarray, kid_of: np.ndarray, sleeping: np.ndarray, acq_before: int
            ) -> tuple[np.ndarray, np.ndarray, int, np.ndarray | None]:
    """Rows ``lo:hi`` of ``nc`` as Flattener ``f``'s instructions and points; how many ACQs they hold; and
    which of the rows (from ``lo``) the instructions are, when some were dropped (else None).

    Closed replay drops the UNTIL rows before the instructions are made (a gather of the narrow columns)
    rather than after (a copy of the 40-byte rows)."""
    op = nc.op[lo:hi]
    a = nc.a[lo:hi] if scaled is None else scaled[lo:hi]
    b, d, pc = nc.b[lo:hi], nc.d[lo:hi], nc.pclass[lo:hi]
    acq = op == ACQ
    n_acq = int(np.count_nonzero(acq))
    waits = nc.wait[acq_before:acq_before + n_acq]
    kept = None
    if not f.open_mode:  # closed replay has no UNTIL: the ACQ rows and their order are unchanged
        keep = np.flatnonzero(pc != P_UNTIL)
        if len(keep) < len(pc):
            op, a, b, d, pc, acq = op[keep], a[keep], b[keep], d[keep], pc[keep], acq[keep]
            kept = keep
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
    return code, points, n_acq, kept


def counts(nc: NeutralCode) -> tuple[dict[str, int], dict[str, int]]:
    """(sections per lock class, spans per kind) of a NeutralCode, as compare.census counts op objects:
    a downgraded section counts twice (its write and its read part)."""
    by_lock: dict[int, int] = {}
    by_kind: dict[int, int] = {}
    for lo, hi in _windows(nc):
        op, a = nc.op[lo:hi], nc.a[lo:hi]
        for into, rows in ((by_lock, (op == ACQ) | (op == DOWNGRADE)), (by_kind, op == SPAN_B)):
            if rows.any():
                u, c = np.unique(a[rows], return_counts=True)
                for v, k in zip(u.tolist(), c.tolist(), strict=True):
                    into[v] = into.get(v, 0) + k
    acq: dict[str, int] = {}
    for lk, k in sorted(by_lock.items()):
        cls = nc.locks[lk].lock_class
        acq[cls] = acq.get(cls, 0) + k
    spans: dict[str, int] = {}
    for kd, k in sorted(by_kind.items()):
        spans[nc.kinds[kd]] = spans.get(nc.kinds[kd], 0) + k
    return acq, spans
