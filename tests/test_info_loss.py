"""`mmreplay info`: the lost headline counts only real loss; the breakdown is a table; long reasons once."""

from __future__ import annotations

import json
from pathlib import Path

from replay.cli.main import main
from replay.trace.manifest import Probe
from replay.trace.writer import write_trace

REFUSAL = ("fentry refused (the kernel refused to load it with EPERM although running as root); kprobes "
           "refused; kernel built without CONFIG_KPROBES")


def _trace(path: Path) -> Path:
    probes = [
        Probe("page_free", 1, events=1000, lost=3, recorder=0, reason="raw tracepoints"),
        Probe("lock_contention", 1, events=50, lost=0, recorder=7, reason="raw tracepoints"),
        Probe("sched_wakeup", 1, events=40, lost=0, recorder=5, reason="raw tracepoints"),
        Probe("tier2:lock_holds", 2, status="skipped", reason=REFUSAL),
        Probe("tier2:gathers", 2, status="skipped", reason=REFUSAL),
    ]
    breakdown = {"ring_buffer_refused": {"page_free": 1, "lock_contention": 0, "sched_wakeup": 0},
                 "bpf_recursion_skipped": {"page_free": 2, "lock_contention": 0, "sched_wakeup": 0},
                 "recorder_in_kernel": {"page_free": 0, "lock_contention": 4, "sched_wakeup": 0},
                 "recorder_bpf_recursion": {"page_free": 0, "lock_contention": 3, "sched_wakeup": 0},
                 "recorder_wakeups": {"page_free": 0, "lock_contention": 0, "sched_wakeup": 5}}
    write_trace(path, {}, probes=probes, extra={"lost_breakdown": breakdown})
    return path


def test_the_lost_headline_is_real_loss_and_what_the_recorder_caused_is_said_apart(tmp_path, capsys):
    assert main(["info", str(_trace(tmp_path / "t"))]) == 0
    out = capsys.readouterr().out
    headline = next(line for line in out.splitlines() if line.startswith("lost "))
    assert headline.split()[1] == "3"
    assert "12 more caused by the recorder itself" in headline


def test_the_breakdown_is_a_table_with_one_row_per_probe_that_has_something(tmp_path, capsys):
    main(["info", str(_trace(tmp_path / "t"))])
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("loss by reason"))
    assert lines[at].split()[3:] == ["rb", "full", "recursion", "rec:bpf", "rec:nest", "rec:wake"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[at + 1:at + 4]}
    assert rows == {"page_free": ["1", "2", "0", "0", "0"], "lock_contention": ["0", "0", "4", "3", "0"],
                    "sched_wakeup": ["0", "0", "0", "0", "5"]}


def test_a_long_reason_shared_by_several_probes_is_printed_once(tmp_path, capsys):
    main(["info", str(_trace(tmp_path / "t"))])
    out = capsys.readouterr().out
    assert out.count(REFUSAL) == 1
    assert [line.split()[-1] for line in out.splitlines() if line.startswith("tier2:")] == ["[1]", "[1]"]


def test_a_manifest_with_a_negative_count_is_refused_in_one_line(tmp_path, capsys):
    path = _trace(tmp_path / "t")
    m = json.loads((path / "manifest.json").read_text())
    m["probes"][0]["recorder"] = -1
    (path / "manifest.json").write_text(json.dumps(m))
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "negative count" in err[0]


def test_a_full_ring_buffer_points_at_a_larger_buffer(tmp_path, capsys):
    """rb full means the reader fell behind: info says which option gives it more room, and only then."""
    main(["info", str(_trace(tmp_path / "t"))])
    assert "record with a larger --buffer-size" in capsys.readouterr().out
    path = tmp_path / "none"
    write_trace(path, {}, probes=[Probe("page_free", 1, events=10, lost=0, reason="raw tracepoints")],
                extra={"lost_breakdown": {"ring_buffer_refused": {"page_free": 0},
                                          "bpf_recursion_skipped": {"page_free": 0}}})
    main(["info", str(path)])
    assert "--buffer-size" not in capsys.readouterr().out
