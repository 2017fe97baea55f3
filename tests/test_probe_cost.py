"""`record --probe-cost`: the option reaches the recorder, and program statistics degrade to "unknown", never raise.

The numbers themselves are checked live (tests/test_perf_lock_live.py reads them from the manifest).
"""

from __future__ import annotations

import os

import pytest

from replay.cli.main import main
from tracer import recorder


def test_probe_cost_option_turns_on_timing_in_the_record_options(monkeypatch, tmp_path):
    seen = []

    def fake_record(opts):
        seen.append(opts)
        raise SystemExit(0)

    monkeypatch.setattr(recorder, "record", fake_record)
    for argv, want in ((["--probe-cost"], True), ([], False)):
        with pytest.raises(SystemExit):
            main(["record", "-o", str(tmp_path / "t"), *argv, "--", "true"])
        assert seen[-1].probe_cost is want


def test_statistics_of_something_that_is_not_a_bpf_program_are_unknown():
    fd = os.open(os.devnull, os.O_RDONLY)
    try:
        assert recorder.prog_info(fd) is None
        assert recorder.prog_run_stats(fd) == (0, 0)
        assert recorder.prog_recursion_misses(fd) == 0
    finally:
        os.close(fd)


class _Fn:
    """A ctypes function stand-in: callable, with argtypes/restype to set."""

    def __init__(self, fn):
        self.fn, self.argtypes, self.restype = fn, None, None

    def __call__(self, *args):
        return self.fn(*args)


class _FakeLibbpf:
    """libbpf as ctypes sees it: bpf_enable_stats hands out an fd, bpf_obj_get_info_by_fd fills bpf_prog_info."""

    def __init__(self):
        self.calls = []
        self.bpf_enable_stats = _Fn(self._enable)
        self.bpf_obj_get_info_by_fd = _Fn(self._info)

    def _enable(self, kind):
        self.calls.append(("bpf_enable_stats", kind))
        r, w = os.pipe()
        os.close(w)
        return r

    def _info(self, fd, info_ref, len_ref):
        import ctypes

        self.calls.append(("bpf_obj_get_info_by_fd", fd))
        info = ctypes.cast(info_ref, ctypes.POINTER(recorder._BpfProgInfo)).contents
        info.run_cnt, info.run_time_ns, info.recursion_misses = 10, 2500, 3
        return 0


def test_program_statistics_go_through_libbpf_on_any_architecture(monkeypatch):
    """No hard-coded bpf() syscall number: an arm64 host reads the same statistics the same way."""
    real = os.uname()
    monkeypatch.setattr(os, "uname", lambda: os.uname_result((real.sysname, real.nodename, real.release,
                                                               real.version, "aarch64")))
    fake = _FakeLibbpf()
    monkeypatch.setattr(recorder.kernel_env, "libbpf", lambda: fake)
    with recorder.bpf_run_stats() as on:
        assert on
    assert fake.calls[0] == ("bpf_enable_stats", recorder.BPF_STATS_RUN_TIME)
    assert recorder.prog_run_stats(7) == (10, 2500)
    assert recorder.prog_recursion_misses(7) == 3
    assert ("bpf_obj_get_info_by_fd", 7) in fake.calls


def test_without_libbpf_statistics_are_unknown_not_an_error(monkeypatch):
    monkeypatch.setattr(recorder.kernel_env, "libbpf", lambda: None)
    with recorder.bpf_run_stats() as on:
        assert not on
    assert recorder.prog_info(3) is None and recorder.prog_run_stats(3) == (0, 0)
