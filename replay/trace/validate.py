"""Value checks a command runs before computing on a trace: what the Arrow types cannot say.

Trace.open checks what costs no data read (schemas, row counts, nulls where none may be, enum
dictionaries and indices). A command that simulates or lays out time (replay) also needs the values to
make sense, or a single corrupt cell turns into an hour of simulated time or an overflow: every duration
is non-negative, and in a recorded trace every event lies within the recorded span (the recorder writes
no event outside it; MARGIN_NS of slack for clock edges). Columnar and lazy: one pass over the time
columns of each table, memory-mapped.
"""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl

from replay.errors import TraceError
from replay.trace.reader import Trace
from replay.trace.schema import TABLES_BY_NAME

#: How far outside the manifest's span an event may lie before the trace is refused as corrupt.
MARGIN_NS = 1_000_000_000

#: Columns that are an interval before ``ts`` rather than after it (lock_holds.wait: attempt to acquired).
BEFORE_TS = {"wait"}


def durations(name: str) -> list[str]:
    """The table's duration columns (unit ns, not the timestamp)."""
    spec = TABLES_BY_NAME.get(name)
    return [] if spec is None else [c.name for c in spec.columns if c.unit == "ns" and c.name != "ts"]


def check_values(trace: Trace, tables: Iterable[str] | None = None) -> None:
    """Raise TraceError naming the table, column and value when a duration is negative or an event lies
    outside the recorded span."""
    m = trace.manifest
    span = m.kind == "trace" and m.end_ns > m.start_ns
    lo, hi = m.start_ns - MARGIN_NS, m.end_ns + MARGIN_NS
    for name in tables if tables is not None else trace.tables:
        if not trace.has(name) or not trace.rows(name):
            continue
        lf = pl.scan_ipc(trace.info(name).path)
        cols = set(trace.info(name).schema.names)
        durs = [c for c in durations(name) if c in cols]
        has_ts = "ts" in cols
        if not durs and not has_ts:
            continue
        # one pass: whether an interval runs outside the span is read along (on ts clipped to the span, so
        # that hi - ts and ts - lo cannot overflow; it is used only once ts is known to lie within it)
        ts = pl.col("ts").clip(lo, hi)
        outside = [(pl.col(c) > (ts - lo) if c in BEFORE_TS else pl.col(c) > (hi - ts)).any().alias(f"out:{c}")
                   for c in durs] if span and has_ts else []
        stats = lf.select(*[pl.col(c).min().alias(c) for c in durs],
                          *([pl.col("ts").min().alias("ts_min"), pl.col("ts").max().alias("ts_max")]
                            if has_ts else []), *outside).collect().row(0, named=True)
        where = trace.info(name).path
        for c in durs:
            if stats[c] is not None and stats[c] < 0:
                raise TraceError(where, f"column {c!r} holds a negative duration ({stats[c]} ns): corrupt")
        if not (span and has_ts and stats["ts_min"] is not None):
            continue
        for v in (stats["ts_min"], stats["ts_max"]):
            if not lo <= v <= hi:
                raise TraceError(where, f"an event at {v} ns lies outside the recorded span {m.start_ns} .. "
                                 f"{m.end_ns} ns: corrupt, or the manifest is not this trace's")
        # ts is within [lo, hi] now: the clipped ts was ts
        bad = [c for c in durs if stats[f"out:{c}"]]
        if bad:
            raise TraceError(where, f"column {bad[0]!r} holds an interval that runs outside the recorded span "
                             f"{m.start_ns} .. {m.end_ns} ns: corrupt")
