"""Shared set-up of the live recording tests: skip with the reason when recording is impossible here,
build the C workload under a name unique to this test run (its comm filters the recording)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def mm_workload(tmp_path_factory: pytest.TempPathFactory, prefix: str, *tools: str) -> Path:
    """tests/data/mm_workload.c built as <prefix><pid> (<= 15 characters); skips without bcc, root,
    tracefs, gcc or one of tools."""
    from tracer import kernel_env

    try:
        kernel_env.prepare()
    except kernel_env.EnvironmentProblem as e:
        pytest.skip(f"live recording impossible here: {e}")
    for tool in ("gcc", *tools):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")
    exe = tmp_path_factory.mktemp(prefix) / f"{prefix}{os.getpid() % 100000}"
    subprocess.run(["gcc", "-O2", "-pthread", "-o", str(exe), str(ROOT / "tests/data/mm_workload.c")], check=True)
    return exe


def record_workloads(base: Path, names: tuple[str, ...], seconds: float, tasks: int = 2) -> dict[str, Path]:
    """Record each built-in workload of workloads/ now (root + bcc; skips when recording is impossible here)
    into base/<name>: name -> trace directory. A failed recording fails the test with its stderr's end."""
    import sys

    from tests.test_record_live import _live_or_skip
    from workloads import command

    _live_or_skip()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = {}
    for name in names:
        trace = base / name
        proc = subprocess.run([sys.executable, "-m", "replay", "record", "--no-tier2-check", "-o", str(trace), "--",
                               *command(name, tasks, seconds)], env=env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, f"recording {name} failed: {proc.stderr.strip()[-2000:]}"
        out[name] = trace
    return out
