"""Export a trace or replay results in the legacy Chrome JSON trace format (`mmreplay export --format json`).

One ``"X"`` (complete) event per interval row — lock holds and waits, system
calls, mmu_gather windows, page-free bursts, preempt-off sections of replay
results — and one ``"i"`` (instant, thread scope) per page fault, TLB flush
and IPI sent, on its pid/tid; ``"M"`` metadata events name processes and threads from
the ``tasks`` table. Times are microseconds (floats, ns precision kept).
Replay results have no processes: each (policy set, seed) becomes one
process, named so, holding its simulated threads and a "probe" thread (tid -2)
with the injected probe's waits (``sim_probe``).

Events are produced as polars frames and serialized with ``write_ndjson``, so
exporting millions of rows stays fast; the file is still a single JSON object.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

import polars as pl

from replay.analytics.source import Source
from replay.trace import safeio


@dataclass(frozen=True)
class Family:
    """How one table becomes events."""

    table: str  # recorded name (the results twin is used for results)
    cat: str
    ph: str  # "X" or "i"
    name: pl.Expr
    args: tuple[str, ...]


def _hex(col: str) -> pl.Expr:
    return pl.col(col).map_elements(hex, return_dtype=pl.String).alias(col)


def _text(col: str) -> pl.Expr:
    return pl.col(col).cast(pl.String)


FAMILIES = (
    Family("lock_holds", "lock_hold", "X", pl.concat_str([_text("lock_class"), pl.lit(" hold "), _text("mode")],
                                                          ignore_nulls=True), ("lock_addr", "wait", "depth")),
    Family("lock_waits", "lock_wait", "X", pl.concat_str([_text("lock_class"), pl.lit(" wait")]),
           ("lock_addr", "flags", "mode")),
    Family("syscalls", "syscall", "X", _text("name"), ("arg0", "arg1", "ret", "op")),
    Family("gathers", "gather", "X", pl.when(pl.col("fullmm")).then(pl.lit("mmu_gather (fullmm)"))
           .otherwise(pl.lit("mmu_gather")), ("pages", "flushes", "mm")),
    Family("page_free_batches", "page_free", "X", pl.lit("page free burst"), ("pages", "batched")),
    Family("preempt_off", "preempt_off", "X",
           pl.concat_str([pl.lit("preempt off "), _text("cause")], ignore_nulls=True), ("cause", "lock_class")),
    Family("sched_latency", "probe", "X", pl.concat_str([pl.lit("probe wait "), _text("cause")], ignore_nulls=True),
           ("cause", "cpu")),
    Family("page_faults", "page_fault", "i", pl.lit("page fault"), ("address", "ip", "error_code")),
    Family("tlb_flushes", "tlb_flush", "i", pl.concat_str([pl.lit("tlb flush "), _text("reason")]), ("pages",)),
    Family("ipis", "ipi", "i", pl.lit("IPI sent"), ("target_cpu", "ncpus", "callsite", "callback")),
)
_ADDRESSES = {"lock_addr", "mm", "address", "ip", "arg0", "arg1", "callsite", "callback"}
_LABELS = {"mode", "reason", "op", "cause", "lock_class", "kind"}
PROBE_TID = -2  # the simulator's own id for its probe task


def _process_ids(src: Source) -> pl.DataFrame | None:
    """For results: (policy_set, seed) -> a synthetic pid and its name."""
    if not src.is_results:
        return None
    runs = src.runs()
    return runs.with_columns(
        pl.int_range(1, runs.height + 1, dtype=pl.Int32).alias("pid"),
        pl.format("{} seed {}", "policy_set", "seed").alias("pname"),
    )


def _events(src: Source, fam: Family, runs: pl.DataFrame | None) -> pl.LazyFrame | None:
    table = fam.table
    if table in ("preempt_off", "sched_latency") and not src.is_results:
        return None  # recorded traces have no such events (the queries derive them from other tables)
    if not src.has(table):
        return None
    lf = src.scan(table, "export")
    schema = lf.collect_schema()
    if fam.cat == "syscall" and "name" not in schema:  # sim_ops names it kind
        for alt in ("kind", "op"):
            if alt in schema:
                lf = lf.rename({alt: "name"})
                break
        schema = lf.collect_schema()
    if fam.cat == "probe":  # the probe is no workload thread: one track of its own per run
        if "latency" in schema:
            lf = lf.rename({"latency": "dur"})
        lf = lf.with_columns(pl.lit(PROBE_TID).alias("tid"))
        schema = lf.collect_schema()
    if runs is not None:
        if "policy_set" not in schema:
            return None
        lf = lf.with_columns(pl.col("policy_set").cast(pl.String)).join(
            runs.lazy().select("policy_set", "seed", "pid"), on=["policy_set", "seed"], how="left")
    args = [
        _hex(a) if a in _ADDRESSES and schema[a].is_integer() else _text(a) if a in _LABELS
        else pl.col(a)
        for a in fam.args if a in schema
    ]
    if "incomplete" in schema:
        args.append(pl.col("incomplete"))
    cols = [
        fam.name.alias("name"),
        pl.lit(fam.cat).alias("cat"),
        pl.lit(fam.ph).alias("ph"),
        (pl.col("ts") / 1000.0).alias("ts"),
    ]
    if fam.ph == "X":
        cols.append((pl.col("dur") / 1000.0).alias("dur"))
    else:
        cols.append(pl.lit("t").alias("s"))
    cols += [pl.col("pid").cast(pl.Int64), pl.col("tid").cast(pl.Int64)]
    if args:
        cols.append(pl.struct(args).alias("args"))
    return lf.select(cols)


def _metadata(src: Source, runs: pl.DataFrame | None) -> list[dict]:
    out: list[dict] = []
    if runs is not None:
        for r in runs.iter_rows(named=True):
            out.append({"ph": "M", "name": "process_name", "pid": r["pid"], "tid": 0, "args": {"name": r["pname"]}})
            if src.has("sched_latency"):
                out.append({"ph": "M", "name": "thread_name", "pid": r["pid"], "tid": PROBE_TID,
                            "args": {"name": "probe"}})
        return out
    if not src.trace.has("tasks"):
        return out
    tasks = src.trace.scan("tasks").unique(subset=["tid"], keep="first", maintain_order=True).collect()
    leaders = {r["pid"]: r["comm"] for r in tasks.iter_rows(named=True) if r["pid"] == r["tid"]}
    for r in tasks.iter_rows(named=True):
        leaders.setdefault(r["pid"], r["comm"])
    for pid, comm in sorted(leaders.items()):
        out.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": comm}})
    for r in tasks.iter_rows(named=True):
        out.append({"ph": "M", "name": "thread_name", "pid": r["pid"], "tid": r["tid"], "args": {"name": r["comm"]}})
    return out


def _ours(head: bytes) -> bool:
    """Whether a file's first bytes are an export that mmreplay wrote."""
    return head.startswith(b'{"displayTimeUnit": "ns", "otherData": {"source": ')


def _ndjson_lines(lf: pl.LazyFrame) -> Iterator[str]:
    buf = io.BytesIO()
    lf.collect().write_ndjson(buf)
    text = buf.getvalue().decode()
    yield from (line for line in text.split("\n") if line)


def export(src: Source, out: str | os.PathLike[str], *, force: bool = False) -> dict[str, int]:
    """Write the Chrome JSON trace to ``out``; returns the number of events per category (and "metadata").

    Written under replay.trace.safeio's rules: never through a link, an existing file replaced only with
    ``force`` and only if it is an export of mmreplay's."""
    runs = _process_ids(src)
    counts: dict[str, int] = {}
    meta = _metadata(src, runs)
    counts["metadata"] = len(meta)
    with safeio.replacing(out, force=force, ours=_ours) as f:
        f.write('{"displayTimeUnit": "ns", "otherData": ')
        f.write(json.dumps({"source": src.path, "kind": src.trace.manifest.kind,
                            "kernel": src.trace.manifest.host.kernel_release}))
        f.write(', "traceEvents": [\n')
        first = True
        for event in (json.dumps(m) for m in meta):
            f.write(event if first else ",\n" + event)
            first = False
        for fam in FAMILIES:
            lf = _events(src, fam, runs)
            if lf is None:
                continue
            n = 0
            for line in _ndjson_lines(lf):
                f.write(line if first else ",\n" + line)
                first = False
                n += 1
            counts[fam.cat] = n
        f.write("\n]}\n")
    return counts
