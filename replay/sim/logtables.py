"""A run's event logs as typed columns, and the results tables and metrics made from them.

Both engines log the same rows (engine.LOG_COLUMNS, int64 values). The C engine
keeps each log a column at a time, each column already in the type its results
column ends in (LOG_TYPES), and hands the columns over as they are
(cengine.CEngine.columns: numpy arrays over the engine's own memory, freed with
the last reference): no copy of the logs, no transpose. The Python engine's
int64 rows are cut into the same typed columns (from_rows). Metrics (metrics())
and tables (table()) are made from those columns; a column whose type is its
table column's goes into the table without a copy. When no table is wanted
(``simulate(tables=False)``: a replay without ``-o``, a sweep cell) the engine
keeps only the columns the metrics read (METRIC_COLUMNS) and no row of the
other logs.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pyarrow as pa

from replay.sim.engine import LOG_COLUMNS
from replay.sim.program import Program
from replay.trace.schema import LOCK_CLASSES, TABLES_BY_NAME

#: each log column as kept: i8/i4/i2 (int64/32/16, truncated as numpy's astype), bool (value != 0),
#: bit0 (the low bit: the derived flag of the ACQ flags, program.ACQ_DERIVED). ``lid`` (a lock index)
#: becomes lock_addr and lock_class, ``write`` the mode's enum code, ``kind`` (sim_ops) an index of
#: Program.kinds.
LOG_TYPES: dict[str, tuple[str, ...]] = {
    "sim_lock_waits": ("i8", "i8", "i4", "i4", "i4", "i2", "i8", "bool"),
    "sim_lock_holds": ("i8", "i8", "i8", "i4", "i4", "i4", "i2", "i4", "bit0"),
    "sim_ops": ("i8", "i8", "i4", "i4", "i4"),
    "sim_preempt_off": ("i8", "i8", "i4", "i4", "i2", "i2", "bool"),
    "sim_probe": ("i8", "i8", "i4", "i4", "i2"),
    "sim_sched": ("i8", "i4", "i4", "i4", "i2", "i8"),
}
assert all(len(LOG_TYPES[k]) == len(v) for k, v in LOG_COLUMNS.items())

#: the columns metrics() reads: all a run keeps when no table is wanted
METRIC_COLUMNS: dict[str, tuple[str, ...]] = {
    "sim_lock_waits": (),
    "sim_lock_holds": ("dur", "wait", "lid"),
    "sim_ops": ("dur", "kind"),
    "sim_preempt_off": ("dur", "cause"),
    "sim_probe": ("latency",),
    "sim_sched": (),
}

DTYPES = {"i8": np.int64, "i4": np.int32, "i2": np.int16, "bool": np.bool_, "bit0": np.bool_}


class Log:
    """One log's typed columns (those kept) and its number of rows."""

    __slots__ = ("columns", "rows")

    def __init__(self, rows: int, columns: dict[str, np.ndarray]):
        self.rows = rows
        self.columns = columns


def from_rows(name: str, rows: np.ndarray, wanted: tuple[str, ...] | None = None) -> Log:
    """The Python engine's int64 rows of log ``name`` as the typed columns the C engine keeps
    (``wanted``: only those)."""
    cols = {}
    for j, (col, t) in enumerate(zip(LOG_COLUMNS[name], LOG_TYPES[name], strict=True)):
        if wanted is not None and col not in wanted:
            continue
        v = rows[:, j]
        if t == "bool":
            cols[col] = v != 0
        elif t == "bit0":
            cols[col] = (v & 1) != 0
        else:
            cols[col] = np.ascontiguousarray(v.astype(DTYPES[t], copy=False))
    return Log(len(rows), cols)


class Counters(Protocol):
    end: int
    t0: int
    events: int
    instr: int
    work_ns: int
    overhead_ns: int
    spin_ns: int
    probe_cpu_ns: int
    switches: int
    tlb_flushes: int
    ipis: int
    atomic_sleeps: int
    probe_overruns: int
    rq_area: int
    wait_area: list[int]
    contended: list[bool]


def _pct(values: np.ndarray, q: float, overwrite: bool = False) -> float:
    """The q-th percentile (0 for none); ``overwrite``: partition ``values`` in place instead of a copy
    (an order statistic does not depend on the order: the same value; take means and sums before)."""
    return float(np.percentile(values, q, overwrite_input=overwrite)) if len(values) else 0.0


def _lock_class_codes(program: Program) -> np.ndarray:
    return np.asarray([LOCK_CLASSES.index(lk.lock_class) for lk in program.locks], dtype=np.int16)


def _enum_values(table: str, column: str) -> tuple[str, ...]:
    return next(c.values for c in TABLES_BY_NAME[table].columns if c.name == column)


def metrics(eng: Counters, logs: dict[str, Log], program: Program) -> dict[str, float]:
    """A run's metrics: the engine's counters, and the figures of its logs (each column read once)."""
    m: dict[str, float] = {
        "makespan_ns": float(max(0, eng.end - eng.t0)),
        "events": float(eng.events),
        "instructions": float(eng.instr),
        "work_cpu_ns": float(eng.work_ns),
        "overhead_cpu_ns": float(eng.overhead_ns),
        "spin_cpu_ns": float(eng.spin_ns),
        "probe_cpu_ns": float(eng.probe_cpu_ns),
        "context_switches": float(eng.switches),
        "tlb_flushes": float(eng.tlb_flushes),
        "ipis": float(eng.ipis),
        "atomic_sleeps": float(eng.atomic_sleeps),
        "probe_overruns": float(eng.probe_overruns),
    }
    probe = np.asarray(logs["sim_probe"].columns["latency"], dtype=float)
    m["probe_samples"] = float(len(probe))
    m["probe_latency_p50_ns"] = _pct(probe, 50)
    m["probe_latency_p99_ns"] = _pct(probe, 99)
    m["probe_latency_max_ns"] = float(probe.max()) if len(probe) else 0.0
    del probe
    poff = logs["sim_preempt_off"].columns["dur"]
    m["preempt_off_max_ns"] = float(poff.max()) if len(poff) else 0.0
    m["preempt_off_p99_ns"] = _pct(poff, 99)
    holds = logs["sim_lock_holds"]
    if holds.rows:
        cls = _lock_class_codes(program)[holds.columns["lid"]]
        names = _enum_values("sim_lock_holds", "lock_class")
        wait, dur = holds.columns["wait"], holds.columns["dur"]
        for code in np.unique(cls):
            name = names[code]
            sel = cls == code
            m[f"acquisitions:{name}"] = float(sel.sum())
            for fig, col in (("wait", wait), ("hold", dur)):
                v = col[sel]  # selected once (millions of rows), its percentiles partition this copy in place
                mean, top = float(v.mean()), float(v.max())
                m[f"{fig}_mean_ns:{name}"] = mean
                m[f"{fig}_p50_ns:{name}"] = _pct(v, 50, overwrite=True)
                m[f"{fig}_p99_ns:{name}"] = _pct(v, 99, overwrite=True)
                m[f"{fig}_max_ns:{name}"] = top
                del v
            del sel
        del cls
    span = max(1, eng.end - eng.t0)
    m["runq_mean"] = eng.rq_area / span  # time-average run-queue length
    for k, name in enumerate(LOCK_CLASSES):
        if eng.contended[k]:
            m[f"waiters_mean:{name}"] = eng.wait_area[k] / span  # time-average number of waiters (Little's L)
    ops = logs["sim_ops"]
    if ops.rows:
        kinds, dur = ops.columns["kind"], ops.columns["dur"]
        present, first = np.unique(kinds, return_index=True)
        for code in present[np.argsort(first)]:  # in order of first appearance, as the kind column's dictionary
            k = program.kinds[code]
            sel = kinds == code
            d = dur[sel]
            top = float(d.max())
            m[f"op_count:{k}"] = float(sel.sum())
            m[f"op_latency_p50_ns:{k}"] = _pct(d, 50, overwrite=True)
            m[f"op_latency_p99_ns:{k}"] = _pct(d, 99, overwrite=True)
            m[f"op_latency_max_ns:{k}"] = top
            del sel, d
    # the longest preempt-off section per cause (spinlock, gather, ...): what the longest one is made of
    poff_log = logs["sim_preempt_off"]
    if poff_log.rows:
        codes = poff_log.columns["cause"]
        names = _enum_values("sim_preempt_off", "cause")
        durs = np.asarray(poff_log.columns["dur"], dtype=float)
        for code in sorted(np.unique(codes).tolist(), key=names.__getitem__):
            m[f"preempt_off_max_ns:{names[code]}"] = float(durs[codes == code].max())
    return m


def table(name: str, log: Log, program: Program, policy_set: str, seed: int) -> pa.Table:
    """Log ``name`` as an Arrow table of exactly the results schema. Its columns leave ``log`` as they
    go into the table (one in the final type is the table's, not a copy)."""
    spec = TABLES_BY_NAME[name]
    cols = log.columns
    n = log.rows
    if "lid" in cols:  # a lock index: its address and class
        lid = cols.pop("lid")
        cols["lock_addr"] = np.asarray([lk.addr for lk in program.locks], dtype=np.uint64)[lid]
        cols["lock_class"] = _lock_class_codes(program)[lid]
        del lid
        cols["mode"] = cols.pop("write")
    arrays = []
    for col in spec.columns:
        if col.name == "policy_set":
            arrays.append(pa.repeat(pa.scalar(policy_set, pa.string()), n))
        elif col.name == "seed":
            arrays.append(pa.array(np.full(n, seed, dtype=np.int32)))
        elif col.name == "kind" and name == "sim_ops":
            arrays.append(pa.array(program.kinds, pa.string()).take(pa.array(cols.pop("kind"))))
        elif col.is_enum:
            codes = cols.pop(col.name).astype(np.int16, copy=False)
            mask = codes < 0 if col.nullable else None
            arrays.append(pa.DictionaryArray.from_arrays(pa.array(codes, mask=mask),
                                                         pa.array(col.values, pa.string())))
        else:
            arrays.append(pa.array(cols.pop(col.name).astype(col.type.to_pandas_dtype(), copy=False)))
    return pa.Table.from_arrays(arrays, schema=spec.schema)
