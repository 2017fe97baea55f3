"""Importing the package asks polars' allocator (jemalloc) to give freed pages back at once, unless the
environment says otherwise (replay/__init__.py; the loader's peak memory, docs/SCALING.md). polars puts its own
defaults (0.5 s, 1 s) before the value it finds; jemalloc takes the last of a repeated option."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = "import os, replay, polars; print(os.environ.get('_RJEM_MALLOC_CONF'))"


def _conf(env: dict[str, str]) -> str:
    env = {**env, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_importing_the_package_sets_jemallocs_decay_to_zero():
    env = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"}
    assert _conf(env).endswith(",dirty_decay_ms:0,muzzy_decay_ms:0")


def test_a_users_setting_is_kept():
    conf = _conf({**os.environ, "_RJEM_MALLOC_CONF": "dirty_decay_ms:5000"})
    assert conf.endswith(",dirty_decay_ms:5000") and "decay_ms:0" not in conf
