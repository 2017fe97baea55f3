"""`mmreplay report TRACE_OR_RESULTS -o report.html`: plots and tables in one offline HTML page."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from replay.cli import ExamplesFormatter

EXAMPLES = """\
examples:
  mmreplay report results -o report.html
  mmreplay report results -o report.html --against mytrace   # recorded vs simulated
  mmreplay report mytrace -o mytrace.html
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "report", epilog=EXAMPLES, formatter_class=ExamplesFormatter,
        help="write a self-contained HTML report (wait and latency CDFs, flush sizes, preempt-off timeline)",
        description="One HTML page with embedded plots and tables, and the plots as PNG files beside it.",
    )
    p.add_argument("trace", help="trace or results directory")
    p.add_argument("-o", "--output", required=True, metavar="REPORT.html", help="page to write")
    p.add_argument("--against", metavar="PATH",
                   help="the recorded trace of these results (default: the one their manifest names), or the "
                   "results of this trace: adds a recorded-vs-simulated section")
    p.add_argument("--force", action="store_true", help="replace REPORT.html and its PNGs if mmreplay wrote them")
    return p


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from replay.analytics.source import Source
    from replay.errors import MmreplayError, UsageError

    try:
        from replay.analytics import report
    except ImportError as e:
        raise MmreplayError(f"mmreplay report needs matplotlib ({e}); pip install 'mmreplay[report]'") from None

    out = Path(args.output)
    if not out.parent.is_dir():
        raise UsageError(f"{out.parent} is not a directory")
    src = Source.open(args.trace)
    other = None
    if args.against:
        other = Source.open(args.against)
    elif src.is_results and src.trace.manifest.extra.get("trace"):
        # the trace the results were replayed from, if it is still where the manifest says
        try:
            other = Source.open(src.trace.manifest.extra["trace"])
        except MmreplayError as e:
            print(f"mmreplay: note: no recorded-vs-simulated section ({e}); give --against TRACE", file=sys.stderr)
    files = report.write(src, out, other, force=args.force)
    print(f"wrote {files[0]} and {len(files) - 1} PNG files beside it", file=sys.stderr)
    return 0
