"""Export a trace or replay results as a native Perfetto trace (protobuf), streamed.

What a recorded trace becomes (ui.perfetto.dev, trace_processor):

* **CPU tracks and thread states** from ``sched_switch`` and **wake-ups** from
  ``sched_wakeup``, as ftrace ``compact_sched`` bundles (the format traced
  itself writes), so Perfetto builds its CPU tracks, thread states and
  "woken by" links exactly as for a trace it recorded;
* the **processes and threads** of the ``tasks`` table (a ProcessTree);
* per thread, **slices** on child tracks of the thread: mm system calls, lock
  waits and holds (named by class and mode, with the lock class, the caller
  and the lock address as arguments), preempt-off sections (the lower bounds
  that replay/analytics/preempt.py derives), mmu_gather windows, page-free
  bursts, mm_take_all_locks; **instants** for TLB flushes, IPIs and page
  faults;
* a **counter** of runnable (woken or preempted, not running) tasks.

Replay results become one process per policy set (one seed each, ``seed``),
side by side: per simulated task the same slice tracks, per simulated CPU a
track of what ran on it, the injected probe's waits, and the runnable-tasks
counter from the simulated switches.

Slices on one Perfetto track must nest. Rows of one family on one thread are
packed into as few lanes as keep them nested (a second lane is a track of the
same name), so overlapping intervals are shown, never cut.

Memory stays bounded: tables are read in slices of :data:`CHUNK_ROWS` rows and
packets leave in zlib-compressed groups (``TracePacket.compressed_packets``,
which trace_processor and the UI inflate), which also keeps the file small.
The protos come from the ``perfetto`` package (``pip install 'mmreplay[perfetto]'``).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
import polars as pl

from replay.analytics.source import SIM_TWINS, Source
from replay.errors import UsageError
from replay.trace import safeio

CHUNK_ROWS = 200_000  # rows of one table in memory at a time
PACKETS_BYTES = 1 << 20  # uncompressed packets per compressed_packets group
SEQ = 1  # the trusted_packet_sequence_id of every TrackEvent packet
PROBE_TID = -2
POINTERS = frozenset({"lock_addr", "mm", "address"})  # shown as hex addresses


def protos() -> Any:
    """The perfetto_trace_pb2 module, or a one-line error saying how to get it."""
    try:
        from perfetto.protos.perfetto.trace import perfetto_trace_pb2
    except ImportError as e:  # the extra is not installed
        raise UsageError(
            "the Perfetto export needs the 'perfetto' package (pip install 'mmreplay[perfetto]'); "
            "--format json writes the legacy Chrome JSON without it"
        ) from e
    return perfetto_trace_pb2


_SMALL = [bytes([i]) if i < 128 else bytes([(i & 0x7F) | 0x80, i >> 7]) for i in range(1 << 14)]


def _varint(n: int) -> bytes:
    """Protobuf base-128 varint (negative int64 values as their 10-byte two's complement)."""
    if 0 <= n < 16384:
        return _SMALL[n]
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def varints(values: np.ndarray) -> list[bytes]:
    """_varint of every (non-negative) value of an integer array, encoded with numpy."""
    v = np.asarray(values).astype(np.uint64)
    n = len(v)
    out = np.zeros((n, 10), dtype=np.uint8)
    lens = np.ones(n, dtype=np.int64)
    for i in range(10):
        more = v > 0x7F
        out[:, i] = (v & np.uint64(0x7F)).astype(np.uint8) | (more.astype(np.uint8) << 7)
        v = v >> np.uint64(7)
        if not more.any():
            break
        lens += more
    buf = out.tobytes()
    return [buf[10 * k:10 * k + int(m)] for k, m in enumerate(lens.tolist())]


class PacketWriter:
    """Streams TracePackets into a file, deflating them in groups of about 1 MB."""

    def __init__(self, f: IO[bytes], pb: Any, compress: bool = True):
        self.f, self.pb, self.compress = f, pb, compress
        self.buf = bytearray()
        self.packets = 0

    def write(self, packet: Any) -> None:
        self.write_bytes(packet.SerializeToString())

    def write_bytes(self, data: bytes) -> None:
        """A TracePacket already serialized."""
        self.buf += b"\x0a" + _varint(len(data)) + data  # Trace.packet is field 1, length-delimited
        self.packets += 1
        if len(self.buf) >= PACKETS_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self.buf:
            return
        if self.compress:
            outer = self.pb.TracePacket(compressed_packets=zlib.compress(bytes(self.buf), 9))
            data = outer.SerializeToString()
            self.f.write(b"\x0a" + _varint(len(data)) + data)
        else:
            self.f.write(bytes(self.buf))
        self.buf = bytearray()


@dataclass
class Interner:
    """Per-sequence interned strings (event names, annotation names and string values)."""

    tables: dict[str, dict[str, int]] = field(default_factory=dict)

    def iid(self, table: str, s: str, pending: list[tuple[str, int, str]]) -> int:
        t = self.tables.setdefault(table, {})
        i = t.get(s)
        if i is None:
            i = t[s] = len(t) + 1
            pending.append((table, i, s))
        return i


class TrackEvents:
    """Writes track descriptors and TrackEvents on one sequence, with interning."""

    def __init__(self, w: PacketWriter):
        self.w, self.pb = w, w.pb
        self.interner = Interner()
        self.f = Fields(self.pb)
        self.ann_cache: dict[tuple[str, Any], bytes] = {}
        self.first = True
        self.next_uuid = 1
        self.counts: dict[str, int] = {}

    def uuid(self) -> int:
        self.next_uuid += 1
        return self.next_uuid

    def describe(self, uuid: int, *, name: str | None = None, parent: int | None = None,
                 thread: tuple[int, int, str] | None = None, process: tuple[int, str] | None = None,
                 counter: bool = False, rank: int | None = None) -> None:
        td = self.pb.TrackDescriptor(uuid=uuid)
        if name is not None:
            td.name = name
        if parent is not None:
            td.parent_uuid = parent
        if thread is not None:
            td.thread.pid, td.thread.tid, td.thread.thread_name = thread
        if process is not None:
            td.process.pid, td.process.process_name = process
        if counter:
            td.counter.SetInParent()
        if rank is not None:
            td.sibling_order_rank = rank
        self.w.write(self.pb.TracePacket(track_descriptor=td))

    def _intern(self, pending: list[tuple[str, int, str]]) -> bytes:
        """The interned_data field for strings first used by this packet (rare: built with the protos)."""
        d = self.pb.InternedData()
        for table, iid, s in pending:
            if table == "event_names":
                d.event_names.add(iid=iid, name=s)
            elif table == "debug_annotation_names":
                d.debug_annotation_names.add(iid=iid, name=s)
            else:
                d.debug_annotation_string_values.add(iid=iid, str=s.encode())
        data = d.SerializeToString()
        return self.f.interned_data + _varint(len(data)) + data

    def _header(self, ts: int, ts_varint: bytes | None = None) -> bytes:
        """timestamp, sequence id and flags of a TrackEvent packet."""
        if self.first:
            self.first = False
            flags = self.pb.TracePacket.SEQ_INCREMENTAL_STATE_CLEARED
        else:
            flags = self.pb.TracePacket.SEQ_NEEDS_INCREMENTAL_STATE
        return (self.f.timestamp + (ts_varint if ts_varint is not None else _varint(ts)) + self.f.sequence
                + self.f.flags + _varint(flags))

    def _annotation(self, k: str, v: Any, pending: list[tuple[str, int, str]]) -> bytes:
        key = (k, v) if isinstance(v, (str, bool)) else None
        if key is not None:
            hit = self.ann_cache.get(key)
            if hit is not None:
                return hit
        f = self.f
        body = f.ann_name + _varint(self.interner.iid("debug_annotation_names", k, pending))
        if k in POINTERS:
            body += f.ann_pointer + _varint(int(v))
        elif isinstance(v, str):
            body += f.ann_string + _varint(self.interner.iid("debug_annotation_string_values", v, pending))
        elif isinstance(v, bool):
            body += f.ann_bool + (b"\x01" if v else b"\x00")
        elif isinstance(v, int):
            body += f.ann_int + _varint(v)
        else:
            body += f.ann_double + struct.pack("<d", float(v))
        out = f.annotation + _varint(len(body)) + body
        if key is not None and not pending:  # only once its strings are interned on the sequence
            self.ann_cache[key] = out
        return out

    def _values(self, k: str, col: pl.Series, pending: list[tuple[str, int, str]]) -> list[bytes]:
        """One argument column as encoded debug annotations (b"" where the row has none)."""
        f = self.f
        if col.dtype.is_integer() and col.dtype != pl.Boolean:
            name = f.ann_name + _varint(self.interner.iid("debug_annotation_names", k, pending))
            tag = f.ann_pointer if k in POINTERS else f.ann_int
            pre = [f.annotation + _varint(len(name) + len(tag) + n) + name + tag for n in range(11)]
            vals = varints(col.fill_null(0).to_numpy())
            out = [pre[len(v)] + v for v in vals]
            if col.null_count():
                out = [b"" if null else b for b, null in zip(out, col.is_null().to_list(), strict=True)]
            return out
        cache: dict[Any, bytes] = {}
        out = []
        for v in col.to_list():
            b = cache.get(v)
            if b is None:
                if v is None or (k == "incomplete" and not v):
                    b = b""
                else:
                    before = len(pending)
                    b = self._annotation(k, v, pending)
                    if len(pending) > before:  # interned with this chunk's first packet: reusable from now on
                        self.ann_cache[(k, v)] = b
                cache[v] = b
            out.append(b)
        return out

    def bulk(self, kind: str, tracks: list[int], df: pl.DataFrame, arg_names: list[str]) -> None:
        """Every row of ``df`` (ts, name, [dur], args) as a slice or instant on its track, encoded column-wise.

        Strings first used in this slice of rows are interned on its first packet, which comes
        before every packet that uses them.
        """
        f = self.f
        n = df.height
        if n == 0:
            return
        pending: list[tuple[str, int, str]] = []
        name_iid = {nm: _varint(self.interner.iid("event_names", nm, pending)) for nm in df["name"].unique().to_list()}
        slices = "dur" in df.columns
        kind_b = f.slice_begin if slices else f.instant
        head = f.type + kind_b + f.track
        track_v = varints(np.asarray(tracks, dtype=np.int64))
        cols = [self._values(k, df[k], pending) for k in arg_names]
        names = df["name"].to_list()
        tes = [head + t + f.name + name_iid[nm] + b"".join(a) for t, nm, *a in zip(track_v, names, *cols,
                                                                                       strict=True)]
        ts_v = varints(df["ts"].to_numpy())
        needs = f.flags + _varint(self.pb.TracePacket.SEQ_NEEDS_INCREMENTAL_STATE)
        first = self._header(int(df["ts"][0]), ts_v[0])
        if pending:
            first += self._intern(pending)
        write = self.w.write_bytes
        if slices:
            end_v = varints((df["ts"] + df["dur"].fill_null(0).clip(lower_bound=0)).to_numpy())
            end_head = f.type + f.slice_end + f.track
            for i in range(n):
                te = tes[i]
                hdr = first if i == 0 else f.timestamp + ts_v[i] + f.sequence + needs
                write(hdr + f.track_event + _varint(len(te)) + te)
                te = end_head + track_v[i]
                write(f.timestamp + end_v[i] + f.sequence + needs + f.track_event + _varint(len(te)) + te)
        else:
            for i in range(n):
                te = tes[i]
                hdr = first if i == 0 else f.timestamp + ts_v[i] + f.sequence + needs
                write(hdr + f.track_event + _varint(len(te)) + te)
        self.counts[kind] = self.counts.get(kind, 0) + n

    def event(self, kind: str, track: int, ts: int, name: str, args: dict[str, Any] | None = None,
              dur: int | None = None, ts_varint: bytes | None = None, end_varint: bytes | None = None) -> None:
        """A slice (``dur`` given) or an instant on ``track``; ``kind`` counts it in the summary.

        Encoded by hand (field numbers from the protos' descriptors): building a message
        object per event costs several times more; the tests parse the result with the protos.
        """
        f = self.f
        pending: list[tuple[str, int, str]] = []
        te = (f.type + (f.slice_begin if dur is not None else f.instant) + f.track + _varint(track)
              + f.name + _varint(self.interner.iid("event_names", name, pending)))
        for k, v in (args or {}).items():
            if v is None or (k == "incomplete" and not v):  # only the cut intervals say so
                continue
            te += self._annotation(k, v, pending)
        head = self._header(ts, ts_varint)
        if pending:
            head += self._intern(pending)
        self.w.write_bytes(head + f.track_event + _varint(len(te)) + te)
        if dur is not None:
            te = f.type + f.slice_end + f.track + _varint(track)
            self.w.write_bytes(self._header(ts + max(int(dur), 0), end_varint) + f.track_event + _varint(len(te))
                               + te)
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def counter(self, kind: str, track: int, ts: int, value: int) -> None:
        f = self.f
        te = f.type + f.counter_type + f.track + _varint(track) + f.counter_value + _varint(int(value))
        self.w.write_bytes(self._header(ts) + f.track_event + _varint(len(te)) + te)
        self.counts[kind] = self.counts.get(kind, 0) + 1


class Fields:
    """Tag bytes of the TracePacket/TrackEvent/DebugAnnotation fields written by hand, from the descriptors."""

    def __init__(self, pb: Any):
        def tag(message: Any, name: str) -> bytes:
            fd = message.DESCRIPTOR.fields_by_name[name]
            wire = 2 if fd.type in (fd.TYPE_MESSAGE, fd.TYPE_STRING, fd.TYPE_BYTES) else (
                1 if fd.type in (fd.TYPE_DOUBLE, fd.TYPE_FIXED64) else 0)
            return _varint(fd.number << 3 | wire)

        tp, te, da = pb.TracePacket, pb.TrackEvent, pb.DebugAnnotation
        self.timestamp = tag(tp, "timestamp")
        self.sequence = tag(tp, "trusted_packet_sequence_id") + _varint(SEQ)
        self.flags = tag(tp, "sequence_flags")
        self.track_event = tag(tp, "track_event")
        self.interned_data = tag(tp, "interned_data")
        self.type = tag(te, "type")
        self.slice_begin = _varint(te.TYPE_SLICE_BEGIN)
        self.slice_end = _varint(te.TYPE_SLICE_END)
        self.instant = _varint(te.TYPE_INSTANT)
        self.counter_type = _varint(te.TYPE_COUNTER)
        self.track = tag(te, "track_uuid")
        self.name = tag(te, "name_iid")
        self.counter_value = tag(te, "counter_value")
        self.annotation = tag(te, "debug_annotations")
        self.ann_name = tag(da, "name_iid")
        self.ann_pointer = tag(da, "pointer_value")
        self.ann_string = tag(da, "string_value_iid")
        self.ann_bool = tag(da, "bool_value")
        self.ann_int = tag(da, "int_value")
        self.ann_double = tag(da, "double_value")


class Lanes:
    """Packs the intervals of one track into lanes on which they nest (each lane a Perfetto track)."""

    def __init__(self, make_track: Callable[[int], int]):
        self.make_track = make_track
        self.stacks: list[list[int]] = []  # per lane: ends of the open intervals, outermost first
        self.tracks: list[int] = []

    def place(self, ts: int, end: int) -> int:
        for lane, stack in enumerate(self.stacks):
            while stack and stack[-1] <= ts:
                stack.pop()
            if not stack or stack[-1] >= end:
                stack.append(end)
                return self.tracks[lane]
        self.stacks.append([end])
        self.tracks.append(self.make_track(len(self.tracks)))
        return self.tracks[-1]


@dataclass(frozen=True)
class Family:
    """One table's rows as slices or instants on a per-task track.

    ``frame`` turns a slice of the table (a LazyFrame of at most CHUNK_ROWS rows) into the
    columns ts, [dur], tid, pid, [policy_set, seed], name and the arguments.
    """

    kind: str  # the summary's name and the track's name
    table: str  # recorded table name (Source maps it to the results twin)
    frame: Callable[[Exporter, pl.LazyFrame], pl.LazyFrame]
    instant: bool = False
    rank: int = 0  # order of the track under its task
    recorded: bool = True  # exported from recorded traces
    results: bool = True  # exported from replay results


def _text(col: str) -> pl.Expr:
    return pl.col(col).cast(pl.String)


def _owner_cols(lf: pl.LazyFrame) -> list[pl.Expr]:
    schema = lf.collect_schema()
    cols = [pl.col("tid").cast(pl.Int64)]
    cols.append(pl.col("pid").cast(pl.Int64) if "pid" in schema else pl.lit(None, pl.Int64).alias("pid"))
    for c in ("policy_set", "seed"):
        if c in schema:
            cols.append(pl.col(c).cast(pl.String if c == "policy_set" else pl.Int32))
    return cols


def _lock_waits(ex: Exporter, lf: pl.LazyFrame) -> pl.LazyFrame:
    lf = ex.with_callers(lf)
    schema = lf.collect_schema()
    args = [_text("lock_class"), pl.col("lock_addr")]
    if "caller" in schema:
        args.append(pl.col("caller"))
    if "flags" in schema:
        from replay.analytics.grouping import lock_type

        args.append(lock_type(pl.col("flags")).alias("type"))
    args += [pl.col(c) for c in ("spun_ns", "slept", "incomplete") if c in schema]
    return lf.select(*_owner_cols(lf), "ts", "dur",
                     pl.concat_str([_text("lock_class"), pl.lit(" wait")]).alias("name"), *args)


def _lock_holds(ex: Exporter, lf: pl.LazyFrame) -> pl.LazyFrame:
    lf = ex.with_callers(lf)
    schema = lf.collect_schema()
    args = [_text("lock_class"), _text("mode"), pl.col("lock_addr")]
    args += [pl.col(c) for c in ("caller", "wait", "depth", "derived", "incomplete") if c in schema]
    return lf.select(*_owner_cols(lf), "ts", "dur",
                     pl.concat_str([_text("lock_class"), pl.lit(" "), _text("mode")]).alias("name"), *args)


def _syscalls(ex: Exporter, lf: pl.LazyFrame) -> pl.LazyFrame:
    schema = lf.collect_schema()
    name = next(c for c in ("name", "kind", "op") if c in schema)
    args = [pl.col(c) for c in ("ret", "incomplete") if c in schema]
    return lf.select(*_owner_cols(lf), "ts", "dur", _text(name).alias("name"), *args)


def _sim_preempt_off(ex: Exporter, lf: pl.LazyFrame) -> pl.LazyFrame:
    schema = lf.collect_schema()
    args = [_text("cause"), _text("lock_class")] + [pl.col(c) for c in ("cut",) if c in schema]
    return lf.select(*_owner_cols(lf), "ts", "dur",
                     pl.concat_str([pl.lit("preempt off: "), _text("cause"), pl.lit(" "), _text("lock_class")],
                                   ignore_nulls=True).alias("name"), *args)


def _spin_waits(ex: Exporter, lf: pl.LazyFrame) -> pl.LazyFrame:
    """Recorded preempt-off lower bounds (replay/analytics/preempt.py): waits spinning on a spinlock..."""
    from replay.analytics.grouping import SPIN

    return lf.filter((pl.col("flags") & SPIN) != 0).select(
        *_owner_cols(lf), "ts", "dur", pl.concat_str([pl.lit("preempt off: spin wait "), _text("lock_class")])
        .alias("name"), _text("lock_class"))


def _spin_holds(ex: Exporter, lf: pl.LazyFrame) -> pl.LazyFrame:
    """... and holds of the spinlock classes."""
    from replay.analytics.preempt import SPIN_CLASSES

    return lf.filter(_text("lock_class").is_in(SPIN_CLASSES)).select(
        *_owner_cols(lf), "ts", "dur", pl.concat_str([pl.lit("preempt off: spin hold "), _text("lock_class")])
        .alias("name"), _text("lock_class"))


def _plain(name: str | pl.Expr, args: tuple[str, ...]) -> Callable[[Exporter, pl.LazyFrame], pl.LazyFrame]:
    def frame(ex: Exporter, lf: pl.LazyFrame) -> pl.LazyFrame:
        schema = lf.collect_schema()
        cols = [pl.col(c).cast(pl.String) if isinstance(schema[c], (pl.Enum, pl.Categorical)) else pl.col(c)
                for c in args if c in schema]
        if "dur" in schema:
            cols.insert(0, pl.col("dur"))
        label = pl.lit(name) if isinstance(name, str) else name
        return lf.select(*_owner_cols(lf), "ts", label.alias("name"), *cols)

    return frame


def _ipis(ex: Exporter, lf: pl.LazyFrame) -> pl.LazyFrame:
    out = _plain(pl.format("IPI to {} CPU(s)", pl.col("ncpus")), ("target_cpu", "ncpus"))(ex, lf)
    df = lf.select("callsite", "callback").collect()
    return out.with_columns(ex.symbolize(df["callsite"]).alias("callsite"),
                            ex.symbolize(df["callback"]).alias("callback"))


def _probe(ex: Exporter, lf: pl.LazyFrame) -> pl.LazyFrame:
    schema = lf.collect_schema()
    dur = "latency" if "latency" in schema else "dur"
    return lf.select(pl.lit(PROBE_TID, pl.Int64).alias("tid"), pl.lit(None, pl.Int64).alias("pid"),
                     _text("policy_set"), pl.col("seed").cast(pl.Int32), "ts", pl.col(dur).alias("dur"),
                     pl.concat_str([pl.lit("probe wait: "), _text("cause")], ignore_nulls=True).alias("name"),
                     _text("cause"), pl.col("cpu"), pl.col("tid").alias("running_tid"))


FAMILIES: tuple[Family, ...] = (
    Family("syscalls", "syscalls", _syscalls, rank=0),
    Family("lock waits", "lock_waits", _lock_waits, rank=1),
    Family("lock holds", "lock_holds", _lock_holds, rank=2),
    Family("preempt off", "preempt_off", _sim_preempt_off, rank=3, recorded=False),
    Family("preempt off", "lock_waits", _spin_waits, rank=3, results=False),
    Family("preempt off", "lock_holds", _spin_holds, rank=3, results=False),
    Family("mmu_gather", "gathers", _plain(pl.when(pl.col("fullmm")).then(pl.lit("mmu_gather (fullmm)"))
                                           .otherwise(pl.lit("mmu_gather")), ("pages", "flushes", "incomplete")),
           rank=4),
    Family("page free", "page_free_batches", _plain("page free burst", ("pages", "batched", "incomplete")), rank=5),
    Family("mm_take_all_locks", "take_all_locks", _plain("mm_take_all_locks", ("ret", "incomplete")), rank=6),
    Family("probe", "sched_latency", _probe, rank=7, recorded=False),
    Family("TLB flushes", "tlb_flushes", _plain(pl.concat_str([pl.lit("tlb flush "), _text("reason")]),
                                                ("reason", "pages")), instant=True, rank=8),
    Family("IPIs", "ipis", _ipis, instant=True, rank=9),
    Family("page faults", "page_faults", _plain("page fault", ("error_code",)), instant=True, rank=10),
)


def _chunks(lf: pl.LazyFrame) -> Iterator[pl.DataFrame]:
    """The frame in slices of CHUNK_ROWS rows (tables are memory-mapped: a slice reads only its part)."""
    offset = 0
    while True:
        df = lf.slice(offset, CHUNK_ROWS).collect()
        if df.height == 0:
            return
        yield df
        offset += df.height
        if df.height < CHUNK_ROWS:
            return


class Exporter:
    """The state of one export: tracks made so far and the packet streams."""

    def __init__(self, src: Source, w: PacketWriter, seed: int | None):
        self.src, self.w, self.pb = src, w, w.pb
        self.te = TrackEvents(w)
        self.missing: list[str] = []
        self.task_tracks: dict[tuple, int] = {}
        self.lanes: dict[tuple, Lanes] = {}
        self.comms: dict[int, str] = {}
        self.pids: dict[int, int] = {}
        self.sets: dict[str, tuple[int, int]] = {}  # policy set -> (process track uuid, seed shown)
        self.seed = seed
        self._callers: pl.DataFrame | None = None
        self._symbols: Any = None

    # -- tracks ---------------------------------------------------------------------------------
    def task_track(self, tid: int, pid: int | None, policy_set: str | None) -> int:
        key = (policy_set, tid)
        uuid = self.task_tracks.get(key)
        if uuid is not None:
            return uuid
        uuid = self.te.uuid()
        if policy_set is None:
            pid = self.pids.get(tid, pid if pid is not None else tid)
            self.te.describe(uuid, thread=(pid, tid, self.comms.get(tid, f"tid {tid}")))
        else:
            name = "probe" if tid == PROBE_TID else f"task {tid}"
            self.te.describe(uuid, name=name, parent=self.sets[policy_set][0], rank=max(tid, 0) + 100)
        self.task_tracks[key] = uuid
        return uuid

    def lane_track(self, fam: Family, tid: int, pid: int | None, policy_set: str | None) -> Lanes:
        key = (policy_set, tid, fam.kind, fam.table)
        lanes = self.lanes.get(key)
        if lanes is None:
            parent = self.task_track(tid, pid, policy_set)

            def make(lane: int) -> int:
                uuid = self.te.uuid()
                self.te.describe(uuid, name=fam.kind, parent=parent, rank=fam.rank * 100 + lane)
                return uuid

            lanes = self.lanes[key] = Lanes(make)
        return lanes

    # -- the parts ------------------------------------------------------------------------------
    def header(self) -> None:
        m = self.src.trace.manifest
        info = self.pb.TracePacket()
        info.system_info.utsname.sysname = "Linux"
        info.system_info.utsname.release = m.host.kernel_release or "unknown"
        info.system_info.utsname.machine = m.host.arch or "unknown"
        self.w.write(info)

    def processes(self) -> None:
        """Recorded: the ProcessTree; results: one process track per policy set."""
        if self.src.is_results:
            runs = self.src.runs()
            for k, ps in enumerate(sorted(set(runs["policy_set"].to_list()), key=runs["policy_set"].to_list().index)):
                seeds = sorted(runs.filter(pl.col("policy_set") == ps)["seed"].to_list())
                seed = self.seed if self.seed is not None else seeds[0]
                if seed not in seeds:
                    raise UsageError(f"--seed {seed}: policy set {ps} has seeds {', '.join(map(str, seeds))}")
                uuid = self.te.uuid()
                self.te.describe(uuid, process=(1_000_000 + k, f"{ps} (seed {seed})"))
                self.sets[ps] = (uuid, seed)
            return
        if not self.src.trace.has("tasks"):
            self.missing.append("tasks (threads are named by tid)")
            return
        tasks = self.src.trace.scan("tasks").unique(subset=["tid"], keep="first", maintain_order=True).collect()
        tree = self.pb.TracePacket()
        leaders: dict[int, str] = {}
        for tid, pid, comm in tasks.select("tid", "pid", "comm").iter_rows():
            self.comms[tid], self.pids[tid] = comm, pid
            if tid == pid or pid not in leaders:
                leaders[pid] = comm
        for pid, comm in sorted(leaders.items()):
            tree.process_tree.processes.add(pid=pid, ppid=0, cmdline=[comm])
        for tid, pid, comm in tasks.select("tid", "pid", "comm").iter_rows():
            if tid != pid:
                tree.process_tree.threads.add(tid=tid, tgid=pid, name=comm)
        self.w.write(tree)

    def families(self) -> None:
        absent: dict[str, list[str]] = {}
        for fam in FAMILIES:
            if not (fam.results if self.src.is_results else fam.recorded):
                continue
            if self.src.is_results and fam.table not in SIM_TWINS:
                continue  # the simulator writes no such table: nothing is missing
            if not self.src.has(fam.table):
                absent.setdefault(self.src.name_of(fam.table), []).append(fam.kind)
                continue
            self.te.counts.setdefault(fam.kind, 0)
            lf = self.src.scan(fam.table, "export")
            if self.src.is_results:
                lf = self._one_seed(lf.with_columns(_text("policy_set")))
            for raw in _chunks(lf):
                self._emit(fam, fam.frame(self, raw.lazy()).collect())
        self.missing += [f"{t} (no {', '.join(dict.fromkeys(kinds))} tracks)" for t, kinds in absent.items()]

    def with_callers(self, lf: pl.LazyFrame) -> pl.LazyFrame:
        """Adds ``caller`` (the first function outside the locking primitives) from the stack, if recorded."""
        if "stack_id" not in lf.collect_schema() or not self.src.trace.has("stacks"):
            return lf
        if self._callers is None:
            from replay.analytics.callers import stack_callers

            self._callers = stack_callers(self.src.trace).select("stack_id", "caller").collect()
        return lf.join(self._callers.lazy(), on="stack_id", how="left", maintain_order="left")

    def symbolize(self, addrs: pl.Series) -> pl.Series:
        """Kernel addresses as function names (hex where no symbol covers them)."""
        if self._symbols is None:
            from replay.analytics.callers import SymbolTable

            self._symbols = SymbolTable.from_trace(self.src.trace)
        ips = addrs.to_numpy().astype(np.uint64)
        names, _ = self._symbols.lookup(ips)
        return pl.Series([n if n is not None else hex(int(i)) for n, i in zip(names, ips, strict=True)],
                         dtype=pl.String)

    def _one_seed(self, lf: pl.LazyFrame) -> pl.LazyFrame:
        """The rows of the seed shown for each policy set (a filter, so that slicing stays cheap)."""
        keep = pl.lit(False)
        for ps, (_, seed) in self.sets.items():
            keep = keep | ((pl.col("policy_set") == ps) & (pl.col("seed") == seed))
        return lf.filter(keep)

    def _emit(self, fam: Family, df: pl.DataFrame) -> None:
        df = df.sort("ts", *([] if fam.instant else [pl.col("dur")]), descending=[False] if fam.instant
                     else [False, True])
        if not fam.instant:
            df = df.with_columns(pl.col("dur").fill_null(0).clip(lower_bound=0))
        skip = {"tid", "pid", "policy_set", "seed", "ts", "dur", "name"}
        arg_names = [c for c in df.columns if c not in skip]
        sets = df["policy_set"].to_list() if "policy_set" in df.columns else [None] * df.height
        tracks = []
        if fam.instant:
            for tid, pid, ps in zip(df["tid"].to_list(), df["pid"].to_list(), sets, strict=True):
                lanes = self.lane_track(fam, tid, pid, ps)
                tracks.append(lanes.tracks[0] if lanes.tracks else lanes.place(0, 0))
        else:
            ends = (df["ts"] + df["dur"]).to_list()
            for ts, end, tid, pid, ps in zip(df["ts"].to_list(), ends, df["tid"].to_list(), df["pid"].to_list(), sets,
                                             strict=True):
                tracks.append(self.lane_track(fam, tid, pid, ps).place(ts, end))
        self.te.bulk(fam.kind, tracks, df, arg_names)

    # -- scheduling: recorded ---------------------------------------------------------------------
    def sched(self) -> None:
        if self.src.is_results:
            self._sim_sched()
            return
        have_switch, have_wake = self.src.has("sched_switch"), self.src.has("sched_wakeup")
        if not have_switch:
            self.missing.append("sched_switch (no CPU tracks, thread states or runnable counter)")
        if not have_wake:
            self.missing.append("sched_wakeup (no wake-ups)")
        if have_switch:
            self._compact_switch()
        if have_wake:
            self._compact_waking()
        if have_switch:
            self._runnable_recorded(have_wake)

    def _comm_index(self, tids: list[int], intern: dict[str, int]) -> list[int]:
        out = []
        for t in tids:
            comm = self.comms.get(t, "swapper" if t == 0 else f"tid {t}")
            i = intern.get(comm)
            if i is None:
                i = intern[comm] = len(intern)
            out.append(i)
        return out

    def _bundle(self, cpu: int) -> tuple[Any, Any]:
        p = self.pb.TracePacket()
        b = p.ftrace_events
        b.cpu = cpu
        return p, b.compact_sched

    def _compact_switch(self) -> None:
        lf = self.src.trace.scan("sched_switch").select("cpu", "ts", "seq", "prev_state", "next_tid", "next_prio")
        n = 0
        for df in _chunks(lf):
            for (cpu,), part in df.sort("cpu", "ts", "seq").group_by(["cpu"], maintain_order=True):
                p, cs = self._bundle(int(cpu))
                ts = part["ts"].to_numpy()
                intern: dict[str, int] = {}
                cs.switch_timestamp.extend(np.diff(ts, prepend=0).tolist())
                cs.switch_prev_state.extend(part["prev_state"].to_list())
                tids = part["next_tid"].to_list()
                cs.switch_next_pid.extend(tids)
                cs.switch_next_prio.extend(part["next_prio"].to_list())
                cs.switch_next_comm_index.extend(self._comm_index(tids, intern))
                cs.intern_table.extend(intern)
                self.w.write(p)
                n += part.height
        self.te.counts["sched_switch"] = n

    def _compact_waking(self) -> None:
        lf = self.src.trace.scan("sched_wakeup")
        kinds = lf.select(_text("kind").unique()).collect()["kind"].to_list()
        # sched_waking is when the waker asks (what Perfetto draws from); fall back to sched_wakeup
        wanted = ["waking", "wakeup_new"] if "waking" in kinds else ["wakeup", "wakeup_new"]
        lf = lf.filter(_text("kind").is_in(wanted)).select("cpu", "ts", "seq", "tid", "prio", "target_cpu")
        n = 0
        for df in _chunks(lf):
            for (cpu,), part in df.sort("cpu", "ts", "seq").group_by(["cpu"], maintain_order=True):
                p, cs = self._bundle(int(cpu))
                intern: dict[str, int] = {}
                tids = part["tid"].to_list()
                cs.waking_timestamp.extend(np.diff(part["ts"].to_numpy(), prepend=0).tolist())
                cs.waking_pid.extend(tids)
                cs.waking_target_cpu.extend(part["target_cpu"].to_list())
                cs.waking_prio.extend(part["prio"].to_list())
                cs.waking_comm_index.extend(self._comm_index(tids, intern))
                cs.waking_common_flags.extend([1] * part.height)
                cs.intern_table.extend(intern)
                self.w.write(p)
                n += part.height
        self.te.counts["sched_wakeup"] = n

    def _runnable_recorded(self, have_wake: bool) -> None:
        """Runnable-but-not-running tasks over time, from each task's last scheduling event."""
        from replay.analytics.sched import runnable

        switch = self.src.trace.scan("sched_switch")
        parts = [
            switch.select("ts", "seq", pl.col("next_tid").alias("tid"), pl.lit(0, pl.Int8).alias("state")),
            switch.select("ts", "seq", pl.col("prev_tid").alias("tid"),
                          runnable(pl.col("prev_state")).cast(pl.Int8).alias("state")),
        ]
        if have_wake:
            parts.append(self.src.trace.scan("sched_wakeup").select("ts", "seq", "tid", pl.lit(1, pl.Int8)
                                                                       .alias("state")))
        changes = (
            pl.concat(parts).filter(pl.col("tid") != 0).sort("seq")
            .with_columns((pl.col("state") - pl.col("state").shift(1, fill_value=0).over("tid"))
                          .cast(pl.Int32).alias("delta"))
            .filter(pl.col("delta") != 0)
            .select("ts", pl.col("delta").cum_sum().clip(lower_bound=0).alias("n"))
            .filter(pl.col("n") != pl.col("n").shift(1, fill_value=-1))
        )
        self._counter(None, changes)

    def _counter(self, policy_set: str | None, changes: pl.LazyFrame) -> None:
        uuid = self.te.uuid()
        parent = self.sets[policy_set][0] if policy_set is not None else None
        self.te.describe(uuid, name="runnable tasks", parent=parent, counter=True, rank=0)
        self.te.counts.setdefault("runnable counter", 0)
        for df in _chunks(changes):
            for ts, n in df.iter_rows():
                self.te.counter("runnable counter", uuid, ts, n)

    # -- scheduling: replay results -------------------------------------------------------------
    def _sim_sched(self) -> None:
        if not self.src.has("sched_delay"):
            self.missing.append("sim_sched (no CPU tracks or runnable counter)")
            return
        lf = self._one_seed(self.src.scan("sched_delay", "export").with_columns(_text("policy_set")))
        self.te.counts.setdefault("cpu slices", 0)
        for ps, (proc, _) in self.sets.items():
            one = lf.filter(pl.col("policy_set") == ps)
            runs = (one.sort("cpu", "ts")
                    .with_columns(pl.col("ts").shift(-1).over("cpu").alias("end"))
                    .filter(pl.col("next_tid") != -1)
                    .with_columns(pl.col("end").fill_null(pl.col("ts")))
                    .select("cpu", "ts", (pl.col("end") - pl.col("ts")).alias("dur"), "next_tid",
                            _text("reason"), "wait"))
            cpu_tracks: dict[int, int] = {}
            for df in _chunks(runs):
                for cpu, ts, dur, tid, reason, wait in df.iter_rows():
                    track = cpu_tracks.get(cpu)
                    if track is None:
                        track = cpu_tracks[cpu] = self.te.uuid()
                        self.te.describe(track, name=f"CPU {cpu}", parent=proc, rank=1 + cpu)
                    name = "probe" if tid == PROBE_TID else f"task {tid}"
                    self.te.event("cpu slices", track, ts, name, {"waited_ns": wait, "prev_left": reason}, dur=dur)
            waited = one.filter((pl.col("next_tid") >= 0) & (pl.col("wait") > 0))
            changes = (
                pl.concat([
                    waited.select((pl.col("ts") - pl.col("wait")).clip(lower_bound=0).alias("ts"),
                                  pl.lit(1, pl.Int32).alias("d")),
                    waited.select("ts", pl.lit(-1, pl.Int32).alias("d")),
                ])
                .group_by("ts").agg(pl.col("d").sum()).sort("ts")
                .select("ts", pl.col("d").cum_sum().alias("n"))
            )
            self._counter(ps, changes)


def _ours(head: bytes) -> bool:
    """Whether a file's first bytes are a Perfetto trace as this module writes it: a first packet that
    holds a zlib group (``compressed_packets``, field 50) at level 9."""

    def varint(i: int) -> int | None:
        while i < len(head) and head[i] & 0x80:
            i += 1
        return i + 1 if i < len(head) else None

    if not head.startswith(b"\x0a"):
        return False
    i = varint(1)
    if i is None or head[i:i + 2] != b"\x92\x03":
        return False
    j = varint(i + 2)
    return j is not None and head[j:j + 2] == b"\x78\xda"


def export(src: Source, out: str | os.PathLike[str], seed: int | None = None,
           compress: bool = True, *, force: bool = False) -> tuple[dict[str, int], list[str]]:
    """Write ``out`` as a Perfetto protobuf trace.

    Returns the events written per kind and the tables that were missing (their tracks are absent).
    Written under replay.trace.safeio's rules: never through a link, an existing file replaced only
    with ``force`` and only if it is an export of mmreplay's.
    """
    pb = protos()
    with safeio.replacing(out, force=force, ours=_ours, mode="wb") as f:
        w = PacketWriter(f, pb, compress)
        ex = Exporter(src, w, seed)
        ex.header()
        ex.processes()
        ex.sched()
        ex.families()
        w.flush()
    return ex.te.counts, ex.missing
