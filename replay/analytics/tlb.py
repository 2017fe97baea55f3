"""TLB flush sizes and reasons (tlb:tlb_flush), and the cost class each size falls in.

``pages == -1`` is a full flush (TLB_FLUSH_ALL). x86 turns a ranged flush of
more than 33 pages into a full flush too (tlb_single_page_flush_ceiling,
arch/x86/mm/tlb.c), so the summary counts those separately.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from replay.analytics.grouping import group, with_comm
from replay.analytics.source import Source, labels_to_text
from replay.analytics.stats import distribution, log2_histogram

#: tlb_single_page_flush_ceiling: ranged flushes above this many pages flush everything.
FLUSH_CEILING = 33
TLB_KEYS = ("reason", "task", "pid", "cpu")


def tlb(src: Source, by: Sequence[str]) -> pl.LazyFrame:
    """Flushes per group: total, full (-1), ranged, ranged over the 33-page ceiling, and ranged sizes."""
    lf = src.scan("tlb_flushes", "the TLB flush summary")
    lf, keys = group(lf, src, "tlb_flushes", by, TLB_KEYS)
    ranged = pl.col("pages") >= 0
    # distribution() reads the ranged sizes only: full flushes have no size.
    out = lf.with_columns(pl.when(ranged).then(pl.col("pages")).alias("ranged_pages")).group_by(keys).agg(
        pl.len().cast(pl.Int64).alias("flushes"),
        (~ranged).sum().cast(pl.Int64).alias("full"),
        ranged.sum().cast(pl.Int64).alias("ranged"),
        (pl.col("pages") > FLUSH_CEILING).sum().cast(pl.Int64).alias("over_ceiling"),
        *distribution("ranged_pages", "", "pages")[1:],
    )
    out = labels_to_text(with_comm(out, src, keys))
    return out.sort(["flushes", *keys], descending=[True, *(False for _ in keys)])


def tlb_hist(src: Source, by: Sequence[str]) -> pl.LazyFrame:
    """Flush sizes in log2 buckets of pages; full flushes are the row with range "full" (bucket null)."""
    lf = src.scan("tlb_flushes", "the TLB flush size histogram")
    lf, keys = group(lf, src, "tlb_flushes", by, TLB_KEYS)
    hist = log2_histogram(lf, "pages", keys, unit="pages")
    full = (
        lf.filter(pl.col("pages") < 0)
        .group_by(keys)
        .agg(pl.len().cast(pl.Int64).alias("count"))
        .select(
            *keys,
            pl.lit(None, pl.Int32).alias("bucket"),
            pl.lit("full").alias("range"),
            pl.lit(-1, pl.Int64).alias("lo_pages"),
            pl.lit(-1, pl.Int64).alias("hi_pages"),
            "count",
        )
    )
    return labels_to_text(pl.concat([hist, full])).sort([*keys, "bucket"], nulls_last=True)
