"""A recorded task's switch that the kernel never reported is counted, never silent (tracer/switch_gaps.py).

On this project's host the kernel emits no sched_switch whose prev is a thread of PID 1 (the VM's agent):
a workload task the agent preempted comes back with no switch-in. The recorder cannot see that switch; it
must count it ("switch_unreported"), across the chunks it writes, and only for recorded sides, and report it
apart from what it lost: the kernel never emitted it (format 1.2: extra.not_emitted_by_kernel).
"""

from __future__ import annotations

import numpy as np

from tracer import events
from tracer.switch_gaps import SwitchGaps

P, N = events.F_PREV_RECORDED, events.F_NEXT_RECORDED


def _rows(*rows: tuple[int, int, int]) -> np.ndarray:
    """sched_switch records of (prev tid, next tid, flags), in the order given."""
    rec = np.zeros(len(rows), events.DTYPES["mmr_sched_switch"])
    for i, (prev, nxt, flags) in enumerate(rows):
        rec[i]["ts"], rec[i]["seq"], rec[i]["tid"], rec[i]["next_tid"], rec[i]["flags"] = 1000 + i, i, prev, nxt, flags
    return rec


def test_alternating_switches_leave_no_gap():
    g = SwitchGaps()
    g.feed(_rows((10, 93, P), (93, 10, N), (10, 11, P | N), (11, 10, P | N)))
    assert (g.missing_in, g.missing_out) == (0, 0)


def test_a_switch_in_the_kernel_did_not_report_is_counted():
    g = SwitchGaps()
    # 10 is preempted by 93 (the agent), comes back unreported, and is switched out again
    g.feed(_rows((10, 93, P), (10, 15, P), (15, 10, N)))
    assert (g.missing_in, g.missing_out) == (1, 0)


def test_a_gap_across_two_written_chunks_is_counted():
    g = SwitchGaps()
    g.feed(_rows((10, 93, P), (11, 10, P | N)))
    g.feed(_rows((10, 11, P | N), (10, 93, P)))  # 10: in, out, then out again after the chunk boundary
    g.feed(_rows((15, 10, N)))
    assert (g.missing_in, g.missing_out) == (1, 0)


def test_unrecorded_sides_and_the_idle_tasks_are_not_followed():
    g = SwitchGaps()
    # 93 and 15 are not recorded: their switches are seen only with a recorded task, never in pairs;
    # tid 0 is one idle task per CPU, switched out on both CPUs at once
    g.feed(_rows((93, 10, N), (10, 15, P), (15, 10, N), (0, 11, N), (0, 12, N)))
    assert g.missing == 0


def test_a_switch_out_the_kernel_did_not_report_is_counted():
    g = SwitchGaps()
    g.feed(_rows((93, 10, N), (15, 10, N)))  # 10 came in twice: the switch-out between is missing
    assert (g.missing_in, g.missing_out) == (0, 1)


def test_the_first_switch_of_a_task_is_never_a_gap():
    g = SwitchGaps()
    g.feed(_rows((10, 11, P | N)))  # both were running/runnable before the recording: nothing to compare
    assert g.missing == 0


def test_the_task_a_gap_began_with_is_kept():
    g = SwitchGaps()
    g.feed(_rows((10, 93, P), (11, 10, P | N)))
    g.feed(_rows((10, 11, P | N), (10, 94, P)))  # 10: out to 11, then out again (its switch-in after 94 unseen)
    g.feed(_rows((10, 95, P)))  # and once more, across a chunk: the switch-out before went to 94
    assert (g.missing_in, g.gap_next) == (2, [11, 94])


def test_info_of_a_format_1_1_trace_still_shows_its_unreported_switches_as_lost(tmp_path, capsys):
    from replay.cli.main import main
    from replay.trace.manifest import Probe
    from replay.trace.writer import write_trace

    zero = {"sched_switch": 0}
    breakdown = {"ring_buffer_refused": zero, "bpf_recursion_skipped": zero, "switch_unreported": {"sched_switch": 2},
                 "recorder_in_kernel": zero, "recorder_bpf_recursion": zero, "recorder_wakeups": zero}
    write_trace(tmp_path / "t", {}, probes=[Probe("sched_switch", 1, events=300, lost=2, reason="raw tracepoints")],
                extra={"lost_breakdown": breakdown})
    assert main(["info", str(tmp_path / "t")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert next(line for line in lines if line.startswith("lost ")).split()[1] == "2"
    at = next(i for i, line in enumerate(lines) if line.startswith("loss by reason"))
    assert "unreported" in lines[at].split()
    assert lines[at + 1].split() == ["sched_switch", "0", "0", "2", "0", "0", "0"]


def test_info_reports_switches_the_kernel_did_not_emit_apart_from_lost(tmp_path, capsys):
    from replay.cli.main import main
    from replay.trace.manifest import Probe
    from replay.trace.writer import write_trace

    zero = {"sched_switch": 0}
    breakdown = {"ring_buffer_refused": zero, "bpf_recursion_skipped": zero, "recorder_in_kernel": zero,
                 "recorder_bpf_recursion": zero, "recorder_wakeups": zero}
    write_trace(tmp_path / "t", {}, probes=[Probe("sched_switch", 1, events=300, lost=0, reason="raw tracepoints")],
                extra={"lost_breakdown": breakdown, "not_emitted_by_kernel": {
                    "sched_switch": 3, "after_switch_to": {"agent (pid 1)": 2, "?": 1}}})
    assert main(["info", str(tmp_path / "t")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert next(line for line in lines if line.startswith("lost ")).split()[1] == "0"
    line = next(line for line in lines if line.startswith("unemitted "))
    assert line.split()[1] == "3" and "agent (pid 1) x2" in line and "in replay" in line
    assert not any(line.startswith("loss by reason") for line in lines)  # nothing lost, nothing caused


def test_info_prints_no_unemitted_line_when_the_kernel_emitted_every_switch(tmp_path, capsys):
    from replay.cli.main import main
    from replay.trace.manifest import Probe
    from replay.trace.writer import write_trace

    write_trace(tmp_path / "t", {}, probes=[Probe("sched_switch", 1, events=300, reason="raw tracepoints")],
                extra={"not_emitted_by_kernel": {"sched_switch": 0, "after_switch_to": {}}})
    assert main(["info", str(tmp_path / "t")]) == 0
    assert not any(line.startswith("unemitted") for line in capsys.readouterr().out.splitlines())
