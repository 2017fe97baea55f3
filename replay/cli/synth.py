"""`mmreplay synth NAME -o DIR`: write a synthetic trace of a workload pattern."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from replay.cli import ExamplesFormatter
from replay.errors import UsageError

FAULT_LOCKS = ("vma", "mmap_lock")
PREEMPT_MODELS = ("none", "voluntary", "full")


EXAMPLES = """\
examples:
  mmreplay synth --list
  mmreplay synth mmap-file -o synth48 --tasks 48 --cpus 24 --seconds 0.05
  mmreplay synth mmap-file -o fitted --tasks 12 --cpus 24 --fit mytrace
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "synth", epilog=EXAMPLES, formatter_class=ExamplesFormatter,
        help="synthesize a trace of a workload pattern (will-it-scale, mmap-file, mmap-merge, take-all-locks, ...)",
        description="Generate the trace a tier-2 recording of the workload would give, uncontended "
                    "(every wait 0); the replayer adds contention. Numbers are strings here so that every "
                    "bad value is reported as one line.",
    )
    p.add_argument("name", nargs="?", help="pattern name (see --list)")
    p.add_argument("-o", "--output", help="trace directory to write")
    p.add_argument("--list", action="store_true", help="list the patterns and exit")
    p.add_argument("--tasks", default="4", help="tasks (processes or threads) (default 4)")
    p.add_argument("--cpus", default=None, help="CPUs of the modelled host, host.cpus in the manifest (default: tasks)")
    p.add_argument("--seconds", default="1.0", help="length of the trace (default 1.0)")
    p.add_argument("--seed", default="0", help="random seed; the same seed gives identical files (default 0)")
    p.add_argument("--fit", metavar="TRACE", action="append",
                   help="fit hold, syscall and think-time distributions from a recorded trace; repeat it with "
                   "take-all-locks recordings at other -n to fit mm_take_all_locks' cost per nested lock "
                   "(the first trace fits everything else)")
    p.add_argument("--fit-kind", default="lognormal", help="what --fit fits: 'lognormal' or 'empirical' "
                   "(the samples' quantiles, for multi-modal holds) (default lognormal)")
    p.add_argument("--region", default=None, help="bytes mapped per iteration by page_fault*, mmap*, tlb_flush*, "
                   "fork-exit (default: the workload's, 128 MiB for most)")
    p.add_argument("--files", default="256", help="take-all-locks: file VMAs (and as many anon VMAs) (default 256)")
    p.add_argument("--fault-lock", default="vma", help="what faults and MADV_DONTNEED lock: 'vma' (per-VMA lock, as "
                   "on Linux 6.18) or 'mmap_lock' (mmap_lock read, kernels before 6.4) (default vma)")
    p.add_argument("--preempt", default="voluntary", help="preemption model written to the manifest "
                   "(none, voluntary, full) (default voluntary)")
    p.add_argument("--force", action="store_true", help="overwrite an existing trace directory")
    return p


def _int(name: str, text: str, lo: int, hi: int) -> int:
    try:
        v = int(text, 0)
    except (TypeError, ValueError):
        raise UsageError(f"--{name} must be an integer, not {text!r}") from None
    if not lo <= v <= hi:
        raise UsageError(f"--{name} must be from {lo} to {hi}, not {v}")
    return v


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise UsageError(f"--seconds must be a number, not {text!r}") from None
    if not (math.isfinite(v) and 0 < v <= 3600):
        raise UsageError(f"--seconds must be more than 0 and at most 3600, not {text}")
    return v


def run(args: argparse.Namespace) -> int:
    from replay.synth.patterns import PAGE, PATTERNS

    if args.list:
        for name in sorted(PATTERNS):
            print(f"{name:<24} {PATTERNS[name].description}")
        return 0
    if not args.name:
        raise UsageError("synth needs a pattern NAME (see 'mmreplay synth --list')")
    if args.name not in PATTERNS:
        raise UsageError(f"unknown pattern {args.name!r}; known: {', '.join(sorted(PATTERNS))}")
    if not args.output:
        raise UsageError("synth needs -o DIR, the trace directory to write")
    tasks = _int("tasks", args.tasks, 1, 4096)
    cpus = _int("cpus", args.cpus, 1, 4096) if args.cpus is not None else tasks
    seconds = _seconds(args.seconds)
    seed = _int("seed", args.seed, 0, 2**63 - 1)
    files = _int("files", args.files, 1, 8192)
    region_pages = 0
    if args.region is not None:
        region = _int("region", args.region, PAGE, 1 << 40)
        if region % PAGE:
            raise UsageError(f"--region must be a multiple of the page size ({PAGE}), not {region}")
        region_pages = region // PAGE
    if args.fault_lock not in FAULT_LOCKS:
        raise UsageError(f"--fault-lock must be one of {', '.join(FAULT_LOCKS)}, not {args.fault_lock!r}")
    from replay.synth.fit import FIT_KINDS

    if args.fit_kind not in FIT_KINDS:
        raise UsageError(f"--fit-kind must be one of {', '.join(FIT_KINDS)}, not {args.fit_kind!r}")
    if args.fit_kind != "lognormal" and not args.fit:
        raise UsageError("--fit-kind needs --fit TRACE")
    if args.preempt not in PREEMPT_MODELS:
        raise UsageError(f"--preempt must be one of {', '.join(PREEMPT_MODELS)}, not {args.preempt!r}")

    from replay.synth.fit import fit_model
    from replay.synth.model import Model
    from replay.synth.synthesize import synthesize
    from replay.trace.reader import Trace

    model = Model()
    fit_lines: list[str] = []
    if args.fit:
        first, *more = [Trace.open(path) for path in args.fit]
        model, report = fit_model(first, kind=args.fit_kind, more=tuple(more))
        fit_lines = report.lines()
    result = synthesize(
        args.name, args.output, tasks=tasks, cpus=cpus, seconds=seconds, seed=seed, model=model,
        region_pages=region_pages, fault_lock=args.fault_lock, files=files, preempt_model=args.preempt,
        force=args.force, command=["mmreplay", "synth", *sys.argv[2:]] if sys.argv[1:2] == ["synth"] else [],
    )
    total = sum(result.iterations.values())
    print(f"wrote {args.output}: {args.name}, {tasks} tasks on {cpus} CPUs, {seconds} s, seed {seed}, "
          f"{total} iterations")
    print("  " + ", ".join(f"{name} {n}" for name, n in result.rows.items()))
    for line in fit_lines:
        print(f"  {line}")
    return 0
