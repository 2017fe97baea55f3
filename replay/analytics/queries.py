"""The named queries of `mmreplay query`: one registry, each entry a function over a Source.

Every query returns a LazyFrame; :func:`run` collects it and turns polars
errors into one-line usage errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import polars as pl

from replay.analytics import compare, gathers, locks, ops, preempt, sched, tlb
from replay.analytics.source import Source
from replay.errors import UsageError


@dataclass(frozen=True)
class Query:
    """A named query: its function, the `--by` keys it accepts and what it reads."""

    name: str
    fn: Callable[..., pl.LazyFrame]
    keys: tuple[str, ...]
    default_by: tuple[str, ...]
    reads: str
    two_inputs: bool = False
    default_limit: int | None = None  # listings print their top rows unless --limit says otherwise

    @property
    def summary(self) -> str:
        return (self.fn.__doc__ or "").strip().splitlines()[0]


QUERIES: dict[str, Query] = {
    q.name: q
    for q in (
        Query("locks", locks.locks, locks.HOLD_KEYS, ("class",), "lock_waits + lock_holds"),
        Query("waits", locks.waits, locks.LOCK_KEYS, ("class",), "lock_waits"),
        Query("holds", locks.holds, locks.HOLD_KEYS, ("class",), "lock_holds"),
        Query("wait_hist", locks.wait_hist, locks.LOCK_KEYS, ("class",), "lock_waits"),
        Query("hold_hist", locks.hold_hist, locks.HOLD_KEYS, ("class",), "lock_holds"),
        Query("stacks", locks.stacks, locks.LOCK_KEYS, (), "lock_waits + stacks + symbols", default_limit=20),
        Query("tlb", tlb.tlb, tlb.TLB_KEYS, ("reason",), "tlb_flushes"),
        Query("tlb_hist", tlb.tlb_hist, tlb.TLB_KEYS, (), "tlb_flushes"),
        Query("gathers", gathers.gather_sizes, gathers.GATHER_KEYS, (), "gathers or page_free_batches"),
        Query("gather_hist", gathers.gather_hist, gathers.GATHER_KEYS, (), "gathers or page_free_batches"),
        Query("preempt_off", preempt.preempt_off, (), (), "lock_waits (spinning) + lock_holds, or sim_preempt_off",
              default_limit=20),
        Query("preempt_summary", preempt.preempt_summary, preempt.PREEMPT_KEYS, ("source",),
              "lock_waits (spinning) + lock_holds, or sim_preempt_off"),
        Query("sched_latency", sched.sched_latency, sched.SCHED_KEYS, (), "sched_wakeup + sched_switch, or sim_probe"),
        Query("sched_hist", sched.sched_hist, sched.SCHED_KEYS, (), "sched_wakeup + sched_switch, or sim_probe"),
        Query("sched_delay", sched.sched_delay, sched.SCHED_KEYS, ("task",),
              "sched_wakeup + sched_switch, or sim_sched"),
        Query("ops", ops.ops, ops.OPS_KEYS, ("name",), "syscalls, or sim_ops"),
        Query("compare", compare.compare, compare.COMPARE_KEYS, ("class",),
              "results + the recorded trace (lock_waits, lock_holds)", two_inputs=True),
    )
}


def parse_by(values: Sequence[str] | None, query: Query) -> tuple[str, ...]:
    """`--by a,b --by c` -> ("a", "b", "c"); nothing -> the query's default; "none" -> no grouping."""
    if not values:
        return query.default_by
    keys = tuple(k.strip() for v in values for k in v.split(",") if k.strip())
    if keys == ("none",):
        return ()
    for k in keys:
        if k not in query.keys:
            allowed = ", ".join(query.keys) if query.keys else "none: this query takes no --by"
            raise UsageError(f"unknown --by {k!r} for query {query.name!r} (choose from: {allowed})")
    return keys


def get(name: str) -> Query:
    try:
        return QUERIES[name]
    except KeyError:
        raise UsageError(f"unknown query {name!r} (mmreplay query TRACE --list shows them)") from None


def build(src: Source, name: str, by: Sequence[str] | None = None, other: Source | None = None) -> pl.LazyFrame:
    """The query's LazyFrame (nothing read yet); ``by=None`` groups by the query's default keys."""
    q = get(name)
    by = q.default_by if by is None else by
    with polars_errors(f"query {name!r}"):
        if q.two_inputs:
            return q.fn(src, tuple(by), other)
        return q.fn(src, tuple(by))


def run(src: Source, name: str, by: Sequence[str] | None = None, other: Source | None = None,
        limit: int | None = None) -> pl.DataFrame:
    """Build and collect a query; polars errors become one-line UsageErrors.

    ``limit`` keeps the first rows; for the listings of replay results (queries with a
    default limit) it keeps the first rows of each policy set, so every set is shown.
    """
    lf = build(src, name, by, other)
    if limit is not None:
        if get(name).default_limit is not None and src.is_results:
            lf = lf.filter(pl.int_range(pl.len()).over("policy_set") < limit)
        else:
            lf = lf.head(limit)
    with polars_errors(f"query {name!r}"):
        return lf.collect()


@contextmanager
def polars_errors(what: str) -> Iterator[None]:
    """Turn a polars exception into a UsageError carrying its first line."""
    try:
        yield
    except pl.exceptions.PolarsError as e:
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise UsageError(f"{what}: {first}") from None
