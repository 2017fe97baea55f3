"""Scheduling latency: from a task's wakeup to the context switch that runs it.

Recorded traces: for every wake event (sched_waking, sched_wakeup,
sched_wakeup_new) the next sched_switch event of that tid (ordered by the
trace-wide ``seq``) decides. If it switches the task *in*, that is the end of
the latency; if it switches the task *out*, the task was already running and
the wakeup is not a latency. Several wake events of one sleep (waking then
wakeup) count once, from the first, as `perf sched latency` and Trace Compass
measure from the waker's request. ``cause`` (a --by key) is what started the wait: the
wake event's kind (waking, wakeup, wakeup_new), or "preempted". Tasks that were preempted (runnable without
a wakeup) are not counted; ``sched_delay`` counts them too, from the switch-out
that left them runnable, which is `perf sched latency`'s "delay". Replay results: the injected probe's latencies
(``sim_probe``, one row per wakeup; its ``latency`` is read as ``dur``, its
``cause`` says what the probe waited for and is a --by key).
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from replay.analytics.grouping import group, with_comm
from replay.analytics.source import Source, labels_to_text
from replay.analytics.stats import distribution, log2_histogram

SCHED_KEYS = ("task", "cpu", "seed", "cause")


def runnable(prev_state: pl.Expr) -> pl.Expr:
    """sched_switch left the task runnable: "R" (0) or preempted "R+" (TASK_REPORT_MAX, 0x100).

    The tracepoint reports one state bit (S 1, D 2, T 4, t 8, X 16, Z 32, P 64, I 128) or 0, and
    TASK_REPORT_MAX alone when the switch was a preemption.
    """
    return (prev_state & 0xFF) == 0


def latencies(src: Source, preempted: bool = False) -> pl.LazyFrame:
    """One row per wait that ended in a switch-in: ts (its start), dur (ns), cpu (run on), tid.

    A wait starts at a wakeup; with ``preempted`` also at a switch-out that left the task
    runnable (:func:`runnable`), which is what `perf sched latency` calls delay.
    """
    if src.is_results:
        if preempted:
            # sim_sched: every simulated switch-in with the time its task was runnable before it
            lf = src.scan("sched_delay", "the run delays (simulated context switches)")
            return lf.filter(pl.col("next_tid") >= 0).select(
                *(c for c in ("policy_set", "seed") if c in lf.collect_schema()),
                pl.col("ts"), pl.col("wait").alias("dur"), "cpu", pl.col("next_tid").alias("tid"),
                *([pl.col("reason").cast(pl.String).alias("cause")] if "reason" in lf.collect_schema() else []),
            )
        lf = src.scan("sched_latency", "the scheduling latency")
        if "dur" not in lf.collect_schema() and "latency" in lf.collect_schema():
            lf = lf.rename({"latency": "dur"})
        return lf
    switch = src.scan("sched_switch", "the scheduling latency (sched_wakeup -> sched_switch)")
    wake = src.scan("sched_wakeup", "the scheduling latency (sched_wakeup -> sched_switch)")
    events = pl.concat([
        switch.select("seq", "ts", pl.col("next_tid").alias("tid"), pl.lit(True).alias("switch_in"), "cpu"),
        switch.select("seq", "ts", pl.col("prev_tid").alias("tid"), pl.lit(False).alias("switch_in"), "cpu"),
    ]).filter(pl.col("tid") != 0).sort("seq")
    starts = wake.select("seq", pl.col("ts").alias("start_ts"), "tid", pl.col("kind").cast(pl.String).alias("cause"))
    if preempted:
        starts = pl.concat([
            starts,
            switch.filter(runnable(pl.col("prev_state"))).select("seq", pl.col("ts").alias("start_ts"),
                                                                  pl.col("prev_tid").alias("tid"),
                                                                  pl.lit("preempted").alias("cause")),
        ])
    starts = starts.filter(pl.col("tid") != 0).sort("seq")
    matched = starts.join_asof(
        events.rename({"seq": "switch_seq"}),
        left_on="seq",
        right_on="switch_seq",
        by="tid",
        strategy="forward",
        allow_exact_matches=False,
        check_sortedness=False,  # both sides are sorted by seq just above
    ).filter(pl.col("switch_in"))
    return (
        matched.group_by("tid", "switch_seq")
        .agg(pl.col("cause").sort_by("start_ts").first(), pl.col("start_ts").min(), pl.col("ts").first(),
             pl.col("cpu").first())
        .select(pl.col("start_ts").alias("ts"), (pl.col("ts") - pl.col("start_ts")).alias("dur"), "cpu", "tid",
                "cause")
        .sort("ts", "tid")
    )


def sched_delay(src: Source, by: Sequence[str]) -> pl.LazyFrame:
    """Run delay per group, as `perf sched latency`: waits after a wakeup or a preemption (ns).

    Replay results: every simulated switch-in of a workload task (``sim_sched``, its ``wait``).
    """
    lf, keys = group(latencies(src, preempted=True), src, "sched_delay", by, SCHED_KEYS)
    out = lf.group_by(keys).agg(distribution("dur"))
    lead = [k for k in src.keys if k in keys]
    return labels_to_text(with_comm(out, src, keys)).sort(
        [*lead, "max_ns", *keys], descending=[*(False for _ in lead), True, *(False for _ in keys)]
    )


def sched_latency(src: Source, by: Sequence[str]) -> pl.LazyFrame:
    """Wakeup-to-run latency per group: count, total, mean, min, p50, p99, max (ns)."""
    lf, keys = group(latencies(src), src, "sched_latency", by, SCHED_KEYS)
    out = lf.group_by(keys).agg(distribution("dur"))
    return labels_to_text(with_comm(out, src, keys)).sort(
        [*src.keys, "max_ns", *keys], descending=[*(False for _ in src.keys), True, *(False for _ in keys)]
    )


def sched_hist(src: Source, by: Sequence[str]) -> pl.LazyFrame:
    """log2 histogram of wakeup-to-run latencies."""
    lf, keys = group(latencies(src), src, "sched_latency", by, SCHED_KEYS)
    return labels_to_text(log2_histogram(lf, "dur", keys))
