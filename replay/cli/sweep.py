"""`mmreplay sweep TRACE...`: replay a grid of traces x CPU counts x task scales x policy sets x seeds.

Writes OUT/results.parquet (one row per cell: its coordinates, status, error
and every metric), OUT/summary.parquet (mean and sd over seeds per metric,
set and grid point) and OUT/summary.txt (the headline figures, and the
difference of each set from the first with its 95% interval), plus
OUT/sweep.json (the command and grid). Cells run on local processes, or on a
Dask cluster with --scheduler (replay/sweep.py); docs/SCALING.md.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

from replay.errors import UsageError

#: what mmreplay sweep writes into OUT; --force replaces a directory holding only these
OUTPUT_FILES = ("sweep.json", "results.parquet", "summary.parquet", "summary.txt")
HEADLINE = ("makespan_ns", "probe_latency_p99_ns", "spin_cpu_ns", "context_switches")

EXAMPLES = """\
examples:
  mmreplay sweep mytrace othertrace -o sweep1 --compare 2.6.39 3.0 current --cpus 8,24 --seeds 5
  mmreplay sweep mytrace -o sweep2 --scale-tasks 1,4,12 --cpus 24 --jobs 2
  mmreplay sweep /fleet/traces/a /fleet/traces/b -o sweep3 --scheduler tcp://sched:8786
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    from replay.cli import ExamplesFormatter

    p = sub.add_parser(
        "sweep", epilog=EXAMPLES, formatter_class=ExamplesFormatter,
        help="replay a grid of traces x CPUs x task scales x policy sets x seeds into one results table",
        description="Run every cell of the grid (one replay each), locally on --jobs processes or on a Dask "
        "cluster (--scheduler), and write OUT/results.parquet (a row per cell), OUT/summary.parquet and "
        "OUT/summary.txt. A cell that fails is reported with its coordinates; the others are kept.",
    )
    p.add_argument("traces", nargs="+", metavar="TRACE", help="trace directories")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="new (or empty) output directory")
    p.add_argument("--compare", nargs="+", metavar="SET", default=["2.6.39", "current"],
                   help="policy sets (default: 2.6.39 current); the first is the base of the differences")
    p.add_argument("--cpus", default="recorded", metavar="N[,N...]",
                   help="simulated CPU counts (default: each trace's recorded host)")
    p.add_argument("--scale-tasks", default="1", metavar="K[,K...]", help="task scales (default 1)")
    p.add_argument("--seeds", default="5", metavar="S", help="seeds per cell (default 5)")
    p.add_argument("--preempt", metavar="MODEL", help="none, voluntary, full (default: each trace's recorded one)")
    p.add_argument("--mode", default="closed", metavar="closed|open", help="replay mode (default closed)")
    p.add_argument("--perturb", default="0", metavar="CV", help="service-time noise (as replay --perturb)")
    p.add_argument("--costs", metavar="FILE", help="cost constants (TOML or JSON)")
    p.add_argument("--engine", default="auto", metavar="auto|c|python", help="simulator implementation")
    p.add_argument("--jobs", metavar="N", help="local worker processes (default: this machine's CPUs)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run the cells on this Dask distributed scheduler (tcp://host:8786) instead")
    p.add_argument("--retries", default="1", metavar="R",
                   help="times a cell whose worker died is run again before it is reported failed (default 1)")
    p.add_argument("--force", action="store_true", help="replace the output of an earlier sweep in OUT")
    return p


def _list(name: str, text: str, parse: Any, ok: Any, what: str) -> list:
    out = []
    for item in text.split(","):
        try:
            value = parse(item.strip())
        except ValueError:
            raise UsageError(f"{name} needs {what}, not {item!r}") from None
        if not ok(value):
            raise UsageError(f"{name}: {item!r} is not {what}")
        if value in out:
            raise UsageError(f"{name}: {item.strip()} given twice")
        out.append(value)
    return out


def options(args: argparse.Namespace) -> tuple[list, Any, int, int]:
    """(cells, settings, jobs, retries) from the command line; every nonsense value is a UsageError."""
    from replay.cli import options as options_
    from replay.cli.replay import _int, check_options
    from replay.sweep import SweepSettings, grid

    cpus: list = [None] if args.cpus == "recorded" else _list(
        "--cpus", args.cpus, int, lambda v: 1 <= v <= options_.MAX_CPUS, f"an integer from 1 to {options_.MAX_CPUS}")
    scales = _list("--scale-tasks", args.scale_tasks, float, lambda v: 0 < v <= options_.MAX_SCALE,
                   f"a number above 0 and at most {options_.MAX_SCALE:g}")
    retries = _int("--retries", args.retries, 0, 100)
    jobs = _int("--jobs", args.jobs, 1, options_.MAX_JOBS) if args.jobs is not None else len(os.sched_getaffinity(0))
    # the options a sweep shares with replay, checked by replay's rules (one grid point stands in)
    one = check_options(argparse.Namespace(
        cpus=None, seeds=args.seeds, jobs="1", scale_tasks="1", perturb=args.perturb, preempt=args.preempt,
        mode=args.mode, compare=args.compare, policy=[], engine=args.engine))
    seeds, names, perturb = one.seeds, list(one.sets), one.perturb
    options_.costs(args.costs)  # a bad cost file is one error now, not one per cell
    traces = [str(t) for t in args.traces]
    if len(set(traces)) != len(traces):
        raise UsageError("a trace is given twice")
    settings = SweepSettings(sets=tuple(names), preempt=args.preempt, mode=args.mode, perturb=perturb,
                             engine=args.engine, costs_file=os.path.abspath(args.costs) if args.costs else None)
    return grid(traces, cpus, scales, names, seeds), settings, jobs, retries


# -- the output directory -------------------------------------------------------------------------


def prepare_output(path: Path, force: bool, inputs: list[str]) -> Any:
    """The output directory, opened by replay/trace/safeio.py's rules (created by us, or an existing one
    of the invoking user's that is empty, or with --force holds only an earlier sweep's files); never a
    trace of this sweep or a directory holding one."""
    from replay.trace.safeio import open_output_dir

    real = path.resolve()
    for t in inputs:
        rt = Path(t).resolve()
        if rt == real or real in rt.parents:
            raise UsageError(f"{path}: is the trace {t} or holds it; choose another output directory")

    def earlier_sweep(fd: int, entries: list[str]) -> str | None:
        for name in entries:
            if name.removesuffix(".tmp") not in OUTPUT_FILES:
                return f"holds {name}, which mmreplay sweep did not write"
            if not stat.S_ISREG(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                return f"holds {name}, which is not a regular file"
        return None if "sweep.json" in entries else "holds no sweep.json, so it is not a sweep's output"

    return open_output_dir(path, force=force, replaceable=earlier_sweep)


def _create(out: Any, name: str) -> Any:
    """A new file ``name`` in the output directory (never through a link, never over a file)."""
    return os.fdopen(out.create(name), "wb")


# -- summary --------------------------------------------------------------------------------------


def summarize_rows(rows: list[dict[str, Any]], sets: tuple[str, ...]) -> tuple[Any, list[str]]:
    """summary.parquet (mean, sd, seeds per metric x set x grid point) and summary.txt's lines."""
    import pyarrow as pa

    from replay.compare import compare, summarize

    points: dict[tuple, dict[str, dict[int, dict[str, float]]]] = {}
    for r in rows:
        if r["status"] == "ok":
            point = (r["trace"], r.get("cpus_run"), r["scale_tasks"])
            points.setdefault(point, {}).setdefault(r["policy_set"], {})[r["seed"]] = r["metrics"]
    cols: dict[str, list] = {k: [] for k in ("trace", "cpus", "scale_tasks", "metric", "policy_set", "mean", "sd",
                                             "seeds")}
    lines: list[str] = []
    for (trace, cpus, scale), by_set in points.items():
        lines.append(f"{trace}  cpus={cpus}  scale-tasks={scale:g}")
        for s in summarize(by_set):
            for k, v in zip(cols, (trace, cpus, scale, str(s.key), s.policy_set, s.mean, s.sd, s.seeds),
                            strict=True):
                cols[k].append(v)
        means = {(str(s.key), s.policy_set): (s.mean, s.sd, s.seeds) for s in summarize(by_set)}
        present = [s for s in sets if s in by_set]
        for metric in HEADLINE:
            cells = [f"{p}: {means[(metric, p)][0]:,.0f} ± {means[(metric, p)][1]:,.0f}"
                     for p in present if (metric, p) in means]
            if cells:
                lines.append(f"  {metric:<22} " + "   ".join(cells))
        if len(present) > 1:
            for c in compare(by_set, base=present[0], others=present[1:]):
                if str(c.key) in HEADLINE:
                    ci = f"[{c.ci_low:,.0f}, {c.ci_high:,.0f}]" if c.ci_low is not None else "(one seed: no interval)"
                    lines.append(f"  {c.other} - {c.base}: {c.key} {c.diff_mean:+,.0f} {ci} over {c.seeds} seeds")
        lines.append("")
    table = pa.table({
        "trace": pa.array(cols["trace"], pa.string()), "cpus": pa.array(cols["cpus"], pa.int32()),
        "scale_tasks": pa.array(cols["scale_tasks"], pa.float64()), "metric": pa.array(cols["metric"], pa.string()),
        "policy_set": pa.array(cols["policy_set"], pa.string()), "mean": pa.array(cols["mean"], pa.float64()),
        "sd": pa.array(cols["sd"], pa.float64()), "seeds": pa.array(cols["seeds"], pa.int32()),
    })
    return table, lines


def run(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from replay.sweep import results_table, run_dask, run_local

    cells, settings, jobs, retries = options(args)
    out = Path(args.output)
    outdir = prepare_output(out, args.force, [str(t) for t in args.traces])
    rows: dict[int, dict[str, Any]] = {}
    t0 = time.monotonic()
    last = [t0]

    def on_row(i: int, row: dict[str, Any]) -> None:
        rows[i] = row
        if row["status"] != "ok":
            c = cells[i]
            print(f"mmreplay sweep: cell failed: {c.trace} cpus={c.cpus or 'recorded'} scale-tasks={c.scale_tasks:g} "
                  f"{c.policy_set} seed {c.seed}: {row['error']}", file=sys.stderr)
        now = time.monotonic()
        if now - last[0] >= 10 or len(rows) == len(cells):
            last[0] = now
            print(f"mmreplay sweep: {len(rows)}/{len(cells)} cells done ({now - t0:.0f} s)", file=sys.stderr)

    meta = {"command": ["mmreplay", *sys.argv[1:]], "cells": len(cells), "traces": [str(t) for t in args.traces],
            "sets": list(settings.sets), "scheduler": args.scheduler, "jobs": None if args.scheduler else jobs}
    with _create(outdir, "sweep.json") as f:  # first: marks the directory as a sweep's, for --force
        f.write(json.dumps(meta, indent=2).encode() + b"\n")
    interrupted = False
    try:
        if args.scheduler:
            run_dask(cells, settings, args.scheduler, retries, on_row)
        else:
            run_local(cells, settings, jobs, retries, on_row)
    except KeyboardInterrupt:
        interrupted = True
    finally:  # whatever happened, the finished cells are written
        ordered = [rows[i] for i in sorted(rows)]
        meta.update(finished=len(rows), failed=sum(r["status"] != "ok" for r in ordered),
                    wall_s=round(time.monotonic() - t0, 3), interrupted=interrupted)
        with _create(outdir, "results.parquet") as f:
            pq.write_table(results_table(ordered), f)
        summary, lines = summarize_rows(ordered, settings.sets)
        with _create(outdir, "summary.parquet") as f:
            pq.write_table(summary, f)
        head = [f"{len(rows)}/{len(cells)} cells finished, {meta['failed']} failed, {meta['wall_s']:.1f} s"
                + (" (interrupted)" if interrupted else ""), ""]
        with _create(outdir, "summary.txt") as f:
            f.write("\n".join(head + lines).encode())
        outdir.replace("sweep.json", json.dumps(meta, indent=2).encode() + b"\n")
        outdir.close()
    print("\n".join(head + lines))
    print(f"results: {out / 'results.parquet'}")
    if interrupted:
        return 130
    return 1 if meta["failed"] else 0
