"""BPF slots of one kind (numpy records, tracer/events.py) -> columns of their trace table.

Vectorized: one call per chunk and kind, never per event. Rows whose opening
event preceded the recording (MMR_F_NO_START) get ts = the recording start
and dur = end - start.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from replay.trace.schema import LOCK_CLASSES
from tracer import events

LOCK_CLASS_CODE = {name: i for i, name in enumerate(LOCK_CLASSES)}

#: (stack_id, lcb flags, lock_addr) -> lock class; for lock_waits rows.
Classifier = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _interval(rec: np.ndarray, start_ns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ts, dur, incomplete of interval records, fixing those that opened before the recording."""
    ts = rec["ts"].astype(np.int64)
    dur = rec["dur"].astype(np.int64)
    flags = rec["flags"]
    no_start = (flags & events.F_NO_START) != 0
    if no_start.any():
        end = dur[no_start]
        ts[no_start] = start_ns
        dur[no_start] = np.maximum(end - start_ns, 0)
    return ts, dur, (flags & events.F_INCOMPLETE) != 0


def _common(rec: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "seq": rec["seq"].astype(np.int64),
        "cpu": rec["cpu"].astype(np.int32),
        "pid": rec["pid"].astype(np.int32),
        "tid": rec["tid"].astype(np.int32),
    }


def lock_holds(rec: np.ndarray, start_ns: int) -> dict[str, np.ndarray]:
    ts, dur, inc = _interval(rec, start_ns)
    # codes of the column's vocabulary, not strings: no Python object per row
    classes = np.where(rec["lock_class"] == 1, LOCK_CLASS_CODE["mmap_lock"], LOCK_CLASS_CODE["other"]).astype(np.int16)
    return {
        "ts": ts, "dur": dur, "wait": rec["wait"].astype(np.int64), **_common(rec),
        "lock_addr": rec["lock_addr"], "lock_class": classes, "mode": rec["mode"].astype(np.int16),
        "success": rec["success"] != 0, "depth": rec["depth"].astype(np.int32),
        "stack_id": rec["stack_id"].astype(np.int32), "incomplete": inc,
    }


def lock_waits(rec: np.ndarray, start_ns: int, classify: Classifier) -> dict[str, np.ndarray]:
    ts, dur, inc = _interval(rec, start_ns)
    stack = rec["stack_id"].astype(np.int32)
    flags = rec["lcb_flags"].astype(np.uint32)
    return {
        "ts": ts, "dur": dur, **_common(rec), "lock_addr": rec["lock_addr"], "flags": flags,
        "ret": rec["ret"].astype(np.int32), "begins": rec["begins"].astype(np.int32),
        "lock_class": classify(stack, flags, rec["lock_addr"]), "stack_id": stack, "incomplete": inc,
    }


def tlb_flushes(rec: np.ndarray, start_ns: int) -> dict[str, np.ndarray]:
    return {"ts": rec["ts"].astype(np.int64), **_common(rec), "reason": rec["reason"].astype(np.int16),
            "pages": rec["pages"].astype(np.int64)}


def page_free_batches(rec: np.ndarray, start_ns: int) -> dict[str, np.ndarray]:
    ts, dur, inc = _interval(rec, start_ns)
    return {"ts": ts, "dur": dur, **_common(rec), "pages": rec["pages"].astype(np.int64),
            "batched": rec["batched"] != 0, "incomplete": inc}


def page_faults(rec: np.ndarray, start_ns: int) -> dict[str, np.ndarray]:
    return {"ts": rec["ts"].astype(np.int64), **_common(rec), "address": rec["address"], "ip": rec["ip"],
            "error_code": rec["error_code"].astype(np.uint32)}


def syscalls(rec: np.ndarray, start_ns: int) -> dict[str, np.ndarray]:
    ts, dur, inc = _interval(rec, start_ns)
    return {"ts": ts, "dur": dur, **_common(rec), "name": rec["nr"].astype(np.int16), "arg0": rec["arg0"],
            "arg1": rec["arg1"], "ret": rec["ret"].astype(np.int64), "incomplete": inc}


#: sched_switch reports a preempted task as TASK_REPORT_MAX (0x100 since Linux 4.14: its "R+");
#: the trace format's prev_state says 0 for it, as the kernel did before.
TASK_REPORT_MAX = 0x100


def sched_switch(rec: np.ndarray, start_ns: int) -> dict[str, np.ndarray]:
    state = rec["prev_state"].astype(np.int64)
    state[state == TASK_REPORT_MAX] = 0
    return {"ts": rec["ts"].astype(np.int64), "seq": rec["seq"].astype(np.int64),
            "cpu": rec["cpu"].astype(np.int32), "prev_tid": rec["tid"].astype(np.int32),
            "prev_prio": rec["prev_prio"].astype(np.int32), "prev_state": state,
            "next_tid": rec["next_tid"].astype(np.int32), "next_prio": rec["next_prio"].astype(np.int32)}


def sched_wakeup(rec: np.ndarray, start_ns: int) -> dict[str, np.ndarray]:
    return {"ts": rec["ts"].astype(np.int64), "seq": rec["seq"].astype(np.int64),
            "cpu": rec["cpu"].astype(np.int32), "tid": rec["woken_tid"].astype(np.int32),
            "prio": rec["prio"].astype(np.int32), "target_cpu": rec["target_cpu"].astype(np.int32),
            "kind": rec["wake_kind"].astype(np.int16), "waker_tid": rec["tid"].astype(np.int32)}


def ipis(rec: np.ndarray, start_ns: int) -> dict[str, np.ndarray]:
    return {"ts": rec["ts"].astype(np.int64), **_common(rec), "target_cpu": rec["target_cpu"].astype(np.int32),
            "ncpus": rec["ncpus"].astype(np.int32), "callsite": rec["callsite"], "callback": rec["callback"]}


DECODERS = {
    events.EV_LOCK_HOLD: lock_holds,
    events.EV_TLB_FLUSH: tlb_flushes,
    events.EV_PAGE_FREE: page_free_batches,
    events.EV_PAGE_FAULT: page_faults,
    events.EV_SYSCALL: syscalls,
    events.EV_SCHED_SWITCH: sched_switch,
    events.EV_SCHED_WAKEUP: sched_wakeup,
    events.EV_IPI: ipis,
}


def columns(kind: int, rec: np.ndarray, start_ns: int, classify: Classifier,
            presorted: bool = False) -> dict[str, np.ndarray]:
    """The table columns of records of one kind, sorted by (ts, seq).

    presorted: the records are sorted by (ts, seq) already; only rows cut by the
    start (whose ts becomes the recording start) may then need moving.
    """
    if kind == events.EV_LOCK_WAIT:
        cols = lock_waits(rec, start_ns, classify)
    else:
        cols = DECODERS[kind](rec, start_ns)
    if presorted and not (rec["flags"] & events.F_NO_START).any():
        return cols
    order = np.lexsort((cols["seq"], cols["ts"]))
    if np.any(order[1:] != order[:-1] + 1):
        cols = {k: v[order] for k, v in cols.items()}
    return cols


def referenced_tids(kind: int, rec: np.ndarray) -> np.ndarray:
    """Every task id a batch of records refers to (for the tasks table)."""
    parts = [rec["tid"]]
    if kind == events.EV_SCHED_SWITCH:
        parts.append(rec["next_tid"])
    elif kind == events.EV_SCHED_WAKEUP:
        parts.append(rec["woken_tid"])
    # a chunk holds a few tasks' rows, mostly in runs of one task: unique over the run starts only
    # (np.unique sorts; over every row it was ~17 ns a row, most of the decoding after the split)
    firsts = []
    for p in parts:
        p = np.ascontiguousarray(p, dtype=np.int64)
        firsts.append(p[np.flatnonzero(np.diff(p, prepend=p[:1] - 1))])
    return np.unique(np.concatenate(firsts))
