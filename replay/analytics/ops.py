"""Operation latency: mm system calls as recorded (``syscalls``) or simulated (``sim_ops``)."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from replay.analytics.grouping import group, with_comm
from replay.analytics.source import Source, labels_to_text
from replay.analytics.stats import distribution

OPS_KEYS = ("name", "task", "pid", "cpu", "seed")


def ops(src: Source, by: Sequence[str]) -> pl.LazyFrame:
    """Latency per operation: count, total, mean, min, p50, p99, max (ns)."""
    lf = src.scan("syscalls", "the operation latency")
    lf, keys = group(lf, src, "syscalls", by, OPS_KEYS)
    out = lf.group_by(keys).agg(distribution("dur"))
    return labels_to_text(with_comm(out, src, keys)).sort(
        [*src.keys, "total_ns", *keys], descending=[*(False for _ in src.keys), True, *(False for _ in keys)]
    )
