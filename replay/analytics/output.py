"""Rendering query results: an aligned text table, CSV or JSON."""

from __future__ import annotations

import polars as pl

FORMATS = ("table", "csv", "json")
#: Address columns, printed in hex in the text table (CSV and JSON keep the integers).
ADDRESSES = ("lock_addr", "addr", "mm", "address", "ip", "callsite", "callback")


def _cell(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}" if abs(v) >= 100 else f"{v:.4g}"
    if isinstance(v, list):
        return ",".join(map(str, v))
    return str(v)


def table(df: pl.DataFrame) -> str:
    """Columns aligned, numbers right-aligned, nulls as "-"."""
    numeric = [dt.is_numeric() for dt in df.dtypes]
    df = df.with_columns(
        pl.col(c).map_elements(hex, return_dtype=pl.String)
        for c in ADDRESSES
        if c in df.columns and df.schema[c].is_integer()
    )
    numeric[:] = [dt.is_numeric() or c in ADDRESSES for c, dt in zip(df.columns, df.dtypes, strict=True)]
    rows = [[_cell(v) for v in row] for row in df.iter_rows()]
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(df.columns)]

    def line(cells: list[str]) -> str:
        cols = zip(cells, widths, numeric, strict=True)
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in cols).rstrip()

    return "\n".join([line(list(df.columns)), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def render(df: pl.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return df.write_csv().rstrip("\n")
    if fmt == "json":
        return df.write_json()
    return table(df)
