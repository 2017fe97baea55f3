"""`mmreplay export TRACE_OR_RESULTS -o FILE`: a timeline for Perfetto (native protobuf, or legacy JSON)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from replay.cli import ExamplesFormatter

EXAMPLES = """\
examples:
  mmreplay export mytrace -o mytrace.perfetto-trace      # open in ui.perfetto.dev
  mmreplay export results -o results.perfetto-trace --seed 2
  mmreplay export mytrace --format json -o mytrace.json  # legacy Chrome JSON
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "export",
        help="export a trace or results as a Perfetto trace (opens in ui.perfetto.dev)",
        description="Write a Perfetto trace: CPU tracks, thread states and wake-ups from sched_switch/"
        "sched_wakeup; per thread, slices for mm system calls, lock waits and holds (class, mode, caller), "
        "preempt-off sections, mmu_gather windows and page-free bursts; instants for TLB flushes, IPIs and "
        "page faults; a counter of runnable tasks. Replay results: one process per policy set, side by side.",
        epilog=EXAMPLES,
        formatter_class=ExamplesFormatter,
    )
    p.add_argument("trace", help="trace or results directory")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="file to write")
    p.add_argument("--format", choices=("perfetto", "json"), default=None,
                   help="perfetto: native protobuf (default); json: legacy Chrome JSON (the default for an "
                   "OUTPUT ending in .json)")
    p.add_argument("--perfetto", action="store_true", help=argparse.SUPPRESS)  # before --format existed
    p.add_argument("--seed", type=int, default=None,
                   help="results: the seed to show for each policy set (default: each set's first)")
    p.add_argument("--force", action="store_true", help="replace FILE if mmreplay exported it")
    return p


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from replay.analytics.source import Source
    from replay.errors import UsageError

    out = Path(args.output)
    fmt = args.format or ("json" if out.suffix == ".json" else "perfetto")
    if not out.parent.is_dir():
        raise UsageError(f"{out.parent} is not a directory")
    src = Source.open(args.trace)
    if fmt == "json":
        from replay.analytics.chrome_json import export as export_json

        counts = export_json(src, out, force=args.force)  # refuses links, others' files
        missing: list[str] = []
    else:
        from replay.analytics.perfetto import export

        counts, missing = export(src, out, seed=args.seed, force=args.force)
    total = sum(counts.values())
    detail = ", ".join(f"{k} {v:,}" for k, v in counts.items())
    print(f"wrote {out} ({fmt}, {out.stat().st_size:,} bytes): {total:,} events ({detail})", file=sys.stderr)
    for m in missing:
        print(f"mmreplay: note: missing {m}", file=sys.stderr)
    return 0
