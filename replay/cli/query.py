"""`mmreplay query TRACE_OR_RESULTS NAME|--sql SQL|--list`: named polars queries and SQL."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from replay.cli.options import integer

EXAMPLES = """\
examples:
  mmreplay query mytrace waits --by class,caller     # perf-lock-contention-style table
  mmreplay query results preempt_off --limit 10 --csv
  mmreplay query mytrace --sql "SELECT lock_class, count(*) AS n FROM lock_waits GROUP BY lock_class"
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    from replay.cli import ExamplesFormatter

    p = sub.add_parser(
        "query", epilog=EXAMPLES, formatter_class=ExamplesFormatter,
        help="run a named query (lock summary, histograms, TLB flushes, latencies, ...) or SQL on a trace or results",
        description="Named queries over a recorded trace or replay results (docs/QUERIES.md), or SQL over its tables.",
    )
    p.add_argument("trace", help="trace or results directory")
    p.add_argument("name", nargs="?", help="query name (--list shows them)")
    p.add_argument("--by", action="append", metavar="KEY[,KEY]",
                   help="grouping keys (query-specific: class, caller, task, ...; 'none' for no grouping)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="output format (table: us/ms, thousands separators, fitted to the terminal)")
    p.add_argument("--json", dest="format", action="store_const", const="json", help="same as --format json")
    p.add_argument("--csv", dest="format", action="store_const", const="csv", help="same as --format csv")
    p.add_argument("--limit", type=integer(0, 2**32 - 1), metavar="N",
                   help="print at most N rows (0: all; stacks and preempt_off default to 20)")
    p.add_argument("--sql", metavar="SELECT", help="run SQL over every table (and the derived views) instead")
    p.add_argument("--list", action="store_true", help="list the named queries and the SQL tables of the input")
    p.add_argument("--against", metavar="PATH",
                   help="the other input of 'compare' (the recorded trace of results, or results of a trace)")
    return p


def run(args: argparse.Namespace) -> int:
    from replay.analytics import output, queries
    from replay.analytics.source import Source
    from replay.analytics.sql import run_sql, views
    from replay.errors import UsageError

    if args.limit is not None and args.limit < 0:
        raise UsageError("--limit must be >= 0")
    src = Source.open(args.trace)
    if args.list:
        print(listing(src, views(src)))
        return 0
    if args.sql is not None:
        if args.name or args.by:
            raise UsageError("--sql takes no query name and no --by")
        df = run_sql(src, args.sql, args.limit or None)
    else:
        if not args.name:
            raise UsageError("name a query or give --sql (mmreplay query TRACE --list shows the queries)")
        q = queries.get(args.name)
        by = queries.parse_by(args.by, q)
        other = None
        if q.two_inputs:
            against = args.against or src.trace.manifest.extra.get("trace")
            other = Source.open(against) if against else None
        elif args.against:
            raise UsageError(f"--against is only for the compare query, not {args.name!r}")
        limit = q.default_limit if args.limit is None else (args.limit or None)
        df = queries.run(src, args.name, by, other, limit)
    sys.stdout.write(output.render(df, args.format) + "\n")
    return 0


def listing(src: Any, tables: dict[str, Any]) -> str:
    from replay.analytics.queries import QUERIES

    lines = [f"queries ({'replay results' if src.is_results else 'recorded trace'}: {src.path})", ""]
    w = max(len(n) for n in QUERIES)
    for q in QUERIES.values():
        by = f"  [--by {','.join(q.keys)}; default {','.join(q.default_by) or 'none'}]" if q.keys else ""
        lines.append(f"  {q.name:<{w}}  {q.summary}")
        lines.append(f"  {'':<{w}}  reads {q.reads}{by}")
    from replay.analytics.grouping import KEYS

    lines += ["", "--by keys:"]
    lines += [f"  {k.name:<8} {k.help}" for k in KEYS.values()]
    lines += ["", "SQL tables (--sql):"]
    for name, lf in tables.items():
        lines.append(f"  {name}: {', '.join(lf.collect_schema().names())}")
    return "\n".join(lines)
