"""Recover an interrupted trace: keep every complete chunk, rebuild footers and manifest.

A table file is written as ARROW1 magic + padding, an IPC stream, then a footer.
When the writer never closed it, the bytes after the first 8 are a readable IPC
stream up to the last complete record batch; we rewrite that into a proper
file. Nothing that was fully written is dropped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from replay.errors import TraceError
from replay.trace.manifest import MANIFEST, Manifest, TableEntry
from replay.trace.schema import TABLES_BY_NAME

_MAGIC = b"ARROW1\x00\x00"


@dataclass
class Repaired:
    table: str
    rows: int
    action: str  # "ok" | "rebuilt footer" | "dropped (no complete chunk)"


def _salvage(path: Path) -> tuple[pa.Schema, list[pa.RecordBatch]] | None:
    data = path.read_bytes()
    if not data.startswith(_MAGIC):
        return None
    batches: list[pa.RecordBatch] = []
    try:
        reader = pa.ipc.open_stream(pa.BufferReader(data[len(_MAGIC):]))
    except pa.ArrowException:
        return None
    schema = reader.schema
    while True:
        try:
            batches.append(reader.read_next_batch())
        except StopIteration:
            break
        except (pa.ArrowException, OSError):
            break  # the torn last chunk: everything before it is kept
    return schema, batches


def repair(trace_dir: str | os.PathLike[str]) -> list[Repaired]:
    """Make an interrupted trace readable again; returns what was done per table."""
    root = Path(trace_dir)
    manifest = Manifest.load(root / MANIFEST)
    results: list[Repaired] = []
    for spec in TABLES_BY_NAME.values():
        path = root / spec.filename
        if not path.exists():
            continue
        try:
            with pa.memory_map(str(path)) as src:
                r = pa.ipc.open_file(src)
                rows = sum(r.get_batch(i).num_rows for i in range(r.num_record_batches))
            results.append(Repaired(spec.name, rows, "ok"))
        except pa.ArrowException:
            salvaged = _salvage(path)
            if salvaged is None:
                raise TraceError(path, "not an Arrow IPC file and cannot be salvaged") from None
            schema, batches = salvaged
            tmp = path.with_suffix(".arrow.tmp")
            with pa.ipc.new_file(str(tmp), schema) as w:
                for b in batches:
                    w.write_batch(b)
            os.replace(tmp, path)
            rows = sum(b.num_rows for b in batches)
            results.append(Repaired(spec.name, rows, "rebuilt footer"))
        # a rebuilt file is written uncompressed, whatever the recording asked for
        compression = None if results[-1].action != "ok" else _compression(manifest, spec.name)
        manifest.tables[spec.name] = TableEntry(file=spec.filename, rows=results[-1].rows, compression=compression)
    if not manifest.complete:
        manifest.complete = True
        manifest.extra["repaired"] = True
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(manifest.to_json())
    os.replace(tmp, root / MANIFEST)
    return results


def _compression(manifest: Manifest, table: str) -> str | None:
    entry = manifest.tables.get(table)
    return entry.compression if entry else None
