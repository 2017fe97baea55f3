"""Synthesize a trace: iterate each task's template, schedule the tasks on CPUs, write the rows.

The trace models what a recording with tier-2 probes would hold for the
workload (lock holds of every class, gathers, syscalls, faults, TLB flushes,
page-free bursts, context switches), generated as if nothing were contended:
every lock wait is 0 and ``lock_waits`` is empty. The replayer adds contention.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from replay.errors import UsageError
from replay.synth.model import Model
from replay.synth.patterns import CHILD_TID_BASE, CHILD_TIDS_PER_TASK, PATTERNS, Params, TaskInfo, tasks_for
from replay.synth.schedule import PRIO, TASK_DEAD, TASK_INTERRUPTIBLE, SchedRows, TaskRun, schedule_cpu
from replay.synth.template import Compiled, Ctx, Timeline, column, compile_template, evaluate
from replay.trace.manifest import Host, Manifest, Probe
from replay.trace.schema import TABLES_BY_NAME
from replay.trace.writer import TraceWriter

#: Where the synthetic clock starts (a monotonic clock is never near 0 on a live host).
BASE_NS = 1_000_000_000
#: Refuse syntheses estimated to hold more rows than this (peak memory is ~160 bytes a row: 48 tasks of
#: page_fault1_threads for 0.1 s are 9.1 M rows, 1.4 GB, 7 s on the project host).
MAX_ROWS = 20_000_000
#: Rows per chunk handed to the writer.
WRITE_CHUNK = 1 << 20
#: The tables a synthetic trace declares even when they stay empty (a probe that saw nothing).
TABLES = ("tasks", "syscalls", "lock_holds", "lock_waits", "gathers", "page_free_batches", "tlb_flushes",
          "page_faults", "sched_switch", "sched_wakeup")
#: Probe tier that would have filled each table in a recording.
TIERS = {"lock_holds": 2, "gathers": 2}


@dataclass
class Synthesis:
    """What was synthesized, for the CLI to report."""

    manifest: Manifest
    rows: dict[str, int]
    iterations: dict[int, int] = field(default_factory=dict)  # task tid -> complete iterations


@dataclass(frozen=True)
class _Const:
    """A column piece holding one value n times, materialized only chunk by chunk when written."""

    value: Any
    n: int


@dataclass
class _Rows:
    """Rows of one table being assembled, with the keys that give the trace-wide seq:
    (ts, cpu, pri1, pri2) -- pri1 the template position, pri2 puts marks and outer spans first."""

    cols: dict[str, list[Any]] = field(default_factory=dict)
    pri: list[tuple[Any, Any]] = field(default_factory=list)

    def add(self, values: dict[str, Any], n: int, pri1: Any, pri2: Any) -> None:
        for name, v in values.items():
            arr = np.asarray(v)
            self.cols.setdefault(name, []).append(_Const(arr[()], n) if arr.ndim == 0 else arr)
        self.pri.append((pri1 if np.ndim(pri1) else _Const(pri1, n), pri2 if np.ndim(pri2) else _Const(pri2, n)))


def _concat(pieces: list[Any]) -> Any:
    """Join column pieces; stays a _Const when every piece is the same constant."""
    if all(isinstance(p, _Const) for p in pieces) and len({p.value for p in pieces}) == 1:
        return _Const(pieces[0].value, sum(p.n for p in pieces))
    return np.concatenate([np.full(p.n, p.value) if isinstance(p, _Const) else p for p in pieces])


def _length(cols: dict[str, Any]) -> int:
    col = cols.get("seq", cols.get("tid"))
    return col.n if isinstance(col, _Const) else len(col)


def _materialize(col: Any, lo: int, hi: int) -> np.ndarray:
    return np.full(min(hi, col.n) - lo, col.value) if isinstance(col, _Const) else col[lo:hi]


def _estimate_rows(compiled: Compiled, iterations: float) -> float:
    return compiled.instances * iterations


def _timeline(compiled: Compiled, model: Model, rng: np.random.Generator, need_ns: float) -> Timeline:
    mean = compiled.mean_ns(model)
    k = int(math.ceil(need_ns / mean * 1.15)) + 2
    while True:
        tl = evaluate(compiled, model, rng, k)
        if tl.v[-1] > need_ns:
            return tl
        k *= 2


def _enum_codes(table: str, name: str, value: Any) -> Any:
    col = next(c for c in TABLES_BY_NAME[table].columns if c.name == name)
    if col.is_enum and isinstance(value, str):
        return np.int16(col.values.index(value))
    return value


def _emit_task(run: TaskRun, task: TaskInfo, tables: dict[str, _Rows], real_base: float) -> int:
    """Turn one task's kept template instances into rows; returns its complete iterations."""
    tl, c = run.timeline, run.timeline.compiled
    m, k_total, n_inst = c.leaves, tl.iterations, c.instances
    stop_v = tl.v[run.stop]
    if run.stop == 0 or n_inst == 0:
        return 0
    last_k = min(k_total - 1, (run.stop - 1) // m)
    ks = np.arange(last_k + 1, dtype=np.int64)
    k = np.repeat(ks, n_inst)
    inst = np.tile(np.arange(n_inst), ks.size)
    first = c.inst_first[inst] + k * m
    last = c.inst_last[inst]
    is_span = last >= 0
    last = np.where(is_span, last + k * m, -1)
    start_v = tl.v[first]
    end_v = np.where(is_span, tl.v[np.maximum(last, 0) + 1], start_v)
    keep = np.where(is_span, end_v <= stop_v, start_v < stop_v)
    emitter = c.inst_emitter[inst]
    for e_id, em in enumerate(c.emitters):
        sel = np.nonzero(keep & (emitter == e_id))[0]
        if sel.size == 0:
            continue
        kk, rep = k[sel], c.inst_rep[inst[sel]]
        ts = np.rint(run.real(start_v[sel]) + real_base).astype(np.int64)
        values: dict[str, Any] = {"ts": ts, "cpu": np.int32(task.cpu)}
        tid = np.full(sel.size, task.tid, np.int32) if em.role == 0 else np.asarray(task.child_tid(kk), np.int32)
        values["tid"] = tid
        values["pid"] = np.full(sel.size, task.pid, np.int32) if em.role == 0 else tid
        if em.interval:
            end = np.rint(run.real(end_v[sel], end=True) + real_base).astype(np.int64)
            values["dur"] = end - ts
            values["incomplete"] = False
        ctx = Ctx(kk, rep)
        for name, v in em.cols.items():
            values[name] = _enum_codes(em.table, name, column(v, ctx))
        if em.table == "lock_holds":
            values.update(wait=np.int64(0), success=True, stack_id=np.int32(-1), depth=c.inst_depth[inst[sel]])
        pri2 = -last[sel] if em.interval else np.iinfo(np.int64).min  # marks first, then outer spans first
        tables[em.table].add(values, sel.size, first[sel], pri2)
    return run.stop // m


def _role_switches(run: TaskRun, task: TaskInfo, rows: SchedRows) -> None:
    """The context switches a fork into the child and its exit back to the parent leave."""
    changes = run.timeline.role_changes()
    changes = changes[changes < run.stop]
    if changes.size == 0:
        return
    ts = run.real(run.timeline.v[changes])
    for b, t in zip(changes.tolist(), ts.tolist(), strict=True):
        prev, nxt = run.tid_of_leaf(b - 1), run.tid_of_leaf(b)
        into_child = run.timeline.leaf_role(b) != 0
        rows.switch.append((t, task.cpu, prev, TASK_INTERRUPTIBLE if into_child else TASK_DEAD, nxt))
        rows.wakeup.append((t, task.cpu, nxt, "wakeup_new" if into_child else "wakeup", prev))


def synthesize(
    name: str,
    out: str | os.PathLike[str],
    *,
    tasks: int,
    cpus: int,
    seconds: float,
    seed: int = 0,
    model: Model | None = None,
    region_pages: int = 0,
    fault_lock: str = "vma",
    files: int = 256,
    preempt_model: str = "voluntary",
    force: bool = False,
    command: Sequence[str] = (),
) -> Synthesis:
    """Write the synthetic trace of pattern ``name`` to ``out``."""
    pattern = PATTERNS.get(name)
    if pattern is None:
        raise UsageError(f"unknown pattern {name!r}; known: {', '.join(sorted(PATTERNS))}")
    model = model or Model()
    params = Params(tasks=tasks, cpus=cpus, region_pages=region_pages, fault_lock=fault_lock, files=files)
    pages = pattern.region_pages(params)
    infos = tasks_for(pattern, params)
    seconds_ns = seconds * 1e9

    # Estimate the size from the first two tasks (the others repeat the second) before building them all.
    share = min(1.0, cpus / tasks)
    estimate = 0.0
    for t in infos[:2]:
        c = compile_template(pattern.build(t, params, pages))
        weight = 1 if t.index == 0 else tasks - 1
        estimate += weight * _estimate_rows(c, seconds_ns * share / c.mean_ns(model))
    if estimate > MAX_ROWS:
        raise UsageError(
            f"{name} with {tasks} tasks for {seconds} s would hold about {estimate / 1e6:.0f} M rows "
            f"(limit {MAX_ROWS // 1_000_000} M); use fewer --seconds or a smaller --region"
        )
    compiled = [compile_template(pattern.build(t, params, pages)) for t in infos]

    runs: list[TaskRun] = []
    for t, c in zip(infos, compiled, strict=True):
        rng = np.random.default_rng([seed, t.index])
        tl = _timeline(c, model, rng, seconds_ns)
        if tl.compiled.leaf_role.any() and tl.iterations > CHILD_TIDS_PER_TASK:
            raise UsageError(f"{name}: more than {CHILD_TIDS_PER_TASK} children per task; use fewer --seconds")
        runs.append(TaskRun(tl, _tid_of_leaf(tl, t)))
    sched = SchedRows()
    for cpu in range(cpus):
        on_cpu = [r for r, t in zip(runs, infos, strict=True) if t.cpu == cpu]
        if on_cpu:
            schedule_cpu(cpu, on_cpu, seconds_ns, sched)

    tables = {n: _Rows() for n in TABLES}
    iterations: dict[int, int] = {}
    for run, t in zip(runs, infos, strict=True):
        iterations[t.tid] = _emit_task(run, t, tables, BASE_NS)
        _role_switches(run, t, sched)
        run.release()  # its timeline is no longer needed
    _add_sched(tables, sched)
    _add_tasks(tables, infos)
    data = _finish(tables)

    host = Host(kernel_release="synthetic", arch="x86_64", page_size=4096, cpus=cpus,
                preempt_model=preempt_model, hostname="synthetic")
    extra = {"synth": {
        "pattern": name, "description": pattern.description, "mode": pattern.mode, "tasks": tasks, "cpus": cpus,
        "seconds": seconds, "seed": seed, "region_pages": pages, "fault_lock": fault_lock, "files": files,
        "iterations": {str(k): v for k, v in iterations.items()}, "waits": "none: generated uncontended",
        "model": model.describe(),
    }}
    rows: dict[str, int] = {}
    with TraceWriter(out, source="synthetic", host=host, command=command, force=force, extra=extra) as w:
        for table in TABLES:
            w.declare(table)
            rows[table] = 0
            cols = data.pop(table, None)  # written in chunks and dropped, to bound the memory of conversion
            n = _length(cols) if cols else 0
            for lo in range(0, n, WRITE_CHUNK):
                rows[table] += w.write(table, {k: _materialize(v, lo, lo + WRITE_CHUNK) for k, v in cols.items()})
            if table != "tasks":
                w.add_probe(Probe(name=f"synthetic:{table}", tier=TIERS.get(table, 1), status="recorded",
                                  reason="synthesized by mmreplay synth", events=rows[table]))
        manifest = w.close(start_ns=BASE_NS, end_ns=BASE_NS + int(round(seconds_ns)))
    return Synthesis(manifest, rows, iterations)


def _tid_of_leaf(tl: Timeline, t: TaskInfo) -> Callable[[int], int]:
    """Which task runs leaf ``leaf``: the task itself, or the child its iteration forked."""
    m = tl.compiled.leaves
    roles = tl.compiled.leaf_role

    def tid(leaf: int) -> int:
        leaf = min(max(leaf, 0), tl.leaves - 1)
        return t.tid if roles[leaf % m] == 0 else int(t.child_tid(leaf // m))

    return tid


def _add_sched(tables: dict[str, _Rows], sched: SchedRows) -> None:
    if sched.switch:
        a = np.array(sched.switch, dtype=np.float64)
        n = len(a)
        tables["sched_switch"].add({
            "ts": np.rint(a[:, 0] + BASE_NS).astype(np.int64), "cpu": a[:, 1].astype(np.int32),
            "prev_tid": a[:, 2].astype(np.int32), "prev_prio": np.int32(PRIO), "prev_state": a[:, 3].astype(np.int64),
            "next_tid": a[:, 4].astype(np.int32), "next_prio": np.int32(PRIO),
        }, n, -1, 0)
    if sched.wakeup:
        n = len(sched.wakeup)
        ts, cpu, tid, kind, waker = zip(*sched.wakeup, strict=True)
        tables["sched_wakeup"].add({
            "ts": np.rint(np.array(ts) + BASE_NS).astype(np.int64), "cpu": np.array(cpu, np.int32),
            "tid": np.array(tid, np.int32), "prio": np.int32(PRIO), "target_cpu": np.array(cpu, np.int32),
            "kind": np.array(kind), "waker_tid": np.array(waker, np.int32),
        }, n, -2, 0)


def _add_tasks(tables: dict[str, _Rows], infos: list[TaskInfo]) -> None:
    seen: dict[int, tuple[int, str]] = {}
    for t in infos:
        if t.pid != t.tid:
            seen.setdefault(t.pid, (t.pid, t.comm))  # the thread-group leader that started the threads
        seen[t.tid] = (t.pid, t.comm)
    children: set[int] = set()
    for name in ("syscalls", "lock_holds", "page_faults", "gathers", "page_free_batches", "tlb_flushes"):
        for arr in tables[name].cols.get("tid", []):
            children.update([int(arr.value)] if isinstance(arr, _Const) else np.unique(arr).tolist())
    child_comm = {t.index: t.child_comm for t in infos}
    for tid in sorted(children - set(seen)):
        seen[tid] = (tid, child_comm.get((tid - CHILD_TID_BASE) // CHILD_TIDS_PER_TASK, "child"))
    tids = sorted(seen)
    tables["tasks"].cols = {
        "tid": [np.array(tids, np.int32)],
        "pid": [np.array([seen[t][0] for t in tids], np.int32)],
        "comm": [np.array([seen[t][1] for t in tids], dtype=object)],
    }


def _finish(tables: dict[str, _Rows]) -> dict[str, dict[str, Any]]:
    """Concatenate, give every event row its trace-wide seq (ts, then cpu, then template order), sort.

    Pieces are released as they are joined; constant columns stay constants."""
    out: dict[str, dict[str, Any]] = {}
    owners: list[tuple[str, int]] = []
    key_parts: list[list[np.ndarray]] = [[], [], [], []]
    for name, r in tables.items():
        if not r.pri:
            continue
        cols = {k: _concat(r.cols.pop(k)) for k in list(r.cols)}
        n = cols["ts"].shape[0]
        pri1, pri2 = _concat([p for p, _ in r.pri]), _concat([p for _, p in r.pri])
        for i, part in enumerate((cols["ts"], cols["cpu"], pri1, pri2)):
            key_parts[i].append(np.asarray(_materialize(part, 0, n), np.int64))
        r.pri.clear()
        out[name] = cols
        owners.append((name, n))
    if owners:
        keys = [np.concatenate(parts) for parts in key_parts]
        key_parts.clear()
        order = np.lexsort(keys[::-1])
        del keys
        seq = np.empty(len(order), np.int64)
        seq[order] = np.arange(len(order), dtype=np.int64)
        del order
        pos = 0
        for name, n in owners:
            s = seq[pos: pos + n]
            pos += n
            by_seq = np.argsort(s, kind="stable")
            cols = out[name]
            for k in list(cols):
                if not isinstance(cols[k], _Const):
                    cols[k] = cols[k][by_seq]
            cols["seq"] = s[by_seq]
    if tables["tasks"].cols:
        out["tasks"] = {k: np.concatenate(v) for k, v in tables["tasks"].cols.items()}
    return out
