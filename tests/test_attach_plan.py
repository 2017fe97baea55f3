"""programs.plan: raw tracepoints where the running kernel's BTF confirms what each program reads,
classic tracepoints (with the reason) everywhere else."""

from __future__ import annotations

import pytest

from tracer import kernel_env, programs


class _Types:
    """KernelTypes stand-in: the prototypes and task_struct of a made-up kernel."""

    def __init__(self, protos=None, members=None):
        self.protos = {ev: list(want) for f in (*programs.FAMILIES, programs.TASKS) for ev, want in f.raw}
        self.protos.update(protos or {})
        self.members = members if members is not None else {
            ("task_struct", m): i * 8 for i, m in enumerate(("pid", "tgid", "prio", "comm", "exit_state", "cpu",
                                                            "thread_info"))}
        self.members.update({("pt_regs", m): i * 8 for i, m in enumerate(("ip", "di", "si", "orig_ax", "regs",
                                                                         "syscallno"))})
        self.members.update({("thread_info", "status"): 16, ("thread_info", "flags"): 0})

    def tracepoint_args(self, event):
        if event not in self.protos:
            raise KeyError(event)
        return self.protos[event]

    def member_offset(self, struct, member):
        return self.members[(struct, member)]

    def close(self):
        pass


def _plan(monkeypatch, types, machine="x86_64"):
    monkeypatch.setattr(kernel_env, "KernelTypes", lambda: types)
    monkeypatch.setattr(programs.os, "uname", lambda: type("U", (), {"machine": machine})())
    return programs.plan(programs.FAMILIES, "auto")


def test_every_family_attaches_raw_tracepoints_when_the_kernel_confirms_their_arguments(monkeypatch):
    plan = _plan(monkeypatch, _Types())
    assert plan.raw == {f.name for f in (*programs.FAMILIES, programs.TASKS)}
    flags = programs.cflags(programs.Filter(), attach=plan)
    assert "-DMMR_RAW_SCHED_SWITCH=1" in flags and "-DMMR_NR_MMAP=9" in flags
    assert any(f.startswith("-DMMR_OFF_TASK_PID=") for f in flags)


def test_a_tracepoint_whose_arguments_changed_falls_back_to_classic_and_says_why(monkeypatch):
    plan = _plan(monkeypatch, _Types(protos={"sched_switch": ["ptr:task_struct", "ptr:task_struct", "int"]}))
    assert plan.mode("sched_switch") == "classic" and plan.mode("page_fault") == "raw"
    assert "sched_switch takes (ptr:task_struct, ptr:task_struct, int)" in plan.reason("sched_switch")
    assert "-DMMR_RAW_SCHED_SWITCH=1" not in programs.cflags(programs.Filter(), attach=plan)


def test_an_architecture_without_a_system_call_table_records_system_calls_on_classic_tracepoints(monkeypatch):
    plan = _plan(monkeypatch, _Types(), machine="riscv64")
    assert plan.mode("syscalls") == "classic" and "riscv64" in plan.reason("syscalls")
    assert plan.mode("mmap_lock") == "raw"


def test_aarch64_reads_its_own_system_call_numbers_and_registers(monkeypatch):
    plan = _plan(monkeypatch, _Types(), machine="aarch64")
    offsets = dict(plan.offsets)
    assert offsets["MMR_NR_MMAP"] == 222 and offsets["MMR_OFF_REGS_ARG1"] == offsets["MMR_OFF_REGS_ARG0"] + 8


def test_without_btf_everything_is_classic_with_the_reason(monkeypatch):
    def no_btf():
        raise kernel_env.EnvironmentProblem("BTF", "the kernel's BTF cannot be read", "CONFIG_DEBUG_INFO_BTF=y")

    monkeypatch.setattr(kernel_env, "KernelTypes", no_btf)
    plan = programs.plan(programs.FAMILIES, "auto")
    assert plan.raw == frozenset()
    assert all("BTF" in plan.reason(f.name) for f in programs.FAMILIES)


def test_classic_on_request(monkeypatch):
    plan = programs.plan(programs.FAMILIES, "classic")
    assert plan.raw == frozenset() and "--attach classic" in plan.reason("page_fault")


@pytest.mark.parametrize("missing", ["pid", "comm"])
def test_a_task_field_missing_from_btf_keeps_the_families_that_read_it_classic(monkeypatch, missing):
    t = _Types()
    del t.members[("task_struct", missing)]
    plan = _plan(monkeypatch, t)
    assert plan.mode("sched_switch") == "classic" and plan.mode("tlb_flush") == "raw"
