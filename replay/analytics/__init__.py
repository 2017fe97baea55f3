"""Polars queries over recorded traces and replay results (`mmreplay query`, `report`, `export`).

One module per concern: source (input and table twins), stats (distributions,
histograms), callers (stack symbolization), grouping (the --by vocabulary),
locks, tlb, gathers, preempt, sched, ops, compare, queries (the registry), sql,
output, plots, report, perfetto, perf_lock.
"""
