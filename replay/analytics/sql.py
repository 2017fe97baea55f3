"""`mmreplay query TRACE --sql`: every table of the input, lazily, in one polars SQLContext.

Besides the stored tables (recorded names, or the ``sim_*`` names of replay
results) the context holds derived views: ``callers`` (stack_id -> caller,
caller_site, frames), ``sched_latencies`` (one row per wakeup-to-run latency),
``run_delays`` (the same plus waits after preemption, as sched_delay) and
``preempt_sections`` (the preempt-off sections of the preempt_off query).
"""

from __future__ import annotations

import polars as pl

from replay.analytics.callers import stack_callers
from replay.analytics.preempt import sections
from replay.analytics.queries import polars_errors
from replay.analytics.sched import latencies
from replay.analytics.source import Source, labels_to_text
from replay.errors import MmreplayError


def views(src: Source) -> dict[str, pl.LazyFrame]:
    """Every table and derived view of ``src`` by its SQL name (nothing is read)."""
    out = {name: src.trace.scan(name) for name in src.trace.tables}
    if src.trace.has("stacks"):
        out["callers"] = stack_callers(src.trace)
    derived = (
        ("sched_latencies", lambda: latencies(src)),
        ("run_delays", lambda: latencies(src, preempted=True)),
        ("preempt_sections", lambda: sections(src)),
    )
    for name, make in derived:
        try:
            out[name] = labels_to_text(make())
        except MmreplayError:  # the input lacks what the view is derived from
            pass
    return out


def context(src: Source) -> pl.SQLContext:
    return pl.SQLContext(views(src), eager=False)


def run_sql(src: Source, query: str, limit: int | None = None) -> pl.DataFrame:
    """Execute ``query``; bad SQL and unknown tables or columns become one-line UsageErrors."""
    with polars_errors("SQL"):
        lf = context(src).execute(query, eager=False)
        if limit is not None:
            lf = lf.head(limit)
        return lf.collect()
