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

from replay.sim.costs import Costs
from replay.sim.ops import Block, Critical, Gather, Span, Think, Workload
from replay.trace.schema import LOCK_CLASSES

# opcodes (mirrored in replay/sim/engine.c)
USER = 0  # (ns): user-mode work, preemptible everywhere
KERN = 1  # (ns): kernel work outside a gather
BLOCK = 2  # (ns): off-CPU for ns
UNTIL = 3  # (at_ns): open replay: do not start the next op before at_ns
ACQ = 4  # (lock, write, recorded_wait_ns, derived)
REL = 5  # (lock, write)
SPAN_B = 6  # (kind index)
SPAN_E = 7  # (kind index)
GB = 8  # (fullmm, free_pt_ns): gather begins
GZAP = 9  # (pages, zap_ns, free): zap pages under the PTL (or the per-CPU gather); free indexes Program.floats
GFLUSH = 10  # (): flush and free if the batch is full
GPOINT = 11  # (): cond_resched in the zap loop
GE = 12  # (): final flush, free page tables, gather ends
END = 13

NAMES = ("user", "kern", "block", "until", "acquire", "release", "span", "span-end", "gather", "zap",
         "flush", "resched-point", "gather-end", "end")

#: lock classes that sleep in today's kernel: as-recorded waits on them are off-CPU.
SLEEPING_CLASSES = frozenset({"mmap_lock", "i_mmap_rwsem", "anon_vma"})

_CLOSE = "close"  # (_CLOSE, instruction) on the flatten stack: leave a Critical/Span
_HOLD = "hold"  # (_HOLD, ns) on the flatten stack: a Critical's own hold time, after its body


@dataclass
class LockInfo:
    lock_class: str
    addr: int
    policy: str


_CHUNK = 1 << 20

#: int64 fields per instruction: the opcode and up to four operands (unused ones are 0)
WIDTH = 5


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
        code = [tuple(r) for r in self.code[lo:hi].tolist()]
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
            costs: Costs, perturb: float = 0.0, seed: int = 0) -> Program:
    """Flatten every thread of ``workload``; ``lock_policy(lock_class)`` names each class's policy.

    ``perturb`` > 0 multiplies every Think and hold time by a lognormal factor of mean 1 and
    that coefficient of variation, drawn from ``seed`` (service-time noise for spreads over seeds).

    A boundary is a preemption point when the thread is in user mode there, under
    full preemption anywhere, under voluntary preemption also at might_sleep()
    (sleeping-lock acquire) and at cond_resched(); under none only at cond_resched().
    """
    lock_ids: dict[tuple[str, int], int] = {}
    lock_of_ref: dict[int, int] = {}  # id(LockRef) -> lock index
    locks: list[LockInfo] = []
    sleeping_lock: list[bool] = []  # by lock index: its policy sleeps (mutex, rwsem)
    kinds: list[str] = []
    kind_ids: dict[str, int] = {}
    percpu = gather == "percpu"
    if percpu:
        block = costs.zap_block_preempt_pages if preempt == "full" else costs.zap_block_nopreempt_pages
    else:
        block = costs.ptl_chunk_pages
    full = preempt == "full"
    voluntary = preempt == "voluntary"
    flat: list[int] = []  # WIDTH ints per instruction (moved to int64 chunks every _CHUNK ints: memory)
    chunks: list[np.ndarray] = []
    pts = bytearray()
    emit = flat.extend
    point = pts.append
    start = [0]
    floats: list[float] = []
    perturbing = perturb > 0
    if perturbing:
        rng = random.Random(seed * 0x9E3779B1 + 0x5EED)
        sigma = math.sqrt(math.log(1 + perturb * perturb))
        mu = -sigma * sigma / 2

        def scale(ns: int) -> int:
            return round(ns * rng.lognormvariate(mu, sigma))
    else:
        def scale(ns: int) -> int:
            return ns
    # points of the common leaf Critical (acquire, hold, release) by (user, sleeping policy)
    leaf_pts = [bytes((u or full or (voluntary and sl), full, full)) for sl in (False, True) for u in (False, True)]
    for th in workload.threads:
        depth = 0
        stack: list[object] = list(reversed(th.ops))
        while stack:
            if len(flat) >= _CHUNK:
                chunks.append(np.fromiter(flat, dtype=np.int64, count=len(flat)))
                flat.clear()
            op = stack.pop()
            user = depth == 0
            if type(op) is tuple:
                if op[0] is _HOLD:
                    emit((KERN, scale(op[1]) if perturbing else op[1], 0, 0, 0))
                    point(full)
                else:  # (_CLOSE, instruction)
                    depth -= 1
                    emit(op[1])
                    point(full)
                continue
            if open_mode and user and op.at_ns is not None:
                emit((UNTIL, op.at_ns, 0, 0, 0))
                point(True)
            if type(op) is Think:
                if op.ns > 0:
                    emit((USER if user else KERN, scale(op.ns) if perturbing else op.ns, 0, 0, 0))
                    point(user or full)
            elif type(op) is Block:
                emit((BLOCK, op.ns, 0, 0, 0))
                point(True)
            elif type(op) is Critical:
                lock = op.lock
                lid = lock_of_ref.get(id(lock))  # workloads share LockRef objects: skip building the key
                if lid is None:
                    key = (lock.lock_class, lock.addr)
                    lid = lock_ids.get(key)
                    if lid is None:
                        if lock.lock_class not in LOCK_CLASSES:
                            raise ValueError(f"thread {th.tid}: unknown lock class {lock.lock_class!r}; "
                                             f"known: {', '.join(LOCK_CLASSES)}")
                        lid = lock_ids[key] = len(locks)
                        locks.append(LockInfo(lock.lock_class, lock.addr, lock_policy(lock.lock_class)))
                        sleeping_lock.append(locks[lid].policy in ("mutex", "rwsem"))
                    lock_of_ref[id(lock)] = lid
                mode = op.mode
                if mode == "write":
                    write = 1
                elif mode == "read":
                    write = 0
                else:
                    raise ValueError(f"thread {th.tid}: Critical mode must be read or write, not {mode!r}")
                if not op.body:  # the common leaf: acquire, hold, release (what the stack would give, without it)
                    hold = op.hold_ns
                    if hold > 0:
                        emit((ACQ, lid, write, op.recorded_wait_ns or 0, 1 if op.derived else 0,
                              KERN, scale(hold) if perturbing else hold, 0, 0, 0, REL, lid, write, 0, 0))
                        pts += leaf_pts[user + 2 * sleeping_lock[lid]]
                    else:
                        emit((ACQ, lid, write, op.recorded_wait_ns or 0, 1 if op.derived else 0,
                              REL, lid, write, 0, 0))
                        point(user or full or (voluntary and sleeping_lock[lid]))
                        point(full)
                    continue
                emit((ACQ, lid, write, op.recorded_wait_ns or 0, 1 if op.derived else 0))
                point(user or full or (voluntary and sleeping_lock[lid]))
                depth += 1
                stack.append((_CLOSE, (REL, lid, write, 0, 0)))
                if op.hold_ns > 0:  # ops.Critical: run the body, then spend hold_ns, then release
                    stack.append((_HOLD, op.hold_ns))
                stack.extend(reversed(op.body))
            elif type(op) is Span:
                k = kind_ids.get(op.kind)
                if k is None:
                    k = kind_ids[op.kind] = len(kinds)
                    kinds.append(op.kind)
                emit((SPAN_B, k, 0, 0, 0))
                point(user or full)
                depth += 1
                stack.append((_CLOSE, (SPAN_E, k, 0, 0, 0)))
                stack.extend(reversed(op.body))
            elif type(op) is Gather:
                zap, free = _gather_costs(op, costs)
                fi = len(floats)
                floats.append(free)
                emit((GB, 1 if op.fullmm else 0, op.pt_pages * costs.free_pt_page_ns, 0, 0))
                point(user or full)
                # chunks end at zap-block ends (resched points) and, for the per-CPU gather, where its
                # 506-page batch fills (tlb_remove_page flushes there, inside the block)
                done = 0
                batch = costs.percpu_batch_pages
                while done < op.pages:
                    block_end = min(op.pages, (done // block + 1) * block)
                    end = min(block_end, (done // batch + 1) * batch) if percpu else block_end
                    n = end - done
                    emit((GZAP, n, round(zap * end) - round(zap * done), fi, 0,
                          GFLUSH, 0, 0, 0, 0))
                    point(False)
                    point(full and not percpu)
                    done = end
                    if done == block_end and done < op.pages:
                        emit((GPOINT, 0, 0, 0, 0))
                        point(True)
                emit((GE, 0, 0, 0, 0))
                point(full and not percpu)
            else:
                raise TypeError(f"thread {th.tid}: not an op: {op!r}")
        emit((END, 0, 0, 0, 0))
        point(True)
        start.append(len(pts))
    chunks.append(np.fromiter(flat, dtype=np.int64, count=len(flat)))
    code = np.concatenate(chunks).reshape(-1, WIDTH)
    return Program(code, np.frombuffer(bytes(pts), dtype=np.uint8), np.asarray(start, dtype=np.int64),
                   np.asarray(floats, dtype=np.float64), locks, kinds)
