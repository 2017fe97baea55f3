"""simulate(): one run of a Workload under a policy set, preemption model and seed."""

from __future__ import annotations

import ctypes
import mmap
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from replay.errors import InconsistencyError, UsageError
from replay.policies.sets import PolicySet
from replay.sim.cbuild import EngineUnavailable, warn_fallback
from replay.sim.cengine import CEngine
from replay.sim.costs import Costs
from replay.sim.engine import LOG_COLUMNS, Engine
from replay.sim.ops import Workload
from replay.sim.program import Program, flatten
from replay.trace.schema import LOCK_CLASSES, SIM_TABLES, TABLES_BY_NAME

PREEMPT_MODELS = ("none", "voluntary", "full")
MODES = ("closed", "open")
#: auto: the C engine (replay/sim/engine.c) when it can be built here, else the Python one (engine.py)
ENGINES = ("auto", "c", "python")


@dataclass(frozen=True)
class SimConfig:
    """How to run: CPUs, policies, preemption model, seed, replay mode, costs and the probe."""

    cpus: int
    policy: PolicySet
    preempt: str = "full"  # none | voluntary | full
    seed: int = 0
    mode: str = "closed"  # closed | open: each top-level op starts no earlier than its recorded at_ns
    costs: Costs = field(default_factory=Costs)
    probe: bool = True
    probe_period_ns: int = 1_000_000
    #: coefficient of variation of a mean-1 lognormal factor on every Think and hold time (seeded); 0 = as given
    perturb: float = 0.0
    #: which implementation runs it (the results are identical): auto | c | python
    engine: str = "auto"

    def __post_init__(self) -> None:
        if self.cpus < 1:
            raise UsageError(f"--cpus must be at least 1, not {self.cpus}")
        if self.preempt not in PREEMPT_MODELS:
            raise UsageError(f"unknown preemption model {self.preempt!r}; known: {', '.join(PREEMPT_MODELS)}")
        if self.mode not in MODES:
            raise UsageError(f"unknown replay mode {self.mode!r}; known: {', '.join(MODES)}")
        if not 0 <= self.perturb <= 2:
            raise UsageError(f"service-time perturbation must be a coefficient of variation in [0, 2], "
                             f"not {self.perturb}")
        if self.engine not in ENGINES:
            raise UsageError(f"unknown engine {self.engine!r}; known: {', '.join(ENGINES)}")
        if self.probe and self.probe_period_ns < 1:
            raise UsageError(f"probe period must be positive, not {self.probe_period_ns}")


@dataclass
class SimResult:
    """Per-run event tables (results kind, with policy_set and seed) and flat scalar metrics."""

    tables: dict[str, pa.Table]
    metrics: dict[str, float]


def program_for(workload: Workload, config: SimConfig) -> Program:
    """``workload`` flattened for ``config`` (compiled where it can be; the same Program either way).
    Configs with the same program_key get the same Program."""
    flat = (workload, config.policy.lock_policy, config.policy.gather, config.preempt, config.mode == "open",
            config.costs, config.perturb, config.seed)
    if config.engine == "python":
        return flatten(*flat)
    try:
        return flatten(*flat, compiled=True)
    except EngineUnavailable as e:
        warn_fallback(str(e), "flattening in Python")
        return flatten(*flat)


def program_key(config: SimConfig) -> tuple:
    """What the flattened Program depends on: the seed only through the service-time noise."""
    return (config.policy.name, config.preempt, config.mode, config.costs, config.perturb,
            config.seed if config.perturb > 0 else None, config.engine == "python")


def simulate(workload: Workload, config: SimConfig, progress: Callable[[float], None] | None = None,
             program: Program | None = None) -> SimResult:
    """Replay ``workload`` once under ``config``; the same config gives the same result.
    ``program``: program_for(workload, config) (or one with the same program_key) computed before."""
    if program is None:
        program = program_for(workload, config)
    args = (program, workload, config.cpus, config.preempt, config.policy.gather, config.seed, config.costs,
            config.probe, config.probe_period_ns, progress)
    eng: Engine | CEngine
    if config.engine == "python":
        eng = Engine(*args)
    elif config.engine == "c":
        eng = CEngine(*args)
    else:
        try:
            eng = CEngine(*args)
        except EngineUnavailable as e:
            warn_fallback(str(e), "using the Python engine (about 10x slower)")
            eng = Engine(*args)
    try:
        eng.run()
    except AssertionError as e:  # the engines' words for a state the model cannot reach
        what = str(e).removeprefix("C engine: ")
        raise InconsistencyError(f"{what} (policy set {config.policy.name}, seed {config.seed}, "
                                 f"{'C' if isinstance(eng, CEngine) else 'Python'} engine)") from e
    if progress is not None:
        progress(1.0)
    _drop_pages(program)  # the engine has run: the instructions are read no more
    logs = eng.logs()
    if isinstance(eng, CEngine):
        eng.free()  # its own copy of the logs, before the tables are made of ours
        _trim()
    tables = {}
    for name in SIM_TABLE_NAMES:  # each log let go once its table is made (a column the table does not share)
        tables[name] = _table(name, logs.pop(name), program, config)
    return SimResult(tables, _metrics(eng, tables))


def _trim() -> None:
    """Give freed heap memory back to the system (glibc keeps it otherwise: the engine's logs are
    hundreds of MiB on a long trace)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _drop_pages(program: Program) -> None:
    """Take a mapped program's pages out of this process's resident set (batch._mapped's files: they stay
    in the page cache, read again from there if touched). The largest replay process's peak is its
    engine run: the program, the engine's logs and their tables at once."""
    for arr in (program.code, program.points):
        mm = getattr(arr, "_mmap", None)
        if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            mm.madvise(mmap.MADV_DONTNEED)


SIM_TABLE_NAMES = tuple(t.name for t in SIM_TABLES)


def _table(name: str, log: np.ndarray, program: Program, config: SimConfig) -> pa.Table:
    """An engine log (int64 rows, columns as engine.LOG_COLUMNS) to an Arrow table of exactly the results schema."""
    table = TABLES_BY_NAME[name]
    cols = dict(zip(LOG_COLUMNS[name], np.ascontiguousarray(log.T), strict=True))  # one transpose, then views
    n = len(log)
    if "lid" in cols:  # a lock index: its address and class
        lid = cols.pop("lid")
        cols["lock_addr"] = np.asarray([lk.addr for lk in program.locks], dtype=np.uint64)[lid]
        cols["lock_class"] = np.asarray([LOCK_CLASSES.index(lk.lock_class) for lk in program.locks],
                                        dtype=np.int16)[lid]
        cols["mode"] = cols.pop("write")
    if "derived" in cols:  # the ACQ flags the holds carry: the derived bit (program.ACQ_DERIVED)
        cols["derived"] = cols["derived"] & 1
    arrays = []
    for col in table.columns:
        if col.name == "policy_set":
            arrays.append(pa.repeat(pa.scalar(config.policy.name, pa.string()), n))
        elif col.name == "seed":
            arrays.append(pa.array(np.full(n, config.seed, dtype=np.int32)))
        elif col.name == "kind" and name == "sim_ops":
            arrays.append(pa.array(program.kinds, pa.string()).take(pa.array(cols["kind"])))
        elif col.is_enum:
            codes = cols[col.name].astype(np.int16)
            mask = codes < 0 if col.nullable else None
            arrays.append(pa.DictionaryArray.from_arrays(pa.array(codes, mask=mask),
                                                         pa.array(col.values, pa.string())))
        else:
            arrays.append(pa.array(cols[col.name].astype(col.type.to_pandas_dtype(), copy=False)))
    return pa.Table.from_arrays(arrays, schema=table.schema)


def column_codes(col: pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """Integer codes and their names for a string or dictionary column."""
    arr = col.combine_chunks()
    if not pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_encode()
    return arr.indices.to_numpy(zero_copy_only=False), arr.dictionary.to_pylist()


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else 0.0


def _metrics(eng: Engine | CEngine, tables: dict[str, pa.Table]) -> dict[str, float]:
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
    probe = np.asarray(tables["sim_probe"].column("latency").to_numpy(), dtype=float)
    m["probe_samples"] = float(len(probe))
    m["probe_latency_p50_ns"] = _pct(probe, 50)
    m["probe_latency_p99_ns"] = _pct(probe, 99)
    m["probe_latency_max_ns"] = float(probe.max()) if len(probe) else 0.0
    poff = tables["sim_preempt_off"].column("dur").to_numpy()
    m["preempt_off_max_ns"] = float(poff.max()) if len(poff) else 0.0
    m["preempt_off_p99_ns"] = _pct(poff, 99)
    holds = tables["sim_lock_holds"]
    if holds.num_rows:
        cls, names = column_codes(holds.column("lock_class"))
        wait = holds.column("wait").to_numpy()
        dur = holds.column("dur").to_numpy()
        for code in np.unique(cls):
            name = names[code]
            sel = cls == code
            w, d = wait[sel], dur[sel]  # each selected once (millions of rows), not once per figure
            m[f"acquisitions:{name}"] = float(sel.sum())
            m[f"wait_mean_ns:{name}"] = float(w.mean())
            m[f"wait_p50_ns:{name}"] = _pct(w, 50)
            m[f"wait_p99_ns:{name}"] = _pct(w, 99)
            m[f"wait_max_ns:{name}"] = float(w.max())
            m[f"hold_mean_ns:{name}"] = float(d.mean())
            m[f"hold_p50_ns:{name}"] = _pct(d, 50)
            m[f"hold_p99_ns:{name}"] = _pct(d, 99)
            m[f"hold_max_ns:{name}"] = float(d.max())
    span = max(1, eng.end - eng.t0)
    m["runq_mean"] = eng.rq_area / span  # time-average run-queue length
    for k, name in enumerate(LOCK_CLASSES):
        if eng.contended[k]:
            m[f"waiters_mean:{name}"] = eng.wait_area[k] / span  # time-average number of waiters (Little's L)
    ops = tables["sim_ops"]
    if ops.num_rows:
        kinds, names = column_codes(ops.column("kind"))
        dur = ops.column("dur").to_numpy()
        for code in np.unique(kinds):
            k = names[code]
            sel = kinds == code
            d = dur[sel]
            m[f"op_count:{k}"] = float(sel.sum())
            m[f"op_latency_p50_ns:{k}"] = _pct(d, 50)
            m[f"op_latency_p99_ns:{k}"] = _pct(d, 99)
            m[f"op_latency_max_ns:{k}"] = float(d.max())
    return m


__all__ = ["SIM_TABLES", "SimConfig", "SimResult", "program_for", "program_key", "simulate"]
