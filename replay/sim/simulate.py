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
from replay.sim import logtables
from replay.sim.cbuild import EngineUnavailable, warn_fallback
from replay.sim.cengine import CEngine
from replay.sim.costs import Costs
from replay.sim.engine import Engine
from replay.sim.ops import Workload
from replay.sim.program import Program, flatten
from replay.trace.schema import SIM_TABLES

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
             program: Program | None = None, tables: bool = True,
             sink: Callable[[str, pa.Table], None] | None = None) -> SimResult:
    """Replay ``workload`` once under ``config``; the same config gives the same result.
    ``program``: program_for(workload, config) (or one with the same program_key) computed before.
    ``tables``: False for the metrics alone (the engine then keeps only the log columns they read).
    ``sink``: each table is handed to it as soon as it is made and not kept (SimResult.tables empty)."""
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
    wanted = None if tables else logtables.METRIC_COLUMNS
    if isinstance(eng, CEngine):
        eng.keep(wanted)
    try:
        eng.run()
    except AssertionError as e:  # the engines' words for a state the model cannot reach
        what = str(e).removeprefix("C engine: ")
        raise InconsistencyError(f"{what} (policy set {config.policy.name}, seed {config.seed}, "
                                 f"{'C' if isinstance(eng, CEngine) else 'Python'} engine)") from e
    if progress is not None:
        progress(1.0)
    _drop_pages(program)  # the engine has run: the instructions are read no more
    if isinstance(eng, CEngine):
        logs = eng.columns()  # the engine's own memory, handed over: no copy
        eng.free()  # the rest of its state
        _trim()
    else:
        logs = {name: logtables.from_rows(name, rows, None if wanted is None else wanted[name])
                for name, rows in eng.logs().items()}
    metrics = logtables.metrics(eng, logs, program)
    out = {}
    if tables:
        for name in SIM_TABLE_NAMES:  # each log's columns let go as they go into its table
            table = logtables.table(name, logs.pop(name), program, config.policy.name, config.seed)
            if sink is None:
                out[name] = table
            else:
                sink(name, table)
            del table
    return SimResult(out, metrics)


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


def column_codes(col: pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """Integer codes and their names for a string or dictionary column."""
    arr = col.combine_chunks()
    if not pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_encode()
    return arr.indices.to_numpy(zero_copy_only=False), arr.dictionary.to_pylist()


__all__ = ["SIM_TABLES", "SimConfig", "SimResult", "program_for", "program_key", "simulate"]
