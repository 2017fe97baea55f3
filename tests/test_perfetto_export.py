"""`mmreplay export` writes a native Perfetto trace: read back with Perfetto's own protos, every kind of track is there.

What Perfetto builds its views from is checked packet by packet: compact sched bundles per CPU
(CPU tracks, thread states, wake-ups), thread and process descriptors, slices that nest on every
track, instants, a runnable-tasks counter, and for replay results one process per policy set.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from pathlib import Path

import pytest

from replay.cli.main import main
from replay.trace.reader import Trace
from tests import analytics_fixtures as fx

pb = pytest.importorskip("perfetto.protos.perfetto.trace.perfetto_trace_pb2",
                         reason="the perfetto package (pip install '.[test]') provides the trace protos")

SAMPLES = Path(__file__).parent.parent / "sample_traces"


def packets(path: Path) -> list:
    """Every TracePacket of the file, compressed groups inflated, in file order."""
    out = []
    trace = pb.Trace()
    trace.ParseFromString(path.read_bytes())
    for p in trace.packet:
        if p.HasField("compressed_packets"):
            inner = pb.Trace()
            inner.ParseFromString(zlib.decompress(p.compressed_packets))
            out.extend(inner.packet)
        else:
            out.append(p)
    return out


class Parsed:
    """What a trace reader makes of the packets: tracks, slices per track, instants, counters, sched."""

    def __init__(self, pkts: list):
        self.tracks = {p.track_descriptor.uuid: p.track_descriptor for p in pkts if p.HasField("track_descriptor")}
        names: dict[int, str] = {}
        ann: dict[int, str] = {}
        strings: dict[int, str] = {}
        self.slices: dict[int, list[tuple[int, int, str, dict]]] = defaultdict(list)
        self.instants: dict[int, list[tuple[int, str, dict]]] = defaultdict(list)
        self.counters: dict[int, list[tuple[int, int]]] = defaultdict(list)
        open_: dict[int, list] = defaultdict(list)
        self.switches: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
        self.wakings: list[tuple[int, int, int]] = []
        self.process_tree = [p.process_tree for p in pkts if p.HasField("process_tree")]
        self.kernel = [p.system_info.utsname.release for p in pkts if p.HasField("system_info")]
        events = []
        for i, p in enumerate(pkts):
            if p.HasField("interned_data"):
                names.update({e.iid: e.name for e in p.interned_data.event_names})
                ann.update({e.iid: e.name for e in p.interned_data.debug_annotation_names})
                strings.update({e.iid: e.str.decode() for e in p.interned_data.debug_annotation_string_values})
            if p.HasField("track_event"):
                te = p.track_event
                assert te.track_uuid in self.tracks, "an event on a track never described"
                args = {}
                for a in te.debug_annotations:
                    value = (strings[a.string_value_iid] if a.HasField("string_value_iid")
                             else getattr(a, a.WhichOneof("value")))
                    args[ann[a.name_iid]] = value
                events.append((p.timestamp, i, te.type, te.track_uuid, names.get(te.name_iid), args,
                               te.counter_value))
            if p.HasField("ftrace_events"):
                b = p.ftrace_events
                cs = b.compact_sched
                ts = 0
                for d, state, nxt, comm in zip(cs.switch_timestamp, cs.switch_prev_state, cs.switch_next_pid,
                                               cs.switch_next_comm_index, strict=True):
                    ts += d
                    self.switches[b.cpu].append((ts, nxt, state))
                    assert comm < len(cs.intern_table)
                ts = 0
                for d, tid, target in zip(cs.waking_timestamp, cs.waking_pid, cs.waking_target_cpu, strict=True):
                    ts += d
                    self.wakings.append((ts, tid, target))
        # trace processor sorts by timestamp, keeping file order among equal timestamps
        for ts, _, kind, track, name, args, value in sorted(events, key=lambda e: (e[0], e[1])):
            if kind == pb.TrackEvent.TYPE_SLICE_BEGIN:
                open_[track].append((ts, name, args))
            elif kind == pb.TrackEvent.TYPE_SLICE_END:
                start, name0, args0 = open_[track].pop()
                self.slices[track].append((start, ts, name0, args0))
            elif kind == pb.TrackEvent.TYPE_INSTANT:
                self.instants[track].append((ts, name, args))
            elif kind == pb.TrackEvent.TYPE_COUNTER:
                self.counters[track].append((ts, value))
        assert not any(open_.values()), "slices never ended"

    def named(self, name: str) -> list[int]:
        return [u for u, t in self.tracks.items() if t.name == name]

    def owner(self, uuid: int):
        """The thread descriptor (or named task track) a track hangs from."""
        t = self.tracks[uuid]
        while not t.HasField("thread") and t.parent_uuid and not t.name.startswith("task"):
            t = self.tracks[t.parent_uuid]
        return t

    def all_slices(self, name: str) -> list[tuple[int, int, str, dict]]:
        return [s for u in self.named(name) for s in self.slices[u]]


def export(tmp_path: Path, src: Path, capsys: pytest.CaptureFixture, *extra: str) -> tuple[Parsed, str]:
    out = tmp_path / "out.perfetto-trace"
    assert main(["export", str(src), "-o", str(out), *extra]) == 0
    err = capsys.readouterr().err
    return Parsed(packets(out)), err


def test_recorded_trace_has_cpu_tracks_wakeups_threads_slices_instants_and_a_counter(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = fx.write_recorded(tmp_path / "t")
    trace = Trace.open(src)
    got, err = export(tmp_path, src, capsys)
    assert "perfetto" in err and got.kernel == [fx.HOST.kernel_release]
    # CPU tracks: every sched_switch, on its CPU, in time order, with its next task and prev_state
    switch = trace.read("sched_switch").sort("seq")
    for cpu in (0, 1):
        rows = switch.filter(switch["cpu"] == cpu)
        assert got.switches[cpu] == list(zip(rows["ts"], rows["next_tid"], rows["prev_state"], strict=True))
    # wake-ups: the sched_waking rows, and sched_wakeup only for the sleeps without one
    assert sorted(got.wakings) == [(1000, 101, 0)]
    # processes and threads as the tasks table names them
    tree = got.process_tree[0]
    assert {(p.pid, p.cmdline[0]) for p in tree.processes} == {(100, "main"), (200, "kthreadd")}
    assert {(t.tid, t.tgid, t.name) for t in tree.threads} == {(101, 100, "worker1"), (102, 100, "worker2")}
    # one slice per interval row, one instant per point row, each on a track under its own thread
    for kind, table in (("lock waits", "lock_waits"), ("lock holds", "lock_holds"), ("syscalls", "syscalls"),
                        ("mmu_gather", "gathers"), ("page free", "page_free_batches")):
        df = trace.read(table)
        slices = [(u, s) for u in got.named(kind) for s in got.slices[u]]
        assert sorted((s[0], s[1] - s[0]) for _, s in slices) == sorted(zip(df["ts"], df["dur"], strict=True)), kind
        assert {got.owner(u).thread.tid for u, _ in slices} == set(df["tid"].to_list()), kind
    for kind, table in (("TLB flushes", "tlb_flushes"), ("IPIs", "ipis"), ("page faults", "page_faults")):
        points = [i for u in got.named(kind) for i in got.instants[u]]
        assert sorted(p[0] for p in points) == sorted(trace.read(table)["ts"].to_list()), kind
    # preempt-off sections: the spinning waits and spin-class holds (replay/analytics/preempt.py)
    assert got.all_slices("preempt off")
    # locks carry their class, and the caller from the stack, as arguments
    waits = got.all_slices("lock waits")
    assert all("lock_class" in a and "lock_addr" in a for *_, a in waits)
    assert {a.get("caller") for *_, a in waits} >= {"do_user_addr_fault"}
    # runnable tasks: 101 woken at 1000, running at 5000; 102 woken at 10_000, running at 12_000
    (counter,) = got.named("runnable tasks")
    assert got.tracks[counter].HasField("counter")
    assert got.counters[counter][:4] == [(1000, 1), (5000, 0), (10_000, 1), (10_500, 2)]
    assert all(v >= 0 for _, v in got.counters[counter])


def test_slices_nest_on_every_track(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # Perfetto closes the innermost open slice at each end: crossing slices would be misdrawn
    got, _ = export(tmp_path, SAMPLES / "take-all-locks", capsys)
    assert sum(len(v) for v in got.slices.values()) > 30_000
    for slices in got.slices.values():
        ends: list[int] = []
        for start, end, *_ in sorted(slices, key=lambda s: (s[0], -s[1])):
            while ends and ends[-1] <= start:
                ends.pop()
            assert not ends or end <= ends[-1], "slices cross"
            ends.append(end)


#: the tier-2 sample is mostly lock-hold slices (62 % of its rows), each with its class, caller and address
#: as arguments, which interning cannot share: measured 11.0x smaller than the JSON, against 20-52x for the
#: tier-1 recordings, whose page faults and syscalls compress to a few bytes each
MIN_RATIO = {"take-all-locks-tier2": 10}


@pytest.mark.parametrize("sample", sorted(p.name for p in SAMPLES.iterdir() if (p / "manifest.json").exists()))
def test_every_sample_exports_with_cpu_tracks_at_a_twentieth_of_the_json(
        sample: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    got, _ = export(tmp_path, SAMPLES / sample, capsys)
    trace = Trace.open(SAMPLES / sample)
    assert sum(len(v) for v in got.switches.values()) == trace.rows("sched_switch")
    assert set(got.switches) == set(trace.read("sched_switch")["cpu"].unique().to_list())
    assert main(["export", str(SAMPLES / sample), "--format", "json", "-o", str(tmp_path / "legacy.json")]) == 0
    ratio = (tmp_path / "legacy.json").stat().st_size / (tmp_path / "out.perfetto-trace").stat().st_size
    assert ratio >= MIN_RATIO.get(sample, 20), f"protobuf only {ratio:.1f}x smaller than the JSON"


def test_results_are_one_process_per_policy_set_with_cpu_tracks_and_the_probe(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    got, err = export(tmp_path, fx.write_results(tmp_path / "r"), capsys)
    assert "missing" not in err  # no TLB or fault tables are expected from the simulator
    procs = {u: t.process.process_name for u, t in got.tracks.items() if t.HasField("process")}
    assert sorted(procs.values()) == ["mutex (seed 0)", "spinlock (seed 0)"]
    by_name = {v: k for k, v in procs.items()}
    cpu0 = [u for u in got.named("CPU 0") if got.tracks[u].parent_uuid == by_name["spinlock (seed 0)"]]
    assert [(s[0], s[1], s[2]) for s in got.slices[cpu0[0]]] == [(0, 10_000, "task 101"), (10_000, 20_000, "task 102"),
                                                                 (20_000, 30_000, "task 101")]
    # seed 0 only: spinlock waits 1000 and 2000, mutex 10_000 and 500
    waits = sorted(s[1] - s[0] for s in got.all_slices("lock waits"))
    assert waits == [500, 1000, 2000, 10_000]
    assert sorted(s[1] - s[0] for s in got.all_slices("probe")) == [100, 200, 1000]
    assert len(got.named("runnable tasks")) == 2
    (tmp_path / "s1").mkdir()
    got1, _ = export(tmp_path / "s1", fx.write_results(tmp_path / "r1"), capsys, "--seed", "1")
    assert sorted(s[1] - s[0] for s in got1.all_slices("lock waits")) == [3000, 4000, 20_000]


def test_a_trace_without_scheduling_tables_still_exports_and_says_what_is_missing(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = fx.write_recorded(tmp_path / "t", only=("tasks", "lock_waits", "stacks", "symbols", "tlb_flushes"))
    got, err = export(tmp_path, src, capsys)
    assert not got.switches and got.all_slices("lock waits") and got.named("TLB flushes")
    assert "missing sched_switch" in err and "missing sched_wakeup" in err and "missing syscalls" in err


def test_export_replaces_only_its_own_export_and_never_through_a_link(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    src = fx.write_recorded(tmp_path / "t", only=("tasks",))
    out = tmp_path / "x.perfetto-trace"
    out.write_text("keep")
    assert main(["export", str(src), "-o", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and out.read_text() == "keep"
    link = tmp_path / "link.perfetto-trace"
    link.symlink_to(out)
    assert main(["export", str(src), "-o", str(link), "--force"]) == 2
    assert out.read_text() == "keep"
    assert main(["export", str(src), "-o", str(out), "--force"]) == 2  # not mmreplay's: kept
    assert "not written by mmreplay" in capsys.readouterr().err and out.read_text() == "keep"
    ours = tmp_path / "ours.perfetto-trace"
    assert main(["export", str(src), "-o", str(ours)]) == 0
    first = ours.read_bytes()
    ours.write_bytes(first[:64])  # a torn export of ours is still ours
    assert main(["export", str(src), "-o", str(ours), "--force"]) == 0 and ours.read_bytes() == first
