"""The `--by` vocabulary: turning a grouping name into key columns on a table.

Each key names the columns it produces and the input columns it needs; a key
that the table cannot provide is a usage error naming both, never a polars
traceback. Replay results are always grouped by ``policy_set`` first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import polars as pl

from replay.analytics.callers import NO_STACK, stack_callers
from replay.analytics.source import Source
from replay.errors import UsageError

# LCB_F_* flags of lock:contention_begin (include/trace/events/lock.h).
SPIN, READ, WRITE, RT, PERCPU, MUTEX = 1, 2, 4, 8, 16, 32

#: `perf lock contention`'s lock type names for contention flags (tools/perf/builtin-lock.c).
LOCK_TYPES: tuple[tuple[int, str], ...] = (
    (0, "semaphore"),
    (SPIN, "spinlock"),
    (SPIN | READ, "rwlock:R"),
    (SPIN | WRITE, "rwlock:W"),
    (READ, "rwsem:R"),
    (WRITE, "rwsem:W"),
    (RT, "rtmutex"),
    (RT | READ, "rwlock-rt:R"),
    (RT | WRITE, "rwlock-rt:W"),
    (PERCPU | READ, "pcpu-sem:R"),
    (PERCPU | WRITE, "pcpu-sem:W"),
    (MUTEX, "mutex"),
    (MUTEX | SPIN, "mutex"),
)


def lock_type(flags: pl.Expr) -> pl.Expr:
    """perf's lock type name for a flags value ("unknown" for combinations perf does not name)."""
    expr = pl.when(pl.lit(False)).then(pl.lit(None, pl.String))
    for value, name in LOCK_TYPES:
        expr = expr.when(flags == value).then(pl.lit(name))
    return expr.otherwise(pl.lit("unknown"))


def mode_from_flags(flags: pl.Expr) -> pl.Expr:
    """Shared ("read") when LCB_F_READ is set, else exclusive ("write"): mutexes and spinlocks are exclusive."""
    return pl.when((flags & READ) != 0).then(pl.lit("read")).otherwise(pl.lit("write"))


#: Adds a key's columns to a table's frame: (frame, its schema, the input, recorded table name) -> frame.
Derive = Callable[[pl.LazyFrame, pl.Schema, Source, str], pl.LazyFrame]


@dataclass(frozen=True)
class Key:
    """A grouping name, the columns it outputs and how it derives them."""

    name: str
    help: str
    columns: tuple[str, ...]
    derive: Derive


def _column(col: str, *alternatives: str) -> Derive:
    """Key read from a column (or the first of its alternatives present, renamed to ``col``)."""

    def derive(lf: pl.LazyFrame, schema: pl.Schema, src: Source, table: str) -> pl.LazyFrame:
        for c in (col, *alternatives):
            if c in schema:
                return lf if c == col else lf.with_columns(pl.col(c).alias(col))
        raise _lacks(src, table, col)

    return derive


def _lacks(src: Source, table: str, col: str) -> UsageError:
    return UsageError(f"{src.name_of(table)} in {src.path} has no {col!r} column to group by")


def _mode(lf: pl.LazyFrame, schema: pl.Schema, src: Source, table: str) -> pl.LazyFrame:
    if "mode" in schema:
        return lf
    if "flags" in schema:
        # grouped as a Boolean "is read" (twice as fast as a string key on millions of rows);
        # source.labels_to_text turns it into "read"/"write" on output
        return lf.with_columns(((pl.col("flags") & READ) != 0).alias("mode"))
    raise _lacks(src, table, "mode")


def _type(lf: pl.LazyFrame, schema: pl.Schema, src: Source, table: str) -> pl.LazyFrame:
    if "flags" not in schema:
        raise UsageError(f"--by type needs the contention 'flags' column, which {src.name_of(table)} lacks")
    return lf.with_columns(lock_type(pl.col("flags")).alias("type"))


def _caller(lf: pl.LazyFrame, schema: pl.Schema, src: Source, table: str) -> pl.LazyFrame:
    if "stack_id" not in schema:
        raise _lacks(src, table, "stack_id")
    src.trace.require("stacks", "grouping by caller")
    # Categorical: grouping millions of rows by a string key is twice as slow as by its codes
    callers = stack_callers(src.trace).select(
        "stack_id", pl.col("caller").cast(pl.Categorical), pl.col("caller_site").cast(pl.Categorical)
    )
    lf = lf.join(callers, on="stack_id", how="left")
    context = _operation(lf, schema, src)
    if context is not None:
        lf = _with_operation(lf, src)
    if context is None:
        return lf.with_columns(pl.col("caller").fill_null(NO_STACK), pl.col("caller_site").fill_null(NO_STACK))
    fallback = (pl.col("stack_id") < 0) | pl.col("caller").is_null()
    return lf.with_columns(context.alias("_context")).with_columns(
        pl.when(fallback).then(pl.col("_context").cast(pl.Categorical)).otherwise(pl.col("caller")).alias("caller"),
        pl.when(fallback).then(pl.col("_context").cast(pl.Categorical)).otherwise(pl.col("caller_site"))
        .alias("caller_site"),
    ).drop("_context")


def _operation(lf: pl.LazyFrame, schema: pl.Schema, src: Source) -> pl.Expr | None:
    """For rows without a kernel stack: the mm operation the thread was in, as a caller.

    Tier 1 records no stack for mmap_lock holds; the system call that encloses the row
    ("munmap() [no stack]") or, outside one, the page fault the thread took last
    ("page fault [no stack]") still says who took the lock. Needs ``ts``/``tid`` and the
    syscalls or page_faults table; the expression reads columns joined here by the caller.
    """
    if not {"ts", "tid"} <= set(schema.names()) or src.is_results:
        return None
    if not (src.has("syscalls") or src.has("page_faults")):
        return None
    return pl.col("_context").fill_null(NO_STACK)


def _with_operation(lf: pl.LazyFrame, src: Source) -> pl.LazyFrame:
    """Adds ``_context`` (see :func:`_operation`) by as-of joins on the thread's syscalls and faults."""
    lf = lf.sort("ts")
    ctx = pl.lit(None, pl.String)
    if src.has("syscalls"):
        sys = src.scan("syscalls", "").select(
            pl.col("tid"), pl.col("ts").alias("_sys_ts"), (pl.col("ts") + pl.col("dur")).alias("_sys_end"),
            pl.col("name").cast(pl.String).alias("_sys")).sort("_sys_ts")
        lf = lf.join_asof(sys, left_on="ts", right_on="_sys_ts", by="tid", strategy="backward",
                          check_sortedness=False)
        ctx = pl.when(pl.col("_sys_end") >= pl.col("ts")).then(pl.format("{}() [no stack]", pl.col("_sys")))
    else:
        lf = lf.with_columns(pl.lit(None, pl.Int64).alias("_sys_end"))
    if src.has("page_faults"):
        faults = src.scan("page_faults", "").select("tid", pl.col("ts").alias("_fault_ts")).sort("_fault_ts")
        lf = lf.join_asof(faults, left_on="ts", right_on="_fault_ts", by="tid", strategy="backward",
                          check_sortedness=False)
        after = pl.col("_fault_ts").is_not_null() & (pl.col("_sys_end").is_null()
                                                     | (pl.col("_fault_ts") > pl.col("_sys_end")))
        ctx = (ctx.when(after) if isinstance(ctx, pl.Expr) and src.has("syscalls") else pl.when(after)).then(
            pl.lit("page fault [no stack]"))
    return lf.with_columns(ctx.alias("_context")).drop("_sys_ts", "_sys_end", "_sys", "_fault_ts", strict=False)


KEYS: dict[str, Key] = {
    k.name: k
    for k in (
        Key("class", "lock class", ("lock_class",), _column("lock_class")),
        Key("caller", "first kernel function outside the locking primitives", ("caller",), _caller),
        Key("site", "that caller with its offset (name+0xoff, as perf prints it)", ("caller_site",), _caller),
        Key("task", "thread (tid, with its comm)", ("tid",), _column("tid")),
        Key("pid", "process (thread-group id)", ("pid",), _column("pid")),
        Key("lock", "lock address", ("lock_addr",), _column("lock_addr")),
        Key("mode", "read or write (from the contention flags for waits)", ("mode",), _mode),
        Key("type", "perf's lock type from the contention flags (rwsem:W, spinlock, ...)", ("type",), _type),
        Key("cpu", "CPU", ("cpu",), _column("cpu")),
        Key("seed", "replay seed (results only)", ("seed",), _column("seed")),
        Key("reason", "TLB flush reason", ("reason",), _column("reason")),
        Key("fullmm", "whole-mm teardown gather or not", ("fullmm",), _column("fullmm")),
        Key("name", "operation (system call) name", ("name",), _column("name", "op", "kind")),
        Key("source", "which table or rule a row comes from", ("source",), _column("source")),
        Key("cause", "what the simulated probe waited for (results)", ("cause",), _column("cause")),
    )
}


def group(
    lf: pl.LazyFrame, src: Source, table: str, by: Sequence[str], allowed: Sequence[str]
) -> tuple[pl.LazyFrame, list[str]]:
    """Add the key columns of ``by`` to ``lf``; returns the frame and the grouping columns.

    Results add ``policy_set`` in front. ``allowed`` is the query's vocabulary.
    """
    schema = lf.collect_schema()
    cols = [k for k in src.keys if k in schema]
    done: set[Derive] = set()
    for name in by:
        if name not in allowed:
            raise UsageError(f"unknown --by {name!r} for this query (choose from: {', '.join(allowed)})")
        key = KEYS[name]
        if key.derive not in done:  # caller and site share one join
            lf = key.derive(lf, schema, src, table)
            done.add(key.derive)
        cols += [c for c in key.columns if c not in cols]
    return lf, cols


def with_comm(lf: pl.LazyFrame, src: Source, keys: Sequence[str]) -> pl.LazyFrame:
    """Attach the task name after aggregating by tid (the tasks table is small)."""
    if "tid" not in keys:
        return lf
    tasks = src.tasks()
    if tasks is None:  # replay results and traces without a tasks table: no names to give
        return lf
    out = lf.join(tasks.select("tid", "comm"), on="tid", how="left")
    cols = out.collect_schema().names()
    i = cols.index("tid") + 1
    return out.select([*cols[:i], "comm", *[c for c in cols[i:] if c != "comm"]])
