"""The one way traces (and replay results) are written: TraceWriter.

Tables are appended chunk by chunk, so a long recording never holds more than
one chunk in memory. Each table is an Arrow IPC *file* written as it goes; the
manifest is written first with ``complete: false`` and rewritten atomically on
close. If the process dies mid-recording, every chunk already written is still
in the files and ``mmreplay repair`` recovers it (an IPC file without its
footer is a readable IPC stream after its 8-byte magic).
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from replay.errors import TraceError
from replay.trace import safeio
from replay.trace.manifest import MANIFEST, Host, Manifest, Probe, TableEntry, tool_versions
from replay.trace.schema import TABLES_BY_NAME, Column, Table

TableLike = Any  # pa.Table | pa.RecordBatch | polars.DataFrame | Mapping[str, array-like]


def _enum_array(col: Column, arr: pa.Array | pa.ChunkedArray) -> pa.DictionaryArray:
    """Encode strings (or int codes, or another dictionary) into the column's fixed vocabulary."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    vocabulary = pa.array(col.values, pa.string())
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if pa.types.is_integer(arr.type):
        codes = arr.cast(pa.int16())
        bad = pc.or_(pc.less(codes, 0), pc.greater_equal(codes, len(col.values)))
    else:
        arr = arr.cast(pa.string())
        codes = pc.index_in(arr, value_set=vocabulary).cast(pa.int16())
        bad = pc.and_(pc.is_null(codes), pc.is_valid(arr))
    if pc.any(bad).as_py():
        example = arr.filter(bad)[0].as_py()
        raise ValueError(f"column {col.name!r}: {example!r} is not one of {col.values}")
    return pa.DictionaryArray.from_arrays(codes, vocabulary)


def conform(table: Table, data: TableLike) -> pa.Table:
    """Turn any table-like input into a pa.Table with exactly the table's schema.

    Raises ValueError naming the column when input is missing a column or a
    value cannot be represented (a bug in the producer, not user input).
    """
    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    elif hasattr(data, "to_arrow") and not isinstance(data, pa.Table):  # polars DataFrame
        data = data.to_arrow()
    elif isinstance(data, Mapping):
        types = {c.name: c.type for c in table.columns if not c.is_enum}
        data = pa.table({k: _to_arrow(v, types.get(k)) for k, v in data.items()})
    columns = []
    for col in table.columns:
        if col.name not in data.column_names:
            raise ValueError(f"table {table.name!r}: input lacks column {col.name!r}")
        arr = data.column(col.name)
        if col.is_enum:
            arr = _enum_array(col, arr)
        else:
            try:
                arr = arr.cast(col.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise ValueError(f"table {table.name!r}, column {col.name!r}: {e}") from None
        if not col.nullable and arr.null_count:
            raise ValueError(f"table {table.name!r}, column {col.name!r}: nulls in a non-nullable column")
        columns.append(arr)
    return pa.Table.from_arrays(columns, schema=table.schema)


def _to_arrow(v: Any, type: pa.DataType | None) -> pa.Array | pa.ChunkedArray:
    if isinstance(v, (pa.Array, pa.ChunkedArray)):
        return v
    if not isinstance(v, np.ndarray):
        v = list(v)
    try:
        return pa.array(v, type=type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
        raise ValueError(f"cannot convert to {type}: {e}") from None


def replaceable() -> safeio.Replaceable:
    """What --force may delete: a trace or results directory holding only files this writer writes."""
    return safeio.mmreplay_dir(t.filename for t in TABLES_BY_NAME.values())


def check_target(path: Path, force: bool) -> None:
    """Refuse (TraceError) an output directory a TraceWriter would refuse, creating nothing.

    Separate from TraceWriter so that a producer (the recorder) can refuse before its slow set-up.
    The rules are replay.trace.safeio's: a link, a directory of another user, a non-empty directory
    (or, with ``force``, one that is not an mmreplay trace with nothing else in it, or this command's
    input) are refused.
    """
    safeio.open_output_dir(path, force=force, replaceable=replaceable(), create=False)


class TraceWriter:
    """Writes a trace directory: one Arrow IPC file per table plus manifest.json.

    Use as a context manager; the trace is finalized on exit even when the
    body raised, so everything written so far stays readable.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        kind: str = "trace",
        source: str = "recorded",
        host: Host | None = None,
        command: Iterable[str] = (),
        force: bool = False,
        compression: str | None = None,
        extra: dict[str, Any] | None = None,
    ):
        self.path = Path(path)
        if compression not in (None, "lz4", "zstd"):
            raise TraceError(self.path, f"unknown compression {compression!r} (lz4 or zstd)")
        self._prepare_directory(force)
        self.manifest = Manifest(
            kind=kind,
            source=source,
            host=host if host is not None else Host.this_machine(),
            command=list(command),
            tools=tool_versions(),
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            complete=False,
            extra=dict(extra or {}),
        )
        self._options = pa.ipc.IpcWriteOptions(compression=compression)
        self._compression = compression
        self._writers: dict[str, pa.ipc.RecordBatchFileWriter] = {}
        self._rows: dict[str, int] = {}
        self._ts_range: list[int] = []
        self._closed = False
        self._write_manifest()

    def _prepare_directory(self, force: bool) -> None:
        try:
            self._dir = safeio.open_output_dir(self.path, force=force, replaceable=replaceable())
        except OSError as e:
            raise TraceError(self.path, f"cannot prepare the output directory ({e.strerror or e})") from None
        self._files: dict[str, Any] = {}

    # -- tables ---------------------------------------------------------------

    def declare(self, name: str) -> None:
        """Create a table even if no rows come: a probe ran and saw nothing."""
        self._writer(name)

    def _writer(self, name: str) -> pa.ipc.RecordBatchFileWriter:
        w = self._writers.get(name)
        if w is None:
            table = TABLES_BY_NAME.get(name)
            if table is None:
                raise ValueError(f"unknown table {name!r}")
            try:
                f = self._dir.open_new(table.filename)
            except OSError as e:
                raise TraceError(self.path / table.filename, f"cannot create ({e.strerror or e})") from None
            self._files[name] = f
            w = pa.ipc.new_file(f, table.schema, options=self._options)
            self._writers[name] = w
            self._rows[name] = 0
        return w

    def write(self, name: str, data: TableLike) -> int:
        """Append rows to a table; returns the number of rows written."""
        if self._closed:
            raise ValueError("trace writer is closed")
        table = TABLES_BY_NAME.get(name)
        if table is None:
            raise ValueError(f"unknown table {name!r}")
        t = conform(table, data)
        w = self._writer(name)
        if t.num_rows:
            try:
                w.write_table(t)
            except OSError as e:  # disk full, I/O error: the chunks before this one stay recoverable
                raise TraceError(self.path / table.filename, f"cannot write ({e.strerror or e}); "
                                 f"'mmreplay repair {self.path}' recovers the chunks written before") from None
            self._rows[name] += t.num_rows
            if "ts" in t.column_names:
                mn, mx = pc.min_max(t.column("ts")).values()
                self._ts_range += [mn.as_py(), mx.as_py()]
        return t.num_rows

    # -- manifest ---------------------------------------------------------------

    def add_probe(self, probe: Probe) -> None:
        self.manifest.probes.append(probe)

    def _write_manifest(self) -> None:
        try:
            self._dir.replace(MANIFEST, self.manifest.to_json().encode())
        except OSError as e:
            raise TraceError(self.path / MANIFEST, f"cannot write ({e.strerror or e})") from None

    def close(self, *, start_ns: int | None = None, end_ns: int | None = None) -> Manifest:
        """Finish every table file and write the final manifest. Idempotent."""
        if self._closed:
            return self.manifest
        self._closed = True
        failed: OSError | None = None
        for name, w in self._writers.items():
            try:
                w.close()
                self._files[name].close()
            except OSError as e:  # disk full: this table keeps its chunks but no footer; repair reads them
                failed = failed or e
                continue
            self.manifest.tables[name] = TableEntry(
                file=TABLES_BY_NAME[name].filename, rows=self._rows[name], compression=self._compression
            )
        m = self.manifest
        if start_ns is not None:
            m.start_ns = start_ns
        elif self._ts_range:
            m.start_ns = min(self._ts_range)
        if end_ns is not None:
            m.end_ns = end_ns
        elif self._ts_range:
            m.end_ns = max(self._ts_range)
        if failed is not None:
            self._dir.close()
            raise TraceError(self.path, f"cannot finish the table files ({failed.strerror or failed}); "
                             f"'mmreplay repair {self.path}' recovers what was written")
        m.complete = True
        self._write_manifest()
        self._dir.close()
        return m

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_trace(path: str | os.PathLike[str], tables: Mapping[str, TableLike], **kwargs: Any) -> Manifest:
    """Write a whole trace in one call (tests, synthesizer, small results)."""
    probes = kwargs.pop("probes", ())
    span = {k: kwargs.pop(k) for k in ("start_ns", "end_ns") if k in kwargs}
    with TraceWriter(path, **kwargs) as w:
        for p in probes:
            w.add_probe(p)
        for name, data in tables.items():
            w.write(name, data)
        return w.close(**span)
