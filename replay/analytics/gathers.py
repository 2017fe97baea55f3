"""Page-freeing batch sizes: mmu_gather windows (tier 2) or free bursts (tier 1).

``gathers`` holds whole tlb_gather_mmu..tlb_finish_mmu windows with the pages
freed inside; without tier 2 the kernel-aggregated ``page_free_batches``
bursts of the batched free path are the closest measure of a batch. The
``source`` column says which was used.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from replay.analytics.grouping import group, with_comm
from replay.analytics.source import Source, labels_to_text
from replay.analytics.stats import distribution, log2_histogram

GATHER_KEYS = ("fullmm", "task", "pid", "cpu")


def _batches(src: Source) -> tuple[pl.LazyFrame, str]:
    if src.has("gathers"):
        return src.scan("gathers", "the gather batch sizes"), "gathers"
    if src.has("page_free_batches"):
        return src.scan("page_free_batches", "the gather batch sizes").filter(pl.col("batched")), "page_free_batches"
    src.require("gathers", "the gather batch sizes (gathers or page_free_batches)")
    raise AssertionError("unreachable")


def gather_sizes(src: Source, by: Sequence[str]) -> pl.LazyFrame:
    """Pages per batch (count, total, mean, min, p50, p99, max) and the longest batch duration."""
    lf, table = _batches(src)
    lf, keys = group(lf, src, table, by, GATHER_KEYS)
    extra = [pl.col("flushes").sum().cast(pl.Int64).alias("flushes")] if table == "gathers" else []
    out = lf.group_by(keys).agg(
        pl.lit(table).alias("source"),
        *distribution("pages", "", "pages"),
        *extra,
        pl.col("dur").max().alias("max_dur_ns"),
    )
    out = labels_to_text(with_comm(out, src, keys))
    return out.sort(["total_pages", *keys], descending=[True, *(False for _ in keys)])


def gather_hist(src: Source, by: Sequence[str]) -> pl.LazyFrame:
    """log2 histogram of pages per batch."""
    lf, table = _batches(src)
    lf, keys = group(lf, src, table, by, GATHER_KEYS)
    return labels_to_text(log2_histogram(lf, "pages", keys, unit="pages"))
