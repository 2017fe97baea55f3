"""Signals at every phase of `mmreplay record -- CMD`, and the command's exit status.

SIGINT/SIGTERM during set-up abandon it (exit 128+N, the command is stopped, never left running);
during recording they stop it and the trace is finalized; a second signal while stopping is ignored
so the trace is still finalized. A command that fails makes record exit with its status, as `time`
and `perf stat` do.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from replay.cli.record import command_exit
from replay.trace.reader import Trace
from tracer.recorder import _Command

ROOT = Path(__file__).resolve().parents[1]


def _marker() -> str:
    """A unique extra argument for sleep (GNU sleep adds up its arguments): 0.<12 digits> seconds."""
    return f"0.{uuid.uuid4().int % 10**12:012d}"


def _running(marker: str, but: int = -1) -> list[int]:
    """pids (other than ``but``) whose command line holds ``marker``."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and d.name != str(but):
            try:
                if marker.encode() in (d / "cmdline").read_bytes():
                    out.append(int(d.name))
            except OSError:
                pass
    return out


def test_a_recorder_that_dies_before_releasing_the_command_never_runs_it(tmp_path: Path) -> None:
    flag = tmp_path / "ran"
    cmd = _Command(["sh", "-c", f"touch {flag}"])
    os.close(cmd._w)  # what SIGKILL of the recorder does to the pipe
    assert cmd.proc.wait(10) == 125
    assert not flag.exists()


def test_a_recorder_killed_while_the_command_runs_takes_the_command_with_it(tmp_path: Path) -> None:
    marker = _marker()
    code = ("import sys, time\n"
            "from tracer.recorder import _Command\n"
            f"c = _Command(['sleep', '60', '{marker}'])\n"
            "c.release(); print(c.pid, flush=True); time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         stdout=subprocess.PIPE, text=True)
    pid = int(p.stdout.readline())
    deadline = time.monotonic() + 10
    while not _running(marker, but=p.pid):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert _running(marker, but=p.pid) == [pid]  # sleep itself, exec'd in place of the stub
    p.kill()  # SIGKILL: no handler, no finally runs in the recorder
    p.wait()
    deadline = time.monotonic() + 10
    while _running(marker):
        assert time.monotonic() < deadline, "the command outlived the recorder"
        time.sleep(0.02)


@pytest.mark.parametrize("status, reason, code, says", [
    (0, "command exited (0)", 0, ""),
    (3, "command exited (3)", 3, "the command exited with status 3; the trace is complete, mmreplay exits with 3"),
    (-11, "command exited (-11)", 139, "the command was killed by signal 11"),
    (-15, "duration", 0, ""),  # the recorder stopped it: not a failure
    (-15, "SIGINT", 0, ""),
    (None, "duration", 0, ""),
])
def test_record_exits_with_the_status_of_a_command_that_failed(capsys, status, reason, code, says) -> None:
    assert command_exit(status, reason) == code
    err = capsys.readouterr().err
    assert (says in err) if says else err == ""


# -- live ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live() -> None:
    from tracer import kernel_env

    try:
        kernel_env.prepare()
    except kernel_env.EnvironmentProblem as e:
        pytest.skip(f"live recording impossible here: {e}")


def _record(out: Path, *command: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "replay", "record", "-o", str(out), "--no-tier2-check",
                             "--", *command], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.mark.live
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_set_up_stops_the_command_and_exits_128_plus_n(live, tmp_path: Path, sig) -> None:
    marker = _marker()
    p = _record(tmp_path / "t", "sleep", "60", marker)
    _wait_for_child(p, marker)  # the command is forked, blocked, while the probes compile
    time.sleep(0.2)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 128 + sig, err
    assert f"interrupted: {sig.name} during set-up: nothing was recorded" in err and "Traceback" not in err
    time.sleep(0.2)
    assert _running(marker) == []


def _wait_for_child(p: subprocess.Popen, marker: str) -> None:
    deadline = time.monotonic() + 30
    while not _running(marker, but=p.pid):
        assert time.monotonic() < deadline and p.poll() is None, "the command was never forked"
        time.sleep(0.02)


@pytest.mark.live
def test_sigterm_while_recording_and_again_while_stopping_leaves_a_finalized_trace(live, tmp_path: Path) -> None:
    marker = _marker()
    out = tmp_path / "t"
    p = _record(out, "sleep", "60", marker)
    _wait_for(out / "manifest.json")
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    time.sleep(0.05)  # stopping: draining, writing the stop-time tables, the manifest
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    t = Trace.open(out)  # finalized: no repair needed
    assert t.manifest.complete and t.manifest.extra["stop_reason"] == "SIGTERM"
    assert t.has("tasks")
    assert _running(marker) == []


@pytest.mark.live
def test_a_failing_command_makes_record_fail_with_its_status(live, tmp_path: Path) -> None:
    out = tmp_path / "t"
    p = _record(out, "sh", "-c", "exit 3")
    _, err = p.communicate(timeout=90)
    assert p.returncode == 3, err
    assert "the command exited with status 3" in err
    assert Trace.open(out).manifest.complete
