"""A RESULTS directory: every replay's simulated events plus the figures over seeds.

Written with the trace writer (kind="results", source="simulated"), so
`mmreplay info`, `Trace.open` and the query tools read it like a trace:
the simulator's ``sim_*`` event tables of every (policy set, seed) run,
``sim_summary`` (every metric of every run) and ``sim_comparison`` (paired
differences with 95% intervals). The manifest's ``extra`` records how the
replay was made (trace, policy sets, seeds, CPUs, scaling, costs).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa

from replay.compare import Comparison, MetricKey, rests_on_derived
from replay.trace.manifest import Host, Manifest
from replay.trace.schema import TABLES_BY_NAME
from replay.trace.writer import TraceWriter


@dataclass
class Run:
    """One replay: the policy set and seed it ran with, its metrics and simulated event tables."""

    policy_set: str
    seed: int
    metrics: dict[str, float]
    tables: dict[str, pa.Table] = field(default_factory=dict)


def _with_run_columns(name: str, table: pa.Table, run: Run) -> pa.Table:
    """Fill the policy_set/seed columns the results schema asks for if the simulator left them out."""
    spec = TABLES_BY_NAME.get(name)
    if spec is None:
        return table
    wanted = {c.name for c in spec.columns}
    if "policy_set" in wanted and "policy_set" not in table.column_names:
        table = table.append_column("policy_set", pa.array([run.policy_set] * table.num_rows, pa.string()))
    if "seed" in wanted and "seed" not in table.column_names:
        table = table.append_column("seed", pa.array([run.seed] * table.num_rows, pa.int32()))
    return table


def summary_rows(runs: Iterable[Run], dependent: frozenset[str]) -> dict[str, list[Any]]:
    """sim_summary columns: one row per (set, seed, metric)."""
    cols: dict[str, list[Any]] = {k: [] for k in ("policy_set", "seed", "metric", "lock_class", "kind", "value",
                                                   "derived")}
    for run in runs:
        for k, v in sorted(run.metrics.items()):
            key = MetricKey.parse(k)
            cols["policy_set"].append(run.policy_set)
            cols["seed"].append(run.seed)
            cols["metric"].append(key.metric)
            cols["lock_class"].append(key.lock_class)
            cols["kind"].append(key.kind)
            cols["value"].append(float(v))
            cols["derived"].append(rests_on_derived(key, dependent))
    return cols


def comparison_rows(comparisons: Iterable[Comparison]) -> dict[str, list[Any]]:
    """sim_comparison columns: one row per (base, other, metric)."""
    cols: dict[str, list[Any]] = {k: [] for k in ("metric", "lock_class", "kind", "base", "other", "base_mean",
                                                   "other_mean", "diff_mean", "ci_low", "ci_high", "seeds",
                                                   "derived")}
    for c in comparisons:
        cols["metric"].append(c.key.metric)
        cols["lock_class"].append(c.key.lock_class)
        cols["kind"].append(c.key.kind)
        for name in ("base", "other", "base_mean", "other_mean", "diff_mean", "ci_low", "ci_high", "seeds",
                     "derived"):
            cols[name].append(getattr(c, name))
    return cols


def _typed(name: str, cols: Mapping[str, list[Any]]) -> pa.Table:
    spec = TABLES_BY_NAME[name]
    return pa.table({c.name: pa.array(cols[c.name], pa.string() if c.is_enum else c.type) for c in spec.columns})


def write_results(
    path: str | os.PathLike[str],
    runs: list[Run],
    comparisons: list[Comparison],
    *,
    dependent: frozenset[str],
    host: Host,
    command: Iterable[str] = (),
    extra: dict[str, Any] | None = None,
    force: bool = False,
) -> Manifest:
    """Write the RESULTS directory; returns its manifest. Runs are written in (set, seed) order. Each
    run's tables leave it as they are written (``run.tables`` is empty afterwards): the last reference to
    millions of rows goes once they are on disk."""
    with TraceWriter(path, kind="results", source="simulated", host=replace(host), command=command, force=force,
                     extra=extra) as w:
        for run in runs:
            for name in sorted(run.tables):
                w.write(name, _with_run_columns(name, run.tables.pop(name), run))
        w.write("sim_summary", _typed("sim_summary", summary_rows(runs, dependent)))
        w.write("sim_comparison", _typed("sim_comparison", comparison_rows(comparisons)))
        return w.close()
