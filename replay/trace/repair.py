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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
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
    action: str  # "ok" | "rebuilt footer" | "rebuilt past N corrupt regions" | "rebuilt empty (...)" | "dropped (...)"
    lost_bytes: int = 0  # bytes that held no valid chunk: corrupt regions and a torn last chunk
    skipped: tuple[tuple[int, int], ...] = ()  # (file offset, bytes) of corrupt regions between valid chunks


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
            rows += _checked(spec, r.get_batch(i)).num_rows  # what the loader would refuse is repaired
        return rows
    except (pa.ArrowException, OSError, ValueError, MemoryError):
        return None


@dataclass
class Salvaged:
    """What an unfinished or damaged file still holds: its valid batches, in order, and what was not."""

    batches: list[pa.RecordBatch]
    skipped: list[tuple[int, int]]  # (file offset, bytes) of each corrupt region between valid chunks
    tail: int  # bytes after the last valid chunk that hold no complete, valid chunk (a torn chunk)


def _checked(spec: Table, b: pa.RecordBatch) -> pa.RecordBatch:
    """``b`` if it is structurally valid and keeps the table's rules (no nulls where none may be), else
    raises ValueError: a chunk with a flipped length, offset, index or validity bit is not kept."""
    b.validate(full=True)
    for col in spec.columns:
        arr = b.column(col.name)
        if not col.nullable and arr.null_count:
            raise ValueError(f"nulls in the non-nullable column {col.name!r}")
        if col.is_enum and pa.types.is_dictionary(arr.type) and not set(arr.dictionary.to_pylist()) <= set(col.values):
            raise ValueError(f"words outside the vocabulary in column {col.name!r}")
    return b


class _Decoder:
    """Decodes record-batch messages found anywhere in a file, without the stream's dictionary messages.

    Enum columns travel as dictionary indices whose dictionary is sent once, before the first batch. Every
    message is read with those columns as plain integers and given the dictionary back: the file's own
    (read with its first batch) if every word of it is in the table's vocabulary, else the vocabulary
    itself, which is what TraceWriter always stores (docs/TRACE_FORMAT.md, enums). So a chunk found after a
    corrupt region decodes like the first one, and a damaged dictionary message cannot rename a lock class.
    """

    def __init__(self, spec: Table, schema: pa.Schema, first: pa.RecordBatch | None):
        self.spec, self.schema = spec, schema
        self.plain = pa.schema([pa.field(f.name, f.type.index_type, f.nullable)
                                if pa.types.is_dictionary(f.type) else f for f in schema])
        self.dictionaries: dict[int, pa.Array] = {}
        vocab = {c.name: c.values for c in spec.columns if c.is_enum}
        for i, f in enumerate(schema):
            if not pa.types.is_dictionary(f.type):
                continue
            own = first.column(i).dictionary if first is not None else None
            if f.name in vocab and (own is None or not set(own.to_pylist()) <= set(vocab[f.name])):
                self.dictionaries[i] = pa.array(vocab[f.name], f.type.value_type)
            elif own is not None:
                self.dictionaries[i] = own  # the file's own order (another writer may order it otherwise)
            else:
                raise ValueError(f"the dictionary of column {f.name!r} is unknown")

    def decode(self, message: pa.ipc.Message) -> pa.RecordBatch:
        plain = pa.ipc.read_record_batch(message, self.plain)
        plain.validate(full=True)
        columns = [pa.DictionaryArray.from_arrays(col, self.dictionaries[i]) if i in self.dictionaries else col
                   for i, col in enumerate(plain.columns)]  # from_arrays refuses an index out of range
        return _checked(self.spec, pa.RecordBatch.from_arrays(columns, schema=self.schema))


#: The most metadata one IPC message of a trace table plausibly has (a schema of a few dozen columns is
#: ~2 KiB); a continuation marker followed by a larger length is not the start of a message.
_MAX_METADATA = 1 << 20
_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # the IPC end-of-stream marker: a finished file's footer follows


def _candidates(body: pa.Buffer, start: int) -> Iterator[int]:
    """Offsets in ``body`` from ``start`` on where a message could begin: the IPC continuation marker
    0xFFFFFFFF, then a metadata length that is non-zero, a multiple of 8 (the writer pads it) and
    plausible. Any byte offset, not only 8-aligned ones: a chunk cut short inside the file shifts the
    ones after it. Scanned a window at a time: a file may be gigabytes."""
    at, window = max(start, 0), 1 << 20
    while at + 8 <= body.size:
        n = min(window, body.size - at - 7)  # positions whose 8 bytes lie in the file
        a = np.frombuffer(body, dtype=np.uint8, count=n + 7, offset=at)
        marker = (a[0:n] == 0xFF) & (a[1:n + 1] == 0xFF) & (a[2:n + 2] == 0xFF) & (a[3:n + 3] == 0xFF)
        for i in np.flatnonzero(marker).tolist():
            length = int.from_bytes(a[i + 4:i + 8].tobytes(), "little")
            if 0 < length <= _MAX_METADATA and length % 8 == 0:
                yield at + i
        at += n


def _message_at(body: pa.Buffer, at: int) -> tuple[pa.ipc.Message, int] | None:
    """The message at offset ``at`` and the offset after it, or None if none parses there (its metadata is
    a verified flatbuffer; its body must lie within the file)."""
    try:
        r = pa.BufferReader(body.slice(at))
        m = pa.ipc.read_message(r)
        return m, at + r.tell()
    except (pa.ArrowException, OSError, ValueError, EOFError, MemoryError):
        return None


def _framed(body: pa.Buffer, at: int) -> bool:
    """Whether a message may end at ``at``: the next message's continuation marker (or the end-of-stream
    marker) follows, or the file ends there (possibly inside the next marker: a torn write)."""
    rest = _bytes(body, at, 4)
    return rest == b"\xff" * len(rest)


def _bytes(body: pa.Buffer, at: int, n: int) -> bytes:
    """Up to ``n`` bytes of ``body`` from ``at`` (fewer at its end)."""
    return body.slice(at, max(0, min(n, body.size - at))).to_pybytes()


def _salvage(buf: pa.Buffer, spec: Table) -> Salvaged | str:
    """Every complete, valid batch of a damaged or unfinished file, or why there are none.

    The file is read as the stream it is after its magic, message by message. Where a message does not
    parse, or a batch does not decode and validate, a corrupt region begins: every later offset that
    could start an IPC message is tried until a record batch decodes and validates there, and reading
    goes on from it. A batch that decodes but is not followed by the next message's marker is checked
    for a valid batch starting inside it: if there is one, its own length is corrupt (or it was cut
    short) and what it decoded is not its data, so it is dropped and reading goes on from the inner one.
    A chunk corrupted in the middle of a file loses only itself; a torn last chunk is the region that
    never ends.
    """
    if buf.size == 0 or (buf.size <= len(_MAGIC) and _MAGIC.startswith(buf.to_pybytes())):
        return Salvaged([], [], 0)  # created (the probe was attached) but killed before its first chunk
    body = buf.slice(len(_MAGIC))
    schema: pa.Schema | None = None
    first: pa.RecordBatch | None = None
    pos = 0
    try:
        stream = pa.BufferReader(body)
        reader = pa.ipc.open_stream(stream)
        schema = reader.schema
        pos = stream.tell()
    except (pa.ArrowException, OSError, ValueError, MemoryError):
        pass  # the schema message is damaged: the table's own schema is what the writer wrote
    if schema is not None:
        if not _schema_ok(spec, schema):
            return "its schema is not the table's"
        if any(pa.types.is_dictionary(f.type) for f in schema):
            try:  # the file's dictionaries come with its first batch; a damaged one is not read from
                first = reader.read_next_batch()
                first.validate(full=True)
            except (StopIteration, pa.ArrowException, OSError, ValueError, MemoryError):
                first = None
    try:
        decoder = _Decoder(spec, schema if schema is not None else spec.schema, first)
    except ValueError as e:
        return str(e)

    def chunk_at(at: int) -> tuple[pa.RecordBatch | None, int] | None:
        """(the valid batch, or None for a dictionary or schema message, and where the message ends)
        at offset ``at``, or None when no valid message starts there."""
        found = _message_at(body, at)
        if found is None:
            return None
        message, after = found
        if message.type in ("dictionary", "schema"):
            return None, after
        if message.type != "record batch":
            return None
        try:
            return decoder.decode(message), after
        except (pa.ArrowException, OSError, ValueError, MemoryError):
            return None

    def inner_chunk(start: int, end: int) -> int | None:
        """The first offset in (start, end) where a valid batch begins, if any."""
        for c in _candidates(body, start + 1):
            if c >= end:
                return None
            got = chunk_at(c)
            if got is not None and got[0] is not None:
                return c
        return None

    batches: list[pa.RecordBatch] = []
    skipped: list[tuple[int, int]] = []
    gap: int | None = None  # where the current corrupt region began
    candidates: Iterator[int] = iter(())
    while pos < body.size:
        if gap is None and _bytes(body, pos, 8) == _EOS:
            return Salvaged(batches, skipped, 0)  # the rest is a finished file's footer
        got = chunk_at(pos)
        inner = None
        if got is not None and got[0] is None and gap is not None:
            got = None  # only a valid chunk ends a corrupt region
        if got is not None and got[0] is not None and not _framed(body, got[1]):
            inner = inner_chunk(pos, got[1])
            if inner is not None:
                got = None  # mis-framed: a real chunk starts inside what it claims
        if got is not None:
            if gap is not None:
                skipped.append((len(_MAGIC) + gap, pos - gap))
                gap = None
            if got[0] is not None:
                batches.append(got[0])
            pos = got[1]
            continue
        if gap is None:
            gap = pos
            candidates = _candidates(body, pos + 1)
        if inner is not None:
            pos = inner
        else:
            pos = next((c for c in candidates if c > pos), body.size)
    if schema is None and not batches:
        return "not an Arrow IPC stream after the header, and no valid chunk in it (corrupt)"
    return Salvaged(batches, skipped, body.size - gap if gap is not None else 0)


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
        _rewrite(d, spec, salvaged.batches)
        n = len(salvaged.skipped)
        if n:
            action = f"rebuilt past {n} corrupt region{'s' if n > 1 else ''}"
        elif salvaged.batches or buf.size > len(_MAGIC):
            action = "rebuilt footer"
        else:
            action = "rebuilt empty (no chunk was written)"
        lost = salvaged.tail + sum(size for _, size in salvaged.skipped)
        return Repaired(spec.name, sum(b.num_rows for b in salvaged.batches), action, lost,
                        tuple(salvaged.skipped))
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
        report = _report(manifest, results, was_complete, manifest_problem)
        manifest.complete = True
        manifest.extra["repaired"] = True
        manifest.extra["repair"] = report
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
    """What the repair did and what is lost, for the manifest's extra.repair (merged with an earlier
    repair's report: a trace repaired twice keeps what the first repair found)."""
    earlier = m.extra.get("repair") if isinstance(m.extra.get("repair"), dict) else {}
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
    before = loss(m.extra)  # an earlier repair's verdict stands: counts it found unknown stay unknown
    counts_known = bool(m.probes) and (before is None or before[0])
    if not counts_known:
        notes.append(COUNTS_UNKNOWN)
    tables = {r.table: {"rows": r.rows, "action": r.action, "lost_bytes": r.lost_bytes,
                        "skipped": [{"offset": o, "bytes": n} for o, n in r.skipped]} for r in results}
    old_tables = earlier.get("tables") if isinstance(earlier.get("tables"), dict) else {}
    for name, t in old_tables.items():
        if name not in tables or tables[name]["action"] == "ok":
            tables[name] = t  # what the earlier repair did to it still stands
    old_missing = earlier.get("missing") if isinstance(earlier.get("missing"), dict) else {}
    old_notes = earlier.get("notes") if isinstance(earlier.get("notes"), list) else []
    old_bytes = earlier.get("lost_bytes") if isinstance(earlier.get("lost_bytes"), int) else 0
    return {
        "tables": tables,
        "missing": {**old_missing, **missing},
        "lost_bytes": old_bytes + sum(r.lost_bytes for r in results),
        "counts_known": counts_known,
        "notes": list(dict.fromkeys([*old_notes, *notes])),
    }


COUNTS_UNKNOWN = "events and lost-event counts per probe are unknown: the recorder writes them when it stops"


def loss(extra: Any) -> tuple[bool, int] | None:
    """For a repaired trace, (whether the probes' event and loss counts are known, bytes repair dropped);
    None for a trace that was never repaired. A report from an older mmreplay counts as unknown."""
    if not isinstance(extra, dict) or not extra.get("repaired"):
        return None
    rep = extra.get("repair")
    if not isinstance(rep, dict):
        return False, 0
    dropped = rep.get("lost_bytes") if isinstance(rep.get("lost_bytes"), int) else 0
    known = rep.get("counts_known")
    if not isinstance(known, bool):  # written before counts_known existed: the note says it
        known = COUNTS_UNKNOWN not in (rep.get("notes") or [])
    return known, dropped


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
            skipped = t.get("skipped") if isinstance(t.get("skipped"), list) else []
            regions = [f"{r.get('bytes')} bytes at offset {r.get('offset')}" for r in skipped if isinstance(r, dict)]
            if regions:
                more = f" and {len(regions) - 5} more" if len(regions) > 5 else ""
                lines.append(f"    corrupt, skipped: {', '.join(regions[:5])}{more} (the chunks there are lost, "
                             "their rows unknown)")
    missing = rep.get("missing") if isinstance(rep.get("missing"), dict) else {}
    for name, why in missing.items():
        lines.append(f"  missing table {name}: {why}")
    for note in rep.get("notes") or []:
        lines.append(f"  {note}")
    return lines
