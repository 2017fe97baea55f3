"""`mmreplay repair`: every fully written chunk comes back, whatever else is broken, and `info` says what
was lost.

A killed recording leaves table files without footers (and possibly a torn last chunk), no stop-time
tables (stacks, symbols, tasks) and a manifest with ``complete: false``. The kill test kills a process
that writes exactly as the recorder does (TraceWriter, the recorder's tables, chunks as it drains, the
stop-time tables, the final manifest) at 24 random moments of its life; a live test kills the real
recorder.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from replay.cli.main import main
from replay.errors import TraceError
from replay.trace import Trace, TraceWriter
from replay.trace.repair import repair
from tests.test_trace_format import _faults

ROOT = Path(__file__).resolve().parents[1]


def _unfinished(path: Path, chunks: dict[str, int], rows: int = 1000, recorder: str = "a test") -> None:
    """A trace whose writer died after ``chunks[table]`` chunks of ``rows`` page faults (same schema for the
    tables used here: page_faults only, plus empty declared tables)."""
    code = (
        "import os, sys\n"
        "from replay.trace import TraceWriter\n"
        "from tests.test_trace_format import _faults\n"
        f"w = TraceWriter({str(path)!r}, extra={{'recorder': {recorder!r}}})\n"
        "w.declare('lock_waits'); w.declare('tlb_flushes')\n"
        f"for k in range({chunks['page_faults']}): w.write('page_faults', _faults({rows}, k * {rows}))\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def _info(path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(["info", str(path)]) == 0
    return capsys.readouterr().out


def test_a_zero_byte_table_does_not_stop_the_others_from_being_recovered(tmp_path: Path, capsys) -> None:
    t = tmp_path / "t"
    _unfinished(t, {"page_faults": 3})
    (t / "lock_waits.arrow").write_bytes(b"")  # killed before its header reached the disk
    results = {r.table: r for r in repair(t)}
    assert (results["page_faults"].rows, results["page_faults"].action) == (3000, "rebuilt footer")
    assert results["lock_waits"].action == "rebuilt empty (no chunk was written)"
    trace = Trace.open(t)
    assert trace.rows("page_faults") == 3000 and trace.rows("lock_waits") == 0
    out = _info(t, capsys)
    assert "lock_waits: rebuilt empty (no chunk was written), 0 rows kept" in out
    assert "missing table tasks: the recording was killed before it stopped" not in out  # not a recording


def test_a_torn_last_chunk_is_dropped_and_counted(tmp_path: Path, capsys) -> None:
    t = tmp_path / "t"
    _unfinished(t, {"page_faults": 4})
    f = t / "page_faults.arrow"
    size = f.stat().st_size
    with open(f, "r+b") as fh:
        fh.truncate(size - 100)  # the fourth chunk is torn
    [r] = [r for r in repair(t) if r.table == "page_faults"]
    assert (r.rows, r.action) == (3000, "rebuilt footer") and r.lost_bytes > 0
    assert Trace.open(t).read("page_faults")["seq"].to_list() == list(range(3000))
    out = _info(t, capsys)
    assert f"page_faults: rebuilt footer, 3000 rows kept, {r.lost_bytes} bytes dropped" in out


def test_garbage_fifo_and_links_are_dropped_with_a_reason_and_never_read(tmp_path: Path, capsys) -> None:
    t = tmp_path / "t"
    _unfinished(t, {"page_faults": 2})
    (t / "lock_waits.arrow").write_bytes(os.urandom(5000))
    (t / "tlb_flushes.arrow").unlink()
    os.mkfifo(t / "tlb_flushes.arrow")  # opening it for reading would wait for a writer forever
    (t / "ipis.arrow").symlink_to("/etc/passwd")
    results = {r.table: r.action for r in repair(t)}
    assert results == {"page_faults": "rebuilt footer", "lock_waits": "dropped (not an Arrow IPC stream after the "
                       "header, and no valid chunk in it (corrupt))", "tlb_flushes": "dropped (not a regular file)",
                       "ipis": "dropped (not a regular file)"}
    assert Trace.open(t).tables == ["page_faults"]
    out = _info(t, capsys)
    assert "missing table tlb_flushes: not a regular file" in out


def test_a_recording_killed_before_it_stopped_names_the_stop_time_tables(tmp_path: Path, capsys) -> None:
    t = tmp_path / "t"
    _unfinished(t, {"page_faults": 1}, recorder="mmreplay record (bcc)")
    repair(t)
    out = _info(t, capsys)
    for table in ("stacks", "symbols", "tasks"):
        assert f"missing table {table}: the recording was killed before it stopped" in out
    assert "lost-event counts per probe are unknown" in out


def test_a_lost_manifest_is_rebuilt_from_the_tables(tmp_path: Path, capsys) -> None:
    t = tmp_path / "t"
    _unfinished(t, {"page_faults": 2})
    (t / "manifest.json").write_text('{"format": "mmreplay-trace", "vers')  # torn
    repair(t)
    assert Trace.open(t).rows("page_faults") == 2000
    assert "manifest.json was unreadable" in _info(t, capsys)


def test_a_directory_without_manifest_or_tables_is_not_repaired(tmp_path: Path, capsys) -> None:
    (tmp_path / "notes.txt").write_text("x")
    assert main(["repair", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a trace directory" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_finalized_trace_is_left_alone(tmp_path: Path) -> None:
    t = tmp_path / "t"
    with TraceWriter(t) as w:
        w.write("page_faults", _faults(10))
    before = (t / "manifest.json").read_bytes()
    assert [(r.table, r.rows, r.action) for r in repair(t)] == [("page_faults", 10, "ok")]
    assert (t / "manifest.json").read_bytes() == before


def test_a_repair_that_cannot_write_keeps_the_original(tmp_path: Path, monkeypatch) -> None:
    t = tmp_path / "t"
    _unfinished(t, {"page_faults": 2})
    before = (t / "page_faults.arrow").read_bytes()
    import replay.trace.safeio as safeio

    def full(self, name):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safeio.OutputDir, "open_new", full)
    with pytest.raises(TraceError, match="No space left on device.*original is untouched"):
        repair(t)
    assert (t / "page_faults.arrow").read_bytes() == before
    assert not (t / "page_faults.arrow.tmp").exists()


# -- killed at random moments -------------------------------------------------------------------------

def recorder_like(out: str, drains: int, ready) -> None:
    """Writes like tracer.recorder: declare the families' tables, append a chunk every drain (here every
    20 ms), then at stop the stacks and tasks tables and the final manifest."""
    w = TraceWriter(out, extra={"recorder": "recorder-like writer (tests/test_repair.py)"})
    for t in ("page_faults", "lock_waits", "tlb_flushes"):
        w.declare(t)
    ready.set()
    for k in range(drains):
        w.write("page_faults", _faults(2000, k * 2000))
        time.sleep(0.02)
    w.write("stacks", {"stack_id": np.arange(3, dtype=np.int32), "ips": [[1, 2], [3], []]})
    w.write("tasks", {"pid": np.array([7], np.int32), "tid": np.array([8], np.int32), "comm": ["w"]})
    w.close()


def test_a_writer_killed_at_24_random_moments_is_always_repaired_and_readable(tmp_path: Path, capsys) -> None:
    # forkserver: each writer is forked from a process that imported pyarrow once (a fresh interpreter per
    # kill would take seconds), and not from this one, whose threads a fork would not copy.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["numpy", "pyarrow", "replay.trace", "tests.test_trace_format"])
    rng = random.Random(14)
    outcomes = {"killed": 0, "finished": 0}
    for i in range(24):
        out = tmp_path / f"t{i}"
        ready = ctx.Event()
        p = ctx.Process(target=recorder_like, args=(str(out), 15, ready))
        p.start()
        assert ready.wait(30)
        time.sleep(rng.uniform(0, 0.45))  # the drains take ~0.3-0.4 s: some kills land at the stop
        try:
            os.kill(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it finished first (its parent, the fork server, reaped it)
        p.join()
        if json.loads((out / "manifest.json").read_text())["complete"]:
            outcomes["finished"] += 1
            continue
        outcomes["killed"] += 1
        results = {r.table: r for r in repair(out)}
        trace = Trace.open(out)
        # every chunk that was written whole is back, in order
        seq = trace.read("page_faults")["seq"].to_list() if trace.has("page_faults") else []
        assert seq == list(range(len(seq))) and len(seq) % 2000 == 0
        assert results["page_faults"].action in ("ok", "rebuilt footer", "rebuilt empty (no chunk was written)")
        assert "repaired   yes" in _info(out, capsys)
    assert outcomes["killed"] >= 18, outcomes


@pytest.mark.live
def test_the_real_recorder_killed_at_random_moments_is_repaired(tmp_path: Path, capsys) -> None:
    from tracer import kernel_env

    try:
        kernel_env.prepare()
    except kernel_env.EnvironmentProblem as e:
        pytest.skip(f"live recording impossible here: {e}")
    rng = random.Random(1414)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for i in range(2):
        out = tmp_path / f"t{i}"
        p = subprocess.Popen([sys.executable, "-m", "replay", "record", "-o", str(out), "--no-tier2-check",
                              "--system-wide", "--duration", "30"], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not (out / "manifest.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # set-up (compiling the probes) takes seconds
        time.sleep(rng.uniform(0.0, 2.5))
        p.send_signal(signal.SIGKILL)
        p.wait()
        assert main(["repair", str(out)]) == 0
        trace = Trace.open(out)
        assert trace.manifest.extra["repaired"] is True
        assert "missing table tasks: the recording was killed before it stopped" in _info(out, capsys)


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 256 KiB tmpfs: a full disk on demand (root only)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_is_one_line_while_writing_and_while_repairing(tiny_disk: Path, capsys) -> None:
    t = tiny_disk / "t"
    w = TraceWriter(t)
    with pytest.raises(TraceError, match="No space left on device.*mmreplay repair") as e:
        for k in range(1000):
            w.write("page_faults", _faults(2000, k * 2000))
    assert "\n" not in str(e.value)
    written = len(list(t.iterdir()))
    assert written >= 2
    # repair needs room for the rebuilt file: on the full disk it refuses in one line and changes nothing
    before = {p.name: p.read_bytes() for p in t.iterdir()}
    assert main(["repair", str(t)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in t.iterdir()} == before


def test_a_killed_recording_gets_the_span_of_its_recovered_events(tmp_path: Path) -> None:
    t = tmp_path / "t"
    _unfinished(t, {"page_faults": 3}, recorder="mmreplay record (bcc)")
    repair(t)
    m = Trace.open(t).manifest
    # _faults: ts = i * 1000 for i < 3000 (page faults carry no dur)
    assert (m.start_ns, m.end_ns) == (0, 2_999_000)


# -- info's lost headline after a repair -----------------------------------------------------------

def _headline(out: str) -> str:
    return next(line for line in out.splitlines() if line.startswith("lost "))


def test_a_killed_recording_is_never_said_to_have_lost_0(tmp_path: Path, capsys) -> None:
    t = tmp_path / "t"
    _unfinished(t, {"page_faults": 3}, recorder="mmreplay record (bcc)")
    with open(t / "page_faults.arrow", "r+b") as fh:  # and its last chunk torn
        fh.truncate((t / "page_faults.arrow").stat().st_size - 100)
    [r] = [r for r in repair(t) if r.table == "page_faults"]
    headline = _headline(_info(t, capsys))
    assert headline.split()[1] == "unknown:", headline
    assert f"repair dropped {r.lost_bytes} bytes of torn or corrupt chunks" in headline
    capsys.readouterr()
    assert main(["info", str(t), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["lost_events"] is None and s["repair_lost_bytes"] == r.lost_bytes
    # repaired again (nothing left to do, or after more damage): the counts stay unknown
    with open(t / "page_faults.arrow", "r+b") as fh:
        fh.truncate((t / "page_faults.arrow").stat().st_size - 50)
    repair(t)
    headline = _headline(_info(t, capsys))
    assert headline.split()[1] == "unknown:" and "lost-event counts per probe are unknown" in _info(t, capsys)


def test_a_finished_recording_damaged_later_keeps_its_counts_and_adds_what_repair_dropped(tmp_path, capsys):
    from replay.trace.manifest import Probe
    from replay.trace.writer import write_trace

    t = tmp_path / "t"
    write_trace(t, {"page_faults": _faults(3000)}, probes=[Probe("page_fault", 1, events=3000, lost=0)],
                extra={"recorder": "mmreplay record (bcc)"})
    with open(t / "page_faults.arrow", "r+b") as fh:  # the footer and some of the only chunk gone
        fh.truncate(2000)
    [r] = [r for r in repair(t) if r.table == "page_faults"]
    headline = _headline(_info(t, capsys))
    assert not headline.startswith("lost       0 events of the recorded tasks;") and headline.split()[1] == "0"
    assert f"as the recorder counted them, and repair dropped {r.lost_bytes} bytes" in headline
