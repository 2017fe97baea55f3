"""When the kernel refuses a program, the recorder finds which family it is, falls back (raw tracepoints ->
classic ones) or records without it, and says why in one line; the families that load, tier 2 among them,
are still recorded (issue #12: a 6.1 kernel's verifier refused the mmap_lock program and the recording
lost lock_holds of both tiers, with only "Permission denied" as the reason).

The loader is faked: it refuses chosen families in chosen attach modes, the way bcc does (a bare
Exception naming the program and errno, the verifier's log on stderr)."""

from __future__ import annotations

import os

import pytest

from tracer import kernel_env, programs, tier2
from tracer.recorder import Recorder, RecordOptions

VERIFIER_LOG = (
    "bpf: Failed to load program: Permission denied\n"
    "0: (bf) r6 = r1\n"
    "; if (v->mm == mm && v->held) {\n"
    "159: (79) r1 = *(u64 *)(r3 +0)\n"
    "R3 unbounded memory access, make sure to bounds check any such access\n"
    "processed 4040 insns (limit 1000000) max_states_per_insn 4 total_states 301 peak_states 300 mark_read 27\n"
)
DENIED = "Failed to load BPF program b'tracepoint__mmap_lock__mmap_lock_released': Permission denied"
T2_FAMILY = tier2.FAMILIES[0]


class _Loader:
    """programs.load's stand-in: refuses a program holding a family in `refuse` (name -> attach modes),
    or tier 2 when refuse_tier2; records what each call asked for."""

    def __init__(self, refuse: dict[str, set[str]], refuse_tier2: bool = False):
        self.refuse, self.refuse_tier2, self.calls = refuse, refuse_tier2, []

    def __call__(self, bcc, families, flt, *, flush=True, extra_text="", extra_cflags=(), attach=None, **kw):
        names = [f.name for f in families]
        self.calls.append((names, bool(extra_text)))
        for f in families:
            if attach.mode(f.name) in self.refuse.get(f.name, ()):
                os.write(2, VERIFIER_LOG.encode())
                raise Exception(DENIED)  # noqa: TRY002 - what bcc raises
        if extra_text and self.refuse_tier2:
            os.write(2, b"/virtual/main.c:12:3: error: use of undeclared identifier 'nope'\n")
            raise Exception("Failed to compile BPF module <text>")  # noqa: TRY002
        return type("Loaded", (), {"families": names, "tier2": bool(extra_text), "cleanup": lambda self: None})()


def _load(monkeypatch, loader: _Loader, attach: str = "auto"):
    families = list(programs.FAMILIES)
    monkeypatch.setattr(programs, "load", loader)
    monkeypatch.setattr(programs, "plan", lambda fams, mode, bcc: programs.Plan(
        frozenset(f.name for f in (*fams, programs.TASKS)) if mode != "classic" else frozenset()))
    r = Recorder(RecordOptions(output="unused", attach=attach))
    r._t2, r._t2_probes = [(T2_FAMILY, "fentry")], []
    b, loaded, failed = r._load(None, families, programs.Filter())
    return r, b, [f.name for f in loaded], failed


def test_a_family_the_verifier_refuses_in_both_modes_is_one_failed_probe_and_tier_2_still_records(monkeypatch):
    r, b, loaded, failed = _load(monkeypatch, _Loader({"mmap_lock": {"raw", "classic"}}))
    assert "mmap_lock" not in loaded and len(loaded) == len(programs.FAMILIES) - 1
    assert b.families == loaded and b.tier2  # the final program: every other family, tier 2 with it
    assert [p.name for p in failed] == ["mmap_lock"] and failed[0].status == "failed"
    assert failed[0].reason == f"{DENIED} (R3 unbounded memory access, make sure to bounds check any such access)"
    assert r._t2 == [(T2_FAMILY, "fentry")] and r._t2_probes == []


def test_raw_tracepoints_the_kernel_refuses_fall_back_to_classic_with_the_reason(monkeypatch):
    r, b, loaded, failed = _load(monkeypatch, _Loader({"mmap_lock": {"raw"}}))
    assert loaded == [f.name for f in programs.FAMILIES] and failed == [] and b.tier2
    assert r._plan.mode("mmap_lock") == "classic" and r._plan.mode("page_fault") == "raw"
    assert "raw tracepoints failed to load" in r._plan.reason("mmap_lock")
    assert "R3 unbounded memory access" in r._plan.reason("mmap_lock")


def test_tier_2_the_kernel_refuses_fails_tier_2_alone_with_the_compilers_reason(monkeypatch):
    loader = _Loader({}, refuse_tier2=True)
    r, b, loaded, failed = _load(monkeypatch, loader)
    assert loaded == [f.name for f in programs.FAMILIES] and failed == [] and not b.tier2
    assert r._t2 == [] and [p.name for p in r._t2_probes] == [f"tier2:{T2_FAMILY.name}"]
    assert r._t2_probes[0].status == "failed" and "undeclared identifier 'nope'" in r._t2_probes[0].reason
    assert len(loader.calls) == 2  # tier 1 + 2, then tier 1 alone: no per-family search when tier 1 loads


def test_nothing_loading_is_one_line_naming_the_first_reason(monkeypatch):
    refuse_all = {f.name: {"raw", "classic"} for f in programs.FAMILIES}
    with pytest.raises(kernel_env.EnvironmentProblem) as e:
        _load(monkeypatch, _Loader(refuse_all), attach="classic")
    assert "no tier-1 probe family loads here" in e.value.reason and "R3 unbounded" in e.value.reason
