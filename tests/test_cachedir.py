"""Code caches (the workload programs, the compiled simulator): never from a place someone else can write.

A planted program or shared object in a cache directory would be run or loaded by root; the cache is
used only if it is a real 0700 directory of the user, below directories no one else can write.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from replay.cachedir import UnsafeCache, cache_dir, private_dir, verify_code_file

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to plant directories of other users")


def test_a_new_cache_is_created_private(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MMREPLAY_TEST_CACHE", str(tmp_path / "c"))
    d = cache_dir("test", "MMREPLAY_TEST_CACHE")
    assert d == tmp_path / "c" and stat.S_IMODE(d.stat().st_mode) == 0o700


def test_an_own_cache_readable_by_others_is_narrowed_to_0700(tmp_path: Path) -> None:
    d = tmp_path / "c"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    assert private_dir(d) == d and stat.S_IMODE(d.stat().st_mode) == 0o700


def test_a_cache_others_can_write_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "c"
    d.mkdir()
    d.chmod(0o777)
    with pytest.raises(UnsafeCache, match="writable by others"):
        private_dir(d)


def test_a_cache_that_is_a_link_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "c").symlink_to(real)
    with pytest.raises(UnsafeCache, match="symbolic link"):
        private_dir(tmp_path / "c")


def test_a_cache_below_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # no sticky bit: anyone could rename our cache away and put theirs instead
    with pytest.raises(UnsafeCache, match="shared: is writable by others"):
        private_dir(shared / "c")


@root_only
def test_a_cache_of_another_user_is_refused_and_the_fallback_used(tmp_path: Path, monkeypatch) -> None:
    # the attack of issue 14: the home cache is not usable and /tmp/mmreplay-engine-0 was planted
    planted = tmp_path / "tmp" / "mmreplay-engine-0"
    planted.parent.mkdir()
    planted.parent.chmod(0o1777)
    planted.mkdir(mode=0o700)
    os.chown(planted, 4242, 4242)
    monkeypatch.setenv("TMPDIR", str(planted.parent))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
    (tmp_path / "home-cache").mkdir()
    os.chown(tmp_path / "home-cache", 4242, 4242)
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    with pytest.raises(UnsafeCache, match="belongs to uid 4242") as e:
        cache_dir("engine", "MMREPLAY_NO_SUCH_ENV")
    assert "set MMREPLAY_NO_SUCH_ENV" in str(e.value)


@root_only
def test_a_planted_program_is_not_run(tmp_path: Path) -> None:
    f = tmp_path / "prog"
    f.write_text("#!/bin/sh\n")
    os.chown(f, 4242, 4242)
    with pytest.raises(UnsafeCache, match="uid 4242"):
        verify_code_file(f)
    os.chown(f, 0, 0)
    f.chmod(0o777)
    with pytest.raises(UnsafeCache, match="mode 777"):
        verify_code_file(f)
    f.chmod(0o755)
    assert verify_code_file(f) == f


def test_the_workload_cache_is_checked_before_every_run(tmp_path: Path, monkeypatch) -> None:
    import tracer.workloads as workloads

    d = tmp_path / "wl"
    d.mkdir(mode=0o700)
    monkeypatch.setenv("MMREPLAY_WORKLOAD_CACHE", str(d))
    assert workloads.cache_dir() == d
    d.chmod(0o777)
    with pytest.raises(UnsafeCache, match="writable by others"):
        workloads.build(workloads.names()[0])
