"""Rendering query results: a table for people, CSV or JSON for machines.

The table is for reading: durations (``*_ns`` columns) in µs or ms with the unit in
the header (one unit per column, chosen by its largest value), counts with
thousands separators, addresses in hex, and no wider than the terminal: columns
that do not fit continue in a second block that repeats the label columns, so
nothing is cut (``$COLUMNS`` or the terminal decide; a file or a pipe gets whole lines). CSV and JSON
keep the raw values (nanoseconds, integers).
"""

from __future__ import annotations

import os
import shutil
import sys

import polars as pl

FORMATS = ("table", "csv", "json")
#: Address columns, printed in hex in the text table (CSV and JSON keep the integers).
ADDRESSES = ("lock_addr", "addr", "mm", "address", "ip", "callsite", "callback")
#: Integer columns that are identifiers, printed without thousands separators.
IDENTIFIERS = ("tid", "pid", "cpu", "seed", "stack_id", "bucket", "target_cpu", "seeds", "depth")


def _unit(max_ns: float | None) -> tuple[str, float]:
    """ms for columns reaching 10 ms, else µs."""
    return ("ms", 1e6) if max_ns is not None and abs(max_ns) >= 1e7 else ("us", 1e3)


def _number(v: float, ident: bool) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return str(v) if ident else f"{v:,}"
    return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.4g}"


def _cell(v: object, ident: bool = False) -> str:
    if v is None:
        return "-"
    if isinstance(v, (int, float)):
        return _number(v, ident)
    if isinstance(v, list):
        return ",".join(map(str, v))
    return str(v)


def humanize(df: pl.DataFrame) -> tuple[list[str], list[list[str]], list[bool]]:
    """Header, cells and right-alignment of each column, as people read them."""
    header, columns, right = [], [], []
    for name, s in zip(df.columns, df.get_columns(), strict=True):
        if name in ADDRESSES and s.dtype.is_integer():
            header.append(name)
            columns.append([hex(v) if v is not None else "-" for v in s.to_list()])
            right.append(True)
        elif name.endswith("_ns") and s.dtype.is_numeric():
            unit, div = _unit(s.abs().max() if s.len() else None)  # type: ignore[arg-type]
            header.append(f"{name[:-3]}_{unit}")
            digits = 1 if unit == "ms" else 2
            columns.append([f"{v / div:,.{digits}f}" if v is not None else "-" for v in s.to_list()])
            right.append(True)
        else:
            ident = name in IDENTIFIERS
            header.append(name)
            columns.append([_cell(v, ident) for v in s.to_list()])
            right.append(s.dtype.is_numeric())
    rows = [list(r) for r in zip(*columns, strict=True)] if columns else []
    return header, rows, right


def _width() -> int:
    """$COLUMNS, else the terminal's width; no limit when stdout is a file or a pipe (as perf)."""
    if "COLUMNS" in os.environ:
        try:
            return max(int(os.environ["COLUMNS"]), 20)
        except ValueError:
            pass
    if not sys.stdout.isatty():
        return 1 << 30
    return shutil.get_terminal_size((120, 24)).columns


def table(df: pl.DataFrame, width: int | None = None) -> str:
    """Columns aligned, numbers right-aligned, nulls as "-", wrapped into blocks that fit ``width``."""
    width = width or _width()
    header, rows, right = humanize(df)
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    # the label columns (leading text columns) repeat in every block
    labels = 0
    while labels < len(header) - 1 and not right[labels]:
        labels += 1
    lead = list(range(labels))
    blocks: list[list[int]] = []
    current = list(lead)
    used = sum(widths[i] + 2 for i in lead)
    for i in range(labels, len(header)):
        if current != lead and used + widths[i] > width:
            blocks.append(current)
            current, used = list(lead), sum(widths[j] + 2 for j in lead)
        current.append(i)
        used += widths[i] + 2
    blocks.append(current)

    def line(cells: list[str], cols: list[int]) -> str:
        return "  ".join(cells[k].rjust(widths[i]) if right[i] else cells[k].ljust(widths[i])
                         for k, i in enumerate(cols)).rstrip()

    out: list[str] = []
    for cols in blocks:
        if out:
            out.append("")
        out.append(line([header[i] for i in cols], cols))
        out.append(line(["-" * widths[i] for i in cols], cols))
        out += [line([r[i] for i in cols], cols) for r in rows]
    return "\n".join(out)


def render(df: pl.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return df.write_csv().rstrip("\n")
    if fmt == "json":
        return df.write_json()
    return table(df)
