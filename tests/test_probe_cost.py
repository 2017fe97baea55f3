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
