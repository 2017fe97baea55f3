"""Every workload recorded fresh on this kernel replays under every named policy set, with both engines.

The shipped samples are 30 to 60 ms long: too short to reach the states that broke
replays of fresh recordings (a stale spin limit acting on an as-recorded wait, a
derived hold across a sleep deadlocking 2.6.39's spinners). So each workload of
workloads/ is recorded here for RECORD_S seconds with TASKS tasks (the
will-it-scale ones in their threads and processes forms), once per module, and
replayed as `mmreplay replay` would (the recorded CPU count and preemption model):

* the C engine replays the whole recording under 2.6.39, 3.0, current and
  as-recorded, closed and open: every run must finish (an internal inconsistency
  is an InconsistencyError naming the thread and time, a deadlock a MmreplayError:
  both fail the test with their one line);
* the Python engine (the reference, about 10x slower) replays the first
  PY_SLICE_NS of each recording under every set, and its tables and metrics must
  equal the C engine's on the same slice, bit for bit.

Recordings cost ~3 s each on an idle 2-CPU machine (probe compilation included).
MMREPLAY_MATRIX_TRACES=DIR replays DIR/<workload> recorded before instead (for
working on the replayer; the test then needs neither root nor bcc).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from replay.policies import resolve
from replay.sim import SimConfig, cengine, simulate
from replay.sim.ops import Span, Workload, children
from tests.test_sim_engines import assert_identical

pytestmark = pytest.mark.live

ROOT = Path(__file__).resolve().parents[1]
RECORD_S = 1.0
TASKS = 2
SETS = ("2.6.39", "3.0", "current", "as-recorded")
#: the Python engine replays this much of each recording (its start) next to the C engine
PY_SLICE_NS = 40_000_000


def _names() -> list[str]:
    from workloads import names

    return names()


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> dict[str, Path]:
    """Each workload recorded once: name -> trace directory (or the reason it could not be)."""
    from tests.test_record_live import _live_or_skip
    from workloads import command

    if not cengine.available():
        pytest.skip("no C compiler: the C engine cannot be built")
    given = os.environ.get("MMREPLAY_MATRIX_TRACES")
    if given:
        return {name: Path(given) / name for name in _names()}
    _live_or_skip()
    base = tmp_path_factory.mktemp("matrix")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out: dict[str, Path] = {}
    for name in _names():
        trace = base / name
        argv = command(name, TASKS, RECORD_S)
        proc = subprocess.run([sys.executable, "-m", "replay", "record", "--no-tier2-check", "-o", str(trace), "--",
                               *argv], env=env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, f"recording {name} failed: {proc.stderr.strip()[-2000:]}"
        out[name] = trace
    return out


def _workload(trace: Path):
    from replay.cli.replay import preempt_default
    from replay.trace.reader import Trace
    from replay.workload import reconstruct

    t = Trace.open(trace)
    return reconstruct(t), preempt_default(t.manifest.host.preempt_model)[0]


def _head(w: Workload, ns: int) -> Workload:
    """The workload's first ``ns``: each thread's top-level ops that started by then."""
    t0 = min(t.start_ns for t in w.threads)
    threads = [replace(t, ops=[op for op in t.ops if op.at_ns is None or op.at_ns < t0 + ns])
               for t in w.threads if t.start_ns < t0 + ns]
    return replace(w, threads=[t for t in threads if t.ops])


def _spans(w: Workload) -> int:
    stack = [op for t in w.threads for op in t.ops]
    n = 0
    while stack:
        op = stack.pop()
        n += isinstance(op, Span)
        stack.extend(children(op))
    return n


@pytest.mark.parametrize("name", _names())
def test_a_fresh_recording_replays_under_every_set_with_both_engines(recordings, name):
    w, preempt = _workload(recordings[name])
    assert w.threads, f"{name}: nothing to replay"
    spans = _spans(w)
    for mode in ("closed", "open"):
        for s in SETS:
            cfg = SimConfig(cpus=w.cpus, policy=resolve(s), preempt=preempt, seed=1, mode=mode, engine="c")
            res = simulate(w, cfg)  # raises (failing the test with its one-line message) on any error
            assert res.tables["sim_ops"].num_rows == spans, f"{name} under {s} ({mode}): operations lost"
    head = _head(w, PY_SLICE_NS)
    for s in SETS:
        cfg = SimConfig(cpus=w.cpus, policy=resolve(s), preempt=preempt, seed=1, engine="python")
        assert_identical(simulate(head, cfg), simulate(head, replace(cfg, engine="c")))
