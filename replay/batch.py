"""Run a Workload under several (policy set, seed) pairs, on one process or many.

Each run is independent and deterministic (simulate() with the same config
gives the same result), so the pairs can be spread over a process pool
(``jobs``) and the results are identical to a serial run. Policy sets travel
to the workers by their spec string (``PolicySet.name`` resolves back to the
same set); the workload is inherited by forked workers (Linux) or sent once
per spawned worker elsewhere.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import TextIO

import numpy as np
import pyarrow as pa

from replay.results import Run
from replay.sim.costs import Costs
from replay.sim.ops import Workload


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


def run_one(workload: Workload, spec: RunSpec, settings: Settings,
            progress: Callable[[float], None] | None = None) -> Run:
    """Simulate one (set, seed) pair and return its metrics and event tables."""
    from replay.policies.sets import resolve
    from replay.sim import SimConfig, simulate

    config = SimConfig(cpus=settings.cpus, policy=resolve(spec.policy_set), preempt=settings.preempt,
                       seed=spec.seed, mode=settings.mode, costs=settings.costs, probe=settings.probe,
                       perturb=settings.perturb, engine=settings.engine)
    result = simulate(workload, config, progress=progress)
    metrics = dict(result.metrics)
    complete_metrics(result.tables, metrics)
    return Run(spec.policy_set, spec.seed, metrics, dict(result.tables) if settings.keep_tables else {})


def complete_metrics(tables: dict[str, pa.Table], metrics: dict[str, float]) -> None:
    """Add the p50/p99/max figures the report prints when the simulator did not compute them."""
    from replay.sim.simulate import column_codes

    def fill(table: str, group: str, column: str, prefix: str) -> None:
        t = tables.get(table)
        if t is None or t.num_rows == 0:
            return
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
    if poff is not None and poff.num_rows:
        codes, names = column_codes(poff.column("cause"))
        durs = np.asarray(poff.column("dur").to_numpy(), dtype=float)
        for code in sorted(np.unique(codes).tolist(), key=names.__getitem__):
            metrics.setdefault(f"preempt_off_max_ns:{names[code]}", float(durs[codes == code].max()))


# -- process pool -------------------------------------------------------------------------------

_WORKER: tuple[Workload, Settings] | None = None


def _init(workload: Workload | None, settings: Settings | None) -> None:
    global _WORKER
    _WORKER = (workload, settings) if workload is not None and settings is not None else None


def _work(spec: RunSpec) -> Run:
    assert _WORKER is not None
    return run_one(_WORKER[0], spec, _WORKER[1])


def run_all(workload: Workload, specs: Sequence[RunSpec], settings: Settings, *, jobs: int = 1,
            progress: Progress | None = None) -> list[Run]:
    """Every spec's Run, in the order of ``specs`` whatever ``jobs`` is."""
    if jobs <= 1 or len(specs) <= 1:
        out = []
        for i, spec in enumerate(specs):
            cb = (lambda f, i=i: progress.update(i, f)) if progress else None
            out.append(run_one(workload, spec, settings, cb))
            if progress:
                progress.update(i + 1, 0.0)
        return out
    results: dict[int, Run] = {}
    # On Linux, fork: the workers inherit the workload instead of unpickling it (seconds for a large
    # trace). They never touch polars, whose thread pool is the usual reason not to fork. Elsewhere,
    # spawn and send the workload once per worker.
    if sys.platform == "linux":
        ctx = multiprocessing.get_context("fork")
        _init(workload, settings)
        init: tuple = (None, ())
    else:
        ctx = multiprocessing.get_context("spawn")
        init = (_init, (workload, settings))
    with ProcessPoolExecutor(max_workers=min(jobs, len(specs)), mp_context=ctx, initializer=init[0],
                             initargs=init[1]) as pool:
        futures = {pool.submit(_work, spec): i for i, spec in enumerate(specs)}
        for fut in as_completed(futures):
            results[futures[fut]] = fut.result()
            if progress:
                progress.update(len(results), 0.0)
    _init(None, None)
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
