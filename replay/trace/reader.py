"""Open a trace (or replay results) lazily and validate it: Trace.open().

Opening reads the manifest and each table file's footer and schema through a
memory map; no column data is loaded until a query collects a LazyFrame.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from replay.errors import MissingTableError, TraceError
from replay.trace import safeio
from replay.trace.manifest import MANIFEST, Manifest
from replay.trace.schema import TABLES_BY_NAME, describe, types_match


@dataclass(frozen=True)
class TableInfo:
    """What opening a table file told us, without reading its data."""

    name: str
    path: Path
    rows: int
    batches: int
    schema: pa.Schema
    bytes: int


class Trace:
    """A validated trace directory. Tables come out as polars LazyFrames."""

    def __init__(self, path: Path, manifest: Manifest, tables: dict[str, TableInfo]):
        self.path = path
        self.manifest = manifest
        self._tables = tables

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Trace:
        """Open and validate; raises TraceError naming the file and the problem."""
        p = Path(path)
        if not p.exists():
            raise TraceError(p, "no such trace directory")
        if not p.is_dir():
            raise TraceError(p, "not a directory (a trace is a directory holding manifest.json)")
        safeio.note_input(p)  # this command reads it: --force must never replace it
        manifest = Manifest.load(p / MANIFEST)
        if not manifest.complete:
            raise TraceError(
                p / MANIFEST,
                f"trace was not finalized (recording interrupted); run 'mmreplay repair {p}' to recover it",
            )
        tables = {name: _open_table(p, name, entry.file, entry.rows) for name, entry in manifest.tables.items()}
        return cls(p, manifest, tables)

    # -- what is here ------------------------------------------------------------

    @property
    def tables(self) -> list[str]:
        return list(self._tables)

    def has(self, name: str) -> bool:
        return name in self._tables

    def info(self, name: str) -> TableInfo:
        return self._tables[name]

    def rows(self, name: str) -> int:
        return self._tables[name].rows if name in self._tables else 0

    def require(self, name: str, needed_for: str) -> None:
        """Raise MissingTableError naming the probe that fills ``name`` if it is absent."""
        if name not in self._tables:
            spec = TABLES_BY_NAME.get(name)
            filled_by = spec.source if spec else "unknown probe"
            raise MissingTableError(self.path, name, needed_for, filled_by)

    # -- data ----------------------------------------------------------------------

    def scan(self, name: str, needed_for: str | None = None) -> pl.LazyFrame:
        """The table as a memory-mapped LazyFrame; enum columns become pl.Enum."""
        self.require(name, needed_for or f"the '{name}' table")
        lf = pl.scan_ipc(self._tables[name].path)
        spec = TABLES_BY_NAME.get(name)
        if spec is not None:
            enums = [pl.col(c.name).cast(pl.Enum(c.values)) for c in spec.columns if c.is_enum]
            if enums:
                lf = lf.with_columns(enums)
        return lf

    def read(self, name: str) -> pl.DataFrame:
        return self.scan(name).collect()

    def arrow(self, name: str) -> pa.Table:
        """The table as an Arrow table backed by the memory map."""
        with pa.memory_map(str(self._tables[name].path)) as source:
            return pa.ipc.open_file(source).read_all()

    def __repr__(self) -> str:
        return f"Trace({str(self.path)!r}, tables={self.tables})"


def _open_table(trace_dir: Path, name: str, filename: str, expected_rows: int) -> TableInfo:
    path = trace_dir / filename
    if Path(filename).name != filename:
        raise TraceError(trace_dir / MANIFEST, f"table {name!r} file {filename!r} is not inside the trace")
    try:
        os.close(safeio.open_regular(path))  # a FIFO or a device must not hang or feed the reader
        size = path.stat().st_size
        with pa.memory_map(str(path)) as source:
            reader = pa.ipc.open_file(source)
            schema = reader.schema
            batches = reader.num_record_batches
            rows = 0
            for i in range(batches):
                batch = reader.get_batch(i)
                batch.validate()  # buffer sizes and offsets: a damaged batch must not be read out of bounds
                rows += batch.num_rows
                _check_cells(path, name, batch)
    except FileNotFoundError:
        raise TraceError(path, f"table file for {name!r} is missing") from None
    except MemoryError:
        raise TraceError(path, "not a valid Arrow IPC file (its footer describes more than fits in memory)") from None
    except OSError as e:
        if isinstance(e, pa.ArrowException):
            raise TraceError(path, f"not a valid Arrow IPC file, truncated or corrupt ({_first_line(e)})") from None
        raise TraceError(path, f"cannot read ({e.strerror or e})") from None
    except pa.ArrowException as e:
        raise TraceError(path, f"not a valid Arrow IPC file, truncated or corrupt ({_first_line(e)})") from None
    spec = TABLES_BY_NAME.get(name)
    if spec is not None:
        for col in spec.columns:
            idx = schema.get_field_index(col.name)
            if idx < 0:
                raise TraceError(path, f"table {name!r} lacks column {col.name!r}")
            actual = schema.field(idx).type
            if not types_match(actual, col.type):
                raise TraceError(
                    path,
                    f"column {col.name!r} has type {actual}, expected {describe(col.type)} ({col.type})",
                )
    if rows != expected_rows:
        raise TraceError(path, f"holds {rows} rows but the manifest says {expected_rows}: file truncated or replaced")
    return TableInfo(name, path, rows, batches, schema, size)


def _check_cells(path: Path, name: str, batch: pa.RecordBatch) -> None:
    """What a batch's metadata and enum indices say about its cells, without reading the other data:
    no null where the contract allows none (a null count is metadata), enum dictionaries within the
    table's vocabulary, and every enum index within its dictionary (2 bytes a row)."""
    spec = TABLES_BY_NAME.get(name)
    if spec is None:
        return
    for col in spec.columns:
        idx = batch.schema.get_field_index(col.name)
        if idx < 0:
            continue  # reported with the schema below
        arr = batch.column(idx)
        if not col.nullable and arr.null_count:
            raise TraceError(path, f"column {col.name!r} holds {arr.null_count} nulls but may hold none: corrupt")
        if col.is_enum and pa.types.is_dictionary(arr.type):
            arr.dictionary.validate(full=True)  # its offsets may point anywhere: checked before reading (small)
            words = arr.dictionary.to_pylist()
            unknown = [w for w in words if w not in col.values]
            if unknown:
                raise TraceError(path, f"column {col.name!r} has values outside its vocabulary "
                                 f"({str(unknown[0])[:40]!r}; known: {', '.join(col.values)})")
            lo, hi = pc.min_max(arr.indices).values()
            if lo.as_py() is not None and (lo.as_py() < 0 or hi.as_py() >= len(words)):
                raise TraceError(path, f"column {col.name!r} holds an enum code outside its dictionary: corrupt")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
