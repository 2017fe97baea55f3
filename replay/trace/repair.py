"""Recover an interrupted trace: keep every complete chunk, rebuild footers and manifest.

A table file is written as ARROW1 magic + padding, an IPC stream, then a footer.
When the writer never closed it, the bytes after the first 8 are a readable IPC
stream up to the last complete record batch; we rewrite that into a proper
file. Nothing that was fully written is dropped, whatever else is broken: a
0-byte, truncated or corrupt table file loses its own torn part only, and the
other tables are recovered all the same.

What was lost is written to the manifest (``extra.repair``) and shown by
``mmreplay info``: per table what was done and how many bytes of torn chunks
were dropped, which tables are missing and why, and whether the probes' event
and loss counts (written by the recorder when it stops) are known.
"""

from __future__ import annotations

import mmap
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from replay.errors import TraceError
from replay.trace import safeio
from replay.trace.manifest import MANIFEST, Manifest, TableEntry
from replay.trace.schema import TABLES_BY_NAME, Table, types_match

_MAGIC = b"ARROW1\x00\x00"

#: Tables the recorder writes only when recording stops: a killed recording has none of them.
WRITTEN_AT_STOP = {
    "stacks": "kernel stacks are read from the BPF stack map when recording stops",
    "symbols": "symbols are resolved for the recorded stacks when recording stops",
    "tasks": "the task list (pid, comm) is written when recording stops",
}


@dataclass
class Repaired:
    table: str
    rows: int
    action: str  # "ok" | "rebuilt footer" | "rebuilt empty (...)" | "dropped (...)"
    lost_bytes: int = 0  # bytes after the last complete chunk (a torn chunk, or garbage)


def _schema_ok(spec: Table, schema: pa.Schema) -> bool:
    for col in spec.columns:
        idx = schema.get_field_index(col.name)
        if idx < 0 or not types_match(schema.field(idx).type, col.type):
            return False
    return True


def _read_file(buf: pa.Buffer, spec: Table) -> int | None:
    """Rows of an intact IPC file with the table's schema and valid batches, else None."""
    try:
        r = pa.ipc.open_file(buf)
        if not _schema_ok(spec, r.schema):
            return None
        rows = 0
        for i in range(r.num_record_batches):
            b = r.get_batch(i)
            b.validate(full=True)
            rows += b.num_rows
        return rows
    except (pa.ArrowException, OSError, ValueError, MemoryError):
        return None


def _salvage(buf: pa.Buffer, spec: Table) -> tuple[list[pa.RecordBatch], int] | str:
    """The complete, valid batches of an unfinished file and the bytes after them, or why there are none."""
    if buf.size == 0 or (buf.size <= len(_MAGIC) and _MAGIC.startswith(buf.to_pybytes())):
        return [], 0  # created (the probe was attached) but killed before its first chunk: an empty table
    body = buf.slice(len(_MAGIC))
    try:
        stream = pa.BufferReader(body)
        reader = pa.ipc.open_stream(stream)
    except (pa.ArrowException, OSError, ValueError, MemoryError):
        return "not an Arrow IPC stream after the header (corrupt)"
    if not _schema_ok(spec, reader.schema):
        return "its schema is not the table's"
    batches: list[pa.RecordBatch] = []
    end = stream.tell()
    while True:
        try:
            b = reader.read_next_batch()
            b.validate(full=True)
        except StopIteration:
            break
        except (pa.ArrowException, OSError, ValueError, MemoryError):
            break  # the torn (or corrupt) chunk: everything before it is kept
        batches.append(b)
        end = stream.tell()
    return batches, body.size - end


def _map(fd: int) -> tuple[pa.Buffer, mmap.mmap | None]:
    """The whole file as a read-only, memory-mapped buffer (no copy: tables may be gigabytes)."""
    size = os.fstat(fd).st_size
    if size == 0:
        return pa.py_buffer(b""), None
    m = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
    return pa.py_buffer(m), m


def _open_table(d: safeio.OutputDir, name: str) -> int | str:
    """A read descriptor on the table file, or why there is none ("" if there is no file)."""
    try:
        st = os.stat(name, dir_fd=d.fd, follow_symlinks=False)
    except FileNotFoundError:
        return ""
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    try:
        return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=d.fd)
    except OSError as e:
        return f"cannot read ({e.strerror})"


def _rewrite(d: safeio.OutputDir, spec: Table, batches: list[pa.RecordBatch]) -> None:
    """Write ``batches`` as a proper file beside the old one, then rename it over."""
    tmp = spec.filename + ".tmp"
    d.remove(tmp)
    try:
        with d.open_new(tmp) as f:
            with pa.ipc.new_file(f, batches[0].schema if batches else spec.schema) as w:
                for b in batches:
                    w.write_batch(b)
        d.rename(tmp, spec.filename)
    except OSError as e:
        d.remove(tmp)
        raise TraceError(d.path / spec.filename, f"cannot write the repaired table ({e.strerror or e}); "
                         "the original is untouched") from None


def _repair_table(d: safeio.OutputDir, spec: Table) -> Repaired | None:
    fd = _open_table(d, spec.filename)
    if fd == "":
        return None
    if isinstance(fd, str):
        return Repaired(spec.name, 0, f"dropped ({fd})")
    try:
        buf, _ = _map(fd)  # the map stays alive while buffers point into it, and closes with them
        rows = _read_file(buf, spec)
        if rows is not None:
            return Repaired(spec.name, rows, "ok")
        salvaged = _salvage(buf, spec)
        if isinstance(salvaged, str):
            return Repaired(spec.name, 0, f"dropped ({salvaged})", buf.size)
        batches, lost = salvaged
        _rewrite(d, spec, batches)
        action = "rebuilt footer" if batches or buf.size > len(_MAGIC) else "rebuilt empty (no chunk was written)"
        return Repaired(spec.name, sum(b.num_rows for b in batches), action, lost)
    except (OSError, ValueError) as e:
        return Repaired(spec.name, 0, f"dropped (cannot read: {getattr(e, 'strerror', None) or e})")
    finally:
        os.close(fd)


def _manifest(root: Path) -> tuple[Manifest, str]:
    """The manifest, or a fresh one (and why) when it is missing or unreadable."""
    try:
        return Manifest.load(root / MANIFEST), ""
    except TraceError as e:
        m = Manifest()
        m.extra["recorder"] = "unknown (manifest lost)"
        return m, f"manifest.json was unreadable ({e.problem}): host, command and probes are unknown"


def repair(trace_dir: str | os.PathLike[str]) -> list[Repaired]:
    """Make an interrupted trace readable again; returns what was done per table."""
    root = Path(trace_dir)
    if not root.is_dir():
        raise TraceError(root, "no such trace directory")
    try:
        d = safeio.open_existing_dir(root)
    except OSError as e:
        raise TraceError(root, f"cannot open ({e.strerror or e})") from None
    with d:
        manifest, manifest_problem = _manifest(root)
        if manifest_problem and not any(spec.filename in d.entries() for spec in TABLES_BY_NAME.values()):
            raise TraceError(root / MANIFEST, manifest_problem.split(":")[0] + " and no table file is here: "
                             "not a trace directory")
        was_complete = manifest.complete
        results = [r for spec in TABLES_BY_NAME.values() if (r := _repair_table(d, spec)) is not None]
        for r in results:
            spec = TABLES_BY_NAME[r.table]
            if r.action.startswith("dropped"):
                manifest.tables.pop(r.table, None)
                continue
            # a rebuilt file is written uncompressed, whatever the recording asked for
            entry = manifest.tables.get(r.table)
            compression = entry.compression if entry is not None and r.action == "ok" else None
            manifest.tables[r.table] = TableEntry(file=spec.filename, rows=r.rows, compression=compression)
        for name in [n for n in manifest.tables if n not in {r.table for r in results}]:
            del manifest.tables[name]  # the manifest named a file that is gone
        if was_complete and all(r.action == "ok" for r in results) and not manifest_problem:
            return results  # nothing to repair
        if manifest.start_ns == manifest.end_ns == 0:  # killed before the recorder wrote its span
            manifest.start_ns, manifest.end_ns = _span(d, manifest)
        manifest.complete = True
        manifest.extra["repaired"] = True
        manifest.extra["repair"] = _report(manifest, results, was_complete, manifest_problem)
        try:
            d.replace(MANIFEST, manifest.to_json().encode())
        except OSError as e:
            raise TraceError(root / MANIFEST, f"cannot write ({e.strerror or e})") from None
    return results


def _span(d: safeio.OutputDir, m: Manifest) -> tuple[int, int]:
    """(first ts, last ts + dur) over the recovered tables: the span the events cover."""
    lo, hi = None, None
    for name, entry in m.tables.items():
        spec = TABLES_BY_NAME.get(name)
        if spec is None or not entry.rows or "ts" not in spec.schema.names:
            continue
        fd = os.open(entry.file, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=d.fd)
        try:
            buf, _ = _map(fd)
        finally:
            os.close(fd)
        r = pa.ipc.open_file(buf)
        for i in range(r.num_record_batches):  # batch by batch: memory stays one chunk
            b = r.get_batch(i)
            ts = b.column("ts")
            end = pc.add(ts, b.column("dur")) if "dur" in b.schema.names else ts
            first, last = pc.min(ts).as_py(), pc.max(end).as_py()
            if first is not None and last is not None:
                lo = first if lo is None else min(lo, first)
                hi = last if hi is None else max(hi, last)
    return (lo or 0, hi or 0)


def _report(m: Manifest, results: list[Repaired], was_complete: bool, manifest_problem: str) -> dict[str, Any]:
    """What the repair did and what is lost, for the manifest's extra.repair."""
    missing: dict[str, str] = {}
    present = {r.table for r in results if not r.action.startswith("dropped")}
    for r in results:
        if r.action.startswith("dropped"):
            missing[r.table] = r.action[len("dropped ("):-1]
    if str(m.extra.get("recorder", "")).startswith("mmreplay record") and not was_complete:
        for name, why in WRITTEN_AT_STOP.items():
            if name not in present:
                missing.setdefault(name, f"the recording was killed before it stopped ({why})")
    notes = []
    if manifest_problem:
        notes.append(manifest_problem)
    if not was_complete and not m.probes:
        notes.append("events and lost-event counts per probe are unknown: the recorder writes them when it stops")
    return {
        "tables": {r.table: {"rows": r.rows, "action": r.action, "lost_bytes": r.lost_bytes} for r in results},
        "missing": missing,
        "lost_bytes": sum(r.lost_bytes for r in results),
        "notes": notes,
    }


def describe(extra: Any) -> list[str]:
    """`info`'s lines about a repaired trace: what was lost, which tables are missing and why."""
    rep = extra.get("repair") if isinstance(extra, dict) else None
    if not isinstance(rep, dict):
        return ["repaired   yes (by an older mmreplay: what was lost is not recorded)"] \
            if isinstance(extra, dict) and extra.get("repaired") else []
    lines = [f"repaired   yes: {rep.get('lost_bytes', 0)} bytes of torn or corrupt chunks dropped"]
    tables = rep.get("tables") if isinstance(rep.get("tables"), dict) else {}
    for name, t in tables.items():
        if isinstance(t, dict) and t.get("action") != "ok":
            lines.append(f"  {name}: {t.get('action')}, {t.get('rows')} rows kept, "
                         f"{t.get('lost_bytes')} bytes dropped")
    missing = rep.get("missing") if isinstance(rep.get("missing"), dict) else {}
    for name, why in missing.items():
        lines.append(f"  missing table {name}: {why}")
    for note in rep.get("notes") or []:
        lines.append(f"  {note}")
    return lines
