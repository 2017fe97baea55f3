"""`mmreplay record -o DIR [...] [-- COMMAND ARGS...]`: live tier-1 recording with bcc."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from replay.errors import UsageError


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "record",
        help="record mm locks, TLB flushes, page frees, faults and scheduling live (eBPF tracepoints, root)",
        description="Record until --duration ends, the command exits, or SIGINT/SIGTERM; the trace is always "
        "finalized. Which tasks: those matching --pid/--tid/--comm if given (any of them); else the command "
        "and every task it forks; else (or with --system-wide) every task except the recorder.",
    )
    p.add_argument("-o", "--output", required=True, type=Path, help="trace directory to create")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--probes", metavar="LIST",
                   help="comma-separated probe families (default: all tier-1); see 'mmreplay doctor'")
    p.add_argument("--pid", type=_ints, action="extend", default=[], metavar="PID[,PID]",
                   help="record these processes (all their threads, and children they fork)")
    p.add_argument("--tid", type=_ints, action="extend", default=[], metavar="TID[,TID]",
                   help="record these threads (and tasks they fork)")
    p.add_argument("--comm", help="record tasks with this name (exact, first 15 characters)")
    p.add_argument("--system-wide", action="store_true",
                   help="with a command or --workload and no filter: record every task, not only the command's")
    p.add_argument("--workload", metavar="NAME", help="run a built-in workload (see tracer.workloads) as the command")
    p.add_argument("--tasks", type=int, default=4, metavar="N", help="tasks of the --workload (default 4)")
    p.add_argument("--force", action="store_true", help="overwrite an existing trace directory")
    p.add_argument("--compression", choices=("lz4", "zstd"),
                   help="compress the tables (default: none, so that queries memory-map them)")
    p.add_argument("--progress", action="store_true", help="show the progress line even if stderr is not a tty")
    p.add_argument("--vmlinux", type=Path, help="vmlinux with DWARF: adds file:line to the symbols table")
    p.add_argument("--page-free-gap-us", type=float, default=10.0, metavar="US",
                   help="a page-free burst ends after this gap without a free (default 10)")
    p.add_argument("--no-tier2-check", action="store_true",
                   help="do not detect and record tier-2 probes (fentry/kprobes); detection compiles for "
                   "seconds on the first recording after boot")
    p.add_argument("--probe-cost", action="store_true",
                   help="time every probe (kernel BPF run-time statistics, on system-wide while recording): "
                   "runs and run_ns per tracepoint in the manifest's extra.probe_cost")
    p.add_argument("--attach", choices=("auto", "raw", "classic"), default="auto",
                   help="tier-1 probes on raw tracepoints where the kernel's BTF allows (auto, the default; raw: "
                   "fail otherwise) or on classic tracepoints (costlier); doctor says which")
    p.add_argument("--no-stacks", action="store_true",
                   help="no kernel stack walk per lock wait (cheaper; lock waits are then classed 'other')")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...: run and record this command")
    return p


def _workload_argv(name: str, tasks: int, seconds: float) -> list[str]:
    try:
        from tracer import workloads
    except ImportError:
        raise UsageError("--workload: the built-in workloads (tracer.workloads) are not installed") from None
    if name not in workloads.names():
        raise UsageError(f"--workload {name!r}: unknown (known: {', '.join(workloads.names())})")
    return list(workloads.command(name, tasks, seconds))


def run(args: argparse.Namespace) -> int:
    from tracer.recorder import RecordOptions, record

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if args.workload:
        if command:
            raise UsageError("give either --workload or a command after --, not both")
        if args.tasks < 1:
            raise UsageError("--tasks must be at least 1")
        command = _workload_argv(args.workload, args.tasks, args.duration or 5.0)
    if args.page_free_gap_us <= 0:
        raise UsageError("--page-free-gap-us must be positive")
    chown = None
    if os.geteuid() == 0 and os.environ.get("SUDO_UID", "").isdigit() and os.environ.get("SUDO_GID", "").isdigit():
        chown = (int(os.environ["SUDO_UID"]), int(os.environ["SUDO_GID"]))
    opts = RecordOptions(
        output=args.output,
        duration=args.duration,
        probes=args.probes.split(",") if args.probes else None,
        pids=args.pid,
        tids=args.tid,
        comm=args.comm,
        command=command,
        force=args.force,
        compression=args.compression,
        progress=args.progress or sys.stderr.isatty(),
        system_wide=args.system_wide,
        pf_gap_ns=int(args.page_free_gap_us * 1000),
        vmlinux=args.vmlinux,
        chown=chown,
        check_tier2=not args.no_tier2_check,
        probe_cost=args.probe_cost,
        attach=args.attach,
        stacks=not args.no_stacks,
    )
    r = record(opts)
    print(f"recorded {r.duration_s:.2f} s into {r.path}: {r.events:,} rows from BPF, {r.lost} lost "
          f"(drain {r.drain_events_per_s:,.0f} events/s)", file=sys.stderr)
    for p in r.probes:
        if p.status != "recorded":
            print(f"  {p.name}: {p.status}: {p.reason}", file=sys.stderr)
    for name, rows in r.rows.items():
        print(f"  {name:<20} {rows:>12,}", file=sys.stderr)
    if r.command_status is not None and r.command_status != 0:
        print(f"mmreplay: the command exited with status {r.command_status}", file=sys.stderr)
    return 0
