"""The per-page programs of the page-fault case filter on the recorded tasks before any other helper call.

exceptions:page_fault_user, kmem:mm_page_free and kmem:mm_page_free_batched fire once per page of a faulting,
unmapping workload and for every task on the machine. A helper call costs tens of ns here (bpf_probe_read_kernel
of the faulting ip: 25-38 ns a hit measured with the kernel's BPF statistics on the page-fault case,
docs/RECORDING.md), so a program reads nothing before bpf_get_current_pid_tgid() and the task filter: map
lookups of arrays (inlined by the verifier) are all it may do before. The live test compiles the real programs
and reads their helper calls in order; the unit test checks how the benchmark charges backup programs.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BPF_FUNC_MAP_LOOKUP_ELEM = 1
BPF_FUNC_GET_CURRENT_PID_TGID = 14
#: the per-page programs and what they may do before the filter (the page_free programs claim a slot for every
#: task's hit by design, bpf/mmr_bk_slots.h: map lookups only)
PER_PAGE = ("page_fault_user", "mm_page_free", "mm_page_free_batched")


def _helper_calls(insns: bytes) -> list[int]:
    """The helper ids of a program's BPF_CALL instructions (opcode 0x85), in order."""
    return [struct.unpack_from("<BBhi", insns, i)[3] for i in range(0, len(insns), 8) if insns[i] == 0x85]


def test_helper_calls_are_read_from_bpf_instructions():
    call = struct.pack("<BBhi", 0x85, 0, 0, 113)
    mov = struct.pack("<BBhi", 0xb7, 1, 0, 0x85)  # an immediate that looks like a call opcode is not one
    assert _helper_calls(mov + call + struct.pack("<BBhi", 0x85, 0, 0, 14)) == [113, 14]


@pytest.mark.live
def test_per_page_programs_call_no_helper_before_the_task_filter():
    from tracer import kernel_env, programs

    try:
        bcc, _ = kernel_env.prepare()
    except kernel_env.EnvironmentProblem as e:
        pytest.skip(f"live recording impossible here: {e}")
    fams = programs.select(["page_free", "page_fault"])
    plan = programs.plan(fams, "auto", bcc)
    if {f.name for f in fams} - set(plan.raw):
        pytest.skip("raw tracepoints refused here: the classic programs read their event record")
    b = programs.load(bcc, fams, programs.Filter(tids=frozenset({1})), attach=plan)
    try:
        for tp in PER_PAGE:
            calls = [c for c in _helper_calls(b.dump_func(f"raw_tracepoint__{tp}".encode()))
                     if c != BPF_FUNC_MAP_LOOKUP_ELEM]
            assert calls and calls[0] == BPF_FUNC_GET_CURRENT_PID_TGID, (tp, calls[:4])
    finally:
        b.cleanup()


def test_a_family_program_cost_includes_its_backup_and_first_programs():
    from benchmarks.record_overhead import family_program_cost
    from tracer import programs

    cost = {"kmem:mm_page_free": {"runs": 100, "run_ns": 5000}, "kmem:mm_page_free_batched": {"runs": 100,
            "run_ns": 1000}, "kmem:mm_page_free (backup)": {"runs": 100, "run_ns": 2000},
            "tlb:tlb_flush (first)": {"runs": 7, "run_ns": 700}}
    pf = programs.FAMILIES_BY_NAME["page_free"]
    assert family_program_cost(cost, pf) == pytest.approx(8000 / 200)
    assert family_program_cost(cost, programs.FAMILIES_BY_NAME["page_fault"]) is None
    sys_ = programs.FAMILIES_BY_NAME["syscalls"]
    assert family_program_cost({"raw_syscalls:sys_enter": {"runs": 4, "run_ns": 400}}, sys_) == 100
