"""Recorded versus simulated: the same lock statistics side by side, per policy set.

The recorded figures come from the trace the results were replayed from; the
simulated ones are pooled over seeds (``sim_count_per_seed`` is the mean count
of one run, comparable with the recorded count). Ratios are simulated over
recorded: an ``as-recorded`` policy set should give 1.0 everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from replay.analytics.grouping import group
from replay.analytics.source import Source, labels_to_text
from replay.analytics.stats import quantile
from replay.errors import UsageError

COMPARE_KEYS = ("class", "mode")
_METRICS = (("wait", "lock_waits"), ("hold", "lock_holds"))


def _stats(prefix: str) -> list[pl.Expr]:
    d = pl.col("dur")
    return [
        d.count().cast(pl.Int64).alias(f"{prefix}count"),
        d.mean().alias(f"{prefix}mean_ns"),
        quantile(d, 0.5).alias(f"{prefix}p50_ns"),
        quantile(d, 0.99).alias(f"{prefix}p99_ns"),
        d.max().cast(pl.Int64).alias(f"{prefix}max_ns"),
    ]


def pair(a: Source, b: Source | None) -> tuple[Source, Source]:
    """(results, recorded trace) from the two inputs in either order."""
    if b is None:
        raise UsageError("the compare query needs both replay results and the recorded trace: add --against PATH")
    if a.is_results == b.is_results:
        kind = "replay results" if a.is_results else "recorded traces"
        raise UsageError(f"compare needs one recorded trace and one replay results directory, got two {kind}")
    return (a, b) if a.is_results else (b, a)


def compare(src: Source, by: Sequence[str], other: Source | None = None) -> pl.LazyFrame:
    """Per metric (wait, hold), policy set and group: recorded vs simulated count, mean, p50, p99, max.

    Every group seen on either side appears for every policy set: a lock class that waited in
    the recording but never in a simulation shows ``sim_count_per_seed`` 0, not nothing.
    """
    results, trace = pair(src, other)
    seeds = results.runs().group_by("policy_set").agg(pl.len().cast(pl.Int64).alias("seeds")).lazy()
    frames = []
    for metric, table in _METRICS:
        if not (results.has(table) and trace.has(table)):
            continue
        sim_lf, keys = group(results.scan(table, "compare"), results, table, by, COMPARE_KEYS)
        rec_lf, rec_keys = group(trace.scan(table, "compare"), trace, table, by, COMPARE_KEYS)
        if table == "lock_holds" and "success" in trace.schema(table):
            rec_lf = rec_lf.filter(pl.col("success"))
        sim = labels_to_text(sim_lf.group_by(keys).agg(_stats("sim_")))
        rec = labels_to_text(rec_lf.group_by(rec_keys).agg(_stats("rec_")))
        groups = pl.concat([seeds.select("policy_set").join(rec.select(rec_keys), how="cross"), sim.select(keys)])
        joined = (
            groups.unique()
            .join(seeds, on="policy_set", how="left")
            .join(rec, on=rec_keys, how="left", nulls_equal=True)
            .join(sim, on=keys, how="left", nulls_equal=True)
            .with_columns(pl.col("rec_count").fill_null(0), pl.col("sim_count").fill_null(0))
            .with_columns(
                pl.lit(metric).alias("metric"),
                (pl.col("sim_count") / pl.col("seeds")).alias("sim_count_per_seed"),
                *((pl.col(f"sim_{s}_ns") / pl.col(f"rec_{s}_ns")).alias(f"{s}_ratio") for s in ("p50", "p99", "max")),
            )
        )
        frames.append(
            joined.select(
                "metric", *keys, "seeds", "rec_count", "sim_count_per_seed",
                *(f"{w}_{s}_ns" for s in ("mean", "p50", "p99", "max") for w in ("rec", "sim")),
                "p50_ratio", "p99_ratio", "max_ratio",
            )
        )
    if not frames:
        results.require("lock_waits", "compare (lock waits or holds in both inputs)")
        trace.require("lock_waits", "compare (lock waits or holds in both inputs)")
        raise UsageError("compare: the two inputs share neither lock_waits nor lock_holds")
    keys = [c for c in frames[0].collect_schema().names() if c in ("policy_set", "lock_class", "mode")]
    # "wait" sorts after "hold": descending puts waits first
    return pl.concat(frames).sort(["metric", *keys], descending=[True, *(False for _ in keys)])
