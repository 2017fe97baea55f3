"""`mmreplay repair TRACE`: recover a trace whose recording was killed before it finished."""

from __future__ import annotations

import argparse
from typing import Any

from replay.cli import ExamplesFormatter

EXAMPLES = """\
examples:
  mmreplay repair mytrace        # after a recorder killed by SIGKILL or a full disk
  mmreplay info mytrace          # then check what was kept
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("repair",
                       help="recover an interrupted trace, keeping every chunk fully written",
                       epilog=EXAMPLES, formatter_class=ExamplesFormatter)
    p.add_argument("trace", help="trace directory")
    return p


def run(args: argparse.Namespace) -> int:
    from replay.trace.repair import repair

    for r in repair(args.trace):
        dropped = f", {r.lost_bytes} bytes dropped" if r.lost_bytes else ""
        print(f"{r.table:<20} {r.rows:>12} rows  {r.action}{dropped}")
    return 0
