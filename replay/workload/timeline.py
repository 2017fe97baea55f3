"""Lay a Workload out as recorded: every op at its recorded duration, one CPU per thread.

This is what replay under ``as-recorded`` with enough CPUs must reproduce, and
what the reconstruction must get back from the trace (the identity check,
DESIGN.md §6.2): closed-loop, each op starts when the previous one ended, each
lock acquisition waits its recorded wait.
"""

from __future__ import annotations

from dataclasses import dataclass

from replay.sim.ops import Block, Critical, Gather, Op, Span, Think, Workload


@dataclass(frozen=True)
class Placed:
    """One op of one thread on the recorded clock; ``start`` is the attempt, ``acquired`` the lock."""

    tid: int
    kind: str  # think | block | critical:<class> | gather | span:<kind>
    start: int
    end: int
    acquired: int | None = None
    depth: int = 0


def layout(workload: Workload) -> list[Placed]:
    """Every op of every thread with its start and end when nothing waits beyond the recording."""
    out: list[Placed] = []
    for t in workload.threads:
        # (op, depth, phase): phase 0 opens an op, phase 1 closes a Critical/Span after its body
        now = t.start_ns
        todo: list[tuple[Op, int, int, int, int | None]] = [(op, 0, 0, 0, None) for op in reversed(t.ops)]
        while todo:
            op, depth, phase, started, acquired = todo.pop()
            if isinstance(op, Think | Block):
                out.append(Placed(t.tid, type(op).__name__.lower(), now, now + op.ns, depth=depth))
                now += op.ns
            elif isinstance(op, Gather):
                ns = op.recorded_ns or 0
                out.append(Placed(t.tid, "gather", now, now + ns, depth=depth))
                now += ns
            elif phase == 0:
                start = now
                got = None
                if isinstance(op, Critical):
                    now += op.recorded_wait_ns or 0
                    got = now
                todo.append((op, depth, 1, start, got))
                todo.extend((b, depth + 1, 0, 0, None) for b in reversed(op.body))
            else:
                if isinstance(op, Critical):
                    now += op.hold_ns
                    out.append(Placed(t.tid, f"critical:{op.lock.lock_class}", started, now, acquired, depth))
                    if op.downgrade is not None:  # the read section follows at once, as recorded
                        todo.append((op.downgrade, depth, 0, 0, None))
                else:
                    assert isinstance(op, Span)
                    out.append(Placed(t.tid, f"span:{op.kind}", started, now, depth=depth))
    return out
