"""Option values from issue 14 that hung, crashed or were accepted: each is now one line and exit 2."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from replay.cli.main import main


@pytest.fixture
def costs(tmp_path: Path):
    def write(values: dict) -> Path:
        p = tmp_path / "costs.json"
        p.write_text(json.dumps(values))
        return p
    return write


@pytest.mark.parametrize("argv, says", [
    (["record", "-o", "{tmp}/t", "--duration", "nan"], "argument -d/--duration: must be a finite number"),
    (["record", "-o", "{tmp}/t", "--duration", "inf"], "argument -d/--duration: must be a finite number"),
    (["record", "-o", "{tmp}/t", "--duration", "-1"], "more than 0"),
    (["record", "-o", "{tmp}/t", "--tasks", "100000"], "argument --tasks: must be from 1 to 4096"),
    (["record", "-o", "{tmp}/t", "--page-free-gap-us", "nan"], "argument --page-free-gap-us"),
    (["record", "-o", "{tmp}/t", "--pid", "1,x"], "argument -p/--pid: '1,x': each item must be an integer"),
    (["record", "-o", "{tmp}/t", "--pid", "-5"], "argument -p/--pid"),
    (["record", "-o", "{tmp}/t", "--buffer-size", "3M"], "--buffer-size must be a power of two from 1M to 1G"),
    (["record", "-o", "{tmp}/t", "--buffer-size", "2G"], "--buffer-size must be a power of two from 1M to 1G"),
    (["record", "-o", "{tmp}/t", "-m", "512K"], "--buffer-size must be a power of two from 1M to 1G"),
    (["record", "-o", "{tmp}/t", "-m", "0"], "--buffer-size must be positive"),
    (["record", "-o", "{tmp}/t", "-m", "lots"], "--buffer-size needs a size such as 4G"),
    (["replay", "{tmp}/none", "--cpus", "1e8"], "--cpus needs an integer"),
    (["replay", "{tmp}/none", "--cpus", "100000000"], "--cpus must be at most 8192"),
    (["replay", "{tmp}/none", "--seeds", "99999999"], "--seeds must be at most 10000"),
    (["replay", "{tmp}/none", "--scale-tasks", "nan"], "--scale-tasks must be a positive number"),
    (["replay", "{tmp}/none", "--scale-tasks", "1e9"], "--scale-tasks must be a positive number at most 1024"),
    (["query", "{tmp}/none", "waits", "--limit", "1e3"], "argument --limit: must be an integer"),
    (["query", "{tmp}/none", "waits", "--by=--"], "argument --by: expected a value, not '--'"),
    (["synth", "mmap1_threads", "-o", "{tmp}/t", "--seconds", "nan"], "--seconds must be more than 0"),
])
def test_bad_option_values_are_one_line(tmp_path: Path, capsys, argv: list[str], says: str) -> None:
    assert _status([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1 and "Traceback" not in err


def _status(argv: list[str]) -> int:
    """main's exit status, whether it returns it or argparse exits with it."""
    try:
        return main(argv)
    except SystemExit as e:
        return int(e.code)


@pytest.mark.parametrize("values, says", [
    ({"context_switch_ns": 1e30}, "cost context_switch_ns must be a finite number at most 1e+11"),
    ({"max_gather_pages": 10**12}, "cost max_gather_pages must be a finite number at most 1.07374e+09"),
    ({"line_transfer_samples_ns": [100, 10**30]}, "cost line_transfer_samples_ns must hold numbers at most 1e+11"),
])
def test_cost_files_with_values_that_would_never_finish_are_refused(tmp_path, capsys, costs, values, says) -> None:
    assert main(["replay", str(tmp_path / "none"), "--costs", str(costs(values))]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1


def test_a_cost_file_that_is_a_fifo_is_refused_without_waiting(tmp_path: Path, capsys) -> None:
    fifo = tmp_path / "costs.json"
    os.mkfifo(fifo)
    assert main(["replay", str(tmp_path / "none"), "--costs", str(fifo)]) == 2
    assert "is not a regular file" in capsys.readouterr().err


def test_a_nan_cost_is_refused(tmp_path: Path, capsys) -> None:
    p = tmp_path / "costs.json"
    p.write_text('{"wakeup_ns": NaN}')
    assert main(["replay", str(tmp_path / "none"), "--costs", str(p)]) == 2
    assert "cost wakeup_ns" in capsys.readouterr().err


def test_scaling_tasks_beyond_what_a_replay_can_hold_is_refused_before_allocating() -> None:
    from replay.cli.options import MAX_SIM_TASKS, check_tasks
    from replay.errors import UsageError

    check_tasks(64, 1024.0)  # 65,536: the limit itself
    with pytest.raises(UsageError, match="would replay 102,400 tasks \\(100 recorded\\); at most 65,536"):
        check_tasks(100, 1024.0)
    assert MAX_SIM_TASKS == 65_536


def test_the_ring_buffer_size_is_a_power_of_two_pages() -> None:
    """--buffer-size becomes the ring buffer's page count (BPF_MAP_TYPE_RINGBUF: a power of two)."""
    import os

    from replay.cli.record import buffer_pages

    page = os.sysconf("SC_PAGE_SIZE")
    assert buffer_pages("8M") == (8 << 20) // page == 2048 * 4096 // page
    assert buffer_pages("1G") == (1 << 30) // page and buffer_pages("1MiB") == (1 << 20) // page
