"""MMREPLAY_TIER2_LOG=1: each tier-2 phase that patches kernel text is logged as it starts and as it ends, with
its duration, on the stderr the process started with (bcc's output is captured around those phases) and in
the kernel log, where a lockup's timestamps place it (issue #12)."""

from __future__ import annotations

import os

import pytest

from tracer import kernel_env, tier2


@pytest.fixture
def logged(monkeypatch, tmp_path):
    """(read the stderr log, read the kernel log): both redirected to files."""
    err = tmp_path / "stderr"
    fd = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    kmsg = tmp_path / "kmsg"
    kmsg.touch()
    monkeypatch.setenv(tier2.PHASE_LOG_ENV, "1")
    monkeypatch.setattr(tier2, "_PHASE_FD", fd)
    monkeypatch.setattr(tier2, "KMSG", str(kmsg))
    yield (lambda: err.read_text().splitlines()), (lambda: kmsg.read_text().splitlines())
    os.close(fd)


def test_a_phase_is_logged_at_its_start_and_end_with_its_duration_past_captured_stderr(logged):
    err, kmsg = logged
    with kernel_env.captured_stderr() as captured, tier2.phase("attach gathers"):
        pass
    assert err()[0] == "mmreplay tier2: attach gathers ..."
    assert err()[1].startswith("mmreplay tier2: attach gathers: done in ") and err()[1].endswith(" s")
    assert kmsg() == err() and captured == []


def test_a_failing_phase_is_logged_as_failed_and_the_error_goes_on(logged):
    err, _ = logged
    with pytest.raises(RuntimeError), tier2.phase("load tier 1 + tier 2"):
        raise RuntimeError("bcc compile log\ncannot attach fentry")  # bcc: the reason comes last
    assert err()[-1].startswith("mmreplay tier2: load tier 1 + tier 2: failed after ")
    assert err()[-1].endswith("(cannot attach fentry)")


def test_nothing_is_logged_without_the_variable(logged, monkeypatch):
    err, kmsg = logged
    monkeypatch.delenv(tier2.PHASE_LOG_ENV)
    with tier2.phase("detach"):
        tier2.phase_note("recording")
    assert err() == [] and kmsg() == []


def test_attach_names_what_it_hooks(logged):
    err, _ = logged

    class Program:  # bcc.BPF's part that attach() uses for a family without raw tracepoints
        def attach_kprobe(self, event, fn_name):
            self.hooked = (event, fn_name)

    fam = tier2.FAMILIES_BY_NAME["take_all_locks"]
    tier2.attach(Program(), fam, "fentry")
    assert err()[0] == "mmreplay tier2: attach take_all_locks (fentry: nothing: its fentry probes attached at load) ..."
