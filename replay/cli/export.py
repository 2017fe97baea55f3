"""`mmreplay export TRACE_OR_RESULTS --perfetto -o out.json`: a timeline for the Perfetto UI."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "export",
        help="export a trace or results as a Chrome JSON trace (opens in ui.perfetto.dev)",
        description="Export lock holds/waits, syscalls, gathers, preempt-off sections (as slices) and page faults, "
        "TLB flushes (as instants) per process and thread, in the Chrome JSON trace format.",
    )
    p.add_argument("trace", help="trace or results directory")
    p.add_argument("--perfetto", action="store_true", required=True,
                   help="Chrome JSON trace format (traceEvents), which the Perfetto UI opens")
    p.add_argument("-o", "--output", required=True, metavar="OUT.json", help="file to write")
    p.add_argument("--force", action="store_true", help="replace OUT.json if mmreplay exported it")
    return p


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from replay.analytics.perfetto import export
    from replay.analytics.source import Source
    from replay.errors import UsageError

    out = Path(args.output)
    if not out.parent.is_dir():
        raise UsageError(f"{out.parent} is not a directory")
    counts = export(Source.open(args.trace), out, force=args.force)  # refuses links, others' files
    total = sum(counts.values())
    detail = ", ".join(f"{k} {v}" for k, v in counts.items())
    print(f"wrote {out}: {total} events ({detail})", file=sys.stderr)
    return 0
