"""Read `perf lock contention` text output into a frame comparable with the ``waits`` query.

This is the cross-check of mmreplay's contention summary against perf's: run
``perf lock record -- WORKLOAD`` and ``perf lock contention -i perf.data [-v]``
on the same run that mmreplay recorded, parse perf's table with :func:`parse`,
and join it with ``waits --by caller`` through :func:`compare`.

perf prints the report on stderr, mixed with diagnostics (build ids, symbol
loading); the parser skips everything that is not the table. Durations come
with a unit and two decimals, so a parsed duration is exact only to half a
unit of its last digit (:func:`resolution`).

Callers differ: perf 6.1 skips ``--stack-skip`` (3) frames before looking for
the first frame outside the lock text sections, while mmreplay takes the
first frame outside the locking primitives. With ``-v`` perf prints each
stack, and :func:`parse` recomputes the mmreplay caller from it
(``mm_caller``) so both sides group alike.

One difference regrouping cannot undo: perf keys a row by the callchain
*without* its first 3 frames (:func:`row_key`), and prints the stack of the
row's first wait only. A lock taken directly by a function that the
interrupt or syscall path calls (``rcu_core`` and ``run_timer_softirq``,
both called from ``handle_softirqs``) has its caller among the skipped
frames, so two callers interrupted at the same place share one perf row.
:func:`caller_pools` finds the callers that perf's keys cannot tell apart,
from both sides' stacks, and :func:`compare` can pool them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from replay.analytics.callers import LOCK_FUNCTION, SymbolTable, stack_callers
from replay.errors import UsageError
from replay.trace.reader import Trace

#: perf's units (lock_stat_key_print_time): "h" and "m" appear for totals over a minute.
UNITS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
#: Header labels of perf's table, in the words perf prints (builtin-lock.c), and our column names.
HEADERS = {
    "contended": "contended",
    "total wait": "total_ns",
    "max wait": "max_ns",
    "min wait": "min_ns",
    "avg wait": "avg_ns",
    "type": "type",
    "caller": "caller_site",
    "pid": "pid",
    "comm": "comm",
    "address": "lock_addr",
    "symbol": "symbol",
}
_HEADER = re.compile("|".join(re.escape(h) for h in sorted(HEADERS, key=len, reverse=True)))
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ns|us|ms|s|m|h)\b")
_FRAME = re.compile(r"^\s+(0x[0-9a-f]+)\s*(\S*)\s*$")

#: perf 6.1's row key in caller mode (builtin-lock.c callchain_id): the callchain
#: recorded at contention_begin, cut to ``--max-stack`` entries (user ones
#: included), without its first ``--stack-skip`` entries and without lock functions.
STACK_SKIP = 3
MAX_STACK = 8
#: x86-64 and arm64 kernel addresses have the top bit set; user ones do not.
KERNEL_SPACE = 1 << 63


@dataclass
class _Row:
    values: dict[str, object]
    stack: list[str] = field(default_factory=list)
    ips: list[int] = field(default_factory=list)


def resolution(text: str) -> float:
    """Half a unit of the last printed digit of a perf duration, in ns ("3.90 ms" -> 5000)."""
    m = _DURATION.fullmatch(text.strip())
    if not m:
        raise ValueError(f"not a perf duration: {text!r}")
    decimals = len(m.group(1).split(".")[1]) if "." in m.group(1) else 0
    return UNITS[m.group(2)] * 10**-decimals / 2


def _duration_ns(number: str, unit: str) -> int:
    return round(float(number) * UNITS[unit])


def _parse_row(line: str, columns: list[str]) -> dict[str, object]:
    rest = line.strip()
    out: dict[str, object] = {}
    for i, col in enumerate(columns):
        name = HEADERS[col]
        if i == len(columns) - 1:
            out[name] = rest
            break
        if name.endswith("_ns"):
            m = _DURATION.match(rest)
            if not m:
                raise ValueError(f"expected a duration for {col!r} in {line!r}")
            out[name] = _duration_ns(m.group(1), m.group(2))
            if name == "total_ns":
                out["total_resolution_ns"] = resolution(m.group(0))
            rest = rest[m.end():].lstrip()
            continue
        token, _, rest = rest.partition(" ")
        rest = rest.lstrip()
        out[name] = int(token) if name in ("contended", "pid") else token
    return out


def parse(text: str) -> pl.DataFrame:
    """perf's contention table as a frame: one row per perf row, durations in ns.

    Columns follow perf's header (contended, total_ns, max_ns, [min_ns], avg_ns and
    type + caller_site, or pid + comm with -t), plus ``total_resolution_ns`` (how far
    the printed total may be from the true one); a caller row also gets ``caller``
    (without the offset) and, when perf printed stacks (-v), ``stack`` (name+0xoff),
    ``stack_ips`` and ``mm_caller``.
    """
    columns: list[str] | None = None
    rows: list[_Row] = []
    for line in text.splitlines():
        if line.startswith("=== output for debug"):
            break
        if columns is None:
            if line.strip().startswith("contended"):
                columns = _HEADER.findall(line)
            continue
        if not line.strip():
            continue
        frame = _FRAME.match(line)
        if frame and rows and line[0] in " \t":
            rows[-1].stack.append(frame.group(2) or frame.group(1))
            rows[-1].ips.append(int(frame.group(1), 16))
            continue
        if re.match(r"^\s*\d+\s", line):
            rows.append(_Row(_parse_row(line, columns)))
    if columns is None:
        raise UsageError("no `perf lock contention` table found in the input (is it perf's stderr?)")
    df = pl.DataFrame([r.values for r in rows]) if rows else pl.DataFrame(
        schema={HEADERS[c]: pl.Int64 if HEADERS[c].endswith("_ns") or c == "contended" else pl.String
                for c in columns})
    if "total_resolution_ns" in df.columns:
        df = df.select(pl.exclude("total_resolution_ns"), "total_resolution_ns")
    if "caller_site" in df.columns:
        df = df.with_columns(pl.col("caller_site").str.replace(r"\+0x[0-9a-f]+$", "").alias("caller"))
    if any(r.stack for r in rows):
        df = df.with_columns(
            pl.Series("stack", [r.stack for r in rows], pl.List(pl.String)),
            pl.Series("stack_ips", [r.ips for r in rows], pl.List(pl.UInt64)),
            pl.Series("mm_caller", [mm_caller(r.stack) for r in rows], pl.String),
        )
    return df


def parse_file(path: str | Path) -> pl.DataFrame:
    return parse(Path(path).read_text(errors="replace"))


def mm_caller(stack: list[str]) -> str | None:
    """mmreplay's caller rule on a perf stack (frames "name+0xoff", innermost first)."""
    names = [f.split("+", 1)[0] for f in stack if f and not f.startswith("0x")]
    for n in names:
        if not LOCK_FUNCTION.match(n):
            return n
    return names[0] if names else None


def row_key(ips: Sequence[int], is_lock: Sequence[bool]) -> tuple[int, ...]:
    """The kernel frames perf 6.1 keys a caller row by, for a stack of ``ips`` (innermost first).

    perf hashes the callchain's entries after the first :data:`STACK_SKIP`, within
    :data:`MAX_STACK`, that are not lock functions. The user entries it also hashes
    are left out (mmreplay records kernel stacks only), so this key is at most as
    fine as perf's: waits in one perf row always share it.
    """
    window = zip(ips[STACK_SKIP:MAX_STACK], is_lock[STACK_SKIP:MAX_STACK], strict=True)
    return tuple(int(ip) for ip, lock in window if ip >= KERNEL_SPACE and not lock)


def caller_pools(perf: pl.DataFrame, trace: Trace, table: str = "lock_waits") -> dict[str, str]:
    """caller -> pool: callers whose waits perf may have counted in one row.

    Two callers are pooled when a stack of one and a stack of the other have the
    same :func:`row_key` (transitively), over perf's printed ``-v`` stacks (caller
    ``mm_caller``) and the stacks of ``table`` in ``trace`` (caller as ``waits
    --by caller`` names it). Both sides judge lock functions by the trace's symbols
    and lock sections (:class:`SymbolTable`), a superset of perf's own rule. A
    pool is named by its callers joined with "+"; a caller alone is its own pool.
    """
    if "stack_ips" not in perf.columns:
        raise UsageError("pooling callers needs perf's stacks: run `perf lock contention -v`")
    symbols = SymbolTable.from_trace(trace)
    links: list[tuple[str, tuple[int, ...]]] = []

    def keys(stacks: Sequence[Sequence[int]], callers: Sequence[str | None]) -> None:
        flat = np.fromiter((ip for s in stacks for ip in s), np.uint64)
        names, _ = symbols.lookup(flat)
        lock = symbols.is_lock_function(flat, names).tolist()
        at = 0
        for stack, caller in zip(stacks, callers, strict=True):
            if caller is not None:
                links.append((caller, row_key(stack, lock[at:at + len(stack)])))
            at += len(stack)

    keys(perf["stack_ips"].to_list(), perf["mm_caller"].to_list())
    if trace.has(table) and trace.has("stacks"):
        used = trace.scan(table).select(pl.col("stack_id").unique())
        ours = trace.scan("stacks").join(used, on="stack_id").join(stack_callers(trace), on="stack_id").collect()
        keys([[int(ip) for ip in s if ip is not None] for s in ours["ips"].to_list()], ours["caller"].to_list())

    parent: dict[str, str] = {}

    def root(c: str) -> str:
        while parent.setdefault(c, c) != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    first: dict[tuple[int, ...], str] = {}
    for caller, key in links:
        parent[root(caller)] = root(first.setdefault(key, caller))
    members: dict[str, list[str]] = {}
    for c in parent:
        members.setdefault(root(c), []).append(c)
    return {c: "+".join(sorted(group)) for group in members.values() for c in group}


def pooled(df: pl.DataFrame, pools: Mapping[str, str], column: str = "caller") -> pl.DataFrame:
    """``df`` with ``column`` replaced by each caller's pool (callers not in ``pools`` stay)."""
    return df.with_columns(pl.col(column).replace(dict(pools)))


def compare(perf: pl.DataFrame, waits: pl.DataFrame, key: str = "caller",
            pools: Mapping[str, str] | None = None) -> pl.DataFrame:
    """Join perf's rows (summed per ``key``) with a ``waits`` query result grouped by the same key.

    ``key`` is "caller" (perf's caller, without offset), or "mm_caller" (mmreplay's
    rule applied to perf's -v stacks; compare with ``waits --by caller``).
    ``pools`` (from :func:`caller_pools`) sums callers that perf cannot tell apart.
    Returns count and total per side and their differences.
    """
    w = waits.select("caller", "count", "total_ns", "max_ns")
    if pools is not None:
        perf = pooled(perf, pools, key)
        w = pooled(w, pools).group_by("caller").agg(pl.col("count", "total_ns").sum(), pl.col("max_ns").max())
    p = perf.group_by(key).agg(
        pl.col("contended").sum().alias("perf_count"),
        pl.col("total_ns").sum().alias("perf_total_ns"),
        pl.col("total_resolution_ns").sum().alias("perf_total_resolution_ns"),
        pl.col("max_ns").max().alias("perf_max_ns"),
    ).rename({key: "caller"})
    w = w.select("caller", pl.col("count").alias("mm_count"), pl.col("total_ns").alias("mm_total_ns"),
                 pl.col("max_ns").alias("mm_max_ns"))
    return p.join(w, on="caller", how="full", coalesce=True).with_columns(
        (pl.col("mm_count") - pl.col("perf_count")).alias("count_diff"),
        (pl.col("mm_total_ns") - pl.col("perf_total_ns")).alias("total_diff_ns"),
    ).sort("perf_total_ns", descending=True, nulls_last=True)
