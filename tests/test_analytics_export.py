"""`mmreplay export --perfetto` writes valid Chrome JSON whose events match the tables one to one."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from replay.cli.main import main
from replay.trace.reader import Trace
from tests import analytics_fixtures as fx

SLICES = {"lock_hold": "lock_holds", "lock_wait": "lock_waits", "syscall": "syscalls", "gather": "gathers",
          "page_free": "page_free_batches"}
INSTANTS = {"page_fault": "page_faults", "tlb_flush": "tlb_flushes", "ipi": "ipis"}


def export(tmp_path: Path, src: Path, capsys: pytest.CaptureFixture) -> dict:
    out = tmp_path / "out.json"
    assert main(["export", str(src), "--perfetto", "-o", str(out)]) == 0
    assert "events" in capsys.readouterr().err
    return json.loads(out.read_text())


def test_every_interval_row_is_one_complete_event_and_every_point_one_instant(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = fx.write_recorded(tmp_path / "t")
    doc = export(tmp_path, src, capsys)
    trace = Trace.open(src)
    events = doc["traceEvents"]
    by_cat = Counter(e["cat"] for e in events if e["ph"] != "M")
    assert by_cat == {cat: trace.rows(t) for cat, t in {**SLICES, **INSTANTS}.items()}
    assert all(e["ph"] == "X" for e in events if e.get("cat") in SLICES)
    assert all(e["ph"] == "i" and e["s"] == "t" for e in events if e.get("cat") in INSTANTS)


def test_times_are_microseconds_and_slices_keep_their_thread(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    doc = export(tmp_path, fx.write_recorded(tmp_path / "t"), capsys)
    waits = [e for e in doc["traceEvents"] if e.get("cat") == "lock_wait"]
    longest = max(waits, key=lambda e: e["dur"])
    assert (longest["ts"], longest["dur"], longest["pid"], longest["tid"]) == (20_000.0, 100.0, 100, 102)
    assert longest["name"] == "mmap_lock wait" and longest["args"]["lock_addr"] == hex(fx.MMAP_LOCK)


def test_metadata_names_processes_and_threads_from_the_tasks_table(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    doc = export(tmp_path, fx.write_recorded(tmp_path / "t"), capsys)
    meta = [e for e in doc["traceEvents"] if e["ph"] == "M"]
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in meta if e["name"] == "thread_name"}
    procs = {e["pid"]: e["args"]["name"] for e in meta if e["name"] == "process_name"}
    assert threads == {(pid, tid): comm for tid, pid, comm in fx.TASKS}
    assert procs == {100: "main", 200: "kthreadd"}


def test_results_become_one_process_per_policy_set_and_seed(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    doc = export(tmp_path, fx.write_results(tmp_path / "r"), capsys)
    meta = [e for e in doc["traceEvents"] if e["ph"] == "M"]
    procs = {e["pid"]: e["args"]["name"] for e in meta if e["name"] == "process_name"}
    assert sorted(procs.values()) == ["mutex seed 0", "mutex seed 1", "spinlock seed 0", "spinlock seed 1"]
    assert {(e["pid"], e["tid"], e["args"]["name"]) for e in meta if e["name"] == "thread_name"} == {
        (pid, -2, "probe") for pid in procs}
    cats = Counter(e["cat"] for e in doc["traceEvents"] if e["ph"] != "M")
    assert cats == {"lock_wait": 7, "lock_hold": 2, "preempt_off": 3, "syscall": 2, "probe": 5}
    probe = [e for e in doc["traceEvents"] if e.get("cat") == "probe"]
    assert sorted(e["dur"] for e in probe) == [0.1, 0.2, 0.3, 1.0, 2.0] and {e["tid"] for e in probe} == {-2}
    off = [e for e in doc["traceEvents"] if e.get("cat") == "preempt_off"]
    assert sorted(procs[e["pid"]] for e in off) == ["mutex seed 0", "spinlock seed 0", "spinlock seed 0"]


def test_export_refuses_to_overwrite_without_force(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = fx.write_recorded(tmp_path / "t", only=("tasks",))
    out = tmp_path / "x.json"
    out.write_text("keep")
    assert main(["export", str(src), "--perfetto", "-o", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and out.read_text() == "keep"
    # --force replaces only an export of mmreplay's (docs/SECURITY.md)
    assert main(["export", str(src), "--perfetto", "-o", str(out), "--force"]) == 2
    assert "not written by mmreplay" in capsys.readouterr().err and out.read_text() == "keep"
    out.unlink()
    assert main(["export", str(src), "--perfetto", "-o", str(out)]) == 0
    assert main(["export", str(src), "--perfetto", "-o", str(out), "--force"]) == 0
    assert json.loads(out.read_text())["traceEvents"][0]["ph"] == "M"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t", "x.json"]  # no temporary file left


def test_real_recording_exports_properly_nested_slices_at_exact_nanoseconds(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # Perfetto reads µs floats back to integer ns and wants the slices of a thread nested, never crossing
    real = Path(__file__).parent / "data" / "real_page_fault1"
    doc = export(tmp_path, real, capsys)
    holds = Trace.open(real).read("lock_holds")
    exported = sorted(round(e["ts"] * 1000) for e in doc["traceEvents"] if e.get("cat") == "lock_hold")
    assert exported == sorted(holds["ts"].to_list())
    tracks: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for e in doc["traceEvents"]:
        if e["ph"] == "X":
            start = round(e["ts"] * 1000)
            tracks.setdefault((e["pid"], e["tid"]), []).append((start, start + round(e["dur"] * 1000)))
    for slices in tracks.values():
        open_ends: list[int] = []
        for start, end in sorted(slices, key=lambda s: (s[0], -s[1])):
            while open_ends and open_ends[-1] <= start:
                open_ends.pop()
            assert not open_ends or end <= open_ends[-1], "slices cross"
            open_ends.append(end)
