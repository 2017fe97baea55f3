"""tests/vm/run.sh refuses bad usage with one line and exit 2, before building or booting anything."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parent / "vm" / "run.sh"


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(RUN), *args], capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize("args", [("--bogus",), ("--timeout", "soon"), ("--rw", "/nonexistent/dir"),
                                  ("--workdir", "/nonexistent/dir", "--", "true"), ("--kernel-log",)])
def test_bad_usage_is_one_line_and_exit_2(args):
    r = _run(*args)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("tests/vm/run.sh: ")


@pytest.mark.skipif(shutil.which("apt-cache") is None or shutil.which("qemu-system-x86_64") is None
                    or shutil.which("busybox") is None, reason="needs apt-cache, qemu and busybox")
def test_an_unknown_kernel_package_is_one_line_and_exit_2():
    import os

    r = _run("--", "true", env={**os.environ, "MMR_GUEST_KERNEL": "linux-image-0.0.0-nonexistent-amd64"})
    assert r.returncode == 2 and "no package linux-image-0.0.0-nonexistent-amd64" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_malformed_accelerator_is_one_line_and_exit_2():
    import os

    r = _run("--", "true", env={**os.environ, "MMR_GUEST_ACCEL": "tcg; rm -rf /"})
    assert r.returncode == 2 and "MMR_GUEST_ACCEL" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_help_describes_the_exit_statuses():
    r = _run("--help")
    assert r.returncode == 0 and "124 on timeout" in r.stdout and "125" in r.stdout
