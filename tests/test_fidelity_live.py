"""Recorded-kernel fidelity, live (benchmarks/fidelity.py, docs/VALIDATION.md §e): two uncontended
workloads recorded on this kernel replay under `current --calibrate` with their system-call latencies.

mmap1_processes (mmap + munmap of 128 MiB, one process each) and tlb_flush2_threads (write +
MADV_DONTNEED of single pages) are recorded for RECORD_S seconds; closed replay's p50 and p99 of
each system call must be within TARGET of the recorded ones, widened by the sampling error of the
recorded percentile: the recorded values at the quantiles q ± 1.96·sqrt(q(1−q)/n) (the 95 % band of
the q-quantile's rank in n samples) bound what another sample of the same run could have given.
With the recorded host's interference (replay/interference.py), mmap1_processes' switches onto the
recorded tasks (its preemptions) must come back within TARGET plus the count's Poisson band
1.96/sqrt(n): without it they were −93 to −98 % (other jobs' preemptions, docs/VALIDATION.md §e).
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.live

ROOT = Path(__file__).resolve().parents[1]
RECORD_S = 0.5
TARGET = 0.15
#: (workload, system call, quantiles): tlb_flush2's munmaps are ~40 a run; its madvise p99 is not reproduced
#: stably (+1 % on a 1.5 s recording, +65 % on a 0.5 s one: docs/VALIDATION.md §e), so only its p50 is held
CASES = {"mmap1_processes": (("mmap", (0.5, 0.99)), ("munmap", (0.5, 0.99))),
         "tlb_flush2_threads": (("madvise", (0.5,)),)}


def _fidelity():
    name = "mmreplay_benchmarks_fidelity"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "fidelity.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod  # its dataclasses look their module up
        spec.loader.exec_module(mod)
    return sys.modules[name]


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    from tests.test_record_live import _live_or_skip

    _live_or_skip()
    base = tmp_path_factory.mktemp("fidelity")
    out = {}
    for name in CASES:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.run([sys.executable, "-m", "replay", "record", "--no-tier2-check", "-o", str(base / name),
                               "--workload", name, "--tasks", "2", "--duration", str(RECORD_S)],
                              env=env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr[-2000:]
        out[name] = base / name
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_uncontended_system_call_latency_is_replayed_within_15_percent(traces, name):
    from replay.trace.reader import Trace
    from replay.workload import reconstruct

    fid = _fidelity()
    trace = Trace.open(traces[name])
    w = reconstruct(trace)
    spans = fid._spans(w)
    runs = fid.replay_figures(w, trace, "closed", seeds=1)
    for kind, quantiles in CASES[name]:
        rec = np.asarray(spans[kind], dtype=float)
        assert len(rec) >= 100, f"{name}: only {len(rec)} {kind} calls recorded"
        for q in quantiles:
            recorded = float(np.quantile(rec, q))
            replayed = runs[0][f"op_latency_p{round(q * 100)}_ns:{kind}"]
            tol = TARGET + fid.sampling_band(rec, q)
            assert abs(replayed / recorded - 1) <= tol, (
                f"{name} {kind} p{round(q * 100)}: recorded {recorded:.0f} ns, replayed {replayed:.0f} ns "
                f"({100 * (replayed / recorded - 1):+.0f} %, tolerance ±{100 * tol:.0f} %)")


#: the workloads whose switches onto the tasks are held: mmap1_processes' are ~98 % preemptions, which the
#: recorded interference brings back (+0 % on 5 of 5 quiet 0.5 s recordings). tlb_flush2_threads' are half
#: sleeps (D state: 41 in mmap_lock waits, 48 in `other` waits, 74 outside any recorded wait in one run) that
#: the replay does not sleep alike: −13 to −31 % on 6 of 6 quiet 0.5 s recordings (one CI run failed on it),
#: docs/VALIDATION.md §e. Held there it would test the load of the machine, not the replayer.
SWITCH_CASES = ("mmap1_processes",)


@pytest.mark.parametrize("name", SWITCH_CASES)
def test_switches_come_back_with_the_recorded_interference(traces, name):
    from replay.trace.reader import Trace
    from replay.workload import reconstruct

    fid = _fidelity()
    trace = Trace.open(traces[name])
    w = reconstruct(trace)
    recorded = next(f for f in fid.recorded_figures(trace, w, 1) if f.name == "task_switches").recorded
    assert recorded >= 10, f"{name}: only {recorded:.0f} switches onto the tasks recorded"
    replayed = fid.replay_figures(w, trace, "closed+i", seeds=1)[0]["task_switches"]
    tol = TARGET + 1.96 / math.sqrt(recorded)
    assert abs(replayed / recorded - 1) <= tol, (
        f"{name}: {recorded:.0f} switches onto the tasks recorded, {replayed:.0f} replayed with the recorded "
        f"interference ({100 * (replayed / recorded - 1):+.0f} %, tolerance ±{100 * tol:.0f} %)")
