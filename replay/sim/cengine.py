"""The compiled engine: replay/sim/engine.c, built at install (replay.sim._engine) and driven through ctypes.

engine.c transcribes engine.py (the reference, which documents the model) and
gives bit-identical results; it runs the same Program and writes the same logs,
10-20 times faster (benchmarks/replay_speed.py). setup.py compiles it as plain
C (no Python API); replay/sim/cbuild.py finds it and checks it was built from
this engine.c. Where it is not installed, ``engine="auto"`` falls back to
engine.py and says so.
"""

from __future__ import annotations

import ctypes
import mmap
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

from replay.errors import MmreplayError
from replay.sim.cbuild import EngineUnavailable, locate
from replay.sim.costs import SAMPLE_COSTS, Costs
from replay.sim.engine import (
    DONE,
    LOG_COLUMNS,
    P_GATHER,
    P_PTL,
    P_RECORDED_SPIN,
    P_SPIN_WAIT,
    P_SPINLOCK,
    PROBE_CAUSE_OF,
    Q_IDLE,
    Q_KERNEL,
    Q_PREEMPTIBLE,
    Q_SWITCH,
    R_BLOCK,
    R_DISPATCH,
    R_EXIT,
    R_PREEMPT,
    R_PROBE_END,
    R_SLEEP_LOCK,
)
from replay.sim.logtables import DTYPES, LOG_TYPES, Log
from replay.sim.ops import Workload
from replay.sim.program import SLEEPING_CLASSES, Program
from replay.trace.schema import LOCK_CLASSES

SOURCE = Path(__file__).with_name("engine.c")
LOCK_KINDS = {"spinlock": 0, "qspinlock": 0, "mutex": 1, "rwsem": 2, "as-recorded": 3, "rwsem-classic": 4,
              "mutex-classic": 5}
REPORT_EVERY = 1 << 16
#: engine events between two drops of a mapped program's pages from the resident set
DROP_EVERY = 1 << 21

_I64 = ctypes.c_int64
_P64 = ctypes.POINTER(ctypes.c_int64)
_PF64 = ctypes.POINTER(ctypes.c_double)


class Params(ctypes.Structure):
    """struct mmr_params (engine.c), field for field."""

    _fields_ = [(name, _I64) for name in (
        "cpus", "full", "percpu", "probe", "probe_period", "nthreads", "nlocks", "ninstr", "nclasses",
        "context_switch", "wakeup", "wake_jitter", "timeslice", "probe_irq", "probe_run", "line", "line_remote",
        "cpus_per_socket", "max_gather_pages", "batch_pages", "percpu_batch_pages", "local_batch_pages",
        "invlpg", "full_flush", "flush_ceiling", "ipi_handler", "shootdown", "mutex_waker", "lazy_leave")] + [
        ("batch_alloc_fail_p", ctypes.c_double)] + [(name, _I64) for name in (
            "r_dispatch", "r_preempt", "r_block", "r_sleep_lock", "r_exit", "r_probe_end",
            "p_spinlock", "p_spin_wait", "p_gather", "p_ptl", "p_recorded_spin",
            "q_idle", "q_preemptible", "q_kernel", "q_switch")] + [
        ("probe_cause_of", _I64 * 8),
        ("code", _P64),
        ("points", ctypes.POINTER(ctypes.c_uint8)),
        ("start", _P64),
        ("floats", _PF64),
        ("lock_kind", _P64), ("lock_handoff", _P64), ("lock_sleeping", _P64), ("lock_cls", _P64),
        ("lock_cost", _P64), ("lock_lines", _P64),
        ("lock_per_waiter", _PF64),
        ("tid", _P64), ("mm", _P64), ("start_ns", _P64),
        ("probe_at", _P64),
        ("mt", ctypes.POINTER(ctypes.c_uint32)),
        ("lock_tracer", _P64),  # issue #16: engine.py's lock_tracer
        ("lock_tail", _P64), ("lock_dtail", _P64),  # issue #16: engine.py's lock_tail, lock_dtail
        ("handoffs", _P64), ("nhandoffs", _I64),  # issue #16: engine.py's handoffs
        ("lock_wakes", _P64), ("nlock_wakes", _I64),  # issue #16: engine.py's lock_wakes
        ("sleep_window", _I64),  # issue #16: engine.py's sleep_window
        ("block_exact", _I64),  # issue #16: engine.py's block_exact
        ("long_wakes", _P64), ("nlong_wakes", _I64), ("long_after", _I64),  # issue #16: engine.py's long_wakes
    ]


STATS = ("events", "instr", "work_ns", "overhead_ns", "spin_ns", "probe_cpu_ns", "switches", "tlb_flushes", "ipis",
         "atomic_sleeps", "probe_overruns", "done", "end", "t0", "rq_area")


class Stats(ctypes.Structure):
    """struct mmr_stats (engine.c)."""

    _fields_ = [(name, _I64) for name in STATS]




def library_path() -> Path:
    """The installed library built from engine.c (EngineUnavailable if there is none)."""
    return locate("_engine", SOURCE)


_lib: ctypes.CDLL | None = None


def load() -> ctypes.CDLL:
    """The C engine's library (EngineUnavailable if it is not installed or does not load)."""
    global _lib
    if _lib is None:
        path = library_path()
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as e:
            raise EngineUnavailable(f"loading {path} failed: {e}") from None
        lib.mmr_engine_new.restype = ctypes.c_void_p
        lib.mmr_engine_new.argtypes = [ctypes.POINTER(Params)]
        lib.mmr_engine_run.restype = ctypes.c_int
        lib.mmr_engine_run.argtypes = [ctypes.c_void_p, _I64]
        lib.mmr_engine_stats.restype = None
        lib.mmr_engine_stats.argtypes = [ctypes.c_void_p, ctypes.POINTER(Stats), _P64, _P64]
        lib.mmr_engine_log_types.restype = ctypes.c_int
        lib.mmr_engine_log_types.argtypes = [ctypes.c_void_p, ctypes.c_int, _P64]
        lib.mmr_engine_log_rows.restype = _I64
        lib.mmr_engine_log_rows.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.mmr_engine_log_column.restype = ctypes.c_void_p
        lib.mmr_engine_log_column.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        lib.mmr_free.restype = None
        lib.mmr_free.argtypes = [ctypes.c_void_p]
        lib.mmr_engine_thread_states.restype = None
        lib.mmr_engine_thread_states.argtypes = [ctypes.c_void_p, _P64]
        lib.mmr_engine_error.restype = ctypes.c_char_p
        lib.mmr_engine_error.argtypes = [ctypes.c_void_p]
        lib.mmr_engine_free.restype = None
        lib.mmr_engine_free.argtypes = [ctypes.c_void_p]
        _lib = lib
    return _lib


def integral_costs(costs: Costs) -> bool:
    """The C engine keeps time in int64 ns: every cost but the two ratios must be a whole number."""
    return all(float(v).is_integer() for k, v in vars(costs).items()
               if k not in ("ticket_handoff_per_waiter", "batch_alloc_fail_p", *SAMPLE_COSTS))


def _ptr(a: np.ndarray, ctype: type) -> ctypes._Pointer:
    return a.ctypes.data_as(ctypes.POINTER(ctype))


class CEngine:
    """engine.Engine's interface (``run()`` and the counters) over the C engine; its logs are kept a
    column at a time and handed over as they are (``keep()``, ``columns()``: replay/sim/logtables.py)."""

    def __init__(self, program: Program, workload: Workload, cpus: int, preempt: str, gather: str, seed: int,
                 costs: Costs, probe: bool, probe_period_ns: int,
                 progress: Callable[[float], None] | None = None):
        if cpus < 1:
            raise ValueError("cpus must be at least 1")
        if not integral_costs(costs):
            raise EngineUnavailable("the C engine needs whole-number costs in ns (use engine='python')")
        self._lib = load()
        self.progress = progress
        self.total_instr = len(program.code) or 1
        threads = workload.threads
        # engine.Engine.__init__'s random draws, in its order: the probe phases, then the run's
        rng = random.Random(seed)
        t0 = min((t.start_ns for t in threads), default=0)
        probe_at = np.array([t0 + rng.randrange(max(1, probe_period_ns)) for _ in range(cpus)] if probe else [0],
                            dtype=np.int64)
        state = rng.getstate()[1]
        c = costs
        handoff = {"mutex": c.mutex_handoff_after_ns, "mutex-classic": c.mutex_handoff_after_ns,
                   "rwsem": c.rwsem_handoff_after_ns, "rwsem-classic": c.rwsem_handoff_after_ns}
        per_waiter = {"spinlock": c.ticket_handoff_per_waiter, "mutex-classic": c.ticket_handoff_per_waiter}
        locks = program.locks
        mm_ids: dict[int, int] = {}  # only equality matters (shootdown targets); mm addresses exceed int64
        self._arrays = arrays = {  # kept alive as long as the engine reads them
            "code": np.ascontiguousarray(program.code, dtype=np.int64),
            "points": np.ascontiguousarray(program.points, dtype=np.uint8),
            "start": np.ascontiguousarray(program.start, dtype=np.int64),
            "floats": np.ascontiguousarray(program.floats, dtype=np.float64) if len(program.floats)
            else np.zeros(1),
            "lock_kind": np.array([LOCK_KINDS[lk.policy] for lk in locks] or [0], dtype=np.int64),
            "lock_handoff": np.array([handoff.get(lk.policy, 0) for lk in locks] or [0], dtype=np.int64),
            "lock_sleeping": np.array([lk.lock_class in SLEEPING_CLASSES for lk in locks] or [0], dtype=np.int64),
            "lock_cls": np.array([LOCK_CLASSES.index(lk.lock_class) for lk in locks] or [0], dtype=np.int64),
            "lock_cost": np.array([c.spin_lock_unlock_ns if lk.policy in ("spinlock", "qspinlock")
                                   else 0 if lk.policy == "as-recorded" else c.cas_ns for lk in locks] or [0],
                                  dtype=np.int64),
            # engine.py: a traced lock's fast path is in the tracer's time (0 for every lock with lock_tracer)
            "lock_lines": np.array([0 if lk.policy == "as-recorded" else c.lock_data_lines for lk in locks] or [0],
                                   dtype=np.int64),
            "lock_per_waiter": np.array([per_waiter.get(lk.policy, 0.0) for lk in locks] or [0.0],
                                        dtype=np.float64),
            "tid": np.array([t.tid for t in threads] or [0], dtype=np.int64),
            "mm": np.array([mm_ids.setdefault(t.mm, len(mm_ids)) for t in threads] or [0], dtype=np.int64),
            "start_ns": np.array([t.start_ns for t in threads] or [0], dtype=np.int64),
            "probe_at": probe_at,
            "mt": np.array(state, dtype=np.uint32),
            "lock_tracer": np.array([c.mmap_lock_tracer_ns if lk.lock_class == "mmap_lock"
                                     and lk.policy != "as-recorded" else 0 for lk in locks] or [0], dtype=np.int64),
            "lock_tail": np.array([c.mmap_lock_release_tail_ns if lk.lock_class == "mmap_lock"
                                   and lk.policy != "as-recorded" else 0 for lk in locks] or [0], dtype=np.int64),
            "lock_dtail": np.array([c.mmap_lock_downgrade_tail_ns if lk.lock_class == "mmap_lock"
                                    and lk.policy != "as-recorded" else 0 for lk in locks] or [0], dtype=np.int64),
            "handoffs": np.array(c.line_transfer_samples_ns or [0], dtype=np.int64),
            "lock_wakes": np.array(c.lock_wake_samples_ns or [0], dtype=np.int64),
            "long_wakes": np.array(c.lock_wake_long_samples_ns or [0], dtype=np.int64),
        }
        arrays["lock_cost"][arrays["lock_tracer"] > 0] = 0
        unknown = {lk.policy for lk in locks} - LOCK_KINDS.keys()
        if unknown:
            raise ValueError(f"unknown lock policy {sorted(unknown)[0]!r}")
        p = Params(
            cpus=cpus, full=preempt == "full", percpu=gather == "percpu", probe=probe, probe_period=probe_period_ns,
            nthreads=len(threads), nlocks=len(locks), ninstr=len(program.code), nclasses=len(LOCK_CLASSES),
            context_switch=c.context_switch_ns, wakeup=c.wakeup_ns, wake_jitter=c.wake_jitter_ns,
            timeslice=c.timeslice_ns, probe_irq=c.probe_irq_ns, probe_run=c.probe_run_ns,
            line=c.line_transfer_ns, line_remote=c.line_transfer_remote_ns, cpus_per_socket=c.cpus_per_socket,
            max_gather_pages=c.max_gather_pages, batch_pages=c.batch_pages,
            percpu_batch_pages=c.percpu_batch_pages, local_batch_pages=c.local_batch_pages,
            invlpg=c.invlpg_ns, full_flush=c.full_flush_ns, flush_ceiling=c.flush_ceiling_pages,
            ipi_handler=c.ipi_handler_ns, shootdown=c.shootdown_ns, mutex_waker=c.mutex_waker_ns,
            lazy_leave=c.lazy_leave_ns, nhandoffs=len(c.line_transfer_samples_ns),
            nlock_wakes=len(c.lock_wake_samples_ns), sleep_window=c.lock_sleep_window_ns,
            block_exact=c.blocks_hold_wakeup,
            nlong_wakes=len(c.lock_wake_long_samples_ns), long_after=c.lock_wake_long_after_ns,
            batch_alloc_fail_p=c.batch_alloc_fail_p,
            r_dispatch=R_DISPATCH, r_preempt=R_PREEMPT, r_block=R_BLOCK, r_sleep_lock=R_SLEEP_LOCK, r_exit=R_EXIT,
            r_probe_end=R_PROBE_END, p_spinlock=P_SPINLOCK, p_spin_wait=P_SPIN_WAIT, p_gather=P_GATHER, p_ptl=P_PTL,
            p_recorded_spin=P_RECORDED_SPIN, q_idle=Q_IDLE, q_preemptible=Q_PREEMPTIBLE, q_kernel=Q_KERNEL,
            q_switch=Q_SWITCH,
        )
        for i, q in enumerate(PROBE_CAUSE_OF):
            p.probe_cause_of[i] = q
        for name in ("code", "start", "lock_kind", "lock_handoff", "lock_sleeping", "lock_cls", "lock_cost",
                     "lock_lines", "tid", "mm", "start_ns", "probe_at", "lock_tracer", "lock_tail", "lock_dtail",
                     "handoffs", "lock_wakes", "long_wakes"):
            setattr(p, name, _ptr(arrays[name], ctypes.c_int64))
        p.points = _ptr(arrays["points"], ctypes.c_uint8)
        p.floats = _ptr(arrays["floats"], ctypes.c_double)
        p.lock_per_waiter = _ptr(arrays["lock_per_waiter"], ctypes.c_double)
        p.mt = _ptr(arrays["mt"], ctypes.c_uint32)
        self._params = p
        # a program mapped from batch._mapped's files: its pages are dropped from the resident set every
        # DROP_EVERY events (read again from the page cache where a thread is), instead of the whole
        # program staying resident next to the logs
        self._mapped = [m for m in (getattr(program.code, "_mmap", None), getattr(program.points, "_mmap", None))
                        if m is not None and hasattr(m, "madvise") and hasattr(mmap, "MADV_DONTNEED")]
        self._eng = self._lib.mmr_engine_new(ctypes.byref(p))
        if not self._eng:
            raise MemoryError("the C engine could not allocate its state")
        self.wait_area = [0] * len(LOCK_CLASSES)
        self.contended = [False] * len(LOCK_CLASSES)
        self._kept: dict[str, tuple[str, ...]] | None = None
        self._taken = False
        self.keep()  # every column in its LOG_TYPES type (engine.c's default is int64), until told otherwise
        self._stats()

    def __del__(self) -> None:
        self.free()

    def free(self) -> None:
        """Free the C engine's state and logs (logs() and run() no more; the counters stay)."""
        eng = getattr(self, "_eng", None)
        if eng:
            self._lib.mmr_engine_free(eng)
            self._eng = None

    def _drop(self) -> None:
        """Drop the mapped program's pages from the resident set (its file is unchanged: read again)."""
        for m in self._mapped:
            m.madvise(mmap.MADV_DONTNEED)

    def _stats(self) -> None:
        s = Stats()
        area = np.zeros(len(LOCK_CLASSES), dtype=np.int64)
        cont = np.zeros(len(LOCK_CLASSES), dtype=np.int64)
        self._lib.mmr_engine_stats(self._eng, ctypes.byref(s), _ptr(area, ctypes.c_int64),
                                   _ptr(cont, ctypes.c_int64))
        for name in STATS:
            setattr(self, name, getattr(s, name))
        self.wait_area = area.tolist()
        self.contended = [bool(x) for x in cont]

    def run(self) -> None:
        """Run to the end; the same errors as engine.Engine.run (MmreplayError on a deadlock)."""
        if not self._eng:
            raise RuntimeError("the C engine was freed")
        every = REPORT_EVERY if self.progress is not None else DROP_EVERY if self._mapped else 0
        drops = 0
        while True:
            rc = self._lib.mmr_engine_run(self._eng, every)
            if rc == 1:
                if self.progress is not None:
                    self._stats()
                    self.progress(min(1.0, self.instr / self.total_instr))
                drops += every
                if self._mapped and drops >= DROP_EVERY:
                    self._drop()
                    drops = 0
                continue
            if rc == -12:
                raise MemoryError("the C engine ran out of memory")
            if rc < 0:
                raise AssertionError(f"C engine: {self._lib.mmr_engine_error(self._eng).decode()}")
            break
        self._stats()
        n = int(self._params.nthreads)
        if self.done != n:
            states = np.zeros(max(1, n), dtype=np.int64)
            self._lib.mmr_engine_thread_states(self._eng, _ptr(states, ctypes.c_int64))
            tids = self._arrays["tid"][:n][states[:n] != DONE].tolist()
            raise MmreplayError(
                f"the simulation deadlocked with {len(tids)} threads unfinished (e.g. tids {tids[:5]}): "
                "a thread slept holding a spinlock while spinners took every CPU; use more CPUs or another policy"
            )

    def keep(self, wanted: dict[str, tuple[str, ...]] | None = None) -> None:
        """Log the columns ``wanted`` (by log, as named in engine.LOG_COLUMNS; default: all), each in its
        logtables.LOG_TYPES type, and no other: before run()."""
        if not self._eng:
            raise RuntimeError("the C engine was freed")
        for k, (name, cols) in enumerate(LOG_COLUMNS.items()):
            types = np.array([_CTYPES[t] if wanted is None or c in wanted.get(name, ()) else 0
                              for c, t in zip(cols, LOG_TYPES[name], strict=True)], dtype=np.int64)
            if self._lib.mmr_engine_log_types(self._eng, k, _ptr(types, ctypes.c_int64)):
                raise RuntimeError("the C engine's log columns are set before it runs")
        self._kept = wanted

    def columns(self) -> dict[str, Log]:
        """The logs' kept columns (keep()), handed over: numpy arrays over the memory the engine wrote
        them in (no copy), each freed when its last reference goes, whatever becomes of the engine.
        Once: the engine keeps none of them afterwards."""
        if not self._eng:
            raise RuntimeError("the C engine was freed")
        if self._taken:
            raise RuntimeError("the C engine's logs were handed over already")
        self._taken = True
        out = {}
        for k, (name, cols) in enumerate(LOG_COLUMNS.items()):
            n = self._lib.mmr_engine_log_rows(self._eng, k)
            if n < 0:
                raise MemoryError("the C engine ran out of memory")
            kept = {}
            for j, (col, t) in enumerate(zip(cols, LOG_TYPES[name], strict=True)):
                if self._kept is not None and col not in self._kept.get(name, ()):
                    continue
                dtype = np.dtype(DTYPES[t])
                ptr = self._lib.mmr_engine_log_column(self._eng, k, j)
                if not ptr:
                    kept[col] = np.zeros(0, dtype)
                    continue
                owner = _Block(self._lib, ptr)
                kept[col] = np.frombuffer(pa.foreign_buffer(ptr, n * dtype.itemsize, base=owner), dtype=dtype)
            out[name] = Log(int(n), kept)
        return out


#: logtables.LOG_TYPES to engine.c's column types (C_I64 ... C_BIT0)
_CTYPES = {"i8": 1, "i4": 2, "i2": 3, "bool": 4, "bit0": 5}


class _Block:
    """A block of memory the C engine handed over (a log column): freed with the last reference."""

    __slots__ = ("free", "ptr")

    def __init__(self, lib: ctypes.CDLL, ptr: int):
        self.free = lib.mmr_free
        self.ptr = ptr

    def __del__(self) -> None:
        self.free(self.ptr)


def available() -> bool:
    """Whether the C engine is installed and loads here."""
    try:
        load()
    except EngineUnavailable:
        return False
    return True
