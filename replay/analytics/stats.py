"""Distribution summaries and log2 histograms as polars expressions.

Percentiles are nearest-rank (the smallest recorded value with at least q of
the samples at or below it), so p50/p99/max are always values that occurred,
as in HdrHistogram and `perf lock contention`'s max.
"""

from __future__ import annotations

import polars as pl

#: The summary fields, in output order (`perf lock contention` gives count, total,
#: max, min, avg; Trace Compass latency statistics add percentiles).
FIELDS = ("count", "total", "mean", "min", "p50", "p99", "max")


def _has_equiprobable() -> bool:
    try:
        pl.Series([1]).quantile(0.5, "equiprobable")
    except (ValueError, TypeError, pl.exceptions.PolarsError):
        return False
    return True


#: polars' "equiprobable" interpolation is the nearest rank (checked by the tests) and 3x
#: faster than sorting each group; older polars lack it and get the sort.
_EQUIPROBABLE = _has_equiprobable()


def quantile(col: str | pl.Expr, q: float) -> pl.Expr:
    """Nearest-rank quantile of an integer column: the ceil(q*n)-th smallest value.

    Exact for values below 2^53 (polars computes quantiles in Float64): 104 days in ns.
    """
    c = pl.col(col) if isinstance(col, str) else col
    if _EQUIPROBABLE:  # quantile() skips nulls itself
        return c.quantile(q, "equiprobable").cast(pl.Int64)
    c = c.drop_nulls()
    rank = (c.len() * q).ceil().cast(pl.Int64).clip(1) - 1
    return c.sort().get(rank, null_on_oob=True).cast(pl.Int64)


def distribution(col: str, prefix: str = "", unit: str = "ns") -> list[pl.Expr]:
    """count, total, mean, min, p50, p99, max of ``col`` as aggregation expressions.

    Output names are ``{prefix}count`` and ``{prefix}{field}_{unit}`` for the others.
    """
    c = pl.col(col)
    u = f"_{unit}" if unit else ""
    return [
        c.count().cast(pl.Int64).alias(f"{prefix}count"),
        c.sum().cast(pl.Int64).alias(f"{prefix}total{u}"),
        c.mean().alias(f"{prefix}mean{u}"),
        c.min().cast(pl.Int64).alias(f"{prefix}min{u}"),
        quantile(c, 0.5).alias(f"{prefix}p50{u}"),
        quantile(c, 0.99).alias(f"{prefix}p99{u}"),
        c.max().cast(pl.Int64).alias(f"{prefix}max{u}"),
    ]


def log2_bucket(col: str | pl.Expr) -> pl.Expr:
    """floor(log2(v)) for v > 0, exactly (from the leading zeros), and -1 for v == 0."""
    c = (pl.col(col) if isinstance(col, str) else col).cast(pl.Int64)
    return pl.when(c > 0).then(63 - c.bitwise_leading_zeros().cast(pl.Int64)).otherwise(-1).cast(pl.Int32)


def log2_histogram(lf: pl.LazyFrame, col: str, keys: list[str], unit: str = "ns") -> pl.LazyFrame:
    """Counts per power-of-two bucket [2^k, 2^(k+1)-1] (bucket -1 holds the zeros), per group.

    Negative values are not counted (they mean "unknown" or "full" in this format).
    """
    b = pl.col("bucket")
    return (
        lf.filter(pl.col(col) >= 0)
        .group_by([*keys, log2_bucket(col).alias("bucket")])
        .agg(pl.len().cast(pl.Int64).alias("count"))
        .with_columns(
            # powers of two are exact in Float64, so the cast back is exact
            pl.when(b < 0).then(0).otherwise(pl.lit(2.0).pow(b)).cast(pl.Int64).alias(f"lo_{unit}"),
        )
        .with_columns(
            pl.when(b < 0).then(0).otherwise(pl.col(f"lo_{unit}") * 2 - 1).alias(f"hi_{unit}"),
        )
        .with_columns(bucket_label(b, pl.col(f"lo_{unit}"), pl.col(f"hi_{unit}")).alias("range"))
        .select([*keys, "bucket", "range", f"lo_{unit}", f"hi_{unit}", "count"])
        .sort([*keys, "bucket"])
    )


def bucket_label(bucket: pl.Expr, lo: pl.Expr, hi: pl.Expr) -> pl.Expr:
    """"0", "1", "2-3", "4-7", ... for the buckets of :func:`log2_histogram`."""
    return (
        pl.when(bucket <= 0)
        .then(lo.cast(pl.String))
        .otherwise(pl.concat_str([lo.cast(pl.String), pl.lit("-"), hi.cast(pl.String)]))
    )
