"""The common segments of a thread written as policy-neutral instructions, straight from its columns.

Columnar reconstruction (columnar.py) cuts each thread's intervals into
segments; a *fast* segment is a measured root (a system call, a fault, a lock
section) with measured leaves laid out one after the other in its body, no
off-CPU stretch inside, no merge with a neighbouring root. Its op objects would
be ``Span``/``Critical`` with ``Think`` gaps and a ``downgrade`` for a write
hold going on for read; flattening would turn them into a fixed pattern of
instructions. Here that pattern is written for all fast segments at once, a
fixed block of ``SLOTS`` candidate instructions per interval, kept where valid
(replay/sim/neutral.py: the columns, the point classes, the pass that makes a
policy set's instructions of them):

====  ==================================  ==================================
slot  root (top level)                    leaf (inside the root)
====  ==================================  ==================================
0     UNTIL of the gap before it          —
1     USER gap before it                  KERN gap before it
2     UNTIL of its start                  —
3     SPAN_B / ACQ (a point)              SPAN_B / ACQ (unless a downgrade's read part)
4     —                                   KERN body / hold
5     —                                   SPAN_E / REL / DOWNGRADE (when the read part follows)
6     KERN after the last leaf (last interval of the segment: its root's)
7     SPAN_E / REL of the root (last interval of the segment)
====  ==================================  ==================================
"""

from __future__ import annotations

from bisect import bisect_left
from pathlib import Path

import numpy as np

from replay.sim.neutral import P_ACQ, P_FULL, P_TRUE, P_UNTIL, Emitted, NeutralWriter
from replay.sim.program import ACQ, ACQ_SPUN, DOWNGRADE, KERN, REL, SPAN_B, SPAN_E, UNTIL, USER

SLOTS = 8
#: intervals per block of candidate rows (bounds the temporary arrays: SLOTS rows each, some 50 bytes a row;
#: a 60-s recording's thread has 11 M intervals)
CHUNK = 1 << 16


def rows(*, is_root: np.ndarray, last: np.ndarray, is_span: np.ndarray, mode: np.ndarray, code: np.ndarray,
         start: np.ndarray, cbody: np.ndarray, end: np.ndarray, gap_from: np.ndarray, gap_rows: np.ndarray,
         prev_end: np.ndarray, merged: np.ndarray, down_next: np.ndarray, root_is_span: np.ndarray,
         root_mode: np.ndarray, root_code: np.ndarray, root_end: np.ndarray, spun: bool
         ) -> tuple[np.ndarray, ...]:
    """The rows of the fast segments' intervals (all arrays per interval, in walk order):
    (op, a, b, d, pclass, wait per ACQ, rows per interval).

    ``gap_from``: for a root, where the top-level gap before it starts; ``gap_rows``: the gap is
    written as rows (on CPU throughout; else the caller puts its Think/Block ops before the root).
    ``prev_end``: for a leaf, where the gap before it starts. ``merged``: the leaf is the read part of
    the write leaf before it (a downgrade; ``down_next`` marks that write leaf). ``spun``: the trace
    says whether waits slept (sched_switch): a wait on a fast segment's lock then stayed on its CPU.
    """
    outs: list[list[np.ndarray]] = [[] for _ in range(6)]
    per: list[np.ndarray] = []
    for lo in range(0, len(start), CHUNK):
        s = slice(lo, lo + CHUNK)
        r = _block(is_root[s], last[s], is_span[s], mode[s], code[s], start[s], cbody[s], end[s], gap_from[s],
                   gap_rows[s], prev_end[s], merged[s], down_next[s], root_is_span[s], root_mode[s], root_code[s],
                   root_end[s], spun)
        for out, x in zip(outs, r[:6], strict=True):
            out.append(x)
        per.append(r[6])
    if not per:
        e8, e64 = np.empty(0, np.uint8), np.empty(0, np.int64)
        return e8, e64, e8, e8, e8, e64, e64
    return (*(np.concatenate(o) for o in outs), np.concatenate(per))


def _block(is_root, last, is_span, mode, code, start, cbody, end, gap_from, gap_rows, prev_end, merged, down_next,
           root_is_span, root_mode, root_code, root_end, spun):
    m = len(start)
    child = ~is_root
    top_gap = start - gap_from
    leaf_gap = start - prev_end
    crit = ~is_span
    op = np.empty((m, SLOTS), np.uint8)
    a = np.zeros((m, SLOTS), np.int64)
    b = np.zeros((m, SLOTS), np.uint8)
    d = np.zeros((m, SLOTS), np.uint8)
    pc = np.full((m, SLOTS), P_FULL, np.uint8)
    valid = np.zeros((m, SLOTS), bool)
    # 0, 1: the gap before the interval
    root_gap = is_root & gap_rows & (top_gap > 0)
    op[:, 0], a[:, 0], pc[:, 0], valid[:, 0] = UNTIL, gap_from, P_UNTIL, root_gap
    op[:, 1] = np.where(is_root, USER, KERN)
    a[:, 1] = np.where(is_root, top_gap, leaf_gap)
    pc[:, 1] = np.where(is_root, P_TRUE, P_FULL)
    valid[:, 1] = root_gap | (child & ~merged & (leaf_gap > 0))
    # 2, 3: its start
    op[:, 2], a[:, 2], pc[:, 2], valid[:, 2] = UNTIL, start, P_UNTIL, is_root
    op[:, 3] = np.where(is_span, SPAN_B, ACQ)
    a[:, 3] = code
    b[:, 3] = np.where(crit, mode, 0)
    d[:, 3] = np.where(crit & (cbody > start), ACQ_SPUN if spun else 0, 0)
    pc[:, 3] = np.where(is_root, P_TRUE, np.where(is_span, P_FULL, P_ACQ))
    valid[:, 3] = ~merged
    # 4, 5: a leaf's body and end
    inner = end - cbody
    op[:, 4], a[:, 4], valid[:, 4] = KERN, inner, child & (inner > 0)
    op[:, 5] = np.where(is_span, SPAN_E, np.where(down_next, DOWNGRADE, REL))
    a[:, 5] = code
    b[:, 5] = np.where(crit & ~down_next & ~merged, mode, 0)
    valid[:, 5] = child
    # 6, 7: the root's end, after the segment's last interval
    tail = root_end - np.where(is_root, cbody, end)
    op[:, 6], a[:, 6], valid[:, 6] = KERN, tail, last & (tail > 0)
    op[:, 7] = np.where(root_is_span, SPAN_E, REL)
    a[:, 7] = root_code
    b[:, 7] = np.where(root_is_span, 0, root_mode)
    valid[:, 7] = last
    wait = (cbody - start)[crit & ~merged]
    v = np.flatnonzero(valid.ravel())  # once, not a boolean mask scanned again for each column
    return (op.ravel().take(v), a.ravel().take(v), b.ravel().take(v), d.ravel().take(v), pc.ravel().take(v), wait,
            valid.sum(axis=1).astype(np.int64))


def fast_segments(slow: np.ndarray, root_crit: np.ndarray, root_write: np.ndarray) -> np.ndarray:
    """Which segments are written as rows: not ``slow`` (rare shapes, off-CPU stretches), and no
    neighbour a top-level downgrade could join them to.

    reconstruct._body makes a write section followed at once by a read section of the same lock one
    downgraded section across roots too. A root that could be either half of such a pair next to a
    segment of op objects (or next to its other half) goes with the op objects, which compose it."""
    fast = ~slow
    wc = root_crit & root_write
    rc = root_crit & ~root_write
    while True:
        demote = np.zeros(len(fast), bool)
        demote[:-1] |= fast[:-1] & wc[:-1] & ~fast[1:]
        demote[1:] |= fast[1:] & rc[1:] & ~fast[:-1]
        pair = fast[:-1] & fast[1:] & wc[:-1] & rc[1:]
        demote[:-1] |= pair
        demote[1:] |= pair
        if not demote.any():
            return fast
        fast &= ~demote


def thread_ops(t0: int, t1: int, fast: np.ndarray, roots_of: dict, compose_run, gops, off_starts: list[int],
               off_ends: list[int], locks: list, kinds: list[str], spun: bool, *, is_root: np.ndarray,
               first: np.ndarray, seg_id: np.ndarray, is_span: np.ndarray, is_crit: np.ndarray, mode: np.ndarray,
               code: np.ndarray, start: np.ndarray, cbody: np.ndarray, end: np.ndarray, spool: Path | None = None,
               name: str = "") -> list:
    """A thread's ops from ``t0`` to ``t1``: its fast segments (and the gaps on CPU between them) as
    Emitted pieces of one NeutralCode, the others (``roots_of``: segment → its (descriptor, op) roots;
    ``compose_run``: columnar's reconstruct._body) and gaps with off-CPU stretches as op objects, in order.
    The arrays are per interval in nesting order (columnar._thread's). The rows are made a window of
    whole segments at a time and go to a NeutralWriter (``spool``: into files there, named after ``name``)."""
    n = len(start)
    nseg = len(fast)
    firsts = np.flatnonzero(is_root)
    low = np.iinfo(np.int64).min
    seg_exit = np.where(fast, end[firsts], low)  # where each segment leaves the thread's time
    pm = np.maximum.accumulate(seg_exit) if nseg else seg_exit
    breaks: list[tuple[int, list]] = []  # (segment, op objects that go before its rows)
    slow = np.flatnonzero(~fast).tolist()
    prev = t0
    k = 0
    while k < len(slow):  # each run of slow segments composed from where the thread's time is
        fs = ls = slow[k]
        while k + 1 < len(slow) and slow[k + 1] == ls + 1:
            k += 1
            ls += 1
        k += 1
        cur = max(t0, prev, int(pm[fs - 1]) if fs else t0)
        ops: list = []
        prev = compose_run(cur, [r for si in range(fs, ls + 1) for r in roots_of[si]], ops)
        seg_exit[ls] = prev
        breaks.append((fs, ops))
    del pm
    cur_before = np.full(nseg, t0, np.int64)
    if nseg > 1:
        np.maximum.accumulate(seg_exit, out=seg_exit)
        np.maximum(seg_exit[:-1], t0, out=cur_before[1:])
    final = max(t0, int(seg_exit[-1])) if nseg else t0  # (accumulated: its last is its maximum)
    del seg_exit

    # the rows, a window of whole segments (about CHUNK intervals) at a time, handed to the writer as made
    writer = NeutralWriter(spool, name)
    seg_rows = np.zeros(nseg, np.int64)
    os_, oe_ = np.asarray(off_starts, np.int64), np.asarray(off_ends, np.int64)
    bounds = np.append(firsts, n)  # each segment's first interval; n after the last
    del firsts
    s0 = 0
    while s0 < nseg:
        s1 = max(s0 + 1, int(np.searchsorted(bounds, bounds[s0] + CHUNK, side="left")))
        s1 = min(s1, nseg)
        lo, hi = int(bounds[s0]), int(bounds[s1])
        _window_rows(writer, seg_rows, s0, s1, lo, hi, fast, cur_before, os_, oe_, gops, breaks, spun,
                     is_root, first, seg_id, is_span, is_crit, mode, code, start, cbody, end)
        s0 = s1
    tail: list = []
    if t1 > final:  # the gap after the last segment
        j = bisect_left(off_starts, t1) - 1
        if j >= 0 and off_ends[j] > final:
            tail = gops(final, t1)
        else:
            writer.add(np.asarray([UNTIL, USER], np.uint8), np.asarray([final, t1 - final], np.int64),
                       np.zeros(2, np.uint8), np.zeros(2, np.uint8), np.asarray([P_UNTIL, P_TRUE], np.uint8),
                       np.empty(0, np.int64))
    nc = writer.finish(locks, kinds)
    row_at = np.zeros(nseg + 1, np.int64)
    np.cumsum(seg_rows, out=row_at[1:])
    items: list = []
    pos = 0
    for si, ops in sorted(breaks, key=lambda x: x[0]):  # a slow run and a dirty gap never share a segment
        at = int(row_at[si])
        if at > pos:
            items.append(Emitted(nc, pos, at))
            pos = at
        items.extend(ops)
    if len(nc) > pos:
        items.append(Emitted(nc, pos, len(nc)))
    items.extend(tail)
    return items


def _window_rows(writer: NeutralWriter, seg_rows: np.ndarray, s0: int, s1: int, lo: int, hi: int, fast, cur_before,
                 os_, oe_, gops, breaks: list, spun: bool, is_root, first, seg_id, is_span, is_crit, mode, code,
                 start, cbody, end) -> None:
    """The rows of segments ``s0:s1`` (intervals ``lo:hi``) to ``writer``, their count per segment into
    ``seg_rows``; the top-level gaps an off-CPU stretch overlaps as op objects into ``breaks``.

    What an interval's rows depend on lies inside its segment (its root, its neighbours inside the root)
    or in the per-segment arrays (``cur_before``): a window of whole segments gives the rows the whole
    thread would."""
    m = hi - lo
    isr_w = is_root[lo:hi]
    last = np.ones(m, bool)  # the segment's last interval (the window ends where a segment does)
    last[:-1] = isr_w[1:]
    prev_end = np.zeros(m, np.int64)  # read for leaves only: the interval before is in the same segment
    merged = np.zeros(m, bool)
    if m > 1:
        crit_w, mode_w, code_w = is_crit[lo:hi], mode[lo:hi], code[lo:hi]
        start_w, cbody_w, end_w = start[lo:hi], cbody[lo:hi], end[lo:hi]
        prev_end[1:] = np.where(isr_w[:-1], cbody_w[:-1], end_w[:-1])
        merged[1:] = (crit_w[1:] & (mode_w[1:] == 0) & ~isr_w[1:] & ~isr_w[:-1] & crit_w[:-1] & (mode_w[:-1] == 1)
                      & (code_w[1:] == code_w[:-1]) & (end_w[:-1] == start_w[1:]) & (cbody_w[1:] == start_w[1:]))
    down_next = np.zeros(m, bool)
    down_next[:-1] = merged[1:]
    loc = np.flatnonzero(fast[seg_id[lo:hi]])
    idx = loc + lo
    r = first[idx]
    seg = seg_id[idx]
    isr = is_root[idx]
    s = start[idx]
    gap_from = cur_before[seg]
    gap_rows = np.ones(len(idx), bool)
    if len(os_) and len(idx):  # a top-level gap an off-CPU stretch overlaps: Think/Block ops
        j = np.searchsorted(os_, s, side="left") - 1
        dirty = isr & (s > gap_from) & (j >= 0) & (oe_[np.maximum(j, 0)] > gap_from)
        gap_rows = ~dirty
        for i in np.flatnonzero(dirty).tolist():
            breaks.append((int(seg[i]), gops(int(gap_from[i]), int(s[i]))))
    op, a, b, d, pc, wait, per = rows(
        is_root=isr, last=last[loc], is_span=is_span[idx], mode=mode[idx], code=code[idx], start=s,
        cbody=cbody[idx], end=end[idx], gap_from=gap_from, gap_rows=gap_rows, prev_end=prev_end[loc],
        merged=merged[loc], down_next=down_next[loc], root_is_span=is_span[r], root_mode=mode[r], root_code=code[r],
        root_end=end[r], spun=spun)
    writer.add(op, a, b, d, pc, wait)
    if len(seg):
        seg_rows[s0:s1] = np.bincount(seg - s0, weights=per, minlength=s1 - s0).astype(np.int64)
