"""Switches of a recorded task that the kernel never reported, counted as the sched_switch rows are written.

Every switch-out of a recorded task is followed by its switch-in and the reverse, whoever the other side
is: bpf/sched_switch.c records a switch whenever one side is a recorded task, and flags which sides are
(MMR_F_PREV_RECORDED, MMR_F_NEXT_RECORDED). Two switch-outs of a task with no switch-in between mean the
kernel ran the task again without a sched_switch event that any tracer saw, the recorder's programs
included (its events are numbered by one global counter, and no number is missing there). Measured on this
project's development host (Linux 6.18.44-fc): no tracer (ftrace, perf, a bare BPF program on the raw
tracepoint) ever sees a switch whose prev is a thread of PID 1, the VM's agent, though those threads switch
about once a second; a task the agent preempted comes back without a switch-in. Such a gap is a switch the
kernel did not emit, not an event the recorder failed to write: it is counted apart from loss
("not_emitted_by_kernel"), never silent, with the task each gap's switch-out went to (`gap_next`: the agent's
threads, on that host).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tracer import events


@dataclass
class SwitchGaps:
    """Per recorded task, the direction of its last switch; gaps counted across written chunks."""

    missing_in: int = 0  # a switch-out after a switch-out: the switch-in between was not reported
    missing_out: int = 0  # a switch-in after a switch-in: the switch-out between was not reported
    _last: dict[int, int] = field(default_factory=dict)  # tid -> +1 (last switched in) / -1 (out)
    _last_next: dict[int, int] = field(default_factory=dict)  # tid -> next_tid of its last switch-out
    #: per missing switch-in: the task its earlier switch-out went to (whose own switch-out never came)
    gap_next: list[int] = field(default_factory=list)

    def feed(self, rec: np.ndarray) -> None:
        """Records of sched_switch (events.DTYPES["mmr_sched_switch"]), sorted by (ts, seq), after every
        earlier chunk fed."""
        if not len(rec):
            return
        flags = rec["flags"]
        prev_in = (flags & events.F_PREV_RECORDED) != 0
        next_in = (flags & events.F_NEXT_RECORDED) != 0
        row = np.arange(len(rec), dtype=np.int64)
        # one step per recorded side: (tid, +1 in / -1 out), in row order (a row's two sides are two tasks)
        tid = np.concatenate([rec["tid"][prev_in].astype(np.int64), rec["next_tid"][next_in].astype(np.int64)])
        step = np.concatenate([np.full(int(prev_in.sum()), -1, np.int8), np.full(int(next_in.sum()), 1, np.int8)])
        at = np.concatenate([row[prev_in], row[next_in]])
        keep = tid > 0  # the idle tasks share tid 0, one per CPU
        tid, step, at = tid[keep], step[keep], at[keep]
        if not len(tid):
            return
        order = np.lexsort((at, tid))
        tid, step, at = tid[order], step[order], at[order]
        first = np.ones(len(tid), bool)
        first[1:] = tid[1:] != tid[:-1]
        before = np.empty(len(tid), np.int8)
        before[1:] = step[:-1]
        starts = np.flatnonzero(first)
        before[starts] = [self._last.get(int(t), 0) for t in tid[starts]]
        same = step == before
        gaps_in = np.flatnonzero(same & (step < 0))
        if len(gaps_in):  # rare: which task ran instead, from the switch-out before the second one
            nxt = rec["next_tid"]
            for j in gaps_in.tolist():
                if j > 0 and not first[j]:
                    self.gap_next.append(int(nxt[at[j - 1]]))
                else:
                    self.gap_next.append(self._last_next.get(int(tid[j]), -1))
        self.missing_in += len(gaps_in)
        self.missing_out += int(np.count_nonzero(same & (step > 0)))
        ends = np.append(starts[1:] - 1, len(tid) - 1)
        self._last.update(zip(tid[ends].tolist(), step[ends].tolist(), strict=True))
        outs = step < 0
        self._last_next.update(zip(tid[outs].tolist(), rec["next_tid"][at[outs]].tolist(), strict=True))

    @property
    def missing(self) -> int:
        return self.missing_in + self.missing_out
