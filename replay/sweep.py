"""A sweep: every cell of traces x CPU counts x task scales x policy sets x seeds, one results table.

A cell is one replay (simulate() of one reconstructed workload under one
policy set and seed); it is deterministic, so where it runs does not change
its row. Cells run on local processes or on a Dask distributed cluster; both
call run_cell, which keeps the last reconstructed workload and its flattened
programs per worker (cells are issued in grid order, so a worker's consecutive
cells mostly share them).

Failure is per cell. A cell whose replay fails (a trace that does not open or
lacks a table, a deadlocked simulation) gives a row with status ``failed`` and
the one-line error; it is not retried, since it would fail again. A cell whose
worker dies (OOM kill, crash) is retried ``retries`` times, then reported
failed; the local executor runs the cells that were in flight when a worker
died one at a time, so that only the cell that kills its worker is blamed.
Finished cells are kept whatever happens to the others.
"""

from __future__ import annotations

import math
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa

from replay.errors import MmreplayError, UsageError

#: the columns that say which cell a row is, then how it went; metrics follow, one float64 column each
CELL_COLUMNS = ("trace", "cpus", "scale_tasks", "policy_set", "seed")
STATUS_COLUMNS = ("status", "error", "attempts", "threads", "preempt", "wall_s")
#: what may differ between two runs of the same sweep (where and how long a cell ran)
VOLATILE_COLUMNS = ("attempts", "wall_s")


@dataclass(frozen=True)
class Cell:
    """One replay of the grid. ``cpus`` None: the recorded host's."""

    trace: str
    cpus: int | None
    scale_tasks: float
    policy_set: str
    seed: int


@dataclass(frozen=True)
class SweepSettings:
    """What every cell shares."""

    sets: tuple[str, ...]  # all the sweep's policy sets: a trace must have the data to compare them
    preempt: str | None = None  # None: each trace's recorded model
    mode: str = "closed"
    perturb: float = 0.0
    engine: str = "auto"
    costs_file: str | None = None


def grid(traces: Sequence[str], cpus: Sequence[int | None], scales: Sequence[float], sets: Sequence[str],
         seeds: int) -> list[Cell]:
    """Every cell, in the order that lets a worker reuse its workload and programs longest."""
    return [Cell(t, c, s, p, seed) for t in traces for c in cpus for s in scales for p in sets
            for seed in range(seeds)]


# -- one cell ------------------------------------------------------------------------------------


class _Cache(threading.local):
    """Per worker thread: the last workload (key, workload, trace facts) and its programs by program_key."""

    key: tuple | None = None
    error: MmreplayError | None = None
    workload: Any = None
    preempt: str = ""
    programs: dict | None = None


_cache = _Cache()


def _workload(cell: Cell, settings: SweepSettings) -> tuple[Any, str]:
    """The cell's reconstructed, scaled workload and preemption model (the last one kept per worker)."""
    key = (cell.trace, cell.cpus, cell.scale_tasks, settings.preempt, settings.sets)
    if _cache.key == key and _cache.error is not None:
        raise _cache.error.with_traceback(None)  # the same failure for every cell of this grid point
    if _cache.key != key:
        _cache.key = _cache.workload = _cache.error = None
        _cache.programs = {}
        try:
            _cache.workload, _cache.preempt = _reconstruct(cell, settings)
        except MmreplayError as e:
            _cache.key, _cache.error = key, e
            raise
        _cache.key = key
    return _cache.workload, _cache.preempt


def _reconstruct(cell: Cell, settings: SweepSettings) -> tuple[Any, str]:
    """Open the trace, reconstruct and scale its work, check it can be compared; its preemption model."""
    from replay.cli.replay import check_tables, preempt_default
    from replay.policies.sets import resolve
    from replay.trace.reader import Trace
    from replay.workload import reconstruct, scale_tasks

    trace = Trace.open(cell.trace)
    if trace.manifest.kind != "trace":
        raise UsageError(f"{trace.path}: holds replay results, not a trace")
    # scaling up copies the op objects; otherwise the common segments stay policy-neutral instructions
    workload = scale_tasks(reconstruct(trace, cpus=cell.cpus, emit=cell.scale_tasks <= 1), cell.scale_tasks)
    if not workload.threads:
        raise UsageError(f"{trace.path}: no task in the trace did any mm work to replay")
    check_tables(trace, [resolve(s) for s in settings.sets], workload)
    preempt = settings.preempt or preempt_default(trace.manifest.host.preempt_model)[0]
    return workload, preempt


def run_cell(cell: Cell, settings: SweepSettings) -> dict[str, Any]:
    """The cell's row: its coordinates, status, and metrics (a failed replay is a row, not an exception)."""
    t0 = time.monotonic()
    row: dict[str, Any] = {**asdict(cell), "status": "ok", "error": None, "attempts": 1, "threads": None,
                           "preempt": None}
    try:
        from replay.batch import RunSpec, Settings, complete_metrics, config_of
        from replay.sim.costs import Costs
        from replay.sim.simulate import program_for, program_key, simulate

        workload, preempt = _workload(cell, settings)
        costs = Costs.load(settings.costs_file) if settings.costs_file else Costs()
        run = Settings(cpus=workload.cpus, preempt=preempt, mode=settings.mode, costs=costs, keep_tables=False,
                       perturb=settings.perturb, engine=settings.engine)
        config = config_of(RunSpec(cell.policy_set, cell.seed), run)
        pkey = program_key(config)
        assert _cache.programs is not None
        program = _cache.programs.get(pkey)
        if program is None:
            program = program_for(workload, config)
            if settings.perturb == 0:  # seed-independent: the next seeds of this set reuse it
                _cache.programs = {pkey: program}
        result = simulate(workload, config, program=program, tables=False)  # the metrics alone
        metrics = dict(result.metrics)
        complete_metrics(result.tables, metrics)
        row.update(threads=len(workload.threads), preempt=preempt, cpus_run=workload.cpus, metrics=metrics)
    except MmreplayError as e:
        row.update(status="failed", error=str(e))
    row["wall_s"] = time.monotonic() - t0
    return row


def failed_row(cell: Cell, error: str, attempts: int) -> dict[str, Any]:
    """The row of a cell that did not finish (its worker died)."""
    return {**asdict(cell), "status": "failed", "error": error, "attempts": attempts, "threads": None,
            "preempt": None, "wall_s": None}


# -- executors -----------------------------------------------------------------------------------

#: how long to try to reach a Dask scheduler before saying it cannot be reached
CONNECT_TIMEOUT_S = 10
OnRow = Callable[[int, dict[str, Any]], None]

_started: Any = None  # the local workers' queue of started cell indexes


def _init_local(started: Any) -> None:
    global _started
    _started = started


CellFn = Callable[[Cell, SweepSettings], dict[str, Any]]


def _local_task(index: int, cell: Cell, settings: SweepSettings, fn: CellFn) -> dict[str, Any]:
    _started.put(index)
    return fn(cell, settings)


def run_local(cells: Sequence[Cell], settings: SweepSettings, jobs: int, retries: int, on_row: OnRow,
              fn: CellFn = run_cell) -> None:
    """Run ``cells`` on ``jobs`` local processes, calling ``on_row(index, row)`` as each finishes.

    Workers are spawned, not forked: they read traces with polars, whose thread pool does not survive
    a fork of a process that used it. ``fn`` (run_cell) must be importable by name.
    """
    ctx = multiprocessing.get_context("spawn")
    todo = set(range(len(cells)))
    isolate: list[int] = []  # in flight when a worker died beside others: rerun one at a time
    deaths: dict[int, int] = {}
    while todo:
        batch, workers = ([isolate[0]], 1) if isolate else (sorted(todo), jobs)
        started = ctx.SimpleQueue()
        futures: dict[Future, int] = {}

        def collect(fut: Future, futures: dict[Future, int] = futures) -> None:
            """Record a finished cell (a result, or an error outside the replay); not a broken pool."""
            i = futures[fut]
            if i not in todo or not fut.done() or fut.cancelled():
                return
            err = fut.exception()
            if isinstance(err, BrokenProcessPool):
                return
            row = fut.result() if err is None else failed_row(cells[i], f"{type(err).__name__}: {err}", 0)
            row["attempts"] = deaths.get(i, 0) + 1
            todo.discard(i)
            if i in isolate:
                isolate.remove(i)
            on_row(i, row)

        try:
            with ProcessPoolExecutor(max_workers=max(1, min(workers, len(batch))), mp_context=ctx,
                                     initializer=_init_local, initargs=(started,)) as pool:
                futures.update({pool.submit(_local_task, i, cells[i], settings, fn): i for i in batch})
                pending = set(futures)
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        collect(fut)
                    if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                        raise BrokenProcessPool("a worker died")
        except BrokenProcessPool:
            for fut in futures:  # results that came back before the pool broke are kept
                collect(fut)
            in_flight = set()
            while not started.empty():
                in_flight.add(started.get())
            in_flight &= todo
            if not in_flight:
                raise MmreplayError("the sweep's worker processes die before running any cell "
                                    "(out of memory, or mmreplay cannot be imported in them)") from None
            if workers == 1 or len(in_flight) == 1:  # certain: this cell's worker died
                for i in in_flight:
                    deaths[i] = deaths.get(i, 0) + 1
                    if i in isolate:
                        isolate.remove(i)
                    if deaths[i] > retries:
                        todo.discard(i)
                        on_row(i, failed_row(cells[i], "the worker process died running this cell (killed, "
                                             "e.g. by the OOM killer, or crashed)", deaths[i]))
                    else:
                        isolate.append(i)
            else:
                isolate.extend(sorted(in_flight - set(isolate)))
        finally:
            started.close()


def run_dask(cells: Sequence[Cell], settings: SweepSettings, scheduler: Any, retries: int, on_row: OnRow) -> None:
    """Run ``cells`` on a Dask distributed cluster (an address, or a Client/LocalCluster object).

    Workers need mmreplay installed and the traces at the same paths. A cell whose worker dies is
    resubmitted by Dask (``distributed.scheduler.allowed-failures``) and then reported as failed.
    """
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise UsageError("--scheduler needs Dask distributed: pip install 'mmreplay[dask]'") from None
    own = not isinstance(scheduler, Client)
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT_S) if own else scheduler
    except (OSError, TimeoutError, ValueError) as e:
        raise UsageError(f"cannot reach the Dask scheduler at {scheduler!r}: {e}") from None
    try:
        futures = {client.submit(run_cell, cell, settings, key=f"mmreplay-cell-{i}-{_token(cell, settings)}",
                                 retries=retries, pure=False): i for i, cell in enumerate(cells)}
        for fut in as_completed(futures):
            i = futures[fut]
            try:
                row = fut.result()
            except Exception as e:  # KilledWorker, or an error outside the replay (retried already)
                row = failed_row(cells[i], f"{type(e).__name__}: {e}".splitlines()[0], retries + 1)
            on_row(i, row)
            fut.release()
    finally:
        if own:
            client.close()


def _token(cell: Cell, settings: SweepSettings) -> str:
    import hashlib

    return hashlib.sha256(repr((cell, settings, time.time_ns())).encode()).hexdigest()[:12]


# -- the results table ---------------------------------------------------------------------------


def results_table(rows: Iterable[dict[str, Any]]) -> pa.Table:
    """One row per cell in grid order: coordinates, status, then every metric any cell has (sorted)."""
    rows = list(rows)
    metrics = sorted({k for r in rows for k in r.get("metrics", {})})
    cols: dict[str, pa.Array] = {
        "trace": pa.array([r["trace"] for r in rows], pa.string()),
        "cpus": pa.array([r.get("cpus_run", r["cpus"]) for r in rows], pa.int32()),
        "scale_tasks": pa.array([r["scale_tasks"] for r in rows], pa.float64()),
        "policy_set": pa.array([r["policy_set"] for r in rows], pa.string()),
        "seed": pa.array([r["seed"] for r in rows], pa.int32()),
        "status": pa.array([r["status"] for r in rows], pa.string()),
        "error": pa.array([r["error"] for r in rows], pa.string()),
        "attempts": pa.array([r["attempts"] for r in rows], pa.int32()),
        "threads": pa.array([r["threads"] for r in rows], pa.int64()),
        "preempt": pa.array([r["preempt"] for r in rows], pa.string()),
        "wall_s": pa.array([r["wall_s"] for r in rows], pa.float64()),
    }
    for m in metrics:
        cols[m] = pa.array([r.get("metrics", {}).get(m) for r in rows], pa.float64())
    return pa.table(cols)


def finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)
