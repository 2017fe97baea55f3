"""Run a Workload under several (policy set, seed) pairs, on one process or many.

Each run is independent and deterministic (simulate() with the same config
gives the same result), so the pairs can be spread over a process pool
(``jobs``) and the results are identical to a serial run. The flattened
Program depends on the policy set but not on the seed (unless service-time
noise is on), so it is built once per set and shared by that set's seeds: in
one process as an object; across processes it is built by the parent before
the workers start and written as arrays into a private temporary
directory, which every run memory-maps (one page-cache copy, instead of each
worker flattening again, which would also copy every workload page it
touches, or unpickling a copy). Policy sets travel to the
workers by their spec string (``PolicySet.name`` resolves back to the same
set); the workload is inherited by forked workers (Linux) or sent once per
spawned worker elsewhere, and workers that only run a shared Program read
nothing of it but the thread list. With ``release`` (the CLI's), every set is
flattened at once a thread at a time and each thread's ops are freed once
walked, so neither the parent past reconstruction nor any worker keeps the
op objects (docs/SCALING.md, "replay --jobs N").
"""

from __future__ import annotations

import ctypes
import gc
import multiprocessing
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import pyarrow as pa

from replay.results import Run
from replay.sim.costs import Costs
from replay.sim.ops import Workload
from replay.sim.program import WIDTH, Program


@dataclass(frozen=True)
class RunSpec:
    """One replay to do: a policy set (by its spec string) and a seed."""

    policy_set: str
    seed: int


@dataclass(frozen=True)
class Settings:
    """What every run of a batch shares."""

    cpus: int
    preempt: str
    mode: str
    costs: Costs
    probe: bool = True
    keep_tables: bool = True  # False: return metrics only (no RESULTS directory to write)
    perturb: float = 0.0  # coefficient of variation of the seeded service-time noise (SimConfig.perturb)
    engine: str = "auto"  # SimConfig.engine: auto | c | python (identical results)


def config_of(spec: RunSpec, settings: Settings):
    """The SimConfig of one run."""
    from replay.policies.sets import resolve
    from replay.sim import SimConfig

    return SimConfig(cpus=settings.cpus, policy=resolve(spec.policy_set), preempt=settings.preempt,
                     seed=spec.seed, mode=settings.mode, costs=settings.costs, probe=settings.probe,
                     perturb=settings.perturb, engine=settings.engine)


def run_one(workload: Workload, spec: RunSpec, settings: Settings,
            progress: Callable[[float], None] | None = None, program: Program | None = None,
            spill: str | None = None) -> Run:
    """Simulate one (set, seed) pair and return its metrics and event tables (``program``: its
    flattened workload, if already built). ``spill``: a directory to create, where each table is written
    as an Arrow file as soon as it is made and let go (_unspill maps them back), instead of returned."""
    from replay.sim import simulate

    sink = None
    if spill is not None and settings.keep_tables:
        Path(spill).mkdir()

        def sink(name: str, table: pa.Table) -> None:
            with pa.OSFile(str(Path(spill, f"{name}.arrow")), "wb") as f, pa.ipc.new_file(f, table.schema) as w:
                w.write_table(table)

    # without tables (no -o) the engine keeps only the log columns the metrics read
    result = simulate(workload, config_of(spec, settings), progress=progress, program=program,
                      tables=settings.keep_tables, sink=sink)
    metrics = dict(result.metrics)
    complete_metrics(result.tables, metrics)
    return Run(spec.policy_set, spec.seed, metrics, dict(result.tables))


def complete_metrics(tables: dict[str, pa.Table], metrics: dict[str, float]) -> None:
    """Add the p50/p99/max figures the report prints when the simulator did not compute them."""
    from replay.sim.simulate import column_codes

    def fill(table: str, group: str, column: str, prefix: str) -> None:
        t = tables.get(table)
        if t is None or t.num_rows == 0:
            return
        if any(k.startswith(f"{prefix}_p50_ns:") for k in metrics):
            return  # simulate() computed them for every group (not even the groups again: millions of strings)
        codes, names = column_codes(t.column(group))
        values = np.asarray(t.column(column).to_numpy(), dtype=float)
        for code in sorted(np.unique(codes).tolist(), key=names.__getitem__):
            g = names[code]
            v = values[codes == code]
            metrics.setdefault(f"{prefix}_p50_ns:{g}", float(np.percentile(v, 50)))
            metrics.setdefault(f"{prefix}_p99_ns:{g}", float(np.percentile(v, 99)))
            metrics.setdefault(f"{prefix}_max_ns:{g}", float(v.max()))

    fill("sim_lock_holds", "lock_class", "wait", "wait")
    fill("sim_lock_holds", "lock_class", "dur", "hold")
    fill("sim_ops", "kind", "dur", "op_latency")
    # the longest preempt-off section per cause (spinlock, gather, ...): what the longest one is made of
    poff = tables.get("sim_preempt_off")
    if poff is not None and poff.num_rows and not any(k.startswith("preempt_off_max_ns:") for k in metrics):
        codes, names = column_codes(poff.column("cause"))
        durs = np.asarray(poff.column("dur").to_numpy(), dtype=float)
        for code in sorted(np.unique(codes).tolist(), key=names.__getitem__):
            metrics.setdefault(f"preempt_off_max_ns:{names[code]}", float(durs[codes == code].max()))


# -- process pool -------------------------------------------------------------------------------

PROGRAM_ARRAYS = ("code", "points", "start", "floats")

_WORKER: tuple[Workload, Settings] | None = None


def _init(workload: Workload | None, settings: Settings | None) -> None:
    global _WORKER
    _WORKER = (workload, settings) if workload is not None and settings is not None else None


def _work(spec: RunSpec, spill: str | None = None) -> Run:
    """A run that flattens its own program (the only run of its program)."""
    assert _WORKER is not None
    return run_one(_WORKER[0], spec, _WORKER[1], spill=spill)


def _unspill(run: Run, spill: str | None) -> Run:
    """The tables run_one wrote into ``spill``, memory-mapped (no copy: pages read when written out, and
    the files may be removed while mapped)."""
    if spill is not None and Path(spill).is_dir():
        run.tables = {path.stem: pa.ipc.open_file(pa.memory_map(str(path))).read_all()
                      for path in sorted(Path(spill).glob("*.arrow"))}
    return run


def _save(program: Program, directory: Path) -> tuple[list, list[str]]:
    """Write ``program``'s arrays into ``directory`` (_mapped's files); its lock and kind tables."""
    directory.mkdir()
    for name in _RAW:
        getattr(program, name).tofile(directory / f"{name}.bin")
    for name in PROGRAM_ARRAYS:
        if name not in _RAW:
            np.save(directory / f"{name}.npy", getattr(program, name), allow_pickle=False)
    return program.locks, program.kinds


#: the arrays written raw (as they are flattened, a thread at a time: flatten_streamed), by element type and row
_RAW = {"code": (np.int64, (WIDTH,)), "points": (np.uint8, ())}


def _mapped(directory: str, locks: list, kinds: list[str]) -> Program:
    """The Program _save or _flatten_shared wrote, its arrays mapped copy-on-write (never written back)."""
    arrays = {}
    for name in PROGRAM_ARRAYS:
        if name in _RAW:
            dtype, row = _RAW[name]
            path = Path(directory, f"{name}.bin")
            n = path.stat().st_size // (np.dtype(dtype).itemsize * int(np.prod(row)))
            arrays[name] = np.memmap(path, dtype=dtype, mode="c", shape=(n, *row)) if n else np.empty((0, *row), dtype)
        else:
            arrays[name] = np.load(Path(directory, f"{name}.npy"), mmap_mode="c", allow_pickle=False)
    return Program(locks=locks, kinds=kinds, **arrays)


def _flatten_shared(workload: Workload, configs: list, directories: list[Path], release: bool,
                    jobs: int = 1) -> list[tuple]:
    """Flatten ``workload`` for every config into its directory (_mapped's files), thread by thread
    (program.flatten_streamed); ``release``: each thread's ops are emptied once every config has walked
    it. The programs are those program_for gives, byte for byte. Returns each one's (locks, kinds).

    ``jobs`` above 1 (Linux): the configs are shared out between this process and up to ``jobs - 1``
    forked ones, which flatten theirs at the same time (each config's walk is its own: its own
    Flattener, lock and kind tables and noise; the same bytes). The forked ones read the ops and the
    spooled instructions the parent holds (inherited, shared pages); this process releases its copy."""
    global _FLATTEN
    from replay.sim.cbuild import EngineUnavailable, warn_fallback
    from replay.sim.program import FlattenSpec

    compiled = any(c.engine != "python" for c in configs)
    if compiled:
        try:
            from replay.sim.cflatten import load

            load()
        except EngineUnavailable as e:
            warn_fallback(str(e), "flattening in Python")
            compiled = False
    specs = [FlattenSpec(c.policy.lock_policy, c.policy.gather, c.preempt, c.mode == "open", c.costs, c.perturb,
                         c.seed, compiled and c.engine != "python") for c in configs]
    for d in directories:
        d.mkdir()
    parts = min(jobs, len(specs)) if sys.platform == "linux" else 1
    shares = [list(range(k, len(specs), parts)) for k in range(parts)]  # config k to share k % parts
    rest: dict[int, tuple] = {}
    pool = (ProcessPoolExecutor(max_workers=parts - 1, mp_context=multiprocessing.get_context("fork"))
            if parts > 1 else None)
    _FLATTEN = (workload, specs, directories)
    try:
        # the others forked at submit, before this process walks (and releases) its own share
        futures = [pool.submit(_flatten_part, share) for share in shares[1:]] if pool else []
        rest.update(zip(shares[0], _flatten_part(shares[0], release), strict=True))
        for share, fut in zip(shares[1:], futures, strict=True):
            rest.update(zip(share, fut.result(), strict=True))
    finally:
        _FLATTEN = None
        if pool:
            pool.shutdown(cancel_futures=True)
    out = []
    for k, d in enumerate(directories):
        start, floats, locks, kinds = rest[k]
        np.save(d / "start.npy", start, allow_pickle=False)
        np.save(d / "floats.npy", floats, allow_pickle=False)
        out.append((locks, kinds))
    return out


#: (workload, flatten specs, directories) of the _flatten_shared under way, for the processes it forks
_FLATTEN: tuple | None = None


def _flatten_part(share: list[int], release: bool = False) -> list[tuple]:
    """Flatten the configs ``share`` of the _flatten_shared under way into their directories' raw files;
    their (start, floats, locks, kinds)."""
    from replay.sim.program import flatten_streamed

    assert _FLATTEN is not None
    workload, specs, directories = _FLATTEN
    files = []
    try:
        for k in share:
            files.append({name: open(directories[k] / f"{name}.bin", "xb") for name in _RAW})  # noqa: SIM115

        def sink(k: int, code: np.ndarray, points: np.ndarray) -> None:
            files[k]["code"].write(memoryview(np.ascontiguousarray(code, dtype=np.int64)).cast("B"))
            files[k]["points"].write(memoryview(np.ascontiguousarray(points, dtype=np.uint8)).cast("B"))

        return flatten_streamed(workload, [specs[k] for k in share], sink, release=release)
    finally:
        for f in files:
            for fh in f.values():
                fh.close()


def _work_shared(spec: RunSpec, directory: str, locks: list, kinds: list[str], spill: str | None = None) -> Run:
    """A run of a program another task flattened."""
    assert _WORKER is not None
    return run_one(_WORKER[0], spec, _WORKER[1], program=_mapped(directory, locks, kinds), spill=spill)


def groups(specs: Sequence[RunSpec], settings: Settings) -> list[list[int]]:
    """Indexes of ``specs`` grouped by the Program they run (first appearance order)."""
    from replay.sim.simulate import program_key

    by_key: dict[tuple, list[int]] = {}
    for i, spec in enumerate(specs):
        by_key.setdefault(program_key(config_of(spec, settings)), []).append(i)
    return list(by_key.values())


def release_ops(workload: Workload) -> None:
    """Empty every thread's op list and give the freed memory back to the system.

    Once each policy set's Program is flattened, a run reads nothing of the workload but the thread
    list (tid, mm, start); the op objects are most of the replay's memory (about 0.5 KiB per trace row).
    """
    for t in workload.threads:
        t.ops = []
    gc.collect()
    try:  # glibc keeps freed heap pages otherwise; a forked worker's RSS starts at the parent's
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def run_all(workload: Workload, specs: Sequence[RunSpec], settings: Settings, *, jobs: int = 1,
            progress: Progress | None = None, release: bool = False) -> list[Run]:
    """Every spec's Run, in the order of ``specs`` whatever ``jobs`` is.

    ``release``: the caller needs the workload's ops no more (only its thread list): every set is
    flattened up front, a thread at a time, into files the runs map, and the ops are emptied
    (release_ops) before the first run or the workers' fork. A set of one run (one seed) too: flattened
    in memory beside the op objects, one seed's replay of a 10-s recording (7.5 M rows) peaked at 2.4 GB
    where two seeds' took 0.56 GB. Not when seeds have programs of their own (--perturb): that would be a
    program file per run at once, each as large as the trace's instructions; each run flattens its own.
    """
    from replay.sim.simulate import program_for

    all_groups = groups(specs, settings)
    release = release and len(all_groups) <= len({s.policy_set for s in specs})
    if (jobs <= 1 or len(specs) <= 1) and not release:
        out: dict[int, Run] = {}
        for group in all_groups:
            program = program_for(workload, config_of(specs[group[0]], settings)) if len(group) > 1 else None
            for i in group:
                done = len(out)
                cb = (lambda f, done=done: progress.update(done, f)) if progress else None
                out[i] = run_one(workload, specs[i], settings, cb, program=program)
                if progress:
                    progress.update(len(out), 0.0)
            del program
        return [out[i] for i in range(len(specs))]
    parallel = jobs > 1 and len(specs) > 1
    # On Linux, fork: the workers inherit the workload instead of unpickling it (seconds for a large
    # trace). They never touch polars, whose thread pool is the usual reason not to fork. Elsewhere,
    # spawn and send the workload once per worker.
    if parallel and sys.platform == "linux":
        ctx = multiprocessing.get_context("fork")
        _init(workload, settings)
        init: tuple = (None, ())
    elif parallel:
        ctx = multiprocessing.get_context("spawn")
        init = (_init, (workload, settings))
    results: dict[int, Run] = {}
    shared = Path(tempfile.mkdtemp(prefix="mmreplay-programs-"))  # 0700, ours: nobody else can swap a program
    try:
        # Flatten the shared programs here, before the workers fork: flattening touches every op object
        # (reference counts), and done in a forked worker or after the fork it would copy the whole
        # workload's pages into that process.
        tasks: list[tuple[int, tuple]] = []
        if release:
            # every set at once, a thread at a time, written as it goes; each thread's ops freed once
            # walked: the op objects leave while the programs are written (release_ops for the rest)
            dirs = [shared / str(g) for g in range(len(all_groups))]
            tables = _flatten_shared(workload, [config_of(specs[g[0]], settings) for g in all_groups], dirs, True,
                                     jobs if parallel else 1)
            release_ops(workload)
            for group, d, (locks, kinds) in zip(all_groups, dirs, tables, strict=True):
                tasks += [(i, (_work_shared, specs[i], str(d), locks, kinds)) for i in group]
        else:
            for g, group in enumerate(all_groups):
                if len(group) == 1:
                    tasks.append((group[0], (_work, specs[group[0]])))
                    continue
                program = program_for(workload, config_of(specs[group[0]], settings))
                locks, kinds = _save(program, shared / str(g))
                del program
                tasks += [(i, (_work_shared, specs[i], str(shared / str(g)), locks, kinds)) for i in group]
        if not parallel:  # one process: each set's runs map its program in turn
            for i, (_, spec, d, locks, kinds) in sorted(tasks):
                done = len(results)
                cb = (lambda f, done=done: progress.update(done, f)) if progress else None
                results[i] = run_one(workload, spec, settings, cb, program=_mapped(d, locks, kinds))
                if progress:
                    progress.update(len(results), 0.0)
            return [results[i] for i in range(len(specs))]
        if sys.platform == "linux":
            # The workload's objects go to the permanent generation: the workers' garbage collections
            # then leave their headers alone, and the pages stay shared instead of being copied.
            gc.freeze()
        # a run's tables come back as Arrow files, mapped here, not pickled: a copy less in the worker and
        # none in the parent, which holds every run's tables until they are written
        spills = {i: str(shared / f"run{i}") if settings.keep_tables else None for i, _ in tasks}
        with ProcessPoolExecutor(max_workers=min(jobs, len(specs)), mp_context=ctx, initializer=init[0],
                                 initargs=init[1]) as pool:
            futures = {pool.submit(*task, spill=spills[i]): i for i, task in sorted(tasks)}
            for fut in as_completed(futures):
                i = futures[fut]
                results[i] = _unspill(fut.result(), spills[i])
                if progress:
                    progress.update(len(results), 0.0)
    finally:
        gc.unfreeze()
        _init(None, None)
        shutil.rmtree(shared, ignore_errors=True)
    return [results[i] for i in range(len(specs))]


class Progress:
    """Progress of a batch on stderr: silent for the first second; then on a terminal one line
    rewritten at most twice a second, elsewhere a line per finished run or every 10 s."""

    def __init__(self, total: int, stream: TextIO | None = None, delay_s: float = 1.0):
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.t0 = time.monotonic()
        self.delay_s = delay_s
        self.last = 0.0
        self.last_done = 0
        self.shown = False

    def update(self, done: int, fraction: float) -> None:
        now = time.monotonic()
        if now - self.t0 < self.delay_s:
            return
        if self.tty:
            if now - self.last < 0.5 and done < self.total:
                return
        elif done == self.last_done and now - self.last < 10.0:
            return
        self.last = now
        self.last_done = done
        pct = 100.0 * (done + fraction) / max(self.total, 1)
        line = f"mmreplay replay: {done}/{self.total} runs done, {pct:5.1f}% ({now - self.t0:.0f} s)"
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown and self.tty:
            self.stream.write("\n")
            self.stream.flush()
