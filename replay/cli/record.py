"""`mmreplay record -o DIR [...] [-- COMMAND ARGS...]`: live tier-1 recording with bcc."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from replay.cli.options import MAX_SECONDS, MAX_TASKS, PID_MAX, int_list, integer, number, parse_size
from replay.errors import UsageError

EXAMPLES = """\
examples:
  sudo mmreplay record -o mytrace -- ./my-benchmark --args
  sudo mmreplay record -o mytrace -d 10 -p 1234
  sudo mmreplay record -o mytrace --workload mmap-file --tasks 4 -d 2 --probes mmap_lock,lock_contention,sched_switch
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    from replay.cli import ExamplesFormatter
    from tracer.programs import FAMILIES_BY_NAME

    p = sub.add_parser(
        "record", epilog=EXAMPLES, formatter_class=ExamplesFormatter,
        help="record mm locks, TLB flushes, page frees, faults and scheduling live (eBPF tracepoints, root)",
        description="Record until --duration ends, the command exits, or SIGINT/SIGTERM; the trace is always "
        "finalized. Which tasks: those matching --pid/--tid/--comm if given (any of them); else the command "
        "and every task it forks; else (or with --system-wide) every task except the recorder.",
    )
    p.add_argument("-o", "--output", required=True, type=Path, help="trace directory to create")
    p.add_argument("-d", "--duration", type=number(0, MAX_SECONDS, lo_open=True), metavar="S",
                   help="stop after S seconds")
    p.add_argument("--probes", metavar="LIST",
                   help="comma-separated probe families (default: all tier-1): "
                   + ", ".join(FAMILIES_BY_NAME))
    p.add_argument("-p", "--pid", type=int_list(1, PID_MAX), action="extend", default=[],
                   metavar="PID[,PID]",
                   help="record these processes (all their threads, and children they fork)")
    p.add_argument("-t", "--tid", type=int_list(1, PID_MAX), action="extend", default=[],
                   metavar="TID[,TID]",
                   help="record these threads (and tasks they fork)")
    p.add_argument("--comm", help="record tasks with this name (exact, first 15 characters)")
    p.add_argument("--system-wide", action="store_true",
                   help="with a command or --workload and no filter: record every task, not only the command's")
    p.add_argument("--workload", metavar="NAME", help="run a built-in workload (see tracer.workloads) as the command")
    p.add_argument("--tasks", type=integer(1, MAX_TASKS), default=4, metavar="N",
                   help="tasks of the --workload (default 4)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing trace directory that holds an mmreplay trace and nothing else")
    p.add_argument("--compression", choices=("lz4", "zstd"),
                   help="compress the tables (default: none, so that queries memory-map them)")
    p.add_argument("--progress", action="store_true", help="show the progress line even if stderr is not a tty")
    p.add_argument("--vmlinux", type=Path, help="vmlinux with DWARF: adds file:line to the symbols table")
    p.add_argument("--page-free-gap-us", type=number(0, 1e9, lo_open=True), default=10.0, metavar="US",
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
    p.add_argument("-m", "--buffer-size", default="8M", metavar="SIZE",
                   help="ring buffer between the probes and the reader, a power of two from 1M to 1G (default "
                   "8M: ~0.5 s of a contended mmap loop's events); raise it when the recording reports events "
                   "the ring buffer refused (a reader starved of CPU). The reader maps it twice: its RSS grows "
                   "by twice the size")
    p.add_argument("--no-stacks", action="store_true",
                   help="no kernel stack walk per lock wait (cheaper; lock waits are then classed 'other')")
    p.add_argument("--decode", choices=("idle", "live"), default="idle",
                   help="when the recorded events are decoded into the tables: idle (the default) keeps them in a "
                   "spill file in the trace directory and decodes them while the host's CPUs have time to spare, "
                   "the rest at stop, so a busy workload keeps its CPUs (a recorder killed by SIGKILL loses what "
                   "was not decoded); live decodes them as they come (costs the workload CPU on a busy host; "
                   "killed, every chunk written stays for 'mmreplay repair')")
    p.add_argument("--no-page-free-recovery", action="store_true",
                   help="page_free's program alone on kmem:mm_page_free, without the two programs that record the "
                   "page frees the kernel skips while it runs (softirq frees nested in it): ~3%% cheaper per "
                   "page freed, and those skipped frees are then counted as lost (docs/RECORDING.md)")
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
    rb_pages = buffer_pages(args.buffer_size)
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
        check_tier2=not args.no_tier2_check,
        probe_cost=args.probe_cost,
        attach=args.attach,
        stacks=not args.no_stacks,
        rb_pages=rb_pages,
        decode=args.decode,
        pf_recover=not args.no_page_free_recovery,
    )
    r = record(opts)
    print(f"recorded {r.duration_s:.2f} s into {r.path}: {r.events:,} rows from BPF, {r.lost} lost "
          f"(drain {r.drain_events_per_s:,.0f} events/s)", file=sys.stderr)
    for p in r.probes:
        if p.status != "recorded":
            print(f"  {p.name}: {p.status}: {p.reason}", file=sys.stderr)
    for name, rows in r.rows.items():
        print(f"  {name:<20} {rows:>12,}", file=sys.stderr)
    if r.ring_buffer_refused:
        print(f"mmreplay: the ring buffer refused {r.ring_buffer_refused:,} events (the reader fell behind, "
              f"e.g. starved of CPU): record with a larger --buffer-size (this one: {args.buffer_size})",
              file=sys.stderr)
    return command_exit(r.command_status, r.stop_reason)


#: --buffer-size bounds: BPF_MAP_TYPE_RINGBUF wants a power-of-two number of pages
MIN_BUFFER, MAX_BUFFER = 1 << 20, 1 << 30


def buffer_pages(text: str) -> int:
    """--buffer-size as a number of pages, a power of two from 1 MiB to 1 GiB; UsageError otherwise."""
    size = parse_size(text, "--buffer-size")
    page = os.sysconf("SC_PAGE_SIZE")
    pages = size // page
    if size % page or pages & (pages - 1) or not MIN_BUFFER <= size <= MAX_BUFFER:
        raise UsageError(f"--buffer-size must be a power of two from 1M to 1G (got {text!r})")
    return pages


def command_exit(status: int | None, stop_reason: str) -> int:
    """record's exit status: the command's when it ended by itself and failed (as time and perf stat do),
    128+N when a signal N killed it; 0 when it succeeded or when the recorder stopped it."""
    if status is None or status == 0 or not stop_reason.startswith("command exited"):
        return 0
    code = status if status > 0 else 128 - status
    how = f"exited with status {status}" if status > 0 else f"was killed by signal {-status}"
    print(f"mmreplay: the command {how}; the trace is complete, mmreplay exits with {code}", file=sys.stderr)
    return code
