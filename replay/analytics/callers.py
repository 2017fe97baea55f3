"""Who took the lock: the first kernel frame of a stack outside the locking primitives.

Symbols come from the trace's own ``symbols`` table through replay/symbols.py's
Kallsyms, the symbolizer the recorder uses too (one lookup rule everywhere:
aliases resolved alike, an address past a symbol's end unknown).

A frame belongs to the locking primitives when its address lies in the
kernel's ``.sched.text`` or ``.lock.text`` sections (bounded by the
``__sched_text_start``... symbols, when the trace kept them; this is the rule of
`perf lock contention`) or its function name is one of the lock, sleep and
tracing entry points matched by :data:`LOCK_FUNCTION`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import polars as pl

from replay.symbols import Kallsyms
from replay.trace.reader import Trace

#: Function names that are part of taking a lock (or of recording that it was taken).
LOCK_FUNCTION = re.compile(
    r"^(?:"
    r"_?_?raw_(?:spin|read|write)_|do_raw_|_?_?(?:native_|pv_)?queued_(?:spin|read|write)_|__pv_queued"
    r"|_?_?mutex_|_?_?rwsem_|_?_?down(?:$|_)|_?_?up(?:$|_read|_write)|_?_?percpu_(?:down|up)_|downgrade_write"
    r"|osq_|_?_?schedule(?:$|_)|preempt_schedule|io_schedule|_?_?rt_mutex|_?_?rt_spin|rwbase_"
    r"|_?_?mmap_lock|mmap_(?:read|write)_(?:try)?lock|lock_(?:acquire|release|contended|acquired)$"
    r"|__traceiter_|trace_contention|perf_trace_|trace_event_raw_|__bpf_trace|bpf_trace_run"
    r")"
)

#: Section markers of kallsyms: [start, end) ranges holding only locking and sleeping code.
SECTIONS = (("__sched_text_start", "__sched_text_end"), ("__lock_text_start", "__lock_text_end"))

NO_STACK = "[no stack]"


@dataclass
class SymbolTable:
    """The trace's ``symbols`` table through the one symbolizer (replay.symbols.Kallsyms, which the
    tracer also uses), plus the locking-code ranges the caller rule needs."""

    kallsyms: Kallsyms
    lock_ranges: list[tuple[int, int]]

    @classmethod
    def from_trace(cls, trace: Trace) -> SymbolTable:
        if not trace.has("symbols"):
            return cls(Kallsyms.from_arrays([], []), [])
        df = trace.scan("symbols").select("addr", "name", "module").collect()
        ks = Kallsyms.from_arrays(df["addr"].to_numpy().astype(np.uint64), df["name"].to_list(),
                                  df["module"].to_list())
        # the section markers often alias a function's address: read them from the table, not the deduplicated index
        by_name = dict(zip(df["name"].to_list(), df["addr"].to_list(), strict=True))
        ranges = [(by_name[a], by_name[b]) for a, b in SECTIONS if a in by_name and b in by_name]
        return cls(ks, ranges)

    def lookup(self, ips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Symbol name (None where no symbol covers the address) and offset for each address."""
        idx, offsets = self.kallsyms.lookup_many(np.asarray(ips, dtype=np.uint64))
        names = np.full(len(idx), None, dtype=object)
        known = idx >= 0
        names[known] = self.kallsyms.names[idx[known]]
        return names, offsets

    def is_lock_function(self, ips: np.ndarray, names: np.ndarray) -> np.ndarray:
        ips = np.asarray(ips, dtype=np.uint64)
        verdict = {n: LOCK_FUNCTION.match(n) is not None for n in set(names) if n is not None}  # once per name
        out = np.array([verdict.get(n, False) for n in names], dtype=bool)
        for lo, hi in self.lock_ranges:
            out |= (ips >= np.uint64(lo)) & (ips < np.uint64(hi))
        return out


def frame_names(names: np.ndarray, offsets: np.ndarray, ips: np.ndarray) -> list[str]:
    """`name+0xoff` like perf, or the bare hex address when no symbol covers it."""
    return [
        f"{n}+{hex(int(o))}" if n is not None else hex(int(ip))
        for n, o, ip in zip(names, offsets, ips, strict=True)
    ]


def stack_callers(trace: Trace) -> pl.LazyFrame:
    """stack_id -> caller (function name), caller_site (name+0xoff) and frames ("a <- b <- c").

    The stacks table holds one row per distinct stack, so it is read eagerly; the
    result is a small frame that queries join onto their (lazy) event tables.
    Stacks with no frame outside the locking primitives keep their innermost frame.
    """
    schema = {"stack_id": pl.Int32, "caller": pl.String, "caller_site": pl.String, "frames": pl.String}
    if not trace.has("stacks"):
        return pl.LazyFrame({"stack_id": [-1], "caller": [NO_STACK], "caller_site": [NO_STACK], "frames": [""]},
                            schema=schema)
    stacks = trace.scan("stacks").collect()
    symbols = SymbolTable.from_trace(trace)
    flat = stacks.select("stack_id", pl.col("ips")).explode("ips").drop_nulls("ips")
    ips = flat["ips"].to_numpy().astype(np.uint64)
    names, offsets = symbols.lookup(ips)
    flat = flat.with_columns(
        pl.Series("function", [n if n is not None else hex(int(i)) for n, i in zip(names, ips, strict=True)]),
        pl.Series("site", frame_names(names, offsets, ips), pl.String),
        pl.Series("is_lock", symbols.is_lock_function(ips, names), pl.Boolean),
    )
    callers = flat.group_by("stack_id", maintain_order=True).agg(
        pl.col("function").filter(~pl.col("is_lock")).first().fill_null(pl.col("function").first()).alias("caller"),
        pl.col("site").filter(~pl.col("is_lock")).first().fill_null(pl.col("site").first()).alias("caller_site"),
        pl.col("site").str.join(" <- ").alias("frames"),
    )
    none = pl.DataFrame({"stack_id": [-1], "caller": [NO_STACK], "caller_site": [NO_STACK], "frames": [""]},
                        schema=schema)
    parts = [callers.cast(schema)] + ([] if -1 in set(callers["stack_id"].to_list()) else [none])
    return pl.concat(parts).lazy()
