"""Lock contention and hold statistics, in the terms `perf lock contention` uses.

Waits come from ``lock_waits`` (contended waits only, as perf counts them),
holds from ``lock_holds`` (every acquisition that tier 1/2 saw); replay results
supply their twins ``sim_lock_waits`` and ``sim_lock_holds``.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from replay.analytics.callers import stack_callers
from replay.analytics.grouping import group, with_comm
from replay.analytics.source import Source, labels_to_text
from replay.analytics.stats import distribution, log2_histogram
from replay.errors import MissingTableError

LOCK_KEYS = ("class", "caller", "site", "task", "pid", "lock", "mode", "type", "cpu", "seed")
#: Holds carry no contention flags, so no perf lock type.
HOLD_KEYS = tuple(k for k in LOCK_KEYS if k != "type")


def _summary(
    src: Source, table: str, by: Sequence[str], prefix: str, col: str, needed_for: str
) -> tuple[pl.LazyFrame, list[str]]:
    lf = src.scan(table, needed_for)
    if table == "lock_holds" and "success" in lf.collect_schema():
        lf = lf.filter(pl.col("success"))
    lf, keys = group(lf, src, table, by, HOLD_KEYS if table == "lock_holds" else LOCK_KEYS)
    aggs = distribution(col, prefix)
    if "derived" in lf.collect_schema():
        # replay marks holds that come from the missing-holds model: say how many figures rest on it
        aggs.append(pl.col("derived").sum().cast(pl.Int64).alias(f"{prefix}derived"))
    return lf.group_by(keys).agg(aggs), keys


def waits(src: Source, by: Sequence[str]) -> pl.LazyFrame:
    """Contended waits per group: count, total, mean, min, p50, p99, max (ns), longest total first."""
    lf, keys = _summary(src, "lock_waits", by, "", "dur", "the lock wait summary")
    return _finish(lf, src, keys, "total_ns")


def holds(src: Source, by: Sequence[str]) -> pl.LazyFrame:
    """Successful acquisitions per group with their hold-time distribution (ns)."""
    lf, keys = _summary(src, "lock_holds", by, "", "dur", "the lock hold summary")
    return _finish(lf, src, keys, "total_ns")


def locks(src: Source, by: Sequence[str]) -> pl.LazyFrame:
    """Waits and holds side by side per group (wait_* from lock_waits, hold_* from lock_holds).

    Either table may be missing (hold_* or wait_* columns are then null); both missing is an error.
    """
    have_w, have_h = src.has("lock_waits"), src.has("lock_holds")
    if not (have_w or have_h):
        src.require("lock_waits", "the lock summary (lock_waits or lock_holds)")
    parts = []
    if have_w:
        parts.append(_summary(src, "lock_waits", by, "wait_", "dur", "the lock summary"))
    if have_h:
        parts.append(_summary(src, "lock_holds", by, "hold_", "dur", "the lock summary"))
    keys = parts[0][1]
    lf = labels_to_text(parts[0][0])
    if len(parts) == 2:
        lf = lf.join(labels_to_text(parts[1][0]), on=keys, how="full", coalesce=True, nulls_equal=True)
    else:
        missing = "hold_" if have_w else "wait_"
        names = [e.meta.output_name() for e in distribution("dur", missing)]
        lf = lf.with_columns(pl.lit(None, pl.Float64 if "mean" in n else pl.Int64).alias(n) for n in names)
    for p in ("wait_", "hold_"):
        lf = lf.with_columns(pl.col(f"{p}count").fill_null(0), pl.col(f"{p}total_ns").fill_null(0))
    order = [*keys, *(e.meta.output_name() for p in ("wait_", "hold_") for e in distribution("dur", p))]
    order += [c for c in lf.collect_schema().names() if c.endswith("_derived")]
    return _finish(lf.select(order), src, keys, "wait_total_ns" if have_w else "hold_total_ns")


def _finish(lf: pl.LazyFrame, src: Source, keys: list[str], total: str) -> pl.LazyFrame:
    lf = labels_to_text(with_comm(lf, src, keys))
    lead = [k for k in src.keys if k in keys]
    return lf.sort([*lead, total, *keys], descending=[*(False for _ in lead), True, *(False for _ in keys)])


def wait_hist(src: Source, by: Sequence[str]) -> pl.LazyFrame:
    """log2 histogram of contended wait times per group (bucket k holds [2^k, 2^(k+1)-1] ns)."""
    return _hist(src, "lock_waits", by, "the wait histogram")


def hold_hist(src: Source, by: Sequence[str]) -> pl.LazyFrame:
    """log2 histogram of hold times per group."""
    return _hist(src, "lock_holds", by, "the hold histogram")


def _hist(src: Source, table: str, by: Sequence[str], needed_for: str) -> pl.LazyFrame:
    lf = src.scan(table, needed_for)
    lf, keys = group(lf, src, table, by, HOLD_KEYS if table == "lock_holds" else LOCK_KEYS)
    return labels_to_text(log2_histogram(lf, "dur", keys))


def stacks(src: Source, by: Sequence[str]) -> pl.LazyFrame:
    """Kernel stacks that waited longest in total: count, total and max wait, caller, frames."""
    lf = src.scan("lock_waits", "the top kernel stacks")
    if "stack_id" not in lf.collect_schema():
        raise MissingTableError(src.trace.path, "stacks", "the top kernel stacks (the waits carry no stack_id)",
                                "the recorder's stack map")
    src.trace.require("stacks", "the top kernel stacks")
    lf, keys = group(lf, src, "lock_waits", by, LOCK_KEYS)
    keys = [k for k in keys if k != "stack_id"]
    agg = lf.group_by([*keys, "stack_id"]).agg(
        pl.len().cast(pl.Int64).alias("count"),
        pl.col("dur").sum().alias("total_ns"),
        pl.col("dur").max().alias("max_ns"),
    )
    named = agg.join(stack_callers(src.trace).rename({"caller": "top_caller"}), on="stack_id", how="left")
    out = named.select([*keys, "stack_id", "count", "total_ns", "max_ns", "top_caller", "frames"])
    return _finish(out, src, keys, "total_ns")
