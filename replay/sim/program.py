"""Flattening: a Workload's nested operations become per-thread instruction arrays.

The simulator never walks the op tree while it runs (mm_take_all_locks chains are
hundreds deep): every thread's ops are flattened once, up front, into rows of
``WIDTH`` int64 ``(opcode, a, b, c, d)`` -- one array for all threads, which both
engines read (the C engine as is, the Python one as tuples) -- and every lock
instance gets an index. The gather policy is applied here too: a Gather becomes
its zap blocks, flush checks and resched points.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from replay.gcpause import paused_gc
from replay.sim.costs import Costs
from replay.sim.ops import Block, Critical, Gather, LockRef, Span, Think, Thread, Workload
from replay.trace.schema import LOCK_CLASSES

# opcodes (mirrored in replay/sim/engine.c)
USER = 0  # (ns): user-mode work, preemptible everywhere
KERN = 1  # (ns): kernel work outside a gather
BLOCK = 2  # (ns): off-CPU for ns
UNTIL = 3  # (at_ns, on_cpu): open replay: do not start the next op before at_ns; wait on the CPU if on_cpu
ACQ = 4  # (lock, write, recorded_wait_ns, flags: ACQ_DERIVED | ACQ_SLEPT | ACQ_SPUN)
REL = 5  # (lock, write)
SPAN_B = 6  # (kind index)
SPAN_E = 7  # (kind index)
GB = 8  # (fullmm, free_pt_ns): gather begins
GZAP = 9  # (pages, zap_ns, free): zap pages under the PTL (or the per-CPU gather); free indexes Program.floats
GFLUSH = 10  # (): flush and free if the batch is full
GPOINT = 11  # (): cond_resched in the zap loop
GE = 12  # (): final flush, free page tables, gather ends
END = 13
DOWNGRADE = 14  # (lock): downgrade_write: the write hold becomes a read hold (never starts a segment)

NAMES = ("user", "kern", "block", "until", "acquire", "release", "span", "span-end", "gather", "zap",
         "flush", "resched-point", "gather-end", "end", "downgrade")

#: lock policies whose waiters sleep (an acquire is a might_sleep() point)
SLEEPING_POLICIES = frozenset({"mutex", "mutex-classic", "rwsem", "rwsem-classic"})
#: lock classes that sleep in today's kernel: as-recorded waits on them are off-CPU.
SLEEPING_CLASSES = frozenset({"mmap_lock", "i_mmap_rwsem", "anon_vma"})

_CLOSE = "close"  # (_CLOSE, instruction) on the flatten stack: leave a Critical/Span
_HOLD = "hold"  # (_HOLD, ns) on the flatten stack: a Critical's own hold time, after its body
_EMIT = "emit"  # (_EMIT, instruction) on the flatten stack: an instruction inside a scope (a downgrade)


@dataclass
class LockInfo:
    lock_class: str
    addr: int
    policy: str


_CHUNK = 1 << 20

#: int64 fields per instruction: the opcode and up to four operands (unused ones are 0)
WIDTH = 5
#: ACQ's flags: the hold is derived (the holds table's column); the recorded wait slept / stayed on its CPU
#: (neither: not known; as-recorded then goes by the class)
ACQ_DERIVED, ACQ_SLEPT, ACQ_SPUN = 1, 2, 4


def acq_flags(op: Critical) -> int:
    """The flags of ``op``'s ACQ instruction."""
    slept = op.recorded_wait_slept
    return (ACQ_DERIVED if op.derived else 0) | (ACQ_SLEPT if slept else ACQ_SPUN if slept is False else 0)


@dataclass
class Program:
    """Flattened threads plus the tables the instructions refer to."""

    code: np.ndarray  # int64 (instructions, WIDTH): every thread's instructions, thread after thread
    points: np.ndarray  # uint8 per instruction: a preemption point under the model (ignoring preempt count)
    start: np.ndarray  # int64 (threads + 1): thread i's instructions are code[start[i]:start[i + 1]]
    floats: np.ndarray  # float64: GZAP's free cost per page, by index
    locks: list[LockInfo]
    kinds: list[str]  # Span kinds by index

    def thread_code(self, i: int) -> list[tuple]:
        """Thread ``i``'s instructions as tuples (the Python engine's form; GZAP carries its float)."""
        lo, hi = int(self.start[i]), int(self.start[i + 1])
        with paused_gc():  # a million small tuples
            code = list(map(tuple, self.code[lo:hi].tolist()))
        for pc, ins in enumerate(code):
            if ins[0] == GZAP:
                code[pc] = (GZAP, ins[1], ins[2], float(self.floats[ins[3]]))
        return code


def _gather_costs(g: Gather, c: Costs) -> tuple[float, float]:
    """Per-page zap and free cost of one gather: recorded duration when known (0 included: a burst
    recorded at one instant), else defaults."""
    if g.recorded_ns is None or g.pages <= 0:
        return float(c.zap_page_ns), float(c.free_page_ns)
    total = float(g.recorded_ns) - g.pt_pages * c.free_pt_page_ns
    if g.recorded_flushes:
        per = max(1, g.pages // g.recorded_flushes)
        total -= g.recorded_flushes * tlb_flush_ns(per, c)
    per_page = max(0.0, total) / g.pages
    share = c.zap_page_ns / max(1, c.zap_page_ns + c.free_page_ns)
    return per_page * share, per_page * (1 - share)


def tlb_flush_ns(pages: int, c: Costs, fullmm: bool = False) -> int:
    """Local flush cost: per-page INVLPG up to the ceiling, a full flush above (arch/x86/mm/tlb.c)."""
    if fullmm or pages > c.flush_ceiling_pages:
        return c.full_flush_ns
    return pages * c.invlpg_ns


def flatten(workload: Workload, lock_policy: Callable[[str], str], gather: str, preempt: str, open_mode: bool,
            costs: Costs, perturb: float = 0.0, seed: int = 0, compiled: bool = False) -> Program:
    """Flatten every thread of ``workload``; ``lock_policy(lock_class)`` names each class's policy.

    ``perturb`` > 0 multiplies every Think and hold time by a lognormal factor of mean 1 and
    that coefficient of variation, drawn from ``seed`` (service-time noise for spreads over seeds).

    A boundary is a preemption point when the thread is in user mode there, under
    full preemption anywhere, under voluntary preemption also at might_sleep()
    (sleeping-lock acquire) and at cond_resched(); under none only at cond_resched().

    ``compiled``: walk the op trees with replay/sim/flatten.c (same Program, bit for bit;
    EngineUnavailable if it cannot be built) instead of the Python walk below.
    """
    from replay.sim.neutral import emitted, walk_thread
    from replay.workload.holds import replayed_policy

    f = Flattener(replayed_policy(lock_policy, workload.derived_classes), gather, preempt, open_mode, costs,
                  perturb, seed)
    f.until_on_cpu = 1 if workload.contiguous else 0
    if compiled:
        from replay.sim.cflatten import walk
    else:
        walk = Flattener.walk
    with paused_gc():  # short-lived tuples only
        if not any(emitted(th) is not None for th in workload.threads):
            code, points, start = walk(f, workload.threads)
        else:  # a thread at a time: its Emitted pieces by the vectorised pass, its op objects by the walk
            codes, pts, rows = [], [], []
            for th in workload.threads:
                rows.append(0)
                for c, p in walk_thread(f, th, walk):
                    codes.append(c)
                    pts.append(p)
                    rows[-1] += len(p)
            start = np.concatenate([[0], np.cumsum(rows, dtype=np.int64)]).astype(np.int64)
            code = np.concatenate(codes) if codes else np.empty((0, WIDTH), np.int64)
            points = np.concatenate(pts) if pts else np.empty(0, np.uint8)
    return Program(code, points, start, np.asarray(f.floats, dtype=np.float64), f.locks, f.kinds)


@dataclass
class FlattenSpec:
    """The arguments of one flatten() call but the workload (one policy set's program)."""

    lock_policy: Callable[[str], str]
    gather: str
    preempt: str
    open_mode: bool
    costs: Costs
    perturb: float = 0.0
    seed: int = 0
    compiled: bool = False


def flatten_streamed(workload: Workload, specs: list[FlattenSpec],
                     sink: Callable[[int, np.ndarray, np.ndarray], None], release: bool = False
                     ) -> list[tuple[np.ndarray, np.ndarray, list[LockInfo], list[str]]]:
    """Flatten ``workload`` for every spec at once, thread by thread, handing each thread's
    instructions to ``sink(spec index, code, points)`` instead of keeping them.

    Per spec, the code and points ``sink`` gets, concatenated, are flatten()'s Program.code and
    .points byte for byte (one Flattener per spec walks the threads in the same order; its lock,
    kind and noise state carries from one thread to the next as in one walk). ``release``: empty
    each thread's ops once every spec has walked it, so the op objects go while the programs are
    written instead of after (the peak is then about the workload's, not workload + a program).
    Returns per spec (start, floats, locks, kinds), the rest of its Program.
    """
    from replay.workload.holds import replayed_policy

    fs = []
    for sp in specs:
        f = Flattener(replayed_policy(sp.lock_policy, workload.derived_classes), sp.gather, sp.preempt, sp.open_mode,
                      sp.costs, sp.perturb, sp.seed)
        f.until_on_cpu = 1 if workload.contiguous else 0
        fs.append(f)
    walks: list[Callable[[Flattener, list[Thread]], tuple[np.ndarray, np.ndarray, np.ndarray]]] = []
    for sp in specs:
        if sp.compiled:
            from replay.sim.cflatten import load, walk

            load()  # EngineUnavailable before any thread is walked
            walks.append(walk)
        else:
            walks.append(Flattener.walk)
    from replay.sim.neutral import walk_thread

    starts: list[list[int]] = [[0] for _ in specs]
    with paused_gc():
        for th in workload.threads:
            for k, (f, walk_) in enumerate(zip(fs, walks, strict=True)):
                rows = 0
                for code, points in walk_thread(f, th, walk_):
                    sink(k, code, points)
                    rows += len(points)
                starts[k].append(starts[k][-1] + rows)
            if release:
                th.ops = []
    return [(np.asarray(st, dtype=np.int64), np.asarray(f.floats, dtype=np.float64), f.locks, f.kinds)
            for st, f in zip(starts, fs, strict=True)]


class Flattener:
    """The state of one flattening: lock and kind indexes, gather expansion, service-time noise.

    ``walk`` (Python) and flatten.c's walk share everything here; they differ only in
    how they visit the op trees.
    """

    def __init__(self, lock_policy: Callable[[str], str], gather: str, preempt: str, open_mode: bool,
                 costs: Costs, perturb: float, seed: int):
        self.lock_policy = lock_policy
        self.costs = costs
        self.open_mode = open_mode
        self.until_on_cpu = 0  # UNTIL's on_cpu (flatten(): the workload is contiguous)
        self.percpu = gather == "percpu"
        if self.percpu:
            self.block = costs.zap_block_preempt_pages if preempt == "full" else costs.zap_block_nopreempt_pages
        else:
            self.block = costs.ptl_chunk_pages
        self.full = preempt == "full"
        self.voluntary = preempt == "voluntary"
        self.lock_ids: dict[tuple[str, int], int] = {}
        self.lock_of_ref: dict[int, int] = {}  # id(LockRef) -> lock index (workloads share LockRef objects)
        self.locks: list[LockInfo] = []
        self.sleeping_lock: list[bool] = []  # by lock index: its policy sleeps (mutex, rwsem)
        self.kinds: list[str] = []
        self.kind_ids: dict[str, int] = {}
        self.floats: list[float] = []
        self.perturbing = perturb > 0
        if self.perturbing:
            rng = random.Random(seed * 0x9E3779B1 + 0x5EED)
            sigma = math.sqrt(math.log(1 + perturb * perturb))
            mu = -sigma * sigma / 2
            lognormvariate = rng.lognormvariate

            def scale(ns: int) -> int:
                return round(ns * lognormvariate(mu, sigma))
        else:
            def scale(ns: int) -> int:
                return ns
        self.scale = scale

    def lock(self, lock: LockRef, tid: int) -> int:
        """The index of ``lock`` (registered on first sight; ValueError for an unknown class)."""
        lid = self.lock_of_ref.get(id(lock))
        if lid is not None:
            return lid
        key = (lock.lock_class, lock.addr)
        lid = self.lock_ids.get(key)
        if lid is None:
            if lock.lock_class not in LOCK_CLASSES:
                raise ValueError(f"thread {tid}: unknown lock class {lock.lock_class!r}; "
                                 f"known: {', '.join(LOCK_CLASSES)}")
            lid = self.lock_ids[key] = len(self.locks)
            self.locks.append(LockInfo(lock.lock_class, lock.addr, self.lock_policy(lock.lock_class)))
            self.sleeping_lock.append(self.locks[lid].policy in SLEEPING_POLICIES)
        self.lock_of_ref[id(lock)] = lid
        return lid

    def check_downgrade(self, op: Critical, lid: int, tid: int) -> None:
        """A downgrade goes from a write section to a read section of the same lock."""
        down = op.downgrade
        if op.mode != "write" or type(down) is not Critical or down.mode != "read" or \
                down.downgrade is not None or self.lock(down.lock, tid) != lid:
            raise ValueError(f"thread {tid}: a downgrade goes from a write section to a read section of the "
                             f"same lock, not {op.mode} {op.lock} to {down!r}")

    def kind(self, kind: str) -> int:
        k = self.kind_ids.get(kind)
        if k is None:
            k = self.kind_ids[kind] = len(self.kinds)
            self.kinds.append(kind)
        return k

    def gather(self, op: Gather, user: bool) -> tuple[tuple[int, ...], bytes]:
        """A Gather's instructions (WIDTH ints each) and their preemption points."""
        costs, percpu, full, block = self.costs, self.percpu, self.full, self.block
        zap, free = _gather_costs(op, costs)
        fi = len(self.floats)
        self.floats.append(free)
        code = [GB, 1 if op.fullmm else 0, op.pt_pages * costs.free_pt_page_ns, 0, 0]
        pts = bytearray((user or full,))
        # chunks end at zap-block ends (resched points) and, for the per-CPU gather, where its
        # 506-page batch fills (tlb_remove_page flushes there, inside the block)
        done = 0
        batch = costs.percpu_batch_pages
        while done < op.pages:
            block_end = min(op.pages, (done // block + 1) * block)
            end = min(block_end, (done // batch + 1) * batch) if percpu else block_end
            n = end - done
            code += (GZAP, n, round(zap * end) - round(zap * done), fi, 0, GFLUSH, 0, 0, 0, 0)
            pts += bytes((False, full and not percpu))
            done = end
            if done == block_end and done < op.pages:
                code += (GPOINT, 0, 0, 0, 0)
                pts.append(True)
        code += (GE, 0, 0, 0, 0)
        pts.append(full and not percpu)
        return tuple(code), bytes(pts)

    def walk(self, threads: list[Thread]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Visit every thread's op tree: (code, points, start) of the Program."""
        open_mode, full, voluntary, perturbing = self.open_mode, self.full, self.voluntary, self.perturbing
        until_on_cpu = self.until_on_cpu
        scale = self.scale
        lock_of_ref = self.lock_of_ref
        sleeping_lock = self.sleeping_lock
        flat: list[int] = []  # WIDTH ints per instruction (moved to int64 chunks every _CHUNK ints: memory)
        chunks: list[np.ndarray] = []
        pts = bytearray()
        emit = flat.extend
        point = pts.append
        start = [0]
        # points of the common leaf Critical (acquire, hold, release) by user + 2 * sleeping policy
        leaf_pts = [bytes((u or full or (voluntary and sl), full, full)) for sl in (False, True)
                    for u in (False, True)]
        for th in threads:
            depth = 0
            stack: list[object] = []
            for top in th.ops:
                if len(flat) >= _CHUNK:
                    chunks.append(np.fromiter(flat, dtype=np.int64, count=len(flat)))
                    flat.clear()
                # fast path, the bulk of a long trace: a top-level leaf Critical on a lock already seen
                # (the general loop below gives the same instructions)
                if type(top) is Critical and not top.body and top.downgrade is None and not perturbing:
                    lid = lock_of_ref.get(id(top.lock))
                    mode = top.mode
                    if lid is not None and (mode == "write" or mode == "read"):
                        if open_mode and top.at_ns is not None:
                            emit((UNTIL, top.at_ns, until_on_cpu, 0, 0))
                            point(True)
                        write = 1 if mode == "write" else 0
                        hold = top.hold_ns
                        if hold > 0:
                            emit((ACQ, lid, write, top.recorded_wait_ns or 0, acq_flags(top),
                                  KERN, hold, 0, 0, 0, REL, lid, write, 0, 0))
                            pts += leaf_pts[1 + 2 * sleeping_lock[lid]]
                        else:
                            emit((ACQ, lid, write, top.recorded_wait_ns or 0, acq_flags(top),
                                  REL, lid, write, 0, 0))
                            pts += leaf_pts[1 + 2 * sleeping_lock[lid]][:2]
                        continue
                stack.append(top)
                while stack:
                    op = stack.pop()
                    user = depth == 0
                    if type(op) is tuple:
                        if op[0] is _HOLD:
                            emit((KERN, scale(op[1]) if perturbing else op[1], 0, 0, 0))
                        else:  # (_CLOSE, instruction) or (_EMIT, instruction)
                            if op[0] is _CLOSE:
                                depth -= 1
                            emit(op[1])
                        point(full)
                        continue
                    if open_mode and user and op.at_ns is not None:
                        emit((UNTIL, op.at_ns, until_on_cpu, 0, 0))
                        point(True)
                    if type(op) is Think:
                        if op.ns > 0:
                            emit((USER if user else KERN, scale(op.ns) if perturbing else op.ns, 0, 0, 0))
                            point(user or full)
                    elif type(op) is Block:
                        emit((BLOCK, op.ns, 0, 0, 0))
                        point(True)
                    elif type(op) is Critical:
                        lid = lock_of_ref.get(id(op.lock))
                        if lid is None:
                            lid = self.lock(op.lock, th.tid)
                        mode = op.mode
                        if mode == "write":
                            write = 1
                        elif mode == "read":
                            write = 0
                        else:
                            raise ValueError(f"thread {th.tid}: Critical mode must be read or write, not {mode!r}")
                        acq_point = user or full or (voluntary and sleeping_lock[lid])
                        down = op.downgrade
                        if down is not None:
                            self.check_downgrade(op, lid, th.tid)
                        elif not op.body:  # the common leaf: acquire, hold, release (what the stack would give)
                            hold = op.hold_ns
                            if hold > 0:
                                emit((ACQ, lid, write, op.recorded_wait_ns or 0, acq_flags(op),
                                      KERN, scale(hold) if perturbing else hold, 0, 0, 0, REL, lid, write, 0, 0))
                                pts += leaf_pts[user + 2 * sleeping_lock[lid]]
                            else:
                                emit((ACQ, lid, write, op.recorded_wait_ns or 0, acq_flags(op),
                                      REL, lid, write, 0, 0))
                                point(acq_point)
                                point(full)
                            continue
                        emit((ACQ, lid, write, op.recorded_wait_ns or 0, acq_flags(op)))
                        point(acq_point)
                        depth += 1
                        if down is not None:  # write body, hold, downgrade, read body, hold, release (read)
                            stack.append((_CLOSE, (REL, lid, 0, 0, 0)))
                            if down.hold_ns > 0:
                                stack.append((_HOLD, down.hold_ns))
                            stack.extend(reversed(down.body))
                            stack.append((_EMIT, (DOWNGRADE, lid, 0, 0, 0)))
                        else:
                            stack.append((_CLOSE, (REL, lid, write, 0, 0)))
                        if op.hold_ns > 0:  # ops.Critical: run the body, then spend hold_ns, then release
                            stack.append((_HOLD, op.hold_ns))
                        stack.extend(reversed(op.body))
                    elif type(op) is Span:
                        k = self.kind(op.kind)
                        emit((SPAN_B, k, 0, 0, 0))
                        point(user or full)
                        depth += 1
                        stack.append((_CLOSE, (SPAN_E, k, 0, 0, 0)))
                        stack.extend(reversed(op.body))
                    elif type(op) is Gather:
                        code, gpts = self.gather(op, user)
                        emit(code)
                        pts += gpts
                    else:
                        raise TypeError(f"thread {th.tid}: not an op: {op!r}")
            emit((END, 0, 0, 0, 0))
            point(True)
            start.append(len(pts))
        chunks.append(np.fromiter(flat, dtype=np.int64, count=len(flat)))
        return (np.concatenate(chunks).reshape(-1, WIDTH), np.frombuffer(bytes(pts), dtype=np.uint8),
                np.asarray(start, dtype=np.int64))
