"""Sections that run with preemption disabled: the longest ones and their distribution.

Replay results record them directly (``sim_preempt_off``; its ``cause`` becomes
``source``: spinlock, spin-wait, gather, ptl, ...). A recorded trace has
no preempt_disable/enable events (that needs CONFIG_PREEMPT_TRACER); what it
does show are sections that certainly run with preemption off: waits spinning
on a spinlock (``lock_waits`` with LCB_F_SPIN) and holds of spinlock classes
(page_table_lock, zone_lock, runqueue_lock). These are lower bounds of the
true sections, marked by the ``source`` column.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from replay.analytics.grouping import SPIN, group, with_comm
from replay.analytics.source import Source, labels_to_text
from replay.analytics.stats import distribution

SPIN_CLASSES = ("page_table_lock", "zone_lock", "runqueue_lock")
PREEMPT_KEYS = ("source", "task", "cpu", "class", "seed")
_COLS = ("ts", "dur", "cpu", "tid")


def sections(src: Source) -> pl.LazyFrame:
    """Every known preempt-off section: ts, dur, cpu, tid, source, lock_class (+ policy_set, seed)."""
    if src.is_results:
        lf = src.scan("preempt_off", "the preempt-off sections")
        schema = lf.collect_schema()
        source = pl.col("cause").cast(pl.String) if "cause" in schema else pl.lit("simulated")
        return lf.with_columns(
            *([] if "source" in schema else [source.alias("source")]),
            *([] if "lock_class" in schema else [pl.lit(None, pl.String).alias("lock_class")]),
        )
    # lock_class stays an Enum (the same one in both tables) until the output: filtering and
    # concatenating enum codes is several times faster than strings on large traces
    parts = []
    if src.has("lock_waits"):
        parts.append(
            src.scan("lock_waits", "")
            .filter((pl.col("flags") & SPIN) != 0)
            .select(*_COLS, pl.lit("spin_wait").alias("source"), "lock_class")
        )
    if src.has("lock_holds"):
        parts.append(
            src.scan("lock_holds", "")
            .filter(pl.col("lock_class").is_in(SPIN_CLASSES))
            .select(*_COLS, pl.lit("spin_hold").alias("source"), "lock_class")
        )
    if not parts:
        src.require("lock_waits", "the preempt-off sections (spinning waits in lock_waits, or sim_preempt_off)")
    return pl.concat(parts)


def preempt_off(src: Source, by: Sequence[str]) -> pl.LazyFrame:
    """Every preempt-off section, longest first (the listing takes no --by; --limit keeps the top)."""
    lf, _ = group(sections(src), src, "preempt_off", by, ())
    lead = [*src.keys, *(["seed"] if src.is_results else [])]
    cols = [*lead, "ts", "dur", "cpu", "tid", "source", "lock_class"]
    out = labels_to_text(with_comm(lf.select(cols), src, ["tid"]))
    return out.sort(["dur", *lead, "ts"], descending=[True, *(False for _ in lead), False])


def preempt_summary(src: Source, by: Sequence[str]) -> pl.LazyFrame:
    """Distribution of preempt-off section lengths per group."""
    lf, keys = group(sections(src), src, "preempt_off", by, PREEMPT_KEYS)
    out = lf.group_by(keys).agg(distribution("dur"))
    return labels_to_text(with_comm(out, src, keys)).sort(
        ["max_ns", *keys], descending=[True, *(False for _ in keys)]
    )
