"""Flattening: a Workload's nested operations become per-thread instruction arrays.

The simulator never walks the op tree while it runs (mm_take_all_locks chains are
hundreds deep): every thread's ops are flattened once, up front, into a list of
small tuples ``(opcode, a, b, c)``, and every lock instance gets an index. The
gather policy is applied here too: a Gather becomes its zap blocks, flush checks
and resched points.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from replay.sim.costs import Costs
from replay.sim.ops import Block, Critical, Gather, Span, Think, Workload
from replay.trace.schema import LOCK_CLASSES

# opcodes
USER = 0  # (ns): user-mode work, preemptible everywhere
KERN = 1  # (ns): kernel work outside a gather
BLOCK = 2  # (ns): off-CPU for ns
UNTIL = 3  # (at_ns): open replay: do not start the next op before at_ns
ACQ = 4  # (lock, write, recorded_wait_ns)
REL = 5  # (lock, write)
SPAN_B = 6  # (kind index)
SPAN_E = 7  # (kind index)
GB = 8  # (fullmm, pt_pages, free_pt_ns): gather begins
GZAP = 9  # (pages, zap_ns, free_ns_per_page): zap pages under the PTL (or the per-CPU gather)
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


@dataclass
class Program:
    """Flattened threads plus the tables the instructions refer to."""

    code: list[list[tuple]]  # per thread: instructions
    points: list[list[bool]]  # per thread per pc: a preemption point under the model (ignoring preempt count)
    locks: list[LockInfo]
    kinds: list[str]  # Span kinds by index


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
    locks: list[LockInfo] = []
    kinds: list[str] = []
    kind_ids: dict[str, int] = {}
    percpu = gather == "percpu"
    if percpu:
        block = costs.zap_block_preempt_pages if preempt == "full" else costs.zap_block_nopreempt_pages
    else:
        block = costs.ptl_chunk_pages
    full = preempt == "full"
    voluntary = preempt == "voluntary"
    code_all: list[list[tuple]] = []
    points_all: list[list[bool]] = []
    if perturb > 0:
        rng = random.Random(seed * 0x9E3779B1 + 0x5EED)
        sigma = math.sqrt(math.log(1 + perturb * perturb))
        mu = -sigma * sigma / 2

        def scale(ns: int) -> int:
            return round(ns * rng.lognormvariate(mu, sigma))
    else:
        def scale(ns: int) -> int:
            return ns
    for th in workload.threads:
        code: list[tuple] = []
        points: list[bool] = []
        depth = 0
        stack: list[object] = list(reversed(th.ops))
        while stack:
            op = stack.pop()
            user = depth == 0
            if type(op) is tuple:
                if op[0] is _HOLD:
                    code.append((KERN, scale(op[1])))
                    points.append(full)
                else:  # (_CLOSE, instruction)
                    depth -= 1
                    code.append(op[1])
                    points.append(full)
                continue
            if open_mode and user and op.at_ns is not None:
                code.append((UNTIL, op.at_ns))
                points.append(True)
            if type(op) is Think:
                if op.ns > 0:
                    code.append((USER if user else KERN, scale(op.ns)))
                    points.append(user or full)
            elif type(op) is Block:
                code.append((BLOCK, op.ns))
                points.append(True)
            elif type(op) is Critical:
                key = (op.lock.lock_class, op.lock.addr)
                lid = lock_ids.get(key)
                if lid is None:
                    if op.lock.lock_class not in LOCK_CLASSES:
                        raise ValueError(f"thread {th.tid}: unknown lock class {op.lock.lock_class!r}; "
                                         f"known: {', '.join(LOCK_CLASSES)}")
                    lid = lock_ids[key] = len(locks)
                    locks.append(LockInfo(op.lock.lock_class, op.lock.addr, lock_policy(op.lock.lock_class)))
                if op.mode not in ("read", "write"):
                    raise ValueError(f"thread {th.tid}: Critical mode must be read or write, not {op.mode!r}")
                write = op.mode == "write"
                sleeping = locks[lid].policy in ("mutex", "rwsem")
                code.append((ACQ, lid, write, op.recorded_wait_ns or 0, op.derived))
                points.append(user or full or (voluntary and sleeping))
                if not op.body:  # the common leaf: hold, release (what the stack would give, without it)
                    if op.hold_ns > 0:
                        code.append((KERN, scale(op.hold_ns)))
                        points.append(full)
                    code.append((REL, lid, write))
                    points.append(full)
                    continue
                depth += 1
                stack.append((_CLOSE, (REL, lid, write)))
                if op.hold_ns > 0:  # ops.Critical: run the body, then spend hold_ns, then release
                    stack.append((_HOLD, op.hold_ns))
                stack.extend(reversed(op.body))
            elif type(op) is Span:
                k = kind_ids.get(op.kind)
                if k is None:
                    k = kind_ids[op.kind] = len(kinds)
                    kinds.append(op.kind)
                code.append((SPAN_B, k))
                points.append(user or full)
                depth += 1
                stack.append((_CLOSE, (SPAN_E, k)))
                stack.extend(reversed(op.body))
            elif type(op) is Gather:
                zap, free = _gather_costs(op, costs)
                code.append((GB, op.fullmm, op.pt_pages * costs.free_pt_page_ns))
                points.append(user or full)
                # chunks end at zap-block ends (resched points) and, for the per-CPU gather, where its
                # 506-page batch fills (tlb_remove_page flushes there, inside the block)
                done = 0
                batch = costs.percpu_batch_pages
                while done < op.pages:
                    block_end = min(op.pages, (done // block + 1) * block)
                    end = min(block_end, (done // batch + 1) * batch) if percpu else block_end
                    n = end - done
                    code.append((GZAP, n, round(zap * end) - round(zap * done), free))
                    points.append(False)
                    code.append((GFLUSH,))
                    points.append(full and not percpu)
                    done = end
                    if done == block_end and done < op.pages:
                        code.append((GPOINT,))
                        points.append(True)
                code.append((GE,))
                points.append(full and not percpu)
            else:
                raise TypeError(f"thread {th.tid}: not an op: {op!r}")
        code.append((END,))
        points.append(True)
        code_all.append(code)
        points_all.append(points)
    return Program(code_all, points_all, locks, kinds)
