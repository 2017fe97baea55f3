"""`mmreplay query TRACE --sql`: every table of the input, lazily, in one polars SQLContext.

Besides the stored tables (recorded names, or the ``sim_*`` names of replay
results) the context holds derived views: ``callers`` (stack_id -> caller,
caller_site, frames), ``sched_latencies`` (one row per wakeup-to-run latency),
``run_delays`` (the same plus waits after preemption, as sched_delay) and
``preempt_sections`` (the preempt-off sections of the preempt_off query).

SQL runs on those tables only. polars' SQL has table functions that read any
file or URL (``read_csv('/etc/shadow')``, ``read_parquet('https://...')``)
and would run them with the caller's rights, as root if the user is; a query
naming one is refused before polars parses it, and the plan of every query is
checked to scan nothing but the trace's own files. polars loads no extensions
and its SQL has no COPY, ATTACH or INSTALL; statements other than queries are
refused too.
"""

from __future__ import annotations

import re

import polars as pl

from replay.analytics.callers import stack_callers
from replay.analytics.preempt import sections
from replay.analytics.queries import polars_errors
from replay.analytics.sched import latencies
from replay.analytics.source import Source, labels_to_text
from replay.errors import MmreplayError, UsageError


def views(src: Source) -> dict[str, pl.LazyFrame]:
    """Every table and derived view of ``src`` by its SQL name (nothing is read)."""
    out = {name: src.trace.scan(name) for name in src.trace.tables}
    if src.trace.has("stacks"):
        out["callers"] = stack_callers(src.trace)
    derived = (
        ("sched_latencies", lambda: latencies(src)),
        ("run_delays", lambda: latencies(src, preempted=True)),
        ("preempt_sections", lambda: sections(src)),
    )
    for name, make in derived:
        try:
            out[name] = labels_to_text(make())
        except MmreplayError:  # the input lacks what the view is derived from
            pass
    return out


def context(src: Source) -> pl.SQLContext:
    return pl.SQLContext(views(src), eager=False)


#: Statements that reach outside the context in SQL engines (files, extensions, settings): refused by name
#: even where polars would only fail to parse them, so that the message says why.
OUTSIDE_STATEMENTS = frozenset({"copy", "install", "load", "attach", "detach", "pragma", "export", "import",
                                "set", "call"})

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
  | (?P<string>'(?:[^']|'')*(?:'|\Z))
  | (?P<quoted>"(?:[^"]|"")*(?:"|\Z)|`[^`]*(?:`|\Z))
  | (?P<word>[^\W\d]\w*)
  | (?P<other>.)
""", re.VERBOSE | re.DOTALL)


def _tokens(query: str) -> list[str]:
    """Identifiers (unquoted, lower-cased) and punctuation of ``query``; strings and comments dropped."""
    out = []
    for m in _TOKEN.finditer(query):
        kind = m.lastgroup
        text = m.group()
        if kind in ("space", "comment"):
            continue
        if kind == "string":
            out.append("'")
        elif kind == "quoted":
            out.append(text[1:-1].replace('""', '"').lower())
        else:
            out.append(text.lower())
    return out


def check_query(query: str) -> None:
    """UsageError unless ``query`` only reads tables: no file-reading table function, no other statement."""
    tokens = _tokens(query)
    for name, nxt in zip(tokens, tokens[1:], strict=False):
        if nxt == "(" and (name.startswith("read_") or name.startswith("scan_")):
            raise UsageError(f"--sql: {name}() reads files outside the trace; SQL runs on the trace's own "
                             "tables only (mmreplay query TRACE --list names them)")
    statement_start = True
    for t in tokens:
        if statement_start and t != ";":
            if t in OUTSIDE_STATEMENTS:
                raise UsageError(f"--sql: {t.upper()} reaches outside the trace; SQL runs on the trace's own "
                                 "tables only")
            statement_start = False
        elif t == ";":
            statement_start = True


_SCANNED = re.compile(r"(?:SCAN|FAST COUNT \(\w+\)) \[([^\]]*)\]")


def _check_plan(lf: pl.LazyFrame, allowed: set[str]) -> None:
    """UsageError if the plan scans a file that is not one of the trace's tables."""
    for m in _SCANNED.finditer(lf.explain(optimized=False)):
        for path in m.group(1).split(", "):
            if path and path not in allowed:
                raise UsageError(f"--sql: the query reads {path}, which is not a table of the trace; "
                                 "SQL runs on the trace's own tables only")


def run_sql(src: Source, query: str, limit: int | None = None) -> pl.DataFrame:
    """Execute ``query``; bad SQL and unknown tables or columns become one-line UsageErrors."""
    check_query(query)
    allowed = {str(src.trace.info(name).path) for name in src.trace.tables}
    with polars_errors("SQL"):
        lf = context(src).execute(query, eager=False)
        _check_plan(lf, allowed)
        if limit is not None:
            lf = lf.head(limit)
        return lf.collect()
